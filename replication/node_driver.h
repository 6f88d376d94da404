// Copyright sessiond authors. Licensed under the Apache License 2.0.
//
// NodeDriver: the one driver around the pure RaftCore (the role of
// etcd-io/raft's node.go and of tikv's raftstore propose/apply loops). The
// write path:
//
//   caller --Propose--> inbox --driver stage--> RaftCore::Propose (one call
//   for every proposal queued since the last run) --TakeReady-->
//     send_now           -> Transport, at once (the leader's disk write runs
//                           in parallel with replication)
//     to_persist/hard    -> log-writer stage: ONE LogStore::Append for all
//                           work queued since its last write (group commit),
//                           synced unless only the commit index changed
//                           (etcd's MustSync), then "persisted through
//                           (index, term)" back to the inbox
//     send_after_persist -> sent by the log-writer stage itself once the
//                           write that holds what they promise is durable
//     committed          -> apply stage: StateMachine::Apply in batches, then
//                           "applied through" back to the inbox; proposers'
//                           callbacks (matched by index AND term) and reads
//                           waiting for that index go to the completion stage
//     read_states        -> reads complete once applied through their index
//
// Stages and who owns what (STYLE.md 2.4); a Runtime decides which thread
// runs each stage (ThreadRuntime: one thread each; the simulation: one
// thread for everything, after seeded delays):
//   driver stage      sole owner of the RaftCore; derives ticks from the
//                     Runtime's clock; never waits for disk or network.
//   log-writer stage  sole writer of the LogStore (the core reads it from
//                     the driver stage, which the LogStore contract allows).
//   apply stage       sole caller of StateMachine::Apply/ApplySnapshot.
//   completion stage  runs callbacks, in order (a callback that finishes a
//                     gRPC call writes to the socket on this stage).
// Fault points (common/fault_point.h), for crash tests on the real binary:
//   log.before_append, log.after_append    around a synced log write
//   apply.before_apply, apply.after_apply  around StateMachine::Apply
// Lock order: no lock of this class is held while taking another, and none
// is held while calling a callback, the LogStore, the StateMachine, the
// Transport or the Runtime.
#ifndef SESSIOND_REPLICATION_NODE_DRIVER_H_
#define SESSIOND_REPLICATION_NODE_DRIVER_H_

#include <atomic>
#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/log_budget.h"
#include "common/metrics.h"
#include "common/steady_cond_var.h"
#include "replication/core/raft_core.h"
#include "replication/log_store.h"
#include "replication/runtime.h"
#include "replication/state_machine.h"
#include "replication/transport.h"

namespace sessiond::replication {

// Payload of a proposal's answer when it was refused before anything was
// appended: UNAVAILABLE when this node cannot propose (not the leader, a
// leadership transfer in progress: propose it to whoever leads now),
// RESOURCE_EXHAUSTED when it will not now (too many writes in flight, too
// much uncommitted data, a log it cannot write), another code when the core
// cannot take it at all (a membership change it refuses). Either way the
// write never entered a log, so proposing it again is safe.
inline constexpr char kNotAppendedPayload[] = "sessiond.dev/not-appended";

struct NodeDriverOptions {
  RaftConfig raft;
  // Logical time: one RaftCore::Tick per interval of the Runtime's clock.
  // With the default election_ticks of 10 an election starts after 1-2 s
  // without a leader.
  std::chrono::milliseconds tick_interval{100};
  // Seeds the core's random choices (election timeouts).
  uint64_t seed = 1;
  // Stop() waits at most this long for proposals in flight to complete; the
  // rest are answered Unavailable "shutting down".
  std::chrono::milliseconds drain_timeout{5000};
  // Back-pressure: proposals accepted and not yet answered, and their bytes.
  // Past either bound Propose answers ResourceExhausted at once instead of
  // queueing without limit (a leader that lost its quorum, a slow disk).
  size_t max_pending_proposals = 100000;
  uint64_t max_pending_bytes = 256ull << 20;
  // Peer messages waiting for the driver stage, and their bytes
  // (MessageBytes); more are dropped (Raft tolerates loss; the sender
  // retransmits). An empty inbox takes a message of any size, so no append
  // is too large to ever arrive.
  size_t max_inbox_messages = 100000;
  uint64_t max_inbox_bytes = 256ull << 20;
  // Compaction keeps this many entries below the snapshot's index, so a
  // follower that lags a little catches up from the log rather than with a
  // whole snapshot (etcd's SnapshotCatchUpEntries).
  uint64_t compaction_catch_up_entries = 5000;
  // A ReadIndex request still unanswered after this many ticks fails with
  // Unavailable (its message to the leader may have been lost); so does a
  // read whose index this node has not applied this long after it was known.
  int read_timeout_ticks = 20;
  // Ticks handed to the core at most per driver run after a stall (a paused
  // process): enough to expire any lease and election timeout.
  int max_catch_up_ticks = 1000;

