// Copyright sessiond authors. Licensed under the Apache License 2.0.
#include "server/tls_credentials.h"

#include <grpcpp/security/tls_certificate_provider.h>
#include <grpcpp/security/tls_certificate_verifier.h>
#include <grpcpp/security/tls_credentials_options.h>
#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509_vfy.h>

#include <ctime>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/log.h"
#include "common/read_file.h"
#include "common/status_macros.h"

namespace sessiond::server {
namespace {

struct BioFree {
  void operator()(BIO* b) const { BIO_free(b); }
};
struct X509Free {
  void operator()(X509* x) const { X509_free(x); }
};
struct PkeyFree {
  void operator()(EVP_PKEY* k) const { EVP_PKEY_free(k); }
};
struct StoreFree {
  void operator()(X509_STORE* s) const { X509_STORE_free(s); }
};
struct StoreCtxFree {
  void operator()(X509_STORE_CTX* c) const { X509_STORE_CTX_free(c); }
};
struct StackFree {
  void operator()(STACK_OF(X509) * s) const { sk_X509_free(s); }
};
using X509Ptr = std::unique_ptr<X509, X509Free>;

// The oldest OpenSSL error queued, then the queue cleared.
std::string OpensslError() {
  unsigned long code = ERR_get_error();  // NOLINT(runtime/int)
  ERR_clear_error();
  if (code == 0) return "no detail from OpenSSL";
  char buf[256];
  ERR_error_string_n(code, buf, sizeof(buf));
  return buf;
}

absl::Status FileError(absl::string_view what, const std::string& path,
                       absl::string_view problem) {
  return absl::InvalidArgumentError(
      absl::StrCat("TLS ", what, " file ", path, ": ", problem));
}

absl::StatusOr<std::string> ReadWhole(absl::string_view what,
                                      const std::string& path) {
  if (path.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("TLS ", what, " file not given"));
  }
  absl::StatusOr<std::string> text = ReadWholeFile(path);
  if (!text.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("TLS ", what, " file ", text.status().message()));
  }
  return text;
}

// Every PEM certificate in `path`, in order; at least one.
absl::StatusOr<std::vector<X509Ptr>> ReadCertificates(absl::string_view what,
                                                      const std::string& path) {
  SESSIOND_ASSIGN_OR_RETURN(std::string pem, ReadWhole(what, path));
  std::unique_ptr<BIO, BioFree> bio(
      BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  std::vector<X509Ptr> certs;
  ERR_clear_error();
  while (true) {
    X509* cert = PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr);
    if (cert == nullptr) break;
    certs.emplace_back(cert);
  }
  // The loop ends with "no start line" at the end of the input; anything
  // else is a broken PEM block.
  unsigned long last = ERR_peek_last_error();  // NOLINT(runtime/int)
  if (last != 0 && !(ERR_GET_LIB(last) == ERR_LIB_PEM &&
                     ERR_GET_REASON(last) == PEM_R_NO_START_LINE)) {
    return FileError(what, path,
                     absl::StrCat("certificate ", certs.size() + 1,
                                  " does not parse: ", OpensslError()));
  }
  ERR_clear_error();
  if (certs.empty()) {
    return FileError(what, path, "no PEM certificate in it");
  }
  return certs;
}

// A PEM passphrase callback that refuses: without it OpenSSL would prompt on
// the terminal for an encrypted key.
int NoPassphrase(char* /*buf*/, int /*size*/, int /*rwflag*/, void* /*u*/) {
  return -1;
}

absl::StatusOr<std::unique_ptr<EVP_PKEY, PkeyFree>> ReadKey(
    const std::string& path) {
  SESSIOND_ASSIGN_OR_RETURN(std::string pem, ReadWhole("key", path));
  std::unique_ptr<BIO, BioFree> bio(
      BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  ERR_clear_error();
  EVP_PKEY* key =
      PEM_read_bio_PrivateKey(bio.get(), nullptr, NoPassphrase, nullptr);
  if (key == nullptr) {
    return FileError("key", path,
                     absl::StrCat("no unencrypted PEM private key in it (",
                                  OpensslError(), ")"));
  }
  return std::unique_ptr<EVP_PKEY, PkeyFree>(key);
}

std::string SubjectOf(X509* cert) {
  char buf[256];
  X509_NAME_oneline(X509_get_subject_name(cert), buf, sizeof(buf));
  return buf;
}

}  // namespace

