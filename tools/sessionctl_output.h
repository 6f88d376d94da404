// Copyright sessiond authors. Licensed under the Apache License 2.0.
#ifndef SESSIOND_TOOLS_SESSIONCTL_OUTPUT_H_
#define SESSIOND_TOOLS_SESSIONCTL_OUTPUT_H_

#include <google/protobuf/message.h>

#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "nlohmann/json.hpp"

namespace sessiond::sessionctl {

// Where a verb prints its result: a table, or (json) one JSON document.
struct Output {
  bool json = false;
  std::FILE* stream = stdout;
};

// How sessionctl prints: the --json documents and the tables. The JSON
// field names are the .proto's (docs/OPERATIONS.md lists them); they are a
// stable interface for scripts.

// `message` as JSON with every field present, defaults included, named as in
// the .proto: integers as numbers, enums by name, nested messages as
// objects, maps as objects, repeated fields as arrays; a bytes value as a
// string when it is valid UTF-8, else as {"base64": "..."}.
nlohmann::json MessageToJson(const google::protobuf::Message& message);

// Writes `doc` and a newline: indented, or on one line (`--watch`).
void PrintJson(std::FILE* out, const nlohmann::json& doc, bool one_line);

// A text table: columns padded to their widest cell, two spaces apart.
// Cells go through Printable().
class Table {
 public:
  explicit Table(std::vector<std::string> header);
  void AddRow(std::vector<std::string> row);
  std::string Render() const;

 private:
  std::vector<std::vector<std::string>> rows_;  // the header first
};

// "2024-05-01 10:00:00Z (in 59m)", "... (3h12m ago)"; "-" for 0.
std::string FormatTimeMs(int64_t unix_ms, absl::Time now);
// "in 59m", "3h12m ago"; "-" for 0.
std::string FormatRelativeMs(int64_t unix_ms, absl::Time now);
// "750ms", "59m", "3h12m", "2d4h".
std::string FormatDurationMs(int64_t ms);
// "512 B", "1.5 MiB", "12.0 GiB".
std::string FormatBytes(uint64_t bytes);
// "0x1234abcd...": cluster ids as sessiond prints them.
std::string HexId(uint64_t id);
// Whether `bytes` is valid UTF-8.
bool IsUtf8(absl::string_view bytes);
// `text` safe to print on a terminal: control characters (escape sequences
// in a user agent, say) as \xNN, and text that is not UTF-8 hex-escaped
// (absl::CHexEscape).
std::string Printable(absl::string_view text);

}  // namespace sessiond::sessionctl

#endif  // SESSIOND_TOOLS_SESSIONCTL_OUTPUT_H_
