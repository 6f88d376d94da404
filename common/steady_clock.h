// Copyright sessiond authors. Licensed under the Apache License 2.0.
#ifndef SESSIOND_COMMON_STEADY_CLOCK_H_
#define SESSIOND_COMMON_STEADY_CLOCK_H_

#include <chrono>
#include <cstdint>

namespace sessiond {

// The steady clock's reading, for intervals no wall-clock step may stretch
// or shorten (docs/ARCHITECTURE.md, "Time"). Its epoch is arbitrary (boot):
// compare readings, never show them.
inline int64_t SteadyNowNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

inline int64_t SteadyNowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

}  // namespace sessiond

#endif  // SESSIOND_COMMON_STEADY_CLOCK_H_
