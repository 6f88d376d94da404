// Copyright sessiond authors. Licensed under the Apache License 2.0.
#ifndef SESSIOND_SERVER_DAEMON_H_
#define SESSIOND_SERVER_DAEMON_H_

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "common/strong_types.h"
#include "server/config.h"
#include "server/expiry_sweep_stats.h"
#include "server/peer_wall_clocks.h"
#include "server/pending_touch.h"
#include "server/periodic_task.h"
#include "server/removal_watch.h"
#include "sessiond/v1/admin.pb.h"
#include "sessiond/v1/peer.pb.h"

namespace grpc {
class Server;
}  // namespace grpc

namespace sessiond::storage {
class Database;
class DiskGuard;
class RaftLogStore;
class SessionStateMachine;
class SessionTable;
class SnapshotFiles;
}  // namespace sessiond::storage

namespace sessiond::replication {
class NodeDriver;
}  // namespace sessiond::replication

namespace sessiond::server {

class AdminServiceImpl;
class ApplyMetrics;
class AuditRecorder;
class BackupTaker;
class ClusterAgent;
class ClusterClock;
class CountingStateMachine;
class DelayQueue;
class ExpirySweeper;
class JwksHttpServer;
class ListenerSecurity;
class JwtIssuer;
class LogCompactor;
class LogoutDetectorTask;
class MetricsHttpServer;
class PeerService;
class PeerTransport;
class ReadBarrier;
class RpcMetrics;
class CreateRateLimiter;
class SessionServiceImpl;
class WriteAdmission;
class SocketPoller;
class TouchBuffer;
class WritePath;

// The composition root (LogCabin's Globals, without globals): builds every
// part of a sessiond node in dependency order and owns them, destroying them
// in reverse. One Daemon per process in production; tests may run several
// (on different data dirs and ports).
//
//   Database, RaftLogStore, SnapshotFiles -> peer listener (answers Hello
//   from the start) -> identity and bootstrap (server/bootstrap.h) ->
//   PeerTransport -> SessionTable, SessionStateMachine (loads the table;
//   re-applies the log's snapshot if the state lags it) -> NodeDriver
//   (replays the log) -> DelayQueue, ClusterClock, WritePath, ReadBarrier,
//   TouchBuffer -> peer service attached -> wait for the replay ->
//   SessionService, AdminService, ExpirySweeper, LogCompactor, ClusterAgent
//   -> client listener -> logout detector's thread (built before the peer
//   service is attached, so SelfStatus may read it) -> metrics endpoint
//   (--metrics_listen; RpcMetrics,
//   whose interceptors both gRPC servers hold, is built before the peer
//   listener and destroyed after both servers)
//
// A single node (no --initial_cluster) is a one-voter group with no peer
// listener; it takes exactly the same write and read paths.
//
// Thread-safe: Shutdown may be called from any thread, once or many times;
// Reload from any thread (shutdown_mu_ serializes the two).
class Daemon {
 public:
  // Opens the data dir and starts serving once this node has replayed its
  // log. Errors: those of storage::Database::Open (FailedPrecondition when
  // another process holds the dir, DataLoss when it is corrupt), of
  // DecideIdentity (FailedPrecondition: another cluster's data dir, a wiped
  // member that must rejoin), Unavailable when an address cannot be bound
  // or the replay does not finish within the startup timeout. Refusals only
  // an operator can mend are marked (IsForAnOperator, server/bootstrap.h).
  //
  // `on_restart_needed`, when set, is called once (on the sd-log-watch
  // thread, so it must not block or destroy the daemon) when this daemon
  // cannot go on writing but a new one with the same config would: RocksDB's
  // write-ahead log failed (storage::Database::wal_failure) and the data
  // disk has room again. main.cc then restarts it in place (SIGUSR2).
  //
  // `on_stop_needed`, when set, is called once (on a peer or apply thread,
  // so it must not block or destroy the daemon) when this node learns that
  // it was removed from its cluster (LeaveCluster): main.cc then shuts it
  // down as on SIGTERM.
  //
  // `handover`: what the daemon this one replaces in the same process (a
  // restart in place) left unfinished: TakeHandover of the one before.
  //
  // `before_serving`, when set, is called once on the calling thread just
  // before the client API starts to serve (after the waits for peers and
  // for the replay): main.cc stops taking SIGTERM as "stop while starting"
  // there.
  using RestartRequest = std::function<void()>;
  using StopRequest = std::function<void()>;
  struct Handover {
    // Touches that never reached its log (a full disk): this one's first
    // flush sends them, and idle time stays stopped where they stopped.
    UnlandedTouches touches;
  };
  static absl::StatusOr<std::unique_ptr<Daemon>> Start(
      const Config& config, RestartRequest on_restart_needed = nullptr,
      StopRequest on_stop_needed = nullptr, Handover handover = {},
      std::function<void()> before_serving = nullptr);

