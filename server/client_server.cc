// Copyright sessiond authors. Licensed under the Apache License 2.0.
#include "server/client_server.h"

#include <grpc/grpc.h>
#include <grpcpp/resource_quota.h>
#include <pthread.h>

#include <algorithm>
#include <chrono>
#include <limits>
#include <utility>

#include "absl/time/clock.h"
#include "server/limits.h"

namespace sessiond::server {

ClientServerSettings ClientServerSettingsFor(
    const SessionServiceOptions& options) {
  ClientServerSettings settings;
  const int64_t max_request = MaxRequestMessageBytes(
      options.limits, options.max_batch_create, options.max_batch_validate);
  settings.max_receive_message_bytes = static_cast<int>(
      std::min<int64_t>(max_request, std::numeric_limits<int>::max()));
  return settings;
}

void ConfigureClientServer(const ClientServerSettings& settings,
                           grpc::ServerBuilder* builder) {
  builder->SetMaxReceiveMessageSize(settings.max_receive_message_bytes);
  builder->AddChannelArgument(GRPC_ARG_MAX_CONCURRENT_STREAMS,
                              settings.max_concurrent_streams_per_connection);
  builder->AddChannelArgument(GRPC_ARG_HTTP2_BDP_PROBE, 0);
  builder->AddChannelArgument(GRPC_ARG_KEEPALIVE_TIME_MS,
                              settings.keepalive_time_ms);
  builder->AddChannelArgument(GRPC_ARG_KEEPALIVE_TIMEOUT_MS,
                              settings.keepalive_timeout_ms);
  builder->AddChannelArgument(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  builder->AddChannelArgument(
      GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS,
      settings.min_client_ping_ms);
  builder->AddChannelArgument(GRPC_ARG_MAX_CONNECTION_AGE_MS,
                              settings.max_connection_age_ms);
  grpc::ResourceQuota quota("sessiond-client-api");
  quota.Resize(settings.memory_quota_bytes);
  quota.SetMaxThreads(settings.max_sync_threads);
  builder->SetResourceQuota(quota);
}

SocketPoller::SocketPoller(grpc::ServerBuilder* builder,
                           std::shared_ptr<StreamActivity> activity)
    : activity_(std::move(activity)),
      cq_(builder->AddCompletionQueue(/*is_frequently_polled=*/true)) {}

SocketPoller::~SocketPoller() {
  stop_.store(true);
  cq_->Shutdown();
  if (thread_.joinable()) thread_.join();
  void* tag = nullptr;
  bool ok = false;
  while (cq_->Next(&tag, &ok)) {
  }
}

void SocketPoller::Start() {
  thread_ = std::thread([this] {
    pthread_setname_np(pthread_self(), "sd-grpc-poll");
    Loop();
  });
}

void SocketPoller::Loop() {
  void* tag = nullptr;
  bool ok = false;
  while (!stop_.load()) {
    if (activity_->TakeActive() < kBusyStreams) {
      absl::SleepFor(kInterval);
      continue;
    }
    // Polls until the interval ends (the queue itself never gets an
    // event); SHUTDOWN once the destructor shut it down.
    if (cq_->AsyncNext(&tag, &ok,
                       std::chrono::system_clock::now() +
                           absl::ToChronoMilliseconds(kInterval)) ==
        grpc::CompletionQueue::SHUTDOWN) {
      return;
    }
  }
}

}  // namespace sessiond::server
