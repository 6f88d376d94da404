// Copyright sessiond authors. Licensed under the Apache License 2.0.
//
// The logout detector (issue 7, part 4; docs/OPERATIONS.md, "The logout
// detector"): every interval, each node compares what it sees against a
// rolling baseline of its own recent past, and raises an alert on
//
//   live_drop  the live sessions (the table's size) fell by more than
//              drop_share below the highest count of the last window
//              (default 20% within 5 min), on two samples in a row, with
//              at least min_sessions at that highest count;
//   unknown,   the share of UNKNOWN, EXPIRED or REVOKED answers among the
//   expired,   validations of the last interval rose at least jump_share
//   revoked    above its baseline (default +25 points) AND more than
//              `deviations` deviations above it (default 3), in an
//              interval with at least min_validations validations.
//
// The baseline of a share is an exponentially weighted mean and deviation
// over the qualifying intervals, with time constant baseline_ms (default
// 30 min): each interval of dt ms moves it by alpha = 1 - exp(-dt /
// baseline_ms), and by at least 1/n over its first n intervals (a plain
// mean until the exponential weight takes over, so a new node's baseline
// is the mean of what it has seen). It is ready (may alert) after
// kWarmupIntervals qualifying intervals. An interval whose share is at
// least half the jump and more than `deviations` deviations above the
// baseline is held back from it (whether it alerts or not), so an incident
// does not become the norm, not even one that starts in the middle of an
// interval; an alert clears once an interval is not held back any more
// ("recovered"). After baseline_ms of intervals all held back, their level
// is accepted: the baseline starts again from it, and an alert clears
// ("accepted").
#ifndef SESSIOND_SERVER_LOGOUT_DETECTOR_H_
#define SESSIOND_SERVER_LOGOUT_DETECTOR_H_

#include <array>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/metrics_exposition.h"
#include "server/periodic_task.h"
#include "sessiond/v1/admin.pb.h"

namespace sessiond::server {

struct LogoutDetectorOptions {
  // (a) live sessions: the window whose highest count is the baseline, and
  // the fall that alerts.
  int64_t window_ms = 5 * 60 * 1000;
  double drop_share = 0.20;
  // No live_drop alert while the window's highest count is below this.
  uint64_t min_sessions = 1000;
  // (b) outcome shares: the baseline's time constant, the rise that alerts
  // (a share, 0.25 = 25 points) and how many deviations it must also be.
  int64_t baseline_ms = 30 * 60 * 1000;
  double jump_share = 0.25;
  double deviations = 3;
  // Intervals with fewer validations are neither judged nor learned from.
  uint64_t min_validations = 100;
};

// What the detector is fed: this node's counters, cumulative since the
// process started, and a time from a monotonic clock.
struct LogoutSample {
  int64_t now_ms = 0;
  uint64_t live_sessions = 0;
  uint64_t valid = 0;
  uint64_t expired = 0;
  uint64_t revoked = 0;
  uint64_t unknown = 0;
};

enum class LogoutSignal {
  kLiveDrop = 0,
  kUnknown = 1,
  kExpired = 2,
  kRevoked = 3
};
inline constexpr int kLogoutSignals = 4;
// "live_drop", "unknown", "expired", "revoked": the `kind` label.
const char* LogoutSignalName(LogoutSignal signal);

// One signal as of the last sample.
struct LogoutSignalState {
  bool alerting = false;
  // Detector time (LogoutSample::now_ms) it was raised at.
  int64_t since_ms = 0;
  // Times it was raised since the detector started.
  uint64_t raised = 0;
  // live_drop: live sessions now, the window's highest count, 0.
  // Outcomes: the share in the last qualifying interval, the baseline's
  // mean and deviation (shares in [0, 1]).
  double value = 0;
  double baseline = 0;
  double deviation = 0;
  // Outcomes: qualifying intervals folded into the baseline.
  uint64_t intervals = 0;
  // While alerting: one line saying why (for status and the log).
  std::string detail;
};

struct LogoutDetectorState {
  std::array<LogoutSignalState, kLogoutSignals> signals;
  // live_drop's figures: 1 - live / window's highest (0 when it rose).
  double live_drop = 0;
  // Validations in the last interval.
  uint64_t interval_validations = 0;
  // Every outcome baseline has kWarmupIntervals intervals (may alert).
  bool ready = false;
  // Detector time of the last sample.
  int64_t now_ms = 0;
};

// A signal raised or cleared by a sample.
struct LogoutEvent {
  LogoutSignal signal = LogoutSignal::kLiveDrop;
  bool raised = false;
  // Cleared: "recovered" (for a share, an interval no longer held back
  // from the baseline; for live_drop, within half the drop of the window's
  // highest count, which a fall older than the window always is) or
  // "accepted" (a share held back for baseline_ms became the new baseline).
  std::string reason;
  // Cleared: how long it was raised.
  int64_t duration_ms = 0;
  // The signal as of this sample (raised: with its detail).
  LogoutSignalState state;
};

// The detector's logic: deterministic, no clock, no thread. Feed it samples
// in time order; it answers what they raised or cleared.
//
// Not thread-safe (LogoutDetectorTask wraps it in a mutex).
class LogoutDetector {
 public:
  // Qualifying intervals an outcome baseline needs before it may alert.
  static constexpr uint64_t kWarmupIntervals = 5;
  // live_drop's window holds at most this many samples (older ones go
  // first): at the default 5 s interval, 14 hours.
  static constexpr size_t kMaxWindowSamples = 10000;

