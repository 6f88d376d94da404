// Copyright sessiond authors. Licensed under the Apache License 2.0.
#ifndef SESSIOND_TESTS_SIM_SIM_DISK_H_
#define SESSIOND_TESTS_SIM_SIM_DISK_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "replication/log_store.h"
#include "replication/memory_log_store.h"
#include "tests/sim/invariants.h"

namespace sessiond::sim {

// One simulated node's disk: the LogStore its NodeDriver writes, with a
// power-loss model, and the place where every write is checked as it
// happens.
//
// Power loss: readers see every write (a database reads its own unsynced
// writes). A synced Append, and every InstallSnapshot and Compact (durable by
// contract), makes all writes so far durable, as an fsync of a write-ahead
// log does. Crash() forgets the writes made since the last synced one: the
// store goes back to its durable state. Two real MemoryLogStores hold the
// two states (what readers see, what survives); unsynced appends wait in a
// list until a synced write replays them onto the durable one.
//
// Checked on every write (failures go to Invariants::Fail; the write is then
// skipped and reported OK, so the driver goes on until the scenario stops):
// log matching (Invariants::CheckLogEntry); entries at or below this node's
// commit index never change or disappear, and an entry written at or below
// it is the committed one; the hard state's term never goes back and its
// vote never changes within a term; a received snapshot's data matches its
// metadata and the committed record, and lies past this node's commit; a
// compaction's snapshot is the committed state at its index and drops
// nothing this node has not committed.
//
// Not thread-safe (the simulation is one thread; the LogStore contract's
// concurrent reads never happen). Owned by its SimNode; survives crashes.
class SimDisk : public replication::LogStore {
 public:
  SimDisk(NodeId node, replication::ConfState bootstrap,
          Invariants* invariants);

  // LogReader: every write, synced or not.
  replication::HardState InitialHardState() const override;
  replication::ConfState InitialConfState() const override;
  absl::StatusOr<std::vector<replication::Entry>> Entries(
      LogIndex lo, LogIndex hi, uint64_t max_bytes) const override;
  absl::StatusOr<Term> TermAt(LogIndex index) const override;
  LogIndex FirstIndex() const override;
  LogIndex LastIndex() const override;
  absl::StatusOr<replication::Snapshot> GetSnapshot() const override;

  absl::Status Append(const std::vector<replication::Entry>& entries,
                      const std::optional<replication::HardState>& hard_state,
                      bool sync) override;
  absl::Status InstallSnapshot(const replication::Snapshot& snapshot) override;
  using LogStore::Compact;
  absl::Status Compact(const replication::Snapshot& snapshot,
                       LogIndex truncate_through) override;

  // Power loss: forgets every write since the last synced one. Returns how
  // many writes were lost.
  size_t Crash();
  // A broken disk for the "can fail" test: the durable vote is lost.
  void ForgetVoteForTest();

  // What survives a crash now.
  const replication::MemoryLogStore& durable() const { return *durable_; }
  size_t unsynced_writes() const { return unsynced_.size(); }
  uint64_t synced_writes() const { return synced_writes_; }

 private:
  struct UnsyncedAppend {
    std::vector<replication::Entry> entries;
    std::optional<replication::HardState> hard_state;
  };

  void Fail(const std::string& what);
  bool CheckAppend(const std::vector<replication::Entry>& entries,
                   const std::optional<replication::HardState>& hard_state);
  // Checks a snapshot's data against its metadata and the committed record.
  bool CheckSnapshotData(const replication::Snapshot& snapshot,
                         absl::string_view where);
  // Replays the unsynced appends onto the durable store.
  void Sync();

  const NodeId node_;
  Invariants* const invariants_;
  std::unique_ptr<replication::MemoryLogStore> written_;
  std::unique_ptr<replication::MemoryLogStore> durable_;
  std::vector<UnsyncedAppend> unsynced_;
  uint64_t synced_writes_ = 0;
};

}  // namespace sessiond::sim

#endif  // SESSIOND_TESTS_SIM_SIM_DISK_H_
