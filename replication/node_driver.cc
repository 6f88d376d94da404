// Copyright sessiond authors. Licensed under the Apache License 2.0.
#include "replication/node_driver.h"

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <iterator>
#include <limits>
#include <optional>
#include <utility>

#include "absl/strings/cord.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/bounded_counter.h"
#include "common/check.h"
#include "common/fault_point.h"
#include "common/log.h"
#include "common/rng.h"
#include "replication/thread_runtime.h"

namespace sessiond::replication {
namespace {

// Upper bound on entries handed to one StateMachine::Apply call, so a long
// replay after a restart completes callbacks and reports progress as it goes
// instead of holding the whole log in one batch.
constexpr size_t kMaxApplyBatch = 4096;

absl::Status ShuttingDown() { return absl::UnavailableError("shutting down"); }

// `refusal`, marked as refused before anything was appended.
absl::Status NotAppended(absl::Status refusal) {
  refusal.SetPayload(kNotAppendedPayload, absl::Cord("1"));
  return refusal;
}

absl::Status LeadershipChanged() {
  return absl::UnavailableError("leadership changed; retry");
}

bool FromLeader(MessageType type) {
  return type == MessageType::kAppend || type == MessageType::kHeartbeat ||
         type == MessageType::kSnapshot;
}

}  // namespace

absl::StatusOr<std::unique_ptr<NodeDriver>> NodeDriver::Start(
    const NodeDriverOptions& options, LogStore* log,
    StateMachine* state_machine, Transport* transport) {
  auto runtime =
      std::make_unique<ThreadRuntime>(absl::FromChrono(options.tick_interval));
  Runtime* raw = runtime.get();
  absl::StatusOr<std::unique_ptr<NodeDriver>> driver =
      StartOn(options, log, state_machine, transport, raw);
  if (driver.ok()) (*driver)->owned_runtime_ = std::move(runtime);
  return driver;
}

absl::StatusOr<std::unique_ptr<NodeDriver>> NodeDriver::StartOn(
    const NodeDriverOptions& options, LogStore* log,
    StateMachine* state_machine, Transport* transport, Runtime* runtime) {
  if (options.tick_interval <= std::chrono::milliseconds(0)) {
    return absl::InvalidArgumentError("tick_interval must be positive");
  }
  // Entries the state machine already holds (its applied index is durable
  // with its state) are not handed out again; the apply stage also skips
  // any at or below it, for a core that clamps this to its known commit.
  RaftConfig raft = options.raft;
  if (raft.applied < state_machine->applied_index()) {
    raft.applied = state_machine->applied_index();
  }
  auto core = RaftCore::Create(raft, log, options.seed);
  if (!core.ok()) return core.status();
  std::unique_ptr<NodeDriver> driver(
      new NodeDriver(options, log, state_machine, transport,
                     std::move(core).value(), runtime, nullptr));

  // A group whose only voter is this node has nobody to wait for: campaign
  // now instead of after an election timeout. Done before the runtime
  // starts, so the core is still ours to touch.
  const ConfState conf = driver->core_->status().conf_state;
  if (conf.voters.size() == 1 && conf.voters[0] == options.raft.id) {
    driver->core_->Campaign();
  }
  driver->ticks_done_ =
      runtime->Elapsed() / absl::FromChrono(options.tick_interval);
  driver->RefreshStatus();
  runtime->Start(driver.get());
  // Start() may have left work in the core (a one-voter Campaign).
  runtime->Wake(Stage::kDriver);
  return driver;
}

NodeDriver::NodeDriver(const NodeDriverOptions& options, LogStore* log,
                       StateMachine* state_machine, Transport* transport,
                       std::unique_ptr<RaftCore> core, Runtime* runtime,
                       std::unique_ptr<Runtime> owned_runtime)
    : options_(options),
      log_(log),
      state_machine_(state_machine),
      transport_(transport),
      owned_runtime_(std::move(owned_runtime)),
      runtime_(runtime),
      core_(std::move(core)) {
  const HardState hs = log_->InitialHardState();
  synced_hard_state_ = hs;
  // Read rounds are numbered from a point this incarnation draws: a
  // leader's answer to a read of the node's previous incarnation, still in
  // flight across its restart, must not complete a new read that happens
  // to have the same number (a stale linearizable read; found by the
  // simulation). The daemon draws a new seed at every start.
  next_read_round_ = Rng(options.seed ^ 0x52656164526f756eULL).Next();
  {
    absl::MutexLock lock(&reads_mu_);
    applied_for_reads_ = state_machine_->applied_index();
    applied_through_.store(applied_for_reads_.value(),
                           std::memory_order_release);
  }
  absl::MutexLock lock(&status_mu_);
  status_.id = options.raft.id;
  status_.applied = state_machine_->applied_index();
}

NodeDriver::~NodeDriver() { Stop(); }

bool NodeDriver::Reserve(uint64_t bytes) {
  if (static_cast<uint64_t>(outstanding_proposals_.fetch_add(
          1, std::memory_order_relaxed)) >= options_.max_pending_proposals) {
    outstanding_proposals_.fetch_sub(1, std::memory_order_relaxed);
    return false;
  }
  // A command larger than max_pending_bytes passes when nothing else is
  // held: refused, it would be refused forever ("retry shortly").
  if (!AddWithinLimit(&outstanding_bytes_, bytes, options_.max_pending_bytes)) {
    outstanding_proposals_.fetch_sub(1, std::memory_order_relaxed);
    return false;
  }
  return true;
}

NodeDriver::ProposeCallback NodeDriver::ReleasedWhenAnswered(
    ProposeCallback done, uint64_t bytes) {
  return [this, bytes, done = std::move(done)](ApplyResult result) {
    outstanding_proposals_.fetch_sub(1, std::memory_order_relaxed);
    outstanding_bytes_.fetch_sub(bytes, std::memory_order_relaxed);
    done(std::move(result));
  };
}

template <typename T>
bool NodeDriver::QueueForDriver(std::vector<T>* queue, T* item) {
  {
    absl::MutexLock lock(&inbox_mu_);
    if (!accepting_) return false;
    queue->push_back(std::move(*item));
  }
  runtime_->Wake(Stage::kDriver);
  return true;
}

void NodeDriver::Propose(std::string command, ProposeCallback done,
                         Bound bound) {
  uint64_t bytes = command.size();
  if (log_stalled_.load(std::memory_order_acquire)) {
    if (absl::Status stall = LogStall(); !stall.ok()) {
      metric_proposals_refused_.fetch_add(1, std::memory_order_relaxed);
      done(NotAppended(std::move(stall)));
      return;
    }
  }
  // Reserved before the driver can see it, so no callback runs uncounted.
  if (bound == Bound::kExempt) {
    outstanding_proposals_.fetch_add(1, std::memory_order_relaxed);
    bytes = 0;  // not reserved
  } else if (!Reserve(bytes)) {
    metric_proposals_refused_.fetch_add(1, std::memory_order_relaxed);
    done(NotAppended(absl::ResourceExhaustedError(
        absl::StrCat("too many writes in flight (",
                     outstanding_proposals_.load(std::memory_order_relaxed),
                     " waiting for the log); retry shortly"))));
    return;
  }
  metric_proposals_.fetch_add(1, std::memory_order_relaxed);
  Proposal proposal{std::move(command),
                    ReleasedWhenAnswered(std::move(done), bytes)};
  if (!QueueForDriver(&inbox_proposals_, &proposal)) {
    metric_proposals_.fetch_sub(1, std::memory_order_relaxed);
    proposal.done(ShuttingDown());
  }
}

void NodeDriver::ProposeConfChange(const ConfChange& change,
                                   ProposeCallback done,
                                   ConfChangeCheck check) {
  if (log_stalled_.load(std::memory_order_acquire)) {
    if (absl::Status stall = LogStall(); !stall.ok()) {
      done(NotAppended(std::move(stall)));
      return;
    }
  }
  // Counted whatever the bounds: a membership change is never refused for
  // the writes in flight.
  outstanding_proposals_.fetch_add(1, std::memory_order_relaxed);
  ConfChangeRequest request{change, ReleasedWhenAnswered(std::move(done), 0),
                            std::move(check)};
  if (!QueueForDriver(&inbox_conf_changes_, &request)) {
    request.done(ShuttingDown());
  }
}

void NodeDriver::TransferLeadership(NodeId target, StatusCallback done) {
  TransferRequest request{target, std::move(done)};
  if (!QueueForDriver(&inbox_transfers_, &request)) {
    request.done(ShuttingDown());
  }
}

void NodeDriver::RefuseProposals(absl::Status reason) {
  const bool resumed = reason.ok();
  {
    absl::MutexLock lock(&persist_mu_);
    refusal_ = std::move(reason);
    // A write the disk refused is retried at once when space is back.
    if (resumed) retry_at_ = absl::ZeroDuration();
    log_stalled_.store(!refusal_.ok() || !write_error_.ok(),
                       std::memory_order_release);
  }
  PublishLogStall();
  // Resumed: retry a write the disk refused. Refusing: a leader hands over
  // at its next run.
  runtime_->Wake(resumed ? Stage::kLogWriter : Stage::kDriver);
}

absl::Status NodeDriver::LogStall() const {
  absl::MutexLock lock(&persist_mu_);
  if (!refusal_.ok()) return refusal_;
  if (!write_error_.ok()) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "this node cannot write its Raft log (", write_error_.message(),
        "); writes are refused until it can (retried by itself)"));
  }
  return absl::OkStatus();
}

