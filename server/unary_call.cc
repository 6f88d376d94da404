// Copyright sessiond authors. Licensed under the Apache License 2.0.
#include "server/unary_call.h"

#include <grpcpp/support/proto_buffer_reader.h>
#include <grpcpp/support/proto_buffer_writer.h>

#include <chrono>

#include "absl/strings/str_cat.h"
#include "server/grpc_status.h"

namespace sessiond::server {

absl::Status ParseRequest(const grpc::ByteBuffer& buffer,
                          google::protobuf::Message* request) {
  grpc::ByteBuffer copy(buffer);  // shares the slices; the reader consumes
  grpc::ProtoBufferReader reader(&copy);
  if (!reader.status().ok() || !request->ParseFromZeroCopyStream(&reader)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "request: ", buffer.Length(), " bytes that are not a valid ",
        request->GetDescriptor()->full_name(),
        " (malformed protobuf, or a string field that is not UTF-8; "
        "check the client's generated code matches sessiond's .proto)"));
  }
  return absl::OkStatus();
}

absl::Status SerializeResponse(const google::protobuf::Message& response,
                               grpc::ByteBuffer* buffer) {
  bool own_buffer = false;
  const grpc::Status s =
      grpc::SerializationTraits<google::protobuf::Message>::Serialize(
          response, buffer, &own_buffer);
  if (!s.ok()) {
    return absl::InternalError(
        absl::StrCat("cannot serialize ", response.GetDescriptor()->full_name(),
                     ": ", s.error_message()));
  }
  return absl::OkStatus();
}

void AddLeaderHint(grpc::CallbackServerContext* context,
                   const LeaderHint& hint) {
  if (hint.id == NodeId(0)) return;
  context->AddTrailingMetadata("sessiond-leader-id",
                               absl::StrCat(hint.id.value()));
  if (!hint.client_address.empty()) {
    context->AddTrailingMetadata("sessiond-leader", hint.client_address);
  }
}

void AddStatusHints(grpc::CallbackServerContext* context,
                    const absl::Status& status, const LeaderHint& hint) {
  if (absl::IsUnavailable(status)) AddLeaderHint(context, hint);
  if (status.GetPayload(kNotProposedPayload).has_value()) {
    context->AddTrailingMetadata("sessiond-not-proposed", "1");
  }
}

void AddRetryPushback(grpc::CallbackServerContext* context,
                      const absl::Status& status) {
  const std::optional<ErrorDetail> detail = ErrorDetailOf(status);
  if (!detail) return;
  if (detail->retry_delay) {
    // gRPC times the retry from a clock it reads in whole milliseconds,
    // rounded down: the retry could come up to 1 ms before the delay, and be
    // refused again. One more millisecond covers it.
    context->AddTrailingMetadata(
        "grpc-retry-pushback-ms",
        absl::StrCat(absl::ToInt64Milliseconds(*detail->retry_delay) + 1));
  } else if (absl::IsUnavailable(status) || absl::IsResourceExhausted(status)) {
    context->AddTrailingMetadata("grpc-retry-pushback-ms", "-1");
  }
}

absl::Time CallDeadline(const grpc::CallbackServerContext* context,
                        absl::Duration default_timeout) {
  const auto client = context->deadline();
  // gRPC's "no deadline" is a time_point near max, which absl::FromChrono
  // would overflow.
  const absl::Time client_deadline =
      client >= std::chrono::system_clock::time_point::max() -
                    std::chrono::hours(24 * 365)
          ? absl::InfiniteFuture()
          : absl::FromChrono(client);
  return WritePath::ServerDeadline(client_deadline, default_timeout);
}

grpc::ServerUnaryReactor* FinishNow(grpc::CallbackServerContext* context,
                                    const absl::Status& status) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  AddRetryPushback(context, status);
  reactor->Finish(ToGrpcStatus(status));
  return reactor;
}

void FinishWithHint(grpc::CallbackServerContext* context,
                    grpc::ServerUnaryReactor* reactor,
                    const absl::Status& status, const LeaderHint& hint) {
  AddStatusHints(context, status, hint);
  AddRetryPushback(context, status);
  reactor->Finish(ToGrpcStatus(status));
}

void UnaryCallBase::Reply(const absl::Status& status) {
  absl::Status final_status = status;
  if (status.ok()) {
    final_status = SerializeResponse(response_message(), out_);
    ReleaseResponse();
  }
  if (status.GetPayload(kNotProposedPayload).has_value()) {
    context_->AddTrailingMetadata("sessiond-not-proposed", "1");
  }
  AddRetryPushback(context_, final_status);
  const grpc::Status answer = ToGrpcStatus(final_status);
  timer_.Finish(answer.error_code());
  Finish(answer);
}

void UnaryCallBase::Reply(const absl::Status& status, const LeaderHint& hint) {
  if (absl::IsUnavailable(status)) AddLeaderHint(context_, hint);
  Reply(status);  // and the not-proposed mark
}

}  // namespace sessiond::server