  // Break the driver's durability rules on purpose, so the simulation
  // (tests/sim) can prove it notices. Never set outside tests.
  // The log writer appends with sync=false (entries, terms and votes alike):
  // a power loss forgets what was acknowledged. A reviewer found that turning
  // the append's sync off made no test fail; this is its guard.
  bool unsafe_unsynced_log_writes_for_test = false;
  // `send_after_persist` messages (votes, vote requests, append
  // acknowledgements) leave with `send_now`, before the write they promise.
  bool unsafe_ack_before_persist_for_test = false;

  // Called on the log-writer stage when a LogStore write fails (a full
  // disk; not when log_write_gate refuses one); the write is retried (after 50
  // ms, doubling up to 2 s) and proposals are refused until one succeeds. Must
  // not block.
  std::function<void(const absl::Status&)> on_log_write_error;
  // Asked on the log-writer stage before each write of new entries that
  // carry data (not a new leader's empty entry), with their size: a non-OK
  // answer (a disk about to fill) is handled as a failed write, without
  // writing. Null: every write is allowed.
  std::function<absl::Status(uint64_t bytes)> log_write_gate;
};

// The part of NodeStatus that every read and write asks for (role,
// leader, how current this node is): copied without allocating, where a
// NodeStatus copies its maps and lists.
struct NodeSummary {
  Role role = Role::kFollower;
  Term term;
  NodeId leader;  // 0 when unknown
  LogIndex commit;
  LogIndex applied;  // the state machine's applied index
  // The highest commit index heard from a leader (while leader: its own
  // commit, and at least its term's first entry), and when a quorum of
  // voters last heard from the leader, as its last message said (Runtime
  // clock: the message's arrival less its Message::leader_quiet_us, which
  // a leader cut off from its quorum keeps growing while it leads on;
  // while leader: when the heartbeat that the last of a quorum of voters
  // answered left, as of the last driver run). Before the clock's start
  // (negative) when the quiet was longer than this node had run. Infinite
  // past when never.
  LogIndex leader_commit;
  absl::Duration last_leader_contact = -absl::InfiniteDuration();
  // The last time (Runtime clock) as of which this node's applied state
  // held everything a leader had committed: a leader's message then said
  // commit C, and this node has applied C; "then" is when a quorum last
  // heard from that leader, as above. What a read here may miss is what
  // committed since. Behind (receiving a snapshot, or a stuck apply
  // stage), it stays put while leader messages keep coming; so does a
  // leader's, whose quorum's word counts as a leader message. Infinite past
  // when never.
  absl::Duration current_as_of = -absl::InfiniteDuration();
  // True when this node is leader and has applied every entry up to the
  // first entry of its term: reads of the local state machine see every
  // write acknowledged by any earlier leader.
  bool leader_caught_up = false;
  NodeId lead_transferee;  // 0: no leadership transfer in progress
};

// What the driver knows about its node, for status pages, health checks,
// membership checks and tests. A copy: it may be stale by the time it is
// read.
struct NodeStatus : NodeSummary {
  NodeId id;
  LogIndex first_index;
  LogIndex last_index;
  ConfState conf_state;
  // Leader only: each member's matched index, and when it last
  // acknowledged, in this term: its match grew or held the leader's whole
  // log (Runtime clock, as of a driver turn; the election for one that has
  // not). A member that answers heartbeats but stopped acknowledging
  // entries (its log writes stalled) keeps its time once the log grows.
  std::map<NodeId, LogIndex> match;
  std::map<NodeId, absl::Duration> acknowledged_at;
  // Proposals are refused (RefuseProposals) or log writes fail: this node
  // refuses proposals with `log_stall` and, when leader, hands leadership
  // to another voter.
  bool log_stalled = false;
  std::string log_stall;
};

// Counters since Start, for status pages and benchmarks: proposals per
// RaftCore::Propose call and per synced log write show how well group
// commit batches.
struct NodeDriverMetrics {
  uint64_t proposals = 0;            // Propose() calls accepted
  uint64_t proposals_refused = 0;    // ResourceExhausted by back-pressure
  uint64_t propose_batches = 0;      // RaftCore::Propose calls
  uint64_t log_writes = 0;           // synced LogStore::Append calls (fsyncs)
  uint64_t log_writes_unsynced = 0;  // commit-only hard state writes
  uint64_t entries_persisted = 0;
  uint64_t apply_batches = 0;  // StateMachine::Apply calls
  uint64_t entries_applied = 0;
  uint64_t reads = 0;              // ReadIndex() calls
  uint64_t read_index_rounds = 0;  // RaftCore::ReadIndex calls
  uint64_t local_reads = 0;        // LocalReadIndex() gave an index
  uint64_t messages_dropped = 0;   // inbox full (count or bytes)
  uint64_t snapshots_installed = 0;
  uint64_t log_write_failures = 0;  // LogStore writes that failed
};

// Thread-safe. Owned by the composition root (server/daemon.cc). The
// LogStore, StateMachine, Transport and Runtime must outlive the driver
// (until Stop() returns or the driver is destroyed).
class NodeDriver : public MessageSink, public StageRunner {
 public:
  using ProposeCallback = std::function<void(ApplyResult)>;
  using StatusCallback = std::function<void(absl::Status)>;

