// Copyright sessiond authors. Licensed under the Apache License 2.0.
//
// ReadBarrier over a real NodeDriver (one voter, in memory) whose state
// machine's apply stage can be held: what a LINEARIZABLE read answers while
// this node has not applied what its lease confirmed.
#include "server/read_barrier.h"

#include <memory>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "replication/memory_log_store.h"
#include "replication/node_driver.h"
#include "replication/transport.h"
#include "server/delay_queue.h"

namespace sessiond::server {
namespace {

using replication::ApplyResult;
using replication::ConfState;
using replication::Entry;
using replication::MemoryLogStore;
using replication::NodeDriver;
using replication::NodeDriverOptions;
using replication::NoPeersTransport;
using replication::Snapshot;

// Applies nothing while held (as a slow disk or a long batch would).
class HeldStateMachine : public replication::StateMachine {
 public:
  absl::StatusOr<std::vector<ApplyResult>> Apply(
      const std::vector<Entry>& entries) override {
    absl::MutexLock lock(&mu_);
    mu_.Await(absl::Condition(
        +[](bool* held) { return !*held; }, &held_));
    applied_ = entries.back().index;
    return std::vector<ApplyResult>(entries.size(), ApplyResult(std::any()));
  }
  void StopRetryingWrites() override {}  // writes nothing
  LogIndex applied_index() const override {
    absl::MutexLock lock(&mu_);
    return applied_;
  }
  absl::StatusOr<Snapshot> CreateSnapshot() override {
    return absl::UnimplementedError("not needed by these tests");
  }
  absl::Status ApplySnapshot(const Snapshot&) override {
    return absl::UnimplementedError("not needed by these tests");
  }
  void Hold() {
    absl::MutexLock lock(&mu_);
    held_ = true;
  }
  void Release() {
    absl::MutexLock lock(&mu_);
    held_ = false;
  }

 private:
  mutable absl::Mutex mu_;
  bool held_ ABSL_GUARDED_BY(mu_) = false;
  LogIndex applied_ ABSL_GUARDED_BY(mu_);
};

// A one-voter leader (so every linearizable read takes the lease path)
// with an entry committed and held in its apply stage.
class HeldApplyTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ConfState conf;
    conf.voters.push_back(NodeId(1));
    log_ = std::make_unique<MemoryLogStore>(conf);
    NodeDriverOptions options;
    options.raft.id = NodeId(1);
    options.tick_interval = std::chrono::milliseconds(10);
    options.seed = 7;
    absl::StatusOr<std::unique_ptr<NodeDriver>> driver =
        NodeDriver::Start(options, log_.get(), &sm_, &transport_);
    ASSERT_TRUE(driver.ok()) << driver.status();
    driver_ = *std::move(driver);
    ASSERT_TRUE(driver_->WaitUntilLeaderCaughtUp(absl::Seconds(30)));
    barrier_ = std::make_unique<ReadBarrier>(options_, driver_.get(), &timers_);

    sm_.Hold();
    const LogIndex applied = sm_.applied_index();
    driver_->Propose("held in the apply stage", [](ApplyResult) {});
    for (int i = 0; i < 3000 && driver_->status().commit <= applied; ++i) {
      absl::SleepFor(absl::Milliseconds(10));
    }
    ASSERT_GT(driver_->status().commit, applied);
  }
  void TearDown() override {
    sm_.Release();
    if (driver_) driver_->Stop();
    timers_.Stop();
  }

  // Starts a read of `level` with `timeout` to its deadline.
  struct Read {
    absl::Notification done;
    ReadAnswer answer;
  };
  std::shared_ptr<Read> StartRead(sessiond::v1::Consistency level,
                                  absl::Duration timeout) {
    auto read = std::make_shared<Read>();
    barrier_->Wait(level, absl::Now() + timeout, [read](ReadAnswer answer) {
      read->answer = std::move(answer);
      read->done.Notify();
    });
    return read;
  }

  ReadBarrierOptions options_;
  HeldStateMachine sm_;
  NoPeersTransport transport_;
  std::unique_ptr<MemoryLogStore> log_;
  std::unique_ptr<NodeDriver> driver_;
  DelayQueue timers_;
  std::unique_ptr<ReadBarrier> barrier_;
};

