// Copyright sessiond authors. Licensed under the Apache License 2.0.
#include "tests/sim/staleness_claims.h"

#include <algorithm>

#include "absl/strings/str_cat.h"

namespace sessiond::sim {

void StalenessClaims::OnAcked(LogIndex index,
                              const std::map<NodeId, absl::Duration>& clocks) {
  const LogIndex before = highest_;
  highest_ = std::max(highest_, index);
  for (const auto& [node, clock] : clocks) {
    auto [it, added] = acked_.try_emplace(node);
    if (added && before > LogIndex(0)) {
      it->second.push_back({-absl::InfiniteDuration(), before});
    }
    it->second.push_back({clock, highest_});
  }
}

std::optional<std::string> StalenessClaims::Check(
    NodeId node, const replication::NodeStatus& status) const {
  if (status.current_as_of == -absl::InfiniteDuration()) return std::nullopt;
  // A node with no acknowledgement since it was added owes every one.
  Acked owed{-absl::InfiniteDuration(), highest_};
  if (auto it = acked_.find(node); it != acked_.end()) {
    const std::vector<Acked>& acked = it->second;
    // The last write acknowledged more than the allowance before the claim.
    const absl::Duration before = status.current_as_of - allowance_;
    auto past =
        std::partition_point(acked.begin(), acked.end(),
                             [&](const Acked& a) { return a.clock < before; });
    if (past == acked.begin()) return std::nullopt;
    owed = *std::prev(past);
  }
  if (status.applied >= owed.through) return std::nullopt;
  return absl::StrCat(
      "staleness claim: node ", node.value(), " says it is current as of ",
      absl::FormatDuration(status.current_as_of), " on its clock, applied ",
      status.applied.value(), ", but index ", owed.through.value(),
      " was acknowledged by ", absl::FormatDuration(owed.clock), " (allowance ",
      absl::FormatDuration(allowance_), "); it is ",
      replication::RoleName(status.role), " in term ", status.term.value(),
      ", leader ", status.leader.value(), ", heard commit ",
      status.leader_commit.value(), ", last leader contact ",
      absl::FormatDuration(status.last_leader_contact));
}

}  // namespace sessiond::sim
