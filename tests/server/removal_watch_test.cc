// Copyright sessiond authors. Licensed under the Apache License 2.0.
#include "server/removal_watch.h"

#include <initializer_list>

#include "gtest/gtest.h"

namespace sessiond::server {
namespace {

using replication::ConfState;
using sessiond::v1::internal::ClusterState;
using sessiond::v1::internal::HelloResponse;
using Verdict = RemovalWatch::Verdict;

constexpr NodeId kSelf(3);

ConfState Conf(std::initializer_list<uint64_t> voters,
               std::initializer_list<uint64_t> learners = {}) {
  ConfState conf;
  for (uint64_t id : voters) conf.voters.push_back(NodeId(id));
  for (uint64_t id : learners) conf.learners.push_back(NodeId(id));
  return conf;
}

ClusterState Removed(std::initializer_list<uint64_t> ids) {
  ClusterState cluster;
  for (uint64_t id : ids) cluster.add_removed(id);
  return cluster;
}

// A leader's Hello answer: its voters and learners, and whom its applied
// cluster state lists as removed.
HelloResponse Leader(std::initializer_list<uint64_t> voters,
                     std::initializer_list<uint64_t> learners,
                     std::initializer_list<uint64_t> removed) {
  HelloResponse answer;
  answer.set_leader(1);
  for (uint64_t id : voters) answer.add_voters(id);
  for (uint64_t id : learners) answer.add_learners(id);
  *answer.mutable_cluster() = Removed(removed);
  return answer;
}

TEST(RemovalWatchTest, AMemberThatAppliesItsRemovalStopsOnceTheLeaderSaysSo) {
  RemovalWatch watch(kSelf);
  watch.Start(Conf({1, 2, 3}), ClusterState());
  EXPECT_FALSE(watch.suspected());
  watch.OnApplied(Conf({1, 2, 3}));
  EXPECT_FALSE(watch.suspected());
  watch.OnApplied(Conf({1, 2}));
  EXPECT_TRUE(watch.suspected());
  // A leader that has not applied the removal yet decides nothing.
  EXPECT_EQ(watch.Judge(Leader({1, 2}, {}, {})), Verdict::kUndecided);
  EXPECT_TRUE(watch.suspected());
  EXPECT_EQ(watch.Judge(Leader({1, 2}, {}, {3})), Verdict::kRemoved);
}

// Removed, then added again on an empty data dir: catching up from the log,
// it applies its old removal in a batch before the one with its
// re-addition. The leader lists it as a member: it stays, and the
// re-addition applied later raises nothing.
TEST(RemovalWatchTest, AReAddedMemberReplayingItsOldRemovalStays) {
  RemovalWatch watch(kSelf);
  watch.Start(ConfState(), ClusterState());  // empty data dir
  EXPECT_FALSE(watch.suspected());
  watch.OnApplied(Conf({1, 2, 3}));  // the bootstrap entries
  watch.OnApplied(Conf({1, 2}));     // its old removal
  ASSERT_TRUE(watch.suspected());
  EXPECT_EQ(watch.Judge(Leader({1, 2}, {3}, {})), Verdict::kMember);
  EXPECT_FALSE(watch.suspected());
  watch.OnApplied(Conf({1, 2}, {3}));  // its re-addition, as a learner
  EXPECT_FALSE(watch.suspected());
  watch.OnApplied(Conf({1, 2, 3}));  // promoted
  EXPECT_FALSE(watch.suspected());
}

// A new member's first snapshot may predate its addition: not being in the
// configuration at start says nothing, unless the state lists it removed
// (it stopped after applying its removal, before the leader confirmed).
TEST(RemovalWatchTest, AtStartOnlyAnAppliedRemovalIsSuspect) {
  RemovalWatch joining(kSelf);
  joining.Start(Conf({1, 2}), ClusterState());
  EXPECT_FALSE(joining.suspected());
  joining.OnApplied(Conf({1, 2}));
  EXPECT_FALSE(joining.suspected());

  RemovalWatch stopped_early(kSelf);
  stopped_early.Start(Conf({1, 2}), Removed({3}));
  EXPECT_TRUE(stopped_early.suspected());
  EXPECT_EQ(stopped_early.Judge(Leader({1, 2}, {}, {3})), Verdict::kRemoved);

  // Another node's removal is none of its business.
  RemovalWatch member(kSelf);
  member.Start(Conf({1, 3}), Removed({2}));
  EXPECT_FALSE(member.suspected());
}

TEST(RemovalWatchTest, ARefusalAsARemovedMemberIsOnlyASuspicion) {
  RemovalWatch watch(kSelf);
  watch.Start(Conf({1, 2, 3}), ClusterState());
  watch.OnRemovedRefusal();
  ASSERT_TRUE(watch.suspected());
  // A voter, per the leader: a follower's stale view refused it.
  EXPECT_EQ(watch.Judge(Leader({1, 2, 3}, {}, {})), Verdict::kMember);
  EXPECT_FALSE(watch.suspected());
  watch.OnRemovedRefusal();
  EXPECT_EQ(watch.Judge(Leader({1, 2}, {}, {3})), Verdict::kRemoved);
}

}  // namespace
}  // namespace sessiond::server
