// Copyright sessiond authors. Licensed under the Apache License 2.0.
//
// The key-encryption key (KEK) that seals signing keys' private halves
// before they go into the replicated log and RocksDB (issue 7: "Private
// keys never leave the cluster"). Every member is started with the same KEK
// file; a private key exists in the clear only in memory, for signing.
//
// The KEK file: 64 hexadecimal characters (32 random bytes) and an optional
// final newline, mode 0600 (a file group or others may read is refused).
//
// A sealed key (version 1), AES-256-GCM:
//   byte 0        version (1)
//   bytes 1..8    KEK id: the first 8 bytes of SHA-256("sessiond-kek-id" NUL
//                 KEK), so a wrong KEK is told apart from tampering
//   bytes 9..20   nonce (12 random bytes)
//   then          ciphertext (as long as the plaintext), 16-byte tag
// The associated data authenticated with it is bytes 0..8 followed by the
// caller's associated data (the kid): a sealed key moved to another kid does
// not open.
#ifndef SESSIOND_COMMON_KEY_ENCRYPTION_H_
#define SESSIOND_COMMON_KEY_ENCRYPTION_H_

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace sessiond {

inline constexpr size_t kKekBytes = 32;
inline constexpr uint8_t kSealedKeyVersion = 1;
inline constexpr size_t kKekIdBytes = 8;
inline constexpr size_t kSealNonceBytes = 12;
inline constexpr size_t kSealTagBytes = 16;
inline constexpr size_t kSealOverheadBytes =
    1 + kKekIdBytes + kSealNonceBytes + kSealTagBytes;

// A loaded KEK. Immutable after construction and thread-safe (Seal and Open
// keep their cipher state per call). Movable, not copyable; the key bytes
// are wiped when it goes away. Never logged: it has no operator<<, and its
// id (KekIdHex) is a one-way fingerprint.
class KeyEncryptionKey {
 public:
  // Reads a KEK file (format above). FailedPrecondition, with the chmod 600
  // to run, when group or others have any permission on it; InvalidArgument
  // when it is not 64 hex characters and an optional newline, or not a
  // regular file; NotFound / Internal when it cannot be opened or read.
  static absl::StatusOr<KeyEncryptionKey> LoadFromFile(const std::string& path);
  // InvalidArgument unless `key` is kKekBytes.
  static absl::StatusOr<KeyEncryptionKey> FromBytes(std::string_view key);

  KeyEncryptionKey(KeyEncryptionKey&& other) noexcept;
  KeyEncryptionKey& operator=(KeyEncryptionKey&& other) noexcept;
  KeyEncryptionKey(const KeyEncryptionKey&) = delete;
  KeyEncryptionKey& operator=(const KeyEncryptionKey&) = delete;
  ~KeyEncryptionKey();

  // Seals `plaintext` bound to `associated_data` (format above) with a
  // fresh random nonce. Internal when OpenSSL fails.
  absl::StatusOr<std::string> Seal(std::string_view plaintext,
                                   std::string_view associated_data) const;
  // The plaintext of a Seal() output with the same associated data.
  // FailedPrecondition when it was sealed under another KEK (start the node
  // with the cluster's KEK file); DataLoss when it is cut short, of an
  // unknown version, or fails authentication (altered bytes, or another
  // associated data).
  absl::StatusOr<std::string> Open(std::string_view sealed,
                                   std::string_view associated_data) const;

  // The 8-byte KEK id in hex, for logs and error messages.
  std::string KekIdHex() const;

  // The id (hex) of the KEK `sealed` was sealed under; empty when it is no
  // sealed key of a known version.
  static std::string SealedUnderIdHex(std::string_view sealed);

 private:
  explicit KeyEncryptionKey(std::string_view key);

  std::array<uint8_t, kKekBytes> key_;
  std::array<uint8_t, kKekIdBytes> id_;
};

// Writes a new random KEK to `path` (created with mode 0600, never over an
// existing file: AlreadyExists), flushed to disk. For tools/dev.sh and tests;
// production KEKs come from the operator's secret store.
absl::Status WriteNewKekFile(const std::string& path);

}  // namespace sessiond

#endif  // SESSIOND_COMMON_KEY_ENCRYPTION_H_
