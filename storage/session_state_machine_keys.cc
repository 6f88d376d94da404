// Copyright sessiond authors. Licensed under the Apache License 2.0.
//
// SessionStateMachine: the signing key ring (storage/key_ring.h). The ring
// is part of the replicated cluster state (ClusterState.key_ring: so in
// every snapshot and in the state digest); what a command needs besides
// itself comes from replicated state too: the JWKS max-age (a setting the
// first leader writes) and, for a retirement, the live sessions the key
// signed as this entry finds them in the table (with those a restorable
// revocation holds).
#include <chrono>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/log.h"
#include "common/steady_clock.h"
#include "storage/session_state_machine.h"

namespace sessiond::storage {

using replication::ApplyResult;
using sessiond::v1::internal::ClusterState;
using sessiond::v1::internal::SigningKey;

uint64_t SessionStateMachine::CountLiveSignedBy(std::string_view kid,
                                                int64_t now_ms) const {
  if (kid.empty()) return 0;
  const int64_t expiry_now = ExpiryNowMs(now_ms);
  const int64_t leeway = expiry_leeway_ms();
  // A session a revocation that can still be restored holds comes back
  // ACTIVE, with its token, on a restore: live, as far as its key goes.
  // Restorable as ApplyRestoreRevocation judges it, at the expiry
  // breaker's frozen time: judged at now_ms, a flush held past its
  // retention by an open breaker counted as gone, the key retired, and the
  // restore brought its sessions back with tokens no JWKS verified.
  std::vector<uint64_t> restorable;
  {
    absl::MutexLock lock(&mu_);
    for (const auto& [id, record] : revocations_) {
      if (record.state() == v1::Revocation::RETAINED &&
          record.restorable_until_ms() > expiry_now) {
        restorable.push_back(id);
      }
    }
  }
  auto restorable_hold = [&](uint32_t hold) {
    if (hold == 0) return false;
    for (uint64_t id : restorable) {
      if (table_->HoldContains(hold, id)) return true;
    }
    return false;
  };
  uint64_t live = 0;
  table_->ForEachSession([&](const SessionView& session) {
    if (session.revoked && !restorable_hold(session.hold)) return;
    // By its absolute expiry only: a session past its idle timeout here
    // may still be saved by a touch recorded while its node was cut off
    // (judged at that node's idle time, TouchFindsExpired), and the sweeper
    // removes idle sessions anyway.
    if (IsExpired(session.expires_at_ms, /*idle_timeout_ms=*/0,
                  session.last_seen_at_ms, expiry_now, leeway)) {
      return;
    }
    if (SigningKidOf(session) == kid) ++live;
  });
  return live;
}

absl::Status SessionStateMachine::CheckSigningKid(std::string_view kid) const {
  if (kid.empty()) return absl::OkStatus();
  const KeyRingView ring = key_ring_.View();
  const v1::internal::SigningKey* key = ring.Find(kid);
  if (key != nullptr && key->state() != v1::SIGNING_KEY_RETIRED) {
    return absl::OkStatus();
  }
  return absl::AbortedError(absl::StrCat(
      "the token's signing key (kid ",
      absl::string_view(kid.data(), kid.size()),
      ") was retired while the create was on its way, so no JWKS would "
      "verify the token; nothing was created: retry the create (the active "
      "key signs it)"));
}

ApplyResult SessionStateMachine::ApplyKeyRing(
    const v1::internal::KeyRingCommand& command, LogIndex index, int64_t now_ms,
    ClusterState* cluster) {
  KeyRingApplyContext context;
  context.index = index.value();
  context.applied_time_ms = now_ms;
  context.min_publish_ms = cluster->jwks_max_age_ms();
  if (command.has_retire()) {
    context.live_sessions = CountLiveSignedBy(command.retire().kid(), now_ms);
  }
  absl::StatusOr<v1::internal::KeyRingState> next =
      KeyRing::Next(cluster->key_ring(), command, context);
  if (!next.ok()) return next.status();
  *cluster->mutable_key_ring() = *std::move(next);
  // A retire answers how many live sessions it cut off (uint64_t).
  if (command.has_retire()) return std::any(context.live_sessions);
  return std::any();
}

void SessionStateMachine::PublishKeyRing(const ClusterState& cluster) {
  jwks_max_age_ms_.store(cluster.jwks_max_age_ms(), std::memory_order_release);
  if (cluster.key_ring().changed_index() == key_ring_.View().changed_index()) {
    return;
  }
  if (absl::Status s =
          key_ring_.Restore(cluster.key_ring().SerializeAsString());
      !s.ok()) {
    // Next() kept the invariants, so this is a bug: keep serving the ring
    // readers had, and say so.
    logging::Error("key_ring.publish_failed", logging::Fields().Error(s));
  }
  const int64_t now_ns = SteadyNowNs();
  const KeyRingView ring = key_ring_.View();
  absl::MutexLock lock(&published_mu_);
  std::map<std::string, int64_t> published;
  for (const SigningKey& key : ring.state().keys()) {
    if (key.state() == v1::SIGNING_KEY_RETIRED) continue;
    auto it = published_at_ns_.find(key.kid());
    published[key.kid()] = it == published_at_ns_.end() ? now_ns : it->second;
  }
  published_at_ns_ = std::move(published);
}

std::map<std::string, int64_t> SessionStateMachine::KeyPublishedMs() const {
  const int64_t now_ns = SteadyNowNs();
  absl::MutexLock lock(&published_mu_);
  std::map<std::string, int64_t> out;
  for (const auto& [kid, since_ns] : published_at_ns_) {
    out[kid] = (now_ns - since_ns) / 1'000'000;
  }
  return out;
}

}  // namespace sessiond::storage
