// Copyright sessiond authors. Licensed under the Apache License 2.0.
//
// Prints, as one JSON object on stdout, JWTs signed by sessiond's code and
// the JWKS that publishes their keys, for tests/python/jwt_interop_test.py
// to verify with PyJWT as an app server would:
//   jwks           {"keys":[active, staged]}
//   token          signed by the active key, valid for an hour from now
//   claims         what `token` carries
//   expired_token  signed by the active key, expired an hour ago
//   foreign_token  signed by a key the JWKS does not hold
#include <cstdlib>
#include <ctime>
#include <iostream>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "common/signing.h"
#include "nlohmann/json.hpp"

namespace {

using sessiond::signing::Ed25519KeyPair;
using sessiond::signing::JwtClaims;
using sessiond::signing::JwtSigner;

struct Key {
  Ed25519KeyPair pair;
  std::string kid;
};

Key NewKeyOrDie() {
  absl::StatusOr<Ed25519KeyPair> pair =
      sessiond::signing::GenerateEd25519KeyPair();
  if (!pair.ok()) {
    std::cerr << pair.status() << "\n";
    std::exit(1);
  }
  absl::StatusOr<std::string> kid =
      sessiond::signing::KeyIdForPublicKey(pair->public_key);
  if (!kid.ok()) {
    std::cerr << kid.status() << "\n";
    std::exit(1);
  }
  return {*pair, *kid};
}

std::string SignOrDie(const Key& key, const JwtClaims& claims) {
  absl::StatusOr<std::unique_ptr<JwtSigner>> signer =
      JwtSigner::Create(key.kid, key.pair.private_key);
  if (!signer.ok()) {
    std::cerr << signer.status() << "\n";
    std::exit(1);
  }
  absl::StatusOr<std::string> token = (*signer)->Sign(claims);
  if (!token.ok()) {
    std::cerr << token.status() << "\n";
    std::exit(1);
  }
  return *token;
}

}  // namespace

int main() {
  const Key active = NewKeyOrDie();
  const Key staged = NewKeyOrDie();
  const Key foreign = NewKeyOrDie();
  const int64_t now = static_cast<int64_t>(std::time(nullptr));

  absl::StatusOr<std::string> jwks =
      sessiond::signing::JwksJson({{active.kid, active.pair.public_key},
                                   {staged.kid, staged.pair.public_key}});
  if (!jwks.ok()) {
    std::cerr << jwks.status() << "\n";
    return 1;
  }
  const JwtClaims claims{"sid-\xc3\xa9-1", "user-42", now, now + 3600};
  const nlohmann::json out = {
      {"jwks", nlohmann::json::parse(*jwks)},
      {"active_kid", active.kid},
      {"token", SignOrDie(active, claims)},
      {"claims",
       {{"sid", claims.sid},
        {"sub", claims.sub},
        {"iat", claims.iat},
        {"exp", claims.exp}}},
      {"expired_token",
       SignOrDie(active, {"sid-old", "user-42", now - 7200, now - 3600})},
      {"foreign_token",
       SignOrDie(foreign, {"sid-x", "user-42", now, now + 3600})},
  };
  std::cout << out.dump() << "\n";
  return 0;
}
