// Copyright sessiond authors. Licensed under the Apache License 2.0.
//
// Admission control (server/write_admission.h) on a real 3-node cluster:
// while the leader's writes cannot commit (both followers stopped), creates
// beyond the floor are refused at once with RESOURCE_EXHAUSTED (OVERLOADED,
// with a RetryInfo) instead of queueing; a revocation is still taken;
// validations are answered; and once the followers return, creates are
// admitted again. (The leader steps down meanwhile, CheckQuorum, so the
// writes it had taken may be answered "leadership changed": outcome
// unknown, never refused.)
#include <grpcpp/client_context.h>

#include <algorithm>
#include <atomic>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "client/grpc_status.h"
#include "gtest/gtest.h"
#include "tests/integration/cluster_harness.h"

namespace sessiond::testing {
namespace {

using sessiond::v1::CreateSessionRequest;
using sessiond::v1::CreateSessionResponse;
using sessiond::v1::ValidateSessionResponse;

CreateSessionRequest CreateFor(const std::string& user) {
  CreateSessionRequest request;
  request.set_user_id(user);
  request.set_ttl_ms(3'600'000);
  return request;
}

// CreateFor with 12 KB of attributes.
CreateSessionRequest LargeCreateFor(const std::string& user) {
  CreateSessionRequest request = CreateFor(user);
  for (const char* key : {"a", "b", "c"}) {
    (*request.mutable_attributes())[key] = std::string(4000, 'x');
  }
  return request;
}

grpc::Status Create(ClusterHarness& cluster, int id,
                    const CreateSessionRequest& request,
                    CreateSessionResponse* response, absl::Duration deadline) {
  auto stub = cluster.Stub(id);
  grpc::ClientContext context;
  SetDeadline(&context, deadline);
  return stub->CreateSession(&context, request, response);
}

grpc::Status Create(ClusterHarness& cluster, int id, const std::string& user,
                    CreateSessionResponse* response, absl::Duration deadline) {
  return Create(cluster, id, CreateFor(user), response, deadline);
}

// Calls sent without waiting for their answers (gRPC's callback API): the
// answers are collected by code. gRPC destroys a call's callback (and with
// it the call's context) on its own thread after the callback returned, so
// each call's state holds the stub (and so the channel) and is counted
// until released: the destructor waits for every release, never leaving
// gRPC a context whose channel is gone.
class Outstanding {
 public:
  explicit Outstanding(std::unique_ptr<sessiond::v1::SessionService::Stub> stub)
      : stub_(std::move(stub)) {}
  ~Outstanding() {
    WaitForAll(absl::Seconds(60));
    absl::MutexLock lock(&mu_);
    mu_.AwaitWithTimeout(
        absl::Condition(
            +[](int* unreleased) { return *unreleased == 0; }, &unreleased_),
        absl::Seconds(60));
  }

  void Create(const std::string& user, absl::Duration deadline) {
    Create(CreateFor(user), deadline);
  }

  void Create(const CreateSessionRequest& request, absl::Duration deadline) {
    auto call = Start<CreateSessionRequest, CreateSessionResponse>(deadline);
    call->request = request;
    stub_->async()->CreateSession(
        &call->context, &call->request, &call->response,
        [this, call](grpc::Status s) { Finished("create", s); });
  }

  void Revoke(const std::string& token, absl::Duration deadline) {
    auto call = Start<sessiond::v1::RevokeSessionRequest,
                      sessiond::v1::RevokeSessionResponse>(deadline);
    call->request.set_token(token);
    stub_->async()->RevokeSession(
        &call->context, &call->request, &call->response,
        [this, call](grpc::Status s) { Finished("revoke", s); });
  }

  void Touch(const std::string& token, absl::Duration deadline) {
    auto call = Start<sessiond::v1::TouchSessionRequest,
                      sessiond::v1::TouchSessionResponse>(deadline);
    call->request.set_token(token);
    stub_->async()->TouchSession(
        &call->context, &call->request, &call->response,
        [this, call](grpc::Status s) { Finished("touch", s); });
  }

  void BatchValidate(const sessiond::v1::BatchValidateSessionsRequest& request,
                     absl::Duration deadline) {
    auto call = Start<sessiond::v1::BatchValidateSessionsRequest,
                      sessiond::v1::BatchValidateSessionsResponse>(deadline);
    call->request = request;
    stub_->async()->BatchValidateSessions(
        &call->context, &call->request, &call->response,
        [this, call](grpc::Status s) { Finished("batch", s); });
  }

