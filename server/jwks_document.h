// Copyright sessiond authors. Licensed under the Apache License 2.0.
//
// The JWKS this node publishes (HTTP /.well-known/jwks.json and
// AdminService.GetJwks), and how long a verifier may cache it.
//
// A key is published at least the JWKS max-age before it signs, so a
// verifier that caches a document no longer than that never meets a kid it
// cannot know: true of a document that holds every key the cluster has
// staged. A node that may lack some (cut off from the leader for a second or
// more, never in contact since it started, or far behind the leader's
// commit index while it catches up) serves its document with max-age 0: a
// verifier uses it but asks again next time, and may then reach a node that
// holds the new key. Caching it for the full max-age could keep a key that
// signs now out of the verifier's hands for that long: its users' tokens
// refused.
#ifndef SESSIOND_SERVER_JWKS_DOCUMENT_H_
#define SESSIOND_SERVER_JWKS_DOCUMENT_H_

#include "absl/status/statusor.h"
#include "server/jwks_http.h"
#include "server/read_barrier.h"
#include "storage/session_state_machine.h"

namespace sessiond::server {

// Unavailable while the ring holds no key a verifier could use (none yet,
// or every one retired: a verifier must not cache an empty set) or this
// node holds no data yet. `reads` null: max-age as
// configured (a node with no read barrier).
absl::StatusOr<JwksDocument> JwksDocumentNow(
    const storage::SessionStateMachine& state_machine,
    const ReadBarrier* reads);

}  // namespace sessiond::server

#endif  // SESSIOND_SERVER_JWKS_DOCUMENT_H_
