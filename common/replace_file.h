// Copyright sessiond authors. Licensed under the Apache License 2.0.
#ifndef SESSIOND_COMMON_REPLACE_FILE_H_
#define SESSIOND_COMMON_REPLACE_FILE_H_

#include <sys/types.h>

#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace sessiond {

// Replaces the file at `path` with `text` as one step for its readers:
// writes `path`.tmp (created with `mode`, whatever the umask adds to an
// existing one: it is made afresh), then rename(2)s it over `path`, so a
// reader opens either the old file or the new one, never a part. With
// `durable` the new file's data is fsync(2)ed before the rename (the
// folder is not: a caller that needs the name durable syncs it).
// Internal error naming the path and what failed; `path` unchanged then.
absl::Status ReplaceFile(const std::string& path, absl::string_view text,
                         mode_t mode, bool durable);

}  // namespace sessiond

#endif  // SESSIOND_COMMON_REPLACE_FILE_H_
