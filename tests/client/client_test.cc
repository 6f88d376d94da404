// Copyright sessiond authors. Licensed under the Apache License 2.0.
//
// The C++ client against the real sessiond binary (SESSIOND_BINARY) on
// 127.0.0.1, and a smoke run of sessiond-bench (SESSIOND_BENCH_BINARY).

#include <arpa/inet.h>
#include <fcntl.h>
#include <grpcpp/create_channel.h>
#include <grpcpp/security/credentials.h>
#include <grpcpp/security/server_credentials.h>
#include <grpcpp/server.h>
#include <grpcpp/server_builder.h>
#include <grpcpp/support/channel_arguments.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <deque>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "client/grpc_status.h"
#include "client/session_client.h"
#include "gmock/gmock.h"
#include "google/rpc/error_details.pb.h"
#include "google/rpc/status.pb.h"
#include "gtest/gtest.h"
#include "sessiond/v1/admin.grpc.pb.h"
#include "tests/integration/sessiond_process.h"

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

// `n` distinct ports nobody listens on right now (all bound at once, so no
// two are the same, then closed).
std::vector<int> ClosedPorts(int n) {
  std::vector<int> fds;
  std::vector<int> ports;
  for (int i = 0; i < n; ++i) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = 0;
    EXPECT_EQ(bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
    socklen_t len = sizeof(addr);
    getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
    fds.push_back(fd);
    ports.push_back(ntohs(addr.sin_port));
  }
  for (int fd : fds) close(fd);
  return ports;
}

// A TCP listener that never accepts: connections complete in the kernel's
// backlog, but no HTTP/2 handshake ever comes back, so a channel to it
// stays CONNECTING and a call to it runs into its deadline.
class SilentListener {
 public:
  SilentListener() {
    fd_ = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = 0;
    EXPECT_EQ(bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
    EXPECT_EQ(listen(fd_, 64), 0);
    socklen_t len = sizeof(addr);
    getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &len);
    port_ = ntohs(addr.sin_port);
  }
  ~SilentListener() { close(fd_); }
  SilentListener(const SilentListener&) = delete;
  SilentListener& operator=(const SilentListener&) = delete;

  std::string address() const { return absl::StrCat("127.0.0.1:", port_); }

 private:
  int fd_ = -1;
  int port_ = 0;
};

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

  // Sends `sig` and returns at once.
  void Signal(int sig) {
    if (pid_ > 0) kill(pid_, sig);
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
  // SIGKILL: the process and its sockets are gone at once.
  void Kill() { child_.reset(); }
  // SIGTERM without waiting: the node drains, then exits.
  void Terminate() {
    if (child_) child_->Signal(SIGTERM);
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

// A node draining at shutdown refuses each new call at the door, before
// anything is proposed ("shutting down; retry (another node)"). A create it
// refused was not sent and says so (IsNotSent), so the client may try it on
// another node and the caller knows nothing was created. It used to come
// back as an unknown outcome.
TEST_F(ClientTest, AWriteADrainingNodeRefusedIsNotSent) {
  CreateOrDie("before");
  SessionClientOptions options;
  options.call_timeout = absl::Milliseconds(300);
  // Each refusal straight back to the loop, whose next create follows at
  // once: the node drains until no caller was refused for 100 ms, and the
  // client's own backoff between attempts could outlast that.
  options.max_attempts = 1;
  std::unique_ptr<SessionClient> client =
      SessionClient::Connect(daemon_.address(), options);
  daemon_.Terminate();
  int refused = 0;
  const int64_t deadline = NowMs() + 20000;
  for (int i = 0; i < 1000 && refused < 5 && NowMs() < deadline; ++i) {
    v1::CreateSessionRequest request;
    request.set_user_id("during");
    absl::StatusOr<v1::CreateSessionResponse> created =
        client->CreateSession(request);
    if (created.ok()) continue;
    const absl::string_view message = created.status().message();
    if (!absl::StartsWith(message, "shutting down") ||
        absl::StrContains(message, "may still apply")) {
      // A create the server's gRPC cancelled as it stopped, or one the
      // drain abandoned after proposing it, may apply: the client rightly
      // calls its outcome unknown. Past the drain the node is gone.
      if (refused > 0) break;
      continue;
    }
    ++refused;
    EXPECT_TRUE(IsNotSent(created.status())) << created.status();
  }
  EXPECT_GT(refused, 0) << "the node never refused a create while draining";
}

// `threads` callers, each making `per_thread` creates one after another
// (user "<user_prefix><thread>", attribute i = its number) through
// `client`: every token, or the test failed.
std::vector<std::vector<std::string>> CreateConcurrently(
    SessionClient* client, int threads, int per_thread,
    const std::string& user_prefix) {
  std::vector<std::vector<std::string>> tokens(threads);
  std::vector<std::thread> callers;
  for (int t = 0; t < threads; ++t) {
    callers.emplace_back([&, t] {
      const std::string user = absl::StrCat(user_prefix, t);
      for (int i = 0; i < per_thread; ++i) {
        v1::CreateSessionRequest request;
        request.set_user_id(user);
        (*request.mutable_attributes())["i"] = absl::StrCat(i);
        absl::StatusOr<v1::CreateSessionResponse> created =
            client->CreateSession(request);
        ASSERT_TRUE(created.ok()) << created.status();
        EXPECT_EQ(created->session().user_id(), user);
        EXPECT_EQ(created->session().attributes().at("i"), absl::StrCat(i));
        tokens[t].push_back(created->token());
      }
    });
  }
  for (std::thread& t : callers) t.join();
  return tokens;
}

// More callers waiting than one batch takes: whichever caller's turn it is
// sends its own create with the oldest others. It used to send the oldest
// ones only, leave its own queued (a pointer to its stack frame) and
// answer UNKNOWN "not sent".
TEST_F(ClientTest, CoalescedCreatesBeyondOneBatchAllGetTheirSession) {
  SessionClientOptions options;
  options.coalesce_creates = true;
  options.max_coalesced_creates = 2;
  auto client = SessionClient::Connect(daemon_.address(), options);
  constexpr int kThreads = 12;
  constexpr int kPerThread = 10;
  std::set<std::string> distinct;
  for (const auto& mine :
       CreateConcurrently(client.get(), kThreads, kPerThread, "many-")) {
    distinct.insert(mine.begin(), mine.end());
  }
  EXPECT_EQ(distinct.size(), static_cast<size_t>(kThreads * kPerThread));
}

// coalesce_creates: concurrent CreateSession calls share CreateSessions
// calls, and every caller gets its own session; an invalid one fails alone.
TEST_F(ClientTest, ConcurrentCreatesAreCoalesced) {
  SessionClientOptions options;
  options.coalesce_creates = true;
  auto client = SessionClient::Connect(daemon_.address(), options);
  constexpr int kThreads = 16;
  constexpr int kPerThread = 25;
  const std::vector<std::vector<std::string>> tokens =
      CreateConcurrently(client.get(), kThreads, kPerThread, "co-");
  std::vector<std::thread> threads;
  std::set<std::string> distinct;
  for (const auto& mine : tokens) {
    for (const std::string& token : mine) {
      distinct.insert(token);
      absl::StatusOr<v1::ValidateSessionResponse> v = client->Validate(token);
      ASSERT_TRUE(v.ok()) << v.status();
      EXPECT_EQ(v->outcome(), v1::ValidateSessionResponse::VALID);
    }
  }
  EXPECT_EQ(distinct.size(), static_cast<size_t>(kThreads * kPerThread));
  const SessionClient::Stats stats = client->stats();
  // Sixteen callers at once against fsynced writes: some shared a call.
  EXPECT_GT(stats.coalesced_batches, 0u);
  EXPECT_GT(stats.coalesced_creates, stats.coalesced_batches);

  // A bad request among good ones fails only its own call.
  std::vector<absl::Status> results(8);
  threads.clear();
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] {
      v1::CreateSessionRequest request;
      if (t != 3) request.set_user_id("good");
      results[t] = client->CreateSession(request).status();
    });
  }
  for (std::thread& t : threads) t.join();
  for (int t = 0; t < 8; ++t) {
    EXPECT_EQ(results[t].code(), t == 3 ? absl::StatusCode::kInvalidArgument
                                        : absl::StatusCode::kOk)
        << t << ": " << results[t];
  }
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
  // A code no gRPC version defines, yet a value the enum can hold (99
  // cannot: UBSan reports the load).
  EXPECT_EQ(FromGrpcStatus(grpc::Status(static_cast<grpc::StatusCode>(20), ""))
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

// Against a closed port no channel ever connects, so a non-idempotent call
// is never sent, and says so: the write certainly did not happen. (That one
// that was sent is attempted once is ClientFakeServerTest's business.)
TEST(ClientUnavailableTest, NonIdempotentCallsAreNeverSentOverADeadChannel) {
  const std::string target = absl::StrCat("127.0.0.1:", ClosedPort());
  auto client = SessionClient::Connect(target, FastRetries(5));

  v1::CreateSessionRequest create;
  create.set_user_id("erin");
  absl::Status created = client->CreateSession(create).status();
  EXPECT_EQ(created.code(), absl::StatusCode::kUnavailable) << created;
  EXPECT_TRUE(IsNotSent(created)) << created;

  v1::UpdateSessionRequest update;
  update.set_token("t");
  absl::Status updated = client->UpdateSession(update).status();
  EXPECT_TRUE(IsNotSent(updated)) << updated;
  v1::RevokeUserSessionsRequest revoke_user;
  revoke_user.set_user_id("erin");
  absl::Status revoked_user = client->RevokeUserSessions(revoke_user).status();
  EXPECT_TRUE(IsNotSent(revoked_user)) << revoked_user;
  EXPECT_EQ(client->stats().attempts, 0u);
  EXPECT_GE(client->stats().endpoints_skipped, 3u);

  // The idempotent ones are attempted whatever the channel state, and
  // retried up to max_attempts; gRPC fails each before it leaves (no
  // connection to pick), so the answer still says "not sent".
  v1::RevokeSessionRequest revoke;
  revoke.set_session_id("s");
  absl::Status revoked = client->RevokeSession(revoke).status();
  EXPECT_EQ(revoked.code(), absl::StatusCode::kUnavailable) << revoked;
  EXPECT_TRUE(IsNotSent(revoked)) << revoked;
  EXPECT_EQ(client->stats().attempts, 5u);
  v1::TouchSessionRequest touch;
  touch.set_token("t");
  absl::Status touched = client->TouchSession(touch).status();
  EXPECT_TRUE(IsNotSent(touched)) << touched;
  EXPECT_EQ(client->stats().attempts, 10u);
}

// Validates through a channel with `args` while no server listens, and
// starts one once the first attempt has failed: the call retries.
void ValidateAcrossAServerStart(const grpc::ChannelArguments& args,
                                absl::Duration call_timeout) {
  // Not an ephemeral port (ClosedPort): until the server binds it, an
  // outgoing connection could be given it as its source port.
  const int port = ::sessiond::testing::PickFreePort();
  const std::string target = absl::StrCat("127.0.0.1:", port);
  SessionClientOptions options;
  options.max_attempts = 60;
  options.initial_backoff = absl::Milliseconds(50);
  options.max_backoff = absl::Milliseconds(250);
  options.call_timeout = call_timeout;
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

// A Validate started while the server is down succeeds once it comes up,
// because the client retries it.
TEST(ClientRetryTest, ValidateRetriesUntilTheServerStarts) {
  grpc::ChannelArguments args;
  // Reconnect quickly so the retries, not gRPC's own 1 s reconnect backoff,
  // decide when the call gets through.
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 50);
  args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, 50);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 200);
  ValidateAcrossAServerStart(args, absl::Seconds(60));
}

