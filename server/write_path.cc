// Copyright sessiond authors. Licensed under the Apache License 2.0.
#include "server/write_path.h"

#include <grpcpp/client_context.h>

#include <algorithm>
#include <any>
#include <memory>
#include <optional>
#include <utility>
#include <vector>

#include "absl/strings/cord.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "common/log.h"
#include "common/steady_clock.h"
#include "common/steady_cond_var.h"
#include "storage/command_level.h"

namespace sessiond::server {

using replication::ApplyResult;
using sessiond::v1::internal::Command;
using sessiond::v1::internal::ProposeRequest;
using sessiond::v1::internal::ProposeResponse;

namespace {

// A catch-up of the leader's clock this large is logged (smaller ones are
// the ordinary differences between members' estimates).
constexpr int64_t kClockCatchUpLogMs = 1000;

absl::Status NotCommittedInTime() {
  return absl::UnavailableError(
      "not committed before the deadline (no leader, or no quorum): the "
      "write may still apply; retry only if it is idempotent");
}

absl::Status AbandonedMaybeProposed() {
  return absl::UnavailableError(
      "shutting down before the write's outcome was known: it may still "
      "apply; retry (another node) only if it is idempotent");
}

absl::Status AbandonedNotProposed() {
  return NotProposedError(
      "shutting down: the write was not proposed (nothing was changed); "
      "retrying on another node is safe");
}

absl::Status NeverProposed() {
  return NotProposedError(
      "no leader before the deadline: the write was not proposed (nothing "
      "was changed); retrying is safe");
}

}  // namespace

absl::Status NotProposedError(absl::string_view message) {
  absl::Status status = absl::UnavailableError(message);
  status.SetPayload(kNotProposedPayload, absl::Cord("1"));
  return status;
}

namespace {

// A touch batch of a member's own passes the driver's back-pressure bounds
// (NodeDriver::Bound says why); every other command is bounded.
replication::NodeDriver::Bound BoundOf(bool own_touch_batch) {
  return own_touch_batch ? replication::NodeDriver::Bound::kExempt
                         : replication::NodeDriver::Bound::kBounded;
}

}  // namespace

struct WritePath::Call {
  // One of: a command, a membership change, a leadership transfer (to
  // transfer_to; 0: the most caught-up other voter).
  std::optional<Command> command;
  std::optional<replication::ConfChange> conf_change;
  NodeId transfer_to;
  absl::Time deadline;
  // The command's size, counted in open_command_bytes_ while open.
  uint64_t command_bytes = 0;
  // Submitted by SubmitTouchBatch: not counted in open_commands_.
  bool own_touch_batch = false;
  // Counted in open_commands_ and open_command_bytes_ (Open).
  bool bounded = false;

  absl::Mutex mu;
  Done done ABSL_GUARDED_BY(mu);
  bool finished ABSL_GUARDED_BY(mu) = false;
  // Some node may have appended it: proposed here, or forwarded and not
  // (yet) answered "not the leader".
  bool maybe_proposed ABSL_GUARDED_BY(mu) = false;
  // Marks the call as maybe proposed, unless it was answered already: one
  // critical section, so its deadline never answers "never proposed" for a
  // call about to be proposed.
  bool MarkMaybeProposed(
      const std::shared_ptr<grpc::ClientContext>& forwarding_rpc = nullptr) {
    absl::MutexLock lock(&mu);
    if (finished) return false;
    maybe_proposed = true;
    if (forwarding_rpc != nullptr) forwarding = forwarding_rpc;
    return true;
  }
  // The leader's answer to a forwarded write, while this node catches up.
  std::optional<ApplyResult> result ABSL_GUARDED_BY(mu);
  // The RPC forwarding it, while in flight (AbandonOpenCalls cancels it).
  std::weak_ptr<grpc::ClientContext> forwarding ABSL_GUARDED_BY(mu);
  std::optional<DelayQueue::Handle> timer ABSL_GUARDED_BY(mu);

