// Copyright sessiond authors. Licensed under the Apache License 2.0.
#include "storage/session_state_machine.h"

#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "common/key_encryption.h"
#include "common/signing.h"
#include "gmock/gmock.h"
#include "google/protobuf/util/message_differencer.h"
#include "gtest/gtest.h"
#include "rocksdb/env.h"
#include "sessiond/v1/command.pb.h"
#include "storage/command_level.h"
#include "storage/database.h"
#include "storage/keys.h"
#include "storage/revocations.h"
#include "storage/session_table.h"
#include "storage/snapshot_files.h"
#include "storage/token.h"
#include "tests/storage/power_cut_fs.h"
#include "tests/storage/temp_dir.h"

namespace sessiond::storage {
namespace {

using google::protobuf::util::MessageDifferencer;
using replication::ApplyResult;
using replication::Entry;
using replication::EntryType;
using sessiond::testing::TempDir;
using sessiond::v1::Session;
using sessiond::v1::internal::Command;
using ::testing::HasSubstr;

std::string Hash(int i) {
  return std::string(TokenHashBytes(HashToken(absl::StrCat("tok-", i))));
}
TokenHash H(int i) { return HashToken(absl::StrCat("tok-", i)); }
std::string Sid(int i) { return absl::StrCat("sid-", 1000 + i); }

Command Create(int i, int64_t ts, const std::string& user = "alice",
               int64_t expires_at = 100'000, int64_t idle = 0) {
  Command c;
  c.set_timestamp_ms(ts);
  auto* create = c.mutable_create();
  create->set_token_hash(Hash(i));
  create->set_session_id(Sid(i));
  create->set_user_id(user);
  create->set_expires_at_ms(expires_at);
  create->set_idle_timeout_ms(idle);
  (*create->mutable_attributes())["role"] = "user";
  (*create->mutable_attributes())["n"] = std::to_string(i);
  create->mutable_client()->set_device("laptop");
  return c;
}

Command Touch(int64_t ts, std::vector<std::pair<int, int64_t>> touches) {
  Command c;
  c.set_timestamp_ms(ts);
  c.mutable_touch();
  for (auto [i, seen] : touches) {
    auto* t = c.mutable_touch()->add_touches();
    t->set_token_hash(Hash(i));
    t->set_seen_at_ms(seen);
  }
  return c;
}

Command Update(int i, int64_t ts, uint64_t expected,
               std::map<std::string, std::string> set,
               std::vector<std::string> remove = {}) {
  Command c;
  c.set_timestamp_ms(ts);
  auto* u = c.mutable_update();
  u->set_token_hash(Hash(i));
  u->set_expected_version(expected);
  for (auto& [k, v] : set) (*u->mutable_set_attributes())[k] = v;
  for (auto& k : remove) u->add_remove_attributes(k);
  return c;
}

Command RevokeByHash(int i, int64_t ts, std::string reason = "logout") {
  Command c;
  c.set_timestamp_ms(ts);
  c.mutable_revoke()->mutable_session()->set_token_hash(Hash(i));
  c.mutable_revoke()->set_reason(reason);
  return c;
}

Command RevokeBySid(int i, int64_t ts) {
  Command c;
  c.set_timestamp_ms(ts);
  c.mutable_revoke()->mutable_session()->set_session_id(Sid(i));
  c.mutable_revoke()->set_reason("by id");
  return c;
}

Command RevokeUser(const std::string& user, int64_t ts, int keep = -1) {
  Command c;
  c.set_timestamp_ms(ts);
  c.mutable_revoke_user()->set_user_id(user);
  if (keep >= 0) c.mutable_revoke_user()->set_keep_session_id(Sid(keep));
  c.mutable_revoke_user()->set_reason("everywhere");
  return c;
}

Command Expire(int64_t ts, std::vector<int> which) {
  Command c;
  c.set_timestamp_ms(ts);
  for (int i : which) c.mutable_expire()->add_token_hashes(Hash(i));
  return c;
}

class SessionStateMachineTest : public ::testing::Test {
 protected:
  void SetUp() override { Reopen(); }

  void Reopen() {
    sm_.reset();
    table_.reset();
    db_.reset();
    auto db = Database::Open(dir_.Sub("data"), DatabaseOptions());
    ASSERT_TRUE(db.ok()) << db.status();
    db_ = *std::move(db);
    table_ = std::make_unique<SessionTable>(SessionTableOptions{8});
    snapshots_ = std::make_unique<SnapshotFiles>(dir_.Sub("snap"));
    ASSERT_TRUE(snapshots_->Init().ok());
    SessionStateMachineOptions options;
    options.snapshots = snapshots_.get();
    auto sm = SessionStateMachine::Open(db_.get(), table_.get(), options);
    ASSERT_TRUE(sm.ok()) << sm.status();
    sm_ = *std::move(sm);
  }

  // Applies one command as the next entry; returns its result.
  ApplyResult ApplyOne(const Command& command) {
    Entry e;
    e.index = sm_->applied_index() + 1;
    e.term = Term(1);
    e.data = command.SerializeAsString();
    auto results = sm_->Apply({e});
    EXPECT_TRUE(results.ok()) << results.status();
    if (!results.ok()) return results.status();
    EXPECT_EQ(results->size(), 1u);
    return (*results)[0];
  }

  // Applies a configuration change as the next entry.
  void ApplyConfChange(replication::ConfChangeType type, uint64_t node) {
    Entry e;
    e.index = sm_->applied_index() + 1;
    e.term = Term(1);
    e.type = EntryType::kConfChange;
    e.data = replication::EncodeConfChange({type, NodeId(node)});
    ASSERT_TRUE(sm_->Apply({e}).ok());
  }

  Session ApplySession(const Command& command) {
    ApplyResult r = ApplyOne(command);
    EXPECT_TRUE(r.ok()) << r.status();
    if (!r.ok()) return Session();
    return std::any_cast<Session>(*r);
  }

  uint64_t ApplyCount(const Command& command) {
    ApplyResult r = ApplyOne(command);
    EXPECT_TRUE(r.ok()) << r.status();
    if (!r.ok()) return ~uint64_t{0};
    return std::any_cast<uint64_t>(*r);
  }

  // Every (key, value) of the sessions CF.
  std::map<std::string, std::string> DumpCf() {
    std::map<std::string, std::string> out;
    std::unique_ptr<rocksdb::Iterator> it(
        db_->db()->NewIterator(rocksdb::ReadOptions(), db_->sessions_cf()));
    for (it->SeekToFirst(); it->Valid(); it->Next()) {
      out[it->key().ToString()] = it->value().ToString();
    }
    return out;
  }

  std::map<std::string, std::string> DumpTable() {
    std::map<std::string, std::string> out;
    table_->ForEachStored([&](const TokenHash& hash, std::string_view bytes) {
      out[std::string(TokenHashBytes(hash))] = std::string(bytes);
    });
    return out;
  }

  uint64_t StoredAppliedIndex() {
    std::string value;
    EXPECT_TRUE(db_->db()
                    ->Get(rocksdb::ReadOptions(), db_->default_cf(),
                          kAppliedIndexKey, &value)
                    .ok());
    return value.size() == 8 ? DecodeFixed64BE(value) : 0;
  }

