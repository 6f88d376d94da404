// Copyright sessiond authors. Licensed under the Apache License 2.0.
#include "storage/create_requests.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#include <algorithm>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "common/check.h"

namespace sessiond::storage {
namespace {

constexpr std::string_view kRequestLabel = "sessiond create request v1";
constexpr std::string_view kTokenLabel = "sessiond create token v1";

void AppendPart(std::string_view part, std::string* out) {
  const uint32_t n = static_cast<uint32_t>(part.size());
  for (int i = 0; i < 4; ++i) out->push_back(static_cast<char>(n >> (8 * i)));
  out->append(part.data(), part.size());
}

std::string Hmac(std::string_view key, const std::string& message) {
  SESSIOND_CHECK(key.size() == kCreateKeyBytes);
  unsigned char mac[EVP_MAX_MD_SIZE];
  unsigned int length = 0;
  SESSIOND_CHECK(HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()),
                      reinterpret_cast<const unsigned char*>(message.data()),
                      message.size(), mac, &length) != nullptr);
  std::string out(reinterpret_cast<const char*>(mac), length);
  OPENSSL_cleanse(mac, sizeof(mac));
  return out;
}

}  // namespace

std::string CreateRequestDigest(
    const sessiond::v1::CreateSessionRequest& request) {
  std::string message;
  AppendPart("sessiond create digest v1", &message);
  AppendPart(absl::StrCat(request.ttl_ms(), "/", request.idle_timeout_ms(), "/",
                          static_cast<int>(request.token_format())),
             &message);
  std::vector<std::pair<std::string_view, std::string_view>> attributes(
      request.attributes().begin(), request.attributes().end());
  std::sort(attributes.begin(), attributes.end());
  for (const auto& [key, value] : attributes) {
    AppendPart(key, &message);
    AppendPart(value, &message);
  }
  // No map in ClientMetadata: its serialization is the same every time.
  AppendPart(request.client().SerializeAsString(), &message);
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int length = 0;
  SESSIOND_CHECK(EVP_Digest(message.data(), message.size(), digest, &length,
                            EVP_sha256(), nullptr) == 1);
  return std::string(reinterpret_cast<const char*>(digest), length);
}

std::string CreateRequestDbKey(std::string_view request_key) {
  std::string key(kCreateRequestDbKeyPrefix);
  key.append(request_key.data(), request_key.size());
  return key;
}

std::string NewCreateKey() {
  std::string key(kCreateKeyBytes, '\0');
  SESSIOND_CHECK_MSG(RAND_bytes(reinterpret_cast<unsigned char*>(key.data()),
                                static_cast<int>(key.size())) == 1,
                     "OpenSSL RAND_bytes failed");
  return key;
}

std::string CreateRequestKey(std::string_view create_key,
                             std::string_view user_id,
                             std::string_view request_id) {
  std::string message;
  AppendPart(kRequestLabel, &message);
  AppendPart(user_id, &message);
  AppendPart(request_id, &message);
  return Hmac(create_key, message);
}

std::string CreateRequestToken(std::string_view create_key,
                               std::string_view user_id,
                               std::string_view request_id,
                               std::string_view session_id) {
  std::string message;
  AppendPart(kTokenLabel, &message);
  AppendPart(user_id, &message);
  AppendPart(request_id, &message);
  AppendPart(session_id, &message);
  std::string mac = Hmac(create_key, message);
  // base64url without padding: 43 characters, a random token's format.
  std::string token = absl::WebSafeBase64Escape(mac);
  OPENSSL_cleanse(mac.data(), mac.size());
  return token;
}

CreateRequestTable::Record CreateRequestTable::ToRecord(const TokenHash& key,
                                                        const Entry& entry) {
  Record record;
  record.set_request_key(std::string(TokenHashBytes(key)));
  record.set_token_hash(std::string(TokenHashBytes(entry.token_hash)));
  record.set_session_id(entry.session_id);
  record.set_expires_at_ms(entry.expires_at_ms);
  record.set_request_digest(entry.request_digest);
  return record;
}

std::optional<CreateRequestTable::Record> CreateRequestTable::Find(
    std::string_view request_key, int64_t now_ms) const {
  std::optional<TokenHash> key = TokenHashFromBytes(request_key);
  if (!key) return std::nullopt;
  absl::MutexLock lock(&mu_);
  auto it = by_key_.find(*key);
  if (it == by_key_.end() || it->second.expires_at_ms <= now_ms) {
    return std::nullopt;
  }
  return ToRecord(it->first, it->second);
}

