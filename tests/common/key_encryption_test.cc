// Copyright sessiond authors. Licensed under the Apache License 2.0.
#include "common/key_encryption.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fstream>
#include <set>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "gtest/gtest.h"
#include "tests/storage/temp_dir.h"

namespace sessiond {
namespace {

const std::string kKeyA(32, 'A');
const std::string kKeyB(32, 'B');
const std::string kPrivate = "0123456789abcdef0123456789abcdef";

KeyEncryptionKey Kek(const std::string& bytes) {
  absl::StatusOr<KeyEncryptionKey> kek = KeyEncryptionKey::FromBytes(bytes);
  EXPECT_TRUE(kek.ok()) << kek.status();
  return *std::move(kek);
}

void WriteFile(const std::string& path, const std::string& content,
               mode_t mode) {
  unlink(path.c_str());
  {
    std::ofstream out(path, std::ios::binary);
    out << content;
  }
  ASSERT_EQ(chmod(path.c_str(), mode), 0);
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

TEST(KeyEncryptionTest, SealOpenRoundTrip) {
  const KeyEncryptionKey kek = Kek(kKeyA);
  absl::StatusOr<std::string> sealed = kek.Seal(kPrivate, "kid-1");
  ASSERT_TRUE(sealed.ok()) << sealed.status();
  EXPECT_EQ(sealed->size(), kSealOverheadBytes + kPrivate.size());
  EXPECT_EQ(static_cast<uint8_t>((*sealed)[0]), kSealedKeyVersion);
  EXPECT_FALSE(absl::StrContains(*sealed, kPrivate));
  absl::StatusOr<std::string> opened = kek.Open(*sealed, "kid-1");
  ASSERT_TRUE(opened.ok()) << opened.status();
  EXPECT_EQ(*opened, kPrivate);

  // A fresh nonce each time: the same key sealed twice differs.
  absl::StatusOr<std::string> again = kek.Seal(kPrivate, "kid-1");
  ASSERT_TRUE(again.ok());
  EXPECT_NE(*again, *sealed);
  EXPECT_EQ(*kek.Open(*again, "kid-1"), kPrivate);

  // Empty plaintext and empty associated data work too.
  absl::StatusOr<std::string> empty = kek.Seal("", "");
  ASSERT_TRUE(empty.ok());
  EXPECT_EQ(*kek.Open(*empty, ""), "");
}

TEST(KeyEncryptionTest, WrongKekIsToldApartFromTampering) {
  const KeyEncryptionKey a = Kek(kKeyA);
  const KeyEncryptionKey b = Kek(kKeyB);
  EXPECT_NE(a.KekIdHex(), b.KekIdHex());
  EXPECT_EQ(a.KekIdHex().size(), 2 * kKekIdBytes);
  absl::StatusOr<std::string> sealed = a.Seal(kPrivate, "kid-1");
  ASSERT_TRUE(sealed.ok());
  absl::StatusOr<std::string> opened = b.Open(*sealed, "kid-1");
  ASSERT_FALSE(opened.ok());
  EXPECT_EQ(opened.status().code(), absl::StatusCode::kFailedPrecondition)
      << opened.status();
  EXPECT_TRUE(absl::StrContains(opened.status().message(), a.KekIdHex()));
  EXPECT_TRUE(absl::StrContains(opened.status().message(), b.KekIdHex()));
  EXPECT_TRUE(absl::StrContains(opened.status().message(), "same KEK file"));
}

TEST(KeyEncryptionTest, EveryAlteredByteIsRefused) {
  const KeyEncryptionKey kek = Kek(kKeyA);
  absl::StatusOr<std::string> sealed = kek.Seal(kPrivate, "kid-1");
  ASSERT_TRUE(sealed.ok());
  for (size_t i = 0; i < sealed->size(); ++i) {
    std::string altered = *sealed;
    altered[i] = static_cast<char>(altered[i] ^ 0x01);
    absl::StatusOr<std::string> opened = kek.Open(altered, "kid-1");
    ASSERT_FALSE(opened.ok()) << "byte " << i;
    // The KEK id bytes read as another KEK; everything else as tampering.
    const absl::StatusCode expected =
        (i >= 1 && i <= kKekIdBytes) ? absl::StatusCode::kFailedPrecondition
                                     : absl::StatusCode::kDataLoss;
    EXPECT_EQ(opened.status().code(), expected)
        << "byte " << i << ": " << opened.status();
  }
  // Another kid (associated data), cut short, extended.
  EXPECT_EQ(kek.Open(*sealed, "kid-2").status().code(),
            absl::StatusCode::kDataLoss);
  EXPECT_EQ(kek.Open(*sealed, "").status().code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(
      kek.Open(sealed->substr(0, sealed->size() - 1), "kid-1").status().code(),
      absl::StatusCode::kDataLoss);
  EXPECT_EQ(kek.Open(sealed->substr(0, 5), "kid-1").status().code(),
            absl::StatusCode::kDataLoss);
  EXPECT_EQ(kek.Open("", "kid-1").status().code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(kek.Open(*sealed + "x", "kid-1").status().code(),
            absl::StatusCode::kDataLoss);
}

TEST(KeyEncryptionTest, FromBytesNeeds32Bytes) {
  EXPECT_EQ(KeyEncryptionKey::FromBytes("").status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(KeyEncryptionKey::FromBytes(std::string(31, 'a')).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(KeyEncryptionKey::FromBytes(std::string(33, 'a')).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(KeyEncryptionTest, MovedKekStillWorks) {
  KeyEncryptionKey kek = Kek(kKeyA);
  absl::StatusOr<std::string> sealed = kek.Seal(kPrivate, "k");
  ASSERT_TRUE(sealed.ok());
  KeyEncryptionKey moved = std::move(kek);
  EXPECT_EQ(*moved.Open(*sealed, "k"), kPrivate);
}

TEST(KekFileTest, WriteNewThenLoad) {
  testing::TempDir dir;
  const std::string path = dir.Sub("kek");
  ASSERT_TRUE(WriteNewKekFile(path).ok());
  struct stat st;
  ASSERT_EQ(stat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  const std::string text = ReadFile(path);
  ASSERT_EQ(text.size(), 65u);
  EXPECT_EQ(text.back(), '\n');
  const std::string bytes =
      absl::HexStringToBytes(absl::string_view(text.data(), 64));

  absl::StatusOr<KeyEncryptionKey> loaded =
      KeyEncryptionKey::LoadFromFile(path);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  // The file holds the key: what it seals, the raw bytes open.
  absl::StatusOr<std::string> sealed = loaded->Seal(kPrivate, "k");
  ASSERT_TRUE(sealed.ok());
  EXPECT_EQ(*Kek(bytes).Open(*sealed, "k"), kPrivate);

  // Never over an existing file.
  const absl::Status again = WriteNewKekFile(path);
  EXPECT_EQ(again.code(), absl::StatusCode::kAlreadyExists) << again;
  EXPECT_EQ(ReadFile(path), text);

  // Two new files, two different keys.
  ASSERT_TRUE(WriteNewKekFile(dir.Sub("kek2")).ok());
  EXPECT_NE(ReadFile(dir.Sub("kek2")), text);
}

TEST(KekFileTest, UppercaseAndNoNewlineAreAccepted) {
  testing::TempDir dir;
  const std::string path = dir.Sub("kek");
  std::string key;
  for (int i = 0; i < 32; ++i) key.push_back(static_cast<char>(0xa0 + i));
  const std::string hex = absl::BytesToHexString(key);
  WriteFile(path, absl::AsciiStrToUpper(hex), 0600);
  absl::StatusOr<KeyEncryptionKey> upper = KeyEncryptionKey::LoadFromFile(path);
  ASSERT_TRUE(upper.ok()) << upper.status();
  EXPECT_EQ(upper->KekIdHex(), Kek(key).KekIdHex());
  WriteFile(path, hex, 0400);
  EXPECT_TRUE(KeyEncryptionKey::LoadFromFile(path).ok());
}

TEST(KekFileTest, GroupOrOtherAccessIsRefusedWithChmod600) {
  testing::TempDir dir;
  const std::string path = dir.Sub("kek");
  const std::string content = absl::BytesToHexString(kKeyA) + "\n";
  for (mode_t mode : {0640, 0604, 0644, 0660, 0620, 0602, 0610, 0601}) {
    WriteFile(path, content, mode);
    absl::StatusOr<KeyEncryptionKey> loaded =
        KeyEncryptionKey::LoadFromFile(path);
    ASSERT_FALSE(loaded.ok()) << std::oct << mode;
    EXPECT_EQ(loaded.status().code(), absl::StatusCode::kFailedPrecondition);
    EXPECT_TRUE(
        absl::StrContains(loaded.status().message(), "chmod 600 " + path))
        << loaded.status();
    // The message never shows the key.
    EXPECT_FALSE(
        absl::StrContains(loaded.status().message(), content.substr(0, 16)));
  }
}

TEST(KekFileTest, WrongContentIsRefused) {
  testing::TempDir dir;
  const std::string path = dir.Sub("kek");
  const std::string hex = absl::BytesToHexString(kKeyA);
  const std::string cases[] = {
      "",
      hex.substr(0, 63),
      hex.substr(0, 62) + "\n",
      hex + "\n\n",
      hex + "\r\n",
      hex + " ",
      hex + hex,
      "0x" + hex.substr(2),
      hex.substr(0, 10) + "zz" + hex.substr(12),
  };
  for (const std::string& content : cases) {
    WriteFile(path, content, 0600);
    absl::StatusOr<KeyEncryptionKey> loaded =
        KeyEncryptionKey::LoadFromFile(path);
    ASSERT_FALSE(loaded.ok()) << content;
    EXPECT_EQ(loaded.status().code(), absl::StatusCode::kInvalidArgument)
        << loaded.status();
    EXPECT_FALSE(
        absl::StrContains(loaded.status().message(), hex.substr(0, 16)))
        << loaded.status();
  }
}

TEST(KekFileTest, MissingFileOrDirectoryIsRefused) {
  testing::TempDir dir;
  EXPECT_EQ(KeyEncryptionKey::LoadFromFile(dir.Sub("none")).status().code(),
            absl::StatusCode::kNotFound);
  ASSERT_EQ(mkdir(dir.Sub("d").c_str(), 0700), 0);
  EXPECT_EQ(KeyEncryptionKey::LoadFromFile(dir.Sub("d")).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(WriteNewKekFile(dir.Sub("no/such/dir")).code(),
            absl::StatusCode::kInternal);
}

}  // namespace
}  // namespace sessiond
