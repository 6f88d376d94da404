// Copyright sessiond authors. Licensed under the Apache License 2.0.
//
// The audit log (issue 9, "Audit") on real processes: audited calls through
// a follower and the leader, a refused one, a bulk revocation; every node
// lists the same entries, secrets redacted; they survive the leader's
// SIGKILL and a restart of every node, and seqs continue; no node logs the
// flush's confirmation token. On a TLS cluster, entries name the identity
// and how it authenticated.
#include <grpcpp/grpcpp.h>
#include <sys/wait.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/fault_point.h"
#include "gtest/gtest.h"
#include "sessiond/v1/admin.grpc.pb.h"
#include "sessiond/v1/session.grpc.pb.h"
#include "tests/integration/cluster_harness.h"
#include "tests/integration/tls_files.h"

namespace sessiond::testing {
namespace {

using sessiond::v1::AuditEntry;

constexpr char kFlush[] = "/sessiond.v1.AdminService/Flush";
constexpr char kResume[] = "/sessiond.v1.AdminService/ResumeExpiry";
constexpr char kLeeway[] = "/sessiond.v1.AdminService/SetExpiryLeeway";
constexpr char kRevokeUser[] = "/sessiond.v1.SessionService/RevokeUserSessions";

// Every entry node `id` lists, oldest first (paging to the end).
absl::StatusOr<std::vector<AuditEntry>> ListAll(
    sessiond::v1::AdminService::Stub& admin) {
  std::vector<AuditEntry> entries;
  uint64_t after = 0;
  for (int page = 0; page < 100; ++page) {
    sessiond::v1::ListAuditRequest request;
    request.set_after_seq(after);
    sessiond::v1::ListAuditResponse response;
    grpc::ClientContext context;
    SetDeadline(&context, absl::Seconds(10));
    const grpc::Status s = admin.ListAudit(&context, request, &response);
    if (!s.ok()) return absl::UnavailableError(s.error_message());
    for (const AuditEntry& e : response.entries()) entries.push_back(e);
    if (response.next_after_seq() == 0) break;
    after = response.next_after_seq();
  }
  return entries;
}

// Waits (bounded) until node `id` lists at least `count` entries.
std::vector<AuditEntry> WaitForEntries(sessiond::v1::AdminService::Stub& admin,
                                       size_t count) {
  std::vector<AuditEntry> last;
  const absl::Time deadline = absl::Now() + absl::Seconds(30);
  while (absl::Now() < deadline) {
    absl::StatusOr<std::vector<AuditEntry>> entries = ListAll(admin);
    if (entries.ok()) {
      last = *entries;
      if (last.size() >= count) return last;
    }
    absl::SleepFor(absl::Milliseconds(100));
  }
  return last;
}

std::string Describe(const std::vector<AuditEntry>& entries) {
  std::string text;
  for (const AuditEntry& e : entries) {
    absl::StrAppend(&text, e.ShortDebugString(), "\n");
  }
  return text;
}

// Every log file under `root` (one per start of each node).
// The nodes' own logs (root/nodeN.K.log), not RocksDB's files inside the
// data dirs (a pending confirmation token is replicated state, and RocksDB's
// write-ahead logs are named *.log too).
std::vector<std::string> LogFiles(const std::string& root) {
  std::vector<std::string> logs;
  for (const auto& f : std::filesystem::directory_iterator(root)) {
    if (f.is_regular_file() && f.path().extension() == ".log") {
      logs.push_back(f.path().string());
    }
  }
  return logs;
}

// SetExpiryLeeway through `id` with `leeway_ms` and a client deadline of
// `deadline`: the call's status.
grpc::Status SetLeeway(sessiond::v1::AdminService::Stub& admin,
                       int64_t leeway_ms, absl::Duration deadline) {
  sessiond::v1::SetExpiryLeewayRequest request;
  request.set_expiry_leeway_ms(leeway_ms);
  sessiond::v1::SetExpiryLeewayResponse response;
  grpc::ClientContext context;
  SetDeadline(&context, deadline);
  return admin.SetExpiryLeeway(&context, request, &response);
}

grpc::Status SetLeeway(ClusterHarness& cluster, int id, int64_t leeway_ms,
                       absl::Duration deadline) {
  return SetLeeway(*cluster.Admin(id), leeway_ms, deadline);
}

size_t CountMethod(const std::vector<AuditEntry>& entries,
                   const std::string& method) {
  size_t n = 0;
  for (const AuditEntry& e : entries) n += e.method() == method ? 1 : 0;
  return n;
}

TEST(AuditTest, EntriesAreReplicatedRedactedAndSurviveLeaderLossAndRestart) {
  ClusterOptions options;
  options.binary = SESSIOND_BINARY;
  ClusterHarness cluster(options);
  ASSERT_TRUE(cluster.Start().ok());
  absl::StatusOr<int> leader = cluster.WaitForLeader(absl::Seconds(20));
  ASSERT_TRUE(leader.ok()) << leader.status();
  ASSERT_TRUE(cluster.WaitForWritable(absl::Seconds(20)).ok());
  const int follower = *leader == 1 ? 2 : 1;

  // 1, 2: a flush, preview then confirm, through a follower.
  std::string confirmation;
  {
    auto admin = cluster.Admin(follower);
    sessiond::v1::FlushRequest request;
    request.set_reason("audit test");
    sessiond::v1::FlushResponse response;
    grpc::ClientContext context;
    SetDeadline(&context, absl::Seconds(10));
    const grpc::Status s = admin->Flush(&context, request, &response);
    ASSERT_TRUE(s.ok()) << s.error_message();
    confirmation = response.preview().confirmation_token();
    ASSERT_FALSE(confirmation.empty());
  }
  {
    auto admin = cluster.Admin(follower);
    sessiond::v1::FlushRequest request;
    request.set_confirmation_token(confirmation);
    sessiond::v1::FlushResponse response;
    grpc::ClientContext context;
    SetDeadline(&context, absl::Seconds(10));
    const grpc::Status s = admin->Flush(&context, request, &response);
    ASSERT_TRUE(s.ok()) << s.error_message();
  }
  // 3: a refused ResumeExpiry (the breaker is closed).
  {
    auto admin = cluster.Admin(follower);
    sessiond::v1::ResumeExpiryResponse response;
    grpc::ClientContext context;
    SetDeadline(&context, absl::Seconds(10));
    const grpc::Status s = admin->ResumeExpiry(
        &context, sessiond::v1::ResumeExpiryRequest(), &response);
    ASSERT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION)
        << s.error_message();
  }
  // 4: a bulk revocation of one user's sessions.
  {
    auto sessions = cluster.Stub(*leader);
    sessiond::v1::CreateSessionRequest create;
    create.set_user_id("alice");
    create.set_ttl_ms(3600 * 1000);
    sessiond::v1::CreateSessionResponse created;
    grpc::ClientContext create_context;
    SetDeadline(&create_context, absl::Seconds(10));
    ASSERT_TRUE(
        sessions->CreateSession(&create_context, create, &created).ok());
    sessiond::v1::RevokeUserSessionsRequest request;
    request.set_user_id("alice");
    request.set_reason("audit test");
    sessiond::v1::RevokeUserSessionsResponse response;
    grpc::ClientContext context;
    SetDeadline(&context, absl::Seconds(10));
    const grpc::Status s =
        sessions->RevokeUserSessions(&context, request, &response);
    ASSERT_TRUE(s.ok()) << s.error_message();
    EXPECT_EQ(response.revoked_count(), 1u);
  }
  // 5: a setting, on the leader.
  {
    const grpc::Status s = SetLeeway(cluster, *leader, 1500, absl::Seconds(10));
    ASSERT_TRUE(s.ok()) << s.error_message();
  }

