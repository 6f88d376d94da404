// Copyright sessiond authors. Licensed under the Apache License 2.0.
//
// The key-rotation drill (issue 7, part 3: "Signing keys that cannot lock
// users out"), on a real 3-node cluster on loopback, every node with the
// same key-encryption key, a JWKS max-age of 1 s and its JWKS on HTTP
// (--jwks_listen):
//
//  - a load thread creates JWT sessions through random nodes and, after
//    each, checks every token issued so far twice: locally, as an app server
//    does (signing::JwtVerifier over the JWKS fetched with cpp-httplib from a
//    random node, re-fetched once when a token names a kid it does not
//    hold), and by the store (BatchValidateSessions and one ValidateSession
//    through random nodes);
//  - meanwhile the key is rotated three times (StageKey, then ActivateKey
//    polled until accepted), the leader killed with SIGKILL during the
//    second rotation and restarted; no validation of either kind fails;
//  - then retiring the first key, which signed live sessions, is refused
//    with their count and changes nothing; forced with that count it
//    retires: its tokens stop verifying locally (the kid left every node's
//    JWKS) while the store still answers VALID for them. That is the
//    design: the store keeps each token's SHA-256 and judges the session,
//    never the signature (session.proto, TokenFormat; the state machine's
//    Retire changes the ring only), so a retired key locks nobody out of
//    the store, and an app server that trusts only the JWKS sends those
//    users to log in again. Revoke the sessions (RevokeUserSessions,
//    BulkRevoke) to end them everywhere.
//
// Every loop is bounded in count and time; nothing asserts how long
// anything took.
#include <grpcpp/grpcpp.h>
#include <httplib.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "common/key_encryption.h"
#include "common/rng.h"
#include "common/signing.h"
#include "google/protobuf/util/message_differencer.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "sessiond/v1/admin.grpc.pb.h"
#include "sessiond/v1/keys.pb.h"
#include "sessiond/v1/session.grpc.pb.h"
#include "tests/integration/cluster_harness.h"

namespace sessiond::testing {
namespace {

using sessiond::v1::ValidateSessionResponse;

constexpr int64_t kJwksMaxAgeMs = 1'000;
constexpr int64_t kTtlMs = 30 * 60 * 1000;  // outlives the test
// Clock skew an app server allows for iat/exp: the nodes' cluster time and
// this process's clock are the same host's, but iat is in whole seconds.
constexpr int64_t kLeewayMs = 5'000;
constexpr size_t kMaxTokens = 1'500;
constexpr int kRotations = 3;
constexpr int kKillDuringRotation = 1;  // the second one

int64_t NowMs() { return absl::ToUnixMillis(absl::Now()); }

// One JWKS document as fetched over HTTP.
struct FetchedJwks {
  std::vector<signing::PublicSigningKey> keys;
  std::string body;
  std::string etag;
  int64_t max_age_s = -1;
};

// The keys of a JWKS body, as an app server reads them: OKP/Ed25519 entries
// with a kid and a 32-byte x.
absl::StatusOr<std::vector<signing::PublicSigningKey>> ParseJwks(
    const std::string& body) {
  const nlohmann::json doc = nlohmann::json::parse(body, nullptr, false);
  if (doc.is_discarded() || !doc.is_object() || !doc.contains("keys") ||
      !doc["keys"].is_array()) {
    return absl::InvalidArgumentError(absl::StrCat("not a JWKS: ", body));
  }
  std::vector<signing::PublicSigningKey> keys;
  for (const nlohmann::json& jwk : doc["keys"]) {
    if (!jwk.is_object() || jwk.value("kty", "") != "OKP" ||
        jwk.value("crv", "") != "Ed25519" || !jwk.contains("kid") ||
        !jwk["kid"].is_string() || !jwk.contains("x") ||
        !jwk["x"].is_string()) {
      return absl::InvalidArgumentError(absl::StrCat("bad JWK: ", jwk.dump()));
    }
    absl::StatusOr<std::string> x =
        signing::Base64UrlDecode(jwk["x"].get<std::string>());
    if (!x.ok()) return x.status();
    keys.push_back({jwk["kid"].get<std::string>(), *std::move(x)});
  }
  return keys;
}

// GET /.well-known/jwks.json from `address` (host:port), checking the
// headers the endpoint promises.
absl::StatusOr<FetchedJwks> FetchJwks(const std::string& address) {
  const size_t colon = address.rfind(':');
  int port = 0;
  if (colon == std::string::npos ||
      !absl::SimpleAtoi(address.substr(colon + 1), &port)) {
    return absl::InvalidArgumentError(address);
  }
  httplib::Client http(address.substr(0, colon), port);
  http.set_connection_timeout(2, 0);
  http.set_read_timeout(5, 0);
  httplib::Result res = http.Get("/.well-known/jwks.json");
  if (!res) {
    return absl::UnavailableError(absl::StrCat(
        "GET jwks from ", address, ": ", httplib::to_string(res.error())));
  }
  if (res->status != 200) {
    return absl::UnavailableError(absl::StrCat("GET jwks from ", address, ": ",
                                               res->status, " ", res->body));
  }
  if (res->get_header_value("Content-Type") != "application/json") {
    return absl::InternalError(absl::StrCat(
        "jwks Content-Type: ", res->get_header_value("Content-Type")));
  }
  FetchedJwks fetched;
  const std::string cache_control = res->get_header_value("Cache-Control");
  absl::string_view cache = cache_control;
  if (!absl::ConsumePrefix(&cache, "public, max-age=") ||
      !absl::SimpleAtoi(cache, &fetched.max_age_s)) {
    return absl::InternalError(
        absl::StrCat("jwks Cache-Control: ", cache_control));
  }
  fetched.etag = res->get_header_value("ETag");
  fetched.body = res->body;
  absl::StatusOr<std::vector<signing::PublicSigningKey>> keys =
      ParseJwks(res->body);
  if (!keys.ok()) return keys.status();
  fetched.keys = *std::move(keys);
  return fetched;
}

bool HasKid(const std::vector<signing::PublicSigningKey>& keys,
            const std::string& kid) {
  return std::any_of(keys.begin(), keys.end(),
                     [&](const auto& k) { return k.kid == kid; });
}

// The kid in a JWT's header (what an app server looks up), or "".
std::string HeaderKid(const std::string& token) {
  const std::vector<std::string> parts = absl::StrSplit(token, '.');
  if (parts.size() != 3) return "";
  absl::StatusOr<std::string> header = signing::Base64UrlDecode(parts[0]);
  if (!header.ok()) return "";
  const nlohmann::json doc = nlohmann::json::parse(*header, nullptr, false);
  if (doc.is_discarded() || !doc.is_object()) return "";
  return doc.value("kid", "");
}

// An app server's verifier: the JWKS fetched from a random node over HTTP
// and re-fetched (from a random node, once) when a token names a kid it
// does not hold, or when it is older than its max-age. Not thread-safe:
// one owner.
class AppServerVerifier {
 public:
  AppServerVerifier(std::vector<std::string> jwks_addresses, uint64_t seed)
      : addresses_(std::move(jwks_addresses)), rng_(seed) {}

