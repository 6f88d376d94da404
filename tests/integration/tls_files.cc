// Copyright sessiond authors. Licensed under the Apache License 2.0.
#include "tests/integration/tls_files.h"

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/pem.h>
#include <openssl/sha.h>
#include <openssl/x509.h>

#include <cstdlib>
#include <fstream>
#include <sstream>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"

namespace sessiond::testing {

std::string ReadTextFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

std::string Sha256Hex(const std::string& text) {
  unsigned char digest[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const unsigned char*>(text.data()), text.size(),
         digest);
  return absl::BytesToHexString(
      absl::string_view(reinterpret_cast<const char*>(digest), sizeof digest));
}

std::string SerialOfPem(const std::string& text) {
  BIO* bio = BIO_new_mem_buf(text.data(), static_cast<int>(text.size()));
  X509* cert = PEM_read_bio_X509(bio, nullptr, nullptr, nullptr);
  BIO_free(bio);
  if (cert == nullptr) return "";
  BIGNUM* bn = ASN1_INTEGER_to_BN(X509_get0_serialNumber(cert), nullptr);
  char* hex = BN_bn2hex(bn);
  std::string serial = hex;
  OPENSSL_free(hex);
  BN_free(bn);
  X509_free(cert);
  return serial;
}

int RunDevCa(const std::string& args, const std::string& log) {
  const std::string command = absl::StrCat(
      SESSIOND_SOURCE_DIR, "/tools/dev-ca.sh ", args, " >", log, " 2>&1");
  return std::system(command.c_str());
}

std::shared_ptr<grpc::ChannelCredentials> TlsCredentials(
    const std::string& ca_dir, const std::string& cert_dir,
    const std::string& identity, const std::string& bearer_token) {
  grpc::SslCredentialsOptions options;
  options.pem_root_certs = ReadTextFile(ca_dir + "/ca.pem");
  if (!identity.empty()) {
    options.pem_cert_chain = ReadTextFile(cert_dir + "/" + identity + ".pem");
    options.pem_private_key =
        ReadTextFile(cert_dir + "/" + identity + "-key.pem");
  }
  std::shared_ptr<grpc::ChannelCredentials> ssl = grpc::SslCredentials(options);
  if (bearer_token.empty()) return ssl;
  return grpc::CompositeChannelCredentials(
      ssl, grpc::AccessTokenCredentials(bearer_token));
}

}  // namespace sessiond::testing
