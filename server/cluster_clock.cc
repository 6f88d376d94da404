// Copyright sessiond authors. Licensed under the Apache License 2.0.
#include "server/cluster_clock.h"

#include <algorithm>
#include <chrono>
#include <utility>

#include "common/steady_clock.h"

namespace sessiond::server {
namespace {

// At most this much slew at once, however long the cluster was quiet.
constexpr int64_t kMaxSlewBudgetNs = 1000000000;
constexpr int64_t kNsPerMs = 1000000;
// How far past this node's wall clock an observed member's time is taken.
constexpr int64_t kObserveAheadOfWallMs = 1000;

int64_t SystemWallMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

}  // namespace

ClusterClock::ClusterClock(ClusterClockOptions options)
    : options_([&] {
        if (!options.wall_ms) options.wall_ms = SystemWallMs;
        if (!options.steady_ns) options.steady_ns = SteadyNowNs;
        return std::move(options);
      }()) {}

int64_t ClusterClock::EstimateNsLocked(int64_t steady_ns) {
  return EstimateNsLocked(steady_ns, options_.applied());
}

int64_t ClusterClock::EstimateNsLocked(
    int64_t steady_ns, const storage::AppliedTimeSample& sample) {
  if (sample.cluster_ms == 0 && last_stamp_ms_ == 0) {
    // Nothing applied yet, anywhere: a new cluster starts at the wall clock.
    // A guess, not kept (last_now_ms_ is not raised by it): a node that has
    // applied nothing yet may be about to apply a cluster time far behind
    // its wall clock (a new member, a restore), and then follows that.
    return options_.wall_ms() * kNsPerMs;
  }
  int64_t estimate_ns =
      sample.cluster_ms * kNsPerMs + (steady_ns - sample.steady_ns);
  if (last_stamp_ms_ != 0 && last_stamp_ms_ >= sample.cluster_ms) {
    // Our own latest stamp may not be applied yet; and an applied stamp
    // is sampled when it is applied, a commit latency after it was made,
    // so on the leader this is the estimate that keeps pace. Only while it
    // is the latest time there is: once another leader's stamps are
    // applied, ours (from an earlier term) would run ahead of every
    // correction that leader made since.
    estimate_ns =
        std::max(estimate_ns, last_stamp_ms_ * kNsPerMs +
                                  (steady_ns - last_stamp_anchor_ns_));
  }
  estimate_ns = std::max(estimate_ns, last_now_ms_ * kNsPerMs);
  last_now_ms_ = estimate_ns / kNsPerMs;
  return estimate_ns;
}

int64_t ClusterClock::NowMs() {
  const int64_t steady = options_.steady_ns();
  absl::MutexLock lock(&mu_);
  return EstimateNsLocked(steady) / kNsPerMs;
}

int64_t ClusterClock::StampMs() {
  const int64_t steady = options_.steady_ns();
  const int64_t wall = options_.wall_ms();
  absl::MutexLock lock(&mu_);
  const storage::AppliedTimeSample sample = options_.applied();
  if (last_stamp_ms_ != 0 && sample.cluster_ms > last_stamp_ms_) {
    // Another node led since this one last stamped: the slew of that time
    // was its to spend. This term starts afresh, as a first one does, or
    // leadership moving about would spend the rate once per node.
    slew_budget_ns_ = 0;
    last_stamp_steady_ns_ = steady;
  }
  const int64_t base_ns = EstimateNsLocked(steady, sample);
  const int64_t base = base_ns / kNsPerMs;
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
                 slew_budget_ns_ + elapsed_ns / kNsPerMs * options_.slew_ppm +
                     elapsed_ns % kNsPerMs * options_.slew_ppm / kNsPerMs);
    const int64_t allowed_ms = slew_budget_ns_ / kNsPerMs;
    const int64_t correction = std::clamp(wall - base, -allowed_ms, allowed_ms);
    stamp += correction;
    slew_budget_ns_ -= (correction < 0 ? -correction : correction) * kNsPerMs;
  }
  stamp = std::max({stamp, last_stamp_ms_, sample.cluster_ms});
  last_stamp_ms_ = stamp;
  last_stamp_steady_ns_ = steady;
  // The stamp is whole milliseconds; the anchor keeps the part of a
  // millisecond the estimate had, so stamps a fraction of a millisecond
  // apart do not each drop it (cluster time fell behind under load).
  last_stamp_anchor_ns_ = steady - (base_ns - base * kNsPerMs);
  last_now_ms_ = std::max(last_now_ms_, stamp);
  return stamp;
}

int64_t ClusterClock::SkewMs() {
  const int64_t steady = options_.steady_ns();
  const int64_t wall = options_.wall_ms();
  absl::MutexLock lock(&mu_);
  return wall - EstimateNsLocked(steady) / kNsPerMs;
}

int64_t ClusterClock::Observe(int64_t peer_cluster_ms) {
  const int64_t steady = options_.steady_ns();
  const int64_t wall = options_.wall_ms();
  absl::MutexLock lock(&mu_);
  const int64_t now_ms = EstimateNsLocked(steady) / kNsPerMs;
  // Believed only as far as this node's wall clock (and a second): a member
  // that counted through an outage is near the wall clock; one far past it
  // is broken, and would expire sessions early everywhere.
  const int64_t target =
      std::min(peer_cluster_ms, std::max(now_ms, wall + kObserveAheadOfWallMs));
  if (target <= now_ms) return 0;
  last_now_ms_ = target;
  return target - now_ms;
}

int64_t ClusterClock::AheadOfAppliedMs() {
  const int64_t steady = options_.steady_ns();
  const storage::AppliedTimeSample sample = options_.applied();
  absl::MutexLock lock(&mu_);
  if (sample.cluster_ms == 0) return 0;
  // One sample for both: a stamp applied in between would count as ahead.
  const int64_t now_ms = EstimateNsLocked(steady, sample) / kNsPerMs;
  return now_ms - (sample.cluster_ms + (steady - sample.steady_ns) / kNsPerMs);
}

std::optional<int64_t> ClusterClock::GroundedNowMs() {
  const int64_t steady = options_.steady_ns();
  const storage::AppliedTimeSample sample = options_.applied();
  absl::MutexLock lock(&mu_);
  if (sample.cluster_ms == 0 && last_stamp_ms_ == 0) return std::nullopt;
  return EstimateNsLocked(steady, sample) / kNsPerMs;
}

absl::Duration ClusterClock::SinceAppliedStamp() const {
  return absl::Nanoseconds(options_.steady_ns() - options_.applied().steady_ns);
}

}  // namespace sessiond::server