// The driver's wait for an apply ends at its read timeout (20 ticks here,
// 200 ms). A LINEARIZABLE read on the leader's lease path took that as its
// answer: UNAVAILABLE long before the caller's deadline, while a follower's
// read of the same level kept asking until its deadline.
TEST_F(HeldApplyTest, ALinearizableReadOutwaitsTheDriversReadTimeout) {
  std::shared_ptr<Read> read =
      StartRead(sessiond::v1::LINEARIZABLE, absl::Seconds(30));
  // Five read timeouts pass while the apply stage is held.
  EXPECT_FALSE(read->done.WaitForNotificationWithTimeout(absl::Seconds(1)))
      << "answered while held: " << read->answer.status;
  sm_.Release();
  ASSERT_TRUE(read->done.WaitForNotificationWithTimeout(absl::Seconds(30)));
  EXPECT_TRUE(read->answer.status.ok()) << read->answer.status;
  EXPECT_FALSE(read->answer.stale);
}

// Bounded all the same: held past its deadline, the read is refused,
// never answered from a table that lacks a confirmed write.
TEST_F(HeldApplyTest, ALinearizableReadHeldPastItsDeadlineIsUnavailable) {
  std::shared_ptr<Read> read =
      StartRead(sessiond::v1::LINEARIZABLE, absl::Milliseconds(700));
  ASSERT_TRUE(read->done.WaitForNotificationWithTimeout(absl::Seconds(30)));
  EXPECT_EQ(read->answer.status.code(), absl::StatusCode::kUnavailable)
      << read->answer.status;
}

// A LOCAL read on a leader whose applies are behind its commit is stale,
// by at least the time since it last held all it had committed (it was
// answered fresh, staleness 0, while committed writes waited unapplied).
TEST_F(HeldApplyTest, ALocalReadOnALeaderBehindItsCommitIsStale) {
  const absl::Duration held_for = absl::Milliseconds(200);
  absl::SleepFor(held_for);
  std::shared_ptr<Read> read =
      StartRead(sessiond::v1::LOCAL, absl::Seconds(30));
  ASSERT_TRUE(read->done.WaitForNotificationWithTimeout(absl::Seconds(30)));
  EXPECT_TRUE(read->answer.status.ok()) << read->answer.status;
  EXPECT_TRUE(read->answer.stale);
  EXPECT_GE(read->answer.staleness_ms, absl::ToInt64Milliseconds(held_for));
}

// The default level waits for a leader it knows as LINEARIZABLE does, up
// to its linearizable_timeout (5 s here): the driver's wait for the apply
// ended at its read timeout (200 ms), and the read fell back at once,
// answering stale what the leader confirmed in time (a follower whose
// applies lag listed no audit entry for a call just acknowledged).
class PatientDefaultTest : public HeldApplyTest {
 protected:
  PatientDefaultTest() { options_.linearizable_timeout = absl::Seconds(5); }
};

TEST_F(PatientDefaultTest, ADefaultReadOutwaitsTheDriversReadTimeout) {
  std::shared_ptr<Read> read =
      StartRead(sessiond::v1::CONSISTENCY_DEFAULT, absl::Seconds(30));
  EXPECT_FALSE(read->done.WaitForNotificationWithTimeout(absl::Seconds(1)))
      << "answered while held, stale: " << read->answer.stale;
  sm_.Release();
  ASSERT_TRUE(read->done.WaitForNotificationWithTimeout(absl::Seconds(30)));
  EXPECT_TRUE(read->answer.status.ok()) << read->answer.status;
  EXPECT_FALSE(read->answer.stale);
  EXPECT_FALSE(read->answer.fell_back);
}

// Past its linearizable_timeout (300 ms by default) it answers from the
// table, marked stale.
TEST_F(HeldApplyTest, ADefaultReadFallsBackToTheTableMarkedStale) {
  std::shared_ptr<Read> read =
      StartRead(sessiond::v1::CONSISTENCY_DEFAULT, absl::Seconds(30));
  ASSERT_TRUE(read->done.WaitForNotificationWithTimeout(absl::Seconds(30)));
  EXPECT_TRUE(read->answer.status.ok()) << read->answer.status;
  EXPECT_TRUE(read->answer.stale);
  EXPECT_TRUE(read->answer.fell_back);
}

}  // namespace
}  // namespace sessiond::server
