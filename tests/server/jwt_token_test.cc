// Copyright sessiond authors. Licensed under the Apache License 2.0.
//
// JWT session tokens on one real daemon (issue 7, "Signing keys that cannot
// lock users out"): a node with a key-encryption key makes the cluster's
// first key by itself; a JWT token verifies locally against the JWKS the
// node serves, is validated, touched and revoked like an opaque one; the
// requests that cannot be served are refused precisely and change nothing.
#include <grpcpp/grpcpp.h>

#include <fstream>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/time/clock.h"
#include "common/key_encryption.h"
#include "common/signing.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "sessiond/v1/admin.grpc.pb.h"
#include "storage/session_state_machine.h"
#include "tests/server/daemon_fixture.h"

namespace sessiond::server::testing {
namespace {

class JwtTokenTest : public DaemonTest {
 protected:
  Config MakeConfig() override {
    Config config = TestConfig(dir_.Child("data"));
    const std::string kek = dir_.Child("kek");
    if (!std::ifstream(kek)) {
      EXPECT_TRUE(WriteNewKekFile(kek).ok());
    }
    config.kek_file = kek;
    config.jwks_max_age_ms = 1000;
    return config;
  }

  std::unique_ptr<sessiond::v1::AdminService::Stub> Admin() {
    return sessiond::v1::AdminService::NewStub(grpc::CreateChannel(
        daemon_->address(), grpc::InsecureChannelCredentials()));
  }

