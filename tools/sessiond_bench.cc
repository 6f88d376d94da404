// Copyright sessiond authors. Licensed under the Apache License 2.0.
//
// sessiond-bench: a load generator for sessiond's SessionService (and, for
// reference, etcd's KV/Put); closed loop by default, paced (open loop) with
// --rate. docs/BENCHMARKS.md.
//
// Every mode but `client` goes through the same machinery: a
// grpc::GenericStub on one CompletionQueue per client thread, requests
// serialized to ByteBuffers, one latency histogram per thread. `--mode echo`
// calls grpc.health.v1.Health/Check on the same server through exactly that
// path, so the ratio "validate / echo" measures what sessiond adds on top of
// an empty RPC, and `--etcd` sends etcdserverpb.KV/Put through it too, so
// sessiond and etcd are loaded by the same client. `--mode client` instead
// runs --concurrency threads making blocking calls through the C++ client
// library (client/session_client.h), as an application server would.
//
// Cluster mode (--targets): at start ClusterStatus says which member leads;
// writes go to its connections, reads round-robin over every target's. Each
// run is bracketed by ClusterStatus calls, whose counters give the fsyncs of
// the Raft log per acknowledged write.
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
#include <functional>
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
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "client/session_client.h"
#include "common/steady_clock.h"
#include "etcd_min.grpc.pb.h"
#include "etcd_min.pb.h"
#include "nlohmann/json.hpp"
#include "sessiond/v1/admin.pb.h"
#include "sessiond/v1/session.pb.h"
#include "tools/cluster_probe.h"

