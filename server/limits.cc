// Copyright sessiond authors. Licensed under the Apache License 2.0.
#include "server/limits.h"

#include <algorithm>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "storage/token.h"

namespace sessiond::server {
namespace {

using sessiond::v1::ClientMetadata;

constexpr size_t kTokenChars = 43;      // base64url of 32 bytes, no padding
constexpr size_t kSessionIdChars = 22;  // base64url of 16 bytes, no padding

bool IsBase64Url(absl::string_view s) {
  for (char c : s) {
    const bool ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
                    (c >= '0' && c <= '9') || c == '-' || c == '_';
    if (!ok) return false;
  }
  return true;
}

// A key for an error message: escaped, and cut short when long, so that a
// hostile key cannot make the error message itself huge.
std::string QuoteKey(absl::string_view key) {
  constexpr size_t kMaxShown = 40;
  if (key.size() <= kMaxShown)
    return absl::StrCat("\"", absl::CHexEscape(key), "\"");
  return absl::StrCat("\"", absl::CHexEscape(key.substr(0, kMaxShown)),
                      "...\"");
}

absl::Status TooLong(absl::string_view field, size_t bytes, int64_t limit,
                     absl::string_view flag) {
  return absl::InvalidArgumentError(absl::StrCat(
      field, ": is ", bytes, " bytes, limit is ", limit, " (--", flag, ")"));
}

absl::Status CheckClient(const ClientMetadata& client, const Limits& limits) {
  const struct {
    const char* name;
    const std::string& value;
  } fields[] = {{"client.device", client.device()},
                {"client.ip", client.ip()},
                {"client.user_agent", client.user_agent()}};
  for (const auto& f : fields) {
    if (static_cast<int64_t>(f.value.size()) > limits.max_client_field_bytes) {
      return TooLong(f.name, f.value.size(), limits.max_client_field_bytes,
                     "max_client_field_bytes");
    }
  }
  return absl::OkStatus();
}

absl::Status CheckAttribute(absl::string_view map_name, const std::string& key,
                            const std::string* value, const Limits& limits) {
  if (key.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat(map_name, ": attribute keys must not be empty"));
  }
  if (static_cast<int64_t>(key.size()) > limits.max_attribute_key_bytes) {
    return absl::InvalidArgumentError(
        absl::StrCat(map_name, "[", QuoteKey(key), "]: key is ", key.size(),
                     " bytes, limit is ", limits.max_attribute_key_bytes,
                     " (--max_attribute_key_bytes)"));
  }
  if (value != nullptr &&
      static_cast<int64_t>(value->size()) > limits.max_attribute_value_bytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        map_name, "[", QuoteKey(key), "]: value is ", value->size(),
        " bytes, limit is ", limits.max_attribute_value_bytes,
        " (--max_attribute_value_bytes)"));
  }
  return absl::OkStatus();
}

absl::Status CheckRecordBytes(int64_t bytes, const Limits& limits) {
  if (bytes > limits.max_record_bytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        "record: user_id, attributes and client metadata total ", bytes,
        " bytes, limit is ", limits.max_record_bytes, " (--max_record_bytes)"));
  }
  return absl::OkStatus();
}

}  // namespace

int64_t RecordBytes(
    const std::string& user_id,
    const google::protobuf::Map<std::string, std::string>& attributes,
    const ClientMetadata& client) {
  int64_t bytes =
      static_cast<int64_t>(user_id.size() + client.device().size() +
                           client.ip().size() + client.user_agent().size());
  for (const auto& [k, v] : attributes) bytes += k.size() + v.size();
  return bytes;
}

absl::Status ValidateUserId(absl::string_view user_id, const Limits& limits) {
  if (user_id.empty()) {
    return absl::InvalidArgumentError("user_id: must not be empty");
  }
  if (static_cast<int64_t>(user_id.size()) > limits.max_user_id_bytes) {
    return TooLong("user_id", user_id.size(), limits.max_user_id_bytes,
                   "max_user_id_bytes");
  }
  return absl::OkStatus();
}

