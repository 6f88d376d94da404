// Copyright sessiond authors. Licensed under the Apache License 2.0.
#include "tools/sessionctl_connection.h"

#include <grpcpp/create_channel.h>
#include <grpcpp/security/credentials.h>
#include <grpcpp/support/channel_arguments.h>

#include <algorithm>
#include <optional>
#include <set>
#include <string>
#include <utility>

#include "absl/strings/cord.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "client/grpc_status.h"
#include "client/tls.h"
#include "tools/cluster_probe.h"
#include "tools/sessionctl_errors.h"
#include "tools/sessionctl_explain.h"

namespace sessiond::sessionctl {
namespace {

// Every channel sessionctl opens: its own connection, reconnecting fast
// (status --watch sees a restarted node at once), never through an HTTP
// proxy (a developer's http_proxy must not catch 127.0.0.1; the client
// ports are on a private network).
grpc::ChannelArguments ChannelArgs() {
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  // Not GRPC_ARG_MIN_RECONNECT_BACKOFF_MS: gRPC also takes it as the
  // minimum time a connection attempt may take, and cuts slower handshakes
  // ("tcp handshaker shutdown") on a busy machine.
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 1000);
  args.SetInt(GRPC_ARG_ENABLE_HTTP_PROXY, 0);
  return args;
}

constexpr char kNotProposedPayload[] = "sessionctl.dev/not-proposed";

std::optional<std::string> TrailingValue(const grpc::ClientContext& context,
                                         const std::string& key) {
  const auto& metadata = context.GetServerTrailingMetadata();
  auto it = metadata.find(key);
  if (it == metadata.end()) return std::nullopt;
  return std::string(it->second.data(), it->second.size());
}

}  // namespace

absl::StatusOr<Security> SecurityFor(const Settings& settings) {
  Security security;
  if (!settings.tls()) return security;
  client::TlsOptions tls;
  tls.ca_file = settings.tls_ca.path;
  tls.cert_file = settings.tls_cert.path;
  tls.key_file = settings.tls_key.path;
  std::vector<std::string> presented;
  if (!settings.tls_cert.empty()) {
    presented.push_back(absl::StrCat("client certificate ",
                                     settings.tls_cert.path, " (",
                                     settings.tls_cert.source, ")"));
  } else {
    presented.push_back("no client certificate");
  }
  if (!settings.token_file.empty()) {
    absl::StatusOr<std::string> token =
        client::ReadTokenFile(settings.token_file.path);
    if (!token.ok()) {
      return UsageError(absl::StrCat(settings.token_file.source, ": ",
                                     token.status().message()));
    }
    tls.bearer_token = *std::move(token);
    presented.push_back(absl::StrCat("bearer token from ",
                                     settings.token_file.path, " (",
                                     settings.token_file.source, ")"));
  }
  presented.push_back(absl::StrCat("CA ", settings.tls_ca.path, " (",
                                   settings.tls_ca.source, ")"));
  absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> credentials =
      client::MakeTlsCredentials(tls);
  if (!credentials.ok()) {
    const absl::string_view message = credentials.status().message();
    const FileSetting& at_fault =
        absl::StartsWith(message, "cert_file")  ? settings.tls_cert
        : absl::StartsWith(message, "key_file") ? settings.tls_key
                                                : settings.tls_ca;
    return UsageError(absl::StrCat(at_fault.source, ": ", message));
  }
  security.credentials = *std::move(credentials);
  security.presented = absl::StrJoin(presented, ", ");
  return security;
}

Connection::Connection(std::vector<std::string> endpoints, std::string source,
                       absl::Duration timeout, Security security)
    : endpoints_(std::move(endpoints)),
      source_(std::move(source)),
      timeout_(timeout),
      security_(std::move(security)) {}

Connection::~Connection() = default;

