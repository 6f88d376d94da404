// Copyright sessiond authors. Licensed under the Apache License 2.0.
#ifndef SESSIOND_SERVER_AUDIT_RECORDER_H_
#define SESSIOND_SERVER_AUDIT_RECORDER_H_

#include <grpcpp/grpcpp.h>
#include <grpcpp/support/server_callback.h>

#include <atomic>
#include <cstdint>
#include <functional>
#include <initializer_list>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "common/strong_types.h"
#include "google/protobuf/message.h"
#include "server/auth.h"
#include "server/delay_queue.h"
#include "server/round_robin_worker.h"
#include "server/write_path.h"
#include "sessiond/v1/admin.pb.h"

namespace sessiond::server {

// The field names whose values never enter an audit entry (or a log line):
// wherever they occur in a request, at any depth, a string or bytes value
// becomes "[redacted]" and any other value is cleared.
inline constexpr std::initializer_list<absl::string_view> kAuditSecretFields = {
    "token",       "confirmation_token", "authorization", "private_key",
    "kek",         "sealed_private_key", "bearer",        "new_token",
    "bearer_token"};
inline constexpr char kRedacted[] = "[redacted]";

// `request` as protobuf JSON (the .proto's field names), with the
// kAuditSecretFields redacted; "{}" if it cannot be printed.
std::string RedactedRequestJson(const google::protobuf::Message& request);

// The audit entry of one call as JSON (the .proto's field names) for the
// `audit.write_failed` log line.
std::string AuditEntryJson(const sessiond::v1::AuditEntry& entry);

struct AuditRecorderOptions {
  NodeId self;
  // Off: calls run unaudited (the daemon says so at start-up).
  bool enabled = true;
  // Carried in every AuditCommand (storage drops by them at application).
  int64_t retention_ms = 90ll * 24 * 3600 * 1000;
  uint32_t max_entries = 100'000;
  // How long an entry's write may take. An answered call waits for it at
  // most this long and never past the client's deadline: its answer then
  // goes out while the write goes on (a call answered near or after its
  // client's deadline, such as a backup that ran on past `sessionctl
  // --timeout`, is still recorded).
  absl::Duration commit_timeout = absl::Seconds(3);
  // Where the answer's own deadline is kept. Required; must outlive the
  // recorder.
  DelayQueue* timers = nullptr;
  // This node's cluster time (ClusterClock::NowMs), for received_ms.
  std::function<int64_t()> now_ms;
  // Who called (AuthProcessor::CallerOf); null without TLS, where calls
  // have no identity. Must outlive the recorder.
  const AuthProcessor* auth = nullptr;
};

// Records audited calls in the replicated audit log (docs/OPERATIONS.md,
// "Audit"). A handler wraps its body:
//
//   return audit_->Record(context, "/sessiond.v1.AdminService/Flush",
//                         *request, [=, this] { ...body... });
//
// Two entries per call, with one call_id. First the PHASE_REQUESTED entry
// is proposed through the WritePath (forwarded to the leader from a
// follower), and the body runs only once it applied: a change is never
// made without its record. A requested entry that did not commit in time
// refuses the call, which did nothing (the body never ran), marked as never
// proposed. So the body runs later (on the recorder's own thread sd-audit,
// or inline for a data-plane call: BodyThread): it must capture by value,
// and must not block for long (every body answers through callbacks).
//
// The body returns its reactor (gRPC's default reactor or a UnaryCall).
// That reactor is not handed to gRPC: it is bound to a relay (a
// grpc::ServerCallbackUnary of our own, the way gRPC's own test peer binds
// the default reactor), so its Finish reaches the recorder instead of the
// wire. The recorder then proposes the PHASE_ANSWERED entry, with the
// result, waits for it to apply, at most commit_timeout, and only then
// finishes the real call with the body's status, unchanged. An entry that
// did not commit in time is logged whole as `audit.write_failed` (error
// level) and counted; it may still commit later (the write's outcome is
// unknown).
//
// Why not a server interceptor: server/auth.h (an interceptor costs every
// call a completion-queue hop, and cannot hold back a reply).
//
// Thread-safe. Bodies run on sd-audit; Finish may come from any thread; the
// WritePath's callback finishes the real call (it never blocks). The WritePath
// must outlive the recorder, and the recorder every call it records (the daemon
// drains the server before destroying either).
class AuditRecorder {
 public:
  AuditRecorder(AuditRecorderOptions options, WritePath* writes);

  AuditRecorder(const AuditRecorder&) = delete;
  AuditRecorder& operator=(const AuditRecorder&) = delete;

  // Where a body runs once its requested entry applied.
  enum class BodyThread {
    // sd-audit, one body at a time: an admin body may take a while (a
    // flush's preview counts the sessions it would revoke).
    kAuditWorker,
    // The thread that learned of the commit (a driver stage, a gRPC or the
    // timers thread): for a short, non-blocking body of the data plane, so
    // it never waits behind an admin one.
    kInline,
  };

  // Audits the call and runs `body` (the handler) once its requested entry
  // committed, as the class comment says. `request` is read now (its JSON is
  // taken before the body runs). Returns the reactor to hand to gRPC. When
  // off, runs the body now and returns what it returns.
  //
  // A body may call context->DefaultReactor() although it runs after the
  // method handler returned, which gRPC's comment advises against: in gRPC
  // 1.51 it only constructs the reactor in the context, which lives until
  // the call's OnDone, and that reactor is bound to the relay, never to the
  // call.
  // `method` is the full gRPC method name (gRPC 1.51's callback context
  // does not say which method it serves).
  grpc::ServerUnaryReactor* Record(
      grpc::CallbackServerContext* context, absl::string_view method,
      const google::protobuf::Message& request,
      std::function<grpc::ServerUnaryReactor*()> body,
      BodyThread where = BodyThread::kAuditWorker);

  bool enabled() const { return options_.enabled; }
  // Entries that did not commit before their call was answered.
  uint64_t write_failures() const {
    return write_failures_.load(std::memory_order_relaxed);
  }
  // Entries proposed (committed or not).
  uint64_t recorded() const {
    return recorded_.load(std::memory_order_relaxed);
  }

 private:
  class AuditedCall;

  // The entry's who/where/what and a new call_id, before the body runs.
  sessiond::v1::AuditEntry Begin(
      grpc::CallbackServerContext* context, absl::string_view method,
      const google::protobuf::Message& request) const;
  // Proposes `entry`, for at most commit_timeout, and calls `then` once:
  // with OK when it applied, its error when it could not be, or
  // DEADLINE_EXCEEDED at `answer_by` if that comes first. When the entry
  // applies after that answer, `applied_after_answer` (if any) gets it.
  void Commit(sessiond::v1::AuditEntry entry, absl::Time answer_by,
              std::function<void(absl::Status)> then,
              std::function<void(absl::Status)> applied_after_answer = nullptr);

  const AuditRecorderOptions options_;
  WritePath* const writes_;  // outlives this
  std::atomic<uint64_t> write_failures_{0};
  std::atomic<uint64_t> recorded_{0};
  // Runs the kAuditWorker bodies, one at a time, once their requested
  // entries applied; null when off. Last: stopped (running what is queued)
  // before the rest goes.
  const std::unique_ptr<RoundRobinWorker> bodies_;
};

}  // namespace sessiond::server

#endif  // SESSIOND_SERVER_AUDIT_RECORDER_H_