void CreateRequestTable::EraseLocked(const TokenHash& key) {
  auto it = by_key_.find(key);
  if (it == by_key_.end()) return;
  by_expiry_.erase(std::make_pair(it->second.expires_at_ms, key));
  by_key_.erase(it);
}

void CreateRequestTable::Put(const Record& record, size_t max_entries,
                             std::vector<std::string>* evicted) {
  std::optional<TokenHash> key = TokenHashFromBytes(record.request_key());
  SESSIOND_CHECK(key.has_value());
  Entry entry;
  entry.token_hash =
      TokenHashFromBytes(record.token_hash()).value_or(TokenHash{});
  entry.session_id = record.session_id();
  entry.expires_at_ms = record.expires_at_ms();
  entry.request_digest = record.request_digest();
  absl::MutexLock lock(&mu_);
  EraseLocked(*key);
  by_expiry_.insert(std::make_pair(entry.expires_at_ms, *key));
  by_key_.emplace(*key, std::move(entry));
  while (by_key_.size() > std::max<size_t>(1, max_entries)) {
    // Never the record just put, even when its window ends first (proposed
    // by a node with a shorter window): its retry would create twice.
    auto oldest = by_expiry_.begin();
    if (oldest->second == *key) ++oldest;
    const TokenHash evict = oldest->second;
    EraseLocked(evict);
    evicted->push_back(std::string(TokenHashBytes(evict)));
  }
}

std::vector<std::string> CreateRequestTable::TakeExpired(int64_t now_ms,
                                                         size_t max) {
  std::vector<std::string> taken;
  absl::MutexLock lock(&mu_);
  while (taken.size() < max && !by_expiry_.empty() &&
         by_expiry_.begin()->first <= now_ms) {
    const TokenHash key = by_expiry_.begin()->second;
    EraseLocked(key);
    taken.push_back(std::string(TokenHashBytes(key)));
  }
  return taken;
}

bool CreateRequestTable::AnyExpired(int64_t now_ms) const {
  absl::MutexLock lock(&mu_);
  return !by_expiry_.empty() && by_expiry_.begin()->first <= now_ms;
}

std::vector<CreateRequestTable::Record> CreateRequestTable::Postpone(
    int64_t after_ms, int64_t by_ms) {
  std::vector<Record> moved;
  TokenHash last_key;
  last_key.fill(0xff);
  absl::MutexLock lock(&mu_);
  std::vector<std::pair<int64_t, TokenHash>> later(
      by_expiry_.upper_bound(std::make_pair(after_ms, last_key)),
      by_expiry_.end());
  for (const auto& [expires_at_ms, key] : later) {
    by_expiry_.erase(std::make_pair(expires_at_ms, key));
    Entry& entry = by_key_.at(key);
    entry.expires_at_ms = expires_at_ms + by_ms;
    by_expiry_.insert(std::make_pair(entry.expires_at_ms, key));
    moved.push_back(ToRecord(key, entry));
  }
  return moved;
}

std::vector<CreateRequestTable::Record> CreateRequestTable::All() const {
  std::vector<Record> out;
  {
    absl::MutexLock lock(&mu_);
    out.reserve(by_key_.size());
    for (const auto& [key, entry] : by_key_)
      out.push_back(ToRecord(key, entry));
  }
  std::sort(out.begin(), out.end(), [](const Record& a, const Record& b) {
    return a.request_key() < b.request_key();
  });
  return out;
}

void CreateRequestTable::Replace(const std::vector<Record>& records) {
  absl::MutexLock lock(&mu_);
  by_key_.clear();
  by_expiry_.clear();
  for (const Record& record : records) {
    std::optional<TokenHash> key = TokenHashFromBytes(record.request_key());
    if (!key) continue;
    Entry entry;
    entry.token_hash =
        TokenHashFromBytes(record.token_hash()).value_or(TokenHash{});
    entry.session_id = record.session_id();
    entry.expires_at_ms = record.expires_at_ms();
    entry.request_digest = record.request_digest();
    EraseLocked(*key);
    by_expiry_.insert(std::make_pair(entry.expires_at_ms, *key));
    by_key_.emplace(*key, std::move(entry));
  }
}

size_t CreateRequestTable::size() const {
  absl::MutexLock lock(&mu_);
  return by_key_.size();
}

std::string CreateRequestTable::create_key() const {
  absl::MutexLock lock(&mu_);
  return create_key_;
}

void CreateRequestTable::set_create_key(std::string key) {
  absl::MutexLock lock(&mu_);
  create_key_ = std::move(key);
}

}  // namespace sessiond::storage
