// Copyright sessiond authors. Licensed under the Apache License 2.0.
//
// SessionStateMachine: the mass-expiry breaker's replicated state. The
// leader decides when to open it (server/expiry_breaker.h); here every
// replica records the same opening and freezes expiry at the same cluster
// time, so a validation answers alike on every node and after a leader
// change.
#include <algorithm>
#include <string>

#include "absl/strings/str_cat.h"
#include "storage/session_state_machine.h"

namespace sessiond::storage {

using replication::ApplyResult;
using sessiond::v1::ExpiryBreaker;
using sessiond::v1::internal::ClusterState;

ExpiryBreaker SessionStateMachine::expiry_breaker() const {
  absl::MutexLock lock(&mu_);
  return cluster_.expiry_breaker();
}

ApplyResult SessionStateMachine::ApplyExpiryBreaker(
    const v1::internal::ExpiryBreakerCommand& command, LogIndex index,
    int64_t now_ms, ClusterState* cluster) {
  ExpiryBreaker* breaker = cluster->mutable_expiry_breaker();
  switch (command.step_case()) {
    case v1::internal::ExpiryBreakerCommand::kOpen: {
      if (breaker->open()) {
        return absl::FailedPreconditionError(absl::StrCat(
            "the expiry breaker is already open (id ", breaker->id(), ")"));
      }
      const uint64_t times_opened = breaker->times_opened() + 1;
      *breaker = command.open();
      breaker->set_open(true);
      breaker->set_id(index.value());
      breaker->set_opened_at_ms(now_ms);
      // Never later than the applied time: a session the leader saw
      // about to expire must not have expired here first.
      const int64_t frozen = command.open().frozen_at_ms() > 0
                                 ? command.open().frozen_at_ms()
                                 : now_ms;
      breaker->set_frozen_at_ms(std::min(frozen, now_ms));
      breaker->set_times_opened(times_opened);
      breaker->clear_closed_by();
      breaker->clear_closed_at_ms();
      break;
    }
    case v1::internal::ExpiryBreakerCommand::kClose: {
      if (!breaker->open()) {
        return absl::FailedPreconditionError(
            "the expiry breaker is not open: nothing to resume");
      }
      if (command.close().id() != breaker->id()) {
        return absl::FailedPreconditionError(absl::StrCat(
            "breaker id ", command.close().id(), " is not the open breaker's (",
            breaker->id(),
            "): read it again with GetExpiryBreaker (sessionctl breaker "
            "status)"));
      }
      breaker->set_open(false);
      breaker->set_closed_by(command.close().closed_by().empty()
                                 ? std::string("resumed")
                                 : command.close().closed_by());
      breaker->set_closed_at_ms(now_ms);
      break;
    }
    default:
      return absl::InvalidArgumentError("expiry breaker command without step");
  }
  // Later entries of this Apply already judge expiry with it.
  expiry_frozen_at_ms_.store(
      breaker->open() ? breaker->frozen_at_ms() : kExpiryNotFrozen,
      std::memory_order_release);
  return std::any(*breaker);
}

}  // namespace sessiond::storage
