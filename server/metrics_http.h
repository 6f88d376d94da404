// Copyright sessiond authors. Licensed under the Apache License 2.0.
#ifndef SESSIOND_SERVER_METRICS_HTTP_H_
#define SESSIOND_SERVER_METRICS_HTTP_H_

#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "server/http_endpoint.h"

namespace sessiond::server {

struct MetricsHttpOptions {
  // host:port to bind (port 0: the kernel picks one; address() tells).
  std::string listen;
  // The body of GET /metrics (Prometheus text exposition 0.0.4).
  std::function<std::string()> render;
  // GET /healthz answers 200 "ok" while this is true, 503 otherwise.
  std::function<bool()> serving;
  // HTTPS with these files (the node's --tls_cert, --tls_key, --tls_ca);
  // unset: plain HTTP. The daemon requires a client certificate here iff
  // --tls_client_auth=require: a scrape then needs one that chains to
  // --tls_ca (docs/OPERATIONS.md, "Metrics").
  std::optional<HttpTlsOptions> tls = std::nullopt;
};

// The --metrics_listen HTTP or HTTPS endpoint (cpp-httplib): GET /metrics
// and GET /healthz; anything else is 404.
//
// One thread, "sd-metrics", accepts, and HttpEndpoint::kWorkers threads,
// "sd-metrics-w", answer; each connection is closed after one request (no
// keep-alive): a scrape every few seconds needs no more, and a client that
// stalls holds one worker for at most HttpEndpoint::kConnectionLimit.
// `render` and `serving` run on the workers, several at once (the
// registry's Render runs one scrape at a time).
//
// Thread-safe. `render` and `serving` must be callable until Stop()
// returns.
class MetricsHttpServer {
 public:
  // Binds `options.listen` and starts the thread. Unavailable when the
  // address cannot be bound (in use, not local), InvalidArgument when it is
  // not host:port or a TLS file does not load.
  static absl::StatusOr<std::unique_ptr<MetricsHttpServer>> Start(
      MetricsHttpOptions options);

  ~MetricsHttpServer() = default;  // the endpoint Stop()s
  MetricsHttpServer(const MetricsHttpServer&) = delete;
  MetricsHttpServer& operator=(const MetricsHttpServer&) = delete;

  // Closes the listener, cuts the connections in progress (a render
  // running finishes), joins the threads. Idempotent.
  void Stop() { endpoint_->Stop(); }

  // host:port bound (with the real port when listen had port 0).
  const std::string& address() const { return endpoint_->address(); }

 private:
  explicit MetricsHttpServer(MetricsHttpOptions options);

  const MetricsHttpOptions options_;
  std::unique_ptr<HttpEndpoint> endpoint_;  // last: its thread reads options_
};

}  // namespace sessiond::server

#endif  // SESSIOND_SERVER_METRICS_HTTP_H_
