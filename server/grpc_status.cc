// Copyright sessiond authors. Licensed under the Apache License 2.0.
#include "server/grpc_status.h"

#include <algorithm>
#include <cstdint>
#include <optional>
#include <string>

#include "absl/random/random.h"
#include "absl/strings/cord.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "google/rpc/error_details.pb.h"
#include "google/rpc/status.pb.h"
#include "server/write_path.h"

namespace sessiond::server {
namespace {

using absl::StatusCode;

constexpr int64_t kNoRetry = -1;
// WithRetryDelay's payload: the delay in ms, decimal.
constexpr char kRetryDelayPayload[] = "sessiond.dev/retry-delay-ms";

// One row: a status of `code` whose message starts with (or, for `anywhere`,
// contains) `text` gets `reason`, and RetryInfo with `retry_ms` unless it is
// kNoRetry. First match wins. The messages are the ones docs/API.md lists;
// tests/server/grpc_status_test.cc holds this table to the real texts.
struct Row {
  StatusCode code;
  const char* text;
  const char* reason;
  int64_t retry_ms;
  bool anywhere = false;
};

const Row kRows[] = {
    // The state machine (storage/session_state_machine*.cc).
    {StatusCode::kFailedPrecondition, "session is revoked", "SESSION_REVOKED",
     kNoRetry},
    {StatusCode::kFailedPrecondition, "session is expired", "SESSION_EXPIRED",
     kNoRetry},
    {StatusCode::kFailedPrecondition, "session is at its version limit",
     "VERSION_LIMIT", kNoRetry},
    {StatusCode::kFailedPrecondition,
     "the user already has the most live sessions allowed",
     "USER_SESSION_LIMIT", kNoRetry},
    {StatusCode::kFailedPrecondition, "request_id: the session this request_id",
     "REQUEST_ID_SESSION_ENDED", kNoRetry},
    {StatusCode::kFailedPrecondition,
     "request_id: already used by this user within its window",
     "REQUEST_ID_REUSED", kNoRetry},
    {StatusCode::kAborted, "version mismatch", "VERSION_MISMATCH", kNoRetry},
    {StatusCode::kAborted, "the token's signing key (kid ",
     "SIGNING_KEY_RETIRED", kNoRetry},
    {StatusCode::kFailedPrecondition,
     "the confirmation token is unknown or its 60 s have passed",
     "CONFIRMATION_UNKNOWN", kNoRetry},
    {StatusCode::kFailedPrecondition,
     "the confirmation token was issued for another selection",
     "CONFIRMATION_MISMATCH", kNoRetry},
    {StatusCode::kFailedPrecondition, " was already restored at ",
     "ALREADY_RESTORED", kNoRetry, /*anywhere=*/true},
    {StatusCode::kFailedPrecondition, " can no longer be restored: ",
     "RETENTION_ENDED", kNoRetry, /*anywhere=*/true},
    // Peer traffic (server/peer_service.cc): before membership, whose
    // " is not a member" matches anywhere in a message.
    {StatusCode::kFailedPrecondition, "peer traffic from removed node ",
     "MEMBER_REMOVED", kNoRetry},
    {StatusCode::kFailedPrecondition, "peer traffic from ", "PEER_REFUSED",
     kNoRetry},
    {StatusCode::kFailedPrecondition, "this node belongs to cluster ",
     "WRONG_CLUSTER", kNoRetry},
    // Membership (replication/core/raft_core.cc, server/write_path.cc).
    // Refused only once the call's deadline left no room to wait for the
    // previous change: it is applied within a few heartbeats.
    {StatusCode::kFailedPrecondition, "a membership change at ",
     "MEMBERSHIP_CHANGE_PENDING", 200},
    {StatusCode::kFailedPrecondition, " is already a member",
     "ALREADY_A_MEMBER", kNoRetry, /*anywhere=*/true},
    {StatusCode::kFailedPrecondition, " is not a learner", "NOT_A_LEARNER",
     kNoRetry, /*anywhere=*/true},
    {StatusCode::kFailedPrecondition, " is not a member", "NOT_A_MEMBER",
     kNoRetry, /*anywhere=*/true},
    {StatusCode::kFailedPrecondition, "cannot remove the last voter",
     "LAST_VOTER", kNoRetry},
    {StatusCode::kFailedPrecondition, "learner ", "LEARNER_BEHIND", kNoRetry},
    {StatusCode::kFailedPrecondition, "no other voter to hand leadership to",
     "NO_OTHER_VOTER", kNoRetry},
    // Backups (server/backup.cc).
    {StatusCode::kFailedPrecondition, " is not empty; a backup goes",
     "BACKUP_DIR_NOT_EMPTY", kNoRetry, /*anywhere=*/true},
    {StatusCode::kFailedPrecondition, " exists and is not a directory",
     "BACKUP_DIR_NOT_A_DIRECTORY", kNoRetry, /*anywhere=*/true},
    {StatusCode::kFailedPrecondition, " is inside the data dir",
     "BACKUP_DIR_INSIDE_DATA_DIR", kNoRetry, /*anywhere=*/true},

    // Back-pressure (replication/, storage/disk_guard.cc, the service).
    {StatusCode::kResourceExhausted, "too many writes in flight",
     "TOO_MANY_PENDING_WRITES", 100},
    {StatusCode::kResourceExhausted, "too much uncommitted data",
     "TOO_MUCH_UNCOMMITTED_DATA", 200},
    {StatusCode::kResourceExhausted, "the data disk of this node", "DISK_FULL",
     1000},
    {StatusCode::kResourceExhausted, "this node cannot write its Raft log",
     "LOG_WRITE_FAILED", 1000},
    {StatusCode::kResourceExhausted, "the database of this node",
     "DATABASE_REFUSES_WRITES", 1000},
    {StatusCode::kResourceExhausted, "too many StreamValidateSessions streams",
     "TOO_MANY_STREAMS", kNoRetry},
    {StatusCode::kResourceExhausted, "too many large BatchValidateSessions",
     "TOO_MANY_BATCHES", 200},
    {StatusCode::kResourceExhausted, "too many large answers wait",
     "TOO_MANY_LARGE_ANSWERS", 200},
    // server/create_rate_limiter.h; the delay is the call's own wait.
    {StatusCode::kResourceExhausted, "create rate limit of ", "RATE_LIMITED",
     1000},
    // server/write_admission.h; the delay is the queueing delay measured.
    {StatusCode::kResourceExhausted, "this node is overloaded", "OVERLOADED",
     100},

    // Unavailable: the write path, the read barrier, the node.
    {StatusCode::kUnavailable, "not committed before the deadline",
     "NOT_COMMITTED", 200},
    {StatusCode::kUnavailable, "no leader before the deadline", "NOT_PROPOSED",
     200},
    {StatusCode::kUnavailable, "lost contact with the leader",
     "LEADER_UNREACHABLE", 200},
    {StatusCode::kUnavailable, "leadership changed", "LEADERSHIP_CHANGED", 100},
    {StatusCode::kUnavailable, "this node received a snapshot in place",
     "SNAPSHOT_REPLACED_WRITE", 100},
    {StatusCode::kUnavailable, "not the leader", "NOT_LEADER", 100},
    {StatusCode::kUnavailable, "leadership transfer", "LEADERSHIP_TRANSFER",
     200},
    {StatusCode::kUnavailable, "shutting down", "SHUTTING_DOWN", 50},
    {StatusCode::kUnavailable, "not ready: the node is starting", "NOT_READY",
     500},
    {StatusCode::kUnavailable, "this node is starting", "NOT_READY", 500},
    {StatusCode::kUnavailable, "no leader confirmed this read in time",
     "READ_NOT_CONFIRMED", 200},
    {StatusCode::kUnavailable, "no leader known", "NO_LEADER", 200},
    {StatusCode::kUnavailable, "no answer from the leader in time",
     "LEADER_TIMEOUT", 200},
    {StatusCode::kUnavailable, "this node holds no data yet", "NO_DATA_YET",
     1000},
    {StatusCode::kUnavailable, "this node's wall clock is behind",
     "CLOCK_BEHIND", 100},
    {StatusCode::kUnavailable, "this node's wall clock is ahead", "CLOCK_AHEAD",
     100},
    {StatusCode::kUnavailable, "this node could not confirm it is up to date",
     "NOT_UP_TO_DATE", 100},
    {StatusCode::kUnavailable, "the create key is not applied on this node",
     "NOT_UP_TO_DATE", 100},
    {StatusCode::kUnavailable, "a backup is already running", "BACKUP_RUNNING",
     5000},
    {StatusCode::kUnavailable, "the node was installing a snapshot",
     "SNAPSHOT_INSTALLING", 1000},
};

// When no row matches.
ErrorDetail Fallback(StatusCode code) {
  switch (code) {
    case StatusCode::kUnavailable:
      return {"UNAVAILABLE", absl::Milliseconds(200)};
    case StatusCode::kResourceExhausted:
      return {"RESOURCE_EXHAUSTED", absl::Milliseconds(500)};
    case StatusCode::kAborted:
      return {"ABORTED", std::nullopt};
    default:
      return {"FAILED_PRECONDITION", std::nullopt};
  }
}

bool Covered(StatusCode code) {
  return code == StatusCode::kFailedPrecondition ||
         code == StatusCode::kAborted ||
         code == StatusCode::kResourceExhausted ||
         code == StatusCode::kUnavailable;
}

}  // namespace

absl::Status WithErrorMetadata(absl::Status status, absl::string_view key,
                               absl::string_view value) {
  if (!status.ok()) {
    status.SetPayload(absl::StrCat(kErrorMetadataPayloadPrefix, key),
                      absl::Cord(value));
  }
  return status;
}

absl::Status WithRetryDelay(absl::Status status, absl::Duration delay) {
  if (!status.ok()) {
    // Rounded up: a client that waits exactly this long must not come back
    // a fraction of a millisecond early and be refused again.
    const int64_t ms =
        absl::ToInt64Milliseconds(absl::Ceil(delay, absl::Milliseconds(1)));
    status.SetPayload(kRetryDelayPayload,
                      absl::Cord(absl::StrCat(std::max<int64_t>(1, ms))));
  }
  return status;
}

absl::Duration SpreadRetryDelay(absl::Duration least) {
  thread_local absl::InsecureBitGen rng;
  return least * absl::Uniform(rng, 1.0, 1.5);
}

std::optional<ErrorDetail> ErrorDetailOf(const absl::Status& status) {
  if (!Covered(status.code())) return std::nullopt;
  const absl::string_view message = status.message();
  for (const Row& row : kRows) {
    if (row.code != status.code()) continue;
    const bool match = row.anywhere ? absl::StrContains(message, row.text)
                                    : absl::StartsWith(message, row.text);
    if (!match) continue;
    ErrorDetail detail{row.reason, std::nullopt};
    if (row.retry_ms != kNoRetry) {
      detail.retry_delay = absl::Milliseconds(row.retry_ms);
    }
    if (auto ms = status.GetPayload(kRetryDelayPayload)) {
      int64_t value = 0;
      if (absl::SimpleAtoi(std::string(*ms), &value) && value > 0) {
        detail.retry_delay = absl::Milliseconds(value);
      }
    }
    return detail;
  }
  return Fallback(status.code());
}

grpc::Status ToGrpcStatus(const absl::Status& status) {
  if (status.ok()) return grpc::Status::OK;
  const int code = static_cast<int>(status.code());
  // absl codes 1..16 are gRPC's codes 1..16; anything else is UNKNOWN.
  const grpc::StatusCode grpc_code = (code >= 1 && code <= 16)
                                         ? static_cast<grpc::StatusCode>(code)
                                         : grpc::StatusCode::UNKNOWN;
  std::string message(status.message());
  std::optional<ErrorDetail> detail = ErrorDetailOf(status);
  if (!detail) return grpc::Status(grpc_code, message);

  google::rpc::ErrorInfo info;
  info.set_reason(detail->reason);
  info.set_domain(kErrorDomain);
  auto* metadata = info.mutable_metadata();
  status.ForEachPayload(
      [&](absl::string_view type_url, const absl::Cord& payload) {
        if (absl::StartsWith(type_url, kErrorMetadataPayloadPrefix)) {
          (*metadata)[std::string(type_url.substr(
              sizeof(kErrorMetadataPayloadPrefix) - 1))] = std::string(payload);
        } else if (type_url == kNotProposedPayload) {
          (*metadata)["not_proposed"] = "true";
        }
      });
  google::rpc::Status details;
  details.set_code(static_cast<int>(grpc_code));
  details.set_message(message);
  details.add_details()->PackFrom(info);
  if (detail->retry_delay) {
    google::rpc::RetryInfo retry;
    const int64_t ms = absl::ToInt64Milliseconds(*detail->retry_delay);
    retry.mutable_retry_delay()->set_seconds(ms / 1000);
    retry.mutable_retry_delay()->set_nanos(static_cast<int32_t>(ms % 1000) *
                                           1'000'000);
    details.add_details()->PackFrom(retry);
  }
  return grpc::Status(grpc_code, std::move(message),
                      details.SerializeAsString());
}

}  // namespace sessiond::server
