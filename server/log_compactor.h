// Copyright sessiond authors. Licensed under the Apache License 2.0.
#ifndef SESSIOND_SERVER_LOG_COMPACTOR_H_
#define SESSIOND_SERVER_LOG_COMPACTOR_H_

#include <atomic>
#include <cstdint>
#include <functional>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "replication/core/log_reader.h"
#include "replication/node_driver.h"
#include "server/periodic_task.h"
#include "storage/session_state_machine.h"
#include "storage/snapshot_files.h"

namespace sessiond::server {

struct LogCompactorOptions {
  absl::Duration interval = absl::Seconds(60);
  // Snapshot and compact only when at least this many entries were applied
  // since the last snapshot (each writes the whole state to a file).
  uint64_t min_entries = 10000;
};

// Keeps the Raft log from growing forever, on every node: when enough
// entries were applied since the last snapshot, it writes a snapshot image
// of the state (SessionStateMachine::CreateSnapshot, durable before
// anything else happens), hands it to the driver, which records it as the
// snapshot lagging followers receive and drops the log below it (keeping
// NodeDriverOptions::compaction_catch_up_entries), and removes images older
// than both the log's snapshot and the state (a follower's log may record a
// received image while the state still loads an older one).
//
// The image is durable before the log is touched, so a crash at any point
// leaves either the old log or an image that covers what was dropped (the
// daemon re-applies it at start when the state lags it).
//
// Owns one thread. Every pointer must outlive it.
class LogCompactor {
 public:
  LogCompactor(const LogCompactorOptions& options,
               storage::SessionStateMachine* state_machine,
               const replication::LogReader* log,
               const storage::SnapshotFiles* snapshots,
               replication::NodeDriver* driver);
  ~LogCompactor();  // Stop()s.

  LogCompactor(const LogCompactor&) = delete;
  LogCompactor& operator=(const LogCompactor&) = delete;

  // One round now, on the calling thread, ignoring min_entries when
  // `force`. Returns the index of the snapshot it handed to the driver (0:
  // none); the driver compacts asynchronously.
  absl::StatusOr<LogIndex> CompactOnce(bool force = false);

  // This node's image of the log's snapshot at `index` failed its checks
  // while being sent to a follower (PeerTransportOptions::on_corrupt_image),
  // which would be sent it, and refuse it, again and again. A round starts
  // now, and every round until the image is replaced makes a new one
  // whatever min_entries, as soon as an entry past `index` has applied (the
  // driver keeps one snapshot per index). Thread-safe; does not wait for a
  // round in progress.
  void ReplaceCorruptImage(LogIndex index);

  // Runs `fn` with no round in progress and none starting until it returns:
  // no snapshot image is removed meanwhile (a backup copies the one the
  // log refers to).
  void WhilePaused(const std::function<void()>& fn) {
    absl::MutexLock lock(&mu_);
    fn();
  }

  void Stop();

 private:
  const LogCompactorOptions options_;
  storage::SessionStateMachine* const state_machine_;  // outlives this
  const replication::LogReader* const log_;            // outlives this
  const storage::SnapshotFiles* const snapshots_;      // outlives this
  replication::NodeDriver* const driver_;              // outlives this

  // Removes every image older than the one the log records and not above
  // the state's applied index.
  void RemoveImagesTheLogReplaced() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  absl::Mutex mu_;  // one round at a time
  LogIndex last_snapshot_ ABSL_GUARDED_BY(mu_);
  // False while the log may still record an image older than
  // last_snapshot_ (the driver records a compaction asynchronously), so
  // images it replaces are left to remove.
  bool images_replaced_ ABSL_GUARDED_BY(mu_) = false;
  // The highest index ReplaceCorruptImage was told of (0: none).
  std::atomic<uint64_t> corrupt_image_index_{0};
  PeriodicTask task_;  // last: its thread uses the members above
};

}  // namespace sessiond::server

#endif  // SESSIOND_SERVER_LOG_COMPACTOR_H_
