// Copyright sessiond authors. Licensed under the Apache License 2.0.
#include "client/session_client.h"

#include <grpcpp/create_channel.h>
#include <grpcpp/security/credentials.h>
#include <sys/random.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <optional>
#include <utility>

#include "absl/container/inlined_vector.h"
#include "absl/strings/ascii.h"
#include "absl/strings/cord.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "client/grpc_status.h"

namespace sessiond::client {
namespace {

// The most request bytes one coalesced CreateSessions carries (see
// SessionClientOptions::max_coalesced_creates).
constexpr size_t kMaxCoalescedRequestBytes = size_t{1} << 20;

// The payload that marks a write the client never sent (IsNotSent).
constexpr absl::string_view kNotSentPayload = "sessiond.client/not-sent";

// The server's trailing metadata naming the leader (session.proto).
constexpr absl::string_view kLeaderKey = "sessiond-leader";
// The server never proposed the write (no leader until its deadline).
constexpr absl::string_view kNotProposedKey = "sessiond-not-proposed";
constexpr absl::string_view kLeaderIdKey = "sessiond-leader-id";

// "host:port" reduced to a form two spellings of one address share: no
// gRPC scheme, host in lower case, the loopback names as one.
struct ParsedAddress {
  std::string host;
  std::string port;
  std::string key;  // host:port
  // 0.0.0.0, :: or no host: what a node bound, not where to reach it.
  bool wildcard = false;
};

ParsedAddress ParseAddress(absl::string_view address) {
  for (absl::string_view scheme : {"dns:///", "dns:", "ipv4:", "ipv6:"}) {
    if (absl::ConsumePrefix(&address, scheme)) break;
  }
  ParsedAddress parsed;
  if (absl::ConsumePrefix(&address, "[")) {
    const size_t close = address.find(']');
    parsed.host = std::string(address.substr(0, close));
    if (close != absl::string_view::npos) {
      absl::string_view rest = address.substr(close + 1);
      if (absl::ConsumePrefix(&rest, ":")) parsed.port = std::string(rest);
    }
  } else {
    const size_t colon = address.rfind(':');
    // Two colons and no brackets: a bare IPv6 address without a port.
    if (colon == absl::string_view::npos || address.find(':') != colon) {
      parsed.host = std::string(address);
    } else {
      parsed.host = std::string(address.substr(0, colon));
      parsed.port = std::string(address.substr(colon + 1));
    }
  }
  absl::AsciiStrToLower(&parsed.host);
  if (parsed.host == "localhost" || parsed.host == "::1") {
    parsed.host = "127.0.0.1";
  }
  parsed.wildcard = parsed.host.empty() || parsed.host == "0.0.0.0" ||
                    parsed.host == "::" || parsed.host == "0:0:0:0:0:0:0:0";
  parsed.key = absl::StrCat(parsed.host, ":", parsed.port);
  return parsed;
}

// The longest gRPC waits between two connection attempts of a channel the
// client made, unless the caller's channel_args say otherwise.
constexpr absl::Duration kDefaultMaxReconnectBackoff = absl::Seconds(5);

bool HasChannelArg(const grpc::ChannelArguments& args, absl::string_view key) {
  const grpc_channel_args c_args = args.c_channel_args();
  for (size_t i = 0; i < c_args.num_args; ++i) {
    if (key == c_args.args[i].key) return true;
  }
  return false;
}

std::shared_ptr<grpc::Channel> MakeChannel(
    const std::string& address, const SessionClientOptions& options) {
  grpc::ChannelArguments args = options.channel_args;
  // Channels share connections through gRPC's global subchannel pool by
  // default: a second channel to a leader that is also an endpoint would
  // share the endpoint's connection and its failures. Each of ours stands
  // alone.
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  // The rest are defaults: the caller's channel_args override each of them.
  const auto set_default = [&](const char* key, int value) {
    if (!HasChannelArg(options.channel_args, key)) args.SetInt(key, value);
  };
  // A node that vanished (host down, a partition dropping packets) is
  // noticed within ~40 s even on an idle channel or a validate stream,
  // which has no deadline: ping after 30 s of silence, give up 10 s later
  // (the server accepts pings every 10 s: docs/API.md, "Connections").
  // gRPC's default GRPC_ARG_HTTP2_MAX_PINGS_WITHOUT_DATA (2) stops the pings
  // after two with no data sent in between: a node that vanished once a
  // validate stream had been quiet for a minute was never noticed. 0 lifts
  // that limit.
  set_default(GRPC_ARG_KEEPALIVE_TIME_MS, 30 * 1000);
  set_default(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 10 * 1000);
  set_default(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  set_default(GRPC_ARG_HTTP2_MAX_PINGS_WITHOUT_DATA, 0);
  // gRPC's reconnect backoff grows to 120 s by default: a node back from an
  // outage of a few minutes would stay unused that long (a retried call
  // reconnects at once anyway: Backoff). Capped unless the caller chose.
  set_default(
      GRPC_ARG_MAX_RECONNECT_BACKOFF_MS,
      static_cast<int>(absl::ToInt64Milliseconds(kDefaultMaxReconnectBackoff)));
  return grpc::CreateCustomChannel(address,
                                   options.credentials != nullptr
                                       ? options.credentials
                                       : grpc::InsecureChannelCredentials(),
                                   args);
}

// The steady clock, in nanoseconds: when an endpoint last answered and how
// long it is passed over are intervals, which a step of the wall clock
// (NTP, a VM resumed) must not stretch: stepped back an hour, a node passed
// over for 5 s stayed passed over (and its leader hints ignored) for the
// hour, and no channel counted as quiet, so none was probed.
int64_t SteadyNowNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

using SteadyClock = std::chrono::steady_clock;
using SteadyTime = SteadyClock::time_point;

// `timeout` after `from`. A call's deadline is kept on the steady clock for
// the reason above: on the wall clock, a step back during a call stretched
// its call_timeout by the step (bounded only by max_attempts). A timeout
// past the clock's range (an infinite call_timeout) is SteadyTime::max().
SteadyTime After(SteadyTime from, absl::Duration timeout) {
  if (timeout <= absl::ZeroDuration()) return from;
  if (timeout >= absl::FromChrono(SteadyTime::max() - from)) {
    return SteadyTime::max();
  }
  return from + absl::ToChronoNanoseconds(timeout);
}

// The time left until `deadline`; negative once it has passed.
absl::Duration Until(SteadyTime deadline) {
  if (deadline == SteadyTime::max()) return absl::InfiniteDuration();
  return absl::FromChrono(deadline - SteadyClock::now());
}

// `deadline` as the wall-clock instant gRPC and absl::Mutex take, made from
// the time left just before it is handed over, so a wall-clock step before
// then does not move it. gRPC counts it on its own monotonic clock from the
// moment the call or wait starts.
absl::Time WallDeadline(SteadyTime deadline) {
  return absl::Now() + Until(deadline);
}

// Whether a non-idempotent write with `deadline` has too little time left to
// be sent: less than a quarter of min(deadline, call_timeout). The server
// proposes a write whatever time it has left (server/write_path.cc,
// ServerDeadline), so one
// sent with a few milliseconds to go would most likely end DEADLINE_EXCEEDED,
// an unknown outcome, where "not sent" was still true. A stricter rule keeps
// a coalesced caller near its deadline out of a batch (TooLateToShare).
//
// With `wait`: whether it would be, were it sent `wait` from now (after a
// retry's backoff).
bool TooLateToSend(SteadyTime deadline, const SessionClientOptions& options,
                   absl::Duration wait = absl::ZeroDuration()) {
  return Until(deadline) - wait <
         std::min(options.deadline, options.call_timeout) / 4;
}

// Whether a coalesced create with `deadline` is too near it to go in a batch
// with others: less than half of min(deadline, call_timeout) left, twice the
// send floor. A batch runs to its earliest member's deadline, and Invoke
// applies the floor again once a channel connects: a member admitted with
// just over the floor left was taken under it by the connect wait (the 1 ms
// poll of a quiet channel at least, up to connect_timeout), and every
// caller of the batch, up to max_coalesced_creates of them, was answered
// "not sent" for that one's sake. Half leaves a connect wait of up to a
// quarter before the floor, and the batch at least half the time a write
// alone would have. A member with less left (it waited behind earlier
// batches) is answered "not sent" instead, and may retry; a turn's sender
// with less left sends its create alone, its deadline its own.
bool TooLateToShare(SteadyTime deadline, const SessionClientOptions& options) {
  return Until(deadline) < std::min(options.deadline, options.call_timeout) / 2;
}

// A channel that answered a call this recently is taken to be connected
// as it says; one quiet for longer is probed first (WaitConnected).
constexpr absl::Duration kProbeAfterQuiet = absl::Milliseconds(50);
// How long a probe lets gRPC poll the connection.
constexpr absl::Duration kProbe = absl::Milliseconds(1);

// Waits until `channel` is connected, at most until `until`. False at once
// for a channel in TRANSIENT_FAILURE: its last connection attempt failed and
// the next one waits for gRPC's reconnect backoff (a second or more).
//
// With `probe`, a READY channel first gets gRPC's poller for kProbe. A
// blocking client has no thread reading its connections between calls, so
// a channel whose server died (SIGKILL, the socket closed) still says READY
// until something polls it: a write sent then fails with "Socket closed",
// an unknown outcome although nothing reached a server. Measured with
// ClusterClientTest's leader kill: a write right after it went out on the
// dead connection 4 times out of 4 without the probe; with it, the channel
// was seen closed, the write went to a survivor and succeeded 4 of 4. A
// deadline of "now" does not poll at all; 1 ms (gRPC's timer granularity)
// costs about that much per probe, hence only after kProbeAfterQuiet.
bool WaitConnected(grpc::ChannelInterface& channel, SteadyTime until,
                   bool probe) {
  grpc_connectivity_state state = channel.GetState(/*try_to_connect=*/true);
  if (probe && state == GRPC_CHANNEL_READY &&
      channel.WaitForStateChange(
          state, absl::ToChronoTime(WallDeadline(
                     std::min(After(SteadyClock::now(), kProbe), until))))) {
    state = channel.GetState(/*try_to_connect=*/true);
  }
  while (state != GRPC_CHANNEL_READY) {
    if (state == GRPC_CHANNEL_TRANSIENT_FAILURE ||
        state == GRPC_CHANNEL_SHUTDOWN) {
      return false;
    }
    if (!channel.WaitForStateChange(state,
                                    absl::ToChronoTime(WallDeadline(until)))) {
      return false;
    }
    state = channel.GetState(/*try_to_connect=*/true);
  }
  return true;
}

// True for gRPC's fail-fast answer to a call made while the channel had no
// connection to pick (its reconnect was refused): the call got no transport
// stream, so no byte of it reached a server. WaitConnected narrows this to a
// race (the channel said READY, then the closed socket was noticed before
// the call picked it); measured in ClientEndpointsTest's quiet leader kill
// under load, about 1 run in 200. gRPC has no status detail for this; the
// message is the pick failure's, fixed in gRPC's load-balancing policies.
bool NeverLeftTheClient(const absl::Status& status) {
  return absl::StartsWith(status.message(),
                          "failed to connect to all addresses");
}

// kUnavailable with `message`, marked IsNotSent.
absl::Status NotSent(absl::string_view message) {
  absl::Status status = absl::UnavailableError(message);
  status.SetPayload(kNotSentPayload, absl::Cord("1"));
  return status;
}

absl::Status NotSentError(size_t endpoints) {
  return NotSent(absl::StrCat(
      "not sent: none of ", endpoints,
      " endpoint(s) had a connected channel in time; the write did not "
      "happen"));
}

// The domain of the server's google.rpc.ErrorInfo (docs/API.md).
constexpr absl::string_view kServerErrorDomain = "sessiond.dev";

// kResourceExhausted the server sent: back-pressure, refused before
// anything was queued (its ErrorInfo says so). gRPC gives the same code,
// without the detail, to a reply over this client's receive limit, which
// comes after the write applied.
bool RefusedByServerUnderLoad(const absl::Status& status) {
  if (!absl::IsResourceExhausted(status)) return false;
  const std::optional<google::rpc::ErrorInfo> info = ErrorInfoOf(status);
  return info.has_value() && info->domain() == kServerErrorDomain;
}

// A CreateSessions batch refused for the sake of one of its requests, with
// nothing created: one malformed (INVALID_ARGUMENT), one user at the
// per-user cap or a JWT this node cannot sign (FAILED_PRECONDITION), a JWT
// whose signing key was retired meanwhile (ABORTED). Each create alone
// fails or succeeds on its own.
bool RefusedForOneRequest(const absl::Status& status) {
  return absl::IsInvalidArgument(status) ||
         absl::IsFailedPrecondition(status) || absl::IsAborted(status);
}

// For an idempotent call. A kResourceExhausted only when the server shed
// the call: gRPC's own (a reply over this client's receive limit) fails
// the same way every time.
bool Retryable(const absl::Status& status) {
  return absl::IsUnavailable(status) || absl::IsDeadlineExceeded(status) ||
         RefusedByServerUnderLoad(status);
}

// gRPC's refusal of the request itself for its size: by the server ("Received
// message larger than max (N vs. LIMIT)", before any handler runs) or by this
// client ("Sent message ..."), N being the request's `request_bytes`. Nothing
// was applied. (A reply over this client's limit names the reply's size.)
bool RefusedForItsSize(const absl::Status& status, size_t request_bytes) {
  static constexpr absl::string_view kLarger = " message larger than max (";
  const absl::string_view message = status.message();
  const size_t at = message.find(kLarger);
  if (at == absl::string_view::npos) return false;
  const absl::string_view rest = message.substr(at + kLarger.size());
  uint64_t size = 0;
  return absl::SimpleAtoi(rest.substr(0, rest.find(' ')), &size) &&
         size == request_bytes;
}

// Whether the server's answer is about its own state, not the cluster's
// (an election, a load the leader sheds): a node starting, holding no data
// yet, shutting down, or installing a snapshot.
bool OfThatNodeAlone(const absl::Status& status) {
  if (!absl::IsUnavailable(status)) return false;
  const std::string reason = ErrorReason(status);
  return reason == "NOT_READY" || reason == "NO_DATA_YET" ||
         reason == "SHUTTING_DOWN" || reason == "SNAPSHOT_INSTALLING";
}

// A write's kResourceExhausted that is not the server's refusal: the write
// may have applied, so it is reported as an unknown outcome, not as the
// "not applied" the code means otherwise.
absl::Status AmbiguousResourceExhausted(const absl::Status& status) {
  return absl::UnknownError(absl::StrCat(
      "outcome unknown: the write was sent and this client refused the "
      "answer (",
      status.message(),
      "); a reply over the client's receive limit (4 MiB by default: "
      "ChannelArguments GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH) follows an "
      "applied write. Check before repeating it"));
}

}  // namespace

bool IsNotSent(const absl::Status& status) {
  return absl::IsUnavailable(status) &&
         status.GetPayload(kNotSentPayload).has_value();
}

std::string NewRequestId() {
  unsigned char bytes[16];
  size_t got = 0;
  // getrandom(2) blocks only until the kernel's pool is first seeded; a
  // short read (a signal) is continued. Bounded: 16 bytes take one call.
  for (int tries = 0; got < sizeof(bytes) && tries < 100; ++tries) {
    const ssize_t n = getrandom(bytes + got, sizeof(bytes) - got, 0);
    if (n > 0) got += static_cast<size_t>(n);
  }
  if (got < sizeof(bytes)) std::abort();  // no CSPRNG: never guess
  return absl::WebSafeBase64Escape(
      absl::string_view(reinterpret_cast<const char*>(bytes), sizeof(bytes)));
}

struct SessionClient::Endpoint {
  Endpoint(std::string address_in,
           std::shared_ptr<grpc::ChannelInterface> channel_in)
      : address(std::move(address_in)),
        key(address.empty() ? "" : ParseAddress(address).key),
        channel(std::move(channel_in)),
        stub(v1::SessionService::NewStub(channel)) {}

