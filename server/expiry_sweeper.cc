// Copyright sessiond authors. Licensed under the Apache License 2.0.
#include "server/expiry_sweeper.h"

#include <algorithm>
#include <any>
#include <chrono>
#include <cstdio>
#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/time/clock.h"
#include "common/log.h"
#include "common/steady_cond_var.h"
#include "sessiond/v1/command.pb.h"

namespace sessiond::server {

ExpirySweeper::ExpirySweeper(const ExpirySweeperOptions& options,
                             const storage::SessionTable* table,
                             const storage::SessionStateMachine* state_machine,
                             ClusterClock* clock,
                             replication::NodeDriver* driver, WritePath* writes)
    : options_(options),
      table_(table),
      state_machine_(state_machine),
      clock_(clock),
      driver_(driver),
      writes_(writes),
      batch_(options.batch),
      breaker_lookahead_ms_(
          absl::ToInt64Milliseconds(options.breaker_lookahead)),
      judge_(options.breaker),
      task_("sd-sweeper", options.interval, [this] { SweepOnce(); }) {}

ExpirySweeper::~ExpirySweeper() { Stop(); }

void ExpirySweeper::Stop() { task_.Stop(); }

void ExpirySweeper::Reconfigure(absl::Duration interval, size_t batch,
                                absl::Duration breaker_lookahead) {
  batch_.store(batch, std::memory_order_relaxed);
  breaker_lookahead_ms_.store(absl::ToInt64Milliseconds(breaker_lookahead),
                              std::memory_order_relaxed);
  task_.SetInterval(interval);
}

struct ExpirySweeper::Proposal {
  SteadyNotification done;  // a wall-clock step must not stall the sweeper
  replication::ApplyResult result;
};

std::shared_ptr<ExpirySweeper::Proposal> ExpirySweeper::Propose(
    sessiond::v1::internal::Command command) {
  // Shared with the callback: a Wait that timed out must not leave it
  // writing into a destroyed Proposal.
  auto proposal = std::make_shared<Proposal>();
  writes_->Submit(std::move(command), absl::Now() + options_.apply_timeout,
                  [proposal](replication::ApplyResult result) {
                    proposal->result = std::move(result);
                    proposal->done.Notify();
                  });
  return proposal;
}

std::optional<replication::ApplyResult> ExpirySweeper::Wait(
    Proposal& proposal) {
  if (!proposal.done.WaitForNotificationWithTimeout(options_.apply_timeout)) {
    logging::Warn(
        "sweeper.not_applied",
        logging::Fields().Add(
            "timeout_ms", absl::ToInt64Milliseconds(options_.apply_timeout)));
    return std::nullopt;
  }
  if (!proposal.result.ok()) {
    logging::Warn("sweeper.command_failed",
                  logging::Fields().Error(proposal.result.status()));
    return std::nullopt;
  }
  return std::move(proposal.result);
}

void ExpirySweeper::PublishDue(size_t due, bool at_cap) {
  if (options_.stats == nullptr) return;
  options_.stats->last_due.store(due, std::memory_order_relaxed);
  if (at_cap) options_.stats->at_cap.fetch_add(1, std::memory_order_relaxed);
}

int64_t ExpirySweeper::SteadyMs() const {
  if (options_.steady_ms) return options_.steady_ms();
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

void ExpirySweeper::StartNewLeadersWindow(
    int64_t steady_ms, int64_t now_ms,
    const sessiond::v1::ExpiryBreaker& breaker,
    std::optional<uint64_t> baseline) {
  const std::optional<storage::SessionStateMachine::ClockJump> jump =
      state_machine_->last_clock_jump();
  // Since the jump, cluster time ran with real time (in step everywhere
  // again): the window starts just before it, as if it had begun then, so
  // only what the jump skipped over is early. A breaker closed since (a
  // resume, or it cleared) already judged it.
  const int64_t since_jump_ms = jump ? now_ms - jump->to_ms : 0;
  // Only a jump no leader swept after (by a window begun before it, or
  // one started like this): judged twice it would only give more room,
  // but a window back-dated for nothing counts ordinary expiries as early.
  if (jump && !jump->swept_since && since_jump_ms >= 0 &&
      since_jump_ms < options_.breaker.window_ms &&
      !(breaker.times_opened() > 0 && breaker.closed_at_ms() > jump->from_ms)) {
    judge_.Reset(steady_ms - since_jump_ms, jump->from_ms, table_->size(),
                 baseline, /*back_dated=*/true);
    return;
  }
  judge_.Reset(steady_ms, now_ms, table_->size(), baseline);
}

uint64_t ExpirySweeper::SweepOnce() {
  // Only the leader sweeps: one sweep per cluster, stamped with cluster
  // time (replicas never expire on their own clock).
  const replication::NodeStatus status = driver_->status();
  if (status.role != replication::Role::kLeader) {
    judging_ = false;  // a later leadership starts a window of its own
    seen_open_id_ = 0;
    leading_since_steady_ms_.reset();
    cut_off_steady_ms_.reset();
    PublishDue(0, /*at_cap=*/false);
    return 0;
  }
  const int64_t steady_ms = SteadyMs();
  // Leadership lost and won back between two sweeps is a new leadership.
  if (!leading_since_steady_ms_ || leading_term_ != status.term) {
    leading_since_steady_ms_ = steady_ms;
    leading_term_ = status.term;
  }
  // Removes nothing during the grace, but judges as always (the breaker's
  // windows roll on time). A lone member's own touches are all it waits
  // for: no grace. A lone voter with learners waits for theirs: they answer
  // validations while it is down, and forward what they recorded.
  const bool others =
      status.conf_state.voters.size() + status.conf_state.learners.size() > 1;
  const int64_t grace_ms = absl::ToInt64Milliseconds(options_.new_leader_grace);
  // Cut off (no quorum heard for a few heartbeats): the same grace from
  // when its quorum answers again.
  if (others && options_.quorum_silence > absl::ZeroDuration() &&
      driver_->Now() - status.last_leader_contact > options_.quorum_silence) {
    cut_off_steady_ms_ = steady_ms;
  }
  const bool in_grace =
      (others && steady_ms - *leading_since_steady_ms_ < grace_ms) ||
      (cut_off_steady_ms_ && steady_ms - *cut_off_steady_ms_ < grace_ms) ||
      (options_.touches_stalled && options_.touches_stalled());
  const sessiond::v1::ExpiryBreaker breaker = state_machine_->expiry_breaker();
  uint64_t removed = 0;
  if (breaker.open()) {
    PublishDue(0, /*at_cap=*/false);  // held back, not due
    MaybeClearBreaker(steady_ms, breaker);
  } else {
    removed = SweepClosed(steady_ms, breaker, /*remove=*/!in_grace);
  }
  removed_total_.fetch_add(removed, std::memory_order_relaxed);
  PurgeRevocations();
  PurgeCreateRequests();
  TrimAudit();
  return removed;
}

uint64_t ExpirySweeper::SweepClosed(int64_t steady_ms,
                                    const sessiond::v1::ExpiryBreaker& breaker,
                                    bool remove) {
  const bool breaker_on = options_.breaker.share > 0;
  const int64_t leeway = state_machine_->expiry_leeway_ms();
  // As reads judge: a leader that ran through the others' outage and has
  // not applied its catch-up yet would find the sessions made in the lag
  // due (their removal, checked at the applied time, would not happen).
  const int64_t now_ms = clock_->JudgeNowMs();
  if (breaker_on &&
      (!judging_ || judged_after_opening_ != breaker.times_opened())) {
    // A new leadership, or the breaker just closed: what is overdue now
    // was seen (or confirmed) and expires as planned. Closed within a
    // window, its opening's baseline still says what young expiries to
    // expect: an operator's resume while the cause is still at work (a
    // client minting short sessions) must not make that cause the
    // expectation of the next window, and it opens again.
    std::optional<uint64_t> baseline;
    if (breaker.times_opened() > 0 && !breaker.open() &&
        breaker.young_judged() &&
        now_ms - breaker.closed_at_ms() < options_.breaker.window_ms) {
      baseline = breaker.young_baseline();
    }
    if (!judging_) {
      StartNewLeadersWindow(steady_ms, now_ms, breaker, baseline);
    } else {
      judge_.Reset(steady_ms, now_ms, table_->size(), baseline);
    }
    judging_ = true;
    judged_after_opening_ = breaker.times_opened();
  }
  const size_t batch = batch_.load(std::memory_order_relaxed);
  const size_t most = batch * options_.max_commands_per_sweep;
  // What is due now, collected on its own: under a steady create flood the
  // sessions about to expire within the look-ahead alone can number more
  // than `most`, and a sweep taken from one collection of both then
  // removed only a fraction of what was due.
  std::vector<storage::ExpiredSession> due =
      table_->CollectExpiredSessions(now_ms, leeway, most, next_first_shard_++);
  PublishDue(due.size(), /*at_cap=*/due.size() >= most);
  if (breaker_on) {
    // Judged: every session due, not only those this sweep removes, and
    // every one about to expire (judged a sweep's worth at a time, a mass
    // expiry got through a part at a time). Judged even when nothing
    // expires: windows roll on time, so the next one knows what the last
    // one expected.
    const int64_t horizon =
        now_ms + breaker_lookahead_ms_.load(std::memory_order_relaxed);
    const BreakerJudgement judgement =
        judge_.Judge(steady_ms, now_ms, table_->size(), [&](const auto& visit) {
          table_->ForEachExpiredSession(horizon, leeway, visit);
        });
    if (judgement.open) {
      sessiond::v1::internal::Command command;
      *command.mutable_expiry_breaker()->mutable_open() =
          OpeningFor(judgement, now_ms);
      logging::Error(
          "breaker.opening",
          logging::Fields()
              .Add("unexpected", judgement.unexpected)
              .Add("threshold", judgement.threshold)
              .Add("planned", judgement.window.planned)
              .Add("early", judgement.window.early)
              .Add("young", judgement.window.young)
              .Add("msg",
                   "mass expiry stopped: no session expires until "
                   "an operator resumes (sessionctl breaker status)"));
      breaker_opens_proposed_.fetch_add(1, std::memory_order_relaxed);
      (void)SubmitAndWait(std::move(command));
      return 0;
    }
  }
  if (due.empty() || !remove) return 0;
  // Up to max_commands_in_flight commands at once, their results taken in
  // order. Application re-checks each session at the applied time (a
  // session touched meanwhile stays). After a failure nothing more is
  // proposed; what is already proposed may still apply and is counted.
  struct InFlight {
    std::shared_ptr<Proposal> proposal;
    size_t begin;
    size_t end;
  };
  std::deque<InFlight> in_flight;
  uint64_t removed = 0;
  bool failed = false;
  const auto take_oldest = [&] {
    InFlight oldest = std::move(in_flight.front());
    in_flight.pop_front();
    std::optional<replication::ApplyResult> result = Wait(*oldest.proposal);
    if (!result) {
      failed = true;
      return;
    }
    if (const uint64_t* count = std::any_cast<uint64_t>(&**result)) {
      removed += *count;
    }
    if (breaker_on) {
      judge_.Count(steady_ms, now_ms,
                   std::vector<storage::ExpiredSession>(
                       due.begin() + oldest.begin, due.begin() + oldest.end));
    }
  };
  const size_t window = std::max<size_t>(1, options_.max_commands_in_flight);
  for (size_t begin = 0; begin < due.size(); begin += batch) {
    if (in_flight.size() >= window) {
      take_oldest();
      if (failed) break;
    }
    const size_t end = std::min(due.size(), begin + batch);
    sessiond::v1::internal::Command command;
    auto* expire = command.mutable_expire();
    for (size_t i = begin; i < end; ++i) {
      expire->add_token_hashes(
          std::string(storage::TokenHashBytes(due[i].hash)));
    }
    in_flight.push_back(InFlight{Propose(std::move(command)), begin, end});
  }
  while (!in_flight.empty()) take_oldest();
  return removed;
}

void ExpirySweeper::MaybeClearBreaker(
    int64_t steady_ms, const sessiond::v1::ExpiryBreaker& breaker) {
  if (seen_open_id_ != breaker.id()) {
    seen_open_id_ = breaker.id();
    seen_open_steady_ms_ = steady_ms;
    // Not cleared by the sweep that first sees it: one opened ahead of a
    // clock catch-up (WritePath::ProposeCatchUpIfDue) holds nothing until
    // the catch-up applies, one commit later.
    return;
  }
  if (options_.breaker.share <= 0) return;  // turned off: operators resume
  const int64_t now_ms = clock_->JudgeNowMs();
  const int64_t horizon =
      now_ms + breaker_lookahead_ms_.load(std::memory_order_relaxed);
  // Every held session counts: a sample would clear the breaker while most
  // of them are still unexpected.
  uint64_t held = 0;
  const uint64_t unexpected = judge_.UnexpectedWhileOpen(
      breaker, steady_ms, seen_open_steady_ms_, now_ms, [&](const auto& visit) {
        table_->ForEachExpiredSession(
            horizon, state_machine_->expiry_leeway_ms(),
            [&](const storage::ExpiredSession& session) {
              if (session.expires_at_ms <= breaker.frozen_at_ms()) return;
              ++held;
              visit(session);
            });
      });
  // Half the threshold: an opening does not flap shut at its edge.
  if (unexpected * 2 > breaker.threshold()) return;
  sessiond::v1::internal::Command command;
  auto* close = command.mutable_expiry_breaker()->mutable_close();
  close->set_id(breaker.id());
  close->set_closed_by("cleared");
  logging::Warn("breaker.clearing",
                logging::Fields()
                    .Add("id", breaker.id())
                    .Add("unexpected", unexpected)
                    .Add("held", held)
                    .Add("msg",
                         "the sessions the expiry breaker held back "
                         "are no longer unexpected: expiry resumes"));
  (void)SubmitAndWait(std::move(command));
}

void ExpirySweeper::TrimAudit() {
  if (!state_machine_->AuditDueForTrim(clock_->NowMs(),
                                       options_.audit_retention_ms)) {
    return;
  }
  sessiond::v1::internal::Command command;
  command.mutable_audit()->set_retention_ms(options_.audit_retention_ms);
  command.mutable_audit()->set_max_entries(options_.audit_max_entries);
  (void)SubmitAndWait(std::move(command));
}

void ExpirySweeper::PurgeCreateRequests() {
  // Request ids past their window (storage/create_requests.h): the command
  // names none, application takes those expired at its applied time.
  if (!state_machine_->CreateRequestsDueForPurge(clock_->NowMs())) return;
  sessiond::v1::internal::Command command;
  command.mutable_purge_create_requests()->set_max(10'000);
  (void)SubmitAndWait(std::move(command));
}

void ExpirySweeper::PurgeRevocations() {
  const std::vector<uint64_t> due =
      state_machine_->RevocationsDueForPurge(clock_->NowMs(), 16);
  if (due.empty()) return;
  sessiond::v1::internal::Command command;
  for (uint64_t id : due) {
    command.mutable_purge_revocations()->add_revocation_ids(id);
  }
  std::optional<replication::ApplyResult> result =
      SubmitAndWait(std::move(command));
  if (!result) return;
  if (const uint64_t* count = std::any_cast<uint64_t>(&**result)) {
    purged_total_.fetch_add(*count, std::memory_order_relaxed);
  }
}

}  // namespace sessiond::server
