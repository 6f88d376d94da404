// Copyright sessiond authors. Licensed under the Apache License 2.0.
#include "server/jwt_issuer.h"

#include <openssl/crypto.h>

#include <utility>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "storage/token.h"

namespace sessiond::server {

using sessiond::v1::internal::KeyRingCommand;
using sessiond::v1::internal::SigningKey;

JwtIssuer::JwtIssuer(std::optional<KeyEncryptionKey> kek,
                     const storage::SessionStateMachine* state_machine)
    : kek_(std::move(kek)), state_machine_(state_machine) {}

absl::StatusOr<std::shared_ptr<const signing::JwtSigner>>
JwtIssuer::ActiveSigner() {
  if (!kek_) {
    return absl::FailedPreconditionError(
        "this node has no key-encryption key to sign JWT tokens with: start "
        "every node with --kek_file (the same file on each), or create the "
        "session with token_format OPAQUE");
  }
  const storage::KeyRingView ring = state_machine_->key_ring();
  const SigningKey* active = ring.active();
  if (active == nullptr) {
    return absl::FailedPreconditionError(
        "the cluster has no active signing key yet: `sessionctl keys stage "
        "--bootstrap` makes one (the first leader with a --kek_file does it "
        "by itself)");
  }
  absl::MutexLock lock(&mu_);
  if (signer_ != nullptr && signer_->kid() == active->kid()) return signer_;
  SESSIOND_ASSIGN_OR_RETURN(
      std::string private_key,
      kek_->Open(active->sealed_private_key(), active->kid()));
  absl::StatusOr<std::unique_ptr<signing::JwtSigner>> signer =
      signing::JwtSigner::Create(active->kid(), private_key);
  // Not kept longer than needed (the signer holds its own copy), and wiped
  // in a way the optimizer may not drop as a dead store.
  OPENSSL_cleanse(private_key.data(), private_key.size());
  if (!signer.ok()) return signer.status();
  signer_ = std::shared_ptr<const signing::JwtSigner>(*std::move(signer));
  return signer_;
}

signing::JwtClaims JwtIssuer::Claims(const std::string& session_id,
                                     const std::string& user_id, int64_t now_ms,
                                     int64_t ttl_ms) {
  signing::JwtClaims claims;
  claims.sid = session_id;
  claims.sub = user_id;
  claims.iat = now_ms / 1000;
  claims.exp = (now_ms + ttl_ms + 999) / 1000;
  return claims;
}

absl::Status JwtIssuer::CanIssue(const std::string& user_id, int64_t now_ms,
                                 int64_t ttl_ms) {
  SESSIOND_ASSIGN_OR_RETURN(std::shared_ptr<const signing::JwtSigner> signer,
                            ActiveSigner());
  // Every session id is as long, and of characters JSON keeps as they are.
  return signer->Check(Claims(std::string(storage::kSessionIdLength, 'A'),
                              user_id, now_ms, ttl_ms));
}

absl::StatusOr<JwtIssuer::Issued> JwtIssuer::Issue(
    const std::string& session_id, const std::string& user_id, int64_t now_ms,
    int64_t ttl_ms) {
  SESSIOND_ASSIGN_OR_RETURN(std::shared_ptr<const signing::JwtSigner> signer,
                            ActiveSigner());
  SESSIOND_ASSIGN_OR_RETURN(
      std::string token,
      signer->Sign(Claims(session_id, user_id, now_ms, ttl_ms)));
  return Issued{std::move(token), signer->kid()};
}

absl::StatusOr<KeyRingCommand::Stage> JwtIssuer::NewKey(bool bootstrap) const {
  if (!kek_) {
    return absl::FailedPreconditionError(
        "this node has no key-encryption key (--kek_file): it cannot make a "
        "signing key; ask a node that has one, or restart this one with "
        "--kek_file");
  }
  SESSIOND_ASSIGN_OR_RETURN(signing::Ed25519KeyPair pair,
                            signing::GenerateEd25519KeyPair());
  SESSIOND_ASSIGN_OR_RETURN(std::string kid,
                            signing::KeyIdForPublicKey(pair.public_key));
  absl::StatusOr<std::string> sealed = kek_->Seal(pair.private_key, kid);
  OPENSSL_cleanse(pair.private_key.data(), pair.private_key.size());
  if (!sealed.ok()) return sealed.status();
  KeyRingCommand::Stage stage;
  stage.set_kid(kid);
  stage.set_algorithm(sessiond::v1::SIGNING_ALGORITHM_ED25519);
  stage.set_public_key(pair.public_key);
  stage.set_sealed_private_key(*std::move(sealed));
  stage.set_bootstrap(bootstrap);
  return stage;
}

}  // namespace sessiond::server
