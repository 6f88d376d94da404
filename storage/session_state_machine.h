// Copyright sessiond authors. Licensed under the Apache License 2.0.
#ifndef SESSIOND_STORAGE_SESSION_STATE_MACHINE_H_
#define SESSIOND_STORAGE_SESSION_STATE_MACHINE_H_

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <functional>
#include <limits>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "replication/core/types.h"
#include "replication/state_machine.h"
#include "sessiond/v1/admin.pb.h"
#include "sessiond/v1/command.pb.h"
#include "storage/audit_log.h"
#include "storage/create_requests.h"
#include "storage/database.h"
#include "storage/key_ring.h"
#include "storage/session_table.h"
#include "storage/snapshot_files.h"

namespace sessiond::storage {

// Applies committed log entries (serialized sessiond.v1.internal.Command) to
// the SessionTable and to the `sessions` column family, and keeps the
// replicated cluster metadata (members, settings, membership) next to them.
//
// Each Apply() call is ONE rocksdb::WriteBatch, written without the WAL
// (the Raft log already holds the commands and replays them; the column
// families flush atomically), containing the session changes and the new
// applied index, term, time, membership and cluster state, so a crash loses
// whole calls or nothing.
//
// Deterministic: the result depends only on the state and the entries.
// Time is the "applied time", max(previous applied time, command
// timestamp_ms): cluster time, stamped by the leader (server/cluster_clock.h),
// never going back; the local clock is never read for a decision.
//
// Results (ApplyResult = StatusOr<std::any>), per entry:
//   Create, Touch with one touch, Update, Revoke -> sessiond::v1::Session,
//                                                   the record after it
//   CreateBatch                                  -> std::vector<Session>, in
//                                                   the command's order
//   RevokeUser                                   -> uint64_t, sessions
//                                                   newly revoked
//   Expire, Touch with != 1 touches              -> uint64_t, sessions
//                                                   removed / touched
//   Member, Settings, empty or kConfChange       -> OK, empty std::any
//   BulkRevoke prepare                           -> PendingBulkRevoke, as
//                                                   registered
//   BulkRevoke confirm, RestoreRevocation,       -> sessiond::v1::Revocation
//   RevokeUser with retention that revoked some     (its record after it)
//   PurgeRevocations                             -> uint64_t, sessions
//                                                   removed
// Deterministic rejections (the entry is applied as a no-op):
//   NotFound            unknown token hash or session_id (Touch with one
//                       touch, Update, Revoke)
//   Aborted             Update with expected_version != 0 and != version:
//                       "version mismatch: expected X, session is at Y"
//   FailedPrecondition  Update or single Touch of a revoked or expired
//                       session
//   AlreadyExists       Create with a token hash or session_id in use
//                       (CreateBatch: any of them, or twice in the batch;
//                       then none is created)
//   InvalidArgument     an entry that does not parse as a Command, or a
//                       malformed field (e.g. a token hash not 32 bytes)
// Revoke of a revoked session is OK and returns the record unchanged (one
// held by a bulk revocation is revoked for good: revoked_by is cleared).
// Create expires ttl_ms after its applied time (older commands carry an
// absolute expires_at_ms instead). Expire removes only the listed sessions
// still expired at the applied time (with the replicated expiry leeway).
// Touch moves last_seen_at to min(seen_at_ms or, when 0, the applied time;
// the applied time), never back. A multi-touch skips unknown, revoked and
// expired sessions and counts the rest. RevokeUser revokes the user's
// active, unexpired sessions except keep_session_id and counts them. Update
// keeps last_seen_at and bumps the version by one (the table keeps 32 bits
// of it: at 2^32 - 1, FailedPrecondition).
//
// Bulk revocations (storage/revocations.h): a revocation's id is the index
// of the entry that made it. BulkRevoke confirm: FailedPrecondition for a
// token not pending (unknown, or its 60 s passed) or pending for another
// selector. RestoreRevocation: NotFound for an id not retained,
// FailedPrecondition when already restored. PurgeRevocations skips ids
// whose retention has not passed at the applied time.
//
// Retryable creates, token rotation and the per-user cap
// (session_state_machine_requests.cc, storage/create_requests.h):
//   Create with a request_key: when the key is in the create-request table
//     and its window has not passed, the entry changes nothing and returns
//     the session the first create made (Session), or FailedPrecondition
//     "request_id: the session ... " when that session is revoked, expired,
//     gone, or its token was rotated. Otherwise it creates as usual and
//     remembers the key until applied time + request_window_ms (at most
//     request_max_entries keys: the one whose window ends first goes).
//   Create (and each create of a CreateBatch) with max_user_sessions > 0:
//     FailedPrecondition "the user already has the most live sessions
//     allowed ..." when the user's live (active, unexpired) sessions plus
//     the new ones would exceed it; a batch is refused whole.
//   Rotate -> Session (moved to new_token_hash): NotFound, FailedPrecondition
//     (revoked, expired) as Touch; AlreadyExists when the new hash is taken.
//   CreateKey -> OK, empty: installs the create key unless one is installed.
//   PurgeCreateRequests -> uint64_t, request keys removed.
//
// The audit log (session_state_machine_audit.cc, storage/audit_log.h):
//   Audit -> uint64_t, the seq the entry got (time_ms: the applied time);
//     then entries older than applied time - retention_ms, and the oldest
//     beyond max_entries, are dropped. InvalidArgument without an entry.
//
// Threading: Apply and ApplySnapshot are called from one thread (the apply
// stage), which is also the only writer of the table. The accessors,
// CreateSnapshot and Digest may be called from any thread.
struct SessionStateMachineOptions {
  // Threads that load the `sessions` CF at Open (0: one per core, max 4).
  int load_threads = 0;
  // Where snapshot images go (CreateSnapshot) and come from
  // (ApplySnapshot). Required for those two; must outlive the state machine.
  SnapshotFiles* snapshots = nullptr;
  // The membership of a group bootstrapped without any applied entry yet
  // (the log's bootstrap conf state).
  replication::ConfState bootstrap_conf;
  // Called on the apply thread after an Apply or ApplySnapshot that changed
  // the cluster state (members, settings) or the configuration, with both.
  // Must not block or call back.
  std::function<void(const sessiond::v1::internal::ClusterState&,
                     const replication::ConfState&)>
      on_cluster_state;
};

// A point of cluster time as this node applied it: the applied time, and
// this node's steady clock when it applied it. Reads estimate "now" in
// cluster time as cluster_ms plus the steady time elapsed since
// (server/cluster_clock.h).
struct AppliedTimeSample {
  int64_t cluster_ms = 0;
  int64_t steady_ns = 0;
};

class SessionStateMachine : public replication::StateMachine {
 public:
  // Loads the `sessions` CF into `table` (which must be empty) and reads the
  // applied index, term, time, membership and cluster state. This is
  // recovery: the driver then replays log entries after applied_index().
  // `db` and `table` must outlive the returned object. DataLoss on a
  // corrupt record.
  static absl::StatusOr<std::unique_ptr<SessionStateMachine>> Open(
      Database* db, SessionTable* table,
      SessionStateMachineOptions options = {});

