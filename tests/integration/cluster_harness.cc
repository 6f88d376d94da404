// Copyright sessiond authors. Licensed under the Apache License 2.0.
#include "tests/integration/cluster_harness.h"

#include <grpcpp/create_channel.h>
#include <grpcpp/security/credentials.h>
#include <grpcpp/support/channel_arguments.h>
#include <signal.h>
#include <sys/wait.h>

#include <algorithm>
#include <cstdio>
#include <deque>
#include <filesystem>
#include <fstream>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "sessiond/v1/peer.grpc.pb.h"

namespace sessiond::testing {
namespace {

std::shared_ptr<grpc::Channel> ChannelTo(
    const std::string& address,
    const std::shared_ptr<grpc::ChannelCredentials>& credentials) {
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 500);
  return grpc::CreateCustomChannel(
      address,
      credentials != nullptr ? credentials : grpc::InsecureChannelCredentials(),
      args);
}

absl::StatusOr<sessiond::v1::internal::HelloResponse> Hello(
    const std::string& peer_address,
    const std::shared_ptr<grpc::ChannelCredentials>& credentials) {
  auto stub = sessiond::v1::internal::RaftPeer::NewStub(
      ChannelTo(peer_address, credentials));
  grpc::ClientContext context;
  SetDeadline(&context, absl::Milliseconds(500));
  sessiond::v1::internal::HelloRequest request;
  sessiond::v1::internal::HelloResponse response;
  grpc::Status s = stub->Hello(&context, request, &response);
  if (!s.ok()) return absl::UnavailableError(s.error_message());
  return response;
}

}  // namespace

ClusterHarness::ClusterHarness(ClusterOptions options)
    : options_(std::move(options)) {
  for (int id = 1; id <= options_.nodes + options_.spares; ++id) {
    Node n;
    n.id = id;
    n.spare = id > options_.nodes;
    n.client_port = PickFreePort();
    n.peer_port = PickFreePort();
    while (n.peer_port == n.client_port) n.peer_port = PickFreePort();
    n.data_dir = absl::StrCat(dir_.path(), "/node", id);
    n.drop_file = absl::StrCat(dir_.path(), "/node", id, ".drop");
    n.process = std::make_unique<SessiondProcess>(options_.binary, n.data_dir);
    n.process->set_credentials(options_.client_credentials);
    n.process->set_listen(absl::StrCat("127.0.0.1:", n.client_port));
    auto env = options_.env.find(id);
    if (env != options_.env.end()) n.process->set_env(env->second);
    nodes_.emplace(id, std::move(n));
  }
}

ClusterHarness::~ClusterHarness() {
  for (auto& [id, n] : nodes_) n.process->Kill();
}

ClusterHarness::Node& ClusterHarness::node(int id) { return nodes_.at(id); }
const ClusterHarness::Node& ClusterHarness::node(int id) const {
  return nodes_.at(id);
}

std::string ClusterHarness::initial_cluster() const {
  std::vector<std::string> parts;
  for (const auto& [id, n] : nodes_) {
    if (!n.spare) parts.push_back(absl::StrCat(id, "=127.0.0.1:", n.peer_port));
  }
  return absl::StrJoin(parts, ",");
}

std::vector<std::string> ClusterHarness::FlagsFor(const Node& n) const {
  std::vector<std::string> flags = {"--node_id", absl::StrCat(n.id),
                                    "--unsafe_peer_drop_file", n.drop_file};
  // The members, and fast timing, by default; a test's own value for any of
  // them wins (the daemon takes each flag once).
  for (const auto& [name, value] :
       {std::pair<std::string, std::string>{
            "--initial_cluster",
            n.spare ? absl::StrCat(initial_cluster(), ",", n.id,
                                   "=127.0.0.1:", n.peer_port)
                    : initial_cluster()},
        {"--tick_ms", "20"},
        {"--election_ticks", "10"},
        {"--heartbeat_ticks", "3"}}) {
    const auto given = [&name](const std::vector<std::string>& list) {
      return std::find(list.begin(), list.end(), name) != list.end();
    };
    if (!given(options_.flags) && !given(n.extra_flags)) {
      flags.insert(flags.end(), {name, value});
    }
  }
  if (n.spare) {
    flags.insert(flags.end(), {"--initial_cluster_state", "existing"});
  }
  flags.insert(flags.end(), options_.flags.begin(), options_.flags.end());
  flags.insert(flags.end(), n.extra_flags.begin(), n.extra_flags.end());
  return flags;
}

