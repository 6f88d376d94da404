// Copyright sessiond authors. Licensed under the Apache License 2.0.
//
// Stored session records (StoredSession wire bytes, decoded by the session
// table's own wire reader, storage/wire.h) as recovery and snapshot
// installation read them from disk or from a leader: refused or inserted,
// never a crash, and an inserted one serializes back.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "storage/session_table.h"
#include "tests/fuzz/fuzz_check.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static sessiond::storage::SessionTable* table =
      new sessiond::storage::SessionTable({.num_shards = 4});
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  if (table->InsertStored(input).ok()) {
    FUZZ_CHECK(table->size() == 1);
    int seen = 0;
    table->ForEachStored(
        [&](const sessiond::storage::TokenHash&, std::string_view bytes) {
          ++seen;
          FUZZ_CHECK(!bytes.empty());
        });
    FUZZ_CHECK(seen == 1);
  }
  table->Clear();
  return 0;
}
