// Copyright sessiond authors. Licensed under the Apache License 2.0.
//
// sessiond-cluster-bench: failover and catch-up measurements against a local
// cluster started by tools/cluster.py (`tools/dev.sh cluster up`), whose
// <cluster dir>/cluster.json gives each node's pid and argv
// (docs/BENCHMARKS.md).
//
//   failover  N times: wait for a stable cluster with writes flowing through
//             the C++ client library; SIGKILL the leader (the pid from
//             cluster.json, checked against /proc/<pid>/cmdline); time from
//             the kill to the first acknowledged write sent after it;
//             restart the node with `cluster.py restart` and wait until it
//             is a caught-up follower again. Each sample, median, p90, max.
//             With --etcd_members instead of a cluster dir: the same
//             against a local etcd cluster (members file written by
//             tools/bench_failover.sh --etcd), for reference.
//   catchup   stop a follower (`cluster.py stop`), write N sessions in
//             CreateSessions calls, restart it, and time until its applied
//             index reaches the leader's commit index; whether it installed
//             a snapshot.
//
// Processes are only ever signalled by the pid cluster.json records, after
// checking that this pid still runs that node's argv. Everything is bounded
// by --max_wait_s per step.

#include <fcntl.h>
#include <grpcpp/client_context.h>
#include <grpcpp/create_channel.h>
#include <grpcpp/security/credentials.h>
#include <signal.h>
#include <spawn.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <map>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "client/session_client.h"
#include "common/steady_clock.h"
#include "etcd_min.grpc.pb.h"
#include "etcd_min.pb.h"
#include "nlohmann/json.hpp"
#include "server/config.h"
#include "sessiond/v1/admin.pb.h"
#include "sessiond/v1/session.pb.h"
#include "tools/cluster_probe.h"

extern char** environ;

namespace sessiond::clusterbench {
namespace {

namespace v1 = ::sessiond::v1;

double Ms(int64_t ns) { return static_cast<double>(ns) / 1e6; }
void SleepMs(int ms) {
  std::this_thread::sleep_for(std::chrono::milliseconds(ms));
}

// Progress goes to stderr; with --json the document alone is on stdout.
void Log(const std::string& line) {
  std::fprintf(stderr, "[cluster-bench] %s\n", line.c_str());
  std::fflush(stderr);
}

struct Node {
  uint64_t id = 0;
  std::string client_address;
  int pid = 0;
  std::vector<std::string> argv;
  std::string log;
};

struct Cluster {
  std::string dir;
  std::string sessiond;
  std::vector<std::string> extra_args;
  std::vector<Node> nodes;

