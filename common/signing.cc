// Copyright sessiond authors. Licensed under the Apache License 2.0.
#include "common/signing.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/sha.h>

#include <array>
#include <exception>
#include <optional>
#include <utility>

#include "absl/strings/cord.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "nlohmann/json.hpp"

namespace sessiond::signing {
namespace {

constexpr char kJwtErrorPayloadUrl[] = "type.sessiond.dev/sessiond.JwtError";
// The latest NumericDate accepted (9999-12-31T23:59:59Z): keeps
// seconds * 1000 far from overflow.
constexpr int64_t kMaxNumericDate = 253402300799;
// Bounds how much of an untrusted string goes into an error message.
constexpr size_t kMaxEchoedChars = 64;

struct PkeyDeleter {
  void operator()(EVP_PKEY* p) const { EVP_PKEY_free(p); }
};
using PkeyPtr = std::unique_ptr<EVP_PKEY, PkeyDeleter>;
struct MdCtxDeleter {
  void operator()(EVP_MD_CTX* p) const { EVP_MD_CTX_free(p); }
};
using MdCtxPtr = std::unique_ptr<EVP_MD_CTX, MdCtxDeleter>;
struct PkeyCtxDeleter {
  void operator()(EVP_PKEY_CTX* p) const { EVP_PKEY_CTX_free(p); }
};
using PkeyCtxPtr = std::unique_ptr<EVP_PKEY_CTX, PkeyCtxDeleter>;

absl::string_view AV(std::string_view s) {
  return absl::string_view(s.data(), s.size());
}

const unsigned char* Bytes(std::string_view s) {
  return reinterpret_cast<const unsigned char*>(s.data());
}

std::string Echo(std::string_view untrusted) {
  std::string_view shown = untrusted.substr(0, kMaxEchoedChars);
  std::string out = absl::CHexEscape(AV(shown));
  if (untrusted.size() > shown.size()) out += "...";
  return out;
}

absl::Status JwtFailure(absl::StatusCode code, JwtError error,
                        std::string_view message) {
  absl::Status status(code, AV(message));
  status.SetPayload(kJwtErrorPayloadUrl,
                    absl::Cord(std::to_string(static_cast<int>(error))));
  return status;
}
absl::Status Malformed(std::string_view message) {
  return JwtFailure(absl::StatusCode::kInvalidArgument, JwtError::kMalformed,
                    absl::StrCat("malformed JWT: ", AV(message)));
}

PkeyPtr PrivateKeyFromRaw(std::string_view raw) {
  if (raw.size() != kEd25519PrivateKeyBytes) return nullptr;
  return PkeyPtr(EVP_PKEY_new_raw_private_key(EVP_PKEY_ED25519, nullptr,
                                              Bytes(raw), raw.size()));
}

PkeyPtr PublicKeyFromRaw(std::string_view raw) {
  if (raw.size() != kEd25519PublicKeyBytes) return nullptr;
  return PkeyPtr(EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, nullptr,
                                             Bytes(raw), raw.size()));
}

absl::StatusOr<std::string> SignWith(EVP_PKEY* pkey, std::string_view message) {
  MdCtxPtr ctx(EVP_MD_CTX_new());
  if (ctx == nullptr ||
      EVP_DigestSignInit(ctx.get(), nullptr, nullptr, nullptr, pkey) != 1) {
    return absl::InternalError("OpenSSL: Ed25519 sign init failed");
  }
  std::string signature(kEd25519SignatureBytes, '\0');
  size_t length = signature.size();
  if (EVP_DigestSign(ctx.get(), reinterpret_cast<unsigned char*>(&signature[0]),
                     &length, Bytes(message), message.size()) != 1 ||
      length != kEd25519SignatureBytes) {
    return absl::InternalError("OpenSSL: Ed25519 sign failed");
  }
  return signature;
}

bool VerifyWith(EVP_PKEY* pkey, std::string_view message,
                std::string_view signature) {
  if (signature.size() != kEd25519SignatureBytes) return false;
  MdCtxPtr ctx(EVP_MD_CTX_new());
  if (ctx == nullptr ||
      EVP_DigestVerifyInit(ctx.get(), nullptr, nullptr, nullptr, pkey) != 1) {
    return false;
  }
  return EVP_DigestVerify(ctx.get(), Bytes(signature), signature.size(),
                          Bytes(message), message.size()) == 1;
}

// -1 for a character outside the base64url alphabet.
int Base64UrlValue(char c) {
  if (c >= 'A' && c <= 'Z') return c - 'A';
  if (c >= 'a' && c <= 'z') return c - 'a' + 26;
  if (c >= '0' && c <= '9') return c - '0' + 52;
  if (c == '-') return 62;
  if (c == '_') return 63;
  return -1;
}

// A JSON object from one decoded segment, or nullopt.
std::optional<nlohmann::json> ParseObject(std::string_view text) {
  nlohmann::json doc = nlohmann::json::parse(text.begin(), text.end(), nullptr,
                                             /*allow_exceptions=*/false);
  if (!doc.is_object()) return std::nullopt;
  return doc;
}

// A NumericDate claim: an integer in [0, kMaxNumericDate].
std::optional<int64_t> NumericDate(const nlohmann::json& claims,
                                   const char* name) {
  auto it = claims.find(name);
  if (it == claims.end()) return std::nullopt;
  if (it->is_number_unsigned()) {
    const uint64_t v = it->get<uint64_t>();
    if (v > static_cast<uint64_t>(kMaxNumericDate)) return std::nullopt;
    return static_cast<int64_t>(v);
  }
  if (it->is_number_integer()) {
    const int64_t v = it->get<int64_t>();
    if (v < 0 || v > kMaxNumericDate) return std::nullopt;
    return v;
  }
  return std::nullopt;
}

std::optional<std::string> StringClaim(const nlohmann::json& obj,
                                       const char* name) {
  auto it = obj.find(name);
  if (it == obj.end() || !it->is_string()) return std::nullopt;
  return it->get<std::string>();
}

}  // namespace

