// Copyright sessiond authors. Licensed under the Apache License 2.0.
//
// What a node reads back from its own disk at start (storage/keys.h): Raft
// log entries, the hard state, the configuration, snapshot metadata and
// references. A corrupt value must be refused (DataLoss), never crash; a
// value that decodes re-encodes to one that decodes to the same thing.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "storage/keys.h"
#include "storage/snapshot_files.h"
#include "tests/fuzz/fuzz_check.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  namespace storage = sessiond::storage;
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  const sessiond::LogIndex index(7);
  auto entry = storage::DecodeEntry(index, input);
  if (entry.ok()) {
    auto again = storage::DecodeEntry(index, storage::EncodeEntry(*entry));
    FUZZ_CHECK(again.ok() && *again == *entry);
  }
  auto hard_state = storage::DecodeHardState(input);
  if (hard_state.ok()) {
    auto again =
        storage::DecodeHardState(storage::EncodeHardState(*hard_state));
    FUZZ_CHECK(again.ok() && *again == *hard_state);
  }
  auto conf_state = storage::DecodeConfState(input);
  if (conf_state.ok()) {
    auto again =
        storage::DecodeConfState(storage::EncodeConfState(*conf_state));
    FUZZ_CHECK(again.ok() && *again == *conf_state);
  }
  auto meta = storage::DecodeSnapshotMeta(input);
  if (meta.ok()) {
    FUZZ_CHECK(
        storage::DecodeSnapshotMeta(storage::EncodeSnapshotMeta(*meta)).ok());
  }
  (void)storage::DecodeIndexTerm(input);
  (void)storage::DecodeLogKey(input);
  auto ref = storage::DecodeSnapshotRef(input);
  if (ref.ok()) {
    FUZZ_CHECK(
        storage::DecodeSnapshotRef(storage::EncodeSnapshotRef(*ref)).ok());
  }
  return 0;
}
