// Copyright sessiond authors. Licensed under the Apache License 2.0.
#ifndef SESSIOND_TESTS_SERVER_TEST_UTIL_H_
#define SESSIOND_TESTS_SERVER_TEST_UTIL_H_

#include <sys/types.h>

#include <string>
#include <vector>

#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace sessiond::server::testing {

// A fresh directory under /tmp, removed recursively by the destructor.
class ScopedTempDir {
 public:
  ScopedTempDir();
  ~ScopedTempDir();
  ScopedTempDir(const ScopedTempDir&) = delete;
  ScopedTempDir& operator=(const ScopedTempDir&) = delete;

  const std::string& path() const { return path_; }
  // A path inside the directory (not created).
  std::string Child(const std::string& name) const {
    return path_ + "/" + name;
  }

 private:
  std::string path_;
};

// A child process (the real sessiond binary) with stdout on a pipe (so the
// test can read its LISTENING line) and stderr in a file.
class Subprocess {
 public:
  Subprocess(std::string binary, std::vector<std::string> args,
             std::string stderr_path);
  ~Subprocess();  // SIGKILLs and reaps a child still running.

  // Forks and execs. Returns false when fork fails.
  bool Start();

  // Reads stdout until a line starting with `prefix`, for at most
  // `timeout`; returns the rest of that line, or "" on timeout or EOF.
  std::string WaitForLine(const std::string& prefix, absl::Duration timeout);

  // Sends `signal`.
  void Signal(int signal);

  // Waits for exit for at most `timeout`; returns the exit code, 128+signal
  // when killed by a signal, or -1 on timeout (the child keeps running).
  int Wait(absl::Duration timeout);

  std::string Stderr() const;
  const std::string& stdout_text() const { return stdout_; }

 private:
  std::string binary_;
  std::vector<std::string> args_;
  std::string stderr_path_;
  pid_t pid_ = -1;
  int stdout_fd_ = -1;
  std::string stdout_;
};

// Polls `done` every 20 ms until it holds or `timeout` passes; returns
// whether it held (checked once more at the end).
template <typename F>
bool Eventually(F done, absl::Duration timeout = absl::Seconds(30)) {
  const absl::Time deadline = absl::Now() + timeout;
  while (absl::Now() < deadline) {
    if (done()) return true;
    absl::SleepFor(absl::Milliseconds(20));
  }
  return done();
}

}  // namespace sessiond::server::testing

#endif  // SESSIOND_TESTS_SERVER_TEST_UTIL_H_
