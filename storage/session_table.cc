// Copyright sessiond authors. Licensed under the Apache License 2.0.
#include "storage/session_table.h"

#include <algorithm>
#include <cstring>
#include <functional>
#include <limits>
#include <new>
#include <thread>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/container/btree_set.h"
#include "absl/container/flat_hash_set.h"
#include "absl/hash/hash.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "common/status_macros.h"
#include "storage/arena.h"
#include "storage/wire.h"

namespace sessiond::storage {

using sessiond::v1::Session;

namespace {

// Field numbers of sessiond.v1.Session and StoredSession (the protos are the
// source of truth; session_table_test checks these against them).
constexpr uint32_t kSessionId = 1;
constexpr uint32_t kUserId = 2;
constexpr uint32_t kCreatedAt = 3;
constexpr uint32_t kExpiresAt = 4;
constexpr uint32_t kIdleTimeout = 5;
constexpr uint32_t kLastSeenAt = 6;
constexpr uint32_t kAttributes = 7;
constexpr uint32_t kVersion = 8;
constexpr uint32_t kState = 9;
constexpr uint32_t kRevokeReason = 10;
constexpr uint32_t kRevokedAt = 11;
constexpr uint32_t kClient = 12;
constexpr uint32_t kRevokedBy = 13;
constexpr uint32_t kSigningKid = 14;
constexpr uint32_t kStoredTokenHash = 1;
constexpr uint32_t kStoredSession = 2;

constexpr size_t kMaxSessionIdLength = std::numeric_limits<uint8_t>::max();
constexpr size_t kMaxUserIdLength = std::numeric_limits<uint16_t>::max();

int64_t SaturatingAdd(int64_t a, int64_t b) {
  int64_t out;
  if (__builtin_add_overflow(a, b, &out)) {
    return b > 0 ? std::numeric_limits<int64_t>::max()
                 : std::numeric_limits<int64_t>::min();
  }
  return out;
}

size_t StringHash(std::string_view s) {
  // absl's own string hash (absl::string_view is not std::string_view in
  // Debian's build; hashing std::string_view would go through std::hash).
  return absl::Hash<absl::string_view>()(absl::string_view(s.data(), s.size()));
}

// The wire bytes of the Session fields kept in a record's `extra`:
// attributes (sorted by key, so equal sessions encode equally), revoke
// reason and time, client metadata. (revoked_by is interned: HoldRegistry.)
std::string EncodeExtra(const Session& session) {
  std::string out;
  if (!session.attributes().empty()) {
    std::vector<const google::protobuf::MapPair<std::string, std::string>*>
        items;
    items.reserve(session.attributes().size());
    for (const auto& item : session.attributes()) items.push_back(&item);
    std::sort(items.begin(), items.end(),
              [](const auto* a, const auto* b) { return a->first < b->first; });
    for (const auto* item : items) {
      const size_t entry_size =
          1 + wire::VarintSize(item->first.size()) + item->first.size() + 1 +
          wire::VarintSize(item->second.size()) + item->second.size();
      wire::PutTag(&out, kAttributes, wire::kLengthDelimited);
      wire::PutVarint(&out, entry_size);
      wire::PutBytesField(&out, 1, item->first);
      wire::PutBytesField(&out, 2, item->second);
    }
  }
  if (!session.revoke_reason().empty()) {
    wire::PutBytesField(&out, kRevokeReason, session.revoke_reason());
  }
  if (session.revoked_at_ms() != 0) {
    wire::PutVarintField(&out, kRevokedAt,
                         static_cast<uint64_t>(session.revoked_at_ms()));
  }
  if (session.has_client()) {
    wire::PutBytesField(&out, kClient, session.client().SerializeAsString());
  }
  if (!session.signing_kid().empty()) {
    wire::PutBytesField(&out, kSigningKid, session.signing_kid());
  }
  return out;
}

// revoked_by as StoredSession bytes: one packed field.
void PutRevokedBy(std::string* out, const std::vector<uint64_t>& ids) {
  if (ids.empty()) return;
  std::string packed;
  for (uint64_t id : ids) wire::PutVarint(&packed, id);
  wire::PutBytesField(out, kRevokedBy, packed);
}

// Appends a revoked_by field (packed, or one unpacked id) to `ids`. False
// when malformed.
bool GetRevokedBy(const wire::Field& field, std::vector<uint64_t>* ids) {
  if (field.type == wire::kVarint) {
    ids->push_back(field.varint);
    return true;
  }
  if (field.type != wire::kLengthDelimited) return false;
  std::string_view packed = field.payload;
  while (!packed.empty()) {
    uint64_t id;
    if (!wire::GetVarint(&packed, &id)) return false;
    ids->push_back(id);
  }
  return true;
}

}  // namespace

const char* ValidateOutcomeName(ValidateOutcome outcome) {
  switch (outcome) {
    case ValidateOutcome::kValid:
      return "VALID";
    case ValidateOutcome::kExpired:
      return "EXPIRED";
    case ValidateOutcome::kRevoked:
      return "REVOKED";
    case ValidateOutcome::kUnknown:
      return "UNKNOWN";
  }
  return "?";
}

int64_t SessionDeadlineMs(int64_t expires_at_ms, int64_t idle_timeout_ms,
                          int64_t last_seen_at_ms) {
  if (idle_timeout_ms > 0) {
    return std::min(expires_at_ms,
                    SaturatingAdd(last_seen_at_ms, idle_timeout_ms));
  }
  return expires_at_ms;
}

bool IsExpired(int64_t expires_at_ms, int64_t idle_timeout_ms,
               int64_t last_seen_at_ms, int64_t now_ms, int64_t leeway_ms) {
  return IsExpired(expires_at_ms, idle_timeout_ms, last_seen_at_ms, now_ms,
                   now_ms, leeway_ms);
}

bool IsExpired(int64_t expires_at_ms, int64_t idle_timeout_ms,
               int64_t last_seen_at_ms, int64_t now_ms, int64_t idle_now_ms,
               int64_t leeway_ms) {
  if (now_ms >= SaturatingAdd(expires_at_ms, leeway_ms)) return true;
  return idle_timeout_ms > 0 &&
         idle_now_ms >=
             SaturatingAdd(SaturatingAdd(last_seen_at_ms, idle_timeout_ms),
                           leeway_ms);
}

bool IsExpired(const Session& session, int64_t now_ms, int64_t leeway_ms) {
  return IsExpired(session, now_ms, now_ms, leeway_ms);
}

bool IsExpired(const Session& session, int64_t now_ms, int64_t idle_now_ms,
               int64_t leeway_ms) {
  return IsExpired(session.expires_at_ms(),
                   IdleTimeoutWhile(session.revoked_by_size() > 0,
                                    session.idle_timeout_ms()),
                   session.last_seen_at_ms(), now_ms, idle_now_ms, leeway_ms);
}

bool IsExpired(const SessionView& session, int64_t now_ms, int64_t leeway_ms) {
  return IsExpired(session.expires_at_ms,
                   IdleTimeoutWhile(session.hold != 0, session.idle_timeout_ms),
                   session.last_seen_at_ms, now_ms, leeway_ms);
}

// One session, in one arena block: the fixed part, then session_id and
// user_id bytes. Fields are guarded as noted; "immutable" ones may be read
// by anyone who knows the record is alive (it is reachable from an index
// whose lock they hold: records are unlinked from every index before they
// are freed). All references are SlabArena::Ref (4 bytes).
struct SessionTable::Record {
  TokenHash hash;           // immutable
  int64_t created_at_ms;    // immutable
  int64_t expires_at_ms;    // guarded by the token shard's mutex
  int64_t idle_timeout_ms;  // guarded by the token shard's mutex
  int64_t last_seen_at_ms;  // guarded by the token shard's mutex
  // Wire bytes of attributes, client, revoke reason and time (EncodeExtra);
  // 0 when empty. Guarded by the token shard's mutex.
  Ref extra;
  uint32_t extra_size;  // guarded by the token shard's mutex
  Ref user_prev;        // guarded by the user shard's mutex
  Ref user_next;        // guarded by the user shard's mutex
  // Separate memory locations: readers of the immutable lengths never race
  // with the writer of version and state.
  uint32_t version_;  // guarded by the token shard's mutex
  // Bit 0: revoked. Bits 1-7: the session's HoldRegistry index when it is
  // at most kMaxInlineHold (0: none, or in the shard's `holds` map), so a
  // held session costs nothing more than a live one while fewer than 128
  // revoked_by lists are in use. Guarded by the token shard's mutex.
  uint8_t state_;
  uint8_t sid_len;   // immutable
  uint16_t uid_len;  // immutable