// The same through a channel whose reconnect backoff has grown to a minute
// (gRPC's grows to 120 s by default over an outage): a retry connects at
// once. It waited out gRPC's backoff, so a client stayed down for minutes
// after the cluster came back.
TEST(ClientRetryTest, ARetryConnectsAtOnceWhateverGrpcsReconnectBackoff) {
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 60 * 1000);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 60 * 1000);
  ValidateAcrossAServerStart(args, absl::Seconds(30));
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
      // Batched creates: ops count sessions; the fsyncs come from
      // ClusterStatus (a single node answers it too).
      {{"--mode", "unary", "--ops", "create:1", "--create_batch", "8"},
       {"create_batch=8", "errors: none",
        "fsyncs per acknowledged write:", "(200 writes in 25 calls"}},
      {{"--mode", "unary", "--ops", "validate:1,update:1", "--consistency",
        "linearizable"},
       {"consistency=linearizable", "errors: none", "outcomes: VALID="}},
      {{"--mode", "batch", "--batch", "4", "--consistency", "local"},
       {"consistency=local", "errors: none"}},
      {{"--mode", "stream", "--consistency", "local"},
       {"consistency=local", "errors: none"}},
      // Through the client library, creates coalesced.
      {{"--mode", "client", "--ops", "create:1,validate:1,touch:1",
        "--coalesce"},
       {"mode=client", "coalesce=on", "errors: none", "client library:"}},
      {{"--mode", "client", "--ops", "create:1", "--create_batch", "4"},
       {"mode=client", "create_batch=4", "errors: none"}},
      // Cluster mode against one node: it leads, so writes and reads go
      // there.
      {{"--targets", "", "--ops", "create:1,validate:1", "--read_from",
        "leader"},
       {"cluster: 1 members, node 1 leads", "errors: none",
        "fsyncs of the Raft log"}},
  };
  for (const Case& c : cases) {
    std::vector<std::string> argv = {SESSIOND_BENCH_BINARY,
                                     "--count",
                                     "200",
                                     "--concurrency",
                                     "8",
                                     "--preload",
                                     "50",
                                     "--timeout_s",
                                     "60"};
    std::vector<std::string> args = c.args;
    if (args[0] == "--targets") {
      args[1] = daemon_.address();
    } else {
      argv.insert(argv.end(), {"--target", daemon_.address()});
    }
    argv.insert(argv.end(), args.begin(), args.end());
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

// ---------------------------------------------------------------------------
// Routing and retries against fake servers: exactly what reached each one.

// An in-process SessionService that answers as the test says and counts the
// calls that reach it.
//
// Thread-safe.
class FakeSessionService final : public v1::SessionService::Service {
 public:
  struct Answer {
    grpc::StatusCode code = grpc::StatusCode::OK;
    std::string leader;         // "sessiond-leader" trailing metadata, when set
    std::string leader_id;      // "sessiond-leader-id", when set
    bool not_proposed = false;  // "sessiond-not-proposed: 1"
    // With an error: the server's google.rpc.ErrorInfo (domain
    // sessiond.dev) with this reason, when set.
    std::string reason;
    // How long the answer takes (bounded by the test).
    absl::Duration delay = absl::ZeroDuration();
    // With a reason: a google.rpc.RetryInfo with this delay, when set.
    absl::Duration retry_delay = absl::ZeroDuration();
  };

  // Answers for the next calls, in order; `fallback` once they are used.
  void Push(Answer answer) {
    absl::MutexLock lock(&mu_);
    queued_.push_back(std::move(answer));
  }
  void SetFallback(Answer answer) {
    absl::MutexLock lock(&mu_);
    fallback_ = std::move(answer);
  }
  int calls(const std::string& method) {
    absl::MutexLock lock(&mu_);
    return calls_[method];
  }
  // The request_ids of the CreateSession calls received, in order.
  std::vector<std::string> request_ids() {
    absl::MutexLock lock(&mu_);
    return request_ids_;
  }
  // Each CreateSessions and ValidateSession answer carries this many bytes
  // of attributes.
  void SetReplyPadding(size_t bytes) {
    absl::MutexLock lock(&mu_);
    reply_padding_ = bytes;
  }

  grpc::Status CreateSession(grpc::ServerContext* context,
                             const v1::CreateSessionRequest* request,
                             v1::CreateSessionResponse* response) override {
    {
      absl::MutexLock lock(&mu_);
      request_ids_.push_back(request->request_id());
    }
    return Handle("CreateSession", context,
                  [&] { response->set_token("fake-token"); });
  }
  grpc::Status CreateSessions(grpc::ServerContext* context,
                              const v1::CreateSessionsRequest* request,
                              v1::CreateSessionsResponse* response) override {
    size_t padding;
    {
      absl::MutexLock lock(&mu_);
      padding = reply_padding_;
    }
    return Handle("CreateSessions", context, [&] {
      for (int i = 0; i < request->requests_size(); ++i) {
        auto* created = response->add_responses();
        created->set_token(absl::StrCat("fake-token-", i));
        // As a server's: the record carries the request's attributes.
        *created->mutable_session()->mutable_attributes() =
            request->requests(i).attributes();
      }
      if (padding > 0 && response->responses_size() > 0) {
        (*response->mutable_responses(0)
              ->mutable_session()
              ->mutable_attributes())["pad"] = std::string(padding, 'x');
      }
    });
  }
  grpc::Status ValidateSession(grpc::ServerContext* context,
                               const v1::ValidateSessionRequest*,
                               v1::ValidateSessionResponse* response) override {
    size_t padding;
    {
      absl::MutexLock lock(&mu_);
      padding = reply_padding_;
    }
    return Handle("ValidateSession", context, [&] {
      response->set_outcome(v1::ValidateSessionResponse::UNKNOWN);
      if (padding > 0) {
        (*response->mutable_session()->mutable_attributes())["pad"] =
            std::string(padding, 'x');
      }
    });
  }
  // Answers each request in order with its request_id (VALID for the
  // token "good", else UNKNOWN); with SetStrayStreamAnswer, the first answer
  // of each stream is preceded by one for a request never sent.
  grpc::Status StreamValidateSessions(
      grpc::ServerContext*,
      grpc::ServerReaderWriter<v1::ValidateSessionResponse,
                               v1::ValidateSessionRequest>* stream) override {
    bool stray;
    bool silent;
    {
      absl::MutexLock lock(&mu_);
      stray = stray_stream_answer_;
      silent = silent_stream_;
    }
    v1::ValidateSessionRequest request;
    while (stream->Read(&request)) {
      if (silent) return grpc::Status::OK;  // ends without answering
      if (stray) {
        v1::ValidateSessionResponse wrong;
        wrong.set_request_id(request.request_id() + 100);
        stream->Write(wrong);
        stray = false;
      }
      v1::ValidateSessionResponse response;
      response.set_request_id(request.request_id());
      response.set_outcome(request.token() == "good"
                               ? v1::ValidateSessionResponse::VALID
                               : v1::ValidateSessionResponse::UNKNOWN);
      stream->Write(response);
    }
    return grpc::Status::OK;
  }
  void SetStrayStreamAnswer(bool stray) {
    absl::MutexLock lock(&mu_);
    stray_stream_answer_ = stray;
  }
  // Streams end cleanly at their first request, unanswered.
  void SetSilentStream(bool silent) {
    absl::MutexLock lock(&mu_);
    silent_stream_ = silent;
  }
  grpc::Status BatchValidateSessions(
      grpc::ServerContext* context, const v1::BatchValidateSessionsRequest*,
      v1::BatchValidateSessionsResponse*) override {
    return Handle("BatchValidateSessions", context, [] {});
  }
  grpc::Status TouchSession(grpc::ServerContext* context,
                            const v1::TouchSessionRequest*,
                            v1::TouchSessionResponse*) override {
    return Handle("TouchSession", context, [] {});
  }
  grpc::Status UpdateSession(grpc::ServerContext* context,
                             const v1::UpdateSessionRequest*,
                             v1::UpdateSessionResponse*) override {
    return Handle("UpdateSession", context, [] {});
  }
  grpc::Status RevokeSession(grpc::ServerContext* context,
                             const v1::RevokeSessionRequest*,
                             v1::RevokeSessionResponse*) override {
    return Handle("RevokeSession", context, [] {});
  }
  grpc::Status ListUserSessions(grpc::ServerContext* context,
                                const v1::ListUserSessionsRequest*,
                                v1::ListUserSessionsResponse*) override {
    return Handle("ListUserSessions", context, [] {});
  }
  grpc::Status RevokeUserSessions(grpc::ServerContext* context,
                                  const v1::RevokeUserSessionsRequest*,
                                  v1::RevokeUserSessionsResponse*) override {
    return Handle("RevokeUserSessions", context, [] {});
  }

 private:
  template <typename Fill>
  grpc::Status Handle(const std::string& method, grpc::ServerContext* context,
                      Fill fill) {
    Answer answer;
    {
      absl::MutexLock lock(&mu_);
      ++calls_[method];
      if (queued_.empty()) {
        answer = fallback_;
      } else {
        answer = std::move(queued_.front());
        queued_.pop_front();
      }
    }
    if (!answer.leader.empty()) {
      context->AddTrailingMetadata("sessiond-leader", answer.leader);
    }
    if (!answer.leader_id.empty()) {
      context->AddTrailingMetadata("sessiond-leader-id", answer.leader_id);
    }
    if (answer.not_proposed) {
      context->AddTrailingMetadata("sessiond-not-proposed", "1");
    }
    absl::SleepFor(answer.delay);
    if (answer.code != grpc::StatusCode::OK) {
      if (answer.reason.empty()) {
        return grpc::Status(answer.code, absl::StrCat("fake ", method));
      }
      google::rpc::ErrorInfo info;
      info.set_reason(answer.reason);
      info.set_domain("sessiond.dev");
      google::rpc::Status details;
      details.set_code(static_cast<int>(answer.code));
      details.add_details()->PackFrom(info);
      if (answer.retry_delay > absl::ZeroDuration()) {
        google::rpc::RetryInfo retry;
        retry.mutable_retry_delay()->set_nanos(
            static_cast<int32_t>(absl::ToInt64Nanoseconds(answer.retry_delay)));
        details.add_details()->PackFrom(retry);
      }
      return grpc::Status(answer.code, absl::StrCat("fake ", method),
                          details.SerializeAsString());
    }
    fill();
    return grpc::Status::OK;
  }

  absl::Mutex mu_;
  std::deque<Answer> queued_ ABSL_GUARDED_BY(mu_);
  Answer fallback_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, int> calls_ ABSL_GUARDED_BY(mu_);
  std::vector<std::string> request_ids_ ABSL_GUARDED_BY(mu_);
  size_t reply_padding_ ABSL_GUARDED_BY(mu_) = 0;
  bool stray_stream_answer_ ABSL_GUARDED_BY(mu_) = false;
  bool silent_stream_ ABSL_GUARDED_BY(mu_) = false;
};

// A FakeSessionService served on 127.0.0.1 with a free port.
class FakeServer {
 public:
  // `max_receive_bytes`: the server's request size limit (-1: gRPC's).
  // `any_ping_rate`: take client pings however frequent, with or without
  // data, instead of answering them with GOAWAY (too_many_pings), which
  // closes the connection.
  // `max_streams`: calls one connection may carry at once (0: gRPC's).
  explicit FakeServer(int max_receive_bytes = -1, bool any_ping_rate = false,
                      int max_streams = 0) {
    grpc::ServerBuilder builder;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(),
                             &port_);
    if (max_streams > 0) {
      builder.AddChannelArgument(GRPC_ARG_MAX_CONCURRENT_STREAMS, max_streams);
    }
    if (max_receive_bytes >= 0) {
      builder.SetMaxReceiveMessageSize(max_receive_bytes);
    }
    if (any_ping_rate) {
      builder.AddChannelArgument(
          GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS, 0);
      builder.AddChannelArgument(GRPC_ARG_HTTP2_MAX_PING_STRIKES, 0);
    }
    builder.RegisterService(&service_);
    server_ = builder.BuildAndStart();
    EXPECT_NE(server_, nullptr);
    EXPECT_NE(port_, 0);
  }
  ~FakeServer() {
    if (server_) {
      server_->Shutdown(std::chrono::system_clock::now() +
                        std::chrono::seconds(1));
    }
  }
  FakeServer(const FakeServer&) = delete;
  FakeServer& operator=(const FakeServer&) = delete;

  FakeSessionService& service() { return service_; }
  int port() const { return port_; }
  std::string address() const { return absl::StrCat("127.0.0.1:", port_); }

 private:
  FakeSessionService service_;
  int port_ = 0;
  std::unique_ptr<grpc::Server> server_;
};

using Answer = FakeSessionService::Answer;

// An answer with this error code.
Answer Fail(grpc::StatusCode code) {
  Answer answer;
  answer.code = code;
  return answer;
}

// An OK answer naming the leader, as a follower's would.
Answer OkNaming(std::string leader, std::string leader_id) {
  Answer answer;
  answer.leader = std::move(leader);
  answer.leader_id = std::move(leader_id);
  return answer;
}

SessionClientOptions FakeOptions() {
  SessionClientOptions options = FastRetries(4);
  options.call_timeout = absl::Seconds(20);
  return options;
}

v1::CreateSessionRequest CreateRequest(const std::string& user) {
  v1::CreateSessionRequest request;
  request.set_user_id(user);
  request.set_ttl_ms(3'600'000);
  return request;
}

// A write that was sent and failed has an unknown outcome: never resent.
TEST(ClientFakeServerTest, SentWriteThatFailsIsAttemptedOnce) {
  FakeServer server;
  server.service().SetFallback(Fail(grpc::StatusCode::UNAVAILABLE));
  auto client = SessionClient::Connect(server.address(), FakeOptions());

  absl::Status created = client->CreateSession(CreateRequest("a")).status();
  EXPECT_EQ(created.code(), absl::StatusCode::kUnavailable) << created;
  EXPECT_FALSE(IsNotSent(created)) << created;
  v1::UpdateSessionRequest update;
  update.set_token("t");
  EXPECT_EQ(client->UpdateSession(update).status().code(),
            absl::StatusCode::kUnavailable);
  v1::RevokeUserSessionsRequest revoke_user;
  revoke_user.set_user_id("a");
  EXPECT_EQ(client->RevokeUserSessions(revoke_user).status().code(),
            absl::StatusCode::kUnavailable);
  server.service().SetFallback(Fail(grpc::StatusCode::DEADLINE_EXCEEDED));
  EXPECT_EQ(client->CreateSession(CreateRequest("a")).status().code(),
            absl::StatusCode::kDeadlineExceeded);

  EXPECT_EQ(server.service().calls("CreateSession"), 2);
  EXPECT_EQ(server.service().calls("UpdateSession"), 1);
  EXPECT_EQ(server.service().calls("RevokeUserSessions"), 1);
  EXPECT_EQ(client->stats().retries, 0u);

  // The idempotent ones are retried up to max_attempts.
  server.service().SetFallback(Fail(grpc::StatusCode::UNAVAILABLE));
  EXPECT_EQ(client->Validate("t").status().code(),
            absl::StatusCode::kUnavailable);
  EXPECT_EQ(server.service().calls("ValidateSession"), 4);
  v1::RevokeSessionRequest revoke;
  revoke.set_session_id("s");
  EXPECT_EQ(client->RevokeSession(revoke).status().code(),
            absl::StatusCode::kUnavailable);
  EXPECT_EQ(server.service().calls("RevokeSession"), 4);
  v1::TouchSessionRequest touch;
  touch.set_token("t");
  EXPECT_EQ(client->TouchSession(touch).status().code(),
            absl::StatusCode::kUnavailable);
  EXPECT_EQ(server.service().calls("TouchSession"), 4);
}

