// Copyright sessiond authors. Licensed under the Apache License 2.0.
#include "tools/sessionctl_config.h"

#include <cstdlib>
#include <fstream>
#include <initializer_list>
#include <sstream>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "tools/sessionctl_errors.h"

namespace sessiond::sessionctl {
namespace {

std::string Getenv(const char* name) {
  const char* value = std::getenv(name);
  return value == nullptr ? std::string() : std::string(value);
}

absl::Status CheckEndpoint(absl::string_view entry) {
  if (absl::StrContains(entry, "://") || absl::StartsWith(entry, "unix:")) {
    return absl::OkStatus();
  }
  const size_t colon = entry.rfind(':');
  if (colon == absl::string_view::npos || colon == 0) {
    return UsageError(absl::StrCat("'", entry, "' is not host:port"));
  }
  absl::string_view host = entry.substr(0, colon);
  if (absl::StartsWith(host, "[") != absl::EndsWith(host, "]")) {
    return UsageError(absl::StrCat(
        "'", entry, "': an IPv6 host goes in brackets, [::1]:port"));
  }
  if (!absl::StartsWith(host, "[") && absl::StrContains(host, ':')) {
    return UsageError(absl::StrCat(
        "'", entry, "': put an IPv6 host in brackets, e.g. [::1]:50051"));
  }
  int port = 0;
  if (!absl::SimpleAtoi(entry.substr(colon + 1), &port) || port < 1 ||
      port > 65535) {
    return UsageError(
        absl::StrCat("'", entry, "': the port must be a number in [1, 65535]"));
  }
  return absl::OkStatus();
}

// A config value: bare, quoted, or an array of quoted strings (joined with
// commas). Sets `error` when malformed.
std::string ConfigValue(absl::string_view raw, std::string* error) {
  raw = absl::StripAsciiWhitespace(raw);
  if (raw.empty()) return "";
  const char first = raw.front();
  if (first == '"' || first == '\'') {
    if (raw.size() < 2 || raw.back() != first) {
      *error = "unterminated quoted value";
      return "";
    }
    return std::string(raw.substr(1, raw.size() - 2));
  }
  if (first == '[') {
    if (raw.back() != ']') {
      *error = "unterminated array (put it on one line)";
      return "";
    }
    std::vector<std::string> items;
    for (absl::string_view item :
         absl::StrSplit(raw.substr(1, raw.size() - 2), ',')) {
      item = absl::StripAsciiWhitespace(item);
      if (item.empty()) continue;
      std::string item_error;
      items.push_back(ConfigValue(item, &item_error));
      if (!item_error.empty()) {
        *error = item_error;
        return "";
      }
    }
    return absl::StrJoin(items, ",");
  }
  return std::string(raw);
}

// Everything before a '#' that is not inside quotes.
absl::string_view StripComment(absl::string_view line) {
  char quote = 0;
  for (size_t i = 0; i < line.size(); ++i) {
    const char c = line[i];
    if (quote != 0) {
      if (c == quote) quote = 0;
    } else if (c == '"' || c == '\'') {
      quote = c;
    } else if (c == '#') {
      return line.substr(0, i);
    }
  }
  return line;
}

}  // namespace

Environment Environment::FromProcess() {
  Environment env;
  env.endpoints = Getenv("SESSIOND_ENDPOINTS");
  env.config = Getenv("SESSIONCTL_CONFIG");
  env.xdg_config_home = Getenv("XDG_CONFIG_HOME");
  env.home = Getenv("HOME");
  env.tls_ca = Getenv("SESSIOND_TLS_CA");
  env.tls_cert = Getenv("SESSIOND_TLS_CERT");
  env.tls_key = Getenv("SESSIOND_TLS_KEY");
  env.token_file = Getenv("SESSIOND_TOKEN_FILE");
  return env;
}

absl::StatusOr<std::vector<std::string>> ParseEndpoints(
    absl::string_view list) {
  std::vector<std::string> endpoints;
  for (absl::string_view entry :
       absl::StrSplit(list, absl::ByAnyChar(", \t\n"), absl::SkipEmpty())) {
    if (absl::Status s = CheckEndpoint(entry); !s.ok()) return s;
    endpoints.emplace_back(entry);
  }
  if (endpoints.empty()) return UsageError("no endpoint in the list");
  return endpoints;
}

absl::StatusOr<absl::Duration> ParseDuration(absl::string_view text) {
  text = absl::StripAsciiWhitespace(text);
  absl::Duration d;
  double seconds = 0;
  if (absl::SimpleAtod(text, &seconds)) {
    d = absl::Seconds(seconds);
  } else if (!absl::ParseDuration(text, &d)) {
    return UsageError(
        absl::StrCat("'", text, "' is not a duration (e.g. 2s, 500ms, 1m30s)"));
  }
  if (d <= absl::ZeroDuration() || d == absl::InfiniteDuration()) {
    return UsageError(
        absl::StrCat("'", text, "': the duration must be positive"));
  }
  return d;
}

absl::StatusOr<std::map<std::string, std::string>> ParseConfigFile(
    absl::string_view text, absl::string_view path) {
  std::map<std::string, std::string> values;
  int number = 0;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    ++number;
    const auto fail = [&](absl::string_view why) {
      return UsageError(
          absl::StrCat("config file ", path, " line ", number, ": ", why));
    };
    line = absl::StripAsciiWhitespace(StripComment(line));
    if (line.empty()) continue;
    if (absl::StartsWith(line, "[")) {
      return fail("sections are not used: write key = value lines");
    }
    const size_t eq = line.find('=');
    if (eq == absl::string_view::npos) return fail("expected key = value");
    const std::string key(absl::StripAsciiWhitespace(line.substr(0, eq)));
    if (key != "endpoints" && key != "timeout" && key != "tls_ca" &&
        key != "tls_cert" && key != "tls_key" && key != "token_file") {
      return fail(absl::StrCat("unknown key '", key,
                               "' (known: endpoints, timeout, tls_ca, "
                               "tls_cert, tls_key, token_file)"));
    }
    if (values.count(key) > 0) {
      return fail(absl::StrCat("'", key, "' is set twice"));
    }
    std::string error;
    std::string value = ConfigValue(line.substr(eq + 1), &error);
    if (!error.empty()) return fail(error);
    values[key] = std::move(value);
  }
  return values;
}

