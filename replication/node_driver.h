// Copyright sessiond authors. Licensed under the Apache License 2.0.
//
// NodeDriver: the threads around the pure RaftCore (the role of etcd-io/raft's
// node.go and of tikv's raftstore apply/propose loop). The write path:
//
//   caller --Propose--> inbox --driver thread--> RaftCore::Propose (one call
//   for every proposal queued since the last loop) --TakeReady-->
//     send_now           -> Transport, at once
//     to_persist/hard    -> log-writer thread: ONE synced LogStore::Append for
//                           all work queued since its last write (group
//                           commit), then "persisted through (index, term)"
//                           back to the inbox
//     send_after_persist -> held by the log writer's batch, sent by the driver
//                           after OnPersisted for that batch
//     committed          -> apply thread: StateMachine::Apply in batches,
//                           then "applied through" back to the inbox; the
//                           proposers' callbacks (matched by index AND term)
//                           go to the completion thread
//   ticker thread        -> a tick into the inbox every tick_interval
//
// Thread map (STYLE.md 2.4):
//   driver thread      sole owner of the RaftCore; never blocks on disk.
//   log-writer thread  sole writer of the LogStore (reads come from the core
//                      on the driver thread, which the LogStore contract
//                      allows concurrently).
//   apply thread       sole caller of StateMachine::Apply/ApplySnapshot.
//   completion thread  runs the proposers' callbacks, in log order (a
//                      callback that finishes a gRPC call sends the response
//                      on this thread, not on the apply thread).
//   ticker thread      only posts ticks.
// Fault points (common/fault_point.h), for crash tests on the real binary:
//   log.before_append, log.after_append    around the synced log write
//   apply.before_apply, apply.after_apply  around StateMachine::Apply
// Lock order: no lock of this class is held while taking another, and none
// is held while calling a callback, the LogStore, the StateMachine or the
// Transport.
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
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "replication/core/raft_core.h"
#include "replication/log_store.h"
#include "replication/state_machine.h"
#include "replication/transport.h"

namespace sessiond::replication {

struct NodeDriverOptions {
  RaftConfig raft;
  // Logical time: one RaftCore::Tick per interval. With the default
  // election_ticks of 10 an election starts after 1-2 s without a leader.
  std::chrono::milliseconds tick_interval{100};
  // Seeds the core's random choices (election timeouts).
  uint64_t seed = 1;
  // Stop() waits at most this long for proposals in flight to complete; the
  // rest are answered Unavailable "shutting down".
  std::chrono::milliseconds drain_timeout{5000};
};

// What the driver knows about its node, for status pages, health checks and
// tests. A copy: it may be stale by the time it is read.
struct NodeStatus {
  NodeId id;
  Role role = Role::kFollower;
  Term term;
  NodeId leader;  // 0 when unknown
  LogIndex commit;
  LogIndex applied;  // the state machine's applied index
  // True when this node is leader and has applied every entry up to the
  // first entry of its term: reads of the local state machine see every
  // write acknowledged by any earlier leader.
  bool leader_caught_up = false;
};

// Counters since Start, for status pages and benchmarks: proposals per
// RaftCore::Propose call and per synced log write show how well group
// commit batches.
struct NodeDriverMetrics {
  uint64_t proposals = 0;        // Propose() calls accepted
  uint64_t propose_batches = 0;  // RaftCore::Propose calls
  uint64_t log_writes = 0;       // synced LogStore::Append calls
  uint64_t entries_persisted = 0;
  uint64_t apply_batches = 0;  // StateMachine::Apply calls
  uint64_t entries_applied = 0;
};

// Thread-safe. Owned by the composition root (server/daemon.cc). The
// LogStore, StateMachine and Transport must outlive the driver (until Stop()
// returns or the driver is destroyed).
class NodeDriver : public MessageSink {
 public:
  using ProposeCallback = std::function<void(ApplyResult)>;

  // Builds the core from `log`'s durable state and starts the threads. A
  // group whose only voter is this node campaigns at once and becomes
  // leader without waiting for an election timeout.
  //
  // Entries at or below state_machine->applied_index() were applied before
  // a restart; they are not applied again. Entries past it are applied as
  // soon as the core hands them out as committed (after the new term's
  // first entry commits).
  // Errors: those of RaftCore::Create (InvalidArgument, DataLoss).
  static absl::StatusOr<std::unique_ptr<NodeDriver>> Start(
      const NodeDriverOptions& options, LogStore* log,
      StateMachine* state_machine, Transport* transport);

