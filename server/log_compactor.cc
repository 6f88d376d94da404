// Copyright sessiond authors. Licensed under the Apache License 2.0.
#include "server/log_compactor.h"

#include <pthread.h>

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
      driver_(driver) {
  thread_ = std::thread([this] {
    pthread_setname_np(pthread_self(), "sd-compactor");
    Loop();
  });
}

LogCompactor::~LogCompactor() { Stop(); }

void LogCompactor::Stop() {
  {
    absl::MutexLock lock(&mu_);
    if (stop_) return;
    stop_ = true;
    cv_.SignalAll();
  }
  if (thread_.joinable()) thread_.join();
}

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

void LogCompactor::Loop() {
  absl::MutexLock lock(&mu_);
  while (!stop_) {
    const absl::Time deadline = absl::Now() + options_.interval;
    while (!stop_ && absl::Now() < deadline)
      cv_.WaitWithDeadline(&mu_, deadline);
    if (stop_) break;
    mu_.Unlock();
    const absl::StatusOr<LogIndex> r = CompactOnce();
    if (!r.ok()) {
      std::fprintf(stderr, "sessiond: log compaction skipped: %s\n",
                   r.status().ToString().c_str());
    }
    mu_.Lock();
  }
}

}  // namespace sessiond::server