  // Builds the core from `log`'s durable state and starts running on a
  // ThreadRuntime it owns. A group whose only voter is this node campaigns
  // at once and becomes leader without waiting for an election timeout.
  //
  // Entries at or below state_machine->applied_index() were applied before
  // a restart; they are not applied again. Entries past it are applied as
  // soon as the core hands them out as committed (after the new term's
  // first entry commits). REQUIRES: the state machine holds at least the
  // log's snapshot (the daemon re-applies it after a crash in between).
  // Errors: those of RaftCore::Create (InvalidArgument, DataLoss).
  static absl::StatusOr<std::unique_ptr<NodeDriver>> Start(
      const NodeDriverOptions& options, LogStore* log,
      StateMachine* state_machine, Transport* transport);

  // As Start, on a Runtime the caller owns (the simulation's).
  static absl::StatusOr<std::unique_ptr<NodeDriver>> StartOn(
      const NodeDriverOptions& options, LogStore* log,
      StateMachine* state_machine, Transport* transport, Runtime* runtime);

  // Stops if still running.
  ~NodeDriver() override;
  NodeDriver(const NodeDriver&) = delete;
  NodeDriver& operator=(const NodeDriver&) = delete;

  // Queues `command` for the log; never blocks on the core or the disk.
  // Proposals queued together are appended with one RaftCore::Propose and
  // persisted with one synced write. `done` is called exactly once and must
  // not block: from the completion stage (applied), the driver stage
  // (refused by the core), or the calling thread of Propose or Stop:
  //   the state machine's ApplyResult once the entry is committed and applied;
  //   Unavailable when this node is not the leader (the message names the
  //     leader when known), when leadership changed before the entry
  //     committed ("leadership changed; retry"), or "shutting down";
  //   ResourceExhausted when too many proposals wait already (back-pressure,
  //     NodeDriverOptions) or the core refuses more uncommitted data.
  // With kExempt the back-pressure bounds count it but never refuse it, as
  // a membership change: for the touch batches every member sends about
  // once per flush interval, whose refusal under a flood of writes would
  // leave the users active through that member to the leader's sweeper.
  enum class Bound { kBounded, kExempt };
  void Propose(std::string command, ProposeCallback done,
               Bound bound = Bound::kBounded);

  // Proposes a membership change; `done` as for Propose (OK with an empty
  // value once the change is applied). FailedPrecondition when another
  // change is pending or the change makes no sense (RaftCore). `check`,
  // when given, runs on the driver stage just before the change is
  // proposed, with the membership it is proposed against (status() may be
  // a driver run behind: a change applied in that run is not in it); an
  // error it returns is `done`'s answer and nothing is proposed.
  using ConfChangeCheck = std::function<absl::Status(const ConfState&)>;
  void ProposeConfChange(const ConfChange& change, ProposeCallback done,
                         ConfChangeCheck check = nullptr);

