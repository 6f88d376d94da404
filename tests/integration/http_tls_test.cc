// Copyright sessiond authors. Licensed under the Apache License 2.0.
//
// HTTPS on the metrics and JWKS endpoints (issue 9, "TLS on every
// listener"), on a real TLS node (certificates from tools/dev-ca.sh):
//   - GET /metrics and the JWKS over HTTPS, the server verified against the
//     CA (and refused when the client trusts another CA);
//   - plain HTTP on either port gets no HTTP answer;
//   - /metrics refuses a client without a certificate, or with one from
//     another CA (--tls_client_auth=require); the JWKS asks for none;
//   - a re-issued certificate is served to new connections (HTTPS and
//     gRPC) without a
//     restart (--tls_refresh_s=1), compared by serial number as OpenSSL
//     reads it off the handshake;
//   - files that do not load (a certificate that is not the key's, one of
//     another CA) keep the last good pair serving, with one warning per
//     change, on the HTTPS endpoints and the gRPC listener alike;
//   - /metrics has the served certificate's expiry.
#include <arpa/inet.h>
#include <grpcpp/grpcpp.h>
#include <httplib.h>
#include <netinet/in.h>
#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "gtest/gtest.h"
#include "sessiond/v1/session.grpc.pb.h"
#include "tests/integration/sessiond_process.h"
#include "tests/integration/tls_files.h"

namespace sessiond::testing {
namespace {

// A TCP connection to 127.0.0.1:`port` with 5 s send and receive timeouts
// (-1 when it cannot connect).
int Connect(int port) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return -1;
  timeval timeout{5, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, sizeof timeout);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

// A TLS handshake with the endpoint on `port`, verifying its certificate
// against `ca_file` for the IP 127.0.0.1, presenting `cert_file` (none when
// empty). The serial, in hex, of the certificate it served; "" when the
// handshake failed.
std::string ServedSerial(int port, const std::string& ca_file,
                         const std::string& cert_file,
                         const std::string& key_file) {
  SSL_CTX* ctx = SSL_CTX_new(TLS_client_method());
  std::string serial;
  if (SSL_CTX_load_verify_locations(ctx, ca_file.c_str(), nullptr) == 1 &&
      (cert_file.empty() ||
       (SSL_CTX_use_certificate_chain_file(ctx, cert_file.c_str()) == 1 &&
        SSL_CTX_use_PrivateKey_file(ctx, key_file.c_str(), SSL_FILETYPE_PEM) ==
            1))) {
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, nullptr);
    X509_VERIFY_PARAM_set1_ip_asc(SSL_CTX_get0_param(ctx), "127.0.0.1");
    const int fd = Connect(port);
    if (fd >= 0) {
      SSL* ssl = SSL_new(ctx);
      SSL_set_fd(ssl, fd);
      if (SSL_connect(ssl) == 1 && SSL_get_verify_result(ssl) == X509_V_OK) {
        X509* cert = SSL_get1_peer_certificate(ssl);
        if (cert != nullptr) {
          BIGNUM* bn =
              ASN1_INTEGER_to_BN(X509_get0_serialNumber(cert), nullptr);
          char* hex = BN_bn2hex(bn);
          serial = hex;
          OPENSSL_free(hex);
          BN_free(bn);
          X509_free(cert);
        }
      }
      SSL_free(ssl);
      close(fd);
    }
  }
  ERR_clear_error();
  SSL_CTX_free(ctx);
  return serial;
}

// What a plain-HTTP GET on `port` gets back (at most 4 KiB, until the
// server closes or 5 s pass).
std::string PlainHttpAnswer(int port, const std::string& path) {
  const int fd = Connect(port);
  if (fd < 0) return "<no connection>";
  const std::string request =
      absl::StrCat("GET ", path,
                   " HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
  send(fd, request.data(), request.size(), MSG_NOSIGNAL);
  std::string answer;
  char buffer[1024];
  for (int i = 0; i < 4; ++i) {
    const ssize_t n = recv(fd, buffer, sizeof buffer, 0);
    if (n <= 0) break;
    answer.append(buffer, static_cast<size_t>(n));
  }
  close(fd);
  return answer;
}

int CountLines(const std::string& path, const std::string& a,
               const std::string& b) {
  std::ifstream in(path);
  std::string line;
  int count = 0;
  while (std::getline(in, line)) {
    if (absl::StrContains(line, a) && absl::StrContains(line, b)) ++count;
  }
  return count;
}

class HttpTlsTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    // A write to a connection the server dropped (a refused handshake)
    // must fail the call, not kill the test.
    signal(SIGPIPE, SIG_IGN);
  }

