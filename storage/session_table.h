// Copyright sessiond authors. Licensed under the Apache License 2.0.
#ifndef SESSIOND_STORAGE_SESSION_TABLE_H_
#define SESSIOND_STORAGE_SESSION_TABLE_H_

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "sessiond/v1/session.pb.h"
#include "storage/hold_registry.h"
#include "storage/token.h"

namespace sessiond::storage {

class SlabArena;

enum class ValidateOutcome : uint8_t { kValid, kExpired, kRevoked, kUnknown };

const char* ValidateOutcomeName(ValidateOutcome outcome);

struct ValidateResult {
  ValidateOutcome outcome = ValidateOutcome::kUnknown;
  sessiond::v1::Session session;  // Set only when outcome == kValid.
};

// The instant a session stops being valid, before leeway: the earlier of its
// absolute expiry and, with an idle timeout, last_seen + idle_timeout.
int64_t SessionDeadlineMs(int64_t expires_at_ms, int64_t idle_timeout_ms,
                          int64_t last_seen_at_ms);

// The idle timeout that counts for a session: none while a bulk revocation
// holds it (a flush, a bulk revoke, a restorable RevokeUserSessions). Held,
// it cannot be used or touched, and its idle time does not run: restoring
// it gives back what it had left (RemoveHold moves last_seen_at forward by
// the time held). Its absolute expiry counts all along.
inline int64_t IdleTimeoutWhile(bool held, int64_t idle_timeout_ms) {
  return held ? 0 : idle_timeout_ms;
}

// The expiry rule, shared by reads, the sweeper and the state machine:
// expired when now >= expires_at + leeway, or (idle_timeout > 0 and)
// now >= last_seen_at + idle_timeout + leeway. The Session form applies
// IdleTimeoutWhile (held: revoked_by is not empty).
bool IsExpired(int64_t expires_at_ms, int64_t idle_timeout_ms,
               int64_t last_seen_at_ms, int64_t now_ms, int64_t leeway_ms);
bool IsExpired(const sessiond::v1::Session& session, int64_t now_ms,
               int64_t leeway_ms);
// The same rule with the idle timeout judged at its own time, `idle_now_ms`
// (a node cut off from its leader stops counting idle time when it last
// heard from one: docs/API.md). The absolute expiry is judged at `now_ms`.
bool IsExpired(int64_t expires_at_ms, int64_t idle_timeout_ms,
               int64_t last_seen_at_ms, int64_t now_ms, int64_t idle_now_ms,
               int64_t leeway_ms);
bool IsExpired(const sessiond::v1::Session& session, int64_t now_ms,
               int64_t idle_now_ms, int64_t leeway_ms);

struct SessionTableOptions {
  // Number of shards (each with its own lock). More shards, less contention
  // between readers and the apply thread; 64 is plenty for 2-16 cores.
  size_t num_shards = 64;
};

// One session as a scan sees it (SessionTable::ForEachSession): valid only
// during the callback.
struct SessionView {
  const TokenHash& hash;
  std::string_view session_id;
  std::string_view user_id;
  int64_t created_at_ms;
  int64_t expires_at_ms;
  int64_t idle_timeout_ms;
  int64_t last_seen_at_ms;
  bool revoked;
  // Non-zero when bulk revocations hold it (revoked_by is not empty):
  // SessionTable::HoldContains says which.
  uint32_t hold;
  // The wire bytes of the other sessiond.v1.Session fields: attributes (7),
  // revoke reason and time (10, 11), client (12).
  std::string_view extra;
};

// The expiry rule (IsExpired above) for a session seen in a scan, the hold
// applied (IdleTimeoutWhile).
bool IsExpired(const SessionView& session, int64_t now_ms, int64_t leeway_ms);

// A session CollectExpiredSessions found: enough for the expiry breaker
// (server/expiry_breaker.h) to tell an expiry its lifetime predicted from
// one it did not.
struct ExpiredSession {
  TokenHash hash;
  int64_t created_at_ms;
  // SessionDeadlineMs plus the leeway: the instant it counts as expired.
  int64_t expires_at_ms;
  int64_t last_seen_at_ms = 0;
};

// The kid of the key that signed a session's JWT token (Session.
// signing_kid), read from its extra bytes; empty for an opaque token.
std::string_view SigningKidOf(const SessionView& session);

struct ListUserPage {
  std::vector<sessiond::v1::Session> sessions;  // Ordered by session_id.
  // The session_id to pass as `after_session_id` for the next page; empty on
  // the last page. (The server may wrap it into an opaque page token.)
  std::string next_after_session_id;
};

// The in-memory session table: every live session (active, or revoked and
// not yet past its expiry), keyed by token hash, sharded by token hash.
//
// Threading: reads (Validate, Get*, ListUser, CollectExpired, size) are
// thread-safe and take a shard's lock in shared mode. Writes (the "apply
// thread only" section) come from one thread at a time, in practice the
// SessionStateMachine's apply thread; they take shard locks exclusively.
// InsertStored may also be called from several loader threads at once
// during recovery, when no other writer runs.
//
// Memory, by design, per session (x86-64). Records live in two SlabArenas
// (storage/arena.h) and are named by 4-byte references, not pointers:
//   record   one arena block: token hash (32), created/expires/idle/
//            last_seen (32), attribute-block reference and size (8), user
//            list links (8), version, state and id lengths (8), then the
//            session_id and user_id bytes: 88 + 22 + |user_id|, rounded up to
//            8 bytes (128 B for a 15-byte user_id).
//   holds    only for a session a bulk revocation holds: the index of its
//            interned revoked_by list (storage/hold_registry.h) in seven
//            spare bits of the record's state byte while the index is at
//            most 127, so nothing more; beyond, an entry in its token
//            shard's `holds` map (reference -> index), ~10-20 B. Live
//            sessions pay nothing for it.
//   extra    one arena block with the attributes, client metadata, revoke
//            reason and time as protobuf wire bytes (fields 7, 10-12 of
//            sessiond.v1.Session), rounded up to 8 bytes: ~224 B for 200 B of
//            attribute keys and values in four entries.
//   indexes  three flat_hash_sets of references (by token hash, by
//            session_id, heads of per-user lists): 5 B per slot at load
//            0.44-0.875, ~26 B; a btree of (deadline second << 32 | ref)
//            for expiry: ~9 B (built full at recovery, ~12 B when grown).
// Measured (storage_bench, 1M sessions, 200 B attributes): 352 B in the
// arenas + 26 B of hash indexes; RSS growth ~395-410 B per session. No
// protobuf object is kept per session; one is built only to answer a read.
//
// The per-user index is an intrusive doubly linked list through the
// records, with its head in the shard of hash(user_id); the session_id index
// lives in the shard of hash(session_id). Lock rule: a writer holds at most
// one shard lock at a time (plus an arena's or the HoldRegistry's lock,
// leaves). Readers under a
// session_id or user shard's lock read only a record's immutable fields
// (hash, session_id, user_id) and, under the user shard's lock, the user
// links; everything else is read under the record's own (token) shard lock.
// A record is unlinked from every index before it is freed.
class SessionTable {
 public:
  explicit SessionTable(const SessionTableOptions& options = {});
  ~SessionTable();

