// Copyright sessiond authors. Licensed under the Apache License 2.0.
#include "tools/sessionctl_commands.h"

#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <optional>
#include <sstream>
#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "common/backup_manifest.h"
#include "common/fault_point.h"
#include "common/read_file.h"
#include "common/status_macros.h"
#include "nlohmann/json.hpp"
#include "sessiond/v1/admin.pb.h"
#include "tools/cluster_probe.h"
#include "tools/sessionctl_errors.h"
#include "tools/sessionctl_explain.h"
#include "tools/sessionctl_output.h"

namespace sessiond::sessionctl {
namespace {

using nlohmann::json;

std::string Ids(const google::protobuf::RepeatedField<uint64_t>& ids) {
  return ids.empty() ? "none" : absl::StrJoin(ids, ", ");
}

std::string Dash(uint64_t value, bool known) {
  return known ? absl::StrCat(value) : "-";
}

std::string StateName(v1::SessionState state) {
  switch (state) {
    case v1::SESSION_STATE_ACTIVE:
      return "active";
    case v1::SESSION_STATE_REVOKED:
      return "revoked";
    default:
      return "unspecified";
  }
}

std::string Attributes(const v1::Session& s) {
  std::vector<std::string> parts;
  for (const auto& [key, value] : s.attributes()) {
    parts.push_back(IsUtf8(value) ? absl::StrCat(key, "=", value)
                                  : absl::StrCat(key, "=<", value.size(),
                                                 " bytes, not UTF-8>"));
  }
  std::sort(parts.begin(), parts.end());
  return parts.empty() ? "none" : absl::StrJoin(parts, ", ");
}

// The status document of --json (docs/OPERATIONS.md lists its fields).
json StatusJson(const Connection::StatusAnswer& answer) {
  json doc = MessageToJson(answer.response);
  doc["cluster_id"] = HexId(answer.response.cluster_id());
  doc["endpoint"] = answer.endpoint;
  return doc;
}

std::string StatusText(const Connection::StatusAnswer& answer) {
  const v1::ClusterStatusResponse& r = answer.response;
  std::string text = absl::StrCat("cluster ", HexId(r.cluster_id()), ", ");
  const v1::MemberStatus* leader = tools::LeaderOf(r);
  if (r.leader() == 0) {
    absl::StrAppend(&text, "no leader known (term ", r.term(), ")");
  } else {
    absl::StrAppend(&text, "leader node ", r.leader(), " (term ", r.term(),
                    ")");
  }
  absl::StrAppend(&text, "; answered by node ", r.answered_by(), " at ",
                  answer.endpoint);
  if (r.expiry_leeway_ms() != 0) {
    absl::StrAppend(&text, "; expiry leeway ", r.expiry_leeway_ms(), " ms");
  }
  text += "\n";
  Table table({"NODE", "ROLE", "VOTER", "TERM", "COMMIT", "APPLIED", "LAG",
               "SKEW", "SESSIONS", "DATA", "DISK FREE", "DISK", "CLIENT"});
  std::vector<std::string> problems;
  for (const v1::MemberStatus& m : r.members()) {
    const bool up = m.reachable();
    std::string disk = "-";
    if (up) {
      disk = m.disk_full()                ? "FULL"
             : m.disk_condition().empty() ? "ok"
                                          : "WARN";
    }
    table.AddRow({absl::StrCat(m.node_id()), m.role().empty() ? "-" : m.role(),
                  m.voter() ? "yes" : "no", Dash(m.term(), up),
                  Dash(m.commit_index(), up), Dash(m.applied_index(), up),
                  Dash(m.lag(), up),
                  up ? FormatDurationMs(m.clock_skew_ms()) : "-",
                  Dash(m.live_sessions(), up),
                  up ? FormatBytes(m.data_dir_bytes()) : "-",
                  up ? FormatBytes(m.disk_free_bytes()) : "-", disk,
                  m.client_address().empty() ? "-" : m.client_address()});
    if (!up) {
      problems.push_back(absl::StrCat("node ", m.node_id(), " unreachable: ",
                                      m.error().empty() ? "-" : m.error()));
    }
    if (up && m.disk_full()) {
      problems.push_back(absl::StrCat(
          "node ", m.node_id(), " data disk full (",
          FormatBytes(m.disk_free_bytes()), " free): ", m.disk_condition(),
          " -- free space on it; writes resume by themselves"));
    } else if (up && !m.disk_condition().empty()) {
      problems.push_back(
          absl::StrCat("node ", m.node_id(), " disk: ", m.disk_condition()));
    }
    if (up && !m.has_kek() && !m.active_kid().empty()) {
      problems.push_back(absl::StrCat(
          "node ", m.node_id(),
          " has no --kek_file: it cannot sign JWT tokens nor stage keys "
          "(give every node the cluster's key-encryption key file)"));
    } else if (up && !m.kek_id().empty() && !m.active_key_kek_id().empty() &&
               m.kek_id() != m.active_key_kek_id()) {
      problems.push_back(absl::StrCat(
          "node ", m.node_id(), " has key-encryption key ", m.kek_id(),
          ", the active key is sealed under ", m.active_key_kek_id(),
          ": it cannot sign the JWT tokens of the creates it serves (give "
          "every node the cluster's key-encryption key file)"));
    }
    if (up && m.expiry_breaker().open() && !r.expiry_breaker().open()) {
      problems.push_back(absl::StrCat(
          "node ", m.node_id(), " has applied an open expiry breaker (id ",
          m.expiry_breaker().id(), ") the answering node has not yet"));
    }
    if (up) {
      if (std::optional<std::string> p = WallClockProblem(m)) {
        problems.push_back(*std::move(p));
      }
    }
    for (const v1::LogoutAlert& alert : m.logout_alerts()) {
      problems.push_back(absl::StrCat(
          "node ", m.node_id(), " logout alert ", alert.kind(), " (for ",
          FormatDurationMs(alert.active_ms()), "): ", alert.detail()));
    }
  }
  text += table.Render();
  for (const v1::MemberStatus& m : r.members()) {
    if (m.node_id() == r.answered_by() && !m.active_kid().empty()) {
      absl::StrAppend(&text, "signing key: ", m.active_kid(),
                      " (sessionctl keys list)\n");
    }
  }
  if (r.expiry_breaker().open()) {
    problems.push_back(absl::StrCat(
        "expiry breaker OPEN (id ", r.expiry_breaker().id(),
        "): no session expires; ", r.expiry_breaker().reason(),
        " -- `sessionctl breaker status`, then `sessionctl breaker resume`"));
  }
  if (leader == nullptr) {
    problems.push_back(
        "no reachable leader: writes fail until a majority of the voters "
        "reach each other (validations are still answered)");
  }
  if (!problems.empty()) {
    absl::StrAppend(&text, "\nproblems:\n  ", absl::StrJoin(problems, "\n  "),
                    "\n");
  }
  return text;
}

json MembershipJson(const google::protobuf::RepeatedField<uint64_t>& voters,
                    const google::protobuf::RepeatedField<uint64_t>& learners,
                    const std::string& endpoint) {
  return json{
      {"voters", json(std::vector<uint64_t>(voters.begin(), voters.end()))},
      {"learners",
       json(std::vector<uint64_t>(learners.begin(), learners.end()))},
      {"endpoint", endpoint}};
}

std::string MembershipText(
    const google::protobuf::RepeatedField<uint64_t>& voters,
    const google::protobuf::RepeatedField<uint64_t>& learners) {
  return absl::StrCat("voters: ", Ids(voters), "; learners: ", Ids(learners));
}

// ClusterStatus for `what`, its error explained.
absl::StatusOr<Connection::StatusAnswer> AskStatus(Connection& cluster,
                                                   absl::string_view what,
                                                   bool with_digests = false) {
  absl::StatusOr<Connection::StatusAnswer> answer =
      cluster.ClusterStatus(with_digests);
  if (!answer.ok()) {
    return Explain(answer.status(), what, Kind::kRead, cluster.timeout());
  }
  return answer;
}

// AddMember, PromoteMember or RemoveMember through `rpc`: prints the
// membership after the change, `done` and `next`.
template <typename Request, typename Response>
absl::Status ChangeMembership(
    Connection& cluster, const Output& out, const Request& request,
    grpc::Status (v1::AdminService::Stub::*rpc)(grpc::ClientContext*,
                                                const Request&, Response*),
    const std::string& what, absl::string_view unknown, const std::string& done,
    const std::string& next) {
  Response response;
  std::string endpoint;
  const absl::Status s = cluster.AdminChange(
      [&](v1::AdminService::Stub& stub, grpc::ClientContext& context) {
        return (stub.*rpc)(&context, request, &response);
      },
      &endpoint);
  if (!s.ok()) {
    return Explain(s, what, Kind::kIdempotentWrite, cluster.timeout(), unknown);
  }
  return Print(
      out, MembershipJson(response.voters(), response.learners(), endpoint),
      absl::StrCat(done, " (",
                   MembershipText(response.voters(), response.learners()),
                   ").\n", next));
}

// The --json document of an error (docs/OPERATIONS.md).
json ErrorJson(const absl::Status& status) {
  return json{{"error",
               {{"code", absl::StatusCodeToString(status.code())},
                {"message", std::string(status.message())},
                {"exit_code", ExitCodeFor(status)}}}};
}

// The manifest's own JSON, with the cluster id as sessionctl prints it.
json ManifestJson(const BackupManifest& m, const std::string& dir) {
  json doc = json::parse(BackupManifestToJson(m));
  doc["cluster_id"] = HexId(m.cluster_id);
  doc["dir"] = dir;
  return doc;
}

std::string ManifestText(const BackupManifest& m, const std::string& dir) {
  Table t({"dir", dir});
  t.AddRow({"cluster", HexId(m.cluster_id)});
  t.AddRow({"node", absl::StrCat(m.node_id)});
  t.AddRow({"applied index",
            absl::StrCat(m.applied_index, " (term ", m.applied_term, ")")});
  t.AddRow({"sessions", absl::StrCat(m.session_count)});
  t.AddRow({"files",
            absl::StrCat(m.file_count, " (", FormatBytes(m.total_bytes), ")")});
  t.AddRow({"sha256", m.sha256});
  t.AddRow({"sessiond", m.sessiond_version});
  t.AddRow({"created", FormatTimeMs(m.created_at_ms, absl::Now())});
  return t.Render();
}

}  // namespace

absl::Status TakeBackup(Connection& cluster, const Output& out,
                        const std::string& dir, uint64_t node_id) {
  if (dir.empty() || dir[0] != '/') {
    return UsageError(absl::StrCat(
        "backup: DIR '", dir,
        "' must be an absolute path (it is written on the node's machine)"));
  }
  std::string endpoint;
  if (node_id != 0) {
    absl::StatusOr<Connection::StatusAnswer> answer =
        AskStatus(cluster, "backup");
    if (!answer.ok()) return answer.status();
    const v1::MemberStatus* member = tools::MemberOf(answer->response, node_id);
    if (member == nullptr || member->client_address().empty()) {
      return UsageError(absl::StrCat("backup --node ", node_id,
                                     ": no member with that id and a known "
                                     "client address (`sessionctl members "
                                     "list`)"));
    }
    endpoint = member->client_address();
  } else {
    absl::StatusOr<std::string> reached = cluster.Reach();
    if (!reached.ok()) return reached.status();
    endpoint = *reached;
  }
  v1::BackupRequest request;
  request.set_dir(dir);
  request.set_node_id(node_id);
  v1::BackupResponse response;
  const absl::Status s = cluster.AdminCallTo(
      endpoint, [&](v1::AdminService::Stub& stub, grpc::ClientContext& c) {
        return stub.Backup(&c, request, &response);
      });
  if (!s.ok()) {
    absl::Status explained =
        Explain(s, absl::StrCat("backup (at ", endpoint, ")"), Kind::kRead,
                cluster.timeout());
    if (absl::IsFailedPrecondition(s) || absl::IsDeadlineExceeded(s)) {
      explained = absl::Status(
          explained.code(),
          absl::StrCat(explained.message(),
                       "\nA failed backup leaves no folder; a backup still "
                       "running when --timeout passed finishes on the node. "
                       "Use a new DIR (and a longer --timeout for a big "
                       "store)."));
    }
    return explained;
  }
  BackupManifest m;
  m.format_version = static_cast<int>(response.format_version());
  m.cluster_id = response.cluster_id();
  m.node_id = response.node_id();
  m.applied_index = response.applied_index();
  m.applied_term = response.applied_term();
  m.session_count = response.session_count();
  m.sessiond_version = response.sessiond_version();
  m.created_at_ms = response.created_at_ms();
  m.file_count = response.file_count();
  m.total_bytes = response.total_bytes();
  m.sha256 = response.sha256();
  json doc = ManifestJson(m, dir);
  doc["endpoint"] = endpoint;
  return Print(
      out, doc,
      absl::StrCat("backup of node ", m.node_id, " written on its machine (",
                   endpoint, ")\n", ManifestText(m, dir),
                   "Restore: copy the folder to the new node's machine, then "
                   "`sessionctl restore-from ",
                   dir,
                   " --data-dir NEW_DIR` (docs/OPERATIONS.md, \"Backups and "
                   "restore\").\n"));
}

absl::Status RestoreFrom(const Output& out, const std::string& backup_dir,
                         const std::string& data_dir) {
  namespace fs = std::filesystem;
  std::error_code ec;
  const std::string manifest_path =
      (fs::path(backup_dir) / kBackupManifestFile).string();
  absl::StatusOr<std::string> text = ReadWholeFile(manifest_path);
  if (!text.ok()) {
    // Told apart: a backup that never finished (its node died or the disk
    // filled mid-way) holds its lock and no manifest, and a manifest that
    // cannot be read (permissions) is not a missing one.
    if (fs::exists(fs::path(backup_dir) / kBackupLockFile, ec)) {
      return UsageError(absl::StrCat("restore-from: the backup in ", backup_dir,
                                     " never finished (it holds ",
                                     kBackupLockFile,
                                     " and no manifest): use another backup"));
    }
    if (fs::exists(manifest_path, ec)) {
      return UsageError(
          absl::StrCat("restore-from: ", text.status().message()));
    }
    return UsageError(absl::StrCat("restore-from: ", backup_dir,
                                   " is not a sessiond backup (no ",
                                   kBackupManifestFile, ")"));
  }
  absl::StatusOr<BackupManifest> m = BackupManifestFromJson(*text);
  if (!m.ok()) {
    return absl::DataLossError(absl::StrCat("restore-from: ", manifest_path,
                                            ": ", m.status().message()));
  }
  if (fs::exists(data_dir, ec) &&
      (!fs::is_directory(data_dir, ec) || !fs::is_empty(data_dir, ec))) {
    return UsageError(absl::StrCat(
        "restore-from: --data-dir ", data_dir,
        " exists and is not an empty folder; restore into a new one"));
  }
  // Copied into a temporary sibling, then renamed: a NEW_DIR that exists is
  // always complete. Symbolic links resolved: the rename replaces the
  // folder a link names, not the link (the data would land beside the
  // volume the link points to). A trailing slash would put the temporary
  // folder inside the target.
  const fs::path target = fs::weakly_canonical(
      fs::absolute(WithoutTrailingSlash(data_dir), ec), ec);
  const fs::path tmp = target.string() + ".restoring";
  const fs::path backup = fs::weakly_canonical(fs::absolute(backup_dir), ec);
  // The temporary folder is emptied first, and the new data dir then
  // written to: neither may hold the backup, nor lie inside it.
  for (const fs::path& written : {target, tmp}) {
    if (PathWithin(written, backup) || PathWithin(backup, written)) {
      return UsageError(
          absl::StrCat("restore-from: --data-dir ", data_dir, " (",
                       written.string(), ") and the backup ", backup.string(),
                       " overlap; restore into a folder outside the backup"));
    }
  }
  absl::StatusOr<std::vector<std::string>> files = ListBackupFiles(backup_dir);
  if (!files.ok()) return files.status();
  absl::StatusOr<BackupDigest> digest = DigestBackupFiles(backup_dir, *files);
  if (!digest.ok()) {
    return absl::DataLossError(
        absl::StrCat("restore-from: ", digest.status().message()));
  }
  // What a checked backup's files (or their copy) must add up to.
  const auto matches = [&m](const BackupDigest& d) {
    return d.sha256 == m->sha256 && d.total_bytes == m->total_bytes;
  };
  if (!matches(*digest) || files->size() != m->file_count) {
    return absl::DataLossError(absl::StrCat(
        "restore-from: the backup in ", backup_dir,
        " is damaged: its files do not match its manifest (", files->size(),
        " files, ", digest->total_bytes, " bytes, sha256 ", digest->sha256,
        "; the manifest says ", m->file_count, " files, ", m->total_bytes,
        " bytes, sha256 ", m->sha256,
        "). Nothing was restored; use another backup."));
  }
  fs::remove_all(tmp, ec);
  // Its parents durable (NEW_DIR's may be new too); tmp's own entry goes
  // with the rename, synced below.
  if (absl::StatusOr<bool> made = CreateFolders(tmp.string()); !made.ok()) {
    return absl::InternalError(absl::StrCat(
        "restore-from: ", made.status().message(), "; nothing was restored"));
  }
  SESSIOND_FAULT_POINT("restore.before_copy");
  for (const std::string& name : *files) {
    const fs::path to = tmp / name;
    fs::create_directories(to.parent_path(), ec);
    if (!ec) fs::copy_file(fs::path(backup_dir) / name, to, ec);
    if (ec) {
      const std::string why = ec.message();
      fs::remove_all(tmp, ec);
      return absl::InternalError(
          absl::StrCat("restore-from: cannot copy ", name, " into ",
                       tmp.string(), ": ", why, "; nothing was restored"));
    }
  }
  // Durable before it gets its name, and the name before "restored".
  if (absl::Status s = SyncBackupFiles(tmp.string(), *files); !s.ok()) {
    fs::remove_all(tmp, ec);
    return absl::InternalError(
        absl::StrCat("restore-from: ", s.message(), "; nothing was restored"));
  }
  // The copy read every file a second time: checked as the backup was (a
  // backup changed while it was copied, or read back wrong from a flaky
  // disk, would otherwise be restored with "checksum ok").
  absl::StatusOr<BackupDigest> copied = DigestBackupFiles(tmp.string(), *files);
  if (!copied.ok() || !matches(*copied)) {
    fs::remove_all(tmp, ec);
    return absl::DataLossError(absl::StrCat(
        "restore-from: the copy in ", tmp.string(),
        " does not match the backup's manifest (",
        copied.ok() ? absl::StrCat("sha256 ", copied->sha256)
                    : std::string(copied.status().message()),
        "): the backup changed while it was copied, or a disk read it back "
        "wrong. Nothing was restored; run it again, and check the backup's "
        "disk if it fails again."));
  }
  fs::remove(target, ec);  // empty, if it exists
  fs::rename(tmp, target, ec);
  if (ec) {
    const std::string why = ec.message();
    fs::remove_all(tmp, ec);
    return absl::InternalError(absl::StrCat(
        "restore-from: cannot rename ", tmp.string(), " to ", target.string(),
        ": ", why,
        "; nothing was restored (an empty mount point cannot be replaced: "
        "restore into a new folder inside it)"));
  }
  if (absl::Status s = SyncFolder(target.parent_path().string()); !s.ok()) {
    return absl::InternalError(absl::StrCat("restore-from: ", s.message()));
  }
  const std::string command = absl::StrCat(
      "sessiond --node_id ", m->node_id, " --data_dir ", target.string(),
      " --force_new_cluster=1 --listen HOST:PORT --peer_listen HOST:PEER_PORT");
  json doc = ManifestJson(*m, backup_dir);
  doc["data_dir"] = target.string();
  doc["command"] = command;
  return Print(
      out, doc,
      absl::StrCat(
          "restored the backup of node ", m->node_id, " (cluster ",
          HexId(m->cluster_id), ", applied index ", m->applied_index, ", ",
          m->session_count, " sessions; checksum ok) into ", target.string(),
          "\n\nNext:\n"
          "  0. Stop every node of the old cluster for good first: one that "
          "runs on would be a second cluster with the same id.\n"
          "  1. Start ONE node on it, as the only member of its cluster:\n"
          "       ",
          command, "\n     (--node_id must be ", m->node_id,
          ": the data dir belongs to that node id. Add the flags the old "
          "node ran with: the same --kek_file, or it cannot sign JWTs, and "
          "its TLS and --auth_file flags.)\n"
          "  2. Once `sessionctl status` shows it leading, drop "
          "--force_new_cluster=1 from its command line for every later "
          "start (left on, a start after step 3 is refused).\n"
          "  3. Add the other nodes back one at a time, each on an EMPTY "
          "data dir: `sessionctl members add ID PEER_ADDR --client "
          "CLIENT_ADDR`, start it with --initial_cluster_state existing, "
          "then `sessionctl members promote ID` once its lag is near 0.\n"
          "See docs/OPERATIONS.md, \"Backups and restore\".\n"));
}

void PrintError(const Output& out, const absl::Status& status) {
  std::fprintf(stderr, "sessionctl: %s\n",
               std::string(status.message()).c_str());
  std::fflush(stderr);
  if (out.json && !IsAlreadyPrinted(status)) {
    PrintJson(out.stream, ErrorJson(status), /*one_line=*/false);
  }
}

void PrintErrorLine(const Output& out, const absl::Status& status) {
  PrintJson(out.stream, ErrorJson(status), /*one_line=*/true);
}

absl::Status ShowStatus(Connection& cluster, const Output& out,
                        bool with_digests) {
  absl::StatusOr<Connection::StatusAnswer> answer =
      AskStatus(cluster, "status", with_digests);
  if (!answer.ok()) return answer.status();
  return Print(out, StatusJson(*answer), StatusText(*answer));
}

absl::Status WatchStatus(Connection& cluster, const Output& out,
                         bool with_digests, absl::Duration interval, int count,
                         const std::atomic<bool>& stop) {
  const bool terminal = !out.json && isatty(fileno(out.stream)) == 1;
  absl::Status last;
  for (int n = 0; (count == 0 || n < count) && !stop.load(); ++n) {
    if (n > 0) {
      const absl::Time next = absl::Now() + interval;
      while (!stop.load() && absl::Now() < next) {
        absl::SleepFor(std::min(absl::Milliseconds(50), next - absl::Now()));
      }
      if (stop.load()) break;
    }
    absl::StatusOr<Connection::StatusAnswer> answer =
        AskStatus(cluster, "status", with_digests);
    last = answer.status();
    if (out.json) {
      PrintJson(out.stream, last.ok() ? StatusJson(*answer) : ErrorJson(last),
                /*one_line=*/true);
      continue;
    }
    std::string screen;
    // Home and clear: the table refreshes in place.
    if (terminal) {
      screen = "\x1b[H\x1b[2J";
    } else if (n > 0) {
      screen = "\n";
    }
    absl::StrAppend(&screen, "every ", absl::FormatDuration(interval), ", ",
                    absl::FormatTime("%Y-%m-%d %H:%M:%SZ", absl::Now(),
                                     absl::UTCTimeZone()),
                    terminal ? " (Ctrl-C to stop)" : "", "\n");
    if (last.ok()) {
      screen += StatusText(*answer);
    } else {
      absl::StrAppend(&screen, "sessionctl: ", last.message(), "\n");
    }
    std::fputs(screen.c_str(), out.stream);
    std::fflush(out.stream);
  }
  if (stop.load()) return absl::OkStatus();
  return out.json ? AlreadyPrinted(last) : last;
}

absl::Status ListMembers(Connection& cluster, const Output& out) {
  absl::StatusOr<Connection::StatusAnswer> answer =
      AskStatus(cluster, "members list");
  if (!answer.ok()) return answer.status();
  const v1::ClusterStatusResponse& r = answer->response;
  json members = json::array();
  Table table({"NODE", "VOTER", "ROLE", "REACHABLE", "CLIENT", "PEER"});
  for (const v1::MemberStatus& m : r.members()) {
    members.push_back(json{{"node_id", m.node_id()},
                           {"voter", m.voter()},
                           {"role", m.role()},
                           {"reachable", m.reachable()},
                           {"client_address", m.client_address()},
                           {"peer_address", m.peer_address()},
                           {"error", m.error()}});
    table.AddRow({absl::StrCat(m.node_id()), m.voter() ? "yes" : "no",
                  m.role().empty() ? "-" : m.role(),
                  m.reachable() ? "yes" : "no",
                  m.client_address().empty() ? "-" : m.client_address(),
                  m.peer_address().empty() ? "-" : m.peer_address()});
  }
  const json doc{{"leader", r.leader()},
                 {"answered_by", r.answered_by()},
                 {"endpoint", answer->endpoint},
                 {"members", members}};
  return Print(out, doc,
               absl::StrCat(table.Render(), "(as node ", r.answered_by(),
                            " sees it; VOTER no: a learner, or a node that "
                            "is not a member any more)\n"));
}

absl::Status AddMember(Connection& cluster, const Output& out, uint64_t node_id,
                       const std::string& peer_address,
                       const std::string& client_address) {
  v1::AddMemberRequest request;
  request.set_node_id(node_id);
  request.set_peer_address(peer_address);
  request.set_client_address(client_address);
  return ChangeMembership(
      cluster, out, request, &v1::AdminService::Stub::AddMember,
      absl::StrCat("members add ", node_id),
      "`sessionctl members list` shows whether it was added; adding it again "
      "answers ALREADY_EXISTS if it was.",
      absl::StrCat("node ", node_id, " added as a learner"),
      absl::StrCat("Next: start it on an empty data dir with --node_id ",
                   node_id,
                   " --initial_cluster_state existing and --initial_cluster "
                   "naming running members' peer addresses and its own (",
                   node_id, "=", peer_address,
                   "); once `sessionctl status` shows its lag near 0, run "
                   "`sessionctl members promote ",
                   node_id, "`.\n"));
}

absl::Status PromoteMember(Connection& cluster, const Output& out,
                           uint64_t node_id) {
  v1::PromoteMemberRequest request;
  request.set_node_id(node_id);
  return ChangeMembership(
      cluster, out, request, &v1::AdminService::Stub::PromoteMember,
      absl::StrCat("members promote ", node_id),
      "`sessionctl members list` shows whether it is a voter.",
      absl::StrCat("node ", node_id, " is a voter now"), "");
}

absl::Status RemoveMember(Connection& cluster, const Output& out,
                          uint64_t node_id, const Confirmation& confirmation) {
  const std::string what = absl::StrCat("members remove ", node_id);
  if (!confirmation.yes) {
    // A mistyped id removes a healthy member: show which one it is, and
    // have its id typed back.
    absl::StatusOr<Connection::StatusAnswer> answer = AskStatus(cluster, what);
    if (!answer.ok()) return answer.status();
    const v1::MemberStatus* member = nullptr;
    for (const v1::MemberStatus& m : answer->response.members()) {
      if (m.node_id() == node_id) member = &m;
    }
    // A removed node, or an --initial_cluster id never added, is listed
    // (the member table, the address book) but is no member: it was shown
    // as a "learner" to remove.
    if (member == nullptr || member->outside_membership()) {
      return absl::NotFoundError(absl::StrCat(
          what, ": node ", node_id,
          " is not a member (`sessionctl members list`): nothing to remove"));
    }
    std::fprintf(
        confirmation.prompt,
        "Removing node %llu: %s, %s, %s, client %s, peer %s.\n",
        static_cast<unsigned long long>(node_id),
        member->voter() ? "voter" : "learner",
        member->role().empty() ? "-" : Printable(member->role()).c_str(),
        member->reachable() ? "reachable" : "unreachable",
        member->client_address().empty()
            ? "-"
            : Printable(member->client_address()).c_str(),
        member->peer_address().empty()
            ? "-"
            : Printable(member->peer_address()).c_str());
    SESSIOND_RETURN_IF_ERROR(
        AskToTypeBack(confirmation, what, "its node id", node_id));
  }
  v1::RemoveMemberRequest request;
  request.set_node_id(node_id);
  return ChangeMembership(
      cluster, out, request, &v1::AdminService::Stub::RemoveMember, what,
      "`sessionctl members list` shows whether it is still a member; "
      "removing it again is safe.",
      absl::StrCat("node ", node_id, " removed"),
      absl::StrCat("Next: it stops by itself once it learns of its removal "
                   "and will not start on its data dir again; disable its "
                   "service. To bring node ",
                   node_id,
                   " back, `sessionctl members add` it and start it on an "
                   "empty data dir with --initial_cluster_state existing.\n"));
}

absl::Status TransferLeadership(Connection& cluster, const Output& out,
                                uint64_t node_id) {
  v1::TransferLeadershipRequest request;
  request.set_node_id(node_id);
  v1::TransferLeadershipResponse response;
  std::string endpoint;
  const absl::Status s = cluster.AdminChange(
      [&](v1::AdminService::Stub& stub, grpc::ClientContext& context) {
        return stub.TransferLeadership(&context, request, &response);
      },
      &endpoint);
  if (!s.ok()) {
    return Explain(s,
                   absl::StrCat("leader transfer ",
                                node_id == 0 ? "any" : absl::StrCat(node_id)),
                   Kind::kIdempotentWrite, cluster.timeout(),
                   "`sessionctl status` shows the leader now; transferring "
                   "again is safe.");
  }
  json doc = MessageToJson(response);
  doc["endpoint"] = endpoint;
  return Print(out, doc,
               absl::StrCat("leadership is with node ", response.leader(),
                            " (term ", response.term(), ")\n"));
}

absl::Status SetExpiryLeeway(Connection& cluster, const Output& out,
                             int64_t leeway_ms) {
  v1::SetExpiryLeewayRequest request;
  request.set_expiry_leeway_ms(leeway_ms);
  v1::SetExpiryLeewayResponse response;
  std::string endpoint;
  const absl::Status s = cluster.AdminChange(
      [&](v1::AdminService::Stub& stub, grpc::ClientContext& context) {
        return stub.SetExpiryLeeway(&context, request, &response);
      },
      &endpoint);
  if (!s.ok()) {
    return Explain(s, absl::StrCat("leeway set ", leeway_ms),
                   Kind::kIdempotentWrite, cluster.timeout(),
                   "`sessionctl --json status` shows the leeway in force; "
                   "setting it again is safe.");
  }
  json doc = MessageToJson(response);
  doc["endpoint"] = endpoint;
  return Print(out, doc,
               absl::StrCat("the cluster's expiry leeway is ",
                            response.expiry_leeway_ms(), " ms\n"));
}

absl::Status GetSession(Connection& cluster, const Output& out,
                        const std::string& token, v1::Consistency consistency) {
  v1::ValidateSessionRequest request;
  request.set_token(token);
  request.set_consistency(consistency);
  request.set_touch(false);  // an operator's look is not the user's activity
  absl::StatusOr<v1::ValidateSessionResponse> answer =
      cluster.sessions().ValidateSession(request);
  if (!answer.ok()) {
    absl::Status s =
        Explain(cluster.Diagnose(answer.status(), /*idempotent=*/true),
                "sessions get", Kind::kRead, cluster.timeout());
    if (absl::IsUnavailable(s) && consistency == v1::LINEARIZABLE &&
        !OwnError(s)) {
      s = absl::Status(s.code(),
                       absl::StrCat(s.message(),
                                    "\nWithout a leader, `--consistency "
                                    "local` answers from a node's own table."));
    }
    return s;
  }
  const v1::ValidateSessionResponse& r = *answer;
  const absl::Time now = absl::Now();
  std::string how = absl::StrCat(
      r.consistency() == v1::LINEARIZABLE ? "linearizable" : "local",
      ", applied index ", r.applied_index());
  if (r.stale()) {
    absl::StrAppend(&how, "; STALE: the node last heard from a leader ",
                    FormatDurationMs(r.staleness_ms()), " ago");
  }
  std::string text;
  switch (r.outcome()) {
    case v1::ValidateSessionResponse::VALID: {
      const v1::Session& s = r.session();
      Table t({"outcome", absl::StrCat("VALID (", how, ")")});
      t.AddRow({"session_id", s.session_id()});
      t.AddRow({"user_id", s.user_id()});
      t.AddRow({"state", StateName(s.state())});
      t.AddRow({"created", FormatTimeMs(s.created_at_ms(), now)});
      t.AddRow({"expires", FormatTimeMs(s.expires_at_ms(), now)});
      t.AddRow({"idle timeout", s.idle_timeout_ms() == 0
                                    ? "none"
                                    : FormatDurationMs(s.idle_timeout_ms())});
      t.AddRow({"last seen", FormatTimeMs(s.last_seen_at_ms(), now)});
      t.AddRow({"version", absl::StrCat(s.version())});
      t.AddRow({"client", absl::StrCat("device=", s.client().device(),
                                       " ip=", s.client().ip(), " user_agent=",
                                       s.client().user_agent())});
      t.AddRow({"attributes", Attributes(s)});
      text = t.Render();
      break;
    }
    case v1::ValidateSessionResponse::EXPIRED:
      text = absl::StrCat("outcome  EXPIRED (", how,
                          "): the session is past its expiry; the sweeper "
                          "removes it soon\n");
      break;
    case v1::ValidateSessionResponse::REVOKED:
      text = absl::StrCat(
          "outcome  REVOKED (", how,
          "): `sessionctl sessions list --user USER --include-revoked` "
          "shows when and why\n");
      break;
    default:
      text = absl::StrCat("outcome  UNKNOWN (", how,
                          "): no session has this token (never created, "
                          "mistyped, or removed after it expired or was "
                          "revoked)\n");
      break;
  }
  return Print(out, MessageToJson(r), text);
}

absl::Status ListSessions(Connection& cluster, const Output& out,
                          const std::string& user_id, bool include_revoked) {
  v1::ListUserSessionsRequest request;
  request.set_user_id(user_id);
  request.set_include_revoked(include_revoked);
  request.set_page_size(1000);
  json sessions = json::array();
  const absl::Time now = absl::Now();
  Table table({"SESSION_ID", "STATE", "CREATED", "EXPIRES", "LAST SEEN", "IDLE",
               "VERSION", "DEVICE", "IP", "REVOKE REASON"});
  size_t count = 0;
  size_t revoked = 0;
  do {
    absl::StatusOr<v1::ListUserSessionsResponse> page =
        cluster.sessions().ListUserSessions(request);
    if (!page.ok()) {
      return Explain(cluster.Diagnose(page.status(), /*idempotent=*/true),
                     "sessions list", Kind::kRead, cluster.timeout());
    }
    for (const v1::Session& s : page->sessions()) {
      ++count;
      if (s.state() == v1::SESSION_STATE_REVOKED) ++revoked;
      sessions.push_back(MessageToJson(s));
      table.AddRow({s.session_id(), StateName(s.state()),
                    FormatRelativeMs(s.created_at_ms(), now),
                    FormatRelativeMs(s.expires_at_ms(), now),
                    FormatRelativeMs(s.last_seen_at_ms(), now),
                    s.idle_timeout_ms() == 0
                        ? "-"
                        : FormatDurationMs(s.idle_timeout_ms()),
                    absl::StrCat(s.version()),
                    s.client().device().empty() ? "-" : s.client().device(),
                    s.client().ip().empty() ? "-" : s.client().ip(),
                    s.revoke_reason().empty() ? "-" : s.revoke_reason()});
    }
    request.set_page_token(page->next_page_token());
  } while (!request.page_token().empty());
  std::string text = absl::StrCat("user ", user_id, ": ", count,
                                  count == 1 ? " session" : " sessions");
  if (include_revoked) absl::StrAppend(&text, " (", revoked, " revoked)");
  text += "\n";
  if (count > 0) text += table.Render();
  return Print(out, json{{"user_id", user_id}, {"sessions", sessions}}, text);
}

absl::Status RevokeSession(Connection& cluster, const Output& out,
                           const std::string& token,
                           const std::string& session_id,
                           const std::string& reason) {
  v1::RevokeSessionRequest request;
  if (!token.empty()) {
    request.set_token(token);
  } else {
    request.set_session_id(session_id);
  }
  request.set_reason(reason);
  const std::string what = token.empty()
                               ? absl::StrCat("sessions revoke ", session_id)
                               : "sessions revoke (by token)";
  absl::StatusOr<v1::RevokeSessionResponse> answer =
      cluster.sessions().RevokeSession(request);
  if (!answer.ok()) {
    absl::Status s = Explain(
        cluster.Diagnose(answer.status(), /*idempotent=*/true), what,
        Kind::kIdempotentWrite, cluster.timeout(), "Revoking again is safe.");
    if (absl::IsNotFound(s)) {
      s = absl::Status(
          s.code(),
          absl::StrCat(s.message(), "\nNo such session: check the ",
                       token.empty() ? "session id" : "token",
                       " (`sessionctl sessions list --user USER` lists a "
                       "user's session ids); an expired session may already "
                       "have been removed."));
    }
    return s;
  }
  const v1::Session& s = answer->session();
  return Print(
      out, json{{"session", MessageToJson(s)}},
      absl::StrCat(
          "session ", s.session_id(), " of user ", Printable(s.user_id()),
          " is revoked (at ", FormatTimeMs(s.revoked_at_ms(), absl::Now()),
          ", reason: ",
          s.revoke_reason().empty() ? "none" : Printable(s.revoke_reason()),
          ")\n"));
}

absl::Status RevokeUserSessions(Connection& cluster, const Output& out,
                                const std::string& user_id,
                                const std::string& keep_session_id,
                                const std::string& reason) {
  v1::RevokeUserSessionsRequest request;
  request.set_user_id(user_id);
  request.set_keep_session_id(keep_session_id);
  request.set_reason(reason);
  absl::StatusOr<v1::RevokeUserSessionsResponse> answer =
      cluster.sessions().RevokeUserSessions(request);
  if (!answer.ok()) {
    return Explain(
        cluster.Diagnose(answer.status(), /*idempotent=*/false),
        absl::StrCat("sessions revoke-user ", user_id), Kind::kWrite,
        cluster.timeout(),
        "`sessionctl sessions list --user USER` shows the sessions' state; "
        "running it again is safe, but also revokes sessions created since.");
  }
  std::string text =
      absl::StrCat("revoked ", answer->revoked_count(), " ",
                   answer->revoked_count() == 1 ? "session" : "sessions",
                   " of user ", user_id);
  if (!keep_session_id.empty()) {
    absl::StrAppend(&text, " (kept ", keep_session_id, ")");
  }
  text += "\n";
  if (answer->revocation_id() != 0) {
    absl::StrAppend(&text, "undo with: sessionctl restore ",
                    answer->revocation_id(), "\n");
  }
  return Print(out,
               json{{"user_id", user_id},
                    {"keep_session_id", keep_session_id},
                    {"revoked_count", answer->revoked_count()},
                    {"revocation_id", answer->revocation_id()}},
               text);
}

absl::Status CountSessions(Connection& cluster, const Output& out) {
  absl::StatusOr<Connection::StatusAnswer> answer =
      AskStatus(cluster, "sessions count");
  if (!answer.ok()) return answer.status();
  const v1::ClusterStatusResponse& r = answer->response;
  const v1::MemberStatus* member = tools::LeaderOf(r);
  const bool from_leader = member != nullptr;
  if (member == nullptr) member = tools::MemberOf(r, r.answered_by());
  if (member == nullptr || !member->reachable()) {
    return absl::UnavailableError(absl::StrCat(
        "sessions count: node ", r.answered_by(),
        " answered ClusterStatus without a row for itself; retry, or see "
        "`sessionctl status`"));
  }
  const json doc{{"live_sessions", member->live_sessions()},
                 {"node_id", member->node_id()},
                 {"role", member->role()},
                 {"from_leader", from_leader},
                 {"applied_index", member->applied_index()},
                 {"answered_by", r.answered_by()},
                 {"endpoint", answer->endpoint}};
  std::string text = absl::StrCat(member->live_sessions(), " sessions (node ",
                                  member->node_id());
  if (from_leader) {
    absl::StrAppend(&text, ", the leader");
  } else {
    absl::StrAppend(&text, "'s own table: no leader known, it may lag");
  }
  absl::StrAppend(&text, ", at applied index ", member->applied_index(),
                  "; answered by node ", r.answered_by(), " at ",
                  answer->endpoint, ")\n");
  return Print(out, doc, text);
}

}  // namespace sessiond::sessionctl

