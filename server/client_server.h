// Copyright sessiond authors. Licensed under the Apache License 2.0.
#ifndef SESSIOND_SERVER_CLIENT_SERVER_H_
#define SESSIOND_SERVER_CLIENT_SERVER_H_

#include <grpcpp/completion_queue.h>
#include <grpcpp/server_builder.h>

#include <atomic>
#include <cstddef>
#include <memory>
#include <thread>

#include "absl/time/time.h"
#include "server/session_service.h"

namespace sessiond::server {

// How the client API's gRPC server is bounded (issue 10, "clients that never
// read"; docs/API.md "Limits" and docs/RELIABILITY.md give the figures).
struct ClientServerSettings {
  // The largest request message, from the request limits
  // (MaxRequestMessageBytes): a CreateSessions of max_batch_create sessions
  // at --max_record_bytes still fits.
  int max_receive_message_bytes = 0;
  // HTTP/2 streams (calls) open at once on one connection
  // (--max_concurrent_streams). A client past it waits for a stream on its
  // side and gets no error, so a client flooding this node queues its calls
  // at home instead of in the node's gRPC queues, ahead of everyone's
  // validations (docs/PERFORMANCE.md, "Overload"). 100 is RFC 9113's
  // recommended floor.
  int max_concurrent_streams_per_connection = 100;
  // gRPC's memory quota for the server's transports (read buffers, calls):
  // past it gRPC shrinks the flow-control windows it grants and, at the
  // limit, closes connections rather than let the process grow.
  size_t memory_quota_bytes = size_t{512} << 20;
  // Threads of gRPC's synchronous server (only the reflection service uses
  // it; every sessiond method runs on the callback API).
  int max_sync_threads = 16;
  // Keepalive (docs/API.md, "Connections"): the server pings a connection
  // idle this long and drops it when no answer comes within the timeout
  // (a client that vanished without a FIN: validate streams have no
  // deadline, so nothing else would notice); clients may ping as often as
  // every min_client_ping_ms, also without a call in flight.
  int keepalive_time_ms = 60 * 1000;
  int keepalive_timeout_ms = 20 * 1000;
  int min_client_ping_ms = 10 * 1000;
  // A connection is asked to go away (GOAWAY) after this long, so clients
  // spread over nodes again after a restart or a scale-up; the calls in
  // flight, long validate streams included, finish first (no grace limit).
  int max_connection_age_ms = 30 * 60 * 1000;
};

ClientServerSettings ClientServerSettingsFor(
    const SessionServiceOptions& options);

// Applies `settings` to the client API's builder. Besides them, the HTTP/2
// BDP probe is turned off: gRPC then grants each stream its default 64 KiB
// receive window instead of growing it to several MiB on a busy connection,
// which let 50 streams that write without reading grow the daemon by 35 to
// 66 MiB in 12 to 19 s, still rising (with it off: +13 to 17 MiB, flat).
void ConfigureClientServer(const ClientServerSettings& settings,
                           grpc::ServerBuilder* builder);

// A thread that reads the process's gRPC sockets while several validate
// streams keep gRPC's own threads from doing so.
//
// Why: gRPC 1.51 runs callback-API reactors on a few "nexting" threads
// (CallbackAlternativeCQ) that poll the sockets only when they have no
// callback left to run (grpc_completion_queue_next polls an empty queue
// only). Streams whose next message is already buffered keep that queue
// from ever emptying: 50 clients writing to StreamValidateSessions without
// reading left another client's ValidateSession unread in the kernel for
// 5 to 54 s, until something else happened to poll. While this thread
// polls, sockets are read as data arrives; a new call then waits only for
// its turn in the callback queue, which is first come first served per
// operation (a stream gets one message per turn, like every other call).
//
// When: it polls (waits in AsyncNext on a completion queue nothing is ever
// queued on, so it is always there to be gRPC's designated poller) through
// every interval that follows one in which kBusyStreams or more streams
// read a message, and sleeps otherwise. One stream cannot starve the
// sockets (the two callback threads drain its read and its write), and an
// always-present poller costs a single fast stream ~15-20% of its
// throughput: the poller reads the socket and must wake a callback thread,
// where a callback thread would have read it and run the callback itself
// (docs/RELIABILITY.md has the figures). The epoll set is process-wide,
// so this one thread serves every gRPC server of the process (the peer
// server too).
//
// Thread-safe. Owned by the daemon; must be destroyed after the server the
// completion queue was added to (gRPC requires a server's completion queues
// to outlive it).
class SocketPoller {
 public:
  // Streams that read in one interval for the next to be polled through.
  static constexpr int kBusyStreams = 2;
  static constexpr absl::Duration kInterval = absl::Milliseconds(5);

  // Adds a frequently polled completion queue to `builder`. `activity` is
  // the service's (SessionServiceImpl::stream_activity).
  SocketPoller(grpc::ServerBuilder* builder,
               std::shared_ptr<StreamActivity> activity);
  ~SocketPoller();  // stops the thread, shuts the queue down and drains it

  SocketPoller(const SocketPoller&) = delete;
  SocketPoller& operator=(const SocketPoller&) = delete;

  // Starts the thread ("sd-grpc-poll"). REQUIRES: the server was built.
  void Start();

 private:
  void Loop();

  const std::shared_ptr<StreamActivity> activity_;
  std::unique_ptr<grpc::ServerCompletionQueue> cq_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

}  // namespace sessiond::server

#endif  // SESSIOND_SERVER_CLIENT_SERVER_H_