  ProposeRequest ToRequest() const {
    ProposeRequest request;
    if (command) {
      request.set_command(command->SerializeAsString());
    } else if (conf_change) {
      request.mutable_conf_change()->set_type(
          static_cast<uint32_t>(conf_change->type));
      request.mutable_conf_change()->set_node(conf_change->node.value());
    } else {
      request.set_transfer_to(transfer_to.value());
    }
    request.set_touch_batch(own_touch_batch);
    return request;
  }
};

WritePath::WritePath(const WritePathOptions& options,
                     replication::NodeDriver* driver, ClusterClock* clock,
                     PeerTransport* transport,
                     const storage::SessionStateMachine* state_machine,
                     DelayQueue* timers)
    : options_(options),
      driver_(driver),
      clock_(clock),
      transport_(transport),
      state_machine_(state_machine),
      timers_(timers) {}

WritePath::~WritePath() = default;

absl::Time WritePath::ServerDeadline(absl::Time client_deadline,
                                     absl::Duration default_timeout) {
  const absl::Time now = absl::Now();
  const absl::Time deadline = std::min(client_deadline, now + default_timeout);
  const absl::Duration margin =
      std::min(absl::Milliseconds(50), (deadline - now) / 10);
  return deadline - std::max(margin, absl::ZeroDuration());
}

void WritePath::Submit(Command command, absl::Time deadline, Done done) {
  auto call = std::make_shared<Call>();
  call->command = std::move(command);
  Start(std::move(call), deadline, std::move(done));
}

void WritePath::SubmitTouchBatch(Command command, absl::Time deadline,
                                 Done done) {
  auto call = std::make_shared<Call>();
  call->command = std::move(command);
  call->own_touch_batch = true;
  Start(std::move(call), deadline, std::move(done));
}

void WritePath::SubmitConfChange(const replication::ConfChange& change,
                                 absl::Time deadline, Done done) {
  auto call = std::make_shared<Call>();
  call->conf_change = change;
  Start(std::move(call), deadline, std::move(done));
}

void WritePath::SubmitTransfer(NodeId target, absl::Time deadline, Done done) {
  auto call = std::make_shared<Call>();
  call->transfer_to = target;
  Start(std::move(call), deadline, std::move(done));
}

bool WritePath::Drain(absl::Duration timeout) const {
  const SteadyCondVar::Clock::time_point deadline = SteadyAfter(timeout);
  while (calls_in_flight_.load() > 0 || rpcs_in_flight_.load() > 0) {
    if (SteadyCondVar::Clock::now() >= deadline) return false;
    absl::SleepFor(absl::Milliseconds(1));
  }
  return true;
}

absl::Status WritePath::Open(const std::shared_ptr<Call>& call) {
  absl::MutexLock lock(&open_mu_);
  // This node's own touch batches are exempt (SubmitTouchBatch says why);
  // a client's TouchSession is not: it would be a way past the bound.
  call->bounded = call->command && !call->own_touch_batch;
  if (call->bounded) {
    // One larger than the byte bound passes when nothing else is held:
    // refused, it would be refused forever.
    if (open_commands_ >= options_.max_open_commands ||
        (open_command_bytes_ > 0 && open_command_bytes_ + call->command_bytes >
                                        options_.max_open_command_bytes)) {
      // Held, it would wait with the others for a leader or its answer:
      // refused now, before anything was sent, so a retry is safe.
      absl::Status refused = absl::ResourceExhaustedError(
          absl::StrCat("too many writes in flight (", open_commands_,
                       " held by this node, waiting for a leader or its "
                       "answer); retry shortly"));
      refused.SetPayload(kNotProposedPayload, absl::Cord("1"));
      return refused;
    }
    ++open_commands_;
    open_command_bytes_ += call->command_bytes;
  }
  open_calls_.emplace(call.get(), call);
  return absl::OkStatus();
}

void WritePath::Start(std::shared_ptr<Call> call, absl::Time deadline,
                      Done done) {
  if (call->command) call->command_bytes = call->command->ByteSizeLong();
  call->deadline = deadline;
  {
    absl::MutexLock lock(&call->mu);
    call->done = std::move(done);
  }
  // Counted before it is open: AbandonOpenCalls may finish it, and count
  // it out, from then on.
  calls_in_flight_.fetch_add(1);
  if (absl::Status held = Open(call); !held.ok()) {
    // Seen by no other thread: not open, no timer, never tried.
    Done refused;
    {
      absl::MutexLock lock(&call->mu);
      call->finished = true;
      refused = std::move(call->done);
    }
    refused(std::move(held));
    calls_in_flight_.fetch_sub(1);
    return;
  }
  // The deadline is armed first: whatever happens next, the call is
  // answered by then.
  const DelayQueue::Handle timer = timers_->At(call->deadline, [this, call] {
    // A forwarded write that applied on the leader is committed: its
    // result stands even if this node has not caught up yet. One that no
    // node was ever asked to propose is safe to retry, and says so.
    // Decided as the call finishes, under its lock: a Try that has not
    // marked it maybe-proposed by then never will (MarkMaybeProposed).
    FinishUnanswered(call, NotCommittedInTime(), NeverProposed());
  });
  {
    absl::MutexLock lock(&call->mu);
    if (!call->finished) call->timer = timer;
  }
  Try(std::move(call));
}

void WritePath::Finish(const std::shared_ptr<Call>& call, ApplyResult result) {
  FinishDeciding(
      call, [&result](const std::optional<ApplyResult>&, bool) -> ApplyResult {
        return std::move(result);
      });
}

void WritePath::FinishUnanswered(const std::shared_ptr<Call>& call,
                                 absl::Status if_maybe_proposed,
                                 absl::Status if_never_proposed) {
  FinishDeciding(call,
                 [&](const std::optional<ApplyResult>& known,
                     bool maybe_proposed) -> ApplyResult {
                   if (known) return *known;
                   return maybe_proposed ? std::move(if_maybe_proposed)
                                         : std::move(if_never_proposed);
                 });
}

void WritePath::FinishDeciding(
    const std::shared_ptr<Call>& call,
    absl::FunctionRef<ApplyResult(const std::optional<ApplyResult>&, bool)>
        decide) {
  Done done;
  std::optional<DelayQueue::Handle> timer;
  ApplyResult result;
  {
    absl::MutexLock lock(&call->mu);
    if (call->finished) return;
    call->finished = true;
    result = decide(call->result, call->maybe_proposed);
    done = std::move(call->done);
    timer = call->timer;
  }
  if (timer) timers_->Cancel(*timer);
  {
    absl::MutexLock lock(&open_mu_);
    open_calls_.erase(call.get());
    if (call->bounded) {
      --open_commands_;
      open_command_bytes_ -= call->command_bytes;
    }
  }
  done(std::move(result));
  calls_in_flight_.fetch_sub(1);
}

void WritePath::AbandonOpenCalls() {
  std::vector<std::shared_ptr<Call>> open;
  {
    absl::MutexLock lock(&open_mu_);
    for (const auto& [raw, weak] : open_calls_) {
      if (std::shared_ptr<Call> call = weak.lock()) open.push_back(call);
    }
  }
  for (const std::shared_ptr<Call>& call : open) {
    // A result the leader gave stands, as at the deadline; decided under
    // the call's lock, as there.
    FinishUnanswered(call, AbandonedMaybeProposed(), AbandonedNotProposed());
    // A forward that started after the decision saw the call finished and
    // sent nothing; one already running is cancelled below.
    std::shared_ptr<grpc::ClientContext> forwarding;
    {
      absl::MutexLock lock(&call->mu);
      forwarding = call->forwarding.lock();
    }
    // Then (answered already, so its CANCELLED is not the answer) its
    // callback returns soon; Drain waits for that.
    if (forwarding != nullptr) forwarding->TryCancel();
  }
}

void WritePath::Try(std::shared_ptr<Call> call) {
  {
    absl::MutexLock lock(&call->mu);
    if (call->finished) return;
  }
  const replication::NodeSummary status = driver_->summary();
  if (call->command && status.role == replication::Role::kLeader &&
      status.lead_transferee != NodeId(0)) {
    // Handing leadership over: the core would refuse the command, on the
    // driver thread, at every retry of every write held meanwhile (up to
    // an election timeout). Look again shortly, as with no leader. Not a
    // membership change or another transfer: those go to the core as
    // before, which answers them itself.
    TryAgainShortly(std::move(call));
    return;
  }
  if (status.role == replication::Role::kLeader) {
    if (!call->MarkMaybeProposed()) return;  // its deadline answered it
    Done done = [this, call](ApplyResult result) {
      if (LeadershipMoved(result)) {
        // Refused before it entered the log (this node stopped leading, or
        // hands leadership over): try again, as with no leader.
        RetryUnproposed(call);
        return;
      }
      if (TryAgainLater(call, result)) return;
      Finish(call, MarkRefusals(std::move(result)));
    };
    if (call->command) {
      // Stamped in place: a call is proposed at most once, and only this
      // thread (the one Try or Forward in progress) touches the command.
      call->command->set_timestamp_ms(clock_->StampMs());
      driver_->Propose(call->command->SerializeAsString(), std::move(done),
                       BoundOf(call->own_touch_batch));
      return;
    }
    ProposeHere(call->ToRequest(), std::move(done));
    return;
  }
  if (status.leader != NodeId(0) && status.leader != options_.self &&
      transport_->Connected(status.leader)) {
    Forward(std::move(call), status.leader);
    return;
  }
  // No leader, or no connection to it yet (nothing was sent, so trying
  // again is safe).
  TryAgainShortly(std::move(call));
}

void WritePath::TryAgainShortly(std::shared_ptr<Call> call) {
  // Until the deadline answers it.
  if (absl::Now() + kNoLeaderRetry < call->deadline) {
    timers_->After(kNoLeaderRetry, [this, call] { Try(call); });
  }
}

namespace {

bool NotAppended(const ApplyResult& result) {
  return !result.ok() && result.status()
                             .GetPayload(replication::kNotAppendedPayload)
                             .has_value();
}

// A membership change refused only because the previous one is not applied
// yet (right after an election, or two sent together): it goes through once
// that one is, so it is tried again while the deadline leaves room, and the
// refusal is the answer only after that. (Forwarded answers carry the
// message, not the payload, so the message decides.)
bool MembershipChangePending(const ApplyResult& result) {
  return !result.ok() && absl::IsFailedPrecondition(result.status()) &&
         absl::StartsWith(result.status().message(),
                          replication::kConfChangePendingPrefix);
}

}  // namespace

bool WritePath::TryAgainLater(const std::shared_ptr<Call>& call,
                              const ApplyResult& result) {
  if (!MembershipChangePending(result) ||
      absl::Now() + kNoLeaderRetry >= call->deadline) {
    return false;
  }
  RetryUnproposed(call);
  return true;
}

bool WritePath::LeadershipMoved(const ApplyResult& result) {
  return NotAppended(result) && absl::IsUnavailable(result.status());
}

ApplyResult WritePath::MarkRefusals(ApplyResult result) {
  if (!NotAppended(result)) return result;
  absl::Status refused = result.status();
  refused.ErasePayload(replication::kNotAppendedPayload);
  // The mark promises a retry may succeed; a refused membership change
  // (FAILED_PRECONDITION) would be refused again, and says why.
  if (absl::IsUnavailable(refused) || absl::IsResourceExhausted(refused)) {
    refused.SetPayload(kNotProposedPayload, absl::Cord("1"));
  }
  return refused;
}

void WritePath::RetryUnproposed(const std::shared_ptr<Call>& call) {
  {
    absl::MutexLock lock(&call->mu);
    if (call->finished) return;
    call->maybe_proposed = false;
  }
  timers_->After(kNoLeaderRetry, [this, call] { Try(call); });
}

void WritePath::Forward(std::shared_ptr<Call> call, NodeId leader) {
  std::shared_ptr<sessiond::v1::internal::RaftPeer::Stub> stub =
      transport_->Stub(leader);
  if (stub == nullptr) {
    timers_->After(kNoLeaderRetry, [this, call] { Try(call); });
    return;
  }
  struct Rpc {
    std::shared_ptr<grpc::ClientContext> context =
        std::make_shared<grpc::ClientContext>();
    ProposeRequest request;
    ProposeResponse response;
  };
  auto rpc = std::make_shared<Rpc>();
  // Marked and recorded together: an AbandonOpenCalls in between answered
  // the call and found no RPC to cancel, and this one ran to its deadline.
  if (!call->MarkMaybeProposed(rpc->context)) return;  // already answered
  rpc->context->set_deadline(absl::ToChronoTime(call->deadline));
  rpc->request = call->ToRequest();
  rpc->request.set_cluster_id(options_.cluster_id);
  rpc->request.set_cluster_epoch(options_.cluster_epoch);
  rpc->request.set_from(options_.self.value());
  // Not a guess: a member that has applied nothing yet (a new one, waiting
  // for its snapshot) would send its wall clock, perhaps hours past a
  // cluster time that was restored from a backup.
  if (const std::optional<int64_t> now = clock_->GroundedNowMs()) {
    rpc->request.set_sender_cluster_time_ms(*now);
    rpc->request.set_sender_in_step_applied_ms(clock_->InStepAppliedMs());
  }
  forwarded_.fetch_add(1, std::memory_order_relaxed);
  rpcs_in_flight_.fetch_add(1);
  stub->async()->Propose(
      rpc->context.get(), &rpc->request, &rpc->response,
      [this, call, rpc, leader, stub](grpc::Status status) {
        // Counted down when this callback returns, whatever it does.
        struct Done {
          std::atomic<int64_t>* counter;
          ~Done() { counter->fetch_sub(1); }
        } counted{&rpcs_in_flight_};
        if (!status.ok()) {
          Finish(call,
                 absl::UnavailableError(absl::StrCat(
                     "lost contact with the leader (node ", leader.value(),
                     ") while forwarding the write: ", status.error_message(),
                     "; it may or may not have applied")));
          return;
        }
        if (rpc->response.not_leader()) {
          // It did nothing: ask whoever leads now.
          RetryUnproposed(call);
          return;
        }
        ApplyResult result = ResultFromResponse(rpc->response);
        if (TryAgainLater(call, result)) return;
        if (!AnswerWaitsForApply(result)) {
          // Held until this node caught up, a lagging follower kept the
          // refusal (and its place) for seconds.
          Finish(call, std::move(result));
          return;
        }
        {
          absl::MutexLock lock(&call->mu);
          call->result = result;
        }
        FinishWhenApplied(call, LogIndex(rpc->response.applied_index()),
                          std::move(result));
      });
}

void WritePath::FinishWhenApplied(const std::shared_ptr<Call>& call,
                                  LogIndex index, ApplyResult result) {
  // Read-your-writes on this node: answer once it applied that far, or at
  // the call's deadline (whose timer answers with call->result). The
  // driver's wait ends sooner, at its read timeout: then wait again.
  driver_->WhenApplied(index, [this, call, index, result = std::move(result)](
                                  absl::Status applied) mutable {
    if (!applied.ok() && !driver_->ReadsClosed()) {
      {
        absl::MutexLock lock(&call->mu);
        if (call->finished) return;
      }
      FinishWhenApplied(call, index, std::move(result));
      return;
    }
    Finish(call, std::move(result));
  });
}

void WritePath::ProposeHere(const ProposeRequest& op, Done done) {
  switch (op.op_case()) {
    case ProposeRequest::kCommand: {
      Command command;
      if (!command.ParseFromString(op.command())) {
        done(absl::InvalidArgumentError("forwarded command does not parse"));
        return;
      }
      command.set_timestamp_ms(clock_->StampMs());
      // Only a touch batch is exempt, whatever the sender says.
      driver_->Propose(command.SerializeAsString(), std::move(done),
                       BoundOf(op.touch_batch() && command.has_touch()));
      return;
    }
    case ProposeRequest::kConfChange: {
      replication::ConfChange change;
      const uint32_t type = op.conf_change().type();
      if (type >
          static_cast<uint32_t>(replication::ConfChangeType::kRemoveNode)) {
        done(absl::InvalidArgumentError("unknown membership change"));
        return;
      }
      change.type = static_cast<replication::ConfChangeType>(type);
      change.node = NodeId(op.conf_change().node());
      if (change.type == replication::ConfChangeType::kPromoteVoter) {
        const replication::NodeStatus status = driver_->status();
        const auto& learners = status.conf_state.learners;
        if (std::find(learners.begin(), learners.end(), change.node) ==
            learners.end()) {
          done(absl::FailedPreconditionError(
              absl::StrCat("node ", change.node.value(),
                           " is not a learner (add it with "
                           "AddMember first)")));
          return;
        }
        // Caught up: it has acknowledged entries, up to within
        // promote_max_lag of the commit index.
        auto it = status.match.find(change.node);
        const LogIndex match =
            it == status.match.end() ? LogIndex(0) : it->second;
        if (match == LogIndex(0) ||
            match.value() + options_.promote_max_lag < status.commit.value()) {
          done(absl::FailedPreconditionError(absl::StrCat(
              "learner ", change.node.value(), " has not caught up (it holds ",
              match.value(), " of ", status.commit.value(),
              " committed entries); promote it once it has (ClusterStatus "
              "shows its lag)")));
          return;
        }
        // Acknowledging: a voter that takes no entries (down, or a learner
        // whose log writes stalled on a full or jammed disk, which answers
        // heartbeats on a connected channel) counts against the quorum
        // from the moment it is promoted: one node and a dead learner make
        // two voters that can commit nothing, not even the RemoveMember
        // that would undo it. An acknowledging learner keeps the quorum
        // this leader has: it adds one voter and one that answers.
        if (std::string why = WhyNotAcknowledging(status, change.node);
            !why.empty()) {
          done(absl::FailedPreconditionError(absl::StrCat(
              "learner ", change.node.value(), " ", why,
              ": as a voter it would count against the quorum as a dead one "
              "does; start it (or check its log and disk), and promote it "
              "once ClusterStatus shows it reachable and its lag falling")));
          return;
        }
      }
      replication::NodeDriver::ConfChangeCheck check;
      if (change.type == replication::ConfChangeType::kRemoveNode) {
        // On the driver stage, against the membership the removal is
        // proposed against: checked here against status(), another removal
        // applied meanwhile was missed, and two removals that each kept a
        // quorum could together leave none.
        check = [this,
                 removed = change.node](const replication::ConfState& conf) {
          return CheckRemovalKeepsAQuorum(removed, conf);
        };
      }
      driver_->ProposeConfChange(change, std::move(done), std::move(check));
      return;
    }
    case ProposeRequest::kTransferTo: {
      NodeId target(op.transfer_to());
      if (target == NodeId(0)) {
        // The most caught-up other voter, among those acknowledging this
        // leader's entries when there are any: a dead or stalled voter's
        // match can tie a live one's (just after an election), and a
        // transfer to it only times out.
        const replication::NodeStatus status = driver_->status();
        LogIndex best;
        bool best_acknowledging = false;
        for (NodeId v : status.conf_state.voters) {
          if (v == options_.self) continue;
          auto it = status.match.find(v);
          if (it == status.match.end()) continue;
          const bool acknowledging = WhyNotAcknowledging(status, v).empty();
          if (target == NodeId(0) || (acknowledging && !best_acknowledging) ||
              (acknowledging == best_acknowledging && it->second > best)) {
            target = v;
            best = it->second;
            best_acknowledging = acknowledging;
          }
        }
        if (target == NodeId(0)) {
          done(absl::FailedPreconditionError(
              "no other voter to hand leadership to"));
          return;
        }
      } else if (absl::Status s = CheckTransferTarget(target); !s.ok()) {
        done(std::move(s));
        return;
      }
      driver_->TransferLeadership(
          target, [done = std::move(done),
                   self = options_.self.value()](absl::Status status) {
            if (!status.ok()) {
              done(status);
            } else {
              // Who started it: the leader to move away from.
              done(ApplyResult(std::any(uint64_t{self})));
            }
          });
      return;
    }
    case ProposeRequest::OP_NOT_SET:
      break;
  }
  done(absl::InvalidArgumentError("forwarded request names no operation"));
}

absl::Status WritePath::CheckTransferTarget(NodeId target) const {
  if (target == options_.self) return absl::OkStatus();  // already leads
  const replication::NodeStatus status = driver_->status();
  const std::vector<NodeId>& voters = status.conf_state.voters;
  const std::vector<NodeId>& learners = status.conf_state.learners;
  if (std::find(learners.begin(), learners.end(), target) != learners.end()) {
    return absl::FailedPreconditionError(
        absl::StrCat("node ", target.value(),
                     " is a learner and cannot lead; promote it first "
                     "(PromoteMember) or choose a voter"));
  }
  if (std::find(voters.begin(), voters.end(), target) == voters.end()) {
    return absl::InvalidArgumentError(
        absl::StrCat("node ", target.value(), " is not a member"));
  }
  // Its TimeoutNow would go nowhere: the core refuses writes while a
  // transfer is under way, so the transfer would hold them for an election
  // timeout, again at each retry until the deadline. One catching up
  // acknowledges as it goes, and the core sends it what it lacks first.
  constexpr absl::string_view kChooseAnother =
      "choose another voter (node_id 0, or 'any' in sessionctl: the most "
      "caught-up one)";
  if (std::string why = WhyNotAcknowledging(status, target); !why.empty()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "node ", target.value(), " ", why,
        ": it could not take over; start it (or check its log and disk), or ",
        kChooseAnother));
  }
  return absl::OkStatus();
}

