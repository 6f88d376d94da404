// Copyright sessiond authors. Licensed under the Apache License 2.0.
//
// AdminService: Flush, BulkRevoke, RestoreFlush, ListFlushes. The state
// machine does the work (storage/revocations.h); here requests are checked
// and turned into commands.
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "server/admin_service.h"
#include "server/grpc_status.h"
#include "server/limits.h"
#include "storage/command_level.h"
#include "storage/revocations.h"
#include "storage/token.h"

namespace sessiond::server {

using sessiond::v1::BulkRevokePreview;
using sessiond::v1::Revocation;
using sessiond::v1::SessionSelector;
using sessiond::v1::internal::Command;
using sessiond::v1::internal::PendingBulkRevoke;

template <typename Response>
grpc::ServerUnaryReactor* AdminServiceImpl::RevokeInTwoSteps(
    grpc::CallbackServerContext* context, const SessionSelector& selector,
    const std::string& confirmation_token, const std::string& reason,
    Response* response) {
  if (absl::Status s = storage::CheckSelector(selector); !s.ok()) {
    return FinishNow(context, s);
  }
  if (absl::Status s = ValidateRevocation(selector, reason, options_.limits);
      !s.ok()) {
    return FinishNow(context, s);
  }
  Command command;
  if (confirmation_token.empty()) {
    // Step one. The count is this node's view now (a preview); the
    // revocation takes what is live when the confirmation applies.
    uint64_t users = 0;
    BulkRevokePreview* preview = response->mutable_preview();
    preview->set_sessions(state_machine_->CountSelected(
        selector, state_machine_->applied_time_ms(), &users));
    preview->set_users(users);
    PendingBulkRevoke* prepare =
        command.mutable_bulk_revoke()->mutable_prepare();
    prepare->set_confirmation_token(storage::GenerateSessionId());
    *prepare->mutable_selector() = selector;
    prepare->set_reason(reason);
    prepare->set_retention_ms(options_.revocation_retention_ms);
  } else {
    PendingBulkRevoke* confirm =
        command.mutable_bulk_revoke()->mutable_confirm();
    confirm->set_confirmation_token(confirmation_token);
    *confirm->mutable_selector() = selector;
  }
  return SubmitThenFinish(
      context, std::move(command), [response](const std::any& result) {
        if (const auto* pending = std::any_cast<PendingBulkRevoke>(&result)) {
          BulkRevokePreview* preview = response->mutable_preview();
          preview->set_confirmation_token(pending->confirmation_token());
          preview->set_expires_at_ms(pending->expires_at_ms());
          *preview->mutable_selector() = pending->selector();
          return absl::OkStatus();
        }
        if (const auto* done = std::any_cast<Revocation>(&result)) {
          *response->mutable_revocation() = *done;
          return absl::OkStatus();
        }
        return absl::InternalError(
            "a bulk revocation applied without its result");
      });
}

grpc::ServerUnaryReactor* AdminServiceImpl::Flush(
    grpc::CallbackServerContext* context,
    const sessiond::v1::FlushRequest* request,
    sessiond::v1::FlushResponse* response) {
  return Audited(
      context, "Flush", *request, [=, this]() -> grpc::ServerUnaryReactor* {
        SessionSelector everything;
        everything.mutable_all();
        return RevokeInTwoSteps(
            context, everything, request->confirmation_token(),
            request->reason().empty() ? "flushed" : request->reason(),
            response);
      });
}

grpc::ServerUnaryReactor* AdminServiceImpl::BulkRevoke(
    grpc::CallbackServerContext* context,
    const sessiond::v1::BulkRevokeRequest* request,
    sessiond::v1::BulkRevokeResponse* response) {
  return Audited(
      context, "BulkRevoke", *request,
      [=, this]() -> grpc::ServerUnaryReactor* {
        switch (request->selector().kind_case()) {
          case SessionSelector::kAll:
            return FinishNow(context,
                             absl::InvalidArgumentError(
                                 "selector.all: every session is a flush; call "
                                 "AdminService.Flush (sessionctl flush)"));
          case SessionSelector::kUser:
            return FinishNow(context,
                             absl::InvalidArgumentError(
                                 "selector.user: call "
                                 "SessionService.RevokeUserSessions, or "
                                 "use selector.users"));
          default:
            break;
        }
        return RevokeInTwoSteps(
            context, request->selector(), request->confirmation_token(),
            request->reason().empty() ? "bulk revocation" : request->reason(),
            response);
      });
}

grpc::ServerUnaryReactor* AdminServiceImpl::RestoreFlush(
    grpc::CallbackServerContext* context,
    const sessiond::v1::RestoreFlushRequest* request,
    sessiond::v1::RestoreFlushResponse* response) {
  return Audited(
      context, "RestoreFlush", *request,
      [=, this]() -> grpc::ServerUnaryReactor* {
        if (request->flush_id() == 0) {
          return FinishNow(
              context, absl::InvalidArgumentError(
                           "flush_id: must not be 0 (sessionctl flushes list "
                           "shows the ids)"));
        }
        Command command;
        command.mutable_restore_revocation()->set_revocation_id(
            request->flush_id());
        // Every replica must give back the same idle time: the newer rule
        // only once every member applies it.
        if (storage::EveryMemberApplies(
                state_machine_->cluster_state(), state_machine_->applied_conf(),
                storage::kRestoreGivesBackAppliedTimeLevel)) {
          command.mutable_restore_revocation()->set_give_back_to_applied_time(
              true);
          command.set_min_level(storage::kRestoreGivesBackAppliedTimeLevel);
        }
        return SubmitThenFinish(
            context, std::move(command), [response](const std::any& result) {
              if (const auto* done = std::any_cast<Revocation>(&result)) {
                *response->mutable_revocation() = *done;
              }
              return absl::OkStatus();
            });
      });
}

grpc::ServerUnaryReactor* AdminServiceImpl::ListFlushes(
    grpc::CallbackServerContext* context,
    const sessiond::v1::ListFlushesRequest* /*request*/,
    sessiond::v1::ListFlushesResponse* response) {
  // A restore or flush just acknowledged anywhere is listed.
  return AfterDefaultRead(context, [this, response] {
    for (Revocation& record : state_machine_->revocations()) {
      *response->add_revocations() = std::move(record);
    }
    return absl::OkStatus();
  });
}

}  // namespace sessiond::server
