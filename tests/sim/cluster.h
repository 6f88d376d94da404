// Copyright sessiond authors. Licensed under the Apache License 2.0.
#ifndef SESSIOND_TESTS_SIM_CLUSTER_H_
#define SESSIOND_TESTS_SIM_CLUSTER_H_

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"
#include "common/rng.h"
#include "replication/core/raft_core.h"
#include "tests/sim/invariants.h"
#include "tests/sim/network.h"
#include "tests/sim/sim_node.h"
#include "tests/sim/staleness_claims.h"
#include "tests/sim/trace.h"

namespace sessiond::sim {

// Mixes a scenario seed with labels into an independent seed (SplitMix64).
uint64_t DeriveSeed(uint64_t seed, uint64_t a, uint64_t b = 0);

// Everything a scenario does, derived from its seed. Rates are per step, in
// per mille; durations are in steps (a node ticks every steps_per_tick).
struct ScenarioParams {
  uint64_t seed = 1;
  int nodes = 3;
  uint64_t fault_steps = 2500;
  uint32_t steps_per_tick = 4;
  replication::RaftConfig raft;  // id is set per node
  NetworkOptions net;
  NodeTiming timing;

  uint32_t crash_permille = 0;
  uint32_t restart_min = 20;
  uint32_t restart_max = 400;
  uint32_t leader_crash_percent = 50;  // share of crashes aimed at a leader
  uint32_t crash_all_permille = 0;     // every node at once
  // Share of the random crashes that also lose the messages the node sent
  // that are still in flight (it died before its driver's sends left).
  uint32_t crash_loses_sent_percent = 0;
  // Reactive faults, aimed at the moments Raft is most fragile:
  // - a new leader loses one follower at once (crash or isolation);
  // - a new leader is itself cut off at once, its first messages lost, so
  //   that entries of its term exist on it alone;
  // - a leader is cut off just after its commit index moved (crash or
  //   isolation; the messages it still had in flight, which would carry
  //   the news and its next entries, are lost with it);
  // - a leader elected behind another node's log (one that ends in a newer
  //   term than the leader's last entry from before its term) is cut apart
  //   from that node, and crashes as soon as it commits an entry that node
  //   lacks, its messages in flight lost; it stays down for a few election
  //   timeouts, with no other fault on the clock, while the node ahead
  //   rejoins: whatever the leader committed must survive that node's
  //   election (the Raft paper's figure 8);
  // - a crashed node restarts just as an election starts.
  uint32_t new_leader_cut_percent = 0;
  uint32_t new_leader_lost_percent = 0;
  // The same, for a new leader that lacks the last entry another node
  // holds: losing it leaves two different suffixes, of two terms, in the
  // cluster (the first step of figure 8).
  uint32_t divergent_leader_lost_percent = 0;
  uint32_t crash_after_commit_permille = 0;
  uint32_t behind_leader_crash_percent = 0;
  uint32_t restart_on_election_percent = 0;
  uint32_t partition_permille = 0;
  uint32_t heal_permille = 20;

  uint32_t propose_permille = 100;
  uint32_t max_batch = 3;
  // Client back-pressure: no proposals to a node whose log runs this many
  // entries past its commit index (clients wait for answers; without it a
  // leader that cannot commit grows an unbounded backlog).
  uint32_t client_max_uncommitted = 256;
  uint32_t conf_change_permille = 0;
  uint32_t transfer_permille = 0;
  uint32_t read_permille = 0;
  uint32_t compact_permille = 10;
  // NodeDriverOptions::compaction_catch_up_entries: entries kept below a
  // compaction's snapshot (0: none, so any lag needs a snapshot).
  uint64_t compaction_catch_up_entries = 0;

  // A disk that loses the vote in a crash (see NodeEnv); tests only.
  bool disk_forgets_vote_for_test = false;
  // The NodeDriverOptions of the same names: a driver that breaks its
  // durability rules; tests only.
  bool unsafe_unsynced_log_writes_for_test = false;
  bool unsafe_ack_before_persist_for_test = false;
  // Tests only: false turns the durable-promise checks off, to show what
  // the other invariants catch of a broken driver without them.
  bool check_durable_promises = true;
  // Clock drift, tests only: node 1 ticks this many times slower (0: no
  // drift). Leases assume bounded drift, so this must break lease reads.
  uint32_t node1_slow_tick_factor_for_test = 0;

  // Liveness: once faults stop, a leader must emerge and everything
  // pending must settle within this many ticks.
  uint32_t liveness_ticks = 500;

  // The standard randomized scenario of the soak.
  static ScenarioParams FromSeed(uint64_t seed);
  // No faults of any kind: the sanity baseline.
  static ScenarioParams NoFaults(uint64_t seed, int nodes);
  // Tuned to reach the Raft paper's figure 8 situation: leaders crash after
  // replicating to some followers, one entry per message, many elections.
  static ScenarioParams Figure8Hunt(uint64_t seed);

  std::string Describe() const;
};

struct ScenarioResult {
  bool ok = true;
  std::string violation;
  std::string trace_tail;
  std::string cluster_state;
  uint64_t steps = 0;
  uint64_t committed = 0;
  uint64_t acked = 0;
  uint64_t leaders = 0;
  uint64_t reads = 0;
  uint64_t local_reads = 0;  // leader reads with no ReadIndex round
  uint64_t crashes = 0;
  uint64_t snapshots = 0;  // installed from a leader
  uint64_t conf_changes = 0;
  uint64_t transfers = 0;  // started
};

// A simulated cluster of production NodeDrivers (over real RaftCores) on a
// seeded network, with a client model and a fault injector. Run() plays a
// whole scenario; the building blocks below also serve scripted tests. Every
// random choice comes from Rngs derived from params.seed, and nothing
// iterates an unordered container, so a seed replays exactly.
//
// Not thread-safe; one per test.
class Cluster {
 public:
  // trace_level: see Trace (SESSIOND_SIM_TRACE).
  explicit Cluster(ScenarioParams params, int trace_level = 0);

