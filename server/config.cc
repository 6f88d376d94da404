// Copyright sessiond authors. Licensed under the Apache License 2.0.
#include "server/config.h"

#include <fstream>
#include <limits>
#include <sstream>

#include "CLI/CLI.hpp"
#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace sessiond::server {
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

absl::Status ValidateClusterState(const std::string& value) {
  if (value == "new" || value == "existing") return absl::OkStatus();
  return absl::InvalidArgumentError("must be new or existing");
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
// place); the table gives each its name, help, range or validator.
struct Option {
  const char* name;
  const char* help;
  int64_t* (*int_field)(Config*) = nullptr;
  std::string* (*string_field)(Config*) = nullptr;
  int64_t min = 0;
  int64_t max = kInt64Max;
  absl::Status (*validate)(const std::string&) = nullptr;
  bool hidden = false;
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
       .max = kDayMs},
      {.name = "sweep_batch",
       .help = "most sessions one expiry command removes",
       .int_field = SESSIOND_INT_FIELD(sweep_batch),
       .min = 1,
       .max = 1 << 20},
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
       .max = 3600 * 1000},
      {.name = "disk_reserve_mb",
       .help = "writes are refused (RESOURCE_EXHAUSTED) while the data dir's "
               "file system has less than this free, and resume by "
               "themselves at twice it; a 32 MiB reserve file is held "
               "back for RocksDB and released when the disk fills (0: off)",
       .int_field = SESSIOND_INT_FIELD(disk_reserve_mb),
       .min = 0,
       .max = 1 << 20},
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
       .validate = ValidateInitialCluster},
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
      {.name = "clock_slew_ppm",
       .help = "how fast cluster time may move toward the wall clock, in "
               "parts per million",
       .int_field = SESSIOND_INT_FIELD(clock_slew_ppm),
       .min = 0,
       .max = 100000},
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
      {.name = "fault_point",
       .help = "NAME[@N]: exit with code 86 at the N-th pass of this fault "
               "point (fault tests only)",
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
// ("flag --x", "file:line") for the error message.
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
  if (config.heartbeat_ticks >= config.election_ticks) {
    return absl::InvalidArgumentError(
        "--heartbeat_ticks must be below --election_ticks");
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
  return absl::OkStatus();
}

}  // namespace

std::vector<std::string> OptionNames() {
  std::vector<std::string> names;
  for (const Option& o : Options()) names.push_back(o.name);
  return names;
}

absl::Status ApplyConfigText(const std::string& text, const std::string& source,
                             Config* config) {
  int line_number = 0;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    ++line_number;
    const std::string where = absl::StrCat(source, ":", line_number);
    line = absl::StripAsciiWhitespace(line);
    if (line.empty() || line[0] == '#') continue;
    const size_t eq = line.find('=');
    if (eq == absl::string_view::npos) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, ": expected `name = value`"));
    }
    absl::string_view name = absl::StripAsciiWhitespace(line.substr(0, eq));
    absl::string_view value = absl::StripAsciiWhitespace(line.substr(eq + 1));
    // A trailing comment, unless the value is quoted.
    if (!value.empty() && value[0] == '"') {
      const size_t close = value.find('"', 1);
      if (close == absl::string_view::npos) {
        return absl::InvalidArgumentError(
            absl::StrCat(where, ": unterminated quoted value"));
      }
      absl::string_view rest =
          absl::StripAsciiWhitespace(value.substr(close + 1));
      if (!rest.empty() && rest[0] != '#') {
        return absl::InvalidArgumentError(
            absl::StrCat(where, ": text after the quoted value"));
      }
      value = value.substr(1, close - 1);
    } else if (const size_t hash = value.find('#');
               hash != absl::string_view::npos) {
      value = absl::StripAsciiWhitespace(value.substr(0, hash));
    }
    absl::ConsumePrefix(&name, "--");
    const Option* o = FindOption(name);
    if (o == nullptr) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, ": unknown option \"", name, "\""));
    }
    if (absl::Status s = SetOption(*o, std::string(value), where, config);
        !s.ok()) {
      return s;
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<ParsedConfig> ParseConfig(int argc, const char* const* argv) {
  ParsedConfig out;
  const Config defaults;
  CLI::App app{"sessiond: a session store that cannot log everybody out"};
  app.set_version_flag("--version",
                       absl::StrCat("sessiond ", kSessiondVersion));
  std::string config_file;
  app.add_option("--config", config_file,
                 "read options from this file (`name = value` lines); flags "
                 "given on the command line override it");
  std::vector<std::string> values(Options().size());
  std::vector<CLI::Option*> cli_options;
  for (size_t i = 0; i < Options().size(); ++i) {
    const Option& o = Options()[i];
    CLI::Option* opt = app.add_option(
        absl::StrCat("--", o.name), values[i],
        absl::StrCat(o.help, " (default: ", CurrentValue(o, defaults), ")"));
    opt->type_name(o.int_field != nullptr ? "INT" : "TEXT");
    if (o.hidden) opt->group("");
    cli_options.push_back(opt);
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp&) {
    out.help = true;
    out.help_text = app.help();
    return out;
  } catch (const CLI::CallForVersion&) {
    out.help = true;
    out.help_text = "sessiond 0.1\n";
    return out;
  } catch (const CLI::ParseError& e) {
    return absl::InvalidArgumentError(e.what());
  }

  Config& config = out.config;
  if (!config_file.empty()) {
    std::ifstream in(config_file);
    if (!in) {
      return absl::NotFoundError(
          absl::StrCat("cannot read config file ", config_file));
    }
    std::stringstream text;
    text << in.rdbuf();
    if (absl::Status s = ApplyConfigText(text.str(), config_file, &config);
        !s.ok()) {
      return s;
    }
    config.config_file = config_file;
  }
  for (size_t i = 0; i < Options().size(); ++i) {
    if (cli_options[i]->count() == 0) continue;
    const Option& o = Options()[i];
    if (absl::Status s =
            SetOption(o, values[i], absl::StrCat("flag --", o.name), &config);
        !s.ok()) {
      return s;
    }
  }
  if (absl::Status s = CheckConsistent(config); !s.ok()) return s;
  return out;
}

absl::StatusOr<std::map<uint64_t, std::string>> ParseInitialCluster(
    const std::string& value) {
  std::map<uint64_t, std::string> members;
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
