// Copyright sessiond authors. Licensed under the Apache License 2.0.
#include "storage/snapshot_files.h"

#include <fcntl.h>
#include <openssl/evp.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <system_error>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common/check.h"
#include "common/status_macros.h"
#include "storage/durable_file.h"
#include "storage/keys.h"
#include "storage/wire.h"

namespace sessiond::storage {

using sessiond::v1::internal::SnapshotHeader;
using sessiond::v1::internal::SnapshotRef;

namespace {

constexpr size_t kMagicBytes = 8;
constexpr char kTmpSuffix[] = ".tmp";
constexpr char kImageSuffix[] = ".snap";

absl::Status Errno(absl::string_view what, const std::string& path) {
  return absl::InternalError(
      absl::StrCat(what, " ", path, ": ", std::strerror(errno)));
}

}  // namespace

// SHA-256 through OpenSSL's EVP interface (the one-shot SHA256_* calls are
// deprecated in OpenSSL 3).
class Sha256 {
 public:
  Sha256() : ctx_(EVP_MD_CTX_new()) {
    SESSIOND_CHECK(ctx_ != nullptr);
    SESSIOND_CHECK(EVP_DigestInit_ex(ctx_, EVP_sha256(), nullptr) == 1);
  }
  ~Sha256() { EVP_MD_CTX_free(ctx_); }
  Sha256(const Sha256&) = delete;
  Sha256& operator=(const Sha256&) = delete;

  void Update(std::string_view bytes) {
    SESSIOND_CHECK(EVP_DigestUpdate(ctx_, bytes.data(), bytes.size()) == 1);
  }
  std::string Final() {
    unsigned char out[EVP_MAX_MD_SIZE];
    unsigned int n = 0;
    SESSIOND_CHECK(EVP_DigestFinal_ex(ctx_, out, &n) == 1);
    return std::string(reinterpret_cast<const char*>(out), n);
  }

 private:
  EVP_MD_CTX* ctx_;
};

// The digest of an image seen in pieces (read or received): every byte but
// the last 32, its trailer, is hashed.
class TrailedDigest {
 public:
  void Add(std::string_view bytes) {
    size_ += bytes.size();
    tail_.append(bytes);
    if (tail_.size() > kSnapshotDigestBytes) {
      const size_t hash_now = tail_.size() - kSnapshotDigestBytes;
      sha_.Update(std::string_view(tail_).substr(0, hash_now));
      tail_.erase(0, hash_now);
    }
  }
  uint64_t size() const { return size_; }
  const std::string& trailer() const { return tail_; }
  // Whether the trailer is the SHA-256 of the bytes before it. Call once,
  // after the last Add.
  bool TrailerMatches() {
    return tail_.size() == kSnapshotDigestBytes && sha_.Final() == tail_;
  }

