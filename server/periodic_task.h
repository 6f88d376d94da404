// Copyright sessiond authors. Licensed under the Apache License 2.0.
#ifndef SESSIOND_SERVER_PERIODIC_TASK_H_
#define SESSIOND_SERVER_PERIODIC_TASK_H_

#include <functional>
#include <string>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/steady_cond_var.h"

namespace sessiond::server {

// A named thread that runs `run` every `interval` until Stop(). The touch
// flusher, the expiry sweeper and the log compactor are each one of these.
//
// Thread-safe. `run` is called on the task's own thread, never concurrently
// with itself, and never after Stop() returns. Declare a PeriodicTask as the
// last member of its owner: the thread starts in the constructor and may call
// `run` (which uses the owner's other members) an interval later.
class PeriodicTask {
 public:
  // `name` is the thread's name as `top -H` shows it (at most 15 chars).
  PeriodicTask(std::string name, absl::Duration interval,
               std::function<void()> run);
  ~PeriodicTask();  // Stop()s.

  PeriodicTask(const PeriodicTask&) = delete;
  PeriodicTask& operator=(const PeriodicTask&) = delete;

  // Runs `run` as soon as the thread is free (after a run in progress),
  // then every interval from then on. Does nothing once stopped.
  void RunSoon();

  // Runs `run` within `within` from now at the latest (earlier when it was
  // due earlier), then every interval from that run. Does nothing once
  // stopped.
  void RunWithin(absl::Duration within);

  // From now on runs every `interval`: the next run comes `interval` after
  // this call (or after a run in progress ends). Does nothing once stopped.
  void SetInterval(absl::Duration interval);

  // Wakes the thread and joins it; a run in progress finishes first.
  // Returns true the first time, false when already stopped.
  bool Stop();

 private:
  void Loop();

  const std::function<void()> run_;
  absl::Mutex mu_;
  SteadyCondVar cv_;  // the interval follows the steady clock
  absl::Duration interval_ ABSL_GUARDED_BY(mu_);
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  bool run_soon_ ABSL_GUARDED_BY(mu_) = false;
  bool rescheduled_ ABSL_GUARDED_BY(mu_) = false;  // SetInterval
  // RunWithin's deadline for the next run (time_point::max(): none).
  SteadyCondVar::Clock::time_point run_by_ ABSL_GUARDED_BY(mu_) =
      SteadyCondVar::Clock::time_point::max();
  std::thread thread_;
};

}  // namespace sessiond::server

#endif  // SESSIOND_SERVER_PERIODIC_TASK_H_
