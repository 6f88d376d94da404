// Copyright sessiond authors. Licensed under the Apache License 2.0.
#ifndef SESSIOND_SERVER_SESSION_SERVICE_H_
#define SESSIOND_SERVER_SESSION_SERVICE_H_

#include <any>
#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "server/auth.h"
#include "server/cluster_clock.h"
#include "server/create_rate_limiter.h"
#include "server/limits.h"
#include "server/page_token.h"
#include "server/peer_wall_clocks.h"
#include "server/read_barrier.h"
#include "server/round_robin_worker.h"
#include "server/rpc_metrics.h"
#include "server/touch_buffer.h"
#include "server/unary_call.h"
#include "server/validation_metrics.h"
#include "server/write_admission.h"
#include "server/write_path.h"
#include "sessiond/v1/session.grpc.pb.h"
#include "storage/session_state_machine.h"
#include "storage/session_table.h"

namespace sessiond::server {

class AuditRecorder;
class JwtIssuer;

struct SessionServiceOptions {
  Limits limits;
  // Signs JWT tokens (CreateSession token_format JWT); null: JWT creates
  // are refused with FAILED_PRECONDITION. Must outlive the service.
  JwtIssuer* jwt_issuer = nullptr;
  // How far this node's wall clock is from the other members': a JWT
  // create is refused on a node more than a minute off (JwtWallMs). Null,
  // or knowing nothing: judged against cluster time. Must outlive it.
  const PeerWallClocks* wall_clocks = nullptr;
  // Most requests in one BatchValidateSessions call.
  size_t max_batch_validate = 10000;
  // Most batches of more than kBatchValidateSlice tokens this node holds
  // unanswered (at the read barrier, which can hold a LINEARIZABLE one until
  // linearizable_timeout_ms, or waiting for the batch thread); one more is
  // refused with RESOURCE_EXHAUSTED and a retry delay. Each holds its
  // request and answers (up to about 2 MB for 10,000 tokens), and at 64
  // full batches the last waits about a second for the thread.
  size_t max_waiting_batch_validations = 64;
  // Bytes of large answers (BatchValidateSessions, ListUserSessions answers
  // of more than kLargeAnswerBytes) this node holds until their clients take
  // them; one more is refused with RESOURCE_EXHAUSTED and a retry delay. A
  // client that never reads its answers holds them on the node, and one
  // small batch of large sessions answers megabytes. One answer larger than
  // the whole bound passes when no other is held.
  uint64_t max_held_answer_bytes = 128ull << 20;
  // Most StreamValidateSessions streams open at once on this node; one more
  // is refused with RESOURCE_EXHAUSTED. Each costs about 18 KB idle, and
  // about 270 KB while its client writes without reading (at most 64
  // answers and a 64 KiB receive window; docs/RELIABILITY.md).
  size_t max_validate_streams = 1000;
  // Most sessions in one CreateSessions call.
  size_t max_batch_create = kMaxBatchCreate;
  // How long a call without a client deadline may wait (writes,
  // linearizable reads).
  absl::Duration request_timeout = absl::Seconds(10);
  // This node: a write it forwarded to another (the leader) is answered
  // with the leader in trailing metadata, so clients learn where to send
  // writes.
  NodeId self;
  // Keys ListUserSessions page tokens (PageTokenCodec).
  uint64_t cluster_id = 0;
  // How long RevokeUserSessions stays undoable (AdminService.RestoreFlush).
  int64_t revocation_retention_ms = 24ll * 3600 * 1000;
  // CreateSession.request_id: how long (cluster time) a retry with the same
  // request_id gets the first create's session back, and the most request
  // ids the cluster remembers (--create_request_window_ms,
  // --create_request_max_entries; storage/create_requests.h).
  int64_t create_request_window_ms = 10 * 60 * 1000;
  uint32_t create_request_max_entries = 100'000;
  // The most live sessions one user may have; a create beyond is refused
  // with FAILED_PRECONDITION (USER_SESSION_LIMIT). 0: no cap
  // (--max_sessions_per_user).
  uint32_t max_sessions_per_user = 0;
  // Where calls are counted and timed for /metrics (recorded here, not by
  // an interceptor: server/rpc_metrics.h says why); null: not recorded.
  // Must outlive the service.
  RpcMetrics* rpc_metrics = nullptr;
  // Creates per caller (server/create_rate_limiter.h) and who a caller is
  // (null: no limit; no identities, callers are told apart by host).
  CreateRateLimiter* create_rate_limiter = nullptr;
  const AuthProcessor* auth = nullptr;
  // Sheds creates when writes queue (server/write_admission.h); null: none.
  WriteAdmission* write_admission = nullptr;
  // Records RevokeUserSessions, a bulk revocation (server/audit_recorder.h);
  // null: not recorded. Must outlive the service.
  AuditRecorder* audit = nullptr;
};

// The base with every SessionService method in its raw form (bytes in,
// bytes out): requests are parsed by the service (ServeUnary,
// ValidateStream), so a request that does not parse is INVALID_ARGUMENT
// with a message instead of gRPC's bare UNIMPLEMENTED, and a stream never
// ends silently on a bad message.
using RawSessionService = sessiond::v1::SessionService::WithRawCallbackMethod_GetSession<
    sessiond::v1::SessionService::WithRawCallbackMethod_RotateSessionToken<
        sessiond::v1::SessionService::WithRawCallbackMethod_CreateSession<
            sessiond::v1::SessionService::WithRawCallbackMethod_CreateSessions<
                sessiond::v1::SessionService::WithRawCallbackMethod_ValidateSession<
                    sessiond::v1::SessionService::WithRawCallbackMethod_BatchValidateSessions<
                        sessiond::v1::SessionService::WithRawCallbackMethod_StreamValidateSessions<
                            sessiond::v1::SessionService::WithRawCallbackMethod_TouchSession<
                                sessiond::v1::SessionService::WithRawCallbackMethod_UpdateSession<
                                    sessiond::v1::SessionService::
                                        WithRawCallbackMethod_RevokeSession<
                                            sessiond::v1::SessionService::
                                                WithRawCallbackMethod_ListUserSessions<
                                                    sessiond::v1::SessionService::
                                                        WithRawCallbackMethod_RevokeUserSessions<
                                                            sessiond::v1::SessionService::
                                                                Service>>>>>>>>>>>>;

class ValidateStream;

// How many StreamValidateSessions streams read a message lately, for the
// SocketPoller (server/client_server.h): several busy streams can keep
// gRPC's callback threads from ever reading sockets. Approximate, and
// thread-safe.
class StreamActivity {
 public:
  // A stream read a message; `stream_epoch` is the stream's own counter
  // (initially 0), so each stream counts once per interval.
  void NoteRead(uint64_t* stream_epoch) {
    const uint64_t epoch = epoch_.load(std::memory_order_relaxed);
    if (*stream_epoch == epoch) return;
    *stream_epoch = epoch;
    active_.fetch_add(1, std::memory_order_relaxed);
  }
  // The streams that read since the last call; starts a new interval.
  int TakeActive() {
    epoch_.fetch_add(1, std::memory_order_relaxed);
    return active_.exchange(0, std::memory_order_relaxed);
  }

