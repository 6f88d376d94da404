// Copyright sessiond authors. Licensed under the Apache License 2.0.
//
// Crashes the real binary at each named point of the write path, in the
// middle of a concurrent create load, and checks that every create the server
// acknowledged before the crash is there after a restart. Where SIGKILL lands
// wherever the scheduler happens to be, these land exactly before and after
// the synced log append and before and after the state write.
#include "common/fault_point.h"

#include <signal.h>
#include <sys/wait.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "tests/integration/sessiond_process.h"

namespace sessiond::testing {
namespace {

struct Acknowledged {
  std::string token;
  std::string session_id;
};

class FaultPointTest : public ::testing::TestWithParam<const char*> {};

TEST_P(FaultPointTest, AcknowledgedCreatesSurviveACrashAtThePoint) {
  TempDir dir;
  const std::string data_dir = dir.path() + "/data";
  // Start-up passes each point a few times; the 300th pass is mid-load.
  SessiondProcess crashing(
      SESSIOND_BINARY, data_dir,
      {absl::StrCat("--fault_point=", GetParam(), "@300")});
  ASSERT_TRUE(crashing.Start().ok()) << crashing.log_path();

  std::mutex mutex;
  std::vector<Acknowledged> acknowledged;
  std::atomic<int> failures{0};
  std::vector<std::thread> writers;
  for (int t = 0; t < 8; ++t) {
    writers.emplace_back([&, t] {
      auto stub = crashing.NewStub();
      // Bounded: stops after the crash is seen or after 20,000 attempts.
      for (int i = 0; i < 2500 && failures.load() < 8; ++i) {
        sessiond::v1::CreateSessionRequest request;
        request.set_user_id(absl::StrCat("fault-", t));
        sessiond::v1::CreateSessionResponse response;
        grpc::ClientContext context;
        context.set_deadline(std::chrono::system_clock::now() +
                             std::chrono::seconds(5));
        if (stub->CreateSession(&context, request, &response).ok()) {
          std::lock_guard<std::mutex> lock(mutex);
          acknowledged.push_back(
              {response.token(), response.session().session_id()});
        } else {
          ++failures;
        }
      }
    });
  }
  for (auto& w : writers) w.join();
  const int status = crashing.WaitForExit(absl::Seconds(30));
  ASSERT_TRUE(WIFEXITED(status)) << "the fault point was not reached; status "
                                 << status << ", see " << crashing.log_path();
  ASSERT_EQ(WEXITSTATUS(status), kFaultPointExitCode);

  // The crash must land mid-load, after the server acknowledged creates.
  ASSERT_GT(acknowledged.size(), 50u) << "crashed too early at " << GetParam();

  SessiondProcess restarted(SESSIOND_BINARY, data_dir);
  ASSERT_TRUE(restarted.Start().ok()) << restarted.log_path();
  auto stub = restarted.NewStub();
  for (const Acknowledged& a : acknowledged) {
    sessiond::v1::ValidateSessionRequest request;
    request.set_token(a.token);
    sessiond::v1::ValidateSessionResponse response;
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() +
                         std::chrono::seconds(10));
    ASSERT_TRUE(stub->ValidateSession(&context, request, &response).ok());
    ASSERT_EQ(response.outcome(), sessiond::v1::ValidateSessionResponse::VALID)
        << "acknowledged session " << a.session_id << " lost at " << GetParam();
    ASSERT_EQ(response.session().session_id(), a.session_id);
  }
}

// A new data dir gets its identity before its log is bootstrapped. A node
// stopped between the two came back with an identity and no voter in its
// log: it served, and never elected a leader, so every write failed.
TEST(BootstrapFaultTest,
     ANodeStoppedBeforeItsFirstLogBootstrapsOnItsNextStart) {
  TempDir dir;
  const std::string data_dir = dir.path() + "/data";
  SessiondProcess crashing(SESSIOND_BINARY, data_dir,
                           {"--fault_point=bootstrap.after_identity"});
  ASSERT_TRUE(crashing.Launch().ok()) << crashing.log_path();
  const int status = crashing.WaitForExit(absl::Seconds(30));
  ASSERT_TRUE(WIFEXITED(status)) << status << ", see " << crashing.log_path();
  ASSERT_EQ(WEXITSTATUS(status), kFaultPointExitCode);

  SessiondProcess restarted(SESSIOND_BINARY, data_dir);
  ASSERT_TRUE(restarted.Start().ok()) << restarted.log_path();
  auto stub = restarted.NewStub();
  sessiond::v1::CreateSessionRequest request;
  request.set_user_id("after-the-crash");
  sessiond::v1::CreateSessionResponse response;
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() +
                       std::chrono::seconds(20));
  const grpc::Status created =
      stub->CreateSession(&context, request, &response);
  EXPECT_TRUE(created.ok())
      << created.error_message() << ", see " << restarted.log_path();
}