// TouchSession only moves last_seen_at_ms forward and refuses a revoked or
// expired session, so a touch sent twice does no harm (docs/API.md; the
// published service config retries it too): the client retries it like the
// other idempotent calls, also after an answer that leaves a write's
// outcome unknown.
TEST(ClientFakeServerTest, ATouchIsRetriedLikeTheOtherIdempotentCalls) {
  FakeServer server;
  server.service().Push(Fail(grpc::StatusCode::UNAVAILABLE));
  server.service().Push(Fail(grpc::StatusCode::UNAVAILABLE));
  auto client = SessionClient::Connect(server.address(), FakeOptions());
  v1::TouchSessionRequest touch;
  touch.set_token("t");

  absl::StatusOr<v1::TouchSessionResponse> touched =
      client->TouchSession(touch);
  ASSERT_TRUE(touched.ok()) << touched.status();
  EXPECT_EQ(server.service().calls("TouchSession"), 3);
  EXPECT_EQ(client->stats().retries, 2u);
}

// An answer with this error code and the server's ErrorInfo reason.
Answer FailWithReason(grpc::StatusCode code, std::string reason) {
  Answer answer;
  answer.code = code;
  answer.reason = std::move(reason);
  return answer;
}

// The server's RESOURCE_EXHAUSTED (back-pressure) means it queued nothing:
// even a write goes again, within max_attempts.
TEST(ClientFakeServerTest, ResourceExhaustedWriteIsRetried) {
  FakeServer server;
  const Answer overloaded =
      FailWithReason(grpc::StatusCode::RESOURCE_EXHAUSTED, "OVERLOADED");
  server.service().Push(overloaded);
  server.service().Push(overloaded);
  auto client = SessionClient::Connect(server.address(), FakeOptions());

  absl::StatusOr<v1::CreateSessionResponse> created =
      client->CreateSession(CreateRequest("a"));
  ASSERT_TRUE(created.ok()) << created.status();
  EXPECT_EQ(server.service().calls("CreateSession"), 3);
  EXPECT_EQ(client->stats().retries, 2u);

  server.service().SetFallback(overloaded);
  EXPECT_EQ(client->CreateSession(CreateRequest("a")).status().code(),
            absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(server.service().calls("CreateSession"), 3 + 4);
}

// The server's RetryInfo is the least a retry waits, also when the retry
// goes to another endpoint whose channel connects at once (it would forward
// to the same overloaded leader). A lower bound only: slowness cannot fail
// it.
TEST(ClientFakeServerTest, ARetryWaitsAtLeastTheServersRetryInfo) {
  FakeServer a, b;
  Answer overloaded =
      FailWithReason(grpc::StatusCode::RESOURCE_EXHAUSTED, "OVERLOADED");
  overloaded.retry_delay = absl::Milliseconds(300);
  a.service().SetFallback(overloaded);
  b.service().SetFallback(overloaded);
  SessionClientOptions options = FakeOptions();
  options.max_backoff = absl::Seconds(1);  // caps the server's delay too
  auto client = SessionClient::Connect({a.address(), b.address()}, options);
  const absl::Time start = absl::Now();
  EXPECT_EQ(client->CreateSession(CreateRequest("a")).status().code(),
            absl::StatusCode::kResourceExhausted);
  const absl::Duration took = absl::Now() - start;
  EXPECT_EQ(
      a.service().calls("CreateSession") + b.service().calls("CreateSession"),
      4);
  EXPECT_GE(took, absl::Milliseconds(3 * 300)) << took;
}

// A node that is starting (NO_DATA_YET, RetryInfo 1 s) speaks for itself
// alone: the retry goes to another node without waiting its delay. It
// waited it, and with a call_timeout under that delay the read failed
// though a healthy node was one retry away.
TEST(ClientFakeServerTest, ARetryElsewhereDoesNotWaitAStartingNodesDelay) {
  FakeServer starting, healthy;
  Answer no_data = FailWithReason(grpc::StatusCode::UNAVAILABLE, "NO_DATA_YET");
  no_data.retry_delay = absl::Seconds(1);
  starting.service().SetFallback(no_data);
  SessionClientOptions options = FakeOptions();
  options.call_timeout = absl::Milliseconds(800);
  options.max_backoff = absl::Seconds(1);  // caps the server's delay too
  auto client =
      SessionClient::Connect({starting.address(), healthy.address()}, options);
  // Round-robin starts at the starting node.
  absl::StatusOr<v1::ValidateSessionResponse> answer = client->Validate("t");
  ASSERT_TRUE(answer.ok()) << answer.status();
  EXPECT_EQ(starting.service().calls("ValidateSession"), 1);
  EXPECT_EQ(healthy.service().calls("ValidateSession"), 1);
}

// gRPC gives RESOURCE_EXHAUSTED, without the server's ErrorInfo, to a reply
// over the client's receive limit (4 MiB): the write applied. A batch of
// large sessions is such a reply: it must not be sent again (each time
// creating the sessions again), and its outcome is unknown, not "not
// applied".
TEST(ClientFakeServerTest, AReplyTooLargeForTheClientIsNotSentAgain) {
  FakeServer server;
  server.service().SetReplyPadding(5u << 20);
  auto client = SessionClient::Connect(server.address(), FakeOptions());
  v1::CreateSessionsRequest batch;
  *batch.add_requests() = CreateRequest("a");
  *batch.add_requests() = CreateRequest("b");
  const absl::Status status = client->CreateSessions(batch).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kUnknown) << status;
  EXPECT_TRUE(absl::StrContains(status.message(), "outcome unknown")) << status;
  EXPECT_EQ(server.service().calls("CreateSessions"), 1);
  EXPECT_EQ(client->stats().retries, 0u);
}

// The same for a create the client gave a request_id (an idempotent
// call): its caller never saw the id, so its own retry would carry a new
// one and make a second session. It was reported RESOURCE_EXHAUSTED, "not
// applied".
TEST(ClientFakeServerTest, ACreateWithItsIdWhoseReplyIsTooLargeIsUnknown) {
  FakeServer server;
  SessionClientOptions options = FakeOptions();
  options.create_request_ids = true;
  options.channel_args.SetMaxReceiveMessageSize(8);  // "fake-token" is more
  auto client = SessionClient::Connect(server.address(), options);
  const absl::Status status =
      client->CreateSession(CreateRequest("a")).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kUnknown) << status;
  EXPECT_TRUE(absl::StrContains(status.message(), "outcome unknown")) << status;
  EXPECT_EQ(server.service().calls("CreateSession"), 1);
}

// A write the server's gRPC refused for its size never reached sessiond:
// not applied, and said so (RESOURCE_EXHAUSTED as API.md has it), not
// reported as an unknown outcome like a reply refused by the client.
TEST(ClientFakeServerTest, AWriteRefusedForItsSizeIsNotAnUnknownOutcome) {
  FakeServer server(/*max_receive_bytes=*/1024);
  auto client = SessionClient::Connect(server.address(), FakeOptions());
  v1::CreateSessionRequest big = CreateRequest("a");
  (*big.mutable_attributes())["pad"] = std::string(4096, 'x');
  const absl::Status status = client->CreateSession(big).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kResourceExhausted) << status;
  EXPECT_EQ(server.service().calls("CreateSession"), 0);
  EXPECT_EQ(client->stats().retries, 0u);
}

// A read's reply over the client's receive limit fails the same way every
// time: it is not sent again (it used to be, max_attempts times).
TEST(ClientFakeServerTest, AReadReplyTooLargeForTheClientIsNotRetried) {
  FakeServer server;
  server.service().SetReplyPadding(5u << 20);
  auto client = SessionClient::Connect(server.address(), FakeOptions());
  const absl::Status status = client->Validate("some-token").status();
  EXPECT_EQ(status.code(), absl::StatusCode::kResourceExhausted) << status;
  EXPECT_EQ(server.service().calls("ValidateSession"), 1);
  EXPECT_EQ(client->stats().retries, 0u);
}

// create_request_ids gives every create a request_id, but the server takes
// none with a JWT: such a create goes without one (sent at most once).
TEST(ClientFakeServerTest, RequestIdsAreNotAddedToJwtCreates) {
  FakeServer server;
  SessionClientOptions options = FakeOptions();
  options.create_request_ids = true;
  auto client = SessionClient::Connect(server.address(), options);
  v1::CreateSessionRequest jwt = CreateRequest("a");
  jwt.set_token_format(v1::TOKEN_FORMAT_JWT);
  ASSERT_TRUE(client->CreateSession(jwt).ok());
  ASSERT_TRUE(client->CreateSession(CreateRequest("b")).ok());
  const std::vector<std::string> ids = server.service().request_ids();
  ASSERT_EQ(ids.size(), 2u);
  EXPECT_EQ(ids[0], "");
  EXPECT_NE(ids[1], "");
}

// A server that answers "not proposed" (no leader until its deadline)
// changed nothing: the write goes again, within the call's budget.
TEST(ClientFakeServerTest, NotProposedWriteIsRetried) {
  FakeServer server;
  Answer not_proposed = Fail(grpc::StatusCode::UNAVAILABLE);
  not_proposed.not_proposed = true;
  server.service().Push(not_proposed);
  auto client = SessionClient::Connect(server.address(), FakeOptions());
  absl::StatusOr<v1::CreateSessionResponse> created =
      client->CreateSession(CreateRequest("a"));
  ASSERT_TRUE(created.ok()) << created.status();
  EXPECT_EQ(server.service().calls("CreateSession"), 2);
  // Every attempt refused the same way: reported as never sent.
  server.service().SetFallback(not_proposed);
  const absl::Status failed =
      client->CreateSession(CreateRequest("b")).status();
  EXPECT_EQ(failed.code(), absl::StatusCode::kUnavailable);
  EXPECT_TRUE(IsNotSent(failed)) << failed;
}

// A write refused with "nothing was proposed" and a RetryInfo, whose call
// would have less than the send floor (a quarter of min(deadline,
// call_timeout)) left after the backoff, ends with that refusal: it says
// nothing was done and when to come back. It used to sleep the backoff and
// end with a "not sent" of the client's own, the server's reason and
// RetryInfo dropped. Here each refusal asks for 600 ms: the third leaves
// ~800 ms of 2 s, 200 ms after the wait, under the floor's 500 ms.
TEST(ClientFakeServerTest, AWriteWithNoTimeLeftToRetryKeepsTheServersRefusal) {
  FakeServer server;
  Answer not_proposed =
      FailWithReason(grpc::StatusCode::UNAVAILABLE, "NOT_PROPOSED");
  not_proposed.not_proposed = true;
  not_proposed.retry_delay = absl::Milliseconds(600);
  server.service().SetFallback(not_proposed);
  SessionClientOptions options = FakeOptions();
  options.deadline = absl::Seconds(2);
  options.call_timeout = absl::Seconds(2);
  options.max_backoff = absl::Seconds(1);  // caps the server's delay too
  options.max_attempts = 10;
  auto client = SessionClient::Connect(server.address(), options);
  const absl::Status failed =
      client->CreateSession(CreateRequest("a")).status();
  EXPECT_EQ(failed.code(), absl::StatusCode::kUnavailable) << failed;
  EXPECT_TRUE(IsNotSent(failed)) << failed;
  EXPECT_EQ(ErrorReason(failed), "NOT_PROPOSED") << failed;
  EXPECT_EQ(RetryDelay(failed), absl::Milliseconds(600)) << failed;
  EXPECT_THAT(std::string(failed.message()), HasSubstr("fake CreateSession"));
  EXPECT_EQ(server.service().calls("CreateSession"), 3);
}

