// Copyright sessiond authors. Licensed under the Apache License 2.0.
//
// A snapshot image as a follower receives it from the leader
// (server/peer_service.cc): in chunks (storage/snapshot_files.h,
// SnapshotReceiver), then checked whole by
// SessionStateMachine::VerifySnapshotImage before Raft sees it, since
// installing one drops the log. Whatever arrives must be refused with an
// error or accepted, never crash; an image that verifies must then install
// (ApplySnapshot) with every record it holds, and the installed state must
// make an image that verifies in turn (that follower may lead next).
//
// Byte 0 bit 0 picks the mode:
//   0, raw: byte 1 picks the chunking and whether the announced size is
//      off; the rest is the image as received (its last 32 bytes the
//      SHA-256 of the rest). The rest is then also sealed with its own
//      SHA-256 and read back. Either, once accepted, is verified at the
//      index, term and membership its own header names.
//   1, framed: the harness writes a well-formed image (magic, header,
//      records, trailer and checksum, with SnapshotImageWriter as a leader
//      does), so mutations reach the header and record checks rather than
//      the checksum. Byte 1 holds flags (kHeaderFromInput, ...); the rest
//      is pieces, each a big-endian 16-bit length and that many bytes: the
//      header (a SnapshotHeader) when kHeaderFromInput, then the records
//      (StoredSession, as the sessions CF holds them).
#include <openssl/sha.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "common/strong_types.h"
#include "google/protobuf/stubs/logging.h"
#include "replication/core/types.h"
#include "sessiond/v1/command.pb.h"
#include "storage/session_state_machine.h"
#include "storage/snapshot_files.h"
#include "tests/fuzz/fuzz_check.h"
#include "tests/fuzz/fuzz_replica.h"

