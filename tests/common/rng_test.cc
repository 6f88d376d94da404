// Copyright sessiond authors. Licensed under the Apache License 2.0.
#include "common/rng.h"

#include <vector>

#include "gtest/gtest.h"

namespace sessiond {
namespace {

TEST(RngTest, SameSeedSameSequence) {
  Rng a(42), b(42);
  for (int i = 0; i < 1000; ++i) ASSERT_EQ(a.Uniform(1000), b.Uniform(1000));
}

TEST(RngTest, SequenceIsPinnedAcrossPlatforms) {
  // mt19937_64 is fully specified by the standard; our bounding is our own
  // code. A change here breaks the replay of every recorded simulation seed.
  Rng rng(1);
  std::vector<uint64_t> got;
  for (int i = 0; i < 5; ++i) got.push_back(rng.Uniform(100));
  Rng again(1);
  for (int i = 0; i < 5; ++i) EXPECT_EQ(got[i], again.Uniform(100));
  EXPECT_EQ(Rng(5489).Next(), 14514284786278117030ull);
}

TEST(RngTest, UniformStaysInBounds) {
  Rng rng(7);
  std::vector<int> counts(10, 0);
  for (int i = 0; i < 10000; ++i) {
    uint64_t v = rng.Uniform(10);
    ASSERT_LT(v, 10u);
    ++counts[v];
  }
  for (int c : counts) EXPECT_GT(c, 800);
  for (int i = 0; i < 1000; ++i) {
    uint64_t v = rng.Range(5, 7);
    ASSERT_GE(v, 5u);
    ASSERT_LE(v, 7u);
  }
}

}  // namespace
}  // namespace sessiond
