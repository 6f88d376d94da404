// Copyright sessiond authors. Licensed under the Apache License 2.0.
//
// Ed25519 signing keys and the JWTs sessiond can issue instead of opaque
// tokens (issue 7, "Signing keys that cannot lock users out"), through
// OpenSSL 3's EVP interface.
//
// Formats (RFC 7515, 7517, 7519, 7638, 8037):
//   JWT     base64url(header) "." base64url(claims) "." base64url(signature),
//           base64url without padding;
//           header {"alg":"EdDSA","typ":"JWT","kid":<kid>},
//           claims {"sid":..,"sub":..,"iat":<s>,"exp":<s>} (Unix seconds);
//           signature: Ed25519 over the first two segments and the dot.
//   kid     the RFC 7638 thumbprint of the public key: base64url of the
//           SHA-256 of {"crv":"Ed25519","kty":"OKP","x":<base64url key>}
//           (43 characters). Derived, so the same key always has the same
//           kid and two keys cannot share one.
//   JWK     {"kty":"OKP","crv":"Ed25519","x":..,"kid":..,"use":"sig",
//           "alg":"EdDSA"}; JWKS {"keys":[JWK, ...]}.
//
// Untrusted input is parsed within bounds: at most kMaxJwtBytes, three
// segments, strict base64url, JSON objects of the expected shape. Nothing
// here throws (nlohmann-json's exceptions are caught) and nothing logs;
// private keys appear only in the Ed25519KeyPair a caller asked for.
#ifndef SESSIOND_COMMON_SIGNING_H_
#define SESSIOND_COMMON_SIGNING_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace sessiond::signing {

inline constexpr size_t kEd25519PublicKeyBytes = 32;
inline constexpr size_t kEd25519PrivateKeyBytes = 32;
inline constexpr size_t kEd25519SignatureBytes = 64;
inline constexpr size_t kKidLength = 43;  // base64url of a SHA-256, no pad
// A longer token is refused before any parsing.
inline constexpr size_t kMaxJwtBytes = 8 * 1024;
inline constexpr char kJwtAlgorithm[] = "EdDSA";

// Raw keys (RFC 8032): 32 bytes each. The private half is a secret: never
// log it, seal it (common/key_encryption.h) before it is stored.
struct Ed25519KeyPair {
  std::string public_key;
  std::string private_key;
};

// A new key pair from OpenSSL's CSPRNG. Internal when OpenSSL fails.
absl::StatusOr<Ed25519KeyPair> GenerateEd25519KeyPair();

// The public half of a raw private key. InvalidArgument unless 32 bytes.
absl::StatusOr<std::string> Ed25519PublicKeyFromPrivate(
    std::string_view private_key);

// Raw Ed25519 over `message` (no JWT framing); exposed for the RFC 8032 and
// RFC 8037 test vectors. Sign: InvalidArgument for a key that is not 32
// bytes. Verify: true only for a valid signature under a valid key.
absl::StatusOr<std::string> Ed25519Sign(std::string_view private_key,
                                        std::string_view message);
bool Ed25519Verify(std::string_view public_key, std::string_view message,
                   std::string_view signature);

// The kid of a public key (format above). InvalidArgument unless 32 bytes.
absl::StatusOr<std::string> KeyIdForPublicKey(std::string_view public_key);

// base64url without padding, and its strict inverse: only the alphabet
// A-Z a-z 0-9 - _, no padding, no length that cannot be one, and unused
// trailing bits zero (so one byte string has exactly one encoding).
std::string Base64UrlEncode(std::string_view bytes);
absl::StatusOr<std::string> Base64UrlDecode(std::string_view text);

// What a JWT says. Times are Unix seconds (JWT NumericDate).
struct JwtClaims {
  std::string sid;  // the session id
  std::string sub;  // the user id
  int64_t iat = 0;
  int64_t exp = 0;
};

// A key that verifies: what a JWKS entry carries.
struct PublicSigningKey {
  std::string kid;
  std::string public_key;  // raw, 32 bytes
};

