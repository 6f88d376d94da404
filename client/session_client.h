// Copyright sessiond authors. Licensed under the Apache License 2.0.
#ifndef SESSIOND_CLIENT_SESSION_CLIENT_H_
#define SESSIOND_CLIENT_SESSION_CLIENT_H_

#include <grpcpp/channel.h>
#include <grpcpp/client_context.h>
#include <grpcpp/security/credentials.h>
#include <grpcpp/support/channel_arguments.h>
#include <grpcpp/support/sync_stream.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <deque>
#include <initializer_list>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/functional/function_ref.h"
#include "absl/random/random.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "sessiond/v1/session.grpc.pb.h"
#include "sessiond/v1/session.pb.h"

namespace sessiond::client {

struct SessionClientOptions {
  // Deadline of each attempt. An attempt never runs past `call_timeout`:
  // it gets min(deadline, time left in the call).
  absl::Duration deadline = absl::Seconds(2);
  // Deadline of the whole call: every attempt, backoff and connection wait
  // included. A call returns within about this long, whatever the cluster
  // does.
  absl::Duration call_timeout = absl::Seconds(5);
  // Rounds per call, the first one included; 1 disables retries. For the
  // idempotent calls a round is one attempt; for the others it is one
  // attempt or one pass over the endpoints that found none connected (see
  // the class comment).
  int max_attempts = 4;
  // Backoff before the second round; it grows by `backoff_multiplier` up to
  // `max_backoff`. The sleep is drawn uniformly from [backoff/2, backoff]
  // ("equal jitter"), so clients that failed together do not retry together.
  absl::Duration initial_backoff = absl::Milliseconds(25);
  absl::Duration max_backoff = absl::Seconds(1);
  double backoff_multiplier = 2.0;
  // A non-idempotent call is sent only over a connected channel: how long it
  // waits for the chosen endpoint to connect before passing it over for
  // another one (nothing has been sent to it).
  absl::Duration connect_timeout = absl::Seconds(1);
  // An endpoint whose attempt ran out its whole `deadline` unanswered, that
  // a write waited `connect_timeout` for in vain (a paused or blackholed
  // node: its channel can say CONNECTING or READY all along), or that
  // answered it is shutting down (SHUTTING_DOWN, or its server cancelled
  // the call as it stopped), is tried after the others for this long, and not
  // taken for the leader when another node names it, so calls do not keep
  // waiting it out in turn. 0: never passed over for that.
  absl::Duration pass_over_after_timeout = absl::Seconds(5);
  // A learned leader that is not one of the endpoints gets a channel of its
  // own; at most this many such channels are kept (the least recently used
  // is dropped first). 0: writes to such a leader go through the endpoints.
  int max_extra_channels = 4;
  // For every channel Connect opens (the endpoints and learned leaders).
  // Null: insecure.
  std::shared_ptr<grpc::ChannelCredentials> credentials;
  // Extra arguments for those channels (reconnect backoff, keepalive, ...).
  // The client adds GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, so no two channels
  // share a connection, and, unless set here, GRPC_ARG_MAX_RECONNECT_BACKOFF_MS
  // 5000 (gRPC's default grows to 120 s; a retried call reconnects at once
  // whatever the backoff) and keepalive: GRPC_ARG_KEEPALIVE_TIME_MS 30000,
  // GRPC_ARG_KEEPALIVE_TIMEOUT_MS 10000,
  // GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS 1 and
  // GRPC_ARG_HTTP2_MAX_PINGS_WITHOUT_DATA 0 (keep pinging a quiet stream), so
  // a vanished node is noticed within ~40 s (docs/API.md, "Connections").
  // A keepalive time under 10 s gets GOAWAY from sessiond servers.
  grpc::ChannelArguments channel_args;
  // Coalesce concurrent CreateSession calls into CreateSessions calls (one
  // RPC and one log entry for many sessions). No call waits for a batch to
  // fill: while one CreateSessions is in flight, the creates that arrive
  // queue, and the next one carries all of them (up to
  // max_coalesced_creates). Each caller still gets its own answer; a batch
  // refused for one request's sake (invalid, its user at the per-user cap, a
  // JWT that cannot be signed) is retried one by one (each caller sends its
  // own), so one bad request fails only its own call. Each caller's
  // call_timeout holds: a batch ends by the earliest deadline of the callers in
  // it; a caller left with less than half of min(deadline, call_timeout) when
  // its batch would go (it waited behind slow batches) is answered "not sent"
  // (IsNotSent) rather than cut the others' time short, unless it is the one
  // whose turn it is to send: that one sends its create alone (with at least
  // the quarter any write needs, else "not sent" too).
  bool coalesce_creates = false;
  // Also closed once its requests reach 1 MiB (kMaxCoalescedRequestBytes):
  // the reply carries every record, and one over this client's receive
  // limit (gRPC's 4 MiB by default) could not be read.
  int max_coalesced_creates = 256;
  // Give every CreateSession without a request_id a fresh one
  // (NewRequestId), so that every create is retried like an idempotent call
  // (see the class comment). Needs servers that know request_id (older ones
  // ignore the field and a retry may then create twice). A create with
  // token_format JWT gets none (the server takes none with it).
  bool create_request_ids = false;
};

// A fresh CreateSessionRequest.request_id: 16 bytes from the kernel's CSPRNG
// (getrandom), base64url, 22 characters. A request_id must be unpredictable
// (docs/API.md, "Retrying a create"): use this or a UUIDv4.
std::string NewRequestId();

// True when `status`, returned by a SessionClient call, says the request was
// never sent: no endpoint's channel was connected within the call's budget,
// or the server answered that no node ever proposed it (trailing metadata
// "sessiond-not-proposed": no leader until its deadline), and no earlier
// attempt of the call went out with an unknown outcome. The write certainly
// did not happen; the client retries it within the call's deadline.
bool IsNotSent(const absl::Status& status);

class ValidateStream;

// A client of a sessiond cluster's SessionService
// (proto/sessiond/v1/session.proto): one method per RPC, each bounded by a
// deadline, the idempotent ones retried, writes sent to the leader.
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
// Endpoints. The client holds one channel per endpoint, each with its own
// connection (a dead node or a failing DNS name affects only its channel).
//   Reads (ValidateSession, Validate, BatchValidateSessions,
//   ListUserSessions, GetSession, OpenValidateStream) go round-robin over
//   the endpoints, passing over channels in TRANSIENT_FAILURE, and
//   endpoints that just let an attempt time out (pass_over_after_timeout),
//   while another is not.
//   Writes (CreateSession, UpdateSession, TouchSession, RevokeSession,
//   RevokeUserSessions, RotateSessionToken) go to the leader once the client
//   knows it, else like
//   reads (any node forwards a write to its leader). The client learns the
//   leader from the "sessiond-leader" trailing metadata of any answer, and
//   from a write answered OK without that metadata (the node that answered
//   committed it as the leader). An address that is not an endpoint gets an
//   extra channel (`max_extra_channels`); a wildcard host (0.0.0.0, ::) is
//   matched to the one endpoint with the same port, or ignored. The client
//   forgets the leader when a call to it fails with kUnavailable or
//   kDeadlineExceeded, or its channel is not connected.
//
// Retries, all within `call_timeout`:
//   ValidateSession, BatchValidateSessions, ListUserSessions, GetSession,
//   RevokeSession, TouchSession (it only moves last_seen_at_ms forward, and
//   refuses a revoked or expired session), and CreateSession with a
//   request_id (the server returns the first call's session and token to a
//   retry) are idempotent: retried on kUnavailable, kDeadlineExceeded,
//   kResourceExhausted (a kCancelled attempt counts as kUnavailable: this
//   client never cancels one, so the server did, which gRPC does to a call
//   that races its shutdown), at most `max_attempts` attempts, each on another
//   endpoint when there is one (RevokeSession, TouchSession: the leader,
//   while known), with exponential backoff and jitter (at least the server's
//   RetryInfo delay, up to max_backoff); while the next channel is
//   disconnected, a backoff ends early when it connects, but never before the
//   server's RetryInfo delay has passed. A create with a request_id is not
//   coalesced (coalesce_creates).
//   CreateSession without a request_id, UpdateSession, RevokeUserSessions,
//   RotateSessionToken are not idempotent (a RevokeUser retried after a lost
//   reply would also revoke sessions created in between): each is sent at most
//   once, except that the server's kResourceExhausted (back-pressure, with its
//   ErrorInfo: it queued nothing) is retried after backoff. A
//   kResourceExhausted without it is this client refusing a reply over its
//   receive limit, after the write applied: returned as kUnknown, outcome
//   unknown. Before sending, the client waits up to `connect_timeout` for the
//   chosen channel to be connected (a channel quiet for a while is polled for
//   about 1 ms first, so a server that died meanwhile is seen); one that is not
//   connected is passed over for the next endpoint, which is safe because
//   nothing was sent to it. One left less than a quarter of min(deadline,
//   call_timeout) once connected is not sent (IsNotSent): its deadline would
//   likely run out after the server proposed it, an unknown outcome. Nor is
//   one retried that would have less than that after the backoff: the call
//   ends with the server's last refusal (nothing done; its RetryInfo kept).
//
// Unknown outcome. For CreateSession (without a request_id), UpdateSession,
// RevokeUserSessions and RotateSessionToken (whose new token is then lost:
// the old one is UNKNOWN if the rotation applied):
//   OK                                  applied.
//   kUnavailable with IsNotSent()       never sent: not applied.
//   kUnavailable otherwise,             OUTCOME UNKNOWN: the write may have
//   kDeadlineExceeded, kInternal,       applied, or may still apply later
//   kUnknown, kCancelled, kDataLoss     (a session may exist that the caller
//                                       never saw the token of).
//   any other code (kInvalidArgument,   the server's answer: not applied.
//   kNotFound, kAborted,
//   kFailedPrecondition, kAlreadyExists,
//   kResourceExhausted after the retries, ...)
// A retried call (a create with a request_id, or a write the server
// refused under load and the client sent again) whose earlier attempt may
// have applied never ends as "not applied" on a later attempt's word that
// it did nothing (never sent, or refused under load): it returns
// kUnavailable, outcome unknown, saying "an earlier attempt was sent and may
// have applied".
// RevokeSession's and TouchSession's outcome after an error is unknown as
// well, but retrying them (as the client does) is safe.
//
// Every other code is returned at once; codes are those documented in
// session.proto. The server's error details travel as payloads of the
// returned status: ErrorReason(status) (client/grpc_status.h) tells e.g.
// SESSION_REVOKED from SESSION_EXPIRED.
//
// A call's deadline is kept on the steady clock: a step of the wall clock
// (NTP, a VM resumed) during a call does not stretch its call_timeout. (One
// exception: a coalesced create waiting for its turn waits on Abseil's
// Mutex, which times out on the wall clock; the wait still ends when the
// batch ahead of it does, and that batch ends by its callers' deadlines.)
//
// Thread-safe: one SessionClient (and its channels) is meant to be shared by
// all threads of an application server. Calls block the calling thread.
class SessionClient {
 public:
  // A client of the cluster whose client addresses ("host:port", or any
  // gRPC target) are `endpoints`: one node each, or a name that balances
  // over several. An empty list makes every call fail with
  // kFailedPrecondition.
  static std::unique_ptr<SessionClient> Connect(
      std::vector<std::string> endpoints, SessionClientOptions options = {});
  // So that Connect({"a:1", "b:2"}) is a list, not a std::string built from
  // two pointers.
  static std::unique_ptr<SessionClient> Connect(
      std::initializer_list<std::string> endpoints,
      SessionClientOptions options = {});
  // A list of one.
  static std::unique_ptr<SessionClient> Connect(
      const std::string& target, SessionClientOptions options = {});

