// Copyright sessiond authors. Licensed under the Apache License 2.0.
#include "storage/session_state_machine.h"

#include <openssl/evp.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <deque>
#include <functional>
#include <limits>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "common/check.h"
#include "common/log.h"
#include "common/status_macros.h"
#include "common/steady_clock.h"
#include "rocksdb/iterator.h"
#include "rocksdb/options.h"
#include "rocksdb/write_batch.h"
#include "storage/audit_log.h"
#include "storage/command_level.h"
#include "storage/keys.h"
#include "storage/revocations.h"
#include "storage/wire.h"

namespace sessiond::storage {

using replication::ApplyResult;
using replication::ConfState;
using replication::Entry;
using replication::EntryType;
using sessiond::v1::Session;
using sessiond::v1::internal::ClusterState;
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

absl::StatusOr<uint64_t> ReadFixedAt(Database* db,
                                     const rocksdb::ReadOptions& options,
                                     const char* key) {
  SESSIOND_ASSIGN_OR_RETURN(std::optional<std::string> bytes,
                            db->Get(db->default_cf(), key, options));
  if (!bytes) return 0;
  if (bytes->size() != 8) {
    return absl::DataLossError(
        absl::StrCat(key, " is ", bytes->size(), " bytes, want 8"));
  }
  return DecodeFixed64BE(*bytes);
}

// Calls fn(value) for every revocation record ("revocation/" keys of the
// default CF), oldest first.
absl::Status ForEachRevocationRecord(
    Database* db, const rocksdb::ReadOptions& options,
    const std::function<absl::Status(std::string_view)>& fn) {
  rocksdb::ReadOptions read = options;
  rocksdb::Slice upper(kRevocationKeyEnd);
  read.iterate_upper_bound = &upper;
  std::unique_ptr<rocksdb::Iterator> it(
      db->db()->NewIterator(read, db->default_cf()));
  for (it->Seek(kRevocationKeyPrefix); it->Valid(); it->Next()) {
    SESSIOND_RETURN_IF_ERROR(
        fn(std::string_view(it->value().data(), it->value().size())));
  }
  return FromRocksStatus(it->status(), "scanning the revocation records");
}

// The state machine's own record in the default CF: what it has applied.
struct AppliedRecord {
  uint64_t index = 0;
  uint64_t term = 0;
  uint64_t time_ms = 0;
  ConfState conf;
  ClusterState cluster;
  std::vector<v1::Revocation> revocations;  // by id
  // storage/create_requests.h: by request key; the create key.
  std::vector<v1::internal::CreateRequestRecord> create_requests;
  std::string create_key;
};

// Calls fn(value) for every create-request record ("create_request/" keys
// of the default CF), in key order.
absl::Status ForEachCreateRequestRecord(
    Database* db, const rocksdb::ReadOptions& options,
    const std::function<absl::Status(std::string_view)>& fn) {
  rocksdb::ReadOptions read = options;
  rocksdb::Slice upper(kCreateRequestDbKeyEnd);
  read.iterate_upper_bound = &upper;
  std::unique_ptr<rocksdb::Iterator> it(
      db->db()->NewIterator(read, db->default_cf()));
  for (it->Seek(kCreateRequestDbKeyPrefix); it->Valid(); it->Next()) {
    SESSIOND_RETURN_IF_ERROR(
        fn(std::string_view(it->value().data(), it->value().size())));
  }
  return FromRocksStatus(it->status(), "scanning the create-request records");
}

// Reads it as of `options` (CreateSnapshot: a consistent RocksDB snapshot);
// `conf` is `bootstrap_conf` until a membership change was applied.
absl::StatusOr<AppliedRecord> ReadAppliedRecord(
    Database* db, const rocksdb::ReadOptions& options,
    const ConfState& bootstrap_conf) {
  AppliedRecord record;
  SESSIOND_ASSIGN_OR_RETURN(record.index,
                            ReadFixedAt(db, options, kAppliedIndexKey));
  SESSIOND_ASSIGN_OR_RETURN(record.term,
                            ReadFixedAt(db, options, kAppliedTermKey));
  SESSIOND_ASSIGN_OR_RETURN(record.time_ms,
                            ReadFixedAt(db, options, kAppliedTimeKey));
  record.conf = bootstrap_conf;
  SESSIOND_ASSIGN_OR_RETURN(
      std::optional<std::string> conf_bytes,
      db->Get(db->default_cf(), kAppliedConfKey, options));
  if (conf_bytes) {
    SESSIOND_ASSIGN_OR_RETURN(record.conf, DecodeConfState(*conf_bytes));
  }
  SESSIOND_ASSIGN_OR_RETURN(
      std::optional<std::string> cluster_bytes,
      db->Get(db->default_cf(), kClusterStateKey, options));
  if (cluster_bytes && !record.cluster.ParseFromString(*cluster_bytes)) {
    return absl::DataLossError("default CF: cluster_state does not parse");
  }
  SESSIOND_RETURN_IF_ERROR(
      ForEachRevocationRecord(db, options, [&](std::string_view bytes) {
        v1::Revocation revocation;
        if (!revocation.ParseFromArray(bytes.data(),
                                       static_cast<int>(bytes.size()))) {
          return absl::DataLossError(
              "default CF: a revocation record does not parse");
        }
        record.revocations.push_back(std::move(revocation));
        return absl::OkStatus();
      }));
  SESSIOND_RETURN_IF_ERROR(
      ForEachCreateRequestRecord(db, options, [&](std::string_view bytes) {
        v1::internal::CreateRequestRecord request;
        if (!request.ParseFromArray(bytes.data(),
                                    static_cast<int>(bytes.size())) ||
            request.request_key().size() != kRequestKeyBytes) {
          return absl::DataLossError(
              "default CF: a create-request record does not parse");
        }
        record.create_requests.push_back(std::move(request));
        return absl::OkStatus();
      }));
  SESSIOND_ASSIGN_OR_RETURN(
      std::optional<std::string> create_key,
      db->Get(db->default_cf(), kCreateKeyDbKey, options));
  if (create_key) {
    if (create_key->size() != kCreateKeyBytes) {
      return absl::DataLossError("default CF: create_key is not 32 bytes");
    }
    record.create_key = *std::move(create_key);
  }
  return record;
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
    Database* db, SessionTable* table, SessionStateMachineOptions options) {
  if (table->size() != 0) {
    return absl::FailedPreconditionError(
        "SessionStateMachine::Open needs an empty table");
  }
  SESSIOND_ASSIGN_OR_RETURN(
      AppliedRecord applied,
      ReadAppliedRecord(db, rocksdb::ReadOptions(), options.bootstrap_conf));
  int threads = options.load_threads;
  if (threads <= 0) {
    threads = std::clamp<int>(std::thread::hardware_concurrency(), 1, 4);
  }
  absl::Status status = LoadSessions(db, table, threads);
  if (!status.ok()) {
    table->Clear();
    return status;
  }
  std::unique_ptr<SessionStateMachine> machine(new SessionStateMachine(
      db, table, std::move(options), LogIndex(applied.index),
      Term(applied.term), static_cast<int64_t>(applied.time_ms),
      std::move(applied.conf), std::move(applied.cluster)));
  machine->ReplaceRevocations(std::move(applied.revocations));
  machine->create_requests_.Replace(applied.create_requests);
  machine->create_requests_.set_create_key(std::move(applied.create_key));
  SESSIOND_RETURN_IF_ERROR(
      machine->audit_log_.Load(db, rocksdb::ReadOptions()));
  return machine;
}

SessionStateMachine::SessionStateMachine(Database* db, SessionTable* table,
                                         SessionStateMachineOptions options,
                                         LogIndex applied, Term applied_term,
                                         int64_t applied_time_ms,
                                         ConfState conf, ClusterState cluster)
    : db_(db),
      table_(table),
      options_(std::move(options)),
      applied_index_(applied.value()),
      applied_time_ms_(applied_time_ms),
      expiry_leeway_ms_(cluster.expiry_leeway_ms()),
      expiry_frozen_at_ms_(cluster.expiry_breaker().open()
                               ? cluster.expiry_breaker().frozen_at_ms()
                               : kExpiryNotFrozen) {
  absl::MutexLock lock(&mu_);
  applied_term_ = applied_term;
  conf_ = std::move(conf);
  cluster_ = std::move(cluster);
  time_sample_ = AppliedTimeSample{applied_time_ms, SteadyNowNs()};
  PublishKeyRing(cluster_);
}

std::optional<SessionStateMachine::ClockJump>
SessionStateMachine::last_clock_jump() const {
  absl::MutexLock lock(&mu_);
  return last_clock_jump_;
}

AppliedTimeSample SessionStateMachine::applied_time_sample() const {
  absl::MutexLock lock(&mu_);
  return time_sample_;
}

ClusterState SessionStateMachine::cluster_state() const {
  absl::MutexLock lock(&mu_);
  return cluster_;
}

std::string SessionStateMachine::ClientAddressOf(NodeId node) const {
  absl::MutexLock lock(&mu_);
  for (const auto& member : cluster_.members()) {
    if (member.node_id() == node.value()) return member.client_address();
  }
  return "";
}

ConfState SessionStateMachine::applied_conf() const {
  absl::MutexLock lock(&mu_);
  return conf_;
}

void SessionStateMachine::PublishClusterState(const ClusterState& cluster,
                                              const ConfState& conf) {
  {
    absl::MutexLock lock(&mu_);
    cluster_ = cluster;
    conf_ = conf;
  }
  expiry_leeway_ms_.store(cluster.expiry_leeway_ms(),
                          std::memory_order_release);
  expiry_frozen_at_ms_.store(cluster.expiry_breaker().open()
                                 ? cluster.expiry_breaker().frozen_at_ms()
                                 : kExpiryNotFrozen,
                             std::memory_order_release);
  PublishKeyRing(cluster);
  if (options_.on_cluster_state) options_.on_cluster_state(cluster, conf);
}

void SessionStateMachine::StageSession(const TokenHash& hash,
                                       rocksdb::WriteBatch* batch) {
  std::optional<std::string> bytes = table_->SerializeStored(hash);
  if (bytes) {
    batch->Put(db_->sessions_cf(), rocksdb::Slice(TokenHashBytes(hash)),
               *bytes);
  }
}

absl::Status SessionStateMachine::WriteApplied(rocksdb::WriteBatch* batch) {
  return RetryWrite([&] { return db_->WriteWithoutWal(batch); });
}

absl::Status SessionStateMachine::RetryWrite(
    absl::FunctionRef<absl::Status()> write) {
  absl::Duration backoff = absl::Milliseconds(10);
  absl::Time next_report = absl::InfinitePast();
  while (true) {
    absl::Status s = write();
    if (s.ok() || stop_retrying_.load(std::memory_order_acquire)) return s;
    if (absl::Now() >= next_report) {
      logging::Error("apply.write_failed",
                     logging::Fields().Error(s).Add(
                         "msg",
                         "the applied state cannot be written; retrying "
                         "until it can: free space in the data dir"));
      next_report = absl::Now() + absl::Seconds(30);
    }
    absl::SleepFor(backoff);
    backoff = std::min(backoff * 2, absl::Seconds(1));
  }
}

absl::StatusOr<std::vector<ApplyResult>> SessionStateMachine::Apply(
    const std::vector<Entry>& entries) {
  std::vector<ApplyResult> results;
  results.reserve(entries.size());
  if (entries.empty()) return results;
  LogIndex applied = applied_index();
  int64_t now_ms = applied_time_ms();
  Term term;
  {
    absl::MutexLock lock(&mu_);
    term = applied_term_;
  }
  // The membership and the cluster state are copied only once an entry of
  // the batch changes them: most batches hold session commands alone.
  std::optional<ConfState> conf;
  std::optional<ClusterState> cluster;
  std::optional<ClockJump> jump;       // a catch-up of this batch
  bool swept_before_any_jump = false;  // of this batch
  rocksdb::WriteBatch batch;
  // One message for the whole batch: parsing into it again reuses what it
  // allocated for the previous entry.
  Command command;
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
    term = entry.term;
    if (entry.type == EntryType::kConfChange) {
      replication::ConfChange change;
      if (!replication::DecodeConfChange(entry.data, &change)) {
        results.push_back(absl::InvalidArgumentError(absl::StrCat(
            "entry ", entry.index.value(), " is not a conf change")));
        continue;
      }
      if (!conf) conf = applied_conf();
      replication::ApplyConfChange(change, &*conf);
      if (change.type == replication::ConfChangeType::kAddLearner) {
        // Back in the membership: no longer listed as removed.
        if (!cluster) cluster = cluster_state();
        auto* removed = cluster->mutable_removed();
        auto listed =
            std::find(removed->begin(), removed->end(), change.node.value());
        if (listed != removed->end()) removed->erase(listed);
      } else if (change.type == replication::ConfChangeType::kRemoveNode) {
        // The member's row goes, and its id is listed as removed, with
        // the change itself: a command after it might never come (a
        // removed leader cannot propose one).
        if (!cluster) cluster = cluster_state();
        v1::internal::MemberCommand removal;
        removal.set_kind(v1::internal::MemberCommand::REMOVE);
        removal.set_node_id(change.node.value());
        (void)ApplyMember(removal, *conf, &*cluster);
      }
      results.push_back(std::any());
      continue;
    }
    if (entry.data.empty()) {
      results.push_back(std::any());
      continue;
    }
    if (!command.ParseFromString(entry.data)) {
      results.push_back(absl::InvalidArgumentError(absl::StrCat(
          "entry ", entry.index.value(), " is not a sessiond command")));
      continue;
    }
    // Applied otherwise than its proposer meant, this replica's state would
    // differ from the others' for good: it stops, and says what to do. On
    // restart it stops here again, until it runs a binary that applies it.
    SESSIOND_CHECK_MSG(
        command.min_level() <= kCommandLevel,
        absl::StrCat("entry ", entry.index.value(), " needs command level ",
                     command.min_level(), " and this binary applies up to ",
                     kCommandLevel,
                     ": run the cluster's sessiond version on this node "
                     "(docs/OPERATIONS.md, \"Rolling upgrade\")"));
    now_ms = std::max(now_ms, command.timestamp_ms());
    if (command.has_expire() || command.has_expiry_breaker()) {
      // A leader judged (and swept) after the last jump.
      if (jump) {
        jump->swept_since = true;
      } else {
        swept_before_any_jump = true;
      }
    }
    switch (command.op_case()) {
      case Command::kMember:
        if (!cluster) cluster = cluster_state();
        if (!conf) conf = applied_conf();
        results.push_back(ApplyMember(command.member(), *conf, &*cluster));
        break;
      case Command::kBulkRevoke:
        if (!cluster) cluster = cluster_state();
        results.push_back(ApplyBulkRevoke(command.bulk_revoke(), entry.index,
                                          now_ms, &*cluster, &batch));
        break;
      case Command::kRevokeUser:
        if (command.revoke_user().retention_ms() > 0) {
          results.push_back(ApplyRestorableRevokeUser(
              command.revoke_user(), entry.index, now_ms, &batch));
        } else {
          results.push_back(ApplyCommand(command, now_ms, &batch));
        }
        break;
      case Command::kSettings:
        if (!cluster) cluster = cluster_state();
        if (command.settings().has_expiry_leeway_ms() &&
            cluster->expiry_breaker().open() &&
            command.settings().expiry_leeway_ms() <
                cluster->expiry_leeway_ms()) {
          // The breaker holds what expired at its frozen time under this
          // leeway: a smaller one expires the held sessions at once, and
          // the breaker then clears itself with nothing left to hold.
          results.push_back(absl::FailedPreconditionError(absl::StrCat(
              "the expiry breaker is open: lowering the expiry leeway (from ",
              cluster->expiry_leeway_ms(),
              " ms) would expire the sessions it "
              "holds; resume expiry first (sessionctl breaker status), or "
              "raise the leeway instead")));
          break;
        }
        if (command.settings().has_jwks_max_age_ms()) {
          cluster->set_jwks_max_age_ms(
              std::max<int64_t>(0, command.settings().jwks_max_age_ms()));
        }
        if (command.settings().has_expiry_leeway_ms()) {
          cluster->set_expiry_leeway_ms(
              std::max<int64_t>(0, command.settings().expiry_leeway_ms()));
          cluster->set_leeway_set(true);
          // Later entries of this batch already use it.
          expiry_leeway_ms_.store(cluster->expiry_leeway_ms(),
                                  std::memory_order_release);
        }
        results.push_back(std::any());
        break;
      case Command::kKeyRing:
        if (!cluster) cluster = cluster_state();
        results.push_back(
            ApplyKeyRing(command.key_ring(), entry.index, now_ms, &*cluster));
        // Later entries of this batch (a create's signing kid) see it.
        if (results.back().ok()) PublishKeyRing(*cluster);
        break;
      case Command::kExpiryBreaker:
        if (!cluster) cluster = cluster_state();
        results.push_back(ApplyExpiryBreaker(command.expiry_breaker(),
                                             entry.index, now_ms, &*cluster));
        break;
      case Command::kClockCatchUp:
        if (!cluster) cluster = cluster_state();
        results.push_back(ApplyClockCatchUp(command.clock_catch_up(), now_ms,
                                            &*cluster, &batch));
        if (command.clock_catch_up().to_ms() > now_ms) {
          if (!jump || jump->term != entry.term) {
            jump = ClockJump{.from_ms = now_ms, .term = entry.term};
          }
          jump->to_ms = command.clock_catch_up().to_ms();
        }
        // Later entries of this batch, and reads, see the new time only
        // with the sessions moved.
        now_ms = std::max(now_ms, command.clock_catch_up().to_ms());
        break;
      default:
        results.push_back(ApplyCommand(command, now_ms, &batch));
    }
  }
  batch.Put(db_->default_cf(), kAppliedIndexKey,
            EncodeFixed64BE(applied.value()));
  batch.Put(db_->default_cf(), kAppliedTermKey, EncodeFixed64BE(term.value()));
  batch.Put(db_->default_cf(), kAppliedTimeKey,
            EncodeFixed64BE(static_cast<uint64_t>(now_ms)));
  if (conf) {
    batch.Put(db_->default_cf(), kAppliedConfKey, EncodeConfState(*conf));
  }
  if (cluster) {
    batch.Put(db_->default_cf(), kClusterStateKey,
              cluster->SerializeAsString());
  }
  // Not even in the WAL: the log holds the commands and replays them after
  // a crash; the state reaches the disk with the next (atomic) flush. Log
  // compaction never depends on it: it keeps a snapshot image that covers
  // whatever it drops (server/log_compactor.h).
  SESSIOND_RETURN_IF_ERROR(WriteApplied(&batch));
  {
    absl::MutexLock lock(&mu_);
    applied_term_ = term;
    // Only a later stamp moves the sample: an entry without one (a new
    // leader's no-op, a membership change) must not restart the steady
    // count from an old cluster time.
    if (now_ms > time_sample_.cluster_ms) {
      time_sample_ = AppliedTimeSample{now_ms, SteadyNowNs()};
    }
    if (swept_before_any_jump && last_clock_jump_) {
      last_clock_jump_->swept_since = true;
    }
    if (jump) {
      // Another catch-up of the same term, in an earlier batch: one jump.
      if (last_clock_jump_ && last_clock_jump_->term == jump->term) {
        jump->from_ms = std::min(jump->from_ms, last_clock_jump_->from_ms);
      }
      last_clock_jump_ = jump;
    }
  }
  if (conf || cluster) {
    if (!conf) conf = applied_conf();
    if (!cluster) cluster = cluster_state();
    PublishClusterState(*cluster, *conf);
  }
  applied_time_ms_.store(now_ms, std::memory_order_release);
  applied_index_.store(applied.value(), std::memory_order_release);
  return results;
}