std::string WritePath::WhyNotAcknowledging(
    const replication::NodeStatus& status, NodeId node) const {
  if (node == options_.self) return "";
  if (!transport_->Connected(node)) return "is not reachable from the leader";
  auto it = status.match.find(node);
  const LogIndex match = it == status.match.end() ? LogIndex(0) : it->second;
  if (match >= status.last_index) return "";  // nothing to acknowledge
  auto acked = status.acknowledged_at.find(node);
  if (acked != status.acknowledged_at.end() &&
      driver_->Now() - acked->second <= options_.ack_window) {
    return "";
  }
  return absl::StrCat(
      "has acknowledged no entry for ",
      acked == status.acknowledged_at.end()
          ? std::string("this leader's whole term")
          : absl::FormatDuration(driver_->Now() - acked->second),
      " while the leader's log grew (it holds ", match.value(), " of ",
      status.last_index.value(), ")");
}

absl::Status WritePath::CheckRemovalKeepsAQuorum(
    NodeId removed, const replication::ConfState& conf) const {
  const std::vector<NodeId>& voters = conf.voters;
  if (std::find(voters.begin(), voters.end(), removed) == voters.end()) {
    return absl::OkStatus();  // a learner or no member: no vote changes
  }
  // As etcd's strict reconfig check: the voters left must include a quorum
  // this leader reaches now, or the cluster could commit nothing after the
  // change, not even the AddMember that would undo it.
  // Reached means acknowledging: a voter whose disk stalled is connected
  // and counts for nothing. Its status as of the driver's last turn.
  const replication::NodeStatus status = driver_->status();
  size_t left = 0;
  size_t reachable = 0;
  std::vector<std::string> unreachable;
  std::vector<std::string> stalled;
  for (NodeId v : voters) {
    if (v == removed) continue;
    ++left;
    const std::string why = WhyNotAcknowledging(status, v);
    if (why.empty()) {
      ++reachable;
    } else if (!transport_->Connected(v)) {
      unreachable.push_back(absl::StrCat(v.value()));
    } else {
      stalled.push_back(absl::StrCat(v.value(), " ", why));
    }
  }
  const size_t quorum = left / 2 + 1;
  if (reachable >= quorum) return absl::OkStatus();
  if (left == 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("node ", removed.value(),
                     " is the only voter: removing it leaves no cluster"));
  }
  std::vector<std::string> absent;
  if (!unreachable.empty()) {
    absent.push_back(
        absl::StrCat("unreachable: ", absl::StrJoin(unreachable, ", ")));
  }
  if (!stalled.empty()) {
    absent.push_back(absl::StrCat("not acknowledging: node ",
                                  absl::StrJoin(stalled, "; node ")));
  }
  return absl::FailedPreconditionError(absl::StrCat(
      "removing node ", removed.value(), " would leave ", left,
      " voters of which ", reachable,
      reachable == 1 ? " acknowledges" : " acknowledge",
      " the leader, short of their quorum of ", quorum, " (",
      absl::StrJoin(absent, "; "),
      "): the cluster could commit nothing after it. Bring those members "
      "back first, or remove one of them instead"));
}

