// Copyright sessiond authors. Licensed under the Apache License 2.0.
#include "common/check.h"

#include <cstdio>
#include <cstdlib>

namespace sessiond {

void CheckFailed(const char* file, int line, const char* condition,
                 std::string_view message) {
  std::fprintf(stderr, "%s:%d: CHECK failed: %s %.*s\n", file, line, condition,
               static_cast<int>(message.size()), message.data());
  std::fflush(stderr);
  std::abort();
}

}  // namespace sessiond