  // A client over one channel the caller built (TLS, custom arguments...):
  // a list of one endpoint whose address the client does not know, so it
  // opens no channel of its own; writes go through `channel` (the node
  // behind it forwards them to the leader).
  explicit SessionClient(std::shared_ptr<grpc::ChannelInterface> channel,
                         SessionClientOptions options = {});
  ~SessionClient();

  SessionClient(const SessionClient&) = delete;
  SessionClient& operator=(const SessionClient&) = delete;

  absl::StatusOr<v1::CreateSessionResponse> CreateSession(
      const v1::CreateSessionRequest& request);
  // Up to 1000 sessions in one call; all or none (session.proto). Not
  // idempotent, like CreateSession.
  absl::StatusOr<v1::CreateSessionsResponse> CreateSessions(
      const v1::CreateSessionsRequest& request);
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
  absl::StatusOr<v1::GetSessionResponse> GetSession(
      const v1::GetSessionRequest& request);
  absl::StatusOr<v1::RotateSessionTokenResponse> RotateSessionToken(
      const v1::RotateSessionTokenRequest& request);

  // Shorthand for ValidateSession with just a token.
  absl::StatusOr<v1::ValidateSessionResponse> Validate(absl::string_view token,
                                                       bool touch = false);

  // Opens a StreamValidateSessions stream on the next endpoint (as a read)
  // whose channel connects within connect_timeout, passing over the others
  // as a call does; when none does within call_timeout, the stream is
  // broken from the start with kUnavailable, IsNotSent. Streams are not
  // retried: when one breaks, its methods return the status and the caller
  // opens another. The stream must not outlive this client.
  std::unique_ptr<ValidateStream> OpenValidateStream();

