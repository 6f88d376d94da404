// Copyright sessiond authors. Licensed under the Apache License 2.0.
//
// The friendlier API (issue 9) on a real node: CreateSession.request_id,
// GetSession, RotateSessionToken, the per-user cap, and the google.rpc error
// details of refusals, over real gRPC to an in-process Daemon on a temp dir.
// Every refusal is checked for its exact status, message and ErrorInfo
// reason, and for changing nothing.
#include <grpcpp/client_context.h>
#include <grpcpp/create_channel.h>
#include <grpcpp/security/credentials.h>
#include <grpcpp/support/channel_arguments.h>

#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "google/rpc/error_details.pb.h"
#include "google/rpc/status.pb.h"
#include "gtest/gtest.h"
#include "server/config.h"
#include "sessiond/v1/session.grpc.pb.h"
#include "storage/session_state_machine.h"
#include "tests/server/daemon_fixture.h"

namespace sessiond::server {
namespace {

using sessiond::v1::CreateSessionRequest;
using sessiond::v1::CreateSessionResponse;
using sessiond::v1::GetSessionRequest;
using sessiond::v1::GetSessionResponse;
using sessiond::v1::RotateSessionTokenRequest;
using sessiond::v1::RotateSessionTokenResponse;
using sessiond::v1::ValidateSessionResponse;
using testing::Canonical;
using testing::DaemonTest;
using testing::SetDeadline;
using testing::TestConfig;

const char kRequestId[] = "0b6f2d4e-8a51-4c3e-9d7a-1f2e3d4c5b6a";

// The ErrorInfo reason in a status's details ("" when none); checks the
// domain and that the google.rpc.Status repeats the code and message.
std::string ReasonOf(const grpc::Status& status) {
  google::rpc::Status details;
  if (status.error_details().empty() ||
      !details.ParseFromString(status.error_details())) {
    return "";
  }
  EXPECT_EQ(details.code(), static_cast<int>(status.error_code()));
  EXPECT_EQ(details.message(), status.error_message());
  for (const auto& any : details.details()) {
    google::rpc::ErrorInfo info;
    if (any.UnpackTo(&info)) {
      EXPECT_EQ(info.domain(), "sessiond.dev");
      return info.reason();
    }
  }
  return "";
}

class FriendlyApiTest : public DaemonTest {
 protected:
  CreateSessionRequest RequestFor(const std::string& user,
                                  const std::string& request_id) {
    CreateSessionRequest request;
    request.set_user_id(user);
    request.set_request_id(request_id);
    request.set_ttl_ms(3'600'000);
    (*request.mutable_attributes())["role"] = "reader";
    return request;
  }
  grpc::Status Get(
      const std::string& session_id, GetSessionResponse* response,
      sessiond::v1::Consistency level = sessiond::v1::LINEARIZABLE) {
    GetSessionRequest request;
    request.set_session_id(session_id);
    request.set_consistency(level);
    grpc::ClientContext context;
    SetDeadline(&context);
    return stub_->GetSession(&context, request, response);
  }
  grpc::Status Rotate(const std::string& token,
                      RotateSessionTokenResponse* response) {
    RotateSessionTokenRequest request;
    request.set_token(token);
    grpc::ClientContext context;
    SetDeadline(&context);
    return stub_->RotateSessionToken(&context, request, response);
  }
};

TEST_F(FriendlyApiTest, ARetriedCreateGetsTheSameSessionAndToken) {
  CreateSessionResponse first;
  grpc::Status s = Create(RequestFor("alice", kRequestId), &first);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_FALSE(first.replayed());
  EXPECT_EQ(first.token().size(), 43u);
  EXPECT_EQ(Validate(first.token()).outcome(), ValidateSessionResponse::VALID);

  // The same request_id with other fields is not a retry: refused (it got
  // the first create's session, whatever it asked), and nothing changes.
  CreateSessionRequest reused = RequestFor("alice", kRequestId);
  (*reused.mutable_attributes())["role"] = "admin";
  CreateSessionResponse refused;
  s = Create(reused, &refused);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION)
      << s.error_message();
  EXPECT_EQ(ReasonOf(s), "REQUEST_ID_REUSED") << s.error_message();

