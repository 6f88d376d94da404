// Copyright sessiond authors. Licensed under the Apache License 2.0.
#include "tests/sim/sim_state_machine.h"

#include <any>
#include <utility>

#include "absl/strings/str_cat.h"

namespace sessiond::sim {

using replication::ApplyResult;
using replication::ConfChange;
using replication::Entry;
using replication::EntryType;
using replication::Snapshot;

SimStateMachine::SimStateMachine(NodeId node, AppliedState initial,
                                 const SimDisk* disk, Invariants* invariants,
                                 const Term* node_term,
                                 std::function<void(absl::string_view)> log)
    : node_(node),
      disk_(disk),
      invariants_(invariants),
      node_term_(node_term),
      log_(std::move(log)),
      state_(std::move(initial)) {}

void SimStateMachine::Fail(const std::string& what) {
  invariants_->Fail(
      absl::StrCat(what, " [node ", node_.value(), " state machine]"));
}

absl::StatusOr<std::vector<ApplyResult>> SimStateMachine::Apply(
    const std::vector<Entry>& entries) {
  std::vector<ApplyResult> results;
  results.reserve(entries.size());
  for (const Entry& e : entries) {
    if (!invariants_->ok()) {
      results.emplace_back(std::any());
      continue;
    }
    if (e.index != state_.index + 1) {
      Fail(absl::StrCat("apply of ", e.index.value(), " after ",
                        state_.index.value()));
      results.emplace_back(std::any());
      continue;
    }
    // What the driver applies is what this node's log holds there (the
    // core reads committed entries back from the store).
    if (e.index >= disk_->FirstIndex() && e.index <= disk_->LastIndex() &&
        disk_->TermAt(e.index).value() != e.term) {
      Fail(absl::StrCat("applies entry ", e.index.value(), " of term ",
                        e.term.value(), "; the log holds term ",
                        disk_->TermAt(e.index).value().value(), " there"));
    }
    invariants_->OnCommitted(node_, *node_term_, e);
    state_.hash = ChainStep(state_.hash, e);
    state_.index = e.index;
    state_.term = e.term;
    if (e.type == EntryType::kConfChange) {
      ConfChange change;
      if (replication::DecodeConfChange(e.data, &change)) {
        replication::ApplyConfChange(change, &state_.conf);
        log_(absl::StrCat("applies conf change at ", e.index.value(), ": ",
                          DescribeConf(state_.conf)));
      }
      results.emplace_back(std::any());
    } else if (e.data.empty()) {
      results.emplace_back(std::any());
    } else {
      results.emplace_back(std::any(AppliedEntry{e.index, e.term, e.data}));
    }
  }
  if (invariants_->ok()) {
    invariants_->CheckAppliedState(node_, state_, "apply");
  }
  return results;
}

absl::StatusOr<Snapshot> SimStateMachine::CreateSnapshot() {
  Snapshot snapshot;
  snapshot.meta.index = state_.index;
  snapshot.meta.term = state_.term;
  snapshot.meta.conf_state = state_.conf;
  snapshot.data = state_.Encode();
  return snapshot;
}

absl::Status SimStateMachine::ApplySnapshot(const Snapshot& snapshot) {
  AppliedState state;
  if (!AppliedState::Decode(snapshot.data, &state)) {
    Fail("snapshot data does not decode");
    return absl::OkStatus();
  }
  if (state.index < state_.index) {
    Fail(absl::StrCat("snapshot at ", state.index.value(),
                      " moves the applied state back from ",
                      state_.index.value()));
    return absl::OkStatus();
  }
  // The driver's install order: the log store first (durably), then the
  // state machine; a crash in between is repaired from the log's snapshot.
  const LogIndex durable = disk_->durable().GetSnapshot().value().meta.index;
  if (durable < state.index) {
    Fail(absl::StrCat("applies the snapshot at ", state.index.value(),
                      " while the log store holds only the one at ",
                      durable.value(), " durably"));
    return absl::OkStatus();
  }
  state_ = std::move(state);
  ++snapshots_installed_;
  invariants_->CheckAppliedState(node_, state_, "install snapshot");
  log_(absl::StrCat("installed snapshot at ", state_.index.value()));
  return absl::OkStatus();
}

}  // namespace sessiond::sim
