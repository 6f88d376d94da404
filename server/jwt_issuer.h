// Copyright sessiond authors. Licensed under the Apache License 2.0.
#ifndef SESSIOND_SERVER_JWT_ISSUER_H_
#define SESSIOND_SERVER_JWT_ISSUER_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "common/key_encryption.h"
#include "common/signing.h"
#include "sessiond/v1/key_ring.pb.h"
#include "storage/session_state_machine.h"

namespace sessiond::server {

// This node's side of the signing key ring (storage/key_ring.h): it holds
// the key-encryption key (--kek_file), signs JWT tokens with the ring's
// active key, and makes the sealed key pairs StageKey puts in the log. A
// private key exists unsealed only in this object's memory (the active
// key's JwtSigner), never in the log, RocksDB, a response or a log line.
//
// Thread-safe: Issue runs on gRPC threads; the signer of the active kid is
// built once per activation (under mu_) and shared.
class JwtIssuer {
 public:
  // `kek`: none when the node was started without --kek_file (it then
  // cannot sign nor stage). `state_machine` must outlive this.
  JwtIssuer(std::optional<KeyEncryptionKey> kek,
            const storage::SessionStateMachine* state_machine);

  bool has_kek() const { return kek_.has_value(); }
  // Its KEK's id (KeyEncryptionKey::KekIdHex); empty without one.
  std::string kek_id() const { return kek_ ? kek_->KekIdHex() : ""; }

  struct Issued {
    std::string token;
    std::string kid;
  };
  // A JWT for session `session_id` of `user_id`, iat now_ms and exp
  // now_ms + ttl_ms (rounded up to seconds), signed by the active key.
  // FailedPrecondition when this node has no KEK or the cluster no active
  // key; InvalidArgument when the claims do not fit a JWT (kMaxJwtBytes).
  absl::StatusOr<Issued> Issue(const std::string& session_id,
                               const std::string& user_id, int64_t now_ms,
                               int64_t ttl_ms) ABSL_LOCKS_EXCLUDED(mu_);

  // OK when Issue would sign a JWT for a session of `user_id` now: this
  // node has a KEK, the cluster an active key (FailedPrecondition as Issue
  // otherwise), and the claims fit (InvalidArgument as Issue). A create asks
  // before it spends its caller's rate limit; nothing is signed.
  absl::Status CanIssue(const std::string& user_id, int64_t now_ms,
                        int64_t ttl_ms) ABSL_LOCKS_EXCLUDED(mu_);

  // A new Ed25519 key pair, its private half sealed with the KEK (the kid
  // as associated data): the Stage command to propose.
  // FailedPrecondition without a KEK.
  absl::StatusOr<sessiond::v1::internal::KeyRingCommand::Stage> NewKey(
      bool bootstrap) const;

 private:
  absl::StatusOr<std::shared_ptr<const signing::JwtSigner>> ActiveSigner()
      ABSL_LOCKS_EXCLUDED(mu_);
  static signing::JwtClaims Claims(const std::string& session_id,
                                   const std::string& user_id, int64_t now_ms,
                                   int64_t ttl_ms);

  const std::optional<KeyEncryptionKey> kek_;
  const storage::SessionStateMachine* const state_machine_;  // outlives this
  absl::Mutex mu_;
  std::shared_ptr<const signing::JwtSigner> signer_ ABSL_GUARDED_BY(mu_);
};

}  // namespace sessiond::server

#endif  // SESSIOND_SERVER_JWT_ISSUER_H_
