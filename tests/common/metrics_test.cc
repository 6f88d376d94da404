// Copyright sessiond authors. Licensed under the Apache License 2.0.
#include "common/metrics.h"

#include <chrono>
#include <cmath>
#include <limits>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_split.h"
#include "common/metrics_exposition.h"
#include "common/metrics_registry.h"
#include "gtest/gtest.h"

namespace sessiond::metrics {
namespace {

std::vector<std::string> Lines(const std::string& text) {
  return absl::StrSplit(text, '\n', absl::SkipEmpty());
}

TEST(CounterTest, CountsFromManyThreads) {
  Counter c;
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&c] {
      for (int i = 0; i < 10000; ++i) c.Increment();
    });
  }
  for (auto& t : threads) t.join();
  c.Increment(5);
  EXPECT_EQ(c.value(), 40005u);
}

TEST(GaugeTest, SetsAndAdds) {
  Gauge g;
  g.Set(2.5);
  g.Add(-1);
  EXPECT_DOUBLE_EQ(g.value(), 1.5);
}

TEST(LatencyHistogramTest, BucketsAreLessOrEqualAndCumulative) {
  LatencyHistogram h({0.001, 0.01, 0.1});
  h.Observe(std::chrono::microseconds(500));  // <= 1 ms
  h.Observe(std::chrono::milliseconds(1));    // exactly on the bound: <= 1 ms
  h.Observe(std::chrono::milliseconds(5));    // <= 10 ms
  h.Observe(std::chrono::seconds(2));         // +Inf only
  h.ObserveNanos(-7);                         // counts as 0
  const HistogramSnapshot s = h.Read();
  ASSERT_EQ(s.upper_bounds_seconds, (std::vector<double>{0.001, 0.01, 0.1}));
  EXPECT_EQ(s.cumulative, (std::vector<uint64_t>{3, 4, 4, 5}));
  EXPECT_EQ(s.count, 5u);
  EXPECT_EQ(h.count(), 5u);
  EXPECT_NEAR(s.sum_seconds, 0.0005 + 0.001 + 0.005 + 2, 1e-9);
}

TEST(LatencyHistogramTest, DropsBoundsThatAreNotAscending) {
  LatencyHistogram h(
      {0.5, 0.1, -1, std::numeric_limits<double>::infinity(), 1, 1});
  EXPECT_EQ(h.Read().upper_bounds_seconds, (std::vector<double>{0.5, 1}));
}