  // The session table changes before the RocksDB write, so a write that
  // fails (a full disk) is retried here, 10 ms to 1 s apart, until it
  // succeeds or StopRetryingWrites: it cannot be undone, nor skipped.
  absl::StatusOr<std::vector<replication::ApplyResult>> Apply(
      const std::vector<replication::Entry>& entries) override;

  // Makes a failing Apply give up (returning the write's error) instead of
  // retrying: at shutdown, where the log replays it on the next start.
  void StopRetryingWrites() override {
    stop_retrying_.store(true, std::memory_order_release);
  }

  LogIndex applied_index() const override {
    return LogIndex(applied_index_.load(std::memory_order_acquire));
  }

  // The applied time: max over applied commands' timestamp_ms (0 on a new
  // store). Expiry decisions made by the state machine use it.
  int64_t applied_time_ms() const {
    return applied_time_ms_.load(std::memory_order_acquire);
  }
  AppliedTimeSample applied_time_sample() const;

  // The clock catch-ups this node applied since it started (a member that
  // ran through the others' outage brought its time), those of one term
  // taken together: the cluster time before the first and after the last,
  // the term of their entries, and whether an expire or expiry breaker
  // command applied after them (a leader judged since). Not replicated
  // state, rebuilt as the log replays: a new leader's expiry sweeper starts
  // its first window before a jump nobody judged yet
  // (ExpirySweeper::StartNewLeadersWindow).
  struct ClockJump {
    int64_t from_ms = 0;
    int64_t to_ms = 0;
    Term term;
    bool swept_since = false;
  };
  std::optional<ClockJump> last_clock_jump() const;