// A create retried with its request_id whose last attempt was "not
// proposed" (an election) is not reported never sent when an earlier
// attempt went out and timed out: that one may still commit, and a caller
// told "not sent" retries with a new request_id, making a second session.
TEST(ClientFakeServerTest, NotSentOnlyWhenNoAttemptMayHaveApplied) {
  FakeServer server;
  SessionClientOptions options = FakeOptions();
  options.create_request_ids = true;
  auto client = SessionClient::Connect(server.address(), options);
  Answer not_proposed = Fail(grpc::StatusCode::UNAVAILABLE);
  not_proposed.not_proposed = true;
  server.service().Push(Fail(grpc::StatusCode::UNAVAILABLE));
  server.service().SetFallback(not_proposed);
  const absl::Status failed =
      client->CreateSession(CreateRequest("a")).status();
  EXPECT_EQ(failed.code(), absl::StatusCode::kUnavailable) << failed;
  EXPECT_FALSE(IsNotSent(failed)) << failed;
  EXPECT_TRUE(absl::StrContains(failed.message(), "may have applied"))
      << failed;
  EXPECT_EQ(ErrorReason(failed), "NOT_COMMITTED") << failed;
  const std::vector<std::string> ids = server.service().request_ids();
  ASSERT_GT(ids.size(), 1u);
  for (const std::string& id : ids) EXPECT_EQ(id, ids[0]);
}

// The same with the server's refusals under load after the first attempt:
// "refused, nothing done" speaks for the last attempt only, and the first,
// sent, may have created the session. Returned as RESOURCE_EXHAUSTED (the
// server's answer: not applied), the caller's own retry, with a new
// request_id, made a second session.
TEST(ClientFakeServerTest, ARefusalUnderLoadAfterAnAttemptThatMayHaveApplied) {
  FakeServer server;
  SessionClientOptions options = FakeOptions();
  options.create_request_ids = true;
  auto client = SessionClient::Connect(server.address(), options);
  server.service().Push(Fail(grpc::StatusCode::UNAVAILABLE));
  server.service().SetFallback(
      FailWithReason(grpc::StatusCode::RESOURCE_EXHAUSTED, "OVERLOADED"));
  const absl::Status failed =
      client->CreateSession(CreateRequest("a")).status();
  EXPECT_EQ(failed.code(), absl::StatusCode::kUnavailable) << failed;
  EXPECT_FALSE(IsNotSent(failed)) << failed;
  EXPECT_TRUE(absl::StrContains(failed.message(), "may have applied"))
      << failed;
  // Nor does its reason say "nothing was created" (OVERLOADED).
  EXPECT_EQ(ErrorReason(failed), "NOT_COMMITTED") << failed;
  EXPECT_GT(server.service().calls("CreateSession"), 1);
  // A read applies nothing: the same answers leave its code as it came.
  server.service().Push(Fail(grpc::StatusCode::UNAVAILABLE));
  const absl::Status read = client->Validate("t").status();
  EXPECT_EQ(read.code(), absl::StatusCode::kResourceExhausted) << read;
}

// A write goes only over a connected channel; one that is not connected is
// passed over, unsent, for the next endpoint.
TEST(ClientFakeServerTest, WriteSkipsAnEndpointThatDoesNotConnect) {
  FakeServer server;
  const std::string closed = absl::StrCat("127.0.0.1:", ClosedPort());
  // Round-robin starts at the first endpoint: the closed one.
  auto client =
      SessionClient::Connect({closed, server.address()}, FakeOptions());
  absl::StatusOr<v1::CreateSessionResponse> created =
      client->CreateSession(CreateRequest("a"));
  ASSERT_TRUE(created.ok()) << created.status();
  EXPECT_EQ(server.service().calls("CreateSession"), 1);
  EXPECT_EQ(client->stats().attempts, 1u);
  EXPECT_EQ(client->stats().endpoints_skipped, 1u);
}

// A write that its connect wait left less than a quarter of min(deadline,
// call_timeout) is not sent. The server would propose it all the same, and
// its deadline would run out before the commit was answered: "outcome
// unknown" where "not sent" was still true. Here the silent endpoint, first
// in the round-robin, takes 85% of call_timeout (connect_timeout), and the
// server that connects next answers more slowly than what is left.
TEST(ClientFakeServerTest, AWriteLeftTooLittleTimeByItsConnectWaitIsNotSent) {
  FakeServer server;
  Answer slow;
  slow.delay = absl::Milliseconds(500);
  server.service().SetFallback(slow);
  SilentListener silent;
  SessionClientOptions options = FakeOptions();
  options.deadline = absl::Seconds(2);
  options.call_timeout = absl::Seconds(2);
  // Leaves at most 300 ms, under the 500 ms a write needs.
  options.connect_timeout = absl::Milliseconds(1700);
  auto client =
      SessionClient::Connect({silent.address(), server.address()}, options);

  const absl::Status late = client->CreateSession(CreateRequest("a")).status();
  EXPECT_TRUE(IsNotSent(late)) << late;
  EXPECT_THAT(std::string(late.message()),
              HasSubstr("left after waiting for a connected channel"));
  EXPECT_EQ(server.service().calls("CreateSession"), 0);
  EXPECT_EQ(client->stats().attempts, 0u);

  // With its whole call_timeout ahead (the silent endpoint is passed over
  // now), the next write goes.
  const absl::Status next = client->CreateSession(CreateRequest("a")).status();
  EXPECT_TRUE(next.ok()) << next;
  EXPECT_EQ(server.service().calls("CreateSession"), 1);
}

// The same in a later round, after the server refused the write with
// "nothing was proposed": the call ends with that refusal (its reason kept),
// saying why it was not sent again, not with a "not sent" of the client's
// own. Here the retry goes first to the silent endpoint, untried, whose
// connect_timeout leaves 400 ms of 2 s, under the floor's 500 ms.
TEST(ClientFakeServerTest, ARetryLeftTooLittleTimeKeepsTheServersRefusal) {
  FakeServer server;
  Answer not_proposed =
      FailWithReason(grpc::StatusCode::UNAVAILABLE, "NOT_PROPOSED");
  not_proposed.not_proposed = true;
  server.service().SetFallback(not_proposed);
  SilentListener silent;
  SessionClientOptions options = FakeOptions();
  options.deadline = absl::Seconds(2);
  options.call_timeout = absl::Seconds(2);
  options.connect_timeout = absl::Milliseconds(1600);
  // Round-robin starts at `server`.
  auto client =
      SessionClient::Connect({server.address(), silent.address()}, options);
  const absl::Status late = client->CreateSession(CreateRequest("a")).status();
  EXPECT_TRUE(IsNotSent(late)) << late;
  EXPECT_EQ(ErrorReason(late), "NOT_PROPOSED") << late;
  EXPECT_THAT(std::string(late.message()), HasSubstr("fake CreateSession"));
  EXPECT_THAT(std::string(late.message()), HasSubstr("not sent again"));
  EXPECT_EQ(server.service().calls("CreateSession"), 1);
}

// A stream too goes only over a connected channel: gRPC's stream
// constructor waits for the stream's start to leave, and on a channel that
// says CONNECTING (a silent endpoint) that took until gRPC gave up on the
// connection, about 20 s, with nothing the caller could cancel; then the
// stream was broken. It passes the silent endpoint over, as a call does.
TEST(ClientFakeServerTest, AStreamOpensOnAnEndpointThatConnects) {
  FakeServer server;
  SilentListener silent;
  // Round-robin starts at the first endpoint: the silent one.
  auto client = SessionClient::Connect({silent.address(), server.address()},
                                       FakeOptions());
  std::unique_ptr<ValidateStream> stream = client->OpenValidateStream();
  v1::ValidateSessionRequest good;
  good.set_token("good");
  absl::StatusOr<v1::ValidateSessionResponse> answer = stream->Validate(good);
  ASSERT_TRUE(answer.ok()) << answer.status();
  EXPECT_EQ(answer->outcome(), v1::ValidateSessionResponse::VALID);
  EXPECT_TRUE(stream->Close().ok());
  EXPECT_EQ(client->stats().endpoints_skipped, 1u);

  // With no endpoint that connects, the stream is broken from the start,
  // as a call that could not be sent.
  SessionClientOptions options = FakeOptions();
  options.call_timeout = absl::Seconds(1);
  auto stranded = SessionClient::Connect({silent.address()}, options);
  std::unique_ptr<ValidateStream> broken = stranded->OpenValidateStream();
  const absl::Status refused = broken->Validate(good).status();
  EXPECT_EQ(refused.code(), absl::StatusCode::kUnavailable) << refused;
  EXPECT_TRUE(IsNotSent(refused)) << refused;
}

// A connection already carrying the server's max_concurrent_streams holds
// a new stream back until one ends. Opening one waited for that (gRPC's
// stream constructor waits for the stream's metadata to leave), and the
// caller had no stream yet to Cancel(). It opens at once now; its first
// Validate waits for room.
TEST(ClientFakeServerTest, AStreamOpensWhenItsConnectionHasNoRoomForIt) {
  FakeServer server(-1, false, /*max_streams=*/1);
  auto client = SessionClient::Connect(server.address(), FakeOptions());
  v1::ValidateSessionRequest good;
  good.set_token("good");
  std::unique_ptr<ValidateStream> first = client->OpenValidateStream();
  ASSERT_TRUE(first->Validate(good).ok());
  absl::Notification opened;
  std::unique_ptr<ValidateStream> second;
  std::thread opener([&] {
    second = client->OpenValidateStream();
    opened.Notify();
  });
  const bool returned =
      opened.WaitForNotificationWithTimeout(absl::Seconds(20));
  EXPECT_TRUE(returned) << "opening a stream waited for another to end";
  EXPECT_TRUE(first->Close().ok());  // room: the opener returns if it had not
  opener.join();
  ASSERT_NE(second, nullptr);
  absl::StatusOr<v1::ValidateSessionResponse> answer = second->Validate(good);
  ASSERT_TRUE(answer.ok()) << answer.status();
  EXPECT_EQ(answer->outcome(), v1::ValidateSessionResponse::VALID);
  EXPECT_TRUE(second->Close().ok());

  // A stream closed before it asked anything: its corked metadata never
  // left, and a half-close waited on a call that never started.
  absl::Notification closed;
  std::thread closer([&] {
    EXPECT_TRUE(client->OpenValidateStream()->Close().ok());
    closed.Notify();
  });
  if (closed.WaitForNotificationWithTimeout(absl::Seconds(20))) {
    closer.join();
  } else {
    ADD_FAILURE() << "closing an unused stream hung";
    closer.detach();  // nothing would end it
  }
}

// A follower naming the leader, and a client whose first write learned it
// from the follower (round-robin starts there).
struct KnownLeader {
  KnownLeader() {
    follower.service().SetFallback(OkNaming(leader.address(), "2"));
    client = SessionClient::Connect({follower.address(), leader.address()},
                                    FakeOptions());
    EXPECT_TRUE(client->CreateSession(CreateRequest("a")).ok());
    EXPECT_EQ(client->leader(), leader.address());
  }
  FakeServer follower;
  FakeServer leader;
  std::unique_ptr<SessionClient> client;
};

// A node draining to stop answers SHUTTING_DOWN, and the followers still
// name it leader until its drain ends. Learned again from them, it was each
// write's first stop and a third of the reads', and its drain, which waits
// until no call came for a while, lasted its whole grace period. It is
// passed over instead.
TEST(ClientFakeServerTest, ANodeShuttingDownIsPassedOver) {
  KnownLeader cluster;
  FakeServer& leader = cluster.leader;
  SessionClient* client = cluster.client.get();
  Answer draining =
      FailWithReason(grpc::StatusCode::UNAVAILABLE, "SHUTTING_DOWN");
  draining.not_proposed = true;
  leader.service().SetFallback(draining);
  for (int i = 0; i < 5; ++i) {
    ASSERT_TRUE(client->CreateSession(CreateRequest("a")).ok()) << i;
  }
  EXPECT_EQ(leader.service().calls("CreateSession"), 1);
  EXPECT_GE(client->stats().leader_hints_ignored, 1u);
  for (int i = 0; i < 6; ++i) {
    v1::ValidateSessionRequest request;
    request.set_token("good");
    ASSERT_TRUE(client->ValidateSession(request).ok()) << i;
  }
  EXPECT_EQ(leader.service().calls("ValidateSession"), 0);
}

// An endpoint that takes connections and never answers (a paused process,
// a blackholed host) keeps a channel that says CONNECTING, not failing:
// reads took it in turn, each waiting out its attempt deadline before going
// elsewhere. After one such timeout it is passed over.
TEST(ClientFakeServerTest, ReadsPassOverAnEndpointThatLetAnAttemptTimeOut) {
  FakeServer server;
  SilentListener silent;
  SessionClientOptions options = FakeOptions();
  options.deadline = absl::Milliseconds(300);
  options.pass_over_after_timeout = absl::Hours(1);
  auto client =
      SessionClient::Connect({silent.address(), server.address()}, options);
  constexpr int kReads = 8;
  for (int i = 0; i < kReads; ++i) {
    absl::StatusOr<v1::ValidateSessionResponse> answer =
        client->Validate("some-token");
    ASSERT_TRUE(answer.ok()) << answer.status();
  }
  EXPECT_EQ(server.service().calls("ValidateSession"), kReads);
  // One attempt timed out at the silent endpoint; none went there again.
  EXPECT_EQ(client->stats().attempts, kReads + 1u);
}

