// Copyright sessiond authors. Licensed under the Apache License 2.0.
//
// The deterministic cluster simulation (tests/sim/README.md). Environment:
//   SESSIOND_SIM_SEEDS      number of scenarios (default 2000)
//   SESSIOND_SIM_SEED_BASE  first seed (default 1)
//   SESSIOND_SIM_STEPS      fault steps per scenario (default: from the seed)
//   SESSIOND_SIM_TRACE=1    print every trace line as it happens (replays);
//                           =2 also every message delivered
//   SESSIOND_SIM_HUNT_SEEDS bound on seeds for the "can fail" searches
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "gtest/gtest.h"
#include "tests/sim/cluster.h"

namespace sessiond::sim {
namespace {

// Debian's Abseil checks every absl::Mutex acquisition for lock-order
// cycles (a process-wide graph under a global lock). The simulation runs the
// driver's stages millions of times in one thread, and the check took 40% of
// its time; the driver's lock order is checked where its threads are real
// (node_driver_test) and by clang's -Wthread-safety.
const bool kNoDeadlockDetection = [] {
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
  return true;
}();

uint64_t EnvU64(const char* name, uint64_t fallback) {
  const char* text = std::getenv(name);
  uint64_t value = 0;
  if (text == nullptr || !absl::SimpleAtoi(text, &value)) return fallback;
  return value;
}

// The seeds CI runs: FromSeed(1) .. FromSeed(kCiSeeds), in RaftSim.Seeds*.
constexpr uint64_t kCiSeeds = 2000;

int EchoTrace() { return static_cast<int>(EnvU64("SESSIOND_SIM_TRACE", 0)); }

// The one line that replays a failed soak scenario.
std::string SoakReplay(uint64_t seed, uint64_t steps) {
  return absl::StrCat(
      "SESSIOND_SIM_SEEDS=1 SESSIOND_SIM_SEED_BASE=", seed,
      steps == 0 ? "" : absl::StrCat(" SESSIOND_SIM_STEPS=", steps),
      " ./tests/sim/raft_sim_test "
      "--gtest_filter='RaftSim.Seeds*'");
}

std::string FailureReport(const std::string& replay,
                          const ScenarioParams& params,
                          const ScenarioResult& r) {
  return absl::StrCat("replay: ", replay, "\n", "violated: ", r.violation, "\n",
                      "scenario: ", params.Describe(), "\n", "trace tail:\n",
                      r.trace_tail, "cluster at step ", r.steps, ":\n",
                      r.cluster_state);
}

// The soak: seeds [base, base + count), this shard taking every
// `shards`-th one so that ctest -j runs the shards in parallel.
void RunShard(uint64_t shard, uint64_t shards) {
  const uint64_t count = EnvU64("SESSIOND_SIM_SEEDS", kCiSeeds);
  const uint64_t base = EnvU64("SESSIOND_SIM_SEED_BASE", 1);
  const uint64_t steps = EnvU64("SESSIOND_SIM_STEPS", 0);
  ScenarioResult total;
  uint64_t ran = 0;
  for (uint64_t i = shard; i < count; i += shards) {
    const uint64_t seed = base + i;
    ScenarioParams params = ScenarioParams::FromSeed(seed);
    if (steps != 0) params.fault_steps = steps;
    Cluster cluster(params, EchoTrace());
    const ScenarioResult r = cluster.Run();
    if (!r.ok) {
      ADD_FAILURE() << FailureReport(SoakReplay(seed, steps), params, r);
      return;  // one report per shard keeps the output readable
    }
    ++ran;
    total.steps += r.steps;
    total.committed += r.committed;
    total.acked += r.acked;
    total.leaders += r.leaders;
    total.crashes += r.crashes;
    total.reads += r.reads;
    total.local_reads += r.local_reads;
    total.snapshots += r.snapshots;
    total.conf_changes += r.conf_changes;
    total.transfers += r.transfers;
  }
  std::printf(
      "%s\n",
      absl::StrCat(
          "shard ", shard, "/", shards, ": ", ran, " scenarios, ", total.steps,
          " steps, ", total.committed, " entries committed, ", total.acked,
          " commands acknowledged, ", total.leaders, " leader terms, ",
          total.crashes, " crashes, ", total.snapshots,
          " snapshots installed, ", total.conf_changes, " membership changes, ",
          total.transfers, " transfers, ", total.reads, " reads and ",
          total.local_reads, " local leader reads checked")
          .c_str());
}

TEST(RaftSim, Seeds0of4) { RunShard(0, 4); }
TEST(RaftSim, Seeds1of4) { RunShard(1, 4); }
TEST(RaftSim, Seeds2of4) { RunShard(2, 4); }
TEST(RaftSim, Seeds3of4) { RunShard(3, 4); }

// Sanity: three nodes, no faults at all. Everything proposed to the leader
// is acknowledged, quickly.
TEST(RaftSimSanity, NoFaultsThreeNodes) {
  for (uint64_t seed = 1; seed <= 10; ++seed) {
    const ScenarioParams params = ScenarioParams::NoFaults(seed, 3);
    Cluster cluster(params, EchoTrace());
    const ScenarioResult r = cluster.Run();
    ASSERT_TRUE(r.ok) << FailureReport(
        absl::StrCat("SESSIOND_SIM_TRACE=1 ./tests/sim/raft_sim_test "
                     "--gtest_filter=RaftSimSanity.* (seed ",
                     seed, ")"),
        params, r);
    EXPECT_GT(r.acked, 100u) << "seed " << seed;
    EXPECT_GE(r.committed, r.acked);
    EXPECT_GT(r.reads, 0u) << "seed " << seed;
  }
}

// The figure 8 situation of the Raft paper, played step by step on three
// nodes. With the safe commitment rule nothing is violated; with
// unsafe_commit_previous_term_for_test the simulation must notice.
// Returns the violation found ("" when none); `reached` tells whether the
// schedule got as far as the old-term entry being reported committed.
std::string ScriptedFigure8(bool unsafe, bool* reached, std::string* trace) {
  ScenarioParams p = ScenarioParams::NoFaults(8, 3);
  p.raft.unsafe_commit_previous_term_for_test = unsafe;
  p.raft.pre_vote = false;
  p.raft.check_quorum = false;
  // One entry per AppendEntries and one in flight, so the old entry reaches
  // a follower before the new leader's own entry does.
  p.raft.max_message_bytes = 1;
  p.raft.max_inflight_messages = 1;
  p.compact_permille = 0;
  Cluster c(p, EchoTrace());
  c.set_faults_enabled(false);
  c.set_client_enabled(false);
  Invariants& inv = c.invariants();
  Network& net = c.network();
  const std::vector<NodeId> all = c.node_ids();
  *reached = false;
  auto finish = [&]() {
    *trace = absl::StrCat(c.trace().Tail(40), c.DescribeState());
    return inv.violation();
  };

  // 1. A leader S1 commits a first command everywhere.
  if (!c.RunUntil([&] { return c.Leader() != nullptr; }, 2000)) return finish();
  SimNode* s1 = c.Leader();
  const NodeId id1 = s1->id();
  auto first = s1->Propose({c.NewCommand()});
  if (!first.ok()) return finish();
  if (!c.RunUntil(
          [&] {
            for (NodeId id : all) {
              if (c.node(id)->applied().index < *first) return false;
            }
            return true;
          },
          2000)) {
    return finish();
  }

  // 2. S1, cut off, appends x that nobody receives, then crashes.
  net.Isolate(id1, all);
  const std::string x = "figure8-old-term-entry";
  auto x_index = s1->Propose({x});
  if (!x_index.ok()) return finish();
  const LogIndex kx = *x_index;
  c.RunUntil([] { return false; }, 20);
  c.Crash(id1);

  // 3. Another node S2 wins a later term and appends its own entry at kx;
  //    it is cut off before anyone receives it, then crashes.
  SimNode* s2 = nullptr;
  if (!c.RunUntil(
          [&] {
            s2 = c.Leader();
            return s2 != nullptr && s2->id() != id1;
          },
          4000)) {
    return finish();
  }
  const NodeId id2 = s2->id();
  net.Isolate(id2, all);
  NodeId id3;
  for (NodeId id : all) {
    if (id != id1 && id != id2) id3 = id;
  }
  c.RunUntil([] { return false; }, 20);
  if (s2->last_index() < kx) return finish();
  c.Crash(id2);

  // 4. S1 restarts and wins with S3's vote; it re-replicates x to S3. The
  //    moment x is reported committed, S1 crashes before S3 can receive
  //    anything else.
  net.HealAll();
  net.Isolate(id2, all);
  c.Restart(id1);

  if (!c.RunUntil(
          [&] {
            return inv.max_committed() >= kx &&
                   inv.committed(kx).hash == EntryHash([&] {
                     replication::Entry e;
                     e.data = x;
                     return e;
                   }());
          },
          6000)) {
    return finish();
  }
  *reached = true;
  net.Block(id1, id3);
  c.Crash(id1);

  // 5. S2 restarts. Its last entry has a newer term than S3's, unless S3
  //    holds an entry of S1's latest term (the safe rule guarantees it).
  net.HealAll();
  net.Isolate(id1, all);
  c.Restart(id2);
  c.RunUntil(
      [&] {
        SimNode* n2 = c.node(id2);
        SimNode* n3 = c.node(id3);
        return n2->applied().index > kx && n3->applied().index > kx;
      },
      8000);
  return finish();
}

TEST(RaftSimCanFail, ScriptedFigure8IsSafeWithTheRealRule) {
  bool reached = false;
  std::string trace;
  const std::string violation = ScriptedFigure8(false, &reached, &trace);
  EXPECT_EQ(violation, "") << trace;
  // The old entry still commits, together with the new leader's own entry.
  EXPECT_TRUE(reached) << trace;
}

TEST(RaftSimCanFail, ScriptedFigure8DetectsUnsafeCommit) {
  bool reached = false;
  std::string trace;
  const std::string violation = ScriptedFigure8(true, &reached, &trace);
  ASSERT_TRUE(reached) << "the schedule did not reach figure 8\n" << trace;
  EXPECT_NE(violation, "") << "figure 8 played out and nothing was noticed\n"
                           << trace;
  std::printf("scripted figure 8 detected: %s\n", violation.c_str());
}

// Random scenarios tuned for figure 8 must find the unsafe rule's violation
// within a bounded number of seeds.
TEST(RaftSimCanFail, RandomScenariosDetectUnsafeCommit) {
  const uint64_t kMaxSeeds = EnvU64("SESSIOND_SIM_HUNT_SEEDS", 1000);
  const bool count_all = EnvU64("SESSIOND_SIM_HUNT_COUNT", 0) != 0;
  uint64_t found = 0;
  for (uint64_t seed = 1; seed <= kMaxSeeds; ++seed) {
    ScenarioParams params = ScenarioParams::Figure8Hunt(seed);
    params.raft.unsafe_commit_previous_term_for_test = true;
    Cluster cluster(params);
    const ScenarioResult r = cluster.Run();
    if (!r.ok && r.violation.rfind("liveness", 0) != 0) {
      std::printf("unsafe commit rule caught at seed %llu of %llu: %s\n",
                  static_cast<unsigned long long>(seed),
                  static_cast<unsigned long long>(kMaxSeeds),
                  r.violation.c_str());
      ++found;
      if (!count_all) return;
    }
  }
  if (found > 0) return;
  ADD_FAILURE() << "no safety violation found in " << kMaxSeeds
                << " seeds with unsafe_commit_previous_term_for_test";
}

// The standard schedule must be sharp enough on its own: the CI seeds
// (FromSeed(1), FromSeed(2), ... as RaftSim.Seeds* runs them), with the
// figure 8 mistake in the core, must contain a safety violation. Stops at
// the first one, so it costs only the seeds before it.
// SESSIOND_SIM_HUNT_BASE starts later (replays a seed with its trace);
// SESSIOND_SIM_HUNT_COUNT=1 runs them all and counts the seeds that catch it.
TEST(RaftSimCanFail, CISeedsDetectUnsafeCommit) {
  const uint64_t base = EnvU64("SESSIOND_SIM_HUNT_BASE", 1);
  const uint64_t last = std::min(
      kCiSeeds, base + EnvU64("SESSIOND_SIM_HUNT_SEEDS", kCiSeeds) - 1);
  const bool count_all = EnvU64("SESSIOND_SIM_HUNT_COUNT", 0) != 0;
  uint64_t found = 0;
  uint64_t first = 0;
  for (uint64_t seed = base; seed <= last; ++seed) {
    ScenarioParams params = ScenarioParams::FromSeed(seed);
    params.raft.unsafe_commit_previous_term_for_test = true;
    Cluster cluster(params, EchoTrace());
    const ScenarioResult r = cluster.Run();
    if (r.ok || r.violation.rfind("liveness", 0) == 0) continue;
    ++found;
    if (first == 0) first = seed;
    std::printf(
        "%s\n",
        absl::StrCat("unsafe commit rule caught by CI seed ", seed, " (",
                     seed - base + 1, " seeds run): ", r.violation,
                     "\nscenario: ", params.Describe(),
                     "\nreplay: SESSIOND_SIM_HUNT_BASE=", seed,
                     " SESSIOND_SIM_HUNT_SEEDS=1 SESSIOND_SIM_TRACE=1 "
                     "./tests/sim/raft_sim_test "
                     "--gtest_filter=RaftSimCanFail.CISeedsDetectUnsafeCommit")
            .c_str());
    if (!count_all) return;
  }
  if (found > 0) {
    std::printf(
        "%llu of %llu CI seeds catch the unsafe commit rule; first %llu\n",
        static_cast<unsigned long long>(found),
        static_cast<unsigned long long>(last - base + 1),
        static_cast<unsigned long long>(first));
    return;
  }
  ADD_FAILURE() << "none of the CI seeds " << base << ".." << last
                << " catches unsafe_commit_previous_term_for_test: the "
                   "standard schedule has gone blunt (tests/sim/README.md)";
}

// A disk that forgets the vote in a crash lets a node vote twice in a term;
// the simulation must notice (two leaders in a term, or what follows).
TEST(RaftSimCanFail, RandomScenariosDetectForgottenVote) {
  const uint64_t kMaxSeeds = EnvU64("SESSIOND_SIM_HUNT_SEEDS", 1000);
  for (uint64_t seed = 1; seed <= kMaxSeeds; ++seed) {
    ScenarioParams params = ScenarioParams::Figure8Hunt(seed);
    params.disk_forgets_vote_for_test = true;
    Cluster cluster(params);
    const ScenarioResult r = cluster.Run();
    if (!r.ok && r.violation.rfind("liveness", 0) != 0) {
      std::printf("forgotten vote caught at seed %llu of %llu: %s\n",
                  static_cast<unsigned long long>(seed),
                  static_cast<unsigned long long>(kMaxSeeds),
                  r.violation.c_str());
      return;
    }
  }
  ADD_FAILURE() << "no safety violation found in " << kMaxSeeds
                << " seeds with a disk that forgets the vote";
}

// A NodeDriver that breaks its durability rules on purpose
// (NodeDriverOptions' unsafe_..._for_test), which the simulation must catch
// now that it runs the production driver.
enum class Breakage {
  // The log writer appends with sync=false: a power cut forgets what the
  // node acknowledged and voted (a reviewer turned the append's sync off and
  // no test failed).
  kUnsyncedLogWrites,
  // Votes and append acknowledgements leave before the write they promise.
  kAckBeforePersist,
};

const char* BreakageName(Breakage breakage) {
  return breakage == Breakage::kUnsyncedLogWrites ? "unsynced log writes"
                                                  : "ack before persist";
}

ScenarioParams BrokenParams(uint64_t seed, std::optional<Breakage> breakage,
                            bool check_durable_promises) {
  ScenarioParams p = ScenarioParams::FromSeed(seed);
  p.unsafe_unsynced_log_writes_for_test =
      breakage == Breakage::kUnsyncedLogWrites;
  p.unsafe_ack_before_persist_for_test =
      breakage == Breakage::kAckBeforePersist;
  p.check_durable_promises = check_durable_promises;
  return p;
}

// Runs the CI seeds from SESSIOND_SIM_HUNT_BASE (default 1) with the driver
// broken, stopping at the first safety violation (SESSIOND_SIM_HUNT_COUNT=1:
// runs them all and counts), then runs the same seeds with the real driver,
// which must keep them clean. With `check_durable_promises` false, the
// checks on what messages promise are off, so what catches the broken
// driver is a consequence: a crash loses what was acknowledged, and a
// committed entry changes, a leader lacks one, or two leaders share a term.
void ExpectCISeedsCatch(Breakage breakage, bool check_durable_promises) {
  const uint64_t base = EnvU64("SESSIOND_SIM_HUNT_BASE", 1);
  const uint64_t last = std::min(
      kCiSeeds, base + EnvU64("SESSIOND_SIM_HUNT_SEEDS", kCiSeeds) - 1);
  const bool count_all = EnvU64("SESSIOND_SIM_HUNT_COUNT", 0) != 0;
  uint64_t found = 0;
  uint64_t first = 0;
  for (uint64_t seed = base; seed <= last; ++seed) {
    const ScenarioParams params =
        BrokenParams(seed, breakage, check_durable_promises);
    Cluster cluster(params, EchoTrace());
    const ScenarioResult r = cluster.Run();
    if (r.ok || r.violation.rfind("liveness", 0) == 0) continue;
    ++found;
    if (first != 0) {
      std::printf("  also seed %llu: %s\n",
                  static_cast<unsigned long long>(seed), r.violation.c_str());
    } else {
      first = seed;
      std::printf(
          "%s\n",
          absl::StrCat(
              BreakageName(breakage),
              check_durable_promises ? "" : " (promises unchecked)",
              " caught by CI seed ", seed, " (", seed - base + 1,
              " seeds run): ", r.violation,
              "\nreplay: SESSIOND_SIM_HUNT_BASE=", seed,
              " SESSIOND_SIM_HUNT_SEEDS=1 SESSIOND_SIM_TRACE=1 "
              "./tests/sim/raft_sim_test --gtest_filter=",
              ::testing::UnitTest::GetInstance()
                  ->current_test_info()
                  ->test_suite_name(),
              ".",
              ::testing::UnitTest::GetInstance()->current_test_info()->name())
              .c_str());
    }
    if (!count_all) break;
  }
  if (count_all && found > 0) {
    std::printf("%llu of %llu CI seeds catch %s\n",
                static_cast<unsigned long long>(found),
                static_cast<unsigned long long>(last - base + 1),
                BreakageName(breakage));
  }
  ASSERT_NE(first, 0u) << "none of the CI seeds " << base << ".." << last
                       << " catches a driver with " << BreakageName(breakage);
  for (uint64_t seed = base; seed <= first; ++seed) {
    const ScenarioParams params =
        BrokenParams(seed, std::nullopt, check_durable_promises);
    Cluster cluster(params, EchoTrace());
    const ScenarioResult r = cluster.Run();
    ASSERT_TRUE(r.ok) << FailureReport(SoakReplay(seed, 0), params, r);
  }
}

TEST(RaftSimCanFail, CISeedsDetectUnsyncedLogWrites) {
  ExpectCISeedsCatch(Breakage::kUnsyncedLogWrites,
                     /*check_durable_promises=*/true);
}

TEST(RaftSimCanFail, CISeedsDetectUnsyncedLogWritesByTheirConsequences) {
  ExpectCISeedsCatch(Breakage::kUnsyncedLogWrites,
                     /*check_durable_promises=*/false);
}

TEST(RaftSimCanFail, CISeedsDetectAckBeforePersist) {
  ExpectCISeedsCatch(Breakage::kAckBeforePersist,
                     /*check_durable_promises=*/true);
}

TEST(RaftSimCanFail, CISeedsDetectAckBeforePersistByTheirConsequences) {
  ExpectCISeedsCatch(Breakage::kAckBeforePersist,
                     /*check_durable_promises=*/false);
}

// Leader leases assume the nodes' clocks run at nearly the same rate. With
// one node's clock 3 times slower, it keeps serving lease reads after the
// others have moved on; the linearizability check must notice. The slow
// node seldom wins an election of its own, so a nemesis on top of the
// standard schedule hands it the lead, and cuts it off once it leads.
TEST(RaftSimCanFail, RandomScenariosDetectLeaseReadsUnderClockDrift) {
  const uint64_t kMaxSeeds = EnvU64("SESSIOND_SIM_HUNT_SEEDS", 1000);
  const bool count_all = EnvU64("SESSIOND_SIM_HUNT_COUNT", 0) != 0;
  const NodeId slow(1);
  uint64_t found = 0;
  for (uint64_t seed = 1; seed <= kMaxSeeds; ++seed) {
    ScenarioParams params = ScenarioParams::FromSeed(seed);
    params.nodes = 3;
    params.raft.check_quorum = true;
    params.raft.read_only_mode = replication::ReadOnlyMode::kLeaseBased;
    // Leases long enough for the others to elect a leader and commit while
    // the slow node's lease (election_ticks - 2 of its ticks) still runs.
    params.raft.election_ticks = 20;
    params.raft.heartbeat_ticks = 1;
    params.node1_slow_tick_factor_for_test = 3;
    params.read_permille = 200;
    // No crashes, partitions or faults aimed at leaders: the slow node keeps
    // its lead until the nemesis cuts it off, for as long as it says.
    params.partition_permille = 0;
    params.heal_permille = 0;
    params.crash_permille = 0;
    params.crash_all_permille = 0;
    params.new_leader_cut_percent = 0;
    params.new_leader_lost_percent = 0;
    params.divergent_leader_lost_percent = 0;
    params.crash_after_commit_permille = 0;
    params.behind_leader_crash_percent = 0;
    Cluster cluster(params);
    Rng nemesis(DeriveSeed(seed, 0x1ea5e));
    uint64_t heal_at = 0;
    for (uint64_t i = 0; i < params.fault_steps && cluster.invariants().ok();
         ++i) {
      cluster.Step();
      if (heal_at != 0) {
        if (cluster.now() >= heal_at) {
          cluster.network().HealAll();
          heal_at = 0;
        }
        continue;
      }
      SimNode* leader = cluster.Leader();
      if (leader == nullptr || nemesis.Uniform(1000) >= 20) continue;
      if (leader->id() != slow) {
        (void)leader->TransferLeadership(slow);
      } else {
        cluster.network().Isolate(slow, cluster.node_ids());
        cluster.trace().Add(cluster.now(), "NEMESIS isolate the slow node");
        heal_at = cluster.now() + nemesis.Range(100, 300);
      }
    }
    const ScenarioResult r = cluster.Result();
    if (!r.ok) {
      std::printf("clock drift caught at seed %llu of %llu: %s\n",
                  static_cast<unsigned long long>(seed),
                  static_cast<unsigned long long>(kMaxSeeds),
                  r.violation.c_str());
      ++found;
      if (!count_all) return;
    }
  }
  if (found > 0) return;
  ADD_FAILURE() << "no stale read found in " << kMaxSeeds
                << " seeds with lease reads and a slow clock";
}

// Regression (found by seed 500860 with SESSIOND_SIM_STEPS=40000): voter A
// holds the entry that promoted N but never learned it committed, so A still
// counts only itself and the old leader L as voters. L removes itself and is
// shut down. A, cut off for a while, has run its term far ahead; N must
// still win an election: A has to answer N's stale vote requests with its
// term (thesis figure 3.1), or N never catches up.
TEST(RaftSimScripted, VoterWithStaleMembershipDoesNotLivelock) {
  ScenarioParams p = ScenarioParams::NoFaults(11, 3);
  p.raft.pre_vote = false;
  p.raft.check_quorum = false;
  p.compact_permille = 0;
  Cluster c(p, EchoTrace());
  c.set_faults_enabled(false);
  c.set_client_enabled(false);
  Invariants& inv = c.invariants();
  Network& net = c.network();
  auto committed_conf_is = [&](std::vector<NodeId> voters,
                               std::vector<NodeId> learners) {
    return inv.committed_conf().voters == voters &&
           inv.committed_conf().learners == learners;
  };
  auto sorted = [](std::vector<NodeId> v) {
    std::sort(v.begin(), v.end());
    return v;
  };

  ASSERT_TRUE(c.RunUntil([&] { return c.Leader() != nullptr; }, 2000));
  const NodeId l = c.Leader()->id();
  std::vector<NodeId> others;
  for (NodeId id : c.node_ids()) {
    if (id != l) others.push_back(id);
  }
  const NodeId a = others[0];
  const NodeId b = others[1];
  auto propose = [&](replication::ConfChangeType type, NodeId node) {
    SimNode* leader = c.node(l);
    ASSERT_TRUE(leader != nullptr && leader->up());
    auto index = leader->ProposeConfChange(replication::ConfChange{type, node});
    ASSERT_TRUE(index.ok()) << index.status();
  };

  // Replace B by a new node N, as a learner.
  propose(replication::ConfChangeType::kRemoveNode, b);
  ASSERT_TRUE(c.RunUntil(
      [&] {
        return committed_conf_is(sorted({l, a}), {});
      },
      2000));
  c.Destroy(b);
  const NodeId n = c.AddFreshNode();
  c.RunUntil([] { return false; }, 20);
  propose(replication::ConfChangeType::kAddLearner, n);
  ASSERT_TRUE(c.RunUntil(
      [&] {
        return committed_conf_is(sorted({l, a}), {n});
      },
      2000));
  ASSERT_TRUE(c.RunUntil(
      [&] {
        return c.node(n)->applied().index >= inv.max_committed() &&
               c.node(a)->applied().index >= inv.max_committed();
      },
      2000));

  // Promote N; A acknowledges the entry but never hears that it committed.
  const LogIndex promote_index = c.node(l)->last_index() + 1;
  net.SetDropFilter([&](const replication::Message& m) {
    return m.from == l && m.to == a && m.commit >= promote_index;
  });
  propose(replication::ConfChangeType::kPromoteVoter, n);
  ASSERT_TRUE(c.RunUntil(
      [&] {
        return committed_conf_is(sorted({l, a, n}), {});
      },
      2000));
  ASSERT_GE(c.node(a)->last_index(), promote_index);
  net.SetDropFilter(nullptr);
  net.Isolate(a, c.node_ids());

  // L removes itself (committed by L and N) and is shut down.
  c.RunUntil([] { return false; }, 20);
  propose(replication::ConfChangeType::kRemoveNode, l);
  ASSERT_TRUE(c.RunUntil(
      [&] {
        return committed_conf_is(sorted({a, n}), {});
      },
      2000));
  c.Destroy(l);

  // While N is down, A (cut off) runs its term well ahead of N's.
  c.Crash(n);
  c.RunUntil([] { return false; }, 40 * 4 * p.raft.election_ticks);
  c.Restart(n);
  net.HealAll();
  ASSERT_TRUE(c.node(a)->up() && c.node(n)->up());
  ASSERT_GT(c.node(a)->status().term, c.node(n)->status().term + 5);

  // A, whose membership lists only itself and the removed L, campaigns all
  // along and can never win; N wins the first round in which its election
  // timeout fires before A's by more than its vote request takes to reach
  // A. That race is a random walk: on the production driver's timing, seeds
  // 1..60 of this scenario elect N after 3 to 51 election timeouts (this
  // seed: 51). Before the fix N never won.
  const bool elected = c.RunUntil(
      [&] {
        SimNode* leader = c.Leader();
        return leader != nullptr &&
               leader->status().commit >= leader->last_index();
      },
      150 * 4 * p.raft.election_ticks);
  EXPECT_TRUE(elected) << "no leader within 150 election timeouts\n"
                       << c.trace().Tail(30) << c.DescribeState();
  EXPECT_TRUE(inv.ok()) << inv.violation();
}

// What a scripted test prints when it fails.
std::string Report(Cluster& c) {
  return absl::StrCat("violation: ", c.invariants().violation(), "\n",
                      c.trace().Tail(40), c.DescribeState());
}

std::vector<NodeId> Members(const replication::ConfState& conf) {
  std::vector<NodeId> members = conf.voters;
  members.insert(members.end(), conf.learners.begin(), conf.learners.end());
  return members;
}

// Every command acknowledged so far is applied on every member of the
// committed membership (the applied states are checked against the
// committed record as they change), and no member has a proposal waiting.
::testing::AssertionResult SettledEverywhere(Cluster& c) {
  Invariants& inv = c.invariants();
  if (!inv.ok()) return ::testing::AssertionFailure() << inv.violation();
  for (NodeId id : Members(inv.committed_conf())) {
    SimNode* n = c.node(id);
    if (n == nullptr || !n->up()) {
      return ::testing::AssertionFailure()
             << "member n" << id.value() << " is not running";
    }
    if (n->pending_proposals() > 0) {
      return ::testing::AssertionFailure()
             << "n" << id.value() << " has " << n->pending_proposals()
             << " proposals unanswered";
    }
    for (const auto& [index, hash] : inv.acked()) {
      if (n->applied().index < index) {
        return ::testing::AssertionFailure()
               << "acknowledged command at " << index.value()
               << " not applied on n" << id.value();
      }
    }
  }
  return ::testing::AssertionSuccess();
}

// Lets the client's proposals go on for `steps`, then requires everything
// to settle (a leader keeps proposing, so late proposals fill the log).
::testing::AssertionResult SettlesUnderLoad(Cluster& c, uint64_t steps) {
  c.RunUntil([] { return false; }, steps);
  c.set_client_enabled(false);
  std::string why;
  const bool settled = c.RunUntil(
      [&] {
        SimNode* leader = c.Leader();
        if (leader != nullptr && leader->status().leader_caught_up &&
            leader->pending_proposals() == 0) {
          bool pending = false;
          for (NodeId id : c.node_ids()) {
            if (c.node(id)->up() && c.node(id)->pending_proposals() > 0) {
              pending = true;
            }
          }
          // Only a new entry settles a proposal waiting on a follower (a
          // deposed leader's): the leader proposes one now and then.
          if (pending && c.now() % 20 == 0) {
            (void)leader->Propose({c.NewCommand()});
          }
        }
        return SettledEverywhere(c);
      },
      4000);
  c.set_client_enabled(true);
  if (!settled) {
    return ::testing::AssertionFailure()
           << SettledEverywhere(c).message() << "\n"
           << Report(c);
  }
  return ::testing::AssertionSuccess();
}

// A membership change while the client's proposals flow: remove a voter,
// add a brand-new node as a learner, promote it once it has caught up.
// Commands keep being acknowledged during each change, and the new voter
// ends up with everything.
TEST(RaftSimScripted, MembershipChangeUnderLoad) {
  ScenarioParams p = ScenarioParams::NoFaults(21, 3);
  Cluster c(p, EchoTrace());
  c.set_faults_enabled(false);
  Invariants& inv = c.invariants();
  ASSERT_TRUE(c.RunUntil(
      [&] { return c.Leader() != nullptr && inv.acked().size() >= 20; }, 4000))
      << Report(c);
  auto sorted = [](std::vector<NodeId> v) {
    std::sort(v.begin(), v.end());
    return v;
  };
  // Proposes `change` to the leader; requires the committed membership to
  // become voters/learners, and commands to be acknowledged meanwhile.
  auto change = [&](replication::ConfChangeType type, NodeId node,
                    std::vector<NodeId> voters, std::vector<NodeId> learners) {
    const size_t acked_before = inv.acked().size();
    SimNode* leader = c.Leader();
    ASSERT_NE(leader, nullptr) << Report(c);
    const absl::StatusOr<LogIndex> index =
        leader->ProposeConfChange(replication::ConfChange{type, node});
    ASSERT_TRUE(index.ok()) << index.status() << "\n" << Report(c);
    ASSERT_TRUE(c.RunUntil(
        [&] {
          return inv.committed_conf().voters == sorted(voters) &&
                 inv.committed_conf().learners == sorted(learners);
        },
        2000))
        << Report(c);
    ASSERT_TRUE(c.RunUntil(
        [&] { return inv.acked().size() >= acked_before + 10; }, 2000))
        << "no commands acknowledged around the change\n"
        << Report(c);
  };

  const NodeId leader = c.Leader()->id();
  std::vector<NodeId> stay;
  NodeId removed;
  for (NodeId id : c.node_ids()) {
    if (id != leader && removed == NodeId(0)) {
      removed = id;
    } else {
      stay.push_back(id);
    }
  }
  change(replication::ConfChangeType::kRemoveNode, removed, stay, {});
  c.Destroy(removed);

  const NodeId fresh = c.AddFreshNode();
  change(replication::ConfChangeType::kAddLearner, fresh, stay, {fresh});
  ASSERT_TRUE(c.RunUntil(
      [&] { return c.node(fresh)->applied().index >= inv.max_committed() - 5; },
      4000))
      << "the learner never caught up\n"
      << Report(c);

  std::vector<NodeId> voters = stay;
  voters.push_back(fresh);
  change(replication::ConfChangeType::kPromoteVoter, fresh, voters, {});
  EXPECT_TRUE(SettlesUnderLoad(c, 400));
  EXPECT_EQ(c.node(fresh)->applied().index, inv.max_committed());
  EXPECT_GT(c.node(fresh)->acked() + c.node(leader)->acked(), 0u);
  EXPECT_TRUE(inv.ok()) << inv.violation();
}

// A follower that was down while the others compacted their logs past
// everything it holds receives the leader's snapshot through the driver
// (log store first, then the state machine) and catches up from the log
// after it.
TEST(RaftSimScripted, LaggingFollowerCatchesUpFromASnapshot) {
  ScenarioParams p = ScenarioParams::NoFaults(31, 3);
  p.compact_permille = 0;  // the script compacts
  p.compaction_catch_up_entries = 0;
  Cluster c(p, EchoTrace());
  c.set_faults_enabled(false);
  Invariants& inv = c.invariants();
  ASSERT_TRUE(c.RunUntil(
      [&] { return c.Leader() != nullptr && inv.acked().size() >= 10; }, 4000))
      << Report(c);
  NodeId lagging;
  for (NodeId id : c.node_ids()) {
    if (id != c.Leader()->id()) lagging = id;
  }
  c.Crash(lagging);
  const LogIndex held = c.node(lagging)->disk().LastIndex();
  ASSERT_TRUE(
      c.RunUntil([&] { return inv.max_committed() >= held + 60; }, 4000))
      << Report(c);
  std::vector<NodeId> others;
  for (NodeId id : c.node_ids()) {
    if (id != lagging) others.push_back(id);
  }
  for (NodeId id : others) ASSERT_TRUE(c.node(id)->Compact());
  ASSERT_TRUE(c.RunUntil(
      [&] {
        for (NodeId id : others) {
          if (c.node(id)->disk().FirstIndex() <= held + 1) return false;
        }
        return true;
      },
      100))
      << "the compactions did not reach the log store\n"
      << Report(c);

  c.Restart(lagging);
  SimNode* n = c.node(lagging);
  const LogIndex target = inv.max_committed();
  ASSERT_TRUE(c.RunUntil([&] { return n->applied().index >= target; }, 2000))
      << "the lagging follower never caught up\n"
      << Report(c);
  EXPECT_EQ(n->metrics().snapshots_installed, 1u);
  EXPECT_EQ(n->snapshots_installed(), 1u);
  const LogIndex snapshot_index =
      n->disk().durable().GetSnapshot().value().meta.index;
  EXPECT_GT(snapshot_index, held + 1);
  // ... and goes on from the log after the snapshot.
  ASSERT_TRUE(c.RunUntil(
      [&] {
        return n->applied().index >= inv.max_committed() + 0 &&
               inv.max_committed() >= target + 20;
      },
      2000))
      << Report(c);
  EXPECT_EQ(n->snapshots_installed(), 1u);
  EXPECT_TRUE(SettlesUnderLoad(c, 100));
}

// A leadership transfer while the client's proposals flow: the target
// leads within an election timeout or so, commands go on being
// acknowledged by it, and everything proposed to the old leader settles.
TEST(RaftSimScripted, LeadershipTransferUnderLoad) {
  ScenarioParams p = ScenarioParams::NoFaults(41, 5);
  Cluster c(p, EchoTrace());
  c.set_faults_enabled(false);
  Invariants& inv = c.invariants();
  ASSERT_TRUE(c.RunUntil(
      [&] { return c.Leader() != nullptr && inv.acked().size() >= 20; }, 4000))
      << Report(c);
  SimNode* old = c.Leader();
  const Term old_term = old->status().term;
  NodeId target;
  for (NodeId id : old->status().conf_state.voters) {
    if (id != old->id()) target = id;
  }
  const uint64_t target_acked = c.node(target)->acked();
  ASSERT_TRUE(old->TransferLeadership(target).ok());
  const uint64_t timeout_steps =
      static_cast<uint64_t>(p.raft.election_ticks) * p.steps_per_tick;
  ASSERT_TRUE(c.RunUntil(
      [&] { return c.Leader() != nullptr && c.Leader()->id() == target; },
      2 * timeout_steps))
      << "the target does not lead\n"
      << Report(c);
  EXPECT_GT(c.Leader()->status().term, old_term);
  ASSERT_TRUE(c.RunUntil(
      [&] { return c.node(target)->acked() >= target_acked + 20; }, 2000))
      << "the new leader acknowledges nothing\n"
      << Report(c);
  EXPECT_TRUE(SettlesUnderLoad(c, 200));
  EXPECT_EQ(c.Leader()->id(), target);
}

// Five nodes split {L, F} | {A, B, C}: the three elect a leader N that
// commits, while L, deposed only at its next CheckQuorum round (up to two
// election timeouts later), heartbeats F all along. A read on F misses
// what N committed, so F must not count itself current as of any of those
// heartbeats: only as of when a quorum last heard from L, before the split.
// (Each heartbeat made F current as of its arrival: a LOCAL read there
// answered a session N had revoked VALID, not stale, with a staleness of a
// few milliseconds.) Returns whether N committed while L still led and F
// followed it.
bool FollowerOfACutOffLeader(uint64_t seed) {
  ScenarioParams p = ScenarioParams::NoFaults(seed, 5);
  EXPECT_TRUE(p.raft.check_quorum);
  Cluster c(p, EchoTrace());
  c.set_faults_enabled(false);
  Invariants& inv = c.invariants();
  EXPECT_TRUE(c.RunUntil(
      [&] { return c.Leader() != nullptr && inv.acked().size() >= 10; }, 4000))
      << Report(c);
  SimNode* old = c.Leader();
  if (old == nullptr) return false;
  const Term old_term = old->status().term;
  NodeId follower_id;
  std::vector<NodeId> majority;
  for (NodeId id : c.node_ids()) {
    if (id == old->id()) continue;
    if (follower_id == NodeId(0)) {
      follower_id = id;
    } else {
      majority.push_back(id);
    }
  }
  SimNode* follower = c.node(follower_id);
  std::map<NodeId, uint64_t> acked_before;
  for (NodeId id : majority) acked_before[id] = c.node(id)->acked();
  c.network().Split({old->id(), follower_id}, majority);
  // The last heartbeat a quorum answered left at or before the split on
  // L's clock, which runs at most a tick ahead of F's (the two clocks'
  // phases); F dates a heartbeat by its own clock at arrival, which adds
  // its transit and the phases again: at most a tick each.
  const absl::Duration tick = SimNode::tick_interval();
  const absl::Duration bound = follower->clock() + 3 * tick;
  // F's clock when N's first write after the split was acknowledged.
  std::optional<absl::Duration> new_commit_at;
  bool overlap = false;
  const uint64_t timeout_steps =
      static_cast<uint64_t>(p.raft.election_ticks) * p.steps_per_tick;
  auto follows_old = [&] {
    const replication::NodeStatus& s = follower->status();
    return s.leader == old->id() && s.term == old_term;
  };
  // The latest current_as_of F reported while it followed L, and the
  // same once N's first write was acknowledged.
  absl::Duration latest = -absl::InfiniteDuration();
  absl::Duration latest_after_commit = -absl::InfiniteDuration();
  c.RunUntil(
      [&] {
        if (!new_commit_at) {
          for (NodeId id : majority) {
            SimNode* n = c.node(id);
            if (n->status().term > old_term && n->acked() > acked_before[id]) {
              new_commit_at = follower->clock();
            }
          }
        }
        if (follows_old()) {
          const absl::Duration as_of = follower->status().current_as_of;
          latest = std::max(latest, as_of);
          if (new_commit_at) {
            const replication::NodeStatus& l = old->status();
            if (l.role == replication::Role::kLeader && l.term == old_term) {
              overlap = true;
            }
            latest_after_commit = std::max(latest_after_commit, as_of);
          }
        }
        return !follows_old() && new_commit_at.has_value();
      },
      6 * timeout_steps);
  EXPECT_LE(latest, bound) << "n" << follower_id.value() << " followed n"
                           << old->id().value()
                           << ", cut off from its quorum at "
                           << bound - 3 * tick;
  if (overlap) {
    EXPECT_LT(latest_after_commit, *new_commit_at)
        << "current after a write it lacks was acknowledged";
  }
  EXPECT_TRUE(new_commit_at.has_value()) << "the majority committed nothing\n"
                                         << Report(c);
  EXPECT_TRUE(inv.ok()) << Report(c);
  return overlap;
}

TEST(RaftSimScripted, AFollowerOfACutOffLeaderIsNotCurrent) {
  int overlaps = 0;
  for (uint64_t seed = 1; seed <= 40; ++seed) {
    SCOPED_TRACE(absl::StrCat("seed ", seed));
    if (FollowerOfACutOffLeader(seed)) ++overlaps;
  }
  // The scenario is reached (4 of the 40 seeds today): N commits while L
  // still leads and F follows it.
  EXPECT_GT(overlaps, 0);
}

// The most any of `ids` has counted itself behind (its clock minus its
// NodeStatus::current_as_of), watched at every step it is asked to.
struct WorstStaleness {
  absl::Duration worst;
  NodeId node;

