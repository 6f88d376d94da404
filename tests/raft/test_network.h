// Copyright sessiond authors. Licensed under the Apache License 2.0.
//
// A small in-process cluster for the Raft core's unit and scenario tests,
// after etcd-io/raft's `network` (raft_test.go): one RaftCore and one
// MemoryLogStore per node, messages queued in one FIFO and delivered in a
// single thread. Each node's Ready is processed by the driver ordering rules
// of raft_core.h: install the snapshot, queue send_now, persist to_persist +
// hard_state into the MemoryLogStore, call OnPersisted, queue
// send_after_persist, apply committed entries, call OnApplied.
//
// Not thread-safe; test-only.
#ifndef SESSIOND_TESTS_RAFT_TEST_NETWORK_H_
#define SESSIOND_TESTS_RAFT_TEST_NETWORK_H_

#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "common/rng.h"
#include "replication/core/raft_core.h"
#include "replication/memory_log_store.h"

namespace sessiond::replication::testing {

struct TestNode {
  NodeId id;
  RaftConfig config;
  std::unique_ptr<MemoryLogStore> store;
  std::unique_ptr<RaftCore> core;  // null while crashed
  // The state machine: data of applied normal entries, in order, and the
  // applied index. A snapshot replaces `applied` with its data.
  std::vector<std::string> applied;
  LogIndex applied_index;
  std::vector<ReadState> read_states;
  Role last_role = Role::kFollower;
};

class TestNetwork {
 public:
  // `ids` are the initial voters; `configure` may adjust each node's config.
  explicit TestNetwork(const std::vector<uint64_t>& ids,
                       std::function<void(RaftConfig&)> configure = nullptr);

  TestNode& node(uint64_t id) { return nodes_.at(NodeId(id)); }
  RaftCore& core(uint64_t id) { return *nodes_.at(NodeId(id)).core; }
  std::map<NodeId, TestNode>& nodes() { return nodes_; }

  // Adds a node with an empty membership (it joins by a conf change).
  void AddJoiningNode(uint64_t id);

  // Processes every node's Ready until none has one; queues the messages.
  void ProcessReadies();
  void ProcessReady(TestNode& n);

  // Delivers the messages queued now (not those they cause) and processes
  // the resulting Readies. Returns the delivered messages.
  std::vector<Message> DeliverRound();
  // Delivers until nothing is queued (bounded). Returns messages delivered.
  size_t Stabilize(size_t max_rounds = 1000);

  void TickAll(int n = 1);
  void Tick(uint64_t id, int n = 1);

  // Messages whose (from, to) fails this filter are dropped on delivery.
  void Partition(const std::vector<std::vector<uint64_t>>& groups);
  void Heal();
  void Cut(uint64_t a, uint64_t b);  // drop both directions between a and b
  // Seeded chaos for randomized tests: each delivery round is shuffled,
  // messages are dropped with `drop_percent` and duplicated with
  // `dup_percent` probability.
  void SetChaos(uint64_t seed, uint32_t drop_percent, uint32_t dup_percent);

  // Drops messages of this type (all of them) until Heal().
  void DropType(MessageType type) { dropped_types_.insert(type); }

  void Crash(uint64_t id);
  void Restart(uint64_t id);

  // Compacts `id`'s store through its applied index; the snapshot data is
  // its state machine (the applied list). Returns false when there is
  // nothing to compact.
  bool CompactApplied(uint64_t id);

  // Replaces node's durable log (crashing and restarting it).
  void SetLog(uint64_t id, Term term, LogIndex commit,
              const std::vector<uint64_t>& terms);

  std::deque<Message>& queue() { return queue_; }
  // Events (role changes, read states) recorded since the last call.
  std::vector<std::string> TakeEvents();

  // The persisted log of `id` as "index/term data" lines.
  std::vector<Entry> StoredLog(uint64_t id);

  uint64_t delivered() const { return delivered_; }

 private:
  bool Dropped(const Message& m) const;
  void StartCore(TestNode& n);

  std::map<NodeId, TestNode> nodes_;
  std::function<void(RaftConfig&)> configure_;
  std::deque<Message> queue_;
  std::map<NodeId, int> group_;  // empty: no partition
  std::set<std::pair<NodeId, NodeId>> cut_;
  std::set<MessageType> dropped_types_;
  std::vector<std::string> events_;
  uint64_t delivered_ = 0;
  std::unique_ptr<Rng> chaos_;
  uint32_t drop_percent_ = 0;
  uint32_t dup_percent_ = 0;
};

std::string DescribeMessage(const Message& m);

}  // namespace sessiond::replication::testing

#endif  // SESSIOND_TESTS_RAFT_TEST_NETWORK_H_