  // Stops if still running.
  ~NodeDriver() override;
  NodeDriver(const NodeDriver&) = delete;
  NodeDriver& operator=(const NodeDriver&) = delete;

  // Queues `command` for the log; never blocks on the core or the disk.
  // Proposals queued together are appended with one RaftCore::Propose and
  // persisted with one synced write. `done` is called exactly once and must
  // not block: from the completion thread (applied), the driver thread
  // (refused by the core), or the calling thread of Propose or Stop
  // (shutting down):
  //   the state machine's ApplyResult once the entry is committed and applied;
  //   Unavailable when this node is not the leader (the message names the
  //     leader when known), when leadership changed before the entry
  //     committed ("leadership changed; retry"), or "shutting down";
  //   ResourceExhausted when the core refuses more uncommitted data.
  void Propose(std::string command, ProposeCallback done);

  // Drops log entries through `through` (or through the applied index
  // reported to the core, if lower), asynchronously, on the log-writer
  // thread. REQUIRES: the state machine holds those entries durably; its
  // Apply writes need not be synced, so the caller must make them durable
  // first (the daemon syncs the RocksDB WAL that the state and the log
  // share after reading applied_index()). A later, higher request
  // supersedes an earlier one.
  void CompactLog(LogIndex through);

  // Raft messages from peers (called by the Transport).
  void Deliver(std::vector<Message> messages) override;

  // Stops accepting proposals (Unavailable "shutting down"), waits up to
  // drain_timeout for those in flight, then joins every thread. Idempotent.
  void Stop();

  NodeStatus status() const;
  NodeDriverMetrics metrics() const;

  // Blocks until this node is leader and caught up (see NodeStatus), or
  // `timeout` passes. Returns whether it is.
  bool WaitUntilLeaderCaughtUp(absl::Duration timeout) const;

 private:
  // Work for the log writer: one Ready's durable part.
  struct PersistWork {
    std::vector<Entry> entries;
    std::optional<HardState> hard_state;
    std::optional<Snapshot> snapshot;
    // Log compaction (LogStore::Compact) through compact->meta.index.
    std::optional<Snapshot> compact;
    std::vector<Message> send_after_persist;
  };
  // Work for the apply thread, in log order.
  struct ApplyWork {
    std::optional<Snapshot> snapshot;
    std::vector<Entry> entries;
  };
  struct Proposal {
    std::string command;
    ProposeCallback done;
  };
  struct PendingProposal {
    Term term;
    ProposeCallback done;
  };
  struct Completion {
    ProposeCallback done;
    ApplyResult result;
  };
  // One persisted batch, reported back to the driver thread.
  struct Persisted {
    std::optional<std::pair<LogIndex, Term>> through;
    std::optional<LogIndex> snapshot_index;
    std::optional<LogIndex> compacted_index;
    std::vector<Message> send_after_persist;
  };

  NodeDriver(const NodeDriverOptions& options, LogStore* log,
             StateMachine* state_machine, Transport* transport,
             std::unique_ptr<RaftCore> core);

  void DriverLoop();
  void LogWriterLoop();
  void ApplyLoop();
  void TickerLoop();

  // Driver thread: hands one Ready's parts to the transport and threads.
  void Dispatch(Ready ready);
  void ProposeBatch(std::vector<Proposal> proposals);
  void RequestCompaction(LogIndex through);
  void RefreshStatus();

  // Apply thread: completes callbacks for applied entries.
  void CompleteProposals(const std::vector<Entry>& entries,
                         std::vector<ApplyResult>* results);
  // Hands callbacks to the completion thread, in order.
  void PostCompletions(std::vector<Completion> calls);
  void CompletionLoop();
  void FailAllPending(const absl::Status& status);

  const NodeDriverOptions options_;
  LogStore* const log_;                // outlives this
  StateMachine* const state_machine_;  // outlives this
  Transport* const transport_;         // outlives this

