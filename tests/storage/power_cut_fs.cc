// Copyright sessiond authors. Licensed under the Apache License 2.0.
#include "tests/storage/power_cut_fs.h"

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <system_error>
#include <utility>

#include "absl/strings/str_cat.h"

namespace sessiond::testing {
namespace {

std::string Normal(const std::string& path) {
  std::string normal = std::filesystem::path(path).lexically_normal().string();
  while (normal.size() > 1 && normal.back() == '/') normal.pop_back();
  return normal;
}

std::string Parent(const std::string& normal_path) {
  return std::filesystem::path(normal_path).parent_path().string();
}

std::optional<std::string> ReadWhole(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return std::nullopt;
  return std::string(std::istreambuf_iterator<char>(in),
                     std::istreambuf_iterator<char>());
}

rocksdb::IOStatus PowerOff() {
  return rocksdb::IOStatus::IOError("PowerCutFileSystem: the power is off");
}

rocksdb::IOStatus Unsupported(const char* what) {
  return rocksdb::IOStatus::NotSupported(
      absl::StrCat("PowerCutFileSystem does not model ", what));
}

}  // namespace

// Forwards to the real file, but a sync only tells the model: durability is
// the model's to decide, and skipping the real fsync keeps the tests fast.
class PowerCutFileSystem::File : public rocksdb::FSWritableFileOwnerWrapper {
 public:
  File(PowerCutFileSystem* fs, std::shared_ptr<FileState> state,
       std::unique_ptr<rocksdb::FSWritableFile> target)
      : rocksdb::FSWritableFileOwnerWrapper(std::move(target)),
        fs_(fs),
        state_(std::move(state)) {}

  rocksdb::IOStatus Append(const rocksdb::Slice& data,
                           const rocksdb::IOOptions& options,
                           rocksdb::IODebugContext* dbg) override {
    return fs_->Append(state_, target(), data, options, dbg);
  }
  rocksdb::IOStatus Append(const rocksdb::Slice& data,
                           const rocksdb::IOOptions& options,
                           const rocksdb::DataVerificationInfo& /*info*/,
                           rocksdb::IODebugContext* dbg) override {
    return fs_->Append(state_, target(), data, options, dbg);
  }
  // Only direct I/O uses these; sessiond does not.
  rocksdb::IOStatus PositionedAppend(
      const rocksdb::Slice& /*data*/, uint64_t /*offset*/,
      const rocksdb::IOOptions& /*options*/,
      rocksdb::IODebugContext* /*dbg*/) override {
    return Unsupported("positioned appends");
  }
  rocksdb::IOStatus PositionedAppend(
      const rocksdb::Slice& /*data*/, uint64_t /*offset*/,
      const rocksdb::IOOptions& /*options*/,
      const rocksdb::DataVerificationInfo& /*info*/,
      rocksdb::IODebugContext* /*dbg*/) override {
    return Unsupported("positioned appends");
  }
  rocksdb::IOStatus Truncate(uint64_t size, const rocksdb::IOOptions& options,
                             rocksdb::IODebugContext* dbg) override {
    return fs_->TruncateFile(state_, target(), size, options, dbg);
  }
  rocksdb::IOStatus Sync(const rocksdb::IOOptions& /*options*/,
                         rocksdb::IODebugContext* /*dbg*/) override {
    return fs_->SyncFile(state_);
  }
  rocksdb::IOStatus Fsync(const rocksdb::IOOptions& /*options*/,
                          rocksdb::IODebugContext* /*dbg*/) override {
    return fs_->SyncFile(state_);
  }
  // sync_file_range: starts writeback, promises nothing. Not durable.
  rocksdb::IOStatus RangeSync(uint64_t /*offset*/, uint64_t /*nbytes*/,
                              const rocksdb::IOOptions& /*options*/,
                              rocksdb::IODebugContext* /*dbg*/) override {
    return rocksdb::IOStatus::OK();
  }
  // SyncFile takes the file system's lock, so Sync may race Append.
  bool IsSyncThreadSafe() const override { return true; }
  // Closing (which releases the descriptor) makes nothing durable; on a
  // dead machine it still fails, after the descriptor is released.
  rocksdb::IOStatus Close(const rocksdb::IOOptions& options,
                          rocksdb::IODebugContext* dbg) override {
    rocksdb::IOStatus s = target()->Close(options, dbg);
    if (fs_->FailingWrites()) return PowerOff();
    return s;
  }
  rocksdb::IOStatus Flush(const rocksdb::IOOptions& options,
                          rocksdb::IODebugContext* dbg) override {
    if (fs_->FailingWrites()) return PowerOff();
    return target()->Flush(options, dbg);
  }

