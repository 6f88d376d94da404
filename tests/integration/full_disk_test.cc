// Copyright sessiond authors. Licensed under the Apache License 2.0.
//
// A full disk (issue 10, part 1), on a real file system that really fills:
// each test mounts a small tmpfs, in a private mount namespace this binary
// enters before any test runs (as root, or through a user namespace), and
// runs real sessiond processes on it. Before the fix the node stopped with
// "node_driver.cc:428: CHECK failed: log_->Append(...) ... No space left on
// device" after 143 creates on an 8 MiB disk, and restarting on the full
// disk aborted again.
#include <fcntl.h>
#include <grpcpp/create_channel.h>
#include <grpcpp/security/credentials.h>
#include <sched.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/statvfs.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"
#include "sessiond/v1/admin.grpc.pb.h"
#include "sessiond/v1/session.grpc.pb.h"
#include "storage/database.h"
#include "storage/disk_guard.h"
#include "tests/integration/cluster_harness.h"
#include "tests/integration/sessiond_process.h"

namespace sessiond::testing {
namespace {

using sessiond::v1::CreateSessionRequest;
using sessiond::v1::CreateSessionResponse;
using sessiond::v1::ValidateSessionRequest;
using sessiond::v1::ValidateSessionResponse;

constexpr uint64_t kMiB = 1 << 20;

// Why tmpfs mounts are impossible here (empty when they are possible).
std::string* g_no_mounts = nullptr;

bool WriteFile(const std::string& path, const std::string& text) {
  std::ofstream out(path);
  out << text;
  return static_cast<bool>(out.flush());
}

// Enters a mount namespace of this process's own, so tests may mount tmpfs
// file systems that nobody else sees and that vanish with the process. Must
// run while the process has one thread (before gRPC starts any).
std::string EnterPrivateMountNamespace() {
  const uid_t uid = geteuid();
  const gid_t gid = getegid();
  if (uid != 0) {
    if (unshare(CLONE_NEWUSER | CLONE_NEWNS) != 0) {
      return absl::StrCat("unshare(CLONE_NEWUSER|CLONE_NEWNS): ",
                          std::strerror(errno));
    }
    if (!WriteFile("/proc/self/setgroups", "deny") ||
        !WriteFile("/proc/self/uid_map", absl::StrCat("0 ", uid, " 1")) ||
        !WriteFile("/proc/self/gid_map", absl::StrCat("0 ", gid, " 1"))) {
      return "cannot write the user namespace's uid/gid maps";
    }
  } else if (unshare(CLONE_NEWNS) != 0) {
    return absl::StrCat("unshare(CLONE_NEWNS): ", std::strerror(errno));
  }
  if (mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0) {
    return absl::StrCat("making / private: ", std::strerror(errno));
  }
  return "";
}

#define SKIP_WITHOUT_MOUNTS()                                        \
  do {                                                               \
    if (!g_no_mounts->empty()) {                                     \
      GTEST_SKIP() << "cannot mount a tmpfs here: " << *g_no_mounts; \
    }                                                                \
  } while (0)

// A tmpfs of `bytes` mounted on `dir` (created), unmounted on destruction.
class Tmpfs {
 public:
  // `options`: more tmpfs mount options ("nr_inodes=N").
  Tmpfs(std::string dir, uint64_t bytes, const std::string& options = "")
      : dir_(std::move(dir)) {
    std::filesystem::create_directories(dir_);
    const std::string data =
        absl::StrCat("size=", bytes, options.empty() ? "" : ",", options);
    mounted_ = mount("tmpfs", dir_.c_str(), "tmpfs", 0, data.c_str()) == 0;
    EXPECT_TRUE(mounted_) << "mount tmpfs on " << dir_ << ": "
                          << std::strerror(errno);
  }
  ~Tmpfs() {
    if (mounted_) umount2(dir_.c_str(), MNT_DETACH);
  }
  bool mounted() const { return mounted_; }

 private:
  std::string dir_;
  bool mounted_ = false;
};

uint64_t FreeBytes(const std::string& dir) {
  struct statvfs fs;
  if (statvfs(dir.c_str(), &fs) != 0) return 0;
  return static_cast<uint64_t>(fs.f_bavail) * fs.f_frsize;
}

// Another program filling the disk: writes `path` until it holds `bytes`
// or the disk is full.
void FillWith(const std::string& path, uint64_t bytes) {
  const int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0600);
  ASSERT_GE(fd, 0) << path << ": " << std::strerror(errno);
  const std::string chunk(64 << 10, 'f');
  uint64_t written = 0;
  while (written < bytes) {
    const size_t n =
        static_cast<size_t>(std::min<uint64_t>(chunk.size(), bytes - written));
    const ssize_t w = write(fd, chunk.data(), n);
    if (w <= 0) break;  // full
    written += static_cast<uint64_t>(w);
  }
  close(fd);
}

// A create with seven attributes of 2,000 bytes (the reproduction).
grpc::Status CreateBig(sessiond::v1::SessionService::Stub* stub,
                       const std::string& user, std::string* token,
                       absl::Duration deadline = absl::Seconds(10)) {
  CreateSessionRequest request;
  request.set_user_id(user);
  for (int k = 0; k < 7; ++k) {
    (*request.mutable_attributes())[absl::StrCat("k", k)] =
        std::string(2000, 'a' + k);
  }
  CreateSessionResponse response;
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + deadline));
  grpc::Status status = stub->CreateSession(&context, request, &response);
  if (status.ok()) *token = response.token();
  return status;
}

ValidateSessionResponse::Outcome Validate(
    sessiond::v1::SessionService::Stub* stub, const std::string& token,
    bool touch = false) {
  ValidateSessionRequest request;
  request.set_token(token);
  request.set_touch(touch);
  ValidateSessionResponse response;
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() +
                       std::chrono::seconds(10));
  const grpc::Status status =
      stub->ValidateSession(&context, request, &response);
  EXPECT_TRUE(status.ok()) << status.error_code() << " "
                           << status.error_message();
  return response.outcome();
}

// Creates until the node refuses for lack of space (bounded): the tokens
// acknowledged, and the refusal.
std::vector<std::string> CreateUntilRefused(
    sessiond::v1::SessionService::Stub* stub, grpc::Status* refusal) {
  std::vector<std::string> acked;
  for (int i = 0; i < 5000; ++i) {
    std::string token;
    const grpc::Status status = CreateBig(stub, absl::StrCat("u", i), &token);
    if (status.ok()) {
      acked.push_back(token);
      continue;
    }
    if (status.error_code() == grpc::StatusCode::RESOURCE_EXHAUSTED) {
      *refusal = status;
      break;
    }
    // A write the disk stopped after it was accepted: not acknowledged
    // (it may still apply once space is back).
    EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAVAILABLE)
        << status.error_message();
  }
  return acked;
}