std::shared_ptr<grpc::Channel> Connection::NewChannel(
    const std::string& address) const {
  return grpc::CreateCustomChannel(address,
                                   security_.tls()
                                       ? security_.credentials
                                       : grpc::InsecureChannelCredentials(),
                                   ChannelArgs());
}

std::shared_ptr<grpc::Channel> Connection::ChannelTo(
    const std::string& address) {
  auto it = channels_.find(address);
  if (it == channels_.end()) {
    it = channels_.emplace(address, NewChannel(address)).first;
  }
  return it->second;
}

v1::AdminService::Stub& Connection::AdminStub(const std::string& address) {
  auto it = admin_.find(address);
  if (it == admin_.end()) {
    it = admin_.emplace(address, v1::AdminService::NewStub(ChannelTo(address)))
             .first;
  }
  return *it->second;
}

grpc::Status Connection::CallAdmin(const std::string& address, AdminCall call,
                                   grpc::ClientContext* context) {
  context->set_deadline(absl::ToChronoTime(absl::Now() + timeout_));
  return call(AdminStub(address), *context);
}

std::string Connection::Why(const std::string& address) {
  // A channel of its own: the shared one may be in reconnect backoff,
  // whose error says nothing of the cause.
  auto stub = v1::AdminService::NewStub(NewChannel(address));
  grpc::ClientContext context;
  context.set_deadline(
      absl::ToChronoTime(absl::Now() + absl::Milliseconds(500)));
  v1::ClusterStatusResponse ignored;
  const grpc::Status s =
      stub->ClusterStatus(&context, v1::ClusterStatusRequest(), &ignored);
  if (s.ok()) return "it answers now (it was not connected in time)";
  return s.error_message();
}

absl::StatusOr<std::string> Connection::Reach() {
  const absl::Time deadline = absl::Now() + timeout_;
  std::vector<std::shared_ptr<grpc::Channel>> channels;
  for (const std::string& address : endpoints_) {
    channels.push_back(ChannelTo(address));
    channels.back()->GetState(/*try_to_connect=*/true);
  }
  std::vector<bool> failed(channels.size(), false);
  while (true) {
    size_t failures = 0;
    std::vector<grpc_connectivity_state> states;
    for (size_t i = 0; i < channels.size(); ++i) {
      states.push_back(channels[i]->GetState(/*try_to_connect=*/true));
      if (states[i] == GRPC_CHANNEL_READY) return endpoints_[i];
      if (states[i] == GRPC_CHANNEL_TRANSIENT_FAILURE ||
          states[i] == GRPC_CHANNEL_SHUTDOWN) {
        failed[i] = true;
      }
      if (failed[i]) ++failures;
    }
    if (failures == channels.size() || absl::Now() >= deadline) break;
    // Waiting on a channel polls gRPC's I/O, which a sleep would not: a
    // blocking client's connection makes progress only while some thread
    // waits on gRPC (else only through its backup poller, every 5 s).
    for (size_t i = 0; i < channels.size(); ++i) {
      channels[i]->WaitForStateChange(
          states[i], absl::ToChronoTime(std::min(
                         deadline, absl::Now() + absl::Milliseconds(20))));
    }
  }
  std::vector<std::string> reasons;
  for (size_t i = 0; i < channels.size(); ++i) {
    std::string why = Why(endpoints_[i]);
    if (!failed[i] && absl::StrContains(why, "Deadline Exceeded")) {
      why =
          absl::StrCat("no connection within ", absl::FormatDuration(timeout_),
                       " (a firewall, a wrong address, or a paused "
                       "process?)");
    }
    reasons.push_back(absl::StrCat("  ", endpoints_[i], ": ", why));
  }
  return UnreachableError(absl::StrCat(
      "cannot reach sessiond at any endpoint (from ", source_, "):\n",
      absl::StrJoin(reasons, "\n"),
      "\nCheck that sessiond runs there and serves its client port "
      "(--listen, not the peer port), and the endpoints: --endpoints, "
      "SESSIOND_ENDPOINTS or the config file, in that order.",
      security_.tls()
          ? absl::StrCat(
                "\nsessionctl speaks TLS (", security_.presented,
                "): the TLS handshake may have failed. Check that the CA is "
                "the one that signed the nodes' certificates, that a client "
                "certificate is given (--tls-cert and --tls-key) if the "
                "cluster requires one (sessiond --tls_client_auth require), "
                "that it was signed by the cluster's CA, and that each "
                "node's certificate names the address dialled (an IP or DNS "
                "subject alternative name).")
          : "\nIf the cluster serves TLS, give --tls-ca (and a client "
            "certificate or --token-file)."));
}

