// Copyright sessiond authors. Licensed under the Apache License 2.0.
#include "server/rpc_metrics.h"

#include <google/protobuf/descriptor.h>

#include <chrono>
#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace sessiond::server {
namespace {

using grpc::experimental::InterceptionHookPoints;

// gRPC's status codes are absl's, number for number.
std::string CodeName(int code) {
  return absl::StatusCodeToString(static_cast<absl::StatusCode>(code));
}

void RecordCall(RpcMetrics::Method* method,
                std::chrono::steady_clock::time_point start,
                grpc::StatusCode code) {
  const size_t i = static_cast<size_t>(code) < method->by_code.size()
                       ? static_cast<size_t>(code)
                       : static_cast<size_t>(grpc::StatusCode::UNKNOWN);
  method->by_code[i].Observe(std::chrono::steady_clock::now() - start);
}

// One per intercepted (unary) call; gRPC creates it when the call starts and
// destroys it with the call. Runs on whichever thread starts each batch of
// the call.
class CallTimer : public grpc::experimental::Interceptor {
 public:
  explicit CallTimer(RpcMetrics::Method* method)
      : method_(method), start_(std::chrono::steady_clock::now()) {}

  ~CallTimer() override {
    if (!recorded_) Record(grpc::StatusCode::CANCELLED);
  }

  void Intercept(grpc::experimental::InterceptorBatchMethods* batch) override {
    if (!recorded_ && batch->QueryInterceptionHookPoint(
                          InterceptionHookPoints::PRE_SEND_STATUS)) {
      Record(batch->GetSendStatus().error_code());
    }
    batch->Proceed();
  }

 private:
  void Record(grpc::StatusCode code) {
    recorded_ = true;
    RecordCall(method_, start_, code);
  }

  RpcMetrics::Method* const method_;  // owned by RpcMetrics, outlives calls
  const std::chrono::steady_clock::time_point start_;
  // gRPC runs a call's batches one after another, never two at once.
  bool recorded_ = false;
};

}  // namespace

class RpcMetrics::Factory
    : public grpc::experimental::ServerInterceptorFactoryInterface {
 public:
  explicit Factory(const RpcMetrics* metrics) : metrics_(metrics) {}

  grpc::experimental::Interceptor* CreateServerInterceptor(
      grpc::experimental::ServerRpcInfo* info) override {
    const char* name = info->method();
    if (name == nullptr) return nullptr;
    RpcMetrics::Method* method = metrics_->Find(name);
    // Streams are never intercepted: the extra hop would cost every
    // message (see the class comment).
    if (method == nullptr || !method->intercepted || method->streaming) {
      return nullptr;
    }
    return new CallTimer(method);
  }

 private:
  const RpcMetrics* const metrics_;  // outlives the servers
};

RpcMetrics::RpcMetrics(const std::vector<std::string>& intercepted,
                       const std::vector<std::string>& by_handlers) {
  const google::protobuf::DescriptorPool* pool =
      google::protobuf::DescriptorPool::generated_pool();
  auto add = [&](const std::string& service_name, bool by_interceptor) {
    const google::protobuf::ServiceDescriptor* service =
        pool->FindServiceByName(service_name);
    if (service == nullptr) return;
    for (int i = 0; i < service->method_count(); ++i) {
      const google::protobuf::MethodDescriptor* m = service->method(i);
      auto method = std::make_unique<Method>();
      method->service = service->full_name();
      method->name = m->name();
      method->streaming = m->client_streaming() || m->server_streaming();
      method->intercepted = by_interceptor;
      const std::string key =
          absl::StrCat("/", service->full_name(), "/", m->name());
      if (methods_.contains(key)) continue;
      ordered_.push_back(method.get());
      methods_.emplace(key, std::move(method));
    }
  };
  for (const std::string& name : intercepted) add(name, true);
  for (const std::string& name : by_handlers) add(name, false);
}

RpcMetrics::Method* RpcMetrics::Find(absl::string_view full_method) const {
  const auto it = methods_.find(full_method);
  return it == methods_.end() ? nullptr : it->second.get();
}

void RpcTimer::Finish(grpc::StatusCode code) {
  if (method_ == nullptr || finished_) return;
  finished_ = true;
  RecordCall(method_, start_, code);
}

void RpcMetrics::Instrument(grpc::ServerBuilder* builder) {
  std::vector<
      std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>>
      creators;
  creators.push_back(std::make_unique<Factory>(this));
  builder->experimental().SetInterceptorCreators(std::move(creators));
}

void RpcMetrics::Collect(metrics::ExpositionWriter* writer) const {
  using metrics::MetricType;
  // Read each histogram once, so the counter and the histogram agree.
  struct Series {
    const Method* method;
    int code;
    metrics::HistogramSnapshot snapshot;
  };
  std::vector<Series> series;
  for (const Method* m : ordered_) {
    for (size_t code = 0; code < m->by_code.size(); ++code) {
      if (m->by_code[code].count() == 0) continue;
      series.push_back({m, static_cast<int>(code), m->by_code[code].Read()});
    }
  }
  auto labels = [](const Series& s) {
    return metrics::Labels{{"service", s.method->service},
                           {"method", s.method->name},
                           {"code", CodeName(s.code)}};
  };
  if (writer->BeginFamily("sessiond_grpc_server_handled_total",
                          MetricType::kCounter,
                          "gRPC calls completed, by method and status code "
                          "(a stream counts once, when it ends)")) {
    for (const Series& s : series) {
      writer->SampleCount(labels(s), s.snapshot.count);
    }
  }
  if (writer->BeginFamily("sessiond_grpc_server_handling_seconds",
                          MetricType::kHistogram,
                          "Time from a gRPC call's start to its status, by "
                          "method and status code (a stream: its lifetime)")) {
    for (const Series& s : series) writer->Histogram(labels(s), s.snapshot);
  }
  auto stream_family = [&](const char* name, const char* help,
                           metrics::Counter Method::*counter) {
    if (!writer->BeginFamily(name, MetricType::kCounter, help)) return;
    for (const Method* m : ordered_) {
      if (!m->streaming || (m->*counter).value() == 0) continue;
      writer->SampleCount({{"service", m->service}, {"method", m->name}},
                          (m->*counter).value());
    }
  };
  stream_family("sessiond_grpc_server_stream_messages_received_total",
                "Messages received on streaming gRPC calls, by method",
                &Method::messages_received);
  stream_family("sessiond_grpc_server_stream_messages_sent_total",
                "Messages sent on streaming gRPC calls, by method",
                &Method::messages_sent);
}

}  // namespace sessiond::server
