// Copyright sessiond authors. Licensed under the Apache License 2.0.
//
// What a leader knows about one member's log, in the manner of etcd-io/raft's
// tracker.Progress:
//
//   kProbe      the leader does not know where the member's log matches; it
//               sends one AppendEntries at a time and waits for the answer.
//   kReplicate  the member is matched; the leader streams appends
//               optimistically (next advances on send), bounded by the
//               inflight window (count and bytes).
//   kSnapshot   the member needs a snapshot; nothing else is sent until it
//               answers.
//
// Not thread-safe; owned by RaftCore.
#ifndef SESSIOND_REPLICATION_CORE_PROGRESS_H_
#define SESSIOND_REPLICATION_CORE_PROGRESS_H_

#include <cstdint>
#include <deque>

#include "common/strong_types.h"

namespace sessiond::replication {

// The AppendEntries messages in flight to one member, oldest first, each
// by its last index and entry bytes.
class Inflights {
 public:
  Inflights(uint32_t max_messages, uint64_t max_bytes)
      : max_messages_(max_messages), max_bytes_(max_bytes) {}

  void Add(LogIndex last, uint64_t bytes);
  // Frees every message whose last index is <= `index`.
  void FreeLE(LogIndex index);
  void FreeFirstOne();
  void Reset();
  bool Full() const {
    return items_.size() >= max_messages_ ||
           (max_bytes_ != 0 && bytes_ >= max_bytes_);
  }
  size_t count() const { return items_.size(); }
  uint64_t bytes() const { return bytes_; }

 private:
  struct Item {
    LogIndex last;
    uint64_t bytes;
  };
  uint32_t max_messages_;
  uint64_t max_bytes_;
  std::deque<Item> items_;
  uint64_t bytes_ = 0;
};

enum class ProgressState : uint8_t { kProbe, kReplicate, kSnapshot };

const char* ProgressStateName(ProgressState state);

struct Progress {
  Progress(LogIndex next_index, uint32_t max_inflight_messages,
           uint64_t max_inflight_bytes, bool learner)
      : next(next_index),
        inflights(max_inflight_messages, max_inflight_bytes),
        is_learner(learner) {}

  void BecomeProbe();
  void BecomeReplicate();
  void BecomeSnapshot(LogIndex snapshot_index);

  // An acknowledgement of everything through `index`. Returns false when it
  // tells nothing new (a stale or duplicate response).
  bool MaybeUpdate(LogIndex index);
  // A rejection of the append whose previous index was `rejected`, with the
  // member's hint of the last index that may match. Returns false when the
  // rejection is stale.
  bool MaybeDecrTo(LogIndex rejected, LogIndex match_hint);
  // After sending entries through `last` (replicate state: optimistic).
  void SentEntries(LogIndex last, uint64_t bytes);
  bool IsPaused() const;

  LogIndex match;
  LogIndex next;
  ProgressState state = ProgressState::kProbe;
  LogIndex pending_snapshot;
  // Probe state: an append is out and unanswered.
  bool probe_sent = false;
  // Heard from since the last CheckQuorum round.
  bool recent_active = false;
  // Heartbeat responses seen while waiting for a snapshot answer; the leader
  // retries the snapshot when the count runs high (the message may be lost).
  int snapshot_wait = 0;
  Inflights inflights;
  bool is_learner = false;
};

}  // namespace sessiond::replication

#endif  // SESSIOND_REPLICATION_CORE_PROGRESS_H_