  // Counters since construction, over all methods.
  struct Stats {
    // RPCs started.
    uint64_t attempts = 0;
    // Rounds after the first: retried attempts, and passes over the
    // endpoints that found none connected.
    uint64_t retries = 0;
    // Times writes started going to a different leader (the first one
    // learned included).
    uint64_t leader_changes = 0;
    // Times the known leader was dropped (it failed, or disconnected).
    uint64_t leaders_forgotten = 0;
    // Leader hints the client could not use: a wildcard host matching no
    // single endpoint, an address it may not open a channel to (nonzero
    // usually means the servers need --advertise_client), or an endpoint it
    // passes over (pass_over_after_timeout: it could not reach it).
    uint64_t leader_hints_ignored = 0;
    // Endpoints a non-idempotent call passed over, unsent, because their
    // channel was not connected.
    uint64_t endpoints_skipped = 0;
    // Channels opened to leaders outside the endpoint list.
    uint64_t extra_channels_opened = 0;
    // With coalesce_creates: CreateSessions calls made for CreateSession
    // callers, and the creates they carried.
    uint64_t coalesced_batches = 0;
    uint64_t coalesced_creates = 0;
  };
  Stats stats() const;

  // The address writes go to now, as the leader announced it (or as the
  // endpoint was given); empty when no leader is known.
  std::string leader() const ABSL_LOCKS_EXCLUDED(mu_);

