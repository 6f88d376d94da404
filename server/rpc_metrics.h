// Copyright sessiond authors. Licensed under the Apache License 2.0.
#ifndef SESSIOND_SERVER_RPC_METRICS_H_
#define SESSIOND_SERVER_RPC_METRICS_H_

#include <grpcpp/server_builder.h>
#include <grpcpp/support/server_interceptor.h>

#include <array>
#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/string_view.h"
#include "common/metrics.h"
#include "common/metrics_exposition.h"

namespace sessiond::server {

// Counts and times gRPC calls, by service, method and status code, for the
// /metrics endpoint.
//
// Two ways to record, because a gRPC 1.51 server interceptor is not free:
// with any interceptor on a call, gRPC finishes every batch of it (each
// read, each write, the status) with an extra empty batch through the
// completion queue, one more callback hop each. That cost StreamValidate-
// Sessions 17% of its throughput (docs/PERFORMANCE.md, "Metrics"). So:
//   - services whose calls are rare or slow anyway (AdminService, RaftPeer's
//     unary methods) go through the interceptor (Instrument): no handler
//     knows about it;
//   - hot services (SessionService) are recorded by their handlers with an
//     RpcTimer: two clock reads and two relaxed atomic adds per call, no
//     allocation, no hop. RaftPeer's streams (every Raft message) are not
//     recorded at all.
//
// A call is timed from its start (the interceptor's creation, or the
// handler's RpcTimer::Start) to its status being sent, and counted under
// that status; one that ends without sending a status (intercepted: the
// client cancelled or the server stopped first; handled: a timer destroyed
// unfinished) counts as CANCELLED. A stream counts once, when it ends, with
// its whole life; its messages are counted apart.
//
// Exported (Collect):
//   sessiond_grpc_server_handled_total{service,method,code}    counter
//   sessiond_grpc_server_handling_seconds{service,method,code} histogram
//   sessiond_grpc_server_stream_messages_received_total{service,method}
//   sessiond_grpc_server_stream_messages_sent_total{service,method}
// Series that never moved are left out.
//
// Thread-safe; the method table is fixed at construction. Must outlive
// every server it instrumented and every RpcTimer (the daemon destroys it
// after both gRPC servers).
class RpcMetrics {
 public:
  // Per method.
  struct Method {
    std::string service;  // "sessiond.v1.SessionService"
    std::string name;     // "ValidateSession"
    bool streaming = false;
    bool intercepted = false;  // recorded by the interceptor
    // By grpc::StatusCode (0 OK .. 16 UNAUTHENTICATED).
    std::array<metrics::LatencyHistogram, 17> by_code;
    metrics::Counter messages_received;
    metrics::Counter messages_sent;
  };

  // Full names ("sessiond.v1.AdminService") of services in the generated
  // descriptor pool: `intercepted` ones have their unary methods recorded
  // by the interceptor, `by_handlers` ones by their handlers. Unknown names
  // are ignored.
  RpcMetrics(const std::vector<std::string>& intercepted,
             const std::vector<std::string>& by_handlers);
  RpcMetrics(const RpcMetrics&) = delete;
  RpcMetrics& operator=(const RpcMetrics&) = delete;

  // Adds the interceptor to `builder` (which must not be given other
  // interceptor creators: gRPC takes one list per builder).
  void Instrument(grpc::ServerBuilder* builder);

  // The method "/package.Service/Method", or null when not known.
  Method* Find(absl::string_view full_method) const;

  void Collect(metrics::ExpositionWriter* writer) const;

 private:
  class Factory;

  // Keyed by "/service/method", as gRPC names a call's method.
  absl::flat_hash_map<std::string, std::unique_ptr<Method>> methods_;
  // The same, in a stable order for the exposition.
  std::vector<const Method*> ordered_;
};

// Times one call for RpcMetrics from its handler. Inactive (records
// nothing, costs nothing) until Start with a method. Not thread-safe, except
// CountReceived/CountSent (atomic); the owner calls Finish at most once,
// from any thread, and destroys it after.
class RpcTimer {
 public:
  RpcTimer() = default;
  ~RpcTimer() {
    if (method_ != nullptr && !finished_) Finish(grpc::StatusCode::CANCELLED);
  }
  RpcTimer(const RpcTimer&) = delete;
  RpcTimer& operator=(const RpcTimer&) = delete;

  // Starts the clock; `method` null: stays inactive. `method` must outlive
  // this timer.
  void Start(RpcMetrics::Method* method) {
    method_ = method;
    if (method_ != nullptr) start_ = std::chrono::steady_clock::now();
  }
  // Records the call's end; later calls do nothing. A timer never finished
  // records CANCELLED when destroyed.
  void Finish(grpc::StatusCode code);
  // A stream's messages.
  void CountReceived() {
    if (method_ != nullptr) method_->messages_received.Increment();
  }
  void CountSent() {
    if (method_ != nullptr) method_->messages_sent.Increment();
  }

 private:
  RpcMetrics::Method* method_ = nullptr;
  std::chrono::steady_clock::time_point start_;
  bool finished_ = false;
};

}  // namespace sessiond::server

#endif  // SESSIOND_SERVER_RPC_METRICS_H_