// The same with an attempt deadline at or over call_timeout (an app that
// sets one time for a call): the attempt that waited out the whole call at
// the silent endpoint counts as its whole budget. Judged against the call's
// start, it was never "full", and every read whose turn began there failed.
TEST(ClientFakeServerTest, ReadsPassOverAnEndpointThatTookTheWholeCall) {
  FakeServer server;
  SilentListener silent;
  SessionClientOptions options = FakeOptions();
  options.deadline = absl::Milliseconds(300);
  options.call_timeout = absl::Milliseconds(300);
  options.pass_over_after_timeout = absl::Hours(1);
  auto client =
      SessionClient::Connect({silent.address(), server.address()}, options);
  constexpr int kReads = 8;
  int failed = 0;
  for (int i = 0; i < kReads; ++i) {
    absl::StatusOr<v1::ValidateSessionResponse> answer =
        client->Validate("some-token");
    if (!answer.ok()) {
      EXPECT_EQ(answer.status().code(), absl::StatusCode::kDeadlineExceeded)
          << answer.status();
      ++failed;
    }
  }
  // The first read's turn began at the silent endpoint; none after it did.
  EXPECT_EQ(failed, 1);
  EXPECT_EQ(server.service().calls("ValidateSession"), kReads - 1);
}

// A follower's answer names the leader (here in another spelling of the
// same address); every later write goes there, reads stay spread.
TEST(ClientFakeServerTest, WritesFollowTheLeaderHint) {
  FakeServer follower;
  FakeServer leader;
  follower.service().SetFallback(
      OkNaming(absl::StrCat("localhost:", leader.port()), "2"));
  auto client = SessionClient::Connect({follower.address(), leader.address()},
                                       FakeOptions());
  EXPECT_EQ(client->leader(), "");

  // Round-robin starts at the first endpoint: the follower.
  ASSERT_TRUE(client->CreateSession(CreateRequest("a")).ok());
  EXPECT_EQ(follower.service().calls("CreateSession"), 1);
  EXPECT_EQ(client->leader(), leader.address());

  v1::TouchSessionRequest touch;
  touch.set_token("t");
  v1::UpdateSessionRequest update;
  update.set_token("t");
  v1::RevokeSessionRequest revoke;
  revoke.set_token("t");
  v1::RevokeUserSessionsRequest revoke_user;
  revoke_user.set_user_id("a");
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE(client->CreateSession(CreateRequest("a")).ok());
    ASSERT_TRUE(client->TouchSession(touch).ok());
    ASSERT_TRUE(client->UpdateSession(update).ok());
    ASSERT_TRUE(client->RevokeSession(revoke).ok());
    ASSERT_TRUE(client->RevokeUserSessions(revoke_user).ok());
  }
  EXPECT_EQ(follower.service().calls("CreateSession"), 1);
  EXPECT_EQ(leader.service().calls("CreateSession"), 3);
  EXPECT_EQ(leader.service().calls("TouchSession"), 3);
  EXPECT_EQ(leader.service().calls("UpdateSession"), 3);
  EXPECT_EQ(leader.service().calls("RevokeSession"), 3);
  EXPECT_EQ(leader.service().calls("RevokeUserSessions"), 3);

  for (int i = 0; i < 4; ++i) ASSERT_TRUE(client->Validate("t").ok());
  EXPECT_GE(follower.service().calls("ValidateSession"), 1);
  EXPECT_GE(leader.service().calls("ValidateSession"), 1);

  EXPECT_EQ(client->stats().leader_changes, 1u);
  EXPECT_EQ(client->stats().extra_channels_opened, 0u);
  EXPECT_EQ(client->stats().retries, 0u);
}

// A leader that is not one of the endpoints gets a channel of its own.
TEST(ClientFakeServerTest, LeaderOutsideTheListGetsItsOwnChannel) {
  FakeServer endpoint;
  FakeServer leader;
  endpoint.service().SetFallback(OkNaming(leader.address(), "3"));
  auto client = SessionClient::Connect(endpoint.address(), FakeOptions());

  for (int i = 0; i < 4; ++i) {
    ASSERT_TRUE(client->CreateSession(CreateRequest("a")).ok());
  }
  EXPECT_EQ(endpoint.service().calls("CreateSession"), 1);
  EXPECT_EQ(leader.service().calls("CreateSession"), 3);
  EXPECT_EQ(client->leader(), leader.address());
  EXPECT_EQ(client->stats().extra_channels_opened, 1u);

  // Reads stay on the endpoints.
  ASSERT_TRUE(client->Validate("t").ok());
  EXPECT_EQ(endpoint.service().calls("ValidateSession"), 1);
  EXPECT_EQ(leader.service().calls("ValidateSession"), 0);
}

// A leader announcing the address it bound (0.0.0.0:port) is matched to
// the endpoint with that port; one matching none is ignored, never dialled.
TEST(ClientFakeServerTest, WildcardLeaderAddressMatchesByPort) {
  FakeServer follower;
  FakeServer leader;
  follower.service().SetFallback(
      OkNaming(absl::StrCat("0.0.0.0:", leader.port()), "2"));
  auto client = SessionClient::Connect({follower.address(), leader.address()},
                                       FakeOptions());
  ASSERT_TRUE(client->CreateSession(CreateRequest("a")).ok());
  ASSERT_TRUE(client->CreateSession(CreateRequest("a")).ok());
  EXPECT_EQ(follower.service().calls("CreateSession"), 1);
  EXPECT_EQ(leader.service().calls("CreateSession"), 1);
  EXPECT_EQ(client->leader(), leader.address());

  follower.service().SetFallback(
      OkNaming(absl::StrCat("0.0.0.0:", ClosedPort()), "2"));
  auto lost = SessionClient::Connect(follower.address(), FakeOptions());
  ASSERT_TRUE(lost->CreateSession(CreateRequest("a")).ok());
  EXPECT_EQ(lost->leader(), "");
  EXPECT_EQ(lost->stats().leader_hints_ignored, 1u);
  EXPECT_EQ(lost->stats().extra_channels_opened, 0u);
}

// A leader that fails is forgotten: writes go anywhere until a node names
// the next one.
TEST(ClientFakeServerTest, FailingLeaderIsForgotten) {
  KnownLeader cluster;
  FakeServer& leader = cluster.leader;
  SessionClient* client = cluster.client.get();

  leader.service().SetFallback(Fail(grpc::StatusCode::UNAVAILABLE));
  absl::Status failed = client->CreateSession(CreateRequest("a")).status();
  EXPECT_EQ(failed.code(), absl::StatusCode::kUnavailable) << failed;
  EXPECT_EQ(leader.service().calls("CreateSession"), 1);
  EXPECT_EQ(client->leader(), "");
  EXPECT_EQ(client->stats().leaders_forgotten, 1u);
}

// A follower whose answers name as leader a node that never answers (a
// blackholed host: its channel says CONNECTING, never failing), and a
// client with `options` whose first write, to the follower, learned it.
struct SilentLeader {
  explicit SilentLeader(SessionClientOptions options) {
    follower.service().SetFallback(OkNaming(silent.address(), "2"));
    options.connect_timeout = absl::Milliseconds(200);
    options.pass_over_after_timeout = absl::Hours(1);
    client =
        SessionClient::Connect({follower.address(), silent.address()}, options);
    // Round-robin starts at the follower.
    EXPECT_TRUE(client->CreateSession(CreateRequest("a")).ok());
    EXPECT_EQ(client->leader(), silent.address());
  }
  FakeServer follower;
  SilentListener silent;
  std::unique_ptr<SessionClient> client;
};

// Each write waited out connect_timeout on the silent leader, went on to
// a follower, and learned it again from that follower's answer. Once a
// write has passed it over, hints naming it are ignored while it is passed
// over: writes go straight to the follower, which forwards them.
TEST(ClientFakeServerTest, ALeaderThisClientCannotReachIsNotLearnedAgain) {
  SilentLeader cluster(FakeOptions());
  SessionClient& client = *cluster.client;
  constexpr int kWrites = 5;
  for (int i = 0; i < kWrites; ++i) {
    ASSERT_TRUE(client.CreateSession(CreateRequest("a")).ok()) << i;
  }
  EXPECT_EQ(cluster.follower.service().calls("CreateSession"), kWrites + 1);
  // The silent node was waited for once, then passed over.
  EXPECT_EQ(client.stats().endpoints_skipped, 1u);
  EXPECT_EQ(client.leader(), "");
  EXPECT_GE(client.stats().leader_hints_ignored, 1u);
}

// The same with connect_timeout at or over call_timeout: the write that
// waited for the silent leader until its call ended passes it over, and the
// next ones go to the follower. Judged by "the wait ended before the call",
// it was never passed over, and every other write spent its call on it.
TEST(ClientFakeServerTest, ALeaderWaitedForTheWholeCallIsPassedOver) {
  SessionClientOptions options = FakeOptions();
  options.call_timeout = absl::Milliseconds(200);
  SilentLeader cluster(options);
  SessionClient& client = *cluster.client;
  constexpr int kWrites = 5;
  int failed = 0;
  for (int i = 0; i < kWrites; ++i) {
    const absl::Status status =
        client.CreateSession(CreateRequest("a")).status();
    if (!status.ok()) {
      EXPECT_TRUE(IsNotSent(status)) << status;
      ++failed;
    }
  }
  EXPECT_EQ(failed, 1);
  EXPECT_EQ(cluster.follower.service().calls("CreateSession"), kWrites);
  EXPECT_EQ(client.stats().endpoints_skipped, 1u);
}

// Answers go by position: a reply of another count than the requests (a
// server's bug) would pair tokens with other tokens' outcomes, or send an
// app indexing responses(i) out of bounds. It is an error, not an answer.
TEST(ClientFakeServerTest, ABatchAnswerOfAnotherCountIsAnError) {
  FakeServer server;  // answers every batch with no responses
  auto client = SessionClient::Connect(server.address(), FakeOptions());
  v1::BatchValidateSessionsRequest batch;
  batch.add_requests()->set_token("a");
  batch.add_requests()->set_token("b");
  const absl::Status answer = client->BatchValidateSessions(batch).status();
  EXPECT_EQ(answer.code(), absl::StatusCode::kInternal) << answer;
  EXPECT_THAT(std::string(answer.message()), HasSubstr("answered 0 of 2"));
}

// A stream whose answer is for another request is out of step: it ends,
// and no later call on it gets an answer meant for another token.
TEST(ClientFakeServerTest, AnOutOfStepStreamAnswerEndsTheStream) {
  FakeServer server;
  server.service().SetStrayStreamAnswer(true);
  auto client = SessionClient::Connect(server.address(), FakeOptions());
  std::unique_ptr<ValidateStream> stream = client->OpenValidateStream();
  v1::ValidateSessionRequest good;
  good.set_token("good");
  good.set_request_id(7);
  const absl::Status out_of_step = stream->Validate(good).status();
  EXPECT_EQ(out_of_step.code(), absl::StatusCode::kInternal) << out_of_step;
  EXPECT_THAT(std::string(out_of_step.message()), HasSubstr("open another"));
  // The same caller-chosen id for another token: the answer still owed for
  // "good" (VALID) must not be taken for this one.
  v1::ValidateSessionRequest other = good;
  other.set_token("revoked");
  absl::StatusOr<v1::ValidateSessionResponse> answer = stream->Validate(other);
  EXPECT_EQ(answer.status().code(), absl::StatusCode::kInternal)
      << (answer.ok() ? answer->ShortDebugString() : "");
  EXPECT_EQ(stream->Close().code(), absl::StatusCode::kInternal);
  // Another stream is in step.
  server.service().SetStrayStreamAnswer(false);
  std::unique_ptr<ValidateStream> fresh = client->OpenValidateStream();
  answer = fresh->Validate(good);
  ASSERT_TRUE(answer.ok()) << answer.status();
  EXPECT_EQ(answer->outcome(), v1::ValidateSessionResponse::VALID);
  EXPECT_TRUE(fresh->Close().ok());
}

// A stream the server ended cleanly while an answer was owed: the call and
// Close both say the store did not answer (Close said OK).
TEST(ClientFakeServerTest, AStreamEndedUnansweredIsNotClosedCleanly) {
  FakeServer server;
  server.service().SetSilentStream(true);
  auto client = SessionClient::Connect(server.address(), FakeOptions());
  std::unique_ptr<ValidateStream> stream = client->OpenValidateStream();
  v1::ValidateSessionRequest request;
  request.set_token("good");
  EXPECT_EQ(stream->Validate(request).status().code(),
            absl::StatusCode::kUnavailable);
  EXPECT_EQ(stream->Validate(request).status().code(),
            absl::StatusCode::kUnavailable);
  EXPECT_EQ(stream->Close().code(), absl::StatusCode::kUnavailable);
}

// A server cancels calls that race its shutdown (a node draining for a
// restart): the client reports it as UNAVAILABLE (the application never
// cancelled anything); an idempotent call goes again, a write does not (its
// outcome is unknown).
TEST(ClientFakeServerTest, ServerCancelledReadIsRetriedWriteIsNot) {
  FakeServer server;
  server.service().Push(Fail(grpc::StatusCode::CANCELLED));
  auto client = SessionClient::Connect(server.address(), FakeOptions());
  absl::StatusOr<v1::ValidateSessionResponse> validated = client->Validate("t");
  ASSERT_TRUE(validated.ok()) << validated.status();
  EXPECT_EQ(server.service().calls("ValidateSession"), 2);

  server.service().Push(Fail(grpc::StatusCode::CANCELLED));
  const absl::Status created =
      client->CreateSession(CreateRequest("a")).status();
  EXPECT_EQ(created.code(), absl::StatusCode::kUnavailable) << created;
  EXPECT_THAT(std::string(created.message()),
              HasSubstr("the server cancelled the call"));
  EXPECT_FALSE(IsNotSent(created)) << created;
  EXPECT_EQ(server.service().calls("CreateSession"), 1);
  EXPECT_EQ(client->stats().retries, 1u);
}

