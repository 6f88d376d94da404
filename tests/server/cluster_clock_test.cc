// Copyright sessiond authors. Licensed under the Apache License 2.0.
#include "server/cluster_clock.h"

#include <cstdint>
#include <deque>
#include <utility>

#include "gtest/gtest.h"

namespace sessiond::server {
namespace {

constexpr int64_t kStartWallMs = 1'700'000'000'000;
constexpr int64_t kNsPerMs = 1'000'000;

// A leader under steady write load: hand-driven steady and wall clocks (the
// wall clock runs at the steady rate), and an applied time sample that
// takes each stamp `apply_lag_ns` after it was made, as the state machine
// does (max of the stamps, sampled at apply time, moved only by a later
// stamp).
class LoadedLeader {
 public:
  LoadedLeader(int64_t apply_lag_ns, int64_t slew_ppm)
      : apply_lag_ns_(apply_lag_ns),
        clock_(ClusterClockOptions{
            .slew_ppm = slew_ppm,
            .wall_ms = [this] { return kStartWallMs + steady_ns_ / kNsPerMs; },
            .steady_ns = [this] { return steady_ns_; },
            .applied = [this] { return applied_; },
        }) {}

  // One write: stamp it now, then let `gap_ns` of steady time pass,
  // applying what has committed meanwhile.
  int64_t StampAndWait(int64_t gap_ns) {
    const int64_t stamp = clock_.StampMs();
    in_flight_.emplace_back(steady_ns_ + apply_lag_ns_, stamp);
    steady_ns_ += gap_ns;
    while (!in_flight_.empty() && in_flight_.front().first <= steady_ns_) {
      const auto [applied_at, applied_stamp] = in_flight_.front();
      in_flight_.pop_front();
      if (applied_stamp > applied_.cluster_ms) {
        applied_ = {applied_stamp, applied_at};
      }
    }
    return stamp;
  }

  int64_t elapsed_ms() const { return steady_ns_ / kNsPerMs; }
  ClusterClock& clock() { return clock_; }

