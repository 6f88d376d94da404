// Copyright sessiond authors. Licensed under the Apache License 2.0.
#include "tests/sim/sim_runtime.h"

#include "absl/strings/str_cat.h"

namespace sessiond::sim {

using replication::Stage;

SimRuntime::SimRuntime(const uint64_t* now, Rng* rng, const NodeTiming* timing,
                       const int64_t* ticks, absl::Duration tick_interval)
    : now_(now),
      rng_(rng),
      timing_(timing),
      ticks_(ticks),
      tick_interval_(tick_interval) {}

void SimRuntime::Start(replication::StageRunner* runner) { runner_ = runner; }

void SimRuntime::Wake(Stage stage) {
  std::optional<uint64_t>& due = due_[static_cast<int>(stage)];
  if (due) return;
  uint64_t delay = 0;
  switch (stage) {
    case Stage::kLogWriter:
      delay = rng_->Range(timing_->min_disk, timing_->max_disk);
      break;
    case Stage::kApply:
      delay = rng_->Range(timing_->min_apply, timing_->max_apply);
      break;
    case Stage::kDriver:
    case Stage::kCompletion:
      break;
  }
  due = *now_ + delay;
}

absl::Duration SimRuntime::Elapsed() const { return *ticks_ * tick_interval_; }

std::optional<Stage> SimRuntime::NextDue() const {
  for (int i = 0; i < replication::kNumStages; ++i) {
    if (due_[i] && *due_[i] <= *now_) return static_cast<Stage>(i);
  }
  return std::nullopt;
}

void SimRuntime::Run(Stage stage) {
  due_[static_cast<int>(stage)].reset();
  runner_->RunStage(stage);
}

std::string SimRuntime::Describe() const {
  std::string out;
  for (int i = 0; i < replication::kNumStages; ++i) {
    if (!due_[i]) continue;
    absl::StrAppend(&out, out.empty() ? "" : " ",
                    replication::StageName(static_cast<Stage>(i)), "@",
                    *due_[i]);
  }
  return out.empty() ? "idle" : out;
}

}  // namespace sessiond::sim
