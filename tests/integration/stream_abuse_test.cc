// Copyright sessiond authors. Licensed under the Apache License 2.0.
//
// Clients that never read, and clients that send huge batches (issue 10,
// part 2; docs/RELIABILITY.md "Streams that never read, and fairness"),
// against the real sessiond binary: its memory must stay bounded and a
// well-behaved client's calls must keep being answered.
//
// Latencies are printed, never asserted (the machine may be shared); the
// only time bound is each call's own deadline, the C++ client library's
// default deadline for one attempt (SessionClientOptions::deadline, 2 s): a
// call that misses it is an attempt an application would have given up
// on. A validation takes under 1 ms; with the fix the slowest call seen
// under the abuse took 0.1 s in this test (0.75 s in the heaviest run by
// hand). Without it, every run had calls waiting more than 2 s (up to
// 54 s), and with only the smaller receive windows (no SocketPoller) up to
// 5 s.
// SESSIOND_STREAM_ABUSE_BINARY=path runs the tests against another sessiond
// build (how they were shown to fail without the fix).
#include <grpcpp/client_context.h>
#include <grpcpp/create_channel.h>
#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/security/credentials.h>
#include <sys/wait.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "google/rpc/error_details.pb.h"
#include "google/rpc/status.pb.h"
#include "gtest/gtest.h"
#include "tests/integration/sessiond_process.h"

namespace sessiond::testing {
namespace {

using sessiond::v1::BatchValidateSessionsRequest;
using sessiond::v1::BatchValidateSessionsResponse;
using sessiond::v1::CreateSessionRequest;
using sessiond::v1::CreateSessionResponse;
using sessiond::v1::CreateSessionsRequest;
using sessiond::v1::CreateSessionsResponse;
using sessiond::v1::ListUserSessionsRequest;
using sessiond::v1::ListUserSessionsResponse;
using sessiond::v1::Session;
using sessiond::v1::ValidateSessionRequest;
using sessiond::v1::ValidateSessionResponse;

// The well-behaved client's deadline for each call: a correctness bound
// (SessionClientOptions::deadline's default).
constexpr absl::Duration kCallDeadline = absl::Seconds(2);

std::string Binary() {
  const char* other = std::getenv("SESSIOND_STREAM_ABUSE_BINARY");
  return other != nullptr && other[0] != '\0' ? other : SESSIOND_BINARY;
}

std::chrono::system_clock::time_point DeadlineIn(absl::Duration d) {
  return std::chrono::system_clock::now() + absl::ToChronoMilliseconds(d);
}

// Resident memory of `pid` in MiB (VmRSS), or -1.
int64_t RssMiB(pid_t pid) {
  std::ifstream status(absl::StrCat("/proc/", pid, "/status"));
  std::string line;
  while (std::getline(status, line)) {
    if (!absl::StartsWith(line, "VmRSS:")) continue;
    std::string digits;
    for (char c : line) {
      if (c >= '0' && c <= '9') digits += c;
    }
    int64_t kib = 0;
    if (absl::SimpleAtoi(digits, &kib)) return kib / 1024;
  }
  return -1;
}

// Latencies of one client's calls, printed as percentiles.
class Latencies {
 public:
  void Add(absl::Duration d) { samples_.push_back(d); }
  size_t size() const { return samples_.size(); }
  std::string Summary() {
    if (samples_.empty()) return "no calls";
    std::sort(samples_.begin(), samples_.end());
    auto at = [this](double q) {
      const size_t i = static_cast<size_t>(q * (samples_.size() - 1));
      return absl::FormatDuration(
          absl::Trunc(samples_[i], absl::Microseconds(10)));
    };
    return absl::StrCat(samples_.size(), " calls: p50 ", at(0.5), ", p99 ",
                        at(0.99), ", max ", at(1.0));
  }

