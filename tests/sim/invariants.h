// Copyright sessiond authors. Licensed under the Apache License 2.0.
//
// The safety properties the simulation checks, kept incrementally so that
// checking after every step stays cheap (nothing here rescans whole logs on
// a hot path):
//
//   - at most one leader per term;
//   - log matching: all logs agree, for each (index, term), on the entry and
//     on the term of the entry before it (by induction, logs that share an
//     (index, term) are identical up to it);
//   - committed entries never change: every node reports the same entry for
//     each committed index, and no command is committed twice;
//   - leader completeness: a node that becomes leader of term T holds every
//     entry known to be committed in a term below T;
//   - every node applies the same sequence: the applied state carries a hash
//     chain over the applied entries, compared with the chain of the global
//     committed record at the same index (this also checks snapshot data);
//   - ReadIndex is linearizable: when a read completes, the node's state
//     machine has applied every entry known committed when the read began.
//
// Per-node properties (commit index never goes back, committed entries come
// out in order, durable promises, what each write does to the log) are
// checked by SimNode and its disk, state machine and transport, which report
// them through Fail().
#ifndef SESSIOND_TESTS_SIM_INVARIANTS_H_
#define SESSIOND_TESTS_SIM_INVARIANTS_H_

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/string_view.h"
#include "replication/core/raft_core.h"
#include "replication/core/types.h"

namespace sessiond::sim {

// FNV-1a: fixed across platforms, unlike std::hash, so traces replay.
uint64_t Fnv64(absl::string_view data, uint64_t h = 14695981039346656037ull);
// Identity of an entry's content (type and data, not index or term).
uint64_t EntryHash(const replication::Entry& entry);
// The applied-state hash chain: chain(i) = step(chain(i - 1), entry i).
constexpr uint64_t kChainSeed = 0x5e551011d5eedull;
uint64_t ChainStep(uint64_t prev, const replication::Entry& entry);

std::string DescribeConf(const replication::ConfState& conf);

// A node's state machine in the simulation: what it has applied, as a hash
// chain, plus the membership the applied entries produce (needed for the
// snapshot metadata). Its encoding is the snapshot data.
struct AppliedState {
  LogIndex index;
  Term term;  // of the entry at `index`
  uint64_t hash = kChainSeed;
  replication::ConfState conf;

  std::string Encode() const;
  static bool Decode(const std::string& data, AppliedState* out);
};

// What a node's log holds at one index, as seen by the simulator.
struct ShadowEntry {
  Term term;
  uint64_t hash = 0;
};

struct CommittedEntry {
  Term term;
  uint64_t hash = 0;
  // The lowest term any node was in when it reported this entry committed:
  // an upper bound of the term in which it really became committed.
  Term commit_term;
  NodeId first_reporter;
};

// Not thread-safe; owned by the Cluster.
class Invariants {
 public:
  explicit Invariants(replication::ConfState bootstrap);

  bool ok() const { return violation_.empty(); }
  const std::string& violation() const { return violation_; }
  // Records a violation; the first one is kept and ends the scenario.
  void Fail(std::string what);

  // Log matching. Called for every entry that enters a log (persist) or is
  // shipped by a leader (AppendEntries). `prev_term` is the term of the entry
  // before it in the same log, when known.
  void CheckLogEntry(NodeId node, const replication::Entry& entry,
                     std::optional<Term> prev_term, absl::string_view where);

  // A node reported `entry` committed (in Ready::committed) while at
  // `node_term`.
  void OnCommitted(NodeId node, Term node_term,
                   const replication::Entry& entry);
  LogIndex max_committed() const { return LogIndex(committed_.size()); }
  // REQUIRES: 1 <= index <= max_committed().
  const CommittedEntry& committed(LogIndex index) const {
    return committed_[index.value() - 1];
  }
  // REQUIRES: index <= max_committed().
  uint64_t chain_hash(LogIndex index) const { return chain_[index.value()]; }
  // Membership after every committed entry.
  const replication::ConfState& committed_conf() const {
    return committed_conf_;
  }
  // Index of the latest committed membership change (0: none).
  LogIndex last_conf_change() const { return last_conf_change_; }

  // `state` must equal the committed record's prefix.
  void CheckAppliedState(NodeId node, const AppliedState& state,
                         absl::string_view where);

  // Called whenever a node is seen in `role` at `term`.
  void OnRole(NodeId node, replication::Role role, Term term);
  // A node just became leader of `term` with this log (entries after the
  // snapshot point `base`).
  void CheckLeaderCompleteness(NodeId node, Term term, LogIndex base,
                               Term base_term,
                               const std::vector<ShadowEntry>& log);

  // The proposer of `data` applied it at `index` in the term it proposed it.
  void OnAcked(NodeId node, LogIndex index, const std::string& data);
  const std::map<LogIndex, uint64_t>& acked() const { return acked_; }
  // The acknowledged indexes in the order they were first acknowledged.
  const std::vector<LogIndex>& ack_order() const { return ack_order_; }

  // Linearizable reads: a read that began when `required` was the highest
  // index known committed completed (NodeDriver::ReadIndex answered OK) on
  // `node` with its state machine applied through `applied`.
  void OnReadCompleted(NodeId node, LogIndex required, LogIndex applied);
  // A leader answered a read from its own state machine, applied through
  // `applied`, with no ReadIndex round, for a read that began when
  // `required` was local_read_floor(): it must hold every acknowledged write
  // and everything an earlier completed read saw (one committed but not yet
  // acknowledged, and not yet seen by any read, may still be missing).
  void OnLocalRead(NodeId node, LogIndex required, LogIndex applied);
  // What a read beginning now must see: the newest acknowledged write and
  // the newest state any completed linearizable read answered from.
  LogIndex local_read_floor() const;

  uint64_t leaders_seen() const { return leader_of_term_.size(); }
  uint64_t reads_checked() const { return reads_checked_; }
  uint64_t local_reads_checked() const { return local_reads_checked_; }
  uint64_t conf_changes() const { return conf_changes_; }

 private:
  std::string violation_;

  struct LogKey {
    uint64_t hash = 0;
    std::optional<Term> prev_term;
    NodeId first_node;
  };
  // (index, term) -> what every log must hold there. Looked up only, never
  // iterated, so its order cannot leak into the run.
  absl::flat_hash_map<std::pair<uint64_t, uint64_t>, LogKey> log_keys_;

  std::vector<CommittedEntry> committed_;    // [i - 1] is index i
  std::vector<uint64_t> chain_{kChainSeed};  // [i] is the chain through i
  absl::flat_hash_map<uint64_t, LogIndex> command_index_;  // data hash -> index
  replication::ConfState committed_conf_;
  LogIndex last_conf_change_;

  std::map<uint64_t, NodeId> leader_of_term_;
  std::map<LogIndex, uint64_t> acked_;  // index -> data hash
  std::vector<LogIndex> ack_order_;
  uint64_t reads_checked_ = 0;
  uint64_t local_reads_checked_ = 0;
  // The highest applied index a completed linearizable read answered from.
  LogIndex newest_read_seen_;
  uint64_t conf_changes_ = 0;
};

}  // namespace sessiond::sim

#endif  // SESSIOND_TESTS_SIM_INVARIANTS_H_
