// Copyright sessiond authors. Licensed under the Apache License 2.0.
//
// The real sessionctl binary, run as a child process against real sessiond
// processes (one node; a 3-node cluster for membership and leadership):
// tables, --json documents, exit codes and messages as docs/OPERATIONS.md
// ("sessionctl") documents them.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fstream>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/integration/cluster_harness.h"
#include "tests/integration/sessiond_process.h"
#include "tests/tools/run_process.h"

namespace sessiond::testing {
namespace {

using nlohmann::json;

using CtlRun = ProcessRun;

// Runs sessionctl with `args`, a clean environment (HOME in `home`, so no
// user config file is read) plus `env`, and `input` on stdin; killed after
// `timeout`.
CtlRun Sessionctl(const std::vector<std::string>& args,
                  const std::vector<std::string>& env = {},
                  const std::string& input = "",
                  absl::Duration timeout = absl::Seconds(30)) {
  static TempDir home;  // removed at exit
  std::vector<std::string> argv = {SESSIONCTL_BINARY};
  argv.insert(argv.end(), args.begin(), args.end());
  std::vector<std::string> env_all = {"PATH=/usr/bin:/bin",
                                      absl::StrCat("HOME=", home.path())};
  env_all.insert(env_all.end(), env.begin(), env.end());
  return RunProcess(argv, env_all, input, timeout);
}

json ParseJson(const std::string& text) {
  return json::parse(text, nullptr, /*allow_exceptions=*/false);
}

std::string DeadAddress() { return absl::StrCat("127.0.0.1:", PickFreePort()); }

sessiond::v1::CreateSessionResponse Create(
    sessiond::v1::SessionService::Stub& stub, const std::string& user,
    const std::string& device = "") {
  sessiond::v1::CreateSessionRequest request;
  request.set_user_id(user);
  request.set_ttl_ms(3'600'000);
  (*request.mutable_attributes())["role"] = "admin";
  request.mutable_client()->set_device(device);
  sessiond::v1::CreateSessionResponse response;
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(10)));
  const grpc::Status s = stub.CreateSession(&context, request, &response);
  EXPECT_TRUE(s.ok()) << s.error_message();
  return response;
}

// --- No server needed -----------------------------------------------------

TEST(SessionctlTest, UsageErrorsExitTwoAndSayWhatIsWrong) {
  const std::string nowhere = absl::StrCat("--endpoints=", DeadAddress());
  struct Case {
    std::vector<std::string> args;
    std::string says;
  } cases[] = {
      {{}, "subcommand is required"},
      {{"status", "--bogus"}, "--bogus"},
      {{"members", "add", "x", "127.0.0.1:7001", nowhere}, "not a node id"},
      {{"members", "promote"}, "ID is required"},
      {{"sessions", "revoke", nowhere}, "give --token or --session-id"},
      {{"sessions", "revoke", "--token", "a", "--session-id", "b"}, "excludes"},
      {{"sessions", "list"}, "--user is required"},
      {{"keys", "retire"}, "KID is required"},
      {{"keys"}, "subcommand is required"},
      {{"sessions", "get", "t", "--consistency", "maybe"}, "maybe"},
      {{"--timeout", "soon", "status"}, "not a duration"},
      {{"--endpoints", "no-port", "status"}, "not host:port"},
      {{"--endpoints", "h:99999", "status"}, "port must be"},
      {{"status", "--watch", "--interval", "1ms", nowhere}, "at least 100ms"},
  };
  for (const Case& c : cases) {
    const CtlRun run = Sessionctl(c.args);
    EXPECT_EQ(run.exit_code, 2) << absl::StrJoin(c.args, " ") << "\n" << run;
    EXPECT_TRUE(absl::StrContains(run.err, c.says))
        << absl::StrJoin(c.args, " ") << "\n"
        << run;
  }
  // --help is not an error.
  const CtlRun help = Sessionctl({"--help"});
  EXPECT_EQ(help.exit_code, 0) << help;
  EXPECT_TRUE(absl::StrContains(help.out, "sessions")) << help;
}

TEST(SessionctlTest, ABrokenConfigFileIsAUsageErrorNamingTheLine) {
  TempDir dir;
  const std::string path = dir.path() + "/sessionctl.toml";
  std::ofstream(path) << "# comment\nendpoint = \"127.0.0.1:1\"\n";
  const CtlRun run = Sessionctl({"--config", path, "status"});
  EXPECT_EQ(run.exit_code, 2) << run;
  EXPECT_TRUE(absl::StrContains(run.err, path + " line 2")) << run;
  EXPECT_TRUE(absl::StrContains(run.err, "unknown key 'endpoint'")) << run;
  const CtlRun missing =
      Sessionctl({"--config", dir.path() + "/none", "status"});
  EXPECT_EQ(missing.exit_code, 2) << missing;
}

