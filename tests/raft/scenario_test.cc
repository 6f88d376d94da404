// Copyright sessiond authors. Licensed under the Apache License 2.0.
//
// Data-driven scenario tests for the Raft core, after etcd-io/raft's
// interaction tests. Each file in tests/raft/scenarios/ is a script of
// commands, each followed by "----" and the expected output, ended by a
// blank line:
//
//   # comment
//   add-nodes 3
//   ----
//   ok
//
// SESSIOND_REWRITE=1 regenerates the expected output blocks (review the
// diff before committing it).
//
// Commands (node ids are numbers):
//   add-nodes N [prevote=false] [checkquorum=false] [election=T]
//             [heartbeat=T] [lease] [unsafe-commit] [inflight=N]
//             [max-msg-bytes=N]        a cluster of voters 1..N
//   add-node ID                        a node with empty membership
//   set-log ID term=T commit=C T1 T2.. replace ID's durable log by entries of
//                                      these terms (restarts it)
//   campaign ID | tick ID N | tick-all N   (ticks without delivering)
//   run N                              N times: tick every node, stabilize
//   propose ID DATA | transfer ID TARGET | read-index ID CTX
//   conf-change ID add-learner|promote|remove NODE
//   compact ID INDEX                   compact ID's log through INDEX
//   deliver                            one round; prints the messages
//   stabilize                          deliver until quiet; prints a count
//   partition A B | C D | heal | cut A B | drop-type TYPE
//   crash ID | restart ID
//   log ID | status
// Every command also prints the events it caused (role changes, reads).
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "gtest/gtest.h"
#include "tests/raft/test_network.h"

