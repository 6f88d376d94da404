// Copyright sessiond authors. Licensed under the Apache License 2.0.
#include "server/expiry_breaker.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"

namespace sessiond::server {

namespace {

uint64_t SaturatingSub(uint64_t a, uint64_t b) { return a > b ? a - b : 0; }

}  // namespace

void ExpiryBreakerJudge::Reset(int64_t steady_ms, int64_t cluster_ms,
                               uint64_t live,
                               std::optional<uint64_t> young_baseline,
                               bool back_dated) {
  back_dated_ = back_dated;
  started_ = true;
  start_steady_ms_ = steady_ms;
  start_cluster_ms_ = cluster_ms;
  live_at_start_ = live;
  counts_ = ExpiryCounts{};
  has_baseline_ = young_baseline.has_value();
  young_baseline_ = young_baseline.value_or(0);
  last_judged_steady_ms_ = steady_ms;
  last_judged_cluster_ms_ = cluster_ms;
}

void ExpiryBreakerJudge::RollIfOver(int64_t steady_ms, int64_t cluster_ms,
                                    uint64_t live) {
  if (!started_) {
    Reset(steady_ms, cluster_ms, live);
    return;
  }
  if (steady_ms - start_steady_ms_ < options_.window_ms) return;
  // The next window starts where this one last judged, not now: what came
  // due since was judged by no window, and a window starting at the cluster
  // time a jump just reached would call every session the jump made due
  // planned. With no judgement since the start (sweeps as far apart as a
  // window) the window runs on until one.
  if (last_judged_steady_ms_ <= start_steady_ms_) return;
  // The window just over sets what the next one expects of young sessions,
  // when this judge saw all of it; one it saw a part of passes on the
  // baseline it was given (none: the next judges no young sessions).
  if (!back_dated_) {
    young_baseline_ = counts_.young;
    has_baseline_ = true;
  }
  back_dated_ = false;
  start_steady_ms_ = last_judged_steady_ms_;
  start_cluster_ms_ = std::min(last_judged_cluster_ms_, cluster_ms);
  live_at_start_ = live;
  counts_ = ExpiryCounts{};
}

int64_t ExpiryBreakerJudge::AllowanceMs(int64_t elapsed_steady_ms) const {
  const int64_t elapsed = std::max<int64_t>(0, elapsed_steady_ms);
  return elapsed + elapsed / 1'000'000 * options_.slew_ppm +
         (elapsed % 1'000'000) * options_.slew_ppm / 1'000'000 +
         options_.slack_ms;
}

uint64_t ExpiryBreakerJudge::Threshold(uint64_t live_at_start,
                                       uint64_t baseline) const {
  const double share =
      std::ceil(options_.share * static_cast<double>(live_at_start + baseline));
  return std::max<uint64_t>(options_.min_sessions,
                            static_cast<uint64_t>(share));
}

void ExpiryBreakerJudge::Classify(const storage::ExpiredSession& session,
                                  int64_t window_start_ms, int64_t allowance_ms,
                                  int64_t cluster_ms, ExpiryCounts* counts,
                                  bool* unexpected) {
  if (session.created_at_ms >= window_start_ms) {
    ++counts->young;
    *unexpected = true;
  } else if (session.expires_at_ms <= cluster_ms &&
             session.expires_at_ms > window_start_ms + allowance_ms) {
    // Due by cluster time, not by the real time that passed: cluster time
    // ran ahead.
    ++counts->early;
    *unexpected = true;
  } else {
    ++counts->planned;
    *unexpected = false;
  }
}

namespace {

ExpiredSessions FromVector(
    const std::vector<storage::ExpiredSession>& sessions) {
  return [&sessions](
             const std::function<void(const storage::ExpiredSession&)>& visit) {
    for (const storage::ExpiredSession& session : sessions) visit(session);
  };
}

}  // namespace

BreakerJudgement ExpiryBreakerJudge::Judge(
    int64_t steady_ms, int64_t cluster_ms, uint64_t live,
    const std::vector<storage::ExpiredSession>& candidates) {
  return Judge(steady_ms, cluster_ms, live, FromVector(candidates));
}

BreakerJudgement ExpiryBreakerJudge::Judge(int64_t steady_ms,
                                           int64_t cluster_ms, uint64_t live,
                                           const ExpiredSessions& candidates) {
  RollIfOver(steady_ms, cluster_ms, live);
  last_judged_steady_ms_ = std::max(last_judged_steady_ms_, steady_ms);
  last_judged_cluster_ms_ = std::max(last_judged_cluster_ms_, cluster_ms);
  BreakerJudgement judgement;
  judgement.window = counts_;
  const int64_t allowance = AllowanceMs(steady_ms - start_steady_ms_);
  candidates([&](const storage::ExpiredSession& session) {
    bool unexpected = false;
    Classify(session, start_cluster_ms_, allowance, cluster_ms,
             &judgement.window, &unexpected);
    if (unexpected) {
      judgement.earliest_unexpected_ms =
          std::min(judgement.earliest_unexpected_ms, session.expires_at_ms);
    }
  });
  const uint64_t young_excess =
      has_baseline_ ? SaturatingSub(judgement.window.young, young_baseline_)
                    : 0;
  judgement.unexpected = judgement.window.early + young_excess;
  judgement.threshold =
      Threshold(live_at_start_, has_baseline_ ? young_baseline_ : 0);
  judgement.window_start_ms = start_cluster_ms_;
  judgement.window_real_elapsed_ms =
      std::max<int64_t>(0, steady_ms - start_steady_ms_);
  judgement.young_baseline = young_baseline_;
  judgement.young_judged = has_baseline_;
  judgement.live_at_start = live_at_start_;
  judgement.open = judgement.unexpected > judgement.threshold;
  if (judgement.open) {
    judgement.reason = absl::StrCat(
        judgement.unexpected,
        " sessions would expire over and above what "
        "their lifetimes predict within the window (threshold ",
        judgement.threshold, " of ", live_at_start_,
        " live): ", judgement.window.early,
        " early (cluster time ahead of real time), ", judgement.window.young,
        " born and expired within it (expected ",
        has_baseline_ ? absl::StrCat(young_baseline_) : "not judged yet", "), ",
        judgement.window.planned, " planned");
  }
  return judgement;
}

void ExpiryBreakerJudge::Count(
    int64_t steady_ms, int64_t cluster_ms,
    const std::vector<storage::ExpiredSession>& removed) {
  const int64_t allowance = AllowanceMs(steady_ms - start_steady_ms_);
  for (const storage::ExpiredSession& session : removed) {
    bool unexpected = false;
    Classify(session, start_cluster_ms_, allowance, cluster_ms, &counts_,
             &unexpected);
  }
}

uint64_t ExpiryBreakerJudge::UnexpectedWhileOpen(
    const sessiond::v1::ExpiryBreaker& breaker, int64_t steady_ms,
    int64_t seen_steady_ms, int64_t cluster_ms,
    const std::vector<storage::ExpiredSession>& held) const {
  return UnexpectedWhileOpen(breaker, steady_ms, seen_steady_ms, cluster_ms,
                             FromVector(held));
}

uint64_t ExpiryBreakerJudge::UnexpectedWhileOpen(
    const sessiond::v1::ExpiryBreaker& breaker, int64_t steady_ms,
    int64_t seen_steady_ms, int64_t cluster_ms,
    const ExpiredSessions& held) const {
  // An opening recorded before the field existed reads 0: it clears later.
  const int64_t elapsed_before_seen =
      std::max<int64_t>(0, breaker.window_real_elapsed_ms());
  const int64_t allowance =
      elapsed_before_seen + AllowanceMs(steady_ms - seen_steady_ms);
  ExpiryCounts counts;
  held([&](const storage::ExpiredSession& session) {
    bool unexpected = false;
    Classify(session, breaker.window_start_ms(), allowance, cluster_ms, &counts,
             &unexpected);
  });
  // Young expiries of the opening's window stay counted: only an operator
  // ends an opening their excess caused (its held sessions are a few
  // seconds' worth of a cause that may still be at work). Early ones do
  // not: real time passing makes the held ones planned.
  const uint64_t young_excess =
      breaker.young_judged()
          ? SaturatingSub(counts.young + breaker.young_in_window(),
                          breaker.young_baseline())
          : 0;
  return counts.early + young_excess;
}

sessiond::v1::ExpiryBreaker OpeningFor(const BreakerJudgement& judgement,
                                       int64_t now_ms) {
  sessiond::v1::ExpiryBreaker open;
  // Just before the first unexpected expiry (or now, if none has happened
  // yet): every session it holds back validates again.
  open.set_frozen_at_ms(std::min(now_ms, judgement.earliest_unexpected_ms - 1));
  open.set_reason(judgement.reason);
  open.set_unexpected_expiries(judgement.unexpected);
  open.set_threshold(judgement.threshold);
  open.set_live_sessions(judgement.live_at_start);
  open.set_window_start_ms(judgement.window_start_ms);
  open.set_window_real_elapsed_ms(judgement.window_real_elapsed_ms);
  open.set_young_baseline(judgement.young_baseline);
  open.set_young_judged(judgement.young_judged);
  open.set_young_in_window(judgement.window.young);
  return open;
}

BreakerJudgement JudgeCatchUp(const ExpiryBreakerOptions& options,
                              int64_t steady_ms, int64_t now_ms,
                              int64_t moved_since_ms, int64_t to_ms,
                              uint64_t live, const ExpiredSessions& due_by_to) {
  ExpiryBreakerJudge judge(options);
  // Back-dated: its young expiries (none: nothing is created in the jump)
  // teach no baseline.
  judge.Reset(steady_ms, now_ms, live, std::nullopt, /*back_dated=*/true);
  return judge.Judge(steady_ms, to_ms, live, [&](const auto& visit) {
    due_by_to([&](const storage::ExpiredSession& session) {
      if (session.last_seen_at_ms < moved_since_ms) visit(session);
    });
  });
}

uint64_t CountHeldSessions(const storage::SessionTable& table,
                           int64_t frozen_at_ms, int64_t now_ms,
                           int64_t leeway_ms) {
  uint64_t held = 0;
  table.ForEachExpiredSession(now_ms, leeway_ms,
                              [&](const storage::ExpiredSession& session) {
                                if (session.expires_at_ms > frozen_at_ms)
                                  ++held;
                              });
  return held;
}

}  // namespace sessiond::server
