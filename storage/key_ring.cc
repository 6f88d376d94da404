// Copyright sessiond authors. Licensed under the Apache License 2.0.
#include "storage/key_ring.h"

#include <google/protobuf/io/coded_stream.h>
#include <google/protobuf/io/zero_copy_stream_impl_lite.h>

#include <algorithm>
#include <utility>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "common/key_encryption.h"

namespace sessiond::storage {
namespace {

namespace pb = ::sessiond::v1::internal;
using ::sessiond::v1::SigningAlgorithm;
using ::sessiond::v1::SigningKeyState;

constexpr size_t kMaxKidChars = 64;
constexpr size_t kEd25519SealedBytes =
    kSealOverheadBytes + signing::kEd25519PrivateKeyBytes;

const char* StateName(SigningKeyState state) {
  switch (state) {
    case sessiond::v1::SIGNING_KEY_STAGED:
      return "STAGED";
    case sessiond::v1::SIGNING_KEY_ACTIVE:
      return "ACTIVE";
    case sessiond::v1::SIGNING_KEY_RETIRING:
      return "RETIRING";
    case sessiond::v1::SIGNING_KEY_RETIRED:
      return "RETIRED";
    default:
      return "UNSPECIFIED";
  }
}

// A kid from a command, safe to quote in a message.
std::string Quote(std::string_view kid) {
  std::string out =
      absl::StrCat("'", absl::CHexEscape(absl::string_view(
                            kid.data(), std::min(kid.size(), kMaxKidChars))));
  if (kid.size() > kMaxKidChars) out += "...";
  out += "'";
  return out;
}

pb::SigningKey* FindMutable(pb::KeyRingState& state, std::string_view kid) {
  for (pb::SigningKey& key : *state.mutable_keys()) {
    if (key.kid() == kid) return &key;
  }
  return nullptr;
}

pb::SigningKey* ActiveMutable(pb::KeyRingState& state) {
  for (pb::SigningKey& key : *state.mutable_keys()) {
    if (key.state() == sessiond::v1::SIGNING_KEY_ACTIVE) return &key;
  }
  return nullptr;
}

// Whether no key of `state` was ever activated: none, or only keys staged
// and retired. (Once a key is activated the ring always has an active key,
// which cannot be retired.) No token was signed then, so a key may sign at
// once, once no verifier may still cache a JWKS published without it (the
// caller checks the retirements' age).
bool NeverActivated(const pb::KeyRingState& state) {
  for (const pb::SigningKey& key : state.keys()) {
    if (key.state() != sessiond::v1::SIGNING_KEY_RETIRED) return false;
  }
  return true;
}

absl::Status ApplyStage(pb::KeyRingState& state,
                        const pb::KeyRingCommand::Stage& stage,
                        const KeyRingApplyContext& context) {
  if (stage.algorithm() != sessiond::v1::SIGNING_ALGORITHM_ED25519) {
    return absl::InvalidArgumentError(
        absl::StrCat("stage: unsupported algorithm ",
                     SigningAlgorithm_Name(stage.algorithm()),
                     "; the ring holds Ed25519 keys"));
  }
  absl::StatusOr<std::string> kid =
      signing::KeyIdForPublicKey(stage.public_key());
  if (!kid.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("stage: ", kid.status().message()));
  }
  if (stage.kid() != *kid) {
    return absl::InvalidArgumentError(
        absl::StrCat("stage: kid ", Quote(stage.kid()),
                     " is not the thumbprint of its public key (", *kid, ")"));
  }
  if (stage.sealed_private_key().size() != kEd25519SealedBytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        "stage: the sealed private key is ", stage.sealed_private_key().size(),
        " bytes, not ", kEd25519SealedBytes,
        " (an Ed25519 key sealed by common/key_encryption.h)"));
  }
  if (FindMutable(state, stage.kid()) != nullptr) {
    return absl::AlreadyExistsError(
        absl::StrCat("stage: the ring already holds kid ", stage.kid(),
                     ": generate a new key pair"));
  }
  if (state.keys_size() >= static_cast<int>(kMaxKeyRingKeys)) {
    // Room from the oldest retired key: nothing verifies with it any more,
    // and nothing else would ever free its place (a ring full of history
    // would refuse every rotation, an emergency one included).
    auto* keys = state.mutable_keys();
    auto oldest = keys->end();
    for (auto it = keys->begin(); it != keys->end(); ++it) {
      if (it->state() == sessiond::v1::SIGNING_KEY_RETIRED &&
          (oldest == keys->end() ||
           it->retired_at_ms() < oldest->retired_at_ms())) {
        oldest = it;
      }
    }
    if (oldest == keys->end()) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "stage: the ring holds ", state.keys_size(),
          " keys, the most it may, and none is retired: retire keys no "
          "longer needed first"));
    }
    keys->erase(oldest);
  }
  if (stage.bootstrap() && !NeverActivated(state)) {
    return absl::FailedPreconditionError(absl::StrCat(
        "stage: bootstrap (stage and activate at once) is only for a ring "
        "that never had an active key, and this one holds ",
        state.keys_size(),
        " with one not retired: stage the key without bootstrap, then "
        "activate it once it has been published for the JWKS max-age"));
  }
  if (stage.bootstrap()) {
    // A staged key was published (in a JWKS served with its max-age)
    // until it was retired: a verifier may hold that JWKS, without the new
    // key, for the max-age after. A key that signs at once waits it out.
    int64_t last_retired_ms = 0;
    for (const pb::SigningKey& retired : state.keys()) {
      last_retired_ms = std::max(last_retired_ms, retired.retired_at_ms());
    }
    if (state.keys_size() > 0 &&
        context.applied_time_ms - last_retired_ms < context.min_publish_ms) {
      return absl::FailedPreconditionError(absl::StrCat(
          "stage: bootstrap into a ring whose last key was retired ",
          context.applied_time_ms - last_retired_ms,
          " ms ago: app servers may still cache a JWKS without the new key "
          "for the JWKS max-age (",
          context.min_publish_ms, " ms); retry at or after cluster time ",
          last_retired_ms + context.min_publish_ms, " ms"));
    }
  }
  pb::SigningKey* key = state.add_keys();
  key->set_kid(stage.kid());
  key->set_algorithm(stage.algorithm());
  key->set_public_key(stage.public_key());
  key->set_sealed_private_key(stage.sealed_private_key());
  key->set_staged_at_ms(context.applied_time_ms);
  key->set_staged_index(context.index);
  if (stage.bootstrap()) {
    key->set_state(sessiond::v1::SIGNING_KEY_ACTIVE);
    key->set_activated_at_ms(context.applied_time_ms);
    key->set_activated_index(context.index);
  } else {
    key->set_state(sessiond::v1::SIGNING_KEY_STAGED);
  }
  return absl::OkStatus();
}

