// Copyright sessiond authors. Licensed under the Apache License 2.0.
//
// The per-caller create limit (server/create_rate_limiter.h) with a stepped
// clock.
#include "server/create_rate_limiter.h"

#include <optional>
#include <set>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "server/grpc_status.h"

namespace sessiond::server {
namespace {

absl::Duration At(double seconds) { return absl::Seconds(seconds); }

TEST(CreateRateLimiterTest, OffByDefault) {
  CreateRateLimiter limiter(CreateRateLimiterOptions{});
  EXPECT_FALSE(limiter.enabled());
  for (int i = 0; i < 1000; ++i) {
    ASSERT_TRUE(limiter.Admit("app", 1000, At(0)).ok());
  }
  EXPECT_EQ(limiter.identities(), 0u);
}

TEST(CreateRateLimiterTest, BurstThenRateAndARetryDelayThatIsRight) {
  CreateRateLimiter limiter({.rate_per_s = 10, .burst = 5});
  for (int i = 0; i < 5; ++i) ASSERT_TRUE(limiter.Admit("app", 1, At(0)).ok());
  const absl::Status refused = limiter.Admit("app", 1, At(0));
  ASSERT_TRUE(absl::IsResourceExhausted(refused)) << refused;
  EXPECT_TRUE(absl::StrContains(refused.message(), "for app")) << refused;
  EXPECT_TRUE(
      absl::StrContains(refused.message(), "--create_rate_per_identity"))
      << refused;
  std::optional<ErrorDetail> detail = ErrorDetailOf(refused);
  ASSERT_TRUE(detail.has_value());
  EXPECT_EQ(detail->reason, "RATE_LIMITED");
  ASSERT_TRUE(detail->retry_delay.has_value());
  // One token's wait, spread (SpreadRetryDelay).
  EXPECT_GE(*detail->retry_delay, absl::Milliseconds(100));
  EXPECT_LE(*detail->retry_delay, absl::Milliseconds(150));
  // A refusal took nothing: 100 ms later exactly one more passes.
  EXPECT_TRUE(limiter.Admit("app", 1, At(0.1)).ok());
  EXPECT_FALSE(limiter.Admit("app", 1, At(0.1)).ok());
  // Refills to the burst, not beyond.
  for (int i = 0; i < 5; ++i) {
    ASSERT_TRUE(limiter.Admit("app", 1, At(100)).ok());
  }
  EXPECT_FALSE(limiter.Admit("app", 1, At(100)).ok());
}

// Callers refused at the same moment were all told the same wait, so they
// came back together and were refused together again. Each is told at
// least the wait it needs, spread over half as much again.
TEST(CreateRateLimiterTest, CallersRefusedTogetherAreToldToComeBackApart) {
  CreateRateLimiter limiter({.rate_per_s = 10, .burst = 1});
  ASSERT_TRUE(limiter.Admit("app", 1, At(0)).ok());
  std::set<absl::Duration> waits;
  for (int i = 0; i < 20; ++i) {
    const absl::Status refused = limiter.Admit("app", 1, At(0));
    ASSERT_TRUE(absl::IsResourceExhausted(refused)) << refused;
    const std::optional<absl::Duration> wait =
        ErrorDetailOf(refused)->retry_delay;
    ASSERT_TRUE(wait.has_value());
    EXPECT_GE(*wait, absl::Milliseconds(100));
    EXPECT_LE(*wait, absl::Milliseconds(150));
    waits.insert(*wait);
  }
  EXPECT_GT(waits.size(), 1u);
}

TEST(CreateRateLimiterTest, CallersHaveTheirOwnBuckets) {
  CreateRateLimiter limiter({.rate_per_s = 1, .burst = 2});
  ASSERT_TRUE(limiter.Admit("noisy", 2, At(0)).ok());
  EXPECT_FALSE(limiter.Admit("noisy", 1, At(0)).ok());
  EXPECT_TRUE(limiter.Admit("quiet", 2, At(0)).ok());
  EXPECT_EQ(limiter.identities(), 2u);
}

TEST(CreateRateLimiterTest, ABatchLargerThanTheBurstPassesFromAFullBucket) {
  CreateRateLimiter limiter({.rate_per_s = 10, .burst = 10});
  ASSERT_TRUE(limiter.Admit("app", 1, At(0)).ok());
  // Not full: refused, and told to wait for one token.
  const absl::Status refused = limiter.Admit("app", 50, At(0));
  ASSERT_FALSE(refused.ok());
  const std::optional<absl::Duration> wait =
      ErrorDetailOf(refused)->retry_delay;
  ASSERT_TRUE(wait.has_value());
  EXPECT_GE(*wait, absl::Milliseconds(100));
  EXPECT_LE(*wait, absl::Milliseconds(150));
  // Full: passes and leaves the bucket 40 in debt (4 s at 10/s).
  ASSERT_TRUE(limiter.Admit("app", 50, At(0.1)).ok());
  EXPECT_FALSE(limiter.Admit("app", 1, At(4.0)).ok());
  EXPECT_TRUE(limiter.Admit("app", 1, At(4.2)).ok());
}

// Creates refused before anything was proposed (an overloaded node, no
// leader) are given back: a caller retrying through an overload was rate
// limited for creates it never made.
TEST(CreateRateLimiterTest, RefundedCreatesPassAgainUpToTheBurst) {
  CreateRateLimiter limiter({.rate_per_s = 1, .burst = 2});
  ASSERT_TRUE(limiter.Admit("app", 2, At(0)).ok());
  EXPECT_FALSE(limiter.Admit("app", 1, At(0)).ok());
  limiter.Refund("app", 1);
  EXPECT_TRUE(limiter.Admit("app", 1, At(0)).ok());
  EXPECT_FALSE(limiter.Admit("app", 1, At(0)).ok());
  limiter.Refund("app", 5);  // no more than the burst
  ASSERT_TRUE(limiter.Admit("app", 2, At(0)).ok());
  EXPECT_FALSE(limiter.Admit("app", 1, At(0)).ok());
  limiter.Refund("stranger", 3);  // no bucket: nothing to give back
  EXPECT_EQ(limiter.identities(), 1u);
}

TEST(CreateRateLimiterTest, MemoryIsBoundedAndIdleCallersAreForgottenFirst) {
  // 16 shards of one bucket each.
  CreateRateLimiter limiter(
      {.rate_per_s = 1, .burst = 1, .max_identities = 16});
  for (int i = 0; i < 1000; ++i) {
    ASSERT_TRUE(limiter.Admit(absl::StrCat("caller-", i), 1, At(0)).ok());
  }
  EXPECT_LE(limiter.identities(), 16u);
  EXPECT_GT(limiter.untracked(), 0u);
  // Later every bucket has refilled: new callers take their places.
  const uint64_t untracked = limiter.untracked();
  for (int i = 0; i < 1000; ++i) {
    ASSERT_TRUE(limiter.Admit(absl::StrCat("later-", i), 1, At(10)).ok());
  }
  EXPECT_LE(limiter.identities(), 16u);
  EXPECT_LT(limiter.untracked() - untracked, 1000u);
}

}  // namespace
}  // namespace sessiond::server
