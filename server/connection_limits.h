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
// end grew the daemon's memory without bound. The bytes received are the
// kernel's count (TCP_INFO), looked at every 10 ms while a connection is
// served, so a client gets at most what it can send in that time past the
// limit.
//
// httplib hands the accepted socket to no hook, so Begin finds it: the one
// connected socket of this process whose local port is the endpoint's
// (connections are served one at a time, on the thread that accepts them).
// The cut checks, under the lock End takes, that the descriptor still is
// that connection (local port and peer), so a number reused after httplib
// closed it is never touched.
//
// Thread-safe: Begin and End on the endpoint's thread, CutNow from any;
// one watcher thread of its own.
class ConnectionLimits {
 public:
  // `local_port`: the endpoint's bound port; `limit`: the longest a
  // connection is served; `max_bytes_received`: the most its client may
  // send (request and TLS records).
  ConnectionLimits(int local_port, absl::Duration limit,
                   uint64_t max_bytes_received);
  ~ConnectionLimits();  // joins the watcher

  ConnectionLimits(const ConnectionLimits&) = delete;
  ConnectionLimits& operator=(const ConnectionLimits&) = delete;

  // A connection was accepted: its deadline is `limit` from now.
  void Begin() ABSL_LOCKS_EXCLUDED(mu_);
  // It was closed.
  void End() ABSL_LOCKS_EXCLUDED(mu_);
  // Ends the connection in progress now (the endpoint stops), and every
  // later one as it begins.
  void CutNow() ABSL_LOCKS_EXCLUDED(mu_);

  // Connections cut so far.
  uint64_t cut() const ABSL_LOCKS_EXCLUDED(mu_);

 private:
  struct Connection {
    int fd = -1;
    sockaddr_storage peer{};
    socklen_t peer_len = 0;
    int64_t deadline_steady_ns = 0;
  };
  void Watch() ABSL_LOCKS_EXCLUDED(mu_);
  // Shuts the connection's socket down if its descriptor still is it.
  void CutLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const int local_port_;
  const absl::Duration limit_;
  const uint64_t max_bytes_received_;
  mutable absl::Mutex mu_;
  std::optional<Connection> current_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  bool cut_all_ ABSL_GUARDED_BY(mu_) = false;
  uint64_t cut_ ABSL_GUARDED_BY(mu_) = 0;
  std::thread watcher_;
};

}  // namespace sessiond::server

#endif  // SESSIOND_SERVER_CONNECTION_LIMITS_H_
