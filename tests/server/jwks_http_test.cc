// Copyright sessiond authors. Licensed under the Apache License 2.0.
//
// The JWKS endpoint (server/jwks_http.h) on loopback, fetched with
// cpp-httplib's client: the document and its cache headers, conditional
// GETs, a provider that fails, paths that are not the JWKS, bind errors.
#include "server/jwks_http.h"

#include <arpa/inet.h>
#include <httplib.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "common/signing.h"
#include "gtest/gtest.h"
#include "server/http_endpoint.h"

namespace sessiond::server {
namespace {

// What the provider answers; changed by the test thread, read on the
// endpoint's workers. HoldNext makes the next calls wait until Release, as
// a stalled request holds its worker.
class FakeRing {
 public:
  void Set(absl::StatusOr<JwksDocument> doc) {
    absl::MutexLock lock(&mu_);
    doc_ = std::move(doc);
  }
  absl::StatusOr<JwksDocument> Get() {
    absl::MutexLock lock(&mu_);
    ++calls_;
    if (to_hold_ > 0) {
      --to_hold_;
      ++held_;
      // Bounded: a test that never releases still ends.
      mu_.AwaitWithTimeout(absl::Condition(&released_), absl::Seconds(60));
      --held_;
    }
    return doc_;
  }
  int calls() {
    absl::MutexLock lock(&mu_);
    return calls_;
  }
  void HoldNext(int calls) {
    absl::MutexLock lock(&mu_);
    to_hold_ = calls;
    released_ = false;
  }
  // Whether `calls` are held within 20 s.
  bool WaitHeld(int calls) {
    absl::MutexLock lock(&mu_);
    auto enough = [this, calls]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      return held_ >= calls;
    };
    return mu_.AwaitWithTimeout(absl::Condition(&enough), absl::Seconds(20));
  }
  void Release() {
    absl::MutexLock lock(&mu_);
    released_ = true;
  }

 private:
  absl::Mutex mu_;
  absl::StatusOr<JwksDocument> doc_ ABSL_GUARDED_BY(mu_) =
      absl::UnavailableError("no document yet");
  int calls_ ABSL_GUARDED_BY(mu_) = 0;
  int to_hold_ ABSL_GUARDED_BY(mu_) = 0;
  int held_ ABSL_GUARDED_BY(mu_) = 0;
  bool released_ ABSL_GUARDED_BY(mu_) = false;
};

// A real JWKS of `n` fresh Ed25519 keys.
std::string RealJwks(int n) {
  std::vector<signing::PublicSigningKey> keys;
  for (int i = 0; i < n; ++i) {
    absl::StatusOr<signing::Ed25519KeyPair> pair =
        signing::GenerateEd25519KeyPair();
    EXPECT_TRUE(pair.ok()) << pair.status();
    if (!pair.ok()) return "";
    absl::StatusOr<std::string> kid =
        signing::KeyIdForPublicKey(pair->public_key);
    EXPECT_TRUE(kid.ok()) << kid.status();
    if (!kid.ok()) return "";
    keys.push_back({*kid, pair->public_key});
  }
  absl::StatusOr<std::string> json = signing::JwksJson(keys);
  EXPECT_TRUE(json.ok()) << json.status();
  return json.ok() ? *json : "";
}

std::unique_ptr<httplib::Client> ClientFor(const std::string& address) {
  const size_t colon = address.rfind(':');
  int port = 0;
  EXPECT_NE(colon, std::string::npos) << address;
  EXPECT_TRUE(absl::SimpleAtoi(address.substr(colon + 1), &port)) << address;
  auto client =
      std::make_unique<httplib::Client>(address.substr(0, colon), port);
  client->set_connection_timeout(5, 0);
  client->set_read_timeout(5, 0);
  return client;
}

class JwksHttpTest : public ::testing::Test {
 protected:
  void SetUp() override {
    JwksHttpOptions options;
    options.listen = "127.0.0.1:0";
    options.provider = [this] { return ring_.Get(); };
    absl::StatusOr<std::unique_ptr<JwksHttpServer>> server =
        JwksHttpServer::Start(std::move(options));
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = std::move(*server);
    ASSERT_TRUE(absl::StartsWith(server_->address(), "127.0.0.1:"))
        << server_->address();
    ASSERT_FALSE(absl::EndsWith(server_->address(), ":0"));
    client_ = ClientFor(server_->address());
  }

