// Copyright sessiond authors. Licensed under the Apache License 2.0.
#ifndef SESSIOND_COMMON_FAULT_POINT_H_
#define SESSIOND_COMMON_FAULT_POINT_H_

#include <atomic>
#include <string_view>

namespace sessiond {

// Named crash points for fault tests on real binaries (Kudu's MAYBE_FAULT).
//
// A test starts sessiond with --fault_point=<name>[@<n>] (or the environment
// variable SESSIOND_FAULT_POINT=<name>[@<n>]); when execution reaches
// SESSIOND_FAULT_POINT("<name>") for the n-th time (default: the first), the
// process exits at once with kFaultPointExitCode, skipping every destructor,
// as a power cut would. The count lets a test crash in the middle of a load
// rather than at start-up, which passes every point once.
// With a stall, <name>[@<n>]~<ms>, the point never crashes: from its n-th
// hit on, every hit sleeps <ms> milliseconds instead (a slow disk or a
// busy stage, for tests of what waits on it).
// With a failure, <name>[@<n>]!, the point never crashes either: its n-th
// pass through SESSIOND_FAULT_POINT_FAILS("<name>") returns true, once,
// and every other pass false; the code there then fails as it would on a
// real error (storage/database.cc: a RocksDB that stops taking writes).
// With a hold, <name>[@<n>]?, the point never crashes either: from its
// n-th hit on, every hit waits until the next ArmFaultPoint (an empty spec
// included), so a test decides when the code there goes on.
// When no fault point is armed the check is one relaxed atomic load.
inline constexpr int kFaultPointExitCode = 86;

// Arms `spec` ("name", "name@n", n >= 1, either with "~ms", ms >= 1, or
// with "!", or with "?") for
// this process. An empty spec disarms. Returns false (and arms nothing)
// when the count or the stall is malformed.
// Thread-safe.
bool ArmFaultPoint(std::string_view spec);

namespace internal {
extern std::atomic<bool> fault_point_armed;
void MaybeCrashAtFaultPoint(std::string_view name);
bool FaultPointFailsNow(std::string_view name);
}  // namespace internal

}  // namespace sessiond

#define SESSIOND_FAULT_POINT(name)                        \
  do {                                                    \
    if (::sessiond::internal::fault_point_armed.load(     \
            std::memory_order_relaxed))                   \
      ::sessiond::internal::MaybeCrashAtFaultPoint(name); \
  } while (0)

// True at the one pass a "<name>[@<n>]!" spec names (see above).
#define SESSIOND_FAULT_POINT_FAILS(name)                                      \
  (::sessiond::internal::fault_point_armed.load(std::memory_order_relaxed) && \
   ::sessiond::internal::FaultPointFailsNow(name))

#endif  // SESSIOND_COMMON_FAULT_POINT_H_