std::string Base64UrlEncode(std::string_view bytes) {
  // absl's WebSafeBase64Escape is base64url without padding.
  return absl::WebSafeBase64Escape(
      absl::string_view(bytes.data(), bytes.size()));
}

absl::StatusOr<std::string> Base64UrlDecode(std::string_view text) {
  if (text.size() % 4 == 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("not base64url: a length of ", text.size(),
                     " characters cannot encode whole bytes"));
  }
  std::string out;
  out.reserve(text.size() * 3 / 4);
  uint32_t bits = 0;
  int nbits = 0;
  for (size_t i = 0; i < text.size(); ++i) {
    const int v = Base64UrlValue(text[i]);
    if (v < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("not base64url: character ", i, " is '",
                       absl::CHexEscape(AV(text.substr(i, 1))),
                       "' (only A-Z a-z 0-9 - _ without padding)"));
    }
    bits = (bits << 6) | static_cast<uint32_t>(v);
    nbits += 6;
    if (nbits >= 8) {
      nbits -= 8;
      out.push_back(static_cast<char>((bits >> nbits) & 0xff));
    }
  }
  if ((bits & ((1u << nbits) - 1)) != 0) {
    return absl::InvalidArgumentError(
        "not base64url: the last character has unused bits set (not the "
        "canonical encoding)");
  }
  return out;
}

absl::StatusOr<Ed25519KeyPair> GenerateEd25519KeyPair() {
  PkeyCtxPtr ctx(EVP_PKEY_CTX_new_id(EVP_PKEY_ED25519, nullptr));
  EVP_PKEY* raw = nullptr;
  if (ctx == nullptr || EVP_PKEY_keygen_init(ctx.get()) != 1 ||
      EVP_PKEY_keygen(ctx.get(), &raw) != 1) {
    return absl::InternalError("OpenSSL: Ed25519 key generation failed");
  }
  PkeyPtr pkey(raw);
  Ed25519KeyPair pair;
  pair.public_key.resize(kEd25519PublicKeyBytes);
  pair.private_key.resize(kEd25519PrivateKeyBytes);
  size_t public_length = pair.public_key.size();
  size_t private_length = pair.private_key.size();
  if (EVP_PKEY_get_raw_public_key(
          pkey.get(), reinterpret_cast<unsigned char*>(&pair.public_key[0]),
          &public_length) != 1 ||
      EVP_PKEY_get_raw_private_key(
          pkey.get(), reinterpret_cast<unsigned char*>(&pair.private_key[0]),
          &private_length) != 1 ||
      public_length != kEd25519PublicKeyBytes ||
      private_length != kEd25519PrivateKeyBytes) {
    OPENSSL_cleanse(&pair.private_key[0], pair.private_key.size());
    return absl::InternalError("OpenSSL: cannot export the Ed25519 key");
  }
  return pair;
}

