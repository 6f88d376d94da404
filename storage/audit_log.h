// Copyright sessiond authors. Licensed under the Apache License 2.0.
//
// The replicated audit log (AdminService.ListAudit, docs/OPERATIONS.md,
// "Audit"): every audited call becomes an AuditCommand in the Raft log; at
// application the state machine gives its entry the next seq and the applied
// time and writes it in the same WriteBatch as everything else the entry
// changes. Every replica therefore holds the same entries under the same
// seqs, and drops the same ones (by age, and the oldest beyond a count),
// since both limits travel in the command and the time is cluster time.
//
// Keys in the default CF (written in the state machine's apply batch):
//   "audit/" + 8-byte big-endian seq -> a serialized sessiond.v1.AuditEntry
//                                        (seq order is log order)
//   "audit_meta"                      -> 16 bytes: the next seq to assign,
//                                        then dropped_over_limit, each 8-byte
//                                        big-endian. Absent until the first
//                                        entry is applied (next seq 1).
// ("audit_meta" sorts after every "audit/" key: '_' > '/'.)
//
// Invariants: seqs start at 1 and increase by one per applied entry, never
// reused, also across drops; the kept entries are a contiguous run of seqs
// ending at next seq - 1 (or none); their time_ms never decreases with seq
// (it is the applied time, which never goes back).
//
// Memory: the entries themselves stay in RocksDB (read back to list them);
// in memory only (seq, time_ms) of each kept entry, which is all the apply
// loop needs to decide what to drop without reading RocksDB: 16 bytes (plus
// deque overhead) per entry, ~2 MB at the default 100 000 entries.
#ifndef SESSIOND_STORAGE_AUDIT_LOG_H_
#define SESSIOND_STORAGE_AUDIT_LOG_H_

#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "rocksdb/options.h"
#include "rocksdb/write_batch.h"
#include "sessiond/v1/admin.pb.h"
#include "storage/database.h"

namespace sessiond::storage {

// Used when a command carries max_entries 0.
inline constexpr uint32_t kDefaultAuditMaxEntries = 100'000;
// The most one entry takes serialized. A larger one has its request_json
// cut (then its message, then its other strings) and marked
// kAuditTruncatedMarker, at a UTF-8 character boundary.
inline constexpr size_t kMaxAuditEntryBytes = 16 * 1024;
inline constexpr char kAuditTruncatedMarker[] = "...(truncated)";
// ListAudit: limit 0 lists kDefaultAuditListLimit, more than
// kMaxAuditListLimit is cut to it.
inline constexpr uint32_t kDefaultAuditListLimit = 1000;
inline constexpr uint32_t kMaxAuditListLimit = 10'000;
// A page also ends before its entries pass this many bytes (at least one
// entry per page): 10,000 entries of up to kMaxAuditEntryBytes each would
// be 160 MiB, past gRPC's default 4 MiB receive limit, and an export
// stuck at such a stretch of the log could never get past it.
inline constexpr size_t kMaxAuditListBytes = 2 * 1024 * 1024;

inline constexpr char kAuditKeyPrefix[] = "audit/";
// Just past every such key ('0' follows '/').
inline constexpr char kAuditKeyEnd[] = "audit0";
inline constexpr char kAuditMetaKey[] = "audit_meta";
// "audit/" + 8-byte big-endian seq.
std::string AuditKey(uint64_t seq);

// What "audit_meta" holds.
struct AuditMeta {
  uint64_t next_seq = 1;
  uint64_t dropped_over_limit = 0;
};
std::string EncodeAuditMeta(const AuditMeta& meta);
// DataLoss when `bytes` is not 16 bytes or next_seq is 0.
absl::StatusOr<AuditMeta> DecodeAuditMeta(std::string_view bytes);

// Cuts `entry` to at most `max_bytes` serialized, as kMaxAuditEntryBytes
// says; returns whether it changed anything. Deterministic (the state
// machine applies it to every entry; a proposer may apply it first to keep
// its log entry small, which changes nothing at application).
// REQUIRES: max_bytes leaves room for the entry's non-string fields (a
// few dozen bytes).
bool TruncateAuditEntry(sessiond::v1::AuditEntry* entry,
                        size_t max_bytes = kMaxAuditEntryBytes);

// The kept entries' (seq, time_ms), the next seq and the count of entries
// dropped over the limit: what applying an AuditCommand needs. Written by
// the state machine's apply thread only (Append, Replace, Load at Open);
// size() and the accessors may be called from any thread. Thread-safe.
class AuditLog {
 public:
  // Reads the kept entries and the meta record from `db` as of `options`
  // (Open). DataLoss on an entry that does not parse, a malformed key or
  // meta, or seqs not increasing.
  absl::Status Load(Database* db, const rocksdb::ReadOptions& options);

