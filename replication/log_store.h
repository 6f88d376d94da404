// Copyright sessiond authors. Licensed under the Apache License 2.0.
#ifndef SESSIOND_REPLICATION_LOG_STORE_H_
#define SESSIOND_REPLICATION_LOG_STORE_H_

#include <optional>
#include <vector>

#include "absl/status/status.h"
#include "replication/core/log_reader.h"

namespace sessiond::replication {

// The durable Raft log: entries with term and index, the hard state, and the
// latest snapshot's metadata. Declared here, implemented by
// replication::MemoryLogStore (simulation, tests) and storage::RaftLogStore
// (RocksDB, production). tests/replication/log_store_contract_test.cc runs
// one suite against both.
//
// Thread safety: writes come from one thread (the log writer); reads
// (LogReader) may come concurrently from another (the driver).
//
// A failed Append or SetHardState must never be acknowledged: callers treat it
// as fatal (SESSIOND_CHECK_OK), because retrying could reorder durable state.
class LogStore : public LogReader {
 public:
  // Appends `entries` (consecutive indices) and stores `hard_state` when
  // given, atomically and, when `sync`, durably before returning. An entry
  // whose index is at or below LastIndex() replaces the stored suffix from
  // that index on (a conflicting suffix is truncated).
  // REQUIRES: entries.empty() or
  //           FirstIndex() <= entries.front().index <= LastIndex() + 1.
  virtual absl::Status Append(const std::vector<Entry>& entries,
                              const std::optional<HardState>& hard_state,
                              bool sync) = 0;

  // Replaces the whole log with `snapshot`'s metadata: every entry is
  // dropped, FirstIndex() becomes snapshot.meta.index + 1. Durable on return.
  virtual absl::Status InstallSnapshot(const Snapshot& snapshot) = 0;

  // Log compaction, one durable write: records `snapshot` (an image the
  // state machine made durable, through meta.index) as the latest snapshot
  // that GetSnapshot returns, and drops the entries at or below
  // `truncate_through`. A snapshot not newer than the current one is
  // ignored (only the truncation applies, up to the current snapshot).
  // REQUIRES: truncate_through <= snapshot.meta.index <= LastIndex().
  virtual absl::Status Compact(const Snapshot& snapshot,
                               LogIndex truncate_through) = 0;

  // Compact(snapshot, snapshot.meta.index): keeps no tail.
  absl::Status Compact(const Snapshot& snapshot) {
    return Compact(snapshot, snapshot.meta.index);
  }
};

}  // namespace sessiond::replication

#endif  // SESSIOND_REPLICATION_LOG_STORE_H_
