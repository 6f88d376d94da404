// Copyright sessiond authors. Licensed under the Apache License 2.0.
//
// PowerCutFileSystem: a RocksDB FileSystem (over the real one) that knows
// which bytes and which directory entries under one root directory a power
// cut would keep, so tests can crash real RocksDB files the way a machine
// that loses power does. kill -9 cannot: the page cache survives the
// process, so "written but never synced" data is never lost that way.
//
// The model (leveldb's fault_injection_test and RocksDB's
// FaultInjectionTestFS model the same disk):
//   File data. Each file opened for writing under the root has a written
//     length and a durable length. Sync and Fsync make everything written so
//     far durable. Nothing else does: not Close (close(2) does not flush the
//     disk), not Flush (RocksDB's user-space buffer to the kernel), not
//     RangeSync (sync_file_range starts writeback; it neither waits nor
//     flushes the drive's cache). Bytes past the durable length are lost,
//     except that a seeded prefix of them may survive (a torn tail: the
//     kernel wrote some pages back on its own before the cut).
//   Directory entries. Creating, renaming over and deleting a file change
//     its directory; those changes become durable when the directory is
//     fsynced (FSDirectory::Fsync). At the cut, each directory keeps a seeded
//     prefix of its changes since its last fsync (a journaling file system
//     commits metadata in order) and loses the rest: a lost creation removes
//     the file, a lost rename puts the file back under its old name and
//     gives the target its previous durable contents, a lost deletion brings
//     the file back with the contents it had durably when it was deleted.
//   The cut. CutPower(), or the Nth file system event (a file created,
//     appended to, truncated, synced, renamed or deleted; a directory
//     synced) under the root, freezes the image of the root directory that
//     the model says survives. Nothing after the cut reaches that image.
//     ApplyPowerLoss() later replaces the root's contents with it.
//   Syncs are not passed on to the real disk: the model alone decides what
//   survives, and the tests run at memory speed.
//
// Not modelled: a disk that lies about fsync or reorders writes it
// acknowledged as durable; corruption of synced bytes (bit rot, misdirected
// writes); torn tails other than a prefix (a disk may persist later pages of
// the unsynced tail but not earlier ones, or zero-filled blocks); creating
// or removing directories (always durable); the order of changes across
// directories (a rename between two is recorded in the target's only);
// files written other than through RocksDB's FSWritableFile (the info LOG,
// the LOCK file: copied whole into the image). Direct I/O, random-write
// files, hard links and recycled files are refused under the root (RocksDB
// uses none of them with sessiond's options).
//
// Determinism: every choice at the cut comes from the seed and the sequence
// of file operations before it. RocksDB's background threads make that
// sequence vary a little between runs, so a seed names a crash point, not
// an exact byte image.
//
// Thread-safe. Files it opened keep a pointer to it: it must outlive them
// (keep the shared_ptr until the Env and every DB on it are gone).
#ifndef SESSIOND_TESTS_STORAGE_POWER_CUT_FS_H_
#define SESSIOND_TESTS_STORAGE_POWER_CUT_FS_H_

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "common/rng.h"
#include "rocksdb/file_system.h"

