// Copyright sessiond authors. Licensed under the Apache License 2.0.
//
// The state machine's retryable creates (request keys), token rotation and
// per-user cap (storage/session_state_machine_requests.cc), on real RocksDB
// in a temp dir: hits, misses, windows, purges, bounds, snapshots, digests,
// and that every refusal changes nothing.
#include "storage/create_requests.h"

#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "sessiond/v1/command.pb.h"
#include "storage/database.h"
#include "storage/session_state_machine.h"
#include "storage/session_table.h"
#include "storage/snapshot_files.h"
#include "storage/token.h"
#include "tests/storage/temp_dir.h"

namespace sessiond::storage {
namespace {

using replication::ApplyResult;
using replication::Entry;
using sessiond::testing::TempDir;
using sessiond::v1::Session;
using sessiond::v1::internal::Command;

const std::string kKey(32, 'k');

std::string Hash(const std::string& token) {
  return std::string(TokenHashBytes(HashToken(token)));
}

// One replica: a RocksDB, a table and a state machine that can be reopened.
struct Replica {
  explicit Replica(const std::string& dir)
      : data(dir + "/data"), snap_dir(dir + "/snap") {
    std::filesystem::create_directories(data);
    auto db_or = Database::Open(data, DatabaseOptions());
    EXPECT_TRUE(db_or.ok()) << db_or.status();
    db = *std::move(db_or);
    files = std::make_unique<SnapshotFiles>(snap_dir);
    EXPECT_TRUE(files->Init().ok());
    Open();
  }
  void Open() {
    sm.reset();
    table = std::make_unique<SessionTable>(SessionTableOptions{8});
    SessionStateMachineOptions options;
    options.snapshots = files.get();
    auto machine = SessionStateMachine::Open(db.get(), table.get(), options);
    EXPECT_TRUE(machine.ok()) << machine.status();
    sm = *std::move(machine);
  }
  ApplyResult Apply(const Command& command) {
    Entry e;
    e.index = sm->applied_index() + 1;
    e.term = Term(1);
    e.data = command.SerializeAsString();
    auto results = sm->Apply({e});
    EXPECT_TRUE(results.ok()) << results.status();
    if (!results.ok()) return results.status();
    return (*results)[0];
  }
  // Receives `snapshot`'s image from `source` (as the transport would) and
  // installs it.
  absl::Status InstallFrom(const Replica& source,
                           const replication::Snapshot& snapshot) {
    absl::StatusOr<sessiond::v1::internal::SnapshotRef> ref =
        DecodeSnapshotRef(snapshot.data);
    if (!ref.ok()) return ref.status();
    std::ifstream in(source.files->PathOf(ref->file()), std::ios::binary);
    const std::string bytes((std::istreambuf_iterator<char>(in)),
                            std::istreambuf_iterator<char>());
    auto file = files->NewFile(snapshot.meta.index, snapshot.meta.term, "t");
    if (!file.ok()) return file.status();
    SnapshotReceiver receiver(*std::move(file), ref->size());
    if (absl::Status s = receiver.Append(bytes); !s.ok()) return s;
    auto received_ref = receiver.Finish();
    if (!received_ref.ok()) return received_ref.status();
    replication::Snapshot received = snapshot;
    received.data = EncodeSnapshotRef(*received_ref);
    return sm->ApplySnapshot(received);
  }
  // Every record of the sessions CF and every create-request record.
  std::map<std::string, std::string> Dump() {
    std::map<std::string, std::string> out;
    for (rocksdb::ColumnFamilyHandle* cf :
         {db->sessions_cf(), db->default_cf()}) {
      std::unique_ptr<rocksdb::Iterator> it(
          db->db()->NewIterator(rocksdb::ReadOptions(), cf));
      for (it->SeekToFirst(); it->Valid(); it->Next()) {
        const std::string key = it->key().ToString();
        if (cf == db->default_cf() && key.rfind("create_", 0) != 0) continue;
        out[key] = it->value().ToString();
      }
    }
    return out;
  }

