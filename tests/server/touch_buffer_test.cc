// Copyright sessiond authors. Licensed under the Apache License 2.0.
//
// TouchBuffer's stall bookkeeping with the write path played by the test:
// each submitted batch waits until the test answers it, in any order, with
// any result. tests/integration/full_disk_test.cc runs the stall end to end
// on a real full disk.
#include "server/touch_buffer.h"

#include <atomic>
#include <cstdint>
#include <optional>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"
#include "sessiond/v1/command.pb.h"
#include "storage/token.h"

namespace sessiond::server {
namespace {

// The batches submitted and not answered yet, in order.
class HeldWrites {
 public:
  TouchBuffer::Submit submit() {
    return [this](sessiond::v1::internal::Command command, absl::Time,
                  WritePath::Done done) {
      absl::MutexLock lock(&mu_);
      held_.push_back({std::move(command), std::move(done)});
    };
  }
  size_t held() {
    absl::MutexLock lock(&mu_);
    return held_.size();
  }
  // Answers the oldest batch held with `result`: false when none is.
  bool AnswerOldest(const replication::ApplyResult& result) {
    Held answered;
    {
      absl::MutexLock lock(&mu_);
      if (held_.empty()) return false;
      answered = std::move(held_.front());
      held_.erase(held_.begin());
    }
    answered.done(result);
    return true;
  }
  // Answers the `index`-th batch still held with `result`; returns its
  // command.
  sessiond::v1::internal::Command Answer(size_t index,
                                         replication::ApplyResult result) {
    Held answered;
    {
      absl::MutexLock lock(&mu_);
      answered = std::move(held_.at(index));
      held_.erase(held_.begin() + static_cast<std::ptrdiff_t>(index));
    }
    answered.done(std::move(result));
    return answered.command;
  }

 private:
  struct Held {
    sessiond::v1::internal::Command command;
    WritePath::Done done;
  };
  absl::Mutex mu_;
  std::vector<Held> held_ ABSL_GUARDED_BY(mu_);
};

storage::TokenHash HashOf(uint8_t byte) {
  storage::TokenHash hash{};
  hash.fill(byte);
  return hash;
}

const replication::ApplyResult kCommitted =
    replication::ApplyResult(std::any());
const replication::ApplyResult kNoQuorum = replication::ApplyResult(
    absl::UnavailableError("not committed before the deadline"));

// A buffer whose flusher never runs by itself: the test flushes.
class TouchBufferTest : public ::testing::Test {
 protected:
  HeldWrites writes_;
  int64_t now_ms_ = 1000;
  TouchBuffer buffer_{writes_.submit(), absl::Hours(1),
                      [this] { return now_ms_; }};