  // Fetches from a random node, trying the others when it does not answer
  // (a node down, restarting): as an app server behind a load balancer.
  absl::Status Refresh() {
    const size_t first = rng_.Uniform(addresses_.size());
    absl::Status last = absl::UnavailableError("no JWKS address");
    for (size_t i = 0; i < addresses_.size(); ++i) {
      const int64_t asked_at = NowMs();
      absl::StatusOr<FetchedJwks> fetched =
          FetchJwks(addresses_[(first + i) % addresses_.size()]);
      if (!fetched.ok()) {
        ++fetch_errors_;
        last = fetched.status();
        continue;
      }
      absl::StatusOr<std::unique_ptr<signing::JwtVerifier>> verifier =
          signing::JwtVerifier::Create(fetched->keys);
      if (!verifier.ok()) return verifier.status();
      verifier_ = *std::move(verifier);
      // The cache's age counts from before the request was sent.
      expires_at_ms_ = asked_at + fetched->max_age_s * 1000;
      ++fetches_;
      return absl::OkStatus();
    }
    return last;
  }

  // Verifies `token` as of now. With `refetch_unknown` a kid unknown to the
  // cached document triggers one re-fetch; without, the cache is trusted
  // for its max-age (what the activation delay is there for).
  absl::StatusOr<signing::VerifiedJwt> Verify(const std::string& token,
                                              bool refetch_unknown) {
    if (verifier_ == nullptr || NowMs() >= expires_at_ms_) {
      if (absl::Status s = Refresh(); !s.ok()) return s;
    }
    absl::StatusOr<signing::VerifiedJwt> verified =
        verifier_->Verify(token, NowMs(), kLeewayMs);
    if (verified.ok() || !refetch_unknown ||
        signing::JwtErrorOf(verified.status()) !=
            signing::JwtError::kUnknownKid) {
      return verified;
    }
    ++unknown_kid_refetches_;
    if (absl::Status s = Refresh(); !s.ok()) return s;
    return verifier_->Verify(token, NowMs(), kLeewayMs);
  }

  int fetches() const { return fetches_; }
  int fetch_errors() const { return fetch_errors_; }
  int unknown_kid_refetches() const { return unknown_kid_refetches_; }

 private:
  const std::vector<std::string> addresses_;
  Rng rng_;
  std::unique_ptr<signing::JwtVerifier> verifier_;
  int64_t expires_at_ms_ = 0;
  int fetches_ = 0;
  int fetch_errors_ = 0;
  int unknown_kid_refetches_ = 0;
};

struct IssuedToken {
  std::string token;
  std::string session_id;
  std::string user_id;
  std::string kid;  // Session.signing_kid
};

// The load: on its own thread, until Stop() or `max_iterations` or
// `max_time`, creates one JWT session through a random node (retried on
// another while none can take it), then validates every token issued so
// far locally (AppServerVerifier, re-fetching on an unknown kid) and by the
// store (one BatchValidateSessions of all of them and one ValidateSession
// of a random one, through random nodes, retried on another node when the
// call itself fails). Counts every failure and keeps the first messages.
//
// Threads: the load thread owns the verifiers, stubs and Rng; issued_,
// stats and failures are shared with the test thread under mu_.
class RotationLoad {
 public:
  RotationLoad(const ClusterHarness& cluster,
               std::vector<std::string> jwks_addresses, int max_iterations,
               absl::Duration max_time)
      : verifier_(jwks_addresses, 7), strict_(jwks_addresses, 11) {
    for (int id : cluster.ids()) {
      ids_.push_back(id);
      stubs_.push_back(cluster.Stub(id));
    }
    thread_ = std::thread(
        [this, max_iterations, max_time] { Run(max_iterations, max_time); });
  }
  ~RotationLoad() { Stop(); }

  void Stop() {
    stop_.store(true);
    if (thread_.joinable()) thread_.join();
  }
  // Calls go to other nodes while one is down (0: none).
  void SetDown(int id) { down_.store(id); }

  struct Stats {
    int iterations = 0;
    int creates = 0;
    int create_retries = 0;
    int create_failures = 0;   // gave up, or refused for good
    int create_ambiguous = 0;  // deadline passed: may have been created
    int64_t local_checks = 0;
    int64_t local_failures = 0;
    int64_t store_checks = 0;
    int64_t store_failures = 0;
    int store_call_retries = 0;
    // Kids a verifier that trusts its cache for the whole max-age did not
    // know (reported, not asserted: see the test).
    int64_t strict_unknown_kid = 0;
    int fetches = 0;
    int fetch_errors = 0;
    int unknown_kid_refetches = 0;
  };
  Stats stats() const {
    absl::MutexLock lock(&mu_);
    return stats_;
  }
  std::vector<IssuedToken> issued() const {
    absl::MutexLock lock(&mu_);
    return issued_;
  }
  int IssuedWithKid(const std::string& kid) const {
    absl::MutexLock lock(&mu_);
    return static_cast<int>(
        std::count_if(issued_.begin(), issued_.end(),
                      [&](const IssuedToken& t) { return t.kid == kid; }));
  }
  std::vector<std::string> failures() const {
    absl::MutexLock lock(&mu_);
    return failures_;
  }
  bool done() const { return done_.load(); }

 private:
  void Failure(std::string what) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (failures_.size() < 20) failures_.push_back(std::move(what));
  }

  // A random node's index, not the one down.
  size_t Pick() {
    for (int attempt = 0; attempt < 10; ++attempt) {
      const size_t i = rng_.Uniform(ids_.size());
      if (ids_[i] != down_.load()) return i;
    }
    return rng_.Uniform(ids_.size());
  }

