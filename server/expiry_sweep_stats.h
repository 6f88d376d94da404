// Copyright sessiond authors. Licensed under the Apache License 2.0.
#ifndef SESSIOND_SERVER_EXPIRY_SWEEP_STATS_H_
#define SESSIOND_SERVER_EXPIRY_SWEEP_STATS_H_

#include <atomic>
#include <cstdint>

namespace sessiond::server {

// What the leader's sweeps found, kept by the owner so that it outlives a
// sweeper replaced on reload. Read by any thread.
struct ExpirySweepStats {
  // Due sessions the last sweep of this node found (0 on a follower and
  // while the expiry breaker is open).
  std::atomic<uint64_t> last_due{0};
  // Sweeps that found as many due sessions as one sweep may remove
  // (batch x max_commands_per_sweep), so some waited for the next: again
  // and again, the sweeper is behind what expires.
  std::atomic<uint64_t> at_cap{0};
};

}  // namespace sessiond::server

#endif  // SESSIOND_SERVER_EXPIRY_SWEEP_STATS_H_