  // Applies one entry at applied time `now_ms`: sets its seq (the next) and
  // time_ms (now_ms), truncates it (TruncateAuditEntry), puts it into
  // `batch`; then drops the entries with time_ms < now_ms - retention_ms
  // (when retention_ms > 0) and the oldest while more than max_entries (0:
  // kDefaultAuditMaxEntries) are kept, counting the latter in
  // dropped_over_limit; deletes what it dropped and puts the meta record.
  // The new entry itself is never dropped. Returns its seq.
  uint64_t Append(sessiond::v1::AuditEntry entry, int64_t now_ms,
                  int64_t retention_ms, uint32_t max_entries,
                  rocksdb::ColumnFamilyHandle* cf, rocksdb::WriteBatch* batch);
  // The same drops without an entry (an AuditCommand with none: the
  // leader's sweeper trims what aged out on a cluster with no new admin
  // calls); every entry may go. Returns how many were dropped.
  uint64_t Trim(int64_t now_ms, int64_t retention_ms, uint32_t max_entries,
                rocksdb::ColumnFamilyHandle* cf, rocksdb::WriteBatch* batch);
  // Whether Trim at `now_ms` would drop an entry by age.
  bool AnyOlderThan(int64_t now_ms, int64_t retention_ms) const;

  // Replaces everything (ApplySnapshot). `kept` is (seq, time_ms) in seq
  // order.
  void Replace(std::deque<std::pair<uint64_t, int64_t>> kept,
               const AuditMeta& meta);

  size_t size() const;
  AuditMeta meta() const;

 private:
  // Drops by age and count, keeping at least `keep` entries, and writes the
  // deletes and the meta record to `batch`. Returns how many it dropped.
  uint64_t DropLocked(int64_t now_ms, int64_t retention_ms,
                      uint32_t max_entries, size_t keep,
                      rocksdb::ColumnFamilyHandle* cf,
                      rocksdb::WriteBatch* batch)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  mutable absl::Mutex mu_;
  // (seq, time_ms) of each kept entry, in seq order.
  std::deque<std::pair<uint64_t, int64_t>> kept_ ABSL_GUARDED_BY(mu_);
  AuditMeta meta_ ABSL_GUARDED_BY(mu_);
};

// Calls fn(seq, serialized entry) for every kept entry as of `options`, in
// seq order. DataLoss on a malformed key; fn's error stops the scan.
absl::Status ForEachAuditRecord(
    Database* db, const rocksdb::ReadOptions& options,
    const std::function<absl::Status(uint64_t, std::string_view)>& fn);

// The meta record as of `options`; nullopt when absent (no entry applied).
absl::StatusOr<std::optional<AuditMeta>> ReadAuditMeta(
    Database* db, const rocksdb::ReadOptions& options);

// One page of the audit log, read from a consistent RocksDB snapshot of
// `db` (any thread): the entries with seq > request.after_seq, at most
// request.limit (ListAuditRequest's defaults and cap); next_after_seq the
// last one's seq when more remain, else 0; oldest_seq the first kept seq
// (0: none); dropped_over_limit. DataLoss on a stored entry that does not
// parse.
absl::StatusOr<sessiond::v1::ListAuditResponse> ListAuditEntries(
    Database* db, const sessiond::v1::ListAuditRequest& request);

}  // namespace sessiond::storage

#endif  // SESSIOND_STORAGE_AUDIT_LOG_H_
