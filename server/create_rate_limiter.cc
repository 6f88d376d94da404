// Copyright sessiond authors. Licensed under the Apache License 2.0.
#include "server/create_rate_limiter.h"

#include <algorithm>
#include <cmath>

#include "absl/hash/hash.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "server/grpc_status.h"

namespace sessiond::server {

CreateRateLimiter::CreateRateLimiter(const CreateRateLimiterOptions& options)
    : rate_per_s_(std::max(0.0, options.rate_per_s)),
      burst_(options.burst > 0 ? options.burst
                               : std::max(1.0, options.rate_per_s)),
      max_per_shard_(std::max<size_t>(1, options.max_identities / kShards)) {}

void CreateRateLimiter::DropRefilled(Shard& shard, absl::Duration now) {
  absl::erase_if(shard.buckets, [&](const auto& entry) {
    const Bucket& b = entry.second;
    return b.tokens + absl::ToDoubleSeconds(now - b.updated) * rate_per_s_ >=
           burst_;
  });
}

absl::Status CreateRateLimiter::Admit(absl::string_view identity,
                                      uint32_t creates, absl::Duration now) {
  if (!enabled() || creates == 0) return absl::OkStatus();
  Shard& shard = ShardOf(identity);
  absl::MutexLock lock(&shard.mu);
  auto it = shard.buckets.find(identity);
  if (it == shard.buckets.end()) {
    if (shard.buckets.size() >= max_per_shard_) {
      DropRefilled(shard, now);
      if (shard.buckets.size() >= max_per_shard_) {
        untracked_.fetch_add(1, std::memory_order_relaxed);
        return absl::OkStatus();
      }
    }
    it =
        shard.buckets.emplace(std::string(identity), Bucket{burst_, now}).first;
  }
  Bucket& bucket = it->second;
  if (now > bucket.updated) {
    bucket.tokens = std::min(
        burst_, bucket.tokens +
                    absl::ToDoubleSeconds(now - bucket.updated) * rate_per_s_);
    bucket.updated = now;
  }
  const double needed = std::min(static_cast<double>(creates), burst_);
  if (bucket.tokens >= needed) {
    bucket.tokens -= creates;
    return absl::OkStatus();
  }
  const absl::Duration wait =
      absl::Seconds((needed - bucket.tokens) / rate_per_s_);
  return WithRetryDelay(
      absl::ResourceExhaustedError(absl::StrFormat(
          "create rate limit of %g/s (burst %g) for %s reached; retry in %d ms "
          "(a limit per caller: --create_rate_per_identity)",
          rate_per_s_, burst_, identity,
          static_cast<int64_t>(std::ceil(absl::ToDoubleMilliseconds(wait))))),
      SpreadRetryDelay(wait));
}

void CreateRateLimiter::Refund(absl::string_view identity, uint32_t creates) {
  if (!enabled() || creates == 0) return;
  Shard& shard = ShardOf(identity);
  absl::MutexLock lock(&shard.mu);
  auto it = shard.buckets.find(identity);
  if (it == shard.buckets.end()) return;
  it->second.tokens = std::min(burst_, it->second.tokens + creates);
}

size_t CreateRateLimiter::identities() const {
  size_t n = 0;
  for (const Shard& shard : shards_) {
    absl::MutexLock lock(&shard.mu);
    n += shard.buckets.size();
  }
  return n;
}

}  // namespace sessiond::server
