// Copyright sessiond authors. Licensed under the Apache License 2.0.
#include "server/session_service.h"

#include <algorithm>
#include <any>
#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "common/bounded_counter.h"
#include "common/fault_point.h"
#include "common/status_macros.h"
#include "common/steady_clock.h"
#include "common/steady_cond_var.h"
#include "server/audit_recorder.h"
#include "server/client_host.h"
#include "server/grpc_status.h"
#include "server/jwt_issuer.h"
#include "server/validate_stream.h"
#include "sessiond/v1/command.pb.h"
#include "storage/create_requests.h"
#include "storage/token.h"

namespace sessiond::server {
namespace {

using sessiond::v1::Session;
using sessiond::v1::ValidateSessionRequest;
using sessiond::v1::ValidateSessionResponse;
using sessiond::v1::internal::Command;

// The record an applied write returned (session_state_machine.h documents
// which command yields which type), moved out: the result is the call's own.
absl::Status TakeSession(std::any& value, Session* out) {
  if (Session* s = std::any_cast<Session>(&value)) {
    *out = std::move(*s);
    return absl::OkStatus();
  }
  return absl::InternalError("apply result is not a session record");
}

absl::Status TakeCount(const std::any& value, uint64_t* out) {
  if (const uint64_t* n = std::any_cast<uint64_t>(&value)) {
    *out = *n;
    return absl::OkStatus();
  }
  return absl::InternalError("apply result is not a count");
}

ValidateSessionResponse::Outcome ToProto(storage::ValidateOutcome outcome) {
  switch (outcome) {
    case storage::ValidateOutcome::kValid:
      return ValidateSessionResponse::VALID;
    case storage::ValidateOutcome::kExpired:
      return ValidateSessionResponse::EXPIRED;
    case storage::ValidateOutcome::kRevoked:
      return ValidateSessionResponse::REVOKED;
    case storage::ValidateOutcome::kUnknown:
      return ValidateSessionResponse::UNKNOWN;
  }
  return ValidateSessionResponse::UNKNOWN;
}

// One of the max_waiting_batch_validations places for a large batch, held
// by its call until gRPC is done with it (UnaryCallBase::HoldUntilDone):
// its answer taken by the client, or the call cancelled.
class LargeBatchSlot {
 public:
  // A slot, or null when `limit` are taken.
  static std::shared_ptr<LargeBatchSlot> Take(
      std::shared_ptr<std::atomic<size_t>> taken, size_t limit) {
    if (taken->fetch_add(1) >= limit) {
      taken->fetch_sub(1);
      return nullptr;
    }
    return std::shared_ptr<LargeBatchSlot>(
        new LargeBatchSlot(std::move(taken)));
  }
  ~LargeBatchSlot() { taken_->fetch_sub(1); }

  LargeBatchSlot(const LargeBatchSlot&) = delete;
  LargeBatchSlot& operator=(const LargeBatchSlot&) = delete;

 private:
  explicit LargeBatchSlot(std::shared_ptr<std::atomic<size_t>> taken)
      : taken_(std::move(taken)) {}
  const std::shared_ptr<std::atomic<size_t>> taken_;
};

// Bytes of one large answer, counted in the node's held answers until gRPC
// is done with its call (UnaryCallBase::HoldUntilDone).
class HeldAnswer {
 public:
  // A hold of `bytes`, or null past `limit` (AddWithinLimit).
  static std::shared_ptr<HeldAnswer> Take(
      std::shared_ptr<std::atomic<uint64_t>> held, uint64_t bytes,
      uint64_t limit) {
    if (!AddWithinLimit(held.get(), bytes, limit)) return nullptr;
    return std::shared_ptr<HeldAnswer>(new HeldAnswer(std::move(held), bytes));
  }
  ~HeldAnswer() { held_->fetch_sub(bytes_); }

  HeldAnswer(const HeldAnswer&) = delete;
  HeldAnswer& operator=(const HeldAnswer&) = delete;

 private:
  HeldAnswer(std::shared_ptr<std::atomic<uint64_t>> held, uint64_t bytes)
      : held_(std::move(held)), bytes_(bytes) {}
  const std::shared_ptr<std::atomic<uint64_t>> held_;
  const uint64_t bytes_;
};

absl::Status TooManyLargeAnswers(uint64_t limit) {
  return absl::ResourceExhaustedError(absl::StrCat(
      "too many large answers wait for their clients on this node (limit ",
      limit >> 20,
      " MiB); retry after the delay, read answers as they come, ask for "
      "fewer tokens or a smaller page_size, or spread calls over more "
      "nodes"));
}

absl::Status TooManyBatches(size_t limit) {
  return absl::ResourceExhaustedError(absl::StrCat(
      "too many large BatchValidateSessions wait on this node (limit ", limit,
      "); retry after the delay, send batches of at most ", kBatchValidateSlice,
      " tokens, or spread them over more nodes"));
}

// A steady clock's reading, as the limiters take time.
absl::Duration SteadyNow() {
  return absl::FromChrono(std::chrono::steady_clock::now().time_since_epoch());
}

// Says in `response` how its read was answered (ReadAnswer).
template <typename Response>
void SetHowRead(const ReadAnswer& answer, Response* response) {
  response->set_consistency(answer.consistency);
  response->set_stale(answer.stale);
  response->set_staleness_ms(answer.staleness_ms);
}

}  // namespace

absl::Status ShuttingDown() {
  // Refused at the door: nothing was proposed, whatever the call.
  return NotProposedError("shutting down; retry (another node)");
}

SessionServiceImpl::SessionServiceImpl(
    const SessionServiceOptions& options, const storage::SessionTable* table,
    const storage::SessionStateMachine* state_machine, ClusterClock* clock,
    ReadBarrier* reads, WritePath* writes, TouchBuffer* touches)
    : options_(options),
      page_tokens_(options.cluster_id),
      table_(table),
      state_machine_(state_machine),
      clock_(clock),
      reads_(reads),
      writes_(writes),
      touches_(touches) {}

absl::Status SessionServiceImpl::EnterWrite() {
  // Counted before draining_ is read (both seq_cst), so BeginDrain's waiter
  // either sees this write in flight or this write sees draining_.
  writes_inflight_.fetch_add(1);
  if (draining_.load()) {
    writes_inflight_.fetch_sub(1);
    return Refuse();
  }
  return absl::OkStatus();
}

absl::Status SessionServiceImpl::Refuse() const {
  last_refusal_ns_.store(SteadyNowNs());
  return ShuttingDown();
}

void SessionServiceImpl::BeginDrain() {
  // Calls already on the wire count as refused now: the quiet period
  // starts here, not at the first refusal.
  last_refusal_ns_.store(SteadyNowNs());
  draining_.store(true);
  absl::MutexLock lock(&streams_mu_);
  // Drain only marks the stream and starts its last writes: OnDone (which
  // takes streams_mu_) never runs inline in a reactor method.
  for (ValidateStream* stream : streams_) stream->Drain();
}

bool SessionServiceImpl::WaitForDrained(absl::Duration timeout) const {
  const SteadyCondVar::Clock::time_point deadline = SteadyAfter(timeout);
  auto drained = [this] {
    if (writes_inflight_.load() > 0) return false;
    absl::MutexLock lock(&streams_mu_);
    return streams_.empty();
  };
  while (!drained()) {
    if (SteadyCondVar::Clock::now() >= deadline) return false;
    absl::SleepFor(absl::Milliseconds(1));
  }
  return true;
}

bool SessionServiceImpl::WaitForCallersToLeave(
    absl::Duration quiet, int64_t deadline_steady_ns) const {
  const int64_t quiet_ns = absl::ToInt64Nanoseconds(quiet);
  while (true) {
    const int64_t last = last_refusal_ns_.load();
    const int64_t now = SteadyNowNs();
    if (now - last >= quiet_ns) return true;
    if (now >= deadline_steady_ns) return false;
    absl::SleepFor(
        absl::Nanoseconds(std::min(last + quiet_ns, deadline_steady_ns) - now));
  }
}

absl::Status SessionServiceImpl::RegisterStream(ValidateStream* stream) {
  absl::MutexLock lock(&streams_mu_);
  // Checked under the lock BeginDrain takes: a stream either sees the drain
  // here or is in streams_ when BeginDrain walks it.
  if (draining_.load()) return Refuse();
  if (streams_.size() >= options_.max_validate_streams) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "too many StreamValidateSessions streams open on this node (limit ",
        options_.max_validate_streams,
        "); close streams you do not use, share one stream per client "
        "process, or call ValidateSession / BatchValidateSessions"));
  }
  streams_.insert(stream);
  return absl::OkStatus();
}

