// Copyright sessiond authors. Licensed under the Apache License 2.0.
#include "common/key_encryption.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/sha.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <memory>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace sessiond {
namespace {

constexpr size_t kKekHexChars = 2 * kKekBytes;
// Sealed keys are private keys: small. The bound keeps sizes within int.
constexpr size_t kMaxSealedPlaintextBytes = 64 * 1024;
constexpr char kKekIdLabel[] = "sessiond-kek-id";

struct CipherCtxDeleter {
  void operator()(EVP_CIPHER_CTX* p) const { EVP_CIPHER_CTX_free(p); }
};
using CipherCtxPtr = std::unique_ptr<EVP_CIPHER_CTX, CipherCtxDeleter>;

struct FdCloser {
  int fd;
  ~FdCloser() {
    if (fd >= 0) close(fd);
  }
};

int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

const unsigned char* Bytes(std::string_view s) {
  return reinterpret_cast<const unsigned char*>(s.data());
}

std::string ErrnoText(int err) { return std::strerror(err); }

}  // namespace

KeyEncryptionKey::KeyEncryptionKey(std::string_view key) {
  std::memcpy(key_.data(), key.data(), kKekBytes);
  // The id: a one-way function of the key, labelled so it is not the hash
  // anything else computes over the same bytes.
  std::string input(kKekIdLabel, sizeof(kKekIdLabel));  // with the NUL
  input.append(key.data(), key.size());
  unsigned char digest[SHA256_DIGEST_LENGTH];
  SHA256(Bytes(input), input.size(), digest);
  std::memcpy(id_.data(), digest, kKekIdBytes);
  OPENSSL_cleanse(&input[0], input.size());
  OPENSSL_cleanse(digest, sizeof(digest));
}

KeyEncryptionKey::KeyEncryptionKey(KeyEncryptionKey&& other) noexcept
    : key_(other.key_), id_(other.id_) {
  OPENSSL_cleanse(other.key_.data(), other.key_.size());
}

KeyEncryptionKey& KeyEncryptionKey::operator=(
    KeyEncryptionKey&& other) noexcept {
  if (this != &other) {
    key_ = other.key_;
    id_ = other.id_;
    OPENSSL_cleanse(other.key_.data(), other.key_.size());
  }
  return *this;
}

KeyEncryptionKey::~KeyEncryptionKey() {
  OPENSSL_cleanse(key_.data(), key_.size());
}

absl::StatusOr<KeyEncryptionKey> KeyEncryptionKey::FromBytes(
    std::string_view key) {
  if (key.size() != kKekBytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        "a key-encryption key is ", kKekBytes, " bytes, not ", key.size()));
  }
  return KeyEncryptionKey(key);
}

absl::StatusOr<KeyEncryptionKey> KeyEncryptionKey::LoadFromFile(
    const std::string& path) {
  FdCloser file{open(path.c_str(), O_RDONLY | O_CLOEXEC)};
  if (file.fd < 0) {
    const int err = errno;
    const std::string message = absl::StrCat(
        "cannot open the key-encryption key file ", path, ": ", ErrnoText(err));
    return err == ENOENT ? absl::NotFoundError(message)
                         : absl::InternalError(message);
  }
  struct stat st;
  if (fstat(file.fd, &st) != 0) {
    return absl::InternalError(
        absl::StrCat("cannot stat the key-encryption key file ", path, ": ",
                     ErrnoText(errno)));
  }
  if (!S_ISREG(st.st_mode)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the key-encryption key file ", path, " is not a regular file"));
  }
  if ((st.st_mode & 077) != 0) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "the key-encryption key file %s has mode %04o: group or others may "
        "access it; run `chmod 600 %s` (and keep it owned by the sessiond "
        "user)",
        path, st.st_mode & 07777, path));
  }
  // Read one byte more than the longest valid content, to detect a longer
  // file without reading all of it.
  char buf[kKekHexChars + 2];
  size_t size = 0;
  while (size < sizeof(buf)) {
    const ssize_t n = read(file.fd, buf + size, sizeof(buf) - size);
    if (n < 0) {
      if (errno == EINTR) continue;
      const int err = errno;
      OPENSSL_cleanse(buf, sizeof(buf));
      return absl::InternalError(
          absl::StrCat("cannot read the key-encryption key file ", path, ": ",
                       ErrnoText(err)));
    }
    if (n == 0) break;
    size += static_cast<size_t>(n);
  }
  const bool valid_length = size == kKekHexChars ||
                            (size == kKekHexChars + 1 && buf[size - 1] == '\n');
  if (!valid_length) {
    OPENSSL_cleanse(buf, sizeof(buf));
    return absl::InvalidArgumentError(absl::StrCat(
        "the key-encryption key file ", path, " must hold exactly ",
        kKekHexChars, " hex characters (", kKekBytes,
        " bytes) and an optional newline; it holds ",
        size > kKekHexChars + 1 ? std::string("more than ") : std::string(),
        size > kKekHexChars + 1 ? kKekHexChars + 1 : size,
        " bytes (make one with `openssl rand -hex 32 > FILE`)"));
  }
  std::array<char, kKekBytes> key;
  for (size_t i = 0; i < kKekBytes; ++i) {
    const int hi = HexValue(buf[2 * i]);
    const int lo = HexValue(buf[2 * i + 1]);
    if (hi < 0 || lo < 0) {
      OPENSSL_cleanse(buf, sizeof(buf));
      OPENSSL_cleanse(key.data(), key.size());
      return absl::InvalidArgumentError(
          absl::StrCat("the key-encryption key file ", path,
                       " holds a character that is not hexadecimal at offset ",
                       hi < 0 ? 2 * i : 2 * i + 1));
    }
    key[i] = static_cast<char>((hi << 4) | lo);
  }
  OPENSSL_cleanse(buf, sizeof(buf));
  KeyEncryptionKey kek(std::string_view(key.data(), key.size()));
  OPENSSL_cleanse(key.data(), key.size());
  return kek;
}

