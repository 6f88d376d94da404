// Copyright sessiond authors. Licensed under the Apache License 2.0.
//
// A flush past its retention is purged by the leader's sweeper through the
// log: its sessions go, its record goes (--revocation_retention_ms at its
// 1 s minimum, sweeps every 50 ms).
#include <grpcpp/create_channel.h>
#include <grpcpp/security/credentials.h>

#include <string>
#include <vector>

#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "server/config.h"
#include "sessiond/v1/admin.grpc.pb.h"
#include "storage/session_state_machine.h"
#include "tests/server/daemon_fixture.h"

namespace sessiond::server {
namespace {

using sessiond::v1::ValidateSessionResponse;
using testing::DaemonTest;
using testing::SetDeadline;
using testing::TestConfig;

class RevocationPurgeTest : public DaemonTest {
 protected:
  Config MakeConfig() override {
    Config config = TestConfig(dir_.Child("data"));
    config.revocation_retention_ms = 1000;
    config.sweep_interval_ms = 50;
    return config;
  }
};

TEST_F(RevocationPurgeTest, TheSweeperPurgesAFlushPastItsRetention) {
  std::vector<std::string> tokens;
  for (int i = 0; i < 3; ++i) tokens.push_back(MustCreate("alice").token());
  auto admin = sessiond::v1::AdminService::NewStub(grpc::CreateChannel(
      daemon_->address(), grpc::InsecureChannelCredentials()));
  sessiond::v1::FlushResponse preview, flushed;
  {
    grpc::ClientContext context;
    SetDeadline(&context);
    ASSERT_TRUE(
        admin->Flush(&context, sessiond::v1::FlushRequest(), &preview).ok());
    sessiond::v1::FlushRequest confirm;
    confirm.set_confirmation_token(preview.preview().confirmation_token());
    grpc::ClientContext context2;
    SetDeadline(&context2);
    ASSERT_TRUE(admin->Flush(&context2, confirm, &flushed).ok());
  }
  EXPECT_EQ(flushed.revocation().sessions(), 3u);
  const int64_t flushed_at = flushed.revocation().revoked_at_ms();
  EXPECT_EQ(flushed.revocation().restorable_until_ms(), flushed_at + 1000);
  // Kept while restorable; a session created after it is untouched.
  EXPECT_EQ(Validate(tokens[0]).outcome(), ValidateSessionResponse::REVOKED);
  const std::string later = MustCreate("bob").token();
  const storage::SessionStateMachine* sm = daemon_->state_machine();
  // Bounded poll: 10 s.
  for (int i = 0; i < 1000 && !sm->revocations().empty(); ++i) {
    absl::SleepFor(absl::Milliseconds(10));
  }
  ASSERT_TRUE(sm->revocations().empty());
  for (const std::string& token : tokens) {
    EXPECT_EQ(Validate(token).outcome(), ValidateSessionResponse::UNKNOWN);
  }
  EXPECT_EQ(Validate(later).outcome(), ValidateSessionResponse::VALID);
  // Purged for good: nothing to restore, and it stays so after a restart.
  sessiond::v1::RestoreFlushRequest restore;
  restore.set_flush_id(flushed.revocation().id());
  sessiond::v1::RestoreFlushResponse restored;
  grpc::ClientContext context;
  SetDeadline(&context);
  EXPECT_EQ(admin->RestoreFlush(&context, restore, &restored).error_code(),
            grpc::StatusCode::NOT_FOUND);
  RestartDaemon();
  EXPECT_TRUE(daemon_->state_machine()->revocations().empty());
  EXPECT_EQ(Validate(tokens[0]).outcome(), ValidateSessionResponse::UNKNOWN);
  EXPECT_EQ(Validate(later).outcome(), ValidateSessionResponse::VALID);
}

}  // namespace
}  // namespace sessiond::server
