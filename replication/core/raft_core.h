// Copyright sessiond authors. Licensed under the Apache License 2.0.
//
// RaftCore: the Raft algorithm as a pure state machine, in the manner of
// etcd-io/raft's RawNode and tikv/raft-rs. It has no threads, no clock, no
// I/O and no global state: time arrives as Tick(), randomness from a seeded
// Rng, durable state is read through a LogReader, and everything the core
// wants done (persist, send, apply) comes out of TakeReady().
//
// Driver ordering rules (the driver is replication::NodeDriver, in
// production and in the simulation in tests/sim):
//
//   1. Call TakeReady() whenever HasReady(); process its parts in this order
//      of dependency:
//   2. If `snapshot` is set, install it in the LogStore (durably) and hand it
//      to the state machine before applying any committed entry of this or a
//      later Ready.
//   3. `to_persist` entries and `hard_state` go to the LogStore in one synced
//      write. `send_now` messages may be sent at once, before or during that
//      write (this is what lets the leader write its log in parallel with
//      replication, Raft thesis section 10.2.1).
//   4. After the write is durable, call OnPersisted(last index, its term),
//      and send `send_after_persist` (votes and append acknowledgements:
//      they promise that state is on disk), in either order: nothing the
//      core does on OnPersisted depends on them having left, so the thread
//      that wrote may send them at once (as etcd-io/raft's asynchronous
//      storage writes let the append thread do). Writes must
//      become durable in Ready order, and a Ready's `send_after_persist`
//      must wait for the writes of every earlier Ready too, even when this
//      Ready has nothing to persist itself (an acknowledgement may cover
//      entries handed out in an earlier Ready).
//   5. `committed` entries may be applied as soon as they are received (they
//      are already durable on a quorum); apply them in order and call
//      OnApplied(last index) afterwards.
//   6. `read_states` may be answered once the state machine has applied
//      through each one's index.
//
// Not thread-safe: owned by one thread (the driver thread).
#ifndef SESSIOND_REPLICATION_CORE_RAFT_CORE_H_
#define SESSIOND_REPLICATION_CORE_RAFT_CORE_H_

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "replication/core/log_reader.h"
#include "replication/core/types.h"

namespace sessiond::replication {

enum class ReadOnlyMode : uint8_t {
  // ReadIndex (Raft thesis 6.4): the leader confirms it is still leader with
  // a heartbeat round before answering. Safe under any clock behaviour.
  kReadIndex,
  // Leader lease (thesis 6.4.1): the leader answers without a round trip
  // while a quorum has acknowledged a heartbeat it sent less than
  // election_ticks - 2 of its ticks ago (followers refuse votes for
  // election_ticks of their ticks after hearing from it). Clock-drift bound:
  // safe only while no node's tick runs more than
  // (election_ticks - 1) / (election_ticks - 2) times faster than the
  // leader's (12.5% for election_ticks = 10). Requires check_quorum (else
  // ReadIndex is used); off during a leadership transfer. Details in
  // raft_core.cc.
  kLeaseBased,
};

struct RaftConfig {
  NodeId id;
  // A follower that hears nothing from a leader for a random number of ticks
  // in [election_ticks, 2 * election_ticks) starts an election.
  int election_ticks = 10;
  // A leader sends heartbeats every heartbeat_ticks.
  int heartbeat_ticks = 1;
  bool pre_vote = true;
  bool check_quorum = true;
  ReadOnlyMode read_only_mode = ReadOnlyMode::kReadIndex;
  // Refuse votes for election_ticks after start whatever read_only_mode
  // says (with check_quorum): a leader in lease mode counts this node's
  // acknowledgement before a restart toward its lease, whether or not this
  // node reads by lease itself. Lease mode implies it; a cluster whose
  // members may differ in read mode (a rolling change of --read_mode) needs
  // it on every member. sessiond sets it always.
  bool refuse_votes_after_start = false;
  // The tick period in microseconds (0: unknown). With it, a lease-mode
  // leader's heartbeats carry its lease's length in time, and a follower
  // refuses votes for at least that long after one, in its own ticks:
  // members whose election_ticks or tick period differ (a rolling change)
  // stay safe. Without it each refuses for its own election_ticks, which is
  // safe only when every member has the same settings.
  uint64_t tick_us = 0;
  // Flow control per follower: AppendEntries messages in flight, and bytes of
  // entry data in flight. Past either cap the leader waits for responses.
  uint32_t max_inflight_messages = 256;
  uint64_t max_inflight_bytes = 32ull << 20;
  // Upper bound on entry data in one AppendEntries message.
  uint64_t max_message_bytes = 1ull << 20;
  // Upper bound on the leader's entry data proposed and not yet committed
  // (proposals are refused with ResourceExhausted above it, so a leader that
  // lost its quorum does not grow its log without bound). 0: no limit.
  uint64_t max_uncommitted_bytes = 0;