void NodeDriver::PublishLogStall() {
  const absl::Status stall = LogStall();
  absl::MutexLock lock(&status_mu_);
  status_.log_stalled = !stall.ok();
  status_.log_stall = std::string(stall.message());
  status_cv_.SignalAll();
}

void NodeDriver::HandOverIfStalled() {
  if (!log_stalled_.load(std::memory_order_acquire)) {
    handover_tried_.clear();
    return;
  }
  // A failed write is retried by the log writer, which only the driver
  // stage's runs (every tick) wake while it waits.
  runtime_->Wake(Stage::kLogWriter);
  if (!core_->is_leader()) return;
  // Once per election timeout: a transfer that did not finish by then was
  // dropped by the core.
  if (ticks_done_ - handover_tick_ < options_.raft.election_ticks) return;
  const RaftStatus raft = core_->status();
  if (raft.lead_transferee != NodeId(0)) return;
  // Just elected (this run, or within two heartbeats): the voters have not
  // answered yet, so neither their match nor whether they are up says
  // anything.
  const absl::Duration tick = absl::FromChrono(options_.tick_interval);
  const absl::Duration now = runtime_->Elapsed();
  if (raft.term != won_term_ ||
      now - won_term_at_ < 2 * options_.raft.heartbeat_ticks * tick) {
    return;
  }
  // The voter most likely to lead: not tried since the log stalled, heard
  // from within an election timeout (a dead voter's match can be the
  // highest), then the most caught up.
  const absl::Duration recent = options_.raft.election_ticks * tick;
  NodeId best;
  std::pair<bool, LogIndex> best_rank;  // (heard recently, match)
  for (int pass = 0; pass < 2 && best == NodeId(0); ++pass) {
    if (pass == 1) handover_tried_.clear();  // every voter was tried
    for (NodeId voter : raft.conf_state.voters) {
      if (voter == raft.id || handover_tried_.count(voter) > 0) continue;
      const auto match = raft.match.find(voter);
      const auto heard = heard_in_term_.find(voter);
      const std::pair<bool, LogIndex> rank = {
          heard != heard_in_term_.end() && now - heard->second < recent,
          match == raft.match.end() ? LogIndex(0) : match->second};
      if (best == NodeId(0) || rank > best_rank) {
        best = voter;
        best_rank = rank;
      }
    }
  }
  if (best == NodeId(0)) return;  // the only voter: nobody to hand over to
  handover_tick_ = ticks_done_;
  handover_tried_.insert(best);
  if (core_->TransferLeadership(best).ok()) {
    logging::Warn("raft.handover",
                  logging::Fields()
                      .Add("to", best.value())
                      .Add("error", std::string(LogStall().message()))
                      .Add("msg",
                           "this leader cannot write its log: handing "
                           "leadership to the most caught-up voter"));
  }
}

void NodeDriver::ReadIndex(StatusCallback done) {
  metric_reads_.fetch_add(1, std::memory_order_relaxed);
  if (!QueueForDriver(&inbox_reads_, &done)) done(ShuttingDown());
}

std::optional<LogIndex> NodeDriver::LocalReadIndex() {
  const int64_t until = local_reads_until_ns_.load(std::memory_order_acquire);
  if (until == 0 || absl::ToInt64Nanoseconds(runtime_->Elapsed()) >= until) {
    return std::nullopt;
  }
  metric_local_reads_.fetch_add(1, std::memory_order_relaxed);
  // Read after the window: at least the commit index published with it,
  // which every message this leader sent until then carried at most.
  return LogIndex(local_read_index_.load(std::memory_order_acquire));
}

void NodeDriver::PublishLocalReadWindow() {
  const uint64_t ticks = core_->LocalReadTicks();
  int64_t until = 0;
  if (ticks > 0) {
    // The core's lease ends once it has been handed `ticks` more ticks; the
    // driver hands tick n no earlier than n tick intervals after the
    // runtime's origin (CatchUpTicks), so the window never outlasts it.
    until =
        absl::ToInt64Nanoseconds((ticks_done_ + static_cast<int64_t>(ticks)) *
                                 absl::FromChrono(options_.tick_interval));
  }
  // Before the next Ready's messages leave: no follower learns of a commit
  // index a local read here does not wait for.
  local_read_index_.store(core_->commit_index().value(),
                          std::memory_order_release);
  local_reads_until_ns_.store(until, std::memory_order_release);
}

void NodeDriver::WhenApplied(LogIndex index, StatusCallback done) {
  absl::Status status;
  {
    absl::MutexLock lock(&reads_mu_);
    if (reads_closed_) {
      status = ShuttingDown();
    } else if (applied_for_reads_ < index) {
      WaitForApplyLocked(index, std::move(done));
      return;
    }
  }
  done(status);
}

void NodeDriver::CompactLog(Snapshot snapshot) {
  {
    absl::MutexLock lock(&inbox_mu_);
    if (driver_stop_) return;
    if (inbox_compact_ && inbox_compact_->meta.index >= snapshot.meta.index) {
      return;
    }
    inbox_compact_ = std::move(snapshot);
  }
  runtime_->Wake(Stage::kDriver);
}

