// Copyright sessiond authors. Licensed under the Apache License 2.0.
#include "storage/backup.h"

#include <memory>
#include <optional>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "rocksdb/iterator.h"
#include "rocksdb/write_batch.h"
#include "storage/database.h"
#include "storage/keys.h"
#include "storage/raft_log_store.h"
#include "storage/snapshot_files.h"

namespace sessiond::storage {
namespace {

absl::StatusOr<uint64_t> ReadFixed(const Database& db, const char* key) {
  absl::StatusOr<std::optional<std::string>> value =
      db.Get(db.default_cf(), key);
  if (!value.ok()) return value.status();
  if (!value->has_value()) return 0;  // nothing applied yet
  if ((*value)->size() != 8) {
    return absl::DataLossError(absl::StrCat("malformed '", key, "'"));
  }
  return DecodeFixed64BE(**value);
}

}  // namespace

absl::StatusOr<SealedCheckpoint> SealCheckpoint(const std::string& dir) {
  DatabaseOptions options;
  options.create_if_missing = false;
  options.block_cache_bytes = 1 << 20;
  options.memtable_budget_bytes = 4 << 20;
  options.background_jobs = 1;
  absl::StatusOr<std::unique_ptr<Database>> db = Database::Open(dir, options);
  if (!db.ok()) return db.status();
  absl::StatusOr<std::unique_ptr<RaftLogStore>> log =
      RaftLogStore::Open(db->get());
  if (!log.ok()) return log.status();

  SealedCheckpoint sealed;
  absl::StatusOr<uint64_t> applied = ReadFixed(**db, kAppliedIndexKey);
  if (!applied.ok()) return applied.status();
  absl::StatusOr<uint64_t> term = ReadFixed(**db, kAppliedTermKey);
  if (!term.ok()) return term.status();
  sealed.applied_index = LogIndex(*applied);
  sealed.applied_term = Term(*term);

  absl::StatusOr<replication::Snapshot> snapshot = (*log)->GetSnapshot();
  if (!snapshot.ok()) return snapshot.status();
  if (snapshot->meta.index > sealed.applied_index) {
    return absl::UnavailableError(
        absl::StrCat("the node was installing a snapshot (at ",
                     snapshot->meta.index.value(), ", state applied through ",
                     sealed.applied_index.value(), "); take the backup again"));
  }
  if (!snapshot->empty()) {
    absl::StatusOr<sessiond::v1::internal::SnapshotRef> ref =
        DecodeSnapshotRef(snapshot->data);
    if (ref.ok()) sealed.snapshot_file = ref->file();
  }
  SESSIOND_RETURN_IF_ERROR((*log)->DropEntriesAfter(sealed.applied_index));
  // Restored, this dir holds a log rolled back to the backup: as a member of
  // a running cluster its votes could elect a leader without writes acked
  // since. It must start as a new cluster (the daemon checks this mark).
  rocksdb::WriteBatch mark;
  mark.Put((*db)->default_cf(), kRestoredBackupKey,
           EncodeFixed64BE(sealed.applied_index.value()));
  // A node's own note that it was started with --force_new_cluster once
  // (to refuse the flag left on after members were added back) is not the
  // backup's: kept, the restore's one forced start took the flag for left
  // on, and without the flag the restored mark refused it: never startable.
  mark.Delete((*db)->default_cf(), kForcedNewClusterKey);
  SESSIOND_RETURN_IF_ERROR((*db)->Write(&mark, /*sync=*/true));

  std::unique_ptr<rocksdb::Iterator> it(
      (*db)->db()->NewIterator(rocksdb::ReadOptions(), (*db)->sessions_cf()));
  for (it->SeekToFirst(); it->Valid(); it->Next()) ++sealed.sessions;
  SESSIOND_RETURN_IF_ERROR(
      FromRocksStatus(it->status(), "counting the sessions"));
  return sealed;
}

}  // namespace sessiond::storage