  const Node* Find(uint64_t id) const {
    for (const Node& n : nodes) {
      if (n.id == id) return &n;
    }
    return nullptr;
  }
  std::vector<std::string> Addresses() const {
    std::vector<std::string> out;
    for (const Node& n : nodes) out.push_back(n.client_address);
    return out;
  }
};

// Reads tools/cluster.py's <dir>/cluster.json, or (etcd) a members file
// of the same shape.
absl::StatusOr<Cluster> LoadClusterFile(const std::string& path,
                                        const std::string& dir) {
  std::ifstream in(path);
  if (!in) {
    return absl::NotFoundError(absl::StrCat(
        "no ", path, " (start a cluster with SESSIOND_CLUSTER_DIR=", dir,
        " tools/dev.sh cluster up)"));
  }
  try {
    nlohmann::json j = nlohmann::json::parse(in);
    Cluster c;
    c.dir = dir;
    c.sessiond = j.value("sessiond", "");
    if (j.contains("extra_args")) {
      for (const auto& a : j.at("extra_args")) {
        c.extra_args.push_back(a.get<std::string>());
      }
    }
    for (const auto& n : j.at("nodes")) {
      Node node;
      node.id = n.at("id").get<uint64_t>();
      node.client_address = n.at("client_address").get<std::string>();
      node.pid = n.at("pid").is_null() ? 0 : n.at("pid").get<int>();
      node.log = n.value("log", "");
      if (!n.at("argv").is_null()) {
        for (const auto& a : n.at("argv")) {
          node.argv.push_back(a.get<std::string>());
        }
      }
      c.nodes.push_back(std::move(node));
    }
    return c;
  } catch (const std::exception& e) {
    return absl::DataLossError(
        absl::StrCat("cannot read ", path, ": ", e.what()));
  }
}

absl::StatusOr<Cluster> LoadCluster(const std::string& dir) {
  return LoadClusterFile(dir + "/cluster.json", dir);
}

// True when `node.pid` runs `node.argv` and is not a zombie: the same check
// as cluster.py's is_alive, so a reused pid is never signalled.
bool IsAlive(const Node& node) {
  if (node.pid <= 0) return false;
  std::ifstream stat_file(absl::StrCat("/proc/", node.pid, "/stat"));
  std::string stat((std::istreambuf_iterator<char>(stat_file)),
                   std::istreambuf_iterator<char>());
  const size_t paren = stat.rfind(')');
  if (paren == std::string::npos || paren + 2 >= stat.size()) return false;
  const char state = stat[paren + 2];
  if (state == 'Z' || state == 'X' || state == 'x') return false;
  std::ifstream cmd_file(absl::StrCat("/proc/", node.pid, "/cmdline"),
                         std::ios::binary);
  std::string cmdline((std::istreambuf_iterator<char>(cmd_file)),
                      std::istreambuf_iterator<char>());
  std::vector<std::string> args;
  std::string current;
  for (char ch : cmdline) {
    if (ch == '\0') {
      args.push_back(current);
      current.clear();
    } else {
      current.push_back(ch);
    }
  }
  return args == node.argv;
}

// Runs `python cluster_py args...` with SESSIOND_CLUSTER_DIR set; its
// stdout goes to our stderr. Returns the child's pid (wait with Reap).
absl::StatusOr<pid_t> SpawnClusterPy(const std::string& python,
                                     const std::string& cluster_py,
                                     const std::string& dir,
                                     const std::vector<std::string>& args) {
  std::vector<std::string> argv_s = {python, cluster_py};
  argv_s.insert(argv_s.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (std::string& s : argv_s) argv.push_back(s.data());
  argv.push_back(nullptr);
  std::vector<std::string> env_s;
  for (char** e = environ; *e != nullptr; ++e) {
    if (!absl::StartsWith(*e, "SESSIOND_CLUSTER_DIR=")) env_s.push_back(*e);
  }
  env_s.push_back("SESSIOND_CLUSTER_DIR=" + dir);
  std::vector<char*> env;
  for (std::string& s : env_s) env.push_back(s.data());
  env.push_back(nullptr);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, STDERR_FILENO, STDOUT_FILENO);
  pid_t pid = 0;
  const int rc = posix_spawn(&pid, python.c_str(), &actions, nullptr,
                             argv.data(), env.data());
  posix_spawn_file_actions_destroy(&actions);
  if (rc != 0) {
    return absl::InternalError(
        absl::StrCat("cannot start ", python, ": ", strerror(rc)));
  }
  return pid;
}

absl::Status Reap(pid_t pid, const std::string& what) {
  int status = 0;
  if (waitpid(pid, &status, 0) < 0) {
    return absl::InternalError(absl::StrCat(what, ": waitpid failed"));
  }
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    return absl::InternalError(
        absl::StrCat(what, " failed (status ", status, ")"));
  }
  return absl::OkStatus();
}

struct Common {
  std::string cluster_dir;
  std::string cluster_py = SESSIOND_CLUSTER_PY;
  std::string python = "/usr/bin/python3";
  double max_wait_s = 30;
  int attr_bytes = 256;
  bool json = false;
};

absl::Status RunClusterPy(const Common& common,
                          const std::vector<std::string>& args) {
  absl::StatusOr<pid_t> pid = SpawnClusterPy(common.python, common.cluster_py,
                                             common.cluster_dir, args);
  if (!pid.ok()) return pid.status();
  return Reap(*pid, absl::StrCat("cluster.py ", absl::StrJoin(args, " ")));
}

// The value of --name in a node's extra flags ("--name V" or "--name=V").
std::optional<std::string> FlagValue(const std::vector<std::string>& args,
                                     const std::string& name) {
  std::optional<std::string> value;
  for (size_t i = 0; i < args.size(); ++i) {
    if (args[i] == "--" + name && i + 1 < args.size()) {
      value = args[i + 1];
    } else if (absl::StartsWith(args[i], "--" + name + "=")) {
      value = args[i].substr(name.size() + 3);
    }
  }
  return value;
}

// The Raft timing the nodes run with, for the report.
nlohmann::json Settings(const Cluster& cluster) {
  const server::Config defaults;  // what a node runs with unless told
  int64_t tick_ms = defaults.tick_ms;
  int64_t election_ticks = defaults.election_ticks;
  int64_t heartbeat_ticks = defaults.heartbeat_ticks;
  auto read = [&](const std::string& name, int64_t* out) {
    if (auto v = FlagValue(cluster.extra_args, name)) {
      (void)absl::SimpleAtoi(*v, out);
      return true;
    }
    return false;
  };
  const bool t = read("tick_ms", &tick_ms);
  const bool e = read("election_ticks", &election_ticks);
  const bool h = read("heartbeat_ticks", &heartbeat_ticks);
  nlohmann::json j;
  j["node_flags"] = cluster.extra_args;
  j["tick_ms"] = tick_ms;
  j["election_ticks"] = election_ticks;
  j["heartbeat_ticks"] = heartbeat_ticks;
  j["daemon_defaults"] = !t && !e && !h;
  j["election_timeout_ms"] = {tick_ms * election_ticks,
                              2 * tick_ms * election_ticks};
  j["nodes"] = cluster.nodes.size();
  j["sessiond"] = cluster.sessiond;
  return j;
}

std::string SettingsText(const nlohmann::json& s) {
  std::string flags =
      absl::StrJoin(s["node_flags"].get<std::vector<std::string>>(), " ");
  return absl::StrFormat(
      "%d nodes, node flags: %s; tick_ms %d, election_ticks %d, "
      "heartbeat_ticks %d%s: election timeout %d-%d ms",
      s["nodes"].get<int>(), flags.empty() ? "(none)" : flags,
      s["tick_ms"].get<int64_t>(), s["election_ticks"].get<int64_t>(),
      s["heartbeat_ticks"].get<int64_t>(),
      s["daemon_defaults"].get<bool>() ? " (the daemon's defaults)" : "",
      s["election_timeout_ms"][0].get<int64_t>(),
      s["election_timeout_ms"][1].get<int64_t>());
}

std::string ClientText(const client::SessionClientOptions& o) {
  return absl::StrFormat(
      "client library defaults: attempt deadline %d ms, call timeout %d ms, "
      "max_attempts %d, backoff %d ms..%d ms, connect_timeout %d ms",
      absl::ToInt64Milliseconds(o.deadline),
      absl::ToInt64Milliseconds(o.call_timeout), o.max_attempts,
      absl::ToInt64Milliseconds(o.initial_backoff),
      absl::ToInt64Milliseconds(o.max_backoff),
      absl::ToInt64Milliseconds(o.connect_timeout));
}

// Polls until every node of cluster.json runs, answers ClusterStatus, one
// leads, and each member's lag is at most max_lag. Returns that status.
absl::StatusOr<v1::ClusterStatusResponse> WaitStable(tools::ClusterProbe* probe,
                                                     const Cluster& cluster,
                                                     uint64_t max_lag,
                                                     double max_wait_s) {
  const int64_t give_up =
      SteadyNowNs() + static_cast<int64_t>(max_wait_s * 1e9);
  std::string why = "no answer";
  while (true) {
    absl::StatusOr<v1::ClusterStatusResponse> s = probe->Best(absl::Seconds(2));
    if (s.ok()) {
      const v1::MemberStatus* leader = tools::LeaderOf(*s);
      bool ok = leader != nullptr;
      why = ok ? "" : "no leader";
      for (const Node& node : cluster.nodes) {
        const v1::MemberStatus* m = tools::MemberOf(*s, node.id);
        if (!IsAlive(node)) {
          ok = false;
          why = absl::StrCat("node ", node.id, " is not running");
        } else if (m == nullptr || !m->reachable()) {
          ok = false;
          why = absl::StrCat("node ", node.id, " does not answer");
        } else if (m->lag() > max_lag) {
          ok = false;
          why = absl::StrCat("node ", node.id, " lags by ", m->lag());
        }
      }
      if (ok) return s;
    } else {
      why = std::string(s.status().message());
    }
    if (SteadyNowNs() > give_up) {
      return absl::DeadlineExceededError(absl::StrFormat(
          "cluster not stable after %.0f s: %s", max_wait_s, why));
    }
    SleepMs(50);
  }
}

// Blocks until `node` (asked directly) is a follower that knows a leader
// and lags by at most max_lag; returns the ns it took.
absl::StatusOr<int64_t> WaitFollower(tools::ClusterProbe* probe,
                                     const Node& node, uint64_t max_lag,
                                     double max_wait_s) {
  const int64_t start = SteadyNowNs();
  const int64_t give_up = start + static_cast<int64_t>(max_wait_s * 1e9);
  while (SteadyNowNs() < give_up) {
    absl::StatusOr<v1::ClusterStatusResponse> s =
        probe->Ask(node.client_address, absl::Seconds(1));
    if (s.ok()) {
      const v1::MemberStatus* me = tools::MemberOf(*s, node.id);
      const v1::MemberStatus* leader = tools::LeaderOf(*s);
      if (me != nullptr && me->role() == "follower" && me->leader() != 0 &&
          leader != nullptr &&
          leader->commit_index() <= me->applied_index() + max_lag) {
        return SteadyNowNs() - start;
      }
    }
    SleepMs(20);
  }
  return absl::DeadlineExceededError(absl::StrFormat(
      "node %d not a caught-up follower after %.0f s", node.id, max_wait_s));
}

double Quantile(std::vector<double> v, double q) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const size_t rank = static_cast<size_t>(std::ceil(q * v.size()));
  return v[std::min(v.size() - 1, rank == 0 ? 0 : rank - 1)];
}

