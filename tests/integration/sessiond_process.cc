// Copyright sessiond authors. Licensed under the Apache License 2.0.
#include "tests/integration/sessiond_process.h"

#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <string>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "grpcpp/grpcpp.h"

namespace sessiond::testing {

namespace {

// Whether 127.0.0.1:`port` can be bound now.
bool CanBind(int port) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return false;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(static_cast<uint16_t>(port));
  const bool ok =
      bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0;
  close(fd);
  return ok;
}

// Claims `port` for this process's lifetime among the test processes of
// this machine: an exclusive flock on a file named for it, held until this
// process exits (the kernel drops it then, however it ends). A node that
// releases its port for a while (a restart in place closes its listener
// for as long as its database's close takes) found it taken by another
// test process's new node when it bound again. True, without a claim, when
// the folder cannot be used.
bool ClaimForThisProcess(int port) {
  const std::filesystem::path dir =
      std::filesystem::temp_directory_path() / "sessiond-test-ports";
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  const std::string path = (dir / std::to_string(port)).string();
  const int fd = open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0666);
  if (fd < 0) return true;
  if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
    close(fd);
    return false;  // another test process holds it
  }
  return true;  // fd stays open: the claim lasts as long as this process
}

}  // namespace

int PickFreePort() {
  // Below Linux's ephemeral range (32768-60999 by default): a port the
  // kernel hands out for bind(0) is also what it picks as the source port
  // of outgoing connections, and with many tests' gRPC clients running at
  // once one of those could take it before the node binds it. A random
  // start keeps parallel tests apart.
  static std::atomic<uint32_t> next{static_cast<uint32_t>(
      (getpid() * 7919u + static_cast<uint32_t>(time(nullptr))) % 20000u)};
  for (int attempt = 0; attempt < 1000; ++attempt) {
    const int port = 10000 + static_cast<int>(next.fetch_add(1) % 20000u);
    if (ClaimForThisProcess(port) && CanBind(port)) return port;
  }
  return -1;
}

TempDir::TempDir() {
  std::string pattern =
      (std::filesystem::temp_directory_path() / "sessiond-test-XXXXXX")
          .string();
  path_ = mkdtemp(pattern.data());
}

TempDir::~TempDir() {
  std::error_code ignored;
  std::filesystem::remove_all(path_, ignored);
}

SessiondProcess::SessiondProcess(std::string binary, std::string data_dir,
                                 std::vector<std::string> extra_flags)
    : binary_(std::move(binary)),
      data_dir_(std::move(data_dir)),
      extra_flags_(std::move(extra_flags)) {}

SessiondProcess::~SessiondProcess() {
  if (running()) Kill();
}

absl::Status SessiondProcess::Start(absl::Duration timeout) {
  if (absl::Status s = Launch(); !s.ok()) return s;
  return WaitUntilServing(timeout);
}

