// Copyright sessiond authors. Licensed under the Apache License 2.0.
#include "common/metrics.h"

#include <algorithm>
#include <cmath>

namespace sessiond::metrics {

std::vector<double> LatencyHistogram::DefaultBoundsSeconds() {
  return {0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
          0.05,    0.1,    0.25,    0.5,    1,     2.5,    5,     10};
}

LatencyHistogram::LatencyHistogram(
    const std::vector<double>& upper_bounds_seconds) {
  for (double b : upper_bounds_seconds) {
    if (!std::isfinite(b) || b <= 0 ||
        (!bounds_seconds_.empty() && b <= bounds_seconds_.back())) {
      continue;
    }
    bounds_seconds_.push_back(b);
    bounds_nanos_.push_back(static_cast<int64_t>(std::llround(b * 1e9)));
  }
  buckets_ =
      std::make_unique<std::atomic<uint64_t>[]>(bounds_nanos_.size() + 1);
  for (size_t i = 0; i <= bounds_nanos_.size(); ++i) buckets_[i].store(0);
}

void LatencyHistogram::ObserveNanos(int64_t nanos) {
  if (nanos < 0) nanos = 0;
  // The first bound >= nanos: Prometheus buckets are "less or equal".
  const size_t i = static_cast<size_t>(
      std::lower_bound(bounds_nanos_.begin(), bounds_nanos_.end(), nanos) -
      bounds_nanos_.begin());
  buckets_[i].fetch_add(1, std::memory_order_relaxed);
  sum_nanos_.fetch_add(static_cast<uint64_t>(nanos), std::memory_order_relaxed);
}

uint64_t LatencyHistogram::count() const {
  uint64_t total = 0;
  for (size_t i = 0; i <= bounds_nanos_.size(); ++i) {
    total += buckets_[i].load(std::memory_order_relaxed);
  }
  return total;
}

HistogramSnapshot LatencyHistogram::Read() const {
  HistogramSnapshot s;
  s.upper_bounds_seconds = bounds_seconds_;
  s.cumulative.reserve(bounds_nanos_.size() + 1);
  uint64_t running = 0;
  for (size_t i = 0; i <= bounds_nanos_.size(); ++i) {
    running += buckets_[i].load(std::memory_order_relaxed);
    s.cumulative.push_back(running);
  }
  s.count = running;
  s.sum_seconds =
      static_cast<double>(sum_nanos_.load(std::memory_order_relaxed)) / 1e9;
  return s;
}

}  // namespace sessiond::metrics
