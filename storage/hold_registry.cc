// Copyright sessiond authors. Licensed under the Apache License 2.0.
#include "storage/hold_registry.h"

#include <algorithm>

#include "common/check.h"

namespace sessiond::storage {

HoldRegistry::Index HoldRegistry::Acquire(const std::vector<uint64_t>& ids) {
  SESSIOND_CHECK(!ids.empty());
  absl::MutexLock lock(&mu_);
  auto [it, inserted] = by_ids_.try_emplace(ids, 0);
  if (inserted) {
    if (free_.empty()) {
      entries_.emplace_back();
      it->second = static_cast<Index>(entries_.size());
    } else {
      it->second = free_.back();
      free_.pop_back();
    }
    entries_[it->second - 1].ids = ids;
  }
  ++entries_[it->second - 1].refs;
  return it->second;
}

void HoldRegistry::Release(Index index) {
  if (index == 0) return;
  absl::MutexLock lock(&mu_);
  Entry& entry = entries_[index - 1];
  SESSIOND_CHECK(entry.refs > 0);
  if (--entry.refs > 0) return;
  by_ids_.erase(entry.ids);
  std::vector<uint64_t>().swap(entry.ids);
  free_.push_back(index);
}

std::vector<uint64_t> HoldRegistry::Ids(Index index) const {
  if (index == 0) return {};
  absl::MutexLock lock(&mu_);
  return entries_[index - 1].ids;
}

bool HoldRegistry::Contains(Index index, uint64_t id) const {
  if (index == 0) return false;
  absl::MutexLock lock(&mu_);
  const std::vector<uint64_t>& ids = entries_[index - 1].ids;
  return std::find(ids.begin(), ids.end(), id) != ids.end();
}

void HoldRegistry::Clear() {
  absl::MutexLock lock(&mu_);
  entries_.clear();
  by_ids_.clear();
  free_.clear();
}

size_t HoldRegistry::size() const {
  absl::MutexLock lock(&mu_);
  return by_ids_.size();
}

}  // namespace sessiond::storage
