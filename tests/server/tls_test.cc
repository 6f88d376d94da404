// Copyright sessiond authors. Licensed under the Apache License 2.0.
//
// TLS and roles over real gRPC (issue 9): certificates from tools/dev-ca.sh,
// an in-process grpc::Server on 127.0.0.1 with server/tls_credentials.h and
// server/auth.h's AuthProcessor. The services are the generated
// sessiond.v1 bases, which answer UNIMPLEMENTED: a call that gets
// UNIMPLEMENTED was let through to a handler, one that gets UNAUTHENTICATED
// or PERMISSION_DENIED never reached one. ValidateSession is overridden to
// record what its handler saw (the identity, whether a token reached it).
#include <grpcpp/create_channel.h>
#include <grpcpp/security/credentials.h>
#include <grpcpp/security/server_credentials.h>
#include <grpcpp/security/tls_certificate_provider.h>
#include <grpcpp/security/tls_credentials_options.h>
#include <grpcpp/server.h>
#include <grpcpp/server_builder.h>
#include <grpcpp/support/server_interceptor.h>
#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <sys/stat.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/fault_point.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/auth.h"
#include "server/config.h"
#include "server/daemon.h"
#include "server/listener_security.h"
#include "server/peer_service.h"
#include "server/peer_transport.h"
#include "server/raft_wire.h"
#include "server/tls_credentials.h"
#include "server/verified_tls_files.h"
#include "sessiond/v1/admin.grpc.pb.h"
#include "sessiond/v1/peer.grpc.pb.h"
#include "sessiond/v1/session.grpc.pb.h"
#include "tests/integration/tls_files.h"
#include "tests/server/test_util.h"

namespace sessiond::server {
namespace {

using ::sessiond::testing::RunDevCa;
using ::sessiond::testing::SerialOfPem;
using ::testing::HasSubstr;

constexpr char kToken[] = "tls-test-token-7f3a9c";

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

void WriteFile(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
}

// Writes `text` to a temporary file beside `path` and renames it over
// `path`, as an operator (or cert-manager) replaces a certificate.
void ReplaceFile(const std::string& path, const std::string& text) {
  WriteFile(path + ".new", text);
  ASSERT_EQ(std::rename((path + ".new").c_str(), path.c_str()), 0);
}

// Who the ValidateSession handler was told called, for the last call that
// reached it (AuthProcessor::CallerOf).
class ProbeSessionService final : public v1::SessionService::Service {
 public:
  // REQUIRES: before the server starts; `processor` outlives the server.
  void set_processor(const AuthProcessor* processor) { processor_ = processor; }

  grpc::Status ValidateSession(
      grpc::ServerContext* context,
      const v1::ValidateSessionRequest* /*request*/,
      v1::ValidateSessionResponse* /*response*/) override {
    absl::StatusOr<Caller> caller = processor_->CallerOf(*context);
    absl::MutexLock lock(&mu_);
    identity_ = caller.ok() ? caller->identity : caller.status().ToString();
    return grpc::Status(grpc::StatusCode::UNIMPLEMENTED, "probe");
  }

  std::string identity() const {
    absl::MutexLock lock(&mu_);
    return identity_;
  }

 private:
  const AuthProcessor* processor_ = nullptr;
  mutable absl::Mutex mu_;
  std::string identity_ ABSL_GUARDED_BY(mu_);
};

// A server with TLS and the AuthProcessor on 127.0.0.1:<free port>.
class TlsServer {
 public:
  TlsServer(const TlsFiles& files, std::shared_ptr<const Authorizer> auth) {
    absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> creds =
        MakeServerCredentials(files);
    EXPECT_TRUE(creds.ok()) << creds.status();
    if (!creds.ok()) return;
    processor_ = std::make_shared<AuthProcessor>(std::move(auth));
    (*creds)->SetAuthMetadataProcessor(processor_);
    session_.set_processor(processor_.get());
    grpc::ServerBuilder builder;
    builder.AddListeningPort("127.0.0.1:0", *creds, &port_);
    builder.RegisterService(&session_);
    builder.RegisterService(&admin_);
    server_ = builder.BuildAndStart();
    EXPECT_NE(server_, nullptr);
    EXPECT_GT(port_, 0);
  }
  ~TlsServer() {
    if (server_ != nullptr) {
      server_->Shutdown(std::chrono::system_clock::now());
    }
  }

  std::string address() const { return absl::StrCat("127.0.0.1:", port_); }
  const ProbeSessionService& session() const { return session_; }
  bool ok() const { return server_ != nullptr; }

 private:
  std::shared_ptr<AuthProcessor> processor_;
  ProbeSessionService session_;
  v1::AdminService::Service admin_;
  int port_ = 0;
  std::unique_ptr<grpc::Server> server_;
};

class TlsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_EQ(RunDevCa(absl::StrCat("--nodes 1 ", Ca(),
                                    " app admin reader "
                                    "ghost"),
                       dir_.Child("dev-ca.log")),
              0)
        << ReadFile(dir_.Child("dev-ca.log"));
    const std::string roles =
        absl::StrCat("node-1 = peer\napp = app\nadmin = admin\n",
                     "reader = reader\nci-bot = app\ntoken_sha256 = ");
    std::string hex;
    for (uint8_t b : DigestToken(kToken)) {
      absl::StrAppend(&hex, absl::Hex(b, absl::kZeroPad2));
    }
    absl::StatusOr<AuthConfig> config =
        ParseAuthConfig(absl::StrCat(roles, hex, " ci-bot\n"), "test roles");
    ASSERT_TRUE(config.ok()) << config.status();
    absl::StatusOr<MethodTable> methods = MethodTable::Sessiond();
    ASSERT_TRUE(methods.ok()) << methods.status();
    authorizer_ =
        std::make_shared<Authorizer>(*std::move(config), *std::move(methods));
  }

  std::string Ca() const { return dir_.Child("ca"); }
  std::string CaFile(const std::string& name) const {
    return absl::StrCat(Ca(), "/", name);
  }

  // A node's config with TLS (node-1's certificate) and the role file
  // `roles_path`, written with `roles`.
  Config NodeConfig(const std::string& roles_path,
                    const std::string& roles) const {
    std::ofstream(roles_path) << roles;
    Config config;
    config.listen = "127.0.0.1:0";
    config.data_dir = dir_.Child("data");
    config.tls_cert = CaFile("node-1.pem");
    config.tls_key = CaFile("node-1-key.pem");
    config.tls_ca = CaFile("ca.pem");
    config.auth_file = roles_path;
    return config;
  }

  TlsFiles ServerFiles(bool require_client_cert) const {
    TlsFiles files;
    files.cert_file = CaFile("node-1.pem");
    files.key_file = CaFile("node-1-key.pem");
    files.ca_file = CaFile("ca.pem");
    files.require_client_cert = require_client_cert;
    files.refresh_interval_s = 1;
    return files;
  }

  // Copies of node-1's files in a folder of their own, as an operator's
  // files a test then replaces.
  TlsFiles LiveFiles() const {
    const std::string live = dir_.Child("live");
    EXPECT_EQ(mkdir(live.c_str(), 0700), 0);
    TlsFiles files = ServerFiles(true);
    files.cert_file = live + "/node-1.pem";
    files.key_file = live + "/node-1-key.pem";
    files.ca_file = live + "/ca.pem";
    WriteFile(files.cert_file, ReadFile(CaFile("node-1.pem")));
    WriteFile(files.key_file, ReadFile(CaFile("node-1-key.pem")));
    WriteFile(files.ca_file, ReadFile(CaFile("ca.pem")));
    return files;
  }

