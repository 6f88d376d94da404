// Copyright sessiond authors. Licensed under the Apache License 2.0.
//
// Backup and rebuild (docs/OPERATIONS.md, "Backups and restore"), with the
// real binaries: a backup taken by `sessionctl backup` from a 3-node cluster
// under a create load, the cluster destroyed, `sessionctl restore-from` into
// a new data dir, one sessiond started on it with --force_new_cluster=1.
// Every session acknowledged before the backup started validates, and the
// manifest's counts are what the restored node reports. A damaged backup is
// refused.
#include <sys/stat.h>
#include <sys/wait.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "sessiond/v1/admin.grpc.pb.h"
#include "sessiond/v1/session.grpc.pb.h"
#include "tests/integration/cluster_harness.h"
#include "tests/integration/sessiond_process.h"

namespace sessiond::testing {
namespace {

struct Result {
  int exit_code = -1;
  std::string out;
  std::string err;
};

std::string Slurp(const std::string& path) {
  std::ifstream in(path);
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

// sessionctl with `args` (each single-quoted), stdout and stderr to files.
Result RunCtl(const std::string& scratch, const std::string& args) {
  const std::string out = scratch + "/ctl.out";
  const std::string err = scratch + "/ctl.err";
  const int status = std::system(absl::StrCat("HOME=", scratch, " timeout 60 ",
                                              SESSIONCTL_BINARY, " ", args,
                                              " >", out, " 2>", err)
                                     .c_str());
  Result r;
  if (WIFEXITED(status)) r.exit_code = WEXITSTATUS(status);
  r.out = Slurp(out);
  r.err = Slurp(err);
  return r;
}

// Flips two bytes of the first .sst file in `dir`.
void DamageAnSst(const std::string& dir) {
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    if (entry.path().extension() == ".sst") {
      std::fstream f(entry.path(),
                     std::ios::in | std::ios::out | std::ios::binary);
      f.seekp(10);
      f.put('\x5a');
      f.put('\xa5');
      return;
    }
  }
  ADD_FAILURE() << "no .sst file in " << dir;
}

std::string Describe(const Result& r) {
  return absl::StrCat("exit ", r.exit_code, "\n--- stdout\n", r.out,
                      "--- stderr\n", r.err);
}

grpc::Status CreateOne(sessiond::v1::SessionService::Stub& stub,
                       const std::string& user, std::string* token) {
  sessiond::v1::CreateSessionRequest request;
  request.set_user_id(user);
  request.set_ttl_ms(3'600'000);
  sessiond::v1::CreateSessionResponse response;
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(5)));
  const grpc::Status s = stub.CreateSession(&context, request, &response);
  if (s.ok()) *token = response.token();
  return s;
}

