// Copyright sessiond authors. Licensed under the Apache License 2.0.
//
// Raft messages as a peer sends them (server/raft_wire.h): any bytes on the
// peer port either do not parse or become a replication::Message, and a
// message that decodes survives the trip back to the wire and in again
// unchanged (what a node forwards or re-sends is what it received). The
// same bytes are read as each wire form that carries Raft messages: a
// single RaftMessage, a MessageBatch (the message stream) and a
// SnapshotChunk (its kSnapshot message).
#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>

#include "server/raft_wire.h"
#include "sessiond/v1/peer.pb.h"
#include "tests/fuzz/fuzz_check.h"

namespace {

using sessiond::v1::internal::RaftMessage;

// Decodes `wire`; when it decodes, checks the round trip: the message
// written back to the wire and read again is the same message.
void DecodeAndRoundTrip(RaftMessage wire) {
  auto message = sessiond::server::FromWire(std::move(wire));
  if (!message.ok()) return;
  RaftMessage written;
  sessiond::server::ToWire(*message, &written);
  std::string bytes;
  FUZZ_CHECK(written.SerializeToString(&bytes));
  RaftMessage reparsed;
  FUZZ_CHECK(reparsed.ParseFromString(bytes));
  auto again = sessiond::server::FromWire(std::move(reparsed));
  FUZZ_CHECK(again.ok());
  FUZZ_CHECK(*again == *message);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const int length = static_cast<int>(size);
  RaftMessage message;
  if (message.ParseFromArray(data, length)) {
    DecodeAndRoundTrip(std::move(message));
  }
  sessiond::v1::internal::MessageBatch batch;
  if (batch.ParseFromArray(data, length)) {
    for (RaftMessage& m : *batch.mutable_messages()) {
      DecodeAndRoundTrip(std::move(m));
    }
  }
  sessiond::v1::internal::SnapshotChunk chunk;
  if (chunk.ParseFromArray(data, length) && chunk.has_message()) {
    DecodeAndRoundTrip(std::move(*chunk.mutable_message()));
  }
  return 0;
}
