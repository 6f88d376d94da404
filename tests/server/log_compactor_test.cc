// Copyright sessiond authors. Licensed under the Apache License 2.0.
//
// LogCompactor on a real single-voter node: RocksDB on a temp dir, the real
// RaftLogStore, SessionStateMachine, snapshot folder and NodeDriver. The log
// holds its compactions back on demand, as a busy log writer does, and can
// record an image received from a leader that the state has not loaded
// yet, as a follower's log writer does, so the compactor's rounds can be
// observed around both.
#include "server/log_compactor.h"

#include <filesystem>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "replication/node_driver.h"
#include "replication/transport.h"
#include "sessiond/v1/command.pb.h"
#include "storage/database.h"
#include "storage/raft_log_store.h"
#include "storage/session_state_machine.h"
#include "storage/session_table.h"
#include "storage/snapshot_files.h"
#include "storage/token.h"
#include "tests/storage/temp_dir.h"

namespace sessiond::server {
namespace {

// The RaftLogStore, except that Compact waits while held (the driver has
// been handed a snapshot and not recorded it yet), and that GetSnapshot
// answers with a received image once one is recorded (a follower's log
// writer installed it; the state loads it after). The single voter never
// sends a snapshot, so only the compactor reads the recorded one.
class ObservedLog : public replication::LogStore {
 public:
  explicit ObservedLog(storage::RaftLogStore* inner) : inner_(inner) {}

  void Hold() {
    absl::MutexLock lock(&mu_);
    held_ = true;
  }
  void Release() {
    absl::MutexLock lock(&mu_);
    held_ = false;
  }
  void RecordReceived(replication::Snapshot snapshot) {
    absl::MutexLock lock(&mu_);
    received_ = std::move(snapshot);
  }

  replication::HardState InitialHardState() const override {
    return inner_->InitialHardState();
  }
  replication::ConfState InitialConfState() const override {
    return inner_->InitialConfState();
  }
  absl::StatusOr<std::vector<replication::Entry>> Entries(
      LogIndex lo, LogIndex hi, uint64_t max_bytes) const override {
    return inner_->Entries(lo, hi, max_bytes);
  }
  absl::StatusOr<Term> TermAt(LogIndex index) const override {
    return inner_->TermAt(index);
  }
  LogIndex FirstIndex() const override { return inner_->FirstIndex(); }
  LogIndex LastIndex() const override { return inner_->LastIndex(); }
  absl::StatusOr<replication::Snapshot> GetSnapshot() const override {
    {
      absl::MutexLock lock(&mu_);
      if (received_) return *received_;
    }
    return inner_->GetSnapshot();
  }
  absl::Status Append(const std::vector<replication::Entry>& entries,
                      const std::optional<replication::HardState>& hard_state,
                      bool sync) override {
    return inner_->Append(entries, hard_state, sync);
  }
  absl::Status InstallSnapshot(const replication::Snapshot& snapshot) override {
    return inner_->InstallSnapshot(snapshot);
  }
  using LogStore::Compact;
  absl::Status Compact(const replication::Snapshot& snapshot,
                       LogIndex truncate_through) override {
    {
      absl::MutexLock lock(&mu_);
      mu_.Await(absl::Condition(
          +[](bool* held) { return !*held; }, &held_));
    }
    return inner_->Compact(snapshot, truncate_through);
  }

 private:
  storage::RaftLogStore* const inner_;
  mutable absl::Mutex mu_;
  bool held_ ABSL_GUARDED_BY(mu_) = false;
  std::optional<replication::Snapshot> received_ ABSL_GUARDED_BY(mu_);
};

class LogCompactorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::StatusOr<std::unique_ptr<storage::Database>> db =
        storage::Database::Open(dir_.Sub("db"), storage::DatabaseOptions{});
    ASSERT_TRUE(db.ok()) << db.status();
    db_ = *std::move(db);
    absl::StatusOr<std::unique_ptr<storage::RaftLogStore>> log =
        storage::RaftLogStore::Open(db_.get());
    ASSERT_TRUE(log.ok()) << log.status();
    log_ = *std::move(log);
    replication::ConfState conf;
    conf.voters = {NodeId(1)};
    ASSERT_TRUE(log_->Bootstrap(conf).ok());
    snapshots_ = std::make_unique<storage::SnapshotFiles>(dir_.Sub("snap"));
    ASSERT_TRUE(snapshots_->Init().ok());
    storage::SessionStateMachineOptions sm_options;
    sm_options.snapshots = snapshots_.get();
    sm_options.bootstrap_conf = conf;
    absl::StatusOr<std::unique_ptr<storage::SessionStateMachine>> sm =
        storage::SessionStateMachine::Open(db_.get(), &table_, sm_options);
    ASSERT_TRUE(sm.ok()) << sm.status();
    state_machine_ = *std::move(sm);
    log_view_ = std::make_unique<ObservedLog>(log_.get());
    replication::NodeDriverOptions options;
    options.raft.id = NodeId(1);
    options.tick_interval = std::chrono::milliseconds(10);
    options.seed = 7;
    options.compaction_catch_up_entries = 0;
    absl::StatusOr<std::unique_ptr<replication::NodeDriver>> driver =
        replication::NodeDriver::Start(options, log_view_.get(),
                                       state_machine_.get(), &transport_);
    ASSERT_TRUE(driver.ok()) << driver.status();
    driver_ = *std::move(driver);
    ASSERT_TRUE(driver_->WaitUntilLeaderCaughtUp(absl::Seconds(30)));
    LogCompactorOptions compactor_options;
    compactor_options.interval = absl::Hours(1);  // rounds run by the test
    compactor_ = std::make_unique<LogCompactor>(
        compactor_options, state_machine_.get(), log_view_.get(),
        snapshots_.get(), driver_.get());
  }

