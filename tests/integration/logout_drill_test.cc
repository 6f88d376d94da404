// Copyright sessiond authors. Licensed under the Apache License 2.0.
//
// The logout detector's drills (issue 7, part 4), on a real 3-node cluster
// on loopback with the detector's interval and window made small:
//
//  - under a steady validate load, a bulk revoke of 30% of the sessions
//    (AdminService.BulkRevoke, users selector, both steps) raises the
//    detector's `revoked` alert on every node, in ClusterStatus, /metrics,
//    `sessionctl status` and the log; restoring it clears the alert;
//  - a day-shaped churn replayed fast (sessions created at a rate that
//    rises and falls, expiring at their planned time, validated throughout)
//    raises nothing.
//
// Every wait is bounded; nothing asserts how long anything took.
#include <grpcpp/grpcpp.h>
#include <httplib.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "common/rng.h"
#include "gtest/gtest.h"
#include "sessiond/v1/admin.grpc.pb.h"
#include "sessiond/v1/session.grpc.pb.h"
#include "tests/integration/cluster_harness.h"

namespace sessiond::testing {
namespace {

using sessiond::v1::ValidateSessionResponse;

// The detector made fast for a test: quarter-second intervals, a 5 s
// window for the live count, small minimums, and a 5 min baseline (an alert
// is accepted as the new normal only after that long: longer than a test
// looks at one). The
// thresholds are the defaults (20% fall, +25 points and 3 deviations).
std::vector<std::string> DetectorFlags() {
  return {"--logout_detector_interval_ms",
          "250",
          "--logout_detector_window_ms",
          "5000",
          "--logout_detector_baseline_ms",
          "300000",
          "--logout_detector_min_validations",
          "50",
          "--logout_detector_min_sessions",
          "100",
          "--metrics_listen",
          "127.0.0.1:0"};
}

// GET /metrics of one node ("" when it fails).
std::string Scrape(const std::string& address) {
  const HostPort hp = SplitHostPort(address);
  if (hp.port == 0) return "";
  httplib::Client http(hp.host, hp.port);
  http.set_connection_timeout(5, 0);
  http.set_read_timeout(10, 0);
  httplib::Result res = http.Get("/metrics");
  return res && res->status == 200 ? res->body : "";
}

// The value of `series` (exactly as exposed, e.g.
// `sessiond_logout_alert{kind="revoked"}`) in a scrape; -1 when absent.
double Value(const std::string& scrape, const std::string& series) {
  const std::string key = absl::StrCat("\n", series, " ");
  const size_t at = scrape.find(key);
  if (at == std::string::npos) return -1;
  const size_t start = at + key.size();
  const size_t end = scrape.find('\n', start);
  double v = -1;
  if (!absl::SimpleAtod(scrape.substr(start, end - start), &v)) return -1;
  return v;
}

std::string Kind(const std::string& kind) {
  return absl::StrCat("{kind=\"", kind, "\"}");
}

std::string LogOf(const ClusterHarness& cluster, int id) {
  std::ifstream log(cluster.log_path(id));
  return std::string(std::istreambuf_iterator<char>(log), {});
}

// Every member's logout alerts as "node N: kind (detail)".
std::vector<std::string> AlertsIn(
    const sessiond::v1::ClusterStatusResponse& status) {
  std::vector<std::string> alerts;
  for (const auto& m : status.members()) {
    for (const auto& a : m.logout_alerts()) {
      alerts.push_back(absl::StrCat("node ", m.node_id(), ": ", a.kind(), " (",
                                    a.detail(), ")"));
    }
  }
  return alerts;
}

// A validate load on its own thread: BatchValidateSessions of `batch`
// tokens from `pick`, taking turns over the nodes, one call per `pause`,
// until Stop() or `max_calls` calls. Counts the outcomes.
class ValidateLoad {
 public:
  using Picker = std::function<std::vector<std::string>(Rng&)>;

  ValidateLoad(const ClusterHarness& cluster, Picker pick, absl::Duration pause,
               int max_calls)
      : pick_(std::move(pick)) {
    for (int id : cluster.ids()) stubs_.push_back(cluster.Stub(id));
    thread_ = std::thread([this, pause, max_calls] { Run(pause, max_calls); });
  }
  ~ValidateLoad() { Stop(); }

