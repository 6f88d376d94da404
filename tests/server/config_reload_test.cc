// Copyright sessiond authors. Licensed under the Apache License 2.0.
//
// sessiond's configuration as an operator meets it, on the real binaries:
// --version, SIGHUP reloads, sd_notify to a NOTIFY_SOCKET, the shipped
// systemd unit and example config.
#include <grpcpp/grpcpp.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "server/config.h"
#include "sessiond/v1/session.grpc.pb.h"
#include "tests/server/test_util.h"

namespace sessiond::server {
namespace {

using sessiond::v1::CreateSessionRequest;
using sessiond::v1::CreateSessionResponse;
using sessiond::v1::SessionService;
using sessiond::v1::ValidateSessionRequest;
using sessiond::v1::ValidateSessionResponse;
using testing::Eventually;
using testing::ScopedTempDir;
using testing::Subprocess;

// What a command printed on stdout (and its exit status).
std::string RunCommand(const std::string& command, int* status) {
  FILE* pipe = popen(command.c_str(), "r");
  std::string out;
  if (pipe == nullptr) return out;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof(buf), pipe)) > 0) out.append(buf, n);
  *status = pclose(pipe);
  return out;
}

void WriteFile(const std::string& path, const std::string& text) {
  std::ofstream(path) << text;
}

std::unique_ptr<SessionService::Stub> StubFor(const std::string& address) {
  return SessionService::NewStub(
      grpc::CreateChannel(address, grpc::InsecureChannelCredentials()));
}

void SetDeadline(grpc::ClientContext* context) {
  context->set_deadline(std::chrono::system_clock::now() +
                        std::chrono::seconds(10));
}

// The outcome of validating `token`, or nullopt when the call failed.
std::optional<ValidateSessionResponse::Outcome> Outcome(
    SessionService::Stub* stub, const std::string& token) {
  grpc::ClientContext context;
  SetDeadline(&context);
  ValidateSessionRequest request;
  request.set_token(token);
  ValidateSessionResponse response;
  if (!stub->ValidateSession(&context, request, &response).ok()) {
    return std::nullopt;
  }
  return response.outcome();
}

TEST(VersionTest, SessiondAndSessionctlPrintTheSameBuild) {
  int status = -1;
  const std::string sessiond =
      RunCommand(absl::StrCat(SESSIOND_BINARY, " --version"), &status);
  EXPECT_EQ(status, 0);
  int ctl_status = -1;
  const std::string sessionctl =
      RunCommand(absl::StrCat(SESSIONCTL_BINARY, " --version"), &ctl_status);
  EXPECT_EQ(ctl_status, 0);
  // "sessiond 0.1.0 (git 1a2b3c4, Release, GNU 12.2.0)\n"
  ASSERT_TRUE(absl::StartsWith(sessiond, "sessiond ")) << sessiond;
  ASSERT_TRUE(absl::StartsWith(sessionctl, "sessionctl ")) << sessionctl;
  EXPECT_EQ(sessiond.substr(9), sessionctl.substr(11));
  EXPECT_TRUE(absl::StartsWith(sessiond.substr(9),
                               absl::StrCat(kSessiondVersion, " (git ")))
      << sessiond;
  EXPECT_TRUE(absl::EndsWith(sessiond, ")\n")) << sessiond;
}

// The shipped example config parses, and says what the comments say.
TEST(DeployTest, ExampleConfigParses) {
  const std::string path =
      absl::StrCat(SESSIOND_SOURCE_DIR, "/deploy/systemd/sessiond.toml");
  std::vector<const char*> argv = {"sessiond", "--config", path.c_str()};
  absl::StatusOr<ParsedConfig> parsed =
      ParseConfig(static_cast<int>(argv.size()), argv.data());
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(parsed->config.data_dir, "/var/lib/sessiond");
  EXPECT_EQ(parsed->config.initial_cluster,
            "1=10.0.0.5:7001,2=10.0.0.6:7001,3=10.0.0.7:7001");
  EXPECT_EQ(parsed->config.node_id, 1);
  // Non-loopback listeners: with TLS and a role file.
  EXPECT_EQ(parsed->config.tls_ca, "/etc/sessiond/tls/ca.pem");
  EXPECT_EQ(parsed->config.auth_file, "/etc/sessiond/roles.conf");
}

// `systemd-analyze verify` on the unit, its ExecStart pointed at this
// build's binary (verify checks that it is executable). Any complaint about
// the unit fails the test: verify exits 0 on unknown keys and bad values.
TEST(DeployTest, SystemdAnalyzeVerifiesTheUnit) {
  if (access("/usr/bin/systemd-analyze", X_OK) != 0) {
    GTEST_SKIP() << "systemd-analyze is not installed";
  }
  ScopedTempDir dir;
  std::ifstream in(
      absl::StrCat(SESSIOND_SOURCE_DIR, "/deploy/systemd/sessiond.service"));
  std::stringstream unit;
  unit << in.rdbuf();
  std::string text = unit.str();
  ASSERT_NE(text.find("ExecStart=/usr/local/bin/sessiond "), std::string::npos);
  text.replace(text.find("/usr/local/bin/sessiond"),
               std::string("/usr/local/bin/sessiond").size(), SESSIOND_BINARY);
  const std::string path = dir.Child("sessiond.service");
  WriteFile(path, text);
  int status = -1;
  const std::string out = RunCommand(
      absl::StrCat("/usr/bin/systemd-analyze verify ", path, " 2>&1"), &status);
  EXPECT_EQ(status, 0) << out;
  for (absl::string_view line : absl::StrSplit(out, '\n')) {
    EXPECT_FALSE(absl::StrContains(line, "sessiond")) << line;
  }
}