// Creates until one is taken (bounded: 300 tries 200 ms apart), each with
// `deadline`: the last answer.
grpc::Status CreateOnceWritesResume(
    sessiond::v1::SessionService::Stub* stub, std::string* token,
    absl::Duration deadline = absl::Seconds(10)) {
  grpc::Status status;
  for (int i = 0; i < 300; ++i) {
    status = CreateBig(stub, "after", token, deadline);
    if (status.ok()) break;
    absl::SleepFor(absl::Milliseconds(200));
  }
  return status;
}

void ExpectAllValid(sessiond::v1::SessionService::Stub* stub,
                    const std::vector<std::string>& tokens) {
  for (const std::string& t : tokens) {
    ASSERT_EQ(Validate(stub, t), ValidateSessionResponse::VALID);
  }
}

std::string FileText(const std::string& path) {
  std::ifstream in(path);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

std::string LogTail(const std::string& path) {
  std::ifstream in(path);
  std::vector<std::string> lines;
  std::string line;
  while (std::getline(in, line)) lines.push_back(line);
  std::string tail = path + ":\n";
  for (size_t i = lines.size() > 20 ? lines.size() - 20 : 0; i < lines.size();
       ++i) {
    absl::StrAppend(&tail, lines[i], "\n");
  }
  return tail;
}

bool StillRunning(SessiondProcess* node) {
  return node->WaitForExit(absl::Milliseconds(1)) == -1;
}

sessiond::v1::MemberStatus SelfStatus(const std::string& address) {
  auto channel =
      grpc::CreateChannel(address, grpc::InsecureChannelCredentials());
  auto admin = sessiond::v1::AdminService::NewStub(channel);
  sessiond::v1::ClusterStatusRequest request;
  sessiond::v1::ClusterStatusResponse response;
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() +
                       std::chrono::seconds(10));
  const grpc::Status status =
      admin->ClusterStatus(&context, request, &response);
  EXPECT_TRUE(status.ok()) << status.error_message();
  for (const auto& m : response.members()) {
    if (m.node_id() == response.answered_by()) return m;
  }
  return {};
}

TEST(FullDiskTest, WritesRefusedReadsServedAndWritesResumeWhenSpaceIsFreed) {
  SKIP_WITHOUT_MOUNTS();
  TempDir dir;
  const std::string mnt = dir.path() + "/mnt";
  Tmpfs fs(mnt, 160 * kMiB);
  ASSERT_TRUE(fs.mounted());
  const std::string data = mnt + "/data";
  // A margin above the 32 MiB RocksDB may flush at once, so the guard
  // refuses before a flush can find the disk full (which would spend the
  // reserve file the restart below needs).
  SessiondProcess node(SESSIOND_BINARY, data, {"--disk_reserve_mb=40"});
  node.set_log_dir(dir.path());  // off the disk that fills
  ASSERT_TRUE(node.Start().ok()) << LogTail(node.log_path());
  auto stub = node.NewStub();

  // Another program takes most of the disk: about 6 MiB above the 40 MiB
  // writes need stays free.
  const uint64_t free_at_start = FreeBytes(mnt);
  ASSERT_GT(free_at_start, 52 * kMiB);
  FillWith(mnt + "/filler1", free_at_start - 46 * kMiB);

  grpc::Status refusal;
  const std::vector<std::string> acked =
      CreateUntilRefused(stub.get(), &refusal);
  ASSERT_EQ(refusal.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED)
      << "never refused after " << acked.size() << " creates";
  EXPECT_TRUE(absl::StrContains(refusal.error_message(), data))
      << refusal.error_message();
  EXPECT_TRUE(absl::StrContains(refusal.error_message(), "--disk_reserve_mb"))
      << refusal.error_message();
  ASSERT_GT(acked.size(), 10u);
  std::printf("%zu creates acknowledged before the refusal: %s\n", acked.size(),
              refusal.error_message().c_str());
  ASSERT_TRUE(StillRunning(&node)) << node.log_path();

  // Reads are answered; validations with touch (whose batches fail, and
  // are kept for later flushes) do not stop the node.
  for (const std::string& token : acked) {
    ASSERT_EQ(Validate(stub.get(), token), ValidateSessionResponse::VALID);
  }
  for (int round = 0; round < 3; ++round) {
    for (size_t i = 0; i < 20; ++i) {
      EXPECT_EQ(Validate(stub.get(), acked[i], /*touch=*/true),
                ValidateSessionResponse::VALID);
    }
    absl::SleepFor(absl::Milliseconds(600));  // past a touch flush
  }
  ASSERT_TRUE(StillRunning(&node)) << node.log_path();
  const sessiond::v1::MemberStatus full = SelfStatus(node.address());
  EXPECT_TRUE(full.disk_full());
  EXPECT_FALSE(full.disk_condition().empty());
  EXPECT_GE(full.metrics().touch_batches_dropped(), 1u);

  // SIGKILL; the other program fills the disk to the last byte; restart.
  node.Kill();
  FillWith(mnt + "/filler2", 1ull << 40);
  ASSERT_LT(FreeBytes(mnt), 64u << 10);
  const absl::Status restarted = node.Start();
  ASSERT_TRUE(restarted.ok())
      << "no start on a full disk: " << restarted << "\n"
      << LogTail(node.log_path());
  stub = node.NewStub();
  for (const std::string& token : acked) {
    ASSERT_EQ(Validate(stub.get(), token), ValidateSessionResponse::VALID);
  }
  std::string token;
  EXPECT_EQ(CreateBig(stub.get(), "later", &token).error_code(),
            grpc::StatusCode::RESOURCE_EXHAUSTED);

  // Space comes back: writes resume by themselves (bounded wait).
  std::filesystem::remove(mnt + "/filler1");
  std::filesystem::remove(mnt + "/filler2");
  const grpc::Status resumed = CreateOnceWritesResume(stub.get(), &token);
  ASSERT_TRUE(resumed.ok()) << resumed.error_message();
  EXPECT_FALSE(SelfStatus(node.address()).disk_full());

  // A clean stop, a restart: everything acknowledged is there.
  const int exit_status = node.Terminate();
  EXPECT_TRUE(WIFEXITED(exit_status) && WEXITSTATUS(exit_status) == 0)
      << exit_status << " " << node.log_path();
  ASSERT_TRUE(node.Start().ok()) << node.log_path();
  stub = node.NewStub();
  ExpectAllValid(stub.get(), acked);
  EXPECT_EQ(Validate(stub.get(), token), ValidateSessionResponse::VALID);
}

