// Copyright sessiond authors. Licensed under the Apache License 2.0.
#ifndef SESSIOND_REPLICATION_STATE_MACHINE_H_
#define SESSIOND_REPLICATION_STATE_MACHINE_H_

#include <any>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "replication/core/types.h"

namespace sessiond::replication {

// What applying one entry produced, handed to the proposer's callback.
// A non-OK status is a deterministic rejection (e.g. ABORTED for a version
// mismatch): every replica computes the same one.
using ApplyResult = absl::StatusOr<std::any>;

// The replicated state machine: applies committed entries in log order.
// Implemented by storage::SessionStateMachine.
//
// Thread safety: Apply and ApplySnapshot are called from one stage (the
// driver's apply stage). applied_index() and CreateSnapshot() may be called
// from any thread, concurrently with them.
class StateMachine {
 public:
  virtual ~StateMachine() = default;

  // Applies `entries` (consecutive, starting at applied_index() + 1) and
  // records the last index as applied, in the same (unsynced) write: a crash
  // may lose the write but never splits it. Returns one result per entry.
  // kConfChange entries and empty kNormal entries are recorded as applied
  // and yield OK with an empty value.
  // An error return (not a per-entry result) means the state could not be
  // written: the caller stops the node.
  virtual absl::StatusOr<std::vector<ApplyResult>> Apply(
      const std::vector<Entry>& entries) = 0;

  // Called by NodeDriver::Stop once it takes no more proposals, from the
  // stopping thread: an Apply that waits for the disk (a full disk) may give
  // up from then on and return its error, which the driver then takes as
  // "stopped" rather than as a reason to abort; the log replays the entries
  // at the next start. Pure, so that a wrapper cannot leave it out: one did
  // (server/apply_metrics.h), and a shutdown on a full disk then waited for
  // space until its StopWatchdog cut it short.
  virtual void StopRetryingWrites() = 0;

  // The last applied index (0 on a new store).
  virtual LogIndex applied_index() const = 0;

  // Makes a durable image of the whole state as of some applied index (at
  // least every entry applied when the call began), for log compaction and
  // for followers that lag too far: meta is that index, its term and the
  // membership then; `data` is the image or a reference to it that this
  // state machine's ApplySnapshot (and the transport) understand.
  virtual absl::StatusOr<Snapshot> CreateSnapshot() = 0;

  // Replaces the whole state with a snapshot's image; applied_index()
  // becomes meta.index. An error leaves the state as it was, or is
  // Internal (the caller stops the node).
  virtual absl::Status ApplySnapshot(const Snapshot& snapshot) = 0;
};

}  // namespace sessiond::replication

#endif  // SESSIOND_REPLICATION_STATE_MACHINE_H_
