// Copyright sessiond authors. Licensed under the Apache License 2.0.
#include "tools/cluster_probe.h"

#include <grpcpp/client_context.h>
#include <grpcpp/create_channel.h>
#include <grpcpp/security/credentials.h>
#include <grpcpp/support/channel_arguments.h>

#include <chrono>
#include <optional>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace sessiond::tools {

ClusterProbe::ClusterProbe(std::vector<std::string> addresses)
    : addresses_(std::move(addresses)) {}

v1::AdminService::Stub* ClusterProbe::StubFor(const std::string& address) {
  auto it = stubs_.find(address);
  if (it == stubs_.end()) {
    grpc::ChannelArguments args;
    args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
    args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 50);
    args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, 50);
    args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 200);
    // A developer's http_proxy must not catch 127.0.0.1.
    args.SetInt(GRPC_ARG_ENABLE_HTTP_PROXY, 0);
    auto channel = grpc::CreateCustomChannel(
        address, grpc::InsecureChannelCredentials(), args);
    it = stubs_.emplace(address, v1::AdminService::NewStub(channel)).first;
  }
  return it->second.get();
}

absl::StatusOr<v1::ClusterStatusResponse> ClusterProbe::Ask(
    const std::string& address, absl::Duration timeout) {
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() +
                       absl::ToChronoMilliseconds(timeout));
  v1::ClusterStatusResponse response;
  const grpc::Status status = StubFor(address)->ClusterStatus(
      &context, v1::ClusterStatusRequest(), &response);
  if (!status.ok()) {
    // A fresh channel next time: one in reconnect backoff would fail fast
    // for a while after the node is back.
    if (status.error_code() == grpc::StatusCode::UNAVAILABLE) {
      stubs_.erase(address);
    }
    return absl::Status(static_cast<absl::StatusCode>(status.error_code()),
                        absl::StrCat(address, ": ", status.error_message()));
  }
  return response;
}

absl::StatusOr<v1::ClusterStatusResponse> ClusterProbe::Best(
    absl::Duration timeout) {
  std::optional<v1::ClusterStatusResponse> first;
  absl::Status last = absl::UnavailableError("no address to ask");
  for (const std::string& address : addresses_) {
    absl::StatusOr<v1::ClusterStatusResponse> r = Ask(address, timeout);
    if (!r.ok()) {
      last = r.status();
      continue;
    }
    if (LeaderOf(*r) != nullptr) return r;
    if (!first) first = std::move(*r);
  }
  if (first) return *std::move(first);
  return last;
}

const v1::MemberStatus* LeaderOf(const v1::ClusterStatusResponse& status) {
  for (const v1::MemberStatus& m : status.members()) {
    if (m.node_id() == status.leader() && m.reachable() &&
        m.role() == "leader") {
      return &m;
    }
  }
  return nullptr;
}

const v1::MemberStatus* MemberOf(const v1::ClusterStatusResponse& status,
                                 uint64_t node_id) {
  for (const v1::MemberStatus& m : status.members()) {
    if (m.node_id() == node_id) return &m;
  }
  return nullptr;
}

}  // namespace sessiond::tools
