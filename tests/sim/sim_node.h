// Copyright sessiond authors. Licensed under the Apache License 2.0.
#ifndef SESSIOND_TESTS_SIM_SIM_NODE_H_
#define SESSIOND_TESTS_SIM_SIM_NODE_H_

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/rng.h"
#include "replication/node_driver.h"
#include "tests/sim/invariants.h"
#include "tests/sim/network.h"
#include "tests/sim/sim_disk.h"
#include "tests/sim/sim_runtime.h"
#include "tests/sim/sim_state_machine.h"
#include "tests/sim/sim_transport.h"
#include "tests/sim/trace.h"

namespace sessiond::sim {

// What a node reaches of the simulation. All pointers are owned by the
// Cluster and outlive its nodes.
struct NodeEnv {
  Network* network = nullptr;
  Invariants* invariants = nullptr;
  Trace* trace = nullptr;
  Rng* rng = nullptr;  // disk and apply delays
  const NodeTiming* timing = nullptr;
  const uint64_t* now = nullptr;  // the current step
  // The driver's options (raft.id and seed are set per node and start).
  replication::NodeDriverOptions driver;
  // A broken disk, to prove the checks notice: a crash loses the durable
  // vote (the simulation's own "can fail" test; never set otherwise).
  bool forget_vote_on_crash_for_test = false;
  // Off only to show what the other invariants catch without them.
  bool check_durable_promises = true;
};

// One simulated server running the production replication::NodeDriver:
//
//   survives crashes  SimDisk (the LogStore; power loss drops what was not
//                     synced), SimTransport (to the seeded Network), the
//                     node's clock (ticks)
//   one incarnation   the NodeDriver (NodeDriver::StartOn), its SimRuntime
//                     (queued stage runs) and the SimStateMachine
//
// Every operation (a tick, a delivered message, a client call) ends by
// running the stages that are due, in stage order (RunDue), so each
// operation's immediate effects (the driver's sends, a completed callback)
// happen before the Cluster's next move. After each driver-stage run the
// node looks at the driver's status(): at most one leader per term, the
// commit index never goes back within an incarnation, a new leader holds
// every entry known committed in an earlier term (leader completeness), and
// the entries a leader commits enter the committed record at once.
//
// A crash destroys the driver (drain_timeout 0: its Stop answers what is
// pending with Unavailable; the node treats those as in doubt), the runtime
// with its queued work, and the state machine, and makes the disk lose what
// was not synced. A restart rebuilds the state machine from the disk's
// snapshot and starts a new driver over the disk, which re-applies the
// committed entries after it.
//
// Client calls (Propose, ProposeConfChange, TransferLeadership, ReadIndex,
// Compact) go through the driver's API and record what is needed to judge
// the outcome: a proposal is acknowledged when the driver answers OK with
// the result of the proposal's own entry (index, term and data); a read is
// checked when the driver answers OK, a leader's local read when the driver
// allows it.
//
// Not thread-safe; owned by the Cluster.
class SimNode {
 public:
  SimNode(NodeId id, replication::ConfState bootstrap, NodeEnv env);
  ~SimNode();
  SimNode(const SimNode&) = delete;
  SimNode& operator=(const SimNode&) = delete;

  NodeId id() const { return id_; }
  bool up() const { return driver_ != nullptr; }
  uint64_t incarnation() const { return incarnation_; }
  // The node's clock (its driver's Runtime::Elapsed; NodeStatus times are
  // on it): its ticks so far times the tick interval.
  absl::Duration clock() const;
  static absl::Duration tick_interval();
  // The driver's status after its last driver-stage run. REQUIRES: up().
  const replication::NodeStatus& status() const { return status_; }
  replication::NodeDriverMetrics metrics() const;
  // The state machine (the last incarnation's while down).
  const AppliedState& applied() const { return state_machine_->state(); }
  const SimDisk& disk() const { return *disk_; }
  size_t pending_proposals() const { return pending_.size(); }
  bool has_pending(LogIndex index) const { return pending_.count(index) > 0; }
  LogIndex max_pending() const {
    return pending_.empty() ? LogIndex(0) : pending_.rbegin()->first;
  }
  uint64_t acked() const { return acked_; }
  uint64_t failed() const { return failed_; }
  uint64_t snapshots_installed() const;
  // The last index of the driver's log (durable or not); the disk's while
  // down.
  LogIndex last_index() const;

  // Starts a driver over the disk (a fresh start or a restart).
  void Start(uint64_t seed);
  // Power cut: see the class comment.
  void Crash();

  // One tick of this node's clock.
  void Tick();
  void Deliver(replication::Message message);
  // Runs every stage due by now, in stage order, until none is.
  void RunDue();
  // Log compaction: StateMachine::CreateSnapshot, then
  // NodeDriver::CompactLog. False when there is nothing new to compact.
  bool Compact();

  // Client operations, through the driver. Propose proposes the commands
  // together (the driver makes one RaftCore::Propose of them) and returns
  // the index of the last, or the driver's refusal.
  absl::StatusOr<LogIndex> Propose(std::vector<std::string> commands);
  absl::StatusOr<LogIndex> ProposeConfChange(
      const replication::ConfChange& change);
  absl::Status TransferLeadership(NodeId target);
  // The read is checked when the driver answers it (Invariants).
  void ReadIndex();
  // A read the leader may answer from its own state machine
  // (NodeDriver::LocalReadIndex), checked once it has applied the index
  // the driver gave (at once when it has); nothing when it may not.
  void LocalRead();

  std::string Describe() const;

 private:
  // A proposal waiting for the driver's answer.
  struct Outcome {
    uint64_t incarnation = 0;
    std::string data;
    Term term;
    std::optional<LogIndex> index;  // set once the driver proposed it
    std::optional<replication::ApplyResult> result;
  };
  struct Pending {
    std::shared_ptr<Outcome> outcome;
  };

  void Fail(std::string what);
  void Log(absl::string_view line, bool verbose = false);
  // Drops the driver, the runtime and the state machine.
  void Teardown();
  // After a driver-stage run: see the class comment.
  void Observe(bool log_writer_was_idle);
  void CheckLeaderCompleteness();
  // Enters the committed entries the leader's own log holds into the
  // committed record.
  void RecordLeaderCommits();
  void OnProposalAnswered(const std::shared_ptr<Outcome>& outcome,
                          replication::ApplyResult result);
  void Settle(const std::shared_ptr<Outcome>& outcome);

  const NodeId id_;
  NodeEnv env_;

  // Survive crashes.
  std::unique_ptr<SimDisk> disk_;
  std::unique_ptr<SimTransport> transport_;
  int64_t ticks_ = 0;
  uint64_t incarnation_ = 0;
  uint64_t acked_ = 0;
  uint64_t failed_ = 0;
  uint64_t snapshots_before_ = 0;  // installed by earlier incarnations
  // Entries through this index are in the committed record.
  LogIndex recorded_commit_;

  // One incarnation. Declared before the driver, which uses them: the
  // driver is destroyed first (Teardown).
  std::unique_ptr<SimStateMachine> state_machine_;
  std::unique_ptr<SimRuntime> runtime_;
  std::unique_ptr<replication::NodeDriver> driver_;
  bool tearing_down_ = false;
  replication::NodeStatus status_;
  LogIndex last_commit_;
  Term leader_checked_term_;
  // A new leader whose log writer still had earlier work when it won is
  // checked once that work is on disk.
  bool leader_check_pending_ = false;
  std::map<LogIndex, Pending> pending_;
  LogIndex compact_requested_;
};

}  // namespace sessiond::sim

#endif  // SESSIOND_TESTS_SIM_SIM_NODE_H_
