// Copyright sessiond authors. Licensed under the Apache License 2.0.
#ifndef SESSIOND_TESTS_INTEGRATION_SESSIOND_PROCESS_H_
#define SESSIOND_TESTS_INTEGRATION_SESSIOND_PROCESS_H_

#include <grpcpp/security/credentials.h>
#include <sys/types.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "sessiond/v1/session.grpc.pb.h"

namespace sessiond::testing {

// The address a machine-readable start-up line of the log at `log_path`
// names ("METRICS_LISTENING ", "JWKS_LISTENING " as `prefix`), waiting up
// to 30 s for the line; "" when it never came.
std::string ListeningAddressIn(const std::string& log_path,
                               const std::string& prefix);

// "host:port" split at its last colon (port 0 when it is not a number).
struct HostPort {
  std::string host;
  int port = 0;
};
HostPort SplitHostPort(const std::string& address);

// Sets `context`'s deadline `d` from now.
void SetDeadline(grpc::ClientContext* context, absl::Duration d);

// A real sessiond process for multi-process tests, in the manner of Kudu's
// ExternalMiniCluster: started from the built binary on 127.0.0.1 with a port
// picked free, killed with SIGKILL (no destructor, no flush, like a power
// cut) or stopped with SIGTERM, restarted on the same data dir.
//
// Not thread-safe: one test thread drives it. Stubs it hands out are.
class SessiondProcess {
 public:
  // `binary`: path to sessiond. `data_dir` is kept across restarts.
  SessiondProcess(std::string binary, std::string data_dir,
                  std::vector<std::string> extra_flags = {});
  ~SessiondProcess();  // SIGKILLs the process if still running.

  // Starts the process and waits (bounded by `timeout`) until it answers a
  // ValidateSession call. Picks a new free port at every start, unless a
  // fixed client address was set.
  absl::Status Start(absl::Duration timeout = absl::Seconds(60));
  // Start in two halves, for clusters (every member must be running before
  // any of them serves): fork and exec, then wait until it serves.
  absl::Status Launch();
  absl::Status WaitUntilServing(absl::Duration timeout);

  // The client address every later start listens on ("127.0.0.1:port").
  void set_listen(std::string address) { fixed_listen_ = std::move(address); }
  // Extra environment entries ("NAME=value") for later starts.
  void set_env(std::vector<std::string> env) { env_ = std::move(env); }
  // Where later starts write their log (default: beside the data dir),
  // e.g. off a disk a test fills.
  void set_log_dir(std::string dir) { log_dir_ = std::move(dir); }
  // What NewStub (and the readiness probe) present (null: plaintext).
  void set_credentials(std::shared_ptr<grpc::ChannelCredentials> credentials) {
    credentials_ = std::move(credentials);
  }
  void set_extra_flags(std::vector<std::string> flags) {
    extra_flags_ = std::move(flags);
  }
  const std::vector<std::string>& extra_flags() const { return extra_flags_; }

  // SIGSTOP / SIGCONT.
  void Pause();
  void Resume();
  pid_t pid() const { return pid_; }

  // SIGKILL, then reaps the process.
  void Kill();
  // SIGTERM, then waits for exit; returns the exit status (as from waitpid)
  // or -1 when it had to be killed after `timeout`.
  int Terminate(absl::Duration timeout = absl::Seconds(30));

  // Waits up to `timeout` for the process to exit by itself (e.g. at a fault
  // point); returns its waitpid status, or -1 if it is still running.
  int WaitForExit(absl::Duration timeout);

  bool running() const { return pid_ > 0; }
  const std::string& address() const { return address_; }
  const std::string& data_dir() const { return data_dir_; }
  const std::string& log_path() const { return log_path_; }

  // A stub on a fresh channel to this process.
  std::unique_ptr<sessiond::v1::SessionService::Stub> NewStub() const;

 private:
  std::string binary_;
  std::string data_dir_;
  std::vector<std::string> extra_flags_;
  std::string fixed_listen_;
  std::vector<std::string> env_;
  std::string log_dir_;
  std::shared_ptr<grpc::ChannelCredentials> credentials_;
  std::string address_;
  std::string log_path_;
  pid_t pid_ = -1;
};

// Picks a TCP port on 127.0.0.1 that is free right now.
int PickFreePort();

// A fresh directory under /tmp, removed (recursively) by the destructor.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

}  // namespace sessiond::testing

#endif  // SESSIOND_TESTS_INTEGRATION_SESSIOND_PROCESS_H_
