// Copyright sessiond authors. Licensed under the Apache License 2.0.
#include "server/peer_wall_clocks.h"

#include <algorithm>
#include <chrono>
#include <utility>
#include <vector>

#include "common/steady_clock.h"

namespace sessiond::server {
namespace {

// Unix ms of about the year 5000: a reading past it, or a verdict larger,
// comes from a broken peer, and keeping them out keeps every sum below in
// range.
constexpr int64_t kMaxWallMs = 95'000'000'000'000;

}  // namespace

PeerWallClocks::PeerWallClocks(PeerWallClocksOptions options)
    : options_([&] {
        if (!options.wall_ms) {
          // The clock ClusterClock reads (absl::Now() keeps its own
          // estimate, which libfaketime's steps in tests do not move).
          options.wall_ms = [] {
            return std::chrono::duration_cast<std::chrono::milliseconds>(
                       std::chrono::system_clock::now().time_since_epoch())
                .count();
          };
        }
        if (!options.steady_ms)
          options.steady_ms = [] { return SteadyNowMs(); };
        return std::move(options);
      }()) {}

int64_t PeerWallClocks::WallMs() const { return options_.wall_ms(); }

PeerWallClocks::Now PeerWallClocks::ReadClocks() const {
  return Now{std::clamp<int64_t>(options_.wall_ms(), 0, kMaxWallMs),
             options_.steady_ms()};
}

void PeerWallClocks::Heard(NodeId peer, int64_t peer_wall_ms) {
  if (peer_wall_ms <= 0 || peer_wall_ms > kMaxWallMs) return;
  const Now now = ReadClocks();
  absl::MutexLock lock(&mu_);
  readings_[peer] =
      Reading{peer_wall_ms - now.wall_ms, now.wall_ms, now.steady_ms};
}

void PeerWallClocks::Told(int64_t off_median_ms) {
  if (off_median_ms < -kMaxWallMs || off_median_ms > kMaxWallMs) return;
  const Now now = ReadClocks();
  absl::MutexLock lock(&mu_);
  told_ = Reading{off_median_ms, now.wall_ms, now.steady_ms};
}

bool PeerWallClocks::Fresh(const Reading& r, const Now& now) const {
  return now.steady_ms - r.at_steady_ms <=
         absl::ToInt64Milliseconds(options_.fresh_for);
}

int64_t PeerWallClocks::OwnStepSince(const Reading& r, const Now& now) {
  return (now.wall_ms - r.at_wall_ms) - (now.steady_ms - r.at_steady_ms);
}

std::optional<int64_t> PeerWallClocks::MedianOffsetMs(const Now& now) const {
  std::vector<int64_t> offsets = {0};  // this node's own
  for (const auto& [peer, reading] : readings_) {
    if (Fresh(reading, now)) {
      offsets.push_back(reading.off_ms - OwnStepSince(reading, now));
    }
  }
  if (offsets.size() < 3) return std::nullopt;
  std::sort(offsets.begin(), offsets.end());
  const size_t lower = (offsets.size() - 1) / 2;
  if (offsets.size() % 2 == 0 &&
      offsets[lower + 1] - offsets[lower] > options_.tie_ms) {
    return std::nullopt;
  }
  return offsets[lower];
}

std::optional<int64_t> PeerWallClocks::OffMedianMs(NodeId peer) const {
  const Now now = ReadClocks();
  absl::MutexLock lock(&mu_);
  const auto it = readings_.find(peer);
  if (it == readings_.end() || !Fresh(it->second, now)) return std::nullopt;
  const std::optional<int64_t> median = MedianOffsetMs(now);
  if (!median.has_value()) return std::nullopt;
  return it->second.off_ms - OwnStepSince(it->second, now) - *median;
}

std::optional<int64_t> PeerWallClocks::OwnOffMedianMs() const {
  const Now now = ReadClocks();
  absl::MutexLock lock(&mu_);
  if (const std::optional<int64_t> median = MedianOffsetMs(now)) {
    return -*median;
  }
  if (told_.has_value() && Fresh(*told_, now)) {
    return told_->off_ms + OwnStepSince(*told_, now);
  }
  return std::nullopt;
}

}  // namespace sessiond::server