  size_t FlushAt(int64_t now_ms) {
    now_ms_ = now_ms;
    return buffer_.Flush();
  }
};

// The stall ends when every kept touch has landed, not when the first batch
// after it commits: a kept batch answered UNAVAILABLE after the next flush
// had gone out put its touches back for the one after, and that next
// flush's commit ended the stall. Reads then judged idle time at now again,
// and answered EXPIRED for sessions whose kept touch had not landed yet.
TEST_F(TouchBufferTest, TheStallEndsWhenEveryKeptTouchHasLanded) {
  buffer_.Record(HashOf(1), 1000);
  ASSERT_EQ(FlushAt(1000), 1u);  // batch 1: touch 1
  buffer_.Record(HashOf(2), 1500);
  ASSERT_EQ(FlushAt(2000), 1u);  // batch 2: touch 2
  ASSERT_EQ(writes_.held(), 2u);

  writes_.Answer(0, kNoQuorum);  // batch 1 fails: touch 1 kept
  ASSERT_EQ(buffer_.StalledSinceMs(), std::optional<int64_t>(1000));
  writes_.Answer(0, kCommitted);  // batch 2 lands; touch 1 has not
  EXPECT_EQ(buffer_.StalledSinceMs(), std::optional<int64_t>(1000))
      << "the stall ended with a kept touch still on its way";
  EXPECT_TRUE(buffer_.RecentlyStalled());

  ASSERT_EQ(FlushAt(3000), 1u);  // batch 3: the kept touch 1
  const sessiond::v1::internal::Command landed = writes_.Answer(0, kCommitted);
  ASSERT_EQ(landed.touch().touches_size(), 1);
  EXPECT_EQ(landed.touch().touches(0).idle_judged_at_ms(), 1000)
      << "judged where the log stopped taking touches";
  EXPECT_EQ(buffer_.StalledSinceMs(), std::nullopt);
}

// Waits (bounded, 10 s) until `writes` holds `count` batches.
bool WaitForBatches(HeldWrites& writes, size_t count) {
  for (int i = 0; i < 1000 && writes.held() < count; ++i) {
    absl::SleepFor(absl::Milliseconds(10));
  }
  return writes.held() >= count;
}

// A session whose idle timeout is under three flush intervals (the
// interval lengthened at a restart, or the session created through a node
// with a shorter one) has its touch flushed within a third of its idle
// timeout: held for the interval (an hour here), the touches of a user in
// full activity landed after the idle timeout, and the user was logged out
// (found in review: a restart from 1 s to 20 s logged out every user of
// 15 s sessions). Its batch, failed, goes out early again.
TEST_F(TouchBufferTest, ATouchIsFlushedWithinAThirdOfItsSessionsIdleTimeout) {
  buffer_.Record(HashOf(1), 1000, 0, /*idle_timeout_ms=*/300);
  ASSERT_TRUE(WaitForBatches(writes_, 1))
      << "not flushed within 10 s with an idle timeout of 300 ms";
  writes_.AnswerOldest(kNoQuorum);
  ASSERT_TRUE(WaitForBatches(writes_, 1)) << "the failed touch was not resent";
  EXPECT_EQ(writes_.Answer(0, kCommitted).touch().touches_size(), 1);
  // Without an idle timeout a touch waits for the interval.
  buffer_.Record(HashOf(2), 1100);
  absl::SleepFor(absl::Milliseconds(300));
  EXPECT_EQ(writes_.held(), 0u);
}

// Failures answered out of order: the stall begins at the earliest failed
// batch's point, where the log last held every touch, whichever failure
// was answered first.
TEST_F(TouchBufferTest, TheStallBeginsAtTheEarliestFailedBatch) {
  buffer_.Record(HashOf(1), 1000);
  ASSERT_EQ(FlushAt(1000), 1u);  // in the log through 1000 if it fails
  buffer_.Record(HashOf(2), 1500);
  ASSERT_EQ(FlushAt(2000), 1u);  // through 1000 (batch 1 pending)
  buffer_.Record(HashOf(3), 2500);
  ASSERT_EQ(FlushAt(3000), 1u);  // through 2000
  writes_.Answer(2, kNoQuorum);
  EXPECT_EQ(buffer_.StalledSinceMs(), std::optional<int64_t>(2000));
  writes_.Answer(1, kNoQuorum);
  EXPECT_EQ(buffer_.StalledSinceMs(), std::optional<int64_t>(1000));
  writes_.Answer(0, kNoQuorum);
  EXPECT_EQ(buffer_.StalledSinceMs(), std::optional<int64_t>(1000));

  // All three kept touches go out in one batch, judged at 1000.
  ASSERT_EQ(FlushAt(4000), 3u);
  const sessiond::v1::internal::Command landed = writes_.Answer(0, kCommitted);
  ASSERT_EQ(landed.touch().touches_size(), 3);
  for (const auto& touch : landed.touch().touches()) {
    EXPECT_EQ(touch.idle_judged_at_ms(), 1000);
  }
  EXPECT_EQ(buffer_.StalledSinceMs(), std::nullopt);
}

// A session ended meanwhile (its touch answered NOT_FOUND): the touch will
// never land, and counts as done.
TEST_F(TouchBufferTest, ATouchOfAnEndedSessionDoesNotHoldTheStall) {
  buffer_.Record(HashOf(1), 1000);
  ASSERT_EQ(FlushAt(1000), 1u);
  writes_.Answer(0, kNoQuorum);
  ASSERT_TRUE(buffer_.StalledSinceMs().has_value());
  ASSERT_EQ(FlushAt(2000), 1u);
  writes_.Answer(
      0, replication::ApplyResult(absl::NotFoundError("session not found")));
  EXPECT_EQ(buffer_.StalledSinceMs(), std::nullopt);
}

// A restart in place hands what never landed to the next daemon's buffer
// (Daemon::Handover): the touches, kept through their stall, which goes on
// until they land there. Lost, a lone voter idled out every user active
// through the full disk the restart ended.
TEST_F(TouchBufferTest, TouchesThatNeverLandedAreHandedToTheNextBuffer) {
  buffer_.Record(HashOf(1), 1000);
  buffer_.Record(HashOf(2), 1200);
  ASSERT_EQ(FlushAt(1500), 2u);
  writes_.Answer(0, kNoQuorum);
  buffer_.Record(HashOf(1), 1800);  // used again meanwhile
  buffer_.Stop();                   // its last flush fails too
  ASSERT_EQ(writes_.held(), 1u);
  writes_.Answer(0, kNoQuorum);

  const UnlandedTouches unlanded = buffer_.TakeUnlanded();
  EXPECT_EQ(unlanded.touches.size(), 2u);
  EXPECT_EQ(unlanded.stalled_since_ms, 1500);
  EXPECT_EQ(buffer_.StalledSinceMs(), std::nullopt);
  EXPECT_TRUE(buffer_.TakeUnlanded().touches.empty());

  HeldWrites next_writes;
  int64_t next_now_ms = 3000;
  TouchBuffer next(next_writes.submit(), absl::Hours(1),
                   [&next_now_ms] { return next_now_ms; });
  next.Adopt(unlanded);
  EXPECT_EQ(next.StalledSinceMs(), std::optional<int64_t>(1500))
      << "idle time must stay stopped where the touches stopped landing";
  ASSERT_EQ(next.Flush(), 2u);
  const sessiond::v1::internal::Command landed =
      next_writes.Answer(0, kCommitted);
  ASSERT_EQ(landed.touch().touches_size(), 2);
  for (const auto& touch : landed.touch().touches()) {
    EXPECT_EQ(touch.idle_judged_at_ms(), 1500);
    const int64_t seen = touch.token_hash()[0] == 1 ? 1800 : 1200;
    EXPECT_EQ(touch.seen_at_ms(), seen);
  }
  EXPECT_EQ(next.StalledSinceMs(), std::nullopt);
}

// Answers come on several threads at once (the completion stage, a timer,
// a forwarded call's). Apart, the stall's start and its count raced: a
// failure could put its touches back after a commit had counted them gone
// (the stall then stayed on with nothing left to land, and a leader's
// sweeper removed nothing for good), or a commit could end a stall another
// answer was starting. Bounded: 2,000 flushes.
TEST(TouchBufferRaceTest, AStallAlwaysEndsOnceEveryKeptTouchHasLanded) {
  HeldWrites writes;
  std::atomic<int64_t> now_ms{1000};
  TouchBuffer buffer(writes.submit(), absl::Hours(1),
                     [&now_ms] { return now_ms.load(); });
  std::atomic<bool> flushing{true};
  auto answer = [&](const replication::ApplyResult& result) {
    while (flushing.load() || writes.held() > 0) {
      if (!writes.AnswerOldest(result)) std::this_thread::yield();
    }
  };
  std::thread failing(answer, kNoQuorum);
  std::thread committing(answer, kCommitted);
  for (int i = 0; i < 2000; ++i) {
    buffer.Record(HashOf(static_cast<uint8_t>(i % 50)), now_ms.load());
    now_ms.fetch_add(10);
    buffer.Flush();
  }
  flushing.store(false);
  failing.join();
  committing.join();
  // What failed last went back into the shards: it goes out and lands.
  for (int i = 0; i < 100 && buffer.Flush() > 0; ++i) {
    while (writes.AnswerOldest(kCommitted)) {
    }
  }
  EXPECT_EQ(buffer.StalledSinceMs(), std::nullopt);
}

}  // namespace
}  // namespace sessiond::server
