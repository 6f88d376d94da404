// Copyright sessiond authors. Licensed under the Apache License 2.0.
//
// What a token costs to issue and to check locally (issue 7: "JWT issue and
// local verify per second against opaque tokens"):
//   BM_IssueOpaqueToken  storage::GenerateToken + HashToken (what a create
//                        does today: 32 random bytes, base64url, SHA-256)
//   BM_IssueJwt          JwtSigner::Sign (Ed25519) of sid, sub, iat, exp
//   BM_VerifyJwt         JwtVerifier::Verify against a ring of 3 keys, as
//                        an app server does without asking the store
//   BM_HashOpaqueToken   HashToken alone: the local part of an opaque
//                        validation (the rest is a lookup in the store)
// Run: build-release/tests/common/signing_bench
#include <memory>
#include <string>
#include <vector>

#include "benchmark/benchmark.h"
#include "common/signing.h"
#include "storage/token.h"

namespace sessiond::signing {
namespace {

constexpr int64_t kNowS = 1'800'000'000;

struct Ring {
  std::unique_ptr<JwtSigner> signer;
  std::unique_ptr<JwtVerifier> verifier;
};

Ring MakeRing() {
  std::vector<PublicSigningKey> keys;
  Ring ring;
  for (int i = 0; i < 3; ++i) {
    Ed25519KeyPair pair = *GenerateEd25519KeyPair();
    const std::string kid = *KeyIdForPublicKey(pair.public_key);
    keys.push_back({kid, pair.public_key});
    if (i == 1) ring.signer = *JwtSigner::Create(kid, pair.private_key);
  }
  ring.verifier = *JwtVerifier::Create(keys);
  return ring;
}

const JwtClaims kClaims{"AAAAAAAAAAAAAAAAAAAAAA", "user-1234567", kNowS,
                        kNowS + 3600};

void BM_IssueOpaqueToken(benchmark::State& state) {
  for (auto _ : state) {
    std::string token = storage::GenerateToken();
    storage::TokenHash hash = storage::HashToken(token);
    benchmark::DoNotOptimize(token);
    benchmark::DoNotOptimize(hash);
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_IssueOpaqueToken);

void BM_IssueJwt(benchmark::State& state) {
  const Ring ring = MakeRing();
  for (auto _ : state) {
    absl::StatusOr<std::string> token = ring.signer->Sign(kClaims);
    benchmark::DoNotOptimize(token);
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_IssueJwt);

void BM_VerifyJwt(benchmark::State& state) {
  const Ring ring = MakeRing();
  const std::string token = *ring.signer->Sign(kClaims);
  int64_t failures = 0;
  for (auto _ : state) {
    absl::StatusOr<VerifiedJwt> verified =
        ring.verifier->Verify(token, kNowS * 1000, 0);
    if (!verified.ok()) ++failures;
    benchmark::DoNotOptimize(verified);
  }
  if (failures > 0) state.SkipWithError("a verification failed");
  state.SetItemsProcessed(state.iterations());
  state.counters["token_bytes"] = static_cast<double>(token.size());
}
BENCHMARK(BM_VerifyJwt);

void BM_HashOpaqueToken(benchmark::State& state) {
  const std::string token = storage::GenerateToken();
  for (auto _ : state) {
    storage::TokenHash hash = storage::HashToken(token);
    benchmark::DoNotOptimize(hash);
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_HashOpaqueToken);

}  // namespace
}  // namespace sessiond::signing

BENCHMARK_MAIN();
