// Copyright sessiond authors. Licensed under the Apache License 2.0.
//
// The JWKS document a node publishes (server/jwks_document.h), over a real
// state machine on RocksDB in a temporary dir.
#include "server/jwks_document.h"

#include <memory>
#include <string>

#include "absl/strings/match.h"
#include "common/key_encryption.h"
#include "common/signing.h"
#include "gtest/gtest.h"
#include "sessiond/v1/command.pb.h"
#include "storage/database.h"
#include "storage/session_state_machine.h"
#include "storage/session_table.h"
#include "storage/snapshot_files.h"
#include "tests/storage/temp_dir.h"

namespace sessiond::server {
namespace {

using sessiond::v1::internal::Command;

class JwksDocumentTest : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::StatusOr<std::unique_ptr<storage::Database>> db =
        storage::Database::Open(dir_.Sub("db"), storage::DatabaseOptions{});
    ASSERT_TRUE(db.ok()) << db.status();
    db_ = *std::move(db);
    table_ = std::make_unique<storage::SessionTable>(
        storage::SessionTableOptions{8});
    snapshots_ = std::make_unique<storage::SnapshotFiles>(dir_.Sub("snap"));
    ASSERT_TRUE(snapshots_->Init().ok());
    storage::SessionStateMachineOptions options;
    options.snapshots = snapshots_.get();
    absl::StatusOr<std::unique_ptr<storage::SessionStateMachine>> sm =
        storage::SessionStateMachine::Open(db_.get(), table_.get(), options);
    ASSERT_TRUE(sm.ok()) << sm.status();
    sm_ = *std::move(sm);
  }

  void ApplyOne(const Command& command) {
    replication::Entry e;
    e.index = sm_->applied_index() + 1;
    e.term = Term(1);
    e.data = command.SerializeAsString();
    absl::StatusOr<std::vector<replication::ApplyResult>> results =
        sm_->Apply({e});
    ASSERT_TRUE(results.ok()) << results.status();
    ASSERT_EQ(results->size(), 1u);
    ASSERT_TRUE((*results)[0].ok()) << (*results)[0].status();
  }

  // Stages a new key (not a bootstrap: it stays STAGED); its kid.
  std::string Stage() {
    absl::StatusOr<signing::Ed25519KeyPair> pair =
        signing::GenerateEd25519KeyPair();
    EXPECT_TRUE(pair.ok());
    const std::string kid = *signing::KeyIdForPublicKey(pair->public_key);
    absl::StatusOr<KeyEncryptionKey> kek =
        KeyEncryptionKey::FromBytes(std::string(kKekBytes, 'k'));
    EXPECT_TRUE(kek.ok());
    Command c;
    c.set_timestamp_ms(1000);
    auto* stage = c.mutable_key_ring()->mutable_stage();
    stage->set_kid(kid);
    stage->set_algorithm(sessiond::v1::SIGNING_ALGORITHM_ED25519);
    stage->set_public_key(pair->public_key);
    stage->set_sealed_private_key(*kek->Seal(pair->private_key, kid));
    ApplyOne(c);
    return kid;
  }

  sessiond::testing::TempDir dir_;
  std::unique_ptr<storage::Database> db_;
  std::unique_ptr<storage::SessionTable> table_;
  std::unique_ptr<storage::SnapshotFiles> snapshots_;
  std::unique_ptr<storage::SessionStateMachine> sm_;
};

// A ring whose every key was retired publishes no empty set: a verifier
// would cache it for the max-age and refuse every token signed with a key
// activated meanwhile.
TEST_F(JwksDocumentTest, ARingOfRetiredKeysPublishesNoEmptySet) {
  const absl::StatusOr<JwksDocument> none = JwksDocumentNow(*sm_, nullptr);
  EXPECT_EQ(none.status().code(), absl::StatusCode::kUnavailable);

  const std::string kid = Stage();
  const absl::StatusOr<JwksDocument> staged = JwksDocumentNow(*sm_, nullptr);
  ASSERT_TRUE(staged.ok()) << staged.status();
  EXPECT_TRUE(absl::StrContains(staged->json, kid)) << staged->json;

  Command retire;
  retire.set_timestamp_ms(2000);
  retire.mutable_key_ring()->mutable_retire()->set_kid(kid);
  ApplyOne(retire);
  ASSERT_EQ(sm_->key_ring().Find(kid)->state(),
            sessiond::v1::SIGNING_KEY_RETIRED);
  const absl::StatusOr<JwksDocument> retired = JwksDocumentNow(*sm_, nullptr);
  EXPECT_EQ(retired.status().code(), absl::StatusCode::kUnavailable)
      << (retired.ok() ? retired->json : "");
  EXPECT_TRUE(absl::StrContains(retired.status().message(), "retired"))
      << retired.status();
}

}  // namespace
}  // namespace sessiond::server
