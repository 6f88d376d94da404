// Copyright sessiond authors. Licensed under the Apache License 2.0.
#include "common/log_budget.h"

#include <cstdint>

#include "absl/time/time.h"
#include "gtest/gtest.h"

namespace sessiond::logging {
namespace {

TEST(LogBudgetTest, AWindowsShareGoesOutAndTheNextLineCountsTheRest) {
  LogBudget budget(3, absl::Seconds(10));
  const absl::Duration start = absl::Hours(5);
  uint64_t suppressed = 99;
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE(budget.Admit(start + absl::Seconds(i), &suppressed)) << i;
    EXPECT_EQ(suppressed, 0u);
  }
  for (int i = 0; i < 7; ++i) {
    EXPECT_FALSE(budget.Admit(start + absl::Seconds(9), &suppressed));
  }
  ASSERT_TRUE(budget.Admit(start + absl::Seconds(10), &suppressed));
  EXPECT_EQ(suppressed, 7u);
  ASSERT_TRUE(budget.Admit(start + absl::Seconds(11), &suppressed));
  EXPECT_EQ(suppressed, 0u);
}

TEST(LogBudgetTest, TheFirstLineGoesOutWhateverTheClocksOrigin) {
  LogBudget budget(1, absl::Minutes(1));
  uint64_t suppressed = 0;
  EXPECT_TRUE(budget.Admit(absl::ZeroDuration(), &suppressed));
  EXPECT_FALSE(budget.Admit(absl::Seconds(59), &suppressed));
  EXPECT_TRUE(budget.Admit(absl::Minutes(1), &suppressed));
  EXPECT_EQ(suppressed, 1u);
}

}  // namespace
}  // namespace sessiond::logging
