// Copyright sessiond authors. Licensed under the Apache License 2.0.
//
// The LogStore contract (replication/log_store.h, core/log_reader.h), run
// against both implementations: replication::MemoryLogStore (simulation)
// and storage::RaftLogStore (RocksDB). Anything the Raft core relies on from
// its log belongs here, so that the simulator's log cannot drift from the
// production one.
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "replication/log_store.h"
#include "replication/memory_log_store.h"
#include "storage/database.h"
#include "storage/raft_log_store.h"
#include "tests/storage/temp_dir.h"

namespace sessiond::replication {
namespace {

// Owns a store and can "restart" it: reopen from durable state.
class MemoryFactory {
 public:
  MemoryFactory() : store_(std::make_unique<MemoryLogStore>()) {}
  LogStore* store() { return store_.get(); }
  // The simulator keeps the store object across a crash: it is the disk.
  void Reopen() {}

 private:
  std::unique_ptr<MemoryLogStore> store_;
};

class RocksFactory {
 public:
  RocksFactory() { Reopen(); }
  LogStore* store() { return store_.get(); }
  void Reopen() {
    store_.reset();
    db_.reset();
    auto db =
        storage::Database::Open(dir_.Sub("data"), storage::DatabaseOptions());
    if (!db.ok()) {
      ADD_FAILURE() << db.status();
      return;
    }
    db_ = *std::move(db);
    auto store = storage::RaftLogStore::Open(db_.get());
    if (!store.ok()) {
      ADD_FAILURE() << store.status();
      return;
    }
    store_ = *std::move(store);
  }

 private:
  sessiond::testing::TempDir dir_;
  std::unique_ptr<storage::Database> db_;
  std::unique_ptr<storage::RaftLogStore> store_;
};

Entry E(uint64_t index, uint64_t term, size_t size = 0) {
  Entry e;
  e.index = LogIndex(index);
  e.term = Term(term);
  e.data = size == 0 ? absl::StrCat("e", index, "t", term)
                     : std::string(size, static_cast<char>('a' + index % 26));
  return e;
}

std::vector<Entry> Range(uint64_t lo, uint64_t hi, uint64_t term,
                         size_t size = 0) {
  std::vector<Entry> out;
  for (uint64_t i = lo; i <= hi; ++i) out.push_back(E(i, term, size));
  return out;
}

Snapshot Snap(uint64_t index, uint64_t term) {
  Snapshot s;
  s.meta.index = LogIndex(index);
  s.meta.term = Term(term);
  s.meta.conf_state.voters = {NodeId(1), NodeId(2), NodeId(3)};
  s.meta.conf_state.learners = {NodeId(4)};
  return s;
}

template <typename Factory>
class LogStoreContractTest : public ::testing::Test {
 protected:
  LogStore& log() { return *factory_.store(); }
  void Reopen() { factory_.Reopen(); }

  std::vector<Entry> All() {
    auto got =
        log().Entries(log().FirstIndex(), log().LastIndex() + 1, UINT64_MAX);
    EXPECT_TRUE(got.ok()) << got.status();
    return got.ok() ? *got : std::vector<Entry>();
  }

