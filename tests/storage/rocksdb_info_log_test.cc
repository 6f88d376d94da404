// Copyright sessiond authors. Licensed under the Apache License 2.0.
#include "storage/rocksdb_info_log.h"

#include <filesystem>
#include <fstream>
#include <iterator>
#include <memory>
#include <string>

#include "gtest/gtest.h"
#include "rocksdb/env.h"
#include "tests/storage/temp_dir.h"

namespace sessiond::storage {
namespace {

std::string ReadAll(const std::string& path) {
  std::ifstream in(path);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

TEST(RocksInfoLogTest, WritesLevelTaggedLinesAndRollsIntoOneOldFile) {
  testing::TempDir dir;
  absl::StatusOr<std::shared_ptr<RocksInfoLog>> log =
      RocksInfoLog::Open(dir.path(), /*max_bytes=*/4096);
  ASSERT_TRUE(log.ok()) << log.status();
  std::shared_ptr<rocksdb::Logger> logger = *log;
  rocksdb::Log(rocksdb::InfoLogLevel::WARN_LEVEL, logger, "first %d", 1);
  const std::string first = ReadAll(dir.path() + "/LOG");
  EXPECT_NE(first.find("[WARN] "), std::string::npos) << first;
  EXPECT_NE(first.find("first 1\n"), std::string::npos) << first;

  // A long line (statistics dumps run to KiB) arrives whole.
  const std::string long_text(3000, 'z');
  rocksdb::Log(rocksdb::InfoLogLevel::INFO_LEVEL, logger, "%s",
               long_text.c_str());
  EXPECT_NE(ReadAll(dir.path() + "/LOG").find(long_text + "\n"),
            std::string::npos);

  for (int i = 0; i < 200; ++i) {
    rocksdb::Log(rocksdb::InfoLogLevel::INFO_LEVEL, logger, "line %d", i);
  }
  EXPECT_TRUE(std::filesystem::exists(dir.path() + "/LOG.old.1"));
  EXPECT_LE(std::filesystem::file_size(dir.path() + "/LOG"), 4096u);
  EXPECT_LE(std::filesystem::file_size(dir.path() + "/LOG.old.1"), 4096u);
  EXPECT_NE(ReadAll(dir.path() + "/LOG").find("line 199\n"), std::string::npos);
  int files = 0;
  for (const auto& entry : std::filesystem::directory_iterator(dir.path())) {
    (void)entry;
    ++files;
  }
  EXPECT_EQ(files, 2);  // LOG and LOG.old.1, however many rolls
  EXPECT_EQ((*log)->dropped_lines(), 0u);

  // Lines under the level are not written.
  logger->SetInfoLogLevel(rocksdb::InfoLogLevel::WARN_LEVEL);
  rocksdb::Log(rocksdb::InfoLogLevel::INFO_LEVEL, logger, "quiet");
  EXPECT_EQ(ReadAll(dir.path() + "/LOG").find("quiet"), std::string::npos);
}

}  // namespace
}  // namespace sessiond::storage
