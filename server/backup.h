// Copyright sessiond authors. Licensed under the Apache License 2.0.
#ifndef SESSIOND_SERVER_BACKUP_H_
#define SESSIOND_SERVER_BACKUP_H_

#include <cstdint>
#include <functional>
#include <string>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "common/backup_manifest.h"
#include "common/strong_types.h"

namespace sessiond::storage {
class Database;
}  // namespace sessiond::storage

namespace sessiond::server {

class LogCompactor;

struct BackupSources {
  uint64_t cluster_id = 0;
  NodeId self;
  std::string data_dir;  // its snap/ holds the snapshot images
  storage::Database* db = nullptr;
  // Paused while the checkpoint is taken and its image copied (null: no
  // compactor runs).
  LogCompactor* compactor = nullptr;
};

// Backs up this node's state (AdminService.Backup; docs/OPERATIONS.md,
// "Backups and restore") into a new folder on this machine:
//   <dir>/                    a RocksDB checkpoint of the data dir, sealed at
//                             its applied index (storage/backup.h)
//   <dir>/snap/<image>        the snapshot image its log refers to, if any
//   <dir>/MANIFEST.sessiond.json   common/backup_manifest.h
// Writes go on meanwhile: the checkpoint hard-links SST files. The folder,
// minus the manifest, is a data dir sessiond starts on.
//
// Thread-safe; one backup at a time. The pointers must outlive it.
class BackupTaker {
 public:
  explicit BackupTaker(BackupSources sources);
  ~BackupTaker();  // waits for a backup in progress

  BackupTaker(const BackupTaker&) = delete;
  BackupTaker& operator=(const BackupTaker&) = delete;

  // Checks `dir`, then takes the backup on a thread of its own and calls
  // `done` there. Errors (then `done` is not called): InvalidArgument for a
  // relative path, FailedPrecondition for a non-empty folder or a file,
  // Unavailable while another backup runs.
  using Done = std::function<void(absl::StatusOr<BackupManifest>)>;
  absl::Status Start(const std::string& dir, Done done);

  // The same, on the calling thread. A failed backup leaves no folder.
  absl::StatusOr<BackupManifest> Take(const std::string& dir);

  // Start's checks of `dir` alone (trailing slashes ignored), so a caller
  // can refuse a bad dir before it waits for anything.
  absl::Status CheckDir(const std::string& dir) const;

  // The node whose state it backs up.
  NodeId self() const { return sources_.self; }

 private:
  absl::StatusOr<BackupManifest> TakeChecked(const std::string& dir);

  const BackupSources sources_;
  absl::Mutex mu_;
  bool running_ ABSL_GUARDED_BY(mu_) = false;
  std::thread thread_ ABSL_GUARDED_BY(mu_);
};

}  // namespace sessiond::server

#endif  // SESSIOND_SERVER_BACKUP_H_