  // Owned by the driver thread once Start() returns.
  std::unique_ptr<RaftCore> core_;
  LogIndex applied_reported_;   // last OnApplied (driver thread)
  LogIndex compact_requested_;  // last compaction handed to the log writer

  // The driver's inbox. inbox_cv_ wakes the driver thread, ticker_cv_ the
  // ticker (which sleeps on inbox_mu_ so Stop can wake it).
  mutable absl::Mutex inbox_mu_;
  absl::CondVar inbox_cv_;
  absl::CondVar ticker_cv_;
  std::vector<Proposal> inbox_proposals_ ABSL_GUARDED_BY(inbox_mu_);
  std::vector<Message> inbox_messages_ ABSL_GUARDED_BY(inbox_mu_);
  uint64_t inbox_ticks_ ABSL_GUARDED_BY(inbox_mu_) = 0;
  std::vector<Persisted> inbox_persisted_ ABSL_GUARDED_BY(inbox_mu_);
  std::optional<LogIndex> inbox_applied_ ABSL_GUARDED_BY(inbox_mu_);
  std::optional<LogIndex> inbox_compact_ ABSL_GUARDED_BY(inbox_mu_);
  // Proposals taken from the inbox by the driver and not yet registered in
  // pending_ (so Stop's drain does not miss them in between).
  size_t proposals_at_driver_ ABSL_GUARDED_BY(inbox_mu_) = 0;
  bool accepting_ ABSL_GUARDED_BY(inbox_mu_) = true;
  bool driver_stop_ ABSL_GUARDED_BY(inbox_mu_) = false;
  bool ticker_stop_ ABSL_GUARDED_BY(inbox_mu_) = false;

  // The log writer's queue.
  absl::Mutex persist_mu_;
  absl::CondVar persist_cv_;
  std::deque<PersistWork> persist_queue_ ABSL_GUARDED_BY(persist_mu_);
  bool persist_stop_ ABSL_GUARDED_BY(persist_mu_) = false;
  // Highest snapshot index made durable by the log writer; the apply thread
  // waits for it before handing a snapshot to the state machine.
  LogIndex snapshot_installed_ ABSL_GUARDED_BY(persist_mu_);

  // The apply thread's queue.
  absl::Mutex apply_mu_;
  absl::CondVar apply_cv_;
  std::deque<ApplyWork> apply_queue_ ABSL_GUARDED_BY(apply_mu_);
  bool apply_stop_ ABSL_GUARDED_BY(apply_mu_) = false;

  // Proposals appended to the log and waiting to be applied, by index.
  // Inserted by the driver thread, completed by the apply thread.
  mutable absl::Mutex pending_mu_;
  std::map<LogIndex, PendingProposal> pending_ ABSL_GUARDED_BY(pending_mu_);

  mutable absl::Mutex status_mu_;
  mutable absl::CondVar status_cv_;
  NodeStatus status_ ABSL_GUARDED_BY(status_mu_);
  // Index of the first entry of the current leader term (driver-written).
  LogIndex leader_first_index_ ABSL_GUARDED_BY(status_mu_);

  std::atomic<uint64_t> metric_proposals_{0};
  std::atomic<uint64_t> metric_propose_batches_{0};
  std::atomic<uint64_t> metric_log_writes_{0};
  std::atomic<uint64_t> metric_entries_persisted_{0};
  std::atomic<uint64_t> metric_apply_batches_{0};
  std::atomic<uint64_t> metric_entries_applied_{0};

  // Callbacks to run, in order, on the completion thread: a callback
  // typically finishes a gRPC call, and gRPC then writes the response to the
  // socket on the calling thread; the apply thread does not wait for that.
  absl::Mutex completion_mu_;
  absl::CondVar completion_cv_;
  std::deque<Completion> completion_queue_ ABSL_GUARDED_BY(completion_mu_);
  bool completion_stop_ ABSL_GUARDED_BY(completion_mu_) = false;

  absl::Mutex stop_mu_;
  bool stopped_ ABSL_GUARDED_BY(stop_mu_) = false;

  std::thread driver_thread_;
  std::thread log_writer_thread_;
  std::thread apply_thread_;
  std::thread ticker_thread_;
  std::thread completion_thread_;
};

}  // namespace sessiond::replication

#endif  // SESSIOND_REPLICATION_NODE_DRIVER_H_
