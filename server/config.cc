// Copyright sessiond authors. Licensed under the Apache License 2.0.
#include "server/config.h"

#include <arpa/inet.h>
#include <netinet/in.h>

#include <cstdlib>
#include <fstream>
#include <limits>
#include <memory>

#include "CLI/CLI.hpp"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "common/log.h"
#include "common/version.h"

namespace sessiond::server {

const char kSessiondVersion[] = SESSIOND_VERSION;

namespace {

constexpr int64_t kDayMs = 24ll * 3600 * 1000;
constexpr int64_t kInt64Max = std::numeric_limits<int64_t>::max();

absl::Status ValidateListen(const std::string& value) {
  // host:port, where host may be a bracketed IPv6 address.
  const size_t colon = value.rfind(':');
  if (colon == std::string::npos || colon == 0) {
    return absl::InvalidArgumentError("must be host:port");
  }
  int port;
  if (!absl::SimpleAtoi(value.substr(colon + 1), &port) || port < 0 ||
      port > 65535) {
    return absl::InvalidArgumentError("port must be a number in [0, 65535]");
  }
  return absl::OkStatus();
}

absl::Status ValidateNonEmpty(const std::string& value) {
  if (value.empty()) return absl::InvalidArgumentError("must not be empty");
  return absl::OkStatus();
}

absl::Status ValidateOptionalListen(const std::string& value) {
  if (value.empty()) return absl::OkStatus();
  return ValidateListen(value);
}

absl::Status ValidateInitialCluster(const std::string& value) {
  return ParseInitialCluster(value).status();
}

absl::Status ValidateClientAuth(const std::string& value) {
  if (value == "require" || value == "optional") return absl::OkStatus();
  return absl::InvalidArgumentError("must be require or optional");
}

absl::Status ValidateBool(const std::string& value) {
  if (value == "true" || value == "false" || value == "1" || value == "0") {
    return absl::OkStatus();
  }
  return absl::InvalidArgumentError("must be true or false");
}

absl::Status ValidateClusterState(const std::string& value) {
  if (value == "new" || value == "existing") return absl::OkStatus();
  return absl::InvalidArgumentError("must be new or existing");
}

absl::Status ValidateLogFormat(const std::string& value) {
  return logging::ParseFormat(value).status();
}

absl::Status ValidateLogLevel(const std::string& value) {
  return logging::ParseLevel(value).status();
}

absl::Status ValidateReadMode(const std::string& value) {
  if (value == "lease" || value == "readindex") return absl::OkStatus();
  return absl::InvalidArgumentError("must be lease or readindex");
}

absl::StatusOr<uint64_t> ParseClusterId(const std::string& value) {
  uint64_t id = 0;
  absl::string_view digits = value;
  const bool hex = absl::ConsumePrefix(&digits, "0x");
  const bool ok =
      hex ? absl::SimpleHexAtoi(digits, &id) : absl::SimpleAtoi(digits, &id);
  if (!ok || id == 0) {
    return absl::InvalidArgumentError(
        "must be a non-zero number, decimal or 0x-hex");
  }
  return id;
}

absl::Status ValidateClusterId(const std::string& value) {
  if (value.empty()) return absl::OkStatus();
  return ParseClusterId(value).status();
}

// One row per option. Defaults live in Config's member initializers (one
// place); the table gives each its name, help, range or validator, and
// whether a running daemon applies a new value on SIGHUP (`reloadable`:
// only options Daemon::Reload really applies; ReloadableOptionNames()).
// The name is also the config file's key and, upper-cased after
// SESSIOND_, the environment variable's name.
struct Option {
  const char* name;
  const char* help;
  int64_t* (*int_field)(Config*) = nullptr;
  std::string* (*string_field)(Config*) = nullptr;
  int64_t min = 0;
  int64_t max = kInt64Max;
  absl::Status (*validate)(const std::string&) = nullptr;
  bool hidden = false;
  bool reloadable = false;
  // A comma-separated list: a config file may also give it as an array.
  bool list = false;
};

#define SESSIOND_INT_FIELD(expr) [](Config* c) -> int64_t* { return &c->expr; }
#define SESSIOND_STRING_FIELD(expr) \
  [](Config* c) -> std::string* { return &c->expr; }

const std::vector<Option>& Options() {
  static const std::vector<Option>* options = new std::vector<Option>{
      {.name = "listen",
       .help = "address for the gRPC API, host:port (port 0: pick a free one)",
       .string_field = SESSIOND_STRING_FIELD(listen),
       .validate = ValidateListen},
      {.name = "data_dir",
       .help = "directory of the RocksDB database (created when missing)",
       .string_field = SESSIOND_STRING_FIELD(data_dir),
       .validate = ValidateNonEmpty},
      {.name = "shards",
       .help = "shards of the in-memory session table",
       .int_field = SESSIOND_INT_FIELD(shards),
       .min = 1,
       .max = 65536},
      {.name = "max_user_id_bytes",
       .help = "longest user_id",
       .int_field = SESSIOND_INT_FIELD(limits.max_user_id_bytes),
       .min = 1,
       .max = 1 << 20},
      {.name = "max_attributes",
       .help = "most attributes per session",
       .int_field = SESSIOND_INT_FIELD(limits.max_attributes),
       .min = 0,
       .max = 1 << 16},
      {.name = "max_attribute_key_bytes",
       .help = "longest attribute key",
       .int_field = SESSIOND_INT_FIELD(limits.max_attribute_key_bytes),
       .min = 1,
       .max = 1 << 20},
      {.name = "max_attribute_value_bytes",
       .help = "longest attribute value",
       .int_field = SESSIOND_INT_FIELD(limits.max_attribute_value_bytes),
       .min = 0,
       .max = 1 << 24},
      {.name = "max_record_bytes",
       .help = "largest session: user_id + attributes + client metadata",
       .int_field = SESSIOND_INT_FIELD(limits.max_record_bytes),
       .min = 1,
       .max = 1 << 26},
      {.name = "min_ttl_ms",
       .help = "shortest session lifetime (and idle timeout) a client may ask",
       .int_field = SESSIOND_INT_FIELD(limits.min_ttl_ms),
       .min = 1},
      {.name = "max_ttl_ms",
       .help = "longest session lifetime a client may ask",
       .int_field = SESSIOND_INT_FIELD(limits.max_ttl_ms),
       .min = 1,
       .max = 100 * 365 * kDayMs},
      {.name = "default_ttl_ms",
       .help = "lifetime of a session created with ttl_ms 0",
       .int_field = SESSIOND_INT_FIELD(limits.default_ttl_ms),
       .min = 1},
      {.name = "default_idle_timeout_ms",
       .help = "idle timeout of a session created with idle_timeout_ms 0 "
               "(0: none)",
       .int_field = SESSIOND_INT_FIELD(limits.default_idle_timeout_ms),
       .min = 0},
      {.name = "max_idle_timeout_ms",
       .help = "longest idle timeout a client may ask",
       .int_field = SESSIOND_INT_FIELD(limits.max_idle_timeout_ms),
       .min = 1,
       .max = 100 * 365 * kDayMs},
      {.name = "max_reason_bytes",
       .help = "longest revocation reason",
       .int_field = SESSIOND_INT_FIELD(limits.max_reason_bytes),
       .min = 0,
       .max = 1 << 20},
      {.name = "max_client_field_bytes",
       .help = "longest client metadata field (device, ip, user_agent)",
       .int_field = SESSIOND_INT_FIELD(limits.max_client_field_bytes),
       .min = 0,
       .max = 1 << 20},
      {.name = "sweep_interval_ms",
       .help = "how often the expiry sweeper looks for expired sessions",
       .int_field = SESSIOND_INT_FIELD(sweep_interval_ms),
       .min = 1,
       .max = kDayMs,
       .reloadable = true},
      {.name = "sweep_batch",
       .help = "most sessions one expiry command removes",
       .int_field = SESSIOND_INT_FIELD(sweep_batch),
       .min = 1,
       .max = 1 << 20,
       .reloadable = true},
      {.name = "expiry_breaker_percent",
       .help = "the expiry breaker opens when more than this percent of live "
               "sessions would expire within its window over and above what "
               "their lifetimes predict (0: off)",
       .int_field = SESSIOND_INT_FIELD(expiry_breaker_percent),
       .min = 0,
       .max = 100},
      {.name = "expiry_breaker_window_ms",
       .help = "the expiry breaker's window",
       .int_field = SESSIOND_INT_FIELD(expiry_breaker_window_ms),
       .min = 1000,
       .max = kDayMs},
      {.name = "expiry_breaker_min_sessions",
       .help = "the expiry breaker never opens for fewer unexpected expiries "
               "than this",
       .int_field = SESSIOND_INT_FIELD(expiry_breaker_min_sessions),
       .min = 1,
       .max = 1ll << 40},
      {.name = "tls_cert",
       .help = "this node's certificate chain (PEM): with --tls_key and "
               "--tls_ca, mutual TLS on the client and peer listeners and "
               "the peer channels",
       .string_field = SESSIOND_STRING_FIELD(tls_cert)},
      {.name = "tls_key",
       .help = "the private key of --tls_cert (PEM, unencrypted)",
       .string_field = SESSIOND_STRING_FIELD(tls_key)},
      {.name = "tls_ca",
       .help = "the CA bundle (PEM) that signed the peers' and clients' "
               "certificates",
       .string_field = SESSIOND_STRING_FIELD(tls_ca)},
      {.name = "tls_client_auth",
       .help = "require: every client shows a certificate of --tls_ca; "
               "optional: a client without one may use a bearer token",
       .string_field = SESSIOND_STRING_FIELD(tls_client_auth),
       .validate = ValidateClientAuth},
      {.name = "tls_refresh_s",
       .help = "how often the TLS files are read again (renewed "
               "certificates are used without a restart)",
       .int_field = SESSIOND_INT_FIELD(tls_refresh_s),
       .min = 1,
       .max = 86400},
      {.name = "auth_file",
       .help = "the role file: identities (certificate names, bearer token "
               "digests) and their roles app, admin, peer, reader; required "
               "with TLS; read again on SIGHUP",
       .string_field = SESSIOND_STRING_FIELD(auth_file),
       .reloadable = true},
      {.name = "insecure_plaintext_non_loopback",
       .help = "1: without TLS, let the listeners bind non-loopback "
               "addresses anyway (anyone who reaches them can create and "
               "revoke sessions)",
       .int_field = SESSIOND_INT_FIELD(insecure_plaintext_non_loopback),
       .min = 0,
       .max = 1},
      {.name = "kek_file",
       .help = "the key-encryption key file (64 hex characters, mode 0600, "
               "the same on every node): seals the signing keys; without it "
               "this node neither signs JWT tokens nor stages keys",
       .string_field = SESSIOND_STRING_FIELD(kek_file)},
      {.name = "jwks_max_age_ms",
       .help = "how long verifiers may cache the JWKS, and so how long a new "
               "signing key is published before it may sign; the first "
               "leader writes it into the log (replicated from then on)",
       .int_field = SESSIOND_INT_FIELD(jwks_max_age_ms),
       .min = 1000,
       .max = kDayMs},
      {.name = "jwks_listen",
       .help = "address of the JWKS endpoint, host:port, serving GET "
               "/.well-known/jwks.json over HTTP, HTTPS when TLS is on "
               "(port 0: pick a free one; empty: off)",
       .string_field = SESSIOND_STRING_FIELD(jwks_listen),
       .validate = ValidateOptionalListen},
      {.name = "expiry_leeway_ms",
       .help =
           "a session counts as expired (on reads and for the sweeper) only "
           "this long after its expiry time: a clock-skew allowance",
       .int_field = SESSIOND_INT_FIELD(expiry_leeway_ms),
       .min = 0,
       .max = kDayMs},
      {.name = "touch_flush_interval_ms",
       .help = "validate-with-touch activity is written once per interval: "
               "the resolution of idle timeouts",
       .int_field = SESSIOND_INT_FIELD(touch_flush_interval_ms),
       .min = 1,
       .max = 3600 * 1000},
      {.name = "tick_ms",
       .help = "Raft logical clock tick",
       .int_field = SESSIOND_INT_FIELD(tick_ms),
       .min = 1,
       .max = 60 * 1000},
      {.name = "log_compact_interval_ms",
       .help = "how often applied entries are dropped from the Raft log",
       .int_field = SESSIOND_INT_FIELD(log_compact_interval_ms),
       .min = 1,
       .max = kDayMs},
      {.name = "log_compact_min_entries",
       .help = "newly applied entries that make a log compaction worthwhile",
       .int_field = SESSIOND_INT_FIELD(log_compact_min_entries),
       .min = 1},
      {.name = "shutdown_grace_ms",
       .help = "on SIGTERM, how long in-flight calls may take to finish",
       .int_field = SESSIOND_INT_FIELD(shutdown_grace_ms),
       .min = 0,
       .max = 3600 * 1000,
       .reloadable = true},
      {.name = "stop_timeout_ms",
       .help = "past this plus three times --shutdown_grace_ms, a shutdown or "
               "restart in place that has not finished tearing the node down "
               "is cut short as a crash would be: a shutdown exits with code "
               "3, a restart in place executes sessiond again (acknowledged "
               "writes are on disk)",
       .int_field = SESSIOND_INT_FIELD(stop_timeout_ms),
       .min = 1000,
       .max = 3600 * 1000},
      {.name = "stuck_writes_restart_ms",
       .help = "when writes have gone on failing for lack of space this long "
               "after the data disk had room again (RocksDB's own recovery "
               "hung), the node restarts in place to reopen its database",
       .int_field = SESSIOND_INT_FIELD(stuck_writes_restart_ms),
       .min = 1000,
       .max = 3600 * 1000},
      {.name = "revocation_retention_ms",
       .help = "how long a flush, bulk revocation or RevokeUserSessions can "
               "be undone (sessionctl restore ID); then it is purged and the "
               "sessions it holds are removed",
       .int_field = SESSIOND_INT_FIELD(revocation_retention_ms),
       .min = 1000,
       .max = 30 * kDayMs},
      {.name = "audit",
       .help = "record every admin call that changes something, or asks to, "
               "and every bulk revocation in the replicated audit log "
               "(AdminService.ListAudit, sessionctl audit): true or false",
       .string_field = SESSIOND_STRING_FIELD(audit),
       .validate = ValidateBool},
      {.name = "audit_retention_ms",
       .help = "how long (cluster time) audit entries are kept",
       .int_field = SESSIOND_INT_FIELD(audit_retention_ms),
       .min = 3600 * 1000,
       .max = 10 * 365 * kDayMs},
      {.name = "audit_max_entries",
       .help = "most audit entries kept (on every node, up to 16 KiB each); "
               "beyond, the oldest are dropped and counted "
               "(ListAuditResponse.dropped_over_limit)",
       .int_field = SESSIOND_INT_FIELD(audit_max_entries),
       .min = 1,
       .max = 10'000'000},
      {.name = "create_request_window_ms",
       .help = "how long (cluster time) a CreateSession retried with the "
               "same request_id and user_id gets the first call's session "
               "and token back instead of a second session",
       .int_field = SESSIOND_INT_FIELD(create_request_window_ms),
       .min = 1000,
       .max = kDayMs},
      {.name = "create_request_max_entries",
       .help = "most request_ids the cluster remembers at once (about 250 "
               "bytes each, on every node); beyond, the oldest is forgotten "
               "early",
       .int_field = SESSIOND_INT_FIELD(create_request_max_entries),
       .min = 1,
       .max = 10'000'000},
      {.name = "max_sessions_per_user",
       .help = "most live sessions one user may have: a create beyond is "
               "refused with FAILED_PRECONDITION (USER_SESSION_LIMIT) (0: no "
               "cap)",
       .int_field = SESSIOND_INT_FIELD(max_sessions_per_user),
       .min = 0,
       .max = 1'000'000},
      {.name = "create_rate_per_identity",
       .help = "creates per second one caller (its TLS identity or bearer "
               "token; without TLS, its host) may make; more are refused "
               "with RESOURCE_EXHAUSTED (RATE_LIMITED) and a RetryInfo "
               "(0: no limit)",
       .int_field = SESSIOND_INT_FIELD(create_rate_per_identity),
       .min = 0,
       .max = 10'000'000},
      {.name = "create_burst_per_identity",
       .help = "creates one caller may make at once above its rate (0: one "
               "second's worth of --create_rate_per_identity)",
       .int_field = SESSIOND_INT_FIELD(create_burst_per_identity),
       .min = 0,
       .max = 10'000'000},
      {.name = "write_admission_target_ms",
       .help = "creates are refused at once (RESOURCE_EXHAUSTED, OVERLOADED, "
               "with a RetryInfo) while this node's writes wait longer than "
               "this to commit, so an overloaded node sheds creates instead "
               "of queueing them; set it above the cluster's unloaded commit "
               "latency (0: never shed)",
       .int_field = SESSIOND_INT_FIELD(write_admission_target_ms),
       .min = 0,
       .max = 60'000},
      {.name = "max_concurrent_streams",
       .help = "calls one client connection may have open at once (HTTP/2 "
               "SETTINGS_MAX_CONCURRENT_STREAMS); a client past it waits on "
               "its side, so one flooding client cannot fill this node's "
               "queues",
       .int_field = SESSIOND_INT_FIELD(max_concurrent_streams),
       .min = 1,
       .max = 1'000'000},
      {.name = "disk_reserve_mb",
       .help = "writes are refused (RESOURCE_EXHAUSTED) while the data dir's "
               "file system has less than this free, and resume by "
               "themselves at twice it; a 32 MiB reserve file is held "
               "back for RocksDB and released when the disk fills (0: off)",
       .int_field = SESSIOND_INT_FIELD(disk_reserve_mb),
       .min = 0,
       .max = 1 << 20},
      {.name = "metrics_listen",
       .help = "address of the Prometheus endpoint, host:port, serving GET "
               "/metrics and GET /healthz over HTTP, HTTPS when TLS is on "
               "(port 0: pick a free one; empty: off)",
       .string_field = SESSIOND_STRING_FIELD(metrics_listen),
       .validate = ValidateOptionalListen},
      {.name = "logout_detector_interval_ms",
       .help = "how often the logout detector samples the live sessions and "
               "the validation outcomes (0: off)",
       .int_field = SESSIOND_INT_FIELD(logout_detector_interval_ms),
       .min = 0,
       .max = 3600 * 1000},
      {.name = "logout_detector_window_ms",
       .help = "the logout detector alerts when the live sessions fall "
               "--logout_detector_drop_percent below their highest count "
               "within this window",
       .int_field = SESSIOND_INT_FIELD(logout_detector_window_ms),
       .min = 1,
       .max = kDayMs},
      {.name = "logout_detector_drop_percent",
       .help = "fall of the live sessions within the window that alerts",
       .int_field = SESSIOND_INT_FIELD(logout_detector_drop_percent),
       .min = 1,
       .max = 100},
      {.name = "logout_detector_min_sessions",
       .help = "no live-sessions alert while the window's highest count is "
               "below this",
       .int_field = SESSIOND_INT_FIELD(logout_detector_min_sessions),
       .min = 0},
      {.name = "logout_detector_baseline_ms",
       .help = "time constant of the exponentially weighted baselines of the "
               "UNKNOWN, EXPIRED and REVOKED shares of validations",
       .int_field = SESSIOND_INT_FIELD(logout_detector_baseline_ms),
       .min = 1,
       .max = 30 * kDayMs},
      {.name = "logout_detector_jump_percent",
       .help = "rise of an outcome's share above its baseline, in "
               "percentage points, that alerts (with the deviations)",
       .int_field = SESSIOND_INT_FIELD(logout_detector_jump_percent),
       .min = 1,
       .max = 100},
      {.name = "logout_detector_deviations",
       .help = "an outcome's share must also be this many deviations above "
               "its baseline to alert",
       .int_field = SESSIOND_INT_FIELD(logout_detector_deviations),
       .min = 0,
       .max = 1000},
      {.name = "logout_detector_min_validations",
       .help = "validations an interval needs to be judged and learned from "
               "(a quiet node does not alert)",
       .int_field = SESSIOND_INT_FIELD(logout_detector_min_validations),
       .min = 1},
      {.name = "node_id",
       .help = "this node's id in the cluster",
       .int_field = SESSIOND_INT_FIELD(node_id),
       .min = 1},
      {.name = "initial_cluster",
       .help = "every initial member's peer address, "
               "1=host:port,2=host:port,... (empty: a single node); must "
               "list this node; decides the membership only when the data "
               "dir is new (later, AdminService changes it)",
       .string_field = SESSIOND_STRING_FIELD(initial_cluster),
       .validate = ValidateInitialCluster,
       .list = true},
      {.name = "initial_cluster_state",
       .help = "new: bootstrap a new cluster from --initial_cluster; "
               "existing: join a running cluster this node was added to",
       .string_field = SESSIOND_STRING_FIELD(initial_cluster_state),
       .validate = ValidateClusterState},
      {.name = "peer_listen",
       .help = "address the peer (Raft) listener binds (default: this "
               "node's --initial_cluster entry)",
       .string_field = SESSIOND_STRING_FIELD(peer_listen),
       .validate = ValidateOptionalListen},
      {.name = "advertise_client",
       .help = "client address announced to the cluster and to clients "
               "(default: the address --listen bound)",
       .string_field = SESSIOND_STRING_FIELD(advertise_client),
       .validate = ValidateOptionalListen},
      {.name = "cluster_id",
       .help = "the cluster's id, decimal or 0x-hex (default: derived from "
               "--cluster_token and --initial_cluster)",
       .string_field = SESSIOND_STRING_FIELD(cluster_id),
       .validate = ValidateClusterId},
      {.name = "cluster_token",
       .help = "name that keeps clusters built from the same "
               "--initial_cluster apart (part of the derived cluster id)",
       .string_field = SESSIOND_STRING_FIELD(cluster_token),
       .validate = ValidateNonEmpty},
      {.name = "election_ticks",
       .help = "ticks without a leader before a follower campaigns "
               "(randomized up to twice this)",
       .int_field = SESSIOND_INT_FIELD(election_ticks),
       .min = 3,
       .max = 1000},
      {.name = "heartbeat_ticks",
       .help = "ticks between a leader's heartbeats",
       .int_field = SESSIOND_INT_FIELD(heartbeat_ticks),
       .min = 1,
       .max = 1000},
      {.name = "log_format",
       .help = "stderr log lines: text (one event per line, key=value) or "
               "json (one object per line)",
       .string_field = SESSIOND_STRING_FIELD(log_format),
       .validate = ValidateLogFormat},
      {.name = "log_level",
       .help = "least level logged: debug, info, warn or error",
       .string_field = SESSIOND_STRING_FIELD(log_level),
       .validate = ValidateLogLevel,
       .reloadable = true},
      {.name = "read_mode",
       .help = "linearizable reads on the leader: lease (no round trip while "
               "its lease holds) or readindex (a heartbeat round per batch)",
       .string_field = SESSIOND_STRING_FIELD(read_mode),
       .validate = ValidateReadMode},
      {.name = "linearizable_timeout_ms",
       .help = "default-consistency validations wait this long for the "
               "leader before answering locally, marked stale",
       .int_field = SESSIOND_INT_FIELD(linearizable_timeout_ms),
       .min = 1,
       .max = 60 * 1000},
      {.name = "request_timeout_ms",
       .help = "longest a write or linearizable read may wait (a longer "
               "client deadline is cut to it)",
       .int_field = SESSIOND_INT_FIELD(request_timeout_ms),
       .min = 10,
       .max = 3600 * 1000},
      {.name = "snapshot_catch_up_entries",
       .help = "log entries kept before a snapshot for followers that lag "
               "a little",
       .int_field = SESSIOND_INT_FIELD(snapshot_catch_up_entries),
       .min = 0,
       .max = 100000000},
      {.name = "max_pending_writes",
       .help = "writes waiting for the log; more get RESOURCE_EXHAUSTED",
       .int_field = SESSIOND_INT_FIELD(max_pending_writes),
       .min = 1,
       .max = 100000000},
      {.name = "max_pending_write_mib",
       .help = "MiB of writes waiting for the log (or held by this node for "
               "a leader); more get RESOURCE_EXHAUSTED",
       .int_field = SESSIOND_INT_FIELD(max_pending_write_mib),
       .min = 1,
       .max = 65536},
      {.name = "max_held_answer_mib",
       .help = "MiB of large read answers (BatchValidateSessions, "
               "ListUserSessions) held until their clients take them; more "
               "get RESOURCE_EXHAUSTED",
       .int_field = SESSIOND_INT_FIELD(max_held_answer_mib),
       .min = 1,
       .max = 65536},
      {.name = "clock_slew_ppm",
       .help = "how fast cluster time may move toward the wall clock, in "
               "parts per million",
       .int_field = SESSIOND_INT_FIELD(clock_slew_ppm),
       .min = 0,
       .max = 100000},
      {.name = "clock_tick_ms",
       .help = "an idle leader stamps cluster time into the log this often, "
               "so a restarted node resumes from a recent time (0: never)",
       .int_field = SESSIOND_INT_FIELD(clock_tick_ms),
       .min = 0,
       .max = 600000},
      {.name = "force_new_cluster",
       .help = "disaster recovery, 1: make this node the only member of its "
               "cluster, keeping its data (run once, on the one member left "
               "when the others lost their data); add the others back with "
               "AddMember",
       .int_field = SESSIOND_INT_FIELD(force_new_cluster),
       .min = 0,
       .max = 1},
      {.name = "unsafe_peer_drop_file",
       .help = "tests only: drop peer traffic to and from the node ids "
               "listed in this file (re-read while running)",
       .string_field = SESSIOND_STRING_FIELD(unsafe_peer_drop_file),
       .hidden = true},
      {.name = "unsafe_command_level",
       .help = "tests only: publish this command level instead of the "
               "binary's, as a member on an older binary would (0: the "
               "binary's)",
       .int_field = SESSIOND_INT_FIELD(unsafe_command_level),
       .min = 0,
       .max = 1000,
       .hidden = true},
      {.name = "fault_point",
       .help = "NAME[@N][~MS|!]: exit with code 86 at the N-th pass of this "
               "fault point; with ~MS, sleep MS ms at that pass and every one "
               "after instead; with !, fail that pass only (fault tests only)",
       .string_field = SESSIOND_STRING_FIELD(fault_point),
       .hidden = true},
  };
  return *options;
}

#undef SESSIOND_INT_FIELD
#undef SESSIOND_STRING_FIELD

const Option* FindOption(absl::string_view name) {
  for (const Option& o : Options()) {
    if (name == o.name) return &o;
  }
  return nullptr;
}

std::string CurrentValue(const Option& o, const Config& config) {
  Config& c = const_cast<Config&>(config);  // the accessors only take addresses
  if (o.int_field != nullptr) return absl::StrCat(*o.int_field(&c));
  return *o.string_field(&c);
}

// Sets option `o` from its textual value; `source` says where it came from
// ("flag --x", "environment SESSIOND_X", "config file F") for the error
// message.
absl::Status SetOption(const Option& o, const std::string& value,
                       absl::string_view source, Config* config) {
  auto bad = [&](absl::string_view why) {
    return absl::InvalidArgumentError(absl::StrCat(
        source, ": bad value \"", value, "\" for ", o.name, ": ", why));
  };
  if (o.int_field != nullptr) {
    int64_t v;
    if (!absl::SimpleAtoi(value, &v)) return bad("not an integer");
    if (v < o.min || v > o.max) {
      return bad(absl::StrCat("must be in [", o.min, ", ", o.max, "]"));
    }
    *o.int_field(config) = v;
    return absl::OkStatus();
  }
  if (o.validate != nullptr) {
    if (absl::Status s = o.validate(value); !s.ok()) return bad(s.message());
  }
  *o.string_field(config) = value;
  return absl::OkStatus();
}

absl::Status CheckConsistent(const Config& config) {
  if (absl::Status s = CheckLimitsConsistent(ServedLimits(config)); !s.ok()) {
    return s;
  }
  if (3 * config.heartbeat_ticks > config.election_ticks) {
    // A leader steps down when a quorum was silent for an election
    // timeout (CheckQuorum): with a heartbeat near the end of it, an idle
    // leader stepped down whenever a round trip took more than a tick, and
    // the read lease lapsed between heartbeats. And a follower counts its
    // contact with the leader from when the leader's quorum last answered
    // it (a heartbeat answers for the one before): up to two heartbeat
    // intervals old, so with an election timeout of two its reads
    // flickered to stale between heartbeats.
    return absl::InvalidArgumentError(absl::StrCat(
        "--election_ticks (", config.election_ticks,
        ") must be at least 3 times --heartbeat_ticks (",
        config.heartbeat_ticks,
        "): a leader must hear from a quorum well within an election "
        "timeout (etcd asks for 5 times; the defaults are 27 and 5)"));
  }
  absl::StatusOr<std::map<uint64_t, std::string>> members =
      ParseInitialCluster(config.initial_cluster);
  if (!members.ok()) return members.status();
  if (!members->empty() &&
      members->count(static_cast<uint64_t>(config.node_id)) == 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--node_id ", config.node_id, " is not in --initial_cluster \"",
        config.initial_cluster, "\""));
  }
  if (members->empty() && config.initial_cluster_state == "existing") {
    return absl::InvalidArgumentError(
        "--initial_cluster_state=existing needs --initial_cluster with the "
        "addresses of running members to join");
  }
  const int tls_files = !config.tls_cert.empty() + !config.tls_key.empty() +
                        !config.tls_ca.empty();
  if (tls_files != 0 && tls_files != 3) {
    return absl::InvalidArgumentError(
        "--tls_cert, --tls_key and --tls_ca go together: give all three "
        "(tools/dev-ca.sh makes a development set) or none");
  }
  if (tls_files == 3 && config.auth_file.empty()) {
    return absl::InvalidArgumentError(
        "TLS needs --auth_file: the role file that says which certificate "
        "names and bearer tokens may call what (docs/OPERATIONS.md, \"TLS "
        "and roles\")");
  }
  if (tls_files == 0 && !config.auth_file.empty()) {
    return absl::InvalidArgumentError(
        "--auth_file needs TLS (--tls_cert, --tls_key, --tls_ca): without it "
        "no identity can be verified");
  }
  if (tls_files == 0 && config.insecure_plaintext_non_loopback == 0) {
    std::string peer = config.peer_listen;
    if (peer.empty() && !members->empty()) {
      peer = members->at(static_cast<uint64_t>(config.node_id));
    }
    for (const auto& [flag, address] :
         {std::pair<const char*, std::string>{"--listen", config.listen},
          {"--peer_listen", peer}}) {
      if (!address.empty() && !IsLoopbackListen(address)) {
        return absl::InvalidArgumentError(absl::StrCat(
            flag, " ", address,
            " is not a loopback address and TLS is off: anyone who reaches "
            "it could create and revoke sessions. Configure TLS (--tls_cert, "
            "--tls_key, --tls_ca, --auth_file) or, on a network you trust, "
            "pass --insecure_plaintext_non_loopback=1"));
      }
    }
    // What it dials too: its Raft traffic carries every session's token
    // hash and attributes, and its forwarded writes the callers' requests.
    for (const auto& [id, address] : *members) {
      if (!IsLoopbackListen(address)) {
        return absl::InvalidArgumentError(absl::StrCat(
            "--initial_cluster names node ", id, " at ", address,
            ", not a loopback address, and TLS is off: the Raft traffic to "
            "it would cross the network in plaintext. Configure TLS "
            "(--tls_cert, --tls_key, --tls_ca, --auth_file) or, on a network "
            "you trust, pass --insecure_plaintext_non_loopback=1"));
      }
    }
    // The HTTP endpoints change nothing, but plaintext is plaintext: the
    // metrics name the cluster's members and load, and a JWKS that travels
    // in the clear can be swapped for the attacker's keys on the way.
    for (const auto& [flag, address] :
         {std::pair<const char*, std::string>{"--metrics_listen",
                                              config.metrics_listen},
          {"--jwks_listen", config.jwks_listen}}) {
      if (!address.empty() && !IsLoopbackListen(address)) {
        return absl::InvalidArgumentError(absl::StrCat(
            flag, " ", address,
            " is not a loopback address and TLS is off: it would serve "
            "plain HTTP to anyone who reaches it. Configure TLS "
            "(--tls_cert, --tls_key, --tls_ca, --auth_file: the endpoint "
            "then serves HTTPS), bind it to loopback behind your own proxy, "
            "or, on a network you trust, pass "
            "--insecure_plaintext_non_loopback=1"));
      }
    }
  }
  return absl::OkStatus();
}

constexpr char kAbout[] =
    "sessiond: a session store that cannot log everybody out";
constexpr char kConfigEnv[] = "SESSIOND_CONFIG";
constexpr char kConfigHelp[] =
    "read options from this TOML file (INI when the name ends in .ini): "
    "`name = value` lines keyed by the option names, strings in quotes";
constexpr char kFooter[] =
    "Every option is also read from the --config file (key: its name) and "
    "from the environment (SESSIOND_ and its name in capitals, e.g. "
    "SESSIOND_SHARDS=8). A flag beats the environment, which beats the file, "
    "which beats the default. On SIGHUP sessiond reads the file again (the "
    "environment is the one it started with) and applies the options marked "
    "reloadable; the others are reported as needing a restart. "
    "docs/OPERATIONS.md, "
    "\"Configuration\".";

// Where an option's value came from, in precedence order: the first of
// flag, environment, file that sets an option decides it.
enum class Source { kDefault, kFlag, kEnvironment, kFile };

std::string EnvName(const Option& o) {
  return absl::StrCat("SESSIOND_", absl::AsciiStrToUpper(o.name));
}

// CLI11 ignores an environment variable that is set but empty; so does this.
bool InEnvironment(const Option& o) {
  const char* value = std::getenv(EnvName(o).c_str());
  return value != nullptr && value[0] != '\0';
}

std::string SourceText(Source source, const Option& o,
                       const std::string& config_file) {
  switch (source) {
    case Source::kFlag:
      return absl::StrCat("flag --", o.name);
    case Source::kEnvironment:
      return absl::StrCat("environment ", EnvName(o));
    case Source::kFile:
      return absl::StrCat("config file ", config_file);
    case Source::kDefault:
      break;
  }
  return "default";
}

// --help's line for `o`: its help, default, range, and whether SIGHUP
// applies it.
std::string OptionHelp(const Option& o, const Config& defaults) {
  std::string text = absl::StrCat(o.help, " (default ");
  const std::string value = CurrentValue(o, defaults);
  absl::StrAppend(&text, value.empty() ? "empty" : value);
  if (o.int_field != nullptr) {
    if (o.max == kInt64Max) {
      absl::StrAppend(&text, "; at least ", o.min);
    } else {
      absl::StrAppend(&text, "; ", o.min, " to ", o.max);
    }
  }
  absl::StrAppend(&text, o.reloadable ? "; reloadable on SIGHUP)" : ")");
  return text;
}

// Adds the table's options to `app`, bound to `values` (one each, in table
// order); with `environment`, each also reads SESSIOND_<NAME>.
std::vector<CLI::Option*> AddOptions(CLI::App* app,
                                     std::vector<std::string>* values,
                                     bool environment) {
  const Config defaults;
  app->set_version_flag("--version", VersionLine());
  app->footer(kFooter);
  std::vector<CLI::Option*> added;
  for (size_t i = 0; i < Options().size(); ++i) {
    const Option& o = Options()[i];
    CLI::Option* opt = app->add_option(absl::StrCat("--", o.name), (*values)[i],
                                       OptionHelp(o, defaults));
    opt->type_name(o.int_field != nullptr ? "INT" : "TEXT");
    if (o.hidden) opt->group("");
    if (environment) opt->envname(EnvName(o));
    added.push_back(opt);
  }
  return added;
}

std::string HelpText() {
  CLI::App app{kAbout, "sessiond"};
  std::vector<std::string> values(Options().size());
  AddOptions(&app, &values, /*environment=*/true);
  std::string config_file;
  app.add_option("--config", config_file, kConfigHelp)->envname(kConfigEnv);
  return app.help();
}

// The --config file, read by CLI11's own parser (CLI::ConfigTOML, or
// CLI::ConfigINI for a name ending in .ini) and checked against the table
// before CLI11 applies it: unknown keys, sections, repeated keys and
// several values for a single-valued option are errors naming the file.
//
// CLI11 reads the file before the environment and lets the environment
// fill only what is still unset, so by itself a file value would beat an
// environment variable. sessiond's order is flag > environment > file >
// default (an operator overrides a shipped file with Environment= in a
// systemd drop-in), so the items of options set in the environment are
// dropped here. Records in `sources` the options the file decides.
class ConfigFile : public CLI::Config {
 public:
  // `sources` (with the flags already marked) must outlive the parse.
  ConfigFile(std::string path, std::vector<Source>* sources)
      : path_(std::move(path)), sources_(sources) {
    if (absl::EndsWithIgnoreCase(path_, ".ini")) {
      format_ = std::make_unique<CLI::ConfigINI>();
    } else {
      format_ = std::make_unique<CLI::ConfigTOML>();
    }
  }