 private:
  std::atomic<uint64_t> epoch_{1};
  std::atomic<int> active_{0};
};

// The tokens of a BatchValidateSessions call validated in one turn.
inline constexpr int kBatchValidateSlice = 256;

// An answer past this size counts against max_held_answer_bytes until its
// client took it: gRPC sends a client that does not read about this much
// (its flow-control window) and keeps the rest.
inline constexpr uint64_t kLargeAnswerBytes = 64 * 1024;

// The status of a call refused because the node is shutting down.
absl::Status ShuttingDown();

// sessiond.v1.SessionService on gRPC's callback API. Two paths, the same on
// every node of a cluster:
//
//   read path   Validate, BatchValidate, StreamValidate, ListUserSessions:
//               ReadBarrier::Wait for the requested consistency, then the
//               SessionTable under its shard locks, at this node's cluster
//               time (ClusterClock::NowMs) with the replicated leeway.
//   write path  the request is checked against the limits, turned into a
//               sessiond.v1.internal.Command, and handed to WritePath (which
//               proposes it here or forwards it to the leader); the call
//               finishes with the applied result. A write answered by a
//               follower, and any UNAVAILABLE answer, carries the leader in
//               trailing metadata ("sessiond-leader", "sessiond-leader-id")
//               when it is known.
//
// Batches of more than kBatchValidateSlice tokens are validated on one
// thread of their own ("sd-batch"), kBatchValidateSlice tokens at a time,
// taking turns (RoundRobinWorker): a 10,000-token batch neither holds the
// completion thread that answers every other read nor takes more than one
// core, and small batches are not stuck behind big ones.
//
// Until set_ready(true) (the node has replayed its log) every call answers
// UNAVAILABLE: an answer from a table still being replayed could say
// UNKNOWN for a session that exists, and UNAVAILABLE never looks like
// "logged out".
//
// Thread-safe. Every pointer must outlive the service and every call it
// serves (the daemon shuts the gRPC server down first).
class SessionServiceImpl final : public RawSessionService {
 public:
  template <typename Request, typename Response>
  using Call = UnaryCall<Request, Response>;

