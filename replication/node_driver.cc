// Copyright sessiond authors. Licensed under the Apache License 2.0.
#include "replication/node_driver.h"

#include <pthread.h>

#include <algorithm>
#include <cstdio>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/check.h"
#include "common/fault_point.h"

namespace sessiond::replication {
namespace {

// Upper bound on entries handed to one StateMachine::Apply call, so a long
// replay after a restart completes callbacks and reports progress as it goes
// instead of holding the whole log in one batch.
constexpr size_t kMaxApplyBatch = 4096;

absl::Status ShuttingDown() { return absl::UnavailableError("shutting down"); }

absl::Status LeadershipChanged() {
  return absl::UnavailableError("leadership changed; retry");
}

}  // namespace

absl::StatusOr<std::unique_ptr<NodeDriver>> NodeDriver::Start(
    const NodeDriverOptions& options, LogStore* log,
    StateMachine* state_machine, Transport* transport) {
  if (options.tick_interval <= std::chrono::milliseconds(0)) {
    return absl::InvalidArgumentError("tick_interval must be positive");
  }
  // Entries the state machine already holds (its applied index is durable
  // with its state) are not handed out again; the apply thread also skips
  // any at or below it, for a core that clamps this to its known commit.
  RaftConfig raft = options.raft;
  if (raft.applied < state_machine->applied_index()) {
    raft.applied = state_machine->applied_index();
  }
  auto core = RaftCore::Create(raft, log, options.seed);
  if (!core.ok()) return core.status();
  std::unique_ptr<NodeDriver> driver(new NodeDriver(
      options, log, state_machine, transport, std::move(core).value()));

  // A group whose only voter is this node has nobody to wait for: campaign
  // now instead of after an election timeout. Done before the driver thread
  // exists, so the core is still ours to touch.
  const ConfState conf = driver->core_->status().conf_state;
  if (conf.voters.size() == 1 && conf.voters[0] == options.raft.id) {
    driver->core_->Campaign();
  }
  driver->RefreshStatus();

  // Named threads make profiles and debugger sessions readable.
  driver->log_writer_thread_ = std::thread([d = driver.get()] {
    pthread_setname_np(pthread_self(), "sd-logwriter");
    d->LogWriterLoop();
  });
  driver->apply_thread_ = std::thread([d = driver.get()] {
    pthread_setname_np(pthread_self(), "sd-apply");
    d->ApplyLoop();
  });
  driver->driver_thread_ = std::thread([d = driver.get()] {
    pthread_setname_np(pthread_self(), "sd-driver");
    d->DriverLoop();
  });
  driver->ticker_thread_ = std::thread([d = driver.get()] {
    pthread_setname_np(pthread_self(), "sd-ticker");
    d->TickerLoop();
  });
  driver->completion_thread_ = std::thread([d = driver.get()] {
    pthread_setname_np(pthread_self(), "sd-complete");
    d->CompletionLoop();
  });
  return driver;
}

NodeDriver::NodeDriver(const NodeDriverOptions& options, LogStore* log,
                       StateMachine* state_machine, Transport* transport,
                       std::unique_ptr<RaftCore> core)
    : options_(options),
      log_(log),
      state_machine_(state_machine),
      transport_(transport),
      core_(std::move(core)) {
  absl::MutexLock lock(&status_mu_);
  status_.id = options.raft.id;
  status_.applied = state_machine_->applied_index();
}

NodeDriver::~NodeDriver() { Stop(); }

void NodeDriver::Propose(std::string command, ProposeCallback done) {
  {
    absl::MutexLock lock(&inbox_mu_);
    if (accepting_) {
      inbox_proposals_.push_back(Proposal{std::move(command), std::move(done)});
      metric_proposals_.fetch_add(1, std::memory_order_relaxed);
      inbox_cv_.Signal();
      return;
    }
  }
  done(ShuttingDown());
}

void NodeDriver::CompactLog(LogIndex through) {
  absl::MutexLock lock(&inbox_mu_);
  if (driver_stop_) return;
  if (!inbox_compact_ || *inbox_compact_ < through) inbox_compact_ = through;
  inbox_cv_.Signal();
}

void NodeDriver::Deliver(std::vector<Message> messages) {
  if (messages.empty()) return;
  absl::MutexLock lock(&inbox_mu_);
  if (driver_stop_) return;
  for (Message& m : messages) inbox_messages_.push_back(std::move(m));
  inbox_cv_.Signal();
}

NodeDriverMetrics NodeDriver::metrics() const {
  NodeDriverMetrics m;
  m.proposals = metric_proposals_.load(std::memory_order_relaxed);
  m.propose_batches = metric_propose_batches_.load(std::memory_order_relaxed);
  m.log_writes = metric_log_writes_.load(std::memory_order_relaxed);
  m.entries_persisted =
      metric_entries_persisted_.load(std::memory_order_relaxed);
  m.apply_batches = metric_apply_batches_.load(std::memory_order_relaxed);
  m.entries_applied = metric_entries_applied_.load(std::memory_order_relaxed);
  return m;
}

NodeStatus NodeDriver::status() const {
  absl::MutexLock lock(&status_mu_);
  return status_;
}

bool NodeDriver::WaitUntilLeaderCaughtUp(absl::Duration timeout) const {
  const absl::Time deadline = absl::Now() + timeout;
  absl::MutexLock lock(&status_mu_);
  while (!status_.leader_caught_up) {
    if (status_cv_.WaitWithDeadline(&status_mu_, deadline)) {
      return status_.leader_caught_up;
    }
  }
  return true;
}

void NodeDriver::Stop() {
  {
    absl::MutexLock lock(&stop_mu_);
    if (stopped_) return;
    stopped_ = true;
  }
  {
    absl::MutexLock lock(&inbox_mu_);
    accepting_ = false;
  }
  // Drain: proposals already accepted are finished, not dropped, unless the
  // group cannot commit them in time (no quorum).
  const absl::Time deadline =
      absl::Now() + absl::FromChrono(options_.drain_timeout);
  while (absl::Now() < deadline) {
    bool idle;
    {
      absl::MutexLock lock(&inbox_mu_);
      idle = inbox_proposals_.empty() && proposals_at_driver_ == 0;
    }
    if (idle) {
      absl::MutexLock lock(&pending_mu_);
      idle = pending_.empty();
    }
    if (idle) break;
    absl::SleepFor(absl::Milliseconds(1));
  }

  {
    absl::MutexLock lock(&inbox_mu_);
    ticker_stop_ = true;
    driver_stop_ = true;
    inbox_cv_.SignalAll();
    ticker_cv_.SignalAll();
  }
  if (ticker_thread_.joinable()) ticker_thread_.join();
  if (driver_thread_.joinable()) driver_thread_.join();
  // The log writer and the apply thread finish what the driver handed them:
  // nothing acknowledged depends on it, but there is no reason to drop it.
  {
    absl::MutexLock lock(&persist_mu_);
    persist_stop_ = true;
    persist_cv_.SignalAll();
  }
  if (log_writer_thread_.joinable()) log_writer_thread_.join();
  {
    absl::MutexLock lock(&apply_mu_);
    apply_stop_ = true;
    apply_cv_.SignalAll();
  }
  if (apply_thread_.joinable()) apply_thread_.join();
  {
    absl::MutexLock lock(&completion_mu_);
    completion_stop_ = true;
    completion_cv_.SignalAll();
  }
  if (completion_thread_.joinable()) completion_thread_.join();
  FailAllPending(ShuttingDown());
}

void NodeDriver::TickerLoop() {
  absl::MutexLock lock(&inbox_mu_);
  absl::Time next = absl::Now() + absl::FromChrono(options_.tick_interval);
  while (!ticker_stop_) {
    // WaitWithDeadline may also wake for driver signals; only count a tick
    // when its time has come.
    ticker_cv_.WaitWithDeadline(&inbox_mu_, next);
    if (ticker_stop_) break;
    const absl::Time now = absl::Now();
    if (now < next) continue;
    ++inbox_ticks_;
    inbox_cv_.Signal();
    next += absl::FromChrono(options_.tick_interval);
    // After a long stall, do not fire a burst of catch-up ticks.
    if (next < now) next = now + absl::FromChrono(options_.tick_interval);
  }
}

void NodeDriver::DriverLoop() {
  // Start() may have left work in the core (a one-voter Campaign): hand it
  // out before the first wait, not at the first tick.
  while (core_->HasReady()) Dispatch(core_->TakeReady());
  RefreshStatus();
  for (;;) {
    std::vector<Proposal> proposals;
    std::vector<Message> messages;
    std::vector<Persisted> persisted;
    std::optional<LogIndex> applied;
    std::optional<LogIndex> compact;
    uint64_t ticks = 0;
    bool stop = false;
    {
      absl::MutexLock lock(&inbox_mu_);
      while (!driver_stop_ && inbox_proposals_.empty() &&
             inbox_messages_.empty() && inbox_ticks_ == 0 &&
             inbox_persisted_.empty() && !inbox_applied_ && !inbox_compact_) {
        inbox_cv_.Wait(&inbox_mu_);
      }
      stop = driver_stop_;
      proposals.swap(inbox_proposals_);
      proposals_at_driver_ = proposals.size();
      messages.swap(inbox_messages_);
      persisted.swap(inbox_persisted_);
      applied.swap(inbox_applied_);
      compact.swap(inbox_compact_);
      ticks = inbox_ticks_;
      inbox_ticks_ = 0;
    }
    if (stop) {
      for (Proposal& p : proposals) p.done(ShuttingDown());
      return;
    }

    for (uint64_t i = 0; i < ticks; ++i) core_->Tick();
    for (const Message& m : messages) {
      const absl::Status s = core_->Step(m);
      if (!s.ok()) {
        std::fprintf(stderr, "node_driver: dropped %s from %llu: %s\n",
                     MessageTypeName(m.type),
                     static_cast<unsigned long long>(m.from.value()),
                     s.ToString().c_str());
      }
    }
    for (Persisted& p : persisted) {
      if (p.snapshot_index) core_->OnSnapshotInstalled(*p.snapshot_index);
      if (p.through) core_->OnPersisted(p.through->first, p.through->second);
      if (p.compacted_index) core_->OnCompacted(*p.compacted_index);
      // Votes and append acknowledgements promise durable state: they leave
      // only now, after OnPersisted (raft_core.h rule 4).
      if (!p.send_after_persist.empty()) {
        transport_->Send(std::move(p.send_after_persist));
      }
    }
    if (applied) {
      core_->OnApplied(*applied);
      if (applied_reported_ < *applied) applied_reported_ = *applied;
    }
    if (compact) RequestCompaction(*compact);
    const bool proposed = !proposals.empty();
    if (proposed) ProposeBatch(std::move(proposals));

    while (core_->HasReady()) Dispatch(core_->TakeReady());
    RefreshStatus();
    if (proposed) {
      // Now registered as pending (or answered): Stop's drain sees them.
      absl::MutexLock lock(&inbox_mu_);
      proposals_at_driver_ = 0;
    }
  }
}

void NodeDriver::RequestCompaction(LogIndex through) {
  // Never past what the core was told is applied (OnCompacted's contract),
  // and never below what is already compacted.
  if (through > applied_reported_) through = applied_reported_;
  if (through <= compact_requested_ || through < log_->FirstIndex()) return;
  const absl::StatusOr<Term> term = log_->TermAt(through);
  if (!term.ok()) {
    std::fprintf(stderr, "node_driver: not compacting through %llu: %s\n",
                 static_cast<unsigned long long>(through.value()),
                 term.status().ToString().c_str());
    return;
  }
  Snapshot snapshot;
  snapshot.meta.index = through;
  snapshot.meta.term = *term;
  snapshot.meta.conf_state = core_->status().conf_state;
  compact_requested_ = through;
  PersistWork work;
  work.compact = std::move(snapshot);
  absl::MutexLock lock(&persist_mu_);
  persist_queue_.push_back(std::move(work));
  persist_cv_.Signal();
}

void NodeDriver::ProposeBatch(std::vector<Proposal> proposals) {
  std::vector<std::string> commands;
  commands.reserve(proposals.size());
  for (Proposal& p : proposals) commands.push_back(std::move(p.command));
  const absl::StatusOr<LogIndex> last = core_->Propose(std::move(commands));
  metric_propose_batches_.fetch_add(1, std::memory_order_relaxed);
  if (!last.ok()) {
    for (Proposal& p : proposals) p.done(last.status());
    return;
  }
  const Term term = core_->term();
  const LogIndex first = *last - (proposals.size() - 1);
  std::vector<ProposeCallback> superseded;
  {
    absl::MutexLock lock(&pending_mu_);
    for (size_t i = 0; i < proposals.size(); ++i) {
      auto [it, inserted] = pending_.try_emplace(
          first + i, PendingProposal{term, std::move(proposals[i].done)});
      if (!inserted) {
        // An earlier proposal at this index was truncated away by a newer
        // leader before it committed; it can no longer succeed.
        superseded.push_back(std::move(it->second.done));
        it->second = PendingProposal{term, std::move(proposals[i].done)};
      }
    }
  }
  for (ProposeCallback& done : superseded) done(LeadershipChanged());
}

void NodeDriver::Dispatch(Ready ready) {
  if (!ready.send_now.empty()) transport_->Send(std::move(ready.send_now));

  if (ready.hard_state || !ready.to_persist.empty() || ready.snapshot ||
      !ready.send_after_persist.empty()) {
    PersistWork work;
    work.entries = std::move(ready.to_persist);
    work.hard_state = ready.hard_state;
    work.snapshot = ready.snapshot;
    work.send_after_persist = std::move(ready.send_after_persist);
    absl::MutexLock lock(&persist_mu_);
    persist_queue_.push_back(std::move(work));
    persist_cv_.Signal();
  }

  if (ready.snapshot || !ready.committed.empty()) {
    ApplyWork work;
    work.snapshot = std::move(ready.snapshot);
    work.entries = std::move(ready.committed);
    absl::MutexLock lock(&apply_mu_);
    apply_queue_.push_back(std::move(work));
    apply_cv_.Signal();
  }
  // ready.read_states: no caller issues ReadIndex requests yet (reads are
  // served from the leader's state machine once it is caught up); they are
  // dropped until linearizable follower reads are built.
}

void NodeDriver::RefreshStatus() {
  const RaftStatus raft = core_->status();
  absl::MutexLock lock(&status_mu_);
  if (raft.role == Role::kLeader &&
      (status_.role != Role::kLeader || status_.term != raft.term)) {
    // Every entry a previous leader could have committed is at or below our
    // last index at the moment we won; once applied through it, local reads
    // see all of them.
    leader_first_index_ = raft.last_index;
  }
  status_.role = raft.role;
  status_.term = raft.term;
  status_.leader = raft.leader;
  status_.commit = raft.commit;
  status_.leader_caught_up =
      raft.role == Role::kLeader && status_.applied >= leader_first_index_;
  status_cv_.SignalAll();
}

void NodeDriver::LogWriterLoop() {
  for (;;) {
    std::deque<PersistWork> work;
    {
      absl::MutexLock lock(&persist_mu_);
      while (!persist_stop_ && persist_queue_.empty()) {
        persist_cv_.Wait(&persist_mu_);
      }
      if (persist_queue_.empty()) return;  // stopping, nothing left
      work.swap(persist_queue_);
    }

    // Group commit: everything queued since the last write goes into one
    // synced Append. A snapshot splits the group, since it replaces the log.
    std::vector<Persisted> done;
    std::vector<Entry> batch;
    std::optional<HardState> hard_state;
    std::vector<Message> messages;
    auto flush = [&] {
      Persisted p;
      if (!batch.empty() || hard_state) {
        SESSIOND_FAULT_POINT("log.before_append");
        // Never acknowledged when it fails: retrying could reorder durable
        // state, so the node stops (etcd's "inoperable" storage).
        SESSIOND_CHECK_OK(log_->Append(batch, hard_state, /*sync=*/true));
        SESSIOND_FAULT_POINT("log.after_append");
        metric_log_writes_.fetch_add(1, std::memory_order_relaxed);
        metric_entries_persisted_.fetch_add(batch.size(),
                                            std::memory_order_relaxed);
        if (!batch.empty()) {
          p.through = std::make_pair(batch.back().index, batch.back().term);
        }
      }
      p.send_after_persist = std::move(messages);
      if (p.through || !p.send_after_persist.empty())
        done.push_back(std::move(p));
      batch.clear();
      hard_state.reset();
      messages.clear();
    };
    for (PersistWork& w : work) {
      if (w.snapshot) {
        flush();
        SESSIOND_CHECK_OK(log_->InstallSnapshot(*w.snapshot));
        Persisted p;
        p.snapshot_index = w.snapshot->meta.index;
        done.push_back(std::move(p));
        absl::MutexLock lock(&persist_mu_);
        snapshot_installed_ =
            std::max(snapshot_installed_, w.snapshot->meta.index);
        persist_cv_.SignalAll();
      }
      if (w.compact) {
        // After the appends queued before it: compaction only drops
        // entries the state machine holds, which are all older.
        flush();
        SESSIOND_CHECK_OK(log_->Compact(*w.compact));
        Persisted p;
        p.compacted_index = w.compact->meta.index;
        done.push_back(std::move(p));
      }
      if (!w.entries.empty()) {
        // A later Ready may rewrite a suffix of an earlier one (a new
        // leader's entries replace conflicting ones): drop the replaced
        // tail from the batch; the store truncates what it already holds.
        const LogIndex first = w.entries.front().index;
        while (!batch.empty() && batch.back().index >= first) batch.pop_back();
        for (Entry& e : w.entries) batch.push_back(std::move(e));
      }
      if (w.hard_state) hard_state = w.hard_state;
      for (Message& m : w.send_after_persist) messages.push_back(std::move(m));
    }
    flush();

    if (!done.empty()) {
      absl::MutexLock lock(&inbox_mu_);
      for (Persisted& p : done) inbox_persisted_.push_back(std::move(p));
      inbox_cv_.Signal();
    }
  }
}

void NodeDriver::ApplyLoop() {
  for (;;) {
    std::deque<ApplyWork> work;
    {
      absl::MutexLock lock(&apply_mu_);
      while (!apply_stop_ && apply_queue_.empty()) apply_cv_.Wait(&apply_mu_);
      if (apply_queue_.empty()) return;  // stopping, nothing left
      work.swap(apply_queue_);
    }

    std::vector<Entry> batch;
    auto flush = [&] {
      if (batch.empty()) return;
      SESSIOND_FAULT_POINT("apply.before_apply");
      absl::StatusOr<std::vector<ApplyResult>> results =
          state_machine_->Apply(batch);
      SESSIOND_FAULT_POINT("apply.after_apply");
      // The state could not be written: going on would answer proposals from
      // a state that is not what the log says.
      SESSIOND_CHECK_OK(results.status());
      SESSIOND_CHECK_MSG(results->size() == batch.size(),
                         "StateMachine::Apply returned the wrong result count");
      const LogIndex through = batch.back().index;
      metric_apply_batches_.fetch_add(1, std::memory_order_relaxed);
      metric_entries_applied_.fetch_add(batch.size(),
                                        std::memory_order_relaxed);
      // The core hears "applied" before any proposer does, so whatever a
      // proposer does next (e.g. CompactLog) sees it.
      {
        absl::MutexLock lock(&inbox_mu_);
        if (!inbox_applied_ || *inbox_applied_ < through)
          inbox_applied_ = through;
        inbox_cv_.Signal();
      }
      CompleteProposals(batch, &*results);
      batch.clear();
      absl::MutexLock lock(&status_mu_);
      status_.applied = through;
      status_.leader_caught_up =
          status_.role == Role::kLeader && through >= leader_first_index_;
      status_cv_.SignalAll();
    };

    for (ApplyWork& w : work) {
      if (w.snapshot) {
        flush();
        const LogIndex index = w.snapshot->meta.index;
        {
          // The snapshot is handed to the state machine only once the log
          // store holds it durably (raft_core.h rule 2).
          absl::MutexLock lock(&persist_mu_);
          while (snapshot_installed_ < index) persist_cv_.Wait(&persist_mu_);
        }
        SESSIOND_CHECK_OK(state_machine_->ApplySnapshot(*w.snapshot));
        // Proposals at or below the snapshot were decided elsewhere; this
        // node cannot tell their results, so the callers retry.
        std::vector<ProposeCallback> lost;
        {
          absl::MutexLock lock(&pending_mu_);
          while (!pending_.empty() && pending_.begin()->first <= index) {
            lost.push_back(std::move(pending_.begin()->second.done));
            pending_.erase(pending_.begin());
          }
        }
        std::vector<Completion> calls;
        for (ProposeCallback& done : lost) {
          calls.push_back(Completion{std::move(done), LeadershipChanged()});
        }
        PostCompletions(std::move(calls));
        {
          absl::MutexLock lock(&inbox_mu_);
          if (!inbox_applied_ || *inbox_applied_ < index)
            inbox_applied_ = index;
          inbox_cv_.Signal();
        }
        absl::MutexLock lock(&status_mu_);
        status_.applied = index;
      }
      for (Entry& e : w.entries) {
        // Applied before a restart (the state machine's applied index is
        // durable with its state); the core hands them out again because it
        // only knows the log.
        if (e.index <= state_machine_->applied_index()) continue;
        batch.push_back(std::move(e));
        if (batch.size() >= kMaxApplyBatch) flush();
      }
    }
    flush();
  }
}

void NodeDriver::CompleteProposals(const std::vector<Entry>& entries,
                                   std::vector<ApplyResult>* results) {
  std::vector<Completion> calls;
  {
    absl::MutexLock lock(&pending_mu_);
    if (pending_.empty()) return;
    for (size_t i = 0; i < entries.size(); ++i) {
      auto it = pending_.find(entries[i].index);
      if (it == pending_.end()) continue;
      if (it->second.term == entries[i].term) {
        calls.push_back(
            Completion{std::move(it->second.done), std::move((*results)[i])});
      } else {
        // Another leader's entry took this index: ours was never committed.
        calls.push_back(
            Completion{std::move(it->second.done), LeadershipChanged()});
      }
      pending_.erase(it);
    }
  }
  PostCompletions(std::move(calls));
}

void NodeDriver::PostCompletions(std::vector<Completion> calls) {
  if (calls.empty()) return;
  absl::MutexLock lock(&completion_mu_);
  for (Completion& c : calls) completion_queue_.push_back(std::move(c));
  completion_cv_.Signal();
}

void NodeDriver::CompletionLoop() {
  for (;;) {
    std::deque<Completion> calls;
    {
      absl::MutexLock lock(&completion_mu_);
      while (!completion_stop_ && completion_queue_.empty()) {
        completion_cv_.Wait(&completion_mu_);
      }
      if (completion_queue_.empty()) return;  // stopping, nothing left
      calls.swap(completion_queue_);
    }
    for (Completion& c : calls) c.done(std::move(c.result));
  }
}

void NodeDriver::FailAllPending(const absl::Status& status) {
  std::map<LogIndex, PendingProposal> pending;
  {
    absl::MutexLock lock(&pending_mu_);
    pending.swap(pending_);
  }
  for (auto& [index, p] : pending) p.done(status);
}

}  // namespace sessiond::replication