  std::string data, snap_dir;
  std::unique_ptr<Database> db;
  std::unique_ptr<SnapshotFiles> files;
  std::unique_ptr<SessionTable> table;
  std::unique_ptr<SessionStateMachine> sm;
};

// A create as the session service builds it for (user, request_id) with a
// drawn session id.
Command RequestCreate(const std::string& user, const std::string& request_id,
                      const std::string& session_id, int64_t ts,
                      int64_t window_ms = 60'000, uint32_t max_entries = 0) {
  Command c;
  c.set_timestamp_ms(ts);
  auto* create = c.mutable_create();
  create->set_token_hash(
      Hash(CreateRequestToken(kKey, user, request_id, session_id)));
  create->set_session_id(session_id);
  create->set_user_id(user);
  create->set_ttl_ms(3'600'000);
  create->set_request_key(CreateRequestKey(kKey, user, request_id));
  create->set_request_window_ms(window_ms);
  create->set_request_max_entries(max_entries);
  return c;
}

Command PlainCreate(const std::string& token, const std::string& session_id,
                    const std::string& user, int64_t ts, uint32_t cap = 0,
                    int64_t ttl_ms = 3'600'000) {
  Command c;
  c.set_timestamp_ms(ts);
  auto* create = c.mutable_create();
  create->set_token_hash(Hash(token));
  create->set_session_id(session_id);
  create->set_user_id(user);
  create->set_ttl_ms(ttl_ms);
  create->set_max_user_sessions(cap);
  (*create->mutable_attributes())["role"] = "user";
  return c;
}

Command Rotate(const std::string& from, const std::string& to, int64_t ts) {
  Command c;
  c.set_timestamp_ms(ts);
  c.mutable_rotate()->set_token_hash(Hash(from));
  c.mutable_rotate()->set_new_token_hash(Hash(to));
  return c;
}

Command RevokeToken(const std::string& token, int64_t ts) {
  Command c;
  c.set_timestamp_ms(ts);
  c.mutable_revoke()->mutable_session()->set_token_hash(Hash(token));
  c.mutable_revoke()->set_reason("logout");
  return c;
}

Command Purge(int64_t ts, uint32_t max = 0) {
  Command c;
  c.set_timestamp_ms(ts);
  c.mutable_purge_create_requests()->set_max(max);
  return c;
}

Command InstallKey(const std::string& key, int64_t ts) {
  Command c;
  c.set_timestamp_ms(ts);
  c.mutable_create_key()->set_key(key);
  return c;
}

Session SessionOf(const ApplyResult& r) {
  EXPECT_TRUE(r.ok()) << r.status();
  if (!r.ok()) return Session();
  return std::any_cast<Session>(*r);
}

class CreateRequestsTest : public ::testing::Test {
 protected:
  TempDir dir_;
  Replica a_{dir_.Sub("a")};
};

TEST(CreateRequestDerivation, DeterministicAndSeparated) {
  const std::string t1 = CreateRequestToken(kKey, "alice", "rid-1", "sid-1");
  EXPECT_EQ(t1, CreateRequestToken(kKey, "alice", "rid-1", "sid-1"));
  EXPECT_EQ(t1.size(), kTokenLength);
  EXPECT_TRUE(LooksLikeToken(t1));
  // Every input matters, and parts cannot slide into each other.
  const std::set<std::string> tokens = {
      t1,
      CreateRequestToken(kKey, "alice", "rid-1", "sid-2"),
      CreateRequestToken(kKey, "alice", "rid-2", "sid-1"),
      CreateRequestToken(kKey, "bob", "rid-1", "sid-1"),
      CreateRequestToken(kKey, "alicer", "id-1", "sid-1"),
      CreateRequestToken(std::string(32, 'j'), "alice", "rid-1", "sid-1")};
  EXPECT_EQ(tokens.size(), 6u);
  const std::string k1 = CreateRequestKey(kKey, "alice", "rid-1");
  EXPECT_EQ(k1.size(), kRequestKeyBytes);
  EXPECT_EQ(k1, CreateRequestKey(kKey, "alice", "rid-1"));
  EXPECT_NE(k1, CreateRequestKey(kKey, "bob", "rid-1"));
  EXPECT_NE(k1, CreateRequestKey(kKey, "alice", "rid-2"));
  EXPECT_EQ(NewCreateKey().size(), kCreateKeyBytes);
  EXPECT_NE(NewCreateKey(), NewCreateKey());
}

TEST_F(CreateRequestsTest, ARetryWithinTheWindowGetsTheFirstSession) {
  const Session first =
      SessionOf(a_.Apply(RequestCreate("alice", "rid-1", "sid-first", 1000)));
  EXPECT_EQ(first.session_id(), "sid-first");
  EXPECT_EQ(a_.sm->create_requests().size(), 1u);
  const auto before = a_.Dump();
  // The retry drew another session id (so another token hash): it gets the
  // first session, and nothing is written but the applied index.
  const Session again =
      SessionOf(a_.Apply(RequestCreate("alice", "rid-1", "sid-retry", 2000)));
  EXPECT_EQ(again.session_id(), "sid-first");
  EXPECT_EQ(again.created_at_ms(), 1000);
  EXPECT_EQ(a_.table->size(), 1u);
  EXPECT_EQ(a_.Dump(), before);
  // Another request id, or the same one for another user, is a new create.
  EXPECT_EQ(SessionOf(a_.Apply(RequestCreate("alice", "rid-2", "sid-2", 2100)))
                .session_id(),
            "sid-2");
  EXPECT_EQ(SessionOf(a_.Apply(RequestCreate("bob", "rid-1", "sid-3", 2200)))
                .session_id(),
            "sid-3");
  EXPECT_EQ(a_.table->size(), 3u);
  // Remembered across a restart (the default CF holds the keys).
  a_.Open();
  EXPECT_EQ(a_.sm->create_requests().size(), 3u);
  EXPECT_EQ(SessionOf(a_.Apply(RequestCreate("alice", "rid-1", "sid-4", 3000)))
                .session_id(),
            "sid-first");
}

// What a retry must repeat: the fields a client sends beyond its user and
// request_id, attributes in any order.
TEST(CreateRequestDigestTest, SameRequestSameDigestAnyOtherFieldAnother) {
  v1::CreateSessionRequest request;
  request.set_user_id("alice");
  request.set_request_id("rid-1");
  request.set_ttl_ms(3'600'000);
  (*request.mutable_attributes())["role"] = "user";
  (*request.mutable_attributes())["tier"] = "gold";
  request.mutable_client()->set_device("laptop");
  const std::string digest = CreateRequestDigest(request);
  EXPECT_EQ(digest.size(), 32u);
  v1::CreateSessionRequest reordered;
  reordered.CopyFrom(request);
  reordered.mutable_attributes()->clear();
  (*reordered.mutable_attributes())["tier"] = "gold";
  (*reordered.mutable_attributes())["role"] = "user";
  EXPECT_EQ(CreateRequestDigest(reordered), digest);
  std::vector<v1::CreateSessionRequest> others(5, request);
  others[0].set_ttl_ms(60'000);
  others[1].set_idle_timeout_ms(30'000);
  (*others[2].mutable_attributes())["tier"] = "silver";
  others[3].mutable_client()->set_device("phone");
  others[4].set_token_format(v1::TOKEN_FORMAT_JWT);
  for (const v1::CreateSessionRequest& other : others) {
    EXPECT_NE(CreateRequestDigest(other), digest) << other.DebugString();
  }
}

// The same request_id with other fields (another ttl, other attributes or
// client metadata) is not a retry: it got the first session, whatever it
// asked. Refused now, changing nothing; the real retry still gets it, and
// a record written before digests existed compares none.
TEST_F(CreateRequestsTest, TheSameIdWithOtherFieldsIsRefusedAndChangesNothing) {
  Command first = RequestCreate("alice", "rid-1", "sid-1", 1000);
  first.mutable_create()->set_request_digest(std::string(32, 'a'));
  SessionOf(a_.Apply(first));
  const auto before = a_.Dump();
  Command other = RequestCreate("alice", "rid-1", "sid-2", 1100);
  other.mutable_create()->set_request_digest(std::string(32, 'b'));
  const ApplyResult r = a_.Apply(other);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(absl::StrContains(r.status().message(), "other fields"))
      << r.status();
  EXPECT_EQ(a_.Dump(), before);
  Command retry = RequestCreate("alice", "rid-1", "sid-3", 1200);
  retry.mutable_create()->set_request_digest(std::string(32, 'a'));
  EXPECT_EQ(SessionOf(a_.Apply(retry)).session_id(), "sid-1");
  // No digest on either side (written before them): not compared.
  EXPECT_EQ(SessionOf(a_.Apply(RequestCreate("alice", "rid-1", "sid-4", 1300)))
                .session_id(),
            "sid-1");
  SessionOf(a_.Apply(RequestCreate("bob", "rid-1", "sid-5", 1400)));
  Command bobs = RequestCreate("bob", "rid-1", "sid-6", 1500);
  bobs.mutable_create()->set_request_digest(std::string(32, 'c'));
  EXPECT_EQ(SessionOf(a_.Apply(bobs)).session_id(), "sid-5");
}

// Review finding: the table a restart or a snapshot loads kept each
// request's session but not its digest, so after either the same
// request_id with other fields was replayed (the caller got the first
// session, whatever it asked) instead of refused, and replicas that had
// restarted answered unlike those that had not.
TEST_F(CreateRequestsTest, TheDigestOutlivesARestartAndASnapshot) {
  Command first = RequestCreate("alice", "rid-1", "sid-1", 1000);
  first.mutable_create()->set_request_digest(std::string(32, 'a'));
  SessionOf(a_.Apply(first));
  auto snapshot = a_.sm->CreateSnapshot();
  ASSERT_TRUE(snapshot.ok()) << snapshot.status();
  a_.Open();
  Command other = RequestCreate("alice", "rid-1", "sid-2", 1100);
  other.mutable_create()->set_request_digest(std::string(32, 'b'));
  EXPECT_EQ(a_.Apply(other).status().code(),
            absl::StatusCode::kFailedPrecondition)
      << "replayed after a restart";

  Replica b(dir_.Sub("b"));
  ASSERT_TRUE(b.InstallFrom(a_, *snapshot).ok());
  EXPECT_EQ(b.Apply(other).status().code(),
            absl::StatusCode::kFailedPrecondition)
      << "replayed after a snapshot";
}

TEST_F(CreateRequestsTest, AfterTheWindowTheSameIdMakesANewSession) {
  SessionOf(a_.Apply(RequestCreate("alice", "rid-1", "sid-1", 1000, 5000)));
  // Window [1000, 6000): at 5999 a hit, at 6000 a new session.
  EXPECT_EQ(SessionOf(a_.Apply(RequestCreate("alice", "rid-1", "x", 5999)))
                .session_id(),
            "sid-1");
  EXPECT_EQ(SessionOf(a_.Apply(RequestCreate("alice", "rid-1", "sid-2", 6000)))
                .session_id(),
            "sid-2");
  EXPECT_EQ(a_.table->size(), 2u);
  // The key now names the second session, for a new window.
  const auto record = a_.sm->create_requests().Find(
      CreateRequestKey(kKey, "alice", "rid-1"), 6001);
  ASSERT_TRUE(record.has_value());
  EXPECT_EQ(record->session_id(), "sid-2");
  EXPECT_EQ(record->expires_at_ms(), 6000 + 60'000);
}

// A member ran through the others' outage from applied time 1000; a create
// applied in the lag, stamped on the lagging clock, and its answer was
// lost. The catch-up moves its window with its session (move_windows,
// command level 3), so the client's retry just after the jump gets that
// session back. Without it (a level-2 catch-up) the window had closed at
// the jump and the retry made a second session, the first one left
// unowned.
TEST_F(CreateRequestsTest, ACatchUpMovesTheWindowOfACreateMadeInTheLag) {
  constexpr int64_t kJump = 3'600'000;
  for (const bool move_windows : {true, false}) {
    SCOPED_TRACE(move_windows ? "move_windows" : "level 2");
    Replica r(dir_.Sub(move_windows ? "moves" : "level2"));
    SessionOf(r.Apply(RequestCreate("alice", "rid-1", "sid-1", 2000)));
    Command catch_up;
    catch_up.set_timestamp_ms(2200);
    catch_up.mutable_clock_catch_up()->set_since_ms(1000);
    catch_up.mutable_clock_catch_up()->set_to_ms(2200 + kJump);
    catch_up.mutable_clock_catch_up()->set_move_windows(move_windows);
    ASSERT_TRUE(r.Apply(catch_up).ok());
    const std::string retried_as =
        SessionOf(
            r.Apply(RequestCreate("alice", "rid-1", "sid-2", 2300 + kJump)))
            .session_id();
    if (move_windows) {
      EXPECT_EQ(retried_as, "sid-1");
      EXPECT_EQ(r.table->size(), 1u);
      // Stored as moved.
      r.Open();
      const auto record = r.sm->create_requests().Find(
          CreateRequestKey(kKey, "alice", "rid-1"), 2400 + kJump);
      ASSERT_TRUE(record.has_value());
      EXPECT_EQ(record->expires_at_ms(), 2000 + 60'000 + kJump);
    } else {
      EXPECT_EQ(retried_as, "sid-2");
      EXPECT_EQ(r.table->size(), 2u);
    }
  }
}

TEST_F(CreateRequestsTest, ARetryOfAnEndedSessionIsRefusedAndChangesNothing) {
  const std::string token = CreateRequestToken(kKey, "alice", "rid-1", "sid-1");
  SessionOf(a_.Apply(RequestCreate("alice", "rid-1", "sid-1", 1000)));
  SessionOf(a_.Apply(RevokeToken(token, 1100)));
  auto before = a_.Dump();
  ApplyResult r = a_.Apply(RequestCreate("alice", "rid-1", "sid-2", 1200));
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(r.status().message(),
            "request_id: the session this request_id created (session_id "
            "sid-1) has since been revoked, has expired or had its token "
            "rotated, so its token is no longer valid; create it with a new "
            "request_id");
  EXPECT_EQ(a_.Dump(), before);

  // Rotated: the derived token is no longer the session's, so a retry may
  // not hand it out.
  const std::string t3 = CreateRequestToken(kKey, "bob", "rid-3", "sid-3");
  SessionOf(a_.Apply(RequestCreate("bob", "rid-3", "sid-3", 1300)));
  SessionOf(a_.Apply(Rotate(t3, "rotated-token", 1400)));
  before = a_.Dump();
  r = a_.Apply(RequestCreate("bob", "rid-3", "sid-4", 1500));
  EXPECT_EQ(r.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(a_.Dump(), before);

  // Expired (ttl 1 s in this create).
  Command short_lived = RequestCreate("carol", "rid-5", "sid-5", 2000);
  short_lived.mutable_create()->set_ttl_ms(1000);
  SessionOf(a_.Apply(short_lived));
  r = a_.Apply(RequestCreate("carol", "rid-5", "sid-6", 3000));
  EXPECT_EQ(r.status().code(), absl::StatusCode::kFailedPrecondition);
}

TEST_F(CreateRequestsTest, APurgeRemovesWhatsPastItsWindowThroughTheLog) {
  SessionOf(a_.Apply(RequestCreate("u", "rid-1", "sid-1", 1000, 1000)));
  SessionOf(a_.Apply(RequestCreate("u", "rid-2", "sid-2", 1500, 1000)));
  SessionOf(a_.Apply(RequestCreate("u", "rid-3", "sid-3", 1600, 10'000)));
  EXPECT_FALSE(a_.sm->CreateRequestsDueForPurge(1999));
  EXPECT_TRUE(a_.sm->CreateRequestsDueForPurge(2000));
  // At 2000 only rid-1 is due; `max` bounds one command.
  EXPECT_EQ(std::any_cast<uint64_t>(*a_.Apply(Purge(2000))), 1u);
  EXPECT_EQ(a_.sm->create_requests().size(), 2u);
  EXPECT_EQ(std::any_cast<uint64_t>(*a_.Apply(Purge(3000, 1))), 1u);
  EXPECT_EQ(std::any_cast<uint64_t>(*a_.Apply(Purge(3000))), 0u);
  EXPECT_EQ(a_.sm->create_requests().size(), 1u);
  // The sessions stay: a purge forgets request ids, nothing else.
  EXPECT_EQ(a_.table->size(), 3u);
  a_.Open();
  const auto all = a_.sm->create_requests().All();
  ASSERT_EQ(all.size(), 1u);
  EXPECT_EQ(all[0].session_id(), "sid-3");
}

TEST_F(CreateRequestsTest, TheTableIsBoundedTheOldestGoesFirst) {
  for (int i = 0; i < 5; ++i) {
    SessionOf(a_.Apply(RequestCreate("u", absl::StrCat("rid-", i),
                                     absl::StrCat("sid-", i), 1000 + i, 60'000,
                                     /*max_entries=*/3)));
  }
  EXPECT_EQ(a_.sm->create_requests().size(), 3u);
  std::set<std::string> kept;
  for (const auto& r : a_.sm->create_requests().All()) {
    kept.insert(r.session_id());
  }
  EXPECT_EQ(kept, (std::set<std::string>{"sid-2", "sid-3", "sid-4"}));
  // What was evicted is gone from RocksDB too.
  a_.Open();
  EXPECT_EQ(a_.sm->create_requests().size(), 3u);
  // An evicted id creates again (the bound's price, documented).
  EXPECT_EQ(SessionOf(a_.Apply(RequestCreate("u", "rid-0", "sid-new", 2000,
                                             60'000, 3)))
                .session_id(),
            "sid-new");
}

// The record just made is never the one evicted, even when its window ends
// first (a node with a shorter --create_request_window_ms proposed it, say
// during a config rollout): the retry it exists for would make a second
// session.
TEST_F(CreateRequestsTest, ANewRecordWithAShorterWindowIsNotTheOneEvicted) {
  for (int i = 0; i < 2; ++i) {
    SessionOf(a_.Apply(RequestCreate("u", absl::StrCat("rid-", i),
                                     absl::StrCat("sid-", i), 1000 + i,
                                     86'400'000, /*max_entries=*/2)));
  }
  SessionOf(a_.Apply(RequestCreate("u", "rid-2", "sid-2", 1002, 600'000, 2)));
  EXPECT_EQ(a_.sm->create_requests().size(), 2u);
  const ApplyResult retried =
      a_.Apply(RequestCreate("u", "rid-2", "sid-other", 2000, 600'000, 2));
  EXPECT_EQ(SessionOf(retried).session_id(), "sid-2");
  // The oldest other went.
  std::set<std::string> kept;
  for (const auto& r : a_.sm->create_requests().All()) {
    kept.insert(r.session_id());
  }
  EXPECT_EQ(kept, (std::set<std::string>{"sid-1", "sid-2"}));
}

TEST_F(CreateRequestsTest, TheFirstCreateKeyStays) {
  EXPECT_EQ(a_.sm->create_key(), "");
  EXPECT_TRUE(a_.Apply(InstallKey(std::string(32, 'a'), 10)).ok());
  EXPECT_TRUE(a_.Apply(InstallKey(std::string(32, 'b'), 20)).ok());
  EXPECT_EQ(a_.sm->create_key(), std::string(32, 'a'));
  ApplyResult bad = a_.Apply(InstallKey("short", 30));
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  a_.Open();
  EXPECT_EQ(a_.sm->create_key(), std::string(32, 'a'));
}

TEST_F(CreateRequestsTest, ASnapshotCarriesTheRequestsAndTheKey) {
  ASSERT_TRUE(a_.Apply(InstallKey(kKey, 10)).ok());
  for (int i = 0; i < 4; ++i) {
    SessionOf(a_.Apply(RequestCreate("u", absl::StrCat("rid-", i),
                                     absl::StrCat("sid-", i), 1000 + i)));
  }
  auto snapshot = a_.sm->CreateSnapshot();
  ASSERT_TRUE(snapshot.ok()) << snapshot.status();

  Replica b(dir_.Sub("b"));
  // Something already there is replaced.
  SessionOf(b.Apply(RequestCreate("v", "rid-x", "sid-x", 500)));
  ASSERT_TRUE(b.Apply(InstallKey(std::string(32, 'z'), 600)).ok());
  ASSERT_TRUE(b.InstallFrom(a_, *snapshot).ok());

  EXPECT_EQ(b.sm->create_key(), kKey);
  EXPECT_EQ(b.sm->create_requests().size(), 4u);
  EXPECT_EQ(b.Dump(), a_.Dump());
  auto da = a_.sm->ComputeDigest();
  auto db = b.sm->ComputeDigest();
  ASSERT_TRUE(da.ok() && db.ok());
  EXPECT_EQ(da->sha256_hex, db->sha256_hex);
  // The retry works on the replica that got the snapshot, and survives its
  // restart.
  b.Open();
  EXPECT_EQ(SessionOf(b.Apply(RequestCreate("u", "rid-2", "other", 2000)))
                .session_id(),
            "sid-2");
  // The digest covers the request table: a purge on one side shows.
  SessionOf(a_.Apply(RequestCreate("u", "rid-9", "sid-9", 2000)));
  auto changed = a_.sm->ComputeDigest();
  ASSERT_TRUE(changed.ok());
  EXPECT_NE(changed->sha256_hex, db->sha256_hex);
}

TEST_F(CreateRequestsTest, RotationMovesTheSessionToTheNewToken) {
  const Session created =
      SessionOf(a_.Apply(PlainCreate("old-token", "sid-1", "alice", 1000)));
  const Session rotated =
      SessionOf(a_.Apply(Rotate("old-token", "new-token", 2000)));
  // The same record, but for last_seen: a rotation is a use of the session.
  Session expected = created;
  expected.set_last_seen_at_ms(2000);
  EXPECT_EQ(rotated.SerializeAsString(), expected.SerializeAsString());
  EXPECT_FALSE(a_.table->Contains(HashToken("old-token")));
  ASSERT_TRUE(a_.table->Contains(HashToken("new-token")));
  EXPECT_EQ(*a_.table->TokenHashOf("sid-1"), HashToken("new-token"));
  EXPECT_EQ(a_.table->Validate(HashToken("old-token"), 2000, 0).outcome,
            ValidateOutcome::kUnknown);
  EXPECT_EQ(a_.table->Validate(HashToken("new-token"), 2000, 0).outcome,
            ValidateOutcome::kValid);
  a_.Open();
  EXPECT_FALSE(a_.table->Contains(HashToken("old-token")));
  EXPECT_EQ(a_.table->Get(HashToken("new-token"))->SerializeAsString(),
            expected.SerializeAsString());
}

TEST_F(CreateRequestsTest, RotationRefusalsChangeNothing) {
  SessionOf(a_.Apply(PlainCreate("t-active", "sid-1", "alice", 1000)));
  SessionOf(a_.Apply(PlainCreate("t-other", "sid-2", "alice", 1000)));
  SessionOf(a_.Apply(PlainCreate("t-revoked", "sid-3", "alice", 1000)));
  SessionOf(a_.Apply(RevokeToken("t-revoked", 1000)));
  SessionOf(a_.Apply(PlainCreate("t-short", "sid-4", "alice", 1000, 0, 1000)));
  const auto before = a_.Dump();
  struct Case {
    Command command;
    absl::StatusCode code;
    std::string message;
  };
  Command bad = Rotate("t-active", "x", 1500);
  bad.mutable_rotate()->set_new_token_hash("short");
  const std::vector<Case> cases = {
      {Rotate("t-missing", "n1", 1500), absl::StatusCode::kNotFound,
       "no such session"},
      {Rotate("t-revoked", "n2", 1500), absl::StatusCode::kFailedPrecondition,
       "session is revoked"},
      {Rotate("t-short", "n3", 2500), absl::StatusCode::kFailedPrecondition,
       "session is expired"},
      {Rotate("t-active", "t-other", 1500), absl::StatusCode::kAlreadyExists,
       "a session with this token already exists"},
      {bad, absl::StatusCode::kInvalidArgument, "token_hash must be 32 bytes"},
  };
  for (const Case& c : cases) {
    ApplyResult r = a_.Apply(c.command);
    ASSERT_FALSE(r.ok()) << c.message;
    EXPECT_EQ(r.status().code(), c.code) << c.message;
    EXPECT_EQ(r.status().message(), c.message);
    EXPECT_EQ(a_.Dump(), before) << c.message;
  }
}

TEST_F(CreateRequestsTest, TheUserCapCountsLiveSessionsAndRefusesWhole) {
  SessionOf(a_.Apply(PlainCreate("t1", "s1", "alice", 1000, 2)));
  SessionOf(a_.Apply(PlainCreate("t2", "s2", "alice", 1000, 2)));
  auto before = a_.Dump();
  ApplyResult r = a_.Apply(PlainCreate("t3", "s3", "alice", 1000, 2));
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(r.status().message(),
            "the user already has the most live sessions allowed (2, "
            "--max_sessions_per_user): revoke one (RevokeSession) or wait "
            "until one expires");
  EXPECT_EQ(a_.Dump(), before);
  // Another user is not affected; no cap in the command, no cap.
  SessionOf(a_.Apply(PlainCreate("t4", "s4", "bob", 1000, 2)));
  SessionOf(a_.Apply(PlainCreate("t5", "s5", "alice", 1000, 0)));
  // A revoked session does not count, nor an expired one.
  SessionOf(a_.Apply(RevokeToken("t1", 1100)));
  SessionOf(a_.Apply(RevokeToken("t5", 1100)));
  SessionOf(a_.Apply(PlainCreate("t6", "s6", "alice", 1200, 2)));
  SessionOf(a_.Apply(PlainCreate("t7", "s7", "carol", 1200, 1, 1000)));
  SessionOf(a_.Apply(PlainCreate("t8", "s8", "carol", 2300, 1)));

  // A batch counts all its creates for the user, and is refused whole.
  Command batch;
  batch.set_timestamp_ms(2400);
  for (int i = 0; i < 2; ++i) {
    *batch.mutable_create_batch()->add_creates() =
        PlainCreate(absl::StrCat("b", i), absl::StrCat("sb", i), "dave", 2400,
                    1)
            .create();
  }
  before = a_.Dump();
  r = a_.Apply(batch);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(r.status().message(),
            "the user already has the most live sessions allowed (1, "
            "--max_sessions_per_user) for 2 more: revoke one (RevokeSession) "
            "or wait until one expires");
  EXPECT_EQ(a_.Dump(), before);
  batch.mutable_create_batch()->mutable_creates(0)->set_user_id("erin");
  EXPECT_TRUE(a_.Apply(batch).ok());
}

}  // namespace
}  // namespace sessiond::storage
