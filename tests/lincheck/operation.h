// Copyright sessiond authors. Licensed under the Apache License 2.0.
#ifndef SESSIOND_TESTS_LINCHECK_OPERATION_H_
#define SESSIOND_TESTS_LINCHECK_OPERATION_H_

#include <cstdint>
#include <string>

#include "absl/strings/string_view.h"
#include "tests/lincheck/search.h"

namespace sessiond::lincheck {

enum class OpKind { kCreate, kRevoke, kValidate };

// What the client was told.
enum class Output {
  kOk,
  kNotFound,
  kValid,
  kRevoked,
  kUnknownToken,  // the token is not in the store
  // No answer (timeout, lost connection): the operation may or may not have
  // taken effect, and it matches any output.
  kUnknownOutcome,
};

// One client call on one session, as the client saw it. Times are
// nanoseconds of one monotonic clock shared by every client of the history.
struct Operation {
  int client = 0;
  OpKind kind = OpKind::kValidate;
  std::string key;  // the session token
  Output output = Output::kUnknownOutcome;
  int64_t call_ns = 0;
  // kNeverReturned exactly when output is kUnknownOutcome: a client that
  // gave up cannot bound when the operation takes effect.
  int64_t return_ns = kNeverReturned;
};

absl::string_view ToString(OpKind kind);
absl::string_view ToString(Output output);

// "client 3 Revoke -> Ok [+1.2ms, +1.5ms]", with times relative to
// origin_ns (the start of the history).
std::string Describe(const Operation& op, int64_t origin_ns);

}  // namespace sessiond::lincheck

#endif  // SESSIOND_TESTS_LINCHECK_OPERATION_H_