  FakeRing ring_;
  std::unique_ptr<JwksHttpServer> server_;
  std::unique_ptr<httplib::Client> client_;
};

TEST_F(JwksHttpTest, ServesTheDocumentWithItsCacheHeaders) {
  const std::string json = RealJwks(2);
  ASSERT_FALSE(json.empty());
  const JwksDocument doc{json, 300, 7};
  ring_.Set(doc);
  httplib::Result res = client_->Get(kJwksPath);
  ASSERT_TRUE(res) << httplib::to_string(res.error());
  EXPECT_EQ(res->status, 200);
  EXPECT_EQ(res->body, json);
  EXPECT_EQ(res->get_header_value("Content-Type"), "application/json");
  EXPECT_EQ(res->get_header_value("Cache-Control"), "public, max-age=300");
  EXPECT_EQ(res->get_header_value("ETag"), JwksEntityTag(doc));
  EXPECT_TRUE(absl::StartsWith(JwksEntityTag(doc), "\"7-"))
      << JwksEntityTag(doc);
}

TEST_F(JwksHttpTest, AsksTheProviderAtEveryRequestSoTheDocumentFollowsTheRing) {
  const std::string first = RealJwks(1);
  const std::string second = RealJwks(2);
  ring_.Set(JwksDocument{first, 1, 3});
  httplib::Result a = client_->Get(kJwksPath);
  ASSERT_TRUE(a);
  EXPECT_EQ(a->body, first);
  const JwksDocument doc{second, 1, 9};
  ring_.Set(doc);
  httplib::Result b = client_->Get(kJwksPath);
  ASSERT_TRUE(b);
  EXPECT_EQ(b->body, second);
  EXPECT_EQ(b->get_header_value("ETag"), JwksEntityTag(doc));
  EXPECT_EQ(ring_.calls(), 2);
}

TEST_F(JwksHttpTest, NegativeMaxAgeIsServedAsZero) {
  ring_.Set(JwksDocument{RealJwks(1), -5, 1});
  httplib::Result res = client_->Get(kJwksPath);
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 200);
  EXPECT_EQ(res->get_header_value("Cache-Control"), "public, max-age=0");
}

TEST_F(JwksHttpTest, MatchingIfNoneMatchIs304WithoutABody) {
  // Ten requests in a row on one connection: on a loaded machine, ten
  // connections opened one after another were refused now and then (a
  // worker had not yet finished with an answered one; see the note on
  // ConnectionLimits in docs/OPERATIONS.md), which is not what this tests.
  client_->set_keep_alive(true);
  const std::string json = RealJwks(1);
  const JwksDocument doc{json, 60, 42};
  ring_.Set(doc);
  const std::string etag = JwksEntityTag(doc);
  const std::string opaque = etag.substr(1, etag.size() - 2);
  for (const std::string& tag :
       {etag, absl::StrCat("W/", etag), std::string("*"),
        absl::StrCat("\"1\", ", etag), absl::StrCat(" \"3\" ,W/", etag, " ")}) {
    SCOPED_TRACE(tag);
    httplib::Result res = client_->Get(kJwksPath, {{"If-None-Match", tag}});
    ASSERT_TRUE(res);
    EXPECT_EQ(res->status, 304);
    EXPECT_EQ(res->body, "");
    EXPECT_EQ(res->get_header_value("ETag"), etag);
    EXPECT_EQ(res->get_header_value("Cache-Control"), "public, max-age=60");
  }
  for (const std::string& tag :
       {std::string("\"42\""), absl::StrCat("\"", opaque, "0\""), opaque,
        std::string("\"4\", \"2\""), std::string("")}) {
    SCOPED_TRACE(tag);
    httplib::Result res = client_->Get(kJwksPath, {{"If-None-Match", tag}});
    ASSERT_TRUE(res);
    EXPECT_EQ(res->status, 200);
    EXPECT_EQ(res->body, json);
  }
}