absl::Status ValidateReason(absl::string_view reason, const Limits& limits) {
  if (static_cast<int64_t>(reason.size()) > limits.max_reason_bytes) {
    return TooLong("reason", reason.size(), limits.max_reason_bytes,
                   "max_reason_bytes");
  }
  return absl::OkStatus();
}

absl::Status ValidateRevocation(const sessiond::v1::SessionSelector& selector,
                                absl::string_view reason,
                                const Limits& limits) {
  if (absl::Status s = ValidateReason(reason, limits); !s.ok()) return s;
  auto user_id = [&](absl::string_view field, const std::string& id) {
    return static_cast<int64_t>(id.size()) > limits.max_user_id_bytes
               ? TooLong(field, id.size(), limits.max_user_id_bytes,
                         "max_user_id_bytes")
               : absl::OkStatus();
  };
  const auto& ids = selector.users().user_ids();
  for (int i = 0; i < ids.size(); ++i) {
    if (absl::Status s =
            user_id(absl::StrCat("selector.users.user_ids[", i, "]"), ids[i]);
        !s.ok()) {
      return s;
    }
  }
  if (absl::Status s =
          user_id("selector.user.user_id", selector.user().user_id());
      !s.ok()) {
    return s;
  }
  const std::string& key = selector.attribute().key();
  if (static_cast<int64_t>(key.size()) > limits.max_attribute_key_bytes) {
    return TooLong("selector.attribute.key", key.size(),
                   limits.max_attribute_key_bytes, "max_attribute_key_bytes");
  }
  const std::string& value = selector.attribute().value();
  if (static_cast<int64_t>(value.size()) > limits.max_attribute_value_bytes) {
    return TooLong("selector.attribute.value", value.size(),
                   limits.max_attribute_value_bytes,
                   "max_attribute_value_bytes");
  }
  return absl::OkStatus();
}

absl::Status ValidateToken(absl::string_view token, absl::string_view field) {
  if (token.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat(field, ": must not be empty"));
  }
  if ((token.size() != kTokenChars || !IsBase64Url(token)) &&
      !storage::LooksLikeJwt(std::string_view(token.data(), token.size()))) {
    return absl::InvalidArgumentError(
        absl::StrCat(field, ": malformed token (a token is ", kTokenChars,
                     " characters of base64url, or a JWT of at most ",
                     storage::kMaxJwtTokenLength, " characters; got ",
                     token.size(), " bytes)"));
  }
  return absl::OkStatus();
}

absl::Status ValidateSessionId(absl::string_view session_id,
                               absl::string_view field) {
  if (session_id.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat(field, ": must not be empty"));
  }
  if (session_id.size() != kSessionIdChars || !IsBase64Url(session_id)) {
    return absl::InvalidArgumentError(absl::StrCat(
        field, ": malformed session id (a session id is ", kSessionIdChars,
        " characters of base64url; got ", session_id.size(), " bytes)"));
  }
  return absl::OkStatus();
}