 private:
  std::vector<absl::Duration> samples_;
};

struct Node {
  TempDir dir;
  std::unique_ptr<SessiondProcess> process;
  std::unique_ptr<sessiond::v1::SessionService::Stub> stub;
  std::string token;  // of a live session
};

// Starts a node and creates one session.
void StartNode(Node* node, std::vector<std::string> flags = {}) {
  node->process = std::make_unique<SessiondProcess>(
      Binary(), node->dir.path() + "/data", std::move(flags));
  ASSERT_TRUE(node->process->Start().ok()) << node->process->log_path();
  node->stub = node->process->NewStub();
  CreateSessionRequest create;
  create.set_user_id("abuse");
  CreateSessionResponse created;
  grpc::ClientContext context;
  // The first write waits for the new node's election.
  context.set_deadline(DeadlineIn(absl::Seconds(30)));
  const grpc::Status status =
      node->stub->CreateSession(&context, create, &created);
  ASSERT_TRUE(status.ok()) << status.error_message();
  node->token = created.token();
}

void StopNode(Node* node) {
  const int status = node->process->Terminate();
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0)
      << "status " << status << ", log " << node->process->log_path();
}

// Whether the well-behaved client's calls must all be answered in time, or
// only serve as a clock while memory is measured.
enum class Answers { kRequired, kOptional };

// The well-behaved client: ValidateSession calls one after another (a 5 ms
// pause between them) for `duration`, each with its own kCallDeadline; with
// Answers::kRequired every one must be answered VALID. `on_call` runs after
// each call, answered or not.
Latencies ValidateForAWhile(const Node& node, absl::Duration duration,
                            const std::function<void()>& on_call = {},
                            Answers answers = Answers::kRequired) {
  Latencies latencies;
  const absl::Time end = absl::Now() + duration;
  while (absl::Now() < end) {
    ValidateSessionRequest request;
    request.set_token(node.token);
    ValidateSessionResponse response;
    grpc::ClientContext context;
    context.set_deadline(DeadlineIn(kCallDeadline));
    const absl::Time start = absl::Now();
    const grpc::Status status =
        node.stub->ValidateSession(&context, request, &response);
    const absl::Duration took = absl::Now() - start;
    if (!status.ok() && answers == Answers::kOptional) {
      if (on_call) on_call();
      continue;
    }
    if (!status.ok()) {
      ADD_FAILURE() << "a well-behaved ValidateSession failed after " << took
                    << " (call " << latencies.size() + 1
                    << "): " << status.error_code() << " "
                    << status.error_message();
      break;
    }
    EXPECT_EQ(response.outcome(), ValidateSessionResponse::VALID);
    latencies.Add(took);
    if (on_call) on_call();
    absl::SleepFor(absl::Milliseconds(5));
  }
  return latencies;
}

// A StreamValidateSessions client that writes up to kMaxWrites requests,
// one after another as each write completes, and never reads an answer.
// Callback API, so a write that flow control holds back parks no thread.
class NeverReadingStream
    : public grpc::ClientBidiReactor<ValidateSessionRequest,
                                     ValidateSessionResponse> {
 public:
  static constexpr int kMaxWrites = 200000;  // bounded

  NeverReadingStream(std::unique_ptr<sessiond::v1::SessionService::Stub> stub,
                     const std::string& token, std::atomic<int64_t>* written)
      : stub_(std::move(stub)), written_(written) {
    request_.set_token(token);
    context_.set_deadline(DeadlineIn(absl::Seconds(120)));
    stub_->async()->StreamValidateSessions(&context_, this);
    StartWrite(&request_);
    StartCall();
  }

  void OnWriteDone(bool ok) override {
    if (!ok) return;
    written_->fetch_add(1);
    if (++writes_ >= kMaxWrites) return;
    request_.set_request_id(static_cast<uint64_t>(writes_));
    StartWrite(&request_);
  }
  void OnDone(const grpc::Status& /*status*/) override { done_.Notify(); }

  void CancelAndWait() {
    context_.TryCancel();
    done_.WaitForNotification();
  }

 private:
  std::unique_ptr<sessiond::v1::SessionService::Stub> stub_;
  std::atomic<int64_t>* const written_;
  grpc::ClientContext context_;
  ValidateSessionRequest request_;
  int writes_ = 0;  // only OnWriteDone touches it, one at a time
  absl::Notification done_;
};

// The bound docs/RELIABILITY.md states for this abuse: what 50 streams that
// never read may add to the daemon's resident memory. Each holds at most 64
// answers and a 64 KiB receive window (the server turns gRPC's BDP probe
// off); measured: +13 to +17 MiB, flat. Before, the windows grew to several
// MiB per stream: +75 to +158 MiB in 12 to 20 s, still rising.
constexpr int64_t kStreamsRssBoundMiB = 64;

// 50 streams, each on its own connection, validating `token` as fast as
// gRPC lets them and never reading an answer, while a well-behaved client
// validates: the daemon's resident memory grows by less than `bound_mib`,
// and with Answers::kRequired the client's calls are all answered.
void ExpectNeverReadingStreamsBounded(Node& node, const std::string& token,
                                      int64_t bound_mib, Answers answers) {
  Latencies alone = ValidateForAWhile(node, absl::Seconds(1));
  const pid_t pid = node.process->pid();
  const int64_t rss_before = RssMiB(pid);
  ASSERT_GT(rss_before, 0);

  constexpr int kStreams = 50;
  std::atomic<int64_t> written{0};
  std::vector<std::unique_ptr<NeverReadingStream>> abusers;
  for (int s = 0; s < kStreams; ++s) {
    abusers.push_back(std::make_unique<NeverReadingStream>(
        node.process->NewStub(), token, &written));
  }
  // Until the server is busy with them (bounded).
  for (int i = 0; i < 40 && written.load() < 20000; ++i) {
    absl::SleepFor(absl::Milliseconds(50));
  }

  // Before the fix these calls waited up to 54 s: gRPC's callback threads
  // did not read their socket while the streams kept them busy.
  int64_t rss_max = rss_before;
  Latencies during = ValidateForAWhile(
      node, absl::Seconds(10),
      [&] { rss_max = std::max(rss_max, RssMiB(pid)); }, answers);
  rss_max = std::max(rss_max, RssMiB(pid));
  const int64_t writes = written.load();
  std::fprintf(
      stderr,
      "stream abuse: well-behaved ValidateSession alone: %s\n"
      "stream abuse: same, while %d streams write without reading: "
      "%s\n"
      "stream abuse: %lld requests written by the streams; daemon "
      "RSS %lld MiB before, at most %lld MiB during (bound: +%lld)\n",
      alone.Summary().c_str(), kStreams, during.Summary().c_str(),
      static_cast<long long>(writes), static_cast<long long>(rss_before),
      static_cast<long long>(rss_max), static_cast<long long>(bound_mib));
  if (answers == Answers::kRequired) {
    EXPECT_GT(during.size(), 0u);
  }
  EXPECT_LT(rss_max - rss_before, bound_mib);

  for (auto& abuser : abusers) abuser->CancelAndWait();
}

TEST(StreamAbuseTest, StreamsThatNeverReadKeepMemoryBoundedAndOthersAnswered) {
  Node node;
  ASSERT_NO_FATAL_FAILURE(StartNode(&node));
  ExpectNeverReadingStreamsBounded(node, node.token, kStreamsRssBoundMiB,
                                   Answers::kRequired);
  StopNode(&node);
}

// The same streams validating a session of 15.6 KB: each of their 64 owed
// answers is kept once, serialized (at most 50 x 64 x 15.6 KB = 49 MiB, and
// the windows). The parsed request and answer were kept beside it until the
// answer was written: measured +131 and +134 MiB before, +77 and +80 after.
// Only memory is asserted: busy serializing large answers, a loaded
// machine may not answer the well-behaved client within its deadline (seen
// once in CI); the test above asserts that it is answered.
constexpr int64_t kLargeAnswersRssBoundMiB = 105;

TEST(StreamAbuseTest, StreamsThatNeverReadLargeAnswersHoldEachOnce) {
  Node node;
  ASSERT_NO_FATAL_FAILURE(StartNode(&node));
  CreateSessionRequest create;
  create.set_user_id("large");
  for (const char* key : {"a", "b", "c", "d"}) {
    (*create.mutable_attributes())[key] = std::string(3900, 'x');
  }
  CreateSessionResponse created;
  grpc::ClientContext context;
  context.set_deadline(DeadlineIn(absl::Seconds(30)));
  ASSERT_TRUE(node.stub->CreateSession(&context, create, &created).ok());
  ExpectNeverReadingStreamsBounded(
      node, created.token(), kLargeAnswersRssBoundMiB, Answers::kOptional);
  StopNode(&node);
}

// A validate stream held open, with its context.
struct OpenStream {
  grpc::ClientContext context;
  std::unique_ptr<
      grpc::ClientReaderWriter<ValidateSessionRequest, ValidateSessionResponse>>
      stream;
};

// Opens `n` streams to `node` over its stub's one connection; each answers
// one validation, so each is open on the server.
void OpenStreams(const Node& node, int n,
                 std::vector<std::unique_ptr<OpenStream>>* open) {
  ValidateSessionRequest request;
  request.set_token(node.token);
  ValidateSessionResponse response;
  for (int i = 0; i < n; ++i) {
    auto one = std::make_unique<OpenStream>();
    one->context.set_deadline(DeadlineIn(absl::Seconds(60)));
    one->stream = node.stub->StreamValidateSessions(&one->context);
    ASSERT_TRUE(one->stream->Write(request)) << "stream " << i;
    ASSERT_TRUE(one->stream->Read(&response)) << "stream " << i;
    open->push_back(std::move(one));
  }
}

// The total cap on open validate streams (SessionServiceOptions::
// max_validate_streams, 1000): one more is refused with RESOURCE_EXHAUSTED
// saying which limit and what to do; once one closes, a new one is served.
TEST(StreamAbuseTest, StreamsPastTheCapAreRefusedWithResourceExhausted) {
  Node node;
  // The cap is the node's; this client opens all its streams over one
  // connection, which by default carries at most 100 at once.
  ASSERT_NO_FATAL_FAILURE(StartNode(&node, {"--max_concurrent_streams=2000"}));
  constexpr int kCap = 1000;
  ValidateSessionRequest request;
  request.set_token(node.token);
  ValidateSessionResponse response;

  std::vector<std::unique_ptr<OpenStream>> open;
  ASSERT_NO_FATAL_FAILURE(OpenStreams(node, kCap, &open));

  auto refused_or_served = [&](bool want_served) {
    grpc::ClientContext context;
    context.set_deadline(DeadlineIn(kCallDeadline));
    auto stream = node.stub->StreamValidateSessions(&context);
    stream->Write(request);
    const bool answered = stream->Read(&response);
    stream->WritesDone();
    const grpc::Status status = stream->Finish();
    if (want_served) {
      EXPECT_TRUE(answered && status.ok()) << status.error_message();
      return;
    }
    EXPECT_FALSE(answered);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
    EXPECT_EQ(status.error_message(),
              "too many StreamValidateSessions streams open on this node "
              "(limit 1000); close streams you do not use, share one stream "
              "per client process, or call ValidateSession / "
              "BatchValidateSessions");
  };
  refused_or_served(/*want_served=*/false);

  // Unary calls are not streams: still answered.
  {
    grpc::ClientContext context;
    context.set_deadline(DeadlineIn(kCallDeadline));
    const grpc::Status status =
        node.stub->ValidateSession(&context, request, &response);
    EXPECT_TRUE(status.ok()) << status.error_message();
  }

  open.back()->stream->WritesDone();
  EXPECT_TRUE(open.back()->stream->Finish().ok());
  open.pop_back();
  // The server unregisters a stream when gRPC is done with it, a moment
  // after the client saw it end.
  absl::SleepFor(absl::Milliseconds(200));
  refused_or_served(/*want_served=*/true);

  for (auto& one : open) {
    one->stream->WritesDone();
    EXPECT_TRUE(one->stream->Finish().ok());
  }
  StopNode(&node);
}

// --max_concurrent_streams: calls past a connection's limit wait on the
// client, with no error and without reaching the node, so one flooding
// client cannot fill the node's queues; another connection is served, and
// the waiting call goes out once a stream closes.
TEST(StreamAbuseTest, CallsPastAConnectionsStreamLimitWaitOnTheClient) {
  Node node;
  ASSERT_NO_FATAL_FAILURE(StartNode(&node, {"--max_concurrent_streams=4"}));
  ValidateSessionRequest request;
  request.set_token(node.token);
  ValidateSessionResponse response;
  std::vector<std::unique_ptr<OpenStream>> open;
  ASSERT_NO_FATAL_FAILURE(OpenStreams(node, 4, &open));
  // A fifth call on the same connection waits for a stream until its
  // deadline.
  {
    grpc::ClientContext context;
    context.set_deadline(DeadlineIn(absl::Seconds(1)));
    const grpc::Status status =
        node.stub->ValidateSession(&context, request, &response);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED)
        << status.error_message();
  }
  // Another connection (a channel with other arguments gets its own) is
  // served at once.
  {
    grpc::ChannelArguments args;
    args.SetInt("sessiond.test.other_connection", 1);
    auto other =
        sessiond::v1::SessionService::NewStub(grpc::CreateCustomChannel(
            node.process->address(), grpc::InsecureChannelCredentials(), args));
    grpc::ClientContext context;
    context.set_deadline(DeadlineIn(kCallDeadline));
    const grpc::Status status =
        other->ValidateSession(&context, request, &response);
    EXPECT_TRUE(status.ok()) << status.error_message();
  }
  // The waiting call goes out once one of the four streams ends.
  grpc::ClientContext waiting;
  waiting.set_deadline(DeadlineIn(kCallDeadline));
  std::thread closer([&open] {
    absl::SleepFor(absl::Milliseconds(200));
    open.back()->stream->WritesDone();
    EXPECT_TRUE(open.back()->stream->Finish().ok());
  });
  const grpc::Status status =
      node.stub->ValidateSession(&waiting, request, &response);
  closer.join();
  EXPECT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(response.outcome(), ValidateSessionResponse::VALID);
  open.pop_back();
  for (auto& one : open) {
    one->stream->WritesDone();
    EXPECT_TRUE(one->stream->Finish().ok());
  }
  StopNode(&node);
}

