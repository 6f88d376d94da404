// Copyright sessiond authors. Licensed under the Apache License 2.0.
#include "storage/session_table.h"

#include <atomic>
#include <string>
#include <thread>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "google/protobuf/util/message_differencer.h"
#include "gtest/gtest.h"
#include "sessiond/v1/command.pb.h"
#include "storage/token.h"
#include "storage/wire.h"

namespace sessiond::storage {
namespace {

using google::protobuf::util::MessageDifferencer;
using sessiond::v1::Session;

TokenHash H(int i) { return HashToken(absl::StrCat("token-", i)); }

Session MakeSession(int i, std::string user = "alice",
                    int64_t expires_at_ms = 1'000'000,
                    int64_t idle_timeout_ms = 0, int64_t last_seen_ms = 100) {
  Session s;
  s.set_session_id(absl::StrCat("sid-", 1000 + i));
  s.set_user_id(std::move(user));
  s.set_created_at_ms(100);
  s.set_expires_at_ms(expires_at_ms);
  s.set_idle_timeout_ms(idle_timeout_ms);
  s.set_last_seen_at_ms(last_seen_ms);
  s.set_version(1);
  s.set_state(v1::SESSION_STATE_ACTIVE);
  (*s.mutable_attributes())["role"] = "admin";
  (*s.mutable_attributes())["blob"] = std::string("\0\x01\xff", 3);
  return s;
}

class SessionTableTest : public ::testing::TestWithParam<size_t> {
 protected:
  SessionTableTest() : table_(SessionTableOptions{GetParam()}) {}
  SessionTable table_;
};

TEST_P(SessionTableTest, InsertGetValidate) {
  Session s = MakeSession(1);
  s.mutable_client()->set_device("phone");
  s.mutable_client()->set_ip("10.0.0.1");
  ASSERT_TRUE(table_.Insert(H(1), s).ok());
  EXPECT_EQ(table_.size(), 1u);
  EXPECT_EQ(table_.num_shards(), GetParam());

  std::optional<Session> got = table_.Get(H(1));
  ASSERT_TRUE(got.has_value());
  EXPECT_TRUE(MessageDifferencer::Equals(*got, s)) << got->DebugString();

  ValidateResult v = table_.Validate(H(1), 500, 0);
  EXPECT_EQ(v.outcome, ValidateOutcome::kValid);
  EXPECT_TRUE(MessageDifferencer::Equals(v.session, s));

  EXPECT_EQ(table_.Validate(H(2), 500, 0).outcome, ValidateOutcome::kUnknown);
  EXPECT_FALSE(table_.Get(H(2)).has_value());

  std::optional<Session> by_id = table_.GetBySessionId(s.session_id());
  ASSERT_TRUE(by_id.has_value());
  EXPECT_TRUE(MessageDifferencer::Equals(*by_id, s));
  EXPECT_EQ(table_.TokenHashOf(s.session_id()), H(1));
  EXPECT_FALSE(table_.GetBySessionId("nope").has_value());
}

TEST_P(SessionTableTest, DuplicatesAreRejectedAndChangeNothing) {
  ASSERT_TRUE(table_.Insert(H(1), MakeSession(1)).ok());
  // Same token hash, different session_id.
  EXPECT_EQ(table_.Insert(H(1), MakeSession(2)).code(),
            absl::StatusCode::kAlreadyExists);
  // Same session_id, different token hash.
  EXPECT_EQ(table_.Insert(H(2), MakeSession(1)).code(),
            absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(table_.size(), 1u);
  EXPECT_FALSE(table_.Contains(H(2)));
  EXPECT_FALSE(table_.TokenHashOf(MakeSession(2).session_id()).has_value());
  EXPECT_EQ(table_.TokenHashOf(MakeSession(1).session_id()), H(1));
  EXPECT_EQ(table_.UserTokenHashes("alice").size(), 1u);
}

TEST_P(SessionTableTest, EmptyIdsAreInvalid) {
  Session s = MakeSession(1);
  s.clear_user_id();
  EXPECT_EQ(table_.Insert(H(1), s).code(), absl::StatusCode::kInvalidArgument);
  s = MakeSession(1);
  s.clear_session_id();
  EXPECT_EQ(table_.Insert(H(1), s).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(table_.size(), 0u);
}

TEST_P(SessionTableTest, UserIndexFollowsInsertsAndErases) {
  for (int i = 0; i < 10; ++i) {
    ASSERT_TRUE(
        table_.Insert(H(i), MakeSession(i, i % 2 ? "bob" : "alice")).ok());
  }
  auto hashes = [&](const std::string& user) {
    std::vector<TokenHash> v = table_.UserTokenHashes(user);
    return absl::flat_hash_set<TokenHash, TokenHashHasher>(v.begin(), v.end());
  };
  EXPECT_EQ(hashes("alice").size(), 5u);
  EXPECT_EQ(hashes("bob").size(), 5u);
  EXPECT_TRUE(hashes("carol").empty());
  // Erase in an order that hits the head, the middle and the tail.
  for (int i : {0, 4, 8, 2, 6}) {
    EXPECT_TRUE(table_.Erase(H(i)));
    EXPECT_FALSE(hashes("alice").contains(H(i)));
  }
  EXPECT_TRUE(hashes("alice").empty());
  EXPECT_EQ(hashes("bob").size(), 5u);
  EXPECT_FALSE(table_.Erase(H(0)));
  EXPECT_EQ(table_.size(), 5u);
  EXPECT_FALSE(table_.GetBySessionId(MakeSession(0).session_id()).has_value());
  // The user can get sessions again after losing all of them.
  ASSERT_TRUE(table_.Insert(H(100), MakeSession(100, "alice")).ok());
  EXPECT_EQ(hashes("alice").size(), 1u);
}

TEST_P(SessionTableTest, ListUserPagesInSessionIdOrder) {
  // Insert in a scrambled order.
  for (int k = 0; k < 25; ++k) {
    const int i = (k * 7) % 25;
    ASSERT_TRUE(table_.Insert(H(i), MakeSession(i, "alice")).ok());
  }
  ASSERT_TRUE(table_.Insert(H(99), MakeSession(99, "bob")).ok());
  std::vector<std::string> seen;
  std::string after;
  int pages = 0;
  do {
    ListUserPage page = table_.ListUser("alice", 10, after, false, 500, 0);
    ++pages;
    ASSERT_LE(page.sessions.size(), 10u);
    for (const Session& s : page.sessions) {
      EXPECT_EQ(s.user_id(), "alice");
      seen.push_back(s.session_id());
    }
    after = page.next_after_session_id;
    if (!after.empty()) {
      EXPECT_EQ(after, seen.back());
    }
  } while (!after.empty() && pages < 10);
  EXPECT_EQ(pages, 3);
  ASSERT_EQ(seen.size(), 25u);
  EXPECT_TRUE(std::is_sorted(seen.begin(), seen.end()));
  EXPECT_EQ(absl::flat_hash_set<std::string>(seen.begin(), seen.end()).size(),
            25u);
  // An exact multiple of the page size has no empty trailing page.
  ListUserPage last = table_.ListUser("alice", 5, seen[19], false, 500, 0);
  EXPECT_EQ(last.sessions.size(), 5u);
  EXPECT_TRUE(last.next_after_session_id.empty());
  EXPECT_TRUE(table_.ListUser("nobody", 10, "", true, 500, 0).sessions.empty());
}

TEST_P(SessionTableTest, ListUserFiltersRevokedAndExpired) {
  ASSERT_TRUE(table_.Insert(H(1), MakeSession(1)).ok());
  Session revoked = MakeSession(2);
  revoked.set_state(v1::SESSION_STATE_REVOKED);
  revoked.set_revoke_reason("stolen");
  revoked.set_revoked_at_ms(150);
  ASSERT_TRUE(table_.Insert(H(2), revoked).ok());
  ASSERT_TRUE(table_.Insert(H(3), MakeSession(3, "alice", 400)).ok());

  ListUserPage page = table_.ListUser("alice", 10, "", false, 500, 0);
  ASSERT_EQ(page.sessions.size(), 1u);
  EXPECT_EQ(page.sessions[0].session_id(), MakeSession(1).session_id());

  page = table_.ListUser("alice", 10, "", true, 500, 0);
  ASSERT_EQ(page.sessions.size(), 2u);
  EXPECT_EQ(page.sessions[1].revoke_reason(), "stolen");
  EXPECT_EQ(page.sessions[1].revoked_at_ms(), 150);

  // With leeway the third is not expired yet.
  page = table_.ListUser("alice", 10, "", false, 500, 200);
  EXPECT_EQ(page.sessions.size(), 2u);
}

TEST(ExpiryRuleTest, AbsoluteIdleAndLeeway) {
  // Absolute only.
  EXPECT_FALSE(IsExpired(1000, 0, 0, 999, 0));
  EXPECT_TRUE(IsExpired(1000, 0, 0, 1000, 0));
  EXPECT_FALSE(IsExpired(1000, 0, 0, 1049, 50));
  EXPECT_TRUE(IsExpired(1000, 0, 0, 1050, 50));
  // Idle: last seen 100, timeout 200 -> deadline 300.
  EXPECT_FALSE(IsExpired(1000, 200, 100, 299, 0));
  EXPECT_TRUE(IsExpired(1000, 200, 100, 300, 0));
  EXPECT_FALSE(IsExpired(1000, 200, 100, 309, 10));
  EXPECT_TRUE(IsExpired(1000, 200, 100, 310, 10));
  // The absolute limit still applies when idle is later.
  EXPECT_TRUE(IsExpired(1000, 5000, 900, 1000, 0));
  EXPECT_EQ(SessionDeadlineMs(1000, 200, 100), 300);
  EXPECT_EQ(SessionDeadlineMs(1000, 0, 100), 1000);
  // No overflow near the ends of int64.
  const int64_t max = std::numeric_limits<int64_t>::max();
  EXPECT_FALSE(IsExpired(max, max, max, max - 1, max));
}

TEST_P(SessionTableTest, ValidateOutcomes) {
  ASSERT_TRUE(table_.Insert(H(1), MakeSession(1, "alice", 1000)).ok());
  ASSERT_TRUE(
      table_.Insert(H(2), MakeSession(2, "alice", 1000, 200, 100)).ok());
  EXPECT_EQ(table_.Validate(H(1), 999, 0).outcome, ValidateOutcome::kValid);
  EXPECT_EQ(table_.Validate(H(1), 1000, 0).outcome, ValidateOutcome::kExpired);
  EXPECT_EQ(table_.Validate(H(1), 1000, 1).outcome, ValidateOutcome::kValid);
  EXPECT_EQ(table_.Validate(H(2), 299, 0).outcome, ValidateOutcome::kValid);
  EXPECT_EQ(table_.Validate(H(2), 300, 0).outcome, ValidateOutcome::kExpired);
  // A touch slides the idle deadline.
  EXPECT_TRUE(table_.SetLastSeen(H(2), 250));
  EXPECT_EQ(table_.Validate(H(2), 300, 0).outcome, ValidateOutcome::kValid);
  // Never backwards.
  EXPECT_TRUE(table_.SetLastSeen(H(2), 120));
  EXPECT_EQ(table_.Get(H(2))->last_seen_at_ms(), 250);
  EXPECT_FALSE(table_.SetLastSeen(H(3), 120));

  // Revoked wins over expired, and stays until removed.
  Session revoked = *table_.Get(H(1));
  revoked.set_state(v1::SESSION_STATE_REVOKED);
  revoked.set_revoke_reason("logout");
  ASSERT_TRUE(table_.Replace(H(1), revoked).ok());
  EXPECT_EQ(table_.Validate(H(1), 500, 0).outcome, ValidateOutcome::kRevoked);
  EXPECT_EQ(table_.Validate(H(1), 5000, 0).outcome, ValidateOutcome::kRevoked);
  Session none;
  EXPECT_EQ(table_.Validate(H(1), 500, 0, &none), ValidateOutcome::kRevoked);
  EXPECT_EQ(none.session_id(), "");  // not filled unless valid
}

TEST_P(SessionTableTest, ReplaceKeepsIdsImmutable) {
  ASSERT_TRUE(table_.Insert(H(1), MakeSession(1)).ok());
  Session other = MakeSession(1);
  other.set_user_id("mallory");
  EXPECT_EQ(table_.Replace(H(1), other).code(),
            absl::StatusCode::kInvalidArgument);
  other = MakeSession(2);
  EXPECT_EQ(table_.Replace(H(1), other).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(table_.Replace(H(2), MakeSession(2)).code(),
            absl::StatusCode::kNotFound);
  Session updated = MakeSession(1);
  updated.mutable_attributes()->clear();
  updated.set_version(7);
  ASSERT_TRUE(table_.Replace(H(1), updated).ok());
  EXPECT_TRUE(MessageDifferencer::Equals(*table_.Get(H(1)), updated));
}

TEST_P(SessionTableTest, CollectExpired) {
  // Deadlines: i*100 for i in 1..20 (absolute), plus idle ones.
  for (int i = 1; i <= 20; ++i) {
    ASSERT_TRUE(table_.Insert(H(i), MakeSession(i, "u", i * 100)).ok());
  }
  // Idle: last seen 0, timeout 150 -> deadline 150 (absolute 10000).
  ASSERT_TRUE(table_.Insert(H(50), MakeSession(50, "u", 10000, 150, 0)).ok());
  auto set = [](const std::vector<TokenHash>& v) {
    return absl::flat_hash_set<TokenHash, TokenHashHasher>(v.begin(), v.end());
  };
  EXPECT_TRUE(table_.CollectExpired(99, 0, 100).empty());
  auto got = set(table_.CollectExpired(500, 0, 100));
  EXPECT_EQ(got.size(), 6u);  // 100..500 and the idle one
  EXPECT_TRUE(got.contains(H(50)));
  EXPECT_FALSE(got.contains(H(6)));
  // Leeway pushes everything back.
  EXPECT_EQ(table_.CollectExpired(500, 100, 100).size(), 5u);
  // max bounds the answer.
  EXPECT_EQ(table_.CollectExpired(5000, 0, 3).size(), 3u);
  // Touching the idle one moves it out.
  table_.SetLastSeen(H(50), 450);
  EXPECT_FALSE(set(table_.CollectExpired(500, 0, 100)).contains(H(50)));
  EXPECT_TRUE(set(table_.CollectExpired(600, 0, 100)).contains(H(50)));
  // Revoked sessions are still collected at their deadline.
  Session revoked = *table_.Get(H(20));
  revoked.set_state(v1::SESSION_STATE_REVOKED);
  ASSERT_TRUE(table_.Replace(H(20), revoked).ok());
  EXPECT_FALSE(set(table_.CollectExpired(1999, 0, 100)).contains(H(20)));
  EXPECT_TRUE(set(table_.CollectExpired(2000, 0, 100)).contains(H(20)));
  // Erased sessions leave the index.
  table_.Erase(H(1));
  EXPECT_FALSE(set(table_.CollectExpired(5000, 0, 100)).contains(H(1)));
  EXPECT_EQ(table_.CollectExpired(5000, 0, 100).size(), 20u);
}

TEST_P(SessionTableTest, CollectionsFromEachFirstShardReachEveryShard) {
  // More sessions due than one collection takes: started from each shard
  // in turn, the collections still reach all of them.
  for (int i = 1; i <= 200; ++i) {
    ASSERT_TRUE(table_.Insert(H(i), MakeSession(i, "u", 100)).ok());
  }
  absl::flat_hash_set<TokenHash, TokenHashHasher> reached;
  for (size_t first = 0; first < table_.num_shards(); ++first) {
    for (const ExpiredSession& s : table_.CollectExpiredSessions(
             500, 0, 200 / table_.num_shards(), first)) {
      reached.insert(s.hash);
    }
  }
  // Each collection takes a shard's share; always starting at shard 0 they
  // would all take the same sessions.
  const size_t share = 200 / table_.num_shards();
  if (table_.num_shards() == 1) {
    EXPECT_EQ(reached.size(), 200u);
  } else {
    EXPECT_GE(reached.size(), 2 * share);
  }
}

TEST_P(SessionTableTest, StoredBytesRoundTripAndMatchTheProto) {
  Session s = MakeSession(1);
  s.set_state(v1::SESSION_STATE_REVOKED);
  s.set_revoke_reason("r");
  s.set_revoked_at_ms(123);
  s.mutable_client()->set_user_agent("curl");
  s.set_created_at_ms(-5);  // negative values survive the varint path
  ASSERT_TRUE(table_.Insert(H(1), s).ok());
  std::optional<std::string> bytes = table_.SerializeStored(H(1));
  ASSERT_TRUE(bytes.has_value());
  // The hand-built bytes are a valid StoredSession.
  v1::internal::StoredSession stored;
  ASSERT_TRUE(stored.ParseFromString(*bytes));
  EXPECT_EQ(stored.token_hash(), TokenHashBytes(H(1)));
  EXPECT_TRUE(MessageDifferencer::Equals(stored.session(), s))
      << stored.session().DebugString();

  // And a protobuf-serialized StoredSession loads.
  SessionTable other(SessionTableOptions{3});
  ASSERT_TRUE(other.InsertStored(stored.SerializeAsString()).ok());
  EXPECT_TRUE(MessageDifferencer::Equals(*other.Get(H(1)), s));
  EXPECT_EQ(other.InsertStored(*bytes).code(),
            absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(other.InsertStored("\xff\xff garbage").code(),
            absl::StatusCode::kDataLoss);
  EXPECT_EQ(other.size(), 1u);
  // CheckStored reads as InsertStored does, adding nothing: a known integer
  // field sent as fixed64 is an unknown field to protobuf, not to the table
  // (found by fuzz_snapshot_chunks: such an image passed its check).
  EXPECT_TRUE(SessionTable::CheckStored(*bytes).ok());
  v1::internal::StoredSession odd = stored;
  odd.mutable_session()->clear_created_at_ms();
  std::string session_bytes = odd.session().SerializeAsString();
  session_bytes.push_back(static_cast<char>((3 << 3) | 1));  // field 3, I64
  session_bytes.append(8, '\0');
  ASSERT_LT(session_bytes.size(), 128u);  // one byte of length below
  v1::internal::StoredSession outer;
  outer.set_token_hash(stored.token_hash());
  std::string fixed64_created = outer.SerializeAsString();
  fixed64_created.push_back(static_cast<char>((2 << 3) | 2));  // field 2, LEN
  fixed64_created.push_back(static_cast<char>(session_bytes.size()));
  fixed64_created.append(session_bytes);
  v1::internal::StoredSession as_protobuf_reads;
  ASSERT_TRUE(as_protobuf_reads.ParseFromString(fixed64_created));
  EXPECT_EQ(SessionTable::CheckStored(fixed64_created).code(),
            absl::StatusCode::kDataLoss);
  // As the table's own reader, which loads it, refuses it.
  EXPECT_EQ(other.InsertStored(fixed64_created).code(),
            absl::StatusCode::kDataLoss);
  EXPECT_EQ(other.size(), 1u);

  int count = 0;
  table_.ForEachStored([&](const TokenHash& hash, std::string_view b) {
    EXPECT_EQ(hash, H(1));
    EXPECT_EQ(b, *bytes);
    ++count;
  });
  EXPECT_EQ(count, 1);
}

TEST_P(SessionTableTest, ClearEmptiesEverything) {
  for (int i = 0; i < 100; ++i) {
    ASSERT_TRUE(
        table_.Insert(H(i), MakeSession(i, absl::StrCat("u", i % 7))).ok());
  }
  table_.Clear();
  EXPECT_EQ(table_.size(), 0u);
  EXPECT_FALSE(table_.Contains(H(5)));
  EXPECT_TRUE(table_.UserTokenHashes("u1").empty());
  EXPECT_FALSE(table_.TokenHashOf(MakeSession(5).session_id()).has_value());
  EXPECT_TRUE(table_.CollectExpired(1 << 30, 0, 10).empty());
  ASSERT_TRUE(table_.Insert(H(5), MakeSession(5)).ok());
  EXPECT_EQ(table_.size(), 1u);
}

// Readers on two threads while the single writer inserts, replaces and
// erases: every answer is consistent (a session either is there, whole, or
// is not). Run under -fsanitize=thread to check the locking.
TEST_P(SessionTableTest, ConcurrentReadersSeeWholeRecords) {
  constexpr int kSessions = 2000;
  std::atomic<bool> done{false};
  std::atomic<int> bad{0};
  std::vector<std::thread> readers;
  for (int t = 0; t < 2; ++t) {
    readers.emplace_back([&, t] {
      for (int round = 0; round < 200000 && !done.load(); ++round) {
        const int i = (round * 31 + t) % kSessions;
        std::optional<Session> s = table_.Get(H(i));
        if (s && (s->session_id() != MakeSession(i).session_id() ||
                  s->attributes().at("role") != "admin")) {
          ++bad;
        }
        std::optional<Session> by_id =
            table_.GetBySessionId(MakeSession(i).session_id());
        if (by_id && by_id->user_id() != "alice") ++bad;
        if (round % 100 == 0) table_.ListUser("alice", 5, "", true, 500, 0);
      }
    });
  }
  for (int i = 0; i < kSessions; ++i) {
    ASSERT_TRUE(table_.Insert(H(i), MakeSession(i)).ok());
  }
  for (int i = 0; i < kSessions; i += 2) {
    Session s = MakeSession(i);
    s.set_version(2);
    (*s.mutable_attributes())["extra"] = std::string(100, 'x');
    ASSERT_TRUE(table_.Replace(H(i), s).ok());
  }
  for (int i = 0; i < kSessions; i += 3) table_.Erase(H(i));
  done = true;
  for (std::thread& t : readers) t.join();
  EXPECT_EQ(bad.load(), 0);
  EXPECT_EQ(table_.size(), kSessions - (kSessions + 2) / 3);
}

// Rekey (token rotation) moves a session whole: fields, revocations, its
// place in every index; the old hash is gone; a refused rekey changes
// nothing.
TEST_P(SessionTableTest, RekeyMovesTheWholeSession) {
  ASSERT_TRUE(table_.Insert(H(1), MakeSession(1, "alice", 5000)).ok());
  ASSERT_TRUE(table_.Insert(H(2), MakeSession(2, "alice", 9000)).ok());
  ASSERT_TRUE(table_.AddHold(H(1), 77));
  const std::optional<Session> before = table_.Get(H(1));
  ASSERT_TRUE(before.has_value());

  ASSERT_TRUE(table_.Rekey(H(1), H(101)).ok());
  EXPECT_FALSE(table_.Contains(H(1)));
  const std::optional<Session> after = table_.Get(H(101));
  ASSERT_TRUE(after.has_value());
  EXPECT_TRUE(MessageDifferencer::Equals(*after, *before))
      << after->DebugString();
  EXPECT_TRUE(table_.IsHeldBy(H(101), 77));
  EXPECT_EQ(table_.TokenHashOf(before->session_id()), H(101));
  EXPECT_THAT(table_.UserTokenHashes("alice"),
              ::testing::UnorderedElementsAre(H(101), H(2)));
  EXPECT_EQ(table_.size(), 2u);
  // The expiry index follows: collected under its new hash only.
  EXPECT_THAT(table_.CollectExpired(6000, 0, 10),
              ::testing::ElementsAre(H(101)));
  EXPECT_EQ(table_.ListUser("alice", 10, "", true, 500, 0).sessions.size(), 2u);

  // Refused: the old hash is absent, or the new one taken.
  EXPECT_EQ(table_.Rekey(H(1), H(102)).code(), absl::StatusCode::kNotFound);
  const std::optional<std::string> stored = table_.SerializeStored(H(101));
  EXPECT_EQ(table_.Rekey(H(101), H(2)).code(),
            absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(table_.SerializeStored(H(101)), stored);
  EXPECT_TRUE(table_.Contains(H(2)));
  EXPECT_EQ(table_.size(), 2u);
}

// While the writer rotates a session's token again and again, readers
// always find it: in its user's list, and by its session_id. (Rotation used
// to be an erase and an insert, and ListUser skipped the session in between
// or when the hash it had collected was rotated away.)
TEST_P(SessionTableTest, ARotatingSessionIsNeverMissingFromItsUsersList) {
  constexpr int kRotations = 20000;
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE(table_.Insert(H(i), MakeSession(i)).ok());
  }
  const std::string rotating_sid = MakeSession(1).session_id();
  std::atomic<bool> done{false};
  std::atomic<int> listed_short{0};
  std::atomic<int> lost_by_id{0};
  std::vector<std::thread> readers;
  for (int t = 0; t < 2; ++t) {
    readers.emplace_back([&] {
      for (int round = 0; round < 5'000'000 && !done.load(); ++round) {
        if (table_.ListUser("alice", 10, "", false, 500, 0).sessions.size() !=
            3) {
          ++listed_short;
        }
        if (!table_.GetBySessionId(rotating_sid)) ++lost_by_id;
      }
    });
  }
  TokenHash current = H(1);
  for (int r = 0; r < kRotations; ++r) {
    const TokenHash next = H(1000 + r);
    ASSERT_TRUE(table_.Rekey(current, next).ok());
    current = next;
  }
  done = true;
  for (std::thread& t : readers) t.join();
  EXPECT_EQ(listed_short.load(), 0);
  EXPECT_EQ(lost_by_id.load(), 0);
  EXPECT_EQ(table_.size(), 3u);
}

// A held session keeps its revoked_by list index inside its record while
// fewer than 128 lists are in use (no map entry), and in the shard's map
// beyond: both kinds read, serialize, reload, change and release alike.
TEST_P(SessionTableTest, HoldsInsideTheRecordAndBeyondItBehaveAlike) {
  constexpr int kSessions = 300;  // one list each: indexes 1..300
  for (int i = 0; i < kSessions; ++i) {
    ASSERT_TRUE(table_.Insert(H(i), MakeSession(i)).ok());
    ASSERT_TRUE(table_.AddHold(H(i), 5000 + static_cast<uint64_t>(i)));
  }
  // One session held twice: a new list for it, the old one released.
  ASSERT_TRUE(table_.AddHold(H(7), 9999));
  EXPECT_GT(table_.memory_usage().hold_index_bytes, 0u);  // 128..300 mapped
  auto expect_held = [&](const SessionTable& table, int i) {
    const uint64_t id = 5000 + static_cast<uint64_t>(i);
    EXPECT_TRUE(table.IsHeldBy(H(i), id)) << i;
    EXPECT_FALSE(table.IsHeldBy(H(i), id + 1)) << i;
    std::optional<Session> got = table.Get(H(i));
    ASSERT_TRUE(got.has_value()) << i;
    EXPECT_EQ(got->state(), v1::SESSION_STATE_REVOKED) << i;
    std::vector<uint64_t> want = {id};
    if (i == 7) want.push_back(9999);
    EXPECT_EQ(std::vector<uint64_t>(got->revoked_by().begin(),
                                    got->revoked_by().end()),
              want)
        << i;
    EXPECT_EQ(table.Validate(H(i), 500, 0).outcome, ValidateOutcome::kRevoked);
  };
  for (int i = 0; i < kSessions; ++i) expect_held(table_, i);

  // Serialized and loaded into another table: the same holds.
  SessionTable copy(SessionTableOptions{GetParam()});
  table_.ForEachStored([&](const TokenHash&, std::string_view bytes) {
    ASSERT_TRUE(copy.InsertStored(bytes).ok());
  });
  for (int i = 0; i < kSessions; ++i) expect_held(copy, i);

  // Released one by one: ACTIVE again, nothing left held or mapped.
  EXPECT_EQ(table_.RemoveHold(H(7), 9999, 500, 0),
            SessionTable::HoldRelease::kStillHeld);
  for (int i = 0; i < kSessions; ++i) {
    EXPECT_EQ(table_.RemoveHold(H(i), 5000 + static_cast<uint64_t>(i), 500, 0),
              SessionTable::HoldRelease::kActive)
        << i;
    EXPECT_EQ(table_.Validate(H(i), 500, 0).outcome, ValidateOutcome::kValid)
        << i;
    EXPECT_TRUE(table_.Get(H(i))->revoked_by().empty()) << i;
  }
  EXPECT_EQ(table_.memory_usage().hold_index_bytes, 0u);
  // Erasing held sessions releases their lists too.
  for (int i = 0; i < kSessions; ++i) EXPECT_TRUE(copy.Erase(H(i)));
  EXPECT_EQ(copy.memory_usage().hold_index_bytes, 0u);
  EXPECT_EQ(copy.size(), 0u);
}

// A held session is never seen without its hold: REVOKED with an empty
// revoked_by reads as revoked one by one (final), so a reader during an
// insert (a snapshot install on a serving follower) must see both or
// nothing. Bounded: 20,000 inserts and erases.
TEST_P(SessionTableTest, AHeldSessionIsNeverSeenWithoutItsHold) {
  Session held = MakeSession(1);
  held.set_state(v1::SESSION_STATE_REVOKED);
  held.add_revoked_by(7);
  std::optional<std::string> stored;
  {
    SessionTable source;
    ASSERT_TRUE(source.Insert(H(1), held).ok());
    stored = source.SerializeStored(H(1));
    ASSERT_TRUE(stored.has_value());
  }
  std::atomic<bool> done{false};
  std::atomic<int> torn{0};
  std::vector<std::thread> readers;
  for (int r = 0; r < 2; ++r) {
    readers.emplace_back([&] {
      while (!done.load()) {
        std::optional<Session> got = table_.Get(H(1));
        if (got && got->revoked_by_size() != 1) torn.fetch_add(1);
        table_.ForEachSession([&](const SessionView& view) {
          if (view.revoked && view.hold == 0) torn.fetch_add(1);
        });
      }
    });
  }
  for (int i = 0; i < 20'000; ++i) {
    if (i % 2 == 0) {
      ASSERT_TRUE(table_.Insert(H(1), held).ok());
    } else {
      ASSERT_TRUE(table_.InsertStored(*stored).ok());
    }
    ASSERT_TRUE(table_.Erase(H(1)));
  }
  done.store(true);
  for (std::thread& t : readers) t.join();
  EXPECT_EQ(torn.load(), 0);
}

// ReplaceStored moves a session to a stored record in place (a snapshot
// install): every field, the hold, and fields a later version added (kept
// verbatim, so the replicas' stored bytes stay equal); refusals change
// nothing.
TEST_P(SessionTableTest, ReplaceStoredKeepsUnknownFieldsAndTheIds) {
  ASSERT_TRUE(table_.Insert(H(1), MakeSession(1)).ok());
  v1::internal::StoredSession stored;
  stored.set_token_hash(std::string(TokenHashBytes(H(1))));
  Session next = MakeSession(1, "alice", 2'000'000, 0, 500);
  next.set_version(3);
  next.set_state(v1::SESSION_STATE_REVOKED);
  next.add_revoked_by(9);
  // Field 20 of the Session, a varint: no version today knows it.
  std::string session_bytes = next.SerializeAsString();
  session_bytes.append("\xa0\x01\x2a", 3);
  stored.clear_session();
  std::string with_unknown = stored.SerializeAsString();
  wire::PutBytesField(&with_unknown, 2, session_bytes);

  ASSERT_TRUE(table_.ReplaceStored(with_unknown).ok());
  std::optional<Session> got = table_.Get(H(1));
  ASSERT_TRUE(got.has_value());
  EXPECT_EQ(got->expires_at_ms(), 2'000'000);
  EXPECT_EQ(got->last_seen_at_ms(), 500);
  EXPECT_EQ(got->version(), 3u);
  EXPECT_EQ(got->state(), v1::SESSION_STATE_REVOKED);
  ASSERT_EQ(got->revoked_by_size(), 1);
  EXPECT_TRUE(table_.IsHeldBy(H(1), 9));
  std::optional<std::string> kept = table_.SerializeStored(H(1));
  ASSERT_TRUE(kept.has_value());
  EXPECT_NE(kept->find(std::string("\xa0\x01\x2a", 3)), std::string::npos);
  EXPECT_EQ(table_.CollectExpired(2'000'000, 0, 10).size(), 1u);
  EXPECT_EQ(table_.CollectExpired(1'999'999, 0, 10).size(), 0u);

  // Another session's ids, an absent token, bytes that do not parse.
  Session other = MakeSession(2);
  *stored.mutable_session() = other;
  EXPECT_EQ(table_.ReplaceStored(stored.SerializeAsString()).code(),
            absl::StatusCode::kInvalidArgument);
  stored.set_token_hash(std::string(TokenHashBytes(H(2))));
  EXPECT_EQ(table_.ReplaceStored(stored.SerializeAsString()).code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(table_.ReplaceStored("\xff\xff garbage").code(),
            absl::StatusCode::kDataLoss);
  EXPECT_EQ(table_.SerializeStored(H(1)), kept);
  EXPECT_EQ(table_.size(), 1u);
}

INSTANTIATE_TEST_SUITE_P(Shards, SessionTableTest,
                         ::testing::Values(size_t{1}, size_t{7}, size_t{64}));

}  // namespace
}  // namespace sessiond::storage
