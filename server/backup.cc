// Copyright sessiond authors. Licensed under the Apache License 2.0.
#include "server/backup.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <memory>
#include <system_error>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/replace_file.h"
#include "common/status_macros.h"
#include "server/config.h"
#include "server/log_compactor.h"
#include "storage/backup.h"
#include "storage/database.h"

namespace sessiond::server {
namespace {

namespace fs = std::filesystem;

absl::Status WriteFile(const std::string& path, const std::string& text) {
  SESSIOND_RETURN_IF_ERROR(ReplaceFile(path, text, 0644, /*durable=*/true));
  return SyncFolder(fs::path(path).parent_path().string());
}

// A hard link when the backup is on the data dir's file system (the image
// never changes once named), else a copy.
absl::Status LinkOrCopy(const std::string& from, const std::string& to) {
  std::error_code ec;
  fs::create_hard_link(from, to, ec);
  if (!ec) return absl::OkStatus();
  fs::copy_file(from, to, ec);
  if (ec) {
    return absl::InternalError(
        absl::StrCat("cannot copy ", from, " to ", to, ": ", ec.message()));
  }
  return absl::OkStatus();
}

absl::Status BeingWritten(const std::string& dir) {
  return absl::FailedPreconditionError(absl::StrCat(
      "dir: ", dir,
      " holds another backup being written (or one that stopped half-way: "
      "remove that folder, or choose another)"));
}

absl::Status NotEmpty(const std::string& dir) {
  return absl::FailedPreconditionError(absl::StrCat(
      "dir: ", dir, " is not empty; a backup goes into a new or empty folder"));
}

// The backup's claim on its folder: the lock file, created exclusively. A
// second backup into the folder, from this node or another sharing the
// file system, finds it and is refused, rather than mixing its files in or
// removing the first one's on a failure.
absl::Status LockFolder(const fs::path& dir) {
  const std::string lock = (dir / kBackupLockFile).string();
  const int fd =
      open(lock.c_str(), O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0600);
  if (fd >= 0) {
    close(fd);
    return absl::OkStatus();
  }
  if (errno == EEXIST) return BeingWritten(dir.string());
  return absl::InternalError(
      absl::StrCat("cannot create ", lock, ": ", std::strerror(errno)));
}

// Moves everything in `from` up into `to`, then removes `from`.
absl::Status MoveUp(const fs::path& from, const fs::path& to) {
  std::error_code ec;
  for (const fs::directory_entry& entry : fs::directory_iterator(from, ec)) {
    fs::rename(entry.path(), to / entry.path().filename(), ec);
    if (ec) break;
  }
  if (!ec) fs::remove(from, ec);
  if (ec) {
    return absl::InternalError(absl::StrCat("cannot move the checkpoint into ",
                                            to.string(), ": ", ec.message()));
  }
  return absl::OkStatus();
}

}  // namespace

BackupTaker::BackupTaker(BackupSources sources)
    : sources_(std::move(sources)) {}

BackupTaker::~BackupTaker() {
  std::thread thread;
  {
    absl::MutexLock lock(&mu_);
    thread.swap(thread_);
  }
  if (thread.joinable()) thread.join();
}

absl::Status BackupTaker::CheckDir(const std::string& requested) const {
  const std::string dir = WithoutTrailingSlash(requested);
  if (dir.empty() || dir[0] != '/') {
    return absl::InvalidArgumentError(absl::StrCat(
        "dir: '", dir,
        "' is not an absolute path (the backup is written on the node's "
        "machine)"));
  }
  std::error_code ec;
  // Checked first: a folder that does not exist yet can be inside too.
  const fs::path data = fs::weakly_canonical(sources_.data_dir, ec);
  const fs::path target = fs::weakly_canonical(dir, ec);
  if (!ec && PathWithin(target, data)) {
    return absl::FailedPreconditionError(absl::StrCat(
        "dir: ", dir, " is inside the data dir; choose a folder outside it"));
  }
  if (!fs::exists(dir, ec)) return absl::OkStatus();
  if (!fs::is_directory(dir, ec)) {
    return absl::FailedPreconditionError(
        absl::StrCat("dir: ", dir, " exists and is not a directory"));
  }
  if (fs::exists(fs::path(dir) / kBackupLockFile, ec)) return BeingWritten(dir);
  for (const fs::directory_entry& entry : fs::directory_iterator(dir, ec)) {
    if (entry.path().filename() != kLostAndFound) return NotEmpty(dir);
  }
  if (ec) {
    return absl::FailedPreconditionError(
        absl::StrCat("dir: cannot list ", dir, ": ", ec.message()));
  }
  return absl::OkStatus();
}

absl::Status BackupTaker::Start(const std::string& requested, Done done) {
  const std::string dir = WithoutTrailingSlash(requested);
  if (absl::Status s = CheckDir(dir); !s.ok()) return s;
  std::thread previous;
  {
    absl::MutexLock lock(&mu_);
    if (running_) {
      return absl::UnavailableError(
          "a backup is already running on this node; retry when it ends");
    }
    running_ = true;
    previous.swap(thread_);
  }
  if (previous.joinable()) previous.join();  // it has finished
  absl::MutexLock lock(&mu_);
  thread_ = std::thread([this, dir, done = std::move(done)] {
    absl::StatusOr<BackupManifest> result = TakeChecked(dir);
    {
      absl::MutexLock lock(&mu_);
      running_ = false;
    }
    done(std::move(result));
  });
  return absl::OkStatus();
}

absl::StatusOr<BackupManifest> BackupTaker::Take(const std::string& requested) {
  const std::string dir = WithoutTrailingSlash(requested);
  if (absl::Status s = CheckDir(dir); !s.ok()) return s;
  {
    absl::MutexLock lock(&mu_);
    if (running_) {
      return absl::UnavailableError(
          "a backup is already running on this node; retry when it ends");
    }
    running_ = true;
  }
  absl::StatusOr<BackupManifest> result = TakeChecked(dir);
  absl::MutexLock lock(&mu_);
  running_ = false;
  return result;
}

absl::StatusOr<BackupManifest> BackupTaker::TakeChecked(
    const std::string& dir) {
  std::error_code ec;
  // The folder is kept when it was there (an operator's, with its owner
  // and mode, or a mount point); only what this backup wrote is removed on
  // a failure, and only once it holds the lock.
  absl::StatusOr<bool> made = CreateFolders(dir);
  if (!made.ok()) return made.status();
  if (absl::Status s = LockFolder(dir); !s.ok()) {
    if (*made) fs::remove(dir, ec);
    return s;
  }
  const fs::path lock = fs::path(dir) / kBackupLockFile;
  auto fail = [&dir, &made, &lock](absl::Status status) {
    std::error_code ignored;
    if (*made) {
      fs::remove_all(dir, ignored);
    } else {
      for (const fs::directory_entry& entry :
           fs::directory_iterator(dir, ignored)) {
        if (entry.path() != lock && entry.path().filename() != kLostAndFound) {
          fs::remove_all(entry.path(), ignored);
        }
      }
      fs::remove(lock, ignored);
    }
    return status;
  };
  // Another backup may have finished here between CheckDir and the lock.
  for (const fs::directory_entry& entry : fs::directory_iterator(dir, ec)) {
    if (entry.path() != lock && entry.path().filename() != kLostAndFound) {
      fs::remove(lock, ec);
      return NotEmpty(dir);
    }
  }

  absl::StatusOr<storage::SealedCheckpoint> sealed =
      absl::InternalError("not taken");
  absl::Status copied;
  auto take = [&] {
    // RocksDB's checkpoint makes its own folder; moved up into `dir` after.
    const fs::path checkpoint = fs::path(dir) / ".checkpoint";
    if (absl::Status s = sources_.db->Checkpoint(checkpoint.string());
        !s.ok()) {
      sealed = s;
      return;
    }
    if (absl::Status s = MoveUp(checkpoint, dir); !s.ok()) {
      sealed = s;
      return;
    }
    sealed = storage::SealCheckpoint(dir);
    if (!sealed.ok() || sealed->snapshot_file.empty()) return;
    fs::create_directories(fs::path(dir) / "snap", ec);
    copied = LinkOrCopy(
        (fs::path(sources_.data_dir) / "snap" / sealed->snapshot_file).string(),
        (fs::path(dir) / "snap" / sealed->snapshot_file).string());
  };
  if (sources_.compactor != nullptr) {
    sources_.compactor->WhilePaused(take);
  } else {
    take();
  }
  if (!sealed.ok()) return fail(sealed.status());
  if (!copied.ok()) return fail(copied);

  BackupManifest manifest;
  manifest.cluster_id = sources_.cluster_id;
  manifest.node_id = sources_.self.value();
  manifest.applied_index = sealed->applied_index.value();
  manifest.applied_term = sealed->applied_term.value();
  manifest.session_count = sealed->sessions;
  manifest.sessiond_version = kSessiondVersion;
  manifest.created_at_ms = absl::ToUnixMillis(absl::Now());
  absl::StatusOr<std::vector<std::string>> files = ListBackupFiles(dir);
  if (!files.ok()) return fail(files.status());
  // Durable before the manifest names them: a backup reported done must
  // survive a power cut (RocksDB's checkpoint, the copied image and the
  // sealing's writes are not all synced).
  if (absl::Status s = SyncBackupFiles(dir, *files); !s.ok()) return fail(s);
  absl::StatusOr<BackupDigest> digest = DigestBackupFiles(dir, *files);
  if (!digest.ok()) return fail(digest.status());
  manifest.file_count = files->size();
  manifest.total_bytes = digest->total_bytes;
  manifest.sha256 = digest->sha256;
  if (absl::Status s = WriteFile((fs::path(dir) / kBackupManifestFile).string(),
                                 BackupManifestToJson(manifest));
      !s.ok()) {
    return fail(s);
  }
  // Done: the lock goes (a leftover one would only refuse a later backup
  // into this folder, which is refused anyway), and the backup's own folder
  // entry is made durable.
  fs::remove(lock, ec);
  if (absl::Status s = SyncFolder(fs::path(dir).parent_path().string());
      !s.ok()) {
    return fail(s);
  }
  return manifest;
}

}  // namespace sessiond::server
