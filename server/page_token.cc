// Copyright sessiond authors. Licensed under the Apache License 2.0.
#include "server/page_token.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/sha.h>

#include <algorithm>

#include "absl/status/status.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"

namespace sessiond::server {
namespace {

constexpr uint8_t kVersion = 1;
constexpr size_t kMaxSessionIdBytes = 255;
constexpr absl::string_view kKeyLabel = "sessiond ListUserSessions page v1";

void AppendLittleEndian(uint64_t value, int bytes, std::string* out) {
  for (int i = 0; i < bytes; ++i) {
    out->push_back(static_cast<char>((value >> (8 * i)) & 0xff));
  }
}

void AppendLengthPrefixed(absl::string_view part, std::string* out) {
  AppendLittleEndian(part.size(), 4, out);
  out->append(part.data(), part.size());
}

absl::Status Malformed() {
  return absl::InvalidArgumentError(
      "page_token: not a token this cluster issued for this user_id and "
      "include_revoked (pass the previous response's next_page_token "
      "unchanged, with the same user_id and include_revoked; start again "
      "with an empty page_token)");
}

}  // namespace

PageTokenCodec::PageTokenCodec(uint64_t cluster_id) {
  std::string material(kKeyLabel);
  AppendLittleEndian(cluster_id, 8, &material);
  SHA256(reinterpret_cast<const uint8_t*>(material.data()), material.size(),
         key_.data());
}

std::array<uint8_t, PageTokenCodec::kTagBytes> PageTokenCodec::Tag(
    const PageQuery& query, absl::string_view after_session_id) const {
  std::string message;
  AppendLengthPrefixed(query.user_id, &message);
  message.push_back(query.include_revoked ? 1 : 0);
  AppendLengthPrefixed(after_session_id, &message);
  uint8_t mac[EVP_MAX_MD_SIZE];
  unsigned int mac_length = 0;
  HMAC(EVP_sha256(), key_.data(), static_cast<int>(key_.size()),
       reinterpret_cast<const uint8_t*>(message.data()), message.size(), mac,
       &mac_length);
  std::array<uint8_t, kTagBytes> tag;
  std::copy(mac, mac + kTagBytes, tag.begin());
  return tag;
}

std::string PageTokenCodec::Encode(const PageQuery& query,
                                   absl::string_view after_session_id) const {
  std::string raw;
  raw.push_back(static_cast<char>(kVersion));
  raw.append(after_session_id.data(), after_session_id.size());
  const std::array<uint8_t, kTagBytes> tag = Tag(query, after_session_id);
  raw.append(reinterpret_cast<const char*>(tag.data()), tag.size());
  return absl::WebSafeBase64Escape(raw);
}

absl::StatusOr<std::string> PageTokenCodec::Decode(
    const PageQuery& query, absl::string_view page_token) const {
  std::string raw;
  // WebSafeBase64Unescape ignores trailing padding and tolerates some
  // non-canonical forms; re-encoding and comparing refuses every token that
  // is not byte for byte one Encode produced.
  if (!absl::WebSafeBase64Unescape(page_token, &raw) ||
      absl::WebSafeBase64Escape(raw) != page_token ||
      raw.size() < 1 + 1 + kTagBytes ||
      raw.size() > 1 + kMaxSessionIdBytes + kTagBytes ||
      static_cast<uint8_t>(raw[0]) != kVersion) {
    return Malformed();
  }
  const absl::string_view after(raw.data() + 1, raw.size() - 1 - kTagBytes);
  const std::array<uint8_t, kTagBytes> expected = Tag(query, after);
  if (CRYPTO_memcmp(expected.data(), raw.data() + raw.size() - kTagBytes,
                    kTagBytes) != 0) {
    return Malformed();
  }
  return std::string(after);
}

}  // namespace sessiond::server
