// Copyright sessiond authors. Licensed under the Apache License 2.0.
//
// A replicated sessiond on real processes: 3 nodes on loopback, killed with
// SIGKILL, paused with SIGSTOP, partitioned with the transport's fault
// switch. Afterwards every acknowledged write must be present, identical on
// every node (equal state digests at the same applied index), and applied
// once.
#include <grpcpp/client_context.h>
#include <grpcpp/create_channel.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "common/fault_point.h"
#include "gtest/gtest.h"
#include "replication/core/types.h"
#include "sessiond/v1/peer.grpc.pb.h"
#include "tests/integration/cluster_harness.h"
#include "tests/integration/cluster_workload.h"
#include "tests/lincheck/history_recorder.h"
#include "tests/lincheck/lincheck.h"

namespace sessiond::testing {
namespace {

using sessiond::v1::ValidateSessionResponse;

ClusterOptions Options(std::vector<std::string> flags = {}) {
  ClusterOptions options;
  options.binary = SESSIOND_BINARY;
  options.flags = std::move(flags);
  return options;
}

std::vector<int> Others(const ClusterHarness& cluster, int id) {
  std::vector<int> out;
  for (int other : cluster.ids()) {
    if (other != id) out.push_back(other);
  }
  return out;
}

std::set<int> AllBut(const ClusterHarness& cluster, int id) {
  const std::vector<int> others = Others(cluster, id);
  return std::set<int>(others.begin(), others.end());
}

// Starts every node but `survivor` again, and waits until one of them leads
// and the cluster takes writes.
absl::Status RestartTheOthers(ClusterHarness& cluster, int survivor) {
  for (int id : Others(cluster, survivor)) {
    if (absl::Status s = cluster.StartNode(id); !s.ok()) return s;
  }
  if (absl::StatusOr<int> leader =
          cluster.WaitForLeader(absl::Seconds(20), AllBut(cluster, survivor));
      !leader.ok()) {
    return leader.status();
  }
  return cluster.WaitForWritable(absl::Seconds(20));
}

// Waits until an idle leader's tick (--clock_tick_ms, 2 s) is applied
// everywhere: the sessions made before then were stamped before the last
// time the survivor applies before an outage. A session stamped at exactly
// that time counts as made in the lag (the clock's catch-up moves it with
// the outage: ClockCatchUpCommand), so a test of what the outage does to
// the sessions made before it waits for this first.
void WaitForATick(ClusterHarness& cluster) {
  absl::SleepFor(absl::Seconds(3));
  ASSERT_TRUE(cluster.WaitForConvergence(absl::Seconds(30)).ok());
}

// The largest difference between the members' cluster times, and them all
// in `listed`.
int64_t ClusterTimeSpreadMs(ClusterHarness& cluster, std::string* listed) {
  std::vector<int64_t> times;
  for (int id : cluster.ids()) {
    absl::StatusOr<sessiond::v1::MemberStatus> m = cluster.MemberStatusOf(id);
    EXPECT_TRUE(m.ok()) << m.status();
    if (m.ok()) times.push_back(m->cluster_time_ms());
  }
  *listed = absl::StrJoin(times, ", ");
  if (times.empty()) return 0;
  const auto [lo, hi] = std::minmax_element(times.begin(), times.end());
  return *hi - *lo;
}

// ValidateSession with touch=true on node `id`: the outcome, or
// OUTCOME_UNSPECIFIED when the call fails.
ValidateSessionResponse::Outcome ValidateWithTouch(ClusterHarness& cluster,
                                                   int id,
                                                   const std::string& token) {
  auto stub = cluster.Stub(id);
  grpc::ClientContext context;
  SetDeadline(&context, absl::Seconds(5));
  sessiond::v1::ValidateSessionRequest request;
  request.set_token(token);
  request.set_touch(true);
  ValidateSessionResponse answer;
  if (!stub->ValidateSession(&context, request, &answer).ok()) {
    return ValidateSessionResponse::OUTCOME_UNSPECIFIED;
  }
  return answer.outcome();
}

// A one-hour session for `user` created through node `id`; with an
// `idle_timeout`, one that idles out after it.
sessiond::v1::CreateSessionResponse MustCreate(
    ClusterHarness& cluster, int id, const std::string& user,
    absl::Duration idle_timeout = absl::ZeroDuration(),
    const std::string& request_id = "") {
  auto stub = cluster.Stub(id);
  grpc::ClientContext context;
  SetDeadline(&context, absl::Seconds(10));
  sessiond::v1::CreateSessionRequest request;
  request.set_user_id(user);
  request.set_request_id(request_id);
  request.set_ttl_ms(3600 * 1000);
  request.set_idle_timeout_ms(absl::ToInt64Milliseconds(idle_timeout));
  sessiond::v1::CreateSessionResponse response;
  const grpc::Status s = stub->CreateSession(&context, request, &response);
  EXPECT_TRUE(s.ok()) << s.error_message();
  return response;
}

// Pauses member `id` (connected, and acknowledging nothing: as a member
// whose log writes stall, within the 4 s its keepalive takes to notice),
// then has the leader's log grow past it for longer than an election
// timeout (the 200-400 ms of these tests). Resume it at the end.
void StallPastAnElectionTimeout(ClusterHarness& cluster, int leader, int id) {
  cluster.Pause(id);
  MustCreate(cluster, leader, "while a member stalls");
  absl::SleepFor(absl::Milliseconds(600));
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
    ASSERT_TRUE(cluster
                    .Validate(*leader, before.token(),
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
// A node that cannot confirm it is up to date never says UNKNOWN for a
// default-consistency validation: the token may have been created while it
// was down (found by the rolling-restart test). It answers UNAVAILABLE, and
// the client asks another node; LOCAL, asked for, still says UNKNOWN.
TEST(ClusterTest, ANodeBehindNeverAnswersUnknownByDefault) {
  ClusterHarness cluster(Options());
  ASSERT_TRUE(cluster.Start().ok());
  absl::StatusOr<int> leader = cluster.WaitForLeader(absl::Seconds(20));
  ASSERT_TRUE(leader.ok()) << leader.status();
  const int behind = *leader == 1 ? 2 : 1;
  const std::string before = MustCreate(cluster, *leader, "early").token();
  ASSERT_TRUE(cluster.WaitForConvergence(absl::Seconds(30)).ok());
  cluster.Kill(behind);
  const std::string during = MustCreate(cluster, *leader, "late").token();
  // It comes back cut off from its peers, so it cannot catch up.
  cluster.Isolate(behind);
  ASSERT_TRUE(cluster.StartNode(behind).ok());
  ValidateSessionResponse answer;
  // Bounded: until its default answers fall back to its own table.
  for (int i = 0; i < 100; ++i) {
    answer.Clear();
    ASSERT_TRUE(cluster
                    .Validate(behind, before, sessiond::v1::CONSISTENCY_DEFAULT,
                              &answer)
                    .ok());
    if (answer.consistency() == sessiond::v1::LOCAL) break;
    absl::SleepFor(absl::Milliseconds(100));
  }
  ASSERT_EQ(answer.consistency(), sessiond::v1::LOCAL);
  EXPECT_EQ(answer.outcome(), ValidateSessionResponse::VALID);
  const grpc::Status unknown_here = cluster.Validate(
      behind, during, sessiond::v1::CONSISTENCY_DEFAULT, &answer);
  EXPECT_EQ(unknown_here.error_code(), grpc::StatusCode::UNAVAILABLE)
      << "outcome " << answer.outcome();
  EXPECT_NE(unknown_here.error_message().find("ask another node"),
            std::string::npos)
      << unknown_here.error_message();
  answer.Clear();
  ASSERT_TRUE(
      cluster.Validate(behind, during, sessiond::v1::LOCAL, &answer).ok());
  EXPECT_EQ(answer.outcome(), ValidateSessionResponse::UNKNOWN);
  // Healed, it catches up and knows the session.
  cluster.HealAll();
  bool valid = false;
  for (int i = 0; i < 100 && !valid; ++i) {
    answer.Clear();
    valid = cluster
                .Validate(behind, during, sessiond::v1::CONSISTENCY_DEFAULT,
                          &answer)
                .ok() &&
            answer.outcome() == ValidateSessionResponse::VALID;
    if (!valid) absl::SleepFor(absl::Milliseconds(100));
  }
  EXPECT_TRUE(valid);
}

TEST(ClusterTest, TwoOfThreeDownKeepValidatingButRefusesWrites) {
  ClusterHarness cluster(Options());
  ASSERT_TRUE(cluster.Start().ok());
  // The leader: cut off, it leads on until CheckQuorum deposes it.
  const absl::StatusOr<int> leader = cluster.WaitForLeader(absl::Seconds(20));
  ASSERT_TRUE(leader.ok());
  const int survivor = *leader;
  std::vector<std::string> tokens;
  std::string session_id;
  for (int i = 0; i < 20; ++i) {
    const sessiond::v1::CreateSessionResponse created =
        MustCreate(cluster, 1 + i % 3, "alive");
    tokens.push_back(created.token());
    session_id = created.session().session_id();
  }
  ASSERT_TRUE(cluster.WaitForConvergence(absl::Seconds(30)).ok());
  for (int id : Others(cluster, survivor)) cluster.Kill(id);
  const absl::Time cut_off = absl::Now();  // no follower speaks after this
  // Default and LOCAL: VALID all along. (A survivor that led may still
  // answer from its lease for a moment: that is linearizable.)
  for (const std::string& token : tokens) {
    for (auto level :
         {sessiond::v1::CONSISTENCY_DEFAULT, sessiond::v1::LOCAL}) {
      ValidateSessionResponse answer;
      const grpc::Status s = cluster.Validate(survivor, token, level, &answer);
      ASSERT_TRUE(s.ok()) << s.error_message();
      EXPECT_EQ(answer.outcome(), ValidateSessionResponse::VALID);
      if (level == sessiond::v1::LOCAL) {
        EXPECT_EQ(answer.consistency(), sessiond::v1::LOCAL);
      }
    }
  }
  // Once it knows it has no quorum, the answers say so.
  absl::SleepFor(absl::Seconds(1));
  ValidateSessionResponse answer;
  const absl::Time asked = absl::Now();
  ASSERT_TRUE(cluster
                  .Validate(survivor, tokens[0],
                            sessiond::v1::CONSISTENCY_DEFAULT, &answer)
                  .ok());
  EXPECT_TRUE(answer.stale());
  // Counted from when a quorum last heard it (before the kills ended, give
  // or take a message in flight), not from when it stepped
  // down, an election timeout or two later: what it missed may have
  // committed elsewhere since the cut.
  EXPECT_GE(answer.staleness_ms(),
            absl::ToInt64Milliseconds(asked - cut_off) - 100);
  // So does GetSession's (it said nothing of how it was answered).
  {
    auto stub = cluster.Stub(survivor);
    grpc::ClientContext context;
    SetDeadline(&context, absl::Seconds(10));
    sessiond::v1::GetSessionRequest request;
    request.set_session_id(session_id);
    sessiond::v1::GetSessionResponse got;
    const grpc::Status s = stub->GetSession(&context, request, &got);
    ASSERT_TRUE(s.ok()) << s.error_message();
    EXPECT_EQ(got.session().session_id(), session_id);
    EXPECT_EQ(got.consistency(), sessiond::v1::LOCAL);
    EXPECT_TRUE(got.stale());
    EXPECT_GT(got.staleness_ms(), 0);
  }
  // And ListUserSessions' (its page may lack what was made elsewhere).
  {
    auto stub = cluster.Stub(survivor);
    grpc::ClientContext context;
    SetDeadline(&context, absl::Seconds(10));
    sessiond::v1::ListUserSessionsRequest request;
    request.set_user_id("alive");
    sessiond::v1::ListUserSessionsResponse page;
    const grpc::Status s = stub->ListUserSessions(&context, request, &page);
    ASSERT_TRUE(s.ok()) << s.error_message();
    EXPECT_EQ(page.sessions_size(), 20);
    EXPECT_EQ(page.consistency(), sessiond::v1::LOCAL);
    EXPECT_TRUE(page.stale());
    EXPECT_GT(page.staleness_ms(), 0);
    EXPECT_GT(page.applied_index(), 0u);
  }
  // LINEARIZABLE and writes: UNAVAILABLE within their deadline (the
  // server answers before the client's deadline fires).
  const grpc::Status linearizable =
      cluster.Validate(survivor, tokens[0], sessiond::v1::LINEARIZABLE, &answer,
                       absl::Seconds(2));
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
  // No node was asked to propose it (no leader): the answer says a retry
  // is safe.
  const auto& trailers = context.GetServerTrailingMetadata();
  auto not_proposed = trailers.find("sessiond-not-proposed");
  ASSERT_NE(not_proposed, trailers.end()) << write.error_message();
  EXPECT_EQ(
      std::string(not_proposed->second.data(), not_proposed->second.size()),
      "1");

  // Back to three: everything as it was, and writable again.
  const std::vector<int> restarted = Others(cluster, survivor);
  for (int id : restarted) ASSERT_TRUE(cluster.StartNode(id).ok());
  ASSERT_TRUE(cluster.WaitForWritable(absl::Seconds(20)).ok());
  // A write can commit through two nodes before the other has heard from
  // the leader: its LINEARIZABLE reads wait for one within their deadline.
  for (const std::string& token : tokens) {
    const grpc::Status read = cluster.Validate(
        restarted.back(), token, sessiond::v1::LINEARIZABLE, &answer);
    ASSERT_TRUE(read.ok()) << read.error_message();
    EXPECT_EQ(answer.outcome(), ValidateSessionResponse::VALID);
  }
}

// CreateSessions sent to a follower: forwarded, every session returned, and
// readable on that follower at once.
TEST(ClusterTest, CreateSessionsThroughAFollower) {
  ClusterHarness cluster(Options());
  ASSERT_TRUE(cluster.Start().ok());
  absl::StatusOr<int> leader = cluster.WaitForLeader(absl::Seconds(20));
  ASSERT_TRUE(leader.ok());
  const int follower = Others(cluster, *leader)[0];
  sessiond::v1::CreateSessionsRequest batch;
  for (int i = 0; i < 50; ++i) {
    batch.add_requests()->set_user_id(absl::StrCat("batched-", i % 5));
  }
  auto stub = cluster.Stub(follower);
  grpc::ClientContext context;
  SetDeadline(&context, absl::Seconds(10));
  sessiond::v1::CreateSessionsResponse created;
  const grpc::Status s = stub->CreateSessions(&context, batch, &created);
  ASSERT_TRUE(s.ok()) << s.error_message();
  ASSERT_EQ(created.responses_size(), 50);
  for (const auto& one : created.responses()) {
    ValidateSessionResponse answer;
    ASSERT_TRUE(
        cluster.Validate(follower, one.token(), sessiond::v1::LOCAL, &answer)
            .ok());
    EXPECT_EQ(answer.outcome(), ValidateSessionResponse::VALID);
    EXPECT_EQ(answer.session().session_id(), one.session().session_id());
  }
}

// A LINEARIZABLE read that reaches a follower just after its leader died
// waits, as a write does, until the new leader answers it within its
// deadline, instead of failing while the cluster elects one.
TEST(ClusterTest, ALinearizableReadDuringAnElectionWaitsForTheNewLeader) {
  ClusterHarness cluster(Options());
  ASSERT_TRUE(cluster.Start().ok());
  absl::StatusOr<int> leader = cluster.WaitForLeader(absl::Seconds(20));
  ASSERT_TRUE(leader.ok()) << leader.status();
  const std::vector<int> survivors = Others(cluster, *leader);
  const int follower = survivors[0];
  const sessiond::v1::CreateSessionResponse created =
      MustCreate(cluster, follower, "reads-through-an-election");
  ASSERT_FALSE(created.token().empty());

  cluster.Kill(*leader);
  ValidateSessionResponse answer;
  const grpc::Status read =
      cluster.Validate(follower, created.token(), sessiond::v1::LINEARIZABLE,
                       &answer, absl::Seconds(10));
  ASSERT_TRUE(read.ok()) << read.error_message();
  EXPECT_EQ(answer.outcome(), ValidateSessionResponse::VALID);
  EXPECT_EQ(answer.consistency(), sessiond::v1::LINEARIZABLE);
  EXPECT_FALSE(answer.stale());
  const absl::StatusOr<int> next = cluster.WaitForLeader(
      absl::Seconds(20), {survivors.begin(), survivors.end()});
  ASSERT_TRUE(next.ok()) << next.status();
  EXPECT_NE(*next, *leader);
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
      ASSERT_TRUE(cluster
                      .Validate(id, created.token(), sessiond::v1::LINEARIZABLE,
                                &answer)
                      .ok());
      EXPECT_EQ(answer.outcome(), ValidateSessionResponse::REVOKED)
          << "node " << id;
      EXPECT_EQ(answer.consistency(), sessiond::v1::LINEARIZABLE);
    }
  }
}

// Calls AdminService `method` on node `via` with a 10 s deadline.
template <typename Request, typename Response>
grpc::Status CallAdmin(ClusterHarness& cluster, int via,
                       grpc::Status (sessiond::v1::AdminService::Stub::*method)(
                           grpc::ClientContext*, const Request&, Response*),
                       const Request& request) {
  auto admin = cluster.Admin(via);
  grpc::ClientContext context;
  SetDeadline(&context, absl::Seconds(10));
  Response response;
  return ((*admin).*method)(&context, request, &response);
}

// `peer_address`: where it runs (empty: the harness's address for `id`).
grpc::Status AddMember(ClusterHarness& cluster, int via, int id,
                       const std::string& peer_address = "") {
  sessiond::v1::AddMemberRequest request;
  request.set_node_id(id);
  request.set_peer_address(peer_address.empty() ? cluster.peer_address(id)
                                                : peer_address);
  request.set_client_address(cluster.client_address(id));
  return CallAdmin(cluster, via, &sessiond::v1::AdminService::Stub::AddMember,
                   request);
}

grpc::Status RemoveMember(ClusterHarness& cluster, int via, int id) {
  sessiond::v1::RemoveMemberRequest request;
  request.set_node_id(id);
  return CallAdmin(cluster, via,
                   &sessiond::v1::AdminService::Stub::RemoveMember, request);
}

// Whether node `via` lists member `id` unreachable within 10 s.
bool WaitUntilUnreachable(ClusterHarness& cluster, int via, int id) {
  for (int i = 0; i < 100; ++i) {
    absl::StatusOr<sessiond::v1::ClusterStatusResponse> status =
        cluster.ClusterStatus(via);
    if (status.ok()) {
      for (const auto& m : status->members()) {
        if (m.node_id() == static_cast<uint64_t>(id) && !m.reachable()) {
          return true;
        }
      }
    }
    absl::SleepFor(absl::Milliseconds(100));
  }
  return false;
}

grpc::Status TransferLeadership(ClusterHarness& cluster, int via, int to) {
  sessiond::v1::TransferLeadershipRequest request;
  request.set_node_id(to);
  return CallAdmin(cluster, via,
                   &sessiond::v1::AdminService::Stub::TransferLeadership,
                   request);
}

// Expects a transfer to `target` asked of `via` refused with
// FAILED_PRECONDITION saying `why` ("node N <why>").
void ExpectTransferRefused(ClusterHarness& cluster, int via, int target,
                           const std::string& why) {
  const grpc::Status transfer = TransferLeadership(cluster, via, target);
  EXPECT_EQ(transfer.error_code(), grpc::StatusCode::FAILED_PRECONDITION)
      << transfer.error_message();
  EXPECT_TRUE(absl::StrContains(transfer.error_message(),
                                absl::StrCat("node ", target, " ", why)))
      << transfer.error_message();
}

// Expects `leader` to lead still, and to take a write.
void ExpectStillLeading(ClusterHarness& cluster, int leader) {
  absl::StatusOr<int> still = cluster.WaitForLeader(absl::Seconds(20));
  ASSERT_TRUE(still.ok());
  EXPECT_EQ(*still, leader);
  MustCreate(cluster, leader, "still leading");
}

grpc::Status PromoteMember(ClusterHarness& cluster, int via, int id) {
  sessiond::v1::PromoteMemberRequest request;
  request.set_node_id(id);
  return CallAdmin(cluster, via,
                   &sessiond::v1::AdminService::Stub::PromoteMember, request);
}

// Promotes a learner, retrying while it catches up (bounded).
absl::Status PromoteWhenCaughtUp(ClusterHarness& cluster, int via, int id) {
  std::string last;
  for (int i = 0; i < 300; ++i) {
    const grpc::Status s = PromoteMember(cluster, via, id);
    if (s.ok()) return absl::OkStatus();
    last = s.error_message();
    absl::SleepFor(absl::Milliseconds(100));
  }
  return absl::DeadlineExceededError(last);
}

bool LogContains(const ClusterHarness& cluster, int id,
                 const std::string& text) {
  std::ifstream in(cluster.log_path(id));
  const std::string log((std::istreambuf_iterator<char>(in)),
                        std::istreambuf_iterator<char>());
  return absl::StrContains(log, text);
}

// Flags that make the leader snapshot and compact often, so a member that
// comes back (or joins) far behind must be sent a snapshot.
std::vector<std::string> CompactOften() {
  return {"--log_compact_interval_ms",   "100",
          "--log_compact_min_entries",   "100",
          "--snapshot_catch_up_entries", "20"};
}

// A wiped follower must not come back empty under its old id; removed and
// added again, it catches up from a snapshot.
TEST(ClusterTest, WipedFollowerRefusesThenRejoinsThroughASnapshot) {
  ClusterHarness cluster(Options(CompactOften()));
  ASSERT_TRUE(cluster.Start().ok());
  absl::StatusOr<int> leader = cluster.WaitForLeader(absl::Seconds(20));
  ASSERT_TRUE(leader.ok());
  const int wiped = Others(cluster, *leader)[0];
  std::vector<std::string> tokens;
  for (int i = 0; i < 300; ++i) {
    tokens.push_back(MustCreate(cluster, *leader, "before-wipe").token());
  }
  ASSERT_TRUE(cluster.WaitForConvergence(absl::Seconds(30)).ok());
  cluster.Kill(wiped);
  cluster.WipeDataDir(wiped);
  const int status = cluster.StartNodeExpectingExit(wiped, absl::Seconds(30));
  ASSERT_TRUE(WIFEXITED(status)) << cluster.LogTail(wiped);
  EXPECT_EQ(WEXITSTATUS(status), 1);
  EXPECT_TRUE(LogContains(cluster, wiped, "refusing to bootstrap"))
      << cluster.LogTail(wiped);
  EXPECT_TRUE(LogContains(cluster, wiped, "RemoveMember"));

  // The way back the message gives: remove, add again, start "existing".
  ASSERT_TRUE(RemoveMember(cluster, *leader, wiped).ok());
  for (int i = 0; i < 300; ++i) {
    tokens.push_back(MustCreate(cluster, *leader, "while-away").token());
  }
  ASSERT_TRUE(AddMember(cluster, *leader, wiped).ok());
  // A learner cannot lead.
  {
    const grpc::Status s = TransferLeadership(cluster, *leader, wiped);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION)
        << s.error_message();
    EXPECT_TRUE(absl::StrContains(s.error_message(), "is a learner"))
        << s.error_message();
  }
  // Not a voter before it has caught up; not a learner at all: refused.
  {
    for (int id : {wiped, 42}) {
      const grpc::Status s = PromoteMember(cluster, *leader, id);
      EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION)
          << s.error_message();
      EXPECT_TRUE(absl::StrContains(
          s.error_message(), id == 42 ? "not a learner" : "has not caught up"))
          << s.error_message();
    }
  }
  cluster.WipeDataDir(wiped);
  cluster.SetNodeFlags(wiped, {"--initial_cluster_state", "existing"});
  ASSERT_TRUE(cluster.StartNode(wiped).ok());
  ASSERT_TRUE(cluster.WaitForConvergence(absl::Seconds(60)).ok());
  // Caught up, then acknowledging nothing while its connection lives: not
  // promoted either.
  StallPastAnElectionTimeout(cluster, *leader, wiped);
  const grpc::Status stalled = PromoteMember(cluster, *leader, wiped);
  cluster.Resume(wiped);
  EXPECT_EQ(stalled.error_code(), grpc::StatusCode::FAILED_PRECONDITION)
      << stalled.error_message();
  EXPECT_TRUE(
      absl::StrContains(stalled.error_message(), "has acknowledged no entry"))
      << stalled.error_message();
  // Caught up, then down: not promoted (as a voter it would count against
  // the quorum while down).
  ASSERT_TRUE(cluster.WaitForConvergence(absl::Seconds(60)).ok());
  absl::StatusOr<sessiond::v1::MemberStatus> learner =
      cluster.MemberStatusOf(wiped);
  ASSERT_TRUE(learner.ok());
  EXPECT_GE(learner->metrics().snapshots_installed(), 1u);
  // The image it received is its own too: its compactor (every 100 ms
  // here) made another of the same index, twice the state on disk. A newer
  // image can be seen for a moment next to the one it replaces (the sweeper
  // and the start announcements add entries), so this looks a few times.
  std::vector<std::string> images;
  for (int i = 0; i < 30; ++i) {
    absl::SleepFor(absl::Milliseconds(i == 0 ? 500 : 100));
    images.clear();
    for (const auto& entry : std::filesystem::directory_iterator(
             absl::StrCat(cluster.data_dir(wiped), "/snap"))) {
      const std::string name = entry.path().filename().string();
      if (absl::EndsWith(name, ".snap")) images.push_back(name);
    }
    if (images.size() == 1) break;
  }
  EXPECT_EQ(images.size(), 1u) << absl::StrJoin(images, ", ");
  cluster.Kill(wiped);
  ASSERT_TRUE(WaitUntilUnreachable(cluster, *leader, wiped));
  const grpc::Status down = PromoteMember(cluster, *leader, wiped);
  EXPECT_EQ(down.error_code(), grpc::StatusCode::FAILED_PRECONDITION)
      << down.error_message();
  EXPECT_TRUE(absl::StrContains(down.error_message(), "is not reachable"))
      << down.error_message();
  ASSERT_TRUE(cluster.StartNode(wiped).ok());
  ASSERT_TRUE(PromoteWhenCaughtUp(cluster, *leader, wiped).ok());
  ASSERT_TRUE(cluster.WaitForConvergence(absl::Seconds(60)).ok());
  absl::StatusOr<sessiond::v1::MemberStatus> rejoined =
      cluster.MemberStatusOf(wiped);
  ASSERT_TRUE(rejoined.ok());
  EXPECT_TRUE(rejoined->voter());
  for (const std::string& token : tokens) {
    ValidateSessionResponse answer;
    ASSERT_TRUE(
        cluster.Validate(wiped, token, sessiond::v1::LOCAL, &answer).ok());
    EXPECT_EQ(answer.outcome(), ValidateSessionResponse::VALID);
  }
}

// A member restarted on an empty data dir as a one-node cluster under the
// cluster's own id (the flags of the single node a cluster grew from, or
// --initial_cluster naming only itself with the id pinned) became the lone
// voter of a new log, and took the live leader's traffic as that of a member
// added while it was away: its empty log and its vote counted in a cluster
// that still lists it as a voter. It stops at the leader's first message,
// and does not start again on that data dir.
TEST(ClusterTest, AMemberRestartedAsANewOneNodeClusterStops) {
  ClusterHarness cluster(Options());
  ASSERT_TRUE(cluster.Start().ok());
  absl::StatusOr<int> leader = cluster.WaitForLeader(absl::Seconds(20));
  ASSERT_TRUE(leader.ok());
  const int wiped = Others(cluster, *leader)[0];
  const std::string token = MustCreate(cluster, *leader, "kept").token();
  absl::StatusOr<sessiond::v1::ClusterStatusResponse> status =
      cluster.ClusterStatus(*leader);
  ASSERT_TRUE(status.ok()) << status.status();
  cluster.Kill(wiped);
  cluster.WipeDataDir(wiped);
  cluster.SetNodeFlags(wiped,
                       {"--initial_cluster",
                        absl::StrCat(wiped, "=", cluster.peer_address(wiped)),
                        "--cluster_id", absl::StrCat(status->cluster_id())});
  const int stopped = cluster.StartNodeExpectingExit(wiped, absl::Seconds(30));
  ASSERT_TRUE(WIFEXITED(stopped)) << stopped << "\n" << cluster.LogTail(wiped);
  EXPECT_TRUE(LogContains(cluster, wiped, "the cluster's only voter"))
      << cluster.LogTail(wiped);
  const int again = cluster.StartNodeExpectingExit(wiped, absl::Seconds(30));
  ASSERT_TRUE(WIFEXITED(again)) << again << "\n" << cluster.LogTail(wiped);
  EXPECT_EQ(WEXITSTATUS(again), 4);  // marked: only an operator mends it
  // The others kept their quorum and the session.
  ValidateSessionResponse answer;
  ASSERT_TRUE(
      cluster.Validate(*leader, token, sessiond::v1::LINEARIZABLE, &answer)
          .ok());
  EXPECT_EQ(answer.outcome(), ValidateSessionResponse::VALID);
}

// Two wiped members with the third down must not bootstrap a cluster that
// forgot everything: they wait for a member that runs; when it comes, they
// refuse.
TEST(ClusterTest, WipedMajorityWaitsWhileTheSurvivorIsDown) {
  ClusterHarness cluster(Options());
  ASSERT_TRUE(cluster.Start().ok());
  const std::string token = MustCreate(cluster, 1, "kept").token();
  ASSERT_TRUE(cluster.WaitForConvergence(absl::Seconds(30)).ok());
  for (int id : cluster.ids()) cluster.Kill(id);
  cluster.WipeDataDir(2);
  cluster.WipeDataDir(3);
  for (int id : {2, 3}) {
    EXPECT_EQ(cluster.StartNodeExpectingExit(id, absl::Seconds(1)), -1)
        << "node " << id << " did not wait:\n"
        << cluster.LogTail(id);
  }
  absl::SleepFor(absl::Seconds(6));  // they keep waiting, and say so
  for (int id : {2, 3}) {
    ASSERT_TRUE(cluster.running(id)) << cluster.LogTail(id);
    EXPECT_TRUE(LogContains(cluster, id,
                            "waiting for every other initial "
                            "member"))
        << cluster.LogTail(id);
    // It names the member it waits for (node 1 is down; the other wiped
    // one answers).
    EXPECT_TRUE(LogContains(cluster, id, "no answer from node 1 ("))
        << cluster.LogTail(id);
  }
  // Once node 1 runs, they learn they ran before and refuse.
  ASSERT_TRUE(cluster.StartNode(1).ok());
  for (int id : {2, 3}) {
    const int status = cluster.WaitForExit(id, absl::Seconds(30));
    ASSERT_TRUE(WIFEXITED(status)) << cluster.LogTail(id);
    EXPECT_EQ(WEXITSTATUS(status), 1);
    EXPECT_TRUE(LogContains(cluster, id, "refusing to bootstrap"))
        << cluster.LogTail(id);
  }
  ValidateSessionResponse answer;
  ASSERT_TRUE(
      cluster.Validate(1, token, sessiond::v1::CONSISTENCY_DEFAULT, &answer)
          .ok());
  EXPECT_EQ(answer.outcome(), ValidateSessionResponse::VALID);
}

// A member that took part in Raft but died before its start announcement
// committed (the gap the announcement alone leaves, like etcd's
// --initial-cluster-state check): once wiped, it still refuses, because a
// peer heard Raft messages from it, and remembers that across its own
// restart (the data dir's peers_heard_from).
TEST(ClusterTest, AMemberWipedBeforeItsStartAnnouncementStillRefuses) {
  ClusterHarness cluster(Options());
  // Node 3 stops (exit 86) just before it would announce itself: it has
  // applied the leader's log, so it acknowledged entries.
  cluster.SetNodeFlags(3, {"--fault_point=agent.before_publish"});
  ASSERT_TRUE(cluster.Launch().ok());
  const int crashed = cluster.WaitForExit(3, absl::Seconds(60));
  ASSERT_TRUE(WIFEXITED(crashed)) << cluster.LogTail(3);
  ASSERT_EQ(WEXITSTATUS(crashed), 86) << cluster.LogTail(3);
  absl::StatusOr<int> leader =
      cluster.WaitForLeader(absl::Seconds(30), /*among=*/{1, 2});
  ASSERT_TRUE(leader.ok()) << leader.status();
  const std::string token = MustCreate(cluster, *leader, "kept").token();
  absl::StatusOr<sessiond::v1::ClusterStatusResponse> status =
      cluster.ClusterStatus(*leader);
  ASSERT_TRUE(status.ok()) << status.status();
  for (const auto& m : status->members()) {
    if (m.node_id() == 3) {
      EXPECT_FALSE(m.started());
    }
  }
  // The survivors restart too: what they heard must outlive them.
  for (int id : {1, 2}) cluster.Kill(id);
  for (int id : {1, 2}) ASSERT_TRUE(cluster.StartNode(id).ok());
  leader = cluster.WaitForLeader(absl::Seconds(30), /*among=*/{1, 2});
  ASSERT_TRUE(leader.ok()) << leader.status();

  cluster.SetNodeFlags(3, {});
  cluster.WipeDataDir(3);
  const int refused = cluster.StartNodeExpectingExit(3, absl::Seconds(30));
  ASSERT_TRUE(WIFEXITED(refused)) << cluster.LogTail(3);
  EXPECT_EQ(WEXITSTATUS(refused), 1);
  EXPECT_TRUE(LogContains(cluster, 3, "received Raft messages from it"))
      << cluster.LogTail(3);
  EXPECT_TRUE(LogContains(cluster, 3, "RemoveMember"));
  // Nor as an "existing" member: it is still a voter, and it voted.
  cluster.SetNodeFlags(3, {"--initial_cluster_state", "existing"});
  cluster.WipeDataDir(3);
  const int refused_existing =
      cluster.StartNodeExpectingExit(3, absl::Seconds(30));
  ASSERT_TRUE(WIFEXITED(refused_existing)) << cluster.LogTail(3);
  EXPECT_EQ(WEXITSTATUS(refused_existing), 1) << cluster.LogTail(3);
  EXPECT_TRUE(LogContains(cluster, 3, "it is a voter of cluster"))
      << cluster.LogTail(3);
  EXPECT_EQ(cluster.Validate(*leader, token, sessiond::v1::LINEARIZABLE),
            ValidateSessionResponse::VALID);
}

// A touch batch that finds no quorum is not dropped: its touches go into the
// next flush. Dropped, a user active through a node cut off for longer than
// a batch's deadline (1 s) idled out a whole idle timeout after their last
// touch that did reach the log, not after their last use.
TEST(ClusterTest, TouchesOfABatchThatFoundNoQuorumReachTheLogLater) {
  ClusterHarness cluster(Options({"--touch_flush_interval_ms=200"}));
  ASSERT_TRUE(cluster.Start().ok());
  absl::StatusOr<int> leader = cluster.WaitForLeader(absl::Seconds(20));
  ASSERT_TRUE(leader.ok());
  const auto sleep_until = [](absl::Time when) {
    absl::SleepFor(when - absl::Now());
  };
  const absl::Time created = absl::Now();
  const std::string token =
      MustCreate(cluster, *leader, "idle", absl::Seconds(10)).token();
  ASSERT_TRUE(cluster.WaitForConvergence(absl::Seconds(30)).ok());
  const std::vector<int> followers = Others(cluster, *leader);
  for (int id : followers) cluster.Pause(id);
  // Used 4 s after its creation, with no quorum: the (default) read falls
  // back to this node's table and records the touch; its batch fails.
  sleep_until(created + absl::Seconds(4));
  ASSERT_EQ(ValidateWithTouch(cluster, *leader, token),
            ValidateSessionResponse::VALID);
  sleep_until(created + absl::Seconds(5.5));
  for (int id : followers) cluster.Resume(id);
  ASSERT_TRUE(cluster.WaitForWritable(absl::Seconds(20)).ok());
  // Past the idle timeout from its creation, within it from the touch.
  sleep_until(created + absl::Seconds(12));
  ASSERT_GT(absl::Now(), created + absl::Seconds(12));
  absl::StatusOr<int> now_leading = cluster.WaitForLeader(absl::Seconds(20));
  ASSERT_TRUE(now_leading.ok());
  EXPECT_EQ(cluster.Validate(*now_leading, token, sessiond::v1::LINEARIZABLE),
            ValidateSessionResponse::VALID);
}

// One MessageBatch with one Raft message to `to`'s peer port, as `from`
// of `cluster_id` would send it: the stream's status.
// `index`: the message's; `message_from` and `message_to`: its sender and
// receiver as the message says (0: the batch's `from` and `to`).
grpc::Status SendPeerBatch(ClusterHarness& cluster, int to, uint64_t cluster_id,
                           uint64_t from, replication::MessageType type,
                           uint64_t term, const std::string& from_address,
                           uint64_t index = 0, uint64_t message_from = 0,
                           uint64_t message_to = 0) {
  auto stub = sessiond::v1::internal::RaftPeer::NewStub(grpc::CreateChannel(
      cluster.peer_address(to), grpc::InsecureChannelCredentials()));
  grpc::ClientContext context;
  SetDeadline(&context, absl::Seconds(10));
  sessiond::v1::internal::StreamSummary summary;
  auto writer = stub->SendMessages(&context, &summary);
  sessiond::v1::internal::MessageBatch batch;
  batch.set_cluster_id(cluster_id);
  batch.set_from(from);
  batch.set_to(to);
  batch.set_from_address(from_address);
  sessiond::v1::internal::RaftMessage* m = batch.add_messages();
  m->set_type(static_cast<uint32_t>(type));
  m->set_from(message_from != 0 ? message_from : from);
  m->set_to(message_to != 0 ? message_to : static_cast<uint64_t>(to));
  m->set_term(term);
  m->set_index(index);
  writer->Write(batch);
  writer->WritesDone();
  return writer->Finish();
}

// The lone voter stops at a leader's message
// (AMemberRestartedAsANewOneNodeClusterStops) only once
// that leader confirms it, answering Hello as the leader of this cluster
// that counts the lone voter as a member: anyone who reaches the peer port
// can claim to lead, and one such message used to mark the data dir
// removed and stop the node for good (a helper's review).
TEST(ClusterTest, AnUnconfirmedLeaderClaimDoesNotStopALoneVoter) {
  ClusterOptions options = Options();
  options.nodes = 1;
  ClusterHarness cluster(options);
  ASSERT_TRUE(cluster.Start().ok());
  ASSERT_TRUE(cluster.WaitForLeader(absl::Seconds(20)).ok());
  absl::StatusOr<sessiond::v1::ClusterStatusResponse> status =
      cluster.ClusterStatus(1);
  ASSERT_TRUE(status.ok()) << status.status();
  const grpc::Status claimed =
      SendPeerBatch(cluster, 1, status->cluster_id(), /*from=*/99,
                    replication::MessageType::kHeartbeat,
                    /*term=*/uint64_t{1} << 40, "127.0.0.1:1");
  EXPECT_EQ(claimed.error_code(), grpc::StatusCode::FAILED_PRECONDITION)
      << claimed.error_message();
  // Judged within a second or two (sd-removal).
  const absl::Time until = absl::Now() + absl::Seconds(15);
  while (!LogContains(cluster, 1, "peer.split_identity_not_confirmed") &&
         absl::Now() < until) {
    absl::SleepFor(absl::Milliseconds(100));
  }
  EXPECT_TRUE(LogContains(cluster, 1, "peer.split_identity_not_confirmed"))
      << cluster.LogTail(1);
  const std::string token = MustCreate(cluster, 1, "after").token();
  EXPECT_EQ(cluster.Validate(1, token, sessiond::v1::LINEARIZABLE),
            ValidateSessionResponse::VALID);
}

// Peer traffic from another cluster, or from a node the receiver does not
// know, is refused and logged, and changes nothing; a stranger's traffic
// is taken only when it is a leader's at the receiver's term or later (a
// member added while the receiver was away: the next test).
TEST(ClusterTest, PeerTrafficFromAnotherClusterOrAStrangerIsRefused) {
  ClusterHarness cluster(Options());
  ASSERT_TRUE(cluster.Start().ok());
  absl::StatusOr<int> leader = cluster.WaitForLeader(absl::Seconds(20));
  ASSERT_TRUE(leader.ok());
  const int follower = Others(cluster, *leader)[0];
  absl::StatusOr<sessiond::v1::MemberStatus> before =
      cluster.MemberStatusOf(follower);
  ASSERT_TRUE(before.ok());
  sessiond::v1::internal::HelloResponse hello;
  {
    auto stub = sessiond::v1::internal::RaftPeer::NewStub(grpc::CreateChannel(
        cluster.peer_address(follower), grpc::InsecureChannelCredentials()));
    grpc::ClientContext context;
    SetDeadline(&context, absl::Seconds(10));
    ASSERT_TRUE(
        stub->Hello(&context, sessiond::v1::internal::HelloRequest(), &hello)
            .ok());
  }
  const uint64_t cluster_id = hello.cluster_id();
  const uint64_t term = before->term();
  using replication::MessageType;
  struct Case {
    const char* what;
    uint64_t cluster_id;
    uint64_t from;
    MessageType type;
    uint64_t term;
    std::string address;
    const char* says;
  };
  const std::vector<Case> cases = {
      {"another cluster's leader", cluster_id + 1,
       static_cast<uint64_t>(*leader), MessageType::kHeartbeat, term + 5,
       "127.0.0.1:1", "belongs to cluster"},
      {"a stranger asking for votes", cluster_id, 9, MessageType::kVote,
       term + 5, "127.0.0.1:1", "unknown node 9"},
      {"a stranger leading an older term", cluster_id, 9,
       MessageType::kHeartbeat, term - 1, "127.0.0.1:1", "unknown node 9"},
      {"a stranger leading without an address", cluster_id, 9,
       MessageType::kHeartbeat, term + 5, "", "unknown node 9"},
  };
  for (const Case& c : cases) {
    const grpc::Status s = SendPeerBatch(cluster, follower, c.cluster_id,
                                         c.from, c.type, c.term, c.address);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION) << c.what;
    EXPECT_TRUE(absl::StrContains(s.error_message(), c.says))
        << c.what << ": " << s.error_message();
  }
  // From a member, but not what a member sends on this stream: a snapshot
  // without its image (installed, it dropped the follower's log, and the
  // node aborted and would not start again), and a message in another
  // member's name (a vote nobody cast) or addressed to another member.
  const int other = Others(cluster, *leader)[1];
  const grpc::Status snapshot = SendPeerBatch(
      cluster, follower, cluster_id, *leader, MessageType::kSnapshot, term,
      cluster.peer_address(*leader), before->commit_index() + 100);
  EXPECT_EQ(snapshot.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_TRUE(absl::StrContains(snapshot.error_message(),
                                "a snapshot on the message stream"))
      << snapshot.error_message();
  const grpc::Status forged = SendPeerBatch(
      cluster, follower, cluster_id, *leader, MessageType::kVoteResponse, term,
      cluster.peer_address(*leader), 0, other);
  EXPECT_EQ(forged.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_TRUE(absl::StrContains(
      forged.error_message(), absl::StrCat("a Raft message from node ", other)))
      << forged.error_message();
  const grpc::Status misaddressed = SendPeerBatch(
      cluster, follower, cluster_id, *leader, MessageType::kHeartbeat, term,
      cluster.peer_address(*leader), 0, 0, other);
  EXPECT_EQ(misaddressed.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_TRUE(
      absl::StrContains(misaddressed.error_message(),
                        absl::StrCat(" to node ", other, " in a batch")))
      << misaddressed.error_message();
  absl::StatusOr<sessiond::v1::MemberStatus> after =
      cluster.MemberStatusOf(follower);
  ASSERT_TRUE(after.ok()) << cluster.LogTail(follower);
  EXPECT_EQ(after->term(), term);
  EXPECT_EQ(after->leader(), static_cast<uint64_t>(*leader));
  EXPECT_EQ(after->first_index(), before->first_index());
  EXPECT_GE(after->last_index(), before->last_index());
  EXPECT_TRUE(LogContains(cluster, follower, "peer.refused"));
}

// Writes that reach the leader while it hands leadership over are refused
// by Raft before they enter the log. The node tries them again, and they
// are answered once the handover ends (here it is abandoned after an
// election timeout: its target is paused), not failed with an error the
// client cannot retry (a create without request_id is sent once).
TEST(ClusterTest, WritesDuringALeadershipTransferAreTriedAgainNotFailed) {
  ClusterHarness cluster(Options());
  ASSERT_TRUE(cluster.Start().ok());
  absl::StatusOr<int> leader = cluster.WaitForLeader(absl::Seconds(20));
  ASSERT_TRUE(leader.ok());
  const int target = Others(cluster, *leader)[0];
  const int other = Others(cluster, *leader)[1];
  MustCreate(cluster, *leader, "before");
  ASSERT_TRUE(cluster.WaitForConvergence(absl::Seconds(30)).ok());
  cluster.Pause(target);
  std::thread transfer(
      [&] { (void)TransferLeadership(cluster, *leader, target); });
  absl::SleepFor(absl::Milliseconds(50));  // the handover has begun
  for (int via : {*leader, other}) {
    auto stub = cluster.Stub(via);
    grpc::ClientContext context;
    SetDeadline(&context, absl::Seconds(10));
    sessiond::v1::CreateSessionRequest request;
    request.set_user_id("during-transfer");
    request.set_ttl_ms(3600 * 1000);
    sessiond::v1::CreateSessionResponse response;
    const grpc::Status s = stub->CreateSession(&context, request, &response);
    EXPECT_TRUE(s.ok()) << "via node " << via << ": " << s.error_message();
  }
  transfer.join();
  cluster.Resume(target);
  ASSERT_TRUE(cluster.WaitForConvergence(absl::Seconds(30)).ok());
}

// A leader gives a transfer up after an election timeout when its target
// does not take over (here: paused). The call, whose deadline is far
// longer, starts it again while the old leader still leads: it used to
// wait out its deadline and fail, though the target was back in 1.5 s (a
// busy machine made ClusterTest.TransferToAny... fail the same way).
TEST(ClusterTest, ATransferGivenUpIsStartedAgainWithinTheDeadline) {
  ClusterHarness cluster(Options());
  ASSERT_TRUE(cluster.Start().ok());
  absl::StatusOr<int> leader = cluster.WaitForLeader(absl::Seconds(20));
  ASSERT_TRUE(leader.ok());
  const int target = Others(cluster, *leader)[0];
  cluster.Pause(target);
  std::thread resume([&] {
    absl::SleepFor(absl::Milliseconds(1500));
    cluster.Resume(target);
  });
  const grpc::Status transfer = TransferLeadership(cluster, *leader, target);
  resume.join();
  EXPECT_TRUE(transfer.ok()) << transfer.error_message();
  absl::StatusOr<int> now = cluster.WaitForLeader(absl::Seconds(20));
  ASSERT_TRUE(now.ok());
  EXPECT_EQ(*now, target);
}

// A transfer to a voter the leader cannot reach is refused at once: its
// TimeoutNow would go nowhere, and the core refuses writes while a
// transfer is under way, so the call held every write for an election
// timeout, again at each retry, then failed at its deadline with a code
// that looks retryable.
TEST(ClusterTest, ATransferToANodeThatIsDownIsRefusedAtOnce) {
  ClusterHarness cluster(Options());
  ASSERT_TRUE(cluster.Start().ok());
  absl::StatusOr<int> leader = cluster.WaitForLeader(absl::Seconds(20));
  ASSERT_TRUE(leader.ok());
  const int down = Others(cluster, *leader)[0];
  cluster.Kill(down);
  ASSERT_TRUE(WaitUntilUnreachable(cluster, *leader, down));
  for (int via : {*leader, Others(cluster, *leader)[1]}) {
    ExpectTransferRefused(cluster, via, down, "is not reachable");
  }
  ExpectStillLeading(cluster, *leader);
}

// A transfer to a voter that is connected but takes no entries (its log
// writes stalled; here paused, within the 4 s its keepalive takes to
// notice) is refused at once, saying so: it would hold every write for an
// election timeout at each retry, then fail at the deadline.
TEST(ClusterTest, ATransferToAVoterThatAcknowledgesNothingIsRefused) {
  ClusterHarness cluster(Options());
  ASSERT_TRUE(cluster.Start().ok());
  absl::StatusOr<int> leader = cluster.WaitForLeader(absl::Seconds(20));
  ASSERT_TRUE(leader.ok());
  const int stalled = Others(cluster, *leader)[0];
  StallPastAnElectionTimeout(cluster, *leader, stalled);
  ExpectTransferRefused(cluster, *leader, stalled, "has acknowledged no entry");
  cluster.Resume(stalled);
  ExpectStillLeading(cluster, *leader);
}

// A transfer started while its target acknowledged, whose target then
// stops (paused at the start here; the log grows meanwhile), ends when the
// leader refuses its retry, with the leader's reason: not at the deadline
// (10 s here), with a DEADLINE_EXCEEDED that says nothing of the target.
TEST(ClusterTest, ATransferWhoseTargetStallsEndsWithTheLeadersReason) {
  ClusterHarness cluster(Options());
  ASSERT_TRUE(cluster.Start().ok());
  absl::StatusOr<int> leader = cluster.WaitForLeader(absl::Seconds(20));
  ASSERT_TRUE(leader.ok());
  const int stalled = Others(cluster, *leader)[0];
  cluster.Pause(stalled);
  std::thread writer([&] {
    // Once the core gave the transfer up (an election timeout), as the
    // call waits for its retry.
    absl::SleepFor(absl::Milliseconds(700));
    MustCreate(cluster, *leader, "while the transfer waits");
  });
  ExpectTransferRefused(cluster, *leader, stalled, "has acknowledged no entry");
  writer.join();
  cluster.Resume(stalled);
}

// Cluster time lives in memory between stamped entries. A node restarted
// after a quiet spell resumed from the last stamp it had applied, the whole
// spell behind the two that kept counting; made leader, it stamped new
// sessions' times that far in the past, and the others called them
// EXPIRED at once (and a later leader's first stamp would jump cluster
// time that far ahead). An idle leader now stamps cluster time into the
// log every --clock_tick_ms; with 0 (never) this test fails.
TEST(ClusterTest, ANodeRestartedAfterAQuietSpellLeadsWithoutExpiringAnyone) {
  ClusterHarness cluster(Options({"--clock_tick_ms", "500"}));
  ASSERT_TRUE(cluster.Start().ok());
  absl::StatusOr<int> leader = cluster.WaitForLeader(absl::Seconds(20));
  ASSERT_TRUE(leader.ok());
  MustCreate(cluster, *leader, "before");
  ASSERT_TRUE(cluster.WaitForConvergence(absl::Seconds(30)).ok());
  const int restarted = Others(cluster, *leader)[0];
  absl::SleepFor(absl::Seconds(20));  // quiet: nobody writes
  cluster.Kill(restarted);
  ASSERT_TRUE(cluster.StartNode(restarted).ok());
  ASSERT_TRUE(cluster.WaitForConvergence(absl::Seconds(30)).ok());
  const grpc::Status transfer = TransferLeadership(cluster, *leader, restarted);
  ASSERT_TRUE(transfer.ok()) << transfer.error_message();
  // Idles out after 10 s without a touch: EXPIRED at once where cluster
  // time is 20 s ahead of the new leader's.
  const sessiond::v1::CreateSessionResponse fresh =
      MustCreate(cluster, restarted, "after", absl::Seconds(10));
  for (int id : cluster.ids()) {
    ValidateSessionResponse answer;
    const grpc::Status s = cluster.Validate(
        id, fresh.token(), sessiond::v1::LINEARIZABLE, &answer);
    ASSERT_TRUE(s.ok()) << "node " << id << ": " << s.error_message();
    EXPECT_EQ(answer.outcome(), ValidateSessionResponse::VALID)
        << "node " << id;
  }
  // The nodes' cluster times agree within a few ticks.
  std::string times;
  EXPECT_LT(ClusterTimeSpreadMs(cluster, &times), 5000)
      << "cluster times " << times;
}

// The node a lost-quorum test keeps running (3), made never to campaign
// within the test (it waits 20 to 40 s without a leader first), so a
// restarted member leads when the others come back: a leader whose clock
// stood still while they were down. Outages in these tests last under 20 s.
int RunsOnAndCampaignsLast(ClusterHarness& cluster) {
  constexpr int kSurvivor = 3;
  cluster.SetNodeFlags(kSurvivor, {"--election_ticks", "1000"});
  return kSurvivor;
}

// Two of three nodes down for longer than the sessions' idle timeout: the
// survivor keeps answering VALID (stale) for the users active through it,
// and when the quorum returns the touches it recorded meanwhile keep them
// logged in. Inactive users still idle out. Before, the survivor answered
// EXPIRED once the idle timeout had passed since the last touch that
// reached the log (a logout of every active user during a long outage),
// and its touches, judged at the applied time on return, revived nobody.
TEST(ClusterTest, UsersActiveThroughANodeThatLostItsQuorumStayLoggedIn) {
  // Sweeps every 100 ms: a new leader would remove an idled-out session
  // before the survivor's touches (a flush every second) reach it, but for
  // the sweeper's grace after an election.
  ClusterHarness cluster(Options(
      {"--touch_flush_interval_ms", "1000", "--sweep_interval_ms", "100"}));
  const int survivor = RunsOnAndCampaignsLast(cluster);
  ASSERT_TRUE(cluster.Start().ok());
  absl::StatusOr<int> leader =
      cluster.WaitForLeader(absl::Seconds(20), AllBut(cluster, survivor));
  ASSERT_TRUE(leader.ok());
  // Long enough that the restarts and the checks after the last touch fit
  // well within it on a slow machine.
  const absl::Duration idle = absl::Seconds(12);
  const std::string active =
      MustCreate(cluster, *leader, "active", idle).token();
  const std::string inactive =
      MustCreate(cluster, *leader, "inactive", idle).token();
  WaitForATick(cluster);
  for (int id : Others(cluster, survivor)) cluster.Kill(id);
  // Well past the idle timeout, the active user validating all along.
  const absl::Time outage_end = absl::Now() + idle + absl::Seconds(4);
  int answers = 0;
  while (absl::Now() < outage_end) {
    EXPECT_EQ(ValidateWithTouch(cluster, survivor, active),
              ValidateSessionResponse::VALID)
        << "answer " << answers << ", "
        << absl::FormatDuration(outage_end - absl::Now())
        << " before the quorum returns";
    ++answers;
    absl::SleepFor(absl::Milliseconds(500));
  }
  ASSERT_TRUE(RestartTheOthers(cluster, survivor).ok());
  // The survivor's touches go out at its next flush.
  absl::SleepFor(absl::Seconds(3));
  for (int id : cluster.ids()) {
    ValidateSessionResponse answer;
    grpc::Status s =
        cluster.Validate(id, active, sessiond::v1::LINEARIZABLE, &answer);
    ASSERT_TRUE(s.ok()) << "node " << id << ": " << s.error_message();
    EXPECT_EQ(answer.outcome(), ValidateSessionResponse::VALID)
        << "node " << id;
    s = cluster.Validate(id, inactive, sessiond::v1::LINEARIZABLE, &answer);
    ASSERT_TRUE(s.ok()) << "node " << id << ": " << s.error_message();
    EXPECT_NE(answer.outcome(), ValidateSessionResponse::VALID)
        << "node " << id;
  }
}

// The same with a lone voter and a learner (a cluster growing from one
// node): the learner answers VALID while the voter is down, and the voter,
// back, waits out the grace for the touches the learner recorded meanwhile
// (it had none: a lone voter's own touches were all it waited for). Not a
// guard of that grace: on this machine the learner's touches arrived before
// its clock could idle the user out, with the grace or without it.
TEST(ClusterTest, UsersActiveThroughALearnerWhileTheVoterWasDownStayLoggedIn) {
  ClusterOptions options = Options(
      {"--touch_flush_interval_ms", "1000", "--sweep_interval_ms", "100"});
  options.nodes = 1;
  options.spares = 1;
  ClusterHarness cluster(options);
  ASSERT_TRUE(cluster.Start().ok());
  ASSERT_TRUE(cluster.WaitForLeader(absl::Seconds(20)).ok());
  const int voter = 1;
  const int learner = 2;
  ASSERT_TRUE(AddMember(cluster, voter, learner).ok());
  ASSERT_TRUE(cluster.StartNode(learner).ok());
  const absl::Duration idle = absl::Seconds(5);
  const std::string active = MustCreate(cluster, voter, "active", idle).token();
  ASSERT_TRUE(cluster.WaitForConvergence(absl::Seconds(30)).ok());
  cluster.Kill(voter);
  const absl::Time outage_end = absl::Now() + 2 * idle;
  while (absl::Now() < outage_end) {
    EXPECT_EQ(ValidateWithTouch(cluster, learner, active),
              ValidateSessionResponse::VALID);
    absl::SleepFor(absl::Milliseconds(500));
  }
  ASSERT_TRUE(cluster.StartNode(voter).ok());
  // The learner's touches go out at its next flush (every second).
  absl::SleepFor(absl::Seconds(3));
  ValidateSessionResponse answer;
  const grpc::Status s =
      cluster.Validate(voter, active, sessiond::v1::LINEARIZABLE, &answer);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(answer.outcome(), ValidateSessionResponse::VALID)
      << cluster.LogTail(voter);
}

// A leader cut off from both followers for less than an election timeout
// leads on, and the removals its sweeper appended meanwhile commit once it
// is heard again, before anything a follower kept: the users active
// through a follower, whose touches could not reach the leader, were
// removed, and their touches then found nothing (found in review). A
// leader whose quorum has not answered for a few heartbeats now removes
// nobody until a grace after its quorum answers again.
TEST(ClusterTest, ALeaderCutOffFromItsQuorumRemovesNobodyMeanwhile) {
  // Elections after 5 s: the cut below (3.5 s) neither deposes the leader
  // nor lets the followers elect another.
  ClusterHarness cluster(
      Options({"--election_ticks", "500", "--touch_flush_interval_ms", "200",
               "--sweep_interval_ms", "100"}));
  ASSERT_TRUE(cluster.Start().ok());
  absl::StatusOr<int> leader = cluster.WaitForLeader(absl::Seconds(40));
  ASSERT_TRUE(leader.ok());
  const int follower = Others(cluster, *leader)[0];
  const absl::Duration idle = absl::Seconds(2);
  const std::string active =
      MustCreate(cluster, *leader, "active", idle).token();
  ASSERT_TRUE(cluster.WaitForConvergence(absl::Seconds(30)).ok());
  auto stub = cluster.Stub(follower);
  const auto touch_for = [&](absl::Duration how_long) {
    const absl::Time end = absl::Now() + how_long;
    while (absl::Now() < end) {
      grpc::ClientContext context;
      SetDeadline(&context, absl::Seconds(5));
      sessiond::v1::ValidateSessionRequest request;
      request.set_token(active);
      request.set_touch(true);
      request.set_consistency(sessiond::v1::LOCAL);
      ValidateSessionResponse answer;
      const grpc::Status s = stub->ValidateSession(&context, request, &answer);
      EXPECT_TRUE(s.ok()) << s.error_message();
      EXPECT_EQ(answer.outcome(), ValidateSessionResponse::VALID);
      absl::SleepFor(absl::Milliseconds(200));
    }
  };
  touch_for(absl::Seconds(1));
  cluster.Isolate(*leader);
  touch_for(absl::Milliseconds(3500));  // past the idle timeout
  cluster.HealAll();
  touch_for(absl::Seconds(3));
  absl::StatusOr<int> still = cluster.WaitForLeader(absl::Seconds(20));
  ASSERT_TRUE(still.ok());
  EXPECT_EQ(*still, *leader) << "another leader was elected: the cut was "
                                "longer than this test needs";
  ValidateSessionResponse answer;
  const grpc::Status s =
      cluster.Validate(*still, active, sessiond::v1::LINEARIZABLE, &answer);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(answer.outcome(), ValidateSessionResponse::VALID)
      << cluster.LogTail(*still);
}

// A validate stream that ends at an answer it could not give records no
// touch for the answers behind it, which it never sent: they were recorded
// as they were validated, so a stream cut short by a lost quorum still
// touched sessions its caller never heard about (BatchValidateSessions
// records its touches only when the whole call succeeds).
TEST(ClusterTest, AStreamCutShortTouchesNothingItDidNotAnswer) {
  ClusterHarness cluster(Options({"--touch_flush_interval_ms", "200"}));
  const int survivor = RunsOnAndCampaignsLast(cluster);
  ASSERT_TRUE(cluster.Start().ok());
  absl::StatusOr<int> leader =
      cluster.WaitForLeader(absl::Seconds(20), AllBut(cluster, survivor));
  ASSERT_TRUE(leader.ok());
  const std::string token =
      MustCreate(cluster, *leader, "u", absl::Minutes(30)).token();
  WaitForATick(cluster);
  ValidateSessionResponse before;
  ASSERT_TRUE(
      cluster.Validate(survivor, token, sessiond::v1::LOCAL, &before).ok());
  ASSERT_EQ(before.outcome(), ValidateSessionResponse::VALID);

  for (int id : Others(cluster, survivor)) cluster.Kill(id);
  {
    // A token no session can have is UNKNOWN at once, at any consistency:
    // it does not wait at the read barrier (which fails without a quorum)
    // holding its megabyte meanwhile.
    ValidateSessionResponse garbage;
    const grpc::Status s =
        cluster.Validate(survivor, std::string(1 << 20, '#'),
                         sessiond::v1::LINEARIZABLE, &garbage);
    ASSERT_TRUE(s.ok()) << s.error_code() << ": " << s.error_message();
    EXPECT_EQ(garbage.outcome(), ValidateSessionResponse::UNKNOWN);
  }
  {
    // So is a batch of them.
    sessiond::v1::BatchValidateSessionsRequest batch;
    batch.set_consistency(sessiond::v1::LINEARIZABLE);
    for (int i = 0; i < 3; ++i) {
      batch.add_requests()->set_token(std::string(1000, '#'));
    }
    sessiond::v1::BatchValidateSessionsResponse answers;
    grpc::ClientContext context;
    context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(30)));
    const grpc::Status s = cluster.Stub(survivor)->BatchValidateSessions(
        &context, batch, &answers);
    ASSERT_TRUE(s.ok()) << s.error_code() << ": " << s.error_message();
    ASSERT_EQ(answers.responses_size(), 3);
    for (const ValidateSessionResponse& r : answers.responses()) {
      EXPECT_EQ(r.outcome(), ValidateSessionResponse::UNKNOWN);
    }
  }
  {
    // A LINEARIZABLE read, which fails without a quorum, then LOCAL reads
    // with touch=true, answered at once and queued behind it.
    auto stub = cluster.Stub(survivor);
    grpc::ClientContext context;
    context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(30)));
    auto stream = stub->StreamValidateSessions(&context);
    sessiond::v1::ValidateSessionRequest request;
    request.set_token(token);
    request.set_consistency(sessiond::v1::LINEARIZABLE);
    ASSERT_TRUE(stream->Write(request));
    request.set_consistency(sessiond::v1::LOCAL);
    request.set_touch(true);
    for (int i = 0; i < 5; ++i) ASSERT_TRUE(stream->Write(request));
    stream->WritesDone();
    ValidateSessionResponse response;
    int answers = 0;
    while (stream->Read(&response)) ++answers;
    const grpc::Status ended = stream->Finish();
    EXPECT_FALSE(ended.ok());
    EXPECT_EQ(answers, 0) << ended.error_message();
  }
  ASSERT_TRUE(RestartTheOthers(cluster, survivor).ok());
  ASSERT_TRUE(cluster.WaitForWritable(absl::Seconds(30), survivor).ok());
  // Several of the survivor's touch flushes (every 200 ms).
  absl::SleepFor(absl::Seconds(2));
  ASSERT_TRUE(cluster.WaitForConvergence(absl::Seconds(30)).ok());
  ValidateSessionResponse after;
  ASSERT_TRUE(
      cluster.Validate(survivor, token, sessiond::v1::LINEARIZABLE, &after)
          .ok());
  EXPECT_EQ(after.session().last_seen_at_ms(),
            before.session().last_seen_at_ms())
      << "a touch of an answer never sent reached the log";
}