  SessionServiceImpl(const SessionServiceOptions& options,
                     const storage::SessionTable* table,
                     const storage::SessionStateMachine* state_machine,
                     ClusterClock* clock, ReadBarrier* reads, WritePath* writes,
                     TouchBuffer* touches);

  void set_ready(bool ready) { ready_.store(ready, std::memory_order_release); }

  // Shutdown, first half: every new call is refused with UNAVAILABLE
  // "shutting down; retry (another node)", writes already submitted run to
  // their result, and every open StreamValidateSessions writes the answers
  // it owes and then ends with that same UNAVAILABLE.
  void BeginDrain();
  // Waits until no write is in flight and no stream is open, at most
  // `timeout`. Returns whether that was reached.
  bool WaitForDrained(absl::Duration timeout) const;
  // Shutdown, second half: waits until no call has been refused for
  // `quiet`, or until `deadline_steady_ns` (SteadyNowNs: a wall clock
  // stepped during the drain must not stretch or cut it); returns whether
  // callers left. gRPC (1.51) cancels, rather than refuses, a call that
  // reaches the server after Server::Shutdown began, so the server goes on
  // answering UNAVAILABLE until the callers have moved to another node.
  bool WaitForCallersToLeave(absl::Duration quiet,
                             int64_t deadline_steady_ns) const;

  // The raw methods: each parses its request and serves it below.
  grpc::ServerUnaryReactor* CreateSession(grpc::CallbackServerContext* context,
                                          const grpc::ByteBuffer* request,
                                          grpc::ByteBuffer* response) override;
  grpc::ServerUnaryReactor* CreateSessions(grpc::CallbackServerContext* context,
                                           const grpc::ByteBuffer* request,
                                           grpc::ByteBuffer* response) override;
  grpc::ServerUnaryReactor* ValidateSession(
      grpc::CallbackServerContext* context, const grpc::ByteBuffer* request,
      grpc::ByteBuffer* response) override;
  grpc::ServerUnaryReactor* BatchValidateSessions(
      grpc::CallbackServerContext* context, const grpc::ByteBuffer* request,
      grpc::ByteBuffer* response) override;
  grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer>*
  StreamValidateSessions(grpc::CallbackServerContext* context) override;
  grpc::ServerUnaryReactor* TouchSession(grpc::CallbackServerContext* context,
                                         const grpc::ByteBuffer* request,
                                         grpc::ByteBuffer* response) override;
  grpc::ServerUnaryReactor* UpdateSession(grpc::CallbackServerContext* context,
                                          const grpc::ByteBuffer* request,
                                          grpc::ByteBuffer* response) override;
  grpc::ServerUnaryReactor* RevokeSession(grpc::CallbackServerContext* context,
                                          const grpc::ByteBuffer* request,
                                          grpc::ByteBuffer* response) override;
  grpc::ServerUnaryReactor* ListUserSessions(
      grpc::CallbackServerContext* context, const grpc::ByteBuffer* request,
      grpc::ByteBuffer* response) override;
  grpc::ServerUnaryReactor* RevokeUserSessions(
      grpc::CallbackServerContext* context, const grpc::ByteBuffer* request,
      grpc::ByteBuffer* response) override;
  grpc::ServerUnaryReactor* GetSession(grpc::CallbackServerContext* context,
                                       const grpc::ByteBuffer* request,
                                       grpc::ByteBuffer* response) override;
  grpc::ServerUnaryReactor* RotateSessionToken(
      grpc::CallbackServerContext* context, const grpc::ByteBuffer* request,
      grpc::ByteBuffer* response) override;

