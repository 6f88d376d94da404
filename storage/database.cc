// Copyright sessiond authors. Licensed under the Apache License 2.0.
#include "storage/database.h"

#include <algorithm>
#include <filesystem>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/fault_point.h"
#include "common/log.h"
#include "rocksdb/cache.h"
#include "rocksdb/db.h"
#include "rocksdb/filter_policy.h"
#include "rocksdb/memtablerep.h"
#include "rocksdb/options.h"
#include "rocksdb/sst_file_manager.h"
#include "rocksdb/table.h"
#include "rocksdb/utilities/checkpoint.h"
#include "rocksdb/write_buffer_manager.h"
#include "storage/disk_guard.h"
#include "storage/durable_file.h"
#include "storage/keys.h"
#include "storage/rocksdb_info_log.h"

namespace sessiond::storage {

absl::Status FromRocksStatus(const rocksdb::Status& status,
                             std::string_view context) {
  if (status.ok()) return absl::OkStatus();
  const std::string message =
      absl::StrCat(absl::string_view(context.data(), context.size()), ": ",
                   status.ToString());
  if (status.IsCorruption()) return absl::DataLossError(message);
  if (status.IsNotFound()) return absl::NotFoundError(message);
  if (status.IsBusy() || status.IsTryAgain()) {
    return absl::UnavailableError(message);
  }
  return absl::InternalError(message);
}

namespace {

// Whether a RocksDB error names a write-ahead log file ("<dir>/000014.log"):
// its failure, or the background error it left.
bool NamesWalFile(std::string_view message) {
  for (size_t at = message.find(".log"); at != std::string_view::npos;
       at = message.find(".log", at + 1)) {
    size_t digits = 0;
    while (digits < at && absl::ascii_isdigit(message[at - digits - 1])) {
      ++digits;
    }
    if (digits >= 6 && digits < at && message[at - digits - 1] == '/') {
      return true;
    }
  }
  return false;
}

bool IsLockError(const rocksdb::Status& status) {
  // RocksDB reports a held LOCK as an IOError: "While lock file: <dir>/LOCK:
  // Resource temporarily unavailable" from another process, "lock hold by
  // current process" from this one.
  const std::string text = status.ToString();
  return status.IsIOError() &&
         (absl::StrContains(text, "/LOCK") ||
          absl::StrContains(text, "lock hold by current process"));
}

rocksdb::ColumnFamilyOptions CfOptions(
    const DatabaseOptions& options, uint64_t write_buffer_bytes,
    const std::shared_ptr<rocksdb::Cache>& cache, bool point_lookups) {
  rocksdb::ColumnFamilyOptions cf;
  cf.write_buffer_size = write_buffer_bytes;
  cf.max_write_buffer_number = 2;
  rocksdb::BlockBasedTableOptions table;
  table.block_cache = cache;
  table.block_size = 16 << 10;
  if (point_lookups) {
    table.filter_policy.reset(rocksdb::NewBloomFilterPolicy(10));
  }
  cf.table_factory.reset(rocksdb::NewBlockBasedTableFactory(table));
  // Session attributes are often random bytes and Raft entries are read
  // back soon after being written: compression buys little, costs CPU on the
  // start-up scan.
  cf.compression = rocksdb::kNoCompression;
  return cf;
}

// The sessions column family is never read by key: it is scanned in key order
// (the load at start, snapshots, backups, digests) and written at random keys
// (token hashes) by the apply thread. A vector memtable takes each write as
// an append and sorts once, at flush, on a background thread; a skip list
// paid a cache-missing descent per write on the apply thread (15% of that
// thread's CPU under creates, docs/PERFORMANCE.md). Without point reads a
// bloom filter is only flush and compaction work.
rocksdb::ColumnFamilyOptions SessionsCfOptions(
    const DatabaseOptions& options,
    const std::shared_ptr<rocksdb::Cache>& cache) {
  rocksdb::ColumnFamilyOptions cf =
      CfOptions(options, options.sessions_write_buffer_bytes, cache,
                /*point_lookups=*/false);
  cf.memtable_factory = std::make_shared<rocksdb::VectorRepFactory>();
  return cf;
}

// Files RocksDB may leave in a directory it was creating a database in when
// the process died before CURRENT was written.
bool IsRocksDbLeftover(const std::string& name) {
  return name == "LOCK" || name == DiskGuard::kReserveFileName ||
         name == "IDENTITY" || name == "LOG" ||
         absl::StartsWith(name, "LOG.old.") ||
         absl::StartsWith(name, "MANIFEST-") ||
         absl::StartsWith(name, "OPTIONS-") || absl::EndsWith(name, ".log") ||
         absl::EndsWith(name, ".sst") || absl::EndsWith(name, ".dbtmp");
}

// A data dir is taken only when it is new, empty, or sessiond's own: never a
// directory of unrelated files (a typo in --data_dir must not write a
// database into someone's home) nor another program's RocksDB.
absl::Status CheckDataDirIsOurs(const std::string& dir) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (!fs::exists(dir, ec)) return absl::OkStatus();
  if (!fs::is_directory(dir, ec)) {
    return absl::FailedPreconditionError(
        absl::StrCat("data dir ", dir,
                     " exists and is not a directory; choose another "
                     "--data_dir"));
  }
  if (fs::exists(dir + "/CURRENT", ec)) {
    std::vector<std::string> families;
    rocksdb::Status s =
        rocksdb::DB::ListColumnFamilies(rocksdb::DBOptions(), dir, &families);
    // An unreadable MANIFEST is Open's to report (DATA_LOSS).
    if (!s.ok()) return absl::OkStatus();
    for (const std::string& family : families) {
      if (family == kRaftLogCf) return absl::OkStatus();
    }
    // A garbage MANIFEST can still list just "default": only a database
    // RocksDB really opens is another program's; a corrupt one is ours to
    // report as DATA_LOSS.
    rocksdb::DB* readonly = nullptr;
    if (!rocksdb::DB::OpenForReadOnly(rocksdb::Options(), dir, &readonly)
             .ok()) {
      return absl::OkStatus();
    }
    // An empty one is ours, cut off by a power loss while it was being
    // created (the power-loss test found it): nothing to take over.
    std::unique_ptr<rocksdb::Iterator> it(
        readonly->NewIterator(rocksdb::ReadOptions()));
    it->SeekToFirst();
    const bool empty = !it->Valid();
    it.reset();
    delete readonly;
    if (empty) return absl::OkStatus();
    return absl::FailedPreconditionError(absl::StrCat(
        "data dir ", dir,
        " holds a RocksDB database that is not sessiond's (no '", kRaftLogCf,
        "' column family); refusing to write into it: choose an empty or new "
        "--data_dir"));
  }
  std::vector<std::string> foreign;
  for (const fs::directory_entry& entry : fs::directory_iterator(dir, ec)) {
    const std::string name = entry.path().filename().string();
    // The root of a freshly made filesystem.
    if (name == "lost+found") continue;
    if (!IsRocksDbLeftover(name)) foreign.push_back(name);
  }
  if (ec) {
    return absl::InternalError(
        absl::StrCat("cannot list data dir ", dir, ": ", ec.message()));
  }
  if (foreign.empty()) return absl::OkStatus();
  std::sort(foreign.begin(), foreign.end());
  if (foreign.size() > 3) {
    foreign.resize(3);
    foreign.push_back("...");
  }
  return absl::FailedPreconditionError(absl::StrCat(
      "data dir ", dir, " is not empty and is not a sessiond data dir (holds ",
      absl::StrJoin(foreign, ", "),
      "); refusing to take it over: choose an empty or new --data_dir"));
}

// Creates the data dir `dir` and whichever of its ancestors are missing,
// outermost first, and fsyncs each new folder's parent right after making
// it, through `rocks_fs` (RocksDB's file system: the tests' fault injection
// sees the syncs). RocksDB fsyncs its files and the data dir itself, never
// the data dir's entry in its parent: without these syncs a power cut soon
// after a new node's first acknowledged writes could lose the whole data
// dir, and the node would come back as a new, empty one. Syncing right after
// each creation keeps what is durable a chain hanging from an existing
// folder; all syncs happen before RocksDB opens, so before anything is
// acknowledged. A data dir that exists but holds no database yet has its
// parent synced too: someone else made it (systemd's StateDirectory=, an
// operator's mkdir), and nothing says its entry is durable.
absl::Status CreateDataDir(const std::string& dir,
                           rocksdb::FileSystem* rocks_fs) {
  namespace fs = std::filesystem;
  fs::path target(dir);
  // "/a/b/" names "/a/b": its parent is "/a", not "/a/b".
  while (!target.has_filename() && target.has_relative_path()) {
    target = target.parent_path();
  }
  std::error_code ec;
  std::vector<fs::path> missing;  // innermost first
  for (fs::path p = target; !p.empty(); p = p.parent_path()) {
    const bool exists = fs::exists(p, ec);
    if (ec) {
      return absl::InternalError(absl::StrCat("cannot create data dir ", dir,
                                              ": cannot look at ", p.string(),
                                              ": ", ec.message()));
    }
    if (exists || p == p.parent_path()) break;
    missing.push_back(p);
  }
  if (missing.empty()) {
    // A database already in it was created by an earlier Open, which synced
    // this entry first.
    if (fs::exists(target / "CURRENT", ec) || ec) return absl::OkStatus();
    const std::string parent = target.parent_path().string();
    absl::Status synced = SyncDir(parent.empty() ? "." : parent, rocks_fs);
    if (synced.ok()) return absl::OkStatus();
    return absl::InternalError(
        absl::StrCat("new data dir ", dir, " might not survive a power cut: ",
                     synced.message(), "; check the disk (dmesg) and restart"));
  }
  std::vector<fs::path> created;
  for (auto it = missing.rbegin(); it != missing.rend(); ++it) {
    // False without an error when another process made it meanwhile: then
    // it is not ours to remove, but its entry is synced all the same.
    if (fs::create_directory(*it, ec)) created.push_back(*it);
    if (ec) {
      return absl::InternalError(absl::StrCat("cannot create data dir ", dir,
                                              ": ", it->string(), ": ",
                                              ec.message()));
    }
    const std::string parent = it->parent_path().string();
    absl::Status synced = SyncDir(parent.empty() ? "." : parent, rocks_fs);
    if (synced.ok()) continue;
    // A later start would find the folders there and sync the data dir's
    // entry only: remove the (empty) ones made here, so that it makes and
    // syncs them all anew.
    bool removed = true;
    for (auto c = created.rbegin(); c != created.rend(); ++c) {
      fs::remove(*c, ec);
      if (ec) removed = false;
    }
    return absl::InternalError(absl::StrCat(
        "new data dir ", dir, " might not survive a power cut: ",
        synced.message(), "; check the disk (dmesg) and restart",
        removed ? ""
                : absl::StrCat(" (and remove ", created.front().string(),
                               " by hand first: it could not be removed, and "
                               "a restart that finds it would not sync it)")));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<Database>> Database::Open(
    const std::string& dir, const DatabaseOptions& options) {
  std::error_code ec;
  if (options.create_if_missing) {
    if (absl::Status s = CheckDataDirIsOurs(dir); !s.ok()) return s;
    rocksdb::FileSystem* const fs = options.env != nullptr
                                        ? options.env->GetFileSystem().get()
                                        : rocksdb::FileSystem::Default().get();
    if (absl::Status s = CreateDataDir(dir, fs); !s.ok()) return s;
  } else if (!std::filesystem::exists(dir + "/CURRENT", ec)) {
    return absl::NotFoundError(
        absl::StrCat("no sessiond database in data dir ", dir));
  }

  rocksdb::DBOptions db_options;
  db_options.create_if_missing = options.create_if_missing;
  db_options.create_missing_column_families = options.create_if_missing;
  db_options.max_background_jobs = options.background_jobs;
  db_options.paranoid_checks = true;
  db_options.write_buffer_manager =
      std::make_shared<rocksdb::WriteBufferManager>(
          options.memtable_budget_bytes);
  // The info LOG is for post-mortems (its warnings and errors also reach
  // sessiond's own log): small, and never able to stop the node when the
  // disk is full (storage/rocksdb_info_log.h).
  absl::StatusOr<std::shared_ptr<RocksInfoLog>> info_log =
      RocksInfoLog::Open(dir, RocksInfoLog::Options());
  if (!info_log.ok()) return info_log.status();
  db_options.info_log = *std::move(info_log);
  // A crash may leave a torn record at the WAL's tail (never synced, so never
  // acknowledged); anything else is corruption.
  db_options.wal_recovery_mode =
      rocksdb::WALRecoveryMode::kTolerateCorruptedTailRecords;
  // The applied state is written without the WAL (the Raft log replays it);
  // its column families must then reach the disk together, so that the
  // applied index never runs ahead of, or behind, the sessions it covers.
  db_options.atomic_flush = true;
  // A vector memtable (the sessions column family) needs it. Little is lost:
  // that concurrency is among the writes of one write group, and the two busy
  // writers' writes are not grouped together (the log writer's use the WAL,
  // the apply thread's do not).
  db_options.allow_concurrent_memtable_write = false;
  // Recovery replays the WAL into the memtables without writing SST files
  // at open: a node restarted on a full disk still opens (and serves
  // reads); the data reaches SST files at the next flush.
  db_options.avoid_flush_during_recovery = true;
  if (options.env != nullptr) db_options.env = options.env.get();
  // Tracks SST files, so that RocksDB recovers by itself from a flush or
  // compaction that failed for lack of space once space is back (the
  // storage/disk_guard.h reserve makes that rare).
  db_options.sst_file_manager.reset(rocksdb::NewSstFileManager(
      db_options.env != nullptr ? db_options.env : rocksdb::Env::Default()));

  std::shared_ptr<rocksdb::Cache> cache =
      rocksdb::NewLRUCache(options.block_cache_bytes);
  std::vector<rocksdb::ColumnFamilyDescriptor> descriptors = {
      {kDefaultCf, CfOptions(options, 1 << 20, cache, true)},
      {kRaftLogCf,
       CfOptions(options, options.raft_log_write_buffer_bytes, cache, false)},
      {kRaftStateCf, CfOptions(options, 1 << 20, cache, true)},
      {kSessionsCf, SessionsCfOptions(options, cache)},
  };

  rocksdb::DB* raw_db = nullptr;
  std::vector<rocksdb::ColumnFamilyHandle*> handles;
  rocksdb::Status s =
      rocksdb::DB::Open(db_options, dir, descriptors, &handles, &raw_db);
  if (!s.ok()) {
    if (IsLockError(s)) {
      return absl::FailedPreconditionError(absl::StrCat(
          "data dir ", dir,
          " is in use by another sessiond (RocksDB LOCK held); stop it or "
          "choose another --data_dir (",
          s.ToString(), ")"));
    }
    if (s.IsCorruption()) {
      return absl::DataLossError(
          absl::StrCat("data dir ", dir, " is corrupt: ", s.ToString(),
                       "; refusing to start: restore it from a backup (see "
                       "docs/OPERATIONS.md, Backups and restore)"));
    }
    if (s.IsNoSpace() || absl::StrContains(s.ToString(), "No space left")) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "cannot open data dir ", dir,
          ": its file system is full (RocksDB needs a few KiB to open: ",
          s.ToString(),
          "); free space on that file system, then start sessiond again"));
    }
    if (s.IsInvalidArgument() &&
        absl::StrContains(s.ToString(), "does not exist")) {
      return absl::NotFoundError(absl::StrCat(
          "no sessiond database in data dir ", dir, ": ", s.ToString()));
    }
    return absl::InternalError(
        absl::StrCat("cannot open data dir ", dir, ": ", s.ToString()));
  }
  std::unique_ptr<Database> db(
      new Database(dir, options.env,
                   std::min(options.sessions_write_buffer_bytes,
                            options.raft_log_write_buffer_bytes),
                   std::unique_ptr<rocksdb::DB>(raw_db), handles));

