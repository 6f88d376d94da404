// Copyright sessiond authors. Licensed under the Apache License 2.0.
#include "tools/sessionctl_output.h"

#include <google/protobuf/descriptor.h>

#include <algorithm>
#include <iterator>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace sessiond::sessionctl {
namespace {

using google::protobuf::FieldDescriptor;
using google::protobuf::Message;
using google::protobuf::Reflection;

nlohmann::json BytesToJson(const std::string& bytes) {
  if (IsUtf8(bytes)) return bytes;
  return nlohmann::json{{"base64", absl::Base64Escape(bytes)}};
}

// One value of `field`: element `index` of a repeated field, or the
// singular value when index < 0.
nlohmann::json FieldValue(const Message& message, const FieldDescriptor* field,
                          int index) {
  const Reflection* r = message.GetReflection();
  const bool rep = index >= 0;
  switch (field->cpp_type()) {
    case FieldDescriptor::CPPTYPE_INT32:
      return rep ? r->GetRepeatedInt32(message, field, index)
                 : r->GetInt32(message, field);
    case FieldDescriptor::CPPTYPE_INT64:
      return rep ? r->GetRepeatedInt64(message, field, index)
                 : r->GetInt64(message, field);
    case FieldDescriptor::CPPTYPE_UINT32:
      return rep ? r->GetRepeatedUInt32(message, field, index)
                 : r->GetUInt32(message, field);
    case FieldDescriptor::CPPTYPE_UINT64:
      return rep ? r->GetRepeatedUInt64(message, field, index)
                 : r->GetUInt64(message, field);
    case FieldDescriptor::CPPTYPE_DOUBLE:
      return rep ? r->GetRepeatedDouble(message, field, index)
                 : r->GetDouble(message, field);
    case FieldDescriptor::CPPTYPE_FLOAT:
      return rep ? r->GetRepeatedFloat(message, field, index)
                 : r->GetFloat(message, field);
    case FieldDescriptor::CPPTYPE_BOOL:
      return rep ? r->GetRepeatedBool(message, field, index)
                 : r->GetBool(message, field);
    case FieldDescriptor::CPPTYPE_ENUM:
      return (rep ? r->GetRepeatedEnum(message, field, index)
                  : r->GetEnum(message, field))
          ->name();
    case FieldDescriptor::CPPTYPE_STRING: {
      std::string value = rep ? r->GetRepeatedString(message, field, index)
                              : r->GetString(message, field);
      if (field->type() == FieldDescriptor::TYPE_BYTES) {
        return BytesToJson(value);
      }
      return value;
    }
    case FieldDescriptor::CPPTYPE_MESSAGE:
      return MessageToJson(rep ? r->GetRepeatedMessage(message, field, index)
                               : r->GetMessage(message, field));
  }
  return nullptr;
}

// A map key as a JSON object key.
std::string MapKey(const Message& entry) {
  const FieldDescriptor* key = entry.GetDescriptor()->map_key();
  const nlohmann::json value = FieldValue(entry, key, -1);
  return value.is_string() ? value.get<std::string>() : value.dump();
}

}  // namespace

nlohmann::json MessageToJson(const Message& message) {
  nlohmann::json out = nlohmann::json::object();
  const google::protobuf::Descriptor* d = message.GetDescriptor();
  const Reflection* r = message.GetReflection();
  for (int i = 0; i < d->field_count(); ++i) {
    const FieldDescriptor* field = d->field(i);
    // Of a oneof, only the member that is set: every member printed (each
    // at its default) would not say which one the message holds.
    if (field->real_containing_oneof() != nullptr &&
        !r->HasField(message, field)) {
      continue;
    }
    if (field->is_map()) {
      nlohmann::json map = nlohmann::json::object();
      for (int j = 0; j < r->FieldSize(message, field); ++j) {
        const Message& entry = r->GetRepeatedMessage(message, field, j);
        map[MapKey(entry)] =
            FieldValue(entry, entry.GetDescriptor()->map_value(), -1);
      }
      out[field->name()] = std::move(map);
    } else if (field->is_repeated()) {
      nlohmann::json array = nlohmann::json::array();
      for (int j = 0; j < r->FieldSize(message, field); ++j) {
        array.push_back(FieldValue(message, field, j));
      }
      out[field->name()] = std::move(array);
    } else {
      out[field->name()] = FieldValue(message, field, -1);
    }
  }
  return out;
}

void PrintJson(std::FILE* out, const nlohmann::json& doc, bool one_line) {
  const std::string text = doc.dump(one_line ? -1 : 2, ' ', false,
                                    nlohmann::json::error_handler_t::replace);
  std::fprintf(out, "%s\n", text.c_str());
  std::fflush(out);
}

Table::Table(std::vector<std::string> header) {
  rows_.push_back(std::move(header));
}

void Table::AddRow(std::vector<std::string> row) {
  row.resize(rows_.front().size());
  for (std::string& cell : row) cell = Printable(cell);
  rows_.push_back(std::move(row));
}