// A unary call sent as a stream (GenericStub), whose answer is never read:
// no read is ever started, so the client's window stays as it began.
class NeverReadingCall
    : public grpc::ClientBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer> {
 public:
  // `finished` counts the calls that ended (refused, or cancelled).
  NeverReadingCall(grpc::GenericStub* stub, const std::string& method,
                   const std::string& request, std::atomic<int>* finished)
      : finished_(finished) {
    grpc::Slice slice(request);
    request_ = grpc::ByteBuffer(&slice, 1);
    context_.set_deadline(DeadlineIn(absl::Seconds(120)));
    stub->PrepareBidiStreamingCall(&context_, method, grpc::StubOptions(),
                                   this);
    StartWriteLast(&request_, grpc::WriteOptions());
    StartCall();
  }
  ~NeverReadingCall() override { CancelAndWait(); }
  void OnDone(const grpc::Status& /*status*/) override {
    finished_->fetch_add(1);
    done_.Notify();
  }

  void CancelAndWait() {
    context_.TryCancel();
    done_.WaitForNotification();
  }

 private:
  std::atomic<int>* const finished_;
  grpc::ClientContext context_;
  grpc::ByteBuffer request_;
  absl::Notification done_;
};

// The ErrorInfo reason of a failed call (server/grpc_status.cc), or "".
std::string ErrorReason(const grpc::Status& status) {
  google::rpc::Status details;
  if (!details.ParseFromString(status.error_details())) return "";
  for (const google::protobuf::Any& any : details.details()) {
    google::rpc::ErrorInfo info;
    if (any.UnpackTo(&info)) return info.reason();
  }
  return "";
}