  std::string to_config(const CLI::App* app, bool default_also,
                        bool write_description,
                        std::string prefix) const override {
    return format_->to_config(app, default_also, write_description,
                              std::move(prefix));
  }

  std::vector<CLI::ConfigItem> from_config(std::istream& input) const override {
    const std::string where = absl::StrCat("config file ", path_);
    std::vector<CLI::ConfigItem> kept;
    std::vector<bool> seen(Options().size(), false);
    for (CLI::ConfigItem& item : format_->from_config(input)) {
      if (!item.parents.empty()) {
        throw CLI::ConfigError(absl::StrCat(
            where, ": options go at the top level, not in a section ([",
            absl::StrJoin(item.parents, "."), "])"));
      }
      absl::string_view name = item.name;
      absl::ConsumePrefix(&name, "--");
      const Option* found = FindOption(name);
      if (found == nullptr) {
        throw CLI::ConfigError(
            absl::StrCat(where, ": unknown option \"", item.name, "\""));
      }
      const Option& o = *found;
      const size_t i = static_cast<size_t>(found - Options().data());
      if (seen[i]) {
        throw CLI::ConfigError(
            absl::StrCat(where, ": ", o.name, " is set twice"));
      }
      seen[i] = true;
      if (item.inputs.size() != 1) {
        if (!o.list) {
          throw CLI::ConfigError(absl::StrCat(
              where, ": ", o.name, " takes one value, not ", item.inputs.size(),
              " (quote a string that holds spaces or commas)"));
        }
        item.inputs = {absl::StrJoin(item.inputs, ",")};
      }
      // CLI11 2.1 ends a value at its first `#`, quoted or not.
      const std::string& value = item.inputs[0];
      if (!value.empty() && (value[0] == '"' || value[0] == '\'') &&
          (value.size() == 1 || value.back() != value[0])) {
        throw CLI::ConfigError(absl::StrCat(
            where, ": ", o.name,
            ": unterminated quoted string (a # starts a comment, even "
            "inside quotes)"));
      }
      item.name = o.name;
      if ((*sources_)[i] == Source::kFlag || InEnvironment(o)) continue;
      (*sources_)[i] = Source::kFile;
      kept.push_back(std::move(item));
    }
    return kept;
  }