 private:
  Sha256 sha_;
  std::string tail_;  // the last (up to) 32 bytes, not yet hashed
  uint64_t size_ = 0;
};

namespace {

// DataLoss unless `digest` saw exactly the image `ref` names (at `path`):
// its size, a trailer that is the checksum of the rest, and ref's sha256.
absl::Status CheckImage(const std::string& path, const SnapshotRef& ref,
                        TrailedDigest* digest) {
  // Readers stop a little past the expected size: longer is all they know.
  if (digest->size() > ref.size()) {
    return absl::DataLossError(absl::StrCat("snapshot image ", path,
                                            " is longer than the expected ",
                                            ref.size(), " bytes"));
  }
  if (digest->size() < ref.size()) {
    return absl::DataLossError(absl::StrCat("snapshot image ", path, " has ",
                                            digest->size(), " bytes, expected ",
                                            ref.size()));
  }
  if (!digest->TrailerMatches() || digest->trailer() != ref.sha256()) {
    return absl::DataLossError(
        absl::StrCat("snapshot image ", path, " fails its checksum"));
  }
  return absl::OkStatus();
}

// Opens an image for reading; NotFound when it is missing.
absl::StatusOr<FILE*> OpenImage(const std::string& path) {
  FILE* file = std::fopen(path.c_str(), "rbe");
  if (file != nullptr) return file;
  if (errno == ENOENT) {
    return absl::NotFoundError(
        absl::StrCat("snapshot image ", path, " is missing"));
  }
  return Errno("open", path);
}

// Reads `file` from where it is to its end: OK only when those bytes are the
// image `ref` names (at `path`).
absl::Status CheckImageFile(const std::string& path, const SnapshotRef& ref,
                            FILE* file) {
  TrailedDigest digest;
  std::string piece(size_t{1} << 20, '\0');
  size_t n = 0;
  do {
    n = std::fread(piece.data(), 1, piece.size(), file);
    if (n < piece.size() && std::ferror(file) != 0) return Errno("read", path);
    digest.Add(std::string_view(piece.data(), n));
    // Past its size it is not the image: no need to read the rest.
  } while (n == piece.size() && digest.size() <= ref.size());
  return CheckImage(path, ref, &digest);
}

}  // namespace

std::string EncodeSnapshotRef(const SnapshotRef& ref) {
  return ref.SerializeAsString();
}

absl::StatusOr<SnapshotRef> DecodeSnapshotRef(std::string_view data) {
  SnapshotRef ref;
  if (data.empty() ||
      !ref.ParseFromArray(data.data(), static_cast<int>(data.size())) ||
      ref.file().empty() || ref.file().find('/') != std::string::npos ||
      ref.sha256().size() != kSnapshotDigestBytes) {
    return absl::InvalidArgumentError(
        "snapshot data is not a reference to an image file");
  }
  return ref;
}

// ---------------------------------------------------------------------------
// DurableFileWriter

DurableFileWriter::DurableFileWriter(std::string tmp_path,
                                     std::string final_path, FILE* file)
    : tmp_path_(std::move(tmp_path)),
      final_path_(std::move(final_path)),
      file_(file) {}

DurableFileWriter::~DurableFileWriter() {
  if (file_ != nullptr) std::fclose(file_);
  if (!committed_) ::unlink(tmp_path_.c_str());
}

absl::Status DurableFileWriter::Append(std::string_view bytes) {
  if (file_ == nullptr) return absl::FailedPreconditionError("file closed");
  if (!bytes.empty() &&
      std::fwrite(bytes.data(), 1, bytes.size(), file_) != bytes.size()) {
    return Errno("write", tmp_path_);
  }
  size_ += bytes.size();
  return absl::OkStatus();
}

std::string DurableFileWriter::file_name() const {
  return std::filesystem::path(final_path_).filename().string();
}

absl::Status DurableFileWriter::Commit() {
  if (file_ == nullptr) return absl::FailedPreconditionError("file closed");
  const bool flushed = std::fflush(file_) == 0 && ::fsync(fileno(file_)) == 0;
  const int saved = errno;
  std::fclose(file_);
  file_ = nullptr;
  if (!flushed) {
    errno = saved;
    return Errno("fsync", tmp_path_);
  }
  if (::rename(tmp_path_.c_str(), final_path_.c_str()) != 0) {
    return Errno("rename", tmp_path_);
  }
  committed_ = true;
  absl::Status synced =
      SyncDir(std::filesystem::path(final_path_).parent_path().string());
  if (!synced.ok()) {
    // The caller takes the image as never written, so nothing would ever
    // remove a whole copy of the state left under its final name.
    ::unlink(final_path_.c_str());
  }
  return synced;
}

// ---------------------------------------------------------------------------
// SnapshotFiles

SnapshotFiles::SnapshotFiles(std::string dir) : dir_(std::move(dir)) {}

absl::Status SnapshotFiles::Init() {
  std::error_code ec;
  const bool created = std::filesystem::create_directories(dir_, ec);
  if (ec) {
    return absl::InternalError(
        absl::StrCat("cannot create ", dir_, ": ", ec.message()));
  }
  // Images are synced into this folder before the log they replace is
  // compacted: the folder's own entry must be as durable, or a power cut
  // could lose every image while the compacted log stays.
  if (created) {
    const std::filesystem::path parent =
        std::filesystem::path(dir_).parent_path();
    SESSIOND_RETURN_IF_ERROR(SyncDir(parent.empty() ? "." : parent.string()));
  }
  for (const auto& entry : std::filesystem::directory_iterator(dir_, ec)) {
    if (absl::EndsWith(entry.path().filename().string(), kTmpSuffix)) {
      std::filesystem::remove(entry.path(), ec);
    }
  }
  return absl::OkStatus();
}

std::string SnapshotFiles::PathOf(absl::string_view file) const {
  return absl::StrCat(dir_, "/", file);
}

absl::StatusOr<std::unique_ptr<DurableFileWriter>> SnapshotFiles::NewFile(
    LogIndex index, Term term, absl::string_view origin) {
  // Unique per process and time: two images of the same index never share
  // a name.
  static std::atomic<uint64_t> sequence{0};
  const uint64_t nanos = static_cast<uint64_t>(
      std::chrono::duration_cast<std::chrono::nanoseconds>(
          std::chrono::system_clock::now().time_since_epoch())
          .count());
  const std::string name =
      absl::StrCat(index.value(), "-", term.value(), "-", origin, "-", nanos,
                   "-", sequence.fetch_add(1), kImageSuffix);
  const std::string final_path = PathOf(name);
  const std::string tmp_path = absl::StrCat(final_path, kTmpSuffix);
  FILE* file = std::fopen(tmp_path.c_str(), "wbxe");
  if (file == nullptr) return Errno("create", tmp_path);
  return std::unique_ptr<DurableFileWriter>(
      new DurableFileWriter(tmp_path, final_path, file));
}

absl::Status SnapshotFiles::Verify(const SnapshotRef& ref) const {
  const std::string path = PathOf(ref.file());
  SESSIOND_ASSIGN_OR_RETURN(FILE* const file, OpenImage(path));
  const absl::Status checked = CheckImageFile(path, ref, file);
  std::fclose(file);
  return checked;
}

void SnapshotFiles::RemoveOlderThan(LogIndex index,
                                    const std::set<std::string>& keep) const {
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(dir_, ec)) {
    const std::string name = entry.path().filename().string();
    if (!absl::EndsWith(name, kImageSuffix) || keep.count(name) > 0) continue;
    uint64_t image_index = 0;
    if (!absl::SimpleAtoi(name.substr(0, name.find('-')), &image_index) ||
        image_index >= index.value()) {
      continue;
    }
    // An image being streamed to a follower stays readable: the sender
    // holds it open, and unlinking an open file keeps its data.
    std::filesystem::remove(entry.path(), ec);
  }
}