  // Each acknowledged call's two entries were committed, requested before
  // it ran and answered before its answer: every node lists all ten, in
  // call order, the same.
  std::vector<AuditEntry> reference;
  for (int id : cluster.ids()) {
    auto admin = cluster.Admin(id);
    std::vector<AuditEntry> entries = WaitForEntries(*admin, 10);
    ASSERT_EQ(entries.size(), 10u) << "node " << id << "\n"
                                   << Describe(entries);
    if (reference.empty()) {
      reference = entries;
    } else {
      for (size_t i = 0; i < entries.size(); ++i) {
        EXPECT_EQ(entries[i].SerializeAsString(),
                  reference[i].SerializeAsString())
            << "node " << id << " entry " << i;
      }
    }
  }
  const std::vector<std::string> methods = {kFlush, kFlush, kResume,
                                            kRevokeUser, kLeeway};
  const std::vector<int> codes = {0, 0, grpc::StatusCode::FAILED_PRECONDITION,
                                  0, 0};
  const std::vector<int> served = {follower, follower, follower, *leader,
                                   *leader};
  std::set<std::string> call_ids;
  for (size_t i = 0; i < reference.size(); ++i) {
    const AuditEntry& e = reference[i];
    const size_t call = i / 2;
    SCOPED_TRACE(e.ShortDebugString());
    EXPECT_EQ(e.seq(), reference[0].seq() + i);
    EXPECT_EQ(e.method(), methods[call]);
    EXPECT_EQ(e.phase(), i % 2 == 0 ? AuditEntry::PHASE_REQUESTED
                                    : AuditEntry::PHASE_ANSWERED);
    EXPECT_EQ(e.code(), i % 2 == 0 ? 0 : codes[call]);
    EXPECT_EQ(e.call_id().size(), 16u);
    EXPECT_EQ(e.call_id(), reference[2 * call].call_id());
    call_ids.insert(e.call_id());
    EXPECT_EQ(e.node_id(), static_cast<uint64_t>(served[call]));
    EXPECT_TRUE(absl::StrContains(e.peer(), "127.0.0.1")) << e.peer();
    EXPECT_GT(e.time_ms(), 0);
    EXPECT_GT(e.received_ms(), 0);
    // A plaintext loopback cluster has no identities.
    EXPECT_EQ(e.identity(), "");
    EXPECT_FALSE(absl::StrContains(e.request_json(), confirmation));
    EXPECT_FALSE(absl::StrContains(e.message(), confirmation));
  }
  EXPECT_EQ(call_ids.size(), 5u);
  EXPECT_TRUE(absl::StrContains(reference[0].request_json(), "audit test"));
  EXPECT_FALSE(
      absl::StrContains(reference[0].request_json(), "confirmation_token"));
  EXPECT_TRUE(absl::StrContains(reference[2].request_json(),
                                "\"confirmation_token\":\"[redacted]\""))
      << reference[2].request_json();
  EXPECT_TRUE(absl::StrContains(reference[5].message(), "not open"));
  EXPECT_TRUE(absl::StrContains(reference[6].request_json(), "alice"));
  EXPECT_TRUE(absl::StrContains(reference[9].request_json(), "1500"));

