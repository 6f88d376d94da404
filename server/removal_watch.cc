// Copyright sessiond authors. Licensed under the Apache License 2.0.
#include "server/removal_watch.h"

#include <algorithm>
#include <vector>

#include "server/bootstrap.h"

namespace sessiond::server {

using replication::ConfState;

namespace {

bool InConf(const ConfState& conf, NodeId id) {
  auto has = [id](const std::vector<NodeId>& ids) {
    return std::find(ids.begin(), ids.end(), id) != ids.end();
  };
  return has(conf.voters) || has(conf.learners);
}

}  // namespace

bool ListsAsRemoved(const sessiond::v1::internal::ClusterState& cluster,
                    NodeId id) {
  return std::find(cluster.removed().begin(), cluster.removed().end(),
                   id.value()) != cluster.removed().end();
}

void RemovalWatch::Start(const ConfState& conf,
                         const sessiond::v1::internal::ClusterState& cluster) {
  was_member_ = InConf(conf, self_);
  // Stopped after applying its removal, before the leader confirmed it. Not
  // in the configuration alone says nothing: a new member's first snapshot
  // may predate its addition.
  if (!was_member_ && ListsAsRemoved(cluster, self_)) suspected_.store(true);
}

void RemovalWatch::OnApplied(const ConfState& conf) {
  const bool member = InConf(conf, self_);
  if (was_member_ && !member) suspected_.store(true);
  was_member_ = member;
}

RemovalWatch::Verdict RemovalWatch::Judge(
    const sessiond::v1::internal::HelloResponse& leader_answer) {
  if (InMembership(leader_answer, self_.value())) {
    suspected_.store(false);
    return Verdict::kMember;
  }
  if (ListsAsRemoved(leader_answer.cluster(), self_)) return Verdict::kRemoved;
  return Verdict::kUndecided;
}

}  // namespace sessiond::server
