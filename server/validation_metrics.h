// Copyright sessiond authors. Licensed under the Apache License 2.0.
#ifndef SESSIOND_SERVER_VALIDATION_METRICS_H_
#define SESSIOND_SERVER_VALIDATION_METRICS_H_

#include <array>
#include <cstdint>

#include "common/metrics.h"
#include "common/metrics_exposition.h"
#include "sessiond/v1/session.pb.h"

namespace sessiond::server {

// Validations answered, by outcome (every ValidateSession, every token of a
// BatchValidateSessions, every message of a StreamValidateSessions that got
// an outcome; a call that failed, e.g. UNAVAILABLE, has none). Exported as
// sessiond_validations_total{outcome="valid|expired|revoked|unknown"}.
//
// Thread-safe; Count is one relaxed atomic add.
class ValidationMetrics {
 public:
  using Outcome = sessiond::v1::ValidateSessionResponse::Outcome;

  void Count(Outcome outcome) {
    const int i = static_cast<int>(outcome);
    counts_[i >= 0 && i < kOutcomes ? i : 0].Increment();
  }
  uint64_t count(Outcome outcome) const {
    const int i = static_cast<int>(outcome);
    return i >= 0 && i < kOutcomes ? counts_[i].value() : 0;
  }

  void Collect(metrics::ExpositionWriter* writer) const {
    if (!writer->BeginFamily("sessiond_validations_total",
                             metrics::MetricType::kCounter,
                             "Session validations answered, by outcome")) {
      return;
    }
    static constexpr struct {
      Outcome outcome;
      const char* label;
    } kLabels[] = {
        {sessiond::v1::ValidateSessionResponse::VALID, "valid"},
        {sessiond::v1::ValidateSessionResponse::EXPIRED, "expired"},
        {sessiond::v1::ValidateSessionResponse::REVOKED, "revoked"},
        {sessiond::v1::ValidateSessionResponse::UNKNOWN, "unknown"},
    };
    for (const auto& [outcome, label] : kLabels) {
      writer->SampleCount({{"outcome", label}}, count(outcome));
    }
  }

 private:
  // Indexed by Outcome (0, OUTCOME_UNSPECIFIED, is never exported).
  static constexpr int kOutcomes = 5;
  std::array<metrics::Counter, kOutcomes> counts_;
};

}  // namespace sessiond::server

#endif  // SESSIOND_SERVER_VALIDATION_METRICS_H_
