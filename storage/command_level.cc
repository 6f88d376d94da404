// Copyright sessiond authors. Licensed under the Apache License 2.0.
#include "storage/command_level.h"

#include <vector>

namespace sessiond::storage {

std::optional<LowestCommandLevel> LowestPublishedLevel(
    const sessiond::v1::internal::ClusterState& cluster,
    const replication::ConfState& conf) {
  std::optional<LowestCommandLevel> lowest;
  for (const std::vector<NodeId>* ids : {&conf.voters, &conf.learners}) {
    for (NodeId id : *ids) {
      uint32_t level = 0;
      for (const auto& member : cluster.members()) {
        if (member.node_id() == id.value()) level = member.command_level();
      }
      if (!lowest || level < lowest->level) lowest = {id, level};
    }
  }
  return lowest;
}

bool EveryMemberApplies(const sessiond::v1::internal::ClusterState& cluster,
                        const replication::ConfState& conf, uint32_t level) {
  const std::optional<LowestCommandLevel> lowest =
      LowestPublishedLevel(cluster, conf);
  return lowest && lowest->level >= level;
}

}  // namespace sessiond::storage