  // Breaks the commitment rule on purpose (commits by counting replicas of
  // an entry from an earlier term, the Raft paper's figure 8 mistake) so a
  // test can prove the simulation finds it. Never set outside that test.
  bool unsafe_commit_previous_term_for_test = false;

  // The index the state machine has already applied (from its own durable
  // state) when the core is created: committed entries after it are handed
  // out again in Ready::committed. Never below the log's snapshot index (a
  // state machine holds at least the latest snapshot).
  LogIndex applied;
};

// A snapshot of the core's state for status pages and tests.
struct RaftStatus {
  NodeId id;
  Role role = Role::kFollower;
  Term term;
  NodeId vote;
  NodeId leader;  // 0 when unknown
  LogIndex commit;
  LogIndex applied;
  LogIndex last_index;
  LogIndex first_index;
  ConfState conf_state;
  // Leader only: each member's matched index.
  std::map<NodeId, LogIndex> match;
  // Leader only: each member's next index and replication state ("probe",
  // "replicate", "snapshot").
  std::map<NodeId, LogIndex> next;
  std::map<NodeId, std::string> progress_state;
  NodeId lead_transferee;  // leadership transfer in progress to this node
};

struct Ready {
  // Set when term, vote or commit changed. Persist with to_persist.
  std::optional<HardState> hard_state;
  // Entries to write to the LogStore, synced. May start at or below the
  // store's LastIndex(): the store truncates the conflicting suffix.
  std::vector<Entry> to_persist;
  // A snapshot received from the leader, to install before applying.
  std::optional<Snapshot> snapshot;
  // Messages that may leave before the persist completes.
  std::vector<Message> send_now;
  // Messages that must wait until this Ready's persist is durable.
  std::vector<Message> send_after_persist;
  // Committed entries to apply, in order.
  std::vector<Entry> committed;
  // ReadIndex requests now safe to serve (see ReadIndex).
  std::vector<ReadState> read_states;
  // Set when role or leader changed.
  std::optional<Role> role;
  std::optional<NodeId> leader;

  bool empty() const {
    return !hard_state && to_persist.empty() && !snapshot && send_now.empty() &&
           send_after_persist.empty() && committed.empty() &&
           read_states.empty() && !role && !leader;
  }
};

class RaftCore {
 public:
  // Builds a core from the durable state in `log` (hard state, membership,
  // entries, snapshot). `log` must outlive the core. `seed` drives every
  // random choice (election timeouts), so the same seed and inputs give the
  // same outputs.
  // Errors: InvalidArgument for a bad config (id 0, ticks < 1), DataLoss when
  // the log's state is inconsistent.
  static absl::StatusOr<std::unique_ptr<RaftCore>> Create(
      const RaftConfig& config, const LogReader* log, uint64_t seed);

  ~RaftCore();
  RaftCore(const RaftCore&) = delete;
  RaftCore& operator=(const RaftCore&) = delete;

  // Advances logical time by one tick.
  void Tick();

  // Handles a message from a peer. Messages from older terms and duplicates
  // are ignored safely. Errors: InvalidArgument for a malformed message
  // (wrong `to`, unknown type); the core's state is unchanged.
  absl::Status Step(const Message& message);
  // As above; takes the entries and snapshot by move (no copy of the data).
  absl::Status Step(Message&& message);

