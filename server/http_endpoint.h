// Copyright sessiond authors. Licensed under the Apache License 2.0.
#ifndef SESSIOND_SERVER_HTTP_ENDPOINT_H_
#define SESSIOND_SERVER_HTTP_ENDPOINT_H_

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace httplib {
class Server;
}  // namespace httplib

namespace sessiond::server {

// HTTPS for an HttpEndpoint (issue 9, "TLS on every listener"): a
// certificate chain and key, and a CA bundle to verify client certificates.
// The daemon gives it the copies its gRPC listeners serve (<data_dir>/tls,
// server/verified_tls_files.h), so what it loads has verified already; its
// own checks below are a second line.
//
// Renewal without a restart, like the gRPC listeners (tls_credentials.h),
// but not by gRPC's file watcher: at a handshake, when `refresh_s` or more
// has passed since the files were last looked at, they are stat(2)ed, and
// read again if any changed (device, inode, size or mtime). So a new
// connection made `refresh_s` after the files were written is served the
// new pair; connections already open keep theirs. Where gRPC's watcher
// removes the credentials while a file is missing or unreadable, and
// installs a file that reads but does not parse, here a set of files that
// does not load (missing, unparsable, a key that is not the certificate's,
// a CA bundle without a certificate, a certificate that does not chain to
// it or expired) keeps the last good pair serving, and
// logs one warning (http.tls_reload_failed) per change of the files; the
// next change is tried again. Replace the files as for gRPC: each whole,
// by rename(2).
struct HttpTlsOptions {
  // This endpoint's certificate chain, PEM, leaf first.
  std::string cert_file;
  // The leaf's private key, PEM, unencrypted. May be cert_file (one file
  // holding both, read once per load).
  std::string key_file;
  // PEM bundle of the CAs a client certificate must chain to. When given,
  // the certificate must chain to it too, unexpired (CheckTlsFiles), at
  // every load: a renewal from another CA, or an old certificate put back,
  // keeps the last good pair serving.
  std::string ca_file;
  // Refuse the handshake of a client without a certificate that chains to
  // ca_file (and is fit for client use). When false no client certificate
  // is asked for.
  bool require_client_cert = false;
  // The least time, in seconds, between two looks at the files (>= 1).
  int64_t refresh_s = 60;
};

class HttpTlsIdentity;  // http_endpoint.cc
class ConnectionLimits;

// A small HTTP or HTTPS endpoint (cpp-httplib), the shape of sessiond's
// side doors (/metrics, the JWKS): one thread accepts, kWorkers threads
// answer, one request per connection (no keep-alive), with 2 s read and
// write timeouts (a TLS handshake included), kRequestLimit to send its
// request, and at most kConnectionLimit and kMaxBytesReceived for the
// whole connection (ConnectionLimits: a client that trickles its request a
// byte at a time, or sends a line without end, is cut off). A client
// (address, or IPv6 /64) has at most kMaxConnectionsPerClient connections
// at once when another would take the last free worker, and at most
// kMaxWaiting wait for a
// worker; more are closed as they are accepted. So clients that stall hold a
// few workers for a bounded time, never the node, and one client cannot hold
// every worker: before, with one thread, some 30 idle sockets held a verifier's
// JWKS fetch for 30 s. Range requests are refused (416): httplib 0.11 builds
// every range asked for in memory, and one header may ask for thousands.
// SO_REUSEADDR only (httplib's default SO_REUSEPORT would let a second
// process bind the same port and take half the requests).
//
// Thread-safe. The handlers `routes` registers run on the workers (several
// at once) and must be callable until Stop() returns.
class HttpEndpoint {
 public:
  // Parses `listen` (host:port or [v6]:port; port 0: the kernel picks one),
  // with `tls` loads the certificate and key (and the CA bundle), lets
  // `routes` register the handlers, binds, and starts the thread
  // `thread_name`. InvalidArgument when `listen` is not host:port or a TLS
  // file does not load (naming it), Unavailable when it cannot be bound (in
  // use, not local). `what` names the endpoint in those messages and in the
  // log ("metrics", "jwks"). Logs one http.listening line (address,
  // scheme http or https, whether a client certificate is required).
  static absl::StatusOr<std::unique_ptr<HttpEndpoint>> Start(
      const std::string& listen, absl::string_view what,
      const char* thread_name, const std::optional<HttpTlsOptions>& tls,
      const std::function<void(httplib::Server&)>& routes);

  ~HttpEndpoint();  // Stop()s
  HttpEndpoint(const HttpEndpoint&) = delete;
  HttpEndpoint& operator=(const HttpEndpoint&) = delete;

  // Closes the listener, cuts the connections in progress (a handler
  // running finishes), joins the threads. Idempotent.
  void Stop() ABSL_LOCKS_EXCLUDED(mu_);

  // The longest until a connection's request is read (TLS handshake,
  // request line, headers: a few round trips), the longest a connection is
  // served (from when a worker takes it to close; also the longest it may
  // wait for one), and the most its client may send: a GET with its
  // headers, and a TLS handshake, take a few KiB.
  static constexpr absl::Duration kRequestLimit = absl::Seconds(1);
  static constexpr absl::Duration kConnectionLimit = absl::Seconds(10);
  static constexpr uint64_t kMaxBytesReceived = 64 * 1024;
  // Threads that answer; connections that may wait for one; connections
  // one client (an IPv4 address, an IPv6 /64) may have at once when
  // another would take the last free worker (a scraper, a verifier, and a
  // health probe each need one at a time).
  static constexpr int kWorkers = 4;
  static constexpr size_t kMaxWaiting = 32;
  static constexpr int kMaxConnectionsPerClient = 2;
  // Connections the kernel holds until they are accepted.
  static constexpr int kListenBacklog = 128;

  // host:port bound (with the real port when listen had port 0).
  const std::string& address() const { return address_; }
  // Whether it speaks HTTPS.
  bool tls() const { return tls_ != nullptr; }
  // Connections cut so far because their request was not read within
  // kRequestLimit.
  uint64_t connections_cut_for_slow_request() const;
  // Connections closed as they were accepted (the waiting line full, or
  // their client over kMaxConnectionsPerClient).
  uint64_t connections_refused() const;

 private:
  HttpEndpoint();

  std::string address_;  // set by Start, then constant
  // Null for plain HTTP. The SSL_CTX in http_ calls into it on every
  // handshake: declared before http_, so destroyed after it.
  std::unique_ptr<HttpTlsIdentity> tls_;
  std::unique_ptr<httplib::Server> http_;  // an httplib::SSLServer with tls_
  // Cuts the connection in progress past its limits, and at Stop.
  std::unique_ptr<ConnectionLimits> deadline_;
  std::thread thread_;
  absl::Mutex mu_;
  bool stopped_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace sessiond::server

#endif  // SESSIOND_SERVER_HTTP_ENDPOINT_H_