void SessionServiceImpl::UnregisterStream(ValidateStream* stream) {
  absl::MutexLock lock(&streams_mu_);
  streams_.erase(stream);
}

absl::Status SessionServiceImpl::AuthorizeTouch(
    const grpc::ServerContextBase& context) const {
  if (options_.auth == nullptr) return absl::OkStatus();
  return options_.auth->AuthorizeTouch(context);
}

absl::Status SessionServiceImpl::AuthorizeStreamRequest(
    const grpc::ServerContextBase& context,
    const ValidateSessionRequest& request, StreamAuthorization* judged) const {
  if (options_.auth == nullptr) return absl::OkStatus();
  const std::optional<uint64_t> before = judged->generation;
  SESSIOND_RETURN_IF_ERROR(options_.auth->ReauthorizeIfReloaded(
      context,
      absl::StrCat("/", sessiond::v1::SessionService::service_full_name(),
                   "/StreamValidateSessions"),
      &judged->generation));
  if (judged->generation != before) judged->touch.reset();
  if (!request.touch()) return absl::OkStatus();
  if (!judged->touch.has_value()) judged->touch = AuthorizeTouch(context);
  return *judged->touch;
}

absl::Status SessionServiceImpl::AdmitCreates(
    const grpc::ServerContextBase& context, uint32_t creates) const {
  CreateRateLimiter* limiter = options_.create_rate_limiter;
  if (limiter == nullptr || !limiter->enabled()) return absl::OkStatus();
  return limiter->Admit(RateLimitKey(context), creates, SteadyNow());
}

std::string SessionServiceImpl::RateLimitKey(
    const grpc::ServerContextBase& context) const {
  std::string caller;
  if (options_.auth != nullptr) {
    absl::StatusOr<Caller> who = options_.auth->CallerOf(context);
    if (who.ok()) caller = std::move(who->identity);
  }
  if (caller.empty()) {
    // No identities (plaintext): the caller's host, an IPv6 one by its /64.
    caller = ClientHostOf(context.peer());
  }
  return caller;
}

void SessionServiceImpl::RefundCreates(const grpc::ServerContextBase& context,
                                       uint32_t creates) const {
  CreateRateLimiter* limiter = options_.create_rate_limiter;
  if (creates == 0 || limiter == nullptr || !limiter->enabled()) return;
  limiter->Refund(RateLimitKey(context), creates);
}

absl::Status SessionServiceImpl::CheckReady() const {
  if (draining_.load()) return Refuse();
  if (!ready_.load(std::memory_order_acquire)) {
    return NotProposedError("not ready: the node is starting");
  }
  return absl::OkStatus();
}

// ---------------------------------------------------------------------------
// Read path

int64_t SessionServiceImpl::IdleJudgedAtMs(const ReadAnswer& answer,
                                           int64_t now_ms) const {
  // Cut off from the leader, a node stops counting idle time where it last
  // heard from one: the touches of users active through it cannot reach the
  // log meanwhile, and counting on would idle them all out during a long
  // outage (and again when the quorum returned). Absolute expiry still
  // counts (docs/API.md, "Consistency"). The same when the log refuses the
  // touches though the node leads (a full disk): idle time stops where the
  // touches stopped reaching the log.
  int64_t at = now_ms;
  if (answer.stale) at -= std::min<int64_t>(answer.staleness_ms, now_ms);
  if (touches_ != nullptr) {
    if (const std::optional<int64_t> stalled = touches_->StalledSinceMs()) {
      at = std::min(at, *stalled);
    }
  }
  return at;
}

absl::Status SessionServiceImpl::ValidateNow(
    const ValidateSessionRequest& request, int64_t now_ms,
    const ReadAnswer& answer, ValidateSessionResponse* response,
    std::vector<PendingTouch>* deferred) {
  response->set_request_id(request.request_id());
  SetHowRead(answer, response);
  response->set_applied_index(state_machine_->applied_index().value());
  // A garbage token is not an error: nobody holds a session under it.
  if (!storage::LooksLikeToken(request.token())) {
    response->set_outcome(ValidateSessionResponse::UNKNOWN);
    validations_.Count(ValidateSessionResponse::UNKNOWN);
    return absl::OkStatus();
  }
  const storage::TokenHash hash = storage::HashToken(request.token());
  const int64_t idle_at_ms = IdleJudgedAtMs(answer, now_ms);
  const storage::ValidateOutcome outcome =
      // ExpiryNowMs: the expiry breaker, when open, freezes expiry.
      table_->Validate(hash, state_machine_->ExpiryNowMs(now_ms),
                       state_machine_->ExpiryNowMs(idle_at_ms),
                       state_machine_->expiry_leeway_ms(),
                       response->mutable_session());
  if (outcome == storage::ValidateOutcome::kUnknown && answer.fell_back) {
    return UnconfirmedAbsence("know this token");
  }
  response->set_outcome(ToProto(outcome));
  validations_.Count(response->outcome());
  if (outcome == storage::ValidateOutcome::kRevoked) {
    response->clear_session();
    DescribeRevoked(hash, response);
  } else if (outcome != storage::ValidateOutcome::kValid) {
    response->clear_session();
  } else if (request.touch()) {
    const int64_t judged_at = idle_at_ms == now_ms ? 0 : idle_at_ms;
    const int64_t idle_timeout_ms = response->session().idle_timeout_ms();
    if (deferred != nullptr) {
      deferred->push_back({hash, now_ms, judged_at, idle_timeout_ms});
    } else {
      touches_->Record(hash, now_ms, judged_at, idle_timeout_ms);
    }
  }
  return absl::OkStatus();
}