  void TearDown() override {
    if (log_view_ != nullptr) log_view_->Release();
    if (compactor_ != nullptr) compactor_->Stop();
    if (driver_ != nullptr) driver_->Stop();
  }

  // Creates `n` sessions through the log and waits for each.
  void CreateSessions(int n) {
    for (int i = 0; i < n; ++i) {
      sessiond::v1::internal::Command command;
      command.set_timestamp_ms(1'000);
      auto* create = command.mutable_create();
      const std::string token = absl::StrCat("token-", created_);
      create->set_token_hash(
          std::string(storage::TokenHashBytes(storage::HashToken(token))));
      create->set_session_id(absl::StrCat("sid-", created_));
      create->set_user_id("alice");
      create->set_expires_at_ms(1'000'000);
      ++created_;
      absl::Notification done;
      replication::ApplyResult result = absl::UnknownError("no answer");
      driver_->Propose(command.SerializeAsString(),
                       [&](replication::ApplyResult r) {
                         result = std::move(r);
                         done.Notify();
                       });
      ASSERT_TRUE(done.WaitForNotificationWithTimeout(absl::Seconds(30)));
      ASSERT_TRUE(result.ok()) << result.status();
    }
  }

  // Waits (bounded) until the log records a snapshot at `index`.
  bool WaitForLogSnapshot(LogIndex index) {
    for (int i = 0; i < 3000; ++i) {
      absl::StatusOr<replication::Snapshot> current = log_->GetSnapshot();
      if (current.ok() && current->meta.index == index) return true;
      absl::SleepFor(absl::Milliseconds(1));
    }
    return false;
  }

  std::set<std::string> Images() const {
    std::set<std::string> names;
    for (const auto& entry :
         std::filesystem::directory_iterator(snapshots_->dir())) {
      const std::string name = entry.path().filename().string();
      if (name.size() > 5 && name.substr(name.size() - 5) == ".snap") {
        names.insert(name);
      }
    }
    return names;
  }

  // An image file named as one received from node 2 at `index` (its
  // contents do not matter to the compactor).
  replication::Snapshot WriteReceivedImage(LogIndex index) {
    absl::StatusOr<std::unique_ptr<storage::DurableFileWriter>> file =
        snapshots_->NewFile(index, Term(1), "from-2");
    EXPECT_TRUE(file.ok()) << file.status();
    EXPECT_TRUE((*file)->Append("image").ok());
    EXPECT_TRUE((*file)->Commit().ok());
    sessiond::v1::internal::SnapshotRef ref;
    ref.set_file((*file)->file_name());
    ref.set_sha256(std::string(storage::kSnapshotDigestBytes, 'x'));
    replication::Snapshot snapshot;
    snapshot.meta.index = index;
    snapshot.meta.term = Term(1);
    snapshot.data = storage::EncodeSnapshotRef(ref);
    return snapshot;
  }

  sessiond::testing::TempDir dir_;
  std::unique_ptr<storage::Database> db_;
  std::unique_ptr<storage::RaftLogStore> log_;
  std::unique_ptr<storage::SnapshotFiles> snapshots_;
  storage::SessionTable table_{storage::SessionTableOptions{}};
  std::unique_ptr<storage::SessionStateMachine> state_machine_;
  std::unique_ptr<ObservedLog> log_view_;
  replication::NoPeersTransport transport_;
  std::unique_ptr<replication::NodeDriver> driver_;
  std::unique_ptr<LogCompactor> compactor_;
  int created_ = 0;
};

// The image a snapshot replaces is removed once the log records the new
// one, at the next round even when that round has nothing to compact: on
// an idle node the next snapshot may be days away, and until then the disk
// would hold the whole state twice. (CI caught a follower with two images
// after its compaction's write landed a moment after the round looked.)
TEST_F(LogCompactorTest, TheImageASnapshotReplacesGoesOnceTheLogRecordsIt) {
  CreateSessions(5);
  absl::StatusOr<LogIndex> first = compactor_->CompactOnce(/*force=*/true);
  ASSERT_TRUE(first.ok()) << first.status();
  ASSERT_GT(*first, LogIndex(0));
  ASSERT_TRUE(WaitForLogSnapshot(*first));
  ASSERT_EQ(Images().size(), 1u);

  CreateSessions(5);
  log_view_->Hold();
  absl::StatusOr<LogIndex> second = compactor_->CompactOnce(/*force=*/true);
  ASSERT_TRUE(second.ok()) << second.status();
  ASSERT_GT(*second, *first);
  // Not recorded yet: the log still names the first image, so it stays.
  EXPECT_EQ(Images().size(), 2u);
  log_view_->Release();
  ASSERT_TRUE(WaitForLogSnapshot(*second));

  // A round with nothing new to compact.
  absl::StatusOr<LogIndex> idle = compactor_->CompactOnce();
  ASSERT_TRUE(idle.ok()) << idle.status();
  EXPECT_EQ(*idle, LogIndex(0));
  const std::set<std::string> images = Images();
  ASSERT_EQ(images.size(), 1u);
  EXPECT_EQ(images.begin()->rfind(absl::StrCat(second->value(), "-"), 0), 0u)
      << *images.begin();
}

// A follower's log records a received image before its state loads it, and
// a newer one can be recorded while the state still loads the older: both
// stay until the state passes them (removing the one being loaded crashed
// the node: its load found the file gone). Images the state has passed go.
TEST_F(LogCompactorTest, AnImageTheStateHasNotLoadedYetStays) {
  CreateSessions(5);
  absl::StatusOr<LogIndex> own = compactor_->CompactOnce(/*force=*/true);
  ASSERT_TRUE(own.ok()) << own.status();
  ASSERT_TRUE(WaitForLogSnapshot(*own));
  const LogIndex applied = state_machine_->applied_index();
  const replication::Snapshot loading = WriteReceivedImage(applied + 10);
  const replication::Snapshot newer = WriteReceivedImage(applied + 20);
  log_view_->RecordReceived(newer);

  absl::StatusOr<LogIndex> round = compactor_->CompactOnce();
  ASSERT_TRUE(round.ok()) << round.status();
  EXPECT_EQ(*round, LogIndex(0));  // nothing applied past the log's image
  const std::set<std::string> images = Images();
  EXPECT_EQ(images.size(), 2u) << absl::StrJoin(images, ", ");
  EXPECT_EQ(
      images.count(storage::DecodeSnapshotRef(loading.data).value().file()),
      1u);
  EXPECT_EQ(images.count(storage::DecodeSnapshotRef(newer.data).value().file()),
            1u);
}

// An image found damaged while being sent is replaced as soon as an entry
// past it has applied, however few entries that is (min_entries is 10,000
// here): every follower needing a snapshot was sent the damaged image, and
// refused it, until 10,000 more writes made the next one.
TEST_F(LogCompactorTest, ADamagedImageIsReplacedAtTheNextAppliedEntry) {
  CreateSessions(3);
  absl::StatusOr<LogIndex> first = compactor_->CompactOnce(/*force=*/true);
  ASSERT_TRUE(first.ok()) << first.status();
  ASSERT_TRUE(WaitForLogSnapshot(*first));
  CreateSessions(1);
  absl::StatusOr<LogIndex> round = compactor_->CompactOnce();
  ASSERT_TRUE(round.ok()) << round.status();
  EXPECT_EQ(*round, LogIndex(0)) << "under min_entries, nothing to do";

  compactor_->ReplaceCorruptImage(*first);
  // The round ReplaceCorruptImage starts on the compactor's thread (the
  // interval here is an hour) makes the replacement.
  ASSERT_TRUE(WaitForLogSnapshot(state_machine_->applied_index()));
  absl::StatusOr<replication::Snapshot> current = log_->GetSnapshot();
  ASSERT_TRUE(current.ok()) << current.status();
  EXPECT_GT(current->meta.index, *first);

  // Replaced: min_entries holds again.
  CreateSessions(1);
  round = compactor_->CompactOnce();
  ASSERT_TRUE(round.ok()) << round.status();
  EXPECT_EQ(*round, LogIndex(0));
}

}  // namespace
}  // namespace sessiond::server
