// Copyright sessiond authors. Licensed under the Apache License 2.0.
//
// The daemon end to end: a real Daemon (in process) or the real sessiond
// binary, a real RocksDB in a temp dir, real gRPC on 127.0.0.1 with a port
// the kernel picked. Timing is never asserted: every wait is a bounded poll.
#include <grpcpp/create_channel.h>
#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/security/credentials.h>
#include <signal.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <fstream>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "google/protobuf/io/coded_stream.h"
#include "google/protobuf/io/zero_copy_stream_impl_lite.h"
#include "gtest/gtest.h"
#include "server/config.h"
#include "server/daemon.h"
#include "server/expiry_sweeper.h"
#include "server/log_compactor.h"
#include "server/touch_buffer.h"
#include "sessiond/v1/admin.grpc.pb.h"
#include "sessiond/v1/session.grpc.pb.h"
#include "storage/raft_log_store.h"
#include "storage/session_table.h"
#include "tests/server/daemon_fixture.h"
#include "tests/server/test_util.h"

namespace sessiond::server {
namespace {

using sessiond::v1::CreateSessionRequest;
using sessiond::v1::CreateSessionResponse;
using sessiond::v1::ListUserSessionsRequest;
using sessiond::v1::ListUserSessionsResponse;
using sessiond::v1::RevokeSessionRequest;
using sessiond::v1::RevokeSessionResponse;
using sessiond::v1::RevokeUserSessionsRequest;
using sessiond::v1::RevokeUserSessionsResponse;
using sessiond::v1::Session;
using sessiond::v1::SessionService;
using sessiond::v1::TouchSessionRequest;
using sessiond::v1::TouchSessionResponse;
using sessiond::v1::UpdateSessionRequest;
using sessiond::v1::UpdateSessionResponse;
using sessiond::v1::ValidateSessionRequest;
using sessiond::v1::ValidateSessionResponse;
using testing::Canonical;
using testing::DaemonTest;
using testing::ScopedTempDir;
using testing::SetDeadline;
using testing::StubFor;
using testing::Subprocess;
using testing::TestConfig;

TEST_F(DaemonTest, CreateValidateRevokeByToken) {
  const CreateSessionResponse created = MustCreate("alice");
  EXPECT_EQ(created.token().size(), 43u);
  EXPECT_EQ(created.session().user_id(), "alice");
  EXPECT_EQ(created.session().version(), 1u);
  EXPECT_EQ(created.session().state(), sessiond::v1::SESSION_STATE_ACTIVE);
  EXPECT_EQ(created.session().attributes().at("role"), "reader");
  EXPECT_EQ(created.session().client().device(), "laptop");
  EXPECT_GT(created.session().expires_at_ms(),
            created.session().created_at_ms());

  ValidateSessionResponse v = Validate(created.token());
  EXPECT_EQ(v.outcome(), ValidateSessionResponse::VALID);
  EXPECT_EQ(v.session().session_id(), created.session().session_id());

  RevokeSessionRequest revoke;
  revoke.set_token(created.token());
  revoke.set_reason("user clicked log out");
  RevokeSessionResponse revoked;
  ASSERT_TRUE(Revoke(revoke, &revoked).ok());
  EXPECT_EQ(revoked.session().state(), sessiond::v1::SESSION_STATE_REVOKED);
  EXPECT_EQ(revoked.session().revoke_reason(), "user clicked log out");
  EXPECT_EQ(Validate(created.token()).outcome(),
            ValidateSessionResponse::REVOKED);
}

// CreateSessions: one call, one log entry, all or nothing.
TEST_F(DaemonTest, CreateSessionsCreatesAllOrNone) {
  sessiond::v1::CreateSessionsRequest batch;
  for (int i = 0; i < 3; ++i) {
    auto* r = batch.add_requests();
    r->set_user_id(absl::StrCat("batch-", i));
    r->set_ttl_ms(60000);
    (*r->mutable_attributes())["i"] = absl::StrCat(i);
  }
  const uint64_t entries_before = daemon_->driver()->metrics().entries_applied;
  sessiond::v1::CreateSessionsResponse created;
  {
    grpc::ClientContext context;
    SetDeadline(&context);
    const grpc::Status s = stub_->CreateSessions(&context, batch, &created);
    ASSERT_TRUE(s.ok()) << s.error_message();
  }
  ASSERT_EQ(created.responses_size(), 3);
  for (int i = 0; i < 3; ++i) {
    const auto& one = created.responses(i);
    EXPECT_EQ(one.session().user_id(), absl::StrCat("batch-", i));
    EXPECT_EQ(one.session().attributes().at("i"), absl::StrCat(i));
    EXPECT_EQ(one.session().expires_at_ms() - one.session().created_at_ms(),
              60000);
    const ValidateSessionResponse v = Validate(one.token());
    EXPECT_EQ(v.outcome(), ValidateSessionResponse::VALID);
    EXPECT_EQ(v.session().session_id(), one.session().session_id());
  }
  EXPECT_EQ(daemon_->driver()->metrics().entries_applied - entries_before, 1u);

  // One bad request fails the call, naming it; nothing is created.
  batch.mutable_requests(1)->clear_user_id();
  const size_t sessions_before = daemon_->table()->size();
  {
    grpc::ClientContext context;
    SetDeadline(&context);
    sessiond::v1::CreateSessionsResponse none;
    const grpc::Status s = stub_->CreateSessions(&context, batch, &none);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_EQ(s.error_message(), "requests[1].user_id: must not be empty");
  }
  // Over the limit; and an empty batch is fine.
  sessiond::v1::CreateSessionsRequest big;
  for (int i = 0; i < 1001; ++i) big.add_requests()->set_user_id("u");
  {
    grpc::ClientContext context;
    SetDeadline(&context);
    sessiond::v1::CreateSessionsResponse none;
    const grpc::Status s = stub_->CreateSessions(&context, big, &none);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_EQ(s.error_message(), "requests: 1001 entries, limit is 1000");
  }
  {
    grpc::ClientContext context;
    SetDeadline(&context);
    sessiond::v1::CreateSessionsResponse none;
    ASSERT_TRUE(stub_
                    ->CreateSessions(
                        &context, sessiond::v1::CreateSessionsRequest(), &none)
                    .ok());
    EXPECT_EQ(none.responses_size(), 0);
  }
  EXPECT_EQ(daemon_->table()->size(), sessions_before);
}

TEST_F(DaemonTest, RevokeBySessionId) {
  const CreateSessionResponse created = MustCreate("bob");
  RevokeSessionRequest revoke;
  revoke.set_session_id(created.session().session_id());
  RevokeSessionResponse revoked;
  const grpc::Status s = Revoke(revoke, &revoked);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(Validate(created.token()).outcome(),
            ValidateSessionResponse::REVOKED);
}

TEST_F(DaemonTest, TouchAndUpdateWithVersionCompareAndSet) {
  const CreateSessionResponse created = MustCreate("carol");
  TouchSessionResponse touched;
  ASSERT_TRUE(Touch(created.token(), &touched).ok());
  EXPECT_GE(touched.session().last_seen_at_ms(),
            created.session().last_seen_at_ms());

  UpdateSessionRequest update;
  update.set_token(created.token());
  update.set_expected_version(1);
  (*update.mutable_set_attributes())["theme"] = "dark";
  update.add_remove_attributes("role");
  UpdateSessionResponse updated;
  grpc::Status s = Update(update, &updated);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(updated.session().version(), 2u);
  EXPECT_EQ(updated.session().attributes().at("theme"), "dark");
  EXPECT_FALSE(updated.session().attributes().contains("role"));

  // The same expected_version again: someone else already moved it on.
  const std::vector<std::string> before = ListAll("carol");
  (*update.mutable_set_attributes())["theme"] = "light";
  s = Update(update, &updated);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::ABORTED) << s.error_message();
  EXPECT_EQ(ListAll("carol"), before);

