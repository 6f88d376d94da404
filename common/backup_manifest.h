// Copyright sessiond authors. Licensed under the Apache License 2.0.
//
// The manifest of a backup (AdminService.Backup, `sessionctl backup`,
// `sessionctl restore-from`; docs/OPERATIONS.md, "Backups and restore"): a
// JSON file, kBackupManifestFile, at the top of the backup folder, next to
// the files it describes (a RocksDB checkpoint and snap/).
//
// The checksum is SHA-256 over every file of the folder but the manifest,
// in byte order of their relative paths ('/'-separated): for each, the
// path, a NUL byte, its size as 8 bytes big-endian, then its bytes. A file
// renamed, added, removed, cut short or changed changes it.
//
// Its own library (sessiond_backup_manifest), not sessiond_common: it needs
// OpenSSL and nlohmann-json, and sessionctl uses it without the server.
#ifndef SESSIOND_COMMON_BACKUP_MANIFEST_H_
#define SESSIOND_COMMON_BACKUP_MANIFEST_H_

#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace sessiond {

inline constexpr char kBackupManifestFile[] = "MANIFEST.sessiond.json";
// Held in the backup folder while a backup writes into it (created
// exclusively: one writer per folder), removed once the manifest is written.
inline constexpr char kBackupLockFile[] = ".sessiond-backup.lock";
// The folder mkfs makes at the root of a file system: a backup folder that
// is a mount point holds it. It is no part of the backup (never listed,
// copied or removed), and a folder holding only it counts as empty.
inline constexpr char kLostAndFound[] = "lost+found";
inline constexpr int kBackupFormatVersion = 1;

struct BackupManifest {
  int format_version = kBackupFormatVersion;
  uint64_t cluster_id = 0;
  uint64_t node_id = 0;
  // The state the backup holds: applied through this entry, and its log
  // ends there too (a restored node starts from exactly this state).
  uint64_t applied_index = 0;
  uint64_t applied_term = 0;
  uint64_t session_count = 0;
  std::string sessiond_version;
  int64_t created_at_ms = 0;  // Unix time
  uint64_t file_count = 0;
  uint64_t total_bytes = 0;
  std::string sha256;  // hex, as described above
};

// The manifest as JSON text (indented), and back. InvalidArgument on a
// malformed document or an unknown format_version.
std::string BackupManifestToJson(const BackupManifest& manifest);
absl::StatusOr<BackupManifest> BackupManifestFromJson(std::string_view text);

// The regular files under `dir`, as relative '/'-separated paths in byte
// order, without the manifest and the lock. Internal when `dir` cannot be
// listed.
absl::StatusOr<std::vector<std::string>> ListBackupFiles(
    const std::string& dir);

struct BackupDigest {
  std::string sha256;  // hex
  uint64_t total_bytes = 0;
};
// The checksum above over `files` (relative to `dir`). Internal when one
// cannot be read.
absl::StatusOr<BackupDigest> DigestBackupFiles(
    const std::string& dir, const std::vector<std::string>& files);

// fsync of `files` (relative to `dir`), of every folder holding one, and of
// `dir`: what a backup or a restore wrote survives a power cut before it is
// reported done. Internal naming the path on failure.
absl::Status SyncBackupFiles(const std::string& dir,
                             const std::vector<std::string>& files);
// fsync of one folder: an entry created or renamed in it stays.
absl::Status SyncFolder(const std::string& dir);
// Creates `dir` and its missing ancestors, each ancestor made durable in
// its parent (`dir`'s own entry is not: the caller syncs `dir`'s parent once
// `dir` is complete). Whether `dir` was created; Internal on failure.
absl::StatusOr<bool> CreateFolders(const std::string& dir);

// `dir` without trailing separators ("/b/x/" is "/b/x"; "/" stays).
std::string WithoutTrailingSlash(const std::string& dir);

// Whether `path` is `folder` or lies inside it, both absolute and
// canonical (std::filesystem::weakly_canonical). A name that merely starts
// with "..", like "/d/..x", is inside "/d".
bool PathWithin(const std::filesystem::path& path,
                const std::filesystem::path& folder);

}  // namespace sessiond

#endif  // SESSIOND_COMMON_BACKUP_MANIFEST_H_
