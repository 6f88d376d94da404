// Copyright sessiond authors. Licensed under the Apache License 2.0.
#ifndef SESSIOND_SERVER_TOUCH_BUFFER_H_
#define SESSIOND_SERVER_TOUCH_BUFFER_H_

#include <array>
#include <atomic>
#include <cstdint>
#include <functional>
#include <optional>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "server/pending_touch.h"
#include "server/periodic_task.h"
#include "server/write_path.h"
#include "storage/token.h"

namespace sessiond::server {

// Folds "this session was just used" (ValidateSession with touch=true) into
// one TouchCommand per flush interval instead of one log entry per
// validation: a busy session validated a thousand times a second costs one
// entry per interval. The price is resolution: an idle timeout is enforced
// to within one flush interval (the last_seen a replica knows can lag the
// real last use by up to that long). docs/ARCHITECTURE.md records this.
// A session whose idle timeout is under three intervals (created through a
// node with a shorter one, or before a restart that lengthened it) has its
// touch flushed within a third of its idle timeout instead: held for the
// interval, it would idle out while in use.
//
// Every node folds its own validations; a follower's batch goes to the
// leader through the WritePath like any other write.
//
// Thread-safe: Record from any gRPC thread (sharded locks); a flusher
// thread submits the batch. What `submit` calls must outlive this (Stop()
// first).
class TouchBuffer {
 public:
  // Most touches per TouchCommand; a larger backlog goes in several.
  static constexpr size_t kMaxTouchesPerCommand = 10000;

  // WritePath::Submit, or a test's stand-in: replicates the command and
  // calls `done` once with the result, by the deadline.
  using Submit = std::function<void(sessiond::v1::internal::Command, absl::Time,
                                    WritePath::Done)>;

  // `now_ms`: this node's cluster time (ClusterClock::NowMs).
  TouchBuffer(Submit submit, absl::Duration flush_interval,
              std::function<int64_t()> now_ms);
  ~TouchBuffer();  // Stop()s.

  TouchBuffer(const TouchBuffer&) = delete;
  TouchBuffer& operator=(const TouchBuffer&) = delete;

  // Notes that `hash` was used at `seen_at_ms`; the latest use wins.
  // `idle_judged_at_ms`, when not 0: the answer was stale, its idle timeout
  // judged at that cluster time (TouchCommand.Touch.idle_judged_at_ms); the
  // earliest such time wins, since each was a true judgement and the
  // session, alive then by the log's record, was alive at every later one.
  // `idle_timeout_ms`: the session's (0: none); the touch is flushed within
  // a third of it.
  void Record(const storage::TokenHash& hash, int64_t seen_at_ms,
              int64_t idle_judged_at_ms = 0, int64_t idle_timeout_ms = 0);
  void RecordAll(const std::vector<PendingTouch>& touches) {
    for (const PendingTouch& t : touches) {
      Record(t.hash, t.seen_at_ms, t.idle_judged_at_ms, t.idle_timeout_ms);
    }
  }

  // Submits everything recorded so far now (also used at shutdown and by
  // tests). Returns the number of touches submitted. Does not wait for them
  // to apply.
  size_t Flush();

  // Flushes one last time and stops the flusher thread. Idempotent.
  void Stop();

  // After Stop(), once every batch submitted was answered (the write path
  // drained): the touches still held, kept from batches that failed, and
  // the stall. Leaves the buffer empty.
  UnlandedTouches TakeUnlanded();
  // Before any Record: holds `unlanded` for the next flush, kept through
  // its stall as they were (StalledSinceMs says so until they land).
  void Adopt(const UnlandedTouches& unlanded);

  // While batches fail to reach the log (no leader in time, a full disk):
  // the cluster time as of which every touch recorded here is in the log
  // (the earliest of the failed batches'). Idle time past it is not counted
  // (reads judge it there, and the touches kept for later carry it as their
  // idle_judged_at_ms): users active through this node would otherwise idle
  // out during the outage, and again when it ends, before their touches
  // land. nullopt once every kept touch has landed: not when the first
  // batch commits, since the kept touches may go out in several (more than
  // kMaxTouchesPerCommand, or a batch that failed after the next flush).
  std::optional<int64_t> StalledSinceMs() const;

  // A stall, or one that ended less than two flush intervals ago (the
  // touches kept during it may still be on their way): the expiry sweeper
  // of a lone voter removes nothing meanwhile.
  bool RecentlyStalled() const;

  uint64_t flushed_commands() const {
    return flushed_commands_.load(std::memory_order_relaxed);
  }
  // Touch batches that failed to reach the log (no leader in time, no
  // quorum, a full disk); their touches went into the next flush (lost only
  // when the node stops before one succeeds).
  uint64_t lost_commands() const {
    return lost_commands_.load(std::memory_order_relaxed);
  }

 private:
  static constexpr size_t kShards = 16;
  struct Touch {
    int64_t seen_at_ms = 0;
    int64_t idle_judged_at_ms = 0;  // 0: judged at applied time
    bool kept = false;              // from a batch that failed during a stall
    int64_t idle_timeout_ms = 0;    // the session's; 0: none
  };
  using TouchMap =
      absl::flat_hash_map<storage::TokenHash, Touch, storage::TokenHashHasher>;
  struct Shard {
    absl::Mutex mu;
    TouchMap touches ABSL_GUARDED_BY(mu);
  };

  // Merges `touch` into the shards: true when it is a kept one (from a
  // failed batch) that the shards did not hold as kept yet, for the caller
  // to count in kept_pending_. Has the flusher run early when the touch's
  // session idles out in under three intervals.
  bool Add(const storage::TokenHash& hash, const Touch& touch);
  // A batch of `kept` kept touches, submitted, was answered with `result`.
  void Answered(const replication::ApplyResult& result,
                std::vector<std::pair<storage::TokenHash, Touch>> batch,
                int64_t committed_through, size_t kept);

  const Submit submit_;
  const absl::Duration flush_interval_;
  const std::function<int64_t()> now_ms_;
  // Cluster time when the last flush began (0: none yet); StalledSinceMs
  // (0: not stalled; written under stall_mu_, read without it); when the
  // last stall ended, steady clock ns (0: none).
  std::atomic<int64_t> last_flush_start_ms_{0};
  std::atomic<int64_t> stalled_since_ms_{0};
  std::atomic<int64_t> stall_ended_steady_ns_{0};
  // Steady clock ns by which the next flush was asked to run (Add), for
  // the touch of a session that idles out in under three intervals;
  // INT64_MAX: no such touch since the last flush began.
  std::atomic<int64_t> flush_by_steady_ns_{INT64_MAX};
  // Batch answers (Answered) change the stall and its count together:
  // apart, one answer could end a stall another was starting, or leave one
  // on with nothing left to land.
  absl::Mutex stall_mu_;
  // Kept touches not in the log yet: in the shards (one per token) or in a
  // batch on its way. The stall ends when it falls to 0.
  int64_t kept_pending_ ABSL_GUARDED_BY(stall_mu_) = 0;
  std::array<Shard, kShards> shards_;
  std::atomic<uint64_t> flushed_commands_{0};
  std::atomic<uint64_t> lost_commands_{0};

  PeriodicTask flusher_;  // last: its thread uses the members above
};

}  // namespace sessiond::server

#endif  // SESSIOND_SERVER_TOUCH_BUFFER_H_