  // Appends `commands` as consecutive kNormal entries of the current term.
  // Returns the index of the last one. Errors: Unavailable when this node is
  // not the leader (the message names the leader when known) or a leadership
  // transfer is in progress; ResourceExhausted above max_uncommitted_bytes.
  absl::StatusOr<LogIndex> Propose(std::vector<std::string> commands);

  // Proposes one membership change. Errors: Unavailable (not leader),
  // FailedPrecondition when another change is not yet applied, or the change
  // makes no sense (promote a non-learner, remove an unknown node, remove the
  // last voter).
  absl::StatusOr<LogIndex> ProposeConfChange(const ConfChange& change);

  // Starts an election now, skipping PreVote. Used by a single voter at
  // start-up and by tests.
  void Campaign();

  // Leadership transfer (thesis 3.10): the leader stops accepting proposals,
  // brings `target` up to date, then tells it to campaign at once.
  // Errors: Unavailable (not leader), InvalidArgument (target not a voter).
  absl::Status TransferLeadership(NodeId target);

  // Requests a linearizable read point. When safe, a ReadState with
  // `context` appears in a later Ready. On a follower the request is
  // forwarded to the leader. Errors: Unavailable when no leader is known.
  // A leader that has not committed an entry of its term yet holds at most
  // kMaxReadsBeforeFirstCommit requests (its own and forwarded ones); past
  // that it drops the oldest, which is never answered (as a lost message).
  absl::Status ReadIndex(std::string context);
  static constexpr size_t kMaxReadsBeforeFirstCommit = 4096;

  // The persist of everything up to `index` (entries of term `term`) is
  // durable. Out-of-date notifications (a conflicting suffix has since
  // replaced those entries) are ignored.
  void OnPersisted(LogIndex index, Term term);

  // The snapshot handed out in a Ready is installed and durable.
  void OnSnapshotInstalled(LogIndex index);

  // The state machine has applied everything through `index`.
  void OnApplied(LogIndex index);

  // The log below `index` was compacted in the LogStore (entries before it
  // are now read from the snapshot). REQUIRES: index <= the applied index
  // reported through OnApplied (the core reads committed entries it has not
  // handed out yet from the LogReader).
  void OnCompacted(LogIndex index);

  // How many more ticks this node may answer linearizable reads from its own
  // state machine without asking anyone (0: not now). Non-zero only for a
  // leader that is not transferring leadership, has applied an entry of its
  // own term (so its state machine holds every write an earlier leader
  // acknowledged) and is the only voter or holds a lease (kLeaseBased, under
  // the same clock-drift bound). If the caller acknowledges a write only
  // after the node that proposed it applied it (NodeDriver does), such a read
  // sees every write acknowledged before it began: one of an earlier term is
  // at or below this term's first entry, one of this term was proposed and
  // applied here (TiKV's LocalReader serves leader reads the same way). The
  // caller must stop using the window before any message of the next Ready
  // leaves: a vote this node grants, or a TimeoutNow, may let another lead.
  uint64_t LocalReadTicks() const;

  // Leader only: the tick at which the heartbeat left that the last of a
  // quorum of voters (this one counting now) acknowledged in this term; 0
  // when fewer than a quorum have acknowledged one, or not leader. Every
  // heartbeat carries its tick and is answered with it, so this is when a
  // quorum last heard from this leader, not when their answers arrived
  // (a late answer says nothing about the time it arrived at).
  uint64_t QuorumAckedTick() const;

  bool HasReady() const;
  Ready TakeReady();

  RaftStatus status() const;
  Role role() const;
  NodeId leader() const;
  Term term() const;
  LogIndex commit_index() const;
  bool is_leader() const { return role() == Role::kLeader; }

 private:
  class Impl;
  explicit RaftCore(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace sessiond::replication

#endif  // SESSIOND_REPLICATION_CORE_RAFT_CORE_H_
