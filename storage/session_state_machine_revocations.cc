// Copyright sessiond authors. Licensed under the Apache License 2.0.
//
// SessionStateMachine: flushes, bulk revocations, their restore and purge
// (storage/revocations.h says how a session records what holds it).
#include <algorithm>
#include <string_view>
#include <utility>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "storage/revocations.h"
#include "storage/session_state_machine.h"

namespace sessiond::storage {

using replication::ApplyResult;
using sessiond::v1::Revocation;
using sessiond::v1::Session;
using sessiond::v1::SessionSelector;
using sessiond::v1::internal::ClusterState;
using sessiond::v1::internal::PendingBulkRevoke;

namespace {

bool SameSelector(const SessionSelector& a, const SessionSelector& b) {
  // No maps inside: the encoding is canonical.
  return a.SerializeAsString() == b.SerializeAsString();
}

// Drops the previews whose confirmation time has passed at now_ms.
void DropExpiredPending(int64_t now_ms, ClusterState* cluster) {
  auto* pending = cluster->mutable_pending_bulk_revokes();
  pending->erase(std::remove_if(pending->begin(), pending->end(),
                                [now_ms](const PendingBulkRevoke& p) {
                                  return p.expires_at_ms() <= now_ms;
                                }),
                 pending->end());
}

}  // namespace

std::vector<Revocation> SessionStateMachine::revocations() const {
  absl::MutexLock lock(&mu_);
  std::vector<Revocation> out;
  out.reserve(revocations_.size());
  for (auto it = revocations_.rbegin(); it != revocations_.rend(); ++it) {
    out.push_back(it->second);
  }
  return out;
}

std::optional<Revocation> SessionStateMachine::revocation(uint64_t id) const {
  absl::MutexLock lock(&mu_);
  auto it = revocations_.find(id);
  if (it == revocations_.end()) return std::nullopt;
  return it->second;
}

std::optional<SessionStateMachine::RevocationBrief>
SessionStateMachine::revocation_brief(uint64_t id) const {
  absl::MutexLock lock(&mu_);
  auto it = revocations_.find(id);
  if (it == revocations_.end()) return std::nullopt;
  return RevocationBrief{it->second.reason(), it->second.revoked_at_ms()};
}

std::vector<uint64_t> SessionStateMachine::RevocationsDueForPurge(
    int64_t now_ms, size_t max) const {
  const int64_t retention_now = ExpiryNowMs(now_ms);
  absl::MutexLock lock(&mu_);
  std::vector<uint64_t> due;
  for (const auto& [id, record] : revocations_) {
    if (due.size() >= max) break;
    if (record.restorable_until_ms() <= retention_now) due.push_back(id);
  }
  return due;
}

void SessionStateMachine::ReplaceRevocations(std::vector<Revocation> records) {
  absl::MutexLock lock(&mu_);
  revocations_.clear();
  for (Revocation& record : records) {
    const uint64_t id = record.id();
    revocations_[id] = std::move(record);
  }
}

void SessionStateMachine::PutRevocation(const Revocation& record,
                                        rocksdb::WriteBatch* batch) {
  batch->Put(db_->default_cf(), RevocationKey(record.id()),
             record.SerializeAsString());
  absl::MutexLock lock(&mu_);
  revocations_[record.id()] = record;
}

SessionStateMachine::Selection SessionStateMachine::SelectSessions(
    const SessionSelector& selector, int64_t now_ms) const {
  const int64_t leeway = expiry_leeway_ms();
  const int64_t expiry_now = ExpiryNowMs(now_ms);
  Selection selection;
  absl::flat_hash_set<uint64_t> user_keys;
  if (!SelectsByUser(selector)) {
    table_->ForEachSession([&](const SessionView& session) {
      if (!ScanSelects(selector, session)) return;
      if (IsExpired(session, expiry_now, leeway)) {
        selection.expired.push_back(session.hash);
        return;
      }
      selection.live.push_back(session.hash);
      user_keys.insert(UserCountKey(session.user_id));
    });
    selection.users = user_keys.size();
    return selection;
  }
  std::vector<std::string> user_ids;
  std::string keep;
  if (selector.kind_case() == SessionSelector::kUser) {
    user_ids.push_back(selector.user().user_id());
    keep = selector.user().keep_session_id();
  } else {
    user_ids.assign(selector.users().user_ids().begin(),
                    selector.users().user_ids().end());
    std::sort(user_ids.begin(), user_ids.end());
    user_ids.erase(std::unique(user_ids.begin(), user_ids.end()),
                   user_ids.end());
  }
  for (const std::string& user_id : user_ids) {
    bool any = false;
    for (const TokenHash& hash : table_->UserTokenHashes(user_id)) {
      std::optional<Session> session = table_->Get(hash);
      if (!session || (!keep.empty() && session->session_id() == keep)) {
        continue;
      }
      if (session->state() == v1::SESSION_STATE_REVOKED &&
          session->revoked_by().empty()) {
        continue;  // revoked one by one: final
      }
      if (IsExpired(*session, expiry_now, leeway)) {
        selection.expired.push_back(hash);
        continue;
      }
      selection.live.push_back(hash);
      any = true;
    }
    if (any) ++selection.users;
  }
  return selection;
}

std::vector<TokenHash> SessionStateMachine::SessionsHeldBy(
    const Revocation& record) const {
  std::vector<TokenHash> held;
  const SessionSelector& selector = record.selector();
  if (SelectsByUser(selector)) {
    auto add_user = [&](const std::string& user_id) {
      for (const TokenHash& hash : table_->UserTokenHashes(user_id)) {
        held.push_back(hash);
      }
    };
    if (selector.kind_case() == SessionSelector::kUser) {
      add_user(selector.user().user_id());
    } else {
      for (const std::string& user_id : selector.users().user_ids()) {
        add_user(user_id);
      }
    }
    std::sort(held.begin(), held.end());
    held.erase(std::unique(held.begin(), held.end()), held.end());
    return held;
  }
  const uint64_t id = record.id();
  table_->ForEachSession([&](const SessionView& session) {
    if (session.hold != 0 && table_->HoldContains(session.hold, id)) {
      held.push_back(session.hash);
    }
  });
  return held;
}

absl::StatusOr<Revocation> SessionStateMachine::Revoke(
    const SessionSelector& selector, const std::string& reason,
    int64_t retention_ms, uint64_t id, int64_t now_ms,
    rocksdb::WriteBatch* batch) {
  const Selection selection = SelectSessions(selector, now_ms);
  uint64_t revoked = 0;
  for (const TokenHash& hash : selection.live) {
    if (!table_->AddHold(hash, id)) continue;
    StageSession(hash, batch);
    ++revoked;
  }
  // Expired, yet still in the table until a sweep removes it, and able to
  // come back to use meanwhile (a touch judged on a node cut off from the
  // leader, the expiry breaker's freeze): revoked for good, not held, since
  // restoring the revocation would not give back a session in use.
  for (const TokenHash& hash : selection.expired) {
    std::optional<Session> session = table_->Get(hash);
    if (!session) continue;
    SESSIOND_RETURN_IF_ERROR(
        RevokeForGood(hash, reason, now_ms, &*session, batch));
  }
  Revocation record;
  record.set_id(id);
  *record.mutable_selector() = selector;
  record.set_reason(reason);
  record.set_revoked_at_ms(now_ms);
  record.set_sessions(revoked);
  record.set_users(selection.users);
  record.set_restorable_until_ms(now_ms + std::max<int64_t>(0, retention_ms));
  record.set_state(Revocation::RETAINED);
  return record;
}

ApplyResult SessionStateMachine::ApplyBulkRevoke(
    const v1::internal::BulkRevokeCommand& bulk, LogIndex index, int64_t now_ms,
    ClusterState* cluster, rocksdb::WriteBatch* batch) {
  DropExpiredPending(now_ms, cluster);
  auto* pending = cluster->mutable_pending_bulk_revokes();
  switch (bulk.step_case()) {
    case v1::internal::BulkRevokeCommand::kPrepare: {
      SESSIOND_RETURN_IF_ERROR(CheckSelector(bulk.prepare().selector()));
      if (bulk.prepare().confirmation_token().empty()) {
        return absl::InvalidArgumentError("prepare without a token");
      }
      if (pending->size() >= kMaxPendingBulkRevokes) {
        pending->erase(pending->begin());
      }
      PendingBulkRevoke* added = pending->Add();
      *added = bulk.prepare();
      added->set_expires_at_ms(now_ms + kBulkRevokeConfirmMs);
      return std::any(*added);
    }
    case v1::internal::BulkRevokeCommand::kConfirm: {
      const PendingBulkRevoke& confirm = bulk.confirm();
      auto it = std::find_if(
          pending->begin(), pending->end(), [&](const PendingBulkRevoke& p) {
            return p.confirmation_token() == confirm.confirmation_token();
          });
      if (it == pending->end()) {
        return absl::FailedPreconditionError(
            "the confirmation token is unknown or its 60 s have passed: ask "
            "for a new preview (call again without a token) and confirm "
            "with the token it returns");
      }
      if (!SameSelector(it->selector(), confirm.selector())) {
        return absl::FailedPreconditionError(
            "the confirmation token was issued for another selection: ask "
            "for a preview of this one");
      }
      const PendingBulkRevoke taken = *it;
      pending->erase(it);
      SESSIOND_ASSIGN_OR_RETURN(
          Revocation record,
          Revoke(taken.selector(), taken.reason(), taken.retention_ms(),
                 index.value(), now_ms, batch));
      PutRevocation(record, batch);
      return std::any(std::move(record));
    }
    case v1::internal::BulkRevokeCommand::STEP_NOT_SET:
      break;
  }
  return absl::InvalidArgumentError("bulk revoke command has no step");
}

ApplyResult SessionStateMachine::ApplyRestorableRevokeUser(
    const v1::internal::RevokeUserCommand& revoke_user, LogIndex index,
    int64_t now_ms, rocksdb::WriteBatch* batch) {
  SessionSelector selector;
  selector.mutable_user()->set_user_id(revoke_user.user_id());
  selector.mutable_user()->set_keep_session_id(revoke_user.keep_session_id());
  SESSIOND_ASSIGN_OR_RETURN(
      Revocation record,
      Revoke(selector, revoke_user.reason(), revoke_user.retention_ms(),
             index.value(), now_ms, batch));
  // Nothing to undo: no record.
  if (record.sessions() == 0) return std::any(uint64_t{0});
  PutRevocation(record, batch);
  return std::any(std::move(record));
}

int64_t SessionStateMachine::IdleTimeGivenBack(const TokenHash& hash,
                                               uint64_t restoring,
                                               int64_t now_ms) const {
  // Held since the earliest of its revocations; idle time did not run
  // since. Taking `restoring` out, the session stays held since the
  // earliest of the others (that much is given back now, the rest when the
  // last goes), or is free again (all of it now).
  const auto held_since = [&](uint64_t id) {
    std::optional<RevocationBrief> record = revocation_brief(id);
    return record ? record->revoked_at_ms : now_ms;
  };
  int64_t since = now_ms;
  int64_t since_others = now_ms;
  bool others = false;
  for (uint64_t id : table_->HoldIdsOf(hash)) {
    since = std::min(since, held_since(id));
    if (id == restoring) continue;
    since_others = std::min(since_others, held_since(id));
    others = true;
  }
  return std::max<int64_t>(0, (others ? since_others : now_ms) - since);
}

ApplyResult SessionStateMachine::ApplyRestoreRevocation(
    const v1::internal::RestoreRevocationCommand& restore, int64_t now_ms,
    rocksdb::WriteBatch* batch) {
  const uint64_t id = restore.revocation_id();
  std::optional<Revocation> found = revocation(id);
  if (!found) {
    return absl::NotFoundError(absl::StrCat(
        "revocation ", id,
        " is not retained (never made, or purged after its retention): "
        "sessionctl flushes list shows what can be restored"));
  }
  Revocation record = *std::move(found);
  if (record.state() == Revocation::RESTORED) {
    return absl::FailedPreconditionError(
        absl::StrCat("revocation ", id, " was already restored at ",
                     record.restored_at_ms(), " (cluster time, Unix ms)"));
  }
  // Past its retention it is final, though the purge may not have applied
  // yet (it comes from the leader's sweeper). Retention is judged at the
  // expiry breaker's frozen time, as expiry is: a clock that ran ahead must
  // not end a flush's chance of being undone either.
  const int64_t expiry_now = ExpiryNowMs(now_ms);
  if (record.restorable_until_ms() <= expiry_now) {
    return absl::FailedPreconditionError(absl::StrCat(
        "revocation ", id,
        " can no longer be restored: its retention ended at ",
        record.restorable_until_ms(),
        " (cluster time, Unix ms), so its sessions are revoked for good"));
  }
  const int64_t leeway = expiry_leeway_ms();
  // Held time is real time: given back up to the applied time. Before
  // level 4, up to the breaker's frozen time (a session flushed after the
  // breaker opened got nothing back, and expired at the resume); kept for
  // the entries written so, which every replica must apply alike.
  const int64_t given_back_until =
      restore.give_back_to_applied_time() ? now_ms : expiry_now;
  uint64_t restored = 0, stayed_expired = 0;
  for (const TokenHash& hash : SessionsHeldBy(record)) {
    switch (table_->RemoveHold(hash, id, expiry_now, leeway,
                               IdleTimeGivenBack(hash, id, given_back_until),
                               given_back_until)) {
      case SessionTable::HoldRelease::kNotHeld:
        continue;
      case SessionTable::HoldRelease::kStillHeld:
        break;
      case SessionTable::HoldRelease::kActive:
        ++restored;
        break;
      case SessionTable::HoldRelease::kActiveButExpired:
        ++stayed_expired;
        break;
    }
    StageSession(hash, batch);
  }
  record.set_state(Revocation::RESTORED);
  record.set_restored_at_ms(now_ms);
  record.set_restored(restored);
  record.set_stayed_expired(stayed_expired);
  PutRevocation(record, batch);
  return std::any(std::move(record));
}

ApplyResult SessionStateMachine::ApplyPurgeRevocations(
    const v1::internal::PurgeRevocationsCommand& purge, int64_t now_ms,
    rocksdb::WriteBatch* batch) {
  uint64_t removed = 0;
  // At the breaker's frozen time, as RevocationsDueForPurge.
  const int64_t retention_now = ExpiryNowMs(now_ms);
  for (uint64_t id : purge.revocation_ids()) {
    std::optional<Revocation> record = revocation(id);
    if (!record || record->restorable_until_ms() > retention_now) continue;
    if (record->state() == Revocation::RETAINED) {
      for (const TokenHash& hash : SessionsHeldBy(*record)) {
        if (!table_->IsHeldBy(hash, id)) continue;
        // Its revocation is final now, whatever else holds it.
        table_->Erase(hash);
        batch->Delete(db_->sessions_cf(), rocksdb::Slice(TokenHashBytes(hash)));
        ++removed;
      }
    }
    batch->Delete(db_->default_cf(), RevocationKey(id));
    absl::MutexLock lock(&mu_);
    revocations_.erase(id);
  }
  return std::any(removed);
}

}  // namespace sessiond::storage