 private:
  const int64_t apply_lag_ns_;
  int64_t steady_ns_ = 0;
  storage::AppliedTimeSample applied_;
  std::deque<std::pair<int64_t, int64_t>> in_flight_;
  ClusterClock clock_;
};

// Found by the cluster benchmark: under c=64 creates, cluster time fell
// about 0.5 ms behind the wall clock per write (2 s after 5 s of load),
// because each stamp dropped the sub-millisecond part of the steady time
// since the previous one, and a stamp read back from the applied sample
// lost the commit latency again every generation.
TEST(ClusterClockTest, StampsUnderLoadKeepPaceWithSteadyTime) {
  LoadedLeader leader(/*apply_lag_ns=*/2 * kNsPerMs, /*slew_ppm=*/0);
  int64_t first = leader.StampAndWait(300'000);
  int64_t last = first;
  for (int i = 0; i < 20000; ++i) {
    const int64_t stamp = leader.StampAndWait(300'000);
    ASSERT_GE(stamp, last) << "stamps never go back";
    last = stamp;
  }
  // 6 s of steady time passed; without slew, cluster time must have moved
  // by the same 6 s (to the millisecond).
  EXPECT_NEAR(last - first, leader.elapsed_ms(), 1);
  EXPECT_NEAR(leader.clock().SkewMs(), 0, 1);
}

TEST(ClusterClockTest, StampsMicrosecondsApartStillAdvance) {
  LoadedLeader leader(/*apply_lag_ns=*/500'000, /*slew_ppm=*/0);
  const int64_t first = leader.StampAndWait(10'000);
  int64_t last = first;
  for (int i = 0; i < 100000; ++i) last = leader.StampAndWait(10'000);
  EXPECT_NEAR(last - first, leader.elapsed_ms(), 1);  // 1 s in 10 us steps
}

TEST(ClusterClockTest, NowMsOnTheLeaderFollowsItsOwnStamps) {
  LoadedLeader leader(/*apply_lag_ns=*/5 * kNsPerMs, /*slew_ppm=*/1000);
  for (int i = 0; i < 5000; ++i) leader.StampAndWait(700'000);
  EXPECT_NEAR(leader.clock().NowMs(), kStartWallMs + leader.elapsed_ms(), 1);
}

// Hand-set clocks and applied sample, for the tests below.
struct ManualClocks {
  int64_t wall_ms = kStartWallMs;
  int64_t steady_ns = 0;
  storage::AppliedTimeSample applied;

  ClusterClockOptions Options(int64_t slew_ppm = 1000) {
    return ClusterClockOptions{
        .slew_ppm = slew_ppm,
        .wall_ms = [this] { return wall_ms; },
        .steady_ns = [this] { return steady_ns; },
        .applied = [this] { return applied; },
    };
  }
};

// Review finding: a node with nothing applied (an empty data dir: a new or
// replaced member, every node after a restore) estimated cluster time by its
// wall clock, and the estimate's ratchet kept it: once it applied the
// cluster's time, two hours behind its wall clock (the cluster was down, or
// the backup is old), it answered as if two hours had passed, expiring the
// sessions due meanwhile.
TEST(ClusterClockTest, AWallClockGuessBeforeAnythingAppliedIsNotKept) {
  ManualClocks clocks;
  clocks.wall_ms = kStartWallMs + 2 * 3600 * 1000;
  ClusterClock clock(clocks.Options());
  EXPECT_EQ(clock.SkewMs(), 0);  // a status call before the first apply
  EXPECT_EQ(clock.NowMs(), clocks.wall_ms);
  clocks.steady_ns = 5 * kNsPerMs;
  clocks.applied = {kStartWallMs, clocks.steady_ns};  // the snapshot's time
  clocks.steady_ns += 10 * kNsPerMs;
  EXPECT_EQ(clock.NowMs(), kStartWallMs + 10);
  EXPECT_EQ(clock.SkewMs(), 2 * 3600 * 1000 - 10);
}

// Review finding: a node that once led kept projecting its own last stamp
// after another leader took over. When the new leader slewed cluster time
// back toward its slower wall clock, the old leader ran ahead of the applied
// time by all of that correction (answering EXPIRED early, unlike the other
// replicas), and jumped cluster time by as much when it led again.
TEST(ClusterClockTest, AFormerLeaderFollowsTheAppliedTimeNotItsOldStamps) {
  ManualClocks clocks;
  ClusterClock clock(clocks.Options());
  const int64_t stamp = clock.StampMs();  // this node led, once
  clocks.applied = {stamp, clocks.steady_ns};
  // Another leader, its wall clock behind, slows cluster time to 0.999 of
  // real time for an hour, its stamps applied here every 100 ms.
  constexpr int64_t kStepNs = 100 * kNsPerMs;
  for (int i = 1; i <= 36'000; ++i) {
    clocks.steady_ns += kStepNs;
    clocks.applied = {stamp + i * 100 - i / 10, clocks.steady_ns};
  }
  EXPECT_EQ(clocks.applied.cluster_ms, stamp + 3'600'000 - 3'600);
  EXPECT_NEAR(clock.NowMs(), clocks.applied.cluster_ms, 1);
}

// Review finding: a node's slew budget kept growing while another node
// led. With every wall clock a day ahead and leadership moving between two
// nodes every 100 s, each new term began with the budget its node had saved
// while following: cluster time ran ahead at twice the documented rate.
TEST(ClusterClockTest, LeadershipMovingAboutDoesNotAddUpSlew) {
  ManualClocks clocks;
  clocks.wall_ms = kStartWallMs + 24 * 3600 * 1000;  // both a day ahead
  ClusterClock a(clocks.Options());
  ClusterClock b(clocks.Options());
  clocks.applied = {kStartWallMs, 0};
  constexpr int64_t kStepNs = 100 * kNsPerMs;
  constexpr int kStepsPerTerm = 1000;  // 100 s
  constexpr int kTerms = 36;           // an hour
  for (int term = 0; term < kTerms; ++term) {
    ClusterClock& leader = term % 2 == 0 ? a : b;
    for (int i = 0; i < kStepsPerTerm; ++i) {
      clocks.steady_ns += kStepNs;
      clocks.wall_ms += kStepNs / kNsPerMs;
      clocks.applied = {leader.StampMs(), clocks.steady_ns};
    }
  }
  const int64_t real_ms = clocks.steady_ns / kNsPerMs;
  const int64_t advanced = clocks.applied.cluster_ms - kStartWallMs;
  // 1000 ppm of an hour (3.6 s), plus one second of slack.
  EXPECT_LE(advanced - real_ms, real_ms / 1000 + 1000)
      << "cluster time ran " << advanced - real_ms << " ms ahead in " << real_ms
      << " ms";
}

// A member that ran while this leader was down counted time this clock
// never saw. Less than a second of it is taken at once, stamps included.
// More goes through the log: this clock neither reads nor stamps it before
// the catch-up it hands out (once per retry interval) is applied, with the
// point since which the member's clock ran ahead. An observed time past
// this node's wall clock (plus a second) is taken only up to it.
TEST(ClusterClockTest, AMembersTimeIsCaughtUpWithThroughTheLog) {
  int64_t steady_ns = 0;
  storage::AppliedTimeSample applied{kStartWallMs - 12'000, 0};
  ClusterClock clock(ClusterClockOptions{
      .slew_ppm = 0,
      .wall_ms = [&] { return kStartWallMs + steady_ns / kNsPerMs; },
      .steady_ns = [&] { return steady_ns; },
      .applied = [&] { return applied; },
  });
  EXPECT_EQ(clock.NowMs(), kStartWallMs - 12'000);
  EXPECT_EQ(clock.GroundedNowMs(), kStartWallMs - 12'000);
  EXPECT_EQ(clock.AheadOfAppliedMs(), 0);
  ClusterClock::Observed observed = clock.Observe(kStartWallMs - 20'000, 0);
  EXPECT_EQ(observed.moved_ms, 0);  // behind: nothing
  EXPECT_FALSE(observed.catch_up_due);
  observed = clock.Observe(kStartWallMs - 11'500, 0);
  EXPECT_EQ(observed.moved_ms, 500);  // taken at once
  EXPECT_FALSE(observed.catch_up_due);
  EXPECT_EQ(clock.NowMs(), kStartWallMs - 11'500);
  EXPECT_EQ(clock.StampMs(), kStartWallMs - 11'500);
  EXPECT_FALSE(clock.TakeCatchUp());

  const int64_t member_ran_since = kStartWallMs - 30'000;
  observed = clock.Observe(kStartWallMs - 1'000, member_ran_since);
  EXPECT_EQ(observed.moved_ms, 0);
  EXPECT_TRUE(observed.catch_up_due);
  EXPECT_EQ(clock.NowMs(), kStartWallMs - 11'500);
  EXPECT_EQ(clock.StampMs(), kStartWallMs - 11'500);
  steady_ns += 500 * kNsPerMs;
  std::optional<ClusterClock::CatchUp> catch_up = clock.TakeCatchUp();
  ASSERT_TRUE(catch_up);
  EXPECT_EQ(catch_up->to_ms, kStartWallMs - 500);  // the member's, now
  EXPECT_EQ(catch_up->since_ms, member_ran_since);
  EXPECT_FALSE(clock.TakeCatchUp());  // on its way
  EXPECT_EQ(clock.NowMs(), kStartWallMs - 11'000);
  steady_ns += ClusterClock::kCatchUpRetryMs * kNsPerMs;
  catch_up = clock.TakeCatchUp();  // lost: handed out again
  ASSERT_TRUE(catch_up);
  EXPECT_EQ(catch_up->to_ms, kStartWallMs + 2'500);
  // Applied: this clock follows it, and nothing more is due.
  applied = {catch_up->to_ms, steady_ns};
  steady_ns += 200 * kNsPerMs;
  EXPECT_EQ(clock.NowMs(), kStartWallMs + 2'700);
  steady_ns += ClusterClock::kCatchUpRetryMs * kNsPerMs;
  EXPECT_FALSE(clock.TakeCatchUp());

  // An hour past the wall clock: up to the wall clock and a second.
  observed = clock.Observe(kStartWallMs + 3'600'000, member_ran_since);
  EXPECT_EQ(observed.moved_ms, 0);
  EXPECT_TRUE(observed.catch_up_due);
  steady_ns += ClusterClock::kCatchUpRetryMs * kNsPerMs;
  catch_up = clock.TakeCatchUp();
  ASSERT_TRUE(catch_up);
  EXPECT_EQ(catch_up->to_ms, kStartWallMs + steady_ns / kNsPerMs + 1'000);
}

// A member that ran through the others' outage, then applied what a leader
// restarted after it stamped: its clock keeps what it counted, and the
// point it ran from (every stamp of that leader is applied at or after
// it). Elected, it stamps what the log says and hands out its own lead as
// a catch-up.
TEST(ClusterClockTest, AMemberThatRanAheadKeepsThePointItRanFrom) {
  int64_t steady_ns = 0;
  const int64_t ran_from = kStartWallMs - 60'000;
  storage::AppliedTimeSample applied{ran_from, 0};
  ClusterClock clock(ClusterClockOptions{
      .slew_ppm = 0,
      .wall_ms = [&] { return kStartWallMs + steady_ns / kNsPerMs; },
      .steady_ns = [&] { return steady_ns; },
      .applied = [&] { return applied; },
  });
  steady_ns += 20'000 * kNsPerMs;  // the others are down: it counts
  EXPECT_EQ(clock.NowMs(), ran_from + 20'000);
  EXPECT_EQ(clock.JudgeNowMs(), ran_from + 20'000);
  EXPECT_EQ(clock.InStepAppliedMs(), ran_from);
  // The others are back; their leader stamped from where they stopped.
  applied = {ran_from + 100, steady_ns};
  steady_ns += 1'000 * kNsPerMs;
  EXPECT_EQ(clock.NowMs(), ran_from + 21'000);  // it counts on
  EXPECT_EQ(clock.AheadOfAppliedMs(), 19'900);
  EXPECT_EQ(clock.InStepAppliedMs(), ran_from);
  // Reads judge by what it applied (or the lag's sessions would look
  // expired here until the catch-up moves them); the leader stamps that.
  EXPECT_EQ(clock.JudgeNowMs(), ran_from + 1'100);
  EXPECT_EQ(clock.StampMs(), ran_from + 1'100);
  std::optional<ClusterClock::CatchUp> catch_up = clock.TakeCatchUp();
  ASSERT_TRUE(catch_up);
  EXPECT_EQ(catch_up->to_ms, ran_from + 21'000);
  EXPECT_EQ(catch_up->since_ms, ran_from);
  // Applied 1.5 s after it was handed out (a slow commit): the latency is
  // not a lead to hand on (it would start another catch-up, and so on).
  steady_ns += 1'500 * kNsPerMs;
  EXPECT_EQ(clock.NowMs(), ran_from + 22'500);
  applied = {catch_up->to_ms, steady_ns};
  EXPECT_EQ(clock.NowMs(), ran_from + 22'500);  // never back
  EXPECT_EQ(clock.JudgeNowMs(), ran_from + 21'000);
  EXPECT_EQ(clock.InStepAppliedMs(), ran_from + 21'000);
  steady_ns += 1'000 * kNsPerMs;
  // Stands still until the log's time passes it.
  EXPECT_EQ(clock.NowMs(), ran_from + 22'500);
  EXPECT_EQ(clock.AheadOfAppliedMs(), 500);
  EXPECT_EQ(clock.JudgeNowMs(), ran_from + 22'500);
  steady_ns += 1'000 * kNsPerMs;
  EXPECT_EQ(clock.NowMs(), ran_from + 23'000);
  EXPECT_EQ(clock.AheadOfAppliedMs(), 0);
}

// A node that has applied nothing reads its wall clock, a guess: it is not
// cluster time, and a forwarded write must not carry it (a leader taking it
// would jump a cluster restored from an old backup by the backup's age).
TEST(ClusterClockTest, ANodeThatAppliedNothingHasNoClusterTimeToGive) {
  ClusterClock clock(ClusterClockOptions{
      .wall_ms = [] { return kStartWallMs; },
      .steady_ns = [] { return int64_t{0}; },
      .applied = [] { return storage::AppliedTimeSample{}; },
  });
  EXPECT_EQ(clock.NowMs(), kStartWallMs);
  EXPECT_EQ(clock.GroundedNowMs(), std::nullopt);
  EXPECT_EQ(clock.AheadOfAppliedMs(), 0);
}

}  // namespace
}  // namespace sessiond::server