TEST(BackupRestoreTest, RebuildsAClusterFromOneBackupTakenUnderLoad) {
  ClusterOptions options;
  options.binary = SESSIOND_BINARY;
  // Compaction often enough that the backup's log refers to an image.
  options.flags = {"--log_compact_interval_ms=200",
                   "--log_compact_min_entries=50"};
  ClusterHarness cluster(options);
  ASSERT_TRUE(cluster.Start().ok());
  ASSERT_TRUE(cluster.WaitForWritable(absl::Seconds(20)).ok());
  TempDir scratch;

  // A create load through every node; acknowledged tokens in order.
  absl::Mutex mu;
  std::vector<std::string> acked;
  std::atomic<bool> stop{false};
  std::vector<std::thread> loaders;
  for (int id : cluster.ids()) {
    loaders.emplace_back([&, id] {
      auto stub = cluster.Stub(id);
      for (int n = 0; !stop.load(); ++n) {
        std::string token;
        if (CreateOne(*stub, absl::StrCat("user-", id, "-", n % 50), &token)
                .ok()) {
          absl::MutexLock lock(&mu);
          acked.push_back(token);
        }
      }
    });
  }
  auto acked_count = [&] {
    absl::MutexLock lock(&mu);
    return acked.size();
  };
  const absl::Time warm = absl::Now() + absl::Seconds(10);
  while (acked_count() < 600 && absl::Now() < warm) {
    absl::SleepFor(absl::Milliseconds(20));
  }
  ASSERT_GE(acked_count(), 100u);

  // The backup, of a follower if there is one (any node may be asked),
  // into a folder named with a trailing slash (as shells complete it).
  const std::string backup_dir = scratch.path() + "/backup";
  const size_t before = acked_count();
  const Result backup =
      RunCtl(scratch.path(),
             absl::StrCat("--endpoints ", cluster.client_address(2),
                          " --json --timeout 30s backup ", backup_dir, "/"));
  // More creates after it, which the backup may or may not hold.
  absl::SleepFor(absl::Milliseconds(300));
  stop.store(true);
  for (std::thread& t : loaders) t.join();
  ASSERT_EQ(backup.exit_code, 0) << Describe(backup);
  const nlohmann::json manifest =
      nlohmann::json::parse(backup.out, nullptr, false);
  ASSERT_TRUE(manifest.is_object()) << backup.out;
  EXPECT_EQ(manifest["node_id"], 2);
  EXPECT_GE(manifest["session_count"].get<uint64_t>(), before);
  EXPECT_TRUE(std::filesystem::exists(backup_dir + "/MANIFEST.sessiond.json"));
  EXPECT_TRUE(std::filesystem::exists(backup_dir + "/CURRENT"));

  // A second backup into the same folder is refused; a relative path too.
  const Result again = RunCtl(
      scratch.path(), absl::StrCat("--endpoints ", cluster.client_address(1),
                                   " backup ", backup_dir));
  EXPECT_EQ(again.exit_code, 1) << Describe(again);
  EXPECT_TRUE(absl::StrContains(again.err, "not empty")) << Describe(again);
  const Result relative = RunCtl(
      scratch.path(), absl::StrCat("--endpoints ", cluster.client_address(1),
                                   " backup relative/dir"));
  EXPECT_EQ(relative.exit_code, 2) << Describe(relative);
  // A folder whose name starts with ".." inside the node's data dir is
  // inside it.
  const Result inside = RunCtl(
      scratch.path(), absl::StrCat("--endpoints ", cluster.client_address(1),
                                   " backup ", cluster.data_dir(1), "/..x"));
  EXPECT_EQ(inside.exit_code, 1) << Describe(inside);
  EXPECT_TRUE(absl::StrContains(inside.err, "inside the data dir"))
      << Describe(inside);

  // The cluster is lost.
  for (int id : cluster.ids()) {
    cluster.Kill(id);
    std::filesystem::remove_all(cluster.data_dir(id));
  }

  // A damaged copy of the backup is refused.
  const std::string damaged = scratch.path() + "/damaged";
  std::filesystem::copy(backup_dir, damaged,
                        std::filesystem::copy_options::recursive);
  DamageAnSst(damaged);
  const Result refused = RunCtl(
      scratch.path(), absl::StrCat("restore-from ", damaged, " --data-dir ",
                                   scratch.path(), "/never"));
  EXPECT_EQ(refused.exit_code, 1) << Describe(refused);
  EXPECT_TRUE(absl::StrContains(refused.err, "damaged")) << Describe(refused);
  EXPECT_FALSE(std::filesystem::exists(scratch.path() + "/never"));
  // A backup damaged after its check, while restore-from waits to copy it
  // (a stall at that point, 2 s), is refused too: the copy is checked.
  const std::string racing = scratch.path() + "/racing";
  std::filesystem::copy(backup_dir, racing,
                        std::filesystem::copy_options::recursive);
  int raced = -1;
  std::thread restoring([&] {
    raced = std::system(
        absl::StrCat(
            "HOME=", scratch.path(),
            " SESSIOND_FAULT_POINT=restore.before_copy~2000 timeout 60 ",
            SESSIONCTL_BINARY, " restore-from ", racing, " --data-dir ",
            scratch.path(), "/raced >", scratch.path(), "/raced.out 2>",
            scratch.path(), "/raced.err")
            .c_str());
  });
  absl::SleepFor(absl::Milliseconds(700));
  DamageAnSst(racing);
  restoring.join();
  EXPECT_TRUE(WIFEXITED(raced) && WEXITSTATUS(raced) == 1)
      << Slurp(scratch.path() + "/raced.err");
  EXPECT_FALSE(std::filesystem::exists(scratch.path() + "/raced"));
  EXPECT_FALSE(std::filesystem::exists(scratch.path() + "/raced.restoring"));

  // A data dir inside the backup, or a backup where the restore would put
  // its temporary folder, is refused and the backup left as it was. The
  // first used to write the new data dir into the backup (which then no
  // longer matched its manifest); the second deleted the backup.
  const std::string inside_backup = backup_dir + "/data";
  const Result into_backup = RunCtl(
      scratch.path(),
      absl::StrCat("restore-from ", backup_dir, " --data-dir ", inside_backup));
  EXPECT_EQ(into_backup.exit_code, 2) << Describe(into_backup);
  EXPECT_TRUE(absl::StrContains(into_backup.err, "overlap"))
      << Describe(into_backup);
  EXPECT_FALSE(std::filesystem::exists(inside_backup));
  const std::string staged = scratch.path() + "/staged";
  std::filesystem::copy(backup_dir, staged + ".restoring",
                        std::filesystem::copy_options::recursive);
  const Result over_backup =
      RunCtl(scratch.path(), absl::StrCat("restore-from ", staged, ".restoring",
                                          " --data-dir ", staged));
  EXPECT_EQ(over_backup.exit_code, 2) << Describe(over_backup);
  EXPECT_TRUE(
      std::filesystem::exists(staged + ".restoring/MANIFEST.sessiond.json"));
  // A data dir that is a symbolic link to an empty folder (a volume): the
  // restore lands in that folder, and the link stays. It used to replace
  // the link with a folder of its own.
  const std::string volume = scratch.path() + "/volume";
  const std::string link = scratch.path() + "/link";
  std::filesystem::create_directory(volume);
  std::filesystem::create_directory_symlink(volume, link);
  const Result through_link =
      RunCtl(scratch.path(),
             absl::StrCat("restore-from ", backup_dir, " --data-dir ", link));
  EXPECT_EQ(through_link.exit_code, 0) << Describe(through_link);
  EXPECT_TRUE(std::filesystem::is_symlink(link));
  EXPECT_TRUE(std::filesystem::exists(volume + "/CURRENT"));

  // Restore and start one node on it.
  const std::string restored = scratch.path() + "/restored";
  const Result restore = RunCtl(
      scratch.path(),
      absl::StrCat("restore-from ", backup_dir, " --data-dir ", restored, "/"));
  ASSERT_EQ(restore.exit_code, 0) << Describe(restore);
  EXPECT_TRUE(absl::StrContains(restore.out, "--force_new_cluster=1"))
      << restore.out;
  EXPECT_TRUE(absl::StrContains(restore.out, "--node_id 2")) << restore.out;
  EXPECT_FALSE(std::filesystem::exists(restored + "/MANIFEST.sessiond.json"));

  // Started as its old member would be (no --force_new_cluster), it
  // refuses: its log is rolled back to the backup, and its votes could
  // elect a leader without the writes acknowledged since.
  {
    SessiondProcess member(
        SESSIOND_BINARY, restored,
        {"--node_id=2",
         absl::StrCat("--peer_listen=127.0.0.1:", PickFreePort())});
    ASSERT_TRUE(member.Launch().ok());
    const int exited = member.WaitForExit(absl::Seconds(60));
    ASSERT_NE(exited, -1) << "a restored dir started without the flag serves";
    EXPECT_TRUE(WIFEXITED(exited) && WEXITSTATUS(exited) == 4) << exited;
    EXPECT_TRUE(absl::StrContains(Slurp(member.log_path()),
                                  "was restored from a backup"))
        << Slurp(member.log_path());
  }
  SessiondProcess node(
      SESSIOND_BINARY, restored,
      {"--node_id=2", "--force_new_cluster=1",
       absl::StrCat("--peer_listen=127.0.0.1:", PickFreePort())});
  ASSERT_TRUE(node.Start().ok()) << Slurp(node.log_path());

  auto stub = node.NewStub();
  std::vector<std::string> tokens;
  {
    absl::MutexLock lock(&mu);
    tokens.assign(acked.begin(), acked.begin() + before);
  }
  size_t valid = 0;
  for (const std::string& token : tokens) {
    sessiond::v1::ValidateSessionRequest request;
    request.set_token(token);
    request.set_touch(false);
    sessiond::v1::ValidateSessionResponse response;
    grpc::ClientContext context;
    context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(5)));
    const grpc::Status s = stub->ValidateSession(&context, request, &response);
    ASSERT_TRUE(s.ok()) << s.error_message();
    if (response.outcome() == sessiond::v1::ValidateSessionResponse::VALID) {
      ++valid;
    }
  }
  EXPECT_EQ(valid, tokens.size());

  auto admin = sessiond::v1::AdminService::NewStub(
      grpc::CreateChannel(node.address(), grpc::InsecureChannelCredentials()));
  sessiond::v1::ClusterStatusResponse status;
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(10)));
  ASSERT_TRUE(admin
                  ->ClusterStatus(&context,
                                  sessiond::v1::ClusterStatusRequest(), &status)
                  .ok());
  EXPECT_EQ(status.leader(), 2u);
  EXPECT_EQ(
      status.cluster_id(),
      std::stoull(manifest["cluster_id"].get<std::string>(), nullptr, 16));
  bool found = false;
  for (const auto& m : status.members()) {
    if (m.node_id() != 2) continue;
    found = true;
    EXPECT_EQ(m.live_sessions(), manifest["session_count"].get<uint64_t>());
    EXPECT_GE(m.applied_index(), manifest["applied_index"].get<uint64_t>());
  }
  EXPECT_TRUE(found);
  node.Terminate();
}