size_t SnapshotFiles::RemoveAllExcept(const std::string& keep) const {
  size_t removed = 0;
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(dir_, ec)) {
    const std::string name = entry.path().filename().string();
    if (!absl::EndsWith(name, kImageSuffix) || name == keep) continue;
    if (std::filesystem::remove(entry.path(), ec)) ++removed;
  }
  return removed;
}

// ---------------------------------------------------------------------------
// SnapshotImageWriter

SnapshotImageWriter::SnapshotImageWriter(
    std::unique_ptr<DurableFileWriter> file, const SnapshotHeader& header)
    : file_(std::move(file)), sha_(std::make_unique<Sha256>()) {
  std::string head(kSnapshotMagic, kMagicBytes);
  const std::string header_bytes = header.SerializeAsString();
  wire::PutVarint(&head, header_bytes.size());
  head.append(header_bytes);
  status_ = Write(head);
}

SnapshotImageWriter::~SnapshotImageWriter() = default;

absl::Status SnapshotImageWriter::Write(std::string_view bytes) {
  sha_->Update(bytes);
  return file_->Append(bytes);
}

absl::Status SnapshotImageWriter::AddRecord(std::string_view stored_session) {
  if (!status_.ok()) return status_;
  if (stored_session.empty()) {
    return absl::InvalidArgumentError("empty snapshot record");
  }
  std::string frame;
  wire::PutVarint(&frame, stored_session.size());
  status_ = Write(frame);
  if (status_.ok()) status_ = Write(stored_session);
  ++count_;
  return status_;
}