absl::Status CheckTlsFiles(const TlsFiles& files, bool need_identity) {
  SESSIOND_ASSIGN_OR_RETURN(std::vector<X509Ptr> cas,
                            ReadCertificates("CA", files.ca_file));
  const bool has_identity = !files.cert_file.empty() || !files.key_file.empty();
  if (!need_identity && !has_identity) return absl::OkStatus();
  if (files.cert_file.empty() || files.key_file.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "TLS needs both a certificate file and a key file; got ",
        files.cert_file.empty() ? "no certificate file" : "no key file"));
  }
  SESSIOND_ASSIGN_OR_RETURN(std::vector<X509Ptr> chain,
                            ReadCertificates("certificate", files.cert_file));
  SESSIOND_ASSIGN_OR_RETURN(auto key, ReadKey(files.key_file));
  if (X509_check_private_key(chain.front().get(), key.get()) != 1) {
    ERR_clear_error();
    return absl::InvalidArgumentError(
        absl::StrCat("TLS key file ", files.key_file,
                     " is not the key of the certificate in ", files.cert_file,
                     " (", SubjectOf(chain.front().get()), ")"));
  }

  std::unique_ptr<X509_STORE, StoreFree> store(X509_STORE_new());
  for (const X509Ptr& ca : cas) X509_STORE_add_cert(store.get(), ca.get());
  std::unique_ptr<STACK_OF(X509), StackFree> intermediates(sk_X509_new_null());
  for (size_t i = 1; i < chain.size(); ++i) {
    sk_X509_push(intermediates.get(), chain[i].get());
  }
  std::unique_ptr<X509_STORE_CTX, StoreCtxFree> ctx(X509_STORE_CTX_new());
  if (store == nullptr || intermediates == nullptr || ctx == nullptr ||
      X509_STORE_CTX_init(ctx.get(), store.get(), chain.front().get(),
                          intermediates.get()) != 1) {
    return absl::InternalError(
        absl::StrCat("OpenSSL verification setup: ", OpensslError()));
  }
  if (X509_verify_cert(ctx.get()) != 1) {
    const int err = X509_STORE_CTX_get_error(ctx.get());
    ERR_clear_error();
    return absl::InvalidArgumentError(
        absl::StrCat("TLS certificate file ", files.cert_file, " (",
                     SubjectOf(chain.front().get()),
                     ") does not verify against the CA file ", files.ca_file,
                     ": ", X509_verify_cert_error_string(err)));
  }
  return absl::OkStatus();
}

absl::StatusOr<LeafCertificate> ReadLeafCertificate(const std::string& pem) {
  std::unique_ptr<BIO, BioFree> bio(
      BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  X509Ptr leaf(PEM_read_bio_X509(bio.get(), nullptr, NoPassphrase, nullptr));
  if (leaf == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat("no PEM certificate (", OpensslError(), ")"));
  }
  LeafCertificate facts;
  BIGNUM* serial =
      ASN1_INTEGER_to_BN(X509_get0_serialNumber(leaf.get()), nullptr);
  char* hex = serial != nullptr ? BN_bn2hex(serial) : nullptr;
  facts.serial = hex != nullptr ? hex : "?";
  OPENSSL_free(hex);
  BN_free(serial);
  tm expiry{};
  if (ASN1_TIME_to_tm(X509_get0_notAfter(leaf.get()), &expiry) != 1) {
    return absl::InvalidArgumentError(
        "the certificate's expiry (notAfter) does not parse");
  }
  facts.not_after_s = static_cast<int64_t>(timegm(&expiry));
  return facts;
}

absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> MakeServerCredentials(
    const TlsFiles& files) {
  SESSIOND_RETURN_IF_ERROR(CheckTlsFiles(files, /*need_identity=*/true));
  auto provider =
      std::make_shared<grpc::experimental::FileWatcherCertificateProvider>(
          files.key_file, files.cert_file, files.ca_file,
          files.refresh_interval_s);
  grpc::experimental::TlsServerCredentialsOptions options(provider);
  options.watch_root_certs();
  options.watch_identity_key_cert_pairs();
  // Never a *_BUT_DONT_VERIFY mode: server/auth.cc trusts the CN and SANs
  // in the AuthContext only because the chain was verified.
  options.set_cert_request_type(
      files.require_client_cert
          ? GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY
          : GRPC_SSL_REQUEST_CLIENT_CERTIFICATE_AND_VERIFY);
  std::shared_ptr<grpc::ServerCredentials> creds =
      grpc::experimental::TlsServerCredentials(options);
  if (creds == nullptr) {
    return absl::InternalError("gRPC refused the TLS server options");
  }
  return creds;
}

