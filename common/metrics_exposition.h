// Copyright sessiond authors. Licensed under the Apache License 2.0.
//
// The Prometheus text exposition format, version 0.0.4 (what GET /metrics
// answers, Content-Type "text/plain; version=0.0.4"):
//
//   # HELP <name> <help, with \ and newline escaped>
//   # TYPE <name> counter|gauge|histogram
//   <name>{<label>="<value>",...} <value>
//
// Every family's HELP and TYPE lines come once, before its samples, and a
// family's samples are contiguous. Label values escape \ as \\, " as \" and
// newline as \n. A histogram `h` is written as cumulative `h_bucket{le=...}`
// samples ending with le="+Inf", then `h_sum` and `h_count`. Values are
// decimal (the shortest text that reads back as the same double), "+Inf",
// "-Inf" or "NaN".
#ifndef SESSIOND_COMMON_METRICS_EXPOSITION_H_
#define SESSIOND_COMMON_METRICS_EXPOSITION_H_

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/string_view.h"
#include "common/metrics.h"

namespace sessiond::metrics {

// Label name, value; written in this order.
using Labels = std::vector<std::pair<std::string, std::string>>;

enum class MetricType { kCounter, kGauge, kHistogram };

// Builds one exposition. Not thread-safe: one writer per scrape.
class ExpositionWriter {
 public:
  // Starts family `name` and writes its HELP and TYPE lines. Returns false,
  // and drops the family's samples until the next BeginFamily, when `name`
  // is not a valid metric name or was already begun: a repeated family
  // would make Prometheus reject the whole scrape.
  bool BeginFamily(absl::string_view name, MetricType type,
                   absl::string_view help);
  // A sample of the current counter or gauge family. A sample whose label
  // names are invalid (or use the reserved "le" in a histogram) is dropped.
  void Sample(const Labels& labels, double value);
  // The same, exact for integers above 2^53.
  void SampleCount(const Labels& labels, uint64_t value);
  // The samples of one series of the current histogram family.
  void Histogram(const Labels& labels, const HistogramSnapshot& h);

  // A family with one unlabelled sample.
  void Counter(absl::string_view name, absl::string_view help, uint64_t value);
  void Gauge(absl::string_view name, absl::string_view help, double value);

  const std::string& text() const { return out_; }
  std::string Take() { return std::move(out_); }

  static bool IsValidMetricName(absl::string_view name);
  static bool IsValidLabelName(absl::string_view name);
  static std::string EscapeLabelValue(absl::string_view value);
  static std::string EscapeHelp(absl::string_view help);
  static std::string FormatValue(double value);

 private:
  // Appends `name{labels[,le="le"]} ` (the caller appends the value);
  // false (nothing appended) when a label name is invalid.
  bool AppendSeries(absl::string_view suffix, const Labels& labels,
                    const std::string* le);

  std::string out_;
  std::string family_;  // empty: no family, or a dropped one
  MetricType type_ = MetricType::kGauge;
  absl::flat_hash_set<std::string> families_;
};

}  // namespace sessiond::metrics

#endif  // SESSIOND_COMMON_METRICS_EXPOSITION_H_