absl::StatusOr<SnapshotRef> SnapshotImageWriter::Finish() {
  if (!status_.ok()) return status_;
  std::string end;
  wire::PutVarint(&end, 0);
  end.append(EncodeFixed64BE(count_));
  SESSIOND_RETURN_IF_ERROR(Write(end));
  const std::string digest = sha_->Final();
  SESSIOND_RETURN_IF_ERROR(file_->Append(digest));
  SESSIOND_RETURN_IF_ERROR(file_->Commit());
  SnapshotRef ref;
  ref.set_file(file_->file_name());
  ref.set_size(file_->size());
  ref.set_sha256(digest);
  return ref;
}

// ---------------------------------------------------------------------------
// SnapshotReceiver

SnapshotReceiver::SnapshotReceiver(std::unique_ptr<DurableFileWriter> file,
                                   uint64_t expected_size)
    : file_(std::move(file)),
      digest_(std::make_unique<TrailedDigest>()),
      expected_size_(expected_size) {}

SnapshotReceiver::~SnapshotReceiver() = default;

absl::Status SnapshotReceiver::Append(std::string_view chunk) {
  if (!status_.ok()) return status_;
  if (received_ + chunk.size() > expected_size_) {
    status_ = absl::DataLossError(
        absl::StrCat("snapshot stream longer than the announced ",
                     expected_size_, " bytes"));
    return status_;
  }
  received_ += chunk.size();
  status_ = file_->Append(chunk);
  if (!status_.ok()) return status_;
  digest_->Add(chunk);
  return absl::OkStatus();
}

absl::StatusOr<SnapshotRef> SnapshotReceiver::Finish() {
  if (!status_.ok()) return status_;
  if (received_ != expected_size_ ||
      digest_->trailer().size() != kSnapshotDigestBytes) {
    return absl::DataLossError(absl::StrCat("snapshot stream ended after ",
                                            received_, " of ", expected_size_,
                                            " bytes"));
  }
  if (!digest_->TrailerMatches()) {
    return absl::DataLossError("snapshot stream fails its checksum");
  }
  SESSIOND_RETURN_IF_ERROR(file_->Commit());
  SnapshotRef ref;
  ref.set_file(file_->file_name());
  ref.set_size(received_);
  ref.set_sha256(digest_->trailer());
  return ref;
}

// ---------------------------------------------------------------------------
// SnapshotImageSource

SnapshotImageSource::SnapshotImageSource(std::string path, SnapshotRef ref,
                                         FILE* file)
    : path_(std::move(path)),
      ref_(std::move(ref)),
      file_(file),
      digest_(std::make_unique<TrailedDigest>()) {}

SnapshotImageSource::~SnapshotImageSource() { std::fclose(file_); }

absl::StatusOr<std::unique_ptr<SnapshotImageSource>> SnapshotImageSource::Open(
    const SnapshotFiles& files, const SnapshotRef& ref) {
  std::string path = files.PathOf(ref.file());
  SESSIOND_ASSIGN_OR_RETURN(FILE* const file, OpenImage(path));
  return std::unique_ptr<SnapshotImageSource>(
      new SnapshotImageSource(std::move(path), ref, file));
}

absl::Status SnapshotImageSource::Next(size_t max, std::string* out) {
  if (done_) {
    out->clear();
    return absl::OkStatus();
  }
  // Never past the announced size, plus one byte to find a longer file.
  const uint64_t left = ref_.size() - std::min(ref_.size(), digest_->size());
  const size_t wanted = static_cast<size_t>(std::min<uint64_t>(max, left + 1));
  out->resize(wanted);
  const size_t n = std::fread(out->data(), 1, wanted, file_);
  if (n < wanted && std::ferror(file_) != 0) return Errno("read", path_);
  out->resize(n);
  digest_->Add(*out);
  // A full piece short of the announced size: more to come.
  if (digest_->size() < ref_.size() && n == wanted) return absl::OkStatus();
  // The announced size reached, the file ended early, or it goes on past
  // its size: this last piece goes out only if it is the image `ref_` names.
  SESSIOND_RETURN_IF_ERROR(CheckImage(path_, ref_, digest_.get()));
  done_ = true;
  return absl::OkStatus();
}

