// Copyright sessiond authors. Licensed under the Apache License 2.0.
#ifndef SESSIOND_COMMON_BOUNDED_COUNTER_H_
#define SESSIOND_COMMON_BOUNDED_COUNTER_H_

#include <atomic>
#include <cstdint>

namespace sessiond {

// Adds `amount` to `counter` unless that takes it past `limit`; one amount
// larger than `limit` is added when the counter is at zero (refused, it
// would be refused for good). Returns whether it added. One
// compare-and-swap: callers racing each other never all pass on the same
// reading ("nothing held"). The caller subtracts `amount` when done.
inline bool AddWithinLimit(std::atomic<uint64_t>* counter, uint64_t amount,
                           uint64_t limit) {
  uint64_t now = counter->load(std::memory_order_relaxed);
  do {
    if (now > 0 && now + amount > limit) return false;
  } while (!counter->compare_exchange_weak(now, now + amount,
                                           std::memory_order_relaxed));
  return true;
}

}  // namespace sessiond

#endif  // SESSIOND_COMMON_BOUNDED_COUNTER_H_
