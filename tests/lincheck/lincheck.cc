// Copyright sessiond authors. Licensed under the Apache License 2.0.
#include "tests/lincheck/lincheck.h"

#include <algorithm>
#include <map>
#include <optional>
#include <span>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "tests/lincheck/search.h"

namespace sessiond::lincheck {
namespace {

// Why `op` cannot be part of any history, or nullopt if it can.
std::optional<std::string> Malformation(const Operation& op) {
  if (op.call_ns == kNeverReturned) return "it is called at infinity";
  if (op.return_ns < op.call_ns) return "it returns before it is called";
  const bool unanswered = op.output == Output::kUnknownOutcome;
  const bool never_returned = op.return_ns == kNeverReturned;
  if (unanswered && !never_returned) {
    return "its outcome is unknown, so it may take effect after any finite "
           "return time; its return must be kNeverReturned";
  }
  if (!unanswered && never_returned) {
    return "it has an output but never returned";
  }
  return std::nullopt;
}

std::string ExplainFailure(const std::string& key,
                           const std::vector<Operation>& ops,
                           const SearchResult& search, int64_t origin_ns,
                           const CheckOptions& options) {
  const std::vector<size_t>& prefix = search.longest_prefix;
  std::string out = absl::StrCat("key \"", key, "\" (", ops.size(),
                                 " ops): longest linearizable prefix has ",
                                 prefix.size(), " ops and leaves the session ",
                                 search.state_after_prefix, "\n");
  size_t first_shown = 0;
  if (prefix.size() > options.max_prefix_ops_shown) {
    first_shown = prefix.size() - options.max_prefix_ops_shown;
    absl::StrAppend(&out, "    ... ", first_shown, " earlier ops omitted\n");
  }
  for (size_t i = first_shown; i < prefix.size(); ++i) {
    absl::StrAppend(&out, "    ", i + 1, ". ",
                    Describe(ops[prefix[i]], origin_ns), "\n");
  }
  absl::StrAppend(&out, "  none of these can come next when the session is ",
                  search.state_after_prefix, ":\n");
  for (size_t op : search.unplaced) {
    absl::StrAppend(&out, "    ", Describe(ops[op], origin_ns), "\n");
  }
  return out;
}

}  // namespace

absl::string_view ToString(Verdict verdict) {
  switch (verdict) {
    case Verdict::kLinearizable:
      return "linearizable";
    case Verdict::kNotLinearizable:
      return "not linearizable";
    case Verdict::kUnknown:
      return "unknown (search budget exceeded)";
    case Verdict::kInvalidHistory:
      return "invalid history";
  }
  return "?";
}

std::ostream& operator<<(std::ostream& os, Verdict verdict) {
  return os << ToString(verdict);
}

CheckResult CheckSessions(const std::vector<Operation>& history,
                          const CheckOptions& options) {
  CheckResult result;
  result.operations = history.size();
  if (history.empty()) {
    result.explanation = "linearizable: empty history";
    return result;
  }

  int64_t origin_ns = history.front().call_ns;
  for (const Operation& op : history) {
    origin_ns = std::min(origin_ns, op.call_ns);
  }
  for (const Operation& op : history) {
    if (std::optional<std::string> why = Malformation(op)) {
      result.verdict = Verdict::kInvalidHistory;
      result.explanation =
          absl::StrCat("invalid history: on key \"", op.key, "\", ",
                       Describe(op, origin_ns), ": ", *why);
      return result;
    }
  }

  // std::map: keys are checked, and so reported, in a stable order.
  std::map<std::string, std::vector<Operation>> partitions;
  for (const Operation& op : history) partitions[op.key].push_back(op);
  result.partitions = partitions.size();

  const SessionModel model;
  std::string details;
  for (const auto& [key, ops] : partitions) {
    const SearchResult search =
        SearchLinearization(model, std::span<const Operation>(ops),
                            options.max_states_per_partition);
    result.states_explored += search.states_explored;
    switch (search.outcome) {
      case SearchOutcome::kLinearizable:
        break;
      case SearchOutcome::kNotLinearizable:
        if (result.failed_keys.size() < options.max_keys_explained) {
          absl::StrAppend(&details,
                          ExplainFailure(key, ops, search, origin_ns, options));
        }
        result.failed_keys.push_back(key);
        break;
      case SearchOutcome::kBudgetExceeded:
        result.undecided_keys.push_back(key);
        break;
    }
  }

  if (!result.failed_keys.empty()) {
    result.verdict = Verdict::kNotLinearizable;
  } else if (!result.undecided_keys.empty()) {
    result.verdict = Verdict::kUnknown;
  }
  auto quoted = [](std::string* out, const std::string& key) {
    absl::StrAppend(out, "\"", key, "\"");
  };
  result.explanation = absl::StrCat(
      ToString(result.verdict), ": ", result.operations, " ops on ",
      result.partitions, " keys, ", result.states_explored, " states explored");
  if (!result.failed_keys.empty()) {
    absl::StrAppend(&result.explanation, "; failed keys: ",
                    absl::StrJoin(result.failed_keys, ", ", quoted));
    if (result.failed_keys.size() > options.max_keys_explained) {
      absl::StrAppend(&result.explanation, " (the first ",
                      options.max_keys_explained, " explained below)");
    }
  }
  if (!result.undecided_keys.empty()) {
    absl::StrAppend(&result.explanation, "; keys over the budget of ",
                    options.max_states_per_partition, " states: ",
                    absl::StrJoin(result.undecided_keys, ", ", quoted));
  }
  if (!details.empty()) absl::StrAppend(&result.explanation, "\n", details);
  return result;
}

}  // namespace sessiond::lincheck
