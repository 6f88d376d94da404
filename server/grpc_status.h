// Copyright sessiond authors. Licensed under the Apache License 2.0.
#ifndef SESSIOND_SERVER_GRPC_STATUS_H_
#define SESSIOND_SERVER_GRPC_STATUS_H_

#include <grpcpp/support/status.h>

#include "absl/status/status.h"

namespace sessiond::server {

// The only place the server turns an absl::Status into a gRPC status. The
// numeric codes are the same (absl/status/status.h documents the
// correspondence), so the code and the message pass through unchanged.
grpc::Status ToGrpcStatus(const absl::Status& status);

}  // namespace sessiond::server

#endif  // SESSIOND_SERVER_GRPC_STATUS_H_