absl::Status ClusterHarness::Launch() {
  for (auto& [id, n] : nodes_) {
    if (!InCluster(n)) continue;
    n.process->set_extra_flags(FlagsFor(n));
    if (absl::Status s = n.process->Launch(); !s.ok()) return s;
  }
  return absl::OkStatus();
}

absl::Status ClusterHarness::Start(absl::Duration timeout) {
  if (absl::Status s = Launch(); !s.ok()) return s;
  for (auto& [id, n] : nodes_) {
    if (!InCluster(n)) continue;
    if (absl::Status s = n.process->WaitUntilServing(timeout); !s.ok()) {
      std::fprintf(stderr, "ClusterHarness::Start: node %d: %s\n%s\n", id,
                   std::string(s.message()).c_str(), LogTail(id).c_str());
      return absl::Status(s.code(),
                          absl::StrCat(s.message(), "\n", LogTail(id)));
    }
  }
  absl::StatusOr<int> leader = WaitForLeader(timeout);
  if (!leader.ok()) {
    std::fprintf(stderr, "ClusterHarness::Start: %s\n",
                 std::string(leader.status().message()).c_str());
    return leader.status();
  }
  // Every member announces itself once it serves (bootstrap's "it ran"
  // record, server/bootstrap.cc); tests that wipe a member right after the
  // start rely on the announcement having committed. Read from the
  // leader's member table over its peer port (Hello: answered locally).
  const absl::Time deadline = absl::Now() + timeout;
  std::string waiting;
  while (absl::Now() < deadline) {
    absl::StatusOr<sessiond::v1::internal::HelloResponse> hello =
        Hello(peer_address(*leader), options_.peer_credentials);
    waiting = " (no answer)";
    if (hello.ok()) {
      waiting.clear();
      for (const auto& entry : nodes_) {
        const int id = entry.first;
        if (!InCluster(entry.second)) continue;
        bool started = false;
        for (const auto& m : hello->cluster().members()) {
          if (m.node_id() == static_cast<uint64_t>(id)) started = m.started();
        }
        if (!started) absl::StrAppend(&waiting, " ", id);
      }
      if (waiting.empty()) return absl::OkStatus();
    }
    absl::SleepFor(absl::Milliseconds(20));
  }
  const absl::Status failed = absl::DeadlineExceededError(
      absl::StrCat("members not announced as started:", waiting));
  // Many tests only ASSERT that Start() is ok: say why here.
  std::fprintf(stderr, "ClusterHarness::Start: %s\n",
               std::string(failed.message()).c_str());
  return failed;
}

absl::Status ClusterHarness::StartNode(int id, absl::Duration timeout) {
  Node& n = node(id);
  n.started = true;
  n.process->set_extra_flags(FlagsFor(n));
  absl::Status s = n.process->Start(timeout);
  if (!s.ok()) {
    return absl::Status(s.code(), absl::StrCat(s.message(), "\n", LogTail(id)));
  }
  return s;
}

int ClusterHarness::StartNodeExpectingExit(int id, absl::Duration timeout) {
  Node& n = node(id);
  n.started = true;
  n.process->set_extra_flags(FlagsFor(n));
  if (!n.process->Launch().ok()) return -1;
  return n.process->WaitForExit(timeout);
}

int ClusterHarness::WaitForExit(int id, absl::Duration timeout) {
  return node(id).process->WaitForExit(timeout);
}

void ClusterHarness::Kill(int id) { node(id).process->Kill(); }
int ClusterHarness::Terminate(int id) { return node(id).process->Terminate(); }
void ClusterHarness::Pause(int id) { node(id).process->Pause(); }
void ClusterHarness::Resume(int id) { node(id).process->Resume(); }
void ClusterHarness::Signal(int id, int signal) {
  if (running(id)) kill(node(id).process->pid(), signal);
}
bool ClusterHarness::running(int id) const {
  return node(id).process->running();
}

void ClusterHarness::WipeDataDir(int id) {
  std::error_code ignored;
  std::filesystem::remove_all(node(id).data_dir, ignored);
}

void ClusterHarness::SetNodeFlags(int id, std::vector<std::string> flags) {
  node(id).extra_flags = std::move(flags);
}

void ClusterHarness::SetEnv(int id, std::vector<std::string> env) {
  node(id).process->set_env(std::move(env));
}

