// Copyright sessiond authors. Licensed under the Apache License 2.0.
#include "tests/lincheck/lincheck.h"

#include <algorithm>
#include <cstdint>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/rng.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/lincheck/search.h"
#include "tests/lincheck/session_model.h"

namespace sessiond::lincheck {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::Not;

constexpr int64_t kNever = kNeverReturned;

Operation Op(int client, OpKind kind, Output output, int64_t call_ns,
             int64_t return_ns, std::string key) {
  return Operation{.client = client,
                   .kind = kind,
                   .key = std::move(key),
                   .output = output,
                   .call_ns = call_ns,
                   .return_ns = return_ns};
}
Operation Create(int client, int64_t call_ns, int64_t return_ns,
                 std::string key = "tok") {
  const Output output =
      return_ns == kNever ? Output::kUnknownOutcome : Output::kOk;
  return Op(client, OpKind::kCreate, output, call_ns, return_ns, key);
}
Operation Revoke(int client, Output output, int64_t call_ns, int64_t return_ns,
                 std::string key = "tok") {
  return Op(client, OpKind::kRevoke, output, call_ns, return_ns, key);
}
Operation Validate(int client, Output output, int64_t call_ns,
                   int64_t return_ns, std::string key = "tok") {
  return Op(client, OpKind::kValidate, output, call_ns, return_ns, key);
}

Verdict Check(const std::vector<Operation>& history) {
  return CheckSessions(history).verdict;
}

TEST(SessionModelTest, StepsFollowTheSpecification) {
  using S = SessionState;
  const SessionModel model;
  struct Case {
    S state;
    Operation op;
    std::optional<S> next;
  };
  const Case cases[] = {
      {S::kAbsent, Create(0, 0, 1), S::kActive},
      {S::kActive, Create(0, 0, 1), std::nullopt},
      {S::kRevoked, Create(0, 0, 1), std::nullopt},
      {S::kAbsent, Create(0, 0, kNever), S::kActive},
      {S::kActive, Create(0, 0, kNever), std::nullopt},
      {S::kActive, Revoke(0, Output::kOk, 0, 1), S::kRevoked},
      {S::kRevoked, Revoke(0, Output::kOk, 0, 1), S::kRevoked},
      {S::kAbsent, Revoke(0, Output::kNotFound, 0, 1), S::kAbsent},
      {S::kAbsent, Revoke(0, Output::kOk, 0, 1), std::nullopt},
      {S::kActive, Revoke(0, Output::kNotFound, 0, 1), std::nullopt},
      {S::kAbsent, Revoke(0, Output::kUnknownOutcome, 0, kNever), S::kAbsent},
      {S::kActive, Revoke(0, Output::kUnknownOutcome, 0, kNever), S::kRevoked},
      {S::kAbsent, Validate(0, Output::kUnknownToken, 0, 1), S::kAbsent},
      {S::kActive, Validate(0, Output::kValid, 0, 1), S::kActive},
      {S::kRevoked, Validate(0, Output::kRevoked, 0, 1), S::kRevoked},
      {S::kActive, Validate(0, Output::kRevoked, 0, 1), std::nullopt},
      {S::kRevoked, Validate(0, Output::kValid, 0, 1), std::nullopt},
      {S::kActive, Validate(0, Output::kUnknownToken, 0, 1), std::nullopt},
      {S::kRevoked, Validate(0, Output::kUnknownOutcome, 0, kNever),
       S::kRevoked},
  };
  for (const Case& c : cases) {
    EXPECT_EQ(model.Step(c.state, c.op), c.next)
        << ToString(c.op.kind) << " -> " << ToString(c.op.output) << " when "
        << ToString(c.state);
  }
}

TEST(LincheckTest, EmptyHistoryIsLinearizable) {
  const CheckResult result = CheckSessions({});
  EXPECT_EQ(result.verdict, Verdict::kLinearizable);
  EXPECT_EQ(result.partitions, 0u);
}

TEST(LincheckTest, SequentialHistoryIsLinearizable) {
  const CheckResult result = CheckSessions({
      Create(0, 0, 10),
      Validate(1, Output::kValid, 20, 30),
      Revoke(2, Output::kOk, 40, 50),
      Validate(1, Output::kRevoked, 60, 70),
      Revoke(1, Output::kOk, 80, 90),
  });
  EXPECT_EQ(result.verdict, Verdict::kLinearizable) << result.explanation;
  EXPECT_EQ(result.partitions, 1u);
  EXPECT_EQ(result.operations, 5u);
  EXPECT_GE(result.states_explored, 5u);
  EXPECT_THAT(result.failed_keys, IsEmpty());
}

TEST(LincheckTest, ValidAfterRevokeReturnedIsNotLinearizable) {
  const CheckResult result = CheckSessions({
      Create(0, 0, 10, "tok-a"),
      Revoke(0, Output::kOk, 20, 30, "tok-a"),
      Validate(1, Output::kValid, 40, 50, "tok-a"),
  });
  EXPECT_EQ(result.verdict, Verdict::kNotLinearizable);
  EXPECT_THAT(result.failed_keys, ElementsAre("tok-a"));
  EXPECT_THAT(result.explanation, HasSubstr("key \"tok-a\""));
  EXPECT_THAT(result.explanation, HasSubstr("client 0 Create -> Ok"));
  EXPECT_THAT(result.explanation, HasSubstr("client 0 Revoke -> Ok"));
  EXPECT_THAT(result.explanation, HasSubstr("client 1 Validate -> Valid"));
}

TEST(LincheckTest, ValidAfterRevokedWasSeenIsNotLinearizable) {
  // The revoke overlaps both validates, so either could come first; but
  // once a validate saw it revoked, no later one may see it valid.
  EXPECT_EQ(Check({
                Create(0, 0, 10),
                Revoke(2, Output::kOk, 15, 100),
                Validate(1, Output::kRevoked, 20, 30),
                Validate(1, Output::kValid, 40, 50),
            }),
            Verdict::kNotLinearizable);
  EXPECT_EQ(Check({
                Create(0, 0, 10),
                Revoke(2, Output::kOk, 15, 100),
                Validate(1, Output::kValid, 20, 30),
                Validate(1, Output::kRevoked, 40, 50),
            }),
            Verdict::kLinearizable);
}

TEST(LincheckTest, ValidateConcurrentWithRevokeMaySeeEitherState) {
  for (Output seen : {Output::kValid, Output::kRevoked}) {
    const CheckResult result = CheckSessions({
        Create(0, 0, 10),
        Revoke(0, Output::kOk, 20, 40),
        Validate(1, seen, 25, 35),
    });
    EXPECT_EQ(result.verdict, Verdict::kLinearizable)
        << ToString(seen) << ": " << result.explanation;
  }
  EXPECT_EQ(Check({
                Create(0, 0, 10),
                Revoke(0, Output::kOk, 20, 40),
                Validate(1, Output::kUnknownToken, 25, 35),
            }),
            Verdict::kNotLinearizable);
}

TEST(LincheckTest, UnknownTokenOnlyWhileCreateMayNotHaveHappened) {
  // The create is called first but linearizing it first fails, so this
  // also makes the search backtrack.
  EXPECT_EQ(Check({
                Create(0, 10, 50),
                Validate(1, Output::kUnknownToken, 20, 30),
                Validate(2, Output::kValid, 25, 60),
            }),
            Verdict::kLinearizable);
  EXPECT_EQ(Check({
                Create(0, 10, 50),
                Validate(1, Output::kUnknownToken, 60, 70),
            }),
            Verdict::kNotLinearizable);
}

TEST(LincheckTest, UnknownOutcomeRevokeMayTakeEffectLate) {
  std::vector<Operation> history = {
      Create(0, 0, 10),
      Revoke(0, Output::kUnknownOutcome, 20, kNever),
      Validate(1, Output::kValid, 30, 40),
      Validate(2, Output::kValid, 50, 60),
      Validate(1, Output::kRevoked, 70, 80),
      Validate(2, Output::kRevoked, 90, 100),
  };
  EXPECT_EQ(Check(history), Verdict::kLinearizable);
  history.push_back(Validate(1, Output::kValid, 110, 120));
  EXPECT_EQ(Check(history), Verdict::kNotLinearizable);
}

TEST(LincheckTest, UnknownOutcomeRevokeMayNeverTakeEffect) {
  EXPECT_EQ(Check({
                Create(0, 0, 10),
                Revoke(0, Output::kUnknownOutcome, 20, kNever),
                Validate(1, Output::kValid, 30, 40),
                Validate(1, Output::kValid, 1000, 1010),
            }),
            Verdict::kLinearizable);
}

TEST(LincheckTest, UnknownOutcomeCreateMayOrMayNotTakeEffect) {
  EXPECT_EQ(Check({
                Create(0, 0, kNever),
                Validate(1, Output::kUnknownToken, 10, 20),
            }),
            Verdict::kLinearizable);
  EXPECT_EQ(Check({
                Create(0, 0, kNever),
                Validate(1, Output::kUnknownToken, 10, 20),
                Validate(1, Output::kValid, 30, 40),
            }),
            Verdict::kLinearizable);
  EXPECT_EQ(Check({
                Create(0, 0, kNever),
                Validate(1, Output::kValid, 10, 20),
                Validate(1, Output::kUnknownToken, 30, 40),
            }),
            Verdict::kNotLinearizable);
}

TEST(LincheckTest, RevokeNotFoundOnlyBeforeCreate) {
  EXPECT_EQ(Check({Revoke(0, Output::kNotFound, 0, 10)}),
            Verdict::kLinearizable);
  EXPECT_EQ(Check({
                Create(0, 0, 50),
                Revoke(1, Output::kNotFound, 20, 30),
            }),
            Verdict::kLinearizable);
  EXPECT_EQ(Check({
                Create(0, 0, 10),
                Revoke(1, Output::kNotFound, 20, 30),
            }),
            Verdict::kNotLinearizable);
}

TEST(LincheckTest, TouchingIntervalsAreConcurrent) {
  // The revoke returns at the very nanosecond the validate is called: the
  // clock cannot order them, so the validate may still see the session.
  EXPECT_EQ(Check({
                Create(0, 0, 10),
                Revoke(0, Output::kOk, 20, 30),
                Validate(1, Output::kValid, 30, 40),
            }),
            Verdict::kLinearizable);
  EXPECT_EQ(Check({
                Create(0, 0, 10),
                Revoke(0, Output::kOk, 20, 30),
                Validate(1, Output::kValid, 31, 40),
            }),
            Verdict::kNotLinearizable);
}

TEST(LincheckTest, KeysAreCheckedIndependently) {
  const CheckResult result = CheckSessions({
      Create(0, 0, 10, "a"),
      Create(1, 5, 15, "b"),
      Revoke(0, Output::kOk, 20, 30, "a"),
      Validate(1, Output::kValid, 40, 50, "b"),
      Validate(2, Output::kValid, 40, 50, "a"),
      Revoke(2, Output::kNotFound, 60, 70, "c"),
  });
  EXPECT_EQ(result.verdict, Verdict::kNotLinearizable);
  EXPECT_EQ(result.partitions, 3u);
  EXPECT_THAT(result.failed_keys, ElementsAre("a"));
  EXPECT_THAT(result.explanation, Not(HasSubstr("key \"b\"")));
}

TEST(LincheckTest, OnlyTheFirstFailingKeysAreExplained) {
  std::vector<Operation> history;
  for (const char* key : {"k1", "k2", "k3", "k4"}) {
    history.push_back(Create(0, 0, 10, key));
    history.push_back(Validate(1, Output::kUnknownToken, 20, 30, key));
  }
  CheckOptions options;
  options.max_keys_explained = 2;
  const CheckResult result = CheckSessions(history, options);
  EXPECT_THAT(result.failed_keys, ElementsAre("k1", "k2", "k3", "k4"));
  EXPECT_THAT(result.explanation, HasSubstr("(the first 2 explained below)"));
  EXPECT_THAT(result.explanation, HasSubstr("key \"k2\" (2 ops)"));
  EXPECT_THAT(result.explanation, Not(HasSubstr("key \"k3\" (2 ops)")));
}

TEST(LincheckTest, ExplanationShowsLongestPrefixAndOpsThatCannotFollow) {
  // Times are shown relative to the first call of the whole history.
  const CheckResult result = CheckSessions({
      Create(0, 1000, 1010),
      Validate(1, Output::kValid, 1020, 1030),
      Revoke(2, Output::kOk, 1040, 1060),
      Validate(1, Output::kValid, 1050, 1070),
      Validate(3, Output::kUnknownToken, 1055, 1080),
      Validate(4, Output::kValid, 1065, 1090),
  });
  ASSERT_EQ(result.verdict, Verdict::kNotLinearizable);
  EXPECT_EQ(result.explanation,
            "not linearizable: 6 ops on 1 keys, 5 states explored; failed "
            "keys: \"tok\"\n"
            "key \"tok\" (6 ops): longest linearizable prefix has 4 ops and "
            "leaves the session revoked\n"
            "    1. client 0 Create -> Ok [+0, +10ns]\n"
            "    2. client 1 Validate -> Valid [+20ns, +30ns]\n"
            "    3. client 1 Validate -> Valid [+50ns, +70ns]\n"
            "    4. client 2 Revoke -> Ok [+40ns, +60ns]\n"
            "  none of these can come next when the session is revoked:\n"
            "    client 3 Validate -> UnknownToken [+55ns, +80ns]\n"
            "    client 4 Validate -> Valid [+65ns, +90ns]\n");
}

TEST(LincheckTest, LongPrefixIsShownByItsEnd) {
  std::vector<Operation> history = {Create(0, 0, 1)};
  for (int i = 1; i <= 50; ++i) {
    history.push_back(Validate(1, Output::kValid, 10 * i, 10 * i + 1));
  }
  history.push_back(Validate(1, Output::kUnknownToken, 1000, 1001));
  CheckOptions options;
  options.max_prefix_ops_shown = 3;
  const CheckResult result = CheckSessions(history, options);
  ASSERT_EQ(result.verdict, Verdict::kNotLinearizable);
  EXPECT_THAT(result.explanation, HasSubstr("prefix has 51 ops"));
  EXPECT_THAT(result.explanation, HasSubstr("... 48 earlier ops omitted\n"));
  EXPECT_THAT(result.explanation, HasSubstr("    51. client 1 Validate"));
  EXPECT_THAT(result.explanation, Not(HasSubstr("    48. ")));
}

TEST(LincheckTest, MalformedOperationsMakeTheHistoryInvalid) {
  const std::vector<Operation> malformed = {
      Validate(1, Output::kValid, 20, 10),
      Validate(1, Output::kUnknownOutcome, 20, 30),
      Validate(1, Output::kValid, 20, kNever),
  };
  for (const Operation& op : malformed) {
    const CheckResult result = CheckSessions({Create(0, 0, 10), op});
    EXPECT_EQ(result.verdict, Verdict::kInvalidHistory) << Describe(op, 0);
    EXPECT_THAT(result.explanation, HasSubstr("client 1 Validate"));
  }
}

TEST(LincheckTest, LongSingleKeyHistoryNeedsNoRecursion) {
  // Thousands of ops on one key, a few clients overlapping, all valid.
  std::vector<Operation> history = {Create(0, 0, 10)};
  for (int i = 0; i < 5000; ++i) {
    const int64_t start = 20 + 10 * i;
    history.push_back(Validate(i % 4, Output::kValid, start, start + 25));
  }
  history.push_back(Revoke(0, Output::kOk, 100'000, 100'010));
  history.push_back(Validate(1, Output::kRevoked, 100'020, 100'030));
  const CheckResult result = CheckSessions(history);
  EXPECT_EQ(result.verdict, Verdict::kLinearizable) << result.explanation;
}

// Decides linearizability by trying every order of every admissible subset
// (all operations that returned, any of those that did not): the definition,
// with no cleverness to get wrong. Feasible for a handful of operations.
bool BruteForceLinearizable(const std::vector<Operation>& ops) {
  const SessionModel model;
  const size_t n = ops.size();
  for (uint32_t subset = 0; subset < (1u << n); ++subset) {
    std::vector<size_t> order;
    bool admissible = true;
    for (size_t i = 0; i < n; ++i) {
      if (subset & (1u << i)) {
        order.push_back(i);
      } else if (ops[i].return_ns != kNever) {
        admissible = false;
      }
    }
    if (!admissible) continue;
    do {
      bool ok = true;
      SessionState state = model.Init();
      for (size_t a = 0; ok && a < order.size(); ++a) {
        for (size_t b = a + 1; ok && b < order.size(); ++b) {
          ok = ops[order[b]].return_ns >= ops[order[a]].call_ns;
        }
        std::optional<SessionState> next = model.Step(state, ops[order[a]]);
        ok = ok && next.has_value();
        if (ok) state = *next;
      }
      if (ok) return true;
    } while (std::next_permutation(order.begin(), order.end()));
  }
  return false;
}

Output PlausibleOutput(OpKind kind, Rng& rng) {
  switch (kind) {
    case OpKind::kCreate:
      return Output::kOk;
    case OpKind::kRevoke:
      return rng.Percent(80) ? Output::kOk : Output::kNotFound;
    case OpKind::kValidate:
      break;
  }
  const Output seen[] = {Output::kValid, Output::kRevoked,
                         Output::kUnknownToken};
  return seen[rng.Uniform(3)];
}

// The explanation of a failure must hold up on its own: the prefix is a
// valid sequential run in real-time order, and the model rejects every op
// offered as unable to follow it.
void ExpectConsistentDeadEnd(const std::vector<Operation>& ops, int round) {
  const SessionModel model;
  const SearchResult search =
      SearchLinearization(model, std::span<const Operation>(ops), 1'000'000);
  ASSERT_EQ(search.outcome, SearchOutcome::kNotLinearizable);
  SessionState state = model.Init();
  for (size_t i = 0; i < search.longest_prefix.size(); ++i) {
    const Operation& op = ops[search.longest_prefix[i]];
    for (size_t j = i + 1; j < search.longest_prefix.size(); ++j) {
      EXPECT_GE(ops[search.longest_prefix[j]].return_ns, op.call_ns)
          << "round " << round;
    }
    std::optional<SessionState> next = model.Step(state, op);
    ASSERT_TRUE(next.has_value()) << "round " << round;
    state = *next;
  }
  EXPECT_EQ(search.state_after_prefix, model.DescribeState(state));
  EXPECT_FALSE(search.unplaced.empty()) << "round " << round;
  for (size_t op : search.unplaced) {
    EXPECT_FALSE(model.Step(state, ops[op]).has_value()) << "round " << round;
  }
}

TEST(LincheckTest, AgreesWithBruteForceOnSmallRandomHistories) {
  Rng rng(7);
  const Output outputs[] = {Output::kOk, Output::kNotFound, Output::kValid,
                            Output::kRevoked, Output::kUnknownToken};
  int linearizable = 0;
  for (int round = 0; round < 3000; ++round) {
    std::vector<Operation> history;
    const int n = 1 + static_cast<int>(rng.Uniform(6));
    for (int i = 0; i < n; ++i) {
      Operation op;
      op.client = i;
      op.key = "tok";
      op.kind = static_cast<OpKind>(rng.Uniform(3));
      op.call_ns = static_cast<int64_t>(rng.Uniform(20));
      if (rng.Percent(15)) {
        op.output = Output::kUnknownOutcome;
        op.return_ns = kNever;
      } else {
        op.output = outputs[rng.Uniform(5)];
        // Mostly answers the kind can give, so both verdicts are common.
        if (rng.Percent(90)) op.output = PlausibleOutput(op.kind, rng);
        op.return_ns = op.call_ns + static_cast<int64_t>(rng.Uniform(10));
      }
      history.push_back(std::move(op));
    }
    const bool expected = BruteForceLinearizable(history);
    linearizable += expected;
    const CheckResult result = CheckSessions(history);
    ASSERT_EQ(result.verdict,
              expected ? Verdict::kLinearizable : Verdict::kNotLinearizable)
        << "round " << round << ": " << result.explanation;
    if (!expected) ExpectConsistentDeadEnd(history, round);
  }
  // Both answers must be common for the comparison to mean anything.
  EXPECT_GT(linearizable, 300);
  EXPECT_LT(linearizable, 2700);
}

// Runs a sequential session store one operation at a time, at strictly
// increasing instants, and gives each operation a random interval around its
// instant; each client's operations follow one another, except that a
// client stops waiting for an answer that is lost. The instants are a
// linearization, so the history is linearizable by construction.
std::vector<Operation> GenerateHistory(uint64_t seed, int num_ops,
                                       int num_clients) {
  Rng rng(seed);
  std::map<std::string, bool> revoked;  // tokens created so far
  std::vector<std::string> tokens;
  std::vector<int64_t> client_idle_at(num_clients, 0);
  std::vector<Operation> history;
  int64_t now = 0;
  auto pick_key = [&]() -> std::string {
    if (rng.Percent(5)) return absl::StrCat("ghost-", rng.Uniform(5));
    // Mostly recent tokens, so that operations on one key overlap.
    const size_t recent = std::min<size_t>(tokens.size(), 10);
    if (rng.Percent(70)) return tokens[tokens.size() - 1 - rng.Uniform(recent)];
    return tokens[rng.Uniform(tokens.size())];
  };

  for (int i = 0; i < num_ops; ++i) {
    Operation op;
    op.client = static_cast<int>(rng.Uniform(num_clients));
    const int64_t idle_at = client_idle_at[op.client];
    now = std::max<int64_t>(now + 1 + rng.Uniform(10), idle_at);
    op.call_ns = now - rng.Uniform(std::min<int64_t>(40, now - idle_at) + 1);
    op.return_ns = now + rng.Uniform(41);
    bool lost = false;
    const uint64_t roll = rng.Uniform(100);
    if (tokens.empty() || roll < 15) {
      op.kind = OpKind::kCreate;
      op.key = absl::StrCat("token-", tokens.size());
      op.output = Output::kOk;
      tokens.push_back(op.key);
      revoked[op.key] = false;
    } else {
      op.key = pick_key();
      auto it = revoked.find(op.key);
      if (roll < 45) {
        op.kind = OpKind::kRevoke;
        lost = rng.Percent(5);
        const bool takes_effect = !lost || rng.Percent(50);
        if (it == revoked.end()) {
          op.output = Output::kNotFound;
        } else {
          op.output = Output::kOk;
          if (takes_effect) it->second = true;
        }
      } else {
        op.kind = OpKind::kValidate;
        lost = rng.Percent(3);
        op.output = it == revoked.end() ? Output::kUnknownToken
                    : it->second        ? Output::kRevoked
                                        : Output::kValid;
      }
    }
    if (lost) {
      op.output = Output::kUnknownOutcome;
      op.return_ns = kNever;
      client_idle_at[op.client] = now + 41;
    } else {
      client_idle_at[op.client] = op.return_ns + 1;
    }
    history.push_back(std::move(op));
  }
  return history;
}

TEST(LincheckTest, GeneratedManyKeyHistoriesAreLinearizable) {
  for (uint64_t seed = 1; seed <= 5; ++seed) {
    std::vector<Operation> history = GenerateHistory(seed, 4000, 8);
    // The checker must not depend on the order operations are listed in.
    std::reverse(history.begin(), history.end());
    const CheckResult result = CheckSessions(history);
    EXPECT_EQ(result.verdict, Verdict::kLinearizable)
        << "seed " << seed << ": " << result.explanation;
    EXPECT_EQ(result.operations, 4000u);
    EXPECT_GT(result.partitions, 300u);
  }
}

TEST(LincheckTest, OneCorruptedOutputInAGeneratedHistoryIsFound) {
  for (uint64_t seed = 1; seed <= 5; ++seed) {
    std::vector<Operation> history = GenerateHistory(seed, 4000, 8);
    // Once a create has returned, no operation on its token that starts
    // later can find the token absent.
    std::map<std::string, int64_t> created_at;
    std::vector<size_t> candidates;
    for (size_t i = 0; i < history.size(); ++i) {
      const Operation& op = history[i];
      if (op.kind == OpKind::kCreate) created_at[op.key] = op.return_ns;
    }
    for (size_t i = 0; i < history.size(); ++i) {
      const Operation& op = history[i];
      auto it = created_at.find(op.key);
      if (op.kind != OpKind::kCreate && it != created_at.end() &&
          it->second < op.call_ns && op.output != Output::kUnknownOutcome) {
        candidates.push_back(i);
      }
    }
    ASSERT_FALSE(candidates.empty());
    Rng rng(seed);
    Operation& victim = history[candidates[rng.Uniform(candidates.size())]];
    victim.output = victim.kind == OpKind::kRevoke ? Output::kNotFound
                                                   : Output::kUnknownToken;

    const CheckResult result = CheckSessions(history);
    EXPECT_EQ(result.verdict, Verdict::kNotLinearizable) << "seed " << seed;
    EXPECT_THAT(result.failed_keys, ElementsAre(victim.key));
    EXPECT_THAT(result.explanation,
                HasSubstr(absl::StrCat("key \"", victim.key, "\"")));
  }
}

// A create, then `n` revokes that all overlap, then a validate that sees
// the token absent. Every subset of the revokes is a distinct configuration,
// so refuting it means exploring about 2^n states.
std::vector<Operation> ExponentialHistory(int n) {
  std::vector<Operation> history = {Create(0, 0, 10)};
  for (int i = 0; i < n; ++i) {
    history.push_back(Revoke(i + 1, Output::kOk, 20 + i, 100 + i));
  }
  history.push_back(Validate(0, Output::kUnknownToken, 200, 210));
  return history;
}

TEST(LincheckTest, ExceededBudgetIsUnknownNeverLinearizable) {
  CheckOptions tiny;
  tiny.max_states_per_partition = 1000;
  const CheckResult result = CheckSessions(ExponentialHistory(20), tiny);
  EXPECT_EQ(result.verdict, Verdict::kUnknown);
  EXPECT_THAT(result.undecided_keys, ElementsAre("tok"));
  EXPECT_THAT(result.failed_keys, IsEmpty());
  EXPECT_THAT(result.explanation, HasSubstr("budget"));

  // A linearizable history over the budget is not reported linearizable.
  std::vector<Operation> fine = {Create(0, 0, 1)};
  for (int i = 1; i <= 1500; ++i) {
    fine.push_back(Validate(1, Output::kValid, 10 * i, 10 * i + 1));
  }
  EXPECT_EQ(CheckSessions(fine, tiny).verdict, Verdict::kUnknown);
  EXPECT_EQ(Check(fine), Verdict::kLinearizable);

  // Given room, the same shape is decided.
  EXPECT_EQ(Check(ExponentialHistory(8)), Verdict::kNotLinearizable);
}

TEST(LincheckTest, FailureOnOneKeyOutranksBudgetOnAnother) {
  std::vector<Operation> history = ExponentialHistory(20);
  history.push_back(Create(0, 0, 10, "other"));
  history.push_back(Validate(1, Output::kUnknownToken, 20, 30, "other"));
  CheckOptions tiny;
  tiny.max_states_per_partition = 1000;
  const CheckResult result = CheckSessions(history, tiny);
  EXPECT_EQ(result.verdict, Verdict::kNotLinearizable);
  EXPECT_THAT(result.failed_keys, ElementsAre("other"));
  EXPECT_THAT(result.undecided_keys, ElementsAre("tok"));
}

}  // namespace
}  // namespace sessiond::lincheck