TEST_F(JwksHttpTest, AnOldETagGetsTheNewDocumentOnceTheRingChanged) {
  ring_.Set(JwksDocument{RealJwks(1), 60, 5});
  httplib::Result first = client_->Get(kJwksPath);
  ASSERT_TRUE(first);
  const std::string etag = first->get_header_value("ETag");
  httplib::Result same = client_->Get(kJwksPath, {{"If-None-Match", etag}});
  ASSERT_TRUE(same);
  EXPECT_EQ(same->status, 304);
  const std::string next = RealJwks(2);
  const JwksDocument doc{next, 60, 6};
  ring_.Set(doc);
  httplib::Result changed = client_->Get(kJwksPath, {{"If-None-Match", etag}});
  ASSERT_TRUE(changed);
  EXPECT_EQ(changed->status, 200);
  EXPECT_EQ(changed->body, next);
  EXPECT_EQ(changed->get_header_value("ETag"), JwksEntityTag(doc));
}

// Another cluster's ring (rebuilt data dirs, or a new cluster behind the
// same URL) reaches the same small index with other keys: the index alone
// made the same ETag, and a verifier revalidating got 304, keeping the old
// keys for good while every new token named a kid it did not have.
TEST_F(JwksHttpTest, AnotherDocumentAtTheSameIndexIsNotAnswered304) {
  ring_.Set(JwksDocument{RealJwks(1), 60, 4});
  httplib::Result first = client_->Get(kJwksPath);
  ASSERT_TRUE(first);
  const std::string etag = first->get_header_value("ETag");
  const std::string rebuilt = RealJwks(1);
  ring_.Set(JwksDocument{rebuilt, 60, 4});
  httplib::Result again = client_->Get(kJwksPath, {{"If-None-Match", etag}});
  ASSERT_TRUE(again);
  EXPECT_EQ(again->status, 200);
  EXPECT_EQ(again->body, rebuilt);
  EXPECT_NE(again->get_header_value("ETag"), etag);
}

TEST_F(JwksHttpTest, HeadHasTheHeadersAndNoBody) {
  const JwksDocument doc{RealJwks(1), 10, 2};
  ring_.Set(doc);
  httplib::Result res = client_->Head(kJwksPath);
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 200);
  EXPECT_EQ(res->body, "");
  EXPECT_EQ(res->get_header_value("ETag"), JwksEntityTag(doc));
  EXPECT_EQ(res->get_header_value("Cache-Control"), "public, max-age=10");
}

TEST_F(JwksHttpTest, AFailingProviderIs503WithOneLineOfReason) {
  ring_.Set(absl::UnavailableError("no key ring applied yet\nretry later"));
  httplib::Result res = client_->Get(kJwksPath);
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 503);
  EXPECT_EQ(res->body,
            "jwks unavailable: no key ring applied yet retry later\n");
  EXPECT_EQ(res->get_header_value("Cache-Control"), "no-store");
  EXPECT_FALSE(res->has_header("ETag"));
  // A conditional GET cannot turn a failure into a 304.
  httplib::Result conditional =
      client_->Get(kJwksPath, {{"If-None-Match", "*"}});
  ASSERT_TRUE(conditional);
  EXPECT_EQ(conditional->status, 503);

  const std::string json = RealJwks(1);
  ring_.Set(JwksDocument{json, 1, 1});
  httplib::Result recovered = client_->Get(kJwksPath);
  ASSERT_TRUE(recovered);
  EXPECT_EQ(recovered->status, 200);
  EXPECT_EQ(recovered->body, json);
}

TEST_F(JwksHttpTest, EverythingElseIs404) {
  ring_.Set(JwksDocument{RealJwks(1), 10, 2});
  for (const char* path :
       {"/", "/jwks.json", "/.well-known/jwks.json/", "/.well-known/",
        "/.well-known/jwks.json.bak", "/metrics", "/healthz"}) {
    SCOPED_TRACE(path);
    httplib::Result res = client_->Get(path);
    ASSERT_TRUE(res);
    EXPECT_EQ(res->status, 404);
  }
}

