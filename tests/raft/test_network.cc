// Copyright sessiond authors. Licensed under the Apache License 2.0.
#include "tests/raft/test_network.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "common/check.h"

namespace sessiond::replication::testing {

namespace {

// Snapshot data made by CompactApplied: the applied list, '\x1f'-separated,
// after a "sm:" prefix. Other data (hand-made snapshots) is kept as one
// "snapshot:<data>" item.
constexpr char kStateMachinePrefix[] = "sm:";

void RestoreStateMachine(TestNode& n, const std::string& data) {
  n.applied.clear();
  absl::string_view d = data;
  if (absl::ConsumePrefix(&d, kStateMachinePrefix)) {
    if (!d.empty()) n.applied = absl::StrSplit(d, '\x1f');
  } else {
    n.applied.push_back(absl::StrCat("snapshot:", data));
  }
}

}  // namespace

TestNetwork::TestNetwork(const std::vector<uint64_t>& ids,
                         std::function<void(RaftConfig&)> configure)
    : configure_(std::move(configure)) {
  ConfState cs;
  for (uint64_t id : ids) cs.voters.push_back(NodeId(id));
  for (uint64_t id : ids) {
    TestNode& n = nodes_[NodeId(id)];
    n.id = NodeId(id);
    n.store = std::make_unique<MemoryLogStore>(cs);
    StartCore(n);
  }
}

void TestNetwork::AddJoiningNode(uint64_t id) {
  SESSIOND_CHECK(!nodes_.empty());
  ConfState bootstrap = nodes_.begin()->second.store->InitialConfState();
  TestNode& n = nodes_[NodeId(id)];
  n.id = NodeId(id);
  // It starts from the cluster's bootstrap membership (without itself), as
  // a node joining by a conf change would be provisioned.
  n.store = std::make_unique<MemoryLogStore>(bootstrap);
  StartCore(n);
}

void TestNetwork::StartCore(TestNode& n) {
  n.config = RaftConfig{};
  n.config.id = n.id;
  if (configure_) configure_(n.config);
  n.config.applied = LogIndex(0);
  n.applied.clear();
  n.applied_index = LogIndex(0);
  n.last_role = Role::kFollower;
  auto core = RaftCore::Create(n.config, n.store.get(), n.id.value());
  SESSIOND_CHECK_OK(core.status());
  n.core = std::move(*core);
  // A restarted node's state machine is rebuilt from the snapshot data.
  absl::StatusOr<Snapshot> snap = n.store->GetSnapshot();
  if (snap.ok() && !snap->empty()) {
    RestoreStateMachine(n, snap->data);
    n.applied_index = snap->meta.index;
  }
}

bool TestNetwork::CompactApplied(uint64_t id) {
  TestNode& n = nodes_.at(NodeId(id));
  if (!n.core || n.applied_index < n.store->FirstIndex()) return false;
  Snapshot snap;
  snap.meta.index = n.applied_index;
  auto term = n.store->TermAt(n.applied_index);
  SESSIOND_CHECK_OK(term.status());
  snap.meta.term = *term;
  snap.meta.conf_state = n.core->status().conf_state;
  snap.data =
      absl::StrCat(kStateMachinePrefix, absl::StrJoin(n.applied, "\x1f"));
  SESSIOND_CHECK_OK(n.store->Compact(snap));
  n.core->OnCompacted(snap.meta.index);
  return true;
}

void TestNetwork::ProcessReady(TestNode& n) {
  if (!n.core) return;
  while (n.core->HasReady()) {
    Ready rd = n.core->TakeReady();
    if (rd.role) {
      events_.push_back(absl::StrCat(n.id.value(), " became ",
                                     RoleName(*rd.role), " at term ",
                                     n.core->term().value()));
      n.last_role = *rd.role;
    }
    if (rd.snapshot) {
      SESSIOND_CHECK_OK(n.store->InstallSnapshot(*rd.snapshot));
      RestoreStateMachine(n, rd.snapshot->data);
      n.applied_index = rd.snapshot->meta.index;
      n.core->OnSnapshotInstalled(rd.snapshot->meta.index);
    }
    for (Message& m : rd.send_now) queue_.push_back(std::move(m));
    if (!rd.to_persist.empty() || rd.hard_state) {
      SESSIOND_CHECK_OK(n.store->Append(rd.to_persist, rd.hard_state, true));
    }
    if (!rd.to_persist.empty()) {
      n.core->OnPersisted(rd.to_persist.back().index,
                          rd.to_persist.back().term);
    }
    for (Message& m : rd.send_after_persist) queue_.push_back(std::move(m));
    for (const Entry& e : rd.committed) {
      SESSIOND_CHECK(e.index == n.applied_index + 1);
      if (e.type == EntryType::kNormal && !e.data.empty()) {
        n.applied.push_back(e.data);
      }
      n.applied_index = e.index;
    }
    if (!rd.committed.empty()) n.core->OnApplied(n.applied_index);
    for (ReadState& rs : rd.read_states) {
      events_.push_back(absl::StrCat(n.id.value(), " read ", rs.context,
                                     " at index ", rs.index.value()));
      n.read_states.push_back(std::move(rs));
    }
  }
}

void TestNetwork::ProcessReadies() {
  for (int i = 0; i < 100; ++i) {
    bool any = false;
    for (auto& [id, n] : nodes_) {
      if (n.core && n.core->HasReady()) {
        any = true;
        ProcessReady(n);
      }
    }
    if (!any) return;
  }
}

bool TestNetwork::Dropped(const Message& m) const {
  if (dropped_types_.count(m.type)) return true;
  if (cut_.count({m.from, m.to})) return true;
  if (!group_.empty()) {
    auto a = group_.find(m.from);
    auto b = group_.find(m.to);
    const int ga = a == group_.end() ? -1 : a->second;
    const int gb = b == group_.end() ? -1 : b->second;
    if (ga != gb) return true;
  }
  return false;
}

std::vector<Message> TestNetwork::DeliverRound() {
  ProcessReadies();
  std::deque<Message> round = std::move(queue_);
  queue_.clear();
  if (chaos_) {
    std::deque<Message> mixed;
    std::vector<Message> delayed;
    for (Message& m : round) {
      if (chaos_->Percent(drop_percent_)) continue;
      if (chaos_->Percent(dup_percent_)) mixed.push_back(m);
      if (chaos_->Percent(dup_percent_)) {
        delayed.push_back(std::move(m));  // held back one round
        continue;
      }
      mixed.push_back(std::move(m));
    }
    for (size_t i = mixed.size(); i > 1; --i) {
      std::swap(mixed[i - 1], mixed[chaos_->Uniform(i)]);
    }
    round = std::move(mixed);
    for (Message& m : delayed) queue_.push_back(std::move(m));
  }
  std::vector<Message> delivered;
  for (Message& m : round) {
    auto it = nodes_.find(m.to);
    if (it == nodes_.end() || !it->second.core || Dropped(m)) continue;
    delivered.push_back(m);
    ++delivered_;
    SESSIOND_CHECK_OK(it->second.core->Step(std::move(m)));
    ProcessReady(it->second);
  }
  ProcessReadies();
  return delivered;
}

size_t TestNetwork::Stabilize(size_t max_rounds) {
  size_t total = 0;
  ProcessReadies();
  for (size_t i = 0; i < max_rounds && !queue_.empty(); ++i) {
    total += DeliverRound().size();
  }
  return total;
}

void TestNetwork::TickAll(int n) {
  for (int i = 0; i < n; ++i) {
    for (auto& [id, node] : nodes_) {
      if (node.core) node.core->Tick();
    }
    ProcessReadies();
  }
}

void TestNetwork::Tick(uint64_t id, int n) {
  TestNode& node = nodes_.at(NodeId(id));
  for (int i = 0; i < n && node.core; ++i) {
    node.core->Tick();
    ProcessReady(node);
  }
}

void TestNetwork::Partition(const std::vector<std::vector<uint64_t>>& groups) {
  group_.clear();
  for (size_t g = 0; g < groups.size(); ++g) {
    for (uint64_t id : groups[g]) group_[NodeId(id)] = static_cast<int>(g);
  }
}

void TestNetwork::SetChaos(uint64_t seed, uint32_t drop_percent,
                           uint32_t dup_percent) {
  chaos_ = std::make_unique<Rng>(seed);
  drop_percent_ = drop_percent;
  dup_percent_ = dup_percent;
}

void TestNetwork::Heal() {
  group_.clear();
  cut_.clear();
  dropped_types_.clear();
}

void TestNetwork::Cut(uint64_t a, uint64_t b) {
  cut_.insert({NodeId(a), NodeId(b)});
  cut_.insert({NodeId(b), NodeId(a)});
}

void TestNetwork::Crash(uint64_t id) {
  TestNode& n = nodes_.at(NodeId(id));
  n.core.reset();
  std::deque<Message> keep;
  for (Message& m : queue_) {
    if (m.from != n.id && m.to != n.id) keep.push_back(std::move(m));
  }
  queue_ = std::move(keep);
}

void TestNetwork::Restart(uint64_t id) {
  TestNode& n = nodes_.at(NodeId(id));
  n.core.reset();
  StartCore(n);
}

void TestNetwork::SetLog(uint64_t id, Term term, LogIndex commit,
                         const std::vector<uint64_t>& terms) {
  TestNode& n = nodes_.at(NodeId(id));
  n.core.reset();
  ConfState cs = n.store->InitialConfState();
  n.store = std::make_unique<MemoryLogStore>(cs);
  std::vector<Entry> entries;
  for (size_t i = 0; i < terms.size(); ++i) {
    Entry e;
    e.index = LogIndex(i + 1);
    e.term = Term(terms[i]);
    e.data = absl::StrCat("e", i + 1, "t", terms[i]);
    entries.push_back(std::move(e));
  }
  SESSIOND_CHECK_OK(
      n.store->Append(entries, HardState{term, NodeId(0), commit}, true));
  StartCore(n);
}

std::vector<std::string> TestNetwork::TakeEvents() {
  std::vector<std::string> out = std::move(events_);
  events_.clear();
  return out;
}

std::vector<Entry> TestNetwork::StoredLog(uint64_t id) {
  const TestNode& n = nodes_.at(NodeId(id));
  const LogIndex first = n.store->FirstIndex();
  const LogIndex last = n.store->LastIndex();
  if (last < first) return {};
  auto entries = n.store->Entries(first, last + 1, ~0ull);
  SESSIOND_CHECK_OK(entries.status());
  return *entries;
}

std::string DescribeMessage(const Message& m) {
  std::string out =
      absl::StrCat(m.from.value(), "->", m.to.value(), " ",
                   MessageTypeName(m.type), " term=", m.term.value());
  switch (m.type) {
    case MessageType::kAppend:
      absl::StrAppend(&out, " prev=", m.index.value(), "/", m.log_term.value(),
                      " commit=", m.commit.value());
      if (!m.entries.empty()) {
        std::vector<std::string> es;
        for (const Entry& e : m.entries) {
          es.push_back(absl::StrCat(e.index.value(), "/", e.term.value()));
        }
        absl::StrAppend(&out, " entries=[", absl::StrJoin(es, " "), "]");
      }
      break;
    case MessageType::kAppendResponse:
      absl::StrAppend(&out, " index=", m.index.value());
      if (m.reject) {
        absl::StrAppend(&out, " reject hint=", m.reject_hint.value(), "/",
                        m.hint_term.value());
      }
      break;
    case MessageType::kVote:
    case MessageType::kPreVote:
      absl::StrAppend(&out, " last=", m.index.value(), "/", m.log_term.value());
      if (!m.context.empty()) absl::StrAppend(&out, " ", m.context);
      break;
    case MessageType::kVoteResponse:
    case MessageType::kPreVoteResponse:
      absl::StrAppend(&out, m.reject ? " reject" : " grant");
      break;
    case MessageType::kHeartbeat:
      absl::StrAppend(&out, " commit=", m.commit.value());
      [[fallthrough]];
    case MessageType::kHeartbeatResponse:
    case MessageType::kReadIndex:
      if (!m.context.empty()) absl::StrAppend(&out, " ctx=", m.context);
      break;
    case MessageType::kReadIndexResponse:
      absl::StrAppend(&out, " index=", m.index.value(), " ctx=", m.context);
      break;
    case MessageType::kSnapshot:
      absl::StrAppend(&out, " snap=", m.snapshot->meta.index.value(), "/",
                      m.snapshot->meta.term.value());
      break;
    case MessageType::kTimeoutNow:
      break;
  }
  return out;
}

}  // namespace sessiond::replication::testing