  // The replicated expiry leeway (0 until a SettingsCommand sets it).
  int64_t expiry_leeway_ms() const {
    return expiry_leeway_ms_.load(std::memory_order_acquire);
  }
  sessiond::v1::internal::ClusterState cluster_state() const;
  replication::ConfState applied_conf() const;
  // A member's client address as the member table has it (empty: none),
  // without copying the table: every write's answer asks (the leader hint).
  std::string ClientAddressOf(NodeId node) const;

  // The mass-expiry breaker (server/expiry_breaker.h). While it is open,
  // expiry is judged at its frozen_at_ms: ExpiryNowMs(now) is the time every
  // expiry decision uses, here and on reads (min(now, frozen_at_ms); now
  // itself while closed).
  sessiond::v1::ExpiryBreaker expiry_breaker() const;
  int64_t ExpiryNowMs(int64_t now_ms) const {
    return std::min(now_ms,
                    expiry_frozen_at_ms_.load(std::memory_order_acquire));
  }
  bool expiry_breaker_open() const {
    return expiry_frozen_at_ms_.load(std::memory_order_acquire) !=
           kExpiryNotFrozen;
  }

  // The signing key ring (storage/key_ring.h) as applied: a snapshot any
  // thread may hold. The JWKS max-age its activations wait for (0 until the
  // first leader set it).
  KeyRingView key_ring() const { return key_ring_.View(); }
  int64_t jwks_max_age_ms() const {
    return jwks_max_age_ms_.load(std::memory_order_acquire);
  }
  // For each key the JWKS publishes (STAGED, ACTIVE, RETIRING): how long
  // this process has published it, in ms by the steady clock, from when it
  // applied the key's stage or loaded it at start. Not replicated: each
  // member's own (ActivateKey asks every member).
  std::map<std::string, int64_t> KeyPublishedMs() const
      ABSL_LOCKS_EXCLUDED(published_mu_);
  // Live sessions whose JWT key `kid` signed: before their absolute expiry
  // (idle timeouts aside: a late touch may still save an idle one) and
  // active, or held by a revocation still restorable (a restore brings them
  // back); both judged at ExpiryNowMs(now_ms). A scan of the table (any
  // thread).
  uint64_t CountLiveSignedBy(std::string_view kid, int64_t now_ms) const;

  // The retained revocations, newest first.
  std::vector<sessiond::v1::Revocation> revocations() const;
  std::optional<sessiond::v1::Revocation> revocation(uint64_t id) const;
  // A retained revocation's reason and time, without copying its selector
  // (a list of up to thousands of users): every REVOKED validation asks,
  // and a restore for every session it gives idle time back to.
  struct RevocationBrief {
    std::string reason;
    int64_t revoked_at_ms = 0;
  };
  std::optional<RevocationBrief> revocation_brief(uint64_t id) const;
  // How many sessions, of how many users, a bulk revocation with `selector`
  // would take at now_ms (a preview: reads the table, any thread).
  uint64_t CountSelected(const sessiond::v1::SessionSelector& selector,
                         int64_t now_ms, uint64_t* users) const {
    const Selection selection = SelectSessions(selector, now_ms);
    *users = selection.users;
    return selection.live.size();
  }
  // Up to `max` ids whose retention passed at `now_ms` (oldest first): the
  // leader's sweeper proposes a PurgeRevocationsCommand with them.
  std::vector<uint64_t> RevocationsDueForPurge(int64_t now_ms,
                                               size_t max) const;

