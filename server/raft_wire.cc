// Copyright sessiond authors. Licensed under the Apache License 2.0.
#include "server/raft_wire.h"

#include <string>
#include <utility>

#include "absl/strings/str_cat.h"

namespace sessiond::server {

using replication::Entry;
using replication::EntryType;
using replication::Message;
using replication::MessageType;
using sessiond::v1::internal::RaftMessage;

void ToWire(const Message& m, RaftMessage* out) {
  out->set_type(static_cast<uint32_t>(m.type));
  out->set_from(m.from.value());
  out->set_to(m.to.value());
  out->set_term(m.term.value());
  out->set_index(m.index.value());
  out->set_log_term(m.log_term.value());
  out->mutable_entries()->Reserve(static_cast<int>(m.entries.size()));
  for (const Entry& e : m.entries) {
    auto* w = out->add_entries();
    w->set_term(e.term.value());
    w->set_index(e.index.value());
    w->set_type(static_cast<uint32_t>(e.type));
    w->set_data(e.data);
  }
  out->set_commit(m.commit.value());
  out->set_leader_commit(m.leader_commit.value());
  out->set_leader_quiet_us(m.leader_quiet_us);
  out->set_reject(m.reject);
  out->set_reject_hint(m.reject_hint.value());
  out->set_hint_term(m.hint_term.value());
  if (m.snapshot) {
    auto* meta = out->mutable_snapshot();
    meta->set_index(m.snapshot->meta.index.value());
    meta->set_term(m.snapshot->meta.term.value());
    for (NodeId v : m.snapshot->meta.conf_state.voters) {
      meta->add_voters(v.value());
    }
    for (NodeId l : m.snapshot->meta.conf_state.learners) {
      meta->add_learners(l.value());
    }
  }
  out->set_context(m.context);
}

absl::StatusOr<Message> FromWire(RaftMessage&& w) {
  if (w.type() > static_cast<uint32_t>(MessageType::kReadIndexResponse)) {
    return absl::InvalidArgumentError(
        absl::StrCat("unknown Raft message type ", w.type()));
  }
  Message m;
  m.type = static_cast<MessageType>(w.type());
  m.from = NodeId(w.from());
  m.to = NodeId(w.to());
  m.term = Term(w.term());
  m.index = LogIndex(w.index());
  m.log_term = Term(w.log_term());
  m.entries.reserve(w.entries_size());
  for (auto& we : *w.mutable_entries()) {
    if (we.type() > static_cast<uint32_t>(EntryType::kConfChange)) {
      return absl::InvalidArgumentError(
          absl::StrCat("unknown entry type ", we.type()));
    }
    Entry e;
    e.term = Term(we.term());
    e.index = LogIndex(we.index());
    e.type = static_cast<EntryType>(we.type());
    e.data = std::move(*we.mutable_data());
    m.entries.push_back(std::move(e));
  }
  m.commit = LogIndex(w.commit());
  m.leader_commit = LogIndex(w.leader_commit());
  m.leader_quiet_us = w.leader_quiet_us();
  m.reject = w.reject();
  m.reject_hint = LogIndex(w.reject_hint());
  m.hint_term = Term(w.hint_term());
  if (w.has_snapshot()) {
    replication::Snapshot snapshot;
    snapshot.meta.index = LogIndex(w.snapshot().index());
    snapshot.meta.term = Term(w.snapshot().term());
    for (uint64_t v : w.snapshot().voters()) {
      snapshot.meta.conf_state.voters.push_back(NodeId(v));
    }
    for (uint64_t l : w.snapshot().learners()) {
      snapshot.meta.conf_state.learners.push_back(NodeId(l));
    }
    m.snapshot = std::move(snapshot);
  }
  m.context = std::move(*w.mutable_context());
  return m;
}

}  // namespace sessiond::server
