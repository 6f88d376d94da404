// Copyright sessiond authors. Licensed under the Apache License 2.0.
#include "replication/memory_log_store.h"

#include <algorithm>
#include <string>

#include "absl/strings/str_cat.h"

namespace sessiond::replication {

MemoryLogStore::MemoryLogStore(ConfState initial_conf_state) {
  snapshot_.meta.conf_state = std::move(initial_conf_state);
}

HardState MemoryLogStore::InitialHardState() const {
  absl::MutexLock lock(&mutex_);
  return hard_state_;
}

ConfState MemoryLogStore::InitialConfState() const {
  absl::MutexLock lock(&mutex_);
  return snapshot_.meta.conf_state;
}

LogIndex MemoryLogStore::FirstIndexLocked() const {
  return truncated_index_ + 1;
}

LogIndex MemoryLogStore::LastIndexLocked() const {
  return truncated_index_ + entries_.size();
}

LogIndex MemoryLogStore::FirstIndex() const {
  absl::MutexLock lock(&mutex_);
  return FirstIndexLocked();
}

LogIndex MemoryLogStore::LastIndex() const {
  absl::MutexLock lock(&mutex_);
  return LastIndexLocked();
}

absl::StatusOr<std::vector<Entry>> MemoryLogStore::Entries(
    LogIndex lo, LogIndex hi, uint64_t max_bytes) const {
  absl::MutexLock lock(&mutex_);
  if (lo < FirstIndexLocked()) {
    return absl::OutOfRangeError(absl::StrCat("entry ", lo.value(),
                                              " is compacted; first index is ",
                                              FirstIndexLocked().value()));
  }
  if (hi > LastIndexLocked() + 1 || lo > hi) {
    return absl::OutOfRangeError(
        absl::StrCat("entries [", lo.value(), ", ", hi.value(),
                     ") beyond last index ", LastIndexLocked().value()));
  }
  std::vector<Entry> out;
  uint64_t bytes = 0;
  for (LogIndex i = lo; i < hi; ++i) {
    const Entry& e = entries_[i - FirstIndexLocked()];
    if (!out.empty() && bytes + e.data.size() > max_bytes) break;
    bytes += e.data.size();
    out.push_back(e);
  }
  return out;
}

absl::StatusOr<Term> MemoryLogStore::TermAt(LogIndex index) const {
  absl::MutexLock lock(&mutex_);
  if (index == truncated_index_) return truncated_term_;
  if (index < FirstIndexLocked()) {
    return absl::OutOfRangeError(
        absl::StrCat("entry ", index.value(), " is compacted"));
  }
  if (index > LastIndexLocked()) {
    return absl::OutOfRangeError(absl::StrCat("entry ", index.value(),
                                              " is beyond last index ",
                                              LastIndexLocked().value()));
  }
  return entries_[index - FirstIndexLocked()].term;
}

absl::StatusOr<Snapshot> MemoryLogStore::GetSnapshot() const {
  absl::MutexLock lock(&mutex_);
  return snapshot_;
}

absl::Status MemoryLogStore::Append(const std::vector<Entry>& entries,
                                    const std::optional<HardState>& hard_state,
                                    bool sync) {
  absl::MutexLock lock(&mutex_);
  if (!entries.empty()) {
    const LogIndex first = entries.front().index;
    if (first < FirstIndexLocked() || first > LastIndexLocked() + 1) {
      return absl::InvalidArgumentError(absl::StrCat(
          "append at ", first.value(), " outside [", FirstIndexLocked().value(),
          ", ", LastIndexLocked().value() + 1, "]"));
    }
    for (size_t i = 1; i < entries.size(); ++i) {
      if (entries[i].index != first + i) {
        return absl::InvalidArgumentError("append of non-consecutive entries");
      }
    }
    entries_.resize(first - FirstIndexLocked());
    entries_.insert(entries_.end(), entries.begin(), entries.end());
  }
  if (hard_state) hard_state_ = *hard_state;
  return absl::OkStatus();
}

absl::Status MemoryLogStore::InstallSnapshot(const Snapshot& snapshot) {
  absl::MutexLock lock(&mutex_);
  snapshot_ = snapshot;
  truncated_index_ = snapshot.meta.index;
  truncated_term_ = snapshot.meta.term;
  entries_.clear();
  if (hard_state_.commit < snapshot.meta.index) {
    hard_state_.commit = snapshot.meta.index;
  }
  return absl::OkStatus();
}

absl::Status MemoryLogStore::Compact(const Snapshot& snapshot,
                                     LogIndex truncate_through) {
  absl::MutexLock lock(&mutex_);
  const LogIndex index = snapshot.meta.index;
  if (truncate_through > index) {
    return absl::InvalidArgumentError(
        absl::StrCat("truncation through ", truncate_through.value(),
                     " past the snapshot at ", index.value()));
  }
  if (index > snapshot_.meta.index) {
    if (index > LastIndexLocked()) {
      return absl::InvalidArgumentError(
          absl::StrCat("snapshot at ", index.value(), " beyond last index ",
                       LastIndexLocked().value()));
    }
    snapshot_ = snapshot;
  }
  truncate_through = std::min(truncate_through, snapshot_.meta.index);
  if (truncate_through <= truncated_index_) return absl::OkStatus();
  const uint64_t drop = truncate_through - truncated_index_;
  truncated_term_ = entries_[drop - 1].term;
  truncated_index_ = truncate_through;
  entries_.erase(entries_.begin(), entries_.begin() + drop);
  return absl::OkStatus();
}

void MemoryLogStore::SetConfStateForTest(ConfState conf_state) {
  absl::MutexLock lock(&mutex_);
  snapshot_.meta.conf_state = std::move(conf_state);
}

}  // namespace sessiond::replication
