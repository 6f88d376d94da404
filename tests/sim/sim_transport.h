// Copyright sessiond authors. Licensed under the Apache License 2.0.
#ifndef SESSIOND_TESTS_SIM_SIM_TRANSPORT_H_
#define SESSIOND_TESTS_SIM_SIM_TRANSPORT_H_

#include <cstdint>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "replication/transport.h"
#include "tests/sim/invariants.h"
#include "tests/sim/network.h"
#include "tests/sim/sim_disk.h"

namespace sessiond::sim {

// One simulated node's Transport: hands what its NodeDriver sends to the
// seeded Network, and checks every message as it leaves:
//
//   - durable promises, against the disk's durable state (what a power cut
//     leaves): a vote leaves only once the hard state records it, a vote
//     request only once the candidate's own vote is durable, an append
//     acknowledgement of term T through index i only once the durable term
//     is T and the durable log holds i, with the term the leader of T has
//     there (learned from the leader's messages this node received). A
//     durable term past T means the node moved on in the same write (group
//     commit), which retracts nothing the acknowledgement promised;
//   - acknowledgements are never taken back: a node that acknowledged the
//     leader of term T's entries through i never rejects, in term T, an
//     append that follows an entry at or below i (it forgot what it
//     acknowledged: the consequence of a broken durable promise, checked
//     even when the promises themselves are not);
//   - log matching over every entry an AppendEntries carries;
//   - the sender is this node, the receiver another.
//
// Not thread-safe (the simulation is one thread). Owned by its SimNode;
// survives crashes.
class SimTransport : public replication::Transport {
 public:
  // Everything must outlive this; `now` is the current step.
  SimTransport(NodeId node, const SimDisk* disk, Network* network,
               Invariants* invariants, const uint64_t* now,
               bool check_durable_promises);

  void Send(std::vector<replication::Message> messages) override;

  // A message delivered to this node: remembers what a leader says its log
  // holds, for the acknowledgement check.
  void Received(const replication::Message& message);

 private:
  void Fail(const std::string& what);
  void CheckDurablePromise(const replication::Message& m);

  const NodeId node_;
  const SimDisk* const disk_;
  Network* const network_;
  Invariants* const invariants_;
  const uint64_t* const now_;
  const bool check_durable_promises_;
  // index -> (term of the leader that sent it, term of its entry there).
  absl::flat_hash_map<uint64_t, std::pair<Term, Term>> leader_log_;
  // The latest term in which this node acknowledged entries, and through
  // which index.
  Term acked_term_;
  LogIndex acked_through_;
};

}  // namespace sessiond::sim

#endif  // SESSIOND_TESTS_SIM_SIM_TRANSPORT_H_
