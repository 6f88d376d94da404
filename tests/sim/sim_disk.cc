// Copyright sessiond authors. Licensed under the Apache License 2.0.
#include "tests/sim/sim_disk.h"

#include <algorithm>
#include <limits>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"

namespace sessiond::sim {

using replication::ConfState;
using replication::Entry;
using replication::HardState;
using replication::MemoryLogStore;
using replication::Snapshot;

namespace {

constexpr uint64_t kNoLimit = std::numeric_limits<uint64_t>::max();

// A copy of `src` built through its public API: the snapshot and the
// truncation point (which may lie below the snapshot: catch-up entries),
// the entries after it, the hard state.
std::unique_ptr<MemoryLogStore> CopyStore(const MemoryLogStore& src) {
  const Snapshot snapshot = src.GetSnapshot().value();
  const LogIndex truncated = src.FirstIndex() - 1;
  auto copy = std::make_unique<MemoryLogStore>(snapshot.meta.conf_state);
  if (truncated > LogIndex(0)) {
    Snapshot point = snapshot;
    if (snapshot.meta.index != truncated) {
      point = Snapshot();
      point.meta.index = truncated;
      point.meta.term = src.TermAt(truncated).value();
      point.meta.conf_state = snapshot.meta.conf_state;
    }
    (void)copy->InstallSnapshot(point);
  }
  const std::vector<Entry> entries =
      src.Entries(truncated + 1, src.LastIndex() + 1, kNoLimit).value();
  (void)copy->Append(entries, src.InitialHardState(), /*sync=*/true);
  if (snapshot.meta.index > truncated) (void)copy->Compact(snapshot, truncated);
  return copy;
}

bool SameEntry(const Entry& a, const Entry& b) {
  return a.term == b.term && a.type == b.type && a.data == b.data;
}

}  // namespace

SimDisk::SimDisk(NodeId node, ConfState bootstrap, Invariants* invariants)
    : node_(node),
      invariants_(invariants),
      written_(std::make_unique<MemoryLogStore>(bootstrap)),
      durable_(std::make_unique<MemoryLogStore>(bootstrap)) {}

HardState SimDisk::InitialHardState() const {
  return written_->InitialHardState();
}
ConfState SimDisk::InitialConfState() const {
  return written_->InitialConfState();
}
absl::StatusOr<std::vector<Entry>> SimDisk::Entries(LogIndex lo, LogIndex hi,
                                                    uint64_t max_bytes) const {
  return written_->Entries(lo, hi, max_bytes);
}
absl::StatusOr<Term> SimDisk::TermAt(LogIndex index) const {
  return written_->TermAt(index);
}
LogIndex SimDisk::FirstIndex() const { return written_->FirstIndex(); }
LogIndex SimDisk::LastIndex() const { return written_->LastIndex(); }
absl::StatusOr<Snapshot> SimDisk::GetSnapshot() const {
  return written_->GetSnapshot();
}

void SimDisk::Fail(const std::string& what) {
  invariants_->Fail(absl::StrCat(what, " [node ", node_.value(), " disk]"));
}

bool SimDisk::CheckAppend(const std::vector<Entry>& entries,
                          const std::optional<HardState>& hard_state) {
  const HardState before = written_->InitialHardState();
  if (hard_state) {
    if (hard_state->term < before.term) {
      Fail(absl::StrCat("hard state term goes back from ", before.term.value(),
                        " to ", hard_state->term.value()));
      return false;
    }
    if (hard_state->term == before.term && before.vote != NodeId(0) &&
        hard_state->vote != before.vote) {
      Fail(absl::StrCat("vote changed within term ", before.term.value(),
                        " from ", before.vote.value(), " to ",
                        hard_state->vote.value()));
      return false;
    }
  }
  if (entries.empty()) return true;
  const LogIndex first = entries.front().index;
  const LogIndex last = written_->LastIndex();
  if (first < written_->FirstIndex() || first > last + 1) {
    Fail(absl::StrCat("append at ", first.value(), " outside the log [",
                      written_->FirstIndex().value(), ", ", last.value() + 1,
                      "]"));
    return false;
  }
  for (size_t i = 1; i < entries.size(); ++i) {
    if (entries[i].index != first + i) {
      Fail("append of non-consecutive entries");
      return false;
    }
  }
  // Entries at or below this node's commit index never change, nor drop out
  // (the store drops the old suffix past the new entries).
  const LogIndex commit = before.commit;
  const LogIndex replaced_hi = std::min(last, commit);
  if (first <= replaced_hi) {
    const std::vector<Entry> old =
        written_->Entries(first, replaced_hi + 1, kNoLimit).value();
    for (const Entry& o : old) {
      if (o.index > entries.back().index) {
        Fail(absl::StrCat("append at ", first.value(), "..",
                          entries.back().index.value(), " drops entry ",
                          o.index.value(), ", at or below the commit index ",
                          commit.value()));
        return false;
      }
      if (!SameEntry(o, entries[o.index - first])) {
        Fail(absl::StrCat("append replaces entry ", o.index.value(), " (term ",
                          o.term.value(), "), at or below the commit index ",
                          commit.value()));
        return false;
      }
    }
  }
  const LogIndex new_commit =
      hard_state ? std::max(commit, hard_state->commit) : commit;
  std::optional<Term> prev;
  if (absl::StatusOr<Term> t = written_->TermAt(first - 1); t.ok()) prev = *t;
  for (const Entry& e : entries) {
    invariants_->CheckLogEntry(node_, e, prev, "persist");
    if (e.index <= new_commit && e.index <= invariants_->max_committed()) {
      const CommittedEntry& c = invariants_->committed(e.index);
      if (c.term != e.term || c.hash != EntryHash(e)) {
        Fail(absl::StrCat("persists entry ", e.index.value(), " (term ",
                          e.term.value(), ") at or below its commit index ",
                          new_commit.value(), ", but term ", c.term.value(),
                          " committed there"));
        return false;
      }
    }
    prev = e.term;
  }
  return invariants_->ok();
}

bool SimDisk::CheckSnapshotData(const Snapshot& snapshot,
                                absl::string_view where) {
  AppliedState state;
  if (!AppliedState::Decode(snapshot.data, &state)) {
    Fail(absl::StrCat(where, ": snapshot data does not decode"));
    return false;
  }
  const replication::SnapshotMeta& meta = snapshot.meta;
  if (state.index != meta.index || state.term != meta.term ||
      !(state.conf == meta.conf_state)) {
    Fail(absl::StrCat(
        where, ": snapshot metadata (index ", meta.index.value(), " term ",
        meta.term.value(), " ", DescribeConf(meta.conf_state),
        ") does not match its data (index ", state.index.value(), " term ",
        state.term.value(), " ", DescribeConf(state.conf), ")"));
    return false;
  }
  invariants_->CheckAppliedState(node_, state, where);
  return invariants_->ok();
}

void SimDisk::Sync() {
  for (UnsyncedAppend& a : unsynced_) {
    (void)durable_->Append(a.entries, a.hard_state, /*sync=*/true);
  }
  unsynced_.clear();
  ++synced_writes_;
}

absl::Status SimDisk::Append(const std::vector<Entry>& entries,
                             const std::optional<HardState>& hard_state,
                             bool sync) {
  if (!CheckAppend(entries, hard_state)) return absl::OkStatus();
  const absl::Status s = written_->Append(entries, hard_state, sync);
  if (!s.ok()) {
    Fail(absl::StrCat("LogStore::Append refused the driver's write: ",
                      s.ToString()));
    return absl::OkStatus();
  }
  if (sync) {
    Sync();
    (void)durable_->Append(entries, hard_state, /*sync=*/true);
  } else {
    unsynced_.push_back(UnsyncedAppend{entries, hard_state});
  }
  return absl::OkStatus();
}

absl::Status SimDisk::InstallSnapshot(const Snapshot& snapshot) {
  if (!CheckSnapshotData(snapshot, "received snapshot")) {
    return absl::OkStatus();
  }
  const LogIndex commit = written_->InitialHardState().commit;
  if (snapshot.meta.index <= commit) {
    Fail(absl::StrCat("installs a snapshot at ", snapshot.meta.index.value(),
                      ", not past the commit index ", commit.value()));
    return absl::OkStatus();
  }
  (void)written_->InstallSnapshot(snapshot);
  Sync();
  (void)durable_->InstallSnapshot(snapshot);
  return absl::OkStatus();
}

absl::Status SimDisk::Compact(const Snapshot& snapshot,
                              LogIndex truncate_through) {
  if (!CheckSnapshotData(snapshot, "compaction")) return absl::OkStatus();
  const LogIndex index = snapshot.meta.index;
  const LogIndex commit = written_->InitialHardState().commit;
  if (truncate_through > commit) {
    Fail(absl::StrCat("compaction drops entries through ",
                      truncate_through.value(), ", past the commit index ",
                      commit.value()));
    return absl::OkStatus();
  }
  if (index >= written_->FirstIndex() - 1 && index <= written_->LastIndex()) {
    const Term term = written_->TermAt(index).value();
    if (term != snapshot.meta.term) {
      Fail(absl::StrCat("compaction snapshot at ", index.value(), " has term ",
                        snapshot.meta.term.value(), "; the log holds term ",
                        term.value(), " there"));
      return absl::OkStatus();
    }
  }
  const absl::Status s = written_->Compact(snapshot, truncate_through);
  if (!s.ok()) {
    Fail(absl::StrCat("LogStore::Compact refused the driver's compaction: ",
                      s.ToString()));
    return absl::OkStatus();
  }
  Sync();
  (void)durable_->Compact(snapshot, truncate_through);
  return absl::OkStatus();
}

size_t SimDisk::Crash() {
  const size_t lost = unsynced_.size();
  if (lost > 0) written_ = CopyStore(*durable_);
  unsynced_.clear();
  return lost;
}

void SimDisk::ForgetVoteForTest() {
  Sync();
  HardState hs = durable_->InitialHardState();
  hs.vote = NodeId(0);
  (void)durable_->Append({}, hs, /*sync=*/true);
  (void)written_->Append({}, hs, /*sync=*/true);
}

}  // namespace sessiond::sim
