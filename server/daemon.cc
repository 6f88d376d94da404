// Copyright sessiond authors. Licensed under the Apache License 2.0.
#include "server/daemon.h"

#include <grpcpp/client_context.h>
#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/health_check_service_interface.h>
#include <grpcpp/security/server_credentials.h>
#include <grpcpp/server.h>
#include <grpcpp/server_builder.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "common/fault_point.h"
#include "common/log.h"
#include "common/metrics_registry.h"
#include "common/status_macros.h"
#include "common/steady_clock.h"
#include "common/steady_cond_var.h"
#include "replication/node_driver.h"
#include "server/admin_service.h"
#include "server/apply_metrics.h"
#include "server/audit_recorder.h"
#include "server/backup.h"
#include "server/bootstrap.h"
#include "server/client_server.h"
#include "server/cluster_agent.h"
#include "server/cluster_clock.h"
#include "server/delay_queue.h"
#include "server/expiry_breaker.h"
#include "server/expiry_sweeper.h"
#include "server/jwks_document.h"
#include "server/jwks_http.h"
#include "server/jwt_issuer.h"
#include "server/limits.h"
#include "server/listener_security.h"
#include "server/log_compactor.h"
#include "server/logout_detector.h"
#include "server/metrics_http.h"
#include "server/node_metrics.h"
#include "server/peer_service.h"
#include "server/peer_transport.h"
#include "server/process_metrics.h"
#include "server/read_barrier.h"
#include "server/rpc_metrics.h"
#include "server/session_service.h"
#include "server/touch_buffer.h"
#include "server/write_path.h"
#include "storage/database.h"
#include "storage/disk_guard.h"
#include "storage/keys.h"
#include "storage/raft_log_store.h"
#include "storage/session_state_machine.h"
#include "storage/session_table.h"
#include "storage/snapshot_files.h"

