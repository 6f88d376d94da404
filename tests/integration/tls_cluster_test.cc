// Copyright sessiond authors. Licensed under the Apache License 2.0.
//
// A mutual-TLS cluster of real processes (issue 9, "TLS and roles"):
// certificates from tools/dev-ca.sh, a role file, three nodes that talk to
// each other over mutual TLS. A client without a certificate, with one from
// another CA, with a certificate whose role does not cover the call, and
// with a bearer token: each is refused with its code (UNAUTHENTICATED,
// a failed handshake, PERMISSION_DENIED) or let through, and a refused call
// changes nothing.
#include <grpcpp/grpcpp.h>

#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "sessiond/v1/admin.grpc.pb.h"
#include "sessiond/v1/session.grpc.pb.h"
#include "tests/integration/cluster_harness.h"
#include "tests/integration/tls_files.h"

namespace sessiond::testing {
namespace {

constexpr char kToken[] = "a-bearer-token-for-the-ops-robot-0123456789";

class TlsClusterTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_EQ(RunDevCa(absl::StrCat("--nodes 3 ", certs_.path(),
                                    " operator app reader stranger"),
                       certs_.path() + "/dev-ca.log"),
              0)
        << ReadTextFile(certs_.path() + "/dev-ca.log");
    // Another CA, whose `app` the cluster must not trust.
    ASSERT_EQ(RunDevCa(absl::StrCat("--nodes 1 ", other_ca_.path(), " app"),
                       "/dev/null"),
              0);
    std::ofstream(certs_.path() + "/" + "roles.conf")
        << "node-1 = peer\nnode-2 = peer\nnode-3 = peer\n"
        << "node_id = 1 node-1\nnode_id = 2 node-2\nnode_id = 3 node-3\n"
        << "operator = app, admin\napp = app\nreader = reader\n"
        << "robot = admin\n"
        << "token_sha256 = " << Sha256Hex(kToken) << " robot\n";
  }

  ClusterOptions Options() {
    ClusterOptions options;
    options.binary = SESSIOND_BINARY;
    options.flags = {"--tls_ca",          certs_.path() + "/" + "ca.pem",
                     "--auth_file",       certs_.path() + "/" + "roles.conf",
                     "--tls_client_auth", "optional"};
    options.client_credentials =
        TlsCredentials(certs_.path(), certs_.path(), "operator");
    options.peer_credentials =
        TlsCredentials(certs_.path(), certs_.path(), "node-1");
    return options;
  }

  std::unique_ptr<sessiond::v1::SessionService::Stub> Sessions(
      const ClusterHarness& cluster, int id,
      std::shared_ptr<grpc::ChannelCredentials> credentials) {
    return sessiond::v1::SessionService::NewStub(grpc::CreateChannel(
        cluster.client_address(id), std::move(credentials)));
  }
  std::unique_ptr<sessiond::v1::AdminService::Stub> Admin(
      const ClusterHarness& cluster, int id,
      std::shared_ptr<grpc::ChannelCredentials> credentials) {
    return sessiond::v1::AdminService::NewStub(grpc::CreateChannel(
        cluster.client_address(id), std::move(credentials)));
  }

  TempDir certs_;
  TempDir other_ca_;
};

grpc::Status CreateWith(sessiond::v1::SessionService::Stub& stub,
                        sessiond::v1::CreateSessionResponse* response) {
  sessiond::v1::CreateSessionRequest request;
  request.set_user_id("mallory-target");
  request.set_ttl_ms(3600 * 1000);
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(10)));
  return stub.CreateSession(&context, request, response);
}

grpc::Status StatusWith(sessiond::v1::AdminService::Stub& stub) {
  sessiond::v1::ClusterStatusResponse response;
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(10)));
  return stub.ClusterStatus(&context, sessiond::v1::ClusterStatusRequest(),
                            &response);
}

uint64_t LiveSessions(ClusterHarness& cluster, int via) {
  absl::StatusOr<sessiond::v1::ClusterStatusResponse> status =
      cluster.ClusterStatus(via);
  EXPECT_TRUE(status.ok()) << status.status();
  if (!status.ok()) return ~uint64_t{0};
  for (const auto& m : status->members()) {
    if (m.node_id() == static_cast<uint64_t>(via)) return m.live_sessions();
  }
  return ~uint64_t{0};
}

