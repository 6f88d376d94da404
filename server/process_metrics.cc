// Copyright sessiond authors. Licensed under the Apache License 2.0.
#include "server/process_metrics.h"

#include <sys/resource.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <system_error>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace sessiond::server {
namespace {

std::string ReadFile(const char* path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

// The system's boot time (Unix seconds), from /proc/stat's btime line.
std::optional<uint64_t> BootTimeSeconds() {
  for (absl::string_view line : absl::StrSplit(ReadFile("/proc/stat"), '\n')) {
    if (!absl::ConsumePrefix(&line, "btime ")) continue;
    uint64_t btime = 0;
    if (absl::SimpleAtoi(line, &btime)) return btime;
  }
  return std::nullopt;
}

}  // namespace

std::optional<ProcessStats> ReadProcessStats() {
  // proc(5): "pid (comm) state ppid ..."; comm may hold spaces and
  // parentheses, so the fields are counted from the last ')'.
  const std::string stat = ReadFile("/proc/self/stat");
  const size_t paren = stat.rfind(')');
  if (paren == std::string::npos) return std::nullopt;
  const std::vector<absl::string_view> fields = absl::StrSplit(
      absl::string_view(stat).substr(paren + 1), ' ', absl::SkipEmpty());
  // fields[0] is field 3 (state): field N is fields[N - 3].
  auto field = [&fields](size_t n, uint64_t* out) {
    return n >= 3 && n - 3 < fields.size() &&
           absl::SimpleAtoi(fields[n - 3], out);
  };
  uint64_t utime = 0, stime = 0, starttime = 0, vsize = 0, rss_pages = 0;
  if (!field(14, &utime) || !field(15, &stime) || !field(22, &starttime) ||
      !field(23, &vsize) || !field(24, &rss_pages)) {
    return std::nullopt;
  }
  const double ticks = static_cast<double>(sysconf(_SC_CLK_TCK));
  ProcessStats s;
  s.cpu_seconds = static_cast<double>(utime + stime) / ticks;
  s.virtual_bytes = vsize;
  s.resident_bytes = rss_pages * static_cast<uint64_t>(sysconf(_SC_PAGESIZE));
  if (std::optional<uint64_t> boot = BootTimeSeconds()) {
    s.start_time_seconds =
        static_cast<double>(*boot) + static_cast<double>(starttime) / ticks;
  }
  std::error_code ec;
  for (std::filesystem::directory_iterator it("/proc/self/fd", ec), end;
       !ec && it != end; it.increment(ec)) {
    ++s.open_fds;
  }
  rlimit limit{};
  if (getrlimit(RLIMIT_NOFILE, &limit) == 0) {
    s.max_fds = static_cast<uint64_t>(limit.rlim_cur);
  }
  return s;
}

void CollectProcessMetrics(metrics::ExpositionWriter* writer) {
  const std::optional<ProcessStats> s = ReadProcessStats();
  if (!s) return;
  using metrics::MetricType;
  if (writer->BeginFamily("process_cpu_seconds_total", MetricType::kCounter,
                          "Total user and system CPU time spent in seconds")) {
    writer->Sample({}, s->cpu_seconds);
  }
  writer->Gauge("process_resident_memory_bytes",
                "Resident memory size in bytes",
                static_cast<double>(s->resident_bytes));
  writer->Gauge("process_virtual_memory_bytes", "Virtual memory size in bytes",
                static_cast<double>(s->virtual_bytes));
  writer->Gauge("process_open_fds", "Number of open file descriptors",
                static_cast<double>(s->open_fds));
  writer->Gauge("process_max_fds", "Maximum number of open file descriptors",
                static_cast<double>(s->max_fds));
  writer->Gauge("process_start_time_seconds",
                "Start time of the process since unix epoch in seconds",
                s->start_time_seconds);
}

}  // namespace sessiond::server