void SessionServiceImpl::DescribeRevoked(const storage::TokenHash& hash,
                                         ValidateSessionResponse* response) {
  std::optional<sessiond::v1::Session> session = table_->Get(hash);
  if (!session) return;  // removed since
  if (session->revoked_by().empty()) {
    response->set_revoke_reason(session->revoke_reason());
    return;
  }
  // The latest revocation holding it says why.
  const uint64_t id = *session->revoked_by().rbegin();
  response->set_revocation_id(id);
  if (std::optional<storage::SessionStateMachine::RevocationBrief> record =
          state_machine_->revocation_brief(id)) {
    response->set_revoke_reason(std::move(record->reason));
  }
}

void SessionServiceImpl::Validate(const ValidateSessionRequest& request,
                                  absl::Time deadline,
                                  ValidateSessionResponse* response,
                                  std::function<void(absl::Status)> done,
                                  std::vector<PendingTouch>* deferred) {
  if (absl::Status s = CheckReady(); !s.ok()) {
    done(s);
    return;
  }
  if (AnsweredWithoutReading(request, response)) {
    done(absl::OkStatus());
    return;
  }
  reads_->Wait(request.consistency(), deadline,
               [this, &request, response, deferred,
                done = std::move(done)](ReadAnswer answer) {
                 if (!answer.status.ok()) {
                   done(answer.status);
                   return;
                 }
                 done(ValidateNow(request, clock_->JudgeNowMs(), answer,
                                  response, deferred));
               });
}

// ---------------------------------------------------------------------------
// The raw methods: parse, then serve.

RpcMetrics::Method* SessionServiceImpl::TimedMethod(
    absl::string_view method) const {
  if (options_.rpc_metrics == nullptr) return nullptr;
  return options_.rpc_metrics->Find(absl::StrCat(
      "/", sessiond::v1::SessionService::service_full_name(), "/", method));
}

