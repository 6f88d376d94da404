// Copyright sessiond authors. Licensed under the Apache License 2.0.
#ifndef SESSIOND_SERVER_LISTENER_SECURITY_H_
#define SESSIOND_SERVER_LISTENER_SECURITY_H_

#include <grpcpp/security/credentials.h>
#include <grpcpp/security/server_credentials.h>

#include <map>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "common/strong_types.h"
#include "server/auth.h"
#include "server/config.h"
#include "server/tls_credentials.h"
#include "server/verified_tls_files.h"

namespace sessiond::server {

// The credentials of every gRPC endpoint of a node, from its config
// (docs/OPERATIONS.md, "TLS and roles"):
//   - without TLS: plaintext everywhere (the config already refused
//     non-loopback listeners unless --insecure_plaintext_non_loopback);
//   - with --tls_cert/--tls_key/--tls_ca: the client listener with TLS
//     (client certificates required, or optional with bearer tokens), the
//     peer listener with mutual TLS, the peer channels presenting this
//     node's certificate; every call on both listeners goes through one
//     AuthProcessor over --auth_file (identities and roles, server/auth.h),
//     so a call without an identity is UNAUTHENTICATED and one outside its
//     roles PERMISSION_DENIED before any handler runs. gRPC serves copies of
//     the files that passed CheckTlsFiles (VerifiedTlsFiles, in
//     <data_dir>/tls): a renewal that does not verify is not served.
// Immutable after Build, but for ReloadRoles and the peer channels' cache;
// thread-safe.
class ListenerSecurity {
 public:
  // Checks the TLS files (naming any that is missing or wrong; when they
  // do not verify, the copies a previous run served are served) and the
  // role file, writing nothing: for Daemon::Init before it takes the data
  // dir, so a typo fails before a database is made. InvalidArgument.
  static absl::Status Precheck(const Config& config);
  // Checks the TLS files as Precheck does, copies them into <data_dir>/tls
  // (the caller holds the data dir's lock), and parses the role file.
  // InvalidArgument on any problem: the node does not start.
  static absl::StatusOr<std::unique_ptr<ListenerSecurity>> Build(
      const Config& config);

  // Stops looking at the TLS files (before the data dir is let go; the
  // credentials keep serving the copies). Idempotent.
  void StopWatchingFiles() {
    if (served_files_ != nullptr) served_files_->Stop();
  }

  bool tls() const { return processor_ != nullptr; }
  std::shared_ptr<grpc::ServerCredentials> client_listener() const {
    return client_listener_;
  }
  std::shared_ptr<grpc::ServerCredentials> peer_listener() const {
    return peer_listener_;
  }
  // The credentials of a channel to node `peer`'s peer address. Null
  // without TLS (plaintext). With TLS the server must present a
  // certificate with role peer, tied to `peer` when the role file has
  // node_id lines (Authorizer::AuthorizePeerServer, judged by the roles in
  // force at each handshake). Cached per node.
  std::shared_ptr<grpc::ChannelCredentials> peer_channels_to(NodeId peer)
      ABSL_LOCKS_EXCLUDED(peer_channels_mu_);
  // The certificate the gRPC endpoints serve; null without TLS.
  const VerifiedTlsFiles* served_files() const { return served_files_.get(); }
  // Who made a call (AuthProcessor::CallerOf); null without TLS.
  const AuthProcessor* processor() const { return processor_.get(); }
  // One line for the start-up log.
  std::string Describe() const { return description_; }

  // Reads the role file again (SIGHUP): later calls are judged by it. On
  // an error the roles in force stay. OK without TLS.
  absl::Status ReloadRoles(const std::string& auth_file);

 private:
  ListenerSecurity() = default;

  std::shared_ptr<AuthProcessor> processor_;        // null without TLS
  std::unique_ptr<VerifiedTlsFiles> served_files_;  // null without TLS
  std::shared_ptr<grpc::ServerCredentials> client_listener_;
  std::shared_ptr<grpc::ServerCredentials> peer_listener_;
  std::unique_ptr<ChannelCredentialsFactory> peer_channel_factory_;
  absl::Mutex peer_channels_mu_;
  std::map<NodeId, std::shared_ptr<grpc::ChannelCredentials>> peer_channels_
      ABSL_GUARDED_BY(peer_channels_mu_);
  std::string description_;
};

}  // namespace sessiond::server

#endif  // SESSIOND_SERVER_LISTENER_SECURITY_H_