// A call whose large answer some clients never read: its method, its
// request serialized, and `probe`, the same call by a client that reads
// its answer.
struct UnreadCall {
  std::string method;
  std::string request;
  std::function<grpc::Status()> probe;
};

UnreadCall BatchCall(Node* node, const BatchValidateSessionsRequest& batch) {
  return {"/sessiond.v1.SessionService/BatchValidateSessions",
          batch.SerializeAsString(), [node, batch] {
            grpc::ClientContext context;
            context.set_deadline(DeadlineIn(absl::Seconds(10)));
            BatchValidateSessionsResponse response;
            return node->stub->BatchValidateSessions(&context, batch,
                                                     &response);
          }};
}

UnreadCall ListCall(Node* node, const ListUserSessionsRequest& list) {
  return {"/sessiond.v1.SessionService/ListUserSessions",
          list.SerializeAsString(), [node, list] {
            grpc::ClientContext context;
            context.set_deadline(DeadlineIn(absl::Seconds(10)));
            ListUserSessionsResponse response;
            return node->stub->ListUserSessions(&context, list, &response);
          }};
}

// Opens `calls` of `call` on its node that never read their answers, and
// expects `refused` of them refused while the others hold what they hold;
// then `call.probe`s 100 ms apart, each refused with a message containing
// `message` and ErrorInfo `reason`; then `while_full` (if any); then, the
// calls cancelled, a probe answered.
void ExpectUnreadAnswersBounded(const Node& node, const UnreadCall& call,
                                int calls, int refused,
                                const std::string& message,
                                const std::string& reason,
                                const std::function<void()>& while_full = {}) {
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_HTTP2_BDP_PROBE, 0);
  grpc::GenericStub unread_stub(grpc::CreateCustomChannel(
      node.process->address(), grpc::InsecureChannelCredentials(), args));
  std::atomic<int> finished{0};
  std::vector<std::unique_ptr<NeverReadingCall>> unread;
  for (int i = 0; i < calls; ++i) {
    unread.push_back(std::make_unique<NeverReadingCall>(
        &unread_stub, call.method, call.request, &finished));
  }
  for (int i = 0; i < 300 && finished.load() < refused; ++i) {
    absl::SleepFor(absl::Milliseconds(100));  // bounded: 30 s
  }
  ASSERT_EQ(finished.load(), refused)
      << "the extra calls were not refused: places were given back";

  // 10 probes 100 ms apart, long after the held calls were answered (a
  // batch or a page takes a few ms): each must find every place taken.
  for (int i = 0; i < 10; ++i) {
    const grpc::Status denied = call.probe();
    ASSERT_EQ(denied.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED)
        << "probe " << i << ": " << denied.error_message();
    EXPECT_TRUE(absl::StrContains(denied.error_message(), message))
        << denied.error_message();
    EXPECT_EQ(ErrorReason(denied), reason) << denied.error_message();
    absl::SleepFor(absl::Milliseconds(100));
  }
  if (while_full) while_full();

  // The calls cancelled, their places come back (bounded wait).
  for (auto& unread_call : unread) unread_call->CancelAndWait();
  grpc::Status after;
  for (int i = 0; i < 100; ++i) {
    after = call.probe();
    if (after.ok()) break;
    absl::SleepFor(absl::Milliseconds(100));
  }
  EXPECT_TRUE(after.ok()) << after.error_message();
}

