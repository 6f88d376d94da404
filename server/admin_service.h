// Copyright sessiond authors. Licensed under the Apache License 2.0.
#ifndef SESSIOND_SERVER_ADMIN_SERVICE_H_
#define SESSIOND_SERVER_ADMIN_SERVICE_H_

#include <any>
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <set>

#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "replication/node_driver.h"
#include "server/backup.h"
#include "server/delay_queue.h"
#include "server/limits.h"
#include "server/peer_transport.h"
#include "server/read_barrier.h"
#include "server/unary_call.h"
#include "server/write_path.h"
#include "sessiond/v1/admin.grpc.pb.h"
#include "storage/session_state_machine.h"

namespace sessiond::server {

class AuditRecorder;
class JwtIssuer;

struct AdminServiceOptions {
  uint64_t cluster_id = 0;
  // TLS is off and --insecure_plaintext_non_loopback is not given: AddMember
  // refuses addresses off loopback, as the config refuses them in
  // --initial_cluster (the leader would dial them in plaintext).
  bool plaintext_loopback_only = false;
  // Identity.cluster_epoch: members of another life of the cluster are
  // listed with the error their NodeStatus answers, not their figures.
  uint64_t cluster_epoch = 0;
  NodeId self;
  // How long ClusterStatus waits for each member.
  absl::Duration member_timeout = absl::Seconds(2);
  // How long a call without a client deadline may wait.
  absl::Duration request_timeout = absl::Seconds(10);
  // How long a flush or bulk revocation stays undoable.
  int64_t revocation_retention_ms = 24ll * 3600 * 1000;
  // The size limits a flush's or bulk revocation's reason and selector
  // are held to (ValidateRevocation), as the session API's are.
  Limits limits;
  // The expiry breaker (GetExpiryBreaker, ResumeExpiry): this node's
  // cluster time, and how many sessions an open breaker holds back at it.
  // Without them those calls answer UNIMPLEMENTED.
  std::function<int64_t()> cluster_now_ms;
  std::function<uint64_t(int64_t now_ms)> held_sessions;
  // Makes StageKey's key pairs (server/jwt_issuer.h); null: StageKey
  // answers FAILED_PRECONDITION. Must outlive the service.
  JwtIssuer* jwt_issuer = nullptr;
  // Records the calls that change something, or ask to (docs/OPERATIONS.md,
  // "Audit"); null: none are. Must outlive the service.
  AuditRecorder* audit = nullptr;
};

// sessiond.v1.AdminService (proto/sessiond/v1/admin.proto): cluster status
// from every member (asked over the peer channel, in parallel), membership
// changes and leadership transfer through the WritePath (so any node
// accepts them; they run on the leader).
//
// Thread-safe. Every pointer must outlive the service and its calls.
class AdminServiceImpl final
    : public sessiond::v1::AdminService::CallbackService {
 public:
  AdminServiceImpl(
      const AdminServiceOptions& options, replication::NodeDriver* driver,
      const storage::SessionStateMachine* state_machine,
      PeerTransport* transport, WritePath* writes, DelayQueue* timers,
      std::function<sessiond::v1::MemberStatus(bool with_digest)> self_status,
      ReadBarrier* reads = nullptr, BackupTaker* backups = nullptr);

  grpc::ServerUnaryReactor* ClusterStatus(
      grpc::CallbackServerContext* context,
      const sessiond::v1::ClusterStatusRequest* request,
      sessiond::v1::ClusterStatusResponse* response) override;
  grpc::ServerUnaryReactor* AddMember(
      grpc::CallbackServerContext* context,
      const sessiond::v1::AddMemberRequest* request,
      sessiond::v1::AddMemberResponse* response) override;
  grpc::ServerUnaryReactor* PromoteMember(
      grpc::CallbackServerContext* context,
      const sessiond::v1::PromoteMemberRequest* request,
      sessiond::v1::PromoteMemberResponse* response) override;
  grpc::ServerUnaryReactor* RemoveMember(
      grpc::CallbackServerContext* context,
      const sessiond::v1::RemoveMemberRequest* request,
      sessiond::v1::RemoveMemberResponse* response) override;
  grpc::ServerUnaryReactor* TransferLeadership(
      grpc::CallbackServerContext* context,
      const sessiond::v1::TransferLeadershipRequest* request,
      sessiond::v1::TransferLeadershipResponse* response) override;
  grpc::ServerUnaryReactor* SetExpiryLeeway(
      grpc::CallbackServerContext* context,
      const sessiond::v1::SetExpiryLeewayRequest* request,
      sessiond::v1::SetExpiryLeewayResponse* response) override;
  grpc::ServerUnaryReactor* Backup(
      grpc::CallbackServerContext* context,
      const sessiond::v1::BackupRequest* request,
      sessiond::v1::BackupResponse* response) override;
  // Flushes and bulk revocations: admin_service_revocations.cc.
  grpc::ServerUnaryReactor* Flush(
      grpc::CallbackServerContext* context,
      const sessiond::v1::FlushRequest* request,
      sessiond::v1::FlushResponse* response) override;
  grpc::ServerUnaryReactor* BulkRevoke(
      grpc::CallbackServerContext* context,
      const sessiond::v1::BulkRevokeRequest* request,
      sessiond::v1::BulkRevokeResponse* response) override;
  grpc::ServerUnaryReactor* RestoreFlush(
      grpc::CallbackServerContext* context,
      const sessiond::v1::RestoreFlushRequest* request,
      sessiond::v1::RestoreFlushResponse* response) override;
  grpc::ServerUnaryReactor* ListFlushes(
      grpc::CallbackServerContext* context,
      const sessiond::v1::ListFlushesRequest* request,
      sessiond::v1::ListFlushesResponse* response) override;
  // The expiry breaker: admin_service_breaker.cc.
  grpc::ServerUnaryReactor* GetExpiryBreaker(
      grpc::CallbackServerContext* context,
      const sessiond::v1::GetExpiryBreakerRequest* request,
      sessiond::v1::GetExpiryBreakerResponse* response) override;
  grpc::ServerUnaryReactor* ResumeExpiry(
      grpc::CallbackServerContext* context,
      const sessiond::v1::ResumeExpiryRequest* request,
      sessiond::v1::ResumeExpiryResponse* response) override;
  // The signing key ring: admin_service_keys.cc.
  grpc::ServerUnaryReactor* ListKeys(
      grpc::CallbackServerContext* context,
      const sessiond::v1::ListKeysRequest* request,
      sessiond::v1::ListKeysResponse* response) override;
  grpc::ServerUnaryReactor* StageKey(
      grpc::CallbackServerContext* context,
      const sessiond::v1::StageKeyRequest* request,
      sessiond::v1::StageKeyResponse* response) override;
  grpc::ServerUnaryReactor* ActivateKey(
      grpc::CallbackServerContext* context,
      const sessiond::v1::ActivateKeyRequest* request,
      sessiond::v1::ActivateKeyResponse* response) override;
  grpc::ServerUnaryReactor* RetireKey(
      grpc::CallbackServerContext* context,
      const sessiond::v1::RetireKeyRequest* request,
      sessiond::v1::RetireKeyResponse* response) override;
  grpc::ServerUnaryReactor* GetJwks(
      grpc::CallbackServerContext* context,
      const sessiond::v1::GetJwksRequest* request,
      sessiond::v1::GetJwksResponse* response) override;
  // The audit log, from this node's applied state.
  grpc::ServerUnaryReactor* ListAudit(
      grpc::CallbackServerContext* context,
      const sessiond::v1::ListAuditRequest* request,
      sessiond::v1::ListAuditResponse* response) override;

  // The most SetExpiryLeeway accepts (the flag's limit too).
  static constexpr int64_t kMaxExpiryLeewayMs = 24ll * 3600 * 1000;

 private:
  absl::Time DeadlineOf(const grpc::CallbackServerContext* context) const {
    return CallDeadline(context, options_.request_timeout);
  }
  // Runs `body`, the handler of AdminService.`method`, audited
  // (AuditRecorder::Record: later, once its requested entry is written, so
  // `body` captures by value) when the service has a recorder. Which
  // methods are audited: docs/OPERATIONS.md, "Audit".
  grpc::ServerUnaryReactor* Audited(
      grpc::CallbackServerContext* context, absl::string_view method,
      const google::protobuf::Message& request,
      std::function<grpc::ServerUnaryReactor*()> body);
  // Runs `read` on a reactor it returns once a CONSISTENCY_DEFAULT read
  // point is reached: what the leader has applied when it answers in time
  // (a change just acknowledged through another node is seen), else this
  // node's own view. `read` returns the call's status.
  grpc::ServerUnaryReactor* AfterDefaultRead(
      grpc::CallbackServerContext* context, std::function<absl::Status()> read);
  // Proposes `change` and, once applied, submits `then` (if any; best
  // effort, its result is ignored) and finishes `reactor` with the
  // membership.
  template <typename Response>
  void ChangeMembership(
      grpc::CallbackServerContext* context, grpc::ServerUnaryReactor* reactor,
      const replication::ConfChange& change, absl::Time deadline,
      Response* response,
      std::optional<sessiond::v1::internal::Command> then = std::nullopt);
  // Replicates `command`; once applied, `answer` fills the response from
  // the result and its status finishes the call (a failure finishes it
  // with the leader hint).
  grpc::ServerUnaryReactor* SubmitThenFinish(
      grpc::CallbackServerContext* context,
      sessiond::v1::internal::Command command,
      std::function<absl::Status(const std::any&)> answer);
  // The same for a reactor already made (a call that asked something
  // first).
  void SubmitThenFinish(grpc::CallbackServerContext* context,
                        grpc::ServerUnaryReactor* reactor,
                        sessiond::v1::internal::Command command,
                        std::function<absl::Status(const std::any&)> answer);
  // Either step of a flush or bulk revocation (Flush, BulkRevoke): a
  // preview and its token, or the revocation once confirmed.
  // Response: FlushResponse or BulkRevokeResponse.
  template <typename Response>
  grpc::ServerUnaryReactor* RevokeInTwoSteps(
      grpc::CallbackServerContext* context,
      const sessiond::v1::SessionSelector& selector,
      const std::string& confirmation_token, const std::string& reason,
      Response* response);
  // Asks every member of `ids` for its MemberStatus (this node answers
  // itself), in parallel, each within member_timeout; calls `done` once all
  // answered or failed (a failed one: reachable false, error set).
  void AskMembers(
      const std::set<NodeId>& ids, bool with_digests,
      std::function<void(std::map<NodeId, sessiond::v1::MemberStatus>)> done);
  // One key as operators see it, with its live sessions counted now.
  sessiond::v1::SigningKeyInfo KeyInfo(
      const sessiond::v1::internal::SigningKey& key) const;
  // Polls until `target` leads (0: anyone but `old_leader`) or the deadline.
  // While `old_leader` still leads at `retry_at`, the transfer is started
  // again: the leader gives one up after an election timeout (its target
  // did not take over in time: a busy machine, a target paused or just
  // restarted), and the caller's deadline is usually far longer.
  // The answer of a transfer's latest retry: one the leader refused (the
  // target stopped acknowledging, fell behind, left) ends the call with
  // that refusal rather than waiting out the deadline.
  struct TransferRetry {
    absl::Mutex mu;
    absl::Status refusal ABSL_GUARDED_BY(mu);
  };
  void AwaitLeader(grpc::CallbackServerContext* context,
                   grpc::ServerUnaryReactor* reactor,
                   sessiond::v1::TransferLeadershipResponse* response,
                   NodeId target, NodeId old_leader, absl::Time deadline,
                   absl::Time retry_at, std::shared_ptr<TransferRetry> retry);

  const AdminServiceOptions options_;
  replication::NodeDriver* const driver_;                    // outlives this
  const storage::SessionStateMachine* const state_machine_;  // outlives this
  PeerTransport* const transport_;                           // outlives this
  WritePath* const writes_;                                  // outlives this
  DelayQueue* const timers_;                                 // outlives this
  const std::function<sessiond::v1::MemberStatus(bool)> self_status_;
  ReadBarrier* const reads_;    // outlives this; null: no Backup
  BackupTaker* const backups_;  // outlives this; null: no Backup
};

}  // namespace sessiond::server

#endif  // SESSIOND_SERVER_ADMIN_SERVICE_H_
