// Copyright sessiond authors. Licensed under the Apache License 2.0.
//
// sessiond: parses the configuration, builds the Daemon, serves until
// SIGTERM or SIGINT, then drains and exits 0.
//
// Exit codes: 0 after a clean shutdown, 1 when the daemon cannot start (the
// data dir is locked by another process or corrupt, the address cannot be
// bound), 2 for a bad command line or config file.
#include <signal.h>

#include <cstdio>
#include <cstring>

#include "absl/synchronization/mutex.h"
#include "server/config.h"
#include "server/daemon.h"
#include "storage/raft_log_store.h"

int main(int argc, char** argv) {
  absl::StatusOr<sessiond::server::ParsedConfig> parsed =
      sessiond::server::ParseConfig(argc, argv);
  if (!parsed.ok()) {
    std::fprintf(stderr, "sessiond: %s\nsessiond: see sessiond --help\n",
                 std::string(parsed.status().message()).c_str());
    return 2;
  }
  if (parsed->help) {
    std::fputs(parsed->help_text.c_str(), stdout);
    return 0;
  }
  const sessiond::server::Config& config = parsed->config;

  // Debian's Abseil is built with deadlock detection on, which makes every
  // absl::Mutex acquisition update a process-wide lock graph under a global
  // lock (2% of CPU and a point of contention under load in profiles). Tests
  // keep it; the production binary does not pay for it.
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);

  // Signals are taken synchronously by this thread (sigwait below), so no
  // handler runs in an arbitrary thread's context. Blocked before any thread
  // starts, so every thread inherits the mask.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  signal(SIGPIPE, SIG_IGN);

  std::printf("%s\n", sessiond::server::ConfigSummary(config).c_str());
  std::fflush(stdout);

  absl::StatusOr<std::unique_ptr<sessiond::server::Daemon>> daemon =
      sessiond::server::Daemon::Start(config);
  if (!daemon.ok()) {
    std::fprintf(stderr,
                 "sessiond: cannot start (listen %s, data dir %s): %s\n",
                 config.listen.c_str(), config.data_dir.c_str(),
                 daemon.status().ToString().c_str());
    return 1;
  }
  std::printf(
      "sessiond listening on %s (data dir %s, %llu sessions loaded in %lld "
      "ms)\n",
      (*daemon)->address().c_str(), config.data_dir.c_str(),
      static_cast<unsigned long long>((*daemon)->sessions_loaded()),
      static_cast<long long>((*daemon)->startup_ms()));
  std::printf("sessiond startup: %s\n", (*daemon)->startup_breakdown().c_str());
  std::printf("sessiond raft log: first index %llu, last index %llu\n",
              static_cast<unsigned long long>(
                  (*daemon)->log_store()->FirstIndex().value()),
              static_cast<unsigned long long>(
                  (*daemon)->log_store()->LastIndex().value()));
  if (!(*daemon)->peer_address().empty()) {
    std::printf("sessiond cluster 0x%llx, node %lld, peers on %s\n",
                static_cast<unsigned long long>((*daemon)->cluster_id()),
                static_cast<long long>(config.node_id),
                (*daemon)->peer_address().c_str());
    std::printf("PEER_LISTENING %s\n", (*daemon)->peer_address().c_str());
  }
  // Machine-readable, for tests and scripts that started us with port 0.
  std::printf("LISTENING %s\n", (*daemon)->address().c_str());
  std::fflush(stdout);

  int received = 0;
  sigwait(&signals, &received);
  std::fprintf(stderr, "sessiond: %s, draining\n", strsignal(received));
  (*daemon)->Shutdown();
  daemon->reset();
  std::fprintf(stderr, "sessiond: stopped cleanly\n");
  return 0;
}
