// Copyright sessiond authors. Licensed under the Apache License 2.0.
#include "common/signing.h"

#include <atomic>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace sessiond::signing {
namespace {

constexpr int64_t kNowS = 1'800'000'000;
constexpr int64_t kNowMs = kNowS * 1000;

std::string Hex(std::string_view hex) {
  return absl::HexStringToBytes(absl::string_view(hex.data(), hex.size()));
}

std::string B64(std::string_view bytes) { return Base64UrlEncode(bytes); }

std::string Unb64(std::string_view text) {
  absl::StatusOr<std::string> bytes = Base64UrlDecode(text);
  EXPECT_TRUE(bytes.ok()) << bytes.status();
  return bytes.ok() ? *bytes : std::string();
}

std::vector<std::string> Segments(const std::string& token) {
  return absl::StrSplit(token, '.');
}

struct TestKey {
  Ed25519KeyPair pair;
  std::string kid;
};

TestKey NewKey() {
  absl::StatusOr<Ed25519KeyPair> pair = GenerateEd25519KeyPair();
  EXPECT_TRUE(pair.ok()) << pair.status();
  absl::StatusOr<std::string> kid = KeyIdForPublicKey(pair->public_key);
  EXPECT_TRUE(kid.ok()) << kid.status();
  return {*pair, *kid};
}

// A token with any header and claims, correctly signed by `key`: reaches
// the checks after the signature.
std::string Forge(const std::string& header, const std::string& claims,
                  const TestKey& key) {
  const std::string input = absl::StrCat(B64(header), ".", B64(claims));
  absl::StatusOr<std::string> signature =
      Ed25519Sign(key.pair.private_key, input);
  EXPECT_TRUE(signature.ok()) << signature.status();
  return absl::StrCat(input, ".", B64(*signature));
}

std::string HeaderOf(const TestKey& key) {
  return nlohmann::json{{"alg", "EdDSA"}, {"typ", "JWT"}, {"kid", key.kid}}
      .dump();
}

std::string ClaimsJson(int64_t iat, int64_t exp) {
  return nlohmann::json{
      {"sid", "s1"}, {"sub", "alice"}, {"iat", iat}, {"exp", exp}}
      .dump();
}

class SigningTest : public ::testing::Test {
 protected:
  void SetUp() override {
    key_ = NewKey();
    other_ = NewKey();
    absl::StatusOr<std::unique_ptr<JwtSigner>> signer =
        JwtSigner::Create(key_.kid, key_.pair.private_key);
    ASSERT_TRUE(signer.ok()) << signer.status();
    signer_ = *std::move(signer);
    absl::StatusOr<std::unique_ptr<JwtVerifier>> verifier =
        JwtVerifier::Create({{key_.kid, key_.pair.public_key},
                             {other_.kid, other_.pair.public_key}});
    ASSERT_TRUE(verifier.ok()) << verifier.status();
    verifier_ = *std::move(verifier);
  }

  std::string SignNow() {
    absl::StatusOr<std::string> token =
        signer_->Sign({"s1", "alice", kNowS, kNowS + 3600});
    EXPECT_TRUE(token.ok()) << token.status();
    return token.ok() ? *token : std::string();
  }

  // Expects `token` refused with `code` and `error`, and returns the
  // message.
  std::string ExpectRefused(const std::string& token, absl::StatusCode code,
                            JwtError error, int64_t now_ms = kNowMs,
                            int64_t leeway_ms = 0) {
    absl::StatusOr<VerifiedJwt> verified =
        verifier_->Verify(token, now_ms, leeway_ms);
    EXPECT_FALSE(verified.ok()) << token;
    if (verified.ok()) return "";
    EXPECT_EQ(verified.status().code(), code) << verified.status();
    EXPECT_EQ(JwtErrorOf(verified.status()), error) << verified.status();
    return std::string(verified.status().message());
  }

