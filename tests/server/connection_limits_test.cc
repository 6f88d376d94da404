// Copyright sessiond authors. Licensed under the Apache License 2.0.
//
// ConnectionLimits (server/connection_limits.h) on a real listening socket
// of this process, without httplib: how Begin finds the connection just
// accepted among the process's descriptors, and what it does with one it
// cannot find, and what counts against a client's share. (The limits
// themselves are tested through the JWKS endpoint,
// tests/server/jwks_http_test.cc.)
#include "server/connection_limits.h"

#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <vector>

#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"

namespace sessiond::server {
namespace {

// A listener on 127.0.0.1:<free port>, and connections to it, accepted.
class Loopback {
 public:
  Loopback() {
    listener_ = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    EXPECT_EQ(
        bind(listener_, reinterpret_cast<sockaddr*>(&address), sizeof(address)),
        0);
    EXPECT_EQ(listen(listener_, 16), 0);
    socklen_t length = sizeof(bound_);
    EXPECT_EQ(
        getsockname(listener_, reinterpret_cast<sockaddr*>(&bound_), &length),
        0);
  }
  ~Loopback() {
    for (int fd : fds_) close(fd);
    close(listener_);
  }

  struct Ends {
    int client = -1;
    int accepted = -1;
  };
  // Connects and accepts one connection (both ends stay open until
  // CloseClientEnd).
  Ends ConnectAndAccept() {
    Ends ends;
    ends.client = socket(AF_INET, SOCK_STREAM, 0);
    EXPECT_EQ(connect(ends.client, reinterpret_cast<const sockaddr*>(&bound_),
                      sizeof(sockaddr_in)),
              0);
    ends.accepted = accept(listener_, nullptr, nullptr);
    EXPECT_GE(ends.accepted, 0);
    fds_.push_back(ends.client);
    fds_.push_back(ends.accepted);
    return ends;
  }

