// Copyright sessiond authors. Licensed under the Apache License 2.0.
// Connects a SessionClient to 127.0.0.1:<port>, where nothing listens, and
// checks that a validation fails as "the store could not answer".
//   package_app <port>
#include <sessiond/client/grpc_status.h>
#include <sessiond/client/session_client.h>

#include <cstdio>
#include <string>

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: package_app <port>\n");
    return 2;
  }
  sessiond::client::SessionClientOptions options;
  options.max_attempts = 1;
  options.call_timeout = absl::Seconds(2);
  auto client = sessiond::client::SessionClient::Connect(
      std::string("127.0.0.1:") + argv[1], options);
  absl::StatusOr<sessiond::v1::ValidateSessionResponse> answer =
      client->Validate("no-such-token");
  if (answer.ok() ||
      (answer.status().code() != absl::StatusCode::kUnavailable &&
       answer.status().code() != absl::StatusCode::kDeadlineExceeded)) {
    std::fprintf(stderr, "package_app: expected UNAVAILABLE, got %s\n",
                 answer.status().ToString().c_str());
    return 1;
  }
  std::printf("package_app: %s (reason \"%s\")\n",
              answer.status().ToString().c_str(),
              sessiond::client::ErrorReason(answer.status()).c_str());
  return 0;
}