// Whom a write answer makes the leader: an OK answer naming no leader
// address but a leader id came from a follower that could not give the
// address, so the node that answered is not taken to lead; nor is a node
// that failed naming itself.
TEST(ClientFakeServerTest, LeaderIsLearnedOnlyFromTheRightAnswers) {
  FakeServer node;
  node.service().SetFallback(OkNaming("", "2"));
  auto client = SessionClient::Connect(node.address(), FakeOptions());
  ASSERT_TRUE(client->CreateSession(CreateRequest("a")).ok());
  EXPECT_EQ(client->leader(), "");

  Answer failed_naming_itself = Fail(grpc::StatusCode::UNAVAILABLE);
  failed_naming_itself.leader = node.address();
  failed_naming_itself.leader_id = "1";
  node.service().SetFallback(failed_naming_itself);
  EXPECT_EQ(client->CreateSession(CreateRequest("a")).status().code(),
            absl::StatusCode::kUnavailable);
  EXPECT_EQ(client->leader(), "");
  EXPECT_EQ(client->stats().leader_changes, 0u);
}

// A leader that went away while the client was quiet may still look
// connected; the write finds out before sending, passes it over unsent and
// goes to the other endpoint.
TEST(ClientFakeServerTest, WriteNoticesALeaderThatWentAway) {
  auto gone = std::make_unique<FakeServer>();
  const std::string gone_address = gone->address();
  FakeServer other;
  auto client =
      SessionClient::Connect({gone_address, other.address()}, FakeOptions());
  // Round-robin starts at the first endpoint; its OK answer names no other
  // leader, so it is taken to lead.
  ASSERT_TRUE(client->CreateSession(CreateRequest("a")).ok());
  ASSERT_EQ(client->leader(), gone_address);

  gone.reset();
  // Quiet for a while: the next write probes the connection first.
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  absl::StatusOr<v1::CreateSessionResponse> created =
      client->CreateSession(CreateRequest("a"));
  ASSERT_TRUE(created.ok()) << created.status();
  EXPECT_EQ(other.service().calls("CreateSession"), 1);
  EXPECT_EQ(client->stats().attempts, 2u);
  EXPECT_GE(client->stats().endpoints_skipped, 1u);
  EXPECT_EQ(client->stats().leaders_forgotten, 1u);
  EXPECT_EQ(client->leader(), other.address());
}

// A TCP proxy from 127.0.0.1 (a free port) to 127.0.0.1:`upstream_port`
// that forwards both ways until Blackhole(); from then on it reads and drops
// everything and keeps every socket open, as a network that loses packets
// does: neither end sees a FIN or a RST, only silence. It closes a socket
// only after its other end did, and counts the connections the client side
// closed.
//
// Thread-safe.
class BlackholingProxy {
 public:
  explicit BlackholingProxy(int upstream_port) : upstream_port_(upstream_port) {
    listen_fd_ = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr = Loopback(0);
    EXPECT_EQ(
        bind(listen_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
    EXPECT_EQ(listen(listen_fd_, 16), 0);
    socklen_t len = sizeof(addr);
    getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&addr), &len);
    port_ = ntohs(addr.sin_port);
    thread_ = std::thread([this] { Run(); });
  }
  ~BlackholingProxy() {
    stop_ = true;
    thread_.join();
    for (const Connection& c : connections_) {
      if (c.client >= 0) close(c.client);
      if (c.upstream >= 0) close(c.upstream);
    }
    close(listen_fd_);
  }
  BlackholingProxy(const BlackholingProxy&) = delete;
  BlackholingProxy& operator=(const BlackholingProxy&) = delete;

  std::string address() const { return absl::StrCat("127.0.0.1:", port_); }
  void Blackhole() { blackholed_ = true; }
  int ClientClosed() const { return client_closed_; }

 private:
  // A socket is -1 once closed.
  struct Connection {
    int client;
    int upstream;
  };

  static sockaddr_in Loopback(int port) {
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = htons(static_cast<uint16_t>(port));
    return addr;
  }

  // Reads what `from` has and, unless blackholed, writes it all to `to`.
  // False when `from` is closed (EOF or an error).
  bool Pass(int from, int to) {
    char buf[16 * 1024];
    const ssize_t n = read(from, buf, sizeof(buf));
    if (n <= 0) return false;
    for (ssize_t sent = 0; !blackholed_ && sent < n;) {
      const ssize_t w = send(to, buf + sent, n - sent, MSG_NOSIGNAL);
      if (w <= 0) break;  // `to` is closed: its own read will say so
      sent += w;
    }
    return true;
  }

  // Only the proxy thread touches connections_ before the destructor joins
  // it. The poll timeout bounds how long the destructor waits for it.
  void Run() {
    while (!stop_) {
      std::vector<pollfd> fds = {{listen_fd_, POLLIN, 0}};
      for (const Connection& c : connections_) {
        fds.push_back({c.client, POLLIN, 0});  // poll ignores fd -1
        fds.push_back({c.upstream, POLLIN, 0});
      }
      if (poll(fds.data(), fds.size(), /*timeout_ms=*/50) <= 0) continue;
      if (fds[0].revents & POLLIN) {
        const int client = accept(listen_fd_, nullptr, nullptr);
        const int upstream = socket(AF_INET, SOCK_STREAM, 0);
        sockaddr_in addr = Loopback(upstream_port_);
        EXPECT_EQ(
            connect(upstream, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)),
            0);
        connections_.push_back({client, upstream});
      }
      for (size_t i = 0; i + 1 < fds.size(); i += 2) {
        Connection& c = connections_[i / 2];
        if (fds[i + 1].revents != 0 && !Pass(c.client, c.upstream)) {
          ++client_closed_;
          close(c.client);
          c.client = -1;
          // Before the blackhole the proxy passes the close on.
          if (!blackholed_ && c.upstream >= 0) {
            close(c.upstream);
            c.upstream = -1;
          }
        }
        if (c.upstream >= 0 && fds[i + 2].revents != 0 &&
            !Pass(c.upstream, c.client)) {
          close(c.upstream);
          c.upstream = -1;
          if (!blackholed_ && c.client >= 0) {
            close(c.client);
            c.client = -1;
          }
        }
      }
    }
  }

  const int upstream_port_;
  int listen_fd_ = -1;
  int port_ = 0;
  std::atomic<bool> stop_{false};
  std::atomic<bool> blackholed_{false};
  std::atomic<int> client_closed_{0};
  std::vector<Connection> connections_;
  std::thread thread_;
};

// A validate stream has no deadline: only keepalive notices a node that
// vanished without closing the connection (host down, packets dropped).
// With gRPC's default GRPC_ARG_HTTP2_MAX_PINGS_WITHOUT_DATA (2) the client
// sent two keepalive pings after the stream's last message and then no
// more, so a node that vanished after that quiet was never noticed and the
// stream hung; the client sets it to 0 (no limit). Here the keepalive is
// shortened through channel_args, which the client must let through.
TEST(ClientKeepaliveTest, AQuietStreamNoticesABlackholedNode) {
  FakeServer server(/*max_receive_bytes=*/-1, /*any_ping_rate=*/true);
  BlackholingProxy proxy(server.port());
  SessionClientOptions options = FakeOptions();
  options.channel_args.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS, 200);
  options.channel_args.SetInt(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 200);
  auto client = SessionClient::Connect(proxy.address(), options);
  std::unique_ptr<ValidateStream> stream = client->OpenValidateStream();
  v1::ValidateSessionRequest good;
  good.set_token("good");
  absl::StatusOr<v1::ValidateSessionResponse> answer = stream->Validate(good);
  ASSERT_TRUE(answer.ok()) << answer.status();
  EXPECT_EQ(answer->outcome(), v1::ValidateSessionResponse::VALID);

  // Quiet for more than three keepalive intervals: long enough for the
  // client to have used up a limit of pings without data.
  std::this_thread::sleep_for(std::chrono::milliseconds(1500));
  ASSERT_EQ(proxy.ClientClosed(), 0);
  proxy.Blackhole();
  const int64_t give_up = NowMs() + 20'000;
  while (proxy.ClientClosed() == 0 && NowMs() < give_up) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_GE(proxy.ClientClosed(), 1)
      << "the client never noticed the blackholed node";

  stream->Cancel();
  EXPECT_FALSE(stream->Close().ok());
}

// ---------------------------------------------------------------------------
// Endpoint lists and clusters of the real daemon.

// One endpoint refuses connections, the other is a live single node: every
// read and write succeeds.
TEST(ClientEndpointsTest, ClosedEndpointAndALiveNode) {
  Daemon daemon;
  ASSERT_TRUE(daemon.Start()) << "sessiond did not print LISTENING";
  const std::string closed = absl::StrCat("127.0.0.1:", ClosedPort());
  auto client =
      SessionClient::Connect({closed, daemon.address()}, FastRetries(4));

  constexpr int kRounds = 10;
  for (int i = 0; i < kRounds; ++i) {
    absl::StatusOr<v1::ValidateSessionResponse> garbage =
        client->Validate("no-such-token");
    ASSERT_TRUE(garbage.ok()) << garbage.status();
    EXPECT_EQ(garbage->outcome(), v1::ValidateSessionResponse::UNKNOWN);

    absl::StatusOr<v1::CreateSessionResponse> created =
        client->CreateSession(CreateRequest("gina"));
    ASSERT_TRUE(created.ok()) << created.status();
    absl::StatusOr<v1::ValidateSessionResponse> valid =
        client->Validate(created->token());
    ASSERT_TRUE(valid.ok()) << valid.status();
    EXPECT_EQ(valid->outcome(), v1::ValidateSessionResponse::VALID);

    v1::TouchSessionRequest touch;
    touch.set_token(created->token());
    ASSERT_TRUE(client->TouchSession(touch).ok());
    v1::ListUserSessionsRequest list;
    list.set_user_id("gina");
    absl::StatusOr<v1::ListUserSessionsResponse> listed =
        client->ListUserSessions(list);
    ASSERT_TRUE(listed.ok()) << listed.status();
    EXPECT_EQ(listed->sessions_size(), 1);
    v1::RevokeSessionRequest revoke;
    revoke.set_token(created->token());
    ASSERT_TRUE(client->RevokeSession(revoke).ok());
  }
  // A single node commits its writes itself: it is the leader.
  EXPECT_EQ(client->leader(), daemon.address());
  // Each call made at most max_attempts attempts.
  EXPECT_LE(client->stats().attempts, 6u * kRounds * 4);
}

// The node taken for the leader dies (SIGKILL) while the client is quiet: in
// a process with no other gRPC activity nothing reads the closed socket, so
// its channel still says READY. The next write probes it, passes it over
// unsent and goes to the other endpoint (here an independent single node,
// which commits it). The probe polls for 1 ms: on a loaded machine the
// scheduler can eat that, the write then goes out on the dead connection and
// its outcome is unknown; the client must say so (never "not sent"), forget
// the leader, and send the next write elsewhere. If gRPC notices the closed
// socket only as the call picks it, the call fails before it left (gRPC's
// "failed to connect to all addresses") and goes elsewhere at once.
TEST(ClientEndpointsTest, WriteAfterTheLeaderDiedQuietlyGoesElsewhere) {
  Daemon first;
  Daemon second;
  ASSERT_TRUE(first.Start()) << "sessiond did not print LISTENING";
  ASSERT_TRUE(second.Start()) << "sessiond did not print LISTENING";
  auto client = SessionClient::Connect({first.address(), second.address()},
                                       FastRetries(4));
  // Round-robin starts at the first endpoint, which commits the write itself.
  ASSERT_TRUE(client->CreateSession(CreateRequest("judy")).ok());
  ASSERT_EQ(client->leader(), first.address());

  first.Kill();
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  absl::StatusOr<v1::CreateSessionResponse> created =
      client->CreateSession(CreateRequest("judy"));
  if (!created.ok()) {
    EXPECT_TRUE(absl::IsUnavailable(created.status())) << created.status();
    EXPECT_FALSE(IsNotSent(created.status())) << created.status();
    EXPECT_EQ(client->leader(), "");
    created = client->CreateSession(CreateRequest("judy"));
  }
  ASSERT_TRUE(created.ok()) << created.status();
  EXPECT_EQ(client->leader(), second.address());
  // One write to the first, at most one attempt lost on the dead
  // connection, and one to the second.
  EXPECT_LE(client->stats().attempts, 3u);
}