namespace sessiond::testing {

struct PowerCutOptions {
  // Seeds the choices the model makes at the cut (torn tails, which
  // directory changes survive).
  uint64_t seed = 1;
  // Whether a prefix of a file's unsynced bytes may survive. When false,
  // each file keeps exactly its synced bytes.
  bool torn_tails = true;
  // Whether a prefix of a directory's changes since its last fsync may
  // survive. When false, every such change is lost.
  bool partial_directory_changes = true;
  // What the files do after the cut.
  enum class AfterCut {
    // Every write, sync, create, rename and delete under the root fails
    // with IOError, as on a dead machine. For tests that drive RocksDB
    // directly and want to see it stop.
    kFailWrites,
    // The live files keep working (the image is already frozen, so nothing
    // done now survives). For code that stops the process on a write
    // error, as the NodeDriver does by design: it must not notice the cut.
    kKeepRunning,
  };
  AfterCut after_cut = AfterCut::kFailWrites;
  // Prints every event and what the cut keeps to stderr, for debugging a
  // failing seed.
  bool trace = false;
};

// What ApplyPowerLoss() did, for test logs and assertions.
struct PowerLossReport {
  uint64_t cut_at_event = 0;    // the event that found the power cut
  uint64_t files = 0;           // files in the image
  uint64_t bytes_dropped = 0;   // written but lost (unsynced tails)
  uint64_t torn_files = 0;      // files that kept part of an unsynced tail
  uint64_t creations_lost = 0;  // files removed: creation never durable
  uint64_t renames_lost = 0;    // renames undone
  uint64_t deletions_lost = 0;  // deleted files brought back
};

class PowerCutFileSystem : public rocksdb::FileSystemWrapper {
 public:
  // Models the files under `root` (a directory that exists; files elsewhere
  // pass through untouched and unmodelled). Files already there are
  // durable.
  PowerCutFileSystem(std::string root, PowerCutOptions options);
  ~PowerCutFileSystem() override;

  const char* Name() const override { return "PowerCutFileSystem"; }

  // Cuts the power now: freezes the surviving image. Idempotent.
  void CutPower() ABSL_LOCKS_EXCLUDED(mu_);
  // Cuts the power just before the `n`th event from now (n >= 1): the
  // event itself happens after the cut. 0 disarms.
  void CutPowerAtEvent(uint64_t n) ABSL_LOCKS_EXCLUDED(mu_);
  bool power_cut() const { return cut_.load(std::memory_order_seq_cst); }
  // Events under the root since construction.
  uint64_t events() const ABSL_LOCKS_EXCLUDED(mu_);

  // Replaces everything under the root with the image frozen at the cut,
  // then powers the machine back on: the model restarts with every file
  // durable, and the event counter keeps counting.
  // REQUIRES: power_cut(); no file under the root is open (the DB is gone).
  // Internal when a file cannot be written.
  absl::Status ApplyPowerLoss(PowerLossReport* report = nullptr)
      ABSL_LOCKS_EXCLUDED(mu_);

  // rocksdb::FileSystem, for paths under the root.
  rocksdb::IOStatus NewWritableFile(
      const std::string& fname, const rocksdb::FileOptions& options,
      std::unique_ptr<rocksdb::FSWritableFile>* result,
      rocksdb::IODebugContext* dbg) override;
  rocksdb::IOStatus ReopenWritableFile(
      const std::string& fname, const rocksdb::FileOptions& options,
      std::unique_ptr<rocksdb::FSWritableFile>* result,
      rocksdb::IODebugContext* dbg) override;
  rocksdb::IOStatus ReuseWritableFile(
      const std::string& fname, const std::string& old_fname,
      const rocksdb::FileOptions& options,
      std::unique_ptr<rocksdb::FSWritableFile>* result,
      rocksdb::IODebugContext* dbg) override;
  rocksdb::IOStatus NewRandomRWFile(
      const std::string& fname, const rocksdb::FileOptions& options,
      std::unique_ptr<rocksdb::FSRandomRWFile>* result,
      rocksdb::IODebugContext* dbg) override;
  rocksdb::IOStatus NewDirectory(const std::string& name,
                                 const rocksdb::IOOptions& options,
                                 std::unique_ptr<rocksdb::FSDirectory>* result,
                                 rocksdb::IODebugContext* dbg) override;
  rocksdb::IOStatus DeleteFile(const std::string& fname,
                               const rocksdb::IOOptions& options,
                               rocksdb::IODebugContext* dbg) override;
  rocksdb::IOStatus Truncate(const std::string& fname, size_t size,
                             const rocksdb::IOOptions& options,
                             rocksdb::IODebugContext* dbg) override;
  rocksdb::IOStatus RenameFile(const std::string& src,
                               const std::string& target,
                               const rocksdb::IOOptions& options,
                               rocksdb::IODebugContext* dbg) override;
  rocksdb::IOStatus LinkFile(const std::string& src, const std::string& target,
                             const rocksdb::IOOptions& options,
                             rocksdb::IODebugContext* dbg) override;

