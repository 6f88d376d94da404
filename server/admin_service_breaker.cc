// Copyright sessiond authors. Licensed under the Apache License 2.0.
//
// AdminService: GetExpiryBreaker, ResumeExpiry. The leader's sweeper opens
// the breaker (server/expiry_sweeper.h); an operator closes it here, after
// seeing how many sessions will then expire.
#include <any>
#include <utility>

#include "absl/strings/str_cat.h"
#include "server/admin_service.h"
#include "server/unary_call.h"

namespace sessiond::server {

using sessiond::v1::ExpiryBreaker;
using sessiond::v1::internal::Command;

grpc::ServerUnaryReactor* AdminServiceImpl::GetExpiryBreaker(
    grpc::CallbackServerContext* context,
    const sessiond::v1::GetExpiryBreakerRequest* /*request*/,
    sessiond::v1::GetExpiryBreakerResponse* response) {
  if (!options_.cluster_now_ms || !options_.held_sessions) {
    return FinishNow(context, absl::UnimplementedError(
                                  "this node was built without the expiry "
                                  "breaker's counters"));
  }
  const int64_t now_ms = options_.cluster_now_ms();
  *response->mutable_breaker() = state_machine_->expiry_breaker();
  response->set_cluster_time_ms(now_ms);
  if (response->breaker().open()) {
    response->set_held_sessions(options_.held_sessions(now_ms));
  }
  return FinishNow(context, absl::OkStatus());
}

grpc::ServerUnaryReactor* AdminServiceImpl::ResumeExpiry(
    grpc::CallbackServerContext* context,
    const sessiond::v1::ResumeExpiryRequest* request,
    sessiond::v1::ResumeExpiryResponse* response) {
  return Audited(
      context, "ResumeExpiry", *request,
      [=, this]() -> grpc::ServerUnaryReactor* {
        if (!options_.cluster_now_ms || !options_.held_sessions) {
          return FinishNow(
              context,
              absl::UnimplementedError("this node was built without the expiry "
                                       "breaker's counters"));
        }
        const ExpiryBreaker breaker = state_machine_->expiry_breaker();
        if (!breaker.open()) {
          return FinishNow(
              context,
              absl::FailedPreconditionError(
                  "the expiry breaker is not open: nothing to resume "
                  "(sessionctl breaker status shows its last opening)"));
        }
        const uint64_t held = options_.held_sessions(options_.cluster_now_ms());
        const std::string how =
            absl::StrCat("call again with breaker_id ", breaker.id(),
                         " and confirm_sessions ", held,
                         " (sessionctl breaker resume asks for them)");
        if (request->breaker_id() != breaker.id()) {
          return FinishNow(
              context,
              absl::FailedPreconditionError(absl::StrCat(
                  request->breaker_id() == 0
                      ? std::string("resuming expiry needs a confirmation")
                      : absl::StrCat("breaker_id ", request->breaker_id(),
                                     " is not the open breaker's (",
                                     breaker.id(), ")"),
                  ": ", held,
                  " sessions held back will expire when sweeping resumes; ",
                  how)));
        }
        if (request->confirm_sessions() < held) {
          return FinishNow(
              context, absl::FailedPreconditionError(absl::StrCat(
                           held, " sessions would expire now, more than the ",
                           request->confirm_sessions(), " confirmed; ", how)));
        }
        Command command;
        auto* close = command.mutable_expiry_breaker()->mutable_close();
        close->set_id(breaker.id());
        close->set_closed_by("resumed");
        return SubmitThenFinish(
            context, std::move(command),
            [response, held](const std::any& result) {
              if (const auto* after = std::any_cast<ExpiryBreaker>(&result)) {
                *response->mutable_breaker() = *after;
              }
              response->set_released_sessions(held);
              return absl::OkStatus();
            });
      });
}

}  // namespace sessiond::server
