// Copyright sessiond authors. Licensed under the Apache License 2.0.
//
// sessiond: parses the configuration, builds the Daemon, serves until
// SIGTERM or SIGINT, then drains and exits 0. SIGHUP re-reads the config
// file and the environment: the reloadable options are applied, every other
// change is reported as needing a restart, and a config that no longer
// parses changes nothing. Under systemd (Type=notify) it tells the manager
// READY=1 once it serves, RELOADING=1 ... READY=1 around a reload, and
// STOPPING=1 when it begins to drain (sd_notify; nothing without
// $NOTIFY_SOCKET). SIGUSR2 restarts the daemon in place, on the same
// addresses, without a new process: the daemon asks for it itself when
// RocksDB's write-ahead log failed and the disk has room again.
//
// Exit codes: 0 after a clean shutdown, 1 when the daemon cannot start (the
// data dir is locked by another process or corrupt, the address cannot be
// bound), 2 for a bad command line or config file.
#include <pthread.h>
#include <signal.h>
#include <sys/prctl.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/fault_point.h"
#include "common/log.h"
#include "server/bootstrap.h"
#include "server/config.h"
#include "server/daemon.h"
#include "server/stop_watchdog.h"
#include "storage/raft_log_store.h"

namespace logging = sessiond::logging;