  // The format version: written on creation, checked on every open.
  std::string version;
  s = raw_db->Get(rocksdb::ReadOptions(), db->default_cf_, kFormatVersionKey,
                  &version);
  if (s.IsNotFound()) {
    rocksdb::WriteOptions write_options;
    write_options.sync = true;
    s = raw_db->Put(write_options, db->default_cf_, kFormatVersionKey,
                    std::to_string(kFormatVersion));
    if (!s.ok()) return FromRocksStatus(s, "writing the format version");
  } else if (!s.ok()) {
    if (s.IsCorruption()) {
      return absl::DataLossError(
          absl::StrCat("data dir ", dir, " is corrupt: ", s.ToString(),
                       "; refusing to start: restore it from a backup (see "
                       "docs/OPERATIONS.md, Backups and restore)"));
    }
    return FromRocksStatus(s, "reading the format version");
  } else {
    int parsed = 0;
    if (!absl::SimpleAtoi(version, &parsed) || parsed != kFormatVersion) {
      return absl::FailedPreconditionError(
          absl::StrCat("data dir ", dir, " has format version '", version,
                       "'; this sessiond reads version ", kFormatVersion));
    }
  }
  return db;
}

Database::Database(std::string dir, std::shared_ptr<rocksdb::Env> env,
                   uint64_t large_write_bytes, std::unique_ptr<rocksdb::DB> db,
                   std::vector<rocksdb::ColumnFamilyHandle*> handles)
    : dir_(std::move(dir)),
      env_(std::move(env)),
      large_write_bytes_(large_write_bytes),
      db_(std::move(db)),
      handles_(std::move(handles)) {
  for (rocksdb::ColumnFamilyHandle* handle : handles_) {
    const std::string& name = handle->GetName();
    if (name == kDefaultCf) default_cf_ = handle;
    if (name == kRaftLogCf) raft_log_cf_ = handle;
    if (name == kRaftStateCf) raft_state_cf_ = handle;
    if (name == kSessionsCf) sessions_cf_ = handle;
  }
}