  static constexpr HoldRegistry::Index kMaxInlineHold = 127;

  const char* ids() const { return reinterpret_cast<const char*>(this + 1); }
  char* ids() { return reinterpret_cast<char*>(this + 1); }
  std::string_view session_id() const {
    return std::string_view(ids(), sid_len);
  }
  std::string_view user_id() const {
    return std::string_view(ids() + sid_len, uid_len);
  }
  uint64_t version() const { return version_; }
  bool revoked() const { return (state_ & 1) != 0; }
  void SetVersionAndState(uint64_t version, bool revoked) {
    version_ = static_cast<uint32_t>(
        std::min<uint64_t>(version, std::numeric_limits<uint32_t>::max()));
    state_ = static_cast<uint8_t>((state_ & ~1u) | (revoked ? 1u : 0u));
  }
  HoldRegistry::Index inline_hold() const { return state_ >> 1; }
  // REQUIRES: hold <= kMaxInlineHold.
  void set_inline_hold(HoldRegistry::Index hold) {
    state_ = static_cast<uint8_t>((state_ & 1u) | (hold << 1));
  }
  int64_t deadline() const {
    return SessionDeadlineMs(expires_at_ms, idle_timeout_ms, last_seen_at_ms);
  }
  size_t block_size() const { return sizeof(Record) + sid_len + uid_len; }

  std::string_view extra_bytes(const SessionTable& table) const {
    if (extra == 0) return {};
    return std::string_view(table.ArenaOfRef(extra).Deref(extra), extra_size);
  }
  void FreeExtra(const SessionTable& table) {
    if (extra != 0) table.ArenaOfRef(extra).Free(extra, extra_size);
    extra = 0;
    extra_size = 0;
  }
  void SetExtra(const SessionTable& table, SlabArena& arena,
                std::string_view bytes) {
    FreeExtra(table);
    if (bytes.empty()) return;
    extra = arena.Allocate(bytes.size());
    extra_size = static_cast<uint32_t>(bytes.size());
    std::memcpy(arena.Deref(extra), bytes.data(), bytes.size());
  }

  void SetFixed(const Session& s) {
    expires_at_ms = s.expires_at_ms();
    idle_timeout_ms = s.idle_timeout_ms();
    last_seen_at_ms = s.last_seen_at_ms();
    SetVersionAndState(s.version(), s.state() == v1::SESSION_STATE_REVOKED);
  }

  // Fills `*out` with the record. Caller holds the token shard's mutex.
  void Decode(const SessionTable& table, Session* out,
              HoldRegistry::Index hold) const {
    const std::string_view extra = extra_bytes(table);
    if (extra.empty()) {
      out->Clear();
    } else {
      // The bytes were produced by EncodeExtra or copied from a parsed
      // StoredSession: they parse.
      out->ParseFromArray(extra.data(), static_cast<int>(extra.size()));
    }
    out->set_session_id(session_id().data(), session_id().size());
    out->set_user_id(user_id().data(), user_id().size());
    out->set_created_at_ms(created_at_ms);
    out->set_expires_at_ms(expires_at_ms);
    out->set_idle_timeout_ms(idle_timeout_ms);
    out->set_last_seen_at_ms(last_seen_at_ms);
    out->set_version(version());
    out->set_state(revoked() ? v1::SESSION_STATE_REVOKED
                             : v1::SESSION_STATE_ACTIVE);
    for (uint64_t id : table.holds_.Ids(hold)) {
      out->add_revoked_by(id);
    }
  }

