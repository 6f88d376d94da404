// Copyright sessiond authors. Licensed under the Apache License 2.0.
#include "tests/server/daemon_fixture.h"

#include <grpcpp/create_channel.h>
#include <grpcpp/security/credentials.h>

#include <chrono>

#include "google/protobuf/io/coded_stream.h"
#include "google/protobuf/io/zero_copy_stream_impl_lite.h"

namespace sessiond::server::testing {

Config TestConfig(const std::string& data_dir) {
  Config config;
  config.listen = "127.0.0.1:0";
  config.data_dir = data_dir;
  config.shards = 8;
  config.limits.min_ttl_ms = 50;
  config.sweep_interval_ms = 50;
  config.touch_flush_interval_ms = 50;
  config.tick_ms = 10;
  config.shutdown_grace_ms = 2000;
  // Compaction drops everything its snapshot covers (no tail kept for
  // followers: there are none).
  config.snapshot_catch_up_entries = 0;
  return config;
}

std::unique_ptr<SessionService::Stub> StubFor(const std::string& address) {
  return SessionService::NewStub(
      grpc::CreateChannel(address, grpc::InsecureChannelCredentials()));
}

std::string Canonical(const Session& session) {
  std::string out;
  {
    google::protobuf::io::StringOutputStream stream(&out);
    google::protobuf::io::CodedOutputStream coded(&stream);
    coded.SetSerializationDeterministic(true);
    session.SerializeToCodedStream(&coded);
  }
  return out;
}

void SetDeadline(grpc::ClientContext* context) {
  context->set_deadline(std::chrono::system_clock::now() +
                        std::chrono::seconds(30));
}

}  // namespace sessiond::server::testing