namespace {

namespace storage = sessiond::storage;
namespace pb = sessiond::v1::internal;
using sessiond::LogIndex;
using sessiond::NodeId;
using sessiond::Term;

// Framed mode's flags (byte 1).
constexpr uint8_t kHeaderFromInput = 1;
// The snapshot lists its membership in reverse order: the check compares
// members, not order, so the outcome must not change.
constexpr uint8_t kReversedMembers = 2;
// The snapshot is announced one index past the image's: always refused.
constexpr uint8_t kOtherIndex = 4;

constexpr size_t kMaxRecords = 32;

// This process's folder: the images and the follower's data dir.
const std::string& Root() {
  static const std::string* root =
      new std::string(sessiond::fuzz::ScratchDir("snap"));
  return *root;
}

storage::SnapshotFiles& Files() {
  static storage::SnapshotFiles* files = [] {
    auto* f = new storage::SnapshotFiles(Root() + "/snap");
    FUZZ_CHECK(f->Init().ok());
    return f;
  }();
  return *files;
}

// Open for the whole process and reset before each install
// (tests/fuzz/fuzz_replica.h).
sessiond::fuzz::FuzzReplica& Follower() {
  static sessiond::fuzz::FuzzReplica* follower = [] {
    auto* made =
        new sessiond::fuzz::FuzzReplica(Root() + "/follower", &Files());
    // Closed before Root() is removed (atexit handlers run in reverse).
    std::atexit([] { delete follower; });
    return made;
  }();
  return *follower;
}

// The snapshot a leader announces for the image `ref` names, at the index,
// term and membership of `header`.
sessiond::replication::Snapshot SnapshotOf(const pb::SnapshotHeader& header,
                                           const pb::SnapshotRef& ref,
                                           bool reversed) {
  sessiond::replication::Snapshot snapshot;
  snapshot.meta.index = LogIndex(header.index());
  snapshot.meta.term = Term(header.term());
  for (uint64_t v : header.voters()) {
    snapshot.meta.conf_state.voters.push_back(NodeId(v));
  }
  for (uint64_t l : header.learners()) {
    snapshot.meta.conf_state.learners.push_back(NodeId(l));
  }
  if (reversed) {
    auto& conf = snapshot.meta.conf_state;
    std::reverse(conf.voters.begin(), conf.voters.end());
    std::reverse(conf.learners.begin(), conf.learners.end());
  }
  snapshot.data = storage::EncodeSnapshotRef(ref);
  return snapshot;
}

// What must hold of an image VerifySnapshotImage accepted.
void CheckAccepted(const sessiond::replication::Snapshot& snapshot) {
  auto ref = storage::DecodeSnapshotRef(snapshot.data);
  FUZZ_CHECK(ref.ok());
  auto reader = storage::SnapshotImageReader::Open(Files(), *ref);
  FUZZ_CHECK(reader.ok());
  uint64_t records = 0;
  FUZZ_CHECK((*reader)
                 ->ForEachRecord([&](std::string_view bytes) {
                   pb::StoredSession stored;
                   FUZZ_CHECK(stored.ParseFromArray(
                       bytes.data(), static_cast<int>(bytes.size())));
                   FUZZ_CHECK(storage::SessionTable::CheckStored(bytes).ok());
                   ++records;
                   return absl::OkStatus();
                 })
                 .ok());
  reader->reset();
  // Raft never installs a snapshot at index 0 (an empty one), and an image
  // there could not be made again (nothing applied).
  if (snapshot.empty()) return;

  // A follower installs it: nothing the check let through may fail here
  // (the log is gone by then).
  sessiond::fuzz::FuzzReplica& follower = Follower();
  follower.Reset();
  const absl::Status installed = follower.sm().ApplySnapshot(snapshot);
  FUZZ_CHECK(installed.ok());
  FUZZ_CHECK(follower.sm().applied_index() == snapshot.meta.index);
  FUZZ_CHECK(follower.table().size() == records);
  FUZZ_CHECK(follower.Digest().sessions == records);
  // And may send it on as a leader.
  auto again = follower.sm().CreateSnapshot();
  FUZZ_CHECK(again.ok());
  FUZZ_CHECK(again->meta.index == snapshot.meta.index);
  FUZZ_CHECK(
      storage::SessionStateMachine::VerifySnapshotImage(Files(), *again).ok());
}

// Verifies the image `ref` names as a follower would, announced at what
// its own header says (when it has one).
void VerifyAsAnnounced(const pb::SnapshotRef& ref) {
  pb::SnapshotHeader header;
  {
    auto reader = storage::SnapshotImageReader::Open(Files(), ref);
    if (!reader.ok()) return;
    header = (*reader)->header();
  }
  const auto snapshot = SnapshotOf(header, ref, /*reversed=*/false);
  if (storage::SessionStateMachine::VerifySnapshotImage(Files(), snapshot)
          .ok()) {
    CheckAccepted(snapshot);
  }
}

void Raw(std::string_view input) {
  if (input.empty()) return;
  const uint8_t mode = static_cast<uint8_t>(input[0]);
  const std::string_view image = input.substr(1);
  const size_t chunk = 1 + (mode & 0x3f);
  const int64_t size_error = (mode & 0x40) ? ((mode & 0x80) ? 1 : -1) : 0;
  auto file = Files().NewFile(LogIndex(1), Term(1), "fuzz");
  FUZZ_CHECK(file.ok());
  storage::SnapshotReceiver receiver(
      *std::move(file),
      static_cast<uint64_t>(std::max<int64_t>(
          0, static_cast<int64_t>(image.size()) + size_error)));
  bool ok = true;
  for (size_t at = 0; at < image.size() && ok; at += chunk) {
    ok = receiver.Append(image.substr(at, chunk)).ok();
  }
  if (ok) {
    auto ref = receiver.Finish();
    if (ref.ok()) {
      FUZZ_CHECK(size_error == 0 && image.size() >= 32);
      FUZZ_CHECK(Files().Verify(*ref).ok());
      VerifyAsAnnounced(*ref);
    }
  }
  // The same bytes with a checksum that matches (a sender can always make
  // one): the reader must refuse a malformed image with an error, never
  // crash on a length it reads from it.
  std::string sealed(image);
  unsigned char digest[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const unsigned char*>(sealed.data()), sealed.size(),
         digest);
  sealed.append(reinterpret_cast<const char*>(digest), sizeof(digest));
  auto sealed_file = Files().NewFile(LogIndex(1), Term(1), "fuzz");
  FUZZ_CHECK(sealed_file.ok());
  storage::SnapshotReceiver sealed_receiver(*std::move(sealed_file),
                                            sealed.size());
  FUZZ_CHECK(sealed_receiver.Append(sealed).ok());
  auto sealed_ref = sealed_receiver.Finish();
  FUZZ_CHECK(sealed_ref.ok());
  auto reader = storage::SnapshotImageReader::Open(Files(), *sealed_ref);
  if (reader.ok()) {
    (void)(*reader)->ForEachRecord(
        [](std::string_view) { return absl::OkStatus(); });
  }
  VerifyAsAnnounced(*sealed_ref);
}

// A valid header for inputs that bring none: a three-voter group with some
// of every kind of state an image carries, so an install has all of it to
// write.
pb::SnapshotHeader DefaultHeader() {
  pb::SnapshotHeader header;
  header.set_index(40);
  header.set_term(3);
  for (uint64_t v : {1, 2, 3}) header.add_voters(v);
  header.add_learners(4);
  header.set_applied_time_ms(1'700'000'000'000);
  pb::ClusterState* cluster = header.mutable_cluster();
  pb::Member* member = cluster->add_members();
  member->set_node_id(1);
  member->set_peer_address("10.0.0.5:7001");
  member->set_started(true);
  cluster->set_expiry_leeway_ms(2000);
  cluster->set_leeway_set(true);
  cluster->add_removed(9);
  sessiond::v1::Revocation* revocation = header.add_revocations();
  revocation->set_id(30);
  revocation->mutable_selector()->mutable_user()->set_user_id("alice");
  revocation->set_state(sessiond::v1::Revocation::RETAINED);
  revocation->set_restorable_until_ms(1'700'000'600'000);
  pb::CreateRequestRecord* request = header.add_create_requests();
  request->set_request_key(std::string(32, 'k'));
  request->set_token_hash(std::string(32, 'h'));
  request->set_session_id("s-1");
  request->set_expires_at_ms(1'700'000'100'000);
  header.set_create_key(std::string(32, 'c'));
  sessiond::v1::AuditEntry* audit = header.add_audit_entries();
  audit->set_seq(7);
  audit->set_time_ms(1'699'999'999'000);
  audit->set_method("/sessiond.v1.AdminService/Flush");
  header.set_audit_next_seq(8);
  return header;
}

void Framed(std::string_view input) {
  if (input.empty()) return;
  const uint8_t flags = static_cast<uint8_t>(input[0]);
  input.remove_prefix(1);
  std::vector<std::string_view> pieces;
  while (input.size() >= 2 && pieces.size() < kMaxRecords + 1) {
    const size_t length = size_t{static_cast<uint8_t>(input[0])} * 256 +
                          static_cast<uint8_t>(input[1]);
    input.remove_prefix(2);
    pieces.push_back(input.substr(0, length));
    input.remove_prefix(pieces.back().size());
  }
  pb::SnapshotHeader header;
  size_t first_record = 0;
  if ((flags & kHeaderFromInput) && !pieces.empty()) {
    first_record = 1;
    // A header that does not parse cannot be written by the writer (it
    // takes a message); the raw mode covers that case.
    if (!header.ParseFromArray(pieces[0].data(),
                               static_cast<int>(pieces[0].size()))) {
      return;
    }
  } else {
    header = DefaultHeader();
  }
  auto file =
      Files().NewFile(LogIndex(header.index()), Term(header.term()), "fuzz");
  FUZZ_CHECK(file.ok());
  storage::SnapshotImageWriter writer(*std::move(file), header);
  for (size_t i = first_record; i < pieces.size(); ++i) {
    // An empty record would read as the end of the records: the writer
    // refuses it, and the image goes on without it.
    if (pieces[i].empty()) {
      FUZZ_CHECK(!writer.AddRecord(pieces[i]).ok());
      continue;
    }
    FUZZ_CHECK(writer.AddRecord(pieces[i]).ok());
  }
  auto ref = writer.Finish();
  FUZZ_CHECK(ref.ok());
  auto snapshot = SnapshotOf(header, *ref, flags & kReversedMembers);
  if (flags & kOtherIndex) {
    snapshot.meta.index = snapshot.meta.index + 1;
  }
  const absl::Status verified =
      storage::SessionStateMachine::VerifySnapshotImage(Files(), snapshot);
  if (flags & kOtherIndex) FUZZ_CHECK(!verified.ok());
  if (verified.ok()) CheckAccepted(snapshot);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // Records and headers with strings that are not UTF-8 do not parse, and
  // protobuf would say so on stderr each time.
  // A static, not a leaked pointer (LeakSanitizer reports those).
  static google::protobuf::LogSilencer quiet;
  (void)quiet;
  if (size == 0) return 0;
  const std::string_view rest(reinterpret_cast<const char*>(data + 1),
                              size - 1);
  if (data[0] & 1) {
    Framed(rest);
  } else {
    Raw(rest);
  }
  // Every image of this input (received, sealed, written, re-made).
  Files().RemoveAllExcept("");
  return 0;
}
