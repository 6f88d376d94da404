// Copyright sessiond authors. Licensed under the Apache License 2.0.
//
// RocksDB-specific behaviour of RaftLogStore: persistence across reopen and
// bootstrap. The LogStore contract itself (shared with MemoryLogStore) is
// tests/replication/log_store_contract_test.cc.
#include "storage/raft_log_store.h"

#include <atomic>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "rocksdb/env.h"
#include "rocksdb/file_system.h"
#include "storage/database.h"
#include "storage/keys.h"
#include "tests/storage/power_cut_fs.h"
#include "tests/storage/temp_dir.h"

namespace sessiond::storage {
namespace {

using replication::ConfState;
using replication::Entry;
using replication::EntryType;
using replication::HardState;
using replication::Snapshot;
using sessiond::testing::TempDir;

Entry E(uint64_t index, uint64_t term, std::string data = "") {
  Entry e;
  e.index = LogIndex(index);
  e.term = Term(term);
  e.data = data.empty() ? absl::StrCat("cmd-", index, "-", term) : data;
  return e;
}

std::vector<Entry> Range(uint64_t lo, uint64_t hi, uint64_t term) {
  std::vector<Entry> out;
  for (uint64_t i = lo; i <= hi; ++i) out.push_back(E(i, term));
  return out;
}

class RaftLogStoreTest : public ::testing::Test {
 protected:
  void SetUp() override { Reopen(); }

  void Reopen() {
    store_.reset();
    db_.reset();
    auto db = Database::Open(dir_.Sub("data"), DatabaseOptions());
    ASSERT_TRUE(db.ok()) << db.status();
    db_ = *std::move(db);
    auto store = RaftLogStore::Open(db_.get());
    ASSERT_TRUE(store.ok()) << store.status();
    store_ = *std::move(store);
  }

