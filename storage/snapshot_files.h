// Copyright sessiond authors. Licensed under the Apache License 2.0.
//
// Snapshot images on disk: the state a lagging follower receives and the
// point the Raft log is compacted to. An image is written whole to a
// temporary name, fsynced, then renamed (and the folder fsynced), so a final
// name always holds a complete image, and the image is durable before the
// log that it replaces is touched (etcd's snap/ and TiKV's snapshot files
// follow the same rule).
//
// Image layout (all of it covered by the trailing checksum):
//   8 bytes    magic "SDSNAP01"
//   varint n   then n bytes: a sessiond.v1.internal.SnapshotHeader
//   records    each: varint n (> 0), then n bytes of a StoredSession
//   varint 0   end of records
//   8 bytes    big-endian record count
//   32 bytes   SHA-256 of every byte before it
//
// A Snapshot's `data` in production is a serialized SnapshotRef naming the
// file, its size and checksum (EncodeSnapshotRef); the transport streams the
// file in chunks and the receiver re-creates it under its own snap/.
#ifndef SESSIOND_STORAGE_SNAPSHOT_FILES_H_
#define SESSIOND_STORAGE_SNAPSHOT_FILES_H_

#include <cstdint>
#include <cstdio>
#include <functional>
#include <memory>
#include <set>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "common/strong_types.h"
#include "sessiond/v1/command.pb.h"

namespace sessiond::storage {

inline constexpr char kSnapshotMagic[] = "SDSNAP01";
inline constexpr size_t kSnapshotDigestBytes = 32;

std::string EncodeSnapshotRef(const sessiond::v1::internal::SnapshotRef& ref);
// InvalidArgument when `data` is not a SnapshotRef (e.g. a legacy empty
// snapshot).
absl::StatusOr<sessiond::v1::internal::SnapshotRef> DecodeSnapshotRef(
    std::string_view data);

class Sha256;
class TrailedDigest;

// Writes one file under a temporary name, then makes it durable and gives it
// its final name. Not thread-safe. Destroying an unfinished writer removes
// the temporary file.
class DurableFileWriter {
 public:
  ~DurableFileWriter();
  DurableFileWriter(const DurableFileWriter&) = delete;
  DurableFileWriter& operator=(const DurableFileWriter&) = delete;

  absl::Status Append(std::string_view bytes);
  // fsync, rename to the final name, fsync the folder. On failure no file
  // is left, under either name.
  absl::Status Commit();
  uint64_t size() const { return size_; }
  // The final file name (without the folder).
  std::string file_name() const;

 private:
  friend class SnapshotFiles;
  DurableFileWriter(std::string tmp_path, std::string final_path, FILE* file);

  const std::string tmp_path_;
  const std::string final_path_;
  FILE* file_;
  uint64_t size_ = 0;
  bool committed_ = false;
};

// The folder of snapshot images (<data dir>/snap). Thread-safe: each method
// works on its own files; names are unique per image.
class SnapshotFiles {
 public:
  // `dir` is created by Init when missing.
  explicit SnapshotFiles(std::string dir);

  // Creates the folder and removes temporary files a crash left behind.
  absl::Status Init();

  const std::string& dir() const { return dir_; }
  std::string PathOf(absl::string_view file) const;

  // A new image file for a snapshot at (index, term); `origin` goes into the
  // name ("local", "from-3").
  absl::StatusOr<std::unique_ptr<DurableFileWriter>> NewFile(
      LogIndex index, Term term, absl::string_view origin);

  // Checks that the file `ref` names has its size and that its trailing
  // checksum matches its contents and `ref`. DataLoss otherwise; NotFound
  // when missing.
  absl::Status Verify(const sessiond::v1::internal::SnapshotRef& ref) const;

  // Removes every image of an index below `index` except those named in
  // `keep` (images are named "<index>-<term>-..."). A newer image (one just
  // received and not installed yet) is never removed.
  void RemoveOlderThan(LogIndex index, const std::set<std::string>& keep) const;
  // Removes every image but `keep` (empty: every image). For a node's
  // start, when nothing is being received or sent: an image the log does
  // not refer to was received and never installed (a crash, a refused
  // install, a leader's second copy of one installed) and would otherwise
  // stay until a compaction passed its index. Returns how many it removed.
  size_t RemoveAllExcept(const std::string& keep) const;