  void Stop() {
    stop_.store(true);
    if (thread_.joinable()) thread_.join();
  }
  uint64_t count(ValidateSessionResponse::Outcome o) const {
    absl::MutexLock lock(&mu_);
    const auto it = outcomes_.find(o);
    return it == outcomes_.end() ? 0 : it->second;
  }
  uint64_t calls() const { return calls_.load(); }
  uint64_t failed_calls() const { return failed_.load(); }

 private:
  void Run(absl::Duration pause, int max_calls) {
    Rng rng(42);
    for (int n = 0; n < max_calls && !stop_.load(); ++n) {
      const std::vector<std::string> tokens = pick_(rng);
      if (!tokens.empty()) {
        sessiond::v1::BatchValidateSessionsRequest request;
        for (const std::string& t : tokens)
          request.add_requests()->set_token(t);
        sessiond::v1::BatchValidateSessionsResponse response;
        grpc::ClientContext context;
        SetDeadline(&context, absl::Seconds(5));
        const grpc::Status s =
            stubs_[static_cast<size_t>(n) % stubs_.size()]
                ->BatchValidateSessions(&context, request, &response);
        ++calls_;
        if (!s.ok()) {
          ++failed_;
        } else {
          absl::MutexLock lock(&mu_);
          for (const auto& r : response.responses()) ++outcomes_[r.outcome()];
        }
      }
      absl::SleepFor(pause);
    }
  }

