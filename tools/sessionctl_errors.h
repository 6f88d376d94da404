// Copyright sessiond authors. Licensed under the Apache License 2.0.
#ifndef SESSIOND_TOOLS_SESSIONCTL_ERRORS_H_
#define SESSIOND_TOOLS_SESSIONCTL_ERRORS_H_

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace sessiond::sessionctl {

// sessionctl's exit codes (docs/OPERATIONS.md, "sessionctl"). Scripts rely on
// them: never renumber one.
enum ExitCode : int {
  kExitOk = 0,
  // The cluster answered with an error (the request was refused, or failed
  // with an outcome the message describes), or it answered something
  // sessionctl could not use.
  kExitServerError = 1,
  // Bad flags or arguments, a bad config file or endpoint list: nothing was
  // sent.
  kExitUsage = 2,
  // No endpoint could be connected to: nothing was sent.
  kExitUnreachable = 3,
  // The verb needs server support this sessiond does not have yet: nothing
  // was sent.
  kExitNotImplemented = 4,
  // The cluster refused our identity (UNAUTHENTICATED: no certificate or
  // token it knows; PERMISSION_DENIED: the identity lacks the role the call
  // needs). The message says which credentials were presented.
  kExitNotAllowed = 5,
  // The output could not be written (a full disk, a closed pipe): what was
  // written, an export say, is cut short, whatever the cluster answered.
  kExitOutputNotWritten = 6,
};

// Errors sessionctl makes itself are tagged with the exit code they end in
// (a status payload); every other status is the server's answer.
absl::Status UsageError(absl::string_view message);
absl::Status UnreachableError(absl::string_view message);
absl::Status NotImplementedError(absl::string_view message);
absl::Status OutputNotWrittenError(absl::string_view message);
// Keeps `code` (kUnauthenticated or kPermissionDenied).
absl::Status NotAllowedError(absl::StatusCode code, absl::string_view message);

// Marks an error a streaming verb (status --watch, audit --follow) has
// already printed on stdout as its one-line --json document: PrintError
// then prints it on stderr only, so stdout stays one JSON object a line.
absl::Status AlreadyPrinted(absl::Status status);
bool IsAlreadyPrinted(const absl::Status& status);

// The exit code `status` ends the process with.
int ExitCodeFor(const absl::Status& status);

}  // namespace sessiond::sessionctl

#endif  // SESSIOND_TOOLS_SESSIONCTL_ERRORS_H_