  // The retry (the same request): the first create's session and token.
  CreateSessionResponse again;
  s = Create(RequestFor("alice", kRequestId), &again);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_TRUE(again.replayed());
  EXPECT_EQ(again.token(), first.token());
  EXPECT_EQ(Canonical(again.session()), Canonical(first.session()));
  EXPECT_EQ(ListAll("alice").size(), 1u);

  // Another request id, or another user, makes another session.
  CreateSessionResponse other;
  ASSERT_TRUE(
      Create(RequestFor("alice", std::string(kRequestId) + "-2"), &other).ok());
  EXPECT_NE(other.session().session_id(), first.session().session_id());
  CreateSessionResponse bob;
  ASSERT_TRUE(Create(RequestFor("bob", kRequestId), &bob).ok());
  EXPECT_FALSE(bob.replayed());
  EXPECT_NE(bob.token(), first.token());
  EXPECT_EQ(ListAll("alice").size(), 2u);

  // Replicated state: a restarted node still knows the request id.
  RestartDaemon();
  CreateSessionResponse after_restart;
  s = Create(RequestFor("alice", kRequestId), &after_restart);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_TRUE(after_restart.replayed());
  EXPECT_EQ(after_restart.token(), first.token());
  EXPECT_EQ(ListAll("alice").size(), 2u);
}

TEST_F(FriendlyApiTest, RequestIdsAreCheckedAndChangeNothing) {
  CreateSessionResponse response;
  grpc::Status s = Create(RequestFor("alice", std::string(15, 'r')), &response);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(s.error_message(),
            "request_id: is 15 bytes, must be 16..128 (a random id, new for "
            "every login, e.g. a UUID)");
  s = Create(RequestFor("alice", std::string(129, 'r')), &response);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(s.error_message(),
            "request_id: is 129 bytes, must be 16..128 (a random id, new for "
            "every login, e.g. a UUID)");

  sessiond::v1::CreateSessionsRequest batch;
  batch.add_requests()->set_user_id("alice");
  *batch.add_requests() = RequestFor("alice", kRequestId);
  sessiond::v1::CreateSessionsResponse created;
  grpc::ClientContext context;
  SetDeadline(&context);
  s = stub_->CreateSessions(&context, batch, &created);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(s.error_message(),
            "requests[1].request_id: not taken by CreateSessions; send a "
            "create that must be retryable with CreateSession");
  EXPECT_TRUE(ListAll("alice").empty());
}

TEST_F(FriendlyApiTest, ARetryOfARevokedSessionIsRefusedWithItsReason) {
  CreateSessionResponse first;
  ASSERT_TRUE(Create(RequestFor("alice", kRequestId), &first).ok());
  sessiond::v1::RevokeSessionRequest revoke;
  revoke.set_token(first.token());
  sessiond::v1::RevokeSessionResponse revoked;
  ASSERT_TRUE(Revoke(revoke, &revoked).ok());
  const std::vector<std::string> before = ListAll("alice");

  CreateSessionResponse retry;
  const grpc::Status s = Create(RequestFor("alice", kRequestId), &retry);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_EQ(s.error_message(),
            absl::StrCat("request_id: the session this request_id created "
                         "(session_id ",
                         first.session().session_id(),
                         ") has since been revoked, has expired or had its "
                         "token rotated, so its token is no longer valid; "
                         "create it with a new request_id"));
  EXPECT_EQ(ReasonOf(s), "REQUEST_ID_SESSION_ENDED");
  EXPECT_EQ(ListAll("alice"), before);
  EXPECT_EQ(Validate(first.token()).outcome(),
            ValidateSessionResponse::REVOKED);
}

TEST_F(FriendlyApiTest, GetSessionBySessionId) {
  const CreateSessionResponse created = MustCreate("alice");
  GetSessionResponse got;
  grpc::Status s = Get(created.session().session_id(), &got);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(Canonical(got.session()), Canonical(created.session()));
  EXPECT_FALSE(got.expired());
  // Every consistency level answers on a node that holds the session.
  for (auto level : {sessiond::v1::CONSISTENCY_DEFAULT, sessiond::v1::LOCAL}) {
    GetSessionResponse again;
    ASSERT_TRUE(Get(created.session().session_id(), &again, level).ok());
    EXPECT_EQ(Canonical(again.session()), Canonical(created.session()));
  }

  // A revoked session is returned as it is.
  sessiond::v1::RevokeSessionRequest revoke;
  revoke.set_session_id(created.session().session_id());
  revoke.set_reason("by admin");
  sessiond::v1::RevokeSessionResponse revoked;
  ASSERT_TRUE(Revoke(revoke, &revoked).ok());
  ASSERT_TRUE(Get(created.session().session_id(), &got).ok());
  EXPECT_EQ(got.session().state(), sessiond::v1::SESSION_STATE_REVOKED);
  EXPECT_EQ(got.session().revoke_reason(), "by admin");

  // Unknown (well formed) and malformed ids.
  s = Get("AAAAAAAAAAAAAAAAAAAAAA", &got);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(s.error_message(), "no such session_id");
  EXPECT_EQ(ReasonOf(s), "");
  s = Get("abc", &got);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(s.error_message(),
            "session_id: malformed session id (a session id is 22 characters "
            "of base64url; got 3 bytes)");
  s = Get("", &got);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(s.error_message(), "session_id: must not be empty");
}

TEST_F(FriendlyApiTest, RotationGivesANewTokenAndKillsTheOldOne) {
  const CreateSessionResponse created = MustCreate("alice");
  RotateSessionTokenResponse rotated;
  grpc::Status s = Rotate(created.token(), &rotated);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(rotated.token().size(), 43u);
  EXPECT_NE(rotated.token(), created.token());
  // Same session: id, attributes, expiry, version; last_seen moves to the
  // rotation (a use of the session).
  EXPECT_GE(rotated.session().last_seen_at_ms(),
            created.session().last_seen_at_ms());
  sessiond::v1::Session same_but_last_seen = rotated.session();
  same_but_last_seen.set_last_seen_at_ms(created.session().last_seen_at_ms());
  EXPECT_EQ(Canonical(same_but_last_seen), Canonical(created.session()));
  EXPECT_EQ(Validate(created.token()).outcome(),
            ValidateSessionResponse::UNKNOWN);
  const ValidateSessionResponse v = Validate(rotated.token());
  EXPECT_EQ(v.outcome(), ValidateSessionResponse::VALID);
  EXPECT_EQ(v.session().session_id(), created.session().session_id());
  EXPECT_EQ(ListAll("alice").size(), 1u);

  // Refusals, each changing nothing.
  const std::vector<std::string> before = ListAll("alice");
  RotateSessionTokenResponse refused;
  s = Rotate(created.token(), &refused);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(s.error_message(), "no such session");
  s = Rotate("", &refused);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(s.error_message(), "token: must not be empty");
  s = Rotate("short", &refused);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(s.error_message(),
            "token: malformed token (a token is 43 characters of base64url, "
            "or a JWT of at most 8192 characters; got 5 bytes)");
  EXPECT_EQ(ListAll("alice"), before);

  sessiond::v1::RevokeSessionRequest revoke;
  revoke.set_token(rotated.token());
  sessiond::v1::RevokeSessionResponse revoked;
  ASSERT_TRUE(Revoke(revoke, &revoked).ok());
  const std::vector<std::string> revoked_state = ListAll("alice");
  s = Rotate(rotated.token(), &refused);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_EQ(s.error_message(), "session is revoked");
  EXPECT_EQ(ReasonOf(s), "SESSION_REVOKED");
  EXPECT_EQ(ListAll("alice"), revoked_state);
}

TEST_F(FriendlyApiTest, StateMachineRefusalsCarryTheirReasons) {
  const CreateSessionResponse created = MustCreate("alice");
  sessiond::v1::UpdateSessionRequest update;
  update.set_token(created.token());
  update.set_expected_version(7);
  (*update.mutable_set_attributes())["a"] = "b";
  sessiond::v1::UpdateSessionResponse updated;
  grpc::Status s = Update(update, &updated);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::ABORTED);
  EXPECT_EQ(s.error_message(), "version mismatch: expected 7, session is at 1");
  EXPECT_EQ(ReasonOf(s), "VERSION_MISMATCH");

