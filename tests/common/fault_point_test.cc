// Copyright sessiond authors. Licensed under the Apache License 2.0.
#include "common/fault_point.h"

#include "gtest/gtest.h"

namespace sessiond {
namespace {

TEST(FaultPointTest, ParsesNameAndCount) {
  EXPECT_TRUE(ArmFaultPoint("log.after_append"));
  EXPECT_TRUE(ArmFaultPoint("log.after_append@3"));
  EXPECT_FALSE(ArmFaultPoint("log.after_append@0"));
  EXPECT_FALSE(ArmFaultPoint("log.after_append@three"));
  EXPECT_FALSE(ArmFaultPoint("log.after_append@"));
  EXPECT_TRUE(ArmFaultPoint(""));  // disarms
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