// Touches cannot reach the log while the disk is full: every batch is
// refused and kept for the next flush. Idle time went on counting all the
// same, so users active all along read EXPIRED once the outage outlasted
// their idle timeout, and when space came back their kept touches, judged
// at the applied time, found them expired and were dropped: a mass logout.
// Idle time now stops where the touches stopped reaching the log.
TEST(FullDiskTest, ActiveUsersAreNotIdledOutWhileTouchesCannotReachTheLog) {
  SKIP_WITHOUT_MOUNTS();
  TempDir dir;
  const std::string mnt = dir.path() + "/mnt";
  Tmpfs fs(mnt, 160 * kMiB);
  ASSERT_TRUE(fs.mounted());
  // A sweeper far quicker than the touch flush: once space is back it
  // would remove the session before the kept touches land, but for the
  // wait after a stall.
  SessiondProcess node(SESSIOND_BINARY, mnt + "/data",
                       {"--disk_reserve_mb=40", "--touch_flush_interval_ms=500",
                        "--sweep_interval_ms=50"});
  node.set_log_dir(dir.path());
  ASSERT_TRUE(node.Start().ok()) << LogTail(node.log_path());
  auto stub = node.NewStub();
  CreateSessionRequest request;
  request.set_user_id("active");
  request.set_ttl_ms(3'600'000);
  request.set_idle_timeout_ms(1500);  // the least: 3 x the flush interval
  CreateSessionResponse created;
  {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() +
                         std::chrono::seconds(10));
    const grpc::Status s = stub->CreateSession(&context, request, &created);
    ASSERT_TRUE(s.ok()) << s.error_message();
  }

  // Another program fills the disk: 20 MiB left, under the 40 kept free.
  FillWith(mnt + "/filler", FreeBytes(mnt) - 20 * kMiB);
  bool full = false;
  for (int i = 0; i < 100 && !full; ++i) {
    full = SelfStatus(node.address()).disk_full();
    if (!full) absl::SleepFor(absl::Milliseconds(50));
  }
  ASSERT_TRUE(full);
  // Three idle timeouts of use with touch, every 200 ms.
  for (int round = 0; round < 23; ++round) {
    ASSERT_EQ(Validate(stub.get(), created.token(), /*touch=*/true),
              ValidateSessionResponse::VALID)
        << "round " << round;
    absl::SleepFor(absl::Milliseconds(200));
  }
  EXPECT_GE(SelfStatus(node.address()).metrics().touch_batches_dropped(), 1u);

  // Space comes back; the user goes on, and is still logged in.
  std::filesystem::remove(mnt + "/filler");
  for (int i = 0; i < 100 && full; ++i) {
    full = SelfStatus(node.address()).disk_full();
    if (full) absl::SleepFor(absl::Milliseconds(50));
  }
  ASSERT_FALSE(full);
  for (int round = 0; round < 8; ++round) {
    ASSERT_EQ(Validate(stub.get(), created.token(), /*touch=*/true),
              ValidateSessionResponse::VALID)
        << "round " << round << " after the disk was freed";
    absl::SleepFor(absl::Milliseconds(200));
  }
  ASSERT_TRUE(StillRunning(&node)) << node.log_path();
}

