// Copyright sessiond authors. Licensed under the Apache License 2.0.
#include "server/peer_wall_clocks.h"

#include <algorithm>
#include <chrono>
#include <utility>
#include <vector>

#include "common/steady_clock.h"

namespace sessiond::server {

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

void PeerWallClocks::Heard(NodeId peer, int64_t peer_wall_ms) {
  if (peer_wall_ms == 0) return;
  const int64_t offset_ms = peer_wall_ms - options_.wall_ms();
  const int64_t now = options_.steady_ms();
  absl::MutexLock lock(&mu_);
  readings_[peer] = Reading{offset_ms, now};
}

void PeerWallClocks::Told(int64_t off_median_ms) {
  const int64_t now = options_.steady_ms();
  absl::MutexLock lock(&mu_);
  told_ = Reading{off_median_ms, now};
}

bool PeerWallClocks::Fresh(int64_t at_steady_ms, int64_t now_steady_ms) const {
  return now_steady_ms - at_steady_ms <=
         absl::ToInt64Milliseconds(options_.fresh_for);
}

std::optional<int64_t> PeerWallClocks::MedianOffsetMs(
    int64_t now_steady_ms) const {
  std::vector<int64_t> offsets = {0};  // this node's own
  for (const auto& [peer, reading] : readings_) {
    if (Fresh(reading.heard_steady_ms, now_steady_ms)) {
      offsets.push_back(reading.offset_ms);
    }
  }
  if (offsets.size() < 3) return std::nullopt;
  const auto middle = offsets.begin() + (offsets.size() - 1) / 2;
  std::nth_element(offsets.begin(), middle, offsets.end());
  return *middle;
}

std::optional<int64_t> PeerWallClocks::OffMedianMs(NodeId peer) const {
  const int64_t now = options_.steady_ms();
  absl::MutexLock lock(&mu_);
  const auto it = readings_.find(peer);
  if (it == readings_.end() || !Fresh(it->second.heard_steady_ms, now)) {
    return std::nullopt;
  }
  const std::optional<int64_t> median = MedianOffsetMs(now);
  if (!median.has_value()) return std::nullopt;
  return it->second.offset_ms - *median;
}

std::optional<int64_t> PeerWallClocks::OwnOffMedianMs() const {
  const int64_t now = options_.steady_ms();
  absl::MutexLock lock(&mu_);
  if (const std::optional<int64_t> median = MedianOffsetMs(now)) {
    return -*median;
  }
  if (told_.has_value() && Fresh(told_->heard_steady_ms, now)) {
    return told_->offset_ms;
  }
  return std::nullopt;
}

}  // namespace sessiond::server
