// Copyright sessiond authors. Licensed under the Apache License 2.0.
//
// TLS material for tests: tools/dev-ca.sh, channel credentials from the
// files it writes, the digest a role file names a bearer token by
// (server/auth.h), and a certificate's serial.
#ifndef SESSIOND_TESTS_INTEGRATION_TLS_FILES_H_
#define SESSIOND_TESTS_INTEGRATION_TLS_FILES_H_

#include <grpcpp/security/credentials.h>

#include <memory>
#include <string>

namespace sessiond::testing {

// The whole file ("" when it cannot be read).
std::string ReadTextFile(const std::string& path);

// Lowercase hex SHA-256: a role file's `token_sha256 = ...` value.
std::string Sha256Hex(const std::string& text);

// Runs tools/dev-ca.sh with `args` (e.g. "--nodes 1 DIR app"), its output
// going to `log`; the script's exit status (0: the files were written).
int RunDevCa(const std::string& args, const std::string& log);

// The serial number, in upper-case hex, of the first certificate in the
// PEM `text` ("" when there is none).
std::string SerialOfPem(const std::string& text);

// TLS channel credentials trusting `ca_dir`/ca.pem, presenting
// `cert_dir`/IDENTITY.pem (none when `identity` is empty), and sending
// `bearer_token` (none when empty).
std::shared_ptr<grpc::ChannelCredentials> TlsCredentials(
    const std::string& ca_dir, const std::string& cert_dir,
    const std::string& identity, const std::string& bearer_token = "");

}  // namespace sessiond::testing

#endif  // SESSIOND_TESTS_INTEGRATION_TLS_FILES_H_
