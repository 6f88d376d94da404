// Copyright sessiond authors. Licensed under the Apache License 2.0.
#ifndef SESSIOND_SERVER_DELAY_QUEUE_H_
#define SESSIOND_SERVER_DELAY_QUEUE_H_

#include <cstdint>
#include <functional>
#include <map>
#include <thread>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/steady_cond_var.h"

namespace sessiond::server {

// How often a write (WritePath) or a LINEARIZABLE read (ReadBarrier) that
// waits for a leader asks again, on the DelayQueue, until its deadline.
inline constexpr absl::Duration kNoLeaderRetry = absl::Milliseconds(20);

// Runs callbacks at a time, on one thread ("sd-timers"): request deadlines,
// retries while no leader is known. A gRPC callback thread must not sleep,
// so work that has to wait is scheduled here instead.
//
// Thread-safe. Callbacks run in time order, one at a time; they must be
// short and must not block. After Stop() nothing more runs (callbacks not
// yet due are dropped: their owners complete on their own paths).
class DelayQueue {
 public:
  DelayQueue();
  ~DelayQueue();  // Stop()s.

  DelayQueue(const DelayQueue&) = delete;
  DelayQueue& operator=(const DelayQueue&) = delete;

  // Names a scheduled callback, for Cancel.
  using Handle = std::pair<SteadyCondVar::Clock::time_point, uint64_t>;

  // `when` is a wall-clock time (a call's deadline): it is turned into a
  // delay at once, and the callback runs when that delay has passed on the
  // steady clock, whatever the wall clock does meanwhile.
  Handle At(absl::Time when, std::function<void()> fn) {
    return After(when - absl::Now(), std::move(fn));
  }
  Handle After(absl::Duration delay, std::function<void()> fn);
  // Drops a callback not yet run (so its captures are released now).
  // Returns false when it ran already or is running.
  bool Cancel(const Handle& handle);

  void Stop();

 private:
  void Loop();

  absl::Mutex mu_;
  SteadyCondVar cv_;
  // Ordered by time, then by insertion.
  std::map<Handle, std::function<void()>> queue_ ABSL_GUARDED_BY(mu_);
  uint64_t next_seq_ ABSL_GUARDED_BY(mu_) = 0;
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  std::thread thread_;
};

}  // namespace sessiond::server

#endif  // SESSIOND_SERVER_DELAY_QUEUE_H_
