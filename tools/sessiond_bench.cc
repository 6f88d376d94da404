// Copyright sessiond authors. Licensed under the Apache License 2.0.
//
// sessiond-bench: a load generator for sessiond's SessionService; closed
// loop by default, paced (open loop) with --rate. docs/BENCHMARKS.md.
//
// Every mode goes through the same machinery: a grpc::GenericStub on one
// CompletionQueue per client thread, requests serialized to ByteBuffers, one
// latency histogram per thread. `--mode echo` calls grpc.health.v1.Health/
// Check on the same server through exactly that path, so the ratio
// "validate / echo" measures what sessiond adds on top of an empty RPC. (The
// blocking client library in client/ would need a thread per call in flight,
// and has no way to call the health service; hence the async generic API.)
//
// Bounded always: every run stops after --count operations or --duration_s
// seconds, and in any case after --timeout_s; each call has a deadline.

#include <grpcpp/alarm.h>
#include <grpcpp/create_channel.h>
#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/impl/codegen/proto_utils.h>
#include <grpcpp/security/credentials.h>
#include <grpcpp/support/byte_buffer.h>
#include <grpcpp/support/channel_arguments.h>
#include <grpcpp/support/proto_buffer_reader.h>
#include <grpcpp/support/proto_buffer_writer.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"
#include "nlohmann/json.hpp"
#include "sessiond/v1/session.pb.h"

namespace sessiond::bench {
namespace {

namespace v1 = ::sessiond::v1;

constexpr char kCreateMethod[] = "/sessiond.v1.SessionService/CreateSession";
constexpr char kValidateMethod[] =
    "/sessiond.v1.SessionService/ValidateSession";
constexpr char kBatchMethod[] =
    "/sessiond.v1.SessionService/BatchValidateSessions";
constexpr char kStreamMethod[] =
    "/sessiond.v1.SessionService/StreamValidateSessions";
constexpr char kTouchMethod[] = "/sessiond.v1.SessionService/TouchSession";
constexpr char kRevokeMethod[] = "/sessiond.v1.SessionService/RevokeSession";
constexpr char kHealthMethod[] = "/grpc.health.v1.Health/Check";

int64_t NowNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

const char* CodeName(int code) {
  static constexpr const char* kNames[] = {"OK",
                                           "CANCELLED",
                                           "UNKNOWN",
                                           "INVALID_ARGUMENT",
                                           "DEADLINE_EXCEEDED",
                                           "NOT_FOUND",
                                           "ALREADY_EXISTS",
                                           "PERMISSION_DENIED",
                                           "RESOURCE_EXHAUSTED",
                                           "FAILED_PRECONDITION",
                                           "ABORTED",
                                           "OUT_OF_RANGE",
                                           "UNIMPLEMENTED",
                                           "INTERNAL",
                                           "UNAVAILABLE",
                                           "DATA_LOSS",
                                           "UNAUTHENTICATED"};
  if (code >= 0 && code < static_cast<int>(std::size(kNames))) {
    return kNames[code];
  }
  return "BAD_RESPONSE";
}
// Client-side failures that are not gRPC codes get codes past the range.
constexpr int kBadResponse = 100;

// Log-linear latency buckets in nanoseconds, like HdrHistogram with two
// significant digits: 64 sub-buckets per power of two (under 1.6% error),
// fixed memory whatever the number of samples.
class LatencyHistogram {
 public:
  static constexpr int kSubBits = 6;
  static constexpr int kSub = 1 << kSubBits;
  static constexpr int kMaxExp = 47;  // ~39 hours in ns; larger values clamp.
  static constexpr int kBuckets = (kMaxExp - kSubBits + 2) * kSub;

  LatencyHistogram() : counts_(kBuckets, 0) {}

  void Add(int64_t ns) {
    if (ns < 0) ns = 0;
    ++counts_[Index(static_cast<uint64_t>(ns))];
    ++total_;
    sum_ += static_cast<double>(ns);
    max_ = std::max(max_, ns);
  }

  void Merge(const LatencyHistogram& other) {
    for (int i = 0; i < kBuckets; ++i) counts_[i] += other.counts_[i];
    total_ += other.total_;
    sum_ += other.sum_;
    max_ = std::max(max_, other.max_);
  }

  uint64_t count() const { return total_; }
  double mean_ns() const { return total_ == 0 ? 0 : sum_ / total_; }
  int64_t max_ns() const { return max_; }

  // The value at quantile q in [0, 1]: the midpoint of its bucket, capped
  // by the largest value seen.
  int64_t Quantile(double q) const {
    if (total_ == 0) return 0;
    const uint64_t rank =
        std::max<uint64_t>(1, static_cast<uint64_t>(q * total_ + 0.5));
    uint64_t seen = 0;
    for (int i = 0; i < kBuckets; ++i) {
      seen += counts_[i];
      if (seen >= rank) return std::min<int64_t>(Midpoint(i), max_);
    }
    return max_;
  }