  SessionTable(const SessionTable&) = delete;
  SessionTable& operator=(const SessionTable&) = delete;

  // ---- Reads: any thread. -------------------------------------------------

  // The outcome of presenting a token whose hash is `hash` at `now_ms`, and
  // the record when kValid. Revoked wins over expired.
  ValidateResult Validate(const TokenHash& hash, int64_t now_ms,
                          int64_t leeway_ms) const;
  // Same, filling `*session` (when kValid) in place, e.g. a response's
  // mutable_session(), to avoid a copy on the hot path.
  ValidateOutcome Validate(const TokenHash& hash, int64_t now_ms,
                           int64_t leeway_ms,
                           sessiond::v1::Session* session) const;
  // Same, with the idle timeout judged at `idle_now_ms` (IsExpired above).
  ValidateOutcome Validate(const TokenHash& hash, int64_t now_ms,
                           int64_t idle_now_ms, int64_t leeway_ms,
                           sessiond::v1::Session* session) const;

  // The record, whatever its state or expiry; nullopt when absent.
  std::optional<sessiond::v1::Session> Get(const TokenHash& hash) const;
  std::optional<sessiond::v1::Session> GetBySessionId(
      std::string_view session_id) const;
  // The token hash of a session_id (for revoking by session_id).
  std::optional<TokenHash> TokenHashOf(std::string_view session_id) const;
  bool Contains(const TokenHash& hash) const;

