// Copyright sessiond authors. Licensed under the Apache License 2.0.
#include "server/admin_service.h"

#include <grpcpp/client_context.h>

#include <algorithm>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "server/audit_recorder.h"
#include "server/config.h"
#include "server/grpc_status.h"
#include "server/session_service.h"

namespace sessiond::server {

using sessiond::v1::MemberStatus;
using sessiond::v1::internal::Command;

namespace {

absl::Status NodeIdMissing() {
  return absl::InvalidArgumentError("node_id: must not be 0");
}

template <typename Response>
void FillConf(const replication::ConfState& conf, Response* response) {
  for (NodeId v : conf.voters) response->add_voters(v.value());
  for (NodeId l : conf.learners) response->add_learners(l.value());
}

bool Contains(const std::vector<NodeId>& ids, NodeId id) {
  return std::find(ids.begin(), ids.end(), id) != ids.end();
}

}  // namespace

AdminServiceImpl::AdminServiceImpl(
    const AdminServiceOptions& options, replication::NodeDriver* driver,
    const storage::SessionStateMachine* state_machine, PeerTransport* transport,
    WritePath* writes, DelayQueue* timers,
    std::function<MemberStatus(bool)> self_status, ReadBarrier* reads,
    BackupTaker* backups)
    : options_(options),
      driver_(driver),
      state_machine_(state_machine),
      transport_(transport),
      writes_(writes),
      timers_(timers),
      self_status_(std::move(self_status)),
      reads_(reads),
      backups_(backups) {}

grpc::ServerUnaryReactor* AdminServiceImpl::Audited(
    grpc::CallbackServerContext* context, absl::string_view method,
    const google::protobuf::Message& request,
    std::function<grpc::ServerUnaryReactor*()> body) {
  if (options_.audit == nullptr) return body();
  return options_.audit->Record(
      context,
      absl::StrCat("/", sessiond::v1::AdminService::service_full_name(), "/",
                   method),
      request, std::move(body));
}

grpc::ServerUnaryReactor* AdminServiceImpl::ListAudit(
    grpc::CallbackServerContext* context,
    const sessiond::v1::ListAuditRequest* request,
    sessiond::v1::ListAuditResponse* response) {
  // An admin call just acknowledged through another node is listed.
  return AfterDefaultRead(context, [this, request, response] {
    absl::StatusOr<sessiond::v1::ListAuditResponse> page =
        state_machine_->ListAudit(*request);
    if (!page.ok()) return page.status();
    *response = *std::move(page);
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* AdminServiceImpl::AfterDefaultRead(
    grpc::CallbackServerContext* context, std::function<absl::Status()> read) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  if (reads_ == nullptr) {
    reactor->Finish(ToGrpcStatus(read()));
    return reactor;
  }
  reads_->Wait(sessiond::v1::CONSISTENCY_DEFAULT, DeadlineOf(context),
               [reactor, read = std::move(read)](ReadAnswer answer) {
                 reactor->Finish(
                     ToGrpcStatus(answer.status.ok() ? read() : answer.status));
               });
  return reactor;
}

grpc::ServerUnaryReactor* AdminServiceImpl::ClusterStatus(
    grpc::CallbackServerContext* context,
    const sessiond::v1::ClusterStatusRequest* request,
    sessiond::v1::ClusterStatusResponse* response) {
  const replication::NodeStatus status = driver_->status();
  // Everyone this node knows of: the membership, the member table, and the
  // transport's address book.
  std::set<NodeId> ids(status.conf_state.voters.begin(),
                       status.conf_state.voters.end());
  ids.insert(status.conf_state.learners.begin(),
             status.conf_state.learners.end());
  std::map<NodeId, sessiond::v1::internal::Member> table;
  const sessiond::v1::internal::ClusterState cluster =
      state_machine_->cluster_state();
  for (const auto& m : cluster.members()) {
    table[NodeId(m.node_id())] = m;
    ids.insert(NodeId(m.node_id()));
  }
  const std::map<NodeId, std::string> addresses = transport_->addresses();
  for (const auto& [id, address] : addresses) ids.insert(id);
  ids.insert(options_.self);

  response->set_cluster_id(options_.cluster_id);
  response->set_answered_by(options_.self.value());
  response->set_leader(status.leader.value());
  response->set_term(status.term.value());
  response->set_expiry_leeway_ms(state_machine_->expiry_leeway_ms());
  *response->mutable_expiry_breaker() = state_machine_->expiry_breaker();

  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  AskMembers(ids, request->with_digests(),
             [this, reactor, response, status, table,
              ids](std::map<NodeId, MemberStatus> answers) {
               // The leader's commit index, to compute every member's lag.
               LogIndex leader_commit = status.commit;
               if (status.leader != NodeId(0)) {
                 auto it = answers.find(status.leader);
                 if (it != answers.end() && it->second.reachable()) {
                   leader_commit = LogIndex(it->second.commit_index());
                 }
               }
               const std::map<NodeId, std::string> peers =
                   transport_->addresses();
               for (NodeId id : ids) {
                 MemberStatus& m = answers[id];
                 m.set_node_id(id.value());
                 m.set_voter(Contains(status.conf_state.voters, id));
                 m.set_outside_membership(
                     !m.voter() && !Contains(status.conf_state.learners, id));
                 auto t = table.find(id);
                 if (t != table.end()) {
                   if (m.client_address().empty()) {
                     m.set_client_address(t->second.client_address());
                   }
                   if (m.peer_address().empty()) {
                     m.set_peer_address(t->second.peer_address());
                   }
                   m.set_started(t->second.started());
                 }
                 auto p = peers.find(id);
                 if (m.peer_address().empty() && p != peers.end()) {
                   m.set_peer_address(p->second);
                 }
                 if (!m.reachable()) {
                   m.set_role("unreachable");
                 } else if (leader_commit.value() > m.applied_index()) {
                   m.set_lag(leader_commit.value() - m.applied_index());
                 }
                 *response->add_members() = std::move(m);
               }
               reactor->Finish(grpc::Status::OK);
             });
  return reactor;
}

void AdminServiceImpl::AskMembers(
    const std::set<NodeId>& ids, bool with_digests,
    std::function<void(std::map<NodeId, MemberStatus>)> done) {
  // One slot per member, filled by its answer (or its failure); the last
  // one to arrive calls `done`.
  struct Gather {
    absl::Mutex mu;
    std::map<NodeId, MemberStatus> answers ABSL_GUARDED_BY(mu);
    int remaining ABSL_GUARDED_BY(mu) = 0;
  };
  auto gather = std::make_shared<Gather>();
  auto complete = [gather, done = std::move(done)] {
    std::map<NodeId, MemberStatus> answers;
    {
      absl::MutexLock lock(&gather->mu);
      answers.swap(gather->answers);
    }
    done(std::move(answers));
  };
  std::vector<NodeId> others;
  for (NodeId id : ids) {
    if (id != options_.self) others.push_back(id);
  }
  {
    absl::MutexLock lock(&gather->mu);
    gather->remaining = static_cast<int>(others.size()) + 1;
  }
  auto arrive = [gather, complete](NodeId id, MemberStatus answer) {
    bool last;
    {
      absl::MutexLock lock(&gather->mu);
      gather->answers[id] = std::move(answer);
      last = --gather->remaining == 0;
    }
    if (last) complete();
  };
  for (NodeId id : others) {
    std::shared_ptr<sessiond::v1::internal::RaftPeer::Stub> stub =
        transport_->Stub(id);
    if (stub == nullptr) {
      MemberStatus unknown;
      unknown.set_error("no peer address known");
      arrive(id, std::move(unknown));
      continue;
    }
    struct Rpc {
      grpc::ClientContext context;
      sessiond::v1::internal::NodeStatusRequest request;
      MemberStatus response;
    };
    auto rpc = std::make_shared<Rpc>();
    rpc->context.set_deadline(
        absl::ToChronoTime(absl::Now() + options_.member_timeout));
    rpc->request.set_cluster_id(options_.cluster_id);
    rpc->request.set_cluster_epoch(options_.cluster_epoch);
    rpc->request.set_from(options_.self.value());
    rpc->request.set_with_digest(with_digests);
    stub->async()->NodeStatus(
        &rpc->context, &rpc->request, &rpc->response,
        [rpc, stub, arrive, id](grpc::Status s) {
          if (s.ok() && rpc->response.node_id() != id.value()) {
            // Another node at this member's address (one added where a
            // removed member ran): its figures are not this row's.
            MemberStatus other;
            other.set_error(
                absl::StrCat("the node at this address answers as node ",
                             rpc->response.node_id(), ", not ", id.value()));
            arrive(id, std::move(other));
          } else if (s.ok()) {
            rpc->response.set_reachable(true);
            arrive(id, std::move(rpc->response));
          } else {
            MemberStatus failed;
            failed.set_error(s.error_message());
            arrive(id, std::move(failed));
          }
        });
  }
  MemberStatus self = self_status_(with_digests);
  self.set_reachable(true);
  arrive(options_.self, std::move(self));
}

template <typename Response>
void AdminServiceImpl::ChangeMembership(grpc::CallbackServerContext* context,
                                        grpc::ServerUnaryReactor* reactor,
                                        const replication::ConfChange& change,
                                        absl::Time deadline, Response* response,
                                        std::optional<Command> then) {
  writes_->SubmitConfChange(
      change, deadline,
      [this, context, reactor, response, deadline,
       then = std::move(then)](replication::ApplyResult result) {
        if (!result.ok()) {
          FinishWithHint(context, reactor, result.status(),
                         writes_->leader_hint());
          return;
        }
        auto finish = [this, reactor, response] {
          FillConf(state_machine_->applied_conf(), response);
          reactor->Finish(grpc::Status::OK);
        };
        if (!then) return finish();
        writes_->Submit(*then, deadline,
                        [finish](replication::ApplyResult) { finish(); });
      });
}

grpc::ServerUnaryReactor* AdminServiceImpl::AddMember(
    grpc::CallbackServerContext* context,
    const sessiond::v1::AddMemberRequest* request,
    sessiond::v1::AddMemberResponse* response) {
  return Audited(
      context, "AddMember", *request, [=, this]() -> grpc::ServerUnaryReactor* {
        if (request->node_id() == 0) return FinishNow(context, NodeIdMissing());
        // The same form as --initial_cluster's entries.
        absl::StatusOr<std::map<uint64_t, std::string>> parsed =
            ParseInitialCluster(
                absl::StrCat(request->node_id(), "=", request->peer_address()));
        if (!parsed.ok()) {
          return FinishNow(context,
                           absl::InvalidArgumentError(absl::StrCat(
                               "peer_address: ", parsed.status().message())));
        }
        // Optional; when given, clients and ClusterStatus dial it until the
        // node announces its own.
        if (!request->client_address().empty()) {
          absl::StatusOr<std::map<uint64_t, std::string>> client =
              ParseInitialCluster(absl::StrCat(request->node_id(), "=",
                                               request->client_address()));
          if (!client.ok()) {
            return FinishNow(
                context, absl::InvalidArgumentError(absl::StrCat(
                             "client_address: ", client.status().message())));
          }
        }
        // After the forms: a malformed address is named as such.
        if (options_.plaintext_loopback_only) {
          for (const auto& [field, address] :
               {std::pair<const char*, const std::string*>{
                    "peer_address", &request->peer_address()},
                {"client_address", &request->client_address()}}) {
            if (!address->empty() && !IsLoopbackListen(*address)) {
              return FinishNow(
                  context,
                  absl::InvalidArgumentError(absl::StrCat(
                      field, ": ", *address,
                      " is not a loopback address and TLS is off: the "
                      "members would dial it in plaintext. Configure TLS on "
                      "every member, or, on a network you trust, run them "
                      "with --insecure_plaintext_non_loopback=1")));
            }
          }
        }
        const replication::ConfState conf = state_machine_->applied_conf();
        const NodeId id(request->node_id());
        if (Contains(conf.voters, id) || Contains(conf.learners, id)) {
          return FinishNow(context,
                           absl::AlreadyExistsError(absl::StrCat(
                               "node ", id.value(), " is already a member")));
        }
        // Its addresses first, so every member can reach it by the time it
        // joins the membership.
        sessiond::v1::internal::Command command;
        auto* member = command.mutable_member();
        member->set_kind(sessiond::v1::internal::MemberCommand::ADD);
        member->set_node_id(request->node_id());
        member->set_peer_address(request->peer_address());
        member->set_client_address(request->client_address());
        grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
        const absl::Time deadline = DeadlineOf(context);
        writes_->Submit(std::move(command), deadline,
                        [this, context, reactor, response, id,
                         deadline](replication::ApplyResult result) {
                          if (!result.ok()) {
                            FinishWithHint(context, reactor, result.status(),
                                           writes_->leader_hint());
                            return;
                          }
                          ChangeMembership(
                              context, reactor,
                              replication::ConfChange{
                                  replication::ConfChangeType::kAddLearner, id},
                              deadline, response);
                        });
        return reactor;
      });
}

grpc::ServerUnaryReactor* AdminServiceImpl::PromoteMember(
    grpc::CallbackServerContext* context,
    const sessiond::v1::PromoteMemberRequest* request,
    sessiond::v1::PromoteMemberResponse* response) {
  return Audited(
      context, "PromoteMember", *request,
      [=, this]() -> grpc::ServerUnaryReactor* {
        if (request->node_id() == 0) return FinishNow(context, NodeIdMissing());
        grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
        ChangeMembership(
            context, reactor,
            replication::ConfChange{replication::ConfChangeType::kPromoteVoter,
                                    NodeId(request->node_id())},
            DeadlineOf(context), response);
        return reactor;
      });
}

grpc::ServerUnaryReactor* AdminServiceImpl::RemoveMember(
    grpc::CallbackServerContext* context,
    const sessiond::v1::RemoveMemberRequest* request,
    sessiond::v1::RemoveMemberResponse* response) {
  return Audited(
      context, "RemoveMember", *request,
      [=, this]() -> grpc::ServerUnaryReactor* {
        if (request->node_id() == 0) return FinishNow(context, NodeIdMissing());
        // Applying the change also forgets the member's addresses and lists
        // it as removed (SessionStateMachine), so nothing follows it.
        grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
        ChangeMembership(
            context, reactor,
            replication::ConfChange{replication::ConfChangeType::kRemoveNode,
                                    NodeId(request->node_id())},
            DeadlineOf(context), response, std::nullopt);
        return reactor;
      });
}

grpc::ServerUnaryReactor* AdminServiceImpl::SetExpiryLeeway(
    grpc::CallbackServerContext* context,
    const sessiond::v1::SetExpiryLeewayRequest* request,
    sessiond::v1::SetExpiryLeewayResponse* response) {
  return Audited(
      context, "SetExpiryLeeway", *request,
      [=, this]() -> grpc::ServerUnaryReactor* {
        const int64_t leeway = request->expiry_leeway_ms();
        if (leeway < 0 || leeway > kMaxExpiryLeewayMs) {
          return FinishNow(context,
                           absl::InvalidArgumentError(absl::StrCat(
                               "expiry_leeway_ms: ", leeway, " is outside 0..",
                               kMaxExpiryLeewayMs, " (one day)")));
        }
        Command command;
        command.mutable_settings()->set_expiry_leeway_ms(leeway);
        return SubmitThenFinish(context, std::move(command),
                                [this, response](const std::any&) {
                                  response->set_expiry_leeway_ms(
                                      state_machine_->expiry_leeway_ms());
                                  return absl::OkStatus();
                                });
      });
}

grpc::ServerUnaryReactor* AdminServiceImpl::SubmitThenFinish(
    grpc::CallbackServerContext* context, Command command,
    std::function<absl::Status(const std::any&)> answer) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  SubmitThenFinish(context, reactor, std::move(command), std::move(answer));
  return reactor;
}

void AdminServiceImpl::SubmitThenFinish(
    grpc::CallbackServerContext* context, grpc::ServerUnaryReactor* reactor,
    Command command, std::function<absl::Status(const std::any&)> answer) {
  writes_->Submit(std::move(command), DeadlineOf(context),
                  [this, context, reactor, answer = std::move(answer)](
                      replication::ApplyResult result) {
                    if (!result.ok()) {
                      FinishWithHint(context, reactor, result.status(),
                                     writes_->leader_hint());
                      return;
                    }
                    reactor->Finish(ToGrpcStatus(answer(*result)));
                  });
}

grpc::ServerUnaryReactor* AdminServiceImpl::Backup(
    grpc::CallbackServerContext* context,
    const sessiond::v1::BackupRequest* request,
    sessiond::v1::BackupResponse* response) {
  return Audited(
      context, "Backup", *request, [=, this]() -> grpc::ServerUnaryReactor* {
        if (reads_ == nullptr || backups_ == nullptr) {
          return FinishNow(context, absl::UnimplementedError(
                                        "this node was built without backups"));
        }
        const std::string dir = request->dir();
        if (request->node_id() != 0 &&
            request->node_id() != backups_->self().value()) {
          return FinishNow(
              context,
              absl::FailedPreconditionError(absl::StrCat(
                  "this is node ", backups_->self().value(), ", not node ",
                  request->node_id(),
                  ": nothing was written (`sessionctl members list` shows "
                  "which address serves which node)")));
        }
        // A bad dir is refused at once, not after the read barrier (which
        // a node without a quorum answers UNAVAILABLE only at the deadline).
        if (absl::Status s = backups_->CheckDir(dir); !s.ok()) {
          return FinishNow(context, s);
        }
        grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
        // Every write acknowledged before the call is applied here first, so it
        // is in the backup whichever node takes it.
        reads_->Wait(
            sessiond::v1::LINEARIZABLE, DeadlineOf(context),
            [this, reactor, response, dir](ReadAnswer answer) {
              if (!answer.status.ok()) {
                reactor->Finish(ToGrpcStatus(answer.status));
                return;
              }
              const absl::Status started = backups_->Start(
                  dir,
                  [reactor, response, dir](absl::StatusOr<BackupManifest> m) {
                    if (!m.ok()) {
                      reactor->Finish(ToGrpcStatus(m.status()));
                      return;
                    }
                    response->set_format_version(m->format_version);
                    response->set_cluster_id(m->cluster_id);
                    response->set_node_id(m->node_id);
                    response->set_applied_index(m->applied_index);
                    response->set_applied_term(m->applied_term);
                    response->set_session_count(m->session_count);
                    response->set_sessiond_version(m->sessiond_version);
                    response->set_created_at_ms(m->created_at_ms);
                    response->set_file_count(m->file_count);
                    response->set_total_bytes(m->total_bytes);
                    response->set_sha256(m->sha256);
                    response->set_dir(dir);
                    reactor->Finish(grpc::Status::OK);
                  });
              if (!started.ok()) reactor->Finish(ToGrpcStatus(started));
            });
        return reactor;
      });
}

namespace {
// Longer than the election timeout after which a leader gives a transfer
// up (27 ticks of 10 ms by default), so one it still tries is rarely
// started twice (and if it is, the core takes the second in its place).
constexpr absl::Duration kTransferRetry = absl::Seconds(2);
}  // namespace

grpc::ServerUnaryReactor* AdminServiceImpl::TransferLeadership(
    grpc::CallbackServerContext* context,
    const sessiond::v1::TransferLeadershipRequest* request,
    sessiond::v1::TransferLeadershipResponse* response) {
  return Audited(
      context, "TransferLeadership", *request,
      [=, this]() -> grpc::ServerUnaryReactor* {
        grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
        const NodeId target(request->node_id());
        const NodeId old_leader = driver_->status().leader;
        const absl::Time deadline = DeadlineOf(context);
        writes_->SubmitTransfer(
            target, deadline,
            [this, context, reactor, response, target, old_leader,
             deadline](replication::ApplyResult result) {
              if (!result.ok()) {
                FinishWithHint(context, reactor, result.status(),
                               writes_->leader_hint());
                return;
              }
              // The leader that started the transfer is the one
              // to move away from (this node may have known
              // another, or none, when the call came).
              const auto* from = std::any_cast<uint64_t>(&*result);
              AwaitLeader(context, reactor, response, target,
                          from != nullptr ? NodeId(*from) : old_leader,
                          deadline, absl::Now() + kTransferRetry,
                          std::make_shared<TransferRetry>());
            });
        return reactor;
      });
}

void AdminServiceImpl::AwaitLeader(
    grpc::CallbackServerContext* context, grpc::ServerUnaryReactor* reactor,
    sessiond::v1::TransferLeadershipResponse* response, NodeId target,
    NodeId old_leader, absl::Time deadline, absl::Time retry_at,
    std::shared_ptr<TransferRetry> retry) {
  const replication::NodeStatus status = driver_->status();
  const bool done = target != NodeId(0) ? status.leader == target
                                        : status.leader != NodeId(0) &&
                                              status.leader != old_leader;
  if (done) {
    response->set_leader(status.leader.value());
    response->set_term(status.term.value());
    reactor->Finish(grpc::Status::OK);
    return;
  }
  absl::Status refusal;
  {
    absl::MutexLock lock(&retry->mu);
    refusal = retry->refusal;
  }
  if (absl::IsFailedPrecondition(refusal) || absl::IsInvalidArgument(refusal)) {
    reactor->Finish(ToGrpcStatus(refusal));
    return;
  }
  if (absl::Now() >= deadline) {
    reactor->Finish(ToGrpcStatus(absl::DeadlineExceededError(absl::StrCat(
        "leadership did not move in time; the leader is now ",
        status.leader.value(),
        refusal.ok()
            ? ""
            : absl::StrCat(" (the last try: ", refusal.message(), ")")))));
    return;
  }
  if (status.leader == old_leader && absl::Now() >= retry_at) {
    // Only a refusal counts: whether leadership moved, this poll decides.
    writes_->SubmitTransfer(target, deadline,
                            [retry](replication::ApplyResult result) {
                              absl::MutexLock lock(&retry->mu);
                              retry->refusal = result.status();
                            });
    retry_at = absl::Now() + kTransferRetry;
  }
  timers_->After(absl::Milliseconds(20), [=, this] {
    AwaitLeader(context, reactor, response, target, old_leader, deadline,
                retry_at, retry);
  });
}

}  // namespace sessiond::server
