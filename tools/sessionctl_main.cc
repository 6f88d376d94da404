// Copyright sessiond authors. Licensed under the Apache License 2.0.
//
// sessionctl: the operators' CLI for a sessiond cluster (docs/OPERATIONS.md,
// "sessionctl"). Parses the command line with CLI11, resolves the endpoints
// (flag > environment > config file > default) and runs one verb from
// tools/sessionctl_commands.h.
#include <signal.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <functional>
#include <iostream>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common/version.h"
#include "tools/sessionctl_commands.h"
#include "tools/sessionctl_config.h"
#include "tools/sessionctl_connection.h"
#include "tools/sessionctl_errors.h"

namespace sessiond::sessionctl {
namespace {

std::atomic<bool> g_stop{false};

void OnSignal(int) { g_stop.store(true); }

// Ctrl-C ends `status --watch` after the refresh in progress; a second one
// kills the process (SA_RESETHAND).
void CatchInterrupts() {
  struct sigaction action = {};
  action.sa_handler = OnSignal;
  action.sa_flags = SA_RESETHAND;
  sigemptyset(&action.sa_mask);
  sigaction(SIGINT, &action, nullptr);
  sigaction(SIGTERM, &action, nullptr);
}

// A token argument; "-" reads it from the first line of stdin, so that it
// shows in no process list or shell history.
absl::StatusOr<std::string> ReadToken(const std::string& argument,
                                      absl::string_view flag) {
  if (argument != "-") return argument;
  std::string line;
  if (!std::getline(std::cin, line)) {
    return UsageError(absl::StrCat(flag, " -: no token on stdin"));
  }
  absl::StripTrailingAsciiWhitespace(&line);
  if (line.empty()) {
    return UsageError(absl::StrCat(flag, " -: no token on stdin"));
  }
  return line;
}

// A node id argument; with `allow_any`, also "any" (or 0): the most
// caught-up other voter (`leader transfer`), which becomes 0.
CLI::Validator NodeId(bool allow_any) {
  return CLI::Validator(
      [allow_any](std::string& text) -> std::string {
        if (allow_any && text == "any") text = "0";
        uint64_t id = 0;
        if (absl::SimpleAtoi(text, &id) && (id != 0 || allow_any)) return "";
        return absl::StrCat("'", text, "' is not a node id (a number >= 1",
                            allow_any ? ", or any)" : ")");
      },
      allow_any ? "NODE|any" : "ID");
}

// A verb whose server side does not exist yet: registered so that it is
// listed, and refuses plainly (exit 4) instead of pretending.
[[maybe_unused]] void NotYet(CLI::App& app, const std::string& name,
                             const std::string& description,
                             const std::string& issue,
                             std::function<absl::Status()>* action) {
  CLI::App* verb = app.add_subcommand(name, description);
  verb->group("Not implemented yet");
  verb->fallthrough(false);
  verb->allow_extras();
  verb->callback([name, issue, action] {
    *action = [name, issue] {
      return NotImplementedError(absl::StrCat(
          "'", name, "' is not implemented yet in this sessiond (", issue,
          "): nothing was done. See docs/OPERATIONS.md, \"sessionctl\"."));
    };
  });
}

int Main(int argc, char** argv) {
  CLI::App app{
      "sessionctl: the operators' CLI for a sessiond cluster (status, "
      "members, leadership, sessions). Tables by default, --json for "
      "scripts. Exit codes: 0 ok, 1 the cluster answered with an error, 2 "
      "usage, 3 no endpoint reachable, 4 not implemented yet, 5 the "
      "cluster refused our identity, 6 the output could not be written. "
      "Reference: "
      "docs/OPERATIONS.md, \"sessionctl\"."};
  app.require_subcommand(1);
  app.fallthrough();
  // The same version and build as sessiond's (common/version.h).
  app.set_version_flag("--version", "sessionctl " SESSIOND_VERSION_LINE);

  GlobalFlags flags;
  Output out;
  app.add_option("--endpoints", flags.endpoints,
                 "client addresses host:port,... (else SESSIOND_ENDPOINTS, "
                 "else the config file, else 127.0.0.1:50051)");
  app.add_option("--config", flags.config,
                 "config file of key = value lines (endpoints, timeout, "
                 "tls_ca, tls_cert, tls_key, token_file); "
                 "default SESSIONCTL_CONFIG, else "
                 "~/.config/sessionctl.toml");
  app.add_option("--timeout", flags.timeout,
                 "bound on connecting and on each call, e.g. 5s, 500ms "
                 "(default 5s)");
  app.add_option("--tls-ca", flags.tls_ca,
                 "PEM bundle of the CA that signed the nodes' certificates: "
                 "speak TLS (else SESSIOND_TLS_CA, else tls_ca in the config "
                 "file)");
  app.add_option("--tls-cert", flags.tls_cert,
                 "client certificate (PEM) for mutual TLS, with --tls-key "
                 "(else SESSIOND_TLS_CERT, else tls_cert in the config file)");
  app.add_option("--tls-key", flags.tls_key,
                 "the client certificate's private key (PEM) (else "
                 "SESSIOND_TLS_KEY, else tls_key in the config file)");
  app.add_option("--token-file", flags.token_file,
                 "file holding a bearer token to authenticate with (never "
                 "the token itself on the command line) (else "
                 "SESSIOND_TOKEN_FILE, else token_file in the config file)");
  app.add_flag("--json", out.json,
               "print one JSON document (field names in "
               "docs/OPERATIONS.md) instead of a table");

  // What the chosen verb does once the endpoints are known; set by its
  // callback.
  std::function<absl::Status(Connection&)> run;
  std::function<absl::Status()> refuse;
  // A verb that needs no cluster (restore-from).
  std::function<absl::Status()> local;

  // status
  bool watch = false;
  bool digests = false;
  std::string interval = "2s";
  int count = 0;
  CLI::App* status = app.add_subcommand(
      "status",
      "every member: role, term, commit/applied index, lag, clock skew, "
      "sessions, disk");
  status->add_flag("--watch,-w", watch,
                   "refresh in place until Ctrl-C (with --json: one JSON "
                   "document per line per refresh)");
  status->add_option("--interval", interval,
                     "time between refreshes with --watch (default 2s)");
  status
      ->add_option("--count", count,
                   "with --watch: stop after this many refreshes")
      ->check(CLI::NonNegativeNumber);
  status->add_flag("--digests", digests,
                   "also compute each member's state digest (reads its "
                   "whole state: slow on big stores)");
  status->callback([&] {
    run = [&](Connection& cluster) -> absl::Status {
      if (!watch) return ShowStatus(cluster, out, digests);
      absl::StatusOr<absl::Duration> every = ParseDuration(interval);
      if (!every.ok()) {
        return UsageError(
            absl::StrCat("--interval: ", every.status().message()));
      }
      if (*every < absl::Milliseconds(100)) {
        return UsageError("--interval: at least 100ms");
      }
      CatchInterrupts();
      return WatchStatus(cluster, out, digests, *every, count, g_stop);
    };
  });

  // members
  CLI::App* members = app.add_subcommand(
      "members", "list, add, promote or remove cluster members");
  members->require_subcommand(1);
  members->add_subcommand("list", "every member: voter, role, addresses")
      ->callback([&] {
        run = [&](Connection& cluster) { return ListMembers(cluster, out); };
      });
  uint64_t add_id = 0;
  std::string add_peer;
  std::string add_client;
  CLI::App* add = members->add_subcommand(
      "add",
      "add a node as a learner; start it with --initial_cluster_state "
      "existing, then promote it");
  add->add_option("ID", add_id, "the new node's id")
      ->required()
      ->transform(NodeId(false));
  add->add_option("PEER_ADDR", add_peer, "host:port of its peer listener")
      ->required();
  add->add_option("--client", add_client,
                  "host:port of its client API (optional)");
  add->callback([&] {
    run = [&](Connection& cluster) {
      return AddMember(cluster, out, add_id, add_peer, add_client);
    };
  });
  uint64_t promote_id = 0;
  CLI::App* promote =
      members->add_subcommand("promote", "make a caught-up learner a voter");
  promote->add_option("ID", promote_id, "its node id")
      ->required()
      ->transform(NodeId(false));
  promote->callback([&] {
    run = [&](Connection& cluster) {
      return PromoteMember(cluster, out, promote_id);
    };
  });
  uint64_t remove_id = 0;
  bool remove_yes = false;
  CLI::App* remove = members->add_subcommand(
      "remove",
      "remove a voter or learner: shows it and asks to type its id back; "
      "refused when the voters left would have no quorum acknowledging the "
      "leader");
  remove->add_option("ID", remove_id, "its node id")
      ->required()
      ->transform(NodeId(false));
  remove->add_flag("--yes,-y", remove_yes,
                   "do not ask to type the id back (scripts)");
  remove->callback([&] {
    run = [&](Connection& cluster) {
      Confirmation confirmation;
      confirmation.yes = remove_yes;
      return RemoveMember(cluster, out, remove_id, confirmation);
    };
  });

  // leader
  CLI::App* leader = app.add_subcommand("leader", "leadership");
  leader->require_subcommand(1);
  uint64_t transfer_to = 0;
  CLI::App* transfer = leader->add_subcommand(
      "transfer",
      "hand leadership to voter NODE (any: the most caught-up other voter) "
      "and wait until it leads");
  transfer->add_option("NODE", transfer_to, "node id, or any")
      ->required()
      ->transform(NodeId(true));
  transfer->callback([&] {
    run = [&](Connection& cluster) {
      return TransferLeadership(cluster, out, transfer_to);
    };
  });

  // leeway
  CLI::App* leeway = app.add_subcommand(
      "leeway",
      "the cluster's replicated expiry leeway (a clock-skew allowance)");
  leeway->require_subcommand(1);
  int64_t leeway_ms = 0;
  CLI::App* set_leeway = leeway->add_subcommand(
      "set",
      "sessions count as expired only MS after their deadline, on every node "
      "(through the log; outlives restarts)");
  set_leeway->add_option("MS", leeway_ms, "milliseconds, 0..86400000")
      ->required()
      ->check(CLI::Range(int64_t{0}, int64_t{86400000}));
  set_leeway->callback([&] {
    run = [&](Connection& cluster) {
      return SetExpiryLeeway(cluster, out, leeway_ms);
    };
  });

  // sessions
  CLI::App* sessions =
      app.add_subcommand("sessions", "find, show, revoke and count sessions");
  sessions->require_subcommand(1);
  std::string get_token;
  std::string consistency = "linearizable";
  CLI::App* get = sessions->add_subcommand(
      "get",
      "validate TOKEN (without touching it) and show its session; TOKEN - "
      "reads it from stdin");
  get->add_option("TOKEN", get_token, "the session's token, or -")->required();
  get->add_option("--consistency", consistency,
                  "linearizable (default; needs a leader), local (the "
                  "node's own table) or default (linearizable, else local)")
      ->check(CLI::IsMember({"linearizable", "local", "default"}));
  get->callback([&] {
    run = [&](Connection& cluster) -> absl::Status {
      absl::StatusOr<std::string> token = ReadToken(get_token, "TOKEN");
      if (!token.ok()) return token.status();
      const v1::Consistency level = consistency == "local" ? v1::LOCAL
                                    : consistency == "default"
                                        ? v1::CONSISTENCY_DEFAULT
                                        : v1::LINEARIZABLE;
      return GetSession(cluster, out, *token, level);
    };
  });
  std::string list_user;
  bool include_revoked = false;
  CLI::App* list =
      sessions->add_subcommand("list", "a user's sessions (every page)");
  list->add_option("--user,-u", list_user, "the user id")->required();
  list->add_flag("--include-revoked", include_revoked,
                 "also list revoked sessions still retained");
  list->callback([&] {
    run = [&](Connection& cluster) {
      return ListSessions(cluster, out, list_user, include_revoked);
    };
  });
  std::string revoke_token;
  std::string revoke_id;
  std::string revoke_reason;
  CLI::App* revoke = sessions->add_subcommand(
      "revoke", "revoke one session, by --token or --session-id");
  CLI::Option* by_token = revoke->add_option(
      "--token", revoke_token, "its token (- reads it from stdin)");
  CLI::Option* by_id =
      revoke->add_option("--session-id", revoke_id, "its session id");
  by_token->excludes(by_id);
  revoke->add_option("--reason", revoke_reason, "recorded with the session");
  revoke->callback([&] {
    run = [&](Connection& cluster) -> absl::Status {
      if (revoke_token.empty() == revoke_id.empty()) {
        return UsageError(
            "sessions revoke: give --token or --session-id (one of them)");
      }
      std::string token;
      if (!revoke_token.empty()) {
        absl::StatusOr<std::string> read = ReadToken(revoke_token, "--token");
        if (!read.ok()) return read.status();
        token = *read;
      }
      return RevokeSession(cluster, out, token, revoke_id, revoke_reason);
    };
  });
  std::string revoke_user;
  std::string keep_id;
  std::string revoke_user_reason;
  CLI::App* revoke_user_cmd = sessions->add_subcommand(
      "revoke-user", "revoke every session of user U (but --keep-session-id)");
  revoke_user_cmd->add_option("U", revoke_user, "the user id")->required();
  revoke_user_cmd->add_option("--keep-session-id", keep_id,
                              "this session stays (log out everywhere else)");
  revoke_user_cmd->add_option("--reason", revoke_user_reason,
                              "recorded with the sessions");
  revoke_user_cmd->callback([&] {
    run = [&](Connection& cluster) {
      return RevokeUserSessions(cluster, out, revoke_user, keep_id,
                                revoke_user_reason);
    };
  });
  sessions
      ->add_subcommand("count",
                       "sessions in the store, as the leader counts them")
      ->callback([&] {
        run = [&](Connection& cluster) { return CountSessions(cluster, out); };
      });

  // backup, restore-from
  std::string backup_dir;
  uint64_t backup_node = 0;
  CLI::App* backup = app.add_subcommand(
      "backup",
      "a consistent backup of one node's state into DIR on that node's "
      "machine, with a manifest");
  backup
      ->add_option("DIR", backup_dir,
                   "an absolute path on the node's machine: a new or empty "
                   "folder")
      ->required();
  backup
      ->add_option("--node", backup_node,
                   "back up this member (default: the first reachable "
                   "endpoint)")
      ->transform(NodeId(false));
  backup->callback([&] {
    run = [&](Connection& cluster) {
      return TakeBackup(cluster, out, backup_dir, backup_node);
    };
  });
  std::string restore_dir;
  std::string restore_data_dir;
  CLI::App* restore_from = app.add_subcommand(
      "restore-from",
      "check a backup's checksum and copy it into a new data dir (on this "
      "machine), then print how to start a cluster on it");
  restore_from->add_option("BACKUP_DIR", restore_dir, "the backup's folder")
      ->required();
  restore_from
      ->add_option("--data-dir", restore_data_dir,
                   "the new data dir (must not exist or be empty)")
      ->required();
  restore_from->callback([&] {
    local = [&] { return RestoreFrom(out, restore_dir, restore_data_dir); };
  });

  // Undoable mass revocations.
  Confirmation confirmation;
  std::string bulk_reason;
  const auto two_step = [&](CLI::App* verb) {
    verb->add_flag("--yes,-y", confirmation.yes,
                   "do not ask to type the count back (scripts)");
    verb->add_option("--reason", bulk_reason,
                     "recorded with the revocation (default \"flushed\", or "
                     "\"bulk revocation\")");
  };
  CLI::App* flush = app.add_subcommand(
      "flush",
      "revoke EVERY live session, undoably: shows how many (of how many "
      "users) and asks to type that count back; `restore ID` undoes it");
  two_step(flush);
  flush->callback([&] {
    run = [&](Connection& cluster) {
      return FlushSessions(cluster, out, bulk_reason, confirmation);
    };
  });
  v1::SessionSelector selector;
  std::string before_text;
  CLI::App* revoke_before = app.add_subcommand(
      "revoke-before",
      "revoke every session created before TIME (after a breach), undoably, "
      "with the same preview and confirmation as flush");
  revoke_before
      ->add_option("TIME", before_text,
                   "Unix ms, or RFC 3339 (2026-12-01T10:00:00Z)")
      ->required();
  two_step(revoke_before);
  revoke_before->callback([&] {
    run = [&](Connection& cluster) -> absl::Status {
      absl::StatusOr<int64_t> ms = ParseTimeMs(before_text);
      if (!ms.ok()) return ms.status();
      return RevokeCreatedBefore(cluster, out, *ms, bulk_reason, confirmation);
    };
  });
  std::vector<std::string> bulk_users;
  CLI::App* revoke_users = app.add_subcommand(
      "revoke-users",
      "revoke every session of the users U..., undoably (preview and "
      "confirmation as flush)");
  revoke_users->add_option("U", bulk_users, "user ids")->required();
  two_step(revoke_users);
  revoke_users->callback([&] {
    run = [&](Connection& cluster) {
      for (const std::string& user : bulk_users) {
        selector.mutable_users()->add_user_ids(user);
      }
      return BulkRevokeSessions(cluster, out, selector, bulk_reason,
                                confirmation);
    };
  });
  std::string attribute_key, attribute_value;
  CLI::App* revoke_attribute = app.add_subcommand(
      "revoke-attribute",
      "revoke every session whose attribute KEY is VALUE, undoably (preview "
      "and confirmation as flush)");
  revoke_attribute->add_option("KEY", attribute_key, "attribute key")
      ->required();
  revoke_attribute->add_option("VALUE", attribute_value, "its value")
      ->required();
  two_step(revoke_attribute);
  revoke_attribute->callback([&] {
    run = [&](Connection& cluster) {
      selector.mutable_attribute()->set_key(attribute_key);
      selector.mutable_attribute()->set_value(attribute_value);
      return BulkRevokeSessions(cluster, out, selector, bulk_reason,
                                confirmation);
    };
  });
  CLI::App* flushes = app.add_subcommand(
      "flushes", "the retained flushes and bulk revocations");
  flushes->require_subcommand(1);
  flushes
      ->add_subcommand("list",
                       "every retained flush and bulk revocation: id, what, "
                       "when, how many, restorable until")
      ->callback([&] {
        run = [&](Connection& cluster) { return ListFlushes(cluster, out); };
      });
  uint64_t restore_id = 0;
  CLI::App* restore = app.add_subcommand(
      "restore",
      "undo flush or bulk revocation ID (sessionctl flushes list): its "
      "sessions validate again, those expired meanwhile stay expired; shows "
      "the revocation and asks to type its id back");
  restore->add_option("ID", restore_id, "the revocation's id")
      ->required()
      ->check(CLI::PositiveNumber);
  restore->add_flag("--yes,-y", confirmation.yes,
                    "do not ask to type the id back (scripts)");
  restore->callback([&] {
    run = [&](Connection& cluster) {
      return RestoreFlush(cluster, out, restore_id, confirmation);
    };
  });

  // keys: the signing key ring (tools/sessionctl_keys.cc).
  CLI::App* keys = app.add_subcommand(
      "keys", "the JWT signing key ring: list, stage, activate, retire, jwks");
  keys->require_subcommand(1);
  keys->add_subcommand("list",
                       "every key: kid, state, times, live sessions it "
                       "signed, when a staged key may be activated")
      ->callback([&] {
        run = [&](Connection& cluster) {
          return ListSigningKeys(cluster, out);
        };
      });
  bool bootstrap = false;
  CLI::App* stage = keys->add_subcommand(
      "stage",
      "generate a key inside the cluster and publish it in the JWKS; it may "
      "sign once published for the JWKS max-age (keys activate)");
  stage->add_flag(
      "--bootstrap", bootstrap,
      "stage and activate at once: only for a ring that never had an "
      "active key (empty, or only retired keys)");
  stage->callback([&] {
    run = [&](Connection& cluster) {
      return StageSigningKey(cluster, out, bootstrap);
    };
  });
  std::string key_kid;
  CLI::App* activate = keys->add_subcommand(
      "activate",
      "make staged key KID the one that signs; the active key becomes "
      "retiring");
  activate->add_option("KID", key_kid, "the key's kid (keys list)")->required();
  activate->callback([&] {
    run = [&](Connection& cluster) {
      return ActivateSigningKey(cluster, out, key_kid);
    };
  });
  bool force_retire = false;
  CLI::App* retire = keys->add_subcommand(
      "retire",
      "take retiring (or staged) key KID out of the JWKS; refused while it "
      "signed live sessions unless --force");
  retire->add_option("KID", key_kid, "the key's kid (keys list)")->required();
  retire->add_flag("--force", force_retire,
                   "retire it although it signed live sessions (their tokens "
                   "stop verifying): asks to type their count back");
  retire->add_flag("--yes,-y", confirmation.yes,
                   "with --force: do not ask to type the count back "
                   "(scripts)");
  retire->callback([&] {
    run = [&](Connection& cluster) {
      return RetireSigningKey(cluster, out, key_kid, force_retire,
                              confirmation);
    };
  });
  keys->add_subcommand("jwks",
                       "the JWKS document as served (stdout) and its "
                       "max-age")
      ->callback([&] {
        run = [&](Connection& cluster) { return ShowJwks(cluster, out); };
      });
  CLI::App* breaker =
      app.add_subcommand("breaker",
                         "the mass-expiry breaker: stops expiry when far more "
                         "sessions would expire than their lifetimes predict");
  breaker->require_subcommand(1);
  breaker
      ->add_subcommand("status",
                       "open or closed, why, and how many sessions it holds "
                       "back")
      ->callback([&] {
        run = [&](Connection& cluster) {
          return ShowExpiryBreaker(cluster, out);
        };
      });
  CLI::App* resume = breaker->add_subcommand(
      "resume",
      "close an open breaker: shows how many sessions then expire and asks "
      "to type that count back");
  resume->add_flag("--yes,-y", confirmation.yes,
                   "do not ask to type the count back (scripts)");
  resume->callback([&] {
    run = [&](Connection& cluster) {
      return ResumeExpiry(cluster, out, confirmation);
    };
  });
  // audit: the replicated audit log (tools/sessionctl_audit.cc).
  AuditListOptions audit_options;
  uint64_t export_after = 0;
  CLI::App* audit = app.add_subcommand(
      "audit",
      "the audit log: every admin change (or refused attempt) and bulk "
      "revocation, who, from where, when, what, result; oldest first");
  audit->require_subcommand(0, 1);
  audit->add_option("--after", audit_options.after,
                    "only entries with a seq above SEQ");
  audit->add_option("--limit", audit_options.limit,
                    "at most N entries (default: every one)");
  audit->add_flag("--follow,-f", audit_options.follow,
                  "then print new entries as they come, until Ctrl-C (with "
                  "--json: one JSON object a line)");
  CLI::App* audit_export = audit->add_subcommand(
      "export",
      "every entry (with a seq above --after) as JSON lines on stdout, for "
      "archiving");
  audit_export->add_option("--after", export_after,
                           "only entries with a seq above SEQ");
  audit_export->callback([&] {
    // `audit`'s own flags, which export ignored (it wrote the whole log).
    for (const char* flag : {"--after", "--limit", "--follow"}) {
      if (audit->count(flag) > 0) {
        refuse = [flag] {
          return UsageError(absl::StrCat(
              "audit export: ", flag,
              " before 'export' is the listing's flag; export takes only "
              "--after, after 'export' (sessionctl audit export --after SEQ)"));
        };
        return;
      }
    }
    run = [&](Connection& cluster) {
      absl::Status exported = ExportAudit(cluster, out.stream, export_after);
      if (!exported.ok() && out.json) {
        // One line, as every line before it: a JSON-lines reader of the
        // archive then reads the error too.
        PrintErrorLine(out, exported);
        return AlreadyPrinted(exported);
      }
      return exported;
    };
  });
  audit->callback([&] {
    if (audit_export->parsed()) return;
    run = [&](Connection& cluster) {
      return ListAudit(cluster, out, audit_options);
    };
  });

  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    // The error may come before CLI11 has set --json: look for it.
    Output parse_out = out;
    parse_out.json =
        out.json || std::any_of(argv + 1, argv + argc, [](const char* arg) {
          return std::string_view(arg) == "--json";
        });
    PrintError(parse_out, UsageError(e.what()));
    std::fprintf(stderr,
                 "sessionctl: see 'sessionctl --help' (or 'sessionctl VERB "
                 "--help')\n");
    return kExitUsage;
  }

