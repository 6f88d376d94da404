// Copyright sessiond authors. Licensed under the Apache License 2.0.
//
// The real sessionctl binary's `audit` verbs against a real sessiond
// (issue 8 and 9, "Audit"): the table, --json (one document), --after,
// --limit, and `audit export` (JSON lines to the end).
#include <grpcpp/grpcpp.h>

#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "sessiond/v1/admin.grpc.pb.h"
#include "tests/integration/sessiond_process.h"
#include "tests/tools/run_process.h"

namespace sessiond::testing {
namespace {

using nlohmann::json;

class SessionctlAuditTest : public ::testing::Test {
 protected:
  void SetUp() override {
    node_ = std::make_unique<SessiondProcess>(SESSIOND_BINARY,
                                              dir_.path() + "/data");
    ASSERT_TRUE(node_->Start().ok());
  }

  ProcessRun Sessionctl(std::vector<std::string> args) {
    std::vector<std::string> argv = {SESSIONCTL_BINARY, "--endpoints",
                                     node_->address(), "--timeout", "10s"};
    argv.insert(argv.end(), args.begin(), args.end());
    return RunProcess(
        argv, {"PATH=/usr/bin:/bin", absl::StrCat("HOME=", dir_.path())}, "",
        absl::Seconds(30));
  }
  // The same, its stdout sent to `file` by a shell.
  ProcessRun SessionctlTo(const std::string& file,
                          const std::string& arguments) {
    return RunProcess(
        {"/bin/sh", "-c",
         absl::StrCat("exec \"$0\" --endpoints ", node_->address(),
                      " --timeout 10s ", arguments, " > ", file),
         SESSIONCTL_BINARY},
        {"PATH=/usr/bin:/bin", absl::StrCat("HOME=", dir_.path())}, "",
        absl::Seconds(30));
  }

  // Three audited calls: SetExpiryLeeway 100, 200, and one refused (out of
  // range).
  void MakeEntries() {
    auto admin = sessiond::v1::AdminService::NewStub(grpc::CreateChannel(
        node_->address(), grpc::InsecureChannelCredentials()));
    for (int64_t ms : {100, 200, -1}) {
      sessiond::v1::SetExpiryLeewayRequest request;
      request.set_expiry_leeway_ms(ms);
      sessiond::v1::SetExpiryLeewayResponse response;
      grpc::ClientContext context;
      context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(10)));
      const grpc::Status s =
          admin->SetExpiryLeeway(&context, request, &response);
      EXPECT_EQ(s.ok(), ms >= 0) << s.error_message();
    }
  }

  TempDir dir_;
  std::unique_ptr<SessiondProcess> node_;
};

TEST_F(SessionctlAuditTest, JsonTableAndExport) {
  MakeEntries();

  // Two entries per call: requested (before it ran), then answered.
  ProcessRun run = Sessionctl({"--json", "audit"});
  ASSERT_EQ(run.exit_code, 0) << run;
  const json doc = json::parse(run.out);
  ASSERT_EQ(doc["entries"].size(), 6u) << run.out;
  const uint64_t first = doc["entries"][0]["seq"].get<uint64_t>();
  for (size_t i = 0; i < 6; ++i) {
    const json& e = doc["entries"][i];
    EXPECT_EQ(e["seq"].get<uint64_t>(), first + i);
    EXPECT_EQ(e["method"], "/sessiond.v1.AdminService/SetExpiryLeeway");
    EXPECT_TRUE(absl::StrContains(e["peer"].get<std::string>(), "127.0.0.1"));
    EXPECT_EQ(e["phase"], i % 2 == 0 ? "PHASE_REQUESTED" : "PHASE_ANSWERED")
        << e;
    EXPECT_EQ(e["call_id"], doc["entries"][i - i % 2]["call_id"]) << e;
  }
  EXPECT_NE(doc["entries"][0]["call_id"], doc["entries"][2]["call_id"]);
  EXPECT_EQ(doc["entries"][1]["code"], 0);
  EXPECT_EQ(doc["entries"][5]["code"], 3);  // INVALID_ARGUMENT
  EXPECT_TRUE(absl::StrContains(
      doc["entries"][2]["request_json"].get<std::string>(), "200"));

  run = Sessionctl({"--json", "audit", "--after", absl::StrCat(first)});
  ASSERT_EQ(run.exit_code, 0) << run;
  EXPECT_EQ(json::parse(run.out)["entries"].size(), 5u) << run.out;
  run = Sessionctl({"--json", "audit", "--limit", "1"});
  ASSERT_EQ(run.exit_code, 0) << run;
  EXPECT_EQ(json::parse(run.out)["entries"].size(), 1u) << run.out;

  run = Sessionctl({"audit"});
  ASSERT_EQ(run.exit_code, 0) << run;
  EXPECT_TRUE(absl::StrContains(run.out, "SEQ")) << run;
  EXPECT_TRUE(absl::StrContains(run.out, "CALL")) << run;
  EXPECT_TRUE(absl::StrContains(run.out, "AdminService/SetExpiryLeeway"))
      << run;
  EXPECT_TRUE(absl::StrContains(run.out, "requested")) << run;
  EXPECT_TRUE(absl::StrContains(run.out, "INVALID_ARGUMENT")) << run;
  EXPECT_TRUE(absl::StrContains(
      run.out, doc["entries"][0]["call_id"].get<std::string>().substr(0, 8)))
      << run;

  run = Sessionctl({"audit", "export"});
  ASSERT_EQ(run.exit_code, 0) << run;
  std::vector<std::string> lines =
      absl::StrSplit(run.out, '\n', absl::SkipEmpty());
  ASSERT_EQ(lines.size(), 6u) << run.out;
  for (size_t i = 0; i < lines.size(); ++i) {
    const json e = json::parse(lines[i]);
    EXPECT_EQ(e["seq"].get<uint64_t>(), first + i);
    EXPECT_EQ(e["method"], "/sessiond.v1.AdminService/SetExpiryLeeway");
  }
  run = Sessionctl({"audit", "export", "--after", absl::StrCat(first + 4)});
  ASSERT_EQ(run.exit_code, 0) << run;
  lines = absl::StrSplit(run.out, '\n', absl::SkipEmpty());
  ASSERT_EQ(lines.size(), 1u) << run.out;
  EXPECT_EQ(json::parse(lines[0])["seq"].get<uint64_t>(), first + 5);
}