  void Create(int n) {
    sessiond::v1::CreateSessionRequest request;
    request.set_user_id(absl::StrCat("rot-", n % 97));
    request.set_ttl_ms(kTtlMs);
    request.set_token_format(sessiond::v1::TOKEN_FORMAT_JWT);
    grpc::Status s;
    for (int attempt = 0; attempt < 100 && !stop_.load(); ++attempt) {
      sessiond::v1::CreateSessionResponse response;
      grpc::ClientContext context;
      SetDeadline(&context, absl::Seconds(5));
      s = stubs_[Pick()]->CreateSession(&context, request, &response);
      if (s.ok()) {
        IssuedToken t{response.token(), response.session().session_id(),
                      request.user_id(), response.session().signing_kid()};
        absl::MutexLock lock(&mu_);
        ++stats_.creates;
        if (t.kid.empty() || HeaderKid(t.token) != t.kid) {
          ++stats_.create_failures;
          Failure(absl::StrCat("create: signing_kid \"", t.kid,
                               "\" but the JWT header says \"",
                               HeaderKid(t.token), "\""));
        }
        issued_.push_back(std::move(t));
        return;
      }
      if (s.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED) {
        absl::MutexLock lock(&mu_);
        ++stats_.create_ambiguous;
      }
      if (s.error_code() != grpc::StatusCode::UNAVAILABLE &&
          s.error_code() != grpc::StatusCode::DEADLINE_EXCEEDED) {
        break;
      }
      {
        absl::MutexLock lock(&mu_);
        ++stats_.create_retries;
      }
      absl::SleepFor(absl::Milliseconds(100));
    }
    if (stop_.load() &&
        (s.ok() || s.error_code() == grpc::StatusCode::UNAVAILABLE ||
         s.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED)) {
      return;  // stopped before or while retrying: abandoned, not failed
    }
    absl::MutexLock lock(&mu_);
    ++stats_.create_failures;
    Failure(absl::StrCat("create: ", static_cast<int>(s.error_code()), " ",
                         s.error_message()));
  }

  void CheckLocally(const std::vector<IssuedToken>& tokens) {
    int64_t failures = 0;
    int64_t strict_unknown = 0;
    for (const IssuedToken& t : tokens) {
      absl::StatusOr<signing::VerifiedJwt> v = verifier_.Verify(t.token, true);
      std::string problem;
      if (!v.ok()) {
        problem = v.status().ToString();
      } else if (v->kid != t.kid || v->claims.sid != t.session_id ||
                 v->claims.sub != t.user_id) {
        problem = absl::StrCat("claims: kid ", v->kid, " sid ", v->claims.sid,
                               " sub ", v->claims.sub);
      }
      if (!problem.empty()) {
        ++failures;
        absl::MutexLock lock(&mu_);
        Failure(absl::StrCat("local ", t.session_id, " (kid ", t.kid,
                             "): ", problem));
      }
      absl::StatusOr<signing::VerifiedJwt> strict =
          strict_.Verify(t.token, false);
      if (!strict.ok() && signing::JwtErrorOf(strict.status()) ==
                              signing::JwtError::kUnknownKid) {
        ++strict_unknown;
      }
    }
    absl::MutexLock lock(&mu_);
    stats_.local_checks += static_cast<int64_t>(tokens.size());
    stats_.local_failures += failures;
    stats_.strict_unknown_kid += strict_unknown;
  }

  // One call through random nodes, retried on another while the call itself
  // fails (a node down or electing); false when every attempt failed.
  template <typename Call>
  bool ThroughRandomNodes(Call call, grpc::Status* last) {
    // Not cut short by Stop(): a check begun is finished (bounded).
    for (int attempt = 0; attempt < 20; ++attempt) {
      *last = call(*stubs_[Pick()]);
      if (last->ok()) return true;
      {
        absl::MutexLock lock(&mu_);
        ++stats_.store_call_retries;
      }
      absl::SleepFor(absl::Milliseconds(100));
    }
    return false;
  }

  void CheckInStore(const std::vector<IssuedToken>& tokens) {
    int64_t failures = 0;
    sessiond::v1::BatchValidateSessionsRequest batch;
    for (const IssuedToken& t : tokens) {
      batch.add_requests()->set_token(t.token);
    }
    sessiond::v1::BatchValidateSessionsResponse answers;
    grpc::Status s;
    const bool ok = ThroughRandomNodes(
        [&](sessiond::v1::SessionService::Stub& stub) {
          grpc::ClientContext context;
          SetDeadline(&context, absl::Seconds(5));
          answers.Clear();
          return stub.BatchValidateSessions(&context, batch, &answers);
        },
        &s);
    if (!ok || answers.responses_size() != static_cast<int>(tokens.size())) {
      failures += static_cast<int64_t>(tokens.size());
      absl::MutexLock lock(&mu_);
      Failure(absl::StrCat("store batch: ", static_cast<int>(s.error_code()),
                           " ", s.error_message()));
    } else {
      for (int i = 0; i < answers.responses_size(); ++i) {
        if (answers.responses(i).outcome() != ValidateSessionResponse::VALID) {
          ++failures;
          absl::MutexLock lock(&mu_);
          Failure(absl::StrCat("store batch ",
                               tokens[static_cast<size_t>(i)].session_id, ": ",
                               ValidateSessionResponse::Outcome_Name(
                                   answers.responses(i).outcome())));
        }
      }
    }
    const IssuedToken& one = tokens[rng_.Uniform(tokens.size())];
    sessiond::v1::ValidateSessionRequest request;
    request.set_token(one.token);
    sessiond::v1::ValidateSessionResponse answer;
    const bool one_ok = ThroughRandomNodes(
        [&](sessiond::v1::SessionService::Stub& stub) {
          grpc::ClientContext context;
          SetDeadline(&context, absl::Seconds(5));
          return stub.ValidateSession(&context, request, &answer);
        },
        &s);
    if (!one_ok || answer.outcome() != ValidateSessionResponse::VALID ||
        answer.session().signing_kid() != one.kid) {
      ++failures;
      absl::MutexLock lock(&mu_);
      Failure(absl::StrCat(
          "store one ", one.session_id, ": ", s.error_message(), " ",
          ValidateSessionResponse::Outcome_Name(answer.outcome()),
          " signing_kid \"", answer.session().signing_kid(), "\""));
    }
    absl::MutexLock lock(&mu_);
    stats_.store_checks += static_cast<int64_t>(tokens.size()) + 1;
    stats_.store_failures += failures;
  }

