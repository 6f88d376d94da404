// Copyright sessiond authors. Licensed under the Apache License 2.0.
#ifndef SESSIOND_SERVER_DAEMON_H_
#define SESSIOND_SERVER_DAEMON_H_

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "server/config.h"

namespace grpc {
class Server;
}  // namespace grpc

namespace sessiond::storage {
class Database;
class RaftLogStore;
class SessionStateMachine;
class SessionTable;
}  // namespace sessiond::storage

namespace sessiond::replication {
class NodeDriver;
class NoPeersTransport;
}  // namespace sessiond::replication

namespace sessiond::server {

class ExpirySweeper;
class LogCompactor;
class SessionServiceImpl;
class TouchBuffer;

// The composition root (LogCabin's Globals, without globals): builds every
// part of a sessiond node in dependency order and owns them, destroying them
// in reverse. One Daemon per process in production; tests may run several
// (on different data dirs).
//
//   Database -> RaftLogStore -> SessionTable -> SessionStateMachine (loads
//   the table) -> NodeDriver (replays the log, becomes leader) ->
//   TouchBuffer, SessionServiceImpl, ExpirySweeper, LogCompactor -> gRPC
//   server
//
// Thread-safe: Shutdown may be called from any thread, once or many times.
class Daemon {
 public:
  // Opens the data dir and starts serving once this node is leader and has
  // applied its whole log. Errors: those of storage::Database::Open
  // (FailedPrecondition when another process holds the dir, DataLoss when
  // it is corrupt), Unavailable when the listen address cannot be bound or
  // the node does not become leader within the startup timeout.
  static absl::StatusOr<std::unique_ptr<Daemon>> Start(const Config& config);

  ~Daemon();  // Shutdown()s.
  Daemon(const Daemon&) = delete;
  Daemon& operator=(const Daemon&) = delete;

  // Stops accepting calls, lets in-flight calls finish (cancelling those
  // still running after shutdown_grace_ms), stops the sweeper, the touch
  // flusher and the driver, and closes RocksDB cleanly. Idempotent.
  void Shutdown();

  // host:port actually bound (with the real port when listen had port 0).
  const std::string& address() const { return address_; }
  int port() const { return port_; }
  // Sessions in the table right after recovery, and how long recovery took.
  uint64_t sessions_loaded() const { return sessions_loaded_; }
  int64_t startup_ms() const { return startup_ms_; }
  // Where startup time went, e.g. "open 12 ms, load 300 ms, replay 40 ms,
  // listen 5 ms".
  const std::string& startup_breakdown() const { return startup_breakdown_; }

  storage::SessionTable* table() const { return table_.get(); }
  replication::NodeDriver* driver() const { return driver_.get(); }
  TouchBuffer* touch_buffer() const { return touches_.get(); }
  ExpirySweeper* sweeper() const { return sweeper_.get(); }
  LogCompactor* compactor() const { return compactor_.get(); }
  storage::RaftLogStore* log_store() const { return log_.get(); }

 private:
  explicit Daemon(const Config& config);
  absl::Status Init();

  const Config config_;
  std::string address_;
  int port_ = 0;
  uint64_t sessions_loaded_ = 0;
  int64_t startup_ms_ = 0;
  std::string startup_breakdown_;

  // In dependency order; destroyed in reverse.
  std::unique_ptr<storage::Database> db_;
  std::unique_ptr<storage::RaftLogStore> log_;
  std::unique_ptr<storage::SessionTable> table_;
  std::unique_ptr<storage::SessionStateMachine> state_machine_;
  std::unique_ptr<replication::NoPeersTransport> transport_;
  std::unique_ptr<replication::NodeDriver> driver_;
  std::unique_ptr<TouchBuffer> touches_;
  std::unique_ptr<SessionServiceImpl> service_;
  std::unique_ptr<ExpirySweeper> sweeper_;
  std::unique_ptr<LogCompactor> compactor_;
  std::unique_ptr<grpc::Server> server_;

  absl::Mutex shutdown_mu_;
  bool shut_down_ ABSL_GUARDED_BY(shutdown_mu_) = false;
};

}  // namespace sessiond::server

#endif  // SESSIOND_SERVER_DAEMON_H_