// Only GET and HEAD: another method is 405, answered before its body is
// read. Routed as before, httplib read a POST's body of any size into
// memory (its default limit is SIZE_MAX) and then said 404, so one POST with
// a large Content-Length could exhaust a node's memory through an endpoint
// meant to face app servers. (A raw socket sending a POST that announces
// 1 GB and no body gets its 405 at once.)
TEST_F(JwksHttpTest, OnlyGetAndHeadAndNoBodyIsRead) {
  ring_.Set(JwksDocument{RealJwks(1), 10, 2});
  httplib::Result empty = client_->Post(kJwksPath, "", "application/json");
  ASSERT_TRUE(empty);
  EXPECT_EQ(empty->status, 405);
  EXPECT_EQ(empty->get_header_value("Allow"), "GET, HEAD");
  EXPECT_NE(empty->body, ring_.Get()->json);
  // Small enough to be sent whole before the answer (a large one is cut
  // off mid-send, which this client reports as a failed call).
  httplib::Result with_body =
      client_->Post(kJwksPath, std::string(64, 'x'), "text/plain");
  ASSERT_TRUE(with_body);
  EXPECT_EQ(with_body->status, 405);
  httplib::Result get = client_->Get(kJwksPath);
  ASSERT_TRUE(get);
  EXPECT_EQ(get->status, 200);
}

// A TCP connection to `address` (127.0.0.1:port), or -1.
int ConnectTo(const std::string& address) {
  int port = 0;
  if (!absl::SimpleAtoi(address.substr(address.rfind(':') + 1), &port)) {
    return -1;
  }
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return -1;
  sockaddr_in to{};
  to.sin_family = AF_INET;
  to.sin_port = htons(static_cast<uint16_t>(port));
  to.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, reinterpret_cast<sockaddr*>(&to), sizeof(to)) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

// A client that sends its request a byte at a time, each byte within the
// read timeout, held the endpoint's one thread for as long as it went on:
// the JWKS (and /metrics, /healthz) went unanswered, and Stop waited for
// it. A connection now ends when its request is not read within
// HttpEndpoint::kRequestLimit (1 s; one holding the thread 10 s,
// kConnectionLimit, let a few such clients keep a health probe waiting
// past its timeout).
TEST_F(JwksHttpTest, AClientTricklingItsRequestIsCutOffAtTheLimit) {
  ring_.Set(JwksDocument{RealJwks(1), 10, 2});
  const std::string address = server_->address();
  const int fd = ConnectTo(address);
  ASSERT_GE(fd, 0);
  std::atomic<bool> cut{false};
  // Bounded: 120 bytes, 500 ms apart (60 s), or until the server cuts it.
  std::thread trickler([&] {
    const std::string head = "GET /.well-known/jwks.json HTTP/1.1\r\nX-Slow: ";
    if (send(fd, head.data(), head.size(), MSG_NOSIGNAL) < 0) return;
    for (int i = 0; i < 120; ++i) {
      absl::SleepFor(absl::Milliseconds(500));
      if (send(fd, "a", 1, MSG_NOSIGNAL) < 0) {
        cut.store(true);
        return;
      }
    }
  });
  absl::SleepFor(absl::Milliseconds(200));  // the trickler is served first
  // Its own read timeout (30 s) is a correctness bound: with the trickler
  // holding the thread for 60 s, it ran out.
  httplib::Client patient("http://" + address);
  patient.set_read_timeout(30, 0);
  httplib::Result res = patient.Get(kJwksPath);
  trickler.join();  // ends at its first send after the cut
  close(fd);
  ASSERT_TRUE(res) << httplib::to_string(res.error());
  EXPECT_EQ(res->status, 200);
  EXPECT_TRUE(cut.load()) << "the trickling connection was not closed";
  EXPECT_EQ(server_->connections_cut_for_slow_request(), 1u);
}

