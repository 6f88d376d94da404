// Copyright sessiond authors. Licensed under the Apache License 2.0.
#include "server/session_service.h"

#include <any>
#include <deque>
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

int64_t NowMs() { return absl::ToUnixMillis(absl::Now()); }

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

// Proposes `command` and returns the reactor; the apply thread finishes it
// with `fill(applied value)`'s status, or the rejection. `inflight` was
// incremented by the caller (SessionServiceImpl::EnterWrite) and is
// decremented once the call is finished.
template <typename Fill>
grpc::ServerUnaryReactor* ProposeAndFinish(grpc::CallbackServerContext* context,
                                           replication::NodeDriver* driver,
                                           std::atomic<int64_t>* inflight,
                                           const Command& command, Fill fill) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  driver->Propose(command.SerializeAsString(),
                  [reactor, inflight, fill](replication::ApplyResult result) {
                    if (!result.ok()) {
                      reactor->Finish(ToGrpcStatus(result.status()));
                    } else {
                      reactor->Finish(ToGrpcStatus(fill(*result)));
                    }
                    inflight->fetch_sub(1);
                  });
  return reactor;
}

// StreamValidateSessions: responses in request order. Reading and writing
// overlap (the next request is read while earlier answers are written), with
// at most kMaxQueued answers waiting, so a client that pipelines requests is
// not held to one round trip per validation.
//
// gRPC allows one read and one write outstanding at a time; the flags under
// mu_ decide which Start* call is due, and the calls are made after mu_ is
// released.
class StreamValidateReactor
    : public grpc::ServerBidiReactor<ValidateSessionRequest,
                                     ValidateSessionResponse> {
 public:
  explicit StreamValidateReactor(SessionServiceImpl* service)
      : service_(service) {
    StartRead(&request_);
  }

  void OnReadDone(bool ok) override {
    Actions actions;
    if (!ok) {  // the client half-closed (or the call is gone)
      absl::MutexLock lock(&mu_);
      reading_ = false;
      reads_done_ = true;
      actions = NextActionsLocked();
    } else {
      ValidateSessionResponse response;
      const absl::Status s =
          service_->ValidateOne(request_, NowMs(), &response);
      absl::MutexLock lock(&mu_);
      reading_ = false;
      if (!s.ok()) {
        status_ = ToGrpcStatus(s);
        reads_done_ = true;
      } else if (!broken_ && !finished_) {
        queue_.push_back(std::move(response));
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

  struct Actions {
    bool read = false;
    const ValidateSessionResponse* write = nullptr;
    bool finish = false;
  };

  Actions NextActionsLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    Actions a;
    if (finished_) return a;
    if (broken_ || (reads_done_ && queue_.empty())) {
      // Finish only with no read or write outstanding.
      if (!writing_ && !reading_) {
        finished_ = true;
        a.finish = true;
      }
      return a;
    }
    if (!writing_ && !queue_.empty()) {
      writing_ = true;
      a.write = &queue_.front();  // deque: stays put while others come and go
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
  // Only touched between a StartRead and its OnReadDone.
  ValidateSessionRequest request_;

  absl::Mutex mu_;
  std::deque<ValidateSessionResponse> queue_ ABSL_GUARDED_BY(mu_);
  bool writing_ ABSL_GUARDED_BY(mu_) = false;  // queue_.front() in flight
  bool reading_ ABSL_GUARDED_BY(mu_) = true;   // the constructor's StartRead
  bool read_paused_ ABSL_GUARDED_BY(mu_) = false;
  bool reads_done_ ABSL_GUARDED_BY(mu_) = false;
  bool broken_ ABSL_GUARDED_BY(mu_) = false;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
  grpc::Status status_ ABSL_GUARDED_BY(mu_);
};

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

}  // namespace

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

SessionServiceImpl::SessionServiceImpl(const SessionServiceOptions& options,
                                       const storage::SessionTable* table,
                                       replication::NodeDriver* driver,
                                       TouchBuffer* touches)
    : options_(options), table_(table), driver_(driver), touches_(touches) {}

absl::Status SessionServiceImpl::CheckReady() const {
  if (draining_.load()) return ShuttingDown();
  if (!ready_.load(std::memory_order_acquire)) {
    return absl::UnavailableError(
        "not ready: the node is starting (log replay) or is not the leader");
  }
  return absl::OkStatus();
}

absl::Status SessionServiceImpl::ValidateOne(
    const ValidateSessionRequest& request, int64_t now_ms,
    ValidateSessionResponse* response) {
  if (absl::Status s = CheckReady(); !s.ok()) return s;
  response->set_request_id(request.request_id());
  // A garbage token is not an error: nobody holds a session under it.
  if (!storage::LooksLikeToken(request.token())) {
    response->set_outcome(ValidateSessionResponse::UNKNOWN);
    return absl::OkStatus();
  }
  const storage::TokenHash hash = storage::HashToken(request.token());
  const storage::ValidateOutcome outcome = table_->Validate(
      hash, now_ms, options_.expiry_leeway_ms, response->mutable_session());
  response->set_outcome(ToProto(outcome));
  if (outcome != storage::ValidateOutcome::kValid) {
    response->clear_session();
  } else if (request.touch()) {
    touches_->Record(hash, now_ms);
  }
  return absl::OkStatus();
}

grpc::ServerUnaryReactor* SessionServiceImpl::ValidateSession(
    grpc::CallbackServerContext* context, const ValidateSessionRequest* request,
    ValidateSessionResponse* response) {
  return FinishNow(context, ValidateOne(*request, NowMs(), response));
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
  const int64_t now_ms = NowMs();
  response->mutable_responses()->Reserve(request->requests_size());
  for (const ValidateSessionRequest& r : request->requests()) {
    if (absl::Status s = ValidateOne(r, now_ms, response->add_responses());
        !s.ok()) {
      response->Clear();
      return FinishNow(context, s);
    }
  }
  return FinishNow(context, absl::OkStatus());
}

grpc::ServerBidiReactor<ValidateSessionRequest, ValidateSessionResponse>*
SessionServiceImpl::StreamValidateSessions(grpc::CallbackServerContext*) {
  return new StreamValidateReactor(this);
}

grpc::ServerUnaryReactor* SessionServiceImpl::CreateSession(
    grpc::CallbackServerContext* context,
    const sessiond::v1::CreateSessionRequest* request,
    sessiond::v1::CreateSessionResponse* response) {
  absl::StatusOr<CreateLifetimes> lifetimes =
      ValidateCreate(*request, options_.limits);
  if (!lifetimes.ok()) return FinishNow(context, lifetimes.status());

  // Everything random or time-dependent is chosen here, by the proposer,
  // and carried in the command: replicas never consult their own RNG or
  // clock. Only the token's hash enters the log.
  std::string token = storage::GenerateToken();
  const int64_t now_ms = NowMs();
  Command command;
  command.set_timestamp_ms(now_ms);
  auto* create = command.mutable_create();
  create->set_token_hash(
      std::string(storage::TokenHashBytes(storage::HashToken(token))));
  create->set_session_id(storage::GenerateSessionId());
  create->set_user_id(request->user_id());
  create->set_expires_at_ms(now_ms + lifetimes->ttl_ms);
  create->set_idle_timeout_ms(lifetimes->idle_timeout_ms);
  *create->mutable_attributes() = request->attributes();
  if (request->has_client()) *create->mutable_client() = request->client();

  if (absl::Status s = EnterWrite(); !s.ok()) return FinishNow(context, s);
  return ProposeAndFinish(
      context, driver_, &writes_inflight_, command,
      [response, token = std::move(token)](const std::any& value) {
        absl::Status s = TakeSession(value, response->mutable_session());
        if (s.ok()) response->set_token(token);
        return s;
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
  const int64_t now_ms = NowMs();
  command.set_timestamp_ms(now_ms);
  auto* touch = command.mutable_touch()->add_touches();
  touch->set_token_hash(std::string(
      storage::TokenHashBytes(storage::HashToken(request->token()))));
  touch->set_seen_at_ms(now_ms);
  if (absl::Status s = EnterWrite(); !s.ok()) return FinishNow(context, s);
  return ProposeAndFinish(context, driver_, &writes_inflight_, command,
                          [response](const std::any& value) {
                            return TakeSession(value,
                                               response->mutable_session());
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
  // session. Checked against the table as it is now: a concurrent update
  // of the same session could slip past, which costs at most one record
  // over the limit, never a wrong answer.
  if (std::optional<Session> current = table_->Get(hash)) {
    if (absl::Status s =
            CheckUpdatedRecord(*current, *request, options_.limits);
        !s.ok()) {
      return FinishNow(context, s);
    }
  }
  Command command;
  command.set_timestamp_ms(NowMs());
  auto* update = command.mutable_update();
  update->set_token_hash(std::string(storage::TokenHashBytes(hash)));
  update->set_expected_version(request->expected_version());
  *update->mutable_set_attributes() = request->set_attributes();
  *update->mutable_remove_attributes() = request->remove_attributes();
  if (absl::Status s = EnterWrite(); !s.ok()) return FinishNow(context, s);
  return ProposeAndFinish(context, driver_, &writes_inflight_, command,
                          [response](const std::any& value) {
                            return TakeSession(value,
                                               response->mutable_session());
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
  command.set_timestamp_ms(NowMs());
  auto* revoke = command.mutable_revoke();
  if (request->target_case() == sessiond::v1::RevokeSessionRequest::kToken) {
    revoke->mutable_session()->set_token_hash(std::string(
        storage::TokenHashBytes(storage::HashToken(request->token()))));
  } else {
    revoke->mutable_session()->set_session_id(request->session_id());
  }
  revoke->set_reason(request->reason());
  if (absl::Status s = EnterWrite(); !s.ok()) return FinishNow(context, s);
  return ProposeAndFinish(context, driver_, &writes_inflight_, command,
                          [response](const std::any& value) {
                            return TakeSession(value,
                                               response->mutable_session());
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
  command.set_timestamp_ms(NowMs());
  auto* revoke = command.mutable_revoke_user();
  revoke->set_user_id(request->user_id());
  revoke->set_keep_session_id(request->keep_session_id());
  revoke->set_reason(request->reason());
  if (absl::Status s = EnterWrite(); !s.ok()) return FinishNow(context, s);
  return ProposeAndFinish(context, driver_, &writes_inflight_, command,
                          [response](const std::any& value) {
                            uint64_t count = 0;
                            absl::Status s = TakeCount(value, &count);
                            response->set_revoked_count(count);
                            return s;
                          });
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
  storage::ListUserPage page = table_->ListUser(
      request->user_id(), page_size, after, request->include_revoked(), NowMs(),
      options_.expiry_leeway_ms);
  response->mutable_sessions()->Reserve(page.sessions.size());
  for (Session& s : page.sessions) *response->add_sessions() = std::move(s);
  if (!page.next_after_session_id.empty()) {
    response->set_next_page_token(EncodePageToken(page.next_after_session_id));
  }
  return FinishNow(context, absl::OkStatus());
}

}  // namespace sessiond::server
