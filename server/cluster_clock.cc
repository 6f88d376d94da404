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

int64_t ClusterClock::FollowedNsLocked(
    int64_t steady_ns, const storage::AppliedTimeSample& sample) const {
  if (sample.cluster_ms == 0 && last_stamp_ms_ == 0) {
    return options_.wall_ms() * kNsPerMs;
  }
  int64_t followed_ns =
      sample.cluster_ms * kNsPerMs + (steady_ns - sample.steady_ns);
  if (last_stamp_ms_ != 0 && last_stamp_ms_ >= sample.cluster_ms) {
    // Our own latest stamp may not be applied yet; and an applied stamp
    // is sampled when it is applied, a commit latency after it was made,
    // so on the leader this is the estimate that keeps pace. Only while it
    // is the latest time there is: once another leader's stamps are
    // applied, ours (from an earlier term) would run ahead of every
    // correction that leader made since.
    followed_ns =
        std::max(followed_ns, last_stamp_ms_ * kNsPerMs +
                                  (steady_ns - last_stamp_anchor_ns_));
  }
  return followed_ns;
}

int64_t ClusterClock::EstimateNsLocked(int64_t steady_ns,
                                       const storage::AppliedTimeSample& sample,
                                       int64_t* followed_out) {
  const int64_t followed_ns = FollowedNsLocked(steady_ns, sample);
  if (followed_out != nullptr) *followed_out = followed_ns;
  if (sample.cluster_ms == 0 && last_stamp_ms_ == 0) {
    // Nothing applied yet, anywhere: a new cluster starts at the wall clock
    // (FollowedNsLocked's). A guess, not kept (last_now_ms_ is not raised
    // by it): a node that has applied nothing yet may be about to apply a
    // cluster time far behind its wall clock (a new member, a restore), and
    // then follows that.
    return followed_ns;
  }
  // What it counted: the time it last returned, or its steady time since
  // it last ran in step (a stamp from behind may have been applied since).
  const int64_t counted_ns = std::max(
      last_now_ms_ * kNsPerMs, in_step_ns_ + (steady_ns - in_step_anchor_ns_));
  const bool in_step =
      followed_ns >= counted_ns - kCatchUpThroughLogMs * kNsPerMs;
  int64_t estimate_ns = std::max(followed_ns, last_now_ms_ * kNsPerMs);
  if (in_step ||
      (diverged_at_ms_ != 0 && sample.cluster_ms >= diverged_at_ms_)) {
    // In step; or the log passed the time it counted when it went out of
    // step (its catch-up applied): it counts from the log's time again, so
    // a catch-up's own latency is never taken for a lead (handed on, it
    // would start another catch-up, and so on).
    in_step_applied_ms_ =
        sample.cluster_ms != 0 ? sample.cluster_ms : last_stamp_ms_;
    in_step_ns_ = in_step ? estimate_ns : followed_ns;
    in_step_anchor_ns_ = steady_ns;
    diverged_at_ms_ = 0;
  } else {
    // It applied times behind what it counted (it ran through the others'
    // outage, and their leader stamps from where they stopped): it counts
    // on from where it last ran in step, until the catch-up is applied.
    estimate_ns = std::max(followed_ns, counted_ns);
    if (diverged_at_ms_ == 0) diverged_at_ms_ = estimate_ns / kNsPerMs;
  }
  last_now_ms_ = estimate_ns / kNsPerMs;
  return estimate_ns;
}

int64_t ClusterClock::JudgedNsLocked(int64_t steady_ns,
                                     const storage::AppliedTimeSample& sample) {
  int64_t followed_ns = 0;
  const int64_t estimate_ns = EstimateNsLocked(steady_ns, sample, &followed_ns);
  return estimate_ns - followed_ns < kCatchUpThroughLogMs * kNsPerMs
             ? estimate_ns
             : followed_ns;
}

