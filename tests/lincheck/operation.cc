// Copyright sessiond authors. Licensed under the Apache License 2.0.
#include "tests/lincheck/operation.h"

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"

namespace sessiond::lincheck {
namespace {

std::string RelativeTime(int64_t ns, int64_t origin_ns) {
  if (ns == kNeverReturned) return "never";
  return absl::StrCat("+", absl::FormatDuration(absl::Nanoseconds(ns) -
                                                absl::Nanoseconds(origin_ns)));
}

}  // namespace

absl::string_view ToString(OpKind kind) {
  switch (kind) {
    case OpKind::kCreate:
      return "Create";
    case OpKind::kRevoke:
      return "Revoke";
    case OpKind::kValidate:
      return "Validate";
  }
  return "?";
}

absl::string_view ToString(Output output) {
  switch (output) {
    case Output::kOk:
      return "Ok";
    case Output::kNotFound:
      return "NotFound";
    case Output::kValid:
      return "Valid";
    case Output::kRevoked:
      return "Revoked";
    case Output::kUnknownToken:
      return "UnknownToken";
    case Output::kUnknownOutcome:
      return "unknown outcome";
  }
  return "?";
}

std::string Describe(const Operation& op, int64_t origin_ns) {
  return absl::StrCat("client ", op.client, " ", ToString(op.kind), " -> ",
                      ToString(op.output), " [",
                      RelativeTime(op.call_ns, origin_ns), ", ",
                      RelativeTime(op.return_ns, origin_ns), "]");
}

}  // namespace sessiond::lincheck