ApplyResult SessionStateMachine::ApplyMember(
    const v1::internal::MemberCommand& member, const ConfState& conf,
    ClusterState* cluster) {
  if (member.node_id() == 0) {
    return absl::InvalidArgumentError("member command for node 0");
  }
  if (member.kind() == v1::internal::MemberCommand::ADD) {
    // AddMember checks its node's view, which may be behind: re-adding a
    // member would overwrite its addresses and forget that it ran (which
    // keeps it from rejoining empty, server/bootstrap.cc).
    const NodeId id(member.node_id());
    if (std::find(conf.voters.begin(), conf.voters.end(), id) !=
            conf.voters.end() ||
        std::find(conf.learners.begin(), conf.learners.end(), id) !=
            conf.learners.end()) {
      return absl::FailedPreconditionError(
          absl::StrCat("node ", id.value(), " is already a member"));
    }
  }
  auto* members = cluster->mutable_members();
  auto it = std::find_if(members->begin(), members->end(),
                         [&](const v1::internal::Member& m) {
                           return m.node_id() == member.node_id();
                         });
  auto* removed = cluster->mutable_removed();
  auto was_removed =
      std::lower_bound(removed->begin(), removed->end(), member.node_id());
  if (member.kind() == v1::internal::MemberCommand::REMOVE) {
    if (it != members->end()) members->erase(it);
    if (was_removed == removed->end() || *was_removed != member.node_id()) {
      // Ascending, so every replica encodes the list alike.
      const int at = static_cast<int>(was_removed - removed->begin());
      removed->Add(member.node_id());
      for (int i = removed->size() - 1; i > at; --i) {
        removed->SwapElements(i, i - 1);
      }
    }
    return std::any();
  }
  const bool listed_removed =
      was_removed != removed->end() && *was_removed == member.node_id();
  if (listed_removed && member.kind() != v1::internal::MemberCommand::ADD) {
    // A removed node still running announced itself before it learned of
    // its removal: it must not get a member row back.
    return absl::FailedPreconditionError(
        absl::StrCat("node ", member.node_id(),
                     " was removed from the cluster: only AddMember brings "
                     "it back"));
  }
  // A removed id stays listed until its learner change applies: the change
  // may still be refused (another one pending, a leadership transfer), and
  // the id must then stay shut out.
  if (it == members->end()) {
    v1::internal::Member added;
    added.set_node_id(member.node_id());
    // Keep the list ordered by node_id: every replica encodes it alike.
    auto pos = std::find_if(members->begin(), members->end(),
                            [&](const v1::internal::Member& m) {
                              return m.node_id() > member.node_id();
                            });
    const int at = static_cast<int>(pos - members->begin());
    members->Add(std::move(added));
    for (int i = members->size() - 1; i > at; --i)
      members->SwapElements(i, i - 1);
    it = members->begin() + at;
  }
  if (!member.peer_address().empty()) {
    it->set_peer_address(member.peer_address());
  }
  if (!member.client_address().empty()) {
    it->set_client_address(member.client_address());
  }
  if (member.kind() == v1::internal::MemberCommand::PUBLISH) {
    it->set_started(true);
    it->set_command_level(member.command_level());
  } else if (member.kind() == v1::internal::MemberCommand::ADD) {
    // Added (again): a new member that has not run yet, whatever an
    // earlier one under this id did (and ran).
    it->set_started(false);
    it->set_command_level(0);
  }
  return std::any();
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
    case Command::kCreateBatch:
      return ApplyCreateBatch(command.create_batch(), now_ms, batch);
    case Command::kRestoreRevocation:
      return ApplyRestoreRevocation(command.restore_revocation(), now_ms,
                                    batch);
    case Command::kPurgeRevocations:
      return ApplyPurgeRevocations(command.purge_revocations(), now_ms, batch);
    case Command::kRotate:
      return ApplyRotate(command.rotate(), now_ms, batch);
    case Command::kCreateKey:
      return ApplyCreateKey(command.create_key(), batch);
    case Command::kPurgeCreateRequests:
      return ApplyPurgeCreateRequests(command.purge_create_requests(), now_ms,
                                      batch);
    case Command::kAudit:
      return ApplyAudit(command.audit(), now_ms, batch);
    case Command::kTick:
      return std::any();  // its stamp is all it carries (Apply took it)
    case Command::kBulkRevoke:
    case Command::kMember:
    case Command::kSettings:
    case Command::kExpiryBreaker:
    case Command::kKeyRing:
    case Command::kClockCatchUp:
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
  if (!create.request_key().empty()) {
    // A retry of a create the table remembers answers with its session.
    if (std::optional<ApplyResult> replay = CreateReplay(create, now_ms)) {
      return *std::move(replay);
    }
  }
  if (table_->Contains(hash)) {
    return absl::AlreadyExistsError("a session with this token already exists");
  }
  if (table_->TokenHashOf(create.session_id())) {
    return absl::AlreadyExistsError(
        absl::StrCat("session_id ", create.session_id(), " already exists"));
  }
  SESSIOND_RETURN_IF_ERROR(CheckSigningKid(create.signing_kid()));
  SESSIOND_RETURN_IF_ERROR(CheckUserCap(
      create.user_id(), create.max_user_sessions(), /*adding=*/1, now_ms));
  SESSIOND_ASSIGN_OR_RETURN(Session session,
                            InsertCreated(hash, create, now_ms, batch));
  return std::any(std::move(session));
}

