// Copyright sessiond authors. Licensed under the Apache License 2.0.
#ifndef SESSIOND_TOOLS_CLUSTER_PROBE_H_
#define SESSIOND_TOOLS_CLUSTER_PROBE_H_

#include <grpcpp/channel.h>

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "sessiond/v1/admin.grpc.pb.h"
#include "sessiond/v1/admin.pb.h"

namespace sessiond::tools {

// AdminService.ClusterStatus over a fixed set of node addresses, for the
// benchmark tools: which member leads, and the counters of every member
// (proto/sessiond/v1/admin.proto).
//
// One channel per address, kept while the address answers; a call that
// fails with UNAVAILABLE drops it, so the next call connects afresh instead
// of waiting out gRPC's reconnect backoff (a node that was killed and
// restarted is seen as soon as it listens). Not thread-safe.
class ClusterProbe {
 public:
  explicit ClusterProbe(std::vector<std::string> addresses);

  // One node's answer (each member as that node sees it, each asked
  // directly), within `timeout`.
  absl::StatusOr<v1::ClusterStatusResponse> Ask(const std::string& address,
                                                absl::Duration timeout);

  // The cluster as the first node whose known leader reports itself as
  // leader describes it (a follower may still name a leader that just
  // died), else the first answer; an error when no address answers.
  absl::StatusOr<v1::ClusterStatusResponse> Best(absl::Duration timeout);

  const std::vector<std::string>& addresses() const { return addresses_; }

 private:
  v1::AdminService::Stub* StubFor(const std::string& address);

  const std::vector<std::string> addresses_;
  std::map<std::string, std::unique_ptr<v1::AdminService::Stub>> stubs_;
};

// The member of `status` that leads: the answering node's leader, reachable,
// reporting the role "leader" itself. Null when there is none.
const v1::MemberStatus* LeaderOf(const v1::ClusterStatusResponse& status);

// The member with `node_id`, or null.
const v1::MemberStatus* MemberOf(const v1::ClusterStatusResponse& status,
                                 uint64_t node_id);

}  // namespace sessiond::tools

#endif  // SESSIOND_TOOLS_CLUSTER_PROBE_H_