// Cluster time stands still while no member counts it, but a member that
// kept running while the others were down counted it: restarted, the others
// (and a leader among them) were that far behind it, and it, never reading
// its clock back, stood still for as long, judging every expiry that much
// later than they did. Its forwarded tick brings the leader's clock, and so
// everyone's, up to its own.
TEST(ClusterTest, AMemberThatRanThroughAnOutageBringsTheClusterClockAlong) {
  ClusterHarness cluster(Options());
  const int survivor = RunsOnAndCampaignsLast(cluster);
  ASSERT_TRUE(cluster.Start().ok());
  absl::StatusOr<int> leader =
      cluster.WaitForLeader(absl::Seconds(20), AllBut(cluster, survivor));
  ASSERT_TRUE(leader.ok());
  MustCreate(cluster, *leader, "before");
  ASSERT_TRUE(cluster.WaitForConvergence(absl::Seconds(30)).ok());
  for (int id : Others(cluster, survivor)) cluster.Kill(id);
  absl::SleepFor(absl::Seconds(10));
  ASSERT_TRUE(RestartTheOthers(cluster, survivor).ok());
  ASSERT_TRUE(cluster.WaitForConvergence(absl::Seconds(30)).ok());
  absl::SleepFor(absl::Seconds(2));  // a few agent rounds
  std::string times;
  EXPECT_LT(ClusterTimeSpreadMs(cluster, &times), 3000)
      << "cluster times " << times;
}

