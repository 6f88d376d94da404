// Copyright sessiond authors. Licensed under the Apache License 2.0.
#include "server/session_service.h"

#include <any>
#include <chrono>
#include <deque>
#include <memory>
#include <string>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "server/grpc_status.h"
#include "sessiond/v1/command.pb.h"
#include "storage/token.h"

namespace sessiond::server {
namespace {

using sessiond::v1::Session;
using sessiond::v1::ValidateSessionRequest;
using sessiond::v1::ValidateSessionResponse;
using sessiond::v1::internal::Command;

absl::Status ShuttingDown() {
  return absl::UnavailableError("shutting down; retry (another node)");
}

grpc::ServerUnaryReactor* FinishNow(grpc::CallbackServerContext* context,
                                    const absl::Status& status) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  reactor->Finish(ToGrpcStatus(status));
  return reactor;
}

// The record an applied write returned (session_state_machine.h documents
// which command yields which type).
absl::Status TakeSession(const std::any& value, Session* out) {
  if (const Session* s = std::any_cast<Session>(&value)) {
    *out = *s;
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

// StreamValidateSessions: answers in request order. Each request waits for
// its own read barrier; reading and writing overlap (the next request is
// read while earlier answers wait or are written), with at most kMaxQueued
// answers outstanding, so a client that pipelines is not held to one round
// trip per validation. A request whose barrier fails ends the stream with
// that status, after the answers before it are written.
//
// gRPC allows one read and one write outstanding at a time; the state under
// mu_ decides which Start* call is due, and the calls are made after mu_ is
// released. The reactor finishes only once no barrier callback is pending,
// so none can arrive after OnDone.
class StreamValidateReactor
    : public grpc::ServerBidiReactor<ValidateSessionRequest,
                                     ValidateSessionResponse> {
 public:
  StreamValidateReactor(SessionServiceImpl* service,
                        grpc::CallbackServerContext* context)
      : service_(service), context_(context) {
    StartRead(&request_);
  }

  void OnReadDone(bool ok) override {
    Slot* slot = nullptr;
    Actions actions;
    {
      absl::MutexLock lock(&mu_);
      reading_ = false;
      if (!ok || broken_) {
        reads_done_ = true;
      } else {
        queue_.emplace_back();
        slot = &queue_.back();
        ++barriers_pending_;
        if (queue_.size() < kMaxQueued) {
          actions.read = true;
          reading_ = true;
        } else {
          read_paused_ = true;
        }
      }
      Actions more = NextActionsLocked();
      actions.write = more.write;
      actions.finish = more.finish;
    }
    if (slot != nullptr) {
      // request_ is read again only after this copy (StartRead below).
      const ValidateSessionRequest request = request_;
      service_->Validate(request, service_->DeadlineOf(context_),
                         &slot->response, [this, slot](absl::Status status) {
                           Actions a;
                           {
                             absl::MutexLock lock(&mu_);
                             slot->status = std::move(status);
                             slot->ready = true;
                             --barriers_pending_;
                             a = NextActionsLocked();
                           }
                           Run(a);
                         });
    }
    Run(actions);
  }

  void OnWriteDone(bool ok) override {
    Actions actions;
    {
      absl::MutexLock lock(&mu_);
      queue_.pop_front();
      writing_ = false;
      if (!ok) {
        status_ = grpc::Status(grpc::StatusCode::CANCELLED, "stream broken");
        broken_ = true;
      }
      if (!broken_ && read_paused_ && queue_.size() < kMaxQueued) {
        read_paused_ = false;
        actions.read = true;
        reading_ = true;
      }
      Actions more = NextActionsLocked();
      actions.write = more.write;
      actions.finish = more.finish;
    }
    Run(actions);
  }

  void OnDone() override { delete this; }

 private:
  static constexpr size_t kMaxQueued = 64;

  struct Slot {
    ValidateSessionResponse response;
    absl::Status status;
    bool ready = false;
  };
  struct Actions {
    bool read = false;
    const ValidateSessionResponse* write = nullptr;
    bool finish = false;
  };

  Actions NextActionsLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    Actions a;
    if (finished_) return a;
    if (!broken_ && !writing_ && !queue_.empty() && queue_.front().ready) {
      if (queue_.front().status.ok()) {
        writing_ = true;
        a.write = &queue_.front().response;  // deque: stays put
        return a;
      }
      // This request could not be answered: end the stream with why.
      status_ = ToGrpcStatus(queue_.front().status);
      broken_ = true;
    }
    const bool done = broken_ || (reads_done_ && queue_.empty());
    if (done && !writing_ && !reading_ && barriers_pending_ == 0) {
      finished_ = true;
      a.finish = true;
    }
    return a;
  }

  void Run(const Actions& actions) {
    if (actions.finish) {
      grpc::Status status;
      {
        absl::MutexLock lock(&mu_);
        status = status_;
      }
      Finish(status);
      return;
    }
    if (actions.write != nullptr) StartWrite(actions.write);
    if (actions.read) StartRead(&request_);
  }

  SessionServiceImpl* const service_;
  grpc::CallbackServerContext* const context_;
  // Only touched between a StartRead and its OnReadDone.
  ValidateSessionRequest request_;

  absl::Mutex mu_;
  std::deque<Slot> queue_ ABSL_GUARDED_BY(mu_);
  int barriers_pending_ ABSL_GUARDED_BY(mu_) = 0;
  bool writing_ ABSL_GUARDED_BY(mu_) = false;  // queue_.front() in flight
  bool reading_ ABSL_GUARDED_BY(mu_) = true;   // the constructor's StartRead
  bool read_paused_ ABSL_GUARDED_BY(mu_) = false;
  bool reads_done_ ABSL_GUARDED_BY(mu_) = false;
  bool broken_ ABSL_GUARDED_BY(mu_) = false;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
  grpc::Status status_ ABSL_GUARDED_BY(mu_);
};

}  // namespace

void AddLeaderHint(grpc::CallbackServerContext* context,
                   const LeaderHint& hint) {
  if (hint.id == NodeId(0)) return;
  context->AddTrailingMetadata("sessiond-leader-id",
                               absl::StrCat(hint.id.value()));
  if (!hint.client_address.empty()) {
    context->AddTrailingMetadata("sessiond-leader", hint.client_address);
  }
}

void FinishWithHint(grpc::CallbackServerContext* context,
                    grpc::ServerUnaryReactor* reactor,
                    const absl::Status& status, const LeaderHint& hint) {
  if (absl::IsUnavailable(status)) AddLeaderHint(context, hint);
  if (status.GetPayload(kNotProposedPayload).has_value()) {
    context->AddTrailingMetadata("sessiond-not-proposed", "1");
  }
  reactor->Finish(ToGrpcStatus(status));
}

std::string EncodePageToken(absl::string_view after_session_id) {
  return absl::WebSafeBase64Escape(after_session_id);
}

absl::StatusOr<std::string> DecodePageToken(absl::string_view page_token) {
  std::string out;
  if (!absl::WebSafeBase64Unescape(page_token, &out) || out.empty() ||
      out.size() > 255) {
    return absl::InvalidArgumentError(
        "page_token: malformed (pass a previous response's next_page_token)");
  }
  return out;
}

SessionServiceImpl::SessionServiceImpl(
    const SessionServiceOptions& options, const storage::SessionTable* table,
    const storage::SessionStateMachine* state_machine, ClusterClock* clock,
    ReadBarrier* reads, WritePath* writes, TouchBuffer* touches)
    : options_(options),
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
    return ShuttingDown();
  }
  return absl::OkStatus();
}

