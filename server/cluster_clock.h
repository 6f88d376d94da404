// Copyright sessiond authors. Licensed under the Apache License 2.0.
//
// Cluster time (LogCabin's ClusterClock, for the same reason: expiry once
// followed each server's wall clock, and a clock that jumped expired
// everybody). One clock for the whole cluster, in Unix milliseconds:
//
//  * The leader stamps it into every command it proposes; application uses
//    max(previous applied time, stamp), so applied time never goes back.
//  * Every node, leader or follower, reads "now" as the last applied cluster
//    time plus its own steady (monotonic) time elapsed since it applied it.
//    A node's wall clock is never used for an expiry decision.
//  * Cluster time follows the wall clock only by a bounded slew: each stamp
//    may move toward the leader's wall clock by at most slew_ppm of the
//    steady time since the previous stamp (default 1000 ppm: 3.6 s per
//    hour; at most 1 s at once after a quiet period). A wall clock stepped
//    by a day or a month, forward or backward,
//    therefore moves expiry by at most that rate; the difference is reported
//    as skew (ClusterStatus, and the log).
//  * A brand-new cluster starts at its first leader's wall clock. While no
//    member runs (a whole-cluster outage) cluster time stands still, so that
//    downtime never counts as a session's idle or lifetime. A member that
//    runs meanwhile counts, and the others catch up with it (Observe,
//    TakeCatchUp): through the log, with the sessions stamped in the lag
//    moved along, so the jump ages none of them.
//
// Thread-safe.
#ifndef SESSIOND_SERVER_CLUSTER_CLOCK_H_
#define SESSIOND_SERVER_CLUSTER_CLOCK_H_

#include <cstdint>
#include <functional>
#include <optional>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "storage/session_state_machine.h"

namespace sessiond::server {

struct ClusterClockOptions {
  int64_t slew_ppm = 1000;
  // Tests inject clocks; both in their usual units.
  std::function<int64_t()> wall_ms;    // default: the system clock
  std::function<int64_t()> steady_ns;  // default: the steady clock
  // Where applied time comes from (the state machine in production).
  std::function<storage::AppliedTimeSample()> applied;
};

class ClusterClock {
 public:
  explicit ClusterClock(ClusterClockOptions options);

  // This node's estimate of cluster time: the applied time plus the steady
  // time elapsed since it was applied here. Never goes back on this node
  // once it has applied a time or stamped one (before, it is the wall clock,
  // a guess).
  // For reads and for the touches this node records.
  int64_t NowMs() ABSL_LOCKS_EXCLUDED(mu_);

  // The time a read judges expiry at: NowMs(), except on a node that
  // applied stamps a catch-up's worth behind what it counted (it ran
  // through the others' outage): the time those stamps say, until the
  // catch-up moves them and it (TakeCatchUp). Judged by its count, the
  // sessions made in the lag would answer EXPIRED there meanwhile; judged
  // so, one that idled out during the outage answers as it did before it.
  int64_t JudgeNowMs() ABSL_LOCKS_EXCLUDED(mu_);

  // The timestamp for a command this node proposes as leader: JudgeNowMs()
  // (its jump, if it ran ahead, goes through the log), slewed toward the
  // wall clock within the bound, never below a previous stamp or the
  // applied time.
  int64_t StampMs() ABSL_LOCKS_EXCLUDED(mu_);

  // This node's wall clock minus its cluster time.
  int64_t SkewMs() ABSL_LOCKS_EXCLUDED(mu_);
  // `wall_ms` (a WallMs() reading) minus cluster time now: for a caller
  // that uses the reading it judged, not a second one.
  int64_t SkewAtMs(int64_t wall_ms) ABSL_LOCKS_EXCLUDED(mu_);

  // This node's wall clock: for what others judge by theirs (a JWT's iat
  // and exp, checked by app servers). Cluster time runs behind it after a
  // whole-cluster outage, by the downtime, for weeks at the slew rate.
  int64_t WallMs() const { return options_.wall_ms(); }

  // Another member's cluster time (a forwarded write carries its sender's,
  // and the applied time at which its clock last ran in step, `peer_in_step_
  // applied_ms`, 0 when not sent). A member that kept running while the
  // others were down (a lost quorum) counted time that the ones restarted
  // never saw, and this leader catches up with it. (While no member runs,
  // none counts, and time still stands still.) Taken at most up to this
  // node's wall clock plus a second.
  //  * Less than kCatchUpThroughLogMs ahead: this clock never reads below
  //    it from now on, stamps included (moved_ms: how far it moved).
  //  * Further ahead: nothing moves here (catch_up_due). The jump must go
  //    through the log with the shift of what this clock stamped in the
  //    lag (TakeCatchUp), or the sessions made meanwhile would age by the
  //    outage at once.
  struct Observed {
    int64_t moved_ms = 0;
    bool catch_up_due = false;
  };
  Observed Observe(int64_t peer_cluster_ms, int64_t peer_in_step_applied_ms)
      ABSL_LOCKS_EXCLUDED(mu_);

