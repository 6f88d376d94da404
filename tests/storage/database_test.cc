// Copyright sessiond authors. Licensed under the Apache License 2.0.
#include "storage/database.h"

#include <algorithm>
#include <atomic>
#include <filesystem>
#include <fstream>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "rocksdb/env.h"
#include "rocksdb/file_system.h"
#include "storage/disk_guard.h"
#include "storage/keys.h"
#include "tests/storage/temp_dir.h"

namespace sessiond::storage {
namespace {

using sessiond::testing::TempDir;
using ::testing::HasSubstr;

void Overwrite(const std::string& path, const std::string& contents) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << contents;
}

// The real file system, except that once failing() is set, appends to
// write-ahead log files (NNNNNN.log) fail as a dying disk's do: EIO, in the
// words RocksDB's Posix files use. A real EIO cannot be made on demand.
class FailingWalFileSystem : public rocksdb::FileSystemWrapper {
 public:
  FailingWalFileSystem()
      : rocksdb::FileSystemWrapper(rocksdb::FileSystem::Default()) {}
  const char* Name() const override { return "FailingWalFileSystem"; }

  void set_failing(bool failing) { failing_.store(failing); }
  // Appends to log files that reached the disk's file (not refused).
  int wal_appends() const { return wal_appends_.load(); }

  rocksdb::IOStatus NewWritableFile(
      const std::string& name, const rocksdb::FileOptions& options,
      std::unique_ptr<rocksdb::FSWritableFile>* result,
      rocksdb::IODebugContext* dbg) override {
    rocksdb::IOStatus s = target()->NewWritableFile(name, options, result, dbg);
    if (s.ok() && absl::EndsWith(name, ".log")) {
      *result = std::make_unique<WalFile>(this, name, std::move(*result));
    }
    return s;
  }

 private:
  class WalFile : public rocksdb::FSWritableFileOwnerWrapper {
   public:
    WalFile(FailingWalFileSystem* fs, std::string name,
            std::unique_ptr<rocksdb::FSWritableFile> target)
        : rocksdb::FSWritableFileOwnerWrapper(std::move(target)),
          fs_(fs),
          name_(std::move(name)) {}
    rocksdb::IOStatus Append(const rocksdb::Slice& data,
                             const rocksdb::IOOptions& options,
                             rocksdb::IODebugContext* dbg) override {
      if (fs_->failing_.load()) {
        return rocksdb::IOStatus::IOError("While appending to file: " + name_ +
                                          ": Input/output error");
      }
      fs_->wal_appends_.fetch_add(1);
      return target()->Append(data, options, dbg);
    }
    rocksdb::IOStatus Append(const rocksdb::Slice& data,
                             const rocksdb::IOOptions& options,
                             const rocksdb::DataVerificationInfo& /*info*/,
                             rocksdb::IODebugContext* dbg) override {
      return Append(data, options, dbg);
    }

   private:
    FailingWalFileSystem* const fs_;
    const std::string name_;
  };

  std::atomic<bool> failing_{false};
  std::atomic<int> wal_appends_{0};
};

// The real file system, recording each folder fsynced through it, in order;
// the fsync of the folder set with set_failing_folder() fails as a dying
// disk's does (EIO). A power cut cannot be aimed at the data dir's parent:
// the power-cut model (power_cut_fs.h) covers one root and takes folders as
// created durably, so the syncs that make them so are what is checked.
class FolderSyncFileSystem : public rocksdb::FileSystemWrapper {
 public:
  FolderSyncFileSystem()
      : rocksdb::FileSystemWrapper(rocksdb::FileSystem::Default()) {}
  const char* Name() const override { return "FolderSyncFileSystem"; }

  void set_failing_folder(std::string folder) {
    std::lock_guard<std::mutex> lock(mu_);
    failing_folder_ = std::move(folder);
  }
  std::vector<std::string> synced() const {
    std::lock_guard<std::mutex> lock(mu_);
    return synced_;
  }

  rocksdb::IOStatus NewDirectory(const std::string& name,
                                 const rocksdb::IOOptions& options,
                                 std::unique_ptr<rocksdb::FSDirectory>* result,
                                 rocksdb::IODebugContext* dbg) override {
    rocksdb::IOStatus s = target()->NewDirectory(name, options, result, dbg);
    if (s.ok())
      *result = std::make_unique<Folder>(this, name, std::move(*result));
    return s;
  }