namespace {

// gRPC's host name check, then `check` on the names of the server's
// certificate. Synchronous: both only look at the certificate.
class CheckedServerVerifier final
    : public grpc::experimental::ExternalCertificateVerifier {
 public:
  explicit CheckedServerVerifier(ServerCertificateCheck check)
      : check_(std::move(check)),
        host_name_(std::make_shared<
                   grpc::experimental::HostNameCertificateVerifier>()) {}

  bool Verify(grpc::experimental::TlsCustomVerificationCheckRequest* request,
              std::function<void(grpc::Status)> /*callback*/,
              grpc::Status* sync_status) override {
    grpc::Status host_name;
    if (!host_name_->Verify(
            request, [](grpc::Status) {}, &host_name)) {
      // gRPC's host name check never goes asynchronous; if it ever did,
      // refusing is the safe answer.
      host_name_->Cancel(request);
      *sync_status = grpc::Status(grpc::StatusCode::UNAUTHENTICATED,
                                  "the host name check did not finish");
      return true;
    }
    if (!host_name.ok()) {
      *sync_status = host_name;
      return true;
    }
    std::vector<std::string> names;
    if (!request->common_name().empty()) {
      names.emplace_back(request->common_name().data(),
                         request->common_name().size());
    }
    for (const auto& list : {request->dns_names(), request->uri_names(),
                             request->email_names(), request->ip_names()}) {
      for (const grpc::string_ref& name : list) {
        names.emplace_back(name.data(), name.size());
      }
    }
    const absl::Status checked = check_(names);
    if (!checked.ok()) {
      logging::Warn(
          "tls.server_refused",
          logging::Fields()
              .Add("target", std::string(request->target_name().data(),
                                         request->target_name().size()))
              .Error(checked));
      *sync_status = grpc::Status(grpc::StatusCode::UNAUTHENTICATED,
                                  std::string(checked.message()));
      return true;
    }
    *sync_status = grpc::Status::OK;
    return true;
  }

  void Cancel(grpc::experimental::TlsCustomVerificationCheckRequest*) override {
  }

 private:
  const ServerCertificateCheck check_;
  const std::shared_ptr<grpc::experimental::HostNameCertificateVerifier>
      host_name_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<ChannelCredentialsFactory>>
ChannelCredentialsFactory::Create(const TlsFiles& files) {
  SESSIOND_RETURN_IF_ERROR(CheckTlsFiles(files, /*need_identity=*/false));
  const bool has_identity = !files.cert_file.empty();
  std::shared_ptr<grpc::experimental::CertificateProviderInterface> provider =
      has_identity ? std::make_shared<
                         grpc::experimental::FileWatcherCertificateProvider>(
                         files.key_file, files.cert_file, files.ca_file,
                         files.refresh_interval_s)
                   : std::make_shared<
                         grpc::experimental::FileWatcherCertificateProvider>(
                         files.ca_file, files.refresh_interval_s);
  return std::unique_ptr<ChannelCredentialsFactory>(
      new ChannelCredentialsFactory(std::move(provider), has_identity));
}

std::shared_ptr<grpc::ChannelCredentials> ChannelCredentialsFactory::Make(
    ServerCertificateCheck check) const {
  grpc::experimental::TlsChannelCredentialsOptions options;
  options.set_certificate_provider(provider_);
  options.watch_root_certs();
  if (has_identity_) options.watch_identity_key_cert_pairs();
  options.set_verify_server_certs(true);
  // The server's certificate must name the host dialled (and pass `check`).
  if (check == nullptr) {
    options.set_certificate_verifier(
        std::make_shared<grpc::experimental::HostNameCertificateVerifier>());
  } else {
    options.set_certificate_verifier(
        grpc::experimental::ExternalCertificateVerifier::Create<
            CheckedServerVerifier>(std::move(check)));
  }
  return grpc::experimental::TlsCredentials(options);
}

absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>>
MakeChannelCredentials(const TlsFiles& files) {
  SESSIOND_ASSIGN_OR_RETURN(std::unique_ptr<ChannelCredentialsFactory> factory,
                            ChannelCredentialsFactory::Create(files));
  std::shared_ptr<grpc::ChannelCredentials> creds = factory->Make(nullptr);
  if (creds == nullptr) {
    return absl::InternalError("gRPC refused the TLS channel options");
  }
  return creds;
}

}  // namespace sessiond::server