absl::Status ApplyActivate(pb::KeyRingState& state,
                           const pb::KeyRingCommand::Activate& activate,
                           const KeyRingApplyContext& context) {
  pb::SigningKey* key = FindMutable(state, activate.kid());
  if (key == nullptr) {
    return absl::NotFoundError(absl::StrCat("activate: no key has kid ",
                                            Quote(activate.kid()),
                                            ": ListKeys shows the ring"));
  }
  if (key->state() != sessiond::v1::SIGNING_KEY_STAGED) {
    return absl::FailedPreconditionError(absl::StrCat(
        "activate: kid ", key->kid(), " is ", StateName(key->state()),
        ", not STAGED",
        key->state() == sessiond::v1::SIGNING_KEY_ACTIVE
            ? ": it is already the active key"
            : ": only a staged key can be activated; stage a new key"));
  }
  if (activate.voters_applied_index() < key->staged_index()) {
    return absl::FailedPreconditionError(
        absl::StrCat("activate: not every member has applied the stage of kid ",
                     key->kid(), " (entry ", key->staged_index(),
                     "; the lowest member's applied index is ",
                     activate.voters_applied_index(),
                     "): retry once every member has caught up"));
  }
  const int64_t published_ms = context.applied_time_ms - key->staged_at_ms();
  if (published_ms < context.min_publish_ms) {
    return absl::FailedPreconditionError(absl::StrCat(
        "activate: kid ", key->kid(), " has been published for ", published_ms,
        " ms and needs ", context.min_publish_ms,
        " ms (the JWKS max-age) so every cached JWKS holds it: retry at or "
        "after cluster time ",
        key->staged_at_ms() + context.min_publish_ms, " ms"));
  }
  // Both in one step: never two active keys, never none.
  if (pb::SigningKey* old = ActiveMutable(state); old != nullptr) {
    old->set_state(sessiond::v1::SIGNING_KEY_RETIRING);
    old->set_retiring_at_ms(context.applied_time_ms);
  }
  key->set_state(sessiond::v1::SIGNING_KEY_ACTIVE);
  key->set_activated_at_ms(context.applied_time_ms);
  key->set_activated_index(context.index);
  return absl::OkStatus();
}