  ~Daemon();  // Shutdown()s.
  Daemon(const Daemon&) = delete;
  Daemon& operator=(const Daemon&) = delete;

  // Stops accepting calls, lets in-flight calls finish (cancelling those
  // still running after shutdown_grace_ms), hands leadership to another
  // voter when this node leads, stops the background tasks and the driver,
  // and closes RocksDB cleanly. Idempotent.
  void Shutdown();
  // After Shutdown: what a daemon started in its place should take over
  // (Start's `handover`). Empty the second time.
  Handover TakeHandover();

  // SIGHUP: applies from `next` the options config.cc's table marks
  // reloadable (ReloadableOptionNames(): sweep_interval_ms, sweep_batch,
  // shutdown_grace_ms) and ignores the rest, which need a restart. A new
  // sweep interval or batch is given to the running expiry sweeper
  // (ExpirySweeper::Reconfigure), which keeps its breaker judgement; it
  // waits for nothing. FailedPrecondition once Shutdown began.
  absl::Status Reload(const Config& next);

  // host:port actually bound (with the real port when listen had port 0).
  const std::string& address() const { return address_; }
  // What the next Shutdown drains with (Reload may change it).
  int64_t shutdown_grace_ms() const { return shutdown_grace_ms_.load(); }
  int port() const { return port_; }
  // The peer listener's bound address (empty for a single node).
  const std::string& peer_address() const { return peer_address_; }
  // The metrics endpoint's bound address (empty without --metrics_listen).
  const std::string& metrics_address() const { return metrics_address_; }
  // The JWKS endpoint's bound address (--jwks_listen; empty: off).
  const std::string& jwks_address() const { return jwks_address_; }
  uint64_t cluster_id() const { return cluster_id_; }
  // Sessions in the table right after recovery, and how long recovery took.
  uint64_t sessions_loaded() const { return sessions_loaded_; }
  int64_t startup_ms() const { return startup_ms_; }
  // Where startup time went, e.g. "open 12 ms, load 300 ms, replay 40 ms,
  // listen 5 ms".
  const std::string& startup_breakdown() const { return startup_breakdown_; }

  storage::SessionTable* table() const { return table_.get(); }
  storage::SessionStateMachine* state_machine() const {
    return state_machine_.get();
  }
  replication::NodeDriver* driver() const { return driver_.get(); }
  TouchBuffer* touch_buffer() const { return touches_.get(); }
  // Reconfigured (not replaced) by Reload when the sweep settings change.
  ExpirySweeper* sweeper() const { return sweeper_.get(); }
  LogCompactor* compactor() const { return compactor_.get(); }
  storage::RaftLogStore* log_store() const { return log_.get(); }
  ClusterClock* clock() const { return clock_.get(); }
  WritePath* write_path() const { return writes_.get(); }

  // This node's row of ClusterStatus.
  sessiond::v1::MemberStatus SelfStatus(bool with_digest) const;

