// Copyright sessiond authors. Licensed under the Apache License 2.0.
#ifndef SESSIOND_STORAGE_RAFT_LOG_STORE_H_
#define SESSIOND_STORAGE_RAFT_LOG_STORE_H_

#include <memory>
#include <optional>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "replication/core/types.h"
#include "replication/log_store.h"
#include "storage/database.h"

namespace sessiond::storage {

// The Raft log in RocksDB: entries in the `raft_log` CF, the hard state and
// the latest snapshot's metadata in `raft_state` (layout in storage/keys.h).
// This is the command log of a single node too: a single node is a
// one-voter Raft group, so its writes take the same path as a cluster's.
//
// Append writes one WriteBatch (entries, a DeleteRange of any conflicting
// suffix, the hard state) with WriteOptions::sync = `sync`: concurrent
// proposals batched by the driver share one fsync (group commit).
//
// The latest snapshot (metadata and its `data`, a reference to an image
// file the state machine wrote) and the truncation point are kept apart: the
// log keeps a tail of entries below the snapshot's index for followers that
// lag a little (LogStore::Compact).
//
// Threading: writes (Append, InstallSnapshot, Compact, Bootstrap) from one
// thread; reads (LogReader) from any thread concurrently. FirstIndex and
// LastIndex are served from memory.
class RaftLogStore : public replication::LogStore {
 public:
  // Opens the log in `db` (which must outlive the store), reading the hard
  // state, snapshot metadata and the index range. DataLoss on corrupt
  // metadata.
  static absl::StatusOr<std::unique_ptr<RaftLogStore>> Open(Database* db);

  // Starts the log of a brand-new group with its membership as its first
  // entries, as etcd does: one kConfChange entry (kPromoteVoter) per voter
  // of `conf_state`, term 1, committed. Every initial member writes the same
  // entries, so a member added later learns the initial membership from the
  // log (or a snapshot) like any other change. Durable on return.
  // FailedPrecondition when the log is not new (it has entries, a snapshot,
  // or a hard state with a term); InvalidArgument without voters.
  absl::Status Bootstrap(const replication::ConfState& conf_state);

  // Drops every entry after `index` and lowers the commit index to it.
  // For a copy of a data dir only (a backup: its state is applied through
  // `index`), never for a running node's log: that would drop entries the
  // node may have acknowledged. Durable on return. InvalidArgument when
  // `index` is below the first entry's predecessor.
  absl::Status DropEntriesAfter(LogIndex index);

  replication::HardState InitialHardState() const override;
  replication::ConfState InitialConfState() const override;
  absl::StatusOr<std::vector<replication::Entry>> Entries(
      LogIndex lo, LogIndex hi, uint64_t max_bytes) const override;
  absl::StatusOr<Term> TermAt(LogIndex index) const override;
  LogIndex FirstIndex() const override;
  LogIndex LastIndex() const override;
  absl::StatusOr<replication::Snapshot> GetSnapshot() const override;

  absl::Status Append(const std::vector<replication::Entry>& entries,
                      const std::optional<replication::HardState>& hard_state,
                      bool sync) override;
  absl::Status InstallSnapshot(const replication::Snapshot& snapshot) override;
  using replication::LogStore::Compact;
  absl::Status Compact(const replication::Snapshot& snapshot,
                       LogIndex truncate_through) override;

 private:
  RaftLogStore(Database* db, replication::HardState hard_state,
               replication::Snapshot snapshot, LogIndex truncated_index,
               Term truncated_term, replication::ConfState conf_state,
               LogIndex last_index);

  Database* const db_;  // Not owned; outlives this.

  // Guards the in-memory mirror of the metadata. Readers hold it (shared)
  // while reading entries from RocksDB; the writer holds it exclusively
  // across a write that truncates or compacts, so a reader never sees a
  // half-removed range, but not across a plain append (readers never look
  // past last_index_), so reads are not stalled by its fsync.
  mutable absl::Mutex mutex_;
  replication::HardState hard_state_ ABSL_GUARDED_BY(mutex_);
  replication::Snapshot snapshot_ ABSL_GUARDED_BY(mutex_);
  // The last entry dropped from raft_log (<= snapshot_.meta.index).
  LogIndex truncated_index_ ABSL_GUARDED_BY(mutex_);
  Term truncated_term_ ABSL_GUARDED_BY(mutex_);
  // The bootstrap membership, used while snapshot_.meta.index == 0.
  replication::ConfState conf_state_ ABSL_GUARDED_BY(mutex_);
  LogIndex last_index_ ABSL_GUARDED_BY(mutex_);
};

}  // namespace sessiond::storage

#endif  // SESSIOND_STORAGE_RAFT_LOG_STORE_H_
