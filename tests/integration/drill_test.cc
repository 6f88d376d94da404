// Copyright sessiond authors. Licensed under the Apache License 2.0.
//
// The mass-logout drills of issue 7, on a real 3-node cluster on loopback:
// each one does to real processes what an operator's mistake or a bad day
// would, and checks that nobody stays logged out.
#include <grpcpp/grpcpp.h>

#include <map>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "google/protobuf/util/message_differencer.h"
#include "gtest/gtest.h"
#include "sessiond/v1/admin.grpc.pb.h"
#include "sessiond/v1/session.grpc.pb.h"
#include "tests/integration/cluster_harness.h"

namespace sessiond::testing {
namespace {

using google::protobuf::util::MessageDifferencer;
using sessiond::v1::Session;
using sessiond::v1::ValidateSessionResponse;

constexpr int kSessions = 100'000;
constexpr int kUsers = 1'000;
constexpr int kCreateBatch = 1'000;
constexpr int kValidateBatch = 5'000;

ClusterOptions Options() {
  ClusterOptions options;
  options.binary = SESSIOND_BINARY;
  return options;
}

// Creates kSessions one-hour sessions through node `via`, kUsers users,
// each with two attributes; returns their tokens.
std::vector<std::string> CreateMany(ClusterHarness& cluster, int via) {
  std::vector<std::string> tokens;
  tokens.reserve(kSessions);
  auto stub = cluster.Stub(via);
  for (int first = 0; first < kSessions; first += kCreateBatch) {
    sessiond::v1::CreateSessionsRequest request;
    for (int i = first; i < first + kCreateBatch; ++i) {
      auto* one = request.add_requests();
      one->set_user_id(absl::StrCat("user-", i % kUsers));
      one->set_ttl_ms(3600 * 1000);
      (*one->mutable_attributes())["n"] = absl::StrCat(i);
      (*one->mutable_attributes())["plan"] = i % 2 ? "pro" : "free";
    }
    sessiond::v1::CreateSessionsResponse response;
    grpc::ClientContext context;
    SetDeadline(&context, absl::Seconds(30));
    const grpc::Status s = stub->CreateSessions(&context, request, &response);
    EXPECT_TRUE(s.ok()) << s.error_message();
    if (!s.ok()) return tokens;
    for (const auto& created : response.responses()) {
      tokens.push_back(created.token());
    }
  }
  return tokens;
}

// Validates every token (linearizably, through node `via`, retrying while a
// leader is elected): the answers, in order.
std::vector<ValidateSessionResponse> ValidateAll(
    ClusterHarness& cluster, int via, const std::vector<std::string>& tokens) {
  std::vector<ValidateSessionResponse> answers;
  answers.reserve(tokens.size());
  auto stub = cluster.Stub(via);
  for (size_t first = 0; first < tokens.size(); first += kValidateBatch) {
    sessiond::v1::BatchValidateSessionsRequest request;
    request.set_consistency(sessiond::v1::LINEARIZABLE);
    for (size_t i = first; i < tokens.size() && i < first + kValidateBatch;
         ++i) {
      request.add_requests()->set_token(tokens[i]);
    }
    sessiond::v1::BatchValidateSessionsResponse response;
    grpc::Status s;
    for (int attempt = 0; attempt < 50; ++attempt) {
      grpc::ClientContext context;
      SetDeadline(&context, absl::Seconds(10));
      s = stub->BatchValidateSessions(&context, request, &response);
      if (s.error_code() != grpc::StatusCode::UNAVAILABLE) break;
      absl::SleepFor(absl::Milliseconds(200));
    }
    EXPECT_TRUE(s.ok()) << s.error_message();
    if (!s.ok()) return answers;
    for (auto& answer : *response.mutable_responses()) {
      answers.push_back(std::move(answer));
    }
  }
  return answers;
}

// How many answers have `outcome`.
int Count(const std::vector<ValidateSessionResponse>& answers,
          ValidateSessionResponse::Outcome outcome) {
  int n = 0;
  for (const auto& answer : answers) n += answer.outcome() == outcome;
  return n;
}

// Every answer VALID, with exactly the session recorded before.
void ExpectAllValidAsBefore(const std::vector<ValidateSessionResponse>& answers,
                            const std::vector<Session>& before) {
  ASSERT_EQ(answers.size(), before.size());
  int different = 0;
  for (size_t i = 0; i < answers.size(); ++i) {
    ASSERT_EQ(answers[i].outcome(), ValidateSessionResponse::VALID)
        << "session " << i << " is " << answers[i].outcome();
    if (!MessageDifferencer::Equals(answers[i].session(), before[i])) {
      if (++different <= 3) {
        ADD_FAILURE() << "session " << i << " changed:\n"
                      << before[i].DebugString() << "became\n"
                      << answers[i].session().DebugString();
      }
    }
  }
  EXPECT_EQ(different, 0);
}

// The flush drill: 100,000 sessions; preview; flush; all REVOKED; SIGKILL
// the leader; restore on the new leader; all 100,000 VALID again with
// identical contents; restart every node; still VALID.
TEST(DrillTest, FlushKillTheLeaderRestoreRestartEverything) {
  ClusterHarness cluster(Options());
  ASSERT_TRUE(cluster.Start().ok());
  absl::StatusOr<int> leader = cluster.WaitForLeader(absl::Seconds(20));
  ASSERT_TRUE(leader.ok()) << leader.status();
  const std::vector<std::string> tokens = CreateMany(cluster, *leader);
  ASSERT_EQ(tokens.size(), static_cast<size_t>(kSessions));
  std::vector<Session> before;
  for (auto& answer : ValidateAll(cluster, *leader, tokens)) {
    ASSERT_EQ(answer.outcome(), ValidateSessionResponse::VALID);
    before.push_back(answer.session());
  }
  int follower = 0, other = 0;
  for (int id : cluster.ids()) {
    if (id == *leader) continue;
    (follower == 0 ? follower : other) = id;
  }

  // Step one through a follower: a preview and a token.
  sessiond::v1::FlushResponse preview;
  {
    grpc::ClientContext context;
    SetDeadline(&context, absl::Seconds(30));
    const grpc::Status s = cluster.Admin(follower)->Flush(
        &context, sessiond::v1::FlushRequest(), &preview);
    ASSERT_TRUE(s.ok()) << s.error_message();
  }
  ASSERT_TRUE(preview.has_preview());
  EXPECT_EQ(preview.preview().sessions(), static_cast<uint64_t>(kSessions));
  EXPECT_EQ(preview.preview().users(), static_cast<uint64_t>(kUsers));
  EXPECT_FALSE(preview.preview().confirmation_token().empty());
  EXPECT_FALSE(preview.has_revocation());
  // A preview changes nothing.
  EXPECT_EQ(Count(ValidateAll(cluster, other, tokens),
                  ValidateSessionResponse::VALID),
            kSessions);

  // Step two through the other follower.
  sessiond::v1::FlushResponse flushed;
  {
    sessiond::v1::FlushRequest request;
    request.set_confirmation_token(preview.preview().confirmation_token());
    grpc::ClientContext context;
    SetDeadline(&context, absl::Seconds(60));
    const grpc::Status s =
        cluster.Admin(other)->Flush(&context, request, &flushed);
    ASSERT_TRUE(s.ok()) << s.error_message();
  }
  const sessiond::v1::Revocation& flush = flushed.revocation();
  EXPECT_EQ(flush.sessions(), static_cast<uint64_t>(kSessions));
  EXPECT_EQ(flush.users(), static_cast<uint64_t>(kUsers));
  EXPECT_EQ(flush.reason(), "flushed");
  EXPECT_GT(flush.id(), 0u);
  const std::vector<ValidateSessionResponse> revoked =
      ValidateAll(cluster, follower, tokens);
  EXPECT_EQ(Count(revoked, ValidateSessionResponse::REVOKED), kSessions);
  EXPECT_EQ(revoked[0].revocation_id(), flush.id());
  EXPECT_EQ(revoked[0].revoke_reason(), "flushed");

  // The leader dies; the new one restores.
  cluster.Kill(*leader);
  absl::StatusOr<int> next = cluster.WaitForLeader(absl::Seconds(20));
  ASSERT_TRUE(next.ok()) << next.status();
  sessiond::v1::RestoreFlushResponse restored;
  {
    sessiond::v1::RestoreFlushRequest request;
    request.set_flush_id(flush.id());
    grpc::ClientContext context;
    SetDeadline(&context, absl::Seconds(60));
    const grpc::Status s =
        cluster.Admin(*next)->RestoreFlush(&context, request, &restored);
    ASSERT_TRUE(s.ok()) << s.error_message();
  }
  EXPECT_EQ(restored.revocation().restored(), static_cast<uint64_t>(kSessions));
  EXPECT_EQ(restored.revocation().state(), sessiond::v1::Revocation::RESTORED);
  ExpectAllValidAsBefore(ValidateAll(cluster, *next, tokens), before);

  // Every node restarts (the dead one too): still VALID, every node agrees.
  for (int id : cluster.running_ids()) cluster.Kill(id);
  for (int id : cluster.ids()) ASSERT_TRUE(cluster.StartNode(id).ok());
  ASSERT_TRUE(cluster.WaitForLeader(absl::Seconds(30)).ok());
  for (int id : cluster.ids()) {
    ExpectAllValidAsBefore(ValidateAll(cluster, id, tokens), before);
  }
  absl::StatusOr<std::string> digest =
      cluster.WaitForConvergence(absl::Seconds(60));
  EXPECT_TRUE(digest.ok()) << digest.status();
}

// Every refusal is clear and changes nothing.
TEST(DrillTest, RefusalsSayWhatToDoAndChangeNothing) {
  ClusterHarness cluster(Options());
  ASSERT_TRUE(cluster.Start().ok());
  ASSERT_TRUE(cluster.WaitForLeader(absl::Seconds(20)).ok());
  const int via = cluster.ids()[0];
  auto session_stub = cluster.Stub(via);
  std::vector<std::string> tokens;
  for (int i = 0; i < 20; ++i) {
    sessiond::v1::CreateSessionRequest request;
    request.set_user_id(absl::StrCat("u", i % 4));
    request.set_ttl_ms(3600 * 1000);
    sessiond::v1::CreateSessionResponse response;
    grpc::ClientContext context;
    SetDeadline(&context, absl::Seconds(10));
    ASSERT_TRUE(session_stub->CreateSession(&context, request, &response).ok());
    tokens.push_back(response.token());
  }
  absl::StatusOr<std::string> digest =
      cluster.WaitForConvergence(absl::Seconds(30));
  ASSERT_TRUE(digest.ok()) << digest.status();
  auto admin = cluster.Admin(via);
  const auto expect_refused = [&](const grpc::Status& s, grpc::StatusCode code,
                                  const std::string& says) {
    EXPECT_EQ(s.error_code(), code) << s.error_message();
    EXPECT_NE(s.error_message().find(says), std::string::npos)
        << s.error_message();
  };
  {
    sessiond::v1::FlushRequest request;
    request.set_confirmation_token("never-issued");
    sessiond::v1::FlushResponse response;
    grpc::ClientContext context;
    SetDeadline(&context, absl::Seconds(10));
    expect_refused(admin->Flush(&context, request, &response),
                   grpc::StatusCode::FAILED_PRECONDITION, "new preview");
  }
  {
    // A preview's token for one selection does not confirm another.
    sessiond::v1::BulkRevokeRequest request;
    request.mutable_selector()->mutable_users()->add_user_ids("u1");
    sessiond::v1::BulkRevokeResponse preview;
    grpc::ClientContext context;
    SetDeadline(&context, absl::Seconds(10));
    ASSERT_TRUE(admin->BulkRevoke(&context, request, &preview).ok());
    EXPECT_EQ(preview.preview().sessions(), 5u);
    EXPECT_EQ(preview.preview().users(), 1u);
    sessiond::v1::FlushRequest flush;
    flush.set_confirmation_token(preview.preview().confirmation_token());
    sessiond::v1::FlushResponse response;
    grpc::ClientContext context2;
    SetDeadline(&context2, absl::Seconds(10));
    expect_refused(admin->Flush(&context2, flush, &response),
                   grpc::StatusCode::FAILED_PRECONDITION, "another selection");
  }
  {
    sessiond::v1::BulkRevokeRequest request;
    request.mutable_selector()->mutable_all();
    sessiond::v1::BulkRevokeResponse response;
    grpc::ClientContext context;
    SetDeadline(&context, absl::Seconds(10));
    expect_refused(admin->BulkRevoke(&context, request, &response),
                   grpc::StatusCode::INVALID_ARGUMENT, "Flush");
  }
  {
    sessiond::v1::BulkRevokeRequest request;
    sessiond::v1::BulkRevokeResponse response;
    grpc::ClientContext context;
    SetDeadline(&context, absl::Seconds(10));
    expect_refused(admin->BulkRevoke(&context, request, &response),
                   grpc::StatusCode::INVALID_ARGUMENT, "selector is empty");
  }
  {
    // Held to the session API's limits: a reason of any length was kept
    // in the replicated pending list, then in the flush's record.
    sessiond::v1::FlushRequest request;
    request.set_reason(std::string(300, 'r'));
    sessiond::v1::FlushResponse response;
    grpc::ClientContext context;
    SetDeadline(&context, absl::Seconds(10));
    expect_refused(admin->Flush(&context, request, &response),
                   grpc::StatusCode::INVALID_ARGUMENT, "--max_reason_bytes");
    sessiond::v1::BulkRevokeRequest bulk;
    bulk.mutable_selector()->mutable_attribute()->set_key("tenant");
    bulk.mutable_selector()->mutable_attribute()->set_value(
        std::string(5000, 'v'));
    sessiond::v1::BulkRevokeResponse bulk_response;
    grpc::ClientContext context2;
    SetDeadline(&context2, absl::Seconds(10));
    expect_refused(admin->BulkRevoke(&context2, bulk, &bulk_response),
                   grpc::StatusCode::INVALID_ARGUMENT,
                   "selector.attribute.value: is 5000 bytes");
  }
  {
    sessiond::v1::RestoreFlushRequest request;
    request.set_flush_id(987654);
    sessiond::v1::RestoreFlushResponse response;
    grpc::ClientContext context;
    SetDeadline(&context, absl::Seconds(10));
    expect_refused(admin->RestoreFlush(&context, request, &response),
                   grpc::StatusCode::NOT_FOUND, "flushes list");
  }
  for (const auto& answer : ValidateAll(cluster, via, tokens)) {
    EXPECT_EQ(answer.outcome(), ValidateSessionResponse::VALID);
  }
  // The sessions are as they were (only pending previews differ).
  for (int id : cluster.ids()) {
    sessiond::v1::ListFlushesResponse list;
    grpc::ClientContext context;
    SetDeadline(&context, absl::Seconds(10));
    ASSERT_TRUE(
        cluster.Admin(id)
            ->ListFlushes(&context, sessiond::v1::ListFlushesRequest(), &list)
            .ok());
    EXPECT_EQ(list.revocations_size(), 0);
  }

  // RevokeUserSessions is undoable too.
  sessiond::v1::RevokeUserSessionsRequest request;
  request.set_user_id("u2");
  sessiond::v1::RevokeUserSessionsResponse response;
  {
    grpc::ClientContext context;
    SetDeadline(&context, absl::Seconds(10));
    ASSERT_TRUE(
        session_stub->RevokeUserSessions(&context, request, &response).ok());
  }
  EXPECT_EQ(response.revoked_count(), 5u);
  ASSERT_NE(response.revocation_id(), 0u);
  sessiond::v1::RestoreFlushRequest restore;
  restore.set_flush_id(response.revocation_id());
  sessiond::v1::RestoreFlushResponse restored;
  {
    grpc::ClientContext context;
    SetDeadline(&context, absl::Seconds(10));
    ASSERT_TRUE(admin->RestoreFlush(&context, restore, &restored).ok());
  }
  EXPECT_EQ(restored.revocation().restored(), 5u);
  for (const auto& answer : ValidateAll(cluster, via, tokens)) {
    EXPECT_EQ(answer.outcome(), ValidateSessionResponse::VALID);
  }
  {
    grpc::ClientContext context;
    SetDeadline(&context, absl::Seconds(10));
    expect_refused(admin->RestoreFlush(&context, restore, &restored),
                   grpc::StatusCode::FAILED_PRECONDITION, "already restored");
  }
}

}  // namespace
}  // namespace sessiond::testing
