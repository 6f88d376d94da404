// Copyright sessiond authors. Licensed under the Apache License 2.0.
#include "tests/lincheck/session_model.h"

namespace sessiond::lincheck {
namespace {

// Whether a client told `recorded` is consistent with the model answering
// `expected`.
bool Matches(Output recorded, Output expected) {
  return recorded == Output::kUnknownOutcome || recorded == expected;
}

}  // namespace

absl::string_view ToString(SessionState state) {
  switch (state) {
    case SessionState::kAbsent:
      return "absent";
    case SessionState::kActive:
      return "active";
    case SessionState::kRevoked:
      return "revoked";
  }
  return "?";
}

std::optional<SessionState> SessionModel::Step(State state,
                                               const Operation& op) const {
  switch (op.kind) {
    case OpKind::kCreate:
      if (state != State::kAbsent || !Matches(op.output, Output::kOk)) {
        return std::nullopt;
      }
      return State::kActive;
    case OpKind::kRevoke:
      if (state == State::kAbsent) {
        if (!Matches(op.output, Output::kNotFound)) return std::nullopt;
        return State::kAbsent;
      }
      if (!Matches(op.output, Output::kOk)) return std::nullopt;
      return State::kRevoked;
    case OpKind::kValidate: {
      Output expected = Output::kUnknownToken;
      if (state == State::kActive) expected = Output::kValid;
      if (state == State::kRevoked) expected = Output::kRevoked;
      if (!Matches(op.output, expected)) return std::nullopt;
      return state;
    }
  }
  return std::nullopt;
}

std::string SessionModel::DescribeState(State state) const {
  return std::string(ToString(state));
}

}  // namespace sessiond::lincheck
