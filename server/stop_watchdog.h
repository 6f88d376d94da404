// Copyright sessiond authors. Licensed under the Apache License 2.0.
#ifndef SESSIOND_SERVER_STOP_WATCHDOG_H_
#define SESSIOND_SERVER_STOP_WATCHDOG_H_

#include <functional>
#include <string>
#include <thread>

#include "absl/time/time.h"
#include "common/steady_cond_var.h"

namespace sessiond::server {

// Bounds the teardown of a Daemon (a shutdown, or the first half of a
// restart in place). Everything a client was told is durable is in the Raft
// log on disk, synced, so a teardown that never ends may be cut short the
// way a crash would cut it: RocksDB 7.8's DB::Close can wait forever for a
// recovery flush after its disk filled (atomic_flush; fixed upstream in
// 8.6.6), and a node that restarts itself once the disk has room again
// would hang there.
//
// Armed for its lifetime: if it is not destroyed within `timeout`, its own
// thread logs `shutdown.stuck` (error) and calls `give_up`, which must not
// return (it exits or execs).
//
// Thread-safe: one watchdog thread, disarmed by the destructor.
class StopWatchdog {
 public:
  // `what` names the teardown in the log ("shutdown", "restart in place").
  StopWatchdog(absl::Duration timeout, std::string what,
               std::function<void()> give_up);
  ~StopWatchdog();  // disarms, joins

  StopWatchdog(const StopWatchdog&) = delete;
  StopWatchdog& operator=(const StopWatchdog&) = delete;

 private:
  void Watch(absl::Duration timeout);

  const std::string what_;
  const std::function<void()> give_up_;
  SteadyNotification done_;  // the teardown finished
  std::thread thread_;       // last: started once the rest is set
};

}  // namespace sessiond::server

#endif  // SESSIOND_SERVER_STOP_WATCHDOG_H_
