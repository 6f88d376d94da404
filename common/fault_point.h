// Copyright sessiond authors. Licensed under the Apache License 2.0.
#ifndef SESSIOND_COMMON_FAULT_POINT_H_
#define SESSIOND_COMMON_FAULT_POINT_H_

#include <atomic>
#include <string_view>

namespace sessiond {

// Named crash points for fault tests on real binaries (Kudu's MAYBE_FAULT).
//
// A test starts sessiond with --fault_point=<name> (or the environment
// variable SESSIOND_FAULT_POINT=<name>); when execution reaches
// SESSIOND_FAULT_POINT("<name>") the process exits at once with
// kFaultPointExitCode, skipping every destructor, as a power cut would.
// When no fault point is armed the check is one relaxed atomic load.
inline constexpr int kFaultPointExitCode = 86;

// Arms `name` for this process. An empty name disarms. Thread-safe.
void ArmFaultPoint(std::string_view name);

namespace internal {
extern std::atomic<bool> fault_point_armed;
void MaybeCrashAtFaultPoint(std::string_view name);
}  // namespace internal

}  // namespace sessiond

#define SESSIOND_FAULT_POINT(name)                                      \
  do {                                                                  \
    if (::sessiond::internal::fault_point_armed.load(                   \
            std::memory_order_relaxed))                                 \
      ::sessiond::internal::MaybeCrashAtFaultPoint(name);               \
  } while (0)

#endif  // SESSIOND_COMMON_FAULT_POINT_H_