absl::Status ApplyRetire(pb::KeyRingState& state,
                         const pb::KeyRingCommand::Retire& retire,
                         const KeyRingApplyContext& context) {
  pb::SigningKey* key = FindMutable(state, retire.kid());
  if (key == nullptr) {
    return absl::NotFoundError(absl::StrCat("retire: no key has kid ",
                                            Quote(retire.kid()),
                                            ": ListKeys shows the ring"));
  }
  switch (key->state()) {
    case sessiond::v1::SIGNING_KEY_ACTIVE:
      return absl::FailedPreconditionError(absl::StrCat(
          "retire: kid ", key->kid(),
          " is the active key and the ring must always have one: stage and "
          "activate another key first (this one then becomes RETIRING)"));
    case sessiond::v1::SIGNING_KEY_RETIRED:
      return absl::FailedPreconditionError(
          absl::StrCat("retire: kid ", key->kid(), " is already retired"));
    default:
      break;
  }
  const uint64_t live = context.live_sessions;
  if (live > 0 && !retire.force()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "retire: kid ", key->kid(), " signed ", live,
        " live sessions (counting those a restorable FLUSH or bulk revocation "
        "holds), whose tokens would stop verifying: wait until they expire, "
        "are revoked or their revocation can no longer be restored, or "
        "retire with force and "
        "expected_live_sessions=",
        live));
  }
  if (live > 0 && retire.expected_live_sessions() != live) {
    return absl::FailedPreconditionError(absl::StrCat(
        "retire: force was given for ", retire.expected_live_sessions(),
        " live sessions, but kid ", key->kid(), " signed ", live,
        " now: check, then retry with expected_live_sessions=", live));
  }
  key->set_state(sessiond::v1::SIGNING_KEY_RETIRED);
  key->set_retired_at_ms(context.applied_time_ms);
  key->clear_sealed_private_key();
  return absl::OkStatus();
}

// True when something was removed.
bool ApplyPurgeRetired(pb::KeyRingState& state,
                       const pb::KeyRingCommand::PurgeRetired& purge) {
  pb::KeyRingState kept;
  bool removed = false;
  for (pb::SigningKey& key : *state.mutable_keys()) {
    if (key.state() == sessiond::v1::SIGNING_KEY_RETIRED &&
        key.retired_at_ms() <= purge.retired_before_ms()) {
      removed = true;
      continue;
    }
    *kept.add_keys() = std::move(key);
  }
  state.mutable_keys()->Swap(kept.mutable_keys());
  return removed;
}

}  // namespace

KeyRingView::KeyRingView(std::shared_ptr<const pb::KeyRingState> state)
    : state_(std::move(state)) {}

const pb::SigningKey* KeyRingView::active() const {
  for (const pb::SigningKey& key : state_->keys()) {
    if (key.state() == sessiond::v1::SIGNING_KEY_ACTIVE) return &key;
  }
  return nullptr;
}

const pb::SigningKey* KeyRingView::Find(std::string_view kid) const {
  for (const pb::SigningKey& key : state_->keys()) {
    if (key.kid() == kid) return &key;
  }
  return nullptr;
}

std::vector<signing::PublicSigningKey> KeyRingView::VerifyingKeys() const {
  std::vector<signing::PublicSigningKey> keys;
  for (const pb::SigningKey& key : state_->keys()) {
    switch (key.state()) {
      case sessiond::v1::SIGNING_KEY_STAGED:
      case sessiond::v1::SIGNING_KEY_ACTIVE:
      case sessiond::v1::SIGNING_KEY_RETIRING:
        keys.push_back({key.kid(), key.public_key()});
        break;
      default:
        break;
    }
  }
  return keys;
}

absl::StatusOr<std::string> KeyRingView::JwksJson() const {
  return signing::JwksJson(VerifyingKeys());
}

KeyRing::KeyRing() : state_(std::make_shared<const pb::KeyRingState>()) {}

absl::StatusOr<pb::KeyRingState> KeyRing::Next(
    const pb::KeyRingState& state, const pb::KeyRingCommand& command,
    const KeyRingApplyContext& context) {
  if (context.index == 0) {
    return absl::InvalidArgumentError(
        "key ring command at log index 0 (entries start at 1)");
  }
  pb::KeyRingState next = state;
  absl::Status status;
  bool changed = true;
  switch (command.op_case()) {
    case pb::KeyRingCommand::kStage:
      status = ApplyStage(next, command.stage(), context);
      break;
    case pb::KeyRingCommand::kActivate:
      status = ApplyActivate(next, command.activate(), context);
      break;
    case pb::KeyRingCommand::kRetire:
      status = ApplyRetire(next, command.retire(), context);
      break;
    case pb::KeyRingCommand::kPurgeRetired:
      changed = ApplyPurgeRetired(next, command.purge_retired());
      break;
    default:
      return absl::InvalidArgumentError("a key ring command without an op");
  }
  if (!status.ok()) return status;
  if (changed) next.set_changed_index(context.index);
  // Every transition above keeps the invariants; a failure here is a bug,
  // refused rather than applied.
  if (absl::Status invariants = CheckInvariants(next); !invariants.ok()) {
    return absl::InternalError(
        absl::StrCat("key ring command refused: it would break an invariant: ",
                     invariants.message()));
  }
  return next;
}

