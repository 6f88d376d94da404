// Copyright sessiond authors. Licensed under the Apache License 2.0.
#include "storage/token.h"

#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <openssl/sha.h>
#include <pthread.h>

#include <atomic>
#include <cstdint>
#include <cstring>

#include "absl/strings/escaping.h"
#include "common/check.h"

namespace sessiond::storage {
namespace {

// Random bytes for tokens and session ids, drawn from OpenSSL's DRBG a block
// at a time. Each RAND_bytes call pays OpenSSL 3's fixed cost (fetching and
// locking the thread's DRBG) of more than a microsecond, twice per session:
// 6% of the node's CPU under batched creates (`perf`, docs/PERFORMANCE.md).
// One call per block hands out 21 sessions' worth instead. The bytes are the
// DRBG's all the same; each is wiped as it is handed out. A fork discards
// every block, so a child never hands out its parent's next tokens.
class RandomPool {
 public:
  RandomPool() = default;
  RandomPool(const RandomPool&) = delete;
  RandomPool& operator=(const RandomPool&) = delete;
  ~RandomPool() { OPENSSL_cleanse(block_, sizeof(block_)); }

  void Take(unsigned char* out, size_t n) {
    SESSIOND_CHECK(n <= sizeof(block_));
    const uint64_t forks = forks_.load(std::memory_order_acquire);
    if (forks != forks_seen_ || sizeof(block_) - used_ < n) Refill(forks);
    std::memcpy(out, block_ + used_, n);
    OPENSSL_cleanse(block_ + used_, n);
    used_ += n;
  }

 private:
  void Refill(uint64_t forks) {
    static const bool registered = [] {
      return pthread_atfork(nullptr, nullptr, [] {
               forks_.fetch_add(1, std::memory_order_release);
             }) == 0;
    }();
    SESSIOND_CHECK_MSG(registered, "pthread_atfork failed");
    SESSIOND_CHECK_MSG(RAND_bytes(block_, sizeof(block_)) == 1,
                       "OpenSSL RAND_bytes failed");
    used_ = 0;
    forks_seen_ = forks;
  }

  // Counts forks in the child: a block filled before one is not used after.
  static inline std::atomic<uint64_t> forks_{0};

  unsigned char block_[1024];
  size_t used_ = sizeof(block_);
  uint64_t forks_seen_ = 0;
};

std::string RandomBase64Url(size_t bytes) {
  thread_local RandomPool pool;
  unsigned char buf[64];
  SESSIOND_CHECK(bytes <= sizeof(buf));
  pool.Take(buf, bytes);
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
