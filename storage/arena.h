// Copyright sessiond authors. Licensed under the Apache License 2.0.
#ifndef SESSIOND_STORAGE_ARENA_H_
#define SESSIOND_STORAGE_ARENA_H_

#include <array>
#include <cstddef>
#include <cstdint>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/synchronization/mutex.h"

namespace sessiond::storage {

// A size-class allocator for the session table's small, long-lived blocks
// (records and their attribute bytes), whose blocks are named by 32-bit
// references instead of 64-bit pointers.
//
// Why not malloc: glibc adds an 8-byte header and rounds to 16 bytes (~16 B
// lost per block, two blocks per session), interleaves the blocks with
// short-lived allocations so that a table built while serving leaves holes
// no one can return, and faults memory in 4 KiB pages (1M sessions: 120k
// page faults at start-up). Why 32-bit references: the table's indexes hold
// one reference per session each (three hash sets, an expiry btree, the
// user lists); at 4 instead of 8 bytes that is ~35 bytes per session less.
//
// The arena reserves one contiguous 16 GiB range of address space
// (MAP_NORESERVE: only pages touched count), 2 MiB-aligned and
// madvise(MADV_HUGEPAGE)d, and carves blocks from it in 8-byte units; a
// reference is the block's offset / 8 (31 bits), plus a caller-chosen tag
// bit (bit 31) so that two arenas can share one reference space. Freed
// blocks go to a per-size free list and are reused for the same size; pages
// return to the system only on Reset() or destruction.
//
// Thread-safe (one mutex, a leaf in every lock order). Deref needs no lock:
// the range never moves.
class SlabArena {
 public:
  using Ref = uint32_t;  // 0 is "none"
  static constexpr size_t kGranularity = 8;
  static constexpr size_t kRangeBytes = size_t{16} << 30;

  // `tag` (0 or 1) is put in bit 31 of every reference from this arena.
  explicit SlabArena(uint32_t tag);
  ~SlabArena();
  SlabArena(const SlabArena&) = delete;
  SlabArena& operator=(const SlabArena&) = delete;

  // A block of at least `bytes` bytes, 8-byte aligned. Aborts when the
  // arena's range is full. REQUIRES: bytes > 0.
  Ref Allocate(size_t bytes) ABSL_LOCKS_EXCLUDED(mu_);
  // Returns a block from Allocate(bytes) (the same `bytes`).
  void Free(Ref ref, size_t bytes) ABSL_LOCKS_EXCLUDED(mu_);
  // Drops every block and returns the pages to the system.
  // REQUIRES: no block is in use.
  void Reset() ABSL_LOCKS_EXCLUDED(mu_);

  // The address of a block of this arena. REQUIRES: ref is from this arena.
  char* Deref(Ref ref) const {
    return base_ + (static_cast<size_t>(ref & 0x7fffffffu) * kGranularity);
  }

  // Bytes handed out so far (the high-water mark of the range).
  size_t used_bytes() const ABSL_LOCKS_EXCLUDED(mu_);

 private:
  static constexpr size_t kSmallClasses = 512;  // sizes up to 4 KiB

  static size_t Units(size_t bytes) {
    return (bytes + kGranularity - 1) / kGranularity;
  }

  const uint32_t tag_;
  void* mapping_ = nullptr;
  size_t mapping_length_ = 0;
  char* base_ = nullptr;

  mutable absl::Mutex mu_;
  size_t next_unit_ ABSL_GUARDED_BY(mu_) = 1;  // unit 0 is never handed out
  // Free blocks by size in units, linked through their first 4 bytes.
  std::array<Ref, kSmallClasses + 1> free_small_ ABSL_GUARDED_BY(mu_){};
  absl::flat_hash_map<size_t, Ref> free_large_ ABSL_GUARDED_BY(mu_);
};

}  // namespace sessiond::storage

#endif  // SESSIOND_STORAGE_ARENA_H_
