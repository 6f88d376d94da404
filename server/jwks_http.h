// Copyright sessiond authors. Licensed under the Apache License 2.0.
//
// The --jwks_listen HTTP endpoint (issue 7, "Signing keys that cannot lock
// users out"): the cluster's public signing keys for app servers that check
// JWT session tokens locally.
//
//   GET /.well-known/jwks.json   (HEAD too: the same headers, no body)
//     200  the JWKS (RFC 7517) of every STAGED, ACTIVE and RETIRING key, as
//          this node applied the key ring (AdminService.GetJwks answers the
//          same document):
//            Content-Type: application/json
//            Cache-Control: public, max-age=<N>
//            ETag: "<key_ring_index>"
//          N is the JWKS max-age in seconds (--jwks_max_age_ms, replicated;
//          0 from a node that may lack a staged key: jwks_document.h):
//          a key is published at least that long before it signs, so a
//          verifier that caches the document no longer than N never meets a
//          kid it cannot know. The ETag is the log index of the ring's last
//          change (equal indexes, equal documents), the same on every node
//          that applied it.
//     304  If-None-Match names the current ETag (or is "*"): no body, the
//          same Cache-Control and ETag. Weak tags (W/"7") match too.
//     503  the node cannot answer (no key ring yet, not serving): one line
//          of text saying why; Cache-Control: no-store.
//   anything else: 404.
//
// What a verifier should do: cache the document for at most max-age, and
// re-fetch at once (bounded: at most once every few seconds) when a token
// names a kid it does not hold; a kid still unknown after that is a token
// sessiond did not sign, or one signed by a key since retired.
//
// HTTPS with the node's certificate when the node has TLS (--tls_cert,
// --tls_key, --tls_ca; renewed files are picked up as http_endpoint.h
// says), plain HTTP otherwise. Never a client certificate nor any other
// authentication: the document is public, and every app server that checks
// tokens must be able to read it.
#ifndef SESSIOND_SERVER_JWKS_HTTP_H_
#define SESSIOND_SERVER_JWKS_HTTP_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "server/http_endpoint.h"

namespace sessiond::server {

inline constexpr char kJwksPath[] = "/.well-known/jwks.json";

// One JWKS as the endpoint serves it.
struct JwksDocument {
  std::string json;             // {"keys":[...]}
  int64_t max_age_s = 0;        // Cache-Control max-age (negative: 0)
  uint64_t key_ring_index = 0;  // in the ETag
};

// The document's entity tag: "<key_ring_index>-<16 hex digits of the
// body's SHA-256>". The index alone named different documents alike across
// clusters (a rebuilt cluster bootstraps another key at the same small
// index), and a verifier revalidating with it got 304 and kept the old
// cluster's keys.
std::string JwksEntityTag(const JwksDocument& doc);

struct JwksHttpOptions {
  // host:port to bind (port 0: the kernel picks one; address() tells).
  std::string listen;
  // The current document, or why there is none (served as a 503 with the
  // status message). Called once per request, on the "sd-jwks-w" workers.
  std::function<absl::StatusOr<JwksDocument>()> provider;
  // HTTPS with these files; unset: plain HTTP. require_client_cert must be
  // false (the JWKS is public).
  std::optional<HttpTlsOptions> tls = std::nullopt;
};

// Serves GET /.well-known/jwks.json over HTTP or HTTPS (cpp-httplib), as
// described above.
//
// One thread, "sd-jwks", accepts, and HttpEndpoint::kWorkers threads,
// "sd-jwks-w", answer; each connection is closed after one request (no
// keep-alive), like MetricsHttpServer: verifiers fetch the document once
// per max-age, and a client that stalls holds one worker for at most
// HttpEndpoint::kRequestLimit before its request is read, and
// HttpEndpoint::kConnectionLimit in all; one client address holds at most
// HttpEndpoint::kMaxConnectionsPerClient. `provider` runs on the workers,
// several at once.
//
// Thread-safe. `provider` must be callable until Stop() returns.
class JwksHttpServer {
 public:
  // Binds `options.listen` and starts the thread. Unavailable when the
  // address cannot be bound (in use, not local), InvalidArgument when it is
  // not host:port, there is no provider, a TLS file does not load, or TLS
  // asks for client certificates.
  static absl::StatusOr<std::unique_ptr<JwksHttpServer>> Start(
      JwksHttpOptions options);

  ~JwksHttpServer() = default;  // the endpoint Stop()s
  JwksHttpServer(const JwksHttpServer&) = delete;
  JwksHttpServer& operator=(const JwksHttpServer&) = delete;

  // Closes the listener, cuts the connections in progress (a provider call
  // running finishes), joins the threads. Idempotent.
  void Stop() { endpoint_->Stop(); }

  // host:port bound (with the real port when listen had port 0).
  const std::string& address() const { return endpoint_->address(); }
  // Connections cut because their request was not read in time.
  uint64_t connections_cut_for_slow_request() const {
    return endpoint_->connections_cut_for_slow_request();
  }
  // Connections closed as they were accepted (HttpEndpoint).
  uint64_t connections_refused() const {
    return endpoint_->connections_refused();
  }

 private:
  explicit JwksHttpServer(JwksHttpOptions options);

  const JwksHttpOptions options_;
  std::unique_ptr<HttpEndpoint> endpoint_;  // last: its thread reads options_
};

// Whether an If-None-Match header value names `etag` (a quoted strong tag,
// e.g. "\"42\""): a comma-separated list of tags, weak ones (W/"42")
// compared by their opaque part (RFC 9110 13.1.2's weak comparison), or "*".
// Exposed for tests.
bool IfNoneMatchMatches(absl::string_view header, absl::string_view etag);

}  // namespace sessiond::server

#endif  // SESSIOND_SERVER_JWKS_HTTP_H_
