// Copyright sessiond authors. Licensed under the Apache License 2.0.
//
// The search at the heart of the checker: Wing & Gong's algorithm with the
// improvements Porcupine made to it, for one partition of a history (one key,
// in the sessions model). Written for sessiond; no code is taken from
// Porcupine.
//
// The partition's calls and returns form one doubly linked list in time
// order. The search walks it from the front: a call may be linearized now if
// the model accepts its output in the current state; it is then "lifted" (its
// call and return are unlinked) and the walk starts over from the front. A
// return reached before its operation was lifted is a dead end: that
// operation should have taken effect already, so the last lift is undone and
// the next candidate is tried. Each (set of lifted operations, model state)
// pair is remembered, so no configuration is searched twice; that cache is
// what makes histories of thousands of operations cheap to check.
//
// Time order. Operation A precedes B in real time only if A returned strictly
// before B was called (A.return_ns < B.call_ns). At equal times calls are
// ordered before returns, so operations whose intervals merely touch
// (A.return_ns == B.call_ns) count as concurrent and may be linearized in
// either order. A clock that cannot tell the two instants apart gives no
// evidence of their order, and treating them as ordered would report
// violations that never happened.
//
// Unknown outcomes. An operation whose client got no answer has return_ns ==
// kNeverReturned, and its model step must accept any state in which it could
// have taken effect. It may be linearized anywhere after its call, or never:
// once every operation with a known return has been linearized, the history
// is linearizable whatever became of the rest.
#ifndef SESSIOND_TESTS_LINCHECK_SEARCH_H_
#define SESSIOND_TESTS_LINCHECK_SEARCH_H_

#include <concepts>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <optional>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/hash/hash.h"

namespace sessiond::lincheck {

// The return time of an operation whose outcome is unknown.
inline constexpr int64_t kNeverReturned = std::numeric_limits<int64_t>::max();

// A sequential specification the search can check a partition against.
// Step returns the state after `op` if the model allows op's recorded output
// in `state`, and nullopt if it does not. States are compared and hashed
// (absl::Hash) to recognise configurations seen before, so they must be
// small values. Operations carry call_ns <= return_ns in one monotonic clock.
template <typename M>
concept SequentialModel = std::copyable<typename M::State> &&
    std::equality_comparable<typename M::State> &&
    requires(const M& model, const typename M::State& state,
             const typename M::Operation& op) {
  { model.Init() } -> std::same_as<typename M::State>;
  { model.Step(state, op) } -> std::same_as<std::optional<typename M::State>>;
  { model.DescribeState(state) } -> std::convertible_to<std::string>;
  { op.call_ns } -> std::convertible_to<int64_t>;
  { op.return_ns } -> std::convertible_to<int64_t>;
};

enum class SearchOutcome { kLinearizable, kNotLinearizable, kBudgetExceeded };

struct SearchResult {
  SearchOutcome outcome = SearchOutcome::kLinearizable;
  // Distinct configurations entered; this is what the budget bounds.
  uint64_t states_explored = 0;

  // The rest is filled only for kNotLinearizable. Operations are indices
  // into the searched span.
  //
  // The deepest dead end: the longest sequence of operations that could be
  // linearized, in linearization order, and the model state after it.
  std::vector<size_t> longest_prefix;
  std::string state_after_prefix;
  // The operations that were candidates to come next there: every pending
  // call up to the first outstanding return. The model rejects each of them
  // in that state, since one it accepted would have led to a longer prefix.
  std::vector<size_t> unplaced;
};

namespace internal {

struct Interval {
  int64_t call_ns;
  int64_t return_ns;
};

// The time-ordered calls and returns of one partition, with Lift/Unlift in
// the manner of dancing links: an unlinked node keeps its own links, so
// relinking in reverse order of unlinking restores the list exactly. Not
// thread-safe.
class EventList {
 public:
  // REQUIRES: call_ns <= return_ns for every interval.
  explicit EventList(std::span<const Interval> intervals);

  // The first event; IsEnd() of it once every operation has been lifted.
  int First() const { return nodes_[kHead].next; }
  int Next(int event) const { return nodes_[event].next; }
  bool IsEnd(int event) const { return event == kTail; }
  bool IsCall(int event) const { return nodes_[event].is_call; }
  size_t Op(int event) const { return nodes_[event].op; }

