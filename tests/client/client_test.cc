// Copyright sessiond authors. Licensed under the Apache License 2.0.
//
// The C++ client against the real sessiond binary (SESSIOND_BINARY) on
// 127.0.0.1, and a smoke run of sessiond-bench (SESSIOND_BENCH_BINARY).

#include <arpa/inet.h>
#include <fcntl.h>
#include <grpcpp/create_channel.h>
#include <grpcpp/security/credentials.h>
#include <grpcpp/support/channel_arguments.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "client/grpc_status.h"
#include "client/session_client.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace sessiond::client {
namespace {

namespace v1 = ::sessiond::v1;
using ::testing::HasSubstr;

int64_t NowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// A port nobody listens on right now: bound, read back, closed.
int ClosedPort() {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  EXPECT_EQ(bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  socklen_t len = sizeof(addr);
  getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  close(fd);
  return ntohs(addr.sin_port);
}

// A child process whose stdout goes to a file (never a pipe, so a chatty
// child can never block on a full pipe); stderr passes through.
class Child {
 public:
  // Starts argv[0] with `argv`, stdout to `stdout_path`. Null on failure.
  static std::unique_ptr<Child> Start(const std::vector<std::string>& argv,
                                      const std::string& stdout_path) {
    const int out = open(stdout_path.c_str(),
                         O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (out < 0) return nullptr;
    const pid_t pid = fork();
    if (pid < 0) {
      close(out);
      return nullptr;
    }
    if (pid == 0) {
      dup2(out, STDOUT_FILENO);
      std::vector<char*> args;
      for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
      args.push_back(nullptr);
      execv(args[0], args.data());
      _exit(127);
    }
    close(out);
    return std::unique_ptr<Child>(new Child(pid, stdout_path));
  }

  Child(const Child&) = delete;
  Child& operator=(const Child&) = delete;
  ~Child() { Kill(SIGKILL); }

  // Waits for a stdout line starting with `prefix` and returns it; nullopt
  // at the deadline or when the child exits first.
  std::optional<std::string> WaitForLine(const std::string& prefix,
                                         int timeout_ms) {
    const int64_t deadline = NowMs() + timeout_ms;
    while (true) {
      const bool exited = !Running();
      for (absl::string_view line : absl::StrSplit(output(), '\n')) {
        if (absl::StartsWith(line, prefix)) return std::string(line);
      }
      if (exited || NowMs() >= deadline) return std::nullopt;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
  }

  // Waits for the exit; kills at the deadline. Returns the exit code, or -1
  // when killed.
  int Wait(int timeout_ms) {
    const int64_t deadline = NowMs() + timeout_ms;
    while (Running() && NowMs() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    if (Running()) Kill(SIGKILL);
    return exit_code_;
  }

  // SIGTERM, then SIGKILL if it has not exited within `grace_ms`.
  void Stop(int grace_ms) {
    if (!Running()) return;
    kill(pid_, SIGTERM);
    const int64_t deadline = NowMs() + grace_ms;
    while (Running() && NowMs() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    Kill(SIGKILL);
  }

  // Everything the child has written to stdout so far.
  std::string output() const {
    std::ifstream in(stdout_path_);
    std::stringstream text;
    text << in.rdbuf();
    return text.str();
  }

 private:
  Child(pid_t pid, std::string stdout_path)
      : pid_(pid), stdout_path_(std::move(stdout_path)) {}

  // Reaps the child when it has exited.
  bool Running() {
    if (pid_ <= 0) return false;
    int status = 0;
    if (waitpid(pid_, &status, WNOHANG) != pid_) return true;
    exit_code_ = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    pid_ = -1;
    return false;
  }

  void Kill(int sig) {
    if (pid_ <= 0) return;
    kill(pid_, sig);
    waitpid(pid_, nullptr, 0);
    pid_ = -1;
  }

  pid_t pid_;
  const std::string stdout_path_;
  int exit_code_ = -1;
};

class TempDir {
 public:
  TempDir() {
    char tmpl[] = "/tmp/sessiond-client-test-XXXXXX";
    path_ = mkdtemp(tmpl);
  }
  ~TempDir() {
    std::error_code ignored;
    std::filesystem::remove_all(path_, ignored);
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// A sessiond on 127.0.0.1 with a fresh data dir.
class Daemon {
 public:
  // `listen` is "127.0.0.1:<port>"; port 0 lets the daemon pick (it prints
  // the real address on its LISTENING line).
  bool Start(const std::string& listen = "127.0.0.1:0") {
    child_ = Child::Start({SESSIOND_BINARY, "--listen", listen, "--data_dir",
                           dir_.path() + "/data"},
                          dir_.path() + "/sessiond.out");
    if (!child_) return false;
    std::optional<std::string> line = child_->WaitForLine("LISTENING ", 30000);
    if (!line) return false;
    address_ = line->substr(std::string("LISTENING ").size());
    while (!address_.empty() && isspace(address_.back())) address_.pop_back();
    return true;
  }
  void Stop() {
    if (child_) child_->Stop(10000);
    child_.reset();
  }
  ~Daemon() { Stop(); }
  const std::string& address() const { return address_; }

 private:
  TempDir dir_;
  std::unique_ptr<Child> child_;
  std::string address_;
};

class ClientTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(daemon_.Start()) << "sessiond did not print LISTENING";
    client_ = SessionClient::Connect(daemon_.address());
  }

  v1::CreateSessionResponse CreateOrDie(const std::string& user) {
    v1::CreateSessionRequest request;
    request.set_user_id(user);
    request.set_ttl_ms(3'600'000);
    (*request.mutable_attributes())["role"] = "admin";
    (*request.mutable_attributes())["blob"] = std::string("\x00\xff\x01", 3);
    request.mutable_client()->set_device("laptop");
    absl::StatusOr<v1::CreateSessionResponse> created =
        client_->CreateSession(request);
    EXPECT_TRUE(created.ok()) << created.status();
    return created.ok() ? *created : v1::CreateSessionResponse();
  }

  Daemon daemon_;
  std::unique_ptr<SessionClient> client_;
};

TEST_F(ClientTest, CreateValidateRevoke) {
  v1::CreateSessionResponse created = CreateOrDie("alice");
  ASSERT_FALSE(created.token().empty());
  ASSERT_FALSE(created.session().session_id().empty());

  absl::StatusOr<v1::ValidateSessionResponse> valid =
      client_->Validate(created.token());
  ASSERT_TRUE(valid.ok()) << valid.status();
  EXPECT_EQ(valid->outcome(), v1::ValidateSessionResponse::VALID);
  EXPECT_EQ(valid->session().user_id(), "alice");
  EXPECT_EQ(valid->session().session_id(), created.session().session_id());
  EXPECT_EQ(valid->session().attributes().at("role"), "admin");
  EXPECT_EQ(valid->session().attributes().at("blob"),
            std::string("\x00\xff\x01", 3));

  v1::RevokeSessionRequest revoke;
  revoke.set_token(created.token());
  revoke.set_reason("logout");
  absl::StatusOr<v1::RevokeSessionResponse> revoked =
      client_->RevokeSession(revoke);
  ASSERT_TRUE(revoked.ok()) << revoked.status();

  absl::StatusOr<v1::ValidateSessionResponse> after =
      client_->Validate(created.token());
  ASSERT_TRUE(after.ok()) << after.status();
  EXPECT_EQ(after->outcome(), v1::ValidateSessionResponse::REVOKED);

  absl::StatusOr<v1::ValidateSessionResponse> garbage =
      client_->Validate("no-such-token");
  ASSERT_TRUE(garbage.ok()) << garbage.status();
  EXPECT_EQ(garbage->outcome(), v1::ValidateSessionResponse::UNKNOWN);
}

TEST_F(ClientTest, ListAndRevokeEverywhereElse) {
  v1::CreateSessionResponse keep = CreateOrDie("bob");
  v1::CreateSessionResponse other1 = CreateOrDie("bob");
  v1::CreateSessionResponse other2 = CreateOrDie("bob");

  v1::ListUserSessionsRequest list;
  list.set_user_id("bob");
  absl::StatusOr<v1::ListUserSessionsResponse> listed =
      client_->ListUserSessions(list);
  ASSERT_TRUE(listed.ok()) << listed.status();
  EXPECT_EQ(listed->sessions_size(), 3);

  v1::RevokeUserSessionsRequest everywhere;
  everywhere.set_user_id("bob");
  everywhere.set_keep_session_id(keep.session().session_id());
  absl::StatusOr<v1::RevokeUserSessionsResponse> count =
      client_->RevokeUserSessions(everywhere);
  ASSERT_TRUE(count.ok()) << count.status();
  EXPECT_EQ(count->revoked_count(), 2u);

  EXPECT_EQ(client_->Validate(keep.token())->outcome(),
            v1::ValidateSessionResponse::VALID);
  EXPECT_EQ(client_->Validate(other1.token())->outcome(),
            v1::ValidateSessionResponse::REVOKED);
  EXPECT_EQ(client_->Validate(other2.token())->outcome(),
            v1::ValidateSessionResponse::REVOKED);
}

TEST_F(ClientTest, UpdateVersionMismatchIsAbortedAndNotRetried) {
  v1::CreateSessionResponse created = CreateOrDie("carol");
  v1::UpdateSessionRequest update;
  update.set_token(created.token());
  update.set_expected_version(created.session().version());
  (*update.mutable_set_attributes())["theme"] = "dark";
  absl::StatusOr<v1::UpdateSessionResponse> updated =
      client_->UpdateSession(update);
  ASSERT_TRUE(updated.ok()) << updated.status();
  EXPECT_EQ(updated->session().version(), created.session().version() + 1);

  const uint64_t attempts_before = client_->stats().attempts;
  absl::StatusOr<v1::UpdateSessionResponse> stale =
      client_->UpdateSession(update);  // Same expected_version: now stale.
  EXPECT_EQ(stale.status().code(), absl::StatusCode::kAborted)
      << stale.status();
  EXPECT_EQ(client_->stats().attempts, attempts_before + 1);
}

TEST_F(ClientTest, BatchAndStreamValidate) {
  v1::CreateSessionResponse a = CreateOrDie("dave");
  v1::BatchValidateSessionsRequest batch;
  batch.add_requests()->set_token(a.token());
  batch.add_requests()->set_token("garbage");
  absl::StatusOr<v1::BatchValidateSessionsResponse> answers =
      client_->BatchValidateSessions(batch);
  ASSERT_TRUE(answers.ok()) << answers.status();
  ASSERT_EQ(answers->responses_size(), 2);
  EXPECT_EQ(answers->responses(0).outcome(),
            v1::ValidateSessionResponse::VALID);
  EXPECT_EQ(answers->responses(1).outcome(),
            v1::ValidateSessionResponse::UNKNOWN);

  std::unique_ptr<ValidateStream> stream = client_->OpenValidateStream();
  for (int i = 0; i < 5; ++i) {
    v1::ValidateSessionRequest request;
    request.set_token(i % 2 == 0 ? a.token() : "garbage");
    absl::StatusOr<v1::ValidateSessionResponse> answer =
        stream->Validate(request);
    ASSERT_TRUE(answer.ok()) << answer.status();
    EXPECT_EQ(answer->outcome(), i % 2 == 0
                                     ? v1::ValidateSessionResponse::VALID
                                     : v1::ValidateSessionResponse::UNKNOWN);
  }
  EXPECT_TRUE(stream->Close().ok());
}

TEST(GrpcStatusTest, CodesAndMessagesPassThrough) {
  EXPECT_TRUE(FromGrpcStatus(grpc::Status::OK).ok());
  absl::Status unavailable =
      FromGrpcStatus(grpc::Status(grpc::StatusCode::UNAVAILABLE, "no quorum"));
  EXPECT_EQ(unavailable.code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(unavailable.message(), "no quorum");
  EXPECT_EQ(FromGrpcStatus(grpc::Status(grpc::StatusCode::ABORTED, "v")).code(),
            absl::StatusCode::kAborted);
  EXPECT_EQ(FromGrpcStatus(grpc::Status(grpc::StatusCode::UNAUTHENTICATED, ""))
                .code(),
            absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(FromGrpcStatus(grpc::Status(static_cast<grpc::StatusCode>(99), ""))
                .code(),
            absl::StatusCode::kUnknown);
}

SessionClientOptions FastRetries(int attempts) {
  SessionClientOptions options;
  options.max_attempts = attempts;
  options.initial_backoff = absl::Milliseconds(1);
  options.max_backoff = absl::Milliseconds(5);
  options.deadline = absl::Seconds(2);
  return options;
}

// The store not answering must never look like "logged out".
TEST(ClientUnavailableTest, ValidateAgainstClosedPortIsUnavailableNotUnknown) {
  const std::string target = absl::StrCat("127.0.0.1:", ClosedPort());
  auto client = SessionClient::Connect(target, FastRetries(3));

  absl::StatusOr<v1::ValidateSessionResponse> answer =
      client->Validate("some-token");
  ASSERT_FALSE(answer.ok()) << "got outcome " << answer->outcome();
  EXPECT_EQ(answer.status().code(), absl::StatusCode::kUnavailable)
      << answer.status();
  EXPECT_EQ(client->stats().attempts, 3u);
  EXPECT_EQ(client->stats().retries, 2u);

  v1::BatchValidateSessionsRequest batch;
  batch.add_requests()->set_token("some-token");
  EXPECT_EQ(client->BatchValidateSessions(batch).status().code(),
            absl::StatusCode::kUnavailable);
  EXPECT_EQ(client->stats().attempts, 6u);
}

TEST(ClientUnavailableTest, NonIdempotentCallsAreNotRetried) {
  const std::string target = absl::StrCat("127.0.0.1:", ClosedPort());
  auto client = SessionClient::Connect(target, FastRetries(5));

  v1::CreateSessionRequest create;
  create.set_user_id("erin");
  EXPECT_EQ(client->CreateSession(create).status().code(),
            absl::StatusCode::kUnavailable);
  EXPECT_EQ(client->stats().attempts, 1u);

  v1::TouchSessionRequest touch;
  touch.set_token("t");
  EXPECT_EQ(client->TouchSession(touch).status().code(),
            absl::StatusCode::kUnavailable);
  v1::UpdateSessionRequest update;
  update.set_token("t");
  EXPECT_EQ(client->UpdateSession(update).status().code(),
            absl::StatusCode::kUnavailable);
  // A RevokeUser retried after a lost reply would also revoke sessions
  // created in between: attempted once.
  v1::RevokeUserSessionsRequest revoke_user;
  revoke_user.set_user_id("erin");
  EXPECT_EQ(client->RevokeUserSessions(revoke_user).status().code(),
            absl::StatusCode::kUnavailable);
  EXPECT_EQ(client->stats().attempts, 4u);
  EXPECT_EQ(client->stats().retries, 0u);

  // The idempotent ones are retried up to max_attempts.
  v1::RevokeSessionRequest revoke;
  revoke.set_session_id("s");
  EXPECT_EQ(client->RevokeSession(revoke).status().code(),
            absl::StatusCode::kUnavailable);
  EXPECT_EQ(client->stats().attempts, 9u);
}

// A Validate started while the server is down succeeds once it comes up,
// because the client retries it.
TEST(ClientRetryTest, ValidateRetriesUntilTheServerStarts) {
  const int port = ClosedPort();
  const std::string target = absl::StrCat("127.0.0.1:", port);
  grpc::ChannelArguments args;
  // Reconnect quickly so the retries, not gRPC's own 1 s reconnect backoff,
  // decide when the call gets through.
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 50);
  args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, 50);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 200);
  SessionClientOptions options;
  options.max_attempts = 60;
  options.initial_backoff = absl::Milliseconds(50);
  options.max_backoff = absl::Milliseconds(250);
  SessionClient client(grpc::CreateCustomChannel(
                           target, grpc::InsecureChannelCredentials(), args),
                       options);

  absl::StatusOr<v1::ValidateSessionResponse> answer;
  std::thread caller([&] { answer = client.Validate("garbage-token"); });
  // Start the daemon only after the first attempt has failed.
  for (int i = 0; i < 500 && client.stats().retries == 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  Daemon daemon;
  const bool started = daemon.Start(target);
  caller.join();
  ASSERT_TRUE(started) << "sessiond did not start on " << target;
  ASSERT_TRUE(answer.ok()) << answer.status();
  EXPECT_EQ(answer->outcome(), v1::ValidateSessionResponse::UNKNOWN);
  EXPECT_GE(client.stats().retries, 1u);
}

// sessiond-bench runs end to end and reports a throughput line.
TEST_F(ClientTest, BenchSmoke) {
  struct Case {
    std::vector<std::string> args;
    std::vector<std::string> expect;  // substrings of stdout
  };
  const std::vector<std::string> text = {"throughput:", "errors: none"};
  const std::vector<Case> cases = {
      {{"--mode", "unary", "--ops", "create:1,validate:8,touch:1"}, text},
      {{"--mode", "echo"}, text},
      {{"--mode", "batch", "--batch", "4"}, text},
      {{"--mode", "stream"}, text},
      {{"--mode", "unary", "--rate", "2000"}, text},
      {{"--mode", "unary", "--ops", "create:1", "--sweep", "1,4"},
       {"concurrency=1 ", "concurrency=4 ", "throughput:"}},
      {{"--mode", "unary", "--json"}, {"\"ops_per_s\"", "\"errors\": {}"}},
  };
  for (const Case& c : cases) {
    std::vector<std::string> argv = {SESSIOND_BENCH_BINARY,
                                     "--target",
                                     daemon_.address(),
                                     "--count",
                                     "200",
                                     "--concurrency",
                                     "8",
                                     "--preload",
                                     "50",
                                     "--timeout_s",
                                     "60"};
    argv.insert(argv.end(), c.args.begin(), c.args.end());
    const std::string what = absl::StrJoin(c.args, " ");
    TempDir out;
    std::unique_ptr<Child> bench =
        Child::Start(argv, out.path() + "/bench.out");
    ASSERT_NE(bench, nullptr);
    const int code = bench->Wait(120000);
    const std::string output = bench->output();
    EXPECT_EQ(code, 0) << what << ":\n" << output;
    for (const std::string& expected : c.expect) {
      EXPECT_THAT(output, HasSubstr(expected)) << what << ":\n" << output;
    }
  }
}

}  // namespace
}  // namespace sessiond::client
