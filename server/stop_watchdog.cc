// Copyright sessiond authors. Licensed under the Apache License 2.0.
#include "server/stop_watchdog.h"

#include <pthread.h>

#include <utility>

#include "absl/strings/str_cat.h"
#include "common/log.h"

namespace sessiond::server {

StopWatchdog::StopWatchdog(absl::Duration timeout, std::string what,
                           std::function<void()> give_up)
    : what_(std::move(what)),
      give_up_(std::move(give_up)),
      thread_([this, timeout] { Watch(timeout); }) {}

StopWatchdog::~StopWatchdog() {
  done_.Notify();
  thread_.join();
}

void StopWatchdog::Watch(absl::Duration timeout) {
  pthread_setname_np(pthread_self(), "sd-stop-watch");
  // By the steady clock: a wall clock stepped during a stuck teardown must
  // neither stretch the wait (by a day) nor cut a clean one short.
  if (done_.WaitForNotificationWithTimeout(timeout)) return;
  logging::Error(
      "shutdown.stuck",
      logging::Fields()
          .Add("what", what_)
          .Add("timeout_ms", absl::ToInt64Milliseconds(timeout))
          .Add("msg",
               absl::StrCat("the ", what_,
                            " did not finish in time (RocksDB "
                            "7.8 can hang closing a database after its disk "
                            "filled): cutting it short, as a crash would; "
                            "every acknowledged write is in the log on "
                            "disk")));
  give_up_();
}

}  // namespace sessiond::server