// A session with `bytes` of attributes, and a batch of `tokens` of it.
BatchValidateSessionsRequest BatchOfOneLargeSession(Node* node, int bytes,
                                                    int tokens) {
  CreateSessionRequest create;
  create.set_user_id("unread");
  for (int k = 0; bytes > 0; ++k, bytes -= 4000) {
    (*create.mutable_attributes())[absl::StrCat("blob", k)] =
        std::string(std::min(bytes, 4000), 'x');
  }
  CreateSessionResponse created;
  grpc::ClientContext context;
  context.set_deadline(DeadlineIn(absl::Seconds(30)));
  const grpc::Status status =
      node->stub->CreateSession(&context, create, &created);
  EXPECT_TRUE(status.ok()) << status.error_message();
  BatchValidateSessionsRequest batch;
  for (int i = 0; i < tokens; ++i) {
    batch.add_requests()->set_token(created.token());
  }
  return batch;
}

// A large BatchValidateSessions (more than 256 tokens) holds one of the
// node's 64 places until the client took its answer. It gave its place
// back once the answer was handed to gRPC: a client that never read its
// answers made the node hold any number of them.
TEST(StreamAbuseTest, LargeBatchesWhoseAnswersAreNeverReadHoldTheirPlaces) {
  Node node;
  ASSERT_NO_FATAL_FAILURE(StartNode(&node, {"--max_held_answer_mib=1024"}));
  // Each answer (300 tokens of a session with 4 KB of attributes: 1.2 MB)
  // is far past the 64 KiB window a client without BDP probes opens: it
  // stays on the server until read. Four more than the node's places
  // (--max_waiting_batch_validations' default): once four were refused,
  // the others hold every place.
  const BatchValidateSessionsRequest batch =
      BatchOfOneLargeSession(&node, 4000, 300);
  ExpectUnreadAnswersBounded(node, BatchCall(&node, batch), 64 + 4, 4,
                             "too many large BatchValidateSessions",
                             "TOO_MANY_BATCHES");
  StopNode(&node);
}