 private:
  const std::string dir_;
};

// Builds an image (layout above) into a DurableFileWriter.
class SnapshotImageWriter {
 public:
  SnapshotImageWriter(std::unique_ptr<DurableFileWriter> file,
                      const sessiond::v1::internal::SnapshotHeader& header);
  ~SnapshotImageWriter();

  absl::Status AddRecord(std::string_view stored_session);
  // Writes the trailer, commits the file, and returns its reference.
  absl::StatusOr<sessiond::v1::internal::SnapshotRef> Finish();

 private:
  absl::Status Write(std::string_view bytes);

  std::unique_ptr<DurableFileWriter> file_;
  std::unique_ptr<Sha256> sha_;
  absl::Status status_;
  uint64_t count_ = 0;
};

// Receives an image as raw bytes in chunks (from the transport): the last
// 32 bytes must be the SHA-256 of the rest, and the size must be as
// announced. Finish verifies both before the file gets its final name.
class SnapshotReceiver {
 public:
  SnapshotReceiver(std::unique_ptr<DurableFileWriter> file,
                   uint64_t expected_size);
  ~SnapshotReceiver();

  absl::Status Append(std::string_view chunk);
  uint64_t received() const { return received_; }
  // DataLoss on a size or checksum mismatch (the file is removed).
  absl::StatusOr<sessiond::v1::internal::SnapshotRef> Finish();

 private:
  std::unique_ptr<DurableFileWriter> file_;
  std::unique_ptr<TrailedDigest> digest_;
  const uint64_t expected_size_;
  uint64_t received_ = 0;
  absl::Status status_;
};

// Reads an image to send it (PeerTransport), piece by piece, checking as it
// goes that it is the image `ref` names. A leader whose own image had rotted
// sent it to a lagging follower, which refused it, again and again.
class SnapshotImageSource {
 public:
  // Opens the file now: a newer snapshot may remove it meanwhile, and an
  // open file keeps its data. NotFound when it is missing.
  static absl::StatusOr<std::unique_ptr<SnapshotImageSource>> Open(
      const SnapshotFiles& files,
      const sessiond::v1::internal::SnapshotRef& ref);
  ~SnapshotImageSource();
  SnapshotImageSource(const SnapshotImageSource&) = delete;
  SnapshotImageSource& operator=(const SnapshotImageSource&) = delete;

  // The next (up to) `max` bytes of the image into `*out`. The last piece
  // comes only once the whole image is checked; DataLoss instead when the
  // file is not `ref`'s image (another size, a failing checksum).
  absl::Status Next(size_t max, std::string* out);
  // Every byte was handed out, and checked.
  bool done() const { return done_; }

 private:
  SnapshotImageSource(std::string path, sessiond::v1::internal::SnapshotRef ref,
                      FILE* file);

  const std::string path_;
  const sessiond::v1::internal::SnapshotRef ref_;
  FILE* const file_;
  std::unique_ptr<TrailedDigest> digest_;
  bool done_ = false;
};

// Reads an image: Open verifies the checksum first (one pass), then the
// header and the records are read in a second pass.
class SnapshotImageReader {
 public:
  static absl::StatusOr<std::unique_ptr<SnapshotImageReader>> Open(
      const SnapshotFiles& files,
      const sessiond::v1::internal::SnapshotRef& ref);
  ~SnapshotImageReader();

  const sessiond::v1::internal::SnapshotHeader& header() const {
    return header_;
  }
  // Calls `fn` with each record's bytes, in order. Stops at the first
  // error `fn` returns. DataLoss on a malformed image.
  absl::Status ForEachRecord(
      const std::function<absl::Status(std::string_view)>& fn);

 private:
  SnapshotImageReader(FILE* file, uint64_t size);
  absl::Status ReadHeader();
  absl::Status ReadExact(size_t n, std::string* out);
  absl::Status ReadVarint(uint64_t* value);

  FILE* file_;
  const uint64_t size_;
  uint64_t offset_ = 0;
  sessiond::v1::internal::SnapshotHeader header_;
};

}  // namespace sessiond::storage

#endif  // SESSIOND_STORAGE_SNAPSHOT_FILES_H_