size_t NodeDriver::Deliver(std::vector<Message> messages) {
  if (messages.empty()) return 0;
  size_t queued = 0;
  {
    absl::MutexLock lock(&inbox_mu_);
    if (driver_stop_) return 0;
    for (Message& m : messages) {
      const uint64_t bytes = MessageBytes(m);
      if (inbox_messages_.size() >= options_.max_inbox_messages ||
          (!inbox_messages_.empty() &&
           inbox_message_bytes_ + bytes > options_.max_inbox_bytes)) {
        metric_messages_dropped_.fetch_add(1, std::memory_order_relaxed);
        continue;
      }
      inbox_messages_.push_back(std::move(m));
      inbox_message_bytes_ += bytes;
      ++queued;
    }
  }
  runtime_->Wake(Stage::kDriver);
  return queued;
}

NodeDriverMetrics NodeDriver::metrics() const {
  NodeDriverMetrics m;
  m.proposals = metric_proposals_.load(std::memory_order_relaxed);
  m.proposals_refused =
      metric_proposals_refused_.load(std::memory_order_relaxed);
  m.propose_batches = metric_propose_batches_.load(std::memory_order_relaxed);
  m.log_writes = metric_log_writes_.load(std::memory_order_relaxed);
  m.log_writes_unsynced =
      metric_log_writes_unsynced_.load(std::memory_order_relaxed);
  m.entries_persisted =
      metric_entries_persisted_.load(std::memory_order_relaxed);
  m.apply_batches = metric_apply_batches_.load(std::memory_order_relaxed);
  m.entries_applied = metric_entries_applied_.load(std::memory_order_relaxed);
  m.reads = metric_reads_.load(std::memory_order_relaxed);
  m.read_index_rounds = metric_read_rounds_.load(std::memory_order_relaxed);
  m.local_reads = metric_local_reads_.load(std::memory_order_relaxed);
  m.messages_dropped = metric_messages_dropped_.load(std::memory_order_relaxed);
  m.snapshots_installed =
      metric_snapshots_installed_.load(std::memory_order_relaxed);
  m.log_write_failures =
      metric_log_write_failures_.load(std::memory_order_relaxed);
  return m;
}

NodeStatus NodeDriver::status() const {
  absl::MutexLock lock(&status_mu_);
  return status_;
}

NodeSummary NodeDriver::summary() const {
  absl::MutexLock lock(&status_mu_);
  return status_;  // the NodeSummary part
}

bool NodeDriver::WaitFor(const std::function<bool(const NodeStatus&)>& ready,
                         absl::Duration timeout) const {
  const SteadyCondVar::Clock::time_point deadline = SteadyAfter(timeout);
  absl::MutexLock lock(&status_mu_);
  while (!ready(status_)) {
    if (status_cv_.WaitUntil(&status_mu_, deadline)) {
      return ready(status_);
    }
  }
  return true;
}

