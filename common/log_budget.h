// Copyright sessiond authors. Licensed under the Apache License 2.0.
#ifndef SESSIOND_COMMON_LOG_BUDGET_H_
#define SESSIOND_COMMON_LOG_BUDGET_H_

#include <cstdint>
#include <utility>

#include "absl/time/time.h"

namespace sessiond::logging {

// A share of log lines per window for an event that something outside the
// process can repeat at will (a peer sending malformed messages, a failing
// disk making RocksDB repeat itself): the log must stay readable, and
// writing it must not become the work that slows the thread down. The first
// `lines_per_window` lines of each window go out; the rest are counted, and
// the next line that goes out says how many were left out.
//
// Time is any monotonic reading (steady clock, the Runtime's clock), so a
// wall-clock step neither opens nor closes a window. Not thread-safe: it
// belongs to the thread that logs, or sits under the caller's lock.
class LogBudget {
 public:
  LogBudget(int lines_per_window, absl::Duration window)
      : lines_per_window_(lines_per_window), window_(window) {}

  // Whether a line may go out at `now`. When it may, `*suppressed` is the
  // number of lines left out since the last one that went out (0: none).
  bool Admit(absl::Duration now, uint64_t* suppressed) {
    if (!started_ || now - window_start_ >= window_) {
      started_ = true;
      window_start_ = now;
      lines_in_window_ = 0;
    }
    if (lines_in_window_ >= lines_per_window_) {
      ++suppressed_;
      return false;
    }
    ++lines_in_window_;
    *suppressed = std::exchange(suppressed_, 0);
    return true;
  }

 private:
  const int lines_per_window_;
  const absl::Duration window_;
  bool started_ = false;
  absl::Duration window_start_;
  int lines_in_window_ = 0;
  uint64_t suppressed_ = 0;
};

}  // namespace sessiond::logging

#endif  // SESSIOND_COMMON_LOG_BUDGET_H_
