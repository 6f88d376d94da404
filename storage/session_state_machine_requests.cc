// Copyright sessiond authors. Licensed under the Apache License 2.0.
//
// SessionStateMachine: retryable creates (CreateSession.request_id,
// storage/create_requests.h), token rotation and the per-user cap on live
// sessions. Every decision reads only the state and the command, so every
// replica decides alike.
#include <algorithm>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "storage/create_requests.h"
#include "storage/keys.h"
#include "storage/session_state_machine.h"

namespace sessiond::storage {

using replication::ApplyResult;
using sessiond::v1::Session;

namespace {

// The most request keys one purge removes when the command says 0.
constexpr uint32_t kDefaultPurgeBatch = 10'000;

absl::Status RequestSessionEnded(const std::string& session_id) {
  return absl::FailedPreconditionError(absl::StrCat(
      "request_id: the session this request_id created (session_id ",
      session_id,
      ") has since been revoked, has expired or had its token rotated, so "
      "its token is no longer valid; create it with a new request_id"));
}

}  // namespace

std::optional<ApplyResult> SessionStateMachine::CreateReplay(
    const v1::internal::CreateCommand& create, int64_t now_ms) {
  if (create.request_key().size() != kRequestKeyBytes) {
    return ApplyResult(absl::InvalidArgumentError(
        absl::StrCat("request_key must be ", kRequestKeyBytes, " bytes, got ",
                     create.request_key().size())));
  }
  std::optional<CreateRequestTable::Record> found =
      create_requests_.Find(create.request_key(), now_ms);
  if (!found) return std::nullopt;
  // The session the first create made, under the token it was given: the
  // retry recomputes that token, so a rotated one must not be handed out.
  std::optional<TokenHash> current = table_->TokenHashOf(found->session_id());
  std::optional<Session> session;
  if (current && TokenHashBytes(*current) == found->token_hash()) {
    session = table_->Get(*current);
  }
  if (!session || session->state() == v1::SESSION_STATE_REVOKED ||
      IsExpired(*session, ExpiryNowMs(now_ms), expiry_leeway_ms())) {
    return ApplyResult(RequestSessionEnded(found->session_id()));
  }
  // The same request_id with other fields is another login reusing an id,
  // not a retry: handing it the first session would ignore what it asked.
  if (!found->request_digest().empty() && !create.request_digest().empty() &&
      found->request_digest() != create.request_digest()) {
    return ApplyResult(absl::FailedPreconditionError(absl::StrCat(
        "request_id: already used by this user within its window for a "
        "create with other fields (ttl_ms, idle_timeout_ms, attributes or "
        "client metadata; session_id ",
        found->session_id(),
        "): a retry must send the same request, and a new login a new "
        "request_id")));
  }
  return ApplyResult(std::any(*std::move(session)));
}

void SessionStateMachine::RememberCreateRequest(
    const v1::internal::CreateCommand& create, int64_t now_ms,
    rocksdb::WriteBatch* batch) {
  const int64_t window =
      create.request_window_ms() > 0
          ? std::min(create.request_window_ms(), kMaxCreateRequestWindowMs)
          : kDefaultCreateRequestWindowMs;
  const uint32_t max_entries = create.request_max_entries() > 0
                                   ? create.request_max_entries()
                                   : kDefaultCreateRequestMaxEntries;
  CreateRequestTable::Record record;
  record.set_request_key(create.request_key());
  record.set_token_hash(create.token_hash());
  record.set_session_id(create.session_id());
  record.set_expires_at_ms(now_ms + window);
  record.set_request_digest(create.request_digest());
  std::vector<std::string> evicted;
  create_requests_.Put(record, max_entries, &evicted);
  batch->Put(db_->default_cf(), CreateRequestDbKey(record.request_key()),
             record.SerializeAsString());
  for (const std::string& key : evicted) {
    batch->Delete(db_->default_cf(), CreateRequestDbKey(key));
  }
}

absl::Status SessionStateMachine::CheckUserCap(const std::string& user_id,
                                               uint32_t cap, uint64_t adding,
                                               int64_t now_ms) const {
  if (cap == 0 || adding == 0) return absl::OkStatus();
  // Live: active and unexpired (with the leeway), as ListUserSessions lists
  // them; counted up to the cap.
  const uint64_t live =
      table_
          ->ListUser(user_id, cap, "", /*include_revoked=*/false,
                     ExpiryNowMs(now_ms), expiry_leeway_ms())
          .sessions.size();
  if (live + adding <= cap) return absl::OkStatus();
  return absl::FailedPreconditionError(
      absl::StrCat("the user already has the most live sessions allowed (", cap,
                   ", --max_sessions_per_user)",
                   adding > 1 ? absl::StrCat(" for ", adding, " more") : "",
                   ": revoke one (RevokeSession) or wait until one expires"));
}

ApplyResult SessionStateMachine::ApplyRotate(
    const v1::internal::RotateCommand& rotate, int64_t now_ms,
    rocksdb::WriteBatch* batch) {
  std::optional<TokenHash> old_hash = TokenHashFromBytes(rotate.token_hash());
  std::optional<TokenHash> new_hash =
      TokenHashFromBytes(rotate.new_token_hash());
  if (!old_hash || !new_hash) {
    return absl::InvalidArgumentError("token_hash must be 32 bytes");
  }
  std::optional<Session> session = table_->Get(*old_hash);
  if (!session) return absl::NotFoundError("no such session");
  if (session->state() == v1::SESSION_STATE_REVOKED) {
    return absl::FailedPreconditionError("session is revoked");
  }
  if (IsExpired(*session, ExpiryNowMs(now_ms), expiry_leeway_ms())) {
    return absl::FailedPreconditionError("session is expired");
  }
  if (table_->Contains(*new_hash)) {
    return absl::AlreadyExistsError("a session with this token already exists");
  }
  // Same record under the new hash: session_id, attributes, times, version
  // and client metadata are unchanged, and readers never miss it meanwhile.
  if (absl::Status rekeyed = table_->Rekey(*old_hash, *new_hash);
      !rekeyed.ok()) {
    return rekeyed;  // not expected: both hashes were just checked
  }
  // The new token is opaque: no key signed it, so none may count it as a
  // session of theirs (it would hold that key from retiring).
  if (!session->signing_kid().empty()) {
    session->clear_signing_kid();
    SESSIOND_RETURN_IF_ERROR(table_->Replace(*new_hash, *session));
  }
  // Its caller presented the old token: a use, as a touch is. The touches
  // still on their way were recorded under the old token and find nothing
  // when they land, so a user who validated just before the rotation idled
  // out an idle timeout after their last touch that had reached the log.
  if (now_ms > session->last_seen_at_ms()) {
    table_->SetLastSeen(*new_hash, now_ms);
    session->set_last_seen_at_ms(now_ms);
  }
  batch->Delete(db_->sessions_cf(), rocksdb::Slice(TokenHashBytes(*old_hash)));
  StageSession(*new_hash, batch);
  return std::any(*std::move(session));
}

ApplyResult SessionStateMachine::ApplyCreateKey(
    const v1::internal::CreateKeyCommand& command, rocksdb::WriteBatch* batch) {
  if (command.key().size() != kCreateKeyBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("create key must be ", kCreateKeyBytes, " bytes"));
  }
  // The first key applied stays: tokens already derived depend on it.
  if (create_requests_.create_key().empty()) {
    create_requests_.set_create_key(command.key());
    batch->Put(db_->default_cf(), kCreateKeyDbKey, command.key());
  }
  return std::any();
}

ApplyResult SessionStateMachine::ApplyPurgeCreateRequests(
    const v1::internal::PurgeCreateRequestsCommand& purge, int64_t now_ms,
    rocksdb::WriteBatch* batch) {
  const std::vector<std::string> taken = create_requests_.TakeExpired(
      now_ms, purge.max() > 0 ? purge.max() : kDefaultPurgeBatch);
  for (const std::string& key : taken) {
    batch->Delete(db_->default_cf(), CreateRequestDbKey(key));
  }
  return std::any(static_cast<uint64_t>(taken.size()));
}

}  // namespace sessiond::storage