  // A page of `user_id`'s sessions with session_id > after_session_id,
  // ordered by session_id, at most page_size (0 is treated as 1). Sessions
  // expired at now_ms (with leeway) are left out; revoked ones only with
  // include_revoked.
  ListUserPage ListUser(std::string_view user_id, size_t page_size,
                        std::string_view after_session_id, bool include_revoked,
                        int64_t now_ms, int64_t leeway_ms) const;
  // Same, with idle timeouts judged at `idle_now_ms` (IsExpired above).
  ListUserPage ListUser(std::string_view user_id, size_t page_size,
                        std::string_view after_session_id, bool include_revoked,
                        int64_t now_ms, int64_t idle_now_ms,
                        int64_t leeway_ms) const;

  // The token hashes of all sessions of `user_id` (any state).
  std::vector<TokenHash> UserTokenHashes(std::string_view user_id) const;

  // Up to `max` sessions expired at now_ms (with leeway), earliest deadline
  // first within a shard: the sweeper proposes an ExpireCommand with them.
  std::vector<TokenHash> CollectExpired(int64_t now_ms, int64_t leeway_ms,
                                        size_t max) const;
  // The same, with each session's creation time and expiry instant. Shards
  // are visited from `first_shard` on (modulo num_shards(), wrapping): a
  // caller whose `max` is often reached moves it on, so that no shard's
  // sessions always wait behind the other shards'.
  std::vector<ExpiredSession> CollectExpiredSessions(
      int64_t now_ms, int64_t leeway_ms, size_t max,
      size_t first_shard = 0) const;
  // Calls `fn` for every session expired at now_ms (with leeway), however
  // many, shard by shard under each shard's shared lock, without a copy:
  // the expiry breaker counts what is about to expire with it. `fn` must not
  // call back into the table.
  void ForEachExpiredSession(
      int64_t now_ms, int64_t leeway_ms,
      const std::function<void(const ExpiredSession&)>& fn) const;

  size_t size() const { return size_.load(std::memory_order_relaxed); }

  // Where the table's memory goes (for metrics and the benchmark).
  struct MemoryUsage {
    size_t arena_bytes = 0;       // records and attribute bytes
    size_t hash_index_bytes = 0;  // the three hash sets' slot arrays
    size_t expiry_entries = 0;    // entries in the expiry btrees
    size_t hold_index_bytes = 0;  // the shards' maps of held sessions
  };
  MemoryUsage memory_usage() const;
  size_t num_shards() const { return num_shards_; }

  // The StoredSession wire bytes for `hash` (the `sessions` CF value), built
  // from the compact record; nullopt when absent.
  std::optional<std::string> SerializeStored(const TokenHash& hash) const;

  // Calls `fn(hash, stored_session_bytes)` for every session, shard by
  // shard under each shard's shared lock (for snapshots). `fn` must not call
  // back into the table.
  void ForEachStored(
      const std::function<void(const TokenHash&, std::string_view)>& fn) const;

  // Calls `fn` for every session, shard by shard under each shard's shared
  // lock, without building a protobuf object (bulk revocations scan with
  // it). `fn` must not call back into the table but for HoldContains.
  void ForEachSession(const std::function<void(const SessionView&)>& fn) const;
  // Whether SessionView::hold `hold` lists revocation `id`.
  bool HoldContains(uint32_t hold, uint64_t id) const;
  // Whether the session with this token hash is held by revocation `id`.
  bool IsHeldBy(const TokenHash& hash, uint64_t id) const;