// Sessions created by a leader restarted after an outage, while the member
// that ran through it is still cut off, outlive its return: the cluster
// time it brings along (it counted the outage) must not age them. Found at
// stop 47 (a helper's review): the leader's clock took the member's time at
// its first forwarded message, a jump of the outage's length, and sessions
// stamped before it with an idle timeout shorter than the outage answered
// EXPIRED on every node (3 of 3). The jump now goes through the log
// (ClockCatchUpCommand), and moves what was stamped in the lag with it.
// The two others of `cluster` (started) go down for 15 s while `survivor`
// runs on; restarted, they make a session with a 10 s idle timeout while
// the survivor is cut off, then it returns. Its token, a few agent rounds
// after the return, once it validates VALID on every node. A create with a
// request_id made in the lag too, its answer taken as lost, is retried
// then: it gets the same session back (with kLagRequestWindow, shorter
// than the outage, its window had closed at the catch-up and the retry
// made a second session).
std::string ASessionMadeWhileAMemberRanThroughAnOutage(ClusterHarness& cluster,
                                                       int survivor) {
  absl::StatusOr<int> leader =
      cluster.WaitForLeader(absl::Seconds(20), AllBut(cluster, survivor));
  EXPECT_TRUE(leader.ok());
  if (!leader.ok()) return "";
  MustCreate(cluster, *leader, "before");
  EXPECT_TRUE(cluster.WaitForConvergence(absl::Seconds(30)).ok());
  for (int id : Others(cluster, survivor)) cluster.Kill(id);
  absl::SleepFor(absl::Seconds(15));
  cluster.Isolate(survivor);
  EXPECT_TRUE(RestartTheOthers(cluster, survivor).ok());
  leader = cluster.WaitForLeader(absl::Seconds(20), AllBut(cluster, survivor));
  EXPECT_TRUE(leader.ok());
  if (!leader.ok()) return "";
  const std::string fresh =
      MustCreate(cluster, *leader, "fresh", absl::Seconds(10)).token();
  const std::string kRequestId = "a-create-retried-after-the-return";
  const std::string made_in_lag =
      MustCreate(cluster, *leader, "retried", absl::ZeroDuration(), kRequestId)
          .session()
          .session_id();
  cluster.HealAll();
  absl::SleepFor(absl::Seconds(3));  // a few agent rounds
  EXPECT_EQ(
      MustCreate(cluster, *leader, "retried", absl::ZeroDuration(), kRequestId)
          .session()
          .session_id(),
      made_in_lag)
      << "the retry of a create made in the lag made a second session";
  for (int id : cluster.ids()) {
    ValidateSessionResponse answer;
    const grpc::Status s =
        cluster.Validate(id, fresh, sessiond::v1::LINEARIZABLE, &answer);
    EXPECT_TRUE(s.ok()) << "node " << id << ": " << s.error_message();
    EXPECT_EQ(answer.outcome(), ValidateSessionResponse::VALID)
        << "node " << id;
  }
  return fresh;
}