std::string Table::Render() const {
  // Columns, not bytes: a UTF-8 character takes one.
  const auto width = [](const std::string& cell) {
    return static_cast<size_t>(std::count_if(
        cell.begin(), cell.end(), [](char c) { return (c & 0xC0) != 0x80; }));
  };
  std::vector<size_t> widths(rows_.front().size(), 0);
  for (const auto& row : rows_) {
    for (size_t c = 0; c < row.size(); ++c) {
      widths[c] = std::max(widths[c], width(row[c]));
    }
  }
  std::string out;
  for (const auto& row : rows_) {
    std::string line;
    for (size_t c = 0; c < row.size(); ++c) {
      line += row[c];
      if (c + 1 < row.size()) {
        line.append(widths[c] - width(row[c]) + 2, ' ');
      }
    }
    out += line;
    out += '\n';
  }
  return out;
}

std::string FormatDurationMs(int64_t ms) {
  const int64_t abs = ms < 0 ? -ms : ms;
  const std::string sign = ms < 0 ? "-" : "";
  if (abs < 1000) return absl::StrCat(sign, abs, "ms");
  const int64_t s = abs / 1000;
  if (s < 60) return absl::StrCat(sign, s, "s");
  if (s < 3600) {
    return s % 60 == 0 ? absl::StrCat(sign, s / 60, "m")
                       : absl::StrCat(sign, s / 60, "m", s % 60, "s");
  }
  if (s < 86400) {
    return (s % 3600) / 60 == 0
               ? absl::StrCat(sign, s / 3600, "h")
               : absl::StrCat(sign, s / 3600, "h", (s % 3600) / 60, "m");
  }
  return (s % 86400) / 3600 == 0
             ? absl::StrCat(sign, s / 86400, "d")
             : absl::StrCat(sign, s / 86400, "d", (s % 86400) / 3600, "h");
}

std::string FormatRelativeMs(int64_t unix_ms, absl::Time now) {
  if (unix_ms == 0) return "-";
  const int64_t delta =
      absl::ToInt64Milliseconds(absl::FromUnixMillis(unix_ms) - now);
  return delta >= 0 ? absl::StrCat("in ", FormatDurationMs(delta))
                    : absl::StrCat(FormatDurationMs(-delta), " ago");
}

std::string FormatTimeMs(int64_t unix_ms, absl::Time now) {
  if (unix_ms == 0) return "-";
  return absl::StrCat(
      absl::FormatTime("%Y-%m-%d %H:%M:%SZ", absl::FromUnixMillis(unix_ms),
                       absl::UTCTimeZone()),
      " (", FormatRelativeMs(unix_ms, now), ")");
}

std::string FormatBytes(uint64_t bytes) {
  static constexpr const char* kUnits[] = {"KiB", "MiB", "GiB", "TiB", "PiB"};
  if (bytes < 1024) return absl::StrCat(bytes, " B");
  double value = static_cast<double>(bytes) / 1024;
  size_t unit = 0;
  while (value >= 1024 && unit + 1 < std::size(kUnits)) {
    value /= 1024;
    ++unit;
  }
  return absl::StrFormat("%.1f %s", value, kUnits[unit]);
}

std::string HexId(uint64_t id) { return absl::StrFormat("0x%016x", id); }

bool IsUtf8(absl::string_view bytes) {
  size_t i = 0;
  while (i < bytes.size()) {
    const unsigned char c = static_cast<unsigned char>(bytes[i]);
    size_t extra = 0;
    uint32_t code = 0;
    if (c < 0x80) {
      ++i;
      continue;
    } else if ((c & 0xE0) == 0xC0) {
      extra = 1;
      code = c & 0x1F;
    } else if ((c & 0xF0) == 0xE0) {
      extra = 2;
      code = c & 0x0F;
    } else if ((c & 0xF8) == 0xF0) {
      extra = 3;
      code = c & 0x07;
    } else {
      return false;
    }
    if (i + extra >= bytes.size()) return false;  // cut short
    for (size_t k = 1; k <= extra; ++k) {
      const unsigned char cc = static_cast<unsigned char>(bytes[i + k]);
      if ((cc & 0xC0) != 0x80) return false;
      code = (code << 6) | (cc & 0x3F);
    }
    // Overlong forms, surrogates, and past U+10FFFF are not UTF-8.
    static constexpr uint32_t kMin[] = {0, 0x80, 0x800, 0x10000};
    if (code < kMin[extra] || code > 0x10FFFF ||
        (code >= 0xD800 && code <= 0xDFFF)) {
      return false;
    }
    i += extra + 1;
  }
  return true;
}

std::string Printable(absl::string_view text) {
  if (!IsUtf8(text)) return absl::CHexEscape(text);
  std::string out;
  for (const char c : text) {
    const unsigned char u = static_cast<unsigned char>(c);
    if (u < 0x20 || u == 0x7F) {
      out += absl::StrFormat("\\x%02x", u);
    } else {
      out += c;
    }
  }
  return out;
}

}  // namespace sessiond::sessionctl
