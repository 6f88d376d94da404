// Copyright sessiond authors. Licensed under the Apache License 2.0.
#include "tests/sim/sim_node.h"

#include <algorithm>
#include <any>
#include <chrono>
#include <limits>
#include <utility>

#include "absl/strings/str_cat.h"

namespace sessiond::sim {

using replication::ApplyResult;
using replication::ConfChange;
using replication::Entry;
using replication::Message;
using replication::NodeDriver;
using replication::Role;
using replication::Snapshot;
using replication::Stage;

namespace {

// Stage runs in one RunDue beyond which the stages must be waking each
// other in a loop.
constexpr int kMaxStageRuns = 100000;

// The driver's tick interval; the node's clock is its tick count times it.
constexpr std::chrono::milliseconds kTickInterval(100);

}  // namespace

SimNode::SimNode(NodeId id, replication::ConfState bootstrap, NodeEnv env)
    : id_(id),
      env_(std::move(env)),
      disk_(
          std::make_unique<SimDisk>(id, std::move(bootstrap), env_.invariants)),
      transport_(std::make_unique<SimTransport>(id, disk_.get(), env_.network,
                                                env_.invariants, env_.now,
                                                env_.check_durable_promises)) {}

SimNode::~SimNode() { Teardown(); }

void SimNode::Fail(std::string what) {
  env_.invariants->Fail(
      absl::StrCat(what, " [node ", id_.value(), " step ", *env_.now, "]"));
}

void SimNode::Log(absl::string_view line, bool verbose) {
  if (verbose && !env_.trace->echo()) return;
  env_.trace->Add(*env_.now, absl::StrCat("n", id_.value(), " ", line),
                  verbose);
}

replication::NodeDriverMetrics SimNode::metrics() const {
  return up() ? driver_->metrics() : replication::NodeDriverMetrics();
}

uint64_t SimNode::snapshots_installed() const {
  return snapshots_before_ +
         (state_machine_ ? state_machine_->snapshots_installed() : 0);
}

LogIndex SimNode::last_index() const {
  return up() ? status_.last_index : disk_->LastIndex();
}

void SimNode::Teardown() {
  if (driver_ == nullptr) return;
  // The driver's Stop answers what is pending with Unavailable; those
  // proposals and reads are in doubt, as a client of a crashed server sees.
  tearing_down_ = true;
  driver_.reset();
  runtime_.reset();  // with every stage run still queued
  tearing_down_ = false;
  pending_.clear();
}

void SimNode::Start(uint64_t seed) {
  if (up()) return;
  ++incarnation_;
  // The state machine restarts from the disk's snapshot; the driver
  // re-applies the committed entries after it.
  const absl::StatusOr<Snapshot> snapshot = disk_->GetSnapshot();
  if (!snapshot.ok()) {
    Fail(absl::StrCat("GetSnapshot: ", snapshot.status().ToString()));
    return;
  }
  AppliedState state;
  if (snapshot->empty()) {
    state.conf = snapshot->meta.conf_state;
  } else if (!AppliedState::Decode(snapshot->data, &state)) {
    Fail("stored snapshot data does not decode");
    return;
  }
  env_.invariants->CheckAppliedState(id_, state, "restart");
  if (state_machine_) {
    snapshots_before_ += state_machine_->snapshots_installed();
  }
  state_machine_ = std::make_unique<SimStateMachine>(
      id_, state, disk_.get(), env_.invariants, &status_.term,
      [this](absl::string_view line) { Log(line); });
  runtime_ =
      std::make_unique<SimRuntime>(env_.now, env_.rng, env_.timing, &ticks_,
                                   absl::FromChrono(kTickInterval));
  replication::NodeDriverOptions options = env_.driver;
  options.raft.id = id_;
  options.seed = seed;
  options.tick_interval = kTickInterval;
  // A crash does not wait for anything.
  options.drain_timeout = std::chrono::milliseconds(0);
  absl::StatusOr<std::unique_ptr<NodeDriver>> driver =
      NodeDriver::StartOn(options, disk_.get(), state_machine_.get(),
                          transport_.get(), runtime_.get());
  if (!driver.ok()) {
    Fail(absl::StrCat("NodeDriver::StartOn failed: ",
                      driver.status().ToString()));
    runtime_.reset();
    return;
  }
  driver_ = std::move(*driver);
  status_ = driver_->status();
  last_commit_ = status_.commit;
  leader_checked_term_ = Term(0);
  leader_check_pending_ = false;
  compact_requested_ = state.index;
  recorded_commit_ = std::max(recorded_commit_, state.index);
  const replication::HardState durable = disk_->durable().InitialHardState();
  if (status_.term < durable.term) {
    Fail(absl::StrCat("restarted at term ", status_.term.value(),
                      " below the durable term ", durable.term.value()));
  }
  Log(absl::StrCat("start #", incarnation_, " term ", status_.term.value(),
                   " log (", (status_.first_index - 1).value(), ",",
                   status_.last_index.value(), "] commit ",
                   status_.commit.value(), " applied ", state.index.value(),
                   " ", DescribeConf(state.conf)));
  RunDue();
}

void SimNode::Crash() {
  if (!up()) return;
  const size_t pending = pending_.size();
  const std::string stages = runtime_->Describe();
  Teardown();
  const size_t lost = disk_->Crash();
  if (env_.forget_vote_on_crash_for_test) disk_->ForgetVoteForTest();
  Log(absl::StrCat("crash (", lost, " unsynced writes lost; stages due: ",
                   stages, "; ", pending, " proposals in doubt)"));
}

absl::Duration SimNode::clock() const { return ticks_ * tick_interval(); }

absl::Duration SimNode::tick_interval() {
  return absl::FromChrono(kTickInterval);
}

void SimNode::Tick() {
  ++ticks_;
  if (!up()) return;
  runtime_->Wake(Stage::kDriver);
  RunDue();
}

void SimNode::Deliver(Message message) {
  transport_->Received(message);
  if (!up()) return;
  std::vector<Message> messages;
  messages.push_back(std::move(message));
  driver_->Deliver(std::move(messages));
  RunDue();
}

void SimNode::RunDue() {
  for (int i = 0; up() && env_.invariants->ok(); ++i) {
    const std::optional<Stage> stage = runtime_->NextDue();
    if (!stage) return;
    if (i >= kMaxStageRuns) {
      Fail("the driver's stages keep waking each other");
      return;
    }
    const bool log_writer_idle = !runtime_->scheduled(Stage::kLogWriter);
    runtime_->Run(*stage);
    if (*stage == Stage::kDriver) {
      Observe(log_writer_idle);
    } else if (*stage == Stage::kLogWriter && leader_check_pending_) {
      // Everything the core handed out before this run is on disk now.
      leader_check_pending_ = false;
      CheckLeaderCompleteness();
    }
  }
}

void SimNode::Observe(bool log_writer_was_idle) {
  const replication::NodeStatus before = std::move(status_);
  status_ = driver_->status();
  Invariants& inv = *env_.invariants;
  inv.OnRole(id_, status_.role, status_.term);
  if (status_.commit < last_commit_) {
    Fail(absl::StrCat("commit index went back from ", last_commit_.value(),
                      " to ", status_.commit.value()));
  }
  last_commit_ = status_.commit;
  if (status_.role != before.role || status_.leader != before.leader ||
      (status_.role != Role::kFollower && status_.term != before.term)) {
    Log(absl::StrCat(RoleName(status_.role), " term ", status_.term.value(),
                     " leader ", status_.leader.value(), " log ",
                     status_.last_index.value(), " commit ",
                     status_.commit.value()));
  }
  if (status_.role != Role::kLeader) {
    leader_check_pending_ = false;
    return;
  }
  if (status_.term != leader_checked_term_) {
    leader_checked_term_ = status_.term;
    // A candidate's vote requests leave after its log is on disk, so with
    // the log writer idle when the driver run began, the disk holds its log
    // as it was when it won (only the new term's entries are still queued).
    // Otherwise wait for the writes queued before.
    if (log_writer_was_idle) {
      CheckLeaderCompleteness();
    } else {
      leader_check_pending_ = true;
    }
  }
  RecordLeaderCommits();
}

void SimNode::CheckLeaderCompleteness() {
  if (!up() || status_.role != Role::kLeader ||
      status_.term != leader_checked_term_) {
    return;
  }
  Invariants& inv = *env_.invariants;
  const LogIndex base = disk_->FirstIndex() - 1;
  const absl::StatusOr<Term> base_term = disk_->TermAt(base);
  const LogIndex hi = std::min(disk_->LastIndex(), inv.max_committed());
  std::vector<ShadowEntry> log;
  if (hi > base) {
    const std::vector<Entry> entries =
        disk_->Entries(base + 1, hi + 1, std::numeric_limits<uint64_t>::max())
            .value();
    log.reserve(entries.size());
    for (const Entry& e : entries) log.push_back({e.term, EntryHash(e)});
  }
  inv.CheckLeaderCompleteness(id_, status_.term, base,
                              base_term.ok() ? *base_term : Term(0), log);
}

void SimNode::RecordLeaderCommits() {
  // A leader counts its own log toward a commit only once it is persisted
  // (its match index), so its disk holds what it committed. Followers'
  // commits enter the record as they apply them.
  auto self = status_.match.find(id_);
  if (self == status_.match.end()) return;
  const LogIndex through = std::min(status_.commit, self->second);
  const LogIndex lo =
      std::max({recorded_commit_, state_machine_->applied_index(),
                disk_->FirstIndex() - 1}) +
      1;
  if (through < lo) return;
  if (through > disk_->LastIndex()) {
    Fail(absl::StrCat("leader's persisted index ", self->second.value(),
                      " is beyond its log's last index ",
                      disk_->LastIndex().value()));
    return;
  }
  const std::vector<Entry> entries =
      disk_->Entries(lo, through + 1, std::numeric_limits<uint64_t>::max())
          .value();
  for (const Entry& e : entries) {
    env_.invariants->OnCommitted(id_, status_.term, e);
  }
  recorded_commit_ = through;
}

bool SimNode::Compact() {
  if (!up()) return false;
  absl::StatusOr<Snapshot> snapshot = state_machine_->CreateSnapshot();
  if (!snapshot.ok()) {
    Fail(absl::StrCat("CreateSnapshot: ", snapshot.status().ToString()));
    return false;
  }
  if (snapshot->meta.index <= compact_requested_) return false;
  compact_requested_ = snapshot->meta.index;
  Log(absl::StrCat("compacts at ", compact_requested_.value()),
      /*verbose=*/true);
  driver_->CompactLog(std::move(*snapshot));
  RunDue();
  return true;
}

absl::StatusOr<LogIndex> SimNode::Propose(std::vector<std::string> commands) {
  if (!up()) return absl::UnavailableError("down");
  const LogIndex before = status_.last_index;
  const Term term = status_.term;
  std::vector<std::shared_ptr<Outcome>> outcomes;
  for (std::string& command : commands) {
    auto outcome = std::make_shared<Outcome>();
    outcome->incarnation = incarnation_;
    outcome->data = command;
    outcome->term = term;
    outcomes.push_back(outcome);
    driver_->Propose(std::move(command), [this, outcome](ApplyResult result) {
      OnProposalAnswered(outcome, std::move(result));
    });
  }
  RunDue();
  size_t refused = 0;
  absl::Status refusal;
  for (const auto& o : outcomes) {
    if (o->result && !o->result->ok()) {
      ++refused;
      refusal = o->result->status();
    }
  }
  if (refused == outcomes.size()) return refusal;
  const uint64_t n = outcomes.size();
  if (refused > 0 || !up() || status_.last_index != before + n) {
    Fail(absl::StrCat("the driver took ", n - refused, " of ", n,
                      " proposals; its log went from ", before.value(), " to ",
                      last_index().value()));
    return absl::InternalError("unexpected proposal indexes");
  }
  // The driver proposed them together, right after the entries already in
  // its log.
  for (uint64_t k = 0; k < n; ++k) {
    const std::shared_ptr<Outcome>& o = outcomes[k];
    o->index = before + (k + 1);
    pending_[*o->index] = Pending{o};
    if (o->result) Settle(o);
  }
  Log(absl::StrCat("proposes ", n, " at ", (before + 1).value(), "..",
                   (before + n).value(), " term ", term.value()),
      /*verbose=*/true);
  return before + n;
}

void SimNode::OnProposalAnswered(const std::shared_ptr<Outcome>& outcome,
                                 ApplyResult result) {
  // Answers from a crashing driver (Unavailable "shutting down", or results
  // still queued for the completion stage) are lost with the process.
  if (tearing_down_ || outcome->incarnation != incarnation_) return;
  outcome->result = std::move(result);
  if (outcome->index) Settle(outcome);
}

void SimNode::Settle(const std::shared_ptr<Outcome>& outcome) {
  const LogIndex index = *outcome->index;
  auto it = pending_.find(index);
  if (it != pending_.end() && it->second.outcome == outcome) pending_.erase(it);
  const ApplyResult& result = *outcome->result;
  if (!result.ok()) {
    ++failed_;
    return;
  }
  const AppliedEntry* applied = std::any_cast<AppliedEntry>(&*result);
  if (applied == nullptr || applied->index != index ||
      applied->term != outcome->term || applied->data != outcome->data) {
    Fail(absl::StrCat(
        "the driver answered the proposal '", outcome->data, "' (index ",
        index.value(), " term ", outcome->term.value(), ") with ",
        applied == nullptr
            ? std::string("a result of no command")
            : absl::StrCat("the result of '", applied->data, "' (index ",
                           applied->index.value(), " term ",
                           applied->term.value(), ")")));
    return;
  }
  env_.invariants->OnAcked(id_, index, outcome->data);
  ++acked_;
}

absl::StatusOr<LogIndex> SimNode::ProposeConfChange(const ConfChange& change) {
  if (!up()) return absl::UnavailableError("down");
  const LogIndex before = status_.last_index;
  auto answer = std::make_shared<std::optional<absl::Status>>();
  driver_->ProposeConfChange(change, [answer](ApplyResult result) {
    if (!answer->has_value()) *answer = result.status();
  });
  RunDue();
  if (answer->has_value() && !(*answer)->ok()) return **answer;
  if (!up() || status_.last_index != before + 1) {
    Fail(absl::StrCat("the driver took a conf change; its log went from ",
                      before.value(), " to ", last_index().value()));
    return absl::InternalError("unexpected conf change index");
  }
  static constexpr const char* kNames[] = {"add-learner", "promote", "remove"};
  Log(absl::StrCat("proposes ", kNames[static_cast<int>(change.type)], " ",
                   change.node.value(), " at ", (before + 1).value()));
  return before + 1;
}

absl::Status SimNode::TransferLeadership(NodeId target) {
  if (!up()) return absl::UnavailableError("down");
  auto answer = std::make_shared<std::optional<absl::Status>>();
  driver_->TransferLeadership(
      target, [answer](absl::Status status) { *answer = std::move(status); });
  RunDue();
  if (!answer->has_value()) return absl::UnavailableError("no answer");
  if ((*answer)->ok()) {
    Log(absl::StrCat("transfers leadership to ", target.value()));
  }
  return **answer;
}

void SimNode::ReadIndex() {
  if (!up()) return;
  const LogIndex required = env_.invariants->max_committed();
  const uint64_t incarnation = incarnation_;
  driver_->ReadIndex([this, required, incarnation](absl::Status status) {
    if (!status.ok() || tearing_down_ || incarnation != incarnation_) return;
    env_.invariants->OnReadCompleted(id_, required,
                                     state_machine_->applied_index());
  });
  RunDue();
}

void SimNode::LocalRead() {
  if (!up()) return;
  const std::optional<LogIndex> index = driver_->LocalReadIndex();
  if (!index) return;
  const LogIndex required = env_.invariants->local_read_floor();
  if (driver_->AppliedThrough(*index)) {
    env_.invariants->OnLocalRead(id_, required,
                                 state_machine_->applied_index());
    return;
  }
  const uint64_t incarnation = incarnation_;
  driver_->WhenApplied(
      *index, [this, required, incarnation](absl::Status status) {
        if (!status.ok() || tearing_down_ || incarnation != incarnation_) {
          return;
        }
        env_.invariants->OnLocalRead(id_, required,
                                     state_machine_->applied_index());
      });
  RunDue();
}

std::string SimNode::Describe() const {
  const replication::MemoryLogStore& durable = disk_->durable();
  const std::string disk =
      absl::StrCat("durable log (", (durable.FirstIndex() - 1).value(), ",",
                   durable.LastIndex().value(), "] term ",
                   durable.InitialHardState().term.value(), " vote ",
                   durable.InitialHardState().vote.value(), " commit ",
                   durable.InitialHardState().commit.value(), ", ",
                   disk_->unsynced_writes(), " unsynced writes");
  if (!up()) return absl::StrCat("n", id_.value(), " down, ", disk);
  std::string out = absl::StrCat(
      "n", id_.value(), " ", RoleName(status_.role), " term ",
      status_.term.value(), " leader ", status_.leader.value(), " log (",
      (status_.first_index - 1).value(), ",", status_.last_index.value(),
      "] commit ", status_.commit.value(), " applied ",
      state_machine_->applied_index().value(), "; ", disk, "; stages ",
      runtime_->Describe(), "; pending ", pending_.size());
  for (const auto& [peer, match] : status_.match) {
    absl::StrAppend(&out, "\n    progress n", peer.value(), ": match ",
                    match.value());
  }
  return out;
}

}  // namespace sessiond::sim