 private:
  const std::string path_;
  std::vector<Source>* const sources_;
  std::unique_ptr<CLI::ConfigBase> format_;
};

}  // namespace

bool IsLoopbackListen(const std::string& listen) {
  std::string host = listen.substr(0, listen.rfind(':'));
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  if (host == "localhost") return true;
  // An address literal only: a name like 127.example.com is resolved by DNS,
  // to anything.
  in_addr v4;
  if (inet_pton(AF_INET, host.c_str(), &v4) == 1) {
    return (ntohl(v4.s_addr) >> 24) == 127;
  }
  in6_addr v6;
  return inet_pton(AF_INET6, host.c_str(), &v6) == 1 &&
         IN6_IS_ADDR_LOOPBACK(&v6);
}

std::vector<std::string> OptionNames() {
  std::vector<std::string> names;
  for (const Option& o : Options()) names.push_back(o.name);
  return names;
}

absl::StatusOr<ParsedConfig> ParseConfig(int argc, const char* const* argv) {
  ParsedConfig out;
  const std::vector<Option>& options = Options();
  std::vector<Source> sources(options.size(), Source::kDefault);

  // Pass 1, the command line alone: --help, --version, unknown flags, which
  // options the flags set, and the config file's name.
  std::string config_file;
  {
    CLI::App app{kAbout, "sessiond"};
    std::vector<std::string> values(options.size());
    const std::vector<CLI::Option*> flags =
        AddOptions(&app, &values, /*environment=*/false);
    app.add_option("--config", config_file, kConfigHelp)->envname(kConfigEnv);
    try {
      app.parse(argc, argv);
    } catch (const CLI::CallForHelp&) {
      out.help = true;
      out.help_text = HelpText();
      return out;
    } catch (const CLI::CallForVersion&) {
      out.help = true;
      out.help_text = absl::StrCat(VersionLine(), "\n");
      return out;
    } catch (const CLI::ParseError& e) {
      return absl::InvalidArgumentError(e.what());
    }
    for (size_t i = 0; i < options.size(); ++i) {
      if (flags[i]->count() > 0) sources[i] = Source::kFlag;
    }
  }
  if (!config_file.empty() && !std::ifstream(config_file)) {
    return absl::NotFoundError(
        absl::StrCat("cannot read config file ", config_file));
  }

  // Pass 2: CLI11 fills in what the flags left unset, from the file (through
  // ConfigFile, which drops what the environment sets) and the environment.
  CLI::App app{kAbout, "sessiond"};
  std::vector<std::string> values(options.size());
  const std::vector<CLI::Option*> cli =
      AddOptions(&app, &values, /*environment=*/true);
  app.set_config("--config", config_file, kConfigHelp);
  app.config_formatter(std::make_shared<ConfigFile>(config_file, &sources));
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return absl::InvalidArgumentError(e.what());
  }

  Config& config = out.config;
  for (size_t i = 0; i < options.size(); ++i) {
    if (sources[i] == Source::kDefault && cli[i]->count() > 0) {
      sources[i] = Source::kEnvironment;
    }
    if (sources[i] == Source::kDefault || cli[i]->results().empty()) continue;
    const Option& o = options[i];
    if (absl::Status s =
            SetOption(o, cli[i]->results().back(),
                      SourceText(sources[i], o, config_file), &config);
        !s.ok()) {
      return s;
    }
  }
  config.config_file = config_file;
  if (absl::Status s = CheckConsistent(config); !s.ok()) return s;
  return out;
}