  void SetUp() override {
    certs_ = dir_.path() + "/certs";
    ASSERT_EQ(DevCa(absl::StrCat("--nodes 1 ", certs_, " app scraper")), 0)
        << ReadTextFile(dir_.path() + "/dev-ca.log");
    other_ = dir_.path() + "/other";
    ASSERT_EQ(DevCa(absl::StrCat("--nodes 1 ", other_, " scraper")), 0)
        << ReadTextFile(dir_.path() + "/dev-ca.log");
    std::ofstream(certs_ + "/roles.conf") << "node-1 = peer\napp = app\n";
    const std::string kek = dir_.path() + "/kek";
    std::ofstream(kek) << std::string(64, 'a') << "\n";
    ASSERT_EQ(chmod(kek.c_str(), 0600), 0);
    process_ = std::make_unique<SessiondProcess>(
        SESSIOND_BINARY, dir_.path() + "/data",
        std::vector<std::string>{
            "--tls_cert", certs_ + "/node-1.pem", "--tls_key",
            certs_ + "/node-1-key.pem", "--tls_ca", certs_ + "/ca.pem",
            "--auth_file", certs_ + "/roles.conf", "--tls_refresh_s", "1",
            "--kek_file", kek, "--metrics_listen", "127.0.0.1:0",
            "--jwks_listen", "127.0.0.1:0"});
    process_->set_credentials(TlsCredentials(certs_, certs_, "app"));
    ASSERT_TRUE(process_->Start().ok()) << process_->log_path();
    ASSERT_NO_FATAL_FAILURE(FindEndpoints());
  }

  // Where this start of the node put its HTTPS endpoints.
  void FindEndpoints() {
    metrics_ = SplitHostPort(
        ListeningAddressIn(process_->log_path(), "METRICS_LISTENING "));
    jwks_ = SplitHostPort(
        ListeningAddressIn(process_->log_path(), "JWKS_LISTENING "));
    ASSERT_GT(metrics_.port, 0) << process_->log_path();
    ASSERT_GT(jwks_.port, 0) << process_->log_path();
  }

  int DevCa(const std::string& args) {
    return RunDevCa(args, dir_.path() + "/dev-ca.log");
  }

  // An HTTPS client that trusts `ca_dir`/ca.pem (and checks the server's
  // name: 127.0.0.1), presenting `ca_dir`/IDENTITY.pem (none when empty).
  std::unique_ptr<httplib::SSLClient> Client(const HostPort& hp,
                                             const std::string& ca_dir,
                                             const std::string& identity) {
    auto client = identity.empty()
                      ? std::make_unique<httplib::SSLClient>(hp.host, hp.port)
                      : std::make_unique<httplib::SSLClient>(
                            hp.host, hp.port, ca_dir + "/" + identity + ".pem",
                            ca_dir + "/" + identity + "-key.pem");
    client->set_ca_cert_path(ca_dir + "/ca.pem");
    client->enable_server_certificate_verification(true);
    client->set_connection_timeout(5, 0);
    client->set_read_timeout(5, 0);
    client->set_write_timeout(5, 0);
    return client;
  }

  std::string Served(const HostPort& hp) {
    return ServedSerial(hp.port, certs_ + "/ca.pem", certs_ + "/scraper.pem",
                        certs_ + "/scraper-key.pem");
  }

  // Puts another CA's node-1 pair where the node's files are (each renamed
  // in whole, the key first): a matching pair that does not verify.
  void RenewFromAnotherCa() {
    for (const char* name : {"/node-1-key.pem", "/node-1.pem"}) {
      const std::string path = certs_ + name;
      { std::ofstream(path + ".new") << ReadTextFile(other_ + name); }
      ASSERT_EQ(std::rename((path + ".new").c_str(), path.c_str()), 0);
    }
  }

  // Re-issues node-1's certificate from the same key (a new serial), as
  // tools/dev-ca.sh does when only the .pem is gone; returns the serial.
  std::string Reissue() {
    EXPECT_EQ(unlink((certs_ + "/node-1.pem").c_str()), 0);
    EXPECT_EQ(DevCa(absl::StrCat("--nodes 1 ", certs_)), 0)
        << ReadTextFile(dir_.path() + "/dev-ca.log");
    return SerialOfPem(ReadTextFile(certs_ + "/node-1.pem"));
  }

