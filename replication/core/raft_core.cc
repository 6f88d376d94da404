// Copyright sessiond authors. Licensed under the Apache License 2.0.
//
// The Raft algorithm (Raft thesis, Ongaro 2014; structure after etcd-io/raft).
//
// Decisions worth knowing:
//
// * Membership changes take effect when COMMITTED, at the moment the core
//   hands the kConfChange entry out in Ready::committed (etcd's choice, not
//   the thesis' "on append", section 4.1). A committed change can never be
//   rolled back, so no configuration history is kept for truncated suffixes.
//   Only one change may be pending: a new one is refused until the previous
//   one has been handed out, and a new leader refuses changes until every
//   entry of earlier terms has been handed out. On start the core replays the
//   kConfChange entries of the committed log over LogReader's conf state.
//
// * Committed entries are handed out only once they are durable locally too
//   (<= the stable index), and are read back from the LogReader.
//
// * Durable promises: the candidate's vote requests, vote responses and
//   append responses go to Ready::send_after_persist, so that no quorum ever
//   counts a term, vote or entry that is not on disk. A leader's appends go
//   to send_now (parallel disk write, thesis 10.2.1); its own log counts
//   toward a quorum only after OnPersisted.
//
// * Lease-based reads (ReadOnlyMode::kLeaseBased, thesis 6.4.1) rely on
//   leader stickiness (check_quorum): a follower that received a message
//   from the leader refuses votes until election_ticks of ITS ticks have
//   passed, which is at least (election_ticks - 1) of its tick periods after
//   the receipt, whatever it hears meanwhile (a higher term from another
//   node leaves it without a leader, not without the refusal), for requests
//   of a higher term and of its own. In lease mode every heartbeat carries the
//   leader's tick count and the follower echoes it, so the leader knows a send
//   tick s that a quorum acknowledged. It answers reads locally while now < s +
//   (election_ticks - 2), i.e. for less than election_ticks - 2 of its own tick
//   periods after the send. Clock-drift bound: this is safe while no follower's
//   tick runs more than (election_ticks - 1) / (election_ticks - 2) times
//   faster than the leader's (12.5% with the default election_ticks of 10).
//   With tick_us set, a heartbeat also carries the lease's length in time,
//   and the follower refuses votes for at least ceil(length / its tick
//   period) + 2 of its ticks: members whose election_ticks or tick period
//   differ (a rolling change) keep the same margin. A
//   node in lease mode also refuses votes for election_ticks after it starts
//   (it may have acknowledged a lease before a restart). The lease is off
//   during a leadership transfer and, once a TimeoutNow was sent, for the rest
//   of the term (the transferee's forced campaign bypasses stickiness). Without
//   check_quorum, with election_ticks < 3, or when the lease has lapsed, reads
//   fall back to ReadIndex.
#include "replication/core/raft_core.h"

#include <algorithm>
#include <deque>
#include <limits>
#include <set>
#include <utility>
#include <vector>

#include "absl/container/inlined_vector.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/check.h"
#include "common/rng.h"
#include "replication/core/progress.h"
#include "replication/core/raft_log.h"

namespace sessiond::replication {

namespace {

// Vote requests carrying this context come from a leadership transfer
// (kTimeoutNow) and bypass leader stickiness.
constexpr char kTransferContext[] = "transfer";
// Upper bound on entry data handed out in one Ready::committed.
constexpr uint64_t kMaxApplyBytes = 64ull << 20;

bool IsResponseAfterPersist(MessageType type) {
  // Messages that promise durable state: they leave after the Ready's
  // persist (see the driver ordering rules in raft_core.h).
  return type == MessageType::kAppendResponse ||
         type == MessageType::kVoteResponse || type == MessageType::kVote;
}

// The latest snapshot's index; the truncation point while the snapshot is
// being prepared (Unavailable), or when there is none.
LogIndex SnapshotIndexOf(const LogReader& log) {
  absl::StatusOr<Snapshot> snapshot = log.GetSnapshot();
  const LogIndex truncated = log.FirstIndex() - 1;
  if (!snapshot.ok()) return truncated;
  return std::max(snapshot->meta.index, truncated);
}

}  // namespace

class RaftCore::Impl {
 public:
  Impl(const RaftConfig& config, const LogReader* log, uint64_t seed)
      : config_(config),
        id_(config.id),
        storage_(log),
        rng_(seed),
        log_(log, log->InitialHardState().commit,
             std::max(config.applied, SnapshotIndexOf(*log))) {}

  absl::Status Init();

  void Tick();
  absl::Status Step(Message&& m);
  absl::StatusOr<LogIndex> Propose(std::vector<std::string>&& commands);
  absl::StatusOr<LogIndex> ProposeConfChange(const ConfChange& change);
  void Campaign();
  absl::Status TransferLeadership(NodeId target);
  absl::Status ReadIndex(std::string context);
  uint64_t LocalReadTicks() const;
  uint64_t QuorumAckedTick() const;
  void OnPersisted(LogIndex index, Term term);
  void OnSnapshotInstalled(LogIndex index);
  void OnApplied(LogIndex index);
  void OnCompacted(LogIndex index);
  bool HasReady() const;
  Ready TakeReady();
  RaftStatus status() const;

  Role role() const { return role_; }
  NodeId leader() const { return lead_; }
  Term term() const { return term_; }
  LogIndex commit_index() const { return log_.committed(); }

 private:
  enum class CampaignType { kPreElection, kElection, kTransfer };

  struct ReadRequest {
    uint64_t id = 0;
    LogIndex index;
    NodeId from;
    std::string context;
  };

  // --- roles -------------------------------------------------------------
  void Reset(Term term);
  void BecomeFollower(Term term, NodeId lead);
  // A follower's receipt of an append, heartbeat or snapshot from `leader`.
  void HeardFromLeader(NodeId leader);
  void BecomeCandidate();
  void BecomePreCandidate();
  void BecomeLeader();
  // What a leader's messages carry as leader_commit (Message).
  LogIndex LeaderCommit() const;
  void ResetRandomizedElectionTimeout();
  bool Promotable() const { return voters_.count(id_) > 0; }
  bool PastElectionTimeout() const {
    return election_elapsed_ >= randomized_election_timeout_;
  }
  void Hup(CampaignType type);
  void DoCampaign(CampaignType type);
  // Records a vote; returns +1 won, -1 lost, 0 pending.
  int Poll(NodeId from, bool granted);
  size_t Quorum() const { return voters_.size() / 2 + 1; }
  // Committed entries not yet handed out may hold membership changes; a node
  // that campaigned on its older configuration could, two changes behind,
  // count a majority that does not overlap the current one (etcd refuses
  // to campaign in the same situation).
  bool ConfChangesPending() const {
    return log_.committed() > conf_applied_through_;
  }

  // --- ticks -------------------------------------------------------------
  void TickElection();
  void TickHeartbeat();
  bool CheckQuorumActive();

  // --- messages ----------------------------------------------------------
  void Send(Message m);
  void StepLeader(Message&& m);
  void StepCandidate(Message&& m);
  void StepFollower(Message&& m);
  void HandleVoteRequest(const Message& m);
  void HandleAppendEntries(Message&& m);
  void HandleHeartbeat(const Message& m);
  void HandleSnapshot(Message&& m);
  void HandleAppendResponse(const Message& m);
  void HandleHeartbeatResponse(const Message& m);

