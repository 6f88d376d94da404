// Copyright sessiond authors. Licensed under the Apache License 2.0.
//
// ListUserSessions page tokens (server/page_token.h): whatever a client
// sends back, Decode refuses it or names a session_id, and only a token
// this codec made for the same query decodes.
#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/strings/string_view.h"
#include "server/page_token.h"
#include "tests/fuzz/fuzz_check.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const absl::string_view input(reinterpret_cast<const char*>(data), size);
  static const sessiond::server::PageTokenCodec codec(42);
  for (const bool revoked : {false, true}) {
    const sessiond::server::PageQuery query{"alice", revoked};
    auto after = codec.Decode(query, input);
    if (after.ok()) {
      // A token that decodes is the one the codec makes for that position.
      FUZZ_CHECK(codec.Encode(query, *after) == input);
    }
  }
  // Any session id a listing can return (1..255 bytes) round-trips.
  if (!input.empty() && input.size() <= 255) {
    const sessiond::server::PageQuery query{"bob", false};
    const std::string token = codec.Encode(query, input);
    auto back = codec.Decode(query, token);
    FUZZ_CHECK(back.ok() && *back == input);
  }
  return 0;
}
