// Copyright sessiond authors. Licensed under the Apache License 2.0.
//
// CreateSession.request_id on a real 3-node cluster: the node a create was
// sent to dies mid-call, and the create retried through another node gets
// the same session (and token) back: exactly one session exists. Also the
// error details of an isolated node's refusals.
#include <grpcpp/client_context.h>
#include <sys/wait.h>

#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "client/grpc_status.h"
#include "common/fault_point.h"
#include "google/rpc/error_details.pb.h"
#include "gtest/gtest.h"
#include "tests/integration/cluster_harness.h"

namespace sessiond::testing {
namespace {

using sessiond::v1::CreateSessionRequest;
using sessiond::v1::CreateSessionResponse;
using sessiond::v1::ValidateSessionResponse;

ClusterOptions Options() {
  ClusterOptions options;
  options.binary = SESSIOND_BINARY;
  return options;
}

CreateSessionRequest RequestFor(const std::string& user,
                                const std::string& request_id) {
  CreateSessionRequest request;
  request.set_user_id(user);
  request.set_request_id(request_id);
  request.set_ttl_ms(3'600'000);
  return request;
}

grpc::Status Create(ClusterHarness& cluster, int id,
                    const CreateSessionRequest& request,
                    CreateSessionResponse* response,
                    absl::Duration deadline = absl::Seconds(10)) {
  auto stub = cluster.Stub(id);
  grpc::ClientContext context;
  SetDeadline(&context, deadline);
  return stub->CreateSession(&context, request, response);
}

// Every session of `user`, read linearizably through `id`.
std::vector<sessiond::v1::Session> SessionsOf(ClusterHarness& cluster, int id,
                                              const std::string& user) {
  auto stub = cluster.Stub(id);
  grpc::ClientContext context;
  SetDeadline(&context, absl::Seconds(10));
  sessiond::v1::ListUserSessionsRequest request;
  request.set_user_id(user);
  request.set_include_revoked(true);
  sessiond::v1::ListUserSessionsResponse response;
  const grpc::Status s = stub->ListUserSessions(&context, request, &response);
  EXPECT_TRUE(s.ok()) << s.error_message();
  return {response.sessions().begin(), response.sessions().end()};
}

// The two voters other than `leader`.
std::vector<int> Followers(const ClusterHarness& cluster, int leader) {
  std::vector<int> out;
  for (int id : cluster.ids()) {
    if (id != leader) out.push_back(id);
  }
  return out;
}

TEST(CreateRetryTest, ACreateRetriedAfterItsNodeDiedAfterCommitIsOneSession) {
  ClusterHarness cluster(Options());
  ASSERT_TRUE(cluster.Start().ok());
  absl::StatusOr<int> leader = cluster.WaitForLeader(absl::Seconds(30));
  ASSERT_TRUE(leader.ok()) << leader.status();
  const std::vector<int> followers = Followers(cluster, *leader);
  const int doomed = followers[0];
  const int other = followers[1];
  // The doomed node dies after the create committed and applied, before it
  // answers (the fault point exits at once, skipping every destructor, as
  // kill -9 would).
  cluster.Kill(doomed);
  cluster.SetNodeFlags(doomed, {"--fault_point=create.before_reply"});
  ASSERT_TRUE(cluster.StartNode(doomed).ok());

  const std::string request_id = "3f1c8e2a-77b4-4d0f-a6c5-9e2b1d0c4f8a";
  CreateSessionResponse lost;
  const grpc::Status first =
      Create(cluster, doomed, RequestFor("alice", request_id), &lost);
  EXPECT_FALSE(first.ok()) << "the node should have died mid-call";
  const int status = cluster.WaitForExit(doomed, absl::Seconds(30));
  ASSERT_TRUE(WIFEXITED(status)) << cluster.LogTail(doomed);
  ASSERT_EQ(WEXITSTATUS(status), kFaultPointExitCode);

  // The client retries through another node: the same session, once.
  CreateSessionResponse retried;
  grpc::Status s =
      Create(cluster, other, RequestFor("alice", request_id), &retried);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_TRUE(retried.replayed());
  const std::vector<sessiond::v1::Session> sessions =
      SessionsOf(cluster, *leader, "alice");
  ASSERT_EQ(sessions.size(), 1u);
  EXPECT_EQ(sessions[0].session_id(), retried.session().session_id());
  EXPECT_EQ(
      cluster.Validate(*leader, retried.token(), sessiond::v1::LINEARIZABLE),
      ValidateSessionResponse::VALID);

  // The dead node comes back with the same replicated state (the request
  // table is in the digest), and answers the retry the same way.
  cluster.SetNodeFlags(doomed, {});
  ASSERT_TRUE(cluster.StartNode(doomed).ok());
  ASSERT_TRUE(cluster.WaitForConvergence(absl::Seconds(60)).ok());
  CreateSessionResponse through_restarted;
  s = Create(cluster, doomed, RequestFor("alice", request_id),
             &through_restarted);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_TRUE(through_restarted.replayed());
  EXPECT_EQ(through_restarted.token(), retried.token());
  EXPECT_EQ(SessionsOf(cluster, other, "alice").size(), 1u);
}

TEST(CreateRetryTest, ACreateRetriedAfterItsNodeWasKilledMidCallIsOneSession) {
  ClusterHarness cluster(Options());
  ASSERT_TRUE(cluster.Start().ok());
  absl::StatusOr<int> leader = cluster.WaitForLeader(absl::Seconds(30));
  ASSERT_TRUE(leader.ok()) << leader.status();
  const std::vector<int> followers = Followers(cluster, *leader);
  const int doomed = followers[0];
  const int other = followers[1];
  // Whether the request reached the stopped node's socket or not, it is
  // SIGKILLed before it could act: the call fails, nothing was created.
  const std::string request_id = "9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d";
  cluster.Pause(doomed);
  grpc::Status first;
  std::thread call([&] {
    CreateSessionResponse lost;
    first = Create(cluster, doomed, RequestFor("bob", request_id), &lost,
                   absl::Seconds(20));
  });
  absl::SleepFor(absl::Milliseconds(300));
  cluster.Kill(doomed);
  call.join();
  EXPECT_FALSE(first.ok());

  CreateSessionResponse retried;
  grpc::Status s =
      Create(cluster, other, RequestFor("bob", request_id), &retried);
  ASSERT_TRUE(s.ok()) << s.error_message();
  // And once more, through the leader: still that one session.
  CreateSessionResponse again;
  s = Create(cluster, *leader, RequestFor("bob", request_id), &again);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_TRUE(again.replayed());
  EXPECT_EQ(again.token(), retried.token());
  const std::vector<sessiond::v1::Session> sessions =
      SessionsOf(cluster, *leader, "bob");
  ASSERT_EQ(sessions.size(), 1u);
  EXPECT_EQ(sessions[0].session_id(), retried.session().session_id());
}

// The ErrorInfo (and whether RetryInfo came) of a failed call.
struct Details {
  std::string reason;
  std::map<std::string, std::string> metadata;
  bool retry = false;
};
Details DetailsOf(const grpc::Status& status) {
  const absl::Status read = client::FromGrpcStatus(status);
  Details out;
  if (std::optional<google::rpc::ErrorInfo> info = client::ErrorInfoOf(read)) {
    EXPECT_EQ(info->domain(), "sessiond.dev");
    out.reason = info->reason();
    out.metadata = {info->metadata().begin(), info->metadata().end()};
  }
  out.retry = client::RetryDelay(read).has_value();
  return out;
}

TEST(CreateRetryTest, AnIsolatedNodesRefusalsCarryDetails) {
  ClusterHarness cluster(Options());
  ASSERT_TRUE(cluster.Start().ok());
  absl::StatusOr<int> leader = cluster.WaitForLeader(absl::Seconds(30));
  ASSERT_TRUE(leader.ok()) << leader.status();
  const int cut = Followers(cluster, *leader)[0];
  cluster.Isolate(cut);
  // A linearizable read there cannot be confirmed; a write cannot commit.
  // The node re-reads its fault switch while it runs: until it has, reads
  // still succeed (bounded poll).
  auto stub = cluster.Stub(cut);
  sessiond::v1::ValidateSessionRequest read;
  read.set_token("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA");
  read.set_consistency(sessiond::v1::LINEARIZABLE);
  std::unique_ptr<grpc::ClientContext> read_context;
  grpc::Status s;
  for (int i = 0; i < 60; ++i) {
    read_context = std::make_unique<grpc::ClientContext>();
    SetDeadline(read_context.get(), absl::Seconds(1));
    ValidateSessionResponse answer;
    s = stub->ValidateSession(read_context.get(), read, &answer);
    if (!s.ok()) break;
    absl::SleepFor(absl::Milliseconds(100));
  }
  ASSERT_EQ(s.error_code(), grpc::StatusCode::UNAVAILABLE) << s.error_message();
  Details d = DetailsOf(s);
  EXPECT_TRUE((std::set<std::string>{"READ_NOT_CONFIRMED", "NO_LEADER",
                                     "LEADER_TIMEOUT", "LEADERSHIP_CHANGED"})
                  .count(d.reason))
      << d.reason << ": " << s.error_message();
  EXPECT_TRUE(d.retry);
  // When the node still names a leader, the ErrorInfo names the same one
  // as the trailing metadata.
  const auto& trailers = read_context->GetServerTrailingMetadata();
  auto hint = trailers.find("sessiond-leader-id");
  if (hint != trailers.end()) {
    EXPECT_EQ(d.metadata["leader_id"],
              std::string(hint->second.data(), hint->second.size()));
  } else {
    EXPECT_EQ(d.metadata.count("leader_id"), 0u);
  }

  CreateSessionResponse created;
  CreateSessionRequest plain;
  plain.set_user_id("carol");
  s = Create(cluster, cut, plain, &created, absl::Seconds(2));
  ASSERT_EQ(s.error_code(), grpc::StatusCode::UNAVAILABLE) << s.error_message();
  d = DetailsOf(s);
  EXPECT_TRUE((std::set<std::string>{"NOT_PROPOSED", "NOT_COMMITTED",
                                     "LEADER_UNREACHABLE"})
                  .count(d.reason))
      << d.reason << ": " << s.error_message();
  EXPECT_TRUE(d.retry);
  if (d.reason == "NOT_PROPOSED") {
    EXPECT_EQ(d.metadata["not_proposed"], "true");
  }
  cluster.HealAll();
}

}  // namespace
}  // namespace sessiond::testing
