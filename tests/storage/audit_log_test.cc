// Copyright sessiond authors. Licensed under the Apache License 2.0.
//
// The replicated audit log (storage/audit_log.h,
// storage/session_state_machine_audit.cc), on real RocksDB in a temp dir:
// seq assignment, drops by age and by count, restarts, snapshots and
// digests, paging, and truncation of oversized entries.
#include "storage/audit_log.h"

#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "google/protobuf/util/message_differencer.h"
#include "gtest/gtest.h"
#include "sessiond/v1/admin.pb.h"
#include "sessiond/v1/command.pb.h"
#include "storage/database.h"
#include "storage/session_state_machine.h"
#include "storage/session_table.h"
#include "storage/snapshot_files.h"
#include "tests/storage/temp_dir.h"

namespace sessiond::storage {
namespace {

using google::protobuf::util::MessageDifferencer;
using replication::ApplyResult;
using replication::Entry;
using sessiond::testing::TempDir;
using sessiond::v1::AuditEntry;
using sessiond::v1::ListAuditRequest;
using sessiond::v1::ListAuditResponse;
using sessiond::v1::internal::Command;

// One replica: a RocksDB, a table and a state machine; the database itself
// can be closed and opened again.
struct Replica {
  explicit Replica(const std::string& dir)
      : data(dir + "/data"), snap_dir(dir + "/snap") {
    std::filesystem::create_directories(data);
    files = std::make_unique<SnapshotFiles>(snap_dir);
    EXPECT_TRUE(files->Init().ok());
    Reopen();
  }
  // Closes the state machine and the database (~Database flushes), then
  // opens both again from the files.
  void Reopen() {
    sm.reset();
    table.reset();
    db.reset();
    auto db_or = Database::Open(data, DatabaseOptions());
    EXPECT_TRUE(db_or.ok()) << db_or.status();
    db = *std::move(db_or);
    table = std::make_unique<SessionTable>(SessionTableOptions{8});
    SessionStateMachineOptions options;
    options.snapshots = files.get();
    auto machine = SessionStateMachine::Open(db.get(), table.get(), options);
    EXPECT_TRUE(machine.ok()) << machine.status();
    sm = *std::move(machine);
  }
  // Applies `commands` as the next entries, in one Apply (one batch).
  std::vector<ApplyResult> ApplyAll(const std::vector<Command>& commands) {
    std::vector<Entry> entries;
    for (const Command& command : commands) {
      Entry e;
      e.index = sm->applied_index() + 1 + entries.size();
      e.term = Term(1);
      e.data = command.SerializeAsString();
      entries.push_back(std::move(e));
    }
    auto results = sm->Apply(entries);
    EXPECT_TRUE(results.ok()) << results.status();
    if (!results.ok()) return {};
    return *std::move(results);
  }
  ApplyResult Apply(const Command& command) {
    std::vector<ApplyResult> results = ApplyAll({command});
    if (results.size() != 1) return absl::InternalError("no result");
    return results[0];
  }
  // The seq an audit command got.
  uint64_t ApplySeq(const Command& command) {
    ApplyResult r = Apply(command);
    EXPECT_TRUE(r.ok()) << r.status();
    if (!r.ok()) return 0;
    return std::any_cast<uint64_t>(*r);
  }
  ListAuditResponse List(uint64_t after_seq = 0, uint32_t limit = 0) {
    ListAuditRequest request;
    request.set_after_seq(after_seq);
    request.set_limit(limit);
    auto response = sm->ListAudit(request);
    EXPECT_TRUE(response.ok()) << response.status();
    return response.ok() ? *std::move(response) : ListAuditResponse();
  }
  std::vector<uint64_t> Seqs(uint64_t after_seq = 0, uint32_t limit = 0) {
    std::vector<uint64_t> out;
    const ListAuditResponse list = List(after_seq, limit);
    for (const AuditEntry& e : list.entries()) {
      out.push_back(e.seq());
    }
    return out;
  }
  std::string Digest() {
    auto digest = sm->ComputeDigest();
    EXPECT_TRUE(digest.ok()) << digest.status();
    return digest.ok() ? digest->sha256_hex : "";
  }