// The reproduction: an 8 MiB disk, default flags. The node starts,
// refuses writes with a message naming the disk, answers validations (with
// touch too, which killed it within 7 s before).
TEST(FullDiskTest, ATinyDiskWithDefaultFlagsStartsAndServesReads) {
  SKIP_WITHOUT_MOUNTS();
  TempDir dir;
  const std::string mnt = dir.path() + "/mnt";
  Tmpfs fs(mnt, 8 * kMiB);
  ASSERT_TRUE(fs.mounted());
  SessiondProcess node(SESSIOND_BINARY, mnt + "/data");
  ASSERT_TRUE(node.Start().ok()) << node.log_path();
  auto stub = node.NewStub();
  std::string token;
  const grpc::Status create = CreateBig(stub.get(), "u", &token);
  EXPECT_EQ(create.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_TRUE(absl::StrContains(create.error_message(), "data disk"))
      << create.error_message();
  for (int i = 0; i < 160; ++i) {  // 8 s: touches killed it within 7 s
    EXPECT_EQ(Validate(stub.get(), absl::StrCat("token-", i), /*touch=*/true),
              ValidateSessionResponse::UNKNOWN);
    absl::SleepFor(absl::Milliseconds(50));
  }
  EXPECT_TRUE(StillRunning(&node)) << node.log_path();
  // Its term and a new leader's empty entry are written even so: a single
  // node leads, and linearizable reads need no detour.
  const sessiond::v1::MemberStatus status = SelfStatus(node.address());
  EXPECT_EQ(status.role(), "leader");
  EXPECT_TRUE(status.disk_full());
}

// In a cluster: the leader whose disk fills hands over, the cluster writes
// on, and the node catches up by itself once its disk has room again.
TEST(FullDiskTest, ALeaderWithAFullDiskHandsOverAndTheClusterWritesOn) {
  SKIP_WITHOUT_MOUNTS();
  ClusterOptions options;
  options.binary = SESSIOND_BINARY;
  options.flags = {"--disk_reserve_mb=8"};
  ClusterHarness cluster(options);
  std::vector<std::unique_ptr<Tmpfs>> disks;
  for (int id : cluster.ids()) {
    disks.push_back(std::make_unique<Tmpfs>(cluster.data_dir(id), 64 * kMiB));
    ASSERT_TRUE(disks.back()->mounted());
  }
  ASSERT_TRUE(cluster.Start().ok());
  absl::StatusOr<int> leader = cluster.WaitForLeader(absl::Seconds(30));
  ASSERT_TRUE(leader.ok()) << leader.status();
  const int full = *leader;
  // The filler shares the tmpfs with the data dir's files (removed before
  // any restart: a data dir with foreign files is refused at start).
  const std::string full_dir = cluster.data_dir(full);
  FillWith(full_dir + "/filler", FreeBytes(full_dir) - 5 * kMiB);

  std::set<int> others;
  for (int id : cluster.ids()) {
    if (id != full) others.insert(id);
  }
  absl::StatusOr<int> next = cluster.WaitForLeader(absl::Seconds(30), others);
  ASSERT_TRUE(next.ok()) << next.status() << "\n" << cluster.LogTail(full);
  ASSERT_TRUE(cluster.WaitForWritable(absl::Seconds(30), *next).ok());

  // Writes through any node, the full one included (it forwards them).
  std::vector<std::string> acked;
  for (int i = 0; i < 30; ++i) {
    for (int via : cluster.ids()) {
      auto stub = cluster.Stub(via);
      std::string token;
      const grpc::Status s =
          CreateBig(stub.get(), absl::StrCat("c", via, "-", i), &token);
      ASSERT_TRUE(s.ok()) << "via " << via << ": " << s.error_message();
      acked.push_back(token);
    }
  }
  absl::StatusOr<sessiond::v1::MemberStatus> status =
      cluster.MemberStatusOf(full);
  ASSERT_TRUE(status.ok()) << status.status();
  EXPECT_TRUE(status->disk_full());
  EXPECT_NE(status->role(), "leader");

  std::filesystem::remove(full_dir + "/filler");
  ASSERT_TRUE(cluster.WaitForConvergence(absl::Seconds(60)).ok())
      << cluster.LogTail(full);
  auto stub = cluster.Stub(full);
  for (const std::string& token : acked) {
    ASSERT_EQ(Validate(stub.get(), token), ValidateSessionResponse::VALID);
  }
  // Back under twice --disk_reserve_mb of use: writes resume (bounded).
  bool back = false;
  for (int i = 0; i < 100 && !back; ++i) {
    status = cluster.MemberStatusOf(full);
    back = status.ok() && !status->disk_full();
    if (!back) absl::SleepFor(absl::Milliseconds(100));
  }
  EXPECT_TRUE(back) << (status.ok() ? status->disk_condition() : "");
}

// The reserve file already spent (a flush found the disk full before the
// guard refused: possible when --disk_reserve_mb is under what RocksDB
// flushes at once), then the disk filled to the last byte: RocksDB cannot
// open without a few KiB for its MANIFEST. The node must say so and exit
// 1; it aborted in RocksDB's info-log writer (status 6) before.
TEST(FullDiskTest, WithoutItsReserveANodeOnAFullDiskSaysSoAndExits) {
  SKIP_WITHOUT_MOUNTS();
  TempDir dir;
  const std::string mnt = dir.path() + "/mnt";
  Tmpfs fs(mnt, 64 * kMiB);
  ASSERT_TRUE(fs.mounted());
  const std::string data = mnt + "/data";
  SessiondProcess node(SESSIOND_BINARY, data, {"--disk_reserve_mb=8"});
  node.set_log_dir(dir.path());
  ASSERT_TRUE(node.Start().ok()) << LogTail(node.log_path());
  std::string token;
  ASSERT_TRUE(CreateBig(node.NewStub().get(), "u", &token).ok());
  const int stopped = node.Terminate();
  ASSERT_TRUE(WIFEXITED(stopped) && WEXITSTATUS(stopped) == 0) << stopped;

  std::filesystem::remove(data + "/sessiond.reserve");
  FillWith(mnt + "/filler", 1ull << 40);
  ASSERT_LT(FreeBytes(mnt), 64u << 10);
  const absl::Status start = node.Start(absl::Seconds(30));
  ASSERT_FALSE(start.ok());
  // Exit code 1 (wait status 256), not SIGABRT (6).
  EXPECT_TRUE(absl::StrContains(start.message(), "(status 256)"))
      << start << "\n"
      << LogTail(node.log_path());
  const std::string tail = LogTail(node.log_path());
  EXPECT_TRUE(absl::StrContains(tail, "its file system is full")) << tail;
  // --disk_reserve_mb=8 is under what RocksDB flushes at once: said at start.
  EXPECT_TRUE(absl::StrContains(tail, "disk.reserve_small")) << tail;

  // Room again: it starts, with the session.
  std::filesystem::remove(mnt + "/filler");
  ASSERT_TRUE(node.Start().ok()) << LogTail(node.log_path());
  EXPECT_EQ(Validate(node.NewStub().get(), token),
            ValidateSessionResponse::VALID);
}

// With the disk guard off (--disk_reserve_mb=0) nothing refuses a write
// before RocksDB's write-ahead log runs out of room. A node restarted with
// 1 MiB free opens a log it cannot preallocate, so small creates fill the
// disk through that log (no memtable is full enough to flush). RocksDB 7.8
// cannot append to a log again after a failed append: the node refuses
// writes, answers validations, and once space is back restarts itself in
// place, in the same process and on the same port, and writes resume with
// every acknowledged session there.
TEST(FullDiskTest, AFailedLogAppendRestartsTheNodeInPlaceOnceThereIsRoom) {
  SKIP_WITHOUT_MOUNTS();
  TempDir dir;
  const std::string mnt = dir.path() + "/mnt";
  Tmpfs fs(mnt, 100 * kMiB);
  ASSERT_TRUE(fs.mounted());
  // A short grace: the restart waits it out for the writes the log refused.
  // A short stop timeout: RocksDB 7.8 may hang closing the database after
  // the disk filled, and the restart then cuts it short (executes sessiond
  // again, same pid and port).
  SessiondProcess node(SESSIOND_BINARY, mnt + "/data",
                       {"--disk_reserve_mb=0", "--shutdown_grace_ms=1000",
                        "--stop_timeout_ms=10000"});
  node.set_log_dir(dir.path());
  ASSERT_TRUE(node.Start().ok()) << LogTail(node.log_path());
  ASSERT_EQ(node.Terminate(), 0);
  FillWith(mnt + "/filler", FreeBytes(mnt) - kMiB);
  ASSERT_TRUE(node.Start().ok()) << LogTail(node.log_path());
  const int pid = node.pid();
  auto stub = node.NewStub();

  // Until a create is refused at once for the log. The one the log failed
  // on waits out its deadline (UNAVAILABLE: not acknowledged), as may one
  // on a slow machine; those are tried past.
  std::vector<std::string> acked;
  grpc::Status refused;
  for (int i = 0;
       i < 5000 && refused.error_code() != grpc::StatusCode::RESOURCE_EXHAUSTED;
       ++i) {
    CreateSessionRequest request;
    request.set_user_id(absl::StrCat("u", i));
    (*request.mutable_attributes())["a"] = std::string(1000, 'a');
    CreateSessionResponse response;
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() +
                         std::chrono::seconds(2));
    refused = stub->CreateSession(&context, request, &response);
    if (refused.ok()) acked.push_back(response.token());
  }
  ASSERT_EQ(refused.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED)
      << "the disk never filled: " << refused.error_message();
  std::printf("%zu creates acknowledged, then: %s\n", acked.size(),
              refused.error_message().c_str());
  ASSERT_GT(acked.size(), 10u);
  // Refused with the first failure's text until the log writer's first
  // retry (50 ms on) finds the WAL closed for good, and says so.
  std::string token;
  grpc::Status again;
  for (int i = 0; i < 100; ++i) {  // bounded: 10 s
    again = CreateBig(stub.get(), "again", &token);
    if (again.error_code() != grpc::StatusCode::RESOURCE_EXHAUSTED ||
        absl::StrContains(again.error_message(), "write-ahead log")) {
      break;
    }
    absl::SleepFor(absl::Milliseconds(100));
  }
  EXPECT_EQ(again.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_TRUE(absl::StrContains(again.error_message(), "write-ahead log"))
      << again.error_message();
  ExpectAllValid(stub.get(), acked);

  // Room again: within seconds writes resume, without a new process.
  std::filesystem::remove(mnt + "/filler");
  const grpc::Status resumed = CreateOnceWritesResume(stub.get(), &token);
  ASSERT_TRUE(resumed.ok()) << resumed.error_message() << "\n"
                            << LogTail(node.log_path());
  EXPECT_EQ(node.pid(), pid);
  EXPECT_TRUE(StillRunning(&node));
  ExpectAllValid(stub.get(), acked);
  EXPECT_EQ(Validate(stub.get(), token), ValidateSessionResponse::VALID);
}

// The last time the node's own table has for `user`'s one session, read
// LOCAL (no write): 0 when it has none.
int64_t LastSeenOf(sessiond::v1::SessionService::Stub* stub,
                   const std::string& user) {
  sessiond::v1::ListUserSessionsRequest request;
  request.set_user_id(user);
  sessiond::v1::ListUserSessionsResponse response;
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() +
                       std::chrono::seconds(10));
  const grpc::Status status =
      stub->ListUserSessions(&context, request, &response);
  EXPECT_TRUE(status.ok()) << status.error_message();
  return response.sessions_size() == 1 ? response.sessions(0).last_seen_at_ms()
                                       : 0;
}