// Small batches (256 tokens or fewer take no place) of a large session
// answer megabytes each: the bytes of answers held until read are bounded
// (--max_held_answer_mib). Counted by tokens alone, 68 such calls held
// about 290 MB.
TEST(StreamAbuseTest, SmallBatchesWhoseLargeAnswersAreNeverReadAreBounded) {
  Node node;
  ASSERT_NO_FATAL_FAILURE(StartNode(&node, {"--max_held_answer_mib=8"}));
  const BatchValidateSessionsRequest batch =
      BatchOfOneLargeSession(&node, 12000, 100);
  // How many answers fit in 8 MiB.
  BatchValidateSessionsResponse read;
  {
    grpc::ClientContext context;
    context.set_deadline(DeadlineIn(absl::Seconds(10)));
    ASSERT_TRUE(node.stub->BatchValidateSessions(&context, batch, &read).ok());
  }
  const int held = static_cast<int>((uint64_t{8} << 20) / read.ByteSizeLong());
  ASSERT_GE(held, 2) << read.ByteSizeLong();
  constexpr int kCalls = 16;
  ExpectUnreadAnswersBounded(node, BatchCall(&node, batch), kCalls,
                             kCalls - held, "too many large answers wait",
                             "TOO_MANY_LARGE_ANSWERS");
  StopNode(&node);
}

