// Copyright sessiond authors. Licensed under the Apache License 2.0.
//
// sessionctl's settings and output helpers, without a server.
#include <cstdio>
#include <fstream>
#include <string>

#include "absl/strings/match.h"
#include "gtest/gtest.h"
#include "sessiond/v1/admin.pb.h"
#include "sessiond/v1/session.pb.h"
#include "tools/sessionctl_commands.h"
#include "tools/sessionctl_config.h"
#include "tools/sessionctl_connection.h"
#include "tools/sessionctl_errors.h"
#include "tools/sessionctl_output.h"

namespace sessiond::sessionctl {
namespace {

TEST(SessionctlConfigTest, EndpointsAreCheckedHostPortEntries) {
  auto list = ParseEndpoints("a:1, b:2\n[::1]:3,dns:///c:4 unix:/tmp/s");
  ASSERT_TRUE(list.ok()) << list.status();
  EXPECT_EQ(*list, (std::vector<std::string>{"a:1", "b:2", "[::1]:3",
                                             "dns:///c:4", "unix:/tmp/s"}));
  for (const char* bad : {"", " , ", "a", "a:", ":1", "a:0", "a:65536", "a:x",
                          "::1:3", "[::1:3"}) {
    auto parsed = ParseEndpoints(bad);
    EXPECT_FALSE(parsed.ok()) << bad;
    EXPECT_EQ(ExitCodeFor(parsed.status()), kExitUsage) << bad;
  }
}

TEST(SessionctlConfigTest, Durations) {
  EXPECT_EQ(*ParseDuration("2s"), absl::Seconds(2));
  EXPECT_EQ(*ParseDuration("500ms"), absl::Milliseconds(500));
  EXPECT_EQ(*ParseDuration("1m30s"), absl::Seconds(90));
  EXPECT_EQ(*ParseDuration("3"), absl::Seconds(3));
  for (const char* bad : {"", "0", "-1s", "soon", "inf"}) {
    EXPECT_FALSE(ParseDuration(bad).ok()) << bad;
  }
}

TEST(SessionctlConfigTest, ConfigFileLines) {
  auto values = ParseConfigFile(
      "# sessionctl\n\nendpoints = [\"a:1\", 'b:2']  # two\n"
      "timeout='3s'\n",
      "f");
  ASSERT_TRUE(values.ok()) << values.status();
  EXPECT_EQ(values->at("endpoints"), "a:1,b:2");
  EXPECT_EQ(values->at("timeout"), "3s");
  EXPECT_EQ(ParseConfigFile("endpoints = a:1", "f")->at("endpoints"), "a:1");
  EXPECT_EQ(ParseConfigFile("endpoints = \"a:1 # x\"", "f")->at("endpoints"),
            "a:1 # x");
  struct {
    const char* text;
    const char* says;
  } bad[] = {{"[cluster]\n", "sections"},
             {"endpoints\n", "key = value"},
             {"\nendpoint = a:1\n", "f line 2: unknown key 'endpoint'"},
             {"timeout = 1s\ntimeout = 2s\n", "set twice"},
             {"endpoints = \"a:1\n", "unterminated"},
             {"endpoints = [\"a:1\"\n", "unterminated array"}};
  for (const auto& c : bad) {
    auto parsed = ParseConfigFile(c.text, "f");
    ASSERT_FALSE(parsed.ok()) << c.text;
    EXPECT_TRUE(absl::StrContains(parsed.status().message(), c.says))
        << parsed.status();
    EXPECT_EQ(ExitCodeFor(parsed.status()), kExitUsage);
  }
}

TEST(SessionctlConfigTest, FlagBeatsEnvironmentBeatsConfigFileBeatsDefault) {
  const std::string path = ::testing::TempDir() + "/sessionctl_unit.toml";
  std::ofstream(path) << "endpoints = file:3\ntimeout = 7s\n";
  Environment env;
  env.config = path;
  GlobalFlags flags;
  auto s = ResolveSettings(flags, env);
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->endpoints, std::vector<std::string>{"file:3"});
  EXPECT_EQ(s->endpoints_source, "config file " + path);
  EXPECT_EQ(s->timeout, absl::Seconds(7));
  env.endpoints = "env:2";
  s = ResolveSettings(flags, env);
  EXPECT_EQ(s->endpoints, std::vector<std::string>{"env:2"});
  EXPECT_EQ(s->endpoints_source, "SESSIOND_ENDPOINTS");
  flags.endpoints = "flag:1";
  flags.timeout = "1s";
  s = ResolveSettings(flags, env);
  EXPECT_EQ(s->endpoints, std::vector<std::string>{"flag:1"});
  EXPECT_EQ(s->endpoints_source, "--endpoints");
  EXPECT_EQ(s->timeout, absl::Seconds(1));

