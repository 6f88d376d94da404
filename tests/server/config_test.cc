// Copyright sessiond authors. Licensed under the Apache License 2.0.
#include "server/config.h"

#include <fstream>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "tests/server/test_util.h"

namespace sessiond::server {
namespace {

absl::StatusOr<ParsedConfig> Parse(std::vector<std::string> args) {
  args.insert(args.begin(), "sessiond");
  std::vector<const char*> argv;
  for (const std::string& a : args) argv.push_back(a.c_str());
  return ParseConfig(static_cast<int>(argv.size()), argv.data());
}

TEST(ConfigTest, DefaultsMatchTheDocumentedValues) {
  auto parsed = Parse({});
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  const Config& c = parsed->config;
  EXPECT_EQ(c.listen, "127.0.0.1:50051");
  EXPECT_EQ(c.data_dir, "./sessiond-data");
  EXPECT_EQ(c.shards, 64);
  EXPECT_EQ(c.limits.max_user_id_bytes, 256);
  EXPECT_EQ(c.limits.max_attributes, 64);
  EXPECT_EQ(c.limits.max_attribute_key_bytes, 128);
  EXPECT_EQ(c.limits.max_attribute_value_bytes, 4096);
  EXPECT_EQ(c.limits.max_record_bytes, 16384);
  EXPECT_EQ(c.limits.min_ttl_ms, 1000);
  EXPECT_EQ(c.limits.max_ttl_ms, 90ll * 24 * 3600 * 1000);
  EXPECT_EQ(c.limits.default_ttl_ms, 24ll * 3600 * 1000);
  EXPECT_EQ(c.limits.default_idle_timeout_ms, 0);
  EXPECT_EQ(c.limits.max_reason_bytes, 256);
  EXPECT_EQ(c.limits.max_client_field_bytes, 512);
  EXPECT_EQ(c.sweep_interval_ms, 1000);
  EXPECT_EQ(c.expiry_leeway_ms, 0);
  EXPECT_EQ(c.touch_flush_interval_ms, 1000);
  EXPECT_EQ(c.tick_ms, 50);
  EXPECT_EQ(c.election_ticks, 6);
  EXPECT_FALSE(parsed->help);
}

TEST(ConfigTest, FlagsInBothForms) {
  auto parsed =
      Parse({"--listen", "0.0.0.0:7000", "--shards=16",
             "--max_attribute_value_bytes", "100", "--fault_point", "x"});
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(parsed->config.listen, "0.0.0.0:7000");
  EXPECT_EQ(parsed->config.shards, 16);
  EXPECT_EQ(parsed->config.limits.max_attribute_value_bytes, 100);
  EXPECT_EQ(parsed->config.fault_point, "x");
}

TEST(ConfigTest, UnknownFlagAndBadValuesAreInvalidArgument) {
  for (const std::vector<std::string>& args :
       std::vector<std::vector<std::string>>{
           {"--nope", "1"},
           {"--shards", "abc"},
           {"--shards", "0"},
           {"--listen", "no-port"},
           {"--listen", "host:99999"},
           {"--min_ttl_ms", "5000", "--max_ttl_ms", "1000"},
           {"--default_ttl_ms", "10"},  // below --min_ttl_ms
           {"positional"}}) {
    auto parsed = Parse(args);
    EXPECT_EQ(parsed.status().code(), absl::StatusCode::kInvalidArgument)
        << args[0] << " -> " << parsed.status();
  }
  auto parsed = Parse({"--shards", "abc"});
  EXPECT_NE(parsed.status().message().find("shards"), absl::string_view::npos);
}

TEST(ConfigTest, FileThenFlagsOverride) {
  testing::ScopedTempDir dir;
  const std::string path = dir.Child("sessiond.conf");
  {
    std::ofstream out(path);
    out << "# sessiond test config\n"
        << "listen = 127.0.0.1:6000\n"
        << "data_dir = \"/var/lib/sessiond data\"  # quoted, with a space\n"
        << "\n"
        << "shards = 8\n"
        << "max_attributes = 10 # trailing comment\n";
  }
  auto parsed = Parse({"--config", path, "--shards", "32"});
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(parsed->config.listen, "127.0.0.1:6000");
  EXPECT_EQ(parsed->config.data_dir, "/var/lib/sessiond data");
  EXPECT_EQ(parsed->config.shards, 32);  // the flag wins
  EXPECT_EQ(parsed->config.limits.max_attributes, 10);
  EXPECT_EQ(parsed->config.config_file, path);
  EXPECT_NE(ConfigSummary(parsed->config).find("shards=32"), std::string::npos);
}

TEST(ConfigTest, BadFileLinesNameTheLine) {
  Config config;
  absl::Status s =
      ApplyConfigText("shards = 4\nbogus = 1\n", "f.conf", &config);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("f.conf:2"), absl::string_view::npos) << s;
  s = ApplyConfigText("just words\n", "f.conf", &config);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  s = ApplyConfigText("shards = -3\n", "f.conf", &config);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(config.shards, 4);

  auto missing = Parse({"--config", "/nonexistent/sessiond.conf"});
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
}

TEST(ConfigTest, HelpListsOptionsButNotHiddenOnes) {
  auto parsed = Parse({"--help"});
  ASSERT_TRUE(parsed.ok());
  EXPECT_TRUE(parsed->help);
  EXPECT_NE(parsed->help_text.find("--max_record_bytes"), std::string::npos);
  EXPECT_EQ(parsed->help_text.find("--fault_point"), std::string::npos);
  EXPECT_GE(OptionNames().size(), 20u);
}

}  // namespace
}  // namespace sessiond::server
