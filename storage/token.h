// Copyright sessiond authors. Licensed under the Apache License 2.0.
#ifndef SESSIOND_STORAGE_TOKEN_H_
#define SESSIOND_STORAGE_TOKEN_H_

#include <array>
#include <cstdint>
#include <cstring>
#include <optional>
#include <string>
#include <string_view>

namespace sessiond::storage {

// The SHA-256 of a token: the only form in which a token is kept, in memory
// and on disk. A fixed 32-byte array (not a std::string) so that it sits
// inline in hash-map keys without a heap allocation.
using TokenHash = std::array<uint8_t, 32>;

inline constexpr size_t kTokenRandomBytes = 32;
inline constexpr size_t kTokenLength = 43;  // base64url of 32 bytes, no pad
inline constexpr size_t kSessionIdRandomBytes = 16;
inline constexpr size_t kSessionIdLength = 22;  // base64url of 16 bytes

// A new bearer token: 32 bytes from OpenSSL RAND_bytes, base64url without
// padding (43 characters). Aborts (SESSIOND_CHECK) if the CSPRNG fails:
// handing out a guessable token is worse than stopping.
std::string GenerateToken();

// A new public session id: 16 random bytes, base64url without padding (22
// characters). Not secret, but unguessable so ids cannot be enumerated.
std::string GenerateSessionId();

// SHA-256 of the token's characters as given.
TokenHash HashToken(std::string_view token);

// True when `token` is 43 characters of the base64url alphabet
// (A-Z a-z 0-9 - _), or has a JWT's shape (LooksLikeJwt). A cheap filter
// before hashing; says nothing about whether the token exists.
bool LooksLikeToken(std::string_view token);
// The longest JWT token accepted (common/signing.h's kMaxJwtBytes).
inline constexpr size_t kMaxJwtTokenLength = 8 * 1024;
// Three non-empty base64url segments joined by two dots, at most
// kMaxJwtTokenLength characters: a JWT token (CreateSession token_format
// JWT). The signature is not checked: the store knows a token by its hash.
bool LooksLikeJwt(std::string_view token);

// The hash as raw bytes (for protobuf `bytes` fields and RocksDB keys).
inline std::string_view TokenHashBytes(const TokenHash& hash) {
  return std::string_view(reinterpret_cast<const char*>(hash.data()),
                          hash.size());
}

// nullopt unless `bytes` is exactly 32 bytes.
inline std::optional<TokenHash> TokenHashFromBytes(std::string_view bytes) {
  if (bytes.size() != 32) return std::nullopt;
  TokenHash hash;
  std::memcpy(hash.data(), bytes.data(), 32);
  return hash;
}

// Lowercase hex, for logs and test messages (a hash is not a secret).
std::string TokenHashHex(const TokenHash& hash);

// Hash functor for maps keyed by TokenHash: the bytes are already uniformly
// random (SHA-256), so a 64-bit slice of them is a good hash.
struct TokenHashHasher {
  size_t operator()(const TokenHash& hash) const {
    uint64_t h;
    std::memcpy(&h, hash.data() + 8, sizeof(h));
    return static_cast<size_t>(h);
  }
};

}  // namespace sessiond::storage

#endif  // SESSIOND_STORAGE_TOKEN_H_