  // Starts a leadership transfer to `target`. `done` says whether it
  // started (Unavailable: not leader; InvalidArgument: not a voter); the
  // caller watches status() for the new leader.
  void TransferLeadership(NodeId target, StatusCallback done);

  // A linearizable read point (Raft thesis 6.4): `done(OK)` once this node's
  // state machine has applied every write committed before the call;
  // Unavailable when no leader is known, leadership changed, the request
  // timed out, or the node is shutting down. Concurrent calls share one
  // ReadIndex round. Works on followers (forwarded to the leader). `done`
  // runs on the completion stage or the calling thread and must not block.
  void ReadIndex(StatusCallback done);

  // When this node may answer a linearizable read from its own state
  // machine with no ReadIndex round (it leads, holds its lease or is the
  // only voter, and has applied an entry of its term:
  // RaftCore::LocalReadTicks): the index it must have applied first, its
  // commit index; nullopt otherwise. The commit index, not what this node
  // applied: a leader applies only what its own log write holds, and when
  // the followers' acknowledgements commit an entry first, they may apply
  // it, and answer a read from it, before the leader does. Counts the read
  // (metrics().local_reads) when it gives an index. Any thread: atomic
  // loads and a clock read, so a read on the leader waits for no driver
  // turn (and, when AppliedThrough(index), for nothing).
  std::optional<LogIndex> LocalReadIndex();
  // True when the apply stage has applied through `index`. Any thread.
  bool AppliedThrough(LogIndex index) const {
    return applied_through_.load(std::memory_order_acquire) >= index.value();
  }

  // `done(OK)` once this node's state machine has applied through `index`
  // (at once when it has); Unavailable when the driver stops first or the
  // index is not applied within the read timeout. Runs on
  // the completion stage or the calling thread; must not block.
  void WhenApplied(LogIndex index, StatusCallback done);
  // True once the driver stopped taking reads: WhenApplied and ReadIndex
  // then fail at once. Any thread.
  bool ReadsClosed() const ABSL_LOCKS_EXCLUDED(reads_mu_) {
    absl::MutexLock lock(&reads_mu_);
    return reads_closed_;
  }

  // The Runtime's clock (NodeStatus::last_leader_contact is on it).
  absl::Duration Now() const { return runtime_->Elapsed(); }

  // Log compaction: records `snapshot` (made durable by the state machine,
  // StateMachine::CreateSnapshot) as the snapshot lagging followers receive,
  // and drops the log through its index minus compaction_catch_up_entries
  // (never past what the state machine reported applied). Asynchronous, on
  // the log-writer stage. An older snapshot than the last one is ignored.
  void CompactLog(Snapshot snapshot);

  // A full disk (storage/disk_guard.h): while `reason` is not OK, Propose
  // and ProposeConfChange answer `reason` and a leader transfers leadership
  // to its most caught-up voter; OK ends it. The log writer goes on
  // (log_write_gate decides what it may write): proposals already
  // accepted, a new leader's first entry and, on a follower, the leader's
  // entries still reach the log while the disk has room.
  void RefuseProposals(absl::Status reason);

  // Raft messages from peers (called by the Transport).
  size_t Deliver(std::vector<Message> messages) override;

  // Stops accepting proposals (Unavailable "shutting down"), waits up to
  // drain_timeout for those in flight, then stops the Runtime. Idempotent.
  void Stop();

  NodeStatus status() const;
  NodeSummary summary() const;
  NodeDriverMetrics metrics() const;
  // How long each synced LogStore::Append took (the Raft log's fsyncs, one
  // per group commit), by the steady clock; failed writes are left out.
  const metrics::LatencyHistogram& log_sync_latency() const {
    return metric_log_sync_latency_;
  }

  // Blocks until `ready(status)` holds or `timeout` passes (real time).
  // Returns whether it holds.
  bool WaitFor(const std::function<bool(const NodeStatus&)>& ready,
               absl::Duration timeout) const;
  // Blocks until this node is leader and caught up (see NodeStatus), or
  // `timeout` passes. Returns whether it is.
  bool WaitUntilLeaderCaughtUp(absl::Duration timeout) const;

  // StageRunner: called by the Runtime.
  void RunStage(Stage stage) override;