  // The StoredSession wire bytes. Caller holds the token shard's mutex.
  std::string EncodeStored(const SessionTable& table,
                           HoldRegistry::Index hold) const {
    std::string session;
    const std::string_view extra = extra_bytes(table);
    session.reserve(64 + sid_len + uid_len + extra.size());
    wire::PutBytesField(&session, kSessionId, session_id());
    wire::PutBytesField(&session, kUserId, user_id());
    auto put = [&session](uint32_t field, int64_t value) {
      if (value != 0) {
        wire::PutVarintField(&session, field, static_cast<uint64_t>(value));
      }
    };
    put(kCreatedAt, created_at_ms);
    put(kExpiresAt, expires_at_ms);
    put(kIdleTimeout, idle_timeout_ms);
    put(kLastSeenAt, last_seen_at_ms);
    put(kVersion, static_cast<int64_t>(version()));
    put(kState,
        revoked() ? v1::SESSION_STATE_REVOKED : v1::SESSION_STATE_ACTIVE);
    session.append(extra);
    PutRevokedBy(&session, table.holds_.Ids(hold));
    std::string out;
    out.reserve(40 + session.size());
    wire::PutBytesField(&out, kStoredTokenHash, TokenHashBytes(hash));
    wire::PutBytesField(&out, kStoredSession, session);
    return out;
  }
};

namespace {

// Expiry index key: the deadline in whole seconds (clamped to 32 bits:
// 1970-2106) above the record's reference. Ordered by deadline; exact
// deadlines are checked on the record.
uint64_t ExpiryKey(int64_t deadline_ms, uint32_t ref) {
  const int64_t seconds = std::clamp<int64_t>(
      deadline_ms / 1000, 0, std::numeric_limits<uint32_t>::max());
  return (static_cast<uint64_t>(seconds) << 32) | ref;
}

}  // namespace

struct SessionTable::Shard {
  // Hash and equality of the sets: they hold references and are looked up
  // by key (token hash, session_id, user_id) without building a record.
  struct ByToken {
    using is_transparent = void;
    const SessionTable* t = nullptr;
    size_t operator()(Ref r) const {
      return TokenHashHasher()(t->Rec(r)->hash);
    }
    size_t operator()(const TokenHash& h) const { return TokenHashHasher()(h); }
    bool operator()(Ref a, Ref b) const {
      return t->Rec(a)->hash == t->Rec(b)->hash;
    }
    bool operator()(Ref a, const TokenHash& b) const {
      return t->Rec(a)->hash == b;
    }
    bool operator()(const TokenHash& a, Ref b) const {
      return a == t->Rec(b)->hash;
    }
  };
  struct BySessionId {
    using is_transparent = void;
    const SessionTable* t = nullptr;
    size_t operator()(Ref r) const {
      return StringHash(t->Rec(r)->session_id());
    }
    size_t operator()(std::string_view s) const { return StringHash(s); }
    bool operator()(Ref a, Ref b) const {
      return t->Rec(a)->session_id() == t->Rec(b)->session_id();
    }
    bool operator()(Ref a, std::string_view b) const {
      return t->Rec(a)->session_id() == b;
    }
    bool operator()(std::string_view a, Ref b) const {
      return a == t->Rec(b)->session_id();
    }
  };
  struct ByUserId {
    using is_transparent = void;
    const SessionTable* t = nullptr;
    size_t operator()(Ref r) const { return StringHash(t->Rec(r)->user_id()); }
    size_t operator()(std::string_view s) const { return StringHash(s); }
    bool operator()(Ref a, Ref b) const {
      return t->Rec(a)->user_id() == t->Rec(b)->user_id();
    }
    bool operator()(Ref a, std::string_view b) const {
      return t->Rec(a)->user_id() == b;
    }
    bool operator()(std::string_view a, Ref b) const {
      return a == t->Rec(b)->user_id();
    }
  };
  using TokenSet = absl::flat_hash_set<Ref, ByToken, ByToken>;
  using SessionIdSet = absl::flat_hash_set<Ref, BySessionId, BySessionId>;
  using UserSet = absl::flat_hash_set<Ref, ByUserId, ByUserId>;

  // Empties the indexes (releasing their memory).
  void ResetIndexes(const SessionTable* t) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    TokenSet(0, ByToken{t}, ByToken{t}).swap(by_token);
    SessionIdSet(0, BySessionId{t}, BySessionId{t}).swap(by_session_id);
    UserSet(0, ByUserId{t}, ByUserId{t}).swap(user_heads);
    expiry.clear();
    holds.clear();
  }

  alignas(64) mutable absl::Mutex mu;
  // Records whose token hash maps to this shard (owned by the table).
  TokenSet by_token ABSL_GUARDED_BY(mu);
  // ExpiryKey()s of the records in by_token.
  absl::btree_set<uint64_t> expiry ABSL_GUARDED_BY(mu);
  // The revoked_by lists (HoldRegistry indexes) of the records in by_token
  // that bulk revocations hold: only those pay for an entry.
  absl::flat_hash_map<Ref, HoldRegistry::Index> holds ABSL_GUARDED_BY(mu);
  // Records whose session_id maps to this shard (they may live in another
  // shard's by_token).
  SessionIdSet by_session_id ABSL_GUARDED_BY(mu);
  // The first record of each user whose user_id maps to this shard; the
  // rest follow through user_next. The links are guarded by this mutex.
  UserSet user_heads ABSL_GUARDED_BY(mu);
};

SessionTable::SessionTable(const SessionTableOptions& options)
    : num_shards_(std::max<size_t>(1, options.num_shards)),
      shards_(new Shard[num_shards_]) {
  static_assert(sizeof(Record) == 88,
                "the record's fixed part is part of the memory budget");
  arenas_[0] = std::make_unique<SlabArena>(0);
  arenas_[1] = std::make_unique<SlabArena>(1);
  for (size_t i = 0; i < num_shards_; ++i) {
    absl::MutexLock lock(&shards_[i].mu);
    shards_[i].ResetIndexes(this);
  }
}

SessionTable::~SessionTable() = default;

SessionTable::Record* SessionTable::Rec(Ref ref) const {
  return reinterpret_cast<Record*>(ArenaOfRef(ref).Deref(ref));
}

SlabArena& SessionTable::ArenaOfRef(Ref ref) const {
  return *arenas_[ref >> 31];
}

SessionTable::Shard& SessionTable::ShardOf(const TokenHash& hash) const {
  // Bytes 0-7 pick the shard; the sets hash bytes 8-15 (TokenHashHasher).
  uint64_t h;
  std::memcpy(&h, hash.data(), sizeof(h));
  return shards_[h % num_shards_];
}

SlabArena& SessionTable::ArenaOf(const TokenHash& hash) const {
  // Byte 16: independent of the shard, so loader threads working on
  // different key ranges spread over both arenas.
  return *arenas_[hash[16] & 1];
}

SessionTable::Shard& SessionTable::ShardOfKey(std::string_view key) const {
  // The sets use the low bits of the same hash (absl splits it into H1 and
  // H2); pick the shard from the high bits so keys in a shard still differ
  // there.
  return shards_[(StringHash(key) >> 32) % num_shards_];
}

ValidateOutcome SessionTable::Validate(const TokenHash& hash, int64_t now_ms,
                                       int64_t leeway_ms,
                                       Session* session) const {
  return Validate(hash, now_ms, now_ms, leeway_ms, session);
}

ValidateOutcome SessionTable::Validate(const TokenHash& hash, int64_t now_ms,
                                       int64_t idle_now_ms, int64_t leeway_ms,
                                       Session* session) const {
  Shard& shard = ShardOf(hash);
  absl::ReaderMutexLock lock(&shard.mu);
  auto it = shard.by_token.find(hash);
  if (it == shard.by_token.end()) return ValidateOutcome::kUnknown;
  const Record* r = Rec(*it);
  if (r->revoked()) return ValidateOutcome::kRevoked;
  if (IsExpired(r->expires_at_ms, r->idle_timeout_ms, r->last_seen_at_ms,
                now_ms, idle_now_ms, leeway_ms)) {
    return ValidateOutcome::kExpired;
  }
  if (session != nullptr) r->Decode(*this, session, /*hold=*/0);
  return ValidateOutcome::kValid;
}

ValidateResult SessionTable::Validate(const TokenHash& hash, int64_t now_ms,
                                      int64_t leeway_ms) const {
  ValidateResult result;
  result.outcome = Validate(hash, now_ms, leeway_ms, &result.session);
  return result;
}

std::optional<Session> SessionTable::Get(const TokenHash& hash) const {
  Shard& shard = ShardOf(hash);
  absl::ReaderMutexLock lock(&shard.mu);
  auto it = shard.by_token.find(hash);
  if (it == shard.by_token.end()) return std::nullopt;
  Session session;
  Rec(*it)->Decode(*this, &session, HoldOf(*it));
  return session;
}

