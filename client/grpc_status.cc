// Copyright sessiond authors. Licensed under the Apache License 2.0.
#include "client/grpc_status.h"

namespace sessiond::client {

absl::Status FromGrpcStatus(const grpc::Status& status) {
  if (status.ok()) return absl::OkStatus();
  const int code = static_cast<int>(status.error_code());
  // grpc::StatusCode and absl::StatusCode share the values 0..16.
  if (code < 0 || code > static_cast<int>(absl::StatusCode::kUnauthenticated)) {
    return absl::UnknownError(status.error_message());
  }
  return absl::Status(static_cast<absl::StatusCode>(code),
                      status.error_message());
}

}  // namespace sessiond::client
