// Copyright sessiond authors. Licensed under the Apache License 2.0.
#include "common/backup_manifest.h"

#include <fcntl.h>
#include <openssl/evp.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <memory>
#include <set>
#include <system_error>
#include <type_traits>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"

namespace sessiond {

std::string BackupManifestToJson(const BackupManifest& m) {
  const nlohmann::json doc = {
      {"format_version", m.format_version},
      {"cluster_id", m.cluster_id},
      {"node_id", m.node_id},
      {"applied_index", m.applied_index},
      {"applied_term", m.applied_term},
      {"session_count", m.session_count},
      {"sessiond_version", m.sessiond_version},
      {"created_at_ms", m.created_at_ms},
      {"file_count", m.file_count},
      {"total_bytes", m.total_bytes},
      {"sha256", m.sha256},
  };
  return doc.dump(2) + "\n";
}

absl::StatusOr<BackupManifest> BackupManifestFromJson(std::string_view text) {
  const nlohmann::json doc =
      nlohmann::json::parse(text.begin(), text.end(), nullptr,
                            /*allow_exceptions=*/false);
  if (!doc.is_object()) {
    return absl::InvalidArgumentError("the manifest is not a JSON object");
  }
  BackupManifest m;
  std::string missing;
  auto get = [&doc, &missing](const char* key, auto* out) {
    auto it = doc.find(key);
    using T = std::remove_pointer_t<decltype(out)>;
    if (it == doc.end() ||
        (std::is_same_v<T, std::string> ? !it->is_string()
                                        : !it->is_number_integer())) {
      if (missing.empty()) missing = key;
      return;
    }
    *out = it->template get<T>();
  };
  get("format_version", &m.format_version);
  get("cluster_id", &m.cluster_id);
  get("node_id", &m.node_id);
  get("applied_index", &m.applied_index);
  get("applied_term", &m.applied_term);
  get("session_count", &m.session_count);
  get("sessiond_version", &m.sessiond_version);
  get("created_at_ms", &m.created_at_ms);
  get("file_count", &m.file_count);
  get("total_bytes", &m.total_bytes);
  get("sha256", &m.sha256);
  if (!missing.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("the manifest lacks a valid '", missing, "'"));
  }
  if (m.format_version != kBackupFormatVersion) {
    return absl::InvalidArgumentError(
        absl::StrCat("the manifest has format_version ", m.format_version,
                     "; this sessiond reads version ", kBackupFormatVersion));
  }
  return m;
}

absl::StatusOr<std::vector<std::string>> ListBackupFiles(
    const std::string& dir) {
  namespace fs = std::filesystem;
  std::error_code ec;
  std::vector<std::string> files;
  for (fs::recursive_directory_iterator it(dir, ec), end; !ec && it != end;
       it.increment(ec)) {
    if (it.depth() == 0 && it->path().filename() == kLostAndFound) {
      it.disable_recursion_pending();  // root's own, mode 0700
      continue;
    }
    if (!it->is_regular_file(ec)) continue;
    const std::string name =
        it->path().lexically_relative(dir).generic_string();
    if (name != kBackupManifestFile && name != kBackupLockFile) {
      files.push_back(name);
    }
  }
  if (ec) {
    return absl::InternalError(
        absl::StrCat("cannot list ", dir, ": ", ec.message()));
  }
  std::sort(files.begin(), files.end());
  return files;
}