absl::StatusOr<std::string> KeyEncryptionKey::Seal(
    std::string_view plaintext, std::string_view associated_data) const {
  if (plaintext.size() > kMaxSealedPlaintextBytes ||
      associated_data.size() > kMaxSealedPlaintextBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("Seal takes at most ", kMaxSealedPlaintextBytes,
                     " bytes of plaintext and of associated data"));
  }
  std::string sealed(kSealOverheadBytes + plaintext.size(), '\0');
  unsigned char* out = reinterpret_cast<unsigned char*>(&sealed[0]);
  out[0] = kSealedKeyVersion;
  std::memcpy(out + 1, id_.data(), kKekIdBytes);
  unsigned char* nonce = out + 1 + kKekIdBytes;
  if (RAND_bytes(nonce, kSealNonceBytes) != 1) {
    return absl::InternalError("OpenSSL RAND_bytes failed");
  }
  unsigned char* ciphertext = nonce + kSealNonceBytes;
  unsigned char* tag = ciphertext + plaintext.size();

  CipherCtxPtr ctx(EVP_CIPHER_CTX_new());
  int length = 0;
  if (ctx == nullptr ||
      EVP_EncryptInit_ex(ctx.get(), EVP_aes_256_gcm(), nullptr, nullptr,
                         nullptr) != 1 ||
      EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_SET_IVLEN, kSealNonceBytes,
                          nullptr) != 1 ||
      EVP_EncryptInit_ex(ctx.get(), nullptr, nullptr, key_.data(), nonce) !=
          1 ||
      EVP_EncryptUpdate(ctx.get(), nullptr, &length, out, 1 + kKekIdBytes) !=
          1 ||
      (!associated_data.empty() &&
       EVP_EncryptUpdate(ctx.get(), nullptr, &length, Bytes(associated_data),
                         static_cast<int>(associated_data.size())) != 1) ||
      (!plaintext.empty() &&
       EVP_EncryptUpdate(ctx.get(), ciphertext, &length, Bytes(plaintext),
                         static_cast<int>(plaintext.size())) != 1) ||
      EVP_EncryptFinal_ex(ctx.get(), ciphertext + plaintext.size(), &length) !=
          1 ||
      EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_GET_TAG, kSealTagBytes,
                          tag) != 1) {
    OPENSSL_cleanse(&sealed[0], sealed.size());
    return absl::InternalError("OpenSSL: AES-256-GCM seal failed");
  }
  return sealed;
}

