// Copyright sessiond authors. Licensed under the Apache License 2.0.
#include "storage/rocksdb_info_log.h"

#include <filesystem>
#include <fstream>
#include <iterator>
#include <memory>
#include <string>

#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/log.h"
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
      RocksInfoLog::Open(dir.path(), {.max_bytes = 4096});
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

int Count(const std::string& text, const std::string& what) {
  int n = 0;
  for (size_t at = text.find(what); at != std::string::npos;
       at = text.find(what, at + 1)) {
    ++n;
  }
  return n;
}

TEST(RocksInfoLogTest, WarningsAndErrorsAlsoReachSessiondsLogAtABoundedRate) {
  testing::TempDir dir;
  absl::StatusOr<std::shared_ptr<RocksInfoLog>> log = RocksInfoLog::Open(
      dir.path(),
      {.forwarded_per_window = 3, .forward_window = absl::Milliseconds(300)});
  ASSERT_TRUE(log.ok()) << log.status();
  std::shared_ptr<rocksdb::Logger> logger = *log;
  logging::Configure(logging::Format::kText, logging::Level::kInfo);

  ::testing::internal::CaptureStderr();
  rocksdb::Log(rocksdb::InfoLogLevel::INFO_LEVEL, logger, "flush %d", 7);
  rocksdb::Log(rocksdb::InfoLogLevel::WARN_LEVEL, logger, "Stalling writes %s",
               "because of L0");
  for (int i = 0; i < 5; ++i) {
    rocksdb::Log(rocksdb::InfoLogLevel::ERROR_LEVEL, logger,
                 "Background IO error %d\n", i);
  }
  std::string captured = ::testing::internal::GetCapturedStderr();
  EXPECT_EQ(captured.find("flush 7"), std::string::npos) << captured;
  EXPECT_NE(captured.find(" warning rocksdb.warning "), std::string::npos)
      << captured;
  EXPECT_NE(captured.find("message=\"Stalling writes because of L0\""),
            std::string::npos)
      << captured;
  // Three per window: the warning and two errors; the rest only in LOG.
  EXPECT_EQ(Count(captured, " rocksdb.error "), 2) << captured;
  EXPECT_NE(captured.find("message=\"Background IO error 1\"\n"),
            std::string::npos)
      << captured;
  EXPECT_EQ(captured.find("Background IO error 2"), std::string::npos)
      << captured;
  const std::string file = ReadAll(dir.path() + "/LOG");
  EXPECT_NE(file.find("flush 7"), std::string::npos);
  EXPECT_NE(file.find("[ERROR] Background IO error 4"), std::string::npos);

  // The next window's first line says how many were left out.
  absl::SleepFor(absl::Milliseconds(400));
  ::testing::internal::CaptureStderr();
  rocksdb::Log(rocksdb::InfoLogLevel::FATAL_LEVEL, logger, "Corruption");
  captured = ::testing::internal::GetCapturedStderr();
  EXPECT_NE(captured.find(" rocksdb.error "), std::string::npos) << captured;
  EXPECT_NE(captured.find("message=Corruption suppressed=3"), std::string::npos)
      << captured;
}

TEST(RocksInfoLogTest, OpenRemovesTheOldLogsOfRocksDbsOwnLogger) {
  testing::TempDir dir;
  for (const char* name :
       {"LOG.old.1701234567890123", "LOG.old.1701234567999999", "LOG.old.1",
        "LOG", "OPTIONS-000007"}) {
    std::ofstream(dir.path() + "/" + name) << "x\n";
  }
  absl::StatusOr<std::shared_ptr<RocksInfoLog>> log =
      RocksInfoLog::Open(dir.path(), {});
  ASSERT_TRUE(log.ok()) << log.status();
  EXPECT_FALSE(
      std::filesystem::exists(dir.path() + "/LOG.old.1701234567890123"));
  EXPECT_FALSE(
      std::filesystem::exists(dir.path() + "/LOG.old.1701234567999999"));
  EXPECT_TRUE(std::filesystem::exists(dir.path() + "/LOG.old.1"));
  EXPECT_TRUE(std::filesystem::exists(dir.path() + "/OPTIONS-000007"));
  EXPECT_EQ(ReadAll(dir.path() + "/LOG"), "x\n");  // appended to, not lost
}

}  // namespace
}  // namespace sessiond::storage
