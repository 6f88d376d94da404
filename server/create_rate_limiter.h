// Copyright sessiond authors. Licensed under the Apache License 2.0.
//
// A per-identity rate limit for creates (--create_rate_per_identity,
// docs/OPERATIONS.md "Overload"): one token bucket per caller, so one app
// server in a retry storm, or a stolen credential minting sessions, cannot
// take the create capacity every other caller shares. The identity is the
// one the call authenticated as (server/auth.h); on a plaintext loopback
// listener, which has no identities, the caller's host.
//
// Each bucket holds up to `burst` creates and refills at `rate_per_s`. A
// call for n creates passes when the bucket holds min(n, burst) (a batch
// larger than the burst passes from a full bucket and leaves it in debt, so
// batches are never refused for good), and takes n. A refused call takes
// nothing and learns how long until it would pass: the RetryInfo of its
// RESOURCE_EXHAUSTED answer.
//
// Memory is bounded: at most `max_identities` buckets; when a new identity
// finds the table full, buckets that have refilled (idle callers: forgetting
// them changes no decision) are dropped first, and if none has, the new
// caller is let through untracked (counted in untracked()) rather than
// refused for others' sake.
//
// Thread-safe: buckets are split over shards, each with its own mutex (a
// leaf lock). Time comes in as a steady-clock reading, so tests step it.
#ifndef SESSIOND_SERVER_CREATE_RATE_LIMITER_H_
#define SESSIOND_SERVER_CREATE_RATE_LIMITER_H_

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace sessiond::server {

struct CreateRateLimiterOptions {
  double rate_per_s = 0;  // 0: no limit
  double burst = 0;       // 0: max(1, rate_per_s)
  size_t max_identities = 100'000;
};

class CreateRateLimiter {
 public:
  explicit CreateRateLimiter(const CreateRateLimiterOptions& options);

  bool enabled() const { return rate_per_s_ > 0; }

  // OK, or RESOURCE_EXHAUSTED naming the identity and the limit, with the
  // wait until the call would pass as its retry delay (server/
  // grpc_status.h, WithRetryDelay). `now`: a steady clock's reading.
  absl::Status Admit(absl::string_view identity, uint32_t creates,
                     absl::Duration now);

  // Gives back `creates` that Admit took for a call that then created
  // nothing (refused before it was proposed): up to the burst. A bucket
  // dropped meanwhile is full already.
  void Refund(absl::string_view identity, uint32_t creates);

  // Buckets held, and callers let through untracked (the table was full).
  size_t identities() const;
  uint64_t untracked() const { return untracked_.load(); }

 private:
  struct Bucket {
    double tokens = 0;
    absl::Duration updated;
  };
  struct Shard {
    mutable absl::Mutex mu;
    absl::flat_hash_map<std::string, Bucket> buckets ABSL_GUARDED_BY(mu);
  };
  static constexpr size_t kShards = 16;

  Shard& ShardOf(absl::string_view identity) {
    return shards_[absl::Hash<absl::string_view>()(identity) % kShards];
  }
  // Drops the buckets of `shard` that are full at `now`.
  void DropRefilled(Shard& shard, absl::Duration now)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(shard.mu);

  const double rate_per_s_;
  const double burst_;
  const size_t max_per_shard_;
  std::array<Shard, kShards> shards_;
  std::atomic<uint64_t> untracked_{0};
};

}  // namespace sessiond::server

#endif  // SESSIOND_SERVER_CREATE_RATE_LIMITER_H_
