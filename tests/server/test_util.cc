// Copyright sessiond authors. Licensed under the Apache License 2.0.
#include "tests/server/test_util.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/time/clock.h"

namespace sessiond::server::testing {

ScopedTempDir::ScopedTempDir() {
  char tmpl[] = "/tmp/sessiond-server-test-XXXXXX";
  const char* dir = mkdtemp(tmpl);
  if (dir == nullptr) {
    std::perror("mkdtemp");
    std::abort();
  }
  path_ = dir;
}

ScopedTempDir::~ScopedTempDir() {
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
}

Subprocess::Subprocess(std::string binary, std::vector<std::string> args,
                       std::string stderr_path)
    : binary_(std::move(binary)),
      args_(std::move(args)),
      stderr_path_(std::move(stderr_path)) {}

Subprocess::~Subprocess() {
  if (pid_ > 0) {
    kill(pid_, SIGKILL);
    waitpid(pid_, nullptr, 0);
  }
  if (stdout_fd_ >= 0) close(stdout_fd_);
}

bool Subprocess::Start() {
  int fds[2];
  if (pipe(fds) != 0) return false;
  std::vector<std::string> argv_storage = {binary_};
  argv_storage.insert(argv_storage.end(), args_.begin(), args_.end());
  std::vector<char*> argv;
  for (std::string& a : argv_storage) argv.push_back(a.data());
  argv.push_back(nullptr);
  const pid_t pid = fork();
  if (pid < 0) return false;
  if (pid == 0) {
    dup2(fds[1], STDOUT_FILENO);
    const int err =
        open(stderr_path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (err >= 0) dup2(err, STDERR_FILENO);
    close(fds[0]);
    close(fds[1]);
    execv(binary_.c_str(), argv.data());
    _exit(127);
  }
  close(fds[1]);
  stdout_fd_ = fds[0];
  pid_ = pid;
  return true;
}

std::string Subprocess::WaitForLine(const std::string& prefix,
                                    absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  size_t scanned = 0;
  for (;;) {
    // Look for a complete line with the prefix in what was read so far.
    size_t pos = scanned;
    while (true) {
      const size_t nl = stdout_.find('\n', pos);
      if (nl == std::string::npos) break;
      const std::string line = stdout_.substr(pos, nl - pos);
      if (line.rfind(prefix, 0) == 0) return line.substr(prefix.size());
      pos = nl + 1;
    }
    scanned = pos;
    const absl::Duration left = deadline - absl::Now();
    if (left <= absl::ZeroDuration() || stdout_fd_ < 0) return "";
    pollfd p{stdout_fd_, POLLIN, 0};
    const int r =
        poll(&p, 1, static_cast<int>(absl::ToInt64Milliseconds(left)) + 1);
    if (r <= 0) continue;
    char buf[4096];
    const ssize_t n = read(stdout_fd_, buf, sizeof(buf));
    if (n <= 0) return "";  // EOF: the child exited
    stdout_.append(buf, static_cast<size_t>(n));
  }
}

void Subprocess::Signal(int signal) {
  if (pid_ > 0) kill(pid_, signal);
}

int Subprocess::Wait(absl::Duration timeout) {
  if (pid_ <= 0) return -1;
  const absl::Time deadline = absl::Now() + timeout;
  while (true) {
    int status = 0;
    const pid_t r = waitpid(pid_, &status, WNOHANG);
    if (r == pid_) {
      pid_ = -1;
      if (WIFEXITED(status)) return WEXITSTATUS(status);
      if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
      return -1;
    }
    if (absl::Now() >= deadline) return -1;
    absl::SleepFor(absl::Milliseconds(10));
  }
}

std::string Subprocess::Stderr() const {
  std::ifstream in(stderr_path_);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

}  // namespace sessiond::server::testing