int64_t ClusterClock::JudgeNowMs() {
  const int64_t steady = options_.steady_ns();
  const storage::AppliedTimeSample sample = options_.applied();
  absl::MutexLock lock(&mu_);
  return JudgedNsLocked(steady, sample) / kNsPerMs;
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
  const int64_t base_ns = JudgedNsLocked(steady, sample);
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

int64_t ClusterClock::SkewMs() { return SkewAtMs(options_.wall_ms()); }

int64_t ClusterClock::SkewAtMs(int64_t wall_ms) {
  const int64_t steady = options_.steady_ns();
  absl::MutexLock lock(&mu_);
  return wall_ms - EstimateNsLocked(steady) / kNsPerMs;
}

ClusterClock::Observed ClusterClock::Observe(int64_t peer_cluster_ms,
                                             int64_t peer_in_step_applied_ms) {
  const int64_t steady = options_.steady_ns();
  const int64_t wall = options_.wall_ms();
  const storage::AppliedTimeSample sample = options_.applied();
  absl::MutexLock lock(&mu_);
  int64_t followed_ns = 0;
  const int64_t now_ms =
      EstimateNsLocked(steady, sample, &followed_ns) / kNsPerMs;
  // Believed only as far as this node's wall clock (and a second): a member
  // that counted through an outage is near the wall clock; one far past it
  // is broken, and would expire sessions early everywhere.
  const int64_t target =
      std::min(peer_cluster_ms, std::max(now_ms, wall + kObserveAheadOfWallMs));
  if (target <= now_ms) return Observed{};
  const int64_t followed_ms = followed_ns / kNsPerMs;
  if (target - followed_ms < kCatchUpThroughLogMs) {
    last_now_ms_ = target;
    return Observed{.moved_ms = target - now_ms};
  }
  // An older sender gives no point: nothing is shifted (the jump ages what
  // was stamped in the lag, as it did before the catch-up went through the
  // log).
  const int64_t since =
      peer_in_step_applied_ms > 0 ? peer_in_step_applied_ms : followed_ms;
  const int64_t pending_ms =
      observed_ms_ == 0
          ? 0
          : observed_ms_ + (steady - observed_anchor_ns_) / kNsPerMs;
  observed_since_ms_ =
      observed_ms_ == 0 ? since : std::min(observed_since_ms_, since);
  if (target > pending_ms) {
    observed_ms_ = target;
    observed_anchor_ns_ = steady;
  }
  return Observed{.catch_up_due = true};
}

std::optional<ClusterClock::CatchUp> ClusterClock::TakeCatchUp() {
  const int64_t steady = options_.steady_ns();
  const storage::AppliedTimeSample sample = options_.applied();
  absl::MutexLock lock(&mu_);
  if (sample.cluster_ms == 0 && last_stamp_ms_ == 0) return std::nullopt;
  // This node's own lead first (it ran through the others' outage).
  int64_t followed_ns = 0;
  CatchUp catch_up{EstimateNsLocked(steady, sample, &followed_ns) / kNsPerMs,
                   in_step_applied_ms_};
  const int64_t followed_ms = followed_ns / kNsPerMs;
  if (observed_ms_ != 0) {
    const int64_t observed_now_ms =
        observed_ms_ + (steady - observed_anchor_ns_) / kNsPerMs;
    if (observed_now_ms - followed_ms < kCatchUpThroughLogMs) {
      observed_ms_ = 0;  // applied: the log caught up with it
    } else if (observed_now_ms > catch_up.to_ms) {
      catch_up.to_ms = observed_now_ms;
      catch_up.since_ms = std::min(catch_up.since_ms, observed_since_ms_);
    }
  }
  if (catch_up.to_ms - followed_ms < kCatchUpThroughLogMs) return std::nullopt;
  if (catch_up_taken_ns_ &&
      steady - *catch_up_taken_ns_ < kCatchUpRetryMs * kNsPerMs) {
    return std::nullopt;  // one is on its way
  }
  catch_up_taken_ns_ = steady;
  return catch_up;
}

int64_t ClusterClock::InStepAppliedMs() {
  const int64_t steady = options_.steady_ns();
  absl::MutexLock lock(&mu_);
  EstimateNsLocked(steady);
  return in_step_applied_ms_;
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