absl::StatusOr<BackupDigest> DigestBackupFiles(
    const std::string& dir, const std::vector<std::string>& files) {
  std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> ctx(EVP_MD_CTX_new(),
                                                              &EVP_MD_CTX_free);
  if (ctx == nullptr ||
      EVP_DigestInit_ex(ctx.get(), EVP_sha256(), nullptr) != 1) {
    return absl::InternalError("cannot initialise SHA-256");
  }
  BackupDigest digest;
  std::string buffer(1 << 20, '\0');
  for (const std::string& name : files) {
    const std::string path = absl::StrCat(dir, "/", name);
    std::error_code ec;
    const uint64_t size = std::filesystem::file_size(path, ec);
    if (ec) {
      return absl::InternalError(
          absl::StrCat("cannot read ", path, ": ", ec.message()));
    }
    unsigned char header[8];
    for (int i = 0; i < 8; ++i) header[i] = (size >> (56 - 8 * i)) & 0xff;
    EVP_DigestUpdate(ctx.get(), name.data(), name.size());
    EVP_DigestUpdate(ctx.get(), "\0", 1);
    EVP_DigestUpdate(ctx.get(), header, sizeof(header));
    std::unique_ptr<FILE, decltype(&std::fclose)> file(
        std::fopen(path.c_str(), "rbe"), &std::fclose);
    if (file == nullptr) {
      return absl::InternalError(absl::StrCat("cannot open ", path));
    }
    uint64_t read = 0;
    while (size_t n = std::fread(buffer.data(), 1, buffer.size(), file.get())) {
      EVP_DigestUpdate(ctx.get(), buffer.data(), n);
      read += n;
    }
    if (std::ferror(file.get()) || read != size) {
      return absl::InternalError(absl::StrCat("cannot read ", path, " (", read,
                                              " of ", size, " bytes)"));
    }
    digest.total_bytes += size;
  }
  unsigned char out[EVP_MAX_MD_SIZE];
  unsigned int out_len = 0;
  if (EVP_DigestFinal_ex(ctx.get(), out, &out_len) != 1) {
    return absl::InternalError("cannot finish SHA-256");
  }
  digest.sha256 = absl::BytesToHexString(
      absl::string_view(reinterpret_cast<const char*>(out), out_len));
  return digest;
}

namespace {

absl::Status SyncPath(const std::string& path, int flags) {
  const int fd = ::open(path.c_str(), flags | O_CLOEXEC);
  if (fd < 0) {
    return absl::InternalError(absl::StrCat(
        "cannot open ", path, " to fsync it: ", std::strerror(errno)));
  }
  const int synced = ::fsync(fd);
  const int error = errno;
  ::close(fd);
  if (synced != 0) {
    return absl::InternalError(
        absl::StrCat("fsync of ", path, ": ", std::strerror(error)));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status SyncFolder(const std::string& dir) {
  return SyncPath(dir, O_RDONLY | O_DIRECTORY);
}

absl::Status SyncBackupFiles(const std::string& dir,
                             const std::vector<std::string>& files) {
  namespace fs = std::filesystem;
  std::set<std::string> folders = {dir};
  for (const std::string& name : files) {
    const fs::path path = fs::path(dir) / name;
    if (absl::Status s = SyncPath(path.string(), O_RDONLY); !s.ok()) return s;
    for (fs::path folder = path.parent_path();
         folder.string().size() > dir.size(); folder = folder.parent_path()) {
      folders.insert(folder.string());
    }
  }
  for (const std::string& folder : folders) {
    if (absl::Status s = SyncFolder(folder); !s.ok()) return s;
  }
  return absl::OkStatus();
}

absl::StatusOr<bool> CreateFolders(const std::string& dir) {
  namespace fs = std::filesystem;
  const fs::path target(dir);
  std::vector<fs::path> missing;  // `dir` first, then its missing parents
  std::error_code ec;
  for (fs::path p = target; !p.empty() && !fs::exists(p, ec);
       p = p.parent_path()) {
    missing.push_back(p);
    if (p == p.parent_path()) break;
  }
  for (auto it = missing.rbegin(); it != missing.rend(); ++it) {
    // False when another process made it meanwhile: then not ours.
    const bool created = fs::create_directory(*it, ec);
    if (ec) {
      return absl::InternalError(
          absl::StrCat("cannot create ", it->string(), ": ", ec.message()));
    }
    if (*it == target) return created;
    if (absl::Status s = SyncFolder(it->parent_path().string()); !s.ok()) {
      return s;
    }
  }
  return false;
}

std::string WithoutTrailingSlash(const std::string& dir) {
  std::string out = dir;
  while (out.size() > 1 && out.back() == '/') out.pop_back();
  return out;
}

bool PathWithin(const std::filesystem::path& path,
                const std::filesystem::path& folder) {
  // Inside unless the way there from `folder` starts by going up.
  const std::filesystem::path relative = path.lexically_relative(folder);
  return !relative.empty() && *relative.begin() != "..";
}

}  // namespace sessiond
