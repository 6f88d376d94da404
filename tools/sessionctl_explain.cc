// Copyright sessiond authors. Licensed under the Apache License 2.0.
#include "tools/sessionctl_explain.h"

#include <cstdio>

#include "absl/strings/str_cat.h"
#include "tools/sessionctl_connection.h"
#include "tools/sessionctl_errors.h"

namespace sessiond::sessionctl {

bool LooksLikeAPeerPort(const absl::Status& status) {
  return absl::IsUnimplemented(status) && status.message().empty();
}

bool OwnError(const absl::Status& status) {
  return ExitCodeFor(status) != kExitServerError;
}

absl::Status Explain(const absl::Status& status, absl::string_view what,
                     Kind kind, absl::Duration timeout,
                     absl::string_view unknown, absl::string_view refused) {
  if (OwnError(status)) return status;
  if (LooksLikeAPeerPort(status)) {
    // A wrong endpoint, as a usage error: nothing was done there.
    return UsageError(absl::StrCat(what, ": UNIMPLEMENTED from the endpoint: ",
                                   kPeerPortAdvice, " Nothing was changed."));
  }
  std::string advice;
  const bool may_have_applied =
      kind != Kind::kRead && !NotProposed(status) &&
      (absl::IsUnavailable(status) || absl::IsDeadlineExceeded(status) ||
       absl::IsInternal(status) || absl::IsUnknown(status) ||
       absl::IsCancelled(status) || absl::IsDataLoss(status));
  switch (status.code()) {
    case absl::StatusCode::kUnavailable:
      advice = NotProposed(status)
                   ? "Nothing was changed: no leader took the request in "
                     "time. `sessionctl status` shows whether the cluster "
                     "has a leader; retry once it does."
                   : "The cluster could not answer (no leader, no quorum, "
                     "or the node is starting or stopping). `sessionctl "
                     "status` shows the members and the leader; retry once "
                     "there is one.";
      break;
    case absl::StatusCode::kDeadlineExceeded:
      advice = absl::StrCat("No answer within --timeout (",
                            absl::FormatDuration(timeout),
                            "). Retry with a longer --timeout; `sessionctl "
                            "status` shows whether the cluster has a leader.");
      break;
    case absl::StatusCode::kResourceExhausted:
      advice =
          "The cluster refuses writes for now (too many waiting, or the "
          "leader's data disk is full: `sessionctl status` shows disk_full). "
          "Nothing was changed; retry shortly, and free disk space if a disk "
          "is full.";
      break;
    case absl::StatusCode::kUnimplemented:
      advice =
          "This sessiond does not serve that call: is it an older version "
          "than sessionctl?";
      break;
    case absl::StatusCode::kInvalidArgument:
      advice = "sessiond refused the arguments; nothing was changed.";
      if (!refused.empty()) absl::StrAppend(&advice, " ", refused);
      break;
    case absl::StatusCode::kFailedPrecondition:
    case absl::StatusCode::kNotFound:
    case absl::StatusCode::kAlreadyExists:
      if (!refused.empty()) {
        advice = absl::StrCat("Nothing was changed. ", refused);
      }
      break;
    default:
      break;
  }
  if (may_have_applied) {
    advice = absl::StrCat(
        "The outcome is UNKNOWN: it may or may not have "
        "applied. ",
        unknown, unknown.empty() ? "" : " ", advice);
  }
  return absl::Status(
      status.code(),
      absl::StrCat(what, ": ", absl::StatusCodeToString(status.code()), ": ",
                   status.message(), advice.empty() ? "" : "\n", advice));
}

absl::Status Print(const Output& out, const nlohmann::json& doc,
                   const std::string& text) {
  if (out.json) {
    PrintJson(out.stream, doc, /*one_line=*/false);
  } else {
    std::fputs(text.c_str(), out.stream);
    std::fflush(out.stream);
  }
  return absl::OkStatus();
}

}  // namespace sessiond::sessionctl
