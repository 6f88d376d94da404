// Copyright sessiond authors. Licensed under the Apache License 2.0.
//
// DecideIdentity (server/bootstrap.h) on a new data dir, with the peers'
// Hello answers made up: when a "new" member may bootstrap, and what it
// says while it waits. tests/integration/cluster_test.cc runs the same
// decisions with real members.
#include "server/bootstrap.h"

#include <map>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "gtest/gtest.h"
#include "server/config.h"
#include "storage/database.h"
#include "storage/raft_log_store.h"
#include "tests/server/test_util.h"

namespace sessiond::server {
namespace {

using sessiond::v1::internal::HelloResponse;
using Answers = std::map<uint64_t, absl::StatusOr<HelloResponse>>;

// Node 3 of a new three-member cluster, on an empty data dir.
class NewMemberTest : public ::testing::Test {
 protected:
  void SetUp() override {
    config_.node_id = 3;
    config_.data_dir = dir_.Child("data");
    config_.initial_cluster = "1=127.0.0.1:1,2=127.0.0.1:2,3=127.0.0.1:3";
    config_.initial_cluster_state = "new";
    absl::StatusOr<std::unique_ptr<storage::Database>> db =
        storage::Database::Open(config_.data_dir, storage::DatabaseOptions());
    ASSERT_TRUE(db.ok()) << db.status();
    db_ = *std::move(db);
    absl::StatusOr<std::unique_ptr<storage::RaftLogStore>> log =
        storage::RaftLogStore::Open(db_.get());
    ASSERT_TRUE(log.ok()) << log.status();
    log_ = *std::move(log);
    absl::StatusOr<uint64_t> id = ConfiguredClusterId(config_);
    ASSERT_TRUE(id.ok()) << id.status();
    cluster_id_ = *id;
  }

  // A member that serves this cluster with `voters`.
  HelloResponse Serving(uint64_t node, std::vector<uint64_t> voters) const {
    HelloResponse hello;
    hello.set_cluster_id(cluster_id_);
    hello.set_node_id(node);
    hello.set_bootstrapped(true);
    hello.set_serving(true);
    for (uint64_t v : voters) hello.add_voters(v);
    return hello;
  }

  // Node 1, forced into a cluster of its own (epoch 0xe), that added this
  // node back as a learner.
  HelloResponse ForcedWithThisNodeAdded() const {
    HelloResponse forced = Serving(1, {1});
    forced.add_learners(3);
    forced.set_cluster_epoch(0xe);
    return forced;
  }

  absl::StatusOr<BootstrapDecision> Decide(Answers answers) {
    BootstrapOptions options;
    options.peer_wait = absl::Milliseconds(50);
    options.retry_interval = absl::Milliseconds(10);
    return DecideIdentity(
        config_, db_.get(), *log_, [answers] { return answers; }, options);
  }

