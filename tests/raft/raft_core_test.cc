// Copyright sessiond authors. Licensed under the Apache License 2.0.
//
// Paper-style tests of the Raft core: each names the section of the Raft
// thesis (Ongaro 2014) or paper whose rule it checks.
#include "replication/core/raft_core.h"

#include <cstdlib>
#include <deque>
#include <iostream>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "replication/memory_log_store.h"
#include "tests/raft/test_network.h"

namespace sessiond::replication {
namespace {

using testing::TestNetwork;

// Ticks every node until some node is leader; returns its id (0 on none).
uint64_t ElectLeader(TestNetwork& net, int max_ticks = 200) {
  for (int i = 0; i < max_ticks; ++i) {
    net.TickAll();
    net.Stabilize();
    for (auto& [id, n] : net.nodes()) {
      if (n.core && n.core->role() == Role::kLeader) return id.value();
    }
  }
  return 0;
}

int CountLeaders(TestNetwork& net, Term term) {
  int leaders = 0;
  for (auto& [id, n] : net.nodes()) {
    if (n.core && n.core->role() == Role::kLeader && n.core->term() == term) {
      ++leaders;
    }
  }
  return leaders;
}

std::vector<uint64_t> Terms(const std::vector<Entry>& log) {
  std::vector<uint64_t> out;
  for (const Entry& e : log) out.push_back(e.term.value());
  return out;
}

// --- Single voter (the production single-node path) -----------------------

TEST(RaftCoreTest, SingleVoterCampaignLeadsAtOnceAndCommitsOnPersist) {
  MemoryLogStore store(ConfState{{NodeId(1)}, {}});
  RaftConfig config;
  config.id = NodeId(1);
  auto core_or = RaftCore::Create(config, &store, 7);
  ASSERT_TRUE(core_or.ok()) << core_or.status();
  RaftCore& core = **core_or;
  core.Campaign();
  EXPECT_EQ(core.role(), Role::kLeader);
  EXPECT_EQ(core.term(), Term(1));
  EXPECT_EQ(core.leader(), NodeId(1));

  Ready rd = core.TakeReady();
  ASSERT_TRUE(rd.hard_state.has_value());
  ASSERT_EQ(rd.to_persist.size(), 1u);  // the leader's no-op
  EXPECT_TRUE(rd.send_now.empty());
  EXPECT_TRUE(rd.committed.empty());
  // Not committed before the local persist completes.
  EXPECT_EQ(core.commit_index(), LogIndex(0));
  ASSERT_TRUE(store.Append(rd.to_persist, rd.hard_state, true).ok());
  core.OnPersisted(LogIndex(1), Term(1));
  EXPECT_EQ(core.commit_index(), LogIndex(1));

  auto idx = core.Propose({"a", "b"});
  ASSERT_TRUE(idx.ok());
  EXPECT_EQ(*idx, LogIndex(3));
  rd = core.TakeReady();
  ASSERT_EQ(rd.committed.size(), 1u);  // the no-op
  ASSERT_EQ(rd.to_persist.size(), 2u);
  EXPECT_EQ(rd.to_persist[0].data, "a");
  EXPECT_EQ(core.commit_index(), LogIndex(1));
  ASSERT_TRUE(store.Append(rd.to_persist, rd.hard_state, true).ok());
  core.OnPersisted(LogIndex(3), Term(1));
  EXPECT_EQ(core.commit_index(), LogIndex(3));
  rd = core.TakeReady();
  ASSERT_EQ(rd.committed.size(), 2u);
  EXPECT_EQ(rd.committed[1].data, "b");
  ASSERT_TRUE(rd.hard_state.has_value());
  EXPECT_EQ(rd.hard_state->commit, LogIndex(3));
  core.OnApplied(LogIndex(3));
  EXPECT_EQ(core.status().applied, LogIndex(3));
  EXPECT_FALSE(core.HasReady());

  // ReadIndex on a single voter is answered at once.
  ASSERT_TRUE(core.ReadIndex("r1").ok());
  rd = core.TakeReady();
  ASSERT_EQ(rd.read_states.size(), 1u);
  EXPECT_EQ(rd.read_states[0].index, LogIndex(3));
  EXPECT_EQ(rd.read_states[0].context, "r1");
}

TEST(RaftCoreTest, SingleVoterRestartKeepsTermAndCommittedLog) {
  MemoryLogStore store(ConfState{{NodeId(1)}, {}});
  RaftConfig config;
  config.id = NodeId(1);
  {
    auto core = *RaftCore::Create(config, &store, 1);
    core->Campaign();
    for (int i = 0; i < 3; ++i) {
      if (i > 0) {
        ASSERT_TRUE(core->Propose({"x"}).ok());
      }
      Ready rd = core->TakeReady();
      ASSERT_TRUE(store.Append(rd.to_persist, rd.hard_state, true).ok());
      core->OnPersisted(rd.to_persist.back().index, rd.to_persist.back().term);
    }
    Ready rd = core->TakeReady();
    ASSERT_TRUE(store.Append(rd.to_persist, rd.hard_state, true).ok());
    EXPECT_EQ(core->commit_index(), LogIndex(3));
  }
  auto core = *RaftCore::Create(config, &store, 1);
  EXPECT_EQ(core->term(), Term(1));
  EXPECT_EQ(core->commit_index(), LogIndex(3));
  EXPECT_EQ(core->role(), Role::kFollower);
  Ready rd = core->TakeReady();
  EXPECT_EQ(rd.committed.size(), 3u);  // re-handed: config.applied is 0
  // Ticking alone elects it (election timeout in [10, 20)).
  for (int i = 0; i < 20 && core->role() != Role::kLeader; ++i) core->Tick();
  EXPECT_EQ(core->role(), Role::kLeader);
  EXPECT_EQ(core->term(), Term(2));
}

// --- Elections ---------------------------------------------------------------

// Thesis 3.4: election safety, at most one leader per term.
TEST(RaftCoreTest, ElectionSafetyOneLeaderPerTerm) {
  TestNetwork net({1, 2, 3, 4, 5});
  const uint64_t leader = ElectLeader(net);
  ASSERT_NE(leader, 0u);
  const Term term = net.core(leader).term();
  EXPECT_EQ(CountLeaders(net, term), 1);
  for (auto& [id, n] : net.nodes()) {
    EXPECT_EQ(n.core->term(), term);
    EXPECT_EQ(n.core->leader(), NodeId(leader));
  }
}

// Thesis 3.4: randomized election timeouts in [election, 2*election).
TEST(RaftCoreTest, ElectionTimeoutIsRandomizedWithinBounds) {
  for (uint64_t seed = 1; seed <= 20; ++seed) {
    MemoryLogStore store(ConfState{{NodeId(1), NodeId(2), NodeId(3)}, {}});
    RaftConfig config;
    config.id = NodeId(1);
    config.pre_vote = false;
    auto core = *RaftCore::Create(config, &store, seed);
    int ticks = 0;
    while (core->role() == Role::kFollower && ticks < 100) {
      core->Tick();
      ++ticks;
    }
    EXPECT_GE(ticks, 10);
    EXPECT_LT(ticks, 20);
  }
}

// Thesis 3.4: each server votes for at most one candidate in a term.
TEST(RaftCoreTest, VotesAtMostOncePerTerm) {
  MemoryLogStore store(ConfState{{NodeId(1), NodeId(2), NodeId(3)}, {}});
  RaftConfig config;
  config.id = NodeId(1);
  auto core = *RaftCore::Create(config, &store, 1);
  Message vote;
  vote.type = MessageType::kVote;
  vote.from = NodeId(2);
  vote.to = NodeId(1);
  vote.term = Term(1);
  ASSERT_TRUE(core->Step(vote).ok());
  vote.from = NodeId(3);
  ASSERT_TRUE(core->Step(vote).ok());
  Ready rd = core->TakeReady();
  ASSERT_EQ(rd.send_after_persist.size(), 2u);
  EXPECT_FALSE(rd.send_after_persist[0].reject);
  EXPECT_TRUE(rd.send_after_persist[1].reject);
  ASSERT_TRUE(rd.hard_state.has_value());
  EXPECT_EQ(rd.hard_state->vote, NodeId(2));
  // The grant waits for the persist of the vote.
  EXPECT_TRUE(rd.send_now.empty());
}

// Thesis 3.6.1: a vote is denied to a candidate whose log is less
// up-to-date (last term lower, or same last term and shorter).
TEST(RaftCoreTest, VoteDeniedToCandidateWithStaleLog) {
  struct Case {
    uint64_t last_index, last_term;
    bool granted;
  };
  // Voter's log: terms 1 1 2 (last 3/2).
  const Case cases[] = {
      {3, 2, true}, {4, 2, true}, {2, 2, false}, {5, 1, false}, {1, 3, true}};
  for (const Case& c : cases) {
    TestNetwork net({1, 2, 3});
    net.SetLog(1, Term(2), LogIndex(0), {1, 1, 2});
    Message vote;
    vote.type = MessageType::kVote;
    vote.from = NodeId(2);
    vote.to = NodeId(1);
    vote.term = Term(3);
    vote.index = LogIndex(c.last_index);
    vote.log_term = Term(c.last_term);
    ASSERT_TRUE(net.core(1).Step(vote).ok());
    Ready rd = net.core(1).TakeReady();
    ASSERT_EQ(rd.send_after_persist.size(), 1u);
    EXPECT_EQ(!rd.send_after_persist[0].reject, c.granted)
        << c.last_index << "/" << c.last_term;
  }
}

// Thesis 9.6: a partitioned node with PreVote does not inflate its term, so
// it cannot disrupt the leader when it rejoins.
TEST(RaftCoreTest, PreVotePartitionedNodeDoesNotDisruptOnRejoin) {
  TestNetwork net({1, 2, 3});
  net.core(1).Campaign();
  net.Stabilize();
  ASSERT_EQ(net.core(1).role(), Role::kLeader);
  const Term term = net.core(1).term();
  net.Partition({{1, 2}, {3}});
  for (int i = 0; i < 100; ++i) {
    net.TickAll();
    net.Stabilize();
  }
  EXPECT_EQ(net.core(3).term(), term);
  EXPECT_NE(net.core(3).role(), Role::kLeader);
  net.Heal();
  for (int i = 0; i < 30; ++i) {
    net.TickAll();
    net.Stabilize();
  }
  EXPECT_EQ(net.core(1).role(), Role::kLeader);
  EXPECT_EQ(net.core(1).term(), term);
  EXPECT_EQ(net.core(3).leader(), NodeId(1));
}

// Thesis 6.2 (CheckQuorum): a leader that has not heard from a quorum for an
// election timeout steps down.
TEST(RaftCoreTest, CheckQuorumLeaderStepsDownWhenIsolated) {
  TestNetwork net({1, 2, 3});
  net.core(1).Campaign();
  net.Stabilize();
  ASSERT_EQ(net.core(1).role(), Role::kLeader);
  net.Partition({{1}, {2, 3}});
  for (int i = 0; i < 25 && net.core(1).role() == Role::kLeader; ++i) {
    net.Tick(1);
    net.Stabilize();
  }
  EXPECT_EQ(net.core(1).role(), Role::kFollower);
}

// Thesis 4.2.3: a follower that hears from a live leader ignores vote
// requests (leader stickiness) unless they come from a leadership transfer.
TEST(RaftCoreTest, LeaderStickinessIgnoresVotesWhileLeaderIsLive) {
  TestNetwork net({1, 2, 3}, [](RaftConfig& c) { c.pre_vote = false; });
  net.core(1).Campaign();
  net.Stabilize();
  const Term term = net.core(1).term();
  Message vote;
  vote.type = MessageType::kVote;
  vote.from = NodeId(3);
  vote.to = NodeId(2);
  vote.term = term + 5;
  vote.index = LogIndex(100);
  vote.log_term = term;
  ASSERT_TRUE(net.core(2).Step(vote).ok());
  EXPECT_EQ(net.core(2).term(), term);
  EXPECT_FALSE(net.core(2).HasReady());
  vote.context = "transfer";
  ASSERT_TRUE(net.core(2).Step(vote).ok());
  EXPECT_EQ(net.core(2).term(), term + 5);
}

// Thesis 3.4: split votes are resolved by randomized timeouts.
TEST(RaftCoreTest, SplitVoteResolvesToOneLeader) {
  TestNetwork net({1, 2, 3, 4}, [](RaftConfig& c) { c.pre_vote = false; });
  // Two candidates at once: 1 and 3 each get one vote.
  net.Partition({{1, 2}, {3, 4}});
  net.core(1).Campaign();
  net.core(3).Campaign();
  net.Stabilize();
  EXPECT_EQ(net.core(1).role(), Role::kCandidate);
  EXPECT_EQ(net.core(3).role(), Role::kCandidate);
  net.Heal();
  const uint64_t leader = ElectLeader(net);
  ASSERT_NE(leader, 0u);
  EXPECT_EQ(CountLeaders(net, net.core(leader).term()), 1);
}

// --- Log replication ------------------------------------------------------

// Thesis 3.5 / paper figure 7: the leader brings followers with missing and
// extra (conflicting) entries into line with its log.
TEST(RaftCoreTest, LogMatchingFigure7FollowersConverge) {
  TestNetwork net({1, 2, 3, 4, 5, 6, 7});
  net.SetLog(1, Term(7), LogIndex(0), {1, 1, 1, 4, 4, 5, 5, 6, 6, 6});
  net.SetLog(2, Term(7), LogIndex(0), {1, 1, 1, 4, 4, 5, 5, 6, 6});
  net.SetLog(3, Term(7), LogIndex(0), {1, 1, 1, 4});
  net.SetLog(4, Term(7), LogIndex(0), {1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 6});
  net.SetLog(5, Term(7), LogIndex(0), {1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 7, 7});
  net.SetLog(6, Term(7), LogIndex(0), {1, 1, 1, 4, 4, 4, 4});
  net.SetLog(7, Term(7), LogIndex(0), {1, 1, 1, 2, 2, 2, 3, 3, 3, 3, 3});
  net.core(1).Campaign();
  const size_t delivered = net.Stabilize();
  ASSERT_EQ(net.core(1).role(), Role::kLeader);
  EXPECT_EQ(net.core(1).term(), Term(8));
  const std::vector<uint64_t> want = {1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 8};
  for (uint64_t id = 1; id <= 7; ++id) {
    EXPECT_EQ(Terms(net.StoredLog(id)), want) << "node " << id;
    EXPECT_EQ(net.core(id).commit_index(), LogIndex(11)) << "node " << id;
  }
  // Fast backtracking: a few round trips per follower, not one per entry.
  EXPECT_LT(delivered, 80u);
}

// Thesis 3.5: rejection hints skip a whole term per round trip.
TEST(RaftCoreTest, FastBacktrackingSkipsConflictingTerm) {
  TestNetwork net({1, 2, 3});
  net.SetLog(1, Term(5), LogIndex(0), {1, 1, 5, 5, 5, 5});
  std::vector<uint64_t> long_log = {1, 1};
  for (int i = 0; i < 50; ++i) long_log.push_back(3);
  net.SetLog(2, Term(4), LogIndex(0), long_log);
  net.Crash(3);
  net.core(1).Campaign();
  net.Stabilize();
  ASSERT_EQ(net.core(1).role(), Role::kLeader);
  EXPECT_EQ(Terms(net.StoredLog(2)),
            (std::vector<uint64_t>{1, 1, 5, 5, 5, 5, 6}));
  // vote + probe, reject, append with everything, ack: few messages.
  EXPECT_LT(net.delivered(), 12u);
}

// Thesis 3.6.2 / paper figure 8: an entry of an earlier term stored on a
// majority is not committed by counting replicas; only committing an entry
// of the current term commits it. The entry is later overwritten.
TEST(RaftCoreTest, CommitRuleFigure8OldTermEntryNotCommittedByCount) {
  TestNetwork net({1, 2, 3, 4, 5});
  // Figure 8 (c): S1 holds term-2 entry 2, as do S2 and S3 (a majority).
  net.SetLog(1, Term(3), LogIndex(1), {1, 2});
  net.SetLog(2, Term(3), LogIndex(1), {1, 2});
  net.SetLog(3, Term(3), LogIndex(1), {1, 2});
  net.SetLog(4, Term(3), LogIndex(1), {1});
  net.SetLog(5, Term(3), LogIndex(1), {1, 3});
  // S1 wins term 4; its appends (carrying its no-op) are lost.
  net.DropType(MessageType::kAppend);
  net.core(1).Campaign();
  net.Stabilize();
  ASSERT_EQ(net.core(1).role(), Role::kLeader);
  EXPECT_EQ(net.core(1).term(), Term(4));
  EXPECT_EQ(net.core(1).commit_index(), LogIndex(1));
  // The old-term entry is on a majority, yet S1 never committed it.
  net.Crash(1);
  net.Heal();
  // Figure 8 (d): S5 wins with votes from S2, S3, S4 and overwrites it.
  net.core(5).Campaign();
  net.Stabilize();
  ASSERT_EQ(net.core(5).role(), Role::kLeader);
  for (uint64_t id = 2; id <= 5; ++id) {
    EXPECT_EQ(Terms(net.StoredLog(id)), (std::vector<uint64_t>{1, 3, 5}));
  }
}

// Thesis 3.6.2: with the deliberate bug flag, a leader counts matches of an
// old-term entry and commits it (what the simulator must detect).
TEST(RaftCoreTest, UnsafeCommitFlagCommitsOldTermEntryByCount) {
  for (bool unsafe : {false, true}) {
    // Hand-deliver an ack of entry 2 only (as if the no-op were still in
    // flight): only the unsafe rule commits entry 2 on it.
    Message ack;
    ack.type = MessageType::kAppendResponse;
    ack.from = NodeId(2);
    ack.to = NodeId(1);
    ack.term = Term(3);
    ack.index = LogIndex(2);
    TestNetwork net2({1, 2, 3}, [unsafe](RaftConfig& c) {
      c.unsafe_commit_previous_term_for_test = unsafe;
    });
    net2.SetLog(1, Term(2), LogIndex(0), {1, 2});
    net2.SetLog(2, Term(2), LogIndex(0), {1, 2});
    net2.SetLog(3, Term(2), LogIndex(0), {1});
    net2.DropType(MessageType::kAppend);
    net2.core(1).Campaign();
    net2.Stabilize();
    ASSERT_EQ(net2.core(1).role(), Role::kLeader);
    ASSERT_TRUE(net2.core(1).Step(ack).ok());
    EXPECT_EQ(net2.core(1).commit_index(), LogIndex(unsafe ? 2 : 0))
        << "unsafe=" << unsafe;
  }
}

// Thesis 10.2.1: the leader's own log counts toward the quorum only once it
// is persisted, even though its appends leave before the write.
TEST(RaftCoreTest, LeaderCountsItselfOnlyAfterPersist) {
  MemoryLogStore s1(ConfState{{NodeId(1), NodeId(2), NodeId(3)}, {}});
  MemoryLogStore s2(ConfState{{NodeId(1), NodeId(2), NodeId(3)}, {}});
  RaftConfig c1;
  c1.id = NodeId(1);
  RaftConfig c2;
  c2.id = NodeId(2);
  auto leader = *RaftCore::Create(c1, &s1, 1);
  auto follower = *RaftCore::Create(c2, &s2, 2);
  leader->Campaign();
  Ready rd = leader->TakeReady();
  ASSERT_TRUE(s1.Append(rd.to_persist, rd.hard_state, true).ok());
  for (Message& m : rd.send_after_persist) {
    if (m.to == NodeId(2)) {
      ASSERT_TRUE(follower->Step(m).ok());
    }
  }
  Ready frd = follower->TakeReady();
  ASSERT_TRUE(s2.Append(frd.to_persist, frd.hard_state, true).ok());
  for (Message& m : frd.send_after_persist) ASSERT_TRUE(leader->Step(m).ok());
  ASSERT_EQ(leader->role(), Role::kLeader);

  rd = leader->TakeReady();  // the no-op: appends in send_now
  ASSERT_EQ(rd.to_persist.size(), 1u);
  ASSERT_FALSE(rd.send_now.empty());
  EXPECT_TRUE(rd.send_after_persist.empty());
  for (Message& m : rd.send_now) {
    if (m.to == NodeId(2)) {
      ASSERT_TRUE(follower->Step(m).ok());
    }
  }
  frd = follower->TakeReady();
  ASSERT_EQ(frd.to_persist.size(), 1u);
  ASSERT_TRUE(frd.send_now.empty());  // the ack waits for the persist
  ASSERT_TRUE(s2.Append(frd.to_persist, frd.hard_state, true).ok());
  follower->OnPersisted(frd.to_persist.back().index,
                        frd.to_persist.back().term);
  for (Message& m : frd.send_after_persist) ASSERT_TRUE(leader->Step(m).ok());
  // One follower acked, the leader's write is not done: 1 of 3.
  EXPECT_EQ(leader->commit_index(), LogIndex(0));
  ASSERT_TRUE(s1.Append(rd.to_persist, rd.hard_state, true).ok());
  leader->OnPersisted(LogIndex(1), Term(1));
  EXPECT_EQ(leader->commit_index(), LogIndex(1));
  // A stale persist notification (wrong term) is ignored.
  leader->OnPersisted(LogIndex(1), Term(9));
  EXPECT_EQ(leader->commit_index(), LogIndex(1));
}

// Thesis 10.2.2: batching and pipelining. Many proposals go in few
// messages; several appends are in flight at once, bounded by the window.
TEST(RaftCoreTest, PipeliningBatchingAndFlowControl) {
  TestNetwork net({1, 2, 3}, [](RaftConfig& c) {
    c.max_inflight_messages = 3;
    c.max_message_bytes = 1000;
  });
  net.core(1).Campaign();
  net.Stabilize();
  ASSERT_EQ(net.core(1).role(), Role::kLeader);
  // Replicate state, 5 separate proposals before any delivery: at most 3
  // appends in flight per follower.
  for (int i = 0; i < 5; ++i) {
    ASSERT_TRUE(net.core(1).Propose({std::string(10, 'a' + i)}).ok());
  }
  net.ProcessReadies();
  int appends_to_2 = 0;
  for (const Message& m : net.queue()) {
    if (m.type == MessageType::kAppend && m.to == NodeId(2)) ++appends_to_2;
  }
  EXPECT_EQ(appends_to_2, 3);
  EXPECT_EQ(net.core(1).status().progress_state.at(NodeId(2)), "replicate");
  net.Stabilize();
  EXPECT_EQ(net.core(2).commit_index(), net.core(1).commit_index());
  EXPECT_EQ(net.node(2).applied.size(), 5u);

  // A batch larger than max_message_bytes is split across messages.
  std::vector<std::string> batch(50, std::string(100, 'z'));
  ASSERT_TRUE(net.core(1).Propose(batch).ok());
  net.ProcessReadies();
  size_t max_entries = 0;
  for (const Message& m : net.queue()) {
    if (m.type == MessageType::kAppend && m.to == NodeId(2)) {
      max_entries = std::max(max_entries, m.entries.size());
    }
  }
  EXPECT_LE(max_entries, 10u);
  EXPECT_GE(max_entries, 2u);
  net.Stabilize();
  EXPECT_EQ(net.node(3).applied.size(), 55u);
}

// Thesis 10.2.2 (flow control): the bytes in flight to a follower are
// capped by max_inflight_bytes as well as the message count.
TEST(RaftCoreTest, InflightBytesCapPausesReplication) {
  TestNetwork net({1, 2}, [](RaftConfig& c) {
    c.max_inflight_bytes = 250;
    c.max_message_bytes = 100;
  });
  net.core(1).Campaign();
  net.Stabilize();
  for (int i = 0; i < 6; ++i) {
    ASSERT_TRUE(net.core(1).Propose({std::string(100, 'a')}).ok());
  }
  net.ProcessReadies();
  int appends = 0;
  for (const Message& m : net.queue()) {
    if (m.type == MessageType::kAppend && !m.entries.empty()) ++appends;
  }
  EXPECT_EQ(appends, 3);  // 300 bytes in flight >= 250: paused
  net.Stabilize();
  EXPECT_EQ(net.node(2).applied.size(), 6u);
}

// The driver tells the core what its state machine already applied; only
// later committed entries are handed out again after a restart.
TEST(RaftCoreTest, RestartWithAppliedIndexSkipsAppliedEntries) {
  MemoryLogStore store(ConfState{{NodeId(1)}, {}});
  RaftConfig config;
  config.id = NodeId(1);
  {
    auto core = *RaftCore::Create(config, &store, 1);
    core->Campaign();
    ASSERT_TRUE(core->Propose({"a", "b", "c"}).ok());
    Ready rd = core->TakeReady();
    ASSERT_TRUE(store.Append(rd.to_persist, rd.hard_state, true).ok());
    core->OnPersisted(rd.to_persist.back().index, rd.to_persist.back().term);
    rd = core->TakeReady();
    ASSERT_TRUE(store.Append(rd.to_persist, rd.hard_state, true).ok());
    ASSERT_EQ(rd.committed.size(), 4u);
  }
  config.applied = LogIndex(2);
  auto core = *RaftCore::Create(config, &store, 1);
  EXPECT_EQ(core->status().applied, LogIndex(2));
  Ready rd = core->TakeReady();
  ASSERT_EQ(rd.committed.size(), 2u);
  EXPECT_EQ(rd.committed[0].index, LogIndex(3));
  EXPECT_EQ(rd.committed[1].data, "c");
}

// Thesis 4.1 / etcd: a node does not campaign while committed entries (which
// may change the membership) have not been handed out yet.
TEST(RaftCoreTest, NoCampaignWithCommittedEntriesNotHandedOut) {
  TestNetwork net({1, 2, 3});
  net.core(1).Campaign();
  net.Stabilize();
  ASSERT_TRUE(net.core(1).Propose({"x"}).ok());
  net.Stabilize();
  // Node 2 learns a new commit index but its Ready is not taken yet.
  ASSERT_TRUE(net.core(1).Propose({"y"}).ok());
  net.DeliverRound();  // appends to 2 and 3
  net.DeliverRound();  // acks: the leader commits and tells the followers
  std::deque<Message> q = std::move(net.queue());
  net.queue().clear();
  for (Message& m : q) {
    if (m.to == NodeId(2)) {
      ASSERT_TRUE(net.core(2).Step(std::move(m)).ok());
    }
  }
  ASSERT_EQ(net.core(2).commit_index(), LogIndex(3));
  ASSERT_TRUE(net.core(2).HasReady());
  net.core(2).Campaign();
  EXPECT_EQ(net.core(2).role(), Role::kFollower);
  net.ProcessReady(net.node(2));
  // Once handed out, it may (commit may still lag: deliver everything).
  net.Stabilize();
  net.core(2).Campaign();
  EXPECT_EQ(net.core(2).role(), Role::kCandidate);
}

// Thesis 3.5: a follower that lost messages is repaired by probing.
TEST(RaftCoreTest, LaggingFollowerCatchesUp) {
  TestNetwork net({1, 2, 3});
  net.core(1).Campaign();
  net.Stabilize();
  net.Crash(3);
  for (int i = 0; i < 20; ++i) ASSERT_TRUE(net.core(1).Propose({"p"}).ok());
  net.Stabilize();
  EXPECT_EQ(net.core(1).commit_index(), LogIndex(21));
  net.Restart(3);
  for (int i = 0; i < 3; ++i) {
    net.Tick(1);
    net.Stabilize();
  }
  EXPECT_EQ(net.StoredLog(3).size(), 21u);
  EXPECT_EQ(net.node(3).applied.size(), 20u);
}

// Thesis 3.6 / 5.1: a stale leader on the minority side cannot commit; its
// uncommitted entries are replaced after the partition heals.
TEST(RaftCoreTest, StaleLeaderAfterPartitionCannotCommit) {
  TestNetwork net({1, 2, 3, 4, 5},
                  [](RaftConfig& c) { c.check_quorum = false; });
  net.core(1).Campaign();
  net.Stabilize();
  net.Partition({{1, 2}, {3, 4, 5}});
  ASSERT_TRUE(net.core(1).Propose({"lost"}).ok());
  net.Stabilize();
  EXPECT_EQ(net.core(1).commit_index(), LogIndex(1));
  net.core(3).Campaign();
  net.Stabilize();
  ASSERT_EQ(net.core(3).role(), Role::kLeader);
  ASSERT_TRUE(net.core(3).Propose({"kept"}).ok());
  net.Stabilize();
  net.Heal();
  net.TickAll();
  net.Stabilize();
  EXPECT_EQ(net.core(1).role(), Role::kFollower);
  for (uint64_t id = 1; id <= 5; ++id) {
    EXPECT_EQ(net.node(id).applied, (std::vector<std::string>{"kept"}));
  }
}

// --- Reads -----------------------------------------------------------------

// Thesis 6.4: ReadIndex is served after a heartbeat round confirms the
// leadership; a follower forwards its request to the leader.
TEST(RaftCoreTest, ReadIndexConfirmsLeadershipAndForwardsFromFollower) {
  TestNetwork net({1, 2, 3});
  net.core(1).Campaign();
  net.Stabilize();
  ASSERT_TRUE(net.core(1).Propose({"w"}).ok());
  net.Stabilize();
  ASSERT_TRUE(net.core(1).ReadIndex("leader-read").ok());
  net.ProcessReadies();
  EXPECT_TRUE(net.node(1).read_states.empty());  // needs the round trip
  net.Stabilize();
  ASSERT_EQ(net.node(1).read_states.size(), 1u);
  EXPECT_EQ(net.node(1).read_states[0].index, LogIndex(2));

  ASSERT_TRUE(net.core(3).ReadIndex("follower-read").ok());
  net.Stabilize();
  ASSERT_EQ(net.node(3).read_states.size(), 1u);
  EXPECT_EQ(net.node(3).read_states[0].context, "follower-read");
  EXPECT_EQ(net.node(3).read_states[0].index, LogIndex(2));

  // A leader cut off from the quorum cannot confirm.
  net.Partition({{1}, {2, 3}});
  ASSERT_TRUE(net.core(1).ReadIndex("isolated").ok());
  net.Stabilize();
  EXPECT_EQ(net.node(1).read_states.size(), 1u);
  // No leader known: Unavailable.
  TestNetwork fresh({1, 2, 3});
  EXPECT_EQ(fresh.core(2).ReadIndex("x").code(),
            absl::StatusCode::kUnavailable);
}

// Thesis 6.4 step 1: a new leader answers ReadIndex only after it has
// committed an entry of its own term.
TEST(RaftCoreTest, ReadIndexWaitsForCommitInNewTerm) {
  TestNetwork net({1, 2, 3});
  net.DropType(MessageType::kAppend);
  net.core(1).Campaign();
  net.Stabilize();
  ASSERT_EQ(net.core(1).role(), Role::kLeader);
  ASSERT_TRUE(net.core(1).ReadIndex("early").ok());
  net.Stabilize();
  EXPECT_TRUE(net.node(1).read_states.empty());
  net.Heal();
  net.Tick(1);  // heartbeat -> responses -> appends of the no-op
  net.Stabilize();
  net.Tick(1);
  net.Stabilize();
  ASSERT_EQ(net.node(1).read_states.size(), 1u);
  EXPECT_EQ(net.node(1).read_states[0].index, LogIndex(1));
}

// A leader that cannot commit its term's first entry (every disk stalled)
// stays in office under check_quorum while heartbeats are answered; the
// reads that arrive meanwhile are held up to a bound, the newest kept.
TEST(RaftCoreTest, ReadsBeforeTheFirstCommitAreBounded) {
  TestNetwork net({1, 2, 3});
  net.DropType(MessageType::kAppend);
  net.core(1).Campaign();
  net.Stabilize();
  ASSERT_EQ(net.core(1).role(), Role::kLeader);
  constexpr size_t kBound = RaftCore::kMaxReadsBeforeFirstCommit;
  constexpr size_t kReads = kBound + 100;
  for (size_t i = 0; i < kReads; ++i) {
    ASSERT_TRUE(net.core(1).ReadIndex(absl::StrCat(i)).ok());
  }
  net.Stabilize();
  ASSERT_TRUE(net.node(1).read_states.empty());
  net.Heal();
  // Released together, they are confirmed by one heartbeat round, not one
  // round each.
  size_t heartbeats = 0;
  for (int i = 0; i < 2; ++i) {
    net.Tick(1);
    for (int round = 0; round < 100 && !net.queue().empty(); ++round) {
      for (const Message& m : net.DeliverRound()) {
        if (m.type == MessageType::kHeartbeat) ++heartbeats;
      }
    }
  }
  EXPECT_LE(heartbeats, 8u);
  const std::vector<ReadState>& answered = net.node(1).read_states;
  ASSERT_EQ(answered.size(), kBound);
  EXPECT_EQ(answered.front().context, absl::StrCat(kReads - kBound));
  EXPECT_EQ(answered.back().context, absl::StrCat(kReads - 1));
}

// Thesis 6.4.1: lease-based reads are answered without a round trip while
// a quorum acknowledged a heartbeat sent less than election_ticks - 2 ticks
// ago; after that they need a ReadIndex round.
TEST(RaftCoreTest, LeaseBasedReadNeedsNoRoundTripUntilLeaseLapses) {
  TestNetwork net({1, 2, 3}, [](RaftConfig& c) {
    c.read_only_mode = ReadOnlyMode::kLeaseBased;
  });
  // Nodes in lease mode refuse votes for an election timeout after start.
  net.core(1).Campaign();
  net.Stabilize();
  EXPECT_NE(net.core(1).role(), Role::kLeader);
  const uint64_t leader = ElectLeader(net);
  ASSERT_NE(leader, 0u);
  net.Tick(leader);  // heartbeat round carrying the send tick
  net.Stabilize();
  std::vector<uint64_t> others;
  for (uint64_t id = 1; id <= 3; ++id) {
    if (id != leader) others.push_back(id);
  }
  net.Partition({{leader}, others});
  ASSERT_TRUE(net.core(leader).ReadIndex("lease").ok());
  net.ProcessReadies();
  ASSERT_EQ(net.node(leader).read_states.size(), 1u);
  EXPECT_EQ(net.node(leader).read_states[0].index,
            net.core(leader).commit_index());
  // Eight ticks (election_ticks - 2) after that heartbeat left, the lease
  // has lapsed: the read needs a quorum round, which the partition blocks.
  for (int i = 0; i < 8; ++i) net.Tick(leader);
  ASSERT_EQ(net.core(leader).role(), Role::kLeader);
  ASSERT_TRUE(net.core(leader).ReadIndex("lapsed").ok());
  net.Stabilize();
  EXPECT_EQ(net.node(leader).read_states.size(), 1u);
  net.Heal();
  net.Tick(leader);
  net.Stabilize();
  EXPECT_EQ(net.node(leader).read_states.size(), 2u);
}

// A member that restarts may have acknowledged a lease-mode leader's
// heartbeat just before, which that leader counts toward its lease whatever
// the member's own read mode (members may differ during a rolling change of
// --read_mode). With refuse_votes_after_start (sessiond sets it on every
// node) a member in ReadIndex mode refuses votes for an election timeout
// after it starts, as a lease-mode one does; without it, it voted at once.
TEST(RaftCoreTest, ARestartedMemberRefusesVotesWhateverItsOwnReadMode) {
  TestNetwork net({1, 2, 3}, [](RaftConfig& c) {
    c.read_only_mode = ReadOnlyMode::kReadIndex;
    c.refuse_votes_after_start = true;
  });
  net.core(1).Campaign();
  net.Stabilize();
  EXPECT_NE(net.core(1).role(), Role::kLeader);
  EXPECT_NE(ElectLeader(net), 0u);  // once an election timeout has passed
}

// Thesis 6.4.1: a follower that acknowledged a lease-mode leader's heartbeat
// refuses votes for an election timeout of its own ticks, whatever else it
// hears meanwhile. A message of a higher term from another node (here a
// rejected pre-vote answer, as a node that campaigned in vain sends) made it
// a follower of no leader, and it voted at once: the partitioned node it
// votes for became leader while the old leader, still counting the
// follower's acknowledgement, answered reads from its lease. `campaigner_too`
// raises the campaigner's term as well, so its requests are of a higher term
// than the follower's; otherwise they are of the same term.
void ExpectAckedFollowerRefusesVotesAfterAHigherTerm(bool campaigner_too) {
  TestNetwork net({1, 2, 3}, [](RaftConfig& c) {
    c.read_only_mode = ReadOnlyMode::kLeaseBased;
  });
  const uint64_t leader = ElectLeader(net);
  ASSERT_NE(leader, 0u);
  const uint64_t follower = leader == 1 ? 2 : 1;
  const uint64_t partitioned = 6 - leader - follower;
  net.Partition({{leader, follower}, {partitioned}});
  net.Tick(leader, 3);  // a heartbeat round the follower acknowledges
  net.Stabilize();
  net.Partition({{leader}, {follower, partitioned}});
  ASSERT_TRUE(net.core(leader).ReadIndex("lease").ok());
  net.ProcessReadies();
  ASSERT_EQ(net.node(leader).read_states.size(), 1u) << "no lease";

  const Term term = net.core(leader).term();
  Message rejected;
  rejected.type = MessageType::kPreVoteResponse;
  rejected.from = NodeId(partitioned);
  rejected.to = NodeId(follower);
  rejected.term = term + 1;
  rejected.reject = true;
  ASSERT_TRUE(net.core(follower).Step(Message(rejected)).ok());
  if (campaigner_too) {
    Message higher = rejected;
    higher.from = NodeId(follower);
    higher.to = NodeId(partitioned);
    ASSERT_TRUE(net.core(partitioned).Step(std::move(higher)).ok());
  }
  net.ProcessReadies();
  net.Stabilize();

  // Neither the leader nor the follower ticks: the follower's election
  // timeout since its acknowledgement never passes, nor the lease.
  for (int i = 0; i < 40; ++i) {
    net.Tick(partitioned);
    net.Stabilize();
    ASSERT_NE(net.core(partitioned).role(), Role::kLeader)
        << "elected with the vote of a follower inside the lease, tick " << i;
  }
  ASSERT_TRUE(net.core(leader).ReadIndex("still").ok());
  net.ProcessReadies();
  EXPECT_EQ(net.node(leader).read_states.size(), 2u);

  // Once the follower's own election timeout has passed, the two elect.
  bool elected = false;
  for (int i = 0; i < 60 && !elected; ++i) {
    net.Tick(follower);
    net.Tick(partitioned);
    net.Stabilize();
    elected = net.core(follower).role() == Role::kLeader ||
              net.core(partitioned).role() == Role::kLeader;
  }
  EXPECT_TRUE(elected);
}

// Node 1, whose election timeout is `leader_ticks`, is elected after every
// member's start window has passed, and its first heartbeat is acknowledged:
// it reads from its lease.
void ElectNode1WithALease(TestNetwork& net, int leader_ticks) {
  net.Partition({{1}, {2}, {3}, {4}, {5}});
  net.TickAll(leader_ticks + 5);
  net.Stabilize();
  net.Heal();
  net.core(1).Campaign();
  net.Stabilize();
  ASSERT_EQ(net.core(1).role(), Role::kLeader);
  net.Tick(1);
  net.Stabilize();
  ASSERT_GT(net.core(1).LocalReadTicks(), 0u);
}

// Members whose election timeouts differ (a rolling change of
// --election_ticks or --tick_ms): the leader's lease (election_ticks - 2 of
// its ticks) outlasts the followers' own refusal window. Each heartbeat
// carries the lease's length in time, and a follower refuses votes for as
// long as it, whatever its own settings; it refused for its own election
// timeout only, and a partitioned pair elected a leader while the old one
// still read from its lease.
// Node 1 leads with election_ticks 30, the others have 10; after one
// acknowledged heartbeat (and, if `append_after`, an append) it is cut off:
// no other node may lead while it still reads from its lease.
void ExpectNoLeaderWithinALongerLease(bool append_after) {
  TestNetwork net({1, 2, 3}, [](RaftConfig& c) {
    c.read_only_mode = ReadOnlyMode::kLeaseBased;
    c.tick_us = 10'000;
    c.election_ticks = c.id == NodeId(1) ? 30 : 10;
  });
  ASSERT_NO_FATAL_FAILURE(ElectNode1WithALease(net, 30));
  if (append_after) {
    ASSERT_TRUE(net.core(1).Propose({"after the lease"}).ok());
    net.Stabilize();
  }

  net.Partition({{1}, {2, 3}});
  bool elected = false;
  for (int tick = 1; tick <= 100 && !elected; ++tick) {
    net.TickAll();
    net.Stabilize();
    elected = net.core(2).role() == Role::kLeader ||
              net.core(3).role() == Role::kLeader;
    if (elected) {
      EXPECT_EQ(net.core(1).LocalReadTicks(), 0u)
          << "a leader elected after " << tick
          << " ticks while the old one still reads from its lease";
    }
  }
  EXPECT_TRUE(elected);
}

TEST(RaftCoreTest, AFollowerRefusesVotesForTheLeadersLeaseNotJustItsOwn) {
  ExpectNoLeaderWithinALongerLease(/*append_after=*/false);
}

// An append heard after the heartbeat that carried the lease does not cut
// the refusal down to the follower's own election timeout.
TEST(RaftCoreTest, AnAppendAfterTheLeaseDoesNotShortenTheRefusal) {
  ExpectNoLeaderWithinALongerLease(/*append_after=*/true);
}

// A follower that acknowledged a lease does not campaign during it either:
// its own vote, with those of members the leader no longer reached (they
// refuse nothing), would elect it while the lease runs. Five members, the
// leader's election timeout longer than the others'.
TEST(RaftCoreTest, AFollowerInALeaseDoesNotCampaignDuringIt) {
  TestNetwork net({1, 2, 3, 4, 5}, [](RaftConfig& c) {
    c.read_only_mode = ReadOnlyMode::kLeaseBased;
    c.tick_us = 10'000;
    c.election_ticks = c.id == NodeId(1) ? 30 : 10;
  });
  net.Partition({{1}, {2}, {3}, {4}, {5}});
  net.TickAll(35);
  net.Stabilize();
  net.Heal();
  net.core(1).Campaign();
  net.Stabilize();
  ASSERT_EQ(net.core(1).role(), Role::kLeader);
  // Nodes 4 and 5 stop hearing from the leader long enough to refuse
  // nothing; its lease rests on nodes 2 and 3.
  net.Cut(1, 4);
  net.Cut(1, 5);
  for (int tick = 0; tick < 35; ++tick) {
    net.TickAll();
    net.Stabilize();
  }
  ASSERT_EQ(net.core(1).role(), Role::kLeader);
  net.Tick(1);
  net.Stabilize();
  ASSERT_GT(net.core(1).LocalReadTicks(), 0u);

  net.Partition({{1}, {2, 3, 4, 5}});
  bool elected = false;
  for (int tick = 1; tick <= 200 && !elected; ++tick) {
    net.TickAll();
    net.Stabilize();
    for (uint64_t id = 2; id <= 5; ++id) {
      elected = elected || net.core(id).role() == Role::kLeader;
    }
    if (elected) {
      EXPECT_EQ(net.core(1).LocalReadTicks(), 0u)
          << "a leader elected after " << tick
          << " ticks while the old one still reads from its lease";
    }
  }
  EXPECT_TRUE(elected);
}

// When a long lease ends, the followers that refused votes during it do not
// all campaign at the tick it ends: each still waits its own randomized
// share of an election timeout, so one usually wins before the others
// campaign instead of all splitting the vote. They kept counting elapsed ticks
// during the refusal, and every one was past its timeout when it ended.
TEST(RaftCoreTest, FollowersDoNotCampaignInLockstepWhenALongLeaseEnds) {
  TestNetwork net({1, 2, 3, 4, 5}, [](RaftConfig& c) {
    c.read_only_mode = ReadOnlyMode::kLeaseBased;
    c.tick_us = 10'000;
    c.election_ticks = c.id == NodeId(1) ? 60 : 10;
  });
  ASSERT_NO_FATAL_FAILURE(ElectNode1WithALease(net, 60));

  net.Partition({{1}, {2, 3, 4, 5}});
  size_t first_campaigners = 0;
  for (int tick = 1; tick <= 300 && first_campaigners == 0; ++tick) {
    net.TickAll();
    for (uint64_t id = 2; id <= 5; ++id) {
      if (net.core(id).role() != Role::kFollower) ++first_campaigners;
    }
    net.Stabilize();
  }
  // Two may still draw the same timeout; all four did, every time.
  EXPECT_LT(first_campaigners, 4u)
      << "every member campaigned at the tick the lease ended";
}

TEST(RaftCoreTest, AFollowerInALeaseRefusesAHigherTermCampaign) {
  ExpectAckedFollowerRefusesVotesAfterAHigherTerm(/*campaigner_too=*/true);
}

TEST(RaftCoreTest, AFollowerInALeaseRefusesACampaignOfItsNewTerm) {
  ExpectAckedFollowerRefusesVotesAfterAHigherTerm(/*campaigner_too=*/false);
}

// Thesis 6.4.1: a leader that hands leadership over stops serving lease
// reads, since the transferee's campaign bypasses stickiness.
TEST(RaftCoreTest, LeaseReadsStopAtLeadershipTransfer) {
  TestNetwork net({1, 2, 3}, [](RaftConfig& c) {
    c.read_only_mode = ReadOnlyMode::kLeaseBased;
  });
  const uint64_t leader = ElectLeader(net);
  ASSERT_NE(leader, 0u);
  net.Tick(leader);
  net.Stabilize();
  const uint64_t target = leader == 1 ? 2 : 1;
  net.DropType(MessageType::kTimeoutNow);
  ASSERT_TRUE(net.core(leader).TransferLeadership(NodeId(target)).ok());
  net.Stabilize();
  ASSERT_EQ(net.core(leader).role(), Role::kLeader);
  net.Partition({{leader}, {}});
  ASSERT_TRUE(net.core(leader).ReadIndex("during-transfer").ok());
  net.ProcessReadies();
  EXPECT_TRUE(net.node(leader).read_states.empty());
}

// --- Leadership transfer
// ------------------------------------------------------

// Thesis 3.10: the leader catches the target up, then sends TimeoutNow; the
// target wins at once even though followers have a live leader.
TEST(RaftCoreTest, LeadershipTransferToLaggingFollower) {
  TestNetwork net({1, 2, 3});
  net.core(1).Campaign();
  net.Stabilize();
  net.Crash(3);
  for (int i = 0; i < 5; ++i) ASSERT_TRUE(net.core(1).Propose({"x"}).ok());
  net.Stabilize();
  net.Restart(3);
  ASSERT_TRUE(net.core(1).TransferLeadership(NodeId(3)).ok());
  EXPECT_EQ(net.core(1).Propose({"refused"}).status().code(),
            absl::StatusCode::kUnavailable);
  net.Stabilize();
  EXPECT_EQ(net.core(3).role(), Role::kLeader);
  EXPECT_EQ(net.core(1).role(), Role::kFollower);
  EXPECT_EQ(net.core(1).leader(), NodeId(3));
  EXPECT_EQ(net.core(2).leader(), NodeId(3));
  EXPECT_EQ(net.core(1).TransferLeadership(NodeId(2)).code(),
            absl::StatusCode::kUnavailable);
  EXPECT_EQ(net.core(3).TransferLeadership(NodeId(9)).code(),
            absl::StatusCode::kInvalidArgument);
}

// Thesis 3.10: a transfer that does not complete within an election timeout
// is aborted and proposals resume.
TEST(RaftCoreTest, LeadershipTransferAbortsAfterElectionTimeout) {
  TestNetwork net({1, 2, 3});
  net.core(1).Campaign();
  net.Stabilize();
  net.Crash(3);
  ASSERT_TRUE(net.core(1).TransferLeadership(NodeId(3)).ok());
  EXPECT_EQ(net.core(1).status().lead_transferee, NodeId(3));
  for (int i = 0; i < 10; ++i) {
    net.Tick(1);
    net.Stabilize();
  }
  EXPECT_EQ(net.core(1).role(), Role::kLeader);
  EXPECT_EQ(net.core(1).status().lead_transferee, NodeId(0));
  EXPECT_TRUE(net.core(1).Propose({"ok"}).ok());
}

// --- Membership --------------------------------------------------------------

// Thesis 4.2.1: a learner receives entries but neither votes nor counts
// toward the quorum; once promoted it does.
TEST(RaftCoreTest, LearnerReplicatesButDoesNotCountUntilPromoted) {
  TestNetwork net({1, 2, 3});
  net.AddJoiningNode(4);
  net.core(1).Campaign();
  net.Stabilize();
  auto idx = net.core(1).ProposeConfChange(
      ConfChange{ConfChangeType::kAddLearner, NodeId(4)});
  ASSERT_TRUE(idx.ok()) << idx.status();
  // A second change waits for the first.
  EXPECT_EQ(net.core(1)
                .ProposeConfChange(
                    ConfChange{ConfChangeType::kPromoteVoter, NodeId(4)})
                .status()
                .code(),
            absl::StatusCode::kFailedPrecondition);
  net.Stabilize();
  ASSERT_TRUE(net.core(1).Propose({"a"}).ok());
  net.Stabilize();
  EXPECT_EQ(net.node(4).applied, (std::vector<std::string>{"a"}));
  EXPECT_EQ(net.core(1).status().conf_state.learners,
            (std::vector<NodeId>{NodeId(4)}));
  // The learner does not count: with 2 and 3 down nothing commits.
  net.Crash(2);
  net.Crash(3);
  ASSERT_TRUE(net.core(1).Propose({"b"}).ok());
  net.Stabilize();
  EXPECT_EQ(net.node(4).applied.size(), 1u);
  const LogIndex commit = net.core(1).commit_index();
  // A learner never campaigns.
  for (int i = 0; i < 50; ++i) net.Tick(4);
  EXPECT_EQ(net.core(4).role(), Role::kFollower);
  net.Restart(2);
  net.Restart(3);
  for (int i = 0; i < 3; ++i) {
    net.Tick(1);
    net.Stabilize();
  }
  EXPECT_GT(net.core(1).commit_index(), commit);
  ASSERT_TRUE(net.core(1)
                  .ProposeConfChange(
                      ConfChange{ConfChangeType::kPromoteVoter, NodeId(4)})
                  .ok());
  net.Stabilize();
  EXPECT_EQ(net.core(1).status().conf_state.voters.size(), 4u);
  EXPECT_EQ(net.core(4).status().conf_state.voters.size(), 4u);
  // Now 4 counts: with 2 down, 1+3+4 commit.
  net.Crash(2);
  ASSERT_TRUE(net.core(1).Propose({"c"}).ok());
  net.Stabilize();
  EXPECT_EQ(net.node(4).applied.back(), "c");
  // Invalid changes.
  EXPECT_EQ(net.core(1)
                .ProposeConfChange(
                    ConfChange{ConfChangeType::kPromoteVoter, NodeId(3)})
                .status()
                .code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(
      net.core(1)
          .ProposeConfChange(ConfChange{ConfChangeType::kRemoveNode, NodeId(9)})
          .status()
          .code(),
      absl::StatusCode::kFailedPrecondition);
}

// Thesis 4.2.2: a removed node stops campaigning; removing the leader makes
// it step down and the rest elect a new one. Restart replays the change.
TEST(RaftCoreTest, RemovedNodeStopsCampaigningAndRestartReplays) {
  TestNetwork net({1, 2, 3});
  net.core(1).Campaign();
  net.Stabilize();
  ASSERT_TRUE(
      net.core(1)
          .ProposeConfChange(ConfChange{ConfChangeType::kRemoveNode, NodeId(3)})
          .ok());
  net.Stabilize();
  EXPECT_EQ(net.core(3).status().conf_state.voters,
            (std::vector<NodeId>{NodeId(1), NodeId(2)}));
  net.Partition({{1, 2}, {3}});
  for (int i = 0; i < 60; ++i) net.Tick(3);
  EXPECT_EQ(net.core(3).role(), Role::kFollower);
  net.Restart(2);
  EXPECT_EQ(net.core(2).status().conf_state.voters,
            (std::vector<NodeId>{NodeId(1), NodeId(2)}));
  net.Heal();
  net.Stabilize();
  // Remove the leader itself.
  net.TickAll();
  net.Stabilize();
  ASSERT_TRUE(
      net.core(1)
          .ProposeConfChange(ConfChange{ConfChangeType::kRemoveNode, NodeId(1)})
          .ok());
  net.Stabilize();
  EXPECT_NE(net.core(1).role(), Role::kLeader);
  EXPECT_NE(ElectLeader(net), 0u);
  EXPECT_EQ(net.core(2).role(), Role::kLeader);
}

// --- Snapshots
// ----------------------------------------------------------------

// Thesis 5.2: a follower that needs compacted entries gets InstallSnapshot;
// it hands the snapshot out, the driver installs it, replication resumes.
TEST(RaftCoreTest, SnapshotSentToFollowerBehindCompaction) {
  TestNetwork net({1, 2, 3});
  net.core(1).Campaign();
  net.Stabilize();
  net.Crash(3);
  for (int i = 0; i < 10; ++i) ASSERT_TRUE(net.core(1).Propose({"s"}).ok());
  net.Stabilize();
  ASSERT_EQ(net.core(1).commit_index(), LogIndex(11));
  // Compact the leader's log through 8 (data: the state machine image).
  Snapshot snap;
  snap.meta.index = LogIndex(8);
  snap.meta.term = net.core(1).term();
  snap.meta.conf_state = net.core(1).status().conf_state;
  snap.data = "image@8";
  ASSERT_TRUE(net.node(1).store->Compact(snap).ok());
  net.core(1).OnCompacted(LogIndex(8));
  EXPECT_EQ(net.core(1).status().first_index, LogIndex(9));
  net.Restart(3);
  bool saw_snapshot = false;
  // A heartbeat's commit is capped at what the follower holds; its
  // leader_commit says what the leader committed (the follower's staleness).
  bool saw_capped_heartbeat = false;
  for (int i = 0; i < 5; ++i) {
    net.Tick(1);
    net.ProcessReadies();
    for (int r = 0; r < 20 && !net.queue().empty(); ++r) {
      for (const Message& m : net.DeliverRound()) {
        if (m.type == MessageType::kSnapshot) saw_snapshot = true;
        if (m.type == MessageType::kHeartbeat && m.to == NodeId(3)) {
          EXPECT_EQ(m.leader_commit, LogIndex(11));
          if (m.commit < m.leader_commit) saw_capped_heartbeat = true;
        }
      }
    }
  }
  EXPECT_TRUE(saw_snapshot);
  EXPECT_TRUE(saw_capped_heartbeat);
  EXPECT_EQ(net.node(3).store->FirstIndex(), LogIndex(9));
  EXPECT_EQ(net.node(3).store->LastIndex(), LogIndex(11));
  EXPECT_EQ(net.node(3).applied.front(), "snapshot:image@8");
  EXPECT_EQ(net.node(3).applied.size(), 4u);  // image + 3 entries
  EXPECT_EQ(net.core(3).commit_index(), LogIndex(11));
  EXPECT_EQ(net.core(1).status().progress_state.at(NodeId(3)), "replicate");
  ASSERT_TRUE(net.core(1).Propose({"after"}).ok());
  net.Stabilize();
  EXPECT_EQ(net.node(3).applied.back(), "after");
}

// Thesis 5.2: a follower that already holds the snapshot's last entry keeps
// its log, learns the commit, and acknowledges only through the snapshot
// (its later entries may still diverge from the leader's).
TEST(RaftCoreTest, SnapshotCoveredByLogOnlyAdvancesCommit) {
  TestNetwork net({1, 2, 3});
  net.SetLog(2, Term(3), LogIndex(0), {1, 1, 2});
  Message m;
  m.type = MessageType::kSnapshot;
  m.from = NodeId(1);
  m.to = NodeId(2);
  m.term = Term(4);
  Snapshot snap;
  snap.meta.index = LogIndex(2);
  snap.meta.term = Term(1);
  snap.meta.conf_state = ConfState{{NodeId(1), NodeId(2), NodeId(3)}, {}};
  snap.data = "image";
  m.snapshot = snap;
  ASSERT_TRUE(net.core(2).Step(m).ok());
  EXPECT_EQ(net.core(2).commit_index(), LogIndex(2));
  EXPECT_EQ(net.core(2).status().last_index, LogIndex(3));
  Ready rd = net.core(2).TakeReady();
  EXPECT_FALSE(rd.snapshot.has_value());
  ASSERT_EQ(rd.send_after_persist.size(), 1u);
  EXPECT_EQ(rd.send_after_persist[0].type, MessageType::kAppendResponse);
  EXPECT_EQ(rd.send_after_persist[0].index, LogIndex(2));
  EXPECT_FALSE(rd.send_after_persist[0].reject);
}

// A leader whose store is preparing a snapshot (Unavailable) retries later.
class SlowSnapshotStore : public MemoryLogStore {
 public:
  using MemoryLogStore::MemoryLogStore;
  absl::StatusOr<Snapshot> GetSnapshot() const override {
    if (unavailable) return absl::UnavailableError("preparing");
    return MemoryLogStore::GetSnapshot();
  }
  bool unavailable = true;
};

TEST(RaftCoreTest, SnapshotUnavailableIsRetried) {
  ConfState cs{{NodeId(1), NodeId(2)}, {}};
  SlowSnapshotStore store(cs);
  Snapshot snap;
  snap.meta.index = LogIndex(5);
  snap.meta.term = Term(1);
  snap.meta.conf_state = cs;
  ASSERT_TRUE(store.InstallSnapshot(snap).ok());
  ASSERT_TRUE(
      store.Append({}, HardState{Term(1), NodeId(1), LogIndex(5)}, true).ok());
  RaftConfig config;
  config.id = NodeId(1);
  auto core = *RaftCore::Create(config, &store, 1);
  core->Campaign();
  (void)core->TakeReady();
  Message vote;
  vote.type = MessageType::kVoteResponse;
  vote.from = NodeId(2);
  vote.to = NodeId(1);
  vote.term = Term(2);
  ASSERT_TRUE(core->Step(vote).ok());
  ASSERT_EQ(core->role(), Role::kLeader);
  Ready rd = core->TakeReady();
  // Probe at next=6 with prev 5 (the snapshot index, term known).
  Message reject;
  reject.type = MessageType::kAppendResponse;
  reject.from = NodeId(2);
  reject.to = NodeId(1);
  reject.term = Term(2);
  reject.index = LogIndex(5);
  reject.reject = true;
  reject.reject_hint = LogIndex(0);
  ASSERT_TRUE(core->Step(reject).ok());
  rd = core->TakeReady();
  for (const Message& m : rd.send_now) {
    EXPECT_NE(m.type, MessageType::kSnapshot);
  }
  store.unavailable = false;
  Message hb;
  hb.type = MessageType::kHeartbeatResponse;
  hb.from = NodeId(2);
  hb.to = NodeId(1);
  hb.term = Term(2);
  ASSERT_TRUE(core->Step(hb).ok());
  rd = core->TakeReady();
  bool sent = false;
  for (const Message& m : rd.send_now) {
    if (m.type == MessageType::kSnapshot) sent = true;
  }
  EXPECT_TRUE(sent);
  EXPECT_EQ(core->status().progress_state.at(NodeId(2)), "snapshot");
}

// --- Validation and stale messages -------------------------------------------

TEST(RaftCoreTest, StepRejectsMisaddressedAndMalformedMessages) {
  TestNetwork net({1, 2, 3});
  net.core(1).Campaign();
  net.Stabilize();
  const RaftStatus before = net.core(2).status();
  Message m;
  m.type = MessageType::kAppend;
  m.from = NodeId(1);
  m.to = NodeId(3);  // wrong node
  m.term = before.term + 1;
  EXPECT_EQ(net.core(2).Step(m).code(), absl::StatusCode::kInvalidArgument);
  m.to = NodeId(2);
  m.type = static_cast<MessageType>(200);
  EXPECT_EQ(net.core(2).Step(m).code(), absl::StatusCode::kInvalidArgument);
  m.type = MessageType::kAppend;
  m.entries.push_back(Entry{before.term + 1, LogIndex(7), EntryType::kNormal,
                            "gap"});  // not consecutive to index 0
  EXPECT_EQ(net.core(2).Step(m).code(), absl::StatusCode::kInvalidArgument);
  // A membership change no node could apply: refused before it is stored,
  // not found when it commits (the node stopped, and at every restart).
  m.entries.clear();
  m.index = before.last_index;
  m.entries.push_back(Entry{before.term + 1, before.last_index + 1,
                            EntryType::kConfChange, "not a change"});
  const absl::Status malformed_change = net.core(2).Step(m);
  EXPECT_EQ(malformed_change.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StrContains(malformed_change.message(),
                                "malformed membership change"))
      << malformed_change;
  m.entries.clear();
  m.type = MessageType::kSnapshot;  // without a snapshot
  EXPECT_EQ(net.core(2).Step(m).code(), absl::StatusCode::kInvalidArgument);
  const RaftStatus after = net.core(2).status();
  EXPECT_EQ(after.term, before.term);
  EXPECT_EQ(after.leader, before.leader);
  EXPECT_EQ(after.last_index, before.last_index);
  EXPECT_FALSE(net.core(2).HasReady());
}

// Thesis 3.3: a message from an older term is ignored (beyond telling a
// stale leader the current term).
TEST(RaftCoreTest, StaleTermMessagesAreIgnored) {
  TestNetwork net({1, 2, 3}, [](RaftConfig& c) { c.check_quorum = false; });
  net.core(1).Campaign();
  net.Stabilize();
  net.core(2).Campaign();
  net.Stabilize();
  ASSERT_EQ(net.core(2).role(), Role::kLeader);
  const Term term = net.core(3).term();
  Message m;
  m.type = MessageType::kAppend;
  m.from = NodeId(1);
  m.to = NodeId(3);
  m.term = term - 1;
  m.index = LogIndex(2);
  m.log_term = term - 1;
  m.entries.push_back(Entry{term - 1, LogIndex(3), EntryType::kNormal, "old"});
  const LogIndex last = net.core(3).status().last_index;
  ASSERT_TRUE(net.core(3).Step(m).ok());
  EXPECT_EQ(net.core(3).status().last_index, last);
  EXPECT_EQ(net.core(3).leader(), NodeId(2));
  Ready rd = net.core(3).TakeReady();
  ASSERT_EQ(rd.send_now.size(), 1u);
  EXPECT_EQ(rd.send_now[0].term, term);  // tells the stale leader
}

TEST(RaftCoreTest, ProposeErrors) {
  TestNetwork net({1, 2, 3},
                  [](RaftConfig& c) { c.max_uncommitted_bytes = 100; });
  EXPECT_EQ(net.core(1).Propose({"x"}).status().code(),
            absl::StatusCode::kUnavailable);
  net.core(1).Campaign();
  net.Stabilize();
  auto st = net.core(2).Propose({"x"});
  EXPECT_EQ(st.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_NE(st.status().message().find("leader is 1"), std::string::npos);
  EXPECT_EQ(net.core(1).Propose({}).status().code(),
            absl::StatusCode::kInvalidArgument);
  ASSERT_TRUE(net.core(1).Propose({std::string(80, 'a')}).ok());
  EXPECT_EQ(net.core(1).Propose({std::string(80, 'b')}).status().code(),
            absl::StatusCode::kResourceExhausted);
  net.Stabilize();
  EXPECT_TRUE(net.core(1).Propose({std::string(80, 'b')}).ok());
}

TEST(RaftCoreTest, CreateValidatesConfig) {
  MemoryLogStore store(ConfState{{NodeId(1)}, {}});
  RaftConfig config;
  EXPECT_EQ(RaftCore::Create(config, &store, 1).status().code(),
            absl::StatusCode::kInvalidArgument);
  config.id = NodeId(1);
  config.election_ticks = 0;
  EXPECT_EQ(RaftCore::Create(config, &store, 1).status().code(),
            absl::StatusCode::kInvalidArgument);
  config.election_ticks = 10;
  ASSERT_TRUE(
      store.Append({}, HardState{Term(1), NodeId(0), LogIndex(5)}, true).ok());
  EXPECT_EQ(RaftCore::Create(config, &store, 1).status().code(),
            absl::StatusCode::kDataLoss);
}

// Determinism: the same seed and inputs give the same outputs.
TEST(RaftCoreTest, SameSeedSameHistory) {
  auto run = []() {
    TestNetwork net({1, 2, 3, 4, 5});
    std::vector<std::string> trace;
    for (int i = 0; i < 60; ++i) {
      net.TickAll();
      for (const Message& m : net.DeliverRound()) {
        trace.push_back(testing::DescribeMessage(m));
      }
    }
    return trace;
  };
  EXPECT_EQ(run(), run());
}

}  // namespace
}  // namespace sessiond::replication

namespace sessiond::replication {
namespace {

// Randomized safety check (thesis 3.6.3, figure 3.2's properties) over many
// seeds: message loss, duplication, delay and reordering, partitions,
// crashes and restarts. After every round: election safety (one leader per
// term), log matching between every pair of stored logs, and state machine
// safety (every node's applied sequence is a prefix of the longest one).
TEST(RaftCoreRandomizedTest, SafetyUnderChaos) {
  int leaders_seen = 0;
  int total_applied = 0;
  int snapshots = 0;
  int transfers = 0;
  int conf_changes = 0;
  int reads_served = 0;
  // SESSIOND_RAFT_SEEDS=N runs more seeds (default 60).
  uint64_t seeds = 60;
  if (const char* env = std::getenv("SESSIOND_RAFT_SEEDS")) {
    EXPECT_TRUE(absl::SimpleAtoi(env, &seeds));
  }
  uint64_t first_seed = 1;
  if (const char* env = std::getenv("SESSIOND_RAFT_SEED")) {
    EXPECT_TRUE(absl::SimpleAtoi(env, &first_seed));
    seeds = first_seed;
  }
  for (uint64_t seed = first_seed; seed <= seeds; ++seed) {
    Rng rng(seed * 7919);
    const bool pre_vote = seed % 2 == 0;
    const bool check_quorum = seed % 3 != 0;
    TestNetwork net({1, 2, 3, 4, 5}, [&](RaftConfig& c) {
      c.pre_vote = pre_vote;
      c.check_quorum = check_quorum;
      c.election_ticks = 5;
      c.max_inflight_messages = 4;
      c.max_message_bytes = 64;
      if (seed % 4 == 1) c.read_only_mode = ReadOnlyMode::kLeaseBased;
    });
    net.SetChaos(seed, 10, 5);
    // Linearizable reads (thesis 6.4): a read requested when some node had
    // already committed index c must be served at an index >= c.
    std::map<std::string, LogIndex> read_floor;
    std::map<NodeId, size_t> reads_checked;
    std::map<Term, NodeId> leader_of_term;
    int proposal = 0;
    for (int step = 0; step < 400; ++step) {
      const uint64_t action = rng.Uniform(100);
      if (action < 3) {
        const uint64_t a = 1 + rng.Uniform(5);
        net.Partition({{a}, {}});  // isolate one node
        std::vector<uint64_t> rest;
        for (uint64_t id = 1; id <= 5; ++id) {
          if (id != a) rest.push_back(id);
        }
        net.Partition({{a}, rest});
      } else if (action < 6) {
        net.Heal();
      } else if (action < 8) {
        const uint64_t id = 1 + rng.Uniform(5);
        if (net.node(id).core) {
          net.Crash(id);
        } else {
          net.Restart(id);
        }
      } else if (action < 10) {
        net.CompactApplied(1 + rng.Uniform(5));
      } else if (action < 11) {
        for (auto& [id, n] : net.nodes()) {
          if (n.core && n.core->is_leader()) {
            (void)n.core->TransferLeadership(NodeId(1 + rng.Uniform(5)));
          }
        }
      } else if (action < 13) {
        // Cycle node 5 through remove -> learner -> voter.
        for (auto& [id, n] : net.nodes()) {
          if (!n.core || !n.core->is_leader()) continue;
          const ConfState cs = n.core->status().conf_state;
          ConfChange cc{ConfChangeType::kAddLearner, NodeId(5)};
          if (std::count(cs.voters.begin(), cs.voters.end(), NodeId(5))) {
            cc.type = ConfChangeType::kRemoveNode;
          } else if (std::count(cs.learners.begin(), cs.learners.end(),
                                NodeId(5))) {
            cc.type = ConfChangeType::kPromoteVoter;
          }
          if (n.core->ProposeConfChange(cc).ok()) ++conf_changes;
        }
      } else if (action < 20) {
        const uint64_t id = 1 + rng.Uniform(5);
        if (net.node(id).core) {
          LogIndex floor;
          for (auto& [other, n] : net.nodes()) {
            if (n.core) floor = std::max(floor, n.core->commit_index());
          }
          const std::string ctx = absl::StrCat("read-", step);
          if (net.core(id).ReadIndex(ctx).ok()) read_floor[ctx] = floor;
        }
      } else if (action < 40) {
        for (auto& [id, n] : net.nodes()) {
          if (n.core && n.core->is_leader()) {
            (void)n.core->Propose({absl::StrCat("p", seed, "-", proposal++),
                                   absl::StrCat("q", proposal)});
          }
        }
      }
      net.TickAll();
      for (const Message& m : net.DeliverRound()) {
        if (m.type == MessageType::kSnapshot) ++snapshots;
        if (m.type == MessageType::kTimeoutNow) ++transfers;
      }
      for (auto& [id, n] : net.nodes()) {
        size_t& checked = reads_checked[id];
        for (; checked < n.read_states.size(); ++checked) {
          const ReadState& rs = n.read_states[checked];
          auto it = read_floor.find(rs.context);
          ASSERT_NE(it, read_floor.end()) << rs.context;
          ASSERT_GE(rs.index, it->second)
              << "stale read " << rs.context << " at node " << id << ", seed "
              << seed;
          ++reads_served;
        }
      }
      // Election safety.
      for (auto& [id, n] : net.nodes()) {
        if (!n.core || !n.core->is_leader()) continue;
        auto [it, inserted] = leader_of_term.emplace(n.core->term(), id);
        if (inserted) ++leaders_seen;
        ASSERT_EQ(it->second, id)
            << "two leaders in term " << it->first << " seed " << seed;
      }
      // State machine safety.
      const std::vector<std::string>* longest = nullptr;
      for (auto& [id, n] : net.nodes()) {
        if (!longest || n.applied.size() > longest->size()) {
          longest = &n.applied;
        }
      }
      for (auto& [id, n] : net.nodes()) {
        ASSERT_TRUE(
            std::equal(n.applied.begin(), n.applied.end(), longest->begin()))
            << "node " << id << " applied a different sequence, seed " << seed
            << " step " << step;
      }
    }
    // Log matching on the final stored logs.
    for (uint64_t a = 1; a <= 5; ++a) {
      for (uint64_t b = a + 1; b <= 5; ++b) {
        // Logs may start at different indices (compaction): align them.
        std::map<LogIndex, Entry> la;
        for (Entry& e : net.StoredLog(a)) la.emplace(e.index, std::move(e));
        std::vector<Entry> lb = net.StoredLog(b);
        // The highest index where both hold an entry of the same term...
        LogIndex match;
        for (const Entry& e : lb) {
          auto it = la.find(e.index);
          if (it != la.end() && it->second.term == e.term) match = e.index;
        }
        // ...implies identical entries at every index both hold below it.
        for (const Entry& e : lb) {
          if (e.index > match) break;
          auto it = la.find(e.index);
          if (it == la.end()) continue;
          ASSERT_EQ(it->second, e)
              << "log matching at " << e.index << ", seed " << seed;
        }
      }
    }
    // Liveness once healed: a leader emerges and everyone catches up.
    net.Heal();
    net.SetChaos(seed, 0, 0);
    for (uint64_t id = 1; id <= 5; ++id) {
      if (!net.node(id).core) net.Restart(id);
    }
    // Like a client, re-propose to the leader of the highest term until
    // the entry is applied everywhere (a proposal to a leader that is
    // about to be deposed is lost; that is allowed).
    auto applied_everywhere = [&net]() {
      // A node removed from the membership (in the view of the leader of
      // the highest term) is left behind.
      ConfState cs;
      Term best;
      for (auto& [id, n] : net.nodes()) {
        if (n.core->is_leader() && n.core->term() > best) {
          best = n.core->term();
          cs = n.core->status().conf_state;
        }
      }
      if (best == Term(0)) return false;
      for (auto& [id, n] : net.nodes()) {
        if (!std::count(cs.voters.begin(), cs.voters.end(), id) &&
            !std::count(cs.learners.begin(), cs.learners.end(), id)) {
          continue;
        }
        if (std::find(n.applied.begin(), n.applied.end(), "final") ==
            n.applied.end()) {
          return false;
        }
      }
      return true;
    };
    uint64_t leader = 0;
    for (int i = 0; i < 600 && !applied_everywhere(); ++i) {
      net.TickAll();
      net.Stabilize();
      if (i % 25 != 24) continue;
      Term best;
      for (auto& [id, n] : net.nodes()) {
        if (n.core->is_leader() && n.core->term() > best) {
          best = n.core->term();
          leader = id.value();
        }
      }
      if (leader != 0) (void)net.core(leader).Propose({"final"});
    }
    if (std::getenv("SESSIOND_RAFT_SEED")) {
      for (auto& [id, n] : net.nodes()) {
        RaftStatus s = n.core->status();
        std::cerr << id << ": " << RoleName(s.role) << " term=" << s.term
                  << " lead=" << s.leader << " commit=" << s.commit
                  << " applied=" << s.applied << " last=" << s.last_index
                  << " stored_last=" << n.store->LastIndex()
                  << " first=" << s.first_index
                  << " stored_first=" << n.store->FirstIndex()
                  << " has_ready=" << n.core->HasReady()
                  << " voters=" << s.conf_state.voters.size()
                  << " learners=" << s.conf_state.learners.size();
        for (const auto& [node, st] : s.progress_state) {
          std::cerr << " " << node << ":" << st << "@" << s.match.at(node)
                    << "/" << s.next.at(node);
        }
        std::cerr << "\n";
      }
    }
    ASSERT_TRUE(applied_everywhere()) << "seed " << seed;
    total_applied += static_cast<int>(net.node(leader).applied.size());
  }
  EXPECT_GT(leaders_seen, 60);
  EXPECT_GT(total_applied, 200);
  // The chaos exercised snapshots and leadership transfers too.
  EXPECT_GT(snapshots, 0);
  EXPECT_GT(transfers, 0);
  EXPECT_GT(conf_changes, 0);
  EXPECT_GT(reads_served, 0);
  std::cerr << "leaders " << leaders_seen << " snapshots " << snapshots
            << " transfers " << transfers << " conf changes " << conf_changes
            << " reads " << reads_served << "\n";
}

}  // namespace
}  // namespace sessiond::replication