  const SessionClientOptions& options() const { return options_; }

 private:
  struct Endpoint;
  struct PendingCreate;
  // A call's deadline. gRPC and absl::Mutex take wall-clock deadlines, made
  // from this just before each wait (WallDeadline in the .cc).
  using SteadyTime = std::chrono::steady_clock::time_point;
  // CreateSession through the coalescer (options_.coalesce_creates).
  absl::StatusOr<v1::CreateSessionResponse> CoalescedCreate(
      const v1::CreateSessionRequest& request) ABSL_LOCKS_EXCLUDED(create_mu_);
  // `deadline`: the call ends by then, or by call_timeout if sooner.
  absl::StatusOr<v1::CreateSessionResponse> DirectCreate(
      const v1::CreateSessionRequest& request,
      SteadyTime deadline = SteadyTime::max());
  absl::StatusOr<v1::CreateSessionsResponse> CreateSessionsBy(
      const v1::CreateSessionsRequest& request, SteadyTime deadline);
  using EndpointPtr = std::shared_ptr<Endpoint>;
  using Attempt = absl::FunctionRef<grpc::Status(v1::SessionService::Stub*,
                                                 grpc::ClientContext*)>;

  // How a method is routed and retried (class comment).
  struct Policy {
    Policy(bool write, bool idempotent, SteadyTime deadline = SteadyTime::max())
        : write(write), idempotent(idempotent), deadline(deadline) {}
    bool write;       // to the leader when known
    bool idempotent;  // retried; sent over any channel state
    // The call ends by then, or after call_timeout if sooner.
    SteadyTime deadline;
    // The request's serialized size: tells a request refused for its size
    // from a reply refused for its own.
    size_t request_bytes = 0;
  };

  SessionClient(std::vector<EndpointPtr> endpoints, bool opens_channels,
                SessionClientOptions options);

  // Runs `attempt` per `policy`, with a fresh context per attempt.
  absl::Status Invoke(Policy policy, Attempt attempt);
  // Where the next round should go, best first: the leader (for a write,
  // when known and its channel is not in TRANSIENT_FAILURE), then every
  // endpoint from the round-robin position, those not tried in this call
  // and not failing (TRANSIENT_FAILURE, or passed over) first.
  std::vector<EndpointPtr> Candidates(bool write,
                                      absl::Span<const Endpoint* const> tried)
      ABSL_LOCKS_EXCLUDED(mu_);
  // The first of `candidates` whose channel is connected (each waited for
  // up to connect_timeout, never past `call_deadline`); null when none is.
  // `whole_call`: the first candidate's wait has the call's whole
  // call_timeout (the call's first wait, no shorter deadline of the
  // caller's), so a wait the call's end cuts short is still its whole one.
  EndpointPtr FirstConnected(const std::vector<EndpointPtr>& candidates,
                             SteadyTime call_deadline, bool whole_call)
      ABSL_LOCKS_EXCLUDED(mu_);
  // Learns or forgets the leader from one attempt's answer.
  void Observe(const EndpointPtr& endpoint, bool write,
               const absl::Status& status, const grpc::ClientContext& context)
      ABSL_LOCKS_EXCLUDED(mu_);
  // The endpoint for a leader address from a hint: an endpoint, a kept
  // extra channel, or a new extra channel. Null when none may be used.
  EndpointPtr EndpointFor(absl::string_view address)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void SetLeader(const EndpointPtr& endpoint)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void ForgetLeader(const Endpoint* endpoint) ABSL_LOCKS_EXCLUDED(mu_);
  // Ranks `endpoint` as failing for pass_over_after_timeout (steady clock).
  void PassOver(Endpoint& endpoint) const;

