// Copyright sessiond authors. Licensed under the Apache License 2.0.
//
// client/tls.h over real gRPC: certificates from tools/dev-ca.sh in a
// temporary folder, an in-process grpc::Server on 127.0.0.1 with
// grpc::SslServerCredentials (client certificates required, or only asked
// for), and a SessionService whose ValidateSession records what the
// transport verified (the client certificate's CN) and the `authorization`
// metadata it got.
#include <grpcpp/create_channel.h>
#include <grpcpp/security/credentials.h>
#include <grpcpp/security/server_credentials.h>
#include <grpcpp/server.h>
#include <grpcpp/server_builder.h>
#include <sys/stat.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "client/session_client.h"
#include "client/tls.h"
#include "gtest/gtest.h"
#include "sessiond/v1/session.grpc.pb.h"

namespace sessiond::client {
namespace {

constexpr char kToken[] = "client-tls-test-token-4b1d";

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

void WriteFile(const std::string& path, const std::string& text) {
  std::ofstream(path, std::ios::binary | std::ios::trunc) << text;
}

// What the last ValidateSession call that reached the handler presented.
// gRPC's threads write, the test thread reads.
class ProbeService final : public v1::SessionService::Service {
 public:
  struct Seen {
    int calls = 0;
    std::string common_name;    // the client certificate's CN, if any
    std::string authorization;  // the metadata value, if any
  };

  grpc::Status ValidateSession(grpc::ServerContext* context,
                               const v1::ValidateSessionRequest* /*request*/,
                               v1::ValidateSessionResponse* response) override {
    Seen seen;
    for (const grpc::string_ref& cn :
         context->auth_context()->FindPropertyValues("x509_common_name")) {
      seen.common_name.assign(cn.data(), cn.size());
    }
    const auto& metadata = context->client_metadata();
    if (auto it = metadata.find("authorization"); it != metadata.end()) {
      seen.authorization.assign(it->second.data(), it->second.size());
    }
    response->set_outcome(v1::ValidateSessionResponse::UNKNOWN);
    absl::MutexLock lock(&mu_);
    seen.calls = seen_.calls + 1;
    seen_ = seen;
    return grpc::Status::OK;
  }

  Seen seen() const {
    absl::MutexLock lock(&mu_);
    return seen_;
  }

 private:
  mutable absl::Mutex mu_;
  Seen seen_ ABSL_GUARDED_BY(mu_);
};

// node-1's certificate on 127.0.0.1:<free port>.
class SslServer {
 public:
  SslServer(const std::string& dir, bool require_client_cert) {
    grpc::SslServerCredentialsOptions options(
        require_client_cert
            ? GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY
            : GRPC_SSL_REQUEST_CLIENT_CERTIFICATE_AND_VERIFY);
    options.pem_root_certs = ReadFile(dir + "/ca.pem");
    options.pem_key_cert_pairs.push_back(
        {ReadFile(dir + "/node-1-key.pem"), ReadFile(dir + "/node-1.pem")});
    grpc::ServerBuilder builder;
    builder.AddListeningPort("127.0.0.1:0", grpc::SslServerCredentials(options),
                             &port_);
    builder.RegisterService(&service_);
    server_ = builder.BuildAndStart();
    EXPECT_NE(server_, nullptr);
    EXPECT_GT(port_, 0);
  }
  ~SslServer() {
    if (server_ != nullptr) {
      server_->Shutdown(std::chrono::system_clock::now());
    }
  }

  std::string address() const { return absl::StrCat("127.0.0.1:", port_); }
  const ProbeService& service() const { return service_; }

 private:
  ProbeService service_;
  int port_ = 0;
  std::unique_ptr<grpc::Server> server_;
};

class ClientTlsTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    std::string pattern = ::testing::TempDir() + "/client_tls_test.XXXXXX";
    std::vector<char> buffer(pattern.begin(), pattern.end());
    buffer.push_back('\0');
    ASSERT_NE(mkdtemp(buffer.data()), nullptr);
    root_ = new std::string(buffer.data());
    // Two CAs: ours, and another one whose certificates ours must refuse.
    for (const char* ca : {"ca", "other-ca"}) {
      const std::string log = absl::StrCat(*root_, "/", ca, ".log");
      const std::string command =
          absl::StrCat(SESSIOND_SOURCE_DIR, "/tools/dev-ca.sh --nodes 1 ",
                       *root_, "/", ca, " app >", log, " 2>&1");
      ASSERT_EQ(std::system(command.c_str()), 0) << ReadFile(log);
    }
  }
  static void TearDownTestSuite() {
    if (root_ != nullptr) {
      std::system(absl::StrCat("rm -rf '", *root_, "'").c_str());
      delete root_;
      root_ = nullptr;
    }
  }

