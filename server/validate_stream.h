// Copyright sessiond authors. Licensed under the Apache License 2.0.
#ifndef SESSIOND_SERVER_VALIDATE_STREAM_H_
#define SESSIOND_SERVER_VALIDATE_STREAM_H_

#include <grpcpp/support/byte_buffer.h>
#include <grpcpp/support/server_callback.h>

#include <cstddef>
#include <cstdint>
#include <deque>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "server/auth.h"
#include "server/rpc_metrics.h"
#include "server/touch_buffer.h"
#include "sessiond/v1/session.pb.h"

namespace sessiond::server {

class SessionServiceImpl;

// One StreamValidateSessions call: answers in request order. Each request
// waits for its own read barrier; reading and writing overlap (the next
// request is read while earlier answers wait or are written), with at most
// kMaxOutstanding answers owed, so a client that pipelines is not held to
// one round trip per validation, and a client that sends but never reads
// stops being read (HTTP/2 flow control then holds it back) instead of
// growing the server's memory.
//
// The stream ends with a status, never silently:
//   OK                 the client half-closed and every answer was written;
//   INVALID_ARGUMENT   a message did not parse (after the answers before it);
//   PERMISSION_DENIED  the caller may no longer call (a reload withdrew its
//   UNAUTHENTICATED    role or token), or a reader asked to touch; likewise;
//   the barrier's      a request could not be answered (e.g. UNAVAILABLE for
//   error              a LINEARIZABLE read without a leader), likewise;
//   UNAVAILABLE        the node is shutting down (Drain): every request read
//                      so far is answered first, then "shutting down; retry
//                      (another node)".
//
// gRPC allows one read and one write outstanding at a time; the state under
// mu_ decides which Start* call is due, and the calls are made after mu_ is
// released. The reactor finishes only once no barrier callback is pending,
// so none can arrive after OnDone.
class ValidateStream final
    : public grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer> {
 public:
  static constexpr size_t kMaxOutstanding = 64;
  // A request's bytes are kept until its answer is written: each of the
  // kMaxOutstanding is held to this (the longest token, and room to spare),
  // so a stream that sends huge messages and reads no answer holds about
  // 1 MiB, not 64 times the server's receive limit.
  static constexpr size_t kMaxRequestBytes = 16 * 1024;
  // InvalidArgument for a message longer than kMaxRequestBytes.
  static absl::Status CheckRequestSize(size_t bytes);

  ValidateStream(SessionServiceImpl* service,
                 grpc::CallbackServerContext* context);

  // Stops reading; the answers owed are written, then the stream ends with
  // UNAVAILABLE. Called by the service's drain, from any thread.
  void Drain();

  void OnReadDone(bool ok) override;
  void OnWriteDone(bool ok) override;
  void OnDone() override;

 private:
  struct Slot {
    // Kept until the answer is ready (then freed: only `wire` is kept until
    // it is written): the read path works on them.
    sessiond::v1::ValidateSessionRequest request;
    sessiond::v1::ValidateSessionResponse response;
    // Recorded once the answer is written: a stream that ends before it
    // reaches the client records none for it.
    std::vector<PendingTouch> touches;
    grpc::ByteBuffer wire;
    absl::Status status;
    bool ready = false;
  };
  struct Actions {
    bool read = false;
    const grpc::ByteBuffer* write = nullptr;
    bool finish = false;
  };

  Actions NextActionsLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Run(const Actions& actions);

  SessionServiceImpl* const service_;
  grpc::CallbackServerContext* const context_;
  // /metrics: the stream's life and messages; finished once, by Run (or
  // the constructor's refusal), before OnDone.
  RpcTimer timer_;
  // Only touched between a StartRead and its OnReadDone.
  grpc::ByteBuffer incoming_;

  absl::Mutex mu_;
  std::deque<Slot> queue_ ABSL_GUARDED_BY(mu_);  // deque: slots stay put
  uint64_t messages_read_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t activity_epoch_ ABSL_GUARDED_BY(mu_) = 0;  // StreamActivity's
  int barriers_pending_ ABSL_GUARDED_BY(mu_) = 0;
  bool writing_ ABSL_GUARDED_BY(mu_) = false;  // queue_.front() in flight
  bool reading_ ABSL_GUARDED_BY(mu_) = false;
  bool read_paused_ ABSL_GUARDED_BY(mu_) = false;
  bool reads_done_ ABSL_GUARDED_BY(mu_) = false;
  bool draining_ ABSL_GUARDED_BY(mu_) = false;
  bool broken_ ABSL_GUARDED_BY(mu_) = false;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
  absl::Status status_ ABSL_GUARDED_BY(mu_);
  StreamAuthorization authorization_ ABSL_GUARDED_BY(mu_);
};

}  // namespace sessiond::server

#endif  // SESSIOND_SERVER_VALIDATE_STREAM_H_