bool AnyLogContains(ClusterHarness& cluster, const std::string& text) {
  for (int id : cluster.ids()) {
    if (LogContains(cluster, id, text)) return true;
  }
  return false;
}

// A request_id window shorter than the outage of
// ASessionMadeWhileAMemberRanThroughAnOutage, longer than the time from its
// create in the lag to its retry.
const std::vector<std::string> kLagRequestWindow = {
    "--create_request_window_ms", "12000"};

TEST(ClusterTest,
     SessionsMadeBeforeAMemberThatRanThroughAnOutageReturnsStayValid) {
  ClusterHarness cluster(Options(kLagRequestWindow));
  const int survivor = RunsOnAndCampaignsLast(cluster);
  ASSERT_TRUE(cluster.Start().ok());
  ASSERT_FALSE(
      ASessionMadeWhileAMemberRanThroughAnOutage(cluster, survivor).empty());
  // And the survivor's time was taken: the clocks agree again.
  std::string times;
  EXPECT_LT(ClusterTimeSpreadMs(cluster, &times), 3000)
      << "cluster times " << times;
  EXPECT_TRUE(AnyLogContains(cluster, "clock.catching_up"));
  EXPECT_TRUE(AnyLogContains(cluster, "move_windows=true"));
}

// The same with a member on an older binary, one that publishes no command
// level with the clock's catch-up (storage/command_level.h): it would apply
// the catch-up as a command without an operation, its sessions' times then
// differing from the others' for good. The catch-up waits for it: cluster
// time does not jump (the outage does not count, as when every member was
// down), the session made in the lag stays valid, and the replicas agree.
TEST(ClusterTest, AClockCatchUpWaitsUntilEveryMemberAppliesIt) {
  ClusterHarness cluster(Options(kLagRequestWindow));
  const int survivor = RunsOnAndCampaignsLast(cluster);
  const int older = 1;
  cluster.SetNodeFlags(older, {"--unsafe_command_level", "1"});
  ASSERT_TRUE(cluster.Start().ok());
  ASSERT_FALSE(
      ASessionMadeWhileAMemberRanThroughAnOutage(cluster, survivor).empty());
  EXPECT_TRUE(AnyLogContains(cluster, "clock.catch_up_deferred"));
  EXPECT_FALSE(AnyLogContains(cluster, "clock.catching_up"));
  EXPECT_TRUE(cluster.WaitForConvergence(absl::Seconds(30)).ok());
  // Upgraded to a binary of level 2 (restarted), it publishes that level,
  // and the catch-up goes through, without moving the windows opened in
  // the lag (level 3: a level-2 member would not move them, and diverge):
  // the clocks agree.
  cluster.Kill(older);
  cluster.SetNodeFlags(older, {"--unsafe_command_level", "2"});
  ASSERT_TRUE(cluster.StartNode(older).ok());
  bool caught_up = false;
  for (int i = 0; i < 150 && !caught_up; ++i) {
    absl::SleepFor(absl::Milliseconds(200));
    caught_up = AnyLogContains(cluster, "clock.catching_up");
  }
  EXPECT_TRUE(caught_up);
  EXPECT_TRUE(AnyLogContains(cluster, "move_windows=false"));
  EXPECT_FALSE(AnyLogContains(cluster, "move_windows=true"));
  ASSERT_TRUE(cluster.WaitForConvergence(absl::Seconds(30)).ok());
  absl::SleepFor(absl::Seconds(2));  // a few agent rounds
  std::string times;
  EXPECT_LT(ClusterTimeSpreadMs(cluster, &times), 3000)
      << "cluster times " << times;
}

// Membership changes go one at a time, and a new leader counts its whole
// log as a pending change until it applied it. A change sent while another
// is not applied yet used to be refused (FAILED_PRECONDITION "a membership
// change at N is not yet applied"), so two sent together, or one sent just
// after a failover (when operators replace the dead node), failed for no
// reason the operator could act on. It is now tried again until the
// previous one is applied, within its deadline.
TEST(ClusterTest, MembershipChangesSentTogetherAreAppliedOneAfterTheOther) {
  ClusterOptions options = Options();
  options.spares = 4;
  ClusterHarness cluster(options);
  ASSERT_TRUE(cluster.Start().ok());
  absl::StatusOr<int> leader = cluster.WaitForLeader(absl::Seconds(20));
  ASSERT_TRUE(leader.ok());
  // Learners that never start (they count in no quorum).
  for (int id : {4, 5, 6, 7}) {
    ASSERT_TRUE(AddMember(cluster, *leader, id).ok());
  }
  // Two removals at once, twice: the second of each pair reaches the
  // leader while the first is not applied.
  for (const auto& [first, second] : {std::pair{4, 5}, std::pair{6, 7}}) {
    grpc::Status first_removed;
    grpc::Status second_removed;
    std::thread other(
        [&] { second_removed = RemoveMember(cluster, *leader, second); });
    first_removed = RemoveMember(cluster, *leader, first);
    other.join();
    EXPECT_TRUE(first_removed.ok()) << first_removed.error_message();
    EXPECT_TRUE(second_removed.ok()) << second_removed.error_message();
  }
}

