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
#include <signal.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
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
    std::ofstream(certs_.path() + "/" + "roles.conf") << RolesWith(
        "node-1 = peer\nnode-2 = peer\nnode-3 = peer\n"
        "node_id = 1 node-1\nnode_id = 2 node-2\n"
        "node_id = 3 node-3\n");
  }

  // The role file: `nodes` (the nodes' certificates: roles, node_id lines),
  // then the clients'.
  static std::string RolesWith(const std::string& nodes) {
    return absl::StrCat(nodes,
                        "operator = app, admin\napp = app\nreader = reader\n"
                        "robot = admin\n",
                        "token_sha256 = ", Sha256Hex(kToken), " robot\n");
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

// Whether a line of the file at `path` holds every one of `parts`.
bool LogHasLine(const std::string& path,
                const std::vector<std::string>& parts) {
  for (absl::string_view line : absl::StrSplit(ReadTextFile(path), '\n')) {
    bool all = true;
    for (const std::string& part : parts) {
      all = all && absl::StrContains(line, part);
    }
    if (all) return true;
  }
  return false;
}

// Waits (bounded, polling every 50 ms) for LogHasLine.
bool WaitForLogLine(const std::string& path,
                    const std::vector<std::string>& parts,
                    absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  while (absl::Now() < deadline) {
    if (LogHasLine(path, parts)) return true;
    absl::SleepFor(absl::Milliseconds(50));
  }
  return LogHasLine(path, parts);
}

// A SIGHUP that reloads a role file no longer tying a peer's certificate to
// that peer renews the reloading node's outgoing peer connections
// (Daemon::Reload calls PeerTransport::RenewChannels): who serves at a
// peer's address is judged only at a handshake, so without the renewal the
// leader went on sending Raft traffic over the connection opened under the
// old roles, to a server its roles no longer take for that member. With it,
// the new handshake judges the peer's certificate by the new roles and
// refuses it (the leader's log says so, naming the peer).
TEST_F(TlsClusterTest, AReloadRenewsOutgoingPeerConnections) {
  const std::string members =
      "node-1 = peer\nnode-2 = peer\nnode-3 = peer\n"
      "node_id = 1 node-1\nnode_id = 2 node-2\nnode_id = 3 node-3\n";
  ClusterOptions options = Options();
  // A role file per node (below), so one node's reload changes only its
  // own roles.
  options.flags = {"--tls_ca", certs_.path() + "/" + "ca.pem",
                   "--tls_client_auth", "optional"};
  ClusterHarness cluster(options);
  auto roles_of = [&](int id) {
    return absl::StrCat(certs_.path(), "/roles-", id, ".conf");
  };
  for (int id = 1; id <= 3; ++id) {
    const std::string node = certs_.path() + "/" + absl::StrCat("node-", id);
    std::ofstream(roles_of(id)) << RolesWith(members);
    cluster.SetNodeFlags(id, {"--tls_cert", node + ".pem", "--tls_key",
                              node + "-key.pem", "--auth_file", roles_of(id)});
  }
  ASSERT_TRUE(cluster.Start().ok());
  absl::StatusOr<int> leader = cluster.WaitForLeader(absl::Seconds(20));
  ASSERT_TRUE(leader.ok()) << leader.status();
  ASSERT_TRUE(cluster.WaitForWritable(absl::Seconds(20), *leader).ok());
  const int peer = *leader % 3 + 1;
  const std::string log = cluster.log_path(*leader);
  const std::vector<std::string> refused = {
      "tls.server_refused",
      absl::StrCat("the server at node ", peer, "'s peer address")};
  // Every handshake so far passed.
  ASSERT_FALSE(LogHasLine(log, {"tls.server_refused"}))
      << cluster.LogTail(*leader);

  // The leader's roles take the peer role from the peer's certificate and
  // tie it to no node (the other members stay as they were).
  std::string kept;
  for (int id = 1; id <= 3; ++id) {
    if (id == peer) continue;
    absl::StrAppend(&kept, "node-", id, " = peer\nnode_id = ", id, " node-", id,
                    "\n");
  }
  const std::string next = roles_of(*leader) + ".new";
  std::ofstream(next) << RolesWith(
      absl::StrCat(kept, "node-", peer, " = admin\n"));
  ASSERT_EQ(std::rename(next.c_str(), roles_of(*leader).c_str()), 0);
  cluster.Signal(*leader, SIGHUP);
  ASSERT_TRUE(WaitForLogLine(log, {"sessiond: SIGHUP: config reloaded"},
                             absl::Seconds(20)))
      << cluster.LogTail(*leader);
  // The file changed in place, not the option naming it: the reload says
  // it was read all the same.
  EXPECT_TRUE(LogHasLine(log, {"sessiond: re-read the role file ",
                               roles_of(*leader), ": its roles are in force"}))
      << cluster.LogTail(*leader);

  // The leader's heartbeats to the peer go out on a new connection, whose
  // handshake refuses the peer's certificate.
  EXPECT_TRUE(WaitForLogLine(log, refused, absl::Seconds(20)))
      << "no new handshake with node " << peer
      << " after the reload: the connection opened under the old roles "
         "carries on\n"
      << cluster.LogTail(*leader);
}

}  // namespace
}  // namespace sessiond::testing