double Median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 == 1 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

// ---------------------------------------------------------------- failover

struct FailoverOptions {
  int kills = 20;
  int writers = 2;
  int settle_ms = 1000;
  uint64_t max_lag = 1000;
};

// What the failover loop needs from a cluster: sessiond's (through
// cluster.py and the client library) or etcd's (a members file written by
// tools/bench_failover.sh, and a minimal client).
class FailoverTarget {
 public:
  struct Leader {
    Node node;
    uint64_t term = 0;
  };

  virtual ~FailoverTarget() = default;
  virtual std::string Name() const = 0;
  virtual nlohmann::json Settings() const = 0;
  virtual std::string SettingsText() const = 0;
  virtual std::string ClientText() const = 0;
  virtual nlohmann::json ClientStats() const = 0;
  // Every node runs, answers, one leads and none lags by more than max_lag.
  virtual absl::Status WaitStable(uint64_t max_lag, double max_wait_s) = 0;
  virtual absl::StatusOr<Leader> FindLeader() = 0;
  // Restarts the killed node `id` (blocking until it serves).
  virtual absl::Status Restart(uint64_t id) = 0;
  // Waits until node `id` follows a leader, at most max_lag behind it.
  virtual absl::StatusOr<int64_t> WaitFollower(uint64_t id, uint64_t max_lag,
                                               double max_wait_s) = 0;
  // One write by writer thread `writer` (its `n`-th); thread-safe across
  // writers.
  virtual absl::Status Write(int writer, uint64_t n) = 0;
};

// Writer threads, each writing in a loop, recording the first write
// acknowledged among those sent after the kill.
class WriteLoad {
 public:
  WriteLoad(FailoverTarget* target, int writers) : target_(target) {
    for (int i = 0; i < writers; ++i) {
      threads_.emplace_back([this, i] { Loop(i); });
    }
  }
  ~WriteLoad() { Stop(); }

  void Stop() {
    stop_.store(true);
    for (auto& t : threads_) {
      if (t.joinable()) t.join();
    }
  }

  // Arms the measurement: writes sent from now on count.
  void Arm(int64_t kill_ns) ABSL_LOCKS_EXCLUDED(mu_) {
    absl::MutexLock lock(&mu_);
    kill_ns_ = kill_ns;
    first_ack_ns_ = 0;
    gap_errors_.clear();
    gap_attempts_ = 0;
  }
  void Disarm() ABSL_LOCKS_EXCLUDED(mu_) {
    absl::MutexLock lock(&mu_);
    kill_ns_ = 0;
  }

  // The first acknowledgement of a write sent after the kill (0: none yet).
  int64_t first_ack_ns() ABSL_LOCKS_EXCLUDED(mu_) {
    absl::MutexLock lock(&mu_);
    return first_ack_ns_;
  }
  std::map<std::string, uint64_t> gap_errors() ABSL_LOCKS_EXCLUDED(mu_) {
    absl::MutexLock lock(&mu_);
    return gap_errors_;
  }
  uint64_t gap_attempts() ABSL_LOCKS_EXCLUDED(mu_) {
    absl::MutexLock lock(&mu_);
    return gap_attempts_;
  }
  int64_t last_ok_ns() const { return last_ok_ns_.load(); }
  uint64_t acked() const { return acked_.load(); }
  uint64_t failed() const { return failed_.load(); }

 private:
  void Loop(int index) {
    uint64_t n = 0;
    while (!stop_.load()) {
      const int64_t start = SteadyNowNs();
      const absl::Status status = target_->Write(index, n++);
      const int64_t end = SteadyNowNs();
      if (status.ok()) {
        acked_.fetch_add(1);
        last_ok_ns_.store(end);
      } else {
        failed_.fetch_add(1);
      }
      absl::MutexLock lock(&mu_);
      if (kill_ns_ == 0 || start < kill_ns_) continue;
      if (first_ack_ns_ == 0) {
        ++gap_attempts_;
        if (status.ok()) {
          first_ack_ns_ = end;
        } else {
          ++gap_errors_[absl::StatusCodeToString(status.code())];
        }
      }
    }
  }

  FailoverTarget* const target_;
  std::atomic<bool> stop_{false};
  std::atomic<int64_t> last_ok_ns_{0};
  std::atomic<uint64_t> acked_{0};
  std::atomic<uint64_t> failed_{0};
  absl::Mutex mu_;
  int64_t kill_ns_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t first_ack_ns_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t gap_attempts_ ABSL_GUARDED_BY(mu_) = 0;
  std::map<std::string, uint64_t> gap_errors_ ABSL_GUARDED_BY(mu_);
  std::vector<std::thread> threads_;
};

// A sessiond cluster of tools/cluster.py: the leader from ClusterStatus,
// restarts through `cluster.py restart`, writes through the client library.
class SessiondTarget : public FailoverTarget {
 public:
  SessiondTarget(const Common& common, Cluster cluster)
      : common_(common),
        cluster_(std::move(cluster)),
        probe_(cluster_.Addresses()),
        attribute_(static_cast<size_t>(common.attr_bytes), 'x') {
    client_ = client::SessionClient::Connect(cluster_.Addresses(), options_);
  }

  std::string Name() const override { return "sessiond"; }
  nlohmann::json Settings() const override {
    return clusterbench::Settings(cluster_);
  }
  std::string SettingsText() const override {
    return clusterbench::SettingsText(Settings());
  }
  std::string ClientText() const override {
    return absl::StrFormat("sessiond C++ client library over %s, %s",
                           absl::StrJoin(cluster_.Addresses(), ", "),
                           clusterbench::ClientText(options_));
  }
  nlohmann::json ClientStats() const override {
    const client::SessionClient::Stats s = client_->stats();
    return {{"attempts", s.attempts},
            {"retries", s.retries},
            {"leader_changes", s.leader_changes},
            {"leaders_forgotten", s.leaders_forgotten},
            {"endpoints_skipped", s.endpoints_skipped}};
  }

  absl::Status WaitStable(uint64_t max_lag, double max_wait_s) override {
    if (absl::Status s = Reload(); !s.ok()) return s;
    return clusterbench::WaitStable(&probe_, cluster_, max_lag, max_wait_s)
        .status();
  }

