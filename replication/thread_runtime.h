// Copyright sessiond authors. Licensed under the Apache License 2.0.
#ifndef SESSIOND_REPLICATION_THREAD_RUNTIME_H_
#define SESSIOND_REPLICATION_THREAD_RUNTIME_H_

#include <array>
#include <chrono>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/steady_cond_var.h"
#include "replication/runtime.h"

namespace sessiond::replication {

// The production Runtime: one named thread per stage ("sd-driver",
// "sd-logwriter", "sd-apply", "sd-complete"), each sleeping until woken, and
// a ticker thread ("sd-ticker") that wakes the driver stage every tick
// interval. Time is the steady clock.
//
// Thread-safe. Stop() joins every thread.
class ThreadRuntime : public Runtime {
 public:
  explicit ThreadRuntime(absl::Duration tick_interval);
  ~ThreadRuntime() override;  // Stop()s.

  ThreadRuntime(const ThreadRuntime&) = delete;
  ThreadRuntime& operator=(const ThreadRuntime&) = delete;

  void Start(StageRunner* runner) override;
  void Wake(Stage stage) override;
  absl::Duration Elapsed() const override;
  void Stop() override;

 private:
  struct StageThread {
    absl::Mutex mu;
    absl::CondVar cv;
    bool woken ABSL_GUARDED_BY(mu) = false;
    bool stop ABSL_GUARDED_BY(mu) = false;
    std::thread thread;
  };

  void StageLoop(Stage stage);
  void TickerLoop();

  const absl::Duration tick_interval_;
  const std::chrono::steady_clock::time_point origin_;
  StageRunner* runner_ = nullptr;  // set by Start; outlives Stop()
  std::array<StageThread, kNumStages> stages_;

  absl::Mutex ticker_mu_;
  SteadyCondVar ticker_cv_;  // ticks follow the steady clock
  bool ticker_stop_ ABSL_GUARDED_BY(ticker_mu_) = false;
  std::thread ticker_;

  absl::Mutex stop_mu_;
  bool stopped_ ABSL_GUARDED_BY(stop_mu_) = false;
};

}  // namespace sessiond::replication

#endif  // SESSIOND_REPLICATION_THREAD_RUNTIME_H_
