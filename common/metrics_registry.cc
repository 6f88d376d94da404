// Copyright sessiond authors. Licensed under the Apache License 2.0.
#include "common/metrics_registry.h"

#include <utility>

namespace sessiond::metrics {

void MetricsRegistry::AddCollector(Collector collector) {
  absl::MutexLock lock(&mu_);
  collectors_.push_back(std::move(collector));
}

std::string MetricsRegistry::Render() const {
  ExpositionWriter writer;
  absl::MutexLock lock(&mu_);
  for (const Collector& collect : collectors_) collect(&writer);
  return writer.Take();
}

}  // namespace sessiond::metrics
