// Copyright sessiond authors. Licensed under the Apache License 2.0.
#include "storage/disk_guard.h"

#include <fcntl.h>
#include <pthread.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/log.h"

namespace sessiond::storage {
namespace {

constexpr uint64_t kMiB = 1 << 20;

std::string MiB(uint64_t bytes) {
  if (bytes < kMiB && bytes > 0)
    return absl::StrCat((bytes + 1023) / 1024, " KiB");
  return absl::StrCat(bytes / kMiB, ".", (bytes % kMiB) * 10 / kMiB, " MiB");
}

absl::StatusOr<uint64_t> FreeBytesOf(const std::string& dir) {
  struct statvfs fs;
  if (statvfs(dir.c_str(), &fs) != 0) {
    return absl::InternalError(
        absl::StrCat("statvfs ", dir, ": ", std::strerror(errno)));
  }
  return static_cast<uint64_t>(fs.f_bavail) * fs.f_frsize;
}

}  // namespace

bool IsNoSpace(const absl::Status& status) {
  if (status.ok()) return false;
  // RocksDB: "IO error: No space left on device" (IOStatus NoSpace), and
  // its background error after one.
  return absl::StrContains(status.message(), "No space left") ||
         absl::StrContains(status.message(), "NoSpace");
}

void DiskGuard::ReleaseReserveIfLow(const std::string& dir,
                                    uint64_t low_bytes) {
  if (low_bytes == 0) return;
  absl::StatusOr<uint64_t> free = FreeBytesOf(dir);
  if (!free.ok() || *free >= low_bytes) return;
  const std::string path = absl::StrCat(dir, "/", kReserveFileName);
  if (::unlink(path.c_str()) == 0) {
    logging::Warn(
        "disk.reserve_released",
        logging::Fields()
            .Add("dir", dir)
            .Add("free_bytes", *free)
            .Add("low_bytes", low_bytes)
            .Add("msg", absl::StrCat("the data disk has ", MiB(*free),
                                     " free: released the ", kReserveFileName,
                                     " reserve so the database "
                                     "can open")));
  }
}

DiskGuard::DiskGuard(const DiskGuardOptions& options)
    : options_(options),
      reserve_path_(absl::StrCat(options.dir, "/", kReserveFileName)),
      reserve_bytes_(options.reserve_bytes) {
  state_.low_bytes = options.low_bytes;
  state_.low_since = absl::InfinitePast();
}

absl::StatusOr<std::unique_ptr<DiskGuard>> DiskGuard::Start(
    const DiskGuardOptions& options) {
  std::unique_ptr<DiskGuard> guard(new DiskGuard(options));
  absl::StatusOr<uint64_t> free = guard->FreeBytes();
  if (!free.ok()) return free.status();
  if (options.low_bytes == 0) return guard;  // off
  {
    absl::MutexLock lock(&guard->mu_);
    struct stat st;
    guard->state_.reserve_held =
        ::stat(guard->reserve_path_.c_str(), &st) == 0 &&
        static_cast<uint64_t>(st.st_size) >= guard->reserve_bytes_;
  }
  guard->Check("");
  guard->thread_ = std::thread([g = guard.get()] { g->Run(); });
  return guard;
}

DiskGuard::~DiskGuard() {
  {
    absl::MutexLock lock(&mu_);
    stop_ = true;
    stop_cv_.SignalAll();
  }
  if (thread_.joinable()) thread_.join();
}

DiskGuard::State DiskGuard::state() const {
  absl::MutexLock lock(&mu_);
  State s = state_;
  s.resume_bytes = ResumeBytesLocked();
  return s;
}

absl::StatusOr<uint64_t> DiskGuard::FreeBytes() const {
  return FreeBytesOf(options_.dir);
}

bool DiskGuard::HasRoomToResume() const {
  // Under the lock, as the reserve is dropped and made again: free space
  // and the reserve it is counted with are of one moment.
  absl::MutexLock lock(&mu_);
  absl::StatusOr<uint64_t> free = FreeBytes();
  return free.ok() && HasRoomToResumeLocked(*free);
}

bool DiskGuard::HasRoomToResumeLocked(uint64_t free) const {
  // Writes resumed at ResumeBytesLocked() free, then the reserve was made
  // again out of that: it counts.
  const uint64_t held = state_.reserve_held ? reserve_bytes_ : 0;
  return free + held >= ResumeBytesLocked();
}

absl::Status DiskGuard::ProbeNewFile() const {
  // A name no earlier probe (of a process that died in the middle of one)
  // left behind: an old file opened again would take no new inode.
  static std::atomic<uint64_t> probes{0};
  const std::string path =
      absl::StrCat(options_.dir, "/sessiond.probe.", ::getpid(), ".",
                   probes.fetch_add(1, std::memory_order_relaxed));
  const auto failed = [&](const char* what, int error) {
    const std::string message = absl::StrCat("cannot ", what, " a new file (",
                                             path, "): ", std::strerror(error));
    return error == ENOSPC || error == EDQUOT
               ? absl::ResourceExhaustedError(message)
               : absl::InternalError(message);
  };
  constexpr int kFlags = O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC;
  int fd = ::open(path.c_str(), kFlags, 0600);
  if (fd < 0 && errno == EEXIST) {
    // Left by an earlier process of the same pid (a container's pid 1)
    // that died mid-probe: removed, so the probe makes a new file.
    ::unlink(path.c_str());
    fd = ::open(path.c_str(), kFlags, 0600);
  }
  if (fd < 0) return failed("make", errno);
  const std::string block(64 * 1024, '\0');
  absl::Status status;
  const ssize_t written = ::write(fd, block.data(), block.size());
  if (written < 0) {
    status = failed("write 64 KiB to", errno);
  } else if (written != static_cast<ssize_t>(block.size())) {
    status = failed("write 64 KiB to", ENOSPC);  // a short write: full
  } else if (::fsync(fd) != 0) {
    status = failed("sync", errno);
  }
  ::close(fd);
  ::unlink(path.c_str());
  return status;
}

void DiskGuard::Run() {
  pthread_setname_np(pthread_self(), "sd-disk");
  absl::MutexLock lock(&mu_);
  while (!stop_) {
    const SteadyCondVar::Clock::time_point next =
        SteadyAfter(options_.check_interval);
    while (!stop_ && !stop_cv_.WaitUntil(&mu_, next)) {
    }
    if (stop_) break;
    mu_.Unlock();
    Check("");
    mu_.Lock();
  }
}

void DiskGuard::ReportWriteError(const absl::Status& error) {
  if (options_.low_bytes == 0 || !IsNoSpace(error)) return;
  Check(std::string(error.message()));
}

absl::Status DiskGuard::AllowWrite(uint64_t bytes) {
  if (options_.low_bytes == 0) return absl::OkStatus();
  if (!low()) Check("", bytes);
  if (!low()) return absl::OkStatus();
  absl::StatusOr<uint64_t> free = FreeBytes();
  if (free.ok() && *free >= options_.low_bytes / 4 + bytes) {
    return absl::OkStatus();
  }
  return WriteRefusal();
}

void DiskGuard::Check(const std::string& no_space_error, uint64_t incoming) {
  absl::StatusOr<uint64_t> free = FreeBytes();
  bool changed = false;
  {
    absl::MutexLock lock(&mu_);
    if (free.ok()) state_.free_bytes = *free;
    if (!no_space_error.empty()) {
      changed = WriteFailedLocked(no_space_error, free.ok());
    } else if (!state_.low) {
      changed = free.ok() && GoLowIfShortLocked(incoming);
    } else if (state_.database_refuses) {
      // The disk may fill meanwhile: it is then full, whatever the database.
      if (free.ok() && GoLowIfShortLocked(0)) {
        changed = true;
      } else if (SteadyCondVar::Clock::now() >= retry_at_) {
        ResumeLocked("disk.writes_retry",
                     "trying writes again after the database refused one for "
                     "lack of space");
        changed = true;
      }
    } else if (free.ok() && state_.free_bytes >= ResumeBytesLocked()) {
      // Space was freed: take the reserve back, then resume.
      MakeReserveLocked();
      absl::StatusOr<uint64_t> after = FreeBytes();
      if (after.ok()) state_.free_bytes = *after;
      ResumeLocked("disk.writes_resume",
                   "the data disk has room again: writes resume");
      changed = true;
    }
    if (changed) low_.store(state_.low, std::memory_order_release);
  }
  if (changed) NotifyChange();
}

bool DiskGuard::WriteFailedLocked(const std::string& error, bool free_known) {
  // Room for another whole flush above the low mark, not counting the
  // reserve: the write did not fail for want of bytes.
  const uint64_t room =
      std::max(ResumeBytesLocked(), options_.low_bytes + reserve_bytes_);
  if (free_known && state_.free_bytes >= room) {
    // Writes already refused (a write in flight failing too) do not count
    // as another refusal.
    if (state_.low) return false;
    DatabaseRefusesLocked(error);
    return true;
  }
  // RocksDB needs room to recover (and the node to shut down cleanly) now,
  // whatever the state.
  DropReserveLocked();
  if (state_.low && !state_.database_refuses) return false;
  GoLowLocked(absl::StrCat(
      "a write failed before free space fell under --disk_reserve_mb (",
      MiB(options_.low_bytes), "): ", error));
  return true;
}

bool DiskGuard::GoLowIfShortLocked(uint64_t incoming) {
  uint64_t now_free = state_.free_bytes;
  if (!state_.reserve_held && now_free >= options_.low_bytes + reserve_bytes_ &&
      MakeReserveLocked()) {
    now_free -= reserve_bytes_;
    state_.free_bytes = now_free;
  }
  // Without its reserve (released at start, or never made) the node must
  // keep room to make it again.
  const uint64_t keep =
      options_.low_bytes + (state_.reserve_held ? 0 : reserve_bytes_);
  if (now_free >= keep + incoming) return false;
  GoLowLocked(absl::StrCat(
      MiB(now_free), " free",
      incoming > 0 ? absl::StrCat(" and ", MiB(incoming), " to write")
                   : std::string(),
      ", under the ", MiB(keep), " kept free (--disk_reserve_mb",
      state_.reserve_held ? "" : " and the reserve file", ")"));
  return true;
}

void DiskGuard::NotifyChange() {
  if (!options_.on_change) return;
  // One call at a time, each with the state as of its call: the last one
  // made says what the guard says now, whichever thread changed it last.
  absl::MutexLock lock(&notify_mu_);
  options_.on_change(low());
}

void DiskGuard::GoLowLocked(std::string reason) {
  state_.low = true;
  state_.database_refuses = false;
  state_.low_since = absl::Now();
  state_.reason = std::move(reason);
  logging::Error(
      "disk.full",
      logging::Fields()
          .Add("dir", options_.dir)
          .Add("reason", state_.reason)
          .Add("resume_at_bytes", ResumeBytesLocked())
          .Add("msg",
               absl::StrCat("DATA DISK FULL: writes are refused, touches "
                            "dropped and validations still answered until it "
                            "has ",
                            MiB(ResumeBytesLocked()),
                            " free (free space on that file system; writes "
                            "resume by themselves)")));
}

void DiskGuard::ResumeLocked(const char* event, const char* message) {
  state_.low = false;
  state_.database_refuses = false;
  state_.low_since = absl::InfinitePast();
  state_.reason.clear();
  logging::Info(event, logging::Fields()
                           .Add("dir", options_.dir)
                           .Add("free_bytes", state_.free_bytes)
                           .Add("refusals", state_.refusals)
                           .Add("msg", message));
}

void DiskGuard::DatabaseRefusesLocked(const std::string& error) {
  const SteadyCondVar::Clock::time_point now = SteadyCondVar::Clock::now();
  // A refusal long after the last one starts a new run: the database
  // recovered in between.
  if (state_.refusals > 0 &&
      now - last_refusal_ >
          absl::ToChronoNanoseconds(options_.refusals_forgotten_after)) {
    state_.refusals = 0;
  }
  last_refusal_ = now;
  state_.retry_after = options_.min_retry_interval;
  for (int i = 0;
       i < state_.refusals && state_.retry_after < options_.max_retry_interval;
       ++i) {
    state_.retry_after *= 2;
  }
  state_.retry_after =
      std::min(state_.retry_after, options_.max_retry_interval);
  ++state_.refusals;
  retry_at_ = now + absl::ToChronoNanoseconds(state_.retry_after);
  state_.low = true;
  state_.database_refuses = true;
  state_.low_since = absl::Now();
  state_.reason = absl::StrCat(
      "a write failed for lack of space (", error, ") though the disk has ",
      MiB(state_.free_bytes),
      " free: the database still refuses writes after a full disk");
  logging::Error(
      "disk.database_refuses_writes",
      logging::Fields()
          .Add("dir", options_.dir)
          .Add("free_bytes", state_.free_bytes)
          .Add("refusals", state_.refusals)
          .Add("retry_in_ms", absl::ToInt64Milliseconds(state_.retry_after))
          .Add("error", error)
          .Add("msg",
               absl::StrCat("the database refused a write for lack of space "
                            "though the disk has room: writes are refused and "
                            "tried again in ",
                            absl::FormatDuration(state_.retry_after),
                            "; validations are still answered")));
}

uint64_t DiskGuard::ResumeBytesLocked() const {
  // Twice the low mark; and when the reserve must be made again, room for
  // it with half a low mark to spare, so making it does not end the resume.
  const uint64_t twice = 2 * options_.low_bytes;
  if (state_.reserve_held) return twice;
  return std::max(twice, options_.low_bytes * 3 / 2 + reserve_bytes_);
}

bool DiskGuard::MakeReserveLocked() {
  if (state_.reserve_held || reserve_bytes_ == 0) return true;
  const int fd =
      ::open(reserve_path_.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0) return false;
  const int err = ::posix_fallocate(fd, 0, static_cast<off_t>(reserve_bytes_));
  if (err == 0) ::fsync(fd);
  ::close(fd);
  if (err != 0) {
    ::unlink(reserve_path_.c_str());
    return false;
  }
  state_.reserve_held = true;
  return true;
}

void DiskGuard::DropReserveLocked() {
  if (::unlink(reserve_path_.c_str()) == 0 || errno == ENOENT) {
    state_.reserve_held = false;
  }
}

absl::Status DiskGuard::RoomFor(uint64_t bytes, absl::string_view what) const {
  if (options_.low_bytes == 0) return absl::OkStatus();
  absl::StatusOr<uint64_t> free = FreeBytes();
  // Not bytes + low_bytes: a need near 2^64 would wrap to a small one.
  if (!free.ok() ||
      (*free >= options_.low_bytes && *free - options_.low_bytes >= bytes)) {
    return absl::OkStatus();
  }
  return absl::ResourceExhaustedError(
      absl::StrCat("the data disk of this node (", options_.dir, ") has ",
                   MiB(*free), " free, and ", what, " needs ", MiB(bytes),
                   " above the ", MiB(options_.low_bytes),
                   " kept free: free space on that file system or grow it"));
}

absl::Status DiskGuard::WriteRefusal() const {
  const State s = state();
  if (s.database_refuses) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "the database of this node (", options_.dir,
        ") refuses writes: ", s.reason, "; writes are tried again within ",
        absl::FormatDuration(s.retry_after),
        ", and a node whose writes go on failing reopens its database by "
        "itself; validations are still answered"));
  }
  return absl::ResourceExhaustedError(absl::StrCat(
      "the data disk of this node (", options_.dir, ") is full: ", s.reason,
      "; writes are refused until it has ", MiB(s.resume_bytes),
      " free (they resume by themselves); validations are still answered. "
      "Free space on that file system or grow it"));
}

}  // namespace sessiond::storage