  sessiond::v1::RevokeSessionRequest revoke;
  revoke.set_token(created.token());
  sessiond::v1::RevokeSessionResponse revoked;
  ASSERT_TRUE(Revoke(revoke, &revoked).ok());
  sessiond::v1::TouchSessionResponse touched;
  s = Touch(created.token(), &touched);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_EQ(s.error_message(), "session is revoked");
  EXPECT_EQ(ReasonOf(s), "SESSION_REVOKED");
  update.set_expected_version(0);
  s = Update(update, &updated);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_EQ(ReasonOf(s), "SESSION_REVOKED");
  // Codes without details: none.
  s = Touch("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", &touched);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_TRUE(s.error_details().empty());
}

// --create_request_window_ms at its minimum (1 s), sweeps every 50 ms.
class ShortWindowTest : public FriendlyApiTest {
 protected:
  Config MakeConfig() override {
    Config config = TestConfig(dir_.Child("data"));
    config.create_request_window_ms = 1000;
    return config;
  }
};

TEST_F(ShortWindowTest, TheSweeperPurgesRequestIdsPastTheirWindow) {
  CreateSessionResponse first;
  ASSERT_TRUE(Create(RequestFor("alice", kRequestId), &first).ok());
  const storage::SessionStateMachine* sm = daemon_->state_machine();
  EXPECT_EQ(sm->create_requests().size(), 1u);
  // The leader's sweeper proposes the purge once the window has passed
  // (bounded poll: 10 s).
  for (int i = 0; i < 1000 && sm->create_requests().size() > 0; ++i) {
    absl::SleepFor(absl::Milliseconds(10));
  }
  ASSERT_EQ(sm->create_requests().size(), 0u);
  // The same request_id now makes a new session, with a new token.
  CreateSessionResponse later;
  ASSERT_TRUE(Create(RequestFor("alice", kRequestId), &later).ok());
  EXPECT_FALSE(later.replayed());
  EXPECT_NE(later.token(), first.token());
  EXPECT_NE(later.session().session_id(), first.session().session_id());
  EXPECT_EQ(ListAll("alice").size(), 2u);
  EXPECT_EQ(Validate(first.token()).outcome(), ValidateSessionResponse::VALID);
}

