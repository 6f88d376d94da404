// Copyright sessiond authors. Licensed under the Apache License 2.0.
#include "storage/token.h"

#include <openssl/rand.h>
#include <openssl/sha.h>

#include "absl/strings/escaping.h"
#include "common/check.h"

namespace sessiond::storage {
namespace {

std::string RandomBase64Url(size_t bytes) {
  unsigned char buf[64];
  SESSIOND_CHECK(bytes <= sizeof(buf));
  SESSIOND_CHECK_MSG(RAND_bytes(buf, static_cast<int>(bytes)) == 1,
                     "OpenSSL RAND_bytes failed");
  // absl's WebSafeBase64Escape is base64url without padding.
  std::string out = absl::WebSafeBase64Escape(
      absl::string_view(reinterpret_cast<const char*>(buf), bytes));
  OPENSSL_cleanse(buf, bytes);
  return out;
}

bool IsBase64UrlChar(char c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
         (c >= '0' && c <= '9') || c == '-' || c == '_';
}

}  // namespace

std::string GenerateToken() { return RandomBase64Url(kTokenRandomBytes); }

std::string GenerateSessionId() {
  return RandomBase64Url(kSessionIdRandomBytes);
}

TokenHash HashToken(std::string_view token) {
  TokenHash hash;
  SHA256(reinterpret_cast<const unsigned char*>(token.data()), token.size(),
         hash.data());
  return hash;
}

bool LooksLikeJwt(std::string_view token) {
  if (token.size() > kMaxJwtTokenLength) return false;
  int dots = 0;
  size_t segment = 0;
  for (char c : token) {
    if (c == '.') {
      if (segment == 0 || ++dots > 2) return false;
      segment = 0;
    } else if (IsBase64UrlChar(c)) {
      ++segment;
    } else {
      return false;
    }
  }
  return dots == 2 && segment > 0;
}

bool LooksLikeToken(std::string_view token) {
  if (token.size() != kTokenLength) return LooksLikeJwt(token);
  for (char c : token) {
    if (!IsBase64UrlChar(c)) return false;
  }
  return true;
}

std::string TokenHashHex(const TokenHash& hash) {
  const std::string_view bytes = TokenHashBytes(hash);
  return absl::BytesToHexString(absl::string_view(bytes.data(), bytes.size()));
}

}  // namespace sessiond::storage
