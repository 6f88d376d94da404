// Copyright sessiond authors. Licensed under the Apache License 2.0.
#ifndef SESSIOND_SERVER_SESSION_SERVICE_H_
#define SESSIOND_SERVER_SESSION_SERVICE_H_

#include <atomic>
#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "replication/node_driver.h"
#include "server/limits.h"
#include "server/touch_buffer.h"
#include "sessiond/v1/session.grpc.pb.h"
#include "storage/session_table.h"

namespace sessiond::server {

struct SessionServiceOptions {
  Limits limits;
  int64_t expiry_leeway_ms = 0;
  // Most requests in one BatchValidateSessions call.
  size_t max_batch_validate = 10000;
};

// sessiond.v1.SessionService on gRPC's callback API.
//
// Reads (Validate, BatchValidate, StreamValidate, ListUserSessions) run on
// the gRPC thread against the SessionTable under its shard locks, answered
// at once. Writes are validated, turned into a
// sessiond.v1.internal.Command stamped with this (the leader's) clock, and
// proposed to the NodeDriver; the handler returns its reactor and the apply
// thread Finishes it with the applied result.
//
// Until set_ready(true) (the node is leader and has applied its log) reads
// answer UNAVAILABLE: an answer from a table still being replayed could say
// UNKNOWN for a session that exists, and UNAVAILABLE must never look like
// "logged out".
//
// Thread-safe. `table`, `driver` and `touches` must outlive the service and
// every call it serves (the daemon shuts the gRPC server down first).
class SessionServiceImpl final
    : public sessiond::v1::SessionService::CallbackService {
 public:
  SessionServiceImpl(const SessionServiceOptions& options,
                     const storage::SessionTable* table,
                     replication::NodeDriver* driver, TouchBuffer* touches);

  void set_ready(bool ready) { ready_.store(ready, std::memory_order_release); }

  // Shutdown, first half: every new call is refused with UNAVAILABLE
  // "shutting down" (the client retries, elsewhere in a cluster), while
  // writes already proposed run to their applied result.
  void BeginDrain();
  // Waits until no write is in flight, at most `timeout`. Returns whether
  // none is. (gRPC's own Server::Shutdown(deadline) also waits for idle
  // client connections to go away, which a client may take seconds to
  // notice; draining here first lets the daemon shut the server down with a
  // short deadline without cutting off a write.)
  bool WaitForWritesDrained(absl::Duration timeout) const;

  grpc::ServerUnaryReactor* CreateSession(
      grpc::CallbackServerContext* context,
      const sessiond::v1::CreateSessionRequest* request,
      sessiond::v1::CreateSessionResponse* response) override;
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

  // Answers one validation into `response` (shared by the unary, batch and
  // stream paths). UNAVAILABLE before ready; otherwise OK with an outcome.
  absl::Status ValidateOne(const sessiond::v1::ValidateSessionRequest& request,
                           int64_t now_ms,
                           sessiond::v1::ValidateSessionResponse* response);

 private:
  absl::Status CheckReady() const;
  // Counts a write in flight, or refuses it when draining.
  absl::Status EnterWrite();

  const SessionServiceOptions options_;
  const storage::SessionTable* const table_;  // outlives this
  replication::NodeDriver* const driver_;     // outlives this
  TouchBuffer* const touches_;                // outlives this
  std::atomic<bool> ready_{false};
  std::atomic<bool> draining_{false};
  std::atomic<int64_t> writes_inflight_{0};
};

// ListUserSessions page tokens: the last session_id of a page, base64url
// encoded so clients treat it as opaque.
std::string EncodePageToken(absl::string_view after_session_id);
absl::StatusOr<std::string> DecodePageToken(absl::string_view page_token);

}  // namespace sessiond::server

#endif  // SESSIOND_SERVER_SESSION_SERVICE_H_
