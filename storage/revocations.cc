// Copyright sessiond authors. Licensed under the Apache License 2.0.
#include "storage/revocations.h"

#include "absl/strings/str_cat.h"
#include "storage/keys.h"
#include "storage/wire.h"

namespace sessiond::storage {
namespace {

using sessiond::v1::SessionSelector;

constexpr uint32_t kAttributesField = 7;

}  // namespace

std::string RevocationKey(uint64_t id) {
  return absl::StrCat(kRevocationKeyPrefix, EncodeFixed64BE(id));
}

absl::Status CheckSelector(const SessionSelector& selector) {
  switch (selector.kind_case()) {
    case SessionSelector::kAll:
      return absl::OkStatus();
    case SessionSelector::kCreatedBeforeMs:
      if (selector.created_before_ms() <= 0) {
        return absl::InvalidArgumentError(
            "selector.created_before_ms must be a Unix time in ms (> 0)");
      }
      return absl::OkStatus();
    case SessionSelector::kUsers: {
      const auto& ids = selector.users().user_ids();
      if (ids.empty()) {
        return absl::InvalidArgumentError(
            "selector.users.user_ids is empty: name at least one user");
      }
      if (ids.size() > kMaxSelectorUsers) {
        return absl::InvalidArgumentError(absl::StrCat(
            "selector.users.user_ids has ", ids.size(), " users, the limit is ",
            kMaxSelectorUsers, ": split it into several revocations"));
      }
      for (int i = 0; i < ids.size(); ++i) {
        if (ids[i].empty()) {
          return absl::InvalidArgumentError(
              absl::StrCat("selector.users.user_ids[", i, "] is empty"));
        }
      }
      return absl::OkStatus();
    }
    case SessionSelector::kAttribute:
      if (selector.attribute().key().empty()) {
        return absl::InvalidArgumentError("selector.attribute.key is empty");
      }
      return absl::OkStatus();
    case SessionSelector::kUser:
      if (selector.user().user_id().empty()) {
        return absl::InvalidArgumentError("selector.user.user_id is empty");
      }
      return absl::OkStatus();
    case SessionSelector::KIND_NOT_SET:
      break;
  }
  return absl::InvalidArgumentError(
      "selector is empty: set all, created_before_ms, users or attribute");
}

uint64_t UserCountKey(std::string_view user_id) {
  uint64_t hash = 0xcbf29ce484222325ull;  // FNV-1a's offset basis
  for (const char c : user_id) {
    hash ^= static_cast<unsigned char>(c);
    hash *= 0x100000001b3ull;  // FNV's 64-bit prime
  }
  return hash;
}

bool HasAttribute(std::string_view extra, std::string_view key,
                  std::string_view value) {
  wire::Field field;
  while (!extra.empty()) {
    if (!wire::NextField(&extra, &field)) return false;
    if (field.number != kAttributesField ||
        field.type != wire::kLengthDelimited) {
      continue;
    }
    // A map entry: key = 1, value = 2.
    std::string_view entry = field.payload;
    std::string_view entry_key, entry_value;
    wire::Field part;
    while (!entry.empty() && wire::NextField(&entry, &part)) {
      if (part.type != wire::kLengthDelimited) continue;
      if (part.number == 1) entry_key = part.payload;
      if (part.number == 2) entry_value = part.payload;
    }
    if (entry_key == key) return entry_value == value;
  }
  return false;
}

bool IsTakeableByRevocation(const SessionView& session) {
  return !session.revoked || session.hold != 0;
}

bool SelectsByUser(const SessionSelector& selector) {
  return selector.kind_case() == SessionSelector::kUsers ||
         selector.kind_case() == SessionSelector::kUser;
}

bool ScanSelects(const SessionSelector& selector, const SessionView& session) {
  bool matches = false;
  switch (selector.kind_case()) {
    case SessionSelector::kAll:
      matches = true;
      break;
    case SessionSelector::kCreatedBeforeMs:
      matches = session.created_at_ms < selector.created_before_ms();
      break;
    case SessionSelector::kAttribute:
      matches = HasAttribute(session.extra, selector.attribute().key(),
                             selector.attribute().value());
      break;
    default:
      return false;
  }
  return matches && IsTakeableByRevocation(session);
}

}  // namespace sessiond::storage