 private:
  // Work for the log writer: one Ready's durable part, or a compaction.
  struct PersistWork {
    std::vector<Entry> entries;
    std::optional<HardState> hard_state;
    std::optional<Snapshot> snapshot;  // install (received from a leader)
    // Log compaction: record `compact` as the snapshot and drop entries
    // through `truncate_through`.
    std::optional<Snapshot> compact;
    LogIndex truncate_through;
    std::vector<Message> send_after_persist;
  };
  // Work for the apply stage, in log order.
  struct ApplyWork {
    std::optional<Snapshot> snapshot;
    std::vector<Entry> entries;
  };
  struct Proposal {
    std::string command;
    ProposeCallback done;
  };
  struct ConfChangeRequest {
    ConfChange change;
    ProposeCallback done;
    ConfChangeCheck check;
  };
  struct TransferRequest {
    NodeId target;
    StatusCallback done;
  };
  struct PendingProposal {  // its index and term are its key in pending_
    ProposeCallback done;
  };
  // A ReadIndex round: every read that joined it, and when it was asked.
  struct ReadRound {
    int64_t asked_tick = 0;
    // The leadership it was asked under: another one fails it.
    Term term;
    Role role = Role::kFollower;
    NodeId leader;
    std::vector<StatusCallback> readers;
  };
  // A callback to run on the completion stage, with its argument: a
  // proposer's with the apply result, or a reader's with a status. Not a
  // std::function<void()> binding the two: that allocates for every write.
  struct Completion {
    static Completion Proposer(ProposeCallback done, ApplyResult result) {
      Completion c;
      c.propose = std::move(done);
      c.result = std::move(result);
      return c;
    }
    static Completion Reader(StatusCallback done, absl::Status status) {
      Completion c;
      c.read = std::move(done);
      c.status = std::move(status);
      return c;
    }
    void Run() {
      if (propose) {
        propose(std::move(result));
      } else {
        read(status);
      }
    }

    ProposeCallback propose;
    ApplyResult result;
    StatusCallback read;
    absl::Status status;
  };
  // One persisted batch, reported back to the driver stage.
  struct Persisted {
    std::optional<std::pair<LogIndex, Term>> through;
    std::optional<LogIndex> snapshot_index;
    std::optional<LogIndex> compacted_index;
  };

  NodeDriver(const NodeDriverOptions& options, LogStore* log,
             StateMachine* state_machine, Transport* transport,
             std::unique_ptr<RaftCore> core, Runtime* runtime,
             std::unique_ptr<Runtime> owned_runtime);

  void RunDriver();
  void RunLogWriter();
  void RunApply();
  void RunCompletion();

  // Driver stage.
  void CatchUpTicks();
  void StepMessages(std::vector<Message> messages);
  // While leader: the latest time as of which a quorum of voters had
  // heard from this node in its term (this node counts as now): when the
  // heartbeat left that the last of them answered, or else the election.
  // Now when this node is the only voter (sole_voter_), which is kept as
  // the contact should a second voter join.
  absl::Duration QuorumContact();
  // Stamps this leader's messages among `messages` (kAppend, kHeartbeat,
  // kSnapshot) with how long ago a quorum last heard from it
  // (Message::leader_quiet_us), so that its followers are current as of
  // then, not as of the message (the core stamps the index they must apply
  // to be current: Message::leader_commit).
  void StampLeaderContact(std::vector<Message>* messages);
  // A leader's message at `at` said it had committed `commit`.
  void HeardFromLeader(LogIndex commit, absl::Duration at)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(status_mu_);
  // The apply stage reached `through`.
  void AppliedThroughLocked(LogIndex through)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(status_mu_);
  void Dispatch(Ready ready);
  void ProposeBatch(std::vector<Proposal> proposals);
  // Registers `done` for the entry at `index` of `term`. A proposal of an
  // earlier term at the same index stays registered: which of them commits
  // is known only once that index applies. Returns the callback of an
  // earlier proposal of the same index and term (never expected; empty when
  // none), which the caller answers once the lock is released.
  ProposeCallback RegisterPendingLocked(LogIndex index, Term term,
                                        ProposeCallback done)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(pending_mu_);
  void StartReadRound(std::vector<StatusCallback> readers);
  void FinishReadStates(std::vector<ReadState> read_states);
  // Fails the rounds asked under another leadership than `now`'s, and those
  // unanswered past the read timeout.
  void ExpireReadRounds(const RaftStatus& now);
  // Registers a read until the apply stage reaches `index`.
  void WaitForApplyLocked(LogIndex index, StatusCallback done)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(reads_mu_);
  // Answers the reads still waiting past their expiry.
  void ExpireWaitingReads();
  void RequestCompaction(Snapshot snapshot);
  void RefreshStatus();
  void RefuseInbox(const absl::Status& status);
  // Hands leadership over while the log cannot be written.
  void HandOverIfStalled();
  // Why proposals are refused now; OK when they are not.
  absl::Status LogStall() const;
  // Copies LogStall() into status_ (log_stalled, log_stall).
  void PublishLogStall();