  // --- replication (leader) ----------------------------------------------
  void AppendAsLeader(std::vector<Entry>&& entries);
  bool MaybeSendAppend(NodeId to, bool send_if_empty);
  bool SendSnapshot(NodeId to, Progress& pr);
  void BcastAppend();
  void BcastHeartbeat();
  // `read_id` 0: no ReadIndex request to confirm.
  void SendHeartbeat(NodeId to, uint64_t read_id);
  bool LeaseMode() const {
    return config_.read_only_mode == ReadOnlyMode::kLeaseBased &&
           config_.check_quorum;
  }
  // The tick before which this leader's lease holds (0: it holds none).
  uint64_t LeaseEnd() const;
  // The lease's length in microseconds after a heartbeat's send (0: no
  // lease, or tick_us unknown).
  uint64_t LeaseSpanUs() const;
  bool LeaseValid() const { return now_ < LeaseEnd(); }
  bool InLease() const;
  bool MaybeCommit();
  bool CommittedEntryInCurrentTerm() const {
    return log_.TermOrZero(log_.committed()) == term_;
  }
  void SendTimeoutNow(NodeId to);
  void AbortLeaderTransfer() { lead_transferee_ = NodeId(0); }
  void ReleaseUncommittedBytes();

  // --- reads -------------------------------------------------------------
  void HandleReadIndexRequest(NodeId from, std::string context);
  // Answers a read at once where it can (one voter, the lease); otherwise
  // queues it for a heartbeat round and returns true.
  bool ServeOrQueueRead(NodeId from, std::string context);
  // A heartbeat round confirming every queued read.
  void ConfirmQueuedReads();
  void RespondRead(NodeId from, LogIndex index, std::string context);
  void AdvanceReads();
  void ReleasePendingReads();

  // --- membership --------------------------------------------------------
  void ApplyConfChange(const ConfChange& change, bool at_init);
  void AddProgress(NodeId node, bool learner);
  ConfState CurrentConfState() const;
  HardState CurrentHardState() const {
    return HardState{term_, vote_, log_.committed()};
  }

  const RaftConfig config_;
  const NodeId id_;
  const LogReader* const storage_;
  Rng rng_;
  RaftLog log_;

  Term term_;
  NodeId vote_;
  NodeId lead_;
  Role role_ = Role::kFollower;
  std::set<NodeId> voters_;
  std::set<NodeId> learners_;
  // Every member's progress (used while leader). Ordered: the order in which
  // messages go out is part of the deterministic output.
  std::map<NodeId, Progress> progress_;
  std::map<NodeId, bool> votes_;

  int election_elapsed_ = 0;
  // Ticks since the core was created (lease bookkeeping).
  uint64_t now_ = 0;
  // Follower: the tick before which it refuses votes (check_quorum), an
  // election timeout after the last message from a leader (or the leader's
  // lease, when longer), or after start (Init).
  // Kept apart from lead_ and election_elapsed_, which a higher term from
  // any node resets: the leader it acknowledged still counts on it.
  uint64_t refuse_votes_until_ = 0;
  // Leader, lease mode: per member, the latest send tick of a heartbeat it
  // acknowledged.
  std::map<NodeId, uint64_t> lease_ack_tick_;
  // Leader: a TimeoutNow went out in this term; no more lease reads.
  bool lease_disabled_ = false;
  int heartbeat_elapsed_ = 0;
  int randomized_election_timeout_ = 0;

  NodeId lead_transferee_;
  LogIndex pending_conf_index_;
  // Leader: its term's first entry (the no-op BecomeLeader appends).
  LogIndex term_first_index_;
  // Every committed entry through this index has been looked at for
  // membership changes (replayed at start, or handed out since).
  LogIndex conf_applied_through_;
  LogIndex applied_;

  // max_uncommitted_bytes accounting: (last index, bytes) per proposal not
  // yet committed.
  std::deque<std::pair<LogIndex, uint64_t>> uncommitted_batches_;
  uint64_t uncommitted_bytes_ = 0;

  // ReadIndex (thesis 6.4). Requests get increasing ids; heartbeats carry
  // the newest id as context, and a member's ack of id k confirms the
  // leadership for every request with id <= k (they were registered before
  // that heartbeat left).
  uint64_t next_read_id_ = 1;
  std::deque<ReadRequest> read_queue_;
  std::map<NodeId, uint64_t> read_acked_;
  // Requests that arrived before this leader committed an entry of its
  // term; served once it has. Bounded: with every disk stalled, check_quorum
  // keeps such a leader in office while reads keep coming.
  std::deque<ReadRequest> pending_reads_;
  std::vector<ReadState> read_states_;

