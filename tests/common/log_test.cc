// Copyright sessiond authors. Licensed under the Apache License 2.0.
#include "common/log.h"

#include <string>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace sessiond::logging {
namespace {

std::string Captured(Format format, Level level, const std::string& event,
                     const Fields& fields) {
  Configure(format, Level::kInfo);
  ::testing::internal::CaptureStderr();
  Log(level, event, fields);
  return ::testing::internal::GetCapturedStderr();
}

TEST(LogTest, TextLinesAreEventThenKeyValues) {
  SetNode(3);
  const std::string line = Captured(Format::kText, Level::kWarn, "disk.full",
                                    Fields()
                                        .Add("dir", "/var/lib/s d")
                                        .Add("free_bytes", uint64_t{42})
                                        .Add("ok", false));
  EXPECT_TRUE(absl::StrContains(line,
                                " warning disk.full node=3 "
                                "dir=\"/var/lib/s d\" free_bytes=42 "
                                "ok=false\n"))
      << line;
  EXPECT_EQ(line.rfind("20", 0), 0u) << line;  // an ISO date first
}

TEST(LogTest, JsonLinesParseWithEveryKeyEscaped) {
  SetNode(7);
  const std::string line =
      Captured(Format::kJson, Level::kError, "apply.write_failed",
               Fields()
                   .Error(absl::InternalError("a \"quoted\"\nline\\ and \x01"))
                   .Add("index", int64_t{-5})
                   .Add("ratio", 0.5));
  const nlohmann::json doc = nlohmann::json::parse(line, nullptr, false);
  ASSERT_TRUE(doc.is_object()) << line;
  EXPECT_EQ(doc["level"], "error");
  EXPECT_EQ(doc["event"], "apply.write_failed");
  EXPECT_EQ(doc["node"], 7);
  EXPECT_EQ(doc["error"], "INTERNAL: a \"quoted\"\nline\\ and \x01");
  EXPECT_EQ(doc["index"], -5);
  EXPECT_EQ(doc["ratio"], 0.5);
  EXPECT_TRUE(doc.contains("ts"));
}

TEST(LogTest, LinesUnderTheLevelAreDropped) {
  Configure(Format::kText, Level::kWarn);
  ::testing::internal::CaptureStderr();
  Info("quiet.event");
  Debug("quieter.event");
  Warn("loud.event");
  const std::string out = ::testing::internal::GetCapturedStderr();
  EXPECT_FALSE(absl::StrContains(out, "quiet")) << out;
  EXPECT_TRUE(absl::StrContains(out, "loud.event")) << out;
  SetLevel(Level::kDebug);
  ::testing::internal::CaptureStderr();
  Debug("now.shown");
  EXPECT_TRUE(
      absl::StrContains(::testing::internal::GetCapturedStderr(), "now.shown"));
}

TEST(LogTest, ParsesLevelsAndFormats) {
  EXPECT_EQ(*ParseLevel("WARN"), Level::kWarn);
  EXPECT_EQ(*ParseLevel("debug"), Level::kDebug);
  EXPECT_FALSE(ParseLevel("verbose").ok());
  EXPECT_EQ(*ParseFormat("json"), Format::kJson);
  EXPECT_FALSE(ParseFormat("xml").ok());
}

}  // namespace
}  // namespace sessiond::logging