  void Run(int max_iterations, absl::Duration max_time) {
    const absl::Time end = absl::Now() + max_time;
    for (int n = 0; n < max_iterations && !stop_.load() && absl::Now() < end;
         ++n) {
      bool room;
      {
        absl::MutexLock lock(&mu_);
        room = issued_.size() < kMaxTokens;
      }
      if (room) Create(n);
      const std::vector<IssuedToken> tokens = issued();
      if (!tokens.empty()) {
        CheckLocally(tokens);
        CheckInStore(tokens);
      }
      {
        absl::MutexLock lock(&mu_);
        ++stats_.iterations;
        stats_.fetches = verifier_.fetches() + strict_.fetches();
        stats_.fetch_errors = verifier_.fetch_errors() + strict_.fetch_errors();
        stats_.unknown_kid_refetches = verifier_.unknown_kid_refetches();
      }
      absl::SleepFor(absl::Milliseconds(50));
    }
    done_.store(true);
  }

  // Load thread only.
  AppServerVerifier verifier_;  // re-fetches on an unknown kid
  AppServerVerifier strict_;    // trusts its cache for the max-age
  Rng rng_{2026};
  std::vector<int> ids_;
  std::vector<std::unique_ptr<sessiond::v1::SessionService::Stub>> stubs_;

  std::atomic<bool> stop_{false};
  std::atomic<bool> done_{false};
  std::atomic<int> down_{0};
  mutable absl::Mutex mu_;
  std::vector<IssuedToken> issued_ ABSL_GUARDED_BY(mu_);
  Stats stats_ ABSL_GUARDED_BY(mu_);
  std::vector<std::string> failures_ ABSL_GUARDED_BY(mu_);
  std::thread thread_;  // last: uses the members above
};

// The test thread's admin calls: through `via`, or through the running
// nodes in turn while a call fails with UNAVAILABLE (no leader yet).
class Keys {
 public:
  explicit Keys(ClusterHarness& cluster) : cluster_(cluster) {}

  template <typename Request, typename Response, typename Method>
  grpc::Status Call(Method method, const Request& request, Response* response,
                    int via = 0) {
    grpc::Status s;
    for (int attempt = 0; attempt < 100; ++attempt) {
      std::vector<int> running = cluster_.running_ids();
      if (running.empty()) break;
      const int id =
          via != 0 ? via
                   : running[static_cast<size_t>(attempt) % running.size()];
      auto admin = cluster_.Admin(id);
      grpc::ClientContext context;
      SetDeadline(&context, absl::Seconds(10));
      response->Clear();
      s = ((*admin).*method)(&context, request, response);
      if (s.error_code() != grpc::StatusCode::UNAVAILABLE) return s;
      absl::SleepFor(absl::Milliseconds(100));
    }
    return s;
  }

  absl::StatusOr<sessiond::v1::ListKeysResponse> List(int via = 0) {
    sessiond::v1::ListKeysResponse response;
    const grpc::Status s =
        Call(&sessiond::v1::AdminService::Stub::ListKeys,
             sessiond::v1::ListKeysRequest(), &response, via);
    if (!s.ok()) return absl::UnavailableError(s.error_message());
    return response;
  }

  absl::StatusOr<sessiond::v1::GetJwksResponse> Jwks(int via) {
    sessiond::v1::GetJwksResponse response;
    const grpc::Status s = Call(&sessiond::v1::AdminService::Stub::GetJwks,
                                sessiond::v1::GetJwksRequest(), &response, via);
    if (!s.ok()) return absl::UnavailableError(s.error_message());
    return response;
  }

  grpc::Status Stage(sessiond::v1::StageKeyResponse* response) {
    return Call(&sessiond::v1::AdminService::Stub::StageKey,
                sessiond::v1::StageKeyRequest(), response);
  }

  // Polls ActivateKey(kid) every 100 ms until accepted, at most `attempts`
  // times. Counts the refusals (FAILED_PRECONDITION) in `refused`. An
  // earlier attempt whose answer was lost may have activated it: a refusal
  // is checked against ListKeys.
  grpc::Status Activate(const std::string& kid, int attempts, int* refused,
                        sessiond::v1::ActivateKeyResponse* response) {
    sessiond::v1::ActivateKeyRequest request;
    request.set_kid(kid);
    grpc::Status s;
    for (int attempt = 0; attempt < attempts; ++attempt) {
      s = Call(&sessiond::v1::AdminService::Stub::ActivateKey, request,
               response);
      if (s.ok()) return s;
      if (s.error_code() != grpc::StatusCode::FAILED_PRECONDITION &&
          s.error_code() != grpc::StatusCode::DEADLINE_EXCEEDED) {
        return s;
      }
      absl::StatusOr<sessiond::v1::ListKeysResponse> keys = List();
      if (keys.ok() && keys->active_kid() == kid) {
        response->Clear();
        return grpc::Status::OK;
      }
      ++*refused;
      absl::SleepFor(absl::Milliseconds(100));
    }
    return s;
  }

  grpc::Status Retire(const std::string& kid, bool force, uint64_t expected,
                      sessiond::v1::RetireKeyResponse* response, int via) {
    sessiond::v1::RetireKeyRequest request;
    request.set_kid(kid);
    request.set_force(force);
    request.set_expected_live_sessions(expected);
    return Call(&sessiond::v1::AdminService::Stub::RetireKey, request, response,
                via);
  }