  absl::StatusOr<Leader> FindLeader() override {
    if (absl::Status s = Reload(); !s.ok()) return s;
    absl::StatusOr<v1::ClusterStatusResponse> status =
        probe_.Best(absl::Seconds(2));
    if (!status.ok()) return status.status();
    const v1::MemberStatus* leader = tools::LeaderOf(*status);
    if (leader == nullptr) return absl::UnavailableError("no leader");
    const Node* node = cluster_.Find(leader->node_id());
    if (node == nullptr) {
      return absl::NotFoundError(absl::StrFormat(
          "leader node %d is not in cluster.json", leader->node_id()));
    }
    return Leader{*node, leader->term()};
  }

  absl::Status Restart(uint64_t id) override {
    return RunClusterPy(common_, {"restart", absl::StrCat(id)});
  }

  absl::StatusOr<int64_t> WaitFollower(uint64_t id, uint64_t max_lag,
                                       double max_wait_s) override {
    if (absl::Status s = Reload(); !s.ok()) return s;
    return clusterbench::WaitFollower(&probe_, *cluster_.Find(id), max_lag,
                                      max_wait_s);
  }

  absl::Status Write(int writer, uint64_t n) override {
    v1::CreateSessionRequest request;
    request.set_user_id(absl::StrCat("failover-", writer, "-", n));
    request.set_ttl_ms(3'600'000);
    (*request.mutable_attributes())["data"] = attribute_;
    return client_->CreateSession(request).status();
  }

 private:
  absl::Status Reload() {
    absl::StatusOr<Cluster> c = LoadCluster(common_.cluster_dir);
    if (!c.ok()) return c.status();
    cluster_ = *std::move(c);
    return absl::OkStatus();
  }

  const Common& common_;
  Cluster cluster_;
  tools::ClusterProbe probe_;
  const std::string attribute_;
  const client::SessionClientOptions options_;
  std::unique_ptr<client::SessionClient> client_;
};

// A local etcd cluster described by a members file (JSON: {"nodes": [{"id",
// "client_address", "argv", "log", "pid"}]}) that tools/bench_failover.sh
// writes; restarts re-run a node's argv and write its new pid back to the
// file (so the script can stop it). Writes are KV/Put calls through a
// minimal client: each writer sends to one member and moves to the next
// after any error (etcd followers forward proposals to the leader).
class EtcdTarget : public FailoverTarget {
 public:
  EtcdTarget(std::string members_file, Cluster cluster, int writers,
             int value_bytes, int put_deadline_ms)
      : members_file_(std::move(members_file)),
        cluster_(std::move(cluster)),
        put_deadline_ms_(put_deadline_ms),
        value_(static_cast<size_t>(value_bytes), 'x'),
        writer_endpoint_(static_cast<size_t>(writers), 0) {
    for (int w = 0; w < writers; ++w) {
      writer_endpoint_[w] = w % cluster_.nodes.size();
    }
    for (const Node& n : cluster_.nodes) {
      auto channel = grpc::CreateChannel(n.client_address,
                                         grpc::InsecureChannelCredentials());
      kv_.push_back(etcdserverpb::KV::NewStub(channel));
    }
  }

  std::string Name() const override { return "etcd"; }
  nlohmann::json Settings() const override {
    nlohmann::json j;
    int64_t heartbeat = 100;
    int64_t election = 1000;
    const std::vector<std::string>& argv = cluster_.nodes[0].argv;
    if (auto v = FlagValue(argv, "heartbeat-interval")) {
      (void)absl::SimpleAtoi(*v, &heartbeat);
    }
    if (auto v = FlagValue(argv, "election-timeout")) {
      (void)absl::SimpleAtoi(*v, &election);
    }
    j["heartbeat_interval_ms"] = heartbeat;
    j["election_timeout_ms"] = election;
    j["nodes"] = cluster_.nodes.size();
    j["argv_node1"] = argv;
    return j;
  }
  std::string SettingsText() const override {
    const nlohmann::json s = Settings();
    return absl::StrFormat(
        "etcd, %d members, heartbeat-interval %d ms, election-timeout %d ms",
        s["nodes"].get<int>(), s["heartbeat_interval_ms"].get<int64_t>(),
        s["election_timeout_ms"].get<int64_t>());
  }
  std::string ClientText() const override {
    return absl::StrFormat(
        "minimal etcd client: KV/Put with a %d ms deadline to one member, "
        "the next member after any error",
        put_deadline_ms_);
  }
  nlohmann::json ClientStats() const override {
    return nlohmann::json::object();
  }

  absl::Status WaitStable(uint64_t max_lag, double max_wait_s) override {
    const int64_t give_up =
        SteadyNowNs() + static_cast<int64_t>(max_wait_s * 1e9);
    std::string why;
    while (SteadyNowNs() < give_up) {
      std::vector<std::optional<etcdserverpb::StatusResponse>> all =
          StatusAll();
      why.clear();
      uint64_t leader = 0;
      uint64_t leader_index = 0;
      for (size_t i = 0; i < all.size(); ++i) {
        if (!IsAlive(cluster_.nodes[i])) {
          why = absl::StrFormat("member %d is not running", i + 1);
        } else if (!all[i]) {
          why = absl::StrFormat("member %d does not answer", i + 1);
        } else if (all[i]->leader() == 0 ||
                   (leader != 0 && all[i]->leader() != leader)) {
          why = "no agreed leader";
        } else {
          leader = all[i]->leader();
          if (all[i]->header().member_id() == leader) {
            leader_index = all[i]->raft_index();
          }
        }
      }
      if (why.empty() && leader_index == 0) why = "no member leads";
      if (why.empty()) {
        for (const auto& s : all) {
          if (s->raft_index() + max_lag < leader_index) why = "a member lags";
        }
      }
      if (why.empty()) return absl::OkStatus();
      SleepMs(50);
    }
    return absl::DeadlineExceededError(
        absl::StrFormat("etcd not stable after %.0f s: %s", max_wait_s, why));
  }

  absl::StatusOr<Leader> FindLeader() override {
    std::vector<std::optional<etcdserverpb::StatusResponse>> all = StatusAll();
    for (size_t i = 0; i < all.size(); ++i) {
      if (all[i] && all[i]->leader() != 0 &&
          all[i]->leader() == all[i]->header().member_id()) {
        return Leader{cluster_.nodes[i], all[i]->raft_term()};
      }
    }
    return absl::UnavailableError("no etcd member leads");
  }

