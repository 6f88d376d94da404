// Copyright sessiond authors. Licensed under the Apache License 2.0.
#include "tests/sim/network.h"

#include "absl/strings/str_cat.h"

namespace sessiond::sim {

using replication::Message;

namespace {

// An AppendEntries whose first entry is the first of its sender's term.
bool StartsSendersTerm(const Message& m) {
  return m.type == replication::MessageType::kAppend && !m.entries.empty() &&
         m.log_term < m.term && m.entries.front().term == m.term;
}

}  // namespace

Network::Network(uint64_t seed, NetworkOptions options)
    : rng_(seed), options_(options) {}

void Network::Enqueue(const Message& message, uint64_t now) {
  uint64_t delay = rng_.Range(options_.min_delay, options_.max_delay);
  if (options_.long_delay_permille > 0 &&
      rng_.Uniform(1000) < options_.long_delay_permille) {
    delay += rng_.Range(1, options_.long_delay_max);
  }
  if (delay == 0) delay = 1;
  queue_.emplace(std::make_pair(now + delay, seq_++), message);
}

void Network::Send(const Message& message, uint64_t now) {
  ++sent_;
  if (options_.loss_permille > 0 &&
      rng_.Uniform(1000) < options_.loss_permille) {
    return;
  }
  if (options_.term_start_loss_permille > 0 && StartsSendersTerm(message) &&
      rng_.Uniform(1000) < options_.term_start_loss_permille) {
    return;
  }
  Enqueue(message, now);
  if (options_.dup_permille > 0 && rng_.Uniform(1000) < options_.dup_permille) {
    Enqueue(message, now);
  }
}

std::vector<Message> Network::TakeDue(uint64_t now) {
  std::vector<Message> out;
  while (!queue_.empty() && queue_.begin()->first.first <= now) {
    Message m = std::move(queue_.begin()->second);
    queue_.erase(queue_.begin());
    if (Blocked(m.from, m.to)) continue;
    if (drop_filter_ && drop_filter_(m)) continue;
    ++delivered_;
    out.push_back(std::move(m));
  }
  return out;
}

void Network::Block(NodeId from, NodeId to) {
  if (from != to) blocked_.emplace(from.value(), to.value());
}

void Network::Unblock(NodeId from, NodeId to) {
  blocked_.erase({from.value(), to.value()});
}

void Network::BlockBoth(NodeId a, NodeId b) {
  Block(a, b);
  Block(b, a);
}

void Network::UnblockBoth(NodeId a, NodeId b) {
  Unblock(a, b);
  Unblock(b, a);
}

void Network::Split(const std::vector<NodeId>& a,
                    const std::vector<NodeId>& b) {
  for (NodeId x : a) {
    for (NodeId y : b) BlockBoth(x, y);
  }
}

void Network::Isolate(NodeId node, const std::vector<NodeId>& others) {
  for (NodeId other : others) BlockBoth(node, other);
}

void Network::Reconnect(NodeId node, const std::vector<NodeId>& others) {
  for (NodeId other : others) UnblockBoth(node, other);
}

void Network::HealAll() { blocked_.clear(); }

bool Network::Blocked(NodeId from, NodeId to) const {
  return !blocked_.empty() && blocked_.count({from.value(), to.value()}) > 0;
}

size_t Network::DropFrom(NodeId from) {
  size_t dropped = 0;
  for (auto it = queue_.begin(); it != queue_.end();) {
    if (it->second.from == from) {
      it = queue_.erase(it);
      ++dropped;
    } else {
      ++it;
    }
  }
  return dropped;
}

std::string Network::DescribePartitions() const {
  if (blocked_.empty()) return "none";
  std::string out;
  for (const auto& [from, to] : blocked_) {
    absl::StrAppend(&out, out.empty() ? "" : " ", from, "->", to);
  }
  return out;
}

}  // namespace sessiond::sim