 private:
  ClusterHarness& cluster_;
};

// Gives every node of `cluster` a key-encryption key (one file, shared)
// and a JWKS listener with `max_age_ms`: node id -> its JWKS host:port.
absl::StatusOr<std::map<int, std::string>> ServeJwks(ClusterHarness& cluster,
                                                     int64_t max_age_ms) {
  const std::string kek = absl::StrCat(cluster.root(), "/kek");
  if (absl::Status s = WriteNewKekFile(kek); !s.ok()) return s;
  std::map<int, std::string> jwks;
  std::set<int> ports;
  for (int id : cluster.ids()) {
    int port = PickFreePort();
    for (int attempt = 0; attempt < 20 && ports.count(port) > 0; ++attempt) {
      port = PickFreePort();
    }
    ports.insert(port);
    jwks[id] = absl::StrCat("127.0.0.1:", port);
    cluster.SetNodeFlags(
        id, {"--kek_file", kek, "--jwks_max_age_ms", absl::StrCat(max_age_ms),
             "--jwks_listen", jwks[id]});
  }
  return jwks;
}

// The key the first leader bootstraps (bounded wait); empty if none came.
std::string WaitForBootstrappedKey(ClusterHarness& cluster, Keys& keys) {
  std::string kid;
  for (int attempt = 0; attempt < 300 && kid.empty(); ++attempt) {
    absl::StatusOr<sessiond::v1::ListKeysResponse> list = keys.List();
    if (list.ok()) kid = list->active_kid();
    if (kid.empty()) absl::SleepFor(absl::Milliseconds(100));
  }
  return kid;
}

// Serves JWKS with `max_age_ms` on every node (ServeJwks), starts the
// cluster, waits for the bootstrap key and for every node to apply it.
absl::StatusOr<std::map<int, std::string>> StartWithBootstrapKey(
    ClusterHarness& cluster, Keys& keys, int64_t max_age_ms) {
  absl::StatusOr<std::map<int, std::string>> jwks =
      ServeJwks(cluster, max_age_ms);
  if (!jwks.ok()) return jwks.status();
  if (absl::Status s = cluster.Start(); !s.ok()) return s;
  if (WaitForBootstrappedKey(cluster, keys).empty()) {
    return absl::DeadlineExceededError("no bootstrap key");
  }
  if (absl::StatusOr<std::string> converged =
          cluster.WaitForConvergence(absl::Seconds(30));
      !converged.ok()) {
    return converged.status();
  }
  return jwks;
}

// StageKey through node `via`: the new kid.
absl::StatusOr<std::string> StageVia(ClusterHarness& cluster, int via) {
  auto admin = cluster.Admin(via);
  grpc::ClientContext context;
  SetDeadline(&context, absl::Seconds(10));
  sessiond::v1::StageKeyResponse staged;
  const grpc::Status s =
      admin->StageKey(&context, sessiond::v1::StageKeyRequest(), &staged);
  if (!s.ok()) return absl::InternalError(s.error_message());
  return staged.key().kid();
}

// One ActivateKey of `kid` through node `via`, not retried.
grpc::Status ActivateOnceVia(ClusterHarness& cluster, int via,
                             const std::string& kid) {
  auto admin = cluster.Admin(via);
  grpc::ClientContext context;
  SetDeadline(&context, absl::Seconds(10));
  sessiond::v1::ActivateKeyRequest request;
  request.set_kid(kid);
  sessiond::v1::ActivateKeyResponse response;
  return admin->ActivateKey(&context, request, &response);
}

const sessiond::v1::SigningKeyInfo* FindKey(
    const sessiond::v1::ListKeysResponse& keys, const std::string& kid) {
  for (const auto& k : keys.keys()) {
    if (k.kid() == kid) return &k;
  }
  return nullptr;
}

std::string Describe(const sessiond::v1::ListKeysResponse& keys) {
  std::vector<std::string> lines;
  for (const auto& k : keys.keys()) {
    lines.push_back(absl::StrCat(k.kid(), " ",
                                 sessiond::v1::SigningKeyState_Name(k.state()),
                                 " live ", k.live_sessions()));
  }
  return absl::StrCat("active ", keys.active_kid(), "\n",
                      absl::StrJoin(lines, "\n"));
}

std::string Report(const RotationLoad& load) {
  const RotationLoad::Stats s = load.stats();
  return absl::StrCat(
      "iterations ", s.iterations, ", creates ", s.creates, " (retries ",
      s.create_retries, ", failures ", s.create_failures, ", ambiguous ",
      s.create_ambiguous, "), local checks ", s.local_checks, " (failures ",
      s.local_failures, "), store checks ", s.store_checks, " (failures ",
      s.store_failures, ", call retries ", s.store_call_retries,
      "), JWKS fetches ", s.fetches, " (errors ", s.fetch_errors,
      ", for an unknown kid ", s.unknown_kid_refetches,
      "), kids unknown to a cache trusted for its max-age ",
      s.strict_unknown_kid, "\nfirst failures:\n",
      absl::StrJoin(load.failures(), "\n"));
}

// Waits (bounded) until the load issued `n` tokens signed by `kid`.
bool WaitForTokensOf(const RotationLoad& load, const std::string& kid, int n) {
  for (int attempt = 0; attempt < 600 && !load.done(); ++attempt) {
    if (load.IssuedWithKid(kid) >= n) return true;
    absl::SleepFor(absl::Milliseconds(100));
  }
  return load.IssuedWithKid(kid) >= n;
}

TEST(KeyRotationDrillTest,
     ThreeRotationsUnderLoadFailNoValidationAndRetiringAKeyInUseIsRefused) {
  ClusterOptions options;
  options.binary = SESSIOND_BINARY;
  ClusterHarness cluster(options);
  absl::StatusOr<std::map<int, std::string>> served =
      ServeJwks(cluster, kJwksMaxAgeMs);
  ASSERT_TRUE(served.ok()) << served.status();
  const std::map<int, std::string>& jwks = *served;
  absl::Status started = cluster.Start();
  ASSERT_TRUE(started.ok()) << started;
  Keys keys(cluster);

  // The first leader bootstraps an active key; every node learns it.
  const std::string first_kid = WaitForBootstrappedKey(cluster, keys);
  ASSERT_FALSE(first_kid.empty()) << "no key was bootstrapped\n"
                                  << cluster.LogTail(1);
  ASSERT_TRUE(cluster.WaitForConvergence(absl::Seconds(30)).ok());
  for (int id : cluster.ids()) {
    absl::StatusOr<sessiond::v1::MemberStatus> member =
        cluster.MemberStatusOf(id);
    ASSERT_TRUE(member.ok()) << member.status();
    EXPECT_TRUE(member->has_kek()) << "node " << id;
    EXPECT_EQ(member->active_kid(), first_kid) << "node " << id;
    // The HTTP document is GetJwks's, with its max-age, and its index in
    // the ETag.
    absl::StatusOr<sessiond::v1::GetJwksResponse> grpc_jwks = keys.Jwks(id);
    ASSERT_TRUE(grpc_jwks.ok()) << grpc_jwks.status();
    absl::StatusOr<FetchedJwks> http_jwks = FetchJwks(jwks.at(id));
    ASSERT_TRUE(http_jwks.ok()) << http_jwks.status();
    EXPECT_EQ(http_jwks->body, grpc_jwks->jwks_json()) << "node " << id;
    EXPECT_EQ(http_jwks->max_age_s, grpc_jwks->max_age_s());
    EXPECT_EQ(http_jwks->max_age_s, kJwksMaxAgeMs / 1000);
    EXPECT_TRUE(absl::StartsWith(
        http_jwks->etag, absl::StrCat("\"", grpc_jwks->key_ring_index(), "-")))
        << http_jwks->etag;
    EXPECT_EQ(grpc_jwks->key_ring_index(), member->key_ring_index());
    EXPECT_TRUE(HasKid(http_jwks->keys, first_kid)) << http_jwks->body;
  }

  std::vector<std::string> addresses;
  for (const auto& [id, address] : jwks) addresses.push_back(address);
  RotationLoad load(cluster, addresses, /*max_iterations=*/3'000,
                    absl::Minutes(6));
  ASSERT_TRUE(WaitForTokensOf(load, first_kid, 5)) << Report(load);

  // Three rotations; the leader dies (SIGKILL) in the second, right after
  // the new key was staged, and comes back before it is activated.
  std::vector<std::string> kids = {first_kid};
  for (int r = 0; r < kRotations; ++r) {
    SCOPED_TRACE(absl::StrCat("rotation ", r + 1));
    sessiond::v1::StageKeyResponse staged;
    const grpc::Status stage = keys.Stage(&staged);
    ASSERT_TRUE(stage.ok()) << stage.error_message();
    const std::string kid = staged.key().kid();
    ASSERT_EQ(kid.size(), signing::kKidLength);
    EXPECT_EQ(staged.key().state(), sessiond::v1::SIGNING_KEY_STAGED);
    EXPECT_GE(staged.key().activatable_at_ms(),
              staged.key().staged_at_ms() + kJwksMaxAgeMs);

    // Staged is published: every node's HTTP JWKS gains the kid (bounded
    // wait: followers apply the stage a little later than the leader).
    if (r != kKillDuringRotation) {
      for (const auto& [id, address] : jwks) {
        bool published = false;
        std::string last;
        for (int attempt = 0; attempt < 100 && !published; ++attempt) {
          absl::StatusOr<FetchedJwks> fetched = FetchJwks(address);
          published = fetched.ok() && HasKid(fetched->keys, kid);
          last = fetched.ok() ? fetched->body : fetched.status().ToString();
          if (!published) absl::SleepFor(absl::Milliseconds(50));
        }
        EXPECT_TRUE(published) << "node " << id << ": " << last;
      }
    }

    if (r == kKillDuringRotation) {
      absl::StatusOr<int> leader = cluster.WaitForLeader(absl::Seconds(20));
      ASSERT_TRUE(leader.ok()) << leader.status();
      load.SetDown(*leader);
      cluster.Kill(*leader);
      std::set<int> others;
      for (int id : cluster.running_ids()) others.insert(id);
      absl::StatusOr<int> next =
          cluster.WaitForLeader(absl::Seconds(20), others);
      ASSERT_TRUE(next.ok()) << next.status();
      // Whether a voter that is down blocks the activation is the
      // server's call; try for a while, then bring it back either way.
      int refused_while_down = 0;
      sessiond::v1::ActivateKeyResponse early;
      const grpc::Status while_down =
          keys.Activate(kid, 30, &refused_while_down, &early);
      std::printf(
          "rotation %d: activation with node %d down: %s (%d refusals)\n",
          r + 1, *leader,
          while_down.ok() ? "accepted" : while_down.error_message().c_str(),
          refused_while_down);
      absl::Status restarted = cluster.StartNode(*leader);
      ASSERT_TRUE(restarted.ok()) << restarted;
      load.SetDown(0);
    }

    int refused = 0;
    sessiond::v1::ActivateKeyResponse activated;
    const grpc::Status activate = keys.Activate(kid, 600, &refused, &activated);
    ASSERT_TRUE(activate.ok()) << activate.error_message();
    std::printf("rotation %d: %s active after %d refusals\n", r + 1,
                kid.c_str(), refused);
    if (activated.has_activated()) {
      EXPECT_EQ(activated.activated().kid(), kid);
      EXPECT_EQ(activated.activated().state(),
                sessiond::v1::SIGNING_KEY_ACTIVE);
      EXPECT_EQ(activated.retiring().kid(), kids.back());
      EXPECT_EQ(activated.retiring().state(),
                sessiond::v1::SIGNING_KEY_RETIRING);
    }
    kids.push_back(kid);
    ASSERT_TRUE(WaitForTokensOf(load, kid, 5)) << Report(load);
  }

  // Tokens of the last key, checked for a while, then the load stops.
  ASSERT_TRUE(WaitForTokensOf(load, kids.back(), 20)) << Report(load);
  load.Stop();
  const RotationLoad::Stats stats = load.stats();
  std::printf("load: %s\n", Report(load).c_str());
  EXPECT_EQ(stats.local_failures, 0) << Report(load);
  EXPECT_EQ(stats.store_failures, 0) << Report(load);
  EXPECT_EQ(stats.create_failures, 0) << Report(load);
  EXPECT_GT(stats.local_checks, 0);
  const std::vector<IssuedToken> issued = load.issued();
  std::map<std::string, int> per_kid;
  for (const IssuedToken& t : issued) ++per_kid[t.kid];
  EXPECT_EQ(per_kid.size(), kids.size());
  for (const std::string& kid : kids) {
    EXPECT_GT(per_kid[kid], 0) << kid;
  }

  // Retiring the first key, which signed live sessions: refused with their
  // count, nothing changed.
  ASSERT_TRUE(cluster.WaitForConvergence(absl::Seconds(30)).ok());
  const int via = cluster.running_ids().front();
  absl::StatusOr<sessiond::v1::ListKeysResponse> before = keys.List(via);
  ASSERT_TRUE(before.ok()) << before.status();
  ASSERT_EQ(before->keys_size(), 4) << Describe(*before);
  EXPECT_EQ(before->active_kid(), kids.back()) << Describe(*before);
  for (size_t i = 0; i + 1 < kids.size(); ++i) {
    const auto* k = FindKey(*before, kids[i]);
    ASSERT_NE(k, nullptr) << kids[i];
    EXPECT_EQ(k->state(), sessiond::v1::SIGNING_KEY_RETIRING) << kids[i];
  }
  const auto* first = FindKey(*before, first_kid);
  ASSERT_NE(first, nullptr);
  const uint64_t live = first->live_sessions();
  // Every first-key session this test made is live (lifetime 30 min);
  // the load's creates of that era were never ambiguous unless counted.
  EXPECT_GE(live, static_cast<uint64_t>(per_kid[first_kid]));
  if (stats.create_ambiguous == 0) {
    EXPECT_EQ(live, static_cast<uint64_t>(per_kid[first_kid]));
  }
  absl::StatusOr<sessiond::v1::GetJwksResponse> jwks_before = keys.Jwks(via);
  ASSERT_TRUE(jwks_before.ok());

  sessiond::v1::RetireKeyResponse retired;
  grpc::Status s = keys.Retire(first_kid, false, 0, &retired, via);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION)
      << s.error_message();
  EXPECT_TRUE(absl::StrContains(s.error_message(), absl::StrCat(live)))
      << "the refusal does not give the count " << live << ": "
      << s.error_message();
  s = keys.Retire(first_kid, true, live + 1, &retired, via);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION)
      << s.error_message();
  // The ACTIVE key cannot be retired at all.
  s = keys.Retire(kids.back(), true, 0, &retired, via);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION)
      << s.error_message();
  absl::StatusOr<sessiond::v1::ListKeysResponse> after = keys.List(via);
  ASSERT_TRUE(after.ok());
  EXPECT_TRUE(
      google::protobuf::util::MessageDifferencer::Equals(*before, *after))
      << "before:\n"
      << Describe(*before) << "\nafter:\n"
      << Describe(*after);
  absl::StatusOr<sessiond::v1::GetJwksResponse> jwks_after = keys.Jwks(via);
  ASSERT_TRUE(jwks_after.ok());
  EXPECT_EQ(jwks_after->key_ring_index(), jwks_before->key_ring_index());
  EXPECT_EQ(jwks_after->jwks_json(), jwks_before->jwks_json());

  // Forced with the count: retired.
  s = keys.Retire(first_kid, true, live, &retired, via);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(retired.live_sessions(), live);
  EXPECT_EQ(retired.key().kid(), first_kid);
  EXPECT_EQ(retired.key().state(), sessiond::v1::SIGNING_KEY_RETIRED);

  // The kid leaves every node's JWKS (bounded wait: followers apply it).
  for (const auto& [id, address] : jwks) {
    bool gone = false;
    std::string last;
    for (int attempt = 0; attempt < 200 && !gone; ++attempt) {
      absl::StatusOr<FetchedJwks> fetched = FetchJwks(address);
      if (fetched.ok()) {
        gone = !HasKid(fetched->keys, first_kid);
        last = fetched->body;
        if (gone) {
          EXPECT_EQ(fetched->keys.size(), 3u) << fetched->body;
        }
      } else {
        last = fetched.status().ToString();
      }
      if (!gone) absl::SleepFor(absl::Milliseconds(100));
    }
    EXPECT_TRUE(gone) << "node " << id << " still publishes " << first_kid
                      << ": " << last;
  }

  // Locally: the first key's tokens no longer verify (kid unknown even
  // after a re-fetch); every other token still does.
  AppServerVerifier app(addresses, 99);
  int unknown = 0;
  int verified = 0;
  for (const IssuedToken& t : issued) {
    absl::StatusOr<signing::VerifiedJwt> v = app.Verify(t.token, true);
    if (t.kid == first_kid) {
      EXPECT_EQ(signing::JwtErrorOf(v.status()), signing::JwtError::kUnknownKid)
          << v.status();
      if (!v.ok()) ++unknown;
    } else {
      EXPECT_TRUE(v.ok()) << t.kid << ": " << v.status();
      if (v.ok()) ++verified;
    }
  }
  EXPECT_EQ(unknown, per_kid[first_kid]);
  EXPECT_EQ(verified, static_cast<int>(issued.size()) - per_kid[first_kid]);

  // The store: still VALID, every token, the retired key's included (its
  // validity is the session's, not the key's; see the file comment).
  sessiond::v1::BatchValidateSessionsRequest batch;
  batch.set_consistency(sessiond::v1::LINEARIZABLE);
  for (const IssuedToken& t : issued) batch.add_requests()->set_token(t.token);
  sessiond::v1::BatchValidateSessionsResponse answers;
  grpc::Status validated;
  for (int attempt = 0; attempt < 50; ++attempt) {
    grpc::ClientContext context;
    SetDeadline(&context, absl::Seconds(10));
    validated =
        cluster.Stub(via)->BatchValidateSessions(&context, batch, &answers);
    if (validated.error_code() != grpc::StatusCode::UNAVAILABLE) break;
    absl::SleepFor(absl::Milliseconds(200));
  }
  ASSERT_TRUE(validated.ok()) << validated.error_message();
  ASSERT_EQ(answers.responses_size(), static_cast<int>(issued.size()));
  for (int i = 0; i < answers.responses_size(); ++i) {
    EXPECT_EQ(answers.responses(i).outcome(), ValidateSessionResponse::VALID)
        << issued[static_cast<size_t>(i)].kid;
  }

  // After all that, every node agrees.
  EXPECT_TRUE(cluster.WaitForConvergence(absl::Seconds(30)).ok());
}

