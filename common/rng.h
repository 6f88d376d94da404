// Copyright sessiond authors. Licensed under the Apache License 2.0.
#ifndef SESSIOND_COMMON_RNG_H_
#define SESSIOND_COMMON_RNG_H_

#include <cstdint>
#include <random>

namespace sessiond {

// A seeded pseudo-random generator whose sequence is the same on every
// platform and every run, so that a simulation seed replays exactly.
//
// std::uniform_int_distribution differs between standard libraries and
// absl::BitGen does not repeat across runs, so neither is used: bounds are
// applied by Lemire's multiply-shift with rejection, written here.
// Not thread-safe; each owner keeps its own.
class Rng {
 public:
  explicit Rng(uint64_t seed) : engine_(seed) {}

  uint64_t Next() { return engine_(); }

  // Uniform in [0, bound). REQUIRES: bound > 0.
  uint64_t Uniform(uint64_t bound) {
    unsigned __int128 m = static_cast<unsigned __int128>(Next()) * bound;
    uint64_t low = static_cast<uint64_t>(m);
    if (low < bound) {
      const uint64_t threshold = -bound % bound;
      while (low < threshold) {
        m = static_cast<unsigned __int128>(Next()) * bound;
        low = static_cast<uint64_t>(m);
      }
    }
    return static_cast<uint64_t>(m >> 64);
  }

  // Uniform in [lo, hi]. REQUIRES: lo <= hi.
  uint64_t Range(uint64_t lo, uint64_t hi) { return lo + Uniform(hi - lo + 1); }

  // True with probability `percent`/100.
  bool Percent(uint32_t percent) { return Uniform(100) < percent; }

 private:
  std::mt19937_64 engine_;
};

}  // namespace sessiond

#endif  // SESSIOND_COMMON_RNG_H_
