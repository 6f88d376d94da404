// Copyright sessiond authors. Licensed under the Apache License 2.0.
#include "server/connection_limits.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <fcntl.h>
#include <linux/tcp.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "common/log.h"
#include "common/steady_clock.h"
#include "server/client_host.h"

namespace sessiond::server {
namespace {

// Whether the client has closed its end of the connection (a FIN or a
// reset reached us). Once answered, such a connection is its worker's to
// wind up, not the client's to hold: under load a worker closes its side
// after the client, done with its answer, has opened its next connection.
bool ClientClosed(int fd) {
  pollfd polled{.fd = fd, .events = POLLRDHUP, .revents = 0};
  return poll(&polled, 1, 0) == 1 &&
         (polled.revents & (POLLRDHUP | POLLHUP | POLLERR)) != 0;
}

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

// The socket inode of `fd` (0 when fstat fails).
ino_t InodeOf(int fd) {
  struct stat st;
  return fstat(fd, &st) == 0 ? st.st_ino : 0;
}

// Who `fd`'s peer is, for the per-client limit: its IPv4 address, or the
// /64 its IPv6 address is in (a host is given a whole /64, so one address
// each would be no limit); "" when it has none.
std::string ClientOf(int fd) {
  sockaddr_storage peer{};
  socklen_t peer_len = sizeof(peer);
  if (getpeername(fd, reinterpret_cast<sockaddr*>(&peer), &peer_len) != 0) {
    return "";
  }
  char text[INET6_ADDRSTRLEN] = {};
  if (peer.ss_family == AF_INET) {
    const in_addr& v4 = reinterpret_cast<const sockaddr_in&>(peer).sin_addr;
    return inet_ntop(AF_INET, &v4, text, sizeof(text)) != nullptr ? text : "";
  }
  if (peer.ss_family != AF_INET6) return "";
  return Ipv6ClientHost(reinterpret_cast<const sockaddr_in6&>(peer).sin6_addr);
}

// The connected TCP sockets on a listener, as one scan of this process's
// descriptors found them.
struct Scan {
  bool done = false;  // false: /proc/self/fd could not be read
  // Every socket's inode.
  absl::flat_hash_set<ino_t> present;
  // The sockets not excluded: a descriptor of each, by inode.
  absl::flat_hash_map<ino_t, int> candidates;
};

Scan ScanConnections(const sockaddr_storage& listener,
                     const absl::flat_hash_set<ino_t>& excluded) {
  Scan scan;
  DIR* dir = opendir("/proc/self/fd");
  if (dir == nullptr) return scan;
  scan.done = true;
  while (const dirent* entry = readdir(dir)) {
    char* end = nullptr;
    const long fd = std::strtol(entry->d_name, &end, 10);
    if (end == entry->d_name || *end != '\0' || fd == dirfd(dir)) continue;
    if (!IsConnectionOn(static_cast<int>(fd), listener)) continue;
    const ino_t inode = InodeOf(static_cast<int>(fd));
    if (inode == 0) continue;
    scan.present.insert(inode);
    if (!excluded.contains(inode)) {
      scan.candidates.emplace(inode, static_cast<int>(fd));
    }
  }
  closedir(dir);
  return scan;
}

// Shuts `fd`'s socket down and resets it: the thread serving it returns
// from its reads, and a client blocked writing into a full window learns
// at once (a FIN alone left it probing a zero window for minutes). The
// disconnect may be refused while a thread waits inside the socket
// (EBUSY); the FIN stands then.
void ShutDown(int fd) {
  shutdown(fd, SHUT_RDWR);
  sockaddr unspecified{};
  unspecified.sa_family = AF_UNSPEC;
  connect(fd, &unspecified, sizeof(unspecified));
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
                                   uint64_t max_bytes_received,
                                   int max_per_client)
    : listener_(listener),
      request_limit_(request_limit),
      limit_(limit),
      max_bytes_received_(max_bytes_received),
      max_per_client_(max_per_client),
      log_budget_(10, absl::Minutes(1)) {
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

ConnectionLimits::Begun ConnectionLimits::Begin(bool room, bool worker_free) {
  absl::flat_hash_set<ino_t> excluded;
  {
    absl::MutexLock lock(&mu_);
    for (const auto& [id, connection] : connections_) {
      if (connection.inode != 0) excluded.insert(connection.inode);
    }
    excluded.insert(unidentified_.begin(), unidentified_.end());
  }
  // Outside the lock: a scan of every descriptor. Only this thread adds
  // connections, and one that ends meanwhile has no descriptor left (its
  // inode is excluded anyway). The descriptor of the connection just
  // accepted stays its own until this returns.
  Scan scan = ScanConnections(listener_, excluded);
  Connection connection;
  int original_fd = -1;
  if (scan.candidates.size() == 1) {
    connection.inode = scan.candidates.begin()->first;
    original_fd = scan.candidates.begin()->second;
    connection.fd = fcntl(original_fd, F_DUPFD_CLOEXEC, 0);
    connection.client = ClientOf(original_fd);
  }
  const int64_t now = SteadyNowNs();
  // Until a worker takes it (Started): as long as a whole connection.
  connection.request_deadline_steady_ns =
      now + absl::ToInt64Nanoseconds(limit_);
  connection.deadline_steady_ns = connection.request_deadline_steady_ns;

  absl::MutexLock lock(&mu_);
  if (scan.done) {
    // Sockets that could not be told apart stay excluded while they are
    // open, so the next connection is found again.
    absl::erase_if(unidentified_,
                   [&](ino_t inode) { return !scan.present.contains(inode); });
    if (scan.candidates.size() > 1) {
      for (const auto& [inode, fd] : scan.candidates) {
        unidentified_.insert(inode);
      }
    }
  }
  Begun begun;
  begun.id = next_id_++;
  const char* refusal = nullptr;
  if (!room) {
    refusal =
        "every worker is busy and the waiting line is full: closed at once";
  } else if (!worker_free && !connection.client.empty() &&
             ConnectionsFrom(connection.client) >= max_per_client_) {
    refusal =
        "this client already has as many connections as one may, and this "
        "one would take the last free worker: closed at once, so one client "
        "cannot hold every worker";
  }
  Connection& added = connections_[begun.id] = std::move(connection);
  if (original_fd < 0) {
    // Not found: it cannot be cut, so it is never refused (a refused
    // connection is served on the accepting thread, which its first read
    // would then hold) and no limit holds it. Said, so it is not silent.
    logging::Warn(
        "http.connection_not_watched",
        logging::Fields()
            .Add("port", PortOf(listener_))
            .Add("candidates", static_cast<uint64_t>(scan.candidates.size()))
            .Add("msg",
                 "the accepted connection was not found among this "
                 "process's descriptors (none left, or another "
                 "socket on the same address not told apart): "
                 "served without its time, size and per-client "
                 "limits"));
    begun.admitted = true;
    return begun;
  }
  if (added.fd < 0) {
    // Found, but no descriptor left to keep: it is known (its inode), and
    // can be shut down now, not later.
    logging::Warn("http.connection_not_watched",
                  logging::Fields()
                      .Add("port", PortOf(listener_))
                      .Add("client", added.client)
                      .Add("msg",
                           "no descriptor left to watch the accepted "
                           "connection: served without its time and size "
                           "limits"));
  }
  begun.admitted = refusal == nullptr && !cut_all_;
  if (refusal != nullptr) {
    ++refused_;
    LogCut("http.connection_refused", added.client, refusal);
  }
  if (!begun.admitted) {
    if (added.fd >= 0) {
      CutLocked(added);
    } else {
      ShutDown(original_fd);
      ++cut_;
    }
  }
  return begun;
}

void ConnectionLimits::Started(uint64_t id) {
  const int64_t now = SteadyNowNs();
  absl::MutexLock lock(&mu_);
  auto it = connections_.find(id);
  if (it == connections_.end()) return;
  it->second.started = true;
  it->second.request_deadline_steady_ns =
      now + absl::ToInt64Nanoseconds(request_limit_);
  it->second.deadline_steady_ns = now + absl::ToInt64Nanoseconds(limit_);
}

void ConnectionLimits::RequestRead(uint64_t id) {
  absl::MutexLock lock(&mu_);
  auto it = connections_.find(id);
  if (it != connections_.end()) it->second.request_read = true;
}

void ConnectionLimits::Answered(uint64_t id) {
  absl::MutexLock lock(&mu_);
  auto it = connections_.find(id);
  if (it != connections_.end()) it->second.answered = true;
}

void ConnectionLimits::End(uint64_t id) {
  absl::MutexLock lock(&mu_);
  auto it = connections_.find(id);
  if (it == connections_.end()) return;
  if (it->second.fd >= 0) close(it->second.fd);
  connections_.erase(it);
}

void ConnectionLimits::CutNow() {
  absl::MutexLock lock(&mu_);
  cut_all_ = true;
  for (auto& [id, connection] : connections_) CutLocked(connection);
}

uint64_t ConnectionLimits::cut() const {
  absl::MutexLock lock(&mu_);
  return cut_;
}

uint64_t ConnectionLimits::cut_for_slow_request() const {
  absl::MutexLock lock(&mu_);
  return cut_for_slow_request_;
}

uint64_t ConnectionLimits::refused() const {
  absl::MutexLock lock(&mu_);
  return refused_;
}

int ConnectionLimits::ConnectionsFrom(const std::string& client) const {
  int count = 0;
  for (const auto& [id, connection] : connections_) {
    // A client that closes before its answer is written (a half-close,
    // then a slow read) still holds its worker: counted.
    if (connection.client == client && connection.fd >= 0 &&
        !(connection.answered && ClientClosed(connection.fd))) {
      ++count;
    }
  }
  return count;
}

bool ConnectionLimits::StoppingOrServing() const {
  if (stopping_) return true;
  for (const auto& [id, connection] : connections_) {
    if (connection.fd >= 0) return true;
  }
  return false;
}

void ConnectionLimits::CutLocked(Connection& connection) {
  if (connection.fd < 0) return;
  // Our duplicate keeps the socket open: it is that connection's.
  ShutDown(connection.fd);
  close(connection.fd);
  connection.fd = -1;  // once; the inode stays known until End
  ++cut_;
}

void ConnectionLimits::LogCut(const char* event, const std::string& client,
                              const char* why) {
  uint64_t suppressed = 0;
  if (!log_budget_.Admit(absl::Nanoseconds(SteadyNowNs()), &suppressed)) {
    return;
  }
  logging::Fields fields;
  fields.Add("port", PortOf(listener_))
      .Add("client", client)
      .Add("request_limit_ms", absl::ToInt64Milliseconds(request_limit_))
      .Add("limit_ms", absl::ToInt64Milliseconds(limit_))
      .Add("max_bytes_received", max_bytes_received_)
      .Add("max_per_client", max_per_client_);
  if (suppressed > 0) fields.Add("suppressed", suppressed);
  logging::Warn(event, fields.Add("msg", why));
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
    const int64_t now = SteadyNowNs();
    for (auto& [id, connection] : connections_) {
      if (connection.fd < 0) continue;
      const char* why = nullptr;
      if (!connection.started && now >= connection.deadline_steady_ns) {
        why =
            "a connection waited longer than its limit for a worker (every "
            "worker held by slow clients): closed";
      } else if (!connection.request_read &&
                 now >= connection.request_deadline_steady_ns) {
        ++cut_for_slow_request_;
        why =
            "a client did not send its request within its limit (one that "
            "sends too slowly, or not at all): closed, so its worker serves "
            "the next one";
      } else if (now >= connection.deadline_steady_ns) {
        why =
            "a connection took longer than its limit (a client that reads "
            "too slowly): closed, so its worker serves the next one";
      } else if (BytesReceived(connection.fd) > max_bytes_received_) {
        why =
            "a client sent more than a request needs (a request line or "
            "headers without end): closed before they fill memory";
      }
      if (why == nullptr) continue;
      LogCut("http.connection_cut", connection.client, why);
      CutLocked(connection);
    }
  }
}

}  // namespace sessiond::server