  // Unconditional (expected_version 0) goes through.
  update.set_expected_version(0);
  update.clear_remove_attributes();
  s = Update(update, &updated);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(updated.session().version(), 3u);
}

TEST_F(DaemonTest, ListUserSessionsPagesWithoutTokens) {
  std::set<std::string> ids;
  for (int i = 0; i < 7; ++i)
    ids.insert(MustCreate("dave").session().session_id());
  MustCreate("someone-else");

  std::set<std::string> listed;
  std::string page_token;
  int pages = 0;
  for (; pages < 10; ++pages) {
    ListUserSessionsRequest request;
    request.set_user_id("dave");
    request.set_page_size(3);
    request.set_page_token(page_token);
    ListUserSessionsResponse response;
    ASSERT_TRUE(List(request, &response).ok());
    EXPECT_LE(response.sessions_size(), 3);
    // A single node leads: every page is confirmed.
    EXPECT_EQ(response.consistency(), sessiond::v1::LINEARIZABLE);
    EXPECT_FALSE(response.stale());
    EXPECT_GT(response.applied_index(), 0u);
    for (const Session& s : response.sessions()) {
      EXPECT_EQ(s.user_id(), "dave");
      EXPECT_TRUE(listed.insert(s.session_id()).second) << "listed twice";
    }
    page_token = response.next_page_token();
    if (page_token.empty()) break;
  }
  EXPECT_EQ(pages, 2);  // 3 + 3 + 1
  EXPECT_EQ(listed, ids);

  ListUserSessionsRequest bad;
  bad.set_user_id("dave");
  bad.set_page_token("!!!not-a-token!!!");
  ListUserSessionsResponse response;
  EXPECT_EQ(List(bad, &response).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
}

TEST_F(DaemonTest, RevokeUserSessionsKeepsOne) {
  std::vector<CreateSessionResponse> sessions;
  for (int i = 0; i < 4; ++i) sessions.push_back(MustCreate("erin"));
  RevokeUserSessionsRequest request;
  request.set_user_id("erin");
  request.set_keep_session_id(sessions[2].session().session_id());
  request.set_reason("log out everywhere else");
  RevokeUserSessionsResponse response;
  grpc::ClientContext context;
  SetDeadline(&context);
  const grpc::Status s =
      stub_->RevokeUserSessions(&context, request, &response);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(response.revoked_count(), 3u);
  for (int i = 0; i < 4; ++i) {
    EXPECT_EQ(Validate(sessions[i].token()).outcome(),
              i == 2 ? ValidateSessionResponse::VALID
                     : ValidateSessionResponse::REVOKED);
  }
}

TEST_F(DaemonTest, BadRequestsGetTheDocumentedStatusAndChangeNothing) {
  const CreateSessionResponse existing = MustCreate("frank");
  const std::vector<std::string> before = ListAll("frank");
  const size_t size_before = daemon_->table()->size();

  auto expect_create = [&](CreateSessionRequest request, grpc::StatusCode code,
                           const std::string& needle) {
    CreateSessionResponse response;
    const grpc::Status s = Create(request, &response);
    EXPECT_EQ(s.error_code(), code) << s.error_message();
    EXPECT_NE(s.error_message().find(needle), std::string::npos)
        << "message \"" << s.error_message() << "\" lacks \"" << needle << "\"";
    EXPECT_TRUE(response.token().empty());
  };
  CreateSessionRequest request;
  request.set_user_id("");
  expect_create(request, grpc::StatusCode::INVALID_ARGUMENT, "user_id");

  request.set_user_id(std::string(300, 'u'));
  expect_create(request, grpc::StatusCode::INVALID_ARGUMENT,
                "--max_user_id_bytes");

  request.set_user_id("frank");
  (*request.mutable_attributes())["big"] = std::string(5000, 'v');
  expect_create(
      request, grpc::StatusCode::INVALID_ARGUMENT,
      "value is 5000 bytes, limit is 4096 (--max_attribute_value_bytes)");

  request.mutable_attributes()->clear();
  for (int i = 0; i < 65; ++i) {
    (*request.mutable_attributes())[absl::StrCat("k", i)] = "v";
  }
  expect_create(request, grpc::StatusCode::INVALID_ARGUMENT,
                "--max_attributes");

  request.mutable_attributes()->clear();
  request.set_ttl_ms(-1);
  expect_create(request, grpc::StatusCode::INVALID_ARGUMENT, "ttl_ms");
  request.set_ttl_ms(10);  // below --min_ttl_ms (50 in these tests)
  expect_create(request, grpc::StatusCode::INVALID_ARGUMENT, "--min_ttl_ms");
  request.set_ttl_ms(1000ll * 3600 * 24 * 365);
  expect_create(request, grpc::StatusCode::INVALID_ARGUMENT, "--max_ttl_ms");
  request.set_ttl_ms(0);
  // A value this server's protos do not know (a newer client's).
  request.set_token_format(static_cast<sessiond::v1::TokenFormat>(7));
  expect_create(request, grpc::StatusCode::INVALID_ARGUMENT,
                "token_format: unknown value 7");
  request.set_token_format(sessiond::v1::TOKEN_FORMAT_OPAQUE);
  request.set_idle_timeout_ms(-5);
  expect_create(request, grpc::StatusCode::INVALID_ARGUMENT, "idle_timeout_ms");
  request.set_idle_timeout_ms(0);
  request.mutable_client()->set_user_agent(std::string(600, 'a'));
  expect_create(request, grpc::StatusCode::INVALID_ARGUMENT,
                "--max_client_field_bytes");

  // Garbage tokens: an error for Touch/Update/Revoke, an outcome for
  // Validate.
  const std::string garbage = "not a token";
  TouchSessionResponse touched;
  EXPECT_EQ(Touch(garbage, &touched).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  UpdateSessionRequest update;
  update.set_token(garbage);
  UpdateSessionResponse updated;
  EXPECT_EQ(Update(update, &updated).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  RevokeSessionRequest revoke;
  revoke.set_token(garbage);
  RevokeSessionResponse revoked;
  EXPECT_EQ(Revoke(revoke, &revoked).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  revoke.Clear();  // neither token nor session_id
  EXPECT_EQ(Revoke(revoke, &revoked).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  revoke.set_token(existing.token());
  revoke.set_reason(std::string(300, 'r'));
  EXPECT_EQ(Revoke(revoke, &revoked).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(Validate(garbage).outcome(), ValidateSessionResponse::UNKNOWN);
  EXPECT_EQ(Validate("").outcome(), ValidateSessionResponse::UNKNOWN);
  {
    ValidateSessionRequest unknown_level;
    unknown_level.set_token(existing.token());
    unknown_level.set_touch(true);
    unknown_level.set_consistency(static_cast<sessiond::v1::Consistency>(5));
    ValidateSessionResponse answered;
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() +
                         std::chrono::seconds(10));
    const grpc::Status s =
        stub_->ValidateSession(&context, unknown_level, &answered);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT)
        << s.error_message();
    EXPECT_NE(s.error_message().find("consistency: unknown value 5"),
              std::string::npos)
        << s.error_message();
    EXPECT_EQ(answered.outcome(), ValidateSessionResponse::OUTCOME_UNSPECIFIED);
  }

  // Well-formed but unknown tokens and ids: NOT_FOUND.
  const std::string unknown(43, 'A');
  EXPECT_EQ(Validate(unknown).outcome(), ValidateSessionResponse::UNKNOWN);
  EXPECT_EQ(Touch(unknown, &touched).error_code(), grpc::StatusCode::NOT_FOUND);
  update.set_token(unknown);
  EXPECT_EQ(Update(update, &updated).error_code(), grpc::StatusCode::NOT_FOUND);
  revoke.set_token(unknown);
  revoke.set_reason("");
  EXPECT_EQ(Revoke(revoke, &revoked).error_code(), grpc::StatusCode::NOT_FOUND);
  revoke.set_session_id(std::string(22, 'B'));
  EXPECT_EQ(Revoke(revoke, &revoked).error_code(), grpc::StatusCode::NOT_FOUND);

  // Update limits against the stored record; wrong version.
  update.set_token(existing.token());
  (*update.mutable_set_attributes())["big"] = std::string(5000, 'v');
  EXPECT_EQ(Update(update, &updated).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  update.mutable_set_attributes()->clear();
  update.set_expected_version(99);
  EXPECT_EQ(Update(update, &updated).error_code(), grpc::StatusCode::ABORTED);

  // Nothing changed.
  EXPECT_EQ(ListAll("frank"), before);
  EXPECT_EQ(daemon_->table()->size(), size_before);
  EXPECT_EQ(Validate(existing.token()).outcome(),
            ValidateSessionResponse::VALID);
}

// Fields of `client` this server does not know (a newer client's, or
// padding) are not kept: the message was copied whole, unknown fields
// included, which no limit measured, so a create carrying 16 MB of them was
// stored on every replica and handed back with every read of the session.
TEST_F(DaemonTest, UnknownClientFieldsAreNotStored) {
  CreateSessionRequest request;
  request.set_user_id("mallory");
  request.mutable_client()->set_device("laptop");
  sessiond::v1::ClientMetadata* client = request.mutable_client();
  client->GetReflection()->MutableUnknownFields(client)->AddLengthDelimited(
      99, std::string(100000, 'x'));
  CreateSessionResponse created;
  const grpc::Status status = Create(request, &created);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(created.session().client().device(), "laptop");
  EXPECT_LT(created.session().client().ByteSizeLong(), 100u);
  const ValidateSessionResponse validated = Validate(created.token());
  EXPECT_EQ(validated.session().client().device(), "laptop");
  EXPECT_LT(validated.session().ByteSizeLong(), 1000u);
}

TEST_F(DaemonTest, ShortTtlExpiresThenTheSweeperRemovesIt) {
  const CreateSessionResponse created = MustCreate("gina", /*ttl_ms=*/200);
  ValidateSessionResponse::Outcome outcome = ValidateSessionResponse::VALID;
  // EXPECTED first (checked on read), then UNKNOWN once swept. The sweep
  // may already have run by the time of a poll, so UNKNOWN ends both loops.
  bool saw_expired_or_gone = false;
  for (int i = 0; i < 3000; ++i) {
    outcome = Validate(created.token()).outcome();
    if (outcome != ValidateSessionResponse::VALID) {
      saw_expired_or_gone = true;
      break;
    }
    absl::SleepFor(absl::Milliseconds(10));
  }
  ASSERT_TRUE(saw_expired_or_gone);
  EXPECT_TRUE(outcome == ValidateSessionResponse::EXPIRED ||
              outcome == ValidateSessionResponse::UNKNOWN);
  for (int i = 0; i < 3000 && outcome != ValidateSessionResponse::UNKNOWN;
       ++i) {
    absl::SleepFor(absl::Milliseconds(10));
    outcome = Validate(created.token()).outcome();
    EXPECT_NE(outcome, ValidateSessionResponse::VALID);
  }
  EXPECT_EQ(outcome, ValidateSessionResponse::UNKNOWN);
  // The sweeper counts a removal in its proposal's callback, which runs on the
  // completion thread after the table changed: poll, bounded, instead of
  // reading it the instant the session is gone.
  for (int i = 0; i < 3000 && daemon_->sweeper()->removed_total() == 0; ++i) {
    absl::SleepFor(absl::Milliseconds(10));
  }
  EXPECT_GE(daemon_->sweeper()->removed_total(), 1u);
  EXPECT_TRUE(ListAll("gina").empty());
}

TEST_F(DaemonTest, ExpiredNotSweptReadsAsExpired) {
  // With a sweep interval far beyond the test, the session stays in the
  // table and reads say EXPIRED.
  Config config = TestConfig(dir_.Child("data"));
  config.sweep_interval_ms = 3600 * 1000;
  RestartDaemonWith(config);
  const CreateSessionResponse created = MustCreate("hank", /*ttl_ms=*/100);
  ValidateSessionResponse::Outcome outcome = ValidateSessionResponse::VALID;
  for (int i = 0; i < 3000 && outcome == ValidateSessionResponse::VALID; ++i) {
    absl::SleepFor(absl::Milliseconds(10));
    outcome = Validate(created.token()).outcome();
  }
  EXPECT_EQ(outcome, ValidateSessionResponse::EXPIRED);
}

// A daemon that sweeps only when the test calls SweepOnce, `sweep_batch_`
// sessions per expire command.
class ManualSweepTest : public DaemonTest {
 protected:
  Config MakeConfig() override {
    Config config = DaemonTest::MakeConfig();
    config.sweep_interval_ms = 3600 * 1000;
    config.sweep_batch = sweep_batch_;
    return config;
  }
  void RestartWithSweepBatch(int64_t sweep_batch) {
    sweep_batch_ = sweep_batch;
    RestartDaemon();
  }
  // Bounded: until `token` reads EXPIRED.
  void WaitUntilExpired(const std::string& token) {
    for (int i = 0; i < 3000 && Validate(token).outcome() !=
                                    ValidateSessionResponse::EXPIRED;
         ++i) {
      absl::SleepFor(absl::Milliseconds(10));
    }
  }
  sessiond::v1::NodeMetrics Metrics() const {
    return daemon_->SelfStatus(/*with_digest=*/false).metrics();
  }

  int64_t sweep_batch_ = 1000;
};

TEST_F(ManualSweepTest, OneSweepRemovesEveryDueSessionAcrossManyCommands) {
  // 50 expired sessions, at most 5 per command: ten commands, several in
  // flight at once. 400 more expire within the breaker's look-ahead (two
  // sweep intervals: two hours here), more than one sweep takes (64
  // commands of 5): the sweep still removes every due session, counts
  // each once, and keeps the rest.
  RestartWithSweepBatch(5);
  std::vector<std::string> kept;
  for (int i = 0; i < 400; ++i) {
    kept.push_back(
        MustCreate(absl::StrCat("k", i % 40), /*ttl_ms=*/600000).token());
  }
  std::vector<std::string> due;
  for (int i = 0; i < 50; ++i) {
    due.push_back(MustCreate(absl::StrCat("d", i), /*ttl_ms=*/100).token());
  }
  WaitUntilExpired(due.back());
  ASSERT_EQ(daemon_->table()->size(), 450u);

  EXPECT_EQ(daemon_->sweeper()->SweepOnce(), 50u);

  EXPECT_EQ(Metrics().expiry_sweep_due(), 50u);
  EXPECT_EQ(Metrics().expiry_sweeps_at_cap(), 0u);
  EXPECT_EQ(daemon_->table()->size(), 400u);
  for (const std::string& token : due) {
    EXPECT_EQ(Validate(token).outcome(), ValidateSessionResponse::UNKNOWN);
  }
  EXPECT_EQ(Validate(kept.front()).outcome(), ValidateSessionResponse::VALID);
  EXPECT_EQ(Validate(kept.back()).outcome(), ValidateSessionResponse::VALID);
  EXPECT_EQ(daemon_->sweeper()->SweepOnce(), 0u);
}

TEST_F(ManualSweepTest, ASweepThatFindsMoreThanItMayRemoveIsCounted) {
  // One session per command, 64 commands per sweep: 70 due sessions take
  // two sweeps, and the first says it left some behind.
  RestartWithSweepBatch(1);
  std::string last;
  for (int i = 0; i < 70; ++i) {
    last = MustCreate(absl::StrCat("d", i), /*ttl_ms=*/100).token();
  }
  WaitUntilExpired(last);

  EXPECT_EQ(daemon_->sweeper()->SweepOnce(), 64u);
  EXPECT_EQ(Metrics().expiry_sweep_due(), 64u);
  EXPECT_EQ(Metrics().expiry_sweeps_at_cap(), 1u);

  EXPECT_EQ(daemon_->sweeper()->SweepOnce(), 6u);
  EXPECT_EQ(Metrics().expiry_sweep_due(), 6u);
  EXPECT_EQ(Metrics().expiry_sweeps_at_cap(), 1u);
  EXPECT_EQ(daemon_->table()->size(), 0u);
}

// Audit entries past their retention go on a quiet node too: the leader's
// sweeper trims them (they used to go only with the next audited call).
class AuditTrimTest : public ManualSweepTest {
 protected:
  Config MakeConfig() override {
    Config config = ManualSweepTest::MakeConfig();
    config.audit_retention_ms = 1000;  // the flag's floor is an hour
    return config;
  }
};

TEST_F(AuditTrimTest, TheSweeperTrimsEntriesPastTheirRetention) {
  MustCreate("ivy");
  RevokeUserSessionsRequest request;  // audited (a bulk revocation)
  request.set_user_id("ivy");
  RevokeUserSessionsResponse response;
  grpc::ClientContext context;
  SetDeadline(&context);
  ASSERT_TRUE(stub_->RevokeUserSessions(&context, request, &response).ok());
  // Requested and answered.
  ASSERT_EQ(daemon_->state_machine()->AuditEntryCount(), 2u);
  daemon_->sweeper()->SweepOnce();
  EXPECT_EQ(daemon_->state_machine()->AuditEntryCount(), 2u);  // young
  absl::SleepFor(absl::Milliseconds(1500));
  daemon_->sweeper()->SweepOnce();
  EXPECT_EQ(daemon_->state_machine()->AuditEntryCount(), 0u);
}

// The expiry breaker judges every session about to expire, not one sweep's
// worth. 1300 live sessions make a threshold of 130 unexpected expiries; a
// sweep removes at most 64 (sweep_batch 1). 700 sessions born and expired
// within a window whose baseline is 0 are all unexpected: the breaker opens
// before it removes any, and holds them (they validate again) until an
// operator resumes. Judging 64 at a time, it removed 128, opened, then
// counted only 64 held, found them under half the threshold, closed itself
// and swept the rest as planned.
class ManualSweepBreakerTest : public ManualSweepTest {
 protected:
  Config MakeConfig() override {
    Config config = ManualSweepTest::MakeConfig();
    config.expiry_breaker_window_ms = 5000;
    config.expiry_breaker_min_sessions = 10;
    return config;
  }
  // `n` sessions of `user_prefix`N in CreateSessions calls; their tokens.
  std::vector<std::string> CreateMany(const std::string& user_prefix, int n,
                                      int64_t ttl_ms) {
    std::vector<std::string> tokens;
    for (int begin = 0; begin < n; begin += 1000) {
      sessiond::v1::CreateSessionsRequest request;
      for (int i = begin; i < std::min(n, begin + 1000); ++i) {
        CreateSessionRequest* one = request.add_requests();
        one->set_user_id(absl::StrCat(user_prefix, i % 100));
        one->set_ttl_ms(ttl_ms);
      }
      sessiond::v1::CreateSessionsResponse response;
      grpc::ClientContext context;
      SetDeadline(&context);
      const grpc::Status s =
          stub_->CreateSessions(&context, request, &response);
      EXPECT_TRUE(s.ok()) << s.error_message();
      for (const CreateSessionResponse& created : response.responses()) {
        tokens.push_back(created.token());
      }
    }
    return tokens;
  }
};

TEST_F(ManualSweepBreakerTest, ItJudgesEverySessionDueNotOneSweepsWorth) {
  RestartWithSweepBatch(1);
  CreateMany("k", 1300, /*ttl_ms=*/600000);
  daemon_->sweeper()->SweepOnce();  // a first window: no baseline yet
  absl::SleepFor(absl::Milliseconds(5100));
  daemon_->sweeper()->SweepOnce();  // the next one expects no young expiry
  const std::vector<std::string> young = CreateMany("y", 700, /*ttl_ms=*/100);
  ASSERT_EQ(young.size(), 700u);
  WaitUntilExpired(young.back());

  for (int i = 0; i < 10; ++i) daemon_->sweeper()->SweepOnce();
  EXPECT_EQ(daemon_->table()->size(), 2000u);
  const sessiond::v1::ExpiryBreaker breaker =
      daemon_->state_machine()->expiry_breaker();
  EXPECT_TRUE(breaker.open()) << breaker.DebugString();
  EXPECT_EQ(Validate(young.front()).outcome(), ValidateSessionResponse::VALID);
  EXPECT_EQ(Validate(young.back()).outcome(), ValidateSessionResponse::VALID);

  // The operator resumes while the cause is still at work. The first
  // window after a close was judged with no baseline: the next 700 expired
  // unjudged, and became the expectation of every window after.
  auto admin = sessiond::v1::AdminService::NewStub(grpc::CreateChannel(
      daemon_->address(), grpc::InsecureChannelCredentials()));
  {
    sessiond::v1::ResumeExpiryRequest request;
    request.set_breaker_id(breaker.id());
    request.set_confirm_sessions(700);
    sessiond::v1::ResumeExpiryResponse response;
    grpc::ClientContext context;
    SetDeadline(&context);
    const grpc::Status s = admin->ResumeExpiry(&context, request, &response);
    ASSERT_TRUE(s.ok()) << s.error_message();
  }
  daemon_->sweeper()->SweepOnce();  // the held ones expire, as confirmed
  const std::vector<std::string> again = CreateMany("z", 700, /*ttl_ms=*/100);
  ASSERT_EQ(again.size(), 700u);
  WaitUntilExpired(again.back());
  for (int i = 0; i < 10; ++i) daemon_->sweeper()->SweepOnce();
  const sessiond::v1::ExpiryBreaker reopened =
      daemon_->state_machine()->expiry_breaker();
  EXPECT_TRUE(reopened.open()) << reopened.DebugString();
  EXPECT_EQ(reopened.times_opened(), 2u);
  EXPECT_EQ(Validate(again.back()).outcome(), ValidateSessionResponse::VALID);
}

// A SIGHUP that changed the sweep settings replaced the sweeper, and with
// it the breaker's judge: the new one judged its first window with no
// baseline, so short-lived sessions born and expired in it went unjudged
// (and would have been the next window's expectation). Raising
// --sweep_batch is what an operator does when the sweeper falls behind a
// flood. The sweeper is now reconfigured in place.
TEST_F(ManualSweepBreakerTest, AReloadOfTheSweepSettingsKeepsTheBreakersJudge) {
  CreateMany("k", 1300, /*ttl_ms=*/600000);
  daemon_->sweeper()->SweepOnce();  // a first window: no baseline yet
  absl::SleepFor(absl::Milliseconds(5100));
  daemon_->sweeper()->SweepOnce();  // the next one expects no young expiry
  Config next = MakeConfig();
  next.sweep_batch = sweep_batch_ / 2;
  ASSERT_TRUE(daemon_->Reload(next).ok());
  const std::vector<std::string> young = CreateMany("y", 700, /*ttl_ms=*/100);
  ASSERT_EQ(young.size(), 700u);
  WaitUntilExpired(young.back());
  for (int i = 0; i < 10; ++i) daemon_->sweeper()->SweepOnce();
  const sessiond::v1::ExpiryBreaker breaker =
      daemon_->state_machine()->expiry_breaker();
  EXPECT_TRUE(breaker.open()) << breaker.DebugString();
  EXPECT_EQ(Validate(young.back()).outcome(), ValidateSessionResponse::VALID);
}

TEST_F(DaemonTest, ValidateWithTouchSlidesTheIdleTimeoutThenItExpires) {
  const CreateSessionResponse created =
      MustCreate("ivy", /*ttl_ms=*/60000, /*idle_timeout_ms=*/4000);
  const int64_t created_seen = created.session().last_seen_at_ms();
  // Validations with touch are folded into a TouchCommand per flush
  // interval; poll until last_seen moved.
  int64_t seen = created_seen;
  for (int i = 0; i < 3000 && seen <= created_seen; ++i) {
    absl::SleepFor(absl::Milliseconds(10));
    ValidateSessionResponse v = Validate(created.token(), /*touch=*/true);
    ASSERT_EQ(v.outcome(), ValidateSessionResponse::VALID);
    ValidateSessionResponse plain = Validate(created.token());
    if (plain.outcome() == ValidateSessionResponse::VALID) {
      seen = plain.session().last_seen_at_ms();
    }
  }
  EXPECT_GT(seen, created_seen);
  // Left alone, it expires on idleness long before its absolute expiry.
  ValidateSessionResponse::Outcome outcome = ValidateSessionResponse::VALID;
  for (int i = 0; i < 3000 && outcome == ValidateSessionResponse::VALID; ++i) {
    absl::SleepFor(absl::Milliseconds(10));
    outcome = Validate(created.token()).outcome();
  }
  EXPECT_NE(outcome, ValidateSessionResponse::VALID);
}

TEST_F(DaemonTest, TouchesAreFoldedIntoOneCommandPerFlush) {
  // A flush interval beyond the test: only the explicit Flush writes.
  Config config = TestConfig(dir_.Child("data"));
  config.touch_flush_interval_ms = 3600 * 1000;
  RestartDaemonWith(config);

  const CreateSessionResponse a = MustCreate("olga");
  const CreateSessionResponse b = MustCreate("olga");
  absl::SleepFor(absl::Milliseconds(5));  // so a touch is later than create
  for (int i = 0; i < 50; ++i) {
    ASSERT_EQ(Validate(a.token(), /*touch=*/true).outcome(),
              ValidateSessionResponse::VALID);
    ASSERT_EQ(Validate(b.token(), /*touch=*/true).outcome(),
              ValidateSessionResponse::VALID);
  }
  const uint64_t commands_before = daemon_->touch_buffer()->flushed_commands();
  // 100 validations of 2 sessions: 2 touches, in one command.
  EXPECT_EQ(daemon_->touch_buffer()->Flush(), 2u);
  EXPECT_EQ(daemon_->touch_buffer()->flushed_commands(), commands_before + 1);
  EXPECT_EQ(daemon_->touch_buffer()->Flush(), 0u);
  // The batch goes through the log: last_seen moves (bounded poll).
  int64_t seen = a.session().last_seen_at_ms();
  for (int i = 0; i < 1000 && seen <= a.session().last_seen_at_ms(); ++i) {
    seen = Validate(a.token()).session().last_seen_at_ms();
    if (seen <= a.session().last_seen_at_ms())
      absl::SleepFor(absl::Milliseconds(5));
  }
  EXPECT_GT(seen, a.session().last_seen_at_ms());
}

// A restart that lengthens --touch_flush_interval_ms (here from 50 ms to an
// hour) keeps the sessions made under the shorter one, whose idle timeout
// (3 s) is now under three intervals: a user validating every 100 ms stays
// logged in, their touches flushed within a third of the idle timeout.
// Held for the interval, every such user was logged out at the restart
// (found in review).
TEST_F(DaemonTest, ALongerFlushIntervalAtARestartLogsNoActiveUserOut) {
  const CreateSessionResponse created =
      MustCreate("uma", /*ttl_ms=*/600000, /*idle_timeout_ms=*/3000);
  Config config = TestConfig(dir_.Child("data"));
  config.touch_flush_interval_ms = 3600 * 1000;
  RestartDaemonWith(config);
  // Twice the idle timeout and more, in use all along.
  for (int i = 0; i < 80; ++i) {
    ASSERT_EQ(Validate(created.token(), /*touch=*/true).outcome(),
              ValidateSessionResponse::VALID)
        << "validation " << i << ", " << i * 100 << " ms after the restart";
    absl::SleepFor(absl::Milliseconds(100));
  }
}

TEST_F(DaemonTest, BatchAndStreamValidate) {
  const CreateSessionResponse a = MustCreate("jack");
  sessiond::v1::BatchValidateSessionsRequest batch;
  batch.add_requests()->set_token(a.token());
  batch.add_requests()->set_token("garbage");
  sessiond::v1::BatchValidateSessionsResponse batch_response;
  {
    grpc::ClientContext context;
    SetDeadline(&context);
    ASSERT_TRUE(
        stub_->BatchValidateSessions(&context, batch, &batch_response).ok());
  }
  ASSERT_EQ(batch_response.responses_size(), 2);
  EXPECT_EQ(batch_response.responses(0).outcome(),
            ValidateSessionResponse::VALID);
  EXPECT_EQ(batch_response.responses(1).outcome(),
            ValidateSessionResponse::UNKNOWN);
  // Over the documented limit (docs/API.md): refused whole, nothing read.
  sessiond::v1::BatchValidateSessionsRequest big;
  for (int i = 0; i < 10001; ++i) big.add_requests()->set_token(a.token());
  {
    grpc::ClientContext context;
    SetDeadline(&context);
    sessiond::v1::BatchValidateSessionsResponse none;
    const grpc::Status s = stub_->BatchValidateSessions(&context, big, &none);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_EQ(s.error_message(), "requests: 10001 entries, limit is 10000");
    EXPECT_EQ(none.responses_size(), 0);
  }

  grpc::ClientContext context;
  SetDeadline(&context);
  auto stream = stub_->StreamValidateSessions(&context);
  for (uint64_t id = 1; id <= 5; ++id) {
    ValidateSessionRequest r;
    r.set_token(id % 2 ? a.token() : "garbage");
    r.set_request_id(id);
    ASSERT_TRUE(stream->Write(r));
    ValidateSessionResponse response;
    ASSERT_TRUE(stream->Read(&response));
    EXPECT_EQ(response.request_id(), id);
    EXPECT_EQ(response.outcome(), id % 2 ? ValidateSessionResponse::VALID
                                         : ValidateSessionResponse::UNKNOWN);
  }
  stream->WritesDone();
  EXPECT_TRUE(stream->Finish().ok());

  // Pipelined: all requests first, then all answers, in request order
  // (more than the server's queue of 64, so its read pausing is used).
  grpc::ClientContext pipelined_context;
  SetDeadline(&pipelined_context);
  auto pipelined = stub_->StreamValidateSessions(&pipelined_context);
  constexpr uint64_t kRequests = 300;
  std::thread writer([&] {
    for (uint64_t id = 1; id <= kRequests; ++id) {
      ValidateSessionRequest r;
      r.set_token(id % 3 ? a.token() : "garbage");
      r.set_request_id(id);
      if (!pipelined->Write(r)) break;
    }
    pipelined->WritesDone();
  });
  uint64_t next = 1;
  ValidateSessionResponse response;
  while (pipelined->Read(&response)) {
    EXPECT_EQ(response.request_id(), next);
    EXPECT_EQ(response.outcome(), next % 3 ? ValidateSessionResponse::VALID
                                           : ValidateSessionResponse::UNKNOWN);
    ++next;
  }
  writer.join();
  EXPECT_EQ(next, kRequests + 1);
  EXPECT_TRUE(pipelined->Finish().ok());

  // A message longer than any token is refused, not held until its answer
  // is written (64 of them, 16 MiB each, held 1 GiB for a client that reads
  // no answer): the answers before it, then INVALID_ARGUMENT.
  grpc::ClientContext oversized_context;
  SetDeadline(&oversized_context);
  auto oversized = stub_->StreamValidateSessions(&oversized_context);
  ValidateSessionRequest longest_token;  // the size of the longest JWT
  longest_token.set_token(std::string(8192, 'x'));
  longest_token.set_request_id(1);
  ASSERT_TRUE(oversized->Write(longest_token));
  ValidateSessionRequest huge;
  huge.set_token(std::string(1 << 20, 'x'));
  huge.set_request_id(2);
  oversized->Write(huge);  // the server may end the stream before it reads
  oversized->WritesDone();
  ASSERT_TRUE(oversized->Read(&response));
  EXPECT_EQ(response.request_id(), 1u);
  EXPECT_EQ(response.outcome(), ValidateSessionResponse::UNKNOWN);
  EXPECT_FALSE(oversized->Read(&response));
  const grpc::Status refused = oversized->Finish();
  EXPECT_EQ(refused.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(refused.error_message().find(
                "message 2 of the stream: request: 1048582 bytes, limit is "
                "16384"),
            std::string::npos)
      << refused.error_message();
}

// The replicated expiry leeway changes through AdminService (issue 6: only
// the first leader's --expiry_leeway_ms could set it), survives a restart
// whatever the flag says, and out-of-range values change nothing.
// AddMember checks the client address it stores, as it does the peer
// address: clients and ClusterStatus dial it until the node announces its
// own. It was stored as given ("10.0.0.4", no port).
TEST_F(DaemonTest, AddMemberRefusesAClientAddressThatIsNotHostPort) {
  auto admin = sessiond::v1::AdminService::NewStub(grpc::CreateChannel(
      daemon_->address(), grpc::InsecureChannelCredentials()));
  sessiond::v1::AddMemberRequest request;
  request.set_node_id(4);
  request.set_peer_address("127.0.0.1:7004");
  request.set_client_address("10.0.0.4");
  sessiond::v1::AddMemberResponse response;
  grpc::ClientContext context;
  SetDeadline(&context);
  const grpc::Status refused = admin->AddMember(&context, request, &response);
  EXPECT_EQ(refused.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(refused.error_message().find("client_address"), std::string::npos)
      << refused.error_message();
  grpc::ClientContext status_context;
  SetDeadline(&status_context);
  sessiond::v1::ClusterStatusResponse status;
  ASSERT_TRUE(admin
                  ->ClusterStatus(&status_context,
                                  sessiond::v1::ClusterStatusRequest(), &status)
                  .ok());
  EXPECT_EQ(status.members_size(), 1);  // nothing was added
}

TEST_F(DaemonTest, ExpiryLeewayIsSetThroughTheAdminServiceAndKept) {
  auto admin = sessiond::v1::AdminService::NewStub(grpc::CreateChannel(
      daemon_->address(), grpc::InsecureChannelCredentials()));
  auto set = [&](int64_t leeway, sessiond::v1::SetExpiryLeewayResponse* out) {
    sessiond::v1::SetExpiryLeewayRequest request;
    request.set_expiry_leeway_ms(leeway);
    grpc::ClientContext context;
    SetDeadline(&context);
    return admin->SetExpiryLeeway(&context, request, out);
  };
  sessiond::v1::SetExpiryLeewayResponse response;
  for (int64_t bad : {int64_t{-1}, int64_t{24} * 3600 * 1000 + 1}) {
    const grpc::Status refused = set(bad, &response);
    EXPECT_EQ(refused.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_NE(refused.error_message().find("expiry_leeway_ms"),
              std::string::npos)
        << refused.error_message();
  }

  // A session past its expiry time still validates within the leeway.
  const CreateSessionResponse created = MustCreate("leeway", /*ttl_ms=*/1000);
  const grpc::Status ok = set(60000, &response);
  ASSERT_TRUE(ok.ok()) << ok.error_message();
  EXPECT_EQ(response.expiry_leeway_ms(), 60000);
  absl::SleepFor(absl::Milliseconds(1300));
  EXPECT_EQ(Validate(created.token()).outcome(),
            ValidateSessionResponse::VALID);

  RestartDaemon();  // TestConfig's --expiry_leeway_ms is 0
  admin = sessiond::v1::AdminService::NewStub(grpc::CreateChannel(
      daemon_->address(), grpc::InsecureChannelCredentials()));
  sessiond::v1::ClusterStatusRequest status_request;
  sessiond::v1::ClusterStatusResponse status;
  grpc::ClientContext context;
  SetDeadline(&context);
  ASSERT_TRUE(admin->ClusterStatus(&context, status_request, &status).ok());
  EXPECT_EQ(status.expiry_leeway_ms(), 60000);
  EXPECT_EQ(Validate(created.token()).outcome(),
            ValidateSessionResponse::VALID);

  // Without it the session expires (EXPIRED, or UNKNOWN once the sweeper
  // removed it) once cluster time passes its expiry: cluster time resumed
  // from the last applied stamp at the restart, so within about a second.
  ASSERT_TRUE(set(0, &response).ok());
  bool expired = false;
  for (int i = 0; i < 100 && !expired; ++i) {
    expired =
        Validate(created.token()).outcome() != ValidateSessionResponse::VALID;
    if (!expired) absl::SleepFor(absl::Milliseconds(50));
  }
  EXPECT_TRUE(expired);
}

TEST_F(DaemonTest, RestartOnTheSameDataDirKeepsSessions) {
  std::vector<CreateSessionResponse> sessions;
  for (int i = 0; i < 20; ++i) sessions.push_back(MustCreate("kate"));
  RevokeSessionRequest revoke;
  revoke.set_token(sessions[3].token());
  RevokeSessionResponse revoked;
  ASSERT_TRUE(Revoke(revoke, &revoked).ok());
  UpdateSessionRequest update;
  update.set_token(sessions[5].token());
  (*update.mutable_set_attributes())["x"] = "y";
  UpdateSessionResponse updated;
  ASSERT_TRUE(Update(update, &updated).ok());
  const std::vector<std::string> before = ListAll("kate");

  RestartDaemon();
  EXPECT_GE(daemon_->sessions_loaded(), 20u);
  EXPECT_EQ(ListAll("kate"), before);
  for (int i = 0; i < 20; ++i) {
    ValidateSessionResponse v = Validate(sessions[i].token());
    if (i == 3) {
      EXPECT_EQ(v.outcome(), ValidateSessionResponse::REVOKED);
    } else {
      EXPECT_EQ(v.outcome(), ValidateSessionResponse::VALID) << i;
      EXPECT_EQ(v.session().version(), i == 5 ? 2u : 1u);
    }
  }
  // And writes still work after the restart.
  MustCreate("kate");
}

TEST_F(DaemonTest, ShutdownUnderLoadKeepsEveryAcknowledgedWrite) {
  constexpr int kThreads = 8;
  std::atomic<bool> stop{false};
  std::atomic<int> acked_before_shutdown{0};
  std::mutex mu;
  std::vector<std::string> acked;  // tokens of acknowledged creates
  std::set<int> other_codes;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&] {
      // Each thread its own channel: the daemon's stub_ is reset below.
      auto stub = StubFor(daemon_->address());
      for (int i = 0; i < 100000 && !stop.load(); ++i) {
        CreateSessionRequest request;
        request.set_user_id("load");
        CreateSessionResponse response;
        grpc::ClientContext context;
        context.set_deadline(std::chrono::system_clock::now() +
                             std::chrono::seconds(10));
        const grpc::Status s =
            stub->CreateSession(&context, request, &response);
        std::lock_guard<std::mutex> lock(mu);
        if (s.ok()) {
          acked.push_back(response.token());
          ++acked_before_shutdown;
        } else {
          other_codes.insert(s.error_code());
          // UNAVAILABLE (draining, or the port is gone): the daemon is down.
          if (s.error_code() == grpc::StatusCode::UNAVAILABLE) break;
        }
      }
    });
  }
  for (int i = 0; i < 2000 && acked_before_shutdown.load() < 50; ++i) {
    absl::SleepFor(absl::Milliseconds(5));
  }
  daemon_->Shutdown();
  stop = true;
  for (auto& th : threads) th.join();
  daemon_.reset();
  for (int code : other_codes) {
    EXPECT_TRUE(code == grpc::StatusCode::UNAVAILABLE ||
                code == grpc::StatusCode::CANCELLED)
        << "unexpected status code " << code;
  }
  ASSERT_GT(acked.size(), 0u);

  StartDaemon();
  for (const std::string& token : acked) {
    ASSERT_EQ(Validate(token).outcome(), ValidateSessionResponse::VALID)
        << "an acknowledged create was lost across a clean shutdown";
  }
}

// Server reflection is on, so grpcurl and friends can call the daemon with
// no .proto files: list_services names the SessionService. Spoken through a
// generic stub (raw bytes) so the test needs no reflection stubs.
TEST_F(DaemonTest, ServerReflectionListsTheSessionService) {
  grpc::CompletionQueue cq;
  grpc::GenericStub generic(grpc::CreateChannel(
      daemon_->address(), grpc::InsecureChannelCredentials()));
  grpc::ClientContext context;
  SetDeadline(&context);
  auto call = generic.PrepareCall(
      &context,
      "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo", &cq);
  auto step = [&](void* tag) {
    void* got = nullptr;
    bool ok = false;
    EXPECT_TRUE(cq.Next(&got, &ok));
    EXPECT_EQ(got, tag);
    return ok;
  };
  call->StartCall(reinterpret_cast<void*>(1));
  ASSERT_TRUE(step(reinterpret_cast<void*>(1)));
  // ServerReflectionRequest{list_services: ""}: field 7, length 0.
  grpc::Slice request_slice(std::string("\x3a\x00", 2));
  grpc::ByteBuffer request(&request_slice, 1);
  call->Write(request, reinterpret_cast<void*>(2));
  ASSERT_TRUE(step(reinterpret_cast<void*>(2)));
  grpc::ByteBuffer reply;
  call->Read(&reply, reinterpret_cast<void*>(3));
  ASSERT_TRUE(step(reinterpret_cast<void*>(3)));
  call->WritesDone(reinterpret_cast<void*>(4));
  step(reinterpret_cast<void*>(4));
  grpc::Status status;
  call->Finish(&status, reinterpret_cast<void*>(5));
  step(reinterpret_cast<void*>(5));
  EXPECT_TRUE(status.ok()) << status.error_message();
  std::vector<grpc::Slice> slices;
  ASSERT_TRUE(reply.Dump(&slices).ok());
  std::string bytes;
  for (const grpc::Slice& s : slices) {
    bytes.append(reinterpret_cast<const char*>(s.begin()), s.size());
  }
  EXPECT_NE(bytes.find("sessiond.v1.SessionService"), std::string::npos);
  EXPECT_NE(bytes.find("grpc.health.v1.Health"), std::string::npos);
  cq.Shutdown();
  void* ignored;
  bool ok;
  while (cq.Next(&ignored, &ok)) {
  }
}

TEST_F(DaemonTest, CorruptDataDirIsRefusedWithDataLoss) {
  MustCreate("pat");
  daemon_->Shutdown();
  daemon_.reset();
  {
    std::ofstream current(dir_.Child("data") + "/CURRENT", std::ios::trunc);
    current << "garbage\n";
  }
  auto daemon = Daemon::Start(TestConfig(dir_.Child("data")));
  ASSERT_FALSE(daemon.ok());
  EXPECT_EQ(daemon.status().code(), absl::StatusCode::kDataLoss)
      << daemon.status();
  EXPECT_NE(daemon.status().message().find("corrupt"), absl::string_view::npos);
}

TEST_F(DaemonTest, SecondDaemonOnTheSamePortIsRefused) {
  ScopedTempDir other;
  Config config = TestConfig(other.Child("data"));
  config.listen = daemon_->address();
  auto second = Daemon::Start(config);
  ASSERT_FALSE(second.ok()) << "two daemons share " << daemon_->address();
  EXPECT_EQ(second.status().code(), absl::StatusCode::kUnavailable)
      << second.status();
  EXPECT_EQ(Validate(MustCreate("noah").token()).outcome(),
            ValidateSessionResponse::VALID);
}

TEST_F(DaemonTest, LogCompactionKeepsSessionsAcrossRestart) {
  std::vector<CreateSessionResponse> sessions;
  for (int i = 0; i < 30; ++i) sessions.push_back(MustCreate("quinn"));
  absl::StatusOr<LogIndex> through =
      daemon_->compactor()->CompactOnce(/*force=*/true);
  ASSERT_TRUE(through.ok()) << through.status();
  ASSERT_GT(through->value(), 30u);
  for (int i = 0; i < 3000 && daemon_->log_store()->FirstIndex() <= *through;
       ++i) {
    absl::SleepFor(absl::Milliseconds(1));
  }
  EXPECT_EQ(daemon_->log_store()->FirstIndex(), *through + 1);
  MustCreate("quinn");  // writes go on after compaction

  RestartDaemon();
  EXPECT_GT(daemon_->log_store()->FirstIndex(), *through);
  for (const CreateSessionResponse& s : sessions) {
    EXPECT_EQ(Validate(s.token()).outcome(), ValidateSessionResponse::VALID);
  }
  EXPECT_EQ(ListAll("quinn").size(), 31u);
}

TEST_F(DaemonTest, SecondDaemonOnTheSameDataDirIsRefused) {
  auto second = Daemon::Start(TestConfig(dir_.Child("data")));
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.status().code(), absl::StatusCode::kFailedPrecondition)
      << second.status();
  // The first one is unharmed.
  EXPECT_EQ(Validate(MustCreate("liam").token()).outcome(),
            ValidateSessionResponse::VALID);
}

// ---- The real binary. ------------------------------------------------------

class BinaryTest : public ::testing::Test {
 protected:
  std::unique_ptr<Subprocess> Launch(std::vector<std::string> args,
                                     const std::string& name) {
    return std::make_unique<Subprocess>(SESSIOND_BINARY, std::move(args),
                                        dir_.Child(name + ".stderr"));
  }
  std::vector<std::string> BaseArgs() {
    return {"--listen",
            "127.0.0.1:0",
            "--data_dir",
            dir_.Child("data"),
            "--tick_ms",
            "10",
            "--min_ttl_ms",
            "50",
            "--sweep_interval_ms",
            "50"};
  }
  ScopedTempDir dir_;
};

TEST_F(BinaryTest, ServesCreateValidateAndStopsCleanlyOnSigterm) {
  auto process = Launch(BaseArgs(), "a");
  ASSERT_TRUE(process->Start());
  const std::string address =
      process->WaitForLine("LISTENING ", absl::Seconds(60));
  ASSERT_FALSE(address.empty()) << process->Stderr();
  EXPECT_NE(address, "127.0.0.1:0");
  EXPECT_NE(process->stdout_text().find("sessiond listening on " + address),
            std::string::npos);

  auto stub = StubFor(address);
  CreateSessionRequest create;
  create.set_user_id("mia");
  CreateSessionResponse created;
  {
    grpc::ClientContext context;
    SetDeadline(&context);
    ASSERT_TRUE(stub->CreateSession(&context, create, &created).ok());
  }
  ValidateSessionRequest validate;
  validate.set_token(created.token());
  ValidateSessionResponse validated;
  {
    grpc::ClientContext context;
    SetDeadline(&context);
    ASSERT_TRUE(stub->ValidateSession(&context, validate, &validated).ok());
  }
  EXPECT_EQ(validated.outcome(), ValidateSessionResponse::VALID);

  // Standard health checking: grpc.health.v1.Health/Check with an empty
  // request answers SERVING (status field 1 = 1), through a generic stub so
  // the test needs no health stubs.
  {
    grpc::GenericStub generic(
        grpc::CreateChannel(address, grpc::InsecureChannelCredentials()));
    grpc::ClientContext context;
    SetDeadline(&context);
    grpc::ByteBuffer request;  // empty HealthCheckRequest
    grpc::Slice empty("");
    request = grpc::ByteBuffer(&empty, 1);
    grpc::ByteBuffer reply;
    std::mutex mu;
    std::condition_variable cv;
    bool done = false;
    grpc::Status status;
    generic.UnaryCall(&context, "/grpc.health.v1.Health/Check",
                      grpc::StubOptions(), &request, &reply,
                      [&](grpc::Status s) {
                        std::lock_guard<std::mutex> lock(mu);
                        status = s;
                        done = true;
                        cv.notify_all();
                      });
    std::unique_lock<std::mutex> lock(mu);
    ASSERT_TRUE(
        cv.wait_for(lock, std::chrono::seconds(30), [&] { return done; }));
    ASSERT_TRUE(status.ok()) << status.error_message();
    std::vector<grpc::Slice> slices;
    ASSERT_TRUE(reply.Dump(&slices).ok());
    std::string bytes;
    for (const grpc::Slice& s : slices) {
      bytes.append(reinterpret_cast<const char*>(s.begin()), s.size());
    }
    EXPECT_EQ(bytes, std::string("\x08\x01", 2));  // status: SERVING
  }

  process->Signal(SIGTERM);
  EXPECT_EQ(process->Wait(absl::Seconds(60)), 0) << process->Stderr();

  // Restarted on the same dir, the session is still there.
  auto again = Launch(BaseArgs(), "b");
  ASSERT_TRUE(again->Start());
  const std::string address2 =
      again->WaitForLine("LISTENING ", absl::Seconds(60));
  ASSERT_FALSE(address2.empty()) << again->Stderr();
  auto stub2 = StubFor(address2);
  grpc::ClientContext context;
  SetDeadline(&context);
  ASSERT_TRUE(stub2->ValidateSession(&context, validate, &validated).ok());
  EXPECT_EQ(validated.outcome(), ValidateSessionResponse::VALID);
  again->Signal(SIGTERM);
  EXPECT_EQ(again->Wait(absl::Seconds(60)), 0) << again->Stderr();
}

TEST_F(BinaryTest, SecondProcessOnALockedDataDirExitsOneWithTheReason) {
  auto first = Launch(BaseArgs(), "first");
  ASSERT_TRUE(first->Start());
  ASSERT_FALSE(first->WaitForLine("LISTENING ", absl::Seconds(60)).empty())
      << first->Stderr();
  auto second = Launch(BaseArgs(), "second");
  ASSERT_TRUE(second->Start());
  EXPECT_EQ(second->Wait(absl::Seconds(60)), 1);
  EXPECT_NE(second->Stderr().find("in use by another sessiond"),
            std::string::npos)
      << second->Stderr();
  first->Signal(SIGTERM);
  EXPECT_EQ(first->Wait(absl::Seconds(60)), 0) << first->Stderr();
}

TEST_F(BinaryTest, FaultPointCrashesWithItsExitCodeAndTheDirRecovers) {
  // The first synced log write happens at start (the new term's entry).
  std::vector<std::string> args = BaseArgs();
  args.push_back("--fault_point");
  args.push_back("log.after_append");
  auto crashing = Launch(args, "crash");
  ASSERT_TRUE(crashing->Start());
  EXPECT_EQ(crashing->Wait(absl::Seconds(60)), 86) << crashing->Stderr();

  auto again = Launch(BaseArgs(), "again");
  ASSERT_TRUE(again->Start());
  const std::string address =
      again->WaitForLine("LISTENING ", absl::Seconds(60));
  ASSERT_FALSE(address.empty()) << again->Stderr();
  again->Signal(SIGTERM);
  EXPECT_EQ(again->Wait(absl::Seconds(60)), 0) << again->Stderr();
}

TEST_F(BinaryTest, SigkillAfterLogCompactionLosesNothing) {
  std::vector<std::string> args = BaseArgs();
  for (const char* a :
       {"--log_compact_interval_ms", "20", "--log_compact_min_entries", "1"}) {
    args.push_back(a);
  }
  auto process = Launch(args, "compacting");
  ASSERT_TRUE(process->Start());
  const std::string address =
      process->WaitForLine("LISTENING ", absl::Seconds(60));
  ASSERT_FALSE(address.empty()) << process->Stderr();
  auto stub = StubFor(address);
  std::vector<std::string> tokens;
  for (int i = 0; i < 200; ++i) {
    CreateSessionRequest create;
    create.set_user_id("rita");
    CreateSessionResponse created;
    grpc::ClientContext context;
    SetDeadline(&context);
    ASSERT_TRUE(stub->CreateSession(&context, create, &created).ok());
    tokens.push_back(created.token());
    if (i % 50 == 0) absl::SleepFor(absl::Milliseconds(30));  // let it compact
  }
  process->Signal(SIGKILL);
  EXPECT_EQ(process->Wait(absl::Seconds(60)), 128 + SIGKILL);

  auto again = Launch(BaseArgs(), "after_kill");
  ASSERT_TRUE(again->Start());
  const std::string address2 =
      again->WaitForLine("LISTENING ", absl::Seconds(60));
  ASSERT_FALSE(address2.empty()) << again->Stderr();
  // The log was compacted before the kill (the restart starts past 1).
  const std::string out = again->stdout_text();
  const size_t at = out.find("raft log: first index ");
  ASSERT_NE(at, std::string::npos) << out;
  EXPECT_GT(std::stoull(out.substr(at + 22)), 1u) << out;
  auto stub2 = StubFor(address2);
  for (const std::string& token : tokens) {
    ValidateSessionRequest validate;
    validate.set_token(token);
    ValidateSessionResponse validated;
    grpc::ClientContext context;
    SetDeadline(&context);
    ASSERT_TRUE(stub2->ValidateSession(&context, validate, &validated).ok());
    ASSERT_EQ(validated.outcome(), ValidateSessionResponse::VALID);
  }
  again->Signal(SIGTERM);
  EXPECT_EQ(again->Wait(absl::Seconds(60)), 0) << again->Stderr();
}

TEST_F(BinaryTest, BadFlagsExitTwo) {
  auto unknown = Launch({"--no_such_flag", "1"}, "unknown");
  ASSERT_TRUE(unknown->Start());
  EXPECT_EQ(unknown->Wait(absl::Seconds(30)), 2);
  EXPECT_NE(unknown->Stderr().find("no_such_flag"), std::string::npos)
      << unknown->Stderr();

  auto bad_value = Launch({"--shards", "zero"}, "bad_value");
  ASSERT_TRUE(bad_value->Start());
  EXPECT_EQ(bad_value->Wait(absl::Seconds(30)), 2);
  EXPECT_NE(bad_value->Stderr().find("shards"), std::string::npos)
      << bad_value->Stderr();
}

}  // namespace
}  // namespace sessiond::server
