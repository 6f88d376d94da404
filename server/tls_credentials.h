// Copyright sessiond authors. Licensed under the Apache License 2.0.
#ifndef SESSIOND_SERVER_TLS_CREDENTIALS_H_
#define SESSIOND_SERVER_TLS_CREDENTIALS_H_

#include <grpcpp/security/credentials.h>
#include <grpcpp/security/server_credentials.h>
#include <grpcpp/security/tls_certificate_provider.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace sessiond::server {

// TLS for gRPC listeners and channels, built on gRPC 1.51's
// grpc::experimental::TlsServerCredentials / TlsCredentials with a
// FileWatcherCertificateProvider: gRPC re-reads the three files every
// `refresh_interval_s` seconds on a thread of its own and new handshakes use
// what it read; connections already open keep their session. So a renewed
// certificate is picked up without a restart, at most refresh_interval_s
// after it is written.
//
// (The older SslServerCredentials / SslCredentials take the PEM text once
// and never again; they would need a restart, or a new listener, to rotate.
// The TLS API works in 1.51 for everything used here, so there is no
// fallback to them.)
//
// Replacing the files on a live node (what gRPC 1.51's watcher does, read
// from its source):
//   - write each file whole and rename(2) it into place: the watcher reads
//     the key, then the certificate, and retries (3 times, then waits an
//     interval) only when a file's mtime changed while it read;
//   - a file missing or unreadable at a refresh REMOVES the credentials
//     until a later refresh reads them: new handshakes fail meanwhile (open
//     connections stay). A file that reads but does not parse is installed
//     as it is, with the same effect;
//   - when the key changes as well, rename the key first and the
//     certificate right after: a refresh between the two pairs the new key
//     with the old certificate (handshakes fail until the next refresh).
//     Re-issuing the certificate from the same key (tools/dev-ca.sh does
//     that when only the .pem is deleted) avoids the window.
// The daemon does not hand gRPC the operator's files: VerifiedTlsFiles
// (verified_tls_files.h) gives it copies it replaces only with files that
// pass CheckTlsFiles, as one file for the chain and the key.
// CheckTlsFiles is the start-up check gRPC does not do: a path typo, a key
// that is not the certificate's, a certificate another CA signed or one
// that expired fail at start-up with a message naming the file, not at the
// first handshake.
struct TlsFiles {
  // This side's certificate chain, PEM, leaf first. Required for a server;
  // a client without one (with key_file also empty) presents none.
  std::string cert_file;
  // The leaf's private key, PEM, unencrypted.
  std::string key_file;
  // PEM bundle of the CA certificates trusted to have signed the peer's
  // certificate (and this side's own: CheckTlsFiles verifies it too, as
  // sessiond's nodes and clients share one CA).
  std::string ca_file;
  // Server only: refuse the handshake of a client without a certificate
  // that chains to ca_file. When false, a client certificate is still asked
  // for and verified if one is sent, and a client without one may
  // authenticate with a bearer token (server/auth.h).
  bool require_client_cert = true;
  // How often gRPC re-reads the files. gRPC 1.51 accepts any value >= 1.
  unsigned int refresh_interval_s = 60;
};

// Reads and parses the files (each cert file holds at least one PEM
// certificate, the key one PEM private key) and checks that the key is the
// leaf's and that the chain verifies against the CA bundle now.
// INVALID_ARGUMENT naming the file and what is wrong with it. With
// `need_identity` false, empty cert_file and key_file are allowed together.
absl::Status CheckTlsFiles(const TlsFiles& files, bool need_identity);

// The first certificate of a PEM chain (the leaf): its serial number, in
// upper-case hex as OpenSSL prints it, and when it expires.
struct LeafCertificate {
  std::string serial;
  int64_t not_after_s = 0;  // Unix seconds
};
// InvalidArgument when `pem` holds no certificate.
absl::StatusOr<LeafCertificate> ReadLeafCertificate(const std::string& pem);

// Server credentials for a listener (CheckTlsFiles first). Attach an
// AuthProcessor (server/auth.h) with SetAuthMetadataProcessor before use.
absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> MakeServerCredentials(
    const TlsFiles& files);

// Channel credentials (CheckTlsFiles first): the server's certificate must
// chain to ca_file and name the host dialled (IP or DNS SAN; override with
// GRPC_SSL_TARGET_NAME_OVERRIDE_ARG), and cert_file/key_file, if set, are
// presented as the client certificate.
absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>>
MakeChannelCredentials(const TlsFiles& files);

// A check of a server's certificate after the handshake verified its chain
// and host name: its names (subject CN first, then the DNS, URI, email and
// IP SANs). An error fails the handshake (the channel does not connect).
using ServerCertificateCheck =
    std::function<absl::Status(const std::vector<std::string>& names)>;

// Channel credentials as MakeChannelCredentials's, for several channels
// whose servers are each checked their own way (a peer channel checks the
// node it dials), all sharing one certificate provider and so one watcher
// thread. Thread-safe.
class ChannelCredentialsFactory {
 public:
  // CheckTlsFiles first.
  static absl::StatusOr<std::unique_ptr<ChannelCredentialsFactory>> Create(
      const TlsFiles& files);
  // `check` runs after gRPC's own checks; null: none.
  std::shared_ptr<grpc::ChannelCredentials> Make(
      ServerCertificateCheck check) const;

 private:
  ChannelCredentialsFactory(
      std::shared_ptr<grpc::experimental::CertificateProviderInterface>
          provider,
      bool has_identity)
      : provider_(std::move(provider)), has_identity_(has_identity) {}

  const std::shared_ptr<grpc::experimental::CertificateProviderInterface>
      provider_;
  const bool has_identity_;
};

}  // namespace sessiond::server

#endif  // SESSIOND_SERVER_TLS_CREDENTIALS_H_
