// Copyright sessiond authors. Licensed under the Apache License 2.0.
//
// The one write path. Every replicated change (session writes from the API,
// touch batches, expiry sweeps, member announcements, settings, membership
// changes, leadership transfers) goes through WritePath, on any node:
//
//   this node leads   -> the command is stamped with cluster time
//                        (ClusterClock::StampMs) and proposed to the local
//                        NodeDriver; done() gets the applied result.
//   another node leads -> the command goes to it over the peer channel
//                        (RaftPeer.Propose); it stamps and proposes it and
//                        answers once applied; this node then waits until
//                        it has applied that far too (bounded by the
//                        deadline), so a read here sees the write.
//   no leader known   -> retried every 20 ms until one is, within the
//                        deadline.
//
// Every call is answered by its deadline (minus a small margin, so the
// client hears from the server before its own deadline fires): UNAVAILABLE
// "not committed before the deadline" when the group could not commit it
// in time. That answer, like a broken connection to the leader while a
// forwarded write was in flight, leaves the outcome unknown (the write may
// still commit); it is never a false success. When no node was ever asked
// to propose the write (no leader known until the deadline), or the leader
// refused it before appending it (too many writes in flight, a log it
// cannot write: RESOURCE_EXHAUSTED), the answer says so
// (kNotProposedPayload): nothing changed, a retry is safe. A forwarded
// answer keeps its payloads (ProposeResponse.payloads).
//
// Thread-safe. The callbacks run on the driver's completion stage, a gRPC
// thread, or the DelayQueue thread; they must not block.
#ifndef SESSIOND_SERVER_WRITE_PATH_H_
#define SESSIOND_SERVER_WRITE_PATH_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/functional/function_ref.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/log_budget.h"
#include "replication/node_driver.h"
#include "server/cluster_clock.h"
#include "server/delay_queue.h"
#include "server/peer_transport.h"
#include "sessiond/v1/command.pb.h"
#include "sessiond/v1/peer.pb.h"
#include "storage/session_state_machine.h"

namespace sessiond::server {

// The payload (absl::Status::GetPayload) of an answer to a write no node
// proposed (UNAVAILABLE: no leader; RESOURCE_EXHAUSTED: the leader refused
// it): retrying it is safe, and the session service gives back the creates
// it charged. It becomes the trailing metadata "sessiond-not-proposed: 1"
// and the ErrorInfo metadata not_proposed.
inline constexpr char kNotProposedPayload[] = "sessiond.dev/not-proposed";

// UNAVAILABLE with `message`, marked with kNotProposedPayload: for a write
// refused before any node was asked to propose it.
absl::Status NotProposedError(absl::string_view message);

struct WritePathOptions {
  uint64_t cluster_id = 0;
  // Identity.cluster_epoch, sent with a forwarded write.
  uint64_t cluster_epoch = 0;
  NodeId self;
  // A learner may be promoted only when it is at most this many entries
  // behind the leader's commit index.
  uint64_t promote_max_lag = 1000;
  // A member counts as acknowledging while it acknowledged (its matched
  // index grew, or held the leader's whole log) within this long, or holds
  // the whole log now (an election timeout):
  // PromoteMember, RemoveMember's quorum check and TransferLeadership count
  // on members that acknowledge, not merely on connected ones.
  absl::Duration ack_window = absl::Seconds(1);
  // Commands (Submit) this node holds unanswered, and their bytes; one more
  // is refused at once (RESOURCE_EXHAUSTED, never proposed). The leader's
  // driver bounds what it proposes; this bounds what any node holds while
  // it forwards or waits for a leader, which with no leader is every write
  // sent to it until its deadline. Membership changes and transfers are
  // not counted, so an operator can still act on an overloaded node; nor
  // are touch batches (TouchBuffer bounds them), so an overloaded node's
  // users keep their sessions alive.
  size_t max_open_commands = 100000;
  // The expiry breaker's judgement of a clock catch-up before it is
  // proposed (server/expiry_breaker.h, JudgeCatchUp): the opening to
  // propose ahead of the catch-up, or nullopt. Given cluster time now, the
  // time from which the catch-up moves what was stamped, and the time it
  // jumps to. Unset (or the breaker off): the catch-up goes alone.
  std::function<std::optional<sessiond::v1::ExpiryBreaker>(
      int64_t now_ms, int64_t moved_since_ms, int64_t to_ms)>
      breaker_before_catch_up;
  uint64_t max_open_command_bytes = 256ull << 20;
};

// The leader this node knows, for error details and client redirects.
struct LeaderHint {
  NodeId id;                   // 0: none known
  std::string client_address;  // empty: not known
};

class WritePath {
 public:
  using Done = std::function<void(replication::ApplyResult)>;

  // Every pointer must outlive the WritePath.
  WritePath(const WritePathOptions& options, replication::NodeDriver* driver,
            ClusterClock* clock, PeerTransport* transport,
            const storage::SessionStateMachine* state_machine,
            DelayQueue* timers);
  ~WritePath();