  // The serial of the certificate the gRPC client listener shows a new
  // connection ("" when the handshake or the call fails).
  std::string GrpcServed() {
    grpc::ChannelArguments args;
    args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);  // a new connection
    auto channel = grpc::CreateCustomChannel(
        process_->address(), TlsCredentials(certs_, certs_, "app"), args);
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() +
                     std::chrono::seconds(5));
    v1::ValidateSessionRequest request;
    request.set_token("not-a-token");
    v1::ValidateSessionResponse response;
    const grpc::Status status =
        v1::SessionService::NewStub(channel)->ValidateSession(&ctx, request,
                                                              &response);
    if (status.error_code() == grpc::StatusCode::UNAVAILABLE ||
        status.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED ||
        ctx.auth_context() == nullptr) {
      return "";
    }
    std::vector<grpc::string_ref> pem = ctx.auth_context()->FindPropertyValues(
        GRPC_X509_PEM_CERT_PROPERTY_NAME);
    if (pem.empty()) return "";
    return SerialOfPem(std::string(pem.front().data(), pem.front().size()));
  }

  // The value of an unlabelled series on /metrics ("" when absent).
  std::string MetricValue(const std::string& name) {
    httplib::Result scraped =
        Client(metrics_, certs_, "scraper")->Get("/metrics");
    if (!scraped) return "";
    for (absl::string_view line : absl::StrSplit(scraped->body, '\n')) {
      if (absl::ConsumePrefix(&line, name + " ")) return std::string(line);
    }
    return "";
  }

  // Makes handshakes on the HTTPS endpoints and the gRPC listener until all
  // three serve `serial` (bounded: 300 rounds, 100 ms apart). Whether they
  // did.
  bool WaitUntilServed(const std::string& serial) {
    for (int i = 0; i < 300; ++i) {
      if (Served(metrics_) == serial && Served(jwks_) == serial &&
          GrpcServed() == serial) {
        return true;
      }
      usleep(100 * 1000);
    }
    return false;
  }

  TempDir dir_;
  std::string certs_;
  std::string other_;
  std::unique_ptr<SessiondProcess> process_;
  HostPort metrics_;
  HostPort jwks_;
};

TEST_F(HttpTlsTest, ServesHttpsVerifiedAgainstTheCa) {
  httplib::Result metrics =
      Client(metrics_, certs_, "scraper")->Get("/metrics");
  ASSERT_TRUE(metrics) << httplib::to_string(metrics.error());
  EXPECT_EQ(metrics->status, 200);
  EXPECT_TRUE(absl::StrContains(metrics->body, "sessiond_build_info"))
      << metrics->body;
  httplib::Result health = Client(metrics_, certs_, "scraper")->Get("/healthz");
  ASSERT_TRUE(health) << httplib::to_string(health.error());
  EXPECT_EQ(health->status, 200);

  // The first leader stages a signing key by itself (it has a KEK): the
  // JWKS answers 503 until then (bounded wait). No client certificate.
  int status = 0;
  std::string type;
  std::string body;
  for (int i = 0; i < 300 && status != 200; ++i) {
    if (i > 0) usleep(100 * 1000);
    httplib::Result jwks =
        Client(jwks_, certs_, "")->Get("/.well-known/jwks.json");
    ASSERT_TRUE(jwks) << httplib::to_string(jwks.error());
    status = jwks->status;
    type = jwks->get_header_value("Content-Type");
    body = jwks->body;
  }
  EXPECT_EQ(status, 200) << body;
  EXPECT_EQ(type, "application/json");
  EXPECT_TRUE(absl::StrContains(body, "\"keys\"")) << body;

  // A client that trusts another CA does not accept the node.
  EXPECT_FALSE(Client(jwks_, other_, "")->Get("/.well-known/jwks.json"));
  EXPECT_FALSE(Client(metrics_, other_, "scraper")->Get("/metrics"));

  // The start-up log says so.
  EXPECT_EQ(
      CountLines(process_->log_path(), "http.listening", "endpoint=metrics"),
      1);
  EXPECT_EQ(CountLines(process_->log_path(), "endpoint=metrics",
                       "scheme=https client_cert=required"),
            1);
  EXPECT_EQ(CountLines(process_->log_path(), "endpoint=jwks", "scheme=https"),
            1);
}

