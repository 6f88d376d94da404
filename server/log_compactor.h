// Copyright sessiond authors. Licensed under the Apache License 2.0.
#ifndef SESSIOND_SERVER_LOG_COMPACTOR_H_
#define SESSIOND_SERVER_LOG_COMPACTOR_H_

#include <atomic>
#include <cstdint>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "replication/node_driver.h"
#include "server/periodic_task.h"
#include "storage/database.h"
#include "storage/session_state_machine.h"

namespace sessiond::server {

struct LogCompactorOptions {
  absl::Duration interval = absl::Seconds(60);
  // Compact only when at least this many entries were applied since the
  // last compaction (each compaction is a RocksDB DeleteRange and a WAL
  // sync, so not for every handful of entries).
  uint64_t min_entries = 10000;
};

// Keeps the Raft log from growing forever: every interval it drops the log
// entries the session state already holds. The state machine writes its
// state unsynced (the log replays it), so an entry may only go once that
// state is durable: the compactor reads the applied index, then syncs the
// RocksDB WAL (the state and the log share one database and one WAL, so the
// sync covers every state write through that index), and only then asks the
// driver to compact through it.
//
// A single node only: a lagging follower would need the dropped entries as a
// snapshot, which is not built yet.
//
// Owns one thread. `db`, `state_machine` and `driver` must outlive it.
class LogCompactor {
 public:
  LogCompactor(const LogCompactorOptions& options, storage::Database* db,
               const storage::SessionStateMachine* state_machine,
               replication::NodeDriver* driver);
  ~LogCompactor();  // Stop()s.

  LogCompactor(const LogCompactor&) = delete;
  LogCompactor& operator=(const LogCompactor&) = delete;

  // One round now, on the calling thread, ignoring min_entries when
  // `force`. Returns the index it asked the driver to compact through (0:
  // none); the driver compacts asynchronously.
  absl::StatusOr<LogIndex> CompactOnce(bool force = false);

  void Stop();

 private:
  const LogCompactorOptions options_;
  storage::Database* const db_;                              // outlives this
  const storage::SessionStateMachine* const state_machine_;  // outlives this
  replication::NodeDriver* const driver_;                    // outlives this

  absl::Mutex mu_;
  LogIndex last_requested_ ABSL_GUARDED_BY(mu_);
  PeriodicTask task_;  // last: its thread uses the members above
};

}  // namespace sessiond::server

#endif  // SESSIOND_SERVER_LOG_COMPACTOR_H_
