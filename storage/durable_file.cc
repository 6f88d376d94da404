// Copyright sessiond authors. Licensed under the Apache License 2.0.
#include "storage/durable_file.h"

#include <filesystem>
#include <memory>

#include "absl/strings/str_cat.h"

namespace sessiond::storage {

absl::Status SyncDir(const std::string& dir, rocksdb::FileSystem* fs) {
  std::unique_ptr<rocksdb::FSDirectory> directory;
  rocksdb::IOStatus s =
      fs->NewDirectory(dir, rocksdb::IOOptions(), &directory, nullptr);
  if (s.ok()) s = directory->Fsync(rocksdb::IOOptions(), nullptr);
  if (s.ok()) s = directory->Close(rocksdb::IOOptions(), nullptr);
  if (s.ok()) return absl::OkStatus();
  return absl::InternalError(
      absl::StrCat("fsync of folder ", dir, ": ", s.ToString()));
}

absl::Status AppendDurably(const std::string& path, std::string_view bytes,
                           rocksdb::FileSystem* fs) {
  // Created only when it is not there: any other failure to look (EIO,
  // EACCES) must not make a new, empty file of one that holds lines.
  const rocksdb::IOStatus exists =
      fs->FileExists(path, rocksdb::IOOptions(), nullptr);
  if (!exists.ok() && !exists.IsNotFound()) {
    return absl::InternalError(
        absl::StrCat("appending to ", path, ": ", exists.ToString()));
  }
  const bool created = exists.IsNotFound();
  std::unique_ptr<rocksdb::FSWritableFile> file;
  rocksdb::IOStatus s =
      created
          ? fs->NewWritableFile(path, rocksdb::FileOptions(), &file, nullptr)
          : fs->ReopenWritableFile(path, rocksdb::FileOptions(), &file,
                                   nullptr);
  const rocksdb::IOOptions io;
  if (s.ok()) {
    s = file->Append(rocksdb::Slice(bytes.data(), bytes.size()), io, nullptr);
  }
  if (s.ok()) s = file->Sync(io, nullptr);
  if (file != nullptr) {
    const rocksdb::IOStatus closed = file->Close(io, nullptr);
    if (s.ok()) s = closed;
  }
  if (!s.ok()) {
    return absl::InternalError(
        absl::StrCat("appending to ", path, ": ", s.ToString()));
  }
  if (!created) return absl::OkStatus();
  const std::string dir = std::filesystem::path(path).parent_path().string();
  return SyncDir(dir.empty() ? "." : dir, fs);
}

}  // namespace sessiond::storage
