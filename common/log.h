// Copyright sessiond authors. Licensed under the Apache License 2.0.
//
// Structured, levelled log lines on stderr: one line per event, named by a
// stable event name ("sweeper.command_failed") and stable keys (node, term,
// index, peer, duration_ms, error, ...), through spdlog.
//
//   text (default, for a terminal and journald):
//     2026-12-02T01:02:03.456Z warning sweeper.command_failed node=1 error=...
//   json (--log_format=json, for a log pipeline), one object per line:
//     {"ts":"2026-12-02T01:02:03.456Z","level":"warning",
//      "event":"sweeper.command_failed","node":1,"error":"..."}
//
// What must never be logged: tokens, token hashes, private keys. Callers
// pass ids (session_id, node id, revocation id), never a secret;
// tests/integration/log_secrets_test.cc greps a cluster's logs for the
// tokens it created.
//
// Thread-safe. Until Configure() runs, lines go out as text at info level.
#ifndef SESSIOND_COMMON_LOG_H_
#define SESSIOND_COMMON_LOG_H_

#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace sessiond::logging {

enum class Level { kDebug, kInfo, kWarn, kError };
enum class Format { kText, kJson };

absl::StatusOr<Level> ParseLevel(std::string_view name);
absl::StatusOr<Format> ParseFormat(std::string_view name);

// Output format and the least level written.
void Configure(Format format, Level min_level);
// Changes the least level (SIGHUP reload).
void SetLevel(Level min_level);
// Every line carries node=ID once it is known (0: not yet).
void SetNode(uint64_t node_id);

// The keys of one line, in order. Values are escaped for the format.
class Fields {
 public:
  Fields& Add(std::string_view key, std::string_view value);
  Fields& Add(std::string_view key, const char* value) {
    return Add(key, std::string_view(value));
  }
  Fields& Add(std::string_view key, const std::string& value) {
    return Add(key, std::string_view(value));
  }
  Fields& Add(std::string_view key, int64_t value);
  Fields& Add(std::string_view key, uint64_t value);
  Fields& Add(std::string_view key, int value) {
    return Add(key, static_cast<int64_t>(value));
  }
  Fields& Add(std::string_view key, double value);
  Fields& Add(std::string_view key, bool value);
  // error=<status as text>
  Fields& Error(const absl::Status& status);

  // Rendered for `format`: ` k=v k="v w"` or `,"k":v,"k":"v"`.
  const std::string& text() const { return text_; }
  const std::string& json() const { return json_; }

 private:
  std::string text_;
  std::string json_;
};

// Writes one line (when `level` is at least the configured one).
void Log(Level level, std::string_view event, const Fields& fields = Fields());

inline void Debug(std::string_view event, const Fields& fields = Fields()) {
  Log(Level::kDebug, event, fields);
}
inline void Info(std::string_view event, const Fields& fields = Fields()) {
  Log(Level::kInfo, event, fields);
}
inline void Warn(std::string_view event, const Fields& fields = Fields()) {
  Log(Level::kWarn, event, fields);
}
inline void Error(std::string_view event, const Fields& fields = Fields()) {
  Log(Level::kError, event, fields);
}

}  // namespace sessiond::logging

#endif  // SESSIOND_COMMON_LOG_H_
