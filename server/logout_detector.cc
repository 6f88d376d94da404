// Copyright sessiond authors. Licensed under the Apache License 2.0.
#include "server/logout_detector.h"

#include <algorithm>
#include <chrono>
#include <cmath>

#include "absl/strings/str_format.h"
#include "common/log.h"
#include "common/steady_clock.h"

namespace sessiond::server {
namespace {

constexpr std::array<LogoutSignal, 3> kOutcomeSignals = {
    LogoutSignal::kUnknown, LogoutSignal::kExpired, LogoutSignal::kRevoked};

int Index(LogoutSignal signal) { return static_cast<int>(signal); }

const char* OutcomeWord(LogoutSignal signal) {
  switch (signal) {
    case LogoutSignal::kUnknown:
      return "UNKNOWN";
    case LogoutSignal::kExpired:
      return "EXPIRED";
    case LogoutSignal::kRevoked:
      return "REVOKED";
    case LogoutSignal::kLiveDrop:
      break;
  }
  return "";
}

std::string Duration(int64_t ms) {
  return absl::FormatDuration(absl::Milliseconds(ms));
}

uint64_t Delta(uint64_t now, uint64_t before) {
  return now > before ? now - before : 0;
}

}  // namespace

const char* LogoutSignalName(LogoutSignal signal) {
  switch (signal) {
    case LogoutSignal::kLiveDrop:
      return "live_drop";
    case LogoutSignal::kUnknown:
      return "unknown";
    case LogoutSignal::kExpired:
      return "expired";
    case LogoutSignal::kRevoked:
      return "revoked";
  }
  return "unknown";
}

LogoutDetector::LogoutDetector(const LogoutDetectorOptions& options)
    : options_(options) {}

std::vector<LogoutEvent> LogoutDetector::Observe(const LogoutSample& sample) {
  std::vector<LogoutEvent> events;
  if (started_ && sample.now_ms <= previous_.now_ms) return events;
  if (started_) {
    const int64_t dt_ms = sample.now_ms - previous_.now_ms;
    const uint64_t valid = Delta(sample.valid, previous_.valid);
    const uint64_t expired = Delta(sample.expired, previous_.expired);
    const uint64_t revoked = Delta(sample.revoked, previous_.revoked);
    const uint64_t unknown = Delta(sample.unknown, previous_.unknown);
    const uint64_t total = valid + expired + revoked + unknown;
    state_.interval_validations = total;
    if (total > 0 && total >= options_.min_validations) {
      const double n = static_cast<double>(total);
      ObserveShare(LogoutSignal::kUnknown, static_cast<double>(unknown) / n,
                   total, sample.now_ms, dt_ms, &events);
      ObserveShare(LogoutSignal::kExpired, static_cast<double>(expired) / n,
                   total, sample.now_ms, dt_ms, &events);
      ObserveShare(LogoutSignal::kRevoked, static_cast<double>(revoked) / n,
                   total, sample.now_ms, dt_ms, &events);
    }
  }
  ObserveLive(sample, &events);
  started_ = true;
  previous_ = sample;
  state_.now_ms = sample.now_ms;
  state_.ready = true;
  for (LogoutSignal signal : kOutcomeSignals) {
    if (baselines_[Index(signal)].n < kWarmupIntervals) state_.ready = false;
  }
  return events;
}

void LogoutDetector::ObserveLive(const LogoutSample& sample,
                                 std::vector<LogoutEvent>* out) {
  const uint64_t live = sample.live_sessions;
  // The sliding-window maximum: drop what the new sample outranks, then
  // what left the window.
  while (!window_.empty() && window_.back().second <= live) window_.pop_back();
  window_.emplace_back(sample.now_ms, live);
  while (window_.size() > 1 &&
         (window_.front().first < sample.now_ms - options_.window_ms ||
          window_.size() > kMaxWindowSamples)) {
    window_.pop_front();
  }
  const uint64_t highest = window_.front().second;
  const double high = static_cast<double>(highest);
  const double now = static_cast<double>(live);
  state_.live_drop = highest > 0 && live < highest ? 1 - now / high : 0;

  LogoutSignalState& s = state_.signals[Index(LogoutSignal::kLiveDrop)];
  s.value = now;
  s.baseline = high;
  s.deviation = 0;
  if (!s.alerting) {
    const bool below = highest >= options_.min_sessions &&
                       now < high * (1 - options_.drop_share);
    below_ = below ? below_ + 1 : 0;
    // Two samples in a row: a table being replaced by a snapshot is
    // briefly empty, and is not a logout.
    if (below_ >= 2) {
      below_ = 0;
      Raise(LogoutSignal::kLiveDrop, sample.now_ms,
            absl::StrFormat(
                "live sessions fell %.0f%% within %s: %d now, %d at the "
                "window's highest (alert at %.0f%%)",
                100 * state_.live_drop, Duration(options_.window_ms), live,
                highest, 100 * options_.drop_share),
            out);
    }
  } else if (now >= high * (1 - options_.drop_share / 2)) {
    below_ = 0;
    Clear(LogoutSignal::kLiveDrop, sample.now_ms, "recovered", out);
  }
}

void LogoutDetector::ObserveShare(LogoutSignal signal, double share,
                                  uint64_t validations, int64_t now_ms,
                                  int64_t dt_ms,
                                  std::vector<LogoutEvent>* out) {
  Baseline& b = baselines_[Index(signal)];
  LogoutSignalState& s = state_.signals[Index(signal)];
  s.value = share;
  const double excess = share - b.mean;
  const double deviation = std::sqrt(b.variance);
  // Judged only once warm, and only upward.
  const bool high =
      b.n >= kWarmupIntervals && excess > options_.deviations * deviation;
  // Held back from the baseline: a step that lands across two intervals
  // (half of it in the first) must not slip into the baseline before the
  // second interval shows all of it.
  const bool unusual = high && excess >= options_.jump_share / 2;
  bool fold = !unusual;
  if (s.alerting && !unusual) {
    Clear(signal, now_ms, "recovered", out);
  } else if (!s.alerting && high && excess >= options_.jump_share) {
    Raise(signal, now_ms,
          absl::StrFormat(
              "%s answers were %.1f%% of %d validations in the last "
              "interval, against a baseline of %.1f%% +- %.1f points "
              "(alert at +%.0f points and %g deviations)",
              OutcomeWord(signal), 100 * share, validations, 100 * b.mean,
              100 * deviation, 100 * options_.jump_share, options_.deviations),
          out);
    // The event carries the baseline it was judged against.
    out->back().state.baseline = b.mean;
    out->back().state.deviation = deviation;
  }
  if (unusual) {
    if (b.held_since_ms < 0) {
      b.held_since_ms = now_ms;
    } else if (now_ms - b.held_since_ms >= options_.baseline_ms) {
      // Held back for a whole baseline: this is the new normal.
      b = Baseline{};
      fold = true;
      if (s.alerting) Clear(signal, now_ms, "accepted", out);
    }
  } else {
    b.held_since_ms = -1;
  }
  if (fold) {
    // Exponential weighting by the time this interval covered; a plain
    // mean over the first intervals (alpha >= 1/n).
    const double decay = std::exp(-static_cast<double>(dt_ms) /
                                  static_cast<double>(options_.baseline_ms));
    const double alpha =
        std::max(1 - decay, 1.0 / static_cast<double>(b.n + 1));
    const double diff = share - b.mean;
    const double step = alpha * diff;
    b.mean += step;
    b.variance = (1 - alpha) * (b.variance + diff * step);
    ++b.n;
  }
  s.baseline = b.mean;
  s.deviation = std::sqrt(b.variance);
  s.intervals = b.n;
}

void LogoutDetector::Raise(LogoutSignal signal, int64_t now_ms,
                           std::string detail, std::vector<LogoutEvent>* out) {
  LogoutSignalState& s = state_.signals[Index(signal)];
  s.alerting = true;
  s.since_ms = now_ms;
  ++s.raised;
  s.detail = std::move(detail);
  LogoutEvent event;
  event.signal = signal;
  event.raised = true;
  event.state = s;
  out->push_back(std::move(event));
}

void LogoutDetector::Clear(LogoutSignal signal, int64_t now_ms,
                           const char* reason, std::vector<LogoutEvent>* out) {
  LogoutSignalState& s = state_.signals[Index(signal)];
  LogoutEvent event;
  event.signal = signal;
  event.raised = false;
  event.reason = reason;
  event.duration_ms = now_ms - s.since_ms;
  s.alerting = false;
  s.detail.clear();
  event.state = s;
  out->push_back(std::move(event));
}

LogoutDetectorTask::LogoutDetectorTask(const LogoutDetectorOptions& options,
                                       absl::Duration interval, Sampler sampler)
    : interval_(interval), sampler_(std::move(sampler)), detector_(options) {}

LogoutDetectorTask::~LogoutDetectorTask() { Stop(); }

void LogoutDetectorTask::Start() {
  absl::MutexLock lock(&task_mu_);
  if (task_ != nullptr || stopped_) return;
  SampleOnce();
  task_ = std::make_unique<PeriodicTask>("sd-logout", interval_,
                                         [this] { SampleOnce(); });
}

void LogoutDetectorTask::Stop() {
  std::unique_ptr<PeriodicTask> task;
  {
    absl::MutexLock lock(&task_mu_);
    stopped_ = true;
    task = std::move(task_);
  }
  if (task != nullptr) task->Stop();
}

void LogoutDetectorTask::SampleOnce() {
  LogoutSample sample = sampler_();
  sample.now_ms = SteadyNowMs();
  std::vector<LogoutEvent> events;
  uint64_t validations = 0;
  {
    absl::MutexLock lock(&mu_);
    events = detector_.Observe(sample);
    validations = detector_.state().interval_validations;
  }
  for (const LogoutEvent& e : events) {
    const char* kind = LogoutSignalName(e.signal);
    logging::Fields fields;
    fields.Add("kind", kind);
    if (e.signal == LogoutSignal::kLiveDrop) {
      fields.Add("live_sessions", static_cast<uint64_t>(e.state.value))
          .Add("window_highest", static_cast<uint64_t>(e.state.baseline));
    } else {
      fields.Add("share", e.state.value)
          .Add("baseline", e.state.baseline)
          .Add("deviation", e.state.deviation)
          .Add("validations", validations);
    }
    if (e.raised) {
      fields.Add("msg", e.state.detail);
      logging::Warn("logout_alert.raised", fields);
    } else {
      fields.Add("reason", e.reason).Add("duration_ms", e.duration_ms);
      logging::Info("logout_alert.cleared", fields);
    }
  }
}

LogoutDetectorState LogoutDetectorTask::state() const {
  absl::MutexLock lock(&mu_);
  return detector_.state();
}

std::vector<sessiond::v1::LogoutAlert> LogoutDetectorTask::ActiveAlerts()
    const {
  std::vector<sessiond::v1::LogoutAlert> alerts;
  absl::MutexLock lock(&mu_);
  const LogoutDetectorState& state = detector_.state();
  for (int i = 0; i < kLogoutSignals; ++i) {
    const LogoutSignalState& s = state.signals[i];
    if (!s.alerting) continue;
    sessiond::v1::LogoutAlert& alert = alerts.emplace_back();
    alert.set_kind(LogoutSignalName(static_cast<LogoutSignal>(i)));
    alert.set_detail(s.detail);
    alert.set_active_ms(state.now_ms - s.since_ms);
    alert.set_value(s.value);
    alert.set_baseline(s.baseline);
    alert.set_deviation(s.deviation);
  }
  return alerts;
}

void LogoutDetectorTask::Collect(metrics::ExpositionWriter* w) const {
  const LogoutDetectorState state = this->state();
  using metrics::MetricType;
  if (w->BeginFamily("sessiond_logout_alert", MetricType::kGauge,
                     "1 while the logout detector raises this alert "
                     "(live_drop, or the unknown, expired or revoked share)")) {
    for (int i = 0; i < kLogoutSignals; ++i) {
      w->Sample({{"kind", LogoutSignalName(static_cast<LogoutSignal>(i))}},
                state.signals[i].alerting ? 1 : 0);
    }
  }
  if (w->BeginFamily("sessiond_logout_alerts_total", MetricType::kCounter,
                     "Logout detector alerts raised")) {
    for (int i = 0; i < kLogoutSignals; ++i) {
      w->SampleCount({{"kind", LogoutSignalName(static_cast<LogoutSignal>(i))}},
                     state.signals[i].raised);
    }
  }
  struct Family {
    const char* name;
    const char* help;
    double LogoutSignalState::*field;
  };
  static constexpr Family kFamilies[] = {
      {"sessiond_logout_outcome_share",
       "Share of this outcome among the validations of the detector's last "
       "interval with enough of them",
       &LogoutSignalState::value},
      {"sessiond_logout_outcome_baseline",
       "The detector's baseline of the share: its exponentially weighted "
       "mean",
       &LogoutSignalState::baseline},
      {"sessiond_logout_outcome_deviation",
       "The detector's baseline of the share: its exponentially weighted "
       "standard deviation",
       &LogoutSignalState::deviation},
  };
  for (const Family& f : kFamilies) {
    if (!w->BeginFamily(f.name, MetricType::kGauge, f.help)) continue;
    for (LogoutSignal signal : kOutcomeSignals) {
      w->Sample({{"outcome", LogoutSignalName(signal)}},
                state.signals[Index(signal)].*f.field);
    }
  }
  w->Gauge("sessiond_logout_live_window_highest",
           "Highest live session count of the detector's window (the "
           "live_drop baseline)",
           state.signals[Index(LogoutSignal::kLiveDrop)].baseline);
  w->Gauge("sessiond_logout_live_drop_ratio",
           "1 - live sessions / the window's highest (0 when at the highest)",
           state.live_drop);
  w->Gauge("sessiond_logout_interval_validations",
           "Validations in the detector's last interval",
           static_cast<double>(state.interval_validations));
  w->Gauge("sessiond_logout_detector_ready",
           "1 once every outcome baseline has its warm-up intervals",
           state.ready ? 1 : 0);
}

}  // namespace sessiond::server