void ClusterHarness::WriteDropFile(const Node& n, const std::set<int>& peers) {
  // Replaced whole (rename), so the node never reads half a list.
  const std::string tmp = n.drop_file + ".tmp";
  {
    std::ofstream out(tmp, std::ios::trunc);
    for (int p : peers) out << p << "\n";
  }
  std::filesystem::rename(tmp, n.drop_file);
}

void ClusterHarness::Partition(int id, const std::set<int>& peers) {
  WriteDropFile(node(id), peers);
}

void ClusterHarness::Isolate(int id) {
  std::set<int> others;
  for (const auto& [other, n] : nodes_) {
    if (other != id) others.insert(other);
  }
  WriteDropFile(node(id), others);
  for (int other : others) {
    std::set<int> peers = {id};
    WriteDropFile(node(other), peers);
  }
}

void ClusterHarness::HealAll() {
  for (const auto& [id, n] : nodes_) WriteDropFile(n, {});
}

std::vector<int> ClusterHarness::ids() const {
  std::vector<int> out;
  for (const auto& [id, n] : nodes_) out.push_back(id);
  return out;
}

std::vector<int> ClusterHarness::running_ids() const {
  std::vector<int> out;
  for (const auto& [id, n] : nodes_) {
    if (n.process->running()) out.push_back(id);
  }
  return out;
}

absl::StatusOr<int> ClusterHarness::WaitForLeader(absl::Duration timeout,
                                                  const std::set<int>& among) {
  const absl::Time deadline = absl::Now() + timeout;
  size_t members = 0;
  for (const auto& [id, n] : nodes_) members += InCluster(n) ? 1 : 0;
  const size_t majority = members / 2 + 1;
  std::string last;
  while (absl::Now() < deadline) {
    // Each running node's own view: (term, leader).
    std::map<std::pair<uint64_t, uint64_t>, size_t> votes;
    std::map<int, std::pair<uint64_t, uint64_t>> views;
    for (int id : running_ids()) {
      absl::StatusOr<sessiond::v1::internal::HelloResponse> hello =
          Hello(peer_address(id), options_.peer_credentials);
      if (!hello.ok() || hello->leader() == 0) continue;
      views[id] = {hello->term(), hello->leader()};
      ++votes[{hello->term(), hello->leader()}];
    }
    for (const auto& [view, count] : votes) {
      const int leader = static_cast<int>(view.second);
      auto self = views.find(leader);
      if (count >= majority && self != views.end() && self->second == view &&
          (among.empty() || among.count(leader) > 0)) {
        return leader;
      }
    }
    last = absl::StrCat(views.size(), " nodes know a leader");
    absl::SleepFor(absl::Milliseconds(20));
  }
  return absl::DeadlineExceededError(absl::StrCat(
      "no leader within ", absl::FormatDuration(timeout), " (", last, ")"));
}

absl::Status ClusterHarness::WaitForWritable(absl::Duration timeout, int via) {
  const absl::Time deadline = absl::Now() + timeout;
  size_t turn = 0;
  std::string last;
  while (absl::Now() < deadline) {
    std::vector<int> ids = running_ids();
    if (ids.empty()) break;
    const int target = via != 0 ? via : ids[turn++ % ids.size()];
    auto stub = Stub(target);
    grpc::ClientContext context;
    SetDeadline(&context, absl::Seconds(1));
    sessiond::v1::CreateSessionRequest request;
    request.set_user_id("writable-probe");
    sessiond::v1::CreateSessionResponse response;
    grpc::Status s = stub->CreateSession(&context, request, &response);
    if (s.ok()) return absl::OkStatus();
    last = s.error_message();
    absl::SleepFor(absl::Milliseconds(20));
  }
  return absl::DeadlineExceededError(absl::StrCat(
      "no write succeeded within ", absl::FormatDuration(timeout), ": ", last));
}

absl::StatusOr<sessiond::v1::MemberStatus> ClusterHarness::MemberStatusOf(
    int id, bool with_digest) {
  absl::StatusOr<sessiond::v1::internal::HelloResponse> hello =
      Hello(peer_address(id), options_.peer_credentials);
  if (!hello.ok()) return hello.status();
  auto stub = sessiond::v1::internal::RaftPeer::NewStub(
      ChannelTo(peer_address(id), options_.peer_credentials));
  grpc::ClientContext context;
  SetDeadline(&context, absl::Seconds(30));
  sessiond::v1::internal::NodeStatusRequest request;
  request.set_cluster_id(hello->cluster_id());
  request.set_cluster_epoch(hello->cluster_epoch());
  request.set_with_digest(with_digest);
  sessiond::v1::MemberStatus response;
  grpc::Status s = stub->NodeStatus(&context, request, &response);
  if (!s.ok()) return absl::UnavailableError(s.error_message());
  return response;
}

