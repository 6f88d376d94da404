// Copyright sessiond authors. Licensed under the Apache License 2.0.
#ifndef SESSIOND_STORAGE_DISK_GUARD_H_
#define SESSIOND_STORAGE_DISK_GUARD_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/steady_cond_var.h"

namespace sessiond::storage {

struct DiskGuardOptions {
  // The data dir (it must exist when Start is called).
  std::string dir;
  // Writes are refused while the data dir's file system has less than this
  // free (for unprivileged users: statvfs f_bavail). 0 turns the guard off.
  uint64_t low_bytes = 64ull << 20;
  // Size of the reserve file. At least what RocksDB may flush at once (its
  // memtable budget): a node restarted on a disk filled to the last byte
  // releases it, and replaying its WAL may flush that much.
  uint64_t reserve_bytes = 32ull << 20;
  // How often free space is looked at.
  absl::Duration check_interval = absl::Milliseconds(250);
  // The first and the longest wait before writes are tried again after the
  // database refused one for lack of space while the disk had room (below).
  absl::Duration min_retry_interval = absl::Milliseconds(250);
  absl::Duration max_retry_interval = absl::Seconds(8);
  // A refusal this long after the last one starts again at min_retry_interval
  // (the database recovered in between).
  absl::Duration refusals_forgotten_after = absl::Seconds(32);
  // Called on every change of low() (and of why it is low), from the
  // guard's thread or from the thread calling ReportWriteError, one call at
  // a time, with low() as of the call; must not block.
  std::function<void(bool low)> on_change;
};

// Keeps a full disk from taking the node down (etcd's NOSPACE alarm, on free
// space rather than on a database quota). RocksDB cannot be trusted past a
// failed write on a full disk (Debian's build asserts in the WAL writer), so
// the node stops writing well before the disk is full:
//
//   healthy  free >= low_bytes, and the reserve file (DIR/sessiond.reserve,
//            reserve_bytes, allocated with fallocate) holds space back for
//            the day the disk fills anyway (another program's logs).
//   low      free < low_bytes, measured every check_interval and before
//            every Raft log write (AllowWrite), or a write failed for lack
//            of space. The node refuses writes (WriteRefusal), drops
//            touches, and a leader hands over; its Raft log takes no more
//            under low_bytes / 4 free (AllowWrite). Reads are served.
//   back     free >= 2 * low_bytes (and, when the reserve was released,
//            room to make it again): writes resume by themselves.
//
// The reserve is released when a write fails for lack of space (RocksDB's
// recovery and a clean shutdown need room) and at start on a disk under
// low_bytes (ReleaseReserveIfLow: the database must open to serve reads).
//
// A write can fail for lack of space while the disk has room (free space,
// the reserve not counted, for a whole flush above the low mark, and at
// least the resume level): RocksDB goes on refusing writes after a full
// disk until its own recovery ends, and that recovery can hang
// (server/daemon.cc then reopens the database). The guard then goes low
// without touching its reserve (database_refuses) and tries writes again
// at the first check after min_retry_interval, twice as long after each
// refusal that follows (up to max_retry_interval), instead of every check:
// each try that fails again would log twice and tell clients the disk is
// full. A disk that fills meanwhile is full, as above.
//
// Thread-safe; one thread of its own checks every check_interval.
class DiskGuard {
 public:
  struct State {
    bool low = false;
    uint64_t free_bytes = 0;
    uint64_t low_bytes = 0;
    uint64_t resume_bytes = 0;  // free space at which writes resume
    bool reserve_held = false;
    absl::Time low_since;  // InfinitePast when healthy
    std::string reason;    // why it is low
    // Low because the database refused a write for lack of space while the
    // disk had room; writes are tried again retry_after after it went low.
    bool database_refuses = false;
    int refusals = 0;  // of that kind, in a row (reset after a quiet spell)
    absl::Duration retry_after = absl::ZeroDuration();
  };

  static constexpr char kReserveFileName[] = "sessiond.reserve";

  // Before the database opens: when free space in `dir` is already under
  // `low_bytes`, deletes the reserve file so RocksDB has room to open and
  // replay its log. Never fails (a missing dir holds no reserve).
  static void ReleaseReserveIfLow(const std::string& dir, uint64_t low_bytes);

  // Checks once (so low() is right on return) and starts the checking thread.
  // Errors: Internal when statvfs fails on `options.dir`.
  static absl::StatusOr<std::unique_ptr<DiskGuard>> Start(
      const DiskGuardOptions& options);

