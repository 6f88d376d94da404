// Copyright sessiond authors. Licensed under the Apache License 2.0.
#include "server/periodic_task.h"

#include <pthread.h>

#include <algorithm>
#include <utility>

namespace sessiond::server {

PeriodicTask::PeriodicTask(std::string name, absl::Duration interval,
                           std::function<void()> run)
    : run_(std::move(run)), interval_(interval) {
  thread_ = std::thread([this, name = std::move(name)] {
    pthread_setname_np(pthread_self(), name.c_str());
    Loop();
  });
}

PeriodicTask::~PeriodicTask() { Stop(); }

bool PeriodicTask::Stop() {
  {
    absl::MutexLock lock(&mu_);
    if (stop_) return false;
    stop_ = true;
    cv_.SignalAll();
  }
  if (thread_.joinable()) thread_.join();
  return true;
}

void PeriodicTask::RunSoon() {
  absl::MutexLock lock(&mu_);
  run_soon_ = true;
  cv_.SignalAll();
}

void PeriodicTask::RunWithin(absl::Duration within) {
  absl::MutexLock lock(&mu_);
  run_by_ = std::min(run_by_, SteadyAfter(within));
  cv_.SignalAll();
}

void PeriodicTask::SetInterval(absl::Duration interval) {
  absl::MutexLock lock(&mu_);
  interval_ = interval;
  rescheduled_ = true;
  cv_.SignalAll();
}

void PeriodicTask::Loop() {
  absl::MutexLock lock(&mu_);
  while (!stop_) {
    SteadyCondVar::Clock::time_point deadline = SteadyAfter(interval_);
    rescheduled_ = false;
    while (!stop_ && !run_soon_) {
      if (rescheduled_) {
        deadline = SteadyAfter(interval_);
        rescheduled_ = false;
      }
      if (cv_.WaitUntil(&mu_, std::min(deadline, run_by_))) break;
    }
    if (stop_) break;
    run_soon_ = false;
    run_by_ = SteadyCondVar::Clock::time_point::max();
    mu_.Unlock();
    run_();
    mu_.Lock();
  }
}

}  // namespace sessiond::server
