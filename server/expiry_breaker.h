// Copyright sessiond authors. Licensed under the Apache License 2.0.
//
// The mass-expiry breaker's judgement (issue 7, part 2; docs/OPERATIONS.md,
// "The expiry breaker"). The leader's sweeper asks it, before every sweep,
// whether the sessions about to expire are what their lifetimes predict;
// when they are not, it proposes to open the breaker (replicated: every node
// then judges expiry at a frozen cluster time, and nothing more expires until
// an operator resumes or the condition clears).
//
// Windows of window_ms of the leader's steady time. A window ends at the
// first judgement past window_ms; the next one starts at the judgement
// before it (so every due session is judged by a window that began before
// it came due: a jump of cluster time between two sweeps is seen whenever
// it happens). At a window's start the judge notes cluster time C0 and the
// live sessions L. Within the window,
// each session that expires (or will within the sweeper's look-ahead) is
//
//   planned  created before C0, expiring at or before
//            C0 + (steady time elapsed) x (1 + slew) + slack: its own
//            lifetime, run in real time, predicted it;
//   early    created before C0 but expiring later than that: cluster time
//            ran ahead of real time (a clock problem that slipped past the
//            cluster clock's slew bound);
//   young    created at or after C0: born and dead within one window. Such
//            expiries are expected at the rate of the previous window (the
//            baseline B); the excess is not. A bad default lifetime pushed
//            in config, or a client creating sessions with a tiny lifetime,
//            shows here.
//
// unexpected = early + max(0, young - B), counted over the window (swept
// ones, plus those the sweep is about to make). The breaker opens when
// unexpected > max(min_sessions, share x (L + B)), default share 10%, window
// 5 min. The first window after a node becomes leader has no baseline: its
// young expiries are not judged (early ones are).
//
// Deterministic: no clock, no threads; the caller passes steady and cluster
// time. Not thread-safe: the sweeper thread owns it.
#ifndef SESSIOND_SERVER_EXPIRY_BREAKER_H_
#define SESSIOND_SERVER_EXPIRY_BREAKER_H_

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "sessiond/v1/admin.pb.h"
#include "storage/session_table.h"

namespace sessiond::server {

struct ExpiryBreakerOptions {
  int64_t window_ms = 5 * 60 * 1000;
  double share = 0.10;
  // The threshold is never below this many sessions (a small store's few
  // expiries are never a mass expiry).
  uint64_t min_sessions = 100;
  // How far cluster time may legitimately run ahead of the leader's steady
  // clock (server/cluster_clock.h's slew) and a fixed slack on top.
  int64_t slew_ppm = 1000;
  int64_t slack_ms = 1000;
};

// Counts of one classification.
struct ExpiryCounts {
  uint64_t planned = 0;
  uint64_t early = 0;
  uint64_t young = 0;
};

struct BreakerJudgement {
  bool open = false;
  uint64_t unexpected = 0;
  uint64_t threshold = 0;
  ExpiryCounts window;  // the window's counts, candidates included
  // The earliest expiry instant among the unexpected candidates
  // (INT64_MAX when none): the breaker freezes expiry just before it.
  int64_t earliest_unexpected_ms = INT64_MAX;
  // For the replicated state: the window's start and baseline.
  int64_t window_start_ms = 0;
  uint64_t young_baseline = 0;
  bool young_judged = false;
  uint64_t live_at_start = 0;
  // Steady time since the window's start.
  int64_t window_real_elapsed_ms = 0;
  std::string reason;  // one line, when open
};

// The open command's breaker for `judgement` (open) made at cluster time
// `now_ms`: id, opened_at_ms and times_opened are set as it applies.
sessiond::v1::ExpiryBreaker OpeningFor(const BreakerJudgement& judgement,
                                       int64_t now_ms);

// Calls the visitor it is given once per session of a set (candidates,
// held sessions): a scan of the table, however many there are, without a
// copy (SessionTable::ForEachExpiredSession).
using ExpiredSessions = std::function<void(
    const std::function<void(const storage::ExpiredSession&)>& visit)>;

class ExpiryBreakerJudge {
 public:
  explicit ExpiryBreakerJudge(const ExpiryBreakerOptions& options)
      : options_(options) {}

  const ExpiryBreakerOptions& options() const { return options_; }

  // Starts a first window (a new leader, or after the breaker closed) at
  // steady `steady_ms` and cluster `cluster_ms`, which may be in the past (a
  // new leader starts just before a recent clock catch-up:
  // ExpirySweeper::StartNewLeadersWindow); no
  // baseline yet, unless `young_baseline` gives one known from before
  // (the opening's, just after the breaker closed: a window judged without
  // one would take a cause still at work as its new normal).
  // `back_dated`: this judge did not see the window's start (a new leader
  // judging from before a catch-up nobody judged yet): the young expiries
  // it counts are a part of the window's, so the next window learns no
  // baseline from them (it keeps `young_baseline`, or judges no young ones,
  // as a first window).
  void Reset(int64_t steady_ms, int64_t cluster_ms, uint64_t live,
             std::optional<uint64_t> young_baseline = std::nullopt,
             bool back_dated = false);

