// Copyright sessiond authors. Licensed under the Apache License 2.0.
#ifndef SESSIOND_CLIENT_GRPC_STATUS_H_
#define SESSIOND_CLIENT_GRPC_STATUS_H_

#include <grpcpp/support/status.h>

#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "google/rpc/error_details.pb.h"

namespace sessiond::client {

// The one place the client turns a gRPC status into an absl::Status. The
// numeric codes are the same in both (absl/status/status.h documents the
// correspondence), so the code and the server's message pass through
// unchanged; a code outside the known range becomes kUnknown. The server's
// error details (a google.rpc.Status in "grpc-status-details-bin") become
// payloads of the absl::Status, one per detail, keyed by the detail's type
// URL ("type.googleapis.com/google.rpc.ErrorInfo") with its serialized
// message as the value; the accessors below read them.
absl::Status FromGrpcStatus(const grpc::Status& status);

// The google.rpc.ErrorInfo the server attached (sessiond sends one with
// every FAILED_PRECONDITION, ABORTED, RESOURCE_EXHAUSTED and UNAVAILABLE;
// docs/API.md lists the reasons); nullopt when there is none.
std::optional<google::rpc::ErrorInfo> ErrorInfoOf(const absl::Status& status);

// ErrorInfoOf(status)->reason(), or "" when there is no ErrorInfo. E.g.
// "SESSION_REVOKED", "SESSION_EXPIRED", "USER_SESSION_LIMIT".
std::string ErrorReason(const absl::Status& status);

// Replaces `status`'s ErrorInfo with `info` (the client's own answer, where
// the server's last one would mislead).
void SetErrorInfo(const google::rpc::ErrorInfo& info, absl::Status* status);

// The google.rpc.RetryInfo delay the server suggested; nullopt when none.
std::optional<absl::Duration> RetryDelay(const absl::Status& status);

}  // namespace sessiond::client

#endif  // SESSIOND_CLIENT_GRPC_STATUS_H_
