// Copyright sessiond authors. Licensed under the Apache License 2.0.
#include "tests/server/raw_grpc.h"

#include <grpcpp/create_channel.h>
#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/security/credentials.h>
#include <grpcpp/support/byte_buffer.h>

#include <chrono>
#include <cstdint>

namespace sessiond::server::testing {
namespace {

grpc::ByteBuffer ToBuffer(const std::string& bytes) {
  grpc::Slice slice(bytes);
  return grpc::ByteBuffer(&slice, 1);
}

std::string FromBuffer(const grpc::ByteBuffer& buffer) {
  std::vector<grpc::Slice> slices;
  std::string out;
  if (!buffer.Dump(&slices).ok()) return out;
  for (const grpc::Slice& s : slices) {
    out.append(reinterpret_cast<const char*>(s.begin()), s.size());
  }
  return out;
}

// One completion queue driven step by step: each operation is started with
// a fresh tag and waited for before the next.
class Steps {
 public:
  ~Steps() {
    cq_.Shutdown();
    void* tag = nullptr;
    bool ok = false;
    while (cq_.Next(&tag, &ok)) {
    }
  }
  grpc::CompletionQueue* cq() { return &cq_; }
  void* NextTag() { return reinterpret_cast<void*>(++last_tag_); }
  // Waits for the operation started with the last tag; returns its ok.
  bool Wait() {
    void* tag = nullptr;
    bool ok = false;
    if (!cq_.Next(&tag, &ok)) return false;
    return ok && tag == reinterpret_cast<void*>(last_tag_);
  }

 private:
  grpc::CompletionQueue cq_;
  uintptr_t last_tag_ = 0;
};

void SetDeadline(grpc::ClientContext* context) {
  context->set_deadline(std::chrono::system_clock::now() +
                        std::chrono::seconds(30));
}

}  // namespace

RawUnaryResult RawUnary(const std::string& address, const std::string& method,
                        const std::string& request) {
  grpc::GenericStub stub(
      grpc::CreateChannel(address, grpc::InsecureChannelCredentials()));
  grpc::ClientContext context;
  SetDeadline(&context);
  Steps steps;
  const grpc::ByteBuffer buffer = ToBuffer(request);
  auto call = stub.PrepareUnaryCall(&context, method, buffer, steps.cq());
  call->StartCall();
  grpc::ByteBuffer reply;
  RawUnaryResult result;
  call->Finish(&reply, &result.status, steps.NextTag());
  steps.Wait();
  if (result.status.ok()) result.reply = FromBuffer(reply);
  return result;
}

RawStreamResult RawBidiStream(const std::string& address,
                              const std::string& method,
                              const std::vector<std::string>& messages) {
  grpc::GenericStub stub(
      grpc::CreateChannel(address, grpc::InsecureChannelCredentials()));
  grpc::ClientContext context;
  SetDeadline(&context);
  Steps steps;
  RawStreamResult result;
  auto call = stub.PrepareCall(&context, method, steps.cq());
  call->StartCall(steps.NextTag());
  if (steps.Wait()) {
    for (const std::string& message : messages) {
      call->Write(ToBuffer(message), steps.NextTag());
      if (!steps.Wait()) break;
      ++result.messages_sent;
    }
    call->WritesDone(steps.NextTag());
    steps.Wait();
    for (size_t reads = 0; reads <= messages.size(); ++reads) {
      grpc::ByteBuffer reply;
      call->Read(&reply, steps.NextTag());
      if (!steps.Wait()) break;
      result.replies.push_back(FromBuffer(reply));
    }
  }
  call->Finish(&result.status, steps.NextTag());
  steps.Wait();
  return result;
}

}  // namespace sessiond::server::testing
