// Copyright sessiond authors. Licensed under the Apache License 2.0.
//
// The real sessionctl binary against a real sessiond serving mutual TLS
// with a role file (issue 9, "TLS and roles"): certificates from
// tools/dev-ca.sh, one node with node-1's certificate, and sessionctl with
// the admin's certificate (exit 0), the app's (exit 5, PERMISSION_DENIED),
// none (the handshake fails where certificates are required: exit 3; with
// --tls_client_auth optional the call is UNAUTHENTICATED: exit 5), and a
// bearer token from --token-file or SESSIOND_TOKEN_FILE (exit 0).
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "client/tls.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "sessiond/v1/admin.grpc.pb.h"
#include "tests/integration/sessiond_process.h"
#include "tests/integration/tls_files.h"
#include "tests/tools/run_process.h"

namespace sessiond::testing {
namespace {

constexpr char kToken[] = "sessionctl-tls-test-token-91c2e";

using CtlRun = ProcessRun;

// Runs sessionctl with `args` and a clean environment (HOME in `home`, so
// no user config file is read) plus `env`; killed after `timeout`.
CtlRun Sessionctl(const std::string& home, const std::vector<std::string>& args,
                  const std::vector<std::string>& env = {},
                  absl::Duration timeout = absl::Seconds(30)) {
  std::vector<std::string> argv = {SESSIONCTL_BINARY};
  argv.insert(argv.end(), args.begin(), args.end());
  std::vector<std::string> env_all = {"PATH=/usr/bin:/bin",
                                      absl::StrCat("HOME=", home)};
  env_all.insert(env_all.end(), env.begin(), env.end());
  return RunProcess(argv, env_all, "", timeout);
}

// One sessiond with node-1's certificate and the role file
//   node-1 = peer, admin = admin, app = app, and kToken for admin.
class SessionctlTlsTest : public ::testing::Test {
 protected:
  void StartNode(const std::string& client_auth) {
    const std::string log = dir_.path() + "/dev-ca.log";
    ASSERT_EQ(RunDevCa(absl::StrCat("--nodes 1 ", Ca(""), " admin app"), log),
              0)
        << ReadTextFile(log);
    const std::string roles = dir_.path() + "/roles";
    std::ofstream(roles) << "node-1 = peer\nadmin = admin\napp = app\n"
                         << "token_sha256 = " << Sha256Hex(kToken)
                         << " admin\n";
    std::ofstream(TokenFile()) << kToken << "\n";
    node_ = std::make_unique<SessiondProcess>(
        SESSIOND_BINARY, dir_.path() + "/data",
        std::vector<std::string>{"--tls_cert", Ca("node-1.pem"), "--tls_key",
                                 Ca("node-1-key.pem"), "--tls_ca", Ca("ca.pem"),
                                 "--tls_client_auth", client_auth,
                                 "--auth_file", roles});
    ASSERT_TRUE(node_->Launch().ok());
    WaitUntilServing();
  }

  // Until an admin's ClusterStatus over TLS answers (bounded).
  void WaitUntilServing() {
    client::TlsOptions tls;
    tls.ca_file = Ca("ca.pem");
    tls.cert_file = Ca("admin.pem");
    tls.key_file = Ca("admin-key.pem");
    auto creds = client::MakeTlsCredentials(tls);
    ASSERT_TRUE(creds.ok()) << creds.status();
    const absl::Time deadline = absl::Now() + absl::Seconds(60);
    grpc::Status last;
    while (absl::Now() < deadline) {
      // A fresh channel each time: a refused one waits out gRPC's growing
      // reconnect backoff.
      auto stub = v1::AdminService::NewStub(
          grpc::CreateChannel(node_->address(), *creds));
      grpc::ClientContext context;
      context.set_deadline(std::chrono::system_clock::now() +
                           std::chrono::milliseconds(500));
      v1::ClusterStatusResponse response;
      last =
          stub->ClusterStatus(&context, v1::ClusterStatusRequest(), &response);
      if (last.ok()) return;
      usleep(50 * 1000);
    }
    FAIL() << "sessiond did not serve TLS: " << last.error_message() << "\n"
           << ReadTextFile(node_->log_path());
  }

  std::string Ca(const std::string& name) const {
    return absl::StrCat(dir_.path(), "/ca/", name);
  }
  std::string TokenFile() const { return dir_.path() + "/token"; }