 private:
  class Folder : public rocksdb::FSDirectoryWrapper {
   public:
    Folder(FolderSyncFileSystem* fs, std::string name,
           std::unique_ptr<rocksdb::FSDirectory> target)
        : rocksdb::FSDirectoryWrapper(std::move(target)),
          fs_(fs),
          name_(std::move(name)) {}
    rocksdb::IOStatus Fsync(const rocksdb::IOOptions& options,
                            rocksdb::IODebugContext* dbg) override {
      if (!fs_->Record(name_)) {
        return rocksdb::IOStatus::IOError("While fsync: " + name_ +
                                          ": Input/output error");
      }
      return FSDirectoryWrapper::Fsync(options, dbg);
    }
    // RocksDB syncs its own folders through this one.
    rocksdb::IOStatus FsyncWithDirOptions(
        const rocksdb::IOOptions& options, rocksdb::IODebugContext* dbg,
        const rocksdb::DirFsyncOptions& dir_options) override {
      if (!fs_->Record(name_)) {
        return rocksdb::IOStatus::IOError("While fsync: " + name_ +
                                          ": Input/output error");
      }
      return FSDirectoryWrapper::FsyncWithDirOptions(options, dbg, dir_options);
    }

   private:
    FolderSyncFileSystem* const fs_;
    const std::string name_;
  };

  // Whether the fsync of `folder` may go ahead.
  bool Record(const std::string& folder) {
    std::lock_guard<std::mutex> lock(mu_);
    if (folder == failing_folder_) return false;
    synced_.push_back(folder);
    return true;
  }

  mutable std::mutex mu_;
  std::string failing_folder_;
  std::vector<std::string> synced_;
};

TEST(DatabaseTest, CreatesColumnFamiliesAndReopens) {
  TempDir dir;
  const std::string path = dir.Sub("data");
  {
    auto db = Database::Open(path, DatabaseOptions());
    ASSERT_TRUE(db.ok()) << db.status();
    ASSERT_NE((*db)->sessions_cf(), nullptr);
    ASSERT_NE((*db)->raft_log_cf(), nullptr);
    ASSERT_NE((*db)->raft_state_cf(), nullptr);
    ASSERT_NE((*db)->default_cf(), nullptr);
    rocksdb::WriteBatch batch;
    batch.Put((*db)->sessions_cf(), "k", "v");
    ASSERT_TRUE((*db)->Write(&batch, true).ok());
  }
  auto db = Database::Open(path, DatabaseOptions());
  ASSERT_TRUE(db.ok()) << db.status();
  std::string value;
  ASSERT_TRUE(
      (*db)
          ->db()
          ->Get(rocksdb::ReadOptions(), (*db)->sessions_cf(), "k", &value)
          .ok());
  EXPECT_EQ(value, "v");
  ASSERT_TRUE((*db)
                  ->db()
                  ->Get(rocksdb::ReadOptions(), (*db)->default_cf(),
                        kFormatVersionKey, &value)
                  .ok());
  EXPECT_EQ(value, std::to_string(kFormatVersion));
}

// A flush of every session is one batch of ~400 B per session. RocksDB
// swaps a memtable that batch overfilled only at the next write, so without
// a flush scheduled at once the records stayed resident (390 MB after a
// flush of 1M sessions, docs/PERFORMANCE.md) until some later write. The
// same for a write through the WAL: a snapshot installed on a follower
// (ApplySnapshot, every session in one synced batch) stayed resident.
class LargeWriteTest : public ::testing::TestWithParam<bool> {};

TEST_P(LargeWriteTest, AWriteLargerThanAMemtableReachesAnSstWithoutAnother) {
  const bool through_wal = GetParam();
  TempDir dir;
  DatabaseOptions options;
  options.sessions_write_buffer_bytes = 1 << 20;
  auto db = Database::Open(dir.Sub("data"), options);
  ASSERT_TRUE(db.ok()) << db.status();
  rocksdb::WriteBatch batch;
  const std::string value(1000, 'v');
  for (int i = 0; i < 4000; ++i) {
    batch.Put((*db)->sessions_cf(), absl::StrCat("session-", i), value);
  }
  ASSERT_TRUE((through_wal ? (*db)->Write(&batch, /*sync=*/true)
                           : (*db)->WriteWithoutWal(&batch))
                  .ok());

  auto sessions_sst_files = [&] {
    std::vector<rocksdb::LiveFileMetaData> files;
    (*db)->db()->GetLiveFilesMetaData(&files);
    return std::count_if(files.begin(), files.end(), [](const auto& file) {
      return file.column_family_name == kSessionsCf;
    });
  };
  const auto give_up = absl::Now() + absl::Seconds(20);
  while (sessions_sst_files() == 0 && absl::Now() < give_up) {
    absl::SleepFor(absl::Milliseconds(20));
  }
  EXPECT_EQ(sessions_sst_files(), 1);
  std::string read;
  ASSERT_TRUE((*db)
                  ->db()
                  ->Get(rocksdb::ReadOptions(), (*db)->sessions_cf(),
                        "session-3999", &read)
                  .ok());
  EXPECT_EQ(read, value);
}

INSTANTIATE_TEST_SUITE_P(WithAndWithoutTheWal, LargeWriteTest,
                         ::testing::Bool());

TEST(DatabaseTest, SecondOpenOfALockedDirIsFailedPrecondition) {
  TempDir dir;
  const std::string path = dir.Sub("data");
  auto first = Database::Open(path, DatabaseOptions());
  ASSERT_TRUE(first.ok()) << first.status();
  auto second = Database::Open(path, DatabaseOptions());
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(second.status().message()),
              HasSubstr("data dir " + path +
                        " is in use by another sessiond (RocksDB LOCK held); "
                        "stop it or choose another --data_dir"));
  // Once the first closes, the dir opens again.
  first->reset();
  auto third = Database::Open(path, DatabaseOptions());
  EXPECT_TRUE(third.ok()) << third.status();
}