absl::Status SessiondProcess::Launch() {
  if (running()) return absl::FailedPreconditionError("already running");
  if (fixed_listen_.empty()) {
    const int port = PickFreePort();
    if (port <= 0) return absl::InternalError("no free port");
    address_ = absl::StrCat("127.0.0.1:", port);
  } else {
    address_ = fixed_listen_;
  }
  // One log per start, so a restarted or second process never shares a file.
  static std::atomic<int> starts{0};
  log_path_ =
      log_dir_.empty()
          ? absl::StrCat(data_dir_, ".", starts++, ".log")
          : absl::StrCat(log_dir_, "/",
                         std::filesystem::path(data_dir_).filename().string(),
                         ".", starts++, ".log");

  std::vector<std::string> args = {binary_, "--listen", address_, "--data_dir",
                                   data_dir_};
  args.insert(args.end(), extra_flags_.begin(), extra_flags_.end());

  const pid_t pid = fork();
  if (pid < 0) return absl::InternalError("fork failed");
  if (pid == 0) {
    const int log =
        open(log_path_.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (log >= 0) {
      dup2(log, STDOUT_FILENO);
      dup2(log, STDERR_FILENO);
    }
    for (std::string& e : env_) putenv(e.data());
    std::vector<char*> argv;
    for (std::string& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    execv(binary_.c_str(), argv.data());
    _exit(127);
  }
  pid_ = pid;
  return absl::OkStatus();
}

absl::Status SessiondProcess::WaitUntilServing(absl::Duration timeout) {
  // Ready when a ValidateSession of a garbage token gets an answer.
  const absl::Time deadline = absl::Now() + timeout;
  auto stub = NewStub();
  while (absl::Now() < deadline) {
    int status = 0;
    if (waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      return absl::InternalError(
          absl::StrCat("sessiond exited during start (status ", status,
                       "); see ", log_path_));
    }
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() +
                         std::chrono::milliseconds(500));
    // Waiting for the connection inside the call lets this thread drive
    // the connect and the TLS handshake; between fail-fast calls only
    // gRPC's backup poller would, every 5 s per step.
    context.set_wait_for_ready(true);
    sessiond::v1::ValidateSessionRequest request;
    request.set_token("readiness-probe");
    request.set_consistency(sessiond::v1::LOCAL);
    sessiond::v1::ValidateSessionResponse response;
    if (stub->ValidateSession(&context, request, &response).ok()) {
      return absl::OkStatus();
    }
    usleep(50 * 1000);
  }
  Kill();
  return absl::DeadlineExceededError(
      absl::StrCat("sessiond did not become ready; see ", log_path_));
}

void SessiondProcess::Pause() {
  if (running()) kill(pid_, SIGSTOP);
}

void SessiondProcess::Resume() {
  if (running()) kill(pid_, SIGCONT);
}

void SessiondProcess::Kill() {
  if (!running()) return;
  kill(pid_, SIGKILL);
  int status = 0;
  waitpid(pid_, &status, 0);
  pid_ = -1;
}

int SessiondProcess::Terminate(absl::Duration timeout) {
  if (!running()) return -1;
  kill(pid_, SIGTERM);
  const int status = WaitForExit(timeout);
  if (status == -1) Kill();
  return status;
}

int SessiondProcess::WaitForExit(absl::Duration timeout) {
  if (!running()) return -1;
  const absl::Time deadline = absl::Now() + timeout;
  while (absl::Now() < deadline) {
    int status = 0;
    if (waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      return status;
    }
    usleep(10 * 1000);
  }
  return -1;
}

std::unique_ptr<sessiond::v1::SessionService::Stub> SessiondProcess::NewStub()
    const {
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  // gRPC's default reconnect backoff (1 s, growing 1.6x) would make the
  // readiness probe of a node that is not listening yet wait seconds.
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 500);
  return sessiond::v1::SessionService::NewStub(grpc::CreateCustomChannel(
      address_,
      credentials_ != nullptr ? credentials_
                              : grpc::InsecureChannelCredentials(),
      args));
}

std::string ListeningAddressIn(const std::string& log_path,
                               const std::string& prefix) {
  for (int attempt = 0; attempt < 300; ++attempt) {
    std::ifstream log(log_path);
    std::string line;
    while (std::getline(log, line)) {
      absl::string_view rest = line;
      if (absl::ConsumePrefix(&rest, prefix)) return std::string(rest);
    }
    usleep(100 * 1000);
  }
  return "";
}

void SetDeadline(grpc::ClientContext* context, absl::Duration d) {
  context->set_deadline(absl::ToChronoTime(absl::Now() + d));
}

HostPort SplitHostPort(const std::string& address) {
  HostPort hp;
  const size_t colon = address.rfind(':');
  if (colon == std::string::npos) return hp;
  hp.host = address.substr(0, colon);
  if (!absl::SimpleAtoi(address.substr(colon + 1), &hp.port)) hp.port = 0;
  return hp;
}

}  // namespace sessiond::testing