  WritePath(const WritePath&) = delete;
  WritePath& operator=(const WritePath&) = delete;

  // Replicates `command` (its timestamp is set by the leader). `done` is
  // called exactly once: the state machine's ApplyResult, or an error.
  void Submit(sessiond::v1::internal::Command command, absl::Time deadline,
              Done done);
  // Submit for this node's own touch batch (TouchBuffer): not counted
  // against --max_pending_writes, which every other write is (a client's
  // TouchSession too). The batch carries validations already answered
  // VALID, at most about one per flush interval; refused, this node's users
  // would stop counting as active while the leader, which never heard of
  // the refusal, goes on expiring them.
  void SubmitTouchBatch(sessiond::v1::internal::Command command,
                        absl::Time deadline, Done done);
  // A membership change; OK (empty value) once applied.
  void SubmitConfChange(const replication::ConfChange& change,
                        absl::Time deadline, Done done);
  // Starts a leadership transfer on the leader; OK once started, with the
  // id (uint64_t) of the leader that started it.
  void SubmitTransfer(NodeId target, absl::Time deadline, Done done);

  // Called on the leader (its callers know it leads; a proposal made as
  // leadership moves is refused, and handed out again later): proposes the
  // cluster clock's catch-up when one is due
  // (ClusterClock::TakeCatchUp: a member, or this node, counted an outage
  // the others did not), ahead of whatever is proposed after it. Not while
  // a member of the configuration has not published the command level
  // that applies it (storage/command_level.h): logged, and left due. When
  // the jump would expire a mass of sessions (breaker_before_catch_up), the
  // expiry breaker's opening goes first, and the catch-up once it applied.
  void ProposeCatchUpIfDue() ABSL_LOCKS_EXCLUDED(deferred_log_mu_);

  // The leader's side of RaftPeer.Propose: `respond` is called exactly
  // once.
  void HandleForwarded(
      const sessiond::v1::internal::ProposeRequest& request,
      std::function<void(sessiond::v1::internal::ProposeResponse)> respond);

  LeaderHint leader_hint() const;
  // The leader this node knows (0: none), without leader_hint's look at the
  // member table.
  NodeId leader_id() const;

  // Waits until every call has been answered and every forwarded RPC has
  // returned, at most `timeout`; returns whether they have. The daemon
  // calls it after stopping whatever submits, before destroying anything
  // the callbacks use. (Every call is answered by its deadline, so this
  // ends.)
  bool Drain(absl::Duration timeout) const;

  // Answers every call still open at once with UNAVAILABLE "shutting
  // down" (nothing changed when no node was asked to propose it; otherwise
  // it may still apply) or with the leader's result when one came, and
  // cancels the RPCs forwarding them. For Shutdown, past its grace: no
  // call, and so no gRPC server shutdown, waits out its deadline for a
  // leader that does not answer. Later calls are not affected.
  void AbandonOpenCalls() ABSL_LOCKS_EXCLUDED(open_mu_);

  // Writes this node sent to a leader.
  uint64_t forwarded() const {
    return forwarded_.load(std::memory_order_relaxed);
  }

  // The deadline for a request whose client set `client_deadline`
  // (InfiniteFuture when none): a little before it, so the answer reaches
  // the client in time, and never further than `default_timeout` away.
  static absl::Time ServerDeadline(absl::Time client_deadline,
                                   absl::Duration default_timeout);

 private:
  struct Call;

