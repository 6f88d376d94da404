// Copyright sessiond authors. Licensed under the Apache License 2.0.
#ifndef SESSIOND_SERVER_VERIFIED_TLS_FILES_H_
#define SESSIOND_SERVER_VERIFIED_TLS_FILES_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "server/periodic_task.h"
#include "server/tls_credentials.h"

namespace sessiond::server {

// The TLS files a node's gRPC listeners and peer channels serve, kept apart
// from the operator's. gRPC 1.51's file watcher installs whatever it reads
// (tls_credentials.h): a renewal from another CA, an expired certificate
// put back, a certificate renamed in before its key; every new handshake
// then fails, and a bad renewal rolled out to every node stops the whole
// cluster. So gRPC watches copies in `dir` (<data_dir>/tls), which this
// class writes only when the operator's three files, as a set, pass
// CheckTlsFiles (the key is the leaf's, the chain verifies against the CA
// bundle, nothing expired).
//
// It looks at the operator's files every `check_interval` (stat: device,
// inode, size, mtime) and checks them when one changed since the set it
// serves. Then it either copies them in (tls.renewed, with the new serial
// and expiry) or keeps the copies (tls.renewal_refused, once per change of
// the files, saying what is wrong; counted) and tries again at the next
// look, so a copy that failed for want of a descriptor or disk space is
// made once they are back. The certificate and key are copied into one
// file (identity.pem, mode 0600, chain then key, replaced by one rename),
// so gRPC can never read a new key with an old certificate; the CA bundle
// into ca.pem, renamed in first. gRPC re-reads the copies every second, so
// a renewal is served at most check_interval + 1 s after it is written.
//
// A restart keeps the last good certificate too: when the operator's files
// do not verify at Start but the copies a previous run made still do, the
// copies are served (and the files refused, as above).
//
// Each look also says, once a day while it holds, when the served
// certificate expires within 14 days (tls.certificate_expires_soon), and
// status() reports its expiry for /metrics.
//
// Thread-safe. One thread of its own, "sd-tls-watch", until Stop.
class VerifiedTlsFiles {
 public:
  // Makes `dir` (and its parents; `dir` mode 0700) and copies the files
  // in, or serves the copies already there (above). InvalidArgument naming
  // the operator's file and what is wrong with it when neither verifies,
  // Internal when `dir` cannot be made or written. The caller holds the
  // data dir (its lock): `dir` is written.
  static absl::StatusOr<std::unique_ptr<VerifiedTlsFiles>> Start(
      const TlsFiles& source, const std::string& dir,
      absl::Duration check_interval);
  // What Start would serve, without writing anything: OK when `source`
  // verifies, or the copies in `dir` do; else why `source` does not. For a
  // check before the data dir is taken.
  static absl::Status CheckServable(const TlsFiles& source,
                                    const std::string& dir);
  ~VerifiedTlsFiles() = default;  // the task stops first (last member)

  VerifiedTlsFiles(const VerifiedTlsFiles&) = delete;
  VerifiedTlsFiles& operator=(const VerifiedTlsFiles&) = delete;

  // The copies, for MakeServerCredentials and ChannelCredentialsFactory:
  // `source` with the paths of the copies and refresh_interval_s 1.
  const TlsFiles& served() const { return served_; }

  // One look at the operator's files, as the thread takes every
  // check_interval (tests call it to look now).
  void CheckNow() ABSL_LOCKS_EXCLUDED(mu_);

  // Stops looking (before the data dir is let go). Idempotent.
  void Stop() { task_->Stop(); }

  struct Status {
    std::string serial;       // the served leaf's, upper-case hex
    int64_t not_after_s = 0;  // when it expires, Unix seconds
    uint64_t renewed = 0;     // sets copied in since Start
    uint64_t refused = 0;     // changed sets that failed the check
    // Why the files, as they were last looked at, are not served; empty
    // when they are.
    std::string refusal;
  };
  Status status() const ABSL_LOCKS_EXCLUDED(mu_);

 private:
  VerifiedTlsFiles(const TlsFiles& source, const std::string& dir);
  // The copies' paths for `source` in `dir`.
  static TlsFiles CopiesIn(const TlsFiles& source, const std::string& dir);
  // Checks the operator's files and copies them in. The serial and expiry
  // of the leaf copied, or why not.
  absl::StatusOr<Status> CopyIn() const;
  // The serial and expiry of the copies, once they verify.
  absl::StatusOr<Status> ReadCopies() const;
  // Counts and logs a refusal of the files stamped `stamp`, once per stamp.
  void Refuse(const std::string& stamp, const absl::Status& why)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void WarnIfExpiringSoon() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const TlsFiles source_;
  TlsFiles served_;  // set by the constructor, then constant
  mutable absl::Mutex mu_;
  Status status_ ABSL_GUARDED_BY(mu_);
  // The operator's files' stamps (common/read_file.h) when the copies
  // served were made from them, and when they were last refused.
  std::string served_stamp_ ABSL_GUARDED_BY(mu_);
  std::string refused_stamp_ ABSL_GUARDED_BY(mu_);
  std::optional<absl::Time> last_expiry_warning_ ABSL_GUARDED_BY(mu_);
  // Last: its thread calls CheckNow, which uses the members above.
  std::unique_ptr<PeriodicTask> task_;
};

}  // namespace sessiond::server

#endif  // SESSIOND_SERVER_VERIFIED_TLS_FILES_H_