absl::Status KeyRing::CheckInvariants(const pb::KeyRingState& state) {
  absl::flat_hash_set<std::string_view> kids;
  int active = 0;
  bool ever_activated = false;
  uint64_t previous_index = 0;
  for (const pb::SigningKey& key : state.keys()) {
    if (!kids.insert(key.kid()).second) {
      return absl::DataLossError(
          absl::StrCat("key ring: kid ", Quote(key.kid()), " appears twice"));
    }
    absl::StatusOr<std::string> kid =
        signing::KeyIdForPublicKey(key.public_key());
    if (!kid.ok() || *kid != key.kid()) {
      return absl::DataLossError(
          absl::StrCat("key ring: kid ", Quote(key.kid()),
                       " is not the thumbprint of its public key"));
    }
    if (key.staged_index() <= previous_index) {
      return absl::DataLossError(
          absl::StrCat("key ring: kid ", key.kid(), " (staged at entry ",
                       key.staged_index(), ") is out of staging order"));
    }
    previous_index = key.staged_index();
    switch (key.state()) {
      case sessiond::v1::SIGNING_KEY_STAGED:
      case sessiond::v1::SIGNING_KEY_RETIRING:
        break;
      case sessiond::v1::SIGNING_KEY_ACTIVE:
        ++active;
        break;
      case sessiond::v1::SIGNING_KEY_RETIRED:
        if (!key.sealed_private_key().empty()) {
          return absl::DataLossError(
              absl::StrCat("key ring: retired kid ", key.kid(),
                           " still holds its sealed private key"));
        }
        break;
      default:
        return absl::DataLossError(
            absl::StrCat("key ring: kid ", key.kid(), " has no valid state (",
                         static_cast<int>(key.state()), ")"));
    }
    if (key.activated_index() != 0) ever_activated = true;
  }
  if (active > 1) {
    return absl::DataLossError(
        absl::StrCat("key ring: ", active, " keys are ACTIVE"));
  }
  if (ever_activated && active == 0) {
    return absl::DataLossError(
        "key ring: a key was activated once, but none is ACTIVE now");
  }
  return absl::OkStatus();
}

absl::Status KeyRing::Apply(const pb::KeyRingCommand& command,
                            const KeyRingApplyContext& context) {
  absl::MutexLock write_lock(&write_mu_);
  const KeyRingView current = View();
  absl::StatusOr<pb::KeyRingState> next =
      Next(current.state(), command, context);
  if (!next.ok()) return next.status();
  Swap(std::make_shared<const pb::KeyRingState>(*std::move(next)));
  return absl::OkStatus();
}

KeyRingView KeyRing::View() const {
  absl::MutexLock lock(&mu_);
  return KeyRingView(state_);
}

void KeyRing::Swap(std::shared_ptr<const pb::KeyRingState> next) {
  std::shared_ptr<const pb::KeyRingState> old;
  {
    absl::MutexLock lock(&mu_);
    old = std::exchange(state_, std::move(next));
  }
  // `old` (maybe the last reference) is freed here, outside the lock.
}

std::string KeyRing::Serialize() const {
  const KeyRingView view = View();
  std::string bytes;
  {
    google::protobuf::io::StringOutputStream stream(&bytes);
    google::protobuf::io::CodedOutputStream coded(&stream);
    coded.SetSerializationDeterministic(true);
    view.state().SerializeToCodedStream(&coded);
  }
  return bytes;
}

absl::Status KeyRing::Restore(std::string_view bytes) {
  auto state = std::make_shared<pb::KeyRingState>();
  if (!state->ParseFromArray(bytes.data(), static_cast<int>(bytes.size()))) {
    return absl::DataLossError(absl::StrCat(
        "key ring: ", bytes.size(), " bytes that are not a KeyRingState"));
  }
  if (absl::Status status = CheckInvariants(*state); !status.ok()) {
    return status;
  }
  absl::MutexLock write_lock(&write_mu_);
  Swap(std::move(state));
  return absl::OkStatus();
}

}  // namespace sessiond::storage
