// Copyright sessiond authors. Licensed under the Apache License 2.0.
#include "storage/audit_log.h"

#include <algorithm>
#include <limits>
#include <memory>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "rocksdb/iterator.h"
#include "storage/keys.h"

namespace sessiond::storage {
namespace {

constexpr size_t kAuditKeyBytes = sizeof(kAuditKeyPrefix) - 1 + 8;
constexpr size_t kAuditMetaBytes = 16;
// Dropping more entries than this at once deletes them with one range
// tombstone instead of a tombstone each (a long-idle log whose retention
// passed for all of it).
constexpr size_t kRangeDeleteFrom = 256;

// Cuts `*s` so that it is `excess` bytes shorter or more, at a UTF-8
// character boundary (proto3 refuses to parse a string field that is not
// UTF-8), marked; empties it when even the marker alone would not save
// enough.
void CutString(std::string* s, size_t excess) {
  const std::string_view marker(kAuditTruncatedMarker);
  if (s->size() < excess + marker.size()) {
    s->clear();
    return;
  }
  size_t keep = s->size() - excess - marker.size();
  // s[keep] is the first byte cut: when it continues a character, cut that
  // whole character.
  while (keep > 0 && (static_cast<unsigned char>((*s)[keep]) & 0xC0) == 0x80) {
    --keep;
  }
  s->resize(keep);
  s->append(marker.data(), marker.size());
}

absl::StatusOr<uint64_t> DecodeAuditKey(const rocksdb::Slice& key) {
  const std::string_view view(key.data(), key.size());
  if (view.size() != kAuditKeyBytes ||
      view.substr(0, sizeof(kAuditKeyPrefix) - 1) != kAuditKeyPrefix) {
    return absl::DataLossError(absl::StrCat(
        "default CF: a malformed audit key (", view.size(), " bytes)"));
  }
  return DecodeFixed64BE(view.substr(sizeof(kAuditKeyPrefix) - 1));
}

}  // namespace

std::string AuditKey(uint64_t seq) {
  return absl::StrCat(kAuditKeyPrefix, EncodeFixed64BE(seq));
}

std::string EncodeAuditMeta(const AuditMeta& meta) {
  return absl::StrCat(EncodeFixed64BE(meta.next_seq),
                      EncodeFixed64BE(meta.dropped_over_limit));
}

absl::StatusOr<AuditMeta> DecodeAuditMeta(std::string_view bytes) {
  if (bytes.size() != kAuditMetaBytes) {
    return absl::DataLossError(absl::StrCat("default CF: audit_meta is ",
                                            bytes.size(), " bytes, want 16"));
  }
  AuditMeta meta;
  meta.next_seq = DecodeFixed64BE(bytes.substr(0, 8));
  meta.dropped_over_limit = DecodeFixed64BE(bytes.substr(8, 8));
  if (meta.next_seq == 0) {
    return absl::DataLossError("default CF: audit_meta has next seq 0");
  }
  return meta;
}

bool TruncateAuditEntry(v1::AuditEntry* entry, size_t max_bytes) {
  if (entry->ByteSizeLong() <= max_bytes) return false;
  // The request first (the bulk of any large entry), then the status
  // message, then the rest.
  std::string* const fields[] = {
      entry->mutable_request_json(), entry->mutable_message(),
      entry->mutable_identity(),     entry->mutable_peer(),
      entry->mutable_method(),       entry->mutable_auth_method(),
  };
  for (std::string* field : fields) {
    const size_t size = entry->ByteSizeLong();
    if (size <= max_bytes) break;
    if (!field->empty()) CutString(field, size - max_bytes);
  }
  return true;
}

absl::Status AuditLog::Load(Database* db, const rocksdb::ReadOptions& options) {
  std::deque<std::pair<uint64_t, int64_t>> kept;
  SESSIOND_RETURN_IF_ERROR(ForEachAuditRecord(
      db, options, [&](uint64_t seq, std::string_view bytes) {
        v1::AuditEntry entry;
        if (!entry.ParseFromArray(bytes.data(),
                                  static_cast<int>(bytes.size())) ||
            entry.seq() != seq) {
          return absl::DataLossError(
              absl::StrCat("default CF: audit entry ", seq, " does not parse"));
        }
        kept.emplace_back(seq, entry.time_ms());
        return absl::OkStatus();
      }));
  SESSIOND_ASSIGN_OR_RETURN(std::optional<AuditMeta> meta,
                            ReadAuditMeta(db, options));
  if (!kept.empty() &&
      (!meta.has_value() || meta->next_seq <= kept.back().first)) {
    return absl::DataLossError(
        "default CF: audit_meta is missing or behind the audit entries");
  }
  Replace(std::move(kept), meta.value_or(AuditMeta{}));
  return absl::OkStatus();
}

uint64_t AuditLog::Append(v1::AuditEntry entry, int64_t now_ms,
                          int64_t retention_ms, uint32_t max_entries,
                          rocksdb::ColumnFamilyHandle* cf,
                          rocksdb::WriteBatch* batch) {
  absl::MutexLock lock(&mu_);
  const uint64_t seq = meta_.next_seq++;
  entry.set_seq(seq);
  entry.set_time_ms(now_ms);
  TruncateAuditEntry(&entry);
  batch->Put(cf, AuditKey(seq), entry.SerializeAsString());
  kept_.emplace_back(seq, now_ms);
  // Never the entry just added.
  DropLocked(now_ms, retention_ms, max_entries, /*keep=*/1, cf, batch);
  return seq;
}

uint64_t AuditLog::Trim(int64_t now_ms, int64_t retention_ms,
                        uint32_t max_entries, rocksdb::ColumnFamilyHandle* cf,
                        rocksdb::WriteBatch* batch) {
  absl::MutexLock lock(&mu_);
  return DropLocked(now_ms, retention_ms, max_entries, /*keep=*/0, cf, batch);
}

bool AuditLog::AnyOlderThan(int64_t now_ms, int64_t retention_ms) const {
  absl::MutexLock lock(&mu_);
  return retention_ms > 0 && !kept_.empty() &&
         kept_.front().second < now_ms - retention_ms;
}

uint64_t AuditLog::DropLocked(int64_t now_ms, int64_t retention_ms,
                              uint32_t max_entries, size_t keep,
                              rocksdb::ColumnFamilyHandle* cf,
                              rocksdb::WriteBatch* batch) {
  if (kept_.empty()) return 0;
  // What goes is always a prefix of kept_.
  const uint64_t first_seq = kept_.front().first;
  uint64_t last_dropped = 0;
  size_t dropped = 0;
  if (retention_ms > 0) {
    const int64_t cutoff = now_ms - retention_ms;  // now_ms >= 0: no overflow
    while (kept_.size() > keep && kept_.front().second < cutoff) {
      last_dropped = kept_.front().first;
      kept_.pop_front();
      ++dropped;
    }
  }
  const size_t max = max_entries > 0 ? max_entries : kDefaultAuditMaxEntries;
  while (kept_.size() > std::max(max, keep)) {
    last_dropped = kept_.front().first;
    kept_.pop_front();
    ++dropped;
    ++meta_.dropped_over_limit;
  }
  // [first_seq, last_dropped] covers exactly the dropped ones: every kept
  // seq is above last_dropped (and a seq in the range that was never kept
  // has no key to delete).
  if (dropped > 0 && last_dropped - first_seq >= kRangeDeleteFrom) {
    batch->DeleteRange(cf, AuditKey(first_seq), AuditKey(last_dropped + 1));
  } else if (dropped > 0) {
    for (uint64_t s = first_seq; s <= last_dropped; ++s) {
      batch->Delete(cf, AuditKey(s));
    }
  }
  batch->Put(cf, kAuditMetaKey, EncodeAuditMeta(meta_));
  return dropped;
}

void AuditLog::Replace(std::deque<std::pair<uint64_t, int64_t>> kept,
                       const AuditMeta& meta) {
  absl::MutexLock lock(&mu_);
  kept_ = std::move(kept);
  meta_ = meta;
  if (meta_.next_seq == 0) meta_.next_seq = 1;
  if (!kept_.empty() && meta_.next_seq <= kept_.back().first) {
    meta_.next_seq = kept_.back().first + 1;
  }
}

size_t AuditLog::size() const {
  absl::MutexLock lock(&mu_);
  return kept_.size();
}

AuditMeta AuditLog::meta() const {
  absl::MutexLock lock(&mu_);
  return meta_;
}

absl::Status ForEachAuditRecord(
    Database* db, const rocksdb::ReadOptions& options,
    const std::function<absl::Status(uint64_t, std::string_view)>& fn) {
  rocksdb::ReadOptions read = options;
  rocksdb::Slice upper(kAuditKeyEnd);
  read.iterate_upper_bound = &upper;
  std::unique_ptr<rocksdb::Iterator> it(
      db->db()->NewIterator(read, db->default_cf()));
  for (it->Seek(kAuditKeyPrefix); it->Valid(); it->Next()) {
    SESSIOND_ASSIGN_OR_RETURN(const uint64_t seq, DecodeAuditKey(it->key()));
    SESSIOND_RETURN_IF_ERROR(
        fn(seq, std::string_view(it->value().data(), it->value().size())));
  }
  return FromRocksStatus(it->status(), "scanning the audit entries");
}

absl::StatusOr<std::optional<AuditMeta>> ReadAuditMeta(
    Database* db, const rocksdb::ReadOptions& options) {
  SESSIOND_ASSIGN_OR_RETURN(std::optional<std::string> bytes,
                            db->Get(db->default_cf(), kAuditMetaKey, options));
  if (!bytes) return std::optional<AuditMeta>();
  SESSIOND_ASSIGN_OR_RETURN(AuditMeta meta, DecodeAuditMeta(*bytes));
  return std::optional<AuditMeta>(meta);
}

absl::StatusOr<v1::ListAuditResponse> ListAuditEntries(
    Database* db, const v1::ListAuditRequest& request) {
  ScopedDbSnapshot snapshot(db->db());
  rocksdb::ReadOptions read = snapshot.Options();
  const uint32_t limit = request.limit() == 0
                             ? kDefaultAuditListLimit
                             : std::min(request.limit(), kMaxAuditListLimit);
  v1::ListAuditResponse response;
  SESSIOND_ASSIGN_OR_RETURN(std::optional<AuditMeta> meta,
                            ReadAuditMeta(db, read));
  if (meta) response.set_dropped_over_limit(meta->dropped_over_limit);

  rocksdb::Slice upper(kAuditKeyEnd);
  read.iterate_upper_bound = &upper;
  std::unique_ptr<rocksdb::Iterator> it(
      db->db()->NewIterator(read, db->default_cf()));
  it->Seek(kAuditKeyPrefix);
  if (it->Valid()) {
    SESSIOND_ASSIGN_OR_RETURN(const uint64_t oldest, DecodeAuditKey(it->key()));
    response.set_oldest_seq(oldest);
  }
  if (request.after_seq() != std::numeric_limits<uint64_t>::max()) {
    if (request.after_seq() >= response.oldest_seq()) {
      it->Seek(AuditKey(request.after_seq() + 1));
    }
    uint64_t last = 0;
    size_t page_bytes = 0;
    for (; it->Valid(); it->Next()) {
      if (static_cast<uint32_t>(response.entries_size()) == limit ||
          (response.entries_size() > 0 &&
           page_bytes + it->value().size() > kMaxAuditListBytes)) {
        response.set_next_after_seq(last);
        break;
      }
      page_bytes += it->value().size();
      SESSIOND_ASSIGN_OR_RETURN(last, DecodeAuditKey(it->key()));
      v1::AuditEntry* entry = response.add_entries();
      if (!entry->ParseFromArray(it->value().data(),
                                 static_cast<int>(it->value().size()))) {
        return absl::DataLossError(
            absl::StrCat("default CF: audit entry ", last, " does not parse"));
      }
    }
  }
  SESSIOND_RETURN_IF_ERROR(
      FromRocksStatus(it->status(), "scanning the audit entries"));
  return response;
}

}  // namespace sessiond::storage
