// Copyright sessiond authors. Licensed under the Apache License 2.0.
#include "server/touch_buffer.h"

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdio>
#include <utility>
#include <vector>

#include "absl/time/clock.h"
#include "common/log.h"
#include "common/steady_clock.h"
#include "sessiond/v1/command.pb.h"

namespace sessiond::server {
namespace {

// The smaller of two values where 0 means unset.
int64_t EarliestSet(int64_t a, int64_t b) {
  if (a == 0) return b;
  if (b == 0) return a;
  return std::min(a, b);
}

}  // namespace

TouchBuffer::TouchBuffer(Submit submit, absl::Duration flush_interval,
                         std::function<int64_t()> now_ms)
    : submit_(std::move(submit)),
      flush_interval_(flush_interval),
      now_ms_(std::move(now_ms)),
      flusher_("sd-touches", flush_interval, [this] { Flush(); }) {}

TouchBuffer::~TouchBuffer() { Stop(); }

void TouchBuffer::Record(const storage::TokenHash& hash, int64_t seen_at_ms,
                         int64_t idle_judged_at_ms, int64_t idle_timeout_ms) {
  (void)Add(hash, Touch{seen_at_ms, idle_judged_at_ms, /*kept=*/false,
                        idle_timeout_ms});
}

bool TouchBuffer::Add(const storage::TokenHash& hash, const Touch& touch) {
  bool counted = false;
  {
    Shard& shard = shards_[hash[0] % kShards];
    absl::MutexLock lock(&shard.mu);
    auto [it, inserted] = shard.touches.try_emplace(hash, touch);
    Touch& held = it->second;
    if (!inserted) {
      // The latest use wins, and the earliest judgement.
      held.seen_at_ms = std::max(held.seen_at_ms, touch.seen_at_ms);
      held.idle_judged_at_ms =
          EarliestSet(held.idle_judged_at_ms, touch.idle_judged_at_ms);
      held.idle_timeout_ms =
          EarliestSet(held.idle_timeout_ms, touch.idle_timeout_ms);
    }
    // A kept touch counts once per token in the shards.
    if (touch.kept && (inserted || !held.kept)) {
      held.kept = true;
      counted = true;
    }
  }
  // After the shard: a flush that began before this point had its
  // flush_by_steady_ns_ reset first, so either it took the touch or this
  // asks for the next one.
  const absl::Duration within = absl::Milliseconds(touch.idle_timeout_ms) / 3;
  if (touch.idle_timeout_ms > 0 && within < flush_interval_) {
    const int64_t by = SteadyNowNs() + absl::ToInt64Nanoseconds(within);
    int64_t asked = flush_by_steady_ns_.load();
    while (by < asked &&
           !flush_by_steady_ns_.compare_exchange_weak(asked, by)) {
    }
    if (by < asked) flusher_.RunWithin(within);
  }
  return counted;
}

std::optional<int64_t> TouchBuffer::StalledSinceMs() const {
  const int64_t since = stalled_since_ms_.load(std::memory_order_acquire);
  if (since == 0) return std::nullopt;
  return since;
}

bool TouchBuffer::RecentlyStalled() const {
  if (stalled_since_ms_.load(std::memory_order_acquire) != 0) return true;
  const int64_t ended = stall_ended_steady_ns_.load(std::memory_order_acquire);
  return ended != 0 &&
         SteadyNowNs() - ended < 2 * absl::ToInt64Nanoseconds(flush_interval_);
}

size_t TouchBuffer::Flush() {
  // Every touch recorded before the previous flush began went out with it
  // (or an earlier one): if this one fails while those committed, the log
  // holds every touch up to then.
  const int64_t started = now_ms_();
  const int64_t previous =
      last_flush_start_ms_.exchange(started, std::memory_order_acq_rel);
  const int64_t committed_through = previous != 0 ? previous : started;
  const int64_t stalled = stalled_since_ms_.load(std::memory_order_acquire);
  // Before the shards are taken (see Add).
  flush_by_steady_ns_.store(INT64_MAX);
  std::vector<std::pair<storage::TokenHash, Touch>> touches;
  for (Shard& shard : shards_) {
    TouchMap taken;
    {
      absl::MutexLock lock(&shard.mu);
      taken.swap(shard.touches);
    }
    for (auto& [hash, touch] : taken) touches.emplace_back(hash, touch);
  }
  for (size_t start = 0; start < touches.size();
       start += kMaxTouchesPerCommand) {
    const size_t end = std::min(touches.size(), start + kMaxTouchesPerCommand);
    sessiond::v1::internal::Command command;
    auto* touch = command.mutable_touch();
    std::vector<std::pair<storage::TokenHash, Touch>> batch(
        touches.begin() + static_cast<std::ptrdiff_t>(start),
        touches.begin() + static_cast<std::ptrdiff_t>(end));
    size_t kept = 0;
    for (auto& [hash, held] : batch) {
      // A batch that failed after this one's was kept judged at the later
      // point; the stall began earlier.
      if (held.kept && stalled != 0 && held.idle_judged_at_ms > stalled) {
        held.idle_judged_at_ms = stalled;
      }
      auto* t = touch->add_touches();
      t->set_token_hash(std::string(storage::TokenHashBytes(hash)));
      t->set_seen_at_ms(held.seen_at_ms);
      if (held.idle_judged_at_ms != 0) {
        t->set_idle_judged_at_ms(held.idle_judged_at_ms);
      }
      kept += held.kept ? 1 : 0;
    }
    flushed_commands_.fetch_add(1, std::memory_order_relaxed);
    submit_(std::move(command),
            absl::Now() + std::max(flush_interval_, absl::Seconds(1)),
            [this, committed_through, kept, batch = std::move(batch)](
                replication::ApplyResult result) mutable {
              Answered(result, std::move(batch), committed_through, kept);
            });
  }
  return touches.size();
}

void TouchBuffer::Answered(
    const replication::ApplyResult& result,
    std::vector<std::pair<storage::TokenHash, Touch>> batch,
    int64_t committed_through, size_t kept) {
  // NotFound / FailedPrecondition: the session was revoked or expired after
  // the validation that touched it; nothing to do.
  const absl::StatusCode code = result.status().code();
  if (code == absl::StatusCode::kUnavailable ||
      code == absl::StatusCode::kResourceExhausted) {
    // No leader in time, no quorum, a full disk: the touches go into the
    // next flush. Dropped, a user active through this node would idle out a
    // whole idle timeout after their last touch that reached the log.
    // Applying a touch twice (this batch may yet commit) does no harm: the
    // later time wins.
    lost_commands_.fetch_add(1, std::memory_order_relaxed);
    // The stall's start and count change together: answers come on several
    // threads (the completion stage, a timer, a forwarded call's).
    absl::MutexLock lock(&stall_mu_);
    // The earliest failed batch's: failures may be answered out of order.
    int64_t stalled = stalled_since_ms_.load(std::memory_order_relaxed);
    if (stalled == 0 || committed_through < stalled) {
      stalled = committed_through;
      stalled_since_ms_.store(stalled, std::memory_order_release);
    }
    // Judged, when they land, no later than where the log stopped taking
    // touches (Add keeps the earlier judgement).
    int64_t counted = 0;
    for (auto& [hash, held] : batch) {
      held.idle_judged_at_ms = EarliestSet(held.idle_judged_at_ms, stalled);
      held.kept = true;
      counted += Add(hash, held) ? 1 : 0;
    }
    kept_pending_ += counted - static_cast<int64_t>(kept);
    return;
  }
  // Landed (or never will: the session ended, or an error logged below).
  {
    absl::MutexLock lock(&stall_mu_);
    kept_pending_ -= static_cast<int64_t>(kept);
    if (kept_pending_ == 0 &&
        stalled_since_ms_.exchange(0, std::memory_order_acq_rel) != 0) {
      stall_ended_steady_ns_.store(SteadyNowNs(), std::memory_order_release);
    }
  }
  if (!result.ok() && code != absl::StatusCode::kNotFound &&
      code != absl::StatusCode::kFailedPrecondition) {
    logging::Warn("touch.batch_failed",
                  logging::Fields().Error(result.status()));
  }
}

UnlandedTouches TouchBuffer::TakeUnlanded() {
  UnlandedTouches unlanded;
  for (Shard& shard : shards_) {
    absl::MutexLock lock(&shard.mu);
    for (const auto& [hash, held] : shard.touches) {
      unlanded.touches.push_back(PendingTouch{
          hash, held.seen_at_ms, held.idle_judged_at_ms, held.idle_timeout_ms});
    }
    shard.touches.clear();
  }
  absl::MutexLock lock(&stall_mu_);
  unlanded.stalled_since_ms =
      stalled_since_ms_.exchange(0, std::memory_order_acq_rel);
  kept_pending_ = 0;
  return unlanded;
}

void TouchBuffer::Adopt(const UnlandedTouches& unlanded) {
  const bool stalled = unlanded.stalled_since_ms != 0;
  int64_t counted = 0;
  for (const PendingTouch& t : unlanded.touches) {
    counted += Add(t.hash, Touch{t.seen_at_ms, t.idle_judged_at_ms,
                                 /*kept=*/stalled, t.idle_timeout_ms})
                   ? 1
                   : 0;
  }
  if (!stalled || counted == 0) return;
  absl::MutexLock lock(&stall_mu_);
  kept_pending_ += counted;
  const int64_t since = stalled_since_ms_.load(std::memory_order_relaxed);
  if (since == 0 || unlanded.stalled_since_ms < since) {
    stalled_since_ms_.store(unlanded.stalled_since_ms,
                            std::memory_order_release);
  }
}

void TouchBuffer::Stop() {
  if (flusher_.Stop()) Flush();
}

}  // namespace sessiond::server