// The restart in place that ends a full disk (above) lost the touches kept
// through the outage: they were in the old daemon's buffer, and the new one
// started with none and no stall. A user active only during the outage,
// whose last touch in the log was old, was then judged (and swept, on a
// lone voter, which waits for no one) by that old touch. The old daemon now
// hands them to the new one (Daemon::Handover), whose first flush sends
// them.
TEST(FullDiskTest, ARestartInPlaceAfterAFullDiskKeepsTheOutagesTouches) {
  SKIP_WITHOUT_MOUNTS();
  TempDir dir;
  const std::string mnt = dir.path() + "/mnt";
  Tmpfs fs(mnt, 100 * kMiB);
  ASSERT_TRUE(fs.mounted());
  SessiondProcess node(
      SESSIOND_BINARY, mnt + "/data",
      {"--disk_reserve_mb=0", "--shutdown_grace_ms=1000",
       "--stop_timeout_ms=10000", "--touch_flush_interval_ms=500"});
  node.set_log_dir(dir.path());
  // Filled while the node is down, as above: its first writes then go to
  // a new write-ahead log, and the append is what fails (not a flush).
  ASSERT_TRUE(node.Start().ok()) << LogTail(node.log_path());
  ASSERT_EQ(node.Terminate(), 0);
  FillWith(mnt + "/filler", FreeBytes(mnt) - kMiB);
  ASSERT_TRUE(node.Start().ok()) << LogTail(node.log_path());
  auto stub = node.NewStub();
  CreateSessionRequest request;
  request.set_user_id("active");
  request.set_ttl_ms(3'600'000);
  request.set_idle_timeout_ms(600'000);
  CreateSessionResponse created;
  {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() +
                         std::chrono::seconds(10));
    const grpc::Status s = stub->CreateSession(&context, request, &created);
    ASSERT_TRUE(s.ok()) << s.error_message();
  }

  // Creates fill the disk until the write-ahead log fails.
  grpc::Status refused;
  for (int i = 0;
       i < 5000 && refused.error_code() != grpc::StatusCode::RESOURCE_EXHAUSTED;
       ++i) {
    std::string token;
    refused =
        CreateBig(stub.get(), absl::StrCat("u", i), &token, absl::Seconds(1));
  }
  ASSERT_EQ(refused.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED)
      << "the disk never filled: " << refused.error_message();
  std::string token;
  const grpc::Status again = CreateBig(stub.get(), "again", &token);
  ASSERT_TRUE(absl::StrContains(again.error_message(), "write-ahead log"))
      << again.error_message();
  // Nothing applies now: the table holds what the log holds.
  const int64_t logged = LastSeenOf(stub.get(), "active");
  ASSERT_GT(logged, 0);
  // The user is active through the outage; no touch reaches the log.
  for (int round = 0; round < 5; ++round) {
    absl::SleepFor(absl::Milliseconds(200));
    ASSERT_EQ(Validate(stub.get(), created.token(), /*touch=*/true),
              ValidateSessionResponse::VALID)
        << "round " << round;
  }
  ASSERT_EQ(LastSeenOf(stub.get(), "active"), logged);

  // Room again: the node restarts in place.
  std::filesystem::remove(mnt + "/filler");
  const grpc::Status resumed = CreateOnceWritesResume(stub.get(), &token);
  ASSERT_TRUE(resumed.ok()) << resumed.error_message() << "\n"
                            << LogTail(node.log_path());
  const std::string log = FileText(node.log_path());
  if (!absl::StrContains(log, "restart.done")) {
    // The teardown stuck (RocksDB 7.8 may hang closing a database after a
    // full disk) and the node executed itself again: nothing is handed
    // over across an exec.
    GTEST_SKIP() << "the restart executed sessiond again: "
                 << LogTail(node.log_path());
  }
  EXPECT_TRUE(absl::StrContains(log, "restart.touches_adopted")) << log;
  // The touches of the outage land (no touch was made since the restart):
  // bounded, a few flush intervals.
  int64_t seen = logged;
  for (int i = 0; i < 100 && seen == logged; ++i) {
    absl::SleepFor(absl::Milliseconds(100));
    seen = LastSeenOf(stub.get(), "active");
  }
  EXPECT_GT(seen, logged) << "the touches made during the outage were lost\n"
                          << log;
  EXPECT_EQ(Validate(stub.get(), created.token()),
            ValidateSessionResponse::VALID);
  ASSERT_TRUE(StillRunning(&node)) << node.log_path();
}

// A synced write of one key of the raft_log column family.
absl::Status PutRaftLog(storage::Database* db, const std::string& key,
                        const std::string& value) {
  rocksdb::WriteBatch batch;
  batch.Put(db->raft_log_cf(), key, value);
  return db->Write(&batch, /*sync=*/true);
}

// A database in `dir` holding 3 MB (30 keys of 100 KB) of Raft log.
std::unique_ptr<storage::Database> DatabaseWith3MB(const std::string& dir) {
  absl::StatusOr<std::unique_ptr<storage::Database>> db =
      storage::Database::Open(dir, storage::DatabaseOptions());
  EXPECT_TRUE(db.ok()) << db.status();
  if (!db.ok()) return nullptr;
  for (int i = 0; i < 30; ++i) {
    const absl::Status s = PutRaftLog(db->get(), absl::StrCat("before-", i),
                                      std::string(100000, 'x'));
    EXPECT_TRUE(s.ok()) << s;
    if (!s.ok()) return nullptr;
  }
  return *std::move(db);
}