 private:
  static int Index(uint64_t v) {
    if (v < kSub) return static_cast<int>(v);
    int exp = 63 - __builtin_clzll(v);
    if (exp > kMaxExp) return kBuckets - 1;
    const int sub = static_cast<int>((v >> (exp - kSubBits)) & (kSub - 1));
    return (exp - kSubBits + 1) * kSub + sub;
  }
  static int64_t Midpoint(int index) {
    if (index < kSub) return index;
    const int exp = index / kSub + kSubBits - 1;
    const int64_t sub = index % kSub;
    const int64_t width = int64_t{1} << (exp - kSubBits);
    return ((kSub + sub) << (exp - kSubBits)) + width / 2;
  }

  std::vector<uint64_t> counts_;
  uint64_t total_ = 0;
  double sum_ = 0;
  int64_t max_ = 0;
};

enum Op { kCreate = 0, kValidate, kTouch, kRevoke, kEcho, kBatch, kNumOps };
const char* OpName(int op) {
  static constexpr const char* kNames[] = {"create", "validate", "touch",
                                           "revoke", "echo",     "batch"};
  return kNames[op];
}

// The unary operation mix, e.g. "create:1,validate:8,touch:1,revoke:0".
struct Mix {
  std::array<uint32_t, 4> weights{0, 0, 0, 0};
  uint32_t total = 0;

  bool NeedsTokens() const {
    return weights[kValidate] + weights[kTouch] + weights[kRevoke] > 0;
  }
  std::string ToString() const {
    std::string out;
    for (int op = 0; op < 4; ++op) {
      if (weights[op] == 0) continue;
      absl::StrAppend(&out, out.empty() ? "" : ",", OpName(op), ":",
                      weights[op]);
    }
    return out;
  }
};

absl::StatusOr<Mix> ParseMix(const std::string& text) {
  Mix mix;
  for (absl::string_view part : absl::StrSplit(text, ',', absl::SkipEmpty())) {
    std::vector<std::string> kv = absl::StrSplit(part, ':');
    uint32_t weight = 1;
    if (kv.size() > 2 ||
        (kv.size() == 2 && !absl::SimpleAtoi(kv[1], &weight))) {
      return absl::InvalidArgumentError(
          absl::StrCat("--ops: bad entry '", part, "' (want name:weight)"));
    }
    int op = -1;
    for (int i = 0; i < 4; ++i) {
      if (kv[0] == OpName(i)) op = i;
    }
    if (op < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("--ops: unknown operation '", kv[0],
                       "' (create, validate, touch, revoke)"));
    }
    mix.weights[op] = weight;
  }
  for (uint32_t w : mix.weights) mix.total += w;
  if (mix.total == 0) {
    return absl::InvalidArgumentError("--ops: all weights are zero");
  }
  return mix;
}

struct Config {
  std::string mode = "unary";  // unary | batch | stream | echo
  Mix mix;
  int concurrency = 64;
  int threads = 2;
  int streams = 0;  // stream mode; 0: one per connection
  int batch = 16;
  uint64_t count = 0;  // 0: run for duration_s
  double duration_s = 10;
  double warmup_s = 1;
  double timeout_s = 300;
  int attr_bytes = 200;
  int users = 1000;
  int64_t ttl_ms = 3'600'000;
  int64_t deadline_ms = 5000;
  bool touch = false;
  double rate = 0;  // calls/s over all slots; 0: closed loop, no pacing
  uint64_t seed = 1;
  size_t token_cap = 100'000;  // created tokens kept per thread for reuse
};

struct Result {
  LatencyHistogram latency;  // per call
  uint64_t ok_ops = 0;       // tokens validated in batch/stream, else calls
  uint64_t ok_calls = 0;
  uint64_t failed_calls = 0;
  std::map<int, uint64_t> errors;  // by status code
  std::array<uint64_t, 5> outcomes{};
  std::array<uint64_t, kNumOps> ok_by_op{};
  std::vector<std::string> tokens;  // created in this run (bounded)
  double seconds = 0;

  void Merge(Result&& other) {
    latency.Merge(other.latency);
    ok_ops += other.ok_ops;
    ok_calls += other.ok_calls;
    failed_calls += other.failed_calls;
    for (auto& [code, n] : other.errors) errors[code] += n;
    for (size_t i = 0; i < outcomes.size(); ++i) {
      outcomes[i] += other.outcomes[i];
    }
    for (size_t i = 0; i < ok_by_op.size(); ++i) {
      ok_by_op[i] += other.ok_by_op[i];
    }
    tokens.insert(tokens.end(), std::make_move_iterator(other.tokens.begin()),
                  std::make_move_iterator(other.tokens.end()));
  }
};

// Shared by all worker threads of one run.
struct RunState {
  const Config* config;
  const std::vector<std::string>* preloaded;  // read-only during the run
  std::atomic<int64_t> budget{0};             // count mode only
  std::atomic<bool> stop{false};
  std::atomic<bool> recording{false};
  std::chrono::system_clock::time_point stream_deadline;
  int64_t start_ns = 0;
  std::atomic<uint64_t> paced{0};

  // With --rate: the time the next call is due, one schedule for all slots.
  int64_t NextDueNs() {
    const uint64_t n = paced.fetch_add(1, std::memory_order_relaxed);
    return start_ns + static_cast<int64_t>(n * (1e9 / config->rate));
  }