  std::string data, snap_dir;
  std::unique_ptr<Database> db;
  std::unique_ptr<SnapshotFiles> files;
  std::unique_ptr<SessionTable> table;
  std::unique_ptr<SessionStateMachine> sm;
};

// An audited call as the server side proposes it.
Command Audit(int64_t ts, const std::string& method, int64_t retention_ms = 0,
              uint32_t max_entries = 0) {
  Command c;
  c.set_timestamp_ms(ts);
  AuditEntry* entry = c.mutable_audit()->mutable_entry();
  entry->set_identity("ops-admin");
  entry->set_auth_method("certificate");
  entry->set_peer("ipv4:127.0.0.1:5123");
  entry->set_node_id(2);
  entry->set_method(method);
  entry->set_request_json(R"({"reason":"test"})");
  entry->set_code(0);
  entry->set_duration_ms(3);
  entry->set_received_ms(ts - 5);
  // Whatever the proposer put there is replaced at application.
  entry->set_seq(777);
  entry->set_time_ms(1);
  c.mutable_audit()->set_retention_ms(retention_ms);
  c.mutable_audit()->set_max_entries(max_entries);
  return c;
}

Command CreateSession(int i, int64_t ts) {
  Command c;
  c.set_timestamp_ms(ts);
  c.mutable_create()->set_token_hash(std::string(32, static_cast<char>(i)));
  c.mutable_create()->set_session_id(absl::StrCat("sid-", i));
  c.mutable_create()->set_user_id("alice");
  c.mutable_create()->set_expires_at_ms(ts + 3'600'000);
  return c;
}

// What the transport does: the image's bytes into `to`'s folder.
replication::Snapshot Transfer(const Replica& from, const Replica& to,
                               const replication::Snapshot& snapshot) {
  auto ref = DecodeSnapshotRef(snapshot.data);
  EXPECT_TRUE(ref.ok());
  std::ifstream in(from.files->PathOf(ref->file()), std::ios::binary);
  const std::string bytes((std::istreambuf_iterator<char>(in)),
                          std::istreambuf_iterator<char>());
  auto file = to.files->NewFile(snapshot.meta.index, snapshot.meta.term, "t");
  EXPECT_TRUE(file.ok());
  SnapshotReceiver receiver(*std::move(file), ref->size());
  EXPECT_TRUE(receiver.Append(bytes).ok());
  auto received_ref = receiver.Finish();
  EXPECT_TRUE(received_ref.ok()) << received_ref.status();
  replication::Snapshot received = snapshot;
  received.data = EncodeSnapshotRef(*received_ref);
  return received;
}

class AuditLogTest : public ::testing::Test {
 protected:
  TempDir dir_;
  Replica a_{dir_.Sub("a")};
};

TEST_F(AuditLogTest, SeqsFollowTheLogAndTimeIsTheAppliedTime) {
  EXPECT_EQ(a_.List().entries_size(), 0);
  EXPECT_EQ(a_.List().oldest_seq(), 0u);
  EXPECT_EQ(a_.ApplySeq(Audit(1000, "/sessiond.v1.AdminService/Flush")), 1u);
  EXPECT_EQ(a_.ApplySeq(Audit(2000, "/sessiond.v1.AdminService/BulkRevoke")),
            2u);
  // A stamp behind the applied time: the applied time does not go back.
  EXPECT_EQ(a_.ApplySeq(Audit(1500, "/sessiond.v1.AdminService/AddMember")),
            3u);
  // Other commands between audits take no seq.
  ASSERT_TRUE(a_.Apply(CreateSession(1, 2500)).ok());
  EXPECT_EQ(a_.ApplySeq(Audit(3000, "/sessiond.v1.AdminService/Flush")), 4u);

  const ListAuditResponse list = a_.List();
  ASSERT_EQ(list.entries_size(), 4);
  EXPECT_EQ(list.oldest_seq(), 1u);
  EXPECT_EQ(list.next_after_seq(), 0u);
  EXPECT_EQ(list.dropped_over_limit(), 0u);
  const int64_t times[] = {1000, 2000, 2000, 3000};
  for (int i = 0; i < 4; ++i) {
    EXPECT_EQ(list.entries(i).seq(), static_cast<uint64_t>(i + 1));
    EXPECT_EQ(list.entries(i).time_ms(), times[i]);
  }
  // The rest of the entry is kept as proposed.
  const AuditEntry& e = list.entries(1);
  EXPECT_EQ(e.method(), "/sessiond.v1.AdminService/BulkRevoke");
  EXPECT_EQ(e.identity(), "ops-admin");
  EXPECT_EQ(e.auth_method(), "certificate");
  EXPECT_EQ(e.peer(), "ipv4:127.0.0.1:5123");
  EXPECT_EQ(e.node_id(), 2u);
  EXPECT_EQ(e.request_json(), R"({"reason":"test"})");
  EXPECT_EQ(e.duration_ms(), 3);
  EXPECT_EQ(e.received_ms(), 1995);
  EXPECT_EQ(a_.sm->AuditEntryCount(), 4u);
}

// What the leader's sweeper proposes when entries aged out and no new
// entry came to drop them: they went only with the next admin call, so on a
// quiet cluster entries naming identities stayed past their retention.
TEST_F(AuditLogTest, ACommandWithoutAnEntryTrimsWhatAgedOut) {
  for (int i = 0; i < 3; ++i) a_.ApplySeq(Audit(1000 * (i + 1), "/m"));
  EXPECT_FALSE(a_.sm->AuditDueForTrim(3000, 2500));
  EXPECT_TRUE(a_.sm->AuditDueForTrim(5000, 2500));
  EXPECT_FALSE(a_.sm->AuditDueForTrim(5000, 0));  // no age limit
  auto trim = [](int64_t ts, int64_t retention_ms) {
    Command c;
    c.set_timestamp_ms(ts);
    c.mutable_audit()->set_retention_ms(retention_ms);
    return c;
  };
  ApplyResult trimmed = a_.Apply(trim(5000, 2500));
  ASSERT_TRUE(trimmed.ok()) << trimmed.status();
  EXPECT_EQ(std::any_cast<uint64_t>(*trimmed), 2u);
  EXPECT_EQ(a_.Seqs(), std::vector<uint64_t>{3});
  EXPECT_FALSE(a_.sm->AuditDueForTrim(5000, 2500));
  // Every entry may go; seqs go on after them, across a restart.
  const std::string before = a_.Digest();
  ASSERT_TRUE(a_.Apply(trim(100'000, 1000)).ok());
  EXPECT_TRUE(a_.Seqs().empty());
  EXPECT_EQ(a_.List().dropped_over_limit(), 0u);
  EXPECT_NE(a_.Digest(), before);
  a_.Reopen();
  EXPECT_TRUE(a_.Seqs().empty());
  EXPECT_EQ(a_.ApplySeq(Audit(200'000, "/m")), 4u);
}

TEST_F(AuditLogTest, RetentionDropsByAgeWithoutCountingThem) {
  for (int i = 0; i < 5; ++i) a_.ApplySeq(Audit(1000 * (i + 1), "/m"));
  // At 7000 with 4500 ms retention: entries older than 2500 go (1000, 2000).
  EXPECT_EQ(a_.ApplySeq(Audit(7000, "/m", /*retention_ms=*/4500)), 6u);
  EXPECT_EQ(a_.Seqs(), (std::vector<uint64_t>{3, 4, 5, 6}));
  ListAuditResponse list = a_.List();
  EXPECT_EQ(list.oldest_seq(), 3u);
  EXPECT_EQ(list.dropped_over_limit(), 0u);
  EXPECT_EQ(a_.sm->AuditEntryCount(), 4u);
  // An entry exactly at the cutoff stays (time_ms < now - retention goes).
  EXPECT_EQ(a_.ApplySeq(Audit(8000, "/m", /*retention_ms=*/5000)), 7u);
  EXPECT_EQ(a_.Seqs(), (std::vector<uint64_t>{3, 4, 5, 6, 7}));
  // A long silence: everything but the new entry goes, and seqs go on.
  EXPECT_EQ(a_.ApplySeq(Audit(1'000'000, "/m", /*retention_ms=*/1000)), 8u);
  EXPECT_EQ(a_.Seqs(), std::vector<uint64_t>{8});
  // retention_ms 0: no age limit.
  EXPECT_EQ(a_.ApplySeq(Audit(9'000'000, "/m", 0)), 9u);
  EXPECT_EQ(a_.Seqs(), (std::vector<uint64_t>{8, 9}));
}

TEST_F(AuditLogTest, MaxEntriesDropsTheOldestAndCountsThem) {
  for (int i = 0; i < 6; ++i) {
    a_.ApplySeq(Audit(1000 + i, "/m", 0, /*max_entries=*/4));
  }
  EXPECT_EQ(a_.Seqs(), (std::vector<uint64_t>{3, 4, 5, 6}));
  EXPECT_EQ(a_.List().dropped_over_limit(), 2u);
  EXPECT_EQ(a_.List().oldest_seq(), 3u);
  EXPECT_EQ(a_.sm->AuditEntryCount(), 4u);
  // A lower limit in a later command drops more at once.
  a_.ApplySeq(Audit(2000, "/m", 0, /*max_entries=*/2));
  EXPECT_EQ(a_.Seqs(), (std::vector<uint64_t>{6, 7}));
  EXPECT_EQ(a_.List().dropped_over_limit(), 5u);
  // 0: the default, far above what is kept here.
  a_.ApplySeq(Audit(3000, "/m", 0, 0));
  EXPECT_EQ(a_.Seqs(), (std::vector<uint64_t>{6, 7, 8}));
  // Within one Apply (one WriteBatch) an entry put and then dropped by a
  // later entry of the same batch is gone from RocksDB too.
  std::vector<ApplyResult> results =
      a_.ApplyAll({Audit(4000, "/m", 0, 1), Audit(4001, "/m", 0, 1)});
  ASSERT_EQ(results.size(), 2u);
  EXPECT_EQ(std::any_cast<uint64_t>(*results[1]), 10u);
  EXPECT_EQ(a_.Seqs(), std::vector<uint64_t>{10});
  EXPECT_EQ(a_.List().dropped_over_limit(), 9u);
  a_.Reopen();
  EXPECT_EQ(a_.Seqs(), std::vector<uint64_t>{10});
  EXPECT_EQ(a_.sm->AuditEntryCount(), 1u);
}

// The entries are written in the apply batch, so they survive closing and
// opening the database; the next seq and the drop count too.
TEST_F(AuditLogTest, EntriesSurviveReopeningTheDatabase) {
  for (int i = 0; i < 5; ++i) {
    a_.ApplySeq(Audit(1000 + i, absl::StrCat("/m", i), 0, 3));
  }
  const ListAuditResponse before = a_.List();
  ASSERT_EQ(before.entries_size(), 3);
  const std::string digest = a_.Digest();

  a_.Reopen();
  EXPECT_TRUE(MessageDifferencer::Equals(a_.List(), before))
      << a_.List().DebugString();
  EXPECT_EQ(a_.Digest(), digest);
  EXPECT_EQ(a_.sm->AuditEntryCount(), 3u);
  // Seqs are not reused after a restart, and the in-memory state drops the
  // same entries as it would have without the restart.
  EXPECT_EQ(a_.ApplySeq(Audit(2000, "/after", 0, 3)), 6u);
  EXPECT_EQ(a_.Seqs(), (std::vector<uint64_t>{4, 5, 6}));
  EXPECT_EQ(a_.List().dropped_over_limit(), 3u);
}

TEST_F(AuditLogTest, ASnapshotCarriesTheLogAndTheDigestCoversIt) {
  for (int i = 0; i < 7; ++i) {
    a_.ApplySeq(Audit(1000 * (i + 1), absl::StrCat("/m", i), 0, 5));
  }
  ASSERT_TRUE(a_.Apply(CreateSession(1, 8000)).ok());
  auto snapshot = a_.sm->CreateSnapshot();
  ASSERT_TRUE(snapshot.ok()) << snapshot.status();

  Replica b(dir_.Sub("b"));
  // What b had is replaced.
  for (int i = 0; i < 9; ++i) b.ApplySeq(Audit(500 + i, "/old"));
  ASSERT_TRUE(b.sm->ApplySnapshot(Transfer(a_, b, *snapshot)).ok());

  EXPECT_TRUE(MessageDifferencer::Equals(b.List(), a_.List()))
      << b.List().DebugString();
  EXPECT_EQ(b.List().dropped_over_limit(), 2u);
  EXPECT_EQ(b.sm->AuditEntryCount(), 5u);
  EXPECT_EQ(b.Digest(), a_.Digest());

  // Both go on alike: the same command gets the same seq and drops the
  // same entry on each.
  EXPECT_EQ(a_.ApplySeq(Audit(9000, "/next", 0, 5)), 8u);
  EXPECT_EQ(b.ApplySeq(Audit(9000, "/next", 0, 5)), 8u);
  EXPECT_EQ(b.Seqs(), (std::vector<uint64_t>{4, 5, 6, 7, 8}));
  EXPECT_EQ(b.Digest(), a_.Digest());
  // And it is durable on b.
  b.Reopen();
  EXPECT_TRUE(MessageDifferencer::Equals(b.List(), a_.List()));
  EXPECT_EQ(b.Digest(), a_.Digest());

  // The digest covers the audit log: one more entry on one side shows.
  a_.ApplySeq(Audit(9500, "/one-side"));
  ASSERT_TRUE(b.Apply(CreateSession(2, 9500)).ok());
  EXPECT_NE(b.Digest(), a_.Digest());
}

// A snapshot of a store that never applied an audit entry clears the log of
// the one that installs it, the meta record included (digests agree).
TEST_F(AuditLogTest, ASnapshotWithoutAuditClearsTheLog) {
  ASSERT_TRUE(a_.Apply(CreateSession(1, 1000)).ok());
  ASSERT_TRUE(a_.Apply(CreateSession(2, 1001)).ok());
  auto snapshot = a_.sm->CreateSnapshot();
  ASSERT_TRUE(snapshot.ok()) << snapshot.status();
  Replica b(dir_.Sub("b"));
  b.ApplySeq(Audit(500, "/old"));
  ASSERT_TRUE(b.sm->ApplySnapshot(Transfer(a_, b, *snapshot)).ok());
  EXPECT_EQ(b.List().entries_size(), 0);
  EXPECT_EQ(b.sm->AuditEntryCount(), 0u);
  EXPECT_EQ(b.Digest(), a_.Digest());
  EXPECT_EQ(b.ApplySeq(Audit(2000, "/first")), 1u);
}

// An image whose audit entries are out of order, or whose next seq is
// behind them, is refused before anything changes.
TEST_F(AuditLogTest, AnImageWithMalformedAuditIsRefusedAndChangesNothing) {
  a_.ApplySeq(Audit(1000, "/kept"));
  const ListAuditResponse before = a_.List();
  const std::string digest = a_.Digest();
  auto make = [&](const v1::internal::SnapshotHeader& header) {
    auto file = a_.files->NewFile(LogIndex(7), Term(1), "made");
    EXPECT_TRUE(file.ok());
    SnapshotImageWriter writer(*std::move(file), header);
    auto ref = writer.Finish();
    EXPECT_TRUE(ref.ok());
    replication::Snapshot made;
    made.meta.index = LogIndex(7);
    made.meta.term = Term(1);
    made.data = EncodeSnapshotRef(*ref);
    return made;
  };
  v1::internal::SnapshotHeader header;
  header.set_index(7);
  header.set_term(1);
  header.add_audit_entries()->set_seq(5);
  header.add_audit_entries()->set_seq(5);
  EXPECT_EQ(a_.sm->ApplySnapshot(make(header)).code(),
            absl::StatusCode::kDataLoss);
  header.mutable_audit_entries(1)->set_seq(6);
  header.set_audit_next_seq(6);
  EXPECT_EQ(a_.sm->ApplySnapshot(make(header)).code(),
            absl::StatusCode::kDataLoss);
  header.mutable_audit_entries(0)->set_seq(0);
  header.set_audit_next_seq(7);
  EXPECT_EQ(a_.sm->ApplySnapshot(make(header)).code(),
            absl::StatusCode::kDataLoss);
  EXPECT_TRUE(MessageDifferencer::Equals(a_.List(), before));
  EXPECT_EQ(a_.Digest(), digest);
  EXPECT_EQ(a_.sm->AuditEntryCount(), 1u);
  // The same image, well formed, installs.
  header.mutable_audit_entries(0)->set_seq(5);
  ASSERT_TRUE(a_.sm->ApplySnapshot(make(header)).ok());
  EXPECT_EQ(a_.Seqs(), (std::vector<uint64_t>{5, 6}));
  EXPECT_EQ(a_.ApplySeq(Audit(2000, "/next")), 7u);
}

TEST_F(AuditLogTest, PagesWithAfterSeqAndLimit) {
  std::vector<Command> commands;
  for (int i = 0; i < 25; ++i) commands.push_back(Audit(1000 + i, "/m"));
  ASSERT_EQ(a_.ApplyAll(commands).size(), 25u);

  std::vector<uint64_t> seen;
  uint64_t after = 0;
  int pages = 0;
  for (; pages < 10; ++pages) {
    const ListAuditResponse page = a_.List(after, 10);
    for (const AuditEntry& e : page.entries()) seen.push_back(e.seq());
    EXPECT_EQ(page.oldest_seq(), 1u);
    if (page.next_after_seq() == 0) break;
    EXPECT_EQ(page.next_after_seq(), page.entries().rbegin()->seq());
    after = page.next_after_seq();
  }
  EXPECT_EQ(pages, 2);  // 1-10, 11-20, 21-25
  ASSERT_EQ(seen.size(), 25u);
  for (size_t i = 0; i < seen.size(); ++i) EXPECT_EQ(seen[i], i + 1);

  // A full last page has no next page.
  EXPECT_EQ(a_.List(15, 10).next_after_seq(), 0u);
  EXPECT_EQ(a_.List(15, 10).entries_size(), 10);
  EXPECT_EQ(a_.List(14, 10).next_after_seq(), 24u);
  // Past the end, and the largest after_seq.
  EXPECT_EQ(a_.List(25).entries_size(), 0);
  EXPECT_EQ(a_.List(1000).entries_size(), 0);
  EXPECT_EQ(a_.List(std::numeric_limits<uint64_t>::max()).entries_size(), 0);
  EXPECT_EQ(a_.List(1000).oldest_seq(), 1u);
  // After drops, an after_seq below the oldest lists from the oldest.
  a_.ApplySeq(Audit(2000, "/m", 0, 20));
  EXPECT_EQ(a_.List(0, 3).entries(0).seq(), 7u);
  EXPECT_EQ(a_.List(3, 3).entries(0).seq(), 7u);
  EXPECT_EQ(a_.List(0, 3).oldest_seq(), 7u);
}

TEST_F(AuditLogTest, TheDefaultLimitAndTheCap) {
  for (int batch = 0; batch < 11; ++batch) {
    std::vector<Command> commands;
    for (int i = 0; i < 1000; ++i) commands.push_back(Audit(1000 + i, "/m"));
    ASSERT_EQ(a_.ApplyAll(commands).size(), 1000u);
  }
  EXPECT_EQ(a_.sm->AuditEntryCount(), 11'000u);
  ListAuditResponse page = a_.List(0, 0);
  EXPECT_EQ(page.entries_size(), static_cast<int>(kDefaultAuditListLimit));
  EXPECT_EQ(page.next_after_seq(), kDefaultAuditListLimit);
  page = a_.List(0, 50'000);
  EXPECT_EQ(page.entries_size(), static_cast<int>(kMaxAuditListLimit));
  EXPECT_EQ(page.next_after_seq(), kMaxAuditListLimit);
  page = a_.List(page.next_after_seq(), 50'000);
  EXPECT_EQ(page.entries_size(), 1000);
  EXPECT_EQ(page.next_after_seq(), 0u);
  // A long silence with a retention drops thousands in one entry (one
  // range deletion), on disk too.
  a_.ApplySeq(Audit(10'000'000, "/m", /*retention_ms=*/1000));
  EXPECT_EQ(a_.Seqs(), std::vector<uint64_t>{11'001});
  a_.Reopen();
  EXPECT_EQ(a_.Seqs(), std::vector<uint64_t>{11'001});
  EXPECT_EQ(a_.sm->AuditEntryCount(), 1u);
}

// A page ends before it passes kMaxAuditListBytes, whatever the limit: a
// thousand entries near the 16 KiB cap made a 16 MiB answer that no
// client with gRPC's default 4 MiB receive limit could take, so
// `sessionctl audit export` could never get past that stretch of the log.
TEST_F(AuditLogTest, APageEndsBeforeItOutgrowsAClientsReceiveLimit) {
  const std::string large_request(15 * 1024, 'x');
  std::vector<Command> commands;
  for (int i = 0; i < 400; ++i) {
    Command c = Audit(1000 + i, "/m");
    c.mutable_audit()->mutable_entry()->set_request_json(large_request);
    commands.push_back(std::move(c));
  }
  ASSERT_EQ(a_.ApplyAll(commands).size(), 400u);
  uint64_t after = 0;
  uint64_t expected = 1;
  int pages = 0;
  for (; pages < 100; ++pages) {
    const ListAuditResponse page = a_.List(after, kMaxAuditListLimit);
    EXPECT_LE(page.ByteSizeLong(), kMaxAuditListBytes + 4096);
    ASSERT_GT(page.entries_size(), 0);
    for (const AuditEntry& e : page.entries()) EXPECT_EQ(e.seq(), expected++);
    if (page.next_after_seq() == 0) break;
    EXPECT_EQ(page.next_after_seq(), page.entries().rbegin()->seq());
    after = page.next_after_seq();
  }
  EXPECT_EQ(expected, 401u);
  EXPECT_GT(pages, 1);
}

TEST(TruncateAuditEntryTest, CutsTheRequestAtACharacterBoundary) {
  AuditEntry entry;
  entry.set_method("/sessiond.v1.AdminService/BulkRevoke");
  // 3-byte characters, so that most cut points fall inside one.
  std::string json = "{\"users\":\"";
  while (json.size() < 40'000) json += "\xE2\x82\xAC";  // U+20AC
  entry.set_request_json(json);
  entry.set_message("fine");
  for (size_t max :
       {size_t{16 * 1024}, size_t{1000}, size_t{1001}, size_t{1002}}) {
    AuditEntry cut = entry;
    EXPECT_TRUE(TruncateAuditEntry(&cut, max));
    EXPECT_LE(cut.ByteSizeLong(), max);
    EXPECT_GT(cut.ByteSizeLong(), max - 40);  // cut no more than needed
    const std::string& got = cut.request_json();
    const std::string marker = kAuditTruncatedMarker;
    ASSERT_GE(got.size(), marker.size());
    EXPECT_EQ(got.substr(got.size() - marker.size()), marker);
    EXPECT_EQ(json.compare(0, got.size() - marker.size(), got, 0,
                           got.size() - marker.size()),
              0);
    EXPECT_EQ(cut.message(), "fine");
    // Still valid UTF-8: proto3 parses it back.
    AuditEntry parsed;
    EXPECT_TRUE(parsed.ParseFromString(cut.SerializeAsString()));
    EXPECT_EQ(parsed.request_json(), got);
  }
  // Small entries are left alone.
  AuditEntry small;
  small.set_request_json("{}");
  EXPECT_FALSE(TruncateAuditEntry(&small));
  EXPECT_EQ(small.request_json(), "{}");
  // A huge message is cut once the request is gone.
  AuditEntry both;
  both.set_request_json(std::string(100, 'r'));
  both.set_message(std::string(30'000, 'm'));
  EXPECT_TRUE(TruncateAuditEntry(&both));
  EXPECT_LE(both.ByteSizeLong(), kMaxAuditEntryBytes);
  EXPECT_TRUE(both.request_json().empty());
  EXPECT_EQ(both.message().substr(both.message().size() - 14),
            kAuditTruncatedMarker);
}

TEST_F(AuditLogTest, AnOversizedRequestIsTruncatedAtApplication) {
  Command big = Audit(1000, "/sessiond.v1.AdminService/BulkRevoke");
  big.mutable_audit()->mutable_entry()->set_request_json(
      absl::StrCat("{\"users\":[\"", std::string(100'000, 'u'), "\"]}"));
  EXPECT_EQ(a_.ApplySeq(big), 1u);
  const ListAuditResponse list = a_.List();
  ASSERT_EQ(list.entries_size(), 1);
  const AuditEntry& e = list.entries(0);
  EXPECT_LE(e.ByteSizeLong(), kMaxAuditEntryBytes);
  EXPECT_GT(e.request_json().size(), 15'000u);
  EXPECT_EQ(e.request_json().substr(0, 11), "{\"users\":[\"");
  EXPECT_EQ(e.request_json().substr(e.request_json().size() - 14),
            kAuditTruncatedMarker);
  EXPECT_EQ(e.method(), "/sessiond.v1.AdminService/BulkRevoke");
  EXPECT_EQ(e.seq(), 1u);
}

TEST(AuditMetaTest, RoundTripsAndRefusesMalformed) {
  AuditMeta meta;
  meta.next_seq = 12345;
  meta.dropped_over_limit = 99;
  auto decoded = DecodeAuditMeta(EncodeAuditMeta(meta));
  ASSERT_TRUE(decoded.ok());
  EXPECT_EQ(decoded->next_seq, 12345u);
  EXPECT_EQ(decoded->dropped_over_limit, 99u);
  EXPECT_EQ(DecodeAuditMeta("short").status().code(),
            absl::StatusCode::kDataLoss);
  meta.next_seq = 0;
  EXPECT_EQ(DecodeAuditMeta(EncodeAuditMeta(meta)).status().code(),
            absl::StatusCode::kDataLoss);
  // Keys sort by seq, and the meta key sorts after all of them.
  EXPECT_LT(AuditKey(255), AuditKey(256));
  EXPECT_LT(AuditKey(std::numeric_limits<uint64_t>::max()),
            std::string(kAuditKeyEnd));
  EXPECT_GT(std::string(kAuditMetaKey), std::string(kAuditKeyEnd));
}

}  // namespace
}  // namespace sessiond::storage
