// Copyright sessiond authors. Licensed under the Apache License 2.0.
#include "server/delay_queue.h"

#include <pthread.h>

#include <vector>

namespace sessiond::server {

DelayQueue::DelayQueue() {
  thread_ = std::thread([this] {
    pthread_setname_np(pthread_self(), "sd-timers");
    Loop();
  });
}

DelayQueue::~DelayQueue() { Stop(); }

DelayQueue::Handle DelayQueue::After(absl::Duration delay,
                                     std::function<void()> fn) {
  const SteadyCondVar::Clock::time_point when = SteadyAfter(delay);
  absl::MutexLock lock(&mu_);
  const Handle handle(when, next_seq_++);
  if (stop_) return handle;
  const bool earliest = queue_.empty() || handle < queue_.begin()->first;
  queue_.emplace(handle, std::move(fn));
  if (earliest) cv_.Signal();
  return handle;
}

bool DelayQueue::Cancel(const Handle& handle) {
  // Destroyed after the lock is released, in case a capture's destructor
  // schedules again.
  std::function<void()> dropped;
  {
    absl::MutexLock lock(&mu_);
    auto it = queue_.find(handle);
    if (it == queue_.end()) return false;
    dropped = std::move(it->second);
    queue_.erase(it);
  }
  return true;
}

void DelayQueue::Stop() {
  {
    absl::MutexLock lock(&mu_);
    if (stop_) return;
    stop_ = true;
    queue_.clear();
    cv_.Signal();
  }
  if (thread_.joinable()) thread_.join();
}

void DelayQueue::Loop() {
  for (;;) {
    std::vector<std::function<void()>> due;
    {
      absl::MutexLock lock(&mu_);
      while (!stop_) {
        if (queue_.empty()) {
          cv_.Wait(&mu_);
          continue;
        }
        const SteadyCondVar::Clock::time_point next =
            queue_.begin()->first.first;
        if (next <= SteadyCondVar::Clock::now()) break;
        cv_.WaitUntil(&mu_, next);
      }
      if (stop_) return;
      const SteadyCondVar::Clock::time_point now = SteadyCondVar::Clock::now();
      while (!queue_.empty() && queue_.begin()->first.first <= now) {
        due.push_back(std::move(queue_.begin()->second));
        queue_.erase(queue_.begin());
      }
    }
    for (std::function<void()>& fn : due) fn();
  }
}

}  // namespace sessiond::server
