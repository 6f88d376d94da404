// Copyright sessiond authors. Licensed under the Apache License 2.0.
//
// "No acknowledged write is ever lost", tested with kill -9 on the real
// binary rather than argued: sessions created, revoked and updated over gRPC
// must come back identical after SIGKILL and restart on the same data dir.
#include <atomic>
#include <fstream>
#include <iterator>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "google/protobuf/util/message_differencer.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "tests/integration/sessiond_process.h"

namespace sessiond::testing {
namespace {

using google::protobuf::util::MessageDifferencer;
using sessiond::v1::ValidateSessionResponse;

std::string DataDir(const TempDir& dir) { return dir.path() + "/data"; }

// Calls with a deadline so a hung server fails the test instead of hanging.
template <typename Req, typename Resp, typename Method>
grpc::Status Call(sessiond::v1::SessionService::Stub* stub, Method method,
                  const Req& request, Resp* response) {
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() +
                       std::chrono::seconds(10));
  return (stub->*method)(&context, request, response);
}

ValidateSessionResponse Validate(sessiond::v1::SessionService::Stub* stub,
                                 const std::string& token) {
  sessiond::v1::ValidateSessionRequest request;
  request.set_token(token);
  request.set_touch(false);
  ValidateSessionResponse response;
  grpc::Status status =
      Call(stub, &sessiond::v1::SessionService::Stub::ValidateSession, request,
           &response);
  EXPECT_TRUE(status.ok()) << status.error_message();
  return response;
}

struct Created {
  std::string token;
  std::string session_id;
};

// Creates `count` sessions from `threads` threads; returns them in order.
std::vector<Created> CreateSessions(const SessiondProcess& process, int count,
                                    int threads) {
  std::vector<Created> created(count);
  std::atomic<int> next{0};
  std::vector<std::thread> workers;
  for (int t = 0; t < threads; ++t) {
    workers.emplace_back([&] {
      auto stub = process.NewStub();
      for (int i = next++; i < count; i = next++) {
        sessiond::v1::CreateSessionRequest request;
        request.set_user_id(absl::StrCat("user-", i % 997));
        request.set_ttl_ms(3600 * 1000);
        (*request.mutable_attributes())["role"] = "member";
        (*request.mutable_attributes())["n"] = absl::StrCat("value-", i);
        request.mutable_client()->set_device(absl::StrCat("device-", i % 3));
        request.mutable_client()->set_ip("127.0.0.1");
        sessiond::v1::CreateSessionResponse response;
        grpc::Status status =
            Call(stub.get(), &sessiond::v1::SessionService::Stub::CreateSession,
                 request, &response);
        ASSERT_TRUE(status.ok()) << status.error_message();
        created[i] = {response.token(), response.session().session_id()};
      }
    });
  }
  for (auto& w : workers) w.join();
  return created;
}

TEST(DurabilityTest, TenThousandSessionsSurviveSigkill) {
  TempDir dir;
  SessiondProcess process(SESSIOND_BINARY, DataDir(dir));
  ASSERT_TRUE(process.Start().ok()) << process.log_path();

  constexpr int kSessions = 10000;
  std::vector<Created> created = CreateSessions(process, kSessions, 8);
  if (::testing::Test::HasFatalFailure()) return;
  auto stub = process.NewStub();

  // Every 10th revoked by session_id; every 7th updated twice (version 3).
  // From 8 threads, so the node groups their fsyncs as it would under load.
  constexpr int kThreads = 8;
  std::atomic<int> failures{0};
  std::vector<std::thread> writers;
  for (int t = 0; t < kThreads; ++t) {
    writers.emplace_back([&, t] {
      auto own = process.NewStub();
      for (int i = t; i < kSessions; i += kThreads) {
        if (i % 10 == 0) {
          sessiond::v1::RevokeSessionRequest request;
          request.set_session_id(created[i].session_id);
          request.set_reason("durability test");
          sessiond::v1::RevokeSessionResponse response;
          if (!Call(own.get(),
                    &sessiond::v1::SessionService::Stub::RevokeSession, request,
                    &response)
                   .ok()) {
            failures.fetch_add(1);
          }
          continue;
        }
        if (i % 7 != 1) continue;
        for (uint64_t expected : {1u, 2u}) {
          sessiond::v1::UpdateSessionRequest request;
          request.set_token(created[i].token);
          request.set_expected_version(expected);
          (*request.mutable_set_attributes())["cart"] =
              absl::StrCat("items-", expected);
          sessiond::v1::UpdateSessionResponse response;
          const grpc::Status status = Call(
              own.get(), &sessiond::v1::SessionService::Stub::UpdateSession,
              request, &response);
          if (!status.ok() || response.session().version() != expected + 1) {
            failures.fetch_add(1);
          }
        }
      }
    });
  }
  for (std::thread& w : writers) w.join();
  ASSERT_EQ(failures.load(), 0);

  std::vector<ValidateSessionResponse> before;
  before.reserve(kSessions);
  for (const Created& c : created)
    before.push_back(Validate(stub.get(), c.token));

  process.Kill();
  ASSERT_TRUE(process.Start().ok()) << process.log_path();
  stub = process.NewStub();

  int revoked = 0, updated = 0;
  for (int i = 0; i < kSessions; ++i) {
    ValidateSessionResponse after = Validate(stub.get(), created[i].token);
    ASSERT_EQ(after.outcome(), before[i].outcome()) << "session " << i;
    if (i % 10 == 0) {
      ASSERT_EQ(after.outcome(), ValidateSessionResponse::REVOKED);
      ++revoked;
      continue;
    }
    ASSERT_EQ(after.outcome(), ValidateSessionResponse::VALID);
    ASSERT_TRUE(
        MessageDifferencer::Equals(after.session(), before[i].session()))
        << "session " << i << " changed:\n"
        << before[i].session().DebugString() << "\nvs\n"
        << after.session().DebugString();
    if (after.session().version() == 3) ++updated;
  }
  EXPECT_EQ(revoked, kSessions / 10);
  EXPECT_GT(updated, 1000);
}

TEST(DurabilityTest, AcknowledgedCreatesSurviveSigkillUnderLoad) {
  TempDir dir;
  SessiondProcess process(SESSIOND_BINARY, DataDir(dir));
  ASSERT_TRUE(process.Start().ok()) << process.log_path();

  // Writers create until the process dies (or a bound is reached); every
  // create the server acknowledged is recorded.
  std::mutex mutex;
  std::vector<Created> acknowledged;
  std::atomic<bool> stop{false};
  std::atomic<int> attempts{0};
  constexpr int kMaxAttempts = 200000;
  std::vector<std::thread> writers;
  for (int t = 0; t < 16; ++t) {
    writers.emplace_back([&, t] {
      auto stub = process.NewStub();
      while (!stop && attempts++ < kMaxAttempts) {
        sessiond::v1::CreateSessionRequest request;
        request.set_user_id(absl::StrCat("load-", t));
        (*request.mutable_attributes())["blob"] = std::string(200, 'x');
        sessiond::v1::CreateSessionResponse response;
        grpc::ClientContext context;
        context.set_deadline(std::chrono::system_clock::now() +
                             std::chrono::seconds(5));
        if (stub->CreateSession(&context, request, &response).ok()) {
          std::lock_guard<std::mutex> lock(mutex);
          acknowledged.push_back(
              {response.token(), response.session().session_id()});
        } else if (!process.running() || stop) {
          return;
        }
      }
    });
  }
  // Kill once a few thousand creates were acknowledged, bounded in time.
  const absl::Time deadline = absl::Now() + absl::Seconds(60);
  while (absl::Now() < deadline) {
    {
      std::lock_guard<std::mutex> lock(mutex);
      if (acknowledged.size() >= 3000) break;
    }
    absl::SleepFor(absl::Milliseconds(5));
  }
  process.Kill();
  stop = true;
  for (auto& w : writers) w.join();

  std::vector<Created> survivors;
  {
    std::lock_guard<std::mutex> lock(mutex);
    survivors = acknowledged;
  }
  ASSERT_GT(survivors.size(), 100u);
  ASSERT_TRUE(process.Start().ok()) << process.log_path();
  auto stub = process.NewStub();
  for (const Created& c : survivors) {
    ValidateSessionResponse r = Validate(stub.get(), c.token);
    ASSERT_EQ(r.outcome(), ValidateSessionResponse::VALID)
        << "acknowledged session " << c.session_id << " lost after SIGKILL";
    ASSERT_EQ(r.session().session_id(), c.session_id);
  }
}

TEST(DurabilityTest, SigtermShutsDownCleanlyAndKeepsData) {
  TempDir dir;
  SessiondProcess process(SESSIOND_BINARY, DataDir(dir));
  ASSERT_TRUE(process.Start().ok()) << process.log_path();
  std::vector<Created> created = CreateSessions(process, 100, 4);
  const int status = process.Terminate();
  ASSERT_TRUE(WIFEXITED(status)) << "status " << status;
  EXPECT_EQ(WEXITSTATUS(status), 0);
  ASSERT_TRUE(process.Start().ok()) << process.log_path();
  auto stub = process.NewStub();
  for (const Created& c : created) {
    EXPECT_EQ(Validate(stub.get(), c.token).outcome(),
              ValidateSessionResponse::VALID);
  }
}

// A snapshot image the log does not refer to (received and never
// installed: a crash before the install, a refused install, a leader's
// second copy of one installed) is removed at start. It stayed until a
// compaction passed its index: on a quiet cluster, whole copies of the
// state piled up until the disk check refused new snapshots.
TEST(DurabilityTest, SnapshotImagesTheLogDoesNotReferToAreRemovedAtStart) {
  TempDir dir;
  SessiondProcess process(SESSIOND_BINARY, DataDir(dir));
  ASSERT_TRUE(process.Start().ok()) << process.log_path();
  ASSERT_EQ(WEXITSTATUS(process.Terminate()), 0);
  const std::string stray = DataDir(dir) + "/snap/99-1-from-2-0-0.snap";
  std::ofstream(stray) << "an image never installed";
  ASSERT_TRUE(std::ifstream(stray).good());
  ASSERT_TRUE(process.Start().ok()) << process.log_path();
  EXPECT_FALSE(std::ifstream(stray).good()) << stray << " is still there";
}

TEST(DurabilityTest, SecondProcessOnSameDataDirIsRefused) {
  TempDir dir;
  SessiondProcess first(SESSIOND_BINARY, DataDir(dir));
  ASSERT_TRUE(first.Start().ok()) << first.log_path();
  SessiondProcess second(SESSIOND_BINARY, DataDir(dir));
  absl::Status started = second.Start(absl::Seconds(20));
  EXPECT_FALSE(started.ok());
  EXPECT_FALSE(second.running());
  std::ifstream log(second.log_path());
  const std::string output((std::istreambuf_iterator<char>(log)),
                           std::istreambuf_iterator<char>());
  EXPECT_NE(output.find("in use by another sessiond"), std::string::npos)
      << output;
}

}  // namespace
}  // namespace sessiond::testing
