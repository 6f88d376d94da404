// Copyright sessiond authors. Licensed under the Apache License 2.0.
#ifndef SESSIOND_TESTS_SIM_TRACE_H_
#define SESSIOND_TESTS_SIM_TRACE_H_

#include <cstdint>
#include <cstdio>
#include <deque>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"

namespace sessiond::sim {

// The notable events of a scenario (faults, role changes, proposals,
// snapshots), kept as a bounded tail for failure reports; when echoing, every
// line is also printed as it happens (SESSIOND_SIM_TRACE=1 when replaying).
// Not thread-safe; owned by the Cluster.
class Trace {
 public:
  // echo_level 0: keep the tail only; 1: also print events as they happen;
  // 2: also print every message delivered.
  Trace(int echo_level, size_t keep) : echo_level_(echo_level), keep_(keep) {}

  // `verbose` lines (frequent and rarely telling, e.g. each proposal) are
  // only echoed, never kept for the tail.
  void Add(uint64_t step, absl::string_view line, bool verbose = false) {
    if (verbose && echo_level_ < 1) return;
    std::string entry = absl::StrCat("[", step, "] ", line);
    if (echo_level_ >= 1) std::fprintf(stderr, "%s\n", entry.c_str());
    if (verbose) return;
    lines_.push_back(std::move(entry));
    if (lines_.size() > keep_) lines_.pop_front();
  }

  std::string Tail(size_t n) const {
    std::string out;
    const size_t start = lines_.size() > n ? lines_.size() - n : 0;
    for (size_t i = start; i < lines_.size(); ++i) {
      absl::StrAppend(&out, "  ", lines_[i], "\n");
    }
    return out;
  }

  bool echo() const { return echo_level_ >= 1; }
  bool echo_messages() const { return echo_level_ >= 2; }

 private:
  int echo_level_;
  size_t keep_;
  std::deque<std::string> lines_;
};

}  // namespace sessiond::sim

#endif  // SESSIOND_TESTS_SIM_TRACE_H_