void WritePath::HandleForwarded(const ProposeRequest& request,
                                std::function<void(ProposeResponse)> respond) {
  const replication::NodeStatus status = driver_->status();
  if (status.role != replication::Role::kLeader) {
    ProposeResponse response;
    response.set_not_leader(true);
    response.set_leader(status.leader.value());
    response.set_code(static_cast<int>(absl::StatusCode::kUnavailable));
    response.set_message("not the leader");
    respond(std::move(response));
    return;
  }
  // Before the command is stamped: the stamp is at least the sender's time,
  // and a catch-up (a jump through the log) goes before it.
  const ClusterClock::Observed observed = clock_->Observe(
      request.sender_cluster_time_ms(), request.sender_in_step_applied_ms());
  if (observed.moved_ms >= kClockCatchUpLogMs) {
    logging::Warn("clock.caught_up_with_member",
                  logging::Fields()
                      .Add("member", request.from())
                      .Add("moved_ms", observed.moved_ms)
                      .Add("msg",
                           "a member counted time this leader did not (it "
                           "was down while the member ran): cluster time "
                           "moved forward to the member's"));
  }
  if (observed.catch_up_due) ProposeCatchUpIfDue();
  ProposeHere(
      request, [this, respond = std::move(respond)](ApplyResult result) {
        ProposeResponse response;
        if (LeadershipMoved(result)) {
          // It stopped leading, or hands over: the sender asks again.
          response.set_not_leader(true);
          response.set_leader(driver_->summary().leader.value());
          response.set_code(static_cast<int>(absl::StatusCode::kUnavailable));
          response.set_message(std::string(result.status().message()));
          respond(std::move(response));
          return;
        }
        ResultToResponse(MarkRefusals(std::move(result)), &response);
        response.set_applied_index(state_machine_->applied_index().value());
        respond(std::move(response));
      });
}