  absl::Status Restart(uint64_t id) override {
    Node* node = nullptr;
    for (Node& n : cluster_.nodes) {
      if (n.id == id) node = &n;
    }
    if (node == nullptr) return absl::NotFoundError("no such member");
    std::vector<std::string> args = node->argv;
    std::vector<char*> argv;
    for (std::string& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_addopen(&actions, STDIN_FILENO, "/dev/null",
                                     O_RDONLY, 0);
    posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, node->log.c_str(),
                                     O_WRONLY | O_CREAT | O_APPEND, 0644);
    posix_spawn_file_actions_adddup2(&actions, STDOUT_FILENO, STDERR_FILENO);
    posix_spawnattr_t attr;
    posix_spawnattr_init(&attr);
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSID);
    pid_t pid = 0;
    const int rc =
        posix_spawnp(&pid, argv[0], &actions, &attr, argv.data(), environ);
    posix_spawn_file_actions_destroy(&actions);
    posix_spawnattr_destroy(&attr);
    if (rc != 0) {
      return absl::InternalError(
          absl::StrCat("cannot start ", args[0], ": ", strerror(rc)));
    }
    node->pid = pid;
    if (absl::Status s = SavePids(); !s.ok()) return s;
    // Serving: it answers Maintenance.Status.
    const int64_t give_up = SteadyNowNs() + 30'000'000'000;
    while (SteadyNowNs() < give_up) {
      if (Status(*node)) return absl::OkStatus();
      SleepMs(20);
    }
    return absl::DeadlineExceededError("restarted etcd member does not answer");
  }

  absl::StatusOr<int64_t> WaitFollower(uint64_t id, uint64_t max_lag,
                                       double max_wait_s) override {
    const int64_t start = SteadyNowNs();
    const Node* node = cluster_.Find(id);
    while (SteadyNowNs() - start < static_cast<int64_t>(max_wait_s * 1e9)) {
      std::optional<etcdserverpb::StatusResponse> me = Status(*node);
      absl::StatusOr<Leader> leader = FindLeader();
      if (me && leader.ok() && me->leader() != 0 &&
          me->leader() != me->header().member_id()) {
        std::optional<etcdserverpb::StatusResponse> l = Status(leader->node);
        if (l && me->raft_index() + max_lag >= l->raft_index()) {
          return SteadyNowNs() - start;
        }
      }
      SleepMs(20);
    }
    return absl::DeadlineExceededError("etcd member not a follower in time");
  }

  absl::Status Write(int writer, uint64_t n) override {
    size_t& endpoint = writer_endpoint_[writer];
    etcdserverpb::PutRequest request;
    request.set_key(absl::StrCat("failover/", writer, "/", n % 1000));
    request.set_value(value_);
    etcdserverpb::PutResponse response;
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() +
                         std::chrono::milliseconds(put_deadline_ms_));
    const grpc::Status s = kv_[endpoint]->Put(&context, request, &response);
    if (!s.ok()) {
      endpoint = (endpoint + 1) % kv_.size();
      return absl::Status(static_cast<absl::StatusCode>(s.error_code()),
                          s.error_message());
    }
    return absl::OkStatus();
  }

 private:
  std::optional<etcdserverpb::StatusResponse> Status(const Node& node) {
    auto stub = etcdserverpb::Maintenance::NewStub(grpc::CreateChannel(
        node.client_address, grpc::InsecureChannelCredentials()));
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() +
                         std::chrono::seconds(1));
    etcdserverpb::StatusResponse response;
    if (!stub->Status(&context, etcdserverpb::StatusRequest(), &response)
             .ok()) {
      return std::nullopt;
    }
    return response;
  }
  std::vector<std::optional<etcdserverpb::StatusResponse>> StatusAll() {
    std::vector<std::optional<etcdserverpb::StatusResponse>> all;
    for (const Node& n : cluster_.nodes) all.push_back(Status(n));
    return all;
  }

  absl::Status SavePids() {
    try {
      std::ifstream in(members_file_);
      nlohmann::json j = nlohmann::json::parse(in);
      for (auto& n : j.at("nodes")) {
        if (const Node* node = cluster_.Find(n.at("id").get<uint64_t>())) {
          n["pid"] = node->pid;
        }
      }
      const std::string tmp = members_file_ + ".tmp";
      std::ofstream(tmp) << j.dump(2) << "\n";
      if (std::rename(tmp.c_str(), members_file_.c_str()) != 0) {
        return absl::InternalError("cannot rewrite " + members_file_);
      }
      return absl::OkStatus();
    } catch (const std::exception& e) {
      return absl::InternalError(absl::StrCat(members_file_, ": ", e.what()));
    }
  }

  const std::string members_file_;
  Cluster cluster_;
  const int put_deadline_ms_;
  const std::string value_;
  std::vector<std::unique_ptr<etcdserverpb::KV::Stub>> kv_;
  // Each writer's member; only that writer's thread touches its entry.
  std::vector<size_t> writer_endpoint_;
};