void SessionServiceImpl::BeginDrain() { draining_.store(true); }

bool SessionServiceImpl::WaitForWritesDrained(absl::Duration timeout) const {
  const absl::Time deadline = absl::Now() + timeout;
  while (writes_inflight_.load() > 0) {
    if (absl::Now() >= deadline) return false;
    absl::SleepFor(absl::Milliseconds(1));
  }
  return true;
}

absl::Status SessionServiceImpl::CheckReady() const {
  if (draining_.load()) return ShuttingDown();
  if (!ready_.load(std::memory_order_acquire)) {
    return absl::UnavailableError("not ready: the node is starting");
  }
  return absl::OkStatus();
}

absl::Time SessionServiceImpl::DeadlineOf(
    const grpc::CallbackServerContext* context) const {
  const auto client = context->deadline();
  const absl::Time client_deadline =
      client >= std::chrono::system_clock::time_point::max() -
                    std::chrono::hours(24 * 365)
          ? absl::InfiniteFuture()
          : absl::FromChrono(client);
  return WritePath::ServerDeadline(client_deadline, options_.request_timeout);
}

// ---------------------------------------------------------------------------
// Read path

void SessionServiceImpl::ValidateNow(const ValidateSessionRequest& request,
                                     int64_t now_ms, const ReadAnswer& answer,
                                     ValidateSessionResponse* response) {
  response->set_request_id(request.request_id());
  response->set_consistency(answer.consistency);
  response->set_stale(answer.stale);
  response->set_staleness_ms(answer.staleness_ms);
  response->set_applied_index(state_machine_->applied_index().value());
  // A garbage token is not an error: nobody holds a session under it.
  if (!storage::LooksLikeToken(request.token())) {
    response->set_outcome(ValidateSessionResponse::UNKNOWN);
    return;
  }
  const storage::TokenHash hash = storage::HashToken(request.token());
  const storage::ValidateOutcome outcome =
      table_->Validate(hash, now_ms, state_machine_->expiry_leeway_ms(),
                       response->mutable_session());
  response->set_outcome(ToProto(outcome));
  if (outcome != storage::ValidateOutcome::kValid) {
    response->clear_session();
  } else if (request.touch()) {
    touches_->Record(hash, now_ms);
  }
}

