// Copyright sessiond authors. Licensed under the Apache License 2.0.
//
// storage_bench: figures for docs/PERFORMANCE.md.
//
//   storage_bench [benchmark flags] [--sessions=N] [--attr_bytes=B]
//                 [--skip_memory] [--skip_validate] [--dir=D [--load_only]]
//                 [--flush]
//
// 1. Validate lookups/s on a table of N sessions (default 1M), from 1 and 2
//    threads (Google Benchmark, BM_Validate*).
// 2. Memory: resident-set growth per session after applying N CreateSession
//    commands (B bytes of attributes each, default 200) through the
//    SessionStateMachine into RocksDB in a temp dir, from /proc/self/statm.
// 3. Restart: time to reopen that RocksDB and load the N sessions
//    (SessionStateMachine::Open), and the RSS growth of the loaded table.
// 4. With --flush, on that table: a flush of every session (one command),
//    its restore, and a second flush purged after its retention: time to
//    apply each, and the memory they change.
#include <malloc.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "benchmark/benchmark.h"
#include "rocksdb/db.h"
#include "sessiond/v1/command.pb.h"
#include "storage/database.h"
#include "storage/session_state_machine.h"
#include "storage/session_table.h"
#include "storage/token.h"

namespace sessiond::storage {
namespace {

int64_t g_sessions = 1'000'000;
std::string g_dir;  // --dir: keep the database here (and reuse it)
bool g_load_only = false;
int64_t g_attr_bytes = 200;
bool g_flush = false;  // --flush: section 4

int64_t ResidentBytes() {
  std::ifstream statm("/proc/self/statm");
  int64_t size = 0, resident = 0;
  statm >> size >> resident;
  return resident * sysconf(_SC_PAGESIZE);
}

// Four attributes whose keys and values add up to `bytes`.
void FillAttributes(int64_t i, int64_t bytes,
                    google::protobuf::Map<std::string, std::string>* attrs) {
  const int64_t per = bytes / 4;
  for (int k = 0; k < 4; ++k) {
    std::string key = absl::StrCat("attr", k);
    const int64_t value_size = std::max<int64_t>(
        0, per - static_cast<int64_t>(key.size()) + (k == 3 ? bytes % 4 : 0));
    std::string value(value_size, 'v');
    // Make values differ between sessions (no accidental sharing).
    const std::string tag = absl::StrCat(i);
    value.replace(0, std::min(value.size(), tag.size()), tag, 0,
                  std::min(value.size(), tag.size()));
    (*attrs)[key] = std::move(value);
  }
}

std::string TokenFor(int64_t i) { return absl::StrCat("bench-token-", i); }

std::string UserFor(int64_t i) {
  // About two sessions per user.
  return absl::StrCat("user-", 1'000'000'000 + i / 2);
}

// ---- 1. Validate ----------------------------------------------------------

SessionTable* g_table = nullptr;
std::vector<TokenHash>* g_hashes = nullptr;

void BuildValidateTable() {
  if (g_table != nullptr) return;
  g_table = new SessionTable();
  g_hashes = new std::vector<TokenHash>();
  g_hashes->reserve(g_sessions);
  for (int64_t i = 0; i < g_sessions; ++i) {
    sessiond::v1::Session s;
    s.set_session_id(GenerateSessionId());
    s.set_user_id(UserFor(i));
    s.set_created_at_ms(1000);
    s.set_last_seen_at_ms(1000);
    s.set_expires_at_ms(int64_t{1} << 50);
    s.set_idle_timeout_ms(3'600'000);
    s.set_version(1);
    s.set_state(v1::SESSION_STATE_ACTIVE);
    FillAttributes(i, g_attr_bytes, s.mutable_attributes());
    g_hashes->push_back(HashToken(TokenFor(i)));
    if (!g_table->Insert(g_hashes->back(), s).ok()) std::abort();
  }
}

// The full hot path of ValidateSession minus gRPC: hash the token, look it
// up, check expiry, decode the record into a Session.
void BM_ValidateWithRecord(benchmark::State& state) {
  BuildValidateTable();
  uint64_t i = state.thread_index() * 7919;
  sessiond::v1::Session session;
  std::vector<std::string> tokens;
  for (int k = 0; k < 4096; ++k) {
    tokens.push_back(TokenFor((i + k * 104729) % g_sessions));
  }
  int64_t valid = 0;
  for (auto _ : state) {
    const TokenHash hash = HashToken(tokens[i++ & 4095]);
    valid +=
        g_table->Validate(hash, 2000, 0, &session) == ValidateOutcome::kValid;
  }
  if (valid != static_cast<int64_t>(state.iterations())) {
    state.SkipWithError("a lookup was not valid");
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_ValidateWithRecord)->Threads(1)->Threads(2)->UseRealTime();

// Lookup and expiry check only (the outcome, no record decoded).
void BM_ValidateOutcomeOnly(benchmark::State& state) {
  BuildValidateTable();
  uint64_t i = state.thread_index() * 7919;
  int64_t valid = 0;
  for (auto _ : state) {
    const TokenHash& hash = (*g_hashes)[(i++ * 104729) % g_hashes->size()];
    valid +=
        g_table->Validate(hash, 2000, 0, nullptr) == ValidateOutcome::kValid;
  }
  if (valid != static_cast<int64_t>(state.iterations())) {
    state.SkipWithError("a lookup was not valid");
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_ValidateOutcomeOnly)->Threads(1)->Threads(2)->UseRealTime();

// What CreateSession draws from the random generator: a token and a
// session id.
void BM_GenerateTokenAndSessionId(benchmark::State& state) {
  for (auto _ : state) {
    benchmark::DoNotOptimize(GenerateToken());
    benchmark::DoNotOptimize(GenerateSessionId());
  }
}
BENCHMARK(BM_GenerateTokenAndSessionId);

// ---- 4. Flush, restore, purge ----------------------------------------------

// Applies one command as the entry after the applied index; its result.
replication::ApplyResult ApplyNext(SessionStateMachine* sm,
                                   const v1::internal::Command& command) {
  replication::Entry e;
  e.index = sm->applied_index() + 1;
  e.term = Term(1);
  e.data = command.SerializeAsString();
  auto results = sm->Apply({e});
  if (!results.ok()) return results.status();
  return (*results)[0];
}

// Bytes RocksDB holds in memtables, flushed or not yet.
uint64_t MemtableBytes(rocksdb::DB* db) {
  uint64_t bytes = 0;
  db->GetAggregatedIntProperty("rocksdb.size-all-mem-tables", &bytes);
  return bytes;
}

// Waits (at most 60 s) until RocksDB has written every immutable memtable
// to an SST file: a flush or restore rewrites every record, and until then
// the rewritten records stay resident in memtables.
void WaitForMemtableFlushes(rocksdb::DB* db) {
  const auto give_up =
      std::chrono::steady_clock::now() + std::chrono::seconds(60);
  uint64_t immutable = 1;
  while (std::chrono::steady_clock::now() < give_up) {
    db->GetAggregatedIntProperty("rocksdb.num-immutable-mem-table", &immutable);
    if (immutable == 0) return;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
}

// Times a flush of every session (both steps), its restore and a flush's
// purge, on the loaded table, with the table's and the process's memory:
// right after the step (the rewritten records still in RocksDB's
// memtables) and once RocksDB has flushed those memtables.
int RunFlush(SessionStateMachine* sm, SessionTable* table, rocksdb::DB* db) {
  const int64_t now = 1'700'000'000'000 + g_sessions + 1000;
  v1::SessionSelector all;
  all.mutable_all();
  auto timed = [&](const char* what, const v1::internal::Command& command) {
    WaitForMemtableFlushes(db);
    malloc_trim(0);
    const int64_t rss_before = ResidentBytes();
    const size_t arena_before = table->memory_usage().arena_bytes;
    const size_t holds_before = table->memory_usage().hold_index_bytes;
    const auto start = std::chrono::steady_clock::now();
    replication::ApplyResult result = ApplyNext(sm, command);
    const double secs =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start)
            .count();
    malloc_trim(0);
    const int64_t rss_right_after = ResidentBytes();
    const uint64_t memtables_right_after = MemtableBytes(db);
    WaitForMemtableFlushes(db);
    malloc_trim(0);
    const int64_t rss_flushed = ResidentBytes();
    const SessionTable::MemoryUsage after = table->memory_usage();
    std::printf(
        "%s: %.3f s to apply (one entry); table arenas %+.1f MB, held-session "
        "map %+.1f MB; RSS %+.1f MB right after (RocksDB memtables %.1f MB), "
        "%+.1f MB once RocksDB flushed them (%s)\n",
        what, secs,
        (static_cast<double>(after.arena_bytes) -
         static_cast<double>(arena_before)) /
            1e6,
        (static_cast<double>(after.hold_index_bytes) -
         static_cast<double>(holds_before)) /
            1e6,
        (rss_right_after - rss_before) / 1e6, memtables_right_after / 1e6,
        (rss_flushed - rss_before) / 1e6,
        result.ok() ? "ok" : result.status().ToString().c_str());
    return result;
  };
  v1::internal::Command prepare;
  prepare.set_timestamp_ms(now);
  prepare.mutable_bulk_revoke()->mutable_prepare()->set_confirmation_token("t");
  *prepare.mutable_bulk_revoke()->mutable_prepare()->mutable_selector() = all;
  prepare.mutable_bulk_revoke()->mutable_prepare()->set_retention_ms(1000);
  if (!ApplyNext(sm, prepare).ok()) return 1;
  v1::internal::Command confirm;
  confirm.set_timestamp_ms(now + 1);
  *confirm.mutable_bulk_revoke()->mutable_confirm() =
      prepare.bulk_revoke().prepare();
  replication::ApplyResult flushed = timed("flush", confirm);
  if (!flushed.ok()) return 1;
  const uint64_t id = std::any_cast<v1::Revocation>(*flushed).id();
  v1::internal::Command restore;
  restore.set_timestamp_ms(now + 2);
  restore.mutable_restore_revocation()->set_revocation_id(id);
  if (!timed("restore", restore).ok()) return 1;
  // A second flush, purged after its retention: the memory comes back.
  prepare.set_timestamp_ms(now + 3);
  prepare.mutable_bulk_revoke()->mutable_prepare()->set_confirmation_token("u");
  if (!ApplyNext(sm, prepare).ok()) return 1;
  confirm.set_timestamp_ms(now + 4);
  confirm.mutable_bulk_revoke()->mutable_confirm()->set_confirmation_token("u");
  flushed = timed("flush again", confirm);
  if (!flushed.ok()) return 1;
  v1::internal::Command purge;
  purge.set_timestamp_ms(now + 5000);
  purge.mutable_purge_revocations()->add_revocation_ids(
      std::any_cast<v1::Revocation>(*flushed).id());
  if (!timed("purge", purge).ok()) return 1;
  std::printf("after the purge: %zu sessions\n", table->size());
  return 0;
}

// ---- 2 and 3. Memory and restart ------------------------------------------

int RunMemoryAndRestart() {
  char pattern[] = "/tmp/sessiond-storage-bench-XXXXXX";
  if (g_dir.empty() && mkdtemp(pattern) == nullptr) return 1;
  const std::string dir = g_dir.empty() ? std::string(pattern) : g_dir;
  std::printf(
      "memory/restart: %lld sessions, %lld bytes of attributes, dir %s\n",
      static_cast<long long>(g_sessions), static_cast<long long>(g_attr_bytes),
      dir.c_str());
  malloc_trim(0);
  const int64_t rss0 = ResidentBytes();
  if (!g_load_only) {
    auto db = Database::Open(dir, DatabaseOptions());
    if (!db.ok()) {
      std::fprintf(stderr, "%s\n", db.status().ToString().c_str());
      return 1;
    }
    SessionTable table;
    auto sm = SessionStateMachine::Open(db->get(), &table);
    if (!sm.ok()) return 1;
    const auto start = std::chrono::steady_clock::now();
    constexpr int kBatch = 1000;
    std::vector<replication::Entry> entries;
    for (int64_t i = 0; i < g_sessions;) {
      entries.clear();
      for (int k = 0; k < kBatch && i < g_sessions; ++k, ++i) {
        v1::internal::Command command;
        command.set_timestamp_ms(1'700'000'000'000 + i);
        auto* create = command.mutable_create();
        const TokenHash hash = HashToken(TokenFor(i));
        create->set_token_hash(std::string(TokenHashBytes(hash)));
        create->set_session_id(GenerateSessionId());
        create->set_user_id(UserFor(i));
        create->set_expires_at_ms(1'800'000'000'000);
        create->set_idle_timeout_ms(3'600'000);
        FillAttributes(i, g_attr_bytes, create->mutable_attributes());
        replication::Entry e;
        e.index = LogIndex(i + 1);
        e.term = Term(1);
        e.data = command.SerializeAsString();
        entries.push_back(std::move(e));
      }
      auto results = (*sm)->Apply(entries);
      if (!results.ok()) {
        std::fprintf(stderr, "%s\n", results.status().ToString().c_str());
        return 1;
      }
    }
    const double secs =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start)
            .count();
    entries.clear();
    entries.shrink_to_fit();
    malloc_trim(0);
    const int64_t rss1 = ResidentBytes();
    uint64_t memtables = 0, readers = 0, cache = 0;
    (*db)->db()->GetAggregatedIntProperty("rocksdb.cur-size-all-mem-tables",
                                          &memtables);
    (*db)->db()->GetAggregatedIntProperty("rocksdb.estimate-table-readers-mem",
                                          &readers);
    (*db)->db()->GetAggregatedIntProperty("rocksdb.block-cache-usage", &cache);
    std::printf(
        "rocksdb: memtables %.1f MB, table readers %.1f MB, block cache "
        "%.1f MB\n",
        memtables / 1e6, readers / 1e6, cache / 1e6);
    std::printf(
        "apply: %.0f creates/s (batches of %d, unsynced state writes)\n",
        g_sessions / secs, kBatch);
    std::printf(
        "memory after applying through the state machine: RSS delta %.1f MB "
        "= %.1f bytes/session (table + RocksDB memtables and cache)\n",
        (rss1 - rss0) / 1e6, static_cast<double>(rss1 - rss0) / g_sessions);
  }
  malloc_trim(0);
  const int64_t rss2 = ResidentBytes();
  {
    const auto start = std::chrono::steady_clock::now();
    auto db = Database::Open(dir, DatabaseOptions());
    if (!db.ok()) return 1;
    SessionTable table;
    auto sm = SessionStateMachine::Open(db->get(), &table);
    if (!sm.ok()) {
      std::fprintf(stderr, "%s\n", sm.status().ToString().c_str());
      return 1;
    }
    const double secs =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start)
            .count();
    malloc_trim(0);
    const int64_t rss3 = ResidentBytes();
    std::printf(
        "restart: opened RocksDB and loaded %zu sessions in %.3f s "
        "(applied index %llu)\n",
        table.size(), secs,
        static_cast<unsigned long long>((*sm)->applied_index().value()));
    const SessionTable::MemoryUsage usage = table.memory_usage();
    std::printf(
        "table: arenas %.1f MB, hash indexes %.1f MB, expiry entries %zu\n",
        usage.arena_bytes / 1e6, usage.hash_index_bytes / 1e6,
        usage.expiry_entries);
    std::printf(
        "memory after restart: RSS delta %.1f MB = %.1f bytes/session\n",
        (rss3 - rss2) / 1e6, static_cast<double>(rss3 - rss2) / g_sessions);
    if (g_flush && RunFlush(sm->get(), &table, (*db)->db()) != 0) return 1;
  }
  if (g_dir.empty()) {
    std::error_code ec;
    std::filesystem::remove_all(dir, ec);
  }
  return 0;
}

}  // namespace
}  // namespace sessiond::storage

int main(int argc, char** argv) {
  // Debian's Abseil is built without NDEBUG, which turns on absl::Mutex
  // deadlock detection: a global graph updated on every lock (measured: a
  // large share of a Validate). The daemon must switch it off the same way.
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
  benchmark::Initialize(&argc, argv);
  bool skip_memory = false, skip_validate = false;
  for (int i = 1; i < argc; ++i) {
    absl::string_view arg = argv[i];
    if (arg.rfind("--sessions=", 0) == 0) {
      (void)absl::SimpleAtoi(arg.substr(11), &sessiond::storage::g_sessions);
    } else if (arg.rfind("--attr_bytes=", 0) == 0) {
      (void)absl::SimpleAtoi(arg.substr(13), &sessiond::storage::g_attr_bytes);
    } else if (arg.rfind("--dir=", 0) == 0) {
      sessiond::storage::g_dir = std::string(arg.substr(6));
    } else if (arg == "--load_only") {
      sessiond::storage::g_load_only = true;
    } else if (arg == "--flush") {
      sessiond::storage::g_flush = true;
    } else if (arg == "--skip_memory") {
      skip_memory = true;
    } else if (arg == "--skip_validate") {
      skip_validate = true;
    } else {
      std::fprintf(stderr, "unknown flag %s\n", argv[i]);
      return 2;
    }
  }
  // Memory first, in a process that has not built anything yet.
  if (!skip_memory && sessiond::storage::RunMemoryAndRestart() != 0) return 1;
  if (!skip_validate) benchmark::RunSpecifiedBenchmarks();
  return 0;
}
