// Copyright sessiond authors. Licensed under the Apache License 2.0.
//
// Command-log entries as every replica applies them
// (storage/session_state_machine.h). Whatever a leader put in the log, and
// whichever node proposed it, application must never crash, must give each
// entry exactly one result, and must leave every replica in the same state:
// two replicas that apply the same entries agree on each result and on
// ComputeDigest (the digest ClusterStatus compares), even when their
// drivers batched the entries differently (the apply stage hands over
// whatever was committed since its last turn). A snapshot of that state
// must verify (a follower refuses an image that does not:
// server/peer_service.cc) and, once installed on a third replica, give it
// the same digest too. Each payload is also fed to DecodeConfChange.
//
// Input: up to kMaxEntries entries, each a 3-byte head (flags, then the
// payload's length, big-endian 16 bits) and the payload (a short last one
// takes what is left). Flags bit 0: a kConfChange entry (else kNormal);
// bit 1: replica A starts a new Apply call at this entry (replica B
// applies each entry on its own). Entries are at term 1, indexes 1, 2, ...
// of a group of voters 1, 2, 3.
//
// The replicas start each input from a new data dir's state
// (tests/fuzz/fuzz_replica.h), so a failing input reproduces alone.

#include <any>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <string>
#include <string_view>
#include <typeinfo>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "google/protobuf/io/coded_stream.h"
#include "google/protobuf/io/zero_copy_stream_impl_lite.h"
#include "google/protobuf/message_lite.h"
#include "google/protobuf/stubs/logging.h"
#include "replication/core/types.h"
#include "sessiond/v1/admin.pb.h"
#include "sessiond/v1/command.pb.h"
#include "storage/session_state_machine.h"
#include "storage/snapshot_files.h"
#include "tests/fuzz/fuzz_check.h"
#include "tests/fuzz/fuzz_replica.h"