// A member that was down while another joined comes back to find the
// newcomer leading. It has not applied the newcomer's AddMember yet, so
// the leader is a stranger to it: it must still take the leader's appends
// (and answer them), or it never catches up.
TEST(ClusterTest, AMemberDownWhileAnotherJoinedFollowsTheNewcomerAsLeader) {
  ClusterOptions options = Options();
  options.spares = 1;
  ClusterHarness cluster(options);
  ASSERT_TRUE(cluster.Start().ok());
  absl::StatusOr<int> leader = cluster.WaitForLeader(absl::Seconds(20));
  ASSERT_TRUE(leader.ok());
  const int newcomer = 4;
  const int away = *leader == 3 ? 2 : 3;
  std::vector<std::string> tokens;
  for (int i = 0; i < 20; ++i) {
    tokens.push_back(MustCreate(cluster, *leader, "before").token());
  }
  ASSERT_TRUE(cluster.WaitForConvergence(absl::Seconds(30)).ok());
  cluster.Kill(away);

  ASSERT_TRUE(AddMember(cluster, *leader, newcomer).ok());
  ASSERT_TRUE(cluster.StartNode(newcomer).ok());
  ASSERT_TRUE(PromoteWhenCaughtUp(cluster, *leader, newcomer).ok());
  for (int i = 0; i < 20; ++i) {
    tokens.push_back(MustCreate(cluster, *leader, "while-away").token());
  }
  grpc::Status transfer = TransferLeadership(cluster, *leader, newcomer);
  ASSERT_TRUE(transfer.ok()) << transfer.error_message();
  ASSERT_TRUE(cluster.WaitForLeader(absl::Seconds(20), {newcomer}).ok());

  ASSERT_TRUE(cluster.StartNode(away).ok());
  absl::StatusOr<std::string> converged =
      cluster.WaitForConvergence(absl::Seconds(30));
  ASSERT_TRUE(converged.ok()) << converged.status() << "\n"
                              << cluster.LogTail(away);
  EXPECT_TRUE(LogContains(cluster, away, "peer.unknown_leader_admitted"));
  for (const std::string& token : tokens) {
    EXPECT_EQ(cluster.Validate(away, token, sessiond::v1::LOCAL),
              ValidateSessionResponse::VALID);
  }
  // And it answers the leader: a write needs it once another voter is down.
  const int other = Others(cluster, newcomer)[0] == away
                        ? Others(cluster, newcomer)[1]
                        : Others(cluster, newcomer)[0];
  cluster.Kill(other);
  EXPECT_TRUE(cluster.WaitForWritable(absl::Seconds(20), newcomer).ok());
}

// A node added where a removed member ran (its peer address) answers the
// NodeStatus meant for the removed one, which the others still dial:
// ClusterStatus showed the removed member reachable, with the newcomer's
// role, indexes and lag.
TEST(ClusterTest, ClusterStatusDoesNotTakeANodeAtAnotherMembersAddressForIt) {
  ClusterOptions options = Options();
  options.spares = 1;
  ClusterHarness cluster(options);
  ASSERT_TRUE(cluster.Start().ok());
  absl::StatusOr<int> leader = cluster.WaitForLeader(absl::Seconds(20));
  ASSERT_TRUE(leader.ok());
  const int removed = Others(cluster, *leader)[0];
  const int kept = Others(cluster, *leader)[1];
  const int newcomer = 4;
  cluster.Kill(removed);
  ASSERT_TRUE(RemoveMember(cluster, *leader, removed).ok());
  const grpc::Status added =
      AddMember(cluster, *leader, newcomer, cluster.peer_address(removed));
  ASSERT_TRUE(added.ok()) << added.error_message();
  cluster.SetNodeFlags(
      newcomer, {"--initial_cluster",
                 absl::StrCat(*leader, "=", cluster.peer_address(*leader), ",",
                              kept, "=", cluster.peer_address(kept), ",",
                              newcomer, "=", cluster.peer_address(removed))});
  ASSERT_TRUE(cluster.StartNode(newcomer).ok());
  const auto row = [](const sessiond::v1::ClusterStatusResponse& status,
                      int id) -> const sessiond::v1::MemberStatus* {
    for (const auto& m : status.members()) {
      if (m.node_id() == static_cast<uint64_t>(id)) return &m;
    }
    return nullptr;
  };
  const std::string answers_as =
      absl::StrCat("the node at this address answers as node ", newcomer);
  absl::StatusOr<sessiond::v1::ClusterStatusResponse> status;
  for (int i = 0; i < 200; ++i) {
    status = cluster.ClusterStatus(*leader);
    ASSERT_TRUE(status.ok()) << status.status();
    const sessiond::v1::MemberStatus* joined = row(*status, newcomer);
    const sessiond::v1::MemberStatus* gone = row(*status, removed);
    // The removed member's channel may still be waiting out its reconnect
    // backoff from before the newcomer listened ("Connection refused").
    if (joined != nullptr && joined->reachable() && gone != nullptr &&
        absl::StrContains(gone->error(), answers_as)) {
      break;
    }
    absl::SleepFor(absl::Milliseconds(100));
  }
  ASSERT_NE(row(*status, newcomer), nullptr);
  ASSERT_TRUE(row(*status, newcomer)->reachable()) << status->DebugString();
  const sessiond::v1::MemberStatus* gone = row(*status, removed);
  ASSERT_NE(gone, nullptr) << status->DebugString();
  EXPECT_FALSE(gone->reachable()) << gone->DebugString();
  EXPECT_TRUE(absl::StrContains(gone->error(), answers_as))
      << gone->DebugString();
}

// A write through a follower is answered once that follower applied it too,
// so a read there right after sees it (API.md, "Writes through any node").
// The follower's wait ended at the driver's read timeout (20 ticks): with
// its apply stage slower than that, a create was answered OK and a LOCAL
// validation on the same node a moment later said UNKNOWN.
TEST(ClusterTest, AWriteThroughASlowFollowerIsReadThereRightAfter) {
  ClusterHarness cluster(Options());
  ASSERT_TRUE(cluster.Start().ok());
  absl::StatusOr<int> leader = cluster.WaitForLeader(absl::Seconds(20));
  ASSERT_TRUE(leader.ok());
  const int slow = Others(cluster, *leader)[0];
  cluster.Kill(slow);
  // Each apply batch waits a second before it applies.
  cluster.SetNodeFlags(slow, {"--fault_point", "apply.before_apply~1000"});
  ASSERT_TRUE(cluster.StartNode(slow).ok());
  ASSERT_TRUE(cluster.WaitForConvergence(absl::Seconds(60)).ok());
  for (int i = 0; i < 3; ++i) {
    const std::string token =
        MustCreate(cluster, slow, "slow-follower").token();
    ASSERT_FALSE(token.empty());
    ValidateSessionResponse answer;
    ASSERT_TRUE(
        cluster.Validate(slow, token, sessiond::v1::LOCAL, &answer).ok());
    EXPECT_EQ(answer.outcome(), ValidateSessionResponse::VALID) << i;
  }
}

// A create refused before any node proposed it (here: no leader until its
// deadline) created nothing, and gives its caller's rate-limit token back:
// a caller retrying through an election or an overload was rate limited
// (RATE_LIMITED) for creates it never made.
TEST(ClusterTest, CreatesThatWereNeverProposedCostNoRateLimit) {
  ClusterHarness cluster(Options(
      {"--create_rate_per_identity", "1", "--create_burst_per_identity", "2"}));
  ASSERT_TRUE(cluster.Start().ok());
  absl::StatusOr<int> leader = cluster.WaitForLeader(absl::Seconds(20));
  ASSERT_TRUE(leader.ok());
  const int alone = Others(cluster, *leader)[0];
  for (int id : cluster.ids()) {
    if (id != alone) cluster.Kill(id);
  }
  // Until it knows no leader: a write it proposes might still commit.
  bool leaderless = false;
  for (int i = 0; i < 200 && !leaderless; ++i) {
    absl::StatusOr<sessiond::v1::MemberStatus> status =
        cluster.MemberStatusOf(alone);
    leaderless = status.ok() && status->leader() == 0;
    if (!leaderless) absl::SleepFor(absl::Milliseconds(50));
  }
  ASSERT_TRUE(leaderless);
  auto stub = cluster.Stub(alone);
  // Two rounds of two, each a burst's worth, 0.4 s apart: without the
  // refund the second round finds under half a token and is refused.
  for (int round = 0; round < 2; ++round) {
    std::vector<grpc::Status> answers(2);
    std::vector<std::thread> callers;
    for (int c = 0; c < 2; ++c) {
      callers.emplace_back([&, c] {
        grpc::ClientContext context;
        SetDeadline(&context, absl::Milliseconds(400));
        sessiond::v1::CreateSessionRequest request;
        request.set_user_id("leaderless");
        sessiond::v1::CreateSessionResponse response;
        answers[c] = stub->CreateSession(&context, request, &response);
      });
    }
    for (auto& t : callers) t.join();
    for (const grpc::Status& s : answers) {
      EXPECT_FALSE(s.ok());
      EXPECT_FALSE(absl::StrContains(s.error_message(), "create rate limit"))
          << "round " << round << ": " << s.error_message();
    }
  }
}

// A batch validation that fails changes nothing. Its touches were recorded
// as it went: a batch refused for one token (a node cut off, whose fell-back
// read lacks it) still moved the other sessions' last_seen once the quorum
// came back.
TEST(ClusterTest, AFailedBatchValidationTouchesNoSession) {
  ClusterHarness cluster(Options());
  ASSERT_TRUE(cluster.Start().ok());
  absl::StatusOr<int> leader = cluster.WaitForLeader(absl::Seconds(20));
  ASSERT_TRUE(leader.ok());
  const sessiond::v1::CreateSessionResponse created =
      MustCreate(cluster, *leader, "batch");
  WaitForATick(cluster);
  const int survivor = Others(cluster, *leader)[0];
  const std::vector<int> others = Others(cluster, survivor);
  for (int id : others) cluster.Kill(id);
  absl::SleepFor(absl::Milliseconds(1500));  // a touch would show

  sessiond::v1::BatchValidateSessionsRequest batch;
  auto* known = batch.add_requests();
  known->set_token(created.token());
  known->set_touch(true);
  auto* unknown = batch.add_requests();
  unknown->set_token(std::string(43, 'A'));
  unknown->set_touch(true);
  sessiond::v1::BatchValidateSessionsResponse answered;
  grpc::ClientContext context;
  SetDeadline(&context, absl::Seconds(10));
  const grpc::Status refused =
      cluster.Stub(survivor)->BatchValidateSessions(&context, batch, &answered);
  ASSERT_EQ(refused.error_code(), grpc::StatusCode::UNAVAILABLE)
      << refused.error_message();

  for (int id : others) ASSERT_TRUE(cluster.StartNode(id).ok());
  ASSERT_TRUE(cluster.WaitForWritable(absl::Seconds(30), survivor).ok());
  absl::SleepFor(absl::Milliseconds(2500));  // touch flushes (1 s) ran
  ValidateSessionResponse answer;
  ASSERT_TRUE(cluster
                  .Validate(survivor, created.token(),
                            sessiond::v1::LINEARIZABLE, &answer)
                  .ok());
  ASSERT_EQ(answer.outcome(), ValidateSessionResponse::VALID);
  EXPECT_EQ(answer.session().last_seen_at_ms(),
            created.session().last_seen_at_ms());
}

// Starting `id` on its data dir exits 4 (which systemd does not restart),
// saying it was removed.
void ExpectRefusesToStartAsRemoved(ClusterHarness& cluster, int id) {
  const int status = cluster.StartNodeExpectingExit(id, absl::Seconds(30));
  ASSERT_TRUE(WIFEXITED(status)) << cluster.LogTail(id);
  EXPECT_EQ(WEXITSTATUS(status), 4);
  EXPECT_TRUE(LogContains(cluster, id, "was removed from cluster"))
      << cluster.LogTail(id);
}

// A member removed while it runs must not go on answering for the cluster
// it left: its table no longer follows the log, so a session revoked after
// the removal would read VALID there for good. It rarely applies its own
// removal (the leader stops sending to it at once); its peers refuse its
// traffic as a removed member's, the leader confirms, and it stops, for
// good on that data dir.
TEST(ClusterTest, ARemovedMemberStopsAndStaysStopped) {
  ClusterHarness cluster(Options());
  ASSERT_TRUE(cluster.Start().ok());
  absl::StatusOr<int> leader = cluster.WaitForLeader(absl::Seconds(20));
  ASSERT_TRUE(leader.ok());
  const int removed = Others(cluster, *leader)[0];
  const std::string token = MustCreate(cluster, *leader, "removed").token();
  ASSERT_TRUE(cluster.WaitForConvergence(absl::Seconds(30)).ok());
  ASSERT_TRUE(RemoveMember(cluster, *leader, removed).ok());
  {
    auto stub = cluster.Stub(*leader);
    grpc::ClientContext context;
    SetDeadline(&context, absl::Seconds(10));
    sessiond::v1::RevokeSessionRequest request;
    request.set_token(token);
    sessiond::v1::RevokeSessionResponse response;
    ASSERT_TRUE(stub->RevokeSession(&context, request, &response).ok());
  }
  const int status = cluster.WaitForExit(removed, absl::Seconds(30));
  ASSERT_TRUE(WIFEXITED(status)) << status << "\n" << cluster.LogTail(removed);
  EXPECT_EQ(WEXITSTATUS(status), 0);
  EXPECT_TRUE(LogContains(cluster, removed, "node.removed"))
      << cluster.LogTail(removed);
  // Not back on its old data dir: it would serve the revoked session.
  ExpectRefusesToStartAsRemoved(cluster, removed);
  // The two left carry on; the way back is the documented one.
  ASSERT_TRUE(cluster.WaitForWritable(absl::Seconds(20), *leader).ok());
  ASSERT_TRUE(AddMember(cluster, *leader, removed).ok());
  cluster.WipeDataDir(removed);
  cluster.SetNodeFlags(removed, {"--initial_cluster_state", "existing"});
  ASSERT_TRUE(cluster.StartNode(removed).ok());
  ASSERT_TRUE(PromoteWhenCaughtUp(cluster, *leader, removed).ok());
  EXPECT_EQ(cluster.Validate(removed, token, sessiond::v1::LINEARIZABLE),
            ValidateSessionResponse::REVOKED);
  // Back on an empty data dir, a member again, it stays up. (The whole
  // short log reaches it in one apply batch; RemovalWatchTest replays the
  // removal in a batch of its own.)
  absl::SleepFor(absl::Seconds(3));  // three removal checks
  EXPECT_TRUE(cluster.running(removed)) << cluster.LogTail(removed);
  EXPECT_FALSE(LogContains(cluster, removed, "node.removed"));
}

// TransferLeadership(0) through a follower whose leader just died: the
// next leader starts the transfer, and the call answers once leadership
// has moved away from it, not as soon as any leader but the dead one is
// known.
TEST(ClusterTest, TransferToAnyAnswersOnceLeadershipLeftTheNodeThatStartedIt) {
  ClusterHarness cluster(Options());
  ASSERT_TRUE(cluster.Start().ok());
  absl::StatusOr<int> leader = cluster.WaitForLeader(absl::Seconds(20));
  ASSERT_TRUE(leader.ok());
  const int via = Others(cluster, *leader)[0];
  MustCreate(cluster, *leader, "before");
  cluster.Kill(*leader);
  // Its channel to the dead leader has broken; no election is over yet
  // (200 ms at the earliest).
  absl::SleepFor(absl::Milliseconds(100));
  auto admin = cluster.Admin(via);
  grpc::ClientContext context;
  SetDeadline(&context, absl::Seconds(20));
  sessiond::v1::TransferLeadershipRequest request;  // node_id 0: any
  sessiond::v1::TransferLeadershipResponse response;
  const grpc::Status s =
      admin->TransferLeadership(&context, request, &response);
  ASSERT_TRUE(s.ok()) << s.error_message();
  std::set<int> alive;
  for (int id : Others(cluster, *leader)) alive.insert(id);
  absl::StatusOr<int> now = cluster.WaitForLeader(absl::Seconds(20), alive);
  ASSERT_TRUE(now.ok());
  // Whoever the election chose handed over to the other one; the answer
  // names where leadership went.
  EXPECT_EQ(response.leader(), static_cast<uint64_t>(*now));
  absl::StatusOr<sessiond::v1::MemberStatus> status =
      cluster.MemberStatusOf(*now);
  ASSERT_TRUE(status.ok());
  EXPECT_EQ(response.term(), status->term());
}

// Removing the leader: the call answers OK, the leader steps down, learns
// its removal from the next leader and stops; the two left carry on.
TEST(ClusterTest, RemovingTheLeaderAnswersAndStopsIt) {
  ClusterHarness cluster(Options());
  ASSERT_TRUE(cluster.Start().ok());
  absl::StatusOr<int> leader = cluster.WaitForLeader(absl::Seconds(20));
  ASSERT_TRUE(leader.ok());
  const std::string token = MustCreate(cluster, *leader, "kept").token();
  const grpc::Status removed = RemoveMember(cluster, *leader, *leader);
  EXPECT_TRUE(removed.ok()) << removed.error_message();
  const int status = cluster.WaitForExit(*leader, absl::Seconds(30));
  ASSERT_TRUE(WIFEXITED(status)) << status << "\n" << cluster.LogTail(*leader);
  EXPECT_EQ(WEXITSTATUS(status), 0);
  std::set<int> others;
  for (int id : Others(cluster, *leader)) others.insert(id);
  absl::StatusOr<int> next = cluster.WaitForLeader(absl::Seconds(20), others);
  ASSERT_TRUE(next.ok());
  ASSERT_TRUE(cluster.WaitForWritable(absl::Seconds(20), *next).ok());
  EXPECT_EQ(cluster.Validate(*next, token, sessiond::v1::LINEARIZABLE),
            ValidateSessionResponse::VALID);
}

