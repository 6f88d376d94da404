// Copyright sessiond authors. Licensed under the Apache License 2.0.
#ifndef SESSIOND_TESTS_LINCHECK_SESSION_MODEL_H_
#define SESSIOND_TESTS_LINCHECK_SESSION_MODEL_H_

#include <optional>
#include <string>

#include "absl/strings/string_view.h"
#include "tests/lincheck/operation.h"
#include "tests/lincheck/search.h"

namespace sessiond::lincheck {

enum class SessionState { kAbsent, kActive, kRevoked };

absl::string_view ToString(SessionState state);

// The sequential specification of one session token:
//
//   Create    absent -> active, Ok. A token is fresh, so a create in any
//             other state is wrong.
//   Revoke    active -> revoked, Ok; revoked stays revoked, Ok (idempotent);
//             absent stays absent, NotFound.
//   Validate  changes nothing; answers Valid when active, Revoked when
//             revoked, UnknownToken when absent.
//
// An unknown outcome is accepted wherever the operation itself could have
// run. Stateless, so thread-safe.
class SessionModel {
 public:
  using State = SessionState;
  using Operation = lincheck::Operation;

  State Init() const { return State::kAbsent; }
  std::optional<State> Step(State state, const Operation& op) const;
  std::string DescribeState(State state) const;
};

static_assert(SequentialModel<SessionModel>);

}  // namespace sessiond::lincheck

#endif  // SESSIOND_TESTS_LINCHECK_SESSION_MODEL_H_
