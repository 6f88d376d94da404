// Copyright sessiond authors. Licensed under the Apache License 2.0.
#ifndef SESSIOND_SERVER_CLUSTER_AGENT_H_
#define SESSIOND_SERVER_CLUSTER_AGENT_H_

#include <atomic>
#include <cstdint>
#include <string>

#include "absl/time/time.h"
#include "replication/node_driver.h"
#include "server/cluster_clock.h"
#include "server/periodic_task.h"
#include "server/write_path.h"
#include "storage/command_level.h"
#include "storage/session_state_machine.h"

namespace sessiond::server {

class JwtIssuer;

struct ClusterAgentOptions {
  NodeId self;
  std::string peer_address;    // as the cluster should reach this node
  std::string client_address;  // as clients should reach this node
  // The leeway the first leader writes into the log when none is set yet.
  int64_t initial_expiry_leeway_ms = 0;
  // The JWKS max-age the first leader writes into the log when none is set
  // yet (--jwks_max_age_ms).
  int64_t initial_jwks_max_age_ms = 5 * 60 * 1000;
  // Makes the cluster's first signing key when the ring is empty (null, or
  // without a KEK: no key is made). Must outlive the agent.
  JwtIssuer* jwt_issuer = nullptr;
  absl::Duration interval = absl::Milliseconds(500);
  // A leader that applied no stamp for this long proposes a TickCommand
  // (zero: never). See MaybeTick.
  absl::Duration clock_tick_interval = absl::Seconds(2);
  // Skew beyond this is logged (at most once a minute).
  int64_t skew_log_threshold_ms = 1000;
  // The command level this node publishes: its binary's
  // (storage/command_level.h), or a lower one a test asks for.
  uint32_t command_level = storage::kCommandLevel;
  // A member publishes itself again this often even when its row is
  // current (0: never). A binary from before command levels drops the
  // level when it applies a PUBLISH, so after a rolling upgrade the
  // members that were upgraded first are listed without one on the nodes
  // upgraded after them (their tables differ, and the catch-up stays
  // deferred whenever one of those leads) until they publish again.
  absl::Duration republish_interval = absl::Minutes(10);
};

// Small cluster chores, on every node, every interval:
//   * announce this node (MemberCommand PUBLISH: addresses, "started", its
//     command level) once it has caught up with a leader, and again
//     whenever its addresses or level change: the member table is how other
//     nodes find its client address and how a wiped data dir is recognized
//     (server/bootstrap.h);
//   * on a leader, write --expiry_leeway_ms and --jwks_max_age_ms into the
//     log if the cluster has no replicated value yet, and, with a KEK,
//     bootstrap a first active signing key into an empty key ring (so a new
//     cluster can issue JWT tokens at once);
//   * on a leader, keep cluster time in the log while no command carries
//     it (MaybeTick);
//   * report clock skew (wall clock minus cluster time) in the log.
//
// Owns one thread. Every pointer must outlive it.
class ClusterAgent {
 public:
  ClusterAgent(const ClusterAgentOptions& options,
               replication::NodeDriver* driver,
               const storage::SessionStateMachine* state_machine,
               ClusterClock* clock, WritePath* writes);
  ~ClusterAgent();  // Stop()s.

  ClusterAgent(const ClusterAgent&) = delete;
  ClusterAgent& operator=(const ClusterAgent&) = delete;

  void RunOnce();
  void Stop();

  bool published() const { return published_.load(); }

 private:
  void MaybePublish(const replication::NodeStatus& status);
  void MaybeWriteSettings(const replication::NodeStatus& status);
  void MaybeBootstrapKey(const replication::NodeStatus& status);
  // Cluster time lives in memory between stamped entries: a node restarted
  // after a quiet period resumes from the last stamp it applied, the whole
  // quiet period behind the nodes that kept counting. Elected, it then
  // stamped times that far behind theirs: a new session's lifetime ran
  // from a time they were long past, so they called it EXPIRED at once,
  // and a later leader's first stamp jumped the cluster that far ahead.
  // So a leader that applied no stamp for clock_tick_interval proposes a
  // TickCommand: no node's applied time is then much more than that behind.
  // A follower whose clock runs ahead of its applied time by
  // kFollowerAheadTickMs (it ran while the leader was down) forwards one
  // too, carrying its time to the leader.
  void MaybeTick(const replication::NodeStatus& status);
  static constexpr int64_t kFollowerAheadTickMs = 1000;
  void MaybeReportSkew();

  const ClusterAgentOptions options_;
  replication::NodeDriver* const driver_;                    // outlives this
  const storage::SessionStateMachine* const state_machine_;  // outlives this
  ClusterClock* const clock_;                                // outlives this
  WritePath* const writes_;                                  // outlives this
  std::atomic<bool> publishing_{false};
  std::atomic<bool> published_{false};
  // Agent thread: when this node last published itself, or started
  // (steady clock, ns; 0 before the first round).
  int64_t last_publish_ns_ = 0;
  std::atomic<bool> writing_settings_{false};
  std::atomic<bool> bootstrapping_key_{false};
  std::atomic<bool> ticking_{false};
  absl::Time next_skew_log_ = absl::InfinitePast();  // agent thread only

  PeriodicTask task_;  // last: its thread uses the members above
};

}  // namespace sessiond::server

#endif  // SESSIOND_SERVER_CLUSTER_AGENT_H_