void SessionServiceImpl::Validate(const ValidateSessionRequest& request,
                                  absl::Time deadline,
                                  ValidateSessionResponse* response,
                                  std::function<void(absl::Status)> done) {
  if (absl::Status s = CheckReady(); !s.ok()) {
    done(s);
    return;
  }
  // The request is copied: a stream reads the next one into the same
  // buffer while this one waits.
  reads_->Wait(
      request.consistency(), deadline,
      [this, request, response, done = std::move(done)](ReadAnswer answer) {
        if (!answer.status.ok()) {
          done(answer.status);
          return;
        }
        ValidateNow(request, clock_->NowMs(), answer, response);
        done(absl::OkStatus());
      });
}

grpc::ServerUnaryReactor* SessionServiceImpl::ValidateSession(
    grpc::CallbackServerContext* context, const ValidateSessionRequest* request,
    ValidateSessionResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  if (absl::Status s = CheckReady(); !s.ok()) {
    reactor->Finish(ToGrpcStatus(s));
    return reactor;
  }
  reads_->Wait(request->consistency(), DeadlineOf(context),
               [this, context, reactor, request, response](ReadAnswer answer) {
                 if (!answer.status.ok()) {
                   FinishWithHint(context, reactor, answer.status,
                                  writes_->leader_hint());
                   return;
                 }
                 ValidateNow(*request, clock_->NowMs(), answer, response);
                 reactor->Finish(grpc::Status::OK);
               });
  return reactor;
}

grpc::ServerUnaryReactor* SessionServiceImpl::BatchValidateSessions(
    grpc::CallbackServerContext* context,
    const sessiond::v1::BatchValidateSessionsRequest* request,
    sessiond::v1::BatchValidateSessionsResponse* response) {
  if (static_cast<size_t>(request->requests_size()) >
      options_.max_batch_validate) {
    return FinishNow(context,
                     absl::InvalidArgumentError(absl::StrCat(
                         "requests: ", request->requests_size(),
                         " entries, limit is ", options_.max_batch_validate)));
  }
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  if (absl::Status s = CheckReady(); !s.ok()) {
    reactor->Finish(ToGrpcStatus(s));
    return reactor;
  }
  // One barrier for the whole batch.
  reads_->Wait(
      request->consistency(), DeadlineOf(context),
      [this, context, reactor, request, response](ReadAnswer answer) {
        if (!answer.status.ok()) {
          FinishWithHint(context, reactor, answer.status,
                         writes_->leader_hint());
          return;
        }
        const int64_t now_ms = clock_->NowMs();
        response->mutable_responses()->Reserve(request->requests_size());
        for (const ValidateSessionRequest& r : request->requests()) {
          ValidateNow(r, now_ms, answer, response->add_responses());
        }
        reactor->Finish(grpc::Status::OK);
      });
  return reactor;
}

grpc::ServerBidiReactor<ValidateSessionRequest, ValidateSessionResponse>*
SessionServiceImpl::StreamValidateSessions(
    grpc::CallbackServerContext* context) {
  return new StreamValidateReactor(this, context);
}

grpc::ServerUnaryReactor* SessionServiceImpl::ListUserSessions(
    grpc::CallbackServerContext* context,
    const sessiond::v1::ListUserSessionsRequest* request,
    sessiond::v1::ListUserSessionsResponse* response) {
  if (absl::Status s = CheckReady(); !s.ok()) return FinishNow(context, s);
  uint32_t page_size = 0;
  if (absl::Status s = ValidateList(*request, options_.limits, &page_size);
      !s.ok()) {
    return FinishNow(context, s);
  }
  std::string after;
  if (!request->page_token().empty()) {
    absl::StatusOr<std::string> decoded =
        DecodePageToken(request->page_token());
    if (!decoded.ok()) return FinishNow(context, decoded.status());
    after = *std::move(decoded);
  }
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  reads_->Wait(sessiond::v1::CONSISTENCY_DEFAULT, DeadlineOf(context),
               [this, context, reactor, request, response, page_size,
                after = std::move(after)](ReadAnswer answer) {
                 if (!answer.status.ok()) {
                   FinishWithHint(context, reactor, answer.status,
                                  writes_->leader_hint());
                   return;
                 }
                 storage::ListUserPage page = table_->ListUser(
                     request->user_id(), page_size, after,
                     request->include_revoked(), clock_->NowMs(),
                     state_machine_->expiry_leeway_ms());
                 response->mutable_sessions()->Reserve(page.sessions.size());
                 for (Session& s : page.sessions) {
                   *response->add_sessions() = std::move(s);
                 }
                 if (!page.next_after_session_id.empty()) {
                   response->set_next_page_token(
                       EncodePageToken(page.next_after_session_id));
                 }
                 reactor->Finish(grpc::Status::OK);
               });
  return reactor;
}