  std::vector<Message> msgs_now_;
  std::vector<Message> msgs_after_persist_;
  HardState reported_hard_state_;
  Role reported_role_ = Role::kFollower;
  NodeId reported_leader_;
};

// ---------------------------------------------------------------------------
// Construction

absl::Status RaftCore::Impl::Init() {
  // A node may have acknowledged a leader's lease just before it restarted:
  // it refuses votes for an election timeout after it starts. The leader's
  // read mode decides whether it holds a lease, not this node's.
  if (LeaseMode() || config_.refuse_votes_after_start) {
    refuse_votes_until_ = static_cast<uint64_t>(config_.election_ticks);
  }
  const HardState hs = storage_->InitialHardState();
  reported_hard_state_ = hs;
  if (hs.commit > storage_->LastIndex() &&
      hs.commit > storage_->FirstIndex() - 1) {
    return absl::DataLossError(absl::StrCat(
        "hard state commit ", hs.commit.value(),
        " is beyond the log's last index ", storage_->LastIndex().value()));
  }
  const ConfState cs = storage_->InitialConfState();
  for (NodeId v : cs.voters) voters_.insert(v);
  for (NodeId l : cs.learners) {
    if (voters_.count(l)) {
      return absl::DataLossError(
          absl::StrCat("node ", l.value(), " is both voter and learner"));
    }
    learners_.insert(l);
  }
  // Replay committed membership changes recorded after the snapshot. The
  // log may still hold entries at or below the snapshot's index (it keeps a
  // tail for followers that lag a little); InitialConfState() already
  // reflects those.
  LogIndex next =
      std::max(storage_->FirstIndex(), SnapshotIndexOf(*storage_) + 1);
  const LogIndex committed = log_.committed();
  while (next <= committed) {
    absl::StatusOr<std::vector<Entry>> entries =
        storage_->Entries(next, committed + 1, kMaxApplyBytes);
    if (!entries.ok()) return entries.status();
    if (entries->empty()) break;
    for (const Entry& e : *entries) {
      if (e.type != EntryType::kConfChange) continue;
      ConfChange change;
      if (!DecodeConfChange(e.data, &change)) {
        return absl::DataLossError(
            absl::StrCat("bad conf change entry at ", e.index.value()));
      }
      ApplyConfChange(change, /*at_init=*/true);
    }
    next = entries->back().index + 1;
  }
  conf_applied_through_ = committed;
  applied_ = log_.applied_handed();
  for (NodeId v : voters_) AddProgress(v, false);
  for (NodeId l : learners_) AddProgress(l, true);

  BecomeFollower(hs.term, NodeId(0));
  vote_ = hs.vote;
  reported_role_ = Role::kFollower;
  reported_leader_ = NodeId(0);
  return absl::OkStatus();
}

// ---------------------------------------------------------------------------
// Roles

void RaftCore::Impl::ResetRandomizedElectionTimeout() {
  randomized_election_timeout_ =
      config_.election_ticks +
      static_cast<int>(
          rng_.Uniform(static_cast<uint64_t>(config_.election_ticks)));
}

void RaftCore::Impl::Reset(Term term) {
  if (term_ != term) {
    term_ = term;
    vote_ = NodeId(0);
  }
  lead_ = NodeId(0);
  election_elapsed_ = 0;
  heartbeat_elapsed_ = 0;
  ResetRandomizedElectionTimeout();
  AbortLeaderTransfer();
  votes_.clear();
  const LogIndex last = log_.LastIndex();
  for (auto& [node, pr] : progress_) {
    pr = Progress(last + 1, config_.max_inflight_messages,
                  config_.max_inflight_bytes, learners_.count(node) > 0);
    if (node == id_) pr.match = log_.StableLastIndex();
  }
  pending_conf_index_ = LogIndex(0);
  uncommitted_batches_.clear();
  uncommitted_bytes_ = 0;
  read_queue_.clear();
  read_acked_.clear();
  lease_ack_tick_.clear();
  lease_disabled_ = false;
  pending_reads_.clear();
}

void RaftCore::Impl::BecomeFollower(Term term, NodeId lead) {
  Reset(term);
  lead_ = lead;
  role_ = Role::kFollower;
}

void RaftCore::Impl::HeardFromLeader(NodeId leader) {
  election_elapsed_ = 0;
  lead_ = leader;
  // Never shortened: a heartbeat may have asked for longer (the leader's
  // lease, when its election timeout is longer than ours).
  refuse_votes_until_ =
      std::max(refuse_votes_until_,
               now_ + static_cast<uint64_t>(config_.election_ticks));
}

void RaftCore::Impl::BecomeCandidate() {
  SESSIOND_CHECK(role_ != Role::kLeader);
  Reset(term_ + 1);
  vote_ = id_;
  role_ = Role::kCandidate;
}

void RaftCore::Impl::BecomePreCandidate() {
  SESSIOND_CHECK(role_ != Role::kLeader);
  // Thesis 9.6: a pre-candidate changes neither term nor vote.
  votes_.clear();
  lead_ = NodeId(0);
  role_ = Role::kPreCandidate;
}

void RaftCore::Impl::BecomeLeader() {
  SESSIOND_CHECK(role_ != Role::kFollower);
  Reset(term_);
  lead_ = id_;
  role_ = Role::kLeader;
  auto self = progress_.find(id_);
  if (self != progress_.end()) self->second.BecomeReplicate();
  // Thesis 4.1: no membership change until everything from earlier terms is
  // handed out (we cannot tell whether it holds a conf change).
  pending_conf_index_ = log_.LastIndex();
  // Thesis 3.6.2/figure 8: a leader commits entries of earlier terms only
  // by committing one of its own; append a no-op at once.
  std::vector<Entry> noop(1);
  AppendAsLeader(std::move(noop));
  term_first_index_ = log_.LastIndex();
  BcastAppend();
}

LogIndex RaftCore::Impl::LeaderCommit() const {
  // Everything any leader committed before this term is at or below its
  // first entry, and this leader learns what its predecessor committed only
  // when that entry commits: told only its commit index, a follower that
  // had not heard the previous leader's last commit counted itself current
  // without the writes acknowledged there (tests/sim's staleness claims).
  return std::max(log_.committed(), term_first_index_);
}

void RaftCore::Impl::Hup(CampaignType type) {
  if (role_ == Role::kLeader) return;
  if (!Promotable()) return;
  if (ConfChangesPending()) return;
  if (type == CampaignType::kPreElection && !config_.pre_vote) {
    type = CampaignType::kElection;
  }
  DoCampaign(type);
}

void RaftCore::Impl::DoCampaign(CampaignType type) {
  Term vote_term;
  MessageType vote_type;
  if (type == CampaignType::kPreElection) {
    BecomePreCandidate();
    vote_type = MessageType::kPreVote;
    vote_term = term_ + 1;
  } else {
    BecomeCandidate();
    vote_type = MessageType::kVote;
    vote_term = term_;
  }
  // Our own vote. The candidate's term and vote are persisted before any
  // other vote can arrive: its requests leave after the persist.
  const int result = Poll(id_, true);
  if (result > 0) {
    if (type == CampaignType::kPreElection) {
      DoCampaign(CampaignType::kElection);
    } else {
      BecomeLeader();
    }
    return;
  }
  for (NodeId voter : voters_) {
    if (voter == id_) continue;
    Message m;
    m.type = vote_type;
    m.to = voter;
    m.term = vote_term;
    m.index = log_.LastIndex();
    m.log_term = log_.LastTerm();
    if (type == CampaignType::kTransfer) m.context = kTransferContext;
    Send(std::move(m));
  }
}

int RaftCore::Impl::Poll(NodeId from, bool granted) {
  votes_.emplace(from, granted);
  size_t yes = 0;
  size_t no = 0;
  for (NodeId voter : voters_) {
    auto it = votes_.find(voter);
    if (it == votes_.end()) continue;
    (it->second ? yes : no)++;
  }
  if (yes >= Quorum()) return 1;
  if (no >= Quorum()) return -1;
  return 0;
}

// ---------------------------------------------------------------------------
// Ticks

void RaftCore::Impl::Tick() {
  ++now_;
  if (role_ == Role::kLeader) {
    TickHeartbeat();
  } else {
    TickElection();
  }
}

void RaftCore::Impl::TickElection() {
  ++election_elapsed_;
  // Not while refusing votes to others: a lease this node acknowledged may
  // still run (the leader's election timeout may be longer than ours), and
  // our own vote, with those of members the leader no longer reaches,
  // would elect us within it. With equal timeouts it has always ended.
  // The count stops at one election timeout meanwhile: were it past every
  // member's randomized timeout when a long lease ends, they would all
  // campaign at that tick and split the vote.
  if (now_ < refuse_votes_until_) {
    election_elapsed_ = std::min(election_elapsed_, config_.election_ticks);
    return;
  }
  if (Promotable() && PastElectionTimeout()) {
    election_elapsed_ = 0;
    Hup(CampaignType::kPreElection);
  }
}

bool RaftCore::Impl::CheckQuorumActive() {
  size_t active = 0;
  for (auto& [node, pr] : progress_) {
    if (node == id_) {
      if (voters_.count(node)) ++active;
      continue;
    }
    if (pr.recent_active && voters_.count(node)) ++active;
    pr.recent_active = false;
  }
  return active >= Quorum();
}

void RaftCore::Impl::TickHeartbeat() {
  ++heartbeat_elapsed_;
  ++election_elapsed_;
  if (election_elapsed_ >= config_.election_ticks) {
    election_elapsed_ = 0;
    // Thesis 6.2: a leader that cannot reach a quorum steps down, so that
    // clients find the real leader and lease reads stay safe.
    if (config_.check_quorum && !CheckQuorumActive()) {
      BecomeFollower(term_, NodeId(0));
      return;
    }
    // Thesis 3.10: a transfer that did not finish within an election
    // timeout is abandoned and proposals resume.
    if (lead_transferee_ != NodeId(0)) AbortLeaderTransfer();
  }
  if (heartbeat_elapsed_ >= config_.heartbeat_ticks) {
    heartbeat_elapsed_ = 0;
    BcastHeartbeat();
  }
}

// ---------------------------------------------------------------------------
// Messages

void RaftCore::Impl::Send(Message m) {
  m.from = id_;
  if (m.type != MessageType::kPreVote &&
      m.type != MessageType::kPreVoteResponse && m.type != MessageType::kVote &&
      m.type != MessageType::kReadIndex &&
      m.type != MessageType::kReadIndexResponse) {
    m.term = term_;
  }
  if (IsResponseAfterPersist(m.type)) {
    msgs_after_persist_.push_back(std::move(m));
  } else {
    msgs_now_.push_back(std::move(m));
  }
}

absl::Status RaftCore::Impl::Step(Message&& m) {
  if (m.to != id_) {
    return absl::InvalidArgumentError(absl::StrCat(
        "message for node ", m.to.value(), " stepped into node ", id_.value()));
  }
  if (static_cast<uint8_t>(m.type) >
      static_cast<uint8_t>(MessageType::kReadIndexResponse)) {
    return absl::InvalidArgumentError(
        absl::StrCat("unknown message type ", static_cast<int>(m.type)));
  }
  if (m.from == NodeId(0) || m.from == id_) {
    return absl::InvalidArgumentError(
        absl::StrCat("bad sender ", m.from.value()));
  }
  if (m.type == MessageType::kAppend) {
    for (size_t i = 0; i < m.entries.size(); ++i) {
      if (m.entries[i].index != m.index + (i + 1) ||
          m.entries[i].term > m.term) {
        return absl::InvalidArgumentError(
            "append with non-consecutive entries or entries from a later "
            "term");
      }
      // Decoded when it commits, where a bad one can only stop the node
      // (and, once on disk, stop it again at every restart): refused here,
      // before it is stored, it is one dropped message.
      ConfChange change;
      if (m.entries[i].type == EntryType::kConfChange &&
          !DecodeConfChange(m.entries[i].data, &change)) {
        return absl::InvalidArgumentError(
            absl::StrCat("append with a malformed membership change at ",
                         m.entries[i].index.value()));
      }
    }
  }
  if (m.type == MessageType::kSnapshot &&
      (!m.snapshot || m.snapshot->empty())) {
    return absl::InvalidArgumentError("snapshot message without a snapshot");
  }

  const bool local =
      m.term == Term(0) && (m.type == MessageType::kReadIndex ||
                            m.type == MessageType::kReadIndexResponse);
  if (!local && m.term > term_) {
    if (m.type == MessageType::kVote || m.type == MessageType::kPreVote) {
      const bool force = m.context == kTransferContext;
      const bool in_lease = InLease();
      // Thesis 4.2.3: while a follower hears from a live leader it ignores
      // vote requests, so a rejoining node cannot depose it.
      if (!force && in_lease) return absl::OkStatus();
    }
    if (m.type == MessageType::kPreVote) {
      // A pre-vote does not change our term.
    } else if (m.type == MessageType::kPreVoteResponse && !m.reject) {
      // A granted pre-vote carries the future term; not ours yet.
    } else if (m.type == MessageType::kAppend ||
               m.type == MessageType::kHeartbeat ||
               m.type == MessageType::kSnapshot) {
      BecomeFollower(m.term, m.from);
    } else {
      BecomeFollower(m.term, NodeId(0));
    }
  } else if (!local && m.term < term_) {
    if ((config_.check_quorum || config_.pre_vote) &&
        (m.type == MessageType::kAppend || m.type == MessageType::kHeartbeat)) {
      // A stale leader (or a node that advanced its term while partitioned
      // and cannot win): answering with our term makes the stale side move
      // on (etcd raft.go, the same case).
      Message resp;
      resp.type = MessageType::kAppendResponse;
      resp.to = m.from;
      msgs_now_.push_back(std::move(resp));
      msgs_now_.back().from = id_;
      msgs_now_.back().term = term_;
    } else if (m.type == MessageType::kPreVote ||
               m.type == MessageType::kVote) {
      // Thesis 3.4 / figure 3.1: a stale RequestVote is answered with our
      // term so the candidate catches up. Dropping it silently livelocked a
      // 2-voter cluster in the simulation: the voter whose membership was
      // stale only asked a removed node, and the other candidate never
      // learned the higher term it needed to win (regression test:
      // RaftSimScripted.VoterWithStaleMembershipDoesNotLivelock).
      Message resp;
      resp.type = m.type == MessageType::kPreVote
                      ? MessageType::kPreVoteResponse
                      : MessageType::kVoteResponse;
      resp.to = m.from;
      resp.term = term_;
      resp.reject = true;
      Send(std::move(resp));
    }
    return absl::OkStatus();
  }

  if (m.type == MessageType::kPreVote || m.type == MessageType::kVote) {
    HandleVoteRequest(m);
    return absl::OkStatus();
  }
  switch (role_) {
    case Role::kLeader:
      StepLeader(std::move(m));
      break;
    case Role::kCandidate:
    case Role::kPreCandidate:
      StepCandidate(std::move(m));
      break;
    case Role::kFollower:
      StepFollower(std::move(m));
      break;
  }
  return absl::OkStatus();
}

void RaftCore::Impl::HandleVoteRequest(const Message& m) {
  const bool pre = m.type == MessageType::kPreVote;
  // Thesis 4.2.3 for a request of our own term: a higher term from another
  // node may have left us without a leader inside a leader's lease.
  const bool refusing = InLease() && m.context != kTransferContext;
  // Thesis 3.4: one vote per term; 9.6: a pre-vote is granted to any
  // candidate for a later term whose log is up to date.
  const bool can_vote =
      vote_ == m.from ||
      (!refusing &&
       ((vote_ == NodeId(0) && lead_ == NodeId(0)) || (pre && m.term > term_)));
  Message resp;
  resp.type = pre ? MessageType::kPreVoteResponse : MessageType::kVoteResponse;
  resp.to = m.from;
  // Thesis 3.6.1: the election restriction (candidate's log up to date).
  if (can_vote && log_.IsUpToDate(m.index, m.log_term)) {
    resp.term = m.term;
    if (!pre) {
      election_elapsed_ = 0;
      vote_ = m.from;
    }
  } else {
    resp.term = term_;
    resp.reject = true;
  }
  Send(std::move(resp));
}

void RaftCore::Impl::StepLeader(Message&& m) {
  switch (m.type) {
    case MessageType::kAppendResponse:
      HandleAppendResponse(m);
      break;
    case MessageType::kHeartbeatResponse:
      HandleHeartbeatResponse(m);
      break;
    case MessageType::kReadIndex:
      HandleReadIndexRequest(m.from, std::move(m.context));
      break;
    default:
      break;  // stale responses, other leaders' traffic of our term: none
  }
}

void RaftCore::Impl::StepCandidate(Message&& m) {
  const MessageType my_resp = role_ == Role::kPreCandidate
                                  ? MessageType::kPreVoteResponse
                                  : MessageType::kVoteResponse;
  switch (m.type) {
    case MessageType::kAppend:
      BecomeFollower(m.term, m.from);
      HeardFromLeader(m.from);
      HandleAppendEntries(std::move(m));
      return;
    case MessageType::kHeartbeat:
      BecomeFollower(m.term, m.from);
      HeardFromLeader(m.from);
      HandleHeartbeat(m);
      return;
    case MessageType::kSnapshot:
      BecomeFollower(m.term, m.from);
      HeardFromLeader(m.from);
      HandleSnapshot(std::move(m));
      return;
    default:
      break;
  }
  if (m.type != my_resp) return;
  const int result = Poll(m.from, !m.reject);
  if (result > 0) {
    if (role_ == Role::kPreCandidate) {
      DoCampaign(CampaignType::kElection);
    } else {
      BecomeLeader();
    }
  } else if (result < 0) {
    BecomeFollower(term_, NodeId(0));
  }
}

void RaftCore::Impl::StepFollower(Message&& m) {
  switch (m.type) {
    case MessageType::kAppend:
      HeardFromLeader(m.from);
      HandleAppendEntries(std::move(m));
      break;
    case MessageType::kHeartbeat:
      HeardFromLeader(m.from);
      HandleHeartbeat(m);
      break;
    case MessageType::kSnapshot:
      HeardFromLeader(m.from);
      HandleSnapshot(std::move(m));
      break;
    case MessageType::kTimeoutNow:
      // Thesis 3.10: the leader asks us to campaign at once, skipping
      // PreVote and leader stickiness.
      Hup(CampaignType::kTransfer);
      break;
    case MessageType::kReadIndexResponse:
      read_states_.push_back(ReadState{m.index, std::move(m.context)});
      break;
    default:
      break;
  }
}

void RaftCore::Impl::HandleAppendEntries(Message&& m) {
  Message resp;
  resp.type = MessageType::kAppendResponse;
  resp.to = m.from;
  if (m.index < log_.committed()) {
    resp.index = log_.committed();
    Send(std::move(resp));
    return;
  }
  const LogIndex prev = m.index;
  const Term prev_term = m.log_term;
  const LogIndex leader_commit = m.commit;
  std::optional<LogIndex> last =
      log_.MaybeAppend(prev, prev_term, std::move(m.entries));
  if (last) {
    log_.CommitTo(std::min(leader_commit, *last));
    resp.index = *last;
    Send(std::move(resp));
    return;
  }
  // Thesis 5.3 / etcd findConflictByTerm: hint the largest index whose term
  // is <= the leader's prev term, so the leader skips a whole term per
  // round trip instead of one entry.
  const LogIndex hint_from = std::min(prev, log_.LastIndex());
  auto [hint, hint_term] = log_.FindConflictByTerm(hint_from, prev_term);
  resp.index = prev;
  resp.reject = true;
  resp.reject_hint = hint;
  resp.hint_term = hint_term;
  Send(std::move(resp));
}

void RaftCore::Impl::HandleHeartbeat(const Message& m) {
  log_.CommitTo(std::min(m.commit, log_.LastIndex()));
  // Context "<read id>/<send tick>/<lease us>": refuse votes until that
  // lease has surely lapsed, measured in this node's ticks. R ticks after
  // the receipt are at least (R - 1) periods, and the lease ends less than
  // its length after the send: R = ceil(lease / period) + 2 leaves a period
  // to spare, as election_ticks does against election_ticks - 2.
  const std::vector<absl::string_view> parts = absl::StrSplit(m.context, '/');
  uint64_t lease_us = 0;
  if (parts.size() == 3 && config_.tick_us > 0 &&
      absl::SimpleAtoi(parts[2], &lease_us) && lease_us > 0) {
    const uint64_t ticks =
        (lease_us + config_.tick_us - 1) / config_.tick_us + 2;
    refuse_votes_until_ = std::max(refuse_votes_until_, now_ + ticks);
  }
  Message resp;
  resp.type = MessageType::kHeartbeatResponse;
  resp.to = m.from;
  resp.context = m.context;
  Send(std::move(resp));
}

void RaftCore::Impl::HandleSnapshot(Message&& m) {
  Message resp;
  resp.type = MessageType::kAppendResponse;
  resp.to = m.from;
  const SnapshotMeta& meta = m.snapshot->meta;
  if (meta.index <= log_.committed()) {
    resp.index = log_.committed();
  } else if (log_.MatchTerm(meta.index, meta.term)) {
    // We already hold the snapshot's last entry: just learn the commit.
    // Acknowledge only through the snapshot: entries after it may still
    // diverge from the leader's.
    log_.CommitTo(meta.index);
    resp.index = log_.committed();
  } else {
    log_.Restore(*m.snapshot);
    voters_.clear();
    learners_.clear();
    for (NodeId v : meta.conf_state.voters) voters_.insert(v);
    for (NodeId l : meta.conf_state.learners) learners_.insert(l);
    progress_.clear();
    for (NodeId v : voters_) AddProgress(v, false);
    for (NodeId l : learners_) AddProgress(l, true);
    conf_applied_through_ = meta.index;
    resp.index = log_.LastIndex();
  }
  Send(std::move(resp));
}

void RaftCore::Impl::HandleAppendResponse(const Message& m) {
  auto it = progress_.find(m.from);
  if (it == progress_.end()) return;
  Progress& pr = it->second;
  pr.recent_active = true;
  if (m.reject) {
    LogIndex next_probe = m.reject_hint;
    if (m.hint_term > Term(0)) {
      next_probe = log_.FindConflictByTerm(m.reject_hint, m.hint_term).first;
    }
    if (pr.MaybeDecrTo(m.index, next_probe)) {
      if (pr.state == ProgressState::kReplicate) pr.BecomeProbe();
      MaybeSendAppend(m.from, true);
    }
    return;
  }
  const bool old_paused = pr.IsPaused();
  if (!pr.MaybeUpdate(m.index)) return;
  switch (pr.state) {
    case ProgressState::kProbe:
      pr.BecomeReplicate();
      break;
    case ProgressState::kSnapshot:
      if (pr.match + 1 >= log_.FirstIndex()) {
        pr.BecomeProbe();
        pr.BecomeReplicate();
      }
      break;
    case ProgressState::kReplicate:
      pr.inflights.FreeLE(m.index);
      break;
  }
  if (MaybeCommit()) {
    BcastAppend();
  } else if (old_paused) {
    MaybeSendAppend(m.from, true);
  }
  while (MaybeSendAppend(m.from, false)) {
  }
  if (m.from == lead_transferee_ && pr.match == log_.LastIndex()) {
    SendTimeoutNow(m.from);
  }
}

void RaftCore::Impl::HandleHeartbeatResponse(const Message& m) {
  auto it = progress_.find(m.from);
  if (it == progress_.end()) return;
  Progress& pr = it->second;
  pr.recent_active = true;
  pr.probe_sent = false;
  if (pr.state == ProgressState::kReplicate && pr.inflights.Full()) {
    pr.inflights.FreeFirstOne();
  }
  if (pr.state == ProgressState::kSnapshot) {
    // The snapshot or its answer may have been lost: retry after about two
    // election timeouts' worth of heartbeats.
    const int limit =
        std::max(2, 2 * config_.election_ticks / config_.heartbeat_ticks);
    if (++pr.snapshot_wait >= limit) pr.BecomeProbe();
  }
  if (pr.match < log_.LastIndex()) MaybeSendAppend(m.from, true);
  if (!m.context.empty() && voters_.count(m.from)) {
    // Context: "<read id>/<send tick>[/<lease us>]" ("<read id>" from
    // older versions).
    const std::vector<absl::string_view> parts = absl::StrSplit(m.context, '/');
    uint64_t tick = 0;
    if (parts.size() >= 2 && absl::SimpleAtoi(parts[1], &tick) &&
        tick <= now_) {
      uint64_t& acked_tick = lease_ack_tick_[m.from];
      acked_tick = std::max(acked_tick, tick);
    }
    uint64_t id = 0;
    if (absl::SimpleAtoi(parts[0], &id) && id != 0) {
      uint64_t& acked = read_acked_[m.from];
      acked = std::max(acked, id);
      AdvanceReads();
    }
  }
}

// ---------------------------------------------------------------------------
// Replication

void RaftCore::Impl::AppendAsLeader(std::vector<Entry>&& entries) {
  LogIndex index = log_.LastIndex();
  for (Entry& e : entries) {
    e.term = term_;
    e.index = ++index;
  }
  log_.Append(std::move(entries));
}

bool RaftCore::Impl::MaybeSendAppend(NodeId to, bool send_if_empty) {
  auto it = progress_.find(to);
  if (it == progress_.end() || to == id_) return false;
  Progress& pr = it->second;
  if (pr.IsPaused()) return false;
  const LogIndex prev = pr.next - 1;
  std::optional<Term> prev_term = log_.TermAt(prev);
  std::optional<std::vector<Entry>> entries;
  if (prev_term) entries = log_.EntriesFrom(pr.next, config_.max_message_bytes);
  if (!prev_term || !entries) return SendSnapshot(to, pr);
  if (entries->empty() && !send_if_empty) return false;
  Message m;
  m.type = MessageType::kAppend;
  m.to = to;
  m.index = prev;
  m.log_term = *prev_term;
  m.commit = log_.committed();
  m.leader_commit = LeaderCommit();
  if (!entries->empty()) {
    uint64_t bytes = 0;
    for (const Entry& e : *entries) bytes += e.data.size();
    pr.SentEntries(entries->back().index, bytes);
    m.entries = std::move(*entries);
  } else if (pr.state == ProgressState::kProbe) {
    pr.probe_sent = true;
  }
  Send(std::move(m));
  return true;
}

bool RaftCore::Impl::SendSnapshot(NodeId to, Progress& pr) {
  absl::StatusOr<Snapshot> snap = storage_->GetSnapshot();
  if (!snap.ok()) {
    // Unavailable: being prepared; a later heartbeat response retries.
    SESSIOND_CHECK_MSG(absl::IsUnavailable(snap.status()),
                       snap.status().ToString());
    return false;
  }
  if (snap->empty()) return false;
  pr.BecomeSnapshot(snap->meta.index);
  Message m;
  m.type = MessageType::kSnapshot;
  m.to = to;
  m.leader_commit = LeaderCommit();
  m.snapshot = std::move(*snap);
  Send(std::move(m));
  return true;
}

void RaftCore::Impl::BcastAppend() {
  for (auto& [node, pr] : progress_) {
    if (node != id_) MaybeSendAppend(node, true);
  }
}

void RaftCore::Impl::SendHeartbeat(NodeId to, uint64_t read_id) {
  const Progress& pr = progress_.at(to);
  Message m;
  m.type = MessageType::kHeartbeat;
  m.to = to;
  // Never tell a member to commit beyond what it is known to hold.
  m.commit = std::min(pr.match, log_.committed());
  m.leader_commit = LeaderCommit();
  // Its tick comes back with the answer (QuorumAckedTick, and the lease);
  // the lease's length tells the member how long to refuse votes.
  m.context = absl::StrCat(read_id, "/", now_);
  if (const uint64_t lease_us = LeaseSpanUs(); lease_us > 0) {
    absl::StrAppend(&m.context, "/", lease_us);
  }
  Send(std::move(m));
}

bool RaftCore::Impl::InLease() const {
  if (!config_.check_quorum) return false;
  if (role_ == Role::kLeader) return true;
  return now_ < refuse_votes_until_;
}

uint64_t RaftCore::Impl::LeaseEnd() const {
  if (!LeaseMode() || lease_disabled_ || lead_transferee_ != NodeId(0) ||
      config_.election_ticks < 3) {
    return 0;
  }
  const uint64_t start = QuorumAckedTick();
  if (start == 0) return 0;
  return start + static_cast<uint64_t>(config_.election_ticks - 2);
}

uint64_t RaftCore::Impl::LeaseSpanUs() const {
  if (!LeaseMode() || config_.election_ticks < 3) return 0;
  return static_cast<uint64_t>(config_.election_ticks - 2) * config_.tick_us;
}

uint64_t RaftCore::Impl::QuorumAckedTick() const {
  if (role_ != Role::kLeader) return 0;
  // Each leader driver run: no allocation for a usual cluster.
  absl::InlinedVector<uint64_t, 7> ticks;
  for (NodeId v : voters_) {
    if (v == id_) {
      ticks.push_back(now_);
      continue;
    }
    auto it = lease_ack_tick_.find(v);
    // No acknowledgement yet: nothing heard from this member.
    if (it == lease_ack_tick_.end()) continue;
    ticks.push_back(it->second);
  }
  if (ticks.size() < Quorum()) return 0;
  std::sort(ticks.begin(), ticks.end(), std::greater<uint64_t>());
  return ticks[Quorum() - 1];
}

uint64_t RaftCore::Impl::LocalReadTicks() const {
  if (role_ != Role::kLeader || lead_transferee_ != NodeId(0) ||
      config_.election_ticks < 3) {
    return 0;
  }
  // Every write an earlier leader acknowledged is at or below this term's
  // first entry: having applied an entry of this term, the state machine
  // holds them all.
  if (log_.TermOrZero(applied_) != term_) return 0;
  if (voters_.size() == 1 && voters_.count(id_)) {
    // No other node can become leader without this one's vote, and the
    // driver withdraws the window before that vote can leave.
    return static_cast<uint64_t>(config_.election_ticks - 2);
  }
  const uint64_t end = LeaseEnd();
  return now_ < end ? end - now_ : 0;
}

void RaftCore::Impl::BcastHeartbeat() {
  const uint64_t read_id = read_queue_.empty() ? 0 : read_queue_.back().id;
  for (const auto& [node, pr] : progress_) {
    if (node != id_) SendHeartbeat(node, read_id);
  }
}

bool RaftCore::Impl::MaybeCommit() {
  if (voters_.empty()) return false;
  std::vector<LogIndex> matches;
  matches.reserve(voters_.size());
  for (NodeId v : voters_) {
    auto it = progress_.find(v);
    matches.push_back(it == progress_.end() ? LogIndex(0) : it->second.match);
  }
  std::sort(matches.begin(), matches.end(), std::greater<LogIndex>());
  const LogIndex candidate = matches[Quorum() - 1];
  if (candidate <= log_.committed()) return false;
  // Thesis 3.6.2: only entries of the current term commit by counting
  // replicas (figure 8). The test-only flag breaks the rule on purpose.
  if (!config_.unsafe_commit_previous_term_for_test &&
      log_.TermOrZero(candidate) != term_) {
    return false;
  }
  log_.CommitTo(candidate);
  ReleaseUncommittedBytes();
  ReleasePendingReads();
  return true;
}

void RaftCore::Impl::SendTimeoutNow(NodeId to) {
  // The target's forced campaign ignores leader stickiness, so our lease
  // no longer holds in this term.
  lease_disabled_ = true;
  Message m;
  m.type = MessageType::kTimeoutNow;
  m.to = to;
  Send(std::move(m));
}

void RaftCore::Impl::ReleaseUncommittedBytes() {
  const LogIndex committed = log_.committed();
  while (!uncommitted_batches_.empty() &&
         uncommitted_batches_.front().first <= committed) {
    uncommitted_bytes_ -= uncommitted_batches_.front().second;
    uncommitted_batches_.pop_front();
  }
}

// ---------------------------------------------------------------------------
// Reads

void RaftCore::Impl::RespondRead(NodeId from, LogIndex index,
                                 std::string context) {
  if (from == id_) {
    read_states_.push_back(ReadState{index, std::move(context)});
    return;
  }
  Message m;
  m.type = MessageType::kReadIndexResponse;
  m.to = from;
  m.index = index;
  m.context = std::move(context);
  Send(std::move(m));
}

void RaftCore::Impl::HandleReadIndexRequest(NodeId from, std::string context) {
  // Thesis 6.4 step 1: a new leader does not know the commit index until it
  // has committed an entry of its own term.
  if (!CommittedEntryInCurrentTerm()) {
    if (pending_reads_.size() >= RaftCore::kMaxReadsBeforeFirstCommit) {
      pending_reads_.pop_front();  // its requester times out, as it must
    }
    pending_reads_.push_back(
        ReadRequest{0, LogIndex(0), from, std::move(context)});
    return;
  }
  if (ServeOrQueueRead(from, std::move(context))) ConfirmQueuedReads();
}

bool RaftCore::Impl::ServeOrQueueRead(NodeId from, std::string context) {
  if ((voters_.size() == 1 && voters_.count(id_)) || LeaseValid()) {
    RespondRead(from, log_.committed(), std::move(context));
    return false;
  }
  read_queue_.push_back(
      ReadRequest{next_read_id_++, log_.committed(), from, std::move(context)});
  return true;
}

void RaftCore::Impl::ConfirmQueuedReads() {
  const uint64_t read_id = read_queue_.back().id;
  for (const auto& [node, pr] : progress_) {
    if (node != id_) SendHeartbeat(node, read_id);
  }
}

void RaftCore::Impl::AdvanceReads() {
  if (read_queue_.empty()) return;
  std::vector<uint64_t> acks;
  for (NodeId v : voters_) {
    if (v == id_) {
      acks.push_back(std::numeric_limits<uint64_t>::max());
      continue;
    }
    auto it = read_acked_.find(v);
    acks.push_back(it == read_acked_.end() ? 0 : it->second);
  }
  std::sort(acks.begin(), acks.end(), std::greater<uint64_t>());
  const uint64_t confirmed = acks[Quorum() - 1];
  while (!read_queue_.empty() && read_queue_.front().id <= confirmed) {
    ReadRequest req = std::move(read_queue_.front());
    read_queue_.pop_front();
    RespondRead(req.from, req.index, std::move(req.context));
  }
}

void RaftCore::Impl::ReleasePendingReads() {
  if (pending_reads_.empty() || !CommittedEntryInCurrentTerm()) return;
  std::deque<ReadRequest> pending = std::move(pending_reads_);
  pending_reads_.clear();
  // One heartbeat round confirms them all (its id covers every one).
  bool queued = false;
  for (ReadRequest& r : pending) {
    queued = ServeOrQueueRead(r.from, std::move(r.context)) || queued;
  }
  if (queued) ConfirmQueuedReads();
}

// ---------------------------------------------------------------------------
// Membership

void RaftCore::Impl::AddProgress(NodeId node, bool learner) {
  auto it = progress_.find(node);
  if (it != progress_.end()) {
    it->second.is_learner = learner;
    return;
  }
  Progress pr(log_.LastIndex() + 1, config_.max_inflight_messages,
              config_.max_inflight_bytes, learner);
  if (node == id_) pr.match = log_.StableLastIndex();
  progress_.emplace(node, std::move(pr));
}

ConfState RaftCore::Impl::CurrentConfState() const {
  ConfState cs;
  cs.voters.assign(voters_.begin(), voters_.end());
  cs.learners.assign(learners_.begin(), learners_.end());
  return cs;
}

void RaftCore::Impl::ApplyConfChange(const ConfChange& change, bool at_init) {
  const NodeId node = change.node;
  switch (change.type) {
    case ConfChangeType::kAddLearner:
      if (voters_.count(node)) return;  // never demote implicitly
      learners_.insert(node);
      if (!at_init) AddProgress(node, true);
      break;
    case ConfChangeType::kPromoteVoter:
      learners_.erase(node);
      voters_.insert(node);
      if (!at_init) AddProgress(node, false);
      break;
    case ConfChangeType::kRemoveNode:
      voters_.erase(node);
      learners_.erase(node);
      if (!at_init) progress_.erase(node);
      read_acked_.erase(node);
      break;
  }
  if (at_init) return;
  if (role_ != Role::kLeader) return;
  if (!Promotable()) {
    // Removed (thesis 4.2.2): the leader steps down once the change is
    // committed; the others elect a new leader without it.
    BecomeFollower(term_, NodeId(0));
    return;
  }
  if (lead_transferee_ != NodeId(0) && !voters_.count(lead_transferee_)) {
    AbortLeaderTransfer();
  }
  if (MaybeCommit()) BcastAppend();
  AdvanceReads();
  if (change.type != ConfChangeType::kRemoveNode) {
    MaybeSendAppend(node, true);
  }
}

// ---------------------------------------------------------------------------
// Public entry points

absl::StatusOr<LogIndex> RaftCore::Impl::Propose(
    std::vector<std::string>&& commands) {
  if (role_ != Role::kLeader) {
    return absl::UnavailableError(
        absl::StrCat("not the leader; leader is ", lead_.value()));
  }
  if (lead_transferee_ != NodeId(0)) {
    return absl::UnavailableError(absl::StrCat(
        "leadership transfer to ", lead_transferee_.value(), " in progress"));
  }
  if (commands.empty()) {
    return absl::InvalidArgumentError("no commands to propose");
  }
  uint64_t bytes = 0;
  for (const std::string& c : commands) bytes += c.size();
  if (config_.max_uncommitted_bytes != 0 && uncommitted_bytes_ > 0 &&
      uncommitted_bytes_ + bytes > config_.max_uncommitted_bytes) {
    return absl::ResourceExhaustedError(
        absl::StrCat("too much uncommitted data: ", uncommitted_bytes_,
                     " bytes wait for a quorum"));
  }
  std::vector<Entry> entries(commands.size());
  for (size_t i = 0; i < commands.size(); ++i) {
    entries[i].data = std::move(commands[i]);
  }
  AppendAsLeader(std::move(entries));
  const LogIndex last = log_.LastIndex();
  if (config_.max_uncommitted_bytes != 0) {
    uncommitted_batches_.emplace_back(last, bytes);
    uncommitted_bytes_ += bytes;
  }
  BcastAppend();
  return last;
}

absl::StatusOr<LogIndex> RaftCore::Impl::ProposeConfChange(
    const ConfChange& change) {
  if (role_ != Role::kLeader) {
    return absl::UnavailableError(
        absl::StrCat("not the leader; leader is ", lead_.value()));
  }
  if (lead_transferee_ != NodeId(0)) {
    return absl::UnavailableError("leadership transfer in progress");
  }
  if (pending_conf_index_ > log_.applied_handed()) {
    return absl::FailedPreconditionError(
        absl::StrCat(kConfChangePendingPrefix, pending_conf_index_.value(),
                     " is not yet applied"));
  }
  const NodeId node = change.node;
  if (node == NodeId(0)) return absl::InvalidArgumentError("node 0");
  switch (change.type) {
    case ConfChangeType::kAddLearner:
      if (voters_.count(node) || learners_.count(node)) {
        return absl::FailedPreconditionError(
            absl::StrCat("node ", node.value(), " is already a member"));
      }
      break;
    case ConfChangeType::kPromoteVoter:
      if (!learners_.count(node)) {
        return absl::FailedPreconditionError(
            absl::StrCat("node ", node.value(), " is not a learner"));
      }
      break;
    case ConfChangeType::kRemoveNode:
      if (!voters_.count(node) && !learners_.count(node)) {
        return absl::FailedPreconditionError(
            absl::StrCat("node ", node.value(), " is not a member"));
      }
      if (voters_.size() == 1 && voters_.count(node)) {
        return absl::FailedPreconditionError("cannot remove the last voter");
      }
      break;
    default:
      return absl::InvalidArgumentError("unknown conf change type");
  }
  std::vector<Entry> entries(1);
  entries[0].type = EntryType::kConfChange;
  entries[0].data = EncodeConfChange(change);
  AppendAsLeader(std::move(entries));
  pending_conf_index_ = log_.LastIndex();
  BcastAppend();
  return pending_conf_index_;
}

void RaftCore::Impl::Campaign() {
  if (role_ == Role::kLeader || !Promotable() || ConfChangesPending()) return;
  DoCampaign(CampaignType::kElection);
}

absl::Status RaftCore::Impl::TransferLeadership(NodeId target) {
  if (role_ != Role::kLeader) {
    return absl::UnavailableError(
        absl::StrCat("not the leader; leader is ", lead_.value()));
  }
  if (!voters_.count(target)) {
    return absl::InvalidArgumentError(
        absl::StrCat("node ", target.value(), " is not a voter"));
  }
  if (target == id_) {
    AbortLeaderTransfer();
    return absl::OkStatus();
  }
  if (lead_transferee_ == target) return absl::OkStatus();
  lead_transferee_ = target;
  // The transfer must finish within an election timeout (TickHeartbeat).
  election_elapsed_ = 0;
  const Progress& pr = progress_.at(target);
  if (pr.match == log_.LastIndex()) {
    SendTimeoutNow(target);
  } else {
    MaybeSendAppend(target, true);
  }
  return absl::OkStatus();
}

absl::Status RaftCore::Impl::ReadIndex(std::string context) {
  if (role_ == Role::kLeader) {
    HandleReadIndexRequest(id_, std::move(context));
    return absl::OkStatus();
  }
  if (lead_ == NodeId(0) || role_ != Role::kFollower) {
    return absl::UnavailableError("no leader known");
  }
  Message m;
  m.type = MessageType::kReadIndex;
  m.to = lead_;
  m.context = std::move(context);
  Send(std::move(m));
  return absl::OkStatus();
}

void RaftCore::Impl::OnPersisted(LogIndex index, Term term) {
  if (!log_.StableTo(index, term)) return;
  if (role_ != Role::kLeader) return;
  auto self = progress_.find(id_);
  if (self != progress_.end()) {
    self->second.MaybeUpdate(log_.StableLastIndex());
  }
  if (MaybeCommit()) {
    BcastAppend();
  } else {
    // Entries that were in flight to our disk can now be read back and
    // sent to members that were waiting for them.
    for (auto& [node, pr] : progress_) {
      if (node != id_ && pr.next <= log_.StableLastIndex()) {
        MaybeSendAppend(node, false);
      }
    }
  }
}

void RaftCore::Impl::OnSnapshotInstalled(LogIndex index) {
  log_.SnapshotInstalled(index);
  if (index > applied_) applied_ = index;
}

void RaftCore::Impl::OnApplied(LogIndex index) {
  const LogIndex limit = std::min(index, log_.applied_handed());
  if (limit > applied_) applied_ = limit;
}

void RaftCore::Impl::OnCompacted(LogIndex index) {
  // Nothing to do eagerly: FirstIndex() is always read from the LogReader,
  // and a member that needs a compacted entry gets a snapshot the next time
  // the leader sends to it.
  (void)index;
}

bool RaftCore::Impl::HasReady() const {
  return CurrentHardState() != reported_hard_state_ || log_.HasUnhanded() ||
         (log_.pending_snapshot() && !log_.snapshot_handed()) ||
         !msgs_now_.empty() || !msgs_after_persist_.empty() ||
         log_.HasCommittedToHand() || !read_states_.empty() ||
         role_ != reported_role_ || lead_ != reported_leader_;
}

Ready RaftCore::Impl::TakeReady() {
  Ready rd;
  if (log_.HasCommittedToHand()) {
    rd.committed = log_.TakeCommitted(kMaxApplyBytes);
    for (const Entry& e : rd.committed) {
      if (e.index <= conf_applied_through_) continue;
      conf_applied_through_ = e.index;
      if (e.type != EntryType::kConfChange) continue;
      ConfChange change;
      SESSIOND_CHECK_MSG(DecodeConfChange(e.data, &change),
                         absl::StrCat("bad conf change at ", e.index.value()));
      ApplyConfChange(change, /*at_init=*/false);
    }
  }
  if (log_.pending_snapshot() && !log_.snapshot_handed()) {
    rd.snapshot = log_.TakeSnapshot();
  }
  if (log_.HasUnhanded()) rd.to_persist = log_.TakeUnhanded();
  const HardState hs = CurrentHardState();
  if (hs != reported_hard_state_) {
    rd.hard_state = hs;
    reported_hard_state_ = hs;
  }
  rd.send_now = std::move(msgs_now_);
  msgs_now_.clear();
  rd.send_after_persist = std::move(msgs_after_persist_);
  msgs_after_persist_.clear();
  rd.read_states = std::move(read_states_);
  read_states_.clear();
  if (role_ != reported_role_) {
    rd.role = role_;
    reported_role_ = role_;
  }
  if (lead_ != reported_leader_) {
    rd.leader = lead_;
    reported_leader_ = lead_;
  }
  return rd;
}

RaftStatus RaftCore::Impl::status() const {
  RaftStatus s;
  s.id = id_;
  s.role = role_;
  s.term = term_;
  s.vote = vote_;
  s.leader = lead_;
  s.commit = log_.committed();
  s.applied = applied_;
  s.last_index = log_.LastIndex();
  s.first_index = log_.FirstIndex();
  s.conf_state = CurrentConfState();
  if (role_ == Role::kLeader) {
    for (const auto& [node, pr] : progress_) {
      s.match[node] = pr.match;
      s.next[node] = pr.next;
      s.progress_state[node] = ProgressStateName(pr.state);
    }
  }
  s.lead_transferee = lead_transferee_;
  return s;
}

// ---------------------------------------------------------------------------
// RaftCore

absl::StatusOr<std::unique_ptr<RaftCore>> RaftCore::Create(
    const RaftConfig& config, const LogReader* log, uint64_t seed) {
  if (log == nullptr) return absl::InvalidArgumentError("no log");
  if (config.id == NodeId(0)) return absl::InvalidArgumentError("id is 0");
  if (config.election_ticks < 1 || config.heartbeat_ticks < 1) {
    return absl::InvalidArgumentError("election and heartbeat ticks >= 1");
  }
  if (config.heartbeat_ticks > config.election_ticks) {
    return absl::InvalidArgumentError(
        "heartbeat_ticks must not exceed election_ticks");
  }
  if (config.max_inflight_messages < 1 || config.max_message_bytes < 1) {
    return absl::InvalidArgumentError(
        "max_inflight_messages and max_message_bytes must be >= 1");
  }
  auto impl = std::make_unique<Impl>(config, log, seed);
  absl::Status st = impl->Init();
  if (!st.ok()) return st;
  return std::unique_ptr<RaftCore>(new RaftCore(std::move(impl)));
}

RaftCore::RaftCore(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
RaftCore::~RaftCore() = default;

void RaftCore::Tick() { impl_->Tick(); }
absl::Status RaftCore::Step(const Message& message) {
  return impl_->Step(Message(message));
}
absl::Status RaftCore::Step(Message&& message) {
  return impl_->Step(std::move(message));
}
absl::StatusOr<LogIndex> RaftCore::Propose(std::vector<std::string> commands) {
  return impl_->Propose(std::move(commands));
}
absl::StatusOr<LogIndex> RaftCore::ProposeConfChange(const ConfChange& change) {
  return impl_->ProposeConfChange(change);
}
void RaftCore::Campaign() { impl_->Campaign(); }
absl::Status RaftCore::TransferLeadership(NodeId target) {
  return impl_->TransferLeadership(target);
}
absl::Status RaftCore::ReadIndex(std::string context) {
  return impl_->ReadIndex(std::move(context));
}
void RaftCore::OnPersisted(LogIndex index, Term term) {
  impl_->OnPersisted(index, term);
}
void RaftCore::OnSnapshotInstalled(LogIndex index) {
  impl_->OnSnapshotInstalled(index);
}
void RaftCore::OnApplied(LogIndex index) { impl_->OnApplied(index); }
void RaftCore::OnCompacted(LogIndex index) { impl_->OnCompacted(index); }
bool RaftCore::HasReady() const { return impl_->HasReady(); }
Ready RaftCore::TakeReady() { return impl_->TakeReady(); }
RaftStatus RaftCore::status() const { return impl_->status(); }
Role RaftCore::role() const { return impl_->role(); }
NodeId RaftCore::leader() const { return impl_->leader(); }
Term RaftCore::term() const { return impl_->term(); }
LogIndex RaftCore::commit_index() const { return impl_->commit_index(); }
uint64_t RaftCore::LocalReadTicks() const { return impl_->LocalReadTicks(); }
uint64_t RaftCore::QuorumAckedTick() const { return impl_->QuorumAckedTick(); }

}  // namespace sessiond::replication
