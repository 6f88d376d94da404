// Copyright sessiond authors. Licensed under the Apache License 2.0.
#ifndef SESSIOND_SERVER_REMOVAL_WATCH_H_
#define SESSIOND_SERVER_REMOVAL_WATCH_H_

#include <atomic>

#include "replication/core/types.h"
#include "sessiond/v1/peer.pb.h"

namespace sessiond::server {

// Decides when this node has been removed from its cluster, so that it
// stops rather than go on answering for a cluster it has left (its table no
// longer follows the log). What it sees on its own is only a suspicion:
//   - it applies a configuration without itself after one with it. That is
//     its removal, or an old removal replayed on the way to its
//     re-addition (a member removed, then added again on an empty data
//     dir, catches up through both);
//   - a peer refuses its traffic as a removed member's;
//   - it starts with its removal applied and not yet confirmed.
// Only the leader's word settles it (a follower that has not applied the
// re-addition yet still lists it as removed): the daemon asks the leader
// while suspected(), and hands its answer to Judge.
//
// Threading: Start before any other call; OnApplied on the apply thread
// only (it owns the "was a member" memory); OnRemovedRefusal, suspected
// and Judge from any thread.
class RemovalWatch {
 public:
  explicit RemovalWatch(NodeId self) : self_(self) {}

  // The durable applied state at start-up.
  void Start(const replication::ConfState& conf,
             const sessiond::v1::internal::ClusterState& cluster);
  // After each apply batch that changed the configuration.
  void OnApplied(const replication::ConfState& conf);
  // A peer refused this node's traffic as a removed member's.
  void OnRemovedRefusal() { suspected_.store(true); }

  bool suspected() const { return suspected_.load(); }

  enum class Verdict {
    kMember,     // the leader lists it as a member: the suspicion is dropped
    kRemoved,    // the leader lists it as removed: stop
    kUndecided,  // neither (yet): ask again later
  };
  // The leader's Hello answer.
  Verdict Judge(const sessiond::v1::internal::HelloResponse& leader_answer);

 private:
  const NodeId self_;
  std::atomic<bool> suspected_{false};
  bool was_member_ = false;  // apply thread
};

// Whether `cluster` lists `id` among the removed members.
bool ListsAsRemoved(const sessiond::v1::internal::ClusterState& cluster,
                    NodeId id);

}  // namespace sessiond::server

#endif  // SESSIOND_SERVER_REMOVAL_WATCH_H_
