// Copyright sessiond authors. Licensed under the Apache License 2.0.
//
// Throughput of the Raft core: a leader and two followers, each with a
// MemoryLogStore, messages delivered in-process on one thread following the
// driver ordering rules of raft_core.h. Measures the core plus the in-memory
// store, not disks or networks.
//
//   BM_ReplicateBatched        1,000 entries of 300 bytes per Propose
//   BM_ReplicateUnbatched      1 entry per Propose, the cluster pumped after
//                              every proposal (one full round trip each)
//   BM_ReplicatePipelined      1 entry per Propose, 64 proposals between
//                              pumps (how a driver loop sees a busy inbox)
//
// Run: raft_core_bench --benchmark_counters_tabular=true
#include <deque>
#include <memory>
#include <string>
#include <vector>

#include "benchmark/benchmark.h"
#include "common/check.h"
#include "replication/core/raft_core.h"
#include "replication/memory_log_store.h"

namespace sessiond::replication {
namespace {

class BenchCluster {
 public:
  BenchCluster() {
    ConfState cs{{NodeId(1), NodeId(2), NodeId(3)}, {}};
    for (uint64_t id = 1; id <= 3; ++id) {
      Node& n = nodes_[id - 1];
      n.store = std::make_unique<MemoryLogStore>(cs);
      RaftConfig config;
      config.id = NodeId(id);
      auto core = RaftCore::Create(config, n.store.get(), id);
      SESSIOND_CHECK_OK(core.status());
      n.core = std::move(*core);
    }
    leader().Campaign();
    Pump();
    SESSIOND_CHECK(leader().is_leader());
  }

  RaftCore& leader() { return *nodes_[0].core; }

  // Runs every node's Ready and delivers messages until all is quiet.
  void Pump() {
    for (int round = 0; round < 1000000; ++round) {
      bool any = false;
      for (Node& n : nodes_) {
        while (n.core->HasReady()) {
          any = true;
          Process(n);
        }
      }
      if (queue_.empty()) {
        if (!any) break;
        continue;
      }
      std::deque<Message> batch = std::move(queue_);
      queue_.clear();
      for (Message& m : batch) {
        Node& to = nodes_[m.to.value() - 1];
        SESSIOND_CHECK_OK(to.core->Step(std::move(m)));
      }
    }
    MaybeCompact();
  }

  uint64_t applied_entries() const { return nodes_[0].applied_entries; }

 private:
  struct Node {
    std::unique_ptr<MemoryLogStore> store;
    std::unique_ptr<RaftCore> core;
    LogIndex applied;
    uint64_t applied_entries = 0;
  };

  void Process(Node& n) {
    Ready rd = n.core->TakeReady();
    for (Message& m : rd.send_now) queue_.push_back(std::move(m));
    if (!rd.to_persist.empty() || rd.hard_state) {
      SESSIOND_CHECK_OK(n.store->Append(rd.to_persist, rd.hard_state, true));
    }
    if (!rd.to_persist.empty()) {
      n.core->OnPersisted(rd.to_persist.back().index,
                          rd.to_persist.back().term);
    }
    for (Message& m : rd.send_after_persist) queue_.push_back(std::move(m));
    if (!rd.committed.empty()) {
      n.applied = rd.committed.back().index;
      n.applied_entries += rd.committed.size();
      n.core->OnApplied(n.applied);
    }
  }

  // Keeps memory bounded: compacts each store through its applied index
  // once it holds many entries.
  void MaybeCompact() {
    for (Node& n : nodes_) {
      const LogIndex first = n.store->FirstIndex();
      if (n.applied < first || n.applied - first < 20000) continue;
      Snapshot snap;
      snap.meta.index = n.applied;
      snap.meta.term = *n.store->TermAt(n.applied);
      snap.meta.conf_state = n.core->status().conf_state;
      SESSIOND_CHECK_OK(n.store->Compact(snap));
      n.core->OnCompacted(n.applied);
    }
  }

  Node nodes_[3];
  std::deque<Message> queue_;
};

void BM_ReplicateBatched(benchmark::State& state) {
  const size_t batch = static_cast<size_t>(state.range(0));
  const std::string payload(300, 'x');
  BenchCluster cluster;
  const uint64_t start = cluster.applied_entries();
  for (auto _ : state) {
    std::vector<std::string> commands(batch, payload);
    auto idx = cluster.leader().Propose(std::move(commands));
    SESSIOND_CHECK(idx.ok());
    cluster.Pump();
    SESSIOND_CHECK(cluster.leader().commit_index() == *idx);
  }
  const uint64_t entries = cluster.applied_entries() - start;
  state.SetItemsProcessed(static_cast<int64_t>(entries));
  state.SetBytesProcessed(static_cast<int64_t>(entries * payload.size()));
  state.counters["entries/s"] = benchmark::Counter(static_cast<double>(entries),
                                                   benchmark::Counter::kIsRate);
}
BENCHMARK(BM_ReplicateBatched)->Arg(1000)->Unit(benchmark::kMicrosecond);

void BM_ReplicateUnbatched(benchmark::State& state) {
  const std::string payload(300, 'x');
  BenchCluster cluster;
  uint64_t proposals = 0;
  for (auto _ : state) {
    auto idx = cluster.leader().Propose({payload});
    SESSIOND_CHECK(idx.ok());
    cluster.Pump();
    ++proposals;
  }
  state.counters["proposals/s"] = benchmark::Counter(
      static_cast<double>(proposals), benchmark::Counter::kIsRate);
}
BENCHMARK(BM_ReplicateUnbatched);

void BM_ReplicatePipelined(benchmark::State& state) {
  const int between_pumps = static_cast<int>(state.range(0));
  const std::string payload(300, 'x');
  BenchCluster cluster;
  uint64_t proposals = 0;
  for (auto _ : state) {
    for (int i = 0; i < between_pumps; ++i) {
      auto idx = cluster.leader().Propose({payload});
      SESSIOND_CHECK(idx.ok());
    }
    cluster.Pump();
    proposals += between_pumps;
  }
  state.counters["proposals/s"] = benchmark::Counter(
      static_cast<double>(proposals), benchmark::Counter::kIsRate);
}
BENCHMARK(BM_ReplicatePipelined)->Arg(64)->Unit(benchmark::kMicrosecond);

}  // namespace
}  // namespace sessiond::replication

BENCHMARK_MAIN();
