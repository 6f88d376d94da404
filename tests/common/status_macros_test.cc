// Copyright sessiond authors. Licensed under the Apache License 2.0.
#include "common/status_macros.h"

#include "common/strong_types.h"
#include "gtest/gtest.h"

namespace sessiond {
namespace {

absl::StatusOr<int> Half(int x) {
  if (x % 2 != 0) return absl::InvalidArgumentError("odd");
  return x / 2;
}

absl::StatusOr<int> Quarter(int x) {
  SESSIOND_ASSIGN_OR_RETURN(int half, Half(x));
  SESSIOND_ASSIGN_OR_RETURN(int quarter, Half(half));
  return quarter;
}

absl::Status CheckEven(int x) {
  SESSIOND_RETURN_IF_ERROR(Half(x).status());
  return absl::OkStatus();
}

TEST(StatusMacrosTest, PropagatesErrorsAndValues) {
  EXPECT_EQ(*Quarter(8), 2);
  EXPECT_EQ(Quarter(6).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(CheckEven(4).ok());
  EXPECT_FALSE(CheckEven(3).ok());
}

TEST(StrongTypesTest, ArithmeticAndOrdering) {
  LogIndex a(5);
  EXPECT_EQ((a + 3).value(), 8u);
  EXPECT_EQ(LogIndex(9) - a, 4u);
  EXPECT_LT(a, LogIndex(6));
  ++a;
  EXPECT_EQ(a, LogIndex(6));
}

}  // namespace
}  // namespace sessiond