TEST_F(HttpTlsTest, PlainHttpGetsNoHttpAnswer) {
  for (const auto& [port, path] :
       {std::pair<int, std::string>{metrics_.port, "/metrics"},
        {jwks_.port, "/.well-known/jwks.json"}}) {
    const std::string answer = PlainHttpAnswer(port, path);
    EXPECT_FALSE(absl::StrContains(answer, "HTTP/")) << path << ": " << answer;
    EXPECT_FALSE(absl::StrContains(answer, "sessiond_")) << path;
  }
  // The endpoints still serve HTTPS afterwards.
  EXPECT_TRUE(Client(metrics_, certs_, "scraper")->Get("/metrics"));
}

TEST_F(HttpTlsTest, MetricsRefusesClientsWithoutACertificateOfTheCa) {
  httplib::Result anonymous = Client(metrics_, certs_, "")->Get("/metrics");
  EXPECT_FALSE(anonymous) << anonymous->status << " " << anonymous->body;
  // other_/scraper.pem: the same name, another CA. The client trusts the
  // node's CA (so only the node can refuse).
  auto stranger = std::make_unique<httplib::SSLClient>(
      metrics_.host, metrics_.port, other_ + "/scraper.pem",
      other_ + "/scraper-key.pem");
  stranger->set_ca_cert_path(certs_ + "/ca.pem");
  stranger->enable_server_certificate_verification(true);
  stranger->set_connection_timeout(5, 0);
  stranger->set_read_timeout(5, 0);
  httplib::Result refused = stranger->Get("/metrics");
  EXPECT_FALSE(refused) << refused->status << " " << refused->body;
  // With one the CA signed: served.
  httplib::Result scraped =
      Client(metrics_, certs_, "scraper")->Get("/metrics");
  ASSERT_TRUE(scraped) << httplib::to_string(scraped.error());
  EXPECT_EQ(scraped->status, 200);
  // The JWKS never asks for one.
  EXPECT_TRUE(Client(jwks_, certs_, "")->Get("/.well-known/jwks.json"));
}

TEST_F(HttpTlsTest, RenewedCertificateIsServedWithoutARestart) {
  const std::string first = SerialOfPem(ReadTextFile(certs_ + "/node-1.pem"));
  ASSERT_FALSE(first.empty());
  EXPECT_EQ(Served(metrics_), first);
  EXPECT_EQ(Served(jwks_), first);

  const std::string second = Reissue();
  ASSERT_FALSE(second.empty());
  ASSERT_NE(second, first);
  EXPECT_TRUE(WaitUntilServed(second))
      << "still served " << Served(metrics_) << " and " << Served(jwks_)
      << ", the file has " << second << "; " << process_->log_path();
  httplib::Result scraped =
      Client(metrics_, certs_, "scraper")->Get("/metrics");
  ASSERT_TRUE(scraped) << httplib::to_string(scraped.error());
  EXPECT_EQ(scraped->status, 200);
  EXPECT_EQ(CountLines(process_->log_path(), "http.tls_reloaded", second), 2);
  EXPECT_EQ(CountLines(process_->log_path(), "tls.renewed", second), 1);
  const std::string expiry =
      MetricValue("sessiond_tls_certificate_expiry_timestamp_seconds");
  double expiry_s = 0;
  ASSERT_TRUE(absl::SimpleAtod(expiry, &expiry_s)) << expiry;
  EXPECT_GT(expiry_s, static_cast<double>(time(nullptr)));
  EXPECT_EQ(MetricValue("sessiond_tls_renewals_refused_total"), "0");
  EXPECT_EQ(MetricValue("sessiond_tls_files_not_served"), "0");
}