Database::~Database() {
  if (db_ == nullptr) return;
  // Flushing makes the next start read SST files instead of replaying the
  // WAL: faster, and the WAL can be dropped. Errors are not fatal here: the
  // WAL still has everything.
  (void)Flush();
  for (rocksdb::ColumnFamilyHandle* handle : handles_) {
    (void)db_->DestroyColumnFamilyHandle(handle);
  }
  handles_.clear();
  // Tests stall here as RocksDB 7.8's Close can hang for good
  // (server/stop_watchdog.h).
  SESSIOND_FAULT_POINT("storage.close");
  (void)db_->Close();
  db_.reset();
}

absl::Status Database::Write(rocksdb::WriteBatch* batch, bool sync) {
  if (absl::Status failed = wal_failure(); !failed.ok()) return failed;
  rocksdb::WriteOptions write_options;
  write_options.sync = sync;
  ResumeAfterFailedWrite();
  const rocksdb::Status s = WriteToRocksDb(write_options, batch);
  if (!s.ok() && NamesWalFile(s.ToString())) {
    absl::MutexLock lock(&wal_mu_);
    if (wal_failure_.ok()) {
      wal_failure_ = FromRocksStatus(
          s, absl::StrCat("RocksDB's write-ahead log in ", dir_,
                          " cannot be appended to again until the database "
                          "is reopened (a restart; after a full disk, "
                          "sessiond restarts itself once it has room); it "
                          "failed with"));
    }
  }
  absl::Status written = Checked(s, "RocksDB write");
  // A snapshot installed (ApplySnapshot) is one such batch, through the WAL.
  if (written.ok()) FlushAfterLargeWrite(*batch);
  return written;
}

