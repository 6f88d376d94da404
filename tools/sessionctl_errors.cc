// Copyright sessiond authors. Licensed under the Apache License 2.0.
#include "tools/sessionctl_errors.h"

#include <string>

#include "absl/strings/cord.h"
#include "absl/strings/numbers.h"

namespace sessiond::sessionctl {
namespace {

constexpr char kExitPayload[] = "sessionctl.dev/exit-code";
constexpr char kPrintedPayload[] = "sessionctl.dev/printed";

absl::Status Tagged(absl::StatusCode code, absl::string_view message,
                    ExitCode exit_code) {
  absl::Status status(code, message);
  status.SetPayload(kExitPayload,
                    absl::Cord(std::to_string(static_cast<int>(exit_code))));
  return status;
}

}  // namespace

absl::Status UsageError(absl::string_view message) {
  return Tagged(absl::StatusCode::kInvalidArgument, message, kExitUsage);
}

absl::Status UnreachableError(absl::string_view message) {
  return Tagged(absl::StatusCode::kUnavailable, message, kExitUnreachable);
}

absl::Status NotImplementedError(absl::string_view message) {
  return Tagged(absl::StatusCode::kUnimplemented, message, kExitNotImplemented);
}

absl::Status OutputNotWrittenError(absl::string_view message) {
  return Tagged(absl::StatusCode::kDataLoss, message, kExitOutputNotWritten);
}

absl::Status NotAllowedError(absl::StatusCode code, absl::string_view message) {
  return Tagged(code, message, kExitNotAllowed);
}

absl::Status AlreadyPrinted(absl::Status status) {
  if (!status.ok()) status.SetPayload(kPrintedPayload, absl::Cord("1"));
  return status;
}

bool IsAlreadyPrinted(const absl::Status& status) {
  return status.GetPayload(kPrintedPayload).has_value();
}

int ExitCodeFor(const absl::Status& status) {
  if (status.ok()) return kExitOk;
  const auto tag = status.GetPayload(kExitPayload);
  int code = 0;
  if (tag.has_value() && absl::SimpleAtoi(std::string(*tag), &code)) {
    return code;
  }
  return kExitServerError;
}

}  // namespace sessiond::sessionctl
