// Copyright sessiond authors. Licensed under the Apache License 2.0.
#ifndef SESSIOND_REPLICATION_CORE_LOG_READER_H_
#define SESSIOND_REPLICATION_CORE_LOG_READER_H_

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "replication/core/types.h"

namespace sessiond::replication {

// Read-only view of a node's durable Raft state: what has been persisted and
// reported to the core through RaftCore::OnPersisted. The core reads entries
// it no longer holds in memory through this interface; it never writes.
//
// Implementations: replication::MemoryLogStore (simulation) and
// storage::RaftLogStore (RocksDB). Both must be safe to read from the driver
// thread while the log-writer thread appends.
//
// Errors:
//   OutOfRange   the index is below FirstIndex() (compacted into a snapshot)
//                or above LastIndex()
//   Unavailable  (GetSnapshot only) a snapshot is being prepared; ask again
//   DataLoss     the stored data is corrupt
class LogReader {
 public:
  virtual ~LogReader() = default;

  // The persisted hard state at open time.
  virtual HardState InitialHardState() const = 0;
  // The membership as of GetSnapshot()'s index: the latest snapshot's, or
  // the bootstrap membership when there is no snapshot. Later changes are
  // kConfChange entries in the log.
  virtual ConfState InitialConfState() const = 0;

  // Entries in [lo, hi), at least one entry if any is in range, then stopping
  // before the total data size would exceed max_bytes.
  // REQUIRES: FirstIndex() <= lo <= hi <= LastIndex() + 1.
  virtual absl::StatusOr<std::vector<Entry>> Entries(
      LogIndex lo, LogIndex hi, uint64_t max_bytes) const = 0;

  // The term of entry `index`. The index just before FirstIndex() (the
  // truncation point) is also answered.
  virtual absl::StatusOr<Term> TermAt(LogIndex index) const = 0;

  // The first index held as an entry (the truncation point + 1, at or below
  // the snapshot index + 1). 1 on a new log.
  virtual LogIndex FirstIndex() const = 0;
  // The last index held (snapshot index when the log has no entries).
  virtual LogIndex LastIndex() const = 0;

  // The most recent snapshot (empty() on a log that never had one). Its
  // index may be past FirstIndex() - 1: a log keeps a tail of entries the
  // snapshot covers, so that a follower lagging a little catches up from
  // the log instead of receiving a whole snapshot.
  virtual absl::StatusOr<Snapshot> GetSnapshot() const = 0;
};

}  // namespace sessiond::replication

#endif  // SESSIOND_REPLICATION_CORE_LOG_READER_H_
