// Copyright sessiond authors. Licensed under the Apache License 2.0.
#ifndef SESSIOND_CLIENT_SESSION_CLIENT_H_
#define SESSIOND_CLIENT_SESSION_CLIENT_H_

#include <grpcpp/channel.h>
#include <grpcpp/client_context.h>
#include <grpcpp/support/sync_stream.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/functional/function_ref.h"
#include "absl/random/random.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "sessiond/v1/session.grpc.pb.h"
#include "sessiond/v1/session.pb.h"

namespace sessiond::client {

struct SessionClientOptions {
  // Deadline of each attempt (not of the whole call with its retries).
  absl::Duration deadline = absl::Seconds(2);
  // Attempts for the idempotent calls, the first one included; 1 disables
  // retries. Create, Update and Touch always make exactly one attempt.
  int max_attempts = 4;
  // Backoff before the second attempt; it grows by `backoff_multiplier` up to
  // `max_backoff`. The sleep is drawn uniformly from [backoff/2, backoff]
  // ("equal jitter"), so clients that failed together do not retry together.
  absl::Duration initial_backoff = absl::Milliseconds(25);
  absl::Duration max_backoff = absl::Seconds(1);
  double backoff_multiplier = 2.0;
};

class ValidateStream;

// A client of sessiond's SessionService (proto/sessiond/v1/session.proto):
// one method per RPC, each bounded by a deadline, the idempotent ones retried.
//
// Error model. A token that is not valid is NOT an error: ValidateSession
// returns an OK StatusOr whose response carries the outcome (VALID, EXPIRED,
// REVOKED or UNKNOWN). A store that could not answer (server down, no quorum,
// overloaded, network partition) is an error with code absl::StatusCode::
// kUnavailable, or kDeadlineExceeded when the deadline ran out first. The two
// never mix: "the store could not answer" never looks like "logged out", so a
// caller must not treat a non-OK status as an UNKNOWN outcome; it should fail
// the request (or fall back) instead of logging the user out. (The outcome
// UNKNOWN is also unrelated to the status code kUnknown, which is an error.)
//
// Retries. Validate, BatchValidate, List and Revoke are idempotent and are
// retried on kUnavailable and kDeadlineExceeded, with exponential
// backoff and jitter, at most `max_attempts` times; while the channel is
// disconnected, a backoff ends early when it reconnects. Create, Update, Touch
// and RevokeUser are not (a RevokeUser retried after a lost reply would also
// revoke sessions created in between): a kUnavailable or kDeadlineExceeded from
// them means the outcome is not known (the session may or may not have been
// created or changed). Every other code is returned at once; codes are those
// documented in session.proto.
//
// Thread-safe: one SessionClient (and its channel) is meant to be shared by
// all threads of an application server. Calls block the calling thread.
class SessionClient {
 public:
  // A client over an insecure channel to `target` ("host:port").
  static std::unique_ptr<SessionClient> Connect(
      const std::string& target, SessionClientOptions options = {});

  explicit SessionClient(std::shared_ptr<grpc::ChannelInterface> channel,
                         SessionClientOptions options = {});

  SessionClient(const SessionClient&) = delete;
  SessionClient& operator=(const SessionClient&) = delete;

  absl::StatusOr<v1::CreateSessionResponse> CreateSession(
      const v1::CreateSessionRequest& request);
  absl::StatusOr<v1::ValidateSessionResponse> ValidateSession(
      const v1::ValidateSessionRequest& request);
  absl::StatusOr<v1::BatchValidateSessionsResponse> BatchValidateSessions(
      const v1::BatchValidateSessionsRequest& request);
  absl::StatusOr<v1::TouchSessionResponse> TouchSession(
      const v1::TouchSessionRequest& request);
  absl::StatusOr<v1::UpdateSessionResponse> UpdateSession(
      const v1::UpdateSessionRequest& request);
  absl::StatusOr<v1::RevokeSessionResponse> RevokeSession(
      const v1::RevokeSessionRequest& request);
  absl::StatusOr<v1::ListUserSessionsResponse> ListUserSessions(
      const v1::ListUserSessionsRequest& request);
  absl::StatusOr<v1::RevokeUserSessionsResponse> RevokeUserSessions(
      const v1::RevokeUserSessionsRequest& request);

  // Shorthand for ValidateSession with just a token.
  absl::StatusOr<v1::ValidateSessionResponse> Validate(absl::string_view token,
                                                       bool touch = false);

  // Opens a StreamValidateSessions stream. Streams are not retried: when
  // one breaks, its methods return the status and the caller opens another.
  std::unique_ptr<ValidateStream> OpenValidateStream();

  // Attempts made and retries taken since construction, over all methods.
  struct Stats {
    uint64_t attempts = 0;
    uint64_t retries = 0;
  };
  Stats stats() const;

  const SessionClientOptions& options() const { return options_; }

 private:
  using Attempt = absl::FunctionRef<grpc::Status(grpc::ClientContext*)>;

  // Runs `attempt` with a fresh context and deadline, retrying per the class
  // comment when `idempotent`.
  absl::Status Invoke(bool idempotent, Attempt attempt);
  absl::Duration Jitter(absl::Duration backoff) ABSL_LOCKS_EXCLUDED(rng_mu_);
  // Waits `delay` before a retry, or less when a broken channel reconnects.
  void Backoff(absl::Duration delay);

  const SessionClientOptions options_;
  const std::shared_ptr<grpc::ChannelInterface> channel_;
  const std::unique_ptr<v1::SessionService::Stub> stub_;

  std::atomic<uint64_t> attempts_{0};
  std::atomic<uint64_t> retries_{0};

  absl::Mutex rng_mu_;
  absl::BitGen rng_ ABSL_GUARDED_BY(rng_mu_);
};

// One StreamValidateSessions stream used synchronously: each Validate writes
// one request and reads its answer. The stream has no per-message deadline;
// Cancel() (callable from any thread) ends a stuck one.
//
// Not thread-safe apart from Cancel(): one caller at a time.
class ValidateStream {
 public:
  ValidateStream(std::unique_ptr<grpc::ClientContext> context,
                 v1::SessionService::Stub* stub);
  ~ValidateStream();

  ValidateStream(const ValidateStream&) = delete;
  ValidateStream& operator=(const ValidateStream&) = delete;

  // Same contract as SessionClient::ValidateSession: outcomes in the
  // response, a broken stream as kUnavailable (or the server's status).
  absl::StatusOr<v1::ValidateSessionResponse> Validate(
      const v1::ValidateSessionRequest& request);

  // Half-closes the stream and returns the server's final status.
  absl::Status Close();

  void Cancel() { context_->TryCancel(); }

 private:
  absl::Status FinishBroken();

  const std::unique_ptr<grpc::ClientContext> context_;
  std::unique_ptr<grpc::ClientReaderWriter<v1::ValidateSessionRequest,
                                           v1::ValidateSessionResponse>>
      stream_;
  uint64_t next_request_id_ = 1;
  bool finished_ = false;
  absl::Status final_status_;
};

}  // namespace sessiond::client

#endif  // SESSIOND_CLIENT_SESSION_CLIENT_H_
