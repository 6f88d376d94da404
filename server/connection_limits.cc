// Copyright sessiond authors. Licensed under the Apache License 2.0.
#include "server/connection_limits.h"

#include <dirent.h>
#include <fcntl.h>
#include <linux/tcp.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstddef>
#include <cstdlib>
#include <cstring>

#include "common/log.h"
#include "common/steady_clock.h"

namespace sessiond::server {
namespace {

// The port of an address, or -1.
int PortOf(const sockaddr_storage& address) {
  if (address.ss_family == AF_INET) {
    return ntohs(reinterpret_cast<const sockaddr_in&>(address).sin_port);
  }
  if (address.ss_family == AF_INET6) {
    return ntohs(reinterpret_cast<const sockaddr_in6&>(address).sin6_port);
  }
  return -1;
}

// Whether `address` is 0.0.0.0 or ::.
bool IsWildcard(const sockaddr_storage& address) {
  if (address.ss_family == AF_INET) {
    return reinterpret_cast<const sockaddr_in&>(address).sin_addr.s_addr ==
           htonl(INADDR_ANY);
  }
  if (address.ss_family == AF_INET6) {
    const in6_addr& a =
        reinterpret_cast<const sockaddr_in6&>(address).sin6_addr;
    return std::memcmp(&a, &in6addr_any, sizeof(a)) == 0;
  }
  return false;
}

// Whether `local` (a socket's own address) is on `listener`: the same port,
// and the same address unless the listener takes every address (no other
// socket can then be bound to that port).
bool IsOn(const sockaddr_storage& local, const sockaddr_storage& listener) {
  if (PortOf(local) < 0 || PortOf(local) != PortOf(listener)) return false;
  if (IsWildcard(listener)) return true;
  if (local.ss_family != listener.ss_family) return false;
  if (local.ss_family == AF_INET) {
    return reinterpret_cast<const sockaddr_in&>(local).sin_addr.s_addr ==
           reinterpret_cast<const sockaddr_in&>(listener).sin_addr.s_addr;
  }
  return std::memcmp(&reinterpret_cast<const sockaddr_in6&>(local).sin6_addr,
                     &reinterpret_cast<const sockaddr_in6&>(listener).sin6_addr,
                     sizeof(in6_addr)) == 0;
}

// Whether `fd` is a connected TCP socket on `listener`.
bool IsConnectionOn(int fd, const sockaddr_storage& listener) {
  int type = 0;
  socklen_t type_len = sizeof(type);
  if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &type_len) != 0 ||
      type != SOCK_STREAM) {
    return false;
  }
  sockaddr_storage local{};
  socklen_t local_len = sizeof(local);
  if (getsockname(fd, reinterpret_cast<sockaddr*>(&local), &local_len) != 0 ||
      !IsOn(local, listener)) {
    return false;
  }
  sockaddr_storage peer{};
  socklen_t peer_len = sizeof(peer);
  // A listening socket has no peer (ENOTCONN).
  return getpeername(fd, reinterpret_cast<sockaddr*>(&peer), &peer_len) == 0;
}

// A duplicate of the descriptor of the one connection accepted on
// `listener`, or -1 (none, several, or no descriptor left).
int DuplicateConnection(const sockaddr_storage& listener) {
  DIR* dir = opendir("/proc/self/fd");
  if (dir == nullptr) return -1;
  int found = -1;
  int matches = 0;
  while (const dirent* entry = readdir(dir)) {
    char* end = nullptr;
    const long fd = std::strtol(entry->d_name, &end, 10);
    if (end == entry->d_name || *end != '\0' || fd == dirfd(dir)) continue;
    if (IsConnectionOn(static_cast<int>(fd), listener)) {
      found = static_cast<int>(fd);
      ++matches;
    }
  }
  closedir(dir);
  if (matches != 1) return -1;
  return fcntl(found, F_DUPFD_CLOEXEC, 0);
}

// The bytes the kernel received on `fd` so far (0 when it cannot say).
uint64_t BytesReceived(int fd) {
  tcp_info info{};
  socklen_t len = sizeof(info);
  if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &info, &len) != 0 ||
      len < offsetof(tcp_info, tcpi_bytes_received) +
                sizeof(info.tcpi_bytes_received)) {
    return 0;
  }
  return info.tcpi_bytes_received;
}

}  // namespace

ConnectionLimits::ConnectionLimits(const sockaddr_storage& listener,
                                   absl::Duration request_limit,
                                   absl::Duration limit,
                                   uint64_t max_bytes_received)
    : listener_(listener),
      request_limit_(request_limit),
      limit_(limit),
      max_bytes_received_(max_bytes_received) {
  watcher_ = std::thread([this] {
    pthread_setname_np(pthread_self(), "sd-http-cut");
    Watch();
  });
}