// --max_sessions_per_user 2, and no sweeps (expired sessions stay
// EXPIRED rather than being removed while a test looks at them).
class UserCapTest : public FriendlyApiTest {
 protected:
  Config MakeConfig() override {
    Config config = TestConfig(dir_.Child("data"));
    config.max_sessions_per_user = 2;
    config.sweep_interval_ms = 3'600'000;
    return config;
  }
};

TEST_F(UserCapTest, ACreateBeyondTheCapIsRefusedAndChangesNothing) {
  CreateSessionResponse a, b;
  ASSERT_TRUE(Create(RequestFor("alice", kRequestId), &a).ok());
  const CreateSessionResponse second = MustCreate("alice");
  const std::vector<std::string> before = ListAll("alice");
  ASSERT_EQ(before.size(), 2u);

  CreateSessionResponse refused;
  grpc::Status s = Create(RequestFor("alice", std::string(20, 'x')), &refused);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_EQ(s.error_message(),
            "the user already has the most live sessions allowed (2, "
            "--max_sessions_per_user): revoke one (RevokeSession) or wait "
            "until one expires");
  EXPECT_EQ(ReasonOf(s), "USER_SESSION_LIMIT");
  CreateSessionRequest plain;
  plain.set_user_id("alice");
  s = Create(plain, &refused);
  EXPECT_EQ(ReasonOf(s), "USER_SESSION_LIMIT");
  EXPECT_EQ(ListAll("alice"), before);
  // A retry of a create that happened is not a new session: answered.
  ASSERT_TRUE(Create(RequestFor("alice", kRequestId), &b).ok());
  EXPECT_TRUE(b.replayed());
  // Other users are not affected.
  MustCreate("bob");

  // A batch that would pass the cap is refused whole.
  sessiond::v1::RevokeSessionRequest revoke;
  revoke.set_token(second.token());
  sessiond::v1::RevokeSessionResponse revoked;
  ASSERT_TRUE(Revoke(revoke, &revoked).ok());
  const std::vector<std::string> one_live = ListAll("alice");
  sessiond::v1::CreateSessionsRequest batch;
  batch.add_requests()->set_user_id("alice");
  batch.add_requests()->set_user_id("alice");
  sessiond::v1::CreateSessionsResponse created;
  {
    grpc::ClientContext context;
    SetDeadline(&context);
    s = stub_->CreateSessions(&context, batch, &created);
  }
  EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_EQ(s.error_message(),
            "the user already has the most live sessions allowed (2, "
            "--max_sessions_per_user) for 2 more: revoke one (RevokeSession) "
            "or wait until one expires");
  EXPECT_EQ(ReasonOf(s), "USER_SESSION_LIMIT");
  EXPECT_EQ(ListAll("alice"), one_live);
  // The revoked one no longer counts: one more fits.
  MustCreate("alice");
}