namespace {

// SIGHUP: parses the same command line again (so flags keep winning) with
// the file and environment as they are now; the daemon applies the
// reloadable options and `running` follows what it runs with.
void Reload(int argc, char** argv, sessiond::server::Daemon* daemon,
            sessiond::server::Config* running) {
  sd_notify(0, "RELOADING=1\nSTATUS=reloading the config");
  absl::StatusOr<sessiond::server::ParsedConfig> next =
      sessiond::server::ParseConfig(argc, argv);
  if (!next.ok()) {
    logging::Error("reload.failed",
                   logging::Fields()
                       .Add("error", std::string(next.status().message()))
                       .Add("msg",
                            "SIGHUP: the config does not parse; nothing "
                            "changed, still running with the previous one"));
  } else {
    const std::vector<sessiond::server::OptionChange> changes =
        sessiond::server::ChangedOptions(*running, next->config);
    const absl::StatusOr<sessiond::server::Config> merged =
        sessiond::server::WithReloadableOptions(*running, next->config);
    absl::Status s = merged.status();
    if (s.ok()) s = daemon->Reload(*merged);
    if (!s.ok()) {
      logging::Error("reload.not_applied", logging::Fields().Error(s));
    } else {
      const sessiond::server::Config& applied = *merged;
      int restart = 0;
      for (const sessiond::server::OptionChange& c : changes) {
        if (c.reloadable) {
          std::printf("sessiond: reloaded %s: %s -> %s\n", c.name.c_str(),
                      c.running.c_str(), c.next.c_str());
        } else {
          ++restart;
          logging::Warn(
              "reload.needs_restart",
              logging::Fields()
                  .Add("option", c.name)
                  .Add("running", c.running)
                  .Add("configured", c.next)
                  .Add("msg", absl::StrCat("needs a restart: ", c.name)));
        }
      }
      // Read again at every reload, changed or not: a role file edited in
      // place is no changed option, and the summary below would say
      // nothing happened.
      if (!applied.auth_file.empty()) {
        std::printf(
            "sessiond: re-read the role file %s: its roles are in "
            "force\n",
            applied.auth_file.c_str());
      }
      std::printf(
          "sessiond: SIGHUP: config reloaded (%d applied, %d need a "
          "restart)\n",
          static_cast<int>(changes.size()) - restart, restart);
      logging::SetLevel(*logging::ParseLevel(applied.log_level));
      *running = applied;
    }
  }
  std::fflush(stdout);
  sd_notify(0, "READY=1\nSTATUS=serving");
}

// The daemon asks for a restart in place (Daemon::Start's
// on_restart_needed) with this signal, so this thread's sigwait takes it with
// the others. An operator may send it too.
constexpr int kRestartSignal = SIGUSR2;

// The lines scripts and tests read once the daemon serves (again).
void AnnounceServing(const sessiond::server::Daemon& daemon,
                     const sessiond::server::Config& config) {
  std::printf(
      "sessiond listening on %s (data dir %s, %llu sessions loaded in %lld "
      "ms)\n",
      daemon.address().c_str(), config.data_dir.c_str(),
      static_cast<unsigned long long>(daemon.sessions_loaded()),
      static_cast<long long>(daemon.startup_ms()));
  std::printf("sessiond startup: %s\n", daemon.startup_breakdown().c_str());
  std::printf(
      "sessiond raft log: first index %llu, last index %llu\n",
      static_cast<unsigned long long>(daemon.log_store()->FirstIndex().value()),
      static_cast<unsigned long long>(daemon.log_store()->LastIndex().value()));
  if (!daemon.peer_address().empty()) {
    std::printf("sessiond cluster 0x%llx, node %lld, peers on %s\n",
                static_cast<unsigned long long>(daemon.cluster_id()),
                static_cast<long long>(config.node_id),
                daemon.peer_address().c_str());
    std::printf("PEER_LISTENING %s\n", daemon.peer_address().c_str());
  }
  if (!daemon.metrics_address().empty()) {
    std::printf("METRICS_LISTENING %s\n", daemon.metrics_address().c_str());
  }
  if (!daemon.jwks_address().empty()) {
    std::printf("JWKS_LISTENING %s\n", daemon.jwks_address().c_str());
  }
  // Machine-readable, for tests and scripts that started us with port 0.
  std::printf("LISTENING %s\n", daemon.address().c_str());
  std::fflush(stdout);
  sd_notifyf(0, "READY=1\nSTATUS=serving on %s\nMAINPID=%lu",
             daemon.address().c_str(), static_cast<unsigned long>(getpid()));
}

void RequestRestart() { kill(getpid(), kRestartSignal); }
// A node removed from its cluster stops as on SIGTERM (Daemon::Start).
void RequestStop() { kill(getpid(), SIGTERM); }

// The exit code of a shutdown cut short by its StopWatchdog.
constexpr int kStuckShutdownExitCode = 3;
// The exit code of a start refused for a reason only an operator can mend
// (a removed member's data dir, another node's, ...): unlike exit 1, no
// restart can (the unit's RestartPreventExitStatus).
constexpr int kNeedsAnOperatorExitCode = 4;

// The exit code of a start or restart that failed with `error`.
int StartFailureExitCode(const absl::Status& error) {
  return sessiond::server::IsForAnOperator(error) ? kNeedsAnOperatorExitCode
                                                  : 1;
}

// Set in the environment of the image a stuck restart in place executes:
// its first start is still a restart in place (a --force_new_cluster left
// on the command line is not applied again, server/daemon.cc).
constexpr char kRestartedByExecEnv[] = "SESSIOND_RESTARTED_IN_PLACE_BY_EXEC";

// A restart in place whose teardown is stuck starts afresh as a crash and
// a supervisor's restart would, in this same process (exec keeps the pid,
// so systemd and scripts keep tracking it): with the command line it
// started with, so a port 0 picks a new port. The kernel ends every thread
// and closes every file RocksDB and gRPC opened (they are close-on-exec),
// which releases the data dir's lock.
[[noreturn]] void ExecAgain(char** argv) {
  std::vector<std::string> env;
  for (char** e = environ; *e != nullptr; ++e) env.emplace_back(*e);
  env.push_back(absl::StrCat(kRestartedByExecEnv, "=1"));
  std::vector<char*> envp;
  for (std::string& e : env) envp.push_back(e.data());
  envp.push_back(nullptr);
  execve("/proc/self/exe", argv, envp.data());
  logging::Error("restart.exec_failed",
                 logging::Fields()
                     .Add("errno", errno)
                     .Add("msg", "cannot execute sessiond again: exiting"));
  _exit(kStuckShutdownExitCode);
}

// Shuts `daemon` down and destroys it; past what its drain may take (the
// grace, three times: calls, the server's own shutdown, internal writes)
// plus config.stop_timeout_ms, the StopWatchdog calls `give_up`.
sessiond::server::Daemon::Handover TearDown(
    std::unique_ptr<sessiond::server::Daemon>* daemon,
    const sessiond::server::Config& config, const char* what,
    std::function<void()> give_up) {
  sessiond::server::StopWatchdog watchdog(
      absl::Milliseconds(config.stop_timeout_ms + 3 * config.shutdown_grace_ms),
      what, std::move(give_up));
  (*daemon)->Shutdown();
  sessiond::server::Daemon::Handover handover = (*daemon)->TakeHandover();
  daemon->reset();
  return handover;
}

// SIGTERM or SIGINT sent while a restart in place tore the daemon down
// (blocked, so still pending; an exec keeps it pending too): taken now,
// without waiting. 0 when none is.
int TakePendingStop() {
  sigset_t stops;
  sigemptyset(&stops);
  sigaddset(&stops, SIGTERM);
  sigaddset(&stops, SIGINT);
  const struct timespec now = {0, 0};
  const int taken = sigtimedwait(&stops, nullptr, &now);
  return taken > 0 ? taken : 0;
}

// While a daemon starts, until it is about to serve, a SIGTERM or SIGINT
// ends the process at once, exit 0. The signals are blocked for the main loop's
// sigwait, which runs only once the daemon serves; a start can wait 10 minutes
// for its peers (bootstrap.waiting) and as long again for its replay, and a
// stop asked for meanwhile waited it all out (systemd then killed it past
// TimeoutStopSec). Nothing is served yet, and every write acknowledged
// before is in the Raft log on disk: ending here is a crash at start-up,
// which sessiond recovers from as from kill -9.
class StopWhileStarting {
 public:
  StopWhileStarting() : thread_([this] { Watch(); }) {}
  ~StopWhileStarting() { Stop(); }
  // From here on a stop is the main loop's to take (the daemon is about to
  // serve: Daemon::Start's before_serving). Idempotent.
  void Stop() {
    started_.store(true);
    if (thread_.joinable()) thread_.join();
  }
  StopWhileStarting(const StopWhileStarting&) = delete;
  StopWhileStarting& operator=(const StopWhileStarting&) = delete;

