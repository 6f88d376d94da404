// Copyright sessiond authors. Licensed under the Apache License 2.0.
#include "server/round_robin_worker.h"

#include <string>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "gtest/gtest.h"

namespace sessiond::server {
namespace {

// Records which job ran each slice.
class Trace {
 public:
  void Add(char job) {
    absl::MutexLock lock(&mu_);
    trace_ += job;
  }
  std::string Get() {
    absl::MutexLock lock(&mu_);
    return trace_;
  }

 private:
  absl::Mutex mu_;
  std::string trace_ ABSL_GUARDED_BY(mu_);
};

// A job of `slices` slices that records each one.
RoundRobinWorker::Job Sliced(Trace* trace, char name, int slices) {
  return [trace, name, left = slices]() mutable {
    trace->Add(name);
    return --left == 0;
  };
}

TEST(RoundRobinWorkerTest, LongJobsTakeTurnsAndShortOnesAreNotStuckBehind) {
  Trace trace;
  RoundRobinWorker worker("test-rr");
  // Hold the worker until every job is queued, so the order is known.
  absl::Notification go;
  worker.Submit([&go] {
    go.WaitForNotification();
    return true;
  });
  worker.Submit(Sliced(&trace, 'a', 4));
  worker.Submit(Sliced(&trace, 'b', 2));
  worker.Submit(Sliced(&trace, 'c', 1));
  go.Notify();
  worker.Stop();  // runs every job to its end
  EXPECT_EQ(trace.Get(), "abcabaa");
}

TEST(RoundRobinWorkerTest, AJobSubmittedAfterStopRunsToItsEndInline) {
  Trace trace;
  RoundRobinWorker worker("test-rr");
  worker.Stop();
  worker.Submit(Sliced(&trace, 'x', 3));
  EXPECT_EQ(trace.Get(), "xxx");
}

}  // namespace
}  // namespace sessiond::server