  // Apply stage, once the committed entry (or snapshot) at `last` of
  // `term` is applied: answers "leadership changed" to every proposal past
  // `last` of a term below `term`. Every later leader's log holds that
  // entry, and terms never fall along a log, so none of theirs can ever
  // commit; they would otherwise wait until the log grew back to their
  // index, which an idle cluster may never do. Only a committed entry says
  // so: the last entry of this node's log may itself be replaced, and a
  // proposal it cut away committed after all (with five voters: the Raft
  // paper's figure 8), so answering at the cut told a caller "not applied"
  // of a write that then applied. Walks the proposals once per term.
  void AbandonProposalsAfter(LogIndex last, Term term)
      ABSL_LOCKS_EXCLUDED(pending_mu_);
  // Apply stage: hands proposers' results and ripe reads to completion.
  void CompleteProposals(const std::vector<Entry>& entries,
                         std::vector<ApplyResult>* results);
  void CompleteReadsThrough(LogIndex applied);
  void PostCompletions(std::vector<Completion> calls);
  // Every reader answered `status`, on the completion stage.
  void PostReaders(std::vector<StatusCallback> readers,
                   const absl::Status& status);
  void FailAllPending(const absl::Status& status);
  // Publishes RaftCore::LocalReadTicks as a time on the runtime's clock.
  // Called before each Ready is dispatched, so a window the core withdrew
  // is gone before the message that withdrew it leaves.
  void PublishLocalReadWindow();

  // Moves `*item` to `queue`, one of the inbox_ vectors, and wakes the
  // driver stage; false (and `*item` untouched) once Stop refuses new work.
  template <typename T>
  bool QueueForDriver(std::vector<T>* queue, T* item)
      ABSL_LOCKS_EXCLUDED(inbox_mu_);

  // Takes a place among the proposals in flight for one of `bytes`, or
  // false past a back-pressure bound. Callers racing each other never pass
  // on the same reading of the counters.
  bool Reserve(uint64_t bytes);
  // Wraps `done` so the back-pressure counters drop when it runs.
  ProposeCallback ReleasedWhenAnswered(ProposeCallback done, uint64_t bytes);

  const NodeDriverOptions options_;
  LogStore* const log_;                     // outlives this
  StateMachine* const state_machine_;       // outlives this
  Transport* const transport_;              // outlives this
  std::unique_ptr<Runtime> owned_runtime_;  // Start(): ours; StartOn: null
  Runtime* const runtime_;                  // owned_runtime_ or the caller's

  // Owned by the driver stage once started.
  std::unique_ptr<RaftCore> core_;
  int64_t ticks_done_ = 0;
  LogIndex applied_reported_;   // last OnApplied
  LogIndex compact_requested_;  // index of the last snapshot handed over
  uint64_t next_read_round_;    // drawn from the seed at construction
  std::map<uint64_t, ReadRound> read_rounds_;  // by ReadIndex context

