// Copyright sessiond authors. Licensed under the Apache License 2.0.
//
// CreateSession.request_id: creates a client may retry (docs/API.md,
// "Retrying a create", has the security argument in full).
//
// The problem: a create whose answer is lost (a node killed mid-call, a
// timeout) cannot simply be sent again, since a second create makes a
// second session, and the first session's token is lost for good: the store
// keeps only token hashes. A retry must get the SAME token back, yet the
// token may be written down nowhere.
//
// The design: the token of a create that carries a request_id is not drawn
// at random but derived, by whichever node serves the call, as
//
//   token = base64url(HMAC-SHA256(create_key,
//             "sessiond create token v1" | user_id | request_id | session_id))
//
// where `create_key` is 32 random bytes the cluster installs once
// (CreateKeyCommand: the first applied wins) and keeps as replicated state,
// and `session_id` is the random id the first proposer drew (public: it is
// in every Session). The log and the state hold only the token's SHA-256 and
// the request key
//
//   request_key = HMAC-SHA256(create_key,
//                   "sessiond create request v1" | user_id | request_id)
//
// in a table remembered for a window of cluster time (CreateRequestTable,
// replicated: RocksDB default CF, snapshots, digest). A create whose request
// key is in the table, its window not passed, returns the session the first
// one made; the node serving the retry recomputes the token from the
// session_id it gets back. After the window, the key is purged (the leader's
// sweeper proposes PurgeCreateRequestsCommand) and the same request_id
// makes a new session with a new session_id, hence a new token: a request_id
// never brings back a token that was revoked or expired.
//
// Parts are length-prefixed (4-byte little-endian length, then the bytes),
// so no two different inputs encode alike.
//
// Keys in the default CF (written in the state machine's apply batch):
//   "create_key"                      -> the 32-byte create key
//   "create_request/" + request_key   -> a CreateRequestRecord
#ifndef SESSIOND_STORAGE_CREATE_REQUESTS_H_
#define SESSIOND_STORAGE_CREATE_REQUESTS_H_

#include <cstddef>
#include <cstdint>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/synchronization/mutex.h"
#include "sessiond/v1/command.pb.h"
#include "sessiond/v1/session.pb.h"
#include "storage/token.h"

namespace sessiond::storage {

inline constexpr size_t kCreateKeyBytes = 32;
inline constexpr size_t kRequestKeyBytes = 32;
// A request_id is 16..128 bytes: long enough that one chosen at random
// cannot be guessed (the derivation's second secret, should the create key
// leak), short enough to cost nothing.
inline constexpr size_t kMinRequestIdBytes = 16;
inline constexpr size_t kMaxRequestIdBytes = 128;
// Used when a command carries 0.
inline constexpr int64_t kDefaultCreateRequestWindowMs = 10 * 60 * 1000;
inline constexpr uint32_t kDefaultCreateRequestMaxEntries = 100'000;
// The longest window a command may ask for (longer ones are cut to it).
inline constexpr int64_t kMaxCreateRequestWindowMs = 24ll * 3600 * 1000;

inline constexpr char kCreateKeyDbKey[] = "create_key";
inline constexpr char kCreateRequestDbKeyPrefix[] = "create_request/";
// Just past every such key ('0' follows '/').
inline constexpr char kCreateRequestDbKeyEnd[] = "create_request0";
std::string CreateRequestDbKey(std::string_view request_key);

// 32 bytes from OpenSSL RAND_bytes (aborts if the CSPRNG fails).
std::string NewCreateKey();

// The derivations above. REQUIRES: create_key is kCreateKeyBytes long.
std::string CreateRequestKey(std::string_view create_key,
                             std::string_view user_id,
                             std::string_view request_id);
// 43 characters of base64url, like a random token.
std::string CreateRequestToken(std::string_view create_key,
                               std::string_view user_id,
                               std::string_view request_id,
                               std::string_view session_id);

// SHA-256 of what a create asks for beyond its user and request_id
// (ttl_ms, idle_timeout_ms, token_format, the attributes in key order, the
// client metadata), as the client sent them: a retry sends the same request
// and gets the same digest, through any node; the same request_id with
// other fields is another request, and is refused.
std::string CreateRequestDigest(
    const sessiond::v1::CreateSessionRequest& request);

// The request keys of recent creates, by request key, and the cluster's
// create key. Written by the state machine's apply thread only; read from
// any thread (the sweeper asks whether a purge is due, the session service
// reads the create key). Thread-safe.
class CreateRequestTable {
 public:
  using Record = sessiond::v1::internal::CreateRequestRecord;

  // The record of `request_key` when its window has not passed at now_ms
  // (expires_at_ms > now_ms).
  std::optional<Record> Find(std::string_view request_key,
                             int64_t now_ms) const;
  // Adds (or replaces) a record; then, while more than `max_entries` are
  // kept, removes the one whose window ends first (ties: the smaller key),
  // never the record just added, and appends its request key to
  // `*evicted`. REQUIRES: a 32-byte key.
  void Put(const Record& record, size_t max_entries,
           std::vector<std::string>* evicted);
  // Removes up to `max` records whose window has passed at now_ms, the
  // earliest first; returns their request keys.
  std::vector<std::string> TakeExpired(int64_t now_ms, size_t max);
  // Whether a record's window has passed at now_ms (a purge is due).
  bool AnyExpired(int64_t now_ms) const;
  // Moves every window ending after `after_ms` `by_ms` later (a clock's
  // catch-up); returns the records moved, in window order.
  std::vector<Record> Postpone(int64_t after_ms, int64_t by_ms);
  // Every record, in request-key order (snapshots, tests).
  std::vector<Record> All() const;
  // Replaces every record (Open, ApplySnapshot); records that are malformed
  // (request key not 32 bytes) are skipped.
  void Replace(const std::vector<Record>& records);
  size_t size() const;

  // Empty until a CreateKeyCommand is applied.
  std::string create_key() const;
  void set_create_key(std::string key);

 private:
  struct Entry {
    TokenHash token_hash;
    std::string session_id;
    int64_t expires_at_ms = 0;
    std::string request_digest;  // empty: none recorded
  };
  void EraseLocked(const TokenHash& key) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  static Record ToRecord(const TokenHash& key, const Entry& entry);

  mutable absl::Mutex mu_;
  absl::flat_hash_map<TokenHash, Entry, TokenHashHasher> by_key_
      ABSL_GUARDED_BY(mu_);
  // (expires_at_ms, request key): eviction and purge order.
  std::set<std::pair<int64_t, TokenHash>> by_expiry_ ABSL_GUARDED_BY(mu_);
  std::string create_key_ ABSL_GUARDED_BY(mu_);
};

}  // namespace sessiond::storage

#endif  // SESSIOND_STORAGE_CREATE_REQUESTS_H_
