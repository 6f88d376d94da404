// Copyright sessiond authors. Licensed under the Apache License 2.0.
#ifndef SESSIOND_TESTS_INTEGRATION_CLUSTER_WORKLOAD_H_
#define SESSIOND_TESTS_INTEGRATION_CLUSTER_WORKLOAD_H_

#include <atomic>
#include <cstdint>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "tests/integration/cluster_harness.h"

namespace sessiond::testing {

// A concurrent create/update/revoke load against a ClusterHarness, sent to
// any running node (followers forward), with a ledger of what each write's
// answer promised. Verify() then checks the promises against a node's
// state: every acknowledged create exists; an acknowledged revoke holds; a
// session's version is 1 + its updates, counting each acknowledged update
// once and each update of unknown outcome at most once (more means a write
// was applied twice).
//
// Thread-safe; Start() and Stop() from the test thread.
class ClusterWorkload {
 public:
  struct Options {
    int threads = 4;
    // Upper bound on operations per thread (every loop is bounded).
    int max_ops_per_thread = 100000;
    // Between operations of one thread.
    absl::Duration pause = absl::Milliseconds(2);
    absl::Duration call_timeout = absl::Seconds(2);
  };

  ClusterWorkload(ClusterHarness* cluster, Options options);
  ~ClusterWorkload();  // Stop()s.

  void Start();
  void Stop();

  // Checks the ledger against node `via` (the cluster must have converged,
  // so one node speaks for all). Returns a description of every broken
  // promise (empty: none).
  std::vector<std::string> Verify(int via) const;

  uint64_t acked_creates() const;
  uint64_t acked_writes() const { return acked_.load(); }
  uint64_t failed_writes() const { return failed_.load(); }

 private:
  struct Entry {
    std::string session_id;
    std::string user_id;
    int updates_acked = 0;
    int updates_unknown = 0;
    bool revoked = false;         // acknowledged
    bool revoke_unknown = false;  // sent, no answer
  };

  void Run(int thread);

  ClusterHarness* const cluster_;
  const Options options_;
  std::atomic<bool> stop_{false};
  std::atomic<uint64_t> acked_{0};
  std::atomic<uint64_t> failed_{0};
  std::vector<std::thread> threads_;
  mutable absl::Mutex mu_;
  std::map<std::string, Entry> ledger_ ABSL_GUARDED_BY(mu_);  // by token
};

}  // namespace sessiond::testing

#endif  // SESSIOND_TESTS_INTEGRATION_CLUSTER_WORKLOAD_H_