// ---------------------------------------------------------------------------
// Write path

grpc::ServerUnaryReactor* SessionServiceImpl::Write(
    grpc::CallbackServerContext* context, Command command,
    std::function<absl::Status(const std::any&)> fill) {
  if (absl::Status s = CheckReady(); !s.ok()) return FinishNow(context, s);
  if (absl::Status s = EnterWrite(); !s.ok()) return FinishNow(context, s);
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  writes_->Submit(std::move(command), DeadlineOf(context),
                  [this, context, reactor,
                   fill = std::move(fill)](replication::ApplyResult result) {
                    const LeaderHint hint = writes_->leader_hint();
                    if (!result.ok()) {
                      FinishWithHint(context, reactor, result.status(), hint);
                    } else {
                      if (hint.id != options_.self) {
                        AddLeaderHint(context, hint);
                      }
                      reactor->Finish(ToGrpcStatus(fill(*result)));
                    }
                    writes_inflight_.fetch_sub(1);
                  });
  return reactor;
}

namespace {

// A create's command, with everything random chosen here: replicas never
// consult their own RNG. Only the token's hash enters the log; the lifetime
// is relative, so the leader's cluster time sets the deadline. Returns the
// token.
std::string FillCreate(const sessiond::v1::CreateSessionRequest& request,
                       const CreateLifetimes& lifetimes,
                       sessiond::v1::internal::CreateCommand* create) {
  std::string token = storage::GenerateToken();
  create->set_token_hash(
      std::string(storage::TokenHashBytes(storage::HashToken(token))));
  create->set_session_id(storage::GenerateSessionId());
  create->set_user_id(request.user_id());
  create->set_ttl_ms(lifetimes.ttl_ms);
  create->set_idle_timeout_ms(lifetimes.idle_timeout_ms);
  *create->mutable_attributes() = request.attributes();
  if (request.has_client()) *create->mutable_client() = request.client();
  return token;
}

}  // namespace

grpc::ServerUnaryReactor* SessionServiceImpl::CreateSession(
    grpc::CallbackServerContext* context,
    const sessiond::v1::CreateSessionRequest* request,
    sessiond::v1::CreateSessionResponse* response) {
  absl::StatusOr<CreateLifetimes> lifetimes =
      ValidateCreate(*request, options_.limits);
  if (!lifetimes.ok()) return FinishNow(context, lifetimes.status());
  Command command;
  std::string token =
      FillCreate(*request, *lifetimes, command.mutable_create());
  return Write(context, std::move(command),
               [response, token = std::move(token)](const std::any& value) {
                 absl::Status s =
                     TakeSession(value, response->mutable_session());
                 if (s.ok()) response->set_token(token);
                 return s;
               });
}

grpc::ServerUnaryReactor* SessionServiceImpl::CreateSessions(
    grpc::CallbackServerContext* context,
    const sessiond::v1::CreateSessionsRequest* request,
    sessiond::v1::CreateSessionsResponse* response) {
  const size_t count = static_cast<size_t>(request->requests_size());
  if (count > options_.max_batch_create) {
    return FinishNow(context, absl::InvalidArgumentError(absl::StrCat(
                                  "requests: ", count, " entries, limit is ",
                                  options_.max_batch_create)));
  }
  if (count == 0) return FinishNow(context, absl::OkStatus());
  Command command;
  auto* batch = command.mutable_create_batch();
  std::vector<std::string> tokens;
  tokens.reserve(count);
  for (size_t i = 0; i < count; ++i) {
    absl::StatusOr<CreateLifetimes> lifetimes =
        ValidateCreate(request->requests(static_cast<int>(i)), options_.limits);
    if (!lifetimes.ok()) {
      return FinishNow(
          context, absl::InvalidArgumentError(absl::StrCat(
                       "requests[", i, "].", lifetimes.status().message())));
    }
    tokens.push_back(FillCreate(request->requests(static_cast<int>(i)),
                                *lifetimes, batch->add_creates()));
  }
  return Write(
      context, std::move(command),
      [response, tokens = std::move(tokens)](const std::any& value) {
        const auto* sessions = std::any_cast<std::vector<Session>>(&value);
        if (sessions == nullptr || sessions->size() != tokens.size()) {
          return absl::InternalError(
              "apply result is not the created sessions");
        }
        response->mutable_responses()->Reserve(static_cast<int>(tokens.size()));
        for (size_t i = 0; i < tokens.size(); ++i) {
          auto* one = response->add_responses();
          one->set_token(tokens[i]);
          *one->mutable_session() = (*sessions)[i];
        }
        return absl::OkStatus();
      });
}

