// Copyright sessiond authors. Licensed under the Apache License 2.0.
//
// Admission of new writes by queueing delay (--write_admission_target_ms,
// docs/OPERATIONS.md "Overload"). Without it an overloaded node accepts
// every create until the driver holds --max_pending_writes of them: the
// queue grows to seconds, every create times out after doing its work, and
// the validations wait for CPU behind them.
//
// The signal is CoDel's (Nichols and Jacobson, "Controlling Queue Delay",
// 2012; applied to RPC queues in Facebook's "Fail at Scale"): the minimum
// time a write took from admission to its answer during an interval. A
// queue that drains keeps that minimum small however bursty the arrivals;
// a standing queue raises it. When the minimum of an interval exceeds the
// target, the node is overloaded and the limit on writes in flight drops to
// what committed in one target's time during that interval (Little's law:
// throughput x target), never below min_limit; an interval under the
// target raises the limit by a quarter, up to max_limit. Intervals in a row
// in which writes were in flight and none finished count as a delay of
// their total length (a stall: no quorum, a full disk), whatever the
// target.
//
// Every write counts in flight; only creates are refused past the limit
// (Admit): revocations, updates, touches and sweeps act on sessions that
// exist, and refusing a revocation would keep a session alive. A refused
// create gets RESOURCE_EXHAUSTED "this node is overloaded" (reason
// OVERLOADED) with the current queueing delay as its retry delay, at once,
// having cost the node almost nothing.
//
// Thread-safe: one mutex (a leaf lock) around a few counters, taken once
// per write on admission and once on its answer. Time comes in as a
// steady-clock reading, so tests step it.
#ifndef SESSIOND_SERVER_WRITE_ADMISSION_H_
#define SESSIOND_SERVER_WRITE_ADMISSION_H_

#include <cstdint>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace sessiond::server {

struct WriteAdmissionOptions {
  // The queueing delay tolerated; zero turns admission control off (every
  // create is admitted, as before).
  absl::Duration target = absl::Milliseconds(50);
  absl::Duration interval = absl::Milliseconds(100);
  // The limit never drops below this many writes in flight, so a quiet
  // node with a slow disk, or a node waiting for an election, still takes
  // a normal number of concurrent writes.
  int64_t min_limit = 64;
  int64_t max_limit = 100'000;
};

// What the controller knows, for metrics and tests.
struct WriteAdmissionState {
  int64_t in_flight = 0;
  int64_t limit = 0;
  bool overloaded = false;        // the last interval was over the target
  absl::Duration queueing_delay;  // the last interval's minimum
  uint64_t refused = 0;           // creates refused since start
};

class WriteAdmission {
 public:
  explicit WriteAdmission(const WriteAdmissionOptions& options);

  bool enabled() const { return options_.target > absl::ZeroDuration(); }

  // A create (or batch of creates) asks to enter at `now`. OK: it is in
  // flight, and the caller must call Finish once it is answered. Otherwise
  // RESOURCE_EXHAUSTED with a retry delay (server/grpc_status.h); nothing
  // is counted.
  absl::Status Admit(absl::Duration now) ABSL_LOCKS_EXCLUDED(mu_);
  // Any other write enters: never refused, counted in flight.
  void Enter(absl::Duration now) ABSL_LOCKS_EXCLUDED(mu_);
  // A write that entered at `entered` was answered at `now` with `answer`.
  // An answer of UNAVAILABLE or RESOURCE_EXHAUSTED (no leader, a full
  // driver, a stalled log, shutting down) leaves the write in flight no
  // more, but measures nothing: such a write did not wait its turn in the
  // log, and counting its near-zero time would hide a standing queue just
  // when the driver starts refusing writes.
  void Finish(absl::Duration entered, absl::Duration now,
              const absl::Status& answer) ABSL_LOCKS_EXCLUDED(mu_);

  // A write that entered was given up at `now` before it reached the log
  // (its command could not be made): in flight no more, measuring nothing,
  // and the interval it was in counts as if it never entered (it waited
  // for nothing, so it is no sign of a stall).
  void Withdraw(absl::Duration now) ABSL_LOCKS_EXCLUDED(mu_);

  WriteAdmissionState state() const ABSL_LOCKS_EXCLUDED(mu_);

 private:
  // Closes the intervals that ended by `now` and moves the limit.
  void Roll(absl::Duration now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const WriteAdmissionOptions options_;
  mutable absl::Mutex mu_;
  int64_t in_flight_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t limit_ ABSL_GUARDED_BY(mu_);
  bool overloaded_ ABSL_GUARDED_BY(mu_) = false;
  absl::Duration queueing_delay_ ABSL_GUARDED_BY(mu_);
  uint64_t refused_ ABSL_GUARDED_BY(mu_) = 0;
  // The interval being measured: when it started, the smallest time a
  // write finishing in it took, how many finished, and how many writes
  // were in flight at some point during it (those in flight when it
  // started and those that entered since, less the withdrawn ones).
  absl::Duration interval_start_ ABSL_GUARDED_BY(mu_);
  bool started_ ABSL_GUARDED_BY(mu_) = false;
  absl::Duration min_delay_ ABSL_GUARDED_BY(mu_) = absl::InfiniteDuration();
  int64_t finished_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t busy_writes_ ABSL_GUARDED_BY(mu_) = 0;
  // Intervals in a row with writes in flight and none finished, as time.
  absl::Duration stalled_ ABSL_GUARDED_BY(mu_) = absl::ZeroDuration();
};

}  // namespace sessiond::server

#endif  // SESSIOND_SERVER_WRITE_ADMISSION_H_
