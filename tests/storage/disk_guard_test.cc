// Copyright sessiond authors. Licensed under the Apache License 2.0.
//
// DiskGuard's room check on a real directory (the full-disk behaviour, on a
// file system that really fills, is in tests/integration/full_disk_test.cc).
#include "storage/disk_guard.h"

#include <limits>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
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

// RocksDB refusing writes for lack of space on a disk with room (its
// recovery after a full disk stuck): the guard refuses writes without
// calling the disk full, keeps its reserve, and tries again after a wait
// that doubles with each refusal in a row instead of at every check.
TEST(DiskGuardTest, ADatabaseRefusingWritesWithRoomIsRetriedLessAndLessOften) {
  testing::TempDir dir;
  DiskGuardOptions options;
  options.dir = dir.path();
  options.low_bytes = 1 << 20;
  options.reserve_bytes = 1 << 20;
  options.check_interval = absl::Milliseconds(5);
  options.min_retry_interval = absl::Milliseconds(5);
  options.max_retry_interval = absl::Milliseconds(20);
  options.refusals_forgotten_after = absl::Hours(1);  // a slow machine
  absl::StatusOr<std::unique_ptr<DiskGuard>> guard = DiskGuard::Start(options);
  ASSERT_TRUE(guard.ok()) << guard.status();
  ASSERT_FALSE((*guard)->low()) << "the test dir's disk is nearly full";
  ASSERT_TRUE((*guard)->state().reserve_held);
  const absl::Status no_space =
      absl::InternalError("IO error: No space left on device");

  const absl::Duration expected_waits[] = {
      absl::Milliseconds(5), absl::Milliseconds(10), absl::Milliseconds(20),
      absl::Milliseconds(20)};
  int refusals = 0;
  for (absl::Duration expected : expected_waits) {
    (*guard)->ReportWriteError(no_space);
    ++refusals;
    ASSERT_TRUE((*guard)->low());
    const DiskGuard::State state = (*guard)->state();
    EXPECT_TRUE(state.database_refuses);
    EXPECT_TRUE(state.reserve_held) << "the disk has room: kept";
    EXPECT_EQ(state.refusals, refusals);
    EXPECT_EQ(state.retry_after, expected);
    const absl::Status refusal = (*guard)->WriteRefusal();
    EXPECT_EQ(refusal.code(), absl::StatusCode::kResourceExhausted);
    EXPECT_TRUE(
        absl::StartsWith(refusal.message(), "the database of this node"))
        << refusal;
    EXPECT_FALSE(absl::StrContains(refusal.message(), "is full")) << refusal;
    // A write in flight failing too is not another refusal.
    (*guard)->ReportWriteError(no_space);
    EXPECT_EQ((*guard)->state().refusals, refusals);
    // The checking thread lets writes be tried again.
    for (int i = 0; i < 10000 && (*guard)->low(); ++i) {
      absl::SleepFor(absl::Milliseconds(1));
    }
    ASSERT_FALSE((*guard)->low());
    EXPECT_FALSE((*guard)->state().database_refuses);
  }
}

}  // namespace
}  // namespace sessiond::storage
