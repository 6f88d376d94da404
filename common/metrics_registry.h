// Copyright sessiond authors. Licensed under the Apache License 2.0.
#ifndef SESSIOND_COMMON_METRICS_REGISTRY_H_
#define SESSIOND_COMMON_METRICS_REGISTRY_H_

#include <functional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "common/metrics_exposition.h"

namespace sessiond::metrics {

// The collectors a /metrics scrape runs. A collector reads whatever it
// exports (instruments, a status snapshot, /proc) and writes its families;
// nothing is copied between scrapes, so the hot paths only ever touch their
// own instruments.
//
// Thread-safe. Render runs the collectors in the order they were added, on
// the calling thread, one scrape at a time; whatever a collector reads must
// outlive the registry (or at least every Render).
class MetricsRegistry {
 public:
  using Collector = std::function<void(ExpositionWriter*)>;

  void AddCollector(Collector collector) ABSL_LOCKS_EXCLUDED(mu_);

  // The whole exposition (common/metrics_exposition.h).
  std::string Render() const ABSL_LOCKS_EXCLUDED(mu_);

 private:
  mutable absl::Mutex mu_;
  std::vector<Collector> collectors_ ABSL_GUARDED_BY(mu_);
};

}  // namespace sessiond::metrics

#endif  // SESSIOND_COMMON_METRICS_REGISTRY_H_
