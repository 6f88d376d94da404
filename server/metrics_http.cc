// Copyright sessiond authors. Licensed under the Apache License 2.0.
#include "server/metrics_http.h"

#include <httplib.h>
#include <pthread.h>
#include <sys/socket.h>

#include <atomic>
#include <utility>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"

namespace sessiond::server {
namespace {

// Runs each connection on the accepting thread itself: the endpoint is one
// thread, "sd-metrics" (httplib's default pool would add eight).
class InlineTaskQueue : public httplib::TaskQueue {
 public:
  void enqueue(std::function<void()> fn) override { fn(); }
  void shutdown() override {}
};

}  // namespace

MetricsHttpServer::MetricsHttpServer(MetricsHttpOptions options)
    : options_(std::move(options)),
      http_(std::make_unique<httplib::Server>()) {}

MetricsHttpServer::~MetricsHttpServer() { Stop(); }

absl::StatusOr<std::unique_ptr<MetricsHttpServer>> MetricsHttpServer::Start(
    MetricsHttpOptions options) {
  const size_t colon = options.listen.rfind(':');
  int port = -1;
  if (colon == std::string::npos || colon == 0 ||
      !absl::SimpleAtoi(options.listen.substr(colon + 1), &port) || port < 0 ||
      port > 65535) {
    return absl::InvalidArgumentError(absl::StrCat(
        "metrics address \"", options.listen, "\" is not host:port"));
  }
  std::string host = options.listen.substr(0, colon);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  std::unique_ptr<MetricsHttpServer> server(
      new MetricsHttpServer(std::move(options)));
  httplib::Server& http = *server->http_;
  http.new_task_queue = [] { return new InlineTaskQueue; };
  http.set_keep_alive_max_count(1);
  http.set_read_timeout(2, 0);
  http.set_write_timeout(2, 0);
  // httplib's default also sets SO_REUSEPORT, which would let a second
  // process bind the same port and take half the scrapes.
  http.set_socket_options([](socket_t sock) {
    int yes = 1;
    setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof(yes));
  });
  MetricsHttpServer* self = server.get();
  http.Get("/metrics", [self](const httplib::Request&, httplib::Response& res) {
    res.set_content(self->options_.render(),
                    "text/plain; version=0.0.4; charset=utf-8");
  });
  http.Get("/healthz", [self](const httplib::Request&, httplib::Response& res) {
    if (self->options_.serving()) {
      res.set_content("ok\n", "text/plain; charset=utf-8");
    } else {
      res.status = 503;
      res.set_content("not serving\n", "text/plain; charset=utf-8");
    }
  });
  const int bound = port == 0 ? http.bind_to_any_port(host)
                              : (http.bind_to_port(host, port) ? port : -1);
  if (bound <= 0) {
    return absl::UnavailableError(
        absl::StrCat("cannot listen for metrics on ", server->options_.listen,
                     " (address in use or not local?)"));
  }
  server->address_ =
      absl::StrCat(server->options_.listen.substr(0, colon), ":", bound);
  auto done = std::make_shared<std::atomic<bool>>(false);
  server->thread_ = std::thread([self, done] {
    pthread_setname_np(pthread_self(), "sd-metrics");
    self->http_->listen_after_bind();
    done->store(true);
  });
  // httplib's stop() does nothing until the accept loop runs: wait for it,
  // so a Stop() right after Start() cannot miss it (bounded: 10 s).
  for (int i = 0; i < 10000 && !http.is_running() && !done->load(); ++i) {
    absl::SleepFor(absl::Milliseconds(1));
  }
  return server;
}

void MetricsHttpServer::Stop() {
  absl::MutexLock lock(&mu_);
  if (stopped_) return;
  stopped_ = true;
  http_->stop();
  if (thread_.joinable()) thread_.join();
}

}  // namespace sessiond::server