  // Takes `n` operations from the budget; false once the run is over.
  bool Take(int n) {
    if (stop.load(std::memory_order_relaxed)) return false;
    if (config->count == 0) return true;
    return budget.fetch_sub(n, std::memory_order_relaxed) > 0;
  }
};

void Serialize(const google::protobuf::MessageLite& message,
               grpc::ByteBuffer* out) {
  bool own = false;
  out->Clear();
  grpc::GenericSerialize<grpc::ProtoBufferWriter,
                         google::protobuf::MessageLite>(message, out, &own);
}

bool Parse(grpc::ByteBuffer* in, google::protobuf::MessageLite* message) {
  return grpc::GenericDeserialize<grpc::ProtoBufferReader,
                                  google::protobuf::MessageLite>(in, message)
      .ok();
}

struct Tag {
  virtual ~Tag() = default;
  virtual void Done(bool ok) = 0;
};

class Worker;

// One in-flight unary call slot: issues the next call when the last ends.
class UnarySlot : public Tag {
 public:
  UnarySlot(Worker* worker, grpc::GenericStub* stub)
      : worker_(worker), stub_(stub) {}
  bool Issue();
  void Done(bool ok) override;

 private:
  struct Wakeup : Tag {
    UnarySlot* slot;
    void Done(bool /*ok*/) override {
      // Early: the call leaves now. gRPC alarms fire up to ~1 ms late
      // (millisecond timers); that lateness is the client's, not the
      // server's, so it is not counted.
      slot->start_ns_ = NowNs();
      slot->Send();
    }
  };

  void Send();

  Worker* const worker_;
  grpc::GenericStub* const stub_;
  const char* method_ = nullptr;
  std::optional<grpc::Alarm> alarm_;
  Wakeup wakeup_;
  std::optional<grpc::ClientContext> context_;
  std::unique_ptr<grpc::GenericClientAsyncResponseReader> reader_;
  grpc::ByteBuffer request_;
  grpc::ByteBuffer response_;
  grpc::Status status_;
  Op op_ = kValidate;
  int64_t start_ns_ = 0;
};

// One StreamValidateSessions stream with up to `window` requests in flight,
// matched to their answers by request_id = (sequence << 16) | slot.
class StreamCall {
 public:
  StreamCall(Worker* worker, grpc::GenericStub* stub, int window);
  void Start();

 private:
  enum Kind { kStart, kRead, kWrite, kWritesDone, kFinish };
  struct Event : Tag {
    StreamCall* call;
    Kind kind;
    void Done(bool ok) override { call->On(kind, ok); }
  };

  void On(Kind kind, bool ok);
  void Fill();
  void MaybeClose();
  void HandleResponse();

  Worker* const worker_;
  grpc::GenericStub* const stub_;
  grpc::ClientContext context_;
  std::unique_ptr<grpc::GenericClientAsyncReaderWriter> stream_;
  std::array<Event, 5> events_;
  grpc::ByteBuffer read_buffer_;
  grpc::ByteBuffer write_buffer_;
  std::deque<grpc::ByteBuffer> queued_;
  std::vector<int64_t> sent_ns_;
  std::vector<uint32_t> free_slots_;
  uint64_t sequence_ = 0;
  int outstanding_ = 0;
  bool writing_ = false;
  bool done_issuing_ = false;
  bool writes_done_ = false;
  grpc::Status status_;
};

// One client thread with its own CompletionQueue; owns its slots and
// streams, so nothing below needs a lock.
class Worker {
 public:
  Worker(RunState* run, uint64_t seed) : run_(run), rng_(seed) {
    const Config& config = *run_->config;
    attribute_.resize(config.attr_bytes);
    for (size_t i = 0; i < attribute_.size(); ++i) {
      attribute_[i] = static_cast<char>('a' + rng_() % 26);
    }
    if (config.mode == "echo") {
      Serialize(v1::ValidateSessionRequest(), &empty_request_);
    }
  }

  void AddUnarySlot(grpc::GenericStub* stub) {
    slots_.push_back(std::make_unique<UnarySlot>(this, stub));
  }
  void AddStream(grpc::GenericStub* stub, int window) {
    streams_.push_back(std::make_unique<StreamCall>(this, stub, window));
  }

  void Loop() {
    for (auto& slot : slots_) {
      ++active_;
      if (!slot->Issue()) --active_;
    }
    for (auto& stream : streams_) {
      ++active_;
      stream->Start();
    }
    void* tag = nullptr;
    bool ok = false;
    while (active_ > 0 && cq_.Next(&tag, &ok)) {
      static_cast<Tag*>(tag)->Done(ok);
    }
    cq_.Shutdown();
    while (cq_.Next(&tag, &ok)) {
    }
  }

  void SlotIdle() { --active_; }

  grpc::CompletionQueue* cq() { return &cq_; }
  RunState* run() { return run_; }
  const Config& config() const { return *run_->config; }
  Result& result() { return result_; }

  Op PickOp() {
    const Mix& mix = config().mix;
    uint32_t r = rng_() % mix.total;
    for (int op = 0; op < 4; ++op) {
      if (r < mix.weights[op]) return static_cast<Op>(op);
      r -= mix.weights[op];
    }
    return kValidate;
  }

