// Copyright sessiond authors. Licensed under the Apache License 2.0.
//
// Linearizability checking of recorded session histories. A cluster test
// records what its clients saw (HistoryRecorder, history_recorder.h), then
// asks CheckSessions whether some sequential order of those operations,
// consistent with their real-time order, explains every answer:
//
//   CheckResult r = CheckSessions(recorder.Take());
//   EXPECT_EQ(r.verdict, Verdict::kLinearizable) << r.explanation;
//
// Sessions are independent of each other, so the history is split by token
// and each part is checked alone (P-compositionality); see search.h for the
// search and for how equal timestamps and unknown outcomes are treated.
#ifndef SESSIOND_TESTS_LINCHECK_LINCHECK_H_
#define SESSIOND_TESTS_LINCHECK_LINCHECK_H_

#include <cstddef>
#include <cstdint>
#include <ostream>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"
#include "tests/lincheck/operation.h"
#include "tests/lincheck/session_model.h"

namespace sessiond::lincheck {

enum class Verdict {
  kLinearizable,
  kNotLinearizable,
  // Some key ran out of search budget and none was found wrong. Never to be
  // read as a pass.
  kUnknown,
  // The history contradicts itself (a return before its call, an output
  // recorded for an operation that never returned); nothing was checked.
  kInvalidHistory,
};

absl::string_view ToString(Verdict verdict);
std::ostream& operator<<(std::ostream& os, Verdict verdict);

struct CheckOptions {
  // Distinct configurations searched per key before its verdict becomes
  // kUnknown. Histories without pathological concurrency need about one per
  // operation; see SearchLinearization for the memory this may take.
  uint64_t max_states_per_partition = 1'000'000;
  // Explanations show only the end of a long linearizable prefix.
  size_t max_prefix_ops_shown = 20;
  // Explanations detail only the first few failing keys.
  size_t max_keys_explained = 3;
};

struct CheckResult {
  Verdict verdict = Verdict::kLinearizable;
  // A summary line; for failures, followed by each failing key's longest
  // linearizable prefix and the operations that could not follow it.
  std::string explanation;
  size_t partitions = 0;  // distinct keys
  size_t operations = 0;
  uint64_t states_explored = 0;
  std::vector<std::string> failed_keys;     // sorted
  std::vector<std::string> undecided_keys;  // out of budget; sorted
};

// Checks `history` (in any order) against SessionModel. Thread-safe.
CheckResult CheckSessions(const std::vector<Operation>& history,
                          const CheckOptions& options = {});

}  // namespace sessiond::lincheck

#endif  // SESSIOND_TESTS_LINCHECK_LINCHECK_H_
