// Copyright sessiond authors. Licensed under the Apache License 2.0.
//
// A real Daemon in process on a temp dir and 127.0.0.1 with a port the
// kernel picked, and helpers that call it over real gRPC: the fixture of the
// daemon's end-to-end tests (server_test, hostile_test).
#ifndef SESSIOND_TESTS_SERVER_DAEMON_FIXTURE_H_
#define SESSIOND_TESTS_SERVER_DAEMON_FIXTURE_H_

#include <grpcpp/client_context.h>

#include <memory>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "server/config.h"
#include "server/daemon.h"
#include "sessiond/v1/session.grpc.pb.h"
#include "tests/server/test_util.h"

namespace sessiond::server::testing {

using sessiond::v1::CreateSessionRequest;
using sessiond::v1::CreateSessionResponse;
using sessiond::v1::ListUserSessionsRequest;
using sessiond::v1::ListUserSessionsResponse;
using sessiond::v1::RevokeSessionRequest;
using sessiond::v1::RevokeSessionResponse;
using sessiond::v1::Session;
using sessiond::v1::SessionService;
using sessiond::v1::TouchSessionRequest;
using sessiond::v1::TouchSessionResponse;
using sessiond::v1::UpdateSessionRequest;
using sessiond::v1::UpdateSessionResponse;
using sessiond::v1::ValidateSessionRequest;
using sessiond::v1::ValidateSessionResponse;

// Options small enough that expiry, sweeps and touch flushes happen within
// a test's bounded polls.
Config TestConfig(const std::string& data_dir);

std::unique_ptr<SessionService::Stub> StubFor(const std::string& address);

// Byte-for-byte comparable: map entries in a fixed order.
std::string Canonical(const Session& session);

// 30 s from now: a hung call fails the test instead of hanging it.
void SetDeadline(grpc::ClientContext* context);

class DaemonTest : public ::testing::Test {
 protected:
  void SetUp() override { StartDaemon(); }
  void TearDown() override { daemon_.reset(); }

  // The config StartDaemon uses; a fixture for other options overrides it.
  virtual Config MakeConfig() { return TestConfig(dir_.Child("data")); }

  void StartDaemon() { StartDaemonWith(MakeConfig()); }
  void StartDaemonWith(const Config& config) {
    auto daemon = Daemon::Start(config);
    ASSERT_TRUE(daemon.ok()) << daemon.status();
    daemon_ = *std::move(daemon);
    stub_ = StubFor(daemon_->address());
  }
  void RestartDaemon() { RestartDaemonWith(MakeConfig()); }
  // On the same data dir, with `config` (TestConfig(dir_.Child("data"))
  // with a few options changed).
  void RestartDaemonWith(const Config& config) {
    daemon_->Shutdown();
    daemon_.reset();
    StartDaemonWith(config);
  }

  grpc::Status Create(const CreateSessionRequest& request,
                      CreateSessionResponse* response) {
    grpc::ClientContext context;
    SetDeadline(&context);
    return stub_->CreateSession(&context, request, response);
  }
  CreateSessionResponse MustCreate(const std::string& user_id,
                                   int64_t ttl_ms = 0,
                                   int64_t idle_timeout_ms = 0) {
    CreateSessionRequest request;
    request.set_user_id(user_id);
    request.set_ttl_ms(ttl_ms);
    request.set_idle_timeout_ms(idle_timeout_ms);
    (*request.mutable_attributes())["role"] = "reader";
    request.mutable_client()->set_device("laptop");
    CreateSessionResponse response;
    const grpc::Status s = Create(request, &response);
    EXPECT_TRUE(s.ok()) << s.error_message();
    return response;
  }
  ValidateSessionResponse Validate(const std::string& token,
                                   bool touch = false) {
    ValidateSessionRequest request;
    request.set_token(token);
    request.set_touch(touch);
    request.set_request_id(7);
    ValidateSessionResponse response;
    grpc::ClientContext context;
    SetDeadline(&context);
    const grpc::Status s = stub_->ValidateSession(&context, request, &response);
    EXPECT_TRUE(s.ok()) << s.error_message();
    EXPECT_EQ(response.request_id(), 7u);
    return response;
  }
  grpc::Status Touch(const std::string& token, TouchSessionResponse* response) {
    TouchSessionRequest request;
    request.set_token(token);
    grpc::ClientContext context;
    SetDeadline(&context);
    return stub_->TouchSession(&context, request, response);
  }
  grpc::Status Update(const UpdateSessionRequest& request,
                      UpdateSessionResponse* response) {
    grpc::ClientContext context;
    SetDeadline(&context);
    return stub_->UpdateSession(&context, request, response);
  }
  grpc::Status Revoke(const RevokeSessionRequest& request,
                      RevokeSessionResponse* response) {
    grpc::ClientContext context;
    SetDeadline(&context);
    return stub_->RevokeSession(&context, request, response);
  }
  grpc::Status List(const ListUserSessionsRequest& request,
                    ListUserSessionsResponse* response) {
    grpc::ClientContext context;
    SetDeadline(&context);
    return stub_->ListUserSessions(&context, request, response);
  }
  // Every session of `user_id` (revoked included), by paging, serialized so
  // two listings compare byte for byte.
  std::vector<std::string> ListAll(const std::string& user_id,
                                   uint32_t page_size = 1000) {
    std::vector<std::string> out;
    std::string page_token;
    for (int pages = 0; pages < 1000; ++pages) {
      ListUserSessionsRequest request;
      request.set_user_id(user_id);
      request.set_page_size(page_size);
      request.set_page_token(page_token);
      request.set_include_revoked(true);
      ListUserSessionsResponse response;
      const grpc::Status s = List(request, &response);
      EXPECT_TRUE(s.ok()) << s.error_message();
      if (!s.ok()) break;
      for (const Session& session : response.sessions()) {
        out.push_back(Canonical(session));
      }
      page_token = response.next_page_token();
      if (page_token.empty()) break;
    }
    return out;
  }

  ScopedTempDir dir_;
  std::unique_ptr<Daemon> daemon_;
  std::unique_ptr<SessionService::Stub> stub_;
};

}  // namespace sessiond::server::testing

#endif  // SESSIOND_TESTS_SERVER_DAEMON_FIXTURE_H_
