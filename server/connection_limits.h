// Copyright sessiond authors. Licensed under the Apache License 2.0.
#ifndef SESSIOND_SERVER_CONNECTION_LIMITS_H_
#define SESSIOND_SERVER_CONNECTION_LIMITS_H_

#include <sys/socket.h>
#include <sys/types.h>

#include <cstdint>
#include <string>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/log_budget.h"

namespace sessiond::server {

// Ends an HttpEndpoint connection that runs past a deadline, or whose
// client sent more than a request of these endpoints needs, and refuses a
// client more connections at once than `max_per_client` when another would
// take the last free worker, or any connection when the waiting line is
// full: shuts the socket
// down, so httplib's next read or write fails and the worker serving it
// moves on. httplib's timeouts bound each read and write, not a
// connection: a client sending its request a byte per second held a worker
// (and, when the endpoint had one thread, /metrics, /healthz and the JWKS,
// and Stop) for as long as it went on. And httplib reads a request line,
// and any number of header lines, into memory whatever their size: a
// client sending a line without end grew the daemon's memory without
// bound. Two deadlines: the request (TLS handshake, request line and
// headers) must be read within `request_limit` of the accept, the whole
// connection ends within `limit`. The bytes received are the kernel's count
// (TCP_INFO), looked at every 10 ms while a connection is served, so a
// client gets at most what it can send in that time past the limit.
//
// httplib hands the accepted socket to no hook, so Begin finds it, on the
// accepting thread right after the accept: the one connected TCP socket of
// this process on the endpoint's local address (its port, and its address
// unless it listens on a wildcard) that is not already watched (by socket
// inode). Begin keeps a duplicate of that descriptor until it is cut or
// End, so the socket a cut shuts down is that connection's even after
// httplib closed its own descriptor and the number went to another socket.
//
// A connection's deadlines run from when a worker takes it (Started);
// until then it may wait for one up to `limit`, so a request that waited
// behind slow clients is not cut as slow itself.
//
// Thread-safe: Begin on the accepting thread (one at a time, between
// accepts), Started, RequestRead and End on the thread serving the
// connection, CutNow from any; one watcher thread of its own.
class ConnectionLimits {
 public:
  // `listener`: the endpoint's bound address; `request_limit`: the longest
  // until its request is read; `limit`: the longest a connection is served;
  // `max_bytes_received`: the most its client may send (request and TLS
  // records); `max_per_client`: the most connections from one client
  // address begun, not ended and not cut, except those answered whose
  // client then closed its end: their workers are winding them up (the
  // next read finds the end), not held by the client.
  ConnectionLimits(const sockaddr_storage& listener,
                   absl::Duration request_limit, absl::Duration limit,
                   uint64_t max_bytes_received, int max_per_client);
  ~ConnectionLimits();  // joins the watcher

  ConnectionLimits(const ConnectionLimits&) = delete;
  ConnectionLimits& operator=(const ConnectionLimits&) = delete;

  struct Begun {
    uint64_t id = 0;  // for RequestRead and End
    // False: it was cut at once (no `room`, or its client has
    // max_per_client connections already); serving it ends at its first
    // read.
    bool admitted = false;
  };
  // A connection was accepted. `room`: whether there is a place for it in
  // the waiting line (false: refused); `worker_free`: whether a worker
  // stays idle after this connection takes one (the per-client limit holds
  // only when none would: clients sharing an address, behind a NAT or on
  // the same host, are served while workers are free, never to the last). Until
  // Started it may wait up to `limit`. A connection not found cannot be cut: it
  // is admitted, whatever `room`, and warned about.
  Begun Begin(bool room, bool worker_free) ABSL_LOCKS_EXCLUDED(mu_);
  // A worker took it: its deadlines run from now.
  void Started(uint64_t id) ABSL_LOCKS_EXCLUDED(mu_);
  // Its request was read (before it is routed): only `limit` counts now.
  void RequestRead(uint64_t id) ABSL_LOCKS_EXCLUDED(mu_);
  // Its answer was written (to the kernel).
  void Answered(uint64_t id) ABSL_LOCKS_EXCLUDED(mu_);
  // It was closed.
  void End(uint64_t id) ABSL_LOCKS_EXCLUDED(mu_);
  // Ends every connection in progress now (the endpoint stops), and every
  // later one as it begins.
  void CutNow() ABSL_LOCKS_EXCLUDED(mu_);

  // Connections cut so far (refused ones included), those of them cut
  // because their request was not read within `request_limit`, and those
  // refused as they began.
  uint64_t cut() const ABSL_LOCKS_EXCLUDED(mu_);
  uint64_t cut_for_slow_request() const ABSL_LOCKS_EXCLUDED(mu_);
  uint64_t refused() const ABSL_LOCKS_EXCLUDED(mu_);

 private:
  struct Connection {
    int fd = -1;           // our duplicate; -1: not found, or cut
    ino_t inode = 0;       // its socket's (0: not found)
    std::string client;    // ClientOf ("" not found)
    bool started = false;  // a worker took it
    bool request_read = false;
    bool answered = false;
    int64_t request_deadline_steady_ns = 0;
    int64_t deadline_steady_ns = 0;
  };
  void Watch() ABSL_LOCKS_EXCLUDED(mu_);
  bool StoppingOrServing() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Shuts the connection's socket down (once).
  void CutLocked(Connection& connection) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  int ConnectionsFrom(const std::string& client) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Logs `event` within the log budget.
  void LogCut(const char* event, const std::string& client, const char* why)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const sockaddr_storage listener_;
  const absl::Duration request_limit_;
  const absl::Duration limit_;
  const uint64_t max_bytes_received_;
  const int max_per_client_;
  mutable absl::Mutex mu_;
  absl::flat_hash_map<uint64_t, Connection> connections_ ABSL_GUARDED_BY(mu_);
  uint64_t next_id_ ABSL_GUARDED_BY(mu_) = 1;
  // Sockets on the listener a scan could not tell apart from the one just
  // accepted (two or more not watched): left out of later scans while they
  // are open, so one connection not found does not make every later one
  // not found.
  absl::flat_hash_set<ino_t> unidentified_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  bool cut_all_ ABSL_GUARDED_BY(mu_) = false;
  uint64_t cut_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t cut_for_slow_request_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t refused_ ABSL_GUARDED_BY(mu_) = 0;
  // Cuts and refusals come in floods (a client opening connections and
  // sending nothing): a share of them is logged.
  logging::LogBudget log_budget_ ABSL_GUARDED_BY(mu_);
  std::thread watcher_;
};

}  // namespace sessiond::server

#endif  // SESSIOND_SERVER_CONNECTION_LIMITS_H_
