// Copyright sessiond authors. Licensed under the Apache License 2.0.
#ifndef SESSIOND_TESTS_SERVER_RAW_GRPC_H_
#define SESSIOND_TESTS_SERVER_RAW_GRPC_H_

#include <grpcpp/support/status.h>

#include <string>
#include <vector>

namespace sessiond::server::testing {

// Calls that send bytes as they are, through gRPC's generic stub: what a
// client with broken or foreign stubs sends. Each has a 30 s deadline.

struct RawUnaryResult {
  grpc::Status status;
  std::string reply;
};
// `method` is the full path, e.g. "/sessiond.v1.SessionService/CreateSession".
RawUnaryResult RawUnary(const std::string& address, const std::string& method,
                        const std::string& request);

struct RawStreamResult {
  grpc::Status status;
  std::vector<std::string> replies;
  size_t messages_sent = 0;  // before a write failed (the stream ended)
};
// Writes every message, half-closes, reads every reply, then the status.
RawStreamResult RawBidiStream(const std::string& address,
                              const std::string& method,
                              const std::vector<std::string>& messages);

}  // namespace sessiond::server::testing

#endif  // SESSIOND_TESTS_SERVER_RAW_GRPC_H_
