// Copyright sessiond authors. Licensed under the Apache License 2.0.
#include "client/grpc_status.h"

#include "absl/strings/cord.h"
#include "google/rpc/status.pb.h"

namespace sessiond::client {
namespace {

constexpr char kErrorInfoUrl[] = "type.googleapis.com/google.rpc.ErrorInfo";
constexpr char kRetryInfoUrl[] = "type.googleapis.com/google.rpc.RetryInfo";

}  // namespace

absl::Status FromGrpcStatus(const grpc::Status& status) {
  if (status.ok()) return absl::OkStatus();
  const int code = static_cast<int>(status.error_code());
  // grpc::StatusCode and absl::StatusCode share the values 0..16.
  absl::Status out =
      (code < 0 || code > static_cast<int>(absl::StatusCode::kUnauthenticated))
          ? absl::UnknownError(status.error_message())
          : absl::Status(static_cast<absl::StatusCode>(code),
                         status.error_message());
  if (!status.error_details().empty()) {
    google::rpc::Status details;
    // Details that do not parse are dropped: the code and message stand.
    if (details.ParseFromString(status.error_details())) {
      for (const google::protobuf::Any& any : details.details()) {
        out.SetPayload(any.type_url(), absl::Cord(any.value()));
      }
    }
  }
  return out;
}

std::optional<google::rpc::ErrorInfo> ErrorInfoOf(const absl::Status& status) {
  auto payload = status.GetPayload(kErrorInfoUrl);
  if (!payload) return std::nullopt;
  google::rpc::ErrorInfo info;
  if (!info.ParseFromString(std::string(*payload))) return std::nullopt;
  return info;
}

std::string ErrorReason(const absl::Status& status) {
  std::optional<google::rpc::ErrorInfo> info = ErrorInfoOf(status);
  return info ? info->reason() : std::string();
}

void SetErrorInfo(const google::rpc::ErrorInfo& info, absl::Status* status) {
  status->SetPayload(kErrorInfoUrl, absl::Cord(info.SerializeAsString()));
}

std::optional<absl::Duration> RetryDelay(const absl::Status& status) {
  auto payload = status.GetPayload(kRetryInfoUrl);
  if (!payload) return std::nullopt;
  google::rpc::RetryInfo retry;
  if (!retry.ParseFromString(std::string(*payload)) ||
      !retry.has_retry_delay()) {
    return std::nullopt;
  }
  return absl::Seconds(retry.retry_delay().seconds()) +
         absl::Nanoseconds(retry.retry_delay().nanos());
}

}  // namespace sessiond::client