  // The leader dies: the new one lists them all, and the next audited call
  // gets the next seqs.
  cluster.Kill(*leader);
  absl::StatusOr<int> next = cluster.WaitForLeader(absl::Seconds(20));
  ASSERT_TRUE(next.ok()) << next.status();
  {
    auto admin = cluster.Admin(*next);
    std::vector<AuditEntry> entries = WaitForEntries(*admin, 10);
    ASSERT_EQ(entries.size(), 10u) << Describe(entries);
    sessiond::v1::SetExpiryLeewayRequest request;
    request.set_expiry_leeway_ms(0);
    sessiond::v1::SetExpiryLeewayResponse response;
    grpc::ClientContext context;
    SetDeadline(&context, absl::Seconds(10));
    const grpc::Status s = admin->SetExpiryLeeway(&context, request, &response);
    ASSERT_TRUE(s.ok()) << s.error_message();
    entries = WaitForEntries(*admin, 12);
    ASSERT_EQ(entries.size(), 12u) << Describe(entries);
    EXPECT_EQ(entries[10].seq(), reference[9].seq() + 1);
    for (int i : {10, 11}) {
      EXPECT_EQ(entries[i].method(), kLeeway);
      EXPECT_EQ(entries[i].node_id(), static_cast<uint64_t>(*next));
    }
  }

  // Every node restarts: all twelve are still there, on every node.
  for (int id : cluster.running_ids()) cluster.Kill(id);
  for (int id : cluster.ids()) {
    ASSERT_TRUE(cluster.StartNode(id).ok()) << cluster.LogTail(id);
  }
  ASSERT_TRUE(cluster.WaitForLeader(absl::Seconds(30)).ok());
  for (int id : cluster.ids()) {
    auto admin = cluster.Admin(id);
    std::vector<AuditEntry> entries = WaitForEntries(*admin, 12);
    ASSERT_EQ(entries.size(), 12u) << "node " << id << "\n"
                                   << Describe(entries);
    for (size_t i = 0; i < 10; ++i) {
      EXPECT_EQ(entries[i].SerializeAsString(),
                reference[i].SerializeAsString())
          << "node " << id << " entry " << i;
    }
  }

