// Copyright sessiond authors. Licensed under the Apache License 2.0.
#include "server/verified_tls_files.h"

#include <sys/stat.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <system_error>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/fault_point.h"
#include "common/log.h"
#include "common/read_file.h"
#include "common/replace_file.h"
#include "common/status_macros.h"

namespace sessiond::server {
namespace {

// How early, and how often, an expiry coming is told.
constexpr absl::Duration kExpiryWarning = absl::Hours(14 * 24);
constexpr absl::Duration kExpiryWarningEvery = absl::Hours(24);

std::string StampOf(const TlsFiles& files) {
  return absl::StrCat(FileStamp(files.cert_file), "|",
                      FileStamp(files.key_file), "|", FileStamp(files.ca_file));
}

std::string UnixTimeText(int64_t unix_s) {
  return absl::FormatTime("%Y-%m-%dT%H:%M:%SZ", absl::FromUnixSeconds(unix_s),
                          absl::UTCTimeZone());
}

}  // namespace

TlsFiles VerifiedTlsFiles::CopiesIn(const TlsFiles& source,
                                    const std::string& dir) {
  TlsFiles copies = source;
  copies.cert_file = dir + "/identity.pem";
  copies.key_file = copies.cert_file;
  copies.ca_file = dir + "/ca.pem";
  copies.refresh_interval_s = 1;
  return copies;
}

VerifiedTlsFiles::VerifiedTlsFiles(const TlsFiles& source,
                                   const std::string& dir)
    : source_(source), served_(CopiesIn(source, dir)) {}

absl::Status VerifiedTlsFiles::CheckServable(const TlsFiles& source,
                                             const std::string& dir) {
  absl::Status checked = CheckTlsFiles(source, /*need_identity=*/true);
  if (checked.ok()) return checked;
  if (CheckTlsFiles(CopiesIn(source, dir), /*need_identity=*/true).ok()) {
    return absl::OkStatus();
  }
  return checked;
}

absl::StatusOr<std::unique_ptr<VerifiedTlsFiles>> VerifiedTlsFiles::Start(
    const TlsFiles& source, const std::string& dir,
    absl::Duration check_interval) {
  std::error_code error;
  std::filesystem::create_directories(dir, error);
  if (error) {
    return absl::InternalError(
        absl::StrCat("cannot make ", dir, ": ", error.message()));
  }
  // It holds a copy of the private key: this user's only, however it was
  // made.
  if (::chmod(dir.c_str(), 0700) != 0) {
    return absl::InternalError(absl::StrCat(
        "cannot make ", dir, " private (chmod 0700): ", std::strerror(errno)));
  }
  std::unique_ptr<VerifiedTlsFiles> files(new VerifiedTlsFiles(source, dir));
  const std::string stamp = StampOf(source);
  absl::StatusOr<Status> copied = files->CopyIn();
  {
    absl::MutexLock lock(&files->mu_);
    if (copied.ok()) {
      files->status_ = *std::move(copied);
      files->served_stamp_ = stamp;
    } else {
      // The last run's copies, when they still verify: a restart (a reboot,
      // a rolling upgrade) must not turn a refused renewal into a node that
      // cannot start.
      absl::StatusOr<Status> kept = files->ReadCopies();
      if (!kept.ok()) return copied.status();
      files->status_ = *std::move(kept);
      files->Refuse(stamp, copied.status());
    }
    files->WarnIfExpiringSoon();
  }
  VerifiedTlsFiles* self = files.get();
  files->task_ = std::make_unique<PeriodicTask>("sd-tls-watch", check_interval,
                                                [self] { self->CheckNow(); });
  return files;
}

absl::StatusOr<VerifiedTlsFiles::Status> VerifiedTlsFiles::ReadCopies() const {
  SESSIOND_RETURN_IF_ERROR(CheckTlsFiles(served_, /*need_identity=*/true));
  SESSIOND_ASSIGN_OR_RETURN(std::string identity,
                            ReadWholeFile(served_.cert_file));
  SESSIOND_ASSIGN_OR_RETURN(LeafCertificate leaf,
                            ReadLeafCertificate(identity));
  Status status;
  status.serial = std::move(leaf.serial);
  status.not_after_s = leaf.not_after_s;
  return status;
}

absl::StatusOr<VerifiedTlsFiles::Status> VerifiedTlsFiles::CopyIn() const {
  // Checked where the operator put them, so a message names their files.
  SESSIOND_RETURN_IF_ERROR(CheckTlsFiles(source_, /*need_identity=*/true));
  // Tests: a copy that fails for this node's own reasons (a full disk).
  if (SESSIOND_FAULT_POINT_FAILS("tls.copy_in")) {
    return absl::InternalError("fault point tls.copy_in");
  }
  SESSIOND_ASSIGN_OR_RETURN(std::string chain,
                            ReadWholeFile(source_.cert_file));
  SESSIOND_ASSIGN_OR_RETURN(std::string key, ReadWholeFile(source_.key_file));
  SESSIOND_ASSIGN_OR_RETURN(std::string cas, ReadWholeFile(source_.ca_file));
  std::string identity = std::move(chain);
  if (!identity.empty() && identity.back() != '\n') identity += '\n';
  identity += key;
  // And checked again as the bytes that are served: a file replaced after
  // the check above was read, here, as it is now.
  TlsFiles staged = source_;
  staged.cert_file = staged.key_file = served_.cert_file + ".staged";
  staged.ca_file = served_.ca_file + ".staged";
  SESSIOND_RETURN_IF_ERROR(
      ReplaceFile(staged.ca_file, cas, 0600, /*durable=*/false));
  SESSIOND_RETURN_IF_ERROR(
      ReplaceFile(staged.cert_file, identity, 0600, /*durable=*/false));
  if (absl::Status s = CheckTlsFiles(staged, /*need_identity=*/true); !s.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("the files changed while they were copied (", s.message(),
                     "); they are looked at again"));
  }
  SESSIOND_ASSIGN_OR_RETURN(LeafCertificate leaf,
                            ReadLeafCertificate(identity));
  // The bundle first: a new leaf's CA is trusted before the leaf is shown.
  for (const auto& [from, to] :
       {std::pair{staged.ca_file, served_.ca_file},
        std::pair{staged.cert_file, served_.cert_file}}) {
    if (std::rename(from.c_str(), to.c_str()) != 0) {
      return absl::InternalError(absl::StrCat("cannot rename ", from, " to ",
                                              to, ": ", std::strerror(errno)));
    }
  }
  Status status;
  status.serial = std::move(leaf.serial);
  status.not_after_s = leaf.not_after_s;
  return status;
}