#define SESSIOND_SERVE_UNARY(Method, CallType, Handler)                 \
  grpc::ServerUnaryReactor* SessionServiceImpl::Method(                 \
      grpc::CallbackServerContext* context, const grpc::ByteBuffer* in, \
      grpc::ByteBuffer* out) {                                          \
    return ServeUnary<CallType::RequestType, CallType::ResponseType>(   \
        context, in, out, [this](CallType* call) { Handler(call); },    \
        options_.rpc_metrics == nullptr                                 \
            ? nullptr                                                   \
            : options_.rpc_metrics->Find(                               \
                  "/sessiond.v1.SessionService/" #Method));             \
  }
SESSIOND_SERVE_UNARY(CreateSession, CreateCall, ServeCreate)
SESSIOND_SERVE_UNARY(CreateSessions, CreateBatchCall, ServeCreateBatch)
SESSIOND_SERVE_UNARY(ValidateSession, ValidateCall, ServeValidate)
SESSIOND_SERVE_UNARY(BatchValidateSessions, BatchValidateCall,
                     ServeBatchValidate)
SESSIOND_SERVE_UNARY(TouchSession, TouchCall, ServeTouch)
SESSIOND_SERVE_UNARY(UpdateSession, UpdateCall, ServeUpdate)
SESSIOND_SERVE_UNARY(RevokeSession, RevokeCall, ServeRevoke)
SESSIOND_SERVE_UNARY(ListUserSessions, ListCall, ServeList)
SESSIOND_SERVE_UNARY(GetSession, GetCall, ServeGet)
SESSIOND_SERVE_UNARY(RotateSessionToken, RotateCall, ServeRotate)
#undef SESSIOND_SERVE_UNARY

// Audited (docs/OPERATIONS.md, "Audit"): a bulk revocation.
grpc::ServerUnaryReactor* SessionServiceImpl::RevokeUserSessions(
    grpc::CallbackServerContext* context, const grpc::ByteBuffer* in,
    grpc::ByteBuffer* out) {
  // Run later, once the audit entry is written: it captures by value.
  auto serve = [this, context, in, out] {
    return ServeUnary<RevokeUserCall::RequestType,
                      RevokeUserCall::ResponseType>(
        context, in, out,
        [this](RevokeUserCall* call) { ServeRevokeUser(call); },
        TimedMethod("RevokeUserSessions"));
  };
  if (options_.audit == nullptr) return serve();
  // The entry's copy of the request (ServeUnary answers one that does not
  // parse; its entry then shows what did).
  sessiond::v1::RevokeUserSessionsRequest request;
  ParseRequest(*in, &request).IgnoreError();
  // Inline: a user's logout must not wait behind an admin body.
  return options_.audit->Record(
      context, "/sessiond.v1.SessionService/RevokeUserSessions", request, serve,
      AuditRecorder::BodyThread::kInline);
}

grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer>*
SessionServiceImpl::StreamValidateSessions(
    grpc::CallbackServerContext* context) {
  return new ValidateStream(this, context);
}

bool SessionServiceImpl::AnsweredWithoutReading(
    const ValidateSessionRequest& request, ValidateSessionResponse* response) {
  if (storage::LooksLikeToken(request.token())) return false;
  // No session has it, at any node or time: answered without the read
  // barrier, where it would hold its bytes (up to the message limit, 4 MiB
  // and more) for as long as the read waits, and fail with the barrier
  // when there is no quorum.
  AnswerUnknown(request, response);
  return true;
}

void SessionServiceImpl::AnswerUnknown(const ValidateSessionRequest& request,
                                       ValidateSessionResponse* response) {
  response->set_request_id(request.request_id());
  response->set_consistency(sessiond::v1::LINEARIZABLE);
  response->set_applied_index(state_machine_->applied_index().value());
  response->set_outcome(ValidateSessionResponse::UNKNOWN);
  validations_.Count(ValidateSessionResponse::UNKNOWN);
}

void SessionServiceImpl::ServeValidate(ValidateCall* call) {
  if (absl::Status s = CheckReady(); !s.ok()) return call->Reply(s);
  if (call->request().touch()) {
    if (absl::Status s = AuthorizeTouch(*call->context()); !s.ok()) {
      return call->Reply(s);
    }
  }
  if (AnsweredWithoutReading(call->request(), call->response())) {
    return call->Reply(absl::OkStatus());
  }
  reads_->Wait(call->request().consistency(), DeadlineOf(call->context()),
               [this, call](ReadAnswer answer) {
                 if (!answer.status.ok()) return Fail(call, answer.status);
                 const absl::Status s =
                     ValidateNow(call->request(), clock_->JudgeNowMs(), answer,
                                 call->response());
                 if (!s.ok()) return Fail(call, s);
                 call->Reply(absl::OkStatus());
               });
}

void SessionServiceImpl::ServeBatchValidate(BatchValidateCall* call) {
  const auto& requests = call->request().requests();
  if (static_cast<size_t>(requests.size()) > options_.max_batch_validate) {
    return call->Reply(absl::InvalidArgumentError(
        absl::StrCat("requests: ", requests.size(), " entries, limit is ",
                     options_.max_batch_validate)));
  }
  if (absl::Status s = CheckReady(); !s.ok()) return call->Reply(s);
  if (std::any_of(requests.begin(), requests.end(),
                  [](const ValidateSessionRequest& r) { return r.touch(); })) {
    if (absl::Status s = AuthorizeTouch(*call->context()); !s.ok()) {
      return call->Reply(s);
    }
  }
  // No token of it can be one (a scanner's, a client's bug): answered as
  // ValidateSession answers each, without the barrier, which would hold
  // the request's bytes and fail without a quorum.
  if (std::none_of(requests.begin(), requests.end(),
                   [](const ValidateSessionRequest& r) {
                     return storage::LooksLikeToken(r.token());
                   })) {
    auto* responses = call->response()->mutable_responses();
    responses->Reserve(requests.size());
    for (const ValidateSessionRequest& r : requests) {
      AnswerUnknown(r, responses->Add());
    }
    // Counted as any large answer is: one the client never reads must not
    // pin memory past --max_held_answer_mib (10,000 tiny garbage tokens
    // make an answer of 200 KB).
    return call->Reply(HoldLargeAnswer(call, *call->response()));
  }
  // A large batch is counted from here, not from when it reaches the batch
  // thread: during an election a LINEARIZABLE one waits at the barrier
  // first, holding its request, and any number of them could. And until
  // the client took its answer, which it may never read.
  const bool large = requests.size() > kBatchValidateSlice;
  if (large) {
    std::shared_ptr<LargeBatchSlot> slot = LargeBatchSlot::Take(
        large_batches_, options_.max_waiting_batch_validations);
    if (slot == nullptr) {
      return call->Reply(
          TooManyBatches(options_.max_waiting_batch_validations));
    }
    call->HoldUntilDone(std::move(slot));
  }
  // One barrier for the whole batch, and one cluster time.
  reads_->Wait(
      call->request().consistency(), DeadlineOf(call->context()),
      [this, call, large](ReadAnswer answer) {
        if (!answer.status.ok()) return Fail(call, answer.status);
        const int64_t now_ms = clock_->JudgeNowMs();
        call->response()->mutable_responses()->Reserve(
            call->request().requests_size());
        // One slice; true once the call is answered. The touches wait for
        // the whole batch: a batch that fails (a fell-back read that lacks
        // one token) changes nothing.
        auto slice = [this, call, now_ms, answer = std::move(answer),
                      touches = std::make_shared<std::vector<PendingTouch>>()] {
          const auto& requests = call->request().requests();
          auto* responses = call->response()->mutable_responses();
          if (call->context()->IsCancelled()) {
            // The client gave up (deadline, cancel) while the batch waited
            // its turn: the rest is not worth validating.
            call->Reply(absl::CancelledError("the client cancelled the call"));
            return true;
          }
          const int end = std::min(requests.size(),
                                   responses->size() + kBatchValidateSlice);
          for (int i = responses->size(); i < end; ++i) {
            const absl::Status s = ValidateNow(requests[i], now_ms, answer,
                                               responses->Add(), touches.get());
            if (!s.ok()) {
              Fail(call, s);
              return true;
            }
          }
          if (responses->size() < requests.size()) return false;
          // Refused here, its touches are not recorded: it changed nothing.
          if (absl::Status held = HoldLargeAnswer(call, *call->response());
              !held.ok()) {
            call->Reply(held);
            return true;
          }
          touches_->RecordAll(*touches);
          call->Reply(absl::OkStatus());
          return true;
        };
        if (large) {
          batches_.Submit(std::move(slice));  // bounded by the slots
        } else {
          slice();
        }
      });
}

absl::Status SessionServiceImpl::HoldLargeAnswer(
    UnaryCallBase* call, const google::protobuf::Message& answer) {
  const uint64_t bytes = answer.ByteSizeLong();
  if (bytes <= kLargeAnswerBytes) return absl::OkStatus();
  std::shared_ptr<HeldAnswer> held = HeldAnswer::Take(
      held_answer_bytes_, bytes, options_.max_held_answer_bytes);
  if (held == nullptr) {
    return TooManyLargeAnswers(options_.max_held_answer_bytes);
  }
  call->HoldUntilDone(std::move(held));
  return absl::OkStatus();
}

void SessionServiceImpl::ServeList(ListCall* call) {
  if (absl::Status s = CheckReady(); !s.ok()) return call->Reply(s);
  const sessiond::v1::ListUserSessionsRequest& request = call->request();
  uint32_t page_size = 0;
  if (absl::Status s = ValidateList(request, options_.limits, &page_size);
      !s.ok()) {
    return call->Reply(s);
  }
  const PageQuery query{.user_id = request.user_id(),
                        .include_revoked = request.include_revoked()};
  std::string after;
  if (!request.page_token().empty()) {
    absl::StatusOr<std::string> decoded =
        page_tokens_.Decode(query, request.page_token());
    if (!decoded.ok()) return call->Reply(decoded.status());
    after = *std::move(decoded);
  }
  reads_->Wait(
      sessiond::v1::CONSISTENCY_DEFAULT, DeadlineOf(call->context()),
      [this, call, query, page_size,
       after = std::move(after)](ReadAnswer answer) {
        if (!answer.status.ok()) return Fail(call, answer.status);
        auto* response = call->response();
        SetHowRead(answer, response);
        response->set_applied_index(state_machine_->applied_index().value());
        const int64_t now_ms = clock_->JudgeNowMs();
        storage::ListUserPage page = table_->ListUser(
            call->request().user_id(), page_size, after, query.include_revoked,
            state_machine_->ExpiryNowMs(now_ms),
            state_machine_->ExpiryNowMs(IdleJudgedAtMs(answer, now_ms)),
            state_machine_->expiry_leeway_ms());
        response->mutable_sessions()->Reserve(page.sessions.size());
        for (Session& s : page.sessions) {
          *response->add_sessions() = std::move(s);
        }
        if (!page.next_after_session_id.empty()) {
          response->set_next_page_token(
              page_tokens_.Encode(query, page.next_after_session_id));
        }
        call->Reply(HoldLargeAnswer(call, *response));
      });
}

// ---------------------------------------------------------------------------
// Write path

absl::StatusOr<SessionServiceImpl::AdmittedWrite>
SessionServiceImpl::BeginWrite(const grpc::ServerContextBase& context,
                               WriteKind kind, uint32_t charged_creates) {
  AdmittedWrite write;
  write.charged_creates = charged_creates;
  // Refused here, nothing was created: the caller's creates are given back
  // (a caller retrying through an overload would otherwise be rate limited
  // for creates it never made).
  const auto refuse = [&](absl::Status s) {
    RefundCreates(context, charged_creates);
    return s;
  };
  if (absl::Status s = CheckReady(); !s.ok()) return refuse(std::move(s));
  // Off (--write_admission_target_ms=0): no clock reads, no lock.
  if (options_.write_admission != nullptr &&
      options_.write_admission->enabled()) {
    write.admission = options_.write_admission;
    write.entered = SteadyNow();
    if (kind == WriteKind::kExisting) {
      write.admission->Enter(write.entered);
    } else if (absl::Status s = write.admission->Admit(write.entered);
               !s.ok()) {
      return refuse(std::move(s));
    }
  }
  if (absl::Status s = EnterWrite(); !s.ok()) {
    if (write.admission != nullptr) write.admission->Withdraw(SteadyNow());
    return refuse(std::move(s));
  }
  return write;
}

void SessionServiceImpl::SettleWrite(const grpc::ServerContextBase& context,
                                     const AdmittedWrite& write,
                                     const absl::Status& answer,
                                     bool submitted) {
  if (write.admission != nullptr) {
    if (submitted) {
      write.admission->Finish(write.entered, SteadyNow(), answer);
    } else {
      write.admission->Withdraw(SteadyNow());
    }
  }
  if (!submitted ||
      (!answer.ok() && answer.GetPayload(kNotProposedPayload).has_value())) {
    RefundCreates(context, write.charged_creates);
  }
}

void SessionServiceImpl::AbandonWrite(UnaryCallBase* call,
                                      const AdmittedWrite& write,
                                      const absl::Status& answer) {
  SettleWrite(*call->context(), write, answer, /*submitted=*/false);
  call->Reply(answer);
  writes_inflight_.fetch_sub(1);
}

template <typename Then>
void SessionServiceImpl::SubmitAdmitted(UnaryCallBase* call,
                                        const AdmittedWrite& write,
                                        Command command, Then then) {
  writes_->Submit(std::move(command), DeadlineOf(call->context()),
                  [this, write, call,
                   then = std::move(then)](replication::ApplyResult result) {
                    // Before `then` answers: the call (and its context)
                    // ends with the answer.
                    SettleWrite(*call->context(), write, result.status(),
                                /*submitted=*/true);
                    then(std::move(result));
                    writes_inflight_.fetch_sub(1);
                  });
}

template <typename Then>
void SessionServiceImpl::SubmitWrite(UnaryCallBase* call, Command command,
                                     WriteKind kind, Then then,
                                     uint32_t charged_creates) {
  absl::StatusOr<AdmittedWrite> write =
      BeginWrite(*call->context(), kind, charged_creates);
  if (!write.ok()) return call->Reply(write.status());
  SubmitAdmitted(call, *write, std::move(command), std::move(then));
}

void SessionServiceImpl::WriteAdmitted(
    UnaryCallBase* call, const AdmittedWrite& write, Command command,
    std::function<absl::Status(std::any&)> fill) {
  SubmitAdmitted(
      call, write, std::move(command),
      [this, call, fill = std::move(fill)](replication::ApplyResult result) {
        if (!result.ok()) return Fail(call, result.status());
        AddLeaderHintUnlessLeading(call->context());
        call->Reply(fill(*result));
      });
}

void SessionServiceImpl::Write(UnaryCallBase* call, Command command,
                               std::function<absl::Status(std::any&)> fill,
                               WriteKind kind, uint32_t charged_creates) {
  absl::StatusOr<AdmittedWrite> write =
      BeginWrite(*call->context(), kind, charged_creates);
  if (!write.ok()) return call->Reply(write.status());
  WriteAdmitted(call, *write, std::move(command), std::move(fill));
}

namespace {

// A create's command for `token` and `session_id`. Only the token's hash
// enters the log; the lifetime is relative, so the leader's cluster time
// sets the deadline.
void FillCreateFields(const sessiond::v1::CreateSessionRequest& request,
                      const CreateLifetimes& lifetimes,
                      const std::string& token, const std::string& session_id,
                      uint32_t max_user_sessions,
                      sessiond::v1::internal::CreateCommand* create) {
  create->set_token_hash(
      std::string(storage::TokenHashBytes(storage::HashToken(token))));
  create->set_session_id(session_id);
  create->set_user_id(request.user_id());
  create->set_ttl_ms(lifetimes.ttl_ms);
  create->set_idle_timeout_ms(lifetimes.idle_timeout_ms);
  *create->mutable_attributes() = request.attributes();
  if (request.has_client()) {
    // Field by field: a copy of the message kept its unknown fields, which
    // no limit measured, and a 16 MB one was stored on every replica and
    // handed back with every read of the session.
    sessiond::v1::ClientMetadata* client = create->mutable_client();
    client->set_device(request.client().device());
    client->set_ip(request.client().ip());
    client->set_user_agent(request.client().user_agent());
  }
  create->set_max_user_sessions(max_user_sessions);
}

// How far this node's wall clock may be from the members' (or behind
// cluster time) for it to sign a JWT. Cluster time runs ahead of a healthy
// node's wall clock only where a leader's wrong clock slewed it (3.6 s an
// hour at the default rate).
constexpr int64_t kMaxJwtWallOffMs = kMaxSignerClockOffMs;

// The time a JWT this node signs carries as iat (and exp counts from): its
// wall clock (FillCreate says why). Unavailable when that clock is more
// than kMaxJwtWallOffMs off the median of the members' wall clocks: behind
// (stepped back: an RTC reset, a restored VM), every verifier would find
// its tokens expired early, or born expired, while the store calls them
// VALID; ahead, they would outlive their sessions by as much for every
// verifier. Where the members' clocks are not known (a single node, a
// follower cut off, peers from before they were sent), only a clock behind
// cluster time past kMaxJwtWallOffMs is refused: cluster time runs behind
// every wall clock after an outage, so it cannot tell a clock ahead.
absl::StatusOr<int64_t> JwtWallMs(ClusterClock* clock,
                                  const PeerWallClocks* members) {
  // One reading, judged and signed: a clock stepped back between two
  // would sign a time that was never judged.
  const int64_t wall_ms = clock->WallMs();
  if (std::optional<int64_t> off =
          members == nullptr ? std::nullopt : members->OwnOffMedianMs()) {
    if (*off < -kMaxJwtWallOffMs) {
      return absl::UnavailableError(absl::StrCat(
          "this node's wall clock is behind the other members' by ",
          -*off / 1000,
          " s: a JWT it signed would expire early, or be born expired, for "
          "every verifier (nothing was created); create it through another "
          "node, and set this node's clock right (NTP)"));
    }
    if (*off > kMaxJwtWallOffMs) {
      return absl::UnavailableError(absl::StrCat(
          "this node's wall clock is ahead of the other members' by ",
          *off / 1000,
          " s: a JWT it signed would outlive its session by as much for "
          "every verifier (nothing was created); create it through another "
          "node, and set this node's clock right (NTP)"));
    }
    // Ahead by less: the members' time, not its own. A verifier on a right
    // clock that checks iat (most libraries allow no leeway by default)
    // refused a token born in its future until its clock got there, and an
    // app that logs out on a refused token logged out every user this node
    // signed in meanwhile. Behind: its own, never later than the members'.
    return wall_ms - std::max<int64_t>(*off, 0);
  }
  const int64_t skew_ms = clock->SkewAtMs(wall_ms);
  if (skew_ms < -kMaxJwtWallOffMs) {
    return absl::UnavailableError(absl::StrCat(
        "this node's wall clock is behind cluster time by ", -skew_ms / 1000,
        " s: a JWT it signed would expire early, or be born expired, for "
        "every verifier (nothing was created); create it through another "
        "node, and set this node's clock right (NTP)"));
  }
  return wall_ms;
}

absl::Status NoJwtIssuer() {
  return absl::FailedPreconditionError(
      "token_format JWT: this node does not sign JWT tokens");
}

// FailedPrecondition when `request` asks for a JWT this node cannot sign
// now, InvalidArgument when its claims would not fit one: asked before the
// caller's rate limit is charged, so a create refused for it spends none of
// the caller's creates. The first JWT request of a call reads the time its
// tokens carry into `*jwt_wall_ms` (JwtWallMs); the call's other requests,
// and FillCreate, use that one reading.
absl::Status CheckSigning(const sessiond::v1::CreateSessionRequest& request,
                          const CreateLifetimes& lifetimes, JwtIssuer* issuer,
                          ClusterClock* clock, const PeerWallClocks* members,
                          std::optional<int64_t>* jwt_wall_ms) {
  if (request.token_format() != sessiond::v1::TOKEN_FORMAT_JWT) {
    return absl::OkStatus();
  }
  if (issuer == nullptr) return NoJwtIssuer();
  if (!jwt_wall_ms->has_value()) {
    SESSIOND_ASSIGN_OR_RETURN(*jwt_wall_ms, JwtWallMs(clock, members));
  }
  return issuer->CanIssue(request.user_id(), **jwt_wall_ms, lifetimes.ttl_ms);
}

// A create's command, with everything random chosen here: replicas never
// consult their own RNG. Returns the token: random, or a JWT `issuer` signs
// (token_format JWT). A JWT's iat and exp are this node's wall clock, as
// any JWT issuer's: app servers check exp against theirs, and cluster time
// runs behind the wall clock after an outage (by the downtime), which made
// every token issued then expire early, or be born expired.
absl::StatusOr<std::string> FillCreate(
    const sessiond::v1::CreateSessionRequest& request,
    const CreateLifetimes& lifetimes, uint32_t max_user_sessions,
    JwtIssuer* issuer, std::optional<int64_t> jwt_wall_ms,
    sessiond::v1::internal::CreateCommand* create) {
  std::string session_id = storage::GenerateSessionId();
  if (request.token_format() != sessiond::v1::TOKEN_FORMAT_JWT) {
    std::string token = storage::GenerateToken();
    FillCreateFields(request, lifetimes, token, session_id, max_user_sessions,
                     create);
    return token;
  }
  if (issuer == nullptr) return NoJwtIssuer();
  if (!jwt_wall_ms.has_value()) {
    return absl::InternalError("a JWT create was not checked (CheckSigning)");
  }
  SESSIOND_ASSIGN_OR_RETURN(JwtIssuer::Issued issued,
                            issuer->Issue(session_id, request.user_id(),
                                          *jwt_wall_ms, lifetimes.ttl_ms));
  FillCreateFields(request, lifetimes, issued.token, session_id,
                   max_user_sessions, create);
  create->set_signing_kid(issued.kid);
  return std::move(issued.token);
}

absl::Status ValidateRequestId(const std::string& request_id) {
  if (request_id.size() < storage::kMinRequestIdBytes ||
      request_id.size() > storage::kMaxRequestIdBytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        "request_id: is ", request_id.size(), " bytes, must be ",
        storage::kMinRequestIdBytes, "..", storage::kMaxRequestIdBytes,
        " (a random id, new for every login, e.g. a UUID)"));
  }
  return absl::OkStatus();
}

}  // namespace