  // The cluster's create key (empty until a CreateKeyCommand applied) and
  // the request keys of recent creates (storage/create_requests.h).
  std::string create_key() const { return create_requests_.create_key(); }
  const CreateRequestTable& create_requests() const { return create_requests_; }
  // Whether a request key's window has passed at now_ms: the leader's
  // sweeper then proposes a PurgeCreateRequestsCommand.
  bool CreateRequestsDueForPurge(int64_t now_ms) const {
    return create_requests_.AnyExpired(now_ms);
  }

  // One page of the audit log (ListAuditRequest's after_seq and limit),
  // read from a consistent RocksDB snapshot: what has been applied and
  // written. Any thread. DataLoss on a stored entry that does not parse.
  absl::StatusOr<sessiond::v1::ListAuditResponse> ListAudit(
      const sessiond::v1::ListAuditRequest& request) const;
  // The audit entries kept (any thread; for metrics).
  uint64_t AuditEntryCount() const { return audit_log_.size(); }
  // Whether an entry is older than `retention_ms` at `now_ms`: the leader's
  // sweeper then proposes an AuditCommand without an entry, which trims.
  bool AuditDueForTrim(int64_t now_ms, int64_t retention_ms) const {
    return audit_log_.AnyOlderThan(now_ms, retention_ms);
  }

  // Writes an image file (storage/snapshot_files.h) from a consistent
  // RocksDB snapshot of the state; `data` is its SnapshotRef. Safe to run
  // concurrently with Apply (it reads RocksDB, not the table).
  absl::StatusOr<replication::Snapshot> CreateSnapshot() override;
  // Replaces the table and the `sessions` CF with the image `snapshot.data`
  // references (one synced write, after the whole image was checked);
  // applied index and term become the snapshot's. DataLoss on a malformed
  // or missing image, which changes nothing. The write is retried as
  // Apply's (a full disk), the table unchanged meanwhile, until it succeeds
  // or StopRetryingWrites; then the write's error, nothing changed. Internal
  // (after the checks, not expected): the table was left empty and no
  // longer matches RocksDB; the caller must stop the node.
  absl::Status ApplySnapshot(const replication::Snapshot& snapshot) override;
  // ApplySnapshot for start-up (Daemon::Init: a crash between the log's
  // install and this one), where nothing restarts the database after a
  // write-ahead log failure: the write is tried once, its error returned.
  absl::Status RecoverSnapshot(const replication::Snapshot& snapshot);
  // Every check ApplySnapshot makes of the image `snapshot.data` references
  // in `files`, changing nothing; DataLoss as ApplySnapshot. The transport
  // runs it on a received image before Raft sees the snapshot: installing
  // one drops the log, so an image refused only at apply time would leave
  // the node nothing to go back to (and fail again at every restart).
  static absl::Status VerifySnapshotImage(
      const SnapshotFiles& files, const replication::Snapshot& snapshot);

  // A digest of the replicated state at one applied index, read from a
  // consistent RocksDB snapshot: equal on two replicas at the same applied
  // index, or they diverged. SHA-256 over every sessions record (key and
  // value, in key order), the cluster state, the revocation, create-request
  // and audit records, hex.
  struct Digest {
    LogIndex applied_index;
    std::string sha256_hex;
    uint64_t sessions = 0;
  };
  absl::StatusOr<Digest> ComputeDigest() const;