  // A catch-up for this node, as leader, to propose (ClockCatchUpCommand):
  // the time it should jump to and the applied time since which stamps
  // lagged, when a member observed (Observe) or this node itself (a leader
  // that ran through the others' outage) is at least kCatchUpThroughLogMs
  // ahead of the time this node stamps. nullopt when none is due, or one
  // was handed out less than kCatchUpRetryMs ago (not applied yet).
  struct CatchUp {
    int64_t to_ms;
    int64_t since_ms;
  };
  std::optional<CatchUp> TakeCatchUp() ABSL_LOCKS_EXCLUDED(mu_);

  // The applied cluster time at which this clock last ran in step with
  // what it applied (less than kCatchUpThroughLogMs ahead): every time
  // applied since is at least this. A node that ran through an outage and
  // then applied a lagging leader's stamps keeps the point it ran from.
  int64_t InStepAppliedMs() ABSL_LOCKS_EXCLUDED(mu_);

  static constexpr int64_t kCatchUpThroughLogMs = 1000;
  static constexpr int64_t kCatchUpRetryMs = 3000;

  // NowMs(), once this node has applied a cluster time or stamped one;
  // nullopt before (NowMs is then its wall clock, a guess that must not
  // reach another member: Observe would take it).
  std::optional<int64_t> GroundedNowMs() ABSL_LOCKS_EXCLUDED(mu_);

  // How far this node's cluster time runs ahead of what its applied time
  // says (the applied time plus the steady time since), in ms: a follower
  // that counted time its leader did not (Observe) until the leader's
  // stamps catch up.
  int64_t AheadOfAppliedMs() ABSL_LOCKS_EXCLUDED(mu_);

  // Steady time since this node last applied a later cluster time.
  absl::Duration SinceAppliedStamp() const;

 private:
  // Cluster time in nanoseconds (never below a time already returned, once
  // grounded in an applied time or a stamp); raises last_now_ms_.
  int64_t EstimateNsLocked(int64_t steady_ns)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // `followed_out`, when given: FollowedNsLocked's, computed on the way.
  int64_t EstimateNsLocked(int64_t steady_ns,
                           const storage::AppliedTimeSample& sample,
                           int64_t* followed_out = nullptr)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // JudgeNowMs, in nanoseconds; raises last_now_ms_ as EstimateNsLocked.
  int64_t JudgedNsLocked(int64_t steady_ns,
                         const storage::AppliedTimeSample& sample)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The time applied entries (and this node's own stamps) say, without the
  // floor of times already returned: what this node stamps, unless it runs
  // less than kCatchUpThroughLogMs behind that floor. The wall clock when
  // ungrounded (nothing applied or stamped yet).
  int64_t FollowedNsLocked(int64_t steady_ns,
                           const storage::AppliedTimeSample& sample) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const ClusterClockOptions options_;
  absl::Mutex mu_;
  int64_t last_now_ms_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t last_stamp_ms_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t last_stamp_steady_ns_ ABSL_GUARDED_BY(mu_) = 0;
  // The steady time at which cluster time was exactly last_stamp_ms_.
  int64_t last_stamp_anchor_ns_ ABSL_GUARDED_BY(mu_) = 0;
  // Slew allowed and not used yet (see StampMs).
  int64_t slew_budget_ns_ ABSL_GUARDED_BY(mu_) = 0;
  // See InStepAppliedMs; this clock read in_step_ns_ then, at steady time
  // in_step_anchor_ns_.
  int64_t in_step_applied_ms_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t in_step_ns_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t in_step_anchor_ns_ ABSL_GUARDED_BY(mu_) = 0;
  // The time this clock read when it went out of step; 0 while in step.
  int64_t diverged_at_ms_ ABSL_GUARDED_BY(mu_) = 0;
  // A member's time observed too far ahead to take at once (Observe): it
  // was observed_ms_ at steady time observed_anchor_ns_, and its clock ran
  // in step since observed_since_ms_. 0: none.
  int64_t observed_ms_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t observed_anchor_ns_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t observed_since_ms_ ABSL_GUARDED_BY(mu_) = 0;
  // Steady time TakeCatchUp last handed one out.
  std::optional<int64_t> catch_up_taken_ns_ ABSL_GUARDED_BY(mu_);
};

}  // namespace sessiond::server

#endif  // SESSIOND_SERVER_CLUSTER_CLOCK_H_
