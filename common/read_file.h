// Copyright sessiond authors. Licensed under the Apache License 2.0.
#ifndef SESSIOND_COMMON_READ_FILE_H_
#define SESSIOND_COMMON_READ_FILE_H_

#include <cstddef>
#include <string>

#include "absl/status/statusor.h"

namespace sessiond {

// The whole content of the regular file at `path`, read with every error
// seen. (`std::ifstream` and `<< rdbuf()` swallow read errors: a directory
// or a disk error read as an empty file, and a role file read that way
// withdrew every role.) Errors start with the path and say what failed:
// kNotFound (no such file), kPermissionDenied, kFailedPrecondition (not a
// regular file: a directory, a device), kResourceExhausted (larger than
// `max_bytes`), kDataLoss (a read error).
absl::StatusOr<std::string> ReadWholeFile(const std::string& path,
                                          size_t max_bytes = size_t{64} << 20);

// What stat(2) says of the file at `path`, as text, to tell whether it is
// worth reading again: a rename gives a new device:inode, a write in place
// a new size or mtime. An error is a stamp too ("errno N"): it changes when
// the file comes back.
std::string FileStamp(const std::string& path);

}  // namespace sessiond

#endif  // SESSIOND_COMMON_READ_FILE_H_