  // Nothing at all: the default, and a missing default file is fine.
  Environment bare;
  bare.home = ::testing::TempDir() + "/no-such-home";
  s = ResolveSettings(GlobalFlags(), bare);
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->endpoints, std::vector<std::string>{kDefaultEndpoint});
  EXPECT_EQ(s->endpoints_source, "the default");
  EXPECT_EQ(s->timeout, kDefaultTimeout);
  EXPECT_TRUE(s->config_path.empty());
  // A named file must exist.
  flags = GlobalFlags();
  flags.config = path + ".missing";
  EXPECT_EQ(ExitCodeFor(ResolveSettings(flags, bare).status()), kExitUsage);
  std::remove(path.c_str());
}

TEST(SessionctlConfigTest, TlsKeysInTheConfigFile) {
  auto values = ParseConfigFile(
      "tls_ca = ca.pem\ntls_cert = '/etc/c.pem'\ntls_key = \"k.pem\"\n"
      "token_file = /run/t\n",
      "f");
  ASSERT_TRUE(values.ok()) << values.status();
  EXPECT_EQ(values->at("tls_ca"), "ca.pem");
  EXPECT_EQ(values->at("tls_cert"), "/etc/c.pem");
  EXPECT_EQ(values->at("tls_key"), "k.pem");
  EXPECT_EQ(values->at("token_file"), "/run/t");
  auto bad = ParseConfigFile("token = abc\n", "f");
  ASSERT_FALSE(bad.ok());
  EXPECT_TRUE(absl::StrContains(bad.status().message(), "token_file"))
      << bad.status();
}

TEST(SessionctlConfigTest, TlsFilesFlagBeatsEnvironmentBeatsConfigFile) {
  const std::string dir = ::testing::TempDir();
  const std::string path = dir + "/sessionctl_tls_unit.toml";
  std::ofstream(path) << "tls_ca = ca.pem\ntls_cert = file-cert.pem\n"
                      << "tls_key = file-key.pem\ntoken_file = /abs/token\n";
  Environment env;
  env.config = path;
  GlobalFlags flags;
  auto s = ResolveSettings(flags, env);
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_TRUE(s->tls());
  // Relative paths in the file are relative to the file's folder.
  EXPECT_EQ(s->tls_ca.path, dir + "/ca.pem");
  EXPECT_EQ(s->tls_ca.source, "tls_ca in config file " + path);
  EXPECT_EQ(s->tls_cert.path, dir + "/file-cert.pem");
  EXPECT_EQ(s->tls_key.path, dir + "/file-key.pem");
  EXPECT_EQ(s->token_file.path, "/abs/token");
  EXPECT_EQ(s->token_file.source, "token_file in config file " + path);

  env.tls_ca = "env-ca.pem";
  env.tls_cert = "env-cert.pem";
  env.tls_key = "env-key.pem";
  env.token_file = "env-token";
  s = ResolveSettings(flags, env);
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->tls_ca.path, "env-ca.pem");
  EXPECT_EQ(s->tls_ca.source, "SESSIOND_TLS_CA");
  EXPECT_EQ(s->tls_cert.path, "env-cert.pem");
  EXPECT_EQ(s->tls_cert.source, "SESSIOND_TLS_CERT");
  EXPECT_EQ(s->tls_key.path, "env-key.pem");
  EXPECT_EQ(s->token_file.path, "env-token");
  EXPECT_EQ(s->token_file.source, "SESSIOND_TOKEN_FILE");

  flags.tls_ca = "flag-ca.pem";
  flags.tls_cert = "flag-cert.pem";
  flags.tls_key = "flag-key.pem";
  flags.token_file = "flag-token";
  s = ResolveSettings(flags, env);
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->tls_ca.path, "flag-ca.pem");
  EXPECT_EQ(s->tls_ca.source, "--tls-ca");
  EXPECT_EQ(s->tls_cert.path, "flag-cert.pem");
  EXPECT_EQ(s->tls_key.path, "flag-key.pem");
  EXPECT_EQ(s->tls_key.source, "--tls-key");
  EXPECT_EQ(s->token_file.path, "flag-token");
  EXPECT_EQ(s->token_file.source, "--token-file");

  // The certificate and key are one setting: a flag never pairs with the
  // environment's key.
  flags.tls_key.clear();
  s = ResolveSettings(flags, env);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(ExitCodeFor(s.status()), kExitUsage);
  EXPECT_TRUE(absl::StrContains(s.status().message(),
                                "--tls-cert is set without --tls-key"))
      << s.status();

  // Nothing set: plaintext.
  Environment bare;
  bare.home = dir + "/no-such-home";
  s = ResolveSettings(GlobalFlags(), bare);
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_FALSE(s->tls());
  EXPECT_TRUE(s->tls_cert.empty() && s->token_file.empty());
  std::remove(path.c_str());
}