 private:
  Daemon(const Config& config, RestartRequest on_restart_needed,
         StopRequest on_stop_needed, Handover handover,
         std::function<void()> before_serving);
  absl::Status Init();
  // The value of a data-dir mark (storage/keys.h) that keeps this node from
  // starting; nullopt when there is none or --force_new_cluster overrides
  // it (and clears it).
  absl::StatusOr<std::optional<std::string>> StartBlockingMark(
      const char* key) const;
  // FailedPrecondition when the data dir was restored from a backup
  // (storage::kRestoredBackupKey) and --force_new_cluster is not given.
  absl::Status CheckRestoredBackup() const;
  // FailedPrecondition when this node learned that it was removed from its
  // cluster (storage::kRemovedFromClusterKey). Not with --force_new_cluster.
  absl::Status CheckNotRemoved() const;
  // removal_check_'s run: while a removal is suspected (this node applied a
  // configuration without itself, or a peer refused its traffic as a
  // removed member's), asks the leader, and leaves the cluster when the
  // leader has it neither as voter nor learner and lists it as removed.
  void ConfirmRemoval();
  // removal_check_'s run too: a node that claimed to lead this cluster
  // while this node is the lone voter of its own configuration
  // (PeerServiceParts::on_split_identity) is asked Hello at the address it
  // gave; this node leaves the cluster only when that node answers as the
  // leader of this cluster and epoch that counts this node as a member.
  // Otherwise the claim is logged (peer.split_identity_not_confirmed) and
  // dropped: one message from anyone who reached the peer port made a lone
  // voter mark its data dir removed and stop for good.
  void ConfirmSplitIdentity();
  // The transport follows the cluster's members: their addresses, and who
  // was removed.
  void FollowMembers(const sessiond::v1::internal::ClusterState& cluster);
  // Once: marks the data dir (with `mark`: the applied state may not say
  // so), logs node.removed with what to do, and asks for a stop.
  void LeaveCluster(const std::string& why, bool mark);
  // log_watch_'s run, with free space back to where the disk guard resumes
  // writes: asks for a restart in place at once when RocksDB's write-ahead
  // log failed for lack of space, and when writes have gone on failing for
  // lack of space for --stuck_writes_restart_ms since (RocksDB's recovery
  // hung).
  void RestartIfWritesStuck();
  // Unless the data dir takes no new file (DiskGuard::ProbeNewFile): then
  // logs storage.restart_deferred once and asks nothing.
  void RequestRestartInPlace(const char* event, const absl::Status& error,
                             const std::string& msg);
  absl::Status StartPeerListener();
  std::unique_ptr<ExpirySweeper> NewSweeper(int64_t interval_ms, int64_t batch);
  sessiond::v1::internal::HelloResponse Hello() const;

  const Config config_;
  std::string address_;
  int port_ = 0;
  std::string peer_address_;
  std::string metrics_address_;
  std::string jwks_address_;
  std::string advertised_peer_;
  std::string advertised_client_;
  uint64_t cluster_id_ = 0;
  uint64_t sessions_loaded_ = 0;
  int64_t startup_ms_ = 0;
  std::string startup_breakdown_;
  // Set once every part exists (Hello and SelfStatus read them only then).
  std::atomic<bool> running_{false};
  std::atomic<uint64_t> hello_cluster_id_{0};
  // Identity.cluster_epoch, new when this start forces a new cluster; set
  // with the identity (Hello may read it earlier: 0).
  std::atomic<uint64_t> cluster_epoch_{0};

