// Copyright sessiond authors. Licensed under the Apache License 2.0.
//
// SealCheckpoint on a real RocksDB data dir in a temp folder.
#include "storage/backup.h"

#include <memory>
#include <optional>
#include <string>

#include "gtest/gtest.h"
#include "rocksdb/write_batch.h"
#include "storage/database.h"
#include "storage/keys.h"
#include "storage/raft_log_store.h"
#include "tests/storage/temp_dir.h"

namespace sessiond::storage {
namespace {

using sessiond::testing::TempDir;

// Review finding: a backup of a node once started with --force_new_cluster
// (the node a disaster recovery rebuilt the cluster from: usually the
// leader, and the first endpoint sessionctl asks) kept that node's note of
// its forced start. Restored, its one forced start took the flag for left
// on after members were added back and refused (exit 4), and a start
// without the flag met the restored mark (exit 4): never startable.
TEST(SealCheckpointTest, ABackupDoesNotKeepItsNodesForcedStartMark) {
  TempDir dir;
  const std::string copy = dir.Sub("copy");
  {
    absl::StatusOr<std::unique_ptr<Database>> db =
        Database::Open(copy, DatabaseOptions{});
    ASSERT_TRUE(db.ok()) << db.status();
    absl::StatusOr<std::unique_ptr<RaftLogStore>> log =
        RaftLogStore::Open(db->get());
    ASSERT_TRUE(log.ok()) << log.status();
    replication::ConfState conf;
    conf.voters = {NodeId(1), NodeId(2), NodeId(3)};
    ASSERT_TRUE((*log)->Bootstrap(conf).ok());
    rocksdb::WriteBatch batch;
    const uint64_t applied = (*log)->LastIndex().value();
    batch.Put((*db)->default_cf(), kAppliedIndexKey, EncodeFixed64BE(applied));
    batch.Put((*db)->default_cf(), kAppliedTermKey, EncodeFixed64BE(1));
    batch.Put((*db)->default_cf(), kForcedNewClusterKey, "1");
    ASSERT_TRUE((*db)->Write(&batch, /*sync=*/true).ok());
  }

  absl::StatusOr<SealedCheckpoint> sealed = SealCheckpoint(copy);
  ASSERT_TRUE(sealed.ok()) << sealed.status();

  absl::StatusOr<std::unique_ptr<Database>> db =
      Database::Open(copy, DatabaseOptions{});
  ASSERT_TRUE(db.ok()) << db.status();
  absl::StatusOr<std::optional<std::string>> restored =
      (*db)->Get((*db)->default_cf(), kRestoredBackupKey);
  ASSERT_TRUE(restored.ok()) << restored.status();
  EXPECT_TRUE(restored->has_value()) << "not marked restored";
  absl::StatusOr<std::optional<std::string>> forced =
      (*db)->Get((*db)->default_cf(), kForcedNewClusterKey);
  ASSERT_TRUE(forced.ok()) << forced.status();
  EXPECT_FALSE(forced->has_value()) << "the node's forced-start mark stayed";
}

}  // namespace
}  // namespace sessiond::storage
