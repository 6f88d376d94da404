// Copyright sessiond authors. Licensed under the Apache License 2.0.
#include "storage/session_state_machine.h"

#include <algorithm>
#include <limits>
#include <thread>
#include <utility>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "rocksdb/iterator.h"
#include "rocksdb/options.h"
#include "storage/keys.h"
#include "storage/wire.h"

namespace sessiond::storage {

using replication::ApplyResult;
using replication::Entry;
using replication::EntryType;
using sessiond::v1::Session;
using sessiond::v1::internal::Command;

namespace {

absl::StatusOr<TokenHash> ParseHash(const std::string& bytes) {
  std::optional<TokenHash> hash = TokenHashFromBytes(bytes);
  if (!hash) {
    return absl::InvalidArgumentError(
        absl::StrCat("token_hash must be 32 bytes, got ", bytes.size()));
  }
  return *hash;
}

absl::Status ReadInt64(Database* db, const char* key, uint64_t* value) {
  std::string bytes;
  rocksdb::Status s =
      db->db()->Get(rocksdb::ReadOptions(), db->default_cf(), key, &bytes);
  if (s.IsNotFound()) {
    *value = 0;
    return absl::OkStatus();
  }
  if (!s.ok()) return FromRocksStatus(s, absl::StrCat("reading ", key));
  if (bytes.size() != 8) {
    return absl::DataLossError(
        absl::StrCat(key, " is ", bytes.size(), " bytes, want 8"));
  }
  *value = DecodeFixed64BE(bytes);
  return absl::OkStatus();
}

// Loads the keys whose first byte is in [lo, hi) (hi 256: to the end).
absl::Status LoadRange(Database* db, SessionTable* table, int slot, int lo,
                       int hi) {
  rocksdb::ReadOptions read_options;
  read_options.readahead_size = 4 << 20;
  read_options.fill_cache = false;
  read_options.verify_checksums = true;
  const std::string lo_key(1, static_cast<char>(lo));
  const std::string hi_key(1, static_cast<char>(hi));
  rocksdb::Slice upper(hi_key);
  if (hi < 256) read_options.iterate_upper_bound = &upper;
  std::unique_ptr<rocksdb::Iterator> it(
      db->db()->NewIterator(read_options, db->sessions_cf()));
  for (it->Seek(lo_key); it->Valid(); it->Next()) {
    const rocksdb::Slice key = it->key();
    const rocksdb::Slice value = it->value();
    absl::Status status =
        table->LoadStored(slot, std::string_view(value.data(), value.size()));
    if (!status.ok()) {
      return absl::DataLossError(absl::StrCat(
          "sessions CF record ",
          absl::BytesToHexString(absl::string_view(key.data(), key.size())),
          ": ", status.message()));
    }
  }
  return FromRocksStatus(it->status(), "scanning the sessions CF");
}

absl::Status LoadRanges(Database* db, SessionTable* table, int threads) {
  if (threads == 1) return LoadRange(db, table, 0, 0, 256);
  std::vector<absl::Status> statuses(threads);
  std::vector<std::thread> workers;
  for (int i = 0; i < threads; ++i) {
    workers.emplace_back([&, i] {
      statuses[i] =
          LoadRange(db, table, i, 256 * i / threads, 256 * (i + 1) / threads);
    });
  }
  for (std::thread& t : workers) t.join();
  for (const absl::Status& status : statuses) {
    if (!status.ok()) return status;
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status LoadSessions(Database* db, SessionTable* table, int threads) {
  threads = std::clamp(threads, 1, 16);
  table->StartLoad(threads);
  absl::Status status = LoadRanges(db, table, threads);
  absl::Status finish = table->FinishLoad();
  if (!status.ok()) {
    table->Clear();
    return status;
  }
  if (!finish.ok()) {
    return absl::DataLossError(absl::StrCat("sessions CF: ", finish.message()));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<SessionStateMachine>> SessionStateMachine::Open(
    Database* db, SessionTable* table,
    const SessionStateMachineOptions& options) {
  if (table->size() != 0) {
    return absl::FailedPreconditionError(
        "SessionStateMachine::Open needs an empty table");
  }
  uint64_t applied = 0, applied_time = 0;
  SESSIOND_RETURN_IF_ERROR(ReadInt64(db, kAppliedIndexKey, &applied));
  SESSIOND_RETURN_IF_ERROR(ReadInt64(db, kAppliedTimeKey, &applied_time));
  int threads = options.load_threads;
  if (threads <= 0) {
    threads = std::clamp<int>(std::thread::hardware_concurrency(), 1, 4);
  }
  absl::Status status = LoadSessions(db, table, threads);
  if (!status.ok()) {
    table->Clear();
    return status;
  }
  return std::unique_ptr<SessionStateMachine>(
      new SessionStateMachine(db, table, options, LogIndex(applied),
                              static_cast<int64_t>(applied_time)));
}

SessionStateMachine::SessionStateMachine(
    Database* db, SessionTable* table,
    const SessionStateMachineOptions& options, LogIndex applied,
    int64_t applied_time_ms)
    : db_(db),
      table_(table),
      options_(options),
      applied_index_(applied.value()),
      applied_time_ms_(applied_time_ms) {}

void SessionStateMachine::StageSession(const TokenHash& hash,
                                       rocksdb::WriteBatch* batch) {
  std::optional<std::string> bytes = table_->SerializeStored(hash);
  if (bytes) {
    batch->Put(db_->sessions_cf(), rocksdb::Slice(TokenHashBytes(hash)),
               *bytes);
  }
}

absl::StatusOr<std::vector<ApplyResult>> SessionStateMachine::Apply(
    const std::vector<Entry>& entries) {
  std::vector<ApplyResult> results;
  results.reserve(entries.size());
  if (entries.empty()) return results;
  LogIndex applied = applied_index();
  int64_t now_ms = applied_time_ms();
  rocksdb::WriteBatch batch;
  for (const Entry& entry : entries) {
    if (entry.index <= applied) {
      // Already applied (a replay overlapping what the state holds): the
      // result was delivered the first time.
      results.push_back(std::any());
      continue;
    }
    if (entry.index != applied + 1) {
      return absl::FailedPreconditionError(
          absl::StrCat("apply of entry ", entry.index.value(),
                       " after applied index ", applied.value()));
    }
    applied = entry.index;
    if (entry.type == EntryType::kConfChange || entry.data.empty()) {
      results.push_back(std::any());
      continue;
    }
    Command command;
    if (!command.ParseFromString(entry.data)) {
      results.push_back(absl::InvalidArgumentError(absl::StrCat(
          "entry ", entry.index.value(), " is not a sessiond command")));
      continue;
    }
    now_ms = std::max(now_ms, command.timestamp_ms());
    results.push_back(ApplyCommand(command, now_ms, &batch));
  }
  batch.Put(db_->default_cf(), kAppliedIndexKey,
            EncodeFixed64BE(applied.value()));
  batch.Put(db_->default_cf(), kAppliedTimeKey,
            EncodeFixed64BE(static_cast<uint64_t>(now_ms)));
  // Not synced: the log holds the commands and replays them after a crash.
  SESSIOND_RETURN_IF_ERROR(db_->Write(&batch, /*sync=*/false));
  applied_time_ms_.store(now_ms, std::memory_order_release);
  applied_index_.store(applied.value(), std::memory_order_release);
  return results;
}

ApplyResult SessionStateMachine::ApplyCommand(const Command& command,
                                              int64_t now_ms,
                                              rocksdb::WriteBatch* batch) {
  switch (command.op_case()) {
    case Command::kCreate:
      return ApplyCreate(command.create(), now_ms, batch);
    case Command::kTouch:
      return ApplyTouch(command.touch(), now_ms, batch);
    case Command::kUpdate:
      return ApplyUpdate(command.update(), now_ms, batch);
    case Command::kRevoke:
      return ApplyRevoke(command.revoke(), now_ms, batch);
    case Command::kRevokeUser:
      return ApplyRevokeUser(command.revoke_user(), now_ms, batch);
    case Command::kExpire:
      return ApplyExpire(command.expire(), now_ms, batch);
    case Command::OP_NOT_SET:
      break;
  }
  return absl::InvalidArgumentError("command has no operation");
}

ApplyResult SessionStateMachine::ApplyCreate(
    const v1::internal::CreateCommand& create, int64_t now_ms,
    rocksdb::WriteBatch* batch) {
  SESSIOND_ASSIGN_OR_RETURN(const TokenHash hash,
                            ParseHash(create.token_hash()));
  if (table_->Contains(hash)) {
    return absl::AlreadyExistsError("a session with this token already exists");
  }
  if (table_->TokenHashOf(create.session_id())) {
    return absl::AlreadyExistsError(
        absl::StrCat("session_id ", create.session_id(), " already exists"));
  }
  Session session;
  session.set_session_id(create.session_id());
  session.set_user_id(create.user_id());
  session.set_created_at_ms(now_ms);
  session.set_expires_at_ms(create.expires_at_ms());
  session.set_idle_timeout_ms(create.idle_timeout_ms());
  session.set_last_seen_at_ms(now_ms);
  *session.mutable_attributes() = create.attributes();
  session.set_version(1);
  session.set_state(v1::SESSION_STATE_ACTIVE);
  if (create.has_client()) *session.mutable_client() = create.client();
  SESSIOND_RETURN_IF_ERROR(table_->Insert(hash, session));
  StageSession(hash, batch);
  return std::any(std::move(session));
}

ApplyResult SessionStateMachine::ApplyTouch(
    const v1::internal::TouchCommand& touch, int64_t now_ms,
    rocksdb::WriteBatch* batch) {
  const int64_t leeway = options_.expiry_leeway_ms;
  if (touch.touches_size() == 1) {
    const auto& t = touch.touches(0);
    SESSIOND_ASSIGN_OR_RETURN(const TokenHash hash, ParseHash(t.token_hash()));
    std::optional<Session> session = table_->Get(hash);
    if (!session) return absl::NotFoundError("no such session");
    if (session->state() == v1::SESSION_STATE_REVOKED) {
      return absl::FailedPreconditionError("session is revoked");
    }
    if (IsExpired(*session, now_ms, leeway)) {
      return absl::FailedPreconditionError("session is expired");
    }
    // A node's clock may run ahead of the leader's: never past applied time.
    const int64_t seen =
        std::min(t.seen_at_ms() > 0 ? t.seen_at_ms() : now_ms, now_ms);
    if (seen > session->last_seen_at_ms()) {
      table_->SetLastSeen(hash, seen);
      session->set_last_seen_at_ms(seen);
      StageSession(hash, batch);
    }
    return std::any(*std::move(session));
  }
  uint64_t touched = 0;
  for (const auto& t : touch.touches()) {
    std::optional<TokenHash> hash = TokenHashFromBytes(t.token_hash());
    if (!hash) continue;
    std::optional<Session> session = table_->Get(*hash);
    if (!session || session->state() == v1::SESSION_STATE_REVOKED ||
        IsExpired(*session, now_ms, leeway)) {
      continue;
    }
    const int64_t seen =
        std::min(t.seen_at_ms() > 0 ? t.seen_at_ms() : now_ms, now_ms);
    if (seen > session->last_seen_at_ms()) {
      table_->SetLastSeen(*hash, seen);
      StageSession(*hash, batch);
    }
    ++touched;
  }
  return std::any(touched);
}

ApplyResult SessionStateMachine::ApplyUpdate(
    const v1::internal::UpdateCommand& update, int64_t now_ms,
    rocksdb::WriteBatch* batch) {
  SESSIOND_ASSIGN_OR_RETURN(const TokenHash hash,
                            ParseHash(update.token_hash()));
  std::optional<Session> session = table_->Get(hash);
  if (!session) return absl::NotFoundError("no such session");
  if (session->state() == v1::SESSION_STATE_REVOKED) {
    return absl::FailedPreconditionError("session is revoked");
  }
  if (IsExpired(*session, now_ms, options_.expiry_leeway_ms)) {
    return absl::FailedPreconditionError("session is expired");
  }
  if (session->version() >= std::numeric_limits<uint32_t>::max()) {
    return absl::FailedPreconditionError("session is at its version limit");
  }
  if (update.expected_version() != 0 &&
      update.expected_version() != session->version()) {
    return absl::AbortedError(
        absl::StrCat("version mismatch: expected ", update.expected_version(),
                     ", session is at ", session->version()));
  }
  auto* attributes = session->mutable_attributes();
  for (const auto& [key, value] : update.set_attributes()) {
    (*attributes)[key] = value;
  }
  for (const std::string& key : update.remove_attributes()) {
    attributes->erase(key);
  }
  session->set_version(session->version() + 1);
  SESSIOND_RETURN_IF_ERROR(table_->Replace(hash, *session));
  StageSession(hash, batch);
  return std::any(*std::move(session));
}

ApplyResult SessionStateMachine::ApplyRevoke(
    const v1::internal::RevokeCommand& revoke, int64_t now_ms,
    rocksdb::WriteBatch* batch) {
  TokenHash hash;
  switch (revoke.session().key_case()) {
    case v1::internal::SessionRef::kTokenHash: {
      SESSIOND_ASSIGN_OR_RETURN(hash, ParseHash(revoke.session().token_hash()));
      break;
    }
    case v1::internal::SessionRef::kSessionId: {
      std::optional<TokenHash> found =
          table_->TokenHashOf(revoke.session().session_id());
      if (!found) return absl::NotFoundError("no such session_id");
      hash = *found;
      break;
    }
    case v1::internal::SessionRef::KEY_NOT_SET:
      return absl::InvalidArgumentError("revoke names no session");
  }
  std::optional<Session> session = table_->Get(hash);
  if (!session) return absl::NotFoundError("no such session");
  if (session->state() == v1::SESSION_STATE_REVOKED) {
    return std::any(*std::move(session));  // idempotent
  }
  session->set_state(v1::SESSION_STATE_REVOKED);
  session->set_revoke_reason(revoke.reason());
  session->set_revoked_at_ms(now_ms);
  SESSIOND_RETURN_IF_ERROR(table_->Replace(hash, *session));
  StageSession(hash, batch);
  return std::any(*std::move(session));
}

ApplyResult SessionStateMachine::ApplyRevokeUser(
    const v1::internal::RevokeUserCommand& revoke_user, int64_t now_ms,
    rocksdb::WriteBatch* batch) {
  uint64_t revoked = 0;
  for (const TokenHash& hash : table_->UserTokenHashes(revoke_user.user_id())) {
    std::optional<Session> session = table_->Get(hash);
    if (!session || session->state() == v1::SESSION_STATE_REVOKED ||
        IsExpired(*session, now_ms, options_.expiry_leeway_ms)) {
      continue;
    }
    if (!revoke_user.keep_session_id().empty() &&
        session->session_id() == revoke_user.keep_session_id()) {
      continue;
    }
    session->set_state(v1::SESSION_STATE_REVOKED);
    session->set_revoke_reason(revoke_user.reason());
    session->set_revoked_at_ms(now_ms);
    SESSIOND_RETURN_IF_ERROR(table_->Replace(hash, *session));
    StageSession(hash, batch);
    ++revoked;
  }
  return std::any(revoked);
}

ApplyResult SessionStateMachine::ApplyExpire(
    const v1::internal::ExpireCommand& expire, int64_t now_ms,
    rocksdb::WriteBatch* batch) {
  uint64_t removed = 0;
  for (const std::string& bytes : expire.token_hashes()) {
    std::optional<TokenHash> hash = TokenHashFromBytes(bytes);
    if (!hash) continue;
    std::optional<Session> session = table_->Get(*hash);
    // Re-checked at the applied time: a session touched after the sweeper
    // looked at it stays.
    if (!session || !IsExpired(*session, now_ms, options_.expiry_leeway_ms)) {
      continue;
    }
    table_->Erase(*hash);
    batch->Delete(db_->sessions_cf(), rocksdb::Slice(TokenHashBytes(*hash)));
    ++removed;
  }
  return std::any(removed);
}

// The snapshot image:
//   varint applied_index, varint applied_time_ms, varint count,
//   then `count` times: varint size, StoredSession bytes.
absl::StatusOr<std::string> SessionStateMachine::TakeSnapshot() {
  std::string image;
  wire::PutVarint(&image, applied_index().value());
  wire::PutVarint(&image, static_cast<uint64_t>(applied_time_ms()));
  wire::PutVarint(&image, table_->size());
  uint64_t count = 0;
  table_->ForEachStored([&](const TokenHash&, std::string_view bytes) {
    wire::PutVarint(&image, bytes.size());
    image.append(bytes);
    ++count;
  });
  if (count != table_->size()) {
    return absl::InternalError("table changed while taking a snapshot");
  }
  return image;
}

absl::Status SessionStateMachine::ApplySnapshot(
    const replication::Snapshot& snapshot) {
  std::string_view in = snapshot.data;
  uint64_t index, time, count;
  if (!wire::GetVarint(&in, &index) || !wire::GetVarint(&in, &time) ||
      !wire::GetVarint(&in, &count)) {
    return absl::DataLossError("snapshot image header does not parse");
  }
  std::vector<std::string_view> records;
  records.reserve(std::min<uint64_t>(count, in.size()));
  for (uint64_t i = 0; i < count; ++i) {
    uint64_t size;
    if (!wire::GetVarint(&in, &size) || size > in.size()) {
      return absl::DataLossError("snapshot image is truncated");
    }
    records.push_back(in.substr(0, size));
    in.remove_prefix(size);
  }
  if (!in.empty()) {
    return absl::DataLossError("trailing bytes after the snapshot image");
  }

  // Check every record before touching anything, so that a bad image
  // leaves the state as it was.
  {
    absl::flat_hash_set<std::string> hashes, session_ids;
    v1::internal::StoredSession stored;
    for (std::string_view bytes : records) {
      if (!stored.ParseFromArray(bytes.data(),
                                 static_cast<int>(bytes.size()))) {
        return absl::DataLossError(
            "snapshot image has a record that does not parse");
      }
      const std::string& sid = stored.session().session_id();
      const std::string& uid = stored.session().user_id();
      if (stored.token_hash().size() != 32 || sid.empty() || sid.size() > 255 ||
          uid.empty() || uid.size() > 65535) {
        return absl::DataLossError("snapshot image has a malformed record");
      }
      if (!hashes.insert(stored.token_hash()).second ||
          !session_ids.insert(sid).second) {
        return absl::DataLossError("snapshot image has a duplicate session");
      }
    }
  }

  table_->Clear();
  rocksdb::WriteBatch batch;
  batch.DeleteRange(db_->sessions_cf(), rocksdb::Slice(""),
                    rocksdb::Slice(std::string(33, '\xff')));
  table_->StartLoad(1);
  absl::Status status;
  for (std::string_view bytes : records) {
    status = table_->LoadStored(0, bytes);
    if (!status.ok()) break;
  }
  absl::Status finish = table_->FinishLoad();
  if (status.ok()) status = finish;
  if (!status.ok()) {
    // Not expected after the checks above; the table no longer matches the
    // sessions CF, so the caller must stop (a restart reloads from RocksDB).
    table_->Clear();
    return absl::InternalError(absl::StrCat(
        "snapshot image failed to load after validation: ", status.message()));
  }
  // Store the records as the table re-encodes them (the canonical form).
  table_->ForEachStored([&](const TokenHash& hash, std::string_view bytes) {
    batch.Put(db_->sessions_cf(), rocksdb::Slice(TokenHashBytes(hash)),
              rocksdb::Slice(bytes.data(), bytes.size()));
  });
  const int64_t applied_time =
      std::max(applied_time_ms(), static_cast<int64_t>(time));
  batch.Put(db_->default_cf(), kAppliedIndexKey,
            EncodeFixed64BE(snapshot.meta.index.value()));
  batch.Put(db_->default_cf(), kAppliedTimeKey,
            EncodeFixed64BE(static_cast<uint64_t>(applied_time)));
  // Synced: the log below the snapshot may be dropped right after this.
  SESSIOND_RETURN_IF_ERROR(db_->Write(&batch, /*sync=*/true));
  applied_time_ms_.store(applied_time, std::memory_order_release);
  applied_index_.store(snapshot.meta.index.value(), std::memory_order_release);
  (void)index;
  return absl::OkStatus();
}

}  // namespace sessiond::storage