TEST(SessionctlTest, VerbsWithoutServerSupportExitFourAndDoNothing) {
  for (std::vector<std::string> args :
       std::vector<std::vector<std::string>>{{"audit"}}) {
    const CtlRun run = Sessionctl(args);
    EXPECT_EQ(run.exit_code, 4) << args[0] << "\n" << run;
    EXPECT_TRUE(absl::StrContains(run.err, "not implemented yet")) << run;
    EXPECT_TRUE(absl::StrContains(run.err, "issue ")) << run;
    EXPECT_TRUE(absl::StrContains(run.err, "nothing was done")) << run;
  }
}

TEST(SessionctlTest, UnreachableEndpointsExitThreeAndSayWhatToCheck) {
  const std::string a = DeadAddress();
  const std::string b = DeadAddress();
  for (const std::vector<std::string>& args :
       std::vector<std::vector<std::string>>{
           {"status"},
           {"members", "list"},
           {"leader", "transfer", "2"},
           {"sessions", "list", "--user", "alice"},
           {"sessions", "get", "some-token"},
           {"sessions", "revoke-user", "alice"},
           {"sessions", "count"},
           {"keys", "list"},
           {"backup", "/tmp/sessionctl-test-backup"}}) {
    std::vector<std::string> full = {"--endpoints", absl::StrCat(a, ",", b),
                                     "--timeout", "2s"};
    full.insert(full.end(), args.begin(), args.end());
    const CtlRun run = Sessionctl(full);
    EXPECT_EQ(run.exit_code, 3) << absl::StrJoin(args, " ") << "\n" << run;
    EXPECT_TRUE(absl::StrContains(run.err, a)) << run;
    EXPECT_TRUE(absl::StrContains(run.err, b)) << run;
    EXPECT_TRUE(absl::StrContains(run.err, "Check that sessiond runs")) << run;
    EXPECT_TRUE(absl::StrContains(run.err, "from --endpoints")) << run;
    EXPECT_FALSE(absl::StrContains(run.err, "some-token")) << run;
  }
  const CtlRun json_run = Sessionctl({"--endpoints", a, "--json", "status"});
  EXPECT_EQ(json_run.exit_code, 3) << json_run;
  const json doc = ParseJson(json_run.out);
  ASSERT_TRUE(doc.is_object()) << json_run;
  EXPECT_EQ(doc["error"]["exit_code"], 3);
  EXPECT_EQ(doc["error"]["code"], "UNAVAILABLE");
}

TEST(SessionctlTest, ShippedBashCompletionCompletesVerbs) {
  TempDir dir;
  const auto complete = [&](const std::string& words, int cword) {
    const std::string script = dir.path() + "/complete.sh";
    std::ofstream(script) << "source '" << SESSIONCTL_COMPLETION << "'\n"
                          << "COMP_WORDS=(" << words << ")\n"
                          << "COMP_CWORD=" << cword << "\n"
                          << "_sessionctl\necho \"${COMPREPLY[*]}\"\n";
    std::string out;
    FILE* p = popen(absl::StrCat("/bin/bash ", script).c_str(), "r");
    if (p == nullptr) return out;
    char buffer[1024];
    size_t n;
    while ((n = fread(buffer, 1, sizeof(buffer), p)) > 0) out.append(buffer, n);
    pclose(p);
    return out;
  };
  EXPECT_TRUE(absl::StrContains(complete("sessionctl ''", 1), "sessions"));
  const std::string sessions = complete("sessionctl sessions ''", 2);
  EXPECT_TRUE(absl::StrContains(sessions, "revoke-user")) << sessions;
  const std::string keys = complete("sessionctl keys ''", 2);
  EXPECT_TRUE(absl::StrContains(keys, "retire")) << keys;
  EXPECT_EQ(complete("sessionctl keys retire KID --f", 4), "--force\n");
  const std::string members = complete("sessionctl members pro", 2);
  EXPECT_EQ(members, "promote\n");
  const std::string consistency =
      complete("sessionctl sessions get --consistency l", 4);
  EXPECT_TRUE(absl::StrContains(consistency, "linearizable")) << consistency;
}

// --- One node ---------------------------------------------------------------

class SessionctlNodeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::vector<std::string> flags;
    ASSERT_NO_FATAL_FAILURE(NodeFlags(&flags));
    node_ = std::make_unique<SessiondProcess>(SESSIOND_BINARY,
                                              dir_.path() + "/data", flags);
    ASSERT_TRUE(node_->Start().ok()) << node_->log_path();
    stub_ = node_->NewStub();
  }
  // The node's flags beyond the defaults (fixtures for other options).
  virtual void NodeFlags(std::vector<std::string>* /*flags*/) {}

  // sessionctl against the node.
  CtlRun Ctl(std::vector<std::string> args, const std::string& input = "") {
    args.insert(args.begin(), {"--endpoints", node_->address()});
    return Sessionctl(args, {}, input);
  }
  json CtlJson(std::vector<std::string> args) {
    args.insert(args.begin(), "--json");
    const CtlRun run = Ctl(args);
    EXPECT_EQ(run.exit_code, 0) << run;
    json doc = ParseJson(run.out);
    EXPECT_TRUE(doc.is_object()) << run;
    return doc;
  }

  TempDir dir_;
  std::unique_ptr<SessiondProcess> node_;
  std::unique_ptr<sessiond::v1::SessionService::Stub> stub_;
};

