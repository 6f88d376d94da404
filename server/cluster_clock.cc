// Copyright sessiond authors. Licensed under the Apache License 2.0.
#include "server/cluster_clock.h"

#include <algorithm>
#include <chrono>
#include <utility>

namespace sessiond::server {
namespace {

// At most this much slew at once, however long the cluster was quiet.
constexpr int64_t kMaxSlewBudgetNs = 1000000000;

int64_t SystemWallMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

int64_t SystemSteadyNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

}  // namespace

ClusterClock::ClusterClock(ClusterClockOptions options)
    : options_([&] {
        if (!options.wall_ms) options.wall_ms = SystemWallMs;
        if (!options.steady_ns) options.steady_ns = SystemSteadyNs;
        return std::move(options);
      }()) {}

int64_t ClusterClock::EstimateLocked(int64_t steady_ns) {
  const storage::AppliedTimeSample sample = options_.applied();
  int64_t estimate;
  if (sample.cluster_ms == 0 && last_stamp_ms_ == 0) {
    // Nothing applied yet, anywhere: a new cluster starts at the wall clock.
    estimate = options_.wall_ms();
  } else {
    estimate = sample.cluster_ms + (steady_ns - sample.steady_ns) / 1000000;
    if (last_stamp_ms_ != 0) {
      // Our own latest stamp may not be applied yet.
      estimate =
          std::max(estimate, last_stamp_ms_ +
                                 (steady_ns - last_stamp_steady_ns_) / 1000000);
    }
  }
  estimate = std::max(estimate, last_now_ms_);
  last_now_ms_ = estimate;
  return estimate;
}

int64_t ClusterClock::NowMs() {
  const int64_t steady = options_.steady_ns();
  absl::MutexLock lock(&mu_);
  return EstimateLocked(steady);
}

int64_t ClusterClock::StampMs() {
  const int64_t steady = options_.steady_ns();
  const int64_t wall = options_.wall_ms();
  absl::MutexLock lock(&mu_);
  const int64_t base = EstimateLocked(steady);
  int64_t stamp = base;
  if (last_stamp_ms_ != 0) {
    // The bounded slew toward the wall clock: a budget that grows by
    // slew_ppm of the steady time elapsed (kept in nanoseconds, so frequent
    // stamps add up), capped so a quiet period cannot save up a jump. It
    // cannot undo that much elapsed time, so stamps never go back.
    const int64_t elapsed_ns =
        std::max<int64_t>(0, steady - last_stamp_steady_ns_);
    slew_budget_ns_ =
        std::min(kMaxSlewBudgetNs,
                 slew_budget_ns_ + elapsed_ns / 1000000 * options_.slew_ppm +
                     elapsed_ns % 1000000 * options_.slew_ppm / 1000000);
    const int64_t allowed_ms = slew_budget_ns_ / 1000000;
    const int64_t correction = std::clamp(wall - base, -allowed_ms, allowed_ms);
    stamp += correction;
    slew_budget_ns_ -= (correction < 0 ? -correction : correction) * 1000000;
  }
  const storage::AppliedTimeSample sample = options_.applied();
  stamp = std::max({stamp, last_stamp_ms_, sample.cluster_ms});
  last_stamp_ms_ = stamp;
  last_stamp_steady_ns_ = steady;
  last_now_ms_ = std::max(last_now_ms_, stamp);
  return stamp;
}

int64_t ClusterClock::SkewMs() {
  const int64_t steady = options_.steady_ns();
  const int64_t wall = options_.wall_ms();
  absl::MutexLock lock(&mu_);
  return wall - EstimateLocked(steady);
}

}  // namespace sessiond::server