void SessionServiceImpl::Fail(UnaryCallBase* call, const absl::Status& status) {
  const LeaderHint hint = leader_hint();
  absl::Status failed = status;
  if (absl::IsUnavailable(status) && hint.id != NodeId(0)) {
    failed = WithErrorMetadata(std::move(failed), "leader_id",
                               absl::StrCat(hint.id.value()));
    if (!hint.client_address.empty()) {
      failed =
          WithErrorMetadata(std::move(failed), "leader", hint.client_address);
    }
  }
  call->Reply(failed, hint);
}

void SessionServiceImpl::ServeCreate(CreateCall* call) {
  absl::StatusOr<CreateLifetimes> lifetimes =
      ValidateCreate(call->request(), options_.limits);
  if (!lifetimes.ok()) return call->Reply(lifetimes.status());
  if (!call->request().request_id().empty() &&
      call->request().token_format() == sessiond::v1::TOKEN_FORMAT_JWT) {
    return call->Reply(absl::InvalidArgumentError(
        "request_id: not taken with token_format JWT (a retried create "
        "derives its opaque token from the request_id); create without "
        "request_id, or with an opaque token"));
  }
  if (!call->request().request_id().empty()) {
    if (absl::Status s = ValidateRequestId(call->request().request_id());
        !s.ok()) {
      return call->Reply(s);
    }
  }
  std::optional<int64_t> jwt_wall_ms;
  if (absl::Status s =
          CheckSigning(call->request(), *lifetimes, options_.jwt_issuer, clock_,
                       options_.wall_clocks, &jwt_wall_ms);
      !s.ok()) {
    return call->Reply(s);
  }
  // After the checks (a refused request spends none of its caller's
  // creates), before the token is made (a shed create costs little).
  if (absl::Status s = AdmitCreates(*call->context(), 1); !s.ok()) {
    return call->Reply(s);
  }
  if (!call->request().request_id().empty()) {
    std::string key = state_machine_->create_key();
    if (!key.empty()) return CreateWithRequestId(call, *lifetimes, key);
    // The cluster has no create key yet: install one (the first applied
    // wins, so every node ends with the same), then create. Admitted as a
    // create: it is the first half of one.
    Command install;
    install.mutable_create_key()->set_key(storage::NewCreateKey());
    SubmitWrite(
        call, std::move(install), WriteKind::kCreate,
        [this, call, lifetimes = *lifetimes](replication::ApplyResult result) {
          if (!result.ok()) {
            Fail(call, result.status());
          } else if (std::string key = state_machine_->create_key();
                     key.empty()) {
            // The deadline cut this node's wait for the apply short.
            RefundCreates(*call->context(), 1);
            Fail(call, absl::UnavailableError(
                           "the create key is not applied on this node yet "
                           "(nothing was created); retry"));
          } else {
            CreateWithRequestId(call, lifetimes, key);
          }
        },
        /*charged_creates=*/1);
    return;
  }
  // Admitted before the token is made: signing a JWT is most of a create's
  // own work, and an overloaded node should not do it for a create it
  // sheds.
  absl::StatusOr<AdmittedWrite> write =
      BeginWrite(*call->context(), WriteKind::kCreate, /*charged_creates=*/1);
  if (!write.ok()) return call->Reply(write.status());
  Command command;
  absl::StatusOr<std::string> filled =
      FillCreate(call->request(), *lifetimes, options_.max_sessions_per_user,
                 options_.jwt_issuer, jwt_wall_ms, command.mutable_create());
  if (!filled.ok()) {
    return AbandonWrite(call, *write, filled.status());
  }
  std::string token = *std::move(filled);
  WriteAdmitted(
      call, *write, std::move(command),
      [response = call->response(), token = std::move(token)](std::any& value) {
        absl::Status s = TakeSession(value, response->mutable_session());
        if (s.ok()) response->set_token(token);
        SESSIOND_FAULT_POINT("create.before_reply");
        return s;
      });
}