// With one voter of three down, removing a live one (or the leader) would
// leave two voters of which one answers: a cluster that commits nothing,
// not even the AddMember that would undo it. The leader refuses; removing
// the dead one goes through.
TEST(ClusterTest, ARemovalThatWouldLeaveNoQuorumIsRefused) {
  ClusterHarness cluster(Options());
  ASSERT_TRUE(cluster.Start().ok());
  absl::StatusOr<int> leader = cluster.WaitForLeader(absl::Seconds(20));
  ASSERT_TRUE(leader.ok());
  const int down = Others(cluster, *leader)[0];
  const int live = Others(cluster, *leader)[1];
  cluster.Kill(down);
  ASSERT_TRUE(WaitUntilUnreachable(cluster, *leader, down));
  for (int id : {live, *leader}) {
    const grpc::Status refused = RemoveMember(cluster, live, id);
    EXPECT_EQ(refused.error_code(), grpc::StatusCode::FAILED_PRECONDITION)
        << id << ": " << refused.error_message();
    EXPECT_TRUE(absl::StrContains(
        refused.error_message(),
        absl::StrCat("short of their quorum of 2 (unreachable: ", down, ")")))
        << refused.error_message();
  }
  absl::StatusOr<sessiond::v1::ClusterStatusResponse> status =
      cluster.ClusterStatus(*leader);
  ASSERT_TRUE(status.ok()) << status.status();
  int voters = 0;
  for (const auto& m : status->members()) voters += m.voter() ? 1 : 0;
  EXPECT_EQ(voters, 3) << status->DebugString();
  const std::string token = MustCreate(cluster, *leader, "still").token();
  const grpc::Status removed = RemoveMember(cluster, live, down);
  ASSERT_TRUE(removed.ok()) << removed.error_message();
  EXPECT_EQ(cluster.Validate(live, token, sessiond::v1::LINEARIZABLE),
            ValidateSessionResponse::VALID);
}

// A voter that is connected but takes no entries (paused here, as one
// whose disk stalled) counts for nothing in the quorum left after a
// removal: removing the third would leave two voters that commit nothing
// until it wakes, not even the AddMember that would undo it.
TEST(ClusterTest, ARemovalThatWouldLeaveAStalledVoterInTheQuorumIsRefused) {
  ClusterHarness cluster(Options());
  ASSERT_TRUE(cluster.Start().ok());
  absl::StatusOr<int> leader = cluster.WaitForLeader(absl::Seconds(20));
  ASSERT_TRUE(leader.ok());
  const int stalled = Others(cluster, *leader)[0];
  const int live = Others(cluster, *leader)[1];
  StallPastAnElectionTimeout(cluster, *leader, stalled);
  const grpc::Status refused = RemoveMember(cluster, *leader, live);
  cluster.Resume(stalled);
  EXPECT_EQ(refused.error_code(), grpc::StatusCode::FAILED_PRECONDITION)
      << refused.error_message();
  EXPECT_TRUE(absl::StrContains(
      refused.error_message(),
      absl::StrCat("would leave 2 voters of which 1 acknowledges the leader, "
                   "short of their quorum of 2 (not acknowledging: node ",
                   stalled, " has acknowledged no entry")))
      << refused.error_message();
  absl::StatusOr<sessiond::v1::ClusterStatusResponse> status =
      cluster.ClusterStatus(*leader);
  ASSERT_TRUE(status.ok()) << status.status();
  int voters = 0;
  for (const auto& m : status->members()) voters += m.voter() ? 1 : 0;
  EXPECT_EQ(voters, 3) << status->DebugString();
  ExpectStillLeading(cluster, *leader);
}

// Without TLS a member listens and dials on loopback only (unless told
// --insecure_plaintext_non_loopback): an AddMember naming an address off
// loopback would have the leader send Raft traffic there in plaintext.
// Found in review: only the node's own addresses were checked.
TEST(ClusterTest, APlaintextClusterAddsNoMemberOffLoopback) {
  ClusterHarness cluster(Options());
  ASSERT_TRUE(cluster.Start().ok());
  absl::StatusOr<int> leader = cluster.WaitForLeader(absl::Seconds(20));
  ASSERT_TRUE(leader.ok());
  sessiond::v1::AddMemberRequest request;
  request.set_node_id(4);
  request.set_peer_address("10.0.0.8:7001");
  const grpc::Status refused = CallAdmin(
      cluster, *leader, &sessiond::v1::AdminService::Stub::AddMember, request);
  EXPECT_EQ(refused.error_code(), grpc::StatusCode::INVALID_ARGUMENT)
      << refused.error_message();
  EXPECT_TRUE(absl::StrContains(refused.error_message(),
                                "10.0.0.8:7001 is not a loopback address"))
      << refused.error_message();
  absl::StatusOr<sessiond::v1::ClusterStatusResponse> status =
      cluster.ClusterStatus(*leader);
  ASSERT_TRUE(status.ok()) << status.status();
  EXPECT_EQ(status->members_size(), 3) << status->DebugString();
}

// A member removed while it was down comes back knowing nothing of it:
// its peers refuse its traffic as a removed member's, its leader confirms,
// and it stops.
TEST(ClusterTest, AMemberRemovedWhileDownStopsWhenItComesBack) {
  ClusterHarness cluster(Options());
  ASSERT_TRUE(cluster.Start().ok());
  absl::StatusOr<int> leader = cluster.WaitForLeader(absl::Seconds(20));
  ASSERT_TRUE(leader.ok());
  const int removed = Others(cluster, *leader)[0];
  cluster.Kill(removed);
  ASSERT_TRUE(RemoveMember(cluster, *leader, removed).ok());
  const int status = cluster.StartNodeExpectingExit(removed, absl::Seconds(30));
  ASSERT_TRUE(WIFEXITED(status)) << status << "\n" << cluster.LogTail(removed);
  EXPECT_EQ(WEXITSTATUS(status), 0);
  EXPECT_TRUE(LogContains(cluster, removed, "lists it as removed"))
      << cluster.LogTail(removed);
  ExpectRefusesToStartAsRemoved(cluster, removed);
  // Disaster recovery from its copy stays possible: --force_new_cluster
  // starts it (a cluster of its own), and clears the mark.
  cluster.SetNodeFlags(removed, {"--force_new_cluster", "1"});
  ASSERT_TRUE(cluster.StartNode(removed).ok());
  ASSERT_EQ(cluster.Terminate(removed), 0);
  cluster.SetNodeFlags(removed, {});
  ASSERT_TRUE(cluster.StartNode(removed).ok()) << cluster.LogTail(removed);
  cluster.Kill(removed);
  ASSERT_TRUE(cluster.WaitForWritable(absl::Seconds(20), *leader).ok());
}

// A node stopping past its grace answers the writes it forwarded to a
// leader that does not answer (paused here) at once, saying the outcome is
// unknown, rather than holding them, and its own exit, until their
// deadlines.
TEST(ClusterTest, AStoppingNodeAnswersWritesStuckAtAStalledLeader) {
  ClusterHarness cluster(Options({"--shutdown_grace_ms", "0"}));
  ASSERT_TRUE(cluster.Start().ok());
  absl::StatusOr<int> leader = cluster.WaitForLeader(absl::Seconds(20));
  ASSERT_TRUE(leader.ok());
  const int follower = Others(cluster, *leader)[0];
  auto stub = cluster.Stub(follower);
  ASSERT_TRUE(cluster.WaitForWritable(absl::Seconds(20), follower).ok());
  cluster.Pause(*leader);
  grpc::Status created;
  std::thread create([&] {
    grpc::ClientContext context;
    SetDeadline(&context, absl::Seconds(60));
    sessiond::v1::CreateSessionRequest request;
    request.set_user_id("stuck");
    sessiond::v1::CreateSessionResponse response;
    created = stub->CreateSession(&context, request, &response);
  });
  absl::SleepFor(absl::Milliseconds(100));  // forwarded by now
  const int status = cluster.Terminate(follower);
  create.join();
  cluster.Resume(*leader);
  ASSERT_TRUE(WIFEXITED(status)) << status << "\n" << cluster.LogTail(follower);
  EXPECT_EQ(WEXITSTATUS(status), 0);
  EXPECT_EQ(created.error_code(), grpc::StatusCode::UNAVAILABLE)
      << created.error_message();
  EXPECT_TRUE(absl::StartsWith(created.error_message(),
                               "shutting down before the write's outcome"))
      << created.error_message();
}

// The same for a LINEARIZABLE read no leader confirms: it asks again every
// 20 ms until its deadline. A node stopping with such a read left it to
// gRPC's shutdown, which cancelled it ("Cancelling all calls": no reason, no
// retry hint) with the barrier still holding its callback. Past the grace,
// such reads are now answered as writes are: UNAVAILABLE "shutting down"
// (SHUTTING_DOWN), and the node stops cleanly.
TEST(ClusterTest, AStoppingNodeAnswersReadsNoLeaderConfirms) {
  ClusterHarness cluster(
      Options({"--shutdown_grace_ms", "0", "--request_timeout_ms", "120000",
               "--stop_timeout_ms", "5000"}));
  ASSERT_TRUE(cluster.Start().ok());
  absl::StatusOr<int> leader = cluster.WaitForLeader(absl::Seconds(20));
  ASSERT_TRUE(leader.ok());
  const int follower = Others(cluster, *leader)[0];
  const std::string token = MustCreate(cluster, *leader, "reader").token();
  // LINEARIZABLE: the follower holds the session before the others pause
  // (a LOCAL read could come before it applied the create: seen in CI).
  ASSERT_EQ(cluster.Validate(follower, token, sessiond::v1::LINEARIZABLE),
            ValidateSessionResponse::VALID);
  // No quorum: no leader confirms anything (one paused would be replaced
  // within an election timeout).
  for (int id : Others(cluster, follower)) cluster.Pause(id);
  grpc::Status read;
  std::thread validate([&] {
    ValidateSessionResponse response;
    read = cluster.Validate(follower, token, sessiond::v1::LINEARIZABLE,
                            &response, absl::Seconds(120));
  });
  absl::SleepFor(absl::Milliseconds(300));  // waiting for a leader by now
  const int status = cluster.Terminate(follower);
  validate.join();
  for (int id : Others(cluster, follower)) cluster.Resume(id);
  ASSERT_TRUE(WIFEXITED(status)) << status << "\n" << cluster.LogTail(follower);
  EXPECT_EQ(WEXITSTATUS(status), 0) << cluster.LogTail(follower);
  EXPECT_EQ(read.error_code(), grpc::StatusCode::UNAVAILABLE)
      << read.error_message();
  EXPECT_TRUE(absl::StartsWith(read.error_message(), "shutting down"))
      << read.error_message();
}

// A node still starting (here a new cluster's first member, waiting for the
// others) did not take a stop: its signals are blocked for the main loop,
// which runs only once it serves, so a SIGTERM waited out the 10-minute
// wait for its peers (systemd killed it past TimeoutStopSec). It now stops
// at once, exit 0.
TEST(ClusterTest, ANodeStillStartingStopsWhenAsked) {
  ClusterHarness cluster(Options());
  ASSERT_EQ(cluster.StartNodeExpectingExit(1, absl::Seconds(1)), -1)
      << "a lone first member waits for the others\n"
      << cluster.LogTail(1);
  for (int i = 0; i < 400 && !LogContains(cluster, 1, "bootstrap.waiting");
       ++i) {
    absl::SleepFor(absl::Milliseconds(50));
  }
  ASSERT_TRUE(LogContains(cluster, 1, "bootstrap.waiting"))
      << cluster.LogTail(1);
  cluster.Signal(1, SIGTERM);
  const int status = cluster.WaitForExit(1, absl::Seconds(30));
  ASSERT_TRUE(WIFEXITED(status)) << status << "\n" << cluster.LogTail(1);
  EXPECT_EQ(WEXITSTATUS(status), 0);
  EXPECT_TRUE(LogContains(cluster, 1, "stopped while starting"))
      << cluster.LogTail(1);
}

// Two of three wiped at once: they refuse (a majority that forgot every
// session must not form), the survivor keeps every session, and the
// operator's disaster recovery (--force_new_cluster on the survivor, then
// AddMember for the others) brings the cluster back with all of them.
TEST(ClusterTest, WipedMajorityRefusesAndRecoversFromTheSurvivor) {
  ClusterHarness cluster(Options());
  ASSERT_TRUE(cluster.Start().ok());
  std::vector<std::string> tokens;
  for (int i = 0; i < 100; ++i) {
    tokens.push_back(MustCreate(cluster, 1 + i % 3, "precious").token());
  }
  ASSERT_TRUE(cluster.WaitForConvergence(absl::Seconds(30)).ok());
  const int survivor = 1;
  for (int id : {2, 3}) {
    cluster.Kill(id);
    cluster.WipeDataDir(id);
  }
  for (int id : {2, 3}) {
    const int status = cluster.StartNodeExpectingExit(id, absl::Seconds(30));
    ASSERT_TRUE(WIFEXITED(status)) << cluster.LogTail(id);
    EXPECT_EQ(WEXITSTATUS(status), 1);
    EXPECT_TRUE(LogContains(cluster, id, "refusing to bootstrap"))
        << cluster.LogTail(id);
    // With no leader, RemoveMember cannot commit: the advice says so.
    EXPECT_TRUE(LogContains(cluster, id, "--force_new_cluster=1 first"))
        << cluster.LogTail(id);
  }
  for (const std::string& token : tokens) {
    ValidateSessionResponse answer;
    ASSERT_TRUE(cluster
                    .Validate(survivor, token,
                              sessiond::v1::CONSISTENCY_DEFAULT, &answer)
                    .ok());
    EXPECT_EQ(answer.outcome(), ValidateSessionResponse::VALID);
  }

  ASSERT_EQ(cluster.Terminate(survivor), 0);
  // The second close of this process's database (its second restart in
  // place, below) hangs, as RocksDB 7.8's close can after a full disk. The
  // watchdog's 18 s leave the first restart in place, a leader's hand-over
  // included, time to finish on a loaded machine.
  cluster.SetNodeFlags(survivor, {"--force_new_cluster", "1", "--fault_point",
                                  "storage.close@2~600000", "--stop_timeout_ms",
                                  "15000", "--shutdown_grace_ms", "1000"});
  ASSERT_TRUE(cluster.StartNode(survivor).ok());
  cluster.SetNodeFlags(survivor, {});
  ASSERT_TRUE(cluster.WaitForWritable(absl::Seconds(20), survivor).ok());
  for (int id : {2, 3}) {
    ASSERT_TRUE(AddMember(cluster, survivor, id).ok());
    cluster.WipeDataDir(id);
    if (id == 2) {
      // Started with its first flags (--initial_cluster_state=new), it
      // bootstrapped the first life's membership: with node 3 started so
      // too, the two elected each other, a second cluster under this id.
      const int status = cluster.StartNodeExpectingExit(id, absl::Seconds(30));
      ASSERT_TRUE(WIFEXITED(status)) << cluster.LogTail(id);
      EXPECT_EQ(WEXITSTATUS(status), 4);
      EXPECT_TRUE(LogContains(cluster, id, "was rebuilt since"))
          << cluster.LogTail(id);
      cluster.WipeDataDir(id);
    }
    cluster.SetNodeFlags(id, {"--initial_cluster_state", "existing"});
    ASSERT_TRUE(cluster.StartNode(id).ok());
    ASSERT_TRUE(PromoteWhenCaughtUp(cluster, survivor, id).ok());
  }
  ASSERT_TRUE(cluster.WaitForConvergence(absl::Seconds(60)).ok());
  for (int id : cluster.ids()) {
    for (const std::string& token : tokens) {
      ValidateSessionResponse answer;
      ASSERT_TRUE(
          cluster.Validate(id, token, sessiond::v1::LOCAL, &answer).ok());
      EXPECT_EQ(answer.outcome(), ValidateSessionResponse::VALID);
    }
  }
  // A restart in place (SIGUSR2, as after a full disk) of the node still
  // running with the flag: its first start forced the cluster, so this one
  // does not, and it serves on. Re-applied, the flag was refused (members
  // were added since) and the node exited.
  cluster.Signal(survivor, SIGUSR2);
  bool restarted = false;
  for (int i = 0; i < 300 && !restarted && cluster.running(survivor); ++i) {
    absl::SleepFor(absl::Milliseconds(100));
    restarted = LogContains(cluster, survivor, "restart.done");
  }
  ASSERT_TRUE(restarted) << cluster.LogTail(survivor);
  ASSERT_TRUE(cluster.running(survivor)) << cluster.LogTail(survivor);
  ASSERT_TRUE(cluster.WaitForConvergence(absl::Seconds(60)).ok());
  // Once more, and this time the close hangs: the StopWatchdog executes
  // sessiond again (server/main.cc, ExecAgain), in the same process and with
  // the same command line, flag included. The new image's first start is
  // still a restart in place, so it does not force the cluster either.
  cluster.Signal(survivor, SIGUSR2);
  bool executed = false;
  for (int i = 0; i < 600 && !executed && cluster.running(survivor); ++i) {
    absl::SleepFor(absl::Milliseconds(100));
    executed = LogContains(cluster, survivor, "shutdown.stuck");
  }
  ASSERT_TRUE(executed) << cluster.LogTail(survivor);
  ASSERT_TRUE(cluster.WaitForConvergence(absl::Seconds(60)).ok())
      << cluster.LogTail(survivor);
  ASSERT_TRUE(cluster.running(survivor)) << cluster.LogTail(survivor);
  EXPECT_FALSE(LogContains(cluster, survivor, "--force_new_cluster is still"))
      << cluster.LogTail(survivor);
  // The flag left on (pasted into a unit file): a restart removed the
  // members added back and led alone, while they, a majority, went on as a
  // second cluster with the same id. It is refused, changing nothing.
  ASSERT_EQ(cluster.Terminate(survivor), 0);
  cluster.SetNodeFlags(survivor, {"--force_new_cluster", "1"});
  const int left_on =
      cluster.StartNodeExpectingExit(survivor, absl::Seconds(30));
  EXPECT_TRUE(WIFEXITED(left_on) && WEXITSTATUS(left_on) == 4)
      << left_on << "\n"
      << cluster.LogTail(survivor);
  EXPECT_TRUE(LogContains(cluster, survivor,
                          "--force_new_cluster is still set, and members"))
      << cluster.LogTail(survivor);
  cluster.SetNodeFlags(survivor, {});
  ASSERT_TRUE(cluster.StartNode(survivor).ok());
  ASSERT_TRUE(cluster.WaitForConvergence(absl::Seconds(60)).ok());
  // A full cluster again: losing the original survivor is survivable.
  cluster.Kill(survivor);
  ASSERT_TRUE(cluster.WaitForLeader(absl::Seconds(20), {2, 3}).ok());
  ASSERT_TRUE(cluster.WaitForWritable(absl::Seconds(20)).ok());
}