// A connection to `address` (127.0.0.1:port) from `source` (any loopback
// address: 127.0.0.2 is another client to the endpoint), with 20 s send
// and receive timeouts; -1 when it cannot connect.
int ConnectFrom(const std::string& source, const std::string& address) {
  int port = 0;
  if (!absl::SimpleAtoi(address.substr(address.rfind(':') + 1), &port)) {
    return -1;
  }
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return -1;
  timeval timeout{20, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, sizeof timeout);
  sockaddr_in from{};
  from.sin_family = AF_INET;
  sockaddr_in to{};
  to.sin_family = AF_INET;
  to.sin_port = htons(static_cast<uint16_t>(port));
  if (inet_pton(AF_INET, source.c_str(), &from.sin_addr) != 1 ||
      inet_pton(AF_INET, "127.0.0.1", &to.sin_addr) != 1 ||
      bind(fd, reinterpret_cast<sockaddr*>(&from), sizeof(from)) != 0 ||
      connect(fd, reinterpret_cast<sockaddr*>(&to), sizeof(to)) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

// Sends a GET of the JWKS over `fd` (and returns `fd`).
int SendGet(int fd) {
  const std::string request = absl::StrCat(
      "GET ", kJwksPath, " HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
  if (fd >= 0) send(fd, request.data(), request.size(), MSG_NOSIGNAL);
  return fd;
}

// Reads the answer over `fd` and closes it: its status line, "" when the
// connection closed (or timed out) without one, "no connection" when `fd`
// is not one.
std::string AnswerOn(int fd) {
  if (fd < 0) return "no connection";
  std::string answer;
  char buffer[4096];
  ssize_t n = 0;
  while ((n = recv(fd, buffer, sizeof buffer, 0)) > 0) answer.append(buffer, n);
  close(fd);
  return answer.substr(0, answer.find("\r\n"));
}

// GETs the JWKS over `fd` and closes it (AnswerOn).
std::string GetOver(int fd) { return AnswerOn(SendGet(fd)); }

// A request that stalls (here: its provider call waits) holds one worker:
// another client is answered meanwhile. With the endpoint's one thread,
// it waited for the stalled one, past its own timeout.
TEST_F(JwksHttpTest, AStalledRequestDoesNotHoldTheOthers) {
  ring_.Set(JwksDocument{RealJwks(1), 10, 2});
  ring_.HoldNext(1);
  const std::string address = server_->address();
  std::string stalled_answer;
  std::thread stalled(
      [&] { stalled_answer = GetOver(ConnectFrom("127.0.0.1", address)); });
  ASSERT_TRUE(ring_.WaitHeld(1));
  EXPECT_EQ(GetOver(ConnectFrom("127.0.0.2", address)), "HTTP/1.1 200 OK");
  ring_.Release();
  stalled.join();
  EXPECT_EQ(stalled_answer, "HTTP/1.1 200 OK");
}

// Holds every worker: kWorkers requests, two from each of 127.0.0.1 and
// 127.0.0.2, each stalled in the provider; their answers land in
// `answers` once released.
class HeldWorkers {
 public:
  HeldWorkers(FakeRing& ring, const std::string& address) : ring_(ring) {
    ring_.HoldNext(HttpEndpoint::kWorkers);
    for (int i = 0; i < HttpEndpoint::kWorkers; ++i) {
      const std::string source = i < 2 ? "127.0.0.1" : "127.0.0.2";
      threads_.emplace_back([this, i, source, address] {
        answers_[i] = GetOver(ConnectFrom(source, address));
      });
    }
  }
  bool Held() { return ring_.WaitHeld(HttpEndpoint::kWorkers); }
  // Releases them; their answers.
  std::vector<std::string> Release() {
    ring_.Release();
    for (std::thread& thread : threads_) thread.join();
    threads_.clear();
    return std::vector<std::string>(std::begin(answers_), std::end(answers_));
  }
  ~HeldWorkers() {
    if (!threads_.empty()) Release();
  }

 private:
  FakeRing& ring_;
  std::string answers_[HttpEndpoint::kWorkers];
  std::vector<std::thread> threads_;
};

// While every worker is busy, a client address with
// kMaxConnectionsPerClient connections already gets no more: closed
// unanswered as accepted. Another client waits for a worker and is served.
TEST_F(JwksHttpTest, OneClientHoldsNoMoreThanItsShareOfWorkers) {
  ASSERT_EQ(HttpEndpoint::kWorkers, 4);
  ASSERT_EQ(HttpEndpoint::kMaxConnectionsPerClient, 2);
  ring_.Set(JwksDocument{RealJwks(1), 10, 2});
  const std::string address = server_->address();
  HeldWorkers held(ring_, address);
  ASSERT_TRUE(held.Held());
  EXPECT_EQ(GetOver(ConnectFrom("127.0.0.1", address)), "");
  EXPECT_EQ(server_->connections_refused(), 1u);
  const int waiting = SendGet(ConnectFrom("127.0.0.3", address));
  ASSERT_GE(waiting, 0);
  for (const std::string& answer : held.Release()) {
    EXPECT_EQ(answer, "HTTP/1.1 200 OK");
  }
  EXPECT_EQ(AnswerOn(waiting), "HTTP/1.1 200 OK");
  EXPECT_EQ(server_->connections_refused(), 1u);
}

// Clients that share an address (behind a NAT, or on one host) are served
// past the per-client limit while that leaves a worker free, never to the
// last worker: another client still gets it.
TEST_F(JwksHttpTest, ClientsSharingAnAddressAreServedButNeverHoldEveryWorker) {
  ASSERT_EQ(HttpEndpoint::kWorkers, 4);
  ASSERT_EQ(HttpEndpoint::kMaxConnectionsPerClient, 2);
  ring_.Set(JwksDocument{RealJwks(1), 10, 2});
  ring_.HoldNext(3);
  const std::string address = server_->address();
  std::vector<std::thread> stalled;
  std::string answers[3];
  for (std::string& answer : answers) {
    stalled.emplace_back(
        [&] { answer = GetOver(ConnectFrom("127.0.0.1", address)); });
  }
  ASSERT_TRUE(ring_.WaitHeld(3));  // the third past the limit: two were free
  EXPECT_EQ(server_->connections_refused(), 0u);
  // The fourth would take the last worker: refused; another client gets it.
  EXPECT_EQ(GetOver(ConnectFrom("127.0.0.1", address)), "");
  EXPECT_EQ(server_->connections_refused(), 1u);
  EXPECT_EQ(GetOver(ConnectFrom("127.0.0.2", address)), "HTTP/1.1 200 OK");
  ring_.Release();
  for (std::thread& thread : stalled) thread.join();
  for (const std::string& answer : answers) {
    EXPECT_EQ(answer, "HTTP/1.1 200 OK");
  }
}

// kMaxWaiting connections wait for a worker; the next is closed unanswered
// as accepted. A request that waited (longer than kRequestLimit) is not
// cut as slow: its limits run from when a worker takes it.
TEST_F(JwksHttpTest, TheWaitingLineIsBoundedAndWaitingIsNotSlowness) {
  ASSERT_EQ(HttpEndpoint::kMaxWaiting, 32u);
  ring_.Set(JwksDocument{RealJwks(1), 10, 2});
  const std::string address = server_->address();
  HeldWorkers held(ring_, address);
  ASSERT_TRUE(held.Held());
  std::vector<int> waiting;
  for (int i = 0; i < 32; ++i) {
    // Two each from 127.0.0.10 on: within the per-client limit.
    const int fd =
        SendGet(ConnectFrom(absl::StrCat("127.0.0.", 10 + i / 2), address));
    ASSERT_GE(fd, 0);
    waiting.push_back(fd);
  }
  EXPECT_EQ(GetOver(ConnectFrom("127.0.0.50", address)), "");
  EXPECT_EQ(server_->connections_refused(), 1u);
  absl::SleepFor(absl::Milliseconds(1500));  // past kRequestLimit
  for (const std::string& answer : held.Release()) {
    EXPECT_EQ(answer, "HTTP/1.1 200 OK");
  }
  for (int fd : waiting) EXPECT_EQ(AnswerOn(fd), "HTTP/1.1 200 OK");
  EXPECT_EQ(server_->connections_cut_for_slow_request(), 0u);
}

// The JWT review's finding: some 30 idle connections (sending nothing)
// each held the endpoint's one thread for kRequestLimit in turn, so a
// verifier's fetch waited about 30 s. Now they hold the workers for at most
// kRequestLimit and the rest are refused as they come: the fetch waits for
// the first worker to be freed.
TEST_F(JwksHttpTest, IdleConnectionsDoNotDelayAFetch) {
  ring_.Set(JwksDocument{RealJwks(1), 10, 2});
  const std::string address = server_->address();
  std::vector<int> idle;
  for (int i = 0; i < 30; ++i) {
    const int fd = ConnectFrom("127.0.0.1", address);
    ASSERT_GE(fd, 0);
    idle.push_back(fd);
  }
  EXPECT_EQ(GetOver(ConnectFrom("127.0.0.2", address)), "HTTP/1.1 200 OK");
  EXPECT_GE(server_->connections_refused(), 1u);
  for (int fd : idle) close(fd);
}

// httplib 0.11 builds every range a Range header asks for in memory before
// it writes any: one request of 8 KiB asked for thousands of copies of the
// document. A Range request is refused, with no body.
TEST_F(JwksHttpTest, ARangeRequestIsRefused) {
  ring_.Set(JwksDocument{RealJwks(1), 10, 2});
  std::string ranges = "bytes=0-";
  while (ranges.size() < 8000) ranges += ",0-";
  httplib::Result res = client_->Get(kJwksPath, {{"Range", ranges}});
  ASSERT_TRUE(res) << httplib::to_string(res.error());
  EXPECT_EQ(res->status, 416);
  EXPECT_TRUE(res->body.empty()) << res->body.size() << " bytes";
  httplib::Result whole = client_->Get(kJwksPath);
  ASSERT_TRUE(whole) << httplib::to_string(whole.error());
  EXPECT_EQ(whole->status, 200);
}

// Resident memory of this process in MiB (VmRSS), or -1.
int64_t SelfRssMiB() {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line)) {
    if (!absl::StartsWith(line, "VmRSS:")) continue;
    int64_t kib = 0;
    std::string digits;
    for (char c : line) {
      if (c >= '0' && c <= '9') digits += c;
    }
    return absl::SimpleAtoi(digits, &kib) ? kib / 1024 : -1;
  }
  return -1;
}

// httplib reads a header line into memory whatever its length: a client
// sending one without end grew the server's memory by as much (here, in
// this process, by the 128 MiB sent and more). The connection is now cut
// once its client sent more than HttpEndpoint::kMaxBytesReceived.
TEST_F(JwksHttpTest, AHeaderLineWithoutEndIsCutOff) {
  ring_.Set(JwksDocument{RealJwks(1), 10, 2});
  const int64_t rss_before = SelfRssMiB();
  ASSERT_GT(rss_before, 0);
  const int fd = ConnectTo(server_->address());
  ASSERT_GE(fd, 0);
  const std::string head = "GET /.well-known/jwks.json HTTP/1.1\r\nX-Long: ";
  ASSERT_EQ(send(fd, head.data(), head.size(), MSG_NOSIGNAL),
            static_cast<ssize_t>(head.size()));
  // A liveness bound, not a speed figure: the cut resets the connection, so
  // a send blocked on a full window fails at once. Cut with a FIN only, it
  // probed a zero window for about 106 s.
  const timeval send_bound{30, 0};
  ASSERT_EQ(
      setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &send_bound, sizeof(send_bound)),
      0);
  const std::string chunk(1 << 20, 'a');
  size_t sent = 0;
  int send_error = 0;
  for (int i = 0; i < 128; ++i) {  // bounded: 128 MiB
    const ssize_t n = send(fd, chunk.data(), chunk.size(), MSG_NOSIGNAL);
    if (n < 0) {
      send_error = errno;
      break;  // cut off
    }
    sent += static_cast<size_t>(n);
  }
  const int64_t rss_after = SelfRssMiB();
  close(fd);
  EXPECT_LT(sent, size_t{128} << 20) << "never cut off";
  EXPECT_TRUE(send_error == ECONNRESET || send_error == EPIPE)
      << "the cut did not reset the connection: " << std::strerror(send_error);
  EXPECT_LT(rss_after - rss_before, 32)
      << "RSS " << rss_before << " -> " << rss_after << " MiB";
  httplib::Result res = client_->Get(kJwksPath);  // and the next is served
  ASSERT_TRUE(res) << httplib::to_string(res.error());
  EXPECT_EQ(res->status, 200);
}