  // --metrics_listen: times the gRPC servers' calls; destroyed after them.
  // TLS and roles of the listeners and peer channels (built first, kept
  // until the end: the gRPC servers hold its credentials).
  std::unique_ptr<ListenerSecurity> security_;
  std::unique_ptr<RpcMetrics> rpc_metrics_;
  // The members' wall clocks, from peer batches; written by the peer
  // service, read by the transport and by JWT creates (outlives them all).
  PeerWallClocks wall_clocks_;
  // In dependency order; destroyed in reverse.
  std::unique_ptr<storage::Database> db_;
  // Watches the data dir's free space; makes the driver refuse proposals
  // through disk_driver_ (null until the driver runs and after it stops).
  std::unique_ptr<storage::DiskGuard> disk_guard_;
  std::atomic<replication::NodeDriver*> disk_driver_{nullptr};
  std::unique_ptr<storage::RaftLogStore> log_;
  std::unique_ptr<storage::SnapshotFiles> snapshots_;
  std::unique_ptr<PeerService> peer_service_;
  std::unique_ptr<grpc::Server> peer_server_;
  std::unique_ptr<PeerTransport> transport_;
  std::unique_ptr<storage::SessionTable> table_;
  std::unique_ptr<storage::SessionStateMachine> state_machine_;
  // Signs JWT tokens and makes signing keys (with --kek_file).
  std::unique_ptr<JwtIssuer> jwt_issuer_;
  // What the driver applies through: state_machine_, counted by kind.
  std::unique_ptr<ApplyMetrics> apply_metrics_;
  std::unique_ptr<CountingStateMachine> counting_machine_;
  std::unique_ptr<replication::NodeDriver> driver_;
  std::unique_ptr<DelayQueue> timers_;
  std::unique_ptr<ClusterClock> clock_;
  std::unique_ptr<WritePath> writes_;
  // Records audited calls through writes_ (server/audit_recorder.h).
  std::unique_ptr<AuditRecorder> audit_;
  std::unique_ptr<ReadBarrier> reads_;
  std::unique_ptr<TouchBuffer> touches_;
  // From the daemon before (Start), until Init hands it to touches_; then
  // what Shutdown leaves for the next one (TakeHandover).
  Handover handover_;
  std::function<void()> before_serving_;  // Init calls it, once
  std::unique_ptr<CreateRateLimiter> create_rate_limiter_;
  std::unique_ptr<WriteAdmission> write_admission_;
  std::unique_ptr<SessionServiceImpl> service_;
  std::unique_ptr<AdminServiceImpl> admin_;
  ExpirySweepStats sweep_stats_;  // every sweeper_ counts here (outlives it)
  std::unique_ptr<ExpirySweeper> sweeper_;
  // --logout_detector_interval_ms > 0: samples table_ and service_'s
  // validation counts on its thread (sd-logout) from the end of Init until
  // Shutdown stops it; SelfStatus reads its alerts.
  std::unique_ptr<LogoutDetectorTask> logout_detector_;
  std::unique_ptr<LogCompactor> compactor_;
  // compactor_, for the transport's threads (started before it exists).
  std::atomic<LogCompactor*> compactor_for_transport_{nullptr};
  // AdminService.Backup's worker (pauses compactor_ while it copies).
  std::unique_ptr<BackupTaker> backups_;
  std::unique_ptr<ClusterAgent> agent_;
  // Reads the sockets of server_ (and of peer_server_); outlives server_,
  // which Shutdown() destroys first.
  std::unique_ptr<SocketPoller> socket_poller_;
  std::unique_ptr<grpc::Server> server_;
  // GET /metrics and /healthz ("sd-metrics"); reads the parts above, so it
  // starts once they all exist and stops before any is destroyed.
  std::unique_ptr<MetricsHttpServer> metrics_http_;
  std::unique_ptr<JwksHttpServer> jwks_http_;
  const RestartRequest on_restart_needed_;
  bool restart_requested_ = false;        // log_watch_'s thread only
  bool restart_deferred_logged_ = false;  // log_watch_'s thread only
  // Since when the data disk has had room for writes; log_watch_'s only.
  std::optional<std::chrono::steady_clock::time_point> room_since_;
  const StopRequest on_stop_needed_;
  std::atomic<bool> left_cluster_{false};
  // Whether this node was removed from its cluster (server/removal_watch.h):
  // fed by the apply thread and the transport, judged by sd-removal.
  RemovalWatch removal_watch_;
  // A claim on_split_identity made and ConfirmSplitIdentity has not judged.
  struct SplitIdentityClaim {
    NodeId leader;
    std::string address;
    std::string why;
  };
  absl::Mutex split_identity_mu_;
  std::optional<SplitIdentityClaim> split_identity_claim_
      ABSL_GUARDED_BY(split_identity_mu_);
  // "sd-removal", every second in a cluster, from the end of Init until
  // Shutdown stops it first: ConfirmRemoval.
  std::unique_ptr<PeriodicTask> removal_check_;
  // With on_restart_needed_: "sd-log-watch", every second from the end of
  // Init until Shutdown stops it first.
  std::unique_ptr<PeriodicTask> log_watch_;

  absl::Mutex shutdown_mu_;
  bool shut_down_ ABSL_GUARDED_BY(shutdown_mu_) = false;
  // What Reload changes (config_ keeps the values the daemon started with).
  // sweeper_ is replaced under shutdown_mu_, and otherwise read only by
  // Shutdown (after shut_down_ is set) and tests.
  std::atomic<int64_t> shutdown_grace_ms_;
  int64_t sweep_interval_ms_ ABSL_GUARDED_BY(shutdown_mu_) = 0;
  int64_t sweep_batch_ ABSL_GUARDED_BY(shutdown_mu_) = 0;
};

}  // namespace sessiond::server

#endif  // SESSIOND_SERVER_DAEMON_H_
