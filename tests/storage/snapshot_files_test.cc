// Copyright sessiond authors. Licensed under the Apache License 2.0.
//
// SnapshotImageSource, the sending side of a snapshot image, and
// SnapshotImageReader, what restores one, on real image files: what they
// hand out of a whole image, and of one damaged on disk (a flipped byte, cut
// short, grown).
#include "storage/snapshot_files.h"

#include <filesystem>
#include <fstream>
#include <iterator>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "tests/storage/temp_dir.h"

namespace sessiond::storage {
namespace {

using sessiond::v1::internal::SnapshotRef;

class SnapshotImageTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(files_.Init().ok());
    ASSERT_NO_FATAL_FAILURE(WriteImage(9, 200, 0));
  }

  // The image at `index`, of `count` sessions with `attribute_bytes` of
  // attributes each; it becomes the one the test reads.
  void WriteImage(uint64_t index, int count, size_t attribute_bytes) {
    sessiond::v1::internal::SnapshotHeader header;
    header.set_index(index);
    header.set_term(2);
    auto file = files_.NewFile(LogIndex(index), Term(2), "local");
    ASSERT_TRUE(file.ok()) << file.status();
    SnapshotImageWriter writer(*std::move(file), header);
    records_.clear();
    for (int i = 0; i < count; ++i) {
      sessiond::v1::internal::StoredSession session;
      session.set_token_hash(std::string(32, static_cast<char>(i)));
      session.mutable_session()->set_session_id(absl::StrCat("s", i));
      session.mutable_session()->set_user_id("u");
      if (attribute_bytes > 0) {
        (*session.mutable_session()->mutable_attributes())["a"] =
            std::string(attribute_bytes, static_cast<char>('a' + i % 26));
      }
      records_.push_back(session.SerializeAsString());
      ASSERT_TRUE(writer.AddRecord(records_.back()).ok());
    }
    absl::StatusOr<SnapshotRef> ref = writer.Finish();
    ASSERT_TRUE(ref.ok()) << ref.status();
    ref_ = *ref;
    path_ = files_.PathOf(ref_.file());
    image_ = ReadFile();
    ASSERT_EQ(image_.size(), ref_.size());
  }

  // The image with a byte flipped at `flip_at`, cut short by one byte, and
  // grown by one.
  std::vector<std::string> DamagedCopies(size_t flip_at) const {
    std::string flipped = image_;
    flipped[flip_at] ^= 0x01;
    return {flipped, image_.substr(0, image_.size() - 1), image_ + "x"};
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

  // The header's index and every record SnapshotImageReader reads, or how
  // it failed.
  struct Restored {
    uint64_t index = 0;
    std::vector<std::string> records;
    absl::Status status;
  };
  Restored Restore() const {
    Restored restored;
    absl::StatusOr<std::unique_ptr<SnapshotImageReader>> reader =
        SnapshotImageReader::Open(files_, ref_);
    if (!reader.ok()) {
      restored.status = reader.status();
      return restored;
    }
    restored.index = (*reader)->header().index();
    restored.status = (*reader)->ForEachRecord([&](std::string_view record) {
      restored.records.emplace_back(record);
      return absl::OkStatus();
    });
    return restored;
  }

  testing::TempDir dir_;
  SnapshotFiles files_{dir_.Sub("snap")};
  std::vector<std::string> records_;
  SnapshotRef ref_;
  std::string path_;
  std::string image_;
};

TEST_F(SnapshotImageTest, AWholeImageIsHandedOutWhole) {
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
TEST_F(SnapshotImageTest, ADamagedImageEndsInDataLossBeforeItsLastPiece) {
  for (const std::string& damaged : DamagedCopies(image_.size() / 2)) {
    WriteFile(damaged);
    EXPECT_EQ(ReadFile(), damaged);
    EXPECT_FALSE(files_.Verify(ref_).ok());
    for (const size_t piece : {size_t{1000}, size_t{1} << 20}) {
      const Sent sent = SendAll(piece);
      EXPECT_EQ(sent.status.code(), absl::StatusCode::kDataLoss)
          << sent.status << " for " << damaged.size() << " bytes, pieces of "
          << piece;
      EXPECT_LT(sent.bytes.size(), damaged.size())
          << "the damaged image's last piece went out";
    }
  }
  std::filesystem::remove(path_);
  EXPECT_EQ(SendAll(1000).status.code(), absl::StatusCode::kNotFound);
}

TEST_F(SnapshotImageTest, AWholeImageIsRestoredWhole) {
  const Restored restored = Restore();
  ASSERT_TRUE(restored.status.ok()) << restored.status;
  EXPECT_EQ(restored.index, 9u);
  EXPECT_EQ(restored.records, records_);
}

// An image of several read pieces (the check reads 1 MiB at a time), whole
// and damaged in its second piece, cut short, or grown.
TEST_F(SnapshotImageTest, ALargeImageIsCheckedWholeBeforeItIsRestored) {
  ASSERT_NO_FATAL_FAILURE(WriteImage(10, 40, 64 * 1024));
  ASSERT_GT(image_.size(), size_t{2} << 20);
  const Restored whole = Restore();
  ASSERT_TRUE(whole.status.ok()) << whole.status;
  EXPECT_EQ(whole.index, 10u);
  EXPECT_EQ(whole.records, records_);
  EXPECT_TRUE(files_.Verify(ref_).ok());

  for (const std::string& damaged : DamagedCopies((size_t{1} << 20) + 100)) {
    WriteFile(damaged);
    const Restored restored = Restore();
    EXPECT_EQ(restored.status.code(), absl::StatusCode::kDataLoss)
        << restored.status << " for " << damaged.size() << " bytes";
    EXPECT_TRUE(restored.records.empty());
    EXPECT_EQ(files_.Verify(ref_).code(), absl::StatusCode::kDataLoss);
  }
}

// A restore reads only an image whose every byte matched its checksum: a
// damaged record read into the table would be a session nobody made, or
// one lost, on this node alone. The check and the reading go through one
// open file, so what is read is what was checked.
TEST_F(SnapshotImageTest, ADamagedImageIsNeverRestored) {
  for (const std::string& damaged : DamagedCopies(image_.size() / 2)) {
    WriteFile(damaged);
    const Restored restored = Restore();
    EXPECT_EQ(restored.status.code(), absl::StatusCode::kDataLoss)
        << restored.status << " for " << damaged.size() << " bytes";
    EXPECT_TRUE(restored.records.empty());
  }
  std::filesystem::remove(path_);
  EXPECT_EQ(Restore().status.code(), absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace sessiond::storage