  // No node ever logged the confirmation token.
  const std::vector<std::string> logs = LogFiles(cluster.root());
  EXPECT_GE(logs.size(), 6u);
  for (const std::string& log : logs) {
    EXPECT_FALSE(absl::StrContains(ReadTextFile(log), confirmation)) << log;
  }
}

// ---- Identities on a TLS cluster (certificates and a bearer token) ----

constexpr char kToken[] = "a-bearer-token-for-the-audit-robot-0123456789";

// Entries of one method and phase.
size_t CountPhase(const std::vector<AuditEntry>& entries,
                  const std::string& method, AuditEntry::Phase phase) {
  size_t n = 0;
  for (const AuditEntry& e : entries) {
    n += e.method() == method && e.phase() == phase ? 1 : 0;
  }
  return n;
}

// The expiry leeway node `id` has applied.
int64_t LeewayOf(ClusterHarness& cluster, int id) {
  absl::StatusOr<sessiond::v1::ClusterStatusResponse> status =
      cluster.ClusterStatus(id);
  EXPECT_TRUE(status.ok()) << status.status();
  return status.ok() ? status->expiry_leeway_ms() : -1;
}

// Starts a 3-node cluster, then restarts one follower with `flags` and
// waits until the cluster converged. Zeros when any step failed (reported).
struct Roles {
  int leader = 0;
  int follower = 0;
};
Roles StartWithAFollowerFlagged(ClusterHarness& cluster,
                                std::vector<std::string> flags) {
  EXPECT_TRUE(cluster.Start().ok());
  absl::StatusOr<int> leader = cluster.WaitForLeader(absl::Seconds(20));
  EXPECT_TRUE(leader.ok()) << leader.status();
  if (!leader.ok()) return {};
  const int follower = *leader == 1 ? 2 : 1;
  cluster.Kill(follower);
  cluster.SetNodeFlags(follower, std::move(flags));
  const absl::Status started = cluster.StartNode(follower);
  EXPECT_TRUE(started.ok()) << started;
  const absl::StatusOr<std::string> converged =
      cluster.WaitForConvergence(absl::Seconds(60));
  EXPECT_TRUE(converged.ok()) << converged.status();
  if (!started.ok() || !converged.ok()) return {};
  return {*leader, follower};
}

// On a follower whose applies lag (a slow disk: each waits 100 ms):
// - ListAudit lists a call acknowledged through the leader;
// - a call whose requested entry cannot be written in time (here: no
//   leader for 5 s; an entry's write lasts at most 3 s) is refused, and
//   changes nothing, though its client would still wait: its body never
//   runs.
TEST(AuditTest, ACallWhoseEntryCannotBeWrittenDoesNothing) {
  ClusterOptions options;
  options.binary = SESSIOND_BINARY;
  ClusterHarness cluster(options);
  const Roles roles = StartWithAFollowerFlagged(
      cluster, {"--fault_point", "apply.before_apply~100",
                "--linearizable_timeout_ms", "8000"});
  ASSERT_NE(roles.follower, 0);
  const int leader = roles.leader;
  const int slow = roles.follower;

  auto slow_admin = cluster.Admin(slow);
  ASSERT_TRUE(SetLeeway(cluster, leader, 1300, absl::Seconds(10)).ok());
  // Its default read waits for its own apply (read_barrier_test has the
  // exact case); it answers stale only while it knows no leader, which a
  // loaded machine can make happen here: a few tries.
  absl::StatusOr<std::vector<AuditEntry>> listed;
  for (int i = 0; i < 20; ++i) {
    listed = ListAll(*slow_admin);
    if (listed.ok() && CountMethod(*listed, kLeeway) == 2) break;
    absl::SleepFor(absl::Milliseconds(500));
  }
  ASSERT_TRUE(listed.ok()) << listed.status();
  EXPECT_EQ(CountMethod(*listed, kLeeway), 2u) << Describe(*listed);

  const std::vector<int> others = {leader, 6 - leader - slow};
  for (int id : others) cluster.Pause(id);
  grpc::Status refused;
  grpc::ClientContext refused_context;
  std::thread call([&] {
    sessiond::v1::SetExpiryLeewayRequest request;
    request.set_expiry_leeway_ms(1200);
    sessiond::v1::SetExpiryLeewayResponse response;
    SetDeadline(&refused_context, absl::Seconds(10));
    refused = slow_admin->SetExpiryLeeway(&refused_context, request, &response);
  });
  absl::SleepFor(absl::Seconds(5));
  for (int id : others) cluster.Resume(id);
  call.join();
  EXPECT_FALSE(refused.ok());
  EXPECT_TRUE(absl::StrContains(refused.error_message(),
                                "audit entry could not be written"))
      << refused.error_message();
  // Marked as never proposed: clients retry it as safely as any write that
  // was not proposed.
  const auto& trailers = refused_context.GetServerTrailingMetadata();
  const auto not_proposed = trailers.find("sessiond-not-proposed");
  ASSERT_NE(not_proposed, trailers.end());
  EXPECT_EQ(
      std::string(not_proposed->second.data(), not_proposed->second.size()),
      "1");
  absl::StatusOr<int> now_leading = cluster.WaitForLeader(absl::Seconds(20));
  ASSERT_TRUE(now_leading.ok());
  // Past the time the refused call's entry could still commit (its write
  // lasts commit_timeout, 3 s): the leeway is the first call's, and only
  // the first call was answered.
  absl::SleepFor(absl::Seconds(4));
  ASSERT_TRUE(cluster.WaitForConvergence(absl::Seconds(60)).ok());
  for (int id : cluster.ids()) EXPECT_EQ(LeewayOf(cluster, id), 1300);
  absl::StatusOr<std::vector<AuditEntry>> entries =
      ListAll(*cluster.Admin(*now_leading));
  ASSERT_TRUE(entries.ok()) << entries.status();
  EXPECT_EQ(CountPhase(*entries, kLeeway, AuditEntry::PHASE_ANSWERED), 1u)
      << Describe(*entries) << cluster.LogTail(slow);

  // Refused at a client deadline shorter than the entry's write (1 s
  // against commit_timeout's 3 s), the call did nothing, but its requested
  // entry went on and committed once the others came back: the log showed
  // a call asked for and never answered, and nothing said so. The refusal
  // now follows it on record (or, if the write failed too, the node logs
  // audit.write_failed).
  for (int id : others) cluster.Pause(id);
  {
    sessiond::v1::SetExpiryLeewayRequest request;
    request.set_expiry_leeway_ms(1100);
    sessiond::v1::SetExpiryLeewayResponse response;
    grpc::ClientContext context;
    SetDeadline(&context, absl::Seconds(1));
    std::thread resume([&] {
      absl::SleepFor(absl::Milliseconds(1300));
      for (int id : others) cluster.Resume(id);
    });
    EXPECT_FALSE(
        slow_admin->SetExpiryLeeway(&context, request, &response).ok());
    resume.join();
  }
  absl::SleepFor(absl::Seconds(4));  // past the entry's write
  ASSERT_TRUE(cluster.WaitForConvergence(absl::Seconds(60)).ok());
  for (int id : cluster.ids()) EXPECT_EQ(LeewayOf(cluster, id), 1300);
  entries = ListAll(*cluster.Admin(slow));
  ASSERT_TRUE(entries.ok()) << entries.status();
  size_t refusals_on_record = 0;
  for (const AuditEntry& e : *entries) {
    if (e.method() == kLeeway && e.phase() == AuditEntry::PHASE_ANSWERED &&
        e.code() == static_cast<int32_t>(grpc::StatusCode::DEADLINE_EXCEEDED) &&
        absl::StrContains(e.message(), "did nothing")) {
      ++refusals_on_record;
    }
  }
  const std::string log = cluster.LogTail(slow, 1'000'000);
  size_t write_failures = 0;
  for (size_t at = log.find("audit.write_failed"); at != std::string::npos;
       at = log.find("audit.write_failed", at + 1)) {
    ++write_failures;
  }
  // The first refused call's write failed: one line already.
  EXPECT_TRUE(refusals_on_record == 1 || write_failures >= 2)
      << refusals_on_record << " refusals on record, " << write_failures
      << " audit.write_failed lines\n"
      << Describe(*entries);
}

// The node serving a change dies after the change applied and before the
// call's answered entry: the change is on record still, as requested (the
// entry written before it ran), by the node that served it.
TEST(AuditTest, AChangeWhoseServerDiedBeforeAnsweringIsOnRecordAsRequested) {
  ClusterOptions options;
  options.binary = SESSIOND_BINARY;
  ClusterHarness cluster(options);
  const Roles roles = StartWithAFollowerFlagged(
      cluster, {"--fault_point", "audit.before_answered_entry"});
  ASSERT_NE(roles.follower, 0);
  const int leader = roles.leader;
  const int serving = roles.follower;

  EXPECT_FALSE(SetLeeway(cluster, serving, 1700, absl::Seconds(10)).ok());
  const int exit = cluster.WaitForExit(serving, absl::Seconds(10));
  ASSERT_TRUE(exit != -1 && WIFEXITED(exit)) << exit;
  EXPECT_EQ(WEXITSTATUS(exit), kFaultPointExitCode);
  EXPECT_EQ(LeewayOf(cluster, leader), 1700);
  absl::StatusOr<std::vector<AuditEntry>> entries =
      ListAll(*cluster.Admin(leader));
  ASSERT_TRUE(entries.ok()) << entries.status();
  ASSERT_EQ(CountPhase(*entries, kLeeway, AuditEntry::PHASE_REQUESTED), 1u)
      << Describe(*entries);
  EXPECT_EQ(CountPhase(*entries, kLeeway, AuditEntry::PHASE_ANSWERED), 0u)
      << Describe(*entries);
  for (const AuditEntry& e : *entries) {
    if (e.method() != kLeeway) continue;
    EXPECT_EQ(e.node_id(), static_cast<uint64_t>(serving));
    EXPECT_TRUE(absl::StrContains(e.request_json(), "1700"))
        << e.request_json();
  }
}

TEST(AuditTest, TlsEntriesNameTheIdentityAndHowItAuthenticated) {
  TempDir certs;
  ASSERT_EQ(RunDevCa(absl::StrCat("--nodes 3 ", certs.path(), " operator"),
                     certs.path() + "/dev-ca.log"),
            0)
      << ReadTextFile(certs.path() + "/dev-ca.log");
  std::ofstream(certs.path() + "/roles.conf")
      << "node-1 = peer\nnode-2 = peer\nnode-3 = peer\n"
      << "operator = app, admin\nrobot = admin\n"
      << "token_sha256 = " << Sha256Hex(kToken) << " robot\n";
  ClusterOptions options;
  options.binary = SESSIOND_BINARY;
  options.flags = {"--tls_ca",          certs.path() + "/ca.pem",
                   "--auth_file",       certs.path() + "/roles.conf",
                   "--tls_client_auth", "optional"};
  options.client_credentials =
      TlsCredentials(certs.path(), certs.path(), "operator");
  options.peer_credentials =
      TlsCredentials(certs.path(), certs.path(), "node-1");
  ClusterHarness cluster(options);
  for (int id = 1; id <= 3; ++id) {
    const std::string node = certs.path() + "/" + absl::StrCat("node-", id);
    cluster.SetNodeFlags(
        id, {"--tls_cert", node + ".pem", "--tls_key", node + "-key.pem"});
  }
  ASSERT_TRUE(cluster.Start().ok());
  absl::StatusOr<int> leader = cluster.WaitForLeader(absl::Seconds(20));
  ASSERT_TRUE(leader.ok()) << leader.status();

  auto set_leeway = [&](std::shared_ptr<grpc::ChannelCredentials> creds,
                        int64_t ms) {
    auto admin = sessiond::v1::AdminService::NewStub(
        grpc::CreateChannel(cluster.client_address(*leader), creds));
    sessiond::v1::SetExpiryLeewayRequest request;
    request.set_expiry_leeway_ms(ms);
    sessiond::v1::SetExpiryLeewayResponse response;
    grpc::ClientContext context;
    SetDeadline(&context, absl::Seconds(10));
    return admin->SetExpiryLeeway(&context, request, &response);
  };
  grpc::Status s =
      set_leeway(TlsCredentials(certs.path(), certs.path(), "", kToken), 100);
  ASSERT_TRUE(s.ok()) << s.error_message();
  s = set_leeway(TlsCredentials(certs.path(), certs.path(), "operator"), 200);
  ASSERT_TRUE(s.ok()) << s.error_message();

  auto admin = cluster.Admin(*leader);  // as operator
  std::vector<AuditEntry> entries = WaitForEntries(*admin, 4);
  ASSERT_EQ(entries.size(), 4u) << Describe(entries);
  for (int i : {0, 1}) {
    EXPECT_EQ(entries[i].identity(), "robot");
    EXPECT_EQ(entries[i].auth_method(), "bearer_token");
  }
  for (int i : {2, 3}) {
    EXPECT_EQ(entries[i].identity(), "operator");
    EXPECT_EQ(entries[i].auth_method(), "certificate");
  }
  for (const AuditEntry& e : entries) {
    EXPECT_FALSE(absl::StrContains(e.ShortDebugString(), kToken));
  }
}

}  // namespace
}  // namespace sessiond::testing
