// Copyright sessiond authors. Licensed under the Apache License 2.0.
#include "server/cluster_agent.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/fault_point.h"
#include "common/log.h"
#include "common/steady_clock.h"
#include "server/jwt_issuer.h"
#include "server/removal_watch.h"
#include "sessiond/v1/command.pb.h"

namespace sessiond::server {

ClusterAgent::ClusterAgent(const ClusterAgentOptions& options,
                           replication::NodeDriver* driver,
                           const storage::SessionStateMachine* state_machine,
                           ClusterClock* clock, WritePath* writes)
    : options_(options),
      driver_(driver),
      state_machine_(state_machine),
      clock_(clock),
      writes_(writes),
      task_("sd-agent", options.interval, [this] { RunOnce(); }) {}

ClusterAgent::~ClusterAgent() { Stop(); }

void ClusterAgent::Stop() { task_.Stop(); }

void ClusterAgent::RunOnce() {
  const replication::NodeStatus status = driver_->status();
  MaybePublish(status);
  MaybeWriteSettings(status);
  MaybeBootstrapKey(status);
  // A leader that ran through the others' outage, or a catch-up that was
  // lost on its way (WritePath::HandleForwarded proposes the first).
  if (status.role == replication::Role::kLeader) writes_->ProposeCatchUpIfDue();
  MaybeTick(status);
  MaybeReportSkew();
}

void ClusterAgent::MaybeTick(const replication::NodeStatus& status) {
  if (options_.clock_tick_interval <= absl::ZeroDuration() || ticking_.load()) {
    return;
  }
  const bool quiet_leader =
      status.leader_caught_up &&
      clock_->SinceAppliedStamp() >= options_.clock_tick_interval;
  // A follower that kept counting while the leader was down: its tick,
  // forwarded with its cluster time, brings the leader's clock (and so
  // every member's) up to it (ClusterClock::Observe).
  const bool follower_ahead =
      status.role == replication::Role::kFollower &&
      status.leader != NodeId(0) &&
      clock_->AheadOfAppliedMs() >= kFollowerAheadTickMs;
  if (!quiet_leader && !follower_ahead) return;
  sessiond::v1::internal::Command command;
  command.mutable_tick();
  ticking_.store(true);
  writes_->Submit(std::move(command), absl::Now() + absl::Seconds(5),
                  [this](replication::ApplyResult) { ticking_.store(false); });
}

void ClusterAgent::MaybePublish(const replication::NodeStatus& status) {
  bool current = false;
  const sessiond::v1::internal::ClusterState cluster =
      state_machine_->cluster_state();
  for (const auto& m : cluster.members()) {
    if (m.node_id() == options_.self.value()) {
      current = m.started() && m.peer_address() == options_.peer_address &&
                m.client_address() == options_.client_address &&
                m.command_level() == options_.command_level;
    }
  }
  published_.store(current);
  const int64_t now_ns = SteadyNowNs();
  if (last_publish_ns_ == 0) last_publish_ns_ = now_ns;
  const bool republish_due =
      options_.republish_interval > absl::ZeroDuration() &&
      absl::Nanoseconds(now_ns - last_publish_ns_) >=
          options_.republish_interval;
  if ((current && !republish_due) || publishing_.load()) return;
  // Removed: the entry would be refused; the node stops once the leader
  // confirms (server/removal_watch.h).
  if (ListsAsRemoved(cluster, options_.self)) return;
  // Only once this node holds the cluster's data: "started" tells a later
  // bootstrap that this member had a log.
  if (status.leader == NodeId(0) || status.applied < status.leader_commit ||
      status.applied == LogIndex(0)) {
    return;
  }
  sessiond::v1::internal::Command command;
  auto* member = command.mutable_member();
  member->set_kind(sessiond::v1::internal::MemberCommand::PUBLISH);
  member->set_node_id(options_.self.value());
  member->set_peer_address(options_.peer_address);
  member->set_client_address(options_.client_address);
  member->set_command_level(options_.command_level);
  SESSIOND_FAULT_POINT("agent.before_publish");
  publishing_.store(true);
  last_publish_ns_ = now_ns;
  writes_->Submit(
      std::move(command), absl::Now() + absl::Seconds(5),
      [this](replication::ApplyResult) { publishing_.store(false); });
}

void ClusterAgent::MaybeWriteSettings(const replication::NodeStatus& status) {
  if (!status.leader_caught_up || writing_settings_.load()) return;
  const sessiond::v1::internal::ClusterState cluster =
      state_machine_->cluster_state();
  sessiond::v1::internal::Command command;
  if (!cluster.leeway_set()) {
    command.mutable_settings()->set_expiry_leeway_ms(
        options_.initial_expiry_leeway_ms);
  }
  if (cluster.jwks_max_age_ms() == 0) {
    command.mutable_settings()->set_jwks_max_age_ms(
        options_.initial_jwks_max_age_ms);
  }
  if (!command.has_settings()) return;
  writing_settings_.store(true);
  writes_->Submit(
      std::move(command), absl::Now() + absl::Seconds(5),
      [this](replication::ApplyResult) { writing_settings_.store(false); });
}

void ClusterAgent::MaybeBootstrapKey(const replication::NodeStatus& status) {
  if (options_.jwt_issuer == nullptr || !options_.jwt_issuer->has_kek() ||
      !status.leader_caught_up || bootstrapping_key_.load() ||
      !state_machine_->key_ring().state().keys().empty()) {
    return;
  }
  absl::StatusOr<sessiond::v1::internal::KeyRingCommand::Stage> stage =
      options_.jwt_issuer->NewKey(/*bootstrap=*/true);
  if (!stage.ok()) {
    logging::Warn("key_ring.bootstrap_failed",
                  logging::Fields().Error(stage.status()));
    return;
  }
  logging::Info("key_ring.bootstrap",
                logging::Fields().Add("kid", stage->kid()));
  sessiond::v1::internal::Command command;
  *command.mutable_key_ring()->mutable_stage() = *std::move(stage);
  bootstrapping_key_.store(true);
  writes_->Submit(
      std::move(command), absl::Now() + absl::Seconds(5),
      [this](replication::ApplyResult) { bootstrapping_key_.store(false); });
}

void ClusterAgent::MaybeReportSkew() {
  const absl::Time now = absl::Now();
  if (now < next_skew_log_) return;
  const int64_t skew = clock_->SkewMs();
  if (std::llabs(skew) < options_.skew_log_threshold_ms) return;
  next_skew_log_ = now + absl::Minutes(1);
  logging::Warn(
      "clock.skew",
      logging::Fields()
          .Add("skew_ms", skew)
          .Add("msg",
               absl::StrCat("clock skew: this node's wall clock is ",
                            std::llabs(skew), " ms ",
                            skew > 0 ? "ahead of" : "behind",
                            " cluster time; expiry follows cluster time "
                            "(slewed toward the wall clock by at most the "
                            "configured rate). Check NTP.")));
}

}  // namespace sessiond::server