int Failover(const Common& common, const FailoverOptions& options,
             FailoverTarget* target) {
  const nlohmann::json settings = target->Settings();
  Log("failover: " + target->SettingsText());
  Log(target->ClientText());
  Log(absl::StrFormat("%d kills; %d writer thread(s)", options.kills,
                      options.writers));
  if (absl::Status s = target->WaitStable(options.max_lag, common.max_wait_s);
      !s.ok()) {
    Log(std::string(s.message()));
    return 1;
  }
  WriteLoad load(target, options.writers);

  nlohmann::json samples = nlohmann::json::array();
  std::vector<double> gaps_ms;
  int failures = 0;
  int leaderless = 0;
  for (int k = 1; k <= options.kills; ++k) {
    if (absl::Status s = target->WaitStable(options.max_lag, common.max_wait_s);
        !s.ok()) {
      Log(std::string(s.message()));
      return 1;
    }
    // Writes must be flowing to the current leader before the kill.
    SleepMs(options.settle_ms);
    const int64_t flowing_by =
        SteadyNowNs() + static_cast<int64_t>(common.max_wait_s * 1e9);
    while (SteadyNowNs() - load.last_ok_ns() > 200'000'000) {
      if (SteadyNowNs() > flowing_by) {
        Log("no write acknowledged for --max_wait_s before a kill");
        return 1;
      }
      SleepMs(10);
    }
    absl::StatusOr<FailoverTarget::Leader> leader = target->FindLeader();
    if (!leader.ok()) {
      if (++leaderless > 10) {
        Log(std::string(leader.status().message()));
        return 1;
      }
      --k;  // between the checks the leader moved; look again
      continue;
    }
    const Node node = leader->node;
    if (!IsAlive(node)) {
      Log(absl::StrFormat("leader node %d (pid %d) does not run its argv",
                          node.id, node.pid));
      return 1;
    }
    const uint64_t acked_before = load.acked();
    const int64_t kill_ns = SteadyNowNs();
    load.Arm(kill_ns);
    if (kill(node.pid, SIGKILL) != 0) {
      Log(absl::StrFormat("kill(%d) failed: %s", node.pid, strerror(errno)));
      return 1;
    }
    while (IsAlive(node) && SteadyNowNs() - kill_ns < 5'000'000'000) SleepMs(1);
    const int64_t dead_ns = SteadyNowNs();
    const int64_t give_up =
        kill_ns + static_cast<int64_t>(common.max_wait_s * 1e9);
    int64_t first_ack = 0;
    while ((first_ack = load.first_ack_ns()) == 0 && SteadyNowNs() < give_up) {
      SleepMs(1);
    }
    load.Disarm();
    nlohmann::json sample;
    sample["kill"] = k;
    sample["leader"] = node.id;
    sample["pid"] = node.pid;
    sample["term"] = leader->term;
    sample["dead_after_ms"] = Ms(dead_ns - kill_ns);
    sample["errors_before_first_ack"] = load.gap_errors();
    sample["attempts_until_first_ack"] = load.gap_attempts();
    std::string errors;
    for (const auto& [code, n] : load.gap_errors()) {
      absl::StrAppend(&errors, errors.empty() ? "" : " ", code, "=", n);
    }
    std::string outcome;
    if (first_ack == 0) {
      ++failures;
      sample["first_ack_ms"] = nullptr;
      outcome = absl::StrFormat("NO write acknowledged within %.0f s",
                                common.max_wait_s);
    } else {
      const double gap = Ms(first_ack - kill_ns);
      gaps_ms.push_back(gap);
      sample["first_ack_ms"] = gap;
      outcome = absl::StrFormat("first acknowledged write after %.1f ms", gap);
    }
    std::string new_leader = "?";
    if (absl::StatusOr<FailoverTarget::Leader> now = target->FindLeader();
        now.ok()) {
      sample["new_leader"] = now->node.id;
      sample["new_term"] = now->term;
      new_leader = absl::StrFormat("node %d, term %d", now->node.id, now->term);
    }
    // Restart the killed node and wait until it follows again.
    const int64_t restart_start = SteadyNowNs();
    if (absl::Status s = target->Restart(node.id); !s.ok()) {
      Log(std::string(s.message()));
      return 1;
    }
    const int64_t restarted = SteadyNowNs();
    absl::StatusOr<int64_t> follower =
        target->WaitFollower(node.id, options.max_lag, common.max_wait_s);
    if (!follower.ok()) {
      Log(std::string(follower.status().message()));
      return 1;
    }
    sample["restart_ms"] = Ms(restarted - restart_start);
    sample["follower_again_ms"] = Ms(restarted - restart_start + *follower);
    sample["writes_acked_during_kill"] = load.acked() - acked_before;
    Log(absl::StrFormat(
        "kill %d/%d: leader node %d (pid %d, term %d) SIGKILLed -> %s "
        "(%d call(s) until then%s%s); new leader %s; node %d restarted in "
        "%.0f ms, a caught-up follower after %.0f ms",
        k, options.kills, node.id, node.pid, leader->term, outcome,
        sample["attempts_until_first_ack"].get<uint64_t>(),
        errors.empty() ? "" : ", errors: ", errors, new_leader, node.id,
        sample["restart_ms"].get<double>(),
        sample["follower_again_ms"].get<double>()));
    samples.push_back(std::move(sample));
  }
  load.Stop();

  nlohmann::json summary;
  summary["kills"] = options.kills;
  summary["samples"] = gaps_ms.size();
  summary["no_ack_within_max_wait"] = failures;
  if (!gaps_ms.empty()) {
    summary["min_ms"] = *std::min_element(gaps_ms.begin(), gaps_ms.end());
    summary["median_ms"] = Median(gaps_ms);
    summary["p90_ms"] = Quantile(gaps_ms, 0.9);
    summary["max_ms"] = *std::max_element(gaps_ms.begin(), gaps_ms.end());
    double sum = 0;
    for (double g : gaps_ms) sum += g;
    summary["mean_ms"] = sum / gaps_ms.size();
  }
  summary["writes_acked"] = load.acked();
  summary["writes_failed"] = load.failed();
  summary["client"] = target->ClientStats();

  FILE* out = common.json ? stderr : stdout;
  std::fprintf(out,
               "== failover (%s): leader SIGKILL -> first acknowledged "
               "write\n",
               target->Name().c_str());
  std::fprintf(out, "settings: %s\n", target->SettingsText().c_str());
  std::fprintf(out, "writes: %d writer thread(s); %s\n", options.writers,
               target->ClientText().c_str());
  std::fprintf(out, "samples (ms):");
  for (const auto& s : samples) {
    if (s["first_ack_ms"].is_null()) {
      std::fprintf(out, " none");
    } else {
      std::fprintf(out, " %.0f", s["first_ack_ms"].get<double>());
    }
  }
  std::fprintf(out, "\n");
  if (!gaps_ms.empty()) {
    const std::string missing = failures > 0 ? absl::StrFormat(
                                                   "; %d kill(s) without any "
                                                   "acknowledged write",
                                                   failures)
                                             : "";
    std::fprintf(out,
                 "kill -> first acknowledged write over %zu kills: median "
                 "%.0f ms (target <= 500), p90 %.0f ms, max %.0f ms (target "
                 "<= 1000), min %.0f ms, mean %.0f ms%s\n",
                 gaps_ms.size(), summary["median_ms"].get<double>(),
                 summary["p90_ms"].get<double>(),
                 summary["max_ms"].get<double>(),
                 summary["min_ms"].get<double>(),
                 summary["mean_ms"].get<double>(), missing.c_str());
  }
  std::fprintf(out,
               "writes: %llu acknowledged, %llu failed (a call in flight at a "
               "kill fails: outcome unknown); client: %s\n",
               static_cast<unsigned long long>(load.acked()),
               static_cast<unsigned long long>(load.failed()),
               summary["client"].dump().c_str());
  std::fflush(out);
  if (common.json) {
    nlohmann::json doc;
    doc["target"] = target->Name();
    doc["settings"] = settings;
    doc["samples"] = samples;
    doc["summary"] = summary;
    std::printf("%s\n", doc.dump(2).c_str());
  }
  return failures == 0 ? 0 : 1;
}

// ----------------------------------------------------------------- catchup

struct CatchupOptions {
  uint64_t writes = 100'000;
  int create_batch = 1000;
  int writers = 4;
  double compaction_wait_s = 10;
};

// The follower may apply a few more (internal) entries between the status
// read before its stop and its exit: the leader's log must start this far
// past that index for a snapshot to be certainly needed.
constexpr uint64_t kCompactionMargin = 10;

int Catchup(const Common& common, const CatchupOptions& options) {
  absl::StatusOr<Cluster> cluster = LoadCluster(common.cluster_dir);
  if (!cluster.ok()) {
    Log(std::string(cluster.status().message()));
    return 2;
  }
  const nlohmann::json settings = Settings(*cluster);
  Log("catch-up: " + SettingsText(settings));
  tools::ClusterProbe probe(cluster->Addresses());
  absl::StatusOr<v1::ClusterStatusResponse> stable =
      WaitStable(&probe, *cluster, 1000, common.max_wait_s);
  if (!stable.ok()) {
    Log(std::string(stable.status().message()));
    return 1;
  }
  const v1::MemberStatus* leader = tools::LeaderOf(*stable);
  const uint64_t leader_id = leader->node_id();
  uint64_t follower_id = 0;
  for (const v1::MemberStatus& m : stable->members()) {
    if (m.node_id() != leader_id && m.node_id() > follower_id) {
      follower_id = m.node_id();
    }
  }
  if (follower_id == 0) {
    Log("catch-up needs a follower (a cluster of 2 or more nodes)");
    return 2;
  }
  const Node follower = *cluster->Find(follower_id);
  const std::string leader_address = leader->client_address();

  // 1. Stop the follower, noting its applied index first (no client writes
  // run now, so it moves by a few internal entries at most).
  uint64_t follower_applied = 0;
  if (absl::StatusOr<v1::ClusterStatusResponse> s =
          probe.Ask(follower.client_address, absl::Seconds(2));
      s.ok() && tools::MemberOf(*s, follower_id) != nullptr) {
    follower_applied = tools::MemberOf(*s, follower_id)->applied_index();
  }
  Log(
      absl::StrFormat("stopping follower node %d at applied index %d "
                      "(leader: node %d)",
                      follower_id, follower_applied, leader_id));
  if (absl::Status s =
          RunClusterPy(common, {"stop", absl::StrCat(follower_id)});
      !s.ok()) {
    Log(std::string(s.message()));
    return 1;
  }

  // 2. Write while it is down.
  std::vector<std::string> live;
  for (const Node& n : cluster->nodes) {
    if (n.id != follower_id) live.push_back(n.client_address);
  }
  std::unique_ptr<client::SessionClient> client =
      client::SessionClient::Connect(live);
  std::atomic<int64_t> budget{static_cast<int64_t>(options.writes)};
  std::atomic<uint64_t> written{0};
  std::atomic<uint64_t> failed_calls{0};
  const std::string attribute(static_cast<size_t>(common.attr_bytes), 'x');
  Log(absl::StrFormat(
      "writing %d sessions (%d B attribute) in CreateSessions calls of %d, %d "
      "writer thread(s)",
      options.writes, common.attr_bytes, options.create_batch,
      options.writers));
  const int64_t write_start = SteadyNowNs();
  const int64_t write_deadline =
      write_start + static_cast<int64_t>(common.max_wait_s * 4 * 1e9);
  std::vector<std::thread> writers;
  for (int w = 0; w < options.writers; ++w) {
    writers.emplace_back([&, w] {
      uint64_t n = 0;
      while (SteadyNowNs() < write_deadline) {
        const int64_t take = std::min<int64_t>(
            options.create_batch, budget.fetch_sub(options.create_batch));
        if (take <= 0) return;
        v1::CreateSessionsRequest request;
        for (int64_t i = 0; i < take; ++i) {
          v1::CreateSessionRequest* one = request.add_requests();
          one->set_user_id(absl::StrCat("catchup-", w, "-", n++));
          one->set_ttl_ms(3'600'000);
          (*one->mutable_attributes())["data"] = attribute;
        }
        absl::StatusOr<v1::CreateSessionsResponse> r =
            client->CreateSessions(request);
        if (r.ok()) {
          written.fetch_add(r->responses_size());
        } else {
          failed_calls.fetch_add(1);
          budget.fetch_add(take);  // try those again
        }
      }
    });
  }
  for (auto& t : writers) t.join();
  const int64_t write_ns = SteadyNowNs() - write_start;
  Log(absl::StrFormat("wrote %d sessions in %.1f s (%.0f/s); %d failed calls",
                      written.load(), write_ns / 1e9,
                      written.load() / (write_ns / 1e9), failed_calls.load()));
  if (written.load() < options.writes) {
    Log("could not write every session in time");
    return 1;
  }

  // 3. Optionally wait until the leader's log no longer holds what the
  // follower misses (so it needs a snapshot).
  v1::MemberStatus leader_now;
  const int64_t compact_give_up =
      SteadyNowNs() + static_cast<int64_t>(options.compaction_wait_s * 1e9);
  while (true) {
    absl::StatusOr<v1::ClusterStatusResponse> s =
        probe.Ask(leader_address, absl::Seconds(2));
    if (s.ok()) leader_now = *tools::MemberOf(*s, leader_id);
    if (leader_now.first_index() > follower_applied + kCompactionMargin ||
        SteadyNowNs() >= compact_give_up) {
      break;
    }
    SleepMs(100);
  }
  const bool compacted_past =
      leader_now.first_index() > follower_applied + kCompactionMargin;
  const uint64_t target = leader_now.commit_index();
  Log(absl::StrFormat(
      "leader node %d: commit index %d, log [%d, %d], snapshot at %d; the "
      "follower stopped at index %d: %s",
      leader_id, target, leader_now.first_index(), leader_now.last_index(),
      leader_now.snapshot_index(), follower_applied,
      compacted_past ? "the leader compacted past it (snapshot needed)"
                     : "the leader's log still covers it"));

  // 4. Restart it and poll it (asked directly) until it has applied the
  // leader's commit index.
  const int64_t restart_start = SteadyNowNs();
  absl::StatusOr<pid_t> restart =
      SpawnClusterPy(common.python, common.cluster_py, common.cluster_dir,
                     {"restart", absl::StrCat(follower_id)});
  if (!restart.ok()) {
    Log(std::string(restart.status().message()));
    return 1;
  }
  int64_t reachable_ns = 0;
  int64_t caught_up_ns = 0;
  v1::MemberStatus me;
  const int64_t give_up =
      restart_start + static_cast<int64_t>(common.max_wait_s * 1e9);
  while (SteadyNowNs() < give_up) {
    absl::StatusOr<v1::ClusterStatusResponse> s =
        probe.Ask(follower.client_address, absl::Milliseconds(500));
    if (s.ok()) {
      if (const v1::MemberStatus* m = tools::MemberOf(*s, follower_id)) {
        if (reachable_ns == 0) reachable_ns = SteadyNowNs();
        me = *m;
        const v1::MemberStatus* l = tools::LeaderOf(*s);
        const uint64_t commit =
            std::max<uint64_t>(target, l != nullptr ? l->commit_index() : 0);
        if (m->applied_index() >= commit) {
          caught_up_ns = SteadyNowNs();
          break;
        }
      }
    }
    SleepMs(10);
  }
  const absl::Status reaped = Reap(*restart, "cluster.py restart");
  if (!reaped.ok()) Log(std::string(reaped.message()));

  nlohmann::json doc;
  doc["settings"] = settings;
  doc["sessions_written"] = written.load();
  doc["create_batch"] = options.create_batch;
  doc["write_seconds"] = write_ns / 1e9;
  doc["follower"] = follower_id;
  doc["leader"] = leader_id;
  doc["follower_stopped_at_index"] = follower_applied;
  doc["leader_commit_index"] = target;
  doc["entries_behind"] = target - follower_applied;
  doc["leader_first_index"] = leader_now.first_index();
  doc["leader_snapshot_index"] = leader_now.snapshot_index();
  doc["leader_compacted_past_follower"] = compacted_past;
  doc["serving_after_ms"] =
      reachable_ns == 0 ? nlohmann::json()
                        : nlohmann::json(Ms(reachable_ns - restart_start));
  doc["caught_up_after_ms"] =
      caught_up_ns == 0 ? nlohmann::json()
                        : nlohmann::json(Ms(caught_up_ns - restart_start));
  doc["snapshots_installed"] = me.metrics().snapshots_installed();
  doc["follower_applied_index"] = me.applied_index();

  FILE* out = common.json ? stderr : stdout;
  std::fprintf(out, "== catch-up: a follower %llu sessions behind\n",
               static_cast<unsigned long long>(written.load()));
  std::fprintf(out, "settings: %s\n", SettingsText(settings).c_str());
  std::fprintf(
      out,
      "wrote %llu sessions in CreateSessions calls of %d while node %llu was "
      "down: %llu log entries behind (leader commit %llu; its log "
      "starts at %llu, snapshot at %llu%s)\n",
      static_cast<unsigned long long>(written.load()), options.create_batch,
      static_cast<unsigned long long>(follower_id),
      static_cast<unsigned long long>(target - follower_applied),
      static_cast<unsigned long long>(target),
      static_cast<unsigned long long>(leader_now.first_index()),
      static_cast<unsigned long long>(leader_now.snapshot_index()),
      compacted_past ? ": compacted past the follower" : "");
  if (caught_up_ns == 0) {
    std::fprintf(out,
                 "restart -> NOT caught up within %.0f s (applied %llu of "
                 "%llu)\n",
                 common.max_wait_s,
                 static_cast<unsigned long long>(me.applied_index()),
                 static_cast<unsigned long long>(target));
  } else {
    std::fprintf(
        out,
        "restart -> answering ClusterStatus after %.0f ms, applied the "
        "leader's commit index after %.0f ms (target <= 10000); snapshot "
        "installed: %s\n",
        Ms(reachable_ns - restart_start), Ms(caught_up_ns - restart_start),
        me.metrics().snapshots_installed() > 0
            ? absl::StrFormat("yes (%d)", me.metrics().snapshots_installed())
                  .c_str()
            : "no (caught up from the log)");
  }
  std::fflush(out);
  if (common.json) std::printf("%s\n", doc.dump(2).c_str());
  return caught_up_ns == 0 ? 1 : 0;
}

int Main(int argc, char** argv) {
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
  CLI::App app{
      "sessiond-cluster-bench: failover and follower catch-up times of a "
      "local cluster started by tools/cluster.py"};
  app.require_subcommand(1);
  Common common;
  auto add_common = [&common](CLI::App* sub) {
    sub->add_option("--cluster_dir", common.cluster_dir,
                    "the cluster's folder (SESSIOND_CLUSTER_DIR of "
                    "`tools/dev.sh cluster up`), holding cluster.json");
    sub->add_option("--cluster_py", common.cluster_py,
                    "tools/cluster.py, run for `restart` and `stop`");
    sub->add_option("--python", common.python, "the Python that runs it");
    sub->add_option("--max_wait_s", common.max_wait_s,
                    "bound on each wait (a stable cluster, the first write, "
                    "a restart, the catch-up)")
        ->check(CLI::Range(1.0, 3600.0));
    sub->add_option("--attr_bytes", common.attr_bytes,
                    "bytes of attributes per created session")
        ->check(CLI::Range(0, 1 << 20));
    sub->add_flag("--json", common.json,
                  "one JSON document on stdout (the report goes to stderr)");
  };
  FailoverOptions failover;
  std::string etcd_members;
  int etcd_value_bytes = 256;
  int etcd_put_deadline_ms = 500;
  CLI::App* f = app.add_subcommand(
      "failover", "SIGKILL the leader N times; time to the first write");
  add_common(f);
  f->add_option("--etcd_members", etcd_members,
                "instead of --cluster_dir: an etcd cluster's members file "
                "(JSON {\"nodes\": [{id, client_address, argv, log, pid}]}, "
                "as tools/bench_failover.sh --etcd writes it)");
  f->add_option("--value_bytes", etcd_value_bytes, "etcd put value size")
      ->check(CLI::Range(0, 1 << 20));
  f->add_option("--etcd_put_deadline_ms", etcd_put_deadline_ms,
                "deadline of each etcd put attempt (a put to a follower "
                "whose leader died waits this long)")
      ->check(CLI::Range(10, 60000));
  f->add_option("--kills", failover.kills, "leader kills")
      ->check(CLI::Range(1, 1000));
  f->add_option("--writers", failover.writers,
                "threads creating sessions through the client library")
      ->check(CLI::Range(1, 64));
  f->add_option("--settle_ms", failover.settle_ms,
                "writes flowing to a stable cluster before each kill")
      ->check(CLI::Range(0, 60000));
  f->add_option("--max_lag", failover.max_lag,
                "entries a member may lag for the cluster to count as "
                "stable (and a restarted node as caught up)");
  CatchupOptions catchup;
  CLI::App* c = app.add_subcommand(
      "catchup", "stop a follower, write, restart it; time to catch up");
  add_common(c);
  c->add_option("--writes", catchup.writes, "sessions written while it is down")
      ->check(CLI::Range(uint64_t{1}, uint64_t{100'000'000}));
  c->add_option("--create_batch", catchup.create_batch,
                "sessions per CreateSessions call (one log entry each)")
      ->check(CLI::Range(1, 1000));
  c->add_option("--writers", catchup.writers, "writer threads")
      ->check(CLI::Range(1, 64));
  c->add_option("--compaction_wait_s", catchup.compaction_wait_s,
                "after writing, wait up to this long for the leader to "
                "compact its log past the follower (0: do not wait)")
      ->check(CLI::Range(0.0, 600.0));
  CLI11_PARSE(app, argc, argv);
  if (f->parsed() && !etcd_members.empty()) {
    absl::StatusOr<Cluster> members = LoadClusterFile(etcd_members, "");
    if (!members.ok()) {
      Log(std::string(members.status().message()));
      return 2;
    }
    EtcdTarget target(etcd_members, *std::move(members), failover.writers,
                      etcd_value_bytes, etcd_put_deadline_ms);
    return Failover(common, failover, &target);
  }
  if (common.cluster_dir.empty()) {
    Log("--cluster_dir is required (or, for failover, --etcd_members)");
    return 2;
  }
  absl::StatusOr<Cluster> cluster = LoadCluster(common.cluster_dir);
  if (!cluster.ok()) {
    Log(std::string(cluster.status().message()));
    return 2;
  }
  if (f->parsed()) {
    SessiondTarget target(common, *std::move(cluster));
    return Failover(common, failover, &target);
  }
  return Catchup(common, catchup);
}

}  // namespace
}  // namespace sessiond::clusterbench

int main(int argc, char** argv) {
  return sessiond::clusterbench::Main(argc, argv);
}