TEST(SessionctlConfigTest, CertificateOrTokenWithoutCaIsAUsageError) {
  Environment bare;
  bare.home = ::testing::TempDir() + "/no-such-home";
  GlobalFlags flags;
  flags.token_file = "t";
  auto s = ResolveSettings(flags, bare);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(ExitCodeFor(s.status()), kExitUsage);
  EXPECT_TRUE(absl::StrContains(s.status().message(), "--token-file"));
  EXPECT_TRUE(absl::StrContains(s.status().message(), "--tls-ca"));
  flags = GlobalFlags();
  bare.tls_cert = "c.pem";
  bare.tls_key = "k.pem";
  s = ResolveSettings(flags, bare);
  ASSERT_FALSE(s.ok());
  EXPECT_TRUE(absl::StrContains(s.status().message(), "SESSIOND_TLS_CERT"))
      << s.status();
}

TEST(SessionctlConfigTest, UnreadableTlsFilesAreUsageErrorsNamingTheSource) {
  Settings plain;
  auto security = SecurityFor(plain);
  ASSERT_TRUE(security.ok()) << security.status();
  EXPECT_FALSE(security->tls());

  const std::string dir = ::testing::TempDir();
  Settings settings;
  settings.tls_ca = {dir + "/no-such-ca.pem", "SESSIOND_TLS_CA"};
  security = SecurityFor(settings);
  ASSERT_FALSE(security.ok());
  EXPECT_EQ(ExitCodeFor(security.status()), kExitUsage);
  EXPECT_TRUE(
      absl::StrContains(security.status().message(),
                        "SESSIOND_TLS_CA: ca_file " + dir + "/no-such-ca.pem"))
      << security.status();

  const std::string token = dir + "/sessionctl_unit_token";
  std::ofstream(token) << "\n";
  settings.token_file = {token, "--token-file"};
  security = SecurityFor(settings);
  ASSERT_FALSE(security.ok());
  EXPECT_EQ(ExitCodeFor(security.status()), kExitUsage);
  EXPECT_TRUE(absl::StrContains(security.status().message(),
                                "--token-file: token file " + token))
      << security.status();
  std::remove(token.c_str());
}

TEST(SessionctlConfigTest, RefusedIdentityIsExitFive) {
  EXPECT_EQ(
      ExitCodeFor(NotAllowedError(absl::StatusCode::kPermissionDenied, "no")),
      kExitNotAllowed);
  EXPECT_EQ(static_cast<int>(kExitNotAllowed), 5);
  // The cluster's own answer is exit 1 until Connection::NotAllowed says
  // what was presented.
  Connection plain({"127.0.0.1:1"}, "test", absl::Seconds(1));
  const absl::Status refused =
      plain.NotAllowed(absl::PermissionDeniedError("identity 'app' ..."));
  EXPECT_EQ(ExitCodeFor(refused), kExitNotAllowed);
  EXPECT_EQ(refused.code(), absl::StatusCode::kPermissionDenied);
  EXPECT_TRUE(absl::StrContains(refused.message(), "PERMISSION_DENIED"));
  EXPECT_TRUE(absl::StrContains(refused.message(), "identity 'app'"));
  EXPECT_TRUE(absl::StrContains(refused.message(), "plaintext"));
  EXPECT_EQ(ExitCodeFor(plain.NotAllowed(absl::UnavailableError("x"))),
            kExitServerError);
}

TEST(SessionctlOutputTest, MessagesBecomeJsonWithEveryFieldByItsProtoName) {
  v1::Session session;
  session.set_session_id("s1");
  session.set_version(3);
  session.set_state(v1::SESSION_STATE_REVOKED);
  (*session.mutable_attributes())["role"] = "admin";
  (*session.mutable_attributes())["raw"] = std::string("\xff\x00", 2);
  const nlohmann::json j = MessageToJson(session);
  EXPECT_EQ(j["session_id"], "s1");
  EXPECT_EQ(j["version"], 3);
  EXPECT_EQ(j["state"], "SESSION_STATE_REVOKED");
  EXPECT_EQ(j["created_at_ms"], 0);      // defaults are present
  EXPECT_EQ(j["revoke_reason"], "");     // ...
  EXPECT_EQ(j["client"]["device"], "");  // ...nested too
  EXPECT_EQ(j["attributes"]["role"], "admin");
  EXPECT_EQ(j["attributes"]["raw"]["base64"], "/wA=");

  v1::AddMemberResponse members;
  members.add_voters(1);
  members.add_voters(2);
  EXPECT_EQ(MessageToJson(members)["voters"], nlohmann::json({1, 2}));
  EXPECT_EQ(MessageToJson(members)["learners"], nlohmann::json::array());
}

