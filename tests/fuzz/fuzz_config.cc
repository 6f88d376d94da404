// Copyright sessiond authors. Licensed under the Apache License 2.0.
//
// The operator's files: the role file (--auth_file, server/auth.h), a
// --initial_cluster value, and the config file (--config, TOML/INI through
// CLI11, server/config.h). Every input is refused with a message or
// accepted; nothing escapes as an exception or a crash.
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <string>
#include <string_view>

#include "absl/strings/string_view.h"
#include "server/auth.h"
#include "server/config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string input(reinterpret_cast<const char*>(data), size);
  (void)sessiond::server::ParseAuthConfig(absl::string_view(input), "fuzz");
  (void)sessiond::server::ParseInitialCluster(input);

  static const std::string path =
      "/tmp/sessiond-fuzz-config-" + std::to_string(getpid()) + ".toml";
  if (FILE* f = std::fopen(path.c_str(), "wb")) {
    std::fwrite(input.data(), 1, input.size(), f);
    std::fclose(f);
    const char* argv[] = {"sessiond", "--config", path.c_str()};
    (void)sessiond::server::ParseConfig(3, argv);
    std::remove(path.c_str());
  }
  return 0;
}
