// Copyright sessiond authors. Licensed under the Apache License 2.0.
#include "server/peer_wall_clocks.h"

#include <cstdint>

#include "gtest/gtest.h"

namespace sessiond::server {
namespace {

constexpr int64_t kWallMs = 1'700'000'000'000;
constexpr int64_t kHourMs = 3'600'000;

// Hand-driven clocks: this node's wall clock reads kWallMs + wall_step_ms.
class PeerWallClocksTest : public testing::Test {
 protected:
  PeerWallClocks clocks_{PeerWallClocksOptions{
      .fresh_for = absl::Seconds(10),
      .wall_ms = [this] { return kWallMs + wall_step_ms_; },
      .steady_ms = [this] { return steady_ms_; },
  }};
  int64_t wall_step_ms_ = 0;
  int64_t steady_ms_ = 1'000;
};

TEST_F(PeerWallClocksTest, NothingIsJudgedFromFewerThanThreeClocks) {
  EXPECT_FALSE(clocks_.OwnOffMedianMs().has_value());
  clocks_.Heard(NodeId(2), kWallMs + kHourMs);
  EXPECT_FALSE(clocks_.OwnOffMedianMs().has_value())
      << "two clocks that disagree: either may be wrong";
  EXPECT_FALSE(clocks_.OffMedianMs(NodeId(2)).has_value());
}

TEST_F(PeerWallClocksTest, TheOddClockOutIsOffTheMedian) {
  clocks_.Heard(NodeId(2), kWallMs + 40);
  clocks_.Heard(NodeId(3), kWallMs - 2 * kHourMs);
  EXPECT_EQ(clocks_.OwnOffMedianMs(), 0);
  EXPECT_EQ(clocks_.OffMedianMs(NodeId(2)), 40);
  EXPECT_EQ(clocks_.OffMedianMs(NodeId(3)), -2 * kHourMs);
  EXPECT_FALSE(clocks_.OffMedianMs(NodeId(4)).has_value()) << "never heard";
}

TEST_F(PeerWallClocksTest, ThisNodesOwnClockAheadIsJudgedToo) {
  wall_step_ms_ = 30 * 24 * kHourMs;  // stepped 30 days ahead
  clocks_.Heard(NodeId(2), kWallMs);
  clocks_.Heard(NodeId(3), kWallMs + 15);
  // The median is node 3's clock.
  EXPECT_EQ(clocks_.OwnOffMedianMs(), 30 * 24 * kHourMs - 15);
  EXPECT_EQ(clocks_.OffMedianMs(NodeId(2)), -15);
  EXPECT_EQ(clocks_.OffMedianMs(NodeId(3)), 0);
}

TEST_F(PeerWallClocksTest, AnEvenCountTakesTheLowerMiddleClock) {
  clocks_.Heard(NodeId(2), kWallMs + 100);
  clocks_.Heard(NodeId(3), kWallMs + kHourMs);
  clocks_.Heard(NodeId(4), kWallMs + kHourMs + 100);
  // Sorted offsets 0, 100, 1 h, 1 h + 100: the lower middle one is 100.
  EXPECT_EQ(clocks_.OwnOffMedianMs(), -100);
  EXPECT_EQ(clocks_.OffMedianMs(NodeId(4)), kHourMs);
}

TEST_F(PeerWallClocksTest, ReadingsGoStaleAndAreThenLeftOut) {
  clocks_.Heard(NodeId(2), kWallMs);
  steady_ms_ += 8'000;
  clocks_.Heard(NodeId(3), kWallMs + 8'000 - kHourMs);
  ASSERT_EQ(clocks_.OwnOffMedianMs(), 0);
  steady_ms_ += 2'001;  // node 2's reading is 10.001 s old
  EXPECT_FALSE(clocks_.OwnOffMedianMs().has_value());
  EXPECT_FALSE(clocks_.OffMedianMs(NodeId(3)).has_value());
}

TEST_F(PeerWallClocksTest, AFollowerTakesTheJudgementItWasToldWhileFresh) {
  clocks_.Heard(NodeId(1), kWallMs);  // the leader, the only peer it hears
  clocks_.Told(-2 * kHourMs);
  EXPECT_EQ(clocks_.OwnOffMedianMs(), -2 * kHourMs);
  steady_ms_ += 10'001;
  EXPECT_FALSE(clocks_.OwnOffMedianMs().has_value());
}

TEST_F(PeerWallClocksTest, ItsOwnJudgementWinsOverOneItWasTold) {
  clocks_.Told(kHourMs);
  clocks_.Heard(NodeId(2), kWallMs);
  clocks_.Heard(NodeId(3), kWallMs);
  EXPECT_EQ(clocks_.OwnOffMedianMs(), 0);
}

TEST_F(PeerWallClocksTest, AnUnstampedBatchIsNoReading) {
  clocks_.Heard(NodeId(2), kWallMs);
  clocks_.Heard(NodeId(3), 0);  // a binary from before the stamps
  EXPECT_FALSE(clocks_.OwnOffMedianMs().has_value());
}

TEST_F(PeerWallClocksTest, ALaterReadingReplacesAPeersEarlierOne) {
  clocks_.Heard(NodeId(2), kWallMs);
  clocks_.Heard(NodeId(3), kWallMs - kHourMs);
  ASSERT_EQ(clocks_.OffMedianMs(NodeId(3)), -kHourMs);
  clocks_.Heard(NodeId(3), kWallMs + 5);  // its clock was set right
  EXPECT_EQ(clocks_.OffMedianMs(NodeId(3)), 5);
}

}  // namespace
}  // namespace sessiond::server