absl::StatusOr<CreateLifetimes> ValidateCreate(
    const sessiond::v1::CreateSessionRequest& request, const Limits& limits) {
  if (absl::Status s = ValidateUserId(request.user_id(), limits); !s.ok()) {
    return s;
  }
  if (!sessiond::v1::TokenFormat_IsValid(request.token_format())) {
    return absl::InvalidArgumentError(
        absl::StrCat("token_format: unknown value ", request.token_format(),
                     " (TOKEN_FORMAT_OPAQUE or TOKEN_FORMAT_JWT)"));
  }
  CreateLifetimes out;
  if (request.ttl_ms() < 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "ttl_ms: must not be negative (got ", request.ttl_ms(), ")"));
  }
  out.ttl_ms = request.ttl_ms() == 0 ? limits.default_ttl_ms : request.ttl_ms();
  if (out.ttl_ms < limits.min_ttl_ms) {
    return absl::InvalidArgumentError(
        absl::StrCat("ttl_ms: ", out.ttl_ms, " is below the minimum ",
                     limits.min_ttl_ms, " (--min_ttl_ms)"));
  }
  if (out.ttl_ms > limits.max_ttl_ms) {
    return absl::InvalidArgumentError(
        absl::StrCat("ttl_ms: ", out.ttl_ms, " is above the maximum ",
                     limits.max_ttl_ms, " (--max_ttl_ms)"));
  }
  if (request.idle_timeout_ms() < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("idle_timeout_ms: must not be negative (got ",
                     request.idle_timeout_ms(), ")"));
  }
  out.idle_timeout_ms = request.idle_timeout_ms() == 0
                            ? limits.default_idle_timeout_ms
                            : request.idle_timeout_ms();
  if (out.idle_timeout_ms != 0 &&
      out.idle_timeout_ms < limits.min_idle_timeout_ms) {
    return absl::InvalidArgumentError(absl::StrCat(
        "idle_timeout_ms: ", out.idle_timeout_ms, " is below the minimum ",
        limits.min_idle_timeout_ms, " (the larger of --min_ttl_ms and ",
        kIdleTimeoutFlushMultiple,
        " x --touch_flush_interval_ms: touches reach the log once per "
        "interval)"));
  }
  if (out.idle_timeout_ms > limits.max_idle_timeout_ms) {
    return absl::InvalidArgumentError(absl::StrCat(
        "idle_timeout_ms: ", out.idle_timeout_ms, " is above the maximum ",
        limits.max_idle_timeout_ms, " (--max_idle_timeout_ms)"));
  }
  if (static_cast<int64_t>(request.attributes_size()) > limits.max_attributes) {
    return absl::InvalidArgumentError(absl::StrCat(
        "attributes: ", request.attributes_size(), " entries, limit is ",
        limits.max_attributes, " (--max_attributes)"));
  }
  for (const auto& [key, value] : request.attributes()) {
    if (absl::Status s = CheckAttribute("attributes", key, &value, limits);
        !s.ok()) {
      return s;
    }
  }
  if (absl::Status s = CheckClient(request.client(), limits); !s.ok()) return s;
  if (absl::Status s =
          CheckRecordBytes(RecordBytes(request.user_id(), request.attributes(),
                                       request.client()),
                           limits);
      !s.ok()) {
    return s;
  }
  return out;
}

absl::Status ValidateUpdate(const sessiond::v1::UpdateSessionRequest& request,
                            const Limits& limits) {
  if (absl::Status s = ValidateToken(request.token(), "token"); !s.ok())
    return s;
  if (static_cast<int64_t>(request.set_attributes_size()) >
      limits.max_attributes) {
    return absl::InvalidArgumentError(absl::StrCat(
        "set_attributes: ", request.set_attributes_size(),
        " entries, limit is ", limits.max_attributes, " (--max_attributes)"));
  }
  for (const auto& [key, value] : request.set_attributes()) {
    if (absl::Status s = CheckAttribute("set_attributes", key, &value, limits);
        !s.ok()) {
      return s;
    }
  }
  // Counted as sent, repeats included, before any is looked at: only
  // distinct keys were counted, after checking each, and five million
  // copies of one key went through as a 15 MB log entry.
  if (static_cast<int64_t>(request.remove_attributes_size()) >
      limits.max_attributes) {
    return absl::InvalidArgumentError(absl::StrCat(
        "remove_attributes: ", request.remove_attributes_size(),
        " entries, limit is ", limits.max_attributes, " (--max_attributes)"));
  }
  for (int i = 0; i < request.remove_attributes_size(); ++i) {
    const std::string& key = request.remove_attributes(i);
    if (absl::Status s = CheckAttribute(
            absl::StrCat("remove_attributes[", i, "]"), key, nullptr, limits);
        !s.ok()) {
      return s;
    }
    if (request.set_attributes().contains(key)) {
      return absl::InvalidArgumentError(
          absl::StrCat("remove_attributes[", i, "]: ", QuoteKey(key),
                       " is also in set_attributes"));
    }
  }
  return absl::OkStatus();
}