class ReloadTest : public ::testing::Test {
 protected:
  std::unique_ptr<Subprocess> Launch(std::vector<std::string> args) {
    std::vector<std::string> all = {"--listen", "127.0.0.1:0", "--data_dir",
                                    dir_.Child("data")};
    all.insert(all.end(), args.begin(), args.end());
    return std::make_unique<Subprocess>(SESSIOND_BINARY, std::move(all),
                                        dir_.Child("stderr"));
  }
  // Starts `process` and returns the client address it prints ("" if it
  // did not start serving).
  static std::string StartServing(Subprocess* process) {
    if (!process->Start()) return "";
    return process->WaitForLine("LISTENING ", absl::Seconds(60));
  }
  ScopedTempDir dir_;
};

// A reloadable option (sweep_interval_ms) takes effect: expired sessions
// that a one-day interval would leave in the table are swept after the
// reload. A non-reloadable one (shards) is reported as needing a restart.
// A file that no longer parses changes nothing and says so.
TEST_F(ReloadTest, SighupAppliesReloadableOptionsAndReportsTheRest) {
  const std::string config = dir_.Child("sessiond.toml");
  WriteFile(config,
            "min_ttl_ms = 100\n"
            "sweep_interval_ms = 86400000  # the sweeper never runs\n");
  auto process = Launch({"--config", config});
  const std::string address = StartServing(process.get());
  ASSERT_FALSE(address.empty()) << process->Stderr();
  auto stub = StubFor(address);

  CreateSessionRequest create;
  create.set_user_id("ada");
  create.set_ttl_ms(100);
  CreateSessionResponse created;
  {
    grpc::ClientContext context;
    SetDeadline(&context);
    ASSERT_TRUE(stub->CreateSession(&context, create, &created).ok());
  }
  // Expired, but still in the table: the sweeper has not run.
  ASSERT_TRUE(Eventually([&] {
    return Outcome(stub.get(), created.token()) ==
           ValidateSessionResponse::EXPIRED;
  })) << process->Stderr();

  WriteFile(config,
            "min_ttl_ms = 100\n"
            "sweep_interval_ms = 50\n"
            "shards = 8\n");
  process->Signal(SIGHUP);
  EXPECT_EQ(process->WaitForLine("sessiond: reloaded sweep_interval_ms: ",
                                 absl::Seconds(30)),
            "86400000 -> 50")
      << process->stdout_text();
  EXPECT_EQ(process->WaitForLine("sessiond: SIGHUP: config reloaded ",
                                 absl::Seconds(30)),
            "(1 applied, 1 need a restart)")
      << process->stdout_text();
  EXPECT_TRUE(Eventually([&] {
    return absl::StrContains(
        process->Stderr(),
        "reload.needs_restart node=1 option=shards running=64 "
        "configured=8");
  })) << process->Stderr();
  // Swept: the table no longer knows the token.
  EXPECT_TRUE(Eventually([&] {
    return Outcome(stub.get(), created.token()) ==
           ValidateSessionResponse::UNKNOWN;
  }));

  // A file that does not parse: nothing changes, the node goes on serving.
  WriteFile(config, "sweep_interval_ms = 50\nbogus = 1\n");
  process->Signal(SIGHUP);
  EXPECT_TRUE(Eventually([&] {
    const std::string err = process->Stderr();
    return absl::StrContains(err, "reload.failed node=1 error=\"config file " +
                                      config +
                                      ": unknown option \\\"bogus\\\"\"") &&
           absl::StrContains(err,
                             "msg=\"SIGHUP: the config does not parse; "
                             "nothing changed, still running with the "
                             "previous one\"");
  })) << process->Stderr();
  EXPECT_EQ(Outcome(stub.get(), "no-such-token"),
            ValidateSessionResponse::UNKNOWN);

  process->Signal(SIGTERM);
  EXPECT_EQ(process->Wait(absl::Seconds(60)), 0) << process->Stderr();
}

// Receives the datagrams sessiond sends to $NOTIFY_SOCKET.
class NotifySocket {
 public:
  explicit NotifySocket(const std::string& path) : path_(path) {
    fd_ = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::snprintf(addr.sun_path, sizeof(addr.sun_path), "%s", path.c_str());
    bound_ = fd_ >= 0 &&
             bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0;
  }
  ~NotifySocket() {
    if (fd_ >= 0) close(fd_);
    unlink(path_.c_str());
  }
  bool bound() const { return bound_; }