  // sessionctl status against the node, with `args` before the verb.
  CtlRun Status(std::vector<std::string> args,
                const std::vector<std::string>& env = {}) {
    args.insert(args.begin(),
                {"--endpoints", node_->address(), "--timeout", "3s"});
    args.push_back("status");
    return Sessionctl(dir_.path(), args, env);
  }

  std::vector<std::string> AsAdmin() const {
    return {"--tls-ca",      Ca("ca.pem"), "--tls-cert",
            Ca("admin.pem"), "--tls-key",  Ca("admin-key.pem")};
  }
  std::vector<std::string> AsApp() const {
    return {"--tls-ca",    Ca("ca.pem"), "--tls-cert",
            Ca("app.pem"), "--tls-key",  Ca("app-key.pem")};
  }

  TempDir dir_;
  std::unique_ptr<SessiondProcess> node_;
};

TEST_F(SessionctlTlsTest, ClientCertificatesRequired) {
  StartNode("require");
  const CtlRun admin = Status(AsAdmin());
  EXPECT_EQ(admin.exit_code, 0) << admin;
  EXPECT_TRUE(absl::StrContains(admin.out, "leader node 1")) << admin;

  const CtlRun app = Status(AsApp());
  EXPECT_EQ(app.exit_code, 5) << app;
  EXPECT_TRUE(absl::StrContains(app.err, "PERMISSION_DENIED")) << app;
  EXPECT_TRUE(absl::StrContains(app.err, Ca("app.pem"))) << app;
  EXPECT_TRUE(absl::StrContains(app.err, "role file")) << app;

  // No client certificate: the server refuses the handshake, which gRPC
  // reports as UNAVAILABLE: exit 3, saying the handshake may have failed.
  const CtlRun none = Status({"--tls-ca", Ca("ca.pem")});
  EXPECT_EQ(none.exit_code, 3) << none;
  EXPECT_TRUE(absl::StrContains(none.err, "handshake may have failed")) << none;
  // A token does not replace a certificate the cluster requires.
  const CtlRun token =
      Status({"--tls-ca", Ca("ca.pem"), "--token-file", TokenFile()});
  EXPECT_EQ(token.exit_code, 3) << token;
  EXPECT_FALSE(absl::StrContains(token.err, kToken)) << token;
  // Plaintext against TLS.
  const CtlRun plain = Status({});
  EXPECT_EQ(plain.exit_code, 3) << plain;
  EXPECT_TRUE(absl::StrContains(plain.err, "--tls-ca")) << plain;
}

TEST_F(SessionctlTlsTest, BearerTokenWhereCertificatesAreOptional) {
  StartNode("optional");
  const CtlRun token =
      Status({"--tls-ca", Ca("ca.pem"), "--token-file", TokenFile()});
  EXPECT_EQ(token.exit_code, 0) << token;
  EXPECT_TRUE(absl::StrContains(token.out, "leader node 1")) << token;

  // The same from the environment.
  const CtlRun env = Status({}, {"SESSIOND_TLS_CA=" + Ca("ca.pem"),
                                 "SESSIOND_TOKEN_FILE=" + TokenFile()});
  EXPECT_EQ(env.exit_code, 0) << env;

  // The token is used instead of the app's certificate.
  std::vector<std::string> app_with_token = AsApp();
  app_with_token.insert(app_with_token.end(), {"--token-file", TokenFile()});
  const CtlRun both = Status(app_with_token);
  EXPECT_EQ(both.exit_code, 0) << both;

  // Neither a certificate nor a token: the handshake succeeds, the call is
  // UNAUTHENTICATED: exit 5.
  const CtlRun none = Status({"--tls-ca", Ca("ca.pem")});
  EXPECT_EQ(none.exit_code, 5) << none;
  EXPECT_TRUE(absl::StrContains(none.err, "UNAUTHENTICATED")) << none;
  EXPECT_TRUE(absl::StrContains(none.err, "no client certificate")) << none;

  // A token the role file does not know: UNAUTHENTICATED, and the message
  // names the file, never the token.
  const std::string wrong = dir_.path() + "/wrong-token";
  std::ofstream(wrong) << "not-the-configured-token\n";
  const CtlRun unknown =
      Status({"--tls-ca", Ca("ca.pem"), "--token-file", wrong});
  EXPECT_EQ(unknown.exit_code, 5) << unknown;
  EXPECT_TRUE(absl::StrContains(unknown.err, wrong)) << unknown;
  EXPECT_FALSE(absl::StrContains(unknown.err, "not-the-configured-token"))
      << unknown;
}

}  // namespace
}  // namespace sessiond::testing
