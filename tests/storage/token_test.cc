// Copyright sessiond authors. Licensed under the Apache License 2.0.
#include "storage/token.h"

#include <string>

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
