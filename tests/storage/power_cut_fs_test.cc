// Copyright sessiond authors. Licensed under the Apache License 2.0.
#include "tests/storage/power_cut_fs.h"

#include <filesystem>
#include <fstream>
#include <iterator>
#include <memory>
#include <optional>
#include <string>

#include "gtest/gtest.h"
#include "rocksdb/env.h"
#include "rocksdb/write_batch.h"
#include "storage/database.h"
#include "tests/storage/temp_dir.h"

namespace sessiond::testing {
namespace {

using rocksdb::IODebugContext;
using rocksdb::IOOptions;

std::optional<std::string> Read(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return std::nullopt;
  return std::string(std::istreambuf_iterator<char>(in),
                     std::istreambuf_iterator<char>());
}

PowerCutOptions Exact(uint64_t seed = 1) {
  PowerCutOptions options;
  options.seed = seed;
  options.torn_tails = false;
  options.partial_directory_changes = false;
  return options;
}

class PowerCutFsTest : public ::testing::Test {
 protected:
  void Use(PowerCutOptions options) {
    fs_ = std::make_shared<PowerCutFileSystem>(dir_.path(), options);
    ASSERT_TRUE(
        fs_->NewDirectory(dir_.path(), IOOptions(), &root_dir_, nullptr).ok());
  }
  std::unique_ptr<rocksdb::FSWritableFile> Create(const std::string& name) {
    std::unique_ptr<rocksdb::FSWritableFile> file;
    EXPECT_TRUE(fs_->NewWritableFile(dir_.Sub(name), rocksdb::FileOptions(),
                                     &file, nullptr)
                    .ok());
    return file;
  }
  // A file written, synced and closed, its directory entry durable.
  void Durable(const std::string& name, const std::string& contents) {
    std::unique_ptr<rocksdb::FSWritableFile> file = Create(name);
    ASSERT_TRUE(file->Append(contents, IOOptions(), nullptr).ok());
    ASSERT_TRUE(file->Sync(IOOptions(), nullptr).ok());
    ASSERT_TRUE(file->Close(IOOptions(), nullptr).ok());
    ASSERT_TRUE(root_dir_->Fsync(IOOptions(), nullptr).ok());
  }
  PowerLossReport CutAndLose() {
    fs_->CutPower();
    PowerLossReport report;
    EXPECT_TRUE(fs_->ApplyPowerLoss(&report).ok());
    return report;
  }

