// Copyright sessiond authors. Licensed under the Apache License 2.0.
#include "server/limits.h"

#include <string>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace sessiond::server {
namespace {

using sessiond::v1::CreateSessionRequest;

void ExpectInvalid(const absl::Status& s, const std::string& needle) {
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_NE(s.message().find(needle), absl::string_view::npos)
      << "\"" << s.message() << "\" lacks \"" << needle << "\"";
}

TEST(LimitsTest, CreateFillsDefaults) {
  CreateSessionRequest r;
  r.set_user_id("u");
  auto lifetimes = ValidateCreate(r, Limits{});
  ASSERT_TRUE(lifetimes.ok()) << lifetimes.status();
  EXPECT_EQ(lifetimes->ttl_ms, Limits{}.default_ttl_ms);
  EXPECT_EQ(lifetimes->idle_timeout_ms, 0);
}

TEST(LimitsTest, EveryCreateLimitNamesFieldAndFlag) {
  const Limits limits;
  CreateSessionRequest r;
  ExpectInvalid(ValidateCreate(r, limits).status(),
                "user_id: must not be empty");
  r.set_user_id(std::string(257, 'u'));
  ExpectInvalid(ValidateCreate(r, limits).status(),
                "user_id: is 257 bytes, limit is 256 (--max_user_id_bytes)");
  r.set_user_id("u");
  (*r.mutable_attributes())["k"] = std::string(5000, 'v');
  ExpectInvalid(ValidateCreate(r, limits).status(),
                "attributes[\"k\"]: value is 5000 bytes, limit is 4096 "
                "(--max_attribute_value_bytes)");
  r.mutable_attributes()->clear();
  (*r.mutable_attributes())[std::string(129, 'k')] = "v";
  ExpectInvalid(ValidateCreate(r, limits).status(),
                "--max_attribute_key_bytes");
  r.mutable_attributes()->clear();
  (*r.mutable_attributes())[""] = "v";
  ExpectInvalid(ValidateCreate(r, limits).status(), "must not be empty");
  r.mutable_attributes()->clear();
  for (int i = 0; i < 65; ++i) (*r.mutable_attributes())[absl::StrCat(i)] = "v";
  ExpectInvalid(ValidateCreate(r, limits).status(),
                "attributes: 65 entries, limit is 64 (--max_attributes)");
  r.mutable_attributes()->clear();
  for (int i = 0; i < 5; ++i) {
    (*r.mutable_attributes())[absl::StrCat(i)] = std::string(4000, 'v');
  }
  ExpectInvalid(ValidateCreate(r, limits).status(), "--max_record_bytes");
  r.mutable_attributes()->clear();
  r.set_ttl_ms(-1);
  ExpectInvalid(ValidateCreate(r, limits).status(),
                "ttl_ms: must not be negative");
  r.set_ttl_ms(999);
  ExpectInvalid(ValidateCreate(r, limits).status(), "(--min_ttl_ms)");
  r.set_ttl_ms(limits.max_ttl_ms + 1);
  ExpectInvalid(ValidateCreate(r, limits).status(), "(--max_ttl_ms)");
  r.set_ttl_ms(0);
  r.set_idle_timeout_ms(-1);
  ExpectInvalid(ValidateCreate(r, limits).status(), "idle_timeout_ms");
  r.set_idle_timeout_ms(limits.max_idle_timeout_ms + 1);
  ExpectInvalid(ValidateCreate(r, limits).status(), "(--max_idle_timeout_ms)");
  r.set_idle_timeout_ms(0);
  r.mutable_client()->set_ip(std::string(513, '1'));
  ExpectInvalid(
      ValidateCreate(r, limits).status(),
      "client.ip: is 513 bytes, limit is 512 (--max_client_field_bytes)");
}

TEST(LimitsTest, Tokens) {
  EXPECT_TRUE(ValidateToken(std::string(43, 'a'), "token").ok());
  EXPECT_TRUE(
      ValidateToken("abcdefghijklmnopqrstuvwxyzABCDEFGHIJ-_01234", "token")
          .ok());
  ExpectInvalid(ValidateToken("", "token"), "token: must not be empty");
  ExpectInvalid(ValidateToken(std::string(42, 'a'), "token"), "malformed");
  ExpectInvalid(ValidateToken(std::string(42, 'a') + "=", "token"),
                "malformed");
  ExpectInvalid(ValidateSessionId(std::string(21, 'a'), "session_id"),
                "session_id: malformed");
}

TEST(LimitsTest, UpdateAgainstTheStoredRecord) {
  Limits limits;
  limits.max_attributes = 2;
  sessiond::v1::UpdateSessionRequest u;
  u.set_token(std::string(43, 'a'));
  (*u.mutable_set_attributes())["a"] = "1";
  u.add_remove_attributes("a");
  ExpectInvalid(ValidateUpdate(u, limits), "also in set_attributes");
  u.clear_remove_attributes();
  ASSERT_TRUE(ValidateUpdate(u, limits).ok());

  sessiond::v1::Session current;
  current.set_user_id("u");
  (*current.mutable_attributes())["x"] = "1";
  (*current.mutable_attributes())["y"] = "1";
  ExpectInvalid(CheckUpdatedRecord(current, u, limits), "--max_attributes");
  u.add_remove_attributes("x");
  EXPECT_TRUE(CheckUpdatedRecord(current, u, limits).ok());

  // Entries, not distinct keys: three copies of one key are over a limit
  // of two (millions of copies went through as one log entry).
  u.clear_set_attributes();
  u.add_remove_attributes("x");
  ASSERT_TRUE(ValidateUpdate(u, limits).ok());
  u.add_remove_attributes("x");
  ExpectInvalid(ValidateUpdate(u, limits),
                "remove_attributes: 3 entries, limit is 2 (--max_attributes)");
}

TEST(LimitsTest, RevokeAndList) {
  const Limits limits;
  sessiond::v1::RevokeSessionRequest r;
  ExpectInvalid(ValidateRevoke(r, limits), "target");
  r.set_session_id(std::string(22, 'a'));
  r.set_reason(std::string(257, 'r'));
  ExpectInvalid(ValidateRevoke(r, limits), "(--max_reason_bytes)");

  sessiond::v1::RevokeUserSessionsRequest ru;
  ru.set_user_id("u");
  ru.set_keep_session_id("short");
  ExpectInvalid(ValidateRevokeUser(ru, limits), "keep_session_id");

  sessiond::v1::ListUserSessionsRequest l;
  l.set_user_id("u");
  uint32_t size = 0;
  ASSERT_TRUE(ValidateList(l, limits, &size).ok());
  EXPECT_EQ(size, kDefaultPageSize);
  l.set_page_size(5000);
  ASSERT_TRUE(ValidateList(l, limits, &size).ok());
  EXPECT_EQ(size, kMaxPageSize);
}

// The biggest requests the limits accept fit the message size the client
// server allows: a CreateSessions of 1000 sessions whose records are full
// (as many attributes as allowed, the longest keys and client fields), and
// a BatchValidateSessions of 10000 requests with every field set.
TEST(LimitsTest, TheLargestValidRequestsFitTheMessageLimit) {
  const Limits limits;
  constexpr size_t kBatchCreate = 1000;
  constexpr size_t kBatchValidate = 10000;
  const int64_t max_bytes =
      MaxRequestMessageBytes(limits, kBatchCreate, kBatchValidate);

  CreateSessionRequest one;
  one.set_user_id(std::string(limits.max_user_id_bytes, 'u'));
  one.set_ttl_ms(limits.max_ttl_ms);
  one.set_idle_timeout_ms(limits.max_idle_timeout_ms);
  const std::string field(limits.max_client_field_bytes, 'c');
  one.mutable_client()->set_device(field);
  one.mutable_client()->set_ip(field);
  one.mutable_client()->set_user_agent(field);
  const int64_t fixed = limits.max_user_id_bytes + 3 * field.size();
  const int64_t per_attribute =
      (limits.max_record_bytes - fixed) / limits.max_attributes;
  for (int i = 0; i < limits.max_attributes; ++i) {
    std::string key = absl::StrCat(i, "-");
    key.resize(limits.max_attribute_key_bytes, 'k');
    (*one.mutable_attributes())[key] =
        std::string(per_attribute - key.size(), 'v');
  }
  ASSERT_TRUE(ValidateCreate(one, limits).ok());
  sessiond::v1::CreateSessionsRequest creates;
  for (size_t i = 0; i < kBatchCreate; ++i) *creates.add_requests() = one;
  EXPECT_LE(static_cast<int64_t>(creates.ByteSizeLong()), max_bytes);
  EXPECT_GT(static_cast<int64_t>(creates.ByteSizeLong()), int64_t{4} << 20)
      << "gRPC's default limit would refuse it";

  sessiond::v1::BatchValidateSessionsRequest validates;
  validates.set_consistency(sessiond::v1::LOCAL);
  for (size_t i = 0; i < kBatchValidate; ++i) {
    auto* r = validates.add_requests();
    r->set_token(std::string(43, 't'));
    r->set_touch(true);
    r->set_request_id(~uint64_t{0});
    r->set_consistency(sessiond::v1::LOCAL);
  }
  EXPECT_LE(static_cast<int64_t>(validates.ByteSizeLong()), max_bytes);
}

TEST(LimitsTest, InconsistentLimitsAreRejected) {
  Limits limits;
  limits.min_ttl_ms = 10;
  limits.max_ttl_ms = 5;
  EXPECT_EQ(CheckLimitsConsistent(limits).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(CheckLimitsConsistent(Limits{}).ok());
}

TEST(LimitsTest, AnIdleTimeoutRangeWithNothingInItIsRejected) {
  Limits limits;
  limits.min_idle_timeout_ms = MinIdleTimeoutMs(/*min_ttl_ms=*/1000,
                                                /*touch_flush_interval_ms=*/
                                                60'000);
  limits.max_idle_timeout_ms = limits.min_idle_timeout_ms - 1;
  const absl::Status status = CheckLimitsConsistent(limits);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(status.message()),
              testing::HasSubstr("every create asking an idle timeout"));
  limits.max_idle_timeout_ms = limits.min_idle_timeout_ms;
  EXPECT_TRUE(CheckLimitsConsistent(limits).ok());
}

}  // namespace
}  // namespace sessiond::server
