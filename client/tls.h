// Copyright sessiond authors. Licensed under the Apache License 2.0.
#ifndef SESSIOND_CLIENT_TLS_H_
#define SESSIOND_CLIENT_TLS_H_

#include <grpcpp/security/credentials.h>

#include <memory>
#include <string>

#include "absl/status/statusor.h"

namespace sessiond::client {

// Client credentials for a sessiond cluster that serves TLS (issue 9, "TLS
// and roles"; docs/CLIENT.md, "TLS and tokens"): the PEM files of
// tools/dev-ca.sh or of your own CA, and optionally a bearer token.
//
// Built with grpc::SslCredentials, which takes the PEM text once: a
// certificate renewed on disk is used by channels made after it is read
// again (call MakeTlsCredentials again and make new channels, e.g. a new
// SessionClient). The server's certificate must chain to `ca_file` and name
// the host dialled (an IP or DNS subject alternative name).
struct TlsOptions {
  // PEM bundle of the CA certificates trusted to have signed the servers'
  // certificates. Empty: gRPC's default roots
  // (GRPC_DEFAULT_SSL_ROOTS_FILE_PATH, else its built-in bundle).
  std::string ca_file;
  // This client's certificate chain (PEM, leaf first) and its unencrypted
  // private key, presented to servers that ask for one (mutual TLS; the
  // certificate's CN and SANs are the identity, server/auth.h). Both or
  // neither.
  std::string cert_file;
  std::string key_file;
  // A bearer token, sent as `authorization: Bearer <token>` metadata with
  // every call (grpc::AccessTokenCredentials; gRPC sends it only over TLS).
  // Empty: none. A server that gets a token authenticates the call by it
  // and not by the certificate. Never log it.
  std::string bearer_token;
};

// Reads the files and returns credentials for SessionClientOptions::
// credentials (or grpc::CreateChannel). INVALID_ARGUMENT naming the option
// and the file when a file is missing, unreadable, empty or not PEM of the
// expected kind (ca_file and cert_file need a CERTIFICATE block, key_file a
// PRIVATE KEY block), when only one of cert_file and key_file is set, or
// when the token is not a valid header value (it must be printable ASCII
// without spaces; the message never contains it). What needs a TLS
// library to check (that the key is the certificate's, that the chain
// verifies, expiry) shows up at the handshake: calls fail UNAVAILABLE.
absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> MakeTlsCredentials(
    const TlsOptions& options);

// The token in the file at `path`: its content without the whitespace
// around it (a trailing newline is usual). INVALID_ARGUMENT naming the file
// when it cannot be read, is empty, or holds more than one word (the
// message never contains the file's content).
absl::StatusOr<std::string> ReadTokenFile(const std::string& path);

}  // namespace sessiond::client

#endif  // SESSIOND_CLIENT_TLS_H_