  void Watch(Cluster& c, const std::vector<NodeId>& ids) {
    for (NodeId id : ids) {
      SimNode* n = c.node(id);
      const absl::Duration behind = n->clock() - n->status().current_as_of;
      if (behind > worst) {
        worst = behind;
        node = id;
      }
    }
  }
  // Two heartbeat intervals, and a tick each for the clocks' phases and
  // for transit, disk and apply delays.
  void ExpectWithinTwoHeartbeats(const ScenarioParams& p) const {
    EXPECT_LE(worst,
              (2 * p.raft.heartbeat_ticks + 2) * SimNode::tick_interval())
        << "n" << node.value();
  }
};

// With no faults, every member stays current within about two heartbeat
// intervals of its clock, under load: no node is left counting itself
// stale. A follower's staleness grows for a heartbeat interval between
// the leader's heartbeats; now that they say when the leader's quorum
// last heard it (at most about a heartbeat interval earlier: the previous
// heartbeat's answers), it starts from there rather than from zero, which
// adds no more than one interval (here 400 ms without it, 600 ms with it).
TEST(RaftSimScripted, MembersStayCurrentWithinTwoHeartbeatIntervals) {
  ScenarioParams p = ScenarioParams::NoFaults(43, 5);
  p.raft.heartbeat_ticks = 3;
  Cluster c(p, EchoTrace());
  c.set_faults_enabled(false);
  Invariants& inv = c.invariants();
  ASSERT_TRUE(c.RunUntil(
      [&] { return c.Leader() != nullptr && inv.acked().size() >= 20; }, 4000))
      << Report(c);
  const NodeId leader = c.Leader()->id();
  WorstStaleness staleness;
  const uint64_t acked_before = inv.acked().size();
  c.RunUntil(
      [&] {
        staleness.Watch(c, c.node_ids());
        return false;
      },
      2000);
  ASSERT_NE(c.Leader(), nullptr) << Report(c);
  ASSERT_EQ(c.Leader()->id(), leader) << "no faults, yet a new leader";
  EXPECT_GT(inv.acked().size(), acked_before + 50);
  staleness.ExpectWithinTwoHeartbeats(p);
  EXPECT_TRUE(inv.ok()) << Report(c);
}

// A one-node cluster leads alone for a long while, then a second voter
// joins (added as a learner, then promoted). Until the new voter answers a
// heartbeat sent after the promotion, the leader's quorum last heard it at
// the change, not at its election: the leader, the new voter and a learner
// stay current within about two heartbeat intervals throughout. (Counted
// from the election, process start for a one-node cluster, they dated
// their contact back to their clock's start, and read stale with their
// uptime as staleness.) Found in review.
TEST(RaftSimScripted, ALoneLeaderJoinedByAVoterStaysCurrent) {
  ScenarioParams p = ScenarioParams::NoFaults(47, 1);
  p.raft.heartbeat_ticks = 3;
  Cluster c(p, EchoTrace());
  c.set_faults_enabled(false);
  Invariants& inv = c.invariants();
  ASSERT_TRUE(c.RunUntil(
      [&] { return c.Leader() != nullptr && inv.acked().size() >= 20; }, 4000))
      << Report(c);
  const NodeId leader = c.Leader()->id();
  const absl::Duration tick = SimNode::tick_interval();
  const uint64_t timeout_steps =
      static_cast<uint64_t>(p.raft.election_ticks) * p.steps_per_tick;
  // Alone for many election timeouts: a contact dated from the election
  // would show as far more than the bound below.
  c.RunUntil([] { return false; }, 100 * timeout_steps);
  ASSERT_NE(c.Leader(), nullptr) << Report(c);
  ASSERT_EQ(c.Leader()->id(), leader);
  ASSERT_GT(c.node(leader)->clock(), 40 * p.raft.election_ticks * tick);

  auto propose = [&](replication::ConfChangeType type, NodeId node) {
    const absl::StatusOr<LogIndex> index =
        c.node(leader)->ProposeConfChange(replication::ConfChange{type, node});
    ASSERT_TRUE(index.ok()) << index.status() << "\n" << Report(c);
  };
  const NodeId voter = c.AddFreshNode();
  const NodeId learner = c.AddFreshNode();
  propose(replication::ConfChangeType::kAddLearner, voter);
  ASSERT_TRUE(c.RunUntil(
      [&] { return inv.committed_conf().learners.size() == 1; }, 2000))
      << Report(c);
  propose(replication::ConfChangeType::kAddLearner, learner);
  ASSERT_TRUE(c.RunUntil(
      [&] {
        return inv.committed_conf().learners.size() == 2 &&
               c.node(voter)->applied().index >= inv.max_committed() &&
               c.node(learner)->applied().index >= inv.max_committed();
      },
      4000))
      << "the learners never caught up\n"
      << Report(c);

  WorstStaleness staleness;
  auto watch = [&] { staleness.Watch(c, {leader, voter, learner}); };
  propose(replication::ConfChangeType::kPromoteVoter, voter);
  ASSERT_TRUE(c.RunUntil(
      [&] {
        watch();
        return inv.committed_conf().voters.size() == 2;
      },
      2000))
      << Report(c);
  c.RunUntil(
      [&] {
        watch();
        return false;
      },
      10 * timeout_steps);
  ASSERT_NE(c.Leader(), nullptr) << Report(c);
  ASSERT_EQ(c.Leader()->id(), leader) << "no faults, yet a new leader";
  staleness.ExpectWithinTwoHeartbeats(p);
  EXPECT_TRUE(inv.ok()) << Report(c);
}

// The same tuned scenarios with the real rule stay clean.
TEST(RaftSimCanFail, Figure8HuntIsCleanWithTheRealRule) {
  const uint64_t base = EnvU64("SESSIOND_SIM_HUNT_BASE", 1);
  const uint64_t count = EnvU64("SESSIOND_SIM_HUNT_CLEAN_SEEDS", 200);
  for (uint64_t seed = base; seed < base + count; ++seed) {
    const ScenarioParams params = ScenarioParams::Figure8Hunt(seed);
    Cluster cluster(params, EchoTrace());
    const ScenarioResult r = cluster.Run();
    ASSERT_TRUE(r.ok) << FailureReport(
        absl::StrCat(
            "SESSIOND_SIM_HUNT_CLEAN_SEEDS=1 SESSIOND_SIM_HUNT_BASE=", seed,
            " ./tests/sim/raft_sim_test "
            "--gtest_filter=RaftSimCanFail."
            "Figure8HuntIsCleanWithTheRealRule"),
        params, r);
  }
}

}  // namespace
}  // namespace sessiond::sim