  TempDir dir_;
  std::unique_ptr<Database> db_;
  std::unique_ptr<SessionTable> table_;
  std::unique_ptr<SnapshotFiles> snapshots_;
  std::unique_ptr<SessionStateMachine> sm_;
};

TEST_F(SessionStateMachineTest, CreateStampsAppliedTimeAndPersists) {
  Session s = ApplySession(Create(1, 5000));
  EXPECT_EQ(s.session_id(), Sid(1));
  EXPECT_EQ(s.user_id(), "alice");
  EXPECT_EQ(s.created_at_ms(), 5000);
  EXPECT_EQ(s.last_seen_at_ms(), 5000);
  EXPECT_EQ(s.expires_at_ms(), 100'000);
  EXPECT_EQ(s.version(), 1u);
  EXPECT_EQ(s.state(), v1::SESSION_STATE_ACTIVE);
  EXPECT_EQ(s.attributes().at("role"), "user");
  EXPECT_EQ(s.client().device(), "laptop");
  EXPECT_TRUE(MessageDifferencer::Equals(*table_->Get(H(1)), s));
  EXPECT_EQ(sm_->applied_index(), LogIndex(1));
  EXPECT_EQ(sm_->applied_time_ms(), 5000);
  EXPECT_EQ(StoredAppliedIndex(), 1u);
  auto cf = DumpCf();
  ASSERT_EQ(cf.size(), 1u);
  v1::internal::StoredSession stored;
  ASSERT_TRUE(stored.ParseFromString(cf.begin()->second));
  EXPECT_EQ(stored.token_hash(), Hash(1));
  EXPECT_TRUE(MessageDifferencer::Equals(stored.session(), s));
}

TEST_F(SessionStateMachineTest, RejectionsAreDeterministicAndChangeNothing) {
  ApplySession(Create(1, 1000));
  ApplySession(Create(2, 1000, "alice", 100'000, 500));
  ApplySession(RevokeByHash(2, 1000));
  const auto cf_before = DumpCf();
  const auto table_before = DumpTable();

  struct Case {
    Command command;
    absl::StatusCode code;
    std::string message;
  };
  Command dup_sid = Create(3, 1100);
  dup_sid.mutable_create()->set_session_id(Sid(1));
  Command bad_hash = Create(4, 1100);
  bad_hash.mutable_create()->set_token_hash("short");
  Command no_user = Create(5, 1100);
  no_user.mutable_create()->clear_user_id();
  Command no_op;
  no_op.set_timestamp_ms(1100);
  const std::vector<Case> cases = {
      {Create(1, 1100), absl::StatusCode::kAlreadyExists, "token"},
      {dup_sid, absl::StatusCode::kAlreadyExists, "session_id"},
      {bad_hash, absl::StatusCode::kInvalidArgument, "32 bytes"},
      {no_user, absl::StatusCode::kInvalidArgument, "user_id"},
      {Touch(1100, {{9, 1100}}), absl::StatusCode::kNotFound, ""},
      {Touch(1100, {{2, 1100}}), absl::StatusCode::kFailedPrecondition,
       "revoked"},
      {Update(9, 1100, 0, {{"a", "b"}}), absl::StatusCode::kNotFound, ""},
      {Update(1, 1100, 5, {{"a", "b"}}), absl::StatusCode::kAborted,
       "version mismatch: expected 5, session is at 1"},
      {Update(2, 1100, 0, {{"a", "b"}}), absl::StatusCode::kFailedPrecondition,
       "revoked"},
      {RevokeByHash(9, 1100), absl::StatusCode::kNotFound, ""},
      {RevokeBySid(9, 1100), absl::StatusCode::kNotFound, ""},
      {no_op, absl::StatusCode::kInvalidArgument, "no operation"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.command.ShortDebugString());
    ApplyResult r = ApplyOne(c.command);
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.status().code(), c.code) << r.status();
    EXPECT_THAT(std::string(r.status().message()), HasSubstr(c.message));
    EXPECT_EQ(DumpCf(), cf_before);
    EXPECT_EQ(DumpTable(), table_before);
  }
  // The rejected entries were still applied (as no-ops).
  EXPECT_EQ(sm_->applied_index(), LogIndex(3 + cases.size()));
  EXPECT_EQ(StoredAppliedIndex(), 3 + cases.size());
}

TEST_F(SessionStateMachineTest, TouchMovesLastSeenForwardOnly) {
  // Idle timeout 500: the deadline is last_seen + 500.
  ApplySession(Create(1, 1000, "alice", 100'000, 500));
  Session s = ApplySession(Touch(1400, {{1, 1400}}));
  EXPECT_EQ(s.last_seen_at_ms(), 1400);
  s = ApplySession(Touch(1500, {{1, 1200}}));
  EXPECT_EQ(s.last_seen_at_ms(), 1400);
  // A seen time ahead of the applied time is capped to it.
  s = ApplySession(Touch(1600, {{1, 9000}}));
  EXPECT_EQ(s.last_seen_at_ms(), 1600);
  // Idle-expired at the applied time (1600 + 500 = 2100): rejected.
  ApplyResult r = ApplyOne(Touch(2100, {{1, 2100}}));
  EXPECT_EQ(r.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(table_->Get(H(1))->last_seen_at_ms(), 1600);
}

// A member ran through the others' outage from applied time 1000; the
// others restarted and their leader stamped from where they stopped, so
// its stamps lag by what the member counted (60 s). The catch-up moves
// them with the jump: a session made or touched in the lag keeps the time
// it had, and one last seen before it still counts the outage. Applied
// at exactly 1000 counts as the lag (a leader restarted with an older
// applied time stamped below it before it replayed its log); a catch-up
// handed out again moves nobody twice.
TEST_F(SessionStateMachineTest, ACatchUpMovesWhatWasStampedInTheLag) {
  ApplySession(Create(1, 900, "alice", 1'000'000, 5'000));  // before
  ApplySession(Create(3, 900, "carol", 1'000'000, 5'000));
  Command tick;
  tick.set_timestamp_ms(1000);
  tick.mutable_tick();
  ASSERT_TRUE(ApplyOne(tick).ok());  // the member's last applied time
  ApplySession(Create(4, 950, "dave", 1'000'000, 5'000));  // applied at 1000
  ApplySession(Create(2, 2000, "bob", 1'000'000, 5'000));  // in the lag
  ApplySession(Touch(2100, {{3, 2100}}));                  // in the lag
  Command catch_up;
  catch_up.set_timestamp_ms(2200);
  catch_up.mutable_clock_catch_up()->set_to_ms(62'200);
  catch_up.mutable_clock_catch_up()->set_since_ms(1000);
  EXPECT_EQ(ApplyCount(catch_up), 3u);
  EXPECT_EQ(sm_->applied_time_ms(), 62'200);
  // The jump, for the expiry breaker of a new leader (not replicated).
  std::optional<SessionStateMachine::ClockJump> jump = sm_->last_clock_jump();
  ASSERT_TRUE(jump);
  EXPECT_EQ(jump->from_ms, 2200);
  EXPECT_EQ(jump->to_ms, 62'200);
  auto check = [&] {
    const std::optional<Session> before = table_->Get(H(1));
    ASSERT_TRUE(before);
    EXPECT_EQ(before->created_at_ms(), 900);
    EXPECT_EQ(before->last_seen_at_ms(), 900);
    EXPECT_TRUE(IsExpired(*before, 62'200, 0));
    const std::optional<Session> made = table_->Get(H(2));
    ASSERT_TRUE(made);
    EXPECT_EQ(made->created_at_ms(), 2000);  // immutable
    EXPECT_EQ(made->expires_at_ms(), 1'060'000);
    EXPECT_EQ(made->last_seen_at_ms(), 62'000);
    EXPECT_FALSE(IsExpired(*made, 62'200, 0));
    const std::optional<Session> touched = table_->Get(H(3));
    ASSERT_TRUE(touched);
    EXPECT_EQ(touched->expires_at_ms(), 1'000'000);
    EXPECT_EQ(touched->last_seen_at_ms(), 62'100);
    EXPECT_FALSE(IsExpired(*touched, 62'200, 0));
    const std::optional<Session> at_since = table_->Get(H(4));
    ASSERT_TRUE(at_since);
    EXPECT_EQ(at_since->last_seen_at_ms(), 61'000);
    EXPECT_FALSE(IsExpired(*at_since, 62'200, 0));
  };
  check();
  Reopen();  // stored as moved
  check();
  EXPECT_EQ(sm_->applied_time_ms(), 62'200);
  EXPECT_FALSE(sm_->last_clock_jump());
  // Handed out again before the first applied: caught up, nothing moves.
  catch_up.set_timestamp_ms(62'250);
  EXPECT_EQ(ApplyCount(catch_up), 0u);
  EXPECT_FALSE(sm_->last_clock_jump());
  // Handed out again with a later time (its retry): only what the caught-up
  // clock stamped moves, by the new lead.
  ApplySession(Create(5, 62'300, "erin", 1'000'000, 5'000));
  catch_up.set_timestamp_ms(62'400);
  catch_up.mutable_clock_catch_up()->set_to_ms(65'400);
  EXPECT_EQ(ApplyCount(catch_up), 1u);
  jump = sm_->last_clock_jump();
  ASSERT_TRUE(jump);
  EXPECT_EQ(jump->from_ms, 62'400);
  EXPECT_EQ(jump->to_ms, 65'400);
  EXPECT_EQ(table_->Get(H(5))->last_seen_at_ms(), 65'300);
  EXPECT_EQ(table_->Get(H(2))->last_seen_at_ms(), 62'000);
  EXPECT_EQ(table_->Get(H(4))->last_seen_at_ms(), 61'000);
  // Another catch-up of the same term (a second member that ran alone):
  // one jump, from before the first.
  catch_up.set_timestamp_ms(65'500);
  catch_up.mutable_clock_catch_up()->set_to_ms(70'000);
  EXPECT_TRUE(ApplyOne(catch_up).ok());
  jump = sm_->last_clock_jump();
  ASSERT_TRUE(jump);
  EXPECT_EQ(jump->from_ms, 62'400);
  EXPECT_EQ(jump->to_ms, 70'000);
  EXPECT_FALSE(jump->swept_since);
  // A sweep after it: a leader judged it (a new leader's window need not
  // start before it).
  EXPECT_TRUE(ApplyOne(Expire(70'100, {1})).ok());
  jump = sm_->last_clock_jump();
  ASSERT_TRUE(jump);
  EXPECT_TRUE(jump->swept_since);
}

TEST_F(SessionStateMachineTest, MultiTouchCountsAndSkips) {
  ApplySession(Create(1, 1000));
  ApplySession(Create(2, 1000));
  ApplySession(Create(3, 1000));
  ApplySession(RevokeByHash(3, 1000));
  EXPECT_EQ(ApplyCount(Touch(1500, {{1, 1500}, {2, 1400}, {3, 1500}, {9, 1}})),
            2u);
  EXPECT_EQ(table_->Get(H(1))->last_seen_at_ms(), 1500);
  EXPECT_EQ(table_->Get(H(2))->last_seen_at_ms(), 1400);
  EXPECT_EQ(table_->Get(H(3))->last_seen_at_ms(), 1000);
  EXPECT_EQ(ApplyCount(Touch(1600, {})), 0u);
}

// A node cut off from every leader keeps answering VALID for its active
// users, judging idle timeouts where it last heard from a leader, and the
// touches it records say so (idle_judged_at_ms). When the quorum returns
// they are judged the same way: the sessions of users active all along
// were idled out by them, a logout of everyone active through that node.
TEST_F(SessionStateMachineTest, ATouchJudgedWhileCutOffIsJudgedAtThatTime) {
  // Idle timeout 500; absolute expiry at 10'000.
  ApplySession(Create(1, 1000, "alice", 10'000, 500));
  ApplySession(Create(2, 1000, "bob", 10'000, 500));
  ApplySession(Create(3, 1000, "carol", 10'000, 500));
  ApplySession(Create(4, 1000, "dave", 10'000, 500));
  ApplySession(Create(5, 1000, "erin", 10'000, 500));
  ApplySession(Create(6, 1000, "frank", 10'000, 500));
  ApplySession(RevokeByHash(4, 1000));
  // Applied at 5000, long past every idle deadline (1500). Session 1 was
  // judged at 1200 (alive then); session 2 at 1600 (already idle then);
  // session 3 carries no judgement; session 4 is revoked.
  Command touch = Touch(5000, {{1, 4900}, {2, 4900}, {3, 4900}, {4, 4900}});
  touch.mutable_touch()->mutable_touches(0)->set_idle_judged_at_ms(1200);
  touch.mutable_touch()->mutable_touches(1)->set_idle_judged_at_ms(1600);
  touch.mutable_touch()->mutable_touches(3)->set_idle_judged_at_ms(1200);
  EXPECT_EQ(ApplyCount(touch), 1u);
  EXPECT_EQ(table_->Get(H(1))->last_seen_at_ms(), 4900);
  EXPECT_EQ(table_->Get(H(2))->last_seen_at_ms(), 1000);
  EXPECT_EQ(table_->Get(H(3))->last_seen_at_ms(), 1000);
  EXPECT_EQ(table_->Get(H(4))->last_seen_at_ms(), 1000);
  EXPECT_EQ(table_->Validate(H(1), 5100, 0).outcome, ValidateOutcome::kValid);
  // A single touch takes the same path; the absolute expiry still counts
  // at the applied time.
  Command single = Touch(6000, {{5, 5900}});
  single.mutable_touch()->mutable_touches(0)->set_idle_judged_at_ms(1200);
  EXPECT_EQ(ApplySession(single).last_seen_at_ms(), 5900);
  // A judgement time past the applied time counts as the applied time.
  Command ahead = Touch(6000, {{6, 6000}});
  ahead.mutable_touch()->mutable_touches(0)->set_idle_judged_at_ms(9000);
  EXPECT_EQ(ApplyOne(ahead).status().code(),
            absl::StatusCode::kFailedPrecondition);
  Command late = Touch(10'000, {{5, 9000}});
  late.mutable_touch()->mutable_touches(0)->set_idle_judged_at_ms(6000);
  EXPECT_EQ(ApplyOne(late).status().code(),
            absl::StatusCode::kFailedPrecondition);
}

TEST_F(SessionStateMachineTest, UpdateSetsRemovesAndBumpsVersion) {
  ApplySession(Create(1, 1000));
  Session s = ApplySession(Update(1, 1100, 1, {{"theme", "dark"}}, {"n"}));
  EXPECT_EQ(s.version(), 2u);
  EXPECT_EQ(s.attributes().at("theme"), "dark");
  EXPECT_FALSE(s.attributes().contains("n"));
  EXPECT_EQ(s.attributes().at("role"), "user");
  s = ApplySession(Update(1, 1200, 0, {{"role", "admin"}}));
  EXPECT_EQ(s.version(), 3u);
  EXPECT_EQ(s.attributes().at("role"), "admin");
  EXPECT_TRUE(MessageDifferencer::Equals(*table_->Get(H(1)), s));
  // Expired at the applied time -> FailedPrecondition.
  ApplyResult r = ApplyOne(Update(1, 100'000, 0, {{"x", "y"}}));
  EXPECT_EQ(r.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(r.status().message()), HasSubstr("expired"));
}

TEST_F(SessionStateMachineTest, RevokeIsIdempotentAndKeepsTheRecord) {
  ApplySession(Create(1, 1000));
  ApplySession(Create(2, 1000));
  Session s = ApplySession(RevokeByHash(1, 1500, "stolen"));
  EXPECT_EQ(s.state(), v1::SESSION_STATE_REVOKED);
  EXPECT_EQ(s.revoke_reason(), "stolen");
  EXPECT_EQ(s.revoked_at_ms(), 1500);
  Session again = ApplySession(RevokeByHash(1, 1700, "other"));
  EXPECT_TRUE(MessageDifferencer::Equals(again, s));
  s = ApplySession(RevokeBySid(2, 1800));
  EXPECT_EQ(s.state(), v1::SESSION_STATE_REVOKED);
  EXPECT_EQ(s.session_id(), Sid(2));
  EXPECT_EQ(table_->Validate(H(1), 1900, 0).outcome, ValidateOutcome::kRevoked);
  EXPECT_EQ(table_->size(), 2u);
}

TEST_F(SessionStateMachineTest, RevokeUserKeepsOneAndCounts) {
  for (int i = 1; i <= 4; ++i) ApplySession(Create(i, 1000, "alice"));
  ApplySession(Create(5, 1000, "bob"));
  ApplySession(RevokeByHash(4, 1000));
  EXPECT_EQ(ApplyCount(RevokeUser("alice", 1200, /*keep=*/2)), 2u);
  EXPECT_EQ(table_->Get(H(1))->state(), v1::SESSION_STATE_REVOKED);
  EXPECT_EQ(table_->Get(H(1))->revoke_reason(), "everywhere");
  EXPECT_EQ(table_->Get(H(2))->state(), v1::SESSION_STATE_ACTIVE);
  EXPECT_EQ(table_->Get(H(3))->state(), v1::SESSION_STATE_REVOKED);
  EXPECT_EQ(table_->Get(H(4))->revoke_reason(), "logout");  // unchanged
  EXPECT_EQ(table_->Get(H(5))->state(), v1::SESSION_STATE_ACTIVE);
  EXPECT_EQ(ApplyCount(RevokeUser("alice", 1300)), 1u);
  EXPECT_EQ(ApplyCount(RevokeUser("nobody", 1300)), 0u);
}

TEST_F(SessionStateMachineTest, ExpireRechecksAtTheAppliedTime) {
  ApplySession(Create(1, 1000, "alice", 2000));
  ApplySession(Create(2, 1000, "alice", 100'000, 500));
  ApplySession(Create(3, 1000, "alice", 100'000));
  // At 1600: 2 is idle-expired (1000 + 500), 1 is not yet, 3 is not.
  ApplySession(Touch(1400, {{2, 1400}}));  // ... but 2 was touched: 1900
  EXPECT_EQ(ApplyCount(Expire(1600, {1, 2, 3, 9})), 0u);
  EXPECT_EQ(ApplyCount(Expire(2000, {1, 2, 3})), 2u);
  EXPECT_FALSE(table_->Contains(H(1)));
  EXPECT_FALSE(table_->Contains(H(2)));
  EXPECT_TRUE(table_->Contains(H(3)));
  EXPECT_EQ(DumpCf().size(), 1u);
  EXPECT_FALSE(table_->GetBySessionId(Sid(1)).has_value());
}

TEST_F(SessionStateMachineTest, AppliedTimeNeverGoesBack) {
  ApplySession(Create(1, 5000));
  // A leader with a slow clock: the command's time is behind.
  Session s = ApplySession(Create(2, 3000));
  EXPECT_EQ(s.created_at_ms(), 5000);
  EXPECT_EQ(sm_->applied_time_ms(), 5000);
  Reopen();
  EXPECT_EQ(sm_->applied_time_ms(), 5000);
  s = ApplySession(Create(3, 4000));
  EXPECT_EQ(s.created_at_ms(), 5000);
  s = ApplySession(Create(4, 6000));
  EXPECT_EQ(s.created_at_ms(), 6000);
}

TEST_F(SessionStateMachineTest, SpecialEntriesAndBatches) {
  Entry conf;
  conf.index = LogIndex(1);
  conf.term = Term(1);
  conf.type = EntryType::kConfChange;
  conf.data = replication::EncodeConfChange(
      {replication::ConfChangeType::kAddLearner, NodeId(4)});
  Entry empty;
  empty.index = LogIndex(2);
  empty.term = Term(1);
  Entry garbage;
  garbage.index = LogIndex(3);
  garbage.term = Term(1);
  garbage.data = "\xff\xff\xff";
  Entry create;
  create.index = LogIndex(4);
  create.term = Term(1);
  create.data = Create(1, 10).SerializeAsString();
  Entry update;
  update.index = LogIndex(5);
  update.term = Term(1);
  update.data = Update(1, 20, 1, {{"k", "v"}}).SerializeAsString();
  auto results = sm_->Apply({conf, empty, garbage, create, update});
  ASSERT_TRUE(results.ok()) << results.status();
  ASSERT_EQ(results->size(), 5u);
  EXPECT_TRUE((*results)[0].ok());
  EXPECT_FALSE((*results)[0]->has_value());
  EXPECT_TRUE((*results)[1].ok());
  EXPECT_FALSE((*results)[1]->has_value());
  EXPECT_EQ((*results)[2].status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(std::any_cast<Session>(*(*results)[4]).version(), 2u);
  EXPECT_EQ(sm_->applied_index(), LogIndex(5));
  EXPECT_EQ(StoredAppliedIndex(), 5u);
  EXPECT_EQ(sm_->applied_conf().learners, std::vector<NodeId>{NodeId(4)});
  // The CF holds the state after the whole batch.
  Reopen();
  EXPECT_EQ(sm_->applied_conf().learners, std::vector<NodeId>{NodeId(4)});
  EXPECT_EQ(table_->Get(H(1))->version(), 2u);
  EXPECT_EQ(table_->Get(H(1))->attributes().at("k"), "v");

  // Already-applied entries are skipped; a gap is an error.
  auto replay = sm_->Apply({update});
  ASSERT_TRUE(replay.ok());
  EXPECT_EQ(table_->Get(H(1))->version(), 2u);
  Entry gap = update;
  gap.index = LogIndex(9);
  EXPECT_FALSE(sm_->Apply({gap}).ok());
  EXPECT_EQ(sm_->applied_index(), LogIndex(5));
}

TEST_F(SessionStateMachineTest, ReopenRecoversAnIdenticalTable) {
  for (int i = 0; i < 300; ++i) {
    ApplySession(Create(i, 1000 + i, absl::StrCat("user", i % 17), 50'000,
                        i % 3 == 0 ? 2000 : 0));
  }
  for (int i = 0; i < 300; i += 5) ApplySession(RevokeByHash(i, 2000));
  for (int i = 1; i < 300; i += 7) {
    (void)ApplyOne(Update(i, 2100, 0, {{"u", std::to_string(i)}}));
  }
  ApplyCount(Touch(2200, {{2, 2200}, {4, 2150}}));
  const auto table_before = DumpTable();
  const auto cf_before = DumpCf();
  const LogIndex applied = sm_->applied_index();
  EXPECT_EQ(table_before, cf_before);
  Reopen();
  EXPECT_EQ(sm_->applied_index(), applied);
  EXPECT_EQ(table_->size(), 300u);
  EXPECT_EQ(DumpTable(), table_before);
  // Indexes are rebuilt too.
  EXPECT_EQ(table_->UserTokenHashes("user3").size(), 18u);
  EXPECT_EQ(table_->TokenHashOf(Sid(42)), H(42));
  EXPECT_EQ(table_->CollectExpired(1 << 30, 0, 1000).size(), 300u);
}

TEST_F(SessionStateMachineTest, ParallelLoadMatchesSerialLoad) {
  for (int i = 0; i < 500; ++i) ApplySession(Create(i, 1000, "u"));
  SessionTable serial(SessionTableOptions{4});
  ASSERT_TRUE(LoadSessions(db_.get(), &serial, 1).ok());
  SessionTable parallel(SessionTableOptions{4});
  ASSERT_TRUE(LoadSessions(db_.get(), &parallel, 3).ok());
  EXPECT_EQ(serial.size(), 500u);
  EXPECT_EQ(parallel.size(), 500u);
  EXPECT_EQ(parallel.UserTokenHashes("u").size(), 500u);
}

TEST_F(SessionStateMachineTest, CorruptRecordFailsOpenWithDataLoss) {
  ApplySession(Create(1, 1000));
  ASSERT_TRUE(db_->db()
                  ->Put(rocksdb::WriteOptions(), db_->sessions_cf(), Hash(2),
                        "\xff\xff\xff")
                  .ok());
  sm_.reset();
  table_ = std::make_unique<SessionTable>();
  auto sm = SessionStateMachine::Open(db_.get(), table_.get());
  ASSERT_FALSE(sm.ok());
  EXPECT_EQ(sm.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(table_->size(), 0u);
}

TEST_F(SessionStateMachineTest, DuplicateSessionIdOnDiskFailsOpenWithDataLoss) {
  ApplySession(Create(1, 1000));
  // A second key holding a record with the same session_id.
  v1::internal::StoredSession twin;
  ASSERT_TRUE(twin.ParseFromString(DumpCf().begin()->second));
  twin.set_token_hash(Hash(2));
  ASSERT_TRUE(db_->db()
                  ->Put(rocksdb::WriteOptions(), db_->sessions_cf(), Hash(2),
                        twin.SerializeAsString())
                  .ok());
  sm_.reset();
  table_ = std::make_unique<SessionTable>();
  auto sm = SessionStateMachine::Open(db_.get(), table_.get());
  ASSERT_FALSE(sm.ok());
  EXPECT_EQ(sm.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(std::string(sm.status().message()), HasSubstr("stored twice"));
  EXPECT_EQ(table_->size(), 0u);
  EXPECT_FALSE(table_->Contains(H(1)));
}

// A second node: its own data dir, snapshot folder, table and state.
// `options` may put its RocksDB files on a PowerCutFileSystem.
struct OtherNode {
  explicit OtherNode(const TempDir& dir,
                     DatabaseOptions options = DatabaseOptions())
      : data(dir.Sub("other")), db_options(std::move(options)) {
    std::filesystem::create_directories(data);
    OpenDatabase();
    files = std::make_unique<SnapshotFiles>(dir.Sub("other-snap"));
    EXPECT_TRUE(files->Init().ok());
    Open();
  }
  // After a power cut: everything reopened from what survived.
  void Restart(testing::PowerCutFileSystem* fs) {
    sm.reset();
    table.reset();
    db.reset();
    EXPECT_TRUE(fs->ApplyPowerLoss().ok());
    OpenDatabase();
    Open();
  }
  void OpenDatabase() {
    auto opened = Database::Open(data, db_options);
    EXPECT_TRUE(opened.ok()) << opened.status();
    db = *std::move(opened);
  }
  void Open() {
    sm.reset();
    table = std::make_unique<SessionTable>();
    SessionStateMachineOptions options;
    options.snapshots = files.get();
    auto machine = SessionStateMachine::Open(db.get(), table.get(), options);
    EXPECT_TRUE(machine.ok()) << machine.status();
    sm = *std::move(machine);
  }
  // What the transport does: stream the image's bytes into this node's
  // folder, checked, under a new name.
  replication::Snapshot Receive(const SnapshotFiles& from,
                                const replication::Snapshot& snapshot) {
    auto ref = DecodeSnapshotRef(snapshot.data);
    EXPECT_TRUE(ref.ok());
    std::ifstream in(from.PathOf(ref->file()), std::ios::binary);
    const std::string bytes((std::istreambuf_iterator<char>(in)),
                            std::istreambuf_iterator<char>());
    auto file = files->NewFile(snapshot.meta.index, snapshot.meta.term, "test");
    EXPECT_TRUE(file.ok());
    SnapshotReceiver receiver(*std::move(file), ref->size());
    for (size_t at = 0; at < bytes.size(); at += 1000) {
      EXPECT_TRUE(
          receiver.Append(std::string_view(bytes).substr(at, 1000)).ok());
    }
    auto local = receiver.Finish();
    EXPECT_TRUE(local.ok()) << local.status();
    replication::Snapshot out = snapshot;
    out.data = EncodeSnapshotRef(*local);
    return out;
  }
  const std::string data;
  const DatabaseOptions db_options;
  std::unique_ptr<Database> db;
  std::unique_ptr<SnapshotFiles> files;
  std::unique_ptr<SessionTable> table;
  std::unique_ptr<SessionStateMachine> sm;
};

// ApplySnapshot's one synced batch survives a power cut: the log below the
// snapshot may be dropped at once, so the state must not need it. (Written
// with sync=false, this test fails.)
TEST_F(SessionStateMachineTest, AppliedSnapshotSurvivesAPowerCut) {
  for (int i = 0; i < 20; ++i) ApplySession(Create(i, 1000 + i, "u"));
  auto snapshot = sm_->CreateSnapshot();
  ASSERT_TRUE(snapshot.ok()) << snapshot.status();

  testing::PowerCutOptions cut;
  cut.after_cut = testing::PowerCutOptions::AfterCut::kKeepRunning;
  auto fs =
      std::make_shared<testing::PowerCutFileSystem>(dir_.Sub("other"), cut);
  DatabaseOptions options;
  options.env = rocksdb::NewCompositeEnv(fs);
  OtherNode other(dir_, options);
  ASSERT_TRUE(
      other.sm->ApplySnapshot(other.Receive(*snapshots_, *snapshot)).ok());
  fs->CutPower();
  other.Restart(fs.get());
  EXPECT_EQ(other.sm->applied_index(), sm_->applied_index());
  EXPECT_EQ(other.table->size(), 20u);
}

// A snapshot install whose synced write fails (a full disk; here every
// write fails) retries it, the table as it was, until StopRetryingWrites.
// It returned the error at once, and the driver aborted the node for it,
// and again at each start while the disk stayed full. At start-up
// (RecoverSnapshot) nothing would reopen the database, so it tries once.
TEST_F(SessionStateMachineTest, ASnapshotWriteThatFailsIsRetriedUntilStopped) {
  for (int i = 0; i < 20; ++i) ApplySession(Create(i, 1000 + i, "u"));
  auto snapshot = sm_->CreateSnapshot();
  ASSERT_TRUE(snapshot.ok()) << snapshot.status();
  auto fs = std::make_shared<testing::PowerCutFileSystem>(
      dir_.Sub("other"), testing::PowerCutOptions());
  DatabaseOptions options;
  options.env = rocksdb::NewCompositeEnv(fs);
  OtherNode other(dir_, options);
  const replication::Snapshot received = other.Receive(*snapshots_, *snapshot);
  fs->CutPower();  // every write fails from here on

  EXPECT_FALSE(other.sm->RecoverSnapshot(received).ok());
  absl::Notification returned;
  absl::Status installed;
  std::thread install([&] {
    installed = other.sm->ApplySnapshot(received);
    returned.Notify();
  });
  EXPECT_FALSE(returned.WaitForNotificationWithTimeout(absl::Milliseconds(300)))
      << "gave up on a failing write: " << installed;
  EXPECT_EQ(other.table->size(), 0u);
  other.sm->StopRetryingWrites();
  install.join();
  EXPECT_FALSE(installed.ok());
  EXPECT_EQ(other.table->size(), 0u);
  EXPECT_EQ(other.sm->applied_index(), LogIndex(0));
}

// The Raft core and the log take the membership from the snapshot, the
// state from its image: an image whose voters are not the snapshot's is
// refused before anything changes. It was installed, and the node's log and
// state named different members.
TEST_F(SessionStateMachineTest, AnImageOfAnotherMembershipIsRefused) {
  for (int i = 0; i < 5; ++i) ApplySession(Create(i, 1000 + i, "u"));
  auto snapshot = sm_->CreateSnapshot();
  ASSERT_TRUE(snapshot.ok()) << snapshot.status();
  OtherNode other(dir_);
  replication::Snapshot received = other.Receive(*snapshots_, *snapshot);
  received.meta.conf_state.voters.push_back(NodeId(9));
  const absl::Status refused = other.sm->ApplySnapshot(received);
  EXPECT_EQ(refused.code(), absl::StatusCode::kDataLoss) << refused;
  EXPECT_EQ(other.table->size(), 0u);
  EXPECT_EQ(other.sm->applied_index(), LogIndex(0));
  // In another order, the same members pass.
  received.meta.conf_state.voters.pop_back();
  std::reverse(received.meta.conf_state.voters.begin(),
               received.meta.conf_state.voters.end());
  EXPECT_TRUE(other.sm->ApplySnapshot(received).ok());
}

TEST_F(SessionStateMachineTest, SnapshotRoundTripThroughAFile) {
  // Membership and member metadata travel with the sessions.
  {
    Entry e;
    e.index = sm_->applied_index() + 1;
    e.term = Term(2);
    e.type = EntryType::kConfChange;
    e.data = replication::EncodeConfChange(
        {replication::ConfChangeType::kPromoteVoter, NodeId(1)});
    ASSERT_TRUE(sm_->Apply({e}).ok());
  }
  Command member;
  member.set_timestamp_ms(500);
  member.mutable_member()->set_kind(v1::internal::MemberCommand::PUBLISH);
  member.mutable_member()->set_node_id(1);
  member.mutable_member()->set_peer_address("127.0.0.1:7001");
  ASSERT_TRUE(ApplyOne(member).ok());
  for (int i = 0; i < 50; ++i) ApplySession(Create(i, 1000 + i, "u"));
  ApplySession(RevokeByHash(7, 3000));
  auto snapshot = sm_->CreateSnapshot();
  ASSERT_TRUE(snapshot.ok()) << snapshot.status();
  EXPECT_EQ(snapshot->meta.index, sm_->applied_index());
  EXPECT_EQ(snapshot->meta.term, Term(1));
  EXPECT_EQ(snapshot->meta.conf_state.voters, std::vector<NodeId>{NodeId(1)});
  auto ref = DecodeSnapshotRef(snapshot->data);
  ASSERT_TRUE(ref.ok());
  EXPECT_TRUE(snapshots_->Verify(*ref).ok());
  const auto table_before = DumpTable();

  OtherNode other(dir_);
  // Something already there is replaced.
  {
    Entry e;
    e.index = LogIndex(1);
    e.term = Term(1);
    e.data = Create(999, 10).SerializeAsString();
    ASSERT_TRUE(other.sm->Apply({e}).ok());
  }
  const replication::Snapshot received = other.Receive(*snapshots_, *snapshot);
  ASSERT_TRUE(other.sm->ApplySnapshot(received).ok());
  EXPECT_EQ(other.sm->applied_index(), sm_->applied_index());
  EXPECT_EQ(other.sm->applied_time_ms(), 3000);
  EXPECT_EQ(other.sm->applied_conf().voters, std::vector<NodeId>{NodeId(1)});
  ASSERT_EQ(other.sm->cluster_state().members_size(), 1);
  EXPECT_EQ(other.sm->cluster_state().members(0).peer_address(),
            "127.0.0.1:7001");
  std::map<std::string, std::string> got;
  other.table->ForEachStored([&](const TokenHash& hash, std::string_view b) {
    got[std::string(TokenHashBytes(hash))] = std::string(b);
  });
  EXPECT_EQ(got, table_before);
  EXPECT_FALSE(other.table->Contains(H(999)));
  // The replicas' digests agree at the same index.
  auto mine = sm_->ComputeDigest();
  auto theirs = other.sm->ComputeDigest();
  ASSERT_TRUE(mine.ok() && theirs.ok());
  EXPECT_EQ(mine->applied_index, theirs->applied_index);
  EXPECT_EQ(mine->sha256_hex, theirs->sha256_hex);
  EXPECT_EQ(mine->sessions, 50u);

  // And it is durable.
  other.Open();
  EXPECT_EQ(other.sm->applied_index(), sm_->applied_index());
  EXPECT_EQ(other.table->size(), 50u);
  EXPECT_EQ(other.sm->applied_conf().voters, std::vector<NodeId>{NodeId(1)});

  // A change on one side shows in the digest.
  ApplySession(RevokeByHash(8, 3100));
  auto changed = sm_->ComputeDigest();
  ASSERT_TRUE(changed.ok());
  EXPECT_NE(changed->sha256_hex, theirs->sha256_hex);
}

TEST_F(SessionStateMachineTest, BadImagesChangeNothing) {
  for (int i = 0; i < 10; ++i) ApplySession(Create(i, 1000 + i, "u"));
  auto snapshot = sm_->CreateSnapshot();
  ASSERT_TRUE(snapshot.ok()) << snapshot.status();
  OtherNode other(dir_);
  for (int i = 100; i < 105; ++i) {
    Entry e;
    e.index = other.sm->applied_index() + 1;
    e.term = Term(1);
    e.data = Create(i, 10).SerializeAsString();
    ASSERT_TRUE(other.sm->Apply({e}).ok());
  }
  const LogIndex other_applied = other.sm->applied_index();
  auto unchanged = [&] {
    EXPECT_EQ(other.table->size(), 5u);
    EXPECT_TRUE(other.table->Contains(H(100)));
    EXPECT_EQ(other.sm->applied_index(), other_applied);
  };

  // Not a reference at all (an image inline, as old versions sent).
  replication::Snapshot bad = *snapshot;
  bad.data = "\x05garbage";
  EXPECT_EQ(other.sm->ApplySnapshot(bad).code(), absl::StatusCode::kDataLoss);
  unchanged();

  // A flipped byte: the checksum fails.
  replication::Snapshot received = other.Receive(*snapshots_, *snapshot);
  {
    auto ref = DecodeSnapshotRef(received.data);
    ASSERT_TRUE(ref.ok());
    std::fstream f(other.files->PathOf(ref->file()),
                   std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(20);
    f.put('\x7f');
  }
  EXPECT_EQ(other.sm->ApplySnapshot(received).code(),
            absl::StatusCode::kDataLoss);
  unchanged();

  // A well-formed image (good checksum) with one good and one bad record.
  {
    v1::internal::SnapshotHeader header;
    header.set_index(7);
    header.set_term(1);
    auto file = other.files->NewFile(LogIndex(7), Term(1), "made");
    ASSERT_TRUE(file.ok());
    SnapshotImageWriter writer(*std::move(file), header);
    v1::internal::StoredSession good;
    good.set_token_hash(Hash(500));
    good.mutable_session()->set_session_id("s500");
    good.mutable_session()->set_user_id("u");
    v1::internal::StoredSession short_hash = good;
    short_hash.set_token_hash("short");
    short_hash.mutable_session()->set_session_id("s501");
    ASSERT_TRUE(writer.AddRecord(good.SerializeAsString()).ok());
    ASSERT_TRUE(writer.AddRecord(short_hash.SerializeAsString()).ok());
    auto ref = writer.Finish();
    ASSERT_TRUE(ref.ok());
    replication::Snapshot made;
    made.meta.index = LogIndex(7);
    made.meta.term = Term(1);
    made.data = EncodeSnapshotRef(*ref);
    EXPECT_EQ(other.sm->ApplySnapshot(made).code(),
              absl::StatusCode::kDataLoss);
    unchanged();
    EXPECT_FALSE(other.table->Contains(H(500)));
    // The header must match the snapshot it claims to be.
    made.meta.index = LogIndex(8);
    EXPECT_EQ(other.sm->ApplySnapshot(made).code(),
              absl::StatusCode::kDataLoss);
    unchanged();
  }
}

// A follower keeps serving LOCAL reads while it installs a snapshot: a
// session present before and after must be found all along (UNKNOWN is a
// logout), and reads must never see the table half built.
TEST_F(SessionStateMachineTest,
       ReadsDuringASnapshotInstallFindEverySessionKept) {
  constexpr int kSessions = 5000;
  std::vector<Entry> creates;
  for (int i = 0; i < kSessions; ++i) {
    Entry e;
    e.index = LogIndex(i + 1);
    e.term = Term(1);
    e.data = Create(i, 1000, absl::StrCat("u", i % 50)).SerializeAsString();
    creates.push_back(std::move(e));
  }
  ASSERT_TRUE(sm_->Apply(creates).ok());
  ApplySession(RevokeByHash(7, 2000));
  ApplySession(Create(kSessions, 2000, "new"));
  auto snapshot = sm_->CreateSnapshot();
  ASSERT_TRUE(snapshot.ok()) << snapshot.status();
  const auto table_before = DumpTable();

  OtherNode other(dir_);
  ASSERT_TRUE(other.sm->Apply(creates).ok());
  {
    Entry e;
    e.index = LogIndex(kSessions + 1);
    e.term = Term(1);
    e.data = Create(kSessions + 1, 1500, "gone").SerializeAsString();
    ASSERT_TRUE(other.sm->Apply({e}).ok());
  }
  const replication::Snapshot received = other.Receive(*snapshots_, *snapshot);

  std::atomic<bool> installed{false};
  std::atomic<int> unknown{0};
  std::atomic<int> reads{0};
  std::thread reader([&] {
    // Bounded: at most a million reads, and one pass after the install.
    for (int i = 0; i < 1'000'000; ++i) {
      const bool last = installed.load();
      const int n = i % kSessions;
      const ValidateOutcome outcome =
          other.table->Validate(H(n), 3000, 0).outcome;
      reads.fetch_add(1);
      if (outcome == ValidateOutcome::kUnknown) unknown.fetch_add(1);
      if (n == 7 && outcome != ValidateOutcome::kValid &&
          outcome != ValidateOutcome::kRevoked) {
        unknown.fetch_add(1);
      }
      if (last) break;
    }
  });
  ASSERT_TRUE(other.sm->ApplySnapshot(received).ok());
  installed.store(true);
  reader.join();
  EXPECT_EQ(unknown.load(), 0) << "of " << reads.load() << " reads";

  std::map<std::string, std::string> got;
  other.table->ForEachStored([&](const TokenHash& hash, std::string_view b) {
    got[std::string(TokenHashBytes(hash))] = std::string(b);
  });
  EXPECT_EQ(got, table_before);
  EXPECT_FALSE(other.table->Contains(H(kSessions + 1)));
  EXPECT_EQ(other.table->size(), static_cast<size_t>(kSessions + 1));
  EXPECT_EQ(other.table->UserTokenHashes("gone").size(), 0u);
  EXPECT_EQ(other.table->UserTokenHashes("new").size(), 1u);
  EXPECT_EQ(other.table->UserTokenHashes("u3").size(),
            static_cast<size_t>(kSessions / 50));
  auto mine = sm_->ComputeDigest();
  auto theirs = other.sm->ComputeDigest();
  ASSERT_TRUE(mine.ok() && theirs.ok());
  EXPECT_EQ(mine->sha256_hex, theirs->sha256_hex);
  // The table matches what a restart loads.
  other.Open();
  std::map<std::string, std::string> reloaded;
  other.table->ForEachStored([&](const TokenHash& hash, std::string_view b) {
    reloaded[std::string(TokenHashBytes(hash))] = std::string(b);
  });
  EXPECT_EQ(reloaded, table_before);
}

TEST_F(SessionStateMachineTest, CreateBatchIsAllOrNothing) {
  ApplySession(Create(1, 1000));
  Command batch;
  batch.set_timestamp_ms(2000);
  for (int i : {10, 11, 12}) {
    *batch.mutable_create_batch()->add_creates() = Create(i, 0).create();
  }
  ApplyResult r = ApplyOne(batch);
  ASSERT_TRUE(r.ok()) << r.status();
  const auto& sessions = std::any_cast<const std::vector<Session>&>(*r);
  ASSERT_EQ(sessions.size(), 3u);
  EXPECT_EQ(sessions[1].session_id(), Sid(11));
  EXPECT_EQ(sessions[1].created_at_ms(), 2000);
  EXPECT_TRUE(table_->Contains(H(12)));

  // A taken token hash (or one twice in the batch): none of them.
  for (int taken : {1, 20}) {
    Command bad;
    bad.set_timestamp_ms(3000);
    *bad.mutable_create_batch()->add_creates() = Create(20, 0).create();
    *bad.mutable_create_batch()->add_creates() = Create(taken, 0).create();
    if (taken == 20) {
      bad.mutable_create_batch()->mutable_creates(1)->set_session_id("other");
    }
    const size_t before = table_->size();
    EXPECT_EQ(ApplyOne(bad).status().code(), absl::StatusCode::kAlreadyExists);
    EXPECT_EQ(table_->size(), before);
    EXPECT_FALSE(table_->Contains(H(20)) && taken == 1);
  }
  Reopen();
  EXPECT_EQ(table_->size(), 4u);
}

TEST_F(SessionStateMachineTest, CreateExpiresTtlAfterItsAppliedTime) {
  Command c = Create(1, 5000);
  c.mutable_create()->set_expires_at_ms(0);
  c.mutable_create()->set_ttl_ms(60000);
  Session s = ApplySession(c);
  EXPECT_EQ(s.created_at_ms(), 5000);
  EXPECT_EQ(s.expires_at_ms(), 65000);
  // Applied time never goes back: a stamp below it counts from it.
  Command later = Create(2, 4000);
  later.mutable_create()->set_expires_at_ms(0);
  later.mutable_create()->set_ttl_ms(1000);
  EXPECT_EQ(ApplySession(later).expires_at_ms(), 6000);
}

// Cluster time on a node is the applied time plus the steady time since it
// was applied. An entry without a later stamp (a new leader's no-op, a
// membership change) must not restart that count from an old applied time:
// after a quiet period and a leader change, every node's clock would stall.
TEST_F(SessionStateMachineTest, EntriesWithoutALaterStampKeepTheTimeSample) {
  ApplySession(Create(1, 5000));
  const AppliedTimeSample before = sm_->applied_time_sample();
  EXPECT_EQ(before.cluster_ms, 5000);
  absl::SleepFor(absl::Milliseconds(5));
  Entry noop;
  noop.index = sm_->applied_index() + 1;
  noop.term = Term(2);
  ASSERT_TRUE(sm_->Apply({noop}).ok());
  Entry conf;
  conf.index = sm_->applied_index() + 1;
  conf.term = Term(2);
  conf.type = EntryType::kConfChange;
  conf.data = replication::EncodeConfChange(
      {replication::ConfChangeType::kAddLearner, NodeId(5)});
  ASSERT_TRUE(sm_->Apply({conf}).ok());
  // An older stamp (an expiry sweep of a session that is not there):
  // applied time stays.
  ASSERT_TRUE(ApplyOne(Expire(4000, {7})).ok());
  const AppliedTimeSample after = sm_->applied_time_sample();
  EXPECT_EQ(after.cluster_ms, 5000);
  EXPECT_EQ(after.steady_ns, before.steady_ns);
  ApplySession(Create(2, 6000));  // a later stamp moves it
  EXPECT_EQ(sm_->applied_time_sample().cluster_ms, 6000);
  EXPECT_GT(sm_->applied_time_sample().steady_ns, before.steady_ns);
}

// AddMember of node `id` at peer address "p<id>".
Command AddMember(uint64_t id) {
  Command member;
  member.set_timestamp_ms(100);
  member.mutable_member()->set_kind(v1::internal::MemberCommand::ADD);
  member.mutable_member()->set_node_id(id);
  member.mutable_member()->set_peer_address(absl::StrCat("p", id));
  return member;
}

TEST_F(SessionStateMachineTest, SettingsAndMembersAreReplicatedState) {
  EXPECT_EQ(sm_->expiry_leeway_ms(), 0);
  EXPECT_FALSE(sm_->cluster_state().leeway_set());
  Command settings;
  settings.set_timestamp_ms(100);
  settings.mutable_settings()->set_expiry_leeway_ms(2500);
  ASSERT_TRUE(ApplyOne(settings).ok());
  EXPECT_EQ(sm_->expiry_leeway_ms(), 2500);
  for (uint64_t id : {3, 1, 2}) ASSERT_TRUE(ApplyOne(AddMember(id)).ok());
  Command publish;
  publish.set_timestamp_ms(100);
  publish.mutable_member()->set_kind(v1::internal::MemberCommand::PUBLISH);
  publish.mutable_member()->set_node_id(2);
  publish.mutable_member()->set_client_address("c2");
  ASSERT_TRUE(ApplyOne(publish).ok());
  Command remove;
  remove.set_timestamp_ms(100);
  remove.mutable_member()->set_kind(v1::internal::MemberCommand::REMOVE);
  remove.mutable_member()->set_node_id(3);
  ASSERT_TRUE(ApplyOne(remove).ok());
  auto check = [&] {
    const v1::internal::ClusterState cluster = sm_->cluster_state();
    ASSERT_EQ(cluster.members_size(), 2);
    EXPECT_EQ(cluster.members(0).node_id(), 1u);  // ordered by id
    EXPECT_FALSE(cluster.members(0).started());
    EXPECT_EQ(cluster.members(1).node_id(), 2u);
    EXPECT_TRUE(cluster.members(1).started());
    EXPECT_EQ(cluster.members(1).peer_address(), "p2");
    EXPECT_EQ(cluster.members(1).client_address(), "c2");
    EXPECT_TRUE(cluster.leeway_set());
    EXPECT_EQ(sm_->expiry_leeway_ms(), 2500);
  };
  check();
  Reopen();  // durable
  check();
  // Added again (after a removal that did not reach the member table, say):
  // a new member that has not run yet.
  Command again;
  again.set_timestamp_ms(100);
  again.mutable_member()->set_kind(v1::internal::MemberCommand::ADD);
  again.mutable_member()->set_node_id(2);
  ASSERT_TRUE(ApplyOne(again).ok());
  EXPECT_FALSE(sm_->cluster_state().members(1).started());
}

// A removal's configuration change takes the member's row out and lists it
// as removed, on every replica at once: a command after it might never
// come (a removed leader cannot propose one). Its learner change, when
// added again, unlists it.
TEST_F(SessionStateMachineTest,
       ARemovalListsTheMemberAsRemovedUntilAddedAgain) {
  for (uint64_t id : {2, 3, 4}) ASSERT_TRUE(ApplyOne(AddMember(id)).ok());
  for (uint64_t id : {4, 2, 3}) {
    ApplyConfChange(replication::ConfChangeType::kPromoteVoter, id);
  }
  ApplyConfChange(replication::ConfChangeType::kRemoveNode, 4);
  ApplyConfChange(replication::ConfChangeType::kRemoveNode, 2);
  auto removed = [&] {
    const v1::internal::ClusterState cluster = sm_->cluster_state();
    return std::vector<uint64_t>(cluster.removed().begin(),
                                 cluster.removed().end());
  };
  EXPECT_EQ(removed(), (std::vector<uint64_t>{2, 4}));  // ascending
  ASSERT_EQ(sm_->cluster_state().members_size(), 1);
  EXPECT_EQ(sm_->cluster_state().members(0).node_id(), 3u);
  Reopen();  // durable
  EXPECT_EQ(removed(), (std::vector<uint64_t>{2, 4}));
  // A removed node that announces itself (it has not learned of its
  // removal yet) gets no member row back.
  Command publish;
  publish.set_timestamp_ms(100);
  publish.mutable_member()->set_kind(v1::internal::MemberCommand::PUBLISH);
  publish.mutable_member()->set_node_id(2);
  publish.mutable_member()->set_peer_address("p2");
  EXPECT_EQ(ApplyOne(publish).status().code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(sm_->cluster_state().members_size(), 1);
  EXPECT_EQ(removed(), (std::vector<uint64_t>{2, 4}));
  // AddMember's address row leaves it listed: the learner change that
  // follows may be refused (another change pending), and the peer service
  // must then go on refusing the removed node. Applying that change
  // unlists it.
  ASSERT_TRUE(ApplyOne(AddMember(4)).ok());
  EXPECT_EQ(removed(), (std::vector<uint64_t>{2, 4}));
  ApplyConfChange(replication::ConfChangeType::kAddLearner, 4);
  EXPECT_EQ(removed(), (std::vector<uint64_t>{2}));
}

// AddMember checks the view of the node it reached, which may be behind;
// the entry itself refuses a node that is a member by then, and keeps its
// row: its addresses, and that it ran (which keeps it from rejoining on an
// empty data dir).
TEST_F(SessionStateMachineTest, AddingAMemberAgainIsRefusedAndChangesNothing) {
  ASSERT_TRUE(ApplyOne(AddMember(3)).ok());
  Command publish;
  publish.set_timestamp_ms(100);
  publish.mutable_member()->set_kind(v1::internal::MemberCommand::PUBLISH);
  publish.mutable_member()->set_node_id(3);
  ASSERT_TRUE(ApplyOne(publish).ok());
  ApplyConfChange(replication::ConfChangeType::kAddLearner, 3);
  for (auto type : {replication::ConfChangeType::kAddLearner,
                    replication::ConfChangeType::kPromoteVoter}) {
    if (type == replication::ConfChangeType::kPromoteVoter) {
      ApplyConfChange(type, 3);
    }
    Command again = AddMember(3);
    again.mutable_member()->set_peer_address("elsewhere");
    const ApplyResult refused = ApplyOne(again);
    EXPECT_EQ(refused.status().code(), absl::StatusCode::kFailedPrecondition);
    EXPECT_EQ(refused.status().message(), "node 3 is already a member");
    const v1::internal::ClusterState cluster = sm_->cluster_state();
    ASSERT_EQ(cluster.members_size(), 1);
    EXPECT_EQ(cluster.members(0).peer_address(), "p3");
    EXPECT_TRUE(cluster.members(0).started());
  }
}

// A member's published command level is kept in the member table (and
// replaced by its next PUBLISH); added again, it has published none. The
// lowest over the configuration gates commands an older binary would not
// apply (storage/command_level.h).
TEST_F(SessionStateMachineTest, MembersPublishTheirCommandLevel) {
  auto publish = [&](uint64_t node, uint32_t level) {
    Command c;
    c.set_timestamp_ms(100);
    c.mutable_member()->set_kind(v1::internal::MemberCommand::PUBLISH);
    c.mutable_member()->set_node_id(node);
    c.mutable_member()->set_command_level(level);
    ASSERT_TRUE(ApplyOne(c).ok());
  };
  replication::ConfState conf;
  conf.voters = {NodeId(1), NodeId(2)};
  conf.learners = {NodeId(3)};
  publish(1, kCommandLevel);
  publish(2, 1);
  // Node 3 never published: it counts as 0, the lowest.
  std::optional<LowestCommandLevel> lowest =
      LowestPublishedLevel(sm_->cluster_state(), conf);
  ASSERT_TRUE(lowest.has_value());
  EXPECT_EQ(lowest->node, NodeId(3));
  EXPECT_EQ(lowest->level, 0u);
  EXPECT_FALSE(EveryMemberApplies(sm_->cluster_state(), conf, 1));
  publish(3, kCommandLevel);
  lowest = LowestPublishedLevel(sm_->cluster_state(), conf);
  EXPECT_EQ(lowest->node, NodeId(2));
  EXPECT_EQ(lowest->level, 1u);
  EXPECT_TRUE(EveryMemberApplies(sm_->cluster_state(), conf, 1));
  EXPECT_FALSE(EveryMemberApplies(sm_->cluster_state(), conf, 2));
  publish(2, kCommandLevel);  // upgraded and published again
  EXPECT_TRUE(EveryMemberApplies(sm_->cluster_state(), conf, kCommandLevel));
  Reopen();  // durable
  lowest = LowestPublishedLevel(sm_->cluster_state(), conf);
  EXPECT_EQ(lowest->level, kCommandLevel);
  // Removed and added again: a new member that has not run.
  ASSERT_TRUE(ApplyOne(AddMember(4)).ok());
  conf.learners.push_back(NodeId(4));
  EXPECT_EQ(LowestPublishedLevel(sm_->cluster_state(), conf)->node, NodeId(4));
  EXPECT_FALSE(
      LowestPublishedLevel(sm_->cluster_state(), replication::ConfState())
          .has_value());
  EXPECT_FALSE(
      EveryMemberApplies(sm_->cluster_state(), replication::ConfState(), 0));
}

// ---------------------------------------------------------------------------
// Flushes and bulk revocations (storage/revocations.h)

v1::SessionSelector All() {
  v1::SessionSelector selector;
  selector.mutable_all();
  return selector;
}

Command Prepare(const std::string& token, const v1::SessionSelector& selector,
                int64_t ts, int64_t retention_ms = 86'400'000) {
  Command c;
  c.set_timestamp_ms(ts);
  auto* prepare = c.mutable_bulk_revoke()->mutable_prepare();
  prepare->set_confirmation_token(token);
  *prepare->mutable_selector() = selector;
  prepare->set_reason("flushed");
  prepare->set_retention_ms(retention_ms);
  return c;
}

Command Confirm(const std::string& token, const v1::SessionSelector& selector,
                int64_t ts) {
  Command c;
  c.set_timestamp_ms(ts);
  auto* confirm = c.mutable_bulk_revoke()->mutable_confirm();
  confirm->set_confirmation_token(token);
  *confirm->mutable_selector() = selector;
  return c;
}

Command Restore(uint64_t id, int64_t ts) {
  Command c;
  c.set_timestamp_ms(ts);
  c.mutable_restore_revocation()->set_revocation_id(id);
  return c;
}

Command Purge(uint64_t id, int64_t ts) {
  Command c;
  c.set_timestamp_ms(ts);
  c.mutable_purge_revocations()->add_revocation_ids(id);
  return c;
}

class RevocationTest : public SessionStateMachineTest {
 protected:
  v1::Revocation ApplyRevocation(const Command& command) {
    ApplyResult r = ApplyOne(command);
    EXPECT_TRUE(r.ok()) << r.status();
    if (!r.ok()) return v1::Revocation();
    return std::any_cast<v1::Revocation>(*r);
  }
  // Flushes everything live at `ts` (both steps).
  v1::Revocation Flush(int64_t ts, const std::string& token = "tok") {
    EXPECT_TRUE(ApplyOne(Prepare(token, All(), ts)).ok());
    return ApplyRevocation(Confirm(token, All(), ts + 1));
  }
  ValidateOutcome OutcomeOf(int i, int64_t now) {
    return table_->Validate(H(i), now, 0).outcome;
  }
};

Command CatchUp(int64_t ts, int64_t since_ms, int64_t to_ms,
                bool move_windows) {
  Command c;
  c.set_timestamp_ms(ts);
  c.mutable_clock_catch_up()->set_since_ms(since_ms);
  c.mutable_clock_catch_up()->set_to_ms(to_ms);
  c.mutable_clock_catch_up()->set_move_windows(move_windows);
  return c;
}

// A member ran through the others' outage from applied time 1000; the
// revocation and the flush preview made in the lag were stamped on the
// lagging clock. A catch-up with move_windows (command level 3) moves their
// windows by the jump, as it moves the lag's sessions: the flush is still
// undoable for its whole retention, its preview still confirmable for its
// 60 s. One made before the lag keeps its window.
TEST_F(RevocationTest, ACatchUpMovesTheWindowsOpenedInTheLag) {
  ApplySession(Create(1, 900, "alice", 1'000'000'000));
  const v1::Revocation before = Flush(900, "tok-before");
  ApplySession(Create(2, 2000, "bob", 1'000'000'000));
  const v1::Revocation lag = Flush(2000, "tok-lag");
  ASSERT_TRUE(ApplyOne(Prepare("tok-pending", All(), 2100)).ok());
  constexpr int64_t kJump = 3'600'000;
  ASSERT_TRUE(
      ApplyOne(CatchUp(2200, 1000, 2200 + kJump, /*move_windows=*/true)).ok());
  auto check = [&] {
    EXPECT_EQ(sm_->revocation(before.id())->restorable_until_ms(),
              before.restorable_until_ms());
    EXPECT_EQ(sm_->revocation(lag.id())->restorable_until_ms(),
              lag.restorable_until_ms() + kJump);
    ASSERT_EQ(sm_->cluster_state().pending_bulk_revokes_size(), 1);
    EXPECT_EQ(sm_->cluster_state().pending_bulk_revokes(0).expires_at_ms(),
              2100 + kBulkRevokeConfirmMs + kJump);
  };
  check();
  Reopen();  // stored as moved
  check();
  // 30 s after the jump the preview is still confirmable.
  EXPECT_TRUE(
      ApplyOne(Confirm("tok-pending", All(), 2200 + kJump + 30'000)).ok());
}

// The same catch-up as an older leader proposes it (level 2, no
// move_windows): nothing but the sessions moves, as before level 3.
TEST_F(RevocationTest, ACatchUpWithoutMoveWindowsMovesOnlySessions) {
  ApplySession(Create(2, 2000, "bob", 1'000'000'000));
  const v1::Revocation lag = Flush(2000, "tok-lag");
  ASSERT_TRUE(ApplyOne(Prepare("tok-pending", All(), 2100)).ok());
  ASSERT_TRUE(ApplyOne(CatchUp(2200, 1000, 2200 + 3'600'000,
                               /*move_windows=*/false))
                  .ok());
  EXPECT_EQ(sm_->revocation(lag.id())->restorable_until_ms(),
            lag.restorable_until_ms());
  EXPECT_EQ(sm_->cluster_state().pending_bulk_revokes(0).expires_at_ms(),
            2100 + kBulkRevokeConfirmMs);
}

// The distinct users a revocation counts are replicated (Revocation.users),
// so the function that stands in for a user id is pinned: FNV-1a's own test
// values. A replica built with another one would count other users.
TEST(UserCountKeyTest, IsFnv1a64) {
  EXPECT_EQ(UserCountKey(""), 0xcbf29ce484222325ull);
  EXPECT_EQ(UserCountKey("a"), 0xaf63dc4c8601ec8cull);
  EXPECT_EQ(UserCountKey("foobar"), 0x85944171f73967e8ull);
  EXPECT_NE(UserCountKey("alice"), UserCountKey("bob"));
}

TEST_F(RevocationTest, AFlushWaitsForItsTokenAndIsUndoneExactly) {
  for (int i = 0; i < 10; ++i) {
    ApplySession(Create(i, 1000 + i, i % 2 ? "alice" : "bob"));
  }
  ApplySession(RevokeByHash(3, 1100));  // one by one: final
  const auto before = DumpTable();

  // Step one registers a preview; a wrong token or another selection is
  // refused and changes no session.
  ApplyResult pending = ApplyOne(Prepare("right", All(), 2000));
  ASSERT_TRUE(pending.ok()) << pending.status();
  EXPECT_EQ(
      std::any_cast<v1::internal::PendingBulkRevoke>(*pending).expires_at_ms(),
      2000 + kBulkRevokeConfirmMs);
  ApplyResult wrong = ApplyOne(Confirm("wrong", All(), 2001));
  EXPECT_EQ(wrong.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(wrong.status().message(), HasSubstr("new preview"));
  v1::SessionSelector users;
  users.mutable_users()->add_user_ids("bob");
  ApplyResult other = ApplyOne(Confirm("right", users, 2002));
  EXPECT_EQ(other.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(other.status().message(), HasSubstr("another selection"));
  EXPECT_EQ(DumpTable(), before);
  EXPECT_TRUE(sm_->revocations().empty());

  const v1::Revocation flush = ApplyRevocation(Confirm("right", All(), 2003));
  EXPECT_EQ(flush.id(), sm_->applied_index().value());
  EXPECT_EQ(flush.sessions(), 9u);  // all but the one revoked before
  EXPECT_EQ(flush.users(), 2u);
  EXPECT_EQ(flush.revoked_at_ms(), 2003);
  EXPECT_EQ(flush.restorable_until_ms(), 2003 + 86'400'000);
  EXPECT_EQ(flush.state(), v1::Revocation::RETAINED);
  for (int i = 0; i < 10; ++i) {
    EXPECT_EQ(OutcomeOf(i, 3000), ValidateOutcome::kRevoked) << i;
  }
  EXPECT_EQ(table_->Get(H(0))->revoked_by(0), flush.id());
  EXPECT_TRUE(table_->Get(H(3))->revoked_by().empty());
  // The token is spent.
  EXPECT_EQ(ApplyOne(Confirm("right", All(), 2004)).status().code(),
            absl::StatusCode::kFailedPrecondition);

  // After the flush: a new session, and a flushed one revoked for good.
  ApplySession(Create(20, 2500));
  ApplySession(RevokeByHash(4, 2600, "user logged out"));
  const std::string new_session = DumpTable()[Hash(20)];

  Reopen();  // all of it durable
  ASSERT_EQ(sm_->revocations().size(), 1u);
  const v1::Revocation restored = ApplyRevocation(Restore(flush.id(), 3000));
  EXPECT_EQ(restored.state(), v1::Revocation::RESTORED);
  EXPECT_EQ(restored.restored(), 8u);
  EXPECT_EQ(restored.stayed_expired(), 0u);
  EXPECT_EQ(restored.restored_at_ms(), 3000);
  const auto after = DumpTable();
  for (int i = 0; i < 10; ++i) {
    if (i == 3 || i == 4) {
      EXPECT_EQ(OutcomeOf(i, 3000), ValidateOutcome::kRevoked) << i;
      continue;
    }
    EXPECT_EQ(OutcomeOf(i, 3000), ValidateOutcome::kValid) << i;
    // Token, attributes, expiry, version: byte for byte as before.
    EXPECT_EQ(after.at(Hash(i)), before.at(Hash(i))) << i;
  }
  EXPECT_EQ(after.at(Hash(20)), new_session);
  EXPECT_EQ(DumpCf(), after);
  // Twice is refused, and an unknown id names what to do.
  ApplyResult again = ApplyOne(Restore(flush.id(), 3001));
  EXPECT_EQ(again.status().code(), absl::StatusCode::kFailedPrecondition);
  ApplyResult unknown = ApplyOne(Restore(12345, 3002));
  EXPECT_EQ(unknown.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(unknown.status().message(), HasSubstr("flushes list"));
}

TEST_F(RevocationTest, AConfirmationAfterSixtySecondsChangesNothing) {
  for (int i = 0; i < 3; ++i) ApplySession(Create(i, 1000));
  ASSERT_TRUE(ApplyOne(Prepare("t", All(), 2000)).ok());
  const auto before = DumpTable();
  ApplyResult late = ApplyOne(Confirm("t", All(), 2000 + kBulkRevokeConfirmMs));
  EXPECT_EQ(late.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(DumpTable(), before);
  EXPECT_TRUE(sm_->revocations().empty());
  EXPECT_EQ(sm_->cluster_state().pending_bulk_revokes_size(), 0);
}

TEST_F(RevocationTest, OverlappingRevocationsHoldUntilBothAreUndone) {
  for (int i = 0; i < 6; ++i) ApplySession(Create(i, 1000));
  Command tagged = Update(1, 1100, 0, {{"tenant", "acme"}});
  ApplySession(tagged);
  const v1::Revocation flush = Flush(2000);
  v1::SessionSelector acme;
  acme.mutable_attribute()->set_key("tenant");
  acme.mutable_attribute()->set_value("acme");
  ASSERT_TRUE(ApplyOne(Prepare("a", acme, 2100)).ok());
  const v1::Revocation breach = ApplyRevocation(Confirm("a", acme, 2101));
  EXPECT_EQ(breach.sessions(), 1u);  // held by the flush, still taken
  ApplyRevocation(Restore(flush.id(), 2200));
  EXPECT_EQ(OutcomeOf(0, 2300), ValidateOutcome::kValid);
  EXPECT_EQ(OutcomeOf(1, 2300), ValidateOutcome::kRevoked);  // breach holds it
  ApplyRevocation(Restore(breach.id(), 2400));
  EXPECT_EQ(OutcomeOf(1, 2500), ValidateOutcome::kValid);
}

// RevokeUserSessions after a flush revokes the user's flushed sessions for
// good, as a revocation one by one does: restoring the flush must not bring
// them back. The kept session and other users' sessions are restored.
TEST_F(RevocationTest, AUserRevokedAfterAFlushStaysRevokedWhenItIsRestored) {
  ApplySession(Create(1, 1000, "ursula"));
  ApplySession(Create(2, 1000, "ursula"));
  ApplySession(Create(3, 1000, "ursula"));
  ApplySession(Create(4, 1000, "victor"));
  const v1::Revocation flush = Flush(2000);
  EXPECT_EQ(ApplyCount(RevokeUser("ursula", 3000, /*keep=*/3)), 2u);
  EXPECT_TRUE(table_->Get(H(1))->revoked_by().empty());
  EXPECT_EQ(table_->Get(H(1))->revoke_reason(), "everywhere");
  ApplyRevocation(Restore(flush.id(), 4000));
  EXPECT_EQ(OutcomeOf(1, 5000), ValidateOutcome::kRevoked);
  EXPECT_EQ(OutcomeOf(2, 5000), ValidateOutcome::kRevoked);
  EXPECT_EQ(OutcomeOf(3, 5000), ValidateOutcome::kValid);
  EXPECT_EQ(OutcomeOf(4, 5000), ValidateOutcome::kValid);
  // Revoked for good already: a second user revocation counts nothing.
  EXPECT_EQ(ApplyCount(RevokeUser("ursula", 6000, /*keep=*/3)), 0u);
}

TEST_F(RevocationTest, CreatedBeforeAndUsersSelectors) {
  ApplySession(Create(0, 1000, "ann"));
  ApplySession(Create(1, 1000, "ben"));
  ApplySession(Create(2, 5000, "ann"));
  v1::SessionSelector before;
  before.set_created_before_ms(4000);
  ASSERT_TRUE(ApplyOne(Prepare("b", before, 6000)).ok());
  const v1::Revocation old = ApplyRevocation(Confirm("b", before, 6001));
  EXPECT_EQ(old.sessions(), 2u);
  EXPECT_EQ(OutcomeOf(2, 7000), ValidateOutcome::kValid);
  ApplyRevocation(Restore(old.id(), 6500));
  v1::SessionSelector users;
  users.mutable_users()->add_user_ids("ann");
  users.mutable_users()->add_user_ids("ann");
  users.mutable_users()->add_user_ids("nobody");
  ASSERT_TRUE(ApplyOne(Prepare("u", users, 7000)).ok());
  const v1::Revocation ann = ApplyRevocation(Confirm("u", users, 7001));
  EXPECT_EQ(ann.sessions(), 2u);
  EXPECT_EQ(ann.users(), 1u);
  EXPECT_EQ(OutcomeOf(1, 7100), ValidateOutcome::kValid);
  EXPECT_EQ(OutcomeOf(2, 7100), ValidateOutcome::kRevoked);
  // A selector that takes nothing well defined is refused at step one.
  v1::SessionSelector empty;
  EXPECT_EQ(ApplyOne(Prepare("e", empty, 7200)).status().code(),
            absl::StatusCode::kInvalidArgument);
}

// A revocation takes sessions already expired but not yet swept. Such a
// session can come back to use: a touch judged on a node cut off from the
// leader brings an idle one back, and the expiry breaker's freeze any of
// them. One that a revocation skipped then validated VALID after its user
// had logged out everywhere (or after a flush).
TEST_F(RevocationTest, ARevocationTakesExpiredSessionsSoNoneComesBack) {
  // Idle timeout 500 from 1000: idle-expired from 1500 on.
  ApplySession(Create(1, 1000, "alice", 100'000, 500));
  ApplySession(Create(2, 1000, "bob", 100'000, 500));
  ApplySession(Create(3, 1000, "carol", 100'000, 500));
  ApplySession(Create(4, 1000, "dave", 100'000));  // no idle timeout
  // Expired ones are taken, not counted.
  EXPECT_EQ(ApplyCount(RevokeUser("alice", 2000)), 0u);
  Command everywhere = RevokeUser("bob", 2000);
  everywhere.mutable_revoke_user()->set_retention_ms(60'000);
  EXPECT_EQ(ApplyCount(everywhere), 0u);
  // Their users' activity, judged while cut off (at 1200, alive then).
  const auto touch_judged_at_1200 = [](int64_t ts, std::vector<int> which) {
    std::vector<std::pair<int, int64_t>> touches;
    for (int i : which) touches.emplace_back(i, ts - 50);
    Command touch = Touch(ts, touches);
    for (auto& t : *touch.mutable_touch()->mutable_touches()) {
      t.set_idle_judged_at_ms(1200);
    }
    return touch;
  };
  EXPECT_EQ(ApplyCount(touch_judged_at_1200(2100, {1, 2})), 0u);
  EXPECT_EQ(OutcomeOf(1, 2100), ValidateOutcome::kRevoked);
  EXPECT_EQ(OutcomeOf(2, 2100), ValidateOutcome::kRevoked);

  const v1::Revocation flush = Flush(2200);
  EXPECT_EQ(flush.sessions(), 1u);  // dave's
  EXPECT_EQ(flush.users(), 1u);
  EXPECT_EQ(ApplyOne(touch_judged_at_1200(2300, {3})).status().code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(OutcomeOf(3, 2300), ValidateOutcome::kRevoked);
  // Restoring the flush gives back what it held, not what had expired.
  ApplyRevocation(Restore(flush.id(), 2400));
  EXPECT_EQ(OutcomeOf(3, 2400), ValidateOutcome::kRevoked);
  EXPECT_EQ(OutcomeOf(4, 2400), ValidateOutcome::kValid);
}

TEST_F(RevocationTest, RestorableRevokeUserAndSessionsThatExpiredMeanwhile) {
  ApplySession(Create(0, 1000, "carol", /*expires_at=*/100'000));
  ApplySession(Create(1, 1000, "carol", /*expires_at=*/5'000));
  ApplySession(Create(2, 1000, "carol", /*expires_at=*/100'000));
  Command revoke_user = RevokeUser("carol", 2000, /*keep=*/2);
  revoke_user.mutable_revoke_user()->set_retention_ms(60'000);
  const v1::Revocation everywhere = ApplyRevocation(revoke_user);
  EXPECT_EQ(everywhere.sessions(), 2u);
  EXPECT_EQ(everywhere.reason(), "everywhere");
  EXPECT_EQ(everywhere.selector().user().user_id(), "carol");
  const v1::Revocation restored =
      ApplyRevocation(Restore(everywhere.id(), 10'000));
  EXPECT_EQ(restored.restored(), 1u);
  EXPECT_EQ(restored.stayed_expired(), 1u);
  EXPECT_EQ(OutcomeOf(0, 10'000), ValidateOutcome::kValid);
  EXPECT_EQ(OutcomeOf(1, 10'000), ValidateOutcome::kExpired);
  // Nothing to revoke: no record, a count of 0.
  Command none = RevokeUser("nobody", 11'000);
  none.mutable_revoke_user()->set_retention_ms(60'000);
  EXPECT_EQ(ApplyCount(none), 0u);
  // Without a retention (commands of earlier versions): final, as before.
  EXPECT_EQ(ApplyCount(RevokeUser("carol", 12'000)), 2u);
  EXPECT_TRUE(table_->Get(H(0))->revoked_by().empty());
}

// A held session's idle time does not run: restored, it gets back what it
// had left. It used to idle out while held (a 30-minute idle timeout made
// a flush final for those sessions after 30 minutes), and the sweeper
// removed it; its absolute expiry still counts. Held by two, it gets back
// the whole time since the first, whichever is restored first.
TEST_F(RevocationTest, HeldSessionsDoNotIdleOutAndGetTheirIdleTimeBack) {
  // Idle timeout 2 s, last seen at 1000; session 2 expires for good at 9000.
  ApplySession(Create(0, 1000, "dora", /*expires_at=*/100'000, /*idle=*/2000));
  ApplySession(Create(1, 1000, "dora", /*expires_at=*/100'000, /*idle=*/2000));
  ApplySession(Create(2, 1000, "dora", /*expires_at=*/9'000, /*idle=*/2000));
  const v1::Revocation flush = Flush(2000);
  ASSERT_EQ(flush.sessions(), 3u);
  v1::SessionSelector dora;
  dora.mutable_users()->add_user_ids("dora");
  ASSERT_TRUE(ApplyOne(Prepare("b", dora, 6000)).ok());
  const v1::Revocation bulk = ApplyRevocation(Confirm("b", dora, 6001));
  EXPECT_EQ(bulk.sessions(), 3u);  // held, not idled out: held by both now
  // Long past their idle deadline (3000): neither swept nor collected.
  EXPECT_TRUE(table_->CollectExpired(8000, 0, 100).empty());
  EXPECT_EQ(ApplyCount(Expire(8000, {0, 1, 2})), 0u);
  // The flush (confirmed at 2001) goes first, at 8000: still held since
  // 6001 by the bulk revocation, so 4000 ms come back now.
  const v1::Revocation first = ApplyRevocation(Restore(flush.id(), 8000));
  EXPECT_EQ(first.restored(), 0u);
  EXPECT_EQ(table_->Get(H(0))->last_seen_at_ms(), 5000);
  // The bulk revocation at 20'000: the rest (13'999 ms) comes back;
  // session 2's absolute expiry passed meanwhile.
  const v1::Revocation second = ApplyRevocation(Restore(bulk.id(), 20'000));
  EXPECT_EQ(second.restored(), 2u);
  EXPECT_EQ(second.stayed_expired(), 1u);
  EXPECT_EQ(table_->Get(H(0))->last_seen_at_ms(), 18'999);
  EXPECT_EQ(OutcomeOf(0, 20'000), ValidateOutcome::kValid);
  EXPECT_EQ(OutcomeOf(1, 20'998), ValidateOutcome::kValid);
  EXPECT_EQ(OutcomeOf(1, 20'999), ValidateOutcome::kExpired);
  EXPECT_EQ(OutcomeOf(2, 20'000), ValidateOutcome::kExpired);
  // The restored last_seen is replicated state: it survives a restart.
  Reopen();
  EXPECT_EQ(table_->Get(H(1))->last_seen_at_ms(), 18'999);
}

TEST_F(RevocationTest, APurgeWaitsForTheRetentionThenRemovesWhatItHeld) {
  for (int i = 0; i < 4; ++i) ApplySession(Create(i, 1000));
  ASSERT_TRUE(ApplyOne(Prepare("p", All(), 2000, /*retention_ms=*/5000)).ok());
  const v1::Revocation flush = ApplyRevocation(Confirm("p", All(), 2001));
  ApplySession(Create(9, 3000));
  EXPECT_EQ(sm_->RevocationsDueForPurge(6000, 10).size(), 0u);
  EXPECT_EQ(ApplyCount(Purge(flush.id(), 6000)), 0u);  // too early
  EXPECT_EQ(table_->size(), 5u);
  EXPECT_EQ(sm_->RevocationsDueForPurge(7001, 10),
            std::vector<uint64_t>{flush.id()});
  // Past its retention a flush is final, purged or not yet: no restore.
  const auto cf_before = DumpCf();
  const ApplyResult late = ApplyOne(Restore(flush.id(), 7001));
  EXPECT_EQ(late.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(late.status().message()),
              HasSubstr("can no longer be restored"));
  EXPECT_EQ(DumpCf(), cf_before);
  EXPECT_EQ(OutcomeOf(0, 7001), ValidateOutcome::kRevoked);
  EXPECT_EQ(ApplyCount(Purge(flush.id(), 7001)), 4u);
  EXPECT_EQ(table_->size(), 1u);
  EXPECT_TRUE(sm_->revocations().empty());
  EXPECT_EQ(DumpCf(), DumpTable());
  Reopen();
  EXPECT_TRUE(sm_->revocations().empty());
  EXPECT_EQ(table_->size(), 1u);
}

TEST_F(RevocationTest, ASnapshotCarriesTheRetainedGenerations) {
  for (int i = 0; i < 20; ++i) ApplySession(Create(i, 1000, "u"));
  const v1::Revocation flush = Flush(2000);
  ASSERT_TRUE(ApplyOne(Prepare("later", All(), 2100)).ok());  // pending
  auto snapshot = sm_->CreateSnapshot();
  ASSERT_TRUE(snapshot.ok()) << snapshot.status();
  OtherNode other(dir_);
  ASSERT_TRUE(
      other.sm->ApplySnapshot(other.Receive(*snapshots_, *snapshot)).ok());
  ASSERT_EQ(other.sm->revocations().size(), 1u);
  EXPECT_TRUE(MessageDifferencer::Equals(other.sm->revocations()[0],
                                         sm_->revocations()[0]));
  EXPECT_EQ(other.sm->cluster_state().pending_bulk_revokes_size(), 1);
  auto mine = sm_->ComputeDigest();
  auto theirs = other.sm->ComputeDigest();
  ASSERT_TRUE(mine.ok() && theirs.ok());
  EXPECT_EQ(mine->sha256_hex, theirs->sha256_hex);
  // The digest sees the records: a restore changes it.
  ApplyRevocation(Restore(flush.id(), 3000));
  auto restored = sm_->ComputeDigest();
  ASSERT_TRUE(restored.ok());
  EXPECT_NE(restored->sha256_hex, theirs->sha256_hex);
  // And the other node restores the same way.
  other.Open();
  ASSERT_EQ(other.sm->revocations().size(), 1u);
}

// The expiry breaker's replicated state (server/expiry_breaker.h): while
// open, every expiry decision of the state machine (and ExpiryNowMs, which
// reads use) is taken at the frozen time; closing needs the opening's id;
// restart and snapshot keep it.
Command OpenBreaker(int64_t ts, int64_t frozen_at) {
  Command c;
  c.set_timestamp_ms(ts);
  c.mutable_expiry_breaker()->mutable_open()->set_frozen_at_ms(frozen_at);
  c.mutable_expiry_breaker()->mutable_open()->set_reason("test");
  return c;
}

Command CloseBreaker(int64_t ts, uint64_t id) {
  Command c;
  c.set_timestamp_ms(ts);
  c.mutable_expiry_breaker()->mutable_close()->set_id(id);
  c.mutable_expiry_breaker()->mutable_close()->set_closed_by("resumed");
  return c;
}

// Held time is real time: a session flushed while the expiry breaker was
// open and restored later gets back the idle time since the flush, up to
// the applied time, not up to the breaker's frozen time (found in review:
// it got nothing back, and at the breaker's resume it expired). Command
// level 4; an entry without the field gives back as before, so replicas
// of both levels apply it alike.
TEST_F(RevocationTest, ARestoreGivesBackTheTimeHeldWhileTheBreakerWasOpen) {
  // Idle timeout 5 s, last seen at 1000.
  ApplySession(Create(0, 1000, "erin", 100'000, /*idle=*/5000));
  ApplySession(Create(1, 1000, "fred", 100'000, /*idle=*/5000));
  ASSERT_TRUE(ApplyOne(OpenBreaker(1500, /*frozen_at=*/1500)).ok());
  const auto revoke = [&](const std::string& user, int64_t ts) {
    v1::SessionSelector selector;
    selector.mutable_users()->add_user_ids(user);
    EXPECT_TRUE(ApplyOne(Prepare(user, selector, ts)).ok());
    return ApplyRevocation(Confirm(user, selector, ts + 1));
  };
  const v1::Revocation erin = revoke("erin", 2000);  // held from 2001
  const v1::Revocation fred = revoke("fred", 2000);
  Command newer = Restore(erin.id(), 12'000);
  newer.mutable_restore_revocation()->set_give_back_to_applied_time(true);
  newer.set_min_level(kRestoreGivesBackAppliedTimeLevel);
  EXPECT_EQ(ApplyRevocation(newer).restored(), 1u);
  EXPECT_EQ(table_->Get(H(0))->last_seen_at_ms(), 1000 + (12'000 - 2001));
  EXPECT_EQ(ApplyRevocation(Restore(fred.id(), 12'000)).restored(), 1u);
  EXPECT_EQ(table_->Get(H(1))->last_seen_at_ms(), 1000);  // as before
  // Judged at 14'000, as once the breaker is resumed: erin's idle deadline
  // (15'999) is ahead, fred's (6000) long past.
  EXPECT_EQ(OutcomeOf(0, 14'000), ValidateOutcome::kValid);
  EXPECT_EQ(OutcomeOf(1, 14'000), ValidateOutcome::kExpired);
}

// An entry of a command level this binary does not apply stops it, with
// what to do, rather than apply it otherwise and diverge (a member rolled
// back, or a learner on an older binary replaying the log).
TEST_F(RevocationTest, AnEntryOfAHigherCommandLevelStopsTheNode) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  Command tick;
  tick.set_timestamp_ms(1000);
  tick.mutable_tick();
  tick.set_min_level(kCommandLevel);
  EXPECT_TRUE(ApplyOne(tick).ok());
  tick.set_min_level(kCommandLevel + 1);
  EXPECT_DEATH((void)ApplyOne(tick),
               absl::StrCat("needs command level ", kCommandLevel + 1,
                            " and this binary applies up to ", kCommandLevel,
                            ": run the cluster's sessiond version"));
}

// The breaker freezes expiry because cluster time may have run ahead of
// real time; how long a flush stays restorable is judged at the same frozen
// time. It was not: the jump that opened the breaker still ended the
// flush's retention, and the next sweep purged its sessions for good.
TEST_F(RevocationTest, AnOpenBreakerFreezesARevocationsRetention) {
  for (int i = 0; i < 3; ++i) ApplySession(Create(i, 1000));
  ASSERT_TRUE(ApplyOne(Prepare("p", All(), 2000, /*retention_ms=*/5000)).ok());
  const v1::Revocation flush = ApplyRevocation(Confirm("p", All(), 2001));
  ASSERT_EQ(flush.restorable_until_ms(), 7001);
  // Cluster time jumps to 9000; the breaker freezes expiry at 6000.
  ASSERT_TRUE(ApplyOne(OpenBreaker(9000, 6000)).ok());
  EXPECT_TRUE(sm_->RevocationsDueForPurge(9000, 10).empty());
  EXPECT_EQ(ApplyCount(Purge(flush.id(), 9001)), 0u);
  EXPECT_EQ(table_->size(), 3u);
  const v1::Revocation restored = ApplyRevocation(Restore(flush.id(), 9002));
  EXPECT_EQ(restored.state(), v1::Revocation::RESTORED);
  EXPECT_EQ(restored.restored(), 3u);
}

TEST_F(SessionStateMachineTest, AnOpenExpiryBreakerFreezesExpiryUntilClosed) {
  ApplySession(Create(1, 1000, "alice", /*expires_at=*/5000));
  ApplySession(Create(2, 1000, "alice", /*expires_at=*/100'000));
  EXPECT_EQ(sm_->ExpiryNowMs(9000), 9000);
  // Frozen at 4000 (capped at the applied time otherwise).
  ApplyResult opened = ApplyOne(OpenBreaker(6000, 4000));
  ASSERT_TRUE(opened.ok()) << opened.status();
  const auto breaker = std::any_cast<v1::ExpiryBreaker>(*opened);
  EXPECT_TRUE(breaker.open());
  EXPECT_EQ(breaker.id(), sm_->applied_index().value());
  EXPECT_EQ(breaker.opened_at_ms(), 6000);
  EXPECT_EQ(breaker.frozen_at_ms(), 4000);
  EXPECT_EQ(breaker.times_opened(), 1u);
  EXPECT_TRUE(sm_->expiry_breaker_open());
  EXPECT_EQ(sm_->ExpiryNowMs(9000), 4000);
  // Session 1 expired at 5000, but nothing expires while open: a sweep
  // proposed before the opening removes nothing, a touch revives it.
  EXPECT_EQ(ApplyCount(Expire(7000, {1})), 0u);
  EXPECT_EQ(table_->Validate(H(1), sm_->ExpiryNowMs(7000), 0).outcome,
            ValidateOutcome::kValid);
  // Opening twice, or closing with another id, changes nothing.
  const auto before = DumpCf();
  EXPECT_EQ(ApplyOne(OpenBreaker(7100, 7100)).status().code(),
            absl::StatusCode::kFailedPrecondition);
  ApplyResult wrong = ApplyOne(CloseBreaker(7200, breaker.id() + 100));
  EXPECT_EQ(wrong.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(wrong.status().message()),
              HasSubstr("GetExpiryBreaker"));
  EXPECT_EQ(sm_->expiry_breaker().frozen_at_ms(), 4000);
  EXPECT_EQ(DumpCf(), before);
  // A restart keeps it open, frozen at the same time.
  Reopen();
  EXPECT_TRUE(sm_->expiry_breaker_open());
  EXPECT_EQ(sm_->ExpiryNowMs(9000), 4000);
  // Closed: expiry is judged at the applied time again.
  ApplyResult closed = ApplyOne(CloseBreaker(8000, breaker.id()));
  ASSERT_TRUE(closed.ok()) << closed.status();
  EXPECT_FALSE(std::any_cast<v1::ExpiryBreaker>(*closed).open());
  EXPECT_EQ(sm_->expiry_breaker().closed_by(), "resumed");
  EXPECT_EQ(sm_->ExpiryNowMs(9000), 9000);
  EXPECT_EQ(ApplyCount(Expire(8100, {1, 2})), 1u);
  EXPECT_EQ(ApplyOne(CloseBreaker(8200, breaker.id())).status().code(),
            absl::StatusCode::kFailedPrecondition);
}

// The breaker froze expiry at a time that includes the leeway: lowered
// while it was open, the leeway expired every session it held, on every
// node, and the breaker then cleared itself with nothing left to hold (no
// operator's confirmation). Refused while open; raising it stays allowed.
TEST_F(SessionStateMachineTest, TheLeewayIsNotLoweredWhileTheBreakerIsOpen) {
  Command leeway = Command();
  leeway.set_timestamp_ms(1000);
  leeway.mutable_settings()->set_expiry_leeway_ms(3000);
  ASSERT_TRUE(ApplyOne(leeway).ok());
  // Expires at 5000, with the leeway at 8000; frozen at 7000.
  ApplySession(Create(1, 1000, "alice", /*expires_at=*/5000));
  ASSERT_TRUE(ApplyOne(OpenBreaker(9000, 7000)).ok());
  EXPECT_EQ(table_->Validate(H(1), sm_->ExpiryNowMs(9000), 3000).outcome,
            ValidateOutcome::kValid);
  Command lower;
  lower.set_timestamp_ms(9100);
  lower.mutable_settings()->set_expiry_leeway_ms(0);
  lower.mutable_settings()->set_jwks_max_age_ms(1234);
  const ApplyResult refused = ApplyOne(lower);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(refused.status().message()),
              HasSubstr("the expiry breaker is open"));
  EXPECT_EQ(sm_->expiry_leeway_ms(), 3000);
  EXPECT_NE(sm_->jwks_max_age_ms(), 1234);  // nothing of it applied
  EXPECT_EQ(
      table_->Validate(H(1), sm_->ExpiryNowMs(9100), sm_->expiry_leeway_ms())
          .outcome,
      ValidateOutcome::kValid);
  Command raise;
  raise.set_timestamp_ms(9200);
  raise.mutable_settings()->set_expiry_leeway_ms(4000);
  EXPECT_TRUE(ApplyOne(raise).ok());
  EXPECT_EQ(sm_->expiry_leeway_ms(), 4000);
}

TEST_F(SessionStateMachineTest, ASnapshotCarriesAnOpenExpiryBreaker) {
  ApplySession(Create(1, 1000, "alice", /*expires_at=*/5000));
  ASSERT_TRUE(ApplyOne(OpenBreaker(6000, 4500)).ok());
  auto snapshot = sm_->CreateSnapshot();
  ASSERT_TRUE(snapshot.ok()) << snapshot.status();
  OtherNode other(dir_);
  ASSERT_TRUE(
      other.sm->ApplySnapshot(other.Receive(*snapshots_, *snapshot)).ok());
  EXPECT_TRUE(other.sm->expiry_breaker_open());
  EXPECT_EQ(other.sm->ExpiryNowMs(10'000), 4500);
  auto mine = sm_->ComputeDigest();
  auto theirs = other.sm->ComputeDigest();
  ASSERT_TRUE(mine.ok() && theirs.ok());
  EXPECT_EQ(mine->sha256_hex, theirs->sha256_hex);
}

// The signing key ring through the log (storage/session_state_machine_
// keys.cc): the JWKS max-age comes from a replicated setting, a retirement
// counts the live sessions the key signed as the entry finds them, every
// refusal changes nothing, and a snapshot carries the ring.
Command StageKeyCommand(int64_t ts, bool bootstrap, std::string* kid) {
  absl::StatusOr<signing::Ed25519KeyPair> pair =
      signing::GenerateEd25519KeyPair();
  EXPECT_TRUE(pair.ok());
  *kid = *signing::KeyIdForPublicKey(pair->public_key);
  absl::StatusOr<KeyEncryptionKey> kek =
      KeyEncryptionKey::FromBytes(std::string(kKekBytes, 'k'));
  EXPECT_TRUE(kek.ok());
  Command c;
  c.set_timestamp_ms(ts);
  auto* stage = c.mutable_key_ring()->mutable_stage();
  stage->set_kid(*kid);
  stage->set_algorithm(v1::SIGNING_ALGORITHM_ED25519);
  stage->set_public_key(pair->public_key);
  stage->set_sealed_private_key(*kek->Seal(pair->private_key, *kid));
  stage->set_bootstrap(bootstrap);
  return c;
}

TEST_F(SessionStateMachineTest, TheKeyRingLivesInTheLogAndCountsLiveSessions) {
  Command settings;
  settings.set_timestamp_ms(1000);
  settings.mutable_settings()->set_jwks_max_age_ms(5000);
  ASSERT_TRUE(ApplyOne(settings).ok());
  EXPECT_EQ(sm_->jwks_max_age_ms(), 5000);
  std::string first, second;
  ASSERT_TRUE(ApplyOne(StageKeyCommand(1000, /*bootstrap=*/true, &first)).ok());
  ASSERT_NE(sm_->key_ring().active(), nullptr);
  EXPECT_EQ(sm_->key_ring().active()->kid(), first);
  // Two sessions whose JWT the first key signed, one opaque.
  for (int i = 1; i <= 3; ++i) {
    Command create = Create(i, 1100);
    if (i < 3) create.mutable_create()->set_signing_kid(first);
    EXPECT_EQ(ApplySession(create).signing_kid(), i < 3 ? first : "");
  }
  EXPECT_EQ(sm_->CountLiveSignedBy(first, 1200), 2u);
  ASSERT_TRUE(ApplyOne(StageKeyCommand(2000, false, &second)).ok());
  const uint64_t staged_at = sm_->applied_index().value();
  // This process publishes both keys, each from when it applied its stage
  // (by its own steady clock, not the entries' times).
  {
    const std::map<std::string, int64_t> published = sm_->KeyPublishedMs();
    ASSERT_EQ(published.size(), 2u);
    EXPECT_GE(published.at(first), published.at(second));
    EXPECT_LT(published.at(second), 60'000);
  }
  // Too early (published 1 s of the 5 s max-age): refused, nothing changed.
  Command activate;
  activate.set_timestamp_ms(3000);
  activate.mutable_key_ring()->mutable_activate()->set_kid(second);
  activate.mutable_key_ring()->mutable_activate()->set_voters_applied_index(
      staged_at);
  const std::string ring_before = sm_->key_ring().state().SerializeAsString();
  EXPECT_EQ(ApplyOne(activate).status().code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(sm_->key_ring().state().SerializeAsString(), ring_before);
  activate.set_timestamp_ms(7000);
  ASSERT_TRUE(ApplyOne(activate).ok());
  EXPECT_EQ(sm_->key_ring().active()->kid(), second);
  EXPECT_EQ(sm_->key_ring().Find(first)->state(), v1::SIGNING_KEY_RETIRING);
  // Retiring the first key: refused while its two sessions live, even
  // forced with the wrong count; the message gives the count.
  Command retire;
  retire.set_timestamp_ms(7100);
  retire.mutable_key_ring()->mutable_retire()->set_kid(first);
  const auto cf_before = DumpCf();
  ApplyResult refused = ApplyOne(retire);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(refused.status().message()), HasSubstr("2 live"));
  retire.mutable_key_ring()->mutable_retire()->set_force(true);
  retire.mutable_key_ring()->mutable_retire()->set_expected_live_sessions(1);
  EXPECT_EQ(ApplyOne(retire).status().code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(DumpCf(), cf_before);
  EXPECT_EQ(sm_->key_ring().Find(first)->state(), v1::SIGNING_KEY_RETIRING);
  // Once one is revoked and the other expired, no force is needed.
  ApplySession(RevokeByHash(1, 7200));
  retire.set_timestamp_ms(200'000);
  retire.mutable_key_ring()->mutable_retire()->set_force(false);
  retire.mutable_key_ring()->mutable_retire()->set_expected_live_sessions(0);
  ASSERT_TRUE(ApplyOne(retire).ok());
  EXPECT_EQ(sm_->key_ring().Find(first)->state(), v1::SIGNING_KEY_RETIRED);
  EXPECT_EQ(sm_->KeyPublishedMs().count(first), 0u);  // gone from the JWKS
  EXPECT_EQ(sm_->KeyPublishedMs().count(second), 1u);
  // A restart and a snapshot carry the ring.
  const std::string ring = sm_->key_ring().state().SerializeAsString();
  Reopen();
  EXPECT_EQ(sm_->key_ring().state().SerializeAsString(), ring);
  EXPECT_EQ(sm_->jwks_max_age_ms(), 5000);
  EXPECT_EQ(sm_->KeyPublishedMs().count(second), 1u);  // from the start
  auto snapshot = sm_->CreateSnapshot();
  ASSERT_TRUE(snapshot.ok()) << snapshot.status();
  OtherNode other(dir_);
  ASSERT_TRUE(
      other.sm->ApplySnapshot(other.Receive(*snapshots_, *snapshot)).ok());
  EXPECT_EQ(other.sm->key_ring().state().SerializeAsString(), ring);
  EXPECT_EQ(other.sm->key_ring().active()->kid(), second);
}

// A rotation gives a JWT session an opaque token (RotateSessionToken draws
// one), so the session no longer holds a JWT its key signed: it must not
// keep that key from retiring, nor count among its live sessions. It kept
// signing_kid, and so it did both.
TEST_F(SessionStateMachineTest, ARotatedJwtSessionNoLongerNamesItsSigningKey) {
  std::string kid;
  ASSERT_TRUE(ApplyOne(StageKeyCommand(1000, /*bootstrap=*/true, &kid)).ok());
  Command create = Create(1, 1100);
  create.mutable_create()->set_signing_kid(kid);
  ASSERT_EQ(ApplySession(create).signing_kid(), kid);
  ASSERT_EQ(sm_->CountLiveSignedBy(kid, 1200), 1u);
  Command rotate;
  rotate.set_timestamp_ms(1300);
  rotate.mutable_rotate()->set_token_hash(Hash(1));
  rotate.mutable_rotate()->set_new_token_hash(Hash(2));
  const Session rotated = ApplySession(rotate);
  EXPECT_EQ(rotated.session_id(), Sid(1));
  EXPECT_EQ(rotated.signing_kid(), "");
  EXPECT_EQ(rotated.attributes().at("n"), "1");
  ASSERT_TRUE(table_->Get(H(2)).has_value());
  EXPECT_EQ(table_->Get(H(2))->signing_kid(), "");
  EXPECT_EQ(sm_->CountLiveSignedBy(kid, 1400), 0u);
  Reopen();  // and so it was stored
  ASSERT_TRUE(table_->Get(H(2)).has_value());
  EXPECT_EQ(table_->Get(H(2))->signing_kid(), "");
  EXPECT_EQ(table_->Get(H(2))->attributes().at("n"), "1");
  EXPECT_EQ(sm_->CountLiveSignedBy(kid, 1400), 0u);
}

// A rotation is a use of the session: the touches recorded just before it
// are under the old token, and land on nothing. With the times kept as
// they were, a user who validated (with touch) just before a step-up
// rotation idled out an idle timeout after their previous touch.
TEST_F(SessionStateMachineTest, ARotationCountsAsAUse) {
  ApplySession(Create(1, 1000, "alice", /*expires_at=*/100'000,
                      /*idle=*/5000));
  Command rotate;
  rotate.set_timestamp_ms(5900);
  rotate.mutable_rotate()->set_token_hash(Hash(1));
  rotate.mutable_rotate()->set_new_token_hash(Hash(2));
  EXPECT_EQ(ApplySession(rotate).last_seen_at_ms(), 5900);
  // The touch recorded under the old token just before: nothing to touch.
  EXPECT_EQ(ApplyCount(Touch(5950, {{1, 5890}, {3, 5890}})), 0u);
  EXPECT_EQ(table_->Validate(H(2), 7000, 0).outcome, ValidateOutcome::kValid);
  Reopen();  // and so it was stored
  EXPECT_EQ(table_->Get(H(2))->last_seen_at_ms(), 5900);
}

// The ring of the two tests below, through `apply`: a JWKS max-age of 5 s,
// `first` staged as the bootstrap key at 1 s, `second` staged at 2 s and
// activated at 7 s (`first` is then RETIRING).
void RotateToASecondKey(const std::function<ApplyResult(const Command&)>& apply,
                        LogIndex applied, std::string* first,
                        std::string* second) {
  Command settings;
  settings.set_timestamp_ms(1000);
  settings.mutable_settings()->set_jwks_max_age_ms(5000);
  ASSERT_TRUE(apply(settings).ok());
  ASSERT_TRUE(apply(StageKeyCommand(1000, /*bootstrap=*/true, first)).ok());
  ASSERT_TRUE(apply(StageKeyCommand(2000, false, second)).ok());
  Command activate;
  activate.set_timestamp_ms(7000);
  activate.mutable_key_ring()->mutable_activate()->set_kid(*second);
  // Every voter (this one) applied the stage: the entry before this one.
  activate.mutable_key_ring()->mutable_activate()->set_voters_applied_index(
      applied.value() + 3);
  ASSERT_TRUE(apply(activate).ok());
}

// A node signs a JWT with the key its own ring calls active, then proposes
// the create; a key retired before that create is applied has left the
// JWKS, so the token could never verify: the create is refused (ABORTED,
// retry) rather than stored as a session its user cannot use. Also when the
// retirement is an earlier entry of the same batch.
TEST_F(SessionStateMachineTest, ACreateSignedByAKeyRetiredMeanwhileIsRefused) {
  std::string first, second;
  RotateToASecondKey([this](const Command& c) { return ApplyOne(c); },
                     sm_->applied_index(), &first, &second);
  // Signed by the RETIRING key: it still verifies, so it is taken.
  Command signed_by_first = Create(1, 7100);
  signed_by_first.mutable_create()->set_signing_kid(first);
  EXPECT_EQ(ApplySession(signed_by_first).signing_kid(), first);
  ApplySession(RevokeByHash(1, 7150));

  // The retirement and a create its key signed, in one batch.
  Command retire;
  retire.set_timestamp_ms(7200);
  retire.mutable_key_ring()->mutable_retire()->set_kid(first);
  Command late = Create(2, 7200);
  late.mutable_create()->set_signing_kid(first);
  std::vector<Entry> entries(2);
  for (int i = 0; i < 2; ++i) {
    entries[i].index = sm_->applied_index() + 1 + i;
    entries[i].term = Term(1);
  }
  entries[0].data = retire.SerializeAsString();
  entries[1].data = late.SerializeAsString();
  const auto cf_before = DumpCf();
  auto results = sm_->Apply(entries);
  ASSERT_TRUE(results.ok()) << results.status();
  ASSERT_TRUE((*results)[0].ok()) << (*results)[0].status();
  EXPECT_EQ((*results)[1].status().code(), absl::StatusCode::kAborted);
  EXPECT_THAT(std::string((*results)[1].status().message()),
              HasSubstr("retry"));
  EXPECT_FALSE(table_->Contains(H(2)));
  EXPECT_EQ(DumpCf(), cf_before);

  // Later entries too, a batch of creates, and a kid the ring never held.
  late.set_timestamp_ms(7300);
  EXPECT_EQ(ApplyOne(late).status().code(), absl::StatusCode::kAborted);
  Command batch;
  batch.set_timestamp_ms(7300);
  *batch.mutable_create_batch()->add_creates() = Create(3, 0).create();
  *batch.mutable_create_batch()->add_creates() = late.create();
  EXPECT_EQ(ApplyOne(batch).status().code(), absl::StatusCode::kAborted);
  EXPECT_FALSE(table_->Contains(H(3)));
  Command unknown = Create(4, 7300);
  unknown.mutable_create()->set_signing_kid("no-such-kid");
  EXPECT_EQ(ApplyOne(unknown).status().code(), absl::StatusCode::kAborted);
  EXPECT_EQ(DumpCf(), cf_before);
  // The active key's creates, and opaque ones, are taken.
  Command signed_by_second = Create(5, 7400);
  signed_by_second.mutable_create()->set_signing_kid(second);
  EXPECT_EQ(ApplySession(signed_by_second).signing_kid(), second);
  ApplySession(Create(6, 7400));
}

// A session a soft FLUSH holds comes back, token and all, when the flush is
// restored: retiring the key that signed it would log its user out then,
// so it counts as live until the flush can no longer be restored.
TEST_F(RevocationTest, SessionsARestorableFlushHoldsKeepTheirKeyLive) {
  std::string first, second;
  RotateToASecondKey([this](const Command& c) { return ApplyOne(c); },
                     sm_->applied_index(), &first, &second);
  // Signed by the first key before it became RETIRING.
  for (int i = 1; i <= 3; ++i) {
    Command create = Create(i, 7000, "u", /*expires_at=*/1'000'000);
    create.mutable_create()->set_signing_kid(first);
    ApplySession(create);
  }
  // Session 1 revoked for good; all three flushed, restorable until 67 s.
  ApplySession(RevokeByHash(1, 7100));
  ASSERT_TRUE(
      ApplyOne(Prepare("p", All(), 7200, /*retention_ms=*/60'000)).ok());
  Command confirm = Confirm("p", All(), 7300);
  const ApplyResult flushed = ApplyOne(confirm);
  ASSERT_TRUE(flushed.ok()) << flushed.status();
  const uint64_t flush_id = std::any_cast<v1::Revocation>(*flushed).id();
  EXPECT_EQ(sm_->CountLiveSignedBy(first, 8000), 2u);

  Command retire;
  retire.set_timestamp_ms(8000);
  retire.mutable_key_ring()->mutable_retire()->set_kid(first);
  ApplyResult refused = ApplyOne(retire);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(refused.status().message()), HasSubstr("2 live"));
  EXPECT_EQ(sm_->key_ring().Find(first)->state(), v1::SIGNING_KEY_RETIRING);
  // Restored: the two sessions verify with the key they were signed with.
  ASSERT_TRUE(ApplyOne(Restore(flush_id, 9000)).ok());
  EXPECT_EQ(OutcomeOf(2, 9000), ValidateOutcome::kValid);
  EXPECT_EQ(sm_->CountLiveSignedBy(first, 9000), 2u);

  // Flushed again, past the restore window (not yet purged): not live.
  ASSERT_TRUE(ApplyOne(Prepare("q", All(), 9100, /*retention_ms=*/1000)).ok());
  ASSERT_TRUE(ApplyOne(Confirm("q", All(), 9200)).ok());
  EXPECT_EQ(sm_->CountLiveSignedBy(first, 9500), 2u);
  EXPECT_EQ(sm_->CountLiveSignedBy(first, 10'200), 0u);
  retire.set_timestamp_ms(10'300);
  const ApplyResult retired = ApplyOne(retire);
  ASSERT_TRUE(retired.ok()) << retired.status();
  EXPECT_EQ(std::any_cast<uint64_t>(*retired), 0u);  // none cut off
  EXPECT_EQ(sm_->key_ring().Find(first)->state(), v1::SIGNING_KEY_RETIRED);
}

// A flush an open expiry breaker keeps restorable past its retention (the
// breaker froze expiry, and retention with it, before the retention ended)
// keeps its sessions' key live. Judged at the raw cluster time, the count
// took them for gone, the key retired, and the restore brought the
// sessions back with tokens no JWKS verified: all of them logged out.
TEST_F(RevocationTest, KeyLivenessIsJudgedAtTheBreakersFrozenTime) {
  std::string first, second;
  RotateToASecondKey([this](const Command& c) { return ApplyOne(c); },
                     sm_->applied_index(), &first, &second);
  for (int i = 1; i <= 2; ++i) {
    Command create = Create(i, 7000, "u", /*expires_at=*/1'000'000);
    create.mutable_create()->set_signing_kid(first);
    ApplySession(create);
  }
  ASSERT_TRUE(ApplyOne(Prepare("p", All(), 7200, /*retention_ms=*/1000)).ok());
  const v1::Revocation flush = ApplyRevocation(Confirm("p", All(), 7300));
  ASSERT_EQ(flush.restorable_until_ms(), 8300);
  ASSERT_TRUE(ApplyOne(OpenBreaker(8100, 8000)).ok());
  EXPECT_EQ(sm_->CountLiveSignedBy(first, 9000), 2u);

  Command retire;
  retire.set_timestamp_ms(9000);
  retire.mutable_key_ring()->mutable_retire()->set_kid(first);
  const ApplyResult refused = ApplyOne(retire);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(refused.status().message()), HasSubstr("2 live"));
  const v1::Revocation restored = ApplyRevocation(Restore(flush.id(), 9100));
  EXPECT_EQ(restored.restored(), 2u);
  EXPECT_EQ(sm_->key_ring().Find(first)->state(), v1::SIGNING_KEY_RETIRING);

  // Forced with their count, the answer is the count the apply made (the
  // admin call echoed the request's, whatever was cut off).
  retire.mutable_key_ring()->mutable_retire()->set_force(true);
  retire.mutable_key_ring()->mutable_retire()->set_expected_live_sessions(2);
  retire.set_timestamp_ms(9200);
  const ApplyResult forced = ApplyOne(retire);
  ASSERT_TRUE(forced.ok()) << forced.status();
  EXPECT_EQ(std::any_cast<uint64_t>(*forced), 2u);
}

// A session past its idle timeout at the leader may still be saved by a
// touch its user made through a node cut off from the quorum (judged at
// that node's idle time). It keeps its key live: counted as gone, the key
// retired, then the late touch revived the session with a token no JWKS
// verified, logging out exactly the users active through the outage.
TEST_F(RevocationTest, AnIdleSessionALateTouchCanSaveKeepsItsKeyLive) {
  std::string first, second;
  RotateToASecondKey([this](const Command& c) { return ApplyOne(c); },
                     sm_->applied_index(), &first, &second);
  Command create = Create(1, 7000, "u", /*expires_at=*/1'000'000,
                          /*idle=*/1000);
  create.mutable_create()->set_signing_kid(first);
  ApplySession(create);
  EXPECT_EQ(sm_->CountLiveSignedBy(first, 9000), 1u);

  Command retire;
  retire.set_timestamp_ms(9000);
  retire.mutable_key_ring()->mutable_retire()->set_kid(first);
  const ApplyResult refused = ApplyOne(retire);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(refused.status().message()), HasSubstr("1 live"));
  // The touch recorded while its node was cut off, judged at 7500.
  Command touch = Touch(9100, {{1, 9050}});
  touch.mutable_touch()->mutable_touches(0)->set_idle_judged_at_ms(7500);
  ASSERT_TRUE(ApplyOne(touch).ok());
  EXPECT_EQ(OutcomeOf(1, 9100), ValidateOutcome::kValid);
  EXPECT_EQ(sm_->key_ring().Find(first)->state(), v1::SIGNING_KEY_RETIRING);
}

}  // namespace
}  // namespace sessiond::storage
