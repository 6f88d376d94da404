// Copyright sessiond authors. Licensed under the Apache License 2.0.
#ifndef SESSIOND_TESTS_STORAGE_TEMP_DIR_H_
#define SESSIOND_TESTS_STORAGE_TEMP_DIR_H_

#include <stdlib.h>

#include <filesystem>
#include <string>

namespace sessiond::testing {

// A unique directory under /tmp, removed with everything in it when the
// object goes away.
class TempDir {
 public:
  TempDir() {
    char pattern[] = "/tmp/sessiond-storage-test-XXXXXX";
    const char* made = mkdtemp(pattern);
    path_ = made != nullptr ? made : "";
  }
  ~TempDir() {
    std::error_code ec;
    if (!path_.empty()) std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  const std::string& path() const { return path_; }
  // A path inside the directory (not created).
  std::string Sub(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

}  // namespace sessiond::testing

#endif  // SESSIOND_TESTS_STORAGE_TEMP_DIR_H_