// A sessiond cluster on 127.0.0.1: peer ports picked free up front (the
// --initial_cluster flag names them), client ports picked by each daemon.
// Every process is killed when the cluster goes.
//
// Not thread-safe.
class TestCluster {
 public:
  // Starts `n` nodes with `flags` added to each; true once every one
  // printed its LISTENING line.
  bool Start(int n, const std::vector<std::string>& flags = {}) {
    // Not ephemeral ports (ClosedPorts): until a node binds its own, the
    // others' dialing could be given it as a source port.
    std::vector<int> peer_ports;
    for (int i = 0; i < n; ++i) {
      peer_ports.push_back(::sessiond::testing::PickFreePort());
    }
    std::vector<std::string> members;
    for (int i = 0; i < n; ++i) {
      members.push_back(absl::StrCat(i + 1, "=127.0.0.1:", peer_ports[i]));
    }
    const std::string initial_cluster = absl::StrJoin(members, ",");
    for (int i = 0; i < n; ++i) {
      auto node = std::make_unique<Node>();
      std::vector<std::string> argv = {
          SESSIOND_BINARY,     "--node_id",     absl::StrCat(i + 1),
          "--initial_cluster", initial_cluster, "--listen",
          "127.0.0.1:0",       "--data_dir",    node->dir.path() + "/data"};
      argv.insert(argv.end(), flags.begin(), flags.end());
      node->child = Child::Start(argv, node->dir.path() + "/sessiond.out");
      if (!node->child) return false;
      nodes_.push_back(std::move(node));
    }
    for (auto& node : nodes_) {
      std::optional<std::string> line =
          node->child->WaitForLine("LISTENING ", 30000);
      if (!line) return false;
      node->address = line->substr(std::string("LISTENING ").size());
      while (!node->address.empty() && isspace(node->address.back())) {
        node->address.pop_back();
      }
    }
    return true;
  }

  // SIGKILL. `id` is the node id (1-based).
  void Kill(uint64_t id) { nodes_.at(id - 1)->child.reset(); }
  bool alive(uint64_t id) const {
    return id >= 1 && id <= nodes_.size() && nodes_[id - 1]->child != nullptr;
  }
  const std::string& address(uint64_t id) const {
    return nodes_.at(id - 1)->address;
  }
  std::vector<std::string> addresses() const {
    std::vector<std::string> out;
    for (const auto& node : nodes_) out.push_back(node->address);
    return out;
  }

  // AdminService.ClusterStatus as node `id` sees it.
  absl::StatusOr<v1::ClusterStatusResponse> Status(uint64_t id) const {
    auto stub = v1::AdminService::NewStub(
        grpc::CreateChannel(address(id), grpc::InsecureChannelCredentials()));
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() +
                         std::chrono::seconds(5));
    v1::ClusterStatusResponse response;
    grpc::Status status =
        stub->ClusterStatus(&context, v1::ClusterStatusRequest(), &response);
    if (!status.ok()) return FromGrpcStatus(status);
    return response;
  }

  // Waits up to `timeout_ms` until some live node reports a live leader
  // that every live member follows, each reachable and announced (started,
  // client address known); returns that node's status.
  std::optional<v1::ClusterStatusResponse> WaitReady(int timeout_ms) const {
    const int64_t deadline = NowMs() + timeout_ms;
    while (NowMs() < deadline) {
      for (uint64_t id = 1; id <= nodes_.size(); ++id) {
        if (!alive(id)) continue;
        absl::StatusOr<v1::ClusterStatusResponse> status = Status(id);
        if (status.ok() && Ready(*status)) return *status;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    return std::nullopt;
  }

 private:
  struct Node {
    TempDir dir;
    std::unique_ptr<Child> child;  // null once killed
    std::string address;
  };

  bool Ready(const v1::ClusterStatusResponse& status) const {
    if (status.leader() == 0 || !alive(status.leader())) return false;
    for (const v1::MemberStatus& m : status.members()) {
      if (!alive(m.node_id())) continue;
      if (!m.reachable() || !m.started() || m.client_address().empty() ||
          m.leader() != status.leader()) {
        return false;
      }
    }
    return true;
  }

  std::vector<std::unique_ptr<Node>> nodes_;
};

std::string ClientAddressOf(const v1::ClusterStatusResponse& status,
                            uint64_t id) {
  for (const v1::MemberStatus& m : status.members()) {
    if (m.node_id() == id) return m.client_address();
  }
  return "";
}

std::map<uint64_t, uint64_t> ForwardedWrites(
    const v1::ClusterStatusResponse& status) {
  std::map<uint64_t, uint64_t> out;
  for (const v1::MemberStatus& m : status.members()) {
    out[m.node_id()] = m.metrics().forwarded_writes();
  }
  return out;
}

// Once a write has taught the client the leader, writes go to it directly:
// no follower forwards any of them.
TEST(ClusterClientTest, WritesGoStraightToTheLeader) {
  TestCluster cluster;
  ASSERT_TRUE(cluster.Start(3)) << "a node did not print LISTENING";
  std::optional<v1::ClusterStatusResponse> ready = cluster.WaitReady(60000);
  ASSERT_TRUE(ready.has_value()) << "no leader within 60 s";
  auto client = SessionClient::Connect(cluster.addresses());

  // Measured within one term; an election in between (a loaded machine)
  // measures again, a bounded number of times.
  bool measured = false;
  for (int round = 0; round < 3 && !measured; ++round) {
    // The first write: whichever node it reaches, the answer names the
    // leader (or comes from the leader itself).
    absl::StatusOr<v1::CreateSessionResponse> first =
        client->CreateSession(CreateRequest("frank"));
    std::optional<v1::ClusterStatusResponse> before = cluster.WaitReady(30000);
    ASSERT_TRUE(before.has_value());
    if (!first.ok()) continue;  // an election under way: learn again
    const std::string leader_address =
        ClientAddressOf(*before, before->leader());
    // The leader announces the address it bound, which is what it printed.
    EXPECT_EQ(leader_address, cluster.address(before->leader()));

    absl::Status error;
    for (int i = 0; i < 10 && error.ok(); ++i) {
      absl::StatusOr<v1::CreateSessionResponse> created =
          client->CreateSession(CreateRequest("frank"));
      if (!created.ok()) {
        error = created.status();
        break;
      }
      v1::TouchSessionRequest touch;
      touch.set_token(created->token());
      error.Update(client->TouchSession(touch).status());
      v1::UpdateSessionRequest update;
      update.set_token(created->token());
      (*update.mutable_set_attributes())["n"] = absl::StrCat(i);
      error.Update(client->UpdateSession(update).status());
      v1::RevokeSessionRequest revoke;
      revoke.set_token(created->token());
      error.Update(client->RevokeSession(revoke).status());
    }
    absl::StatusOr<v1::ClusterStatusResponse> after =
        cluster.Status(before->leader());
    ASSERT_TRUE(after.ok()) << after.status();
    if (after->term() != before->term() ||
        after->leader() != before->leader()) {
      continue;  // an election: the writes could rightly be forwarded
    }
    ASSERT_TRUE(error.ok()) << error;
    EXPECT_EQ(client->leader(), leader_address);
    const std::map<uint64_t, uint64_t> was = ForwardedWrites(*before);
    const std::map<uint64_t, uint64_t> is = ForwardedWrites(*after);
    for (const auto& [id, count] : is) {
      if (id == before->leader()) continue;
      EXPECT_EQ(count, was.at(id)) << "follower " << id << " forwarded writes";
    }
    measured = true;
  }
  ASSERT_TRUE(measured) << "the leader kept changing";
  const SessionClient::Stats stats = client->stats();
  EXPECT_GE(stats.leader_changes, 1u);
  EXPECT_EQ(stats.extra_channels_opened, 0u);
  EXPECT_EQ(stats.leader_hints_ignored, 0u);
}

// An empty CreateSessions commits nothing, so the follower that answers it
// is no leader: it names the leader as after any write it answers, and the
// client does not take the follower for the leader (which sent every later
// write of this client through it, forwarded).
TEST(ClusterClientTest, AnEmptyBatchAnsweredByAFollowerNamesTheLeader) {
  TestCluster cluster;
  ASSERT_TRUE(cluster.Start(3)) << "a node did not print LISTENING";
  std::optional<v1::ClusterStatusResponse> ready = cluster.WaitReady(60000);
  ASSERT_TRUE(ready.has_value()) << "no leader within 60 s";
  const uint64_t follower = ready->leader() == 1 ? 2 : 1;
  auto client = SessionClient::Connect({cluster.address(follower)});
  absl::StatusOr<v1::CreateSessionsResponse> none =
      client->CreateSessions(v1::CreateSessionsRequest());
  ASSERT_TRUE(none.ok()) << none.status();
  EXPECT_EQ(none->responses_size(), 0);
  EXPECT_NE(client->leader(), cluster.address(follower));
  std::optional<v1::ClusterStatusResponse> after = cluster.WaitReady(30000);
  ASSERT_TRUE(after.has_value());
  if (after->term() == ready->term()) {
    EXPECT_EQ(client->leader(), ClientAddressOf(*after, after->leader()));
  }
}

// SIGKILL the leader: reads keep being answered by the survivors (the
// client retries on another endpoint, the caller sees no error), and writes
// go through again once they elect a new leader, which the client learns.
TEST(ClusterClientTest, LeaderKilledReadsContinueAndWritesResume) {
  TestCluster cluster;
  ASSERT_TRUE(cluster.Start(3, {"--tick_ms", "50", "--election_ticks", "10",
                                "--heartbeat_ticks", "3"}))
      << "a node did not print LISTENING";
  ASSERT_TRUE(cluster.WaitReady(60000).has_value()) << "no leader within 60 s";
  auto client = SessionClient::Connect(cluster.addresses());

  constexpr int kSessions = 5;
  std::vector<std::string> tokens;
  for (int i = 0; i < kSessions; ++i) {
    absl::StatusOr<v1::CreateSessionResponse> created =
        client->CreateSession(CreateRequest("grace"));
    ASSERT_TRUE(created.ok()) << created.status();
    tokens.push_back(created->token());
  }
  std::optional<v1::ClusterStatusResponse> status = cluster.WaitReady(30000);
  ASSERT_TRUE(status.has_value());
  const uint64_t old_leader = status->leader();
  ASSERT_EQ(client->leader(), cluster.address(old_leader));
  cluster.Kill(old_leader);

  // A write right away: the client still takes the dead node for the leader.
  // It finds the connection closed and sends the write elsewhere (a survivor
  // holds it until a leader is elected), or, when it could not tell in time,
  // the write fails with an unknown outcome. Either way the dead node is no
  // longer the leader.
  absl::StatusOr<v1::CreateSessionResponse> at_once =
      client->CreateSession(CreateRequest("heidi"));
  if (!at_once.ok()) {
    EXPECT_THAT(at_once.status().code(),
                ::testing::AnyOf(absl::StatusCode::kUnavailable,
                                 absl::StatusCode::kDeadlineExceeded))
        << at_once.status();
  }
  EXPECT_NE(client->leader(), cluster.address(old_leader));

  const SessionClient::Stats before = client->stats();
  int reads = 0;
  const int64_t reads_until = NowMs() + 60000;
  for (int i = 0; i < 30 && NowMs() < reads_until; ++i, ++reads) {
    if (i % 3 == 0) {
      absl::StatusOr<v1::ValidateSessionResponse> answer =
          client->Validate(tokens[i % kSessions]);
      ASSERT_TRUE(answer.ok()) << "read " << i << ": " << answer.status();
      EXPECT_EQ(answer->outcome(), v1::ValidateSessionResponse::VALID);
    } else if (i % 3 == 1) {
      v1::BatchValidateSessionsRequest batch;
      for (const std::string& token : tokens) {
        batch.add_requests()->set_token(token);
      }
      absl::StatusOr<v1::BatchValidateSessionsResponse> answers =
          client->BatchValidateSessions(batch);
      ASSERT_TRUE(answers.ok()) << "read " << i << ": " << answers.status();
      for (const auto& answer : answers->responses()) {
        EXPECT_EQ(answer.outcome(), v1::ValidateSessionResponse::VALID);
      }
    } else {
      v1::ListUserSessionsRequest list;
      list.set_user_id("grace");
      absl::StatusOr<v1::ListUserSessionsResponse> listed =
          client->ListUserSessions(list);
      ASSERT_TRUE(listed.ok()) << "read " << i << ": " << listed.status();
      EXPECT_EQ(listed->sessions_size(), kSessions);
    }
  }
  // Bounded: far fewer retries than reads (the dead node is passed over once
  // its channel has failed).
  EXPECT_LE(client->stats().retries - before.retries,
            static_cast<uint64_t>(reads));

  // Writes fail (outcome unknown) until the survivors have a leader.
  absl::StatusOr<v1::CreateSessionResponse> created;
  const int64_t writes_until = NowMs() + 60000;
  for (int i = 0; i < 100 && NowMs() < writes_until; ++i) {
    created = client->CreateSession(CreateRequest("heidi"));
    if (created.ok()) break;
    EXPECT_THAT(created.status().code(),
                ::testing::AnyOf(absl::StatusCode::kUnavailable,
                                 absl::StatusCode::kDeadlineExceeded))
        << created.status();
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  ASSERT_TRUE(created.ok())
      << "no write succeeded after the leader died: " << created.status();

  std::optional<v1::ClusterStatusResponse> next = cluster.WaitReady(30000);
  ASSERT_TRUE(next.has_value()) << "the survivors report no leader";
  ASSERT_NE(next->leader(), old_leader);
  // One more write at most to learn it (the first may have been answered by
  // the new leader itself, or named it).
  for (int i = 0; i < 10 && client->leader() != cluster.address(next->leader());
       ++i) {
    ASSERT_TRUE(client->CreateSession(CreateRequest("heidi")).ok());
  }
  EXPECT_EQ(client->leader(), cluster.address(next->leader()));
  EXPECT_GE(client->stats().leader_changes, 2u);
  EXPECT_GE(client->stats().leaders_forgotten, 1u);

  v1::ValidateSessionRequest linearizable;
  linearizable.set_token(created->token());
  linearizable.set_consistency(v1::LINEARIZABLE);
  absl::StatusOr<v1::ValidateSessionResponse> answer =
      client->ValidateSession(linearizable);
  ASSERT_TRUE(answer.ok()) << answer.status();
  EXPECT_EQ(answer->outcome(), v1::ValidateSessionResponse::VALID);
}

// No endpoint answers (two refuse connections, one accepts TCP and never
// speaks): every call ends by call_timeout, whatever the per-attempt
// deadline and attempt budget. A sanity bound, not a timing assertion: 3x.
TEST(ClientDeadlineTest, CallTimeoutBoundsTheWholeCall) {
  SilentListener silent;
  const std::vector<int> closed = ClosedPorts(2);
  SessionClientOptions options;
  options.call_timeout = absl::Seconds(1);
  options.deadline = absl::Seconds(30);
  options.connect_timeout = absl::Seconds(30);
  options.max_attempts = 1000;
  options.initial_backoff = absl::Milliseconds(5);
  options.max_backoff = absl::Milliseconds(50);
  auto client = SessionClient::Connect(
      {absl::StrCat("127.0.0.1:", closed[0]),
       absl::StrCat("127.0.0.1:", closed[1]), silent.address()},
      options);
  const auto no_answer = ::testing::AnyOf(absl::StatusCode::kUnavailable,
                                          absl::StatusCode::kDeadlineExceeded);
  constexpr int64_t kBoundMs = 3 * 1000;

  int64_t start = NowMs();
  absl::Status validated = client->Validate("some-token").status();
  EXPECT_THAT(validated.code(), no_answer) << validated;
  EXPECT_LT(NowMs() - start, kBoundMs) << validated;

  start = NowMs();
  v1::ListUserSessionsRequest list;
  list.set_user_id("ivan");
  absl::Status listed = client->ListUserSessions(list).status();
  EXPECT_THAT(listed.code(), no_answer) << listed;
  EXPECT_LT(NowMs() - start, kBoundMs) << listed;

  start = NowMs();
  absl::Status created = client->CreateSession(CreateRequest("ivan")).status();
  EXPECT_THAT(created.code(), no_answer) << created;
  EXPECT_LT(NowMs() - start, kBoundMs) << created;

  start = NowMs();
  v1::RevokeSessionRequest revoke;
  revoke.set_session_id("s");
  absl::Status revoked = client->RevokeSession(revoke).status();
  EXPECT_THAT(revoked.code(), no_answer) << revoked;
  EXPECT_LT(NowMs() - start, kBoundMs) << revoked;
}

// Coalesced creates queued behind a batch that gets no answer end by their
// own call_timeout, not after every batch ahead of them (they are told they
// were not sent). A sanity bound, as above.
// A coalesced batch refused as invalid is sent again one create at a time;
// each caller sends its own, so a slow server does not make the last of
// them wait for every create before it. A sanity bound, as above: before,
// the sender sent them in turn, and the slowest caller took about
// kThreads x call_timeout.
TEST(ClientDeadlineTest, CallTimeoutBoundsCoalescedCreatesSentAgainOneByOne) {
  FakeServer server;
  server.service().SetFallback([] {
    Answer slow;
    slow.delay = absl::Milliseconds(1500);  // past call_timeout
    return slow;
  }());
  SessionClientOptions options = FakeOptions();
  options.call_timeout = absl::Seconds(1);
  options.coalesce_creates = true;
  options.max_coalesced_creates = 8;
  auto client = SessionClient::Connect(server.address(), options);
  constexpr int kThreads = 8;
  constexpr int64_t kBoundMs = 3 * 1000;
  std::vector<int64_t> took_ms(kThreads);
  std::vector<absl::Status> results(kThreads);
  std::vector<std::thread> threads;
  // The first caller sends alone, answered in 200 ms; those that queue
  // behind it meanwhile, left with over half their call_timeout (what a
  // caller needs to share a batch), are batched, and the batch is refused as
  // invalid. Each of them then sends its own, answered too late.
  Answer first;
  first.delay = absl::Milliseconds(200);
  server.service().Push(first);
  server.service().Push(Fail(grpc::StatusCode::INVALID_ARGUMENT));
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      const int64_t start = NowMs();
      results[t] = client->CreateSession(CreateRequest("kim")).status();
      took_ms[t] = NowMs() - start;
    });
  }
  for (std::thread& t : threads) t.join();
  for (int t = 0; t < kThreads; ++t) {
    EXPECT_LT(took_ms[t], kBoundMs) << results[t];
  }
  EXPECT_GE(server.service().calls("CreateSessions"), 1);
}

