// Copyright sessiond authors. Licensed under the Apache License 2.0.
#include "common/fault_point.h"

#include "absl/time/clock.h"
#include "gtest/gtest.h"

namespace sessiond {
namespace {

TEST(FaultPointTest, ParsesNameAndCount) {
  EXPECT_TRUE(ArmFaultPoint("log.after_append"));
  EXPECT_TRUE(ArmFaultPoint("log.after_append@3"));
  EXPECT_FALSE(ArmFaultPoint("log.after_append@0"));
  EXPECT_FALSE(ArmFaultPoint("log.after_append@three"));
  EXPECT_FALSE(ArmFaultPoint("log.after_append@"));
  EXPECT_TRUE(ArmFaultPoint("apply.before_apply~250"));
  EXPECT_TRUE(ArmFaultPoint("apply.before_apply@2~250"));
  EXPECT_FALSE(ArmFaultPoint("apply.before_apply~0"));
  EXPECT_FALSE(ArmFaultPoint("apply.before_apply~"));
  EXPECT_FALSE(ArmFaultPoint("apply.before_apply@0~5"));
  EXPECT_TRUE(ArmFaultPoint("storage.write_jams!"));
  EXPECT_TRUE(ArmFaultPoint("storage.write_jams@7!"));
  EXPECT_FALSE(ArmFaultPoint("storage.write_jams~5!"));
  EXPECT_FALSE(ArmFaultPoint("storage.write_jams@0!"));
  EXPECT_TRUE(ArmFaultPoint(""));  // disarms
}

// A failure never exits: its n-th pass fails, once.
TEST(FaultPointTest, AFailureFailsTheNthPassOnly) {
  ASSERT_TRUE(ArmFaultPoint("unit.fail@2!"));
  SESSIOND_FAULT_POINT("unit.fail");  // never crashes
  EXPECT_FALSE(SESSIOND_FAULT_POINT_FAILS("unit.fail"));
  EXPECT_FALSE(SESSIOND_FAULT_POINT_FAILS("other.fail"));
  EXPECT_TRUE(SESSIOND_FAULT_POINT_FAILS("unit.fail"));
  EXPECT_FALSE(SESSIOND_FAULT_POINT_FAILS("unit.fail"));
  SESSIOND_FAULT_POINT("unit.fail");
  ASSERT_TRUE(ArmFaultPoint(""));
  EXPECT_FALSE(SESSIOND_FAULT_POINT_FAILS("unit.fail"));
}

// A stall never exits: from its n-th pass on, each pass sleeps instead.
TEST(FaultPointTest, AStallSleepsAtEachPassFromTheNthOn) {
  ASSERT_TRUE(ArmFaultPoint("unit.stall@2~200"));
  const absl::Time start = absl::Now();
  SESSIOND_FAULT_POINT("unit.stall");  // the first pass: no sleep
  SESSIOND_FAULT_POINT("unit.stall");
  SESSIOND_FAULT_POINT("unit.stall");
  // At least the two sleeps; no upper bound (a loaded machine is slow).
  EXPECT_GE(absl::Now() - start, absl::Milliseconds(400));
  ASSERT_TRUE(ArmFaultPoint(""));
}

TEST(FaultPointTest, CrashesAtTheNthPassOnly) {
  EXPECT_EXIT(
      {
        ArmFaultPoint("unit.point@3");
        SESSIOND_FAULT_POINT("unit.point");
        SESSIOND_FAULT_POINT("other.point");
        SESSIOND_FAULT_POINT("unit.point");
        SESSIOND_FAULT_POINT("unit.point");  // the third pass: exits here
        std::_Exit(0);
      },
      ::testing::ExitedWithCode(kFaultPointExitCode), "unit.point reached");
}

TEST(FaultPointTest, DisarmedPointsDoNothing) {
  ASSERT_TRUE(ArmFaultPoint(""));
  SESSIOND_FAULT_POINT("unit.point");
  SUCCEED();
}

}  // namespace
}  // namespace sessiond