  absl::Status result;
  if (refuse) {
    result = refuse();
  } else if (local) {
    result = local();
  } else if (!run) {
    result = UsageError("no verb given");
  } else {
    absl::StatusOr<Settings> settings =
        ResolveSettings(flags, Environment::FromProcess());
    absl::StatusOr<Security> security =
        settings.ok() ? SecurityFor(*settings) : settings.status();
    if (!security.ok()) {
      result = security.status();
    } else {
      Connection cluster(settings->endpoints, settings->endpoints_source,
                         settings->timeout, *std::move(security));
      result = cluster.NotAllowed(run(cluster));
    }
  }
  // Output that never reached its file (a full disk, a closed pipe) fails
  // the command, whatever the cluster answered: an audit export or a JWKS
  // cut short on a full disk exited 0.
  if (std::fflush(out.stream) != 0 || std::ferror(out.stream) != 0) {
    const int error = errno;
    result = OutputNotWrittenError(absl::StrCat(
        "could not write the output (", std::strerror(error),
        "): what was written is incomplete",
        result.ok() ? "" : absl::StrCat("; and ", result.message())));
  }
  if (!result.ok()) {
    PrintError(out, result);
    if (ExitCodeFor(result) == kExitUsage) {
      std::fprintf(stderr, "sessionctl: see 'sessionctl --help'\n");
    }
  }
  return ExitCodeFor(result);
}

}  // namespace
}  // namespace sessiond::sessionctl

int main(int argc, char** argv) {
  return sessiond::sessionctl::Main(argc, argv);
}
