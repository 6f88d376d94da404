// Copyright sessiond authors. Licensed under the Apache License 2.0.
//
// DiskGuard's room check on a real directory (the full-disk behaviour, on a
// file system that really fills, is in tests/integration/full_disk_test.cc).
#include "storage/disk_guard.h"

#include <limits>
#include <memory>
#include <string>

#include "absl/strings/match.h"
#include "gtest/gtest.h"
#include "tests/storage/temp_dir.h"

namespace sessiond::storage {
namespace {

TEST(DiskGuardTest, RoomForSaysWhatDoesNotFitAndWhy) {
  testing::TempDir dir;
  DiskGuardOptions options;
  options.dir = dir.path();
  options.low_bytes = 1 << 20;
  options.reserve_bytes = 0;
  absl::StatusOr<std::unique_ptr<DiskGuard>> guard = DiskGuard::Start(options);
  ASSERT_TRUE(guard.ok()) << guard.status();
  absl::StatusOr<uint64_t> free = (*guard)->FreeBytes();
  ASSERT_TRUE(free.ok()) << free.status();
  EXPECT_TRUE((*guard)->RoomFor(1, "a byte").ok());
  const absl::Status none = (*guard)->RoomFor(*free, "all of it");
  EXPECT_EQ(none.code(), absl::StatusCode::kResourceExhausted) << none;
  EXPECT_TRUE(absl::StrContains(none.message(), "all of it needs")) << none;
  EXPECT_TRUE(absl::StrContains(none.message(), dir.path())) << none;
  // A need near 2^64: need + the reserve wrapped to a small sum, and fit.
  EXPECT_EQ((*guard)
                ->RoomFor(std::numeric_limits<uint64_t>::max() - 10, "a lot")
                .code(),
            absl::StatusCode::kResourceExhausted);
}

}  // namespace
}  // namespace sessiond::storage
