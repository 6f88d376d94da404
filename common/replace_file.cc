// Copyright sessiond authors. Licensed under the Apache License 2.0.
#include "common/replace_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace sessiond {

absl::Status ReplaceFile(const std::string& path, absl::string_view text,
                         mode_t mode, bool durable) {
  const std::string tmp = path + ".tmp";
  auto failed = [&tmp](absl::string_view what) {
    const int error = errno;
    ::unlink(tmp.c_str());
    return absl::InternalError(
        absl::StrCat("cannot ", what, " ", tmp, ": ", std::strerror(error)));
  };
  // Made afresh, so `mode` holds even when a .tmp was left behind.
  ::unlink(tmp.c_str());
  const int fd =
      ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
  if (fd < 0) return failed("create");
  size_t written = 0;
  while (written < text.size()) {
    const ssize_t n = ::write(fd, text.data() + written, text.size() - written);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      ::close(fd);
      return failed("write");
    }
    written += static_cast<size_t>(n);
  }
  if (durable && ::fsync(fd) != 0) {
    ::close(fd);
    return failed("sync");
  }
  if (::close(fd) != 0) return failed("close");
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    return failed(absl::StrCat("rename over ", path, " the file"));
  }
  return absl::OkStatus();
}

}  // namespace sessiond
