// Copyright sessiond authors. Licensed under the Apache License 2.0.
//
// The data the Raft core consumes and produces. Plain structs: the core has no
// protobuf, gRPC, RocksDB, threads or clocks. The peer transport (server/)
// converts Message to and from its wire form.
#ifndef SESSIOND_REPLICATION_CORE_TYPES_H_
#define SESSIOND_REPLICATION_CORE_TYPES_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "common/strong_types.h"

namespace sessiond::replication {

enum class EntryType : uint8_t {
  kNormal = 0,      // data is an application command (may be empty: a no-op)
  kConfChange = 1,  // data is an encoded ConfChange (EncodeConfChange)
};

struct Entry {
  Term term;
  LogIndex index;
  EntryType type = EntryType::kNormal;
  std::string data;

  bool operator==(const Entry&) const = default;
};

// What must be on disk before a vote or an append acknowledgement leaves.
struct HardState {
  Term term;
  NodeId vote;
  LogIndex commit;

  bool operator==(const HardState&) const = default;
};

// Cluster membership. Sorted, no duplicates, a node in at most one list.
struct ConfState {
  std::vector<NodeId> voters;
  std::vector<NodeId> learners;

  bool operator==(const ConfState&) const = default;
};

enum class ConfChangeType : uint8_t {
  kAddLearner = 0,    // add a non-voting member (it catches up first)
  kPromoteVoter = 1,  // make a caught-up learner a voter
  kRemoveNode = 2,    // remove a voter or learner
};

// The start of RaftCore::ProposeConfChange's refusal when the previous
// change is not applied yet (one at a time; a new leader counts its whole
// log until it has applied it): the same change goes through once it is.
inline constexpr char kConfChangePendingPrefix[] = "a membership change at ";

// One-at-a-time membership change (Raft thesis section 4.1).
struct ConfChange {
  ConfChangeType type = ConfChangeType::kAddLearner;
  NodeId node;

  bool operator==(const ConfChange&) const = default;
};

std::string EncodeConfChange(const ConfChange& change);
// Returns false when `data` is not a valid encoding.
bool DecodeConfChange(const std::string& data, ConfChange* change);

// Applies a committed `change` to `conf` with the core's rules
// (RaftCore applies the same ones to its own membership): a learner is never
// added over a voter, a promotion makes the node a voter whether or not it
// was a learner (the bootstrap entries promote new nodes), a removal drops
// the node from both lists.
void ApplyConfChange(const ConfChange& change, ConfState* conf);

struct SnapshotMeta {
  LogIndex index;  // last entry the snapshot covers
  Term term;       // that entry's term
  ConfState conf_state;

  bool operator==(const SnapshotMeta&) const = default;
};

struct Snapshot {
  SnapshotMeta meta;
  std::string data;  // the state machine's image, opaque to the core

  bool empty() const { return meta.index == LogIndex(0); }

  bool operator==(const Snapshot&) const = default;
};

enum class MessageType : uint8_t {
  kPreVote,
  kPreVoteResponse,
  kVote,
  kVoteResponse,
  kAppend,  // AppendEntries; also the heartbeat when entries is empty
  kAppendResponse,
  kHeartbeat,
  kHeartbeatResponse,
  kSnapshot,    // InstallSnapshot
  kTimeoutNow,  // leadership transfer: campaign now, skip PreVote
  kReadIndex,   // follower -> leader: forward a ReadIndex request
  kReadIndexResponse,
};

const char* MessageTypeName(MessageType type);

struct Message {
  MessageType type = MessageType::kAppend;
  NodeId from;
  NodeId to;
  Term term;
  // kAppend: the index and term of the entry before `entries`.
  // kVote/kPreVote: the candidate's last index and term.
  // kAppendResponse: the last index now matched (or, when rejecting, the
  // index that was probed).
  LogIndex index;
  Term log_term;
  std::vector<Entry> entries;
  LogIndex commit;
  // kAppend, kHeartbeat, kSnapshot: the leader's own commit index, and at
  // least the first entry of its term (until that commits, the leader's
  // commit index may be below what its predecessor committed). A
  // heartbeat's `commit` is capped at what the receiver is known to hold
  // (it may not commit beyond that); this one tells a receiver waiting for
  // a snapshot, or far behind, how far behind it is. Read by the driver
  // only, for its staleness.
  LogIndex leader_commit;
  // kAppend, kHeartbeat, kSnapshot: how long before the message left
  // (microseconds) a quorum of voters last heard from the sending leader in
  // its term. A leader cut off from its quorum leads on until CheckQuorum
  // deposes it while another may already commit, so a follower is current
  // only as of then, not as of the message's arrival. Stamped by the driver
  // as the message leaves and read by the receiving driver only; the core
  // neither sets nor reads it (it has no clock). 0 from an older binary:
  // current as of the arrival, as before.
  uint64_t leader_quiet_us = 0;
  bool reject = false;
  // kAppendResponse with reject: the follower's hint for fast backtracking
  // (the last index it might match, and the term there).
  LogIndex reject_hint;
  Term hint_term;
  std::optional<Snapshot> snapshot;  // kSnapshot only
  std::string context;               // ReadIndex request context, etc.

  bool operator==(const Message&) const = default;
};

// About what `m` holds in memory: its entries, snapshot image and context,
// with a little for each entry's and the message's own fields. For memory
// bounds, not a wire size.
size_t MessageBytes(const Message& m);

// A ReadIndex request that is now safe to serve: once the local state machine
// has applied through `index`, reads reflect every write committed before the
// request was made.
struct ReadState {
  LogIndex index;
  std::string context;
};

enum class Role : uint8_t { kFollower, kPreCandidate, kCandidate, kLeader };

const char* RoleName(Role role);

}  // namespace sessiond::replication

#endif  // SESSIOND_REPLICATION_CORE_TYPES_H_