// Reopens the database in `dir`: it takes writes again, and holds `keys`.
void ExpectReopensWith(const std::string& dir,
                       const std::vector<std::string>& keys) {
  absl::StatusOr<std::unique_ptr<storage::Database>> db =
      storage::Database::Open(dir, storage::DatabaseOptions());
  ASSERT_TRUE(db.ok()) << db.status();
  EXPECT_TRUE((*db)->wal_failure().ok());
  ASSERT_TRUE(PutRaftLog(db->get(), "reopened", "small").ok());
  for (const std::string& key : keys) {
    absl::StatusOr<std::optional<std::string>> read =
        (*db)->Get((*db)->raft_log_cf(), key);
    ASSERT_TRUE(read.ok()) << read.status();
    EXPECT_TRUE(read->has_value()) << key;
  }
}

// RocksDB's own info-log writer asserted on the line after the first one the
// disk had no room for (Debian's librocksdb keeps asserts), so any full disk
// ended in an abort: at a flush, at a clean stop, or while a restarted node
// opened its database (storage/rocksdb_info_log.h). The database logs dozens
// of lines as it closes, all on a disk without a free byte here.
// Free bytes do not say that a file system takes a new file: with no inode
// left, a database reopened there cannot make its new log and MANIFEST, and
// a node restarted in place to mend its writes would exit instead of going
// on answering reads. So the restart waits until the guard's probe makes a
// file (server/daemon.cc, RequestRestartInPlace).
TEST(FullDiskTest, WithoutAFreeInodeTheProbeFailsWhateverTheFreeBytes) {
  SKIP_WITHOUT_MOUNTS();
  TempDir dir;
  const std::string mount_dir = dir.path() + "/few-inodes";
  Tmpfs tmpfs(mount_dir, 64 * kMiB, "nr_inodes=32");
  ASSERT_TRUE(tmpfs.mounted());
  storage::DiskGuardOptions options;
  options.dir = mount_dir;
  options.low_bytes = 4 * kMiB;
  options.reserve_bytes = 2 * kMiB;
  absl::StatusOr<std::unique_ptr<storage::DiskGuard>> guard =
      storage::DiskGuard::Start(options);
  ASSERT_TRUE(guard.ok()) << guard.status();
  EXPECT_TRUE((*guard)->ProbeNewFile().ok());
  // What a probe cut short by a crash leaves behind: opened again, it would
  // take no inode and pass on a file system that has none.
  std::ofstream(mount_dir + "/sessiond.probe") << "left";
  // Another program takes every inode left (bounded: the mount has 32).
  int files = 0;
  for (; files < 64; ++files) {
    const std::string path = absl::StrCat(mount_dir, "/f", files);
    const int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0) break;
    close(fd);
  }
  ASSERT_GT(files, 0);
  ASSERT_LT(files, 64);
  EXPECT_TRUE((*guard)->HasRoomToResume());
  const absl::Status probe = (*guard)->ProbeNewFile();
  EXPECT_TRUE(absl::IsResourceExhausted(probe)) << probe;
  EXPECT_TRUE(absl::StrContains(probe.message(), "No space left")) << probe;
  ASSERT_EQ(unlink(absl::StrCat(mount_dir, "/f0").c_str()), 0);
  EXPECT_TRUE((*guard)->ProbeNewFile().ok());
  // And it leaves nothing behind.
  for (const auto& entry : std::filesystem::directory_iterator(mount_dir)) {
    EXPECT_FALSE(
        absl::StartsWith(entry.path().filename().string(), "sessiond.probe."))
        << entry.path();
  }
}

// The daemon's use of the probe, end to end: a node whose database stopped
// taking writes (storage.write_jams, standing for RocksDB 7.8's hung
// recovery) is due a restart in place, but its data dir's file system has
// no inode left, so a reopen could not make its new log and MANIFEST. It
// waits, answering reads, and restarts once an inode is free.
TEST(FullDiskTest, AStuckNodeRestartsOnlyOnceItsDataDirTakesANewFile) {
  SKIP_WITHOUT_MOUNTS();
  TempDir dir;
  const std::string mnt = dir.path() + "/mnt";
  Tmpfs fs(mnt, 200 * kMiB, "nr_inodes=256");
  ASSERT_TRUE(fs.mounted());
  SessiondProcess node(
      SESSIOND_BINARY, mnt + "/data",
      {"--fault_point=storage.write_jams@20!", "--stuck_writes_restart_ms=1000",
       "--shutdown_grace_ms=1000"});
  node.set_log_dir(dir.path());  // the log takes no inode of the tmpfs
  ASSERT_TRUE(node.Start().ok()) << LogTail(node.log_path());
  const int pid = node.pid();
  auto stub = node.NewStub();

  // Another program takes every inode left (bounded: the mount has 256).
  std::filesystem::create_directories(mnt + "/other");
  int files = 0;
  for (; files < 300; ++files) {
    const std::string path = absl::StrCat(mnt, "/other/f", files);
    const int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0) break;
    close(fd);
  }
  ASSERT_GT(files, 0);
  ASSERT_LT(files, 300);

  // Creates until the database refuses them (its 20th write without the
  // log), then until the node has said why it does not restart.
  std::vector<std::string> acked;
  bool refused = false;
  bool deferred = false;
  const absl::Time give_up = absl::Now() + absl::Seconds(60);
  for (int i = 0; i < 2000 && !deferred && absl::Now() < give_up; ++i) {
    std::string token;
    const grpc::Status status =
        CreateBig(stub.get(), absl::StrCat("u", i), &token, absl::Seconds(2));
    if (status.ok()) {
      acked.push_back(token);
    } else {
      refused = true;
      absl::SleepFor(absl::Milliseconds(100));
    }
    deferred = absl::StrContains(FileText(node.log_path()),
                                 "storage.restart_deferred");
  }
  ASSERT_TRUE(refused) << "the fault point never jammed the database";
  ASSERT_TRUE(deferred) << LogTail(node.log_path());
  EXPECT_EQ(node.pid(), pid);
  ASSERT_TRUE(StillRunning(&node)) << LogTail(node.log_path());
  ExpectAllValid(stub.get(), acked);

  // Inodes again: the node restarts in place and takes writes.
  std::filesystem::remove_all(mnt + "/other");
  std::string token;
  const grpc::Status resumed =
      CreateOnceWritesResume(stub.get(), &token, absl::Seconds(2));
  ASSERT_TRUE(resumed.ok()) << resumed.error_message() << "\n"
                            << LogTail(node.log_path());
  EXPECT_EQ(node.pid(), pid);
  const std::string log = FileText(node.log_path());
  EXPECT_TRUE(absl::StrContains(log, "storage.stuck_restart")) << log;
  EXPECT_TRUE(absl::StrContains(log, "restart.done")) << log;
  EXPECT_FALSE(absl::StrContains(log, "startup.failed")) << log;
  ExpectAllValid(stub.get(), acked);
  EXPECT_EQ(Validate(stub.get(), token), ValidateSessionResponse::VALID);
}