  const std::string& PickToken() {
    const size_t preloaded = run_->preloaded->size();
    const size_t total = preloaded + result_.tokens.size();
    if (total == 0) return missing_token_;
    const size_t i = rng_() % total;
    return i < preloaded ? (*run_->preloaded)[i]
                         : result_.tokens[i - preloaded];
  }

  void BuildValidate(v1::ValidateSessionRequest* request, uint64_t id) {
    request->set_token(PickToken());
    request->set_touch(config().touch);
    request->set_request_id(id);
  }

  // Builds the request of `op` into `out`; returns the method to call.
  const char* Build(Op op, grpc::ByteBuffer* out) {
    switch (op) {
      case kCreate: {
        v1::CreateSessionRequest request;
        request.set_user_id(
            absl::StrCat("bench-user-", rng_() % config().users));
        request.set_ttl_ms(config().ttl_ms);
        if (!attribute_.empty()) {
          (*request.mutable_attributes())["data"] = attribute_;
        }
        request.mutable_client()->set_device("sessiond-bench");
        Serialize(request, out);
        return kCreateMethod;
      }
      case kValidate: {
        v1::ValidateSessionRequest request;
        BuildValidate(&request, 0);
        Serialize(request, out);
        return kValidateMethod;
      }
      case kTouch: {
        v1::TouchSessionRequest request;
        request.set_token(PickToken());
        Serialize(request, out);
        return kTouchMethod;
      }
      case kRevoke: {
        v1::RevokeSessionRequest request;
        request.set_token(PickToken());
        request.set_reason("sessiond-bench");
        Serialize(request, out);
        return kRevokeMethod;
      }
      case kBatch: {
        v1::BatchValidateSessionsRequest request;
        for (int i = 0; i < config().batch; ++i) {
          BuildValidate(request.add_requests(), i + 1);
        }
        Serialize(request, out);
        return kBatchMethod;
      }
      case kEcho:
      case kNumOps:
        break;
    }
    // grpc.health.v1.HealthCheckRequest{service: ""} encodes to no bytes.
    *out = empty_request_;
    return kHealthMethod;
  }

  void CountOutcome(int outcome) {
    if (outcome >= 0 && outcome < 5) ++result_.outcomes[outcome];
  }

  void KeepToken(std::string token) {
    if (result_.tokens.size() < config().token_cap) {
      result_.tokens.push_back(std::move(token));
    } else {
      result_.tokens[rng_() % result_.tokens.size()] = std::move(token);
    }
  }

  void RecordError(int code) {
    if (!run_->recording.load(std::memory_order_relaxed)) return;
    ++result_.failed_calls;
    ++result_.errors[code];
  }

  // A completed call of `op` that carried `ops` operations.
  void Record(Op op, int64_t latency_ns, const grpc::Status& status,
              grpc::ByteBuffer* response) {
    if (!status.ok()) {
      RecordError(status.error_code());
      return;
    }
    const bool recording = run_->recording.load(std::memory_order_relaxed);
    uint64_t ops = 1;
    switch (op) {
      case kCreate: {
        v1::CreateSessionResponse parsed;
        if (!Parse(response, &parsed)) return RecordError(kBadResponse);
        KeepToken(std::move(*parsed.mutable_token()));
        break;
      }
      case kValidate: {
        v1::ValidateSessionResponse parsed;
        if (!Parse(response, &parsed)) return RecordError(kBadResponse);
        if (recording) CountOutcome(parsed.outcome());
        break;
      }
      case kBatch: {
        v1::BatchValidateSessionsResponse parsed;
        if (!Parse(response, &parsed) ||
            parsed.responses_size() != config().batch) {
          return RecordError(kBadResponse);
        }
        if (recording) {
          for (const auto& r : parsed.responses()) CountOutcome(r.outcome());
        }
        ops = parsed.responses_size();
        break;
      }
      case kEcho: {
        // HealthCheckResponse{status: SERVING} is the two bytes 08 01.
        grpc::Slice slice;
        if (!response->DumpToSingleSlice(&slice).ok() || slice.size() != 2 ||
            slice.begin()[0] != 0x08 || slice.begin()[1] != 0x01) {
          return RecordError(kBadResponse);
        }
        break;
      }
      case kTouch:
      case kRevoke:
      case kNumOps:
        break;
    }
    if (!recording) return;
    result_.latency.Add(latency_ns);
    ++result_.ok_calls;
    result_.ok_ops += ops;
    result_.ok_by_op[op] += ops;
  }

  // A stream answer: always one validation.
  void RecordStreamAnswer(int64_t latency_ns, int outcome) {
    if (!run_->recording.load(std::memory_order_relaxed)) return;
    result_.latency.Add(latency_ns);
    ++result_.ok_calls;
    ++result_.ok_ops;
    ++result_.ok_by_op[kValidate];
    CountOutcome(outcome);
  }

  std::mt19937_64& rng() { return rng_; }

