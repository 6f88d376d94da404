// Copyright sessiond authors. Licensed under the Apache License 2.0.
//
// Small files outside RocksDB that must survive a power cut once written:
// an fsync of the file, and of its folder when the folder changed.
#ifndef SESSIOND_STORAGE_DURABLE_FILE_H_
#define SESSIOND_STORAGE_DURABLE_FILE_H_

#include <string>
#include <string_view>

#include "absl/status/status.h"

namespace sessiond::storage {

// fsync of the folder `dir`: a file created, renamed or removed in it stays
// so after a power cut. Internal error naming the folder on failure.
absl::Status SyncDir(const std::string& dir);

// Appends `bytes` to the file at `path` (created, mode 0644, when missing)
// and returns once the append is durable: the file is fsynced, and so is its
// folder when the file was created. Internal error naming the path and the
// failing call; the file may then hold part of `bytes`.
absl::Status AppendDurably(const std::string& path, std::string_view bytes);

}  // namespace sessiond::storage

#endif  // SESSIOND_STORAGE_DURABLE_FILE_H_
