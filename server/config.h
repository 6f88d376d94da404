// Copyright sessiond authors. Licensed under the Apache License 2.0.
#ifndef SESSIOND_SERVER_CONFIG_H_
#define SESSIOND_SERVER_CONFIG_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "server/limits.h"

namespace sessiond::server {

// Everything sessiond can be told. Every field is an option declared once in
// config.cc's table (name, default, help, validator: redis config.c's
// shape), settable as a flag (--name value) or as a `name = value` line of
// the --config file; flags override the file.
struct Config {
  std::string listen = "127.0.0.1:50051";
  std::string data_dir = "./sessiond-data";
  int64_t shards = 64;
  Limits limits;
  int64_t sweep_interval_ms = 1000;
  // Most sessions one expiry command removes; a sweep proposes several
  // commands when more have expired.
  int64_t sweep_batch = 1000;
  int64_t expiry_leeway_ms = 0;
  // Validate-with-touch is folded into one TouchCommand per interval: this is
  // the resolution of idle timeouts.
  int64_t touch_flush_interval_ms = 1000;
  int64_t tick_ms = 100;
  // Log compaction: how often to look, and how many newly applied entries
  // make it worth a compaction.
  int64_t log_compact_interval_ms = 60000;
  int64_t log_compact_min_entries = 10000;
  // How long SIGTERM waits for in-flight calls before cancelling them.
  int64_t shutdown_grace_ms = 5000;
  // Hidden: a SESSIOND_FAULT_POINT name to crash at (fault tests).
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

// Parses flags and the optional --config file. InvalidArgument (the caller
// exits 2) for an unknown flag or key, a malformed or out-of-range value, or
// options inconsistent with each other; NotFound when the config file cannot
// be read. The message says which option and why.
absl::StatusOr<ParsedConfig> ParseConfig(int argc, const char* const* argv);

// Parses `text` in the config file format: one `name = value` per line,
// `#` comments, blank lines, values optionally in double quotes. Applies to
// `config` only the options present. InvalidArgument names the line.
absl::Status ApplyConfigText(const std::string& text, const std::string& source,
                             Config* config);

// One line: where it listens, data dir, shards and the non-default options.
std::string ConfigSummary(const Config& config);

// The names of all options, in table order (for tests and docs).
std::vector<std::string> OptionNames();

}  // namespace sessiond::server

#endif  // SESSIOND_SERVER_CONFIG_H_