std::string VersionLine() {
  return absl::StrCat("sessiond ", SESSIOND_VERSION_LINE);
}

std::vector<std::string> ReloadableOptionNames() {
  std::vector<std::string> names;
  for (const Option& o : Options()) {
    if (o.reloadable) names.push_back(o.name);
  }
  return names;
}

std::vector<OptionChange> ChangedOptions(const Config& running,
                                         const Config& next) {
  std::vector<OptionChange> changes;
  for (const Option& o : Options()) {
    std::string was = CurrentValue(o, running);
    std::string now = CurrentValue(o, next);
    if (was == now) continue;
    changes.push_back(OptionChange{.name = o.name,
                                   .running = std::move(was),
                                   .next = std::move(now),
                                   .reloadable = o.reloadable});
  }
  return changes;
}

absl::StatusOr<Config> WithReloadableOptions(const Config& running,
                                             const Config& next) {
  Config merged = running;
  for (const Option& o : Options()) {
    if (!o.reloadable) continue;
    if (o.int_field != nullptr) {
      *o.int_field(&merged) = *o.int_field(const_cast<Config*>(&next));
    } else {
      *o.string_field(&merged) = *o.string_field(const_cast<Config*>(&next));
    }
  }
  if (absl::Status s = CheckConsistent(merged); !s.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the reloadable options would not fit the ones running (", s.message(),
        "); nothing is applied: restart to change them together"));
  }
  return merged;
}

