// Copyright sessiond authors. Licensed under the Apache License 2.0.
#include "tests/sim/invariants.h"

#include <algorithm>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"

namespace sessiond::sim {

using replication::ConfChange;
using replication::ConfChangeType;
using replication::ConfState;
using replication::Entry;
using replication::EntryType;
using replication::Role;

uint64_t Fnv64(absl::string_view data, uint64_t h) {
  for (unsigned char c : data) {
    h ^= c;
    h *= 1099511628211ull;
  }
  return h;
}

namespace {

uint64_t MixU64(uint64_t h, uint64_t v) {
  for (int i = 0; i < 8; ++i) {
    h ^= (v >> (8 * i)) & 0xff;
    h *= 1099511628211ull;
  }
  return h;
}

std::string IdList(const std::vector<NodeId>& ids) {
  return absl::StrJoin(ids, ",", [](std::string* out, NodeId id) {
    absl::StrAppend(out, id.value());
  });
}

bool ParseIdList(absl::string_view text, std::vector<NodeId>* out) {
  out->clear();
  if (text.empty()) return true;
  for (absl::string_view part : absl::StrSplit(text, ',')) {
    uint64_t v = 0;
    if (!absl::SimpleAtoi(part, &v) || v == 0) return false;
    out->push_back(NodeId(v));
  }
  return true;
}

void Erase(std::vector<NodeId>* ids, NodeId id) {
  ids->erase(std::remove(ids->begin(), ids->end(), id), ids->end());
}

bool Contains(const std::vector<NodeId>& ids, NodeId id) {
  return std::find(ids.begin(), ids.end(), id) != ids.end();
}

void InsertSorted(std::vector<NodeId>* ids, NodeId id) {
  ids->insert(std::upper_bound(ids->begin(), ids->end(), id), id);
}

}  // namespace

uint64_t EntryHash(const Entry& entry) {
  uint64_t h =
      MixU64(14695981039346656037ull, static_cast<uint64_t>(entry.type));
  return Fnv64(entry.data, h);
}

uint64_t ChainStep(uint64_t prev, const Entry& entry) {
  uint64_t h = MixU64(prev, entry.index.value());
  h = MixU64(h, entry.term.value());
  return MixU64(h, EntryHash(entry));
}

namespace {

// The oracle's own reading of a committed membership change, kept apart
// from replication::ApplyConfChange (which the core and the state machines
// follow) so the invariants do not take the rule they check on trust: a
// change that makes no sense is ignored.
void ModelConfChange(const ConfChange& change, ConfState* conf) {
  const NodeId id = change.node;
  switch (change.type) {
    case ConfChangeType::kAddLearner:
      if (!Contains(conf->voters, id) && !Contains(conf->learners, id)) {
        InsertSorted(&conf->learners, id);
      }
      break;
    case ConfChangeType::kPromoteVoter:
      if (Contains(conf->learners, id)) {
        Erase(&conf->learners, id);
        InsertSorted(&conf->voters, id);
      }
      break;
    case ConfChangeType::kRemoveNode:
      if (Contains(conf->learners, id)) {
        Erase(&conf->learners, id);
      } else if (Contains(conf->voters, id) && conf->voters.size() > 1) {
        Erase(&conf->voters, id);
      }
      break;
  }
}

}  // namespace

std::string DescribeConf(const ConfState& conf) {
  return absl::StrCat("voters{", IdList(conf.voters), "} learners{",
                      IdList(conf.learners), "}");
}

std::string AppliedState::Encode() const {
  return absl::StrCat("applied;", index.value(), ";", term.value(), ";", hash,
                      ";", IdList(conf.voters), ";", IdList(conf.learners));
}

bool AppliedState::Decode(const std::string& data, AppliedState* out) {
  std::vector<absl::string_view> parts = absl::StrSplit(data, ';');
  if (parts.size() != 6 || parts[0] != "applied") return false;
  uint64_t index = 0, term = 0, hash = 0;
  if (!absl::SimpleAtoi(parts[1], &index) ||
      !absl::SimpleAtoi(parts[2], &term) ||
      !absl::SimpleAtoi(parts[3], &hash)) {
    return false;
  }
  AppliedState s;
  s.index = LogIndex(index);
  s.term = Term(term);
  s.hash = hash;
  if (!ParseIdList(parts[4], &s.conf.voters) ||
      !ParseIdList(parts[5], &s.conf.learners)) {
    return false;
  }
  *out = std::move(s);
  return true;
}

Invariants::Invariants(ConfState bootstrap)
    : committed_conf_(std::move(bootstrap)) {}

void Invariants::Fail(std::string what) {
  if (violation_.empty()) violation_ = std::move(what);
}

void Invariants::CheckLogEntry(NodeId node, const Entry& entry,
                               std::optional<Term> prev_term,
                               absl::string_view where) {
  if (entry.index == LogIndex(0) || entry.term == Term(0)) {
    Fail(absl::StrCat("log entry with index or term 0 at node ", node.value(),
                      " (", where, "): index ", entry.index.value(), " term ",
                      entry.term.value()));
    return;
  }
  if (prev_term && *prev_term > entry.term) {
    Fail(absl::StrCat("log matching: node ", node.value(), " (", where,
                      ") holds entry ", entry.index.value(), " of term ",
                      entry.term.value(), " after an entry of term ",
                      prev_term->value(), " (terms must not decrease)"));
    return;
  }
  const uint64_t hash = EntryHash(entry);
  auto [it, inserted] = log_keys_.try_emplace(
      {entry.index.value(), entry.term.value()}, LogKey{hash, prev_term, node});
  if (inserted) return;
  LogKey& key = it->second;
  if (key.hash != hash) {
    Fail(absl::StrCat("log matching: two different entries at index ",
                      entry.index.value(), " term ", entry.term.value(),
                      " (node ", key.first_node.value(), " and node ",
                      node.value(), " via ", where, ")"));
    return;
  }
  if (prev_term) {
    if (!key.prev_term) {
      key.prev_term = prev_term;
    } else if (*key.prev_term != *prev_term) {
      Fail(absl::StrCat(
          "log matching: entry ", entry.index.value(), " term ",
          entry.term.value(), " follows term ", key.prev_term->value(),
          " on node ", key.first_node.value(), " but term ", prev_term->value(),
          " on node ", node.value(), " (", where, ")"));
    }
  }
}

void Invariants::OnCommitted(NodeId node, Term node_term, const Entry& entry) {
  const uint64_t i = entry.index.value();
  const uint64_t hash = EntryHash(entry);
  if (i == 0) {
    Fail(absl::StrCat("node ", node.value(), " committed index 0"));
    return;
  }
  if (i <= committed_.size()) {
    CommittedEntry& c = committed_[i - 1];
    if (c.term != entry.term || c.hash != hash) {
      Fail(absl::StrCat(
          "committed entry changed: index ", i, " was term ", c.term.value(),
          " (reported by node ", c.first_reporter.value(),
          ", committed by term ", c.commit_term.value(), "), node ",
          node.value(), " now reports term ", entry.term.value(),
          c.hash == hash ? " with the same data" : " with different data"));
      return;
    }
    if (node_term < c.commit_term) c.commit_term = node_term;
    return;
  }
  if (i != committed_.size() + 1) {
    Fail(absl::StrCat("node ", node.value(), " committed index ", i,
                      " but the highest index known committed is ",
                      committed_.size(), " (gap)"));
    return;
  }
  committed_.push_back(CommittedEntry{entry.term, hash, node_term, node});
  chain_.push_back(ChainStep(chain_.back(), entry));
  if (entry.type == EntryType::kNormal && !entry.data.empty()) {
    auto [it, inserted] = command_index_.try_emplace(hash, entry.index);
    if (!inserted) {
      Fail(absl::StrCat("command committed twice: index ", it->second.value(),
                        " and index ", i, " (data '", entry.data, "')"));
    }
  }
  if (entry.type == EntryType::kConfChange) {
    ConfChange change;
    if (!replication::DecodeConfChange(entry.data, &change)) {
      Fail(absl::StrCat("committed conf change at ", i, " does not decode"));
      return;
    }
    ModelConfChange(change, &committed_conf_);
    last_conf_change_ = entry.index;
    ++conf_changes_;
  }
}

void Invariants::CheckAppliedState(NodeId node, const AppliedState& state,
                                   absl::string_view where) {
  if (state.index > max_committed()) {
    Fail(absl::StrCat("node ", node.value(), " (", where,
                      ") has applied through ", state.index.value(),
                      " beyond the highest committed index ",
                      max_committed().value()));
    return;
  }
  if (chain_hash(state.index) != state.hash) {
    Fail(absl::StrCat("apply sequence diverged: node ", node.value(), " (",
                      where, ") state at index ", state.index.value(),
                      " differs from the committed record"));
    return;
  }
  if (state.index > LogIndex(0) && committed(state.index).term != state.term) {
    Fail(absl::StrCat("node ", node.value(), " (", where,
                      ") applied state says term ", state.term.value(),
                      " at index ", state.index.value(), ", committed term is ",
                      committed(state.index).term.value()));
  }
}

void Invariants::OnRole(NodeId node, Role role, Term term) {
  if (role != Role::kLeader) return;
  auto [it, inserted] = leader_of_term_.try_emplace(term.value(), node);
  if (!inserted && it->second != node) {
    Fail(absl::StrCat("two leaders in term ", term.value(), ": node ",
                      it->second.value(), " and node ", node.value()));
  }
}

void Invariants::CheckLeaderCompleteness(NodeId node, Term term, LogIndex base,
                                         Term base_term,
                                         const std::vector<ShadowEntry>& log) {
  const uint64_t max = committed_.size();
  if (base.value() >= 1 && base.value() <= max &&
      committed(base).term != base_term) {
    Fail(absl::StrCat("leader completeness: node ", node.value(),
                      " became leader of term ", term.value(),
                      " with a snapshot at ", base.value(), " of term ",
                      base_term.value(), ", committed term there is ",
                      committed(base).term.value()));
    return;
  }
  for (uint64_t i = base.value() + 1; i <= max; ++i) {
    const CommittedEntry& c = committed_[i - 1];
    if (c.commit_term >= term) continue;
    const uint64_t pos = i - base.value() - 1;
    if (pos >= log.size() || log[pos].term != c.term ||
        log[pos].hash != c.hash) {
      Fail(absl::StrCat(
          "leader completeness: node ", node.value(), " became leader of term ",
          term.value(), " without committed entry ", i, " (term ",
          c.term.value(), ", committed by term ", c.commit_term.value(), ")",
          pos >= log.size()
              ? absl::StrCat("; its log ends at ", base.value() + log.size())
              : absl::StrCat("; it holds term ", log[pos].term.value(),
                             " there")));
      return;
    }
  }
}

void Invariants::OnAcked(NodeId node, LogIndex index, const std::string& data) {
  Entry entry;
  entry.data = data;
  const uint64_t hash = EntryHash(entry);
  auto [it, inserted] = acked_.try_emplace(index, hash);
  if (inserted) ack_order_.push_back(index);
  if (!inserted && it->second != hash) {
    Fail(absl::StrCat("two different commands acknowledged at index ",
                      index.value(), " (second by node ", node.value(), ")"));
  }
}

void Invariants::OnReadCompleted(NodeId node, LogIndex required,
                                 LogIndex applied) {
  ++reads_checked_;
  newest_read_seen_ = std::max(newest_read_seen_, applied);
  if (applied < required) {
    Fail(absl::StrCat("stale read: node ", node.value(),
                      " completed a read with its state applied through ",
                      applied.value(), " but index ", required.value(),
                      " was already committed when the read began"));
  }
}

LogIndex Invariants::local_read_floor() const {
  const LogIndex newest_acked =
      acked_.empty() ? LogIndex(0) : acked_.rbegin()->first;
  return std::max(newest_acked, newest_read_seen_);
}

void Invariants::OnLocalRead(NodeId node, LogIndex required, LogIndex applied) {
  ++local_reads_checked_;
  if (applied < required) {
    Fail(absl::StrCat("stale local read: leader ", node.value(),
                      " answered from its state applied through ",
                      applied.value(), " but index ", required.value(),
                      " was already acknowledged, or seen by a completed "
                      "read, when the read began"));
  }
  newest_read_seen_ = std::max(newest_read_seen_, applied);
}

}  // namespace sessiond::sim
