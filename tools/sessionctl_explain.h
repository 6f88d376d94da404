// Copyright sessiond authors. Licensed under the Apache License 2.0.
#ifndef SESSIOND_TOOLS_SESSIONCTL_EXPLAIN_H_
#define SESSIOND_TOOLS_SESSIONCTL_EXPLAIN_H_

#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "nlohmann/json.hpp"
#include "tools/sessionctl_output.h"

namespace sessiond::sessionctl {

// How a request behaves when it fails (client/session_client.h, "Unknown
// outcome").
enum class Kind {
  kRead,             // nothing changes
  kIdempotentWrite,  // safe to send again (RevokeSession, membership)
  kWrite,            // not safe to repeat blindly (RevokeUserSessions)
};

// Whether `status` is sessionctl's own (usage, unreachable: exit 2, 3)
// rather than the cluster's answer.
bool OwnError(const absl::Status& status);

// The server's (or the client library's) `status` for `what`, with what to
// do next. `unknown` is the advice when a write's outcome is unknown;
// `refused`, when the cluster refused the request (FAILED_PRECONDITION,
// NOT_FOUND, ALREADY_EXISTS: nothing changed), what to do about it.
// sessionctl's own errors pass unchanged.
absl::Status Explain(const absl::Status& status, absl::string_view what,
                     Kind kind, absl::Duration timeout,
                     absl::string_view unknown = "",
                     absl::string_view refused = "");

// Prints `doc` with --json, else `text`; OK.
absl::Status Print(const Output& out, const nlohmann::json& doc,
                   const std::string& text);

}  // namespace sessiond::sessionctl

#endif  // SESSIOND_TOOLS_SESSIONCTL_EXPLAIN_H_