  // The next message (its lines joined by \n), or "" after `timeout`.
  std::string Next(absl::Duration timeout) {
    pollfd p{fd_, POLLIN, 0};
    if (poll(&p, 1, static_cast<int>(absl::ToInt64Milliseconds(timeout))) <=
        0) {
      return "";
    }
    char buf[4096];
    const ssize_t n = recv(fd_, buf, sizeof(buf), 0);
    return n > 0 ? std::string(buf, static_cast<size_t>(n)) : "";
  }

  // Waits for a message with the line `line`; returns every message seen
  // before it (empty when it never came: check `found`).
  std::vector<std::string> WaitFor(const std::string& line, bool* found,
                                   absl::Duration timeout) {
    const absl::Time deadline = absl::Now() + timeout;
    std::vector<std::string> before;
    *found = false;
    while (absl::Now() < deadline) {
      const std::string message = Next(deadline - absl::Now());
      if (message.empty()) break;
      for (absl::string_view l : absl::StrSplit(message, '\n')) {
        if (l == line) *found = true;
      }
      if (*found) return before;
      before.push_back(message);
    }
    return before;
  }

 private:
  std::string path_;
  int fd_ = -1;
  bool bound_ = false;
};

// SIGUSR2 (what the daemon sends itself after its write-ahead log failed,
// FullDiskTest) restarts the daemon in place: the same process on the port
// it had (the config says port 0), with its sessions. A SIGHUP afterwards
// still compares against the configured options: nothing needs a restart.
TEST_F(ReloadTest, SigusrTwoRestartsInPlaceOnTheSameAddress) {
  auto process = Launch({});
  const std::string address = StartServing(process.get());
  ASSERT_FALSE(address.empty()) << process->Stderr();
  auto stub = StubFor(address);
  CreateSessionRequest create;
  create.set_user_id("ada");
  CreateSessionResponse created;
  {
    grpc::ClientContext context;
    SetDeadline(&context);
    ASSERT_TRUE(stub->CreateSession(&context, create, &created).ok());
  }

  process->Signal(SIGUSR2);
  ASSERT_TRUE(Eventually([&] {
    return absl::StrContains(process->Stderr(), "restart.done");
  })) << process->Stderr();
  EXPECT_TRUE(absl::StrContains(process->Stderr(), "restart.begin"));
  EXPECT_TRUE(Eventually([&] {
    return Outcome(stub.get(), created.token()) ==
           ValidateSessionResponse::VALID;
  })) << process->Stderr();

  process->Signal(SIGHUP);
  EXPECT_EQ(process->WaitForLine("sessiond: SIGHUP: config reloaded ",
                                 absl::Seconds(30)),
            "(0 applied, 0 need a restart)")
      << process->Stderr();
  process->Signal(SIGTERM);
  EXPECT_EQ(process->Wait(absl::Seconds(60)), 0) << process->Stderr();
}

// Type=notify: READY=1 only once the gRPC port answers, RELOADING=1 then
// READY=1 around a SIGHUP, STOPPING=1 at SIGTERM.
TEST_F(ReloadTest, NotifiesSystemdWhenReadyReloadingAndStopping) {
  NotifySocket notify(dir_.Child("notify"));
  ASSERT_TRUE(notify.bound());
  auto process = Launch({});
  // The child inherits the variable; this process keeps it only as long as
  // it takes to fork.
  setenv("NOTIFY_SOCKET", dir_.Child("notify").c_str(), 1);
  const bool started = process->Start();
  unsetenv("NOTIFY_SOCKET");
  ASSERT_TRUE(started);

  bool ready = false;
  const std::vector<std::string> before =
      notify.WaitFor("READY=1", &ready, absl::Seconds(60));
  ASSERT_TRUE(ready) << process->Stderr();
  EXPECT_TRUE(before.empty()) << before[0];
  // sessiond printed its address before it notified, and serves at once:
  // no wait_for_ready, so a port not yet listening fails the call.
  const std::string address =
      process->WaitForLine("LISTENING ", absl::Seconds(5));
  ASSERT_FALSE(address.empty());
  {
    auto stub = StubFor(address);
    grpc::ClientContext context;
    SetDeadline(&context);
    ValidateSessionRequest request;
    request.set_token("readiness");
    ValidateSessionResponse response;
    const grpc::Status s = stub->ValidateSession(&context, request, &response);
    EXPECT_TRUE(s.ok()) << s.error_message();
  }

  process->Signal(SIGHUP);
  bool reloading = false;
  notify.WaitFor("RELOADING=1", &reloading, absl::Seconds(30));
  EXPECT_TRUE(reloading);
  bool ready_again = false;
  notify.WaitFor("READY=1", &ready_again, absl::Seconds(30));
  EXPECT_TRUE(ready_again);

  process->Signal(SIGTERM);
  bool stopping = false;
  notify.WaitFor("STOPPING=1", &stopping, absl::Seconds(30));
  EXPECT_TRUE(stopping);
  EXPECT_EQ(process->Wait(absl::Seconds(60)), 0) << process->Stderr();
}

}  // namespace
}  // namespace sessiond::server
