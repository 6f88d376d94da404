// Copyright sessiond authors. Licensed under the Apache License 2.0.
#ifndef SESSIOND_STORAGE_DATABASE_H_
#define SESSIOND_STORAGE_DATABASE_H_

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "rocksdb/db.h"
#include "rocksdb/env.h"
#include "rocksdb/write_batch.h"

namespace sessiond::storage {

struct DatabaseOptions {
  // Create the data dir and the column families when missing. When false, a
  // dir without a sessiond database is NotFound.
  bool create_if_missing = true;
  // Shared LRU block cache for all column families. Small on purpose: the
  // session table in memory is the read cache; RocksDB is read only at
  // start and by Raft for entries not yet applied.
  uint64_t block_cache_bytes = 8ull << 20;
  // Memtable size of the sessions CF (its memory counts in the daemon's RSS).
  uint64_t sessions_write_buffer_bytes = 8ull << 20;
  // Memtable size of the raft_log CF. Entries are applied (and read back)
  // soon after they are written, so a small memtable still serves them.
  uint64_t raft_log_write_buffer_bytes = 8ull << 20;
  // Cap on all memtables together (RocksDB WriteBufferManager): memory the
  // daemon uses for RocksDB stays bounded however many sessions it holds.
  uint64_t memtable_budget_bytes = 32ull << 20;
  // Background flush and compaction threads.
  int background_jobs = 2;
  // Test seam: the Env RocksDB reaches files through (a power-cut model in
  // tests/storage/power_cut_fs.h, via rocksdb::NewCompositeEnv). Null, the
  // production value, is RocksDB's default Env. The Database keeps a
  // reference, so the Env outlives it.
  std::shared_ptr<rocksdb::Env> env;
};

// The RocksDB database of one data dir, with sessiond's column families
// (storage/keys.h). Owned by the daemon; RaftLogStore and SessionStateMachine
// keep a Database* that must outlive them.
//
// Thread-safe: rocksdb::DB is, and the handles are immutable after Open().
class Database {
 public:
  // Opens (or, with create_if_missing, creates) the database in `dir`.
  // Errors:
  //   FailedPrecondition  the dir is in use by another sessiond (RocksDB's
  //                       LOCK is held), or has an unknown format version
  //   DataLoss            the dir is corrupt (RocksDB reported Corruption)
  //   NotFound            no database and !create_if_missing
  //   ResourceExhausted   its file system has no room for RocksDB to open
  //   Internal            any other RocksDB or file system error
  static absl::StatusOr<std::unique_ptr<Database>> Open(
      const std::string& dir, const DatabaseOptions& options);

  // Flushes the memtables and closes RocksDB (releasing the LOCK).
  ~Database();

  Database(const Database&) = delete;
  Database& operator=(const Database&) = delete;

  const std::string& dir() const { return dir_; }
  rocksdb::DB* db() const { return db_.get(); }
  rocksdb::ColumnFamilyHandle* default_cf() const { return default_cf_; }
  rocksdb::ColumnFamilyHandle* raft_log_cf() const { return raft_log_cf_; }
  rocksdb::ColumnFamilyHandle* raft_state_cf() const { return raft_state_cf_; }
  // Scanned only: its memtable is a vector (database.cc), so a Get on it
  // walks the whole memtable.
  rocksdb::ColumnFamilyHandle* sessions_cf() const { return sessions_cf_; }

  // The value of `key` in `cf`; nullopt when absent. `options` may name a
  // RocksDB snapshot.
  absl::StatusOr<std::optional<std::string>> Get(
      rocksdb::ColumnFamilyHandle* cf, std::string_view key,
      const rocksdb::ReadOptions& options = rocksdb::ReadOptions()) const;

  // Writes `batch`; `sync` makes it durable (fsync of the WAL) on return.
  // A failed write (a full disk) is not retried here; RocksDB then refuses
  // every write until its background error is cleared, which the next
  // Write or WriteWithoutWal tries first (DB::Resume). The caller decides
  // when to retry.
  //
  // Once the WAL itself failed (wal_failure()), every later Write fails at
  // once with that error, without reaching RocksDB.
  absl::Status Write(rocksdb::WriteBatch* batch, bool sync);
  // Writes `batch` to the memtables only: it reaches the disk at the next
  // flush (all column families flush together, atomic_flush), and a crash
  // before that loses it whole. For state the Raft log can rebuild. A batch
  // larger than a memtable (a flush or restore of many sessions) schedules
  // that flush at once, so its memory is given back without waiting for
  // another write.
  absl::Status WriteWithoutWal(rocksdb::WriteBatch* batch);

  // OK until an append to RocksDB's write-ahead log failed (a disk that
  // filled, an I/O error); that error from then on. RocksDB 7.8 cannot go on
  // with such a log: when it resumes it keeps appending to the same writer,
  // whose next append asserts (Debian's librocksdb keeps asserts) or fails
  // for good. So nothing is appended to it again; reopening the database (a
  // restart of the node) is the way back.
  absl::Status wal_failure() const;

