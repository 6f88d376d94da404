// Copyright sessiond authors. Licensed under the Apache License 2.0.
#include "replication/thread_runtime.h"

#include <pthread.h>

#include <string>

#include "absl/time/clock.h"

namespace sessiond::replication {

const char* StageName(Stage stage) {
  switch (stage) {
    case Stage::kDriver:
      return "driver";
    case Stage::kLogWriter:
      return "logwriter";
    case Stage::kApply:
      return "apply";
    case Stage::kCompletion:
      return "complete";
  }
  return "?";
}

ThreadRuntime::ThreadRuntime(absl::Duration tick_interval)
    : tick_interval_(tick_interval),
      origin_(std::chrono::steady_clock::now()) {}

ThreadRuntime::~ThreadRuntime() { Stop(); }

void ThreadRuntime::Start(StageRunner* runner) {
  runner_ = runner;
  for (int i = 0; i < kNumStages; ++i) {
    const Stage stage = static_cast<Stage>(i);
    stages_[i].thread = std::thread([this, stage] {
      // Named threads make profiles and debugger sessions readable.
      pthread_setname_np(pthread_self(),
                         (std::string("sd-") + StageName(stage)).c_str());
      StageLoop(stage);
    });
  }
  ticker_ = std::thread([this] {
    pthread_setname_np(pthread_self(), "sd-ticker");
    TickerLoop();
  });
}

void ThreadRuntime::Wake(Stage stage) {
  StageThread& s = stages_[static_cast<int>(stage)];
  absl::MutexLock lock(&s.mu);
  if (!s.woken) {
    s.woken = true;
    s.cv.Signal();
  }
}

absl::Duration ThreadRuntime::Elapsed() const {
  return absl::FromChrono(std::chrono::steady_clock::now() - origin_);
}

void ThreadRuntime::StageLoop(Stage stage) {
  StageThread& s = stages_[static_cast<int>(stage)];
  for (;;) {
    bool stop;
    {
      absl::MutexLock lock(&s.mu);
      while (!s.woken && !s.stop) s.cv.Wait(&s.mu);
      stop = s.stop;
      s.woken = false;
    }
    // A stopping stage runs once more, so work handed to it before the stop
    // (by the stages stopped before it) is finished, not dropped.
    runner_->RunStage(stage);
    if (stop) return;
  }
}

void ThreadRuntime::TickerLoop() {
  absl::MutexLock lock(&ticker_mu_);
  while (!ticker_stop_) {
    ticker_cv_.WaitFor(&ticker_mu_, tick_interval_);
    if (ticker_stop_) break;
    // The driver counts the ticks due from Elapsed(); this only wakes it.
    Wake(Stage::kDriver);
  }
}

void ThreadRuntime::Stop() {
  {
    absl::MutexLock lock(&stop_mu_);
    if (stopped_) return;
    stopped_ = true;
  }
  {
    absl::MutexLock lock(&ticker_mu_);
    ticker_stop_ = true;
    ticker_cv_.SignalAll();
  }
  if (ticker_.joinable()) ticker_.join();
  // In stage order: each stage's last run sees everything the stages before
  // it handed over.
  for (StageThread& s : stages_) {
    {
      absl::MutexLock lock(&s.mu);
      s.stop = true;
      s.cv.Signal();
    }
    if (s.thread.joinable()) s.thread.join();
  }
}

}  // namespace sessiond::replication