  // The read path for one validation: waits for `level` (from the request),
  // then answers into `response`; `done` gets OK with an outcome, or the
  // error to end the call with. `request` and `response` must live until
  // `done` is called. `deferred` (not null): a touch the request asks for
  // goes there, for the caller to record (RecordTouches) once its answer
  // is sure to reach the client; it must live until `done` too.
  void Validate(const sessiond::v1::ValidateSessionRequest& request,
                absl::Time deadline,
                sessiond::v1::ValidateSessionResponse* response,
                std::function<void(absl::Status)> done,
                std::vector<PendingTouch>* deferred = nullptr);
  void RecordTouches(const std::vector<PendingTouch>& touches) {
    touches_->RecordAll(touches);
  }

  // The server deadline of a call (WritePath::ServerDeadline).
  absl::Time DeadlineOf(const grpc::CallbackServerContext* context) const {
    return CallDeadline(context, options_.request_timeout);
  }

  // OK when `request`, read from a validate stream, may be answered:
  // judges the caller again under a changed policy, and a touch=true
  // request by whether the caller may touch. Always OK without identities
  // (no TLS).
  absl::Status AuthorizeStreamRequest(
      const grpc::ServerContextBase& context,
      const sessiond::v1::ValidateSessionRequest& request,
      StreamAuthorization* judged) const;

  // ValidateStream registers itself while open so a drain can end it.
  // Not OK when draining (UNAVAILABLE) or when max_validate_streams are open
  // (RESOURCE_EXHAUSTED): the stream ends at once with that status.
  absl::Status RegisterStream(ValidateStream* stream);
  void UnregisterStream(ValidateStream* stream);

  LeaderHint leader_hint() const { return writes_->leader_hint(); }
  // A follower's answer to a write names the leader; the leader's own does
  // not, nor looks the leader up (every write it answers would).
  void AddLeaderHintUnlessLeading(grpc::CallbackServerContext* context) const {
    if (writes_->leader_id() != options_.self) {
      AddLeaderHint(context, leader_hint());
    }
  }

  // Shared with the SocketPoller, which may outlive the service.
  const std::shared_ptr<StreamActivity>& stream_activity() const {
    return stream_activity_;
  }

  // Validations answered, by outcome (for /metrics).
  const ValidationMetrics& validations() const { return validations_; }
  // This service's `method` ("StreamValidateSessions") in
  // options.rpc_metrics; null when not recorded.
  RpcMetrics::Method* TimedMethod(absl::string_view method) const;

 private:
  using CreateCall = Call<sessiond::v1::CreateSessionRequest,
                          sessiond::v1::CreateSessionResponse>;
  using CreateBatchCall = Call<sessiond::v1::CreateSessionsRequest,
                               sessiond::v1::CreateSessionsResponse>;
  using ValidateCall = Call<sessiond::v1::ValidateSessionRequest,
                            sessiond::v1::ValidateSessionResponse>;
  using BatchValidateCall = Call<sessiond::v1::BatchValidateSessionsRequest,
                                 sessiond::v1::BatchValidateSessionsResponse>;
  using TouchCall = Call<sessiond::v1::TouchSessionRequest,
                         sessiond::v1::TouchSessionResponse>;
  using UpdateCall = Call<sessiond::v1::UpdateSessionRequest,
                          sessiond::v1::UpdateSessionResponse>;
  using RevokeCall = Call<sessiond::v1::RevokeSessionRequest,
                          sessiond::v1::RevokeSessionResponse>;
  using ListCall = Call<sessiond::v1::ListUserSessionsRequest,
                        sessiond::v1::ListUserSessionsResponse>;
  using RevokeUserCall = Call<sessiond::v1::RevokeUserSessionsRequest,
                              sessiond::v1::RevokeUserSessionsResponse>;
  using GetCall =
      Call<sessiond::v1::GetSessionRequest, sessiond::v1::GetSessionResponse>;
  using RotateCall = Call<sessiond::v1::RotateSessionTokenRequest,
                          sessiond::v1::RotateSessionTokenResponse>;