// A cluster forced anew from a member that lagged (its log ends before the
// others', in the same term) appends its own entries at indexes and a term
// the old leader's log also has, with other writes in them. Added back under
// its old id and started on its old data dir, the old leader passed Raft's
// consistency check at those entries (it compares terms) and kept writes
// the new cluster never had: two replicas with other sessions, for good.
// Forcing draws a new cluster epoch, and traffic of another epoch is
// refused both ways; the old member rejoins only wiped. With
// `crash_while_forcing`, the forcing start dies right after the forced log
// is on disk, and the node is started again without the flag: the new
// epoch was recorded before the log was touched.
void OldMemberMeetsTheClusterForcedWithoutIt(bool crash_while_forcing) {
  ClusterHarness cluster(Options());
  ASSERT_TRUE(cluster.Start().ok());
  absl::StatusOr<int> leader = cluster.WaitForLeader(absl::Seconds(20));
  ASSERT_TRUE(leader.ok()) << leader.status();
  const int old_leader = *leader;
  const int lagging = Others(cluster, old_leader)[0];
  const std::string before = MustCreate(cluster, old_leader, "before").token();
  ASSERT_TRUE(cluster.WaitForConvergence(absl::Seconds(30)).ok());
  cluster.Pause(lagging);
  for (int i = 0; i < 20; ++i) MustCreate(cluster, old_leader, "after");
  for (int id : cluster.ids()) cluster.Kill(id);

  if (crash_while_forcing) {
    cluster.SetNodeFlags(lagging, {"--force_new_cluster", "1", "--fault_point",
                                   "bootstrap.forced"});
    const int status =
        cluster.StartNodeExpectingExit(lagging, absl::Seconds(30));
    ASSERT_TRUE(WIFEXITED(status)) << cluster.LogTail(lagging);
    ASSERT_EQ(WEXITSTATUS(status), kFaultPointExitCode);
    cluster.SetNodeFlags(lagging, {});  // started again as it was before
  } else {
    cluster.SetNodeFlags(lagging, {"--force_new_cluster", "1"});
  }
  ASSERT_TRUE(cluster.StartNode(lagging).ok());
  cluster.SetNodeFlags(lagging, {});
  ASSERT_TRUE(cluster.WaitForWritable(absl::Seconds(20), lagging).ok());
  ASSERT_TRUE(AddMember(cluster, lagging, old_leader).ok());
  ASSERT_TRUE(cluster.StartNode(old_leader).ok());
  auto refused_at = [&](int id) {
    for (int i = 0; i < 300; ++i) {
      if (LogContains(cluster, id, "another life of cluster")) return true;
      absl::SleepFor(absl::Milliseconds(100));
    }
    return false;
  };
  EXPECT_TRUE(refused_at(lagging)) << cluster.LogTail(lagging);
  EXPECT_TRUE(refused_at(old_leader)) << cluster.LogTail(old_leader);
  // The rebuilt cluster's status does not take the old member's figures
  // for its member's.
  absl::StatusOr<sessiond::v1::ClusterStatusResponse> status =
      cluster.ClusterStatus(lagging);
  ASSERT_TRUE(status.ok()) << status.status();
  bool listed = false;
  for (const auto& m : status->members()) {
    if (m.node_id() != static_cast<uint64_t>(old_leader)) continue;
    listed = true;
    EXPECT_FALSE(m.reachable()) << m.ShortDebugString();
    EXPECT_TRUE(absl::StrContains(m.error(), "another life of cluster"))
        << m.ShortDebugString();
  }
  EXPECT_TRUE(listed) << status->ShortDebugString();

  // Wiped, it joins the rebuilt cluster.
  cluster.Kill(old_leader);
  cluster.WipeDataDir(old_leader);
  cluster.SetNodeFlags(old_leader, {"--initial_cluster_state", "existing"});
  ASSERT_TRUE(cluster.StartNode(old_leader).ok());
  ASSERT_TRUE(PromoteWhenCaughtUp(cluster, lagging, old_leader).ok());
  ASSERT_TRUE(cluster.WaitForConvergence(absl::Seconds(60)).ok());
  EXPECT_EQ(cluster.Validate(old_leader, before, sessiond::v1::LOCAL),
            ValidateSessionResponse::VALID);
}

TEST(ClusterTest, AnOldMemberDoesNotMeetTheClusterForcedWithoutIt) {
  OldMemberMeetsTheClusterForcedWithoutIt(/*crash_while_forcing=*/false);
}

TEST(ClusterTest, AnOldMemberDoesNotMeetAClusterForcedByAStartThatCrashed) {
  OldMemberMeetsTheClusterForcedWithoutIt(/*crash_while_forcing=*/true);
}

// A member started alone with --force_new_cluster while the rest of its
// cluster still runs (the operator restored a backup onto its address
// without stopping the old cluster first) lists the others as removed and
// leads itself. The running members, which still have a quorum, must not
// take its word for their removal: they asked the first peer naming
// another leader, it named itself, and both marked their data dirs removed
// and stopped. Now forcing also starts a new cluster epoch, and the two
// lives of the cluster refuse each other's traffic before any word of a
// removal is exchanged.
TEST(ClusterTest, AMemberForcedAloneDoesNotStopTheRunningCluster) {
  ClusterHarness cluster(Options());
  ASSERT_TRUE(cluster.Start().ok());
  absl::StatusOr<int> leader = cluster.WaitForLeader(absl::Seconds(20));
  ASSERT_TRUE(leader.ok());
  const int forced = Others(cluster, *leader)[0];
  ASSERT_EQ(cluster.Terminate(forced), 0);
  cluster.SetNodeFlags(forced, {"--force_new_cluster", "1"});
  ASSERT_TRUE(cluster.StartNode(forced).ok());
  // The removal check runs every second.
  EXPECT_EQ(cluster.WaitForExit(*leader, absl::Seconds(8)), -1)
      << cluster.LogTail(*leader);
  for (int id : Others(cluster, forced)) {
    EXPECT_TRUE(cluster.running(id)) << id << ": " << cluster.LogTail(id);
  }
  EXPECT_TRUE(LogContains(cluster, forced, "another life of cluster"))
      << cluster.LogTail(forced);
  EXPECT_TRUE(
      cluster.WaitForWritable(absl::Seconds(20), Others(cluster, forced)[0])
          .ok());
}

// Creates `count` one-hour sessions through `via` from 16 threads.
std::vector<std::string> CreateMany(ClusterHarness& cluster, int via, int count,
                                    const std::string& user) {
  std::vector<std::string> tokens(count);
  std::atomic<int> next{0};
  std::vector<std::thread> creators;
  for (int t = 0; t < 16; ++t) {
    creators.emplace_back([&] {
      auto stub = cluster.Stub(via);
      for (int i = next++; i < count; i = next++) {
        grpc::ClientContext context;
        SetDeadline(&context, absl::Seconds(10));
        sessiond::v1::CreateSessionRequest request;
        request.set_user_id(absl::StrCat(user, "-", i % 100));
        request.set_ttl_ms(3600 * 1000);
        sessiond::v1::CreateSessionResponse response;
        const grpc::Status s =
            stub->CreateSession(&context, request, &response);
        ASSERT_TRUE(s.ok()) << s.error_message();
        tokens[i] = response.token();
      }
    });
  }
  for (std::thread& t : creators) t.join();
  return tokens;
}

int EnvInt(const char* name, int fallback) {
  const char* value = std::getenv(name);
  return value != nullptr ? std::atoi(value) : fallback;
}

// A follower stopped while many writes happen and the leader compacts its
// log catches up through a snapshot when it comes back. Its first try
// crashes (a kill -9 at that point) between installing the snapshot in its
// Raft log and in its state: the next start applies the image again, and
// the replicas agree.
TEST(ClusterTest, StoppedFollowerCatchesUpThroughASnapshot) {
  ClusterHarness cluster(
      Options({"--log_compact_interval_ms", "500", "--log_compact_min_entries",
               "5000", "--snapshot_catch_up_entries", "1000"}));
  ASSERT_TRUE(cluster.Start().ok());
  absl::StatusOr<int> leader = cluster.WaitForLeader(absl::Seconds(20));
  ASSERT_TRUE(leader.ok());
  const int follower = Others(cluster, *leader)[0];
  cluster.Kill(follower);
  const int writes = EnvInt("SESSIOND_CATCHUP_WRITES", 20000);
  const std::vector<std::string> tokens =
      CreateMany(cluster, *leader, writes, "catchup");
  // The leader's log no longer holds what the follower lacks.
  absl::StatusOr<sessiond::v1::MemberStatus> lead =
      cluster.MemberStatusOf(*leader);
  for (int i = 0; i < 100 && lead.ok() && lead->first_index() < 1000; ++i) {
    absl::SleepFor(absl::Milliseconds(100));
    lead = cluster.MemberStatusOf(*leader);
  }
  ASSERT_TRUE(lead.ok());
  ASSERT_GT(lead->first_index(), 1000u) << "the leader never compacted";
  cluster.SetNodeFlags(follower,
                       {"--fault_point", "apply.before_snapshot_install"});
  const int crashed =
      cluster.StartNodeExpectingExit(follower, absl::Seconds(120));
  ASSERT_TRUE(WIFEXITED(crashed)) << cluster.LogTail(follower);
  ASSERT_EQ(WEXITSTATUS(crashed), kFaultPointExitCode)
      << cluster.LogTail(follower);
  cluster.SetNodeFlags(follower, {});
  ASSERT_TRUE(cluster.StartNode(follower).ok());
  EXPECT_TRUE(LogContains(cluster, follower, "storage.snapshot_recovered"))
      << cluster.LogTail(follower);
  const absl::StatusOr<std::string> converged =
      cluster.WaitForConvergence(absl::Seconds(120));
  ASSERT_TRUE(converged.ok()) << converged.status();
  absl::StatusOr<sessiond::v1::MemberStatus> caught_up =
      cluster.MemberStatusOf(follower);
  ASSERT_TRUE(caught_up.ok());
  EXPECT_GE(caught_up->live_sessions(), static_cast<uint64_t>(writes));
  for (size_t i = 0; i < tokens.size(); i += 997) {
    ValidateSessionResponse answer;
    ASSERT_TRUE(
        cluster.Validate(follower, tokens[i], sessiond::v1::LOCAL, &answer)
            .ok());
    EXPECT_EQ(answer.outcome(), ValidateSessionResponse::VALID);
  }
}

