// Copyright sessiond authors. Licensed under the Apache License 2.0.
//
// Logs never hold a token (common/log.h): a 3-node cluster is put through
// creates, validations, touches, updates, revocations, a flush and its
// restore, bad tokens, a leader's death and restarts, with every log line
// JSON at debug level; then every node's log is searched for every token
// the test saw.
#include <grpcpp/grpcpp.h>

#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "sessiond/v1/admin.grpc.pb.h"
#include "sessiond/v1/session.grpc.pb.h"
#include "tests/integration/cluster_harness.h"

namespace sessiond::testing {
namespace {

void SetDeadline(grpc::ClientContext* context) {
  context->set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(10)));
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  return std::string((std::istreambuf_iterator<char>(in)),
                     std::istreambuf_iterator<char>());
}

TEST(LogSecretsTest, NoTokenReachesAnyLog) {
  ClusterOptions options;
  options.binary = SESSIOND_BINARY;
  options.flags = {"--log_format=json", "--log_level=debug"};
  ClusterHarness cluster(options);
  ASSERT_TRUE(cluster.Start().ok());
  absl::StatusOr<int> leader = cluster.WaitForLeader(absl::Seconds(20));
  ASSERT_TRUE(leader.ok()) << leader.status();

  std::vector<std::string> tokens;
  // Creates through every node, one by one and in a batch.
  for (int id : cluster.ids()) {
    auto stub = cluster.Stub(id);
    for (int i = 0; i < 10; ++i) {
      sessiond::v1::CreateSessionRequest request;
      request.set_user_id(absl::StrCat("user-", i % 3));
      request.set_ttl_ms(3600 * 1000);
      sessiond::v1::CreateSessionResponse response;
      grpc::ClientContext context;
      SetDeadline(&context);
      ASSERT_TRUE(stub->CreateSession(&context, request, &response).ok());
      tokens.push_back(response.token());
    }
    sessiond::v1::CreateSessionsRequest batch;
    for (int i = 0; i < 5; ++i) {
      batch.add_requests()->set_user_id("batch-user");
      batch.mutable_requests(i)->set_ttl_ms(3600 * 1000);
    }
    sessiond::v1::CreateSessionsResponse created;
    grpc::ClientContext context;
    SetDeadline(&context);
    ASSERT_TRUE(stub->CreateSessions(&context, batch, &created).ok());
    for (const auto& one : created.responses()) tokens.push_back(one.token());
  }
  // Well-formed tokens nobody holds, and garbage, go through every path.
  const std::vector<std::string> unknown = {
      "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
      "zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz", "not-a-token-at-all"};
  auto stub = cluster.Stub(cluster.ids()[1]);
  for (const std::string& token : tokens) {
    sessiond::v1::ValidateSessionRequest request;
    request.set_token(token);
    request.set_touch(true);
    sessiond::v1::ValidateSessionResponse response;
    grpc::ClientContext context;
    SetDeadline(&context);
    ASSERT_TRUE(stub->ValidateSession(&context, request, &response).ok());
  }
  for (const std::string& token : unknown) {
    for (int kind = 0; kind < 3; ++kind) {
      grpc::ClientContext context;
      SetDeadline(&context);
      if (kind == 0) {
        sessiond::v1::ValidateSessionRequest request;
        request.set_token(token);
        sessiond::v1::ValidateSessionResponse response;
        (void)stub->ValidateSession(&context, request, &response);
      } else if (kind == 1) {
        sessiond::v1::RevokeSessionRequest request;
        request.set_token(token);
        sessiond::v1::RevokeSessionResponse response;
        (void)stub->RevokeSession(&context, request, &response);
      } else {
        sessiond::v1::UpdateSessionRequest request;
        request.set_token(token);
        (*request.mutable_set_attributes())["k"] = "v";
        sessiond::v1::UpdateSessionResponse response;
        (void)stub->UpdateSession(&context, request, &response);
      }
    }
  }
  for (size_t i = 0; i < 5; ++i) {
    grpc::ClientContext context;
    SetDeadline(&context);
    sessiond::v1::UpdateSessionRequest update;
    update.set_token(tokens[i]);
    (*update.mutable_set_attributes())["step"] = "two";
    sessiond::v1::UpdateSessionResponse updated;
    ASSERT_TRUE(stub->UpdateSession(&context, update, &updated).ok());
    grpc::ClientContext context2;
    SetDeadline(&context2);
    sessiond::v1::RevokeSessionRequest revoke;
    revoke.set_token(tokens[i + 5]);
    sessiond::v1::RevokeSessionResponse revoked;
    ASSERT_TRUE(stub->RevokeSession(&context2, revoke, &revoked).ok());
  }
  {
    grpc::ClientContext context;
    SetDeadline(&context);
    sessiond::v1::RevokeUserSessionsRequest request;
    request.set_user_id("user-1");
    sessiond::v1::RevokeUserSessionsResponse response;
    ASSERT_TRUE(stub->RevokeUserSessions(&context, request, &response).ok());
  }
  // A flush and its restore.
  auto admin = cluster.Admin(*leader);
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
    sessiond::v1::RestoreFlushRequest restore;
    restore.set_flush_id(flushed.revocation().id());
    sessiond::v1::RestoreFlushResponse restored;
    grpc::ClientContext context3;
    SetDeadline(&context3);
    ASSERT_TRUE(admin->RestoreFlush(&context3, restore, &restored).ok());
  }
  // The leader dies; another stops cleanly; both come back.
  cluster.Kill(*leader);
  ASSERT_TRUE(cluster.WaitForLeader(absl::Seconds(20)).ok());
  int other = 0;
  for (int id : cluster.running_ids()) other = id;
  EXPECT_EQ(cluster.Terminate(other), 0);
  ASSERT_TRUE(cluster.StartNode(*leader).ok());
  ASSERT_TRUE(cluster.StartNode(other).ok());
  ASSERT_TRUE(cluster.WaitForConvergence(absl::Seconds(60)).ok());
  for (int id : cluster.running_ids()) EXPECT_EQ(cluster.Terminate(id), 0);

  size_t json_lines = 0;
  for (int id : cluster.ids()) {
    const std::string log = ReadFile(cluster.log_path(id));
    ASSERT_FALSE(log.empty()) << "node " << id;
    for (const std::string& token : tokens) {
      EXPECT_FALSE(absl::StrContains(log, token))
          << "node " << id << " logged a token";
      // Nor its hash, in hex or raw.
      const std::string hash = absl::BytesToHexString(token);
      EXPECT_FALSE(absl::StrContains(log, hash));
    }
    for (const std::string& token : unknown) {
      EXPECT_FALSE(absl::StrContains(log, token))
          << "node " << id << " logged a presented token";
    }
    EXPECT_FALSE(absl::StrContains(log, preview.preview().confirmation_token()))
        << "node " << id << " logged a flush confirmation token";
    // Every structured line is one JSON object with its level and event.
    for (absl::string_view line : absl::StrSplit(log, '\n')) {
      if (!absl::StartsWith(line, "{")) continue;
      const nlohmann::json doc = nlohmann::json::parse(
          line.begin(), line.end(), nullptr, /*allow_exceptions=*/false);
      ASSERT_TRUE(doc.is_object()) << line;
      EXPECT_TRUE(doc.contains("ts") && doc.contains("level") &&
                  doc.contains("event"))
          << line;
      EXPECT_EQ(doc.value("node", 0), id) << line;
      ++json_lines;
    }
  }
  // Each node logged at least its clean stop.
  EXPECT_GE(json_lines, 3u);
}

}  // namespace
}  // namespace sessiond::testing
