// Copyright sessiond authors. Licensed under the Apache License 2.0.
//
// A replicated sessiond on real processes: 3 nodes on loopback, killed with
// SIGKILL, paused with SIGSTOP, partitioned with the transport's fault
// switch. Afterwards every acknowledged write must be present, identical on
// every node (equal state digests at the same applied index), and applied
// once.
#include <grpcpp/client_context.h>
#include <sys/wait.h>

#include <fstream>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "tests/integration/cluster_harness.h"
#include "tests/integration/cluster_workload.h"

namespace sessiond::testing {
namespace {

using sessiond::v1::ValidateSessionResponse;

ClusterOptions Options(std::vector<std::string> flags = {}) {
  ClusterOptions options;
  options.binary = SESSIOND_BINARY;
  options.flags = std::move(flags);
  return options;
}

void SetDeadline(grpc::ClientContext* context, absl::Duration d) {
  context->set_deadline(absl::ToChronoTime(absl::Now() + d));
}

std::vector<int> Others(const ClusterHarness& cluster, int id) {
  std::vector<int> out;
  for (int other : cluster.ids()) {
    if (other != id) out.push_back(other);
  }
  return out;
}

// A session created through `id`, with a one-hour lifetime.
sessiond::v1::CreateSessionResponse MustCreate(ClusterHarness& cluster, int id,
                                               const std::string& user) {
  auto stub = cluster.Stub(id);
  grpc::ClientContext context;
  SetDeadline(&context, absl::Seconds(10));
  sessiond::v1::CreateSessionRequest request;
  request.set_user_id(user);
  request.set_ttl_ms(3600 * 1000);
  sessiond::v1::CreateSessionResponse response;
  const grpc::Status s = stub->CreateSession(&context, request, &response);
  EXPECT_TRUE(s.ok()) << s.error_message();
  return response;
}

grpc::Status Validate(ClusterHarness& cluster, int id, const std::string& token,
                      sessiond::v1::Consistency level,
                      ValidateSessionResponse* response,
                      absl::Duration deadline = absl::Seconds(10)) {
  auto stub = cluster.Stub(id);
  grpc::ClientContext context;
  SetDeadline(&context, deadline);
  sessiond::v1::ValidateSessionRequest request;
  request.set_token(token);
  request.set_consistency(level);
  return stub->ValidateSession(&context, request, response);
}

// The common end of every test: converged, and no broken promise.
void ExpectConvergedAndVerified(ClusterHarness& cluster,
                                const ClusterWorkload& load) {
  absl::StatusOr<std::string> digest =
      cluster.WaitForConvergence(absl::Seconds(60));
  ASSERT_TRUE(digest.ok()) << digest.status();
  const std::vector<std::string> broken = load.Verify(cluster.ids()[0]);
  EXPECT_TRUE(broken.empty()) << broken.size() << " broken promises:\n"
                              << absl::StrJoin(broken, "\n");
  EXPECT_GT(load.acked_creates(), 20u) << "the load made no progress";
}

TEST(ClusterTest, KillTheLeaderTenTimesUnderLoad) {
  ClusterHarness cluster(Options());
  ASSERT_TRUE(cluster.Start().ok());
  ClusterWorkload load(&cluster, {});
  load.Start();
  std::mt19937_64 rng(7);
  for (int round = 0; round < 10; ++round) {
    absl::StatusOr<int> leader = cluster.WaitForLeader(absl::Seconds(20));
    ASSERT_TRUE(leader.ok()) << "round " << round << ": " << leader.status();
    absl::SleepFor(absl::Milliseconds(100 + rng() % 400));  // a random moment
    cluster.Kill(*leader);
    const std::vector<int> others = Others(cluster, *leader);
    absl::StatusOr<int> next = cluster.WaitForLeader(
        absl::Seconds(20), std::set<int>(others.begin(), others.end()));
    ASSERT_TRUE(next.ok()) << "round " << round << ": " << next.status();
    ASSERT_TRUE(cluster.WaitForWritable(absl::Seconds(20)).ok());
    ASSERT_TRUE(cluster.StartNode(*leader).ok());
  }
  load.Stop();
  ExpectConvergedAndVerified(cluster, load);
}

TEST(ClusterTest, KillEveryNodeAtOnceUnderLoad) {
  ClusterHarness cluster(Options());
  ASSERT_TRUE(cluster.Start().ok());
  ClusterWorkload load(&cluster, {});
  load.Start();
  absl::SleepFor(absl::Seconds(2));
  for (int id : cluster.ids()) cluster.Kill(id);
  load.Stop();
  for (int id : cluster.ids()) ASSERT_TRUE(cluster.StartNode(id).ok());
  ASSERT_TRUE(cluster.WaitForLeader(absl::Seconds(20)).ok());
  ExpectConvergedAndVerified(cluster, load);
}

TEST(ClusterTest, PausedLeaderStepsDownAndLosesNothing) {
  ClusterHarness cluster(Options());
  ASSERT_TRUE(cluster.Start().ok());
  ClusterWorkload load(&cluster, {});
  load.Start();
  absl::SleepFor(absl::Milliseconds(500));
  absl::StatusOr<int> leader = cluster.WaitForLeader(absl::Seconds(20));
  ASSERT_TRUE(leader.ok());
  cluster.Pause(*leader);  // well past the 200-400 ms election timeout
  const std::vector<int> others = Others(cluster, *leader);
  ASSERT_TRUE(cluster
                  .WaitForLeader(absl::Seconds(20),
                                 std::set<int>(others.begin(), others.end()))
                  .ok());
  absl::SleepFor(absl::Seconds(1));
  cluster.Resume(*leader);
  // It learns the new term and follows.
  absl::Status stepped_down = absl::DeadlineExceededError("still leader");
  for (int i = 0; i < 200 && !stepped_down.ok(); ++i) {
    absl::StatusOr<sessiond::v1::MemberStatus> m =
        cluster.MemberStatusOf(*leader);
    if (m.ok() && m->role() == "follower" && m->leader() != 0 &&
        m->leader() != static_cast<uint64_t>(*leader)) {
      stepped_down = absl::OkStatus();
    }
    absl::SleepFor(absl::Milliseconds(50));
  }
  EXPECT_TRUE(stepped_down.ok());
  absl::SleepFor(absl::Milliseconds(500));
  load.Stop();
  ExpectConvergedAndVerified(cluster, load);
}

TEST(ClusterTest, IsolatedLeaderIsReplacedAndHeals) {
  ClusterHarness cluster(Options());
  ASSERT_TRUE(cluster.Start().ok());
  ClusterWorkload load(&cluster, {});
  load.Start();
  absl::StatusOr<int> leader = cluster.WaitForLeader(absl::Seconds(20));
  ASSERT_TRUE(leader.ok());
  const sessiond::v1::CreateSessionResponse before =
      MustCreate(cluster, *leader, "before-partition");
  cluster.Isolate(*leader);
  const std::vector<int> others = Others(cluster, *leader);
  ASSERT_TRUE(cluster
                  .WaitForLeader(absl::Seconds(20),
                                 std::set<int>(others.begin(), others.end()))
                  .ok());
  ASSERT_TRUE(cluster.WaitForWritable(absl::Seconds(20), others[0]).ok());
  // The old leader cannot commit: its writes are UNAVAILABLE by their
  // deadline, never a false success; its reads still answer (stale).
  {
    auto stub = cluster.Stub(*leader);
    grpc::ClientContext context;
    SetDeadline(&context, absl::Seconds(2));
    sessiond::v1::CreateSessionRequest request;
    request.set_user_id("minority");
    sessiond::v1::CreateSessionResponse response;
    const grpc::Status s = stub->CreateSession(&context, request, &response);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAVAILABLE)
        << s.error_message();
    ValidateSessionResponse answer;
    ASSERT_TRUE(Validate(cluster, *leader, before.token(),
                         sessiond::v1::CONSISTENCY_DEFAULT, &answer)
                    .ok());
    EXPECT_EQ(answer.outcome(), ValidateSessionResponse::VALID);
  }
  absl::SleepFor(absl::Seconds(1));
  cluster.HealAll();
  absl::SleepFor(absl::Seconds(1));
  load.Stop();
  ExpectConvergedAndVerified(cluster, load);
}

// An election, or two of three nodes down, must never turn into a logout.
TEST(ClusterTest, TwoOfThreeDownKeepValidatingButRefusesWrites) {
  ClusterHarness cluster(Options());
  ASSERT_TRUE(cluster.Start().ok());
  const int survivor = 1;
  std::vector<std::string> tokens;
  for (int i = 0; i < 20; ++i) {
    tokens.push_back(MustCreate(cluster, 1 + i % 3, "alive").token());
  }
  ASSERT_TRUE(cluster.WaitForConvergence(absl::Seconds(30)).ok());
  cluster.Kill(2);
  cluster.Kill(3);
  // Default and LOCAL: the survivor's own answer, marked stale.
  for (const std::string& token : tokens) {
    for (auto level :
         {sessiond::v1::CONSISTENCY_DEFAULT, sessiond::v1::LOCAL}) {
      ValidateSessionResponse answer;
      const grpc::Status s = Validate(cluster, survivor, token, level, &answer);
      ASSERT_TRUE(s.ok()) << s.error_message();
      EXPECT_EQ(answer.outcome(), ValidateSessionResponse::VALID);
      EXPECT_EQ(answer.consistency(), sessiond::v1::LOCAL);
    }
  }
  // Once it knows it has no quorum, the answers say so.
  absl::SleepFor(absl::Seconds(1));
  ValidateSessionResponse answer;
  ASSERT_TRUE(Validate(cluster, survivor, tokens[0],
                       sessiond::v1::CONSISTENCY_DEFAULT, &answer)
                  .ok());
  EXPECT_TRUE(answer.stale());
  EXPECT_GT(answer.staleness_ms(), 0);
  // LINEARIZABLE and writes: UNAVAILABLE within their deadline (the
  // server answers before the client's deadline fires).
  const grpc::Status linearizable =
      Validate(cluster, survivor, tokens[0], sessiond::v1::LINEARIZABLE,
               &answer, absl::Seconds(2));
  EXPECT_EQ(linearizable.error_code(), grpc::StatusCode::UNAVAILABLE)
      << linearizable.error_message();
  auto stub = cluster.Stub(survivor);
  grpc::ClientContext context;
  SetDeadline(&context, absl::Seconds(2));
  sessiond::v1::CreateSessionRequest request;
  request.set_user_id("no-quorum");
  sessiond::v1::CreateSessionResponse created;
  const grpc::Status write = stub->CreateSession(&context, request, &created);
  EXPECT_EQ(write.error_code(), grpc::StatusCode::UNAVAILABLE)
      << write.error_message();

  // Back to three: everything as it was, and writable again.
  ASSERT_TRUE(cluster.StartNode(2).ok());
  ASSERT_TRUE(cluster.StartNode(3).ok());
  ASSERT_TRUE(cluster.WaitForWritable(absl::Seconds(20)).ok());
  for (const std::string& token : tokens) {
    ASSERT_TRUE(
        Validate(cluster, 3, token, sessiond::v1::LINEARIZABLE, &answer).ok());
    EXPECT_EQ(answer.outcome(), ValidateSessionResponse::VALID);
  }
}

// A revoke acknowledged by the cluster is never followed by a
// LINEARIZABLE read that says VALID, on any node.
TEST(ClusterTest, LinearizableReadsNeverSeeARevokedSessionValid) {
  ClusterHarness cluster(Options());
  ASSERT_TRUE(cluster.Start().ok());
  for (int i = 0; i < 30; ++i) {
    const auto created = MustCreate(cluster, 1 + i % 3, "revokee");
    auto stub = cluster.Stub(1 + (i + 1) % 3);
    grpc::ClientContext context;
    SetDeadline(&context, absl::Seconds(10));
    sessiond::v1::RevokeSessionRequest request;
    request.set_session_id(created.session().session_id());
    sessiond::v1::RevokeSessionResponse response;
    ASSERT_TRUE(stub->RevokeSession(&context, request, &response).ok());
    for (int id : cluster.ids()) {
      ValidateSessionResponse answer;
      ASSERT_TRUE(Validate(cluster, id, created.token(),
                           sessiond::v1::LINEARIZABLE, &answer)
                      .ok());
      EXPECT_EQ(answer.outcome(), ValidateSessionResponse::REVOKED)
          << "node " << id;
      EXPECT_EQ(answer.consistency(), sessiond::v1::LINEARIZABLE);
    }
  }
}

}  // namespace
}  // namespace sessiond::testing
