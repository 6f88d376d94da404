// Copyright sessiond authors. Licensed under the Apache License 2.0.
#include "server/round_robin_worker.h"

#include <pthread.h>

#include <utility>

namespace sessiond::server {

RoundRobinWorker::RoundRobinWorker(std::string name) {
  thread_ = std::thread([this, name = std::move(name)] {
    pthread_setname_np(pthread_self(), name.c_str());
    Loop();
  });
}

RoundRobinWorker::~RoundRobinWorker() { Stop(); }

void RoundRobinWorker::Submit(Job job) {
  {
    absl::MutexLock lock(&mu_);
    if (!stop_) {
      jobs_.push_back(std::move(job));
      cv_.Signal();
      return;
    }
  }
  while (!job()) {
  }
}

void RoundRobinWorker::Stop() {
  {
    absl::MutexLock lock(&mu_);
    stop_ = true;
    cv_.Signal();
  }
  if (thread_.joinable()) thread_.join();
}

void RoundRobinWorker::Loop() {
  while (true) {
    Job job;
    {
      absl::MutexLock lock(&mu_);
      while (!stop_ && jobs_.empty()) cv_.Wait(&mu_);
      if (jobs_.empty()) return;  // stopped, and every job ran to its end
      job = std::move(jobs_.front());
      jobs_.pop_front();
    }
    if (!job()) {
      absl::MutexLock lock(&mu_);
      jobs_.push_back(std::move(job));
    }
  }
}

}  // namespace sessiond::server
