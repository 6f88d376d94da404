// Copyright sessiond authors. Licensed under the Apache License 2.0.
//
// JWTs as sessiond and app servers verify them (common/signing.h). Three
// modes, by the first byte:
//   'T' + bytes   the rest is a token: framing, base64url, the header, the
//                 signature check (against a fixed key);
//   'H' + bytes   the rest is a header (any bytes), signed with the fixed
//                 key over fixed claims, so the header checks run past the
//                 signature on every input: a token verifies only when its
//                 header, read on its own, names EdDSA and the key's kid,
//                 without "crit" ("KID" in the input stands for that kid);
//   other         the input is a claims payload (any bytes), signed with the
//                 fixed key under a real header, so the claims parser runs
//                 on every input (it only runs once a signature verified).
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "absl/strings/str_replace.h"
#include "common/signing.h"
#include "nlohmann/json.hpp"
#include "tests/fuzz/fuzz_check.h"

namespace {

namespace signing = sessiond::signing;

struct Fixture {
  std::string private_key = std::string(32, '\x2a');
  std::string header;  // base64url, from a token the signer made
  std::string kid;
  std::unique_ptr<signing::JwtVerifier> verifier;

  Fixture() {
    const std::string public_key =
        *signing::Ed25519PublicKeyFromPrivate(private_key);
    kid = *signing::KeyIdForPublicKey(public_key);
    auto signer = *signing::JwtSigner::Create(kid, private_key);
    const std::string token =
        *signer->Sign({.sid = "s", .sub = "u", .iat = 1, .exp = 2});
    header = token.substr(0, token.find('.'));
    verifier = *signing::JwtVerifier::Create({{kid, public_key}});
  }
};

const Fixture& TheFixture() {
  static const Fixture* fixture = new Fixture();
  return *fixture;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const Fixture& f = TheFixture();
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  constexpr int64_t kNowMs = 1'700'000'000'000;
  if (!input.empty() && input[0] == 'T') {
    auto verified = f.verifier->Verify(input.substr(1), kNowMs, 0);
    // Nothing but the fixed key's tokens verifies, and only with its
    // header (an altered header breaks the signature).
    if (verified.ok()) FUZZ_CHECK(input.substr(1, f.header.size()) == f.header);
    return 0;
  }
  if (!input.empty() && input[0] == 'H') {
    // "KID" stands for the fixed key's kid (43 characters a mutation
    // would not find).
    const std::string header_text =
        absl::StrReplaceAll(std::string(input.substr(1)), {{"KID", f.kid}});
    const std::string signing_input =
        signing::Base64UrlEncode(header_text) + "." +
        signing::Base64UrlEncode(
            R"({"sid":"s","sub":"u","iat":1700000000,"exp":1800000000})");
    auto signature = signing::Ed25519Sign(f.private_key, signing_input);
    FUZZ_CHECK(signature.ok());
    auto verified = f.verifier->Verify(
        signing_input + "." + signing::Base64UrlEncode(*signature), kNowMs, 0);
    if (verified.ok()) {
      const nlohmann::json header = nlohmann::json::parse(
          header_text, /*cb=*/nullptr, /*allow_exceptions=*/false);
      FUZZ_CHECK(header.is_object());
      FUZZ_CHECK(header.contains("alg") && header["alg"] == "EdDSA");
      FUZZ_CHECK(header.contains("kid") && header["kid"] == f.kid);
      FUZZ_CHECK(!header.contains("crit"));
    }
    return 0;
  }
  const std::string signing_input =
      f.header + "." + signing::Base64UrlEncode(input);
  auto signature = signing::Ed25519Sign(f.private_key, signing_input);
  FUZZ_CHECK(signature.ok());
  const std::string token =
      signing_input + "." + signing::Base64UrlEncode(*signature);
  auto verified = f.verifier->Verify(token, kNowMs, 0);
  if (verified.ok()) {
    // Claims that pass are what a signer would have written.
    FUZZ_CHECK(verified->claims.iat >= 0 && verified->claims.exp >= 0);
  }
  return 0;
}
