// Copyright sessiond authors. Licensed under the Apache License 2.0.
//
// The replicated signing key ring (issue 7, "Signing keys that cannot lock
// users out"): which keys the cluster publishes, which one signs.
//
// Transitions (KeyRingCommand, proto/sessiond/v1/key_ring.proto):
//   Stage                      -> STAGED   (published, verifies)
//   Stage{bootstrap}, a ring never activated (empty, or only RETIRED keys)
//                              -> ACTIVE (a new cluster's first key)
//   Activate   STAGED          -> ACTIVE, and the ACTIVE key -> RETIRING
//   Retire     RETIRING|STAGED -> RETIRED  (sealed private key cleared)
//   PurgeRetired               RETIRED keys forgotten (and Stage into a
//                              full ring forgets the oldest one)
//
// Invariants (CheckInvariants), true after every Apply:
//   - kids are unique and each is the RFC 7638 thumbprint of its key;
//   - at most one key is ACTIVE, and exactly one once any key has been
//     activated: activation swaps in one step, and the ACTIVE key cannot be
//     retired. There is never a moment without an active key.
//   - keys are in staging order (staged_index strictly ascending).
//
// Why activation waits: an app server verifies tokens against a JWKS it
// cached for up to the JWKS max-age. A key that signs before every cache
// can hold it locks out every user whose token it signed, so activation is
// refused until the key was staged min_publish_ms ago (applied time) and
// every voting member has applied the stage (so whichever node serves the
// JWKS publishes it).
//
// A refused command returns its status and changes NOTHING: the next state
// is computed on a copy and swapped in only when every check passed.
#ifndef SESSIOND_STORAGE_KEY_RING_H_
#define SESSIOND_STORAGE_KEY_RING_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "common/signing.h"
#include "sessiond/v1/key_ring.pb.h"

namespace sessiond::storage {

// At most this many keys in any state, RETIRED included: staging into a
// full ring forgets the oldest retired key (refused when none is).
inline constexpr size_t kMaxKeyRingKeys = 32;

// What Apply needs besides the command: all of it from replicated state, so
// every replica decides alike.
struct KeyRingApplyContext {
  // The command's log index (> 0): recorded as staged_index /
  // activated_index and changed_index.
  uint64_t index = 0;
  // The state machine's applied time (cluster time, Unix ms).
  int64_t applied_time_ms = 0;
  // The JWKS max-age in ms: how long a key is published before it may be
  // activated. Must be the same on every replica at this entry (a
  // replicated setting or a constant, never a per-node flag).
  int64_t min_publish_ms = 0;
  // For Retire: the live sessions the command's kid signed, as the state
  // machine counts them at this entry. Ignored by the other commands.
  uint64_t live_sessions = 0;
};

// An immutable snapshot of the ring. Cheap to copy (one shared_ptr); safe
// to use on any thread for as long as it is held, whatever Apply does
// meanwhile.
class KeyRingView {
 public:
  explicit KeyRingView(
      std::shared_ptr<const sessiond::v1::internal::KeyRingState> state);

  const sessiond::v1::internal::KeyRingState& state() const { return *state_; }
  // The log index of the last command that changed the ring (0: never).
  uint64_t changed_index() const { return state_->changed_index(); }

  // The ACTIVE key; nullptr before the first activation. Valid while this
  // view is alive.
  const sessiond::v1::internal::SigningKey* active() const;
  // The key with this kid in any state; nullptr when there is none.
  const sessiond::v1::internal::SigningKey* Find(std::string_view kid) const;
  // STAGED, ACTIVE and RETIRING keys in staging order: what the JWKS
  // publishes and what verifies.
  std::vector<signing::PublicSigningKey> VerifyingKeys() const;
  // The JWKS document of VerifyingKeys().
  absl::StatusOr<std::string> JwksJson() const;

 private:
  std::shared_ptr<const sessiond::v1::internal::KeyRingState> state_;
};

// Deterministic: no clock, thread, RNG or I/O; time and index come in as
// arguments. Threads: the state machine's apply thread is the only writer
// (Apply, Restore); readers on any thread take a View(). The state is an
// immutable KeyRingState behind a shared_ptr: a writer builds the next state
// on a copy and swaps the pointer under mu_, so a reader never waits for a
// writer's checks and never sees half a transition.
class KeyRing {
 public:
  KeyRing();
  KeyRing(const KeyRing&) = delete;
  KeyRing& operator=(const KeyRing&) = delete;

  // Applies one command at context.index. On error nothing changed:
  //   InvalidArgument     a malformed command (no op, bad key or kid, a
  //                       sealed key of the wrong size, index 0)
  //   NotFound            Activate/Retire of an unknown kid
  //   AlreadyExists       Stage of a kid the ring holds (in any state)
  //   ResourceExhausted   Stage into a ring of kMaxKeyRingKeys keys
  //   FailedPrecondition  Stage{bootstrap} into a ring with a key not
  //                       retired; Activate
  //                       of a key not STAGED, before every voter applied
  //                       its stage, or before min_publish_ms; Retire of
  //                       the ACTIVE key, of a RETIRED key, or of a key with
  //                       live sessions without force and their exact count
  // Each message says what to do next.
  absl::Status Apply(const sessiond::v1::internal::KeyRingCommand& command,
                     const KeyRingApplyContext& context)
      ABSL_LOCKS_EXCLUDED(write_mu_, mu_);

  // The state `command` would lead to from `state`, or the error Apply
  // would return. Pure: for Apply, for a leader checking a request before
  // proposing it, and for tests.
  static absl::StatusOr<sessiond::v1::internal::KeyRingState> Next(
      const sessiond::v1::internal::KeyRingState& state,
      const sessiond::v1::internal::KeyRingCommand& command,
      const KeyRingApplyContext& context);

  // OK when `state` keeps the invariants above; DataLoss naming the first
  // broken one otherwise.
  static absl::Status CheckInvariants(
      const sessiond::v1::internal::KeyRingState& state);

  KeyRingView View() const ABSL_LOCKS_EXCLUDED(mu_);

  // The state as deterministic protobuf bytes (equal states, equal bytes):
  // for snapshots, and the input to the state machine's digest.
  std::string Serialize() const ABSL_LOCKS_EXCLUDED(mu_);
  std::string DigestInput() const ABSL_LOCKS_EXCLUDED(mu_) {
    return Serialize();
  }
  // Replaces the state with one from Serialize() (a snapshot). DataLoss,
  // nothing changed, when the bytes do not parse or break an invariant.
  absl::Status Restore(std::string_view bytes)
      ABSL_LOCKS_EXCLUDED(write_mu_, mu_);

 private:
  void Swap(std::shared_ptr<const sessiond::v1::internal::KeyRingState> next)
      ABSL_LOCKS_EXCLUDED(mu_);

  // Serializes writers (Apply, Restore), so no update is lost even if a
  // second writer appeared; held while the next state is computed.
  absl::Mutex write_mu_;
  // Guards the pointer only; held for a copy or a swap.
  mutable absl::Mutex mu_;
  std::shared_ptr<const sessiond::v1::internal::KeyRingState> state_
      ABSL_GUARDED_BY(mu_);
};

}  // namespace sessiond::storage

#endif  // SESSIOND_STORAGE_KEY_RING_H_