TEST_F(SessionctlNodeTest, StatusShowsTheNodeAsLeaderInATableAndInJson) {
  const CtlRun table = Ctl({"status"});
  ASSERT_EQ(table.exit_code, 0) << table;
  EXPECT_TRUE(absl::StrContains(table.out, "leader node 1")) << table;
  EXPECT_TRUE(absl::StrContains(table.out, "NODE")) << table;
  EXPECT_TRUE(absl::StrContains(table.out, node_->address())) << table;
  EXPECT_FALSE(absl::StrContains(table.out, "problems:")) << table;

  const json doc = CtlJson({"status"});
  EXPECT_TRUE(absl::StartsWith(doc.value("cluster_id", ""), "0x")) << doc;
  EXPECT_EQ(doc["leader"], 1);
  EXPECT_EQ(doc["answered_by"], 1);
  EXPECT_EQ(doc["endpoint"], node_->address());
  for (const char* key : {"term", "expiry_leeway_ms", "members"}) {
    EXPECT_TRUE(doc.contains(key)) << key;
  }
  ASSERT_EQ(doc["members"].size(), 1u) << doc;
  const json& m = doc["members"][0];
  for (const char* key : {"node_id",         "client_address",
                          "peer_address",    "role",
                          "voter",           "reachable",
                          "error",           "term",
                          "leader",          "commit_index",
                          "applied_index",   "lag",
                          "live_sessions",   "clock_skew_ms",
                          "cluster_time_ms", "data_dir_bytes",
                          "disk_free_bytes", "disk_full",
                          "disk_condition",  "metrics"}) {
    EXPECT_TRUE(m.contains(key)) << key;
  }
  EXPECT_EQ(m["role"], "leader");
  EXPECT_EQ(m["reachable"], true);
  EXPECT_TRUE(m["commit_index"].is_number_unsigned());
  EXPECT_GT(m["disk_free_bytes"].get<uint64_t>(), 0u);
  EXPECT_EQ(m["disk_full"], false);
  // The disk guard's 32 MiB reserve file is space held back, not data.
  EXPECT_LT(m["data_dir_bytes"].get<uint64_t>(), uint64_t{16} << 20) << m;

  // --watch: refreshes (bounded by --count here), one JSON line each.
  const CtlRun watch =
      Ctl({"status", "--watch", "--interval", "200ms", "--count", "2"});
  ASSERT_EQ(watch.exit_code, 0) << watch;
  EXPECT_EQ(
      std::vector<std::string>(absl::StrSplit(watch.out, "cluster 0x")).size(),
      3u)
      << watch;
  const CtlRun lines = Ctl(
      {"--json", "status", "--watch", "--interval", "200ms", "--count", "2"});
  ASSERT_EQ(lines.exit_code, 0) << lines;
  std::vector<std::string> docs =
      absl::StrSplit(lines.out, '\n', absl::SkipEmpty());
  ASSERT_EQ(docs.size(), 2u) << lines;
  for (const std::string& line : docs) {
    EXPECT_EQ(ParseJson(line)["leader"], 1) << line;
  }
}

