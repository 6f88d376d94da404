// Copyright sessiond authors. Licensed under the Apache License 2.0.
//
// SessionStateMachine: the cluster clock's catch-up (ClockCatchUpCommand).
// A member that ran through the others' outage counted time their clocks
// did not; the sessions they stamped meanwhile move forward with the jump,
// on every replica alike, in the same entry, so no read ever sees the new
// time with the old stamps.
#include <algorithm>
#include <vector>

#include "common/status_macros.h"
#include "storage/create_requests.h"
#include "storage/session_state_machine.h"

namespace sessiond::storage {

using replication::ApplyResult;

ApplyResult SessionStateMachine::ApplyClockCatchUp(
    const v1::internal::ClockCatchUpCommand& command, int64_t now_ms,
    v1::internal::ClusterState* cluster, rocksdb::WriteBatch* batch) {
  const int64_t jump_ms = command.to_ms() - now_ms;
  uint64_t moved = 0;
  if (jump_ms <= 0) return std::any(moved);  // caught up already
  // What a caught-up clock stamped (after an earlier catch-up) moves only
  // by this jump's own lead, and the lag's sessions never twice.
  const int64_t since_ms =
      std::max(command.since_ms(), cluster->clock_caught_up_to_ms());
  cluster->set_clock_caught_up_to_ms(command.to_ms());
  std::vector<TokenHash> lagging;
  table_->ForEachSession([&](const SessionView& session) {
    if (session.created_at_ms >= since_ms ||
        session.last_seen_at_ms >= since_ms) {
      lagging.push_back(session.hash);
    }
  });
  for (const TokenHash& hash : lagging) {
    std::optional<v1::Session> session = table_->Get(hash);
    if (!session) continue;
    if (session->created_at_ms() >= since_ms && session->expires_at_ms() > 0) {
      // Its lifetime counts from its creation (a TTL); an absolute expiry a
      // caller gave moves too, the outage added to it as to the others.
      // created_at itself stays as stamped (SessionTable keeps it fixed).
      session->set_expires_at_ms(session->expires_at_ms() + jump_ms);
    }
    if (session->last_seen_at_ms() >= since_ms) {
      session->set_last_seen_at_ms(session->last_seen_at_ms() + jump_ms);
    }
    SESSIOND_RETURN_IF_ERROR(table_->Replace(hash, *session));
    StageSession(hash, batch);
    ++moved;
  }
  if (command.move_windows())
    MoveWindowsOpenedSince(since_ms, jump_ms, cluster, batch);
  return std::any(moved);
}

void SessionStateMachine::MoveWindowsOpenedSince(
    int64_t since_ms, int64_t jump_ms, v1::internal::ClusterState* cluster,
    rocksdb::WriteBatch* batch) {
  // A retry of a create made in the lag, its answer lost, found its window
  // closed by the jump and made a second session.
  for (const CreateRequestTable::Record& record :
       create_requests_.Postpone(since_ms, jump_ms)) {
    batch->Put(db_->default_cf(), CreateRequestDbKey(record.request_key()),
               record.SerializeAsString());
  }
  std::vector<v1::Revocation> lagging;
  {
    absl::MutexLock lock(&mu_);
    for (const auto& [id, record] : revocations_) {
      if (record.revoked_at_ms() >= since_ms) lagging.push_back(record);
    }
  }
  for (v1::Revocation& record : lagging) {
    record.set_restorable_until_ms(record.restorable_until_ms() + jump_ms);
    PutRevocation(record, batch);
  }
  for (auto& pending : *cluster->mutable_pending_bulk_revokes()) {
    if (pending.expires_at_ms() > since_ms) {
      pending.set_expires_at_ms(pending.expires_at_ms() + jump_ms);
    }
  }
}

}  // namespace sessiond::storage