absl::StatusOr<Session> SessionStateMachine::InsertCreated(
    const TokenHash& hash, const v1::internal::CreateCommand& create,
    int64_t now_ms, rocksdb::WriteBatch* batch) {
  Session session;
  session.set_session_id(create.session_id());
  session.set_user_id(create.user_id());
  session.set_created_at_ms(now_ms);
  session.set_expires_at_ms(create.ttl_ms() > 0 ? now_ms + create.ttl_ms()
                                                : create.expires_at_ms());
  session.set_idle_timeout_ms(create.idle_timeout_ms());
  session.set_last_seen_at_ms(now_ms);
  *session.mutable_attributes() = create.attributes();
  session.set_version(1);
  session.set_state(v1::SESSION_STATE_ACTIVE);
  if (create.has_client()) *session.mutable_client() = create.client();
  if (!create.signing_kid().empty()) {
    session.set_signing_kid(create.signing_kid());
  }
  SESSIOND_RETURN_IF_ERROR(table_->Insert(hash, session));
  StageSession(hash, batch);
  if (!create.request_key().empty()) {
    RememberCreateRequest(create, now_ms, batch);
  }
  return session;
}

ApplyResult SessionStateMachine::ApplyCreateBatch(
    const v1::internal::CreateBatchCommand& batch, int64_t now_ms,
    rocksdb::WriteBatch* write) {
  // Every check first, so a collision changes nothing. The sets view the
  // command's own strings.
  std::vector<TokenHash> hashes;
  hashes.reserve(batch.creates_size());
  absl::flat_hash_set<std::string_view> new_hashes, session_ids;
  new_hashes.reserve(batch.creates_size());
  session_ids.reserve(batch.creates_size());
  // The new sessions per user with a cap, checked against it as a whole.
  std::map<std::string, std::pair<uint32_t, uint64_t>> capped;
  for (const auto& create : batch.creates()) {
    if (!create.request_key().empty()) {
      return absl::InvalidArgumentError(
          "a batch create with a request_key (only CreateSession takes a "
          "request_id)");
    }
    if (create.max_user_sessions() > 0) {
      auto& [cap, adding] = capped[create.user_id()];
      cap = create.max_user_sessions();
      ++adding;
    }
    SESSIOND_ASSIGN_OR_RETURN(const TokenHash hash,
                              ParseHash(create.token_hash()));
    if (table_->Contains(hash) ||
        !new_hashes.insert(create.token_hash()).second) {
      return absl::AlreadyExistsError(
          "a session with this token already exists");
    }
    if (table_->TokenHashOf(create.session_id()) ||
        !session_ids.insert(create.session_id()).second) {
      return absl::AlreadyExistsError(
          absl::StrCat("session_id ", create.session_id(), " already exists"));
    }
    // What SessionTable::Insert would refuse, refused before anything is.
    if (create.session_id().empty() || create.session_id().size() > 255 ||
        create.user_id().empty() || create.user_id().size() > 65535) {
      return absl::InvalidArgumentError("create with a malformed id");
    }
    SESSIOND_RETURN_IF_ERROR(CheckSigningKid(create.signing_kid()));
    hashes.push_back(hash);
  }
  for (const auto& [user_id, cap_adding] : capped) {
    SESSIOND_RETURN_IF_ERROR(
        CheckUserCap(user_id, cap_adding.first, cap_adding.second, now_ms));
  }
  std::vector<Session> created;
  created.reserve(batch.creates_size());
  for (int i = 0; i < batch.creates_size(); ++i) {
    absl::StatusOr<Session> session =
        InsertCreated(hashes[i], batch.creates(i), now_ms, write);
    // Not expected after the checks above.
    if (!session.ok()) return session.status();
    created.push_back(*std::move(session));
  }
  return std::any(std::move(created));
}

