// Copyright sessiond authors. Licensed under the Apache License 2.0.
#ifndef SESSIOND_SERVER_HTTP_ENDPOINT_H_
#define SESSIOND_SERVER_HTTP_ENDPOINT_H_

#include <functional>
#include <memory>
#include <string>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"

namespace httplib {
class Server;
}  // namespace httplib

namespace sessiond::server {

// A small plain-HTTP endpoint (cpp-httplib) on a thread of its own, the
// shape of sessiond's side doors (/metrics, the JWKS): the thread accepts
// and answers one connection at a time, one request per connection (no
// keep-alive), with 2 s read and write timeouts, so a client that stalls
// delays the next request, never the node. SO_REUSEADDR only (httplib's
// default SO_REUSEPORT would let a second process bind the same port and
// take half the requests).
//
// Thread-safe. The handlers `routes` registers run on the endpoint's
// thread and must be callable until Stop() returns.
class HttpEndpoint {
 public:
  // Parses `listen` (host:port or [v6]:port; port 0: the kernel picks one),
  // lets `routes` register the handlers, binds, and starts the thread
  // `thread_name`. InvalidArgument when `listen` is not host:port,
  // Unavailable when it cannot be bound (in use, not local). `what` names
  // the endpoint in those messages ("metrics", "jwks").
  static absl::StatusOr<std::unique_ptr<HttpEndpoint>> Start(
      const std::string& listen, absl::string_view what,
      const char* thread_name,
      const std::function<void(httplib::Server&)>& routes);

  ~HttpEndpoint();  // Stop()s
  HttpEndpoint(const HttpEndpoint&) = delete;
  HttpEndpoint& operator=(const HttpEndpoint&) = delete;

  // Closes the listener, lets a request in progress finish, joins the
  // thread. Idempotent.
  void Stop() ABSL_LOCKS_EXCLUDED(mu_);

  // host:port bound (with the real port when listen had port 0).
  const std::string& address() const { return address_; }

 private:
  HttpEndpoint();

  std::string address_;  // set by Start, then constant
  std::unique_ptr<httplib::Server> http_;
  std::thread thread_;
  absl::Mutex mu_;
  bool stopped_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace sessiond::server

#endif  // SESSIOND_SERVER_HTTP_ENDPOINT_H_
