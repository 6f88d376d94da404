// Copyright sessiond authors. Licensed under the Apache License 2.0.
#include "common/log.h"

#include <atomic>
#include <memory>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "spdlog/sinks/stdout_sinks.h"
#include "spdlog/spdlog.h"

namespace sessiond::logging {
namespace {

std::atomic<uint64_t> g_node{0};

// Debian's Abseil has its own string_view.
absl::string_view A(std::string_view text) {
  return absl::string_view(text.data(), text.size());
}
std::atomic<Format> g_format{Format::kText};

// One logger for the process, stderr, flushed on every line (lines are
// rare; a crash must not lose the one that explains it).
spdlog::logger& Logger() {
  static spdlog::logger* logger = [] {
    auto sink = std::make_shared<spdlog::sinks::stderr_sink_mt>();
    auto* made = new spdlog::logger("sessiond", std::move(sink));
    made->set_pattern("%Y-%m-%dT%H:%M:%S.%eZ %-7l %v",
                      spdlog::pattern_time_type::utc);
    made->set_level(spdlog::level::info);
    made->flush_on(spdlog::level::trace);
    return made;
  }();
  return *logger;
}

spdlog::level::level_enum ToSpdlog(Level level) {
  switch (level) {
    case Level::kDebug:
      return spdlog::level::debug;
    case Level::kInfo:
      return spdlog::level::info;
    case Level::kWarn:
      return spdlog::level::warn;
    case Level::kError:
      return spdlog::level::err;
  }
  return spdlog::level::info;
}

// JSON string contents: quotes, backslashes and control characters escaped.
void AppendJsonString(std::string* out, std::string_view value) {
  out->push_back('"');
  for (char c : value) {
    switch (c) {
      case '"':
        out->append("\\\"");
        break;
      case '\\':
        out->append("\\\\");
        break;
      case '\n':
        out->append("\\n");
        break;
      case '\t':
        out->append("\\t");
        break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) {
          absl::StrAppend(out, absl::StrFormat("\\u%04x", static_cast<int>(c)));
        } else {
          out->push_back(c);
        }
    }
  }
  out->push_back('"');
}

// A text value: bare when it is one plain word, else quoted like JSON.
void AppendTextValue(std::string* out, std::string_view value) {
  bool plain = !value.empty();
  for (char c : value) {
    if (c == ' ' || c == '"' || c == '=' || c == '\\' ||
        static_cast<unsigned char>(c) < 0x20) {
      plain = false;
      break;
    }
  }
  if (plain) {
    out->append(value);
  } else {
    AppendJsonString(out, value);
  }
}

}  // namespace

absl::StatusOr<Level> ParseLevel(std::string_view name) {
  const std::string lower = absl::AsciiStrToLower(A(name));
  if (lower == "debug") return Level::kDebug;
  if (lower == "info") return Level::kInfo;
  if (lower == "warn") return Level::kWarn;
  if (lower == "error") return Level::kError;
  return absl::InvalidArgumentError("must be debug, info, warn or error");
}

absl::StatusOr<Format> ParseFormat(std::string_view name) {
  if (name == "text") return Format::kText;
  if (name == "json") return Format::kJson;
  return absl::InvalidArgumentError("must be text or json");
}

void Configure(Format format, Level min_level) {
  g_format.store(format, std::memory_order_relaxed);
  Logger().set_pattern(format == Format::kJson
                           ? R"({"ts":"%Y-%m-%dT%H:%M:%S.%eZ","level":"%l",%v})"
                           : "%Y-%m-%dT%H:%M:%S.%eZ %-7l %v",
                       spdlog::pattern_time_type::utc);
  SetLevel(min_level);
}

void SetLevel(Level min_level) { Logger().set_level(ToSpdlog(min_level)); }

void SetNode(uint64_t node_id) {
  g_node.store(node_id, std::memory_order_relaxed);
}

Fields& Fields::Add(std::string_view key, std::string_view value) {
  absl::StrAppend(&text_, " ", A(key), "=");
  AppendTextValue(&text_, value);
  absl::StrAppend(&json_, ",\"", A(key), "\":");
  AppendJsonString(&json_, value);
  return *this;
}

Fields& Fields::Add(std::string_view key, int64_t value) {
  absl::StrAppend(&text_, " ", A(key), "=", value);
  absl::StrAppend(&json_, ",\"", A(key), "\":", value);
  return *this;
}

Fields& Fields::Add(std::string_view key, uint64_t value) {
  absl::StrAppend(&text_, " ", A(key), "=", value);
  absl::StrAppend(&json_, ",\"", A(key), "\":", value);
  return *this;
}

Fields& Fields::Add(std::string_view key, double value) {
  absl::StrAppend(&text_, " ", A(key), "=", value);
  absl::StrAppend(&json_, ",\"", A(key), "\":", value);
  return *this;
}

Fields& Fields::Add(std::string_view key, bool value) {
  absl::StrAppend(&text_, " ", A(key), "=", value ? "true" : "false");
  absl::StrAppend(&json_, ",\"", A(key), "\":", value ? "true" : "false");
  return *this;
}

Fields& Fields::Error(const absl::Status& status) {
  return Add("error", status.ToString());
}

void Log(Level level, std::string_view event, const Fields& fields) {
  spdlog::logger& logger = Logger();
  const spdlog::level::level_enum spd = ToSpdlog(level);
  if (!logger.should_log(spd)) return;
  const uint64_t node = g_node.load(std::memory_order_relaxed);
  std::string line;
  if (g_format.load(std::memory_order_relaxed) == Format::kJson) {
    line.append("\"event\":");
    AppendJsonString(&line, event);
    if (node != 0) absl::StrAppend(&line, ",\"node\":", node);
    line.append(fields.json());
  } else {
    line.append(event);
    if (node != 0) absl::StrAppend(&line, " node=", node);
    line.append(fields.text());
  }
  logger.log(spd, "{}", line);
}

}  // namespace sessiond::logging
