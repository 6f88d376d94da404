// Copyright sessiond authors. Licensed under the Apache License 2.0.
//
// SessionStateMachine: the replicated audit log (storage/audit_log.h). An
// entry's seq, time and what it drops depend only on the state and the
// command (its limits travel in it), so every replica keeps the same
// entries.
#include <any>
#include <cstdint>

#include "storage/audit_log.h"
#include "storage/session_state_machine.h"

namespace sessiond::storage {

using replication::ApplyResult;

ApplyResult SessionStateMachine::ApplyAudit(
    const v1::internal::AuditCommand& audit, int64_t now_ms,
    rocksdb::WriteBatch* batch) {
  if (!audit.has_entry()) {
    // A trim: what aged out goes (the leader's sweeper proposes it when no
    // new entry came to do it).
    return std::any(audit_log_.Trim(now_ms, audit.retention_ms(),
                                    audit.max_entries(), db_->default_cf(),
                                    batch));
  }
  const uint64_t seq =
      audit_log_.Append(audit.entry(), now_ms, audit.retention_ms(),
                        audit.max_entries(), db_->default_cf(), batch);
  return std::any(seq);
}

absl::StatusOr<v1::ListAuditResponse> SessionStateMachine::ListAudit(
    const v1::ListAuditRequest& request) const {
  return ListAuditEntries(db_, request);
}

}  // namespace sessiond::storage