  ~DiskGuard();  // stops the thread; the reserve file stays
  DiskGuard(const DiskGuard&) = delete;
  DiskGuard& operator=(const DiskGuard&) = delete;

  bool low() const { return low_.load(std::memory_order_acquire); }
  State state() const;

  // A write to the data dir failed with `error`: when it says the disk is
  // full, the guard goes low at once (without waiting for the next check).
  void ReportWriteError(const absl::Status& error);

  // Before writing about `bytes` to the Raft log: looks at free space now
  // (one statvfs: writes can fill a disk between two periodic checks),
  // going low when the write would leave less than low_bytes. The write
  // itself is allowed down to the floor, low_bytes / 4: while low, the
  // writes that still come (those accepted before, a new leader's first
  // entry, a follower's copy of the leader's entries) are few or bounded
  // by the floor. OK, or WriteRefusal().
  absl::Status AllowWrite(uint64_t bytes);

  // The answer to a write while low(): ResourceExhausted naming the disk,
  // its free space and what to do.
  absl::Status WriteRefusal() const;

  // Free space on the file system of the dir, now (one statvfs).
  absl::StatusOr<uint64_t> FreeBytes() const;

  // Whether free space, counting the reserve file this guard holds (its to
  // drop), is back where writes resume: after a failed write, room enough
  // for a restart in place not to fill the disk again. One statvfs.
  bool HasRoomToResume() const;

  // Makes, fills (64 KiB), syncs and removes a file of a new name in the
  // dir: OK when the file system can take a new file now. Free bytes alone
  // do not say so (no inode left, a btrfs out of metadata space), and a
  // database reopened there would fail to make its new log and MANIFEST.
  // ResourceExhausted for a full file system (ENOSPC, EDQUOT), Internal for
  // any other error; the message names the file and the error.
  absl::Status ProbeNewFile() const;

  // OK when writing `bytes` (for `what`) would leave at least low_bytes
  // free now; ResourceExhausted naming the disk and the shortfall
  // otherwise. OK too when free space cannot be read (the write then finds
  // out) or the guard is off.
  absl::Status RoomFor(uint64_t bytes, absl::string_view what) const;

 private:
  explicit DiskGuard(const DiskGuardOptions& options);

  void Run();
  // Looks at free space and moves between the states; `no_space_error`
  // (a write that failed for lack of space) forces low, as does `incoming`
  // bytes about to be written that would leave less than low_bytes.
  void Check(const std::string& no_space_error, uint64_t incoming = 0);
  void GoLowLocked(std::string reason) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Writes are taken again; logs `event` with `message`.
  void ResumeLocked(const char* event, const char* message)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // A write failed for lack of space while the disk had room.
  void DatabaseRefusesLocked(const std::string& error)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // A write failed for lack of space (`free_known`: state_.free_bytes is
  // of now). True when the state changed.
  bool WriteFailedLocked(const std::string& error, bool free_known)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Goes low when state_.free_bytes, less `incoming` bytes about to be
  // written, is under what is kept free (making the reserve first when
  // there is room for it). True when it went low.
  bool GoLowIfShortLocked(uint64_t incoming) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Calls options_.on_change; without mu_ held.
  void NotifyChange() ABSL_LOCKS_EXCLUDED(mu_);
  bool HasRoomToResumeLocked(uint64_t free) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  bool MakeReserveLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  uint64_t ResumeBytesLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void DropReserveLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const DiskGuardOptions options_;
  const std::string reserve_path_;
  const uint64_t reserve_bytes_;
  std::atomic<bool> low_{false};

  mutable absl::Mutex mu_;
  State state_ ABSL_GUARDED_BY(mu_);
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  absl::Mutex notify_mu_;  // held through each on_change call
  // While database_refuses: when writes are tried again. And when the last
  // refusal came, to start the doubling afresh after a quiet spell.
  SteadyCondVar::Clock::time_point retry_at_ ABSL_GUARDED_BY(mu_);
  SteadyCondVar::Clock::time_point last_refusal_ ABSL_GUARDED_BY(mu_);
  SteadyCondVar stop_cv_;  // check_interval follows the steady clock
  std::thread thread_;
};

// True when `status` (from RocksDB or the file system) says the disk is
// full.
bool IsNoSpace(const absl::Status& status);

}  // namespace sessiond::storage

#endif  // SESSIOND_STORAGE_DISK_GUARD_H_