absl::Status Database::wal_failure() const {
  absl::MutexLock lock(&wal_mu_);
  return wal_failure_;
}

void Database::ResumeAfterFailedWrite() {
  if (!write_failed_.load(std::memory_order_acquire)) return;
  // Resume cannot mend a failed log writer; each try would only make
  // another empty log file.
  if (!wal_failure().ok()) return;
  // A failed write leaves RocksDB refusing every write (its background
  // error) until Resume, which also flushes the memtables so nothing
  // depends on the WAL that failed. Busy: its own recovery is running.
  if (db_->Resume().ok()) write_failed_.store(false, std::memory_order_release);
}

rocksdb::Status Database::WriteToRocksDb(const rocksdb::WriteOptions& options,
                                         rocksdb::WriteBatch* batch) {
  // Counted on writes without the WAL (the apply stage's), so the jam
  // leaves an apply retrying, which a teardown must stop (tests).
  if (options.disableWAL && SESSIOND_FAULT_POINT_FAILS("storage.write_jams")) {
    injected_jam_.store(true);
  }
  if (injected_jam_.load(std::memory_order_relaxed)) {
    return rocksdb::Status::NoSpace(
        "fault point storage.write_jams: this database takes no write until "
        "it is reopened");
  }
  return db_->Write(options, batch);
}