  // Channel credentials presenting `identity`'s certificate ("" for none).
  std::shared_ptr<grpc::ChannelCredentials> ClientCreds(
      const std::string& identity, const std::string& ca_dir = "") const {
    const std::string dir = ca_dir.empty() ? Ca() : ca_dir;
    TlsFiles files;
    if (!identity.empty()) {
      files.cert_file = absl::StrCat(dir, "/", identity, ".pem");
      files.key_file = absl::StrCat(dir, "/", identity, "-key.pem");
    }
    files.ca_file = CaFile("ca.pem");
    absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> creds =
        MakeChannelCredentials(files);
    EXPECT_TRUE(creds.ok()) << creds.status();
    return creds.ok() ? *creds : nullptr;
  }

  // A channel of its own (its own connection and handshake).
  // A RaftPeer stub presenting node-1's certificate.
  std::unique_ptr<v1::internal::RaftPeer::Stub> PeerStubAsNode1(
      const std::string& address) const {
    return v1::internal::RaftPeer::NewStub(
        Dial(address, ClientCreds("node-1")));
  }

  static std::shared_ptr<grpc::Channel> Dial(
      const std::string& address,
      std::shared_ptr<grpc::ChannelCredentials> creds) {
    grpc::ChannelArguments args;
    args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
    return grpc::CreateCustomChannel(address, std::move(creds), args);
  }

  static void Prepare(grpc::ClientContext* ctx, const std::string& token = "") {
    ctx->set_deadline(std::chrono::system_clock::now() +
                      std::chrono::seconds(20));
    if (!token.empty()) {
      ctx->set_credentials(grpc::AccessTokenCredentials(token));
    }
  }

  static grpc::Status Create(const std::shared_ptr<grpc::Channel>& channel,
                             const std::string& token = "") {
    grpc::ClientContext ctx;
    Prepare(&ctx, token);
    v1::CreateSessionRequest request;
    request.set_user_id("u1");
    v1::CreateSessionResponse response;
    return v1::SessionService::NewStub(channel)->CreateSession(&ctx, request,
                                                               &response);
  }

  static grpc::Status Validate(const std::shared_ptr<grpc::Channel>& channel,
                               const std::string& token = "") {
    grpc::ClientContext ctx;
    Prepare(&ctx, token);
    v1::ValidateSessionRequest request;
    v1::ValidateSessionResponse response;
    return v1::SessionService::NewStub(channel)->ValidateSession(&ctx, request,
                                                                 &response);
  }

  // The serial of the certificate `address` shows a new connection (""
  // when the call fails otherwise than the probe's UNIMPLEMENTED).
  std::string ServedSerial(const std::string& address) const {
    auto channel = Dial(address, ClientCreds("app"));
    grpc::ClientContext ctx;
    Prepare(&ctx);
    v1::ValidateSessionRequest request;
    v1::ValidateSessionResponse response;
    grpc::Status s = v1::SessionService::NewStub(channel)->ValidateSession(
        &ctx, request, &response);
    if (s.error_code() != grpc::StatusCode::UNIMPLEMENTED) return "";
    std::vector<grpc::string_ref> pem = ctx.auth_context()->FindPropertyValues(
        GRPC_X509_PEM_CERT_PROPERTY_NAME);
    if (pem.empty()) return "";
    return SerialOfPem(std::string(pem.front().data(), pem.front().size()));
  }

  static grpc::Status AdminStatus(
      const std::shared_ptr<grpc::Channel>& channel) {
    grpc::ClientContext ctx;
    Prepare(&ctx);
    v1::ClusterStatusRequest request;
    v1::ClusterStatusResponse response;
    return v1::AdminService::NewStub(channel)->ClusterStatus(&ctx, request,
                                                             &response);
  }

  testing::ScopedTempDir dir_;
  std::shared_ptr<const Authorizer> authorizer_;
};

TEST_F(TlsTest, DevCaIsIdempotentAndKeysArePrivate) {
  const std::string before = ReadFile(CaFile("app.pem"));
  const std::string log = dir_.Child("again.log");
  ASSERT_EQ(RunDevCa(absl::StrCat("--nodes 1 ", Ca(), " app"), log), 0);
  EXPECT_EQ(ReadFile(CaFile("app.pem")), before);
  EXPECT_THAT(ReadFile(log), HasSubstr("kept  " + CaFile("app.pem")));
  EXPECT_THAT(ReadFile(log), ::testing::Not(HasSubstr("made")));
  for (const char* key : {"ca-key.pem", "node-1-key.pem", "app-key.pem"}) {
    struct stat st;
    ASSERT_EQ(stat(CaFile(key).c_str(), &st), 0) << key;
    EXPECT_EQ(st.st_mode & 0777, 0600u) << key;
  }
  EXPECT_EQ(RunDevCa("--help", log), 0);
  EXPECT_THAT(ReadFile(log), HasSubstr("OUT_DIR"));
  EXPECT_NE(RunDevCa(absl::StrCat(Ca(), " 'bad name'"), log), 0);
}

TEST_F(TlsTest, CheckTlsFilesNamesTheBadFile) {
  TlsFiles files = ServerFiles(true);
  EXPECT_TRUE(CheckTlsFiles(files, true).ok());

  TlsFiles typo = files;
  typo.cert_file += "x";
  absl::Status s = CheckTlsFiles(typo, true);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr(typo.cert_file));
  EXPECT_THAT(s.message(), HasSubstr("No such file"));
  EXPECT_FALSE(MakeServerCredentials(typo).ok());

  TlsFiles wrong_key = files;
  wrong_key.key_file = CaFile("app-key.pem");
  s = CheckTlsFiles(wrong_key, true);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("is not the key of the certificate"));

  TlsFiles not_pem = files;
  not_pem.ca_file = CaFile("node-1-key.pem");
  s = CheckTlsFiles(not_pem, true);
  EXPECT_THAT(s.message(), HasSubstr("no PEM certificate"));
  EXPECT_THAT(s.message(), HasSubstr(not_pem.ca_file));

  const std::string garbage = dir_.Child("garbage.pem");
  WriteFile(garbage,
            "-----BEGIN CERTIFICATE-----\nnot base64!\n"
            "-----END CERTIFICATE-----\n");
  TlsFiles broken = files;
  broken.cert_file = garbage;
  s = CheckTlsFiles(broken, true);
  EXPECT_THAT(s.message(), HasSubstr("certificate 1 does not parse"));

  TlsFiles key_is_cert = files;
  key_is_cert.key_file = CaFile("node-1.pem");
  s = CheckTlsFiles(key_is_cert, true);
  EXPECT_THAT(s.message(), HasSubstr("no unencrypted PEM private key"));

  // Signed by another CA.
  const std::string other = dir_.Child("other");
  ASSERT_EQ(RunDevCa(absl::StrCat("--nodes 1 ", other), dir_.Child("o.log")),
            0);
  TlsFiles foreign = files;
  foreign.cert_file = other + "/node-1.pem";
  foreign.key_file = other + "/node-1-key.pem";
  s = CheckTlsFiles(foreign, true);
  EXPECT_THAT(s.message(), HasSubstr("does not verify against the CA file"));

  TlsFiles half = files;
  half.key_file.clear();
  EXPECT_THAT(CheckTlsFiles(half, false).message(), HasSubstr("no key file"));
  TlsFiles ca_only;
  ca_only.ca_file = files.ca_file;
  EXPECT_TRUE(CheckTlsFiles(ca_only, false).ok());
  EXPECT_FALSE(CheckTlsFiles(ca_only, true).ok());
}