grpc::ServerUnaryReactor* SessionServiceImpl::TouchSession(
    grpc::CallbackServerContext* context,
    const sessiond::v1::TouchSessionRequest* request,
    sessiond::v1::TouchSessionResponse* response) {
  if (absl::Status s = ValidateToken(request->token(), "token"); !s.ok()) {
    return FinishNow(context, s);
  }
  Command command;
  auto* touch = command.mutable_touch()->add_touches();
  touch->set_token_hash(std::string(
      storage::TokenHashBytes(storage::HashToken(request->token()))));
  // 0: the applied (cluster) time of the touch itself.
  touch->set_seen_at_ms(0);
  return Write(context, std::move(command), [response](const std::any& value) {
    return TakeSession(value, response->mutable_session());
  });
}

grpc::ServerUnaryReactor* SessionServiceImpl::UpdateSession(
    grpc::CallbackServerContext* context,
    const sessiond::v1::UpdateSessionRequest* request,
    sessiond::v1::UpdateSessionResponse* response) {
  if (absl::Status s = ValidateUpdate(*request, options_.limits); !s.ok()) {
    return FinishNow(context, s);
  }
  const storage::TokenHash hash = storage::HashToken(request->token());
  // The record-size and attribute-count limits depend on the stored
  // session. Checked against this node's table as it is now: a concurrent
  // update of the same session (or a lagging follower) could slip past,
  // which costs at most one record over the limit, never a wrong answer.
  if (std::optional<Session> current = table_->Get(hash)) {
    if (absl::Status s =
            CheckUpdatedRecord(*current, *request, options_.limits);
        !s.ok()) {
      return FinishNow(context, s);
    }
  }
  Command command;
  auto* update = command.mutable_update();
  update->set_token_hash(std::string(storage::TokenHashBytes(hash)));
  update->set_expected_version(request->expected_version());
  *update->mutable_set_attributes() = request->set_attributes();
  *update->mutable_remove_attributes() = request->remove_attributes();
  return Write(context, std::move(command), [response](const std::any& value) {
    return TakeSession(value, response->mutable_session());
  });
}

grpc::ServerUnaryReactor* SessionServiceImpl::RevokeSession(
    grpc::CallbackServerContext* context,
    const sessiond::v1::RevokeSessionRequest* request,
    sessiond::v1::RevokeSessionResponse* response) {
  if (absl::Status s = ValidateRevoke(*request, options_.limits); !s.ok()) {
    return FinishNow(context, s);
  }
  Command command;
  auto* revoke = command.mutable_revoke();
  if (request->target_case() == sessiond::v1::RevokeSessionRequest::kToken) {
    revoke->mutable_session()->set_token_hash(std::string(
        storage::TokenHashBytes(storage::HashToken(request->token()))));
  } else {
    revoke->mutable_session()->set_session_id(request->session_id());
  }
  revoke->set_reason(request->reason());
  return Write(context, std::move(command), [response](const std::any& value) {
    return TakeSession(value, response->mutable_session());
  });
}

grpc::ServerUnaryReactor* SessionServiceImpl::RevokeUserSessions(
    grpc::CallbackServerContext* context,
    const sessiond::v1::RevokeUserSessionsRequest* request,
    sessiond::v1::RevokeUserSessionsResponse* response) {
  if (absl::Status s = ValidateRevokeUser(*request, options_.limits); !s.ok()) {
    return FinishNow(context, s);
  }
  Command command;
  auto* revoke = command.mutable_revoke_user();
  revoke->set_user_id(request->user_id());
  revoke->set_keep_session_id(request->keep_session_id());
  revoke->set_reason(request->reason());
  return Write(context, std::move(command), [response](const std::any& value) {
    uint64_t count = 0;
    absl::Status s = TakeCount(value, &count);
    response->set_revoked_count(count);
    return s;
  });
}

}  // namespace sessiond::server
