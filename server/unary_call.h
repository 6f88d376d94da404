// Copyright sessiond authors. Licensed under the Apache License 2.0.
#ifndef SESSIOND_SERVER_UNARY_CALL_H_
#define SESSIOND_SERVER_UNARY_CALL_H_

#include <grpcpp/grpcpp.h>
#include <grpcpp/support/byte_buffer.h>
#include <grpcpp/support/server_callback.h>

#include <memory>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "google/protobuf/message.h"
#include "server/rpc_metrics.h"
#include "server/write_path.h"

namespace sessiond::server {

// Parses a request that arrived as bytes. gRPC's own parse failure answers
// UNIMPLEMENTED with an empty message, which a client reads as "wrong
// server" and retries; this says what is wrong: INVALID_ARGUMENT naming the
// message type. `buffer` is left as it was.
absl::Status ParseRequest(const grpc::ByteBuffer& buffer,
                          google::protobuf::Message* request);

// Serializes an answer for a raw method or stream.
absl::Status SerializeResponse(const google::protobuf::Message& response,
                               grpc::ByteBuffer* buffer);

// The trailing metadata of an answer that names the leader: on UNAVAILABLE,
// "sessiond-leader" (its client address) and "sessiond-leader-id"; for a
// write no node was asked to propose, "sessiond-not-proposed: 1".
void AddLeaderHint(grpc::CallbackServerContext* context,
                   const LeaderHint& hint);
void AddStatusHints(grpc::CallbackServerContext* context,
                    const absl::Status& status, const LeaderHint& hint);
// "grpc-retry-pushback-ms": the status's RetryInfo delay plus 1 ms, or -1 (do
// not retry) for an UNAVAILABLE or RESOURCE_EXHAUSTED without one, so that
// gRPC's own retries (client/service_config.json) wait as the server asks.
// Every finishing helper below adds it.
void AddRetryPushback(grpc::CallbackServerContext* context,
                      const absl::Status& status);
// The server deadline of a call (WritePath::ServerDeadline): the client's
// deadline, if it set one, else `default_timeout` from now.
absl::Time CallDeadline(const grpc::CallbackServerContext* context,
                        absl::Duration default_timeout);

// Finishes a typed call at once with `status` (a refusal before any work):
// returns gRPC's default reactor, finished.
grpc::ServerUnaryReactor* FinishNow(grpc::CallbackServerContext* context,
                                    const absl::Status& status);

// Finishes a typed call (gRPC's default reactor) with `status` and its hints.
void FinishWithHint(grpc::CallbackServerContext* context,
                    grpc::ServerUnaryReactor* reactor,
                    const absl::Status& status, const LeaderHint& hint);

// One unary call of a raw (bytes in, bytes out) method: owns the parsed
// request and the response until gRPC is done with the call. Handlers fill
// response() and call Reply exactly once, from any thread.
class UnaryCallBase : public grpc::ServerUnaryReactor {
 public:
  grpc::CallbackServerContext* context() const { return context_; }

  // Serializes the response when `status` is OK, then finishes the call;
  // "sessiond-not-proposed: 1" in the trailing metadata for a status with
  // kNotProposedPayload (a write refused before anything was proposed).
  void Reply(const absl::Status& status);
  // The same, with the leader hint in trailing metadata on UNAVAILABLE.
  void Reply(const absl::Status& status, const LeaderHint& hint);

  void OnDone() override { delete this; }

  // Times the call for /metrics from now until Reply (null: not timed).
  void StartTimer(RpcMetrics::Method* method) { timer_.Start(method); }

  // Keeps `held` until gRPC is done with the call (OnDone), which is after
  // the client took the whole answer: a place counted against a bound on
  // what calls hold (LargeBatchSlot) is given back only then. Call before
  // Reply, on the handler's thread.
  void HoldUntilDone(std::shared_ptr<void> held) {
    held_.push_back(std::move(held));
  }

 protected:
  UnaryCallBase(grpc::CallbackServerContext* context, grpc::ByteBuffer* out)
      : context_(context), out_(out) {}
  virtual const google::protobuf::Message& response_message() const = 0;
  // Frees the response message once Reply serialized it (the bytes stay
  // until the client takes them).
  virtual void ReleaseResponse() = 0;

 private:
  grpc::CallbackServerContext* const context_;
  grpc::ByteBuffer* const out_;              // gRPC's, valid until OnDone
  RpcTimer timer_;                           // finished by Reply
  std::vector<std::shared_ptr<void>> held_;  // HoldUntilDone
};

template <typename Request, typename Response>
class UnaryCall final : public UnaryCallBase {
 public:
  using RequestType = Request;
  using ResponseType = Response;

  UnaryCall(grpc::CallbackServerContext* context, grpc::ByteBuffer* out)
      : UnaryCallBase(context, out) {}

  const Request& request() const { return request_; }
  Request* mutable_request() { return &request_; }
  Response* response() { return &response_; }

 private:
  const google::protobuf::Message& response_message() const override {
    return response_;
  }
  void ReleaseResponse() override { Response().Swap(&response_); }

  Request request_;
  Response response_;
};

// Starts one raw unary call: parses the request, then hands the call to
// `handler`, or answers INVALID_ARGUMENT when the bytes do not parse.
// `timed`: the call's entry in RpcMetrics (null: not timed).
template <typename Request, typename Response, typename Handler>
grpc::ServerUnaryReactor* ServeUnary(grpc::CallbackServerContext* context,
                                     const grpc::ByteBuffer* in,
                                     grpc::ByteBuffer* out, Handler handler,
                                     RpcMetrics::Method* timed = nullptr) {
  auto* call = new UnaryCall<Request, Response>(context, out);
  call->StartTimer(timed);
  if (absl::Status s = ParseRequest(*in, call->mutable_request()); !s.ok()) {
    call->Reply(s);
    return call;
  }
  handler(call);
  return call;
}

}  // namespace sessiond::server

#endif  // SESSIOND_SERVER_UNARY_CALL_H_
