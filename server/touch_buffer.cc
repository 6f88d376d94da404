// Copyright sessiond authors. Licensed under the Apache License 2.0.
#include "server/touch_buffer.h"

#include <algorithm>
#include <cstdio>
#include <utility>
#include <vector>

#include "absl/time/clock.h"
#include "common/log.h"
#include "sessiond/v1/command.pb.h"

namespace sessiond::server {

TouchBuffer::TouchBuffer(WritePath* writes, absl::Duration flush_interval)
    : writes_(writes),
      flush_interval_(flush_interval),
      flusher_("sd-touches", flush_interval, [this] { Flush(); }) {}

TouchBuffer::~TouchBuffer() { Stop(); }

void TouchBuffer::Record(const storage::TokenHash& hash, int64_t seen_at_ms) {
  Shard& shard = shards_[hash[0] % kShards];
  absl::MutexLock lock(&shard.mu);
  auto [it, inserted] = shard.touches.try_emplace(hash, seen_at_ms);
  if (!inserted && it->second < seen_at_ms) it->second = seen_at_ms;
}

size_t TouchBuffer::Flush() {
  std::vector<std::pair<storage::TokenHash, int64_t>> touches;
  for (Shard& shard : shards_) {
    absl::flat_hash_map<storage::TokenHash, int64_t, storage::TokenHashHasher>
        taken;
    {
      absl::MutexLock lock(&shard.mu);
      taken.swap(shard.touches);
    }
    for (auto& [hash, seen] : taken) touches.emplace_back(hash, seen);
  }
  for (size_t start = 0; start < touches.size();
       start += kMaxTouchesPerCommand) {
    const size_t end = std::min(touches.size(), start + kMaxTouchesPerCommand);
    sessiond::v1::internal::Command command;
    auto* touch = command.mutable_touch();
    for (size_t i = start; i < end; ++i) {
      auto* t = touch->add_touches();
      t->set_token_hash(std::string(storage::TokenHashBytes(touches[i].first)));
      t->set_seen_at_ms(touches[i].second);
    }
    flushed_commands_.fetch_add(1, std::memory_order_relaxed);
    // A lost touch batch (no leader in time, shutting down) only makes idle
    // expiry come a little earlier for those sessions; it is not retried.
    // It may take until the next flush to reach the log.
    writes_->Submit(
        std::move(command),
        absl::Now() + std::max(flush_interval_, absl::Seconds(1)),
        [this](replication::ApplyResult result) {
          // NotFound / FailedPrecondition: the session was revoked or
          // expired after the validation that touched it; nothing to do.
          const absl::StatusCode code = result.status().code();
          if (code == absl::StatusCode::kUnavailable ||
              code == absl::StatusCode::kResourceExhausted) {
            lost_commands_.fetch_add(1, std::memory_order_relaxed);
          } else if (!result.ok() && code != absl::StatusCode::kNotFound &&
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