TEST_F(UserCapTest, ATouchOfAnExpiredSessionSaysSo) {
  const CreateSessionResponse created =
      MustCreate("carol", /*ttl_ms=*/100, /*idle_timeout_ms=*/0);
  // Bounded poll until the node's clock is past the expiry.
  bool expired = false;
  for (int i = 0; i < 200 && !expired; ++i) {
    expired =
        Validate(created.token()).outcome() == ValidateSessionResponse::EXPIRED;
    if (!expired) absl::SleepFor(absl::Milliseconds(10));
  }
  ASSERT_TRUE(expired);
  sessiond::v1::TouchSessionResponse touched;
  grpc::Status s = Touch(created.token(), &touched);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_EQ(s.error_message(), "session is expired");
  EXPECT_EQ(ReasonOf(s), "SESSION_EXPIRED");
  GetSessionResponse got;
  ASSERT_TRUE(Get(created.session().session_id(), &got).ok());
  EXPECT_TRUE(got.expired());
  RotateSessionTokenResponse rotated;
  s = Rotate(created.token(), &rotated);
  EXPECT_EQ(ReasonOf(s), "SESSION_EXPIRED");
}

// --create_rate_per_identity on a plaintext loopback node: callers are told
// apart by host, so this test is one caller.
class RateLimitTest : public FriendlyApiTest {
 protected:
  Config MakeConfig() override {
    Config config = TestConfig(dir_.Child("data"));
    config.create_rate_per_identity = 2;
    config.create_burst_per_identity = 3;
    return config;
  }
  grpc::Status CreateBatch(int n, sessiond::v1::CreateSessionsResponse* out) {
    sessiond::v1::CreateSessionsRequest batch;
    for (int i = 0; i < n; ++i) batch.add_requests()->set_user_id("dave");
    grpc::ClientContext context;
    SetDeadline(&context);
    return stub_->CreateSessions(&context, batch, out);
  }
};

// The RetryInfo delay of a status, or a negative duration without one.
absl::Duration RetryDelayOf(const grpc::Status& status) {
  google::rpc::Status details;
  if (!details.ParseFromString(status.error_details()))
    return -absl::Seconds(1);
  for (const auto& any : details.details()) {
    google::rpc::RetryInfo retry;
    if (any.UnpackTo(&retry)) {
      return absl::Seconds(retry.retry_delay().seconds()) +
             absl::Nanoseconds(retry.retry_delay().nanos());
    }
  }
  return -absl::Seconds(1);
}

// gRPC's own retries (a service config's retry policy, as other languages
// use client/service_config.json) wait as long as the server asks
// ("grpc-retry-pushback-ms", from its RetryInfo): a create refused by the
// rate limit goes through on a retry once a token is back. Without the
// trailer the retries go after 1 ms each, and all are refused.
TEST_F(RateLimitTest, GrpcRetriesWaitAsLongAsTheServerAsks) {
  CreateSessionResponse created;
  grpc::Status s;
  for (int i = 0; i < 20 && s.ok(); ++i) {
    s = Create(RequestFor("erin", ""), &created);
  }
  ASSERT_EQ(s.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  grpc::ChannelArguments args;
  args.SetServiceConfigJSON(R"({"methodConfig": [{
      "name": [{"service": "sessiond.v1.SessionService",
                "method": "CreateSession"}],
      "retryPolicy": {"maxAttempts": 3, "initialBackoff": "0.001s",
                      "maxBackoff": "0.001s", "backoffMultiplier": 1,
                      "retryableStatusCodes": ["RESOURCE_EXHAUSTED"]}}]})");
  auto stub = sessiond::v1::SessionService::NewStub(grpc::CreateCustomChannel(
      daemon_->address(), grpc::InsecureChannelCredentials(), args));
  grpc::ClientContext context;
  SetDeadline(&context);
  s = stub->CreateSession(&context, RequestFor("erin", ""), &created);
  EXPECT_TRUE(s.ok()) << s.error_message();
}