bool SessionTable::Contains(const TokenHash& hash) const {
  Shard& shard = ShardOf(hash);
  absl::ReaderMutexLock lock(&shard.mu);
  return shard.by_token.contains(hash);
}

std::optional<TokenHash> SessionTable::TokenHashOf(
    std::string_view session_id) const {
  Shard& shard = ShardOfKey(session_id);
  absl::ReaderMutexLock lock(&shard.mu);
  auto it = shard.by_session_id.find(session_id);
  if (it == shard.by_session_id.end()) return std::nullopt;
  return Rec(*it)->hash;
}

std::optional<Session> SessionTable::GetBySessionId(
    std::string_view session_id) const {
  std::optional<TokenHash> hash = TokenHashOf(session_id);
  while (hash) {
    std::optional<Session> session = Get(*hash);
    if (session) return session;
    // Gone under this hash: erased, or rekeyed since, in which case the
    // session_id index already names the new hash (see Rekey).
    std::optional<TokenHash> now = TokenHashOf(session_id);
    if (now == hash) return std::nullopt;
    hash = now;
  }
  return std::nullopt;
}

std::vector<TokenHash> SessionTable::UserTokenHashes(
    std::string_view user_id) const {
  std::vector<TokenHash> out;
  Shard& shard = ShardOfKey(user_id);
  absl::ReaderMutexLock lock(&shard.mu);
  auto it = shard.user_heads.find(user_id);
  if (it == shard.user_heads.end()) return out;
  for (Ref ref = *it; ref != 0; ref = Rec(ref)->user_next) {
    out.push_back(Rec(ref)->hash);
  }
  return out;
}

ListUserPage SessionTable::ListUser(std::string_view user_id, size_t page_size,
                                    std::string_view after_session_id,
                                    bool include_revoked, int64_t now_ms,
                                    int64_t leeway_ms) const {
  return ListUser(user_id, page_size, after_session_id, include_revoked, now_ms,
                  now_ms, leeway_ms);
}

ListUserPage SessionTable::ListUser(std::string_view user_id, size_t page_size,
                                    std::string_view after_session_id,
                                    bool include_revoked, int64_t now_ms,
                                    int64_t idle_now_ms,
                                    int64_t leeway_ms) const {
  page_size = std::max<size_t>(page_size, 1);
  // Under the user's shard lock, only immutable fields are read (session_id,
  // hash); state and contents are read afterwards under each record's own
  // shard lock.
  std::vector<std::pair<std::string, TokenHash>> candidates;
  {
    Shard& shard = ShardOfKey(user_id);
    absl::ReaderMutexLock lock(&shard.mu);
    auto it = shard.user_heads.find(user_id);
    if (it != shard.user_heads.end()) {
      for (Ref ref = *it; ref != 0; ref = Rec(ref)->user_next) {
        const Record* r = Rec(ref);
        if (r->session_id() > after_session_id) {
          candidates.emplace_back(std::string(r->session_id()), r->hash);
        }
      }
    }
  }
  std::sort(candidates.begin(), candidates.end(),
            [](const auto& a, const auto& b) { return a.first < b.first; });
  ListUserPage page;
  for (const auto& [session_id, hash] : candidates) {
    std::optional<Session> session = Get(hash);
    // Not under this hash any more: rekeyed (found by its session_id) or
    // removed since.
    if (!session) session = GetBySessionId(session_id);
    if (!session || session->user_id() != user_id) continue;
    if (session->state() == v1::SESSION_STATE_REVOKED && !include_revoked) {
      continue;
    }
    if (IsExpired(*session, now_ms, idle_now_ms, leeway_ms)) {
      continue;
    }
    if (page.sessions.size() == page_size) {
      // One more qualifies: there is a next page.
      page.next_after_session_id = page.sessions.back().session_id();
      break;
    }
    page.sessions.push_back(*std::move(session));
  }
  return page;
}

std::string_view SigningKidOf(const SessionView& session) {
  std::string_view extra = session.extra;
  wire::Field field;
  while (!extra.empty() && wire::NextField(&extra, &field)) {
    if (field.number == kSigningKid && field.type == wire::kLengthDelimited) {
      return field.payload;
    }
  }
  return {};
}

std::vector<TokenHash> SessionTable::CollectExpired(int64_t now_ms,
                                                    int64_t leeway_ms,
                                                    size_t max) const {
  std::vector<TokenHash> out;
  for (const ExpiredSession& expired :
       CollectExpiredSessions(now_ms, leeway_ms, max)) {
    out.push_back(expired.hash);
  }
  return out;
}

bool SessionTable::VisitExpired(
    Shard& shard, int64_t now_ms, int64_t leeway_ms,
    const std::function<bool(const ExpiredSession&)>& fn) const {
  absl::ReaderMutexLock lock(&shard.mu);
  for (uint64_t key : shard.expiry) {
    // Keys are whole seconds, at or before the exact deadline: past this
    // one nothing is expired.
    const int64_t second_ms = static_cast<int64_t>(key >> 32) * 1000;
    if (now_ms < SaturatingAdd(second_ms, leeway_ms)) break;
    const Ref ref = static_cast<Ref>(key);
    const Record* r = Rec(ref);
    // Keyed by its idle deadline even while held; held, only its absolute
    // expiry counts (IdleTimeoutWhile).
    const int64_t expires_at = SaturatingAdd(
        SessionDeadlineMs(
            r->expires_at_ms,
            IdleTimeoutWhile(HoldOf(ref) != 0, r->idle_timeout_ms),
            r->last_seen_at_ms),
        leeway_ms);
    if (now_ms >= expires_at &&
        !fn(ExpiredSession{r->hash, r->created_at_ms, expires_at,
                           r->last_seen_at_ms})) {
      return false;
    }
  }
  return true;
}

std::vector<ExpiredSession> SessionTable::CollectExpiredSessions(
    int64_t now_ms, int64_t leeway_ms, size_t max, size_t first_shard) const {
  std::vector<ExpiredSession> out;
  if (max == 0) return out;
  for (size_t i = 0; i < num_shards_; ++i) {
    if (!VisitExpired(shards_[(first_shard + i) % num_shards_], now_ms,
                      leeway_ms, [&](const ExpiredSession& expired) {
                        out.push_back(expired);
                        return out.size() < max;
                      })) {
      break;
    }
  }
  return out;
}

void SessionTable::ForEachExpiredSession(
    int64_t now_ms, int64_t leeway_ms,
    const std::function<void(const ExpiredSession&)>& fn) const {
  for (size_t i = 0; i < num_shards_; ++i) {
    VisitExpired(shards_[i], now_ms, leeway_ms,
                 [&](const ExpiredSession& expired) {
                   fn(expired);
                   return true;
                 });
  }
}

std::optional<std::string> SessionTable::SerializeStored(
    const TokenHash& hash) const {
  Shard& shard = ShardOf(hash);
  absl::ReaderMutexLock lock(&shard.mu);
  auto it = shard.by_token.find(hash);
  if (it == shard.by_token.end()) return std::nullopt;
  return Rec(*it)->EncodeStored(*this, HoldOf(*it));
}

