// Copyright sessiond authors. Licensed under the Apache License 2.0.
#ifndef SESSIOND_STORAGE_SESSION_STATE_MACHINE_H_
#define SESSIOND_STORAGE_SESSION_STATE_MACHINE_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "replication/core/types.h"
#include "replication/state_machine.h"
#include "sessiond/v1/command.pb.h"
#include "storage/database.h"
#include "storage/session_table.h"

namespace sessiond::storage {

// Applies committed log entries (serialized sessiond.v1.internal.Command) to
// the SessionTable and to the `sessions` column family.
//
// Each Apply() call is ONE rocksdb::WriteBatch (not synced: the Raft log
// already holds the commands and replays them) containing the session
// changes and the new applied index and applied time, so a crash loses a
// whole call or nothing.
//
// Deterministic: the result depends only on the state and the entries.
// Time is the "applied time", max(previous applied time, command
// timestamp_ms), so it never goes back even when leaders' clocks disagree
// (LogCabin's ClusterClock lesson); the local clock is never read.
//
// Results (ApplyResult = StatusOr<std::any>), per entry:
//   Create, Touch with one touch, Update, Revoke -> sessiond::v1::Session,
//                                                   the record after it
//   RevokeUser                                   -> uint64_t, sessions
//                                                   newly revoked
//   Expire, Touch with != 1 touches              -> uint64_t, sessions
//                                                   removed / touched
//   empty or kConfChange entry                   -> OK, empty std::any
// Deterministic rejections (the entry is applied as a no-op):
//   NotFound            unknown token hash or session_id (Touch with one
//                       touch, Update, Revoke)
//   Aborted             Update with expected_version != 0 and != version:
//                       "version mismatch: expected X, session is at Y"
//   FailedPrecondition  Update or single Touch of a revoked or expired
//                       session
//   AlreadyExists       Create with a token hash or session_id in use
//   InvalidArgument     an entry that does not parse as a Command, or a
//                       malformed field (e.g. a token hash not 32 bytes)
// Revoke of a revoked session is OK and returns the record unchanged.
// Expire removes only the listed sessions still expired at the applied time
// (with options.expiry_leeway_ms). Touch moves last_seen_at to
// min(seen_at_ms or, when 0, the applied time; the applied time), never
// back. A multi-touch skips unknown, revoked and expired sessions and counts
// the rest. RevokeUser revokes the user's active, unexpired sessions except
// keep_session_id and counts them. Update keeps last_seen_at and bumps the
// version by one (the table keeps 32 bits of it: at 2^32 - 1,
// FailedPrecondition).
//
// Threading: Apply, TakeSnapshot and ApplySnapshot are called from one
// thread (the apply thread), which is also the only writer of the table.
// applied_index() and applied_time_ms() may be read from any thread.
struct SessionStateMachineOptions {
  // Leeway for the expiry checks the state machine makes (Touch, Update,
  // Expire, RevokeUser). Part of the replicated behaviour: it must be the
  // same on every node, and the same as the sweeper's.
  int64_t expiry_leeway_ms = 0;
  // Threads that load the `sessions` CF at Open (0: one per core, max 4).
  int load_threads = 0;
};

class SessionStateMachine : public replication::StateMachine {
 public:
  // Loads the `sessions` CF into `table` (which must be empty) and reads the
  // applied index and time. This is recovery: the driver then replays log
  // entries after applied_index(). `db` and `table` must outlive the
  // returned object. DataLoss on a corrupt record.
  static absl::StatusOr<std::unique_ptr<SessionStateMachine>> Open(
      Database* db, SessionTable* table,
      const SessionStateMachineOptions& options = {});

  absl::StatusOr<std::vector<replication::ApplyResult>> Apply(
      const std::vector<replication::Entry>& entries) override;

  LogIndex applied_index() const override {
    return LogIndex(applied_index_.load(std::memory_order_acquire));
  }

  // The applied time: max over applied commands' timestamp_ms (0 on a new
  // store). Expiry decisions made by the state machine use it.
  int64_t applied_time_ms() const {
    return applied_time_ms_.load(std::memory_order_acquire);
  }

  // The image: a varint-framed sequence, see session_state_machine.cc.
  absl::StatusOr<std::string> TakeSnapshot() override;
  // Replaces the table and the `sessions` CF with the image (one synced
  // write); the applied index becomes snapshot.meta.index. DataLoss on a
  // malformed image, which is checked whole first and changes nothing.
  // Internal (after the checks, not expected): the table was left empty and
  // no longer matches RocksDB; the caller must stop the node.
  absl::Status ApplySnapshot(const replication::Snapshot& snapshot) override;

 private:
  SessionStateMachine(Database* db, SessionTable* table,
                      const SessionStateMachineOptions& options,
                      LogIndex applied, int64_t applied_time_ms);

  replication::ApplyResult ApplyCommand(
      const sessiond::v1::internal::Command& command, int64_t now_ms,
      rocksdb::WriteBatch* batch);
  replication::ApplyResult ApplyCreate(
      const sessiond::v1::internal::CreateCommand& create, int64_t now_ms,
      rocksdb::WriteBatch* batch);
  replication::ApplyResult ApplyTouch(
      const sessiond::v1::internal::TouchCommand& touch, int64_t now_ms,
      rocksdb::WriteBatch* batch);
  replication::ApplyResult ApplyUpdate(
      const sessiond::v1::internal::UpdateCommand& update, int64_t now_ms,
      rocksdb::WriteBatch* batch);
  replication::ApplyResult ApplyRevoke(
      const sessiond::v1::internal::RevokeCommand& revoke, int64_t now_ms,
      rocksdb::WriteBatch* batch);
  replication::ApplyResult ApplyRevokeUser(
      const sessiond::v1::internal::RevokeUserCommand& revoke_user,
      int64_t now_ms, rocksdb::WriteBatch* batch);
  replication::ApplyResult ApplyExpire(
      const sessiond::v1::internal::ExpireCommand& expire, int64_t now_ms,
      rocksdb::WriteBatch* batch);
  // Puts the table's current record for `hash` into `batch`.
  void StageSession(const TokenHash& hash, rocksdb::WriteBatch* batch);

  Database* const db_;         // Not owned; outlives this.
  SessionTable* const table_;  // Not owned; outlives this.
  const SessionStateMachineOptions options_;
  std::atomic<uint64_t> applied_index_;
  std::atomic<int64_t> applied_time_ms_;
};

// Loads every session of the `sessions` CF into `table`, in parallel over
// `threads` key ranges. Exposed for benchmarks and tests.
absl::Status LoadSessions(Database* db, SessionTable* table, int threads);

}  // namespace sessiond::storage

#endif  // SESSIOND_STORAGE_SESSION_STATE_MACHINE_H_