  explicit LogoutDetector(const LogoutDetectorOptions& options);

  // The first sample only sets the starting counters. A sample whose time
  // is not after the previous one's is ignored; counters that went down
  // count as no change.
  std::vector<LogoutEvent> Observe(const LogoutSample& sample);

  const LogoutDetectorState& state() const { return state_; }
  const LogoutDetectorOptions& options() const { return options_; }

 private:
  // The exponentially weighted mean and variance of one share.
  struct Baseline {
    double mean = 0;
    double variance = 0;
    uint64_t n = 0;
    // Detector time of the first interval held back since the last one
    // folded in (-1: the last one was folded in).
    int64_t held_since_ms = -1;
  };

  void ObserveLive(const LogoutSample& sample, std::vector<LogoutEvent>* out);
  void ObserveShare(LogoutSignal signal, double share, uint64_t validations,
                    int64_t now_ms, int64_t dt_ms,
                    std::vector<LogoutEvent>* out);
  void Raise(LogoutSignal signal, int64_t now_ms, std::string detail,
             std::vector<LogoutEvent>* out);
  void Clear(LogoutSignal signal, int64_t now_ms, const char* reason,
             std::vector<LogoutEvent>* out);

  const LogoutDetectorOptions options_;
  LogoutDetectorState state_;
  bool started_ = false;
  LogoutSample previous_;
  std::array<Baseline, kLogoutSignals> baselines_;  // [kLiveDrop] unused
  // (time, live sessions), decreasing in live sessions from front to back
  // (a sliding-window maximum: the front is the window's highest).
  std::deque<std::pair<int64_t, uint64_t>> window_;
  // Consecutive samples below live_drop's threshold.
  int below_ = 0;
};

// Runs a LogoutDetector on its own thread ("sd-logout"), sampling through
// `sampler` every interval, logs each alert raised and cleared (events
// logout_alert.raised / logout_alert.cleared), and exports the state to
// metrics and ClusterStatus.
//
// Thread-safe. The sampler runs on the task's thread and must stay usable
// from Start() until Stop() returns.
class LogoutDetectorTask {
 public:
  // Fills everything but now_ms, which the task sets from a steady clock.
  using Sampler = std::function<LogoutSample()>;

  LogoutDetectorTask(const LogoutDetectorOptions& options,
                     absl::Duration interval, Sampler sampler);
  ~LogoutDetectorTask();  // Stop()s.

  LogoutDetectorTask(const LogoutDetectorTask&) = delete;
  LogoutDetectorTask& operator=(const LogoutDetectorTask&) = delete;

  // Takes the first sample and starts the thread. Once.
  void Start() ABSL_LOCKS_EXCLUDED(task_mu_, mu_);
  // Joins the thread; the last state stays readable.
  void Stop() ABSL_LOCKS_EXCLUDED(task_mu_);
  // Samples now, on the calling thread.
  void SampleOnce() ABSL_LOCKS_EXCLUDED(mu_);

  LogoutDetectorState state() const ABSL_LOCKS_EXCLUDED(mu_);
  // The signals alerting now, for MemberStatus.logout_alerts.
  std::vector<sessiond::v1::LogoutAlert> ActiveAlerts() const
      ABSL_LOCKS_EXCLUDED(mu_);
  // sessiond_logout_* (docs/OPERATIONS.md, "Metrics").
  void Collect(metrics::ExpositionWriter* writer) const
      ABSL_LOCKS_EXCLUDED(mu_);

 private:
  const absl::Duration interval_;
  const Sampler sampler_;
  mutable absl::Mutex mu_;
  LogoutDetector detector_ ABSL_GUARDED_BY(mu_);
  absl::Mutex task_mu_;
  // Started by Start(), stopped by Stop().
  std::unique_ptr<PeriodicTask> task_ ABSL_GUARDED_BY(task_mu_);
  bool stopped_ ABSL_GUARDED_BY(task_mu_) = false;
};

}  // namespace sessiond::server

#endif  // SESSIOND_SERVER_LOGOUT_DETECTOR_H_
