// Copyright sessiond authors. Licensed under the Apache License 2.0.
//
// The seam between the NodeDriver's logic and the world it runs in: which
// thread runs each stage of the write path, and what time it is. There is one
// driver (replication/node_driver.cc); it runs on threads and a steady clock
// in production (ThreadRuntime) and inside the deterministic simulation
// (tests/sim), where one thread runs every stage of every node after seeded
// delays and time is simulated (FoundationDB's simulation of its real code).
#ifndef SESSIOND_REPLICATION_RUNTIME_H_
#define SESSIOND_REPLICATION_RUNTIME_H_

#include <cstdint>

#include "absl/time/time.h"

namespace sessiond::replication {

// The stages of the driver, each fed by its own queue. A stage's run drains
// what is queued and returns; it never waits for another stage.
enum class Stage : uint8_t {
  kDriver = 0,      // owns the RaftCore: inbox in, Ready out
  kLogWriter = 1,   // synced LogStore writes (group commit)
  kApply = 2,       // StateMachine::Apply, snapshots, read completion
  kCompletion = 3,  // proposers' and readers' callbacks
};
inline constexpr int kNumStages = 4;

const char* StageName(Stage stage);

// What a Runtime runs: the NodeDriver.
class StageRunner {
 public:
  virtual ~StageRunner() = default;
  // Processes the work queued for `stage`. Never called concurrently for the
  // same stage; different stages may run concurrently.
  virtual void RunStage(Stage stage) = 0;
};

// Thread-safe.
class Runtime {
 public:
  virtual ~Runtime() = default;

  // Starts running stages of `runner` (which must outlive Stop()).
  virtual void Start(StageRunner* runner) = 0;

  // `stage` has work queued: RunStage(stage) must follow (at least once,
  // after this call). Never blocks on the stage. May be called from any
  // stage and from any other thread.
  virtual void Wake(Stage stage) = 0;

  // Monotonic time since an arbitrary origin. The driver derives Raft ticks
  // from it, so a process that was paused catches up on the ticks it missed
  // before it answers anything (a lease must not outlive a pause).
  virtual absl::Duration Elapsed() const = 0;

  // Stops running stages. ThreadRuntime runs each stage a last time, in
  // stage order, so work already handed to the log writer, the apply stage
  // and the completion stage is finished; a simulated crash drops it.
  // Idempotent.
  virtual void Stop() = 0;
};

}  // namespace sessiond::replication

#endif  // SESSIOND_REPLICATION_RUNTIME_H_