  TestKey key_;
  TestKey other_;
  std::unique_ptr<JwtSigner> signer_;
  std::unique_ptr<JwtVerifier> verifier_;
};

// RFC 8032 section 7.1, TEST 1 (empty message).
TEST(Ed25519Test, Rfc8032Vector) {
  const std::string secret =
      Hex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60");
  const std::string public_key =
      Hex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a");
  const std::string expected = Hex(
      "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb88215"
      "90a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b");
  absl::StatusOr<std::string> derived = Ed25519PublicKeyFromPrivate(secret);
  ASSERT_TRUE(derived.ok()) << derived.status();
  EXPECT_EQ(*derived, public_key);
  absl::StatusOr<std::string> signature = Ed25519Sign(secret, "");
  ASSERT_TRUE(signature.ok()) << signature.status();
  EXPECT_EQ(*signature, expected);
  EXPECT_TRUE(Ed25519Verify(public_key, "", expected));
  EXPECT_FALSE(Ed25519Verify(public_key, "x", expected));
  EXPECT_FALSE(Ed25519Verify(public_key.substr(1), "", expected));
  EXPECT_FALSE(Ed25519Verify(public_key, "", expected.substr(1)));
}

// RFC 8037 appendix A: the key (A.1, A.2), its thumbprint (A.3) and a JWS
// (A.4).
TEST(Ed25519Test, Rfc8037Vectors) {
  const std::string d = Unb64("nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A");
  const std::string x = Unb64("11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo");
  absl::StatusOr<std::string> derived = Ed25519PublicKeyFromPrivate(d);
  ASSERT_TRUE(derived.ok());
  EXPECT_EQ(*derived, x);
  absl::StatusOr<std::string> kid = KeyIdForPublicKey(x);
  ASSERT_TRUE(kid.ok());
  EXPECT_EQ(*kid, "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k");
  const std::string input =
      "eyJhbGciOiJFZERTQSJ9.RXhhbXBsZSBvZiBFZDI1NTE5IHNpZ25pbmc";
  absl::StatusOr<std::string> signature = Ed25519Sign(d, input);
  ASSERT_TRUE(signature.ok());
  EXPECT_EQ(B64(*signature),
            "hgyY0il_MGCjP0JzlnLWG1PPOt7-09PGcvMg3AIbQR6dWbhijcNR4ki4iylGjg5Bh"
            "VsPt9g7sVvpAr_MuM0KAg");
}

TEST(Ed25519Test, GeneratedPairsAreDistinctAndConsistent) {
  std::set<std::string> publics;
  for (int i = 0; i < 20; ++i) {
    absl::StatusOr<Ed25519KeyPair> pair = GenerateEd25519KeyPair();
    ASSERT_TRUE(pair.ok()) << pair.status();
    EXPECT_EQ(pair->public_key.size(), kEd25519PublicKeyBytes);
    EXPECT_EQ(pair->private_key.size(), kEd25519PrivateKeyBytes);
    absl::StatusOr<std::string> derived =
        Ed25519PublicKeyFromPrivate(pair->private_key);
    ASSERT_TRUE(derived.ok());
    EXPECT_EQ(*derived, pair->public_key);
    publics.insert(pair->public_key);
  }
  EXPECT_EQ(publics.size(), 20u);
  EXPECT_EQ(Ed25519PublicKeyFromPrivate("short").status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Ed25519Sign(std::string(31, 'k'), "m").status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(KeyIdTest, StableAndDistinct) {
  const TestKey a = NewKey();
  const TestKey b = NewKey();
  for (int i = 0; i < 3; ++i) {
    absl::StatusOr<std::string> again = KeyIdForPublicKey(a.pair.public_key);
    ASSERT_TRUE(again.ok());
    EXPECT_EQ(*again, a.kid);
  }
  EXPECT_NE(a.kid, b.kid);
  EXPECT_EQ(a.kid.size(), kKidLength);
  EXPECT_EQ(Unb64(a.kid).size(), 32u);
  EXPECT_EQ(KeyIdForPublicKey("").status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(KeyIdForPublicKey(std::string(33, 'x')).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(Base64UrlTest, RoundTripAndStrictness) {
  for (size_t n = 0; n < 70; ++n) {
    std::string bytes;
    for (size_t i = 0; i < n; ++i) bytes.push_back(static_cast<char>(i * 37));
    const std::string text = Base64UrlEncode(bytes);
    EXPECT_EQ(text.find('='), std::string::npos);
    EXPECT_EQ(Unb64(text), bytes);
  }
  for (const char* bad :
       {"ab+c", "ab/c", "abc=", "a", "abcde", "ab c", "ab.c", "AB\xff"}) {
    EXPECT_FALSE(Base64UrlDecode(bad).ok()) << bad;
  }
  // "AB" and "AC" both decode to 0x00 0x10.. only "AA"-style canonical
  // encodings are accepted: unused bits must be zero.
  EXPECT_TRUE(Base64UrlDecode("AA").ok());
  EXPECT_FALSE(Base64UrlDecode("AB").ok());
  EXPECT_FALSE(Base64UrlDecode("AAB").ok());
}

TEST_F(SigningTest, RoundTrip) {
  const std::string token = SignNow();
  absl::StatusOr<VerifiedJwt> verified = verifier_->Verify(token, kNowMs, 0);
  ASSERT_TRUE(verified.ok()) << verified.status();
  EXPECT_EQ(verified->kid, key_.kid);
  EXPECT_EQ(verified->claims.sid, "s1");
  EXPECT_EQ(verified->claims.sub, "alice");
  EXPECT_EQ(verified->claims.iat, kNowS);
  EXPECT_EQ(verified->claims.exp, kNowS + 3600);
  EXPECT_EQ(signer_->kid(), key_.kid);
  // Ed25519 is deterministic: the same claims, the same token.
  EXPECT_EQ(SignNow(), token);
}

TEST_F(SigningTest, TokenShape) {
  const std::vector<std::string> parts = Segments(SignNow());
  ASSERT_EQ(parts.size(), 3u);
  const nlohmann::json header = nlohmann::json::parse(Unb64(parts[0]));
  EXPECT_EQ(header, (nlohmann::json{
                        {"alg", "EdDSA"}, {"typ", "JWT"}, {"kid", key_.kid}}));
  const nlohmann::json claims = nlohmann::json::parse(Unb64(parts[1]));
  EXPECT_EQ(claims, (nlohmann::json{{"sid", "s1"},
                                    {"sub", "alice"},
                                    {"iat", kNowS},
                                    {"exp", kNowS + 3600}}));
  EXPECT_EQ(Unb64(parts[2]).size(), kEd25519SignatureBytes);
}

TEST_F(SigningTest, ClaimsWithAnyUtf8RoundTrip) {
  absl::StatusOr<std::string> token = signer_->Sign(
      {"sid\"with\\quotes", "us\xc3\xa9r \xe2\x9c\x93", kNowS, kNowS + 1});
  ASSERT_TRUE(token.ok()) << token.status();
  absl::StatusOr<VerifiedJwt> verified = verifier_->Verify(*token, kNowMs, 0);
  ASSERT_TRUE(verified.ok()) << verified.status();
  EXPECT_EQ(verified->claims.sid, "sid\"with\\quotes");
  EXPECT_EQ(verified->claims.sub, "us\xc3\xa9r \xe2\x9c\x93");
}

TEST_F(SigningTest, SignRefusesWhatCannotBeVerified) {
  absl::StatusOr<std::string> invalid_utf8 =
      signer_->Sign({"s1", "bad\xff", kNowS, kNowS + 1});
  EXPECT_EQ(invalid_utf8.status().code(), absl::StatusCode::kInvalidArgument);
  absl::StatusOr<std::string> too_long =
      signer_->Sign({"s1", std::string(kMaxJwtBytes, 'u'), kNowS, kNowS + 1});
  EXPECT_EQ(too_long.status().code(), absl::StatusCode::kInvalidArgument);
  // The longest sub that fits makes a token of at most kMaxJwtBytes that
  // verifies.
  absl::StatusOr<std::string> fits =
      signer_->Sign({"s1", std::string(5900, 'u'), kNowS, kNowS + 1});
  ASSERT_TRUE(fits.ok()) << fits.status();
  EXPECT_LE(fits->size(), kMaxJwtBytes);
  EXPECT_TRUE(verifier_->Verify(*fits, kNowMs, 0).ok());

  EXPECT_EQ(signer_->Sign({"s1", "u", -1, kNowS}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(signer_->Sign({"s1", "u", kNowS, INT64_MAX / 1000}).status().code(),
            absl::StatusCode::kInvalidArgument);

  EXPECT_FALSE(JwtSigner::Create(key_.kid, "short").ok());
  EXPECT_FALSE(JwtSigner::Create("", key_.pair.private_key).ok());
}

TEST_F(SigningTest, ExpiryAndLeeway) {
  absl::StatusOr<std::string> token =
      signer_->Sign({"s1", "alice", kNowS - 60, kNowS});
  ASSERT_TRUE(token.ok());
  // Valid up to the last millisecond before exp.
  EXPECT_TRUE(verifier_->Verify(*token, kNowMs - 1, 0).ok());
  const std::string message = ExpectRefused(
      *token, absl::StatusCode::kUnauthenticated, JwtError::kExpired);
  EXPECT_TRUE(absl::StrContains(message, "expired")) << message;
  // The leeway extends it, by exactly that much.
  EXPECT_TRUE(verifier_->Verify(*token, kNowMs + 4999, 5000).ok());
  ExpectRefused(*token, absl::StatusCode::kUnauthenticated, JwtError::kExpired,
                kNowMs + 5000, 5000);
}

TEST_F(SigningTest, IssuedInTheFutureIsRefusedBeyondTheLeeway) {
  absl::StatusOr<std::string> token =
      signer_->Sign({"s1", "alice", kNowS + 10, kNowS + 3600});
  ASSERT_TRUE(token.ok());
  ExpectRefused(*token, absl::StatusCode::kUnauthenticated,
                JwtError::kIssuedInFuture);
  EXPECT_TRUE(verifier_->Verify(*token, kNowMs, 10'000).ok());
}

TEST_F(SigningTest, SizeAndSegmentsAreCheckedFirst) {
  const std::string token = SignNow();
  ExpectRefused(std::string(kMaxJwtBytes + 1, 'a'),
                absl::StatusCode::kInvalidArgument, JwtError::kMalformed);
  const std::vector<std::string> parts = Segments(token);
  ExpectRefused(parts[0] + "." + parts[1], absl::StatusCode::kInvalidArgument,
                JwtError::kMalformed);
  ExpectRefused(token + ".x", absl::StatusCode::kInvalidArgument,
                JwtError::kMalformed);
  ExpectRefused(token + "..", absl::StatusCode::kInvalidArgument,
                JwtError::kMalformed);
  ExpectRefused("", absl::StatusCode::kInvalidArgument, JwtError::kMalformed);
  ExpectRefused("..", absl::StatusCode::kInvalidArgument, JwtError::kMalformed);
}

TEST_F(SigningTest, MalformedBase64IsRefused) {
  const std::vector<std::string> parts = Segments(SignNow());
  // Padding, the standard (not url) alphabet, a stray character.
  ExpectRefused(parts[0] + "=." + parts[1] + "." + parts[2],
                absl::StatusCode::kInvalidArgument, JwtError::kMalformed);
  ExpectRefused(parts[0] + "." + parts[1] + "." + parts[2] + "==",
                absl::StatusCode::kInvalidArgument, JwtError::kMalformed);
  std::string plus = parts[2];
  plus[3] = '+';
  ExpectRefused(parts[0] + "." + parts[1] + "." + plus,
                absl::StatusCode::kInvalidArgument, JwtError::kMalformed);
  ExpectRefused(parts[0] + "." + parts[1] + "!." + parts[2],
                absl::StatusCode::kInvalidArgument, JwtError::kMalformed);
  // A signature of the wrong length.
  ExpectRefused(parts[0] + "." + parts[1] + "." + parts[2].substr(0, 84),
                absl::StatusCode::kInvalidArgument, JwtError::kMalformed);
}

TEST_F(SigningTest, BadJsonIsRefused) {
  const std::vector<std::string> parts = Segments(SignNow());
  for (const char* header :
       {"{", "[]", "\"EdDSA\"", "{\"alg\":\"EdDSA\"", "{\"alg\":\"EdDSA\",}"}) {
    ExpectRefused(B64(header) + "." + parts[1] + "." + parts[2],
                  absl::StatusCode::kInvalidArgument, JwtError::kMalformed);
  }
  // Deep nesting within the size bound: refused, no stack exhaustion.
  const std::string deep = std::string(2500, '[') + std::string(2500, ']');
  const std::string nested = B64(deep) + "." + parts[1] + "." + parts[2];
  ASSERT_LE(nested.size(), kMaxJwtBytes);
  ExpectRefused(nested, absl::StatusCode::kInvalidArgument,
                JwtError::kMalformed);
  // Claims that are not an object, correctly signed.
  ExpectRefused(Forge(HeaderOf(key_), "[1,2]", key_),
                absl::StatusCode::kInvalidArgument, JwtError::kMalformed);
  ExpectRefused(Forge(HeaderOf(key_), "{\"sid\":", key_),
                absl::StatusCode::kInvalidArgument, JwtError::kMalformed);
}

TEST_F(SigningTest, OnlyEdDsaIsAccepted) {
  for (const nlohmann::json& header :
       {nlohmann::json{{"alg", "HS256"}, {"kid", key_.kid}},
        nlohmann::json{{"alg", "none"}, {"kid", key_.kid}},
        nlohmann::json{{"alg", "ES256"}, {"kid", key_.kid}},
        nlohmann::json{{"alg", 7}, {"kid", key_.kid}},
        nlohmann::json{{"kid", key_.kid}}}) {
    const std::string message = ExpectRefused(
        Forge(header.dump(), ClaimsJson(kNowS, kNowS + 60), key_),
        absl::StatusCode::kInvalidArgument, JwtError::kBadAlgorithm);
    EXPECT_TRUE(absl::StrContains(message, "only EdDSA")) << message;
  }
  // alg "none" with an empty signature: refused before anything else.
  ExpectRefused(
      B64(R"({"alg":"none"})") + "." + B64(ClaimsJson(kNowS, kNowS + 60)) + ".",
      absl::StatusCode::kInvalidArgument, JwtError::kBadAlgorithm);
  ExpectRefused(
      Forge(R"({"alg":"EdDSA","crit":["exp"],"kid":")" + key_.kid + "\"}",
            ClaimsJson(kNowS, kNowS + 60), key_),
      absl::StatusCode::kInvalidArgument, JwtError::kBadAlgorithm);
  ExpectRefused(
      Forge(R"({"alg":"EdDSA","typ":"JOSE+JSON","kid":")" + key_.kid + "\"}",
            ClaimsJson(kNowS, kNowS + 60), key_),
      absl::StatusCode::kInvalidArgument, JwtError::kMalformed);
  // typ is optional.
  EXPECT_TRUE(verifier_
                  ->Verify(Forge(R"({"alg":"EdDSA","kid":")" + key_.kid + "\"}",
                                 ClaimsJson(kNowS, kNowS + 60), key_),
                           kNowMs, 0)
                  .ok());
}

TEST_F(SigningTest, KidMustBeKnown) {
  ExpectRefused(Forge(R"({"alg":"EdDSA","typ":"JWT"})",
                      ClaimsJson(kNowS, kNowS + 60), key_),
                absl::StatusCode::kInvalidArgument, JwtError::kMalformed);
  ExpectRefused(
      Forge(R"({"alg":"EdDSA","kid":5})", ClaimsJson(kNowS, kNowS + 60), key_),
      absl::StatusCode::kInvalidArgument, JwtError::kMalformed);
  const TestKey stranger = NewKey();
  const std::string message = ExpectRefused(
      Forge(HeaderOf(stranger), ClaimsJson(kNowS, kNowS + 60), stranger),
      absl::StatusCode::kNotFound, JwtError::kUnknownKid);
  EXPECT_TRUE(absl::StrContains(message, stranger.kid)) << message;
  EXPECT_TRUE(absl::StrContains(message, "JWKS")) << message;
}

TEST_F(SigningTest, TamperedTokensFailTheSignature) {
  const std::string token = SignNow();
  const std::vector<std::string> parts = Segments(token);
  // Every bit of the signature.
  const std::string signature = Unb64(parts[2]);
  for (size_t i = 0; i < signature.size() * 8; ++i) {
    std::string flipped = signature;
    flipped[i / 8] = static_cast<char>(flipped[i / 8] ^ (1 << (i % 8)));
    ExpectRefused(parts[0] + "." + parts[1] + "." + B64(flipped),
                  absl::StatusCode::kUnauthenticated, JwtError::kBadSignature);
  }
  // Other claims (a later exp, another user) under the same signature.
  ExpectRefused(
      parts[0] + "." + B64(ClaimsJson(kNowS, kNowS + 999999)) + "." + parts[2],
      absl::StatusCode::kUnauthenticated, JwtError::kBadSignature);
  // The same token claimed to be from the other known key.
  ExpectRefused(B64(HeaderOf(other_)) + "." + parts[1] + "." + parts[2],
                absl::StatusCode::kUnauthenticated, JwtError::kBadSignature);
  // Signed by another key under this kid.
  ExpectRefused(Forge(HeaderOf(key_), ClaimsJson(kNowS, kNowS + 60), other_),
                absl::StatusCode::kUnauthenticated, JwtError::kBadSignature);
}

TEST_F(SigningTest, ClaimsOfTheWrongShapeAreRefused) {
  const std::string header = HeaderOf(key_);
  const std::vector<nlohmann::json> bad = {
      {{"sub", "a"}, {"iat", kNowS}, {"exp", kNowS + 60}},
      {{"sid", "s"}, {"iat", kNowS}, {"exp", kNowS + 60}},
      {{"sid", 1}, {"sub", "a"}, {"iat", kNowS}, {"exp", kNowS + 60}},
      {{"sid", "s"}, {"sub", "a"}, {"exp", kNowS + 60}},
      {{"sid", "s"}, {"sub", "a"}, {"iat", kNowS}},
      {{"sid", "s"}, {"sub", "a"}, {"iat", kNowS}, {"exp", "soon"}},
      {{"sid", "s"}, {"sub", "a"}, {"iat", kNowS}, {"exp", 1.8e9 + 0.5}},
      {{"sid", "s"}, {"sub", "a"}, {"iat", -1}, {"exp", kNowS + 60}},
      {{"sid", "s"}, {"sub", "a"}, {"iat", kNowS}, {"exp", INT64_MAX}},
      {{"sid", "s"}, {"sub", "a"}, {"iat", kNowS}, {"exp", UINT64_MAX}},
  };
  for (const nlohmann::json& claims : bad) {
    ExpectRefused(Forge(header, claims.dump(), key_),
                  absl::StatusCode::kInvalidArgument, JwtError::kMalformed);
  }
}

TEST_F(SigningTest, VerifierRefusesBadKeySets) {
  const TestKey a = NewKey();
  EXPECT_FALSE(JwtVerifier::Create({{a.kid, "short"}}).ok());
  EXPECT_FALSE(JwtVerifier::Create({{"", a.pair.public_key}}).ok());
  EXPECT_FALSE(JwtVerifier::Create(
                   {{a.kid, a.pair.public_key}, {a.kid, a.pair.public_key}})
                   .ok());
  absl::StatusOr<std::unique_ptr<JwtVerifier>> empty = JwtVerifier::Create({});
  ASSERT_TRUE(empty.ok());
  EXPECT_EQ((*empty)->Verify(SignNow(), kNowMs, 0).status().code(),
            absl::StatusCode::kNotFound);
}

TEST(JwtErrorTest, OtherStatusesCarryNone) {
  EXPECT_EQ(JwtErrorOf(absl::OkStatus()), JwtError::kNone);
  EXPECT_EQ(JwtErrorOf(absl::InvalidArgumentError("x")), JwtError::kNone);
}

TEST(JwksTest, Shape) {
  const TestKey a = NewKey();
  const TestKey b = NewKey();
  absl::StatusOr<std::string> jwks =
      JwksJson({{a.kid, a.pair.public_key}, {b.kid, b.pair.public_key}});
  ASSERT_TRUE(jwks.ok()) << jwks.status();
  const nlohmann::json doc = nlohmann::json::parse(*jwks);
  ASSERT_TRUE(doc.is_object());
  EXPECT_EQ(doc.size(), 1u);
  ASSERT_TRUE(doc["keys"].is_array());
  ASSERT_EQ(doc["keys"].size(), 2u);
  const TestKey* expected[] = {&a, &b};
  for (size_t i = 0; i < 2; ++i) {
    const nlohmann::json& jwk = doc["keys"][i];
    EXPECT_EQ(jwk.size(), 6u) << jwk.dump();
    EXPECT_EQ(jwk["kty"], "OKP");
    EXPECT_EQ(jwk["crv"], "Ed25519");
    EXPECT_EQ(jwk["use"], "sig");
    EXPECT_EQ(jwk["alg"], "EdDSA");
    EXPECT_EQ(jwk["kid"], expected[i]->kid);
    EXPECT_EQ(Unb64(jwk["x"].get<std::string>()), expected[i]->pair.public_key);
    EXPECT_FALSE(jwk.contains("d"));  // never the private key
  }
  absl::StatusOr<std::string> none = JwksJson({});
  ASSERT_TRUE(none.ok());
  EXPECT_EQ(*none, R"({"keys":[]})");
  EXPECT_EQ(JwksJson({{a.kid, "short"}}).status().code(),
            absl::StatusCode::kInvalidArgument);
  absl::StatusOr<std::string> jwk = JwkJson({a.kid, a.pair.public_key});
  ASSERT_TRUE(jwk.ok());
  EXPECT_EQ(nlohmann::json::parse(*jwk), doc["keys"][0]);
}

TEST_F(SigningTest, ConcurrentSignAndVerify) {
  constexpr int kThreads = 4;
  constexpr int kRounds = 200;
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kRounds; ++i) {
        const std::string sid = absl::StrCat("s", t, "-", i);
        absl::StatusOr<std::string> token =
            signer_->Sign({sid, "u", kNowS, kNowS + 60});
        if (!token.ok()) {
          ++failures;
          continue;
        }
        absl::StatusOr<VerifiedJwt> verified =
            verifier_->Verify(*token, kNowMs, 0);
        if (!verified.ok() || verified->claims.sid != sid) ++failures;
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  EXPECT_EQ(failures.load(), 0);
}

}  // namespace
}  // namespace sessiond::signing