  const Picker pick_;
  std::vector<std::unique_ptr<sessiond::v1::SessionService::Stub>> stubs_;
  std::atomic<bool> stop_{false};
  std::atomic<uint64_t> calls_{0};
  std::atomic<uint64_t> failed_{0};
  mutable absl::Mutex mu_;
  std::map<int, uint64_t> outcomes_ ABSL_GUARDED_BY(mu_);
  std::thread thread_;  // last: uses the members above
};

// Waits (bounded) until every node's detector has its baselines.
void WaitForDetectorsReady(const std::map<int, std::string>& metrics) {
  for (const auto& [id, address] : metrics) {
    bool ready = false;
    for (int attempt = 0; attempt < 300 && !ready; ++attempt) {
      ready = Value(Scrape(address), "sessiond_logout_detector_ready") == 1;
      if (!ready) absl::SleepFor(absl::Milliseconds(200));
    }
    ASSERT_TRUE(ready) << "node " << id << "'s detector never became ready:\n"
                       << Scrape(address);
  }
}

std::string RunSessionctlStatus(const std::string& endpoint) {
  char home[] = "/tmp/logout-drill-home-XXXXXX";
  if (mkdtemp(home) == nullptr) return "";
  const std::string command = absl::StrCat(
      "env -i PATH=/usr/bin:/bin HOME=", home, " ", SESSIONCTL_BINARY,
      " --endpoints ", endpoint, " status 2>&1");
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

// Issue 7's drill: under a steady validate load, a bulk revoke of 30% of
// the sessions fires the detector within its window.
TEST(LogoutDrillTest,
     BulkRevokeOfThirtyPercentFiresTheDetectorRestoreClearsIt) {
  constexpr int kSessions = 10'000;
  constexpr int kUsers = 1'000;  // 10 sessions each
  constexpr int kRevokedUsers = 300;
  ClusterOptions options;
  options.binary = SESSIOND_BINARY;
  options.flags = DetectorFlags();
  ClusterHarness cluster(options);
  ASSERT_TRUE(cluster.Start().ok());
  absl::StatusOr<int> leader = cluster.WaitForLeader(absl::Seconds(20));
  ASSERT_TRUE(leader.ok()) << leader.status();
  std::map<int, std::string> metrics;
  for (int id : cluster.ids()) {
    metrics[id] =
        ListeningAddressIn(cluster.log_path(id), "METRICS_LISTENING ");
    ASSERT_FALSE(metrics[id].empty()) << cluster.LogTail(id);
  }

  std::vector<std::string> tokens;
  {
    auto stub = cluster.Stub(*leader);
    for (int first = 0; first < kSessions; first += 1000) {
      sessiond::v1::CreateSessionsRequest request;
      for (int i = first; i < first + 1000; ++i) {
        auto* one = request.add_requests();
        one->set_user_id(absl::StrCat("user-", i % kUsers));
        one->set_ttl_ms(3600 * 1000);
      }
      sessiond::v1::CreateSessionsResponse response;
      grpc::ClientContext context;
      SetDeadline(&context, absl::Seconds(30));
      const grpc::Status s = stub->CreateSessions(&context, request, &response);
      ASSERT_TRUE(s.ok()) << s.error_message();
      for (const auto& c : response.responses()) tokens.push_back(c.token());
    }
  }
  ASSERT_EQ(tokens.size(), static_cast<size_t>(kSessions));

  // The steady load: 200 random known tokens per call, every 50 ms, over
  // the three nodes; bounded to 20 minutes of calls.
  ValidateLoad load(
      cluster,
      [&tokens](Rng& rng) {
        std::vector<std::string> batch;
        for (int i = 0; i < 200; ++i) {
          batch.push_back(tokens[rng.Uniform(tokens.size())]);
        }
        return batch;
      },
      absl::Milliseconds(50), 20 * 60 * 20);
  WaitForDetectorsReady(metrics);
  if (HasFatalFailure()) return;
  // Quiet under the steady load.
  {
    absl::StatusOr<sessiond::v1::ClusterStatusResponse> status =
        cluster.ClusterStatus(*leader);
    ASSERT_TRUE(status.ok()) << status.status();
    EXPECT_TRUE(AlertsIn(*status).empty())
        << absl::StrJoin(AlertsIn(*status), "\n");
  }

  // Bulk revoke of 300 users' sessions (30%), both steps, via a follower.
  const int via =
      *leader == cluster.ids()[0] ? cluster.ids()[1] : cluster.ids()[0];
  sessiond::v1::BulkRevokeRequest request;
  for (int u = 0; u < kRevokedUsers; ++u) {
    request.mutable_selector()->mutable_users()->add_user_ids(
        absl::StrCat("user-", u));
  }
  request.set_reason("drill: 30% of the sessions");
  sessiond::v1::BulkRevokeResponse preview;
  {
    grpc::ClientContext context;
    SetDeadline(&context, absl::Seconds(30));
    const grpc::Status s =
        cluster.Admin(via)->BulkRevoke(&context, request, &preview);
    ASSERT_TRUE(s.ok()) << s.error_message();
  }
  ASSERT_EQ(preview.preview().sessions(), 3000u);
  request.set_confirmation_token(preview.preview().confirmation_token());
  sessiond::v1::BulkRevokeResponse revoked;
  {
    grpc::ClientContext context;
    SetDeadline(&context, absl::Seconds(30));
    const grpc::Status s =
        cluster.Admin(via)->BulkRevoke(&context, request, &revoked);
    ASSERT_TRUE(s.ok()) << s.error_message();
  }
  ASSERT_EQ(revoked.revocation().sessions(), 3000u);
  const absl::Time revoked_at = absl::Now();

  // Every node raises `revoked` (each takes a third of the load).
  std::set<int> alerted;
  sessiond::v1::ClusterStatusResponse status;
  for (int attempt = 0; attempt < 300 && alerted.size() < 3; ++attempt) {
    absl::StatusOr<sessiond::v1::ClusterStatusResponse> s =
        cluster.ClusterStatus(via);
    if (s.ok()) {
      status = *s;
      for (const auto& m : s->members()) {
        for (const auto& a : m.logout_alerts()) {
          if (a.kind() == "revoked")
            alerted.insert(static_cast<int>(m.node_id()));
        }
      }
    }
    if (alerted.size() < 3) absl::SleepFor(absl::Milliseconds(200));
  }
  if (alerted.size() < 3) {
    for (const auto& [id, address] : metrics) {
      if (alerted.count(id) > 0) continue;
      std::string logout;
      for (absl::string_view line : absl::StrSplit(Scrape(address), '\n')) {
        if (absl::StartsWith(line, "sessiond_logout_") ||
            absl::StartsWith(line, "sessiond_validations_total")) {
          absl::StrAppend(&logout, line, "\n");
        }
      }
      ADD_FAILURE() << "node " << id << " raised no revoked alert:\n"
                    << logout << cluster.LogTail(id);
    }
  }
  ASSERT_EQ(alerted.size(), 3u) << status.DebugString();
  std::printf("revoked alert on every node %lld ms after the bulk revoke\n",
              static_cast<long long>(
                  absl::ToInt64Milliseconds(absl::Now() - revoked_at)));
  for (const auto& m : status.members()) {
    for (const auto& a : m.logout_alerts()) {
      if (a.kind() != "revoked") continue;
      EXPECT_GT(a.value(), 0.2) << a.DebugString();
      EXPECT_LT(a.baseline(), 0.05) << a.DebugString();
      EXPECT_TRUE(absl::StrContains(a.detail(), "REVOKED answers"))
          << a.detail();
    }
  }

  for (const auto& [id, address] : metrics) {
    const std::string scrape = Scrape(address);
    EXPECT_EQ(Value(scrape, "sessiond_logout_alert" + Kind("revoked")), 1)
        << "node " << id;
    EXPECT_GE(Value(scrape, "sessiond_logout_alerts_total" + Kind("revoked")),
              1)
        << "node " << id;
    // The table keeps revoked sessions: the live count did not fall.
    EXPECT_EQ(Value(scrape, "sessiond_logout_alert" + Kind("live_drop")), 0)
        << "node " << id;
    EXPECT_EQ(Value(scrape, "sessiond_sessions_revoked_total" + Kind("bulk")),
              3000)
        << "node " << id;
    EXPECT_EQ(Value(scrape, "sessiond_sessions_created_total"), kSessions)
        << "node " << id;
    EXPECT_GT(
        Value(scrape, "sessiond_logout_outcome_share{outcome=\"revoked\"}"),
        0.2)
        << "node " << id;
    EXPECT_TRUE(absl::StrContains(LogOf(cluster, id), "logout_alert.raised"))
        << cluster.LogTail(id);
    EXPECT_TRUE(absl::StrContains(LogOf(cluster, id), "kind=revoked"))
        << cluster.LogTail(id);
  }
  const std::string ctl = RunSessionctlStatus(cluster.client_address(via));
  EXPECT_TRUE(absl::StrContains(ctl, "problems:")) << ctl;
  EXPECT_TRUE(absl::StrContains(ctl, "logout alert revoked")) << ctl;

  // Undone: the share falls back and every alert clears.
  {
    sessiond::v1::RestoreFlushRequest restore;
    restore.set_flush_id(revoked.revocation().id());
    sessiond::v1::RestoreFlushResponse restored;
    grpc::ClientContext context;
    SetDeadline(&context, absl::Seconds(30));
    const grpc::Status s =
        cluster.Admin(via)->RestoreFlush(&context, restore, &restored);
    ASSERT_TRUE(s.ok()) << s.error_message();
    EXPECT_EQ(restored.revocation().restored(), 3000u);
  }
  std::vector<std::string> left = {"(not asked yet)"};
  for (int attempt = 0; attempt < 300 && !left.empty(); ++attempt) {
    absl::StatusOr<sessiond::v1::ClusterStatusResponse> s =
        cluster.ClusterStatus(via);
    if (s.ok() && s->members_size() == 3) left = AlertsIn(*s);
    if (!left.empty()) absl::SleepFor(absl::Milliseconds(200));
  }
  EXPECT_TRUE(left.empty()) << absl::StrJoin(left, "\n");
  for (int id : cluster.ids()) {
    EXPECT_TRUE(absl::StrContains(LogOf(cluster, id), "logout_alert.cleared"))
        << cluster.LogTail(id);
  }
  load.Stop();
  EXPECT_GT(load.count(ValidateSessionResponse::REVOKED), 0u);
  EXPECT_GT(load.count(ValidateSessionResponse::VALID), 0u);
}

// A day replayed fast: for kDay the creation rate follows
// R * (1 - kSwing * cos(2 pi t / kDay)) (night, peak, night), each session
// lives 6-10 s and expires at its planned time (the sweeper removes it);
// clients validate live sessions, and a few expired ones, throughout. The
// live count rises and falls by a factor of about 1.7, never faster than
// ~9% per 5 s window: no alert may fire.
TEST(LogoutDrillTest, ADayShapedChurnReplayedFastStaysQuiet) {
  constexpr absl::Duration kDay = absl::Seconds(120);
  constexpr absl::Duration kTick = absl::Milliseconds(100);
  constexpr double kRate = 200;  // sessions per second, on average
  constexpr double kSwing = 0.25;
  ClusterOptions options;
  options.binary = SESSIOND_BINARY;
  options.flags = DetectorFlags();
  for (const char* flag :
       {"--min_ttl_ms", "100", "--sweep_interval_ms", "250"}) {
    options.flags.push_back(flag);
  }
  ClusterHarness cluster(options);
  ASSERT_TRUE(cluster.Start().ok());
  ASSERT_TRUE(cluster.WaitForLeader(absl::Seconds(20)).ok());
  std::map<int, std::string> metrics;
  for (int id : cluster.ids()) {
    metrics[id] =
        ListeningAddressIn(cluster.log_path(id), "METRICS_LISTENING ");
    ASSERT_FALSE(metrics[id].empty()) << cluster.LogTail(id);
  }

  // The plan: every session created, with its planned end.
  struct Planned {
    std::string token;
    absl::Time created;
    absl::Time ends;
  };
  absl::Mutex mu;
  std::vector<Planned> plan;  // guarded by mu, in creation order
  const auto pick = [&](Rng& rng) {
    std::vector<std::string> batch;
    const absl::Time now = absl::Now();
    absl::MutexLock lock(&mu);
    std::vector<const Planned*> live, ended;
    for (const Planned& p : plan) {
      // A second of margin both ways: the cluster and this clock agree
      // that well on loopback.
      if (p.created + absl::Seconds(1) < now &&
          now + absl::Seconds(1) < p.ends) {
        live.push_back(&p);
      } else if (p.ends + absl::Seconds(1) < now) {
        ended.push_back(&p);
      }
    }
    for (int i = 0; i < 95 && !live.empty(); ++i) {
      batch.push_back(live[rng.Uniform(live.size())]->token);
    }
    // A client or two coming back with an expired token: 5%.
    for (int i = 0; i < 5 && !ended.empty(); ++i) {
      batch.push_back(ended[ended.size() - 1 -
                            rng.Uniform(std::min<size_t>(ended.size(), 500))]
                          ->token);
    }
    return batch;
  };
  ValidateLoad load(cluster, pick, absl::Milliseconds(60), 20 * 60 * 20);

  // The creator: each tick creates what the rate owes so far, through the
  // nodes in turn (followers forward to the leader).
  std::vector<std::unique_ptr<sessiond::v1::SessionService::Stub>> stubs;
  for (int id : cluster.ids()) stubs.push_back(cluster.Stub(id));
  const double pi = std::acos(-1.0);
  const double day_s = absl::ToDoubleSeconds(kDay);
  const absl::Time start = absl::Now();
  double owed = 0;
  uint64_t created = 0;
  uint64_t live_min = UINT64_MAX, live_max = 0;
  double max_drop = 0, max_rise = 0;
  std::vector<std::string> alerts_seen;
  absl::Time next_status = start + absl::Seconds(5);
  const int ticks = static_cast<int>(kDay / kTick);
  for (int k = 1; k <= ticks; ++k) {
    absl::SleepFor(
        std::max(absl::ZeroDuration(), start + k * kTick - absl::Now()));
    const double t = absl::ToDoubleSeconds(k * kTick);
    owed += kRate * (1 - kSwing * std::cos(2 * pi * t / day_s)) *
            absl::ToDoubleSeconds(kTick);
    sessiond::v1::CreateSessionsRequest request;
    for (; created < static_cast<uint64_t>(owed); ++created) {
      auto* one = request.add_requests();
      one->set_user_id(absl::StrCat("churn-", created % 5000));
      one->set_ttl_ms(6000 + 1000 * static_cast<int64_t>(created % 5));
    }
    if (request.requests_size() > 0) {
      sessiond::v1::CreateSessionsResponse response;
      grpc::ClientContext context;
      SetDeadline(&context, absl::Seconds(5));
      const absl::Time sent = absl::Now();
      const grpc::Status s =
          stubs[static_cast<size_t>(k) % stubs.size()]->CreateSessions(
              &context, request, &response);
      if (s.ok()) {
        absl::MutexLock lock(&mu);
        for (int i = 0; i < response.responses_size(); ++i) {
          plan.push_back(
              Planned{response.responses(i).token(), sent,
                      sent + absl::Milliseconds(request.requests(i).ttl_ms())});
        }
      }
    }
    if (absl::Now() >= next_status) {
      next_status = absl::Now() + absl::Milliseconds(500);
      absl::StatusOr<sessiond::v1::ClusterStatusResponse> s =
          cluster.ClusterStatus(cluster.ids()[k % 3]);
      if (s.ok()) {
        for (std::string& a : AlertsIn(*s)) alerts_seen.push_back(std::move(a));
        // After the first sessions' lifetime and the baseline's warm-up:
        // the shape of the day.
        if (absl::Now() - start > absl::Seconds(15)) {
          for (const auto& m : s->members()) {
            if (!m.reachable()) continue;
            live_min = std::min<uint64_t>(live_min, m.live_sessions());
            live_max = std::max<uint64_t>(live_max, m.live_sessions());
          }
          // How close the day came to the thresholds (reported, not
          // asserted: the alerts are).
          const std::string scrape = Scrape(metrics[cluster.ids()[k % 3]]);
          max_drop = std::max(max_drop,
                              Value(scrape, "sessiond_logout_live_drop_ratio"));
          for (const char* o : {"unknown", "expired", "revoked"}) {
            const std::string label = absl::StrCat("{outcome=\"", o, "\"}");
            max_rise = std::max(
                max_rise,
                Value(scrape, "sessiond_logout_outcome_share" + label) -
                    Value(scrape, "sessiond_logout_outcome_baseline" + label));
          }
        }
      }
    }
  }
  load.Stop();

  EXPECT_TRUE(alerts_seen.empty()) << absl::StrJoin(alerts_seen, "\n");
  for (const auto& [id, address] : metrics) {
    const std::string scrape = Scrape(address);
    EXPECT_EQ(Value(scrape, "sessiond_logout_detector_ready"), 1)
        << "node " << id << " never judged anything:\n"
        << scrape;
    for (const char* kind : {"live_drop", "unknown", "expired", "revoked"}) {
      EXPECT_EQ(Value(scrape, "sessiond_logout_alerts_total" + Kind(kind)), 0)
          << "node " << id << " raised " << kind << "\n"
          << cluster.LogTail(id);
    }
    // The churn really happened: sessions expired through the sweeper.
    EXPECT_GT(Value(scrape, "sessiond_sessions_expired_total"),
              static_cast<double>(created) / 2)
        << "node " << id;
  }
  // ... and the live count went through the day's shape.
  ASSERT_GT(live_min, 0u);
  EXPECT_GT(static_cast<double>(live_max) / static_cast<double>(live_min), 1.35)
      << "live sessions " << live_min << " to " << live_max;
  EXPECT_GT(load.count(ValidateSessionResponse::VALID), 10'000u);
  EXPECT_GT(load.count(ValidateSessionResponse::UNKNOWN) +
                load.count(ValidateSessionResponse::EXPIRED),
            0u);
  std::printf(
      "day: %llu sessions created, live %llu to %llu (largest fall in a "
      "window seen %.1f%%, largest share over its baseline %.1f points), "
      "%llu validate calls (%llu failed)\n",
      static_cast<unsigned long long>(created),
      static_cast<unsigned long long>(live_min),
      static_cast<unsigned long long>(live_max), 100 * max_drop, 100 * max_rise,
      static_cast<unsigned long long>(load.calls()),
      static_cast<unsigned long long>(load.failed_calls()));
}

}  // namespace
}  // namespace sessiond::testing