absl::StatusOr<Connection::StatusAnswer> Connection::ClusterStatus(
    bool with_digests) {
  absl::StatusOr<std::string> reached = Reach();
  if (!reached.ok()) return reached.status();
  // The reached endpoint first, then the others in order.
  std::vector<std::string> order = {*reached};
  for (const std::string& e : endpoints_) {
    if (e != *reached) order.push_back(e);
  }
  std::optional<StatusAnswer> first;
  std::vector<std::string> errors;
  size_t peer_ports = 0;  // of the errors
  v1::ClusterStatusRequest request;
  request.set_with_digests(with_digests);
  for (const std::string& address : order) {
    StatusAnswer answer;
    answer.endpoint = address;
    grpc::ClientContext context;
    const grpc::Status s = CallAdmin(
        address,
        [&](v1::AdminService::Stub& stub, grpc::ClientContext& c) {
          return stub.ClusterStatus(&c, request, &answer.response);
        },
        &context);
    if (s.error_code() == grpc::StatusCode::UNAUTHENTICATED ||
        s.error_code() == grpc::StatusCode::PERMISSION_DENIED) {
      // Every node has the same role file: the others would refuse too.
      return client::FromGrpcStatus(s);
    }
    if (!s.ok()) {
      const absl::Status read = client::FromGrpcStatus(s);
      errors.push_back(absl::StrCat(
          "  ", address, ": ",
          LooksLikeAPeerPort(read) ? kPeerPortAdvice : s.error_message()));
      peer_ports += LooksLikeAPeerPort(read) ? 1 : 0;
      continue;
    }
    if (tools::LeaderOf(answer.response) != nullptr) return answer;
    if (!first) first = std::move(answer);
  }
  if (first) return *std::move(first);
  if (!errors.empty() && peer_ports == errors.size()) {
    return UsageError(absl::StrCat("no endpoint answered ClusterStatus (from ",
                                   source_, "):\n",
                                   absl::StrJoin(errors, "\n")));
  }
  return UnreachableError(absl::StrCat(
      "no endpoint answered ClusterStatus (from ", source_, "):\n",
      absl::StrJoin(errors, "\n"),
      "\nCheck that sessiond runs there, and retry with a longer --timeout "
      "if it is busy."));
}

absl::Status Connection::AdminChange(AdminCall call, std::string* endpoint) {
  absl::StatusOr<std::string> reached = Reach();
  if (!reached.ok()) return reached.status();
  struct Answer {
    grpc::Status status;
    bool not_proposed = false;
    std::optional<std::string> leader;
  };
  auto send = [&](const std::string& address) {
    grpc::ClientContext context;
    Answer answer;
    answer.status = CallAdmin(address, call, &context);
    // Whatever the code: an audited call whose audit entry found no leader
    // by the deadline ends DEADLINE_EXCEEDED, having done nothing.
    answer.not_proposed =
        !answer.status.ok() &&
        TrailingValue(context, "sessiond-not-proposed").has_value();
    answer.leader = TrailingValue(context, "sessiond-leader");
    return answer;
  };
  std::set<std::string> tried = {*reached};
  *endpoint = *reached;
  Answer answer = send(*endpoint);
  // Nothing was proposed, so sending it elsewhere is safe: to the leader the
  // node names, else to another endpoint connected now. A node cut off from
  // the quorum (or just restarted) names no leader, and every retry went to
  // it again while the other endpoints reached one.
  while (answer.not_proposed) {
    std::optional<std::string> next;
    if (answer.leader.has_value() && !answer.leader->empty() &&
        tried.count(*answer.leader) == 0) {
      next = *answer.leader;
    } else {
      for (const std::string& address : endpoints_) {
        if (tried.count(address) == 0 &&
            ChannelTo(address)->GetState(/*try_to_connect=*/false) ==
                GRPC_CHANNEL_READY) {
          next = address;
          break;
        }
      }
    }
    if (!next.has_value()) break;
    tried.insert(*next);
    *endpoint = *next;
    answer = send(*endpoint);
  }
  absl::Status status = client::FromGrpcStatus(answer.status);
  if (answer.not_proposed) {
    status.SetPayload(kNotProposedPayload, absl::Cord("1"));
  }
  return status;
}