  TempDir dir_;
  std::shared_ptr<PowerCutFileSystem> fs_;
  std::unique_ptr<rocksdb::FSDirectory> root_dir_;
};

TEST_F(PowerCutFsTest, OnlySyncedBytesSurvive) {
  Use(Exact());
  std::unique_ptr<rocksdb::FSWritableFile> file = Create("f");
  ASSERT_TRUE(root_dir_->Fsync(IOOptions(), nullptr).ok());
  ASSERT_TRUE(file->Append("synced;", IOOptions(), nullptr).ok());
  ASSERT_TRUE(file->Sync(IOOptions(), nullptr).ok());
  ASSERT_TRUE(file->Append("not synced", IOOptions(), nullptr).ok());
  // Neither closing nor a range sync makes data durable.
  ASSERT_TRUE(file->RangeSync(0, 100, IOOptions(), nullptr).ok());
  ASSERT_TRUE(file->Close(IOOptions(), nullptr).ok());
  EXPECT_EQ(Read(dir_.Sub("f")), "synced;not synced");
  const PowerLossReport report = CutAndLose();
  EXPECT_EQ(Read(dir_.Sub("f")), "synced;");
  EXPECT_EQ(report.bytes_dropped, 10u);
}

TEST_F(PowerCutFsTest, TornTailIsASeededPrefixOfTheUnsyncedBytes) {
  bool some_torn = false;
  bool some_clean = false;
  for (uint64_t seed = 1; seed <= 20; ++seed) {
    PowerCutOptions options = Exact(seed);
    options.torn_tails = true;
    Use(options);
    Durable("f", "synced;");
    std::unique_ptr<rocksdb::FSWritableFile> file;
    ASSERT_TRUE(fs_->ReopenWritableFile(dir_.Sub("f"), rocksdb::FileOptions(),
                                        &file, nullptr)
                    .ok());
    ASSERT_TRUE(file->Append("0123456789", IOOptions(), nullptr).ok());
    CutAndLose();
    file.reset();
    const std::optional<std::string> got = Read(dir_.Sub("f"));
    ASSERT_TRUE(got.has_value());
    const std::string whole = "synced;0123456789";
    ASSERT_GE(got->size(), 7u);
    EXPECT_EQ(*got, whole.substr(0, got->size())) << "seed " << seed;
    (got->size() > 7 ? some_torn : some_clean) = true;
  }
  EXPECT_TRUE(some_torn);
  EXPECT_TRUE(some_clean);
}

// RocksDB reopens the last WAL after a restart to cut a torn record off it.
// A file the model has not seen is durable whole, whatever the reopened
// handle says its size is.
TEST_F(PowerCutFsTest, AFileFromBeforeIsDurableWhenReopened) {
  {
    std::ofstream out(dir_.Sub("old.log"), std::ios::binary);
    out << "from before the model";
  }
  Use(Exact());
  std::unique_ptr<rocksdb::FSWritableFile> file;
  ASSERT_TRUE(fs_->ReopenWritableFile(dir_.Sub("old.log"),
                                      rocksdb::FileOptions(), &file, nullptr)
                  .ok());
  ASSERT_TRUE(file->Append(", and more", IOOptions(), nullptr).ok());
  CutAndLose();
  EXPECT_EQ(Read(dir_.Sub("old.log")), "from before the model");
}

TEST_F(PowerCutFsTest, CreationNeedsTheDirectoryFsync) {
  Use(Exact());
  std::unique_ptr<rocksdb::FSWritableFile> lost = Create("lost");
  ASSERT_TRUE(lost->Append("x", IOOptions(), nullptr).ok());
  ASSERT_TRUE(lost->Sync(IOOptions(), nullptr).ok());
  Durable("kept", "y");  // fsyncs the directory: "lost" is durable too now
  std::unique_ptr<rocksdb::FSWritableFile> late = Create("late");
  ASSERT_TRUE(late->Append("z", IOOptions(), nullptr).ok());
  ASSERT_TRUE(late->Sync(IOOptions(), nullptr).ok());
  const PowerLossReport report = CutAndLose();
  EXPECT_EQ(Read(dir_.Sub("lost")), "x");
  EXPECT_EQ(Read(dir_.Sub("kept")), "y");
  EXPECT_EQ(Read(dir_.Sub("late")), std::nullopt);
  EXPECT_EQ(report.creations_lost, 1u);
}

TEST_F(PowerCutFsTest, RenameWithoutDirectoryFsyncReverts) {
  Use(Exact());
  Durable("CURRENT", "old");
  std::unique_ptr<rocksdb::FSWritableFile> tmp = Create("tmp");
  ASSERT_TRUE(tmp->Append("new", IOOptions(), nullptr).ok());
  ASSERT_TRUE(tmp->Sync(IOOptions(), nullptr).ok());
  ASSERT_TRUE(tmp->Close(IOOptions(), nullptr).ok());
  ASSERT_TRUE(fs_->RenameFile(dir_.Sub("tmp"), dir_.Sub("CURRENT"), IOOptions(),
                              nullptr)
                  .ok());
  EXPECT_EQ(Read(dir_.Sub("CURRENT")), "new");
  const PowerLossReport report = CutAndLose();
  EXPECT_EQ(Read(dir_.Sub("CURRENT")), "old");
  EXPECT_EQ(Read(dir_.Sub("tmp")), std::nullopt);  // its creation too
  EXPECT_EQ(report.renames_lost, 1u);

  // The same with the directory fsynced after the rename.
  Use(Exact());
  tmp = Create("tmp");
  ASSERT_TRUE(tmp->Append("new", IOOptions(), nullptr).ok());
  ASSERT_TRUE(tmp->Sync(IOOptions(), nullptr).ok());
  ASSERT_TRUE(fs_->RenameFile(dir_.Sub("tmp"), dir_.Sub("CURRENT"), IOOptions(),
                              nullptr)
                  .ok());
  ASSERT_TRUE(root_dir_->Fsync(IOOptions(), nullptr).ok());
  CutAndLose();
  EXPECT_EQ(Read(dir_.Sub("CURRENT")), "new");
}

TEST_F(PowerCutFsTest, DeletionWithoutDirectoryFsyncComesBack) {
  Use(Exact());
  Durable("old.log", "data");
  ASSERT_TRUE(fs_->DeleteFile(dir_.Sub("old.log"), IOOptions(), nullptr).ok());
  const PowerLossReport report = CutAndLose();
  EXPECT_EQ(Read(dir_.Sub("old.log")), "data");
  EXPECT_EQ(report.deletions_lost, 1u);

  ASSERT_TRUE(fs_->DeleteFile(dir_.Sub("old.log"), IOOptions(), nullptr).ok());
  ASSERT_TRUE(root_dir_->Fsync(IOOptions(), nullptr).ok());
  CutAndLose();
  EXPECT_EQ(Read(dir_.Sub("old.log")), std::nullopt);
}

TEST_F(PowerCutFsTest, PartialDirectoryChangesKeepAPrefix) {
  // Three creations since the last directory fsync: each seed keeps the
  // first k of them, never a later one without the earlier ones.
  for (uint64_t seed = 1; seed <= 20; ++seed) {
    PowerCutOptions options = Exact(seed);
    options.partial_directory_changes = true;
    Use(options);
    for (const char* name : {"a", "b", "c"}) {
      std::unique_ptr<rocksdb::FSWritableFile> file = Create(name);
      ASSERT_TRUE(file->Sync(IOOptions(), nullptr).ok());
    }
    CutAndLose();
    const bool a = Read(dir_.Sub("a")).has_value();
    const bool b = Read(dir_.Sub("b")).has_value();
    const bool c = Read(dir_.Sub("c")).has_value();
    EXPECT_TRUE((a || !b) && (b || !c)) << "seed " << seed;
    for (const char* name : {"a", "b", "c"}) {
      std::filesystem::remove(dir_.Sub(name));
    }
  }
}

TEST_F(PowerCutFsTest, WritesFailAfterTheCut) {
  Use(Exact());
  std::unique_ptr<rocksdb::FSWritableFile> file = Create("f");
  ASSERT_TRUE(root_dir_->Fsync(IOOptions(), nullptr).ok());
  fs_->CutPower();
  EXPECT_TRUE(file->Append("x", IOOptions(), nullptr).IsIOError());
  EXPECT_TRUE(file->Sync(IOOptions(), nullptr).IsIOError());
  EXPECT_TRUE(root_dir_->Fsync(IOOptions(), nullptr).IsIOError());
  std::unique_ptr<rocksdb::FSWritableFile> other;
  EXPECT_TRUE(fs_->NewWritableFile(dir_.Sub("g"), rocksdb::FileOptions(),
                                   &other, nullptr)
                  .IsIOError());
  EXPECT_TRUE(fs_->DeleteFile(dir_.Sub("f"), IOOptions(), nullptr).IsIOError());
  EXPECT_TRUE(file->Close(IOOptions(), nullptr).IsIOError());
  ASSERT_TRUE(fs_->ApplyPowerLoss().ok());
  EXPECT_EQ(Read(dir_.Sub("f")), "");
}

TEST_F(PowerCutFsTest, KeepRunningAfterTheCutChangesNothingDurable) {
  PowerCutOptions options = Exact();
  options.after_cut = PowerCutOptions::AfterCut::kKeepRunning;
  Use(options);
  Durable("f", "before;");
  std::unique_ptr<rocksdb::FSWritableFile> file;
  ASSERT_TRUE(fs_->ReopenWritableFile(dir_.Sub("f"), rocksdb::FileOptions(),
                                      &file, nullptr)
                  .ok());
  fs_->CutPower();
  ASSERT_TRUE(file->Append("after", IOOptions(), nullptr).ok());
  ASSERT_TRUE(file->Sync(IOOptions(), nullptr).ok());
  Durable("g", "after");
  ASSERT_TRUE(fs_->ApplyPowerLoss().ok());
  EXPECT_EQ(Read(dir_.Sub("f")), "before;");
  EXPECT_EQ(Read(dir_.Sub("g")), std::nullopt);
}

TEST_F(PowerCutFsTest, CutsAtTheArmedEvent) {
  Use(Exact());
  std::unique_ptr<rocksdb::FSWritableFile> file = Create("f");
  ASSERT_TRUE(root_dir_->Fsync(IOOptions(), nullptr).ok());
  fs_->CutPowerAtEvent(4);  // the second sync below
  ASSERT_TRUE(file->Append("a", IOOptions(), nullptr).ok());
  ASSERT_TRUE(file->Sync(IOOptions(), nullptr).ok());
  ASSERT_TRUE(file->Append("b", IOOptions(), nullptr).ok());
  EXPECT_FALSE(fs_->power_cut());
  EXPECT_TRUE(file->Sync(IOOptions(), nullptr).IsIOError());
  EXPECT_TRUE(fs_->power_cut());
  ASSERT_TRUE(fs_->ApplyPowerLoss().ok());
  EXPECT_EQ(Read(dir_.Sub("f")), "a");
}

// The seam in storage::Database, end to end: a synced write survives, an
// unsynced one does not, and closing the database after the cut (which
// flushes the memtables) cannot save it.
TEST_F(PowerCutFsTest, DatabaseKeepsSyncedWritesOnly) {
  const std::string data = dir_.Sub("db");
  std::filesystem::create_directories(data);
  auto fs = std::make_shared<PowerCutFileSystem>(data, Exact());
  std::shared_ptr<rocksdb::Env> env(rocksdb::NewCompositeEnv(fs));
  storage::DatabaseOptions options;
  options.env = env;
  {
    absl::StatusOr<std::unique_ptr<storage::Database>> db =
        storage::Database::Open(data, options);
    ASSERT_TRUE(db.ok()) << db.status();
    rocksdb::WriteBatch synced;
    ASSERT_TRUE(synced.Put((*db)->default_cf(), "synced", "1").ok());
    ASSERT_TRUE((*db)->Write(&synced, /*sync=*/true).ok());
    rocksdb::WriteBatch unsynced;
    ASSERT_TRUE(unsynced.Put((*db)->default_cf(), "unsynced", "1").ok());
    ASSERT_TRUE((*db)->Write(&unsynced, /*sync=*/false).ok());
    fs->CutPower();
  }
  ASSERT_TRUE(fs->ApplyPowerLoss().ok());
  absl::StatusOr<std::unique_ptr<storage::Database>> db =
      storage::Database::Open(data, options);
  ASSERT_TRUE(db.ok()) << db.status();
  std::string value;
  EXPECT_TRUE(
      (*db)
          ->db()
          ->Get(rocksdb::ReadOptions(), (*db)->default_cf(), "synced", &value)
          .ok());
  EXPECT_TRUE(
      (*db)
          ->db()
          ->Get(rocksdb::ReadOptions(), (*db)->default_cf(), "unsynced", &value)
          .IsNotFound());
}

}  // namespace
}  // namespace sessiond::testing