TEST_F(SessionctlNodeTest, SessionsGetListRevokeRevokeUserCount) {
  const auto a1 = Create(*stub_, "alice", "laptop");
  const auto a2 = Create(*stub_, "alice", "phone");
  const auto a3 = Create(*stub_, "alice", "tablet");
  const auto b1 = Create(*stub_, "bob");

  // get: the session, never the token.
  const CtlRun get = Ctl({"sessions", "get", a1.token()});
  ASSERT_EQ(get.exit_code, 0) << get;
  EXPECT_TRUE(absl::StrContains(get.out, "VALID")) << get;
  EXPECT_TRUE(absl::StrContains(get.out, a1.session().session_id())) << get;
  EXPECT_TRUE(absl::StrContains(get.out, "alice")) << get;
  EXPECT_TRUE(absl::StrContains(get.out, "role=admin")) << get;
  EXPECT_FALSE(absl::StrContains(get.out + get.err, a1.token())) << get;
  const CtlRun from_stdin =
      Ctl({"--json", "sessions", "get", "-", "--consistency", "local"},
          a2.token() + "\n");
  ASSERT_EQ(from_stdin.exit_code, 0) << from_stdin;
  json got = ParseJson(from_stdin.out);
  EXPECT_EQ(got["outcome"], "VALID") << got;
  EXPECT_EQ(got["session"]["session_id"], a2.session().session_id());
  EXPECT_EQ(got["session"]["attributes"]["role"], "admin");
  EXPECT_EQ(got["consistency"], "LOCAL");
  EXPECT_FALSE(absl::StrContains(from_stdin.out, a2.token()));
  const CtlRun unknown =
      Ctl({"sessions", "get", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"});
  EXPECT_EQ(unknown.exit_code, 0) << unknown;
  EXPECT_TRUE(absl::StrContains(unknown.out, "UNKNOWN")) << unknown;

  // list: every session of the user, table and JSON.
  const CtlRun list = Ctl({"sessions", "list", "--user", "alice"});
  ASSERT_EQ(list.exit_code, 0) << list;
  EXPECT_TRUE(absl::StrContains(list.out, "alice: 3 sessions")) << list;
  for (const auto* s : {&a1, &a2, &a3}) {
    EXPECT_TRUE(absl::StrContains(list.out, s->session().session_id()));
  }
  EXPECT_FALSE(absl::StrContains(list.out, b1.session().session_id()));
  json listed = CtlJson({"sessions", "list", "--user", "alice"});
  EXPECT_EQ(listed["user_id"], "alice");
  ASSERT_EQ(listed["sessions"].size(), 3u) << listed;
  for (const char* key :
       {"session_id", "user_id", "created_at_ms", "expires_at_ms",
        "idle_timeout_ms", "last_seen_at_ms", "attributes", "version", "state",
        "revoke_reason", "revoked_at_ms", "client"}) {
    EXPECT_TRUE(listed["sessions"][0].contains(key)) << key;
  }
  EXPECT_EQ(listed["sessions"][0]["state"], "SESSION_STATE_ACTIVE");

  // revoke by session id, then by token from stdin.
  const CtlRun revoke = Ctl({"sessions", "revoke", "--session-id",
                             a1.session().session_id(), "--reason", "stolen"});
  ASSERT_EQ(revoke.exit_code, 0) << revoke;
  EXPECT_TRUE(absl::StrContains(revoke.out, "is revoked")) << revoke;
  EXPECT_TRUE(absl::StrContains(revoke.out, "stolen")) << revoke;
  EXPECT_TRUE(
      absl::StrContains(Ctl({"sessions", "get", a1.token()}).out, "REVOKED"));
  const CtlRun by_token =
      Ctl({"--json", "sessions", "revoke", "--token", "-"}, a2.token());
  ASSERT_EQ(by_token.exit_code, 0) << by_token;
  EXPECT_EQ(ParseJson(by_token.out)["session"]["state"],
            "SESSION_STATE_REVOKED");
  EXPECT_FALSE(absl::StrContains(by_token.out + by_token.err, a2.token()));
  const CtlRun missing =
      Ctl({"sessions", "revoke", "--session-id", "AAAAAAAAAAAAAAAAAAAAAA"});
  EXPECT_EQ(missing.exit_code, 1) << missing;
  EXPECT_TRUE(absl::StrContains(missing.err, "NOT_FOUND")) << missing;
  EXPECT_TRUE(absl::StrContains(missing.err, "sessions list --user"))
      << missing;

  listed =
      CtlJson({"sessions", "list", "--user", "alice", "--include-revoked"});
  int revoked = 0;
  for (const json& s : listed["sessions"]) {
    revoked += s["state"] == "SESSION_STATE_REVOKED" ? 1 : 0;
  }
  EXPECT_EQ(revoked, 2) << listed;
  EXPECT_EQ(CtlJson({"sessions", "list", "--user", "alice"})["sessions"].size(),
            1u);

  // revoke-user, keeping one session.
  const auto a4 = Create(*stub_, "alice", "desktop");
  const json revoked_user =
      CtlJson({"sessions", "revoke-user", "alice", "--keep-session-id",
               a4.session().session_id(), "--reason", "password reset"});
  EXPECT_EQ(revoked_user["revoked_count"], 1) << revoked_user;
  EXPECT_EQ(revoked_user["user_id"], "alice");
  const CtlRun got3 = Ctl({"sessions", "get", a3.token()});
  EXPECT_TRUE(absl::StrContains(got3.out, "REVOKED")) << got3;
  const CtlRun got4 = Ctl({"sessions", "get", a4.token()});
  EXPECT_TRUE(absl::StrContains(got4.out, "VALID")) << got4;
  const CtlRun none = Ctl({"sessions", "revoke-user", "nobody"});
  EXPECT_EQ(none.exit_code, 0) << none;
  EXPECT_TRUE(absl::StrContains(none.out, "revoked 0 sessions")) << none;

  // count: the leader's table (revoked sessions are retained, so counted).
  const CtlRun count = Ctl({"sessions", "count"});
  ASSERT_EQ(count.exit_code, 0) << count;
  EXPECT_TRUE(absl::StartsWith(count.out, "5 sessions (node 1, the leader"))
      << count;
  const json counted = CtlJson({"sessions", "count"});
  EXPECT_EQ(counted["live_sessions"], 5);
  EXPECT_EQ(counted["node_id"], 1);
  EXPECT_EQ(counted["from_leader"], true);
  EXPECT_EQ(counted["answered_by"], 1);
}

TEST_F(SessionctlNodeTest, FlushAsksForTheCountThenRestoreUndoesIt) {
  std::vector<std::string> tokens;
  for (const char* user : {"ann", "ann", "bob"}) {
    tokens.push_back(Create(*stub_, user).token());
  }
  // The wrong count typed back: nothing changes.
  const CtlRun refused = Ctl({"flush"}, "2\n");
  EXPECT_EQ(refused.exit_code, 1) << refused;
  EXPECT_TRUE(absl::StrContains(refused.err, "3 sessions of 2 users"))
      << refused;
  EXPECT_TRUE(absl::StrContains(refused.err, "nothing was changed")) << refused;
  EXPECT_TRUE(
      absl::StrContains(Ctl({"sessions", "get", tokens[0]}).out, "VALID"));
  // The right one: flushed.
  const CtlRun flushed = Ctl({"flush", "--reason", "drill"}, "3\n");
  ASSERT_EQ(flushed.exit_code, 0) << flushed;
  EXPECT_TRUE(absl::StrContains(flushed.out, "3 sessions of 2 users"))
      << flushed;
  EXPECT_TRUE(absl::StrContains(flushed.out, "sessionctl restore ")) << flushed;
  for (const std::string& token : tokens) {
    EXPECT_TRUE(
        absl::StrContains(Ctl({"sessions", "get", token}).out, "REVOKED"));
  }
  const json list = CtlJson({"flushes", "list"});
  ASSERT_EQ(list["revocations"].size(), 1u) << list;
  const uint64_t id = list["revocations"][0]["id"];
  EXPECT_EQ(list["revocations"][0]["reason"], "drill");
  EXPECT_EQ(list["revocations"][0]["state"], "RETAINED");
  const CtlRun table = Ctl({"flushes", "list"});
  EXPECT_TRUE(absl::StrContains(table.out, "every live session")) << table;
  const CtlRun restored = Ctl({"restore", absl::StrCat(id)});
  ASSERT_EQ(restored.exit_code, 0) << restored;
  EXPECT_TRUE(absl::StrContains(restored.out, "3 sessions valid again"))
      << restored;
  for (const std::string& token : tokens) {
    EXPECT_TRUE(
        absl::StrContains(Ctl({"sessions", "get", token}).out, "VALID"));
  }
  const CtlRun again = Ctl({"restore", absl::StrCat(id)});
  EXPECT_EQ(again.exit_code, 1) << again;
  EXPECT_TRUE(absl::StrContains(again.err, "already restored")) << again;
  // A bulk revoke of one user, scripted with --yes and --json.
  const json bulk = CtlJson({"revoke-users", "ann", "--yes"});
  EXPECT_EQ(bulk["revocation"]["sessions"], 2) << bulk;
  EXPECT_TRUE(
      absl::StrContains(Ctl({"sessions", "get", tokens[2]}).out, "VALID"));
  // A time that is neither Unix ms nor RFC 3339 is a usage error.
  EXPECT_EQ(Ctl({"revoke-before", "yesterday", "--yes"}).exit_code, 2);
}

TEST_F(SessionctlNodeTest, LeewaySetChangesTheReplicatedLeeway) {
  const CtlRun set = Ctl({"leeway", "set", "2500"});
  ASSERT_EQ(set.exit_code, 0) << set;
  EXPECT_TRUE(absl::StrContains(set.out, "2500 ms")) << set;
  EXPECT_EQ(CtlJson({"status"})["expiry_leeway_ms"], 2500);
  const json doc = CtlJson({"leeway", "set", "0"});
  EXPECT_EQ(doc.value("expiry_leeway_ms", int64_t{-1}), 0) << doc;
  EXPECT_EQ(CtlJson({"status"})["expiry_leeway_ms"], 0);
  // Out of range: a usage error, nothing sent.
  EXPECT_EQ(Ctl({"leeway", "set", "86400001"}).exit_code, 2);
}

TEST_F(SessionctlNodeTest, EndpointsComeFromFlagThenEnvironmentThenConfig) {
  TempDir dir;
  const std::string dead = DeadAddress();
  const std::string config = dir.path() + "/sessionctl.toml";
  std::ofstream(config) << "endpoints = [\"" << node_->address()
                        << "\"]  # the node\ntimeout = \"3s\"\n";
  const std::string env_dead = absl::StrCat("SESSIOND_ENDPOINTS=", dead);
  const std::string env_config = absl::StrCat("SESSIONCTL_CONFIG=", config);
  // The config file alone: the node.
  CtlRun run = Sessionctl({"sessions", "count"}, {env_config});
  EXPECT_EQ(run.exit_code, 0) << run;
  // The environment beats the config file.
  run = Sessionctl({"sessions", "count"}, {env_config, env_dead});
  EXPECT_EQ(run.exit_code, 3) << run;
  EXPECT_TRUE(absl::StrContains(run.err, "from SESSIOND_ENDPOINTS")) << run;
  // The flag beats the environment.
  run = Sessionctl({"--endpoints", node_->address(), "sessions", "count"},
                   {env_config, env_dead});
  EXPECT_EQ(run.exit_code, 0) << run;
  run = Sessionctl({"--endpoints", dead, "sessions", "count"}, {env_config});
  EXPECT_EQ(run.exit_code, 3) << run;
  // The default config file, ~/.config/sessionctl.toml (XDG_CONFIG_HOME).
  run = Sessionctl({"sessions", "count"},
                   {absl::StrCat("XDG_CONFIG_HOME=", dir.path())});
  EXPECT_EQ(run.exit_code, 0) << run;
  // A dead endpoint before a live one: the live one answers.
  const std::string both = absl::StrCat(dead, ",", node_->address());
  for (const std::vector<std::string>& args :
       std::vector<std::vector<std::string>>{
           {"status"},
           {"sessions", "list", "--user", "alice"},
           {"sessions", "revoke-user", "alice"}}) {
    std::vector<std::string> full = {"--endpoints", both};
    full.insert(full.end(), args.begin(), args.end());
    run = Sessionctl(full);
    EXPECT_EQ(run.exit_code, 0) << absl::StrJoin(args, " ") << "\n" << run;
  }
}

// --- One node with a key-encryption key: the signing key ring --------------

class SessionctlKeysTest : public SessionctlNodeTest {
 protected:
  void NodeFlags(std::vector<std::string>* flags) override {
    // A KEK file as operators make one: 64 hex characters, mode 0600.
    const std::string kek = dir_.path() + "/kek";
    const int fd = open(kek.c_str(), O_WRONLY | O_CREAT | O_EXCL, 0600);
    ASSERT_GE(fd, 0);
    const std::string hex(
        "00112233445566778899aabbccddeeff0f1e2d3c4b5a69788796a5b4c3d2e1f0\n");
    ASSERT_EQ(write(fd, hex.data(), hex.size()),
              static_cast<ssize_t>(hex.size()));
    close(fd);
    *flags = {"--kek_file", kek, "--jwks_max_age_ms", "1000"};
  }
  // The state of `kid` in `keys list --json`'s document ("" if absent).
  static std::string StateOf(const json& list, const std::string& kid) {
    for (const json& key : list["keys"]) {
      if (key["kid"] == kid) return key["state"];
    }
    return "";
  }
};

TEST_F(SessionctlKeysTest, ListStageActivateRetireAndJwks) {
  // The first leader bootstraps an active key (bounded wait: it is a write
  // after the election).
  json list;
  for (int i = 0; i < 100; ++i) {
    list = CtlJson({"keys", "list"});
    if (!list.value("active_kid", "").empty()) break;
    absl::SleepFor(absl::Milliseconds(100));
  }
  const std::string old_kid = list.value("active_kid", "");
  ASSERT_EQ(old_kid.size(), 43u) << list;
  EXPECT_EQ(StateOf(list, old_kid), "SIGNING_KEY_ACTIVE") << list;
  EXPECT_EQ(list["endpoint"], node_->address());
  const CtlRun table = Ctl({"keys", "list"});
  ASSERT_EQ(table.exit_code, 0) << table;
  for (const char* column : {"KID", "STATE", "LIVE SESSIONS", "ACTIVATABLE"}) {
    EXPECT_TRUE(absl::StrContains(table.out, column)) << table;
  }
  EXPECT_TRUE(absl::StrContains(table.out, "active key: " + old_kid)) << table;

  // A session whose token the bootstrapped key signed.
  sessiond::v1::CreateSessionRequest request;
  request.set_user_id("alice");
  request.set_ttl_ms(3'600'000);
  request.set_token_format(sessiond::v1::TOKEN_FORMAT_JWT);
  sessiond::v1::CreateSessionResponse created;
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(10)));
  const grpc::Status s = stub_->CreateSession(&context, request, &created);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(created.session().signing_kid(), old_kid);

  // stage: a second key, staged, with how to activate it.
  const CtlRun staged = Ctl({"keys", "stage"});
  ASSERT_EQ(staged.exit_code, 0) << staged;
  EXPECT_TRUE(absl::StrContains(staged.out, "staged key ")) << staged;
  EXPECT_TRUE(absl::StrContains(staged.out, "sessionctl keys activate "))
      << staged;
  list = CtlJson({"keys", "list"});
  std::string new_kid;
  for (const json& key : list["keys"]) {
    if (key["state"] == "SIGNING_KEY_STAGED") new_kid = key["kid"];
  }
  ASSERT_EQ(new_kid.size(), 43u) << list;
  EXPECT_TRUE(absl::StrContains(staged.out, new_kid)) << staged;
  // A second bootstrap is refused: the ring is not empty.
  const CtlRun bootstrap = Ctl({"keys", "stage", "--bootstrap"});
  EXPECT_EQ(bootstrap.exit_code, 1) << bootstrap;
  EXPECT_TRUE(absl::StrContains(bootstrap.err, "FAILED_PRECONDITION"))
      << bootstrap;

  // activate: refused until published for the max-age (1 s here), then
  // done; the old key retires.
  CtlRun activated;
  for (int i = 0; i < 100; ++i) {
    activated = Ctl({"keys", "activate", new_kid});
    if (activated.exit_code == 0) break;
    ASSERT_EQ(activated.exit_code, 1) << activated;
    EXPECT_TRUE(absl::StrContains(activated.err, "FAILED_PRECONDITION"))
        << activated;
    EXPECT_TRUE(absl::StrContains(activated.err, "keys list")) << activated;
    absl::SleepFor(absl::Milliseconds(200));
  }
  ASSERT_EQ(activated.exit_code, 0) << activated;
  EXPECT_TRUE(absl::StrContains(activated.out, "activated key " + new_kid))
      << activated;
  EXPECT_TRUE(
      absl::StrContains(activated.out, "sessionctl keys retire " + old_kid))
      << activated;
  list = CtlJson({"keys", "list"});
  EXPECT_EQ(list["active_kid"], new_kid) << list;
  EXPECT_EQ(StateOf(list, new_kid), "SIGNING_KEY_ACTIVE") << list;
  EXPECT_EQ(StateOf(list, old_kid), "SIGNING_KEY_RETIRING") << list;
  for (const json& key : list["keys"]) {
    if (key["kid"] == old_kid) {
      EXPECT_EQ(key["live_sessions"], 1) << list;
    }
  }

  // retire the old key: refused with the count while its session lives.
  const CtlRun refused = Ctl({"keys", "retire", old_kid});
  EXPECT_EQ(refused.exit_code, 1) << refused;
  EXPECT_TRUE(absl::StrContains(refused.err, "signed 1 live session"))
      << refused;
  EXPECT_TRUE(absl::StrContains(refused.err, "--force")) << refused;
  // --force with the wrong count typed back: nothing changes.
  const CtlRun wrong = Ctl({"keys", "retire", old_kid, "--force"}, "2\n");
  EXPECT_EQ(wrong.exit_code, 1) << wrong;
  EXPECT_TRUE(absl::StrContains(wrong.err, "Type the number of sessions (1)"))
      << wrong;
  EXPECT_TRUE(absl::StrContains(wrong.err, "nothing was changed")) << wrong;
  EXPECT_EQ(StateOf(CtlJson({"keys", "list"}), old_kid),
            "SIGNING_KEY_RETIRING");
  // --force --yes: retired, the count echoed back.
  const json retired = CtlJson({"keys", "retire", old_kid, "--force", "--yes"});
  EXPECT_EQ(retired["key"]["kid"], old_kid) << retired;
  EXPECT_EQ(retired["key"]["state"], "SIGNING_KEY_RETIRED") << retired;
  EXPECT_EQ(retired["live_sessions"], 1) << retired;
  list = CtlJson({"keys", "list"});
  const std::string old_state = StateOf(list, old_kid);
  EXPECT_TRUE(old_state.empty() || old_state == "SIGNING_KEY_RETIRED") << list;
  // The active key cannot be retired.
  const CtlRun active = Ctl({"keys", "retire", new_kid, "--force", "--yes"});
  EXPECT_EQ(active.exit_code, 1) << active;
  EXPECT_TRUE(absl::StrContains(active.err, "FAILED_PRECONDITION")) << active;

  // jwks: the document as served (stdout), the max-age on stderr; with
  // --json, the response's fields and the document as an object.
  const CtlRun jwks = Ctl({"keys", "jwks"});
  ASSERT_EQ(jwks.exit_code, 0) << jwks;
  const json document = ParseJson(jwks.out);
  ASSERT_TRUE(document.is_object()) << jwks;
  ASSERT_TRUE(document["keys"].is_array()) << jwks;
  std::set<std::string> published;
  for (const json& key : document["keys"]) published.insert(key["kid"]);
  EXPECT_EQ(published, std::set<std::string>{new_kid}) << jwks;
  EXPECT_TRUE(absl::StrContains(jwks.err, "max-age ")) << jwks;
  const json jwks_doc = CtlJson({"keys", "jwks"});
  EXPECT_EQ(ParseJson(jwks_doc.value("jwks_json", "")), document) << jwks_doc;
  EXPECT_EQ(jwks_doc["jwks"], document) << jwks_doc;
  EXPECT_TRUE(jwks_doc["max_age_s"].is_number()) << jwks_doc;
  EXPECT_TRUE(jwks_doc["key_ring_index"].is_number_unsigned()) << jwks_doc;
  EXPECT_EQ(jwks_doc["endpoint"], node_->address());

  // An unknown kid: NOT_FOUND, exit 1.
  const CtlRun unknown = Ctl({"keys", "activate", std::string(43, 'A')});
  EXPECT_EQ(unknown.exit_code, 1) << unknown;
  EXPECT_TRUE(absl::StrContains(unknown.err, "NOT_FOUND")) << unknown;
}

