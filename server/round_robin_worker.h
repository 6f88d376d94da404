// Copyright sessiond authors. Licensed under the Apache License 2.0.
#ifndef SESSIOND_SERVER_ROUND_ROBIN_WORKER_H_
#define SESSIOND_SERVER_ROUND_ROBIN_WORKER_H_

#include <deque>
#include <functional>
#include <string>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"

namespace sessiond::server {

// One thread that runs jobs a slice at a time, taking turns: a job is a
// function that does a bounded amount of work and returns true when the job
// is finished; a job not finished goes to the back of the line. So a long
// job (a BatchValidateSessions of 10,000 tokens) shares the thread with the
// others instead of holding it, and all of them together never take more
// than this one thread's core.
//
// Thread-safe. Jobs run on the worker's thread, one at a time, in
// submission order within each turn.
class RoundRobinWorker {
 public:
  using Job = std::function<bool()>;

  // `name` is the thread's name as `top -H` shows it (at most 15 chars).
  explicit RoundRobinWorker(std::string name);
  ~RoundRobinWorker();  // Stop()s.

  RoundRobinWorker(const RoundRobinWorker&) = delete;
  RoundRobinWorker& operator=(const RoundRobinWorker&) = delete;

  // Queues `job`, to be called until it returns true. After Stop(), runs it
  // to the end on the calling thread.
  void Submit(Job job);

  // Runs every queued job to the end, then joins the thread.
  void Stop();

 private:
  void Loop();

  absl::Mutex mu_;
  absl::CondVar cv_;
  std::deque<Job> jobs_ ABSL_GUARDED_BY(mu_);
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  std::thread thread_;
};

}  // namespace sessiond::server

#endif  // SESSIOND_SERVER_ROUND_ROBIN_WORKER_H_
