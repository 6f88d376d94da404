// Copyright sessiond authors. Licensed under the Apache License 2.0.
#ifndef SESSIOND_CLIENT_GRPC_STATUS_H_
#define SESSIOND_CLIENT_GRPC_STATUS_H_

#include <grpcpp/support/status.h>

#include "absl/status/status.h"

namespace sessiond::client {

// The one place the client turns a gRPC status into an absl::Status. The
// numeric codes are the same in both (absl/status/status.h documents the
// correspondence), so the code and the server's message pass through
// unchanged; a code outside the known range becomes kUnknown.
absl::Status FromGrpcStatus(const grpc::Status& status);

}  // namespace sessiond::client

#endif  // SESSIOND_CLIENT_GRPC_STATUS_H_
