// Copyright sessiond authors. Licensed under the Apache License 2.0.
#ifndef SESSIOND_TESTS_SIM_STALENESS_CLAIMS_H_
#define SESSIOND_TESTS_SIM_STALENESS_CLAIMS_H_

#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/time/time.h"
#include "replication/core/types.h"
#include "replication/node_driver.h"

namespace sessiond::sim {

// Checks what each node says of its own staleness (NodeStatus::
// current_as_of, which LOCAL reads report as staleness_ms): a node whose
// state, by its word, held everything committed as of time T on its clock
// must have applied every write acknowledged before T. Less an allowance:
// a leader's message is dated by the leader (when a quorum last heard it),
// and its time in the network, which the receiver cannot see, counts as
// fresh (docs/API.md).
//
// Every node's clock is read when each write is acknowledged, so claims are
// compared on the claimant's own clock. Not thread-safe; owned by the
// Cluster.
class StalenessClaims {
 public:
  explicit StalenessClaims(absl::Duration allowance) : allowance_(allowance) {}

  // A write at `index` was acknowledged when the nodes' clocks read
  // `clocks`. A node first named here holds to every write acknowledged
  // before it existed.
  void OnAcked(LogIndex index, const std::map<NodeId, absl::Duration>& clocks);

  // A violation of `node`'s claim in `status`, if any.
  std::optional<std::string> Check(NodeId node,
                                   const replication::NodeStatus& status) const;

 private:
  struct Acked {
    absl::Duration clock;  // the node's clock at the acknowledgement
    LogIndex through;      // the highest index acknowledged by then
  };
  const absl::Duration allowance_;
  LogIndex highest_;
  // Per node, in acknowledgement order (its clock never goes back).
  std::map<NodeId, std::vector<Acked>> acked_;
};

}  // namespace sessiond::sim

#endif  // SESSIOND_TESTS_SIM_STALENESS_CLAIMS_H_