absl::Status Database::Checked(const rocksdb::Status& status,
                               std::string_view context) {
  if (status.ok()) {
    if (failing_now_.load(std::memory_order_acquire)) {
      absl::MutexLock lock(&failing_mu_);
      failing_.reset();
      failing_now_.store(false, std::memory_order_release);
    }
    return absl::OkStatus();
  }
  write_failed_.store(true, std::memory_order_release);
  absl::Status error = FromRocksStatus(status, context);
  absl::MutexLock lock(&failing_mu_);
  // Read under the lock, so latest_failed never goes back.
  const auto now = std::chrono::steady_clock::now();
  if (!failing_.has_value()) {
    failing_ = FailingWrites{
        .latest_error = error, .first_failed = now, .latest_failed = now};
    failing_now_.store(true, std::memory_order_release);
  }
  failing_->latest_error = error;
  failing_->latest_failed = now;
  return error;
}

std::optional<Database::FailingWrites> Database::failing_writes() const {
  absl::MutexLock lock(&failing_mu_);
  return failing_;
}

absl::StatusOr<std::optional<std::string>> Database::Get(
    rocksdb::ColumnFamilyHandle* cf, std::string_view key,
    const rocksdb::ReadOptions& options) const {
  std::string value;
  rocksdb::Status s =
      db_->Get(options, cf, rocksdb::Slice(key.data(), key.size()), &value);
  if (s.IsNotFound()) return std::optional<std::string>();
  if (!s.ok()) {
    return FromRocksStatus(
        s, absl::StrCat("reading ", absl::string_view(key.data(), key.size())));
  }
  return std::optional<std::string>(std::move(value));
}

