// Copyright sessiond authors. Licensed under the Apache License 2.0.
#include "tests/lincheck/history_recorder.h"

#include <algorithm>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "common/rng.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/lincheck/lincheck.h"

namespace sessiond::lincheck {
namespace {

using ::testing::IsEmpty;

// A session store that is linearizable by construction: one mutex around a
// map. Thread-safe.
class LockedStore {
 public:
  std::string Create() {
    absl::MutexLock lock(&mu_);
    std::string token = absl::StrCat("tok-", next_++);
    revoked_[token] = false;
    return token;
  }
  Output Revoke(const std::string& token) {
    absl::MutexLock lock(&mu_);
    auto it = revoked_.find(token);
    if (it == revoked_.end()) return Output::kNotFound;
    it->second = true;
    return Output::kOk;
  }
  Output Validate(const std::string& token) {
    absl::MutexLock lock(&mu_);
    auto it = revoked_.find(token);
    if (it == revoked_.end()) return Output::kUnknownToken;
    return it->second ? Output::kRevoked : Output::kValid;
  }

 private:
  absl::Mutex mu_;
  int next_ ABSL_GUARDED_BY(mu_) = 0;
  absl::flat_hash_map<std::string, bool> revoked_ ABSL_GUARDED_BY(mu_);
};

// Tokens the clients have learned, shared so that they work on the same
// sessions. Thread-safe.
class TokenPool {
 public:
  void Add(std::string token) {
    absl::MutexLock lock(&mu_);
    tokens_.push_back(std::move(token));
  }
  // A known token, or one never created when none is known yet.
  std::string Pick(Rng& rng) {
    absl::MutexLock lock(&mu_);
    if (tokens_.empty() || rng.Percent(5)) return "never-created";
    return tokens_[rng.Uniform(tokens_.size())];
  }

 private:
  absl::Mutex mu_;
  std::vector<std::string> tokens_ ABSL_GUARDED_BY(mu_);
};

TEST(HistoryRecorderTest, RecordsEveryOperationFromManyThreads) {
  constexpr int kClients = 8;
  constexpr int kOpsPerClient = 300;
  HistoryRecorder recorder;
  LockedStore store;
  TokenPool pool;
  std::vector<int> lost_creates(kClients, 0);

  // Each client sometimes loses an answer: the operation may or may not have
  // run, and a lost create leaves its token unknown.
  auto client = [&](int id) {
    Rng rng(100 + id);
    for (int i = 0; i < kOpsPerClient; ++i) {
      const uint64_t roll = rng.Uniform(100);
      const bool lost = rng.Percent(5);
      if (roll < 20) {
        HistoryRecorder::Handle h = recorder.Invoke(id, OpKind::kCreate, "");
        std::string token = store.Create();
        if (lost) {
          recorder.ReturnUnknown(h);
          ++lost_creates[id];
          continue;
        }
        recorder.ReturnCreated(h, token);
        pool.Add(std::move(token));
      } else if (roll < 50) {
        const std::string token = pool.Pick(rng);
        HistoryRecorder::Handle h = recorder.Invoke(id, OpKind::kRevoke, token);
        if (lost) {
          if (rng.Percent(50)) store.Revoke(token);
          recorder.ReturnUnknown(h);
        } else {
          recorder.Return(h, store.Revoke(token));
        }
      } else {
        const std::string token = pool.Pick(rng);
        HistoryRecorder::Handle h =
            recorder.Invoke(id, OpKind::kValidate, token);
        const Output output = store.Validate(token);
        if (lost) {
          recorder.ReturnUnknown(h);
        } else {
          recorder.Return(h, output);
        }
      }
    }
  };
  std::vector<std::thread> threads;
  for (int id = 0; id < kClients; ++id) threads.emplace_back(client, id);
  for (std::thread& t : threads) t.join();

  const std::vector<Operation> history = recorder.Take();
  int total_lost_creates = 0;
  for (int n : lost_creates) total_lost_creates += n;
  EXPECT_EQ(history.size(),
            static_cast<size_t>(kClients * kOpsPerClient - total_lost_creates));

  std::map<int, std::vector<const Operation*>> by_client;
  for (const Operation& op : history) {
    EXPECT_LE(op.call_ns, op.return_ns);
    EXPECT_FALSE(op.key.empty());
    by_client[op.client].push_back(&op);
  }
  ASSERT_EQ(by_client.size(), static_cast<size_t>(kClients));
  for (const auto& [id, ops] : by_client) {
    for (size_t i = 1; i < ops.size(); ++i) {
      EXPECT_LE(ops[i - 1]->call_ns, ops[i]->call_ns) << "client " << id;
      if (ops[i - 1]->return_ns != kNeverReturned) {
        EXPECT_LE(ops[i - 1]->return_ns, ops[i]->call_ns) << "client " << id;
      }
    }
  }

  const CheckResult result = CheckSessions(history);
  EXPECT_EQ(result.verdict, Verdict::kLinearizable) << result.explanation;
}

TEST(HistoryRecorderTest, OperationsLeftOpenHaveUnknownOutcomes) {
  HistoryRecorder recorder;
  recorder.Invoke(3, OpKind::kRevoke, "tok");
  const std::vector<Operation> history = recorder.Take();
  ASSERT_EQ(history.size(), 1u);
  EXPECT_EQ(history[0].client, 3);
  EXPECT_EQ(history[0].kind, OpKind::kRevoke);
  EXPECT_EQ(history[0].output, Output::kUnknownOutcome);
  EXPECT_EQ(history[0].return_ns, kNeverReturned);
}

TEST(HistoryRecorderTest, CreateWithLostAnswerIsDropped) {
  HistoryRecorder recorder;
  recorder.ReturnUnknown(recorder.Invoke(0, OpKind::kCreate, ""));
  HistoryRecorder::Handle created = recorder.Invoke(1, OpKind::kCreate, "");
  recorder.ReturnCreated(created, "tok");
  const std::vector<Operation> history = recorder.Take();
  ASSERT_EQ(history.size(), 1u);
  EXPECT_EQ(history[0].client, 1);
  EXPECT_EQ(history[0].key, "tok");
  EXPECT_EQ(history[0].output, Output::kOk);
}

TEST(HistoryRecorderTest, TakeStartsANewHistory) {
  HistoryRecorder recorder;
  recorder.Return(recorder.Invoke(0, OpKind::kValidate, "tok"),
                  Output::kUnknownToken);
  EXPECT_EQ(recorder.Take().size(), 1u);
  EXPECT_THAT(recorder.Take(), IsEmpty());
}

TEST(HistoryRecorderDeathTest, SecondCompletionAborts) {
  HistoryRecorder recorder;
  HistoryRecorder::Handle h = recorder.Invoke(0, OpKind::kValidate, "tok");
  recorder.Return(h, Output::kValid);
  EXPECT_DEATH(recorder.Return(h, Output::kValid), "completed twice");
}

}  // namespace
}  // namespace sessiond::lincheck