  // Unlinks a call event and its return. REQUIRES: `call` is linked.
  void Lift(int call);
  // Relinks what Lift(call) unlinked. REQUIRES: `call` is the most recently
  // lifted call that is still lifted.
  void Unlift(int call);

 private:
  static constexpr int kHead = 0;
  static constexpr int kTail = 1;

  struct Node {
    size_t op = 0;
    bool is_call = false;
    int return_event = -1;  // for calls only
    int prev = -1;
    int next = -1;
  };

  void Unlink(int event);
  void Relink(int event);

  std::vector<Node> nodes_;
};

class Bitset {
 public:
  explicit Bitset(size_t bits) : words_((bits + 63) / 64) {}
  void Set(size_t i) { words_[i / 64] |= Mask(i); }
  void Clear(size_t i) { words_[i / 64] &= ~Mask(i); }
  const std::vector<uint64_t>& words() const { return words_; }

 private:
  static uint64_t Mask(size_t i) { return uint64_t{1} << (i % 64); }
  std::vector<uint64_t> words_;
};

// What the rest of the search depends on: which operations have been
// linearized and the state they left.
template <typename State>
struct Configuration {
  std::vector<uint64_t> linearized;
  State state;

  friend bool operator==(const Configuration&, const Configuration&) = default;
  template <typename H>
  friend H AbslHashValue(H h, const Configuration& c) {
    return H::combine(std::move(h), c.linearized, c.state);
  }
};

}  // namespace internal

// Searches for a linearization of `ops` (one partition) against `model`,
// giving up with kBudgetExceeded after `max_states` distinct
// configurations. Memory grows with the configurations remembered: about
// max_states * (ops.size() / 8 + 64) bytes at worst. Iterative, so deep
// histories cannot overflow the stack.
// REQUIRES: call_ns <= return_ns for every operation.
template <SequentialModel M>
SearchResult SearchLinearization(const M& model,
                                 std::span<const typename M::Operation> ops,
                                 uint64_t max_states) {
  using State = typename M::State;

  std::vector<internal::Interval> intervals;
  intervals.reserve(ops.size());
  for (const auto& op : ops) intervals.push_back({op.call_ns, op.return_ns});
  internal::EventList events(intervals);
  internal::Bitset linearized(ops.size());
  absl::flat_hash_set<internal::Configuration<State>> seen;

  struct Lifted {
    int call;
    State state_before;
  };
  std::vector<Lifted> lifted;
  State state = model.Init();
  SearchResult result;
  bool dead_end_recorded = false;

  int event = events.First();
  while (!events.IsEnd(event)) {
    if (events.IsCall(event)) {
      const size_t op = events.Op(event);
      std::optional<State> next = model.Step(state, ops[op]);
      if (next.has_value()) {
        linearized.Set(op);
        if (seen.insert({linearized.words(), *next}).second) {
          if (++result.states_explored > max_states) {
            result.outcome = SearchOutcome::kBudgetExceeded;
            return result;
          }
          lifted.push_back({event, std::move(state)});
          state = *std::move(next);
          events.Lift(event);
          event = events.First();
          continue;
        }
        linearized.Clear(op);
      }
      event = events.Next(event);
      continue;
    }

    // The first outstanding return. Returns at infinity sort last, so if
    // this one never returned, every operation with a known return is done.
    if (ops[events.Op(event)].return_ns == kNeverReturned) break;

    if (!dead_end_recorded || lifted.size() > result.longest_prefix.size()) {
      dead_end_recorded = true;
      result.longest_prefix.clear();
      for (const Lifted& l : lifted) {
        result.longest_prefix.push_back(events.Op(l.call));
      }
      result.state_after_prefix = model.DescribeState(state);
      result.unplaced.clear();
      for (int e = events.First(); e != event; e = events.Next(e)) {
        result.unplaced.push_back(events.Op(e));
      }
    }
    if (lifted.empty()) {
      result.outcome = SearchOutcome::kNotLinearizable;
      return result;
    }
    Lifted last = std::move(lifted.back());
    lifted.pop_back();
    linearized.Clear(events.Op(last.call));
    state = std::move(last.state_before);
    events.Unlift(last.call);
    event = events.Next(last.call);
  }

  result.outcome = SearchOutcome::kLinearizable;
  result.longest_prefix.clear();
  result.state_after_prefix.clear();
  result.unplaced.clear();
  return result;
}

}  // namespace sessiond::lincheck

#endif  // SESSIOND_TESTS_LINCHECK_SEARCH_H_
