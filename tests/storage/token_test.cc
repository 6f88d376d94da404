// Copyright sessiond authors. Licensed under the Apache License 2.0.
#include "storage/token.h"

#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "gtest/gtest.h"

namespace sessiond::storage {
namespace {

bool AllBase64Url(const std::string& s) {
  for (char c : s) {
    const bool ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
                    (c >= '0' && c <= '9') || c == '-' || c == '_';
    if (!ok) return false;
  }
  return true;
}

TEST(TokenTest, TokenIs43Base64UrlCharacters) {
  for (int i = 0; i < 100; ++i) {
    const std::string token = GenerateToken();
    EXPECT_EQ(token.size(), kTokenLength);
    EXPECT_TRUE(AllBase64Url(token)) << token;
    EXPECT_TRUE(LooksLikeToken(token)) << token;
  }
}

TEST(TokenTest, TokensAreUnique) {
  absl::flat_hash_set<std::string> seen;
  for (int i = 0; i < 10000; ++i) {
    EXPECT_TRUE(seen.insert(GenerateToken()).second);
  }
}

TEST(TokenTest, SessionIdIs22Base64UrlCharactersAndUnique) {
  absl::flat_hash_set<std::string> seen;
  for (int i = 0; i < 10000; ++i) {
    const std::string id = GenerateSessionId();
    EXPECT_EQ(id.size(), kSessionIdLength);
    EXPECT_TRUE(AllBase64Url(id)) << id;
    EXPECT_TRUE(seen.insert(id).second);
  }
}

// Tokens come from a per-thread block of DRBG output: threads draw from
// different blocks.
TEST(TokenTest, TokensFromManyThreadsAreUnique) {
  constexpr int kThreads = 4;
  constexpr int kEach = 2000;
  std::vector<std::vector<std::string>> made(kThreads);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&made, t] {
      for (int i = 0; i < kEach; ++i) made[t].push_back(GenerateToken());
    });
  }
  for (auto& thread : threads) thread.join();
  absl::flat_hash_set<std::string> seen;
  for (const auto& tokens : made) {
    for (const std::string& token : tokens) {
      EXPECT_TRUE(seen.insert(token).second) << token;
    }
  }
}

// The block a parent had drawn is copied into a forked child: the child
// must draw its own, or both would hand out the same next token.
TEST(TokenTest, AForkedChildNeverHandsOutItsParentsNextToken) {
  (void)GenerateToken();  // the parent's block is filled
  int fds[2];
  ASSERT_EQ(pipe(fds), 0);
  const pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    const std::string token = GenerateToken();
    const ssize_t n = write(fds[1], token.data(), token.size());
    _exit(n == static_cast<ssize_t>(token.size()) ? 0 : 1);
  }
  close(fds[1]);
  const std::string parents = GenerateToken();
  char buf[64] = {};
  const ssize_t n = read(fds[0], buf, sizeof(buf));
  close(fds[0]);
  int status = 0;
  ASSERT_EQ(waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  ASSERT_EQ(n, static_cast<ssize_t>(kTokenLength));
  EXPECT_NE(std::string(buf, static_cast<size_t>(n)), parents);
}

TEST(TokenTest, HashIsSha256) {
  // FIPS 180-2 test vectors.
  EXPECT_EQ(TokenHashHex(HashToken("abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(TokenHashHex(HashToken("")),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
}

TEST(TokenTest, DifferentTokensHashDifferently) {
  const std::string a = GenerateToken();
  const std::string b = GenerateToken();
  EXPECT_NE(HashToken(a), HashToken(b));
  EXPECT_EQ(HashToken(a), HashToken(a));
}

TEST(TokenTest, LooksLikeTokenRejectsMalformed) {
  const std::string good = GenerateToken();
  EXPECT_FALSE(LooksLikeToken(""));
  EXPECT_FALSE(LooksLikeToken(good.substr(0, 42)));
  EXPECT_FALSE(LooksLikeToken(good + "A"));
  std::string plus = good;
  plus[5] = '+';
  EXPECT_FALSE(LooksLikeToken(plus));
  std::string pad = good;
  pad[42] = '=';
  EXPECT_FALSE(LooksLikeToken(pad));
  std::string nul = good;
  nul[0] = '\0';
  EXPECT_FALSE(LooksLikeToken(nul));
}

TEST(TokenTest, HashBytesRoundTrip) {
  const TokenHash hash = HashToken("x");
  std::optional<TokenHash> back = TokenHashFromBytes(TokenHashBytes(hash));
  ASSERT_TRUE(back.has_value());
  EXPECT_EQ(*back, hash);
  EXPECT_FALSE(TokenHashFromBytes("short").has_value());
  EXPECT_FALSE(TokenHashFromBytes(std::string(33, 'a')).has_value());
}

}  // namespace
}  // namespace sessiond::storage