void VerifiedTlsFiles::CheckNow() {
  const std::string stamp = StampOf(source_);
  {
    absl::MutexLock lock(&mu_);
    WarnIfExpiringSoon();
    if (stamp == served_stamp_) return;
  }
  // Files that failed are checked again at every look (the failure may be
  // this node's: no descriptor left, a full disk); only this thread (or a
  // test's) copies, and the lock is not held over the file work.
  absl::StatusOr<Status> copied = CopyIn();
  absl::MutexLock lock(&mu_);
  if (!copied.ok()) {
    Refuse(stamp, copied.status());
    return;
  }
  served_stamp_ = stamp;
  refused_stamp_.clear();
  status_.refusal.clear();
  if (copied->serial == status_.serial &&
      copied->not_after_s == status_.not_after_s) {
    return;  // the same certificate (touched, or only the CA bundle changed)
  }
  ++status_.renewed;
  status_.serial = copied->serial;
  status_.not_after_s = copied->not_after_s;
  last_expiry_warning_.reset();
  logging::Info("tls.renewed",
                logging::Fields()
                    .Add("serial", status_.serial)
                    .Add("expires", UnixTimeText(status_.not_after_s))
                    .Add("msg",
                         "new handshakes on the gRPC listeners and peer "
                         "channels use this certificate within a second"));
}

void VerifiedTlsFiles::Refuse(const std::string& stamp,
                              const absl::Status& why) {
  status_.refusal = std::string(why.message());
  if (stamp == refused_stamp_) return;
  refused_stamp_ = stamp;
  ++status_.refused;
  logging::Warn(
      "tls.renewal_refused",
      logging::Fields()
          .Add("cert_file", source_.cert_file)
          .Add("serving_serial", status_.serial)
          .Add("serving_expires", UnixTimeText(status_.not_after_s))
          .Error(why)
          .Add("msg",
               "the TLS files do not load as a set: the certificate served "
               "so far stays (peers and clients keep connecting); fix the "
               "files, each replaced whole by rename(2); they are looked at "
               "again every --tls_refresh_s"));
}

void VerifiedTlsFiles::WarnIfExpiringSoon() {
  const absl::Time now = absl::Now();
  const absl::Time expiry = absl::FromUnixSeconds(status_.not_after_s);
  if (expiry - now > kExpiryWarning) return;
  if (last_expiry_warning_.has_value() &&
      now - *last_expiry_warning_ < kExpiryWarningEvery) {
    return;
  }
  last_expiry_warning_ = now;
  logging::Warn(
      "tls.certificate_expires_soon",
      logging::Fields()
          .Add("cert_file", source_.cert_file)
          .Add("serial", status_.serial)
          .Add("expires", UnixTimeText(status_.not_after_s))
          .Add("days_left", absl::ToInt64Hours(expiry - now) / 24)
          .Add("msg",
               "renew this node's certificate before then: replace the "
               "files (by rename) and the node serves the new one without a "
               "restart; after expiry peers and clients refuse it"));
}

VerifiedTlsFiles::Status VerifiedTlsFiles::status() const {
  absl::MutexLock lock(&mu_);
  return status_;
}

}  // namespace sessiond::server
