// Copyright sessiond authors. Licensed under the Apache License 2.0.
#ifndef SESSIOND_SERVER_CONNECTION_LIMITS_H_
#define SESSIOND_SERVER_CONNECTION_LIMITS_H_

#include <sys/socket.h>

#include <cstdint>
#include <optional>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace sessiond::server {

// Ends an HttpEndpoint connection that runs past a deadline, or whose
// client sent more than a request of these endpoints needs: shuts its
// socket down, so httplib's next read or write fails and the endpoint's one
// thread moves on. httplib's timeouts bound each read and write, not a
// connection: a client sending its request a byte per second held the
// thread (and so /metrics, /healthz and the JWKS, and Stop) for as long as
// it went on. And httplib reads a request line, and any number of header
// lines, into memory whatever their size: a client sending a line without
// end grew the daemon's memory without bound. Two deadlines: the request
// (TLS handshake, request line and headers) must be read within
// `request_limit` of the accept, the whole connection ends within `limit`.
// The bytes received are the kernel's count (TCP_INFO), looked at every
// 10 ms while a connection is served, so a client gets at most what it can
// send in that time past the limit.
//
// httplib hands the accepted socket to no hook, so Begin finds it: the one
// connected TCP socket of this process whose local address is the
// endpoint's (its port, and its address unless it listens on a wildcard);
// connections are served one at a time, on the thread that accepts them.
// Begin keeps a duplicate of that descriptor until End, so the socket a cut
// shuts down is that connection's even after httplib closed its own
// descriptor and the number went to another socket.
//
// Thread-safe: Begin, RequestRead and End on the endpoint's thread, CutNow
// from any; one watcher thread of its own.
class ConnectionLimits {
 public:
  // `listener`: the endpoint's bound address; `request_limit`: the longest
  // until its request is read; `limit`: the longest a connection is served;
  // `max_bytes_received`: the most its client may send (request and TLS
  // records).
  ConnectionLimits(const sockaddr_storage& listener,
                   absl::Duration request_limit, absl::Duration limit,
                   uint64_t max_bytes_received);
  ~ConnectionLimits();  // joins the watcher

  ConnectionLimits(const ConnectionLimits&) = delete;
  ConnectionLimits& operator=(const ConnectionLimits&) = delete;

  // A connection was accepted: its deadlines run from now.
  void Begin() ABSL_LOCKS_EXCLUDED(mu_);
  // Its request was read (before it is routed): only `limit` counts now.
  void RequestRead() ABSL_LOCKS_EXCLUDED(mu_);
  // It was closed.
  void End() ABSL_LOCKS_EXCLUDED(mu_);
  // Ends the connection in progress now (the endpoint stops), and every
  // later one as it begins.
  void CutNow() ABSL_LOCKS_EXCLUDED(mu_);

  // Connections cut so far, and those of them cut because their request
  // was not read within `request_limit`.
  uint64_t cut() const ABSL_LOCKS_EXCLUDED(mu_);
  uint64_t cut_for_slow_request() const ABSL_LOCKS_EXCLUDED(mu_);

 private:
  struct Connection {
    int fd = -1;  // our duplicate; -1: not found, or cut
    bool request_read = false;
    int64_t request_deadline_steady_ns = 0;
    int64_t deadline_steady_ns = 0;
  };
  void Watch() ABSL_LOCKS_EXCLUDED(mu_);
  bool StoppingOrServing() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Shuts the connection's socket down (once).
  void CutLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const sockaddr_storage listener_;
  const absl::Duration request_limit_;
  const absl::Duration limit_;
  const uint64_t max_bytes_received_;
  mutable absl::Mutex mu_;
  std::optional<Connection> current_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  bool cut_all_ ABSL_GUARDED_BY(mu_) = false;
  uint64_t cut_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t cut_for_slow_request_ ABSL_GUARDED_BY(mu_) = 0;
  std::thread watcher_;
};

}  // namespace sessiond::server

#endif  // SESSIOND_SERVER_CONNECTION_LIMITS_H_
