// Copyright sessiond authors. Licensed under the Apache License 2.0.
#include "server/read_barrier.h"

#include <algorithm>
#include <atomic>
#include <memory>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"

namespace sessiond::server {

using sessiond::v1::Consistency;

absl::Status UnconfirmedAbsence(absl::string_view lacks) {
  return absl::UnavailableError(absl::StrCat(
      "this node could not confirm it is up to date and does not ", lacks,
      " (it may have been created elsewhere meanwhile): ask another node, or "
      "retry shortly"));
}

ReadBarrier::ReadBarrier(const ReadBarrierOptions& options,
                         replication::NodeDriver* driver, DelayQueue* timers)
    : options_(options), driver_(driver), timers_(timers) {}

ReadAnswer ReadBarrier::Local() const {
  const replication::NodeSummary status = driver_->summary();
  ReadAnswer answer;
  answer.consistency = sessiond::v1::LOCAL;
  if (status.applied == LogIndex(0)) {
    answer.status = absl::UnavailableError(
        "this node holds no data yet (it is receiving the cluster's state); "
        "ask another node");
    return answer;
  }
  const absl::Duration now = driver_->Now();
  const absl::Duration since = now - status.last_leader_contact;
  // The leader itself, while a quorum hears it (its last_leader_contact):
  // cut off, it is deposed elsewhere before it knows. Its leader_commit is
  // its own commit index (at least its term's first entry): with applies
  // behind it, it counts its staleness as a follower does.
  if (status.leader_caught_up && since < options_.fresh_contact &&
      status.applied >= status.leader_commit) {
    return answer;
  }
  // Since this node last held all a leader had committed, not since it last
  // heard from one: a node receiving a snapshot hears heartbeats all along.
  const absl::Duration behind_for = now - status.current_as_of;
  answer.staleness_ms = absl::ToInt64Milliseconds(std::min(behind_for, now));
  answer.stale = !(since < options_.fresh_contact &&
                   status.applied >= status.leader_commit);
  return answer;
}

bool ReadBarrier::Current() const {
  const replication::NodeSummary status = driver_->summary();
  const absl::Duration since = driver_->Now() - status.last_leader_contact;
  return since < options_.fresh_contact && status.applied > LogIndex(0) &&
         status.applied.value() + kCurrentLagEntries >=
             status.leader_commit.value();
}

namespace {

absl::Status AbandonedRead() {
  return absl::UnavailableError(
      "shutting down: no leader confirmed this read; retry on another node");
}

}  // namespace

void ReadBarrier::Wait(Consistency level, absl::Time deadline,
                       std::function<void(ReadAnswer)> done) {
  if (!sessiond::v1::Consistency_IsValid(level)) {
    // A newer client's level: answering it at another level would promise
    // what it did not ask for.
    ReadAnswer refused;
    refused.status = absl::InvalidArgumentError(
        absl::StrCat("consistency: unknown value ", static_cast<int>(level),
                     " (CONSISTENCY_DEFAULT, LINEARIZABLE or LOCAL)"));
    done(std::move(refused));
    return;
  }
  if (level == sessiond::v1::LOCAL) {
    done(Local());
    return;
  }
  // The leader within its lease: linearizable from its own table once it
  // has applied its commit index, on this thread, with no driver turn
  // (under a write flood the driver and the completion stage are the
  // busiest threads).
  const std::optional<LogIndex> lease_index = driver_->LocalReadIndex();
  if (lease_index && driver_->AppliedThrough(*lease_index)) {
    done(ReadAnswer());
    return;
  }
  const bool fallback = level != sessiond::v1::LINEARIZABLE;
  const absl::Time give_up =
      fallback ? std::min(deadline, absl::Now() + options_.linearizable_timeout)
               : deadline;
  auto pending = std::make_shared<Pending>();
  pending->fallback = fallback;
  pending->give_up = give_up;
  {
    absl::MutexLock lock(&pending->mu);
    pending->done = std::move(done);
  }
  bool abandoned = false;
  {
    absl::MutexLock lock(&waiting_mu_);
    abandoned = abandoned_;
    if (!abandoned) waiting_.emplace(pending.get(), pending);
  }
  if (abandoned) return Fail(pending, AbandonedRead());
  const DelayQueue::Handle timer = timers_->At(give_up, [this, pending] {
    Fail(pending, absl::UnavailableError(
                      "no leader confirmed this read in time; retry (or read "
                      "with consistency LOCAL)"));
  });
  {
    absl::MutexLock lock(&pending->mu);
    if (pending->done) pending->timer = timer;
  }
  if (lease_index) {
    // Committed but not applied here yet (the followers may have applied
    // it, and answered reads from it): wait for the apply stage only. That
    // wait ends at the driver's read timeout; a LINEARIZABLE read then goes
    // on as any other, until its own deadline.
    driver_->WhenApplied(*lease_index, [this, pending](absl::Status status) {
      if (status.ok()) {
        Finish(pending, ReadAnswer());
      } else {
        RetryOrFail(pending, std::move(status));
      }
    });
    return;
  }
  Attempt(pending);
}

void ReadBarrier::Attempt(const std::shared_ptr<Pending>& pending) {
  {
    absl::MutexLock lock(&pending->mu);
    if (!pending->done) return;  // answered already
  }
  driver_->ReadIndex([this, pending](absl::Status status) {
    if (status.ok()) {
      Finish(pending, ReadAnswer());
    } else {
      RetryOrFail(pending, std::move(status));
    }
  });
}

void ReadBarrier::RetryOrFail(const std::shared_ptr<Pending>& pending,
                              absl::Status why) {
  // LINEARIZABLE waits, like a write, for a leader to be known (an
  // election), to answer, or for this node to apply what it confirmed,
  // until its deadline. The default level waits so too, until its
  // linearizable_timeout, while a leader is known: its wait for this node's
  // apply ended at the driver's read timeout, or leadership moved to a node
  // it knows; falling back at once answered stale what a leader would have
  // confirmed in time. With no leader known it answers locally at once.
  const bool may_wait =
      !pending->fallback || driver_->summary().leader != NodeId(0);
  if (may_wait && absl::IsUnavailable(why) &&
      absl::Now() + kNoLeaderRetry < pending->give_up) {
    timers_->After(kNoLeaderRetry, [this, pending] { Attempt(pending); });
    return;
  }
  Fail(pending, std::move(why));
}

void ReadBarrier::Finish(const std::shared_ptr<Pending>& pending,
                         ReadAnswer answer) {
  std::function<void(ReadAnswer)> fn;
  std::optional<DelayQueue::Handle> timer;
  {
    absl::MutexLock lock(&pending->mu);
    fn = std::move(pending->done);
    pending->done = nullptr;
    timer = pending->timer;
  }
  if (!fn) return;
  if (timer) timers_->Cancel(*timer);
  {
    absl::MutexLock lock(&waiting_mu_);
    waiting_.erase(pending.get());
  }
  fn(std::move(answer));
}

void ReadBarrier::AbandonWaiting() {
  std::vector<std::shared_ptr<Pending>> waiting;
  {
    absl::MutexLock lock(&waiting_mu_);
    abandoned_ = true;
    for (const auto& [raw, weak] : waiting_) {
      if (std::shared_ptr<Pending> pending = weak.lock()) {
        waiting.push_back(std::move(pending));
      }
    }
  }
  for (const std::shared_ptr<Pending>& pending : waiting) {
    Fail(pending, AbandonedRead());
  }
}

void ReadBarrier::Fail(const std::shared_ptr<Pending>& pending,
                       absl::Status why) {
  if (pending->fallback) {
    // No leader confirmed it: the answer is stale by definition.
    ReadAnswer local = Local();
    if (local.status.ok()) {
      local.stale = true;
      local.fell_back = true;
    }
    Finish(pending, std::move(local));
    return;
  }
  ReadAnswer answer;
  answer.status = std::move(why);
  Finish(pending, std::move(answer));
}

}  // namespace sessiond::server
