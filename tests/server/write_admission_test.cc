// Copyright sessiond authors. Licensed under the Apache License 2.0.
#include "server/write_admission.h"

#include <gtest/gtest.h>

#include <optional>
#include <set>

#include "absl/strings/match.h"
#include "server/grpc_status.h"

namespace sessiond::server {
namespace {

using absl::Milliseconds;

WriteAdmissionOptions Options() {
  return {.target = Milliseconds(50),
          .interval = Milliseconds(100),
          .min_limit = 4,
          .max_limit = 1000};
}

// Admits `n` creates at `now`; returns how many were admitted.
int AdmitMany(WriteAdmission& admission, int n, absl::Duration now) {
  int admitted = 0;
  for (int i = 0; i < n; ++i) admitted += admission.Admit(now).ok() ? 1 : 0;
  return admitted;
}

TEST(WriteAdmissionTest, OffAdmitsEverything) {
  WriteAdmission admission({.target = absl::ZeroDuration()});
  EXPECT_FALSE(admission.enabled());
  EXPECT_EQ(AdmitMany(admission, 10'000, Milliseconds(1)), 10'000);
}

TEST(WriteAdmissionTest, AQueueThatDrainsIsNeverShed) {
  WriteAdmission admission(Options());
  // 2,000 writes per interval, each answered 5 ms after it entered: busy,
  // never queued.
  absl::Duration now = Milliseconds(1);
  for (int step = 0; step < 5'000; ++step) {
    now += Milliseconds(1) / 20;
    ASSERT_TRUE(admission.Admit(now).ok()) << "step " << step;
    admission.Finish(now, now + Milliseconds(5), absl::OkStatus());
  }
  EXPECT_FALSE(admission.state().overloaded);
  EXPECT_EQ(admission.state().refused, 0u);
}

// A target of an interval or more (100 ms): a cross-region cluster's
// setting. With writes in flight and none finished (no quorum, a full disk:
// their UNAVAILABLE answers are not measured), each interval counted as one
// interval's delay, under the target: calm, and the limit grew to its
// maximum. The stall counts over every such interval in a row.
TEST(WriteAdmissionTest, AStallIsOverloadWhateverTheTarget) {
  WriteAdmissionOptions options = Options();
  options.target = Milliseconds(200);
  WriteAdmission admission(options);
  absl::Duration now = Milliseconds(1);
  ASSERT_EQ(AdmitMany(admission, 64, now), 64);
  now += absl::Seconds(1);  // ten intervals, nothing finished
  admission.Admit(now).IgnoreError();
  const WriteAdmissionState state = admission.state();
  EXPECT_TRUE(state.overloaded);
  EXPECT_EQ(state.limit, options.min_limit);
  EXPECT_GE(state.queueing_delay, Milliseconds(300));
}

TEST(WriteAdmissionTest, AStandingQueueShedsCreatesWithARetryDelay) {
  WriteAdmission admission(Options());
  absl::Duration now = Milliseconds(1);
  // 500 creates enter; in the next interval 100 of them finish, the
  // quickest after 150 ms: a standing queue.
  ASSERT_EQ(AdmitMany(admission, 500, now), 500);
  now += Milliseconds(150);
  for (int i = 0; i < 100; ++i) {
    admission.Finish(Milliseconds(1), now, absl::OkStatus());
  }
  now += Milliseconds(100);  // closes the interval
  ASSERT_EQ(admission.Admit(now).code(), absl::StatusCode::kResourceExhausted);
  const WriteAdmissionState state = admission.state();
  EXPECT_TRUE(state.overloaded);
  EXPECT_EQ(state.queueing_delay, Milliseconds(150));
  // What committed in one target's time: 100 per interval x 50/100.
  EXPECT_EQ(state.limit, 50);
  EXPECT_EQ(state.in_flight, 400);
  EXPECT_EQ(state.refused, 1u);

  const absl::Status refused = admission.Admit(now);
  EXPECT_EQ(refused.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_TRUE(absl::StartsWith(refused.message(), "this node is overloaded"))
      << refused;
  const std::optional<ErrorDetail> detail = ErrorDetailOf(refused);
  ASSERT_TRUE(detail.has_value());
  EXPECT_EQ(detail->reason, "OVERLOADED");
  ASSERT_TRUE(detail->retry_delay.has_value());
  // The queueing delay, spread (SpreadRetryDelay): creates refused
  // together are told to come back apart, or they would all be refused
  // together again.
  EXPECT_GE(*detail->retry_delay, Milliseconds(150));
  EXPECT_LE(*detail->retry_delay, Milliseconds(225));
  std::set<absl::Duration> waits;
  for (int i = 0; i < 20; ++i) {
    const std::optional<ErrorDetail> again =
        ErrorDetailOf(admission.Admit(now));
    ASSERT_TRUE(again.has_value() && again->retry_delay.has_value());
    EXPECT_GE(*again->retry_delay, Milliseconds(150));
    EXPECT_LE(*again->retry_delay, Milliseconds(225));
    waits.insert(*again->retry_delay);
  }
  EXPECT_GT(waits.size(), 1u);
}

// A driver whose queue is full refuses proposals at once (RESOURCE_EXHAUSTED
// "too many writes in flight"), a node without a leader or shutting down
// with UNAVAILABLE: those answers took no time in the log's queue, and must
// not pass for a queue that drains.
TEST(WriteAdmissionTest, WritesRefusedAtOnceDoNotHideAStandingQueue) {
  WriteAdmission admission(Options());
  absl::Duration now = Milliseconds(1);
  ASSERT_EQ(AdmitMany(admission, 500, now), 500);
  now += Milliseconds(150);
  // 100 commit after 150 ms; 50 that entered just now are refused by the
  // driver, 10 find the node shutting down.
  for (int i = 0; i < 100; ++i) {
    admission.Finish(Milliseconds(1), now, absl::OkStatus());
  }
  for (int i = 0; i < 50; ++i) {
    admission.Finish(now, now,
                     absl::ResourceExhaustedError("too many writes in flight"));
  }
  for (int i = 0; i < 10; ++i) {
    admission.Finish(now, now, absl::UnavailableError("shutting down"));
  }
  // A write refused by the session table after commit is a measurement.
  admission.Finish(Milliseconds(1), now, absl::NotFoundError("no session"));
  now += Milliseconds(100);
  EXPECT_EQ(admission.Admit(now).code(), absl::StatusCode::kResourceExhausted);
  const WriteAdmissionState state = admission.state();
  EXPECT_TRUE(state.overloaded);
  EXPECT_EQ(state.queueing_delay, Milliseconds(150));
  EXPECT_EQ(state.in_flight, 500 - 161);
  // The limit is what committed: 101 per interval x 50/100.
  EXPECT_EQ(state.limit, 50);
}

// A create given up before it reached the log (its token could not be
// made): its place is free again at once.
TEST(WriteAdmissionTest, AWithdrawnCreateGivesBackItsPlace) {
  WriteAdmissionOptions options = Options();
  options.max_limit = 4;
  WriteAdmission admission(options);
  const absl::Duration now = Milliseconds(1);
  ASSERT_EQ(AdmitMany(admission, 5, now), 4);
  admission.Withdraw(now);
  EXPECT_EQ(admission.state().in_flight, 3);
  EXPECT_TRUE(admission.Admit(now).ok());
  EXPECT_FALSE(admission.Admit(now).ok());
}

// A create withdrawn as soon as it was admitted waited for nothing: the
// interval it was in is no stall, and the limit stays where it was.
TEST(WriteAdmissionTest, AWithdrawnCreateIsNoSignOfAStall) {
  WriteAdmission admission(Options());
  absl::Duration now = Milliseconds(1);
  ASSERT_TRUE(admission.Admit(now).ok());
  admission.Withdraw(now);
  now += Milliseconds(350);
  ASSERT_TRUE(admission.Admit(now).ok());
  EXPECT_FALSE(admission.state().overloaded);
  EXPECT_EQ(admission.state().limit, 1000);
  // One withdrawn while another waits: the other one still makes the
  // interval a stall.
  admission.Enter(now);
  ASSERT_TRUE(admission.Admit(now).ok());
  admission.Withdraw(now);
  now += Milliseconds(100);
  EXPECT_TRUE(admission.Admit(now).ok());
  EXPECT_TRUE(admission.state().overloaded);
}

TEST(WriteAdmissionTest, OtherWritesAreNeverRefusedButCount) {
  WriteAdmission admission(Options());
  absl::Duration now = Milliseconds(1);
  for (int i = 0; i < 2'000; ++i) admission.Enter(now);
  EXPECT_EQ(admission.state().in_flight, 2'000);
  // Nothing finished for a whole interval while writes waited: overloaded,
  // the limit falls to its floor, and creates are refused.
  now += Milliseconds(100);
  EXPECT_FALSE(admission.Admit(now).ok());
  EXPECT_EQ(admission.state().limit, 4);
  // Revocations and the like still enter.
  admission.Enter(now);
  EXPECT_EQ(admission.state().in_flight, 2'001);
}

TEST(WriteAdmissionTest, TheLimitComesBackOnceTheQueueDrains) {
  WriteAdmission admission(Options());
  absl::Duration now = Milliseconds(1);
  ASSERT_EQ(AdmitMany(admission, 100, now), 100);
  now += Milliseconds(100);
  EXPECT_FALSE(admission.Admit(now).ok());  // none finished: floor
  ASSERT_EQ(admission.state().limit, 4);
  // The queue drains quickly; calm intervals raise the limit by a quarter
  // (at least one) each.
  for (int i = 0; i < 100; ++i) {
    admission.Finish(now - Milliseconds(1), now, absl::OkStatus());
  }
  int64_t previous = admission.state().limit;
  for (int interval = 0; interval < 40; ++interval) {
    now += Milliseconds(100);
    ASSERT_TRUE(admission.Admit(now).ok()) << interval;
    admission.Finish(now, now + Milliseconds(2), absl::OkStatus());
    const int64_t limit = admission.state().limit;
    EXPECT_GE(limit, previous);
    previous = limit;
  }
  EXPECT_EQ(previous, 1000);
  EXPECT_EQ(AdmitMany(admission, 999, now), 999);
}

TEST(WriteAdmissionTest, TheLimitNeverFallsBelowTheFloor) {
  WriteAdmission admission(Options());
  absl::Duration now = Milliseconds(1);
  ASSERT_EQ(AdmitMany(admission, 3, now), 3);
  // Three slow writes (a leader election): the floor still admits one more.
  now += Milliseconds(300);
  EXPECT_TRUE(admission.Admit(now).ok());
  EXPECT_FALSE(admission.Admit(now).ok());
}

}  // namespace
}  // namespace sessiond::server