  void ServeCreate(CreateCall* call);
  void ServeCreateBatch(CreateBatchCall* call);
  void ServeValidate(ValidateCall* call);
  void ServeBatchValidate(BatchValidateCall* call);
  void ServeTouch(TouchCall* call);
  void ServeUpdate(UpdateCall* call);
  void ServeRevoke(RevokeCall* call);
  void ServeList(ListCall* call);
  void ServeRevokeUser(RevokeUserCall* call);
  void ServeGet(GetCall* call);
  void ServeRotate(RotateCall* call);
  // A create with a request_id (storage/create_requests.h): its token is
  // derived from the cluster's create key `create_key`, so a retry through
  // any node gets the same one.
  void CreateWithRequestId(CreateCall* call, const CreateLifetimes& lifetimes,
                           const std::string& create_key);
  // Ends `call` with an error, the leader hint in its trailing metadata and,
  // for UNAVAILABLE, in its ErrorInfo (server/grpc_status.h).
  void Fail(UnaryCallBase* call, const absl::Status& status);

  // The table lookup of the read path, after the barrier.
  // UNAVAILABLE instead of UNKNOWN when the read fell back
  // (ReadAnswer::fell_back).
  // The cluster time a read answered with `answer` judges idle timeouts at:
  // now; for a stale answer the time the node last heard from a leader;
  // while this node's touches cannot reach the log, where they stopped
  // (TouchBuffer::StalledSinceMs): the earliest that applies.
  int64_t IdleJudgedAtMs(const ReadAnswer& answer, int64_t now_ms) const;
  // `deferred` (a batch): the touch goes there instead of the buffer, to be
  // recorded only if the whole call succeeds.
  // A token that cannot be one (storage::LooksLikeToken): `response` is its
  // UNKNOWN, filled at once, and true. False for any other token.
  bool AnsweredWithoutReading(
      const sessiond::v1::ValidateSessionRequest& request,
      sessiond::v1::ValidateSessionResponse* response);
  // Fills `response` with the UNKNOWN of a token that cannot be one, and
  // counts it.
  void AnswerUnknown(const sessiond::v1::ValidateSessionRequest& request,
                     sessiond::v1::ValidateSessionResponse* response);
  absl::Status ValidateNow(const sessiond::v1::ValidateSessionRequest& request,
                           int64_t now_ms, const ReadAnswer& answer,
                           sessiond::v1::ValidateSessionResponse* response,
                           std::vector<PendingTouch>* deferred = nullptr);
  // Fills the revoke reason and revocation id of a REVOKED answer.
  void DescribeRevoked(const storage::TokenHash& hash,
                       sessiond::v1::ValidateSessionResponse* response);
  // ShuttingDown(), noting when (for WaitForCallersToLeave).
  absl::Status Refuse() const;
  absl::Status CheckReady() const;
  // Counts `call`'s answer, once complete, against max_held_answer_bytes
  // until its client took it (UnaryCallBase::HoldUntilDone) when it is
  // larger than kLargeAnswerBytes; ResourceExhausted, holding nothing, when
  // that bound is reached. Call before Reply.
  absl::Status HoldLargeAnswer(UnaryCallBase* call,
                               const google::protobuf::Message& answer);
  // OK when the caller may touch (AuthProcessor::AuthorizeTouch): a
  // validation with touch=true writes. OK without identities (no TLS).
  absl::Status AuthorizeTouch(const grpc::ServerContextBase& context) const;
  // The caller's create rate limit (options_.create_rate_limiter).
  absl::Status AdmitCreates(const grpc::ServerContextBase& context,
                            uint32_t creates) const;
  // Gives back what AdmitCreates took for a call that created nothing.
  void RefundCreates(const grpc::ServerContextBase& context,
                     uint32_t creates) const;
  // The rate limit's key for the caller: its identity, or its host.
  std::string RateLimitKey(const grpc::ServerContextBase& context) const;
  // Counts a write in flight, or refuses it when draining.
  absl::Status EnterWrite();
  enum class WriteKind { kCreate, kExisting };
  // A write let in by BeginWrite, until SettleWrite (or AbandonWrite). It
  // counts in flight twice, for two readers: writes_inflight_ for the drain at
  // shutdown (always), the admission controller for its limit (when it is on).
  struct AdmittedWrite {
    WriteAdmission* admission = nullptr;  // null: admission control is off
    absl::Duration entered;
    // What AdmitCreates took for it, given back when the write is refused
    // before any node proposed it (nothing was created).
    uint32_t charged_creates = 0;
  };
  // The one entry of every write: refuses it when the node is not ready,
  // is draining, or, for a create, is overloaded (options_.write_admission),
  // giving back `charged_creates`. A create is let in before its tokens are
  // made, so a shed create costs the node almost nothing.
  absl::StatusOr<AdmittedWrite> BeginWrite(
      const grpc::ServerContextBase& context, WriteKind kind,
      uint32_t charged_creates);
  // An admitted write was answered with `answer`: it leaves the admission
  // controller, and gives its creates back if nothing was created.
  // `submitted`: it went to the log (its time measures the queue);
  // otherwise it was given up before. Called before the answer is sent (the
  // refund needs the call's context); the drain count ends after it.
  void SettleWrite(const grpc::ServerContextBase& context,
                   const AdmittedWrite& write, const absl::Status& answer,
                   bool submitted);
  // Gives up an admitted write before submitting it (its command could not
  // be made): settles it and answers `call` with `answer`.
  void AbandonWrite(UnaryCallBase* call, const AdmittedWrite& write,
                    const absl::Status& answer);
  // Submits an admitted write's `command` and passes the applied result (or
  // the error) to `then`, which must finish `call`. `then`: a callable
  // taking replication::ApplyResult (a template, so a write builds one
  // callback, not one wrapped in another).
  template <typename Then>
  void SubmitAdmitted(UnaryCallBase* call, const AdmittedWrite& write,
                      sessiond::v1::internal::Command command, Then then);
  // BeginWrite (answering `call` when refused), then SubmitAdmitted.
  template <typename Then>
  void SubmitWrite(UnaryCallBase* call, sessiond::v1::internal::Command command,
                   WriteKind kind, Then then, uint32_t charged_creates = 0);
  // SubmitWrite and SubmitAdmitted that finish `call` with
  // `fill(applied value)` or the error (with the leader hint).
  void Write(UnaryCallBase* call, sessiond::v1::internal::Command command,
             std::function<absl::Status(std::any&)> fill,
             WriteKind kind = WriteKind::kExisting,
             uint32_t charged_creates = 0);
  void WriteAdmitted(UnaryCallBase* call, const AdmittedWrite& write,
                     sessiond::v1::internal::Command command,
                     std::function<absl::Status(std::any&)> fill);

