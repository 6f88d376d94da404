// Copyright sessiond authors. Licensed under the Apache License 2.0.
#include "server/daemon.h"

#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/health_check_service_interface.h>
#include <grpcpp/security/server_credentials.h>
#include <grpcpp/server.h>
#include <grpcpp/server_builder.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/fault_point.h"
#include "replication/node_driver.h"
#include "replication/transport.h"
#include "server/expiry_sweeper.h"
#include "server/log_compactor.h"
#include "server/session_service.h"
#include "server/touch_buffer.h"
#include "storage/database.h"
#include "storage/raft_log_store.h"
#include "storage/session_state_machine.h"
#include "storage/session_table.h"

namespace sessiond::server {
namespace {

// A single node is a Raft group whose only voter is node 1.
constexpr uint64_t kSingleNodeId = 1;
// Replaying a long log at start can take a while; past this the daemon
// gives up instead of hanging with its port closed.
constexpr absl::Duration kStartupTimeout = absl::Minutes(10);

std::string HostOf(const std::string& listen) {
  const size_t colon = listen.rfind(':');
  return colon == std::string::npos ? listen : listen.substr(0, colon);
}

}  // namespace

Daemon::Daemon(const Config& config) : config_(config) {}

Daemon::~Daemon() { Shutdown(); }

absl::StatusOr<std::unique_ptr<Daemon>> Daemon::Start(const Config& config) {
  std::unique_ptr<Daemon> daemon(new Daemon(config));
  if (absl::Status s = daemon->Init(); !s.ok()) return s;
  return daemon;
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
  if (!config_.fault_point.empty() && !ArmFaultPoint(config_.fault_point)) {
    return absl::InvalidArgumentError(
        absl::StrCat("--fault_point=", config_.fault_point,
                     ": expected NAME or NAME@N with N >= 1"));
  }

  absl::StatusOr<std::unique_ptr<storage::Database>> db =
      storage::Database::Open(config_.data_dir, storage::DatabaseOptions{});
  if (!db.ok()) return db.status();
  db_ = *std::move(db);

  absl::StatusOr<std::unique_ptr<storage::RaftLogStore>> log =
      storage::RaftLogStore::Open(db_.get());
  if (!log.ok()) return log.status();
  log_ = *std::move(log);
  if (log_->InitialConfState().voters.empty() &&
      log_->InitialHardState().term == Term(0) &&
      log_->LastIndex() == LogIndex(0)) {
    // A fresh data dir: this node is the group's only voter.
    replication::ConfState conf;
    conf.voters.push_back(NodeId(kSingleNodeId));
    if (absl::Status s = log_->Bootstrap(conf); !s.ok()) return s;
  }

  storage::SessionTableOptions table_options;
  phase("open");
  table_options.num_shards = static_cast<size_t>(config_.shards);
  table_ = std::make_unique<storage::SessionTable>(table_options);
  storage::SessionStateMachineOptions sm_options;
  // Replicated behaviour: the same on every node, and the sweeper's too.
  sm_options.expiry_leeway_ms = config_.expiry_leeway_ms;
  absl::StatusOr<std::unique_ptr<storage::SessionStateMachine>> sm =
      storage::SessionStateMachine::Open(db_.get(), table_.get(), sm_options);
  if (!sm.ok()) return sm.status();
  state_machine_ = *std::move(sm);
  phase("load");

  transport_ = std::make_unique<replication::NoPeersTransport>();
  replication::NodeDriverOptions driver_options;
  driver_options.raft.id = NodeId(kSingleNodeId);
  driver_options.tick_interval = std::chrono::milliseconds(config_.tick_ms);
  driver_options.seed = static_cast<uint64_t>(absl::ToUnixNanos(absl::Now())) ^
                        static_cast<uint64_t>(getpid());
  absl::StatusOr<std::unique_ptr<replication::NodeDriver>> driver =
      replication::NodeDriver::Start(driver_options, log_.get(),
                                     state_machine_.get(), transport_.get());
  if (!driver.ok()) return driver.status();
  driver_ = *std::move(driver);
  // The log past the applied index is replayed before anything is served:
  // until then the table may lack acknowledged writes.
  if (!driver_->WaitUntilLeaderCaughtUp(kStartupTimeout)) {
    return absl::UnavailableError(absl::StrCat(
        "the node did not become leader with its log applied within ",
        absl::FormatDuration(kStartupTimeout)));
  }
  sessions_loaded_ = table_->size();
  phase("replay");

  touches_ = std::make_unique<TouchBuffer>(
      driver_.get(), absl::Milliseconds(config_.touch_flush_interval_ms));
  SessionServiceOptions service_options;
  service_options.limits = config_.limits;
  service_options.expiry_leeway_ms = config_.expiry_leeway_ms;
  service_ = std::make_unique<SessionServiceImpl>(
      service_options, table_.get(), driver_.get(), touches_.get());
  service_->set_ready(true);

  ExpirySweeperOptions sweeper_options;
  sweeper_options.interval = absl::Milliseconds(config_.sweep_interval_ms);
  sweeper_options.batch = static_cast<size_t>(config_.sweep_batch);
  sweeper_options.leeway_ms = config_.expiry_leeway_ms;
  sweeper_ = std::make_unique<ExpirySweeper>(sweeper_options, table_.get(),
                                             driver_.get());

  LogCompactorOptions compactor_options;
  compactor_options.interval =
      absl::Milliseconds(config_.log_compact_interval_ms);
  compactor_options.min_entries =
      static_cast<uint64_t>(config_.log_compact_min_entries);
  compactor_ = std::make_unique<LogCompactor>(
      compactor_options, db_.get(), state_machine_.get(), driver_.get());

  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  // gRPC sets SO_REUSEPORT by default, which would let a second sessiond
  // bind the same port and silently take half the traffic; refuse instead.
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  builder.AddListeningPort(config_.listen, grpc::InsecureServerCredentials(),
                           &port_);
  builder.RegisterService(service_.get());
  server_ = builder.BuildAndStart();
  if (server_ == nullptr || port_ == 0) {
    server_.reset();
    return absl::UnavailableError(
        absl::StrCat("cannot listen on ", config_.listen,
                     " (address in use or not local?)"));
  }
  address_ = absl::StrCat(HostOf(config_.listen), ":", port_);
  // SERVING only now: this node is leader and has applied its whole log.
  grpc::HealthCheckServiceInterface* health = server_->GetHealthCheckService();
  if (health != nullptr) {
    health->SetServingStatus(true);
    health->SetServingStatus(sessiond::v1::SessionService::service_full_name(),
                             true);
  }
  phase("listen");
  startup_ms_ = absl::ToInt64Milliseconds(absl::Now() - start);
  return absl::OkStatus();
}

void Daemon::Shutdown() {
  {
    absl::MutexLock lock(&shutdown_mu_);
    if (shut_down_) return;
    shut_down_ = true;
  }
  if (server_ != nullptr) {
    if (grpc::HealthCheckServiceInterface* health =
            server_->GetHealthCheckService()) {
      health->SetServingStatus(false);
    }
    // New calls are refused (UNAVAILABLE) at once; writes in flight get up
    // to shutdown_grace_ms to reach their applied result (the apply thread
    // still runs). Then the server goes, with a short deadline: nothing is
    // in flight any more that a cancellation could cut off, and a long one
    // would only wait for idle client connections to notice the GOAWAY.
    service_->BeginDrain();
    if (!service_->WaitForWritesDrained(
            absl::Milliseconds(config_.shutdown_grace_ms))) {
      std::fprintf(stderr,
                   "sessiond: writes still in flight after %lld ms; "
                   "cancelling them\n",
                   static_cast<long long>(config_.shutdown_grace_ms));
    }
    server_->Shutdown(std::chrono::system_clock::now() +
                      std::chrono::milliseconds(200));
  }
  if (sweeper_ != nullptr) sweeper_->Stop();
  if (compactor_ != nullptr) compactor_->Stop();
  if (touches_ != nullptr) touches_->Stop();  // proposes the last touches
  if (driver_ != nullptr) {
    driver_->Stop();  // applies what is in flight
    const replication::NodeDriverMetrics m = driver_->metrics();
    std::fprintf(stderr,
                 "sessiond: %llu proposals in %llu batches, %llu entries in "
                 "%llu synced log writes, %llu applied in %llu batches\n",
                 static_cast<unsigned long long>(m.proposals),
                 static_cast<unsigned long long>(m.propose_batches),
                 static_cast<unsigned long long>(m.entries_persisted),
                 static_cast<unsigned long long>(m.log_writes),
                 static_cast<unsigned long long>(m.entries_applied),
                 static_cast<unsigned long long>(m.apply_batches));
  }

  server_.reset();
  compactor_.reset();
  sweeper_.reset();
  service_.reset();
  touches_.reset();
  driver_.reset();
  transport_.reset();
  state_machine_.reset();
  table_.reset();
  log_.reset();
  db_.reset();  // flushes memtables and releases the data dir's LOCK
}

}  // namespace sessiond::server
