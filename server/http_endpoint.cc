// Copyright sessiond authors. Licensed under the Apache License 2.0.
#include "server/http_endpoint.h"

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
// thread (httplib's default pool would add eight).
class InlineTaskQueue : public httplib::TaskQueue {
 public:
  void enqueue(std::function<void()> fn) override { fn(); }
  void shutdown() override {}
};

}  // namespace

HttpEndpoint::HttpEndpoint() : http_(std::make_unique<httplib::Server>()) {}

HttpEndpoint::~HttpEndpoint() { Stop(); }

absl::StatusOr<std::unique_ptr<HttpEndpoint>> HttpEndpoint::Start(
    const std::string& listen, absl::string_view what, const char* thread_name,
    const std::function<void(httplib::Server&)>& routes) {
  const size_t colon = listen.rfind(':');
  int port = -1;
  if (colon == std::string::npos || colon == 0 ||
      !absl::SimpleAtoi(listen.substr(colon + 1), &port) || port < 0 ||
      port > 65535) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, " address \"", listen, "\" is not host:port"));
  }
  std::string host = listen.substr(0, colon);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  std::unique_ptr<HttpEndpoint> endpoint(new HttpEndpoint());
  httplib::Server& http = *endpoint->http_;
  http.new_task_queue = [] { return new InlineTaskQueue; };
  http.set_keep_alive_max_count(1);
  http.set_read_timeout(2, 0);
  http.set_write_timeout(2, 0);
  http.set_socket_options([](socket_t sock) {
    int yes = 1;
    setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof(yes));
  });
  routes(http);
  const int bound = port == 0 ? http.bind_to_any_port(host)
                              : (http.bind_to_port(host, port) ? port : -1);
  if (bound <= 0) {
    return absl::UnavailableError(absl::StrCat("cannot listen for ", what,
                                               " on ", listen,
                                               " (address in use or not "
                                               "local?)"));
  }
  endpoint->address_ = absl::StrCat(listen.substr(0, colon), ":", bound);
  auto done = std::make_shared<std::atomic<bool>>(false);
  HttpEndpoint* self = endpoint.get();
  const std::string name(thread_name);
  endpoint->thread_ = std::thread([self, done, name] {
    pthread_setname_np(pthread_self(), name.c_str());
    self->http_->listen_after_bind();
    done->store(true);
  });
  // httplib's stop() does nothing until the accept loop runs: wait for it,
  // so a Stop() right after Start() cannot miss it (bounded: 10 s).
  for (int i = 0; i < 10000 && !http.is_running() && !done->load(); ++i) {
    absl::SleepFor(absl::Milliseconds(1));
  }
  return endpoint;
}

void HttpEndpoint::Stop() {
  absl::MutexLock lock(&mu_);
  if (stopped_) return;
  stopped_ = true;
  http_->stop();
  if (thread_.joinable()) thread_.join();
}

}  // namespace sessiond::server