// A session created through `stub`: its token ("" when refused).
std::string CreateOne(sessiond::v1::SessionService::Stub& stub,
                      const std::string& user) {
  sessiond::v1::CreateSessionRequest request;
  request.set_user_id(user);
  request.set_ttl_ms(3600 * 1000);
  sessiond::v1::CreateSessionResponse response;
  grpc::ClientContext context;
  SetDeadline(&context, absl::Seconds(10));
  return stub.CreateSession(&context, request, &response).ok()
             ? response.token()
             : "";
}

bool IsValid(const SessiondProcess& node, const std::string& token) {
  sessiond::v1::ValidateSessionRequest request;
  request.set_token(token);
  sessiond::v1::ValidateSessionResponse response;
  grpc::ClientContext context;
  SetDeadline(&context, absl::Seconds(2));
  return node.NewStub()->ValidateSession(&context, request, &response).ok() &&
         response.outcome() == sessiond::v1::ValidateSessionResponse::VALID;
}

std::string FileText(const std::string& path) {
  std::ifstream in(path);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// RocksDB 7.8's DB::Close can hang for good after a full disk (a recovery
// flush that never completes; server/stop_watchdog.h). Here every close
// stalls for ten minutes, longer than any wait below: once --stop_timeout_ms
// has passed beyond three times the grace (4 s in all here), a restart in
// place executes sessiond again and a shutdown exits with code 3, both as a
// crash would, losing nothing acknowledged.
TEST(StopWatchdogTest, AStuckCloseIsCutShortAsACrashWouldCutIt) {
  TempDir dir;
  // A fixed metrics port: the image executed after the stuck close binds it
  // again, which it can only do if no listening socket of the old image
  // survived the exec.
  const std::string metrics = absl::StrCat("127.0.0.1:", PickFreePort());
  SessiondProcess node(
      SESSIOND_BINARY, dir.path() + "/data",
      {"--fault_point=storage.close~600000", "--stop_timeout_ms=1000",
       "--shutdown_grace_ms=1000", "--metrics_listen=" + metrics});
  ASSERT_TRUE(node.Start().ok()) << node.log_path();
  const std::string before = CreateOne(*node.NewStub(), "before");
  ASSERT_FALSE(before.empty());

  ASSERT_EQ(kill(node.pid(), SIGUSR2), 0);
  // The same process (exec keeps the pid) serves again, bounded.
  bool served = false;
  for (int i = 0; i < 300 && !served; ++i) {
    absl::SleepFor(absl::Milliseconds(100));
    served = IsValid(node, before);
  }
  ASSERT_TRUE(served) << "no restart past the stuck close; see "
                      << node.log_path();
  EXPECT_EQ(kill(node.pid(), 0), 0);
  // Named as before (exec names a process after the file: "exe").
  EXPECT_EQ(FileText(absl::StrCat("/proc/", node.pid(), "/comm")),
            "sessiond\n");
  const std::string restarted_log = FileText(node.log_path());
  EXPECT_NE(restarted_log.find("shutdown.stuck"), std::string::npos);
  EXPECT_NE(restarted_log.find("restart in place"), std::string::npos);

  const std::string after = CreateOne(*node.NewStub(), "after");
  ASSERT_FALSE(after.empty());
  const int status = node.Terminate(absl::Seconds(60));
  ASSERT_TRUE(status != -1 && WIFEXITED(status)) << status;
  EXPECT_EQ(WEXITSTATUS(status), 3) << node.log_path();

  node.set_extra_flags({});
  ASSERT_TRUE(node.Start().ok()) << node.log_path();
  EXPECT_TRUE(IsValid(node, before));
  EXPECT_TRUE(IsValid(node, after));
}

// The number of times `node` announced that it serves.
int TimesServed(const SessiondProcess& node) {
  const std::string log = FileText(node.log_path());
  int served = 0;
  for (size_t at = log.find("\nLISTENING "); at != std::string::npos;
       at = log.find("\nLISTENING ", at + 1)) {
    ++served;
  }
  return served;
}

// A stop asked for while a restart in place tears the node down (here a
// close that takes 3 s) is taken once the teardown is done: the node stops
// rather than start again only to drain once more, which under systemd
// could overrun TimeoutStopSec. (SIGUSR2 is taken before a SIGTERM pending
// with it, so the order of the two kills is the order they are handled.)
TEST(StopWatchdogTest, AStopDuringARestartInPlaceStopsWithoutStartingAgain) {
  TempDir dir;
  SessiondProcess node(SESSIOND_BINARY, dir.path() + "/data",
                       {"--fault_point=storage.close~10000"});
  ASSERT_TRUE(node.Start().ok()) << node.log_path();
  ASSERT_FALSE(CreateOne(*node.NewStub(), "before").empty());
  ASSERT_EQ(kill(node.pid(), SIGUSR2), 0);
  ASSERT_EQ(kill(node.pid(), SIGTERM), 0);
  const int status = node.WaitForExit(absl::Seconds(60));
  ASSERT_TRUE(status != -1 && WIFEXITED(status)) << status;
  EXPECT_EQ(WEXITSTATUS(status), 0) << node.log_path();
  const std::string log = FileText(node.log_path());
  EXPECT_NE(log.find("restart.begin"), std::string::npos) << log;
  EXPECT_EQ(log.find("restart.done"), std::string::npos) << log;
  EXPECT_NE(log.find("shutdown.done"), std::string::npos) << log;
  EXPECT_EQ(TimesServed(node), 1) << log;
}

// The same when the teardown is stuck and cut short: the stop, still
// pending across the exec, ends the process as a stuck shutdown does.
TEST(StopWatchdogTest, AStopDuringAStuckRestartIsNotLostInTheExec) {
  TempDir dir;
  SessiondProcess node(SESSIOND_BINARY, dir.path() + "/data",
                       {"--fault_point=storage.close~600000",
                        "--stop_timeout_ms=1000", "--shutdown_grace_ms=1000"});
  ASSERT_TRUE(node.Start().ok()) << node.log_path();
  ASSERT_EQ(kill(node.pid(), SIGUSR2), 0);
  ASSERT_EQ(kill(node.pid(), SIGTERM), 0);
  const int status = node.WaitForExit(absl::Seconds(60));
  ASSERT_TRUE(status != -1 && WIFEXITED(status)) << status;
  EXPECT_EQ(WEXITSTATUS(status), 3) << node.log_path();
  const std::string log = FileText(node.log_path());
  EXPECT_NE(log.find("shutdown.stuck"), std::string::npos) << log;
  EXPECT_EQ(TimesServed(node), 1) << log;
}

// A wall clock a test steps: libfaketime in the node reads its offset from a
// file (re-read at most every second), the steady clock left alone.
class SteppedWallClock {
 public:
  static bool Available() { return std::ifstream(kLibrary).good(); }
  explicit SteppedWallClock(const std::string& dir) : file_(dir + "/clock") {
    Set("+0");
  }
  // "+0", "+1d", "-1d": libfaketime's offsets.
  void Set(const std::string& offset) {
    std::ofstream(file_ + ".tmp", std::ios::trunc) << offset << "\n";
    std::filesystem::rename(file_ + ".tmp", file_);
  }
  std::vector<std::string> Env() const {
    return {absl::StrCat("LD_PRELOAD=", kLibrary),
            absl::StrCat("FAKETIME_TIMESTAMP_FILE=", file_),
            "FAKETIME_DONT_FAKE_MONOTONIC=1", "FAKETIME_CACHE_DURATION=1"};
  }

 private:
  static constexpr char kLibrary[] =
      "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1";
  const std::string file_;
};

// The watchdog waits by the steady clock: a wall clock a day ahead when the
// teardown begins (libfaketime) neither stretches its wait by that day nor,
// a day behind, cuts a clean teardown short. absl's own timed waits end at a
// wall-clock time (common/steady_cond_var.h).
TEST(StopWatchdogTest, AWallClockStepDoesNotMoveTheWatchdog) {
  if (!SteppedWallClock::Available()) {
    GTEST_SKIP() << "libfaketime is not installed (Debian: libfaketime)";
  }
  TempDir dir;
  SteppedWallClock clock(dir.path());
  for (const char* offset : {"+1d", "-1d"}) {
    SCOPED_TRACE(offset);
    clock.Set("+0");
    const bool stuck = std::string(offset) == "+1d";
    SessiondProcess node(
        SESSIOND_FAKETIME_BINARY, absl::StrCat(dir.path(), "/data", offset),
        {stuck ? "--fault_point=storage.close~600000"
               : "--fault_point=storage.close~2000",
         stuck ? "--stop_timeout_ms=1000" : "--stop_timeout_ms=30000",
         "--shutdown_grace_ms=1000"});
    node.set_env(clock.Env());
    ASSERT_TRUE(node.Start().ok()) << node.log_path();
    clock.Set(offset);
    absl::SleepFor(absl::Milliseconds(1500));  // the cache: 1 s
    ASSERT_EQ(kill(node.pid(), SIGTERM), 0);
    const int status = node.WaitForExit(absl::Seconds(60));
    ASSERT_TRUE(status != -1 && WIFEXITED(status))
        << status << ", see " << node.log_path();
    // Stuck: cut short after its 4 s, not a day. Not stuck (a 2 s close
    // within its 33 s): a clean stop, not one cut short at once.
    EXPECT_EQ(WEXITSTATUS(status), stuck ? 3 : 0) << node.log_path();
  }
}

// The drain waits by the steady clock too. It ended at a wall-clock time:
// a wall clock stepped back a day during it, while clients went on calling,
// kept the node refusing them for as long as they called (its end a day
// away), past the watchdog, which ended it with exit 3. Now it ends after
// its grace, and the node stops cleanly.
TEST(StopWatchdogTest, AWallClockStepDuringTheDrainDoesNotStretchIt) {
  if (!SteppedWallClock::Available()) {
    GTEST_SKIP() << "libfaketime is not installed (Debian: libfaketime)";
  }
  TempDir dir;
  SteppedWallClock clock(dir.path());
  // The watchdog: 3 s + 3 x the 3 s grace.
  SessiondProcess node(SESSIOND_FAKETIME_BINARY, dir.path() + "/data",
                       {"--shutdown_grace_ms=3000", "--stop_timeout_ms=3000"});
  node.set_env(clock.Env());
  ASSERT_TRUE(node.Start().ok()) << node.log_path();
  auto stub = node.NewStub();
  // A client that calls every 10 ms (bounded: 60 s), refused all along.
  std::atomic<bool> stop{false};
  std::thread caller([&] {
    const absl::Time end = absl::Now() + absl::Seconds(60);
    while (!stop.load() && absl::Now() < end) {
      grpc::ClientContext context;
      context.set_deadline(std::chrono::system_clock::now() +
                           std::chrono::seconds(1));
      sessiond::v1::ValidateSessionRequest request;
      request.set_token("anyone");
      sessiond::v1::ValidateSessionResponse response;
      (void)stub->ValidateSession(&context, request, &response);
      absl::SleepFor(absl::Milliseconds(10));
    }
  });
  absl::SleepFor(absl::Milliseconds(200));
  ASSERT_EQ(kill(node.pid(), SIGTERM), 0);
  clock.Set("-1d");  // seen within the 1 s cache, inside the 3 s drain
  const int status = node.WaitForExit(absl::Seconds(60));
  stop.store(true);
  caller.join();
  ASSERT_TRUE(status != -1 && WIFEXITED(status))
      << status << ", see " << node.log_path();
  EXPECT_EQ(WEXITSTATUS(status), 0) << FileText(node.log_path());
}

// RocksDB 7.8's own recovery after a flush that failed for lack of space
// can hang for good, and every write then fails with its background error
// although the disk has room; nothing short of reopening the database mends
// it, and no teardown starts by itself. The fault point storage.write_jams
// stands for that hang, which cannot be brought about at will: from its
// 50th pass (an apply stage's write, mid-load), the Database of this start
// takes no more writes.
// Writes go on failing for --stuck_writes_restart_ms with room on the disk,
// the node restarts in place, and writes are taken again; every create
// acknowledged on either side of the restart is there.
TEST(StuckWritesTest, ADatabaseThatTakesNoMoreWritesIsReopened) {
  TempDir dir;
  SessiondProcess node(
      SESSIOND_BINARY, dir.path() + "/data",
      {"--fault_point=storage.write_jams@50!", "--stuck_writes_restart_ms=2000",
       "--shutdown_grace_ms=1000"});
  ASSERT_TRUE(node.Start().ok()) << node.log_path();
  auto stub = node.NewStub();
  std::vector<std::string> acknowledged;
  int refused = 0;
  int after_refusals = 0;
  // Bounded: 3,000 creates or 120 s, and done once 20 went through after
  // the writes failed.
  const absl::Time end = absl::Now() + absl::Seconds(120);
  for (int i = 0; i < 3000 && absl::Now() < end && after_refusals < 20; ++i) {
    const std::string token = CreateOne(*stub, absl::StrCat("jam-", i % 7));
    if (token.empty()) {
      ++refused;
      absl::SleepFor(absl::Milliseconds(50));
      continue;
    }
    acknowledged.push_back(token);
    if (refused > 0) ++after_refusals;
  }
  ASSERT_GT(refused, 0) << "the fault point never failed; see "
                        << node.log_path();
  ASSERT_EQ(after_refusals, 20)
      << "writes were not taken again; see " << node.log_path();
  const std::string log = FileText(node.log_path());
  EXPECT_NE(log.find("storage.stuck_restart"), std::string::npos) << log;
  EXPECT_NE(log.find("restart.done"), std::string::npos) << log;
  // The disk guard tells the refusal apart from a full disk, and does not
  // flip between refusing and resuming at every check.
  EXPECT_NE(log.find("disk.database_refuses_writes"), std::string::npos) << log;
  EXPECT_EQ(log.find("DATA DISK FULL"), std::string::npos) << log;
  // The apply stage, retrying a write that could not succeed (the jam
  // begins with one of its writes), gave up when the teardown began
  // (StateMachine::StopRetryingWrites) rather than hold it until the
  // StopWatchdog cut it short.
  EXPECT_NE(log.find("apply.stopped_at_shutdown"), std::string::npos) << log;
  EXPECT_EQ(log.find("shutdown.stuck"), std::string::npos) << log;
  EXPECT_EQ(kill(node.pid(), 0), 0);
  for (const std::string& token : acknowledged) {
    ASSERT_TRUE(IsValid(node, token)) << token;
  }
  // And from the disk, after a kill -9.
  node.Kill();
  node.set_extra_flags({});
  ASSERT_TRUE(node.Start().ok()) << node.log_path();
  for (const std::string& token : acknowledged) {
    ASSERT_TRUE(IsValid(node, token)) << token;
  }
}

INSTANTIATE_TEST_SUITE_P(WritePath, FaultPointTest,
                         ::testing::Values("log.before_append",
                                           "log.after_append",
                                           "apply.before_apply",
                                           "apply.after_apply"),
                         [](const auto& info) {
                           std::string name = info.param;
                           for (char& c : name) {
                             if (c == '.') c = '_';
                           }
                           return name;
                         });

}  // namespace
}  // namespace sessiond::testing
