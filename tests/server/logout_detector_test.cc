// Copyright sessiond authors. Licensed under the Apache License 2.0.
//
// The logout detector's logic replayed from sequences of samples (no clock,
// no thread): what alerts, what does not, when alerts clear; and the apply
// counters that feed the new metrics, from real serialized commands.
#include "server/logout_detector.h"

#include <cmath>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "common/metrics_exposition.h"
#include "common/rng.h"
#include "gtest/gtest.h"
#include "server/apply_metrics.h"
#include "sessiond/v1/admin.pb.h"
#include "sessiond/v1/command.pb.h"
#include "sessiond/v1/session.pb.h"

namespace sessiond::server {
namespace {

constexpr int64_t kSecond = 1000;
constexpr int64_t kMinute = 60 * kSecond;
constexpr int64_t kHour = 60 * kMinute;

// One interval's validations by outcome.
struct Interval {
  uint64_t valid = 0;
  uint64_t expired = 0;
  uint64_t revoked = 0;
  uint64_t unknown = 0;
};

// Feeds a detector as the daemon's thread would: cumulative counters, a
// time moving by `step_ms` per sample.
class Feeder {
 public:
  explicit Feeder(const LogoutDetectorOptions& options = {},
                  int64_t step_ms = 5 * kSecond)
      : detector_(options), step_ms_(step_ms) {
    sample_.now_ms = 1'000'000;  // any monotonic origin
  }

  std::vector<LogoutEvent> Next(uint64_t live, const Interval& i) {
    sample_.now_ms += step_ms_;
    sample_.live_sessions = live;
    sample_.valid += i.valid;
    sample_.expired += i.expired;
    sample_.revoked += i.revoked;
    sample_.unknown += i.unknown;
    std::vector<LogoutEvent> events = detector_.Observe(sample_);
    all_.insert(all_.end(), events.begin(), events.end());
    return events;
  }

  const LogoutDetector& detector() const { return detector_; }
  const LogoutSignalState& signal(LogoutSignal s) const {
    return detector_.state().signals[static_cast<int>(s)];
  }
  const std::vector<LogoutEvent>& all() const { return all_; }
  int64_t now_ms() const { return sample_.now_ms; }