TEST(DatabaseTest, GarbageCurrentIsDataLoss) {
  TempDir dir;
  const std::string path = dir.Sub("data");
  ASSERT_TRUE(Database::Open(path, DatabaseOptions()).ok());
  Overwrite(path + "/CURRENT", "\x01\x02garbage-without-newline");
  auto db = Database::Open(path, DatabaseOptions());
  ASSERT_FALSE(db.ok());
  EXPECT_EQ(db.status().code(), absl::StatusCode::kDataLoss) << db.status();
  EXPECT_THAT(std::string(db.status().message()),
              HasSubstr("data dir " + path + " is corrupt: "));
  EXPECT_THAT(std::string(db.status().message()),
              HasSubstr("docs/OPERATIONS.md, Backups and restore"));
}

TEST(DatabaseTest, GarbageManifestIsDataLoss) {
  TempDir dir;
  const std::string path = dir.Sub("data");
  ASSERT_TRUE(Database::Open(path, DatabaseOptions()).ok());
  int manifests = 0;
  for (const auto& entry : std::filesystem::directory_iterator(path)) {
    if (entry.path().filename().string().rfind("MANIFEST-", 0) == 0) {
      Overwrite(entry.path().string(), std::string(4096, '\x5a'));
      ++manifests;
    }
  }
  ASSERT_GT(manifests, 0);
  auto db = Database::Open(path, DatabaseOptions());
  ASSERT_FALSE(db.ok());
  EXPECT_EQ(db.status().code(), absl::StatusCode::kDataLoss) << db.status();
  EXPECT_THAT(std::string(db.status().message()), HasSubstr("is corrupt"));
}

TEST(DatabaseTest, UnknownFormatVersionIsFailedPrecondition) {
  TempDir dir;
  const std::string path = dir.Sub("data");
  {
    auto db = Database::Open(path, DatabaseOptions());
    ASSERT_TRUE(db.ok());
    ASSERT_TRUE((*db)
                    ->db()
                    ->Put(rocksdb::WriteOptions(), (*db)->default_cf(),
                          kFormatVersionKey, "99")
                    .ok());
  }
  auto db = Database::Open(path, DatabaseOptions());
  ASSERT_FALSE(db.ok());
  EXPECT_EQ(db.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(db.status().message()), HasSubstr("format version"));
}

