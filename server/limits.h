// Copyright sessiond authors. Licensed under the Apache License 2.0.
#ifndef SESSIOND_SERVER_LIMITS_H_
#define SESSIOND_SERVER_LIMITS_H_

#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "sessiond/v1/admin.pb.h"
#include "sessiond/v1/session.pb.h"

namespace sessiond::server {

// Every request field's limit. Set from the flags of the same names
// (server/config.cc); each violation names the field, the value, the limit
// and the flag, so an operator knows what to change.
struct Limits {
  int64_t max_user_id_bytes = 256;
  int64_t max_attributes = 64;
  int64_t max_attribute_key_bytes = 128;
  int64_t max_attribute_value_bytes = 4096;
  // user_id + attribute keys and values + client metadata, in bytes.
  int64_t max_record_bytes = 16384;
  int64_t min_ttl_ms = 1000;
  int64_t max_ttl_ms = 90ll * 24 * 3600 * 1000;
  int64_t default_ttl_ms = 24ll * 3600 * 1000;
  int64_t default_idle_timeout_ms = 0;  // 0: no idle expiry by default
  // Derived, not a flag: the shortest idle timeout the touch resolution can
  // keep, max(--min_ttl_ms, kIdleTimeoutFlushMultiple x
  // --touch_flush_interval_ms), set by ServedLimits (server/config.h).
  int64_t min_idle_timeout_ms = 3000;
  int64_t max_idle_timeout_ms = 90ll * 24 * 3600 * 1000;
  int64_t max_reason_bytes = 256;
  int64_t max_client_field_bytes = 512;
};

// A touch reaches the replicated last_seen up to one flush interval (plus a
// commit) after the validation that made it, so a session whose idle timeout
// is only one interval long idles out while its user is active. With a
// timeout of at least this many intervals, a user whose validations are at
// most (idle timeout - 2 intervals) apart is never idled out: one interval
// for the flush, one of margin for the commit and the sweep.
inline constexpr int64_t kIdleTimeoutFlushMultiple = 3;

// The shortest idle timeout a client may ask for (Limits::min_idle_timeout_ms).
int64_t MinIdleTimeoutMs(int64_t min_ttl_ms, int64_t touch_flush_interval_ms);

// ListUserSessions page sizes (session.proto documents them).
inline constexpr uint32_t kDefaultPageSize = 100;
inline constexpr uint32_t kMaxPageSize = 1000;

// A CreateSession request's lifetimes after defaults are filled in.
struct CreateLifetimes {
  int64_t ttl_ms = 0;
  int64_t idle_timeout_ms = 0;  // 0: none
};

// Request validation. Every function returns OK or InvalidArgument whose
// message names the field and the limit, e.g.
//   attributes["k"]: value is 5000 bytes, limit is 4096
//   (--max_attribute_value_bytes)
// Nothing here touches the store: a request that fails changes nothing.
absl::StatusOr<CreateLifetimes> ValidateCreate(
    const sessiond::v1::CreateSessionRequest& request, const Limits& limits);

// A token given to Touch, Update or Revoke: non-empty, 43 base64url
// characters. (ValidateSession never calls this: a garbage token there is
// the outcome UNKNOWN, not an error.)
absl::Status ValidateToken(absl::string_view token, absl::string_view field);

// A session_id: 22 base64url characters.
absl::Status ValidateSessionId(absl::string_view session_id,
                               absl::string_view field);

absl::Status ValidateUserId(absl::string_view user_id, const Limits& limits);

absl::Status ValidateReason(absl::string_view reason, const Limits& limits);

// A flush's or bulk revocation's reason and selector against the same
// limits as RevokeUserSessions and a create: the reason, user ids and the
// attribute's key and value. (Unchecked, a 10 MiB reason was kept in the
// replicated pending list and the revocation's record for a day.)
absl::Status ValidateRevocation(const sessiond::v1::SessionSelector& selector,
                                absl::string_view reason, const Limits& limits);

// The request's own fields; the record-size and attribute-count limits
// depend on the stored session and are checked by CheckUpdatedRecord.
absl::Status ValidateUpdate(const sessiond::v1::UpdateSessionRequest& request,
                            const Limits& limits);

// The record that an update would produce: attribute count and record size.
absl::Status CheckUpdatedRecord(
    const sessiond::v1::Session& current,
    const sessiond::v1::UpdateSessionRequest& request, const Limits& limits);

absl::Status ValidateRevoke(const sessiond::v1::RevokeSessionRequest& request,
                            const Limits& limits);

absl::Status ValidateRevokeUser(
    const sessiond::v1::RevokeUserSessionsRequest& request,
    const Limits& limits);

// Checks the request and fills the effective page size.
absl::Status ValidateList(const sessiond::v1::ListUserSessionsRequest& request,
                          const Limits& limits, uint32_t* page_size);

// The bytes counted against --max_record_bytes.
int64_t RecordBytes(
    const std::string& user_id,
    const google::protobuf::Map<std::string, std::string>& attributes,
    const sessiond::v1::ClientMetadata& client);

// The most sessions in one CreateSessions call (SessionServiceOptions).
inline constexpr size_t kMaxBatchCreate = 1000;
// The largest message between peers (a Raft append, a forwarded write): a
// replicated command must fit in one, with room for its framing.
inline constexpr int64_t kMaxPeerMessageBytes = int64_t{64} << 20;

// The largest request message a client may need to send, in bytes: the
// bigger of a CreateSessions of `max_batch_create` sessions at the record
// limits and a BatchValidateSessions of `max_batch_validate` tokens, with
// protobuf framing, and never below gRPC's default of 4 MiB. The client API
// server refuses longer messages (RESOURCE_EXHAUSTED, from gRPC).
int64_t MaxRequestMessageBytes(const Limits& limits, size_t max_batch_create,
                               size_t max_batch_validate);

// Checks that the limits are consistent with each other (min <= default <=
// max and so on). InvalidArgument naming the flags otherwise.
absl::Status CheckLimitsConsistent(const Limits& limits);

}  // namespace sessiond::server

#endif  // SESSIOND_SERVER_LIMITS_H_
