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

TouchBuffer::TouchBuffer(WritePath* writes, absl::Duration flush_interval,
                         std::function<int64_t()> now_ms)
    : writes_(writes),
      flush_interval_(flush_interval),
      now_ms_(std::move(now_ms)),
      flusher_("sd-touches", flush_interval, [this] { Flush(); }) {}

TouchBuffer::~TouchBuffer() { Stop(); }

void TouchBuffer::Record(const storage::TokenHash& hash, int64_t seen_at_ms,
                         int64_t idle_judged_at_ms) {
  Shard& shard = shards_[hash[0] % kShards];
  absl::MutexLock lock(&shard.mu);
  auto [it, inserted] =
      shard.touches.try_emplace(hash, Touch{seen_at_ms, idle_judged_at_ms});
  if (inserted) return;
  Touch& held = it->second;
  held.seen_at_ms = std::max(held.seen_at_ms, seen_at_ms);
  if (idle_judged_at_ms != 0 && (held.idle_judged_at_ms == 0 ||
                                 idle_judged_at_ms < held.idle_judged_at_ms)) {
    held.idle_judged_at_ms = idle_judged_at_ms;
  }
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
    for (const auto& [hash, held] : batch) {
      auto* t = touch->add_touches();
      t->set_token_hash(std::string(storage::TokenHashBytes(hash)));
      t->set_seen_at_ms(held.seen_at_ms);
      if (held.idle_judged_at_ms != 0) {
        t->set_idle_judged_at_ms(held.idle_judged_at_ms);
      }
    }
    flushed_commands_.fetch_add(1, std::memory_order_relaxed);
    writes_->Submit(
        std::move(command),
        absl::Now() + std::max(flush_interval_, absl::Seconds(1)),
        [this, committed_through,
         batch = std::move(batch)](replication::ApplyResult result) {
          // NotFound / FailedPrecondition: the session was revoked or
          // expired after the validation that touched it; nothing to do.
          const absl::StatusCode code = result.status().code();
          if (code == absl::StatusCode::kUnavailable ||
              code == absl::StatusCode::kResourceExhausted) {
            // No leader in time, no quorum, a full disk: the touches go
            // into the next flush. Dropped, a user active through this
            // node would idle out a whole idle timeout after their last
            // touch that reached the log. Applying a touch twice (this
            // batch may yet commit) does no harm: the later time wins.
            lost_commands_.fetch_add(1, std::memory_order_relaxed);
            int64_t none = 0;
            stalled_since_ms_.compare_exchange_strong(
                none, committed_through, std::memory_order_acq_rel);
            const int64_t stalled =
                stalled_since_ms_.load(std::memory_order_acquire);
            // Judged, when they land, no later than where the log stopped
            // taking touches (Record keeps the earlier judgement).
            for (const auto& [hash, held] : batch) {
              int64_t judged = held.idle_judged_at_ms;
              if (stalled != 0) {
                judged = judged == 0 ? stalled : std::min(judged, stalled);
              }
              Record(hash, held.seen_at_ms, judged);
            }
            return;
          }
          if (stalled_since_ms_.exchange(0, std::memory_order_acq_rel) != 0) {
            stall_ended_steady_ns_.store(SteadyNowNs(),
                                         std::memory_order_release);
          }
          if (!result.ok() && code != absl::StatusCode::kNotFound &&
              code != absl::StatusCode::kFailedPrecondition) {
            logging::Warn("touch.batch_failed",
                          logging::Fields().Error(result.status()));
          }
        });
  }
  return touches.size();
}

void TouchBuffer::Stop() {
  if (flusher_.Stop()) Flush();
}

}  // namespace sessiond::server
