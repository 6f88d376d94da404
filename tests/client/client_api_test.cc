// Copyright sessiond authors. Licensed under the Apache License 2.0.
//
// The client side of the friendlier API (issue 9), against the real sessiond
// binary (SESSIOND_BINARY) on 127.0.0.1: client/service_config.json parses,
// names the idempotent calls only, and a gRPC channel built with it works
// (one with a broken config does not); the C++ client's GetSession,
// RotateSessionToken, creates with a request_id, and the error details it
// hands back as status payloads.
#include <grpcpp/create_channel.h>
#include <grpcpp/security/credentials.h>
#include <grpcpp/support/channel_arguments.h>

#include <fstream>
#include <iterator>
#include <memory>
#include <set>
#include <string>

#include "absl/time/clock.h"
#include "client/grpc_status.h"
#include "client/session_client.h"
#include "google/rpc/error_details.pb.h"
#include "google/rpc/status.pb.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/integration/sessiond_process.h"

namespace sessiond::client {
namespace {

namespace v1 = ::sessiond::v1;
using sessiond::testing::SessiondProcess;
using sessiond::testing::TempDir;

std::string ServiceConfigText() {
  std::ifstream in(std::string(SESSIOND_SOURCE_DIR) +
                   "/client/service_config.json");
  EXPECT_TRUE(in.good());
  return std::string((std::istreambuf_iterator<char>(in)),
                     std::istreambuf_iterator<char>());
}

class ClientApiTest : public ::testing::Test {
 protected:
  void SetUp() override {
    process_ = std::make_unique<SessiondProcess>(
        SESSIOND_BINARY, dir_.path() + "/data",
        std::vector<std::string>{"--max_sessions_per_user=1"});
    ASSERT_TRUE(process_->Start().ok()) << process_->log_path();
  }

  TempDir dir_;
  std::unique_ptr<SessiondProcess> process_;
};

TEST(ServiceConfigTest, RetriesTheIdempotentCallsOnly) {
  const nlohmann::json config = nlohmann::json::parse(ServiceConfigText());
  std::set<std::string> methods;
  for (const auto& method_config : config.at("methodConfig")) {
    const auto& policy = method_config.at("retryPolicy");
    EXPECT_LE(policy.at("maxAttempts").get<int>(), 5);  // gRPC's cap
    EXPECT_EQ(policy.at("retryableStatusCodes"),
              nlohmann::json::array({"UNAVAILABLE", "RESOURCE_EXHAUSTED"}));
    for (const auto& name : method_config.at("name")) {
      EXPECT_EQ(name.at("service"), "sessiond.v1.SessionService");
      methods.insert(name.at("method").get<std::string>());
    }
  }
  EXPECT_EQ(methods, (std::set<std::string>{
                         "ValidateSession", "BatchValidateSessions",
                         "StreamValidateSessions", "ListUserSessions",
                         "GetSession", "RevokeSession", "TouchSession"}));
  // Every method it names exists in the service.
  const auto* service = v1::SessionService::service_full_name();
  EXPECT_STREQ(service, "sessiond.v1.SessionService");
  for (const std::string& method : methods) {
    EXPECT_NE(v1::ValidateSessionRequest::descriptor()
                  ->file()
                  ->FindServiceByName("SessionService")
                  ->FindMethodByName(method),
              nullptr)
        << method;
  }
}

TEST_F(ClientApiTest, AChannelWithTheServiceConfigWorks) {
  grpc::ChannelArguments args;
  args.SetServiceConfigJSON(ServiceConfigText());
  auto channel = grpc::CreateCustomChannel(
      process_->address(), grpc::InsecureChannelCredentials(), args);
  auto stub = v1::SessionService::NewStub(channel);
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(10)));
  v1::ValidateSessionRequest request;
  request.set_token("not-a-token");
  v1::ValidateSessionResponse response;
  const grpc::Status s = stub->ValidateSession(&context, request, &response);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(response.outcome(), v1::ValidateSessionResponse::UNKNOWN);
  // The channel took the config (gRPC reports the one in use).
  EXPECT_NE(channel->GetServiceConfigJSON().find("retryPolicy"),
            std::string::npos)
      << channel->GetServiceConfigJSON();

  // A config that does not parse makes the channel refuse every call.
  grpc::ChannelArguments broken;
  broken.SetServiceConfigJSON("{\"methodConfig\": [");
  auto bad = v1::SessionService::NewStub(grpc::CreateCustomChannel(
      process_->address(), grpc::InsecureChannelCredentials(), broken));
  grpc::ClientContext bad_context;
  bad_context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(5)));
  const grpc::Status refused =
      bad->ValidateSession(&bad_context, request, &response);
  // gRPC 1.51 builds a lame channel: "Failed to create ... client channel".
  EXPECT_EQ(refused.error_code(), grpc::StatusCode::INVALID_ARGUMENT)
      << refused.error_message();
}

