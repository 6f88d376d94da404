// Copyright sessiond authors. Licensed under the Apache License 2.0.
//
// The RocksDB layout of a sessiond data dir. Changing anything here changes
// the on-disk format: bump kFormatVersion and write a migration.
//
// Column families:
//
//   default      meta, one key each:
//                  "format_version"   -> decimal ASCII, kFormatVersion
//                  "applied_index"    -> 8-byte big-endian LogIndex: the last
//                                        entry applied to the `sessions` CF
//                  "applied_time_ms"  -> 8-byte big-endian int64: the
//                                        state machine's applied time
//                "applied_index" and "applied_time_ms" are written in the
//                same WriteBatch as the `sessions` changes they cover.
//
//   raft_log     key:   8-byte big-endian LogIndex (so iteration is in log
//                       order and DeleteRange removes an index range)
//                value: EncodeEntry(): 8-byte big-endian term, 1 byte
//                       EntryType, then the entry's data (rest of the value)
//
//   raft_state   "hard_state"     -> 24 bytes: term, vote, commit, each
//                                    8-byte big-endian
//                "snapshot_meta"  -> 16 bytes index, term (big-endian), then
//                                    EncodeConfState()
//                "conf_state"     -> EncodeConfState(): the membership a new
//                                    store was bootstrapped with (used while
//                                    there is no snapshot)
//                EncodeConfState(): 4-byte big-endian voter count, voters
//                (8 bytes each), 4-byte learner count, learners.
//
//   sessions     key:   the 32-byte SHA-256 of the token (raw bytes)
//                value: a serialized sessiond.v1.internal.StoredSession
//                       (proto/sessiond/v1/command.proto)
//
// Nothing else is stored. Raw tokens are never written anywhere.
#ifndef SESSIOND_STORAGE_KEYS_H_
#define SESSIOND_STORAGE_KEYS_H_

#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "common/strong_types.h"
#include "replication/core/types.h"

namespace sessiond::storage {

inline constexpr int kFormatVersion = 1;

inline constexpr char kDefaultCf[] = "default";
inline constexpr char kRaftLogCf[] = "raft_log";
inline constexpr char kRaftStateCf[] = "raft_state";
inline constexpr char kSessionsCf[] = "sessions";

// Keys in the default CF.
inline constexpr char kFormatVersionKey[] = "format_version";
inline constexpr char kAppliedIndexKey[] = "applied_index";
inline constexpr char kAppliedTimeKey[] = "applied_time_ms";

// Keys in the raft_state CF.
inline constexpr char kHardStateKey[] = "hard_state";
inline constexpr char kSnapshotMetaKey[] = "snapshot_meta";
inline constexpr char kConfStateKey[] = "conf_state";

// 8-byte big-endian encoding of unsigned integers (keys sort numerically).
std::string EncodeFixed64BE(uint64_t value);
// REQUIRES: bytes.size() >= 8. Reads the first 8 bytes.
uint64_t DecodeFixed64BE(std::string_view bytes);

// The raft_log key of `index`.
std::string LogKey(LogIndex index);
// DataLoss when `key` is not 8 bytes.
absl::StatusOr<LogIndex> DecodeLogKey(std::string_view key);

// The raft_log value of an entry (its index is the key, not repeated here).
std::string EncodeEntry(const replication::Entry& entry);
// DataLoss on a malformed value.
absl::StatusOr<replication::Entry> DecodeEntry(LogIndex index,
                                               std::string_view value);

std::string EncodeHardState(const replication::HardState& hard_state);
absl::StatusOr<replication::HardState> DecodeHardState(std::string_view value);

std::string EncodeConfState(const replication::ConfState& conf_state);
absl::StatusOr<replication::ConfState> DecodeConfState(std::string_view value);

std::string EncodeSnapshotMeta(const replication::SnapshotMeta& meta);
absl::StatusOr<replication::SnapshotMeta> DecodeSnapshotMeta(
    std::string_view value);

}  // namespace sessiond::storage

#endif  // SESSIOND_STORAGE_KEYS_H_