void WritePath::ProposeCatchUpIfDue() {
  // Taken first: TakeCatchUp hands one out once per retry interval, which
  // paces the look at the member table below too.
  const std::optional<ClusterClock::CatchUp> catch_up = clock_->TakeCatchUp();
  if (!catch_up) return;
  // A member whose binary predates the command would apply it as one
  // without an operation, and diverge. Deferred, it is handed out again
  // after the retry interval, and cluster time stays where it stood still
  // meanwhile: sessions live longer by the outage, which logs nobody out.
  const std::optional<storage::LowestCommandLevel> lowest =
      storage::LowestPublishedLevel(state_machine_->cluster_state(),
                                    state_machine_->applied_conf());
  if (lowest && lowest->level < storage::kClockCatchUpLevel) {
    uint64_t suppressed = 0;
    bool log = false;
    {
      absl::MutexLock lock(&deferred_log_mu_);
      log = deferred_log_.Admit(absl::Nanoseconds(SteadyNowNs()), &suppressed);
    }
    if (log) {
      logging::Fields fields;
      fields.Add("node", lowest->node.value())
          .Add("command_level", static_cast<uint64_t>(lowest->level))
          .Add("msg",
               absl::StrCat("a member counted time this leader did not, but "
                            "member ",
                            lowest->node.value(),
                            " has not published command level ",
                            storage::kClockCatchUpLevel,
                            " (an older binary?): cluster time does not jump "
                            "until every member runs one that applies the "
                            "catch-up"));
      if (suppressed > 0) fields.Add("suppressed", suppressed);
      logging::Warn("clock.catch_up_deferred", fields);
    }
    return;
  }
  // With every member on a binary that moves them (level 3), the windows
  // opened in the lag move too; a member on level 2 applies the catch-up
  // without, and a retry of a create made in the lag may then make a
  // second session (docs/API.md, "Retrying a create").
  const bool move_windows =
      lowest && lowest->level >= storage::kCatchUpMovesWindowsLevel;
  std::optional<Command> opening = BreakerOpeningBefore(*catch_up);
  if (!opening) {
    ProposeCatchUp(*catch_up, move_windows);
    return;
  }
  const sessiond::v1::ExpiryBreaker& open = opening->expiry_breaker().open();
  logging::Error(
      "breaker.opening",
      logging::Fields()
          .Add("unexpected", open.unexpected_expiries())
          .Add("threshold", open.threshold())
          .Add("before_catch_up_to_ms", catch_up->to_ms)
          .Add("msg",
               "the clock's catch-up would expire a mass of sessions at once: "
               "the expiry breaker opens first, and no session expires until "
               "an operator resumes (sessionctl breaker status)"));
  // The catch-up only once the opening applied: ahead of it in the log, so
  // no read judges the jump's time unfrozen. Lost: TakeCatchUp hands the
  // catch-up out again after its retry interval.
  driver_->Propose(
      opening->SerializeAsString(),
      [this, catch_up = *catch_up, move_windows](ApplyResult result) {
        if (!result.ok()) {
          logging::Warn(
              "clock.catch_up_not_applied",
              logging::Fields().Add("error", result.status().ToString()));
          return;
        }
        ProposeCatchUp(catch_up, move_windows);
      });
}