absl::Status Connection::AdminCallTo(const std::string& address,
                                     AdminCall call) {
  grpc::ClientContext context;
  return client::FromGrpcStatus(CallAdmin(address, call, &context));
}

client::SessionClient& Connection::sessions() {
  if (sessions_ == nullptr) {
    client::SessionClientOptions options;
    options.call_timeout = timeout_;
    options.deadline = std::max(timeout_ / 2, absl::Milliseconds(100));
    options.connect_timeout = std::min(timeout_ / 2, absl::Seconds(1));
    options.channel_args = ChannelArgs();
    options.credentials = security_.credentials;
    sessions_ = client::SessionClient::Connect(endpoints_, options);
  }
  return *sessions_;
}

absl::Status Connection::Diagnose(const absl::Status& status, bool idempotent) {
  const bool nothing_sent =
      absl::IsUnavailable(status) && (idempotent || client::IsNotSent(status));
  const bool timed_out = idempotent && absl::IsDeadlineExceeded(status);
  if (!nothing_sent && !timed_out) return status;
  absl::StatusOr<std::string> reached = Reach();
  if (!reached.ok()) return reached.status();
  return status;
}

absl::Status Connection::NotAllowed(const absl::Status& status) const {
  if (!absl::IsUnauthenticated(status) && !absl::IsPermissionDenied(status)) {
    return status;
  }
  if (ExitCodeFor(status) == kExitNotAllowed) return status;
  const std::string presented =
      security_.tls() ? security_.presented
                      : "nothing: no TLS settings, plaintext (--tls-ca, "
                        "--tls-cert, --tls-key, --token-file are unset)";
  const std::string check =
      absl::IsUnauthenticated(status)
          ? "The cluster found no identity in what was presented. Give a "
            "client certificate its CA signed (--tls-cert and --tls-key), "
            "or a token file (--token-file) whose token's SHA-256 is on a "
            "token_sha256 line of the role file (sessiond --auth_file); "
            "check that the token file holds the token itself."
          : "The identity (the certificate's CN or a subject alternative "
            "name, or the identity the role file gives the token) lacks the "
            "role the call needs: admin for the AdminService (status, "
            "members, leader, keys, ...), app or reader for sessions. Check "
            "the role file (sessiond --auth_file) on every node, and that "
            "the certificate or token is the one you meant (a token, when "
            "given, is used instead of the certificate).";
  // Explain() already put the code in most messages.
  const std::string code = absl::StatusCodeToString(status.code());
  return NotAllowedError(
      status.code(),
      absl::StrCat("the cluster refused sessionctl's identity: ",
                   absl::StrContains(status.message(), code)
                       ? ""
                       : absl::StrCat(code, ": "),
                   status.message(), "\nPresented: ", presented, ".\n", check));
}

bool NotProposed(const absl::Status& status) {
  return client::IsNotSent(status) ||
         status.GetPayload(kNotProposedPayload).has_value();
}

}  // namespace sessiond::sessionctl