void SessionServiceImpl::CreateWithRequestId(CreateCall* call,
                                             const CreateLifetimes& lifetimes,
                                             const std::string& create_key) {
  const sessiond::v1::CreateSessionRequest& request = call->request();
  const std::string session_id = storage::GenerateSessionId();
  Command command;
  auto* create = command.mutable_create();
  FillCreateFields(
      request, lifetimes,
      storage::CreateRequestToken(create_key, request.user_id(),
                                  request.request_id(), session_id),
      session_id, options_.max_sessions_per_user, create);
  create->set_request_key(storage::CreateRequestKey(
      create_key, request.user_id(), request.request_id()));
  create->set_request_digest(storage::CreateRequestDigest(request));
  create->set_request_window_ms(options_.create_request_window_ms);
  create->set_request_max_entries(options_.create_request_max_entries);
  Write(
      call, std::move(command),
      [response = call->response(), &request, create_key,
       session_id](std::any& value) {
        absl::Status s = TakeSession(value, response->mutable_session());
        if (!s.ok()) return s;
        // A retry gets the first create's session: its token follows from
        // that session's id (storage/create_requests.h).
        const std::string& created = response->session().session_id();
        response->set_token(storage::CreateRequestToken(
            create_key, request.user_id(), request.request_id(), created));
        response->set_replayed(created != session_id);
        SESSIOND_FAULT_POINT("create.before_reply");
        return s;
      },
      WriteKind::kCreate, /*charged_creates=*/1);
}

