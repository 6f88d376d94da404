// Copyright sessiond authors. Licensed under the Apache License 2.0.
//
// RaftLog: the core's view of its log, in the manner of etcd-io/raft's
// raftLog + unstable. Three regions, by index:
//
//   [first, stable_last]           durable, read through the LogReader
//   [offset, offset+handed)        handed out in a Ready, persist in flight;
//                                  only term/index/type are kept (the data
//                                  was moved into Ready::to_persist)
//   [offset+handed, last]          appended, not yet handed out (full data)
//
// where offset = stable_last + 1. A snapshot received from the leader but
// not yet installed stands in for the LogReader until OnSnapshotInstalled.
//
// Invariants: committed <= last; applied_handed <= committed; committed
// never decreases; entries at indices below offset are never rewritten by
// anything this log hands out, so reading them from the LogReader while the
// log writer appends (on another thread) is safe.
//
// Not thread-safe; owned by RaftCore.
#ifndef SESSIOND_REPLICATION_CORE_RAFT_LOG_H_
#define SESSIOND_REPLICATION_CORE_RAFT_LOG_H_

#include <cstdint>
#include <optional>
#include <vector>

#include "replication/core/log_reader.h"
#include "replication/core/types.h"

namespace sessiond::replication {

class RaftLog {
 public:
  // `storage` must outlive the log.
  RaftLog(const LogReader* storage, LogIndex committed, LogIndex applied);

  LogIndex FirstIndex() const;
  LogIndex LastIndex() const;
  Term LastTerm() const;
  // The last index known durable (OnPersisted / installed snapshot).
  LogIndex StableLastIndex() const { return offset_ - 1; }

  // The term at `index`; nullopt when compacted or beyond the last index.
  // Index 0 has term 0.
  std::optional<Term> TermAt(LogIndex index) const;
  // TermAt, with 0 for an unknown index.
  Term TermOrZero(LogIndex index) const;
  bool MatchTerm(LogIndex index, Term term) const;
  bool IsUpToDate(LogIndex last_index, Term last_term) const;

  // Appends after LastIndex(). REQUIRES: entries consecutive from
  // LastIndex() + 1.
  void Append(std::vector<Entry>&& entries);

  // The follower side of AppendEntries: when (index, log_term) matches,
  // appends the new part of `entries` (truncating a conflicting suffix) and
  // returns the last index the message covers; nullopt on mismatch.
  std::optional<LogIndex> MaybeAppend(LogIndex index, Term log_term,
                                      std::vector<Entry>&& entries);

  // The first index in `entries` whose term differs from the log (or that is
  // past the end); 0 when all match.
  LogIndex FindConflict(const std::vector<Entry>& entries) const;
  // Fast backtracking (etcd's findConflictByTerm): the largest index <=
  // `index` whose term is <= `term`, with that term (0 when unknown).
  std::pair<LogIndex, Term> FindConflictByTerm(LogIndex index, Term term) const;

  // Entries from `lo` with at most `max_bytes` of data (at least one when
  // any is available). Stops at the first entry whose data was handed out
  // and is not durable yet. nullopt when `lo` is compacted.
  std::optional<std::vector<Entry>> EntriesFrom(LogIndex lo,
                                                uint64_t max_bytes) const;

  LogIndex committed() const { return committed_; }
  void CommitTo(LogIndex index);
  LogIndex applied_handed() const { return applied_handed_; }

  // Entries not yet handed out for persisting; moves their data out.
  bool HasUnhanded() const { return handed_ < unstable_.size(); }
  std::vector<Entry> TakeUnhanded();
  // The persist through (index, term) completed. Returns true when it
  // advanced the stable boundary.
  bool StableTo(LogIndex index, Term term);

  // Committed entries that are durable locally and not yet handed out.
  bool HasCommittedToHand() const;
  std::vector<Entry> TakeCommitted(uint64_t max_bytes);

  // Snapshot from the leader (not yet installed).
  // Replaces the whole log with `snapshot`.
  void Restore(const Snapshot& snapshot);
  const std::optional<Snapshot>& pending_snapshot() const {
    return pending_snapshot_;
  }
  bool snapshot_handed() const { return snapshot_handed_; }
  Snapshot TakeSnapshot();
  void SnapshotInstalled(LogIndex index);

 private:
  const LogReader* const storage_;
  std::optional<Snapshot> pending_snapshot_;
  bool snapshot_handed_ = false;
  // unstable_[i] has index offset_ + i.
  std::vector<Entry> unstable_;
  LogIndex offset_;
  size_t handed_ = 0;  // unstable_[0, handed_) are hollow, persist in flight
  LogIndex committed_;
  LogIndex applied_handed_;
};

}  // namespace sessiond::replication

#endif  // SESSIOND_REPLICATION_CORE_RAFT_LOG_H_