// A backup into a folder that exists (an operator's, made 0700 because a
// backup holds the create key, or a mount point) keeps that folder: it used
// to be removed and made again by RocksDB, with default permissions (and a
// mount point could not be removed, so such backups always failed). A
// folder another backup is writing into is refused, and left alone.
TEST(BackupRestoreTest, ABackupKeepsItsFolderAndOneBeingWrittenIsRefused) {
  ClusterOptions options;
  options.binary = SESSIOND_BINARY;
  options.nodes = 1;
  ClusterHarness cluster(options);
  ASSERT_TRUE(cluster.Start().ok());
  ASSERT_TRUE(cluster.WaitForWritable(absl::Seconds(20)).ok());
  TempDir scratch;
  std::string token;
  ASSERT_TRUE(CreateOne(*cluster.Stub(1), "ursula", &token).ok());

  // An empty file system's root, as mounted for backups: it holds mkfs's
  // lost+found (refused as "not empty" before), no part of the backup.
  const std::string prepared = scratch.path() + "/prepared";
  ASSERT_TRUE(std::filesystem::create_directory(prepared));
  std::filesystem::permissions(prepared, std::filesystem::perms::owner_all);
  ASSERT_TRUE(std::filesystem::create_directory(prepared + "/lost+found"));
  std::filesystem::permissions(prepared + "/lost+found",
                               std::filesystem::perms::owner_all);
  struct stat before {};
  ASSERT_EQ(stat(prepared.c_str(), &before), 0);
  const Result backup = RunCtl(
      scratch.path(), absl::StrCat("--endpoints ", cluster.client_address(1),
                                   " --timeout 30s backup ", prepared));
  ASSERT_EQ(backup.exit_code, 0) << Describe(backup);
  struct stat after {};
  ASSERT_EQ(stat(prepared.c_str(), &after), 0);
  EXPECT_EQ(after.st_ino, before.st_ino);
  EXPECT_EQ(after.st_mode & 0777, 0700u);
  EXPECT_TRUE(std::filesystem::exists(prepared + "/MANIFEST.sessiond.json"));
  EXPECT_TRUE(std::filesystem::exists(prepared + "/CURRENT"));
  EXPECT_FALSE(std::filesystem::exists(prepared + "/.sessiond-backup.lock"));
  EXPECT_FALSE(std::filesystem::exists(prepared + "/.checkpoint"));
  // Asked of one node, another refuses and writes nothing: the address
  // sessionctl looked the node up by may serve another one by now.
  {
    auto admin = cluster.Admin(1);
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() +
                         std::chrono::seconds(30));
    sessiond::v1::BackupRequest request;
    request.set_dir(scratch.path() + "/elsewhere");
    request.set_node_id(7);
    sessiond::v1::BackupResponse response;
    const grpc::Status wrong = admin->Backup(&context, request, &response);
    EXPECT_EQ(wrong.error_code(), grpc::StatusCode::FAILED_PRECONDITION)
        << wrong.error_message();
    EXPECT_TRUE(
        absl::StrContains(wrong.error_message(), "this is node 1, not node 7"))
        << wrong.error_message();
    EXPECT_FALSE(std::filesystem::exists(scratch.path() + "/elsewhere"));
  }
  const Result named = RunCtl(
      scratch.path(), absl::StrCat("--endpoints ", cluster.client_address(1),
                                   " --timeout 30s backup --node 1 ",
                                   scratch.path(), "/named"));
  EXPECT_EQ(named.exit_code, 0) << Describe(named);
  EXPECT_TRUE(std::filesystem::exists(scratch.path() +
                                      "/named/MANIFEST.sessiond.json"));
  // It restores (restore-from checks every file against the manifest).
  const Result restored = RunCtl(
      scratch.path(), absl::StrCat("restore-from ", prepared, " --data-dir ",
                                   scratch.path(), "/new/parents/restored"));
  EXPECT_EQ(restored.exit_code, 0) << Describe(restored);
  EXPECT_TRUE(std::filesystem::exists(prepared + "/lost+found"));
  EXPECT_FALSE(std::filesystem::exists(scratch.path() +
                                       "/new/parents/restored/lost+found"));

  // Another backup's lock: refused, and nothing there is touched.
  const std::string busy = scratch.path() + "/busy";
  ASSERT_TRUE(std::filesystem::create_directory(busy));
  std::ofstream(busy + "/.sessiond-backup.lock").put('\n');
  const Result refused = RunCtl(
      scratch.path(), absl::StrCat("--endpoints ", cluster.client_address(1),
                                   " --timeout 30s backup ", busy));
  EXPECT_EQ(refused.exit_code, 1) << Describe(refused);
  EXPECT_TRUE(absl::StrContains(refused.err, "another backup being written"))
      << Describe(refused);
  EXPECT_TRUE(std::filesystem::exists(busy + "/.sessiond-backup.lock"));
  EXPECT_FALSE(std::filesystem::exists(busy + "/CURRENT"));
  // A backup that never finished (its lock, no manifest) is not restored,
  // and says so: it was called "not a sessiond backup".
  const Result unfinished =
      RunCtl(scratch.path(), absl::StrCat("restore-from ", busy, " --data-dir ",
                                          scratch.path(), "/from-busy"));
  EXPECT_EQ(unfinished.exit_code, 2) << Describe(unfinished);
  EXPECT_TRUE(absl::StrContains(unfinished.err, "never finished"))
      << Describe(unfinished);
  EXPECT_FALSE(std::filesystem::exists(scratch.path() + "/from-busy"));
}

}  // namespace
}  // namespace sessiond::testing
