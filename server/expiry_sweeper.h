// Copyright sessiond authors. Licensed under the Apache License 2.0.
#ifndef SESSIOND_SERVER_EXPIRY_SWEEPER_H_
#define SESSIOND_SERVER_EXPIRY_SWEEPER_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "replication/node_driver.h"
#include "server/cluster_clock.h"
#include "server/expiry_breaker.h"
#include "server/expiry_sweep_stats.h"
#include "server/periodic_task.h"
#include "server/write_path.h"
#include "storage/session_table.h"

namespace sessiond::server {

struct ExpirySweeperOptions {
  absl::Duration interval = absl::Seconds(1);
  // Most sessions per ExpireCommand.
  size_t batch = 1000;
  // Most commands per sweep, so one sweep of a huge backlog does not hold
  // the log; the rest waits for the next sweep.
  size_t max_commands_per_sweep = 64;
  // Most expire commands proposed and not yet applied. One at a time, a
  // sweep removes at most `batch` sessions per commit latency, and under a
  // sustained create flood it lags behind what expires (docs/PERFORMANCE.md,
  // "Expiry sweeps under a sustained create flood").
  size_t max_commands_in_flight = 4;
  // How long a sweep waits for its command to apply before giving up (the
  // next sweep finds the same sessions again if it did not apply).
  absl::Duration apply_timeout = absl::Seconds(10);
  // The mass-expiry breaker (server/expiry_breaker.h); share 0: off.
  ExpiryBreakerOptions breaker;
  // How far ahead of cluster time the breaker looks at sessions about to
  // expire, so it opens before the first unexpected one expires.
  absl::Duration breaker_lookahead = absl::Seconds(3);
  // A new leader of more than one voter sweeps nothing for this long: the
  // touches of users active through a node that was cut off from every
  // leader (their idle time judged where it lost contact) reach the log
  // within a flush interval or two of a leader being known, and a session
  // removed first could not be saved by them (docs/API.md, "Consistency").
  absl::Duration new_leader_grace = absl::ZeroDuration();
  // A leader whose quorum last answered it longer ago than this (a few
  // heartbeats) is cut off: the followers' touches cannot reach it, while
  // the removals it appends commit if it is heard again before another
  // leader is elected. It removes nothing until new_leader_grace after its
  // quorum answers again, as a new leader would. Zero: never.
  absl::Duration quorum_silence = absl::ZeroDuration();
  // True while this node's touches fail to reach the log, and shortly after
  // (TouchBuffer::RecentlyStalled): it removes nothing meanwhile, since the
  // touches kept during the stall have not landed (null: never).
  std::function<bool()> touches_stalled;
  // The audit log's limits (--audit_retention_ms, --audit_max_entries):
  // entries that aged out are trimmed by a command of the leader's even
  // when no new entry comes to drop them. Retention 0: never trimmed here.
  int64_t audit_retention_ms = 0;
  uint32_t audit_max_entries = 0;
  // Where this sweeper counts what it found (null: not counted). Outlives
  // the sweeper.
  ExpirySweepStats* stats = nullptr;
  // Test hook: the steady clock in ms (default: std::chrono::steady_clock).
  std::function<int64_t()> steady_ms;
};

// Removes expired sessions through the log, so every replica removes the
// same ones: every interval, on the leader only, it collects the token
// hashes expired at cluster time (ClusterClock::NowMs, with the replicated
// leeway) and proposes ExpireCommands; the leader stamps them with cluster
// time, and application re-checks each at the applied time, so a session
// touched meanwhile survives. No node's wall clock decides an expiry.
//
// Reads already treat an expired session as EXPIRED the moment it expires;
// the sweep only reclaims memory and disk (after which a read says UNKNOWN).
// Before it proposes any expiry, the sweep asks the expiry breaker's judge
// (server/expiry_breaker.h) whether the sessions expired, or about to
// expire within breaker_lookahead, are what their lifetimes predict; when
// they are not, it proposes to open the breaker instead (replicated:
// expiry is then judged at a frozen cluster time on every node) and sweeps
// nothing until the breaker closes: by an operator (AdminService.
// ResumeExpiry), or by the leader's sweeper once the sessions it holds back
// are no longer unexpected ("cleared").
//
// Each sweep also proposes the purge of flushes and bulk revocations past
// their retention (storage/revocations.h), and of create request ids past
// their window (storage/create_requests.h).
//
// Owns one thread. Every pointer must outlive this (Stop() first).
class ExpirySweeper {
 public:
  ExpirySweeper(const ExpirySweeperOptions& options,
                const storage::SessionTable* table,
                const storage::SessionStateMachine* state_machine,
                ClusterClock* clock, replication::NodeDriver* driver,
                WritePath* writes);
  ~ExpirySweeper();  // Stop()s.