absl::StatusOr<std::string> ClusterHarness::WaitForConvergence(
    absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  std::string last;
  while (absl::Now() < deadline) {
    std::set<uint64_t> applied;
    std::set<std::string> digests;
    bool all = true;
    for (int id : running_ids()) {
      absl::StatusOr<sessiond::v1::MemberStatus> m = MemberStatusOf(id, true);
      if (!m.ok() || m->state_digest().empty()) {
        all = false;
        last = absl::StrCat("node ", id, " did not answer");
        break;
      }
      applied.insert(m->digest_applied_index());
      digests.insert(m->state_digest());
    }
    if (all && applied.size() == 1 && digests.size() == 1) {
      return *digests.begin();
    }
    if (all) {
      last = absl::StrCat(applied.size(), " different applied indexes, ",
                          digests.size(), " different digests");
    }
    absl::SleepFor(absl::Milliseconds(100));
  }
  return absl::DeadlineExceededError(absl::StrCat(
      "no convergence within ", absl::FormatDuration(timeout), ": ", last));
}

absl::StatusOr<sessiond::v1::ClusterStatusResponse>
ClusterHarness::ClusterStatus(int via, bool with_digests) {
  auto admin = Admin(via);
  grpc::ClientContext context;
  SetDeadline(&context, absl::Seconds(30));
  sessiond::v1::ClusterStatusRequest request;
  request.set_with_digests(with_digests);
  sessiond::v1::ClusterStatusResponse response;
  grpc::Status s = admin->ClusterStatus(&context, request, &response);
  if (!s.ok()) return absl::UnavailableError(s.error_message());
  return response;
}

std::unique_ptr<sessiond::v1::SessionService::Stub> ClusterHarness::Stub(
    int id) const {
  return sessiond::v1::SessionService::NewStub(
      ChannelTo(client_address(id), options_.client_credentials));
}

grpc::Status ClusterHarness::Validate(
    int id, const std::string& token, sessiond::v1::Consistency consistency,
    sessiond::v1::ValidateSessionResponse* response,
    absl::Duration deadline) const {
  grpc::ClientContext context;
  SetDeadline(&context, deadline);
  sessiond::v1::ValidateSessionRequest request;
  request.set_token(token);
  request.set_consistency(consistency);
  return Stub(id)->ValidateSession(&context, request, response);
}

sessiond::v1::ValidateSessionResponse::Outcome ClusterHarness::Validate(
    int id, const std::string& token,
    sessiond::v1::Consistency consistency) const {
  sessiond::v1::ValidateSessionResponse response;
  const grpc::Status s = Validate(id, token, consistency, &response);
  if (!s.ok()) {
    std::fprintf(stderr, "ClusterHarness::Validate on node %d: %d %s\n", id,
                 static_cast<int>(s.error_code()), s.error_message().c_str());
    return sessiond::v1::ValidateSessionResponse::OUTCOME_UNSPECIFIED;
  }
  return response.outcome();
}

std::unique_ptr<sessiond::v1::AdminService::Stub> ClusterHarness::Admin(
    int id) const {
  return sessiond::v1::AdminService::NewStub(
      ChannelTo(client_address(id), options_.client_credentials));
}

std::string ClusterHarness::client_address(int id) const {
  return absl::StrCat("127.0.0.1:", node(id).client_port);
}

std::string ClusterHarness::peer_address(int id) const {
  return absl::StrCat("127.0.0.1:", node(id).peer_port);
}

std::string ClusterHarness::data_dir(int id) const { return node(id).data_dir; }

std::string ClusterHarness::log_path(int id) const {
  return node(id).process->log_path();
}

std::string ClusterHarness::LogTail(int id, int lines) const {
  std::ifstream in(log_path(id));
  std::deque<std::string> tail;
  std::string line;
  while (std::getline(in, line)) {
    tail.push_back(line);
    if (static_cast<int>(tail.size()) > lines) tail.pop_front();
  }
  return absl::StrCat("--- node ", id, " log (", log_path(id), ") ---\n",
                      absl::StrJoin(tail, "\n"));
}

}  // namespace sessiond::testing