 private:
  LogoutDetector detector_;
  const int64_t step_ms_;
  LogoutSample sample_;
  std::vector<LogoutEvent> all_;
};

// `n` validations split by the given shares, with binomial-like noise from
// `rng` (deterministic).
Interval Split(Rng& rng, uint64_t n, double unknown, double expired,
               double revoked) {
  Interval i;
  for (uint64_t k = 0; k < n; ++k) {
    const double u = static_cast<double>(rng.Uniform(1'000'000)) / 1e6;
    if (u < unknown) {
      ++i.unknown;
    } else if (u < unknown + expired) {
      ++i.expired;
    } else if (u < unknown + expired + revoked) {
      ++i.revoked;
    } else {
      ++i.valid;
    }
  }
  return i;
}

std::string Describe(const std::vector<LogoutEvent>& events) {
  std::string text;
  for (const LogoutEvent& e : events) {
    text +=
        std::string(LogoutSignalName(e.signal)) +
        (e.raised ? " raised: " + e.state.detail : " cleared: " + e.reason) +
        "\n";
  }
  return text;
}

TEST(LogoutDetectorTest, SteadyTrafficWithNoiseNeverAlerts) {
  Feeder f;
  Rng rng(7);
  // Two hours at 5 s: 5% unknown, 2% expired, a few revoked, live sessions
  // wobbling by 1%.
  for (int i = 0; i < 2 * 720; ++i) {
    const uint64_t live = 100'000 + rng.Uniform(1000);
    f.Next(live, Split(rng, 400 + rng.Uniform(200), 0.05, 0.02, 0.002));
  }
  EXPECT_TRUE(f.all().empty()) << Describe(f.all());
  EXPECT_TRUE(f.detector().state().ready);
  EXPECT_NEAR(f.signal(LogoutSignal::kUnknown).baseline, 0.05, 0.01);
  EXPECT_NEAR(f.signal(LogoutSignal::kExpired).baseline, 0.02, 0.01);
  EXPECT_GT(f.signal(LogoutSignal::kUnknown).deviation, 0);
}

TEST(LogoutDetectorTest, ABulkRevokeOfAThirdRaisesRevokedOnTheFirstInterval) {
  Feeder f;
  Rng rng(11);
  for (int i = 0; i < 60; ++i) {
    f.Next(50'000, Split(rng, 1000, 0.03, 0.01, 0));
  }
  ASSERT_TRUE(f.all().empty()) << Describe(f.all());
  // 30% of the sessions revoked: 30% of the validations say REVOKED. The
  // table keeps revoked sessions, so the live count does not move.
  const std::vector<LogoutEvent> events =
      f.Next(50'000, Split(rng, 1000, 0.03, 0.01, 0.30));
  ASSERT_EQ(events.size(), 1u) << Describe(events);
  EXPECT_EQ(events[0].signal, LogoutSignal::kRevoked);
  EXPECT_TRUE(events[0].raised);
  EXPECT_NEAR(events[0].state.value, 0.30, 0.05);
  EXPECT_NEAR(events[0].state.baseline, 0, 0.001);
  EXPECT_TRUE(absl::StrContains(events[0].state.detail, "REVOKED answers"))
      << events[0].state.detail;
  EXPECT_TRUE(absl::StrContains(events[0].state.detail, "+25 points"))
      << events[0].state.detail;
  EXPECT_TRUE(f.signal(LogoutSignal::kRevoked).alerting);
  EXPECT_EQ(f.signal(LogoutSignal::kRevoked).raised, 1u);

  // It stays raised (once) while the share stays up; the baseline is frozen.
  for (int i = 0; i < 20; ++i) {
    EXPECT_TRUE(f.Next(50'000, Split(rng, 1000, 0.03, 0.01, 0.30)).empty());
  }
  EXPECT_NEAR(f.signal(LogoutSignal::kRevoked).baseline, 0, 0.001);
  // Restored: back to the baseline, the alert clears.
  const std::vector<LogoutEvent> cleared =
      f.Next(50'000, Split(rng, 1000, 0.03, 0.01, 0));
  ASSERT_EQ(cleared.size(), 1u) << Describe(cleared);
  EXPECT_FALSE(cleared[0].raised);
  EXPECT_EQ(cleared[0].reason, "recovered");
  EXPECT_EQ(cleared[0].duration_ms, 21 * 5 * kSecond);
  EXPECT_FALSE(f.signal(LogoutSignal::kRevoked).alerting);
}

TEST(LogoutDetectorTest, UnknownAndExpiredJumpsAlertUnderTheirOwnKind) {
  Feeder f;
  Rng rng(3);
  for (int i = 0; i < 30; ++i) f.Next(20'000, Split(rng, 500, 0.05, 0.02, 0));
  // A dropped table or a lost key: most tokens are UNKNOWN.
  std::vector<LogoutEvent> e = f.Next(20'000, Split(rng, 500, 0.60, 0.02, 0));
  ASSERT_EQ(e.size(), 1u) << Describe(e);
  EXPECT_EQ(e[0].signal, LogoutSignal::kUnknown);
  // A clock jump: everything EXPIRED (and UNKNOWN clears, REVOKED stays).
  e = f.Next(20'000, Split(rng, 500, 0.0, 0.90, 0));
  ASSERT_EQ(e.size(), 2u) << Describe(e);
  EXPECT_EQ(e[0].signal, LogoutSignal::kUnknown);
  EXPECT_FALSE(e[0].raised);
  EXPECT_EQ(e[1].signal, LogoutSignal::kExpired);
  EXPECT_TRUE(e[1].raised);
}

TEST(LogoutDetectorTest, NothingAlertsBeforeTheBaselineIsWarm) {
  Feeder f;
  Rng rng(5);
  f.Next(10'000, Interval{});  // the first sample only sets the counters
  for (uint64_t i = 0; i < LogoutDetector::kWarmupIntervals; ++i) {
    EXPECT_FALSE(f.detector().state().ready);
    // Even an outlier among the first intervals is learned, not judged.
    f.Next(10'000, Split(rng, 500, i == 2 ? 0.5 : 0.05, 0, 0));
  }
  EXPECT_TRUE(f.all().empty()) << Describe(f.all());
  EXPECT_TRUE(f.detector().state().ready);
  // The mean of the first intervals: (4 x 5% + 50%) / 5 = 14%.
  EXPECT_NEAR(f.signal(LogoutSignal::kUnknown).baseline, 0.14, 0.03);
}

TEST(LogoutDetectorTest, ARiseUnderTheJumpOrWithinTheDeviationsDoesNotAlert) {
  {
    Feeder f;
    Rng rng(9);
    for (int i = 0; i < 30; ++i) f.Next(5'000, Split(rng, 1000, 0.05, 0, 0));
    // +20 points: under the 25-point jump.
    for (int i = 0; i < 10; ++i) f.Next(5'000, Split(rng, 1000, 0.25, 0, 0));
    EXPECT_TRUE(f.all().empty()) << Describe(f.all());
  }
  {
    // A share that swings by 30 points anyway: +30 is within 3 deviations.
    Feeder f;
    Rng rng(13);
    for (int i = 0; i < 100; ++i) {
      f.Next(5'000, Split(rng, 1000, i % 2 ? 0.0 : 0.40, 0, 0));
    }
    EXPECT_GT(f.signal(LogoutSignal::kUnknown).deviation, 0.15);
    f.Next(5'000, Split(rng, 1000, 0.50, 0, 0));
    EXPECT_TRUE(f.all().empty()) << Describe(f.all());
  }
}

TEST(LogoutDetectorTest, AQuietNodeIsNeitherJudgedNorLearnedFrom) {
  Feeder f;
  Rng rng(17);
  for (int i = 0; i < 30; ++i) f.Next(5'000, Split(rng, 1000, 0.02, 0, 0));
  const double baseline = f.signal(LogoutSignal::kUnknown).baseline;
  // Night: 20 validations per interval, all UNKNOWN (a scanner, one stale
  // client): under --logout_detector_min_validations.
  for (int i = 0; i < 100; ++i) {
    f.Next(5'000, Interval{.unknown = 20});
    EXPECT_EQ(f.detector().state().interval_validations, 20u);
  }
  EXPECT_TRUE(f.all().empty()) << Describe(f.all());
  EXPECT_EQ(f.signal(LogoutSignal::kUnknown).baseline, baseline);
}

TEST(LogoutDetectorTest, AnAlertClearsOnlyBelowHalfTheJump) {
  Feeder f;
  Rng rng(19);
  for (int i = 0; i < 30; ++i) f.Next(5'000, Split(rng, 2000, 0, 0, 0));
  ASSERT_EQ(f.Next(5'000, Split(rng, 2000, 0, 0, 0.40)).size(), 1u);
  // 15 points above: under the jump, over half of it: still raised.
  for (int i = 0; i < 5; ++i) {
    EXPECT_TRUE(f.Next(5'000, Split(rng, 2000, 0, 0, 0.15)).empty());
  }
  EXPECT_TRUE(f.signal(LogoutSignal::kRevoked).alerting);
  const std::vector<LogoutEvent> e =
      f.Next(5'000, Split(rng, 2000, 0, 0, 0.08));
  ASSERT_EQ(e.size(), 1u) << Describe(e);
  EXPECT_EQ(e[0].reason, "recovered");
}

// A revocation applied in the middle of an interval shows half of its share
// there and all of it in the next: the first half must not be learned as
// normal (a young baseline moves fast), or the second would not alert.
TEST(LogoutDetectorTest, AStepSplitAcrossTwoIntervalsIsNotLearned) {
  Feeder f;
  f.Next(50'000, Interval{});
  for (uint64_t i = 0; i < LogoutDetector::kWarmupIntervals; ++i) {
    f.Next(50'000, Interval{.valid = 200});
  }
  ASSERT_TRUE(f.detector().state().ready);
  EXPECT_TRUE(f.Next(50'000, Interval{.valid = 172, .revoked = 28}).empty());
  EXPECT_EQ(f.signal(LogoutSignal::kRevoked).baseline, 0);
  const std::vector<LogoutEvent> e =
      f.Next(50'000, Interval{.valid = 146, .revoked = 54});  // 27%
  ASSERT_EQ(e.size(), 1u) << Describe(f.all());
  EXPECT_EQ(e[0].signal, LogoutSignal::kRevoked);
  EXPECT_TRUE(e[0].raised);
}

// +15 points: held back from the baseline but not an alert; after a whole
// baseline of it, it is the new normal, and +25 over it alerts.
TEST(LogoutDetectorTest, AModerateShiftIsHeldBackThenAcceptedQuietly) {
  LogoutDetectorOptions options;
  options.baseline_ms = 10 * kMinute;
  Feeder f(options);
  Rng rng(31);
  for (int i = 0; i < 30; ++i) f.Next(5'000, Split(rng, 2000, 0.05, 0, 0));
  const double before = f.signal(LogoutSignal::kUnknown).baseline;
  for (int i = 0; i < 60; ++i) f.Next(5'000, Split(rng, 2000, 0.20, 0, 0));
  EXPECT_EQ(f.signal(LogoutSignal::kUnknown).baseline, before);
  for (int i = 0; i < 100; ++i) f.Next(5'000, Split(rng, 2000, 0.20, 0, 0));
  EXPECT_NEAR(f.signal(LogoutSignal::kUnknown).baseline, 0.20, 0.02);
  EXPECT_TRUE(f.all().empty()) << Describe(f.all());
  const std::vector<LogoutEvent> e =
      f.Next(5'000, Split(rng, 2000, 0.50, 0, 0));
  ASSERT_EQ(e.size(), 1u) << Describe(e);
  EXPECT_EQ(e[0].signal, LogoutSignal::kUnknown);
}

TEST(LogoutDetectorTest, ALevelThatLastsABaselineIsAccepted) {
  LogoutDetectorOptions options;
  options.baseline_ms = 10 * kMinute;
  Feeder f(options);
  Rng rng(23);
  for (int i = 0; i < 30; ++i) f.Next(5'000, Split(rng, 1000, 0.02, 0, 0));
  ASSERT_EQ(f.Next(5'000, Split(rng, 1000, 0.40, 0, 0)).size(), 1u);
  // A new client that presents unknown tokens, for good: after 10 minutes
  // of alert the level becomes the baseline.
  std::vector<LogoutEvent> accepted;
  for (int i = 0; i < 200 && accepted.empty(); ++i) {
    accepted = f.Next(5'000, Split(rng, 1000, 0.40, 0, 0));
  }
  ASSERT_EQ(accepted.size(), 1u) << Describe(f.all());
  EXPECT_EQ(accepted[0].reason, "accepted");
  EXPECT_EQ(accepted[0].duration_ms, 10 * kMinute);
  EXPECT_NEAR(f.signal(LogoutSignal::kUnknown).baseline, 0.40, 0.05);
  for (int i = 0; i < 100; ++i) f.Next(5'000, Split(rng, 1000, 0.40, 0, 0));
  EXPECT_EQ(f.all().size(), 2u) << Describe(f.all());
}

TEST(LogoutDetectorTest, LiveSessionsFallingAFifthWithinTheWindowAlert) {
  Feeder f;
  for (int i = 0; i < 20; ++i) f.Next(10'000, Interval{});
  // A mass expiry: 25% of the table gone in one sweep. Raised on the
  // second sample below the threshold.
  EXPECT_TRUE(f.Next(7'500, Interval{}).empty());
  const std::vector<LogoutEvent> e = f.Next(7'500, Interval{});
  ASSERT_EQ(e.size(), 1u) << Describe(e);
  EXPECT_EQ(e[0].signal, LogoutSignal::kLiveDrop);
  EXPECT_TRUE(e[0].raised);
  EXPECT_EQ(e[0].state.value, 7'500);
  EXPECT_EQ(e[0].state.baseline, 10'000);
  EXPECT_NEAR(f.detector().state().live_drop, 0.25, 1e-9);
  EXPECT_TRUE(absl::StrContains(e[0].state.detail, "fell 25% within 5m"))
      << e[0].state.detail;
  // It clears once the fall is older than the window (5 min of 5 s).
  std::vector<LogoutEvent> cleared;
  int samples = 0;
  while (cleared.empty() && samples < 200) {
    cleared = f.Next(7'500, Interval{});
    ++samples;
  }
  ASSERT_EQ(cleared.size(), 1u);
  EXPECT_EQ(cleared[0].reason, "recovered");
  // The last sample at 10,000 (5 s before the first at 7,500) leaves the
  // window 5 min after it was taken: 59 samples after the alert.
  EXPECT_EQ(samples, 59);
}

TEST(LogoutDetectorTest, LiveSessionsThatDipForOneSampleOrAreFewDoNotAlert) {
  {
    Feeder f;
    for (int i = 0; i < 20; ++i) f.Next(10'000, Interval{});
    f.Next(0, Interval{});  // a table replaced by a snapshot, caught empty
    for (int i = 0; i < 20; ++i) f.Next(10'000, Interval{});
    EXPECT_TRUE(f.all().empty()) << Describe(f.all());
  }
  {
    Feeder f;  // under --logout_detector_min_sessions (1000)
    for (int i = 0; i < 20; ++i) f.Next(900, Interval{});
    for (int i = 0; i < 20; ++i) f.Next(100, Interval{});
    EXPECT_TRUE(f.all().empty()) << Describe(f.all());
  }
}

// A day replayed at the daemon's default interval with the default options:
// live sessions three times higher at the peak than at night, validations
// following them (a quiet night under the minimum), shares wobbling around
// their usual values, more EXPIRED in the morning when people come back.
// Nothing alerts. The same day with a flush of every session at 14:00
// raises `revoked` at once.
std::vector<LogoutEvent> ReplayDay(bool flush_at_two_pm) {
  Feeder f;
  Rng rng(29);
  const double pi = std::acos(-1.0);
  bool flushed = false;
  for (int64_t t = 0; t < 24 * kHour; t += 5 * kSecond) {
    const double hour = static_cast<double>(t) / kHour;
    // Peak at 15:00, trough at 03:00.
    const double shape = 0.5 - 0.5 * std::cos(2 * pi * (hour - 3) / 24);
    const auto live = static_cast<uint64_t>(200'000 + 400'000 * shape);
    const auto validations = static_cast<uint64_t>(20 + 1500 * shape);
    const double morning = hour > 6 && hour < 10 ? 0.04 : 0.0;
    flushed = flushed || (flush_at_two_pm && hour >= 14);
    f.Next(live, Split(rng, validations, 0.03, 0.02 + morning,
                       flushed ? 0.95 : 0.001));
  }
  return f.all();
}

TEST(LogoutDetectorTest, ADayShapedChurnStaysQuiet) {
  const std::vector<LogoutEvent> events = ReplayDay(false);
  EXPECT_TRUE(events.empty()) << Describe(events);
}

TEST(LogoutDetectorTest, AFlushInTheAfternoonRaisesRevoked) {
  const std::vector<LogoutEvent> events = ReplayDay(true);
  ASSERT_FALSE(events.empty());
  EXPECT_EQ(events[0].signal, LogoutSignal::kRevoked) << Describe(events);
  EXPECT_TRUE(events[0].raised);
}

TEST(LogoutDetectorTest, TimeThatDoesNotMoveAndCountersThatGoBackAreIgnored) {
  LogoutDetector d{LogoutDetectorOptions{}};
  LogoutSample s{.now_ms = 100, .live_sessions = 5000, .valid = 1000};
  EXPECT_TRUE(d.Observe(s).empty());
  LogoutSample same = s;
  same.unknown = 100'000;
  EXPECT_TRUE(d.Observe(same).empty());  // same time: ignored
  LogoutSample back = s;
  back.now_ms = 200;
  back.valid = 10;  // a counter that went down counts as no change
  EXPECT_TRUE(d.Observe(back).empty());
  EXPECT_EQ(d.state().interval_validations, 0u);
}

TEST(LogoutDetectorTest, TheTaskExportsAlertsAndMetrics) {
  LogoutDetectorOptions options;
  options.min_validations = 10;
  uint64_t revoked = 0;
  uint64_t valid = 0;
  LogoutDetectorTask task(options, absl::Hours(1), [&] {
    return LogoutSample{
        .live_sessions = 1234, .valid = valid, .revoked = revoked};
  });
  task.Start();  // the first sample; the thread waits an hour
  for (int i = 0; i < 10; ++i) {
    valid += 100;
    absl::SleepFor(absl::Milliseconds(2));  // a later steady time
    task.SampleOnce();
  }
  EXPECT_TRUE(task.ActiveAlerts().empty());
  valid += 100;
  revoked += 100;
  absl::SleepFor(absl::Milliseconds(2));
  task.SampleOnce();
  const std::vector<sessiond::v1::LogoutAlert> alerts = task.ActiveAlerts();
  ASSERT_EQ(alerts.size(), 1u);
  EXPECT_EQ(alerts[0].kind(), "revoked");
  EXPECT_NEAR(alerts[0].value(), 0.5, 1e-9);
  EXPECT_FALSE(alerts[0].detail().empty());

  metrics::ExpositionWriter w;
  task.Collect(&w);
  const std::string& text = w.text();
  EXPECT_TRUE(
      absl::StrContains(text, "sessiond_logout_alert{kind=\"revoked\"} 1"))
      << text;
  EXPECT_TRUE(
      absl::StrContains(text, "sessiond_logout_alert{kind=\"live_drop\"} 0"));
  EXPECT_TRUE(absl::StrContains(
      text, "sessiond_logout_alerts_total{kind=\"revoked\"} 1"));
  EXPECT_TRUE(absl::StrContains(
      text, "sessiond_logout_outcome_share{outcome=\"revoked\"} 0.5"));
  EXPECT_TRUE(absl::StrContains(text, "sessiond_logout_detector_ready 1"));
  EXPECT_TRUE(
      absl::StrContains(text, "sessiond_logout_live_window_highest 1234"));
  task.Stop();
  EXPECT_EQ(task.ActiveAlerts().size(), 1u);  // the last state stays
}

// ---- ApplyMetrics: the counters behind sessiond_sessions_*_total. --------

replication::Entry EntryOf(const sessiond::v1::internal::Command& command) {
  replication::Entry entry;
  entry.type = replication::EntryType::kNormal;
  entry.data = command.SerializeAsString();
  return entry;
}

TEST(ApplyMetricsTest, CountsEachKindFromTheCommandAndItsResult) {
  using sessiond::v1::internal::Command;
  ApplyMetrics m;
  Command create;
  create.set_timestamp_ms(1'700'000'000'000);
  create.mutable_create()->set_user_id("u");
  m.Count(EntryOf(create), std::any(sessiond::v1::Session()));
  Command batch;
  batch.mutable_create_batch()->add_creates()->set_user_id("u");
  m.Count(EntryOf(batch), std::any(std::vector<sessiond::v1::Session>(3)));
  Command expire;
  expire.set_timestamp_ms(5);
  expire.mutable_expire()->add_token_hashes(std::string(32, 'x'));
  m.Count(EntryOf(expire), std::any(uint64_t{7}));
  Command revoke;
  revoke.mutable_revoke();
  m.Count(EntryOf(revoke), std::any(sessiond::v1::Session()));
  Command user;
  user.mutable_revoke_user()->set_user_id("u");
  m.Count(EntryOf(user), std::any(uint64_t{4}));
  Command bulk;
  bulk.mutable_bulk_revoke()->mutable_confirm();
  sessiond::v1::Revocation flush;
  flush.mutable_selector()->mutable_all();
  flush.set_sessions(100);
  m.Count(EntryOf(bulk), std::any(flush));
  sessiond::v1::Revocation users;
  users.mutable_selector()->mutable_users()->add_user_ids("u");
  users.set_sessions(30);
  m.Count(EntryOf(bulk), std::any(users));
  // A preparation answers its pending record: not a revocation.
  m.Count(EntryOf(bulk), std::any(sessiond::v1::internal::PendingBulkRevoke()));
  Command restore;
  restore.mutable_restore_revocation()->set_revocation_id(9);
  sessiond::v1::Revocation restored;
  restored.set_restored(99);
  m.Count(EntryOf(restore), std::any(restored));
  Command touch;
  touch.mutable_touch()->add_touches();
  m.Count(EntryOf(touch), std::any(uint64_t{12}));
  Command purge;
  purge.mutable_purge_revocations()->add_revocation_ids(9);
  m.Count(EntryOf(purge), std::any(uint64_t{2}));
  // Rejected, replayed (empty result) and membership entries count nothing.
  m.Count(EntryOf(create), absl::AlreadyExistsError("in use"));
  m.Count(EntryOf(create), std::any());
  Command member;
  member.mutable_member();
  m.Count(EntryOf(member), std::any());

  EXPECT_EQ(m.created(), 4u);
  EXPECT_EQ(m.expired(), 7u);
  EXPECT_EQ(m.revoked(ApplyMetrics::RevokeKind::kSession), 1u);
  EXPECT_EQ(m.revoked(ApplyMetrics::RevokeKind::kUser), 4u);
  EXPECT_EQ(m.revoked(ApplyMetrics::RevokeKind::kFlush), 100u);
  EXPECT_EQ(m.revoked(ApplyMetrics::RevokeKind::kBulk), 30u);
  EXPECT_EQ(m.restored(), 99u);
  EXPECT_EQ(m.touch_batches(), 1u);
  EXPECT_EQ(m.touched(), 12u);
  EXPECT_EQ(m.purged(), 2u);

  metrics::ExpositionWriter w;
  m.Collect(&w);
  EXPECT_TRUE(absl::StrContains(
      w.text(), "sessiond_sessions_revoked_total{kind=\"flush\"} 100"))
      << w.text();
  EXPECT_TRUE(absl::StrContains(w.text(), "sessiond_sessions_created_total 4"));
}

}  // namespace
}  // namespace sessiond::server
