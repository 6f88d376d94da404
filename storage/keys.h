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
//                  "applied_term"     -> 8-byte big-endian Term of that
//                                        entry
//                  "applied_conf"     -> EncodeConfState(): the membership
//                                        as of the applied index
//                  "cluster_state"    -> a sessiond.v1.internal.ClusterState
//                                        (member addresses, settings)
//                  "identity"         -> a sessiond.v1.internal.Identity:
//                                        the cluster and member this data
//                                        dir belongs to (written once)
//                  "revocation/" + 8-byte big-endian id
//                                     -> a sessiond.v1.Revocation: a
//                                        retained flush or bulk revocation
//                                        (storage/revocations.h)
//                  "create_key", "create_request/" + request key
//                                     -> retryable creates' key and dedupe
//                                        records (storage/create_requests.h)
//                  "audit/" + 8-byte big-endian seq
//                                     -> a sessiond.v1.AuditEntry: one kept
//                                        entry of the audit log
//                                        (storage/audit_log.h)
//                  "audit_meta"       -> 16 bytes: the audit log's next seq,
//                                        then its dropped_over_limit, each
//                                        8-byte big-endian (absent until the
//                                        first entry)
//                The applied_*, "cluster_state", "revocation/", create and
//                audit keys are written in the same WriteBatch as the
//                `sessions` changes they cover.
//
//   raft_log     key:   8-byte big-endian LogIndex (so iteration is in log
//                       order and DeleteRange removes an index range)
//                value: EncodeEntry(): 8-byte big-endian term, 1 byte
//                       EntryType, then the entry's data (rest of the value)
//
//   raft_state   "hard_state"     -> 24 bytes: term, vote, commit, each
//                                    8-byte big-endian
//                "snapshot_meta"  -> 16 bytes index, term (big-endian), then
//                                    EncodeConfState(): the latest snapshot
//                "snapshot_data"  -> its Snapshot::data (a SnapshotRef to an
//                                    image file in snap/, see
//                                    storage/snapshot_files.h)
//                "truncated"      -> 16 bytes index, term (big-endian): the
//                                    last entry dropped from raft_log (at or
//                                    below the snapshot's index). Absent in
//                                    data dirs of format 1 before it existed:
//                                    then the snapshot's index and term.
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
#include <utility>

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
inline constexpr char kAppliedTermKey[] = "applied_term";
inline constexpr char kAppliedConfKey[] = "applied_conf";
inline constexpr char kClusterStateKey[] = "cluster_state";
inline constexpr char kIdentityKey[] = "identity";
// Set (to the applied index, 8 bytes big-endian) in a backup's copy of the
// data dir by SealCheckpoint: a dir restored from it starts only with
// --force_new_cluster, whose first start deletes it.
inline constexpr char kRestoredBackupKey[] = "restored_backup";
// Set (to why, in words) by a node that learned from its leader that it was
// removed from the cluster: it starts again only with --force_new_cluster,
// whose first start deletes it.
inline constexpr char kRemovedFromClusterKey[] = "removed_from_cluster";
// Set by a start with --force_new_cluster, deleted by a start without it:
// present at a start with the flag, the flag was left on since, and the
// start is refused if members were added back meanwhile.
inline constexpr char kForcedNewClusterKey[] = "forced_new_cluster";

// Keys in the raft_state CF.
inline constexpr char kHardStateKey[] = "hard_state";
inline constexpr char kSnapshotMetaKey[] = "snapshot_meta";
inline constexpr char kConfStateKey[] = "conf_state";
inline constexpr char kSnapshotDataKey[] = "snapshot_data";
inline constexpr char kTruncatedKey[] = "truncated";

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

// (index, term) as 16 bytes, big-endian.
std::string EncodeIndexTerm(LogIndex index, Term term);
absl::StatusOr<std::pair<LogIndex, Term>> DecodeIndexTerm(
    std::string_view value);

std::string EncodeSnapshotMeta(const replication::SnapshotMeta& meta);
absl::StatusOr<replication::SnapshotMeta> DecodeSnapshotMeta(
    std::string_view value);

}  // namespace sessiond::storage

#endif  // SESSIOND_STORAGE_KEYS_H_
