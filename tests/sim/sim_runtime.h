// Copyright sessiond authors. Licensed under the Apache License 2.0.
#ifndef SESSIOND_TESTS_SIM_SIM_RUNTIME_H_
#define SESSIOND_TESTS_SIM_SIM_RUNTIME_H_

#include <array>
#include <cstdint>
#include <optional>
#include <string>

#include "absl/time/time.h"
#include "common/rng.h"
#include "replication/runtime.h"

namespace sessiond::sim {

// How long the simulated disk (the log-writer stage) and apply stage take to
// pick up work they are woken for, in steps.
struct NodeTiming {
  uint32_t min_disk = 1;
  uint32_t max_disk = 3;
  uint32_t min_apply = 0;
  uint32_t max_apply = 2;
};

// The Runtime of one simulated node: the production NodeDriver's stages run
// on the simulation's clock instead of on threads.
//
// Wake(stage) makes the stage due after a seeded delay: the log writer after
// a disk delay (NodeTiming::min_disk..max_disk steps, so every log write, and
// every message waiting for it, completes that much later), the apply stage
// after an apply delay, the driver and completion stages in the same step. A
// stage already due keeps its time: its run takes everything queued by then
// (the driver's group commit). The node's owner runs the due stages in stage
// order (NextDue, Run), so a seed replays exactly. Elapsed() is the node's
// own clock: its tick count (which the Cluster advances, slower for a
// drifting node) times the tick interval. Stop() does nothing: a crash
// destroys the runtime with whatever was due, as a power cut would.
//
// Not thread-safe: the whole simulation runs in one thread, which is all the
// Runtime contract asks of concurrent callers. Owned by its SimNode, one per
// incarnation of the node.
class SimRuntime : public replication::Runtime {
 public:
  // `now` (the current step), `rng`, `timing` and `ticks` must outlive this.
  SimRuntime(const uint64_t* now, Rng* rng, const NodeTiming* timing,
             const int64_t* ticks, absl::Duration tick_interval);

  void Start(replication::StageRunner* runner) override;
  void Wake(replication::Stage stage) override;
  absl::Duration Elapsed() const override;
  void Stop() override {}

  // The first stage, in stage order, that is due at or before now.
  std::optional<replication::Stage> NextDue() const;
  // Runs `stage` once (it stops being due first, so a Wake during the run
  // makes it due again). REQUIRES: Start() was called.
  void Run(replication::Stage stage);
  bool scheduled(replication::Stage stage) const {
    return due_[static_cast<int>(stage)].has_value();
  }
  // The stages due, and when, for failure reports.
  std::string Describe() const;

 private:
  const uint64_t* const now_;
  Rng* const rng_;
  const NodeTiming* const timing_;
  const int64_t* const ticks_;
  const absl::Duration tick_interval_;
  replication::StageRunner* runner_ = nullptr;
  std::array<std::optional<uint64_t>, replication::kNumStages> due_;
};

}  // namespace sessiond::sim

#endif  // SESSIOND_TESTS_SIM_SIM_RUNTIME_H_
