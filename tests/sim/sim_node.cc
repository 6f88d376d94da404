// Copyright sessiond authors. Licensed under the Apache License 2.0.
#include "tests/sim/sim_node.h"

#include <algorithm>
#include <limits>
#include <utility>

#include "absl/strings/str_cat.h"

namespace sessiond::sim {

using replication::ConfChange;
using replication::Entry;
using replication::EntryType;
using replication::HardState;
using replication::Message;
using replication::MessageType;
using replication::RaftCore;
using replication::Ready;
using replication::Role;
using replication::Snapshot;

namespace {

// A core that keeps reporting HasReady() after this many TakeReady() calls
// in a row is stuck in a loop.
constexpr int kMaxReadiesInARow = 1000;

}  // namespace

SimNode::SimNode(NodeId id, replication::ConfState bootstrap,
                 replication::RaftConfig config, NodeEnv env)
    : id_(id),
      bootstrap_(bootstrap),
      config_(std::move(config)),
      env_(env),
      store_(std::make_unique<replication::MemoryLogStore>(bootstrap)) {}

void SimNode::Fail(std::string what) {
  env_.invariants->Fail(
      absl::StrCat(what, " [node ", id_.value(), " step ", now_, "]"));
}

void SimNode::Log(absl::string_view line, bool verbose) {
  if (verbose && !env_.trace->echo()) return;
  env_.trace->Add(now_, absl::StrCat("n", id_.value(), " ", line), verbose);
}

void SimNode::Start(uint64_t now, uint64_t seed) {
  now_ = now;
  replication::RaftConfig config = config_;
  config.id = id_;
  auto core = RaftCore::Create(config, store_.get(), seed);
  if (!core.ok()) {
    Fail(absl::StrCat("RaftCore::Create failed: ", core.status().ToString()));
    return;
  }
  core_ = std::move(*core);
  ++incarnation_;
  disk_queue_.clear();
  apply_queue_.clear();
  pending_.clear();
  last_disk_done_at_ = now;
  last_apply_due_ = now;

  // The state machine restarts from the last snapshot and re-applies the
  // committed entries the core hands out again.
  auto snapshot = store_->GetSnapshot();
  if (!snapshot.ok()) {
    Fail(absl::StrCat("GetSnapshot: ", snapshot.status().ToString()));
    return;
  }
  if (snapshot->empty()) {
    applied_ = AppliedState();
    applied_.conf = snapshot->meta.conf_state;
  } else if (!AppliedState::Decode(snapshot->data, &applied_)) {
    Fail("stored snapshot data does not decode");
    return;
  }
  env_.invariants->CheckAppliedState(id_, applied_, "restart");
  commit_seen_ = applied_.index;

  base_index_ = snapshot->meta.index;
  base_term_ = snapshot->meta.term;
  shadow_.clear();
  const LogIndex first = store_->FirstIndex();
  const LogIndex last = store_->LastIndex();
  if (last >= first) {
    auto entries =
        store_->Entries(first, last + 1, std::numeric_limits<uint64_t>::max());
    if (!entries.ok()) {
      Fail(absl::StrCat("Entries: ", entries.status().ToString()));
      return;
    }
    for (const Entry& e : *entries) shadow_.push_back({e.term, EntryHash(e)});
  }

  last_hard_state_ = store_->InitialHardState();
  if (core_->term() < last_hard_state_.term) {
    Fail(absl::StrCat("restarted core is at term ", core_->term().value(),
                      " below the durable term ",
                      last_hard_state_.term.value()));
  }
  last_commit_ = core_->commit_index();
  leader_checked_term_ = Term(0);
  last_role_ = core_->role();
  last_leader_ = core_->leader();
  Log(absl::StrCat("start #", incarnation_, " term ", core_->term().value(),
                   " log (", base_index_.value(), ",", last_index().value(),
                   "] applied ", applied_.index.value(), " ",
                   DescribeConf(applied_.conf)));
  Drain(now);
}

void SimNode::Crash(uint64_t now) {
  now_ = now;
  if (!up()) return;
  Log(absl::StrCat("crash (", disk_queue_.size(), " writes lost, ",
                   pending_.size(), " proposals in doubt)"));
  core_.reset();
  if (env_.forget_vote_on_crash_for_test) {
    HardState hs = store_->InitialHardState();
    hs.vote = NodeId(0);
    (void)store_->Append({}, hs, /*sync=*/true);
  }
  disk_queue_.clear();
  apply_queue_.clear();
  pending_.clear();
}

void SimNode::Tick(uint64_t now) {
  now_ = now;
  if (!up()) return;
  core_->Tick();
  Drain(now);
}

void SimNode::Deliver(const Message& message, uint64_t now) {
  now_ = now;
  if (!up()) return;
  absl::Status status = core_->Step(message);
  if (!status.ok()) {
    Fail(absl::StrCat(
        "Step(", MessageTypeName(message.type), " from ", message.from.value(),
        " term ", message.term.value(),
        ") rejected a message another core produced: ", status.ToString()));
    return;
  }
  Drain(now);
}

void SimNode::Campaign(uint64_t now) {
  now_ = now;
  if (!up()) return;
  core_->Campaign();
  Drain(now);
}

void SimNode::Drain(uint64_t now) {
  for (int i = 0; up() && core_->HasReady(); ++i) {
    if (i >= kMaxReadiesInARow) {
      Fail("HasReady() stays true after 1000 TakeReady() calls");
      return;
    }
    HandleReady(core_->TakeReady(), now);
    CheckNewLeader();
  }
}

std::optional<Term> SimNode::ShadowTerm(LogIndex index) const {
  if (index == base_index_) return base_term_;
  if (index < base_index_ || index > last_index()) return std::nullopt;
  return shadow_[index - base_index_ - 1].term;
}

void SimNode::ShadowAppend(const std::vector<Entry>& entries) {
  const LogIndex first = entries.front().index;
  if (first <= base_index_) {
    Fail(absl::StrCat("to_persist starts at ", first.value(),
                      ", at or below the snapshot index ",
                      base_index_.value()));
    return;
  }
  if (first > last_index() + 1) {
    Fail(absl::StrCat("to_persist starts at ", first.value(),
                      " leaving a gap after the last index ",
                      last_index().value()));
    return;
  }
  shadow_.resize(first - base_index_ - 1);
  for (const Entry& e : entries) {
    if (e.index != last_index() + 1) {
      Fail("to_persist entries are not consecutive");
      return;
    }
    env_.invariants->CheckLogEntry(id_, e, ShadowTerm(e.index - 1), "persist");
    // Entries this node already handed out as committed never change.
    if (e.index <= commit_seen_ &&
        e.index <= env_.invariants->max_committed()) {
      const CommittedEntry& c = env_.invariants->committed(e.index);
      if (c.term != e.term || c.hash != EntryHash(e)) {
        Fail(absl::StrCat("to_persist overwrites entry ", e.index.value(),
                          " that this node already reported committed"));
        return;
      }
    }
    shadow_.push_back({e.term, EntryHash(e)});
  }
}

SimNode::Outgoing SimNode::MakeOutgoing(const Message& message) const {
  Outgoing out{message, std::nullopt};
  if (message.type == MessageType::kAppendResponse && !message.reject) {
    out.expect_term = ShadowTerm(message.index);
  }
  return out;
}

void SimNode::CheckDurablePromise(const Outgoing& out) {
  const Message& m = out.message;
  if (m.type == MessageType::kVoteResponse && !m.reject) {
    const HardState hs = store_->InitialHardState();
    if (hs.term < m.term || (hs.term == m.term && hs.vote != m.to)) {
      Fail(absl::StrCat("vote for node ", m.to.value(), " in term ",
                        m.term.value(),
                        " left before it was durable (durable term ",
                        hs.term.value(), " vote ", hs.vote.value(), ")"));
    }
    return;
  }
  if (m.type == MessageType::kVote) {
    // A candidate's own vote must be on disk before it asks for others'.
    const HardState hs = store_->InitialHardState();
    if (hs.term < m.term || (hs.term == m.term && hs.vote != id_)) {
      Fail(absl::StrCat("vote request for term ", m.term.value(),
                        " left before the candidate's own vote was durable "
                        "(durable term ",
                        hs.term.value(), " vote ", hs.vote.value(), ")"));
    }
    return;
  }
  if (m.type == MessageType::kAppendResponse && !m.reject) {
    const LogIndex last = store_->LastIndex();
    const LogIndex snap = store_->FirstIndex() - 1;
    if (m.index > last) {
      Fail(absl::StrCat("append acknowledgement through ", m.index.value(),
                        " left before it was durable (durable last index ",
                        last.value(), ")"));
      return;
    }
    if (m.index > snap && out.expect_term) {
      auto term = store_->TermAt(m.index);
      if (!term.ok() || *term != *out.expect_term) {
        Fail(absl::StrCat("append acknowledgement through ", m.index.value(),
                          " (term ", out.expect_term->value(),
                          ") left while the durable log holds another entry "
                          "there"));
      }
    }
  }
}

void SimNode::Send(const Outgoing& out, uint64_t now) {
  const Message& m = out.message;
  if (m.from != id_) {
    Fail(absl::StrCat("message from ", m.from.value(), " emitted by node ",
                      id_.value()));
    return;
  }
  if (m.to == id_) {
    Fail(absl::StrCat(MessageTypeName(m.type), " addressed to itself"));
    return;
  }
  CheckDurablePromise(out);
  env_.network->Send(m, now);
}

void SimNode::HandleReady(Ready rd, uint64_t now) {
  Invariants& inv = *env_.invariants;
  DiskJob job;
  job.seq = disk_seq_ + 1;
  bool has_job = false;

  if (rd.snapshot) {
    const Snapshot& s = *rd.snapshot;
    AppliedState state;
    if (!AppliedState::Decode(s.data, &state)) {
      Fail("Ready::snapshot data does not decode");
      return;
    }
    if (state.index != s.meta.index || state.term != s.meta.term ||
        !(state.conf == s.meta.conf_state)) {
      Fail(absl::StrCat(
          "Ready::snapshot metadata (index ", s.meta.index.value(), " term ",
          s.meta.term.value(), " ", DescribeConf(s.meta.conf_state),
          ") does not match its data (index ", state.index.value(), " term ",
          state.term.value(), " ", DescribeConf(state.conf), ")"));
      return;
    }
    inv.CheckAppliedState(id_, state, "received snapshot");
    if (s.meta.index <= commit_seen_) {
      Fail(absl::StrCat("Ready::snapshot at ", s.meta.index.value(),
                        " is not past the committed index ",
                        commit_seen_.value(), " already handed out"));
      return;
    }
    Log(absl::StrCat("receives snapshot at ", s.meta.index.value(), " term ",
                     s.meta.term.value()));
    base_index_ = s.meta.index;
    base_term_ = s.meta.term;
    shadow_.clear();
    commit_seen_ = s.meta.index;
    job.snapshot = s;
    has_job = true;
    ApplyItem item;
    item.snapshot = s;
    item.disk_seq = job.seq;
    apply_queue_.push_back(std::move(item));
  }

  if (!rd.to_persist.empty()) {
    ShadowAppend(rd.to_persist);
    job.entries = std::move(rd.to_persist);
    has_job = true;
  }

  if (rd.hard_state) {
    const HardState& hs = *rd.hard_state;
    if (hs.term < last_hard_state_.term) {
      Fail(absl::StrCat("hard state term goes back from ",
                        last_hard_state_.term.value(), " to ",
                        hs.term.value()));
    } else if (hs.term == last_hard_state_.term &&
               last_hard_state_.vote != NodeId(0) &&
               hs.vote != last_hard_state_.vote) {
      Fail(absl::StrCat("vote changed within term ", hs.term.value(), " from ",
                        last_hard_state_.vote.value(), " to ",
                        hs.vote.value()));
    }
    last_hard_state_ = hs;
    job.hard_state = hs;
    has_job = true;
  }

  for (const Message& m : rd.send_now) {
    if (m.type == MessageType::kAppend && !m.entries.empty()) {
      std::optional<Term> prev = m.log_term;
      for (const Entry& e : m.entries) {
        inv.CheckLogEntry(id_, e, prev, "append message");
        prev = e.term;
      }
    }
    Send(MakeOutgoing(m), now);
  }

  if (!rd.send_after_persist.empty()) {
    for (const Message& m : rd.send_after_persist) {
      job.after.push_back(MakeOutgoing(m));
    }
    has_job = true;
  }

  if (has_job) {
    disk_seq_ = job.seq;
    const NodeTiming& t = *env_.timing;
    job.done_at = std::max(last_disk_done_at_,
                           now + env_.rng->Range(t.min_disk, t.max_disk));
    last_disk_done_at_ = job.done_at;
    disk_queue_.push_back(std::move(job));
  }

  if (!rd.committed.empty()) {
    for (const Entry& e : rd.committed) {
      if (e.index != commit_seen_ + 1) {
        Fail(absl::StrCat("Ready::committed hands out ", e.index.value(),
                          " after ", commit_seen_.value()));
        return;
      }
      // What is handed out must be what this node's log holds there.
      if (e.index > base_index_ &&
          (e.index > last_index() ||
           shadow_[e.index - base_index_ - 1].term != e.term ||
           shadow_[e.index - base_index_ - 1].hash != EntryHash(e))) {
        Fail(absl::StrCat("Ready::committed hands out entry ", e.index.value(),
                          " (term ", e.term.value(),
                          ") that is not the one in this node's log"));
        return;
      }
      commit_seen_ = e.index;
      inv.OnCommitted(id_, core_->term(), e);
    }
    const NodeTiming& t = *env_.timing;
    ApplyItem item;
    item.due = std::max(last_apply_due_,
                        now + env_.rng->Range(t.min_apply, t.max_apply));
    last_apply_due_ = item.due;
    item.entries = std::move(rd.committed);
    apply_queue_.push_back(std::move(item));
  }

  for (const replication::ReadState& rs : rd.read_states) {
    inv.OnReadState(id_, rs);
  }

  if (rd.role || rd.leader) {
    const Role role = core_->role();
    const NodeId leader = core_->leader();
    if (role != last_role_ || leader != last_leader_) {
      Log(absl::StrCat(RoleName(role), " term ", core_->term().value(),
                       " leader ", leader.value(), " log ",
                       last_index().value(), " commit ",
                       core_->commit_index().value()));
      last_role_ = role;
      last_leader_ = leader;
    }
  }
}

void SimNode::CheckNewLeader() {
  if (!up() || core_->role() != Role::kLeader) return;
  const Term term = core_->term();
  env_.invariants->OnRole(id_, Role::kLeader, term);
  if (term == leader_checked_term_) return;
  leader_checked_term_ = term;
  env_.invariants->CheckLeaderCompleteness(id_, term, base_index_, base_term_,
                                           shadow_);
}

void SimNode::AdvanceDisk(uint64_t now) {
  now_ = now;
  bool progressed = false;
  while (up() && !disk_queue_.empty() && disk_queue_.front().done_at <= now) {
    DiskJob job = std::move(disk_queue_.front());
    disk_queue_.pop_front();
    progressed = true;
    if (job.snapshot) {
      absl::Status s = store_->InstallSnapshot(*job.snapshot);
      if (!s.ok()) {
        Fail(absl::StrCat("InstallSnapshot: ", s.ToString()));
        return;
      }
      ApplyThroughSnapshot(job.seq);
      if (!up()) return;
      core_->OnSnapshotInstalled(job.snapshot->meta.index);
    }
    if (!job.entries.empty() || job.hard_state) {
      absl::Status s = store_->Append(job.entries, job.hard_state, true);
      if (!s.ok()) {
        Fail(absl::StrCat("LogStore::Append refused the core's write: ",
                          s.ToString()));
        return;
      }
    }
    if (!job.entries.empty()) {
      core_->OnPersisted(job.entries.back().index, job.entries.back().term);
    }
    for (const Outgoing& out : job.after) Send(out, now);
  }
  if (progressed) Drain(now);
}

void SimNode::ApplyThroughSnapshot(uint64_t disk_seq) {
  while (!apply_queue_.empty()) {
    ApplyItem item = std::move(apply_queue_.front());
    apply_queue_.pop_front();
    if (!item.snapshot) {
      ApplyEntries(item.entries);
      continue;
    }
    if (item.disk_seq != disk_seq) break;
    ApplySnapshot(*item.snapshot);
    return;
  }
  Fail("installed a snapshot that is not next in the apply queue");
}

void SimNode::AdvanceApply(uint64_t now) {
  now_ = now;
  bool progressed = false;
  while (up() && !apply_queue_.empty()) {
    ApplyItem& item = apply_queue_.front();
    // A snapshot is applied by the disk job that installs it; what follows
    // it waits.
    if (item.snapshot || item.due > now) break;
    std::vector<Entry> entries = std::move(item.entries);
    apply_queue_.pop_front();
    ApplyEntries(entries);
    progressed = true;
  }
  if (progressed) Drain(now);
}

void SimNode::ApplyEntries(const std::vector<Entry>& entries) {
  if (entries.empty()) return;
  for (const Entry& e : entries) {
    if (e.index != applied_.index + 1) {
      Fail(absl::StrCat("apply of ", e.index.value(), " after ",
                        applied_.index.value()));
      return;
    }
    applied_.hash = ChainStep(applied_.hash, e);
    applied_.index = e.index;
    applied_.term = e.term;
    if (e.type == EntryType::kConfChange) {
      ConfChange change;
      if (replication::DecodeConfChange(e.data, &change)) {
        ApplyConfChange(change, &applied_.conf);
        Log(absl::StrCat("applies conf change at ", e.index.value(), ": ",
                         DescribeConf(applied_.conf)));
      }
    }
    auto it = pending_.find(e.index);
    if (it != pending_.end()) {
      if (e.type == EntryType::kNormal && e.data == it->second.data &&
          e.term == it->second.term) {
        env_.invariants->OnAcked(id_, e.index, e.data);
        ++acked_;
      } else {
        ++failed_;
      }
      pending_.erase(it);
    }
  }
  // Proposals below the applied index whose entry never came are in doubt.
  while (!pending_.empty() && pending_.begin()->first <= applied_.index) {
    pending_.erase(pending_.begin());
  }
  env_.invariants->CheckAppliedState(id_, applied_, "apply");
  core_->OnApplied(applied_.index);
}

void SimNode::ApplySnapshot(const Snapshot& snapshot) {
  AppliedState state;
  if (!AppliedState::Decode(snapshot.data, &state)) {
    Fail("snapshot data does not decode");
    return;
  }
  if (state.index < applied_.index) {
    Fail(absl::StrCat("snapshot at ", state.index.value(),
                      " moves the applied state back from ",
                      applied_.index.value()));
    return;
  }
  applied_ = state;
  ++snapshots_installed_;
  while (!pending_.empty() && pending_.begin()->first <= applied_.index) {
    pending_.erase(pending_.begin());
  }
  env_.invariants->CheckAppliedState(id_, applied_, "install snapshot");
  Log(absl::StrCat("installed snapshot at ", state.index.value()));
}

bool SimNode::Compact(uint64_t now) {
  now_ = now;
  // With no write in flight the store is exactly the core's log, so the
  // applied index's entry in it is the committed one.
  if (!up() || !disk_queue_.empty()) return false;
  const LogIndex index = applied_.index;
  if (index <= store_->FirstIndex() - 1 || index > store_->LastIndex()) {
    return false;
  }
  auto term = store_->TermAt(index);
  if (!term.ok()) {
    Fail(absl::StrCat("TermAt(", index.value(),
                      "): ", term.status().ToString()));
    return false;
  }
  if (*term != applied_.term) {
    Fail(absl::StrCat("the log holds term ", term->value(),
                      " at applied index ", index.value(),
                      ", the applied entry had term ", applied_.term.value()));
    return false;
  }
  Snapshot snapshot;
  snapshot.meta.index = index;
  snapshot.meta.term = *term;
  snapshot.meta.conf_state = applied_.conf;
  snapshot.data = applied_.Encode();
  absl::Status s = store_->Compact(snapshot);
  if (!s.ok()) {
    Fail(absl::StrCat("Compact: ", s.ToString()));
    return false;
  }
  shadow_.erase(shadow_.begin(), shadow_.begin() + (index - base_index_));
  base_index_ = index;
  base_term_ = *term;
  core_->OnCompacted(store_->FirstIndex());
  Drain(now);
  return true;
}

absl::StatusOr<LogIndex> SimNode::Propose(std::vector<std::string> commands,
                                          uint64_t now) {
  now_ = now;
  if (!up()) return absl::UnavailableError("down");
  const Term term = core_->term();
  const std::vector<std::string> copy = commands;
  absl::StatusOr<LogIndex> last = core_->Propose(std::move(commands));
  if (!last.ok()) return last;
  const uint64_t n = copy.size();
  if (last->value() < n) {
    Fail(absl::StrCat("Propose returned index ", last->value(), " for ", n,
                      " commands"));
    return last;
  }
  for (uint64_t k = 0; k < n; ++k) {
    pending_[*last - (n - 1 - k)] = Pending{copy[k], term};
  }
  Drain(now);
  // The proposed entries must be in the log handed out for persisting.
  for (uint64_t k = 0; k < n && up(); ++k) {
    const LogIndex index = *last - (n - 1 - k);
    Entry e;
    e.data = copy[k];
    std::optional<Term> t = ShadowTerm(index);
    if (index > base_index_ &&
        (!t || *t != term ||
         shadow_[index - base_index_ - 1].hash != EntryHash(e))) {
      Fail(absl::StrCat("Propose returned index ", index.value(),
                        " but the log handed out holds something else there"));
      break;
    }
  }
  Log(absl::StrCat("proposes ", n, " at ", (*last - (n - 1)).value(), "..",
                   last->value(), " term ", term.value()),
      /*verbose=*/true);
  return last;
}

absl::StatusOr<LogIndex> SimNode::ProposeConfChange(const ConfChange& change,
                                                    uint64_t now) {
  now_ = now;
  if (!up()) return absl::UnavailableError("down");
  absl::StatusOr<LogIndex> index = core_->ProposeConfChange(change);
  if (index.ok()) {
    static constexpr const char* kNames[] = {"add-learner", "promote",
                                             "remove"};
    Log(absl::StrCat("proposes ", kNames[static_cast<int>(change.type)], " ",
                     change.node.value(), " at ", index->value()));
  }
  Drain(now);
  return index;
}

absl::Status SimNode::TransferLeadership(NodeId target, uint64_t now) {
  now_ = now;
  if (!up()) return absl::UnavailableError("down");
  absl::Status s = core_->TransferLeadership(target);
  if (s.ok()) Log(absl::StrCat("transfers leadership to ", target.value()));
  Drain(now);
  return s;
}

absl::Status SimNode::ReadIndex(const std::string& context, uint64_t now) {
  now_ = now;
  if (!up()) return absl::UnavailableError("down");
  env_.invariants->OnReadRequested(context);
  absl::Status s = core_->ReadIndex(context);
  Drain(now);
  return s;
}

void SimNode::CheckStep() {
  if (!up()) return;
  env_.invariants->OnRole(id_, core_->role(), core_->term());
  const LogIndex commit = core_->commit_index();
  if (commit < last_commit_) {
    Fail(absl::StrCat("commit index went back from ", last_commit_.value(),
                      " to ", commit.value()));
  }
  last_commit_ = commit;
}

std::string SimNode::Describe() const {
  if (!up()) {
    return absl::StrCat("n", id_.value(), " down, durable log (",
                        (store_->FirstIndex() - 1).value(), ",",
                        store_->LastIndex().value(), "] term ",
                        store_->InitialHardState().term.value());
  }
  std::string out = absl::StrCat(
      "n", id_.value(), " ", RoleName(core_->role()), " term ",
      core_->term().value(), " leader ", core_->leader().value(), " log (",
      base_index_.value(), ",", last_index().value(), "] commit ",
      core_->commit_index().value(), " applied ", applied_.index.value(),
      " disk queue ", disk_queue_.size(), " pending ", pending_.size());
  if (core_->role() == Role::kLeader) {
    const replication::RaftStatus st = core_->status();
    for (const auto& [peer, match] : st.match) {
      auto next = st.next.find(peer);
      auto state = st.progress_state.find(peer);
      absl::StrAppend(&out, "\n    progress n", peer.value(), ": match ",
                      match.value(), " next ",
                      next == st.next.end() ? 0 : next->second.value(), " ",
                      state == st.progress_state.end() ? "?" : state->second);
    }
  }
  return out;
}

}  // namespace sessiond::sim