 private:
  SessionStateMachine(Database* db, SessionTable* table,
                      SessionStateMachineOptions options, LogIndex applied,
                      Term applied_term, int64_t applied_time_ms,
                      replication::ConfState conf,
                      sessiond::v1::internal::ClusterState cluster);

  replication::ApplyResult ApplyCommand(
      const sessiond::v1::internal::Command& command, int64_t now_ms,
      rocksdb::WriteBatch* batch);
  replication::ApplyResult ApplyCreate(
      const sessiond::v1::internal::CreateCommand& create, int64_t now_ms,
      rocksdb::WriteBatch* batch);
  // The new session of a create that passed every check: into the table and
  // `batch`.
  absl::StatusOr<sessiond::v1::Session> InsertCreated(
      const TokenHash& hash,
      const sessiond::v1::internal::CreateCommand& create, int64_t now_ms,
      rocksdb::WriteBatch* batch);
  replication::ApplyResult ApplyCreateBatch(
      const sessiond::v1::internal::CreateBatchCommand& batch, int64_t now_ms,
      rocksdb::WriteBatch* write);
  replication::ApplyResult ApplyTouch(
      const sessiond::v1::internal::TouchCommand& touch, int64_t now_ms,
      rocksdb::WriteBatch* batch);
  // Whether `touch` finds `session` expired at applied time now_ms.
  bool TouchFindsExpired(
      const sessiond::v1::Session& session,
      const sessiond::v1::internal::TouchCommand::Touch& touch, int64_t now_ms,
      int64_t leeway) const;
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
  // Bulk revocations (session_state_machine_revocations.cc). `index` is the
  // entry's: the id of a revocation it makes.
  replication::ApplyResult ApplyBulkRevoke(
      const sessiond::v1::internal::BulkRevokeCommand& bulk, LogIndex index,
      int64_t now_ms, sessiond::v1::internal::ClusterState* cluster,
      rocksdb::WriteBatch* batch);
  // The idle time to give back to `hash` as revocation `restoring` lets go
  // of it at `now_ms` (SessionTable::RemoveHold's held_ms).
  int64_t IdleTimeGivenBack(const TokenHash& hash, uint64_t restoring,
                            int64_t now_ms) const;
  replication::ApplyResult ApplyRestoreRevocation(
      const sessiond::v1::internal::RestoreRevocationCommand& restore,
      int64_t now_ms, rocksdb::WriteBatch* batch);
  replication::ApplyResult ApplyPurgeRevocations(
      const sessiond::v1::internal::PurgeRevocationsCommand& purge,
      int64_t now_ms, rocksdb::WriteBatch* batch);
  // RevokeUserCommand with a retention.
  replication::ApplyResult ApplyRestorableRevokeUser(
      const sessiond::v1::internal::RevokeUserCommand& revoke_user,
      LogIndex index, int64_t now_ms, rocksdb::WriteBatch* batch);
  // Revokes what `selector` takes as revocation `id` and records it.
  // Sessions it found expired (but still in the table) it revokes for good.
  absl::StatusOr<sessiond::v1::Revocation> Revoke(
      const sessiond::v1::SessionSelector& selector, const std::string& reason,
      int64_t retention_ms, uint64_t id, int64_t now_ms,
      rocksdb::WriteBatch* batch);
  // Marks `session` (the table's record of `hash`) revoked for good, as
  // RevokeSession does, and stages it.
  absl::Status RevokeForGood(const TokenHash& hash, const std::string& reason,
                             int64_t now_ms, sessiond::v1::Session* session,
                             rocksdb::WriteBatch* batch);
  // What `selector` takes at now_ms: the unexpired sessions (and how many
  // users they belong to), and those expired but still in the table.
  struct Selection {
    std::vector<TokenHash> live;
    std::vector<TokenHash> expired;
    uint64_t users = 0;
  };
  Selection SelectSessions(const sessiond::v1::SessionSelector& selector,
                           int64_t now_ms) const;
  // The sessions revocation `record` may hold (a superset).
  std::vector<TokenHash> SessionsHeldBy(
      const sessiond::v1::Revocation& record) const;
  // Replaces every revocation record in memory (Open, ApplySnapshot).
  void ReplaceRevocations(std::vector<sessiond::v1::Revocation> records);
  // Stores a revocation record (in revocations_ and `batch`).
  void PutRevocation(const sessiond::v1::Revocation& record,
                     rocksdb::WriteBatch* batch);