// A batch of tokens no session can have is answered without the read
// barrier, UNKNOWN each, and its answer is held within the same bound:
// 10,000 one-byte tokens answer over 100 KB, and a client that never read
// them pinned that much per call without limit.
TEST(StreamAbuseTest, GarbageBatchesWhoseAnswersAreNeverReadAreBounded) {
  Node node;
  ASSERT_NO_FATAL_FAILURE(StartNode(&node, {"--max_held_answer_mib=1"}));
  BatchValidateSessionsRequest batch;
  for (int i = 0; i < 10000; ++i) {
    ValidateSessionRequest* r = batch.add_requests();
    r->set_request_id(static_cast<uint64_t>(i) + 1);
    r->set_token("#");
  }
  BatchValidateSessionsResponse read;
  {
    grpc::ClientContext context;
    context.set_deadline(DeadlineIn(absl::Seconds(10)));
    ASSERT_TRUE(node.stub->BatchValidateSessions(&context, batch, &read).ok());
  }
  ASSERT_EQ(read.responses_size(), 10000);
  EXPECT_EQ(read.responses(9999).outcome(), ValidateSessionResponse::UNKNOWN);
  const int held = static_cast<int>((uint64_t{1} << 20) / read.ByteSizeLong());
  ASSERT_GE(held, 2) << read.ByteSizeLong();
  constexpr int kCalls = 16;
  ExpectUnreadAnswersBounded(node, BatchCall(&node, batch), kCalls,
                             kCalls - held, "too many large answers wait",
                             "TOO_MANY_LARGE_ANSWERS");
  StopNode(&node);
}

// A ListUserSessions page of large sessions is a large answer too: a
// client that never reads its pages holds them within --max_held_answer_mib
// with the batches', and the next large page is refused, changing nothing,
// while small pages are still answered.
TEST(StreamAbuseTest, ListPagesThatAreNeverReadAreBounded) {
  Node node;
  ASSERT_NO_FATAL_FAILURE(StartNode(&node, {"--max_held_answer_mib=8"}));
  // 100 sessions (the default page) of 12 KB of attributes: a page of
  // 1.2 MB, far past the 64 KiB a client without BDP probes takes.
  constexpr int kSessions = 100;
  CreateSessionsRequest creates;
  for (int i = 0; i < kSessions; ++i) {
    CreateSessionRequest* create = creates.add_requests();
    create->set_user_id("lister");
    for (int k = 0; k < 3; ++k) {
      (*create->mutable_attributes())[absl::StrCat("blob", k)] =
          std::string(4000, 'x');
    }
  }
  CreateSessionsResponse created;
  {
    grpc::ClientContext context;
    context.set_deadline(DeadlineIn(absl::Seconds(30)));
    const grpc::Status status =
        node.stub->CreateSessions(&context, creates, &created);
    ASSERT_TRUE(status.ok()) << status.error_message();
  }
  ASSERT_EQ(created.responses_size(), kSessions);

  ListUserSessionsRequest list;
  list.set_user_id("lister");
  auto read_page = [&](const ListUserSessionsRequest& request,
                       ListUserSessionsResponse* page) {
    grpc::ClientContext context;
    context.set_deadline(DeadlineIn(absl::Seconds(10)));
    const grpc::Status status =
        node.stub->ListUserSessions(&context, request, page);
    EXPECT_TRUE(status.ok()) << status.error_message();
  };
  ListUserSessionsResponse before;
  read_page(list, &before);
  ASSERT_EQ(before.sessions_size(), kSessions);
  // How many pages fit in 8 MiB.
  const int held =
      static_cast<int>((uint64_t{8} << 20) / before.ByteSizeLong());
  ASSERT_GE(held, 2) << before.ByteSizeLong();

  // While every byte is held: a page of 4 (48 KB, not a large answer) is
  // answered.
  auto small_page_answered = [&] {
    ListUserSessionsRequest small = list;
    small.set_page_size(4);
    ListUserSessionsResponse page;
    read_page(small, &page);
    EXPECT_EQ(page.sessions_size(), 4);
    EXPECT_FALSE(page.next_page_token().empty());
  };
  constexpr int kCalls = 16;
  ExpectUnreadAnswersBounded(
      node, ListCall(&node, list), kCalls, kCalls - held,
      "too many large answers wait for their clients on this node (limit 8 "
      "MiB); retry after the delay, read answers as they come, ask for "
      "fewer tokens or a smaller page_size, or spread calls over more nodes",
      "TOO_MANY_LARGE_ANSWERS", small_page_answered);

  // The refused pages changed nothing: the same sessions, each still
  // active, unchanged and valid.
  ListUserSessionsResponse after;
  read_page(list, &after);
  ASSERT_EQ(after.sessions_size(), kSessions);
  for (int i = 0; i < kSessions; ++i) {
    const Session& was = before.sessions(i);
    const Session& is = after.sessions(i);
    EXPECT_EQ(is.session_id(), was.session_id());
    EXPECT_EQ(is.state(), sessiond::v1::SESSION_STATE_ACTIVE);
    EXPECT_EQ(is.version(), was.version());
    EXPECT_EQ(is.last_seen_at_ms(), was.last_seen_at_ms());
    EXPECT_EQ(is.attributes_size(), 3);
  }
  for (const CreateSessionResponse& session : created.responses()) {
    ValidateSessionRequest request;
    request.set_token(session.token());
    ValidateSessionResponse response;
    grpc::ClientContext context;
    context.set_deadline(DeadlineIn(kCallDeadline));
    ASSERT_TRUE(node.stub->ValidateSession(&context, request, &response).ok());
    EXPECT_EQ(response.outcome(), ValidateSessionResponse::VALID);
  }
  StopNode(&node);
}