void SessionTable::ForEachStored(
    const std::function<void(const TokenHash&, std::string_view)>& fn) const {
  for (size_t i = 0; i < num_shards_; ++i) {
    Shard& shard = shards_[i];
    absl::ReaderMutexLock lock(&shard.mu);
    for (Ref ref : shard.by_token) {
      const Record* r = Rec(ref);
      const std::string bytes = r->EncodeStored(*this, HoldOf(ref));
      fn(r->hash, bytes);
    }
  }
}

void SessionTable::ForEachSession(
    const std::function<void(const SessionView&)>& fn) const {
  for (size_t i = 0; i < num_shards_; ++i) {
    Shard& shard = shards_[i];
    absl::ReaderMutexLock lock(&shard.mu);
    for (Ref ref : shard.by_token) {
      const Record* r = Rec(ref);
      fn(SessionView{r->hash, r->session_id(), r->user_id(), r->created_at_ms,
                     r->expires_at_ms, r->idle_timeout_ms, r->last_seen_at_ms,
                     r->revoked(), HoldOf(ref), r->extra_bytes(*this)});
    }
  }
}

SessionTable::Ref SessionTable::NewRecord(SlabArena& arena,
                                          const TokenHash& hash,
                                          std::string_view session_id,
                                          std::string_view user_id) {
  const Ref ref =
      arena.Allocate(sizeof(Record) + session_id.size() + user_id.size());
  Record* r = new (arena.Deref(ref)) Record();
  r->hash = hash;
  r->sid_len = static_cast<uint8_t>(session_id.size());
  r->uid_len = static_cast<uint16_t>(user_id.size());
  std::memcpy(r->ids(), session_id.data(), session_id.size());
  std::memcpy(r->ids() + session_id.size(), user_id.data(), user_id.size());
  return ref;
}

void SessionTable::DeleteRecord(Ref ref) {
  Record* r = Rec(ref);
  r->FreeExtra(*this);
  const size_t size = r->block_size();
  r->~Record();
  ArenaOfRef(ref).Free(ref, size);
}

void SessionTable::LinkUser(Ref ref) {
  Shard& shard = ShardOfKey(Rec(ref)->user_id());
  absl::MutexLock lock(&shard.mu);
  LinkUserLocked(shard, ref);
}

void SessionTable::LinkUserLocked(Shard& shard, Ref ref) {
  Record* r = Rec(ref);
  auto [it, inserted] = shard.user_heads.insert(ref);
  r->user_prev = 0;
  r->user_next = 0;
  if (!inserted) {
    // Link in second place: the head (and so the set's element) stays.
    const Ref head = *it;
    Record* h = Rec(head);
    r->user_prev = head;
    r->user_next = h->user_next;
    if (h->user_next != 0) Rec(h->user_next)->user_prev = ref;
    h->user_next = ref;
  }
}

absl::Status SessionTable::InsertRecord(Ref ref, HoldRegistry::Index hold) {
  const Record* record = Rec(ref);
  // session_id first: with concurrent loaders (recovery) the set insert is
  // the atomic uniqueness check.
  {
    Shard& shard = ShardOfKey(record->session_id());
    absl::MutexLock lock(&shard.mu);
    if (!shard.by_session_id.insert(ref).second) {
      const std::string sid(record->session_id());
      DeleteRecord(ref);
      return absl::AlreadyExistsError(
          absl::StrCat("session_id ", sid, " already exists"));
    }
  }
  bool token_inserted;
  {
    Shard& shard = ShardOf(record->hash);
    absl::MutexLock lock(&shard.mu);
    token_inserted = shard.by_token.insert(ref).second;
    if (token_inserted) {
      shard.expiry.insert(ExpiryKey(record->deadline(), ref));
      // Visible with its hold or not at all: REVOKED without one reads as
      // revoked for good.
      if (hold != 0) SetHoldOf(ref, hold);
    }
  }
  if (!token_inserted) {
    Shard& sid_shard = ShardOfKey(record->session_id());
    {
      absl::MutexLock sid_lock(&sid_shard.mu);
      sid_shard.by_session_id.erase(ref);
    }
    DeleteRecord(ref);
    return absl::AlreadyExistsError("token hash already exists");
  }
  LinkUser(ref);
  size_.fetch_add(1, std::memory_order_relaxed);
  return absl::OkStatus();
}