  ExpirySweeper(const ExpirySweeper&) = delete;
  ExpirySweeper& operator=(const ExpirySweeper&) = delete;

  // Runs one sweep now on the calling thread; returns the number of
  // sessions the applied commands removed.
  uint64_t SweepOnce();

  void Stop();

  // SIGHUP (Daemon::Reload): new interval, batch and look-ahead, from the
  // next sweep on. The sweeper is kept, and with it the breaker's judge: a
  // new one would judge its first window with no baseline, so a flood of
  // short-lived sessions then would expire unjudged and become the next
  // window's expectation.
  void Reconfigure(absl::Duration interval, size_t batch,
                   absl::Duration breaker_lookahead);

  // Times this node's sweeper proposed to open or clear the breaker.
  uint64_t breaker_opens_proposed() const {
    return breaker_opens_proposed_.load(std::memory_order_relaxed);
  }

  uint64_t removed_total() const {
    return removed_total_.load(std::memory_order_relaxed);
  }
  // Sessions removed by purges of revocations past their retention.
  uint64_t purged_total() const {
    return purged_total_.load(std::memory_order_relaxed);
  }

 private:
  struct Proposal;
  // Proposes `command`; Wait() for its result.
  std::shared_ptr<Proposal> Propose(sessiond::v1::internal::Command command);
  // The result once applied (nullopt, logged, when the command failed or
  // did not apply within apply_timeout).
  std::optional<replication::ApplyResult> Wait(Proposal& proposal);
  std::optional<replication::ApplyResult> SubmitAndWait(
      sessiond::v1::internal::Command command) {
    return Wait(*Propose(std::move(command)));
  }
  // One sweep with the breaker closed: judge, then expire (unless not
  // `remove`: a new leader's grace) or open.
  uint64_t SweepClosed(int64_t steady_ms,
                       const sessiond::v1::ExpiryBreaker& breaker, bool remove);
  // With the breaker open: propose to close it once what it holds back is
  // no longer unexpected.
  void MaybeClearBreaker(int64_t steady_ms,
                         const sessiond::v1::ExpiryBreaker& breaker);
  int64_t SteadyMs() const;
  // Starts the judge's window of a new leadership: at now, or before the
  // last clock catch-up when one applied within a window's time and no
  // breaker closed after it (ExpiryBreakerOptions: a new leader may first
  // sweep after the jump, which would then look planned).
  void StartNewLeadersWindow(int64_t steady_ms, int64_t now_ms,
                             const sessiond::v1::ExpiryBreaker& breaker,
                             std::optional<uint64_t> baseline);
  // Into options_.stats: the due sessions this sweep found, and whether
  // that was all one sweep may remove.
  void PublishDue(size_t due, bool at_cap);
  // Proposes a purge of the revocations whose retention has passed.
  void PurgeRevocations();
  // Proposes a purge of the create request ids whose window has passed.
  void PurgeCreateRequests();
  // Proposes a trim of the audit entries that aged out.
  void TrimAudit();

  const ExpirySweeperOptions options_;
  const storage::SessionTable* const table_;                 // outlives this
  const storage::SessionStateMachine* const state_machine_;  // outlives this
  ClusterClock* const clock_;                                // outlives this
  replication::NodeDriver* const driver_;                    // outlives this
  WritePath* const writes_;                                  // outlives this
  // options_.batch and breaker_lookahead, as Reconfigure last set them.
  std::atomic<size_t> batch_;
  std::atomic<int64_t> breaker_lookahead_ms_;
  std::atomic<uint64_t> removed_total_{0};
  std::atomic<uint64_t> purged_total_{0};
  std::atomic<uint64_t> breaker_opens_proposed_{0};

  // Sweeper thread only (SweepOnce). The judge of this leadership, and the
  // breaker opening (times_opened) its window started after; when this
  // leader first saw the open breaker (seen_open_id_, seen_open_steady_ms_).
  ExpiryBreakerJudge judge_;
  bool judging_ = false;
  uint64_t judged_after_opening_ = 0;
  uint64_t seen_open_id_ = 0;
  int64_t seen_open_steady_ms_ = 0;
  // When this node's current leadership (of leading_term_) was first seen
  // (new_leader_grace).
  std::optional<int64_t> leading_since_steady_ms_;
  Term leading_term_;
  // The last sweep that found this leader cut off from its quorum
  // (quorum_silence).
  std::optional<int64_t> cut_off_steady_ms_;
  // The table shard the next collection of due sessions starts at: one on
  // each sweep, so a backlog over the cap is taken from every shard in turn.
  size_t next_first_shard_ = 0;

  PeriodicTask task_;  // last: its thread uses the members above
};

}  // namespace sessiond::server

#endif  // SESSIOND_SERVER_EXPIRY_SWEEPER_H_