// Four clients looping BatchValidateSessions of 10,000 tokens. Every batch
// is answered whole and in order (the server validates big batches a slice
// at a time, taking turns, on a thread of their own), and a well-behaved
// client's single validations keep being answered. Before the fix the
// batches ran on the completion thread every read waits for: the
// well-behaved client's p50 went from under 1 ms to 17-51 ms (printed here,
// not asserted: this test guards the sliced batches' answers, it did not
// fail before).
TEST(StreamAbuseTest, HugeBatchesLeaveOtherReadsAnswered) {
  Node node;
  ASSERT_NO_FATAL_FAILURE(StartNode(&node));
  Latencies alone = ValidateForAWhile(node, absl::Seconds(1));

  constexpr int kClients = 4;
  constexpr int kTokens = 10000;
  BatchValidateSessionsRequest batch;
  for (int i = 0; i < kTokens; ++i) {
    ValidateSessionRequest* r = batch.add_requests();
    r->set_request_id(static_cast<uint64_t>(i) + 1);
    // Every third token is unknown: the answers must stay in order.
    r->set_token(i % 3 == 2 ? std::string(43, 'A') : node.token);
  }
  std::atomic<bool> stop{false};
  std::atomic<int> batches{0};
  std::atomic<int> bad_batches{0};
  std::vector<std::thread> clients;
  for (int c = 0; c < kClients; ++c) {
    clients.emplace_back([&] {
      auto stub = node.process->NewStub();
      // Bounded: by `stop`, and by a count should the test thread stall.
      for (int n = 0; n < 1000 && !stop.load(); ++n) {
        grpc::ClientContext context;
        context.set_deadline(DeadlineIn(absl::Seconds(30)));
        BatchValidateSessionsResponse response;
        const grpc::Status status =
            stub->BatchValidateSessions(&context, batch, &response);
        bool whole = status.ok() && response.responses_size() == kTokens;
        for (int i = 0; whole && i < kTokens; ++i) {
          const ValidateSessionResponse& r = response.responses(i);
          whole = r.request_id() == static_cast<uint64_t>(i) + 1 &&
                  r.outcome() == (i % 3 == 2 ? ValidateSessionResponse::UNKNOWN
                                             : ValidateSessionResponse::VALID);
        }
        (whole ? batches : bad_batches).fetch_add(1);
        if (!whole) {
          ADD_FAILURE() << "batch: " << status.error_code() << " "
                        << status.error_message() << ", "
                        << response.responses_size() << " answers";
          return;
        }
      }
    });
  }
  absl::SleepFor(absl::Milliseconds(500));
  Latencies during = ValidateForAWhile(node, absl::Seconds(5));
  stop.store(true);
  for (std::thread& t : clients) t.join();
  std::fprintf(stderr,
               "huge batches: well-behaved ValidateSession alone: %s\n"
               "huge batches: same, while %d clients loop %d-token "
               "BatchValidateSessions: %s (%d batches answered)\n",
               alone.Summary().c_str(), kClients, kTokens,
               during.Summary().c_str(), batches.load());
  EXPECT_GT(batches.load(), 0);
  EXPECT_EQ(bad_batches.load(), 0);
  EXPECT_GT(during.size(), 0u);
  StopNode(&node);
}

}  // namespace
}  // namespace sessiond::testing