  server::testing::ScopedTempDir dir_;
  Config config_;
  std::unique_ptr<storage::Database> db_;
  std::unique_ptr<storage::RaftLogStore> log_;
  uint64_t cluster_id_ = 0;
};

TEST_F(NewMemberTest, BootstrapsWhenARunningMemberListsIt) {
  absl::StatusOr<BootstrapDecision> decision = Decide(
      {{1, Serving(1, {1, 2, 3})}, {2, absl::UnavailableError("refused")}});
  ASSERT_TRUE(decision.ok()) << decision.status();
  ASSERT_TRUE(decision->bootstrap_conf.has_value());
  EXPECT_EQ(decision->bootstrap_conf->voters.size(), 3u);
  EXPECT_EQ(decision->cluster_id, cluster_id_);
}

TEST_F(NewMemberTest, RefusesWhenTheRunningClusterRemovedIt) {
  // Nodes 1 and 2 went on without node 3 and removed it before it ever
  // ran: bootstrapped from its flags it would campaign alone, and answer
  // reads from an empty table.
  absl::StatusOr<BootstrapDecision> decision =
      Decide({{1, Serving(1, {1, 2})}, {2, Serving(2, {1, 2})}});
  ASSERT_EQ(decision.status().code(), absl::StatusCode::kFailedPrecondition)
      << decision.status();
  EXPECT_NE(decision.status().message().find("is not a member of cluster"),
            std::string::npos)
      << decision.status();
  EXPECT_NE(decision.status().message().find("AddMember node_id=3"),
            std::string::npos)
      << decision.status();
  // Nothing was written: started again with the right flags, it decides
  // afresh.
  absl::StatusOr<std::optional<sessiond::v1::internal::Identity>> identity =
      ReadIdentity(db_.get());
  ASSERT_TRUE(identity.ok()) << identity.status();
  EXPECT_FALSE(identity->has_value());
}

// A refusal no restart can mend is marked for an operator (sessiond then
// exits 4, which systemd does not restart); one the cluster or time can
// mend is not (exit 1, restarted).
TEST_F(NewMemberTest, OnlyRefusalsNoRestartCanMendAreForAnOperator) {
  const absl::StatusOr<BootstrapDecision> removed =
      Decide({{1, Serving(1, {1, 2})}, {2, Serving(2, {1, 2})}});
  ASSERT_FALSE(removed.ok());
  EXPECT_FALSE(IsForAnOperator(removed.status()))
      << "an AddMember mends it: " << removed.status();
  const absl::StatusOr<BootstrapDecision> unanswered =
      Decide({{1, absl::UnavailableError("refused")},
              {2, absl::UnavailableError("refused")}});
  ASSERT_FALSE(unanswered.ok());
  EXPECT_FALSE(IsForAnOperator(unanswered.status())) << unanswered.status();

  ASSERT_TRUE(
      Decide({{1, Serving(1, {1, 2, 3})}, {2, Serving(2, {1, 2, 3})}}).ok());
  config_.node_id = 2;  // this data dir is node 3's
  const absl::StatusOr<BootstrapDecision> other_node = Decide({});
  ASSERT_EQ(other_node.status().code(), absl::StatusCode::kFailedPrecondition)
      << other_node.status();
  EXPECT_TRUE(IsForAnOperator(other_node.status())) << other_node.status();
  EXPECT_FALSE(IsForAnOperator(absl::FailedPreconditionError(
      std::string(other_node.status().message()))))
      << "the mark is the payload, not the message";
}

// A member started "new" on an empty data dir while the cluster serves a
// later life of itself (forced from one member, or rebuilt from a backup,
// that added this node back). Bootstrapped from its flags at the first
// life's epoch, two such members elected each other: a second cluster
// under the same id, with an empty table.
TEST_F(NewMemberTest, RefusesACLusterRebuiltSinceItsFlags) {
  absl::StatusOr<BootstrapDecision> decision = Decide(
      {{1, ForcedWithThisNodeAdded()}, {2, absl::UnavailableError("refused")}});
  ASSERT_EQ(decision.status().code(), absl::StatusCode::kFailedPrecondition)
      << decision.status();
  EXPECT_NE(
      decision.status().message().find("--initial_cluster_state=existing"),
      std::string::npos)
      << decision.status();
  EXPECT_TRUE(IsForAnOperator(decision.status())) << decision.status();
  absl::StatusOr<std::optional<sessiond::v1::internal::Identity>> identity =
      ReadIdentity(db_.get());
  ASSERT_TRUE(identity.ok()) << identity.status();
  EXPECT_FALSE(identity->has_value());
}

// An answer counts only for the node asked. With --initial_cluster giving
// node 3's address to node 1 as well, node 1 asked itself "as node 3",
// heard "fresh", and bootstrapped without node 3, which held the data.
TEST_F(NewMemberTest, AnAnswerFromAnotherNodeThanTheOneAskedIsRefused) {
  HelloResponse fresh_2;
  fresh_2.set_node_id(2);
  HelloResponse self;
  self.set_node_id(1);
  config_.node_id = 1;
  absl::StatusOr<BootstrapDecision> decision =
      Decide({{2, fresh_2}, {3, self}});
  ASSERT_EQ(decision.status().code(), absl::StatusCode::kFailedPrecondition)
      << decision.status();
  EXPECT_NE(decision.status().message().find(
                "gives for node 3 is answered by node 1"),
            std::string::npos)
      << decision.status();
  EXPECT_TRUE(IsForAnOperator(decision.status())) << decision.status();
}

TEST_F(NewMemberTest, TheWaitNamesTheMembersThatDidNotAnswer) {
  HelloResponse fresh;
  fresh.set_node_id(1);
  absl::StatusOr<BootstrapDecision> decision =
      Decide({{1, fresh}, {2, absl::UnavailableError("connection refused")}});
  ASSERT_EQ(decision.status().code(), absl::StatusCode::kUnavailable)
      << decision.status();
  EXPECT_NE(decision.status().message().find(
                "no answer from node 2 (connection refused)"),
            std::string::npos)
      << decision.status();
  EXPECT_EQ(decision.status().message().find("node 1 ("), std::string::npos)
      << decision.status();
}

// Joining a running cluster (--initial_cluster_state=existing): the member
// takes the cluster epoch of the members that answer, and refuses when they
// belong to different lives of the cluster.
TEST_F(NewMemberTest, AJoinerTakesTheEpochOfTheClusterItJoins) {
  config_.initial_cluster_state = "existing";
  absl::StatusOr<BootstrapDecision> decision = Decide(
      {{1, ForcedWithThisNodeAdded()}, {2, absl::UnavailableError("refused")}});
  ASSERT_TRUE(decision.ok()) << decision.status();
  EXPECT_EQ(decision->cluster_epoch, 0xeu);
  absl::StatusOr<std::optional<sessiond::v1::internal::Identity>> identity =
      ReadIdentity(db_.get());
  ASSERT_TRUE(identity.ok() && identity->has_value()) << identity.status();
  EXPECT_EQ((*identity)->cluster_epoch(), 0xeu);
}

TEST_F(NewMemberTest, AJoinerRefusesTwoLivesOfTheCluster) {
  config_.initial_cluster_state = "existing";
  // Node 2 still runs on its old data dir, where node 3 is a voter.
  absl::StatusOr<BootstrapDecision> decision =
      Decide({{1, ForcedWithThisNodeAdded()}, {2, Serving(2, {1, 2, 3})}});
  ASSERT_EQ(decision.status().code(), absl::StatusCode::kFailedPrecondition)
      << decision.status();
  EXPECT_NE(decision.status().message().find("different lives of the cluster"),
            std::string::npos)
      << decision.status();
}

// A voter whose data dir was wiped, joining with "existing": node 1 lags
// (it has applied the AddMember, not node 3's start announcement), node 2
// says node 3 started. Every answer counts: it is refused, though node 1
// answers first. (Taken at node 1's word, it joined empty and counted as a
// voter that had acknowledged writes it no longer holds.)
TEST_F(NewMemberTest, AJoinerWeighsEveryAnswerNotTheFirst) {
  config_.initial_cluster_state = "existing";
  HelloResponse lagging = Serving(1, {1, 2, 3});
  HelloResponse current = Serving(2, {1, 2, 3});
  auto* member = current.mutable_cluster()->add_members();
  member->set_node_id(3);
  member->set_started(true);
  absl::StatusOr<BootstrapDecision> decision =
      Decide({{1, lagging}, {2, current}});
  ASSERT_EQ(decision.status().code(), absl::StatusCode::kFailedPrecondition)
      << decision.status();
  EXPECT_NE(decision.status().message().find("already ran it (peer 2"),
            std::string::npos)
      << decision.status();
}

// The reverse: node 1 has not applied node 3's AddMember yet, node 2 has.
// Node 3 joins; taken at node 1's word, it was told to add itself first.
TEST_F(NewMemberTest, AJoinerListedByALaterAnswerJoins) {
  config_.initial_cluster_state = "existing";
  HelloResponse listed = Serving(2, {1, 2});
  listed.add_learners(3);
  absl::StatusOr<BootstrapDecision> decision =
      Decide({{1, Serving(1, {1, 2})}, {2, listed}});
  ASSERT_TRUE(decision.ok()) << decision.status();
  EXPECT_EQ(decision->cluster_id, cluster_id_);
  EXPECT_TRUE(decision->joined_existing);
}

}  // namespace
}  // namespace sessiond::server