  static std::string Ca(const std::string& name, const char* ca = "ca") {
    return absl::StrCat(*root_, "/", ca, "/", name);
  }
  static std::string Scratch(const std::string& name) {
    return absl::StrCat(*root_, "/", name);
  }

  static TlsOptions AppOptions() {
    TlsOptions options;
    options.ca_file = Ca("ca.pem");
    options.cert_file = Ca("app.pem");
    options.key_file = Ca("app-key.pem");
    return options;
  }

  // One ValidateSession over a channel with `credentials`.
  static grpc::Status Call(const std::string& address,
                           std::shared_ptr<grpc::ChannelCredentials> creds) {
    auto stub = v1::SessionService::NewStub(
        grpc::CreateChannel(address, std::move(creds)));
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() +
                         std::chrono::seconds(10));
    v1::ValidateSessionRequest request;
    request.set_token("t");
    v1::ValidateSessionResponse response;
    return stub->ValidateSession(&context, request, &response);
  }

  static std::string* root_;
};

std::string* ClientTlsTest::root_ = nullptr;

TEST_F(ClientTlsTest, ClientCertificateIsPresentedAndServerVerified) {
  SslServer server(Ca(""), /*require_client_cert=*/true);
  auto creds = MakeTlsCredentials(AppOptions());
  ASSERT_TRUE(creds.ok()) << creds.status();
  const grpc::Status s = Call(server.address(), *creds);
  EXPECT_TRUE(s.ok()) << s.error_code() << " " << s.error_message();
  const ProbeService::Seen seen = server.service().seen();
  EXPECT_EQ(seen.calls, 1);
  EXPECT_EQ(seen.common_name, "app");
  EXPECT_EQ(seen.authorization, "");
}

TEST_F(ClientTlsTest, TheSessionClientUsesTheCredentials) {
  SslServer server(Ca(""), /*require_client_cert=*/true);
  TlsOptions tls = AppOptions();
  tls.bearer_token = kToken;
  auto creds = MakeTlsCredentials(tls);
  ASSERT_TRUE(creds.ok()) << creds.status();
  SessionClientOptions options;
  options.credentials = *creds;
  options.call_timeout = absl::Seconds(10);
  auto client = SessionClient::Connect(server.address(), options);
  auto answer = client->Validate("t");
  ASSERT_TRUE(answer.ok()) << answer.status();
  EXPECT_EQ(answer->outcome(), v1::ValidateSessionResponse::UNKNOWN);
  const ProbeService::Seen seen = server.service().seen();
  EXPECT_EQ(seen.common_name, "app");
  EXPECT_EQ(seen.authorization, absl::StrCat("Bearer ", kToken));
}

TEST_F(ClientTlsTest, TokenWithoutCertificateWhereOneIsOnlyAskedFor) {
  SslServer server(Ca(""), /*require_client_cert=*/false);
  TlsOptions tls;
  tls.ca_file = Ca("ca.pem");
  const std::string token_file = Scratch("token");
  WriteFile(token_file, absl::StrCat("  ", kToken, "\n"));
  auto token = ReadTokenFile(token_file);
  ASSERT_TRUE(token.ok()) << token.status();
  EXPECT_EQ(*token, kToken);
  tls.bearer_token = *token;
  auto creds = MakeTlsCredentials(tls);
  ASSERT_TRUE(creds.ok()) << creds.status();
  const grpc::Status s = Call(server.address(), *creds);
  EXPECT_TRUE(s.ok()) << s.error_code() << " " << s.error_message();
  const ProbeService::Seen seen = server.service().seen();
  EXPECT_EQ(seen.calls, 1);
  EXPECT_EQ(seen.common_name, "");
  EXPECT_EQ(seen.authorization, absl::StrCat("Bearer ", kToken));
}

