// Copyright sessiond authors. Licensed under the Apache License 2.0.
#ifndef SESSIOND_STORAGE_ROCKSDB_INFO_LOG_H_
#define SESSIOND_STORAGE_ROCKSDB_INFO_LOG_H_

#include <cstdarg>
#include <cstdint>
#include <memory>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/log_budget.h"
#include "rocksdb/env.h"

namespace sessiond::storage {

// RocksDB's informational log (the data dir's LOG file), written so that a
// full disk never stops the node.
//
// RocksDB 7.8's own file logger remembers a failed append and asserts on the
// next one, and Debian's librocksdb keeps its asserts: on a disk that filled,
// the log line after the first one that found no room aborted sessiond (in a
// flush, at a clean stop, at a restart on the full disk). This logger writes
// each line with one write(2) and drops a line the disk has no room for,
// counting it; the next line is tried afresh. At `max_bytes` it renames LOG
// to LOG.old.1 (replacing the one before), so the two files stay under twice
// that; `LOG.old.<timestamp>` files RocksDB's own logger left are removed at
// Open.
//
// Lines at WARN and above (write stalls, background errors, corruption) also
// go to sessiond's own log as `rocksdb.warning` / `rocksdb.error` with the
// line as `message`, where operators look; LOG alone is read only in a
// post-mortem. At most `forwarded_per_window` of them per `forward_window`:
// a failing disk makes RocksDB repeat itself, and sessiond's log must stay
// readable. The next forwarded line says how many were left out
// (`suppressed=N`); LOG keeps every one.
//
// Thread-safe: RocksDB logs from its foreground and background threads; one
// mutex orders the lines and guards the file.
class RocksInfoLog final : public rocksdb::Logger {
 public:
  struct Options {
    // LOG rolls into LOG.old.1 past this size (0: never).
    uint64_t max_bytes = 8 << 20;
    int forwarded_per_window = 10;
    absl::Duration forward_window = absl::Minutes(1);
  };

  // Opens (appends to) `dir`/LOG. `dir` must exist.
  static absl::StatusOr<std::shared_ptr<RocksInfoLog>> Open(
      const std::string& dir, const Options& options);

  ~RocksInfoLog() override;

  // Forwards WARN and above to sessiond's log, then writes the line.
  void Logv(rocksdb::InfoLogLevel level, const char* format,
            va_list ap) override;
  // Every line ends here, after the base class filtered it by level and
  // tagged it with the level's name.
  void Logv(const char* format, va_list ap) override;
  size_t GetLogFileSize() const override;

  // Lines lost because the disk had no room (or another write error).
  uint64_t dropped_lines() const;

 private:
  RocksInfoLog(std::string dir, const Options& options, int fd, uint64_t size);

  rocksdb::Status CloseImpl() override;
  // Renames LOG to LOG.old.1 and starts a new LOG. On failure the current
  // file stays open and grows on.
  void RollLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Sends `message` to sessiond's log unless this window's share is spent.
  void Forward(rocksdb::InfoLogLevel level, const std::string& message);

  const std::string dir_;
  const Options options_;

  mutable absl::Mutex mu_;
  int fd_ ABSL_GUARDED_BY(mu_);
  uint64_t size_ ABSL_GUARDED_BY(mu_);
  uint64_t dropped_ ABSL_GUARDED_BY(mu_) = 0;

  // Forwarding's own lock: sessiond's log is never written under mu_.
  absl::Mutex forward_mu_;
  logging::LogBudget forward_budget_ ABSL_GUARDED_BY(forward_mu_);
};

}  // namespace sessiond::storage

#endif  // SESSIOND_STORAGE_ROCKSDB_INFO_LOG_H_
