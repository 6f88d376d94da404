// Copyright sessiond authors. Licensed under the Apache License 2.0.
#ifndef SESSIOND_SERVER_CONFIG_H_
#define SESSIOND_SERVER_CONFIG_H_

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "server/limits.h"

namespace sessiond::server {

// sessiond's version, "MAJOR.MINOR.PATCH": project(sessiond VERSION ...) in
// the top CMakeLists.txt, through the generated common/version.h (backups
// record it). Defined in config.cc, so that a new git commit in that header
// recompiles one file rather than every includer of this one.
extern const char kSessiondVersion[];

// What `sessiond --version` prints: "sessiond 0.1.0 (git 1a2b3c4, Release,
// GNU 12.2.0)" (the commit CMake saw when it last configured the build).
std::string VersionLine();

// Everything sessiond can be told. Every field is an option declared once in
// config.cc's table (name, default, help, range or validator, whether
// SIGHUP reloads it: redis config.c's shape), settable as a flag (--name
// value), an environment variable (SESSIOND_NAME) or a key of the --config
// file (TOML, or INI for *.ini); flag > environment > file > default.
struct Config {
  std::string listen = "127.0.0.1:50051";
  std::string data_dir = "./sessiond-data";
  int64_t shards = 64;
  Limits limits;
  int64_t sweep_interval_ms = 1000;
  // Most sessions one expiry command removes; a sweep proposes several
  // commands when more have expired.
  int64_t sweep_batch = 1000;
  // The mass-expiry breaker (server/expiry_breaker.h): it opens when more
  // than this percent of live sessions would expire within the window over
  // and above what their lifetimes predict (0: off), and never below
  // min_sessions such expiries.
  int64_t expiry_breaker_percent = 10;
  int64_t expiry_breaker_window_ms = 5 * 60 * 1000;
  int64_t expiry_breaker_min_sessions = 100;
  // Signing keys and JWT tokens: the key-encryption key file (empty: this
  // node cannot sign JWTs nor stage keys), the JWKS max-age the first leader
  // writes into the log, and the JWKS HTTP listener (empty: off).
  std::string kek_file;
  // TLS on the client and peer listeners and the peer channels (PEM files;
  // all three or none: server/tls_credentials.h), whether clients must show
  // a certificate ("require") or may use a bearer token instead
  // ("optional"), how often the files are re-read, and the role file
  // (server/auth.h; required with TLS).
  std::string tls_cert;
  std::string tls_key;
  std::string tls_ca;
  std::string tls_client_auth = "require";
  int64_t tls_refresh_s = 60;
  std::string auth_file;
  // Without TLS, listeners bind loopback addresses only unless this is 1.
  int64_t insecure_plaintext_non_loopback = 0;
  int64_t jwks_max_age_ms = 5 * 60 * 1000;
  std::string jwks_listen;
  int64_t expiry_leeway_ms = 0;
  // Validate-with-touch is folded into one TouchCommand per interval: this is
  // the resolution of idle timeouts.
  int64_t touch_flush_interval_ms = 1000;
  // 10 ms ticks, 27-tick elections, 5-tick heartbeats: a follower campaigns
  // 270-540 ms after the last heartbeat (every 50 ms), at one of 27
  // moments. With 50 ms ticks there were 6, and elections that needed a
  // second round pushed the slowest of 20 failovers past 1 s
  // (docs/PERFORMANCE.md, failover).
  int64_t tick_ms = 10;
  // Log compaction: how often to look, and how many newly applied entries
  // make it worth a compaction.
  int64_t log_compact_interval_ms = 60000;
  int64_t log_compact_min_entries = 10000;
  // How long SIGTERM waits for in-flight calls before cancelling them.
  int64_t shutdown_grace_ms = 5000;
  // How long a shutdown or a restart in place may take to tear the daemon
  // down, beyond three times shutdown_grace_ms, before it is cut short as a
  // crash would be (server/stop_watchdog.h).
  int64_t stop_timeout_ms = 60000;
  // Writes that go on failing for lack of space this long after the data
  // disk had room again restart the node in place (Daemon::
  // RestartIfWritesStuck): RocksDB 7.8's own recovery can hang for good.
  int64_t stuck_writes_restart_ms = 60000;
  // Writes stop while the data dir's file system has less free (MiB);
  // storage/disk_guard.h. 0: off.
  int64_t disk_reserve_mb = 64;
  // How long a flush, bulk revocation or RevokeUserSessions can be undone
  // (AdminService.RestoreFlush); then it is purged.
  int64_t revocation_retention_ms = 24ll * 3600 * 1000;
  // The audit log (docs/OPERATIONS.md, "Audit"): "true" or "false"; how
  // long entries are kept (cluster time) and the most kept.
  std::string audit = "true";
  int64_t audit_retention_ms = 90ll * 24 * 3600 * 1000;
  int64_t audit_max_entries = 100'000;
  // CreateSession.request_id (storage/create_requests.h): how long a retry
  // gets the first create's session back, and the most request ids kept.
  int64_t create_request_window_ms = 10 * 60 * 1000;
  int64_t create_request_max_entries = 100'000;
  // The most live sessions one user may have (0: no cap).
  int64_t max_sessions_per_user = 0;
  // Creates per second one caller may make, and its burst
  // (server/create_rate_limiter.h; 0: no limit; burst 0: the rate).
  int64_t create_rate_per_identity = 0;
  int64_t create_burst_per_identity = 0;
  // Creates are shed (RESOURCE_EXHAUSTED, OVERLOADED) while writes wait
  // longer than this to commit (server/write_admission.h; 0: never).
  int64_t write_admission_target_ms = 50;
  // HTTP/2 streams one client connection may have open
  // (server/client_server.h).
  int64_t max_concurrent_streams = 100;
  // host:port of the Prometheus endpoint (GET /metrics, GET /healthz;
  // server/metrics_http.h); empty: off. Port 0 picks a free one.
  std::string metrics_listen;
  // The logout detector (server/logout_detector.h): how often it samples
  // (0: off); the live-sessions window and the fall in it that alerts; the
  // fewest sessions at the window's highest for that alert; the outcome
  // baselines' time constant; the rise of a share that alerts (points) and
  // in deviations; the fewest validations an interval needs to be judged.
  int64_t logout_detector_interval_ms = 5000;
  int64_t logout_detector_window_ms = 5 * 60 * 1000;
  int64_t logout_detector_drop_percent = 20;
  int64_t logout_detector_min_sessions = 1000;
  int64_t logout_detector_baseline_ms = 30 * 60 * 1000;
  int64_t logout_detector_jump_percent = 25;
  int64_t logout_detector_deviations = 3;
  int64_t logout_detector_min_validations = 100;

