// Copyright sessiond authors. Licensed under the Apache License 2.0.
#ifndef SESSIOND_SERVER_PROCESS_METRICS_H_
#define SESSIOND_SERVER_PROCESS_METRICS_H_

#include <cstdint>
#include <optional>

#include "common/metrics_exposition.h"

namespace sessiond::server {

// This process as /proc/self describes it (Linux only).
struct ProcessStats {
  double cpu_seconds = 0;  // user + system
  uint64_t resident_bytes = 0;
  uint64_t virtual_bytes = 0;
  uint64_t open_fds = 0;
  uint64_t max_fds = 0;           // the soft RLIMIT_NOFILE
  double start_time_seconds = 0;  // since the Unix epoch
};

// nullopt when /proc/self/stat cannot be read or parsed.
std::optional<ProcessStats> ReadProcessStats();

// Writes the standard process_* families of Prometheus's client libraries:
// process_cpu_seconds_total, process_resident_memory_bytes,
// process_virtual_memory_bytes, process_open_fds, process_max_fds,
// process_start_time_seconds. Nothing when /proc cannot be read.
void CollectProcessMetrics(metrics::ExpositionWriter* writer);

}  // namespace sessiond::server

#endif  // SESSIOND_SERVER_PROCESS_METRICS_H_