TEST_F(HttpTlsTest, FilesThatDoNotLoadKeepTheLastGoodPair) {
  const std::string good = SerialOfPem(ReadTextFile(certs_ + "/node-1.pem"));
  ASSERT_EQ(Served(metrics_), good);
  // Another certificate where node-1's was (as when a renewal renames the
  // certificate but not yet its new key): not the key's.
  const std::string path = certs_ + "/node-1.pem";
  { std::ofstream(path + ".new") << ReadTextFile(certs_ + "/scraper.pem"); }
  ASSERT_EQ(std::rename((path + ".new").c_str(), path.c_str()), 0);
  // The node warns once it looked (bounded wait, handshakes meanwhile):
  // once for the node, since every listener serves the same verified
  // copies (server/verified_tls_files.h).
  const std::string log = process_->log_path();
  for (int i = 0; i < 300; ++i) {
    if (CountLines(log, "tls.renewal_refused", "is not the key of") > 0) break;
    Served(metrics_);
    Served(jwks_);
    usleep(100 * 1000);
  }
  ASSERT_EQ(CountLines(log, "tls.renewal_refused", "is not the key of"), 1)
      << log;
  // Still the good pair, over several refresh intervals, and no second
  // warning for the same files.
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(Served(metrics_), good);
    EXPECT_EQ(Served(jwks_), good);
    httplib::Result scraped =
        Client(metrics_, certs_, "scraper")->Get("/metrics");
    EXPECT_TRUE(scraped) << httplib::to_string(scraped.error());
    usleep(1100 * 1000);
  }
  EXPECT_EQ(GrpcServed(), good);
  EXPECT_EQ(CountLines(log, "tls.renewal_refused", "is not the key of"), 1);
  // The HTTPS endpoints never saw the files: nothing failed to load there.
  EXPECT_EQ(CountLines(log, "http.tls_reload_failed", ""), 0) << log;

  // A good certificate again: served.
  const std::string renewed = Reissue();
  ASSERT_FALSE(renewed.empty());
  EXPECT_TRUE(WaitUntilServed(renewed)) << log;
}

// A renewal from another CA (a matching pair, but not the CA clients trust)
// is not served: every scraper's handshake would fail. The last good pair
// stays, and the warning says why.
TEST_F(HttpTlsTest, ACertificateOfAnotherCaIsNotServed) {
  const std::string good = SerialOfPem(ReadTextFile(certs_ + "/node-1.pem"));
  ASSERT_EQ(Served(metrics_), good);
  ASSERT_NO_FATAL_FAILURE(RenewFromAnotherCa());
  // One warning for the node (its files are looked at every second); the
  // HTTPS endpoints and the gRPC listener serve the same verified copies,
  // re-read every second: clients still connect to each.
  const std::string log = process_->log_path();
  for (int i = 0; i < 300; ++i) {
    if (CountLines(log, "tls.renewal_refused", "does not verify") > 0) break;
    Served(metrics_);
    Served(jwks_);
    usleep(100 * 1000);
  }
  EXPECT_EQ(CountLines(log, "tls.renewal_refused", "does not verify"), 1)
      << log;
  usleep(2500 * 1000);
  EXPECT_EQ(Served(metrics_), good);
  EXPECT_EQ(Served(jwks_), good);
  EXPECT_EQ(GrpcServed(), good) << log;
  EXPECT_EQ(CountLines(log, "http.tls_reload_failed", ""), 0) << log;
  // (A look between the two renames refuses the new key with the old
  // certificate first: counted once more, and fine.)
  EXPECT_EQ(MetricValue("sessiond_tls_files_not_served"), "1");
  httplib::Result scraped =
      Client(metrics_, certs_, "scraper")->Get("/metrics");
  ASSERT_TRUE(scraped) << httplib::to_string(scraped.error());
  EXPECT_EQ(scraped->status, 200);
}

// A renewal refused, then a restart (a deploy, a reboot) before anyone
// mended the files: the node starts and every listener, the HTTPS
// endpoints included, serves the last certificate that verified. The HTTPS
// endpoints loaded the operator's files themselves before, which do not
// load, so the node did not start at all.
TEST_F(HttpTlsTest, ARestartAfterARefusedRenewalServesTheLastGoodPair) {
  const std::string good = SerialOfPem(ReadTextFile(certs_ + "/node-1.pem"));
  ASSERT_EQ(Served(metrics_), good);
  ASSERT_NO_FATAL_FAILURE(RenewFromAnotherCa());
  process_->Kill();
  ASSERT_TRUE(process_->Start().ok()) << process_->log_path();
  ASSERT_NO_FATAL_FAILURE(FindEndpoints());
  const std::string log = process_->log_path();
  EXPECT_EQ(CountLines(log, "tls.renewal_refused", "does not verify"), 1)
      << log;
  EXPECT_EQ(Served(metrics_), good);
  EXPECT_EQ(Served(jwks_), good);
  EXPECT_EQ(GrpcServed(), good) << log;
  EXPECT_EQ(MetricValue("sessiond_tls_files_not_served"), "1");
}

}  // namespace
}  // namespace sessiond::testing