namespace {

absl::Status CheckIds(std::string_view session_id, std::string_view user_id) {
  if (session_id.empty() || session_id.size() > kMaxSessionIdLength) {
    return absl::InvalidArgumentError(
        absl::StrCat("session_id must be 1-", kMaxSessionIdLength, " bytes"));
  }
  if (user_id.empty() || user_id.size() > kMaxUserIdLength) {
    return absl::InvalidArgumentError(
        absl::StrCat("user_id must be 1-", kMaxUserIdLength, " bytes"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status SessionTable::Insert(const TokenHash& hash,
                                  const Session& session) {
  absl::Status status = CheckIds(session.session_id(), session.user_id());
  if (!status.ok()) return status;
  SlabArena& arena = ArenaOf(hash);
  const Ref ref =
      NewRecord(arena, hash, session.session_id(), session.user_id());
  Record* r = Rec(ref);
  r->created_at_ms = session.created_at_ms();
  r->SetFixed(session);
  r->SetExtra(*this, arena, EncodeExtra(session));
  const HoldRegistry::Index hold =
      session.revoked_by().empty()
          ? 0
          : holds_.Acquire(std::vector<uint64_t>(session.revoked_by().begin(),
                                                 session.revoked_by().end()));
  if (absl::Status s = InsertRecord(ref, hold); !s.ok()) {
    holds_.Release(hold);
    return s;
  }
  return absl::OkStatus();
}

// StoredSession wire bytes, decoded as the table reads them.
struct SessionTable::DecodedStored {
  TokenHash hash;
  std::string_view session_id, user_id;
  int64_t fixed[10] = {};  // indexed by field number 3..9
  std::string extra;
  std::vector<uint64_t> revoked_by;
};

absl::Status SessionTable::DecodeStored(std::string_view bytes,
                                        DecodedStored* out) {
  auto corrupt = [](absl::string_view what) {
    return absl::DataLossError(
        absl::StrCat("stored session does not parse: ", what));
  };
  std::string_view hash_bytes, session_bytes;
  wire::Field field;
  while (!bytes.empty()) {
    if (!wire::NextField(&bytes, &field)) return corrupt("StoredSession");
    if (field.type != wire::kLengthDelimited) continue;
    if (field.number == kStoredTokenHash) hash_bytes = field.payload;
    if (field.number == kStoredSession) session_bytes = field.payload;
  }
  std::optional<TokenHash> hash = TokenHashFromBytes(hash_bytes);
  if (!hash) return corrupt("token_hash is not 32 bytes");
  out->hash = *hash;

  std::string_view& session_id = out->session_id;
  std::string_view& user_id = out->user_id;
  int64_t* fixed = out->fixed;
  std::string& extra = out->extra;
  std::vector<uint64_t>& revoked_by = out->revoked_by;
  while (!session_bytes.empty()) {
    if (!wire::NextField(&session_bytes, &field)) return corrupt("Session");
    switch (field.number) {
      case kSessionId:
        if (field.type != wire::kLengthDelimited) return corrupt("session_id");
        session_id = field.payload;
        break;
      case kUserId:
        if (field.type != wire::kLengthDelimited) return corrupt("user_id");
        user_id = field.payload;
        break;
      case kCreatedAt:
      case kExpiresAt:
      case kIdleTimeout:
      case kLastSeenAt:
      case kVersion:
      case kState:
        if (field.type != wire::kVarint) return corrupt("integer field");
        fixed[field.number] = static_cast<int64_t>(field.varint);
        break;
      case kRevokedBy:
        if (!GetRevokedBy(field, &revoked_by)) return corrupt("revoked_by");
        break;
      default:
        // Attributes, revoke reason and time, client, and any field a later
        // version added: kept verbatim.
        extra.append(field.raw);
        break;
    }
  }
  absl::Status status = CheckIds(session_id, user_id);
  if (!status.ok()) return corrupt(status.message());
  return absl::OkStatus();
}

absl::Status SessionTable::CheckStored(std::string_view bytes) {
  DecodedStored decoded;
  return DecodeStored(bytes, &decoded);
}

absl::StatusOr<SessionTable::Ref> SessionTable::ParseStored(
    std::string_view bytes, SlabArena& arena, HoldRegistry::Index* hold) {
  DecodedStored d;
  SESSIOND_RETURN_IF_ERROR(DecodeStored(bytes, &d));
  const Ref ref = NewRecord(arena, d.hash, d.session_id, d.user_id);
  Record* r = Rec(ref);
  r->created_at_ms = d.fixed[kCreatedAt];
  r->expires_at_ms = d.fixed[kExpiresAt];
  r->idle_timeout_ms = d.fixed[kIdleTimeout];
  r->last_seen_at_ms = d.fixed[kLastSeenAt];
  r->SetVersionAndState(static_cast<uint64_t>(d.fixed[kVersion]),
                        d.fixed[kState] == v1::SESSION_STATE_REVOKED);
  r->SetExtra(*this, arena, d.extra);
  *hold = d.revoked_by.empty() ? 0 : holds_.Acquire(d.revoked_by);
  return ref;
}

absl::Status SessionTable::InsertStored(std::string_view bytes) {
  HoldRegistry::Index hold = 0;
  absl::StatusOr<Ref> ref = ParseStored(bytes, *arenas_[0], &hold);
  if (!ref.ok()) return ref.status();
  if (absl::Status s = InsertRecord(*ref, hold); !s.ok()) {
    holds_.Release(hold);
    return s;
  }
  return absl::OkStatus();
}

absl::Status SessionTable::ReplaceStored(std::string_view bytes) {
  HoldRegistry::Index hold = 0;
  absl::StatusOr<Ref> parsed = ParseStored(bytes, *arenas_[0], &hold);
  if (!parsed.ok()) return parsed.status();
  const Record* from = Rec(*parsed);
  absl::Status status;
  {
    Shard& shard = ShardOf(from->hash);
    absl::MutexLock lock(&shard.mu);
    auto it = shard.by_token.find(from->hash);
    if (it == shard.by_token.end()) {
      status = absl::NotFoundError("no session with this token hash");
    } else if (Rec(*it)->session_id() != from->session_id() ||
               Rec(*it)->user_id() != from->user_id()) {
      status = absl::InvalidArgumentError(
          "session_id and user_id of a session cannot change");
    } else {
      const Ref ref = *it;
      Record* r = Rec(ref);
      const uint64_t old_key = ExpiryKey(r->deadline(), ref);
      r->expires_at_ms = from->expires_at_ms;
      r->idle_timeout_ms = from->idle_timeout_ms;
      r->last_seen_at_ms = from->last_seen_at_ms;
      r->SetVersionAndState(from->version(), from->revoked());
      r->SetExtra(*this, ArenaOf(r->hash), from->extra_bytes(*this));
      SetHoldOf(ref, hold);
      hold = 0;  // the record's now
      const uint64_t new_key = ExpiryKey(r->deadline(), ref);
      if (new_key != old_key) {
        shard.expiry.erase(old_key);
        shard.expiry.insert(new_key);
      }
    }
  }
  holds_.Release(hold);
  DeleteRecord(*parsed);
  return status;
}

void SessionTable::StartLoad(int slots) {
  bulk_refs_.clear();
  bulk_refs_.resize(std::max(slots, 1));
  bulk_holds_.clear();
  bulk_holds_.resize(std::max(slots, 1));
}

absl::Status SessionTable::LoadStored(int slot, std::string_view bytes) {
  HoldRegistry::Index hold = 0;
  absl::StatusOr<Ref> ref = ParseStored(bytes, *arenas_[slot & 1], &hold);
  if (!ref.ok()) return ref.status();
  bulk_refs_[slot].push_back(*ref);
  if (hold != 0) bulk_holds_[slot].emplace_back(*ref, hold);
  return absl::OkStatus();
}

absl::Status SessionTable::FinishLoad() {
  size_t total = 0;
  for (const std::vector<Ref>& refs : bulk_refs_) total += refs.size();
  Reserve(total);
  // Two threads, each building different indexes: the token and session_id
  // hash sets; the user lists and the expiry btrees. No shard locks: nothing
  // else uses the table (REQUIRES), and the two threads write different
  // members of each shard (and of each record), so they never touch the
  // same memory.
  absl::Status token_status, id_status;
  std::thread token_thread([&]() ABSL_NO_THREAD_SAFETY_ANALYSIS {
    for (const std::vector<Ref>& refs : bulk_refs_) {
      for (Ref ref : refs) {
        const Record* r = Rec(ref);
        if (!ShardOf(r->hash).by_token.insert(ref).second) {
          if (token_status.ok()) {
            token_status = absl::AlreadyExistsError(absl::StrCat(
                "token hash ", TokenHashHex(r->hash), " is stored twice"));
          }
        }
        if (!ShardOfKey(r->session_id()).by_session_id.insert(ref).second) {
          if (id_status.ok()) {
            id_status = absl::AlreadyExistsError(
                absl::StrCat("session_id ", std::string(r->session_id()),
                             " is stored twice"));
          }
        }
      }
    }
  });
  std::vector<std::vector<uint64_t>> expiry(num_shards_);
  for (const std::vector<Ref>& refs : bulk_refs_) {
    for (Ref ref : refs) {
      const Record* r = Rec(ref);
      LinkUserLocked(ShardOfKey(r->user_id()), ref);
      expiry[&ShardOf(r->hash) - shards_.get()].push_back(
          ExpiryKey(r->deadline(), ref));
    }
  }
  for (size_t i = 0; i < num_shards_; ++i) {
    // Built in order, the btree's nodes end up full (random-order inserts
    // leave them ~70% full).
    std::sort(expiry[i].begin(), expiry[i].end());
    absl::btree_set<uint64_t> tree(expiry[i].begin(), expiry[i].end());
    std::vector<uint64_t>().swap(expiry[i]);
    shards_[i].expiry.swap(tree);
  }
  token_thread.join();
  size_t loaded = 0;
  for (std::vector<Ref>& refs : bulk_refs_) {
    loaded += refs.size();
    std::vector<Ref>().swap(refs);
  }
  bulk_refs_.clear();
  if (!token_status.ok() || !id_status.ok()) {
    bulk_holds_.clear();
    Clear();
    return !token_status.ok() ? token_status : id_status;
  }
  for (const auto& holds : bulk_holds_) {
    for (const auto& [ref, hold] : holds) SetHoldOf(ref, hold);
  }
  bulk_holds_.clear();
  size_.store(loaded, std::memory_order_relaxed);
  return absl::OkStatus();
}

absl::Status SessionTable::Replace(const TokenHash& hash,
                                   const Session& session) {
  Shard& shard = ShardOf(hash);
  const std::string extra = EncodeExtra(session);
  absl::MutexLock lock(&shard.mu);
  auto it = shard.by_token.find(hash);
  if (it == shard.by_token.end()) {
    return absl::NotFoundError("no session with this token hash");
  }
  const Ref ref = *it;
  Record* r = Rec(ref);
  if (r->session_id() != session.session_id() ||
      r->user_id() != session.user_id()) {
    return absl::InvalidArgumentError(
        "session_id and user_id of a session cannot change");
  }
  const uint64_t old_key = ExpiryKey(r->deadline(), ref);
  r->SetFixed(session);
  r->SetExtra(*this, ArenaOf(hash), extra);
  SetHold(ref, session);
  const uint64_t new_key = ExpiryKey(r->deadline(), ref);
  if (new_key != old_key) {
    shard.expiry.erase(old_key);
    shard.expiry.insert(new_key);
  }
  return absl::OkStatus();
}

bool SessionTable::SetLastSeen(const TokenHash& hash, int64_t seen_at_ms) {
  Shard& shard = ShardOf(hash);
  absl::MutexLock lock(&shard.mu);
  auto it = shard.by_token.find(hash);
  if (it == shard.by_token.end()) return false;
  const Ref ref = *it;
  Record* r = Rec(ref);
  if (seen_at_ms <= r->last_seen_at_ms) return true;
  const uint64_t old_key = ExpiryKey(r->deadline(), ref);
  r->last_seen_at_ms = seen_at_ms;
  const uint64_t new_key = ExpiryKey(r->deadline(), ref);
  if (new_key != old_key) {
    shard.expiry.erase(old_key);
    shard.expiry.insert(new_key);
  }
  return true;
}

absl::Status SessionTable::Rekey(const TokenHash& old_hash,
                                 const TokenHash& new_hash) {
  // A copy of the record under the new hash joins each index before the old
  // record leaves it, in the order readers follow (token, then session_id,
  // then the user list, and last the old token entry goes): whichever hash
  // a reader holds resolves, or the session_id index already names the new
  // one. Only one writer runs, so the old record cannot change meanwhile.
  Ref old_ref = 0;
  {
    Shard& shard = ShardOf(old_hash);
    absl::ReaderMutexLock lock(&shard.mu);
    auto it = shard.by_token.find(old_hash);
    if (it == shard.by_token.end()) {
      return absl::NotFoundError("no session with this token hash");
    }
    old_ref = *it;
  }
  if (Contains(new_hash)) {
    return absl::AlreadyExistsError("token hash already exists");
  }
  Record* old_record = Rec(old_ref);
  SlabArena& arena = ArenaOf(new_hash);
  const Ref ref = NewRecord(arena, new_hash, old_record->session_id(),
                            old_record->user_id());
  Record* r = Rec(ref);
  HoldRegistry::Index hold = 0;
  {
    Shard& shard = ShardOf(old_hash);
    absl::ReaderMutexLock lock(&shard.mu);
    r->created_at_ms = old_record->created_at_ms;
    r->expires_at_ms = old_record->expires_at_ms;
    r->idle_timeout_ms = old_record->idle_timeout_ms;
    r->last_seen_at_ms = old_record->last_seen_at_ms;
    r->SetVersionAndState(old_record->version(), old_record->revoked());
    r->SetExtra(*this, arena, old_record->extra_bytes(*this));
    const HoldRegistry::Index old_hold = HoldOf(old_ref);
    if (old_hold != 0) hold = holds_.Acquire(holds_.Ids(old_hold));
  }
  {
    Shard& shard = ShardOf(new_hash);
    absl::MutexLock lock(&shard.mu);
    shard.by_token.insert(ref);
    shard.expiry.insert(ExpiryKey(r->deadline(), ref));
    if (hold != 0) SetHoldOf(ref, hold);
  }
  {
    Shard& shard = ShardOfKey(r->session_id());
    absl::MutexLock lock(&shard.mu);
    shard.by_session_id.erase(old_ref);
    shard.by_session_id.insert(ref);
  }
  {
    // The new record takes the old one's place in its user's list.
    Shard& shard = ShardOfKey(r->user_id());
    absl::MutexLock lock(&shard.mu);
    r->user_prev = old_record->user_prev;
    r->user_next = old_record->user_next;
    if (r->user_prev == 0) {
      shard.user_heads.erase(old_ref);
      shard.user_heads.insert(ref);
    } else {
      Rec(r->user_prev)->user_next = ref;
    }
    if (r->user_next != 0) Rec(r->user_next)->user_prev = ref;
  }
  {
    Shard& shard = ShardOf(old_hash);
    absl::MutexLock lock(&shard.mu);
    shard.expiry.erase(ExpiryKey(old_record->deadline(), old_ref));
    shard.by_token.erase(old_ref);
    SetHoldOf(old_ref, 0);
  }
  DeleteRecord(old_ref);
  return absl::OkStatus();
}

bool SessionTable::Erase(const TokenHash& hash) {
  Ref ref = 0;
  {
    Shard& shard = ShardOf(hash);
    absl::ReaderMutexLock lock(&shard.mu);
    auto it = shard.by_token.find(hash);
    if (it == shard.by_token.end()) return false;
    ref = *it;
  }
  Record* r = Rec(ref);
  // Unlink from the user list and the session_id index first, then from the
  // token shard, and only then free it: a reader holding any of the locks
  // may be looking at it.
  {
    Shard& shard = ShardOfKey(r->user_id());
    absl::MutexLock lock(&shard.mu);
    if (r->user_prev == 0) {
      // r is the head: its successor (if any) becomes the head.
      shard.user_heads.erase(ref);
      if (r->user_next != 0) {
        Rec(r->user_next)->user_prev = 0;
        shard.user_heads.insert(r->user_next);
      }
    } else {
      Rec(r->user_prev)->user_next = r->user_next;
      if (r->user_next != 0) Rec(r->user_next)->user_prev = r->user_prev;
    }
  }
  {
    Shard& shard = ShardOfKey(r->session_id());
    absl::MutexLock lock(&shard.mu);
    shard.by_session_id.erase(ref);
  }
  {
    Shard& shard = ShardOf(hash);
    absl::MutexLock lock(&shard.mu);
    shard.expiry.erase(ExpiryKey(r->deadline(), ref));
    shard.by_token.erase(ref);
    SetHoldOf(ref, 0);  // releases the hold, inline or mapped
  }
  DeleteRecord(ref);
  size_.fetch_sub(1, std::memory_order_relaxed);
  return true;
}

SessionTable::MemoryUsage SessionTable::memory_usage() const {
  MemoryUsage usage;
  usage.arena_bytes = arenas_[0]->used_bytes() + arenas_[1]->used_bytes();
  for (size_t i = 0; i < num_shards_; ++i) {
    Shard& shard = shards_[i];
    absl::ReaderMutexLock lock(&shard.mu);
    // One reference and one control byte per slot.
    const size_t slot = sizeof(Ref) + 1;
    usage.hash_index_bytes +=
        slot * (shard.by_token.capacity() + shard.by_session_id.capacity() +
                shard.user_heads.capacity());
    usage.expiry_entries += shard.expiry.size();
    // A reference, an index and a control byte per slot.
    usage.hold_index_bytes += (sizeof(Ref) + sizeof(HoldRegistry::Index) + 1) *
                              shard.holds.capacity();
  }
  return usage;
}

void SessionTable::Reserve(size_t sessions) {
  const size_t per_shard = sessions / num_shards_ + sessions / num_shards_ / 16;
  for (size_t i = 0; i < num_shards_; ++i) {
    Shard& shard = shards_[i];
    absl::MutexLock lock(&shard.mu);
    shard.by_token.reserve(per_shard);
    shard.by_session_id.reserve(per_shard);
  }
}

void SessionTable::Clear() {
  for (size_t i = 0; i < num_shards_; ++i) {
    Shard& shard = shards_[i];
    absl::MutexLock lock(&shard.mu);
    shard.ResetIndexes(this);
  }
  // No index refers to a record any more, so no reader can reach one: drop
  // them all at once and return the pages.
  arenas_[0]->Reset();
  arenas_[1]->Reset();
  holds_.Clear();
  size_.store(0, std::memory_order_relaxed);
}

HoldRegistry::Index SessionTable::HoldOf(Ref ref) const {
  const Record* r = Rec(ref);
  if (r->inline_hold() != 0) return r->inline_hold();
  // Only a revoked session can be held; a live one skips the map.
  if (!r->revoked()) return 0;
  const Shard& shard = ShardOf(r->hash);
  auto it = shard.holds.find(ref);
  return it == shard.holds.end() ? 0 : it->second;
}

void SessionTable::SetHoldOf(Ref ref, HoldRegistry::Index hold) {
  Record* r = Rec(ref);
  Shard& shard = ShardOf(r->hash);
  // The old index, wherever it is (not gated on revoked(): the state may
  // have changed before the hold does).
  HoldRegistry::Index old = r->inline_hold();
  auto it = shard.holds.find(ref);
  if (it != shard.holds.end()) {
    old = it->second;
    shard.holds.erase(it);
    // The last mapped hold restored or purged: give the slots back.
    if (shard.holds.empty() && shard.holds.capacity() > 0) {
      absl::flat_hash_map<Ref, HoldRegistry::Index>().swap(shard.holds);
    }
  }
  if (hold <= Record::kMaxInlineHold) {
    r->set_inline_hold(hold);
  } else {
    r->set_inline_hold(0);
    shard.holds[ref] = hold;
  }
  holds_.Release(old);
}

void SessionTable::SetHold(Ref ref, const Session& session) {
  SetHoldOf(ref, session.revoked_by().empty()
                     ? 0
                     : holds_.Acquire(
                           std::vector<uint64_t>(session.revoked_by().begin(),
                                                 session.revoked_by().end())));
}

bool SessionTable::AddHold(const TokenHash& hash, uint64_t id) {
  Shard& shard = ShardOf(hash);
  absl::MutexLock lock(&shard.mu);
  auto it = shard.by_token.find(hash);
  if (it == shard.by_token.end()) return false;
  Record* r = Rec(*it);
  std::vector<uint64_t> ids = holds_.Ids(HoldOf(*it));
  if (std::find(ids.begin(), ids.end(), id) != ids.end()) return false;
  ids.push_back(id);
  r->SetVersionAndState(r->version(), /*revoked=*/true);
  SetHoldOf(*it, holds_.Acquire(ids));
  return true;
}

std::vector<uint64_t> SessionTable::HoldIdsOf(const TokenHash& hash) const {
  Shard& shard = ShardOf(hash);
  absl::ReaderMutexLock lock(&shard.mu);
  auto it = shard.by_token.find(hash);
  if (it == shard.by_token.end()) return {};
  return holds_.Ids(HoldOf(*it));
}

SessionTable::HoldRelease SessionTable::RemoveHold(
    const TokenHash& hash, uint64_t id, int64_t now_ms, int64_t leeway_ms,
    int64_t held_ms, std::optional<int64_t> given_back_until_ms) {
  Shard& shard = ShardOf(hash);
  absl::MutexLock lock(&shard.mu);
  auto it = shard.by_token.find(hash);
  if (it == shard.by_token.end()) return HoldRelease::kNotHeld;
  Record* r = Rec(*it);
  std::vector<uint64_t> ids = holds_.Ids(HoldOf(*it));
  auto held = std::find(ids.begin(), ids.end(), id);
  if (held == ids.end()) return HoldRelease::kNotHeld;
  ids.erase(held);
  SetHoldOf(*it, ids.empty() ? 0 : holds_.Acquire(ids));
  const int64_t until = given_back_until_ms.value_or(now_ms);
  if (held_ms > 0 && r->idle_timeout_ms > 0 && r->last_seen_at_ms < until) {
    const Ref ref = *it;
    const uint64_t old_key = ExpiryKey(r->deadline(), ref);
    r->last_seen_at_ms =
        std::min(until, SaturatingAdd(r->last_seen_at_ms, held_ms));
    const uint64_t new_key = ExpiryKey(r->deadline(), ref);
    if (new_key != old_key) {
      shard.expiry.erase(old_key);
      shard.expiry.insert(new_key);
    }
  }
  if (!ids.empty()) return HoldRelease::kStillHeld;
  r->SetVersionAndState(r->version(), /*revoked=*/false);
  return IsExpired(r->expires_at_ms, r->idle_timeout_ms, r->last_seen_at_ms,
                   now_ms, leeway_ms)
             ? HoldRelease::kActiveButExpired
             : HoldRelease::kActive;
}

bool SessionTable::IsHeldBy(const TokenHash& hash, uint64_t id) const {
  Shard& shard = ShardOf(hash);
  absl::ReaderMutexLock lock(&shard.mu);
  auto it = shard.by_token.find(hash);
  if (it == shard.by_token.end()) return false;
  return holds_.Contains(HoldOf(*it), id);
}

bool SessionTable::HoldContains(uint32_t hold, uint64_t id) const {
  return holds_.Contains(hold, id);
}

}  // namespace sessiond::storage
