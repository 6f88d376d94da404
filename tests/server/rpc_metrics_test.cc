// Copyright sessiond authors. Licensed under the Apache License 2.0.
//
// The server's metric collectors without a daemon: RpcMetrics and RpcTimer,
// the MemberStatus mapping, /proc/self. The endpoint itself is tested on
// the real binary (tests/integration/metrics_test.cc).
#include "server/rpc_metrics.h"

#include <string>

#include "common/metrics_exposition.h"
#include "gtest/gtest.h"
#include "server/node_metrics.h"
#include "server/process_metrics.h"
#include "server/validation_metrics.h"

namespace sessiond::server {
namespace {

using metrics::ExpositionWriter;

constexpr char kValidate[] = "/sessiond.v1.SessionService/ValidateSession";
constexpr char kStream[] = "/sessiond.v1.SessionService/StreamValidateSessions";

TEST(RpcMetricsTest, KnowsTheMethodsOfItsServices) {
  const RpcMetrics rpc({"sessiond.v1.AdminService", "no.such.Service"},
                       {"sessiond.v1.SessionService"});
  const RpcMetrics::Method* validate = rpc.Find(kValidate);
  ASSERT_NE(validate, nullptr);
  EXPECT_EQ(validate->service, "sessiond.v1.SessionService");
  EXPECT_EQ(validate->name, "ValidateSession");
  EXPECT_FALSE(validate->streaming);
  EXPECT_FALSE(validate->intercepted);
  const RpcMetrics::Method* stream = rpc.Find(kStream);
  ASSERT_NE(stream, nullptr);
  EXPECT_TRUE(stream->streaming);
  const RpcMetrics::Method* status =
      rpc.Find("/sessiond.v1.AdminService/ClusterStatus");
  ASSERT_NE(status, nullptr);
  EXPECT_TRUE(status->intercepted);
  EXPECT_EQ(rpc.Find("/grpc.health.v1.Health/Check"), nullptr);
  EXPECT_EQ(rpc.Find("ValidateSession"), nullptr);
}

TEST(RpcMetricsTest, TimersRecordTheirCodeOnceAndCancelledWhenDropped) {
  const RpcMetrics rpc({}, {"sessiond.v1.SessionService"});
  RpcMetrics::Method* validate = rpc.Find(kValidate);
  ASSERT_NE(validate, nullptr);
  {
    RpcTimer timer;
    timer.Start(validate);
    timer.Finish(grpc::StatusCode::OK);
    timer.Finish(grpc::StatusCode::INTERNAL);  // ignored: already finished
  }
  {
    RpcTimer timer;
    timer.Start(validate);
    timer.Finish(grpc::StatusCode::UNAVAILABLE);
  }
  {
    RpcTimer timer;
    timer.Start(validate);
  }  // never finished
  {
    RpcTimer inactive;  // no method: records nothing
    inactive.Start(nullptr);
    inactive.Finish(grpc::StatusCode::OK);
    inactive.CountReceived();
  }
  EXPECT_EQ(validate->by_code[grpc::StatusCode::OK].count(), 1u);
  EXPECT_EQ(validate->by_code[grpc::StatusCode::UNAVAILABLE].count(), 1u);
  EXPECT_EQ(validate->by_code[grpc::StatusCode::CANCELLED].count(), 1u);
  EXPECT_EQ(validate->by_code[grpc::StatusCode::INTERNAL].count(), 0u);
}

TEST(RpcMetricsTest, CollectsOnlySeriesThatMoved) {
  const RpcMetrics rpc({}, {"sessiond.v1.SessionService"});
  {
    RpcTimer timer;
    timer.Start(rpc.Find(kValidate));
    timer.Finish(grpc::StatusCode::NOT_FOUND);
  }
  {
    RpcTimer timer;
    timer.Start(rpc.Find(kStream));
    timer.CountReceived();
    timer.CountReceived();
    timer.CountSent();
    timer.Finish(grpc::StatusCode::OK);
  }
  ExpositionWriter w;
  rpc.Collect(&w);
  const std::string& text = w.text();
  EXPECT_NE(text.find("sessiond_grpc_server_handled_total{service=\"sessiond."
                      "v1.SessionService\",method=\"ValidateSession\",code="
                      "\"NOT_FOUND\"} 1\n"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("sessiond_grpc_server_handling_seconds_count{service="
                      "\"sessiond.v1.SessionService\",method="
                      "\"StreamValidateSessions\",code=\"OK\"} 1\n"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("sessiond_grpc_server_stream_messages_received_total{"
                      "service=\"sessiond.v1.SessionService\",method="
                      "\"StreamValidateSessions\"} 2\n"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("sessiond_grpc_server_stream_messages_sent_total{"
                      "service=\"sessiond.v1.SessionService\",method="
                      "\"StreamValidateSessions\"} 1\n"),
            std::string::npos)
      << text;
  EXPECT_EQ(text.find("CreateSession"), std::string::npos) << text;
  EXPECT_EQ(text.find("code=\"OK\"} 0"), std::string::npos) << text;
}

TEST(NodeMetricsTest, MapsAMemberStatus) {
  sessiond::v1::MemberStatus m;
  m.set_role("leader");
  m.set_voter(true);
  m.set_term(7);
  m.set_leader(3);
  m.set_commit_index(120);
  m.set_applied_index(100);
  m.set_clock_skew_ms(-1500);
  m.set_disk_full(true);
  m.mutable_metrics()->set_synced_log_writes(42);
  m.mutable_metrics()->set_expiry_sweep_due(64000);
  m.mutable_metrics()->set_expiry_sweeps_at_cap(5);
  ExpositionWriter w;
  WriteMemberStatusMetrics(m, &w);
  const std::string& text = w.text();
  for (const char* line :
       {"sessiond_raft_term 7\n", "sessiond_raft_leader_id 3\n",
        "sessiond_raft_is_leader 1\n", "sessiond_raft_apply_lag_entries 20\n",
        "sessiond_clock_skew_seconds -1.5\n", "sessiond_disk_full 1\n",
        "sessiond_raft_log_synced_writes_total 42\n",
        "# TYPE sessiond_raft_log_synced_writes_total counter\n",
        "sessiond_expiry_sweep_due_sessions 64000\n",
        "sessiond_expiry_sweeps_at_cap_total 5\n"}) {
    EXPECT_NE(text.find(line), std::string::npos) << line << " in\n" << text;
  }
}

TEST(NodeMetricsTest, CountsValidationOutcomes) {
  ValidationMetrics v;
  v.Count(sessiond::v1::ValidateSessionResponse::VALID);
  v.Count(sessiond::v1::ValidateSessionResponse::VALID);
  v.Count(sessiond::v1::ValidateSessionResponse::UNKNOWN);
  NodeMetricsSources sources;
  sources.validations = &v;
  sources.version = "9.9";
  ExpositionWriter w;
  CollectNodeMetrics(sources, &w);
  const std::string& text = w.text();
  EXPECT_NE(text.find("sessiond_build_info{version=\"9.9\"} 1\n"),
            std::string::npos);
  EXPECT_NE(text.find("sessiond_validations_total{outcome=\"valid\"} 2\n"),
            std::string::npos);
  EXPECT_NE(text.find("sessiond_validations_total{outcome=\"unknown\"} 1\n"),
            std::string::npos);
  EXPECT_NE(text.find("sessiond_validations_total{outcome=\"expired\"} 0\n"),
            std::string::npos);
}

TEST(ProcessMetricsTest, ReadsProcSelf) {
  const std::optional<ProcessStats> s = ReadProcessStats();
  ASSERT_TRUE(s.has_value());
  EXPECT_GT(s->resident_bytes, 0u);
  EXPECT_GE(s->virtual_bytes, s->resident_bytes);
  EXPECT_GE(s->open_fds, 3u);  // stdin, stdout, stderr at least
  EXPECT_GE(s->max_fds, s->open_fds);
  EXPECT_GT(s->start_time_seconds, 1.6e9);
  ExpositionWriter w;
  CollectProcessMetrics(&w);
  EXPECT_NE(w.text().find("# TYPE process_cpu_seconds_total counter\n"),
            std::string::npos);
}

}  // namespace
}  // namespace sessiond::server
