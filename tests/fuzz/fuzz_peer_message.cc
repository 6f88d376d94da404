// Copyright sessiond authors. Licensed under the Apache License 2.0.
//
// Raft messages as a peer sends them (server/raft_wire.h): any bytes on the
// peer port either do not parse or become a replication::Message, which
// converts back to the wire form.
#include <cstddef>
#include <cstdint>
#include <utility>

#include "server/raft_wire.h"
#include "sessiond/v1/peer.pb.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  sessiond::v1::internal::RaftMessage wire;
  if (!wire.ParseFromArray(data, static_cast<int>(size))) return 0;
  auto message = sessiond::server::FromWire(std::move(wire));
  if (message.ok()) {
    sessiond::v1::internal::RaftMessage again;
    sessiond::server::ToWire(*message, &again);
  }
  return 0;
}