namespace sessiond::replication {
namespace {

using testing::TestNetwork;

struct Block {
  std::vector<std::string> preamble;  // comments and blank lines before
  std::string command;
  std::string expected;
};

std::vector<Block> ParseScript(const std::string& text, std::string* trailer) {
  std::vector<Block> blocks;
  std::vector<std::string> lines = absl::StrSplit(text, '\n');
  size_t i = 0;
  std::vector<std::string> preamble;
  while (i < lines.size()) {
    const std::string& line = lines[i];
    if (line.empty() || line[0] == '#') {
      preamble.push_back(line);
      ++i;
      continue;
    }
    Block b;
    b.preamble = std::move(preamble);
    preamble.clear();
    b.command = line;
    ++i;
    if (i < lines.size() && lines[i] == "----") ++i;
    std::vector<std::string> out;
    while (i < lines.size() && !lines[i].empty()) out.push_back(lines[i++]);
    b.expected = absl::StrJoin(out, "\n");
    blocks.push_back(std::move(b));
  }
  // Drop the trailing empty line of a file ending in "\n".
  while (!preamble.empty() && preamble.back().empty()) preamble.pop_back();
  *trailer = absl::StrJoin(preamble, "\n");
  return blocks;
}

uint64_t Num(const std::string& s) {
  uint64_t v = 0;
  EXPECT_TRUE(absl::SimpleAtoi(s, &v)) << "not a number: " << s;
  return v;
}

class Interpreter {
 public:
  std::string Run(const std::string& command) {
    std::vector<std::string> args =
        absl::StrSplit(command, ' ', absl::SkipEmpty());
    std::vector<std::string> out;
    const std::string& cmd = args[0];
    if (cmd == "add-nodes") {
      AddNodes(args);
      out.push_back("ok");
    } else if (!net_) {
      return "error: no cluster (add-nodes first)";
    } else if (cmd == "add-node") {
      net_->AddJoiningNode(Num(args[1]));
      out.push_back("ok");
    } else if (cmd == "set-log") {
      Term term;
      LogIndex commit;
      std::vector<uint64_t> terms;
      for (size_t i = 2; i < args.size(); ++i) {
        absl::string_view a = args[i];
        if (absl::ConsumePrefix(&a, "term=")) {
          term = Term(Num(std::string(a)));
        } else if (absl::ConsumePrefix(&a, "commit=")) {
          commit = LogIndex(Num(std::string(a)));
        } else {
          terms.push_back(Num(args[i]));
        }
      }
      net_->SetLog(Num(args[1]), term, commit, terms);
      out.push_back("ok");
    } else if (cmd == "campaign") {
      net_->core(Num(args[1])).Campaign();
      net_->ProcessReadies();
    } else if (cmd == "tick") {
      net_->Tick(Num(args[1]), static_cast<int>(Num(args[2])));
    } else if (cmd == "tick-all") {
      net_->TickAll(static_cast<int>(Num(args[1])));
    } else if (cmd == "run") {
      size_t delivered = 0;
      for (uint64_t i = 0; i < Num(args[1]); ++i) {
        net_->TickAll(1);
        delivered += net_->Stabilize();
      }
      out.push_back(absl::StrCat("delivered ", delivered, " messages"));
    } else if (cmd == "propose") {
      auto r = net_->core(Num(args[1])).Propose({args[2]});
      out.push_back(r.ok() ? absl::StrCat("index ", r->value())
                           : r.status().ToString());
      net_->ProcessReadies();
    } else if (cmd == "transfer") {
      absl::Status st =
          net_->core(Num(args[1])).TransferLeadership(NodeId(Num(args[2])));
      out.push_back(st.ok() ? "ok" : st.ToString());
      net_->ProcessReadies();
    } else if (cmd == "read-index") {
      absl::Status st = net_->core(Num(args[1])).ReadIndex(args[2]);
      out.push_back(st.ok() ? "ok" : st.ToString());
      net_->ProcessReadies();
    } else if (cmd == "conf-change") {
      ConfChange cc;
      cc.node = NodeId(Num(args[3]));
      if (args[2] == "add-learner") {
        cc.type = ConfChangeType::kAddLearner;
      } else if (args[2] == "promote") {
        cc.type = ConfChangeType::kPromoteVoter;
      } else {
        cc.type = ConfChangeType::kRemoveNode;
      }
      auto r = net_->core(Num(args[1])).ProposeConfChange(cc);
      out.push_back(r.ok() ? absl::StrCat("index ", r->value())
                           : r.status().ToString());
      net_->ProcessReadies();
    } else if (cmd == "compact") {
      testing::TestNode& n = net_->node(Num(args[1]));
      Snapshot snap;
      snap.meta.index = LogIndex(Num(args[2]));
      snap.meta.term = *n.store->TermAt(snap.meta.index);
      snap.meta.conf_state = n.core->status().conf_state;
      snap.data = absl::StrCat("image@", snap.meta.index.value());
      absl::Status st = n.store->Compact(snap);
      if (st.ok()) n.core->OnCompacted(snap.meta.index);
      out.push_back(st.ok() ? "ok" : st.ToString());
    } else if (cmd == "deliver") {
      for (const Message& m : net_->DeliverRound()) {
        out.push_back(testing::DescribeMessage(m));
      }
    } else if (cmd == "stabilize") {
      out.push_back(absl::StrCat("delivered ", net_->Stabilize(), " messages"));
    } else if (cmd == "partition") {
      std::vector<std::vector<uint64_t>> groups(1);
      for (size_t i = 1; i < args.size(); ++i) {
        if (args[i] == "|") {
          groups.emplace_back();
        } else {
          groups.back().push_back(Num(args[i]));
        }
      }
      net_->Partition(groups);
      out.push_back("ok");
    } else if (cmd == "heal") {
      net_->Heal();
      out.push_back("ok");
    } else if (cmd == "cut") {
      net_->Cut(Num(args[1]), Num(args[2]));
      out.push_back("ok");
    } else if (cmd == "drop-type") {
      bool found = false;
      for (int t = 0; t <= static_cast<int>(MessageType::kReadIndexResponse);
           ++t) {
        if (args[1] == MessageTypeName(static_cast<MessageType>(t))) {
          net_->DropType(static_cast<MessageType>(t));
          found = true;
        }
      }
      out.push_back(found ? "ok" : "error: unknown type");
    } else if (cmd == "crash") {
      net_->Crash(Num(args[1]));
      out.push_back("ok");
    } else if (cmd == "restart") {
      net_->Restart(Num(args[1]));
      net_->ProcessReadies();
    } else if (cmd == "log") {
      const uint64_t id = Num(args[1]);
      testing::TestNode& n = net_->node(id);
      std::vector<std::string> terms;
      for (const Entry& e : net_->StoredLog(id)) {
        terms.push_back(absl::StrCat(e.index.value(), "/", e.term.value(),
                                     e.type == EntryType::kConfChange ? "(conf)"
                                     : e.data.empty()
                                         ? ""
                                         : absl::StrCat(":", e.data)));
      }
      out.push_back(absl::StrCat("first=", n.store->FirstIndex().value(),
                                 " entries: ", absl::StrJoin(terms, " ")));
      out.push_back(absl::StrCat("applied: ", absl::StrJoin(n.applied, " ")));
    } else if (cmd == "status") {
      for (auto& [id, n] : net_->nodes()) {
        if (!n.core) {
          out.push_back(absl::StrCat(id.value(), ": crashed"));
          continue;
        }
        RaftStatus s = n.core->status();
        std::string line = absl::StrCat(
            id.value(), ": ", RoleName(s.role), " term=", s.term.value(),
            " vote=", s.vote.value(), " lead=", s.leader.value(),
            " commit=", s.commit.value(), " applied=", s.applied.value(),
            " last=", s.last_index.value());
        if (s.role == Role::kLeader) {
          std::vector<std::string> prs;
          for (const auto& [node, state] : s.progress_state) {
            prs.push_back(absl::StrCat(node.value(), ":", state, "@",
                                       s.match.at(node).value()));
          }
          absl::StrAppend(&line, " progress=", absl::StrJoin(prs, ","));
        }
        out.push_back(line);
      }
    } else {
      return absl::StrCat("error: unknown command ", cmd);
    }
    for (std::string& e : net_->TakeEvents()) out.push_back(std::move(e));
    if (out.empty()) out.push_back("ok");
    return absl::StrJoin(out, "\n");
  }

