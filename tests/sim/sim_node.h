// Copyright sessiond authors. Licensed under the Apache License 2.0.
#ifndef SESSIOND_TESTS_SIM_SIM_NODE_H_
#define SESSIOND_TESTS_SIM_SIM_NODE_H_

#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/rng.h"
#include "replication/core/raft_core.h"
#include "replication/memory_log_store.h"
#include "tests/sim/invariants.h"
#include "tests/sim/network.h"
#include "tests/sim/trace.h"

namespace sessiond::sim {

// How long the simulated disk and apply thread take, in steps.
struct NodeTiming {
  uint32_t min_disk = 1;
  uint32_t max_disk = 3;
  uint32_t min_apply = 0;
  uint32_t max_apply = 2;
};

// What a node reaches of the simulation. All pointers are owned by the
// Cluster and outlive its nodes.
struct NodeEnv {
  Network* network = nullptr;
  Invariants* invariants = nullptr;
  Trace* trace = nullptr;
  Rng* rng = nullptr;  // disk and apply delays
  const NodeTiming* timing = nullptr;
  // A broken disk, to prove the checks notice: a crash loses the durable
  // vote (the simulation's own "can fail" test; never set otherwise).
  bool forget_vote_on_crash_for_test = false;
};

// One simulated server: a MemoryLogStore that survives crashes (the disk),
// and, while the node is up, a RaftCore with the volatile parts of a driver
// (disk write queue, apply queue, proposals waiting for their outcome).
//
// It is the driver of raft_core.h's ordering rules, with a slow disk: a
// Ready's snapshot, entries and hard state become one write job that
// completes after a seeded delay, in order; only then do OnPersisted and the
// send_after_persist messages happen. A crash drops the core and every job
// not yet complete. Committed entries are applied after a seeded delay, in
// order, never past a snapshot that is not yet installed.
//
// Not thread-safe; owned by the Cluster.
class SimNode {
 public:
  SimNode(NodeId id, replication::ConfState bootstrap,
          replication::RaftConfig config, NodeEnv env);

  NodeId id() const { return id_; }
  bool up() const { return core_ != nullptr; }
  uint64_t incarnation() const { return incarnation_; }
  // REQUIRES: up().
  replication::RaftCore& core() { return *core_; }
  const replication::RaftCore& core() const { return *core_; }
  const AppliedState& applied() const { return applied_; }
  const replication::MemoryLogStore& store() const { return *store_; }
  size_t pending_proposals() const { return pending_.size(); }
  bool has_pending(LogIndex index) const { return pending_.count(index) > 0; }
  LogIndex max_pending() const {
    return pending_.empty() ? LogIndex(0) : pending_.rbegin()->first;
  }
  uint64_t acked() const { return acked_; }
  uint64_t failed() const { return failed_; }
  uint64_t snapshots_installed() const { return snapshots_installed_; }
  // Index of the last entry handed out by the core (durable or not).
  LogIndex last_index() const { return base_index_ + shadow_.size(); }

  // Creates the core from the store (a fresh start or a restart).
  void Start(uint64_t now, uint64_t seed);
  // Drops the core, unfinished disk writes, the apply queue and proposals.
  void Crash(uint64_t now);

  void Tick(uint64_t now);
  void Deliver(const replication::Message& message, uint64_t now);
  // Completes the disk writes due by `now`, in order.
  void AdvanceDisk(uint64_t now);
  // Applies the committed entries due by `now`, in order.
  void AdvanceApply(uint64_t now);
  // Compacts the store through the applied index, with the applied state as
  // snapshot data. Returns false when not possible now (writes in flight,
  // nothing new applied).
  bool Compact(uint64_t now);

  // Client operations; each records what it needs to judge the outcome.
  absl::StatusOr<LogIndex> Propose(std::vector<std::string> commands,
                                   uint64_t now);
  absl::StatusOr<LogIndex> ProposeConfChange(
      const replication::ConfChange& change, uint64_t now);
  absl::Status TransferLeadership(NodeId target, uint64_t now);
  absl::Status ReadIndex(const std::string& context, uint64_t now);
  void Campaign(uint64_t now);

  // Checks run after every step: leader per term, commit never goes back.
  void CheckStep();

  std::string Describe() const;

 private:
  struct Outgoing {
    replication::Message message;
    // kAppendResponse: the term the acknowledged index had when the
    // response was produced (the store must hold it when it leaves).
    std::optional<Term> expect_term;
  };
  struct DiskJob {
    uint64_t seq = 0;
    uint64_t done_at = 0;
    std::optional<replication::Snapshot> snapshot;
    std::vector<replication::Entry> entries;
    std::optional<replication::HardState> hard_state;
    std::vector<Outgoing> after;
  };
  struct ApplyItem {
    uint64_t due = 0;
    std::vector<replication::Entry> entries;
    // Set for a snapshot; applied by the disk job `disk_seq` that installs it.
    std::optional<replication::Snapshot> snapshot;
    uint64_t disk_seq = 0;
  };
  struct Pending {
    std::string data;
    Term term;
  };

  void Fail(std::string what);
  void Log(absl::string_view line, bool verbose = false);
  void Drain(uint64_t now);
  void HandleReady(replication::Ready ready, uint64_t now);
  void ShadowAppend(const std::vector<replication::Entry>& entries);
  std::optional<Term> ShadowTerm(LogIndex index) const;
  Outgoing MakeOutgoing(const replication::Message& message) const;
  // Checks what a message promises about durable state, as it leaves.
  void CheckDurablePromise(const Outgoing& out);
  void Send(const Outgoing& out, uint64_t now);
  void ApplyEntries(const std::vector<replication::Entry>& entries);
  void ApplySnapshot(const replication::Snapshot& snapshot);
  void ApplyThroughSnapshot(uint64_t disk_seq);
  void CheckNewLeader();

  const NodeId id_;
  const replication::ConfState bootstrap_;
  const replication::RaftConfig config_;
  NodeEnv env_;
  uint64_t now_ = 0;  // step of the current event, for the trace

  std::unique_ptr<replication::MemoryLogStore> store_;  // survives crashes

  // Volatile: reset by Crash() and Start().
  std::unique_ptr<replication::RaftCore> core_;
  uint64_t incarnation_ = 0;
  std::deque<DiskJob> disk_queue_;
  uint64_t disk_seq_ = 0;
  uint64_t last_disk_done_at_ = 0;
  std::deque<ApplyItem> apply_queue_;
  uint64_t last_apply_due_ = 0;
  AppliedState applied_;
  std::map<LogIndex, Pending> pending_;
  // The log as the core has handed it out: entries after base_index_.
  LogIndex base_index_;
  Term base_term_;
  std::vector<ShadowEntry> shadow_;
  LogIndex commit_seen_;  // last index handed out in Ready::committed
  LogIndex last_commit_;  // core's commit index at the last check
  replication::HardState last_hard_state_;
  Term leader_checked_term_;
  replication::Role last_role_ = replication::Role::kFollower;
  NodeId last_leader_;

  uint64_t acked_ = 0;
  uint64_t failed_ = 0;
  uint64_t snapshots_installed_ = 0;
};

}  // namespace sessiond::sim

#endif  // SESSIOND_TESTS_SIM_SIM_NODE_H_