  // The driver stage's inbox.
  mutable absl::Mutex inbox_mu_;
  std::vector<Proposal> inbox_proposals_ ABSL_GUARDED_BY(inbox_mu_);
  std::vector<ConfChangeRequest> inbox_conf_changes_ ABSL_GUARDED_BY(inbox_mu_);
  std::vector<TransferRequest> inbox_transfers_ ABSL_GUARDED_BY(inbox_mu_);
  std::vector<StatusCallback> inbox_reads_ ABSL_GUARDED_BY(inbox_mu_);
  std::vector<Message> inbox_messages_ ABSL_GUARDED_BY(inbox_mu_);
  uint64_t inbox_message_bytes_ ABSL_GUARDED_BY(inbox_mu_) = 0;
  std::vector<Persisted> inbox_persisted_ ABSL_GUARDED_BY(inbox_mu_);
  std::optional<LogIndex> inbox_applied_ ABSL_GUARDED_BY(inbox_mu_);
  std::optional<Snapshot> inbox_compact_ ABSL_GUARDED_BY(inbox_mu_);
  // Proposals and membership changes taken from the inbox by the driver and
  // not yet registered in pending_ (so Stop's drain does not miss them in
  // between).
  size_t proposals_at_driver_ ABSL_GUARDED_BY(inbox_mu_) = 0;
  bool accepting_ ABSL_GUARDED_BY(inbox_mu_) = true;
  bool driver_stop_ ABSL_GUARDED_BY(inbox_mu_) = false;

  // The log writer's queue.
  mutable absl::Mutex persist_mu_;
  std::deque<PersistWork> persist_queue_ ABSL_GUARDED_BY(persist_mu_);
  // Highest snapshot index made durable by the log writer; the apply stage
  // hands a snapshot to the state machine only once it is.
  LogIndex snapshot_installed_ ABSL_GUARDED_BY(persist_mu_);
  // Log-writer stage only: the term and vote of the last synced hard state.
  HardState synced_hard_state_;
  // A full disk: why proposals are refused (RefuseProposals) and the last
  // failed write, retried from retry_at_ on the Runtime clock.
  absl::Status refusal_ ABSL_GUARDED_BY(persist_mu_);
  absl::Status write_error_ ABSL_GUARDED_BY(persist_mu_);
  absl::Duration retry_at_ ABSL_GUARDED_BY(persist_mu_);
  absl::Duration retry_backoff_ ABSL_GUARDED_BY(persist_mu_);
  // refusal_ or write_error_ is set: read without the lock on the
  // propose path and by the driver stage.
  std::atomic<bool> log_stalled_{false};
  // Driver stage: the tick ExpireWaitingReads last looked at.
  int64_t waiting_reads_checked_tick_ = -1;
  // Driver stage: the tick of the last hand-over attempt, and the voters
  // tried since the log stalled (each once before any twice: a target that
  // cannot lead either, its own disk full or down, must not be chosen
  // again and again while a healthy voter waits).
  int64_t handover_tick_ = -1000000;
  std::set<NodeId> handover_tried_;

  // The apply stage's queue.
  absl::Mutex apply_mu_;
  std::deque<ApplyWork> apply_queue_ ABSL_GUARDED_BY(apply_mu_);
  // Apply stage only: the index of a newer snapshot that superseded one
  // still queued here. Work at or below it is skipped: that snapshot, when
  // its turn comes, holds it all.
  LogIndex apply_skip_through_;
  // Apply stage only: the state machine gave up a write at shutdown. Nothing
  // after it is applied: the next start replays the log from the last
  // applied index, and an entry applied past the lost ones would move that
  // index over them.
  bool apply_gave_up_ = false;

  // Proposals appended to the log and waiting to be applied, by index and
  // term (after a leadership change, proposals of two terms may wait at one
  // index). Inserted by the driver stage, completed by the apply stage.
  mutable absl::Mutex pending_mu_;
  std::map<std::pair<LogIndex, Term>, PendingProposal> pending_
      ABSL_GUARDED_BY(pending_mu_);
  // Apply stage only: the highest term AbandonProposalsAfter walked for.
  Term abandoned_below_;

  // Reads whose read index is known, waiting for the apply stage to reach
  // it. `applied_for_reads_` is the apply stage's progress, kept under the
  // same lock so a read is never registered just after its index passed.
  // A read still waiting at `expires` (runtime clock) is answered
  // Unavailable by the driver stage: an apply stage stuck on a full disk
  // must not hold every read made meanwhile, callbacks and all.
  struct WaitingRead {
    StatusCallback done;
    absl::Duration expires;
  };
  mutable absl::Mutex reads_mu_;
  std::multimap<LogIndex, WaitingRead> reads_waiting_
      ABSL_GUARDED_BY(reads_mu_);
  LogIndex applied_for_reads_ ABSL_GUARDED_BY(reads_mu_);
  bool reads_closed_ ABSL_GUARDED_BY(reads_mu_) = false;  // stopped

