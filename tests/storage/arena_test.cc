// Copyright sessiond authors. Licensed under the Apache License 2.0.
#include "storage/arena.h"

#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "gtest/gtest.h"

namespace sessiond::storage {
namespace {

TEST(SlabArenaTest, BlocksAreDistinctAlignedAndKeepTheirBytes) {
  SlabArena arena(0);
  std::vector<std::pair<SlabArena::Ref, size_t>> blocks;
  absl::flat_hash_set<SlabArena::Ref> refs;
  for (size_t i = 1; i <= 2000; ++i) {
    const size_t size = 1 + (i * 37) % 600;
    const SlabArena::Ref ref = arena.Allocate(size);
    ASSERT_NE(ref, 0u);
    ASSERT_EQ(ref >> 31, 0u);
    ASSERT_TRUE(refs.insert(ref).second);
    char* p = arena.Deref(ref);
    ASSERT_EQ(reinterpret_cast<uintptr_t>(p) % 8, 0u);
    std::memset(p, static_cast<int>(i & 0xff), size);
    blocks.emplace_back(ref, size);
  }
  for (size_t i = 0; i < blocks.size(); ++i) {
    const auto [ref, size] = blocks[i];
    const char* p = arena.Deref(ref);
    for (size_t k = 0; k < size; ++k) {
      ASSERT_EQ(static_cast<uint8_t>(p[k]), (i + 1) & 0xff);
    }
  }
}

TEST(SlabArenaTest, FreedBlocksAreReusedForTheSameSize) {
  SlabArena arena(1);
  const SlabArena::Ref a = arena.Allocate(100);
  const SlabArena::Ref b = arena.Allocate(100);
  EXPECT_EQ(a >> 31, 1u);  // the tag
  const size_t used = arena.used_bytes();
  arena.Free(a, 100);
  arena.Free(b, 100);
  // LIFO reuse, no new space.
  EXPECT_EQ(arena.Allocate(100), b);
  EXPECT_EQ(arena.Allocate(97), a);  // same 8-byte class
  EXPECT_EQ(arena.used_bytes(), used);
  // Large blocks have free lists too.
  const SlabArena::Ref big = arena.Allocate(100000);
  arena.Free(big, 100000);
  EXPECT_EQ(arena.Allocate(100000), big);
}

TEST(SlabArenaTest, ResetStartsOver) {
  SlabArena arena(0);
  for (int i = 0; i < 1000; ++i) arena.Allocate(64);
  EXPECT_GE(arena.used_bytes(), 64000u);
  arena.Reset();
  EXPECT_LT(arena.used_bytes(), 64u);
  const SlabArena::Ref ref = arena.Allocate(16);
  std::memcpy(arena.Deref(ref), "0123456789abcdef", 16);
  EXPECT_EQ(std::string(arena.Deref(ref), 16), "0123456789abcdef");
}

TEST(SlabArenaTest, ConcurrentAllocations) {
  SlabArena arena(0);
  std::vector<std::vector<SlabArena::Ref>> got(2);
  std::vector<std::thread> threads;
  for (int t = 0; t < 2; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 20000; ++i) {
        const SlabArena::Ref ref = arena.Allocate(24);
        std::memset(arena.Deref(ref), t, 24);
        got[t].push_back(ref);
        if (i % 3 == 0) {
          arena.Free(got[t].back(), 24);
          got[t].pop_back();
        }
      }
    });
  }
  for (std::thread& t : threads) t.join();
  absl::flat_hash_set<SlabArena::Ref> all;
  for (int t = 0; t < 2; ++t) {
    for (SlabArena::Ref ref : got[t]) {
      EXPECT_TRUE(all.insert(ref).second);
      EXPECT_EQ(arena.Deref(ref)[0], t);
    }
  }
}

}  // namespace
}  // namespace sessiond::storage