 private:
  PowerCutFileSystem* const fs_;  // Not owned; outlives this.
  const std::shared_ptr<FileState> state_;
};

class PowerCutFileSystem::Directory : public rocksdb::FSDirectoryWrapper {
 public:
  Directory(PowerCutFileSystem* fs, std::string name,
            std::unique_ptr<rocksdb::FSDirectory> target)
      : rocksdb::FSDirectoryWrapper(std::move(target)),
        fs_(fs),
        name_(std::move(name)) {}

  rocksdb::IOStatus Fsync(const rocksdb::IOOptions& /*options*/,
                          rocksdb::IODebugContext* /*dbg*/) override {
    return fs_->SyncDirectory(name_);
  }
  // Whatever the reason RocksDB gives, the model needs the directory's
  // fsync to make its entries durable (ext4 semantics).
  rocksdb::IOStatus FsyncWithDirOptions(
      const rocksdb::IOOptions& /*options*/, rocksdb::IODebugContext* /*dbg*/,
      const rocksdb::DirFsyncOptions& /*dir_options*/) override {
    return fs_->SyncDirectory(name_);
  }

 private:
  PowerCutFileSystem* const fs_;  // Not owned; outlives this.
  const std::string name_;
};

PowerCutFileSystem::PowerCutFileSystem(std::string root,
                                       PowerCutOptions options)
    : rocksdb::FileSystemWrapper(rocksdb::FileSystem::Default()),
      root_(Normal(root)),
      options_(options),
      rng_(options.seed) {}

PowerCutFileSystem::~PowerCutFileSystem() = default;

bool PowerCutFileSystem::UnderRoot(const std::string& path) const {
  return path == root_ || (path.size() > root_.size() &&
                           path.compare(0, root_.size(), root_) == 0 &&
                           path[root_.size()] == '/');
}

bool PowerCutFileSystem::FailingWrites() const {
  return power_cut() &&
         options_.after_cut == PowerCutOptions::AfterCut::kFailWrites;
}

uint64_t PowerCutFileSystem::events() const {
  absl::MutexLock lock(&mu_);
  return events_;
}

void PowerCutFileSystem::CutPower() {
  absl::MutexLock lock(&mu_);
  CutLocked();
}

void PowerCutFileSystem::CutPowerAtEvent(uint64_t n) {
  absl::MutexLock lock(&mu_);
  cut_at_event_ = n == 0 ? 0 : events_ + n;
}

rocksdb::IOStatus PowerCutFileSystem::EventLocked(const char* what,
                                                  const std::string& path,
                                                  uint64_t bytes) {
  ++events_;
  if (options_.trace) {
    std::fprintf(stderr, "powercut: event %llu %s %s %llu%s\n",
                 static_cast<unsigned long long>(events_), what, path.c_str(),
                 static_cast<unsigned long long>(bytes),
                 power_cut() ? " (after the cut)" : "");
  }
  if (cut_at_event_ != 0 && events_ >= cut_at_event_) {
    cut_at_event_ = 0;
    CutLocked();
  }
  if (FailingWrites()) return PowerOff();
  return rocksdb::IOStatus::OK();
}

std::optional<std::string> PowerCutFileSystem::DurableContentsLocked(
    const std::string& path) {
  std::optional<std::string> contents = ReadWhole(path);
  if (!contents) return std::nullopt;
  auto it = files_.find(path);
  if (it != files_.end() && it->second->durable < contents->size()) {
    contents->resize(it->second->durable);
  }
  return contents;
}

void PowerCutFileSystem::CutLocked() {
  if (power_cut()) return;
  report_ = PowerLossReport{};
  report_.cut_at_event = events_;
  cut_.store(true, std::memory_order_seq_cst);
  image_.clear();

  // File data: every file under the root, sorted so the seed's choices do
  // not depend on the order readdir returns.
  std::vector<std::string> paths;
  std::error_code ec;
  for (auto it = std::filesystem::recursive_directory_iterator(root_, ec);
       !ec && it != std::filesystem::recursive_directory_iterator();
       it.increment(ec)) {
    if (it->is_regular_file(ec)) {
      paths.push_back(Normal(it->path().string()));
    }
  }
  std::sort(paths.begin(), paths.end());
  for (const std::string& path : paths) {
    std::optional<std::string> contents = ReadWhole(path);
    if (!contents) continue;
    auto tracked = files_.find(path);
    if (tracked != files_.end()) {
      const uint64_t size = contents->size();
      uint64_t keep = std::min(tracked->second->durable, size);
      const uint64_t unsynced = std::min(tracked->second->written, size) - keep;
      if (options_.torn_tails && unsynced > 0 && rng_.Percent(50)) {
        keep += rng_.Range(1, unsynced);
        ++report_.torn_files;
      }
      report_.bytes_dropped += size - keep;
      if (options_.trace) {
        std::fprintf(stderr, "powercut: %s keeps %llu of %llu bytes\n",
                     path.c_str(), static_cast<unsigned long long>(keep),
                     static_cast<unsigned long long>(size));
      }
      contents->resize(keep);
    }
    image_[path] = *std::move(contents);
  }

  // Directory changes since each directory's last fsync: a seeded prefix
  // survives, the rest is undone, newest first.
  for (auto& [dir, changes] : dir_changes_) {
    const size_t survive = options_.partial_directory_changes
                               ? rng_.Uniform(changes.size() + 1)
                               : 0;
    for (size_t i = changes.size(); i-- > survive;) {
      DirChange& change = changes[i];
      if (options_.trace) {
        static constexpr const char* kKinds[] = {"creation", "rename",
                                                 "deletion"};
        std::fprintf(stderr, "powercut: lost the %s of %s\n",
                     kKinds[static_cast<int>(change.kind)],
                     change.name.c_str());
      }
      switch (change.kind) {
        case DirChange::Kind::kCreate:
          image_.erase(change.name);
          ++report_.creations_lost;
          break;
        case DirChange::Kind::kRename: {
          auto moved = image_.extract(change.name);
          if (!moved.empty()) {
            image_[change.rename_source] = std::move(moved.mapped());
          }
          if (change.previous) image_[change.name] = *change.previous;
          ++report_.renames_lost;
          break;
        }
        case DirChange::Kind::kDelete:
          image_[change.name] = *change.previous;
          ++report_.deletions_lost;
          break;
      }
    }
  }
  report_.files = image_.size();
}

absl::Status PowerCutFileSystem::ApplyPowerLoss(PowerLossReport* report) {
  absl::MutexLock lock(&mu_);
  if (!power_cut()) {
    return absl::FailedPreconditionError("ApplyPowerLoss before the cut");
  }
  std::error_code ec;
  std::vector<std::filesystem::path> live;
  for (auto it = std::filesystem::recursive_directory_iterator(root_, ec);
       !ec && it != std::filesystem::recursive_directory_iterator();
       it.increment(ec)) {
    if (it->is_regular_file(ec)) live.push_back(it->path());
  }
  if (ec) {
    return absl::InternalError(
        absl::StrCat("listing ", root_, ": ", ec.message()));
  }
  for (const std::filesystem::path& path : live) {
    if (!std::filesystem::remove(path, ec) && ec) {
      return absl::InternalError(
          absl::StrCat("removing ", path.string(), ": ", ec.message()));
    }
  }
  for (const auto& [path, contents] : image_) {
    std::filesystem::create_directories(Parent(path), ec);
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out.write(contents.data(), static_cast<std::streamsize>(contents.size()));
    out.close();
    if (!out) return absl::InternalError(absl::StrCat("writing ", path));
  }
  if (report != nullptr) *report = report_;
  files_.clear();
  dir_changes_.clear();
  image_.clear();
  cut_at_event_ = 0;
  cut_.store(false, std::memory_order_seq_cst);
  return absl::OkStatus();
}

rocksdb::IOStatus PowerCutFileSystem::OpenForWrite(
    const std::string& fname, bool reopen, const rocksdb::FileOptions& options,
    std::unique_ptr<rocksdb::FSWritableFile>* result,
    rocksdb::IODebugContext* dbg) {
  absl::MutexLock lock(&mu_);
  rocksdb::IOStatus s = EventLocked(reopen ? "reopen" : "create", fname);
  if (!s.ok()) return s;
  const bool existed =
      target()->FileExists(fname, rocksdb::IOOptions(), dbg).ok();
  std::unique_ptr<rocksdb::FSWritableFile> file;
  s = reopen ? target()->ReopenWritableFile(fname, options, &file, dbg)
             : target()->NewWritableFile(fname, options, &file, dbg);
  if (!s.ok()) return s;
  auto state = std::make_shared<FileState>();
  state->name = fname;
  if (ModelLocked()) {
    // A reopened file the model has not seen (it predates the model or the
    // last power loss) is durable as it is. Its size comes from the file
    // system: a reopened PosixWritableFile counts only its own appends.
    uint64_t size = 0;
    if (reopen && !files_.contains(fname)) {
      s = target()->GetFileSize(fname, rocksdb::IOOptions(), &size, dbg);
      if (!s.ok()) return s;
    }
    std::shared_ptr<FileState>& tracked = files_[fname];
    if (reopen && tracked != nullptr) {
      state = tracked;
    } else if (reopen) {
      state->written = size;
      state->durable = size;
      tracked = state;
    } else {
      // A new file, or an existing one truncated (its old contents are
      // treated as gone: RocksDB never rewrites a file in place).
      tracked = state;
      if (!existed) {
        dir_changes_[Parent(fname)].push_back(
            DirChange{DirChange::Kind::kCreate, fname, "", std::nullopt});
      }
    }
  }
  result->reset(new File(this, std::move(state), std::move(file)));
  return rocksdb::IOStatus::OK();
}

rocksdb::IOStatus PowerCutFileSystem::NewWritableFile(
    const std::string& fname, const rocksdb::FileOptions& options,
    std::unique_ptr<rocksdb::FSWritableFile>* result,
    rocksdb::IODebugContext* dbg) {
  const std::string path = Normal(fname);
  if (!UnderRoot(path)) {
    return target()->NewWritableFile(fname, options, result, dbg);
  }
  return OpenForWrite(path, /*reopen=*/false, options, result, dbg);
}

rocksdb::IOStatus PowerCutFileSystem::ReopenWritableFile(
    const std::string& fname, const rocksdb::FileOptions& options,
    std::unique_ptr<rocksdb::FSWritableFile>* result,
    rocksdb::IODebugContext* dbg) {
  const std::string path = Normal(fname);
  if (!UnderRoot(path)) {
    return target()->ReopenWritableFile(fname, options, result, dbg);
  }
  return OpenForWrite(path, /*reopen=*/true, options, result, dbg);
}

rocksdb::IOStatus PowerCutFileSystem::ReuseWritableFile(
    const std::string& fname, const std::string& old_fname,
    const rocksdb::FileOptions& options,
    std::unique_ptr<rocksdb::FSWritableFile>* result,
    rocksdb::IODebugContext* dbg) {
  if (!UnderRoot(Normal(fname)) && !UnderRoot(Normal(old_fname))) {
    return target()->ReuseWritableFile(fname, old_fname, options, result, dbg);
  }
  return Unsupported("recycled log files");
}

rocksdb::IOStatus PowerCutFileSystem::NewRandomRWFile(
    const std::string& fname, const rocksdb::FileOptions& options,
    std::unique_ptr<rocksdb::FSRandomRWFile>* result,
    rocksdb::IODebugContext* dbg) {
  if (!UnderRoot(Normal(fname))) {
    return target()->NewRandomRWFile(fname, options, result, dbg);
  }
  return Unsupported("random-write files");
}

rocksdb::IOStatus PowerCutFileSystem::NewDirectory(
    const std::string& name, const rocksdb::IOOptions& options,
    std::unique_ptr<rocksdb::FSDirectory>* result,
    rocksdb::IODebugContext* dbg) {
  std::unique_ptr<rocksdb::FSDirectory> dir;
  rocksdb::IOStatus s = target()->NewDirectory(name, options, &dir, dbg);
  if (!s.ok()) return s;
  const std::string path = Normal(name);
  if (!UnderRoot(path)) {
    *result = std::move(dir);
  } else {
    result->reset(new Directory(this, path, std::move(dir)));
  }
  return rocksdb::IOStatus::OK();
}

rocksdb::IOStatus PowerCutFileSystem::DeleteFile(
    const std::string& fname, const rocksdb::IOOptions& options,
    rocksdb::IODebugContext* dbg) {
  const std::string path = Normal(fname);
  if (!UnderRoot(path)) return target()->DeleteFile(fname, options, dbg);
  absl::MutexLock lock(&mu_);
  rocksdb::IOStatus s = EventLocked("delete", path);
  if (!s.ok()) return s;
  std::optional<std::string> contents;
  if (ModelLocked()) contents = DurableContentsLocked(path);
  s = target()->DeleteFile(path, options, dbg);
  if (s.ok() && ModelLocked()) {
    files_.erase(path);
    if (contents) {
      dir_changes_[Parent(path)].push_back(
          DirChange{DirChange::Kind::kDelete, path, "", std::move(contents)});
    }
  }
  return s;
}

rocksdb::IOStatus PowerCutFileSystem::Truncate(
    const std::string& fname, size_t size, const rocksdb::IOOptions& options,
    rocksdb::IODebugContext* dbg) {
  const std::string path = Normal(fname);
  if (!UnderRoot(path)) return target()->Truncate(fname, size, options, dbg);
  absl::MutexLock lock(&mu_);
  rocksdb::IOStatus s = EventLocked("truncate", path, size);
  if (!s.ok()) return s;
  s = target()->Truncate(path, size, options, dbg);
  if (s.ok() && ModelLocked()) {
    auto it = files_.find(path);
    if (it != files_.end()) {
      it->second->written = size;
      it->second->durable = std::min<uint64_t>(it->second->durable, size);
    }
  }
  return s;
}

rocksdb::IOStatus PowerCutFileSystem::RenameFile(
    const std::string& src, const std::string& target_name,
    const rocksdb::IOOptions& options, rocksdb::IODebugContext* dbg) {
  const std::string from = Normal(src);
  const std::string to = Normal(target_name);
  if (!UnderRoot(from) && !UnderRoot(to)) {
    return target()->RenameFile(src, target_name, options, dbg);
  }
  if (UnderRoot(from) != UnderRoot(to)) {
    return Unsupported("renames across the root");
  }
  absl::MutexLock lock(&mu_);
  rocksdb::IOStatus s = EventLocked("rename", to);
  if (!s.ok()) return s;
  std::optional<std::string> previous;
  if (ModelLocked()) previous = DurableContentsLocked(to);
  s = target()->RenameFile(from, to, options, dbg);
  if (s.ok() && ModelLocked()) {
    auto moved = files_.extract(from);
    files_.erase(to);
    if (!moved.empty()) {
      moved.key() = to;
      moved.mapped()->name = to;
      files_.insert(std::move(moved));
    }
    // Recorded in the target's directory: RocksDB renames only within one.
    dir_changes_[Parent(to)].push_back(
        DirChange{DirChange::Kind::kRename, to, from, std::move(previous)});
  }
  return s;
}

rocksdb::IOStatus PowerCutFileSystem::LinkFile(
    const std::string& src, const std::string& target_name,
    const rocksdb::IOOptions& options, rocksdb::IODebugContext* dbg) {
  if (!UnderRoot(Normal(src)) && !UnderRoot(Normal(target_name))) {
    return target()->LinkFile(src, target_name, options, dbg);
  }
  return Unsupported("hard links");
}

rocksdb::IOStatus PowerCutFileSystem::Append(
    const std::shared_ptr<FileState>& state, rocksdb::FSWritableFile* target,
    const rocksdb::Slice& data, const rocksdb::IOOptions& options,
    rocksdb::IODebugContext* dbg) {
  absl::MutexLock lock(&mu_);
  rocksdb::IOStatus s = EventLocked("append", state->name, data.size());
  if (!s.ok()) return s;
  s = target->Append(data, options, dbg);
  if (s.ok() && ModelLocked()) state->written += data.size();
  return s;
}

rocksdb::IOStatus PowerCutFileSystem::TruncateFile(
    const std::shared_ptr<FileState>& state, rocksdb::FSWritableFile* target,
    uint64_t size, const rocksdb::IOOptions& options,
    rocksdb::IODebugContext* dbg) {
  absl::MutexLock lock(&mu_);
  rocksdb::IOStatus s = EventLocked("truncate", state->name, size);
  if (!s.ok()) return s;
  s = target->Truncate(size, options, dbg);
  if (s.ok() && ModelLocked()) {
    state->written = size;
    state->durable = std::min(state->durable, size);
  }
  return s;
}

rocksdb::IOStatus PowerCutFileSystem::SyncFile(
    const std::shared_ptr<FileState>& state) {
  absl::MutexLock lock(&mu_);
  rocksdb::IOStatus s = EventLocked("sync", state->name);
  if (!s.ok()) return s;
  if (ModelLocked()) state->durable = state->written;
  return rocksdb::IOStatus::OK();
}

rocksdb::IOStatus PowerCutFileSystem::SyncDirectory(const std::string& dir) {
  absl::MutexLock lock(&mu_);
  rocksdb::IOStatus s = EventLocked("dirsync", dir);
  if (!s.ok()) return s;
  if (ModelLocked()) dir_changes_.erase(dir);
  return rocksdb::IOStatus::OK();
}

}  // namespace sessiond::testing
