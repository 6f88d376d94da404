// Copyright sessiond authors. Licensed under the Apache License 2.0.
#include "server/write_admission.h"

#include <algorithm>

#include "absl/strings/str_format.h"
#include "server/grpc_status.h"

namespace sessiond::server {

WriteAdmission::WriteAdmission(const WriteAdmissionOptions& options)
    : options_(options), limit_(options.max_limit) {}

void WriteAdmission::Roll(absl::Duration now) {
  if (!started_) {
    started_ = true;
    interval_start_ = now;
    return;
  }
  // After a long quiet spell only the first few intervals can change
  // anything: the limit is at max_limit again after ~40 calm ones.
  for (int closed = 0; now - interval_start_ >= options_.interval; ++closed) {
    if (closed == 64) {
      interval_start_ = now;
      break;
    }
    absl::Duration delay = absl::ZeroDuration();
    if (finished_ > 0) {
      delay = min_delay_;
      stalled_ = absl::ZeroDuration();
    } else if (busy_writes_ > 0) {
      // Writes waited and none finished: they have waited at least this
      // long, counted over every such interval in a row. One interval's
      // worth was under a target of an interval or more, so a stall (no
      // quorum, a full disk: its UNAVAILABLE answers are not measured)
      // looked calm and the limit grew to its maximum.
      stalled_ += options_.interval;
      delay = stalled_;
    } else {
      stalled_ = absl::ZeroDuration();
    }
    queueing_delay_ = delay;
    overloaded_ = delay > options_.target;
    if (overloaded_) {
      // What committed within one target's time in this interval.
      const auto capacity = static_cast<int64_t>(
          static_cast<double>(finished_) *
          absl::FDivDuration(options_.target, options_.interval));
      limit_ = std::clamp(capacity, options_.min_limit, options_.max_limit);
    } else {
      limit_ = std::min(options_.max_limit,
                        limit_ + std::max<int64_t>(1, limit_ / 4));
    }
    interval_start_ += options_.interval;
    min_delay_ = absl::InfiniteDuration();
    finished_ = 0;
    busy_writes_ = in_flight_;
  }
}

absl::Status WriteAdmission::Admit(absl::Duration now) {
  if (!enabled()) return absl::OkStatus();
  absl::MutexLock lock(&mu_);
  Roll(now);
  if (in_flight_ < limit_) {
    ++in_flight_;
    ++busy_writes_;
    return absl::OkStatus();
  }
  ++refused_;
  // Retrying sooner than the queue drains only adds to it.
  const absl::Duration wait =
      std::clamp(queueing_delay_, options_.interval, absl::Seconds(1));
  return WithRetryDelay(
      absl::ResourceExhaustedError(absl::StrFormat(
          "this node is overloaded: %d writes in flight (limit %d) and "
          "writes wait %d ms to commit (target %d ms); retry after the "
          "delay, spread creates over more time or more nodes",
          in_flight_, limit_, absl::ToInt64Milliseconds(queueing_delay_),
          absl::ToInt64Milliseconds(options_.target))),
      SpreadRetryDelay(wait));
}

void WriteAdmission::Enter(absl::Duration now) {
  if (!enabled()) return;
  absl::MutexLock lock(&mu_);
  Roll(now);
  ++in_flight_;
  ++busy_writes_;
}

void WriteAdmission::Finish(absl::Duration entered, absl::Duration now,
                            const absl::Status& answer) {
  if (!enabled()) return;
  absl::MutexLock lock(&mu_);
  Roll(now);
  --in_flight_;
  if (absl::IsUnavailable(answer) || absl::IsResourceExhausted(answer)) return;
  ++finished_;
  min_delay_ = std::min(min_delay_, now - entered);
}

void WriteAdmission::Withdraw(absl::Duration now) {
  if (!enabled()) return;
  absl::MutexLock lock(&mu_);
  Roll(now);
  --in_flight_;
  --busy_writes_;
}

WriteAdmissionState WriteAdmission::state() const {
  absl::MutexLock lock(&mu_);
  return {.in_flight = in_flight_,
          .limit = limit_,
          .overloaded = overloaded_,
          .queueing_delay = queueing_delay_,
          .refused = refused_};
}

}  // namespace sessiond::server