  // ---- Writes: one writer thread (the apply thread). -----------------------

  // Adds a session. AlreadyExists when the token hash or the session_id is
  // already present; InvalidArgument when session_id is empty or longer
  // than 255 bytes, or user_id is empty or longer than 65535 bytes.
  // The version is kept in 32 bits (a larger one is stored as 2^32 - 1).
  absl::Status Insert(const TokenHash& hash,
                      const sessiond::v1::Session& session);
  // Adds a session from StoredSession wire bytes (recovery), without
  // building a protobuf object. DataLoss when the bytes do not parse;
  // AlreadyExists as Insert.
  absl::Status InsertStored(std::string_view stored_session_bytes);
  // Replaces a session's record, in place, by StoredSession wire bytes
  // (a snapshot install), fields a later version added kept verbatim as
  // InsertStored keeps them. DataLoss when the bytes do not parse; NotFound
  // and InvalidArgument as Replace.
  absl::Status ReplaceStored(std::string_view stored_session_bytes);
  // OK when InsertStored and ReplaceStored would read these bytes (DataLoss
  // as they would refuse them), without adding anything: a snapshot's
  // records are checked with the reader that loads them, not protobuf's,
  // which takes more (a known field of another wire type, as an unknown
  // one): an image that passed its check then failed to load after the log
  // was dropped, and at every restart.
  static absl::Status CheckStored(std::string_view stored_session_bytes);
  // Replaces a session's record. NotFound when absent; InvalidArgument when
  // session_id or user_id differ from the stored ones (they are immutable).
  absl::Status Replace(const TokenHash& hash,
                       const sessiond::v1::Session& session);
  // Moves last_seen_at forward to `seen_at_ms` (never back). Returns false
  // when absent.
  bool SetLastSeen(const TokenHash& hash, int64_t seen_at_ms);
  // Moves a session to a new token hash (token rotation), whole: every
  // field, its revocations and its place in the per-user and session_id
  // indexes are kept. A reader sees the session under one hash or the
  // other, never under neither: ListUser never skips it, and the session_id
  // index names the new hash before the old one stops resolving.
  // NotFound when old_hash is absent; AlreadyExists when new_hash is
  // present. Either way nothing changes.
  absl::Status Rekey(const TokenHash& old_hash, const TokenHash& new_hash);
  // Removes a session. Returns false when absent.
  bool Erase(const TokenHash& hash);
  // Bulk revocations, without building a protobuf object. AddHold appends
  // `id` to the session's revoked_by and makes it REVOKED; false when absent
  // or already held by `id`. RemoveHold takes `id` out again; with no
  // revocation left the session is ACTIVE again (expired or not at now_ms,
  // with leeway). `held_ms`: the idle time to give back, added to
  // last_seen_at of a session with an idle timeout (never past
  // `given_back_until_ms`, now_ms when not given): the caller knows since
  // when it was held (storage/session_state_machine_revocations.cc).
  bool AddHold(const TokenHash& hash, uint64_t id);
  enum class HoldRelease { kNotHeld, kStillHeld, kActive, kActiveButExpired };
  HoldRelease RemoveHold(
      const TokenHash& hash, uint64_t id, int64_t now_ms, int64_t leeway_ms,
      int64_t held_ms = 0,
      std::optional<int64_t> given_back_until_ms = std::nullopt);
  // The ids of the revocations holding the session (empty: none, or no
  // such session).
  std::vector<uint64_t> HoldIdsOf(const TokenHash& hash) const;
  // Removes every session.
  void Clear();
  // Sizes the indexes for about `sessions` sessions (recovery calls it with
  // RocksDB's key-count estimate, so loading does not rehash).
  void Reserve(size_t sessions);