  // The client closes its end (`how`: SHUT_WR, a half-close, or -1: the
  // whole socket); returns once the server's end has seen it (bounded:
  // 10 s), as the kernel may take the FIN in later.
  void CloseClientEnd(const Ends& ends, int how) {
    if (how < 0) {
      std::erase(fds_, ends.client);
      close(ends.client);
    } else {
      ASSERT_EQ(shutdown(ends.client, how), 0);
    }
    pollfd polled{.fd = ends.accepted, .events = POLLRDHUP, .revents = 0};
    ASSERT_EQ(poll(&polled, 1, 10'000), 1);
    ASSERT_NE(polled.revents & POLLRDHUP, 0);
  }

  const sockaddr_storage& bound() const { return bound_; }

 private:
  int listener_ = -1;
  sockaddr_storage bound_{};
  std::vector<int> fds_;
};

// A connection Begin finds can be refused: it is shut down, and served
// (to fail at once) where it was accepted.
TEST(ConnectionLimitsTest, AConnectionFoundCanBeRefused) {
  Loopback loopback;
  ConnectionLimits limits(loopback.bound(), absl::Seconds(60),
                          absl::Seconds(60), 1 << 20, 2);
  loopback.ConnectAndAccept();
  const ConnectionLimits::Begun begun = limits.Begin(/*room=*/false, false);
  EXPECT_FALSE(begun.admitted);
  EXPECT_EQ(limits.refused(), 1u);
  limits.End(begun.id);
}

// Two connections on the listener that nothing watches: the one just
// accepted cannot be told apart. It is admitted (it cannot be cut, so it
// must not be served on the accepting thread), and both are left out of
// later scans while they are open, so the next connection is found again.
TEST(ConnectionLimitsTest, ConnectionsNotToldApartDoNotHideTheNextOne) {
  Loopback loopback;
  ConnectionLimits limits(loopback.bound(), absl::Seconds(60),
                          absl::Seconds(60), 1 << 20, 2);
  loopback.ConnectAndAccept();  // accepted behind ConnectionLimits' back
  loopback.ConnectAndAccept();
  const ConnectionLimits::Begun unknown = limits.Begin(/*room=*/false, false);
  EXPECT_TRUE(unknown.admitted) << "refused without being cut";
  EXPECT_EQ(limits.refused(), 0u);
  loopback.ConnectAndAccept();
  const ConnectionLimits::Begun next = limits.Begin(/*room=*/false, false);
  EXPECT_FALSE(next.admitted) << "the next connection was not found";
  EXPECT_EQ(limits.refused(), 1u);
  limits.End(next.id);
  limits.End(unknown.id);
}

// A connection answered whose client then closed its end is being wound
// up by its worker, not held by the client: it does not count against the
// client's share. Counted, a client fetching one document after another
// was refused whenever the workers closed their side late (a busy
// machine). One the client closed before its answer was written still
// counts: a half-close, then a slow read of a large answer, holds a
// worker.
TEST(ConnectionLimitsTest, ConnectionsAnsweredAndClosedDoNotCountAgainstIt) {
  Loopback loopback;
  ConnectionLimits limits(loopback.bound(), absl::Seconds(60),
                          absl::Seconds(60), 1 << 20, 2);
  std::vector<uint64_t> ids;
  std::vector<Loopback::Ends> ends;
  for (int i = 0; i < 2; ++i) {
    ends.push_back(loopback.ConnectAndAccept());
    const ConnectionLimits::Begun begun = limits.Begin(true, true);
    ASSERT_TRUE(begun.admitted);
    limits.Started(begun.id);
    limits.RequestRead(begun.id);
    ids.push_back(begun.id);
  }
  // The next connection, when it would take the last free worker: whether
  // it was admitted. Kept open and held (its request read) when it was.
  uint64_t refused = 0;
  const auto next_admitted = [&]() {
    ends.push_back(loopback.ConnectAndAccept());
    const ConnectionLimits::Begun next = limits.Begin(true, false);
    if (next.admitted) {
      limits.Started(next.id);
      limits.RequestRead(next.id);
      ids.push_back(next.id);
    } else {
      ++refused;
      limits.End(next.id);
    }
    EXPECT_EQ(limits.refused(), refused);
    return next.admitted;
  };
  EXPECT_FALSE(next_admitted()) << "two held";
  ASSERT_NO_FATAL_FAILURE(loopback.CloseClientEnd(ends[0], SHUT_WR));
  EXPECT_FALSE(next_admitted()) << "half-closed before its answer";
  limits.Answered(ids[0]);
  EXPECT_TRUE(next_admitted()) << "answered, then half-closed";
  // ids[1] and the one just admitted are held.
  ASSERT_NO_FATAL_FAILURE(loopback.CloseClientEnd(ends[1], -1));
  EXPECT_FALSE(next_admitted()) << "closed before its answer";
  limits.Answered(ids[1]);
  EXPECT_TRUE(next_admitted()) << "answered, then closed";
  for (uint64_t id : ids) limits.End(id);
}

// A connection no worker took within `limit` is cut for its wait, not
// counted as a slow request: its request deadline runs from Started.
TEST(ConnectionLimitsTest, AConnectionWaitingPastItsLimitIsCut) {
  Loopback loopback;
  ConnectionLimits limits(loopback.bound(), absl::Seconds(60),
                          absl::Milliseconds(50), 1 << 20, 2);
  loopback.ConnectAndAccept();
  const ConnectionLimits::Begun waiting = limits.Begin(true, true);
  ASSERT_TRUE(waiting.admitted);
  // Bounded: 20 s.
  for (int i = 0; i < 2000 && limits.cut() == 0; ++i) {
    absl::SleepFor(absl::Milliseconds(10));
  }
  EXPECT_EQ(limits.cut(), 1u);
  EXPECT_EQ(limits.cut_for_slow_request(), 0u);
  limits.End(waiting.id);
}

}  // namespace
}  // namespace sessiond::server
