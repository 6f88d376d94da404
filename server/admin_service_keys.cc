// Copyright sessiond authors. Licensed under the Apache License 2.0.
//
// AdminService: the signing key ring (storage/key_ring.h). Reads answer
// from this node's applied ring; changes go through the log, where the
// state machine applies KeyRing's rules. A key pair is made here, on the
// node that takes StageKey, and only its sealed private half enters the
// log. ActivateKey first asks every member how far it applied, so the
// command can prove that each of them publishes the key, and how long it
// has published it.
#include <algorithm>
#include <limits>
#include <map>
#include <set>
#include <string>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "common/key_encryption.h"
#include "common/signing.h"
#include "server/admin_service.h"
#include "server/grpc_status.h"
#include "server/jwks_document.h"
#include "server/jwt_issuer.h"
#include "server/unary_call.h"

namespace sessiond::server {

using sessiond::v1::MemberStatus;
using sessiond::v1::SigningKeyInfo;
using sessiond::v1::internal::Command;
using sessiond::v1::internal::SigningKey;

SigningKeyInfo AdminServiceImpl::KeyInfo(const SigningKey& key) const {
  SigningKeyInfo info;
  info.set_kid(key.kid());
  info.set_state(key.state());
  info.set_algorithm(key.algorithm());
  info.set_public_key(key.public_key());
  info.set_staged_at_ms(key.staged_at_ms());
  info.set_activated_at_ms(key.activated_at_ms());
  info.set_retiring_at_ms(key.retiring_at_ms());
  info.set_retired_at_ms(key.retired_at_ms());
  if (key.state() != sessiond::v1::SIGNING_KEY_RETIRED &&
      options_.cluster_now_ms) {
    info.set_live_sessions(state_machine_->CountLiveSignedBy(
        key.kid(), options_.cluster_now_ms()));
  }
  if (key.state() == sessiond::v1::SIGNING_KEY_STAGED) {
    info.set_activatable_at_ms(key.staged_at_ms() +
                               state_machine_->jwks_max_age_ms());
  }
  return info;
}

grpc::ServerUnaryReactor* AdminServiceImpl::ListKeys(
    grpc::CallbackServerContext* context,
    const sessiond::v1::ListKeysRequest* /*request*/,
    sessiond::v1::ListKeysResponse* response) {
  const storage::KeyRingView ring = state_machine_->key_ring();
  for (const SigningKey& key : ring.state().keys()) {
    *response->add_keys() = KeyInfo(key);
  }
  if (const SigningKey* active = ring.active()) {
    response->set_active_kid(active->kid());
  }
  return FinishNow(context, absl::OkStatus());
}

grpc::ServerUnaryReactor* AdminServiceImpl::GetJwks(
    grpc::CallbackServerContext* context,
    const sessiond::v1::GetJwksRequest* /*request*/,
    sessiond::v1::GetJwksResponse* response) {
  // The HTTP endpoint's document, max-age and all (JwksDocumentNow).
  absl::StatusOr<JwksDocument> jwks = JwksDocumentNow(*state_machine_, reads_);
  if (!jwks.ok()) return FinishNow(context, jwks.status());
  response->set_jwks_json(std::move(jwks->json));
  response->set_max_age_s(jwks->max_age_s);
  response->set_key_ring_index(jwks->key_ring_index);
  return FinishNow(context, absl::OkStatus());
}

grpc::ServerUnaryReactor* AdminServiceImpl::StageKey(
    grpc::CallbackServerContext* context,
    const sessiond::v1::StageKeyRequest* request,
    sessiond::v1::StageKeyResponse* response) {
  return Audited(
      context, "StageKey", *request, [=, this]() -> grpc::ServerUnaryReactor* {
        if (request->algorithm() !=
                sessiond::v1::SIGNING_ALGORITHM_UNSPECIFIED &&
            request->algorithm() != sessiond::v1::SIGNING_ALGORITHM_ED25519) {
          return FinishNow(context,
                           absl::InvalidArgumentError(
                               "algorithm: only ED25519 is supported"));
        }
        if (options_.jwt_issuer == nullptr) {
          return FinishNow(context, absl::FailedPreconditionError(
                                        "this node cannot make signing keys"));
        }
        absl::StatusOr<sessiond::v1::internal::KeyRingCommand::Stage> stage =
            options_.jwt_issuer->NewKey(request->bootstrap());
        if (!stage.ok()) return FinishNow(context, stage.status());
        const std::string kid = stage->kid();
        Command command;
        *command.mutable_key_ring()->mutable_stage() = *std::move(stage);
        return SubmitThenFinish(
            context, std::move(command),
            [this, response, kid](const std::any&) {
              const storage::KeyRingView ring = state_machine_->key_ring();
              const SigningKey* key = ring.Find(kid);
              if (key == nullptr) {
                return absl::InternalError(absl::StrCat(
                    "key ", kid, " applied but not in this node's ring"));
              }
              *response->mutable_key() = KeyInfo(*key);
              return absl::OkStatus();
            });
      });
}

namespace {

// InvalidArgument unless `kid` could be a key id (kKidLength base64url
// characters): anything else names no key, and asked of the log would be
// replicated to every member only to be refused there.
absl::Status CheckKid(const std::string& kid) {
  if (kid.empty()) {
    return absl::InvalidArgumentError(
        "kid: must not be empty (sessionctl keys list)");
  }
  const bool base64url =
      std::all_of(kid.begin(), kid.end(), [](unsigned char c) {
        return absl::ascii_isalnum(c) || c == '-' || c == '_';
      });
  if (kid.size() != signing::kKidLength || !base64url) {
    return absl::InvalidArgumentError(absl::StrCat(
        "kid: ", kid.size(), " bytes; a key id is ", signing::kKidLength,
        " base64url characters (sessionctl keys list)"));
  }
  return absl::OkStatus();
}

// FailedPrecondition naming the first member that has published staged key
// `kid` for less than the JWKS max-age: until then a cache may hold a
// document from it without the key. Ok when the key is not STAGED here:
// the state machine then refuses with the reason (unknown kid, not staged,
// or, when this node has not applied the stage, a member behind it).
absl::Status CheckPublishedEverywhere(
    const std::string& kid, const std::map<NodeId, MemberStatus>& answers,
    const storage::KeyRingView& ring, int64_t max_age_ms) {
  const SigningKey* key = ring.Find(kid);
  if (key == nullptr || key->state() != sessiond::v1::SIGNING_KEY_STAGED) {
    return absl::OkStatus();
  }
  for (const auto& [id, member] : answers) {
    auto it = member.key_published_ms().find(kid);
    const int64_t published_ms =
        it == member.key_published_ms().end() ? 0 : it->second;
    if (published_ms < max_age_ms) {
      return absl::FailedPreconditionError(absl::StrCat(
          "activate: node ", id.value(), " has published kid ", kid, " for ",
          published_ms, " ms and needs ", max_age_ms,
          " ms (the JWKS max-age, counted from when it applied the stage or "
          "started) so every cached JWKS holds it: retry in ",
          (max_age_ms - published_ms + 999) / 1000, " s"));
    }
  }
  return absl::OkStatus();
}

// FailedPrecondition when a member has a KEK other than the one `kid` is
// sealed under: leading, it could not open the key, and every JWT create
// would fail until leadership moved (members without a KEK cannot sign any
// key; sessionctl status lists them).
absl::Status CheckEveryKekOpensIt(const std::string& kid,
                                  const std::map<NodeId, MemberStatus>& answers,
                                  const storage::KeyRingView& ring) {
  const SigningKey* key = ring.Find(kid);
  if (key == nullptr) return absl::OkStatus();  // the state machine refuses
  const std::string sealed_under =
      KeyEncryptionKey::SealedUnderIdHex(key->sealed_private_key());
  for (const auto& [id, member] : answers) {
    if (!member.kek_id().empty() && member.kek_id() != sealed_under) {
      return absl::FailedPreconditionError(absl::StrCat(
          "activate: node ", id.value(), " has key-encryption key ",
          member.kek_id(), ", and kid ", kid, " is sealed under ", sealed_under,
          ": it could not sign the JWTs of the creates it serves. Start every "
          "node with the same --kek_file, then activate"));
    }
  }
  return absl::OkStatus();
}

}  // namespace

grpc::ServerUnaryReactor* AdminServiceImpl::ActivateKey(
    grpc::CallbackServerContext* context,
    const sessiond::v1::ActivateKeyRequest* request,
    sessiond::v1::ActivateKeyResponse* response) {
  return Audited(
      context, "ActivateKey", *request,
      [=, this]() -> grpc::ServerUnaryReactor* {
        const std::string kid = request->kid();
        if (absl::Status s = CheckKid(kid); !s.ok()) {
          return FinishNow(context, s);
        }
        const std::string previous = [&] {
          const storage::KeyRingView ring = state_machine_->key_ring();
          const SigningKey* active = ring.active();
          return active == nullptr ? std::string() : active->kid();
        }();
        // Every member must publish the key before it signs: ask each how far
        // it applied (the state machine compares the lowest with the stage's
        // index) and how long it has published the key.
        const replication::NodeStatus status = driver_->status();
        std::set<NodeId> members(status.conf_state.voters.begin(),
                                 status.conf_state.voters.end());
        members.insert(status.conf_state.learners.begin(),
                       status.conf_state.learners.end());
        grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
        AskMembers(
            members, /*with_digests=*/false,
            [this, context, reactor, response, kid,
             previous](std::map<NodeId, MemberStatus> answers) {
              uint64_t lowest = std::numeric_limits<uint64_t>::max();
              for (const auto& [id, member] : answers) {
                if (!member.reachable()) {
                  reactor->Finish(
                      ToGrpcStatus(absl::FailedPreconditionError(absl::StrCat(
                          "member ", id.value(),
                          " did not say how far it applied (", member.error(),
                          "): every member must publish a key before it "
                          "signs; retry once it is back, or remove it "
                          "(sessionctl status)"))));
                  return;
                }
                lowest = std::min(lowest, member.applied_index());
              }
              if (answers.empty()) lowest = 0;
              const storage::KeyRingView ring = state_machine_->key_ring();
              absl::Status usable = CheckEveryKekOpensIt(kid, answers, ring);
              if (usable.ok()) {
                usable = CheckPublishedEverywhere(
                    kid, answers, ring, state_machine_->jwks_max_age_ms());
              }
              if (!usable.ok()) {
                reactor->Finish(ToGrpcStatus(usable));
                return;
              }
              Command command;
              auto* activate = command.mutable_key_ring()->mutable_activate();
              activate->set_kid(kid);
              activate->set_voters_applied_index(lowest);
              SubmitThenFinish(
                  context, reactor, std::move(command),
                  [this, response, kid, previous](const std::any&) {
                    const storage::KeyRingView ring =
                        state_machine_->key_ring();
                    if (const SigningKey* key = ring.Find(kid)) {
                      *response->mutable_activated() = KeyInfo(*key);
                    }
                    if (const SigningKey* key = ring.Find(previous);
                        key != nullptr && !previous.empty()) {
                      *response->mutable_retiring() = KeyInfo(*key);
                    }
                    return absl::OkStatus();
                  });
            });
        return reactor;
      });
}

grpc::ServerUnaryReactor* AdminServiceImpl::RetireKey(
    grpc::CallbackServerContext* context,
    const sessiond::v1::RetireKeyRequest* request,
    sessiond::v1::RetireKeyResponse* response) {
  return Audited(
      context, "RetireKey", *request, [=, this]() -> grpc::ServerUnaryReactor* {
        if (absl::Status s = CheckKid(request->kid()); !s.ok()) {
          return FinishNow(context, s);
        }
        Command command;
        auto* retire = command.mutable_key_ring()->mutable_retire();
        retire->set_kid(request->kid());
        retire->set_force(request->force());
        retire->set_expected_live_sessions(request->expected_live_sessions());
        const std::string kid = request->kid();
        return SubmitThenFinish(
            context, std::move(command),
            [this, response, kid](const std::any& result) {
              const storage::KeyRingView ring = state_machine_->key_ring();
              if (const SigningKey* key = ring.Find(kid)) {
                *response->mutable_key() = KeyInfo(*key);
              }
              // As counted when the retire applied: the request's
              // expected_live_sessions was echoed, a count of sessions cut
              // off that a forced retire of an unused key never cut.
              if (const auto* live = std::any_cast<uint64_t>(&result)) {
                response->set_live_sessions(*live);
              }
              return absl::OkStatus();
            });
      });
}

}  // namespace sessiond::server
