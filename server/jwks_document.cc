// Copyright sessiond authors. Licensed under the Apache License 2.0.
#include "server/jwks_document.h"

#include <utility>

namespace sessiond::server {

absl::StatusOr<JwksDocument> JwksDocumentNow(
    const storage::SessionStateMachine& state_machine,
    const ReadBarrier* reads) {
  int64_t max_age_s = state_machine.jwks_max_age_ms() / 1000;
  if (reads != nullptr) {
    const ReadAnswer local = reads->Local();
    if (!local.status.ok()) return local.status;
    if (!reads->Current()) max_age_s = 0;
  }
  const storage::KeyRingView ring = state_machine.key_ring();
  if (ring.state().keys().empty()) {
    return absl::UnavailableError(
        "the cluster has no signing key yet (sessionctl keys stage "
        "--bootstrap)");
  }
  // Keys, but none a verifier could use (each one staged and retired): an
  // empty set served with its max-age would be cached, and every token
  // signed with a key activated meanwhile refused until it expired.
  if (ring.VerifyingKeys().empty()) {
    return absl::UnavailableError(
        "the cluster has no signing key yet: every key of the ring is "
        "retired, none was ever active (sessionctl keys stage "
        "--bootstrap)");
  }
  absl::StatusOr<std::string> json = ring.JwksJson();
  if (!json.ok()) return json.status();
  return JwksDocument{*std::move(json), max_age_s, ring.changed_index()};
}

}  // namespace sessiond::server