 private:
  class File;
  class Directory;

  // The model's state of one file opened for writing. Keyed by its current
  // name in files_; a File holds it across renames.
  struct FileState {
    std::string name;  // current name, for traces
    uint64_t written = 0;
    uint64_t durable = 0;
  };
  // A change to a directory not yet made durable by an fsync of it, with
  // what undoing it needs.
  struct DirChange {
    enum class Kind { kCreate, kRename, kDelete } kind;
    std::string name;  // kCreate, kDelete: the file; kRename: the target
    std::string rename_source;
    // kRename: the target's durable contents before (none: it did not
    // exist); kDelete: the file's durable contents.
    std::optional<std::string> previous;
  };

  bool UnderRoot(const std::string& path) const;
  // After the cut with AfterCut::kFailWrites.
  bool FailingWrites() const;
  // Counts an event under the root, cutting the power when it is the armed
  // one. Returns IOError when the power is off and writes fail.
  rocksdb::IOStatus EventLocked(const char* what, const std::string& path,
                                uint64_t bytes = 0)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  bool ModelLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return !cut_.load(std::memory_order_relaxed);
  }
  void CutLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The bytes of `path` the model says are durable now.
  std::optional<std::string> DurableContentsLocked(const std::string& path)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  // Called by File and Directory.
  rocksdb::IOStatus Append(const std::shared_ptr<FileState>& state,
                           rocksdb::FSWritableFile* target,
                           const rocksdb::Slice& data,
                           const rocksdb::IOOptions& options,
                           rocksdb::IODebugContext* dbg)
      ABSL_LOCKS_EXCLUDED(mu_);
  rocksdb::IOStatus TruncateFile(const std::shared_ptr<FileState>& state,
                                 rocksdb::FSWritableFile* target, uint64_t size,
                                 const rocksdb::IOOptions& options,
                                 rocksdb::IODebugContext* dbg)
      ABSL_LOCKS_EXCLUDED(mu_);
  rocksdb::IOStatus SyncFile(const std::shared_ptr<FileState>& state)
      ABSL_LOCKS_EXCLUDED(mu_);
  rocksdb::IOStatus SyncDirectory(const std::string& dir)
      ABSL_LOCKS_EXCLUDED(mu_);
  rocksdb::IOStatus OpenForWrite(
      const std::string& fname, bool reopen,
      const rocksdb::FileOptions& options,
      std::unique_ptr<rocksdb::FSWritableFile>* result,
      rocksdb::IODebugContext* dbg) ABSL_LOCKS_EXCLUDED(mu_);

  const std::string root_;  // lexically normal, no trailing slash
  const PowerCutOptions options_;
  // Set once, under mu_, at the cut; read without it by power_cut().
  std::atomic<bool> cut_{false};

  mutable absl::Mutex mu_;
  Rng rng_ ABSL_GUARDED_BY(mu_);
  uint64_t events_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t cut_at_event_ ABSL_GUARDED_BY(mu_) = 0;  // 0: not armed
  std::map<std::string, std::shared_ptr<FileState>> files_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, std::vector<DirChange>> dir_changes_
      ABSL_GUARDED_BY(mu_);
  // Frozen at the cut: path -> contents of every file that survives.
  std::map<std::string, std::string> image_ ABSL_GUARDED_BY(mu_);
  PowerLossReport report_ ABSL_GUARDED_BY(mu_);
};

}  // namespace sessiond::testing

#endif  // SESSIOND_TESTS_STORAGE_POWER_CUT_FS_H_