bool SessionStateMachine::TouchFindsExpired(
    const Session& session, const v1::internal::TouchCommand::Touch& touch,
    int64_t now_ms, int64_t leeway) const {
  // A touch recorded by a node cut off from its leader is judged as that
  // node judged it: idle time stopped counting when it last heard from a
  // leader (touch.idle_judged_at_ms), else the touches of users active
  // through it all along would find their sessions idled out once the
  // quorum returned. Never later than applied time.
  const int64_t idle_at = touch.idle_judged_at_ms() > 0
                              ? std::min(touch.idle_judged_at_ms(), now_ms)
                              : now_ms;
  return IsExpired(session.expires_at_ms(), session.idle_timeout_ms(),
                   session.last_seen_at_ms(), ExpiryNowMs(now_ms),
                   ExpiryNowMs(idle_at), leeway);
}

ApplyResult SessionStateMachine::ApplyTouch(
    const v1::internal::TouchCommand& touch, int64_t now_ms,
    rocksdb::WriteBatch* batch) {
  const int64_t leeway = expiry_leeway_ms();
  if (touch.touches_size() == 1) {
    const auto& t = touch.touches(0);
    SESSIOND_ASSIGN_OR_RETURN(const TokenHash hash, ParseHash(t.token_hash()));
    std::optional<Session> session = table_->Get(hash);
    if (!session) return absl::NotFoundError("no such session");
    if (session->state() == v1::SESSION_STATE_REVOKED) {
      return absl::FailedPreconditionError("session is revoked");
    }
    if (TouchFindsExpired(*session, t, now_ms, leeway)) {
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
        TouchFindsExpired(*session, t, now_ms, leeway)) {
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
  if (IsExpired(*session, ExpiryNowMs(now_ms), expiry_leeway_ms())) {
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
  if (session->state() == v1::SESSION_STATE_REVOKED &&
      session->revoked_by().empty()) {
    return std::any(*std::move(session));  // idempotent
  }
  SESSIOND_RETURN_IF_ERROR(
      RevokeForGood(hash, revoke.reason(), now_ms, &*session, batch));
  return std::any(*std::move(session));
}

absl::Status SessionStateMachine::RevokeForGood(const TokenHash& hash,
                                                const std::string& reason,
                                                int64_t now_ms,
                                                Session* session,
                                                rocksdb::WriteBatch* batch) {
  // Held by a bulk revocation: revoked one by one now, it stays revoked
  // when that is restored.
  session->clear_revoked_by();
  session->set_state(v1::SESSION_STATE_REVOKED);
  session->set_revoke_reason(reason);
  session->set_revoked_at_ms(now_ms);
  SESSIOND_RETURN_IF_ERROR(table_->Replace(hash, *session));
  StageSession(hash, batch);
  return absl::OkStatus();
}

ApplyResult SessionStateMachine::ApplyRevokeUser(
    const v1::internal::RevokeUserCommand& revoke_user, int64_t now_ms,
    rocksdb::WriteBatch* batch) {
  uint64_t revoked = 0;
  for (const TokenHash& hash : table_->UserTokenHashes(revoke_user.user_id())) {
    std::optional<Session> session = table_->Get(hash);
    if (!session || (session->state() == v1::SESSION_STATE_REVOKED &&
                     session->revoked_by().empty())) {
      continue;
    }
    if (!revoke_user.keep_session_id().empty() &&
        session->session_id() == revoke_user.keep_session_id()) {
      continue;
    }
    // Expired ones too, uncounted: one still in the table can come back to
    // use (a touch judged on a node cut off from the leader, the expiry
    // breaker's freeze). Held by a bulk revocation: revoked for good now,
    // so restoring that revocation does not bring it back.
    const bool expired =
        IsExpired(*session, ExpiryNowMs(now_ms), expiry_leeway_ms());
    SESSIOND_RETURN_IF_ERROR(
        RevokeForGood(hash, revoke_user.reason(), now_ms, &*session, batch));
    if (!expired) ++revoked;
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
    if (!session ||
        !IsExpired(*session, ExpiryNowMs(now_ms), expiry_leeway_ms())) {
      continue;
    }
    table_->Erase(*hash);
    batch->Delete(db_->sessions_cf(), rocksdb::Slice(TokenHashBytes(*hash)));
    ++removed;
  }
  return std::any(removed);
}

namespace {

// Checks the records of an image before anything is replaced, so that a bad
// image leaves the state as it was, and remembers which sessions it holds.
class RecordChecker {
 public:
  // `*stored`: the record, parsed.
  absl::Status Check(std::string_view bytes,
                     v1::internal::StoredSession* stored) {
    if (!stored->ParseFromArray(bytes.data(), static_cast<int>(bytes.size()))) {
      return absl::DataLossError(
          "snapshot image has a record that does not parse");
    }
    const std::string& sid = stored->session().session_id();
    const std::string& uid = stored->session().user_id();
    // With the table's own reader, which loads it (its hash and ids, as
    // Insert checks them): it also refuses what protobuf takes (a known
    // field of another wire type, an unknown field to protobuf), and such an
    // image failed to load once the log was gone.
    if (absl::Status loads = SessionTable::CheckStored(bytes); !loads.ok()) {
      return absl::DataLossError(absl::StrCat(
          "snapshot image has a malformed record (", loads.message(), ")"));
    }
    if (!ids_.try_emplace(stored->token_hash(), sid, uid).second ||
        !session_ids_.insert(sid).second) {
      return absl::DataLossError("snapshot image has a duplicate session");
    }
    return absl::OkStatus();
  }

  // Whether the image holds this session, under the same ids.
  bool Holds(const TokenHash& hash, std::string_view session_id,
             std::string_view user_id) const {
    const std::string_view bytes = TokenHashBytes(hash);
    auto it = ids_.find(absl::string_view(bytes.data(), bytes.size()));
    return it != ids_.end() && it->second.first == session_id &&
           it->second.second == user_id;
  }

 private:
  // token hash -> (session_id, user_id)
  absl::flat_hash_map<std::string, std::pair<std::string, std::string>> ids_;
  absl::flat_hash_set<std::string> session_ids_;
};

// Calls `fn` with the key and value of each Put into column family `cf` in
// a batch.
class PutsInto : public rocksdb::WriteBatch::Handler {
 public:
  using Fn = std::function<absl::Status(std::string_view, std::string_view)>;
  PutsInto(uint32_t cf, Fn fn) : cf_(cf), fn_(std::move(fn)) {}

  rocksdb::Status PutCF(uint32_t cf, const rocksdb::Slice& key,
                        const rocksdb::Slice& value) override {
    if (cf != cf_) return rocksdb::Status::OK();
    status_ = fn_(std::string_view(key.data(), key.size()),
                  std::string_view(value.data(), value.size()));
    return status_.ok() ? rocksdb::Status::OK() : rocksdb::Status::Aborted();
  }
  rocksdb::Status DeleteCF(uint32_t, const rocksdb::Slice&) override {
    return rocksdb::Status::OK();
  }
  rocksdb::Status DeleteRangeCF(uint32_t, const rocksdb::Slice&,
                                const rocksdb::Slice&) override {
    return rocksdb::Status::OK();
  }
  const absl::Status& status() const { return status_; }

 private:
  const uint32_t cf_;
  const Fn fn_;
  absl::Status status_;
};

// Moves `table` to the sessions of a checked image, whose records `batch`
// puts into `sessions_cf`: first the sessions the image lacks go, then each
// of the image's is replaced or inserted, each under its shard locks, so a
// reader sees every session either as it was or as the image has it.
absl::Status MoveTableTo(SessionTable& table, const RecordChecker& image,
                         const rocksdb::WriteBatch& batch,
                         uint32_t sessions_cf) {
  std::vector<TokenHash> gone;
  table.ForEachSession([&](const SessionView& session) {
    if (!image.Holds(session.hash, session.session_id, session.user_id)) {
      gone.push_back(session.hash);
    }
  });
  for (const TokenHash& hash : gone) table.Erase(hash);
  // From the stored bytes, so fields a later version added stay verbatim.
  PutsInto puts(sessions_cf, [&](std::string_view key, std::string_view bytes) {
    std::optional<TokenHash> hash = TokenHashFromBytes(key);
    if (!hash) {
      return absl::DataLossError("a token hash is not 32 bytes");
    }
    return table.Contains(*hash) ? table.ReplaceStored(bytes)
                                 : table.InsertStored(bytes);
  });
  rocksdb::Status iterated = batch.Iterate(&puts);
  if (!puts.status().ok()) return puts.status();
  return FromRocksStatus(iterated, "reading back the snapshot batch");
}

// The image's audit entries: seqs above 0, increasing, below its next seq
// (when it has one), each within kMaxAuditEntryBytes.
absl::Status CheckSnapshotAudit(const v1::internal::SnapshotHeader& header) {
  uint64_t last = 0;
  for (const v1::AuditEntry& entry : header.audit_entries()) {
    if (entry.seq() <= last || entry.ByteSizeLong() > kMaxAuditEntryBytes) {
      return absl::DataLossError("snapshot image has a malformed audit entry");
    }
    last = entry.seq();
  }
  if (header.audit_next_seq() != 0 && header.audit_next_seq() <= last) {
    return absl::DataLossError(
        "snapshot image's audit next seq is behind its entries");
  }
  return absl::OkStatus();
}

// Whether `a` and `b` have the same voters and the same learners, in any
// order.
bool SameMembers(ConfState a, ConfState b) {
  for (ConfState* c : {&a, &b}) {
    std::sort(c->voters.begin(), c->voters.end());
    std::sort(c->learners.begin(), c->learners.end());
  }
  return a == b;
}

// The checks of an image before anything changes (ApplySnapshot and
// VerifySnapshotImage): its checksum, its header at the snapshot's index
// and term, each record and audit entry well formed. `on_record` is called
// with each record once it passed.
absl::Status CheckImage(
    const SnapshotFiles& files, const replication::Snapshot& snapshot,
    RecordChecker* checker, v1::internal::SnapshotHeader* header,
    const std::function<void(const v1::internal::StoredSession&,
                             std::string_view)>& on_record) {
  absl::StatusOr<v1::internal::SnapshotRef> ref =
      DecodeSnapshotRef(snapshot.data);
  if (!ref.ok()) return absl::DataLossError(ref.status().message());
  SESSIOND_ASSIGN_OR_RETURN(std::unique_ptr<SnapshotImageReader> reader,
                            SnapshotImageReader::Open(files, *ref));
  *header = reader->header();
  if (header->index() != snapshot.meta.index.value() ||
      header->term() != snapshot.meta.term.value()) {
    return absl::DataLossError(absl::StrCat(
        "snapshot image is at ", header->index(), "/", header->term(),
        ", the snapshot at ", snapshot.meta.index.value(), "/",
        snapshot.meta.term.value()));
  }
  // The Raft core and the log take the membership from the snapshot, the
  // state from the image: they must be one.
  ConfState image_conf;
  for (uint64_t v : header->voters()) image_conf.voters.push_back(NodeId(v));
  for (uint64_t l : header->learners()) {
    image_conf.learners.push_back(NodeId(l));
  }
  if (!SameMembers(image_conf, snapshot.meta.conf_state)) {
    return absl::DataLossError(absl::StrCat(
        "snapshot image has voters ", absl::StrJoin(header->voters(), ","),
        " and learners ", absl::StrJoin(header->learners(), ","),
        ", the snapshot another membership"));
  }
  v1::internal::StoredSession stored;
  SESSIOND_RETURN_IF_ERROR(
      reader->ForEachRecord([&](std::string_view bytes) -> absl::Status {
        SESSIOND_RETURN_IF_ERROR(checker->Check(bytes, &stored));
        on_record(stored, bytes);
        return absl::OkStatus();
      }));
  return CheckSnapshotAudit(*header);
}

}  // namespace

absl::StatusOr<replication::Snapshot> SessionStateMachine::CreateSnapshot() {
  if (options_.snapshots == nullptr) {
    return absl::FailedPreconditionError("no snapshot folder configured");
  }
  ScopedDbSnapshot db_snapshot(db_->db());
  const rocksdb::ReadOptions read = db_snapshot.Options();
  SESSIOND_ASSIGN_OR_RETURN(
      AppliedRecord applied,
      ReadAppliedRecord(db_, read, options_.bootstrap_conf));
  if (applied.index == 0) {
    return absl::FailedPreconditionError("nothing applied yet to snapshot");
  }
  const uint64_t index = applied.index;
  const uint64_t term = applied.term;
  ConfState conf = std::move(applied.conf);
  v1::internal::SnapshotHeader header;
  header.set_index(index);
  header.set_term(term);
  for (NodeId v : conf.voters) header.add_voters(v.value());
  for (NodeId l : conf.learners) header.add_learners(l.value());
  header.set_applied_time_ms(static_cast<int64_t>(applied.time_ms));
  *header.mutable_cluster() = std::move(applied.cluster);
  for (v1::Revocation& revocation : applied.revocations) {
    *header.add_revocations() = std::move(revocation);
  }
  for (v1::internal::CreateRequestRecord& request : applied.create_requests) {
    *header.add_create_requests() = std::move(request);
  }
  header.set_create_key(applied.create_key);
  // The audit log (storage/audit_log.h), as of the same RocksDB snapshot.
  SESSIOND_RETURN_IF_ERROR(
      ForEachAuditRecord(db_, read, [&](uint64_t seq, std::string_view bytes) {
        v1::AuditEntry* entry = header.add_audit_entries();
        if (!entry->ParseFromArray(bytes.data(),
                                   static_cast<int>(bytes.size()))) {
          return absl::DataLossError(
              absl::StrCat("default CF: audit entry ", seq, " does not parse"));
        }
        return absl::OkStatus();
      }));
  SESSIOND_ASSIGN_OR_RETURN(std::optional<AuditMeta> audit_meta,
                            ReadAuditMeta(db_, read));
  if (audit_meta) {
    header.set_audit_next_seq(audit_meta->next_seq);
    header.set_audit_dropped_over_limit(audit_meta->dropped_over_limit);
  }

  SESSIOND_ASSIGN_OR_RETURN(
      std::unique_ptr<DurableFileWriter> file,
      options_.snapshots->NewFile(LogIndex(index), Term(term), "local"));
  SnapshotImageWriter writer(std::move(file), header);
  rocksdb::ReadOptions scan = read;
  scan.readahead_size = 4 << 20;
  std::unique_ptr<rocksdb::Iterator> it(
      db_->db()->NewIterator(scan, db_->sessions_cf()));
  for (it->SeekToFirst(); it->Valid(); it->Next()) {
    const rocksdb::Slice value = it->value();
    SESSIOND_RETURN_IF_ERROR(
        writer.AddRecord(std::string_view(value.data(), value.size())));
  }
  SESSIOND_RETURN_IF_ERROR(
      FromRocksStatus(it->status(), "scanning the sessions CF"));
  SESSIOND_ASSIGN_OR_RETURN(v1::internal::SnapshotRef ref, writer.Finish());
  replication::Snapshot snapshot;
  snapshot.meta.index = LogIndex(index);
  snapshot.meta.term = Term(term);
  snapshot.meta.conf_state = std::move(conf);
  snapshot.data = EncodeSnapshotRef(ref);
  return snapshot;
}

absl::Status SessionStateMachine::ApplySnapshot(
    const replication::Snapshot& snapshot) {
  return InstallSnapshot(snapshot, /*retry_write=*/true);
}

absl::Status SessionStateMachine::RecoverSnapshot(
    const replication::Snapshot& snapshot) {
  return InstallSnapshot(snapshot, /*retry_write=*/false);
}

absl::Status SessionStateMachine::InstallSnapshot(
    const replication::Snapshot& snapshot, bool retry_write) {
  if (options_.snapshots == nullptr) {
    return absl::FailedPreconditionError("no snapshot folder configured");
  }
  // Everything checked, and the whole batch built, before anything changes.
  rocksdb::WriteBatch batch;
  batch.DeleteRange(db_->sessions_cf(), rocksdb::Slice(""),
                    rocksdb::Slice(std::string(33, '\xff')));
  RecordChecker checker;
  v1::internal::SnapshotHeader header;
  SESSIOND_RETURN_IF_ERROR(CheckImage(
      *options_.snapshots, snapshot, &checker, &header,
      [&](const v1::internal::StoredSession& stored, std::string_view bytes) {
        // Stored as the sender stored it, so the replicas' digests agree.
        batch.Put(db_->sessions_cf(), rocksdb::Slice(stored.token_hash()),
                  rocksdb::Slice(bytes.data(), bytes.size()));
      }));
  const int64_t applied_time =
      std::max(applied_time_ms(), header.applied_time_ms());
  ConfState conf;
  for (uint64_t v : header.voters()) conf.voters.push_back(NodeId(v));
  for (uint64_t l : header.learners()) conf.learners.push_back(NodeId(l));
  batch.Put(db_->default_cf(), kAppliedIndexKey,
            EncodeFixed64BE(snapshot.meta.index.value()));
  batch.Put(db_->default_cf(), kAppliedTermKey,
            EncodeFixed64BE(snapshot.meta.term.value()));
  batch.Put(db_->default_cf(), kAppliedTimeKey,
            EncodeFixed64BE(static_cast<uint64_t>(applied_time)));
  batch.Put(db_->default_cf(), kAppliedConfKey, EncodeConfState(conf));
  batch.Put(db_->default_cf(), kClusterStateKey,
            header.cluster().SerializeAsString());
  batch.DeleteRange(db_->default_cf(), kRevocationKeyPrefix, kRevocationKeyEnd);
  for (const v1::Revocation& revocation : header.revocations()) {
    batch.Put(db_->default_cf(), RevocationKey(revocation.id()),
              revocation.SerializeAsString());
  }
  batch.DeleteRange(db_->default_cf(), kCreateRequestDbKeyPrefix,
                    kCreateRequestDbKeyEnd);
  std::vector<v1::internal::CreateRequestRecord> create_requests;
  for (const v1::internal::CreateRequestRecord& request :
       header.create_requests()) {
    if (request.request_key().size() != kRequestKeyBytes) continue;
    batch.Put(db_->default_cf(), CreateRequestDbKey(request.request_key()),
              request.SerializeAsString());
    create_requests.push_back(request);
  }
  if (header.create_key().size() == kCreateKeyBytes) {
    batch.Put(db_->default_cf(), kCreateKeyDbKey, header.create_key());
  } else {
    batch.Delete(db_->default_cf(), kCreateKeyDbKey);
  }
  batch.DeleteRange(db_->default_cf(), kAuditKeyPrefix, kAuditKeyEnd);
  std::deque<std::pair<uint64_t, int64_t>> audit_kept;
  for (const v1::AuditEntry& entry : header.audit_entries()) {
    batch.Put(db_->default_cf(), AuditKey(entry.seq()),
              entry.SerializeAsString());
    audit_kept.emplace_back(entry.seq(), entry.time_ms());
  }
  // Absent on the sender (no entry ever applied): absent here too, so the
  // digests agree.
  AuditMeta audit_meta;
  const bool has_audit = header.audit_next_seq() != 0 ||
                         header.audit_dropped_over_limit() != 0 ||
                         !audit_kept.empty();
  if (has_audit) {
    audit_meta.next_seq = std::max<uint64_t>(header.audit_next_seq(), 1);
    if (!audit_kept.empty()) {
      audit_meta.next_seq =
          std::max(audit_meta.next_seq, audit_kept.back().first + 1);
    }
    audit_meta.dropped_over_limit = header.audit_dropped_over_limit();
    batch.Put(db_->default_cf(), kAuditMetaKey, EncodeAuditMeta(audit_meta));
  } else {
    batch.Delete(db_->default_cf(), kAuditMetaKey);
  }
  // Synced: the log below the snapshot may be dropped right after this.
  // Retried like Apply's writes: a node that gave up here stopped, and a
  // full disk would stop it again at every start, until it had room.
  const auto write = [&] { return db_->Write(&batch, /*sync=*/true); };
  SESSIOND_RETURN_IF_ERROR(retry_write ? RetryWrite(write) : write());
  // Then the table, while readers go on using it: a session the image keeps
  // stays findable throughout (a table cleared and reloaded would answer
  // UNKNOWN, a logout, in between). Each session moves from its old record
  // to the image's at once; which sessions have moved shows through no
  // read, since applied_index still says the old point until the end.
  if (absl::Status s =
          MoveTableTo(*table_, checker, batch, db_->sessions_cf()->GetID());
      !s.ok()) {
    // Not expected after the checks above; the table no longer matches the
    // sessions CF, so the caller must stop (a restart reloads from RocksDB).
    return absl::InternalError(absl::StrCat(
        "snapshot image failed to load after validation: ", s.message()));
  }
  {
    absl::MutexLock lock(&mu_);
    applied_term_ = snapshot.meta.term;
    time_sample_ = AppliedTimeSample{applied_time, SteadyNowNs()};
  }
  PublishClusterState(header.cluster(), conf);
  ReplaceRevocations(std::vector<v1::Revocation>(header.revocations().begin(),
                                                 header.revocations().end()));
  create_requests_.Replace(create_requests);
  create_requests_.set_create_key(header.create_key().size() == kCreateKeyBytes
                                      ? header.create_key()
                                      : std::string());
  audit_log_.Replace(std::move(audit_kept), audit_meta);
  applied_time_ms_.store(applied_time, std::memory_order_release);
  applied_index_.store(snapshot.meta.index.value(), std::memory_order_release);
  return absl::OkStatus();
}

absl::Status SessionStateMachine::VerifySnapshotImage(
    const SnapshotFiles& files, const replication::Snapshot& snapshot) {
  RecordChecker checker;
  v1::internal::SnapshotHeader header;
  return CheckImage(
      files, snapshot, &checker, &header,
      [](const v1::internal::StoredSession&, std::string_view) {});
}

absl::StatusOr<SessionStateMachine::Digest> SessionStateMachine::ComputeDigest()
    const {
  ScopedDbSnapshot db_snapshot(db_->db());
  const rocksdb::ReadOptions read = db_snapshot.Options();
  Digest digest;
  SESSIOND_ASSIGN_OR_RETURN(const uint64_t index,
                            ReadFixedAt(db_, read, kAppliedIndexKey));
  digest.applied_index = LogIndex(index);
  SESSIOND_ASSIGN_OR_RETURN(
      std::optional<std::string> cluster_bytes,
      db_->Get(db_->default_cf(), kClusterStateKey, read));
  EVP_MD_CTX* ctx = EVP_MD_CTX_new();
  EVP_DigestInit_ex(ctx, EVP_sha256(), nullptr);
  auto add = [&](std::string_view bytes) {
    std::string frame;
    wire::PutVarint(&frame, bytes.size());
    EVP_DigestUpdate(ctx, frame.data(), frame.size());
    EVP_DigestUpdate(ctx, bytes.data(), bytes.size());
  };
  std::unique_ptr<rocksdb::Iterator> it(
      db_->db()->NewIterator(read, db_->sessions_cf()));
  for (it->SeekToFirst(); it->Valid(); it->Next()) {
    add(std::string_view(it->key().data(), it->key().size()));
    add(std::string_view(it->value().data(), it->value().size()));
    ++digest.sessions;
  }
  add(cluster_bytes.value_or(""));
  absl::Status status =
      FromRocksStatus(it->status(), "scanning the sessions CF");
  if (status.ok()) {
    status = ForEachRevocationRecord(db_, read, [&](std::string_view bytes) {
      add(bytes);
      return absl::OkStatus();
    });
  }
  // Retryable creates' state (storage/create_requests.h), only once there
  // is some: a store that never saw a request_id digests as before.
  if (status.ok()) {
    status = ForEachCreateRequestRecord(db_, read, [&](std::string_view bytes) {
      add(bytes);
      return absl::OkStatus();
    });
  }
  if (status.ok()) {
    absl::StatusOr<std::optional<std::string>> create_key =
        db_->Get(db_->default_cf(), kCreateKeyDbKey, read);
    if (!create_key.ok()) {
      status = create_key.status();
    } else if (create_key->has_value()) {
      add(**create_key);
    }
  }
  // The audit log (storage/audit_log.h), likewise only once there is some.
  if (status.ok()) {
    status =
        ForEachAuditRecord(db_, read, [&](uint64_t, std::string_view bytes) {
          add(bytes);
          return absl::OkStatus();
        });
  }
  if (status.ok()) {
    absl::StatusOr<std::optional<std::string>> audit_meta =
        db_->Get(db_->default_cf(), kAuditMetaKey, read);
    if (!audit_meta.ok()) {
      status = audit_meta.status();
    } else if (audit_meta->has_value()) {
      add(**audit_meta);
    }
  }
  unsigned char out[EVP_MAX_MD_SIZE];
  unsigned int n = 0;
  EVP_DigestFinal_ex(ctx, out, &n);
  EVP_MD_CTX_free(ctx);
  SESSIOND_RETURN_IF_ERROR(status);
  digest.sha256_hex = absl::BytesToHexString(
      absl::string_view(reinterpret_cast<const char*>(out), n));
  return digest;
}

}  // namespace sessiond::storage