void SessionServiceImpl::ServeCreateBatch(CreateBatchCall* call) {
  const auto& requests = call->request().requests();
  const size_t count = static_cast<size_t>(requests.size());
  if (count > options_.max_batch_create) {
    return call->Reply(absl::InvalidArgumentError(
        absl::StrCat("requests: ", count, " entries, limit is ",
                     options_.max_batch_create)));
  }
  if (count == 0) {
    // Nothing to commit, but named like any write a follower answers: a
    // client takes an answer without a leader hint for the leader's own.
    AddLeaderHintUnlessLeading(call->context());
    return call->Reply(absl::OkStatus());
  }
  std::vector<CreateLifetimes> lifetimes;
  lifetimes.reserve(count);
  std::optional<int64_t> jwt_wall_ms;
  for (size_t i = 0; i < count; ++i) {
    const auto& request = requests[static_cast<int>(i)];
    if (!request.request_id().empty()) {
      return call->Reply(absl::InvalidArgumentError(absl::StrCat(
          "requests[", i,
          "].request_id: not taken by CreateSessions; send a create that must "
          "be retryable with CreateSession")));
    }
    absl::StatusOr<CreateLifetimes> checked =
        ValidateCreate(request, options_.limits);
    if (!checked.ok()) {
      return call->Reply(absl::InvalidArgumentError(
          absl::StrCat("requests[", i, "].", checked.status().message())));
    }
    if (absl::Status s =
            CheckSigning(request, *checked, options_.jwt_issuer, clock_,
                         options_.wall_clocks, &jwt_wall_ms);
        !s.ok()) {
      return call->Reply(absl::Status(
          s.code(), absl::StrCat("requests[", i, "].", s.message())));
    }
    lifetimes.push_back(*checked);
  }
  // After the checks (a refused batch spends none of its caller's creates),
  // before the tokens are made (a shed batch costs little).
  if (absl::Status s =
          AdmitCreates(*call->context(), static_cast<uint32_t>(count));
      !s.ok()) {
    return call->Reply(s);
  }
  absl::StatusOr<AdmittedWrite> write = BeginWrite(
      *call->context(), WriteKind::kCreate, static_cast<uint32_t>(count));
  if (!write.ok()) return call->Reply(write.status());
  Command command;
  auto* batch = command.mutable_create_batch();
  std::vector<std::string> tokens;
  tokens.reserve(count);
  for (size_t i = 0; i < count; ++i) {
    const auto& request = requests[static_cast<int>(i)];
    absl::StatusOr<std::string> token =
        FillCreate(request, lifetimes[i], options_.max_sessions_per_user,
                   options_.jwt_issuer, jwt_wall_ms, batch->add_creates());
    if (!token.ok()) {
      const absl::Status refused(
          token.status().code(),
          absl::StrCat("requests[", i, "].", token.status().message()));
      return AbandonWrite(call, *write, refused);
    }
    tokens.push_back(*std::move(token));
  }
  WriteAdmitted(
      call, *write, std::move(command),
      [response = call->response(),
       tokens = std::move(tokens)](std::any& value) {
        auto* sessions = std::any_cast<std::vector<Session>>(&value);
        if (sessions == nullptr || sessions->size() != tokens.size()) {
          return absl::InternalError(
              "apply result is not the created sessions");
        }
        response->mutable_responses()->Reserve(static_cast<int>(tokens.size()));
        for (size_t i = 0; i < tokens.size(); ++i) {
          auto* one = response->add_responses();
          one->set_token(tokens[i]);
          *one->mutable_session() = std::move((*sessions)[i]);
        }
        return absl::OkStatus();
      });
}

