// Copyright sessiond authors. Licensed under the Apache License 2.0.
#include "storage/rocksdb_info_log.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <system_error>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "common/log.h"
#include "common/steady_clock.h"

namespace sessiond::storage {
namespace {

constexpr char kLogName[] = "LOG";
constexpr char kOldLogName[] = "LOG.old.1";
// RocksDB's own logger kept every old LOG as LOG.old.<microseconds>.
constexpr absl::string_view kOldLogPrefix = "LOG.old.";

int OpenLogFile(const std::string& path, bool truncate) {
  return ::open(
      path.c_str(),
      O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | (truncate ? O_TRUNC : 0),
      0644);
}

// "2026/12/03-12:40:01.123456 1234 " as RocksDB's own logger starts a line,
// so tools that read LOG files keep working.
std::string LinePrefix() {
  struct timespec now;
  ::clock_gettime(CLOCK_REALTIME, &now);
  struct tm t;
  ::localtime_r(&now.tv_sec, &t);
  char prefix[64];
  std::snprintf(prefix, sizeof(prefix),
                "%04d/%02d/%02d-%02d:%02d:%02d.%06ld %ld ", t.tm_year + 1900,
                t.tm_mon + 1, t.tm_mday, t.tm_hour, t.tm_min, t.tm_sec,
                now.tv_nsec / 1000, static_cast<long>(::syscall(SYS_gettid)));
  return prefix;
}

// Removes the LOG.old.<timestamp> files of RocksDB's own logger; returns
// how many. A file that will not go stays: it is only a log.
int RemoveTimestampedOldLogs(const std::string& dir) {
  int removed = 0;
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(dir, ec)) {
    const std::string name = entry.path().filename().string();
    if (!absl::StartsWith(name, kOldLogPrefix) || name == kOldLogName) continue;
    std::error_code remove_error;
    if (std::filesystem::remove(entry.path(), remove_error)) ++removed;
  }
  return removed;
}

// Appends the formatted text to `out`; false if the format fails. Uses `ap`
// (the caller passes a copy it may not reuse).
bool AppendFormatted(std::string* out, const char* format, va_list ap) {
  const size_t start = out->size();
  char buffer[1024];
  va_list copy;
  va_copy(copy, ap);
  const int n = std::vsnprintf(buffer, sizeof(buffer), format, copy);
  va_end(copy);
  if (n < 0) return false;
  if (static_cast<size_t>(n) < sizeof(buffer)) {
    out->append(buffer, static_cast<size_t>(n));
  } else {  // statistics dumps run to several KiB
    out->resize(start + static_cast<size_t>(n) + 1);
    std::vsnprintf(out->data() + start, static_cast<size_t>(n) + 1, format, ap);
    out->resize(start + static_cast<size_t>(n));
  }
  return true;
}

}  // namespace

absl::StatusOr<std::shared_ptr<RocksInfoLog>> RocksInfoLog::Open(
    const std::string& dir, const Options& options) {
  const int removed = RemoveTimestampedOldLogs(dir);
  if (removed > 0) {
    logging::Info("rocksdb.old_logs_removed",
                  logging::Fields().Add("data_dir", dir).Add("files", removed));
  }
  const std::string path = absl::StrCat(dir, "/", kLogName);
  const int fd = OpenLogFile(path, /*truncate=*/false);
  if (fd < 0) {
    return absl::InternalError(absl::StrCat("cannot open RocksDB's log ", path,
                                            ": ", std::strerror(errno)));
  }
  struct stat st;
  const uint64_t size =
      ::fstat(fd, &st) == 0 ? static_cast<uint64_t>(st.st_size) : 0;
  return std::shared_ptr<RocksInfoLog>(
      new RocksInfoLog(dir, options, fd, size));
}

RocksInfoLog::RocksInfoLog(std::string dir, const Options& options, int fd,
                           uint64_t size)
    : rocksdb::Logger(rocksdb::InfoLogLevel::INFO_LEVEL),
      dir_(std::move(dir)),
      options_(options),
      fd_(fd),
      size_(size),
      forward_budget_(options.forwarded_per_window, options.forward_window) {}

RocksInfoLog::~RocksInfoLog() {
  if (!closed_) (void)Close();
}

rocksdb::Status RocksInfoLog::CloseImpl() {
  absl::MutexLock lock(&mu_);
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
  return rocksdb::Status::OK();
}

void RocksInfoLog::Logv(rocksdb::InfoLogLevel level, const char* format,
                        va_list ap) {
  const bool forwarded = level >= rocksdb::InfoLogLevel::WARN_LEVEL &&
                         level <= rocksdb::InfoLogLevel::FATAL_LEVEL &&
                         level >= GetInfoLogLevel();
  if (!forwarded) {
    rocksdb::Logger::Logv(level, format, ap);
    return;
  }
  va_list copy;
  va_copy(copy, ap);
  rocksdb::Logger::Logv(level, format, copy);
  va_end(copy);
  std::string message;
  if (!AppendFormatted(&message, format, ap)) return;
  while (!message.empty() && message.back() == '\n') message.pop_back();
  Forward(level, message);
}

void RocksInfoLog::Forward(rocksdb::InfoLogLevel level,
                           const std::string& message) {
  uint64_t suppressed = 0;
  {
    absl::MutexLock lock(&forward_mu_);
    if (!forward_budget_.Admit(absl::Nanoseconds(SteadyNowNs()), &suppressed)) {
      return;
    }
  }
  logging::Fields fields;
  fields.Add("message", message);
  if (suppressed > 0) fields.Add("suppressed", suppressed);
  if (level == rocksdb::InfoLogLevel::WARN_LEVEL) {
    logging::Warn("rocksdb.warning", fields);
  } else {
    logging::Error("rocksdb.error", fields);
  }
}

void RocksInfoLog::Logv(const char* format, va_list ap) {
  std::string line = LinePrefix();
  if (!AppendFormatted(&line, format, ap)) return;
  if (line.back() != '\n') line.push_back('\n');

  absl::MutexLock lock(&mu_);
  if (fd_ < 0) return;
  if (options_.max_bytes > 0 && size_ + line.size() > options_.max_bytes) {
    RollLocked();
  }
  const ssize_t written = ::write(fd_, line.data(), line.size());
  if (written != static_cast<ssize_t>(line.size())) {
    ++dropped_;  // no room (or a short write): the next line tries again
  }
  if (written > 0) size_ += static_cast<uint64_t>(written);
}

void RocksInfoLog::RollLocked() {
  const std::string path = absl::StrCat(dir_, "/", kLogName);
  const std::string old_path = absl::StrCat(dir_, "/", kOldLogName);
  // Whatever happens, the next attempt waits for another max_bytes.
  size_ = 0;
  if (::rename(path.c_str(), old_path.c_str()) != 0) return;
  const int fd = OpenLogFile(path, /*truncate=*/true);
  if (fd < 0) return;  // the renamed file takes the lines meanwhile
  ::close(fd_);
  fd_ = fd;
}

size_t RocksInfoLog::GetLogFileSize() const {
  absl::MutexLock lock(&mu_);
  return static_cast<size_t>(size_);
}

uint64_t RocksInfoLog::dropped_lines() const {
  absl::MutexLock lock(&mu_);
  return dropped_;
}

}  // namespace sessiond::storage