// RocksDB fsyncs its files and the data dir, never the data dir's entry in
// its parent: a power cut after a new node's first acknowledged writes could
// lose the whole dir, and the node would come back empty. Every folder Open
// creates is synced in its parent before RocksDB opens.
TEST(DatabaseTest, CreatingTheDataDirSyncsEachNewFolderInItsParent) {
  TempDir dir;
  const std::string a = dir.Sub("a");
  const std::string b = a + "/b";
  const std::string path = b + "/data";
  auto fs = std::make_shared<FolderSyncFileSystem>();
  DatabaseOptions options;
  options.env = rocksdb::NewCompositeEnv(fs);
  {
    auto db = Database::Open(path, options);
    ASSERT_TRUE(db.ok()) << db.status();
  }
  EXPECT_TRUE(std::filesystem::is_directory(path));
  const std::vector<std::string> synced = fs->synced();
  ASSERT_GE(synced.size(), 3u);
  // Outermost first, each right after its new folder, before RocksDB's own.
  EXPECT_THAT(std::vector<std::string>(synced.begin(), synced.begin() + 3),
              ::testing::ElementsAre(dir.path(), a, b));

  // Reopened, nothing is created, and no folder outside the data dir is
  // touched (its parent may not even be readable).
  auto again = Database::Open(path, options);
  ASSERT_TRUE(again.ok()) << again.status();
  const std::vector<std::string> after = fs->synced();
  for (size_t i = synced.size(); i < after.size(); ++i) {
    EXPECT_TRUE(absl::StartsWith(after[i], path)) << after[i];
  }
}

// A data dir someone else made (systemd's StateDirectory=, an operator's
// mkdir) is as new: its entry is synced before a database is made in it.
// One that already holds a database is left as it is.
TEST(DatabaseTest, AnEmptyDataDirMadeByOthersIsSyncedInItsParent) {
  TempDir dir;
  const std::string path = dir.Sub("data");
  ASSERT_TRUE(std::filesystem::create_directory(path));
  auto fs = std::make_shared<FolderSyncFileSystem>();
  DatabaseOptions options;
  options.env = rocksdb::NewCompositeEnv(fs);
  {
    auto db = Database::Open(path, options);
    ASSERT_TRUE(db.ok()) << db.status();
  }
  std::vector<std::string> synced = fs->synced();
  ASSERT_FALSE(synced.empty());
  EXPECT_EQ(synced.front(), dir.path());

  auto again = Database::Open(path, options);
  ASSERT_TRUE(again.ok()) << again.status();
  const std::vector<std::string> after = fs->synced();
  EXPECT_EQ(std::count(after.begin(), after.end(), dir.path()), 1);
}

TEST(DatabaseTest, ATrailingSlashOnANewDataDirSyncsItsRealParent) {
  TempDir dir;
  auto fs = std::make_shared<FolderSyncFileSystem>();
  DatabaseOptions options;
  options.env = rocksdb::NewCompositeEnv(fs);
  auto db = Database::Open(dir.Sub("data/"), options);
  ASSERT_TRUE(db.ok()) << db.status();
  ASSERT_FALSE(fs->synced().empty());
  EXPECT_EQ(fs->synced().front(), dir.path());
}

// A folder whose entry could not be made durable stops the Open, before any
// write could be acknowledged in it; the empty folders Open made are removed
// again, or the next start would find them and not sync them.
TEST(DatabaseTest, AFailedSyncOfANewFolderStopsTheOpen) {
  TempDir dir;
  const std::string a = dir.Sub("a");
  const std::string path = a + "/b/data";
  auto fs = std::make_shared<FolderSyncFileSystem>();
  fs->set_failing_folder(a);
  DatabaseOptions options;
  options.env = rocksdb::NewCompositeEnv(fs);
  auto db = Database::Open(path, options);
  ASSERT_FALSE(db.ok());
  EXPECT_EQ(db.status().code(), absl::StatusCode::kInternal);
  EXPECT_THAT(
      std::string(db.status().message()),
      HasSubstr("new data dir " + path +
                " might not survive a power cut: fsync of folder " + a + ": "));
  EXPECT_THAT(std::string(db.status().message()),
              HasSubstr("check the disk (dmesg) and restart"));
  EXPECT_FALSE(std::filesystem::exists(a));

  // The disk answers again: the restart makes and syncs every folder.
  fs->set_failing_folder("");
  db = Database::Open(path, options);
  ASSERT_TRUE(db.ok()) << db.status();
  EXPECT_THAT(fs->synced(), ::testing::IsSupersetOf({dir.path(), a, a + "/b"}));
}

