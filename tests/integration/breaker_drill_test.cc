// Copyright sessiond authors. Licensed under the Apache License 2.0.
//
// The expiry breaker's drills (issue 7, part 2), on a real 3-node cluster on
// loopback: a client bug that creates thousands of sessions with a tiny
// lifetime opens the breaker before any of them expires, nobody stops
// validating, a leader's death keeps it open, and only a confirmed resume
// lets them expire; a normal churn never opens it.
#include <grpcpp/grpcpp.h>

#include <atomic>
#include <cstdio>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "sessiond/v1/admin.grpc.pb.h"
#include "sessiond/v1/session.grpc.pb.h"
#include "tests/integration/cluster_harness.h"

namespace sessiond::testing {
namespace {

using sessiond::v1::ValidateSessionResponse;

constexpr int kBatch = 1'000;

// Fast windows so a test sees several; everything else as in production.
ClusterOptions Options(int64_t window_ms) {
  ClusterOptions options;
  options.binary = SESSIOND_BINARY;
  options.flags = {"--expiry_breaker_window_ms", absl::StrCat(window_ms),
                   "--sweep_interval_ms", "500"};
  return options;
}

// Creates `n` sessions of lifetime `ttl_ms` (and idle timeout
// `idle_timeout_ms`, 0: none) through node `via`, `kBatch` per call; returns
// their tokens.
std::vector<std::string> CreateMany(ClusterHarness& cluster, int via, int n,
                                    int64_t ttl_ms, const std::string& tag,
                                    int64_t idle_timeout_ms = 0) {
  std::vector<std::string> tokens;
  auto stub = cluster.Stub(via);
  for (int first = 0; first < n; first += kBatch) {
    sessiond::v1::CreateSessionsRequest request;
    for (int i = first; i < n && i < first + kBatch; ++i) {
      auto* one = request.add_requests();
      one->set_user_id(absl::StrCat(tag, "-", i % 500));
      one->set_ttl_ms(ttl_ms);
      one->set_idle_timeout_ms(idle_timeout_ms);
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

// How many of `tokens` validate with each outcome through node `via`
// (linearizable, retried while a leader is elected), indexed by outcome.
std::vector<int> Outcomes(ClusterHarness& cluster, int via,
                          const std::vector<std::string>& tokens) {
  std::vector<int> counts(8, 0);
  auto stub = cluster.Stub(via);
  for (size_t first = 0; first < tokens.size(); first += 5'000) {
    sessiond::v1::BatchValidateSessionsRequest request;
    request.set_consistency(sessiond::v1::LINEARIZABLE);
    for (size_t i = first; i < tokens.size() && i < first + 5'000; ++i) {
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
    if (!s.ok()) return counts;
    for (const auto& answer : response.responses()) ++counts[answer.outcome()];
  }
  return counts;
}

absl::StatusOr<sessiond::v1::GetExpiryBreakerResponse> Breaker(
    ClusterHarness& cluster, int via) {
  sessiond::v1::GetExpiryBreakerResponse response;
  grpc::ClientContext context;
  SetDeadline(&context, absl::Seconds(10));
  const grpc::Status s = cluster.Admin(via)->GetExpiryBreaker(
      &context, sessiond::v1::GetExpiryBreakerRequest(), &response);
  if (!s.ok()) return absl::UnavailableError(s.error_message());
  return response;
}

grpc::Status Resume(ClusterHarness& cluster, int via, uint64_t id,
                    uint64_t count,
                    sessiond::v1::ResumeExpiryResponse* response) {
  sessiond::v1::ResumeExpiryRequest request;
  request.set_breaker_id(id);
  request.set_confirm_sessions(count);
  grpc::ClientContext context;
  SetDeadline(&context, absl::Seconds(10));
  return cluster.Admin(via)->ResumeExpiry(&context, request, response);
}

std::string RunSessionctl(const std::string& endpoint,
                          const std::string& args) {
  char home[] = "/tmp/breaker-drill-home-XXXXXX";
  if (mkdtemp(home) == nullptr) return "";
  const std::string command = absl::StrCat(
      "env -i PATH=/usr/bin:/bin HOME=", home, " ", SESSIONCTL_BINARY,
      " --endpoints ", endpoint, " ", args, " 2>&1 </dev/null");
  std::string out;
  if (FILE* p = popen(command.c_str(), "r")) {
    char buf[4096];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
    pclose(p);
  }
  rmdir(home);
  return out;
}

int AnyOtherThan(const ClusterHarness& cluster, int id) {
  for (int other : cluster.running_ids()) {
    if (other != id) return other;
  }
  return id;
}

// Issue 7's drill: 20,000 one-hour sessions; a client bug creates 5,000
// sessions with a two-second lifetime (25% of the live sessions, against a
// 10% threshold): the breaker opens before any of them expires, and every
// one of the 25,000 keeps validating, past its deadline, through the death
// of the leader. A resume without confirmation, or with too small a count,
// changes nothing; a confirmed one lets the 5,000 expire as a normal sweep.
TEST(BreakerDrillTest, TinyLifetimesOpenItNobodyExpiresUntilAResume) {
  ClusterHarness cluster(Options(/*window_ms=*/5'000));
  ASSERT_TRUE(cluster.Start().ok());
  absl::StatusOr<int> leader = cluster.WaitForLeader(absl::Seconds(20));
  ASSERT_TRUE(leader.ok()) << leader.status();
  const std::vector<std::string> hour =
      CreateMany(cluster, *leader, 20'000, 3600 * 1000, "hour");
  ASSERT_EQ(hour.size(), 20'000u);
  // One full window first, so the leader knows how many short-lived
  // sessions it expects (none).
  absl::SleepFor(absl::Seconds(6));
  const std::vector<std::string> tiny =
      CreateMany(cluster, *leader, 5'000, 2'000, "buggy-client");
  ASSERT_EQ(tiny.size(), 5'000u);

  // The breaker opens (the leader saw them coming: the sweep looks 3 s
  // ahead) and every node applies it.
  sessiond::v1::ExpiryBreaker opened;
  const absl::Time deadline = absl::Now() + absl::Seconds(20);
  while (absl::Now() < deadline && !opened.open()) {
    absl::StatusOr<sessiond::v1::GetExpiryBreakerResponse> b =
        Breaker(cluster, *leader);
    if (b.ok()) opened = b->breaker();
    if (!opened.open()) absl::SleepFor(absl::Milliseconds(100));
  }
  ASSERT_TRUE(opened.open()) << cluster.LogTail(*leader, 40);
  EXPECT_EQ(opened.times_opened(), 1u);
  EXPECT_TRUE(opened.young_judged());
  EXPECT_GT(opened.unexpected_expiries(), opened.threshold());
  EXPECT_TRUE(absl::StrContains(opened.reason(), "born and expired"))
      << opened.reason();
  EXPECT_TRUE(
      absl::StrContains(cluster.LogTail(*leader, 200), "breaker.opening"));

  // Past every tiny session's deadline: all 25,000 still VALID, on every
  // node.
  absl::SleepFor(absl::Seconds(3));
  for (int via : cluster.running_ids()) {
    EXPECT_EQ(Outcomes(cluster, via, tiny)[ValidateSessionResponse::VALID],
              5'000)
        << "node " << via;
  }
  EXPECT_EQ(Outcomes(cluster, *leader, hour)[ValidateSessionResponse::VALID],
            20'000);
  absl::StatusOr<sessiond::v1::ClusterStatusResponse> status =
      cluster.ClusterStatus(*leader);
  ASSERT_TRUE(status.ok()) << status.status();
  EXPECT_TRUE(status->expiry_breaker().open());
  for (const auto& member : status->members()) {
    EXPECT_TRUE(member.expiry_breaker().open()) << member.node_id();
  }
  const std::string ctl =
      RunSessionctl(cluster.client_address(*leader), "breaker status");
  EXPECT_TRUE(absl::StrContains(ctl, "expiry breaker OPEN")) << ctl;
  EXPECT_TRUE(absl::StrContains(ctl, "5000 sessions are held back")) << ctl;

  // The leader dies: the breaker is replicated, the new leader keeps it
  // open (those sessions are still unexpected) and sweeps nothing.
  cluster.Kill(*leader);
  absl::StatusOr<int> next = cluster.WaitForLeader(absl::Seconds(20));
  ASSERT_TRUE(next.ok()) << next.status();
  ASSERT_TRUE(cluster.WaitForWritable(absl::Seconds(20), *next).ok());
  absl::SleepFor(absl::Seconds(2));  // a few sweeps of the new leader
  absl::StatusOr<sessiond::v1::GetExpiryBreakerResponse> after =
      Breaker(cluster, *next);
  ASSERT_TRUE(after.ok()) << after.status();
  EXPECT_TRUE(after->breaker().open());
  EXPECT_EQ(after->breaker().id(), opened.id());
  EXPECT_EQ(after->held_sessions(), 5'000u);
  EXPECT_EQ(Outcomes(cluster, *next, tiny)[ValidateSessionResponse::VALID],
            5'000);

  // Refusals change nothing: no confirmation, another id, too few.
  const int other = AnyOtherThan(cluster, *next);
  sessiond::v1::ResumeExpiryResponse resumed;
  grpc::Status s = Resume(cluster, other, 0, 0, &resumed);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_TRUE(absl::StrContains(s.error_message(), "confirm_sessions 5000"))
      << s.error_message();
  s = Resume(cluster, other, opened.id() + 1, 5'000, &resumed);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  s = Resume(cluster, other, opened.id(), 4'999, &resumed);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_TRUE(absl::StrContains(s.error_message(), "5000 sessions would"))
      << s.error_message();
  // A sessionctl resume nobody confirms (stdin closed) changes nothing.
  const std::string unconfirmed =
      RunSessionctl(cluster.client_address(other), "breaker resume");
  EXPECT_TRUE(absl::StrContains(unconfirmed, "not confirmed")) << unconfirmed;
  after = Breaker(cluster, other);
  ASSERT_TRUE(after.ok()) << after.status();
  EXPECT_TRUE(after->breaker().open());
  EXPECT_EQ(Outcomes(cluster, other, tiny)[ValidateSessionResponse::VALID],
            5'000);

  // A confirmed resume, through a follower: they expire as a normal sweep,
  // the one-hour sessions stay, and the breaker does not open again.
  s = Resume(cluster, other, opened.id(), 5'000, &resumed);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_FALSE(resumed.breaker().open());
  EXPECT_EQ(resumed.breaker().closed_by(), "resumed");
  EXPECT_EQ(resumed.released_sessions(), 5'000u);
  std::vector<int> outcomes;
  const absl::Time swept_by = absl::Now() + absl::Seconds(30);
  while (absl::Now() < swept_by) {
    outcomes = Outcomes(cluster, *next, tiny);
    if (outcomes[ValidateSessionResponse::UNKNOWN] == 5'000) break;
    absl::SleepFor(absl::Milliseconds(250));
  }
  EXPECT_EQ(outcomes[ValidateSessionResponse::UNKNOWN], 5'000)
      << "expired " << outcomes[ValidateSessionResponse::EXPIRED] << ", valid "
      << outcomes[ValidateSessionResponse::VALID];
  EXPECT_EQ(Outcomes(cluster, *next, hour)[ValidateSessionResponse::VALID],
            20'000);
  after = Breaker(cluster, *next);
  ASSERT_TRUE(after.ok()) << after.status();
  EXPECT_FALSE(after->breaker().open());
  EXPECT_EQ(after->breaker().times_opened(), 1u);
}

// A normal churn: sessions expiring at their planned rate (short-lived ones
// at a steady rate, 400 per second, and a cohort of 5,000 20-second
// sessions created together, a quarter of the store, expiring together)
// never opens it.
TEST(BreakerDrillTest, NormalChurnNeverOpensIt) {
  ClusterHarness cluster(Options(/*window_ms=*/4'000));
  ASSERT_TRUE(cluster.Start().ok());
  absl::StatusOr<int> leader = cluster.WaitForLeader(absl::Seconds(20));
  ASSERT_TRUE(leader.ok()) << leader.status();
  const std::vector<std::string> hour =
      CreateMany(cluster, *leader, 15'000, 3600 * 1000, "hour");
  const std::vector<std::string> cohort =
      CreateMany(cluster, *leader, 5'000, 20'000, "cohort");
  ASSERT_EQ(hour.size() + cohort.size(), 20'000u);
  // The churn starts one window after the store is populated: each window
  // is judged against the previous one, so a short-lived workload that
  // appears within one window at more than 10% of the live sessions would
  // look like a bug (docs/OPERATIONS.md, "The expiry breaker"). Here it is
  // 8% (1,600 per window against 20,000).
  absl::SleepFor(absl::Seconds(5));
  // ~30 s of churn: 100 two-second sessions every 250 ms (bounded by count
  // and by time).
  std::vector<std::string> churn;
  const absl::Time end = absl::Now() + absl::Seconds(30);
  for (int round = 0; round < 120 && absl::Now() < end; ++round) {
    const absl::Time next_round = absl::Now() + absl::Milliseconds(250);
    for (std::string& token :
         CreateMany(cluster, *leader, 100, 2'000, "churn")) {
      churn.push_back(std::move(token));
    }
    absl::SleepFor(next_round - absl::Now());
  }
  absl::SleepFor(absl::Seconds(3));
  for (int via : cluster.running_ids()) {
    absl::StatusOr<sessiond::v1::GetExpiryBreakerResponse> b =
        Breaker(cluster, via);
    ASSERT_TRUE(b.ok()) << b.status();
    EXPECT_FALSE(b->breaker().open()) << b->breaker().reason();
    EXPECT_EQ(b->breaker().times_opened(), 0u) << b->breaker().reason();
  }
  // They did expire, as planned.
  const std::vector<int> cohort_outcomes = Outcomes(cluster, *leader, cohort);
  EXPECT_EQ(cohort_outcomes[ValidateSessionResponse::VALID], 0);
  const std::vector<int> churn_outcomes = Outcomes(cluster, *leader, churn);
  EXPECT_EQ(churn_outcomes[ValidateSessionResponse::VALID], 0);
  EXPECT_EQ(Outcomes(cluster, *leader, hour)[ValidateSessionResponse::VALID],
            15'000);
}

// A whole cluster down (a power cut: the apps too, so nobody touches a
// session), then one member back alone for longer than the sessions' idle
// timeout, then the others, one of which is elected. The member alone
// counted cluster time through the others' outage; its catch-up makes the
// new leader's clock jump, and the sessions that came due in the jump are
// judged as cluster time running ahead of real time: the breaker holds them
// (docs/OPERATIONS.md, "The expiry breaker"). Found in review: a new
// leader's first window started at its cluster time at its first sweep,
// usually after the catch-up applied, so all of them were "planned" and
// expired unjudged. (When the member alone is itself elected there is no
// jump, and they expire: a known gap, documented there.)
TEST(BreakerDrillTest, AColdStartWhereAnotherMemberLeadsOpensIt) {
  constexpr int kAlone = 1;
  ClusterOptions options = Options(/*window_ms=*/300'000);
  // Sweeps 3 s apart: the new leader's first sweep comes after the
  // catch-up has applied (elected and caught up within a second or two),
  // the case that expired everyone (sweeping before it, a window already
  // begun saw the jump).
  options.flags = {"--expiry_breaker_window_ms", "300000",
                   "--sweep_interval_ms", "3000"};
  ClusterHarness cluster(options);
  cluster.SetNodeFlags(kAlone, {"--election_ticks", "1000"});
  ASSERT_TRUE(cluster.Start().ok());
  absl::StatusOr<int> leader = cluster.WaitForLeader(absl::Seconds(20));
  ASSERT_TRUE(leader.ok()) << leader.status();
  // Long enough that the restarted members' own count, once a leader is
  // back, does not reach the sessions' deadlines before the member alone
  // hands its time over (a loaded machine took seconds for that): they come
  // due by the jump alone. And that real time since the jump has not yet
  // covered them when the breaker is resumed below (then they would be
  // planned anyway).
  const absl::Duration idle = absl::Seconds(40);
  const std::vector<std::string> tokens =
      CreateMany(cluster, *leader, 500, 3600 * 1000, "idle",
                 absl::ToInt64Milliseconds(idle));
  ASSERT_EQ(tokens.size(), 500u);
  // An idle leader's tick applied everywhere: the sessions were stamped
  // before the member's last applied time (a catch-up moves what was
  // stamped after it).
  absl::SleepFor(absl::Seconds(3));
  ASSERT_TRUE(cluster.WaitForConvergence(absl::Seconds(30)).ok());
  for (int id : cluster.ids()) cluster.Kill(id);

  ASSERT_TRUE(cluster.StartNode(kAlone).ok());
  absl::SleepFor(idle + absl::Seconds(5));
  // From the others' start until well after the breaker opened, their
  // own tables are asked about a sample of the sessions: none may
  // answer EXPIRED. Found in review: the breaker opened only at the sweep
  // after the catch-up applied, and reads answered EXPIRED until then (a
  // flash of logouts); it now opens ahead of the catch-up, in the log.
  std::atomic<bool> polling{true};
  std::atomic<int> expired_seen{0};
  std::vector<std::unique_ptr<sessiond::v1::SessionService::Stub>> stubs;
  // Not the member alone: it counted the outage, and the sessions idled
  // out there as its own reads judge them (its lone count is the jump).
  for (int id : cluster.ids()) {
    if (id != kAlone) stubs.push_back(cluster.Stub(id));
  }
  std::thread poller([&] {
    sessiond::v1::BatchValidateSessionsRequest request;
    request.set_consistency(sessiond::v1::LOCAL);
    for (size_t i = 0; i < tokens.size(); i += 10) {
      request.add_requests()->set_token(tokens[i]);
    }
    const absl::Time end = absl::Now() + absl::Seconds(120);
    while (polling.load() && absl::Now() < end) {
      for (const auto& stub : stubs) {
        grpc::ClientContext context;
        SetDeadline(&context, absl::Seconds(1));
        sessiond::v1::BatchValidateSessionsResponse response;
        if (!stub->BatchValidateSessions(&context, request, &response).ok()) {
          continue;  // not started yet
        }
        for (const auto& answer : response.responses()) {
          if (answer.outcome() == ValidateSessionResponse::EXPIRED) {
            ++expired_seen;
          }
        }
      }
      absl::SleepFor(absl::Milliseconds(20));
    }
  });
  absl::Cleanup stop_polling = [&] {
    polling = false;
    if (poller.joinable()) poller.join();
  };
  for (int id : cluster.ids()) {
    if (id == kAlone) continue;
    ASSERT_TRUE(cluster.StartNode(id).ok());
  }
  leader = cluster.WaitForLeader(absl::Seconds(30));
  ASSERT_TRUE(leader.ok()) << leader.status();
  ASSERT_NE(*leader, kAlone);
  ASSERT_TRUE(cluster.WaitForWritable(absl::Seconds(30)).ok());

  // Past the new leader's grace (3 s), a few sweeps (every 500 ms).
  bool open = false;
  std::string reason;
  for (int i = 0; i < 100 && !open; ++i) {
    absl::StatusOr<sessiond::v1::GetExpiryBreakerResponse> b =
        Breaker(cluster, *leader);
    open = b.ok() && b->breaker().open();
    if (b.ok()) reason = b->breaker().reason();
    if (!open) absl::SleepFor(absl::Milliseconds(200));
  }
  EXPECT_TRUE(open) << "the sessions that came due in the catch-up's jump "
                       "expired unjudged; "
                    << reason;
  absl::SleepFor(absl::Seconds(2));  // a sweep of the opened breaker more
  polling = false;
  poller.join();
  EXPECT_EQ(expired_seen.load(), 0)
      << "reads answered EXPIRED for sessions the breaker then held";
  for (int via : cluster.ids()) {
    EXPECT_EQ(Outcomes(cluster, via, tokens)[ValidateSessionResponse::VALID],
              500)
        << "through node " << via;
  }
  if (!open) return;

  // The leader dies; the next one applied the same catch-up, but the
  // breaker it finds open was opened for it: once resumed, the sessions
  // expire and it stays closed (a window started before the jump again
  // would have reopened it at every resume for as long).
  cluster.Kill(*leader);
  leader = cluster.WaitForLeader(absl::Seconds(30));
  ASSERT_TRUE(leader.ok()) << leader.status();
  ASSERT_TRUE(cluster.WaitForWritable(absl::Seconds(30), *leader).ok());
  absl::StatusOr<sessiond::v1::GetExpiryBreakerResponse> held =
      Breaker(cluster, *leader);
  ASSERT_TRUE(held.ok()) << held.status();
  ASSERT_TRUE(held->breaker().open());
  sessiond::v1::ResumeExpiryResponse resumed;
  const grpc::Status s = Resume(cluster, *leader, held->breaker().id(),
                                held->held_sessions(), &resumed);
  ASSERT_TRUE(s.ok()) << s.error_message();
  std::vector<int> outcomes;
  const absl::Time swept_by = absl::Now() + absl::Seconds(30);
  while (absl::Now() < swept_by) {
    outcomes = Outcomes(cluster, *leader, tokens);
    if (outcomes[ValidateSessionResponse::UNKNOWN] == 500) break;
    absl::SleepFor(absl::Milliseconds(250));
  }
  EXPECT_EQ(outcomes[ValidateSessionResponse::UNKNOWN], 500)
      << "valid " << outcomes[ValidateSessionResponse::VALID];
  absl::StatusOr<sessiond::v1::GetExpiryBreakerResponse> after =
      Breaker(cluster, *leader);
  ASSERT_TRUE(after.ok()) << after.status();
  EXPECT_FALSE(after->breaker().open()) << after->breaker().reason();
  EXPECT_EQ(after->breaker().times_opened(), 1u);
}

}  // namespace
}  // namespace sessiond::testing
