// Copyright sessiond authors. Licensed under the Apache License 2.0.
#ifndef SESSIOND_SERVER_PEER_WALL_CLOCKS_H_
#define SESSIOND_SERVER_PEER_WALL_CLOCKS_H_

#include <cstdint>
#include <functional>
#include <map>
#include <optional>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/strong_types.h"

namespace sessiond::server {

// How far a node's wall clock may be from the members' median for it to
// sign a JWT (server/session_service.cc, JwtWallMs).
inline constexpr int64_t kMaxSignerClockOffMs = 60'000;

struct PeerWallClocksOptions {
  // A peer's reading, or a judgement told, counts for this long after it
  // arrived.
  absl::Duration fresh_for = absl::Seconds(10);
  // Of an even count of clocks, the two middle ones further apart than
  // this: half the clocks against the other half, no verdict.
  int64_t tie_ms = kMaxSignerClockOffMs;
  // Tests inject clocks.
  std::function<int64_t()> wall_ms;    // default: the system clock
  std::function<int64_t()> steady_ms;  // default: the steady clock
};

// How far this node's wall clock, and each peer's, is from the median of
// the members' wall clocks. A JWT is the one thing a node stamps with its
// own wall clock (its iat and exp are checked against each verifier's), so
// a node whose clock is off must not sign one. Cluster time cannot tell:
// after a whole-cluster outage it runs behind every wall clock by the
// outage's length for hours, so a clock stepped back by less passed a
// comparison with it, and one stepped ahead always did.
//
// Every batch of Raft messages carries its sender's wall clock reading
// (Heard): the receiver's estimate of the sender's offset is the reading
// minus its own wall clock at receipt, wrong by the batch's transit time
// (milliseconds, against a threshold of a minute). A node that has fresh
// readings from at least two peers (the leader, which hears every member)
// judges from the median of those and its own; it tells each peer its
// judgement in its next batch (Told), so followers, which hear only the
// leader, learn theirs. Of an even count the median is the lower middle
// clock, unless the two middle ones disagree (tie_ms): then half the
// clocks stand against the other half and there is no verdict.
//
// Every offset is kept with this node's wall and steady readings when it
// arrived, and is judged against the wall clock read now: a step of this
// node's own wall clock since (wall time moved other than steady time did)
// moves every offset by the step at once, so a clock stepped back is judged
// by the reading it would sign, not only once the next batches arrive.
//
// Thread-safe: written by the peer service's readers, read by the peer
// transport's senders and by create calls.
class PeerWallClocks {
 public:
  explicit PeerWallClocks(PeerWallClocksOptions options = {});

  // This node's wall clock, as stamped into its batches.
  int64_t WallMs() const;

  // A batch from `peer` stamped `peer_wall_ms` (0: a binary from before
  // stamps; not a Unix time in ms before the year 5000: ignored too).
  void Heard(NodeId peer, int64_t peer_wall_ms) ABSL_LOCKS_EXCLUDED(mu_);
  // A peer's judgement of this node's clock (its OffMedianMs(this node)).
  void Told(int64_t off_median_ms) ABSL_LOCKS_EXCLUDED(mu_);

  // `peer`'s wall clock minus the members' median, when this node knows
  // fresh readings from at least two peers (none otherwise).
  std::optional<int64_t> OffMedianMs(NodeId peer) const
      ABSL_LOCKS_EXCLUDED(mu_);
  // This node's: judged here when it can (as above), otherwise the last
  // judgement a peer told it while that is fresh; none otherwise (a single
  // node, a follower cut off from its leader, peers from before stamps).
  std::optional<int64_t> OwnOffMedianMs() const ABSL_LOCKS_EXCLUDED(mu_);

 private:
  struct Reading {
    int64_t off_ms = 0;  // the peer's clock minus this node's; or the verdict
    int64_t at_wall_ms = 0;  // this node's clocks when it arrived
    int64_t at_steady_ms = 0;
  };
  struct Now {
    int64_t wall_ms;
    int64_t steady_ms;
  };
  Now ReadClocks() const;
  bool Fresh(const Reading& r, const Now& now) const;
  // How far this node's wall clock has stepped since `r` arrived.
  static int64_t OwnStepSince(const Reading& r, const Now& now);
  // The median offset of this node's (0) and its peers' fresh readings, as
  // of `now`; none with fewer than three, or at a tie.
  std::optional<int64_t> MedianOffsetMs(const Now& now) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const PeerWallClocksOptions options_;
  mutable absl::Mutex mu_;
  std::map<NodeId, Reading> readings_ ABSL_GUARDED_BY(mu_);
  std::optional<Reading> told_ ABSL_GUARDED_BY(mu_);
};

}  // namespace sessiond::server

#endif  // SESSIOND_SERVER_PEER_WALL_CLOCKS_H_