  mutable absl::Mutex status_mu_;
  mutable SteadyCondVar status_cv_;
  NodeStatus status_ ABSL_GUARDED_BY(status_mu_);
  // Index of the first entry of the current leader term (driver-written).
  LogIndex leader_first_index_ ABSL_GUARDED_BY(status_mu_);
  // Commit indexes leaders sent that this node had not applied yet, each
  // with when it was heard (the latest for that index), ascending in both:
  // applying through one makes this node current as of its time.
  std::deque<std::pair<LogIndex, absl::Duration>> commits_heard_
      ABSL_GUARDED_BY(status_mu_);
  // While leader (driver thread): when this node won its term (and which),
  // and when each peer's last message of that term arrived (only a
  // follower of this leader sends one; the hand-over prefers voters that
  // answer). A leader is current as of the time a quorum last heard it
  // (QuorumContact), not as of now: cut off, it leads on until CheckQuorum
  // deposes it, while another leader may commit what its reads miss.
  absl::Duration won_term_at_ = absl::ZeroDuration();
  Term won_term_;
  std::map<NodeId, absl::Duration> heard_in_term_;
  // Each member's matched index and when it last acknowledged (see
  // NodeStatus::acknowledged_at), in won_term_.
  std::map<NodeId, std::pair<LogIndex, absl::Duration>> acknowledged_;
  // Driver thread: ticks handed to the core, and when each of the last
  // 4 * election_ticks was (oldest first): heartbeats carry their tick.
  uint64_t core_ticks_ = 0;
  std::deque<absl::Duration> core_tick_times_;
  // Driver thread, while leader: the last QuorumContact found (as the
  // only voter: the last driver run).
  absl::Duration quorum_contact_ = absl::ZeroDuration();
  // Driver thread: this node is the only voter (as of the last
  // RefreshStatus): its own word is a quorum's.
  bool sole_voter_ = false;
  // Driver thread: a peer can send malformed messages as fast as it likes,
  // and each refused one would be a log line written on this thread.
  logging::LogBudget dropped_message_log_{10, absl::Minutes(1)};

  // Back-pressure: proposals accepted and not yet answered.
  std::atomic<int64_t> outstanding_proposals_{0};
  std::atomic<uint64_t> outstanding_bytes_{0};

  std::atomic<uint64_t> metric_proposals_{0};
  std::atomic<uint64_t> metric_proposals_refused_{0};
  std::atomic<uint64_t> metric_propose_batches_{0};
  std::atomic<uint64_t> metric_log_writes_{0};
  std::atomic<uint64_t> metric_log_writes_unsynced_{0};
  std::atomic<uint64_t> metric_entries_persisted_{0};
  std::atomic<uint64_t> metric_apply_batches_{0};
  std::atomic<uint64_t> metric_entries_applied_{0};
  std::atomic<uint64_t> metric_reads_{0};
  std::atomic<uint64_t> metric_read_rounds_{0};
  std::atomic<uint64_t> metric_local_reads_{0};
  // Until when (Runtime::Elapsed, in ns) the leader may read locally; 0:
  // not now. Written by the driver stage, read by any thread.
  std::atomic<int64_t> local_reads_until_ns_{0};
  // The commit index published with it (written before it): a local read
  // waits until this was applied.
  std::atomic<uint64_t> local_read_index_{0};
  // applied_for_reads_, for lock-free reading.
  std::atomic<uint64_t> applied_through_{0};
  std::atomic<uint64_t> metric_messages_dropped_{0};
  std::atomic<uint64_t> metric_snapshots_installed_{0};
  std::atomic<uint64_t> metric_log_write_failures_{0};
  metrics::LatencyHistogram metric_log_sync_latency_;

  // Callbacks to run, in order, on the completion stage: a callback
  // typically finishes a gRPC call, and gRPC then writes the response to the
  // socket on the calling thread; the apply stage does not wait for that.
  absl::Mutex completion_mu_;
  std::deque<Completion> completion_queue_ ABSL_GUARDED_BY(completion_mu_);

  absl::Mutex stop_mu_;
  bool stopped_ ABSL_GUARDED_BY(stop_mu_) = false;
};

}  // namespace sessiond::replication

#endif  // SESSIOND_REPLICATION_NODE_DRIVER_H_