absl::StatusOr<std::string> KeyEncryptionKey::Open(
    std::string_view sealed, std::string_view associated_data) const {
  if (sealed.size() < kSealOverheadBytes ||
      sealed.size() > kSealOverheadBytes + kMaxSealedPlaintextBytes ||
      associated_data.size() > kMaxSealedPlaintextBytes) {
    return absl::DataLossError(
        absl::StrCat("the sealed key is ", sealed.size(),
                     " bytes: not a sealed key (cut short or corrupt)"));
  }
  const unsigned char* in = Bytes(sealed);
  if (in[0] != kSealedKeyVersion) {
    return absl::DataLossError(absl::StrCat(
        "the sealed key has version ", static_cast<int>(in[0]),
        "; this sessiond opens version ", static_cast<int>(kSealedKeyVersion)));
  }
  if (std::memcmp(in + 1, id_.data(), kKekIdBytes) != 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("the key was sealed under key-encryption key ",
                     SealedUnderIdHex(sealed), ", this node has ", KekIdHex(),
                     ": start every member with the same KEK file"));
  }
  const unsigned char* nonce = in + 1 + kKekIdBytes;
  const unsigned char* ciphertext = nonce + kSealNonceBytes;
  const size_t ciphertext_size = sealed.size() - kSealOverheadBytes;
  // EVP_CTRL_GCM_SET_TAG takes a non-const pointer; copy the tag.
  unsigned char tag[kSealTagBytes];
  std::memcpy(tag, ciphertext + ciphertext_size, kSealTagBytes);

  std::string plaintext(ciphertext_size, '\0');
  unsigned char* out = reinterpret_cast<unsigned char*>(&plaintext[0]);
  CipherCtxPtr ctx(EVP_CIPHER_CTX_new());
  int length = 0;
  if (ctx == nullptr ||
      EVP_DecryptInit_ex(ctx.get(), EVP_aes_256_gcm(), nullptr, nullptr,
                         nullptr) != 1 ||
      EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_SET_IVLEN, kSealNonceBytes,
                          nullptr) != 1 ||
      EVP_DecryptInit_ex(ctx.get(), nullptr, nullptr, key_.data(), nonce) !=
          1 ||
      EVP_DecryptUpdate(ctx.get(), nullptr, &length, in, 1 + kKekIdBytes) !=
          1 ||
      (!associated_data.empty() &&
       EVP_DecryptUpdate(ctx.get(), nullptr, &length, Bytes(associated_data),
                         static_cast<int>(associated_data.size())) != 1) ||
      (ciphertext_size > 0 &&
       EVP_DecryptUpdate(ctx.get(), out, &length, ciphertext,
                         static_cast<int>(ciphertext_size)) != 1) ||
      EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_SET_TAG, kSealTagBytes,
                          tag) != 1) {
    OPENSSL_cleanse(&plaintext[0], plaintext.size());
    return absl::InternalError("OpenSSL: AES-256-GCM open failed");
  }
  if (EVP_DecryptFinal_ex(ctx.get(), out + ciphertext_size, &length) != 1) {
    OPENSSL_cleanse(&plaintext[0], plaintext.size());
    return absl::DataLossError(
        "the sealed key does not authenticate: its bytes or its kid were "
        "altered");
  }
  return plaintext;
}

std::string KeyEncryptionKey::SealedUnderIdHex(std::string_view sealed) {
  if (sealed.size() < kSealOverheadBytes ||
      Bytes(sealed)[0] != kSealedKeyVersion) {
    return "";
  }
  return absl::BytesToHexString(
      absl::string_view(sealed.data() + 1, kKekIdBytes));
}

std::string KeyEncryptionKey::KekIdHex() const {
  return absl::BytesToHexString(
      absl::string_view(reinterpret_cast<const char*>(id_.data()), id_.size()));
}

absl::Status WriteNewKekFile(const std::string& path) {
  unsigned char key[kKekBytes];
  if (RAND_bytes(key, sizeof(key)) != 1) {
    return absl::InternalError("OpenSSL RAND_bytes failed");
  }
  std::string text = absl::BytesToHexString(
      absl::string_view(reinterpret_cast<const char*>(key), sizeof(key)));
  OPENSSL_cleanse(key, sizeof(key));
  text.push_back('\n');

  absl::Status status;
  const int fd =
      open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) {
    const int err = errno;
    OPENSSL_cleanse(&text[0], text.size());
    const std::string message =
        absl::StrCat("cannot create the key-encryption key file ", path, ": ",
                     ErrnoText(err));
    return err == EEXIST ? absl::AlreadyExistsError(message)
                         : absl::InternalError(message);
  }
  // The mode given to open() is narrowed by the umask, never widened; set
  // it exactly.
  if (fchmod(fd, 0600) != 0) {
    status = absl::InternalError(
        absl::StrCat("cannot chmod 600 ", path, ": ", ErrnoText(errno)));
  }
  size_t written = 0;
  while (status.ok() && written < text.size()) {
    const ssize_t n = write(fd, text.data() + written, text.size() - written);
    if (n < 0) {
      if (errno == EINTR) continue;
      status = absl::InternalError(
          absl::StrCat("cannot write ", path, ": ", ErrnoText(errno)));
      break;
    }
    written += static_cast<size_t>(n);
  }
  if (status.ok() && fsync(fd) != 0) {
    status = absl::InternalError(
        absl::StrCat("cannot fsync ", path, ": ", ErrnoText(errno)));
  }
  OPENSSL_cleanse(&text[0], text.size());
  if (close(fd) != 0 && status.ok()) {
    status = absl::InternalError(
        absl::StrCat("cannot close ", path, ": ", ErrnoText(errno)));
  }
  if (!status.ok()) unlink(path.c_str());
  return status;
}

}  // namespace sessiond