std::optional<Command> WritePath::BreakerOpeningBefore(
    const ClusterClock::CatchUp& catch_up) const {
  if (!options_.breaker_before_catch_up) return std::nullopt;
  // Open already: the jump's time is judged frozen.
  if (state_machine_->expiry_breaker().open()) return std::nullopt;
  // As ApplyClockCatchUp selects what moves.
  const int64_t moved_since_ms =
      std::max(catch_up.since_ms,
               state_machine_->cluster_state().clock_caught_up_to_ms());
  std::optional<sessiond::v1::ExpiryBreaker> open =
      options_.breaker_before_catch_up(clock_->JudgeNowMs(), moved_since_ms,
                                       catch_up.to_ms);
  if (!open) return std::nullopt;
  Command command;
  *command.mutable_expiry_breaker()->mutable_open() = std::move(*open);
  command.set_timestamp_ms(clock_->StampMs());
  return command;
}

void WritePath::ProposeCatchUp(const ClusterClock::CatchUp& catch_up,
                               bool move_windows) {
  Command command;
  command.mutable_clock_catch_up()->set_to_ms(catch_up.to_ms);
  command.mutable_clock_catch_up()->set_since_ms(catch_up.since_ms);
  command.mutable_clock_catch_up()->set_move_windows(move_windows);
  command.set_min_level(move_windows ? storage::kCatchUpMovesWindowsLevel
                                     : storage::kClockCatchUpLevel);
  command.set_timestamp_ms(clock_->StampMs());
  logging::Warn(
      "clock.catching_up",
      logging::Fields()
          .Add("from_ms", command.timestamp_ms())
          .Add("to_ms", catch_up.to_ms)
          .Add("since_ms", catch_up.since_ms)
          .Add("move_windows", command.clock_catch_up().move_windows())
          .Add("msg",
               "a member counted time this leader did not (it was down "
               "while the member ran): cluster time jumps forward through "
               "the log, and sessions stamped since since_ms move with it"));
  // Lost (a full inbox, a lost leadership): TakeCatchUp hands it out again
  // after its retry interval.
  driver_->Propose(command.SerializeAsString(), [](ApplyResult result) {
    if (!result.ok()) {
      logging::Warn("clock.catch_up_not_applied",
                    logging::Fields().Add("error", result.status().ToString()));
    }
  });
}