// Output that never reached its file fails the command (exit 6): an
// export or a JWKS written to a full disk was cut short and exited 0.
TEST_F(SessionctlAuditTest, AnExportThatCannotBeWrittenFails) {
  MakeEntries();
  ProcessRun run = SessionctlTo("/dev/full", "audit export");
  EXPECT_EQ(run.exit_code, 6) << run;
  EXPECT_TRUE(absl::StrContains(run.err, "could not write the output")) << run;
  run = SessionctlTo("/dev/null", "audit export");
  EXPECT_EQ(run.exit_code, 0) << run;
}

// `audit`'s own flags before `export` were taken by the listing and
// ignored by the export, which wrote the whole log and exited 0.
TEST_F(SessionctlAuditTest, ExportRefusesTheListingsFlags) {
  for (std::vector<std::string> args :
       {std::vector<std::string>{"audit", "--limit", "1", "export"},
        std::vector<std::string>{"audit", "--after", "3", "export"},
        std::vector<std::string>{"audit", "--follow", "export"}}) {
    const ProcessRun run = Sessionctl(args);
    EXPECT_EQ(run.exit_code, 2) << run;
    EXPECT_TRUE(absl::StrContains(run.err, "export takes only")) << run;
    EXPECT_TRUE(run.out.empty()) << run;
  }
}

// Entries the cluster dropped (retention) between two exports make the
// second one fail, naming the hole, instead of starting quietly at the
// oldest kept entry: an archive with a gap and exit 0. With --json the
// error is one line, as the entries before it are.
TEST_F(SessionctlAuditTest, AnExportThatWouldLeaveAHoleFails) {
  node_->Kill();
  node_->set_extra_flags({"--audit_max_entries", "4"});
  ASSERT_TRUE(node_->Start().ok());
  MakeEntries();  // six entries; the oldest kept are the last four
  ProcessRun run = Sessionctl({"--json", "audit"});
  ASSERT_EQ(run.exit_code, 0) << run;
  const uint64_t oldest = json::parse(run.out)["oldest_seq"].get<uint64_t>();
  ASSERT_GT(oldest, 2u) << run.out;

  run = Sessionctl({"audit", "export", "--after", "1"});
  EXPECT_EQ(run.exit_code, 1) << run;
  EXPECT_TRUE(absl::StrContains(
      run.err, absl::StrCat("entries 2..", oldest - 1, " were dropped")))
      << run;
  EXPECT_TRUE(absl::StrContains(
      run.err, absl::StrCat("audit export --after ", oldest - 1)))
      << run;
  EXPECT_TRUE(run.out.empty()) << run;

  run = Sessionctl({"--json", "audit", "export", "--after", "1"});
  EXPECT_EQ(run.exit_code, 1) << run;
  const std::vector<std::string> lines =
      absl::StrSplit(run.out, '\n', absl::SkipEmpty());
  ASSERT_EQ(lines.size(), 1u) << run.out;
  EXPECT_TRUE(json::parse(lines[0]).contains("error")) << run.out;

  // Past the hole knowingly, and from the start (nothing expected before).
  run = Sessionctl({"audit", "export", "--after", absl::StrCat(oldest - 1)});
  EXPECT_EQ(run.exit_code, 0) << run;
  run = Sessionctl({"audit", "export"});
  EXPECT_EQ(run.exit_code, 0) << run;
}

}  // namespace
}  // namespace sessiond::testing
