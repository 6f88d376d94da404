// Copyright sessiond authors. Licensed under the Apache License 2.0.
//
// storage/durable_file.h on real files, under PowerCutFileSystem (the power
// cut model of power_loss_test): what AppendDurably returned from survives
// a cut, a new file included; failures name the path.
#include "storage/durable_file.h"

#include <fstream>
#include <memory>
#include <sstream>
#include <string>

#include "absl/strings/match.h"
#include "gtest/gtest.h"
#include "tests/storage/power_cut_fs.h"
#include "tests/storage/temp_dir.h"

namespace sessiond::storage {
namespace {

using sessiond::testing::PowerCutFileSystem;
using sessiond::testing::PowerCutOptions;

std::string Contents(const std::string& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

// A cut keeps exactly what was synced: no torn tails, no directory change
// that was not fsynced.
PowerCutOptions Exact() {
  PowerCutOptions options;
  options.torn_tails = false;
  options.partial_directory_changes = false;
  return options;
}

TEST(DurableFileTest, AppendsSurviveAPowerCutFromTheFirstOne) {
  testing::TempDir dir;
  auto fs = std::make_shared<PowerCutFileSystem>(dir.path(), Exact());
  const std::string path = dir.Sub("peers_heard_from");
  ASSERT_TRUE(AppendDurably(path, "2\n", fs.get()).ok());
  ASSERT_TRUE(AppendDurably(path, "3\n", fs.get()).ok());
  ASSERT_TRUE(AppendDurably(path, "", fs.get()).ok());
  fs->CutPower();
  ASSERT_TRUE(fs->ApplyPowerLoss().ok());
  EXPECT_EQ(Contents(path), "2\n3\n");
  // And again after the power came back (the file now predates the model).
  ASSERT_TRUE(AppendDurably(path, "5\n", fs.get()).ok());
  fs->CutPower();
  ASSERT_TRUE(fs->ApplyPowerLoss().ok());
  EXPECT_EQ(Contents(path), "2\n3\n5\n");
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