  // Whether expiring `candidates` (sessions expired at cluster_ms, or about
  // to be) would cross the threshold. Rolls the window first when it is
  // over. Counts nothing: Count does, for the sessions actually removed.
  // Every candidate must be judged: a judge shown only some of them lets a
  // mass expiry through a part at a time.
  BreakerJudgement Judge(int64_t steady_ms, int64_t cluster_ms, uint64_t live,
                         const ExpiredSessions& candidates);
  BreakerJudgement Judge(
      int64_t steady_ms, int64_t cluster_ms, uint64_t live,
      const std::vector<storage::ExpiredSession>& candidates);

  // Adds sessions the sweep removed to the window.
  void Count(int64_t steady_ms, int64_t cluster_ms,
             const std::vector<storage::ExpiredSession>& removed);

  // While the breaker is open: how many of `held` (sessions expired at
  // cluster_ms, or about to be, that the frozen clock keeps) are still
  // unexpected, judged by the opening's window (`breaker`). `steady_ms` and
  // `seen_steady_ms`: now and when this leader first saw the breaker open;
  // real time elapsed since the window's start is taken as the opening
  // leader's steady time from the window's start to the opening plus this
  // leader's steady time since seen (an underestimate on a new leader: it
  // clears later, never sooner). Never cluster time: it may have run ahead.
  uint64_t UnexpectedWhileOpen(const sessiond::v1::ExpiryBreaker& breaker,
                               int64_t steady_ms, int64_t seen_steady_ms,
                               int64_t cluster_ms,
                               const ExpiredSessions& held) const;
  uint64_t UnexpectedWhileOpen(
      const sessiond::v1::ExpiryBreaker& breaker, int64_t steady_ms,
      int64_t seen_steady_ms, int64_t cluster_ms,
      const std::vector<storage::ExpiredSession>& held) const;

 private:
  // Classifies one session against a window starting at cluster time
  // `window_start_ms`, with `allowance_ms` of real time elapsed since (slew
  // and slack included).
  static void Classify(const storage::ExpiredSession& session,
                       int64_t window_start_ms, int64_t allowance_ms,
                       int64_t cluster_ms, ExpiryCounts* counts,
                       bool* unexpected);
  int64_t AllowanceMs(int64_t elapsed_steady_ms) const;
  void RollIfOver(int64_t steady_ms, int64_t cluster_ms, uint64_t live);
  uint64_t Threshold(uint64_t live_at_start, uint64_t baseline) const;

  const ExpiryBreakerOptions options_;
  bool started_ = false;
  int64_t start_steady_ms_ = 0;
  int64_t start_cluster_ms_ = 0;
  uint64_t live_at_start_ = 0;
  ExpiryCounts counts_;
  bool has_baseline_ = false;
  uint64_t young_baseline_ = 0;
  bool back_dated_ = false;  // Reset's
  // The last Judge's times: where the next window starts.
  int64_t last_judged_steady_ms_ = 0;
  int64_t last_judged_cluster_ms_ = 0;
};

// The breaker's judgement of a clock catch-up before it is proposed
// (WritePath::ProposeCatchUpIfDue). Judged after the jump applied, as the
// sweeper's window does, reads answered EXPIRED for the sessions the jump
// aged until the next sweep opened the breaker, which then brought them
// back: a flash of logouts. Judged before, a breaker that must open is
// opened ahead of the jump, in the log, and no read sees them expired.
// As a window starting at cluster time `now_ms` with no real time elapsed
// judges, at cluster time `to_ms`, the sessions `due_by_to` lists (those
// expired at to_ms) that the jump leaves where they are (last seen before
// `moved_since_ms`): each one past now_ms plus the slack is early. A
// session last seen in the lag whose absolute lifetime ends in the jump is
// not counted here (the sweeper's window judges it after the jump).
BreakerJudgement JudgeCatchUp(const ExpiryBreakerOptions& options,
                              int64_t steady_ms, int64_t now_ms,
                              int64_t moved_since_ms, int64_t to_ms,
                              uint64_t live, const ExpiredSessions& due_by_to);

// How many sessions of `table` an open breaker frozen at frozen_at_ms holds
// back at cluster time now_ms: expired at now_ms, not at frozen_at_ms.
uint64_t CountHeldSessions(const storage::SessionTable& table,
                           int64_t frozen_at_ms, int64_t now_ms,
                           int64_t leeway_ms);

}  // namespace sessiond::server

#endif  // SESSIOND_SERVER_EXPIRY_BREAKER_H_
