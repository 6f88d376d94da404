// Copyright sessiond authors. Licensed under the Apache License 2.0.
//
// Tokens as the API receives them (storage/token.h): the shape checks, the
// hash every lookup starts with, and base64url decoding (common/signing.h).
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "common/signing.h"
#include "storage/token.h"
#include "tests/fuzz/fuzz_check.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  namespace storage = sessiond::storage;
  (void)storage::LooksLikeToken(input);
  (void)storage::LooksLikeJwt(input);
  const storage::TokenHash hash = storage::HashToken(input);
  FUZZ_CHECK(storage::TokenHashFromBytes(storage::TokenHashBytes(hash)) ==
             hash);
  (void)storage::TokenHashFromBytes(input);
  auto decoded = sessiond::signing::Base64UrlDecode(input);
  if (decoded.ok()) {
    // What decodes re-encodes to itself (no padding, no other alphabet).
    FUZZ_CHECK(sessiond::signing::Base64UrlEncode(*decoded) == input);
  }
  return 0;
}
