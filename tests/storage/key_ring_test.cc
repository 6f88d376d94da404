// Copyright sessiond authors. Licensed under the Apache License 2.0.
#include "storage/key_ring.h"

#include <atomic>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/key_encryption.h"
#include "common/rng.h"
#include "common/signing.h"
#include "gtest/gtest.h"

namespace sessiond::storage {
namespace {

namespace pb = ::sessiond::v1::internal;

constexpr int64_t kMaxAgeMs = 300'000;  // a 5-minute JWKS max-age
constexpr int64_t kT0 = 1'800'000'000'000;

struct TestKey {
  std::string kid;
  std::string public_key;
  std::string private_key;
  std::string sealed;
};

const KeyEncryptionKey& Kek() {
  static const KeyEncryptionKey* kek =
      new KeyEncryptionKey(*KeyEncryptionKey::FromBytes(std::string(32, 'k')));
  return *kek;
}

TestKey NewKey() {
  absl::StatusOr<signing::Ed25519KeyPair> pair =
      signing::GenerateEd25519KeyPair();
  EXPECT_TRUE(pair.ok());
  TestKey key;
  key.kid = *signing::KeyIdForPublicKey(pair->public_key);
  key.public_key = pair->public_key;
  key.private_key = pair->private_key;
  key.sealed = *Kek().Seal(pair->private_key, key.kid);
  return key;
}

pb::KeyRingCommand Stage(const TestKey& key, bool bootstrap = false) {
  pb::KeyRingCommand command;
  pb::KeyRingCommand::Stage* stage = command.mutable_stage();
  stage->set_kid(key.kid);
  stage->set_algorithm(sessiond::v1::SIGNING_ALGORITHM_ED25519);
  stage->set_public_key(key.public_key);
  stage->set_sealed_private_key(key.sealed);
  stage->set_bootstrap(bootstrap);
  return command;
}

pb::KeyRingCommand Activate(const std::string& kid,
                            uint64_t voters_applied_index) {
  pb::KeyRingCommand command;
  command.mutable_activate()->set_kid(kid);
  command.mutable_activate()->set_voters_applied_index(voters_applied_index);
  return command;
}

pb::KeyRingCommand Retire(const std::string& kid, bool force = false,
                          uint64_t expected = 0) {
  pb::KeyRingCommand command;
  command.mutable_retire()->set_kid(kid);
  command.mutable_retire()->set_force(force);
  command.mutable_retire()->set_expected_live_sessions(expected);
  return command;
}

pb::KeyRingCommand Purge(int64_t retired_before_ms) {
  pb::KeyRingCommand command;
  command.mutable_purge_retired()->set_retired_before_ms(retired_before_ms);
  return command;
}

KeyRingApplyContext At(uint64_t index, int64_t time_ms,
                       uint64_t live_sessions = 0) {
  KeyRingApplyContext context;
  context.index = index;
  context.applied_time_ms = time_ms;
  context.min_publish_ms = kMaxAgeMs;
  context.live_sessions = live_sessions;
  return context;
}

// Applies and expects success.
void Ok(KeyRing& ring, const pb::KeyRingCommand& command,
        const KeyRingApplyContext& context) {
  const absl::Status status = ring.Apply(command, context);
  ASSERT_TRUE(status.ok()) << status << "\n" << command.DebugString();
  ASSERT_TRUE(KeyRing::CheckInvariants(ring.View().state()).ok());
}

// Applies, expects `code` with `text` in the message, and the ring
// byte-identical to before. Returns the message.
std::string Refused(KeyRing& ring, const pb::KeyRingCommand& command,
                    const KeyRingApplyContext& context, absl::StatusCode code,
                    const std::string& text) {
  const std::string before = ring.Serialize();
  const absl::Status status = ring.Apply(command, context);
  EXPECT_EQ(status.code(), code) << status << "\n" << command.DebugString();
  EXPECT_TRUE(absl::StrContains(status.message(), text))
      << "'" << status.message() << "' lacks '" << text << "'";
  EXPECT_EQ(ring.Serialize(), before) << "a refusal changed the ring";
  return std::string(status.message());
}

sessiond::v1::SigningKeyState StateOf(const KeyRing& ring,
                                      const std::string& kid) {
  const KeyRingView view = ring.View();
  const pb::SigningKey* key = view.Find(kid);
  return key == nullptr ? sessiond::v1::SIGNING_KEY_STATE_UNSPECIFIED
                        : key->state();
}

std::vector<std::string> VerifyingKids(const KeyRing& ring) {
  std::vector<std::string> kids;
  for (const signing::PublicSigningKey& key : ring.View().VerifyingKeys()) {
    kids.push_back(key.kid);
  }
  return kids;
}

TEST(KeyRingTest, EmptyRing) {
  KeyRing ring;
  const KeyRingView view = ring.View();
  EXPECT_EQ(view.active(), nullptr);
  EXPECT_EQ(view.Find("x"), nullptr);
  EXPECT_TRUE(view.VerifyingKeys().empty());
  EXPECT_EQ(*view.JwksJson(), R"({"keys":[]})");
  EXPECT_EQ(view.changed_index(), 0u);
  EXPECT_TRUE(KeyRing::CheckInvariants(view.state()).ok());
}

TEST(KeyRingTest, BootstrapStagesAndActivatesInOneEntry) {
  KeyRing ring;
  const TestKey a = NewKey();
  Ok(ring, Stage(a, /*bootstrap=*/true), At(5, kT0));
  const KeyRingView view = ring.View();
  ASSERT_NE(view.active(), nullptr);
  EXPECT_EQ(view.active()->kid(), a.kid);
  EXPECT_EQ(view.active()->staged_index(), 5u);
  EXPECT_EQ(view.active()->activated_index(), 5u);
  EXPECT_EQ(view.active()->activated_at_ms(), kT0);
  EXPECT_EQ(view.changed_index(), 5u);
  EXPECT_EQ(VerifyingKids(ring), std::vector<std::string>{a.kid});
  // The sealed key in the ring opens to the private key of that kid.
  EXPECT_EQ(*Kek().Open(view.active()->sealed_private_key(), a.kid),
            a.private_key);
}

TEST(KeyRingTest, BootstrapOnlyIntoAnEmptyRing) {
  KeyRing ring;
  Ok(ring, Stage(NewKey()), At(1, kT0));
  Refused(ring, Stage(NewKey(), true), At(2, kT0),
          absl::StatusCode::kFailedPrecondition,
          "stage the key without bootstrap");
  KeyRing bootstrapped;
  Ok(bootstrapped, Stage(NewKey(), true), At(1, kT0));
  Refused(bootstrapped, Stage(NewKey(), true), At(2, kT0),
          absl::StatusCode::kFailedPrecondition, "then activate it");
}

// A ring whose keys were all staged and retired, none ever active, signed
// no token: it bootstraps like an empty one (before, it could not: the
// operator had to stage, wait out the JWKS max-age, then activate, with no
// key to sign in the meantime).
TEST(KeyRingTest, BootstrapIntoARingOfRetiredKeysThatNeverSigned) {
  KeyRing ring;
  const TestKey staged = NewKey();
  Ok(ring, Stage(staged), At(1, kT0));
  Ok(ring, Retire(staged.kid), At(2, kT0));
  ASSERT_EQ(StateOf(ring, staged.kid), sessiond::v1::SIGNING_KEY_RETIRED);
  // A JWKS with the staged key (and without a new one) may be cached for
  // the max-age after its retirement.
  Refused(ring, Stage(NewKey(), true), At(3, kT0 + kMaxAgeMs - 1),
          absl::StatusCode::kFailedPrecondition, "retry at or after");
  const TestKey first = NewKey();
  Ok(ring, Stage(first, /*bootstrap=*/true), At(3, kT0 + kMaxAgeMs));
  ASSERT_NE(ring.View().active(), nullptr);
  EXPECT_EQ(ring.View().active()->kid(), first.kid);
  EXPECT_TRUE(KeyRing::CheckInvariants(ring.View().state()).ok());
  // Once a key was active, never again: it signed tokens.
  Refused(ring, Stage(NewKey(), true), At(4, kT0 + 2 * kMaxAgeMs),
          absl::StatusCode::kFailedPrecondition, "then activate it");
}

TEST(KeyRingTest, RotationLifecycle) {
  KeyRing ring;
  const TestKey a = NewKey();
  const TestKey b = NewKey();
  Ok(ring, Stage(a, true), At(1, kT0));
  const int64_t staged_at = kT0 + 1000;
  Ok(ring, Stage(b), At(2, staged_at));
  EXPECT_EQ(StateOf(ring, b.kid), sessiond::v1::SIGNING_KEY_STAGED);
  // Published (and verifying) from the moment it is staged.
  EXPECT_EQ(VerifyingKids(ring), (std::vector<std::string>{a.kid, b.kid}));
  EXPECT_EQ(ring.View().active()->kid(), a.kid);

  // Too early: one millisecond short of the max-age.
  const std::string early =
      Refused(ring, Activate(b.kid, 2), At(3, staged_at + kMaxAgeMs - 1),
              absl::StatusCode::kFailedPrecondition, "the JWKS max-age");
  EXPECT_TRUE(absl::StrContains(
      early,
      absl::StrCat("retry at or after cluster time ", staged_at + kMaxAgeMs)))
      << early;
  // A voter has not applied the stage yet.
  Refused(ring, Activate(b.kid, 1), At(3, staged_at + kMaxAgeMs),
          absl::StatusCode::kFailedPrecondition,
          "retry once every member has caught up");

  // Both conditions met: B signs, A verifies only, in the same step.
  const int64_t activated_at = staged_at + kMaxAgeMs;
  Ok(ring, Activate(b.kid, 2), At(3, activated_at));
  EXPECT_EQ(StateOf(ring, a.kid), sessiond::v1::SIGNING_KEY_RETIRING);
  EXPECT_EQ(StateOf(ring, b.kid), sessiond::v1::SIGNING_KEY_ACTIVE);
  EXPECT_EQ(ring.View().active()->kid(), b.kid);
  EXPECT_EQ(ring.View().Find(a.kid)->retiring_at_ms(), activated_at);
  EXPECT_EQ(ring.View().Find(b.kid)->activated_index(), 3u);
  EXPECT_EQ(VerifyingKids(ring), (std::vector<std::string>{a.kid, b.kid}));

  // A still signed live sessions.
  const std::string in_use =
      Refused(ring, Retire(a.kid), At(4, activated_at, /*live=*/3),
              absl::StatusCode::kFailedPrecondition, "signed 3 live sessions");
  EXPECT_TRUE(absl::StrContains(in_use, "expected_live_sessions=3")) << in_use;
  Refused(ring, Retire(a.kid, true, 2), At(4, activated_at, 3),
          absl::StatusCode::kFailedPrecondition,
          "retry with expected_live_sessions=3");
  Refused(ring, Retire(a.kid, true, 0), At(4, activated_at, 3),
          absl::StatusCode::kFailedPrecondition,
          "retry with expected_live_sessions=3");
  // Forced with the count echoed back.
  Ok(ring, Retire(a.kid, true, 3), At(4, activated_at + 5, 3));
  const pb::SigningKey* retired = ring.View().Find(a.kid);
  ASSERT_NE(retired, nullptr);
  EXPECT_EQ(retired->state(), sessiond::v1::SIGNING_KEY_RETIRED);
  EXPECT_EQ(retired->retired_at_ms(), activated_at + 5);
  EXPECT_TRUE(retired->sealed_private_key().empty());
  EXPECT_EQ(VerifyingKids(ring), std::vector<std::string>{b.kid});

  Refused(ring, Retire(a.kid), At(5, activated_at + 6),
          absl::StatusCode::kFailedPrecondition, "already retired");

  // Purge: nothing retired that early; then A goes.
  Ok(ring, Purge(activated_at + 4), At(5, activated_at + 10));
  EXPECT_EQ(ring.View().changed_index(), 4u);  // nothing changed
  EXPECT_NE(ring.View().Find(a.kid), nullptr);
  Ok(ring, Purge(activated_at + 5), At(6, activated_at + 10));
  EXPECT_EQ(ring.View().Find(a.kid), nullptr);
  EXPECT_EQ(ring.View().changed_index(), 6u);
  EXPECT_EQ(ring.View().state().keys_size(), 1);
}

TEST(KeyRingTest, RetiringWithoutLiveSessionsNeedsNoForce) {
  KeyRing ring;
  const TestKey a = NewKey();
  const TestKey b = NewKey();
  Ok(ring, Stage(a, true), At(1, kT0));
  Ok(ring, Stage(b), At(2, kT0));
  Ok(ring, Activate(b.kid, 2), At(3, kT0 + kMaxAgeMs));
  Ok(ring, Retire(a.kid), At(4, kT0 + kMaxAgeMs, /*live=*/0));
  EXPECT_EQ(StateOf(ring, a.kid), sessiond::v1::SIGNING_KEY_RETIRED);
}

TEST(KeyRingTest, TheActiveKeyCannotBeRetired) {
  KeyRing ring;
  const TestKey a = NewKey();
  Ok(ring, Stage(a, true), At(1, kT0));
  Refused(ring, Retire(a.kid), At(2, kT0),
          absl::StatusCode::kFailedPrecondition,
          "stage and activate another key first");
  Refused(ring, Retire(a.kid, true, 0), At(2, kT0),
          absl::StatusCode::kFailedPrecondition, "is the active key");
}

TEST(KeyRingTest, OnlyStagedKeysActivate) {
  KeyRing ring;
  const TestKey a = NewKey();
  const TestKey b = NewKey();
  const TestKey c = NewKey();
  Ok(ring, Stage(a, true), At(1, kT0));
  Refused(ring, Activate(a.kid, 10), At(2, kT0 + kMaxAgeMs),
          absl::StatusCode::kFailedPrecondition, "already the active key");
  Ok(ring, Stage(b), At(2, kT0));
  Ok(ring, Activate(b.kid, 2), At(3, kT0 + kMaxAgeMs));
  Refused(ring, Activate(a.kid, 10), At(4, kT0 + 2 * kMaxAgeMs),
          absl::StatusCode::kFailedPrecondition, "is RETIRING, not STAGED");
  Ok(ring, Retire(a.kid), At(4, kT0 + kMaxAgeMs));
  Refused(ring, Activate(a.kid, 10), At(5, kT0 + 2 * kMaxAgeMs),
          absl::StatusCode::kFailedPrecondition, "stage a new key");
  // An abandoned staged key is retired without ever signing.
  Ok(ring, Stage(c), At(5, kT0));
  Ok(ring, Retire(c.kid), At(6, kT0));
  EXPECT_EQ(StateOf(ring, c.kid), sessiond::v1::SIGNING_KEY_RETIRED);
  EXPECT_EQ(ring.View().Find(c.kid)->activated_index(), 0u);
  EXPECT_EQ(ring.View().active()->kid(), b.kid);
}

TEST(KeyRingTest, FirstActivationWithoutBootstrap) {
  KeyRing ring;
  const TestKey a = NewKey();
  Ok(ring, Stage(a), At(1, kT0));
  EXPECT_EQ(ring.View().active(), nullptr);
  Refused(ring, Activate(a.kid, 1), At(2, kT0 + 1),
          absl::StatusCode::kFailedPrecondition, "the JWKS max-age");
  Ok(ring, Activate(a.kid, 1), At(2, kT0 + kMaxAgeMs));
  EXPECT_EQ(ring.View().active()->kid(), a.kid);
  EXPECT_EQ(VerifyingKids(ring), std::vector<std::string>{a.kid});
}

TEST(KeyRingTest, UnknownKid) {
  KeyRing ring;
  Ok(ring, Stage(NewKey(), true), At(1, kT0));
  const std::string message =
      Refused(ring, Activate("no-such-kid", 10), At(2, kT0 + kMaxAgeMs),
              absl::StatusCode::kNotFound, "ListKeys");
  EXPECT_TRUE(absl::StrContains(message, "no-such-kid")) << message;
  Refused(ring, Retire("no-such-kid", true, 0), At(2, kT0),
          absl::StatusCode::kNotFound, "no key has kid");
}

TEST(KeyRingTest, DuplicateKid) {
  KeyRing ring;
  const TestKey a = NewKey();
  const TestKey b = NewKey();
  Ok(ring, Stage(a, true), At(1, kT0));
  Refused(ring, Stage(a), At(2, kT0), absl::StatusCode::kAlreadyExists,
          "generate a new key pair");
  Ok(ring, Stage(b), At(2, kT0));
  Refused(ring, Stage(b), At(3, kT0), absl::StatusCode::kAlreadyExists, b.kid);
  // A retired key's kid stays taken until purged.
  Ok(ring, Retire(b.kid), At(3, kT0));
  Refused(ring, Stage(b), At(4, kT0), absl::StatusCode::kAlreadyExists, b.kid);
}

TEST(KeyRingTest, MalformedCommands) {
  KeyRing ring;
  Ok(ring, Stage(NewKey(), true), At(1, kT0));
  const TestKey k = NewKey();
  const TestKey other = NewKey();

  pb::KeyRingCommand wrong_kid = Stage(k);
  wrong_kid.mutable_stage()->set_kid(other.kid);
  Refused(ring, wrong_kid, At(2, kT0), absl::StatusCode::kInvalidArgument,
          "not the thumbprint");
  pb::KeyRingCommand short_key = Stage(k);
  short_key.mutable_stage()->set_public_key(k.public_key.substr(1));
  Refused(ring, short_key, At(2, kT0), absl::StatusCode::kInvalidArgument,
          "32 bytes");
  pb::KeyRingCommand bad_sealed = Stage(k);
  bad_sealed.mutable_stage()->set_sealed_private_key("x");
  Refused(ring, bad_sealed, At(2, kT0), absl::StatusCode::kInvalidArgument,
          "sealed private key");
  pb::KeyRingCommand no_algorithm = Stage(k);
  no_algorithm.mutable_stage()->clear_algorithm();
  Refused(ring, no_algorithm, At(2, kT0), absl::StatusCode::kInvalidArgument,
          "unsupported algorithm");
  Refused(ring, pb::KeyRingCommand(), At(2, kT0),
          absl::StatusCode::kInvalidArgument, "without an op");
  Refused(ring, Stage(k), At(0, kT0), absl::StatusCode::kInvalidArgument,
          "index 0");
}

TEST(KeyRingTest, TheRingIsBounded) {
  KeyRing ring;
  uint64_t index = 0;
  for (size_t i = 0; i < kMaxKeyRingKeys; ++i) {
    Ok(ring, Stage(NewKey(), i == 0), At(++index, kT0));
  }
  Refused(ring, Stage(NewKey()), At(++index, kT0),
          absl::StatusCode::kResourceExhausted,
          "none is retired: retire keys no longer needed first");
}

// Nothing proposes PurgeRetired, so retired keys used to fill the ring:
// after 32 keys every StageKey was refused for good, an emergency rotation
// of a leaked key included. Staging into a full ring forgets the oldest
// retired key instead, on every replica alike.
TEST(KeyRingTest, RotationsGoOnPastTheBound) {
  KeyRing ring;
  uint64_t index = 0;
  int64_t now = kT0;
  TestKey active = NewKey();
  Ok(ring, Stage(active, true), At(++index, now));
  std::vector<std::string> retired;
  for (size_t round = 0; round < 2 * kMaxKeyRingKeys; ++round) {
    const TestKey next = NewKey();
    Ok(ring, Stage(next), At(++index, now));
    const uint64_t staged_index = index;
    now += kMaxAgeMs;
    Ok(ring, Activate(next.kid, staged_index), At(++index, now));
    Ok(ring, Retire(active.kid), At(++index, ++now));
    retired.push_back(active.kid);
    active = next;
    EXPECT_LE(ring.View().state().keys_size(),
              static_cast<int>(kMaxKeyRingKeys));
  }
  EXPECT_EQ(ring.View().active()->kid(), active.kid);
  EXPECT_EQ(ring.View().state().keys_size(), static_cast<int>(kMaxKeyRingKeys));
  // The oldest retired keys went first; the newest are kept.
  EXPECT_EQ(ring.View().Find(retired.front()), nullptr);
  EXPECT_NE(ring.View().Find(retired.back()), nullptr);
}

TEST(KeyRingTest, SerializeRestoreRoundTrip) {
  KeyRing ring;
  const TestKey a = NewKey();
  const TestKey b = NewKey();
  const TestKey c = NewKey();
  Ok(ring, Stage(a, true), At(1, kT0));
  Ok(ring, Stage(b), At(2, kT0 + 1));
  Ok(ring, Activate(b.kid, 2), At(3, kT0 + kMaxAgeMs + 1));
  Ok(ring, Stage(c), At(4, kT0 + kMaxAgeMs + 2));
  Ok(ring, Retire(a.kid), At(5, kT0 + kMaxAgeMs + 3));
  const std::string bytes = ring.Serialize();
  EXPECT_EQ(ring.DigestInput(), bytes);

  KeyRing restored;
  ASSERT_TRUE(restored.Restore(bytes).ok());
  EXPECT_EQ(restored.Serialize(), bytes);
  EXPECT_EQ(restored.View().active()->kid(), b.kid);
  EXPECT_EQ(VerifyingKids(restored), VerifyingKids(ring));
  EXPECT_EQ(*restored.View().JwksJson(), *ring.View().JwksJson());
  EXPECT_EQ(restored.View().changed_index(), 5u);

  // The restored ring goes on exactly like the original.
  Ok(ring, Activate(c.kid, 4), At(6, kT0 + 2 * kMaxAgeMs + 2));
  Ok(restored, Activate(c.kid, 4), At(6, kT0 + 2 * kMaxAgeMs + 2));
  EXPECT_EQ(restored.Serialize(), ring.Serialize());
}

TEST(KeyRingTest, RestoreRefusesWhatBreaksAnInvariant) {
  KeyRing ring;
  const TestKey a = NewKey();
  const TestKey b = NewKey();
  Ok(ring, Stage(a, true), At(1, kT0));
  Ok(ring, Stage(b), At(2, kT0));
  const std::string before = ring.Serialize();

  auto refused = [&](const pb::KeyRingState& state, const std::string& text) {
    const absl::Status status = ring.Restore(state.SerializeAsString());
    EXPECT_EQ(status.code(), absl::StatusCode::kDataLoss) << status;
    EXPECT_TRUE(absl::StrContains(status.message(), text)) << status;
    EXPECT_EQ(ring.Serialize(), before);
  };
  pb::KeyRingState two_active = ring.View().state();
  two_active.mutable_keys(1)->set_state(sessiond::v1::SIGNING_KEY_ACTIVE);
  refused(two_active, "2 keys are ACTIVE");
  pb::KeyRingState none_active = ring.View().state();
  none_active.mutable_keys(0)->set_state(sessiond::v1::SIGNING_KEY_RETIRING);
  refused(none_active, "none is ACTIVE");
  pb::KeyRingState duplicate = ring.View().state();
  *duplicate.add_keys() = duplicate.keys(1);
  duplicate.mutable_keys(2)->set_staged_index(3);
  refused(duplicate, "appears twice");
  pb::KeyRingState out_of_order = ring.View().state();
  out_of_order.mutable_keys(1)->set_staged_index(1);
  refused(out_of_order, "out of staging order");
  pb::KeyRingState wrong_kid = ring.View().state();
  wrong_kid.mutable_keys(1)->set_kid(a.kid + "x");
  refused(wrong_kid, "not the thumbprint");
  pb::KeyRingState retired_with_secret = ring.View().state();
  retired_with_secret.mutable_keys(1)->set_state(
      sessiond::v1::SIGNING_KEY_RETIRED);
  refused(retired_with_secret, "still holds its sealed private key");
  pb::KeyRingState no_state = ring.View().state();
  no_state.mutable_keys(1)->clear_state();
  refused(no_state, "no valid state");

  const absl::Status garbage = ring.Restore("\xff\xff\xff");
  EXPECT_EQ(garbage.code(), absl::StatusCode::kDataLoss) << garbage;
  EXPECT_EQ(ring.Serialize(), before);
}

TEST(KeyRingTest, AViewIsASnapshot) {
  KeyRing ring;
  const TestKey a = NewKey();
  const TestKey b = NewKey();
  Ok(ring, Stage(a, true), At(1, kT0));
  Ok(ring, Stage(b), At(2, kT0));
  const KeyRingView before = ring.View();
  Ok(ring, Activate(b.kid, 2), At(3, kT0 + kMaxAgeMs));
  EXPECT_EQ(before.active()->kid(), a.kid);
  EXPECT_EQ(before.changed_index(), 2u);
  EXPECT_EQ(ring.View().active()->kid(), b.kid);
}

// Every command applied from the same state at the same context gives the
// same bytes on every replica (here: two rings).
TEST(KeyRingTest, ReplicasApplyingTheSameLogAgree) {
  KeyRing r1;
  KeyRing r2;
  const TestKey a = NewKey();
  const TestKey b = NewKey();
  const std::vector<std::pair<pb::KeyRingCommand, KeyRingApplyContext>> log = {
      {Stage(a, true), At(1, kT0)},
      {Stage(b), At(2, kT0 + 7)},
      {Activate(b.kid, 1), At(3, kT0 + kMaxAgeMs + 7)},  // refused on both
      {Activate(b.kid, 2), At(4, kT0 + kMaxAgeMs + 7)},
      {Retire(a.kid, true, 9), At(5, kT0 + kMaxAgeMs + 8, 9)},
  };
  for (const auto& [command, context] : log) {
    EXPECT_EQ(r1.Apply(command, context).code(),
              r2.Apply(command, context).code());
    EXPECT_EQ(r1.DigestInput(), r2.DigestInput());
  }
  EXPECT_EQ(r1.View().active()->kid(), b.kid);
}

// A seeded random walk of commands, valid and not. After every step: a
// refusal left the bytes unchanged, the invariants hold (exactly one active
// key once any was activated), Next() agrees with Apply(), and a restore
// of the serialized state reproduces it.
TEST(KeyRingTest, RandomCommandSequencesKeepTheInvariants) {
  std::vector<TestKey> pool;
  for (int i = 0; i < 12; ++i) pool.push_back(NewKey());
  for (uint64_t seed : {1u, 2u, 3u, 42u, 1234u}) {
    SCOPED_TRACE(absl::StrCat("seed ", seed));
    Rng rng(seed);
    KeyRing ring;
    uint64_t index = 0;
    int64_t now = kT0;
    bool ever_active = false;
    int accepted = 0;
    int rotations = 0;
    for (int step = 0; step < 1500; ++step) {
      now += static_cast<int64_t>(rng.Uniform(kMaxAgeMs / 2));
      ++index;
      const TestKey& key = pool[rng.Uniform(pool.size())];
      const std::string kid = rng.Percent(5) ? "unknown" : key.kid;
      pb::KeyRingCommand command;
      switch (rng.Uniform(5)) {
        case 0:
          command = Stage(key, rng.Percent(20));
          break;
        case 1:
        case 2:
          command = Activate(kid, index - rng.Uniform(4));
          break;
        case 3:
          command = Retire(kid, rng.Percent(50), rng.Uniform(3));
          break;
        default:
          command = Purge(now - static_cast<int64_t>(rng.Uniform(kMaxAgeMs)));
          break;
      }
      KeyRingApplyContext context = At(index, now, rng.Uniform(3));
      if (rng.Percent(3)) context.index = 0;

      const std::string before = ring.Serialize();
      const pb::KeyRingState before_state = ring.View().state();
      const std::string active_before =
          ring.View().active() ? ring.View().active()->kid() : "";
      const absl::StatusOr<pb::KeyRingState> predicted =
          KeyRing::Next(before_state, command, context);
      const absl::Status status = ring.Apply(command, context);
      ASSERT_EQ(status.code(), predicted.status().code()) << status;
      if (!status.ok()) {
        ASSERT_NE(status.code(), absl::StatusCode::kInternal) << status;
        ASSERT_EQ(ring.Serialize(), before)
            << "step " << step << ": " << status;
        continue;
      }
      ++accepted;
      ASSERT_TRUE(KeyRing::CheckInvariants(ring.View().state()).ok());
      ASSERT_EQ(ring.View().state().SerializeAsString(),
                predicted->SerializeAsString());
      const KeyRingView view = ring.View();
      if (command.has_activate() ||
          (command.has_stage() && command.stage().bootstrap())) {
        ever_active = true;
        ASSERT_EQ(view.active()->kid(), key.kid);
        if (!active_before.empty()) {
          ++rotations;
          ASSERT_EQ(view.Find(active_before)->state(),
                    sessiond::v1::SIGNING_KEY_RETIRING);
        }
      } else if (!active_before.empty()) {
        // Nothing but an activation changes the active key.
        ASSERT_EQ(view.active()->kid(), active_before);
      }
      int active = 0;
      for (const pb::SigningKey& k : view.state().keys()) {
        if (k.state() == sessiond::v1::SIGNING_KEY_ACTIVE) ++active;
      }
      ASSERT_EQ(active, ever_active ? 1 : 0) << "step " << step;
      if (step % 50 == 0) {
        KeyRing restored;
        ASSERT_TRUE(restored.Restore(ring.Serialize()).ok());
        ASSERT_EQ(restored.Serialize(), ring.Serialize());
      }
    }
    // The walk exercised the ring, not just its refusals.
    EXPECT_GT(accepted, 100);
    EXPECT_GT(rotations, 5);
  }
}

// Readers on other threads see whole states only while the apply thread
// rotates keys.
TEST(KeyRingTest, ReadersSeeWholeStatesDuringRotations) {
  KeyRing ring;
  const TestKey first = NewKey();
  Ok(ring, Stage(first, true), At(1, kT0));
  std::vector<TestKey> keys;
  for (int i = 0; i < 20; ++i) keys.push_back(NewKey());

  std::atomic<bool> done{false};
  std::atomic<int> bad{0};
  std::vector<std::thread> readers;
  for (int r = 0; r < 2; ++r) {
    readers.emplace_back([&] {
      for (int i = 0; i < 200000 && !done.load(); ++i) {
        const KeyRingView view = ring.View();
        if (view.active() == nullptr ||
            !KeyRing::CheckInvariants(view.state()).ok()) {
          ++bad;
        }
      }
    });
  }
  uint64_t index = 1;
  int64_t now = kT0;
  std::string previous = first.kid;
  for (const TestKey& key : keys) {
    const uint64_t staged_index = ++index;
    Ok(ring, Stage(key), At(staged_index, now));
    now += kMaxAgeMs;
    Ok(ring, Activate(key.kid, staged_index), At(++index, now));
    Ok(ring, Retire(previous), At(++index, now));
    Ok(ring, Purge(now), At(++index, now));
    previous = key.kid;
  }
  done = true;
  for (std::thread& reader : readers) reader.join();
  EXPECT_EQ(bad.load(), 0);
  EXPECT_EQ(ring.View().active()->kid(), keys.back().kid);
}

}  // namespace
}  // namespace sessiond::storage
