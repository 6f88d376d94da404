// Copyright sessiond authors. Licensed under the Apache License 2.0.
//
// storage/durable_file.h on real files. That the fsyncs make the bytes
// survive a power cut is not observable here (the page cache outlives the
// process); what is checked is what a caller relies on besides: appends land
// in order, a new file is created, and failures name the path.
#include "storage/durable_file.h"

#include <fstream>
#include <sstream>
#include <string>

#include "absl/strings/match.h"
#include "gtest/gtest.h"
#include "tests/storage/temp_dir.h"

namespace sessiond::storage {
namespace {

std::string Contents(const std::string& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

TEST(DurableFileTest, AppendsCreateTheFileThenAddInOrder) {
  testing::TempDir dir;
  const std::string path = dir.Sub("peers_heard_from");
  ASSERT_TRUE(AppendDurably(path, "2\n").ok());
  ASSERT_TRUE(AppendDurably(path, "3\n").ok());
  ASSERT_TRUE(AppendDurably(path, "").ok());
  EXPECT_EQ(Contents(path), "2\n3\n");
  EXPECT_TRUE(SyncDir(dir.path()).ok());
}

TEST(DurableFileTest, FailuresNameThePath) {
  testing::TempDir dir;
  const std::string path = dir.Sub("missing-folder/file");
  const absl::Status appended = AppendDurably(path, "1\n");
  EXPECT_EQ(appended.code(), absl::StatusCode::kInternal);
  EXPECT_TRUE(absl::StrContains(appended.message(), path)) << appended;
  const absl::Status synced = SyncDir(dir.Sub("missing-folder"));
  EXPECT_EQ(synced.code(), absl::StatusCode::kInternal);
  EXPECT_TRUE(absl::StrContains(synced.message(), "missing-folder")) << synced;
}

}  // namespace
}  // namespace sessiond::storage