void SessionServiceImpl::ServeTouch(TouchCall* call) {
  if (absl::Status s = ValidateToken(call->request().token(), "token");
      !s.ok()) {
    return call->Reply(s);
  }
  Command command;
  auto* touch = command.mutable_touch()->add_touches();
  touch->set_token_hash(std::string(
      storage::TokenHashBytes(storage::HashToken(call->request().token()))));
  // 0: the applied (cluster) time of the touch itself.
  touch->set_seen_at_ms(0);
  Write(call, std::move(command),
        [response = call->response()](std::any& value) {
          return TakeSession(value, response->mutable_session());
        });
}

void SessionServiceImpl::ServeUpdate(UpdateCall* call) {
  const sessiond::v1::UpdateSessionRequest& request = call->request();
  if (absl::Status s = ValidateUpdate(request, options_.limits); !s.ok()) {
    return call->Reply(s);
  }
  const storage::TokenHash hash = storage::HashToken(request.token());
  // The record-size and attribute-count limits depend on the stored
  // session. Checked against this node's table as it is now: a concurrent
  // update of the same session (or a lagging follower) could slip past,
  // which costs at most one record over the limit, never a wrong answer.
  if (std::optional<Session> current = table_->Get(hash)) {
    if (absl::Status s = CheckUpdatedRecord(*current, request, options_.limits);
        !s.ok()) {
      return call->Reply(s);
    }
  }
  Command command;
  auto* update = command.mutable_update();
  update->set_token_hash(std::string(storage::TokenHashBytes(hash)));
  update->set_expected_version(request.expected_version());
  *update->mutable_set_attributes() = request.set_attributes();
  *update->mutable_remove_attributes() = request.remove_attributes();
  Write(call, std::move(command),
        [response = call->response()](std::any& value) {
          return TakeSession(value, response->mutable_session());
        });
}

void SessionServiceImpl::ServeRevoke(RevokeCall* call) {
  const sessiond::v1::RevokeSessionRequest& request = call->request();
  if (absl::Status s = ValidateRevoke(request, options_.limits); !s.ok()) {
    return call->Reply(s);
  }
  Command command;
  auto* revoke = command.mutable_revoke();
  if (request.target_case() == sessiond::v1::RevokeSessionRequest::kToken) {
    revoke->mutable_session()->set_token_hash(std::string(
        storage::TokenHashBytes(storage::HashToken(request.token()))));
  } else {
    revoke->mutable_session()->set_session_id(request.session_id());
  }
  revoke->set_reason(request.reason());
  Write(call, std::move(command),
        [response = call->response()](std::any& value) {
          return TakeSession(value, response->mutable_session());
        });
}

void SessionServiceImpl::ServeRevokeUser(RevokeUserCall* call) {
  const sessiond::v1::RevokeUserSessionsRequest& request = call->request();
  if (absl::Status s = ValidateRevokeUser(request, options_.limits); !s.ok()) {
    return call->Reply(s);
  }
  Command command;
  auto* revoke = command.mutable_revoke_user();
  revoke->set_user_id(request.user_id());
  revoke->set_keep_session_id(request.keep_session_id());
  revoke->set_reason(request.reason());
  revoke->set_retention_ms(options_.revocation_retention_ms);
  Write(call, std::move(command),
        [response = call->response()](const std::any& value) {
          if (const auto* revocation =
                  std::any_cast<sessiond::v1::Revocation>(&value)) {
            response->set_revoked_count(revocation->sessions());
            response->set_revocation_id(revocation->id());
            return absl::OkStatus();
          }
          uint64_t count = 0;
          absl::Status s = TakeCount(value, &count);
          response->set_revoked_count(count);
          return s;
        });
}

// ---------------------------------------------------------------------------
// GetSession (read) and RotateSessionToken (write)

void SessionServiceImpl::ServeGet(GetCall* call) {
  if (absl::Status s =
          ValidateSessionId(call->request().session_id(), "session_id");
      !s.ok()) {
    return call->Reply(s);
  }
  if (absl::Status s = CheckReady(); !s.ok()) return call->Reply(s);
  reads_->Wait(
      call->request().consistency(), DeadlineOf(call->context()),
      [this, call](ReadAnswer answer) {
        if (!answer.status.ok()) return Fail(call, answer.status);
        std::optional<Session> session =
            table_->GetBySessionId(call->request().session_id());
        if (!session) {
          if (answer.fell_back) {
            return Fail(call, UnconfirmedAbsence("hold this session_id"));
          }
          return call->Reply(absl::NotFoundError("no such session_id"));
        }
        auto* response = call->response();
        SetHowRead(answer, response);
        const int64_t now_ms = clock_->JudgeNowMs();
        response->set_expired(storage::IsExpired(
            *session, state_machine_->ExpiryNowMs(now_ms),
            state_machine_->ExpiryNowMs(IdleJudgedAtMs(answer, now_ms)),
            state_machine_->expiry_leeway_ms()));
        *response->mutable_session() = *std::move(session);
        call->Reply(absl::OkStatus());
      });
}

void SessionServiceImpl::ServeRotate(RotateCall* call) {
  if (absl::Status s = ValidateToken(call->request().token(), "token");
      !s.ok()) {
    return call->Reply(s);
  }
  Command command;
  auto* rotate = command.mutable_rotate();
  rotate->set_token_hash(std::string(
      storage::TokenHashBytes(storage::HashToken(call->request().token()))));
  std::string token = storage::GenerateToken();
  rotate->set_new_token_hash(
      std::string(storage::TokenHashBytes(storage::HashToken(token))));
  Write(
      call, std::move(command),
      [response = call->response(), token = std::move(token)](std::any& value) {
        absl::Status s = TakeSession(value, response->mutable_session());
        if (s.ok()) response->set_token(token);
        return s;
      });
}

}  // namespace sessiond::server
