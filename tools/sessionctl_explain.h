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

// An UNIMPLEMENTED with no message: what a gRPC server answers for a
// service it does not have. Every sessiond serves the client and admin
// calls on its client address, so the endpoint is most likely a peer port.
bool LooksLikeAPeerPort(const absl::Status& status);
// What to do about it.
inline constexpr absl::string_view kPeerPortAdvice =
    "it serves none of sessiond's client or admin calls: is it a peer port "
    "(--peer_listen, or an address of --initial_cluster)? Give the nodes' "
    "client addresses (--listen) as endpoints.";

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