 private:
  void Watch() {
    pthread_setname_np(pthread_self(), "sd-start-watch");
    sigset_t stops;
    sigemptyset(&stops);
    sigaddset(&stops, SIGTERM);
    sigaddset(&stops, SIGINT);
    const struct timespec poll = {0, 100 * 1000 * 1000};
    while (!started_.load()) {
      const int taken = sigtimedwait(&stops, nullptr, &poll);
      if (taken <= 0) continue;
      logging::Info("shutdown.done",
                    logging::Fields()
                        .Add("signal", strsignal(taken))
                        .Add("msg",
                             "stopped while starting: nothing was served "
                             "yet; the next start goes on from the data dir"));
      std::fflush(stdout);
      std::fflush(stderr);
      _exit(0);
    }
  }

  std::atomic<bool> started_{false};
  std::thread thread_;
};

// Stops `daemon` and starts a new one in its place with `config`, on the
// addresses the old one had bound (a port 0 in `config` would pick new
// ones). `config` itself stays as configured, so a later SIGHUP compares
// against what the operator wrote. nullopt once the new one serves; else the
// code the process exits with: as at a first start when it cannot start, 0
// when a stop was asked for during the teardown (the node stops rather than
// start again only to drain once more and, under systemd, overrun
// TimeoutStopSec).
std::optional<int> RestartInPlace(
    std::unique_ptr<sessiond::server::Daemon>* daemon,
    const sessiond::server::Config& config, char** argv) {
  sd_notify(0, "RELOADING=1\nSTATUS=restarting in place");
  logging::Info("restart.begin",
                logging::Fields().Add("msg", "restarting this node in place"));
  sessiond::server::Config bound = config;
  bound.restarting_in_place = true;
  bound.listen = (*daemon)->address();
  if (!(*daemon)->peer_address().empty()) {
    bound.peer_listen = (*daemon)->peer_address();
  }
  if (!(*daemon)->metrics_address().empty()) {
    bound.metrics_listen = (*daemon)->metrics_address();
  }
  if (!(*daemon)->jwks_address().empty()) {
    bound.jwks_listen = (*daemon)->jwks_address();
  }
  // An exec (the teardown stuck) starts afresh: the handover is lost then.
  sessiond::server::Daemon::Handover handover =
      TearDown(daemon, config, "restart in place", [argv] { ExecAgain(argv); });
  if (const int stop = TakePendingStop(); stop != 0) {
    sd_notify(0, "STOPPING=1\nSTATUS=stopped during a restart in place");
    logging::Info("shutdown.done",
                  logging::Fields()
                      .Add("signal", strsignal(stop))
                      .Add("msg",
                           "stopped cleanly: the stop came during a restart "
                           "in place, which does not start again"));
    return 0;
  }
  absl::StatusOr<std::unique_ptr<sessiond::server::Daemon>> next = [&] {
    StopWhileStarting stop_while_starting;
    return sessiond::server::Daemon::Start(
        bound, RequestRestart, RequestStop, std::move(handover),
        [&stop_while_starting] { stop_while_starting.Stop(); });
  }();
  if (!next.ok()) {
    logging::Error("startup.failed", logging::Fields()
                                         .Add("listen", bound.listen)
                                         .Add("data_dir", bound.data_dir)
                                         .Error(next.status())
                                         .Add("msg", "cannot restart"));
    return StartFailureExitCode(next.status());
  }
  *daemon = *std::move(next);
  logging::Info("restart.done",
                logging::Fields().Add("msg", "restarted in place: serving"));
  AnnounceServing(**daemon, bound);
  return std::nullopt;
}

}  // namespace

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
  sessiond::server::Config config = parsed->config;
  // Validated by ParseConfig.
  logging::Configure(*logging::ParseFormat(config.log_format),
                     *logging::ParseLevel(config.log_level));
  logging::SetNode(static_cast<uint64_t>(config.node_id));
  // Armed once per process image, not per Daemon::Start: its hits count
  // across restarts in place, so a test can let one restart pass and stall
  // the next.
  if (!config.fault_point.empty() &&
      !sessiond::ArmFaultPoint(config.fault_point)) {
    std::fprintf(stderr,
                 "sessiond: --fault_point=%s: expected NAME, NAME@N, either "
                 "with ~MS or !, N and MS >= 1\n",
                 config.fault_point.c_str());
    return 2;
  }

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
  sigaddset(&signals, SIGHUP);
  sigaddset(&signals, kRestartSignal);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  signal(SIGPIPE, SIG_IGN);

  std::printf("%s\n", sessiond::server::ConfigSummary(config).c_str());
  std::fflush(stdout);

  // The kernel names a process after the file it executes: "exe" after a
  // stuck restart in place (ExecAgain), which pgrep and the journal's _COMM
  // would not find.
  prctl(PR_SET_NAME, "sessiond");
  sessiond::server::Config first_start = config;
  if (std::getenv(kRestartedByExecEnv) != nullptr) {
    first_start.restarting_in_place = true;
    unsetenv(kRestartedByExecEnv);
    // A stop asked for during the restart whose teardown was cut short: it
    // stays pending across the exec, and ends that teardown as a stuck
    // shutdown's does.
    if (const int stop = TakePendingStop(); stop != 0) {
      logging::Warn("shutdown.done",
                    logging::Fields()
                        .Add("signal", strsignal(stop))
                        .Add("msg",
                             "the stop came during a restart in place whose "
                             "teardown was cut short: not starting again"));
      return kStuckShutdownExitCode;
    }
  }
  absl::StatusOr<std::unique_ptr<sessiond::server::Daemon>> daemon = [&] {
    StopWhileStarting stop_while_starting;
    return sessiond::server::Daemon::Start(
        first_start, RequestRestart, RequestStop, {},
        [&stop_while_starting] { stop_while_starting.Stop(); });
  }();
  if (!daemon.ok()) {
    logging::Error("startup.failed", logging::Fields()
                                         .Add("listen", config.listen)
                                         .Add("data_dir", config.data_dir)
                                         .Error(daemon.status())
                                         .Add("msg", "cannot start"));
    return StartFailureExitCode(daemon.status());
  }
  AnnounceServing(**daemon, config);

  int received = 0;
  while (sigwait(&signals, &received) == 0) {
    if (received == SIGHUP) {
      Reload(argc, argv, daemon->get(), &config);
    } else if (received == kRestartSignal) {
      if (const std::optional<int> exit_code =
              RestartInPlace(&*daemon, config, argv)) {
        return *exit_code;
      }
    } else {
      break;
    }
  }
  sd_notify(0, "STOPPING=1\nSTATUS=draining");
  logging::Info("shutdown.begin",
                logging::Fields().Add("signal", strsignal(received)));
  TearDown(&*daemon, config, "shutdown", [] { _exit(kStuckShutdownExitCode); });
  logging::Info("shutdown.done",
                logging::Fields().Add("msg", "stopped cleanly"));
  return 0;
}