// A write that fails for lack of space on a disk that has none is a full
// disk, whatever the reserve the guard holds: it drops the reserve (RocksDB
// needs the room to recover) and says the disk is full. Counting the
// reserve as room, a low mark of 16 MiB or less against a 32 MiB reserve
// took every such failure for a database refusing writes with room.
TEST(FullDiskTest, AWriteFailingOnAFullDiskIsAFullDiskWhateverTheReserve) {
  SKIP_WITHOUT_MOUNTS();
  TempDir dir;
  const std::string mount_dir = dir.path() + "/disk";
  Tmpfs tmpfs(mount_dir, 64 * kMiB);
  ASSERT_TRUE(tmpfs.mounted());
  storage::DiskGuardOptions options;
  options.dir = mount_dir;
  options.low_bytes = 8 * kMiB;
  options.reserve_bytes = 32 * kMiB;
  absl::StatusOr<std::unique_ptr<storage::DiskGuard>> guard =
      storage::DiskGuard::Start(options);
  ASSERT_TRUE(guard.ok()) << guard.status();
  ASSERT_TRUE((*guard)->state().reserve_held);
  FillWith(mount_dir + "/other", FreeBytes(mount_dir));
  ASSERT_LT(FreeBytes(mount_dir), kMiB);
  (*guard)->ReportWriteError(
      absl::InternalError("IO error: No space left on device"));
  const storage::DiskGuard::State state = (*guard)->state();
  EXPECT_TRUE(state.low);
  EXPECT_FALSE(state.database_refuses);
  EXPECT_FALSE(state.reserve_held);
  EXPECT_GE(FreeBytes(mount_dir), 32 * kMiB);
  EXPECT_TRUE(absl::StrContains((*guard)->WriteRefusal().message(), "is full"))
      << (*guard)->WriteRefusal();
}

// A database refusing writes with room on the disk, then the disk fills:
// the guard says the disk is full at its next check, and writes are not
// let through in between for a retry.
TEST(FullDiskTest, ADiskThatFillsWhileTheDatabaseRefusesWritesIsFull) {
  SKIP_WITHOUT_MOUNTS();
  TempDir dir;
  const std::string mount_dir = dir.path() + "/disk";
  Tmpfs tmpfs(mount_dir, 64 * kMiB);
  ASSERT_TRUE(tmpfs.mounted());
  absl::Mutex mu;
  std::vector<bool> changes;
  storage::DiskGuardOptions options;
  options.dir = mount_dir;
  options.low_bytes = 4 * kMiB;
  options.reserve_bytes = 4 * kMiB;
  options.check_interval = absl::Milliseconds(10);
  options.min_retry_interval = absl::Hours(1);  // no retry in this test
  options.max_retry_interval = absl::Hours(1);
  options.on_change = [&](bool low) {
    absl::MutexLock lock(&mu);
    changes.push_back(low);
  };
  absl::StatusOr<std::unique_ptr<storage::DiskGuard>> guard =
      storage::DiskGuard::Start(options);
  ASSERT_TRUE(guard.ok()) << guard.status();
  const absl::Status no_space =
      absl::InternalError("IO error: No space left on device");
  (*guard)->ReportWriteError(no_space);
  ASSERT_TRUE((*guard)->state().database_refuses);

  FillWith(mount_dir + "/other", FreeBytes(mount_dir) - 2 * kMiB);
  bool full = false;
  for (int i = 0; i < 1000 && !full; ++i) {  // bounded: 10 s
    full = !(*guard)->state().database_refuses;
    if (!full) absl::SleepFor(absl::Milliseconds(10));
  }
  ASSERT_TRUE(full);
  const storage::DiskGuard::State state = (*guard)->state();
  EXPECT_TRUE(state.low);
  EXPECT_TRUE(absl::StrContains(state.reason, "kept free")) << state.reason;
  EXPECT_TRUE(absl::StrContains((*guard)->WriteRefusal().message(), "is full"))
      << (*guard)->WriteRefusal();
  // Now a write failing for lack of space drops the reserve.
  (*guard)->ReportWriteError(no_space);
  EXPECT_FALSE((*guard)->state().reserve_held);
  // The guard's thread tells of a change just after it made it (outside
  // its lock): the state above can be seen before the call is made (CI saw
  // { true } once). Bounded: 10 s.
  absl::MutexLock lock(&mu);
  mu.AwaitWithTimeout(
      absl::Condition(
          +[](std::vector<bool>* seen) { return seen->size() >= 2; }, &changes),
      absl::Seconds(10));
  EXPECT_EQ(changes, (std::vector<bool>{true, true}))
      << "low when refusing, low again (now full), never let through";
}

// Writes resume at twice the low mark, and the guard then makes its reserve
// again out of that room: free space alone stays under the resume level for
// good, and a node whose writes were stuck would never restart in place.
// The reserve, the guard's to drop, counts as room.
TEST(FullDiskTest, TheReserveCountsAsRoomToResume) {
  SKIP_WITHOUT_MOUNTS();
  TempDir dir;
  const std::string mount_dir = dir.path() + "/disk";
  Tmpfs tmpfs(mount_dir, 64 * kMiB);
  ASSERT_TRUE(tmpfs.mounted());
  storage::DiskGuardOptions options;
  options.dir = mount_dir;
  options.low_bytes = 24 * kMiB;  // resumes at 48 MiB free
  options.reserve_bytes = 8 * kMiB;
  absl::StatusOr<std::unique_ptr<storage::DiskGuard>> guard =
      storage::DiskGuard::Start(options);
  ASSERT_TRUE(guard.ok()) << guard.status();
  ASSERT_TRUE((*guard)->state().reserve_held);
  // 44 MiB free: under the resume level, over it with the reserve's 8.
  FillWith(mount_dir + "/other", FreeBytes(mount_dir) - 44 * kMiB);
  ASSERT_LT(FreeBytes(mount_dir), 48 * kMiB);
  EXPECT_TRUE((*guard)->HasRoomToResume());
  // 36 MiB free: under it either way.
  FillWith(mount_dir + "/more", 8 * kMiB);
  EXPECT_FALSE((*guard)->HasRoomToResume());
}

TEST(FullDiskTest, RocksDbLogLinesOnAFullDiskAreDroppedNotFatal) {
  SKIP_WITHOUT_MOUNTS();
  TempDir dir;
  const std::string mnt = dir.path() + "/mnt";
  Tmpfs fs(mnt, 16 * kMiB);
  ASSERT_TRUE(fs.mounted());
  std::unique_ptr<storage::Database> db = DatabaseWith3MB(mnt + "/db");
  ASSERT_NE(db, nullptr);
  FillWith(mnt + "/filler", 1ull << 40);
  ASSERT_LT(FreeBytes(mnt), 64u << 10);
  // Small writes still fit in the log's preallocated space.
  std::vector<std::string> acked;
  for (int i = 0; i < 5; ++i) {
    acked.push_back(absl::StrCat("full-", i));
    EXPECT_TRUE(PutRaftLog(db.get(), acked.back(), "small").ok());
  }
  db.reset();  // a flush that fails and a close: both log, on the full disk

  std::filesystem::remove(mnt + "/filler");
  ExpectReopensWith(mnt + "/db", acked);
}

