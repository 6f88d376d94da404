// Copyright sessiond authors. Licensed under the Apache License 2.0.
#include "server/grpc_status.h"

#include <string>

namespace sessiond::server {

grpc::Status ToGrpcStatus(const absl::Status& status) {
  if (status.ok()) return grpc::Status::OK;
  const int code = static_cast<int>(status.code());
  // absl codes 1..16 are gRPC's codes 1..16; anything else is UNKNOWN.
  const grpc::StatusCode grpc_code = (code >= 1 && code <= 16)
                                         ? static_cast<grpc::StatusCode>(code)
                                         : grpc::StatusCode::UNKNOWN;
  return grpc::Status(grpc_code, std::string(status.message()));
}

}  // namespace sessiond::server
