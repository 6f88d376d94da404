// Copyright sessiond authors. Licensed under the Apache License 2.0.
#ifndef SESSIOND_TESTS_SIM_NETWORK_H_
#define SESSIOND_TESTS_SIM_NETWORK_H_

#include <cstdint>
#include <functional>
#include <map>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "common/rng.h"
#include "common/strong_types.h"
#include "replication/core/types.h"

namespace sessiond::sim {

// Fault rates of the simulated network. Delays are in simulation steps; a
// message always takes at least one step, so a step never delivers what it
// sent (no unbounded ping-pong inside one step).
struct NetworkOptions {
  uint32_t min_delay = 1;
  uint32_t max_delay = 4;
  uint32_t loss_permille = 0;
  uint32_t dup_permille = 0;
  // A message is held back this often by up to long_delay_max steps, which is
  // what reorders it behind later traffic.
  uint32_t long_delay_permille = 0;
  uint32_t long_delay_max = 40;
  // Extra loss, on top of loss_permille, for an AppendEntries that carries
  // the first entry of its sender's term right after entries of earlier
  // terms (a new leader's no-op). It stretches the window in which a new
  // leader has re-replicated entries of earlier terms but none of its own:
  // the Raft paper's figure 8, where only the commitment rule keeps those
  // entries from being counted as committed.
  uint32_t term_start_loss_permille = 0;
};

// A seeded, single-threaded network of messages in flight. Loss, duplication
// and delay are decided at Send(); partitions (blocked directed links) are
// checked at delivery, so a partition also cuts messages already in flight.
// Every choice comes from the Rng given at construction, so a seed replays.
// Not thread-safe; owned by the Cluster.
class Network {
 public:
  Network(uint64_t seed, NetworkOptions options);

  void set_options(const NetworkOptions& options) { options_ = options; }
  const NetworkOptions& options() const { return options_; }

  void Send(const replication::Message& message, uint64_t now);

  // Removes and returns, in delivery order, every message due at or before
  // `now`. Messages on a blocked link, or matching the drop filter, are
  // dropped instead.
  std::vector<replication::Message> TakeDue(uint64_t now);

  // Partitions. Block() is one-way: from -> to is cut, to -> from is not.
  void Block(NodeId from, NodeId to);
  void Unblock(NodeId from, NodeId to);
  void BlockBoth(NodeId a, NodeId b);
  void UnblockBoth(NodeId a, NodeId b);
  // Cuts every link between `a`'s members and `b`'s members, both ways.
  void Split(const std::vector<NodeId>& a, const std::vector<NodeId>& b);
  // Cuts `node` from (and to) every node in `others`.
  void Isolate(NodeId node, const std::vector<NodeId>& others);
  // Undoes Isolate: restores the links between `node` and `others`.
  void Reconnect(NodeId node, const std::vector<NodeId>& others);
  void HealAll();
  bool Blocked(NodeId from, NodeId to) const;
  // Drops every message `from` sent that is still in flight: what a crash
  // loses when it comes before the driver's sends left the machine. Returns
  // how many were dropped.
  size_t DropFrom(NodeId from);
  bool partitioned() const { return !blocked_.empty(); }
  std::string DescribePartitions() const;

  // Scripted tests: messages for which `drop` returns true are dropped at
  // delivery. Empty function: no filter.
  void SetDropFilter(std::function<bool(const replication::Message&)> drop) {
    drop_filter_ = std::move(drop);
  }

  size_t in_flight() const { return queue_.size(); }
  uint64_t sent() const { return sent_; }
  uint64_t delivered() const { return delivered_; }

 private:
  void Enqueue(const replication::Message& message, uint64_t now);

  Rng rng_;
  NetworkOptions options_;
  // Keyed by (delivery step, send sequence): delivery order is total and
  // depends only on the seed.
  std::map<std::pair<uint64_t, uint64_t>, replication::Message> queue_;
  uint64_t seq_ = 0;
  std::set<std::pair<uint64_t, uint64_t>> blocked_;  // (from, to)
  std::function<bool(const replication::Message&)> drop_filter_;
  uint64_t sent_ = 0;
  uint64_t delivered_ = 0;
};

}  // namespace sessiond::sim

#endif  // SESSIOND_TESTS_SIM_NETWORK_H_