// ---------------------------------------------------------------------------
// SnapshotImageReader

SnapshotImageReader::SnapshotImageReader(FILE* file, uint64_t size)
    : file_(file), size_(size) {}

SnapshotImageReader::~SnapshotImageReader() {
  if (file_ != nullptr) std::fclose(file_);
}

absl::StatusOr<std::unique_ptr<SnapshotImageReader>> SnapshotImageReader::Open(
    const SnapshotFiles& files, const SnapshotRef& ref) {
  // One open for the check and the read: the bytes read are the bytes
  // checked, whatever is renamed over the path meanwhile.
  const std::string path = files.PathOf(ref.file());
  SESSIOND_ASSIGN_OR_RETURN(FILE* const file, OpenImage(path));
  std::unique_ptr<SnapshotImageReader> reader(
      new SnapshotImageReader(file, ref.size()));
  SESSIOND_RETURN_IF_ERROR(CheckImageFile(path, ref, file));
  if (std::fseek(file, 0, SEEK_SET) != 0) return Errno("seek", path);
  SESSIOND_RETURN_IF_ERROR(reader->ReadHeader());
  return reader;
}

absl::Status SnapshotImageReader::ReadExact(size_t n, std::string* out) {
  // No sum that can wrap: n comes from the image (a varint of up to 2^64).
  const uint64_t body = size_ - kSnapshotDigestBytes;
  if (offset_ > body || n > body - offset_) {
    return absl::DataLossError("snapshot image is truncated");
  }
  out->resize(n);
  if (n > 0 && std::fread(out->data(), 1, n, file_) != n) {
    return absl::DataLossError("snapshot image read failed");
  }
  offset_ += n;
  return absl::OkStatus();
}

absl::Status SnapshotImageReader::ReadVarint(uint64_t* value) {
  uint64_t result = 0;
  for (int shift = 0; shift < 64; shift += 7) {
    std::string byte;
    SESSIOND_RETURN_IF_ERROR(ReadExact(1, &byte));
    const uint8_t b = static_cast<uint8_t>(byte[0]);
    result |= static_cast<uint64_t>(b & 0x7f) << shift;
    if ((b & 0x80) == 0) {
      *value = result;
      return absl::OkStatus();
    }
  }
  return absl::DataLossError("snapshot image has a malformed varint");
}

absl::Status SnapshotImageReader::ReadHeader() {
  std::string magic;
  SESSIOND_RETURN_IF_ERROR(ReadExact(kMagicBytes, &magic));
  if (magic != std::string_view(kSnapshotMagic, kMagicBytes)) {
    return absl::DataLossError("not a sessiond snapshot image (bad magic)");
  }
  uint64_t n = 0;
  SESSIOND_RETURN_IF_ERROR(ReadVarint(&n));
  std::string bytes;
  SESSIOND_RETURN_IF_ERROR(ReadExact(n, &bytes));
  if (!header_.ParseFromString(bytes)) {
    return absl::DataLossError("snapshot image header does not parse");
  }
  return absl::OkStatus();
}

absl::Status SnapshotImageReader::ForEachRecord(
    const std::function<absl::Status(std::string_view)>& fn) {
  uint64_t count = 0;
  std::string record;
  for (;;) {
    uint64_t n = 0;
    SESSIOND_RETURN_IF_ERROR(ReadVarint(&n));
    if (n == 0) break;
    SESSIOND_RETURN_IF_ERROR(ReadExact(n, &record));
    SESSIOND_RETURN_IF_ERROR(fn(record));
    ++count;
  }
  std::string trailer;
  SESSIOND_RETURN_IF_ERROR(ReadExact(8, &trailer));
  if (DecodeFixed64BE(trailer) != count) {
    return absl::DataLossError(absl::StrCat("snapshot image holds ", count,
                                            " records, its trailer ", "says ",
                                            DecodeFixed64BE(trailer)));
  }
  if (offset_ != size_ - kSnapshotDigestBytes) {
    return absl::DataLossError("snapshot image has bytes after its records");
  }
  return absl::OkStatus();
}

}  // namespace sessiond::storage
