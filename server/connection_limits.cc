// Copyright sessiond authors. Licensed under the Apache License 2.0.
#include "server/connection_limits.h"

#include <dirent.h>
#include <linux/tcp.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sys/socket.h>

#include <cstddef>
#include <cstdlib>
#include <cstring>

#include "common/log.h"
#include "common/steady_clock.h"

namespace sessiond::server {
namespace {

// The port of a local address, or -1.
int PortOf(const sockaddr_storage& address) {
  if (address.ss_family == AF_INET) {
    return ntohs(reinterpret_cast<const sockaddr_in&>(address).sin_port);
  }
  if (address.ss_family == AF_INET6) {
    return ntohs(reinterpret_cast<const sockaddr_in6&>(address).sin6_port);
  }
  return -1;
}

// Whether `fd` is a connected socket on `local_port`; its peer then.
bool IsConnectionOn(int fd, int local_port, sockaddr_storage* peer,
                    socklen_t* peer_len) {
  sockaddr_storage local{};
  socklen_t local_len = sizeof(local);
  if (getsockname(fd, reinterpret_cast<sockaddr*>(&local), &local_len) != 0 ||
      PortOf(local) != local_port) {
    return false;
  }
  *peer_len = sizeof(*peer);
  // A listening socket has no peer (ENOTCONN).
  return getpeername(fd, reinterpret_cast<sockaddr*>(peer), peer_len) == 0;
}

// The descriptor of the connection accepted on `local_port`, or -1.
int FindConnection(int local_port, sockaddr_storage* peer,
                   socklen_t* peer_len) {
  DIR* dir = opendir("/proc/self/fd");
  if (dir == nullptr) return -1;
  int found = -1;
  while (const dirent* entry = readdir(dir)) {
    char* end = nullptr;
    const long fd = std::strtol(entry->d_name, &end, 10);
    if (end == entry->d_name || *end != '\0' || fd == dirfd(dir)) continue;
    if (IsConnectionOn(static_cast<int>(fd), local_port, peer, peer_len)) {
      found = static_cast<int>(fd);
      break;
    }
  }
  closedir(dir);
  return found;
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

ConnectionLimits::ConnectionLimits(int local_port, absl::Duration limit,
                                   uint64_t max_bytes_received)
    : local_port_(local_port),
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
  connection.fd =
      FindConnection(local_port_, &connection.peer, &connection.peer_len);
  connection.deadline_steady_ns =
      SteadyNowNs() + absl::ToInt64Nanoseconds(limit_);
  absl::MutexLock lock(&mu_);
  current_ = connection;
  if (cut_all_) CutLocked();
}

void ConnectionLimits::End() {
  absl::MutexLock lock(&mu_);
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

void ConnectionLimits::CutLocked() {
  if (!current_.has_value() || current_->fd < 0) return;
  sockaddr_storage peer{};
  socklen_t peer_len = 0;
  // Still open as that connection: End has not run, so httplib has not
  // closed it (or it did, and the number now names another socket).
  if (IsConnectionOn(current_->fd, local_port_, &peer, &peer_len) &&
      peer_len == current_->peer_len &&
      std::memcmp(&peer, &current_->peer, peer_len) == 0) {
    shutdown(current_->fd, SHUT_RDWR);
    ++cut_;
  }
  current_->fd = -1;  // once
}

void ConnectionLimits::Watch() {
  absl::MutexLock lock(&mu_);
  while (!stopping_) {
    const bool serving = current_.has_value() && current_->fd >= 0;
    // Woken each 10 ms while a connection is served (its bytes), each
    // 100 ms otherwise: the deadline is on the steady clock, which a mutex
    // wait does not take.
    mu_.AwaitWithTimeout(absl::Condition(&stopping_),
                         absl::Milliseconds(serving ? 10 : 100));
    if (!current_.has_value() || current_->fd < 0) continue;
    const char* why = nullptr;
    if (SteadyNowNs() >= current_->deadline_steady_ns) {
      why =
          "a connection took longer than its limit (a client that sends or "
          "reads too slowly): closed, so the next one is served";
    } else if (BytesReceived(current_->fd) > max_bytes_received_) {
      why =
          "a client sent more than a request needs (a request line or "
          "headers without end): closed before they fill memory";
    }
    if (why == nullptr) continue;
    logging::Warn("http.connection_cut",
                  logging::Fields()
                      .Add("port", local_port_)
                      .Add("limit_ms", absl::ToInt64Milliseconds(limit_))
                      .Add("max_bytes_received", max_bytes_received_)
                      .Add("msg", why));
    CutLocked();
  }
}

}  // namespace sessiond::server
