// Copyright sessiond authors. Licensed under the Apache License 2.0.
#include "common/steady_cond_var.h"

#include <thread>

#include "absl/synchronization/notification.h"
#include "gtest/gtest.h"

namespace sessiond {
namespace {

TEST(SteadyCondVarTest, ATimedWaitEndsAtItsDeadline) {
  absl::Mutex mu;
  SteadyCondVar cv;
  absl::MutexLock lock(&mu);
  const auto start = SteadyCondVar::Clock::now();
  const auto deadline = start + std::chrono::milliseconds(20);
  // Spurious wakeups allowed: loop as callers do.
  while (!cv.WaitUntil(&mu, deadline)) {
  }
  EXPECT_GE(SteadyCondVar::Clock::now(), deadline);
}

TEST(SteadyCondVarTest, ASignalWakesAWaiterBeforeItsDeadline) {
  absl::Mutex mu;
  SteadyCondVar cv;
  bool ready = false;
  absl::Notification waiting;
  std::thread signaller([&] {
    waiting.WaitForNotification();
    absl::MutexLock lock(&mu);
    ready = true;
    cv.Signal();
  });
  bool timed_out = false;
  {
    absl::MutexLock lock(&mu);
    waiting.Notify();
    // An hour: only the signal can end this wait within the test's time.
    const auto deadline = SteadyAfter(absl::Hours(1));
    while (!ready && !timed_out) timed_out = cv.WaitUntil(&mu, deadline);
  }
  signaller.join();
  EXPECT_TRUE(ready);
  EXPECT_FALSE(timed_out);
}

TEST(SteadyCondVarTest, SteadyAfterClampsNegativeAndInfiniteDelays) {
  const auto now = SteadyCondVar::Clock::now();
  const auto past = SteadyAfter(absl::Seconds(-5));
  EXPECT_GE(past, now);
  EXPECT_LE(past, SteadyCondVar::Clock::now());
  const auto far = SteadyAfter(absl::InfiniteDuration());
  EXPECT_GT(far, now + std::chrono::hours(24 * 365));
}

TEST(SteadyNotificationTest, ATimedWaitEndsAtItsDeadlineUnnotified) {
  SteadyNotification done;
  const auto start = SteadyCondVar::Clock::now();
  EXPECT_FALSE(done.WaitForNotificationWithTimeout(absl::Milliseconds(20)));
  EXPECT_GE(SteadyCondVar::Clock::now(), start + std::chrono::milliseconds(20));
  EXPECT_FALSE(done.HasBeenNotified());
}

TEST(SteadyNotificationTest, ANotifyEndsTheWaitAndStays) {
  SteadyNotification done;
  std::thread notifier([&] { done.Notify(); });
  // An hour: only the notification can end this wait within the test.
  EXPECT_TRUE(done.WaitForNotificationWithTimeout(absl::Hours(1)));
  notifier.join();
  EXPECT_TRUE(done.HasBeenNotified());
  EXPECT_TRUE(done.WaitForNotificationWithTimeout(absl::ZeroDuration()));
}

}  // namespace
}  // namespace sessiond