  // As an app server would: the signature and expiry, locally, with the
  // keys of the JWKS document (a minute of leeway).
  static absl::StatusOr<signing::VerifiedJwt> VerifyWith(
      const sessiond::v1::GetJwksResponse& jwks, const std::string& token) {
    std::vector<signing::PublicSigningKey> keys;
    const nlohmann::json document = nlohmann::json::parse(jwks.jwks_json());
    for (const auto& jwk : document["keys"]) {
      absl::StatusOr<std::string> x =
          signing::Base64UrlDecode(jwk["x"].get<std::string>());
      if (!x.ok()) return x.status();
      keys.push_back({jwk["kid"].get<std::string>(), *x});
    }
    absl::StatusOr<std::unique_ptr<signing::JwtVerifier>> verifier =
        signing::JwtVerifier::Create(keys);
    if (!verifier.ok()) return verifier.status();
    return (*verifier)->Verify(token, absl::ToUnixMillis(absl::Now()),
                               /*leeway_ms=*/60'000);
  }

  // The JWKS once the first key is bootstrapped (bounded wait). Until then
  // UNAVAILABLE, never an empty set a verifier would cache.
  sessiond::v1::GetJwksResponse Jwks() {
    sessiond::v1::GetJwksResponse jwks;
    for (int i = 0; i < 100; ++i) {
      grpc::ClientContext context;
      SetDeadline(&context);
      jwks.Clear();
      const grpc::Status s =
          Admin()->GetJwks(&context, sessiond::v1::GetJwksRequest(), &jwks);
      if (s.ok()) {
        EXPECT_TRUE(absl::StrContains(jwks.jwks_json(), "kid"))
            << jwks.jwks_json();
        break;
      }
      EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAVAILABLE);
      EXPECT_TRUE(absl::StrContains(s.error_message(), "no signing key yet"))
          << s.error_message();
      absl::SleepFor(absl::Milliseconds(100));
    }
    return jwks;
  }
};

TEST_F(JwtTokenTest, AJwtVerifiesLocallyAndLivesInTheStoreLikeAnOpaqueToken) {
  const sessiond::v1::GetJwksResponse jwks = Jwks();
  ASSERT_TRUE(absl::StrContains(jwks.jwks_json(), "kid")) << jwks.jwks_json();
  EXPECT_EQ(jwks.max_age_s(), 1);
  CreateSessionRequest request;
  request.set_user_id("alice");
  request.set_ttl_ms(3600 * 1000);
  request.set_token_format(sessiond::v1::TOKEN_FORMAT_JWT);
  CreateSessionResponse created;
  ASSERT_TRUE(Create(request, &created).ok());
  EXPECT_FALSE(created.session().signing_kid().empty());

  // As an app server would: the signature and expiry, locally, with the
  // keys of the JWKS document.
  absl::StatusOr<signing::VerifiedJwt> verified =
      VerifyWith(jwks, created.token());
  ASSERT_TRUE(verified.ok()) << verified.status();
  EXPECT_EQ(verified->claims.sid, created.session().session_id());
  EXPECT_EQ(verified->claims.sub, "alice");
  EXPECT_EQ(verified->kid, created.session().signing_kid());

  // And by the store: validate, touch, revoke.
  ValidateSessionResponse valid = Validate(created.token());
  EXPECT_EQ(valid.outcome(), ValidateSessionResponse::VALID);
  EXPECT_EQ(valid.session().signing_kid(), created.session().signing_kid());
  TouchSessionRequest touch;
  touch.set_token(created.token());
  TouchSessionResponse touched;
  grpc::ClientContext touch_context;
  SetDeadline(&touch_context);
  EXPECT_TRUE(stub_->TouchSession(&touch_context, touch, &touched).ok());
  RevokeSessionRequest revoke;
  revoke.set_token(created.token());
  RevokeSessionResponse revoked;
  grpc::ClientContext revoke_context;
  SetDeadline(&revoke_context);
  EXPECT_TRUE(stub_->RevokeSession(&revoke_context, revoke, &revoked).ok());
  EXPECT_EQ(Validate(created.token()).outcome(),
            ValidateSessionResponse::REVOKED);
  // The kid survives a restart (it is part of the stored session).
  RestartDaemon();
  sessiond::v1::ListUserSessionsRequest list;
  list.set_user_id("alice");
  list.set_include_revoked(true);
  sessiond::v1::ListUserSessionsResponse listed;
  grpc::ClientContext list_context;
  SetDeadline(&list_context);
  ASSERT_TRUE(stub_->ListUserSessions(&list_context, list, &listed).ok());
  ASSERT_EQ(listed.sessions_size(), 1);
  EXPECT_EQ(listed.sessions(0).signing_kid(), created.session().signing_kid());
}

// Cluster time stands still while no member runs, so after a restart it
// runs behind the wall clock by the downtime (catching up at the slew
// rate, for weeks after a long outage). A JWT's iat and exp were cluster
// time: after an outage longer than the token's ttl, every token issued
// was born expired for an app server checking exp against its own clock.
TEST_F(JwtTokenTest, AJwtIssuedAfterADowntimeCarriesTheWallClock) {
  ASSERT_TRUE(absl::StrContains(Jwks().jwks_json(), "kid"));
  MustCreate("before");
  daemon_->Shutdown();
  daemon_.reset();
  absl::SleepFor(absl::Seconds(6));
  StartDaemon();
  const sessiond::v1::GetJwksResponse jwks = Jwks();
  CreateSessionRequest request;
  request.set_user_id("carol");
  request.set_ttl_ms(3600 * 1000);
  request.set_token_format(sessiond::v1::TOKEN_FORMAT_JWT);
  CreateSessionResponse created;
  ASSERT_TRUE(Create(request, &created).ok());
  const int64_t wall_s = absl::ToUnixSeconds(absl::Now());
  absl::StatusOr<signing::VerifiedJwt> verified =
      VerifyWith(jwks, created.token());
  ASSERT_TRUE(verified.ok()) << verified.status();
  EXPECT_NEAR(verified->claims.iat, wall_s, 2);
  EXPECT_NEAR(verified->claims.exp, wall_s + 3600, 2);
}

TEST_F(JwtTokenTest, RequestsThatCannotBeServedAreRefusedAndChangeNothing) {
  ASSERT_TRUE(absl::StrContains(Jwks().jwks_json(), "kid"));
  CreateSessionRequest request;
  request.set_user_id("bob");
  request.set_token_format(sessiond::v1::TOKEN_FORMAT_JWT);
  request.set_request_id(std::string(32, 'r'));
  CreateSessionResponse created;
  grpc::Status s = Create(request, &created);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_TRUE(absl::StrContains(s.error_message(), "request_id"))
      << s.error_message();
  // A token shaped like a JWT that the store never issued: UNKNOWN.
  EXPECT_EQ(
      Validate("eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl").outcome(),
      ValidateSessionResponse::UNKNOWN);
  sessiond::v1::ListUserSessionsRequest list;
  list.set_user_id("bob");
  sessiond::v1::ListUserSessionsResponse listed;
  grpc::ClientContext context;
  SetDeadline(&context);
  ASSERT_TRUE(stub_->ListUserSessions(&context, list, &listed).ok());
  EXPECT_EQ(listed.sessions_size(), 0);
}

// A kid that cannot name a key is refused before anything is asked of the
// members or proposed (a retire of one went through the log, to every
// member, only to be refused there).
TEST_F(JwtTokenTest, AKidThatCannotBeOneIsRefusedBeforeTheLog) {
  ASSERT_TRUE(absl::StrContains(Jwks().jwks_json(), "kid"));
  const std::string ring =
      daemon_->state_machine()->key_ring().state().SerializeAsString();
  for (const std::string& kid :
       {std::string(1 << 20, 'k'), std::string("short"),
        std::string(signing::kKidLength, '!')}) {
    sessiond::v1::RetireKeyRequest retire;
    retire.set_kid(kid);
    sessiond::v1::RetireKeyResponse retired;
    grpc::ClientContext retire_context;
    SetDeadline(&retire_context);
    const grpc::Status r =
        Admin()->RetireKey(&retire_context, retire, &retired);
    EXPECT_EQ(r.error_code(), grpc::StatusCode::INVALID_ARGUMENT)
        << r.error_message();
    EXPECT_TRUE(absl::StrContains(r.error_message(), "43 base64url"))
        << r.error_message();
    sessiond::v1::ActivateKeyRequest activate;
    activate.set_kid(kid);
    sessiond::v1::ActivateKeyResponse activated;
    grpc::ClientContext activate_context;
    SetDeadline(&activate_context);
    const grpc::Status a =
        Admin()->ActivateKey(&activate_context, activate, &activated);
    EXPECT_EQ(a.error_code(), grpc::StatusCode::INVALID_ARGUMENT)
        << a.error_message();
  }
  EXPECT_EQ(daemon_->state_machine()->key_ring().state().SerializeAsString(),
            ring);
}

// With a per-caller create rate limit (a plaintext loopback node: this
// test is one caller).
class JwtRateLimitTest : public JwtTokenTest {
 protected:
  Config MakeConfig() override {
    Config config = JwtTokenTest::MakeConfig();
    config.create_rate_per_identity = 1;
    config.create_burst_per_identity = 3;
    config.limits.max_user_id_bytes = 8000;  // more than a JWT can hold
    return config;
  }
};

// A JWT whose claims do not fit (a user_id the limits allow but
// kMaxJwtBytes does not) is
// refused before the caller's rate limit is charged, as every other bad
// request is: it was found only when signing, after the admission, and so
// spent one of the caller's creates each time.
TEST_F(JwtRateLimitTest, AJwtThatCannotFitSpendsNoneOfTheCallersCreates) {
  ASSERT_TRUE(absl::StrContains(Jwks().jwks_json(), "kid"));
  CreateSessionRequest too_long;
  too_long.set_user_id(std::string(7000, 'u'));
  too_long.set_token_format(sessiond::v1::TOKEN_FORMAT_JWT);
  CreateSessionResponse created;
  for (int i = 0; i < 5; ++i) {
    const grpc::Status s = Create(too_long, &created);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT)
        << s.error_message();
    EXPECT_TRUE(absl::StrContains(s.error_message(), "shorten sid or sub"))
        << s.error_message();
  }
  // The burst of 3 is still there.
  CreateSessionRequest fits;
  fits.set_user_id("carol");
  fits.set_token_format(sessiond::v1::TOKEN_FORMAT_JWT);
  for (int i = 0; i < 3; ++i) {
    const grpc::Status s = Create(fits, &created);
    EXPECT_TRUE(s.ok()) << i << ": " << s.error_message();
  }
}

class JwtWithoutKekTest : public DaemonTest {};

TEST_F(JwtWithoutKekTest, ANodeWithoutAKekRefusesJwtCreatesAndStaging) {
  CreateSessionRequest request;
  request.set_user_id("carol");
  request.set_token_format(sessiond::v1::TOKEN_FORMAT_JWT);
  CreateSessionResponse created;
  grpc::Status s = Create(request, &created);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_TRUE(absl::StrContains(s.error_message(), "--kek_file"))
      << s.error_message();
  auto admin = sessiond::v1::AdminService::NewStub(grpc::CreateChannel(
      daemon_->address(), grpc::InsecureChannelCredentials()));
  sessiond::v1::StageKeyResponse staged;
  grpc::ClientContext context;
  SetDeadline(&context);
  s = admin->StageKey(&context, sessiond::v1::StageKeyRequest(), &staged);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  sessiond::v1::ListKeysResponse keys;
  grpc::ClientContext list_context;
  SetDeadline(&list_context);
  ASSERT_TRUE(
      admin->ListKeys(&list_context, sessiond::v1::ListKeysRequest(), &keys)
          .ok());
  EXPECT_EQ(keys.keys_size(), 0);
}

}  // namespace
}  // namespace sessiond::server::testing