// A follower cut off while a key was staged goes on serving a JWKS without
// it, and a cache may keep that document for the max-age after the
// follower catches up. So the key may sign only once every member has
// published it for the max-age, counted on each member, not from the
// stage: activating right after the follower caught up is refused.
TEST(KeyRotationDrillTest, AMemberThatPublishedTheKeyLateHoldsBackActivation) {
  constexpr int64_t kMaxAgeMs = 3'000;
  ClusterOptions options;
  options.binary = SESSIOND_BINARY;
  ClusterHarness cluster(options);
  Keys keys(cluster);
  absl::StatusOr<std::map<int, std::string>> jwks =
      StartWithBootstrapKey(cluster, keys, kMaxAgeMs);
  ASSERT_TRUE(jwks.ok()) << jwks.status();
  absl::StatusOr<int> leader = cluster.WaitForLeader(absl::Seconds(20));
  ASSERT_TRUE(leader.ok());
  int late = 0;
  for (int id : cluster.ids()) {
    if (id != *leader && late == 0) late = id;
  }

  cluster.Isolate(late);
  absl::SleepFor(absl::Milliseconds(300));  // drop lists are read every 50 ms
  absl::StatusOr<std::string> staged = StageVia(cluster, *leader);
  ASSERT_TRUE(staged.ok()) << staged.status();
  const std::string kid = *staged;
  absl::SleepFor(absl::Milliseconds(kMaxAgeMs + 500));
  absl::StatusOr<FetchedJwks> stale = FetchJwks(jwks->at(late));
  ASSERT_TRUE(stale.ok()) << stale.status();
  EXPECT_FALSE(HasKid(stale->keys, kid)) << "the cut-off member has the key";
  // It says so: not to be cached (it was served with the full max-age, so
  // a verifier kept it while the key it lacks could start signing).
  EXPECT_EQ(stale->max_age_s, 0);
  absl::StatusOr<sessiond::v1::GetJwksResponse> stale_grpc = keys.Jwks(late);
  ASSERT_TRUE(stale_grpc.ok()) << stale_grpc.status();
  EXPECT_EQ(stale_grpc->max_age_s(), 0);
  absl::StatusOr<FetchedJwks> current = FetchJwks(jwks->at(*leader));
  ASSERT_TRUE(current.ok()) << current.status();
  EXPECT_TRUE(HasKid(current->keys, kid));
  EXPECT_EQ(current->max_age_s, kMaxAgeMs / 1000);

  cluster.HealAll();
  bool published = false;
  for (int attempt = 0; attempt < 200 && !published; ++attempt) {
    absl::StatusOr<FetchedJwks> fetched = FetchJwks(jwks->at(late));
    published = fetched.ok() && HasKid(fetched->keys, kid);
    if (!published) absl::SleepFor(absl::Milliseconds(50));
  }
  ASSERT_TRUE(published) << cluster.LogTail(late);
  {
    const grpc::Status s = ActivateOnceVia(cluster, *leader, kid);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION)
        << s.error_message();
    EXPECT_TRUE(absl::StrContains(
        s.error_message(), absl::StrCat("node ", late, " has published")))
        << s.error_message();
  }
  int refused = 0;
  sessiond::v1::ActivateKeyResponse activated;
  const grpc::Status activate = keys.Activate(kid, 100, &refused, &activated);
  ASSERT_TRUE(activate.ok()) << activate.error_message();
  absl::StatusOr<sessiond::v1::MemberStatus> member =
      cluster.MemberStatusOf(late);
  ASSERT_TRUE(member.ok()) << member.status();
  ASSERT_EQ(member->key_published_ms().count(kid), 1u);
  EXPECT_GE(member->key_published_ms().at(kid), kMaxAgeMs);
}

