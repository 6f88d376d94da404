// Copyright sessiond authors. Licensed under the Apache License 2.0.
#include "common/read_file.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <string>

#include "absl/strings/match.h"
#include "gtest/gtest.h"

namespace sessiond {
namespace {

class ReadFileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char dir[] = "/tmp/sessiond-read-file-XXXXXX";
    ASSERT_NE(::mkdtemp(dir), nullptr);
    dir_ = dir;
  }
  void TearDown() override {
    std::string cmd = "rm -rf '" + dir_ + "'";
    ASSERT_EQ(std::system(cmd.c_str()), 0);
  }
  std::string Write(const std::string& name, const std::string& text) {
    const std::string path = dir_ + "/" + name;
    std::ofstream(path, std::ios::binary) << text;
    return path;
  }

  std::string dir_;
};

TEST_F(ReadFileTest, ReadsTheWholeFile) {
  std::string text(200 * 1024, 'x');
  text += "end";
  absl::StatusOr<std::string> read = ReadWholeFile(Write("big", text));
  ASSERT_TRUE(read.ok()) << read.status();
  EXPECT_EQ(*read, text);
  read = ReadWholeFile(Write("empty", ""));
  ASSERT_TRUE(read.ok()) << read.status();
  EXPECT_EQ(*read, "");
}

// A directory read through std::ifstream came back as an empty file.
TEST_F(ReadFileTest, ADirectoryIsAnErrorNotAnEmptyFile) {
  absl::StatusOr<std::string> read = ReadWholeFile(dir_);
  EXPECT_EQ(read.status().code(), absl::StatusCode::kFailedPrecondition)
      << read.status();
  EXPECT_TRUE(absl::StrContains(read.status().message(), dir_))
      << read.status();
  EXPECT_TRUE(absl::StrContains(read.status().message(), "directory"))
      << read.status();
}

TEST_F(ReadFileTest, EachFailureSaysWhat) {
  EXPECT_EQ(ReadWholeFile(dir_ + "/absent").status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(
      ReadWholeFile(Write("large", std::string(100, 'x')), 99).status().code(),
      absl::StatusCode::kResourceExhausted);
  EXPECT_TRUE(ReadWholeFile(Write("exact", std::string(100, 'x')), 100).ok());
  EXPECT_EQ(ReadWholeFile("/dev/null").status().code(),
            absl::StatusCode::kFailedPrecondition);
  if (::geteuid() != 0) {  // root reads whatever the mode says
    const std::string locked = Write("locked", "secret");
    ASSERT_EQ(::chmod(locked.c_str(), 0), 0);
    EXPECT_EQ(ReadWholeFile(locked).status().code(),
              absl::StatusCode::kPermissionDenied);
  }
}

}  // namespace
}  // namespace sessiond
