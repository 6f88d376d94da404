// Copyright sessiond authors. Licensed under the Apache License 2.0.
#include "common/fault_point.h"

#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <string>

#include "absl/base/const_init.h"
#include "absl/strings/numbers.h"
#include "absl/synchronization/mutex.h"

namespace sessiond {
namespace {

absl::Mutex armed_name_mutex(absl::kConstInit);
std::string* armed_name ABSL_GUARDED_BY(armed_name_mutex) = nullptr;
// Hits of the armed point still to pass before the crash (or the stalls).
uint64_t hits_before_crash ABSL_GUARDED_BY(armed_name_mutex) = 0;
// > 0: no crash; from that hit on, each hit sleeps this long.
uint64_t stall_ms ABSL_GUARDED_BY(armed_name_mutex) = 0;
// A "!" spec: the point fails once (SESSIOND_FAULT_POINT_FAILS) and never
// crashes; `failed` once it has.
bool fail_mode ABSL_GUARDED_BY(armed_name_mutex) = false;
bool failed ABSL_GUARDED_BY(armed_name_mutex) = false;
// A "?" spec: from its hit on, each hit waits until the next ArmFaultPoint
// (which counts up `arming`).
bool hold_mode ABSL_GUARDED_BY(armed_name_mutex) = false;
uint64_t arming ABSL_GUARDED_BY(armed_name_mutex) = 0;

// Whether ArmFaultPoint ran since `arming` was `*then`.
bool ArmedSince(const uint64_t* then)
    ABSL_EXCLUSIVE_LOCKS_REQUIRED(armed_name_mutex) {
  return arming != *then;
}

struct ArmFromEnvironment {
  ArmFromEnvironment() {
    if (const char* name = std::getenv("SESSIOND_FAULT_POINT")) {
      ArmFaultPoint(name);
    }
  }
} arm_from_environment;

}  // namespace

namespace internal {
std::atomic<bool> fault_point_armed{false};

void MaybeCrashAtFaultPoint(std::string_view name) {
  uint64_t stall = 0;
  {
    absl::MutexLock lock(&armed_name_mutex);
    if (armed_name == nullptr || *armed_name != name || fail_mode) return;
    if (hits_before_crash > 0) {
      --hits_before_crash;
      return;
    }
    stall = stall_ms;
    if (hold_mode) {
      // Until a test arms again (or disarms): the others pass meanwhile.
      const uint64_t held_at = arming;
      armed_name_mutex.Await(absl::Condition(&ArmedSince, &held_at));
      return;
    }
  }
  if (stall > 0) {
    // Outside the lock: other threads pass their points meanwhile.
    usleep(static_cast<useconds_t>(stall * 1000));
    return;
  }
  std::fprintf(stderr, "fault point %.*s reached: exiting with %d\n",
               static_cast<int>(name.size()), name.data(), kFaultPointExitCode);
  std::fflush(stderr);
  _exit(kFaultPointExitCode);
}
bool FaultPointFailsNow(std::string_view name) {
  absl::MutexLock lock(&armed_name_mutex);
  if (armed_name == nullptr || *armed_name != name || !fail_mode || failed) {
    return false;
  }
  if (hits_before_crash > 0) {
    --hits_before_crash;
    return false;
  }
  failed = true;
  std::fprintf(stderr, "fault point %.*s reached: failing this pass\n",
               static_cast<int>(name.size()), name.data());
  return true;
}
}  // namespace internal

bool ArmFaultPoint(std::string_view spec) {
  uint64_t stall = 0;
  const bool fails = !spec.empty() && spec.back() == '!';
  if (fails) spec.remove_suffix(1);
  const bool holds = !fails && !spec.empty() && spec.back() == '?';
  if (holds) spec.remove_suffix(1);
  if (const size_t tilde = spec.find('~'); tilde != std::string_view::npos) {
    const std::string ms(spec.substr(tilde + 1));
    if (fails || holds || !absl::SimpleAtoi(ms, &stall) || stall == 0) {
      return false;
    }
    spec = spec.substr(0, tilde);
  }
  std::string_view name = spec;
  uint64_t nth = 1;
  if (const size_t at = spec.find('@'); at != std::string_view::npos) {
    name = spec.substr(0, at);
    const std::string count(spec.substr(at + 1));
    if (!absl::SimpleAtoi(count, &nth) || nth == 0) return false;
  }
  absl::MutexLock lock(&armed_name_mutex);
  delete armed_name;
  armed_name = name.empty() ? nullptr : new std::string(name);
  hits_before_crash = nth - 1;
  stall_ms = stall;
  fail_mode = fails;
  failed = false;
  hold_mode = holds;
  ++arming;  // releases the hits held so far
  internal::fault_point_armed.store(!name.empty(), std::memory_order_relaxed);
  return true;
}

}  // namespace sessiond