// A member restarted with another --kek_file (a re-provisioned machine)
// started and reported nothing wrong: once it led, every JWT create failed
// (it cannot open the active key), and a key it staged could be activated
// for the others to fail the same way. It reports its KEK's id, and a key
// it could not open is not activated.
TEST(KeyRotationDrillTest, AMemberWithAnotherKekHoldsBackActivation) {
  constexpr int64_t kMaxAgeMs = 1'000;
  ClusterOptions options;
  options.binary = SESSIOND_BINARY;
  ClusterHarness cluster(options);
  Keys keys(cluster);
  absl::StatusOr<std::map<int, std::string>> jwks =
      StartWithBootstrapKey(cluster, keys, kMaxAgeMs);
  ASSERT_TRUE(jwks.ok()) << jwks.status();
  absl::StatusOr<int> leader = cluster.WaitForLeader(absl::Seconds(20));
  ASSERT_TRUE(leader.ok());
  const int odd = *leader == 1 ? 2 : 1;
  const std::string shared = absl::StrCat(cluster.root(), "/kek");
  const std::string other = absl::StrCat(cluster.root(), "/other-kek");
  ASSERT_TRUE(WriteNewKekFile(other).ok());
  const auto restart_with = [&](const std::string& kek) {
    cluster.Kill(odd);
    cluster.SetNodeFlags(
        odd, {"--kek_file", kek, "--jwks_max_age_ms", absl::StrCat(kMaxAgeMs),
              "--jwks_listen", jwks->at(odd)});
    return cluster.StartNode(odd);
  };
  ASSERT_TRUE(restart_with(other).ok());
  ASSERT_TRUE(cluster.WaitForConvergence(absl::Seconds(30)).ok());
  absl::StatusOr<sessiond::v1::MemberStatus> mismatched =
      cluster.MemberStatusOf(odd);
  ASSERT_TRUE(mismatched.ok()) << mismatched.status();
  absl::StatusOr<sessiond::v1::MemberStatus> matched =
      cluster.MemberStatusOf(*leader);
  ASSERT_TRUE(matched.ok()) << matched.status();
  EXPECT_EQ(mismatched->kek_id().size(), 16u);
  EXPECT_EQ(matched->kek_id(), matched->active_key_kek_id());
  EXPECT_NE(mismatched->kek_id(), mismatched->active_key_kek_id());

  absl::StatusOr<std::string> staged = StageVia(cluster, *leader);
  ASSERT_TRUE(staged.ok()) << staged.status();
  const std::string kid = *staged;
  ASSERT_TRUE(cluster.WaitForConvergence(absl::Seconds(30)).ok());
  absl::SleepFor(absl::Milliseconds(kMaxAgeMs + 500));
  {
    const grpc::Status s = ActivateOnceVia(cluster, *leader, kid);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION)
        << s.error_message();
    EXPECT_TRUE(
        absl::StrContains(s.error_message(),
                          absl::StrCat("node ", odd, " has key-encryption key ",
                                       mismatched->kek_id())))
        << s.error_message();
  }
  // With the cluster's KEK again, it is activated.
  ASSERT_TRUE(restart_with(shared).ok());
  ASSERT_TRUE(cluster.WaitForConvergence(absl::Seconds(30)).ok());
  int refused = 0;
  sessiond::v1::ActivateKeyResponse activated;
  const grpc::Status activate = keys.Activate(kid, 100, &refused, &activated);
  ASSERT_TRUE(activate.ok()) << activate.error_message();
}

}  // namespace
}  // namespace sessiond::testing
