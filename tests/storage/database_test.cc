// Copyright sessiond authors. Licensed under the Apache License 2.0.
#include "storage/database.h"

#include <filesystem>
#include <fstream>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
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

TEST(DatabaseTest, MissingDirWithoutCreateIsNotFound) {
  TempDir dir;
  DatabaseOptions options;
  options.create_if_missing = false;
  auto db = Database::Open(dir.Sub("nothing"), options);
  ASSERT_FALSE(db.ok());
  EXPECT_EQ(db.status().code(), absl::StatusCode::kNotFound);
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