  // Recovery: loads many StoredSessions fast. StartLoad(n) prepares n
  // loader slots; LoadStored(slot, bytes) may then be called concurrently
  // from n threads, one per slot (it parses and allocates only);
  // FinishLoad() builds all indexes, on two threads, the expiry btrees in
  // one sorted pass (faster, and full nodes: smaller).
  // REQUIRES: the table is empty and nothing else uses it until FinishLoad
  // returns. LoadStored: DataLoss on bytes that do not parse. FinishLoad:
  // AlreadyExists on a duplicate token hash or session_id, and the table is
  // left empty.
  void StartLoad(int slots);
  absl::Status LoadStored(int slot, std::string_view stored_session_bytes);
  // (No lock analysis: it builds the indexes without shard locks, see .cc.)
  absl::Status FinishLoad() ABSL_NO_THREAD_SAFETY_ANALYSIS;

 private:
  using Ref = uint32_t;  // SlabArena::Ref: a record or attribute block
  struct Record;
  struct Shard;

  Record* Rec(Ref ref) const;
  SlabArena& ArenaOfRef(Ref ref) const;
  // The arena new blocks of the session with this token hash come from.
  SlabArena& ArenaOf(const TokenHash& hash) const;
  Shard& ShardOf(const TokenHash& hash) const;
  Shard& ShardOfKey(std::string_view key) const;
  // Calls `fn` for the sessions expired at now_ms of one shard, earliest
  // deadline first, while it returns true; false once `fn` stopped it.
  bool VisitExpired(Shard& shard, int64_t now_ms, int64_t leeway_ms,
                    const std::function<bool(const ExpiredSession&)>& fn) const;
  Ref NewRecord(SlabArena& arena, const TokenHash& hash,
                std::string_view session_id, std::string_view user_id);
  void DeleteRecord(Ref ref);
  // A record's revoked_by list (0: none), and setting it (releasing the old
  // one). REQUIRES: the record's token shard lock (held in shared mode for
  // HoldOf). Not checked by the analysis: the shard is the record's.
  HoldRegistry::Index HoldOf(Ref ref) const ABSL_NO_THREAD_SAFETY_ANALYSIS;
  void SetHoldOf(Ref ref,
                 HoldRegistry::Index hold) ABSL_NO_THREAD_SAFETY_ANALYSIS;
  // SetHoldOf from session.revoked_by().
  void SetHold(Ref ref, const sessiond::v1::Session& session);
  // `*hold`: the record's revoked_by list, acquired (the caller places it).
  struct DecodedStored;
  // The bytes' fields as ParseStored reads them; DataLoss when they do not
  // parse. `out`'s views point into `bytes`.
  static absl::Status DecodeStored(std::string_view bytes, DecodedStored* out);
  absl::StatusOr<Ref> ParseStored(std::string_view bytes, SlabArena& arena,
                                  HoldRegistry::Index* hold);
  // Links a parsed record into every index; `hold` (its revoked_by list,
  // acquired; 0: none) is placed as it becomes reachable by token hash. On
  // error the record is freed and the hold is still the caller's.
  absl::Status InsertRecord(Ref ref, HoldRegistry::Index hold);
  // Links a record into its user's list (under the user shard's lock).
  void LinkUser(Ref ref);
  // REQUIRES: shard.mu held, or FinishLoad running.
  void LinkUserLocked(Shard& shard, Ref ref) ABSL_NO_THREAD_SAFETY_ANALYSIS;

  const size_t num_shards_;
  // Records and their attribute bytes (storage/arena.h); a reference's bit
  // 31 says which arena. Two, so two loader threads rarely contend.
  std::unique_ptr<SlabArena> arenas_[2];
  std::unique_ptr<Shard[]> shards_;
  // The revoked_by lists records refer to.
  HoldRegistry holds_;
  std::atomic<size_t> size_{0};
  // StartLoad .. FinishLoad: the loaded records, per loader slot, and the
  // revoked_by lists of those that have one.
  std::vector<std::vector<Ref>> bulk_refs_;
  std::vector<std::vector<std::pair<Ref, HoldRegistry::Index>>> bulk_holds_;
};

}  // namespace sessiond::storage

#endif  // SESSIOND_STORAGE_SESSION_TABLE_H_