// The environment variables that make this binary the child half of
// AFailedWriteAheadLogAppendIsNeverFollowedByAnother (main, below): the
// tmpfs to fill, and the file for the keys acknowledged.
constexpr char kWalChildMountEnv[] = "SESSIOND_TEST_WAL_CHILD_MOUNT";
constexpr char kWalChildAckedEnv[] = "SESSIOND_TEST_WAL_CHILD_ACKED";

// The child half, in a process of its own: fills the disk through the
// write-ahead log, checks that every write after the failure is refused
// while RocksDB resumes by itself once space is back, writes the keys
// acknowledged to `acked_path`, and closes the database. 0 when every check
// held; otherwise says which on stderr.
int RunWalFailureChild(const std::string& mnt, const std::string& acked_path) {
  // Out at once: destroying the database would close it, which may hang.
  auto fail = [](const std::string& why) {
    std::fprintf(stderr, "wal failure child: %s\n", why.c_str());
    std::fflush(stderr);
    _exit(1);
    return 1;
  };
  std::unique_ptr<storage::Database> db = DatabaseWith3MB(mnt + "/db");
  if (db == nullptr) return fail("cannot open and fill the database");
  FillWith(mnt + "/filler", 1ull << 40);
  // Megabyte writes run past the log's preallocated space.
  std::vector<std::string> acked;
  absl::Status failed;
  for (int i = 0; i < 20 && failed.ok(); ++i) {
    const std::string key = absl::StrCat("full-", i);
    failed = PutRaftLog(db.get(), key, std::string(1 << 20, 'a' + i % 26));
    if (failed.ok()) acked.push_back(key);
  }
  if (failed.ok()) return fail("the disk never filled");
  if (!absl::StrContains(failed.message(), "No space left")) {
    return fail(failed.ToString());
  }
  if (db->wal_failure().ok()) return fail("no write-ahead log failure");
  std::ofstream out(acked_path);
  for (const std::string& key : acked) out << key << "\n";
  if (!out.flush()) return fail("cannot write " + acked_path);

  // Space comes back. RocksDB's own recovery checks for it every 5 s and
  // then resumes; every write, before and after that, is refused.
  std::filesystem::remove(mnt + "/filler");
  for (int i = 0; i < 16; ++i) {
    const absl::Status s =
        PutRaftLog(db.get(), absl::StrCat("after-", i), "small");
    if (s.ok()) return fail("a write after the log failed was taken");
    if (!absl::StrContains(s.message(), "until the database is reopened")) {
      return fail(s.ToString());
    }
    absl::SleepFor(absl::Milliseconds(500));
  }
  // Every check held: said before the close, which may hang.
  if (!std::ofstream(acked_path + ".checked").flush()) {
    return fail("cannot write " + acked_path + ".checked");
  }
  db.reset();
  return 0;
}

// RocksDB 7.8, after a write-ahead log append failed for lack of space,
// resumes by itself once space is back (its SstFileManager) but keeps the
// failed log writer, and the next write asserted in it. The database must
// refuse every write after that failure instead, and reopen cleanly with
// everything acknowledged before it.
//
// That recovery's flush can also wait forever (with atomic_flush; fixed in
// RocksDB 8.6.6), and DB::Close with it. So the part up to the close runs in
// a process of its own, and a close not done within a minute is cut short
// with SIGKILL, as sessiond's StopWatchdog cuts it (exit or exec): the
// reopen below is the same either way.
TEST(FullDiskTest, AFailedWriteAheadLogAppendIsNeverFollowedByAnother) {
  SKIP_WITHOUT_MOUNTS();
  TempDir dir;
  const std::string mnt = dir.path() + "/mnt";
  Tmpfs fs(mnt, 40 * kMiB);
  ASSERT_TRUE(fs.mounted());
  const std::string acked_path = dir.path() + "/acked";

  // Built before the fork: the child only calls execve.
  std::vector<std::string> env;
  for (char** e = environ; *e != nullptr; ++e) env.emplace_back(*e);
  env.push_back(absl::StrCat(kWalChildMountEnv, "=", mnt));
  env.push_back(absl::StrCat(kWalChildAckedEnv, "=", acked_path));
  std::vector<char*> envp;
  for (std::string& e : env) envp.push_back(e.data());
  envp.push_back(nullptr);
  std::string self = "/proc/self/exe";
  char* argv[] = {self.data(), nullptr};
  const pid_t child = fork();
  ASSERT_GE(child, 0) << std::strerror(errno);
  if (child == 0) {
    execve("/proc/self/exe", argv, envp.data());
    _exit(127);
  }
  int status = 0;
  bool exited = false;
  for (int i = 0; i < 600 && !exited; ++i) {  // 60 s
    exited = waitpid(child, &status, WNOHANG) == child;
    if (!exited) absl::SleepFor(absl::Milliseconds(100));
  }
  if (!exited) {
    std::printf("the close hung (RocksDB 7.8): killed, as a crash\n");
    kill(child, SIGKILL);
    ASSERT_EQ(waitpid(child, &status, 0), child);
  } else {
    ASSERT_TRUE(WIFEXITED(status)) << status;
    ASSERT_EQ(WEXITSTATUS(status), 0) << "the child's checks failed (stderr)";
  }
  ASSERT_TRUE(std::filesystem::exists(acked_path + ".checked"))
      << "the child's checks failed (stderr)";

  std::vector<std::string> acked;
  std::ifstream in(acked_path);
  for (std::string key; std::getline(in, key);) acked.push_back(key);
  EXPECT_FALSE(acked.empty());
  ExpectReopensWith(mnt + "/db", acked);
}

}  // namespace
}  // namespace sessiond::testing

int main(int argc, char** argv) {
  // The child half of a test (RunWalFailureChild), in the namespace of the
  // test that started it.
  const char* wal_child_mount =
      std::getenv(sessiond::testing::kWalChildMountEnv);
  const char* wal_child_acked =
      std::getenv(sessiond::testing::kWalChildAckedEnv);
  if (wal_child_mount != nullptr && wal_child_acked != nullptr) {
    return sessiond::testing::RunWalFailureChild(wal_child_mount,
                                                 wal_child_acked);
  }
  ::testing::InitGoogleTest(&argc, argv);
  static std::string no_mounts =
      sessiond::testing::EnterPrivateMountNamespace();
  sessiond::testing::g_no_mounts = &no_mounts;
  if (!no_mounts.empty()) {
    std::fprintf(stderr, "full_disk_test: tests skipped: %s\n",
                 no_mounts.c_str());
  }
  return RUN_ALL_TESTS();
}