TEST_F(JwksHttpTest, StopClosesTheListenerAndIsIdempotent) {
  ring_.Set(JwksDocument{RealJwks(1), 10, 2});
  httplib::Result before = client_->Get(kJwksPath);
  ASSERT_TRUE(before);
  EXPECT_EQ(before->status, 200);
  server_->Stop();
  server_->Stop();
  httplib::Result after = client_->Get(kJwksPath);
  EXPECT_FALSE(after);
}

TEST(JwksHttpStartTest, RefusesBadAddressesAndAMissingProvider) {
  auto provider = [] {
    return absl::StatusOr<JwksDocument>(JwksDocument{"{\"keys\":[]}", 1, 1});
  };
  for (const char* listen : {"", "127.0.0.1", ":80", "127.0.0.1:x",
                             "127.0.0.1:-1", "127.0.0.1:65536"}) {
    SCOPED_TRACE(listen);
    absl::StatusOr<std::unique_ptr<JwksHttpServer>> s =
        JwksHttpServer::Start({listen, provider});
    EXPECT_EQ(s.status().code(), absl::StatusCode::kInvalidArgument);
  }
  absl::StatusOr<std::unique_ptr<JwksHttpServer>> no_provider =
      JwksHttpServer::Start({"127.0.0.1:0", nullptr});
  EXPECT_EQ(no_provider.status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(JwksHttpStartTest, APortInUseIsUnavailable) {
  auto provider = [] {
    return absl::StatusOr<JwksDocument>(JwksDocument{"{\"keys\":[]}", 1, 1});
  };
  absl::StatusOr<std::unique_ptr<JwksHttpServer>> first =
      JwksHttpServer::Start({"127.0.0.1:0", provider});
  ASSERT_TRUE(first.ok()) << first.status();
  absl::StatusOr<std::unique_ptr<JwksHttpServer>> second =
      JwksHttpServer::Start({(*first)->address(), provider});
  EXPECT_EQ(second.status().code(), absl::StatusCode::kUnavailable)
      << second.status();
  // The first still answers.
  httplib::Result res = ClientFor((*first)->address())->Get(kJwksPath);
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 200);
}

// The JWKS is public: every app server that checks tokens must read it.
TEST(JwksHttpStartTest, NeverRequiresAClientCertificate) {
  JwksHttpOptions options;
  options.listen = "127.0.0.1:0";
  options.provider = [] {
    return absl::StatusOr<JwksDocument>(absl::InternalError("x"));
  };
  options.tls = HttpTlsOptions{.cert_file = "c.pem",
                               .key_file = "k.pem",
                               .ca_file = "ca.pem",
                               .require_client_cert = true};
  absl::StatusOr<std::unique_ptr<JwksHttpServer>> s =
      JwksHttpServer::Start(std::move(options));
  EXPECT_EQ(s.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StrContains(s.status().message(), "client certificate"))
      << s.status();
}

TEST(JwksHttpStartTest, StopRightAfterStartReturns) {
  for (int i = 0; i < 20; ++i) {
    absl::StatusOr<std::unique_ptr<JwksHttpServer>> s = JwksHttpServer::Start(
        {"127.0.0.1:0", [] {
           return absl::StatusOr<JwksDocument>(absl::InternalError("x"));
         }});
    ASSERT_TRUE(s.ok()) << s.status();
    (*s)->Stop();
  }
}

TEST(IfNoneMatchTest, WeakComparisonOverAList) {
  EXPECT_TRUE(IfNoneMatchMatches("\"5\"", "\"5\""));
  EXPECT_TRUE(IfNoneMatchMatches("W/\"5\"", "\"5\""));
  EXPECT_TRUE(IfNoneMatchMatches(" * ", "\"5\""));
  EXPECT_TRUE(IfNoneMatchMatches("\"4\",\"5\"", "\"5\""));
  EXPECT_FALSE(IfNoneMatchMatches("\"55\"", "\"5\""));
  EXPECT_FALSE(IfNoneMatchMatches("5", "\"5\""));
  EXPECT_FALSE(IfNoneMatchMatches("", "\"5\""));
  EXPECT_FALSE(IfNoneMatchMatches("\"4\", *x", "\"5\""));
}

}  // namespace
}  // namespace sessiond::server
