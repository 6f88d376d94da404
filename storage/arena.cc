// Copyright sessiond authors. Licensed under the Apache License 2.0.
#include "storage/arena.h"

#include <sys/mman.h>

#include <cstring>
#include <new>

#include "common/check.h"

namespace sessiond::storage {
namespace {

constexpr size_t kHugePage = 2 << 20;

}  // namespace

SlabArena::SlabArena(uint32_t tag) : tag_(tag << 31) {
  mapping_length_ = kRangeBytes + kHugePage;
  void* p = mmap(nullptr, mapping_length_, PROT_READ | PROT_WRITE,
                 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (p == MAP_FAILED) throw std::bad_alloc();
  mapping_ = p;
  const uintptr_t addr = reinterpret_cast<uintptr_t>(p);
  base_ = reinterpret_cast<char*>((addr + kHugePage - 1) &
                                  ~(uintptr_t{kHugePage} - 1));
  // Advisory: without transparent huge pages the range uses 4 KiB pages.
  (void)madvise(base_, kRangeBytes, MADV_HUGEPAGE);
}

SlabArena::~SlabArena() { munmap(mapping_, mapping_length_); }

SlabArena::Ref SlabArena::Allocate(size_t bytes) {
  SESSIOND_CHECK(bytes > 0);
  const size_t units = Units(bytes);
  absl::MutexLock lock(&mu_);
  Ref* head = nullptr;
  if (units <= kSmallClasses) {
    head = &free_small_[units];
  } else {
    auto it = free_large_.find(units);
    if (it != free_large_.end()) head = &it->second;
  }
  if (head != nullptr && *head != 0) {
    const Ref ref = *head;
    std::memcpy(head, Deref(ref), sizeof(Ref));
    return ref;
  }
  SESSIOND_CHECK_MSG(next_unit_ + units <= kRangeBytes / kGranularity &&
                         next_unit_ + units <= 0x80000000u,
                     "session table arena is full (16 GiB)");
  const Ref ref = static_cast<Ref>(next_unit_) | tag_;
  next_unit_ += units;
  return ref;
}

void SlabArena::Free(Ref ref, size_t bytes) {
  if (ref == 0) return;
  const size_t units = Units(bytes);
  absl::MutexLock lock(&mu_);
  Ref& head = units <= kSmallClasses ? free_small_[units] : free_large_[units];
  std::memcpy(Deref(ref), &head, sizeof(Ref));
  head = ref;
}

void SlabArena::Reset() {
  absl::MutexLock lock(&mu_);
  const size_t used = next_unit_ * kGranularity;
  const size_t length = (used + kHugePage - 1) & ~(kHugePage - 1);
  (void)madvise(base_, length, MADV_DONTNEED);
  next_unit_ = 1;
  free_small_.fill(0);
  free_large_.clear();
}

size_t SlabArena::used_bytes() const {
  absl::MutexLock lock(&mu_);
  return next_unit_ * kGranularity;
}

}  // namespace sessiond::storage