namespace sessiond::sessionctl {
namespace {

// Both steps of a flush or bulk revocation; `call` sends one request with
// the given confirmation token and fills `preview` or `revocation`.
using TwoStepCall = std::function<grpc::Status(
    v1::AdminService::Stub&, grpc::ClientContext&, const std::string& token,
    v1::BulkRevokePreview* preview, v1::Revocation* revocation)>;

// The TwoStepCall of `rpc` (Flush or BulkRevoke): `request` with each
// step's token.
template <typename Request, typename Response>
TwoStepCall BothSteps(grpc::Status (v1::AdminService::Stub::*rpc)(
                          grpc::ClientContext*, const Request&, Response*),
                      Request request) {
  return
      [rpc, request](v1::AdminService::Stub& stub, grpc::ClientContext& context,
                     const std::string& token, v1::BulkRevokePreview* preview,
                     v1::Revocation* revocation) {
        Request step = request;
        step.set_confirmation_token(token);
        Response response;
        grpc::Status status = (stub.*rpc)(&context, step, &response);
        if (response.has_preview()) *preview = response.preview();
        if (response.has_revocation()) *revocation = response.revocation();
        return status;
      };
}

std::string RevocationText(const v1::Revocation& r, absl::Time now) {
  return absl::StrCat(
      "revocation ", r.id(), ": ", DescribeSelector(r.selector()), ", ",
      r.sessions(), r.sessions() == 1 ? " session" : " sessions", " of ",
      r.users(), r.users() == 1 ? " user" : " users", " (reason \"",
      Printable(r.reason()), "\")\n", "restorable until ",
      FormatTimeMs(r.restorable_until_ms(), now), " with: sessionctl restore ",
      r.id(), "\n");
}

absl::Status RevokeInTwoSteps(Connection& cluster, const Output& out,
                              const std::string& what,
                              const Confirmation& confirmation,
                              const TwoStepCall& call) {
  v1::BulkRevokePreview preview;
  v1::Revocation revocation;
  std::string endpoint;
  absl::Status s = cluster.AdminChange(
      [&](v1::AdminService::Stub& stub, grpc::ClientContext& context) {
        return call(stub, context, "", &preview, &revocation);
      },
      &endpoint);
  if (!s.ok()) {
    return Explain(s, absl::StrCat(what, " (preview)"), Kind::kIdempotentWrite,
                   cluster.timeout(),
                   "A preview changes no session; ask for it again.");
  }
  const std::string question = absl::StrCat(
      what, ": ", DescribeSelector(preview.selector()), " takes ",
      preview.sessions(), preview.sessions() == 1 ? " session" : " sessions",
      " of ", preview.users(), preview.users() == 1 ? " user" : " users",
      " now.\nThey stop validating at once (outcome REVOKED) and can be "
      "restored during the retention window with `sessionctl restore ID`.\n");
  std::fputs(question.c_str(), confirmation.prompt);
  SESSIOND_RETURN_IF_ERROR(
      AskForTheCount(confirmation, what, preview.sessions()));
  s = cluster.AdminChange(
      [&](v1::AdminService::Stub& stub, grpc::ClientContext& context) {
        return call(stub, context, preview.confirmation_token(), &preview,
                    &revocation);
      },
      &endpoint);
  if (!s.ok()) {
    return Explain(s, what, Kind::kWrite, cluster.timeout(),
                   "`sessionctl flushes list` shows whether it was made (and "
                   "`sessionctl restore ID` undoes it).");
  }
  json doc{{"preview", MessageToJson(preview)},
           {"revocation", MessageToJson(revocation)},
           {"endpoint", endpoint}};
  return Print(out, doc, RevocationText(revocation, absl::Now()));
}

}  // namespace

absl::Status AskToTypeBack(const Confirmation& confirmation,
                           const std::string& what, absl::string_view named,
                           uint64_t expected) {
  if (confirmation.yes) return absl::OkStatus();
  std::fprintf(confirmation.prompt,
               "Type %s (%llu) to go on: ", std::string(named).c_str(),
               static_cast<unsigned long long>(expected));
  std::fflush(confirmation.prompt);
  char line[64] = {};
  uint64_t typed = 0;
  const bool read =
      std::fgets(line, sizeof line, confirmation.confirm_in) != nullptr;
  std::string answer = read ? line : "";
  absl::StripAsciiWhitespace(&answer);
  if (!read || !absl::SimpleAtoi(answer, &typed) || typed != expected) {
    return absl::FailedPreconditionError(
        absl::StrCat(what, ": not confirmed (expected ", expected, ", got \"",
                     Printable(answer),
                     "\"): nothing was changed. Run it again, or pass --yes."));
  }
  return absl::OkStatus();
}

absl::Status AskForTheCount(const Confirmation& confirmation,
                            const std::string& what, uint64_t sessions) {
  return AskToTypeBack(confirmation, what, "the number of sessions", sessions);
}

absl::StatusOr<int64_t> ParseTimeMs(const std::string& text) {
  int64_t ms = 0;
  if (absl::SimpleAtoi(text, &ms)) {
    if (ms <= 0) return UsageError("TIME: a Unix time in ms must be > 0");
    return ms;
  }
  absl::Time t;
  std::string error;
  if (!absl::ParseTime(absl::RFC3339_full, text, &t, &error)) {
    return UsageError(absl::StrCat(
        "TIME: '", Printable(text),
        "' is neither Unix ms nor RFC 3339 (2026-12-01T10:00:00Z): ", error));
  }
  return absl::ToUnixMillis(t);
}

std::string DescribeSelector(const v1::SessionSelector& selector) {
  switch (selector.kind_case()) {
    case v1::SessionSelector::kAll:
      return "every live session";
    case v1::SessionSelector::kCreatedBeforeMs:
      return absl::StrCat(
          "sessions created before ",
          absl::FormatTime("%Y-%m-%d %H:%M:%SZ",
                           absl::FromUnixMillis(selector.created_before_ms()),
                           absl::UTCTimeZone()));
    case v1::SessionSelector::kUsers: {
      const auto& ids = selector.users().user_ids();
      std::vector<std::string> shown;
      for (int i = 0; i < ids.size() && i < 3; ++i) {
        shown.push_back(Printable(ids[i]));
      }
      std::string text =
          absl::StrCat("sessions of user", ids.size() == 1 ? " " : "s ",
                       absl::StrJoin(shown, ", "));
      if (ids.size() > 3)
        absl::StrAppend(&text, " and ", ids.size() - 3, " more");
      return text;
    }
    case v1::SessionSelector::kAttribute:
      return absl::StrCat("sessions with ",
                          Printable(selector.attribute().key()), "=",
                          Printable(selector.attribute().value()));
    case v1::SessionSelector::kUser: {
      std::string text = absl::StrCat("sessions of user ",
                                      Printable(selector.user().user_id()));
      if (!selector.user().keep_session_id().empty()) {
        absl::StrAppend(&text, " but ",
                        Printable(selector.user().keep_session_id()));
      }
      return text;
    }
    case v1::SessionSelector::KIND_NOT_SET:
      break;
  }
  return "nothing";
}

absl::Status FlushSessions(Connection& cluster, const Output& out,
                           const std::string& reason,
                           const Confirmation& confirmation) {
  v1::FlushRequest request;
  request.set_reason(reason);
  return RevokeInTwoSteps(cluster, out, "flush", confirmation,
                          BothSteps(&v1::AdminService::Stub::Flush, request));
}

absl::Status BulkRevokeSessions(Connection& cluster, const Output& out,
                                const v1::SessionSelector& selector,
                                const std::string& reason,
                                const Confirmation& confirmation) {
  v1::BulkRevokeRequest request;
  *request.mutable_selector() = selector;
  request.set_reason(reason);
  return RevokeInTwoSteps(
      cluster, out, "bulk revoke", confirmation,
      BothSteps(&v1::AdminService::Stub::BulkRevoke, request));
}

absl::Status RevokeCreatedBefore(Connection& cluster, const Output& out,
                                 int64_t before_ms, const std::string& reason,
                                 const Confirmation& confirmation) {
  // The note only: a breach response goes on without it.
  absl::StatusOr<Connection::StatusAnswer> answer = cluster.ClusterStatus();
  std::vector<int64_t> skews;
  if (answer.ok()) {
    for (const v1::MemberStatus& m : answer->response.members()) {
      if (m.reachable()) skews.push_back(m.clock_skew_ms());
    }
  }
  std::sort(skews.begin(), skews.end());
  if (skews.empty()) {
    std::fprintf(confirmation.prompt,
                 "Note: no member reported its clock (%s); TIME is taken as "
                 "cluster time, which sessions are stamped with.\n",
                 answer.ok() ? "none reachable"
                             : std::string(answer.status().message()).c_str());
  }
  // Wall clock minus cluster time.
  const int64_t skew_ms = skews.empty() ? 0 : skews[skews.size() / 2];
  if (std::llabs(skew_ms) >= 1000) {
    const auto format = [](int64_t ms) {
      return absl::FormatTime("%Y-%m-%dT%H:%M:%E3SZ", absl::FromUnixMillis(ms),
                              absl::UTCTimeZone());
    };
    const std::string lag = FormatDurationMs(std::llabs(skew_ms));
    const std::string what =
        skew_ms > 0
            ? absl::StrCat("sessions created since the outage up to ", lag,
                           " after TIME by the wall clock are taken too "
                           "(undoable with `sessionctl restore ID`)")
            : absl::StrCat("sessions created in the ", lag,
                           " before TIME by the wall clock are not taken");
    std::fprintf(
        confirmation.prompt,
        "Note: cluster time, which sessions are stamped with, runs %s %s the "
        "members' wall clocks (after a whole-cluster outage it lags by the "
        "outage's length). TIME %s is taken as cluster time, so %s. %s %s "
        "names it by the cluster's clock.\n",
        lag.c_str(), skew_ms > 0 ? "behind" : "ahead of",
        format(before_ms).c_str(), what.c_str(),
        skew_ms > 0 ? "If TIME is after the outage," : "Today,",
        format(before_ms - skew_ms).c_str());
  }
  v1::SessionSelector selector;
  selector.set_created_before_ms(before_ms);
  return BulkRevokeSessions(cluster, out, selector, reason, confirmation);
}

namespace {

// AdminService.ListFlushes; `what` names the verb in an error.
absl::StatusOr<v1::ListFlushesResponse> FetchFlushes(Connection& cluster,
                                                     const std::string& what,
                                                     std::string* endpoint) {
  v1::ListFlushesResponse response;
  const absl::Status s = cluster.AdminChange(
      [&](v1::AdminService::Stub& stub, grpc::ClientContext& context) {
        return stub.ListFlushes(&context, v1::ListFlushesRequest(), &response);
      },
      endpoint);
  if (!s.ok()) return Explain(s, what, Kind::kRead, cluster.timeout());
  return response;
}

}  // namespace

absl::Status ListFlushes(Connection& cluster, const Output& out) {
  std::string endpoint;
  absl::StatusOr<v1::ListFlushesResponse> listed =
      FetchFlushes(cluster, "flushes list", &endpoint);
  if (!listed.ok()) return listed.status();
  const v1::ListFlushesResponse& response = *listed;
  json doc = MessageToJson(response);
  doc["endpoint"] = endpoint;
  if (response.revocations().empty()) {
    return Print(out, doc,
                 "no flush or bulk revocation is retained (none made, or "
                 "all purged after their retention)\n");
  }
  const absl::Time now = absl::Now();
  Table table({"ID", "WHAT", "REASON", "AT", "SESSIONS", "USERS", "STATE",
               "RESTORABLE UNTIL"});
  for (const v1::Revocation& r : response.revocations()) {
    std::string state = r.state() == v1::Revocation::RESTORED
                            ? absl::StrCat("restored (", r.restored(), ")")
                            : "retained";
    table.AddRow({absl::StrCat(r.id()), DescribeSelector(r.selector()),
                  r.reason(), FormatTimeMs(r.revoked_at_ms(), now),
                  absl::StrCat(r.sessions()), absl::StrCat(r.users()), state,
                  FormatTimeMs(r.restorable_until_ms(), now)});
  }
  return Print(out, doc, table.Render());
}

absl::Status RestoreFlush(Connection& cluster, const Output& out, uint64_t id,
                          const Confirmation& confirmation) {
  const std::string what = absl::StrCat("restore ", id);
  if (!confirmation.yes) {
    // A mistyped id makes the sessions of another revocation valid again,
    // perhaps ones revoked after a breach: show which one it is, and have
    // its id typed back.
    std::string listed_by;
    absl::StatusOr<v1::ListFlushesResponse> listed =
        FetchFlushes(cluster, what, &listed_by);
    if (!listed.ok()) return listed.status();
    const v1::Revocation* found = nullptr;
    for (const v1::Revocation& r : listed->revocations()) {
      if (r.id() == id) found = &r;
    }
    if (found == nullptr) {
      return absl::NotFoundError(
          absl::StrCat(what, ": no retained flush or bulk revocation has id ",
                       id, " (`sessionctl flushes list`): nothing to restore"));
    }
    const absl::Time now = absl::Now();
    std::fprintf(confirmation.prompt,
                 "Restoring revocation %llu: %s, reason \"%s\", at %s: %llu "
                 "sessions of %llu users validate again (those expired "
                 "meanwhile stay expired).\n",
                 static_cast<unsigned long long>(id),
                 DescribeSelector(found->selector()).c_str(),
                 Printable(found->reason()).c_str(),
                 FormatTimeMs(found->revoked_at_ms(), now).c_str(),
                 static_cast<unsigned long long>(found->sessions()),
                 static_cast<unsigned long long>(found->users()));
    SESSIOND_RETURN_IF_ERROR(AskToTypeBack(confirmation, what, "its id", id));
  }
  v1::RestoreFlushRequest request;
  request.set_flush_id(id);
  v1::RestoreFlushResponse response;
  std::string endpoint;
  const absl::Status s = cluster.AdminChange(
      [&](v1::AdminService::Stub& stub, grpc::ClientContext& context) {
        return stub.RestoreFlush(&context, request, &response);
      },
      &endpoint);
  if (!s.ok()) {
    return Explain(s, absl::StrCat("restore ", id), Kind::kIdempotentWrite,
                   cluster.timeout(),
                   "`sessionctl flushes list` shows whether it was restored; "
                   "restoring again is refused, not repeated.");
  }
  const v1::Revocation& r = response.revocation();
  json doc = MessageToJson(response);
  doc["endpoint"] = endpoint;
  return Print(
      out, doc,
      absl::StrCat("restored revocation ", r.id(), " (",
                   DescribeSelector(r.selector()), "): ", r.restored(),
                   r.restored() == 1 ? " session" : " sessions",
                   " valid again, ", r.stayed_expired(),
                   " had expired meanwhile (of ", r.sessions(), " revoked)\n"));
}

namespace {

// One paragraph on the breaker for people.
std::string BreakerText(const v1::ExpiryBreaker& b, uint64_t held,
                        absl::Time now) {
  if (b.open()) {
    return absl::StrCat(
        "expiry breaker OPEN (id ", b.id(), ", since ",
        FormatTimeMs(b.opened_at_ms(), now),
        "): no session expires; expiry is judged at ",
        FormatTimeMs(b.frozen_at_ms(), now), ".\n", "why: ", b.reason(), "\n",
        held, held == 1 ? " session is" : " sessions are",
        " held back: they expire when sweeping resumes.\n",
        "Find the cause (a default lifetime pushed in config, a client "
        "creating short sessions, a clock), then: sessionctl breaker "
        "resume\n");
  }
  std::string text = "expiry breaker closed: sessions expire normally";
  if (b.times_opened() > 0) {
    absl::StrAppend(&text, " (opened ", b.times_opened(),
                    b.times_opened() == 1 ? " time" : " times", "; last ",
                    b.closed_by(), " ", FormatTimeMs(b.closed_at_ms(), now),
                    ")");
  }
  return text + "\n";
}

}  // namespace

absl::Status ShowExpiryBreaker(Connection& cluster, const Output& out) {
  v1::GetExpiryBreakerResponse response;
  std::string endpoint;
  const absl::Status s = cluster.AdminChange(
      [&](v1::AdminService::Stub& stub, grpc::ClientContext& context) {
        return stub.GetExpiryBreaker(&context, v1::GetExpiryBreakerRequest(),
                                     &response);
      },
      &endpoint);
  if (!s.ok()) {
    return Explain(s, "breaker status", Kind::kRead, cluster.timeout());
  }
  json doc = MessageToJson(response);
  doc["endpoint"] = endpoint;
  return Print(
      out, doc,
      BreakerText(response.breaker(), response.held_sessions(), absl::Now()));
}

absl::Status ResumeExpiry(Connection& cluster, const Output& out,
                          const Confirmation& confirmation) {
  v1::GetExpiryBreakerResponse state;
  std::string endpoint;
  absl::Status s = cluster.AdminChange(
      [&](v1::AdminService::Stub& stub, grpc::ClientContext& context) {
        return stub.GetExpiryBreaker(&context, v1::GetExpiryBreakerRequest(),
                                     &state);
      },
      &endpoint);
  if (!s.ok()) {
    return Explain(s, "breaker resume", Kind::kRead, cluster.timeout());
  }
  if (!state.breaker().open()) {
    return absl::FailedPreconditionError(
        "breaker resume: the expiry breaker is not open; nothing to resume "
        "(`sessionctl breaker status` shows its last opening)");
  }
  std::fputs(
      absl::StrCat(
          BreakerText(state.breaker(), state.held_sessions(), absl::Now()),
          "Resuming expires those ", state.held_sessions(), " sessions now.\n")
          .c_str(),
      confirmation.prompt);
  SESSIOND_RETURN_IF_ERROR(
      AskForTheCount(confirmation, "breaker resume", state.held_sessions()));
  v1::ResumeExpiryRequest request;
  request.set_breaker_id(state.breaker().id());
  request.set_confirm_sessions(state.held_sessions());
  v1::ResumeExpiryResponse response;
  s = cluster.AdminChange(
      [&](v1::AdminService::Stub& stub, grpc::ClientContext& context) {
        return stub.ResumeExpiry(&context, request, &response);
      },
      &endpoint);
  if (!s.ok()) {
    return Explain(s, "breaker resume", Kind::kWrite, cluster.timeout(),
                   "`sessionctl breaker status` shows whether it closed.");
  }
  json doc = MessageToJson(response);
  doc["endpoint"] = endpoint;
  return Print(out, doc,
               absl::StrCat("expiry resumed: breaker ", response.breaker().id(),
                            " closed; ", response.released_sessions(),
                            " sessions held back expire with the next "
                            "sweeps\n"));
}

std::optional<std::string> WallClockProblem(const v1::MemberStatus& m) {
  // The server refuses JWTs past a minute either way (JwtWallMs).
  constexpr int64_t kMaxOffMs = 60'000;
  if (!m.has_wall_clock_off_median_ms() ||
      (m.wall_clock_off_median_ms() >= -kMaxOffMs &&
       m.wall_clock_off_median_ms() <= kMaxOffMs)) {
    return std::nullopt;
  }
  // Clamped first: a value no server sends must not overflow the negation.
  const int64_t off_ms = std::clamp<int64_t>(
      m.wall_clock_off_median_ms(), -(int64_t{1} << 62), int64_t{1} << 62);
  return absl::StrCat("node ", m.node_id(), " wall clock is ",
                      FormatDurationMs(std::llabs(off_ms)),
                      off_ms < 0 ? " behind" : " ahead of",
                      " the other members': it signs no JWT tokens -- set its "
                      "clock right (NTP)");
}

}  // namespace sessiond::sessionctl