absl::StatusOr<std::map<uint64_t, std::string>> ParseInitialCluster(
    const std::string& value) {
  std::map<uint64_t, std::string> members;
  std::map<std::string, uint64_t> by_address;
  if (value.empty()) return members;
  for (absl::string_view item : absl::StrSplit(value, ',')) {
    item = absl::StripAsciiWhitespace(item);
    const size_t eq = item.find('=');
    uint64_t id = 0;
    if (eq == absl::string_view::npos ||
        !absl::SimpleAtoi(item.substr(0, eq), &id) || id == 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "\"", item, "\" is not ID=host:port with a non-zero ID"));
    }
    const std::string address(absl::StripAsciiWhitespace(item.substr(eq + 1)));
    if (absl::Status s = ValidateListen(address); !s.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("\"", item, "\": ", s.message()));
    }
    if (!members.emplace(id, address).second) {
      return absl::InvalidArgumentError(
          absl::StrCat("node ", id, " is listed twice"));
    }
    // Two ids at one address: a node would ask itself, or one peer twice,
    // and take the answer for another member's (bootstrap.cc).
    if (auto [it, added] = by_address.emplace(address, id); !added) {
      return absl::InvalidArgumentError(
          absl::StrCat("nodes ", it->second, " and ", id, " share the address ",
                       address, ": each member has its own"));
    }
  }
  return members;
}