  const SessionServiceOptions options_;
  const PageTokenCodec page_tokens_;
  const storage::SessionTable* const table_;                 // outlives this
  const storage::SessionStateMachine* const state_machine_;  // outlives this
  ClusterClock* const clock_;                                // outlives this
  ReadBarrier* const reads_;                                 // outlives this
  WritePath* const writes_;                                  // outlives this
  TouchBuffer* const touches_;                               // outlives this
  std::atomic<bool> ready_{false};
  std::atomic<bool> draining_{false};
  std::atomic<int64_t> writes_inflight_{0};
  // Batches of more than kBatchValidateSlice tokens held, from their
  // arrival until the client took the answer
  // (max_waiting_batch_validations). Shared with each LargeBatchSlot, which
  // a call holds until gRPC is done with it, possibly after this service (a
  // shutdown cancels calls, and OnDone follows on gRPC's threads).
  const std::shared_ptr<std::atomic<size_t>> large_batches_ =
      std::make_shared<std::atomic<size_t>>(0);
  // Bytes of large answers held until their clients take them
  // (max_held_answer_bytes); shared with each HeldAnswer, as large_batches_.
  const std::shared_ptr<std::atomic<uint64_t>> held_answer_bytes_ =
      std::make_shared<std::atomic<uint64_t>>(0);
  // When a call was last refused as shutting down (SteadyNowNs).
  mutable std::atomic<int64_t> last_refusal_ns_{0};

  mutable absl::Mutex streams_mu_;
  absl::flat_hash_set<ValidateStream*> streams_ ABSL_GUARDED_BY(streams_mu_);
  ValidationMetrics validations_;
  const std::shared_ptr<StreamActivity> stream_activity_ =
      std::make_shared<StreamActivity>();

  // Last: its thread runs batches that use the members above; destroyed
  // (every queued batch answered) first.
  RoundRobinWorker batches_{"sd-batch"};
};

}  // namespace sessiond::server

#endif  // SESSIOND_SERVER_SESSION_SERVICE_H_