absl::StatusOr<std::string> Ed25519PublicKeyFromPrivate(
    std::string_view private_key) {
  PkeyPtr pkey = PrivateKeyFromRaw(private_key);
  if (pkey == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat(
        "an Ed25519 private key is 32 bytes, not ", private_key.size()));
  }
  std::string public_key(kEd25519PublicKeyBytes, '\0');
  size_t length = public_key.size();
  if (EVP_PKEY_get_raw_public_key(
          pkey.get(), reinterpret_cast<unsigned char*>(&public_key[0]),
          &length) != 1 ||
      length != kEd25519PublicKeyBytes) {
    return absl::InternalError("OpenSSL: cannot export the Ed25519 key");
  }
  return public_key;
}

absl::StatusOr<std::string> Ed25519Sign(std::string_view private_key,
                                        std::string_view message) {
  PkeyPtr pkey = PrivateKeyFromRaw(private_key);
  if (pkey == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat(
        "an Ed25519 private key is 32 bytes, not ", private_key.size()));
  }
  return SignWith(pkey.get(), message);
}

bool Ed25519Verify(std::string_view public_key, std::string_view message,
                   std::string_view signature) {
  PkeyPtr pkey = PublicKeyFromRaw(public_key);
  return pkey != nullptr && VerifyWith(pkey.get(), message, signature);
}

absl::StatusOr<std::string> KeyIdForPublicKey(std::string_view public_key) {
  if (public_key.size() != kEd25519PublicKeyBytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        "an Ed25519 public key is 32 bytes, not ", public_key.size()));
  }
  // RFC 7638 section 3.2: the required members in lexicographic order, no
  // whitespace (RFC 8037 section 2 names them for OKP keys).
  const std::string canonical =
      absl::StrCat(R"({"crv":"Ed25519","kty":"OKP","x":")",
                   Base64UrlEncode(public_key), R"("})");
  std::array<unsigned char, SHA256_DIGEST_LENGTH> digest;
  SHA256(Bytes(canonical), canonical.size(), digest.data());
  return Base64UrlEncode(std::string_view(
      reinterpret_cast<const char*>(digest.data()), digest.size()));
}

absl::StatusOr<std::string> JwkJson(const PublicSigningKey& key) {
  if (key.public_key.size() != kEd25519PublicKeyBytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        "an Ed25519 public key is 32 bytes, not ", key.public_key.size()));
  }
  try {
    const nlohmann::json jwk = {
        {"kty", "OKP"},
        {"crv", "Ed25519"},
        {"x", Base64UrlEncode(key.public_key)},
        {"kid", key.kid},
        {"use", "sig"},
        {"alg", kJwtAlgorithm},
    };
    return jwk.dump();
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(
        "cannot render the JWK of kid ", Echo(key.kid), ": ", e.what()));
  }
}

absl::StatusOr<std::string> JwksJson(
    const std::vector<PublicSigningKey>& keys) {
  try {
    nlohmann::json list = nlohmann::json::array();
    for (const PublicSigningKey& key : keys) {
      absl::StatusOr<std::string> jwk = JwkJson(key);
      if (!jwk.ok()) return jwk.status();
      list.push_back(nlohmann::json::parse(*jwk));
    }
    return nlohmann::json{{"keys", std::move(list)}}.dump();
  } catch (const std::exception& e) {
    return absl::InternalError(
        absl::StrCat("cannot render the JWKS: ", e.what()));
  }
}

JwtError JwtErrorOf(const absl::Status& status) {
  absl::optional<absl::Cord> payload = status.GetPayload(kJwtErrorPayloadUrl);
  if (!payload.has_value()) return JwtError::kNone;
  int value = 0;
  if (!absl::SimpleAtoi(std::string(*payload), &value) || value < 0 ||
      value > static_cast<int>(JwtError::kIssuedInFuture)) {
    return JwtError::kNone;
  }
  return static_cast<JwtError>(value);
}

// ---------------------------------------------------------------------------
// JwtSigner

struct JwtSigner::Key {
  PkeyPtr pkey;
  // base64url of the header: the same for every token of this key.
  std::string encoded_header;
};

JwtSigner::JwtSigner(std::string kid, std::unique_ptr<Key> key)
    : kid_(std::move(kid)), key_(std::move(key)) {}

JwtSigner::~JwtSigner() = default;

absl::StatusOr<std::unique_ptr<JwtSigner>> JwtSigner::Create(
    std::string kid, std::string_view private_key) {
  if (kid.empty()) return absl::InvalidArgumentError("the kid is empty");
  auto key = std::make_unique<Key>();
  key->pkey = PrivateKeyFromRaw(private_key);
  if (key->pkey == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat(
        "an Ed25519 private key is 32 bytes, not ", private_key.size()));
  }
  try {
    const nlohmann::json header = {
        {"alg", kJwtAlgorithm}, {"typ", "JWT"}, {"kid", kid}};
    key->encoded_header = Base64UrlEncode(header.dump());
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError(
        absl::StrCat("the kid is not valid UTF-8: ", e.what()));
  }
  return std::unique_ptr<JwtSigner>(
      new JwtSigner(std::move(kid), std::move(key)));
}