bool NodeDriver::WaitUntilLeaderCaughtUp(absl::Duration timeout) const {
  return WaitFor([](const NodeStatus& s) { return s.leader_caught_up; },
                 timeout);
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
  // After accepting_: an Apply failing from here on is taken as stopped.
  state_machine_->StopRetryingWrites();
  // Drain: proposals already accepted are finished, not dropped, unless the
  // group cannot commit them in time (no quorum).
  const SteadyCondVar::Clock::time_point deadline =
      SteadyAfter(absl::FromChrono(options_.drain_timeout));
  while (SteadyCondVar::Clock::now() < deadline) {
    bool idle;
    {
      absl::MutexLock lock(&inbox_mu_);
      idle = inbox_proposals_.empty() && inbox_conf_changes_.empty() &&
             proposals_at_driver_ == 0;
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
    driver_stop_ = true;
  }
  local_reads_until_ns_.store(0, std::memory_order_release);
  runtime_->Wake(Stage::kDriver);
  // The log writer and the apply stage finish what the driver handed them:
  // nothing acknowledged depends on it, but there is no reason to drop it.
  runtime_->Stop();
  FailAllPending(ShuttingDown());
}

void NodeDriver::RunStage(Stage stage) {
  switch (stage) {
    case Stage::kDriver:
      RunDriver();
      return;
    case Stage::kLogWriter:
      RunLogWriter();
      return;
    case Stage::kApply:
      RunApply();
      return;
    case Stage::kCompletion:
      RunCompletion();
      return;
  }
}

// ---------------------------------------------------------------------------
// Driver stage

void NodeDriver::RefuseInbox(const absl::Status& status) {
  std::vector<Proposal> proposals;
  std::vector<ConfChangeRequest> changes;
  std::vector<TransferRequest> transfers;
  std::vector<StatusCallback> reads;
  {
    absl::MutexLock lock(&inbox_mu_);
    proposals.swap(inbox_proposals_);
    changes.swap(inbox_conf_changes_);
    transfers.swap(inbox_transfers_);
    reads.swap(inbox_reads_);
    inbox_messages_.clear();
    inbox_message_bytes_ = 0;
  }
  for (Proposal& p : proposals) p.done(status);
  for (ConfChangeRequest& c : changes) c.done(status);
  for (TransferRequest& t : transfers) t.done(status);
  for (StatusCallback& r : reads) r(status);
  for (auto& [id, round] : read_rounds_) {
    for (StatusCallback& r : round.readers) r(status);
  }
  read_rounds_.clear();
}

void NodeDriver::CatchUpTicks() {
  const int64_t due =
      runtime_->Elapsed() / absl::FromChrono(options_.tick_interval);
  if (due - ticks_done_ > options_.max_catch_up_ticks) {
    ticks_done_ = due - options_.max_catch_up_ticks;
  }
  // Every tick a paused process missed is handed over before any message or
  // read is looked at, so a leader that was stopped past its lease learns
  // that first (and steps down at its next CheckQuorum round).
  if (ticks_done_ >= due) return;
  const absl::Duration now = runtime_->Elapsed();
  for (; ticks_done_ < due; ++ticks_done_) {
    core_->Tick();
    ++core_ticks_;
    core_tick_times_.push_back(now);
  }
  const size_t keep = 4 * static_cast<size_t>(options_.raft.election_ticks);
  while (core_tick_times_.size() > keep) core_tick_times_.pop_front();
}

void NodeDriver::StepMessages(std::vector<Message> messages) {
  for (Message& m : messages) {
    const bool from_leader = FromLeader(m.type);
    const NodeId from = m.from;
    // What the leader had committed: at least a snapshot's index.
    const LogIndex commit =
        std::max({m.commit, m.leader_commit,
                  m.snapshot ? m.snapshot->meta.index : LogIndex(0)});
    const Term term = m.term;
    const MessageType type = m.type;
    const uint64_t quiet_us = m.leader_quiet_us;
    const absl::Status s = core_->Step(std::move(m));
    if (!s.ok()) {
      uint64_t suppressed = 0;
      if (dropped_message_log_.Admit(runtime_->Elapsed(), &suppressed)) {
        logging::Fields fields;
        fields.Add("type", MessageTypeName(type))
            .Add("peer", from.value())
            .Error(s);
        if (suppressed > 0) fields.Add("suppressed", suppressed);
        logging::Warn("raft.message_dropped", fields);
      }
      continue;
    }
    if (!from_leader && term == core_->term() &&
        core_->role() == Role::kLeader) {
      heard_in_term_[from] = runtime_->Elapsed();
    }
    if (from_leader && from == core_->leader() && term == core_->term()) {
      // Current as of when a quorum last heard from the leader, not as of
      // now: cut off from its quorum, it leads on (and sends) until
      // CheckQuorum deposes it, while another leader may already commit.
      // The leader's clock is not ours; only the length travels. A quiet
      // longer than this node's clock has run dates it before the clock's
      // start, not at it: a node just restarted would count itself fresh
      // for its first fresh_contact less the uptime. No overflow: the
      // quiet is at most INT64_MAX microseconds and a Duration holds
      // seconds in an int64, so contact and a reader's `now - contact`
      // stay finite.
      const absl::Duration arrival = runtime_->Elapsed();
      const absl::Duration quiet = absl::Microseconds(static_cast<int64_t>(
          std::min<uint64_t>(quiet_us, std::numeric_limits<int64_t>::max())));
      absl::MutexLock lock(&status_mu_);
      HeardFromLeader(commit, arrival - quiet);
    }
  }
}

absl::Duration NodeDriver::QuorumContact() {
  const absl::Duration now = runtime_->Elapsed();
  if (sole_voter_) {
    // Kept for when a second voter joins: until it answers a heartbeat,
    // this is the quorum's last word, not the election (process start,
    // for a one-node cluster). A contact found under one configuration
    // holds under the next: one change at a time, their quorums overlap,
    // so nothing else is reset at a change.
    quorum_contact_ = now;
    return now;
  }
  // When the heartbeat left that the last of a quorum answered: the time
  // its tick was handed to the core (it left then or later). Acknowledged
  // ticks only grow within a term, so the latest time found is kept: a
  // tick older than those remembered was looked up when it was answered.
  const uint64_t acked = core_->QuorumAckedTick();
  if (acked > 0 && acked <= core_ticks_ &&
      core_ticks_ - acked < core_tick_times_.size()) {
    quorum_contact_ =
        std::max(quorum_contact_,
                 core_tick_times_[core_tick_times_.size() - 1 -
                                  static_cast<size_t>(core_ticks_ - acked)]);
  }
  return std::min(quorum_contact_, now);
}

void NodeDriver::HeardFromLeader(LogIndex commit, absl::Duration at) {
  status_.last_leader_contact = at;
  // Commits only grow: a lower one heard later (a snapshot's index, or a
  // new leader that has not learnt the old one's commit yet) does not
  // undo what was heard before it.
  if (commit > status_.leader_commit) status_.leader_commit = commit;
  commit = status_.leader_commit;
  if (status_.applied >= commit) {
    status_.current_as_of = at;
    commits_heard_.clear();
    return;
  }
  // A later message with the same commit is reached no later, and says
  // more.
  while (!commits_heard_.empty() && commits_heard_.back().first >= commit) {
    commits_heard_.pop_back();
  }
  commits_heard_.emplace_back(commit, at);
  // Bounded: forgetting the oldest only makes staleness read higher.
  if (commits_heard_.size() > 64) commits_heard_.pop_front();
}

void NodeDriver::AppliedThroughLocked(LogIndex through) {
  status_.applied = through;
  while (!commits_heard_.empty() && commits_heard_.front().first <= through) {
    status_.current_as_of =
        std::max(status_.current_as_of, commits_heard_.front().second);
    commits_heard_.pop_front();
  }
}

void NodeDriver::RunDriver() {
  std::vector<Proposal> proposals;
  std::vector<ConfChangeRequest> changes;
  std::vector<TransferRequest> transfers;
  std::vector<StatusCallback> reads;
  std::vector<Message> messages;
  std::vector<Persisted> persisted;
  std::optional<LogIndex> applied;
  std::optional<Snapshot> compact;
  bool stopping;
  {
    absl::MutexLock lock(&inbox_mu_);
    stopping = driver_stop_;
    if (!stopping) {
      proposals.swap(inbox_proposals_);
      changes.swap(inbox_conf_changes_);
      proposals_at_driver_ = proposals.size() + changes.size();
      transfers.swap(inbox_transfers_);
      reads.swap(inbox_reads_);
      messages.swap(inbox_messages_);
      inbox_message_bytes_ = 0;
      persisted.swap(inbox_persisted_);
      applied.swap(inbox_applied_);
      compact.swap(inbox_compact_);
    }
  }
  if (stopping) {
    local_reads_until_ns_.store(0, std::memory_order_release);
    RefuseInbox(ShuttingDown());
    return;
  }
  const bool held = !proposals.empty() || !changes.empty();

  CatchUpTicks();
  StepMessages(std::move(messages));
  for (Persisted& p : persisted) {
    if (p.snapshot_index) core_->OnSnapshotInstalled(*p.snapshot_index);
    if (p.through) core_->OnPersisted(p.through->first, p.through->second);
    if (p.compacted_index) core_->OnCompacted(*p.compacted_index);
  }
  if (applied) {
    core_->OnApplied(*applied);
    if (applied_reported_ < *applied) applied_reported_ = *applied;
  }
  if (compact) RequestCompaction(std::move(*compact));
  for (ConfChangeRequest& c : changes) {
    if (c.check && core_->is_leader()) {
      if (absl::Status s = c.check(core_->status().conf_state); !s.ok()) {
        c.done(std::move(s));
        continue;
      }
    }
    const absl::StatusOr<LogIndex> index = core_->ProposeConfChange(c.change);
    if (!index.ok()) {
      c.done(NotAppended(index.status()));
      continue;
    }
    ProposeCallback superseded;
    {
      absl::MutexLock lock(&pending_mu_);
      superseded =
          RegisterPendingLocked(*index, core_->term(), std::move(c.done));
    }
    if (superseded) superseded(LeadershipChanged());
  }
  for (TransferRequest& t : transfers) {
    t.done(core_->TransferLeadership(t.target));
  }
  const bool proposed = !proposals.empty();
  if (proposed) ProposeBatch(std::move(proposals));
  if (!reads.empty()) StartReadRound(std::move(reads));

  HandOverIfStalled();
  while (core_->HasReady()) {
    PublishLocalReadWindow();
    Dispatch(core_->TakeReady());
  }
  PublishLocalReadWindow();  // a lease an acknowledgement renewed
  RefreshStatus();
  if (held) {
    // Now registered as pending (or answered): Stop's drain sees them.
    absl::MutexLock lock(&inbox_mu_);
    proposals_at_driver_ = 0;
  }
}

void NodeDriver::StartReadRound(std::vector<StatusCallback> readers) {
  const uint64_t id = next_read_round_++;
  const absl::Status s = core_->ReadIndex(absl::StrCat(id));
  metric_read_rounds_.fetch_add(1, std::memory_order_relaxed);
  if (!s.ok()) {
    // Answered on the completion stage, not here: a reader's callback may
    // do a whole validation (a default read falling back to the local
    // table), and during an election every read fails this way at once;
    // on this thread they would hold up the votes the election waits for.
    PostReaders(std::move(readers), s);
    return;
  }
  ReadRound& round = read_rounds_[id];
  round.asked_tick = ticks_done_;
  round.term = core_->term();
  round.role = core_->role();
  round.leader = core_->leader();
  round.readers = std::move(readers);
}

void NodeDriver::FinishReadStates(std::vector<ReadState> read_states) {
  for (ReadState& rs : read_states) {
    uint64_t id = 0;
    if (!absl::SimpleAtoi(rs.context, &id)) continue;
    auto it = read_rounds_.find(id);
    if (it == read_rounds_.end()) continue;  // timed out already
    std::vector<StatusCallback> readers = std::move(it->second.readers);
    read_rounds_.erase(it);
    std::vector<Completion> ready;
    {
      absl::MutexLock lock(&reads_mu_);
      for (StatusCallback& r : readers) {
        if (applied_for_reads_ >= rs.index) {
          ready.push_back(Completion::Reader(std::move(r), absl::OkStatus()));
        } else {
          WaitForApplyLocked(rs.index, std::move(r));
        }
      }
    }
    PostCompletions(std::move(ready));
  }
}

void NodeDriver::ExpireReadRounds(const RaftStatus& now) {
  for (auto it = read_rounds_.begin(); it != read_rounds_.end();) {
    const ReadRound& round = it->second;
    // Asked in this run, after the change the run brought: not changed.
    const bool leadership_changed = round.term != now.term ||
                                    round.role != now.role ||
                                    round.leader != now.leader;
    const bool expired =
        ticks_done_ - round.asked_tick > options_.read_timeout_ticks;
    if (!expired && !leadership_changed) {
      ++it;
      continue;
    }
    const absl::Status s =
        leadership_changed
            ? LeadershipChanged()
            : absl::UnavailableError("no answer from the leader in time");
    PostReaders(std::move(it->second.readers), s);  // as in StartReadRound
    it = read_rounds_.erase(it);
  }
}

void NodeDriver::WaitForApplyLocked(LogIndex index, StatusCallback done) {
  const absl::Duration expires =
      runtime_->Elapsed() +
      options_.read_timeout_ticks * absl::FromChrono(options_.tick_interval);
  reads_waiting_.emplace(index, WaitingRead{std::move(done), expires});
}

void NodeDriver::ExpireWaitingReads() {
  // Once a tick is enough: the driver stage runs for every message too.
  if (ticks_done_ == waiting_reads_checked_tick_) return;
  waiting_reads_checked_tick_ = ticks_done_;
  const absl::Duration now = runtime_->Elapsed();
  std::vector<Completion> expired;
  LogIndex applied;
  {
    absl::MutexLock lock(&reads_mu_);
    applied = applied_for_reads_;
    for (auto it = reads_waiting_.begin(); it != reads_waiting_.end();) {
      if (it->second.expires > now) {
        ++it;
        continue;
      }
      expired.push_back(Completion::Reader(
          std::move(it->second.done),
          absl::UnavailableError(absl::StrCat(
              "this node has not applied index ", it->first.value(),
              " in time (applied through ", applied.value(),
              "): its apply stage is behind; read from another node"))));
      it = reads_waiting_.erase(it);
    }
  }
  PostCompletions(std::move(expired));
}

void NodeDriver::RequestCompaction(Snapshot snapshot) {
  if (snapshot.meta.index <= compact_requested_) return;
  // Never past what the core was told is applied (OnCompacted's contract);
  // keep a tail for followers that lag a little.
  LogIndex through = std::min(snapshot.meta.index, applied_reported_);
  const uint64_t keep = options_.compaction_catch_up_entries;
  through = through.value() > keep ? through - keep : LogIndex(0);
  compact_requested_ = snapshot.meta.index;
  PersistWork work;
  work.truncate_through = through;
  work.compact = std::move(snapshot);
  {
    absl::MutexLock lock(&persist_mu_);
    persist_queue_.push_back(std::move(work));
  }
  runtime_->Wake(Stage::kLogWriter);
}

void NodeDriver::ProposeBatch(std::vector<Proposal> proposals) {
  std::vector<std::string> commands;
  commands.reserve(proposals.size());
  for (Proposal& p : proposals) commands.push_back(std::move(p.command));
  const absl::StatusOr<LogIndex> last = core_->Propose(std::move(commands));
  metric_propose_batches_.fetch_add(1, std::memory_order_relaxed);
  if (!last.ok()) {
    const absl::Status refused = NotAppended(last.status());
    for (Proposal& p : proposals) p.done(refused);
    return;
  }
  const Term term = core_->term();
  const LogIndex first = *last - (proposals.size() - 1);
  std::vector<ProposeCallback> superseded;
  {
    absl::MutexLock lock(&pending_mu_);
    for (size_t i = 0; i < proposals.size(); ++i) {
      ProposeCallback old =
          RegisterPendingLocked(first + i, term, std::move(proposals[i].done));
      if (old) superseded.push_back(std::move(old));
    }
  }
  for (ProposeCallback& done : superseded) done(LeadershipChanged());
}

NodeDriver::ProposeCallback NodeDriver::RegisterPendingLocked(
    LogIndex index, Term term, ProposeCallback done) {
  // Not try_emplace(index, PendingProposal{..., std::move(done)}): the
  // argument is built, taking `done`, before the map looks for the key, so
  // a proposal landing where an earlier one still waited lost its callback
  // and left an empty one behind, which threw when its entry was applied;
  // a membership change there overwrote the waiting callback unanswered.
  // Found by the simulation once it ran this driver (regression test:
  // NodeDriverTest.ProposalAtTheIndexOfASupersededOneIsAnswered).
  const std::pair<LogIndex, Term> key(index, term);
  auto it = pending_.find(key);
  if (it == pending_.end()) {
    pending_.emplace(key, PendingProposal{std::move(done)});
    return nullptr;
  }
  // One index of one term holds one entry: not expected.
  ProposeCallback superseded = std::move(it->second.done);
  it->second = PendingProposal{std::move(done)};
  return superseded;
}

void NodeDriver::Dispatch(Ready ready) {
  if (options_.unsafe_ack_before_persist_for_test) {
    for (Message& m : ready.send_after_persist) {
      ready.send_now.push_back(std::move(m));
    }
    ready.send_after_persist.clear();
  }
  if (!ready.send_now.empty()) {
    StampLeaderContact(&ready.send_now);
    transport_->Send(std::move(ready.send_now));
  }

  if (ready.hard_state || !ready.to_persist.empty() || ready.snapshot ||
      !ready.send_after_persist.empty()) {
    PersistWork work;
    work.entries = std::move(ready.to_persist);
    work.hard_state = ready.hard_state;
    work.snapshot = ready.snapshot;
    work.send_after_persist = std::move(ready.send_after_persist);
    {
      absl::MutexLock lock(&persist_mu_);
      persist_queue_.push_back(std::move(work));
    }
    runtime_->Wake(Stage::kLogWriter);
  }

  if (ready.snapshot || !ready.committed.empty()) {
    ApplyWork work;
    work.snapshot = std::move(ready.snapshot);
    work.entries = std::move(ready.committed);
    {
      absl::MutexLock lock(&apply_mu_);
      apply_queue_.push_back(std::move(work));
    }
    runtime_->Wake(Stage::kApply);
  }
  if (!ready.read_states.empty()) {
    FinishReadStates(std::move(ready.read_states));
  }
}

void NodeDriver::StampLeaderContact(std::vector<Message>* messages) {
  // Leader messages never wait for a persist (send_after_persist holds
  // only answers and votes), so all of them leave here, on this thread.
  // The same for the whole batch:
  std::optional<uint64_t> quiet_us;
  for (Message& m : *messages) {
    if (!FromLeader(m.type)) continue;
    const bool won_earlier = m.term == won_term_;
    if (!won_earlier) {
      // Won in this run: a quorum's votes just arrived. quorum_contact_
      // still holds an earlier term's contact, or none: counted from it,
      // every follower would read stale after each election until the
      // leader's next messages.
      m.leader_quiet_us = 0;
      continue;
    }
    if (!quiet_us) {
      const absl::Duration now = runtime_->Elapsed();
      // Deposed in this run, its messages of the term still leave: the
      // last contact found holds for them (no acknowledgement of that
      // term can come any more).
      const absl::Duration contact =
          core_->is_leader() && core_->term() == won_term_
              ? QuorumContact()
              : std::min(quorum_contact_, now);
      // Rounded up: a shorter quiet would claim a little too much.
      quiet_us = static_cast<uint64_t>(absl::ToInt64Microseconds(
          absl::Ceil(now - contact, absl::Microseconds(1))));
    }
    m.leader_quiet_us = *quiet_us;
  }
}

void NodeDriver::RefreshStatus() {
  RaftStatus raft = core_->status();
  ExpireReadRounds(raft);
  ExpireWaitingReads();
  absl::MutexLock lock(&status_mu_);
  if (raft.role == Role::kLeader &&
      (status_.role != Role::kLeader || status_.term != raft.term)) {
    // Every entry a previous leader could have committed is at or below our
    // last index at the moment we won; once applied through it, local reads
    // see all of them.
    leader_first_index_ = raft.last_index;
    // A quorum voted for it just now.
    won_term_at_ = runtime_->Elapsed();
    won_term_ = raft.term;
    quorum_contact_ = won_term_at_;
    heard_in_term_.clear();
    acknowledged_.clear();
  }
  status_.role = raft.role;
  status_.term = raft.term;
  status_.leader = raft.leader;
  status_.commit = raft.commit;
  status_.first_index = raft.first_index;
  status_.last_index = raft.last_index;
  sole_voter_ = raft.conf_state.voters.size() == 1 &&
                raft.conf_state.voters.front() == options_.raft.id;
  status_.conf_state = std::move(raft.conf_state);
  status_.lead_transferee = raft.lead_transferee;
  if (raft.role == Role::kLeader) {
    // Updated in place: the members rarely change, and this runs every
    // driver turn.
    const absl::Duration now = runtime_->Elapsed();
    for (const auto& [id, match] : raft.match) {
      auto [it, added] =
          acknowledged_.try_emplace(id, std::make_pair(match, won_term_at_));
      // Holding the whole log counts as acknowledging: an entry appended
      // after a quiet spell waits from its append, not from the last one
      // before the spell (which refused transfers to caught-up voters).
      if (!added && (match > it->second.first || match >= raft.last_index)) {
        it->second = {match, now};
      }
      status_.acknowledged_at[id] = it->second.second;
    }
    std::erase_if(status_.acknowledged_at, [&raft](const auto& entry) {
      return raft.match.count(entry.first) == 0;
    });
  } else {
    status_.acknowledged_at.clear();
  }
  status_.match = std::move(raft.match);
  if (raft.role == Role::kLeader) {
    // A leader hears itself: as of its quorum's last word, everything
    // committed is at or below its commit index, and, until its term's
    // first entry commits, at or below that entry. It is current once it
    // has applied that far, not before (a leader elected while its apply
    // stage is behind, or whose apply is stuck, is not current).
    HeardFromLeader(std::max(raft.commit, leader_first_index_),
                    QuorumContact());
  }
  status_.leader_caught_up =
      raft.role == Role::kLeader && status_.applied >= leader_first_index_;
  status_cv_.SignalAll();
}

// ---------------------------------------------------------------------------
// Log-writer stage

void NodeDriver::RunLogWriter() {
  std::deque<PersistWork> work;
  bool retrying;
  {
    absl::MutexLock lock(&persist_mu_);
    retrying = !write_error_.ok();
    if (retrying && runtime_->Elapsed() < retry_at_) return;
    work.swap(persist_queue_);
  }
  if (work.empty()) return;

  // Group commit: everything queued since the last write goes into one
  // Append. A snapshot or a compaction splits the group.
  std::vector<Persisted> done;
  std::vector<Entry> batch;
  std::optional<HardState> hard_state;
  std::vector<Message> messages;
  // Votes and append acknowledgements whose writes are durable: the log
  // writer sends them itself (raft_core.h rule 4), so an acknowledgement
  // does not wait for the driver stage's next turn.
  std::vector<Message> durable_messages;
  bool wake_apply = false;
  absl::Status failure;
  bool gated = false;  // the failure is the gate's refusal, not the store's
  // Writes the group; false (the group left as it is) when the store fails.
  auto flush = [&]() -> bool {
    Persisted p;
    if (!batch.empty() || hard_state) {
      // etcd's MustSync: new entries, a new term or a new vote must be on
      // disk before anything that depends on them leaves; a commit index
      // alone need not (it is recovered from a quorum), so a write that
      // only moves it skips the fsync.
      const bool sync =
          !options_.unsafe_unsynced_log_writes_for_test &&
          (!batch.empty() || hard_state->term != synced_hard_state_.term ||
           hard_state->vote != synced_hard_state_.vote);
      if (sync) SESSIOND_FAULT_POINT("log.before_append");
      // A failed write is not acknowledged; it is retried, whole and before
      // anything queued after it, so the log never has a hole (a store
      // write is atomic: all of it is durable, or none).
      // A new leader's empty entry passes: a node whose disk is full must
      // still become leader when it is the only voter, to serve reads.
      const bool has_data =
          std::any_of(batch.begin(), batch.end(),
                      [](const Entry& e) { return !e.data.empty(); });
      if (has_data && options_.log_write_gate) {
        uint64_t bytes = 0;
        // With the key, index and term each entry costs on disk.
        for (const Entry& e : batch) bytes += e.data.size() + 32;
        if (absl::Status s = options_.log_write_gate(bytes); !s.ok()) {
          failure = std::move(s);
          gated = true;
          return false;
        }
      }
      // Two clock reads per synced write, for the fsync histogram.
      const std::chrono::steady_clock::time_point append_start =
          sync ? std::chrono::steady_clock::now()
               : std::chrono::steady_clock::time_point();
      if (absl::Status s = log_->Append(batch, hard_state, sync); !s.ok()) {
        failure = std::move(s);
        return false;
      }
      if (sync) {
        metric_log_sync_latency_.Observe(std::chrono::steady_clock::now() -
                                         append_start);
        SESSIOND_FAULT_POINT("log.after_append");
        metric_log_writes_.fetch_add(1, std::memory_order_relaxed);
        if (hard_state) synced_hard_state_ = *hard_state;
      } else {
        metric_log_writes_unsynced_.fetch_add(1, std::memory_order_relaxed);
      }
      metric_entries_persisted_.fetch_add(batch.size(),
                                          std::memory_order_relaxed);
      if (!batch.empty()) {
        p.through = std::make_pair(batch.back().index, batch.back().term);
      }
    }
    for (Message& m : messages) durable_messages.push_back(std::move(m));
    if (p.through) done.push_back(std::move(p));
    batch.clear();
    hard_state.reset();
    messages.clear();
    return true;
  };
  size_t next = 0;  // the first item of `work` not yet handled
  for (; next < work.size(); ++next) {
    PersistWork& w = work[next];
    if (w.snapshot) {
      if (!flush()) break;
      if (absl::Status s = log_->InstallSnapshot(*w.snapshot); !s.ok()) {
        failure = std::move(s);
        break;
      }
      Persisted p;
      p.snapshot_index = w.snapshot->meta.index;
      done.push_back(std::move(p));
      {
        absl::MutexLock lock(&persist_mu_);
        snapshot_installed_ =
            std::max(snapshot_installed_, w.snapshot->meta.index);
      }
      w.snapshot.reset();  // done: a retry of this item must not redo it
      wake_apply = true;
    }
    if (w.compact) {
      // After the appends queued before it: compaction only drops entries
      // the state machine holds, which are all older.
      if (!flush()) break;
      if (absl::Status s = log_->Compact(*w.compact, w.truncate_through);
          !s.ok()) {
        failure = std::move(s);
        break;
      }
      Persisted p;
      p.compacted_index = w.truncate_through;
      done.push_back(std::move(p));
      w.compact.reset();
    }
    if (!w.entries.empty()) {
      // A later Ready may rewrite a suffix of an earlier one (a new
      // leader's entries replace conflicting ones): drop the replaced
      // tail from the batch; the store truncates what it already holds.
      const LogIndex first = w.entries.front().index;
      while (!batch.empty() && batch.back().index >= first) batch.pop_back();
      if (batch.empty()) {
        batch.swap(w.entries);  // the usual case: taken whole, not moved
      } else {
        batch.insert(batch.end(), std::make_move_iterator(w.entries.begin()),
                     std::make_move_iterator(w.entries.end()));
      }
      w.entries.clear();
    }
    if (w.hard_state) hard_state = w.hard_state;
    w.hard_state.reset();
    for (Message& m : w.send_after_persist) messages.push_back(std::move(m));
    w.send_after_persist.clear();
  }
  if (failure.ok()) flush();
  // Only what the writes above made durable: a failed group keeps its
  // messages and is put back below.
  if (!durable_messages.empty()) transport_->Send(std::move(durable_messages));

  if (!failure.ok()) {
    // Put back what was not written: the group gathered so far, then the
    // rest (item `next` keeps only what it still owes), then whatever was
    // queued meanwhile.
    metric_log_write_failures_.fetch_add(1, std::memory_order_relaxed);
    std::deque<PersistWork> back;
    PersistWork group;
    group.entries = std::move(batch);
    group.hard_state = std::move(hard_state);
    group.send_after_persist = std::move(messages);
    back.push_back(std::move(group));
    for (size_t i = next; i < work.size(); ++i) {
      back.push_back(std::move(work[i]));
    }
    {
      absl::MutexLock lock(&persist_mu_);
      for (PersistWork& w : persist_queue_) back.push_back(std::move(w));
      persist_queue_.swap(back);
      if (write_error_.ok()) {
        logging::Error("raft.log_write_failed",
                       logging::Fields().Error(failure).Add(
                           "msg",
                           "the Raft log cannot be written; writes are "
                           "refused and the write is retried until it "
                           "succeeds"));
      }
      write_error_ = failure;
      retry_backoff_ = std::clamp(retry_backoff_ * 2, absl::Milliseconds(50),
                                  absl::Seconds(2));
      retry_at_ = runtime_->Elapsed() + retry_backoff_;
      log_stalled_.store(true, std::memory_order_release);
    }
    // Reported before the stall is published, so whoever sees the stall in
    // the status also sees its cause reported (the disk monitor's state).
    if (!gated && options_.on_log_write_error) {
      options_.on_log_write_error(failure);
    }
    PublishLogStall();
  } else if (retrying) {
    {
      absl::MutexLock lock(&persist_mu_);
      write_error_ = absl::OkStatus();
      retry_backoff_ = absl::ZeroDuration();
      log_stalled_.store(!refusal_.ok(), std::memory_order_release);
    }
    logging::Info(
        "raft.log_write_recovered",
        logging::Fields().Add("msg", "the Raft log is written again"));
    PublishLogStall();
  }

  if (!done.empty()) {
    {
      absl::MutexLock lock(&inbox_mu_);
      for (Persisted& p : done) inbox_persisted_.push_back(std::move(p));
    }
    runtime_->Wake(Stage::kDriver);
  }
  if (wake_apply) runtime_->Wake(Stage::kApply);
}

// ---------------------------------------------------------------------------
// Apply stage

void NodeDriver::RunApply() {
  std::deque<ApplyWork> work;
  {
    absl::MutexLock lock(&apply_mu_);
    work.swap(apply_queue_);
  }
  if (work.empty() || apply_gave_up_) return;

  std::vector<Entry> batch;
  auto report_applied = [&](LogIndex through) {
    {
      absl::MutexLock lock(&inbox_mu_);
      if (!inbox_applied_ || *inbox_applied_ < through) {
        inbox_applied_ = through;
      }
    }
    runtime_->Wake(Stage::kDriver);
    {
      absl::MutexLock lock(&status_mu_);
      AppliedThroughLocked(through);
      status_.leader_caught_up =
          status_.role == Role::kLeader && through >= leader_first_index_;
      status_cv_.SignalAll();
    }
    CompleteReadsThrough(through);
  };
  // Stop() began: the state machine may have stopped retrying its writes
  // (StopRetryingWrites), while the drain still waits.
  auto stopping = [&] {
    absl::MutexLock lock(&inbox_mu_);
    return driver_stop_ || !accepting_;
  };
  // False when the state machine gave up at shutdown: stop applying.
  auto flush = [&]() -> bool {
    if (batch.empty()) return true;
    SESSIOND_FAULT_POINT("apply.before_apply");
    absl::StatusOr<std::vector<ApplyResult>> results =
        state_machine_->Apply(batch);
    SESSIOND_FAULT_POINT("apply.after_apply");
    if (!results.ok() && stopping()) {
      // The state machine gave up at shutdown (a full disk): the log
      // replays these entries on the next start.
      logging::Warn("apply.stopped_at_shutdown",
                    logging::Fields().Error(results.status()));
      batch.clear();
      apply_gave_up_ = true;
      return false;
    }
    // The state could not be written: going on would answer proposals from
    // a state that is not what the log says.
    SESSIOND_CHECK_OK(results.status());
    SESSIOND_CHECK_MSG(results->size() == batch.size(),
                       "StateMachine::Apply returned the wrong result count");
    const LogIndex through = batch.back().index;
    metric_apply_batches_.fetch_add(1, std::memory_order_relaxed);
    metric_entries_applied_.fetch_add(batch.size(), std::memory_order_relaxed);
    // The core hears "applied" before any proposer does, so whatever a
    // proposer does next (e.g. CompactLog) sees it.
    report_applied(through);
    CompleteProposals(batch, &*results);
    batch.clear();
    return true;
  };

  while (!work.empty()) {
    ApplyWork& w = work.front();
    if (w.snapshot) {
      if (!flush()) return;
      const LogIndex index = w.snapshot->meta.index;
      LogIndex installed;
      {
        absl::MutexLock lock(&persist_mu_);
        installed = snapshot_installed_;
      }
      if (installed > index) {
        // Superseded: the log writer already installed a newer snapshot,
        // whose work the driver queued here after this one (with its
        // persist work, in one Dispatch). The log store keeps only the
        // newest image, so this one's may be gone; and the newer one holds
        // this one and every entry between the two. Skipped, with them.
        apply_skip_through_ = std::max(apply_skip_through_, installed);
        w.snapshot.reset();
      } else if (installed < index) {
        // The snapshot goes to the state machine only once the log store
        // holds it durably (raft_core.h rule 2): wait for the log writer,
        // which wakes this stage, with this and later work put back.
        absl::MutexLock lock(&apply_mu_);
        while (!work.empty()) {
          apply_queue_.push_front(std::move(work.back()));
          work.pop_back();
        }
        return;
      } else {
        // A crash here leaves the log's snapshot ahead of the state: the
        // next start applies its image again (Daemon::Init).
        SESSIOND_FAULT_POINT("apply.before_snapshot_install");
        const absl::Status install = state_machine_->ApplySnapshot(*w.snapshot);
        if (!install.ok() && stopping()) {
          // Gave up at shutdown (a full disk): the log store holds the
          // snapshot, and the next start installs it (as after a crash
          // between the two installs).
          logging::Warn(
              "apply.snapshot_stopped_at_shutdown",
              logging::Fields().Add("index", index.value()).Error(install));
          apply_gave_up_ = true;
          return;
        }
        // Not installed, the state is not what the log says it is.
        SESSIOND_CHECK_OK(install);
        metric_snapshots_installed_.fetch_add(1, std::memory_order_relaxed);
        // Proposals at or below the snapshot were decided elsewhere; this
        // node cannot tell whether they applied.
        std::vector<Completion> calls;
        {
          absl::MutexLock lock(&pending_mu_);
          while (!pending_.empty() && pending_.begin()->first.first <= index) {
            calls.push_back(Completion::Proposer(
                std::move(pending_.begin()->second.done),
                absl::UnavailableError(
                    "this node received a snapshot in place of the write's "
                    "log entry: the write may or may not have applied")));
            pending_.erase(pending_.begin());
          }
        }
        PostCompletions(std::move(calls));
        AbandonProposalsAfter(index, w.snapshot->meta.term);
        report_applied(index);
        w.snapshot.reset();
      }
    }
    // Entries at or below it were applied before a restart (the state
    // machine's applied index is durable with its state); the core hands
    // them out again because it only knows the log.
    const LogIndex applied =
        std::max(state_machine_->applied_index(), apply_skip_through_);
    if (batch.empty() && w.entries.size() < kMaxApplyBatch &&
        (w.entries.empty() || w.entries.front().index > applied)) {
      batch.swap(w.entries);  // the usual case: taken whole, not moved
    } else {
      for (Entry& e : w.entries) {
        if (e.index <= applied) continue;
        batch.push_back(std::move(e));
        if (batch.size() >= kMaxApplyBatch && !flush()) return;
      }
    }
    work.pop_front();
  }
  flush();
}

void NodeDriver::AbandonProposalsAfter(LogIndex last, Term term) {
  // Proposals of a lower term were all registered before this node learned
  // of `term` (its term never falls, and it registers at its own), so one
  // walk per term finds them all.
  if (term <= abandoned_below_) return;
  abandoned_below_ = term;
  std::vector<Completion> calls;
  {
    absl::MutexLock lock(&pending_mu_);
    for (auto it = pending_.lower_bound({last + 1, Term(0)});
         it != pending_.end();) {
      if (it->first.second < term) {
        calls.push_back(Completion::Proposer(std::move(it->second.done),
                                             ApplyResult(LeadershipChanged())));
        it = pending_.erase(it);
      } else {
        ++it;
      }
    }
  }
  PostCompletions(std::move(calls));
}

void NodeDriver::CompleteProposals(const std::vector<Entry>& entries,
                                   std::vector<ApplyResult>* results) {
  std::vector<Completion> calls;
  {
    absl::MutexLock lock(&pending_mu_);
    for (size_t i = 0; !pending_.empty() && i < entries.size(); ++i) {
      const LogIndex index = entries[i].index;
      for (auto it = pending_.lower_bound({index, Term(0)});
           it != pending_.end() && it->first.first == index;) {
        // Of another term: another leader's entry took this index, and
        // this one is committed, so ours never will be.
        const bool ours = it->first.second == entries[i].term;
        calls.push_back(
            Completion::Proposer(std::move(it->second.done),
                                 ours ? std::move((*results)[i])
                                      : ApplyResult(LeadershipChanged())));
        it = pending_.erase(it);
      }
    }
  }
  PostCompletions(std::move(calls));
  if (!entries.empty()) {
    AbandonProposalsAfter(entries.back().index, entries.back().term);
  }
}

void NodeDriver::CompleteReadsThrough(LogIndex applied) {
  std::vector<Completion> calls;
  {
    absl::MutexLock lock(&reads_mu_);
    if (applied > applied_for_reads_) {
      applied_for_reads_ = applied;
      applied_through_.store(applied.value(), std::memory_order_release);
    }
    while (!reads_waiting_.empty() &&
           reads_waiting_.begin()->first <= applied_for_reads_) {
      calls.push_back(Completion::Reader(
          std::move(reads_waiting_.begin()->second.done), absl::OkStatus()));
      reads_waiting_.erase(reads_waiting_.begin());
    }
  }
  PostCompletions(std::move(calls));
}

void NodeDriver::PostReaders(std::vector<StatusCallback> readers,
                             const absl::Status& status) {
  std::vector<Completion> calls;
  calls.reserve(readers.size());
  for (StatusCallback& r : readers) {
    calls.push_back(Completion::Reader(std::move(r), status));
  }
  PostCompletions(std::move(calls));
}

void NodeDriver::PostCompletions(std::vector<Completion> calls) {
  if (calls.empty()) return;
  {
    absl::MutexLock lock(&completion_mu_);
    for (Completion& c : calls) completion_queue_.push_back(std::move(c));
  }
  runtime_->Wake(Stage::kCompletion);
}

// ---------------------------------------------------------------------------
// Completion stage

void NodeDriver::RunCompletion() {
  std::deque<Completion> calls;
  {
    absl::MutexLock lock(&completion_mu_);
    calls.swap(completion_queue_);
  }
  for (Completion& c : calls) c.Run();
}

void NodeDriver::FailAllPending(const absl::Status& status) {
  std::map<std::pair<LogIndex, Term>, PendingProposal> pending;
  {
    absl::MutexLock lock(&pending_mu_);
    pending.swap(pending_);
  }
  for (auto& [key, p] : pending) p.done(status);
  std::multimap<LogIndex, WaitingRead> reads;
  {
    absl::MutexLock lock(&reads_mu_);
    reads.swap(reads_waiting_);
    reads_closed_ = true;
  }
  for (auto& [index, r] : reads) r.done(status);
  std::deque<Completion> calls;
  {
    absl::MutexLock lock(&completion_mu_);
    calls.swap(completion_queue_);
  }
  for (Completion& c : calls) c.Run();
}

}  // namespace sessiond::replication