  // Retryable creates, rotation, the per-user cap
  // (session_state_machine_requests.cc). CreateReplay: the answer to a
  // create whose request key is remembered, or nullopt when it must create.
  std::optional<replication::ApplyResult> CreateReplay(
      const sessiond::v1::internal::CreateCommand& create, int64_t now_ms);
  // Remembers a create's request key (after it created its session).
  void RememberCreateRequest(
      const sessiond::v1::internal::CreateCommand& create, int64_t now_ms,
      rocksdb::WriteBatch* batch);
  // FailedPrecondition when `user_id`'s live sessions plus `adding` would
  // exceed `cap` (0: no cap).
  absl::Status CheckUserCap(const std::string& user_id, uint32_t cap,
                            uint64_t adding, int64_t now_ms) const;
  // Aborted when `kid`, a create's signing_kid, names a key the JWKS no
  // longer publishes (RETIRED, or gone from the ring): it was retired after
  // the node signed the token, which no verifier would then accept.
  absl::Status CheckSigningKid(std::string_view kid) const;
  replication::ApplyResult ApplyRotate(
      const sessiond::v1::internal::RotateCommand& rotate, int64_t now_ms,
      rocksdb::WriteBatch* batch);
  replication::ApplyResult ApplyCreateKey(
      const sessiond::v1::internal::CreateKeyCommand& command,
      rocksdb::WriteBatch* batch);
  // ExpiryBreakerCommand -> sessiond::v1::ExpiryBreaker, the state after
  // it. Open when open: FailedPrecondition "already open". Close of a
  // closed breaker, or with another opening's id: FailedPrecondition.
  replication::ApplyResult ApplyExpiryBreaker(
      const sessiond::v1::internal::ExpiryBreakerCommand& command,
      LogIndex index, int64_t now_ms,
      sessiond::v1::internal::ClusterState* cluster);
  // KeyRingCommand -> OK, empty (the ring after it: key_ring()); its
  // refusals as KeyRing::Apply's (session_state_machine_keys.cc).
  replication::ApplyResult ApplyKeyRing(
      const sessiond::v1::internal::KeyRingCommand& command, LogIndex index,
      int64_t now_ms, sessiond::v1::internal::ClusterState* cluster);
  replication::ApplyResult ApplyPurgeCreateRequests(
      const sessiond::v1::internal::PurgeCreateRequestsCommand& purge,
      int64_t now_ms, rocksdb::WriteBatch* batch);
  // ClockCatchUpCommand -> uint64_t, the sessions it moved forward
  // (session_state_machine_clock.cc). `now_ms`: the applied time before
  // it; Apply then takes its to_ms.
  replication::ApplyResult ApplyClockCatchUp(
      const sessiond::v1::internal::ClockCatchUpCommand& command,
      int64_t now_ms, sessiond::v1::internal::ClusterState* cluster,
      rocksdb::WriteBatch* batch);
  // ClockCatchUpCommand.move_windows: moves `jump_ms` later the windows
  // opened since `since_ms` (create requests, revocations' restore windows,
  // bulk revokes' confirmations), as the catch-up moves the sessions.
  void MoveWindowsOpenedSince(int64_t since_ms, int64_t jump_ms,
                              v1::internal::ClusterState* cluster,
                              rocksdb::WriteBatch* batch);
  // AuditCommand (session_state_machine_audit.cc).
  replication::ApplyResult ApplyAudit(
      const sessiond::v1::internal::AuditCommand& audit, int64_t now_ms,
      rocksdb::WriteBatch* batch);

