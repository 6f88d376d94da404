// Copyright sessiond authors. Licensed under the Apache License 2.0.
#ifndef SESSIOND_SERVER_SESSION_SERVICE_H_
#define SESSIOND_SERVER_SESSION_SERVICE_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "server/cluster_clock.h"
#include "server/limits.h"
#include "server/read_barrier.h"
#include "server/touch_buffer.h"
#include "server/write_path.h"
#include "sessiond/v1/session.grpc.pb.h"
#include "storage/session_state_machine.h"
#include "storage/session_table.h"

namespace sessiond::server {

struct SessionServiceOptions {
  Limits limits;
  // Most requests in one BatchValidateSessions call.
  size_t max_batch_validate = 10000;
  // Most sessions in one CreateSessions call.
  size_t max_batch_create = 1000;
  // How long a call without a client deadline may wait (writes,
  // linearizable reads).
  absl::Duration request_timeout = absl::Seconds(10);
  // This node: a write it forwarded to another (the leader) is answered
  // with the leader in trailing metadata, so clients learn where to send
  // writes.
  NodeId self;
};

// sessiond.v1.SessionService on gRPC's callback API. Two paths, the same on
// every node of a cluster:
//
//   read path   Validate, BatchValidate, StreamValidate, ListUserSessions:
//               ReadBarrier::Wait for the requested consistency, then the
//               SessionTable under its shard locks, at this node's cluster
//               time (ClusterClock::NowMs) with the replicated leeway.
//   write path  the request is checked against the limits, turned into a
//               sessiond.v1.internal.Command, and handed to WritePath (which
//               proposes it here or forwards it to the leader); the reactor
//               finishes with the applied result. A write answered by a
//               follower, and any UNAVAILABLE answer, carries the leader in
//               trailing metadata ("sessiond-leader", "sessiond-leader-id")
//               when it is known.
//
// Until set_ready(true) (the node has replayed its log) every call answers
// UNAVAILABLE: an answer from a table still being replayed could say
// UNKNOWN for a session that exists, and UNAVAILABLE never looks like
// "logged out".
//
// Thread-safe. Every pointer must outlive the service and every call it
// serves (the daemon shuts the gRPC server down first).
class SessionServiceImpl final
    : public sessiond::v1::SessionService::CallbackService {
 public:
  SessionServiceImpl(const SessionServiceOptions& options,
                     const storage::SessionTable* table,
                     const storage::SessionStateMachine* state_machine,
                     ClusterClock* clock, ReadBarrier* reads, WritePath* writes,
                     TouchBuffer* touches);

  void set_ready(bool ready) { ready_.store(ready, std::memory_order_release); }

  // Shutdown, first half: every new call is refused with UNAVAILABLE
  // "shutting down" (the client retries, elsewhere in a cluster), while
  // writes already submitted run to their result.
  void BeginDrain();
  // Waits until no write is in flight, at most `timeout`. Returns whether
  // none is.
  bool WaitForWritesDrained(absl::Duration timeout) const;

  grpc::ServerUnaryReactor* CreateSession(
      grpc::CallbackServerContext* context,
      const sessiond::v1::CreateSessionRequest* request,
      sessiond::v1::CreateSessionResponse* response) override;
  grpc::ServerUnaryReactor* CreateSessions(
      grpc::CallbackServerContext* context,
      const sessiond::v1::CreateSessionsRequest* request,
      sessiond::v1::CreateSessionsResponse* response) override;
  grpc::ServerUnaryReactor* ValidateSession(
      grpc::CallbackServerContext* context,
      const sessiond::v1::ValidateSessionRequest* request,
      sessiond::v1::ValidateSessionResponse* response) override;
  grpc::ServerUnaryReactor* BatchValidateSessions(
      grpc::CallbackServerContext* context,
      const sessiond::v1::BatchValidateSessionsRequest* request,
      sessiond::v1::BatchValidateSessionsResponse* response) override;
  grpc::ServerBidiReactor<sessiond::v1::ValidateSessionRequest,
                          sessiond::v1::ValidateSessionResponse>*
  StreamValidateSessions(grpc::CallbackServerContext* context) override;
  grpc::ServerUnaryReactor* TouchSession(
      grpc::CallbackServerContext* context,
      const sessiond::v1::TouchSessionRequest* request,
      sessiond::v1::TouchSessionResponse* response) override;
  grpc::ServerUnaryReactor* UpdateSession(
      grpc::CallbackServerContext* context,
      const sessiond::v1::UpdateSessionRequest* request,
      sessiond::v1::UpdateSessionResponse* response) override;
  grpc::ServerUnaryReactor* RevokeSession(
      grpc::CallbackServerContext* context,
      const sessiond::v1::RevokeSessionRequest* request,
      sessiond::v1::RevokeSessionResponse* response) override;
  grpc::ServerUnaryReactor* ListUserSessions(
      grpc::CallbackServerContext* context,
      const sessiond::v1::ListUserSessionsRequest* request,
      sessiond::v1::ListUserSessionsResponse* response) override;
  grpc::ServerUnaryReactor* RevokeUserSessions(
      grpc::CallbackServerContext* context,
      const sessiond::v1::RevokeUserSessionsRequest* request,
      sessiond::v1::RevokeUserSessionsResponse* response) override;

  // The read path for one validation: waits for `level` (from the request,
  // or `level_override` when set), then answers into `response`; `done`
  // gets OK with an outcome, or the error to end the call with.
  void Validate(const sessiond::v1::ValidateSessionRequest& request,
                absl::Time deadline,
                sessiond::v1::ValidateSessionResponse* response,
                std::function<void(absl::Status)> done);

  // The server deadline of a call (WritePath::ServerDeadline).
  absl::Time DeadlineOf(const grpc::CallbackServerContext* context) const;

 private:
  // The table lookup of the read path, after the barrier.
  void ValidateNow(const sessiond::v1::ValidateSessionRequest& request,
                   int64_t now_ms, const ReadAnswer& answer,
                   sessiond::v1::ValidateSessionResponse* response);
  absl::Status CheckReady() const;
  // Counts a write in flight, or refuses it when draining.
  absl::Status EnterWrite();
  // The write path: submits `command`, then finishes the call with
  // `fill(applied value)` or the error (with the leader hint).
  grpc::ServerUnaryReactor* Write(
      grpc::CallbackServerContext* context,
      sessiond::v1::internal::Command command,
      std::function<absl::Status(const std::any&)> fill);

  const SessionServiceOptions options_;
  const storage::SessionTable* const table_;                 // outlives this
  const storage::SessionStateMachine* const state_machine_;  // outlives this
  ClusterClock* const clock_;                                // outlives this
  ReadBarrier* const reads_;                                 // outlives this
  WritePath* const writes_;                                  // outlives this
  TouchBuffer* const touches_;                               // outlives this
  std::atomic<bool> ready_{false};
  std::atomic<bool> draining_{false};
  std::atomic<int64_t> writes_inflight_{0};
};

// Finishes `reactor` with `status`; an UNAVAILABLE status carries the
// leader hint in trailing metadata ("sessiond-leader",
// "sessiond-leader-id").
void FinishWithHint(grpc::CallbackServerContext* context,
                    grpc::ServerUnaryReactor* reactor,
                    const absl::Status& status, const LeaderHint& hint);
// Adds the leader hint to a call's trailing metadata.
void AddLeaderHint(grpc::CallbackServerContext* context,
                   const LeaderHint& hint);

// ListUserSessions page tokens: the last session_id of a page, base64url
// encoded so clients treat it as opaque.
std::string EncodePageToken(absl::string_view after_session_id);
absl::StatusOr<std::string> DecodePageToken(absl::string_view page_token);

}  // namespace sessiond::server

#endif  // SESSIOND_SERVER_SESSION_SERVICE_H_