TEST_F(RateLimitTest, CreatesPastTheLimitAreRefusedWithAWaitAndChangeNothing) {
  // The burst: 3 creates at once (a little refill while they run may let a
  // fourth through, never more than the rate allows).
  std::vector<std::string> tokens;
  grpc::Status s;
  CreateSessionResponse created;
  for (int i = 0; i < 20; ++i) {
    s = Create(RequestFor("dave", ""), &created);
    if (!s.ok()) break;
    tokens.push_back(created.token());
  }
  ASSERT_GE(tokens.size(), 3u);
  ASSERT_LT(tokens.size(), 20u) << "never limited";
  EXPECT_EQ(s.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_EQ(ReasonOf(s), "RATE_LIMITED");
  EXPECT_TRUE(absl::StrContains(s.error_message(), "create rate limit of 2/s"))
      << s.error_message();
  const absl::Duration wait = RetryDelayOf(s);
  EXPECT_GT(wait, absl::ZeroDuration());
  // One token at 2/s, spread by up to half (SpreadRetryDelay).
  EXPECT_LE(wait, absl::Milliseconds(750));
  // A batch counts each session: refused whole while the bucket is low
  // (sent at once: a second's refill would let it through).
  sessiond::v1::CreateSessionsResponse batch;
  s = CreateBatch(3, &batch);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  // Nothing was created by the refusals; reads are not limited.
  EXPECT_EQ(ListAll("dave").size(), tokens.size());
  for (const std::string& token : tokens) {
    EXPECT_EQ(Validate(token).outcome(), ValidateSessionResponse::VALID);
  }
  // Once the bucket refilled (bounded poll; each refusal takes nothing) a
  // batch larger than the burst passes whole.
  for (int i = 0; i < 100; ++i) {
    s = CreateBatch(5, &batch);
    if (s.ok()) break;
    ASSERT_EQ(s.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
    absl::SleepFor(absl::Milliseconds(100));
  }
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(batch.responses_size(), 5);
  EXPECT_EQ(ListAll("dave").size(), tokens.size() + 5);
}

// A request refused for what it says, or for a token this node cannot
// sign, changes nothing, its caller's allowance included: the checks come
// before the rate limit.
TEST_F(RateLimitTest, ARefusedBadRequestSpendsNoneOfTheCallersCreates) {
  sessiond::v1::CreateSessionsRequest bad_batch;
  for (int i = 0; i < 100; ++i) bad_batch.add_requests()->set_user_id("dave");
  bad_batch.mutable_requests(99)->clear_user_id();
  auto send = [&](const sessiond::v1::CreateSessionsRequest& batch) {
    grpc::ClientContext context;
    SetDeadline(&context);
    sessiond::v1::CreateSessionsResponse out;
    return stub_->CreateSessions(&context, batch, &out);
  };
  for (int i = 0; i < 3; ++i) {
    const grpc::Status s = send(bad_batch);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT)
        << s.error_message();
  }
  CreateSessionRequest bad_request_id = RequestFor("dave", "");
  bad_request_id.set_request_id("short");
  CreateSessionResponse created;
  for (int i = 0; i < 5; ++i) {
    const grpc::Status s = Create(bad_request_id, &created);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT)
        << s.error_message();
  }
  // A JWT this node cannot sign (it has no key-encryption key), alone or
  // in a batch.
  CreateSessionRequest jwt = RequestFor("dave", "");
  jwt.set_token_format(sessiond::v1::TOKEN_FORMAT_JWT);
  for (int i = 0; i < 5; ++i) {
    const grpc::Status s = Create(jwt, &created);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION)
        << s.error_message();
  }
  sessiond::v1::CreateSessionsRequest jwt_batch;
  for (int i = 0; i < 3; ++i) *jwt_batch.add_requests() = jwt;
  for (int i = 0; i < 3; ++i) {
    const grpc::Status s = send(jwt_batch);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION)
        << s.error_message();
  }
  // The burst of 3 is still there.
  for (int i = 0; i < 3; ++i) {
    const grpc::Status s = Create(RequestFor("dave", ""), &created);
    EXPECT_TRUE(s.ok()) << i << ": " << s.error_message();
  }
}

}  // namespace
}  // namespace sessiond::server
