// Copyright sessiond authors. Licensed under the Apache License 2.0.
//
// Raft messages between replication::Message (the core's plain structs) and
// their wire form in proto/sessiond/v1/peer.proto.
#ifndef SESSIOND_SERVER_RAFT_WIRE_H_
#define SESSIOND_SERVER_RAFT_WIRE_H_

#include "absl/status/statusor.h"
#include "replication/core/types.h"
#include "sessiond/v1/peer.pb.h"

namespace sessiond::server {

// A kSnapshot message's image is not put on the wire here: it travels as a
// SnapshotChunk stream; only the snapshot's metadata is.
void ToWire(const replication::Message& message,
            sessiond::v1::internal::RaftMessage* out);

// InvalidArgument for an unknown type or entry type (the core checks the
// rest).
absl::StatusOr<replication::Message> FromWire(
    sessiond::v1::internal::RaftMessage&& message);

}  // namespace sessiond::server

#endif  // SESSIOND_SERVER_RAFT_WIRE_H_