TEST(DatabaseTest, MissingDirWithoutCreateIsNotFound) {
  TempDir dir;
  DatabaseOptions options;
  options.create_if_missing = false;
  auto db = Database::Open(dir.Sub("nothing"), options);
  ASSERT_FALSE(db.ok());
  EXPECT_EQ(db.status().code(), absl::StatusCode::kNotFound);
}

// After a write-ahead log append fails for a reason other than a full disk
// (EIO: the disk itself failing), the failure sticks as it does after
// ENOSPC, so no later write reaches RocksDB's failed log writer (which
// asserts on its next append), and it does not read as a full disk: the
// daemon restarts itself in place only for that (server/daemon.cc,
// RestartIfWritesStuck), never in a loop over a dying disk.
TEST(DatabaseTest, AnIoErrorOnTheWriteAheadLogSticksAndIsNotAFullDisk) {
  TempDir dir;
  const std::string path = dir.Sub("data");
  auto fs = std::make_shared<FailingWalFileSystem>();
  DatabaseOptions options;
  options.env = rocksdb::NewCompositeEnv(fs);
  auto db = Database::Open(path, options);
  ASSERT_TRUE(db.ok()) << db.status();
  rocksdb::WriteBatch acked;
  acked.Put((*db)->raft_log_cf(), "acked", "v");
  ASSERT_TRUE((*db)->Write(&acked, /*sync=*/true).ok());

  fs->set_failing(true);
  rocksdb::WriteBatch lost;
  lost.Put((*db)->raft_log_cf(), "lost", "v");
  const absl::Status failed = (*db)->Write(&lost, /*sync=*/true);
  ASSERT_FALSE(failed.ok());
  EXPECT_THAT(std::string(failed.message()), HasSubstr("Input/output error"));
  const absl::Status wal_failure = (*db)->wal_failure();
  ASSERT_FALSE(wal_failure.ok());
  EXPECT_FALSE(IsNoSpace(wal_failure)) << wal_failure;

  // The disk answers again: still refused, without reaching the log file.
  fs->set_failing(false);
  const int appends = fs->wal_appends();
  for (int i = 0; i < 3; ++i) {
    rocksdb::WriteBatch later;
    later.Put((*db)->raft_log_cf(), "later", "v");
    const absl::Status s = (*db)->Write(&later, /*sync=*/true);
    ASSERT_FALSE(s.ok());
    EXPECT_THAT(std::string(s.message()),
                HasSubstr("until the database is reopened"));
  }
  EXPECT_EQ(fs->wal_appends(), appends);

  // Reopened (an operator's restart), what was acknowledged is there (the
  // failed write was never acknowledged: it may or may not be).
  db->reset();
  db = Database::Open(path, options);
  ASSERT_TRUE(db.ok()) << db.status();
  std::string value;
  EXPECT_TRUE(
      (*db)
          ->db()
          ->Get(rocksdb::ReadOptions(), (*db)->raft_log_cf(), "acked", &value)
          .ok());
}

TEST(DatabaseTest, RocksStatusMapping) {
  EXPECT_TRUE(FromRocksStatus(rocksdb::Status::OK(), "x").ok());
  EXPECT_EQ(FromRocksStatus(rocksdb::Status::Corruption("c"), "x").code(),
            absl::StatusCode::kDataLoss);
  EXPECT_EQ(FromRocksStatus(rocksdb::Status::NotFound("n"), "x").code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(FromRocksStatus(rocksdb::Status::Busy("b"), "x").code(),
            absl::StatusCode::kUnavailable);
  EXPECT_EQ(FromRocksStatus(rocksdb::Status::IOError("i"), "x").code(),
            absl::StatusCode::kInternal);
}

}  // namespace
}  // namespace sessiond::storage