absl::Status Database::WriteWithoutWal(rocksdb::WriteBatch* batch) {
  rocksdb::WriteOptions write_options;
  write_options.disableWAL = true;
  ResumeAfterFailedWrite();
  absl::Status written =
      Checked(WriteToRocksDb(write_options, batch), "RocksDB write (no WAL)");
  if (written.ok()) FlushAfterLargeWrite(*batch);
  return written;
}

void Database::FlushAfterLargeWrite(const rocksdb::WriteBatch& batch) {
  if (batch.GetDataSize() < large_write_bytes_) return;
  // RocksDB takes the batch into one memtable whatever its size, and swaps
  // a full memtable for an empty one only at the next write. After a flush
  // or restore of every session (one batch of ~400 B per session) that
  // next write may be minutes away on a quiet node, and until then the
  // rewritten records stay resident, far beyond memtable_budget_bytes.
  // Scheduled, not waited for: the caller (the apply thread) goes on.
  rocksdb::FlushOptions flush_options;
  flush_options.wait = false;
  flush_options.allow_write_stall = true;
  const rocksdb::Status s = db_->Flush(flush_options, handles_);
  if (!s.ok()) {
    // The data is in the memtables either way; RocksDB flushes them at the
    // next write or when the write buffer manager asks.
    logging::Warn("rocksdb.flush_not_scheduled",
                  logging::Fields()
                      .Add("write_bytes", batch.GetDataSize())
                      .Add("error", s.ToString()));
  }
}

absl::Status Database::Flush() {
  rocksdb::FlushOptions flush_options;
  flush_options.wait = true;
  return FromRocksStatus(db_->Flush(flush_options, handles_), "RocksDB flush");
}

absl::Status Database::Checkpoint(const std::string& dir) {
  rocksdb::Checkpoint* raw = nullptr;
  rocksdb::Status s = rocksdb::Checkpoint::Create(db_.get(), &raw);
  if (!s.ok()) return FromRocksStatus(s, "creating a checkpoint");
  std::unique_ptr<rocksdb::Checkpoint> checkpoint(raw);
  // log_size_for_flush 0: always flush first. The applied state is written
  // without the WAL, so only a flush puts it into the copy.
  return FromRocksStatus(
      checkpoint->CreateCheckpoint(dir, /*log_size_for_flush=*/0),
      absl::StrCat("checkpoint into ", dir));
}

}  // namespace sessiond::storage