absl::StatusOr<uint64_t> ConfiguredClusterId(const Config& config) {
  if (!config.cluster_id.empty()) return ParseClusterId(config.cluster_id);
  absl::StatusOr<std::map<uint64_t, std::string>> members =
      ParseInitialCluster(config.initial_cluster);
  if (!members.ok()) return members.status();
  if (members->empty()) return 0;
  // FNV-1a over the token and the sorted members: the same flags on every
  // node give the same id; another token or member list gives another.
  uint64_t h = 14695981039346656037ull;
  auto mix = [&h](absl::string_view bytes) {
    for (unsigned char c : bytes) {
      h ^= c;
      h *= 1099511628211ull;
    }
  };
  mix(config.cluster_token);
  for (const auto& [id, address] : *members) {
    mix(absl::StrCat("|", id, "=", address));
  }
  return h == 0 ? 1 : h;
}

bool AuditEnabled(const Config& config) {
  return config.audit == "true" || config.audit == "1";
}

Limits ServedLimits(const Config& config) {
  Limits limits = config.limits;
  limits.min_idle_timeout_ms =
      MinIdleTimeoutMs(limits.min_ttl_ms, config.touch_flush_interval_ms);
  return limits;
}

std::string ConfigSummary(const Config& config) {
  const Config defaults;
  std::vector<std::string> changed;
  for (const Option& o : Options()) {
    if (absl::string_view(o.name) == "listen" ||
        absl::string_view(o.name) == "data_dir") {
      continue;
    }
    const std::string value = CurrentValue(o, config);
    if (value != CurrentValue(o, defaults)) {
      changed.push_back(absl::StrCat(o.name, "=", value));
    }
  }
  return absl::StrCat(
      "sessiond config: listen=", config.listen, " data_dir=", config.data_dir,
      config.config_file.empty() ? ""
                                 : absl::StrCat(" config=", config.config_file),
      changed.empty() ? " (other options default)"
                      : absl::StrCat(" ", absl::StrJoin(changed, " ")));
}

}  // namespace sessiond::server
