// Copyright sessiond authors. Licensed under the Apache License 2.0.
#ifndef SESSIOND_TESTS_SIM_SIM_STATE_MACHINE_H_
#define SESSIOND_TESTS_SIM_SIM_STATE_MACHINE_H_

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "replication/state_machine.h"
#include "tests/sim/invariants.h"
#include "tests/sim/sim_disk.h"

namespace sessiond::sim {

// The value of every ApplyResult the simulated state machine returns: which
// entry produced it. The proposer checks that the driver answered it with
// its own entry.
struct AppliedEntry {
  LogIndex index;
  Term term;
  std::string data;
};

// The replicated state machine of a simulated node: an AppliedState (hash
// chain of everything applied, and the membership it produced). Its
// snapshot image is AppliedState::Encode(), inline in Snapshot::data (the
// production state machine writes a file and puts a reference there; the
// core treats data as opaque either way).
//
// Checked as the driver calls it: entries arrive in order, one past the
// applied index; each is the one this node's log holds there and the one
// committed there (it is reported to Invariants::OnCommitted, which records
// it or compares it); the applied state matches the committed record after
// every batch; a snapshot is applied only once the log store holds it
// durably (the driver's install order), and never moves the state back.
//
// Not thread-safe (the simulation is one thread). Volatile: owned by its
// SimNode for one incarnation; a restart rebuilds it from the disk's
// snapshot and the driver re-applies the committed entries after it.
class SimStateMachine : public replication::StateMachine {
 public:
  // `disk`, `invariants` and `node_term` (the node's current term, for
  // OnCommitted) must outlive this; `log` traces notable events.
  SimStateMachine(NodeId node, AppliedState initial, const SimDisk* disk,
                  Invariants* invariants, const Term* node_term,
                  std::function<void(absl::string_view)> log);

  absl::StatusOr<std::vector<replication::ApplyResult>> Apply(
      const std::vector<replication::Entry>& entries) override;
  void StopRetryingWrites() override {}  // its writes never fail
  LogIndex applied_index() const override { return state_.index; }
  absl::StatusOr<replication::Snapshot> CreateSnapshot() override;
  absl::Status ApplySnapshot(const replication::Snapshot& snapshot) override;

  const AppliedState& state() const { return state_; }
  uint64_t snapshots_installed() const { return snapshots_installed_; }

 private:
  void Fail(const std::string& what);

  const NodeId node_;
  const SimDisk* const disk_;
  Invariants* const invariants_;
  const Term* const node_term_;
  const std::function<void(absl::string_view)> log_;
  AppliedState state_;
  uint64_t snapshots_installed_ = 0;
};

}  // namespace sessiond::sim

#endif  // SESSIOND_TESTS_SIM_SIM_STATE_MACHINE_H_