absl::StatusOr<std::string> JwtSigner::SigningInput(
    const JwtClaims& claims) const {
  if (claims.iat < 0 || claims.iat > kMaxNumericDate || claims.exp < 0 ||
      claims.exp > kMaxNumericDate) {
    return absl::InvalidArgumentError(
        absl::StrCat("iat and exp must be Unix seconds in [0, ",
                     kMaxNumericDate, "] (verifiers refuse others); got iat ",
                     claims.iat, ", exp ", claims.exp));
  }
  std::string payload;
  try {
    const nlohmann::json body = {{"sid", claims.sid},
                                 {"sub", claims.sub},
                                 {"iat", claims.iat},
                                 {"exp", claims.exp}};
    payload = body.dump();
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError(
        absl::StrCat("sid and sub must be valid UTF-8: ", e.what()));
  }
  std::string token =
      absl::StrCat(key_->encoded_header, ".", Base64UrlEncode(payload));
  // The final size is known before signing.
  constexpr size_t kSignatureChars = (kEd25519SignatureBytes * 4 + 2) / 3;
  if (token.size() + 1 + kSignatureChars > kMaxJwtBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("the JWT would be longer than ", kMaxJwtBytes,
                     " bytes: shorten sid or sub"));
  }
  return token;
}

absl::Status JwtSigner::Check(const JwtClaims& claims) const {
  return SigningInput(claims).status();
}

absl::StatusOr<std::string> JwtSigner::Sign(const JwtClaims& claims) const {
  absl::StatusOr<std::string> input = SigningInput(claims);
  if (!input.ok()) return input.status();
  std::string token = *std::move(input);
  absl::StatusOr<std::string> signature = SignWith(key_->pkey.get(), token);
  if (!signature.ok()) return signature.status();
  absl::StrAppend(&token, ".", Base64UrlEncode(*signature));
  return token;
}

// ---------------------------------------------------------------------------
// JwtVerifier

struct JwtVerifier::Key {
  PkeyPtr pkey;
};

JwtVerifier::JwtVerifier(
    absl::flat_hash_map<std::string, std::unique_ptr<Key>> keys)
    : keys_(std::move(keys)) {}

JwtVerifier::~JwtVerifier() = default;

absl::StatusOr<std::unique_ptr<JwtVerifier>> JwtVerifier::Create(
    const std::vector<PublicSigningKey>& keys) {
  absl::flat_hash_map<std::string, std::unique_ptr<Key>> map;
  for (const PublicSigningKey& key : keys) {
    if (key.kid.empty()) return absl::InvalidArgumentError("a kid is empty");
    auto entry = std::make_unique<Key>();
    entry->pkey = PublicKeyFromRaw(key.public_key);
    if (entry->pkey == nullptr) {
      return absl::InvalidArgumentError(
          absl::StrCat("the public key of kid ", Echo(key.kid),
                       " is not a 32-byte Ed25519 key"));
    }
    if (!map.emplace(key.kid, std::move(entry)).second) {
      return absl::InvalidArgumentError(
          absl::StrCat("kid ", Echo(key.kid), " is given twice"));
    }
  }
  return std::unique_ptr<JwtVerifier>(new JwtVerifier(std::move(map)));
}