TEST_F(ClientApiTest, TheClientSpeaksTheNewCallsAndReadsTheDetails) {
  auto client = SessionClient::Connect(process_->address());
  v1::CreateSessionRequest create;
  create.set_user_id("alice");
  create.set_request_id(NewRequestId());
  EXPECT_EQ(create.request_id().size(), 22u);
  absl::StatusOr<v1::CreateSessionResponse> first =
      client->CreateSession(create);
  ASSERT_TRUE(first.ok()) << first.status();
  absl::StatusOr<v1::CreateSessionResponse> again =
      client->CreateSession(create);
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_TRUE(again->replayed());
  EXPECT_EQ(again->token(), first->token());

  // Over the cap (1 here): the reason reaches the caller.
  v1::CreateSessionRequest second;
  second.set_user_id("alice");
  absl::StatusOr<v1::CreateSessionResponse> refused =
      client->CreateSession(second);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(ErrorReason(refused.status()), "USER_SESSION_LIMIT");
  ASSERT_TRUE(ErrorInfoOf(refused.status()).has_value());
  EXPECT_EQ(ErrorInfoOf(refused.status())->domain(), "sessiond.dev");
  EXPECT_FALSE(RetryDelay(refused.status()).has_value());

  v1::GetSessionRequest get;
  get.set_session_id(first->session().session_id());
  absl::StatusOr<v1::GetSessionResponse> got = client->GetSession(get);
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->session().user_id(), "alice");

  v1::RotateSessionTokenRequest rotate;
  rotate.set_token(first->token());
  absl::StatusOr<v1::RotateSessionTokenResponse> rotated =
      client->RotateSessionToken(rotate);
  ASSERT_TRUE(rotated.ok()) << rotated.status();
  EXPECT_EQ(client->Validate(first->token())->outcome(),
            v1::ValidateSessionResponse::UNKNOWN);
  EXPECT_EQ(client->Validate(rotated->token())->outcome(),
            v1::ValidateSessionResponse::VALID);

  v1::RevokeSessionRequest revoke;
  revoke.set_token(rotated->token());
  ASSERT_TRUE(client->RevokeSession(revoke).ok());
  v1::TouchSessionRequest touch;
  touch.set_token(rotated->token());
  absl::StatusOr<v1::TouchSessionResponse> touched =
      client->TouchSession(touch);
  EXPECT_EQ(ErrorReason(touched.status()), "SESSION_REVOKED");
  // No details for NOT_FOUND.
  get.set_session_id("AAAAAAAAAAAAAAAAAAAAAA");
  EXPECT_EQ(ErrorReason(client->GetSession(get).status()), "");

  // create_request_ids: every create gets its own id (bob: two sessions
  // would pass the cap, so one create, retried safely).
  SessionClientOptions options;
  options.create_request_ids = true;
  auto with_ids = SessionClient::Connect(process_->address(), options);
  v1::CreateSessionRequest plain;
  plain.set_user_id("bob");
  absl::StatusOr<v1::CreateSessionResponse> bob =
      with_ids->CreateSession(plain);
  ASSERT_TRUE(bob.ok()) << bob.status();
  EXPECT_FALSE(bob->replayed());
}

TEST(ClientStatusTest, DetailsBecomePayloads) {
  google::rpc::Status details;
  details.set_code(static_cast<int>(grpc::StatusCode::RESOURCE_EXHAUSTED));
  details.set_message("too many writes in flight");
  google::rpc::ErrorInfo info;
  info.set_reason("TOO_MANY_PENDING_WRITES");
  info.set_domain("sessiond.dev");
  (*info.mutable_metadata())["leader_id"] = "2";
  details.add_details()->PackFrom(info);
  google::rpc::RetryInfo retry;
  retry.mutable_retry_delay()->set_nanos(100'000'000);
  details.add_details()->PackFrom(retry);
  const absl::Status status = FromGrpcStatus(
      grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
                   "too many writes in flight", details.SerializeAsString()));
  EXPECT_EQ(status.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(status.message(), "too many writes in flight");
  EXPECT_EQ(ErrorReason(status), "TOO_MANY_PENDING_WRITES");
  EXPECT_EQ(ErrorInfoOf(status)->metadata().at("leader_id"), "2");
  EXPECT_EQ(RetryDelay(status), absl::Milliseconds(100));
  // Garbage details are dropped, the status stands.
  const absl::Status garbage = FromGrpcStatus(
      grpc::Status(grpc::StatusCode::UNAVAILABLE, "x", "\xff\xff garbage"));
  EXPECT_EQ(garbage.code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(ErrorReason(garbage), "");
  EXPECT_FALSE(RetryDelay(garbage).has_value());
}

}  // namespace
}  // namespace sessiond::client