 private:
  void AddNodes(const std::vector<std::string>& args) {
    const uint64_t n = Num(args[1]);
    RaftConfig base;
    for (size_t i = 2; i < args.size(); ++i) {
      absl::string_view a = args[i];
      if (a == "prevote=false") {
        base.pre_vote = false;
      } else if (a == "checkquorum=false") {
        base.check_quorum = false;
      } else if (a == "lease") {
        base.read_only_mode = ReadOnlyMode::kLeaseBased;
      } else if (a == "unsafe-commit") {
        base.unsafe_commit_previous_term_for_test = true;
      } else if (absl::ConsumePrefix(&a, "election=")) {
        base.election_ticks = static_cast<int>(Num(std::string(a)));
      } else if (absl::ConsumePrefix(&a, "heartbeat=")) {
        base.heartbeat_ticks = static_cast<int>(Num(std::string(a)));
      } else if (absl::ConsumePrefix(&a, "inflight=")) {
        base.max_inflight_messages = static_cast<uint32_t>(Num(std::string(a)));
      } else if (absl::ConsumePrefix(&a, "max-msg-bytes=")) {
        base.max_message_bytes = Num(std::string(a));
      } else {
        ADD_FAILURE() << "unknown add-nodes option " << a;
      }
    }
    std::vector<uint64_t> ids;
    for (uint64_t id = 1; id <= n; ++id) ids.push_back(id);
    net_ = std::make_unique<TestNetwork>(ids, [base](RaftConfig& c) {
      const NodeId id = c.id;
      c = base;
      c.id = id;
    });
  }

  std::unique_ptr<TestNetwork> net_;
};

std::vector<std::string> ScenarioFiles() {
  std::vector<std::string> files;
  for (const auto& entry : std::filesystem::directory_iterator(SCENARIO_DIR)) {
    if (entry.path().extension() == ".txt") files.push_back(entry.path());
  }
  std::sort(files.begin(), files.end());
  return files;
}

class ScenarioTest : public ::testing::TestWithParam<std::string> {};

TEST_P(ScenarioTest, MatchesExpectedOutput) {
  const std::string path = GetParam();
  std::ifstream in(path);
  ASSERT_TRUE(in.good()) << path;
  std::stringstream buf;
  buf << in.rdbuf();
  std::string trailer;
  std::vector<Block> blocks = ParseScript(buf.str(), &trailer);
  ASSERT_FALSE(blocks.empty()) << path;
  const char* rewrite_env = std::getenv("SESSIOND_REWRITE");
  const bool rewrite =
      rewrite_env != nullptr && std::string(rewrite_env) == "1";
  Interpreter interp;
  std::string rewritten;
  for (const Block& b : blocks) {
    const std::string actual = interp.Run(b.command);
    if (!rewrite) {
      EXPECT_EQ(actual, b.expected)
          << path << ": command `" << b.command << "`";
    }
    for (const std::string& p : b.preamble)
      absl::StrAppend(&rewritten, p, "\n");
    absl::StrAppend(&rewritten, b.command, "\n----\n", actual, "\n");
  }
  if (!trailer.empty()) absl::StrAppend(&rewritten, trailer, "\n");
  if (rewrite) {
    std::ofstream out(path);
    out << rewritten;
  }
}

INSTANTIATE_TEST_SUITE_P(Scenarios, ScenarioTest,
                         ::testing::ValuesIn(ScenarioFiles()),
                         [](const ::testing::TestParamInfo<std::string>& info) {
                           std::string name =
                               std::filesystem::path(info.param).stem();
                           for (char& c : name) {
                             if (!isalnum(static_cast<unsigned char>(c)))
                               c = '_';
                           }
                           return name;
                         });

}  // namespace
}  // namespace sessiond::replication
