// Copyright sessiond authors. Licensed under the Apache License 2.0.
#include "client/session_client.h"

#include <grpcpp/create_channel.h>
#include <grpcpp/security/credentials.h>

#include <algorithm>
#include <chrono>
#include <utility>

#include "absl/strings/str_cat.h"
#include "client/grpc_status.h"

namespace sessiond::client {
namespace {

bool Retryable(const absl::Status& status) {
  return status.code() == absl::StatusCode::kUnavailable ||
         status.code() == absl::StatusCode::kDeadlineExceeded;
}

}  // namespace

std::unique_ptr<SessionClient> SessionClient::Connect(
    const std::string& target, SessionClientOptions options) {
  return std::make_unique<SessionClient>(
      grpc::CreateChannel(target, grpc::InsecureChannelCredentials()),
      std::move(options));
}

SessionClient::SessionClient(std::shared_ptr<grpc::ChannelInterface> channel,
                             SessionClientOptions options)
    : options_(std::move(options)),
      channel_(std::move(channel)),
      stub_(v1::SessionService::NewStub(channel_)) {}

absl::Duration SessionClient::Jitter(absl::Duration backoff) {
  absl::MutexLock lock(&rng_mu_);
  const double fraction = absl::Uniform(rng_, 0.5, 1.0);
  return backoff * fraction;
}

void SessionClient::Backoff(absl::Duration delay) {
  if (channel_->GetState(/*try_to_connect=*/true) == GRPC_CHANNEL_READY) {
    // Connected, yet the server could not answer (no quorum, overloaded):
    // plain backoff.
    absl::SleepFor(delay);
    return;
  }
  // Not connected: wait on the channel instead of sleeping. A blocking client
  // has no thread polling the channel between calls, and calls fail fast
  // while it is down, so without this a reconnect that succeeds is noticed
  // only by gRPC's backup poller, every 5 s. Waiting here polls the channel,
  // and the retry goes as soon as the connection is up.
  channel_->WaitForConnected(std::chrono::system_clock::now() +
                             absl::ToChronoNanoseconds(delay));
}

absl::Status SessionClient::Invoke(bool idempotent, Attempt attempt) {
  const int max_attempts = idempotent ? std::max(1, options_.max_attempts) : 1;
  absl::Duration backoff = options_.initial_backoff;
  absl::Status status;
  for (int n = 1;; ++n) {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() +
                         absl::ToChronoNanoseconds(options_.deadline));
    attempts_.fetch_add(1, std::memory_order_relaxed);
    status = FromGrpcStatus(attempt(&context));
    if (status.ok() || !Retryable(status) || n >= max_attempts) break;
    retries_.fetch_add(1, std::memory_order_relaxed);
    Backoff(Jitter(backoff));
    backoff =
        std::min(backoff * options_.backoff_multiplier, options_.max_backoff);
  }
  if (!status.ok() && max_attempts > 1 && Retryable(status)) {
    return absl::Status(
        status.code(),
        absl::StrCat(status.message(), " (after ", max_attempts, " attempts)"));
  }
  return status;
}

// Each method copies the response out only on success; a failed attempt
// leaves `response` in an unspecified state, so it is cleared per attempt.
#define SESSIOND_CLIENT_CALL(Method, idempotent)                               \
  v1::Method##Response response;                                               \
  absl::Status status = Invoke(idempotent, [&](grpc::ClientContext* context) { \
    response.Clear();                                                          \
    return stub_->Method(context, request, &response);                         \
  });                                                                          \
  if (!status.ok()) return status;                                             \
  return response

absl::StatusOr<v1::CreateSessionResponse> SessionClient::CreateSession(
    const v1::CreateSessionRequest& request) {
  SESSIOND_CLIENT_CALL(CreateSession, /*idempotent=*/false);
}

absl::StatusOr<v1::ValidateSessionResponse> SessionClient::ValidateSession(
    const v1::ValidateSessionRequest& request) {
  SESSIOND_CLIENT_CALL(ValidateSession, /*idempotent=*/true);
}

