// Copyright sessiond authors. Licensed under the Apache License 2.0.
//
// The expiry breaker's judgement (server/expiry_breaker.h), replayed on
// made-up sessions and clocks: planned expiries never open it, whatever
// their number; expiries that cluster time ran ahead for, and bursts of
// short-lived sessions over the previous window's rate, do.
#include "server/expiry_breaker.h"

#include <cstdint>
#include <vector>

#include "gtest/gtest.h"

namespace sessiond::server {
namespace {

using storage::ExpiredSession;

constexpr int64_t kMinute = 60 * 1000;
constexpr int64_t kWindow = 5 * kMinute;
constexpr int64_t kStart = 1'700'000'000'000;  // cluster time at start

ExpiryBreakerOptions Options() {
  ExpiryBreakerOptions options;
  options.window_ms = kWindow;
  options.share = 0.10;
  options.min_sessions = 100;
  return options;
}

// `n` sessions created at `created`, expiring at `expires`.
std::vector<ExpiredSession> Sessions(int n, int64_t created, int64_t expires) {
  return std::vector<ExpiredSession>(n, ExpiredSession{{}, created, expires});
}

TEST(ExpiryBreakerTest, PlannedExpiriesNeverOpenItWhateverTheirNumber) {
  ExpiryBreakerJudge judge(Options());
  judge.Reset(/*steady_ms=*/0, kStart, /*live=*/10'000);
  // Half the store was created an hour ago with a lifetime ending within
  // the next minute of real time: they expire as planned.
  const int64_t steady = kMinute;
  const int64_t now = kStart + kMinute;
  const auto due = Sessions(5'000, kStart - 60 * kMinute, now - 10);
  const BreakerJudgement judgement = judge.Judge(steady, now, 10'000, due);
  EXPECT_FALSE(judgement.open) << judgement.reason;
  EXPECT_EQ(judgement.unexpected, 0u);
  EXPECT_EQ(judgement.window.planned, 5'000u);
  judge.Count(steady, now, due);
  // Not counted twice: judging nothing more finds the window's 5,000.
  EXPECT_EQ(judge.Judge(steady, now, 5'000, std::vector<ExpiredSession>{})
                .window.planned,
            5'000u);
}

TEST(ExpiryBreakerTest, ClusterTimeAheadOfRealTimeOpensIt) {
  ExpiryBreakerJudge judge(Options());
  judge.Reset(0, kStart, 10'000);
  // One second of real time, but cluster time moved an hour: sessions due
  // within that hour would all expire now.
  const int64_t now = kStart + 60 * kMinute;
  const auto early = Sessions(2'000, kStart - kMinute, kStart + 30 * kMinute);
  const BreakerJudgement judgement = judge.Judge(1000, now, 10'000, early);
  EXPECT_TRUE(judgement.open);
  EXPECT_EQ(judgement.window.early, 2'000u);
  EXPECT_EQ(judgement.threshold, 1'000u);  // 10% of 10,000
  EXPECT_EQ(judgement.earliest_unexpected_ms, kStart + 30 * kMinute);
  EXPECT_NE(judgement.reason.find("2000 early"), std::string::npos)
      << judgement.reason;
  // The same sessions, once real time has caught up with their deadline,
  // are planned.
  EXPECT_FALSE(judge.Judge(30 * kMinute, now, 10'000, early).open);
}

// A jump of cluster time that the first sweep of a new window sees: that
// window starts where the last one last judged, so the sessions the jump
// made due are early. Started at the jumped time, it called them planned
// and let them all expire.
TEST(ExpiryBreakerTest, AJumpSeenAtAWindowsFirstSweepStillOpensIt) {
  ExpiryBreakerJudge judge(Options());
  judge.Reset(0, kStart, 10'000);
  // Sweeps every second, nothing due, up to the window's last second.
  for (int64_t steady = 1000; steady < kWindow; steady += 1000) {
    ASSERT_FALSE(judge
                     .Judge(steady, kStart + steady, 10'000,
                            std::vector<ExpiredSession>{})
                     .open);
  }
  // The next sweep is past the window's end; cluster time moved an hour.
  const int64_t now = kStart + kWindow + 60 * kMinute;
  const auto early =
      Sessions(2'000, kStart - kMinute, kStart + kWindow + 30 * kMinute);
  const BreakerJudgement judgement = judge.Judge(kWindow, now, 10'000, early);
  EXPECT_TRUE(judgement.open) << judgement.window.planned << " planned";
  EXPECT_EQ(judgement.window.early, 2'000u);
  EXPECT_EQ(judgement.window_start_ms, kStart + kWindow - 1000);
}

// Sweeps as far apart as a window (--sweep_interval_ms at or above
// --expiry_breaker_window_ms): each window spans one sweep interval, and a
// jump is still seen. With every judgement starting a window at its own
// cluster time, nothing could ever be early.
TEST(ExpiryBreakerTest, SweepsAWindowApartStillSeeAJump) {
  ExpiryBreakerJudge judge(Options());
  judge.Reset(0, kStart, 10'000);
  const auto planned = Sessions(500, kStart - kMinute, kStart + kWindow - 10);
  const BreakerJudgement first =
      judge.Judge(kWindow, kStart + kWindow, 10'000, planned);
  EXPECT_FALSE(first.open) << first.reason;
  EXPECT_EQ(first.window.planned, 500u);
  // Still the first window: no baseline to judge short-lived sessions by.
  EXPECT_FALSE(first.young_judged);
  judge.Count(kWindow, kStart + kWindow, planned);
  // One window of real time later, cluster time ran an hour further.
  const int64_t now = kStart + 2 * kWindow + 60 * kMinute;
  const auto early =
      Sessions(2'000, kStart - kMinute, kStart + 2 * kWindow + 30 * kMinute);
  const BreakerJudgement second = judge.Judge(2 * kWindow, now, 9'500, early);
  EXPECT_TRUE(second.open);
  EXPECT_EQ(second.window.early, 2'000u);
  EXPECT_EQ(second.window_start_ms, kStart + kWindow);
}

TEST(ExpiryBreakerTest, UpToTheShareExpiresThenItOpens) {
  ExpiryBreakerJudge judge(Options());
  judge.Reset(0, kStart, 10'000);
  const int64_t now = kStart + 60 * kMinute;
  const auto early = Sessions(600, kStart - kMinute, kStart + 30 * kMinute);
  EXPECT_FALSE(judge.Judge(1000, now, 10'000, early).open);  // 600 <= 1000
  judge.Count(1000, now, early);
  // 600 counted + 600 more > 1000.
  EXPECT_TRUE(judge.Judge(2000, now, 9'400, early).open);
}

TEST(ExpiryBreakerTest, FewSessionsNeverOpenItBelowMinSessions) {
  ExpiryBreakerJudge judge(Options());
  judge.Reset(0, kStart, 50);
  // All 50 sessions of a small store expire an hour early: under 100.
  const auto early = Sessions(50, kStart - kMinute, kStart + 30 * kMinute);
  const BreakerJudgement judgement =
      judge.Judge(1000, kStart + 60 * kMinute, 50, early);
  EXPECT_FALSE(judgement.open);
  EXPECT_EQ(judgement.threshold, 100u);
}

TEST(ExpiryBreakerTest, ShortLivedSessionsAreJudgedAgainstThePreviousWindow) {
  ExpiryBreakerJudge judge(Options());
  judge.Reset(0, kStart, 20'000);
  // Window 1 (learning): 3,000 sessions born and dead within it are not
  // judged, they set the baseline.
  const auto churn1 = Sessions(3'000, kStart + kMinute, kStart + 2 * kMinute);
  EXPECT_FALSE(
      judge.Judge(2 * kMinute, kStart + 2 * kMinute, 20'000, churn1).open);
  judge.Count(2 * kMinute, kStart + 2 * kMinute, churn1);
  // Window 2, same churn: expected, quiet. It starts at window 1's last
  // sweep, a second before the sweep that rolls it over.
  const int64_t w2 = kStart + kWindow;
  EXPECT_FALSE(judge
                   .Judge(kWindow - 1000, w2 - 1000, 20'000,
                          std::vector<ExpiredSession>{})
                   .open);
  EXPECT_FALSE(judge.Judge(kWindow, w2, 20'000, std::vector<ExpiredSession>{})
                   .open);  // rolls over
  const auto churn2 = Sessions(3'000, w2 + kMinute, w2 + 2 * kMinute);
  BreakerJudgement judgement =
      judge.Judge(kWindow + 2 * kMinute, w2 + 2 * kMinute, 20'000, churn2);
  EXPECT_FALSE(judgement.open) << judgement.reason;
  EXPECT_TRUE(judgement.young_judged);
  EXPECT_EQ(judgement.young_baseline, 3'000u);
  // Threshold: 10% of (20,000 live + 3,000 expected).
  EXPECT_EQ(judgement.threshold, 2'300u);
  judge.Count(kWindow + 2 * kMinute, w2 + 2 * kMinute, churn2);
  // A client starts creating sessions with a one-second lifetime: 2,400
  // more than expected within the window opens it.
  const auto burst = Sessions(2'400, w2 + 3 * kMinute, w2 + 3 * kMinute + 1000);
  judgement =
      judge.Judge(kWindow + 3 * kMinute, w2 + 3 * kMinute + 500, 20'000, burst);
  EXPECT_TRUE(judgement.open);
  EXPECT_EQ(judgement.unexpected, 2'400u);
  // Not yet expired (the look-ahead): frozen before the first would.
  EXPECT_EQ(judgement.earliest_unexpected_ms, w2 + 3 * kMinute + 1000);
}

TEST(ExpiryBreakerTest, ANewLeadersFirstWindowDoesNotJudgeShortLivedSessions) {
  ExpiryBreakerJudge judge(Options());
  judge.Reset(0, kStart, 1'000);
  // An application whose sessions live a minute: 5,000 per window against
  // 1,000 live. Right after a leader change there is no baseline.
  const auto churn = Sessions(5'000, kStart + 1, kStart + kMinute);
  const BreakerJudgement judgement =
      judge.Judge(kMinute, kStart + kMinute, 1'000, churn);
  EXPECT_FALSE(judgement.open);
  EXPECT_FALSE(judgement.young_judged);
  EXPECT_EQ(judgement.window.young, 5'000u);
}

// A window started in the past (a new leader judging from before a
// catch-up it proposed, 4.5 minutes ago) saw only its last half minute of
// short-lived sessions: the next window must not take that for a whole
// window's worth, or a steady churn would look like ten times too many.
TEST(ExpiryBreakerTest, ABackDatedWindowTeachesNoBaseline) {
  for (const bool back_dated : {false, true}) {
    SCOPED_TRACE(back_dated ? "back-dated" : "seen whole");
    ExpiryBreakerJudge judge(Options());
    const int64_t seen_from = back_dated ? 270'000 : 0;  // steady ms
    judge.Reset(/*steady_ms=*/0, kStart, 10'000, std::nullopt, back_dated);
    // What this judge saw of window 1: 300 one-minute sessions.
    const auto seen = Sessions(300, kStart + seen_from, kStart + kWindow - 1);
    judge.Judge(kWindow - 1, kStart + kWindow - 1, 10'000, seen);
    judge.Count(kWindow - 1, kStart + kWindow - 1, seen);
    judge.Judge(kWindow, kStart + kWindow, 10'000,
                std::vector<ExpiredSession>{});  // rolls over
    // Window 2: the steady churn, 3,000 a window.
    const int64_t w2 = kStart + kWindow;
    const auto churn = Sessions(3'000, w2 + 1, w2 + kMinute);
    const BreakerJudgement judgement =
        judge.Judge(kWindow + kMinute, w2 + kMinute, 10'000, churn);
    if (back_dated) {
      EXPECT_FALSE(judgement.open) << judgement.reason;
      EXPECT_FALSE(judgement.young_judged);
    } else {
      // Seen whole, 300 a window was the baseline: ten times more opens it.
      EXPECT_TRUE(judgement.open);
      EXPECT_TRUE(judgement.young_judged);
    }
  }
}

// Reset with a baseline known from before (the opening's, right after the
// breaker closed): short-lived sessions are judged from the first window.
TEST(ExpiryBreakerTest,
     AFirstWindowWithAKnownBaselineJudgesShortLivedSessions) {
  ExpiryBreakerJudge judge(Options());
  judge.Reset(0, kStart, 1'000, /*young_baseline=*/0);
  const auto churn = Sessions(5'000, kStart + 1, kStart + kMinute);
  const BreakerJudgement judgement =
      judge.Judge(kMinute, kStart + kMinute, 1'000, churn);
  EXPECT_TRUE(judgement.young_judged);
  EXPECT_TRUE(judgement.open);
  EXPECT_EQ(judgement.unexpected, 5'000u);
}

TEST(ExpiryBreakerTest, WhileOpenHeldSessionsClearOnlyWhenNoLongerUnexpected) {
  ExpiryBreakerJudge judge(Options());
  sessiond::v1::ExpiryBreaker breaker;
  breaker.set_open(true);
  breaker.set_window_start_ms(kStart);
  breaker.set_opened_at_ms(kStart + 1000);
  breaker.set_window_real_elapsed_ms(1000);
  breaker.set_frozen_at_ms(kStart + 1000);
  breaker.set_threshold(1'000);
  breaker.set_young_judged(true);
  breaker.set_young_baseline(100);
  // Held back because cluster time ran an hour ahead: unexpected at first,
  // planned once this leader's steady clock has seen the time pass.
  const auto early = Sessions(2'000, kStart - kMinute, kStart + 30 * kMinute);
  const int64_t now = kStart + 60 * kMinute;
  EXPECT_EQ(judge.UnexpectedWhileOpen(breaker, 1000, 0, now, early), 2'000u);
  EXPECT_EQ(judge.UnexpectedWhileOpen(breaker, 30 * kMinute, 0, now, early),
            0u);
  // Born in the window with a tiny lifetime: unexpected over the baseline
  // until they are gone (revoked) or an operator resumes.
  const auto young = Sessions(2'000, kStart + 500, kStart + 1500);
  EXPECT_EQ(judge.UnexpectedWhileOpen(breaker, 60 * kMinute, 0, now, young),
            1'900u);
}

// Review finding: while open, the real time elapsed before the opening was
// taken as opened_at_ms - window_start_ms, cluster times both. When the
// breaker opened because cluster time ran ahead, that span holds the
// run-ahead itself: the next sweep called every held session planned,
// closed the breaker as "cleared" and expired them all.
TEST(ExpiryBreakerTest, AnOpeningForClusterTimeRunningAheadDoesNotClearItself) {
  ExpiryBreakerJudge judge(Options());
  judge.Reset(/*steady_ms=*/0, kStart, /*live=*/10'000);
  // Ten seconds of real time; cluster time ran ten minutes ahead.
  const int64_t opened_at = kStart + 10 * kMinute + 10'000;
  const auto early = Sessions(2'000, kStart - kMinute, kStart + 5 * kMinute);
  const BreakerJudgement judgement =
      judge.Judge(/*steady_ms=*/10'000, opened_at, 10'000, early);
  ASSERT_TRUE(judgement.open);
  // As the open command applies (SessionStateMachine::ApplyExpiryBreaker).
  sessiond::v1::ExpiryBreaker breaker = OpeningFor(judgement, opened_at);
  breaker.set_open(true);
  breaker.set_opened_at_ms(opened_at);
  EXPECT_EQ(breaker.window_start_ms(), kStart);
  EXPECT_LT(breaker.frozen_at_ms(), kStart + 5 * kMinute);
  // The next sweep, a second later: still as unexpected as at the opening.
  EXPECT_EQ(judge.UnexpectedWhileOpen(breaker, 11'000, 10'000,
                                      opened_at + 1'000, early),
            2'000u);
  // Once real time has caught up with their expiry, they are planned.
  EXPECT_EQ(judge.UnexpectedWhileOpen(breaker, 10'000 + 5 * kMinute, 10'000,
                                      opened_at + 5 * kMinute, early),
            0u);
}

// Review finding: an opening that short-lived sessions built up over the
// window (a client minting 30 one-second sessions a second, each sweep
// expiring a second's worth) was judged at the next sweep on the sessions
// it held alone: a few seconds' worth, far under half the threshold. It
// cleared itself, the next window called the held ones planned and expired
// them, and it opened again a minute later: open one second in 67, and
// nearly every such session expired. The window's young expiries now stay
// counted while it is open.
TEST(ExpiryBreakerTest, AnOpeningShortSessionsBuiltUpOverTheWindowStaysOpen) {
  ExpiryBreakerJudge judge(Options());
  judge.Reset(/*steady_ms=*/0, kStart, /*live=*/20'000, /*young_baseline=*/0);
  BreakerJudgement judgement;
  int64_t opened_steady = 0;
  for (int64_t second = 1; second < 300 && !judgement.open; ++second) {
    opened_steady = second * 1000;
    const int64_t now = kStart + opened_steady;
    const auto due = Sessions(30, now - 1000, now);
    judgement = judge.Judge(opened_steady, now, 20'000, due);
    if (!judgement.open) judge.Count(opened_steady, now, due);
  }
  ASSERT_TRUE(judgement.open);
  EXPECT_EQ(judgement.threshold, 2'000u);
  const int64_t opened_at = kStart + opened_steady;
  sessiond::v1::ExpiryBreaker breaker = OpeningFor(judgement, opened_at);
  breaker.set_open(true);
  breaker.set_opened_at_ms(opened_at);
  // The next sweep: two seconds' worth held back.
  const auto held = Sessions(60, opened_at - 1000, opened_at + 1000);
  const uint64_t unexpected = judge.UnexpectedWhileOpen(
      breaker, opened_steady + 1000, opened_steady, opened_at + 1000, held);
  EXPECT_GT(2 * unexpected, breaker.threshold())
      << unexpected << " unexpected: it would clear itself";
}

// A clock catch-up judged before it is proposed: the sessions it leaves
// where they are (last seen before the lag) and makes due are early, and
// over the threshold the opening freezes expiry just before the first of
// them; the ones it moves along (last seen in the lag) do not count.
TEST(ExpiryBreakerTest, ACatchUpThatWouldExpireAMassOpensItBeforeTheJump) {
  const int64_t now = kStart;
  const int64_t since = kStart - kMinute;  // the lag began a minute ago
  const int64_t to = now + 60 * kMinute;   // the jump: an hour
  std::vector<ExpiredSession> due_by_to;
  // Last seen before the lag, due within the jump: the jump would age them.
  for (int i = 0; i < 1'500; ++i) {
    due_by_to.push_back(ExpiredSession{
        {}, kStart - 120 * kMinute, now + 30 * kMinute, since - kMinute});
  }
  // Last seen in the lag: the catch-up moves them, they stay.
  for (int i = 0; i < 5'000; ++i) {
    due_by_to.push_back(
        ExpiredSession{{}, kStart - 120 * kMinute, now + 10 * kMinute, since});
  }
  // Already due now: expiring as planned, whatever the jump.
  for (int i = 0; i < 50; ++i) {
    due_by_to.push_back(ExpiredSession{
        {}, kStart - 120 * kMinute, now - 10, since - 2 * kMinute});
  }
  const auto judge = [&](uint64_t live) {
    return JudgeCatchUp(Options(), /*steady_ms=*/0, now, since, to, live,
                        [&](const auto& visit) {
                          for (const ExpiredSession& s : due_by_to) visit(s);
                        });
  };
  const BreakerJudgement judgement = judge(10'000);
  EXPECT_TRUE(judgement.open);
  EXPECT_EQ(judgement.window.early, 1'500u);
  EXPECT_EQ(judgement.window.planned, 50u);
  EXPECT_EQ(judgement.threshold, 1'000u);
  EXPECT_EQ(OpeningFor(judgement, now).frozen_at_ms(), now);
  // Under the share of a larger store: the catch-up goes alone.
  EXPECT_FALSE(judge(20'000).open) << judge(20'000).reason;
}

TEST(ExpiryBreakerTest, CountHeldSessionsCountsExpiredAfterTheFrozenTime) {
  storage::SessionTable table;
  auto add = [&](int i, int64_t expires_at) {
    sessiond::v1::Session session;
    session.set_session_id("s" + std::to_string(i));
    session.set_user_id("u");
    session.set_created_at_ms(0);
    session.set_expires_at_ms(expires_at);
    session.set_version(1);
    session.set_state(sessiond::v1::SESSION_STATE_ACTIVE);
    storage::TokenHash hash{};
    hash[0] = static_cast<uint8_t>(i);
    ASSERT_TRUE(table.Insert(hash, session).ok());
  };
  add(1, 1'000);  // expired before the freeze: not held
  add(2, 5'000);  // held
  add(3, 6'000);  // held
  add(4, 9'000);  // not expired yet
  EXPECT_EQ(CountHeldSessions(table, /*frozen_at_ms=*/2'000,
                              /*now_ms=*/7'000, /*leeway_ms=*/0),
            2u);
  // With a leeway, every expiry instant moves later.
  EXPECT_EQ(CountHeldSessions(table, 3'000, 7'000, /*leeway_ms=*/1'500), 1u);
}

}  // namespace
}  // namespace sessiond::server
