// Copyright sessiond authors. Licensed under the Apache License 2.0.
//
// Undoable bulk revocations (FLUSH, BulkRevoke, RevokeUserSessions): which
// sessions a selector takes, and how a session records the revocations
// holding it.
//
// A bulk revocation never deletes: it adds its id to each session's
// `revoked_by` (sessiond.v1.Session field 13; in memory an entry in its
// table shard's map, pointing at a list interned in
// storage/hold_registry.h) and marks it REVOKED. A
// restore removes the id again; a session is ACTIVE once no id holds it. A
// session revoked one by one (RevokeSession) has an empty `revoked_by` and
// stays revoked for good. After the retention window a purge removes the
// sessions still held by the revocation. So a retained generation costs
// what its sessions cost before plus ~19 B each (docs/PERFORMANCE.md), and a
// flush of any size is one log entry.
#ifndef SESSIOND_STORAGE_REVOCATIONS_H_
#define SESSIOND_STORAGE_REVOCATIONS_H_

#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "sessiond/v1/admin.pb.h"
#include "storage/session_table.h"

namespace sessiond::storage {

// How long a preview's confirmation token stays good (cluster time).
inline constexpr int64_t kBulkRevokeConfirmMs = 60'000;
// Most users one Users selector names.
inline constexpr int kMaxSelectorUsers = 10'000;
// Most previews waiting for their confirmation at once (the oldest goes).
inline constexpr int kMaxPendingBulkRevokes = 64;

// The default-CF key of a revocation record: "revocation/" + 8-byte
// big-endian id (records sort by id, that is by age).
inline constexpr char kRevocationKeyPrefix[] = "revocation/";
// Just past every such key ('0' follows '/').
inline constexpr char kRevocationKeyEnd[] = "revocation0";
std::string RevocationKey(uint64_t id);

// InvalidArgument, naming the field, for a selector that takes nothing
// well defined (no kind, empty user ids, too many users, empty key).
absl::Status CheckSelector(const sessiond::v1::SessionSelector& selector);

// Whether `extra` (SessionView::extra) holds the attribute key = value.
bool HasAttribute(std::string_view extra, std::string_view key,
                  std::string_view value);

// Whether a bulk revocation may take this session: it is active or held by
// another bulk revocation (one revoked one by one is revoked for good).
// Expired or not: an expired session still in the table can come back to
// use (a touch from a node cut off from the leader, the expiry breaker's
// freeze), so a revocation must take it too.
bool IsTakeableByRevocation(const SessionView& session);

// Whether a selector of kind all, created_before_ms or attribute takes the
// session, expired or not (kinds users and user are answered from the
// per-user index, not by a scan: false here).
bool ScanSelects(const sessiond::v1::SessionSelector& selector,
                 const SessionView& session);

// Whether the selector is answered from the per-user index.
bool SelectsByUser(const sessiond::v1::SessionSelector& selector);

// A user id's stand-in for counting distinct users, a count that is
// replicated (Revocation.users): 64-bit FNV-1a, a fixed function, so every
// replica counts alike whatever its build (std::hash is the standard
// library's to change, absl::Hash is seeded per process). A collision among
// a million users has a chance of about 1 in 30 million.
uint64_t UserCountKey(std::string_view user_id);

}  // namespace sessiond::storage

#endif  // SESSIOND_STORAGE_REVOCATIONS_H_