// --- A 3-node cluster -------------------------------------------------------

TEST(SessionctlClusterTest, MembersAndLeaderTransfer) {
  ClusterOptions options;
  options.binary = SESSIOND_BINARY;
  ClusterHarness cluster(options);
  ASSERT_TRUE(cluster.Start().ok());
  absl::StatusOr<int> leader = cluster.WaitForLeader(absl::Seconds(20));
  ASSERT_TRUE(leader.ok());
  // A dead endpoint first: sessionctl goes on to the others.
  const std::string endpoints =
      absl::StrCat(DeadAddress(), ",", cluster.client_address(1), ",",
                   cluster.client_address(2), ",", cluster.client_address(3));
  const auto ctl = [&](std::vector<std::string> args) {
    args.insert(args.begin(), {"--endpoints", endpoints, "--timeout", "10s"});
    return Sessionctl(args);
  };
  const auto ctl_json = [&](std::vector<std::string> args) {
    args.insert(args.begin(), "--json");
    const CtlRun run = ctl(args);
    EXPECT_EQ(run.exit_code, 0) << run;
    return ParseJson(run.out);
  };

  const CtlRun status = ctl({"status"});
  ASSERT_EQ(status.exit_code, 0) << status;
  EXPECT_TRUE(
      absl::StrContains(status.out, absl::StrCat("leader node ", *leader)))
      << status;
  for (int id : cluster.ids()) {
    EXPECT_TRUE(absl::StrContains(status.out, cluster.client_address(id)));
  }
  json doc = ctl_json({"status"});
  ASSERT_EQ(doc["members"].size(), 3u) << doc;
  int leaders = 0;
  for (const json& m : doc["members"]) {
    leaders += m["role"] == "leader" ? 1 : 0;
  }
  EXPECT_EQ(leaders, 1) << doc;
  EXPECT_EQ(doc["leader"], *leader);

  // leader transfer to a named follower, then to "any".
  const int target = *leader == 1 ? 2 : 1;
  const CtlRun transfer = ctl({"leader", "transfer", absl::StrCat(target)});
  ASSERT_EQ(transfer.exit_code, 0) << transfer;
  EXPECT_TRUE(absl::StrContains(
      transfer.out, absl::StrCat("leadership is with node ", target)))
      << transfer;
  absl::StatusOr<int> moved = cluster.WaitForLeader(absl::Seconds(10));
  ASSERT_TRUE(moved.ok());
  EXPECT_EQ(*moved, target);
  const json any = ctl_json({"leader", "transfer", "any"});
  EXPECT_NE(any["leader"], target) << any;
  EXPECT_EQ(ctl({"leader", "transfer", "9"}).exit_code, 1);

  // A member removed, added back as a learner, promoted.
  leader = cluster.WaitForLeader(absl::Seconds(10));
  ASSERT_TRUE(leader.ok());
  int away = 3;
  while (away == *leader) --away;
  json removed = ctl_json({"members", "remove", absl::StrCat(away)});
  EXPECT_EQ(removed["voters"].size(), 2u) << removed;
  cluster.Kill(away);
  cluster.WipeDataDir(away);
  const CtlRun add =
      ctl({"members", "add", absl::StrCat(away), cluster.peer_address(away),
           "--client", cluster.client_address(away)});
  ASSERT_EQ(add.exit_code, 0) << add;
  EXPECT_TRUE(absl::StrContains(add.out, "added as a learner")) << add;
  EXPECT_TRUE(absl::StrContains(add.out, "members promote")) << add;
  json members = ctl_json({"members", "list"});
  cluster.SetNodeFlags(away, {"--initial_cluster_state", "existing"});
  ASSERT_TRUE(cluster.StartNode(away).ok());
  CtlRun promote;
  for (int i = 0; i < 100; ++i) {
    promote = ctl({"members", "promote", absl::StrCat(away)});
    if (promote.exit_code == 0) break;
    absl::SleepFor(absl::Milliseconds(200));
  }
  ASSERT_EQ(promote.exit_code, 0) << promote;
  EXPECT_TRUE(absl::StrContains(promote.out, "is a voter now")) << promote;
  members = ctl_json({"members", "list"});
  bool voter = false;
  for (const json& m : members["members"]) {
    if (m["node_id"] == away) voter = m["voter"].get<bool>();
  }
  EXPECT_TRUE(voter) << members;
  EXPECT_EQ(ctl({"members", "promote", "42"}).exit_code, 1);

  // A member down: listed unreachable, and the table says so.
  leader = cluster.WaitForLeader(absl::Seconds(10));
  ASSERT_TRUE(leader.ok());
  const int down = *leader == 1 ? 2 : 1;
  cluster.Kill(down);
  const CtlRun degraded = ctl({"status"});
  EXPECT_EQ(degraded.exit_code, 0) << degraded;
  EXPECT_TRUE(absl::StrContains(degraded.out, "unreachable")) << degraded;
  EXPECT_TRUE(absl::StrContains(degraded.out, "problems:")) << degraded;
}

}  // namespace
}  // namespace sessiond::testing
