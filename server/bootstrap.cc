// Copyright sessiond authors. Licensed under the Apache License 2.0.
#include "server/bootstrap.h"

#include <openssl/rand.h>

#include <algorithm>
#include <cstdio>
#include <string>
#include <vector>

#include "absl/strings/cord.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "common/fault_point.h"
#include "common/log.h"
#include "common/status_macros.h"
#include "sessiond/v1/command.pb.h"
#include "storage/keys.h"

namespace sessiond::server {

using sessiond::v1::internal::HelloResponse;
using sessiond::v1::internal::Identity;

namespace {
constexpr char kNeedsAnOperatorPayload[] =
    "type.sessiond.dev/sessiond.StartNeedsAnOperator";
}  // namespace

absl::Status NeedsAnOperator(absl::Status refusal) {
  refusal.SetPayload(kNeedsAnOperatorPayload, absl::Cord());
  return refusal;
}

bool IsForAnOperator(const absl::Status& start_error) {
  return start_error.GetPayload(kNeedsAnOperatorPayload).has_value();
}

uint64_t RandomNonZeroId() {
  uint64_t id = 0;
  while (id == 0) {
    if (RAND_bytes(reinterpret_cast<unsigned char*>(&id), sizeof(id)) != 1) {
      id = static_cast<uint64_t>(absl::GetCurrentTimeNanos());
    }
  }
  return id;
}

namespace {

std::string Hex(uint64_t id) { return absl::StrCat("0x", absl::Hex(id)); }

absl::Status WriteIdentity(storage::Database* db, uint64_t cluster_id,
                           uint64_t node_id, uint64_t cluster_epoch = 0) {
  Identity identity;
  identity.set_cluster_id(cluster_id);
  identity.set_node_id(node_id);
  identity.set_cluster_epoch(cluster_epoch);
  rocksdb::WriteBatch batch;
  batch.Put(db->default_cf(), storage::kIdentityKey,
            identity.SerializeAsString());
  return db->Write(&batch, /*sync=*/true);
}

bool HasState(storage::Database* db, const storage::RaftLogStore& log) {
  if (log.LastIndex() > LogIndex(0) || log.InitialHardState().term > Term(0)) {
    return true;
  }
  std::string applied;
  return db->db()
      ->Get(rocksdb::ReadOptions(), db->default_cf(), storage::kAppliedIndexKey,
            &applied)
      .ok();
}

bool KnownAndStarted(const HelloResponse& hello, uint64_t node_id) {
  for (const auto& m : hello.cluster().members()) {
    if (m.node_id() == node_id && m.started()) return true;
  }
  return false;
}

// Why `hello` says `node` already ran in cluster `configured`: its start
// announcement, or (a member that died before its announcement committed)
// Raft messages the peer received from it. nullptr when it does not.
const char* EvidenceItRan(const HelloResponse& hello, uint64_t configured,
                          uint64_t node) {
  if (hello.cluster_id() != configured) return nullptr;
  if (KnownAndStarted(hello, node)) return "says so";
  if (hello.heard_from_caller()) return "received Raft messages from it";
  return nullptr;
}

bool IsVoter(const HelloResponse& hello, uint64_t node_id) {
  return std::find(hello.voters().begin(), hello.voters().end(), node_id) !=
         hello.voters().end();
}

}  // namespace

bool InMembership(const HelloResponse& hello, uint64_t node_id) {
  return IsVoter(hello, node_id) ||
         std::find(hello.learners().begin(), hello.learners().end(), node_id) !=
             hello.learners().end();
}

namespace {

std::string RejoinAdvice(const Config& config, uint64_t node) {
  return absl::StrCat(
      "its data was lost or wiped, and starting it empty under its old id "
      "could forget acknowledged writes. To bring it back: remove it "
      "(AdminService.RemoveMember node_id=",
      node,
      ") on the running cluster, add it again (AdminService.AddMember with "
      "its peer address), and start it on an empty data dir with "
      "--initial_cluster_state=existing; it catches up from a snapshot. If "
      "the cluster has no leader (most members lost their data), "
      "RemoveMember cannot commit: restart the member that kept its data "
      "with --force_new_cluster=1 first (docs/OPERATIONS.md, \"Disaster "
      "recovery: --force_new_cluster=1\"). Data dir: ",
      config.data_dir);
}

// Asks the peers until `done` accepts the answers or the wait runs out.
absl::Status AskPeers(
    const HelloAll& hello, const BootstrapOptions& options,
    const std::function<absl::StatusOr<bool>(
        const std::map<uint64_t, absl::StatusOr<HelloResponse>>&)>& done,
    absl::string_view waiting_for) {
  const absl::Time give_up = absl::Now() + options.peer_wait;
  absl::Time next_log = absl::Now() + absl::Seconds(5);
  for (;;) {
    const std::map<uint64_t, absl::StatusOr<HelloResponse>> answers = hello();
    // An answer counts only for the member asked: an address that reaches
    // another node (this one, asked "as node 3"), taken at its word, made
    // a member that holds the data look fresh or absent.
    for (const auto& [peer, answer] : answers) {
      if (answer.ok() && answer->node_id() != peer) {
        return NeedsAnOperator(absl::FailedPreconditionError(absl::StrCat(
            "the address --initial_cluster gives for node ", peer,
            " is answered by node ", answer->node_id(),
            ": check --initial_cluster (and the peers' --peer_listen)")));
      }
    }
    absl::StatusOr<bool> ok = done(answers);
    if (!ok.ok()) return ok.status();
    if (*ok) return absl::OkStatus();
    // Who the wait is for, so the operator knows which member to start
    // or which address to check.
    auto unanswered = [&answers] {
      std::vector<std::string> silent;
      for (const auto& [peer, answer] : answers) {
        if (!answer.ok()) {
          silent.push_back(absl::StrCat("node ", peer, " (",
                                        answer.status().message(), ")"));
        }
      }
      return silent.empty()
                 ? std::string("every peer answered")
                 : absl::StrCat("no answer from ", absl::StrJoin(silent, ", "));
    };
    if (absl::Now() >= give_up) {
      return absl::UnavailableError(absl::StrCat(
          "gave up after ", absl::FormatDuration(options.peer_wait),
          " waiting for ", waiting_for, "; ", unanswered(),
          ": check --initial_cluster and that the peers run"));
    }
    if (absl::Now() >= next_log) {
      logging::Info(
          "bootstrap.waiting",
          logging::Fields().Add("msg", absl::StrCat("waiting for ", waiting_for,
                                                    "; ", unanswered())));
      next_log = absl::Now() + absl::Seconds(5);
    }
    absl::SleepFor(options.retry_interval);
  }
}

}  // namespace

absl::Status ForceNewCluster(storage::RaftLogStore* log, NodeId self,
                             bool left_on, int64_t cluster_time_ms,
                             const std::function<absl::Status()>& decided) {
  // The membership at the end of the log: the snapshot's, then every
  // membership change after it.
  replication::ConfState conf = log->InitialConfState();
  absl::StatusOr<replication::Snapshot> snapshot = log->GetSnapshot();
  if (!snapshot.ok()) return snapshot.status();
  LogIndex next = std::max(log->FirstIndex(), snapshot->meta.index + 1);
  Term last_term = snapshot->meta.term;
  while (next <= log->LastIndex()) {
    absl::StatusOr<std::vector<replication::Entry>> entries =
        log->Entries(next, log->LastIndex() + 1, 64 << 20);
    if (!entries.ok()) return entries.status();
    if (entries->empty()) break;
    for (const replication::Entry& e : *entries) {
      last_term = e.term;
      if (e.type != replication::EntryType::kConfChange) continue;
      replication::ConfChange change;
      if (!replication::DecodeConfChange(e.data, &change)) {
        return absl::DataLossError(
            absl::StrCat("bad membership change at ", e.index.value()));
      }
      auto erase = [](std::vector<NodeId>* ids, NodeId id) {
        ids->erase(std::remove(ids->begin(), ids->end(), id), ids->end());
      };
      erase(&conf.voters, change.node);
      erase(&conf.learners, change.node);
      if (change.type == replication::ConfChangeType::kPromoteVoter) {
        conf.voters.push_back(change.node);
      } else if (change.type == replication::ConfChangeType::kAddLearner) {
        conf.learners.push_back(change.node);
      }
    }
    next = entries->back().index + 1;
  }
  std::vector<NodeId> others;
  for (NodeId id : conf.voters) {
    if (id != self) others.push_back(id);
  }
  for (NodeId id : conf.learners) {
    if (id != self) others.push_back(id);
  }
  const bool self_voter = std::find(conf.voters.begin(), conf.voters.end(),
                                    self) != conf.voters.end();
  if (others.empty() && self_voter)
    return decided ? decided() : absl::OkStatus();
  if (left_on) {
    std::vector<uint64_t> ids;
    for (NodeId id : others) ids.push_back(id.value());
    return NeedsAnOperator(absl::FailedPreconditionError(absl::StrCat(
        "--force_new_cluster is still set, and members ",
        absl::StrJoin(ids, ", "),
        " were added since this node was forced into a cluster of its own: "
        "forcing again would remove them, and they could go on as a second "
        "cluster with the same id. Start it without --force_new_cluster "
        "(remove the flag from its unit file); to force a new cluster once "
        "more, start it once without the flag first")));
  }

  if (decided) SESSIOND_RETURN_IF_ERROR(decided());
  replication::HardState hard_state = log->InitialHardState();
  hard_state.term = std::max(hard_state.term, last_term);
  hard_state.vote = self;
  std::vector<replication::Entry> entries;
  LogIndex index = log->LastIndex();
  auto add = [&](replication::EntryType type, std::string data) {
    replication::Entry e;
    e.term = hard_state.term;
    e.index = ++index;
    e.type = type;
    e.data = std::move(data);
    entries.push_back(std::move(e));
  };
  if (!self_voter) {
    add(replication::EntryType::kConfChange,
        replication::EncodeConfChange(
            {replication::ConfChangeType::kPromoteVoter, self}));
  }
  for (NodeId id : others) {
    add(replication::EntryType::kConfChange,
        replication::EncodeConfChange(
            {replication::ConfChangeType::kRemoveNode, id}));
    // Forgotten as a member too, so it may rejoin under the same id.
    sessiond::v1::internal::Command forget;
    forget.set_timestamp_ms(cluster_time_ms);
    forget.mutable_member()->set_kind(
        sessiond::v1::internal::MemberCommand::REMOVE);
    forget.mutable_member()->set_node_id(id.value());
    add(replication::EntryType::kNormal, forget.SerializeAsString());
  }
  hard_state.commit = index;
  logging::Warn("bootstrap.force_new_cluster",
                logging::Fields()
                    .Add("removed", static_cast<uint64_t>(others.size()))
                    .Add("msg",
                         "--force_new_cluster: this node is now the only "
                         "member; add the others back with AddMember"));
  SESSIOND_RETURN_IF_ERROR(log->Append(entries, hard_state, /*sync=*/true));
  SESSIOND_FAULT_POINT("bootstrap.forced");
  return absl::OkStatus();
}

absl::Status RecordClusterEpoch(storage::Database* db, uint64_t cluster_epoch) {
  SESSIOND_ASSIGN_OR_RETURN(std::optional<Identity> identity, ReadIdentity(db));
  if (!identity) return absl::InternalError("the data dir has no identity");
  return WriteIdentity(db, identity->cluster_id(), identity->node_id(),
                       cluster_epoch);
}

absl::StatusOr<std::optional<Identity>> ReadIdentity(storage::Database* db) {
  std::string bytes;
  rocksdb::Status s = db->db()->Get(rocksdb::ReadOptions(), db->default_cf(),
                                    storage::kIdentityKey, &bytes);
  if (s.IsNotFound()) return std::optional<Identity>();
  if (!s.ok()) return storage::FromRocksStatus(s, "reading the identity");
  Identity identity;
  if (!identity.ParseFromString(bytes) || identity.cluster_id() == 0 ||
      identity.node_id() == 0) {
    return absl::DataLossError("the data dir's identity record is corrupt");
  }
  return std::optional<Identity>(identity);
}

absl::StatusOr<BootstrapDecision> DecideIdentity(
    const Config& config, storage::Database* db,
    const storage::RaftLogStore& log, const HelloAll& hello,
    const BootstrapOptions& options) {
  const uint64_t node = static_cast<uint64_t>(config.node_id);
  SESSIOND_ASSIGN_OR_RETURN(const uint64_t configured,
                            ConfiguredClusterId(config));
  // Only a cluster id the flags pin down can be checked against: an explicit
  // --cluster_id, or the one a "new" --initial_cluster derives.
  const bool pinned =
      !config.cluster_id.empty() || (!config.initial_cluster.empty() &&
                                     config.initial_cluster_state == "new");
  SESSIOND_ASSIGN_OR_RETURN(std::optional<Identity> identity, ReadIdentity(db));
  BootstrapDecision decision;
  if (identity) {
    if (identity->node_id() != node) {
      return NeedsAnOperator(absl::FailedPreconditionError(absl::StrCat(
          "data dir ", config.data_dir, " belongs to node ",
          identity->node_id(), " of cluster ", Hex(identity->cluster_id()),
          "; this process was started as node ", node,
          ": check --node_id and --data_dir")));
    }
    if (pinned && configured != identity->cluster_id()) {
      return NeedsAnOperator(absl::FailedPreconditionError(absl::StrCat(
          "data dir ", config.data_dir, " belongs to cluster ",
          Hex(identity->cluster_id()),
          ", not to the cluster these flags "
          "describe (",
          Hex(configured),
          "): check --cluster_id, --cluster_token and --initial_cluster, or "
          "use another data dir")));
    }
    if (HasState(db, log)) {
      decision.cluster_id = identity->cluster_id();
      decision.cluster_epoch = identity->cluster_epoch();
      return decision;
    }
    // The identity is written before the log is bootstrapped: a process
    // stopped between the two left an identity and no voter (no leader
    // could ever be elected). Nothing ran under it (no term, no entry), so
    // it is decided again, as for a new data dir.
  }

  if (!identity && HasState(db, log)) {
    // A data dir from before identities were recorded: a single node.
    if (node != 1) {
      return NeedsAnOperator(absl::FailedPreconditionError(
          absl::StrCat("data dir ", config.data_dir,
                       " holds a single node's data (node 1);"
                       " start it with --node_id=1")));
    }
    decision.cluster_id = configured != 0 ? configured : RandomNonZeroId();
    SESSIOND_RETURN_IF_ERROR(WriteIdentity(db, decision.cluster_id, node));
    return decision;
  }

  // A new data dir.
  absl::StatusOr<std::map<uint64_t, std::string>> members =
      ParseInitialCluster(config.initial_cluster);
  if (!members.ok()) return members.status();
  if (members->size() <= 1 && config.initial_cluster_state == "new") {
    decision.cluster_id = configured != 0 ? configured : RandomNonZeroId();
    decision.bootstrap_conf = replication::ConfState{{NodeId(node)}, {}};
    SESSIOND_RETURN_IF_ERROR(WriteIdentity(db, decision.cluster_id, node));
    return decision;
  }

  if (config.initial_cluster_state == "new") {
    decision.cluster_id = configured;
    SESSIOND_RETURN_IF_ERROR(AskPeers(
        hello, options,
        [&](const std::map<uint64_t, absl::StatusOr<HelloResponse>>& answers)
            -> absl::StatusOr<bool> {
          // Safe to bootstrap when a member of this cluster that runs says
          // this node never ran, or when every other initial member answers
          // and none has bootstrapped yet (a brand-new cluster). Not on
          // fewer answers: two wiped members of three, with the third down,
          // would look just like a new cluster.
          bool serving_member = false;
          size_t fresh = 0;
          for (const auto& [peer, answer] : answers) {
            if (!answer.ok()) continue;
            if (!answer->bootstrapped()) ++fresh;
            if (answer->cluster_id() == configured && answer->serving()) {
              serving_member = true;
              // A cluster forced into a new life (a rebuild from one
              // member or a backup) is not what --initial_cluster
              // describes: bootstrapped from the flags at the first life's
              // epoch, this node and another started so would elect each
              // other, a second cluster with an empty table.
              if (answer->cluster_epoch() != 0) {
                return NeedsAnOperator(
                    absl::FailedPreconditionError(absl::StrCat(
                        "cluster ", Hex(configured),
                        " was rebuilt since --initial_cluster described it "
                        "(peer ",
                        peer, " serves a later life of it): start node ", node,
                        " with --initial_cluster_state=existing, once it is "
                        "added "
                        "(AdminService.AddMember node_id=",
                        node, ")")));
              }
              // A running cluster that no longer lists this node (it was
              // removed before it ever ran) would never send it a byte:
              // bootstrapped from the flags, it would campaign alone.
              if (!InMembership(*answer, node)) {
                return absl::FailedPreconditionError(
                    absl::StrCat("node ", node, " is not a member of cluster ",
                                 Hex(configured), " any more (peer ", peer,
                                 " serves it without this node): add it again "
                                 "(AdminService.AddMember node_id=",
                                 node,
                                 " with its peer address), then start it with "
                                 "--initial_cluster_state=existing"));
              }
            }
            if (answer->cluster_id() != 0 &&
                answer->cluster_id() != configured) {
              return absl::FailedPreconditionError(
                  absl::StrCat("peer ", peer, " belongs to cluster ",
                               Hex(answer->cluster_id()),
                               ", these flags describe ", Hex(configured),
                               ": check --cluster_token, --cluster_id and "
                               "--initial_cluster on every member"));
            }
            const char* evidence = EvidenceItRan(*answer, configured, node);
            if (evidence != nullptr) {
              return absl::FailedPreconditionError(absl::StrCat(
                  "refusing to bootstrap node ", node,
                  " on an empty data dir: cluster ", Hex(configured),
                  " already ran it as a member (peer ", peer, " ", evidence,
                  "); ", RejoinAdvice(config, node)));
            }
          }
          return serving_member || fresh == answers.size();
        },
        "every other initial member to answer (or one that already serves) "
        "before bootstrapping"));
    replication::ConfState conf;
    for (const auto& [id, address] : *members)
      conf.voters.push_back(NodeId(id));
    decision.bootstrap_conf = std::move(conf);
    SESSIOND_RETURN_IF_ERROR(WriteIdentity(db, decision.cluster_id, node));
    return decision;
  }

  // Joining a running cluster.
  SESSIOND_RETURN_IF_ERROR(AskPeers(
      hello, options,
      [&](const std::map<uint64_t, absl::StatusOr<HelloResponse>>& answers)
          -> absl::StatusOr<bool> {
        // Members of two lives of the cluster answer (one was forced into a
        // cluster of its own, and an old member still runs on its old data
        // dir): which one to join is the operator's call, not the first
        // answer's.
        std::map<uint64_t, std::vector<uint64_t>> peers_by_epoch;
        for (const auto& [peer, answer] : answers) {
          if (answer.ok() && answer->serving() && answer->cluster_id() != 0) {
            peers_by_epoch[answer->cluster_epoch()].push_back(peer);
          }
        }
        if (peers_by_epoch.size() > 1) {
          std::vector<std::string> lives;
          for (const auto& [epoch, peers] : peers_by_epoch) {
            lives.push_back(absl::StrCat("epoch ", Hex(epoch), " (nodes ",
                                         absl::StrJoin(peers, ", "), ")"));
          }
          return absl::FailedPreconditionError(absl::StrCat(
              "refusing to join: the members that answer belong to different "
              "lives of the cluster (",
              absl::StrJoin(lives, "; "),
              "): one was forced into a cluster of its own with "
              "--force_new_cluster while the others still run on their old "
              "data dirs. Stop the members that are not in the rebuilt "
              "cluster, then start this node again"));
        }
        // A voter that took part in Raft and died before its start
        // announcement committed: its votes and acknowledgements count in
        // the cluster's majorities, so it must not come back empty. Only
        // the members it talked to (its leader then) know: every answer is
        // asked. (A member removed and added again is a learner, and may.)
        for (const auto& [peer, answer] : answers) {
          if (answer.ok() && answer->cluster_id() != 0 &&
              IsVoter(*answer, node) && answer->heard_from_caller()) {
            return absl::FailedPreconditionError(
                absl::StrCat("refusing to join as node ", node,
                             " on an empty data dir: it is a voter of cluster ",
                             Hex(answer->cluster_id()), " and peer ", peer,
                             " received Raft messages from it; ",
                             RejoinAdvice(config, node)));
          }
        }
        // Every serving answer is weighed before one is taken: a member
        // that lags (it has the AddMember, not the start announcement)
        // answering first made a voter that had run come back empty.
        const HelloResponse* joined = nullptr;
        uint64_t first_serving = 0;
        for (const auto& [peer, answer] : answers) {
          if (!answer.ok() || !answer->serving() || answer->cluster_id() == 0) {
            continue;
          }
          if (first_serving == 0) first_serving = peer;
          if (!config.cluster_id.empty() &&
              answer->cluster_id() != configured) {
            return absl::FailedPreconditionError(
                absl::StrCat("peer ", peer, " belongs to cluster ",
                             Hex(answer->cluster_id()), ", not ",
                             Hex(configured), " (--cluster_id)"));
          }
          if (KnownAndStarted(*answer, node)) {
            return absl::FailedPreconditionError(
                absl::StrCat("refusing to join as node ", node,
                             " on an empty data dir: "
                             "cluster ",
                             Hex(answer->cluster_id()),
                             " already ran it "
                             "(peer ",
                             peer, " says so); ", RejoinAdvice(config, node)));
          }
          // One that has not applied the AddMember yet may lag: another
          // answer may list it.
          if (joined == nullptr && InMembership(*answer, node)) {
            joined = &*answer;
          }
        }
        if (first_serving == 0) return false;
        if (joined == nullptr) {
          const HelloResponse& first = *answers.at(first_serving);
          return absl::FailedPreconditionError(absl::StrCat(
              "node ", node, " is not a member of cluster ",
              Hex(first.cluster_id()), " (peer ", first_serving,
              "): add it first (AdminService.AddMember node_id=", node,
              " with its peer address), then start it"));
        }
        decision.cluster_id = joined->cluster_id();
        // The life of the cluster it joins (a rebuilt one has its own):
        // its traffic carries it.
        decision.cluster_epoch = joined->cluster_epoch();
        return true;
      },
      "a running member to answer (joining an existing cluster)"));
  decision.joined_existing = true;
  SESSIOND_RETURN_IF_ERROR(
      WriteIdentity(db, decision.cluster_id, node, decision.cluster_epoch));
  return decision;
}

}  // namespace sessiond::server
