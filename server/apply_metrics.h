// Copyright sessiond authors. Licensed under the Apache License 2.0.
#ifndef SESSIOND_SERVER_APPLY_METRICS_H_
#define SESSIOND_SERVER_APPLY_METRICS_H_

#include <array>
#include <cstdint>
#include <vector>

#include "common/metrics.h"
#include "common/metrics_exposition.h"
#include "replication/state_machine.h"

namespace sessiond::server {

// What this node applied, by kind of command: sessions created, expired by
// the sweeper, revoked (one by one, a user's, in bulk, by a flush),
// restored, purged, and touch batches. Counted from each applied entry's
// command kind and result, so every member counts the same events (a
// member that installed a snapshot skips what it covered; entries replayed
// at start count again): aggregate members with max, not sum.
//
// Thread-safe: Count runs on the apply thread (relaxed atomic adds), the
// accessors and Collect anywhere.
class ApplyMetrics {
 public:
  enum class RevokeKind { kSession = 0, kUser = 1, kBulk = 2, kFlush = 3 };
  static constexpr int kRevokeKinds = 4;

  // Counts one applied entry and its result. Reads the command's kind from
  // its top-level field tags only (no parse of its body).
  void Count(const replication::Entry& entry,
             const replication::ApplyResult& result);

  uint64_t created() const { return created_.value(); }
  uint64_t expired() const { return expired_.value(); }
  uint64_t revoked(RevokeKind kind) const {
    return revoked_[static_cast<int>(kind)].value();
  }
  uint64_t restored() const { return restored_.value(); }
  uint64_t purged() const { return purged_.value(); }
  uint64_t touch_batches() const { return touch_batches_.value(); }
  uint64_t touched() const { return touched_.value(); }

  // sessiond_sessions_{created,expired,revoked,restored,purged,touched}_total
  // and sessiond_touch_batches_total (docs/OPERATIONS.md, "Metrics").
  void Collect(metrics::ExpositionWriter* writer) const;

 private:
  metrics::Counter created_;
  metrics::Counter expired_;
  std::array<metrics::Counter, kRevokeKinds> revoked_;
  metrics::Counter restored_;
  metrics::Counter purged_;
  metrics::Counter touch_batches_;
  metrics::Counter touched_;
};

// The replication::StateMachine the driver is given: forwards every call to
// `inner` and counts each applied entry in `metrics`. Both must outlive it.
//
// Thread safety: that of `inner` (Apply from the apply stage only).
class CountingStateMachine : public replication::StateMachine {
 public:
  CountingStateMachine(replication::StateMachine* inner, ApplyMetrics* metrics)
      : inner_(inner), metrics_(metrics) {}

  absl::StatusOr<std::vector<replication::ApplyResult>> Apply(
      const std::vector<replication::Entry>& entries) override;
  void StopRetryingWrites() override { inner_->StopRetryingWrites(); }
  LogIndex applied_index() const override { return inner_->applied_index(); }
  absl::StatusOr<replication::Snapshot> CreateSnapshot() override {
    return inner_->CreateSnapshot();
  }
  absl::Status ApplySnapshot(const replication::Snapshot& snapshot) override {
    return inner_->ApplySnapshot(snapshot);
  }

 private:
  replication::StateMachine* const inner_;  // outlives this
  ApplyMetrics* const metrics_;             // outlives this
};

}  // namespace sessiond::server

#endif  // SESSIOND_SERVER_APPLY_METRICS_H_
