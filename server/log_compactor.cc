// Copyright sessiond authors. Licensed under the Apache License 2.0.
#include "server/log_compactor.h"

#include <algorithm>
#include <cstdio>
#include <set>
#include <string>

#include "common/log.h"

namespace sessiond::server {

LogCompactor::LogCompactor(const LogCompactorOptions& options,
                           storage::SessionStateMachine* state_machine,
                           const replication::LogReader* log,
                           const storage::SnapshotFiles* snapshots,
                           replication::NodeDriver* driver)
    : options_(options),
      state_machine_(state_machine),
      log_(log),
      snapshots_(snapshots),
      driver_(driver),
      task_("sd-compactor", options.interval, [this] {
        const absl::StatusOr<LogIndex> compacted = CompactOnce();
        if (!compacted.ok()) {
          logging::Warn("compaction.skipped",
                        logging::Fields().Error(compacted.status()));
        }
      }) {
  absl::StatusOr<replication::Snapshot> current = log_->GetSnapshot();
  absl::MutexLock lock(&mu_);
  if (current.ok()) last_snapshot_ = current->meta.index;
}

LogCompactor::~LogCompactor() { Stop(); }

void LogCompactor::Stop() { task_.Stop(); }

absl::StatusOr<LogIndex> LogCompactor::CompactOnce(bool force) {
  absl::MutexLock lock(&mu_);
  const LogIndex applied = state_machine_->applied_index();
  // A snapshot received from the leader and installed is this node's image
  // of its index too: another of the same state would only take the disk
  // (twice the whole state, on an idle node until a later one passes it).
  if (absl::StatusOr<replication::Snapshot> held = log_->GetSnapshot();
      held.ok() && held->meta.index > last_snapshot_) {
    last_snapshot_ = held->meta.index;
    images_replaced_ = false;
  }
  // The last round's image may have been recorded by the driver since: the
  // one it replaces goes now, not at the next snapshot (days away on an
  // idle node).
  if (!images_replaced_) RemoveImagesTheLogReplaced();
  if (applied <= last_snapshot_) return LogIndex(0);
  // The log's image is damaged: replaced as soon as there is anything to
  // replace it with.
  const uint64_t corrupt = corrupt_image_index_.load(std::memory_order_relaxed);
  const bool replacing = corrupt != 0 && corrupt >= last_snapshot_.value();
  if (!force && !replacing && applied - last_snapshot_ < options_.min_entries) {
    return LogIndex(0);
  }
  // A full disk: a snapshot image is the whole state again; wait for space.
  if (!force && driver_->status().log_stalled) return LogIndex(0);
  absl::StatusOr<replication::Snapshot> snapshot =
      state_machine_->CreateSnapshot();
  if (!snapshot.ok()) return snapshot.status();
  const LogIndex index = snapshot->meta.index;
  driver_->CompactLog(*std::move(snapshot));
  last_snapshot_ = index;
  images_replaced_ = false;
  RemoveImagesTheLogReplaced();
  return index;
}

void LogCompactor::ReplaceCorruptImage(LogIndex index) {
  uint64_t known = corrupt_image_index_.load(std::memory_order_relaxed);
  while (known < index.value() &&
         !corrupt_image_index_.compare_exchange_weak(known, index.value())) {
  }
  task_.RunSoon();
}

void LogCompactor::RemoveImagesTheLogReplaced() {
  // Images older than the log's snapshot are no longer needed, with two
  // exceptions:
  //  - the log names the previous image until the driver's write lands, so
  //    that one stays until a later round sees the new one recorded;
  //  - on a follower, the log records a received image before the state
  //    loads it, and a newer one can be recorded while the state still
  //    loads an older one: an image above the applied index may be open for
  //    that, so it stays until the state passes it.
  // Images newer than the log's (this round's, or one received from a
  // leader and not installed yet) are never removed.
  absl::StatusOr<replication::Snapshot> current = log_->GetSnapshot();
  if (!current.ok()) return;
  std::set<std::string> keep;
  if (auto ref = storage::DecodeSnapshotRef(current->data); ref.ok()) {
    keep.insert(ref->file());
  }
  const LogIndex applied = state_machine_->applied_index();
  snapshots_->RemoveOlderThan(std::min(current->meta.index, applied + 1), keep);
  images_replaced_ =
      current->meta.index >= last_snapshot_ && applied >= current->meta.index;
}

}  // namespace sessiond::server
