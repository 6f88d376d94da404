// Copyright sessiond authors. Licensed under the Apache License 2.0.
#ifndef SESSIOND_REPLICATION_MEMORY_LOG_STORE_H_
#define SESSIOND_REPLICATION_MEMORY_LOG_STORE_H_

#include <optional>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "replication/log_store.h"

namespace sessiond::replication {

// A LogStore in memory: a real implementation (not a mock) used by the
// simulator and by unit tests. "Durable" here means "survives a simulated
// crash": the simulator keeps the store and drops the core.
//
// Thread-safe (one mutex); the contract test suite runs against it and
// against storage::RaftLogStore.
class MemoryLogStore : public LogStore {
 public:
  MemoryLogStore() = default;
  // A store that starts with this membership (a new cluster's bootstrap).
  explicit MemoryLogStore(ConfState initial_conf_state);

  HardState InitialHardState() const override;
  ConfState InitialConfState() const override;
  absl::StatusOr<std::vector<Entry>> Entries(LogIndex lo, LogIndex hi,
                                             uint64_t max_bytes) const override;
  absl::StatusOr<Term> TermAt(LogIndex index) const override;
  LogIndex FirstIndex() const override;
  LogIndex LastIndex() const override;
  absl::StatusOr<Snapshot> GetSnapshot() const override;

  absl::Status Append(const std::vector<Entry>& entries,
                      const std::optional<HardState>& hard_state,
                      bool sync) override;
  absl::Status InstallSnapshot(const Snapshot& snapshot) override;
  using LogStore::Compact;
  absl::Status Compact(const Snapshot& snapshot,
                       LogIndex truncate_through) override;

  // The membership recorded by the latest snapshot or bootstrap; the core
  // itself tracks later kConfChange entries from the log.
  void SetConfStateForTest(ConfState conf_state);

 private:
  LogIndex FirstIndexLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_);
  LogIndex LastIndexLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_);

  mutable absl::Mutex mutex_;
  HardState hard_state_ ABSL_GUARDED_BY(mutex_);
  Snapshot snapshot_ ABSL_GUARDED_BY(mutex_);  // meta.index 0: none
  // The last dropped entry (truncated_index_ <= snapshot_.meta.index).
  LogIndex truncated_index_ ABSL_GUARDED_BY(mutex_);
  Term truncated_term_ ABSL_GUARDED_BY(mutex_);
  // entries_[i] has index truncated_index_ + 1 + i.
  std::vector<Entry> entries_ ABSL_GUARDED_BY(mutex_);
};

}  // namespace sessiond::replication

#endif  // SESSIOND_REPLICATION_MEMORY_LOG_STORE_H_
