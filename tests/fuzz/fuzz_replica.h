// Copyright sessiond authors. Licensed under the Apache License 2.0.
//
// FuzzReplica: a storage::SessionStateMachine for fuzz targets that apply
// entries or install snapshot images, which Reset() returns to the state of
// a new data dir before each input, so a failing input reproduces alone.
//
// Opening a RocksDB database costs milliseconds of CPU (it writes and
// re-reads its OPTIONS file once per column family), which would leave a CI
// run (2 s) a few dozen inputs. So a database serves many inputs: Reset()
// rewrites every column family to what it held right after Database::Open,
// then opens a new state machine on a new table (all of its state is
// loaded from the database). The files live in a
// rocksdb::NewMemEnv (RocksDB's own file I/O is not under test); only the
// info LOG goes to `dir` on disk.
#ifndef SESSIOND_TESTS_FUZZ_FUZZ_REPLICA_H_
#define SESSIOND_TESTS_FUZZ_FUZZ_REPLICA_H_

#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "common/strong_types.h"
#include "rocksdb/db.h"
#include "rocksdb/env.h"
#include "rocksdb/write_batch.h"
#include "storage/database.h"
#include "storage/session_state_machine.h"
#include "storage/session_table.h"
#include "storage/snapshot_files.h"
#include "tests/fuzz/fuzz_check.h"

namespace sessiond::fuzz {

// A folder for this process's files, named after `target`, created, and
// removed at exit. On a tmpfs (/dev/shm) when there is one: snapshot images
// are fsynced (storage/snapshot_files.h), and an fsync on a disk busy with
// a build took 10 ms, which cut the mutations of a CI run (2 s) tenfold.
inline std::string ScratchDir(const std::string& target) {
  std::error_code ec;
  const std::string base =
      std::filesystem::is_directory("/dev/shm", ec) ? "/dev/shm" : "/tmp";
  static std::string* dir = nullptr;
  FUZZ_CHECK(dir == nullptr);  // one per process
  dir = new std::string(base + "/sessiond-fuzz-" + target + "-" +
                        std::to_string(getpid()));
  std::filesystem::create_directories(*dir, ec);
  FUZZ_CHECK(!ec);
  std::atexit([] { std::filesystem::remove_all(*dir); });
  return *dir;
}

class FuzzReplica {
 public:
  // `dir` is removed first and when the replica goes away. `snapshots`
  // (where images go and come from) must outlive it. The group: voters 1,
  // 2, 3.
  FuzzReplica(std::string dir, storage::SnapshotFiles* snapshots)
      : dir_(std::move(dir)), snapshots_(snapshots) {
    OpenDatabase();
    OpenStateMachine();
  }
  ~FuzzReplica() {
    // In this order: the state machine uses the table and the database.
    sm_.reset();
    table_.reset();
    db_.reset();
    std::filesystem::remove_all(dir_);
  }
  FuzzReplica(const FuzzReplica&) = delete;
  FuzzReplica& operator=(const FuzzReplica&) = delete;

  // Back to a new data dir's state, with a new state machine.
  void Reset() {
    sm_.reset();
    table_.reset();
    if (++resets_ % kReopenEvery == 0) {
      // Every key the rewrite below deletes stays in RocksDB as a
      // tombstone, which every later read walks past: an input took ten
      // times as long after a few thousand. A compaction would drop them,
      // but waits for RocksDB's background threads, which a busy machine
      // runs late; a new database costs only CPU.
      db_.reset();
      OpenDatabase();
    } else {
      rocksdb::WriteBatch batch;
      for (rocksdb::ColumnFamilyHandle* cf : Cfs()) {
        std::unique_ptr<rocksdb::Iterator> it(
            db_->db()->NewIterator(rocksdb::ReadOptions(), cf));
        for (it->SeekToFirst(); it->Valid(); it->Next()) {
          FUZZ_CHECK(batch.Delete(cf, it->key()).ok());
        }
        FUZZ_CHECK(it->status().ok());
        for (const auto& [key, value] : pristine_[cf->GetID()]) {
          FUZZ_CHECK(batch.Put(cf, key, value).ok());
        }
      }
      FUZZ_CHECK(db_->Write(&batch, /*sync=*/false).ok());
    }
    OpenStateMachine();
    FUZZ_CHECK(sm_->applied_index() == LogIndex(0));
    FUZZ_CHECK(sm_->applied_time_ms() == 0);
  }

  storage::SessionStateMachine& sm() { return *sm_; }
  const storage::SessionTable& table() const { return *table_; }

  storage::SessionStateMachine::Digest Digest() const {
    auto digest = sm_->ComputeDigest();
    FUZZ_CHECK(digest.ok());
    return *std::move(digest);
  }

 private:
  static constexpr uint64_t kReopenEvery = 64;

  std::vector<rocksdb::ColumnFamilyHandle*> Cfs() const {
    return {db_->default_cf(), db_->raft_log_cf(), db_->raft_state_cf(),
            db_->sessions_cf()};
  }

  // A new database (and what it holds, as Reset() restores it).
  void OpenDatabase() {
    std::filesystem::remove_all(dir_);
    storage::DatabaseOptions options;
    options.env.reset(rocksdb::NewMemEnv(rocksdb::Env::Default()));
    // An input holds a handful of sessions.
    options.block_cache_bytes = 1 << 20;
    options.background_jobs = 1;
    auto db = storage::Database::Open(dir_, options);
    FUZZ_CHECK(db.ok());
    db_ = *std::move(db);
    pristine_.clear();
    for (rocksdb::ColumnFamilyHandle* cf : Cfs()) {
      std::unique_ptr<rocksdb::Iterator> it(
          db_->db()->NewIterator(rocksdb::ReadOptions(), cf));
      for (it->SeekToFirst(); it->Valid(); it->Next()) {
        pristine_[cf->GetID()][it->key().ToString()] = it->value().ToString();
      }
      FUZZ_CHECK(it->status().ok());
    }
  }

  void OpenStateMachine() {
    table_ = std::make_unique<storage::SessionTable>(
        storage::SessionTableOptions{.num_shards = 4});
    storage::SessionStateMachineOptions options;
    options.load_threads = 1;
    options.snapshots = snapshots_;
    options.bootstrap_conf.voters = {NodeId(1), NodeId(2), NodeId(3)};
    auto sm =
        storage::SessionStateMachine::Open(db_.get(), table_.get(), options);
    FUZZ_CHECK(sm.ok());
    sm_ = *std::move(sm);
  }

  const std::string dir_;
  storage::SnapshotFiles* const snapshots_;
  uint64_t resets_ = 0;
  std::unique_ptr<storage::Database> db_;
  // Column family id -> key -> value, right after Database::Open.
  std::map<uint32_t, std::map<std::string, std::string>> pristine_;
  std::unique_ptr<storage::SessionTable> table_;
  std::unique_ptr<storage::SessionStateMachine> sm_;
};

}  // namespace sessiond::fuzz

#endif  // SESSIOND_TESTS_FUZZ_FUZZ_REPLICA_H_