namespace sessiond::bench {
namespace {

namespace v1 = ::sessiond::v1;

constexpr char kCreateMethod[] = "/sessiond.v1.SessionService/CreateSession";
constexpr char kCreateSessionsMethod[] =
    "/sessiond.v1.SessionService/CreateSessions";
constexpr char kValidateMethod[] =
    "/sessiond.v1.SessionService/ValidateSession";
constexpr char kBatchMethod[] =
    "/sessiond.v1.SessionService/BatchValidateSessions";
constexpr char kStreamMethod[] =
    "/sessiond.v1.SessionService/StreamValidateSessions";
constexpr char kTouchMethod[] = "/sessiond.v1.SessionService/TouchSession";
constexpr char kUpdateMethod[] = "/sessiond.v1.SessionService/UpdateSession";
constexpr char kRevokeMethod[] = "/sessiond.v1.SessionService/RevokeSession";
constexpr char kHealthMethod[] = "/grpc.health.v1.Health/Check";
constexpr char kEtcdPutMethod[] = "/etcdserverpb.KV/Put";

// gRPC's status codes are absl's, number for number.
std::string CodeName(int code) {
  if (code >= 0 && code <= 16) {
    return absl::StatusCodeToString(static_cast<absl::StatusCode>(code));
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

// The unary operations (the --ops mix) come first, in mix order.
enum Op {
  kCreate = 0,
  kValidate,
  kTouch,
  kUpdate,
  kRevoke,
  kEcho,
  kBatch,
  kPut,
  kNumOps
};
constexpr int kMixOps = 5;
const char* OpName(int op) {
  static constexpr const char* kNames[] = {"create", "validate", "touch",
                                           "update", "revoke",   "echo",
                                           "batch",  "put"};
  return kNames[op];
}
// Writes go to the leader; everything else is a read.
bool IsWrite(Op op) {
  return op == kCreate || op == kTouch || op == kUpdate || op == kRevoke ||
         op == kPut;
}

// The unary operation mix, e.g. "create:1,validate:8,touch:1,revoke:0".
struct Mix {
  std::array<uint32_t, kMixOps> weights{};
  uint32_t total = 0;

  bool NeedsTokens() const {
    return weights[kValidate] + weights[kTouch] + weights[kUpdate] +
               weights[kRevoke] >
           0;
  }
  bool HasWrites() const {
    return weights[kCreate] + weights[kTouch] + weights[kUpdate] +
               weights[kRevoke] >
           0;
  }
  std::string ToString() const {
    std::string out;
    for (int op = 0; op < kMixOps; ++op) {
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
    for (int i = 0; i < kMixOps; ++i) {
      if (kv[0] == OpName(i)) op = i;
    }
    if (op < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("--ops: unknown operation '", kv[0],
                       "' (create, validate, touch, update, revoke)"));
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
  std::string mode = "unary";  // unary | batch | stream | echo | client
  Mix mix;
  int concurrency = 64;
  int threads = 2;
  int streams = 0;  // stream mode; 0: one per connection
  int batch = 16;
  int create_batch = 0;  // > 0: creates go as CreateSessions of this many
  v1::Consistency consistency = v1::CONSISTENCY_DEFAULT;
  bool coalesce = false;    // client mode: SessionClientOptions
  bool etcd = false;        // unary puts through etcdserverpb.KV/Put
  int value_bytes = 256;    // etcd put value
  uint64_t keys = 100'000;  // etcd keys drawn from
  uint64_t count = 0;       // 0: run for duration_s
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

const char* ConsistencyName(v1::Consistency c) {
  switch (c) {
    case v1::LINEARIZABLE:
      return "linearizable";
    case v1::LOCAL:
      return "local";
    default:
      return "default";
  }
}

struct Result {
  LatencyHistogram latency;  // per call
  uint64_t ok_ops = 0;       // tokens in batch/stream, sessions in creates
  uint64_t ok_calls = 0;
  uint64_t failed_calls = 0;
  std::map<int, uint64_t> errors;  // by status code
  std::array<uint64_t, 5> outcomes{};
  uint64_t stale = 0;  // validations answered locally, marked stale
  std::array<uint64_t, kNumOps> ok_by_op{};
  // Every write acknowledged during the run, warm-up included (the span
  // the ClusterStatus counters cover): operations and calls.
  uint64_t acked_writes = 0;
  uint64_t acked_write_calls = 0;
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
    stale += other.stale;
    for (size_t i = 0; i < ok_by_op.size(); ++i) {
      ok_by_op[i] += other.ok_by_op[i];
    }
    acked_writes += other.acked_writes;
    acked_write_calls += other.acked_write_calls;
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

// One client thread's requests and results: picks operations and tokens,
// fills requests, records answers. Used by the async workers and by the
// client-library threads alike. Not thread-safe: one per thread.
class Generator {
 public:
  Generator(RunState* run, uint64_t seed) : run_(run), rng_(seed) {
    const Config& config = *run_->config;
    attribute_ = RandomLetters(config.attr_bytes);
    value_ = RandomLetters(config.value_bytes);
  }

  RunState* run() { return run_; }
  const Config& config() const { return *run_->config; }
  Result& result() { return result_; }
  std::mt19937_64& rng() { return rng_; }
  bool recording() const {
    return run_->recording.load(std::memory_order_relaxed);
  }

  Op PickOp() {
    const Config& c = config();
    if (c.etcd) return kPut;
    if (c.mode == "echo") return kEcho;
    if (c.mode == "batch") return kBatch;
    const Mix& mix = c.mix;
    uint32_t r = rng_() % mix.total;
    for (int op = 0; op < kMixOps; ++op) {
      if (r < mix.weights[op]) return static_cast<Op>(op);
      r -= mix.weights[op];
    }
    return kValidate;
  }

  // Operations one call of `op` carries.
  int OpsOf(Op op) const {
    if (op == kBatch) return config().batch;
    if (op == kCreate && config().create_batch > 0) {
      return config().create_batch;
    }
    return 1;
  }

  const std::string& PickToken() {
    const size_t preloaded = run_->preloaded->size();
    const size_t total = preloaded + result_.tokens.size();
    if (total == 0) return missing_token_;
    const size_t i = rng_() % total;
    return i < preloaded ? (*run_->preloaded)[i]
                         : result_.tokens[i - preloaded];
  }

  void FillCreate(v1::CreateSessionRequest* request) {
    request->set_user_id(absl::StrCat("bench-user-", rng_() % config().users));
    request->set_ttl_ms(config().ttl_ms);
    if (!attribute_.empty()) {
      (*request->mutable_attributes())["data"] = attribute_;
    }
    request->mutable_client()->set_device("sessiond-bench");
  }

  void FillCreates(v1::CreateSessionsRequest* request) {
    for (int i = 0; i < config().create_batch; ++i) {
      FillCreate(request->add_requests());
    }
  }

  void FillValidate(v1::ValidateSessionRequest* request, uint64_t id) {
    request->set_token(PickToken());
    request->set_touch(config().touch);
    request->set_request_id(id);
    request->set_consistency(config().consistency);
  }

  void FillUpdate(v1::UpdateSessionRequest* request) {
    request->set_token(PickToken());
    (*request->mutable_set_attributes())["data"] = attribute_;
  }

  void FillPut(etcdserverpb::PutRequest* request) {
    request->set_key(absl::StrFormat(
        "sessiond-bench/%010d", rng_() % std::max<uint64_t>(1, config().keys)));
    request->set_value(value_);
  }

  void CountValidation(const v1::ValidateSessionResponse& response) {
    if (!recording()) return;
    const int outcome = response.outcome();
    if (outcome >= 0 && outcome < 5) ++result_.outcomes[outcome];
    if (response.stale()) ++result_.stale;
  }

  void KeepToken(std::string token) {
    if (result_.tokens.size() < config().token_cap) {
      result_.tokens.push_back(std::move(token));
    } else {
      result_.tokens[rng_() % result_.tokens.size()] = std::move(token);
    }
  }

  void RecordError(int code) {
    if (!recording()) return;
    ++result_.failed_calls;
    ++result_.errors[code];
  }

  // A call of `op` that succeeded with `ops` operations.
  void RecordOk(Op op, int64_t latency_ns, uint64_t ops) {
    if (IsWrite(op)) {
      result_.acked_writes += ops;
      ++result_.acked_write_calls;
    }
    if (!recording()) return;
    result_.latency.Add(latency_ns);
    ++result_.ok_calls;
    result_.ok_ops += ops;
    result_.ok_by_op[op] += ops;
  }

 private:
  std::string RandomLetters(int n) {
    std::string s(static_cast<size_t>(std::max(0, n)), 'a');
    for (char& ch : s) ch = static_cast<char>('a' + rng_() % 26);
    return s;
  }

  RunState* const run_;
  std::mt19937_64 rng_;
  std::string attribute_;
  std::string value_;
  const std::string missing_token_ = "sessiond-bench-no-such-token";
  Result result_;
};

// Where calls go: writes to the leader's connections, reads round-robin over
// the read targets' connections.
struct StubSet {
  std::vector<std::unique_ptr<grpc::GenericStub>> reads;
  std::vector<std::unique_ptr<grpc::GenericStub>> writes;
};

struct Tag {
  virtual ~Tag() = default;
  virtual void Done(bool ok) = 0;
};

class Worker;

// One in-flight unary call slot: issues the next call when the last ends.
class UnarySlot : public Tag {
 public:
  explicit UnarySlot(Worker* worker) : worker_(worker) {}
  bool Issue();
  void Done(bool ok) override;

 private:
  struct Wakeup : Tag {
    UnarySlot* slot;
    void Done(bool /*ok*/) override {
      // Early: the call leaves now. gRPC alarms fire up to ~1 ms late
      // (millisecond timers); that lateness is the client's, not the
      // server's, so it is not counted.
      slot->start_ns_ = SteadyNowNs();
      slot->Send();
    }
  };

  void Send();

  Worker* const worker_;
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
class Worker : public Generator {
 public:
  Worker(RunState* run, uint64_t seed, const StubSet* stubs)
      : Generator(run, seed), stubs_(stubs) {
    if (config().mode == "echo") {
      Serialize(v1::ValidateSessionRequest(), &empty_request_);
    }
  }

  void AddUnarySlot() { slots_.push_back(std::make_unique<UnarySlot>(this)); }
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

  // The stub for the next call of `op`: the leader's connections for a
  // write, the next read target's (round-robin) otherwise.
  grpc::GenericStub* StubFor(Op op) {
    const auto& pool = IsWrite(op) ? stubs_->writes : stubs_->reads;
    uint64_t& next = IsWrite(op) ? next_write_ : next_read_;
    return pool[next++ % pool.size()].get();
  }

  // Builds the request of `op` into `out`; returns the method to call.
  const char* Build(Op op, grpc::ByteBuffer* out) {
    switch (op) {
      case kCreate: {
        if (config().create_batch > 0) {
          v1::CreateSessionsRequest request;
          FillCreates(&request);
          Serialize(request, out);
          return kCreateSessionsMethod;
        }
        v1::CreateSessionRequest request;
        FillCreate(&request);
        Serialize(request, out);
        return kCreateMethod;
      }
      case kValidate: {
        v1::ValidateSessionRequest request;
        FillValidate(&request, 0);
        Serialize(request, out);
        return kValidateMethod;
      }
      case kTouch: {
        v1::TouchSessionRequest request;
        request.set_token(PickToken());
        Serialize(request, out);
        return kTouchMethod;
      }
      case kUpdate: {
        v1::UpdateSessionRequest request;
        FillUpdate(&request);
        Serialize(request, out);
        return kUpdateMethod;
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
          FillValidate(request.add_requests(), i + 1);
        }
        request.set_consistency(config().consistency);
        Serialize(request, out);
        return kBatchMethod;
      }
      case kPut: {
        etcdserverpb::PutRequest request;
        FillPut(&request);
        Serialize(request, out);
        return kEtcdPutMethod;
      }
      case kEcho:
      case kNumOps:
        break;
    }
    // grpc.health.v1.HealthCheckRequest{service: ""} encodes to no bytes.
    *out = empty_request_;
    return kHealthMethod;
  }

  // A completed call of `op`: checks and counts its answer.
  void Record(Op op, int64_t latency_ns, const grpc::Status& status,
              grpc::ByteBuffer* response) {
    if (!status.ok()) {
      RecordError(status.error_code());
      return;
    }
    uint64_t ops = 1;
    switch (op) {
      case kCreate: {
        if (config().create_batch > 0) {
          v1::CreateSessionsResponse parsed;
          if (!Parse(response, &parsed) ||
              parsed.responses_size() != config().create_batch) {
            return RecordError(kBadResponse);
          }
          for (auto& r : *parsed.mutable_responses()) {
            KeepToken(std::move(*r.mutable_token()));
          }
          ops = parsed.responses_size();
          break;
        }
        v1::CreateSessionResponse parsed;
        if (!Parse(response, &parsed)) return RecordError(kBadResponse);
        KeepToken(std::move(*parsed.mutable_token()));
        break;
      }
      case kValidate: {
        v1::ValidateSessionResponse parsed;
        if (!Parse(response, &parsed)) return RecordError(kBadResponse);
        CountValidation(parsed);
        break;
      }
      case kBatch: {
        v1::BatchValidateSessionsResponse parsed;
        if (!Parse(response, &parsed) ||
            parsed.responses_size() != config().batch) {
          return RecordError(kBadResponse);
        }
        for (const auto& r : parsed.responses()) CountValidation(r);
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
      case kPut: {
        etcdserverpb::PutResponse parsed;
        if (!Parse(response, &parsed) || parsed.header().revision() <= 0) {
          return RecordError(kBadResponse);
        }
        break;
      }
      case kTouch:
      case kUpdate:
      case kRevoke:
      case kNumOps:
        break;
    }
    RecordOk(op, latency_ns, ops);
  }

  // A stream answer: always one validation.
  void RecordStreamAnswer(int64_t latency_ns,
                          const v1::ValidateSessionResponse& response) {
    CountValidation(response);
    RecordOk(kValidate, latency_ns, 1);
  }

 private:
  const StubSet* const stubs_;
  uint64_t next_read_ = 0;
  uint64_t next_write_ = 0;
  grpc::CompletionQueue cq_;
  std::vector<std::unique_ptr<UnarySlot>> slots_;
  std::vector<std::unique_ptr<StreamCall>> streams_;
  int active_ = 0;
  grpc::ByteBuffer empty_request_;
};

bool UnarySlot::Issue() {
  const Config& config = worker_->config();
  const Op op = worker_->PickOp();
  if (!worker_->run()->Take(worker_->OpsOf(op))) return false;
  op_ = op;
  method_ = worker_->Build(op, &request_);
  if (config.rate > 0) {
    // When the slot is late (its previous call took too long), latency
    // counts from when the call was due, not from when it left: a server
    // that falls behind the schedule is charged for the wait (no
    // coordinated omission).
    start_ns_ = worker_->run()->NextDueNs();
    const int64_t wait_ns = start_ns_ - SteadyNowNs();
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
    start_ns_ = SteadyNowNs();
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
  reader_ = worker_->StubFor(op_)->PrepareUnaryCall(&*context_, method_,
                                                    request_, worker_->cq());
  reader_->StartCall();
  reader_->Finish(&response_, &status_, this);
}

void UnarySlot::Done(bool /*ok: always true for Finish*/) {
  const int64_t latency = SteadyNowNs() - start_ns_;
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
    worker_->FillValidate(&request, (++sequence_ << 16) | slot);
    grpc::ByteBuffer buffer;
    Serialize(request, &buffer);
    sent_ns_[slot] = SteadyNowNs();
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
  const int64_t now = SteadyNowNs();
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
  worker_->RecordStreamAnswer(now - sent_ns_[slot], response);
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

// What a run loads: the async modes use the channels, `--mode client` the
// client library.
struct Endpoints {
  std::vector<std::shared_ptr<grpc::Channel>> reads;
  std::vector<std::shared_ptr<grpc::Channel>> writes;
  client::SessionClient* client = nullptr;
};

// One thread of `--mode client`: blocking calls through the client library,
// one at a time, until the run ends.
void RunClientThread(Generator* g, client::SessionClient* client) {
  const Config& config = g->config();
  while (true) {
    const Op op = g->PickOp();
    if (!g->run()->Take(g->OpsOf(op))) return;
    const int64_t start = SteadyNowNs();
    absl::Status status;
    uint64_t ops = 1;
    bool bad = false;
    switch (op) {
      case kCreate:
        if (config.create_batch > 0) {
          v1::CreateSessionsRequest request;
          g->FillCreates(&request);
          absl::StatusOr<v1::CreateSessionsResponse> r =
              client->CreateSessions(request);
          status = r.status();
          if (r.ok()) {
            bad = r->responses_size() != config.create_batch;
            for (auto& one : *r->mutable_responses()) {
              g->KeepToken(std::move(*one.mutable_token()));
            }
            ops = r->responses_size();
          }
        } else {
          v1::CreateSessionRequest request;
          g->FillCreate(&request);
          absl::StatusOr<v1::CreateSessionResponse> r =
              client->CreateSession(request);
          status = r.status();
          if (r.ok()) g->KeepToken(std::move(*r->mutable_token()));
        }
        break;
      case kValidate: {
        v1::ValidateSessionRequest request;
        g->FillValidate(&request, 0);
        absl::StatusOr<v1::ValidateSessionResponse> r =
            client->ValidateSession(request);
        status = r.status();
        if (r.ok()) g->CountValidation(*r);
        break;
      }
      case kTouch: {
        v1::TouchSessionRequest request;
        request.set_token(g->PickToken());
        status = client->TouchSession(request).status();
        break;
      }
      case kUpdate: {
        v1::UpdateSessionRequest request;
        g->FillUpdate(&request);
        status = client->UpdateSession(request).status();
        break;
      }
      case kRevoke: {
        v1::RevokeSessionRequest request;
        request.set_token(g->PickToken());
        request.set_reason("sessiond-bench");
        status = client->RevokeSession(request).status();
        break;
      }
      default:
        bad = true;
        break;
    }
    const int64_t latency = SteadyNowNs() - start;
    if (!status.ok()) {
      g->RecordError(static_cast<int>(status.code()));
    } else if (bad) {
      g->RecordError(kBadResponse);
    } else {
      g->RecordOk(op, latency, ops);
    }
  }
}

Result RunOnce(const Config& config, const Endpoints& endpoints,
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

  StubSet stubs;
  for (const auto& channel : endpoints.reads) {
    stubs.reads.push_back(std::make_unique<grpc::GenericStub>(channel));
  }
  for (const auto& channel : endpoints.writes) {
    stubs.writes.push_back(std::make_unique<grpc::GenericStub>(channel));
  }
  std::vector<std::unique_ptr<Worker>> workers;
  std::vector<std::unique_ptr<Generator>> callers;
  std::vector<std::function<void()>> bodies;
  if (config.mode == "client") {
    for (int i = 0; i < config.concurrency; ++i) {
      callers.push_back(
          std::make_unique<Generator>(&run, config.seed * 1000003 + i));
      bodies.push_back([g = callers.back().get(), c = endpoints.client] {
        RunClientThread(g, c);
      });
    }
  } else {
    const int threads = std::max(1, config.threads);
    for (int t = 0; t < threads; ++t) {
      workers.push_back(
          std::make_unique<Worker>(&run, config.seed * 1000003 + t, &stubs));
    }
    if (config.mode == "stream") {
      const int streams =
          std::max(1, std::min(config.concurrency,
                               config.streams > 0
                                   ? config.streams
                                   : static_cast<int>(stubs.reads.size())));
      for (int s = 0; s < streams; ++s) {
        // Spread the in-flight requests over the streams as evenly as
        // possible.
        const int window = config.concurrency / streams +
                           (s < config.concurrency % streams ? 1 : 0);
        workers[s % threads]->AddStream(
            stubs.reads[s % stubs.reads.size()].get(), std::max(1, window));
      }
    } else {
      for (int i = 0; i < config.concurrency; ++i) {
        workers[i % threads]->AddUnarySlot();
      }
    }
    for (auto& worker : workers) {
      bodies.push_back([w = worker.get()] { w->Loop(); });
    }
  }

  std::atomic<int> running{static_cast<int>(bodies.size())};
  std::vector<std::thread> pool;
  const int64_t start_ns = SteadyNowNs();
  run.start_ns = start_ns;
  for (auto& body : bodies) {
    pool.emplace_back([&running, &body] {
      body();
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
    while (SteadyNowNs() < warmup_end && running.load() > 0) {
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    measure_start_ns = SteadyNowNs();
    run.recording.store(true);
    while (SteadyNowNs() < end && running.load() > 0) {
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    run.recording.store(false);
    measure_end_ns = SteadyNowNs();
    run.stop.store(true);
  } else {
    const int64_t end = start_ns + static_cast<int64_t>(config.timeout_s * 1e9);
    while (running.load() > 0 && SteadyNowNs() < end) {
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
    if (running.load() > 0) {
      std::fprintf(stderr, "sessiond-bench: --timeout_s reached; stopping\n");
      run.stop.store(true);
    }
  }
  for (auto& thread : pool) thread.join();
  if (!timed) measure_end_ns = SteadyNowNs();

  Result result;
  for (auto& worker : workers) result.Merge(std::move(worker->result()));
  for (auto& caller : callers) result.Merge(std::move(caller->result()));
  result.seconds = (measure_end_ns - measure_start_ns) / 1e9;
  return result;
}

// The Raft log's fsyncs during a run, from ClusterStatus before and after
// it: summed over the members that answered both times (a member that
// restarted in between has counters that went back, and is left out), and
// the leader's alone, per write acknowledged during the run.
nlohmann::json FsyncReport(const v1::ClusterStatusResponse& before,
                           const v1::ClusterStatusResponse& after,
                           const Result& result) {
  nlohmann::json j;
  uint64_t total = 0;
  uint64_t forwarded = 0;
  int counted = 0;
  for (const v1::MemberStatus& m : after.members()) {
    const v1::MemberStatus* b = tools::MemberOf(before, m.node_id());
    if (!m.reachable() || b == nullptr || !b->reachable() ||
        m.metrics().synced_log_writes() < b->metrics().synced_log_writes()) {
      continue;
    }
    ++counted;
    total += m.metrics().synced_log_writes() - b->metrics().synced_log_writes();
    forwarded +=
        m.metrics().forwarded_writes() - b->metrics().forwarded_writes();
  }
  j["members"] = after.members_size();
  j["members_counted"] = counted;
  j["synced_log_writes"] = total;
  j["forwarded_writes"] = forwarded;
  j["acked_writes"] = result.acked_writes;
  j["acked_write_calls"] = result.acked_write_calls;
  const v1::MemberStatus* leader = tools::LeaderOf(after);
  const v1::MemberStatus* first_leader = tools::LeaderOf(before);
  const v1::MemberStatus* leader_before =
      leader == nullptr ? nullptr : tools::MemberOf(before, leader->node_id());
  std::optional<uint64_t> leader_fsyncs;
  if (leader != nullptr && leader_before != nullptr &&
      leader_before->reachable() &&
      leader->metrics().synced_log_writes() >=
          leader_before->metrics().synced_log_writes()) {
    const v1::NodeMetrics& a = leader->metrics();
    const v1::NodeMetrics& b = leader_before->metrics();
    leader_fsyncs = a.synced_log_writes() - b.synced_log_writes();
    j["leader"] = leader->node_id();
    j["leader_synced_log_writes"] = *leader_fsyncs;
    j["leader_entries_persisted"] =
        a.entries_persisted() - b.entries_persisted();
    j["leader_proposals"] = a.proposals() - b.proposals();
    j["leader_propose_batches"] = a.propose_batches() - b.propose_batches();
  }
  j["leader_changed"] = first_leader == nullptr || leader == nullptr ||
                        first_leader->node_id() != leader->node_id();
  if (result.acked_writes > 0) {
    j["fsyncs_per_write"] =
        static_cast<double>(total) / static_cast<double>(result.acked_writes);
    j["fsyncs_per_write_call"] = static_cast<double>(total) /
                                 static_cast<double>(result.acked_write_calls);
    if (leader_fsyncs) {
      j["leader_fsyncs_per_write"] = static_cast<double>(*leader_fsyncs) /
                                     static_cast<double>(result.acked_writes);
    }
  }
  return j;
}

nlohmann::json ClientStatsJson(const client::SessionClient::Stats& before,
                               const client::SessionClient::Stats& after) {
  return {
      {"attempts", after.attempts - before.attempts},
      {"retries", after.retries - before.retries},
      {"leader_changes", after.leader_changes - before.leader_changes},
      {"endpoints_skipped", after.endpoints_skipped - before.endpoints_skipped},
      {"coalesced_batches", after.coalesced_batches - before.coalesced_batches},
      {"coalesced_creates", after.coalesced_creates - before.coalesced_creates},
  };
}

nlohmann::json ToJson(const Config& config, const Result& result,
                      int connections) {
  nlohmann::json j;
  j["mode"] = config.mode;
  j["api"] = config.etcd ? "etcd" : "sessiond";
  if (config.etcd) {
    j["ops"] = "put";
    j["value_bytes"] = config.value_bytes;
  } else if (config.mode == "unary" || config.mode == "client") {
    j["ops"] = config.mix.ToString();
  }
  if (config.mode == "batch") j["batch"] = config.batch;
  if (config.create_batch > 0 && config.mix.weights[kCreate] > 0 &&
      (config.mode == "unary" || config.mode == "client")) {
    j["create_batch"] = config.create_batch;
  }
  if (config.mode == "client") j["coalesce"] = config.coalesce;
  const bool validates = config.mode == "batch" || config.mode == "stream" ||
                         ((config.mode == "unary" || config.mode == "client") &&
                          !config.etcd && config.mix.weights[kValidate] > 0);
  if (validates) j["consistency"] = ConsistencyName(config.consistency);
  j["concurrency"] = config.concurrency;
  j["connections"] = connections;
  j["threads"] = config.mode == "client" ? config.concurrency : config.threads;
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
  if (validates) j["stale"] = result.stale;
  j["acked_writes"] = result.acked_writes;
  return j;
}

void PrintText(FILE* out, const nlohmann::json& j) {
  std::string what = j["mode"].get<std::string>();
  if (j["api"] == "etcd") absl::StrAppend(&what, " api=etcd");
  if (j.contains("ops")) {
    absl::StrAppend(&what, " ops=", j["ops"].get<std::string>());
  }
  if (j.contains("value_bytes")) {
    absl::StrAppend(&what, " value_bytes=", j["value_bytes"].get<int>());
  }
  if (j.contains("batch")) {
    absl::StrAppend(&what, " batch=", j["batch"].get<int>());
  }
  if (j.contains("create_batch")) {
    absl::StrAppend(&what, " create_batch=", j["create_batch"].get<int>());
  }
  if (j.contains("coalesce")) {
    absl::StrAppend(&what,
                    " coalesce=", j["coalesce"].get<bool>() ? "on" : "off");
  }
  if (j.contains("consistency")) {
    absl::StrAppend(&what,
                    " consistency=", j["consistency"].get<std::string>());
  }
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
  if (j.contains("stale") && j["stale"].get<uint64_t>() > 0) {
    absl::StrAppend(&outcomes, " (stale answers: ", j["stale"].get<uint64_t>(),
                    ")");
  }
  if (!outcomes.empty()) std::fprintf(out, "  outcomes:%s\n", outcomes.c_str());
  if (j.contains("client")) {
    const auto& c = j["client"];
    const uint64_t batches = c["coalesced_batches"].get<uint64_t>();
    const uint64_t creates = c["coalesced_creates"].get<uint64_t>();
    std::fprintf(
        out,
        "  client library: %llu attempts, %llu retries, %llu leader "
        "changes; %llu coalesced CreateSessions calls carried %llu "
        "creates (%.1f per call)\n",
        static_cast<unsigned long long>(c["attempts"].get<uint64_t>()),
        static_cast<unsigned long long>(c["retries"].get<uint64_t>()),
        static_cast<unsigned long long>(c["leader_changes"].get<uint64_t>()),
        static_cast<unsigned long long>(batches),
        static_cast<unsigned long long>(creates),
        batches > 0 ? static_cast<double>(creates) / batches : 0.0);
  }
  if (j.contains("fsync")) {
    const auto& f = j["fsync"];
    const auto u = [](const nlohmann::json& v) {
      return static_cast<unsigned long long>(v.get<uint64_t>());
    };
    std::string leader = "leader unknown";
    if (f.contains("leader")) {
      leader = absl::StrFormat("%llu on the leader (node %llu%s)",
                               u(f["leader_synced_log_writes"]), u(f["leader"]),
                               f["leader_changed"].get<bool>()
                                   ? ", leadership changed during the run"
                                   : "");
    }
    std::fprintf(out,
                 "  fsyncs of the Raft log (ClusterStatus before/after): %llu "
                 "on %d/%d members, %s\n",
                 u(f["synced_log_writes"]), f["members_counted"].get<int>(),
                 f["members"].get<int>(), leader.c_str());
    if (f.contains("fsyncs_per_write")) {
      const std::string on_leader =
          f.contains("leader_fsyncs_per_write")
              ? absl::StrFormat("%.4f",
                                f["leader_fsyncs_per_write"].get<double>())
              : "-";
      std::fprintf(out,
                   "  fsyncs per acknowledged write: %.4f all members, %s "
                   "leader (%llu writes in %llu calls acknowledged, warm-up "
                   "included; %.3f per call)\n",
                   f["fsyncs_per_write"].get<double>(), on_leader.c_str(),
                   u(f["acked_writes"]), u(f["acked_write_calls"]),
                   f["fsyncs_per_write_call"].get<double>());
    }
  }
  std::fflush(out);
}

// The etcd member that leads among `targets` (Maintenance.Status: the one
// whose own member id is the leader id), and the version it runs.
absl::StatusOr<std::pair<std::string, std::string>> FindEtcdLeader(
    const std::vector<std::string>& targets) {
  std::string version;
  absl::Status last = absl::UnavailableError("no target");
  for (const std::string& target : targets) {
    auto stub = etcdserverpb::Maintenance::NewStub(
        grpc::CreateChannel(target, grpc::InsecureChannelCredentials()));
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() +
                         std::chrono::seconds(3));
    etcdserverpb::StatusResponse response;
    grpc::Status s =
        stub->Status(&context, etcdserverpb::StatusRequest(), &response);
    if (!s.ok()) {
      last = absl::UnavailableError(
          absl::StrCat(target, ": Maintenance.Status: ", s.error_message()));
      continue;
    }
    version = response.version();
    if (response.leader() != 0 &&
        response.leader() == response.header().member_id()) {
      return std::make_pair(target, version);
    }
    if (targets.size() == 1) return std::make_pair(std::string(), version);
  }
  if (!version.empty()) return std::make_pair(std::string(), version);
  return last;
}

int Main(int argc, char** argv) {
  // Debian builds Abseil without NDEBUG, which leaves absl::Mutex's deadlock
  // detector on: every lock gRPC takes then updates a global lock graph
  // (GraphCycles showed up at ~5% of the client's profile). The benchmark
  // measures the server, not that.
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
  CLI::App app{
      "sessiond-bench: closed-loop load generator for sessiond (and etcd's "
      "KV/Put, for reference). Reports throughput, p50/p99/p99.9 latency, "
      "errors by status code and, from ClusterStatus, the fsyncs of the Raft "
      "log per acknowledged write."};
  std::string target = "127.0.0.1:50051";
  std::string targets_flag;
  std::string read_from = "all";
  std::string consistency = "default";
  std::string ops = "validate:1";
  std::string sweep;
  int connections = 2;
  uint64_t preload = 1000;
  bool json = false;
  Config config;
  app.add_option("--target", target,
                 "sessiond (or etcd) address host:port: every call goes there");
  app.add_option("--targets", targets_flag,
                 "a cluster's client addresses a,b,c: writes go to the "
                 "member ClusterStatus names as leader (etcd: "
                 "Maintenance.Status), reads round-robin over --read_from");
  app.add_option("--read_from", read_from,
                 "with --targets: where reads go: all (round-robin over "
                 "every target), leader, followers")
      ->check(CLI::IsMember({"all", "leader", "followers"}));
  app.add_option("--connections", connections,
                 "channels (TCP connections) to open per target")
      ->check(CLI::Range(1, 1024));
  app.add_option("--concurrency", config.concurrency,
                 "calls in flight in total (stream mode: stream messages; "
                 "client mode: threads)")
      ->check(CLI::Range(1, 65536));
  app.add_option("--threads", config.threads,
                 "client threads, each with its own completion queue (not "
                 "client mode)")
      ->check(CLI::Range(1, 256));
  app.add_option("--mode", config.mode,
                 "unary (the --ops mix), batch (BatchValidateSessions), "
                 "stream (StreamValidateSessions), echo (grpc.health.v1 "
                 "Check: the empty-RPC ceiling), client (the --ops mix "
                 "through the C++ client library, one blocking call per "
                 "thread)")
      ->check(CLI::IsMember({"unary", "batch", "stream", "echo", "client"}));
  app.add_option("--ops", ops,
                 "unary/client mix, e.g. "
                 "create:1,validate:8,touch:1,update:0,revoke:0");
  app.add_option("--batch", config.batch, "tokens per BatchValidate call")
      ->check(CLI::Range(1, 10000));
  app.add_option("--create_batch", config.create_batch,
                 "creates go as CreateSessions calls of this many sessions "
                 "(ops count sessions, calls count RPCs); 0: CreateSession")
      ->check(CLI::Range(0, 1000));
  app.add_option("--consistency", consistency,
                 "validations (unary, batch, stream, client) ask for this "
                 "consistency: default, linearizable, local")
      ->check(CLI::IsMember({"default", "linearizable", "local"}));
  app.add_flag("--coalesce", config.coalesce,
               "client mode: SessionClientOptions::coalesce_creates (the "
               "library merges concurrent creates into CreateSessions calls)");
  app.add_flag("--etcd", config.etcd,
               "load etcd instead: etcdserverpb.KV/Put (v3 gRPC API) of "
               "--value_bytes to keys drawn from --keys; --target(s) are "
               "etcd client URLs host:port");
  app.add_option("--value_bytes", config.value_bytes, "etcd put value size")
      ->check(CLI::Range(0, 1 << 20));
  app.add_option("--keys", config.keys, "etcd keys the puts are spread over")
      ->check(CLI::Range(uint64_t{1}, uint64_t{1} << 40));
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
  app.add_option("--deadline_ms", config.deadline_ms,
                 "deadline of each call (client mode: of each whole call, "
                 "retries included)")
      ->check(CLI::Range(1, 3'600'000));
  app.add_flag("--touch", config.touch, "validate with touch=true");
  app.add_option("--rate", config.rate,
                 "open loop: issue this many calls/s in total (unary, batch, "
                 "echo), at most --concurrency in flight; latency counts from "
                 "when each call was due. 0: closed loop")
      ->check(CLI::Range(0.0, 1e7));
  app.add_option("--preload", preload,
                 "sessions created before the run whose tokens the "
                 "validate/touch/update/revoke calls use (when the run needs "
                 "tokens)");
  app.add_option("--sweep", sweep,
                 "comma-separated concurrencies: repeat the run at each, "
                 "e.g. --ops create:1 --sweep 1,64");
  app.add_option("--seed", config.seed, "random seed");
  app.add_flag("--json", json,
               "print one JSON document on stdout (text goes to stderr)");
  CLI11_PARSE(app, argc, argv);

  const auto fail = [](const std::string& message) {
    std::fprintf(stderr, "sessiond-bench: %s\n", message.c_str());
    return 2;
  };
  absl::StatusOr<Mix> mix = ParseMix(ops);
  if (!mix.ok()) return fail(std::string(mix.status().message()));
  config.mix = *mix;
  config.consistency = consistency == "linearizable" ? v1::LINEARIZABLE
                       : consistency == "local"      ? v1::LOCAL
                                                     : v1::CONSISTENCY_DEFAULT;
  if (config.rate > 0 && (config.mode == "stream" || config.mode == "client")) {
    return fail("--rate applies to unary, batch and echo");
  }
  if (config.coalesce && config.mode != "client") {
    return fail("--coalesce needs --mode client");
  }
  if (config.mode == "client" && config.concurrency > 4096) {
    return fail("--mode client runs a thread per call: --concurrency <= 4096");
  }
  if (config.etcd && config.mode != "unary") {
    return fail("--etcd loads KV/Put in --mode unary (the default)");
  }
  std::vector<std::string> targets;
  const bool cluster = !targets_flag.empty();
  if (cluster) {
    if (app.count("--target") > 0) {
      return fail("give --target or --targets, not both");
    }
    targets = absl::StrSplit(targets_flag, ',', absl::SkipEmpty());
    if (targets.empty()) return fail("--targets: no address");
  } else {
    if (read_from != "all") return fail("--read_from needs --targets");
    targets = {target};
  }
  std::vector<int> concurrencies;
  for (absl::string_view part : absl::StrSplit(sweep, ',', absl::SkipEmpty())) {
    int c = 0;
    if (!absl::SimpleAtoi(part, &c) || c < 1 || c > 65536) {
      return fail(absl::StrCat("bad --sweep entry '", part, "'"));
    }
    concurrencies.push_back(c);
  }
  if (concurrencies.empty()) concurrencies.push_back(config.concurrency);

  FILE* text = json ? stderr : stdout;
  nlohmann::json doc;
  doc["target"] = absl::StrJoin(targets, ",");
  doc["targets"] = targets;
  doc["api"] = config.etcd ? "etcd v3 gRPC etcdserverpb.KV/Put"
                           : "sessiond.v1.SessionService";

  // Where writes and reads go.
  std::string write_target = targets[0];
  std::vector<std::string> read_targets = targets;
  std::unique_ptr<tools::ClusterProbe> probe;
  if (config.etcd) {
    absl::StatusOr<std::pair<std::string, std::string>> found;
    const int64_t give_up = SteadyNowNs() + 10'000'000'000;
    while (true) {
      found = FindEtcdLeader(targets);
      if ((found.ok() && (!cluster || !found->first.empty())) ||
          SteadyNowNs() > give_up) {
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
    }
    if (!found.ok()) {
      return fail(
          absl::StrCat("etcd does not answer: ", found.status().message()));
    }
    if (cluster && found->first.empty()) {
      return fail("no etcd member reports itself as leader in 10 s");
    }
    if (cluster) write_target = found->first;
    doc["etcd_version"] = found->second;
    std::fprintf(text, "api: etcd %s, v3 gRPC API %s; puts go to %s%s\n",
                 found->second.c_str(), kEtcdPutMethod, write_target.c_str(),
                 cluster ? " (the leader, from Maintenance.Status)" : "");
  } else {
    // ClusterStatus: the leader (with --targets) and the fsync counters.
    std::vector<std::string> ask = targets;
    probe = std::make_unique<tools::ClusterProbe>(ask);
    absl::StatusOr<v1::ClusterStatusResponse> status;
    const int64_t give_up = SteadyNowNs() + 10'000'000'000;
    while (true) {
      status = probe->Best(absl::Seconds(3));
      if (!cluster || (status.ok() && tools::LeaderOf(*status) != nullptr) ||
          SteadyNowNs() > give_up) {
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
    }
    const v1::MemberStatus* leader =
        status.ok() ? tools::LeaderOf(*status) : nullptr;
    if (cluster && leader == nullptr) {
      return fail(absl::StrCat(
          "--targets: no member reports itself as leader in 10 s (",
          status.ok() ? "ClusterStatus answered without one"
                      : status.status().message(),
          ")"));
    }
    if (leader != nullptr) {
      doc["leader"] = {{"node_id", leader->node_id()},
                       {"address", leader->client_address()},
                       {"term", leader->term()}};
    }
    if (cluster) {
      write_target = leader->client_address();
      std::vector<std::string> followers;
      for (const std::string& t : targets) {
        if (t != write_target) followers.push_back(t);
      }
      if (read_from == "leader") {
        read_targets = {write_target};
      } else if (read_from == "followers") {
        if (followers.empty()) {
          return fail("--read_from followers: no target but the leader");
        }
        read_targets = followers;
      }
      std::fprintf(text,
                   "cluster: %d members, node %llu leads (term %llu) at %s; "
                   "writes go there, reads round-robin over %s\n",
                   status->members_size(),
                   static_cast<unsigned long long>(leader->node_id()),
                   static_cast<unsigned long long>(leader->term()),
                   write_target.c_str(),
                   absl::StrJoin(read_targets, ", ").c_str());
    } else if (!status.ok()) {
      probe.reset();  // no ClusterStatus there: no fsync counts
    }
  }
  doc["write_target"] = write_target;
  doc["read_targets"] = read_targets;

  // Channels: --connections per address; the write target's are shared with
  // its reads when it is one of them.
  std::map<std::string, std::vector<std::shared_ptr<grpc::Channel>>> by_address;
  auto channels_of = [&](const std::string& address) {
    auto it = by_address.find(address);
    if (it == by_address.end()) {
      it =
          by_address.emplace(address, MakeChannels(address, connections)).first;
    }
    return it->second;
  };
  Endpoints endpoints;
  for (const std::string& t : read_targets) {
    for (auto& channel : channels_of(t)) endpoints.reads.push_back(channel);
  }
  endpoints.writes = channels_of(write_target);
  for (auto& [address, channels] : by_address) {
    // --mode client measures through the client library, which goes around
    // a dead member; only the preload uses these channels, to the leader.
    if (config.mode == "client" && address != write_target) continue;
    for (auto& channel : channels) {
      if (!channel->WaitForConnected(std::chrono::system_clock::now() +
                                     std::chrono::seconds(10))) {
        return fail(absl::StrCat(
            "cannot connect to ", address,
            " in 10 s: is it running? Leave members that are down out of "
            "--targets, or use --mode client, which goes around them"));
      }
    }
  }
  std::unique_ptr<client::SessionClient> session_client;
  if (config.mode == "client") {
    client::SessionClientOptions options;
    options.coalesce_creates = config.coalesce;
    options.call_timeout = absl::Milliseconds(config.deadline_ms);
    options.deadline = std::min(options.deadline, options.call_timeout);
    session_client = client::SessionClient::Connect(targets, options);
    endpoints.client = session_client.get();
    std::fprintf(
        text,
        "client library: %zu endpoint(s), coalesce_creates %s (at "
        "most %d per call), attempt deadline %lld ms, call timeout "
        "%lld ms\n",
        targets.size(), config.coalesce ? "on" : "off",
        options.max_coalesced_creates,
        static_cast<long long>(absl::ToInt64Milliseconds(options.deadline)),
        static_cast<long long>(
            absl::ToInt64Milliseconds(options.call_timeout)));
  }

  std::vector<std::string> tokens;
  const bool needs_tokens =
      !config.etcd && (config.mode == "batch" || config.mode == "stream" ||
                       ((config.mode == "unary" || config.mode == "client") &&
                        config.mix.NeedsTokens()));
  if (needs_tokens && preload > 0) {
    // Through the async path to the leader, in CreateSessions calls of up
    // to 100, whatever the run's mode.
    Config load = config;
    load.mode = "unary";
    load.mix = Mix{};
    load.mix.weights[kCreate] = 1;
    load.mix.total = 1;
    load.create_batch = static_cast<int>(std::min<uint64_t>(100, preload));
    load.count = preload;
    load.concurrency = std::min(16, std::max(1, config.concurrency));
    load.token_cap = preload + load.create_batch;
    load.rate = 0;
    Result loaded = RunOnce(load, endpoints, tokens);
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
    std::optional<v1::ClusterStatusResponse> before;
    if (probe != nullptr) {
      absl::StatusOr<v1::ClusterStatusResponse> s =
          probe->Best(absl::Seconds(3));
      if (s.ok()) before = *std::move(s);
    }
    client::SessionClient::Stats client_before;
    if (session_client != nullptr) client_before = session_client->stats();
    Result result = RunOnce(run, endpoints, tokens);
    // Client mode: the library opens one channel per endpoint.
    nlohmann::json j =
        ToJson(run, result,
               session_client != nullptr ? static_cast<int>(targets.size())
                                         : connections);
    if (session_client != nullptr) {
      j["client"] = ClientStatsJson(client_before, session_client->stats());
    }
    if (before) {
      absl::StatusOr<v1::ClusterStatusResponse> after =
          probe->Best(absl::Seconds(3));
      if (after.ok()) j["fsync"] = FsyncReport(*before, *after, result);
    }
    PrintText(text, j);
    runs.push_back(std::move(j));
    if (result.ok_ops == 0) all_ok = false;
  }
  if (json) {
    doc["preloaded"] = tokens.size();
    doc["runs"] = std::move(runs);
    std::printf("%s\n", doc.dump(2).c_str());
  }
  return all_ok ? 0 : 1;
}

}  // namespace
}  // namespace sessiond::bench

int main(int argc, char** argv) { return sessiond::bench::Main(argc, argv); }
