// Copyright sessiond authors. Licensed under the Apache License 2.0.
#ifndef SESSIOND_COMMON_STRONG_TYPES_H_
#define SESSIOND_COMMON_STRONG_TYPES_H_

#include <compare>
#include <cstdint>
#include <functional>
#include <ostream>

namespace sessiond {

// A uint64_t that cannot be mixed up with another kind of uint64_t: a Term
// cannot be passed where a LogIndex is expected. Arithmetic is limited to
// what Raft code needs: stepping by a count and taking a distance.
template <typename Tag>
class StrongUint64 {
 public:
  constexpr StrongUint64() = default;
  constexpr explicit StrongUint64(uint64_t value) : value_(value) {}

  constexpr uint64_t value() const { return value_; }

  constexpr auto operator<=>(const StrongUint64&) const = default;

  constexpr StrongUint64 operator+(uint64_t n) const {
    return StrongUint64(value_ + n);
  }
  constexpr StrongUint64 operator-(uint64_t n) const {
    return StrongUint64(value_ - n);
  }
  // The distance between two values. REQUIRES: *this >= other.
  constexpr uint64_t operator-(StrongUint64 other) const {
    return value_ - other.value_;
  }
  constexpr StrongUint64& operator++() {
    ++value_;
    return *this;
  }
  constexpr StrongUint64& operator+=(uint64_t n) {
    value_ += n;
    return *this;
  }

  friend std::ostream& operator<<(std::ostream& os, StrongUint64 v) {
    return os << v.value_;
  }
  template <typename H>
  friend H AbslHashValue(H h, StrongUint64 v) {
    return H::combine(std::move(h), v.value_);
  }

 private:
  uint64_t value_ = 0;
};

// Position of an entry in the Raft log; 0 means "none", the first entry is 1.
using LogIndex = StrongUint64<struct LogIndexTag>;
// A Raft term; 0 means "none".
using Term = StrongUint64<struct TermTag>;
// A cluster member; 0 means "none".
using NodeId = StrongUint64<struct NodeIdTag>;

}  // namespace sessiond

template <typename Tag>
struct std::hash<sessiond::StrongUint64<Tag>> {
  size_t operator()(sessiond::StrongUint64<Tag> v) const noexcept {
    return std::hash<uint64_t>()(v.value());
  }
};

#endif  // SESSIOND_COMMON_STRONG_TYPES_H_