ConnectionLimits::~ConnectionLimits() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  watcher_.join();
}

void ConnectionLimits::Begin() {
  Connection connection;
  connection.fd = DuplicateConnection(listener_);
  if (connection.fd < 0) {
    // Not watched: no limit holds it. Said, so it is not silent.
    logging::Warn("http.connection_not_watched",
                  logging::Fields()
                      .Add("port", PortOf(listener_))
                      .Add("msg",
                           "the accepted connection was not found among this "
                           "process's descriptors (none left, or another "
                           "socket on the same address): served without "
                           "its time and size limits"));
  }
  const int64_t now = SteadyNowNs();
  connection.request_deadline_steady_ns =
      now + absl::ToInt64Nanoseconds(request_limit_);
  connection.deadline_steady_ns = now + absl::ToInt64Nanoseconds(limit_);
  absl::MutexLock lock(&mu_);
  current_ = connection;
  if (cut_all_) CutLocked();
}

void ConnectionLimits::RequestRead() {
  absl::MutexLock lock(&mu_);
  if (current_.has_value()) current_->request_read = true;
}

void ConnectionLimits::End() {
  absl::MutexLock lock(&mu_);
  if (current_.has_value() && current_->fd >= 0) close(current_->fd);
  current_.reset();
}

void ConnectionLimits::CutNow() {
  absl::MutexLock lock(&mu_);
  cut_all_ = true;
  CutLocked();
}

uint64_t ConnectionLimits::cut() const {
  absl::MutexLock lock(&mu_);
  return cut_;
}

uint64_t ConnectionLimits::cut_for_slow_request() const {
  absl::MutexLock lock(&mu_);
  return cut_for_slow_request_;
}

bool ConnectionLimits::StoppingOrServing() const {
  return stopping_ || (current_.has_value() && current_->fd >= 0);
}

void ConnectionLimits::CutLocked() {
  if (!current_.has_value() || current_->fd < 0) return;
  // Our duplicate keeps the socket open: it is that connection's. The
  // shutdown wakes the serving thread (its reads end); the disconnect then
  // resets the connection, so a client blocked writing into a full window
  // learns at once: a FIN alone left it probing a zero window for minutes.
  // The disconnect may be refused while a thread waits inside the socket
  // (EBUSY); the FIN stands then.
  shutdown(current_->fd, SHUT_RDWR);
  sockaddr unspecified{};
  unspecified.sa_family = AF_UNSPEC;
  connect(current_->fd, &unspecified, sizeof(unspecified));
  close(current_->fd);
  current_->fd = -1;  // once
  ++cut_;
}

void ConnectionLimits::Watch() {
  absl::MutexLock lock(&mu_);
  while (!stopping_) {
    if (StoppingOrServing()) {
      // Each 10 ms while a connection is served (its bytes): the deadlines
      // are on the steady clock, which a mutex wait does not take.
      mu_.AwaitWithTimeout(absl::Condition(&stopping_), absl::Milliseconds(10));
    } else {
      // Until one begins (Begin wakes this at once).
      mu_.Await(absl::Condition(this, &ConnectionLimits::StoppingOrServing));
    }
    if (!current_.has_value() || current_->fd < 0) continue;
    const int64_t now = SteadyNowNs();
    const char* why = nullptr;
    if (!current_->request_read &&
        now >= current_->request_deadline_steady_ns) {
      ++cut_for_slow_request_;
      why =
          "a client did not send its request within its limit (one that "
          "sends too slowly, or not at all): closed, so the next one is "
          "served";
    } else if (now >= current_->deadline_steady_ns) {
      why =
          "a connection took longer than its limit (a client that reads too "
          "slowly): closed, so the next one is served";
    } else if (BytesReceived(current_->fd) > max_bytes_received_) {
      why =
          "a client sent more than a request needs (a request line or "
          "headers without end): closed before they fill memory";
    }
    if (why == nullptr) continue;
    logging::Warn(
        "http.connection_cut",
        logging::Fields()
            .Add("port", PortOf(listener_))
            .Add("request_limit_ms", absl::ToInt64Milliseconds(request_limit_))
            .Add("limit_ms", absl::ToInt64Milliseconds(limit_))
            .Add("max_bytes_received", max_bytes_received_)
            .Add("msg", why));
    CutLocked();
  }
}

}  // namespace sessiond::server
