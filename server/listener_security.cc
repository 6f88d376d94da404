// Copyright sessiond authors. Licensed under the Apache License 2.0.
#include "server/listener_security.h"

#include <sys/stat.h>

#include <filesystem>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/log.h"
#include "common/status_macros.h"

namespace sessiond::server {
namespace {

absl::StatusOr<std::shared_ptr<const Authorizer>> LoadAuthorizer(
    const std::string& auth_file) {
  SESSIOND_ASSIGN_OR_RETURN(AuthConfig roles, LoadAuthConfigFile(auth_file));
  SESSIOND_ASSIGN_OR_RETURN(MethodTable methods, MethodTable::Sessiond());
  return std::make_shared<const Authorizer>(std::move(roles),
                                            std::move(methods));
}

// A private key anyone on the machine may read lets them serve as this
// node (and, with the peer role, as a member). Warned, not refused: keys
// kept readable by a group (Debian's ssl-cert, 0640) are common and fine.
void WarnIfReadableByOthers(const std::string& key_file) {
  struct stat st;
  if (stat(key_file.c_str(), &st) != 0 || (st.st_mode & S_IROTH) == 0) return;
  logging::Warn("tls.key_readable_by_others",
                logging::Fields()
                    .Add("file", key_file)
                    .Add("mode", absl::StrFormat("%04o", st.st_mode & 07777))
                    .Add("msg", absl::StrCat("any user of this machine can "
                                             "read this node's private key; "
                                             "run `chmod o-rwx ",
                                             key_file, "`")));
}

TlsFiles SourceFiles(const Config& config) {
  TlsFiles files;
  files.cert_file = config.tls_cert;
  files.key_file = config.tls_key;
  files.ca_file = config.tls_ca;
  files.refresh_interval_s = static_cast<unsigned int>(config.tls_refresh_s);
  return files;
}

std::string CopiesDir(const Config& config) {
  return (std::filesystem::path(config.data_dir) / "tls").string();
}

}  // namespace

absl::Status ListenerSecurity::Precheck(const Config& config) {
  if (config.tls_cert.empty()) return absl::OkStatus();
  if (absl::Status s = VerifiedTlsFiles::CheckServable(SourceFiles(config),
                                                       CopiesDir(config));
      !s.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("TLS: ", s.message()));
  }
  absl::StatusOr<std::shared_ptr<const Authorizer>> authorizer =
      LoadAuthorizer(config.auth_file);
  if (!authorizer.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("--auth_file: ", authorizer.status().message()));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<ListenerSecurity>> ListenerSecurity::Build(
    const Config& config) {
  std::unique_ptr<ListenerSecurity> security(new ListenerSecurity());
  if (config.tls_cert.empty()) {
    security->client_listener_ = grpc::InsecureServerCredentials();
    security->peer_listener_ = grpc::InsecureServerCredentials();
    security->description_ =
        config.insecure_plaintext_non_loopback != 0
            ? "tls off: plaintext, and --insecure_plaintext_non_loopback=1 "
              "lets the listeners bind non-loopback addresses: anyone who "
              "reaches them can create and revoke sessions"
            : "tls off: plaintext on loopback addresses only";
    return security;
  }
  const TlsFiles files = SourceFiles(config);
  WarnIfReadableByOthers(config.tls_key);
  absl::StatusOr<std::shared_ptr<const Authorizer>> authorizer =
      LoadAuthorizer(config.auth_file);
  if (!authorizer.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("--auth_file: ", authorizer.status().message()));
  }
  security->processor_ =
      std::make_shared<AuthProcessor>(*std::move(authorizer));
  absl::StatusOr<std::unique_ptr<VerifiedTlsFiles>> served =
      VerifiedTlsFiles::Start(files, CopiesDir(config),
                              absl::Seconds(config.tls_refresh_s));
  if (!served.ok()) {
    return absl::Status(served.status().code(),
                        absl::StrCat("TLS: ", served.status().message()));
  }
  security->served_files_ = *std::move(served);
  TlsFiles copies = security->served_files_->served();
  // Peers always show a certificate.
  copies.require_client_cert = true;
  SESSIOND_ASSIGN_OR_RETURN(security->peer_listener_,
                            MakeServerCredentials(copies));
  copies.require_client_cert = config.tls_client_auth != "optional";
  SESSIOND_ASSIGN_OR_RETURN(security->client_listener_,
                            MakeServerCredentials(copies));
  SESSIOND_ASSIGN_OR_RETURN(security->peer_channel_factory_,
                            ChannelCredentialsFactory::Create(copies));
  security->client_listener_->SetAuthMetadataProcessor(security->processor_);
  security->peer_listener_->SetAuthMetadataProcessor(security->processor_);
  security->description_ = absl::StrCat(
      "tls on: client certificates ",
      copies.require_client_cert ? "required" : "optional (or a bearer token)",
      ", peers mutual TLS, roles from ", config.auth_file,
      ", files looked at every ", config.tls_refresh_s,
      " s and served once they verify");
  return security;
}

std::shared_ptr<grpc::ChannelCredentials> ListenerSecurity::peer_channels_to(
    NodeId peer) {
  if (peer_channel_factory_ == nullptr) return nullptr;
  absl::MutexLock lock(&peer_channels_mu_);
  std::shared_ptr<grpc::ChannelCredentials>& creds = peer_channels_[peer];
  if (creds == nullptr) {
    creds = peer_channel_factory_->Make(
        [processor = processor_,
         peer](const std::vector<std::string>& names) -> absl::Status {
          return processor->authorizer()->AuthorizePeerServer(names,
                                                              peer.value());
        });
  }
  return creds;
}

absl::Status ListenerSecurity::ReloadRoles(const std::string& auth_file) {
  if (processor_ == nullptr) return absl::OkStatus();
  absl::StatusOr<std::shared_ptr<const Authorizer>> authorizer =
      LoadAuthorizer(auth_file);
  if (!authorizer.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("--auth_file: ", authorizer.status().message(),
                     " (the roles in force stay)"));
  }
  if ((*authorizer)->config().node_ids.empty() &&
      !processor_->authorizer()->config().node_ids.empty()) {
    // A file cut before its node_id lines reads as a valid one that stops
    // tying peer certificates to node ids: any peer certificate could then
    // vote and append as any node.
    return absl::InvalidArgumentError(absl::StrCat(
        "--auth_file: ", auth_file,
        " has no node_id lines, and the roles in force tie peer "
        "certificates to node ids; a reload does not drop that (is the file "
        "cut short?). Restart with the file to do it on purpose (the roles "
        "in force stay)"));
  }
  processor_->SetAuthorizer(*std::move(authorizer));
  return absl::OkStatus();
}

}  // namespace sessiond::server