TEST(LatencyHistogramTest, CountMatchesInfBucketUnderConcurrentWrites) {
  LatencyHistogram h;
  std::vector<std::thread> threads;
  for (int t = 0; t < 3; ++t) {
    threads.emplace_back([&h, t] {
      for (int i = 0; i < 20000; ++i) h.ObserveNanos((i * 7919 + t) % 20000000);
    });
  }
  for (int reads = 0; reads < 200; ++reads) {
    const HistogramSnapshot s = h.Read();
    ASSERT_EQ(s.cumulative.back(), s.count);
    for (size_t i = 1; i < s.cumulative.size(); ++i) {
      ASSERT_LE(s.cumulative[i - 1], s.cumulative[i]);
    }
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(h.count(), 60000u);
}

TEST(ExpositionTest, WritesHelpAndTypeOnceBeforeSamples) {
  ExpositionWriter w;
  ASSERT_TRUE(w.BeginFamily("sessiond_things_total", MetricType::kCounter,
                            "Things done"));
  w.SampleCount({{"kind", "a"}}, 3);
  w.SampleCount({{"kind", "b"}}, 18446744073709551615ull);
  w.Gauge("sessiond_level", "A level", 0.25);
  EXPECT_EQ(w.text(),
            "# HELP sessiond_things_total Things done\n"
            "# TYPE sessiond_things_total counter\n"
            "sessiond_things_total{kind=\"a\"} 3\n"
            "sessiond_things_total{kind=\"b\"} 18446744073709551615\n"
            "# HELP sessiond_level A level\n"
            "# TYPE sessiond_level gauge\n"
            "sessiond_level 0.25\n");
}

TEST(ExpositionTest, EscapesLabelValuesAndHelp) {
  EXPECT_EQ(ExpositionWriter::EscapeLabelValue("a\\b\"c\nd"),
            "a\\\\b\\\"c\\nd");
  EXPECT_EQ(ExpositionWriter::EscapeHelp("back\\slash \"quoted\"\nnext"),
            "back\\\\slash \"quoted\"\\nnext");
  ExpositionWriter w;
  w.BeginFamily("m", MetricType::kGauge, "line one\nline two");
  w.Sample({{"path", "C:\\dir\\\"x\"\n"}}, 1);
  EXPECT_EQ(w.text(),
            "# HELP m line one\\nline two\n"
            "# TYPE m gauge\n"
            "m{path=\"C:\\\\dir\\\\\\\"x\\\"\\n\"} 1\n");
}

TEST(ExpositionTest, HistogramIsCumulativeWithInfSumAndCount) {
  LatencyHistogram h({0.001, 0.25});
  h.Observe(std::chrono::microseconds(100));
  h.Observe(std::chrono::milliseconds(100));
  h.Observe(std::chrono::milliseconds(200));
  h.Observe(std::chrono::seconds(1));
  ExpositionWriter w;
  ASSERT_TRUE(w.BeginFamily("rpc_seconds", MetricType::kHistogram, "Latency"));
  w.Histogram({{"method", "Validate"}}, h.Read());
  EXPECT_EQ(w.text(),
            "# HELP rpc_seconds Latency\n"
            "# TYPE rpc_seconds histogram\n"
            "rpc_seconds_bucket{method=\"Validate\",le=\"0.001\"} 1\n"
            "rpc_seconds_bucket{method=\"Validate\",le=\"0.25\"} 3\n"
            "rpc_seconds_bucket{method=\"Validate\",le=\"+Inf\"} 4\n"
            "rpc_seconds_sum{method=\"Validate\"} 1.3001\n"
            "rpc_seconds_count{method=\"Validate\"} 4\n");
}

TEST(ExpositionTest, UnlabelledHistogramGetsOnlyLe) {
  LatencyHistogram h({1});
  ExpositionWriter w;
  ASSERT_TRUE(w.BeginFamily("h", MetricType::kHistogram, "x"));
  w.Histogram({}, h.Read());
  EXPECT_EQ(w.text(),
            "# HELP h x\n# TYPE h histogram\n"
            "h_bucket{le=\"1\"} 0\nh_bucket{le=\"+Inf\"} 0\n"
            "h_sum 0\nh_count 0\n");
}

TEST(ExpositionTest, RefusesRepeatedFamiliesAndBadNames) {
  ExpositionWriter w;
  EXPECT_TRUE(w.BeginFamily("a", MetricType::kGauge, "first"));
  w.Sample({}, 1);
  EXPECT_FALSE(w.BeginFamily("a", MetricType::kGauge, "again"));
  w.Sample({}, 2);  // dropped with its family
  EXPECT_FALSE(w.BeginFamily("9lives", MetricType::kGauge, "bad name"));
  EXPECT_FALSE(w.BeginFamily("has-dash", MetricType::kGauge, "bad name"));
  EXPECT_TRUE(w.BeginFamily("b", MetricType::kGauge, "ok"));
  w.Sample({{"bad-label", "x"}}, 3);  // dropped: invalid label name
  w.Sample({{"__reserved", "x"}}, 4);
  w.Sample({{"le", "x"}}, 5);  // fine outside a histogram
  EXPECT_EQ(w.text(),
            "# HELP a first\n# TYPE a gauge\na 1\n"
            "# HELP b ok\n# TYPE b gauge\nb{le=\"x\"} 5\n");
  EXPECT_TRUE(ExpositionWriter::IsValidMetricName("ns:sub_total9"));
  EXPECT_FALSE(ExpositionWriter::IsValidLabelName("with:colon"));
}

TEST(ExpositionTest, FormatsValuesAsPrometheusReadsThem) {
  EXPECT_EQ(ExpositionWriter::FormatValue(1), "1");
  EXPECT_EQ(ExpositionWriter::FormatValue(-2.5), "-2.5");
  EXPECT_EQ(ExpositionWriter::FormatValue(0.1), "0.1");
  EXPECT_EQ(ExpositionWriter::FormatValue(0.0001), "0.0001");
  EXPECT_EQ(ExpositionWriter::FormatValue(0.00005), "5e-05");
  EXPECT_EQ(ExpositionWriter::FormatValue(83723239424), "83723239424");
  EXPECT_EQ(ExpositionWriter::FormatValue(1.5e20), "150000000000000000000");
  EXPECT_EQ(ExpositionWriter::FormatValue(1e21), "1e+21");
  EXPECT_EQ(ExpositionWriter::FormatValue(0), "0");
  EXPECT_EQ(ExpositionWriter::FormatValue(-0.002949995), "-0.002949995");
  EXPECT_EQ(ExpositionWriter::FormatValue(std::nan("")), "NaN");
  EXPECT_EQ(ExpositionWriter::FormatValue(HUGE_VAL), "+Inf");
  EXPECT_EQ(ExpositionWriter::FormatValue(-HUGE_VAL), "-Inf");
}

TEST(MetricsRegistryTest, RendersCollectorsInOrder) {
  MetricsRegistry registry;
  Counter requests;
  requests.Increment(7);
  registry.AddCollector([&requests](ExpositionWriter* w) {
    w->Counter("x_requests_total", "Requests", requests.value());
  });
  registry.AddCollector([](ExpositionWriter* w) { w->Gauge("x_up", "Up", 1); });
  const std::vector<std::string> lines = Lines(registry.Render());
  ASSERT_EQ(lines.size(), 6u);
  EXPECT_EQ(lines[2], "x_requests_total 7");
  EXPECT_EQ(lines[5], "x_up 1");
  // Each render starts afresh: the same families again, not duplicates.
  requests.Increment();
  EXPECT_EQ(Lines(registry.Render())[2], "x_requests_total 8");
}

}  // namespace
}  // namespace sessiond::metrics
