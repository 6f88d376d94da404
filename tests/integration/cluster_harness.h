// Copyright sessiond authors. Licensed under the Apache License 2.0.
#ifndef SESSIOND_TESTS_INTEGRATION_CLUSTER_HARNESS_H_
#define SESSIOND_TESTS_INTEGRATION_CLUSTER_HARNESS_H_

#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "sessiond/v1/admin.grpc.pb.h"
#include "sessiond/v1/session.grpc.pb.h"
#include "tests/integration/sessiond_process.h"

namespace sessiond::testing {

struct ClusterOptions {
  std::string binary;
  int nodes = 3;
  // Nodes (ids nodes+1 ... nodes+spares) outside the initial cluster: the
  // others' --initial_cluster omits them and Start() leaves them down. A
  // spare's own start joins the running cluster (--initial_cluster_state
  // existing, its --initial_cluster the initial nodes and itself), after
  // AddMember.
  int spares = 0;
  // Flags for every node, after the cluster flags.
  std::vector<std::string> flags;
  // Per node id: extra environment ("NAME=value"), e.g. libfaketime.
  std::map<int, std::vector<std::string>> env;
  // TLS clusters: the harness's own calls to the client API (readiness,
  // Stub, Admin) and to the peer API (Hello, MemberStatusOf) present these
  // (null: plaintext). The client identity needs the app and admin roles,
  // the peer one the peer role.
  std::shared_ptr<grpc::ChannelCredentials> client_credentials;
  std::shared_ptr<grpc::ChannelCredentials> peer_credentials;
};

// A cluster of real sessiond processes on 127.0.0.1 (Kudu's
// ExternalMiniCluster): fixed free ports per node (client and peer) so a node
// restarts where it was, data dirs under one temp dir, SIGKILL, SIGSTOP and
// SIGCONT, a wiped data dir, and a fault switch per node that drops its peer
// traffic to chosen nodes (--unsafe_peer_drop_file): a partition.
//
// Nodes run with fast Raft timing (tick 20 ms, election after 200-400 ms),
// so a failover takes well under a second.
//
// Not thread-safe: one test thread drives it. Stubs it hands out are.
class ClusterHarness {
 public:
  explicit ClusterHarness(ClusterOptions options);
  ~ClusterHarness();  // SIGKILLs every node

  // Launches every node, then waits until each serves, a leader exists and
  // every member's start announcement has committed.
  absl::Status Start(absl::Duration timeout = absl::Seconds(60));
  // Launches every node and returns at once (for a start that is expected
  // to go wrong; Start() waits).
  absl::Status Launch();

  // (Re)starts one node with its ports and data dir, and waits until it
  // serves. `flags` replace the common flags for this start when given.
  absl::Status StartNode(int id, absl::Duration timeout = absl::Seconds(60));
  // Starts it and waits for it to exit (a node expected to refuse): its
  // waitpid status, or -1 if it is still running after `timeout`.
  int StartNodeExpectingExit(int id, absl::Duration timeout);
  // Waits for a running node to exit by itself; as StartNodeExpectingExit.
  int WaitForExit(int id, absl::Duration timeout);
  void Kill(int id);
  int Terminate(int id);
  void Pause(int id);
  void Resume(int id);
  // Sends `signal` to a running node (SIGUSR2: restart in place).
  void Signal(int id, int signal);
  bool running(int id) const;
  void WipeDataDir(int id);
  // Every later start of `id` adds these flags (replacing earlier ones).
  void SetNodeFlags(int id, std::vector<std::string> flags);
  void SetEnv(int id, std::vector<std::string> env);

  // Cuts `id` off from `peers` (both ways, as seen by `id`; cut the other
  // side too for a symmetric partition). Empty: heal.
  void Partition(int id, const std::set<int>& peers);
  // Isolates `id` from every other node, both ways.
  void Isolate(int id);
  void HealAll();

  // The leader as the running nodes agree on it, or an error after
  // `timeout`. `among`: only these may lead (default: any running node).
  absl::StatusOr<int> WaitForLeader(absl::Duration timeout,
                                    const std::set<int>& among = {});
  // Waits until a write through `via` (any running node when 0) succeeds.
  absl::Status WaitForWritable(absl::Duration timeout, int via = 0);
  // Waits until every running node has applied the same index, with equal
  // state digests. Returns that digest.
  absl::StatusOr<std::string> WaitForConvergence(absl::Duration timeout);

  absl::StatusOr<sessiond::v1::MemberStatus> MemberStatusOf(
      int id, bool with_digest = false);
  absl::StatusOr<sessiond::v1::ClusterStatusResponse> ClusterStatus(
      int via, bool with_digests = false);

  std::unique_ptr<sessiond::v1::SessionService::Stub> Stub(int id) const;
  // ValidateSession of `token` on node `id` at `consistency`.
  grpc::Status Validate(int id, const std::string& token,
                        sessiond::v1::Consistency consistency,
                        sessiond::v1::ValidateSessionResponse* response,
                        absl::Duration deadline = absl::Seconds(10)) const;
  // The same, 10 s deadline: the outcome, or OUTCOME_UNSPECIFIED, with the
  // error on stderr, when the call fails.
  sessiond::v1::ValidateSessionResponse::Outcome Validate(
      int id, const std::string& token,
      sessiond::v1::Consistency consistency =
          sessiond::v1::CONSISTENCY_DEFAULT) const;
  std::unique_ptr<sessiond::v1::AdminService::Stub> Admin(int id) const;
  std::string client_address(int id) const;
  std::string peer_address(int id) const;
  std::string data_dir(int id) const;
  std::string log_path(int id) const;
  // The last lines of a node's log (for failure messages).
  std::string LogTail(int id, int lines = 30) const;
  std::vector<int> ids() const;
  std::vector<int> running_ids() const;
  const std::string& root() const { return dir_.path(); }
  std::string initial_cluster() const;

 private:
  struct Node {
    int id = 0;
    int client_port = 0;
    int peer_port = 0;
    std::string data_dir;
    std::string drop_file;
    std::vector<std::string> extra_flags;
    std::unique_ptr<SessiondProcess> process;
    bool spare = false;    // ClusterOptions::spares
    bool started = false;  // launched at least once
  };

  // The nodes Start() launches and majorities count: every node but the
  // spares never started.
  bool InCluster(const Node& node) const { return !node.spare || node.started; }

  std::vector<std::string> FlagsFor(const Node& node) const;
  Node& node(int id);
  const Node& node(int id) const;
  void WriteDropFile(const Node& node, const std::set<int>& peers);

  const ClusterOptions options_;
  TempDir dir_;
  std::map<int, Node> nodes_;
};

}  // namespace sessiond::testing

#endif  // SESSIOND_TESTS_INTEGRATION_CLUSTER_HARNESS_H_