NodeId WritePath::leader_id() const { return driver_->summary().leader; }

LeaderHint WritePath::leader_hint() const {
  LeaderHint hint;
  hint.id = leader_id();
  if (hint.id == NodeId(0)) return hint;
  hint.client_address = state_machine_->ClientAddressOf(hint.id);
  return hint;
}

void ResultToResponse(ApplyResult result, ProposeResponse* response) {
  if (!result.ok()) {
    response->set_code(static_cast<int>(result.status().code()));
    response->set_message(std::string(result.status().message()));
    result.status().ForEachPayload(
        [response](absl::string_view type_url, const absl::Cord& payload) {
          (*response->mutable_payloads())[std::string(type_url)] =
              std::string(payload);
        });
    return;
  }
  response->set_code(0);
  if (auto* session = std::any_cast<sessiond::v1::Session>(&*result)) {
    *response->mutable_session() = std::move(*session);
  } else if (const auto* count = std::any_cast<uint64_t>(&*result)) {
    response->set_count(*count);
  } else if (auto* sessions =
                 std::any_cast<std::vector<sessiond::v1::Session>>(&*result)) {
    for (sessiond::v1::Session& one : *sessions) {
      *response->mutable_sessions()->add_sessions() = std::move(one);
    }
  } else if (const auto* revocation =
                 std::any_cast<sessiond::v1::Revocation>(&*result)) {
    *response->mutable_revocation() = *revocation;
  } else if (const auto* pending =
                 std::any_cast<sessiond::v1::internal::PendingBulkRevoke>(
                     &*result)) {
    *response->mutable_pending_bulk_revoke() = *pending;
  } else if (const auto* breaker =
                 std::any_cast<sessiond::v1::ExpiryBreaker>(&*result)) {
    *response->mutable_expiry_breaker() = *breaker;
  }
}

