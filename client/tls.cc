// Copyright sessiond authors. Licensed under the Apache License 2.0.
#include "client/tls.h"

#include <grpcpp/security/credentials.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"

namespace sessiond::client {
namespace {

// The whole file at `path`; `what` names the option in errors.
absl::StatusOr<std::string> ReadWhole(const std::string& path,
                                      absl::string_view what) {
  std::FILE* file = std::fopen(path.c_str(), "rb");
  if (file == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, " ", path, ": cannot open: ", std::strerror(errno)));
  }
  std::string text;
  char buffer[4096];
  size_t n = 0;
  while ((n = std::fread(buffer, 1, sizeof(buffer), file)) > 0) {
    text.append(buffer, n);
  }
  const bool failed = std::ferror(file) != 0;
  const int error = errno;
  std::fclose(file);
  if (failed) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, " ", path, ": cannot read: ", std::strerror(error)));
  }
  if (absl::StripAsciiWhitespace(text).empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, " ", path, ": the file is empty"));
  }
  return text;
}

// A PEM file that holds at least one block whose label ends in `label`
// ("CERTIFICATE", "PRIVATE KEY": also "EC PRIVATE KEY", "RSA PRIVATE KEY").
absl::StatusOr<std::string> ReadPem(const std::string& path,
                                    absl::string_view what,
                                    absl::string_view label) {
  absl::StatusOr<std::string> text = ReadWhole(path, what);
  if (!text.ok()) return text.status();
  const std::string begin = absl::StrCat(label, "-----");
  size_t at = 0;
  while ((at = text->find("-----BEGIN ", at)) != std::string::npos) {
    const size_t end = text->find('\n', at);
    absl::string_view line =
        absl::StripAsciiWhitespace(absl::string_view(*text).substr(
            at, end == std::string::npos ? std::string::npos : end - at));
    if (absl::EndsWith(line, begin)) return text;
    at += 1;
  }
  return absl::InvalidArgumentError(
      absl::StrCat(what, " ", path, ": no PEM ", label,
                   " block in it (expected \"-----BEGIN ... ", begin, "\")"));
}

// A token that can go in `authorization: Bearer <token>`: printable ASCII,
// no whitespace. Never puts the token in the message.
absl::Status CheckToken(absl::string_view token, absl::string_view what) {
  if (token.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(what, " is empty"));
  }
  for (char c : token) {
    const auto u = static_cast<unsigned char>(c);
    if (u < 0x21 || u > 0x7e) {
      return absl::InvalidArgumentError(absl::StrCat(
          what,
          " holds a character a bearer token cannot have (a space, a "
          "control character or a non-ASCII byte)"));
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> MakeTlsCredentials(
    const TlsOptions& options) {
  if (options.cert_file.empty() != options.key_file.empty()) {
    return absl::InvalidArgumentError(
        options.cert_file.empty()
            ? absl::StrCat("key_file ", options.key_file,
                           " is set without cert_file: give both or neither")
            : absl::StrCat("cert_file ", options.cert_file,
                           " is set without key_file: give both or neither"));
  }
  grpc::SslCredentialsOptions ssl;
  if (!options.ca_file.empty()) {
    absl::StatusOr<std::string> ca =
        ReadPem(options.ca_file, "ca_file", "CERTIFICATE");
    if (!ca.ok()) return ca.status();
    ssl.pem_root_certs = *std::move(ca);
  }
  if (!options.cert_file.empty()) {
    absl::StatusOr<std::string> cert =
        ReadPem(options.cert_file, "cert_file", "CERTIFICATE");
    if (!cert.ok()) return cert.status();
    absl::StatusOr<std::string> key =
        ReadPem(options.key_file, "key_file", "PRIVATE KEY");
    if (!key.ok()) return key.status();
    ssl.pem_cert_chain = *std::move(cert);
    ssl.pem_private_key = *std::move(key);
  }
  std::shared_ptr<grpc::ChannelCredentials> credentials =
      grpc::SslCredentials(ssl);
  if (credentials == nullptr) {
    return absl::InternalError("grpc::SslCredentials returned no credentials");
  }
  if (options.bearer_token.empty()) return credentials;
  if (absl::Status s = CheckToken(options.bearer_token, "bearer_token");
      !s.ok()) {
    return s;
  }
  std::shared_ptr<grpc::CallCredentials> token =
      grpc::AccessTokenCredentials(options.bearer_token);
  if (token == nullptr) {
    return absl::InternalError(
        "grpc::AccessTokenCredentials returned no credentials");
  }
  return grpc::CompositeChannelCredentials(credentials, token);
}

absl::StatusOr<std::string> ReadTokenFile(const std::string& path) {
  absl::StatusOr<std::string> text = ReadWhole(path, "token file");
  if (!text.ok()) return text.status();
  std::string token(absl::StripAsciiWhitespace(*text));
  if (absl::Status s = CheckToken(token, absl::StrCat("the token in ", path));
      !s.ok()) {
    return s;
  }
  return token;
}

}  // namespace sessiond::client
