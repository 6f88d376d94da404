// Copyright sessiond authors. Licensed under the Apache License 2.0.
#ifndef SESSIOND_TOOLS_SESSIONCTL_COMMANDS_H_
#define SESSIOND_TOOLS_SESSIONCTL_COMMANDS_H_

#include <atomic>
#include <cstdint>
#include <cstdio>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "sessiond/v1/admin.pb.h"
#include "sessiond/v1/session.pb.h"
#include "tools/sessionctl_connection.h"
#include "tools/sessionctl_output.h"

namespace sessiond::sessionctl {

// sessionctl's verbs (docs/OPERATIONS.md, "sessionctl"). Each prints its
// result to `out.stream` (tools/sessionctl_output.h), a table or (out.json)
// one JSON document, and returns the error to report otherwise: the
// server's status with what to do next added to its message, or one of
// sessionctl_errors.h's.

// `status`: every member as one node sees it.
absl::Status ShowStatus(Connection& cluster, const Output& out,
                        bool with_digests);

// `status --watch`: ShowStatus every `interval`, in place on a terminal,
// until `stop` is set or after `count` refreshes (0: no limit). A refresh
// that fails shows its error and the watch goes on. Returns OK when stopped,
// else the last refresh's status.
absl::Status WatchStatus(Connection& cluster, const Output& out,
                         bool with_digests, absl::Duration interval, int count,
                         const std::atomic<bool>& stop);

// What a verb that asks before it changes anything reads its answer from.
struct Confirmation {
  bool yes = false;  // --yes: no question (scripts)
  std::FILE* confirm_in = stdin;
  std::FILE* prompt = stderr;
};

absl::Status ListMembers(Connection& cluster, const Output& out);
absl::Status AddMember(Connection& cluster, const Output& out, uint64_t node_id,
                       const std::string& peer_address,
                       const std::string& client_address);
absl::Status PromoteMember(Connection& cluster, const Output& out,
                           uint64_t node_id);
// Shows the member and asks to type its id back (unless confirmation.yes);
// the leader refuses a removal that would leave no quorum it reaches.
absl::Status RemoveMember(Connection& cluster, const Output& out,
                          uint64_t node_id, const Confirmation& confirmation);
// `node_id` 0: the most caught-up other voter.
// AdminService.SetExpiryLeeway: the cluster's replicated expiry leeway.
absl::Status SetExpiryLeeway(Connection& cluster, const Output& out,
                             int64_t leeway_ms);
absl::Status TransferLeadership(Connection& cluster, const Output& out,
                                uint64_t node_id);

// `token` is a secret: it is never printed or put in a message.
absl::Status GetSession(Connection& cluster, const Output& out,
                        const std::string& token, v1::Consistency consistency);
absl::Status ListSessions(Connection& cluster, const Output& out,
                          const std::string& user_id, bool include_revoked);
// Exactly one of `token`, `session_id` is non-empty.
absl::Status RevokeSession(Connection& cluster, const Output& out,
                           const std::string& token,
                           const std::string& session_id,
                           const std::string& reason);
absl::Status RevokeUserSessions(Connection& cluster, const Output& out,
                                const std::string& user_id,
                                const std::string& keep_session_id,
                                const std::string& reason);
// The leader's live_sessions (ClusterStatus), saying which node answered.
absl::Status CountSessions(Connection& cluster, const Output& out);

// `backup DIR`: AdminService.Backup on the first reachable endpoint, or on
// node `node_id`'s client address (from ClusterStatus) when not 0. `dir` is
// an absolute path on that node's machine. Prints the manifest.
absl::Status TakeBackup(Connection& cluster, const Output& out,
                        const std::string& dir, uint64_t node_id);

// `restore-from BACKUP_DIR --data-dir NEW_DIR`, on the machine that holds
// the backup, without a cluster: checks the manifest's checksum, copies the
// backup (without its manifest) into NEW_DIR (new or empty), and prints the
// command line that starts a node on it and the next steps. An error with
// exit code 1 when the backup is damaged, 2 for bad paths.
absl::Status RestoreFrom(const Output& out, const std::string& backup_dir,
                         const std::string& data_dir);

// Undoable mass revocations (AdminService.Flush, BulkRevoke). Each asks the
// cluster for a preview (how many sessions, of how many users), prints it,
// and goes on only when the operator types that count back on `confirm_in`
// (or `yes`); otherwise nothing changes (FailedPrecondition, exit 1).
absl::Status FlushSessions(Connection& cluster, const Output& out,
                           const std::string& reason,
                           const Confirmation& confirmation);
// Every session created before `created_before_ms` (Unix ms), of the
// users `user_ids`, or carrying attribute `key` = `value`: one selector.
absl::Status BulkRevokeSessions(Connection& cluster, const Output& out,
                                const v1::SessionSelector& selector,
                                const std::string& reason,
                                const Confirmation& confirmation);
// Every session created before `before_ms`, in cluster time (the time
// sessions are stamped with). Cluster time runs behind the members' wall
// clocks after a whole-cluster outage, by its length D (and catches up by
// the slew), so a wall-clock TIME taken as it is takes, besides, the
// sessions created since the outage up to D after TIME: never fewer than
// meant (a breach response must not miss one), and undoable. Not moved by
// today's D: a TIME before the outage would then miss the sessions of the
// D before it. When the members' median skew is a second or more this says
// so on confirmation.prompt, with the TIME that names the cluster's clock.
absl::Status RevokeCreatedBefore(Connection& cluster, const Output& out,
                                 int64_t before_ms, const std::string& reason,
                                 const Confirmation& confirmation);
// Asks (on confirmation.prompt) to type `sessions` back: OK when typed (or
// confirmation.yes), FailedPrecondition "not confirmed ..." otherwise.
absl::Status AskForTheCount(const Confirmation& confirmation,
                            const std::string& what, uint64_t sessions);
// The same for any number: asks to type `named` (`expected`) back.
absl::Status AskToTypeBack(const Confirmation& confirmation,
                           const std::string& what, absl::string_view named,
                           uint64_t expected);
// `breaker status`: the expiry breaker's replicated state and, while open,
// how many sessions it holds back. `breaker resume`: shows that count, asks
// to type it back (or `yes`), then closes it.
absl::Status ShowExpiryBreaker(Connection& cluster, const Output& out);
absl::Status ResumeExpiry(Connection& cluster, const Output& out,
                          const Confirmation& confirmation);
// `flushes list`: every retained flush and bulk revocation.
absl::Status ListFlushes(Connection& cluster, const Output& out);
// `restore ID`: undoes flush or bulk revocation ID.
// Shows the revocation and asks to type its id back (unless
// confirmation.yes).
absl::Status RestoreFlush(Connection& cluster, const Output& out, uint64_t id,
                          const Confirmation& confirmation);

// The signing key ring (tools/sessionctl_keys.cc; docs/OPERATIONS.md,
// "Signing keys and JWT tokens"). `keys list`: every key with its state, times,
// live sessions and, for a staged key, when it may be activated.
absl::Status ListSigningKeys(Connection& cluster, const Output& out);
// `keys stage [--bootstrap]`: a new key, and when it may be activated.
absl::Status StageSigningKey(Connection& cluster, const Output& out,
                             bool bootstrap);
// `keys activate KID`: KID signs from now on; the key it replaced retires.
absl::Status ActivateSigningKey(Connection& cluster, const Output& out,
                                const std::string& kid);
// `keys retire KID`: refused (exit 1, the count in the message) while KID
// signed live sessions; with `force`, shows that count, asks to type it back
// (or confirmation.yes) and retires KID with it.
absl::Status RetireSigningKey(Connection& cluster, const Output& out,
                              const std::string& kid, bool force,
                              const Confirmation& confirmation);
// `keys jwks`: the JWKS document as served, and its max-age.
absl::Status ShowJwks(Connection& cluster, const Output& out);
// The audit log (tools/sessionctl_audit.cc; docs/OPERATIONS.md, "Audit").
struct AuditListOptions {
  uint64_t after = 0;   // entries with seq > after
  uint32_t limit = 0;   // at most this many (0: every one)
  bool follow = false;  // then keep printing new ones until interrupted
};
// `audit`: a table (SEQ TIME IDENTITY PEER METHOD CODE DURATION), or with
// --json one document {"entries": [...], "next_after_seq", "oldest_seq",
// "dropped_over_limit", "endpoint"}; with follow, new entries as they come
// (with --json, one JSON object a line).
absl::Status ListAudit(Connection& cluster, const Output& out,
                       const AuditListOptions& options);
// `audit export`: every entry with seq > after, one JSON object a line
// (the .proto's field names), paging through ListAudit to the end.
// DataLoss when entries after `after` were dropped before they could be
// exported (the archive would have a hole).
absl::Status ExportAudit(Connection& cluster, std::FILE* stream,
                         uint64_t after);
// What a selector takes, in words ("every live session", "sessions created
// before 2026-12-01 10:00:00Z", ...).
std::string DescribeSelector(const v1::SessionSelector& selector);
// A time argument: Unix ms, or RFC 3339 ("2026-12-01T10:00:00Z").
absl::StatusOr<int64_t> ParseTimeMs(const std::string& text);

// Prints `status` as sessionctl reports an error: "sessionctl: MESSAGE" on
// stderr, and with out.json also {"error": {...}} on out.stream.
void PrintError(const Output& out, const absl::Status& status);
// The {"error": {...}} document alone, on one line (the streaming verbs).
void PrintErrorLine(const Output& out, const absl::Status& status);

// The `status` problem line for a member whose wall clock is more than a
// minute off the members' median (it signs no JWT then); none otherwise,
// and none while the member does not know the median.
std::optional<std::string> WallClockProblem(const v1::MemberStatus& m);

}  // namespace sessiond::sessionctl

#endif  // SESSIOND_TOOLS_SESSIONCTL_COMMANDS_H_