absl::StatusOr<v1::BatchValidateSessionsResponse>
SessionClient::BatchValidateSessions(
    const v1::BatchValidateSessionsRequest& request) {
  SESSIOND_CLIENT_CALL(BatchValidateSessions, /*idempotent=*/true);
}

absl::StatusOr<v1::TouchSessionResponse> SessionClient::TouchSession(
    const v1::TouchSessionRequest& request) {
  SESSIOND_CLIENT_CALL(TouchSession, /*idempotent=*/false);
}

absl::StatusOr<v1::UpdateSessionResponse> SessionClient::UpdateSession(
    const v1::UpdateSessionRequest& request) {
  SESSIOND_CLIENT_CALL(UpdateSession, /*idempotent=*/false);
}

absl::StatusOr<v1::RevokeSessionResponse> SessionClient::RevokeSession(
    const v1::RevokeSessionRequest& request) {
  SESSIOND_CLIENT_CALL(RevokeSession, /*idempotent=*/true);
}

absl::StatusOr<v1::ListUserSessionsResponse> SessionClient::ListUserSessions(
    const v1::ListUserSessionsRequest& request) {
  SESSIOND_CLIENT_CALL(ListUserSessions, /*idempotent=*/true);
}

absl::StatusOr<v1::RevokeUserSessionsResponse>
SessionClient::RevokeUserSessions(
    const v1::RevokeUserSessionsRequest& request) {
  SESSIOND_CLIENT_CALL(RevokeUserSessions, /*idempotent=*/false);
}

#undef SESSIOND_CLIENT_CALL

absl::StatusOr<v1::ValidateSessionResponse> SessionClient::Validate(
    absl::string_view token, bool touch) {
  v1::ValidateSessionRequest request;
  request.set_token(std::string(token));
  request.set_touch(touch);
  return ValidateSession(request);
}

std::unique_ptr<ValidateStream> SessionClient::OpenValidateStream() {
  attempts_.fetch_add(1, std::memory_order_relaxed);
  return std::make_unique<ValidateStream>(
      std::make_unique<grpc::ClientContext>(), stub_.get());
}

SessionClient::Stats SessionClient::stats() const {
  Stats stats;
  stats.attempts = attempts_.load(std::memory_order_relaxed);
  stats.retries = retries_.load(std::memory_order_relaxed);
  return stats;
}

ValidateStream::ValidateStream(std::unique_ptr<grpc::ClientContext> context,
                               v1::SessionService::Stub* stub)
    : context_(std::move(context)),
      stream_(stub->StreamValidateSessions(context_.get())) {}

ValidateStream::~ValidateStream() {
  if (!finished_) {
    context_->TryCancel();
    (void)stream_->Finish();
  }
}

absl::Status ValidateStream::FinishBroken() {
  if (!finished_) {
    finished_ = true;
    final_status_ = FromGrpcStatus(stream_->Finish());
  }
  if (final_status_.ok()) {
    // The server ended the stream cleanly while an answer was owed: the
    // store did not answer, which is never an outcome.
    return absl::UnavailableError("validate stream closed by the server");
  }
  return final_status_;
}

absl::StatusOr<v1::ValidateSessionResponse> ValidateStream::Validate(
    const v1::ValidateSessionRequest& request) {
  if (finished_) return FinishBroken();
  v1::ValidateSessionRequest numbered = request;
  if (numbered.request_id() == 0) numbered.set_request_id(next_request_id_++);
  if (!stream_->Write(numbered)) return FinishBroken();
  v1::ValidateSessionResponse response;
  if (!stream_->Read(&response)) return FinishBroken();
  if (response.request_id() != numbered.request_id()) {
    return absl::InternalError(absl::StrCat(
        "validate stream answered request ", response.request_id(),
        " while request ", numbered.request_id(), " was outstanding"));
  }
  return response;
}

absl::Status ValidateStream::Close() {
  if (finished_) return final_status_;
  stream_->WritesDone();
  v1::ValidateSessionResponse ignored;
  // Bounded: the server owes no answers once every Validate has returned.
  for (int i = 0; i < 1000 && stream_->Read(&ignored); ++i) {
  }
  finished_ = true;
  final_status_ = FromGrpcStatus(stream_->Finish());
  return final_status_;
}

}  // namespace sessiond::client
