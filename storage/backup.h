// Copyright sessiond authors. Licensed under the Apache License 2.0.
#ifndef SESSIOND_STORAGE_BACKUP_H_
#define SESSIOND_STORAGE_BACKUP_H_

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "common/strong_types.h"

namespace sessiond::storage {

// What a sealed checkpoint holds.
struct SealedCheckpoint {
  LogIndex applied_index;
  Term applied_term;
  uint64_t sessions = 0;
  // The snapshot image its log refers to (a file name under snap/), empty
  // when the log has no snapshot yet. A node started on the copy needs it:
  // to send a new member the state, and to re-apply it after a crash.
  std::string snapshot_file;
};

// Makes a checkpoint (Database::Checkpoint) a backup of one point: opens it
// as a Database of its own, drops its log entries after its applied index
// (those it holds beyond are not applied in the copy; a node restored from
// it with --force_new_cluster would otherwise commit them too, uncommitted
// ones included), marks it restored (kRestoredBackupKey: a node starts on
// it only with --force_new_cluster; the node's own mark of an earlier
// forced start goes), and reads its applied index, term and session count.
// Unavailable when its log's snapshot is ahead of its state (the node was
// installing a snapshot: take the backup again); DataLoss on corrupt
// metadata.
absl::StatusOr<SealedCheckpoint> SealCheckpoint(const std::string& dir);

}  // namespace sessiond::storage

#endif  // SESSIOND_STORAGE_BACKUP_H_