TEST_F(ClientTlsTest, HandshakeFailuresAreUnavailable) {
  SslServer server(Ca(""), /*require_client_cert=*/true);
  // No client certificate where one is required.
  TlsOptions no_cert;
  no_cert.ca_file = Ca("ca.pem");
  auto creds = MakeTlsCredentials(no_cert);
  ASSERT_TRUE(creds.ok()) << creds.status();
  EXPECT_EQ(Call(server.address(), *creds).error_code(),
            grpc::StatusCode::UNAVAILABLE);
  // The server's certificate is not signed by the CA we trust.
  TlsOptions wrong_ca = AppOptions();
  wrong_ca.ca_file = Ca("ca.pem", "other-ca");
  creds = MakeTlsCredentials(wrong_ca);
  ASSERT_TRUE(creds.ok()) << creds.status();
  EXPECT_EQ(Call(server.address(), *creds).error_code(),
            grpc::StatusCode::UNAVAILABLE);
  // Our certificate is signed by a CA the server does not trust.
  TlsOptions foreign_cert = AppOptions();
  foreign_cert.cert_file = Ca("app.pem", "other-ca");
  foreign_cert.key_file = Ca("app-key.pem", "other-ca");
  creds = MakeTlsCredentials(foreign_cert);
  ASSERT_TRUE(creds.ok()) << creds.status();
  EXPECT_EQ(Call(server.address(), *creds).error_code(),
            grpc::StatusCode::UNAVAILABLE);
  EXPECT_EQ(server.service().seen().calls, 0);
}

TEST_F(ClientTlsTest, BadFilesAreNamedInTheError) {
  const std::string missing = Scratch("no-such.pem");
  const std::string not_pem = Scratch("not.pem");
  const std::string empty = Scratch("empty.pem");
  WriteFile(not_pem, "hello\n");
  WriteFile(empty, "\n");
  struct Case {
    TlsOptions options;
    std::vector<std::string> says;
  };
  std::vector<Case> cases;
  auto with = [](auto change) {
    TlsOptions options = AppOptions();
    change(options);
    return options;
  };
  cases.push_back({with([&](TlsOptions& o) { o.ca_file = missing; }),
                   {"ca_file", missing, "No such file"}});
  cases.push_back({with([&](TlsOptions& o) { o.cert_file = not_pem; }),
                   {"cert_file", not_pem, "CERTIFICATE"}});
  cases.push_back({with([&](TlsOptions& o) { o.key_file = empty; }),
                   {"key_file", empty, "empty"}});
  // The key where the certificate goes, and the other way round.
  cases.push_back(
      {with([&](TlsOptions& o) { o.cert_file = Ca("app-key.pem"); }),
       {"cert_file", "CERTIFICATE"}});
  cases.push_back({with([&](TlsOptions& o) { o.key_file = Ca("app.pem"); }),
                   {"key_file", "PRIVATE KEY"}});
  cases.push_back({with([&](TlsOptions& o) { o.key_file.clear(); }),
                   {"cert_file", "without key_file"}});
  cases.push_back({with([&](TlsOptions& o) { o.cert_file.clear(); }),
                   {"key_file", "without cert_file"}});
  cases.push_back({with([&](TlsOptions& o) { o.ca_file = Ca(""); }),
                   {"ca_file", Ca("")}});  // a directory
  cases.push_back({with([&](TlsOptions& o) { o.bearer_token = "two words"; }),
                   {"bearer_token", "character"}});
  for (const Case& c : cases) {
    auto creds = MakeTlsCredentials(c.options);
    ASSERT_FALSE(creds.ok()) << c.says[0];
    EXPECT_EQ(creds.status().code(), absl::StatusCode::kInvalidArgument);
    for (const std::string& part : c.says) {
      EXPECT_TRUE(absl::StrContains(creds.status().message(), part))
          << creds.status() << " lacks " << part;
    }
  }
}

TEST_F(ClientTlsTest, TokenFilesAreCheckedAndNeverEchoed) {
  const std::string missing = Scratch("no-such-token");
  auto token = ReadTokenFile(missing);
  ASSERT_FALSE(token.ok());
  EXPECT_TRUE(absl::StrContains(token.status().message(), missing))
      << token.status();
  const std::string blank = Scratch("blank-token");
  WriteFile(blank, " \n\n");
  token = ReadTokenFile(blank);
  ASSERT_FALSE(token.ok());
  EXPECT_TRUE(absl::StrContains(token.status().message(), "empty"))
      << token.status();
  const std::string two = Scratch("two-tokens");
  WriteFile(two, "secret-one\nsecret-two\n");
  token = ReadTokenFile(two);
  ASSERT_FALSE(token.ok());
  EXPECT_TRUE(absl::StrContains(token.status().message(), two))
      << token.status();
  EXPECT_FALSE(absl::StrContains(token.status().message(), "secret"))
      << token.status();
}

}  // namespace
}  // namespace sessiond::client