  // The fault phase, then healing and the liveness phase, then the final
  // check that every acknowledged command is applied on every member.
  ScenarioResult Run();

  // One step: faults, restarts, ticks, message delivery (each message is
  // followed by its node's due stages), the disk writes and applies due,
  // the client, compaction. Every node operation runs its due stages.
  void Step();
  // Steps until `done` holds (checked after each step) or the invariants
  // fail; false after `max_steps`.
  bool RunUntil(const std::function<bool()>& done, uint64_t max_steps);

  void set_faults_enabled(bool on) { faults_enabled_ = on; }
  void set_client_enabled(bool on) { client_enabled_ = on; }

  void Crash(NodeId id);
  void Restart(NodeId id);
  // Starts a brand-new node (empty disk, new id) that is not a member yet.
  NodeId AddFreshNode();
  // Shuts a node down for good.
  void Destroy(NodeId id);
  // Stops faults, heals the network, restarts every crashed node and shuts
  // down nodes that were removed from the cluster.
  void HealEverything();

  Network& network() { return network_; }
  Invariants& invariants() { return invariants_; }
  Trace& trace() { return trace_; }
  SimNode* node(NodeId id);
  std::vector<NodeId> node_ids() const;
  // The live leader with the highest term, or nullptr.
  SimNode* Leader();
  uint64_t now() const { return now_; }
  const ScenarioParams& params() const { return params_; }
  std::string NewCommand();

  ScenarioResult Result() const;
  std::string DescribeState() const;

 private:
  void AddNode(NodeId id);
  void InjectFaults();
  void ReactiveFaults(const std::vector<NodeId>& all);
  uint64_t ElectionTimeoutSteps() const {
    return static_cast<uint64_t>(params_.raft.election_ticks) *
           params_.steps_per_tick;
  }
  bool CommitFaults(SimNode* to, NodeId from, const std::vector<NodeId>& all);
  void CrashBehindLeader(SimNode* leader, NodeId ahead, NodeId from,
                         const std::vector<NodeId>& all);
  // Crashes `victim` (losing its messages in flight when `lose_sent`) and
  // schedules its restart.
  void CrashFault(NodeId victim, bool lose_sent);
  // Cuts `victim` off at once: its messages in flight are lost, and it
  // crashes or (half the time) is isolated from every node in `all`.
  void CutOff(NodeId victim, const std::vector<NodeId>& all,
              absl::string_view why);
  // A node whose durable log ends in a newer term than the last entry
  // `leader` holds from before its current term, and which does not hold
  // the leader's entry at index `at` (0: that last entry). 0: none.
  NodeId NodeAheadOf(SimNode* leader, LogIndex at);
  // Whether another node's durable log ends in an entry (of an earlier
  // term) that `leader` does not hold.
  bool LacksEntryOfAnother(SimNode* leader);
  void ClientStep();
  void LivenessClientStep();
  void MembershipStep(SimNode* leader);
  void DestroyRetired();
  bool LivenessDone(std::string* why);
  void FinalChecks();
  // Every node's staleness claim against the writes acknowledged so far
  // (StalenessClaims), after each step.
  void CheckStalenessClaims();

  const ScenarioParams params_;
  Trace trace_;
  Invariants invariants_;
  StalenessClaims staleness_claims_;
  size_t acks_claimed_ = 0;  // of invariants_.ack_order()
  Network network_;
  Rng rng_;       // faults and client choices
  Rng node_rng_;  // disk and apply delays
  NodeTiming timing_;
  replication::ConfState bootstrap_;

  std::map<NodeId, std::unique_ptr<SimNode>> nodes_;
  std::map<NodeId, uint32_t> tick_phase_;
  std::map<NodeId, uint64_t> restart_at_;
  uint64_t next_id_ = 1;
  NodeId fresh_;  // a new node being added as a learner (0: none)

  uint64_t now_ = 0;
  bool faults_enabled_ = true;
  bool client_enabled_ = true;
  bool liveness_phase_ = false;
  uint64_t command_seq_ = 0;
  bool ProbeAcked() const;
  std::vector<std::pair<LogIndex, std::string>> probes_;
  NodeId probe_node_;  // where the latest probe waits
  LogIndex probe_index_;

  uint64_t crashes_ = 0;
  uint64_t transfers_ = 0;
  uint64_t snapshots_of_destroyed_ = 0;
  // Reactive faults: the leader last seen, its term and commit index.
  NodeId watched_leader_;
  Term watched_term_;
  LogIndex watched_commit_;
  bool campaigning_ = false;  // some node was campaigning at the last step
  // A node ahead of the watched leader's log when it was elected, until the
  // leader commits an entry that such a node lacks (0: none).
  NodeId ahead_of_leader_;
  // Kept down until quiet_until_ (no restart on an election).
  NodeId held_down_;
  // No crashes or partitions on the clock before this step.
  uint64_t quiet_until_ = 0;
};

}  // namespace sessiond::sim

#endif  // SESSIOND_TESTS_SIM_CLUSTER_H_