// One JWK as JSON text (format above). InvalidArgument unless the key is 32
// bytes.
absl::StatusOr<std::string> JwkJson(const PublicSigningKey& key);
// {"keys":[...]} in the order given. InvalidArgument as for JwkJson.
absl::StatusOr<std::string> JwksJson(const std::vector<PublicSigningKey>& keys);

// Signs JWTs with one private key. Thread-safe: Sign may be called
// concurrently (each call uses its own EVP_MD_CTX over the shared,
// read-only EVP_PKEY). Immutable after Create().
class JwtSigner {
 public:
  // InvalidArgument when `private_key` is not 32 bytes or `kid` is empty.
  // The kid is written as given; derive it with KeyIdForPublicKey.
  static absl::StatusOr<std::unique_ptr<JwtSigner>> Create(
      std::string kid, std::string_view private_key);
  ~JwtSigner();
  JwtSigner(const JwtSigner&) = delete;
  JwtSigner& operator=(const JwtSigner&) = delete;

  const std::string& kid() const { return kid_; }

  // The compact JWT. InvalidArgument when it would exceed kMaxJwtBytes, when
  // sid or sub is not UTF-8, or when iat or exp is negative or past year
  // 9999 (tokens a verifier would refuse); Internal when OpenSSL fails.
  absl::StatusOr<std::string> Sign(const JwtClaims& claims) const;
  // Sign's checks of `claims` (InvalidArgument as Sign), without signing:
  // cheap enough to ask before a request is admitted.
  absl::Status Check(const JwtClaims& claims) const;

 private:
  struct Key;
  JwtSigner(std::string kid, std::unique_ptr<Key> key);
  // The header and claims, encoded and checked: what Sign signs.
  absl::StatusOr<std::string> SigningInput(const JwtClaims& claims) const;

  const std::string kid_;
  const std::unique_ptr<Key> key_;
};

// Why a JWT was refused, for callers that act on the reason (an expired
// token and a forged one are answered differently). Carried as a payload
// of the status Verify returns; read it back with JwtErrorOf.
enum class JwtError {
  kNone = 0,        // not a JWT verification failure
  kMalformed,       // InvalidArgument: size, segments, base64, JSON, claims
  kBadAlgorithm,    // InvalidArgument: alg is not EdDSA (or crit present)
  kUnknownKid,      // NotFound: no verifying key has that kid
  kBadSignature,    // Unauthenticated
  kExpired,         // Unauthenticated: now >= exp + leeway
  kIssuedInFuture,  // Unauthenticated: iat > now + leeway
};
JwtError JwtErrorOf(const absl::Status& status);

// A JWT that verified.
struct VerifiedJwt {
  std::string kid;
  JwtClaims claims;
};

// Verifies JWTs against a set of public keys by kid: what an app server
// does with the JWKS, and what sessiond does itself. Thread-safe; immutable
// after Create().
class JwtVerifier {
 public:
  // InvalidArgument for a key that is not 32 bytes, an empty kid, or a kid
  // given twice.
  static absl::StatusOr<std::unique_ptr<JwtVerifier>> Create(
      const std::vector<PublicSigningKey>& keys);
  ~JwtVerifier();
  JwtVerifier(const JwtVerifier&) = delete;
  JwtVerifier& operator=(const JwtVerifier&) = delete;

  // Checks, in this order: size, segments, base64url of each, header (alg
  // EdDSA, typ JWT if present, kid known, no crit), signature, claims (sid
  // and sub strings, iat and exp integers), iat <= now + leeway, now < exp
  // + leeway (times in ms, compared with the claims' seconds * 1000). The
  // claims are parsed only once the signature verified. The error's code
  // and JwtErrorOf say which check failed; its message says how.
  absl::StatusOr<VerifiedJwt> Verify(std::string_view token, int64_t now_ms,
                                     int64_t leeway_ms) const;

 private:
  struct Key;
  explicit JwtVerifier(
      absl::flat_hash_map<std::string, std::unique_ptr<Key>> keys);

  const absl::flat_hash_map<std::string, std::unique_ptr<Key>> keys_;
};

}  // namespace sessiond::signing

#endif  // SESSIOND_COMMON_SIGNING_H_
