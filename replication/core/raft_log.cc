// Copyright sessiond authors. Licensed under the Apache License 2.0.
#include "replication/core/raft_log.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/check.h"

namespace sessiond::replication {

namespace {

// A LogReader error other than "compacted"/"out of range" means the log is
// unusable (etcd: storage errors make the node inoperable).
template <typename T>
void CheckReadable(const absl::StatusOr<T>& result) {
  if (!result.ok() && !absl::IsOutOfRange(result.status())) {
    SESSIOND_CHECK_MSG(false, result.status().ToString());
  }
}

}  // namespace

RaftLog::RaftLog(const LogReader* storage, LogIndex committed, LogIndex applied)
    : storage_(storage),
      offset_(storage->LastIndex() + 1),
      committed_(committed) {
  const LogIndex snap_index = storage->FirstIndex() - 1;
  applied_handed_ = std::max(applied, snap_index);
  if (committed_ < snap_index) committed_ = snap_index;
  if (applied_handed_ > committed_) applied_handed_ = committed_;
}

LogIndex RaftLog::FirstIndex() const {
  if (pending_snapshot_) return pending_snapshot_->meta.index + 1;
  return storage_->FirstIndex();
}

LogIndex RaftLog::LastIndex() const {
  if (!unstable_.empty()) return offset_ + (unstable_.size() - 1);
  return offset_ - 1;
}

Term RaftLog::LastTerm() const { return TermOrZero(LastIndex()); }

std::optional<Term> RaftLog::TermAt(LogIndex index) const {
  if (index == LogIndex(0)) return Term(0);
  if (index >= offset_) {
    if (index - offset_ < unstable_.size()) {
      return unstable_[index - offset_].term;
    }
    return std::nullopt;
  }
  if (pending_snapshot_) {
    if (index == pending_snapshot_->meta.index) {
      return pending_snapshot_->meta.term;
    }
    return std::nullopt;  // below the snapshot
  }
  absl::StatusOr<Term> term = storage_->TermAt(index);
  CheckReadable(term);
  if (!term.ok()) return std::nullopt;
  return *term;
}

Term RaftLog::TermOrZero(LogIndex index) const {
  std::optional<Term> term = TermAt(index);
  return term ? *term : Term(0);
}

bool RaftLog::MatchTerm(LogIndex index, Term term) const {
  std::optional<Term> t = TermAt(index);
  return t && *t == term;
}

// Raft thesis 3.6.1: a log is more up-to-date when its last term is higher,
// or the terms are equal and it is longer.
bool RaftLog::IsUpToDate(LogIndex last_index, Term last_term) const {
  const Term my_term = LastTerm();
  return last_term > my_term ||
         (last_term == my_term && last_index >= LastIndex());
}

void RaftLog::Append(std::vector<Entry>&& entries) {
  if (entries.empty()) return;
  const LogIndex after = entries.front().index;
  SESSIOND_CHECK(after <= LastIndex() + 1);
  SESSIOND_CHECK_MSG(
      after > committed_,
      absl::StrCat("append at ", after.value(), " would overwrite committed ",
                   committed_.value()));
  if (after == offset_ + unstable_.size()) {
    if (unstable_.empty()) {
      unstable_ = std::move(entries);
    } else {
      unstable_.insert(unstable_.end(),
                       std::make_move_iterator(entries.begin()),
                       std::make_move_iterator(entries.end()));
    }
  } else if (after <= offset_) {
    // The new entries replace part of the durable log: the write that hands
    // them out truncates the store's suffix. Entries still in flight are
    // superseded; their late OnPersisted no longer matches and is ignored.
    offset_ = after;
    unstable_ = std::move(entries);
    handed_ = 0;
  } else {
    const size_t keep = after - offset_;
    unstable_.resize(keep);
    handed_ = std::min(handed_, keep);
    unstable_.insert(unstable_.end(), std::make_move_iterator(entries.begin()),
                     std::make_move_iterator(entries.end()));
  }
}

LogIndex RaftLog::FindConflict(const std::vector<Entry>& entries) const {
  for (const Entry& e : entries) {
    if (!MatchTerm(e.index, e.term)) return e.index;
  }
  return LogIndex(0);
}

std::optional<LogIndex> RaftLog::MaybeAppend(LogIndex index, Term log_term,
                                             std::vector<Entry>&& entries) {
  if (!MatchTerm(index, log_term)) return std::nullopt;
  const LogIndex last_new = index + entries.size();
  const LogIndex conflict = FindConflict(entries);
  if (conflict != LogIndex(0)) {
    SESSIOND_CHECK_MSG(
        conflict > committed_,
        absl::StrCat("entry ", conflict.value(),
                     " conflicts with committed entry ", committed_.value()));
    const size_t skip = conflict - (index + 1);
    if (skip > 0) entries.erase(entries.begin(), entries.begin() + skip);
    Append(std::move(entries));
  }
  return last_new;
}

std::pair<LogIndex, Term> RaftLog::FindConflictByTerm(LogIndex index,
                                                      Term term) const {
  // Walk back while our term is above `term`; terms are monotone in the log,
  // so the walk stops at the first index whose term is <= `term`.
  while (true) {
    std::optional<Term> t = TermAt(index);
    if (!t) return {index, Term(0)};
    if (*t <= term || index == LogIndex(0)) return {index, *t};
    index = index - 1;
  }
}

std::optional<std::vector<Entry>> RaftLog::EntriesFrom(
    LogIndex lo, uint64_t max_bytes) const {
  std::vector<Entry> out;
  const LogIndex last = LastIndex();
  if (lo > last) return out;
  if (lo < FirstIndex()) return std::nullopt;
  uint64_t bytes = 0;
  if (lo < offset_) {
    // Durable part, from the store.
    absl::StatusOr<std::vector<Entry>> stored =
        storage_->Entries(lo, offset_, max_bytes);
    CheckReadable(stored);
    if (!stored.ok()) return std::nullopt;
    out = std::move(*stored);
    for (const Entry& e : out) bytes += e.data.size();
    if (out.empty() || out.back().index + 1 < offset_) return out;
    lo = offset_;
  }
  // In-memory part: hollow (handed-out) entries cannot be sent until their
  // persist completes and they can be read back from the store.
  size_t i = lo - offset_;
  if (i < handed_) return out;
  for (; i < unstable_.size(); ++i) {
    const Entry& e = unstable_[i];
    if (!out.empty() && bytes + e.data.size() > max_bytes) break;
    bytes += e.data.size();
    out.push_back(e);
  }
  return out;
}

void RaftLog::CommitTo(LogIndex index) {
  if (index <= committed_) return;
  SESSIOND_CHECK_MSG(index <= LastIndex(),
                     absl::StrCat("commit ", index.value(), " beyond last ",
                                  LastIndex().value()));
  committed_ = index;
}

std::vector<Entry> RaftLog::TakeUnhanded() {
  std::vector<Entry> out;
  if (handed_ == 0) {
    // Common case: hand out the data of the whole unstable tail; keep the
    // hollow shells (term and index) for lookups until the persist is done.
    out.reserve(unstable_.size());
    for (Entry& e : unstable_) {
      out.push_back(Entry{e.term, e.index, e.type, std::move(e.data)});
      e.data = std::string();
    }
  } else {
    out.reserve(unstable_.size() - handed_);
    for (size_t i = handed_; i < unstable_.size(); ++i) {
      Entry& e = unstable_[i];
      out.push_back(Entry{e.term, e.index, e.type, std::move(e.data)});
      e.data = std::string();
    }
  }
  handed_ = unstable_.size();
  return out;
}

bool RaftLog::StableTo(LogIndex index, Term term) {
  if (index < offset_) return false;
  const size_t n = index - offset_ + 1;
  if (n > handed_) return false;
  if (unstable_[n - 1].term != term) return false;
  unstable_.erase(unstable_.begin(), unstable_.begin() + n);
  handed_ -= n;
  offset_ = index + 1;
  return true;
}

bool RaftLog::HasCommittedToHand() const {
  return std::min(committed_, StableLastIndex()) > applied_handed_;
}

std::vector<Entry> RaftLog::TakeCommitted(uint64_t max_bytes) {
  const LogIndex hi = std::min(committed_, StableLastIndex());
  if (hi <= applied_handed_) return {};
  absl::StatusOr<std::vector<Entry>> entries =
      storage_->Entries(applied_handed_ + 1, hi + 1, max_bytes);
  SESSIOND_CHECK_MSG(entries.ok(), entries.status().ToString());
  if (!entries->empty()) applied_handed_ = entries->back().index;
  return std::move(*entries);
}

void RaftLog::Restore(const Snapshot& snapshot) {
  pending_snapshot_ = snapshot;
  snapshot_handed_ = false;
  unstable_.clear();
  handed_ = 0;
  offset_ = snapshot.meta.index + 1;
  committed_ = snapshot.meta.index;
  applied_handed_ = snapshot.meta.index;
}

Snapshot RaftLog::TakeSnapshot() {
  snapshot_handed_ = true;
  Snapshot out;
  out.meta = pending_snapshot_->meta;
  out.data = std::move(pending_snapshot_->data);
  pending_snapshot_->data = std::string();
  return out;
}

void RaftLog::SnapshotInstalled(LogIndex index) {
  if (pending_snapshot_ && snapshot_handed_ &&
      pending_snapshot_->meta.index == index) {
    pending_snapshot_.reset();
    snapshot_handed_ = false;
  }
}

}  // namespace sessiond::replication