// The leader's own image of the log's snapshot, damaged on its disk (bytes
// in the middle of its records flipped, the header intact, so only the
// checksum can tell), is not sent to a follower that needs it: the sender
// finds it damaged as it reads it and the daemon has its compactor make a
// new one at once (PeerTransportOptions::on_corrupt_image ->
// LogCompactor::ReplaceCorruptImage), far fewer than
// --log_compact_min_entries after the damaged one. The follower catches up
// through the new image.
TEST(ClusterTest, AFollowerCatchesUpPastTheLeadersDamagedImage) {
  ClusterHarness cluster(
      Options({"--log_compact_interval_ms", "100", "--log_compact_min_entries",
               "500", "--snapshot_catch_up_entries", "20"}));
  ASSERT_TRUE(cluster.Start().ok());
  absl::StatusOr<int> leader = cluster.WaitForLeader(absl::Seconds(20));
  ASSERT_TRUE(leader.ok());
  const int follower = Others(cluster, *leader)[0];
  absl::StatusOr<sessiond::v1::MemberStatus> before =
      cluster.MemberStatusOf(follower);
  ASSERT_TRUE(before.ok()) << before.status();
  cluster.Kill(follower);

  // Writes until the leader compacted past what the follower holds; then no
  // more, so the entries applied since that snapshot stay far below
  // min_entries (an idle cluster adds a clock tick every 2 s): only the
  // damage can make the leader take another.
  std::vector<std::string> tokens;
  absl::StatusOr<sessiond::v1::MemberStatus> lead;
  for (int round = 0; round < 20; ++round) {
    const std::vector<std::string> more =
        CreateMany(cluster, *leader, 100, "damaged-image");
    tokens.insert(tokens.end(), more.begin(), more.end());
    absl::SleepFor(absl::Milliseconds(300));
    lead = cluster.MemberStatusOf(*leader);
    ASSERT_TRUE(lead.ok()) << lead.status();
    if (lead->snapshot_index() > 0 &&
        lead->first_index() > before->last_index() + 1) {
      break;
    }
  }
  ASSERT_GT(lead->first_index(), before->last_index() + 1)
      << "the leader never compacted past the follower";
  ASSERT_EQ(lead->role(), "leader");
  const uint64_t damaged_index = lead->snapshot_index();

  // The image the leader's log refers to: the one of its snapshot's index.
  const std::string snap_dir = absl::StrCat(cluster.data_dir(*leader), "/snap");
  std::string damaged;
  for (const auto& entry : std::filesystem::directory_iterator(snap_dir)) {
    const std::string name = entry.path().filename().string();
    if (absl::StartsWith(name, absl::StrCat(damaged_index, "-")) &&
        absl::EndsWith(name, ".snap")) {
      damaged = entry.path().string();
    }
  }
  ASSERT_FALSE(damaged.empty())
      << "no image of index " << damaged_index << " in " << snap_dir;
  const uintmax_t size = std::filesystem::file_size(damaged);
  ASSERT_GT(size, 4096u) << "an image too small to damage past its header";
  {
    std::fstream file(damaged, std::ios::in | std::ios::out | std::ios::binary);
    ASSERT_TRUE(file.is_open()) << damaged;
    const std::streamoff middle = static_cast<std::streamoff>(size / 2);
    std::string bytes(16, '\0');
    file.seekg(middle);
    file.read(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    ASSERT_TRUE(file.good());
    for (char& c : bytes) c = static_cast<char>(~c);
    file.seekp(middle);
    file.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    file.flush();
    ASSERT_TRUE(file.good());
  }

  ASSERT_TRUE(cluster.StartNode(follower).ok());
  const absl::StatusOr<std::string> converged =
      cluster.WaitForConvergence(absl::Seconds(40));
  ASSERT_TRUE(converged.ok()) << converged.status() << "\nleader:\n"
                              << cluster.LogTail(*leader) << "\nfollower:\n"
                              << cluster.LogTail(follower);
  EXPECT_TRUE(LogContains(cluster, *leader, "snapshot.image_corrupt"))
      << cluster.LogTail(*leader);
  // Caught up through an image newer than the damaged one: the leader's
  // replacement.
  absl::StatusOr<sessiond::v1::MemberStatus> caught_up =
      cluster.MemberStatusOf(follower);
  ASSERT_TRUE(caught_up.ok()) << caught_up.status();
  EXPECT_GE(caught_up->metrics().snapshots_installed(), 1u);
  EXPECT_GT(caught_up->snapshot_index(), damaged_index);
  lead = cluster.MemberStatusOf(*leader);
  ASSERT_TRUE(lead.ok()) << lead.status();
  EXPECT_GT(lead->snapshot_index(), damaged_index);
  EXPECT_LT(lead->applied_index() - damaged_index, 500u)
      << "the leader applied min_entries more: replaced for that alone";
  // The damaged image goes once the log records its replacement.
  bool removed = false;
  for (int i = 0; i < 50 && !removed; ++i) {
    removed = !std::filesystem::exists(damaged);
    if (!removed) absl::SleepFor(absl::Milliseconds(100));
  }
  EXPECT_TRUE(removed) << damaged;
  for (size_t i = 0; i < tokens.size(); i += 97) {
    ValidateSessionResponse answer;
    ASSERT_TRUE(
        cluster.Validate(follower, tokens[i], sessiond::v1::LOCAL, &answer)
            .ok());
    EXPECT_EQ(answer.outcome(), ValidateSessionResponse::VALID);
  }
}

// Histories of concurrent clients (create, revoke, LINEARIZABLE validate,
// any node) recorded while a nemesis kills, pauses and isolates nodes are
// checked for linearizability (tests/lincheck).
TEST(ClusterTest, HistoriesUnderFaultsAreLinearizable) {
  using lincheck::OpKind;
  using lincheck::Output;
  ClusterHarness cluster(Options());
  ASSERT_TRUE(cluster.Start().ok());
  lincheck::HistoryRecorder recorder;
  std::atomic<bool> stop{false};
  absl::Mutex tokens_mu;
  std::vector<std::string> tokens;  // created, answered
  std::vector<std::thread> clients;
  for (int c = 0; c < 6; ++c) {
    clients.emplace_back([&, c] {
      std::vector<std::unique_ptr<sessiond::v1::SessionService::Stub>> stubs;
      for (int id : cluster.ids()) stubs.push_back(cluster.Stub(id));
      std::mt19937_64 rng(100 + c);
      for (int op = 0; op < 100000 && !stop.load(); ++op) {
        auto* stub = stubs[rng() % stubs.size()].get();
        grpc::ClientContext context;
        SetDeadline(&context, absl::Seconds(1));
        std::string token;
        {
          absl::MutexLock lock(&tokens_mu);
          if (!tokens.empty()) token = tokens[rng() % tokens.size()];
        }
        const int kind = static_cast<int>(rng() % 10);
        if (token.empty() || kind < 3) {
          auto h = recorder.Invoke(c, OpKind::kCreate, "");
          sessiond::v1::CreateSessionRequest request;
          request.set_user_id(absl::StrCat("lin-", c));
          request.set_ttl_ms(3600 * 1000);
          sessiond::v1::CreateSessionResponse response;
          if (stub->CreateSession(&context, request, &response).ok()) {
            recorder.ReturnCreated(h, response.token());
            absl::MutexLock lock(&tokens_mu);
            tokens.push_back(response.token());
          } else {
            recorder.ReturnUnknown(h);
          }
        } else if (kind < 5) {
          auto h = recorder.Invoke(c, OpKind::kRevoke, token);
          sessiond::v1::RevokeSessionRequest request;
          request.set_token(token);
          sessiond::v1::RevokeSessionResponse response;
          const grpc::Status s =
              stub->RevokeSession(&context, request, &response);
          if (s.ok()) {
            recorder.Return(h, Output::kOk);
          } else if (s.error_code() == grpc::StatusCode::NOT_FOUND) {
            recorder.Return(h, Output::kNotFound);
          } else {
            recorder.ReturnUnknown(h);
          }
        } else {
          auto h = recorder.Invoke(c, OpKind::kValidate, token);
          sessiond::v1::ValidateSessionRequest request;
          request.set_token(token);
          request.set_consistency(sessiond::v1::LINEARIZABLE);
          ValidateSessionResponse response;
          if (!stub->ValidateSession(&context, request, &response).ok()) {
            recorder.ReturnUnknown(h);
            continue;
          }
          switch (response.outcome()) {
            case ValidateSessionResponse::VALID:
              recorder.Return(h, Output::kValid);
              break;
            case ValidateSessionResponse::REVOKED:
              recorder.Return(h, Output::kRevoked);
              break;
            case ValidateSessionResponse::UNKNOWN:
              recorder.Return(h, Output::kUnknownToken);
              break;
            default:
              recorder.ReturnUnknown(h);
          }
        }
      }
    });
  }
  // The nemesis: one fault at a time, each healed before the next.
  std::mt19937_64 rng(99);
  for (int round = 0; round < 6; ++round) {
    absl::SleepFor(absl::Milliseconds(700));
    absl::StatusOr<int> leader = cluster.WaitForLeader(absl::Seconds(20));
    ASSERT_TRUE(leader.ok());
    switch (round % 3) {
      case 0:
        cluster.Kill(*leader);
        absl::SleepFor(absl::Milliseconds(800));
        ASSERT_TRUE(cluster.StartNode(*leader).ok());
        break;
      case 1:
        cluster.Isolate(*leader);
        absl::SleepFor(absl::Milliseconds(1200));
        cluster.HealAll();
        break;
      case 2: {
        const int victim = 1 + static_cast<int>(rng() % 3);
        cluster.Pause(victim);
        absl::SleepFor(absl::Milliseconds(900));
        cluster.Resume(victim);
        break;
      }
    }
  }
  absl::SleepFor(absl::Milliseconds(700));
  stop.store(true);
  for (std::thread& t : clients) t.join();
  const std::vector<lincheck::Operation> history = recorder.Take();
  const lincheck::CheckResult result = lincheck::CheckSessions(history);
  EXPECT_EQ(result.verdict, lincheck::Verdict::kLinearizable)
      << result.explanation;
  EXPECT_GT(result.operations, 200u);
  std::printf("checked %zu operations on %zu sessions: %s\n", result.operations,
              result.partitions,
              std::string(lincheck::ToString(result.verdict)).c_str());
}

// A one-hour JWT session created through node `id`.
// `token`, when given: the JWT made.
grpc::Status CreateJwt(ClusterHarness& cluster, int id,
                       std::string* token = nullptr) {
  sessiond::v1::CreateSessionRequest request;
  request.set_user_id("jwt");
  request.set_ttl_ms(3600 * 1000);
  request.set_token_format(sessiond::v1::TOKEN_FORMAT_JWT);
  sessiond::v1::CreateSessionResponse created;
  grpc::ClientContext context;
  SetDeadline(&context, absl::Seconds(10));
  const grpc::Status s =
      cluster.Stub(id)->CreateSession(&context, request, &created);
  if (token != nullptr) *token = created.token();
  return s;
}

// A JWT's iat claim (seconds), or -1 when it has none.
int64_t IssuedAtOf(const std::string& jwt) {
  const std::vector<std::string> parts = absl::StrSplit(jwt, '.');
  std::string payload;
  if (parts.size() != 3 || !absl::WebSafeBase64Unescape(parts[1], &payload)) {
    return -1;
  }
  const size_t at = payload.find("\"iat\":");
  int64_t iat = -1;
  if (at == std::string::npos ||
      !absl::SimpleAtoi(
          payload.substr(at + 6, payload.find_first_of(",}", at) - at - 6),
          &iat)) {
    return -1;
  }
  return iat;
}

// Per-node wall clocks under libfaketime (wall clock only: the steady clock
// is untouched), each stepped at run time by rewriting one file per node.
class SteppableClocks {
 public:
  static constexpr char kLibrary[] =
      "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1";
  static bool Available() { return std::ifstream(kLibrary).good(); }

  // Sets every node of `options` (ids 1..3) at the real time.
  void Apply(ClusterOptions* options) {
    // sessiond linked with jemalloc hangs under libfaketime: the same daemon
    // on glibc's malloc (server/CMakeLists.txt).
    options->binary = SESSIOND_FAKETIME_BINARY;
    for (int id = 1; id <= 3; ++id) {
      Set(id, "+0");
      options->env[id] = {absl::StrCat("LD_PRELOAD=", kLibrary),
                          absl::StrCat("FAKETIME_TIMESTAMP_FILE=", File(id)),
                          "FAKETIME_DONT_FAKE_MONOTONIC=1",
                          "FAKETIME_CACHE_DURATION=1"};
    }
  }
  // Node `id`'s wall clock from now on: the real one plus `offset` ("+30d").
  void Set(int id, const std::string& offset) {
    const std::string tmp = File(id) + ".tmp";
    std::ofstream(tmp, std::ios::trunc) << offset << "\n";
    std::filesystem::rename(tmp, File(id));
  }

 private:
  std::string File(int id) const {
    return absl::StrCat(dir_.path(), "/node", id, ".faketime");
  }
  TempDir dir_;
};

// Starts `cluster` with one key-encryption key on every node, so each signs
// JWTs, and waits (bounded) until the first leader has made the signing key.
void StartSigningCluster(ClusterHarness& cluster) {
  const std::string kek = absl::StrCat(cluster.root(), "/kek");
  std::ofstream(kek) << std::string(64, 'c') << "\n";
  ASSERT_EQ(chmod(kek.c_str(), 0600), 0);
  for (int id : cluster.ids()) cluster.SetNodeFlags(id, {"--kek_file", kek});
  ASSERT_TRUE(cluster.Start().ok());
  absl::StatusOr<int> leader = cluster.WaitForLeader(absl::Seconds(20));
  ASSERT_TRUE(leader.ok());
  grpc::Status signed_at_start = CreateJwt(cluster, *leader);
  for (int i = 0; i < 300 && !signed_at_start.ok(); ++i) {
    absl::SleepFor(absl::Milliseconds(100));
    signed_at_start = CreateJwt(cluster, *leader);
  }
  ASSERT_TRUE(signed_at_start.ok()) << signed_at_start.error_message();
}

// Wall-clock steps on real processes: the leader's clock jumps 30 days
// forward, then a follower's 1 day back, under a validate load of 3,000
// one-hour sessions. Expiry follows cluster time, so nothing expires early,
// nothing is removed, new sessions get their normal lifetime, and the skew
// is reported.
TEST(ClusterTest, WallClockStepsDoNotExpireSessions) {
  if (!SteppableClocks::Available()) {
    GTEST_SKIP() << "libfaketime is not installed (Debian: libfaketime)";
  }
  ClusterOptions options = Options();
  SteppableClocks clocks;
  clocks.Apply(&options);
  const auto set_clock = [&](int id, const std::string& offset) {
    clocks.Set(id, offset);
  };
  ClusterHarness cluster(options);
  ASSERT_NO_FATAL_FAILURE(StartSigningCluster(cluster));
  absl::StatusOr<int> leader = cluster.WaitForLeader(absl::Seconds(20));
  ASSERT_TRUE(leader.ok());
  const auto create_jwt = [&](int id) { return CreateJwt(cluster, id); };
  constexpr int kSessions = 3000;
  const std::vector<std::string> tokens =
      CreateMany(cluster, *leader, kSessions, "clock");
  // A validate load over every node for the whole test: no answer but
  // VALID is allowed.
  std::atomic<bool> stop{false};
  std::atomic<int> not_valid{0};
  std::atomic<int> validated{0};
  std::vector<std::thread> validators;
  for (int t = 0; t < 3; ++t) {
    validators.emplace_back([&, t] {
      std::vector<std::unique_ptr<sessiond::v1::SessionService::Stub>> stubs;
      for (int id : cluster.ids()) stubs.push_back(cluster.Stub(id));
      std::mt19937_64 rng(t);
      for (int i = 0; i < 1000000 && !stop.load(); ++i) {
        grpc::ClientContext context;
        SetDeadline(&context, absl::Seconds(5));
        sessiond::v1::ValidateSessionRequest request;
        request.set_token(tokens[rng() % tokens.size()]);
        ValidateSessionResponse answer;
        const grpc::Status s = stubs[rng() % stubs.size()]->ValidateSession(
            &context, request, &answer);
        if (s.ok() && answer.outcome() != ValidateSessionResponse::VALID) {
          not_valid.fetch_add(1);
        }
        validated.fetch_add(1);
      }
    });
  }
  const int follower = Others(cluster, *leader)[0];
  set_clock(*leader, "+30d");
  absl::SleepFor(absl::Seconds(4));  // sweeps and touches run meanwhile
  set_clock(follower, "-1d");
  absl::SleepFor(absl::Seconds(4));

  // New sessions get their normal lifetime, from cluster time.
  const sessiond::v1::CreateSessionResponse fresh =
      MustCreate(cluster, follower, "after-steps");
  EXPECT_EQ(fresh.session().expires_at_ms() - fresh.session().created_at_ms(),
            3600 * 1000);
  const int64_t real_ms = absl::ToUnixMillis(absl::Now());
  EXPECT_LT(std::llabs(fresh.session().created_at_ms() - real_ms), 60 * 1000)
      << "cluster time followed a stepped wall clock";
  // A JWT carries its signer's wall clock: the node a day behind would sign
  // tokens born expired for every verifier, while the store calls them
  // VALID, and the node 30 days ahead tokens that outlive their sessions by
  // 30 days. Each refuses, and says why; the node whose clock is right
  // signs.
  const grpc::Status behind = create_jwt(follower);
  EXPECT_EQ(behind.error_code(), grpc::StatusCode::UNAVAILABLE)
      << behind.error_message();
  EXPECT_TRUE(absl::StrContains(behind.error_message(),
                                "wall clock is behind the other members'"))
      << behind.error_message();
  const grpc::Status ahead = create_jwt(*leader);
  EXPECT_EQ(ahead.error_code(), grpc::StatusCode::UNAVAILABLE)
      << ahead.error_message();
  EXPECT_TRUE(absl::StrContains(ahead.error_message(),
                                "wall clock is ahead of the other members'"))
      << ahead.error_message();
  for (int id : Others(cluster, follower)) {
    if (id == *leader) continue;
    const grpc::Status right = create_jwt(id);
    EXPECT_TRUE(right.ok()) << id << ": " << right.error_message();
  }
  stop.store(true);
  for (std::thread& t : validators) t.join();
  EXPECT_GT(validated.load(), 100);
  EXPECT_EQ(not_valid.load(), 0);
  // None removed, every one still valid on every node.
  ASSERT_TRUE(cluster.WaitForConvergence(absl::Seconds(60)).ok());
  for (int id : cluster.ids()) {
    absl::StatusOr<sessiond::v1::MemberStatus> m = cluster.MemberStatusOf(id);
    ASSERT_TRUE(m.ok());
    EXPECT_GE(m->live_sessions(), static_cast<uint64_t>(kSessions));
    for (int i = 0; i < kSessions; i += 31) {
      ValidateSessionResponse answer;
      ASSERT_TRUE(
          cluster.Validate(id, tokens[i], sessiond::v1::LOCAL, &answer).ok());
      EXPECT_EQ(answer.outcome(), ValidateSessionResponse::VALID);
    }
  }
  // The steps are reported: status and log.
  const int64_t day_ms = 24ll * 3600 * 1000;
  absl::StatusOr<sessiond::v1::MemberStatus> stepped =
      cluster.MemberStatusOf(*leader);
  ASSERT_TRUE(stepped.ok());
  EXPECT_GT(stepped->clock_skew_ms(), 29 * day_ms);
  absl::StatusOr<sessiond::v1::MemberStatus> back =
      cluster.MemberStatusOf(follower);
  ASSERT_TRUE(back.ok());
  EXPECT_LT(back->clock_skew_ms(), -day_ms / 2);
  EXPECT_TRUE(LogContains(cluster, *leader, "clock skew"));
}

// A node whose wall clock runs fast, by less than it takes to refuse to
// sign, stamped its own time as a JWT's iat: a token born in the future
// for every verifier on a right clock, which one that checks iat with no
// leeway refused until its clock got there (found in review). It now signs
// the members' time.
TEST(ClusterTest, ANodeWithAFastClockSignsNoJwtBornInTheFuture) {
  if (!SteppableClocks::Available()) {
    GTEST_SKIP() << "libfaketime is not installed (Debian: libfaketime)";
  }
  ClusterOptions options = Options();
  SteppableClocks clocks;
  clocks.Apply(&options);
  ClusterHarness cluster(options);
  ASSERT_NO_FATAL_FAILURE(StartSigningCluster(cluster));
  absl::StatusOr<int> leader = cluster.WaitForLeader(absl::Seconds(20));
  ASSERT_TRUE(leader.ok());
  const int fast = Others(cluster, *leader)[0];
  clocks.Set(fast, "+20");  // seconds
  // Its stamps reach the members, and their judgement of its clock comes
  // back with theirs.
  absl::SleepFor(absl::Seconds(3));
  std::string token;
  // A forwarded create failed once in CI (at d418644, on a loaded machine)
  // within half a second, with the forwarding RPC's DEADLINE_EXCEEDED: as
  // if its wall-clock deadline had been read with two offsets. Cause not
  // found: not seen in 16 runs here; libfaketime gives a few reads the old
  // offset, but only within milliseconds of a step, 3 s before this call.
  // Not what this test is about: retried, and the node's log shown.
  grpc::Status s = CreateJwt(cluster, fast, &token);
  for (int i = 0; i < 10 && s.error_code() == grpc::StatusCode::UNAVAILABLE;
       ++i) {
    absl::SleepFor(absl::Milliseconds(200));
    s = CreateJwt(cluster, fast, &token);
  }
  ASSERT_TRUE(s.ok()) << s.error_message() << "\n" << cluster.LogTail(fast);
  const int64_t iat = IssuedAtOf(token);
  ASSERT_GE(iat, 0) << token;
  const int64_t now_s = absl::ToUnixSeconds(absl::Now());
  EXPECT_LE(iat, now_s + 2) << "born " << iat - now_s << " s in the future";
  EXPECT_GE(iat, now_s - 5);
}

// After a whole-cluster outage cluster time runs behind every wall clock by
// the outage's length (it stood still meanwhile), so a node whose clock is
// behind the others' by less than that looked right against it, and signed
// JWTs born expired for every verifier. Here the outage is three hours: the
// clocks of nodes 1 and 2 move three hours on while every node is down, and
// node 3's does not: it runs three hours behind them, and cluster time with
// it. Only the other members' clocks tell; node 3 refuses to sign.
TEST(ClusterTest, AfterAnOutageANodeBehindTheOthersSignsNoJwt) {
  if (!SteppableClocks::Available()) {
    GTEST_SKIP() << "libfaketime is not installed (Debian: libfaketime)";
  }
  ClusterOptions options = Options();
  SteppableClocks clocks;
  clocks.Apply(&options);
  ClusterHarness cluster(options);
  ASSERT_NO_FATAL_FAILURE(StartSigningCluster(cluster));
  for (int id : cluster.ids()) cluster.Kill(id);
  clocks.Set(1, "+3h");
  clocks.Set(2, "+3h");
  for (int id : cluster.ids()) ASSERT_TRUE(cluster.StartNode(id).ok());
  ASSERT_TRUE(cluster.WaitForLeader(absl::Seconds(20)).ok());

  constexpr int64_t kHourMs = 3600 * 1000;
  std::optional<int64_t> off_median_ms;
  for (int i = 0; i < 200 && !off_median_ms.has_value(); ++i) {
    absl::StatusOr<sessiond::v1::MemberStatus> m = cluster.MemberStatusOf(3);
    ASSERT_TRUE(m.ok()) << m.status();
    if (m->has_wall_clock_off_median_ms()) {
      off_median_ms = m->wall_clock_off_median_ms();
      EXPECT_LT(std::llabs(m->clock_skew_ms()), 60 * 1000)
          << "node 3's clock looks right against cluster time";
    } else {
      absl::SleepFor(absl::Milliseconds(100));
    }
  }
  ASSERT_TRUE(off_median_ms.has_value())
      << "node 3 never learned how far its clock is from the others'";
  EXPECT_LT(*off_median_ms, -3 * kHourMs + 60 * 1000);
  EXPECT_GT(*off_median_ms, -3 * kHourMs - 60 * 1000);

  const grpc::Status behind = CreateJwt(cluster, 3);
  EXPECT_EQ(behind.error_code(), grpc::StatusCode::UNAVAILABLE)
      << behind.error_message();
  EXPECT_TRUE(absl::StrContains(behind.error_message(),
                                "wall clock is behind the other members' by"))
      << behind.error_message();
  for (int id : {1, 2}) {
    const grpc::Status right = CreateJwt(cluster, id);
    EXPECT_TRUE(right.ok()) << id << ": " << right.error_message();
  }
}

// Timers follow the steady clock. Abseil's CondVar (20220623) waits until an
// absolute wall-clock time, so a node whose clock stepped back by a day in
// the middle of a wait slept a day: its touch flushes, Raft ticks, retries
// and reconnects stopped, and sessions kept alive by validations through it
// idled out everywhere. libfaketime cannot step the kernel's clock, but its
// forward offset puts every wall-clock deadline a node computes a day past
// the kernel's clock: the same day-long wait, on every wait.
TEST(ClusterTest, TouchesThroughANodeWhoseClockJumpsKeepSessionsAlive) {
  if (!SteppableClocks::Available()) {
    GTEST_SKIP() << "libfaketime is not installed (Debian: libfaketime)";
  }
  ClusterOptions options = Options({"--touch_flush_interval_ms=200"});
  SteppableClocks clocks;
  clocks.Apply(&options);
  ClusterHarness cluster(options);
  ASSERT_TRUE(cluster.Start().ok());
  absl::StatusOr<int> leader = cluster.WaitForLeader(absl::Seconds(20));
  ASSERT_TRUE(leader.ok());
  const std::string token =
      MustCreate(cluster, *leader, "idle", absl::Milliseconds(3000)).token();
  ASSERT_TRUE(cluster.WaitForConvergence(absl::Seconds(30)).ok());
  const int follower = Others(cluster, *leader)[0];
  clocks.Set(follower, "+1d");

  // Three idle timeouts of validations with touch, all through that node.
  int valid = 0;
  int answered = 0;
  for (int i = 0; i < 30; ++i) {
    absl::SleepFor(absl::Milliseconds(300));
    const ValidateSessionResponse::Outcome outcome =
        ValidateWithTouch(cluster, follower, token);
    if (outcome == ValidateSessionResponse::OUTCOME_UNSPECIFIED) continue;
    ++answered;
    valid += outcome == ValidateSessionResponse::VALID;
  }
  EXPECT_GT(answered, 20);
  EXPECT_EQ(valid, answered);
  EXPECT_EQ(cluster.Validate(*leader, token, sessiond::v1::LINEARIZABLE),
            ValidateSessionResponse::VALID);
}

}  // namespace
}  // namespace sessiond::testing