namespace sessiond::server {
namespace {

// Replaying a long log at start can take a while; past this the daemon
// gives up instead of hanging with its port closed.
constexpr absl::Duration kStartupTimeout = absl::Minutes(10);
// Shutdown goes on refusing calls until none has come for this long: long
// enough for a client that got UNAVAILABLE to have moved to another node.
constexpr absl::Duration kCallersQuiet = absl::Milliseconds(100);

std::string HostOf(const std::string& listen) {
  const size_t colon = listen.rfind(':');
  return colon == std::string::npos ? listen : listen.substr(0, colon);
}

const char* RoleText(replication::Role role) {
  switch (role) {
    case replication::Role::kLeader:
      return "leader";
    case replication::Role::kCandidate:
      return "candidate";
    case replication::Role::kPreCandidate:
      return "precandidate";
    case replication::Role::kFollower:
      return "follower";
  }
  return "follower";
}

// The data the node holds: the disk guard's reserve file (space held back,
// not data) is left out.
uint64_t DirectoryBytes(const std::string& dir) {
  uint64_t total = 0;
  std::error_code ec;
  for (const auto& entry :
       std::filesystem::recursive_directory_iterator(dir, ec)) {
    if (!entry.is_regular_file(ec) ||
        entry.path().filename() == storage::DiskGuard::kReserveFileName) {
      continue;
    }
    total += entry.file_size(ec);
  }
  return total;
}

// The server side of the peer channel's keepalive (peer_transport.cc).
void AllowPeerKeepalive(grpc::ServerBuilder* builder) {
  builder->AddChannelArgument(
      GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS, 1000);
  builder->AddChannelArgument(GRPC_ARG_HTTP2_MAX_PING_STRIKES, 0);
  builder->AddChannelArgument(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
}

}  // namespace

Daemon::Daemon(const Config& config, RestartRequest on_restart_needed,
               StopRequest on_stop_needed, Handover handover,
               std::function<void()> before_serving)
    : config_(config),
      on_restart_needed_(std::move(on_restart_needed)),
      on_stop_needed_(std::move(on_stop_needed)),
      removal_watch_(NodeId(static_cast<uint64_t>(config.node_id))),
      shutdown_grace_ms_(config.shutdown_grace_ms) {
  handover_ = std::move(handover);
  before_serving_ = std::move(before_serving);
}

Daemon::~Daemon() { Shutdown(); }

Daemon::Handover Daemon::TakeHandover() {
  Handover taken = std::move(handover_);
  handover_ = {};
  return taken;
}

namespace {

// Sessions about to expire within a few seconds (and two sweeps) are
// judged before they do.
absl::Duration BreakerLookahead(int64_t sweep_interval_ms) {
  return std::max(absl::Seconds(3), 2 * absl::Milliseconds(sweep_interval_ms));
}

ExpiryBreakerOptions BreakerOptionsOf(const Config& config) {
  ExpiryBreakerOptions options;
  options.share = static_cast<double>(config.expiry_breaker_percent) / 100.0;
  options.window_ms = config.expiry_breaker_window_ms;
  options.min_sessions =
      static_cast<uint64_t>(config.expiry_breaker_min_sessions);
  options.slew_ppm = config.clock_slew_ppm;
  return options;
}

}  // namespace

std::unique_ptr<ExpirySweeper> Daemon::NewSweeper(int64_t interval_ms,
                                                  int64_t batch) {
  ExpirySweeperOptions options;
  options.interval = absl::Milliseconds(interval_ms);
  options.batch = static_cast<size_t>(batch);
  options.stats = &sweep_stats_;
  options.breaker = BreakerOptionsOf(config_);
  options.breaker_lookahead = BreakerLookahead(interval_ms);
  // A cut-off node's touches go out at its next flush once a leader is
  // known, and a failed batch goes again at the one after.
  options.new_leader_grace =
      2 * absl::Milliseconds(config_.touch_flush_interval_ms) +
      absl::Seconds(1);
  options.quorum_silence =
      3 * config_.heartbeat_ticks * absl::Milliseconds(config_.tick_ms);
  options.audit_retention_ms = config_.audit_retention_ms;
  options.audit_max_entries = static_cast<uint32_t>(config_.audit_max_entries);
  TouchBuffer* touches = touches_.get();
  options.touches_stalled = [touches] {
    return touches != nullptr && touches->RecentlyStalled();
  };
  return std::make_unique<ExpirySweeper>(options, table_.get(),
                                         state_machine_.get(), clock_.get(),
                                         driver_.get(), writes_.get());
}

absl::StatusOr<std::optional<std::string>> Daemon::StartBlockingMark(
    const char* key) const {
  if (config_.force_new_cluster != 0 && !config_.restarting_in_place) {
    return std::optional<std::string>();
  }
  return db_->Get(db_->default_cf(), key);
}

absl::Status Daemon::CheckRestoredBackup() const {
  SESSIOND_ASSIGN_OR_RETURN(const std::optional<std::string> restored,
                            StartBlockingMark(storage::kRestoredBackupKey));
  if (!restored) return absl::OkStatus();
  const uint64_t applied =
      restored->size() == 8 ? storage::DecodeFixed64BE(*restored) : 0;
  return NeedsAnOperator(absl::FailedPreconditionError(absl::StrCat(
      "data dir ", config_.data_dir,
      " was restored from a backup (applied through ", applied,
      "): its Raft log ends there, so as a member of a running cluster it "
      "could vote for a leader that lacks writes acknowledged since. Start "
      "it alone, once, with --force_new_cluster=1 to rebuild a cluster from "
      "it (docs/OPERATIONS.md, \"Rebuilding a whole cluster from one "
      "backup\"); to bring back a member of a running cluster, remove it "
      "(sessionctl members remove) and add it again on an empty data dir")));
}

namespace {

// One RaftPeer.Hello, asked as node `self`, within a second.
absl::StatusOr<sessiond::v1::internal::HelloResponse> AskHello(
    sessiond::v1::internal::RaftPeer::Stub& stub, NodeId self) {
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() +
                       std::chrono::seconds(1));
  sessiond::v1::internal::HelloRequest request;
  request.set_from(self.value());
  sessiond::v1::internal::HelloResponse response;
  const grpc::Status s = stub.Hello(&context, request, &response);
  if (!s.ok()) return absl::UnavailableError(s.error_message());
  return response;
}

}  // namespace

absl::Status Daemon::CheckNotRemoved() const {
  SESSIOND_ASSIGN_OR_RETURN(const std::optional<std::string> why,
                            StartBlockingMark(storage::kRemovedFromClusterKey));
  if (!why) return absl::OkStatus();
  return NeedsAnOperator(absl::FailedPreconditionError(absl::StrCat(
      "node ", config_.node_id, " was removed from cluster 0x",
      absl::Hex(cluster_id_), " (", *why, "); ", kRemovedMemberAdvice)));
}

void Daemon::ConfirmRemoval() {
  if (!removal_watch_.suspected() || left_cluster_.load()) return;
  const NodeId self(static_cast<uint64_t>(config_.node_id));
  auto hello =
      [&](NodeId id) -> std::optional<sessiond::v1::internal::HelloResponse> {
    std::shared_ptr<sessiond::v1::internal::RaftPeer::Stub> stub =
        transport_->Stub(id);
    if (stub == nullptr) return std::nullopt;
    absl::StatusOr<sessiond::v1::internal::HelloResponse> answer =
        AskHello(*stub, self);
    if (!answer.ok()) return std::nullopt;
    return *std::move(answer);
  };
  // Only the leader's word counts (RemovalWatch), and only a leader every
  // peer that answers agrees on. A node started alone with
  // --force_new_cluster while the rest of its cluster still runs (a backup
  // restored onto a member's address) lists every other member as removed
  // and calls itself leader: heard alone, it made the live members mark
  // themselves removed and stop, though they still had a quorum. Those
  // members name another leader, or this node.
  std::set<uint64_t> named;
  for (const auto& [id, address] : transport_->addresses()) {
    std::optional<sessiond::v1::internal::HelloResponse> answer = hello(id);
    // Another life of the cluster (Identity.cluster_epoch) has no say.
    if (answer && answer->cluster_id() == cluster_id_ &&
        answer->cluster_epoch() == cluster_epoch_.load() &&
        answer->leader() != 0) {
      named.insert(answer->leader());
    }
  }
  if (named.size() > 1 || named.count(self.value()) > 0) {
    logging::Warn("node.removal_disputed",
                  logging::Fields()
                      .Add("leaders_named", absl::StrJoin(named, ","))
                      .Add("msg",
                           "peers disagree on who leads, or follow this node: "
                           "the removal is not confirmed (a member forced "
                           "alone with --force_new_cluster while the others "
                           "run?)"));
    return;
  }
  if (named.empty()) return;  // asked again in a second
  const NodeId leader(*named.begin());
  std::optional<sessiond::v1::internal::HelloResponse> answer = hello(leader);
  if (!answer || answer->leader() != leader.value() ||
      answer->cluster_id() != cluster_id_ ||
      answer->cluster_epoch() != cluster_epoch_.load()) {
    return;
  }
  switch (removal_watch_.Judge(*answer)) {
    case RemovalWatch::Verdict::kMember:
      logging::Info("node.removal_not_confirmed",
                    logging::Fields()
                        .Add("leader", leader.value())
                        .Add("msg",
                             "the leader lists this node as a member: the "
                             "removal it applied was an earlier one"));
      break;
    case RemovalWatch::Verdict::kRemoved:
      LeaveCluster(absl::StrCat("the leader, node ", leader.value(),
                                ", lists it as removed"),
                   /*mark=*/true);
      break;
    case RemovalWatch::Verdict::kUndecided:
      break;
  }
}

void Daemon::ConfirmSplitIdentity() {
  std::optional<SplitIdentityClaim> claim;
  {
    absl::MutexLock lock(&split_identity_mu_);
    claim = std::move(split_identity_claim_);
    split_identity_claim_.reset();
  }
  if (!claim || left_cluster_.load()) return;
  const NodeId self(static_cast<uint64_t>(config_.node_id));
  std::unique_ptr<sessiond::v1::internal::RaftPeer::Stub> stub =
      sessiond::v1::internal::RaftPeer::NewStub(NewPeerChannel(
          claim->address, security_->peer_channels_to(claim->leader)));
  const absl::StatusOr<sessiond::v1::internal::HelloResponse> answer =
      AskHello(*stub, self);
  std::string refuted;
  if (!answer.ok()) {
    refuted = absl::StrCat("it did not answer Hello (",
                           answer.status().message(), ")");
  } else if (answer->cluster_id() != cluster_id_ ||
             answer->cluster_epoch() != cluster_epoch_.load()) {
    refuted = "it answers for another cluster, or another life of this one";
  } else if (answer->node_id() != claim->leader.value() ||
             answer->leader() != claim->leader.value()) {
    refuted = absl::StrCat("it answers as node ", answer->node_id(),
                           " led by node ", answer->leader());
  } else if (!InMembership(*answer, self.value())) {
    refuted = "it does not count this node as a member";
  }
  if (!refuted.empty()) {
    logging::Warn("peer.split_identity_not_confirmed",
                  logging::Fields()
                      .Add("node_id", claim->leader.value())
                      .Add("peer_address", claim->address)
                      .Add("refuted", refuted)
                      .Add("msg",
                           "a node said it leads this cluster, in which this "
                           "node would then be a stale lone voter; it was "
                           "not confirmed, so this node runs on"));
    return;
  }
  LeaveCluster(absl::StrCat(claim->why, "; remove it from the cluster first (",
                            "sessionctl members remove ", self.value(),
                            ", on a live member)"),
               /*mark=*/true);
}

void Daemon::FollowMembers(
    const sessiond::v1::internal::ClusterState& cluster) {
  for (const auto& m : cluster.members()) {
    transport_->SetAddress(NodeId(m.node_id()), m.peer_address());
  }
  std::set<NodeId> removed;
  for (uint64_t id : cluster.removed()) removed.insert(NodeId(id));
  transport_->SetRemoved(std::move(removed));
}

void Daemon::LeaveCluster(const std::string& why, bool mark) {
  if (left_cluster_.exchange(true)) return;
  if (mark) {
    rocksdb::WriteBatch batch;
    batch.Put(db_->default_cf(), storage::kRemovedFromClusterKey, why);
    if (absl::Status s = db_->Write(&batch, /*sync=*/true); !s.ok()) {
      logging::Warn("node.removed_not_marked", logging::Fields().Error(s));
    }
  }
  logging::Error(
      "node.removed",
      logging::Fields()
          .Add("cluster_id", absl::StrCat("0x", absl::Hex(cluster_id_)))
          .Add("reason", why)
          .Add("msg", absl::StrCat("this node was removed from its cluster: "
                                   "it stops, and will not start on this "
                                   "data dir; ",
                                   kRemovedMemberAdvice)));
  if (on_stop_needed_) on_stop_needed_();
}

absl::Status Daemon::Reload(const Config& next) {
  absl::MutexLock lock(&shutdown_mu_);
  if (shut_down_ || sweeper_ == nullptr) {
    return absl::FailedPreconditionError("the daemon is not running");
  }
  // The one step that can fail goes first: a role file that does not load
  // leaves everything as it was.
  if (security_ != nullptr) {
    SESSIOND_RETURN_IF_ERROR(security_->ReloadRoles(next.auth_file));
    // Outgoing peer connections opened under the old roles are checked
    // again only by a new handshake.
    if (transport_ != nullptr) transport_->RenewChannels();
  }
  shutdown_grace_ms_.store(next.shutdown_grace_ms);
  if (next.sweep_interval_ms != sweep_interval_ms_ ||
      next.sweep_batch != sweep_batch_) {
    sweeper_->Reconfigure(absl::Milliseconds(next.sweep_interval_ms),
                          static_cast<size_t>(next.sweep_batch),
                          BreakerLookahead(next.sweep_interval_ms));
    sweep_interval_ms_ = next.sweep_interval_ms;
    sweep_batch_ = next.sweep_batch;
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<Daemon>> Daemon::Start(
    const Config& config, RestartRequest on_restart_needed,
    StopRequest on_stop_needed, Handover handover,
    std::function<void()> before_serving) {
  std::unique_ptr<Daemon> daemon(new Daemon(
      config, std::move(on_restart_needed), std::move(on_stop_needed),
      std::move(handover), std::move(before_serving)));
  if (absl::Status s = daemon->Init(); !s.ok()) return s;
  return daemon;
}

void Daemon::RestartIfWritesStuck() {
  if (restart_requested_) return;
  // Where the guard resumes writes (with the guard off, room for the
  // reserve file RocksDB's flushes need): a restart with less would only
  // fill the disk again.
  if (!disk_guard_->HasRoomToResume()) {
    room_since_.reset();
    return;
  }
  const auto now = std::chrono::steady_clock::now();
  if (!room_since_.has_value()) room_since_ = now;
  // Another I/O error is the disk's own trouble: restarting would hide it
  // in a loop. Writes stay refused, with that error, for an operator.
  if (const absl::Status lost = db_->wal_failure(); !lost.ok()) {
    if (!storage::IsNoSpace(lost)) return;
    return RequestRestartInPlace(
        "storage.restart", lost,
        "the data disk has room again, but RocksDB cannot append to its "
        "write-ahead log after that failure: restarting this node in place "
        "to reopen it");
  }
  const std::optional<storage::Database::FailingWrites> failing =
      db_->failing_writes();
  if (!failing.has_value() || !storage::IsNoSpace(failing->latest_error)) {
    return;
  }
  // A write failed that long after the disk had room (or after the run
  // began, when it began with room): RocksDB's own recovery from a failed
  // flush finishes in seconds when it finishes at all.
  const auto stuck =
      failing->latest_failed - std::max(*room_since_, failing->first_failed);
  if (stuck < std::chrono::milliseconds(config_.stuck_writes_restart_ms)) {
    return;
  }
  RequestRestartInPlace(
      "storage.stuck_restart", failing->latest_error,
      absl::StrCat(
          "writes have failed for lack of space for ",
          std::chrono::duration_cast<std::chrono::seconds>(stuck).count(),
          " s although the data disk has had room again (RocksDB's "
          "recovery from the failure hung): restarting this node "
          "in place to reopen its database"));
}

void Daemon::RequestRestartInPlace(const char* event, const absl::Status& error,
                                   const std::string& msg) {
  // Free bytes do not say the file system takes a new file (no inode left,
  // a btrfs out of metadata space): a reopen there fails, and the node,
  // which still answers reads, would exit. Asked again each second.
  if (absl::Status probe = disk_guard_->ProbeNewFile(); !probe.ok()) {
    if (!restart_deferred_logged_) {
      restart_deferred_logged_ = true;
      logging::Warn("storage.restart_deferred",
                    logging::Fields()
                        .Error(error)
                        .Add("probe", std::string(probe.message()))
                        .Add("msg",
                             "a restart in place would reopen the database, "
                             "but the data dir takes no new file: not "
                             "restarting until it does (see the probe's "
                             "error; no inode left shows in df -i)"));
    }
    return;
  }
  restart_requested_ = true;
  absl::StatusOr<uint64_t> free = disk_guard_->FreeBytes();
  logging::Warn(event, logging::Fields()
                           .Error(error)
                           .Add("free_bytes", free.ok() ? *free : 0)
                           .Add("msg", msg));
  on_restart_needed_();
}

sessiond::v1::internal::HelloResponse Daemon::Hello() const {
  sessiond::v1::internal::HelloResponse hello;
  hello.set_node_id(static_cast<uint64_t>(config_.node_id));
  hello.set_cluster_id(hello_cluster_id_.load());
  hello.set_bootstrapped(hello.cluster_id() != 0);
  hello.set_cluster_epoch(cluster_epoch_.load());
  if (!running_.load()) return hello;
  hello.set_serving(true);
  const replication::NodeStatus status = driver_->status();
  hello.set_term(status.term.value());
  hello.set_applied_index(status.applied.value());
  hello.set_leader(status.leader.value());
  *hello.mutable_cluster() = state_machine_->cluster_state();
  for (NodeId v : status.conf_state.voters) hello.add_voters(v.value());
  for (NodeId l : status.conf_state.learners) hello.add_learners(l.value());
  return hello;
}

absl::Status Daemon::StartPeerListener() {
  absl::StatusOr<std::map<uint64_t, std::string>> members =
      ParseInitialCluster(config_.initial_cluster);
  if (!members.ok()) return members.status();
  const auto self = members->find(static_cast<uint64_t>(config_.node_id));
  advertised_peer_ =
      self == members->end() ? config_.peer_listen : self->second;
  const std::string listen =
      config_.peer_listen.empty() ? advertised_peer_ : config_.peer_listen;
  if (listen.empty()) return absl::OkStatus();  // a single node
  peer_service_ = std::make_unique<PeerService>(
      NodeId(static_cast<uint64_t>(config_.node_id)),
      [this] { return Hello(); },
      (std::filesystem::path(config_.data_dir) / kPeersHeardFromFile).string());
  grpc::ServerBuilder builder;
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  AllowPeerKeepalive(&builder);
  builder.SetMaxReceiveMessageSize(static_cast<int>(kMaxPeerMessageBytes));
  int port = 0;
  builder.AddListeningPort(listen, security_->peer_listener(), &port);
  if (rpc_metrics_ != nullptr) rpc_metrics_->Instrument(&builder);
  builder.RegisterService(peer_service_.get());
  peer_server_ = builder.BuildAndStart();
  if (peer_server_ == nullptr || port == 0) {
    peer_server_.reset();
    return absl::UnavailableError(absl::StrCat("cannot listen for peers on ",
                                               listen, " (address in use?)"));
  }
  peer_address_ = absl::StrCat(HostOf(listen), ":", port);
  if (advertised_peer_.empty()) advertised_peer_ = peer_address_;
  return absl::OkStatus();
}

absl::Status Daemon::Init() {
  const absl::Time start = absl::Now();
  absl::Time phase_start = start;
  auto phase = [&](const char* name) {
    const absl::Time now = absl::Now();
    absl::StrAppend(&startup_breakdown_, startup_breakdown_.empty() ? "" : ", ",
                    name, " ", absl::ToInt64Milliseconds(now - phase_start),
                    " ms");
    phase_start = now;
  };
  const NodeId self(static_cast<uint64_t>(config_.node_id));

  const uint64_t disk_low_bytes = static_cast<uint64_t>(config_.disk_reserve_mb)
                                  << 20;
  const uint64_t flush_bytes = storage::DatabaseOptions{}.memtable_budget_bytes;
  if (disk_low_bytes > 0 && disk_low_bytes < flush_bytes) {
    logging::Warn(
        "disk.reserve_small",
        logging::Fields()
            .Add("disk_reserve_mb", config_.disk_reserve_mb)
            .Add("msg", absl::StrCat("--disk_reserve_mb is under the ",
                                     flush_bytes >> 20,
                                     " MiB RocksDB may flush at once: a flush "
                                     "can find the disk full before writes "
                                     "are refused, and spend the reserve "
                                     "file (docs/OPERATIONS.md, A full "
                                     "disk)")));
  }
  // Before the data dir is taken: a TLS or role file typo fails now, not
  // after a log replay, and leaves no new data dir behind.
  SESSIOND_RETURN_IF_ERROR(ListenerSecurity::Precheck(config_));
  storage::DiskGuard::ReleaseReserveIfLow(config_.data_dir, disk_low_bytes);
  absl::StatusOr<std::unique_ptr<storage::Database>> db =
      storage::Database::Open(config_.data_dir, storage::DatabaseOptions{});
  if (!db.ok()) return db.status();
  db_ = *std::move(db);
  {
    // After the data dir's lock is held: the gRPC endpoints serve copies
    // of the TLS files kept in it (<data_dir>/tls).
    absl::StatusOr<std::unique_ptr<ListenerSecurity>> security =
        ListenerSecurity::Build(config_);
    if (!security.ok()) return security.status();
    security_ = *std::move(security);
    logging::Info("tls", logging::Fields().Add("msg", security_->Describe()));
  }
  storage::DiskGuardOptions disk_options;
  disk_options.dir = config_.data_dir;
  disk_options.low_bytes = disk_low_bytes;
  disk_options.reserve_bytes = flush_bytes;
  disk_options.on_change = [this](bool low) {
    if (replication::NodeDriver* driver = disk_driver_.load()) {
      driver->RefuseProposals(low ? disk_guard_->WriteRefusal()
                                  : absl::OkStatus());
    }
  };
  absl::StatusOr<std::unique_ptr<storage::DiskGuard>> guard =
      storage::DiskGuard::Start(disk_options);
  if (!guard.ok()) return guard.status();
  disk_guard_ = *std::move(guard);
  absl::StatusOr<std::unique_ptr<storage::RaftLogStore>> log =
      storage::RaftLogStore::Open(db_.get());
  if (!log.ok()) return log.status();
  log_ = *std::move(log);
  snapshots_ = std::make_unique<storage::SnapshotFiles>(
      (std::filesystem::path(config_.data_dir) / "snap").string());
  if (absl::Status s = snapshots_->Init(); !s.ok()) return s;
  if (absl::StatusOr<std::optional<sessiond::v1::internal::Identity>> id =
          ReadIdentity(db_.get());
      id.ok() && *id) {
    cluster_epoch_.store((*id)->cluster_epoch());
    hello_cluster_id_.store((*id)->cluster_id());
  }
  if (absl::Status s = CheckRestoredBackup(); !s.ok()) return s;
  phase("open");

  if (!config_.metrics_listen.empty()) {
    // SessionService records its own calls (no interceptor hop on the hot
    // path: server/rpc_metrics.h).
    rpc_metrics_ = std::make_unique<RpcMetrics>(
        std::vector<std::string>{
            sessiond::v1::AdminService::service_full_name(),
            sessiond::v1::internal::RaftPeer::service_full_name()},
        std::vector<std::string>{
            sessiond::v1::SessionService::service_full_name()});
  }
  // The peer listener runs before the bootstrap decision: other new
  // members ask this one Hello while it asks them.
  if (absl::Status s = StartPeerListener(); !s.ok()) return s;
  absl::StatusOr<std::map<uint64_t, std::string>> initial =
      ParseInitialCluster(config_.initial_cluster);
  if (!initial.ok()) return initial.status();
  std::map<uint64_t, std::shared_ptr<sessiond::v1::internal::RaftPeer::Stub>>
      hello_stubs;
  for (const auto& [id, address] : *initial) {
    if (id == self.value()) continue;
    hello_stubs[id] = sessiond::v1::internal::RaftPeer::NewStub(
        NewPeerChannel(address, security_->peer_channels_to(NodeId(id))));
  }
  HelloAll hello_all = [&hello_stubs, self] {
    std::map<uint64_t, absl::StatusOr<sessiond::v1::internal::HelloResponse>>
        answers;
    for (const auto& [id, stub] : hello_stubs) {
      answers.emplace(id, AskHello(*stub, self));
    }
    return answers;
  };
  absl::StatusOr<BootstrapDecision> decision =
      DecideIdentity(config_, db_.get(), *log_, hello_all);
  if (!decision.ok()) return decision.status();
  cluster_id_ = decision->cluster_id;
  // Forced into a cluster of its own (below), this data dir starts a new
  // life of the cluster: the old members' logs must not meet its own.
  const bool forcing =
      !config_.restarting_in_place && config_.force_new_cluster != 0;
  cluster_epoch_.store(forcing ? RandomNonZeroId() : decision->cluster_epoch);
  hello_cluster_id_.store(cluster_id_);
  SESSIOND_FAULT_POINT("bootstrap.after_identity");
  if (decision->bootstrap_conf) {
    if (absl::Status s = log_->Bootstrap(*decision->bootstrap_conf); !s.ok()) {
      return s;
    }
  }
  phase("identity");

  PeerTransportOptions transport_options;
  transport_options.cluster_id = cluster_id_;
  transport_options.self = self;
  transport_options.self_address = advertised_peer_;
  transport_options.cluster_epoch = cluster_epoch_.load();
  transport_options.on_removed_refusal = [this](NodeId) {
    removal_watch_.OnRemovedRefusal();
  };
  transport_options.on_corrupt_image = [this](LogIndex index) {
    // Set once the compactor exists; it is destroyed only after the
    // transport's threads have stopped.
    if (LogCompactor* compactor = compactor_for_transport_.load()) {
      compactor->ReplaceCorruptImage(index);
    }
  };
  transport_options.snapshots = snapshots_.get();
  transport_options.drop_file = config_.unsafe_peer_drop_file;
  transport_options.wall_clocks = &wall_clocks_;
  transport_options.credentials = [security = security_.get()](NodeId peer) {
    return security->peer_channels_to(peer);
  };
  transport_ = std::make_unique<PeerTransport>(transport_options);
  for (const auto& [id, address] : *initial) {
    transport_->SetAddress(NodeId(id), address);
  }

  storage::SessionTableOptions table_options;
  table_options.num_shards = static_cast<size_t>(config_.shards);
  table_ = std::make_unique<storage::SessionTable>(table_options);
  storage::SessionStateMachineOptions sm_options;
  sm_options.snapshots = snapshots_.get();
  sm_options.bootstrap_conf = log_->InitialConfState();
  sm_options.on_cluster_state =
      [this](const sessiond::v1::internal::ClusterState& cluster,
             const replication::ConfState& conf) {
        FollowMembers(cluster);
        removal_watch_.OnApplied(conf);
      };
  absl::StatusOr<std::unique_ptr<storage::SessionStateMachine>> sm =
      storage::SessionStateMachine::Open(db_.get(), table_.get(), sm_options);
  if (!sm.ok()) return sm.status();
  state_machine_ = *std::move(sm);
  {
    std::optional<KeyEncryptionKey> kek;
    if (!config_.kek_file.empty()) {
      absl::StatusOr<KeyEncryptionKey> loaded =
          KeyEncryptionKey::LoadFromFile(config_.kek_file);
      if (!loaded.ok()) {
        return absl::Status(
            loaded.status().code(),
            absl::StrCat("--kek_file: ", loaded.status().message()));
      }
      kek.emplace(*std::move(loaded));
    }
    jwt_issuer_ =
        std::make_unique<JwtIssuer>(std::move(kek), state_machine_.get());
  }
  if (absl::Status s = CheckNotRemoved(); !s.ok()) return s;
  FollowMembers(state_machine_->cluster_state());
  removal_watch_.Start(state_machine_->applied_conf(),
                       state_machine_->cluster_state());
  // A crash between installing a snapshot in the log and in the state
  // (NodeDriver does them in that order) leaves the state behind the log's
  // first entry: the image is durable, so apply it again.
  absl::StatusOr<replication::Snapshot> log_snapshot = log_->GetSnapshot();
  if (!log_snapshot.ok()) return log_snapshot.status();
  const bool legacy_snapshot =
      !log_snapshot->empty() &&
      !storage::DecodeSnapshotRef(log_snapshot->data).ok();
  if (log_snapshot->meta.index > state_machine_->applied_index()) {
    if (legacy_snapshot) {
      return absl::DataLossError(absl::StrCat(
          "the state (applied through ",
          state_machine_->applied_index().value(),
          ") lags the Raft log's snapshot at ",
          log_snapshot->meta.index.value(),
          ", which has no image to recover it from; restore this node from "
          "a backup or re-add it to its cluster with an empty data dir"));
    }
    const LogIndex applied_before = state_machine_->applied_index();
    if (absl::Status s = state_machine_->RecoverSnapshot(*log_snapshot);
        !s.ok()) {
      return s;
    }
    logging::Warn(
        "storage.snapshot_recovered",
        logging::Fields()
            .Add("index", log_snapshot->meta.index.value())
            .Add("applied_before", applied_before.value())
            .Add("msg",
                 "the state lagged the Raft log's snapshot (a crash between "
                 "installing it in the log and in the state): its image was "
                 "applied again"));
  }
  {
    // Only the log's own snapshot image is needed from here on.
    std::string keep;
    if (absl::StatusOr<sessiond::v1::internal::SnapshotRef> ref =
            storage::DecodeSnapshotRef(log_snapshot->data);
        ref.ok()) {
      keep = ref->file();
    }
    if (const size_t removed = snapshots_->RemoveAllExcept(keep); removed > 0) {
      logging::Info(
          "snapshot.unused_images_removed",
          logging::Fields()
              .Add("removed", removed)
              .Add("msg",
                   "removed snapshot images the log does not refer to "
                   "(received, never installed)"));
    }
  }
  {
    // Whether the previous start forced a new cluster too: the flag left
    // on (pasted into a unit file) must not drop the members added back.
    SESSIOND_ASSIGN_OR_RETURN(
        const std::optional<std::string> forced_before,
        db_->Get(db_->default_cf(), storage::kForcedNewClusterKey));
    rocksdb::WriteBatch marks;
    if (config_.restarting_in_place) {
      // As the process's first start left it: forced already, or not.
    } else if (forcing) {
      // The new epoch is on disk before the log is forced.
      auto record_epoch = [this] {
        return RecordClusterEpoch(db_.get(), cluster_epoch_.load());
      };
      if (absl::Status s = ForceNewCluster(
              log_.get(), self, /*left_on=*/forced_before.has_value(),
              state_machine_->applied_time_ms(), record_epoch);
          !s.ok()) {
        return s;
      }
      // A restored backup is a cluster of its own now: later starts need
      // no flag.
      marks.Delete(db_->default_cf(), storage::kRestoredBackupKey);
      marks.Delete(db_->default_cf(), storage::kRemovedFromClusterKey);
      marks.Put(db_->default_cf(), storage::kForcedNewClusterKey, "1");
    } else if (forced_before) {
      marks.Delete(db_->default_cf(), storage::kForcedNewClusterKey);
    }
    if (marks.Count() > 0) {
      if (absl::Status s = db_->Write(&marks, /*sync=*/true); !s.ok()) {
        return s;
      }
    }
  }
  phase("load");

  replication::NodeDriverOptions driver_options;
  driver_options.raft.id = self;
  driver_options.raft.election_ticks = static_cast<int>(config_.election_ticks);
  driver_options.raft.heartbeat_ticks =
      static_cast<int>(config_.heartbeat_ticks);
  driver_options.raft.pre_vote = true;
  driver_options.raft.check_quorum = true;
  driver_options.raft.read_only_mode =
      config_.read_mode == "lease" ? replication::ReadOnlyMode::kLeaseBased
                                   : replication::ReadOnlyMode::kReadIndex;
  // Whatever this node's own read mode: another member's may be lease.
  driver_options.raft.refuse_votes_after_start = true;
  driver_options.tick_interval = std::chrono::milliseconds(config_.tick_ms);
  // Members may differ in tick period and election ticks (a rolling change):
  // each refuses votes for as long as the leader's lease, in its own ticks.
  driver_options.raft.tick_us = static_cast<uint64_t>(config_.tick_ms) * 1000;
  driver_options.seed = static_cast<uint64_t>(absl::ToUnixNanos(absl::Now())) ^
                        static_cast<uint64_t>(getpid());
  driver_options.max_pending_proposals =
      static_cast<size_t>(config_.max_pending_writes);
  driver_options.max_pending_bytes =
      static_cast<uint64_t>(config_.max_pending_write_mib) << 20;
  driver_options.compaction_catch_up_entries =
      static_cast<uint64_t>(config_.snapshot_catch_up_entries);
  driver_options.read_timeout_ticks =
      2 * static_cast<int>(config_.election_ticks);
  storage::DiskGuard* disk = disk_guard_.get();
  driver_options.on_log_write_error = [disk](const absl::Status& error) {
    disk->ReportWriteError(error);
  };
  driver_options.log_write_gate = [disk](uint64_t bytes) {
    return disk->AllowWrite(bytes);
  };
  const LogIndex commit_at_start = log_->InitialHardState().commit;
  apply_metrics_ = std::make_unique<ApplyMetrics>();
  counting_machine_ = std::make_unique<CountingStateMachine>(
      state_machine_.get(), apply_metrics_.get());
  absl::StatusOr<std::unique_ptr<replication::NodeDriver>> driver =
      replication::NodeDriver::Start(driver_options, log_.get(),
                                     counting_machine_.get(), transport_.get());
  if (!driver.ok()) return driver.status();
  driver_ = *std::move(driver);
  disk_driver_.store(driver_.get());
  if (disk_guard_->low()) {
    driver_->RefuseProposals(disk_guard_->WriteRefusal());
  }

  timers_ = std::make_unique<DelayQueue>();
  ClusterClockOptions clock_options;
  clock_options.slew_ppm = config_.clock_slew_ppm;
  storage::SessionStateMachine* machine = state_machine_.get();
  clock_options.applied = [machine] { return machine->applied_time_sample(); };
  clock_ = std::make_unique<ClusterClock>(clock_options);
  WritePathOptions write_options;
  write_options.cluster_id = cluster_id_;
  write_options.self = self;
  write_options.cluster_epoch = cluster_epoch_.load();
  // What a follower holds for a leader is bounded as the leader bounds
  // what it proposes.
  write_options.max_open_commands =
      static_cast<size_t>(config_.max_pending_writes);
  write_options.max_open_command_bytes = driver_options.max_pending_bytes;
  if (const ExpiryBreakerOptions breaker = BreakerOptionsOf(config_);
      breaker.share > 0) {
    write_options.breaker_before_catch_up =
        [breaker, table = table_.get(), state_machine = state_machine_.get()](
            int64_t now_ms, int64_t moved_since_ms,
            int64_t to_ms) -> std::optional<sessiond::v1::ExpiryBreaker> {
      const BreakerJudgement judgement =
          JudgeCatchUp(breaker, SteadyNowMs(), now_ms, moved_since_ms, to_ms,
                       table->size(), [&](const auto& visit) {
                         table->ForEachExpiredSession(
                             to_ms, state_machine->expiry_leeway_ms(), visit);
                       });
      if (!judgement.open) return std::nullopt;
      return OpeningFor(judgement, now_ms);
    };
  }
  write_options.ack_window =
      absl::Milliseconds(config_.tick_ms * config_.election_ticks);
  writes_ = std::make_unique<WritePath>(write_options, driver_.get(),
                                        clock_.get(), transport_.get(),
                                        state_machine_.get(), timers_.get());
  ReadBarrierOptions read_options;
  read_options.linearizable_timeout =
      absl::Milliseconds(config_.linearizable_timeout_ms);
  read_options.fresh_contact =
      absl::Milliseconds(config_.tick_ms * config_.election_ticks);
  reads_ =
      std::make_unique<ReadBarrier>(read_options, driver_.get(), timers_.get());
  ClusterClock* cluster_clock = clock_.get();
  WritePath* writes = writes_.get();
  touches_ = std::make_unique<TouchBuffer>(
      [writes](sessiond::v1::internal::Command command, absl::Time deadline,
               WritePath::Done done) {
        writes->SubmitTouchBatch(std::move(command), deadline, std::move(done));
      },
      absl::Milliseconds(config_.touch_flush_interval_ms),
      // The clock reads judge at, which stamps the touches they record: on
      // a node that ran through the others' outage (NowMs a jump ahead
      // until the catch-up applies), a stall dated by NowMs came after
      // every read it should have protected.
      [cluster_clock] { return cluster_clock->JudgeNowMs(); });
  if (!handover_.touches.touches.empty()) {
    logging::Info(
        "restart.touches_adopted",
        logging::Fields()
            .Add("touches", handover_.touches.touches.size())
            .Add("stalled_since_ms", handover_.touches.stalled_since_ms)
            .Add("msg",
                 "touches that never reached the log before the restart go "
                 "out with the first flush"));
    touches_->Adopt(handover_.touches);
  }
  handover_.touches = {};
  if (config_.logout_detector_interval_ms > 0) {
    // Built before SelfStatus can be called; samples once Start()ed below.
    LogoutDetectorOptions detector;
    detector.window_ms = config_.logout_detector_window_ms;
    detector.drop_share =
        static_cast<double>(config_.logout_detector_drop_percent) / 100;
    detector.min_sessions =
        static_cast<uint64_t>(config_.logout_detector_min_sessions);
    detector.baseline_ms = config_.logout_detector_baseline_ms;
    detector.jump_share =
        static_cast<double>(config_.logout_detector_jump_percent) / 100;
    detector.deviations =
        static_cast<double>(config_.logout_detector_deviations);
    detector.min_validations =
        static_cast<uint64_t>(config_.logout_detector_min_validations);
    logout_detector_ = std::make_unique<LogoutDetectorTask>(
        detector, absl::Milliseconds(config_.logout_detector_interval_ms),
        [this] {
          using Outcome = sessiond::v1::ValidateSessionResponse;
          const ValidationMetrics& v = service_->validations();
          LogoutSample sample;
          sample.live_sessions = table_->size();
          sample.valid = v.count(Outcome::VALID);
          sample.expired = v.count(Outcome::EXPIRED);
          sample.revoked = v.count(Outcome::REVOKED);
          sample.unknown = v.count(Outcome::UNKNOWN);
          return sample;
        });
  }
  if (peer_service_ != nullptr) {
    PeerServiceParts parts;
    parts.cluster_id = cluster_id_;
    parts.driver = driver_.get();
    parts.transport = transport_.get();
    parts.write_path = writes_.get();
    parts.snapshots = snapshots_.get();
    parts.status = [this](bool with_digest) { return SelfStatus(with_digest); };
    parts.auth = security_->processor();
    parts.wall_clocks = &wall_clocks_;
    storage::DiskGuard* disk = disk_guard_.get();
    if (disk != nullptr) {
      parts.room_on_disk = [disk](uint64_t bytes, absl::string_view what) {
        return disk->RoomFor(bytes, what);
      };
    }
    parts.cluster_epoch = cluster_epoch_.load();
    parts.on_split_identity = [this](NodeId leader, const std::string& address,
                                     const std::string& why) {
      absl::MutexLock lock(&split_identity_mu_);
      // One at a time: judged within a second, the next one is taken then.
      if (split_identity_claim_) return;
      split_identity_claim_ = SplitIdentityClaim{leader, address, why};
    };
    peer_service_->Attach(std::move(parts));
  }

  // The log up to the commit index known at start is replayed before
  // anything is served: until then the table may lack acknowledged writes.
  // A single node is also its own leader by then.
  const std::vector<NodeId> voters = driver_->status().conf_state.voters;
  const bool single = voters.size() == 1 && voters[0] == self;
  // A single node on a disk too full to write its log cannot become leader
  // (its term must be on disk first): it serves what it replayed.
  const bool replayed = driver_->WaitFor(
      [single, commit_at_start](const replication::NodeStatus& s) {
        if (!single || s.log_stalled) return s.applied >= commit_at_start;
        return s.role == replication::Role::kLeader && s.leader_caught_up;
      },
      kStartupTimeout);
  if (!replayed) {
    return absl::UnavailableError(
        absl::StrCat("the log was not replayed within ",
                     absl::FormatDuration(kStartupTimeout)));
  }
  sessions_loaded_ = table_->size();
  phase("replay");

  AuditRecorderOptions audit_options;
  audit_options.self = self;
  audit_options.enabled = AuditEnabled(config_);
  audit_options.retention_ms = config_.audit_retention_ms;
  audit_options.max_entries = static_cast<uint32_t>(config_.audit_max_entries);
  audit_options.now_ms = [this] { return clock_->NowMs(); };
  audit_options.auth = security_->processor();
  audit_options.timers = timers_.get();
  audit_ =
      std::make_unique<AuditRecorder>(std::move(audit_options), writes_.get());
  if (!audit_->enabled()) {
    logging::Warn("audit.off",
                  logging::Fields().Add(
                      "msg",
                      "--audit=false: admin calls and bulk revocations are "
                      "not recorded in the audit log"));
  }
  SessionServiceOptions service_options;
  service_options.limits = ServedLimits(config_);
  service_options.jwt_issuer = jwt_issuer_.get();
  service_options.cluster_id = cluster_id_;
  service_options.max_held_answer_bytes =
      static_cast<uint64_t>(config_.max_held_answer_mib) << 20;
  service_options.request_timeout =
      absl::Milliseconds(config_.request_timeout_ms);
  service_options.self = self;
  service_options.rpc_metrics = rpc_metrics_.get();
  service_options.revocation_retention_ms = config_.revocation_retention_ms;
  service_options.create_request_window_ms = config_.create_request_window_ms;
  service_options.create_request_max_entries =
      static_cast<uint32_t>(config_.create_request_max_entries);
  service_options.max_sessions_per_user =
      static_cast<uint32_t>(config_.max_sessions_per_user);
  create_rate_limiter_ =
      std::make_unique<CreateRateLimiter>(CreateRateLimiterOptions{
          .rate_per_s = static_cast<double>(config_.create_rate_per_identity),
          .burst = static_cast<double>(config_.create_burst_per_identity)});
  service_options.create_rate_limiter = create_rate_limiter_.get();
  write_admission_ = std::make_unique<WriteAdmission>(WriteAdmissionOptions{
      .target = absl::Milliseconds(config_.write_admission_target_ms)});
  service_options.write_admission = write_admission_.get();
  service_options.auth = security_->processor();
  service_options.audit = audit_.get();
  service_options.wall_clocks = &wall_clocks_;
  service_ = std::make_unique<SessionServiceImpl>(
      service_options, table_.get(), state_machine_.get(), clock_.get(),
      reads_.get(), writes_.get(), touches_.get());
  AdminServiceOptions admin_options;
  admin_options.cluster_id = cluster_id_;
  admin_options.cluster_epoch = cluster_epoch_.load();
  admin_options.self = self;
  admin_options.plaintext_loopback_only =
      config_.tls_cert.empty() && config_.insecure_plaintext_non_loopback == 0;
  admin_options.request_timeout =
      absl::Milliseconds(config_.request_timeout_ms);
  admin_options.revocation_retention_ms = config_.revocation_retention_ms;
  admin_options.limits = ServedLimits(config_);
  admin_options.cluster_now_ms = [this] { return clock_->NowMs(); };
  admin_options.jwt_issuer = jwt_issuer_.get();
  admin_options.audit = audit_.get();
  admin_options.held_sessions = [this](int64_t now_ms) {
    const sessiond::v1::ExpiryBreaker breaker =
        state_machine_->expiry_breaker();
    if (!breaker.open()) return uint64_t{0};
    return CountHeldSessions(*table_, breaker.frozen_at_ms(), now_ms,
                             state_machine_->expiry_leeway_ms());
  };
  {
    absl::MutexLock lock(&shutdown_mu_);
    sweeper_ = NewSweeper(config_.sweep_interval_ms, config_.sweep_batch);
    sweep_interval_ms_ = config_.sweep_interval_ms;
    sweep_batch_ = config_.sweep_batch;
  }
  LogCompactorOptions compactor_options;
  compactor_options.interval =
      absl::Milliseconds(config_.log_compact_interval_ms);
  compactor_options.min_entries =
      static_cast<uint64_t>(config_.log_compact_min_entries);
  compactor_ = std::make_unique<LogCompactor>(compactor_options,
                                              state_machine_.get(), log_.get(),
                                              snapshots_.get(), driver_.get());
  compactor_for_transport_.store(compactor_.get());
  BackupSources backup_sources;
  backup_sources.cluster_id = cluster_id_;
  backup_sources.self = self;
  backup_sources.data_dir = config_.data_dir;
  backup_sources.db = db_.get();
  backup_sources.compactor = compactor_.get();
  backups_ = std::make_unique<BackupTaker>(std::move(backup_sources));
  admin_ = std::make_unique<AdminServiceImpl>(
      admin_options, driver_.get(), state_machine_.get(), transport_.get(),
      writes_.get(), timers_.get(),
      [this](bool with_digest) { return SelfStatus(with_digest); },
      reads_.get(), backups_.get());
  if (legacy_snapshot) {
    // A data dir compacted before snapshots had images: make one now, so a
    // member added later can be sent the state.
    if (absl::StatusOr<LogIndex> s = compactor_->CompactOnce(/*force=*/true);
        !s.ok()) {
      logging::Warn("snapshot.failed", logging::Fields().Error(s.status()));
    }
  }

  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  // gRPC sets SO_REUSEPORT by default, which would let a second sessiond
  // bind the same port and silently take half the traffic; refuse instead.
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  // Message sizes, stream and memory bounds (server/client_server.h).
  ClientServerSettings client_settings =
      ClientServerSettingsFor(service_options);
  client_settings.max_concurrent_streams_per_connection =
      static_cast<int>(config_.max_concurrent_streams);
  ConfigureClientServer(client_settings, &builder);
  if (rpc_metrics_ != nullptr) rpc_metrics_->Instrument(&builder);
  socket_poller_ =
      std::make_unique<SocketPoller>(&builder, service_->stream_activity());
  builder.AddListeningPort(config_.listen, security_->client_listener(),
                           &port_);
  builder.RegisterService(service_.get());
  builder.RegisterService(admin_.get());
  if (before_serving_) std::exchange(before_serving_, nullptr)();
  server_ = builder.BuildAndStart();
  if (server_ == nullptr || port_ == 0) {
    server_.reset();
    return absl::UnavailableError(
        absl::StrCat("cannot listen on ", config_.listen,
                     " (address in use or not local?)"));
  }
  socket_poller_->Start();
  address_ = absl::StrCat(HostOf(config_.listen), ":", port_);
  advertised_client_ =
      config_.advertise_client.empty() ? address_ : config_.advertise_client;

  ClusterAgentOptions agent_options;
  agent_options.self = self;
  agent_options.peer_address = advertised_peer_;
  agent_options.client_address = advertised_client_;
  agent_options.initial_expiry_leeway_ms = config_.expiry_leeway_ms;
  agent_options.initial_jwks_max_age_ms = config_.jwks_max_age_ms;
  agent_options.jwt_issuer = jwt_issuer_.get();
  agent_options.clock_tick_interval = absl::Milliseconds(config_.clock_tick_ms);
  if (config_.unsafe_command_level > 0) {
    agent_options.command_level =
        static_cast<uint32_t>(config_.unsafe_command_level);
  }
  agent_ = std::make_unique<ClusterAgent>(agent_options, driver_.get(),
                                          state_machine_.get(), clock_.get(),
                                          writes_.get());
  if (peer_service_ != nullptr) {
    removal_check_ =
        std::make_unique<PeriodicTask>("sd-removal", absl::Seconds(1), [this] {
          ConfirmRemoval();
          ConfirmSplitIdentity();
        });
  }
  if (on_restart_needed_ != nullptr) {
    log_watch_ = std::make_unique<PeriodicTask>(
        "sd-log-watch", absl::Seconds(1), [this] { RestartIfWritesStuck(); });
  }
  running_.store(true);
  service_->set_ready(true);
  if (logout_detector_ != nullptr) logout_detector_->Start();
  grpc::HealthCheckServiceInterface* health = server_->GetHealthCheckService();
  if (health != nullptr) {
    health->SetServingStatus(true);
    health->SetServingStatus(sessiond::v1::SessionService::service_full_name(),
                             true);
  }
  // The HTTP endpoints speak HTTPS when the node has TLS (docs/
  // OPERATIONS.md, "TLS and roles"): a client certificate for /metrics iff
  // --tls_client_auth=require, never for the public JWKS. They serve the
  // copies the gRPC listeners serve, which hold only files that verified:
  // the operator's own files would need their own last-good logic, and at a
  // restart after a refused renewal they do not load at all, so a node that
  // could serve gRPC from its copies would not start for its metrics.
  std::optional<HttpTlsOptions> http_tls;
  if (const VerifiedTlsFiles* copies = security_->served_files()) {
    http_tls = HttpTlsOptions{.cert_file = copies->served().cert_file,
                              .key_file = copies->served().key_file,
                              .ca_file = copies->served().ca_file,
                              .require_client_cert = false,
                              .refresh_s = 1};
  }
  if (!config_.metrics_listen.empty()) {
    // Started last: its collectors read every part above.
    auto registry = std::make_shared<metrics::MetricsRegistry>();
    NodeMetricsSources sources;
    sources.status = [this] { return SelfStatus(/*with_digest=*/false); };
    sources.table = table_.get();
    sources.driver = driver_.get();
    sources.validations = &service_->validations();
    sources.applied = apply_metrics_.get();
    sources.logout_detector = logout_detector_.get();
    sources.version = kSessiondVersion;
    sources.audit = audit_.get();
    sources.write_admission = write_admission_.get();
    sources.transport = transport_.get();
    sources.tls = security_->served_files();
    sources.audit_entries = [this] {
      return state_machine_->AuditEntryCount();
    };
    registry->AddCollector([sources](metrics::ExpositionWriter* w) {
      CollectNodeMetrics(sources, w);
    });
    registry->AddCollector(
        [rpc = rpc_metrics_.get()](metrics::ExpositionWriter* w) {
          rpc->Collect(w);
        });
    registry->AddCollector(CollectProcessMetrics);
    MetricsHttpOptions http_options;
    http_options.listen = config_.metrics_listen;
    http_options.render = [registry] { return registry->Render(); };
    http_options.serving = [this] { return running_.load(); };
    http_options.tls = http_tls;
    if (http_options.tls.has_value()) {
      http_options.tls->require_client_cert =
          config_.tls_client_auth == "require";
    }
    absl::StatusOr<std::unique_ptr<MetricsHttpServer>> http =
        MetricsHttpServer::Start(std::move(http_options));
    if (!http.ok()) return http.status();
    metrics_http_ = *std::move(http);
    metrics_address_ = metrics_http_->address();
  }
  if (!config_.jwks_listen.empty()) {
    JwksHttpOptions jwks_options;
    jwks_options.listen = config_.jwks_listen;
    jwks_options.tls = http_tls;
    jwks_options.provider = [this]() -> absl::StatusOr<JwksDocument> {
      if (!running_.load()) {
        return absl::UnavailableError("this node is not serving");
      }
      return JwksDocumentNow(*state_machine_, reads_.get());
    };
    absl::StatusOr<std::unique_ptr<JwksHttpServer>> jwks =
        JwksHttpServer::Start(std::move(jwks_options));
    if (!jwks.ok()) {
      return absl::Status(
          jwks.status().code(),
          absl::StrCat("--jwks_listen: ", jwks.status().message()));
    }
    jwks_http_ = *std::move(jwks);
    jwks_address_ = jwks_http_->address();
  }
  phase("listen");
  startup_ms_ = absl::ToInt64Milliseconds(absl::Now() - start);
  return absl::OkStatus();
}

sessiond::v1::MemberStatus Daemon::SelfStatus(bool with_digest) const {
  sessiond::v1::MemberStatus m;
  m.set_node_id(static_cast<uint64_t>(config_.node_id));
  m.set_client_address(advertised_client_);
  m.set_peer_address(advertised_peer_);
  if (driver_ == nullptr) return m;
  const replication::NodeStatus status = driver_->status();
  const bool voter = std::find(status.conf_state.voters.begin(),
                               status.conf_state.voters.end(),
                               status.id) != status.conf_state.voters.end();
  m.set_role(voter ? RoleText(status.role) : "learner");
  m.set_voter(voter);
  m.set_reachable(true);
  m.set_term(status.term.value());
  m.set_leader(status.leader.value());
  m.set_commit_index(status.commit.value());
  m.set_applied_index(status.applied.value());
  m.set_first_index(status.first_index.value());
  m.set_last_index(status.last_index.value());
  if (absl::StatusOr<replication::Snapshot> s = log_->GetSnapshot(); s.ok()) {
    m.set_snapshot_index(s->meta.index.value());
  }
  m.set_live_sessions(table_->size());
  *m.mutable_expiry_breaker() = state_machine_->expiry_breaker();
  {
    const storage::KeyRingView ring = state_machine_->key_ring();
    if (const auto* active = ring.active()) {
      m.set_active_kid(active->kid());
      m.set_active_key_kek_id(
          KeyEncryptionKey::SealedUnderIdHex(active->sealed_private_key()));
    }
    m.set_key_ring_index(ring.changed_index());
    m.set_has_kek(jwt_issuer_ != nullptr && jwt_issuer_->has_kek());
    if (jwt_issuer_ != nullptr) m.set_kek_id(jwt_issuer_->kek_id());
    for (const auto& [kid, ms] : state_machine_->KeyPublishedMs()) {
      (*m.mutable_key_published_ms())[kid] = ms;
    }
  }
  if (clock_ != nullptr) {
    m.set_clock_skew_ms(clock_->SkewMs());
    m.set_cluster_time_ms(clock_->NowMs());
  }
  if (std::optional<int64_t> off = wall_clocks_.OwnOffMedianMs()) {
    m.set_wall_clock_off_median_ms(*off);
  }
  const sessiond::v1::internal::ClusterState cluster =
      state_machine_->cluster_state();
  for (const auto& member : cluster.members()) {
    if (member.node_id() == m.node_id()) m.set_started(member.started());
  }
  if (with_digest) {
    absl::StatusOr<storage::SessionStateMachine::Digest> digest =
        state_machine_->ComputeDigest();
    if (digest.ok()) {
      m.set_state_digest(digest->sha256_hex);
      m.set_digest_applied_index(digest->applied_index.value());
    } else {
      m.set_error(std::string(digest.status().message()));
    }
  }
  const replication::NodeDriverMetrics dm = driver_->metrics();
  sessiond::v1::NodeMetrics* metrics = m.mutable_metrics();
  metrics->set_proposals(dm.proposals);
  metrics->set_proposals_refused(dm.proposals_refused);
  metrics->set_propose_batches(dm.propose_batches);
  metrics->set_synced_log_writes(dm.log_writes);
  metrics->set_unsynced_log_writes(dm.log_writes_unsynced);
  metrics->set_entries_persisted(dm.entries_persisted);
  metrics->set_entries_applied(dm.entries_applied);
  metrics->set_apply_batches(dm.apply_batches);
  metrics->set_reads(dm.reads);
  metrics->set_read_index_rounds(dm.read_index_rounds);
  metrics->set_local_reads(dm.local_reads);
  metrics->set_messages_dropped(dm.messages_dropped);
  metrics->set_snapshots_installed(dm.snapshots_installed);
  if (writes_ != nullptr) metrics->set_forwarded_writes(writes_->forwarded());
  metrics->set_log_write_failures(dm.log_write_failures);
  if (touches_ != nullptr) {
    metrics->set_touch_batches_dropped(touches_->lost_commands());
  }
  metrics->set_expiry_sweep_due(
      sweep_stats_.last_due.load(std::memory_order_relaxed));
  metrics->set_expiry_sweeps_at_cap(
      sweep_stats_.at_cap.load(std::memory_order_relaxed));
  if (logout_detector_ != nullptr) {
    for (sessiond::v1::LogoutAlert& alert : logout_detector_->ActiveAlerts()) {
      *m.add_logout_alerts() = std::move(alert);
    }
  }
  m.set_data_dir_bytes(DirectoryBytes(config_.data_dir));
  if (disk_guard_ != nullptr) {
    const storage::DiskGuard::State disk = disk_guard_->state();
    m.set_disk_free_bytes(disk.free_bytes);
    // A database that refuses writes on a disk with room is no full disk
    // (no page for it), but it is the disk condition to show.
    m.set_disk_full(disk.low && !disk.database_refuses);
    if (disk.low) m.set_disk_condition(disk.reason);
  }
  if (status.log_stalled && m.disk_condition().empty()) {
    m.set_disk_condition(status.log_stall);
  }
  return m;
}

void Daemon::Shutdown() {
  {
    absl::MutexLock lock(&shutdown_mu_);
    if (shut_down_) return;
    shut_down_ = true;
  }
  running_.store(false);
  if (log_watch_ != nullptr) log_watch_->Stop();
  if (removal_check_ != nullptr) removal_check_->Stop();
  const int64_t grace_ms = shutdown_grace_ms_.load();  // Reload may change it
  const absl::Duration grace = absl::Milliseconds(grace_ms);
  if (server_ != nullptr) {
    if (grpc::HealthCheckServiceInterface* health =
            server_->GetHealthCheckService()) {
      health->SetServingStatus(false);
    }
    // New calls are refused (UNAVAILABLE) at once; writes in flight get up
    // to shutdown_grace_ms to reach their applied result, and open streams
    // to write the answers they owe and end with UNAVAILABLE.
    const int64_t drain_deadline_ns =
        SteadyNowNs() + absl::ToInt64Nanoseconds(grace);
    service_->BeginDrain();
    if (!service_->WaitForDrained(grace)) {
      logging::Warn(
          "shutdown.cancelling",
          logging::Fields()
              .Add("grace_ms", grace_ms)
              .Add("msg", "writes or streams still open: cancelling"));
    } else if (!service_->WaitForCallersToLeave(kCallersQuiet,
                                                drain_deadline_ns)) {
      logging::Warn("shutdown.clients_still_calling",
                    logging::Fields()
                        .Add("grace_ms", grace_ms)
                        .Add("msg",
                             "clients still calling after the grace of "
                             "UNAVAILABLE; stopping (calls racing the stop "
                             "are cancelled)"));
    }
  }
  // A leader hands over before it goes, so a rolling restart costs no
  // election timeout.
  if (driver_ != nullptr && writes_ != nullptr &&
      driver_->status().role == replication::Role::kLeader &&
      driver_->status().conf_state.voters.size() > 1) {
    auto moved = std::make_shared<SteadyNotification>();
    writes_->SubmitTransfer(
        NodeId(0), absl::Now() + absl::Seconds(2),
        [moved](replication::ApplyResult) { moved->Notify(); });
    moved->WaitForNotificationWithTimeout(absl::Seconds(3));
    driver_->WaitFor(
        [](const replication::NodeStatus& s) {
          return s.role != replication::Role::kLeader;
        },
        absl::Seconds(2));
  }
  // Past the grace: a call still waiting for a write (a leader that does
  // not answer) is answered now, or the server's Shutdown below would wait
  // for it until its deadline.
  if (writes_ != nullptr) writes_->AbandonOpenCalls();
  // Likewise a read waiting for a leader to confirm it (LINEARIZABLE, a
  // stream's request, a backup's barrier), answered "shutting down" rather
  // than cancelled by the server's shutdown with its callback pending.
  if (reads_ != nullptr) reads_->AbandonWaiting();
  if (server_ != nullptr) {
    server_->Shutdown(std::chrono::system_clock::now() +
                      absl::ToChronoMilliseconds(grace));
  }
  if (agent_ != nullptr) agent_->Stop();
  if (sweeper_ != nullptr) sweeper_->Stop();
  if (logout_detector_ != nullptr) logout_detector_->Stop();
  if (compactor_ != nullptr) compactor_->Stop();
  if (touches_ != nullptr) touches_->Stop();  // submits the last touches
  if (writes_ != nullptr && !writes_->Drain(grace)) {
    // The last touches and sweeps, say, forwarded to a leader that does not
    // answer: their RPCs are cancelled, so their callbacks return before
    // the write path goes.
    writes_->AbandonOpenCalls();
    if (!writes_->Drain(absl::Seconds(5))) {
      logging::Warn("shutdown.writes_in_flight");
    }
  }
  if (touches_ != nullptr) {
    // Every batch was answered (drained): what failed is back in the
    // buffer.
    handover_.touches = touches_->TakeUnlanded();
    if (!handover_.touches.touches.empty()) {
      logging::Warn(
          "shutdown.touches_unlanded",
          logging::Fields()
              .Add("touches", handover_.touches.touches.size())
              .Add("msg",
                   "touches that never reached the log: a restart in place "
                   "sends them again; a stop loses them (those users' idle "
                   "time counts from their last touch in the log)"));
    }
  }
  if (driver_ != nullptr) {
    // Applies what is in flight; on a full disk the apply stage gives up
    // rather than wait for space (StateMachine::StopRetryingWrites; the log
    // replays what it could not write).
    driver_->Stop();
    const replication::NodeDriverMetrics m = driver_->metrics();
    logging::Info("shutdown.raft_summary",
                  logging::Fields()
                      .Add("proposals", m.proposals)
                      .Add("propose_batches", m.propose_batches)
                      .Add("entries_persisted", m.entries_persisted)
                      .Add("synced_log_writes", m.log_writes)
                      .Add("unsynced_log_writes", m.log_writes_unsynced)
                      .Add("entries_applied", m.entries_applied)
                      .Add("apply_batches", m.apply_batches));
  }
  if (peer_service_ != nullptr) peer_service_->Detach();
  if (peer_server_ != nullptr) {
    peer_server_->Shutdown(std::chrono::system_clock::now() +
                           std::chrono::milliseconds(200));
  }
  if (transport_ != nullptr) transport_->Stop();
  if (timers_ != nullptr) timers_->Stop();

  // Its collectors read the parts destroyed below.
  if (metrics_http_ != nullptr) metrics_http_->Stop();
  metrics_http_.reset();
  if (jwks_http_ != nullptr) jwks_http_->Stop();  // its provider reads below
  jwks_http_.reset();
  server_.reset();
  backups_.reset();  // waits for a backup in progress
  agent_.reset();
  compactor_.reset();
  sweeper_.reset();
  admin_.reset();
  logout_detector_.reset();  // its sampler read service_
  service_.reset();
  audit_.reset();  // after both services that recorded through it
  touches_.reset();
  reads_.reset();
  writes_.reset();
  clock_.reset();
  timers_.reset();
  // The guard's thread calls into the driver; the driver's log writer
  // (stopped by now) into the guard.
  disk_driver_.store(nullptr);
  disk_guard_.reset();
  driver_.reset();
  counting_machine_.reset();
  jwt_issuer_.reset();  // read the state machine's ring
  state_machine_.reset();
  table_.reset();
  transport_.reset();
  peer_server_.reset();
  peer_service_.reset();
  rpc_metrics_.reset();  // after every server it instrumented
  snapshots_.reset();
  log_.reset();
  // Its thread writes into the data dir: stopped before the lock goes.
  if (security_ != nullptr) security_->StopWatchingFiles();
  db_.reset();  // flushes memtables and releases the data dir's LOCK
}

}  // namespace sessiond::server
