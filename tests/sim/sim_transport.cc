// Copyright sessiond authors. Licensed under the Apache License 2.0.
#include "tests/sim/sim_transport.h"

#include <algorithm>
#include <string>

#include "absl/strings/str_cat.h"

namespace sessiond::sim {

using replication::HardState;
using replication::Message;
using replication::MessageType;

SimTransport::SimTransport(NodeId node, const SimDisk* disk, Network* network,
                           Invariants* invariants, const uint64_t* now,
                           bool check_durable_promises)
    : node_(node),
      disk_(disk),
      network_(network),
      invariants_(invariants),
      now_(now),
      check_durable_promises_(check_durable_promises) {}

void SimTransport::Fail(const std::string& what) {
  invariants_->Fail(
      absl::StrCat(what, " [node ", node_.value(), " step ", *now_, "]"));
}

void SimTransport::Received(const Message& m) {
  auto note = [&](LogIndex index, Term term) {
    if (index == LogIndex(0)) return;
    auto [it, inserted] =
        leader_log_.try_emplace(index.value(), std::make_pair(m.term, term));
    if (!inserted && it->second.first <= m.term) {
      it->second = std::make_pair(m.term, term);
    }
  };
  if (m.type == MessageType::kAppend) {
    note(m.index, m.log_term);
    if (!m.entries.empty()) {
      note(m.entries.back().index, m.entries.back().term);
    }
  } else if (m.type == MessageType::kSnapshot && m.snapshot) {
    note(m.snapshot->meta.index, m.snapshot->meta.term);
  }
}

void SimTransport::CheckDurablePromise(const Message& m) {
  const replication::MemoryLogStore& durable = disk_->durable();
  if (m.type == MessageType::kVoteResponse && !m.reject) {
    const HardState hs = durable.InitialHardState();
    if (hs.term < m.term || (hs.term == m.term && hs.vote != m.to)) {
      Fail(absl::StrCat("vote for node ", m.to.value(), " in term ",
                        m.term.value(),
                        " left before it was durable (durable term ",
                        hs.term.value(), " vote ", hs.vote.value(), ")"));
    }
    return;
  }
  if (m.type == MessageType::kVote) {
    // A candidate's own vote must be on disk before it asks for others'.
    const HardState hs = durable.InitialHardState();
    if (hs.term < m.term || (hs.term == m.term && hs.vote != node_)) {
      Fail(absl::StrCat("vote request for term ", m.term.value(),
                        " left before the candidate's own vote was durable "
                        "(durable term ",
                        hs.term.value(), " vote ", hs.vote.value(), ")"));
    }
    return;
  }
  // Index 0: the answer to a message from a stale term, which acknowledges
  // nothing.
  if (m.type != MessageType::kAppendResponse || m.reject ||
      m.index == LogIndex(0)) {
    return;
  }
  const HardState hs = durable.InitialHardState();
  if (hs.term < m.term) {
    Fail(absl::StrCat("append acknowledgement in term ", m.term.value(),
                      " left before that term was durable (durable term ",
                      hs.term.value(), ")"));
    return;
  }
  if (hs.term > m.term) return;
  const LogIndex last = durable.LastIndex();
  if (m.index > last) {
    Fail(absl::StrCat("append acknowledgement through ", m.index.value(),
                      " left before it was durable (durable last index ",
                      last.value(), ")"));
    return;
  }
  auto it = leader_log_.find(m.index.value());
  if (it == leader_log_.end() || it->second.first != m.term) return;
  if (m.index < durable.FirstIndex()) return;  // compacted: committed
  const Term expected = it->second.second;
  const Term term = durable.TermAt(m.index).value();
  if (term != expected) {
    Fail(absl::StrCat("append acknowledgement through ", m.index.value(),
                      " (term ", expected.value(),
                      " in the leader's log) left while the durable log holds "
                      "term ",
                      term.value(), " there"));
  }
}

void SimTransport::Send(std::vector<Message> messages) {
  for (const Message& m : messages) {
    if (!invariants_->ok()) return;
    if (m.from != node_) {
      Fail(absl::StrCat("message from ", m.from.value(), " sent by node ",
                        node_.value()));
      return;
    }
    if (m.to == node_) {
      Fail(absl::StrCat(MessageTypeName(m.type), " addressed to itself"));
      return;
    }
    if (check_durable_promises_) CheckDurablePromise(m);
    if (m.type == MessageType::kAppendResponse && m.index > LogIndex(0)) {
      if (!m.reject && m.term >= acked_term_) {
        if (m.term > acked_term_) acked_through_ = LogIndex(0);
        acked_term_ = m.term;
        acked_through_ = std::max(acked_through_, m.index);
      } else if (m.reject && m.term == acked_term_ &&
                 m.index <= acked_through_) {
        Fail(absl::StrCat("rejects an append after index ", m.index.value(),
                          " in term ", m.term.value(),
                          " having acknowledged entries through ",
                          acked_through_.value(),
                          " in that term: it forgot what it acknowledged"));
        return;
      }
    }
    if (m.type == MessageType::kAppend && !m.entries.empty()) {
      std::optional<Term> prev = m.log_term;
      for (const replication::Entry& e : m.entries) {
        invariants_->CheckLogEntry(node_, e, prev, "append message");
        prev = e.term;
      }
    }
    network_->Send(m, *now_);
  }
}

}  // namespace sessiond::sim