 private:
  RunState* const run_;
  std::mt19937_64 rng_;
  grpc::CompletionQueue cq_;
  std::vector<std::unique_ptr<UnarySlot>> slots_;
  std::vector<std::unique_ptr<StreamCall>> streams_;
  int active_ = 0;
  std::string attribute_;
  grpc::ByteBuffer empty_request_;
  const std::string missing_token_ = "sessiond-bench-no-such-token";
  Result result_;
};

bool UnarySlot::Issue() {
  const Config& config = worker_->config();
  Op op = kValidate;
  int ops = 1;
  if (config.mode == "echo") {
    op = kEcho;
  } else if (config.mode == "batch") {
    op = kBatch;
    ops = config.batch;
  } else {
    op = worker_->PickOp();
  }
  if (!worker_->run()->Take(ops)) return false;
  op_ = op;
  method_ = worker_->Build(op, &request_);
  if (config.rate > 0) {
    // When the slot is late (its previous call took too long), latency
    // counts from when the call was due, not from when it left: a server
    // that falls behind the schedule is charged for the wait (no
    // coordinated omission).
    start_ns_ = worker_->run()->NextDueNs();
    const int64_t wait_ns = start_ns_ - NowNs();
    if (wait_ns > 20'000) {
      wakeup_.slot = this;
      alarm_.reset();
      alarm_.emplace();
      alarm_->Set(
          worker_->cq(),
          std::chrono::system_clock::now() + std::chrono::nanoseconds(wait_ns),
          &wakeup_);
      return true;
    }
  } else {
    start_ns_ = NowNs();
  }
  Send();
  return true;
}

void UnarySlot::Send() {
  context_.reset();
  context_.emplace();
  context_->set_deadline(
      std::chrono::system_clock::now() +
      std::chrono::milliseconds(worker_->config().deadline_ms));
  reader_ =
      stub_->PrepareUnaryCall(&*context_, method_, request_, worker_->cq());
  reader_->StartCall();
  reader_->Finish(&response_, &status_, this);
}

void UnarySlot::Done(bool /*ok: always true for Finish*/) {
  const int64_t latency = NowNs() - start_ns_;
  worker_->Record(op_, latency, status_, &response_);
  if (!Issue()) worker_->SlotIdle();
}

StreamCall::StreamCall(Worker* worker, grpc::GenericStub* stub, int window)
    : worker_(worker), stub_(stub), sent_ns_(window, 0) {
  for (int i = 0; i < 5; ++i) {
    events_[i].call = this;
    events_[i].kind = static_cast<Kind>(i);
  }
  for (int i = window - 1; i >= 0; --i) free_slots_.push_back(i);
}

void StreamCall::Start() {
  context_.set_deadline(worker_->run()->stream_deadline);
  stream_ = stub_->PrepareCall(&context_, kStreamMethod, worker_->cq());
  stream_->StartCall(&events_[kStart]);
}

void StreamCall::Fill() {
  while (!free_slots_.empty() && !done_issuing_) {
    if (!worker_->run()->Take(1)) {
      done_issuing_ = true;
      break;
    }
    const uint32_t slot = free_slots_.back();
    free_slots_.pop_back();
    v1::ValidateSessionRequest request;
    worker_->BuildValidate(&request, (++sequence_ << 16) | slot);
    grpc::ByteBuffer buffer;
    Serialize(request, &buffer);
    sent_ns_[slot] = NowNs();
    ++outstanding_;
    if (writing_) {
      queued_.push_back(std::move(buffer));
    } else {
      writing_ = true;
      write_buffer_ = std::move(buffer);
      stream_->Write(write_buffer_, &events_[kWrite]);
    }
  }
}

void StreamCall::MaybeClose() {
  if (done_issuing_ && !writing_ && !writes_done_ && outstanding_ == 0) {
    writes_done_ = true;
    stream_->WritesDone(&events_[kWritesDone]);
  }
}

void StreamCall::HandleResponse() {
  const int64_t now = NowNs();
  v1::ValidateSessionResponse response;
  if (!Parse(&read_buffer_, &response)) {
    worker_->RecordError(kBadResponse);
    return;
  }
  const uint32_t slot = response.request_id() & 0xFFFF;
  if (slot >= sent_ns_.size() || response.request_id() == 0) {
    worker_->RecordError(kBadResponse);
    return;
  }
  --outstanding_;
  free_slots_.push_back(slot);
  worker_->RecordStreamAnswer(now - sent_ns_[slot], response.outcome());
}

void StreamCall::On(Kind kind, bool ok) {
  switch (kind) {
    case kStart:
      if (!ok) {
        stream_->Finish(&status_, &events_[kFinish]);
        return;
      }
      stream_->Read(&read_buffer_, &events_[kRead]);
      Fill();
      MaybeClose();
      return;
    case kRead:
      if (!ok) {
        // The server ended the stream (or it broke): collect its status.
        stream_->Finish(&status_, &events_[kFinish]);
        return;
      }
      HandleResponse();
      stream_->Read(&read_buffer_, &events_[kRead]);
      Fill();
      MaybeClose();
      return;
    case kWrite:
      if (!ok) {
        // Broken stream; the pending Read fails next and finishes it.
        done_issuing_ = true;
        return;
      }
      if (!queued_.empty()) {
        write_buffer_ = std::move(queued_.front());
        queued_.pop_front();
        stream_->Write(write_buffer_, &events_[kWrite]);
      } else {
        writing_ = false;
        MaybeClose();
      }
      return;
    case kWritesDone:
      return;
    case kFinish:
      if (!status_.ok()) {
        worker_->RecordError(status_.error_code());
        // Requests that never got an answer failed too.
        for (int i = 0; i < outstanding_; ++i) {
          worker_->RecordError(status_.error_code());
        }
      } else if (outstanding_ > 0) {
        for (int i = 0; i < outstanding_; ++i) {
          worker_->RecordError(kBadResponse);
        }
      }
      worker_->SlotIdle();
      return;
  }
}

std::vector<std::shared_ptr<grpc::Channel>> MakeChannels(
    const std::string& target, int connections) {
  std::vector<std::shared_ptr<grpc::Channel>> channels;
  for (int i = 0; i < connections; ++i) {
    grpc::ChannelArguments args;
    // A local subchannel pool and a distinct argument per channel: otherwise
    // gRPC shares one TCP connection among channels with equal arguments.
    args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
    args.SetInt("sessiond_bench.channel_index", i);
    channels.push_back(grpc::CreateCustomChannel(
        target, grpc::InsecureChannelCredentials(), args));
  }
  return channels;
}

Result RunOnce(const Config& config,
               const std::vector<std::shared_ptr<grpc::Channel>>& channels,
               const std::vector<std::string>& preloaded) {
  RunState run;
  run.config = &config;
  run.preloaded = &preloaded;
  run.budget.store(static_cast<int64_t>(config.count));
  const bool timed = config.count == 0;
  const double bound_s =
      timed ? config.warmup_s + config.duration_s : config.timeout_s;
  run.stream_deadline =
      std::chrono::system_clock::now() +
      std::chrono::milliseconds(static_cast<int64_t>(bound_s * 1000) +
                                config.deadline_ms);
  run.recording.store(!timed);

  std::vector<std::unique_ptr<grpc::GenericStub>> stubs;
  for (const auto& channel : channels) {
    stubs.push_back(std::make_unique<grpc::GenericStub>(channel));
  }
  const int threads = std::max(1, config.threads);
  std::vector<std::unique_ptr<Worker>> workers;
  for (int t = 0; t < threads; ++t) {
    workers.push_back(
        std::make_unique<Worker>(&run, config.seed * 1000003 + t));
  }
  if (config.mode == "stream") {
    const int streams = std::max(
        1, std::min(config.concurrency,
                    config.streams > 0 ? config.streams
                                       : static_cast<int>(channels.size())));
    for (int s = 0; s < streams; ++s) {
      // Spread the in-flight requests over the streams as evenly as possible.
      const int window = config.concurrency / streams +
                         (s < config.concurrency % streams ? 1 : 0);
      workers[s % threads]->AddStream(stubs[s % stubs.size()].get(),
                                      std::max(1, window));
    }
  } else {
    for (int i = 0; i < config.concurrency; ++i) {
      workers[i % threads]->AddUnarySlot(stubs[i % stubs.size()].get());
    }
  }

  std::atomic<int> running{threads};
  std::vector<std::thread> pool;
  const int64_t start_ns = NowNs();
  run.start_ns = start_ns;
  for (auto& worker : workers) {
    pool.emplace_back([&running, w = worker.get()] {
      w->Loop();
      running.fetch_sub(1);
    });
  }
  int64_t measure_start_ns = start_ns;
  int64_t measure_end_ns = 0;
  if (timed) {
    const int64_t warmup_end =
        start_ns + static_cast<int64_t>(config.warmup_s * 1e9);
    const int64_t end =
        warmup_end + static_cast<int64_t>(config.duration_s * 1e9);
    while (NowNs() < warmup_end && running.load() > 0) {
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    measure_start_ns = NowNs();
    run.recording.store(true);
    while (NowNs() < end && running.load() > 0) {
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    run.recording.store(false);
    measure_end_ns = NowNs();
    run.stop.store(true);
  } else {
    const int64_t end = start_ns + static_cast<int64_t>(config.timeout_s * 1e9);
    while (running.load() > 0 && NowNs() < end) {
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
    if (running.load() > 0) {
      std::fprintf(stderr, "sessiond-bench: --timeout_s reached; stopping\n");
      run.stop.store(true);
    }
  }
  for (auto& thread : pool) thread.join();
  if (!timed) measure_end_ns = NowNs();

  Result result;
  for (auto& worker : workers) result.Merge(std::move(worker->result()));
  result.seconds = (measure_end_ns - measure_start_ns) / 1e9;
  return result;
}

nlohmann::json ToJson(const Config& config, const Result& result,
                      int connections) {
  nlohmann::json j;
  j["mode"] = config.mode;
  if (config.mode == "unary") j["ops"] = config.mix.ToString();
  if (config.mode == "batch") j["batch"] = config.batch;
  j["concurrency"] = config.concurrency;
  j["connections"] = connections;
  j["threads"] = config.threads;
  if (config.rate > 0) j["rate"] = config.rate;
  j["seconds"] = result.seconds;
  j["ok_ops"] = result.ok_ops;
  j["ok_calls"] = result.ok_calls;
  j["failed_calls"] = result.failed_calls;
  const double secs = result.seconds > 0 ? result.seconds : 1e-9;
  j["ops_per_s"] = result.ok_ops / secs;
  j["calls_per_s"] = result.ok_calls / secs;
  j["latency_us"] = {{"mean", result.latency.mean_ns() / 1e3},
                     {"p50", result.latency.Quantile(0.50) / 1e3},
                     {"p90", result.latency.Quantile(0.90) / 1e3},
                     {"p99", result.latency.Quantile(0.99) / 1e3},
                     {"p999", result.latency.Quantile(0.999) / 1e3},
                     {"max", result.latency.max_ns() / 1e3}};
  nlohmann::json errors = nlohmann::json::object();
  for (const auto& [code, n] : result.errors) errors[CodeName(code)] = n;
  j["errors"] = errors;
  nlohmann::json by_op = nlohmann::json::object();
  for (int op = 0; op < kNumOps; ++op) {
    if (result.ok_by_op[op] > 0) by_op[OpName(op)] = result.ok_by_op[op];
  }
  j["ok_by_op"] = by_op;
  static constexpr const char* kOutcomes[] = {"UNSPECIFIED", "VALID", "EXPIRED",
                                              "REVOKED", "UNKNOWN"};
  nlohmann::json outcomes = nlohmann::json::object();
  for (int i = 0; i < 5; ++i) {
    if (result.outcomes[i] > 0) outcomes[kOutcomes[i]] = result.outcomes[i];
  }
  j["outcomes"] = outcomes;
  return j;
}

void PrintText(FILE* out, const nlohmann::json& j) {
  std::string what = j["mode"].get<std::string>();
  if (j.contains("ops"))
    absl::StrAppend(&what, " ops=", j["ops"].get<std::string>());
  if (j.contains("batch"))
    absl::StrAppend(&what, " batch=", j["batch"].get<int>());
  if (j.contains("rate")) {
    absl::StrAppend(&what, " rate=", j["rate"].get<double>(), "/s");
  }
  std::fprintf(out, "mode=%s concurrency=%d connections=%d threads=%d\n",
               what.c_str(), j["concurrency"].get<int>(),
               j["connections"].get<int>(), j["threads"].get<int>());
  std::fprintf(out,
               "  throughput: %.0f ops/s (%.0f calls/s; %llu ops in %.2f s)\n",
               j["ops_per_s"].get<double>(), j["calls_per_s"].get<double>(),
               static_cast<unsigned long long>(j["ok_ops"].get<uint64_t>()),
               j["seconds"].get<double>());
  const auto& l = j["latency_us"];
  std::fprintf(out,
               "  latency per call (us): p50 %.1f  p90 %.1f  p99 %.1f  "
               "p99.9 %.1f  max %.1f  mean %.1f\n",
               l["p50"].get<double>(), l["p90"].get<double>(),
               l["p99"].get<double>(), l["p999"].get<double>(),
               l["max"].get<double>(), l["mean"].get<double>());
  std::string errors;
  for (const auto& [name, n] : j["errors"].items()) {
    absl::StrAppend(&errors, " ", name, "=", n.get<uint64_t>());
  }
  std::fprintf(out, "  errors:%s\n", errors.empty() ? " none" : errors.c_str());
  std::string outcomes;
  for (const auto& [name, n] : j["outcomes"].items()) {
    absl::StrAppend(&outcomes, " ", name, "=", n.get<uint64_t>());
  }
  if (!outcomes.empty()) std::fprintf(out, "  outcomes:%s\n", outcomes.c_str());
  std::fflush(out);
}

int Main(int argc, char** argv) {
  // Debian builds Abseil without NDEBUG, which leaves absl::Mutex's deadlock
  // detector on: every lock gRPC takes then updates a global lock graph
  // (GraphCycles showed up at ~5% of the client's profile). The benchmark
  // measures the server, not that.
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
  CLI::App app{
      "sessiond-bench: closed-loop load generator for sessiond. Reports "
      "throughput, p50/p99/p99.9 latency and errors by status code."};
  std::string target = "127.0.0.1:50051";
  std::string ops = "validate:1";
  std::string sweep;
  int connections = 2;
  uint64_t preload = 1000;
  bool json = false;
  Config config;
  app.add_option("--target", target, "sessiond address host:port");
  app.add_option("--connections", connections,
                 "channels (TCP connections) to open")
      ->check(CLI::Range(1, 1024));
  app.add_option("--concurrency", config.concurrency,
                 "calls in flight in total (stream mode: stream messages)")
      ->check(CLI::Range(1, 65536));
  app.add_option("--threads", config.threads,
                 "client threads, each with its own completion queue")
      ->check(CLI::Range(1, 256));
  app.add_option("--mode", config.mode,
                 "unary (the --ops mix), batch (BatchValidateSessions), "
                 "stream (StreamValidateSessions), echo (grpc.health.v1 "
                 "Check: the empty-RPC ceiling)")
      ->check(CLI::IsMember({"unary", "batch", "stream", "echo"}));
  app.add_option("--ops", ops,
                 "unary mix, e.g. create:1,validate:8,touch:1,revoke:0");
  app.add_option("--batch", config.batch, "tokens per BatchValidate call")
      ->check(CLI::Range(1, 10000));
  app.add_option("--streams", config.streams,
                 "streams in stream mode (0: one per connection)")
      ->check(CLI::Range(0, 4096));
  app.add_option("--count", config.count,
                 "stop after this many operations (0: use --duration_s)");
  app.add_option("--duration_s", config.duration_s,
                 "measured seconds when --count is 0")
      ->check(CLI::Range(0.01, 3600.0));
  app.add_option("--warmup_s", config.warmup_s,
                 "unmeasured seconds before --duration_s")
      ->check(CLI::Range(0.0, 600.0));
  app.add_option("--timeout_s", config.timeout_s,
                 "upper bound on a --count run")
      ->check(CLI::Range(0.1, 3600.0));
  app.add_option("--attr_bytes", config.attr_bytes,
                 "bytes of attributes per created session")
      ->check(CLI::Range(0, 1 << 20));
  app.add_option("--users", config.users, "distinct user ids for creates")
      ->check(CLI::Range(1, 1 << 30));
  app.add_option("--ttl_ms", config.ttl_ms, "lifetime of created sessions");
  app.add_option("--deadline_ms", config.deadline_ms, "deadline of each call")
      ->check(CLI::Range(1, 3'600'000));
  app.add_flag("--touch", config.touch, "validate with touch=true");
  app.add_option("--rate", config.rate,
                 "open loop: issue this many calls/s in total (unary, batch, "
                 "echo), at most --concurrency in flight; latency counts from "
                 "when each call was due. 0: closed loop")
      ->check(CLI::Range(0.0, 1e7));
  app.add_option("--preload", preload,
                 "sessions created before the run whose tokens the "
                 "validate/touch/revoke calls use (when the run needs tokens)");
  app.add_option("--sweep", sweep,
                 "comma-separated concurrencies: repeat the run at each, "
                 "e.g. --ops create:1 --sweep 1,64");
  app.add_option("--seed", config.seed, "random seed");
  app.add_flag("--json", json,
               "print one JSON document on stdout (text goes to stderr)");
  CLI11_PARSE(app, argc, argv);

  absl::StatusOr<Mix> mix = ParseMix(ops);
  if (!mix.ok()) {
    std::fprintf(stderr, "sessiond-bench: %s\n",
                 std::string(mix.status().message()).c_str());
    return 2;
  }
  config.mix = *mix;
  if (config.rate > 0 && config.mode == "stream") {
    std::fprintf(stderr,
                 "sessiond-bench: --rate applies to unary, batch and echo\n");
    return 2;
  }
  std::vector<int> concurrencies;
  for (absl::string_view part : absl::StrSplit(sweep, ',', absl::SkipEmpty())) {
    int c = 0;
    if (!absl::SimpleAtoi(part, &c) || c < 1 || c > 65536) {
      std::fprintf(stderr, "sessiond-bench: bad --sweep entry '%s'\n",
                   std::string(part).c_str());
      return 2;
    }
    concurrencies.push_back(c);
  }
  if (concurrencies.empty()) concurrencies.push_back(config.concurrency);

  auto channels = MakeChannels(target, connections);
  for (auto& channel : channels) {
    if (!channel->WaitForConnected(std::chrono::system_clock::now() +
                                   std::chrono::seconds(10))) {
      std::fprintf(stderr, "sessiond-bench: cannot connect to %s in 10 s\n",
                   target.c_str());
      return 2;
    }
  }

  FILE* text = json ? stderr : stdout;
  std::vector<std::string> tokens;
  const bool needs_tokens =
      config.mode == "batch" || config.mode == "stream" ||
      (config.mode == "unary" && config.mix.NeedsTokens());
  if (needs_tokens && preload > 0) {
    Config load = config;
    load.mode = "unary";
    load.mix = Mix{{1, 0, 0, 0}, 1};
    load.count = preload;
    load.concurrency = std::min(64, std::max(1, config.concurrency));
    load.token_cap = preload;
    load.rate = 0;
    Result loaded = RunOnce(load, channels, tokens);
    tokens = std::move(loaded.tokens);
    std::fprintf(text, "preloaded %zu sessions in %.2f s (%.0f creates/s)%s\n",
                 tokens.size(), loaded.seconds,
                 tokens.size() / std::max(loaded.seconds, 1e-9),
                 loaded.failed_calls > 0 ? "; some creates failed" : "");
    if (tokens.empty()) {
      std::fprintf(stderr, "sessiond-bench: preload created no session\n");
      return 1;
    }
  }

  nlohmann::json runs = nlohmann::json::array();
  bool all_ok = true;
  for (int c : concurrencies) {
    Config run = config;
    run.concurrency = c;
    Result result = RunOnce(run, channels, tokens);
    nlohmann::json j = ToJson(run, result, connections);
    PrintText(text, j);
    runs.push_back(std::move(j));
    if (result.ok_ops == 0) all_ok = false;
  }
  if (json) {
    nlohmann::json doc;
    doc["target"] = target;
    doc["preloaded"] = tokens.size();
    doc["runs"] = std::move(runs);
    std::printf("%s\n", doc.dump(2).c_str());
  }
  return all_ok ? 0 : 1;
}

}  // namespace
}  // namespace sessiond::bench

int main(int argc, char** argv) { return sessiond::bench::Main(argc, argv); }