  TempDir dir_;
  std::unique_ptr<Database> db_;
  std::unique_ptr<RaftLogStore> store_;
};

TEST_F(RaftLogStoreTest, ReopenKeepsEntriesAndHardState) {
  HardState hs{Term(3), NodeId(2), LogIndex(4)};
  std::vector<Entry> entries = Range(1, 5, 3);
  entries[2].type = EntryType::kConfChange;
  ASSERT_TRUE(store_->Append(entries, hs, /*sync=*/true).ok());
  Reopen();
  EXPECT_EQ(store_->InitialHardState(), hs);
  EXPECT_EQ(store_->FirstIndex(), LogIndex(1));
  EXPECT_EQ(store_->LastIndex(), LogIndex(5));
  auto got = store_->Entries(LogIndex(1), LogIndex(6), UINT64_MAX);
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(*got, entries);
}

TEST_F(RaftLogStoreTest, UnsyncedAppendIsReadableAndSurvivesCleanClose) {
  ASSERT_TRUE(store_->Append(Range(1, 3, 1), std::nullopt, false).ok());
  EXPECT_EQ(store_->LastIndex(), LogIndex(3));
  Reopen();  // clean close flushes
  EXPECT_EQ(store_->LastIndex(), LogIndex(3));
}

TEST_F(RaftLogStoreTest, TruncationIsDurable) {
  ASSERT_TRUE(store_->Append(Range(1, 10, 1), std::nullopt, true).ok());
  ASSERT_TRUE(store_->Append(Range(4, 5, 2), std::nullopt, true).ok());
  Reopen();
  EXPECT_EQ(store_->LastIndex(), LogIndex(5));
  EXPECT_EQ(*store_->TermAt(LogIndex(3)), Term(1));
  EXPECT_EQ(*store_->TermAt(LogIndex(5)), Term(2));
  EXPECT_EQ(store_->TermAt(LogIndex(6)).status().code(),
            absl::StatusCode::kOutOfRange);
  // Nothing of the old suffix remains in RocksDB.
  std::string value;
  EXPECT_TRUE(db_->db()
                  ->Get(rocksdb::ReadOptions(), db_->raft_log_cf(),
                        LogKey(LogIndex(7)), &value)
                  .IsNotFound());
}

TEST_F(RaftLogStoreTest, CompactionIsDurableAndDropsEntries) {
  ASSERT_TRUE(store_->Append(Range(1, 10, 2), std::nullopt, true).ok());
  Snapshot snap;
  snap.meta.index = LogIndex(6);
  snap.meta.term = Term(2);
  snap.meta.conf_state.voters = {NodeId(1), NodeId(2), NodeId(3)};
  ASSERT_TRUE(store_->Compact(snap).ok());
  Reopen();
  EXPECT_EQ(store_->FirstIndex(), LogIndex(7));
  EXPECT_EQ(store_->LastIndex(), LogIndex(10));
  EXPECT_EQ(*store_->TermAt(LogIndex(6)), Term(2));
  EXPECT_EQ(store_->InitialConfState(), snap.meta.conf_state);
  std::string value;
  EXPECT_TRUE(db_->db()
                  ->Get(rocksdb::ReadOptions(), db_->raft_log_cf(),
                        LogKey(LogIndex(3)), &value)
                  .IsNotFound());
  auto got = store_->Entries(LogIndex(7), LogIndex(11), UINT64_MAX);
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(got->size(), 4u);
  // GetSnapshot: what Compact recorded (no image reference here).
  auto snapshot = store_->GetSnapshot();
  ASSERT_TRUE(snapshot.ok());
  EXPECT_EQ(snapshot->meta, snap.meta);
  EXPECT_TRUE(snapshot->data.empty());
}

TEST_F(RaftLogStoreTest, InstallSnapshotIsDurable) {
  ASSERT_TRUE(store_->Append(Range(1, 5, 1), std::nullopt, true).ok());
  Snapshot snap;
  snap.meta.index = LogIndex(20);
  snap.meta.term = Term(4);
  snap.meta.conf_state.voters = {NodeId(1)};
  snap.meta.conf_state.learners = {NodeId(9)};
  ASSERT_TRUE(store_->InstallSnapshot(snap).ok());
  Reopen();
  EXPECT_EQ(store_->FirstIndex(), LogIndex(21));
  EXPECT_EQ(store_->LastIndex(), LogIndex(20));
  EXPECT_EQ(*store_->TermAt(LogIndex(20)), Term(4));
  EXPECT_EQ(store_->InitialHardState().commit, LogIndex(20));
  EXPECT_EQ(store_->InitialConfState(), snap.meta.conf_state);
  ASSERT_TRUE(store_->Append(Range(21, 22, 4), std::nullopt, true).ok());
  Reopen();
  EXPECT_EQ(store_->LastIndex(), LogIndex(22));
}

// A new group's membership is its log's first entries (as etcd does), so a
// member that joins later learns it from the log like any other change.
TEST_F(RaftLogStoreTest, BootstrapWritesTheMembershipAsCommittedEntries) {
  EXPECT_TRUE(store_->InitialConfState().voters.empty());
  ConfState conf;
  conf.voters = {NodeId(1), NodeId(2), NodeId(3)};
  ASSERT_TRUE(store_->Bootstrap(conf).ok());
  Reopen();
  EXPECT_TRUE(store_->InitialConfState().voters.empty());
  EXPECT_EQ(store_->LastIndex(), LogIndex(3));
  EXPECT_EQ(store_->InitialHardState().term, Term(1));
  EXPECT_EQ(store_->InitialHardState().commit, LogIndex(3));
  auto entries = store_->Entries(LogIndex(1), LogIndex(4), 1 << 20);
  ASSERT_TRUE(entries.ok());
  ASSERT_EQ(entries->size(), 3u);
  for (size_t i = 0; i < 3; ++i) {
    const replication::Entry& e = (*entries)[i];
    EXPECT_EQ(e.term, Term(1));
    EXPECT_EQ(e.type, replication::EntryType::kConfChange);
    replication::ConfChange change;
    ASSERT_TRUE(replication::DecodeConfChange(e.data, &change));
    EXPECT_EQ(change.type, replication::ConfChangeType::kPromoteVoter);
    EXPECT_EQ(change.node, conf.voters[i]);
  }
  EXPECT_EQ(store_->Bootstrap(conf).code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(store_->Bootstrap(ConfState()).code(),
            absl::StatusCode::kInvalidArgument);
}

// The log keeps a tail below the snapshot for followers that lag a little:
// the truncation point and the snapshot are separate.
TEST_F(RaftLogStoreTest, CompactionKeepsATailBelowTheSnapshot) {
  ASSERT_TRUE(store_->Append(Range(1, 10, 2), std::nullopt, true).ok());
  replication::Snapshot snap;
  snap.meta.index = LogIndex(8);
  snap.meta.term = Term(2);
  snap.meta.conf_state.voters = {NodeId(1)};
  snap.data = "ref";
  ASSERT_TRUE(store_->Compact(snap, LogIndex(5)).ok());
  for (int reopen = 0; reopen < 2; ++reopen) {
    EXPECT_EQ(store_->FirstIndex(), LogIndex(6));
    EXPECT_EQ(*store_->TermAt(LogIndex(5)), Term(2));
    EXPECT_FALSE(store_->TermAt(LogIndex(4)).ok());
    auto got = store_->GetSnapshot();
    ASSERT_TRUE(got.ok());
    EXPECT_EQ(got->meta.index, LogIndex(8));
    EXPECT_EQ(got->data, "ref");
    EXPECT_EQ(store_->InitialConfState(), snap.meta.conf_state);
    Reopen();
  }
  // Truncating past the snapshot is refused; an older snapshot is ignored
  // but its truncation (up to the current snapshot) applies.
  EXPECT_EQ(store_->Compact(snap, LogIndex(9)).code(),
            absl::StatusCode::kInvalidArgument);
  replication::Snapshot older = snap;
  older.meta.index = LogIndex(7);
  older.data = "older";
  ASSERT_TRUE(store_->Compact(older, LogIndex(7)).ok());
  EXPECT_EQ(store_->FirstIndex(), LogIndex(8));
  EXPECT_EQ(store_->GetSnapshot()->data, "ref");
}

TEST_F(RaftLogStoreTest, CorruptEntryIsDataLoss) {
  ASSERT_TRUE(store_->Append(Range(1, 3, 1), std::nullopt, true).ok());
  ASSERT_TRUE(db_->db()
                  ->Put(rocksdb::WriteOptions(), db_->raft_log_cf(),
                        LogKey(LogIndex(2)), "xx")
                  .ok());
  EXPECT_EQ(
      store_->Entries(LogIndex(1), LogIndex(4), UINT64_MAX).status().code(),
      absl::StatusCode::kDataLoss);
  EXPECT_EQ(store_->TermAt(LogIndex(2)).status().code(),
            absl::StatusCode::kDataLoss);
}

// The real file system, except that once failing() is set, reads of a
// table file's first block (offset 0: where its first data block lies) fail
// as a dying disk's do. Its index and footer, at the end, still read.
class FailingFirstBlockFileSystem : public rocksdb::FileSystemWrapper {
 public:
  FailingFirstBlockFileSystem()
      : rocksdb::FileSystemWrapper(rocksdb::FileSystem::Default()) {}
  const char* Name() const override { return "FailingFirstBlockFileSystem"; }

  void set_failing(bool failing) { failing_.store(failing); }

  rocksdb::IOStatus NewRandomAccessFile(
      const std::string& name, const rocksdb::FileOptions& options,
      std::unique_ptr<rocksdb::FSRandomAccessFile>* result,
      rocksdb::IODebugContext* dbg) override {
    rocksdb::IOStatus s =
        target()->NewRandomAccessFile(name, options, result, dbg);
    if (s.ok() && absl::EndsWith(name, ".sst")) {
      *result = std::make_unique<TableFile>(&failing_, std::move(*result));
    }
    return s;
  }

 private:
  class TableFile : public rocksdb::FSRandomAccessFileOwnerWrapper {
   public:
    TableFile(const std::atomic<bool>* failing,
              std::unique_ptr<rocksdb::FSRandomAccessFile> target)
        : rocksdb::FSRandomAccessFileOwnerWrapper(std::move(target)),
          failing_(failing) {}
    rocksdb::IOStatus Read(uint64_t offset, size_t n,
                           const rocksdb::IOOptions& options,
                           rocksdb::Slice* result, char* scratch,
                           rocksdb::IODebugContext* dbg) const override {
      if (offset == 0 && failing_->load()) {
        return rocksdb::IOStatus::IOError("While pread: Input/output error");
      }
      return target()->Read(offset, n, options, result, scratch, dbg);
    }

   private:
    const std::atomic<bool>* const failing_;
  };

  std::atomic<bool> failing_{false};
};

// Opening the log reads its first entry to see that none is missing. A read
// error there was taken for a missing entry (DATA_LOSS, which tells the
// operator the log is damaged) instead of the I/O error it is.
TEST(RaftLogStoreReadErrorTest, AReadErrorAtOpenIsNotCalledALostEntry) {
  TempDir dir;
  auto fs = std::make_shared<FailingFirstBlockFileSystem>();
  DatabaseOptions options;
  options.env = rocksdb::NewCompositeEnv(fs);
  const std::string data = dir.Sub("data");
  {
    auto db = Database::Open(data, options);
    ASSERT_TRUE(db.ok()) << db.status();
    auto store = RaftLogStore::Open(db->get());
    ASSERT_TRUE(store.ok()) << store.status();
    std::vector<Entry> entries;
    for (uint64_t i = 1; i <= 64; ++i) {
      entries.push_back(E(i, 1, std::string(1024, 'a' + i % 26)));
    }
    ASSERT_TRUE((*store)->Append(entries, std::nullopt, true).ok());
    ASSERT_TRUE((*db)->Flush().ok());  // into a table file of many blocks
  }
  auto db = Database::Open(data, options);  // nothing of it cached
  ASSERT_TRUE(db.ok()) << db.status();
  fs->set_failing(true);
  auto store = RaftLogStore::Open(db->get());
  ASSERT_FALSE(store.ok());
  EXPECT_NE(store.status().code(), absl::StatusCode::kDataLoss)
      << store.status();
  EXPECT_NE(store.status().message().find("Input/output error"),
            std::string::npos)
      << store.status();
  fs->set_failing(false);
  store = RaftLogStore::Open(db->get());
  ASSERT_TRUE(store.ok()) << store.status();
  EXPECT_EQ((*store)->LastIndex(), LogIndex(64));
}

TEST_F(RaftLogStoreTest, ReadersRunBesideTheWriter) {
  std::atomic<bool> done{false};
  std::atomic<int> errors{0};
  std::thread reader([&] {
    for (int i = 0; i < 100000 && !done.load(); ++i) {
      const LogIndex first = store_->FirstIndex();
      const LogIndex last = store_->LastIndex();
      if (last < first) continue;
      auto entries = store_->Entries(first, last + 1, 1 << 20);
      // A concurrent truncation may make the range stale (OutOfRange), but
      // never corrupt.
      if (!entries.ok() &&
          entries.status().code() != absl::StatusCode::kOutOfRange) {
        ++errors;
      }
    }
  });
  for (uint64_t i = 1; i <= 300; ++i) {
    // Every 10th append rewrites the last two entries with a newer term.
    if (i % 10 == 0 && i > 2) {
      ASSERT_TRUE(
          store_->Append({E(i - 1, i), E(i, i)}, std::nullopt, false).ok());
    } else {
      ASSERT_TRUE(store_->Append({E(i, i)}, std::nullopt, false).ok());
    }
  }
  done = true;
  reader.join();
  EXPECT_EQ(errors.load(), 0);
  EXPECT_EQ(store_->LastIndex(), LogIndex(300));
}

// The writes that promise durability (Bootstrap, Compact, InstallSnapshot)
// survive a power cut, not only a clean reopen: the store runs over
// PowerCutFileSystem, and only what was synced is there after the cut.
// (Each of the three, written with sync=false, fails this test.)
TEST(RaftLogStorePowerLossTest, SnapshotsAndCompactionSurviveAPowerCut) {
  TempDir dir;
  const std::string data = dir.Sub("data");
  std::filesystem::create_directories(data);
  testing::PowerCutOptions cut;
  cut.after_cut = testing::PowerCutOptions::AfterCut::kKeepRunning;
  auto fs = std::make_shared<testing::PowerCutFileSystem>(data, cut);
  DatabaseOptions options;
  options.env = rocksdb::NewCompositeEnv(fs);
  // Runs `write` on the store, cuts the power, and reopens what survived.
  auto cut_after = [&](const std::function<void(RaftLogStore*)>& write) {
    {
      auto db = Database::Open(data, options);
      EXPECT_TRUE(db.ok()) << db.status();
      auto store = RaftLogStore::Open(db->get());
      EXPECT_TRUE(store.ok()) << store.status();
      write(store->get());
      fs->CutPower();
    }
    EXPECT_TRUE(fs->ApplyPowerLoss().ok());
  };
  auto reopen = [&](const std::function<void(const RaftLogStore&)>& check) {
    auto db = Database::Open(data, options);
    ASSERT_TRUE(db.ok()) << db.status();
    auto store = RaftLogStore::Open(db->get());
    ASSERT_TRUE(store.ok()) << store.status();
    check(**store);
  };

  ConfState conf;
  conf.voters = {NodeId(1)};
  cut_after(
      [&](RaftLogStore* store) { ASSERT_TRUE(store->Bootstrap(conf).ok()); });
  reopen([](const RaftLogStore& store) {
    EXPECT_EQ(store.LastIndex(), LogIndex(1));
    EXPECT_EQ(store.InitialHardState().commit, LogIndex(1));
  });

  replication::Snapshot snap;
  snap.meta.index = LogIndex(8);
  snap.meta.term = Term(2);
  snap.meta.conf_state = conf;
  snap.data = "ref";
  cut_after([&](RaftLogStore* store) {
    ASSERT_TRUE(store->Append(Range(2, 10, 2), std::nullopt, true).ok());
    ASSERT_TRUE(store->Compact(snap, LogIndex(5)).ok());
  });
  reopen([&](const RaftLogStore& store) {
    EXPECT_EQ(store.FirstIndex(), LogIndex(6));
    EXPECT_EQ(store.LastIndex(), LogIndex(10));
    EXPECT_EQ(store.GetSnapshot()->meta, snap.meta);
    EXPECT_EQ(store.GetSnapshot()->data, "ref");
  });

  snap.meta.index = LogIndex(20);
  snap.meta.term = Term(4);
  snap.data = "installed";
  cut_after([&](RaftLogStore* store) {
    ASSERT_TRUE(store->InstallSnapshot(snap).ok());
  });
  reopen([&](const RaftLogStore& store) {
    EXPECT_EQ(store.FirstIndex(), LogIndex(21));
    EXPECT_EQ(store.LastIndex(), LogIndex(20));
    EXPECT_EQ(store.InitialHardState().commit, LogIndex(20));
    EXPECT_EQ(store.GetSnapshot()->data, "installed");
  });
}

}  // namespace
}  // namespace sessiond::storage