namespace {

namespace storage = sessiond::storage;
namespace replication = sessiond::replication;
namespace v1 = sessiond::v1;
using sessiond::fuzz::FuzzReplica;
using sessiond::fuzz::ScratchDir;

constexpr size_t kMaxEntries = 12;
constexpr uint8_t kConfChangeFlag = 1;
constexpr uint8_t kNewBatchFlag = 2;

// This process's folder: each replica's data dir and the snapshot images.
const std::string& Root() {
  static const std::string* root = new std::string(ScratchDir("command"));
  return *root;
}

storage::SnapshotFiles& Snapshots() {
  static storage::SnapshotFiles* files = [] {
    auto* f = new storage::SnapshotFiles(Root() + "/snap");
    FUZZ_CHECK(f->Init().ok());
    return f;
  }();
  return *files;
}

// Replicas a and b apply the entries, c installs a's snapshot. Open for the
// whole process and reset before each input (tests/fuzz/fuzz_replica.h).
FuzzReplica& Replica(int i) {
  static std::vector<std::unique_ptr<FuzzReplica>>* replicas = [] {
    auto* made = new std::vector<std::unique_ptr<FuzzReplica>>();
    for (const char* name : {"a", "b", "c"}) {
      made->push_back(
          std::make_unique<FuzzReplica>(Root() + "/" + name, &Snapshots()));
    }
    // Closed before Root() is removed (atexit handlers run in reverse).
    std::atexit([] { replicas->clear(); });
    return made;
  }();
  return *(*replicas)[i];
}

struct Piece {
  uint8_t flags = 0;
  std::string data;
};

std::vector<Piece> Split(std::string_view in) {
  std::vector<Piece> pieces;
  while (in.size() >= 3 && pieces.size() < kMaxEntries) {
    Piece piece;
    piece.flags = static_cast<uint8_t>(in[0]);
    const size_t length =
        size_t{static_cast<uint8_t>(in[1])} * 256 + static_cast<uint8_t>(in[2]);
    in.remove_prefix(3);
    piece.data = std::string(in.substr(0, length));
    in.remove_prefix(piece.data.size());
    pieces.push_back(std::move(piece));
  }
  return pieces;
}

// Protobuf leaves the order of map entries in its encoding unspecified; two
// replicas' equal results must compare equal.
std::string Bytes(const google::protobuf::MessageLite& message) {
  std::string out;
  {
    google::protobuf::io::StringOutputStream stream(&out);
    google::protobuf::io::CodedOutputStream coded(&stream);
    coded.SetSerializationDeterministic(true);
    message.SerializeToCodedStream(&coded);
  }
  return out;
}

// An entry's result as text, to compare the replicas' (the value types are
// those session_state_machine.h lists).
std::string Render(const replication::ApplyResult& result) {
  if (!result.ok()) return result.status().ToString();
  const std::any& value = *result;
  if (!value.has_value()) return "ok";
  if (const auto* session = std::any_cast<v1::Session>(&value)) {
    return "session " + Bytes(*session);
  }
  if (const auto* sessions = std::any_cast<std::vector<v1::Session>>(&value)) {
    std::string out = "sessions";
    for (const v1::Session& s : *sessions) absl::StrAppend(&out, " ", Bytes(s));
    return out;
  }
  if (const auto* count = std::any_cast<uint64_t>(&value)) {
    return absl::StrCat("count ", *count);
  }
  if (const auto* pending =
          std::any_cast<v1::internal::PendingBulkRevoke>(&value)) {
    return "pending " + Bytes(*pending);
  }
  if (const auto* revocation = std::any_cast<v1::Revocation>(&value)) {
    return "revocation " + Bytes(*revocation);
  }
  if (const auto* breaker = std::any_cast<v1::ExpiryBreaker>(&value)) {
    return "breaker " + Bytes(*breaker);
  }
  // A type this list does not know yet: at least the same type.
  return std::string("value of type ") + value.type().name();
}

void CheckConfChangeCodec(const std::string& data) {
  replication::ConfChange change;
  if (!replication::DecodeConfChange(data, &change)) return;
  const std::string encoded = replication::EncodeConfChange(change);
  replication::ConfChange again;
  FUZZ_CHECK(replication::DecodeConfChange(encoded, &again));
  FUZZ_CHECK(again == change);
  // One encoding per change: replicas compare entries byte for byte.
  FUZZ_CHECK(encoded == data);
}

// Applies `entries` to `replica`, cut into Apply calls before each index in
// `cuts` (ascending); returns each entry's rendered result.
std::vector<std::string> ApplyAll(
    FuzzReplica& replica, const std::vector<replication::Entry>& entries,
    const std::vector<size_t>& cuts) {
  std::vector<std::string> rendered;
  size_t begin = 0;
  for (size_t c = 0; c <= cuts.size(); ++c) {
    const size_t end = c < cuts.size() ? cuts[c] : entries.size();
    if (end <= begin) continue;
    const std::vector<replication::Entry> batch(entries.begin() + begin,
                                                entries.begin() + end);
    auto results = replica.sm().Apply(batch);
    // Only a failed write returns an error, and nothing here fails to
    // write.
    FUZZ_CHECK(results.ok());
    FUZZ_CHECK(results->size() == batch.size());
    for (const replication::ApplyResult& r : *results) {
      rendered.push_back(Render(r));
    }
    FUZZ_CHECK(replica.sm().applied_index() == batch.back().index);
    begin = end;
  }
  return rendered;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // Commands with strings that are not UTF-8 do not parse, and protobuf
  // would say so on stderr each time.
  // A static, not a leaked pointer (LeakSanitizer reports those).
  static google::protobuf::LogSilencer quiet;
  (void)quiet;
  const std::vector<Piece> pieces =
      Split(std::string_view(reinterpret_cast<const char*>(data), size));
  if (pieces.empty()) return 0;
  std::vector<replication::Entry> entries;
  std::vector<size_t> cuts_a, cuts_b;
  for (const Piece& piece : pieces) {
    CheckConfChangeCodec(piece.data);
    replication::Entry entry;
    entry.term = sessiond::Term(1);
    entry.index = sessiond::LogIndex(entries.size() + 1);
    entry.type = (piece.flags & kConfChangeFlag)
                     ? replication::EntryType::kConfChange
                     : replication::EntryType::kNormal;
    entry.data = piece.data;
    if (piece.flags & kNewBatchFlag) cuts_a.push_back(entries.size());
    cuts_b.push_back(entries.size());
    entries.push_back(std::move(entry));
  }
  const sessiond::LogIndex last = entries.back().index;

  FuzzReplica& a = Replica(0);
  FuzzReplica& b = Replica(1);
  FuzzReplica& c = Replica(2);
  a.Reset();
  b.Reset();
  c.Reset();
  const std::vector<std::string> results_a = ApplyAll(a, entries, cuts_a);
  const std::vector<std::string> results_b = ApplyAll(b, entries, cuts_b);
  FUZZ_CHECK(results_a.size() == entries.size());
  FUZZ_CHECK(results_a == results_b);
  const auto digest_a = a.Digest();
  const auto digest_b = b.Digest();
  FUZZ_CHECK(digest_a.applied_index == last);
  FUZZ_CHECK(digest_b.applied_index == last);
  FUZZ_CHECK(digest_a.sha256_hex == digest_b.sha256_hex);
  FUZZ_CHECK(digest_a.sessions == digest_b.sessions);

  // A follower too far behind gets this state as a snapshot instead.
  auto snapshot = a.sm().CreateSnapshot();
  FUZZ_CHECK(snapshot.ok());
  FUZZ_CHECK(snapshot->meta.index == last);
  FUZZ_CHECK(
      storage::SessionStateMachine::VerifySnapshotImage(Snapshots(), *snapshot)
          .ok());
  FUZZ_CHECK(c.sm().ApplySnapshot(*snapshot).ok());
  const auto digest_c = c.Digest();
  FUZZ_CHECK(digest_c.applied_index == last);
  FUZZ_CHECK(digest_c.sha256_hex == digest_a.sha256_hex);
  FUZZ_CHECK(digest_c.sessions == digest_a.sessions);
  Snapshots().RemoveAllExcept("");
  return 0;
}
