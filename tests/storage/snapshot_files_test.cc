// Copyright sessiond authors. Licensed under the Apache License 2.0.
//
// SnapshotImageSource, the sending side of a snapshot image, on real image
// files: what it hands out of a whole image, and of one damaged on disk
// (a flipped byte, cut short, grown).
#include "storage/snapshot_files.h"

#include <filesystem>
#include <fstream>
#include <initializer_list>
#include <iterator>
#include <memory>
#include <string>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "tests/storage/temp_dir.h"

namespace sessiond::storage {
namespace {

using sessiond::v1::internal::SnapshotRef;

class SnapshotImageSourceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(files_.Init().ok());
    sessiond::v1::internal::SnapshotHeader header;
    header.set_index(9);
    header.set_term(2);
    auto file = files_.NewFile(LogIndex(9), Term(2), "local");
    ASSERT_TRUE(file.ok()) << file.status();
    SnapshotImageWriter writer(*std::move(file), header);
    for (int i = 0; i < 200; ++i) {
      sessiond::v1::internal::StoredSession session;
      session.set_token_hash(std::string(32, static_cast<char>(i)));
      session.mutable_session()->set_session_id(absl::StrCat("s", i));
      session.mutable_session()->set_user_id("u");
      ASSERT_TRUE(writer.AddRecord(session.SerializeAsString()).ok());
    }
    absl::StatusOr<SnapshotRef> ref = writer.Finish();
    ASSERT_TRUE(ref.ok()) << ref.status();
    ref_ = *ref;
    path_ = files_.PathOf(ref_.file());
    image_ = ReadFile();
    ASSERT_EQ(image_.size(), ref_.size());
  }

  std::string ReadFile() const {
    std::ifstream in(path_, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), {});
  }
  void WriteFile(const std::string& bytes) const {
    std::ofstream(path_, std::ios::binary | std::ios::trunc) << bytes;
  }

  // Everything the source hands out in pieces of `piece` bytes, and how it
  // ended.
  struct Sent {
    std::string bytes;
    absl::Status status;
  };
  Sent SendAll(size_t piece) const {
    Sent sent;
    absl::StatusOr<std::unique_ptr<SnapshotImageSource>> source =
        SnapshotImageSource::Open(files_, ref_);
    if (!source.ok()) {
      sent.status = source.status();
      return sent;
    }
    for (int i = 0; i < 100000 && !(*source)->done(); ++i) {
      std::string out;
      sent.status = (*source)->Next(piece, &out);
      if (!sent.status.ok()) break;
      sent.bytes += out;
    }
    return sent;
  }

  testing::TempDir dir_;
  SnapshotFiles files_{dir_.Sub("snap")};
  SnapshotRef ref_;
  std::string path_;
  std::string image_;
};

TEST_F(SnapshotImageSourceTest, AWholeImageIsHandedOutWhole) {
  // Pieces smaller than the image, one that divides it exactly, and one
  // larger than it.
  for (const size_t piece :
       {size_t{1000}, image_.size() / 4, size_t{1} << 20}) {
    const Sent sent = SendAll(piece);
    EXPECT_TRUE(sent.status.ok()) << sent.status << " with pieces of " << piece;
    EXPECT_EQ(sent.bytes, image_) << "with pieces of " << piece;
  }
}

// A leader whose own image rotted sent it to a lagging follower, which
// refused it as it should, and the leader sent it again, for good. The
// damage is found as the image is read; its last piece is never handed
// out, so a receiver never holds the whole of a damaged image.
TEST_F(SnapshotImageSourceTest, ADamagedImageEndsInDataLossBeforeItsLastPiece) {
  std::string flipped = image_;
  flipped[flipped.size() / 2] ^= 0x01;
  const std::string short_by_one = image_.substr(0, image_.size() - 1);
  const std::string one_more = image_ + "x";
  for (const std::string* damaged : std::initializer_list<const std::string*>{
           &flipped, &short_by_one, &one_more}) {
    WriteFile(*damaged);
    EXPECT_EQ(ReadFile(), *damaged);
    EXPECT_FALSE(files_.Verify(ref_).ok());
    for (const size_t piece : {size_t{1000}, size_t{1} << 20}) {
      const Sent sent = SendAll(piece);
      EXPECT_EQ(sent.status.code(), absl::StatusCode::kDataLoss)
          << sent.status << " for " << damaged->size() << " bytes, pieces of "
          << piece;
      EXPECT_LT(sent.bytes.size(), damaged->size())
          << "the damaged image's last piece went out";
    }
  }
  std::filesystem::remove(path_);
  EXPECT_EQ(SendAll(1000).status.code(), absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace sessiond::storage
