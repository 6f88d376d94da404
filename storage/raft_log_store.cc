// Copyright sessiond authors. Licensed under the Apache License 2.0.
#include "storage/raft_log_store.h"

#include <algorithm>
#include <tuple>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "rocksdb/iterator.h"
#include "rocksdb/options.h"
#include "rocksdb/write_batch.h"
#include "storage/keys.h"

namespace sessiond::storage {

using replication::ConfState;
using replication::Entry;
using replication::HardState;
using replication::Snapshot;
using replication::SnapshotMeta;

namespace {

// The term of the entry at `index`, read from raft_log. DataLoss when the
// entry is missing or too short.
absl::StatusOr<Term> ReadTerm(Database* db, LogIndex index) {
  std::string value;
  rocksdb::Status s = db->db()->Get(rocksdb::ReadOptions(), db->raft_log_cf(),
                                    LogKey(index), &value);
  if (s.IsNotFound()) {
    return absl::DataLossError(
        absl::StrCat("raft_log: entry ", index.value(), " is missing"));
  }
  SESSIOND_RETURN_IF_ERROR(FromRocksStatus(s, "raft_log read"));
  if (value.size() < 9) {
    return absl::DataLossError(
        absl::StrCat("raft_log: entry ", index.value(), " is truncated"));
  }
  return Term(DecodeFixed64BE(value));
}

}  // namespace

absl::StatusOr<std::unique_ptr<RaftLogStore>> RaftLogStore::Open(Database* db) {
  HardState hard_state;
  Snapshot snapshot;
  ConfState conf_state;
  SESSIOND_ASSIGN_OR_RETURN(std::optional<std::string> hs,
                            db->Get(db->raft_state_cf(), kHardStateKey));
  if (hs) {
    SESSIOND_ASSIGN_OR_RETURN(hard_state, DecodeHardState(*hs));
  }
  SESSIOND_ASSIGN_OR_RETURN(std::optional<std::string> sm,
                            db->Get(db->raft_state_cf(), kSnapshotMetaKey));
  if (sm) {
    SESSIOND_ASSIGN_OR_RETURN(snapshot.meta, DecodeSnapshotMeta(*sm));
  }
  SESSIOND_ASSIGN_OR_RETURN(std::optional<std::string> sd,
                            db->Get(db->raft_state_cf(), kSnapshotDataKey));
  if (sd) snapshot.data = *std::move(sd);
  SESSIOND_ASSIGN_OR_RETURN(std::optional<std::string> cs,
                            db->Get(db->raft_state_cf(), kConfStateKey));
  if (cs) {
    SESSIOND_ASSIGN_OR_RETURN(conf_state, DecodeConfState(*cs));
  }
  // Data dirs written before the truncation point had its own key were
  // truncated exactly at the snapshot.
  LogIndex truncated_index = snapshot.meta.index;
  Term truncated_term = snapshot.meta.term;
  SESSIOND_ASSIGN_OR_RETURN(std::optional<std::string> tr,
                            db->Get(db->raft_state_cf(), kTruncatedKey));
  if (tr) {
    SESSIOND_ASSIGN_OR_RETURN(auto index_term, DecodeIndexTerm(*tr));
    std::tie(truncated_index, truncated_term) = index_term;
    if (truncated_index > snapshot.meta.index) {
      return absl::DataLossError(absl::StrCat(
          "raft_state: truncated through ", truncated_index.value(),
          " past the snapshot at ", snapshot.meta.index.value()));
    }
  }

  // The last index: the last key of raft_log, or the truncation point when
  // the log holds no entries.
  LogIndex last = truncated_index;
  {
    std::unique_ptr<rocksdb::Iterator> it(
        db->db()->NewIterator(rocksdb::ReadOptions(), db->raft_log_cf()));
    it->SeekToLast();
    if (it->Valid()) {
      SESSIOND_ASSIGN_OR_RETURN(
          LogIndex key,
          DecodeLogKey(std::string_view(it->key().data(), it->key().size())));
      if (key > last) last = key;
    }
    SESSIOND_RETURN_IF_ERROR(FromRocksStatus(it->status(), "raft_log scan"));
    // The first entry must follow the truncation point; a gap means lost
    // entries.
    if (last > truncated_index) {
      it->Seek(LogKey(truncated_index + 1));
      // A read that failed is the disk's error, not a lost entry.
      SESSIOND_RETURN_IF_ERROR(FromRocksStatus(it->status(), "raft_log scan"));
      if (!it->Valid() ||
          std::string_view(it->key().data(), it->key().size()) !=
              LogKey(truncated_index + 1)) {
        return absl::DataLossError(absl::StrCat(
            "raft_log: entry ", truncated_index.value() + 1,
            " (first after the truncation point) is missing; last is ",
            last.value()));
      }
    }
  }
  if (snapshot.meta.index > last) {
    return absl::DataLossError(
        absl::StrCat("raft_log: snapshot at ", snapshot.meta.index.value(),
                     " is past the last index ", last.value()));
  }
  return std::unique_ptr<RaftLogStore>(
      new RaftLogStore(db, hard_state, std::move(snapshot), truncated_index,
                       truncated_term, std::move(conf_state), last));
}

RaftLogStore::RaftLogStore(Database* db, HardState hard_state,
                           Snapshot snapshot, LogIndex truncated_index,
                           Term truncated_term, ConfState conf_state,
                           LogIndex last_index)
    : db_(db),
      hard_state_(hard_state),
      snapshot_(std::move(snapshot)),
      truncated_index_(truncated_index),
      truncated_term_(truncated_term),
      conf_state_(std::move(conf_state)),
      last_index_(last_index) {}

absl::Status RaftLogStore::Bootstrap(const ConfState& conf_state) {
  if (conf_state.voters.empty() || !conf_state.learners.empty()) {
    return absl::InvalidArgumentError(
        "a new group starts with voters and no learners");
  }
  absl::MutexLock lock(&mutex_);
  if (last_index_ != LogIndex(0) || snapshot_.meta.index != LogIndex(0) ||
      hard_state_.term != Term(0)) {
    return absl::FailedPreconditionError(
        "cannot bootstrap a Raft log that already has state");
  }
  rocksdb::WriteBatch batch;
  LogIndex index;
  for (NodeId voter : conf_state.voters) {
    Entry entry;
    entry.term = Term(1);
    entry.index = ++index;
    entry.type = replication::EntryType::kConfChange;
    entry.data = replication::EncodeConfChange(replication::ConfChange{
        replication::ConfChangeType::kPromoteVoter, voter});
    batch.Put(db_->raft_log_cf(), LogKey(entry.index), EncodeEntry(entry));
  }
  HardState hard_state;
  hard_state.term = Term(1);
  hard_state.commit = index;
  batch.Put(db_->raft_state_cf(), kHardStateKey, EncodeHardState(hard_state));
  SESSIOND_RETURN_IF_ERROR(db_->Write(&batch, /*sync=*/true));
  last_index_ = index;
  hard_state_ = hard_state;
  return absl::OkStatus();
}

HardState RaftLogStore::InitialHardState() const {
  absl::ReaderMutexLock lock(&mutex_);
  return hard_state_;
}

ConfState RaftLogStore::InitialConfState() const {
  absl::ReaderMutexLock lock(&mutex_);
  if (snapshot_.meta.index != LogIndex(0)) return snapshot_.meta.conf_state;
  return conf_state_;
}

LogIndex RaftLogStore::FirstIndex() const {
  absl::ReaderMutexLock lock(&mutex_);
  return truncated_index_ + 1;
}

LogIndex RaftLogStore::LastIndex() const {
  absl::ReaderMutexLock lock(&mutex_);
  return last_index_;
}

absl::StatusOr<std::vector<Entry>> RaftLogStore::Entries(
    LogIndex lo, LogIndex hi, uint64_t max_bytes) const {
  absl::ReaderMutexLock lock(&mutex_);
  const LogIndex first = truncated_index_ + 1;
  if (lo < first) {
    return absl::OutOfRangeError(absl::StrCat(
        "entry ", lo.value(), " is compacted; first index is ", first.value()));
  }
  if (hi > last_index_ + 1 || lo > hi) {
    return absl::OutOfRangeError(
        absl::StrCat("entries [", lo.value(), ", ", hi.value(),
                     ") beyond last index ", last_index_.value()));
  }
  std::vector<Entry> out;
  if (lo == hi) return out;
  const std::string upper_key = LogKey(hi);
  rocksdb::Slice upper(upper_key);
  rocksdb::ReadOptions read_options;
  read_options.iterate_upper_bound = &upper;
  std::unique_ptr<rocksdb::Iterator> it(
      db_->db()->NewIterator(read_options, db_->raft_log_cf()));
  uint64_t bytes = 0;
  LogIndex expected = lo;
  bool full = false;
  for (it->Seek(LogKey(lo)); it->Valid(); it->Next()) {
    SESSIOND_ASSIGN_OR_RETURN(
        LogIndex index,
        DecodeLogKey(std::string_view(it->key().data(), it->key().size())));
    if (index != expected) break;  // a gap: reported below
    const rocksdb::Slice value = it->value();
    const uint64_t size = value.size() >= 9 ? value.size() - 9 : 0;
    if (!out.empty() && bytes + size > max_bytes) {
      full = true;
      break;
    }
    SESSIOND_ASSIGN_OR_RETURN(
        Entry entry,
        DecodeEntry(index, std::string_view(value.data(), value.size())));
    bytes += size;
    out.push_back(std::move(entry));
    ++expected;
  }
  SESSIOND_RETURN_IF_ERROR(FromRocksStatus(it->status(), "raft_log read"));
  if (!full && expected != hi) {
    return absl::DataLossError(
        absl::StrCat("raft_log: entry ", expected.value(), " is missing"));
  }
  return out;
}

absl::StatusOr<Term> RaftLogStore::TermAt(LogIndex index) const {
  absl::ReaderMutexLock lock(&mutex_);
  if (index == truncated_index_) return truncated_term_;
  if (index < truncated_index_ + 1) {
    return absl::OutOfRangeError(
        absl::StrCat("entry ", index.value(), " is compacted"));
  }
  if (index > last_index_) {
    return absl::OutOfRangeError(absl::StrCat("entry ", index.value(),
                                              " is beyond last index ",
                                              last_index_.value()));
  }
  return ReadTerm(db_, index);
}

absl::StatusOr<Snapshot> RaftLogStore::GetSnapshot() const {
  absl::ReaderMutexLock lock(&mutex_);
  return snapshot_;
}

absl::Status RaftLogStore::Append(const std::vector<Entry>& entries,
                                  const std::optional<HardState>& hard_state,
                                  bool sync) {
  if (entries.empty() && !hard_state) return absl::OkStatus();
  LogIndex first_index, last_index;
  {
    absl::ReaderMutexLock lock(&mutex_);
    first_index = truncated_index_ + 1;
    last_index = last_index_;
  }
  rocksdb::WriteBatch batch;
  bool truncates = false;
  if (!entries.empty()) {
    const LogIndex first = entries.front().index;
    if (first < first_index || first > last_index + 1) {
      return absl::InvalidArgumentError(
          absl::StrCat("append at ", first.value(), " outside [",
                       first_index.value(), ", ", last_index.value() + 1, "]"));
    }
    for (size_t i = 1; i < entries.size(); ++i) {
      if (entries[i].index != first + i) {
        return absl::InvalidArgumentError("append of non-consecutive entries");
      }
    }
    if (first <= last_index) {
      // A conflicting suffix: [first, old last] goes; entries beyond the new
      // last would otherwise survive.
      truncates = true;
      batch.DeleteRange(db_->raft_log_cf(), LogKey(first),
                        LogKey(last_index + 1));
    }
    for (const Entry& entry : entries) {
      batch.Put(db_->raft_log_cf(), LogKey(entry.index), EncodeEntry(entry));
    }
  }
  if (hard_state) {
    batch.Put(db_->raft_state_cf(), kHardStateKey,
              EncodeHardState(*hard_state));
  }
  if (truncates) {
    // Readers must not see the range half-replaced.
    absl::MutexLock lock(&mutex_);
    SESSIOND_RETURN_IF_ERROR(db_->Write(&batch, sync));
    last_index_ = entries.back().index;
    if (hard_state) hard_state_ = *hard_state;
    return absl::OkStatus();
  }
  SESSIOND_RETURN_IF_ERROR(db_->Write(&batch, sync));
  absl::MutexLock lock(&mutex_);
  if (!entries.empty()) last_index_ = entries.back().index;
  if (hard_state) hard_state_ = *hard_state;
  return absl::OkStatus();
}

absl::Status RaftLogStore::DropEntriesAfter(LogIndex index) {
  absl::MutexLock lock(&mutex_);
  if (index < truncated_index_) {
    return absl::InvalidArgumentError(
        absl::StrCat("cannot drop entries after ", index.value(),
                     ": the log starts after ", truncated_index_.value()));
  }
  if (index >= last_index_ && hard_state_.commit <= index) {
    return absl::OkStatus();
  }
  rocksdb::WriteBatch batch;
  if (index < last_index_) {
    batch.DeleteRange(db_->raft_log_cf(), LogKey(index + 1),
                      LogKey(last_index_ + 1));
  }
  HardState hard_state = hard_state_;
  hard_state.commit = std::min(hard_state.commit, index);
  batch.Put(db_->raft_state_cf(), kHardStateKey, EncodeHardState(hard_state));
  SESSIOND_RETURN_IF_ERROR(db_->Write(&batch, /*sync=*/true));
  last_index_ = std::min(last_index_, index);
  hard_state_ = hard_state;
  return absl::OkStatus();
}

absl::Status RaftLogStore::InstallSnapshot(const Snapshot& snapshot) {
  absl::MutexLock lock(&mutex_);
  rocksdb::WriteBatch batch;
  // Every entry goes: the snapshot replaces the whole log.
  batch.DeleteRange(db_->raft_log_cf(), LogKey(LogIndex(0)),
                    LogKey(LogIndex(~uint64_t{0})));
  batch.Delete(db_->raft_log_cf(), LogKey(LogIndex(~uint64_t{0})));
  batch.Put(db_->raft_state_cf(), kSnapshotMetaKey,
            EncodeSnapshotMeta(snapshot.meta));
  batch.Put(db_->raft_state_cf(), kSnapshotDataKey, snapshot.data);
  batch.Put(db_->raft_state_cf(), kTruncatedKey,
            EncodeIndexTerm(snapshot.meta.index, snapshot.meta.term));
  HardState hard_state = hard_state_;
  if (hard_state.commit < snapshot.meta.index) {
    hard_state.commit = snapshot.meta.index;
    batch.Put(db_->raft_state_cf(), kHardStateKey, EncodeHardState(hard_state));
  }
  SESSIOND_RETURN_IF_ERROR(db_->Write(&batch, /*sync=*/true));
  snapshot_ = snapshot;
  truncated_index_ = snapshot.meta.index;
  truncated_term_ = snapshot.meta.term;
  hard_state_ = hard_state;
  last_index_ = snapshot.meta.index;
  return absl::OkStatus();
}

absl::Status RaftLogStore::Compact(const Snapshot& snapshot,
                                   LogIndex truncate_through) {
  absl::MutexLock lock(&mutex_);
  const LogIndex index = snapshot.meta.index;
  if (truncate_through > index) {
    return absl::InvalidArgumentError(
        absl::StrCat("truncation through ", truncate_through.value(),
                     " past the snapshot at ", index.value()));
  }
  rocksdb::WriteBatch batch;
  const bool newer = index > snapshot_.meta.index;
  if (newer) {
    if (index > last_index_) {
      return absl::InvalidArgumentError(
          absl::StrCat("snapshot at ", index.value(), " beyond last index ",
                       last_index_.value()));
    }
    batch.Put(db_->raft_state_cf(), kSnapshotMetaKey,
              EncodeSnapshotMeta(snapshot.meta));
    batch.Put(db_->raft_state_cf(), kSnapshotDataKey, snapshot.data);
  }
  const LogIndex snapshot_index = newer ? index : snapshot_.meta.index;
  truncate_through = std::min(truncate_through, snapshot_index);
  Term truncated_term = truncated_term_;
  const bool truncates = truncate_through > truncated_index_;
  if (truncates) {
    SESSIOND_ASSIGN_OR_RETURN(truncated_term, ReadTerm(db_, truncate_through));
    batch.DeleteRange(db_->raft_log_cf(), LogKey(truncated_index_),
                      LogKey(truncate_through + 1));
    batch.Put(db_->raft_state_cf(), kTruncatedKey,
              EncodeIndexTerm(truncate_through, truncated_term));
  }
  if (!newer && !truncates) return absl::OkStatus();
  SESSIOND_RETURN_IF_ERROR(db_->Write(&batch, /*sync=*/true));
  if (newer) snapshot_ = snapshot;
  if (truncates) {
    truncated_index_ = truncate_through;
    truncated_term_ = truncated_term;
  }
  return absl::OkStatus();
}

}  // namespace sessiond::storage
