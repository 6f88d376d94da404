// Copyright sessiond authors. Licensed under the Apache License 2.0.
#ifndef SESSIOND_SERVER_PENDING_TOUCH_H_
#define SESSIOND_SERVER_PENDING_TOUCH_H_

#include <cstdint>
#include <vector>

#include "storage/token.h"

namespace sessiond::server {

// A touch a validation asked for, held back until its answer is sure to
// reach the caller (a batch that succeeds whole, a stream's answer once
// written): a call that fails records none.
struct PendingTouch {
  storage::TokenHash hash;
  int64_t seen_at_ms = 0;
  int64_t idle_judged_at_ms = 0;
  // The session's idle timeout (0: none): its touch reaches the log within
  // a third of it, whatever the flush interval (TouchBuffer::Record).
  int64_t idle_timeout_ms = 0;
};

// The touches a stopped TouchBuffer still held (none of them reached the
// log), and the stall they were kept through (0: none): what a daemon
// restarted in place takes over from the one before it (Adopt). Dropped, a
// lone voter restarted to end a full disk would idle out every user active
// through the outage: their last touches in the log are as old as the
// outage, and the stall that kept idle time from counting would be gone.
struct UnlandedTouches {
  std::vector<PendingTouch> touches;
  int64_t stalled_since_ms = 0;
};

}  // namespace sessiond::server

#endif  // SESSIOND_SERVER_PENDING_TOUCH_H_
