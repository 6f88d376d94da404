// Copyright sessiond authors. Licensed under the Apache License 2.0.
#include "storage/keys.h"

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace sessiond::storage {

using replication::ConfState;
using replication::Entry;
using replication::EntryType;
using replication::HardState;
using replication::SnapshotMeta;

std::string EncodeFixed64BE(uint64_t value) {
  std::string out(8, '\0');
  for (int i = 7; i >= 0; --i) {
    out[i] = static_cast<char>(value & 0xff);
    value >>= 8;
  }
  return out;
}

uint64_t DecodeFixed64BE(std::string_view bytes) {
  uint64_t value = 0;
  for (int i = 0; i < 8; ++i) {
    value = (value << 8) | static_cast<uint8_t>(bytes[i]);
  }
  return value;
}

namespace {

void PutFixed32BE(std::string* out, uint32_t value) {
  for (int i = 3; i >= 0; --i) {
    out->push_back(static_cast<char>((value >> (8 * i)) & 0xff));
  }
}

uint32_t DecodeFixed32BE(std::string_view bytes) {
  uint32_t value = 0;
  for (int i = 0; i < 4; ++i) {
    value = (value << 8) | static_cast<uint8_t>(bytes[i]);
  }
  return value;
}

// Reads a ConfState from the front of `*in`, advancing it.
absl::StatusOr<ConfState> ConsumeConfState(std::string_view* in) {
  ConfState conf_state;
  for (std::vector<NodeId>* list : {&conf_state.voters, &conf_state.learners}) {
    if (in->size() < 4) return absl::DataLossError("truncated conf state");
    const uint32_t count = DecodeFixed32BE(*in);
    in->remove_prefix(4);
    if (in->size() / 8 < count) {
      return absl::DataLossError("truncated conf state");
    }
    list->reserve(count);
    for (uint32_t i = 0; i < count; ++i) {
      list->push_back(NodeId(DecodeFixed64BE(*in)));
      in->remove_prefix(8);
    }
  }
  return conf_state;
}

}  // namespace

std::string LogKey(LogIndex index) { return EncodeFixed64BE(index.value()); }

absl::StatusOr<LogIndex> DecodeLogKey(std::string_view key) {
  if (key.size() != 8) {
    return absl::DataLossError(
        absl::StrCat("raft_log key of ", key.size(), " bytes, want 8"));
  }
  return LogIndex(DecodeFixed64BE(key));
}

std::string EncodeEntry(const Entry& entry) {
  std::string out;
  out.reserve(9 + entry.data.size());
  out = EncodeFixed64BE(entry.term.value());
  out.push_back(static_cast<char>(entry.type));
  out.append(entry.data);
  return out;
}

absl::StatusOr<Entry> DecodeEntry(LogIndex index, std::string_view value) {
  if (value.size() < 9) {
    return absl::DataLossError(absl::StrCat("raft_log entry ", index.value(),
                                            " is truncated (", value.size(),
                                            " bytes)"));
  }
  const uint8_t type = static_cast<uint8_t>(value[8]);
  if (type > static_cast<uint8_t>(EntryType::kConfChange)) {
    return absl::DataLossError(absl::StrCat("raft_log entry ", index.value(),
                                            " has unknown type ", type));
  }
  Entry entry;
  entry.term = Term(DecodeFixed64BE(value));
  entry.index = index;
  entry.type = static_cast<EntryType>(type);
  entry.data.assign(value.data() + 9, value.size() - 9);
  return entry;
}

std::string EncodeHardState(const HardState& hard_state) {
  return absl::StrCat(EncodeFixed64BE(hard_state.term.value()),
                      EncodeFixed64BE(hard_state.vote.value()),
                      EncodeFixed64BE(hard_state.commit.value()));
}

absl::StatusOr<HardState> DecodeHardState(std::string_view value) {
  if (value.size() != 24) {
    return absl::DataLossError(
        absl::StrCat("hard state of ", value.size(), " bytes, want 24"));
  }
  HardState hard_state;
  hard_state.term = Term(DecodeFixed64BE(value));
  hard_state.vote = NodeId(DecodeFixed64BE(value.substr(8)));
  hard_state.commit = LogIndex(DecodeFixed64BE(value.substr(16)));
  return hard_state;
}

std::string EncodeConfState(const ConfState& conf_state) {
  std::string out;
  for (const std::vector<NodeId>* list :
       {&conf_state.voters, &conf_state.learners}) {
    PutFixed32BE(&out, static_cast<uint32_t>(list->size()));
    for (NodeId id : *list) out.append(EncodeFixed64BE(id.value()));
  }
  return out;
}

absl::StatusOr<ConfState> DecodeConfState(std::string_view value) {
  absl::StatusOr<ConfState> conf_state = ConsumeConfState(&value);
  if (conf_state.ok() && !value.empty()) {
    return absl::DataLossError("trailing bytes after conf state");
  }
  return conf_state;
}

std::string EncodeIndexTerm(LogIndex index, Term term) {
  return absl::StrCat(EncodeFixed64BE(index.value()),
                      EncodeFixed64BE(term.value()));
}

absl::StatusOr<std::pair<LogIndex, Term>> DecodeIndexTerm(
    std::string_view value) {
  if (value.size() != 16) {
    return absl::DataLossError(
        absl::StrCat("index and term: ", value.size(), " bytes, want 16"));
  }
  return std::make_pair(LogIndex(DecodeFixed64BE(value)),
                        Term(DecodeFixed64BE(value.substr(8))));
}

std::string EncodeSnapshotMeta(const SnapshotMeta& meta) {
  return absl::StrCat(EncodeFixed64BE(meta.index.value()),
                      EncodeFixed64BE(meta.term.value()),
                      EncodeConfState(meta.conf_state));
}

absl::StatusOr<SnapshotMeta> DecodeSnapshotMeta(std::string_view value) {
  if (value.size() < 16) {
    return absl::DataLossError("truncated snapshot meta");
  }
  SnapshotMeta meta;
  meta.index = LogIndex(DecodeFixed64BE(value));
  meta.term = Term(DecodeFixed64BE(value.substr(8)));
  value.remove_prefix(16);
  absl::StatusOr<ConfState> conf_state = ConsumeConfState(&value);
  if (!conf_state.ok()) return conf_state.status();
  if (!value.empty()) {
    return absl::DataLossError("trailing bytes after snapshot meta");
  }
  meta.conf_state = *std::move(conf_state);
  return meta;
}

}  // namespace sessiond::storage
