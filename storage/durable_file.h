// Copyright sessiond authors. Licensed under the Apache License 2.0.
//
// Small files outside RocksDB's own that must survive a power cut once
// written: written through a rocksdb::FileSystem (the real one by default;
// the tests' PowerCutFileSystem proves the promise), synced, and their
// folder synced when it changed.
#ifndef SESSIOND_STORAGE_DURABLE_FILE_H_
#define SESSIOND_STORAGE_DURABLE_FILE_H_

#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "rocksdb/file_system.h"

namespace sessiond::storage {

// fsync of the folder `dir`: a file created, renamed or removed in it stays
// so after a power cut. Internal error naming the folder on failure.
absl::Status SyncDir(
    const std::string& dir,
    rocksdb::FileSystem* fs = rocksdb::FileSystem::Default().get());

// Appends `bytes` to the file at `path` (created when missing) and returns
// once the append is durable: the file is synced, and so is its folder when
// the file was created. Internal error naming the path on failure; the file
// may then hold part of `bytes`. Not for concurrent appends to one path:
// two callers may both find it missing, and the second one's create
// truncates the first one's bytes; callers serialize.
absl::Status AppendDurably(
    const std::string& path, std::string_view bytes,
    rocksdb::FileSystem* fs = rocksdb::FileSystem::Default().get());

}  // namespace sessiond::storage

#endif  // SESSIOND_STORAGE_DURABLE_FILE_H_