absl::Status CheckUpdatedRecord(
    const sessiond::v1::Session& current,
    const sessiond::v1::UpdateSessionRequest& request, const Limits& limits) {
  google::protobuf::Map<std::string, std::string> attributes =
      current.attributes();
  for (const std::string& key : request.remove_attributes())
    attributes.erase(key);
  for (const auto& [key, value] : request.set_attributes())
    attributes[key] = value;
  if (static_cast<int64_t>(attributes.size()) > limits.max_attributes) {
    return absl::InvalidArgumentError(
        absl::StrCat("set_attributes: the session would have ",
                     attributes.size(), " attributes, limit is ",
                     limits.max_attributes, " (--max_attributes)"));
  }
  return CheckRecordBytes(
      RecordBytes(current.user_id(), attributes, current.client()), limits);
}

absl::Status ValidateRevoke(const sessiond::v1::RevokeSessionRequest& request,
                            const Limits& limits) {
  switch (request.target_case()) {
    case sessiond::v1::RevokeSessionRequest::kToken:
      if (absl::Status s = ValidateToken(request.token(), "token"); !s.ok()) {
        return s;
      }
      break;
    case sessiond::v1::RevokeSessionRequest::kSessionId:
      if (absl::Status s =
              ValidateSessionId(request.session_id(), "session_id");
          !s.ok()) {
        return s;
      }
      break;
    case sessiond::v1::RevokeSessionRequest::TARGET_NOT_SET:
      return absl::InvalidArgumentError(
          "target: one of token or session_id is required");
  }
  return ValidateReason(request.reason(), limits);
}

absl::Status ValidateRevokeUser(
    const sessiond::v1::RevokeUserSessionsRequest& request,
    const Limits& limits) {
  if (absl::Status s = ValidateUserId(request.user_id(), limits); !s.ok()) {
    return s;
  }
  if (!request.keep_session_id().empty()) {
    if (absl::Status s =
            ValidateSessionId(request.keep_session_id(), "keep_session_id");
        !s.ok()) {
      return s;
    }
  }
  return ValidateReason(request.reason(), limits);
}

absl::Status ValidateList(const sessiond::v1::ListUserSessionsRequest& request,
                          const Limits& limits, uint32_t* page_size) {
  if (absl::Status s = ValidateUserId(request.user_id(), limits); !s.ok()) {
    return s;
  }
  uint32_t size = request.page_size();
  if (size == 0) size = kDefaultPageSize;
  if (size > kMaxPageSize) size = kMaxPageSize;
  *page_size = size;
  return absl::OkStatus();
}

int64_t MinIdleTimeoutMs(int64_t min_ttl_ms, int64_t touch_flush_interval_ms) {
  return std::max(min_ttl_ms,
                  kIdleTimeoutFlushMultiple * touch_flush_interval_ms);
}

namespace {

// One CreateSessionRequest at the record limits, in bytes. Protobuf
// framing: a tag and a length (at most 5 bytes) around every attribute
// entry, its key and its value; kFixedFieldBytes covers the other fields
// (user_id's and the client metadata's framing, ttl_ms, idle_timeout_ms)
// and the repeated field holding it.
int64_t CreateRequestBytes(const Limits& limits) {
  constexpr int64_t kEntryFramingBytes = 3 * 6;
  constexpr int64_t kFixedFieldBytes = 128;
  return limits.max_record_bytes + limits.max_attributes * kEntryFramingBytes +
         kFixedFieldBytes;
}

// What a create's command adds to its request: the token hash, the session
// id, the request key and digest, timestamps.
constexpr int64_t kCommandBytesPerCreate = 256;

}  // namespace