bool AnswerWaitsForApply(const ApplyResult& result) {
  return result.ok() ||
         !result.status().GetPayload(kNotProposedPayload).has_value();
}

ApplyResult ResultFromResponse(const ProposeResponse& response) {
  if (response.code() != 0) {
    const int code = response.code();
    absl::Status status(code >= 1 && code <= 16
                            ? static_cast<absl::StatusCode>(code)
                            : absl::StatusCode::kUnknown,
                        response.message());
    for (const auto& [type_url, payload] : response.payloads()) {
      status.SetPayload(type_url, absl::Cord(payload));
    }
    return status;
  }
  switch (response.result_case()) {
    case ProposeResponse::kSession:
      return ApplyResult(std::any(response.session()));
    case ProposeResponse::kCount:
      return ApplyResult(std::any(response.count()));
    case ProposeResponse::kSessions:
      return ApplyResult(std::any(std::vector<sessiond::v1::Session>(
          response.sessions().sessions().begin(),
          response.sessions().sessions().end())));
    case ProposeResponse::kRevocation:
      return ApplyResult(std::any(response.revocation()));
    case ProposeResponse::kPendingBulkRevoke:
      return ApplyResult(std::any(response.pending_bulk_revoke()));
    case ProposeResponse::kExpiryBreaker:
      return ApplyResult(std::any(response.expiry_breaker()));
    case ProposeResponse::RESULT_NOT_SET:
      break;
  }
  return ApplyResult(std::any());
}

}  // namespace sessiond::server
