// Copyright sessiond authors. Licensed under the Apache License 2.0.
#include "server/metrics_http.h"

#include <httplib.h>

#include <utility>

namespace sessiond::server {

MetricsHttpServer::MetricsHttpServer(MetricsHttpOptions options)
    : options_(std::move(options)) {}

absl::StatusOr<std::unique_ptr<MetricsHttpServer>> MetricsHttpServer::Start(
    MetricsHttpOptions options) {
  std::unique_ptr<MetricsHttpServer> server(
      new MetricsHttpServer(std::move(options)));
  MetricsHttpServer* self = server.get();
  absl::StatusOr<std::unique_ptr<HttpEndpoint>> endpoint = HttpEndpoint::Start(
      self->options_.listen, "metrics", "sd-metrics", self->options_.tls,
      [self](httplib::Server& http) {
        http.Get("/metrics",
                 [self](const httplib::Request&, httplib::Response& res) {
                   res.set_content(self->options_.render(),
                                   "text/plain; version=0.0.4; charset=utf-8");
                 });
        http.Get("/healthz", [self](const httplib::Request&,
                                    httplib::Response& res) {
          if (self->options_.serving()) {
            res.set_content("ok\n", "text/plain; charset=utf-8");
          } else {
            res.status = 503;
            res.set_content("not serving\n", "text/plain; charset=utf-8");
          }
        });
      });
  if (!endpoint.ok()) return endpoint.status();
  server->endpoint_ = *std::move(endpoint);
  return server;
}

}  // namespace sessiond::server