  // Arms the deadline, then tries; or refuses a command at once when this
  // node holds too many (max_open_commands).
  void Start(std::shared_ptr<Call> call, absl::Time deadline, Done done);
  // Adds the call to the open ones (AbandonOpenCalls sees it from then on,
  // so its `done` must be set), counting its command as held; or refuses
  // it (RESOURCE_EXHAUSTED, never proposed) when max_open_commands or
  // max_open_command_bytes would be passed. One critical section: every
  // write passes here.
  absl::Status Open(const std::shared_ptr<Call>& call)
      ABSL_LOCKS_EXCLUDED(open_mu_);
  // A forwarded write the leader applied with `result`: answered once this
  // node applied `index` too (or at the call's deadline).
  void FinishWhenApplied(const std::shared_ptr<Call>& call, LogIndex index,
                         replication::ApplyResult result);
  void Try(std::shared_ptr<Call> call);
  // Try(call) again after kNoLeaderRetry, unless its deadline comes first
  // (and answers it). Nothing was sent for it.
  void TryAgainShortly(std::shared_ptr<Call> call);
  void Forward(std::shared_ptr<Call> call, NodeId leader);
  // Proposes the call's operation here (this node leads).
  void ProposeHere(const sessiond::v1::internal::ProposeRequest& op, Done done);
  // Why this leader cannot count on `node` to take its entries now, as a
  // phrase after "node N": it is not reachable, or it is while an entry it
  // lacks has waited for longer than ack_window (a jammed
  // disk, a paused process, a snapshot still in flight). Empty when it can
  // (this node itself always can). A connected channel alone says nothing
  // of a disk: a member whose log writes stall answers heartbeats.
  std::string WhyNotAcknowledging(const replication::NodeStatus& status,
                                  NodeId node) const;
  // FailedPrecondition when `target` cannot take leadership now (a learner,
  // or a voter not acknowledging); InvalidArgument when it is no member.
  absl::Status CheckTransferTarget(NodeId target) const;
  // The expiry breaker's opening to propose ahead of `catch_up`, stamped;
  // nullopt when none is needed (breaker_before_catch_up).
  std::optional<sessiond::v1::internal::Command> BreakerOpeningBefore(
      const ClusterClock::CatchUp& catch_up) const;
  void ProposeCatchUp(const ClusterClock::CatchUp& catch_up, bool move_windows);
  // FailedPrecondition when removing `removed` from `conf` would leave
  // fewer acknowledging voters than the remaining voters' quorum.
  absl::Status CheckRemovalKeepsAQuorum(
      NodeId removed, const replication::ConfState& conf) const;
  void Finish(const std::shared_ptr<Call>& call,
              replication::ApplyResult result);
  // Whether a proposal's answer says it never entered a log because this
  // node does not lead (any more): the write is proposed again, to whoever
  // leads (replication::kNotAppendedPayload, UNAVAILABLE).
  static bool LeadershipMoved(const replication::ApplyResult& result);
  // A proposal's answer as the call's: a refusal before anything was
  // appended (replication::kNotAppendedPayload) that a retry may get past
  // (UNAVAILABLE, RESOURCE_EXHAUSTED) is marked never proposed.
  static replication::ApplyResult MarkRefusals(replication::ApplyResult result);
  // A call refused before anything was proposed: marked never proposed
  // again, and tried again shortly (its deadline answers it if no leader
  // takes it by then).
  void RetryUnproposed(const std::shared_ptr<Call>& call);
  // Retries (true) a membership change refused while the previous one is
  // not applied, when the deadline leaves room.
  bool TryAgainLater(const std::shared_ptr<Call>& call,
                     const replication::ApplyResult& result);
  // Finishes the call with what `decide` makes of the leader's result (if
  // one came) and whether it may have been proposed, called under the
  // call's lock as it is marked finished: such an answer cannot race
  // MarkMaybeProposed.
  void FinishDeciding(const std::shared_ptr<Call>& call,
                      absl::FunctionRef<replication::ApplyResult(
                          const std::optional<replication::ApplyResult>&, bool)>
                          decide);
  // Finishes a call no answer was given to yet (its deadline, shutdown):
  // with the leader's result if one came, else with the answer for "may
  // have been proposed" or for "never proposed".
  void FinishUnanswered(const std::shared_ptr<Call>& call,
                        absl::Status if_maybe_proposed,
                        absl::Status if_never_proposed);

  const WritePathOptions options_;
  replication::NodeDriver* const driver_;                    // outlives this
  ClusterClock* const clock_;                                // outlives this
  PeerTransport* const transport_;                           // outlives this
  const storage::SessionStateMachine* const state_machine_;  // outlives this
  DelayQueue* const timers_;                                 // outlives this
  std::atomic<uint64_t> forwarded_{0};
  std::atomic<int64_t> calls_in_flight_{0};
  // The calls not answered yet (Start to Finish), for AbandonOpenCalls.
  absl::Mutex open_mu_;
  absl::flat_hash_map<Call*, std::weak_ptr<Call>> open_calls_
      ABSL_GUARDED_BY(open_mu_);
  // The commands among them, and their bytes (max_open_commands).
  size_t open_commands_ ABSL_GUARDED_BY(open_mu_) = 0;
  uint64_t open_command_bytes_ ABSL_GUARDED_BY(open_mu_) = 0;
  std::atomic<int64_t> rpcs_in_flight_{0};
  // clock.catch_up_deferred lines: it is looked at on every forwarded
  // write and agent round while due.
  absl::Mutex deferred_log_mu_;
  logging::LogBudget deferred_log_ ABSL_GUARDED_BY(deferred_log_mu_){
      1, absl::Minutes(1)};
};

// An ApplyResult carried in a ProposeResponse (the leader's answer to a
// forwarded write), both ways. ResultToResponse moves the records out.
void ResultToResponse(replication::ApplyResult result,
                      sessiond::v1::internal::ProposeResponse* response);
replication::ApplyResult ResultFromResponse(
    const sessiond::v1::internal::ProposeResponse& response);

// Whether the leader's answer to a forwarded write waits for this node to
// apply as far as the leader had (read-your-writes): not a refusal before
// anything was proposed (too many writes in flight, a full disk), which
// changed nothing and is answered at once.
bool AnswerWaitsForApply(const replication::ApplyResult& result);

}  // namespace sessiond::server

#endif  // SESSIOND_SERVER_WRITE_PATH_H_