  // Cluster (docs/OPERATIONS.md). Without initial_cluster: a single node.
  int64_t node_id = 1;
  // "1=host:port,2=host:port,3=host:port": every initial member's peer
  // address (this node's included). It decides the membership only when
  // the data dir is new; on every start it gives the peers' addresses.
  std::string initial_cluster;
  // "new": bootstrap a new cluster from initial_cluster; "existing": join a
  // running cluster this node was added to (AdminService.AddMember).
  std::string initial_cluster_state = "new";
  // Address the peer listener binds (default: this node's initial_cluster
  // entry).
  std::string peer_listen;
  // The client address other nodes and clients are told (default: the
  // address the client listener bound).
  std::string advertise_client;
  // The cluster's id, decimal or 0x-hex (default: derived from
  // cluster_token and initial_cluster, as etcd does).
  std::string cluster_id;
  std::string cluster_token = "sessiond";
  int64_t election_ticks = 27;
  int64_t heartbeat_ticks = 5;
  // Linearizable reads on the leader: "lease" (no round trip while a quorum
  // acknowledged a recent heartbeat; assumes bounded clock drift) or
  // "readindex" (a heartbeat round per batch of reads).
  std::string read_mode = "lease";
  // Default-consistency validations wait this long for the leader before
  // answering from this node's table, marked stale.
  int64_t linearizable_timeout_ms = 300;
  // A write or linearizable read waits at most this long (a longer client
  // deadline is cut to it).
  int64_t request_timeout_ms = 10000;
  // Log compaction keeps this many entries before the snapshot, so a
  // follower that lags a little catches up from the log.
  int64_t snapshot_catch_up_entries = 5000;
  // Writes waiting for the log; more are refused with RESOURCE_EXHAUSTED.
  int64_t max_pending_writes = 100000;
  // The same two bounds in bytes of commands, in MiB.
  int64_t max_pending_write_mib = 256;
  int64_t max_held_answer_mib = 128;
  // How fast cluster time may move toward the wall clock, in parts per
  // million of elapsed time (1000: 3.6 s per hour).
  int64_t clock_slew_ppm = 1000;
  // An idle leader proposes a TickCommand once no stamp was applied for
  // this long (server/cluster_agent.h); 0: never.
  int64_t clock_tick_ms = 2000;
  // Disaster recovery: 1 makes this node the only member of its cluster
  // (server/bootstrap.h, ForceNewCluster). Once, on the one survivor.
  int64_t force_new_cluster = 0;
  // Not a flag: this start is the process restarting itself in place
  // (server/main.cc, RestartInPlace). Its first start applied
  // force_new_cluster already, so this one applies it not (re-applied, it
  // was refused once members were added back meanwhile, and the node
  // exited) and keeps the data dir's record of it.
  bool restarting_in_place = false;
  // stderr log lines (common/log.h): "text" or "json"; least level.
  std::string log_format = "text";
  std::string log_level = "info";
  // Hidden, tests only: a file listing node ids (comma or space separated)
  // to which this node's peer traffic is dropped, both ways; re-read while
  // running (a network partition on one machine).
  std::string unsafe_peer_drop_file;
  // Hidden, tests only: the command level this node publishes instead of
  // its binary's (storage/command_level.h), to play a member on an older
  // binary; 0: its binary's.
  int64_t unsafe_command_level = 0;
  // Hidden: a SESSIOND_FAULT_POINT name to crash at (fault tests). Armed
  // by server/main.cc once per process image; Daemon::Start ignores it.
  std::string fault_point;
  // Where the options came from (for the startup summary); empty: no file.
  std::string config_file;
};

// The outcome of parsing the command line.
struct ParsedConfig {
  Config config;
  // --help was given: print help_text and exit 0.
  bool help = false;
  std::string help_text;
};

// Parses flags, the environment (SESSIOND_<NAME>) and the optional --config
// file (or SESSIOND_CONFIG), with CLI11 for all three. InvalidArgument (the
// caller exits 2) for an unknown flag or key, a malformed or out-of-range
// value, or options inconsistent with each other; NotFound when the config
// file cannot be read. The message names the option and where its value
// came from ("flag --shards", "environment SESSIOND_SHARDS", "config file
// /etc/sessiond/sessiond.toml"). Reads the process environment: not safe
// against a concurrent setenv.
absl::StatusOr<ParsedConfig> ParseConfig(int argc, const char* const* argv);

// An option whose value differs between two configs (values as text).
struct OptionChange {
  std::string name;
  std::string running;
  std::string next;
  // Marked reloadable in the table: a running daemon applies it on SIGHUP.
  bool reloadable = false;
};

// The options that differ between `running` and `next`, in table order.
std::vector<OptionChange> ChangedOptions(const Config& running,
                                         const Config& next);

// `running` with the reloadable options taken from `next`: the config a
// daemon runs with after a SIGHUP that read `next`. InvalidArgument when
// that mix does not hold together (CheckConsistent), as when `next` adds
// TLS, which needs a restart, and a role file, which would be reloaded
// alone: a node without TLS would report roles it cannot enforce.
absl::StatusOr<Config> WithReloadableOptions(const Config& running,
                                             const Config& next);

// The options a running daemon applies on SIGHUP (Daemon::Reload).
std::vector<std::string> ReloadableOptionNames();

// The limits the server enforces: config.limits with the derived
// Limits::min_idle_timeout_ms (MinIdleTimeoutMs of --min_ttl_ms and
// --touch_flush_interval_ms).
Limits ServedLimits(const Config& config);

// Whether --audit is on ("true" or "1").
bool AuditEnabled(const Config& config);

// One line: where it listens, data dir, shards and the non-default options.
std::string ConfigSummary(const Config& config);

// Whether `listen` (host:port) names only the loopback interface: an
// address literal in 127.0.0.0/8 or ::1, or "localhost" (a name like
// 127.example.com is resolved by DNS, to anything).
bool IsLoopbackListen(const std::string& listen);

// --initial_cluster parsed: node id -> peer address. InvalidArgument names
// the bad entry.
absl::StatusOr<std::map<uint64_t, std::string>> ParseInitialCluster(
    const std::string& value);

// The cluster id the config asks for: --cluster_id when given, else derived
// from --cluster_token and --initial_cluster (0 for a single node without
// either: the daemon picks a random one at bootstrap).
absl::StatusOr<uint64_t> ConfiguredClusterId(const Config& config);

// The names of all options, in table order (for tests and docs).
std::vector<std::string> OptionNames();

}  // namespace sessiond::server

#endif  // SESSIOND_SERVER_CONFIG_H_
