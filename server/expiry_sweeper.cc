// Copyright sessiond authors. Licensed under the Apache License 2.0.
#include "server/expiry_sweeper.h"

#include <any>
#include <cstdio>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "common/log.h"
#include "sessiond/v1/command.pb.h"

namespace sessiond::server {

ExpirySweeper::ExpirySweeper(const ExpirySweeperOptions& options,
                             const storage::SessionTable* table,
                             const storage::SessionStateMachine* state_machine,
                             ClusterClock* clock,
                             replication::NodeDriver* driver, WritePath* writes)
    : options_(options),
      table_(table),
      state_machine_(state_machine),
      clock_(clock),
      driver_(driver),
      writes_(writes),
      task_("sd-sweeper", options.interval, [this] { SweepOnce(); }) {}

ExpirySweeper::~ExpirySweeper() { Stop(); }

void ExpirySweeper::Stop() { task_.Stop(); }

std::optional<replication::ApplyResult> ExpirySweeper::SubmitAndWait(
    sessiond::v1::internal::Command command) {
  struct Outcome {
    absl::Notification done;
    replication::ApplyResult result;
  };
  auto outcome = std::make_shared<Outcome>();
  writes_->Submit(std::move(command), absl::Now() + options_.apply_timeout,
                  [outcome](replication::ApplyResult result) {
                    outcome->result = std::move(result);
                    outcome->done.Notify();
                  });
  if (!outcome->done.WaitForNotificationWithTimeout(options_.apply_timeout)) {
    logging::Warn(
        "sweeper.not_applied",
        logging::Fields().Add(
            "timeout_ms", absl::ToInt64Milliseconds(options_.apply_timeout)));
    return std::nullopt;
  }
  if (!outcome->result.ok()) {
    logging::Warn("sweeper.command_failed",
                  logging::Fields().Error(outcome->result.status()));
    return std::nullopt;
  }
  return std::move(outcome->result);
}

uint64_t ExpirySweeper::SweepOnce() {
  // Only the leader sweeps: one sweep per cluster, stamped with cluster
  // time (replicas never expire on their own clock).
  if (driver_->status().role != replication::Role::kLeader) return 0;
  uint64_t removed = 0;
  for (size_t n = 0; n < options_.max_commands_per_sweep; ++n) {
    const int64_t now_ms = clock_->NowMs();
    std::vector<storage::TokenHash> expired = table_->CollectExpired(
        now_ms, state_machine_->expiry_leeway_ms(), options_.batch);
    if (expired.empty()) break;
    sessiond::v1::internal::Command command;
    auto* expire = command.mutable_expire();
    for (const storage::TokenHash& hash : expired) {
      expire->add_token_hashes(std::string(storage::TokenHashBytes(hash)));
    }
    // Wait for this command to apply before collecting again, or the next
    // collection would find the same sessions.
    std::optional<replication::ApplyResult> result =
        SubmitAndWait(std::move(command));
    if (!result) break;
    uint64_t count = 0;
    if (const uint64_t* c = std::any_cast<uint64_t>(&**result)) count = *c;
    removed += count;
    // Nothing removed although the table said expired: the sessions were
    // touched or changed meanwhile; collecting again would spin.
    if (count == 0 || expired.size() < options_.batch) break;
  }
  removed_total_.fetch_add(removed, std::memory_order_relaxed);
  PurgeRevocations();
  PurgeCreateRequests();
  return removed;
}

void ExpirySweeper::PurgeCreateRequests() {
  // Request ids past their window (storage/create_requests.h): the command
  // names none, application takes those expired at its applied time.
  if (!state_machine_->CreateRequestsDueForPurge(clock_->NowMs())) return;
  sessiond::v1::internal::Command command;
  command.mutable_purge_create_requests()->set_max(10'000);
  (void)SubmitAndWait(std::move(command));
}

void ExpirySweeper::PurgeRevocations() {
  const std::vector<uint64_t> due =
      state_machine_->RevocationsDueForPurge(clock_->NowMs(), 16);
  if (due.empty()) return;
  sessiond::v1::internal::Command command;
  for (uint64_t id : due) {
    command.mutable_purge_revocations()->add_revocation_ids(id);
  }
  std::optional<replication::ApplyResult> result =
      SubmitAndWait(std::move(command));
  if (!result) return;
  if (const uint64_t* count = std::any_cast<uint64_t>(&**result)) {
    purged_total_.fetch_add(*count, std::memory_order_relaxed);
  }
}

}  // namespace sessiond::server