  Factory factory_;
};

using Factories = ::testing::Types<MemoryFactory, RocksFactory>;
TYPED_TEST_SUITE(LogStoreContractTest, Factories);

TYPED_TEST(LogStoreContractTest, NewLogIsEmpty) {
  EXPECT_EQ(this->log().FirstIndex(), LogIndex(1));
  EXPECT_EQ(this->log().LastIndex(), LogIndex(0));
  EXPECT_EQ(this->log().InitialHardState(), HardState());
  auto term = this->log().TermAt(LogIndex(0));
  ASSERT_TRUE(term.ok()) << term.status();
  EXPECT_EQ(*term, Term(0));
  auto entries = this->log().Entries(LogIndex(1), LogIndex(1), 100);
  ASSERT_TRUE(entries.ok());
  EXPECT_TRUE(entries->empty());
  auto snapshot = this->log().GetSnapshot();
  ASSERT_TRUE(snapshot.ok());
  EXPECT_TRUE(snapshot->empty());
  EXPECT_EQ(this->log().TermAt(LogIndex(1)).status().code(),
            absl::StatusCode::kOutOfRange);
}

TYPED_TEST(LogStoreContractTest, AppendAndRead) {
  ASSERT_TRUE(this->log().Append(Range(1, 3, 1), std::nullopt, true).ok());
  ASSERT_TRUE(this->log().Append(Range(4, 5, 2), std::nullopt, true).ok());
  EXPECT_EQ(this->log().FirstIndex(), LogIndex(1));
  EXPECT_EQ(this->log().LastIndex(), LogIndex(5));
  std::vector<Entry> want = Range(1, 3, 1);
  for (const Entry& e : Range(4, 5, 2)) want.push_back(e);
  EXPECT_EQ(this->All(), want);
  EXPECT_EQ(*this->log().TermAt(LogIndex(3)), Term(1));
  EXPECT_EQ(*this->log().TermAt(LogIndex(4)), Term(2));
  auto middle = this->log().Entries(LogIndex(2), LogIndex(4), UINT64_MAX);
  ASSERT_TRUE(middle.ok());
  ASSERT_EQ(middle->size(), 2u);
  EXPECT_EQ((*middle)[0], E(2, 1));
  EXPECT_EQ((*middle)[1], E(3, 1));
  // A conf change entry keeps its type.
  Entry conf = E(6, 2);
  conf.type = EntryType::kConfChange;
  ASSERT_TRUE(this->log().Append({conf}, std::nullopt, false).ok());
  auto got = this->log().Entries(LogIndex(6), LogIndex(7), 0);
  ASSERT_TRUE(got.ok());
  EXPECT_EQ((*got)[0], conf);
}

TYPED_TEST(LogStoreContractTest, ConflictingSuffixIsTruncated) {
  ASSERT_TRUE(this->log().Append(Range(1, 6, 1), std::nullopt, true).ok());
  // A new leader overwrites from index 3 with a shorter log.
  ASSERT_TRUE(this->log().Append(Range(3, 4, 2), std::nullopt, true).ok());
  EXPECT_EQ(this->log().LastIndex(), LogIndex(4));
  std::vector<Entry> want = Range(1, 2, 1);
  for (const Entry& e : Range(3, 4, 2)) want.push_back(e);
  EXPECT_EQ(this->All(), want);
  EXPECT_EQ(this->log().TermAt(LogIndex(5)).status().code(),
            absl::StatusCode::kOutOfRange);
  EXPECT_EQ(
      this->log().Entries(LogIndex(1), LogIndex(6), UINT64_MAX).status().code(),
      absl::StatusCode::kOutOfRange);
  // Survives a restart, and the log grows again from the new end.
  this->Reopen();
  EXPECT_EQ(this->All(), want);
  ASSERT_TRUE(this->log().Append(Range(5, 5, 2), std::nullopt, true).ok());
  EXPECT_EQ(*this->log().TermAt(LogIndex(5)), Term(2));
  // Replacing the whole log from its first index works too.
  ASSERT_TRUE(this->log().Append(Range(1, 2, 3), std::nullopt, true).ok());
  EXPECT_EQ(this->All(), Range(1, 2, 3));
}

TYPED_TEST(LogStoreContractTest, AppendOutsideTheLogIsRejected) {
  ASSERT_TRUE(this->log().Append(Range(1, 3, 1), std::nullopt, true).ok());
  // A gap after the last index.
  EXPECT_FALSE(this->log().Append(Range(5, 6, 1), std::nullopt, true).ok());
  // Non-consecutive entries.
  EXPECT_FALSE(this->log().Append({E(4, 1), E(6, 1)}, std::nullopt, true).ok());
  EXPECT_EQ(this->log().LastIndex(), LogIndex(3));
  // Below the first index, after compaction.
  ASSERT_TRUE(this->log().Compact(Snap(2, 1)).ok());
  EXPECT_FALSE(this->log().Append(Range(2, 4, 2), std::nullopt, true).ok());
  EXPECT_EQ(this->All(), Range(3, 3, 1));
}

TYPED_TEST(LogStoreContractTest, EntriesBoundsAndMaxBytes) {
  ASSERT_TRUE(
      this->log().Append(Range(1, 10, 1, 100), std::nullopt, true).ok());
  auto entries = this->log().Entries(LogIndex(1), LogIndex(11), 350);
  ASSERT_TRUE(entries.ok());
  EXPECT_EQ(entries->size(), 3u);  // 300 bytes; a 4th would exceed 350
  entries = this->log().Entries(LogIndex(1), LogIndex(11), 300);
  ASSERT_TRUE(entries.ok());
  EXPECT_EQ(entries->size(), 3u);  // exactly at the limit is allowed
  // At least one entry, even when it alone is over the limit.
  entries = this->log().Entries(LogIndex(4), LogIndex(11), 0);
  ASSERT_TRUE(entries.ok());
  ASSERT_EQ(entries->size(), 1u);
  EXPECT_EQ((*entries)[0].index, LogIndex(4));
  // hi bounds the answer.
  entries = this->log().Entries(LogIndex(4), LogIndex(6), UINT64_MAX);
  ASSERT_TRUE(entries.ok());
  EXPECT_EQ(entries->size(), 2u);
  // Out of range.
  EXPECT_EQ(this->log()
                .Entries(LogIndex(5), LogIndex(12), UINT64_MAX)
                .status()
                .code(),
            absl::StatusCode::kOutOfRange);
  EXPECT_EQ(
      this->log().Entries(LogIndex(0), LogIndex(3), UINT64_MAX).status().code(),
      absl::StatusCode::kOutOfRange);
  // Empty range at the end is fine.
  entries = this->log().Entries(LogIndex(11), LogIndex(11), 10);
  ASSERT_TRUE(entries.ok());
  EXPECT_TRUE(entries->empty());
}

TYPED_TEST(LogStoreContractTest, CompactDropsEntriesAndKeepsTheSnapshotTerm) {
  ASSERT_TRUE(this->log().Append(Range(1, 5, 1), std::nullopt, true).ok());
  ASSERT_TRUE(this->log().Append(Range(6, 10, 2), std::nullopt, true).ok());
  ASSERT_TRUE(this->log().Compact(Snap(6, 2)).ok());
  EXPECT_EQ(this->log().FirstIndex(), LogIndex(7));
  EXPECT_EQ(this->log().LastIndex(), LogIndex(10));
  EXPECT_EQ(*this->log().TermAt(LogIndex(6)), Term(2));  // snapshot index
  EXPECT_EQ(this->log().TermAt(LogIndex(5)).status().code(),
            absl::StatusCode::kOutOfRange);
  EXPECT_EQ(
      this->log().Entries(LogIndex(6), LogIndex(8), UINT64_MAX).status().code(),
      absl::StatusCode::kOutOfRange);
  EXPECT_EQ(this->All(), Range(7, 10, 2));
  auto snapshot = this->log().GetSnapshot();
  ASSERT_TRUE(snapshot.ok());
  EXPECT_EQ(snapshot->meta, Snap(6, 2).meta);
  EXPECT_EQ(this->log().InitialConfState(), Snap(6, 2).meta.conf_state);
  // An older compaction is a no-op; one beyond the last index is an error.
  EXPECT_TRUE(this->log().Compact(Snap(3, 1)).ok());
  EXPECT_EQ(this->log().FirstIndex(), LogIndex(7));
  EXPECT_FALSE(this->log().Compact(Snap(11, 2)).ok());
  // Compacting everything leaves an empty log at the snapshot.
  ASSERT_TRUE(this->log().Compact(Snap(10, 2)).ok());
  EXPECT_EQ(this->log().FirstIndex(), LogIndex(11));
  EXPECT_EQ(this->log().LastIndex(), LogIndex(10));
  EXPECT_EQ(*this->log().TermAt(LogIndex(10)), Term(2));
  this->Reopen();
  EXPECT_EQ(this->log().FirstIndex(), LogIndex(11));
  EXPECT_EQ(this->log().LastIndex(), LogIndex(10));
  ASSERT_TRUE(this->log().Append(Range(11, 12, 3), std::nullopt, true).ok());
  EXPECT_EQ(this->All(), Range(11, 12, 3));
}

TYPED_TEST(LogStoreContractTest, InstallSnapshotReplacesTheLog) {
  ASSERT_TRUE(this->log().Append(Range(1, 5, 1), std::nullopt, true).ok());
  // Behind the log's end and ahead of it: both replace everything.
  ASSERT_TRUE(this->log().InstallSnapshot(Snap(3, 1)).ok());
  EXPECT_EQ(this->log().FirstIndex(), LogIndex(4));
  EXPECT_EQ(this->log().LastIndex(), LogIndex(3));
  ASSERT_TRUE(this->log().InstallSnapshot(Snap(20, 4)).ok());
  EXPECT_EQ(this->log().FirstIndex(), LogIndex(21));
  EXPECT_EQ(this->log().LastIndex(), LogIndex(20));
  EXPECT_EQ(*this->log().TermAt(LogIndex(20)), Term(4));
  EXPECT_EQ(this->log().TermAt(LogIndex(5)).status().code(),
            absl::StatusCode::kOutOfRange);
  EXPECT_GE(this->log().InitialHardState().commit, LogIndex(20));
  EXPECT_EQ(this->log().InitialConfState(), Snap(20, 4).meta.conf_state);
  ASSERT_TRUE(this->log().Append(Range(21, 23, 4), std::nullopt, true).ok());
  this->Reopen();
  EXPECT_EQ(this->log().FirstIndex(), LogIndex(21));
  EXPECT_EQ(this->All(), Range(21, 23, 4));
  EXPECT_EQ(this->log().GetSnapshot()->meta, Snap(20, 4).meta);
}

TYPED_TEST(LogStoreContractTest, HardStatePersists) {
  const HardState hs{Term(5), NodeId(2), LogIndex(0)};
  ASSERT_TRUE(this->log().Append({}, hs, true).ok());
  EXPECT_EQ(this->log().LastIndex(), LogIndex(0));
  this->Reopen();
  EXPECT_EQ(this->log().InitialHardState(), hs);
  // With entries, in the same append.
  const HardState hs2{Term(6), NodeId(3), LogIndex(2)};
  ASSERT_TRUE(this->log().Append(Range(1, 3, 6), hs2, true).ok());
  this->Reopen();
  EXPECT_EQ(this->log().InitialHardState(), hs2);
  EXPECT_EQ(this->All(), Range(1, 3, 6));
  // An append without a hard state leaves it as it was.
  ASSERT_TRUE(this->log().Append(Range(4, 4, 6), std::nullopt, true).ok());
  this->Reopen();
  EXPECT_EQ(this->log().InitialHardState(), hs2);
}

}  // namespace
}  // namespace sessiond::replication
