// Copyright sessiond authors. Licensed under the Apache License 2.0.
#ifndef SESSIOND_TOOLS_SESSIONCTL_CONFIG_H_
#define SESSIOND_TOOLS_SESSIONCTL_CONFIG_H_

#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace sessiond::sessionctl {

// Where sessionctl's settings come from, highest precedence first: flags,
// environment variables, the config file, built-in defaults
// (docs/OPERATIONS.md, "sessionctl").

// The client address used when nothing names one.
inline constexpr char kDefaultEndpoint[] = "127.0.0.1:50051";
inline constexpr absl::Duration kDefaultTimeout = absl::Seconds(5);

// The environment variables sessionctl reads (empty: unset).
struct Environment {
  std::string endpoints;        // SESSIOND_ENDPOINTS
  std::string config;           // SESSIONCTL_CONFIG: the config file
  std::string xdg_config_home;  // XDG_CONFIG_HOME
  std::string home;             // HOME
  // TLS (docs/OPERATIONS.md, "sessionctl": "TLS and tokens").
  std::string tls_ca;      // SESSIOND_TLS_CA
  std::string tls_cert;    // SESSIOND_TLS_CERT
  std::string tls_key;     // SESSIOND_TLS_KEY
  std::string token_file;  // SESSIOND_TOKEN_FILE

  static Environment FromProcess();
};

// The global flags as given (empty: not given).
struct GlobalFlags {
  std::string endpoints;   // --endpoints
  std::string config;      // --config
  std::string timeout;     // --timeout
  std::string tls_ca;      // --tls-ca
  std::string tls_cert;    // --tls-cert
  std::string tls_key;     // --tls-key
  std::string token_file;  // --token-file
};

// A file setting and where it came from, for messages: "--tls-ca",
// "SESSIOND_TLS_CA" or "tls_ca in config file PATH". Empty path: not set.
struct FileSetting {
  std::string path;
  std::string source;
  bool empty() const { return path.empty(); }
};

struct Settings {
  std::vector<std::string> endpoints;
  // Where `endpoints` came from, for messages: "--endpoints",
  // "SESSIOND_ENDPOINTS", "config file PATH" or "the default".
  std::string endpoints_source;
  absl::Duration timeout = kDefaultTimeout;
  // The config file that was read; empty when none was.
  std::string config_path;
  // TLS: the CA bundle that signed the nodes' certificates; this client's
  // certificate and key; a file holding a bearer token. Each is the flag,
  // else the environment variable, else the config file key (a relative
  // path there is relative to the config file's folder). The certificate
  // and the key are one setting: both come from the first of those that
  // sets either. With any of them set, tls_ca must be set too (sessionctl
  // speaks TLS then; a token is only ever sent over TLS).
  FileSetting tls_ca;
  FileSetting tls_cert;
  FileSetting tls_key;
  FileSetting token_file;
  bool tls() const { return !tls_ca.empty(); }
};

// Resolves the settings. The config file is --config, else
// SESSIONCTL_CONFIG, else $XDG_CONFIG_HOME/sessionctl.toml, else
// $HOME/.config/sessionctl.toml; a file named by --config or
// SESSIONCTL_CONFIG must exist, the default one may be missing. Errors are
// UsageError()s naming the flag, variable or file line at fault.
absl::StatusOr<Settings> ResolveSettings(const GlobalFlags& flags,
                                         const Environment& env);

// "host:port,host:port" (commas and/or whitespace). Each entry is host:port
// with a port in [1, 65535] (an IPv6 host in brackets), or a gRPC target
// with a scheme ("dns:///name:port", "unix:/path"), taken as is.
absl::StatusOr<std::vector<std::string>> ParseEndpoints(absl::string_view list);

// A positive duration: "2s", "500ms", "1m30s", or a number of seconds.
absl::StatusOr<absl::Duration> ParseDuration(absl::string_view text);

// The config file's `key = value` lines (TOML's subset: `#` comments, a
// value bare, in double or single quotes, or an array of quoted strings,
// which becomes a comma-separated list). Keys: endpoints, timeout, tls_ca,
// tls_cert, tls_key, token_file. `path` is for messages.
absl::StatusOr<std::map<std::string, std::string>> ParseConfigFile(
    absl::string_view text, absl::string_view path);

}  // namespace sessiond::sessionctl

#endif  // SESSIOND_TOOLS_SESSIONCTL_CONFIG_H_