  // Member and settings commands change `*cluster`. `conf`: the
  // configuration as of this entry (an ADD of a member in it is refused).
  replication::ApplyResult ApplyMember(
      const sessiond::v1::internal::MemberCommand& member,
      const replication::ConfState& conf,
      sessiond::v1::internal::ClusterState* cluster);
  // Puts the table's current record for `hash` into `batch`.
  void StageSession(const TokenHash& hash, rocksdb::WriteBatch* batch);
  // Writes an Apply's batch, retrying as Apply says.
  absl::Status WriteApplied(rocksdb::WriteBatch* batch);
  // Calls `write` until it succeeds or StopRetryingWrites, 10 ms to 1 s
  // apart, logging its error every 30 s; returns its last status.
  absl::Status RetryWrite(absl::FunctionRef<absl::Status()> write);
  absl::Status InstallSnapshot(const replication::Snapshot& snapshot,
                               bool retry_write);
  void PublishClusterState(const sessiond::v1::internal::ClusterState& cluster,
                           const replication::ConfState& conf);
  // key_ring_ and jwks_max_age_ms_ from `cluster` (the ring only when it
  // changed).
  void PublishKeyRing(const sessiond::v1::internal::ClusterState& cluster);

  Database* const db_;         // Not owned; outlives this.
  SessionTable* const table_;  // Not owned; outlives this.
  const SessionStateMachineOptions options_;
  std::atomic<uint64_t> applied_index_;
  std::atomic<int64_t> applied_time_ms_;
  std::atomic<int64_t> expiry_leeway_ms_{0};
  static constexpr int64_t kExpiryNotFrozen =
      std::numeric_limits<int64_t>::max();
  // The open breaker's frozen_at_ms; kExpiryNotFrozen while closed.
  std::atomic<int64_t> expiry_frozen_at_ms_{kExpiryNotFrozen};
  std::atomic<int64_t> jwks_max_age_ms_{0};
  // Mirrors cluster_.key_ring() for readers (published with the cluster
  // state); thread-safe on its own.
  KeyRing key_ring_;
  // kid -> steady-clock nanoseconds when this process first published it
  // (KeyPublishedMs); updated with key_ring_.
  mutable absl::Mutex published_mu_;
  std::map<std::string, int64_t> published_at_ns_
      ABSL_GUARDED_BY(published_mu_);
  std::atomic<bool> stop_retrying_{false};

  // Apply-thread state, readable from any thread under mu_.
  mutable absl::Mutex mu_;
  Term applied_term_ ABSL_GUARDED_BY(mu_);
  replication::ConfState conf_ ABSL_GUARDED_BY(mu_);
  sessiond::v1::internal::ClusterState cluster_ ABSL_GUARDED_BY(mu_);
  AppliedTimeSample time_sample_ ABSL_GUARDED_BY(mu_);
  std::optional<ClockJump> last_clock_jump_ ABSL_GUARDED_BY(mu_);
  // By id; mirrors the default CF's "revocation/" records.
  std::map<uint64_t, sessiond::v1::Revocation> revocations_
      ABSL_GUARDED_BY(mu_);
  // Mirrors the default CF's "create_key" and "create_request/" records.
  // Thread-safe on its own (never taken with mu_ held); written by the apply
  // thread only.
  CreateRequestTable create_requests_;
  // Mirrors the default CF's "audit/" and "audit_meta" records (seqs and
  // times only). Thread-safe on its own (never taken with mu_ held);
  // written by the apply thread only.
  AuditLog audit_log_;
};

// Loads every session of the `sessions` CF into `table`, in parallel over
// `threads` key ranges. Exposed for benchmarks and tests.
absl::Status LoadSessions(Database* db, SessionTable* table, int threads);

}  // namespace sessiond::storage

#endif  // SESSIOND_STORAGE_SESSION_STATE_MACHINE_H_
