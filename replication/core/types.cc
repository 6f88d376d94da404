// Copyright sessiond authors. Licensed under the Apache License 2.0.
#include "replication/core/types.h"

#include <algorithm>
#include <cstring>

namespace sessiond::replication {

// Encoding: one type byte, then the node id as 8 little-endian bytes.
std::string EncodeConfChange(const ConfChange& change) {
  std::string out(9, '\0');
  out[0] = static_cast<char>(change.type);
  uint64_t id = change.node.value();
  for (int i = 0; i < 8; ++i) out[1 + i] = static_cast<char>(id >> (8 * i));
  return out;
}

bool DecodeConfChange(const std::string& data, ConfChange* change) {
  if (data.size() != 9) return false;
  const auto type = static_cast<uint8_t>(data[0]);
  if (type > static_cast<uint8_t>(ConfChangeType::kRemoveNode)) return false;
  uint64_t id = 0;
  for (int i = 0; i < 8; ++i) {
    id |= static_cast<uint64_t>(static_cast<uint8_t>(data[1 + i])) << (8 * i);
  }
  if (id == 0) return false;
  change->type = static_cast<ConfChangeType>(type);
  change->node = NodeId(id);
  return true;
}

namespace {

void InsertSorted(std::vector<NodeId>* ids, NodeId id) {
  auto it = std::lower_bound(ids->begin(), ids->end(), id);
  if (it == ids->end() || *it != id) ids->insert(it, id);
}

void Erase(std::vector<NodeId>* ids, NodeId id) {
  ids->erase(std::remove(ids->begin(), ids->end(), id), ids->end());
}

}  // namespace

void ApplyConfChange(const ConfChange& change, ConfState* conf) {
  switch (change.type) {
    case ConfChangeType::kAddLearner:
      if (std::binary_search(conf->voters.begin(), conf->voters.end(),
                             change.node)) {
        return;
      }
      InsertSorted(&conf->learners, change.node);
      return;
    case ConfChangeType::kPromoteVoter:
      Erase(&conf->learners, change.node);
      InsertSorted(&conf->voters, change.node);
      return;
    case ConfChangeType::kRemoveNode:
      Erase(&conf->voters, change.node);
      Erase(&conf->learners, change.node);
      return;
  }
}

size_t MessageBytes(const Message& m) {
  constexpr size_t kFields = 64;
  constexpr size_t kEntryFields = 32;
  size_t bytes = kFields + m.context.size();
  for (const Entry& e : m.entries) bytes += kEntryFields + e.data.size();
  if (m.snapshot) bytes += m.snapshot->data.size();
  return bytes;
}

const char* MessageTypeName(MessageType type) {
  switch (type) {
    case MessageType::kPreVote:
      return "PreVote";
    case MessageType::kPreVoteResponse:
      return "PreVoteResponse";
    case MessageType::kVote:
      return "Vote";
    case MessageType::kVoteResponse:
      return "VoteResponse";
    case MessageType::kAppend:
      return "Append";
    case MessageType::kAppendResponse:
      return "AppendResponse";
    case MessageType::kHeartbeat:
      return "Heartbeat";
    case MessageType::kHeartbeatResponse:
      return "HeartbeatResponse";
    case MessageType::kSnapshot:
      return "Snapshot";
    case MessageType::kTimeoutNow:
      return "TimeoutNow";
    case MessageType::kReadIndex:
      return "ReadIndex";
    case MessageType::kReadIndexResponse:
      return "ReadIndexResponse";
  }
  return "Unknown";
}

const char* RoleName(Role role) {
  switch (role) {
    case Role::kFollower:
      return "follower";
    case Role::kPreCandidate:
      return "pre-candidate";
    case Role::kCandidate:
      return "candidate";
    case Role::kLeader:
      return "leader";
  }
  return "unknown";
}

}  // namespace sessiond::replication
