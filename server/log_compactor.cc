// Copyright sessiond authors. Licensed under the Apache License 2.0.
#include "server/log_compactor.h"

#include <cstdio>

#include "absl/time/clock.h"

namespace sessiond::server {

LogCompactor::LogCompactor(const LogCompactorOptions& options,
                           storage::Database* db,
                           const storage::SessionStateMachine* state_machine,
                           replication::NodeDriver* driver)
    : options_(options),
      db_(db),
      state_machine_(state_machine),
      driver_(driver),
      task_("sd-compactor", options.interval, [this] {
        const absl::StatusOr<LogIndex> compacted = CompactOnce();
        if (!compacted.ok()) {
          std::fprintf(stderr, "sessiond: log compaction skipped: %s\n",
                       compacted.status().ToString().c_str());
        }
      }) {}

LogCompactor::~LogCompactor() { Stop(); }

void LogCompactor::Stop() { task_.Stop(); }

absl::StatusOr<LogIndex> LogCompactor::CompactOnce(bool force) {
  // Read first, sync second: the sync then covers every state write
  // through `applied`.
  const LogIndex applied = state_machine_->applied_index();
  {
    absl::MutexLock lock(&mu_);
    if (applied <= last_requested_) return LogIndex(0);
    if (!force && applied - last_requested_ < options_.min_entries) {
      return LogIndex(0);
    }
  }
  const rocksdb::Status synced = db_->db()->SyncWAL();
  if (!synced.ok()) {
    return storage::FromRocksStatus(synced, "WAL sync before log compaction");
  }
  driver_->CompactLog(applied);
  absl::MutexLock lock(&mu_);
  if (last_requested_ < applied) last_requested_ = applied;
  return applied;
}

}  // namespace sessiond::server