  // Answers by kind ("create", "create shed": refused at admission,
  // "revoke") and code once every call was answered
  // (or `timeout` passed).
  std::map<std::string, std::map<grpc::StatusCode, int>> WaitForAll(
      absl::Duration timeout) {
    absl::MutexLock lock(&mu_);
    mu_.AwaitWithTimeout(
        absl::Condition(
            +[](int* pending) { return *pending == 0; }, &pending_),
        timeout);
    EXPECT_EQ(pending_, 0) << "calls still unanswered";
    return codes_;
  }

 private:
  template <typename Request, typename Response>
  struct Call {
    std::shared_ptr<sessiond::v1::SessionService::Stub> stub;
    grpc::ClientContext context;
    Request request;
    Response response;
  };

  template <typename Request, typename Response>
  std::shared_ptr<Call<Request, Response>> Start(absl::Duration deadline) {
    {
      absl::MutexLock lock(&mu_);
      ++pending_;
      ++unreleased_;
    }
    std::shared_ptr<Call<Request, Response>> call(
        new Call<Request, Response>, [this](Call<Request, Response>* done) {
          delete done;
          absl::MutexLock lock(&mu_);
          --unreleased_;
        });
    call->stub = stub_;
    SetDeadline(&call->context, deadline);
    return call;
  }

  void Finished(const std::string& kind, const grpc::Status& s) {
    // A create refused at admission changed nothing: counted apart, so
    // that "create" holds only what was admitted.
    const bool shed =
        kind == "create" &&
        s.error_code() == grpc::StatusCode::RESOURCE_EXHAUSTED &&
        client::ErrorReason(client::FromGrpcStatus(s)) == "OVERLOADED";
    absl::MutexLock lock(&mu_);
    ++codes_[shed ? "create shed" : kind][s.error_code()];
    --pending_;
  }