TEST_F(TlsTest, RolesDecideOverMutualTls) {
  TlsServer server(ServerFiles(/*require_client_cert=*/true), authorizer_);
  ASSERT_TRUE(server.ok());

  auto app = Dial(server.address(), ClientCreds("app"));
  EXPECT_EQ(Create(app).error_code(), grpc::StatusCode::UNIMPLEMENTED);
  EXPECT_EQ(Validate(app).error_code(), grpc::StatusCode::UNIMPLEMENTED);
  EXPECT_EQ(server.session().identity(), "app");
  grpc::Status denied = AdminStatus(app);
  EXPECT_EQ(denied.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_THAT(denied.error_message(), HasSubstr("needs role admin"));

  auto reader = Dial(server.address(), ClientCreds("reader"));
  grpc::Status create = Create(reader);
  EXPECT_EQ(create.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_EQ(create.error_message(),
            "identity \"reader\" may not call "
            "/sessiond.v1.SessionService/CreateSession: it needs role app, "
            "and \"reader\" has role reader");
  EXPECT_EQ(Validate(reader).error_code(), grpc::StatusCode::UNIMPLEMENTED);
  EXPECT_EQ(server.session().identity(), "reader");

  auto admin = Dial(server.address(), ClientCreds("admin"));
  EXPECT_EQ(AdminStatus(admin).error_code(), grpc::StatusCode::UNIMPLEMENTED);
  EXPECT_EQ(Create(admin).error_code(), grpc::StatusCode::PERMISSION_DENIED);

  // A node certificate (client usage too) is a peer, nothing more.
  auto node = Dial(server.address(), ClientCreds("node-1"));
  EXPECT_EQ(Validate(node).error_code(), grpc::StatusCode::PERMISSION_DENIED);

  // Signed by the CA but in no roles line.
  auto ghost = Dial(server.address(), ClientCreds("ghost"));
  grpc::Status g = Validate(ghost);
  EXPECT_EQ(g.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_THAT(g.error_message(), HasSubstr("\"ghost\" has no roles"));
  // Neither denied ValidateSession reached the handler.
  EXPECT_EQ(server.session().identity(), "reader");

  // The hostname is checked: the node certificate names 127.0.0.1 and
  // localhost, not this.
  grpc::ChannelArguments args;
  args.SetSslTargetNameOverride("not-the-node.example");
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  auto misnamed =
      grpc::CreateCustomChannel(server.address(), ClientCreds("app"), args);
  EXPECT_EQ(Validate(misnamed).error_code(), grpc::StatusCode::UNAVAILABLE);
}

TEST_F(TlsTest, NoOrUntrustedClientCertificateFailsTheHandshake) {
  TlsServer server(ServerFiles(/*require_client_cert=*/true), authorizer_);
  ASSERT_TRUE(server.ok());
  auto anonymous = Dial(server.address(), ClientCreds(""));
  grpc::Status s = Validate(anonymous);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAVAILABLE) << s.error_message();
  // Not even a token gets past a missing certificate here.
  EXPECT_EQ(Validate(anonymous, kToken).error_code(),
            grpc::StatusCode::UNAVAILABLE);

  // An "app" certificate from another CA (trusting our CA for the server).
  // MakeChannelCredentials refuses to build this client (its certificate
  // does not verify against the CA file), so it is put together from
  // gRPC's API directly.
  const std::string other = dir_.Child("other");
  ASSERT_EQ(
      RunDevCa(absl::StrCat("--nodes 0 ", other, " app"), dir_.Child("o.log")),
      0);
  TlsFiles rogue_files;
  rogue_files.cert_file = other + "/app.pem";
  rogue_files.key_file = other + "/app-key.pem";
  rogue_files.ca_file = CaFile("ca.pem");
  EXPECT_THAT(CheckTlsFiles(rogue_files, false).message(),
              HasSubstr("does not verify against the CA file"));
  auto provider =
      std::make_shared<grpc::experimental::StaticDataCertificateProvider>(
          ReadFile(rogue_files.ca_file),
          std::vector<grpc::experimental::IdentityKeyCertPair>{
              {ReadFile(rogue_files.key_file),
               ReadFile(rogue_files.cert_file)}});
  grpc::experimental::TlsChannelCredentialsOptions options;
  options.set_certificate_provider(provider);
  options.watch_root_certs();
  options.watch_identity_key_cert_pairs();
  auto untrusted =
      Dial(server.address(), grpc::experimental::TlsCredentials(options));
  EXPECT_EQ(Validate(untrusted).error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_EQ(server.session().identity(), "");  // no handler ran
}

TEST_F(TlsTest, BearerTokenIdentifiesTheCaller) {
  TlsServer server(ServerFiles(/*require_client_cert=*/false), authorizer_);
  ASSERT_TRUE(server.ok());
  auto anonymous = Dial(server.address(), ClientCreds(""));
  grpc::Status none = Validate(anonymous);
  EXPECT_EQ(none.error_code(), grpc::StatusCode::UNAUTHENTICATED)
      << none.error_message();
  EXPECT_EQ(Validate(anonymous, "not-the-token").error_code(),
            grpc::StatusCode::UNAUTHENTICATED);

  EXPECT_EQ(Validate(anonymous, kToken).error_code(),
            grpc::StatusCode::UNIMPLEMENTED);
  EXPECT_EQ(server.session().identity(), "ci-bot");
  EXPECT_EQ(Create(anonymous, kToken).error_code(),
            grpc::StatusCode::UNIMPLEMENTED);

  // A token wins over the certificate sent with it: reader + ci-bot's token.
  auto reader = Dial(server.address(), ClientCreds("reader"));
  EXPECT_EQ(Create(reader).error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_EQ(Create(reader, kToken).error_code(),
            grpc::StatusCode::UNIMPLEMENTED);
  // A certificate still works alone on this listener.
  EXPECT_EQ(Validate(reader).error_code(), grpc::StatusCode::UNIMPLEMENTED);
  EXPECT_EQ(server.session().identity(), "reader");
}

// The server's certificate renewed on disk is served without a restart.
// A node dials each peer as who it is: the server at a peer's address must
// present a certificate with role peer, tied to that node when the role
// file has node_id lines. It only checked the CA and the host name, so any
// member's certificate (every dev-ca node certificate names 127.0.0.1)
// could serve at another member's address: receive its appends and
// snapshots, answer its Hello and acknowledge the writes it forwards.
TEST_F(TlsTest, APeerChannelChecksWhoServesAtThePeersAddress) {
  TlsServer server(ServerFiles(/*require_client_cert=*/true), authorizer_);
  ASSERT_TRUE(server.ok());
  const std::string roles = dir_.Child("peer-roles.conf");
  absl::StatusOr<std::unique_ptr<ListenerSecurity>> security =
      ListenerSecurity::Build(
          NodeConfig(roles, "node-1 = peer\nnode_id = 1 node-1\n"));
  ASSERT_TRUE(security.ok()) << security.status();
  auto dial_as = [&](uint64_t node) {
    return Validate(
        Dial(server.address(), (*security)->peer_channels_to(NodeId(node))));
  };
  // Dialled as node 1's address, the handshake passes: the server answers
  // (node-1 has no app role there).
  const grpc::Status as_node1 = dial_as(1);
  EXPECT_EQ(as_node1.error_code(), grpc::StatusCode::PERMISSION_DENIED)
      << as_node1.error_message();
  // As node 2's: node-1's certificate is refused at the handshake.
  const grpc::Status as_node2 = dial_as(2);
  EXPECT_EQ(as_node2.error_code(), grpc::StatusCode::UNAVAILABLE)
      << as_node2.error_message();
  // Roles reloaded without node-1's peer role: refused as node 1 too, by
  // the roles in force at the handshake. (Still with a node_id line: a
  // reload that drops them all is refused.)
  std::ofstream(roles) << "node-1 = admin\nnode-2 = peer\nnode_id = 2 node-2\n";
  ASSERT_TRUE((*security)->ReloadRoles(roles).ok());
  const grpc::Status no_peer_role = dial_as(1);
  EXPECT_EQ(no_peer_role.error_code(), grpc::StatusCode::UNAVAILABLE)
      << no_peer_role.error_message();
}

// A private key any user of the machine can read is warned about at
// start, with the command that mends it; a group-readable one is not.
TEST_F(TlsTest, AKeyReadableByOthersIsWarnedAbout) {
  const std::string key = CaFile("node-1-key.pem");
  const std::string roles = dir_.Child("key-roles.conf");
  auto start_warns = [&](mode_t mode) {
    EXPECT_EQ(chmod(key.c_str(), mode), 0);
    ::testing::internal::CaptureStderr();
    absl::StatusOr<std::unique_ptr<ListenerSecurity>> security =
        ListenerSecurity::Build(NodeConfig(roles, "node-1 = peer\n"));
    const std::string log = ::testing::internal::GetCapturedStderr();
    EXPECT_TRUE(security.ok()) << security.status();
    return log;
  };
  const std::string world = start_warns(0644);
  EXPECT_TRUE(absl::StrContains(world, "tls.key_readable_by_others")) << world;
  EXPECT_TRUE(absl::StrContains(world, "mode=0644")) << world;
  EXPECT_TRUE(absl::StrContains(world, absl::StrCat("chmod o-rwx ", key)))
      << world;
  const std::string group = start_warns(0640);
  EXPECT_FALSE(absl::StrContains(group, "tls.key_readable_by_others")) << group;
}

// A TLS file that does not load stops a node before it takes its data dir:
// no database is made (a new node's dir stays absent, so a restore into it
// still finds it empty), and the message names the file.
TEST_F(TlsTest, ATlsTypoFailsBeforeTheDataDirIsMade) {
  Config config = NodeConfig(dir_.Child("typo-roles.conf"), "node-1 = peer\n");
  config.tls_cert = CaFile("node-1.pem.typo");
  config.data_dir = dir_.Child("new-node");
  absl::StatusOr<std::unique_ptr<Daemon>> daemon = Daemon::Start(config);
  ASSERT_FALSE(daemon.ok());
  EXPECT_EQ(daemon.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(daemon.status().message()),
              HasSubstr(config.tls_cert));
  struct stat st;
  EXPECT_NE(stat(config.data_dir.c_str(), &st), 0) << "the data dir was made";
}

TEST_F(TlsTest, RotatedServerCertificateIsPickedUp) {
  const std::string live = dir_.Child("live");
  ASSERT_EQ(mkdir(live.c_str(), 0700), 0);
  for (const char* name : {"node-1.pem", "node-1-key.pem", "ca.pem"}) {
    WriteFile(absl::StrCat(live, "/", name), ReadFile(CaFile(name)));
  }
  TlsFiles files = ServerFiles(true);
  files.cert_file = live + "/node-1.pem";
  files.key_file = live + "/node-1-key.pem";
  files.ca_file = live + "/ca.pem";
  TlsServer server(files, authorizer_);
  ASSERT_TRUE(server.ok());

  auto served_serial = [&] { return ServedSerial(server.address()); };
  const std::string old_serial = SerialOfPem(ReadFile(files.cert_file));
  ASSERT_FALSE(old_serial.empty());
  EXPECT_EQ(served_serial(), old_serial);

  // Re-issue node-1's certificate from its key, then swap it in.
  ASSERT_EQ(std::remove(CaFile("node-1.pem").c_str()), 0);
  ASSERT_EQ(RunDevCa(absl::StrCat("--nodes 1 ", Ca()), dir_.Child("r.log")), 0);
  const std::string renewed = ReadFile(CaFile("node-1.pem"));
  const std::string new_serial = SerialOfPem(renewed);
  ASSERT_FALSE(new_serial.empty());
  ASSERT_NE(new_serial, old_serial);
  ReplaceFile(files.cert_file, renewed);

  // The watcher re-reads every second; new connections get the new one.
  std::string seen;
  for (int attempt = 0; attempt < 120 && seen != new_serial; ++attempt) {
    std::this_thread::sleep_for(std::chrono::milliseconds(250));
    seen = served_serial();
  }
  EXPECT_EQ(seen, new_serial);
}

// gRPC serves the copies VerifiedTlsFiles keeps: a renewal from another CA
// is not copied in (gRPC's own watcher would install it, and every client
// would refuse the handshake), and says why; a good renewal is served.
TEST_F(TlsTest, OnlyFilesThatVerifyAreServed) {
  const TlsFiles files = LiveFiles();
  absl::StatusOr<std::unique_ptr<VerifiedTlsFiles>> verified =
      VerifiedTlsFiles::Start(files, dir_.Child("data/tls"), absl::Hours(1));
  ASSERT_TRUE(verified.ok()) << verified.status();
  const TlsFiles served = (*verified)->served();
  struct stat st;
  ASSERT_EQ(stat(served.key_file.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u) << "a copy of the private key";
  ASSERT_EQ(stat(dir_.Child("data/tls").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0700u);
  const std::string first = SerialOfPem(ReadFile(files.cert_file));
  EXPECT_EQ((*verified)->status().serial, first);
  TlsServer server(served, authorizer_);
  ASSERT_TRUE(server.ok());
  EXPECT_EQ(ServedSerial(server.address()), first);

  // Another CA's pair (a matching key, a chain clients do not trust),
  // renamed in key first, as a renewal is.
  const std::string other = dir_.Child("other");
  ASSERT_EQ(RunDevCa(absl::StrCat("--nodes 1 ", other), dir_.Child("o.log")),
            0);
  ReplaceFile(files.key_file, ReadFile(other + "/node-1-key.pem"));
  ReplaceFile(files.cert_file, ReadFile(other + "/node-1.pem"));
  (*verified)->CheckNow();
  VerifiedTlsFiles::Status status = (*verified)->status();
  EXPECT_EQ(status.refused, 1u);
  EXPECT_EQ(status.renewed, 0u);
  EXPECT_EQ(status.serial, first);
  EXPECT_THAT(status.refusal,
              HasSubstr(absl::StrCat("does not verify against the CA file ",
                                     files.ca_file)));
  // The same files looked at again: not counted twice.
  (*verified)->CheckNow();
  EXPECT_EQ((*verified)->status().refused, 1u);
  // gRPC re-reads the copies every second: still the first certificate.
  std::this_thread::sleep_for(std::chrono::milliseconds(2500));
  EXPECT_EQ(ServedSerial(server.address()), first);

  // node-1's key and a certificate re-issued for it: served.
  ASSERT_EQ(std::remove(CaFile("node-1.pem").c_str()), 0);
  ASSERT_EQ(RunDevCa(absl::StrCat("--nodes 1 ", Ca()), dir_.Child("r.log")), 0);
  const std::string renewed = SerialOfPem(ReadFile(CaFile("node-1.pem")));
  ASSERT_NE(renewed, first);
  ReplaceFile(files.key_file, ReadFile(CaFile("node-1-key.pem")));
  ReplaceFile(files.cert_file, ReadFile(CaFile("node-1.pem")));
  (*verified)->CheckNow();
  status = (*verified)->status();
  EXPECT_EQ(status.renewed, 1u);
  EXPECT_EQ(status.serial, renewed);
  EXPECT_EQ(status.refusal, "");
  EXPECT_GT(status.not_after_s, absl::ToUnixSeconds(absl::Now()));
  std::string seen;
  for (int attempt = 0; attempt < 120 && seen != renewed; ++attempt) {
    std::this_thread::sleep_for(std::chrono::milliseconds(250));
    seen = ServedSerial(server.address());
  }
  EXPECT_EQ(seen, renewed);
}

// A restart (a reboot, a rolling upgrade) after a refused renewal serves the
// last good copies: the node starts. Without copies, files that do not
// verify stop the start, naming the operator's file.
TEST_F(TlsTest, ARestartKeepsServingTheLastGoodCopies) {
  const TlsFiles files = LiveFiles();
  const std::string first = SerialOfPem(ReadFile(files.cert_file));
  const std::string copies = dir_.Child("data/tls");
  {
    absl::StatusOr<std::unique_ptr<VerifiedTlsFiles>> verified =
        VerifiedTlsFiles::Start(files, copies, absl::Hours(1));
    ASSERT_TRUE(verified.ok()) << verified.status();
  }
  const std::string other = dir_.Child("other");
  ASSERT_EQ(RunDevCa(absl::StrCat("--nodes 1 ", other), dir_.Child("o.log")),
            0);
  ReplaceFile(files.key_file, ReadFile(other + "/node-1-key.pem"));
  ReplaceFile(files.cert_file, ReadFile(other + "/node-1.pem"));
  EXPECT_TRUE(VerifiedTlsFiles::CheckServable(files, copies).ok());
  absl::StatusOr<std::unique_ptr<VerifiedTlsFiles>> restarted =
      VerifiedTlsFiles::Start(files, copies, absl::Hours(1));
  ASSERT_TRUE(restarted.ok()) << restarted.status();
  const VerifiedTlsFiles::Status status = (*restarted)->status();
  EXPECT_EQ(status.serial, first);
  EXPECT_EQ(status.refused, 1u);
  EXPECT_THAT(status.refusal, HasSubstr("does not verify"));
  TlsServer server((*restarted)->served(), authorizer_);
  ASSERT_TRUE(server.ok());
  EXPECT_EQ(ServedSerial(server.address()), first);

  // A data dir without copies: nothing to fall back on.
  const std::string fresh = dir_.Child("fresh/tls");
  const absl::Status servable = VerifiedTlsFiles::CheckServable(files, fresh);
  EXPECT_EQ(servable.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(servable.message(), HasSubstr(files.cert_file));
  absl::StatusOr<std::unique_ptr<VerifiedTlsFiles>> refused =
      VerifiedTlsFiles::Start(files, fresh, absl::Hours(1));
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(refused.status().message(), HasSubstr(files.cert_file));
}

// A good renewal whose copy failed for this node's own reasons (no
// descriptor left, a full disk) is tried again at the next look, not
// refused for good.
TEST_F(TlsTest, ARenewalWhoseCopyFailedIsTriedAgain) {
  const TlsFiles files = LiveFiles();
  // Start's copy is the first pass, the renewal's the second.
  ASSERT_TRUE(ArmFaultPoint("tls.copy_in@2!"));
  absl::StatusOr<std::unique_ptr<VerifiedTlsFiles>> verified =
      VerifiedTlsFiles::Start(files, dir_.Child("data/tls"), absl::Hours(1));
  ASSERT_TRUE(verified.ok()) << verified.status();
  ASSERT_EQ(std::remove(CaFile("node-1.pem").c_str()), 0);
  ASSERT_EQ(RunDevCa(absl::StrCat("--nodes 1 ", Ca()), dir_.Child("r.log")), 0);
  const std::string renewed = SerialOfPem(ReadFile(CaFile("node-1.pem")));
  ReplaceFile(files.cert_file, ReadFile(CaFile("node-1.pem")));
  (*verified)->CheckNow();
  EXPECT_EQ((*verified)->status().refused, 1u);
  EXPECT_EQ((*verified)->status().renewed, 0u);
  (*verified)->CheckNow();
  ArmFaultPoint("");
  const VerifiedTlsFiles::Status status = (*verified)->status();
  EXPECT_EQ(status.renewed, 1u);
  EXPECT_EQ(status.serial, renewed);
  EXPECT_EQ(status.refusal, "");
}

// The alternative to AuthProcessor, for MeasureAuthCost only: the same
// decision in a server interceptor. It cannot answer with the decision's
// status (gRPC 1.51 interceptors cannot end a call), only TryCancel.
class AuthInterceptor final : public grpc::experimental::Interceptor {
 public:
  AuthInterceptor(grpc::experimental::ServerRpcInfo* info,
                  const Authorizer* authorizer)
      : info_(info), authorizer_(authorizer) {}
  void Intercept(grpc::experimental::InterceptorBatchMethods* batch) override {
    if (batch->QueryInterceptionHookPoint(
            grpc::experimental::InterceptionHookPoints::
                POST_RECV_INITIAL_METADATA)) {
      PresentedCredentials creds;
      for (const auto& [key, value] : *batch->GetRecvInitialMetadata()) {
        if (key == "authorization") {
          creds.authorization.emplace(value.data(), value.size());
        }
      }
      creds.certificate_names =
          CertificateNames(*info_->server_context()->auth_context());
      if (!authorizer_->Authorize(info_->method(), creds).ok()) {
        info_->server_context()->TryCancel();
      }
    }
    batch->Proceed();
  }

 private:
  grpc::experimental::ServerRpcInfo* info_;
  const Authorizer* authorizer_;
};

class AuthInterceptorFactory final
    : public grpc::experimental::ServerInterceptorFactoryInterface {
 public:
  explicit AuthInterceptorFactory(const Authorizer* authorizer)
      : authorizer_(authorizer) {}
  grpc::experimental::Interceptor* CreateServerInterceptor(
      grpc::experimental::ServerRpcInfo* info) override {
    return new AuthInterceptor(info, authorizer_);
  }

 private:
  const Authorizer* authorizer_;
};

// SIGHUP applies a config all or nothing: a role file that does not load
// keeps the roles in force and every other reloadable option as it was.
TEST_F(TlsTest, AReloadWhoseRoleFileFailsChangesNothing) {
  const std::string roles = dir_.Child("roles.conf");
  Config config =
      NodeConfig(roles, "node-1 = peer\napp = app\nadmin = admin\n");
  config.shutdown_grace_ms = 5000;
  absl::StatusOr<std::unique_ptr<Daemon>> daemon = Daemon::Start(config);
  ASSERT_TRUE(daemon.ok()) << daemon.status();

  Config next = config;
  next.shutdown_grace_ms = 1;
  next.auth_file = dir_.Child("no-such-roles.conf");
  const absl::Status reloaded = (*daemon)->Reload(next);
  EXPECT_EQ(reloaded.code(), absl::StatusCode::kInvalidArgument) << reloaded;
  EXPECT_THAT(std::string(reloaded.message()),
              ::testing::HasSubstr("the roles in force stay"));
  EXPECT_EQ((*daemon)->shutdown_grace_ms(), 5000);
  // The app certificate still creates: the roles did not change.
  EXPECT_TRUE(Create(Dial((*daemon)->address(), ClientCreds("app"))).ok());

  next.auth_file = roles;
  ASSERT_TRUE((*daemon)->Reload(next).ok());
  EXPECT_EQ((*daemon)->shutdown_grace_ms(), 1);
}

// A role file that reads whole but gives nobody a role (emptied by a tool
// that rewrites it, or only comments) used to be applied by SIGHUP: every
// caller and every peer refused, on every node it reached. And one cut
// before its node_id lines silently stopped tying peer certificates to
// node ids. Both are refused now, and the roles in force stay (a helper's
// review of the reload path).
TEST_F(TlsTest, AReloadOfAnEmptiedOrCutRoleFileIsRefused) {
  const std::string roles = dir_.Child("roles.conf");
  Config config = NodeConfig(
      roles, "node-1 = peer\napp = app\nadmin = admin\nnode_id = 1 node-1\n");
  absl::StatusOr<std::unique_ptr<Daemon>> daemon = Daemon::Start(config);
  ASSERT_TRUE(daemon.ok()) << daemon.status();
  const std::pair<std::string, std::string> cases[] = {
      {"", "gives no identity a role"},
      {"# roles are being rewritten\n", "gives no identity a role"},
      {"node-1 = peer\napp = app\nadmin = admin\n", "has no node_id lines"},
  };
  for (const auto& [text, why] : cases) {
    {
      std::ofstream file(roles, std::ios::trunc);
      file << text;
    }
    const absl::Status reloaded = (*daemon)->Reload(config);
    EXPECT_EQ(reloaded.code(), absl::StatusCode::kInvalidArgument)
        << "role file \"" << text << "\": " << reloaded;
    EXPECT_THAT(std::string(reloaded.message()),
                ::testing::HasSubstr("the roles in force stay"));
    EXPECT_THAT(std::string(reloaded.message()), ::testing::HasSubstr(why));
    EXPECT_TRUE(Create(Dial((*daemon)->address(), ClientCreds("app"))).ok())
        << "role file \"" << text << "\"";
  }
}

// A PeerService (node `self` of cluster 7) over mutual TLS with its own
// AuthProcessor (the fixture's policy until SetRoles). Its parts reach no
// driver: the fault switch drops the traffic of `dropped` once it is
// admitted, and the heard-from file shows what was admitted.
class PeerServiceOverTls {
 public:
  PeerServiceOverTls(const TlsFiles& files,
                     std::shared_ptr<const Authorizer> authorizer,
                     const std::string& dir, NodeId self,
                     std::vector<int> dropped)
      : heard_file_(dir + "/heard"),
        service_(
            self, [] { return v1::internal::HelloResponse(); }, heard_file_),
        processor_(std::make_shared<AuthProcessor>(std::move(authorizer))) {
    const std::string drop_file = dir + "/drop";
    {
      std::ofstream drop(drop_file);
      for (int id : dropped) drop << id << "\n";
    }
    PeerTransportOptions transport_options;
    transport_options.cluster_id = 7;
    transport_options.self = self;
    transport_options.drop_file = drop_file;
    transport_ = std::make_unique<PeerTransport>(transport_options);
    for (int id : dropped) transport_->SetAddress(NodeId(id), "127.0.0.1:1");
    absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> creds =
        MakeServerCredentials(files);
    EXPECT_TRUE(creds.ok()) << creds.status();
    (*creds)->SetAuthMetadataProcessor(processor_);
    PeerServiceParts parts;
    parts.cluster_id = 7;
    parts.transport = transport_.get();
    parts.auth = processor_.get();
    service_.Attach(parts);
    grpc::ServerBuilder builder;
    builder.AddListeningPort("127.0.0.1:0", *creds, &port_);
    builder.RegisterService(&service_);
    server_ = builder.BuildAndStart();
    EXPECT_NE(server_, nullptr);
  }
  ~PeerServiceOverTls() {
    server_->Shutdown(std::chrono::system_clock::now());
    service_.Detach();
  }

  std::string address() const { return absl::StrCat("127.0.0.1:", port_); }
  std::string heard() const { return ReadFile(heard_file_); }
  // A reload: later calls, and open streams at their next message, are
  // judged by `roles`.
  void SetRoles(const std::string& roles) {
    absl::StatusOr<AuthConfig> config = ParseAuthConfig(roles, "test roles");
    ASSERT_TRUE(config.ok()) << config.status();
    absl::StatusOr<MethodTable> methods = MethodTable::Sessiond();
    ASSERT_TRUE(methods.ok()) << methods.status();
    processor_->SetAuthorizer(
        std::make_shared<Authorizer>(*std::move(config), *std::move(methods)));
  }

 private:
  const std::string heard_file_;
  std::unique_ptr<PeerTransport> transport_;
  PeerService service_;
  std::shared_ptr<AuthProcessor> processor_;
  int port_ = 0;
  std::unique_ptr<grpc::Server> server_;
};

// Writes `last` (the server may already have ended the stream), closes the
// stream and returns how it ended.
template <typename T>
grpc::Status WriteAndFinish(grpc::ClientWriter<T>& writer, const T& last) {
  writer.Write(last);
  writer.WritesDone();
  return writer.Finish();
}

// A batch of one heartbeat from node `from` to node `to` of cluster 7.
v1::internal::MessageBatch HeartbeatBatch(int from, int to) {
  v1::internal::MessageBatch batch;
  batch.set_cluster_id(7);
  batch.set_from(from);
  batch.set_to(to);
  replication::Message heartbeat;
  heartbeat.type = replication::MessageType::kHeartbeat;
  heartbeat.from = NodeId(from);
  heartbeat.to = NodeId(to);
  heartbeat.term = Term(1);
  ToWire(heartbeat, batch.add_messages());
  return batch;
}

// The first chunk of a snapshot stream from node `from` to node `to` of
// cluster 7 (its image is never sent).
v1::internal::SnapshotChunk FirstSnapshotChunk(int from, int to) {
  v1::internal::SnapshotChunk chunk;
  chunk.set_cluster_id(7);
  chunk.set_from(from);
  chunk.set_to(to);
  chunk.set_total_bytes(16);
  chunk.set_sha256(std::string(32, 'x'));
  replication::Message snapshot;
  snapshot.type = replication::MessageType::kSnapshot;
  snapshot.from = NodeId(from);
  snapshot.to = NodeId(to);
  snapshot.term = Term(1);
  snapshot.snapshot.emplace();
  snapshot.snapshot->meta.index = LogIndex(10);
  snapshot.snapshot->meta.term = Term(1);
  ToWire(snapshot, chunk.mutable_message());
  return chunk;
}

// A peer's Raft message stream lives as long as the connection: it is
// authorized when it opens, and must be judged again once a reload changed
// the role policy, or a node whose peer role was withdrawn would go on
// feeding Raft over the stream it already had (it did).
TEST_F(TlsTest, APeerStreamIsJudgedAgainAfterAReload) {
  PeerServiceOverTls peer(ServerFiles(/*require_client_cert=*/true),
                          authorizer_, dir_.path(), NodeId(1), {2});
  // node-1's certificate has the peer role (node 2 presents it here: no
  // node_id line ties certificates to node ids).
  std::unique_ptr<v1::internal::RaftPeer::Stub> stub =
      PeerStubAsNode1(peer.address());
  grpc::ClientContext context;
  Prepare(&context);
  v1::internal::StreamSummary summary;
  std::unique_ptr<grpc::ClientWriter<v1::internal::MessageBatch>> writer =
      stub->SendMessages(&context, &summary);
  const v1::internal::MessageBatch batch = HeartbeatBatch(2, 1);
  ASSERT_TRUE(writer->Write(batch));
  // Taken: node 2 is recorded as heard from.
  ASSERT_TRUE(testing::Eventually([&] { return peer.heard() == "2\n"; }))
      << peer.heard();

  // A reload takes the peer role from node-1's certificate.
  peer.SetRoles("app = app\nadmin = admin\n");
  const grpc::Status ended = WriteAndFinish(*writer, batch);
  EXPECT_EQ(ended.error_code(), grpc::StatusCode::PERMISSION_DENIED)
      << ended.error_message();
  EXPECT_THAT(ended.error_message(), HasSubstr("node-1"));
}

// A reload of the roles renews the outgoing peer connections
// (PeerTransport::RenewChannels, from Daemon::Reload): who serves at a
// peer's address is checked only at a handshake, and a connection opened
// under the roles just replaced carried on for as long as it stayed up.
TEST_F(TlsTest, AReloadRenewsOutgoingPeerConnections) {
  // Node 1's listener, serving node-1's certificate, hears node 2 (and,
  // with no driver behind it, drops what it sends).
  PeerServiceOverTls peer(ServerFiles(/*require_client_cert=*/true),
                          authorizer_, dir_.path(), NodeId(1), {2});
  const std::string roles = dir_.Child("renew-roles.conf");
  absl::StatusOr<std::unique_ptr<ListenerSecurity>> security =
      ListenerSecurity::Build(
          NodeConfig(roles, "node-1 = peer\nnode_id = 1 node-1\n"));
  ASSERT_TRUE(security.ok()) << security.status();
  PeerTransportOptions options;
  options.cluster_id = 7;
  options.self = NodeId(2);
  options.credentials = [s = security->get()](NodeId id) {
    return s->peer_channels_to(id);
  };
  PeerTransport transport(options);
  transport.SetAddress(NodeId(1), peer.address());
  auto send_heartbeat = [&] {
    replication::Message heartbeat;
    heartbeat.type = replication::MessageType::kHeartbeat;
    heartbeat.from = NodeId(2);
    heartbeat.to = NodeId(1);
    heartbeat.term = Term(1);
    transport.Send({heartbeat});
  };
  auto broken = [&] {
    return transport.traffic()[NodeId(1)]
        .dropped[static_cast<int>(PeerDrop::kStreamBroken)];
  };
  send_heartbeat();
  ASSERT_TRUE(testing::Eventually([&] { return peer.heard() == "2\n"; }))
      << peer.heard();
  ASSERT_EQ(broken(), 0u);

  // node-1's certificate no longer serves as node 1.
  std::ofstream(roles) << "node-1 = admin\nnode-2 = peer\nnode_id = 2 node-2\n";
  ASSERT_TRUE((*security)->ReloadRoles(roles).ok());
  transport.RenewChannels();
  // The renewed connection's handshake refuses the server: messages to it
  // are dropped (bounded: Eventually's wait, a heartbeat each round).
  EXPECT_TRUE(testing::Eventually([&] {
    send_heartbeat();
    return broken() > 0;
  })) << "messages still go out on the connection opened before the reload";
  transport.Stop();
}

// A snapshot stream's first chunk is judged before anything of it is acted
// on: a reload between the stream's opening and its first chunk that took
// the caller's peer role refuses the chunk, before its sender is admitted
// (it was admitted first, and then met the fault switch).
TEST_F(TlsTest, ASnapshotStreamIsJudgedBeforeItsFirstChunk) {
  PeerServiceOverTls peer(ServerFiles(/*require_client_cert=*/true),
                          authorizer_, dir_.path(), NodeId(1), {2});
  std::unique_ptr<v1::internal::RaftPeer::Stub> stub =
      PeerStubAsNode1(peer.address());
  grpc::ClientContext context;
  Prepare(&context);
  v1::internal::SnapshotAck ack;
  std::unique_ptr<grpc::ClientWriter<v1::internal::SnapshotChunk>> writer =
      stub->SendSnapshot(&context, &ack);
  // A call after it on the same connection: the stream's headers were
  // judged (allowed) by the time this is answered.
  {
    grpc::ClientContext hello_context;
    Prepare(&hello_context);
    v1::internal::HelloRequest hello;
    v1::internal::HelloResponse answer;
    ASSERT_TRUE(stub->Hello(&hello_context, hello, &answer).ok());
  }
  peer.SetRoles("app = app\nadmin = admin\n");
  const grpc::Status ended = WriteAndFinish(*writer, FirstSnapshotChunk(2, 1));
  EXPECT_EQ(ended.error_code(), grpc::StatusCode::PERMISSION_DENIED)
      << ended.error_message();
  EXPECT_THAT(ended.error_message(), HasSubstr("node-1"));
}

// With node_id lines, a peer's certificate sends Raft traffic only as its
// own node: node-1's certificate may not send a message batch, a snapshot
// or a forwarded write as node 2 (vote, append or install a snapshot in
// another member's name).
TEST_F(TlsTest, APeerMaySendOnlyAsItsOwnNode) {
  PeerServiceOverTls peer(ServerFiles(/*require_client_cert=*/true),
                          authorizer_, dir_.path(), NodeId(3), {1, 2});
  peer.SetRoles("node-1 = peer\nadmin = admin\nnode_id = 1 node-1\n");
  std::unique_ptr<v1::internal::RaftPeer::Stub> stub =
      PeerStubAsNode1(peer.address());
  {
    grpc::ClientContext context;
    Prepare(&context);
    v1::internal::StreamSummary summary;
    auto writer = stub->SendMessages(&context, &summary);
    ASSERT_TRUE(writer->Write(HeartbeatBatch(1, 3)));
    ASSERT_TRUE(testing::Eventually([&] { return peer.heard() == "1\n"; }))
        << peer.heard();
    writer->WritesDone();
    EXPECT_TRUE(writer->Finish().ok());
  }
  {
    grpc::ClientContext context;
    Prepare(&context);
    v1::internal::StreamSummary summary;
    auto writer = stub->SendMessages(&context, &summary);
    const grpc::Status ended = WriteAndFinish(*writer, HeartbeatBatch(2, 3));
    EXPECT_EQ(ended.error_code(), grpc::StatusCode::PERMISSION_DENIED)
        << ended.error_message();
    EXPECT_THAT(ended.error_message(),
                HasSubstr("is node 1 and may not send Raft traffic as node 2"));
  }
  {
    grpc::ClientContext context;
    Prepare(&context);
    v1::internal::SnapshotAck ack;
    auto writer = stub->SendSnapshot(&context, &ack);
    const grpc::Status ended =
        WriteAndFinish(*writer, FirstSnapshotChunk(2, 3));
    EXPECT_EQ(ended.error_code(), grpc::StatusCode::PERMISSION_DENIED)
        << ended.error_message();
  }
  {
    grpc::ClientContext context;
    Prepare(&context);
    v1::internal::ProposeRequest request;
    request.set_cluster_id(7);
    request.set_from(2);
    request.set_transfer_to(1);
    v1::internal::ProposeResponse response;
    const grpc::Status answered = stub->Propose(&context, request, &response);
    EXPECT_EQ(answered.error_code(), grpc::StatusCode::PERMISSION_DENIED)
        << answered.error_message();
  }
  // Nothing from "node 2" was taken.
  EXPECT_EQ(peer.heard(), "1\n");
}

// A validation with touch=true slides the session's idle timeout, a write:
// the read-only reader role may validate but not touch, in any validate
// call. And a validate stream, authorized when it opened, is judged again
// after a reload of the role file: a role withdrawn stops working on the
// streams already open too.
TEST_F(TlsTest, ReadersMayNotTouchAndStreamsAreJudgedAgainAfterAReload) {
  const std::string roles = dir_.Child("roles.conf");
  Config config =
      NodeConfig(roles, "node-1 = peer\napp = app\nreader = reader\n");
  absl::StatusOr<std::unique_ptr<Daemon>> daemon = Daemon::Start(config);
  ASSERT_TRUE(daemon.ok()) << daemon.status();
  auto app = v1::SessionService::NewStub(
      Dial((*daemon)->address(), ClientCreds("app")));
  auto reader = v1::SessionService::NewStub(
      Dial((*daemon)->address(), ClientCreds("reader")));
  std::string token;
  {
    grpc::ClientContext ctx;
    Prepare(&ctx);
    v1::CreateSessionRequest request;
    request.set_user_id("u1");
    v1::CreateSessionResponse response;
    ASSERT_TRUE(app->CreateSession(&ctx, request, &response).ok());
    token = response.token();
  }
  auto validate = [&](v1::SessionService::Stub* stub, bool touch) {
    grpc::ClientContext ctx;
    Prepare(&ctx);
    v1::ValidateSessionRequest request;
    request.set_token(token);
    request.set_touch(touch);
    v1::ValidateSessionResponse response;
    grpc::Status status = stub->ValidateSession(&ctx, request, &response);
    if (status.ok()) {
      EXPECT_EQ(response.outcome(), response.VALID);
    }
    return status;
  };
  EXPECT_TRUE(validate(reader.get(), false).ok());
  const grpc::Status touched = validate(reader.get(), true);
  EXPECT_EQ(touched.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_THAT(touched.error_message(),
              ::testing::HasSubstr("\"reader\" may not touch sessions"));
  EXPECT_TRUE(validate(app.get(), true).ok());
  {
    grpc::ClientContext ctx;
    Prepare(&ctx);
    v1::BatchValidateSessionsRequest request;
    request.add_requests()->set_token(token);
    v1::ValidateSessionRequest* touching = request.add_requests();
    touching->set_token(token);
    touching->set_touch(true);
    v1::BatchValidateSessionsResponse response;
    EXPECT_EQ(
        reader->BatchValidateSessions(&ctx, request, &response).error_code(),
        grpc::StatusCode::PERMISSION_DENIED);
  }

  // Sends one request on `stream`: the answer's outcome, or the status the
  // stream ended with.
  using Stream = grpc::ClientReaderWriter<v1::ValidateSessionRequest,
                                          v1::ValidateSessionResponse>;
  auto next = [&](Stream* stream, bool touch) {
    v1::ValidateSessionRequest request;
    request.set_token(token);
    request.set_touch(touch);
    v1::ValidateSessionResponse response;
    if (stream->Write(request) && stream->Read(&response)) {
      EXPECT_EQ(response.outcome(), response.VALID);
      return grpc::Status::OK;
    }
    stream->WritesDone();
    grpc::Status status = stream->Finish();
    return status.ok() ? grpc::Status(grpc::StatusCode::INTERNAL,
                                      "the stream ended with OK")
                       : status;
  };
  {
    grpc::ClientContext ctx;
    Prepare(&ctx);
    std::unique_ptr<Stream> stream = reader->StreamValidateSessions(&ctx);
    EXPECT_TRUE(next(stream.get(), false).ok());
    const grpc::Status ended = next(stream.get(), true);
    EXPECT_EQ(ended.error_code(), grpc::StatusCode::PERMISSION_DENIED)
        << ended.error_message();
    EXPECT_THAT(ended.error_message(),
                ::testing::HasSubstr("may not touch sessions"));
  }
  grpc::ClientContext ctx;
  Prepare(&ctx);
  std::unique_ptr<Stream> stream = app->StreamValidateSessions(&ctx);
  EXPECT_TRUE(next(stream.get(), true).ok());
  {
    std::ofstream out(roles);
    out << "node-1 = peer\nreader = reader\n";  // app withdrawn
  }
  ASSERT_TRUE((*daemon)->Reload(config).ok());
  const grpc::Status ended = next(stream.get(), false);
  EXPECT_EQ(ended.error_code(), grpc::StatusCode::PERMISSION_DENIED)
      << ended.error_message();
  EXPECT_THAT(ended.error_message(),
              ::testing::HasSubstr("\"app\" may not call"));
}

// Not a check: prints what authorization costs per unary call over one
// mutual-TLS channel, with no authorization, with AuthProcessor and with
// the interceptor above. SESSIOND_MEASURE_AUTH=1 to run.
TEST_F(TlsTest, MeasureAuthCost) {
  if (std::getenv("SESSIOND_MEASURE_AUTH") == nullptr) {
    GTEST_SKIP() << "set SESSIOND_MEASURE_AUTH=1 to measure";
  }
  constexpr int kCalls = 5000;
  enum Mode { kNone, kProcessor, kInterceptor };
  auto run = [&](Mode mode) {
    absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> creds =
        MakeServerCredentials(ServerFiles(true));
    if (!creds.ok()) return -1.0;
    auto processor = std::make_shared<AuthProcessor>(authorizer_);
    if (mode == kProcessor) (*creds)->SetAuthMetadataProcessor(processor);
    ProbeSessionService service;
    service.set_processor(processor.get());
    int port = 0;
    grpc::ServerBuilder builder;
    builder.AddListeningPort("127.0.0.1:0", *creds, &port);
    builder.RegisterService(&service);
    if (mode == kInterceptor) {
      std::vector<std::unique_ptr<
          grpc::experimental::ServerInterceptorFactoryInterface>>
          factories;
      factories.push_back(
          std::make_unique<AuthInterceptorFactory>(authorizer_.get()));
      builder.experimental().SetInterceptorCreators(std::move(factories));
    }
    std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
    auto channel = Dial(absl::StrCat("127.0.0.1:", port), ClientCreds("app"));
    for (int i = 0; i < 200; ++i) Validate(channel);  // warm up
    const auto start = std::chrono::steady_clock::now();
    for (int i = 0; i < kCalls; ++i) Validate(channel);
    const double us = std::chrono::duration<double, std::micro>(
                          std::chrono::steady_clock::now() - start)
                          .count() /
                      kCalls;
    server->Shutdown(std::chrono::system_clock::now());
    return us;
  };
  for (int round = 0; round < 5; ++round) {
    const double none = run(kNone);
    const double processor = run(kProcessor);
    const double interceptor = run(kInterceptor);
    std::printf(
        "round %d: us/call: %.1f no authorization, %.1f AuthProcessor, %.1f "
        "interceptor\n",
        round, none, processor, interceptor);
  }
}

}  // namespace
}  // namespace sessiond::server
