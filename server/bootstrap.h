// Copyright sessiond authors. Licensed under the Apache License 2.0.
//
// Who a data dir belongs to, decided before anything else runs.
//
// A data dir records its cluster id and node id (default CF "identity") the
// first time it starts, and refuses to start under another one.
//
// A new data dir bootstraps only when that is safe:
//   single node       (no --initial_cluster) at once, as its only voter.
//   --initial_cluster_state=new
//                     once a running member of the cluster answers Hello
//                     and does not know this node id as a member that ran
//                     (its start announcement, or Raft messages the peer
//                     received from it: PeerService's heard_from_file),
//                     or every other initial member answers and none has
//                     bootstrapped (a brand-new cluster starts with all its
//                     members). A node whose data dir was wiped must not
//                     come back empty under its old id (two such nodes of
//                     three would form a majority that forgot every
//                     session; etcd's "member already bootstrapped" check):
//                     it refuses with the way back (remove it, add it again,
//                     start it as "existing"), or waits while no running
//                     member answers.
//   --initial_cluster_state=existing
//                     joins a running cluster that already lists this node
//                     as a member that never ran (AdminService.AddMember):
//                     it learns the cluster id from a peer and receives the
//                     log or a snapshot from the leader.
#ifndef SESSIOND_SERVER_BOOTSTRAP_H_
#define SESSIOND_SERVER_BOOTSTRAP_H_

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "replication/core/types.h"
#include "server/config.h"
#include "sessiond/v1/peer.pb.h"
#include "storage/database.h"
#include "storage/raft_log_store.h"

namespace sessiond::server {

struct BootstrapDecision {
  uint64_t cluster_id = 0;
  // A new data dir: the log must be bootstrapped with these voters (unset
  // when joining an existing cluster, or when the data dir had state).
  std::optional<replication::ConfState> bootstrap_conf;
  bool joined_existing = false;
  // Identity.cluster_epoch: the data dir's, or, joining a running
  // cluster, that of the member that answered.
  uint64_t cluster_epoch = 0;
};

// A random non-zero 64-bit number (cluster ids and epochs).
uint64_t RandomNonZeroId();

// Asks every other initial member Hello once; one answer per member.
using HelloAll = std::function<std::map<
    uint64_t, absl::StatusOr<sessiond::v1::internal::HelloResponse>>()>;

struct BootstrapOptions {
  // How long a new member waits for a peer to answer.
  absl::Duration peer_wait = absl::Minutes(10);
  absl::Duration retry_interval = absl::Milliseconds(300);
};

// Reads or decides the identity of `db`'s data dir, and writes it when new.
// FailedPrecondition (with what to do) when the data dir belongs elsewhere
// or a new one must not bootstrap; Unavailable when no peer answered in
// time.
// Whether the peer that answered `hello` has `node_id` as a voter or
// learner.
bool InMembership(const sessiond::v1::internal::HelloResponse& hello,
                  uint64_t node_id);

// Marks `refusal`, a start refused for a reason no restart with the same
// flags and data dir can mend, only an operator (a data dir of another node
// or cluster, a removed member's, a restored backup's, --force_new_cluster
// left on): server/main.cc exits 4 for it, which the systemd unit does not
// restart. The mark is an absl::Status payload, never sent on the wire.
absl::Status NeedsAnOperator(absl::Status refusal);
bool IsForAnOperator(const absl::Status& start_error);

absl::StatusOr<BootstrapDecision> DecideIdentity(
    const Config& config, storage::Database* db,
    const storage::RaftLogStore& log, const HelloAll& hello,
    const BootstrapOptions& options = {});

// Disaster recovery (etcd's --force-new-cluster), for the one member left
// when a majority lost its data for good: appends, as committed entries of
// the current term, the removal of every other member (membership and
// member table), so this node becomes the only voter and serves again with
// everything it holds; the others rejoin with AddMember. Entries its log
// held beyond the commit index are committed too. Run it on one node only,
// once. No-op when this node already is the only member.
// `left_on`: the previous start forced it too (the flag was left on): with
// members added back since, FAILED_PRECONDITION, changing nothing (forcing
// again would drop them, and they, a majority, would go on as a second
// cluster with the same id).
// `decided` (when set) runs once the force is decided, before the log is
// touched, and a failure stops it: the daemon records the new cluster epoch
// there, so a crash in between leaves a log with its old membership and the
// new epoch (refused by its old peers: force it again), never a forced log
// under the old epoch.
absl::Status ForceNewCluster(
    storage::RaftLogStore* log, NodeId self, bool left_on,
    int64_t cluster_time_ms,
    const std::function<absl::Status()>& decided = nullptr);

// Rewrites the identity stored in `db` with `cluster_epoch` (synced).
absl::Status RecordClusterEpoch(storage::Database* db, uint64_t cluster_epoch);

// The identity stored in `db`, if any.
absl::StatusOr<std::optional<sessiond::v1::internal::Identity>> ReadIdentity(
    storage::Database* db);

}  // namespace sessiond::server

#endif  // SESSIOND_SERVER_BOOTSTRAP_H_
