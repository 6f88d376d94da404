// Copyright sessiond authors. Licensed under the Apache License 2.0.
#ifndef SESSIOND_COMMON_METRICS_H_
#define SESSIOND_COMMON_METRICS_H_

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <vector>

namespace sessiond::metrics {

// The instruments behind the /metrics endpoint (docs/OPERATIONS.md,
// "Metrics"). Each is lock-free on the hot path: one or two relaxed atomic
// adds, no allocation, no lock. A reader sees every update sooner or later,
// in no particular order across instruments (a scrape is not a snapshot of
// the whole process, and need not be).

// A count that only goes up. Thread-safe.
class Counter {
 public:
  void Increment(uint64_t n = 1) {
    value_.fetch_add(n, std::memory_order_relaxed);
  }
  uint64_t value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<uint64_t> value_{0};
};

// A value that goes up and down. Thread-safe.
class Gauge {
 public:
  void Set(double v) { value_.store(v, std::memory_order_relaxed); }
  void Add(double d) { value_.fetch_add(d, std::memory_order_relaxed); }
  double value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<double> value_{0};
};

// What a LatencyHistogram held when read: Prometheus's shape, cumulative.
struct HistogramSnapshot {
  // The finite upper bounds, in seconds, ascending; +Inf is implied.
  std::vector<double> upper_bounds_seconds;
  // cumulative[i]: observations <= upper_bounds_seconds[i]; one more entry
  // at the end for +Inf, equal to `count`.
  std::vector<uint64_t> cumulative;
  uint64_t count = 0;
  double sum_seconds = 0;
};

// Durations in fixed buckets (Prometheus's `le` buckets), for latencies.
//
// Observe costs a binary search over the bounds and two relaxed atomic adds
// (the bucket and the sum, kept in integer nanoseconds so no CAS loop is
// needed). The count is the sum of the buckets, so a reader's _count always
// equals its +Inf bucket even while writers race it; only _sum may be a
// few observations ahead or behind.
//
// Thread-safe; the bounds are fixed at construction.
class LatencyHistogram {
 public:
  // 50 us to 10 s: validations (~0.1-2 ms), writes (one fsync, ~1-20 ms),
  // and the stalls worth seeing (a slow disk, a lost quorum).
  static std::vector<double> DefaultBoundsSeconds();

  // `upper_bounds_seconds`: finite, positive, strictly ascending (others are
  // dropped: a bound not above the previous one, or not finite).
  explicit LatencyHistogram(
      const std::vector<double>& upper_bounds_seconds = DefaultBoundsSeconds());
  LatencyHistogram(const LatencyHistogram&) = delete;
  LatencyHistogram& operator=(const LatencyHistogram&) = delete;

  // A negative duration counts as 0.
  void ObserveNanos(int64_t nanos);
  void Observe(std::chrono::nanoseconds d) { ObserveNanos(d.count()); }

  HistogramSnapshot Read() const;
  // Observations so far (the sum of the buckets).
  uint64_t count() const;

 private:
  std::vector<int64_t> bounds_nanos_;
  std::vector<double> bounds_seconds_;
  // One per finite bound, then +Inf; not cumulative.
  std::unique_ptr<std::atomic<uint64_t>[]> buckets_;
  std::atomic<uint64_t> sum_nanos_{0};
};

}  // namespace sessiond::metrics

#endif  // SESSIOND_COMMON_METRICS_H_