int64_t MaxRequestMessageBytes(const Limits& limits, size_t max_batch_create,
                               size_t max_batch_validate) {
  const int64_t create = CreateRequestBytes(limits);
  // A ValidateSessionRequest holds a 43-byte token, touch, request_id and
  // consistency; 128 bytes leaves room for framing and a longer (garbage)
  // token.
  constexpr int64_t kValidateBytes = 128;
  constexpr int64_t kGrpcDefault = int64_t{4} << 20;
  return std::max({kGrpcDefault,
                   static_cast<int64_t>(max_batch_create) * create,
                   static_cast<int64_t>(max_batch_validate) * kValidateBytes});
}

absl::Status CheckLimitsConsistent(const Limits& limits) {
  // A CreateSessions batch is one log entry, sent whole to a follower in
  // one peer message however large: one that does not fit never reaches a
  // follower, never commits, and the cluster's writes stall behind it. An
  // eighth of the message is left for framing.
  const int64_t batch = static_cast<int64_t>(kMaxBatchCreate) *
                        (CreateRequestBytes(limits) + kCommandBytesPerCreate);
  if (batch > kMaxPeerMessageBytes / 8 * 7) {
    const int64_t most =
        kMaxPeerMessageBytes / 8 * 7 / static_cast<int64_t>(kMaxBatchCreate) -
        (CreateRequestBytes(limits) - limits.max_record_bytes) -
        kCommandBytesPerCreate;
    return absl::InvalidArgumentError(absl::StrCat(
        "--max_record_bytes ", limits.max_record_bytes,
        " (with --max_attributes ", limits.max_attributes,
        "): a CreateSessions of ", kMaxBatchCreate,
        " such sessions is one Raft log entry of about ", batch >> 20,
        " MiB, and a message between nodes holds at most ",
        kMaxPeerMessageBytes >> 20,
        " MiB: it could never replicate. Set --max_record_bytes to at most ",
        std::max<int64_t>(1, most)));
  }
  if (limits.min_ttl_ms > limits.max_ttl_ms) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--min_ttl_ms (", limits.min_ttl_ms, ") must not exceed --max_ttl_ms (",
        limits.max_ttl_ms, ")"));
  }
  if (limits.default_ttl_ms < limits.min_ttl_ms ||
      limits.default_ttl_ms > limits.max_ttl_ms) {
    return absl::InvalidArgumentError(
        absl::StrCat("--default_ttl_ms (", limits.default_ttl_ms,
                     ") must be within [", limits.min_ttl_ms, ", ",
                     limits.max_ttl_ms, "] (--min_ttl_ms, --max_ttl_ms)"));
  }
  // A create that asks no idle timeout is served either way; one that asks
  // any would be refused, whatever it asked.
  if (limits.max_idle_timeout_ms < limits.min_idle_timeout_ms) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--max_idle_timeout_ms (", limits.max_idle_timeout_ms,
        ") is below the minimum idle timeout ", limits.min_idle_timeout_ms,
        " (the larger of --min_ttl_ms and ", kIdleTimeoutFlushMultiple,
        " x --touch_flush_interval_ms): every create asking an idle timeout "
        "would be refused. Raise --max_idle_timeout_ms or lower "
        "--touch_flush_interval_ms"));
  }
  if (limits.default_idle_timeout_ms != 0 &&
      (limits.default_idle_timeout_ms < limits.min_idle_timeout_ms ||
       limits.default_idle_timeout_ms > limits.max_idle_timeout_ms)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--default_idle_timeout_ms (", limits.default_idle_timeout_ms,
        ") must be 0 or within [", limits.min_idle_timeout_ms, ", ",
        limits.max_idle_timeout_ms, "] (the larger of --min_ttl_ms and ",
        kIdleTimeoutFlushMultiple,
        " x --touch_flush_interval_ms; --max_idle_timeout_ms)"));
  }
  return absl::OkStatus();
}

}  // namespace sessiond::server
