// Copyright sessiond authors. Licensed under the Apache License 2.0.
#ifndef SESSIOND_COMMON_STEADY_COND_VAR_H_
#define SESSIOND_COMMON_STEADY_COND_VAR_H_

#include <algorithm>
#include <chrono>
#include <condition_variable>

#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace sessiond {

// The steady-clock time `delay` from now; a negative delay is now, and one
// beyond ten years (InfiniteDuration included) is ten years.
inline std::chrono::steady_clock::time_point SteadyAfter(absl::Duration delay) {
  constexpr absl::Duration kFar = absl::Hours(24 * 365 * 10);
  delay = std::clamp(delay, absl::ZeroDuration(), kFar);
  return std::chrono::steady_clock::now() + absl::ToChronoNanoseconds(delay);
}

// A condition variable for an absl::Mutex whose timed waits end by the
// steady clock. absl::CondVar in Abseil 20220623 waits until an absolute
// wall-clock time (a futex with FUTEX_CLOCK_REALTIME), even for
// WaitWithTimeout: a wall clock stepped back by a day during a 10 ms wait
// makes it last a day. Every timer of the daemon (Raft ticks, touch flushes,
// retries, reconnect backoff) waits here instead, so no clock step can stall
// it (docs/ARCHITECTURE.md, "Time").
//
// Thread-safe, like absl::CondVar: Signal and SignalAll may be called with
// or without the mutex held. Waits may wake spuriously; callers loop on
// their condition.
class SteadyCondVar {
 public:
  using Clock = std::chrono::steady_clock;

  // Releases `mu` (held by the caller), waits until signalled or `deadline`,
  // and takes `mu` again. True when the deadline passed.
  bool WaitUntil(absl::Mutex* mu, Clock::time_point deadline) {
    MutexRef lockable{mu};
    return cv_.wait_until(lockable, deadline) == std::cv_status::timeout;
  }
  bool WaitFor(absl::Mutex* mu, absl::Duration timeout) {
    return WaitUntil(mu, SteadyAfter(timeout));
  }
  void Wait(absl::Mutex* mu) {
    MutexRef lockable{mu};
    cv_.wait(lockable);
  }

  void Signal() { cv_.notify_one(); }
  void SignalAll() { cv_.notify_all(); }

 private:
  // What std::condition_variable_any needs of a lock (BasicLockable); the
  // caller holds `mu` around every wait, as with absl::CondVar.
  struct MutexRef {
    absl::Mutex* mu;
    void lock() ABSL_NO_THREAD_SAFETY_ANALYSIS { mu->Lock(); }
    void unlock() ABSL_NO_THREAD_SAFETY_ANALYSIS { mu->Unlock(); }
  };

  std::condition_variable_any cv_;
};

// absl::Notification whose timed wait ends by the steady clock: its own
// WaitForNotificationWithTimeout waits as absl::CondVar does, until a
// wall-clock time (above).
//
// Thread-safe.
class SteadyNotification {
 public:
  void Notify() {
    absl::MutexLock lock(&mu_);
    notified_ = true;
    cv_.SignalAll();
  }
  bool HasBeenNotified() const {
    absl::MutexLock lock(&mu_);
    return notified_;
  }
  // True once notified; false when `timeout` passed first.
  bool WaitForNotificationWithTimeout(absl::Duration timeout) {
    const SteadyCondVar::Clock::time_point deadline = SteadyAfter(timeout);
    absl::MutexLock lock(&mu_);
    while (!notified_) {
      if (cv_.WaitUntil(&mu_, deadline)) return notified_;
    }
    return true;
  }

 private:
  mutable absl::Mutex mu_;
  bool notified_ ABSL_GUARDED_BY(mu_) = false;
  SteadyCondVar cv_;
};

}  // namespace sessiond

#endif  // SESSIOND_COMMON_STEADY_COND_VAR_H_
