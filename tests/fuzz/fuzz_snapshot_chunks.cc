// Copyright sessiond authors. Licensed under the Apache License 2.0.
//
// A snapshot image as a follower receives it from the leader, in chunks
// (storage/snapshot_files.h, SnapshotReceiver): whatever arrives, the image
// is accepted only when its size is the announced one and its trailing
// SHA-256 matches, and an accepted image verifies on disk.
//
// Input: byte 0 picks the chunking and whether the announced size is off;
// the rest is the image. The rest is then also sealed with its own SHA-256
// and read back record by record (SnapshotImageReader).
#include <openssl/sha.h>
#include <unistd.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <string_view>

#include "storage/snapshot_files.h"
#include "tests/fuzz/fuzz_check.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  namespace storage = sessiond::storage;
  static storage::SnapshotFiles* files = [] {
    static const std::string dir =
        "/tmp/sessiond-fuzz-snap-" + std::to_string(getpid());
    std::atexit([] { std::filesystem::remove_all(dir); });
    auto* f = new storage::SnapshotFiles(dir);
    FUZZ_CHECK(f->Init().ok());
    return f;
  }();
  if (size == 0) return 0;
  const uint8_t mode = data[0];
  const std::string_view image(reinterpret_cast<const char*>(data + 1),
                               size - 1);
  const size_t chunk = 1 + (mode & 0x3f);
  const int64_t size_error = (mode & 0x40) ? ((mode & 0x80) ? 1 : -1) : 0;
  auto file = files->NewFile(sessiond::LogIndex(1), sessiond::Term(1), "fuzz");
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
      FUZZ_CHECK(files->Verify(*ref).ok());
      std::filesystem::remove(files->PathOf(ref->file()));
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
  auto sealed_file =
      files->NewFile(sessiond::LogIndex(1), sessiond::Term(1), "fuzz");
  FUZZ_CHECK(sealed_file.ok());
  storage::SnapshotReceiver sealed_receiver(*std::move(sealed_file),
                                            sealed.size());
  FUZZ_CHECK(sealed_receiver.Append(sealed).ok());
  auto sealed_ref = sealed_receiver.Finish();
  FUZZ_CHECK(sealed_ref.ok());
  auto reader = storage::SnapshotImageReader::Open(*files, *sealed_ref);
  if (reader.ok()) {
    (void)(*reader)->ForEachRecord(
        [](std::string_view) { return absl::OkStatus(); });
  }
  std::filesystem::remove(files->PathOf(sealed_ref->file()));
  return 0;
}