absl::StatusOr<VerifiedJwt> JwtVerifier::Verify(std::string_view token,
                                                int64_t now_ms,
                                                int64_t leeway_ms) const {
  if (token.size() > kMaxJwtBytes) {
    return Malformed(absl::StrCat("longer than ", kMaxJwtBytes, " bytes (",
                                  token.size(), ")"));
  }
  const std::vector<absl::string_view> pieces =
      absl::StrSplit(AV(token), absl::MaxSplits('.', 3));
  std::vector<std::string_view> segments;
  for (absl::string_view piece : pieces) {
    segments.emplace_back(piece.data(), piece.size());
  }
  if (segments.size() != 3) {
    return Malformed(absl::StrCat(
        "a compact JWS has 3 dot-separated segments, this has ",
        segments.size() > 3 ? "more" : std::to_string(segments.size())));
  }

  // Every segment must be base64url (cheap and bounded); only the header
  // is parsed before the signature is checked.
  absl::StatusOr<std::string> header_text = Base64UrlDecode(segments[0]);
  if (!header_text.ok()) {
    return Malformed(absl::StrCat("header: ", header_text.status().message()));
  }
  absl::StatusOr<std::string> claims_text = Base64UrlDecode(segments[1]);
  if (!claims_text.ok()) {
    return Malformed(absl::StrCat("claims: ", claims_text.status().message()));
  }
  absl::StatusOr<std::string> signature = Base64UrlDecode(segments[2]);
  if (!signature.ok()) {
    return Malformed(absl::StrCat("signature: ", signature.status().message()));
  }

  // Header.
  std::optional<nlohmann::json> header = ParseObject(*header_text);
  if (!header.has_value()) {
    return Malformed("the header is not a JSON object");
  }
  std::optional<std::string> alg = StringClaim(*header, "alg");
  if (!alg.has_value() || *alg != kJwtAlgorithm) {
    return JwtFailure(
        absl::StatusCode::kInvalidArgument, JwtError::kBadAlgorithm,
        absl::StrCat("JWT alg is ",
                     alg.has_value() ? absl::StrCat("'", Echo(*alg), "'")
                                     : std::string("missing"),
                     "; only EdDSA is accepted"));
  }
  if (header->contains("crit")) {
    return JwtFailure(absl::StatusCode::kInvalidArgument,
                      JwtError::kBadAlgorithm,
                      "JWT header has 'crit': no critical extension is "
                      "understood (RFC 7515 section 4.1.11)");
  }
  if (header->contains("typ")) {
    std::optional<std::string> typ = StringClaim(*header, "typ");
    if (!typ.has_value() || !absl::EqualsIgnoreCase(*typ, "JWT")) {
      return Malformed("header typ is not 'JWT'");
    }
  }
  std::optional<std::string> kid = StringClaim(*header, "kid");
  if (!kid.has_value() || kid->empty()) {
    return Malformed("the header has no kid string");
  }
  auto key = keys_.find(*kid);
  if (key == keys_.end()) {
    return JwtFailure(
        absl::StatusCode::kNotFound, JwtError::kUnknownKid,
        absl::StrCat("no verifying key has kid '", Echo(*kid),
                     "': fetch the JWKS again, or the key was retired"));
  }

  // Signature.
  if (signature->size() != kEd25519SignatureBytes) {
    return Malformed(absl::StrCat("an Ed25519 signature is 64 bytes, not ",
                                  signature->size()));
  }
  const std::string_view signing_input =
      token.substr(0, segments[0].size() + 1 + segments[1].size());
  if (!VerifyWith(key->second->pkey.get(), signing_input, *signature)) {
    return JwtFailure(
        absl::StatusCode::kUnauthenticated, JwtError::kBadSignature,
        absl::StrCat("JWT signature does not verify under kid ", *kid));
  }

  // Claims, now authenticated.
  std::optional<nlohmann::json> claims = ParseObject(*claims_text);
  if (!claims.has_value()) {
    return Malformed("the claims are not a JSON object");
  }
  VerifiedJwt verified;
  verified.kid = std::move(*kid);
  std::optional<std::string> sid = StringClaim(*claims, "sid");
  std::optional<std::string> sub = StringClaim(*claims, "sub");
  std::optional<int64_t> iat = NumericDate(*claims, "iat");
  std::optional<int64_t> exp = NumericDate(*claims, "exp");
  if (!sid.has_value())
    return Malformed("claim sid is missing or not a string");
  if (!sub.has_value())
    return Malformed("claim sub is missing or not a string");
  if (!iat.has_value()) {
    return Malformed("claim iat is missing or not an integer NumericDate");
  }
  if (!exp.has_value()) {
    return Malformed("claim exp is missing or not an integer NumericDate");
  }
  if (*iat * 1000 > now_ms + leeway_ms) {
    return JwtFailure(
        absl::StatusCode::kUnauthenticated, JwtError::kIssuedInFuture,
        absl::StrCat("JWT issued in the future: iat ", *iat, " s, now ", now_ms,
                     " ms, leeway ", leeway_ms, " ms"));
  }
  if (now_ms >= *exp * 1000 + leeway_ms) {
    return JwtFailure(absl::StatusCode::kUnauthenticated, JwtError::kExpired,
                      absl::StrCat("JWT expired: exp ", *exp, " s, now ",
                                   now_ms, " ms, leeway ", leeway_ms, " ms"));
  }
  verified.claims.sid = std::move(*sid);
  verified.claims.sub = std::move(*sub);
  verified.claims.iat = *iat;
  verified.claims.exp = *exp;
  return verified;
}

}  // namespace sessiond::signing
