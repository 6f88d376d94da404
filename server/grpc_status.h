// Copyright sessiond authors. Licensed under the Apache License 2.0.
#ifndef SESSIOND_SERVER_GRPC_STATUS_H_
#define SESSIOND_SERVER_GRPC_STATUS_H_

#include <grpcpp/support/status.h>

#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace sessiond::server {

// The google.rpc.ErrorInfo domain of sessiond's reasons.
inline constexpr char kErrorDomain[] = "sessiond.dev";

// absl::Status payloads whose type URL starts with this become entries of
// the ErrorInfo's metadata (the rest of the URL is the key, the payload the
// value). WithErrorMetadata sets one.
inline constexpr char kErrorMetadataPayloadPrefix[] =
    "sessiond.dev/error-metadata/";
absl::Status WithErrorMetadata(absl::Status status, absl::string_view key,
                               absl::string_view value);

// A delay the RetryInfo of this status gives instead of its row's fixed one
// (server/grpc_status.cc): the wait that one call learned, e.g. the time
// until its caller's create rate limit lets it through. Kept only on the
// node that made the status (payloads do not cross the peer port).
absl::Status WithRetryDelay(absl::Status status, absl::Duration delay);

// `least` stretched by a random factor in [1, 1.5), for a delay that many
// callers may be refused with at once (a rate limit, an overload): told
// the same wait, they would all come back together and be refused
// together again.
absl::Duration SpreadRetryDelay(absl::Duration least);

// What the details of a failed call say.
struct ErrorDetail {
  // UPPER_SNAKE_CASE, e.g. SESSION_REVOKED (docs/API.md, "Error details").
  std::string reason;
  // Set when waiting this long and retrying is worth it (RetryInfo).
  std::optional<absl::Duration> retry_delay;
};

// The detail for a FAILED_PRECONDITION, ABORTED, RESOURCE_EXHAUSTED or
// UNAVAILABLE status; nullopt for other codes (and OK). The reason is read
// from the code and the message, not from payloads: a status that crossed
// the peer port (a write a follower forwarded) keeps only those two. A
// message this table does not know gets the code's name as its reason.
std::optional<ErrorDetail> ErrorDetailOf(const absl::Status& status);

// The only place the server turns an absl::Status into a gRPC status. The
// numeric codes are the same (absl/status/status.h documents the
// correspondence), so the code and the message pass through unchanged; for
// the codes ErrorDetailOf covers, the gRPC status also carries a serialized
// google.rpc.Status (gRPC sends it as "grpc-status-details-bin") with a
// google.rpc.ErrorInfo (reason, domain kErrorDomain, metadata from the
// payloads above and "not_proposed": "true" for a write no node proposed)
// and, when ErrorDetailOf gives a delay, a google.rpc.RetryInfo.
grpc::Status ToGrpcStatus(const absl::Status& status);

}  // namespace sessiond::server

#endif  // SESSIOND_SERVER_GRPC_STATUS_H_