  absl::Duration Jitter(absl::Duration backoff) ABSL_LOCKS_EXCLUDED(rng_mu_);
  // Waits `delay` before a retry, or less when `channel` (where the retry
  // goes) is disconnected and connects meanwhile; never less than
  // `at_least` (the server's RetryInfo).
  void Backoff(absl::Duration delay, absl::Duration at_least,
               grpc::ChannelInterface& channel);

  const SessionClientOptions options_;
  // Constant after construction, never empty apart from Connect({}).
  const std::vector<EndpointPtr> endpoints_;
  // Whether the client may open channels to learned leaders (false when the
  // caller supplied the channel).
  const bool opens_channels_;

  std::atomic<uint64_t> next_endpoint_{0};  // round-robin position

  mutable absl::Mutex mu_;
  // Where writes go; null: not known. Shared, so a channel dropped from
  // extras_ lives on while a call uses it.
  EndpointPtr leader_ ABSL_GUARDED_BY(mu_);
  // Channels to leaders outside endpoints_, least recently used first.
  std::vector<EndpointPtr> extras_ ABSL_GUARDED_BY(mu_);

  std::atomic<uint64_t> attempts_{0};
  std::atomic<uint64_t> retries_{0};
  std::atomic<uint64_t> leader_changes_{0};
  std::atomic<uint64_t> leaders_forgotten_{0};
  std::atomic<uint64_t> leader_hints_ignored_{0};
  std::atomic<uint64_t> endpoints_skipped_{0};
  std::atomic<uint64_t> extra_channels_opened_{0};

  // The create coalescer: whoever finds no batch in flight sends one with
  // every create queued; the others wait for their answer or their turn.
  absl::Mutex create_mu_;
  bool create_sending_ ABSL_GUARDED_BY(create_mu_) = false;
  std::deque<PendingCreate*> create_queue_ ABSL_GUARDED_BY(create_mu_);
  std::atomic<uint64_t> coalesced_batches_{0};
  std::atomic<uint64_t> coalesced_creates_{0};

  absl::Mutex rng_mu_;
  absl::BitGen rng_ ABSL_GUARDED_BY(rng_mu_);
};

// One StreamValidateSessions stream used synchronously: each Validate writes
// one request and reads its answer. The stream has no per-message deadline;
// Cancel() (callable from any thread) ends a stuck one.
//
// Not thread-safe apart from Cancel(): one caller at a time. `stub` must
// outlive the stream.
class ValidateStream {
 public:
  ValidateStream(std::unique_ptr<grpc::ClientContext> context,
                 v1::SessionService::Stub* stub);
  ~ValidateStream();

  ValidateStream(const ValidateStream&) = delete;
  ValidateStream& operator=(const ValidateStream&) = delete;

  // Same contract as SessionClient::ValidateSession: outcomes in the
  // response, a broken stream as kUnavailable (or the server's status).
  // An answer for another request_id ends the stream: kInternal, from this
  // call, every later one and Close; open another stream.
  absl::StatusOr<v1::ValidateSessionResponse> Validate(
      const v1::ValidateSessionRequest& request);

  // Half-closes the stream and returns the server's final status.
  absl::Status Close();

  void Cancel() { context_->TryCancel(); }

 private:
  friend class SessionClient;

  // A stream that was never opened: every method returns `broken`.
  explicit ValidateStream(absl::Status broken);

  absl::Status FinishBroken();
  // Cancels the call, finishes it, and makes `why` the stream's final
  // status, which it returns.
  absl::Status Abandon(absl::Status why);

  const std::unique_ptr<grpc::ClientContext> context_;
  std::unique_ptr<grpc::ClientReaderWriter<v1::ValidateSessionRequest,
                                           v1::ValidateSessionResponse>>
      stream_;
  uint64_t next_request_id_ = 1;
  // A Write was made: the stream's (corked) metadata has left.
  bool wrote_ = false;
  bool finished_ = false;
  absl::Status final_status_;
};

}  // namespace sessiond::client

#endif  // SESSIOND_CLIENT_SESSION_CLIENT_H_