// Of a oneof, --json prints the member that is set and no other: every
// selector used to show "all": {} (and every other kind), so a script
// looking for the flush to undo by "all" in selector matched every bulk
// revocation.
TEST(SessionctlOutputTest, AOneofShowsOnlyTheMemberThatIsSet) {
  v1::SessionSelector selector;
  selector.mutable_attribute()->set_key("role");
  nlohmann::json j = MessageToJson(selector);
  EXPECT_EQ(j.size(), 1u) << j.dump();
  EXPECT_EQ(j["attribute"]["key"], "role");
  selector.set_created_before_ms(0);  // set, at its default
  j = MessageToJson(selector);
  EXPECT_EQ(j, nlohmann::json({{"created_before_ms", 0}})) << j.dump();
  selector.mutable_all();
  j = MessageToJson(selector);
  EXPECT_EQ(j, nlohmann::json({{"all", nlohmann::json::object()}})) << j.dump();
}

TEST(SessionctlOutputTest, Formats) {
  EXPECT_EQ(FormatDurationMs(750), "750ms");
  EXPECT_EQ(FormatDurationMs(59 * 60'000), "59m");
  EXPECT_EQ(FormatDurationMs(90'000), "1m30s");
  EXPECT_EQ(FormatDurationMs(3 * 3'600'000 + 12 * 60'000), "3h12m");
  EXPECT_EQ(FormatDurationMs(-2000), "-2s");
  EXPECT_EQ(FormatBytes(512), "512 B");
  EXPECT_EQ(FormatBytes(3 * 1024 * 1024 / 2), "1.5 MiB");
  EXPECT_EQ(HexId(0xabc), "0x0000000000000abc");
  const absl::Time now = absl::FromUnixMillis(1'700'000'000'000);
  EXPECT_EQ(FormatTimeMs(1'700'000'000'000 + 60'000, now),
            "2023-11-14 22:14:20Z (in 1m)");
  EXPECT_EQ(FormatTimeMs(0, now), "-");
  EXPECT_TRUE(IsUtf8("h\xc3\xa9llo"));
  EXPECT_FALSE(IsUtf8("\xc3"));
  EXPECT_FALSE(IsUtf8("\xed\xa0\x80"));  // a surrogate
  EXPECT_FALSE(IsUtf8("\xc0\xaf"));      // overlong

  EXPECT_EQ(FormatRelativeMs(1'700'000'000'000 - 3'600'000, now), "1h ago");
  EXPECT_EQ(Printable("caf\xc3\xa9"), "caf\xc3\xa9");
  EXPECT_EQ(Printable("a\x1b[2Jb\n"), "a\\x1b[2Jb\\x0a");
  EXPECT_EQ(Printable("\xff"), "\\xff");

  Table table({"A", "LONGER"});
  table.AddRow({"wide cell", "x"});
  table.AddRow({"\xc3\xa9", "\x07"});  // one column wide; escaped
  EXPECT_EQ(table.Render(),
            "A          LONGER\nwide cell  x\n\xc3\xa9          \\x07\n");
}

}  // namespace
TEST(SessionctlOutputTest, AWallClockOffTheMembersIsAProblem) {
  sessiond::v1::MemberStatus m;
  m.set_node_id(3);
  EXPECT_FALSE(WallClockProblem(m).has_value()) << "the median is not known";
  m.set_wall_clock_off_median_ms(59'000);
  EXPECT_FALSE(WallClockProblem(m).has_value());
  m.set_wall_clock_off_median_ms(-2 * 3600 * 1000);
  std::optional<std::string> behind = WallClockProblem(m);
  ASSERT_TRUE(behind.has_value());
  EXPECT_TRUE(absl::StrContains(*behind, "node 3 wall clock is"));
  EXPECT_TRUE(absl::StrContains(*behind, "behind the other members'"));
  EXPECT_TRUE(absl::StrContains(*behind, "signs no JWT"));
  m.set_wall_clock_off_median_ms(61'000);
  std::optional<std::string> ahead = WallClockProblem(m);
  ASSERT_TRUE(ahead.has_value());
  EXPECT_TRUE(absl::StrContains(*ahead, "ahead of the other members'"));
}

}  // namespace sessiond::sessionctl
