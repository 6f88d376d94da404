// Copyright sessiond authors. Licensed under the Apache License 2.0.
#ifndef SESSIOND_STORAGE_HOLD_REGISTRY_H_
#define SESSIOND_STORAGE_HOLD_REGISTRY_H_

#include <cstdint>
#include <deque>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/synchronization/mutex.h"

namespace sessiond::storage {

// Interns the lists of bulk-revocation ids that hold sessions revoked
// (sessiond.v1.Session.revoked_by, storage/revocations.h). The sessions of
// one flush all share one list, so a held session costs one map entry
// (SessionTable's Shard::holds: reference -> index), not a copy of it.
//
// Thread-safe (one mutex, a leaf: taken under a table shard's lock, never
// the other way). Indexes are reference-counted; a list is forgotten when
// its last reference is released.
class HoldRegistry {
 public:
  using Index = uint32_t;  // 0: no list

  // An index for `ids` (non-empty, in order), with one more reference.
  Index Acquire(const std::vector<uint64_t>& ids);
  // Drops one reference to `index` (0: nothing).
  void Release(Index index);
  // The ids of a referenced index (empty for 0).
  std::vector<uint64_t> Ids(Index index) const;
  // Whether the list of a referenced index holds `id`.
  bool Contains(Index index, uint64_t id) const;
  // Forgets every list (the table was cleared).
  void Clear();
  // Lists in use.
  size_t size() const;

 private:
  struct Entry {
    std::vector<uint64_t> ids;
    uint64_t refs = 0;
  };

  mutable absl::Mutex mu_;
  std::deque<Entry> entries_ ABSL_GUARDED_BY(mu_);  // at index - 1
  absl::flat_hash_map<std::vector<uint64_t>, Index> by_ids_
      ABSL_GUARDED_BY(mu_);
  std::vector<Index> free_ ABSL_GUARDED_BY(mu_);  // entries without refs
};

}  // namespace sessiond::storage

#endif  // SESSIOND_STORAGE_HOLD_REGISTRY_H_