  // A run of failed writes: every Write and WriteWithoutWal since
  // `first_failed` failed, `latest` last (steady clock). RocksDB 7.8's own
  // recovery after a failed flush can hang for good, and every write then
  // fails with its background error until the database is reopened
  // (server/daemon.cc, RestartIfWritesStuck, tells that from a disk that
  // is still full).
  struct FailingWrites {
    absl::Status latest_error;
    std::chrono::steady_clock::time_point first_failed;
    std::chrono::steady_clock::time_point latest_failed;
  };
  // The current run; nullopt while the latest write succeeded (or none
  // failed).
  std::optional<FailingWrites> failing_writes() const;

  // Flushes all memtables to SST files and waits for it. Used at shutdown
  // and by tests; not needed for durability (the WAL already has the data).
  absl::Status Flush();

  // A consistent copy of the whole database in `dir` (which must not exist;
  // its parent must), made with rocksdb::Checkpoint: the memtables are
  // flushed (all column families together), then SST files are hard-linked
  // where the file system allows it, copied otherwise. Writes go on
  // meanwhile. The copy opens as a Database of its own.
  absl::Status Checkpoint(const std::string& dir);

 private:
  // After a write failed: clears RocksDB's background error so this write
  // may succeed. A no-op when no write failed.
  void ResumeAfterFailedWrite();
  absl::Status Checked(const rocksdb::Status& status, std::string_view context);
  // db_->Write, unless the fault point storage.write_jams has failed in this
  // Database: then every write fails as after RocksDB's recovery hung.
  rocksdb::Status WriteToRocksDb(const rocksdb::WriteOptions& options,
                                 rocksdb::WriteBatch* batch);
  // Schedules a flush of every memtable when `batch`, just written, filled
  // one by itself (large_write_bytes_).
  void FlushAfterLargeWrite(const rocksdb::WriteBatch& batch);

  Database(std::string dir, std::shared_ptr<rocksdb::Env> env,
           uint64_t large_write_bytes, std::unique_ptr<rocksdb::DB> db,
           std::vector<rocksdb::ColumnFamilyHandle*> handles);

  const std::string dir_;
  // Null in production; declared before db_ so it is destroyed after it.
  const std::shared_ptr<rocksdb::Env> env_;
  // The smaller memtable size of the sessions and raft_log column families.
  const uint64_t large_write_bytes_;
  std::unique_ptr<rocksdb::DB> db_;
  std::vector<rocksdb::ColumnFamilyHandle*> handles_;  // owned; closed in ~
  rocksdb::ColumnFamilyHandle* default_cf_ = nullptr;
  rocksdb::ColumnFamilyHandle* raft_log_cf_ = nullptr;
  rocksdb::ColumnFamilyHandle* raft_state_cf_ = nullptr;
  rocksdb::ColumnFamilyHandle* sessions_cf_ = nullptr;
  std::atomic<bool> write_failed_{false};
  // Set by the fault point storage.write_jams (tests); never cleared.
  std::atomic<bool> injected_jam_{false};
  // Whether failing_ holds a run (read without the lock on each success).
  std::atomic<bool> failing_now_{false};
  mutable absl::Mutex failing_mu_;
  std::optional<FailingWrites> failing_ ABSL_GUARDED_BY(failing_mu_);
  mutable absl::Mutex wal_mu_;
  absl::Status wal_failure_ ABSL_GUARDED_BY(wal_mu_);
};

// A consistent view of the database while it lives: reads through its
// Options() all see one moment (RocksDB's GetSnapshot), released at the end
// of the scope. Not a Raft snapshot.
class ScopedDbSnapshot {
 public:
  explicit ScopedDbSnapshot(rocksdb::DB* db)
      : db_(db), snapshot_(db->GetSnapshot()) {}
  ~ScopedDbSnapshot() { db_->ReleaseSnapshot(snapshot_); }
  ScopedDbSnapshot(const ScopedDbSnapshot&) = delete;
  ScopedDbSnapshot& operator=(const ScopedDbSnapshot&) = delete;

  // Reads at this view that do not fill the block cache (scans).
  rocksdb::ReadOptions Options() const {
    rocksdb::ReadOptions options;
    options.snapshot = snapshot_;
    options.fill_cache = false;
    return options;
  }

 private:
  rocksdb::DB* const db_;
  const rocksdb::Snapshot* const snapshot_;
};

// Converts a RocksDB status to an absl::Status; `context` prefixes the
// message. Corruption -> DataLoss, NotFound -> NotFound, Busy/TryAgain ->
// Unavailable, everything else -> Internal.
absl::Status FromRocksStatus(const rocksdb::Status& status,
                             std::string_view context);

}  // namespace sessiond::storage

#endif  // SESSIOND_STORAGE_DATABASE_H_
