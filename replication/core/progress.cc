// Copyright sessiond authors. Licensed under the Apache License 2.0.
#include "replication/core/progress.h"

#include <algorithm>

namespace sessiond::replication {

void Inflights::Add(LogIndex last, uint64_t bytes) {
  items_.push_back(Item{last, bytes});
  bytes_ += bytes;
}

void Inflights::FreeLE(LogIndex index) {
  while (!items_.empty() && items_.front().last <= index) {
    bytes_ -= items_.front().bytes;
    items_.pop_front();
  }
}

void Inflights::FreeFirstOne() {
  if (items_.empty()) return;
  bytes_ -= items_.front().bytes;
  items_.pop_front();
}

void Inflights::Reset() {
  items_.clear();
  bytes_ = 0;
}

const char* ProgressStateName(ProgressState state) {
  switch (state) {
    case ProgressState::kProbe:
      return "probe";
    case ProgressState::kReplicate:
      return "replicate";
    case ProgressState::kSnapshot:
      return "snapshot";
  }
  return "unknown";
}

void Progress::BecomeProbe() {
  // Leaving snapshot state, resume right after the snapshot: the member has
  // it (or will answer so that the leader backtracks).
  if (state == ProgressState::kSnapshot) {
    next = std::max(match + 1, pending_snapshot + 1);
  } else {
    next = match + 1;
  }
  state = ProgressState::kProbe;
  pending_snapshot = LogIndex(0);
  probe_sent = false;
  snapshot_wait = 0;
  inflights.Reset();
}

void Progress::BecomeReplicate() {
  state = ProgressState::kReplicate;
  next = match + 1;
  pending_snapshot = LogIndex(0);
  probe_sent = false;
  snapshot_wait = 0;
  inflights.Reset();
}

void Progress::BecomeSnapshot(LogIndex snapshot_index) {
  state = ProgressState::kSnapshot;
  pending_snapshot = snapshot_index;
  probe_sent = false;
  snapshot_wait = 0;
  inflights.Reset();
}

bool Progress::MaybeUpdate(LogIndex index) {
  bool updated = false;
  if (match < index) {
    match = index;
    updated = true;
    probe_sent = false;
  }
  next = std::max(next, index + 1);
  return updated;
}

bool Progress::MaybeDecrTo(LogIndex rejected, LogIndex match_hint) {
  if (state == ProgressState::kReplicate) {
    // A rejection at or below match is stale: that part is known to match.
    if (rejected <= match) return false;
    next = match + 1;
    return true;
  }
  // Probe: only the answer to the outstanding probe counts.
  if (next - 1 != rejected) return false;
  next = std::max(std::min(rejected, match_hint + 1), match + 1);
  probe_sent = false;
  return true;
}

void Progress::SentEntries(LogIndex last, uint64_t bytes) {
  if (state == ProgressState::kReplicate) {
    next = last + 1;
    inflights.Add(last, bytes);
  } else if (state == ProgressState::kProbe) {
    probe_sent = true;
  }
}

bool Progress::IsPaused() const {
  switch (state) {
    case ProgressState::kProbe:
      return probe_sent;
    case ProgressState::kReplicate:
      return inflights.Full();
    case ProgressState::kSnapshot:
      return true;
  }
  return true;
}

}  // namespace sessiond::replication