absl::StatusOr<Settings> ResolveSettings(const GlobalFlags& flags,
                                         const Environment& env) {
  Settings settings;
  // The config file: named (must exist) or the default (may be missing).
  std::string path = flags.config;
  std::string named_by = "--config";
  if (path.empty() && !env.config.empty()) {
    path = env.config;
    named_by = "SESSIONCTL_CONFIG";
  }
  bool required = !path.empty();
  if (path.empty()) {
    if (!env.xdg_config_home.empty()) {
      path = absl::StrCat(env.xdg_config_home, "/sessionctl.toml");
    } else if (!env.home.empty()) {
      path = absl::StrCat(env.home, "/.config/sessionctl.toml");
    }
  }
  std::map<std::string, std::string> file;
  if (!path.empty()) {
    std::ifstream in(path);
    if (in) {
      std::stringstream text;
      text << in.rdbuf();
      absl::StatusOr<std::map<std::string, std::string>> parsed =
          ParseConfigFile(text.str(), path);
      if (!parsed.ok()) return parsed.status();
      file = *std::move(parsed);
      settings.config_path = path;
    } else if (required) {
      return UsageError(absl::StrCat("cannot read the config file ", path, " (",
                                     named_by, ")"));
    }
  }

  std::string list = kDefaultEndpoint;
  settings.endpoints_source = "the default";
  if (!flags.endpoints.empty()) {
    list = flags.endpoints;
    settings.endpoints_source = "--endpoints";
  } else if (!env.endpoints.empty()) {
    list = env.endpoints;
    settings.endpoints_source = "SESSIOND_ENDPOINTS";
  } else if (auto it = file.find("endpoints"); it != file.end()) {
    list = it->second;
    settings.endpoints_source = absl::StrCat("config file ", path);
  }
  absl::StatusOr<std::vector<std::string>> endpoints = ParseEndpoints(list);
  if (!endpoints.ok()) {
    return UsageError(absl::StrCat("endpoints from ", settings.endpoints_source,
                                   ": ", endpoints.status().message()));
  }
  settings.endpoints = *std::move(endpoints);

  std::string timeout;
  std::string timeout_source;
  if (!flags.timeout.empty()) {
    timeout = flags.timeout;
    timeout_source = "--timeout";
  } else if (auto it = file.find("timeout"); it != file.end()) {
    timeout = it->second;
    timeout_source = absl::StrCat("timeout in config file ", path);
  }
  if (!timeout.empty()) {
    absl::StatusOr<absl::Duration> d = ParseDuration(timeout);
    if (!d.ok()) {
      return UsageError(
          absl::StrCat(timeout_source, ": ", d.status().message()));
    }
    settings.timeout = *d;
  }

  // TLS files: flag > environment > config file, relative paths in the file
  // taken from its folder.
  struct Level {
    const std::string& value;
    std::string source;
  };
  const auto from_file = [&](const std::string& key) -> std::string {
    auto it = file.find(key);
    if (it == file.end() || it->second.empty()) return "";
    if (absl::StartsWith(it->second, "/")) return it->second;
    const size_t slash = path.rfind('/');
    if (slash == std::string::npos) return it->second;
    return absl::StrCat(path.substr(0, slash + 1), it->second);
  };
  const std::string file_ca = from_file("tls_ca");
  const std::string file_cert = from_file("tls_cert");
  const std::string file_key = from_file("tls_key");
  const std::string file_token = from_file("token_file");
  const auto in_file = [&](absl::string_view key) {
    return absl::StrCat(key, " in config file ", path);
  };
  const auto pick = [](std::initializer_list<Level> levels) {
    for (const Level& level : levels) {
      if (!level.value.empty()) return FileSetting{level.value, level.source};
    }
    return FileSetting();
  };
  settings.tls_ca = pick({{flags.tls_ca, "--tls-ca"},
                          {env.tls_ca, "SESSIOND_TLS_CA"},
                          {file_ca, in_file("tls_ca")}});
  settings.token_file = pick({{flags.token_file, "--token-file"},
                              {env.token_file, "SESSIOND_TOKEN_FILE"},
                              {file_token, in_file("token_file")}});
  // The certificate and its key come from one place, so that a flag never
  // pairs with a key from the environment (another identity's, maybe).
  const struct {
    const std::string& cert;
    const std::string& key;
    std::string cert_source;
    std::string key_source;
  } pairs[] = {
      {flags.tls_cert, flags.tls_key, "--tls-cert", "--tls-key"},
      {env.tls_cert, env.tls_key, "SESSIOND_TLS_CERT", "SESSIOND_TLS_KEY"},
      {file_cert, file_key, in_file("tls_cert"), in_file("tls_key")},
  };
  for (const auto& pair : pairs) {
    if (pair.cert.empty() && pair.key.empty()) continue;
    if (pair.cert.empty() || pair.key.empty()) {
      return UsageError(absl::StrCat(
          pair.cert.empty() ? pair.key_source : pair.cert_source,
          " is set without ",
          pair.cert.empty() ? pair.cert_source : pair.key_source,
          ": a client certificate needs its key (give both, or neither)"));
    }
    settings.tls_cert = {pair.cert, pair.cert_source};
    settings.tls_key = {pair.key, pair.key_source};
    break;
  }
  if (settings.tls_ca.empty()) {
    const FileSetting& needs_ca =
        !settings.tls_cert.empty() ? settings.tls_cert : settings.token_file;
    if (!needs_ca.empty()) {
      return UsageError(absl::StrCat(
          needs_ca.source,
          " is set but no CA is: give --tls-ca (or SESSIOND_TLS_CA, or "
          "tls_ca in the config file), the CA bundle that signed the nodes' "
          "certificates (sessionctl then speaks TLS; a token is only ever "
          "sent over TLS)"));
    }
  }
  return settings;
}

}  // namespace sessiond::sessionctl
