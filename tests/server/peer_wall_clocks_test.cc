// Copyright sessiond authors. Licensed under the Apache License 2.0.
#include "server/peer_wall_clocks.h"

#include <cstdint>
#include <limits>

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
  clocks_.Heard(NodeId(3), kWallMs + 200);
  clocks_.Heard(NodeId(4), kWallMs + kHourMs);
  // Sorted offsets 0, 100, 200, 1 h: the lower middle one is 100.
  EXPECT_EQ(clocks_.OwnOffMedianMs(), -100);
  EXPECT_EQ(clocks_.OffMedianMs(NodeId(4)), kHourMs - 100);
}

// Two clocks two minutes behind, two right: whichever pair the median took,
// the other would be refused and the wrong one would sign. No verdict.
TEST_F(PeerWallClocksTest, TwoClocksAgainstTwoIsNoVerdict) {
  clocks_.Heard(NodeId(2), kWallMs + 10);
  clocks_.Heard(NodeId(3), kWallMs - 120'000);
  clocks_.Heard(NodeId(4), kWallMs - 120'020);
  EXPECT_FALSE(clocks_.OwnOffMedianMs().has_value());
  EXPECT_FALSE(clocks_.OffMedianMs(NodeId(3)).has_value());
  // A fifth clock that sides with either settles it.
  clocks_.Heard(NodeId(5), kWallMs + 20);
  EXPECT_EQ(clocks_.OwnOffMedianMs(), 0);  // the median is this clock
  EXPECT_EQ(clocks_.OffMedianMs(NodeId(3)), -120'000);
}

// A step of this node's own clock counts at once, before any batch comes:
// the verdict is about the reading it would sign.
TEST_F(PeerWallClocksTest, AStepOfItsOwnClockIsJudgedAtOnce) {
  clocks_.Heard(NodeId(2), kWallMs);
  clocks_.Heard(NodeId(3), kWallMs);
  ASSERT_EQ(clocks_.OwnOffMedianMs(), 0);
  steady_ms_ += 500;
  wall_step_ms_ = 500 - 24 * kHourMs;  // half a second on, stepped a day back
  EXPECT_EQ(clocks_.OwnOffMedianMs(), -24 * kHourMs);
  EXPECT_EQ(clocks_.OffMedianMs(NodeId(2)), 0);
}

TEST_F(PeerWallClocksTest, AToldJudgementFollowsAStepOfItsOwnClock) {
  clocks_.Told(-30);
  steady_ms_ += 1'000;
  wall_step_ms_ = 1'000 + 2 * kHourMs;
  EXPECT_EQ(clocks_.OwnOffMedianMs(), 2 * kHourMs - 30);
}

TEST_F(PeerWallClocksTest, ReadingsNoClockCouldGiveAreIgnored) {
  clocks_.Heard(NodeId(2), kWallMs);
  clocks_.Heard(NodeId(3), std::numeric_limits<int64_t>::max());
  clocks_.Heard(NodeId(4), -5);
  EXPECT_FALSE(clocks_.OwnOffMedianMs().has_value());
  clocks_.Told(std::numeric_limits<int64_t>::min());
  EXPECT_FALSE(clocks_.OwnOffMedianMs().has_value());
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