// A caller that spent most of its call_timeout queued behind a slow batch
// does not go into the next one: that batch would end by its deadline, and
// every create in it, including ones just queued with most of their time
// left, would end "outcome unknown". It is answered "not sent" instead.
TEST(ClientCoalesceTest, ACallerNearItsDeadlineDoesNotCutTheNextBatchShort) {
  FakeServer server;
  SessionClientOptions options = FakeOptions();
  options.call_timeout = absl::Seconds(2);
  options.coalesce_creates = true;
  auto client = SessionClient::Connect(server.address(), options);
  Answer slow;
  slow.delay = absl::Milliseconds(1800);
  server.service().Push(slow);
  Answer quick;
  quick.delay = absl::Milliseconds(200);
  server.service().Push(quick);
  absl::Status first, early, late;
  std::thread sender(
      [&] { first = client->CreateSession(CreateRequest("a")).status(); });
  absl::SleepFor(absl::Milliseconds(10));
  std::thread queued_early(
      [&] { early = client->CreateSession(CreateRequest("b")).status(); });
  absl::SleepFor(absl::Milliseconds(1500));
  std::thread queued_late(
      [&] { late = client->CreateSession(CreateRequest("c")).status(); });
  sender.join();
  queued_early.join();
  queued_late.join();
  EXPECT_TRUE(IsNotSent(early)) << early;
  EXPECT_TRUE(late.ok()) << late;
  EXPECT_EQ(server.service().calls("CreateSessions"), 0);
  EXPECT_EQ(server.service().calls("CreateSession"), 2);
}

// A batch ends by the earliest deadline in it, and is sent only if a
// quarter of min(deadline, call_timeout) is left once a channel connects. A
// caller that had waited behind a slow batch until just over that quarter
// was left went into the next batch, whose connect wait (the 1 ms poll of a
// quiet channel at least; here the silent leader's connect_timeout) took it
// under the floor: every caller in it was "not sent", though the others had
// most of their time. Now only the nearly expired one is.
TEST(ClientCoalesceTest, ANearlyExpiredCallerDoesNotCostItsBatchItsTime) {
  FakeServer server;
  SilentListener silent;
  // The first create's answer names the silent node leader: the next write
  // waits connect_timeout for it before going to `server`.
  Answer slow = OkNaming(silent.address(), "2");
  slow.delay = absl::Milliseconds(1200);
  server.service().Push(slow);
  SessionClientOptions options = FakeOptions();
  options.deadline = absl::Seconds(2);
  options.call_timeout = absl::Seconds(2);  // the floor: 500 ms
  options.connect_timeout = absl::Milliseconds(400);
  options.coalesce_creates = true;
  // Round-robin starts at `server`.
  auto client =
      SessionClient::Connect({server.address(), silent.address()}, options);
  absl::Status first, early;
  constexpr int kLate = 3;
  std::vector<absl::Status> late(kLate);
  std::thread sender(
      [&] { first = client->CreateSession(CreateRequest("a")).status(); });
  absl::SleepFor(absl::Milliseconds(20));
  // Has at most ~820 ms left when the first create is answered: over the
  // floor, under it plus the connect wait.
  std::thread queued_early(
      [&] { early = client->CreateSession(CreateRequest("b")).status(); });
  absl::SleepFor(absl::Milliseconds(950));
  // Have ~1.8 s left when the first create is answered.
  std::vector<std::thread> queued_late;
  for (int i = 0; i < kLate; ++i) {
    queued_late.emplace_back([&, i] {
      late[i] = client->CreateSession(CreateRequest("c")).status();
    });
  }
  sender.join();
  queued_early.join();
  for (std::thread& t : queued_late) t.join();
  EXPECT_TRUE(first.ok()) << first;
  EXPECT_TRUE(IsNotSent(early)) << early;
  for (const absl::Status& result : late) EXPECT_TRUE(result.ok()) << result;
  EXPECT_EQ(server.service().calls("CreateSession"), 1);
  EXPECT_EQ(server.service().calls("CreateSessions"), 1);
}

// `threads` concurrent coalesced creates of `request` through a client of
// `server`: the first caller sends alone, answered in half a second, and
// those that queue behind it meanwhile go in a batch, answered by `batch`
// (default: OK). Every caller's result.
std::vector<absl::Status> CreatesQueuedBehindOne(
    FakeServer& server, int max_coalesced, int threads,
    const v1::CreateSessionRequest& request,
    std::optional<Answer> batch = std::nullopt) {
  SessionClientOptions options = FakeOptions();
  options.coalesce_creates = true;
  options.max_coalesced_creates = max_coalesced;
  auto client = SessionClient::Connect(server.address(), options);
  Answer first;
  first.delay = absl::Milliseconds(500);
  server.service().Push(first);
  if (batch) server.service().Push(*batch);
  std::vector<absl::Status> results(threads);
  std::vector<std::thread> callers;
  for (int t = 0; t < threads; ++t) {
    callers.emplace_back(
        [&, t] { results[t] = client->CreateSession(request).status(); });
  }
  for (std::thread& t : callers) t.join();
  return results;
}

// A batch refused for one caller's sake (one user at --max_sessions_per_user,
// FAILED_PRECONDITION; a JWT the node cannot sign; ABORTED, its signing key
// retired) created nothing: each caller sends its own again, as after
// INVALID_ARGUMENT. It used to fail every caller in the batch, so user B's
// login failed with "the user already has the most live sessions allowed"
// because user A in the same batch was at the cap.
TEST(ClientCoalesceTest, ABatchRefusedForOneCallersSakeIsSentAgainOneByOne) {
  for (const grpc::StatusCode refusal :
       {grpc::StatusCode::FAILED_PRECONDITION, grpc::StatusCode::ABORTED}) {
    FakeServer server;
    constexpr int kThreads = 6;
    const std::vector<absl::Status> results = CreatesQueuedBehindOne(
        server, 8, kThreads, CreateRequest("kim"), Fail(refusal));
    ASSERT_EQ(server.service().calls("CreateSessions"), 1)
        << "the callers were not batched";
    for (const absl::Status& result : results) {
      EXPECT_TRUE(result.ok()) << refusal << ": " << result;
    }
    EXPECT_EQ(server.service().calls("CreateSession"), kThreads);
  }
}

// A coalesced batch is closed by size too: its reply carries every record,
// and one over this client's receive limit (gRPC's 4 MiB) is refused after
// the sessions were created, every caller told "outcome unknown" though
// each create alone would have succeeded. Before, only the count closed a
// batch (256 records of 16 KiB make such a reply).
TEST(ClientCoalesceTest, ABatchIsClosedBeforeItsReplyOutgrowsTheClient) {
  FakeServer server(/*max_receive_bytes=*/64 << 20);
  v1::CreateSessionRequest request = CreateRequest("big");
  (*request.mutable_attributes())["blob"] = std::string(200 << 10, 'b');
  for (const absl::Status& result :
       CreatesQueuedBehindOne(server, 256, 32, request)) {
    EXPECT_TRUE(result.ok()) << result;
  }
  EXPECT_GE(server.service().calls("CreateSessions"), 1);
}

TEST(ClientDeadlineTest, CallTimeoutBoundsCoalescedCreatesWaitingTheirTurn) {
  SilentListener silent;
  SessionClientOptions options;
  options.call_timeout = absl::Seconds(1);
  options.connect_timeout = absl::Seconds(30);
  options.coalesce_creates = true;
  options.max_coalesced_creates = 1;
  auto client = SessionClient::Connect({silent.address()}, options);
  constexpr int kThreads = 4;
  constexpr int64_t kBoundMs = 3 * 1000;
  std::vector<int64_t> took_ms(kThreads);
  std::vector<absl::Status> results(kThreads);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      const int64_t start = NowMs();
      results[t] = client->CreateSession(CreateRequest("judy")).status();
      took_ms[t] = NowMs() - start;
    });
  }
  for (std::thread& t : threads) t.join();
  for (int t = 0; t < kThreads; ++t) {
    // Nothing reached a server: each caller is told so, including those
    // whose call_timeout ran out while queued behind a batch.
    EXPECT_EQ(results[t].code(), absl::StatusCode::kUnavailable) << results[t];
    EXPECT_TRUE(IsNotSent(results[t])) << results[t];
    EXPECT_LT(took_ms[t], kBoundMs) << results[t];
  }
}

}  // namespace
}  // namespace sessiond::client
