// Copyright sessiond authors. Licensed under the Apache License 2.0.
//
// Internal to storage/: the few protobuf wire-format primitives the session
// table uses to build and scan StoredSession bytes without building protobuf
// objects (a Session object with a map costs ~1 KB and a slow parse; the
// start-up scan of 1M sessions must take well under 2 s).
#ifndef SESSIOND_STORAGE_WIRE_H_
#define SESSIOND_STORAGE_WIRE_H_

#include <cstdint>
#include <string>
#include <string_view>

namespace sessiond::storage::wire {

enum WireType : uint32_t {
  kVarint = 0,
  kFixed64 = 1,
  kLengthDelimited = 2,
  kFixed32 = 5,
};

inline void PutVarint(std::string* out, uint64_t value) {
  while (value >= 0x80) {
    out->push_back(static_cast<char>((value & 0x7f) | 0x80));
    value >>= 7;
  }
  out->push_back(static_cast<char>(value));
}

inline size_t VarintSize(uint64_t value) {
  size_t n = 1;
  while (value >= 0x80) {
    value >>= 7;
    ++n;
  }
  return n;
}

inline void PutTag(std::string* out, uint32_t field, WireType type) {
  PutVarint(out, (static_cast<uint64_t>(field) << 3) | type);
}

inline void PutVarintField(std::string* out, uint32_t field, uint64_t value) {
  PutTag(out, field, kVarint);
  PutVarint(out, value);
}

inline void PutBytesField(std::string* out, uint32_t field,
                          std::string_view bytes) {
  PutTag(out, field, kLengthDelimited);
  PutVarint(out, bytes.size());
  out->append(bytes);
}

// Reads a varint from the front of `*in`, advancing it. False when
// truncated or longer than 10 bytes.
inline bool GetVarint(std::string_view* in, uint64_t* value) {
  uint64_t result = 0;
  for (int shift = 0; shift < 70 && !in->empty(); shift += 7) {
    const uint8_t byte = static_cast<uint8_t>(in->front());
    in->remove_prefix(1);
    if (shift == 63 && byte > 1) return false;
    result |= static_cast<uint64_t>(byte & 0x7f) << shift;
    if ((byte & 0x80) == 0) {
      *value = result;
      return true;
    }
  }
  return false;
}

// One field read by NextField: its number, wire type, the varint value or
// the length-delimited payload, and the raw bytes of the whole field (tag
// included), for copying it verbatim.
struct Field {
  uint32_t number = 0;
  WireType type = kVarint;
  uint64_t varint = 0;
  std::string_view payload;
  std::string_view raw;
};

// Reads the next field from `*in`. False on malformed input (including
// groups, which proto3 never writes).
inline bool NextField(std::string_view* in, Field* field) {
  const char* start = in->data();
  uint64_t tag;
  if (!GetVarint(in, &tag)) return false;
  field->number = static_cast<uint32_t>(tag >> 3);
  if (field->number == 0 || (tag >> 3) > 0x1fffffff) return false;
  field->type = static_cast<WireType>(tag & 7);
  switch (field->type) {
    case kVarint:
      if (!GetVarint(in, &field->varint)) return false;
      break;
    case kFixed64:
      if (in->size() < 8) return false;
      field->payload = in->substr(0, 8);
      in->remove_prefix(8);
      break;
    case kFixed32:
      if (in->size() < 4) return false;
      field->payload = in->substr(0, 4);
      in->remove_prefix(4);
      break;
    case kLengthDelimited: {
      uint64_t length;
      if (!GetVarint(in, &length) || length > in->size()) return false;
      field->payload = in->substr(0, length);
      in->remove_prefix(length);
      break;
    }
    default:
      return false;
  }
  field->raw = std::string_view(start, in->data() - start);
  return true;
}

}  // namespace sessiond::storage::wire

#endif  // SESSIOND_STORAGE_WIRE_H_