  std::shared_ptr<sessiond::v1::SessionService::Stub> stub_;
  absl::Mutex mu_;
  int pending_ ABSL_GUARDED_BY(mu_) = 0;
  int unreleased_ ABSL_GUARDED_BY(mu_) = 0;
  std::map<std::string, std::map<grpc::StatusCode, int>> codes_
      ABSL_GUARDED_BY(mu_);
};

TEST(OverloadTest, AStuckWritePathShedsCreatesButTakesRevocations) {
  ClusterOptions options;
  options.binary = SESSIOND_BINARY;
  // A rate limit with room for the creates that are admitted, but not for
  // the shed ones as well: a shed create gives its token back.
  options.flags = {"--write_admission_target_ms=50",
                   "--create_rate_per_identity=1",
                   "--create_burst_per_identity=125"};
  ClusterHarness cluster(options);
  ASSERT_TRUE(cluster.Start().ok());
  absl::StatusOr<int> leader = cluster.WaitForLeader(absl::Seconds(30));
  ASSERT_TRUE(leader.ok()) << leader.status();
  CreateSessionResponse kept;
  CreateSessionResponse doomed;
  ASSERT_TRUE(Create(cluster, *leader, "kept", &kept, absl::Seconds(10)).ok());
  ASSERT_TRUE(
      Create(cluster, *leader, "doomed", &doomed, absl::Seconds(10)).ok());

  std::vector<int> followers;
  for (int id : cluster.ids()) {
    if (id != *leader) followers.push_back(id);
  }
  for (int id : followers) cluster.Pause(id);

  // 100 creates wait for a quorum: more than the admission floor (64). On a
  // loaded machine the limit may already be at the floor when they arrive
  // (an interval with writes in flight and none finished is over the
  // target), so up to 36 of them may be shed at once.
  Outstanding waiting(cluster.Stub(*leader));
  for (int i = 0; i < 100; ++i) {
    waiting.Create("waiting-" + std::to_string(i), absl::Seconds(30));
  }
  // Nothing commits for an interval: the next creates are shed at once.
  grpc::Status shed;
  for (int attempt = 0; attempt < 100; ++attempt) {
    absl::SleepFor(absl::Milliseconds(100));
    CreateSessionResponse response;
    shed = Create(cluster, *leader, "late", &response, absl::Seconds(2));
    if (shed.error_code() == grpc::StatusCode::RESOURCE_EXHAUSTED) break;
  }
  ASSERT_EQ(shed.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED)
      << shed.error_message() << "\n"
      << cluster.LogTail(*leader);
  EXPECT_TRUE(shed.error_message().find("this node is overloaded") !=
              std::string::npos)
      << shed.error_message();
  const absl::Status read = client::FromGrpcStatus(shed);
  EXPECT_EQ(client::ErrorReason(read), "OVERLOADED");
  EXPECT_TRUE(client::RetryDelay(read).has_value());
  // A caller retrying through the overload is told it is overloaded, never
  // rate limited for the creates it was refused: 102 creates were taken
  // and these 40 more are over the burst of 125 unless each shed one gave
  // its token back.
  for (int i = 0; i < 40; ++i) {
    CreateSessionResponse response;
    const grpc::Status again =
        Create(cluster, *leader, "late", &response, absl::Seconds(2));
    ASSERT_EQ(again.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
    ASSERT_EQ(client::ErrorReason(client::FromGrpcStatus(again)), "OVERLOADED")
        << i << ": " << again.error_message();
  }

  // A revocation is never shed: it waits with the rest.
  waiting.Revoke(doomed.token(), absl::Seconds(30));
  // Validations are answered all along (the default falls back to the
  // node's own table when no leader confirms in time).
  EXPECT_EQ(cluster.Validate(*leader, kept.token()),
            ValidateSessionResponse::VALID);

  for (int id : followers) cluster.Resume(id);
  auto codes = waiting.WaitForAll(absl::Seconds(60));
  // Nothing admitted was refused afterwards: each create committed or, if
  // its leader stepped down first, has an unknown outcome. At least the
  // floor's worth was admitted.
  int admitted = 0;
  for (const auto& [code, count] : codes["create"]) {
    EXPECT_TRUE(code == grpc::StatusCode::OK ||
                code == grpc::StatusCode::UNAVAILABLE ||
                code == grpc::StatusCode::DEADLINE_EXCEEDED)
        << count << " creates ended with code " << code;
    admitted += count;
  }
  EXPECT_GE(admitted, 64);
  EXPECT_EQ(codes["revoke"].count(grpc::StatusCode::RESOURCE_EXHAUSTED), 0u);
  if (codes["revoke"].count(grpc::StatusCode::OK) == 0) {
    Outstanding again(cluster.Stub(*leader));  // retried: idempotent
    again.Revoke(doomed.token(), absl::Seconds(30));
    EXPECT_EQ(again.WaitForAll(absl::Seconds(60))["revoke"].count(
                  grpc::StatusCode::OK),
              1u);
  }
  EXPECT_EQ(cluster.Validate(*leader, doomed.token()),
            ValidateSessionResponse::REVOKED);

  // Once writes commit again, creates are admitted again (the limit grows
  // back interval by interval).
  grpc::Status again;
  for (int attempt = 0; attempt < 100; ++attempt) {
    CreateSessionResponse response;
    const absl::StatusOr<int> now_leader =
        cluster.WaitForLeader(absl::Seconds(30));
    ASSERT_TRUE(now_leader.ok());
    again = Create(cluster, *now_leader, "after", &response, absl::Seconds(5));
    if (again.ok()) break;
    absl::SleepFor(absl::Milliseconds(100));
  }
  EXPECT_TRUE(again.ok()) << again.error_message();
}

// A create the leader refuses before proposing it (too many writes wait for
// a quorum: --max_pending_writes) created nothing, so it gives back what the
// caller's create rate limit charged it, as a create shed at admission
// does. It did not: a caller retrying through the refusals ran out of its
// burst and was told RATE_LIMITED for creates it never made.
TEST(OverloadTest, ACreateTheLeaderRefusesIsNotChargedToItsCaller) {
  ClusterOptions options;
  options.binary = SESSIOND_BINARY;
  // Admission off, so the driver's own bound refuses. A burst with room
  // for the creates that wait (at most the 8 the driver holds) and two
  // more. An election timeout of 2 s (100 ticks of the harness's 20 ms)
  // keeps the leader leading (CheckQuorum) while the test runs with its
  // followers stopped.
  options.flags = {"--write_admission_target_ms=0",
                   "--max_pending_writes=8",
                   "--create_rate_per_identity=1",
                   "--create_burst_per_identity=10",
                   "--election_ticks",
                   "100"};
  ClusterHarness cluster(options);
  ASSERT_TRUE(cluster.Start().ok());
  absl::StatusOr<int> leader = cluster.WaitForLeader(absl::Seconds(60));
  ASSERT_TRUE(leader.ok()) << leader.status();
  for (int id : cluster.ids()) {
    if (id != *leader) cluster.Pause(id);
  }

  Outstanding waiting(cluster.Stub(*leader));
  for (int i = 0; i < 8; ++i) {
    waiting.Create("waiting-" + std::to_string(i), absl::Seconds(30));
  }
  int too_many = 0;
  for (int i = 0; i < 12; ++i) {
    CreateSessionResponse response;
    const grpc::Status refused =
        Create(cluster, *leader, "late", &response, absl::Milliseconds(500));
    const absl::Status read = client::FromGrpcStatus(refused);
    // Refused by the driver, or (had the leader stepped down) never
    // proposed: either way nothing was created, and nothing charged.
    ASSERT_NE(client::ErrorReason(read), "RATE_LIMITED")
        << i << ": " << refused.error_message();
    if (refused.error_code() == grpc::StatusCode::RESOURCE_EXHAUSTED &&
        refused.error_message().find("too many writes in flight") !=
            std::string::npos) {
      ++too_many;
    }
  }
  EXPECT_GE(too_many, 3) << cluster.LogTail(*leader);
  for (int id : cluster.ids()) {
    if (id != *leader) cluster.Resume(id);
  }
  waiting.WaitForAll(absl::Seconds(60));
}

// The other voters stopped: `node` has no leader and no quorum.
void IsolateByPausing(ClusterHarness& cluster, int node) {
  for (int id : cluster.ids()) {
    if (id != node) cluster.Pause(id);
  }
}

void ResumeAll(ClusterHarness& cluster, int node) {
  for (int id : cluster.ids()) {
    if (id != node) cluster.Resume(id);
  }
}

// A kind of write a cut-off node is sent: `hold` sends one without waiting
// (`tag` tells them apart), `one_more` sends one with a 500 ms deadline and
// returns its answer.
struct HeldWrites {
  std::function<void(Outstanding& outstanding, const std::string& tag)> hold;
  std::function<grpc::Status(const std::string& tag)> one_more;
};

// Cuts `node` off (its peers paused), sends it `held` writes without
// waiting, and expects one more to be refused at once: RESOURCE_EXHAUSTED,
// never proposed, with a retry hint.
void ExpectACutOffNodeRefusesWritesPast(ClusterHarness& cluster, int node,
                                        const HeldWrites& writes, int held) {
  IsolateByPausing(cluster, node);
  Outstanding outstanding(cluster.Stub(node));
  for (int i = 0; i < held; ++i) {
    writes.hold(outstanding, absl::StrCat("held-", i));
  }
  // Bounded: the held writes are sent asynchronously, so the first tries
  // may come before all of them arrived (and wait out their deadline); and
  // those forwarded to the stopped leader are answered once its connection
  // breaks (keepalive), freeing their places: each try adds an eighth more.
  grpc::Status refused;
  for (int attempt = 0; attempt < 30; ++attempt) {
    for (int i = 0; i < std::max(1, held / 8); ++i) {
      writes.hold(outstanding, absl::StrCat("held-more-", attempt, "-", i));
    }
    refused = writes.one_more("one-more");
    if (refused.error_code() == grpc::StatusCode::RESOURCE_EXHAUSTED) break;
    absl::SleepFor(absl::Milliseconds(100));
  }
  ASSERT_EQ(refused.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED)
      << refused.error_message() << "\n"
      << cluster.LogTail(node);
  EXPECT_NE(refused.error_message().find("held by this node"),
            std::string::npos)
      << refused.error_message();
  const absl::Status read = client::FromGrpcStatus(refused);
  EXPECT_EQ(client::ErrorReason(read), "TOO_MANY_PENDING_WRITES");
  const std::optional<google::rpc::ErrorInfo> info = client::ErrorInfoOf(read);
  ASSERT_TRUE(info.has_value());
  EXPECT_EQ(info->metadata().count("not_proposed"), 1u)
      << "a refusal before anything was sent must say a retry is safe";
  EXPECT_TRUE(client::RetryDelay(read).has_value());

  ResumeAll(cluster, node);
  outstanding.WaitForAll(absl::Seconds(60));
}

// A 3-node cluster with `flags`, and the id of one follower.
struct ClusterAndFollower {
  std::unique_ptr<ClusterHarness> cluster;
  int follower = 0;
};
ClusterAndFollower StartWithAFollower(const std::vector<std::string>& flags) {
  ClusterOptions options;
  options.binary = SESSIOND_BINARY;
  options.flags = flags;
  ClusterAndFollower started;
  started.cluster = std::make_unique<ClusterHarness>(options);
  EXPECT_TRUE(started.cluster->Start().ok());
  absl::StatusOr<int> leader =
      started.cluster->WaitForLeader(absl::Seconds(60));
  EXPECT_TRUE(leader.ok()) << leader.status();
  if (!leader.ok()) return started;
  const std::vector<int> ids = started.cluster->ids();
  started.follower = *leader == ids.front() ? ids.back() : ids.front();
  return started;
}

// Creates like `request`, held on a cut-off follower of a cluster with
// `flags`.
void ExpectACutOffNodeRefusesCreatesPast(const std::vector<std::string>& flags,
                                         const CreateSessionRequest& request,
                                         int held) {
  ClusterAndFollower started = StartWithAFollower(flags);
  ASSERT_NE(started.follower, 0);
  ClusterHarness& cluster = *started.cluster;
  const int node = started.follower;
  HeldWrites creates;
  creates.hold = [&](Outstanding& outstanding, const std::string& tag) {
    CreateSessionRequest one = request;
    one.set_user_id(tag);
    outstanding.Create(one, absl::Seconds(30));
  };
  creates.one_more = [&](const std::string& tag) {
    CreateSessionRequest one = request;
    one.set_user_id(tag);
    CreateSessionResponse response;
    return Create(cluster, node, one, &response, absl::Milliseconds(500));
  };
  ExpectACutOffNodeRefusesWritesPast(cluster, node, creates, held);
}

// A node with no leader holds every write sent to it until its deadline
// (--request_timeout_ms at most). Only the leader's driver counted writes
// (--max_pending_writes), so a follower held any number, each with its
// request. Now it holds as many as a leader would and refuses one more at
// once: never proposed, safe to retry.
TEST(OverloadTest, ANodeWithoutALeaderHoldsABoundedNumberOfWrites) {
  ExpectACutOffNodeRefusesCreatesPast(
      {"--write_admission_target_ms=0", "--max_pending_writes=8",
       "--request_timeout_ms=30000"},
      CreateFor("held"), 8);
}

// The same for a client's touches (TouchSession): they were exempt, as the
// node's own touch batches are (whose refusal would leave the leader
// expiring users this node saw active), so a cut-off node held any number.
TEST(OverloadTest, ANodeWithoutALeaderHoldsABoundedNumberOfTouches) {
  ClusterAndFollower started = StartWithAFollower(
      {"--write_admission_target_ms=0", "--max_pending_writes=8",
       "--request_timeout_ms=30000"});
  ASSERT_NE(started.follower, 0);
  ClusterHarness& cluster = *started.cluster;
  CreateSessionResponse created;
  ASSERT_TRUE(
      Create(cluster, started.follower, "touched", &created, absl::Seconds(10))
          .ok());
  HeldWrites touches;
  touches.hold = [&](Outstanding& outstanding, const std::string&) {
    outstanding.Touch(created.token(), absl::Seconds(30));
  };
  touches.one_more = [&](const std::string&) {
    auto stub = cluster.Stub(started.follower);
    grpc::ClientContext context;
    SetDeadline(&context, absl::Milliseconds(500));
    sessiond::v1::TouchSessionRequest request;
    request.set_token(created.token());
    sessiond::v1::TouchSessionResponse response;
    return stub->TouchSession(&context, request, &response);
  };
  ExpectACutOffNodeRefusesWritesPast(cluster, started.follower, touches, 8);
}

// The same node holds at most --max_pending_write_mib of writes, however
// few: 80 creates of 12 KB each are held (under 1 MiB), a few more are not.
TEST(OverloadTest, ANodeWithoutALeaderHoldsABoundedSizeOfWrites) {
  ExpectACutOffNodeRefusesCreatesPast(
      {"--write_admission_target_ms=0", "--max_pending_write_mib=1",
       "--request_timeout_ms=30000"},
      LargeCreateFor("held"), 80);
}

// One write larger than --max_pending_write_mib (a CreateSessions of 100
// creates of 12 KB) with nothing else held: it passes both byte bounds,
// the follower's it was sent to and the leader's driver. Refused, it was
// refused at every retry ("retry shortly"), forever.
TEST(OverloadTest, AWriteLargerThanTheByteBoundPassesAlone) {
  ClusterOptions options;
  options.binary = SESSIOND_BINARY;
  options.flags = {"--max_pending_write_mib=1"};
  ClusterHarness cluster(options);
  ASSERT_TRUE(cluster.Start().ok());
  absl::StatusOr<int> leader = cluster.WaitForLeader(absl::Seconds(60));
  ASSERT_TRUE(leader.ok()) << leader.status();
  const int follower = *leader == cluster.ids().front() ? cluster.ids().back()
                                                        : cluster.ids().front();
  sessiond::v1::CreateSessionsRequest batch;
  for (int i = 0; i < 100; ++i) {
    *batch.add_requests() = LargeCreateFor(absl::StrCat("large-", i));
  }
  ASSERT_GT(batch.ByteSizeLong(), 1u << 20);
  for (const int node : {follower, *leader}) {
    auto stub = cluster.Stub(node);
    grpc::ClientContext context;
    SetDeadline(&context, absl::Seconds(30));
    sessiond::v1::CreateSessionsResponse response;
    const grpc::Status status =
        stub->CreateSessions(&context, batch, &response);
    ASSERT_TRUE(status.ok())
        << "node " << node << ": " << status.error_message() << "\n"
        << cluster.LogTail(node);
    EXPECT_EQ(response.responses_size(), 100);
  }
}

// A LINEARIZABLE BatchValidateSessions waits at the read barrier while no
// leader confirms reads. A large one (over 256 tokens) was counted against
// the 64 a node holds only once past the barrier, so during an election any
// number waited there, each holding its request. Now the 65th is refused at
// once.
TEST(OverloadTest, LargeBatchesWaitingForALeaderAreBounded) {
  ClusterOptions options;
  options.binary = SESSIOND_BINARY;
  options.flags = {"--request_timeout_ms=30000"};
  ClusterHarness cluster(options);
  ASSERT_TRUE(cluster.Start().ok());
  absl::StatusOr<int> leader = cluster.WaitForLeader(absl::Seconds(60));
  ASSERT_TRUE(leader.ok()) << leader.status();
  CreateSessionResponse created;
  ASSERT_TRUE(
      Create(cluster, *leader, "batched", &created, absl::Seconds(10)).ok());
  const int node = *leader == cluster.ids().front() ? cluster.ids().back()
                                                    : cluster.ids().front();
  // Seen on `node` before its peers stop (a LOCAL read waits for nothing).
  for (int i = 0; i < 100; ++i) {
    if (cluster.Validate(node, created.token()) ==
        ValidateSessionResponse::VALID) {
      break;
    }
    absl::SleepFor(absl::Milliseconds(50));
  }
  IsolateByPausing(cluster, node);

  sessiond::v1::BatchValidateSessionsRequest batch;
  batch.set_consistency(sessiond::v1::LINEARIZABLE);
  for (int i = 0; i < 257; ++i) {
    batch.add_requests()->set_token(created.token());
  }
  Outstanding waiting(cluster.Stub(node));
  for (int i = 0; i < 64; ++i) waiting.BatchValidate(batch, absl::Seconds(30));
  // As above: each try adds one more, in case one was answered meanwhile.
  grpc::Status refused;
  for (int attempt = 0; attempt < 30; ++attempt) {
    waiting.BatchValidate(batch, absl::Seconds(30));
    auto stub = cluster.Stub(node);
    grpc::ClientContext context;
    SetDeadline(&context, absl::Milliseconds(500));
    sessiond::v1::BatchValidateSessionsResponse response;
    refused = stub->BatchValidateSessions(&context, batch, &response);
    if (refused.error_code() == grpc::StatusCode::RESOURCE_EXHAUSTED) break;
    absl::SleepFor(absl::Milliseconds(100));
  }
  ASSERT_EQ(refused.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED)
      << refused.error_message() << "\n"
      << cluster.LogTail(node);
  EXPECT_EQ(client::ErrorReason(client::FromGrpcStatus(refused)),
            "TOO_MANY_BATCHES")
      << refused.error_message();

  ResumeAll(cluster, node);
  // Every held one is answered (WaitForAll checks), once a leader confirms
  // its read or at its deadline.
  waiting.WaitForAll(absl::Seconds(60));
}

}  // namespace
}  // namespace sessiond::testing
