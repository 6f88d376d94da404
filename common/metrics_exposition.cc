// Copyright sessiond authors. Licensed under the Apache License 2.0.
#include "common/metrics_exposition.h"

#include <charconv>
#include <cmath>
#include <string>
#include <system_error>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace sessiond::metrics {
namespace {

const char* TypeName(MetricType type) {
  switch (type) {
    case MetricType::kCounter:
      return "counter";
    case MetricType::kGauge:
      return "gauge";
    case MetricType::kHistogram:
      return "histogram";
  }
  return "untyped";
}

bool IsNameChar(char c, bool first, bool colon_ok) {
  if (absl::ascii_isalpha(static_cast<unsigned char>(c)) || c == '_') {
    return true;
  }
  if (colon_ok && c == ':') return true;
  return !first && absl::ascii_isdigit(static_cast<unsigned char>(c));
}

}  // namespace

bool ExpositionWriter::IsValidMetricName(absl::string_view name) {
  if (name.empty()) return false;
  for (size_t i = 0; i < name.size(); ++i) {
    if (!IsNameChar(name[i], i == 0, /*colon_ok=*/true)) return false;
  }
  return true;
}

bool ExpositionWriter::IsValidLabelName(absl::string_view name) {
  if (name.empty() || absl::StartsWith(name, "__")) return false;
  for (size_t i = 0; i < name.size(); ++i) {
    if (!IsNameChar(name[i], i == 0, /*colon_ok=*/false)) return false;
  }
  return true;
}

namespace {

// Backslash and newline escaped, and double quotes too when `quotes`
// (label values; HELP text keeps them).
std::string Escape(absl::string_view text, bool quotes) {
  std::string out;
  out.reserve(text.size());
  for (char c : text) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '"' && quotes) {
      out += "\\\"";
    } else {
      out += c;
    }
  }
  return out;
}

}  // namespace

std::string ExpositionWriter::EscapeLabelValue(absl::string_view value) {
  return Escape(value, /*quotes=*/true);
}

std::string ExpositionWriter::EscapeHelp(absl::string_view help) {
  return Escape(help, /*quotes=*/false);
}

std::string ExpositionWriter::FormatValue(double value) {
  if (std::isnan(value)) return "NaN";
  if (std::isinf(value)) return value > 0 ? "+Inf" : "-Inf";
  // The shortest digits that read back as `value`; plain decimal for
  // exponents -4 to 20, else d.ddde-XX, so bounds read as Go's clients
  // write them (le="0.0001", le="5e-05").
  char buffer[64];
  std::to_chars_result r = std::to_chars(buffer, buffer + sizeof(buffer), value,
                                         std::chars_format::scientific);
  const std::string scientific(buffer, r.ptr);
  const size_t e = scientific.find('e');
  int exponent = 0;
  if (e == std::string::npos ||
      std::from_chars(
          scientific.data() + e + 1 + (scientific[e + 1] == '+' ? 1 : 0),
          scientific.data() + scientific.size(), exponent)
              .ec != std::errc()) {
    return scientific;
  }
  if (exponent < -4 || exponent >= 21) return scientific;
  r = std::to_chars(buffer, buffer + sizeof(buffer), value,
                    std::chars_format::fixed);
  return std::string(buffer, r.ptr);
}

bool ExpositionWriter::BeginFamily(absl::string_view name, MetricType type,
                                   absl::string_view help) {
  family_.clear();
  if (!IsValidMetricName(name) || !families_.emplace(name).second) {
    return false;
  }
  family_ = std::string(name);
  type_ = type;
  absl::StrAppend(&out_, "# HELP ", name, " ", EscapeHelp(help), "\n",
                  "# TYPE ", name, " ", TypeName(type), "\n");
  return true;
}

bool ExpositionWriter::AppendSeries(absl::string_view suffix,
                                    const Labels& labels,
                                    const std::string* le) {
  for (const auto& [label, value] : labels) {
    if (!IsValidLabelName(label)) return false;
    if (type_ == MetricType::kHistogram && label == "le") return false;
  }
  absl::StrAppend(&out_, family_, suffix);
  if (!labels.empty() || le != nullptr) {
    out_ += '{';
    bool first = true;
    for (const auto& [label, value] : labels) {
      absl::StrAppend(&out_, first ? "" : ",", label, "=\"",
                      EscapeLabelValue(value), "\"");
      first = false;
    }
    if (le != nullptr)
      absl::StrAppend(&out_, first ? "" : ",", "le=\"", *le, "\"");
    out_ += '}';
  }
  out_ += ' ';
  return true;
}

void ExpositionWriter::Sample(const Labels& labels, double value) {
  if (family_.empty() || type_ == MetricType::kHistogram) return;
  if (!AppendSeries("", labels, nullptr)) return;
  absl::StrAppend(&out_, FormatValue(value), "\n");
}

void ExpositionWriter::SampleCount(const Labels& labels, uint64_t value) {
  if (family_.empty() || type_ == MetricType::kHistogram) return;
  if (!AppendSeries("", labels, nullptr)) return;
  absl::StrAppend(&out_, value, "\n");
}

void ExpositionWriter::Histogram(const Labels& labels,
                                 const HistogramSnapshot& h) {
  if (family_.empty() || type_ != MetricType::kHistogram) return;
  for (const auto& [label, value] : labels) {
    if (!IsValidLabelName(label) || label == "le") return;
  }
  for (size_t i = 0; i < h.cumulative.size(); ++i) {
    const std::string le = i < h.upper_bounds_seconds.size()
                               ? FormatValue(h.upper_bounds_seconds[i])
                               : std::string("+Inf");
    AppendSeries("_bucket", labels, &le);
    absl::StrAppend(&out_, h.cumulative[i], "\n");
  }
  AppendSeries("_sum", labels, nullptr);
  absl::StrAppend(&out_, FormatValue(h.sum_seconds), "\n");
  AppendSeries("_count", labels, nullptr);
  absl::StrAppend(&out_, h.count, "\n");
}

void ExpositionWriter::Counter(absl::string_view name, absl::string_view help,
                               uint64_t value) {
  if (BeginFamily(name, MetricType::kCounter, help)) SampleCount({}, value);
}

void ExpositionWriter::Gauge(absl::string_view name, absl::string_view help,
                             double value) {
  if (BeginFamily(name, MetricType::kGauge, help)) Sample({}, value);
}

}  // namespace sessiond::metrics