  const std::string address;  // empty for a channel the caller built
  const std::string key;      // ParseAddress(address).key; empty likewise
  const std::shared_ptr<grpc::ChannelInterface> channel;
  const std::unique_ptr<v1::SessionService::Stub> stub;
  // When a call last completed OK over `channel` (SteadyNowNs).
  std::atomic<int64_t> last_ok_ns{0};
  // Until then (SteadyNowNs) it ranks as failing, and hints naming it as
  // leader are ignored (options pass_over_after_timeout).
  std::atomic<int64_t> passed_over_until_ns{0};
};

std::unique_ptr<SessionClient> SessionClient::Connect(
    std::vector<std::string> endpoints, SessionClientOptions options) {
  std::vector<EndpointPtr> list;
  for (std::string& address : endpoints) {
    const std::string key = ParseAddress(address).key;
    const bool duplicate =
        std::any_of(list.begin(), list.end(),
                    [&](const EndpointPtr& e) { return e->key == key; });
    if (duplicate) continue;
    std::shared_ptr<grpc::Channel> channel = MakeChannel(address, options);
    list.push_back(
        std::make_shared<Endpoint>(std::move(address), std::move(channel)));
  }
  return std::unique_ptr<SessionClient>(new SessionClient(
      std::move(list), /*opens_channels=*/true, std::move(options)));
}

std::unique_ptr<SessionClient> SessionClient::Connect(
    std::initializer_list<std::string> endpoints,
    SessionClientOptions options) {
  return Connect(std::vector<std::string>(endpoints), std::move(options));
}

std::unique_ptr<SessionClient> SessionClient::Connect(
    const std::string& target, SessionClientOptions options) {
  return Connect(std::vector<std::string>{target}, std::move(options));
}

SessionClient::SessionClient(std::shared_ptr<grpc::ChannelInterface> channel,
                             SessionClientOptions options)
    : SessionClient({std::make_shared<Endpoint>("", std::move(channel))},
                    /*opens_channels=*/false, std::move(options)) {}

SessionClient::SessionClient(std::vector<EndpointPtr> endpoints,
                             bool opens_channels, SessionClientOptions options)
    : options_(std::move(options)),
      endpoints_(std::move(endpoints)),
      opens_channels_(opens_channels) {}

SessionClient::~SessionClient() = default;

absl::Duration SessionClient::Jitter(absl::Duration backoff) {
  absl::MutexLock lock(&rng_mu_);
  const double fraction = absl::Uniform(rng_, 0.5, 1.0);
  return backoff * fraction;
}

void SessionClient::Backoff(absl::Duration delay, absl::Duration at_least,
                            grpc::ChannelInterface& channel) {
  const SteadyTime start = SteadyClock::now();
  const grpc_connectivity_state state =
      channel.GetState(/*try_to_connect=*/true);
  if (state == GRPC_CHANNEL_READY) {
    // Connected, yet the server could not answer (no quorum, overloaded):
    // plain backoff.
    absl::SleepFor(delay);
    return;
  }
  if (state == GRPC_CHANNEL_TRANSIENT_FAILURE) {
    // Its last connection attempt failed, and gRPC waits out its reconnect
    // backoff before the next: up to max_reconnect_backoff (120 s unless
    // set), long after the server is back from an outage. The retry is
    // paced by this client's own backoff: connect now.
    if (auto* grpc_channel = dynamic_cast<grpc::Channel*>(&channel)) {
      grpc::experimental::ChannelResetConnectionBackoff(grpc_channel);
    }
  }
  // Not connected: wait on the channel instead of sleeping. A blocking client
  // has no thread polling the channel between calls, and calls fail fast
  // while it is down, so without this a reconnect that succeeds is noticed
  // only by gRPC's backup poller, every 5 s. Waiting here polls the channel,
  // and the retry goes as soon as the connection is up.
  channel.WaitForConnected(absl::ToChronoTime(absl::Now() + delay));
  // What the server asked for is waited out whichever node comes next (a
  // follower forwards to the same leader).
  absl::SleepFor(at_least - absl::FromChrono(SteadyClock::now() - start));
}

std::vector<SessionClient::EndpointPtr> SessionClient::Candidates(
    bool write, absl::Span<const Endpoint* const> tried) {
  std::vector<EndpointPtr> out;
  out.reserve(endpoints_.size() + 1);
  if (write) {
    EndpointPtr leader;
    {
      absl::MutexLock lock(&mu_);
      leader = leader_;
    }
    if (leader != nullptr) {
      // Still the leader after a kResourceExhausted in this call (a
      // follower would only forward the write to it), so `tried` does not
      // apply; a leader that failed otherwise was forgotten.
      if (leader->channel->GetState(/*try_to_connect=*/false) ==
          GRPC_CHANNEL_TRANSIENT_FAILURE) {
        ForgetLeader(leader.get());
      } else {
        out.push_back(std::move(leader));
      }
    }
  }
  const size_t n = endpoints_.size();
  if (n == 0) return out;
  // Ranks: 0 untried and not failing, 1 untried and failing (its channel in
  // TRANSIENT_FAILURE, or passed over after a timeout), 2 tried and
  // not failing, 3 tried and failing, 4 the leader (already first);
  // round-robin order within a rank. Each channel's state is read once.
  absl::InlinedVector<uint8_t, 8> rank(n);
  const int64_t now_ns = SteadyNowNs();
  const size_t start = next_endpoint_.fetch_add(1, std::memory_order_relaxed);
  for (size_t i = 0; i < n; ++i) {
    const EndpointPtr& e = endpoints_[(start + i) % n];
    if (!out.empty() && e == out.front()) {
      rank[i] = 4;
      continue;
    }
    const bool was_tried =
        std::find(tried.begin(), tried.end(), e.get()) != tried.end();
    const bool failing =
        now_ns < e->passed_over_until_ns.load(std::memory_order_relaxed) ||
        e->channel->GetState(/*try_to_connect=*/false) ==
            GRPC_CHANNEL_TRANSIENT_FAILURE;
    rank[i] = (was_tried ? 2 : 0) + (failing ? 1 : 0);
  }
  for (uint8_t r = 0; r < 4; ++r) {
    for (size_t i = 0; i < n; ++i) {
      if (rank[i] == r) out.push_back(endpoints_[(start + i) % n]);
    }
  }
  return out;
}

void SessionClient::PassOver(Endpoint& endpoint) const {
  endpoint.passed_over_until_ns.store(
      SteadyNowNs() +
          absl::ToInt64Nanoseconds(options_.pass_over_after_timeout),
      std::memory_order_relaxed);
}

SessionClient::EndpointPtr SessionClient::FirstConnected(
    const std::vector<EndpointPtr>& candidates, SteadyTime call_deadline,
    bool whole_call) {
  for (size_t i = 0; i < candidates.size(); ++i) {
    const EndpointPtr& e = candidates[i];
    const SteadyTime now = SteadyClock::now();
    if (now >= call_deadline) break;
    const bool quiet =
        absl::Nanoseconds(SteadyNowNs() -
                          e->last_ok_ns.load(std::memory_order_relaxed)) >
        kProbeAfterQuiet;
    const SteadyTime until =
        std::min(After(now, options_.connect_timeout), call_deadline);
    if (WaitConnected(*e->channel, until, /*probe=*/quiet)) return e;
    endpoints_skipped_.fetch_add(1, std::memory_order_relaxed);
    // Waited the whole connect_timeout for, its channel not even failing (a
    // blackholed host says CONNECTING): passed over, as one that let an
    // attempt time out. It was otherwise named again by the next follower's
    // answer, and every write waited out connect_timeout on it first. Not
    // one the call's own deadline cut short (unless that was all the call
    // had: a call_timeout at or under connect_timeout), nor one that fails
    // at once.
    if (options_.pass_over_after_timeout > absl::ZeroDuration() &&
        (until < call_deadline || (whole_call && i == 0)) &&
        e->channel->GetState(/*try_to_connect=*/false) !=
            GRPC_CHANNEL_TRANSIENT_FAILURE) {
      PassOver(*e);
    }
    ForgetLeader(e.get());
  }
  return nullptr;
}

void SessionClient::Observe(const EndpointPtr& endpoint, bool write,
                            const absl::Status& status,
                            const grpc::ClientContext& context) {
  std::optional<std::string> hint;
  bool hint_id = false;
  for (const auto& [key, value] : context.GetServerTrailingMetadata()) {
    const absl::string_view k(key.data(), key.size());
    if (k == kLeaderKey) {
      hint = std::string(value.data(), value.size());
    } else if (k == kLeaderIdKey) {
      hint_id = true;
    }
  }
  const bool failed =
      absl::IsUnavailable(status) || absl::IsDeadlineExceeded(status);
  const bool committed_here = write && status.ok() && !hint_id;
  // Most reads: nothing to learn or forget, so no lock.
  if (!failed && !hint.has_value() && !committed_here) return;
  absl::MutexLock lock(&mu_);
  if (failed && leader_.get() == endpoint.get()) {
    leader_.reset();
    leaders_forgotten_.fetch_add(1, std::memory_order_relaxed);
  }
  if (hint.has_value()) {
    EndpointPtr leader = EndpointFor(*hint);
    if (leader == nullptr) {
      leader_hints_ignored_.fetch_add(1, std::memory_order_relaxed);
      return;
    }
    // A node that failed naming itself (a leader without quorum, or
    // stopping) is not worth going back to: the next write goes anywhere and
    // a follower names whoever leads by then.
    if (failed && leader == endpoint) return;
    // Nor is one this client cannot reach, however often the others name
    // it: writes go through them (they forward) until it is tried again.
    if (SteadyNowNs() <
        leader->passed_over_until_ns.load(std::memory_order_relaxed)) {
      leader_hints_ignored_.fetch_add(1, std::memory_order_relaxed);
      return;
    }
    SetLeader(leader);
  } else if (committed_here) {
    // The server names the leader on every write a follower answers, and
    // not when the node that answered led (session_service.cc): this one
    // committed the write itself. Rarely, a follower that lost track of the
    // leader also answers without a hint; its next answer corrects this.
    SetLeader(endpoint);
  }
}

SessionClient::EndpointPtr SessionClient::EndpointFor(
    absl::string_view address) {
  const ParsedAddress parsed = ParseAddress(address);
  if (parsed.wildcard) {
    // The leader announced the address it bound (0.0.0.0:port), not one to
    // dial: the one endpoint with that port is taken to be it.
    EndpointPtr match;
    for (const EndpointPtr& e : endpoints_) {
      if (e->key.empty() || ParseAddress(e->address).port != parsed.port) {
        continue;
      }
      if (match != nullptr) return nullptr;  // ambiguous
      match = e;
    }
    return match;
  }
  for (const EndpointPtr& e : endpoints_) {
    if (!e->key.empty() && e->key == parsed.key) return e;
  }
  for (auto it = extras_.begin(); it != extras_.end(); ++it) {
    if ((*it)->key == parsed.key) {
      EndpointPtr e = *it;
      extras_.erase(it);
      extras_.push_back(e);  // now the most recently used
      return e;
    }
  }
  if (!opens_channels_ || options_.max_extra_channels <= 0) return nullptr;
  while (extras_.size() >= static_cast<size_t>(options_.max_extra_channels)) {
    extras_.erase(extras_.begin());  // calls using it keep it alive
  }
  std::string target(address);
  std::shared_ptr<grpc::Channel> channel = MakeChannel(target, options_);
  extras_.push_back(
      std::make_shared<Endpoint>(std::move(target), std::move(channel)));
  extra_channels_opened_.fetch_add(1, std::memory_order_relaxed);
  return extras_.back();
}

void SessionClient::SetLeader(const EndpointPtr& endpoint) {
  if (leader_ == endpoint) return;
  leader_ = endpoint;
  leader_changes_.fetch_add(1, std::memory_order_relaxed);
}

void SessionClient::ForgetLeader(const Endpoint* endpoint) {
  absl::MutexLock lock(&mu_);
  if (leader_ == nullptr || leader_.get() != endpoint) return;
  leader_.reset();
  leaders_forgotten_.fetch_add(1, std::memory_order_relaxed);
}

absl::Status SessionClient::Invoke(Policy policy, Attempt attempt) {
  if (endpoints_.empty()) {
    return absl::FailedPreconditionError("SessionClient has no endpoints");
  }
  const SteadyTime call_timeout_end =
      After(SteadyClock::now(), options_.call_timeout);
  const SteadyTime call_deadline = std::min(call_timeout_end, policy.deadline);
  // The call's end is its call_timeout, not a shorter deadline of the
  // caller's: an attempt (or wait) given all of it had its whole budget.
  const bool ends_at_call_timeout = call_deadline == call_timeout_end;
  const int max_rounds = std::max(1, options_.max_attempts);
  absl::Duration backoff = options_.initial_backoff;
  absl::InlinedVector<const Endpoint*, 4> tried;
  std::vector<EndpointPtr> candidates = Candidates(policy.write, tried);
  absl::Status status;
  int sent = 0;
  // An attempt went out and its outcome is unknown: the call as a whole may
  // have taken effect, whatever a later attempt answers.
  bool maybe_applied = false;
  // `status` is the answer of an attempt, not one of this client's own.
  bool answered = false;
  for (int round = 1;; ++round) {
    // A non-idempotent call goes out only over a connected channel: an
    // attempt that fails before the request left could otherwise not be
    // told from one whose reply was lost.
    EndpointPtr endpoint =
        policy.idempotent
            ? candidates.front()
            : FirstConnected(candidates, call_deadline,
                             /*whole_call=*/round == 1 && ends_at_call_timeout);
    if (endpoint == nullptr) {
      status = NotSentError(candidates.size());
      answered = false;
    } else if (!policy.idempotent && TooLateToSend(call_deadline, options_)) {
      // The wait for a connected channel (after a backoff, in a later round)
      // took most of the call. Later rounds would only have less time: the
      // call ends here.
      const std::string what = absl::StrCat(
          absl::FormatDuration(
              std::max(absl::ZeroDuration(), Until(call_deadline))),
          " of the call was left after ",
          round == 1 ? "waiting" : "the backoff and waiting",
          " for a connected channel, under the quarter of min(deadline, "
          "call_timeout) a write is sent with");
      if (answered) {
        // The last round's server said nothing was done: its answer stays
        // (its reason, its RetryInfo), with why it was not sent again.
        absl::Status noted(
            status.code(),
            absl::StrCat(status.message(), " (not sent again: ", what, ")"));
        status.ForEachPayload(
            [&](absl::string_view url, const absl::Cord& value) {
              noted.SetPayload(url, value);
            });
        status = std::move(noted);
      } else {
        status = NotSent(
            absl::StrCat("not sent: ", what, "; the write did not happen"));
      }
      break;
    } else {
      grpc::ClientContext context;
      const SteadyTime full_deadline =
          After(SteadyClock::now(), options_.deadline);
      // Given its whole budget: its own deadline, or, the call's first
      // attempt with no wait before it, all of a call_timeout at or under
      // deadline (compared with the call's start, that was never "full",
      // and a paused node was never passed over). Not one that earlier
      // attempts or the caller's own deadline cut short.
      const bool full = full_deadline <= call_deadline ||
                        (round == 1 && endpoint == candidates.front() &&
                         ends_at_call_timeout);
      context.set_deadline(absl::ToChronoTime(
          WallDeadline(std::min(full_deadline, call_deadline))));
      attempts_.fetch_add(1, std::memory_order_relaxed);
      ++sent;
      tried.push_back(endpoint.get());
      status = FromGrpcStatus(attempt(endpoint->stub.get(), &context));
      answered = true;
      const bool cancelled_by_server = absl::IsCancelled(status);
      if (cancelled_by_server) {
        // This client never cancels an attempt, so the server did, which
        // gRPC does to a call that races Server::Shutdown (a node draining
        // for a restart): to the caller, the store was unavailable.
        status = absl::UnavailableError(absl::StrCat(
            "the server cancelled the call (a node shutting down?): ",
            status.message()));
      }
      if (absl::IsUnavailable(status) &&
          (NeverLeftTheClient(status) ||
           context.GetServerTrailingMetadata().count(grpc::string_ref(
               kNotProposedKey.data(), kNotProposedKey.size())) > 0)) {
        // Nothing was changed: as good as never sent.
        status.SetPayload(kNotSentPayload, absl::Cord("1"));
      }
      if (status.ok()) {
        endpoint->last_ok_ns.store(SteadyNowNs(), std::memory_order_relaxed);
        endpoint->passed_over_until_ns.store(0, std::memory_order_relaxed);
      } else {
        if ((full && absl::IsDeadlineExceeded(status)) ||
            ErrorReason(status) == "SHUTTING_DOWN" || cancelled_by_server) {
          // Not cut short by the caller's deadline: the endpoint let the
          // whole attempt deadline pass. Or it is draining to stop: it
          // stops only once no call came for a while, and followers still
          // name it leader until then; learned again from them, it was
          // every write's first stop, and its drain lasted its whole
          // grace period.
          PassOver(*endpoint);
        }
        // A read applies nothing: its codes stay as they came.
        if (policy.write && !IsNotSent(status) &&
            !RefusedByServerUnderLoad(status)) {
          maybe_applied = true;
        }
      }
      Observe(endpoint, policy.write, status, context);
    }
    // Any write, a create with its request_id too: a caller who never saw
    // the id (create_request_ids) retries with a new one, and makes a
    // second session.
    if (policy.write && absl::IsResourceExhausted(status) &&
        !RefusedByServerUnderLoad(status) &&
        !RefusedForItsSize(status, policy.request_bytes)) {
      status = AmbiguousResourceExhausted(status);
    }
    if (status.ok() || round >= max_rounds) break;
    // The server's kResourceExhausted: it queued nothing, so even a
    // non-idempotent write may go again.
    const bool retry = policy.idempotent
                           ? Retryable(status)
                           : endpoint == nullptr || IsNotSent(status) ||
                                 RefusedByServerUnderLoad(status);
    if (!retry) break;
    candidates = Candidates(policy.write, tried);
    // The server's RetryInfo, when it gave one, is the least to wait; but a
    // condition of that node alone (starting, holding no data yet) paces
    // only a retry to it: another node may answer now. It made a read that
    // met a starting node wait up to 1 s before trying a healthy one.
    const bool elsewhere =
        endpoint != nullptr && candidates.front() != endpoint;
    const absl::Duration server_delay =
        elsewhere && OfThatNodeAlone(status)
            ? absl::ZeroDuration()
            : std::min(RetryDelay(status).value_or(absl::ZeroDuration()),
                       options_.max_backoff);
    const absl::Duration delay = std::max(Jitter(backoff), server_delay);
    if (After(SteadyClock::now(), delay) >= call_deadline) break;
    // A write that would be under the send floor after the backoff would
    // not be sent then (TooLateToSend): it ends now, with the last answer.
    // The server's says nothing was done, and its RetryInfo when to come
    // back; sleeping first only delayed the call, to end it with a "not
    // sent" of this client's own.
    if (!policy.idempotent && TooLateToSend(call_deadline, options_, delay)) {
      break;
    }
    retries_.fetch_add(1, std::memory_order_relaxed);
    Backoff(delay, server_delay, *candidates.front()->channel);
    backoff =
        std::min(backoff * options_.backoff_multiplier, options_.max_backoff);
  }
  if (maybe_applied &&
      (IsNotSent(status) || RefusedByServerUnderLoad(status))) {
    // "Never sent" and the server's refusal under load promise the write
    // did not happen: only of the last attempt, and an earlier one, sent,
    // may have applied (a create retried with its request_id: the caller's
    // own retry, with a new id, would make a second session). The outcome
    // is unknown: kUnavailable without the not-sent mark, and with the
    // reason of an unknown outcome, not the last answer's (NOT_PROPOSED,
    // OVERLOADED: "nothing changed", which a caller would act on).
    absl::Status unknown(absl::StatusCode::kUnavailable,
                         absl::StrCat(status.message(),
                                      " (an earlier attempt was sent and may "
                                      "have applied)"));
    status.ForEachPayload([&](absl::string_view url, const absl::Cord& value) {
      if (url != kNotSentPayload) unknown.SetPayload(url, value);
    });
    google::rpc::ErrorInfo outcome_unknown;
    outcome_unknown.set_reason("NOT_COMMITTED");
    outcome_unknown.set_domain("sessiond.dev");
    SetErrorInfo(outcome_unknown, &unknown);
    status = std::move(unknown);
  }
  if (sent > 1 && Retryable(status) && !IsNotSent(status)) {
    absl::Status counted(
        status.code(),
        absl::StrCat(status.message(), " (after ", sent, " attempts)"));
    // The server's error details stay with it.
    status.ForEachPayload([&](absl::string_view url, const absl::Cord& value) {
      counted.SetPayload(url, value);
    });
    return counted;
  }
  return status;
}

// Each method copies the response out only on success; a failed attempt
// leaves `response` in an unspecified state, so it is cleared per attempt.
#define SESSIOND_CLIENT_CALL(Method, ...)                                  \
  v1::Method##Response response;                                           \
  Policy policy(__VA_ARGS__);                                              \
  policy.request_bytes = request.ByteSizeLong();                           \
  absl::Status status = Invoke(policy, [&](v1::SessionService::Stub* stub, \
                                           grpc::ClientContext* context) { \
    response.Clear();                                                      \
    return stub->Method(context, request, &response);                      \
  });                                                                      \
  if (!status.ok()) return status;                                         \
  return response

absl::StatusOr<v1::CreateSessionResponse> SessionClient::CreateSession(
    const v1::CreateSessionRequest& request) {
  // The server takes no request_id with a JWT (its token is not derived
  // from the id): such a create goes without one, sent at most once.
  if (request.request_id().empty() && options_.create_request_ids &&
      request.token_format() != v1::TOKEN_FORMAT_JWT) {
    v1::CreateSessionRequest with_id = request;
    with_id.set_request_id(NewRequestId());
    return DirectCreate(with_id);
  }
  // A create with a request_id is retried, so it is sent on its own: a
  // batch (CreateSessions) takes no request_id.
  if (options_.coalesce_creates && request.request_id().empty()) {
    return CoalescedCreate(request);
  }
  return DirectCreate(request);
}

absl::StatusOr<v1::CreateSessionResponse> SessionClient::DirectCreate(
    const v1::CreateSessionRequest& request, SteadyTime deadline) {
  // With a request_id a retry returns the first call's session and token:
  // as safe to repeat as a read.
  const bool idempotent = !request.request_id().empty();
  SESSIOND_CLIENT_CALL(CreateSession, /*write=*/true, idempotent, deadline);
}

absl::StatusOr<v1::CreateSessionsResponse> SessionClient::CreateSessions(
    const v1::CreateSessionsRequest& request) {
  return CreateSessionsBy(request, SteadyTime::max());
}

absl::StatusOr<v1::CreateSessionsResponse> SessionClient::CreateSessionsBy(
    const v1::CreateSessionsRequest& request, SteadyTime deadline) {
  SESSIOND_CLIENT_CALL(CreateSessions, /*write=*/true, /*idempotent=*/false,
                       deadline);
}

struct SessionClient::PendingCreate {
  const v1::CreateSessionRequest* request;
  // Its caller's call_timeout ends here: a batch it is in ends by then.
  SteadyTime deadline;
  absl::StatusOr<v1::CreateSessionResponse> result;
  bool done = false;
  // The batch was refused as invalid (nothing created): its caller sends it
  // by itself, within its own deadline.
  bool send_alone = false;
};

absl::StatusOr<v1::CreateSessionResponse> SessionClient::CoalescedCreate(
    const v1::CreateSessionRequest& request) {
  PendingCreate me{&request, After(SteadyClock::now(), options_.call_timeout),
                   absl::UnknownError("not sent")};
  std::vector<PendingCreate*> batch;
  {
    absl::MutexLock lock(&create_mu_);
    create_queue_.push_back(&me);
    // Until someone answers this create, or no batch is in flight and it
    // is this caller's turn to send one.
    struct Turn {
      const SessionClient* client;
      const PendingCreate* me;
      // Evaluated by Await with create_mu_ held.
      bool Ready() const ABSL_NO_THREAD_SAFETY_ANALYSIS {
        return me->done || !client->create_sending_;
      }
    };
    const Turn turn{this, &me};
    // This Abseil's Mutex waits on the wall clock: a step back during the
    // wait stretches it, until the batch in flight (bounded by its callers'
    // steady deadlines) ends and the check below runs on the steady clock.
    const bool my_turn = create_mu_.AwaitWithDeadline(
        absl::Condition(&turn, &Turn::Ready), WallDeadline(me.deadline));
    auto queued = std::find(create_queue_.begin(), create_queue_.end(), &me);
    if (!my_turn && queued != create_queue_.end()) {
      // call_timeout spent behind batches that got no answer in time.
      create_queue_.erase(queued);
      return NotSent(
          "CreateSession: not sent; the creates ahead of it (coalesce_creates) "
          "got no answer within call_timeout. Nothing was created");
    }
    if (!my_turn) {
      // Taken into a batch in flight, which ends by this caller's deadline
      // at the latest: its sender answers this one.
      create_mu_.Await(absl::Condition(&me.done));
    }
    if (!me.done) {
      create_queue_.erase(queued);
      // A batch ends by the earliest deadline in it. A caller that spent
      // most of its call_timeout behind earlier batches would cut everyone's
      // short (all of them then "outcome unknown", their sessions possibly
      // made for nobody, or all "not sent": TooLateToShare): it is answered
      // "not sent" instead, and may retry.
      const auto late = [] {
        return NotSent(
            "CreateSession: not sent; it waited behind earlier coalesced "
            "batches (coalesce_creates) until too little of its call_timeout "
            "was left. Nothing was created");
      };
      // Its turn passes to the next waiter (create_sending_ stays false).
      if (TooLateToSend(me.deadline, options_)) return late();
      create_sending_ = true;
      // This caller's create first: whichever waiter's turn it is, it may
      // not be the oldest (the lock does not wake them in order).
      batch.push_back(&me);
      size_t bytes = request.ByteSizeLong();
      const size_t max =
          static_cast<size_t>(std::max(1, options_.max_coalesced_creates));
      // Too near its deadline to share a batch, this caller sends its own
      // create alone, as a write without coalescing would; the queue waits
      // for the next turn, its time not tied to this one's.
      while (!TooLateToShare(me.deadline, options_) && !create_queue_.empty() &&
             batch.size() < max) {
        PendingCreate* next = create_queue_.front();
        // The reply carries each record, about as large as its request.
        const size_t next_bytes = next->request->ByteSizeLong();
        if (bytes + next_bytes > kMaxCoalescedRequestBytes) break;
        create_queue_.pop_front();
        if (TooLateToShare(next->deadline, options_)) {
          next->result = late();
          next->done = true;
          continue;
        }
        bytes += next_bytes;
        batch.push_back(next);
      }
    } else if (!me.send_alone) {
      return std::move(me.result);
    }
  }
  if (me.send_alone) return DirectCreate(request, me.deadline);
  // The batch ends by the earliest deadline in it: each caller's own
  // call_timeout bounds its call.
  SteadyTime deadline = SteadyTime::max();
  for (const PendingCreate* p : batch)
    deadline = std::min(deadline, p->deadline);
  if (batch.size() == 1) {
    me.result = DirectCreate(request, deadline);
  } else {
    v1::CreateSessionsRequest many;
    for (PendingCreate* p : batch) *many.add_requests() = *p->request;
    absl::StatusOr<v1::CreateSessionsResponse> answer =
        CreateSessionsBy(many, deadline);
    coalesced_batches_.fetch_add(1, std::memory_order_relaxed);
    coalesced_creates_.fetch_add(batch.size(), std::memory_order_relaxed);
    if (answer.ok() &&
        answer->responses_size() == static_cast<int>(batch.size())) {
      for (size_t i = 0; i < batch.size(); ++i) {
        batch[i]->result = std::move(*answer->mutable_responses(i));
      }
    } else if (RefusedForOneRequest(answer.status())) {
      // Nothing was created: one bad request fails only its own call. Each
      // caller sends its own, in parallel, within its own deadline.
      for (PendingCreate* p : batch) p->send_alone = true;
    } else {
      const absl::Status failed =
          answer.ok()
              ? absl::InternalError("CreateSessions answered the wrong count")
              : answer.status();
      for (PendingCreate* p : batch) p->result = failed;
    }
  }
  {
    absl::MutexLock lock(&create_mu_);
    for (PendingCreate* p : batch) p->done = true;
    create_sending_ = false;
  }
  if (me.send_alone) return DirectCreate(request, me.deadline);
  return std::move(me.result);
}

absl::StatusOr<v1::ValidateSessionResponse> SessionClient::ValidateSession(
    const v1::ValidateSessionRequest& request) {
  SESSIOND_CLIENT_CALL(ValidateSession, /*write=*/false, /*idempotent=*/true);
}

absl::StatusOr<v1::BatchValidateSessionsResponse>
SessionClient::BatchValidateSessions(
    const v1::BatchValidateSessionsRequest& request) {
  absl::StatusOr<v1::BatchValidateSessionsResponse> answer =
      [&]() -> absl::StatusOr<v1::BatchValidateSessionsResponse> {
    SESSIOND_CLIENT_CALL(BatchValidateSessions, /*write=*/false,
                         /*idempotent=*/true);
  }();
  // Answers go by position: another count (a server's bug) would pair a
  // token with another's outcome, or send an app's responses(i) out of
  // bounds.
  if (answer.ok() && answer->responses_size() != request.requests_size()) {
    return absl::InternalError(absl::StrCat(
        "BatchValidateSessions answered ", answer->responses_size(), " of ",
        request.requests_size(), " requests"));
  }
  return answer;
}

absl::StatusOr<v1::TouchSessionResponse> SessionClient::TouchSession(
    const v1::TouchSessionRequest& request) {
  // Safe to repeat: a touch only moves last_seen_at_ms forward (never back)
  // and refuses a revoked or expired session, so a repeat is just a later
  // touch.
  SESSIOND_CLIENT_CALL(TouchSession, /*write=*/true, /*idempotent=*/true);
}

absl::StatusOr<v1::UpdateSessionResponse> SessionClient::UpdateSession(
    const v1::UpdateSessionRequest& request) {
  SESSIOND_CLIENT_CALL(UpdateSession, /*write=*/true, /*idempotent=*/false);
}

absl::StatusOr<v1::RevokeSessionResponse> SessionClient::RevokeSession(
    const v1::RevokeSessionRequest& request) {
  SESSIOND_CLIENT_CALL(RevokeSession, /*write=*/true, /*idempotent=*/true);
}

absl::StatusOr<v1::ListUserSessionsResponse> SessionClient::ListUserSessions(
    const v1::ListUserSessionsRequest& request) {
  SESSIOND_CLIENT_CALL(ListUserSessions, /*write=*/false, /*idempotent=*/true);
}

absl::StatusOr<v1::RevokeUserSessionsResponse>
SessionClient::RevokeUserSessions(
    const v1::RevokeUserSessionsRequest& request) {
  SESSIOND_CLIENT_CALL(RevokeUserSessions, /*write=*/true,
                       /*idempotent=*/false);
}

absl::StatusOr<v1::GetSessionResponse> SessionClient::GetSession(
    const v1::GetSessionRequest& request) {
  SESSIOND_CLIENT_CALL(GetSession, /*write=*/false, /*idempotent=*/true);
}

absl::StatusOr<v1::RotateSessionTokenResponse>
SessionClient::RotateSessionToken(
    const v1::RotateSessionTokenRequest& request) {
  SESSIOND_CLIENT_CALL(RotateSessionToken, /*write=*/true,
                       /*idempotent=*/false);
}

#undef SESSIOND_CLIENT_CALL

absl::StatusOr<v1::ValidateSessionResponse> SessionClient::Validate(
    absl::string_view token, bool touch) {
  v1::ValidateSessionRequest request;
  request.set_token(std::string(token));
  request.set_touch(touch);
  return ValidateSession(request);
}

std::unique_ptr<ValidateStream> SessionClient::OpenValidateStream() {
  if (endpoints_.empty()) {
    return std::unique_ptr<ValidateStream>(new ValidateStream(
        absl::FailedPreconditionError("SessionClient has no endpoints")));
  }
  // Over a connected channel only, as a call: gRPC's stream constructor
  // waits for its first message to leave, on a channel that only says
  // CONNECTING (a paused or blackholed node) until gRPC gives up on it,
  // about 20 s, and the caller has no stream yet to cancel.
  const std::vector<EndpointPtr> candidates = Candidates(/*write=*/false, {});
  const EndpointPtr endpoint = FirstConnected(
      candidates, After(SteadyClock::now(), options_.call_timeout),
      /*whole_call=*/true);
  if (endpoint == nullptr) {
    return std::unique_ptr<ValidateStream>(new ValidateStream(
        NotSent(absl::StrCat("stream not opened: none of ", candidates.size(),
                             " endpoint(s) had a connected channel in time"))));
  }
  attempts_.fetch_add(1, std::memory_order_relaxed);
  // Corked: the stream's metadata leaves with its first request. Otherwise
  // the constructor waits for it to leave, which a connection already
  // carrying the server's max_concurrent_streams holds back until one
  // ends: the caller blocked, with no stream to Cancel().
  auto context = std::make_unique<grpc::ClientContext>();
  context->set_initial_metadata_corked(true);
  return std::make_unique<ValidateStream>(std::move(context),
                                          endpoint->stub.get());
}

SessionClient::Stats SessionClient::stats() const {
  Stats stats;
  stats.attempts = attempts_.load(std::memory_order_relaxed);
  stats.retries = retries_.load(std::memory_order_relaxed);
  stats.leader_changes = leader_changes_.load(std::memory_order_relaxed);
  stats.leaders_forgotten = leaders_forgotten_.load(std::memory_order_relaxed);
  stats.leader_hints_ignored =
      leader_hints_ignored_.load(std::memory_order_relaxed);
  stats.endpoints_skipped = endpoints_skipped_.load(std::memory_order_relaxed);
  stats.coalesced_batches = coalesced_batches_.load(std::memory_order_relaxed);
  stats.coalesced_creates = coalesced_creates_.load(std::memory_order_relaxed);
  stats.extra_channels_opened =
      extra_channels_opened_.load(std::memory_order_relaxed);
  return stats;
}

std::string SessionClient::leader() const {
  absl::MutexLock lock(&mu_);
  return leader_ == nullptr ? "" : leader_->address;
}

ValidateStream::ValidateStream(std::unique_ptr<grpc::ClientContext> context,
                               v1::SessionService::Stub* stub)
    : context_(std::move(context)),
      stream_(stub->StreamValidateSessions(context_.get())) {}

ValidateStream::ValidateStream(absl::Status broken)
    : context_(std::make_unique<grpc::ClientContext>()),
      finished_(true),
      final_status_(std::move(broken)) {}

ValidateStream::~ValidateStream() {
  if (!finished_) (void)Abandon(absl::OkStatus());
}

absl::Status ValidateStream::Abandon(absl::Status why) {
  context_->TryCancel();
  (void)stream_->Finish();
  finished_ = true;
  final_status_ = std::move(why);
  return final_status_;
}

absl::Status ValidateStream::FinishBroken() {
  if (!finished_) {
    finished_ = true;
    final_status_ = FromGrpcStatus(stream_->Finish());
    if (final_status_.ok()) {
      // The server ended the stream cleanly while an answer was owed: the
      // store did not answer, which is never an outcome. Kept, so Close
      // says so too.
      final_status_ =
          absl::UnavailableError("validate stream closed by the server");
    }
  }
  if (final_status_.ok()) {
    return absl::FailedPreconditionError(
        "validate stream already closed; open another");
  }
  return final_status_;
}

absl::StatusOr<v1::ValidateSessionResponse> ValidateStream::Validate(
    const v1::ValidateSessionRequest& request) {
  if (finished_) return FinishBroken();
  v1::ValidateSessionRequest numbered = request;
  if (numbered.request_id() == 0) numbered.set_request_id(next_request_id_++);
  wrote_ = true;
  if (!stream_->Write(numbered)) return FinishBroken();
  v1::ValidateSessionResponse response;
  if (!stream_->Read(&response)) return FinishBroken();
  if (response.request_id() != numbered.request_id()) {
    // Out of step: every later answer would be matched with the wrong
    // request (another token's outcome). The stream ends here, and every
    // later call returns this.
    return Abandon(absl::InternalError(
        absl::StrCat("validate stream answered request ", response.request_id(),
                     " while request ", numbered.request_id(),
                     " was outstanding; the stream is closed, open another")));
  }
  return response;
}

absl::Status ValidateStream::Close() {
  if (finished_) return final_status_;
  if (!wrote_) {
    // Its metadata is corked until the first Write, and a half-close does
    // not send it: WritesDone would wait on a call that never started.
    // Nothing is owed on a stream that asked nothing.
    return Abandon(absl::OkStatus());
  }
  stream_->WritesDone();
  v1::ValidateSessionResponse ignored;
  // Bounded: the server owes no answers once every Validate has returned.
  for (int i = 0; i < 1000 && stream_->Read(&ignored); ++i) {
  }
  finished_ = true;
  final_status_ = FromGrpcStatus(stream_->Finish());
  return final_status_;
}

}  // namespace sessiond::client