TEST_F(TlsClusterTest, EveryCallerIsVerifiedAndOnlyItsRolesGetThrough) {
  ClusterHarness cluster(Options());
  for (int id = 1; id <= 3; ++id) {
    const std::string node = certs_.path() + "/" + absl::StrCat("node-", id);
    cluster.SetNodeFlags(
        id, {"--tls_cert", node + ".pem", "--tls_key", node + "-key.pem"});
  }
  ASSERT_TRUE(cluster.Start().ok());
  absl::StatusOr<int> leader = cluster.WaitForLeader(absl::Seconds(20));
  ASSERT_TRUE(leader.ok()) << leader.status();
  // The nodes replicate over mutual TLS: a write through one node is
  // read linearizably through another.
  sessiond::v1::CreateSessionResponse created;
  auto operator_stub = cluster.Stub(*leader);
  ASSERT_TRUE(CreateWith(*operator_stub, &created).ok());
  const int other = *leader % 3 + 1;
  {
    sessiond::v1::ValidateSessionRequest request;
    request.set_token(created.token());
    request.set_consistency(sessiond::v1::LINEARIZABLE);
    sessiond::v1::ValidateSessionResponse response;
    grpc::ClientContext context;
    context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(10)));
    ASSERT_TRUE(cluster.Stub(other)
                    ->ValidateSession(&context, request, &response)
                    .ok());
    EXPECT_EQ(response.outcome(), sessiond::v1::ValidateSessionResponse::VALID);
  }
  ASSERT_TRUE(cluster.WaitForConvergence(absl::Seconds(20)).ok());
  const uint64_t live = LiveSessions(cluster, *leader);
  sessiond::v1::CreateSessionResponse refused;

  // No certificate and no token: UNAUTHENTICATED, for either service.
  auto anonymous = TlsCredentials(certs_.path(), "", "");
  grpc::Status s = CreateWith(*Sessions(cluster, *leader, anonymous), &refused);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAUTHENTICATED)
      << s.error_message();
  s = StatusWith(*Admin(cluster, *leader, anonymous));
  EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAUTHENTICATED)
      << s.error_message();

  // A certificate another CA signed: the handshake fails.
  s = CreateWith(
      *Sessions(cluster, *leader,
                TlsCredentials(certs_.path(), other_ca_.path(), "app")),
      &refused);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAVAILABLE) << s.error_message();

  // Plaintext to a TLS port: no connection.
  s = CreateWith(
      *Sessions(cluster, *leader, grpc::InsecureChannelCredentials()),
      &refused);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAVAILABLE) << s.error_message();

  // The app certificate calling admin RPCs, a reader creating, a known
  // certificate without a role: PERMISSION_DENIED, naming who and what.
  auto app = Admin(cluster, *leader,
                   TlsCredentials(certs_.path(), certs_.path(), "app"));
  s = StatusWith(*app);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::PERMISSION_DENIED)
      << s.error_message();
  EXPECT_NE(s.error_message().find("app"), std::string::npos)
      << s.error_message();
  {
    sessiond::v1::FlushRequest flush;
    sessiond::v1::FlushResponse flushed;
    grpc::ClientContext context;
    context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(10)));
    s = app->Flush(&context, flush, &flushed);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  }
  auto reader_credentials =
      TlsCredentials(certs_.path(), certs_.path(), "reader");
  s = CreateWith(*Sessions(cluster, *leader, reader_credentials), &refused);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::PERMISSION_DENIED)
      << s.error_message();
  s = CreateWith(
      *Sessions(cluster, *leader,
                TlsCredentials(certs_.path(), certs_.path(), "stranger")),
      &refused);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::PERMISSION_DENIED)
      << s.error_message();
  // ... while the reader validates.
  {
    sessiond::v1::ValidateSessionRequest request;
    request.set_token(created.token());
    sessiond::v1::ValidateSessionResponse response;
    grpc::ClientContext context;
    context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(10)));
    ASSERT_TRUE(Sessions(cluster, other, reader_credentials)
                    ->ValidateSession(&context, request, &response)
                    .ok());
    EXPECT_EQ(response.outcome(), sessiond::v1::ValidateSessionResponse::VALID);
  }

  // A bearer token without a certificate: its identity's roles (admin),
  // nothing more; a wrong token is UNAUTHENTICATED.
  auto robot = TlsCredentials(certs_.path(), "", "", kToken);
  EXPECT_TRUE(StatusWith(*Admin(cluster, other, robot)).ok());
  s = CreateWith(*Sessions(cluster, other, robot), &refused);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::PERMISSION_DENIED)
      << s.error_message();
  s = StatusWith(
      *Admin(cluster, other, TlsCredentials(certs_.path(), "", "", "wrong")));
  EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAUTHENTICATED)
      << s.error_message();
  EXPECT_EQ(s.error_message().find("wrong"), std::string::npos)
      << "a token in an error message: " << s.error_message();

  // Nothing the refused calls asked for happened.
  ASSERT_TRUE(cluster.WaitForConvergence(absl::Seconds(20)).ok());
  EXPECT_EQ(LiveSessions(cluster, *leader), live);
}

}  // namespace
}  // namespace sessiond::testing
