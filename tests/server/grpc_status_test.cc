// Copyright sessiond authors. Licensed under the Apache License 2.0.
//
// server/grpc_status.cc: every status message docs/API.md lists gets its
// ErrorInfo reason (and RetryInfo where a retry helps), carried in the
// gRPC status's binary details as a google.rpc.Status.
#include "server/grpc_status.h"

#include <optional>
#include <string>
#include <vector>

#include "absl/strings/cord.h"
#include "google/rpc/error_details.pb.h"
#include "google/rpc/status.pb.h"
#include "gtest/gtest.h"
#include "server/session_service.h"
#include "server/write_path.h"

namespace sessiond::server {
namespace {

using absl::StatusCode;

struct Known {
  StatusCode code;
  std::string message;
  std::string reason;
  bool retry;
};

// The messages as the code writes them (docs/API.md).
const std::vector<Known>& KnownMessages() {
  static const auto* known = new std::vector<Known>{
      {StatusCode::kFailedPrecondition, "session is revoked", "SESSION_REVOKED",
       false},
      {StatusCode::kFailedPrecondition, "session is expired", "SESSION_EXPIRED",
       false},
      {StatusCode::kFailedPrecondition, "session is at its version limit",
       "VERSION_LIMIT", false},
      {StatusCode::kFailedPrecondition,
       "the user already has the most live sessions allowed (2, "
       "--max_sessions_per_user): revoke one (RevokeSession) or wait until "
       "one expires",
       "USER_SESSION_LIMIT", false},
      {StatusCode::kFailedPrecondition,
       "request_id: the session this request_id created (session_id x) has "
       "since been revoked, has expired or had its token rotated, so its "
       "token is no longer valid; create it with a new request_id",
       "REQUEST_ID_SESSION_ENDED", false},
      {StatusCode::kFailedPrecondition,
       "request_id: already used by this user within its window for a "
       "create with other fields (ttl_ms, idle_timeout_ms, attributes or "
       "client metadata; session_id x): a retry must send the same request, "
       "and a new login a new request_id",
       "REQUEST_ID_REUSED", false},
      {StatusCode::kAborted, "version mismatch: expected 5, session is at 1",
       "VERSION_MISMATCH", false},
      {StatusCode::kAborted,
       "the token's signing key (kid k1) was retired while the create was on "
       "its way, so no JWKS would verify the token; nothing was created: "
       "retry the create (the active key signs it)",
       "SIGNING_KEY_RETIRED", false},
      {StatusCode::kFailedPrecondition,
       "the confirmation token is unknown or its 60 s have passed: ask for a "
       "new preview (call again without a token) and confirm with the token "
       "it returns",
       "CONFIRMATION_UNKNOWN", false},
      {StatusCode::kFailedPrecondition,
       "the confirmation token was issued for another selection: ask for a "
       "preview of this one",
       "CONFIRMATION_MISMATCH", false},
      {StatusCode::kFailedPrecondition,
       "revocation 7 was already restored at 1000 (cluster time, Unix ms)",
       "ALREADY_RESTORED", false},
      {StatusCode::kFailedPrecondition,
       "revocation 7 can no longer be restored: its retention ended at 1000 "
       "(cluster time, Unix ms), so its sessions are revoked for good",
       "RETENTION_ENDED", false},
      {StatusCode::kFailedPrecondition,
       "a membership change at 12 is not yet applied",
       "MEMBERSHIP_CHANGE_PENDING", true},
      {StatusCode::kFailedPrecondition, "node 4 is already a member",
       "ALREADY_A_MEMBER", false},
      {StatusCode::kFailedPrecondition,
       "node 4 is not a learner (add it with AddMember first)", "NOT_A_LEARNER",
       false},
      {StatusCode::kFailedPrecondition, "node 4 is not a member",
       "NOT_A_MEMBER", false},
      {StatusCode::kFailedPrecondition, "cannot remove the last voter",
       "LAST_VOTER", false},
      // Peer traffic (server/peer_service.cc).
      {StatusCode::kFailedPrecondition,
       "peer traffic from removed node 3 refused: it was removed from cluster "
       "0x7",
       "MEMBER_REMOVED", false},
      {StatusCode::kFailedPrecondition,
       "peer traffic from unknown node 9 refused: it is not a member of this "
       "cluster",
       "PEER_REFUSED", false},
      {StatusCode::kFailedPrecondition,
       "learner 4 has not caught up (it holds 3 of 2000 committed entries); "
       "promote it once it has (ClusterStatus shows its lag)",
       "LEARNER_BEHIND", false},
      {StatusCode::kFailedPrecondition, "no other voter to hand leadership to",
       "NO_OTHER_VOTER", false},
      {StatusCode::kFailedPrecondition,
       "dir: /b is not empty; a backup goes into a new or empty folder",
       "BACKUP_DIR_NOT_EMPTY", false},
      {StatusCode::kFailedPrecondition, "dir: /b exists and is not a directory",
       "BACKUP_DIR_NOT_A_DIRECTORY", false},
      {StatusCode::kFailedPrecondition,
       "dir: /d/x is inside the data dir; choose a folder outside it",
       "BACKUP_DIR_INSIDE_DATA_DIR", false},
      {StatusCode::kResourceExhausted,
       "too many writes in flight (100000 waiting for the log); retry "
       "shortly",
       "TOO_MANY_PENDING_WRITES", true},
      {StatusCode::kResourceExhausted,
       "too much uncommitted data: 300 bytes wait for a quorum",
       "TOO_MUCH_UNCOMMITTED_DATA", true},
      {StatusCode::kResourceExhausted,
       "the data disk of this node (/d) is full: 1 MiB free, under the 64 "
       "MiB kept free (--disk_reserve_mb); writes are refused until it has "
       "128 MiB free (they resume by themselves); validations are still "
       "answered. ",
       "DISK_FULL", true},
      {StatusCode::kResourceExhausted,
       "this node cannot write its Raft log (No space left on device); "
       "writes are refused until it can (retried by itself)",
       "LOG_WRITE_FAILED", true},
      {StatusCode::kResourceExhausted,
       "the database of this node (/d) refuses writes: a write failed for "
       "lack of space (IO error: No space left on device) though the disk "
       "has 900.0 MiB free: the database still refuses writes after a full "
       "disk; writes are tried again within 500ms, and a node whose writes "
       "go on failing reopens its database by itself; validations are still "
       "answered",
       "DATABASE_REFUSES_WRITES", true},
      {StatusCode::kResourceExhausted,
       "too many StreamValidateSessions streams open on this node (limit "
       "1000); close streams you do not use, share one stream per client "
       "process, or call ValidateSession / BatchValidateSessions",
       "TOO_MANY_STREAMS", false},
      {StatusCode::kResourceExhausted,
       "too many large BatchValidateSessions wait on this node (limit 64); "
       "retry after the delay, send batches of at most 256 tokens, or spread "
       "them over more nodes",
       "TOO_MANY_BATCHES", true},
      {StatusCode::kUnavailable,
       "not committed before the deadline (no leader, or no quorum): the "
       "write may still apply; retry only if it is idempotent",
       "NOT_COMMITTED", true},
      {StatusCode::kUnavailable,
       "no leader before the deadline: the write was not proposed (nothing "
       "was changed); retrying is safe",
       "NOT_PROPOSED", true},
      {StatusCode::kUnavailable,
       "lost contact with the leader (node 2) while forwarding the write: "
       "Socket closed; it may or may not have applied",
       "LEADER_UNREACHABLE", true},
      {StatusCode::kUnavailable, "leadership changed; retry",
       "LEADERSHIP_CHANGED", true},
      {StatusCode::kUnavailable,
       "this node received a snapshot in place of the write's log entry: the "
       "write may or may not have applied",
       "SNAPSHOT_REPLACED_WRITE", true},
      {StatusCode::kUnavailable, "not the leader; leader is 2", "NOT_LEADER",
       true},
      {StatusCode::kUnavailable, "leadership transfer to 2 in progress",
       "LEADERSHIP_TRANSFER", true},
      {StatusCode::kUnavailable, "shutting down", "SHUTTING_DOWN", true},
      {StatusCode::kUnavailable, "not ready: the node is starting", "NOT_READY",
       true},
      {StatusCode::kUnavailable, "this node is starting; retry", "NOT_READY",
       true},
      {StatusCode::kUnavailable,
       "no leader confirmed this read in time; retry (or read with "
       "consistency LOCAL)",
       "READ_NOT_CONFIRMED", true},
      {StatusCode::kUnavailable, "no leader known", "NO_LEADER", true},
      {StatusCode::kUnavailable, "no answer from the leader in time",
       "LEADER_TIMEOUT", true},
      {StatusCode::kUnavailable,
       "this node holds no data yet (it is receiving the cluster's state); "
       "ask another node",
       "NO_DATA_YET", true},
      {StatusCode::kUnavailable,
       "this node's wall clock is behind cluster time by 7200 s: a JWT it "
       "signed would expire early",
       "CLOCK_BEHIND", true},
      {StatusCode::kUnavailable,
       "this node's wall clock is behind the other members' by 7200 s: a JWT "
       "it signed would expire early",
       "CLOCK_BEHIND", true},
      {StatusCode::kUnavailable,
       "this node's wall clock is ahead of the other members' by 7200 s: a JWT "
       "it signed would outlive its session",
       "CLOCK_AHEAD", true},
      {StatusCode::kUnavailable,
       "this node could not confirm it is up to date and does not know this "
       "token (it may have been created elsewhere meanwhile): ask another "
       "node, or retry shortly",
       "NOT_UP_TO_DATE", true},
      {StatusCode::kUnavailable,
       "the create key is not applied on this node yet (nothing was "
       "created); retry",
       "NOT_UP_TO_DATE", true},
      {StatusCode::kUnavailable,
       "a backup is already running on this node; retry when it ends",
       "BACKUP_RUNNING", true},
      {StatusCode::kUnavailable,
       "the node was installing a snapshot (at 5, state applied through 4); "
       "take the backup again",
       "SNAPSHOT_INSTALLING", true},
  };
  return *known;
}

// The google.rpc.Status a gRPC status carries, parsed.
google::rpc::Status DetailsOf(const grpc::Status& status) {
  google::rpc::Status details;
  EXPECT_TRUE(details.ParseFromString(status.error_details()));
  return details;
}

std::optional<google::rpc::ErrorInfo> InfoOf(
    const google::rpc::Status& details) {
  for (const auto& any : details.details()) {
    google::rpc::ErrorInfo info;
    if (any.UnpackTo(&info)) return info;
  }
  return std::nullopt;
}

std::optional<google::rpc::RetryInfo> RetryOf(
    const google::rpc::Status& details) {
  for (const auto& any : details.details()) {
    google::rpc::RetryInfo retry;
    if (any.UnpackTo(&retry)) return retry;
  }
  return std::nullopt;
}

TEST(GrpcStatusTest, EveryKnownMessageHasItsReason) {
  for (const Known& k : KnownMessages()) {
    const absl::Status status(k.code, k.message);
    const std::optional<ErrorDetail> detail = ErrorDetailOf(status);
    ASSERT_TRUE(detail.has_value()) << k.message;
    EXPECT_EQ(detail->reason, k.reason) << k.message;
    EXPECT_EQ(detail->retry_delay.has_value(), k.retry) << k.message;

    const grpc::Status converted = ToGrpcStatus(status);
    EXPECT_EQ(static_cast<int>(converted.error_code()),
              static_cast<int>(k.code));
    EXPECT_EQ(converted.error_message(), k.message);
    const google::rpc::Status details = DetailsOf(converted);
    EXPECT_EQ(details.code(), static_cast<int>(k.code));
    EXPECT_EQ(details.message(), k.message);
    const auto info = InfoOf(details);
    ASSERT_TRUE(info.has_value()) << k.message;
    EXPECT_EQ(info->reason(), k.reason);
    EXPECT_EQ(info->domain(), "sessiond.dev");
    const auto retry = RetryOf(details);
    EXPECT_EQ(retry.has_value(), k.retry) << k.message;
    if (retry) {
      EXPECT_GT(retry->retry_delay().seconds() * 1000 +
                    retry->retry_delay().nanos() / 1'000'000,
                0);
    }
  }
}

TEST(GrpcStatusTest, TheServicesOwnStatusesAreKnown) {
  EXPECT_EQ(ErrorDetailOf(ShuttingDown())->reason, "SHUTTING_DOWN");
}

TEST(GrpcStatusTest, UnknownMessagesGetTheCodesName) {
  EXPECT_EQ(ErrorDetailOf(absl::FailedPreconditionError("new"))->reason,
            "FAILED_PRECONDITION");
  EXPECT_EQ(ErrorDetailOf(absl::AbortedError("new"))->reason, "ABORTED");
  const auto exhausted = ErrorDetailOf(absl::ResourceExhaustedError("new"));
  EXPECT_EQ(exhausted->reason, "RESOURCE_EXHAUSTED");
  EXPECT_TRUE(exhausted->retry_delay.has_value());
  EXPECT_EQ(ErrorDetailOf(absl::UnavailableError("new"))->reason,
            "UNAVAILABLE");
}

TEST(GrpcStatusTest, OtherCodesCarryNoDetails) {
  EXPECT_TRUE(ToGrpcStatus(absl::OkStatus()).ok());
  for (const absl::Status& s :
       {absl::NotFoundError("no such session"),
        absl::InvalidArgumentError("token: must not be empty"),
        absl::AlreadyExistsError("x"), absl::InternalError("x"),
        absl::DeadlineExceededError("x")}) {
    EXPECT_FALSE(ErrorDetailOf(s).has_value());
    const grpc::Status converted = ToGrpcStatus(s);
    EXPECT_EQ(converted.error_message(), s.message());
    EXPECT_TRUE(converted.error_details().empty());
  }
}

TEST(GrpcStatusTest, PayloadsBecomeErrorInfoMetadata) {
  absl::Status status = absl::UnavailableError(
      "no leader before the deadline: the write was not proposed (nothing "
      "was changed); retrying is safe");
  status.SetPayload(kNotProposedPayload, absl::Cord("1"));
  status = WithErrorMetadata(status, "leader_id", "2");
  status = WithErrorMetadata(status, "leader", "127.0.0.1:7002");
  const auto info = InfoOf(DetailsOf(ToGrpcStatus(status)));
  ASSERT_TRUE(info.has_value());
  EXPECT_EQ(info->reason(), "NOT_PROPOSED");
  EXPECT_EQ(info->metadata().size(), 3u);
  EXPECT_EQ(info->metadata().at("leader_id"), "2");
  EXPECT_EQ(info->metadata().at("leader"), "127.0.0.1:7002");
  EXPECT_EQ(info->metadata().at("not_proposed"), "true");
  // An OK status takes no payload.
  EXPECT_TRUE(WithErrorMetadata(absl::OkStatus(), "k", "v").ok());
}

// The delay a client is asked to wait is rounded up to whole milliseconds:
// rounded down, a client that waited exactly that long came back a fraction
// early and was refused again (RateLimitTest.GrpcRetriesWaitAsLongAsTheServer
// Asks failed so in CI: three attempts, three refusals).
TEST(GrpcStatusTest, ARetryDelayIsRoundedUp) {
  const absl::Status limited = WithRetryDelay(
      absl::ResourceExhaustedError(
          "create rate limit of 2/s (burst 3) for x reached; retry in 301 ms"),
      absl::Microseconds(300'700));
  const std::optional<ErrorDetail> detail = ErrorDetailOf(limited);
  ASSERT_TRUE(detail.has_value());
  ASSERT_TRUE(detail->retry_delay.has_value());
  EXPECT_EQ(*detail->retry_delay, absl::Milliseconds(301));
}

}  // namespace
}  // namespace sessiond::server
