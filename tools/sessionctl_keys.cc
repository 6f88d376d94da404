// Copyright sessiond authors. Licensed under the Apache License 2.0.
//
// sessionctl's `keys` verbs: the signing key ring (AdminService.ListKeys,
// StageKey, ActivateKey, RetireKey, GetJwks; keys.proto). Tables and JSON as
// the other verbs (docs/OPERATIONS.md, "sessionctl").
#include <cstdint>
#include <cstdio>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/status_macros.h"
#include "nlohmann/json.hpp"
#include "sessiond/v1/keys.pb.h"
#include "tools/sessionctl_commands.h"
#include "tools/sessionctl_errors.h"
#include "tools/sessionctl_explain.h"
#include "tools/sessionctl_output.h"

namespace sessiond::sessionctl {
namespace {

using nlohmann::json;

// Where the operator reads about the ring.
constexpr absl::string_view kSeeDocs =
    "docs/OPERATIONS.md, \"Signing keys and JWT tokens\"";

// Explain (tools/sessionctl_explain.h) for a key-ring call: a `write`, or a
// read; `refused` is what to do when the cluster refused it.
absl::Status Explained(const absl::Status& status, absl::string_view what,
                       const Connection& cluster, bool write,
                       absl::string_view refused,
                       absl::string_view unknown = "") {
  return Explain(status, what, write ? Kind::kWrite : Kind::kRead,
                 cluster.timeout(), unknown, refused);
}

json WithEndpoint(const google::protobuf::Message& response,
                  const std::string& endpoint) {
  json doc = MessageToJson(response);
  doc["endpoint"] = endpoint;
  return doc;
}

std::string KeyState(v1::SigningKeyState state) {
  switch (state) {
    case v1::SIGNING_KEY_STAGED:
      return "staged";
    case v1::SIGNING_KEY_ACTIVE:
      return "active";
    case v1::SIGNING_KEY_RETIRING:
      return "retiring";
    case v1::SIGNING_KEY_RETIRED:
      return "retired";
    default:
      return "unspecified";
  }
}

std::string Algorithm(v1::SigningAlgorithm algorithm) {
  return algorithm == v1::SIGNING_ALGORITHM_ED25519 ? "Ed25519" : "unknown";
}

// When a STAGED key may be activated, as far as publication goes: "now",
// or "in 4m59s".
std::string Activatable(const v1::SigningKeyInfo& key, absl::Time now) {
  if (key.state() != v1::SIGNING_KEY_STAGED) return "-";
  if (absl::FromUnixMillis(key.activatable_at_ms()) <= now) return "now";
  return FormatRelativeMs(key.activatable_at_ms(), now);
}

std::string Sessions(uint64_t n) {
  return absl::StrCat(n, n == 1 ? " live session" : " live sessions");
}

// The live sessions a RetireKey refusal says the key signed: its message
// ends "... expected_live_sessions=N" (storage/key_ring.cc). False when it
// does not say.
bool CountInRefusal(absl::string_view message, uint64_t* count) {
  constexpr absl::string_view kField = "expected_live_sessions=";
  size_t at = message.rfind(kField);
  if (at == absl::string_view::npos) return false;
  absl::string_view digits = message.substr(at + kField.size());
  size_t end = 0;
  while (end < digits.size() && absl::ascii_isdigit(digits[end])) ++end;
  return end > 0 && absl::SimpleAtoi(digits.substr(0, end), count);
}

// ListKeys' live_sessions of `kid` (as the answering node counts them).
absl::StatusOr<uint64_t> LiveSessionsOf(Connection& cluster,
                                        const std::string& kid) {
  v1::ListKeysResponse response;
  std::string endpoint;
  const absl::Status s = cluster.AdminChange(
      [&](v1::AdminService::Stub& stub, grpc::ClientContext& context) {
        return stub.ListKeys(&context, v1::ListKeysRequest(), &response);
      },
      &endpoint);
  if (!s.ok()) return Explained(s, "keys retire (list)", cluster, false, "");
  for (const v1::SigningKeyInfo& key : response.keys()) {
    if (key.kid() == kid) return key.live_sessions();
  }
  return absl::NotFoundError(absl::StrCat("keys retire: no key has kid ", kid,
                                          " (`sessionctl keys list`)"));
}

}  // namespace

absl::Status ListSigningKeys(Connection& cluster, const Output& out) {
  v1::ListKeysResponse response;
  std::string endpoint;
  const absl::Status s = cluster.AdminChange(
      [&](v1::AdminService::Stub& stub, grpc::ClientContext& context) {
        return stub.ListKeys(&context, v1::ListKeysRequest(), &response);
      },
      &endpoint);
  if (!s.ok()) {
    return Explained(s, "keys list", cluster, /*write=*/false, "");
  }
  const json doc = WithEndpoint(response, endpoint);
  if (response.keys().empty()) {
    return Print(
        out, doc,
        absl::StrCat("the key ring is empty: no token can be issued as a JWT. "
                     "Start every node with the same --kek_file (the first "
                     "leader then bootstraps a key), or: sessionctl keys stage "
                     "--bootstrap (",
                     kSeeDocs, ")\n"));
  }
  const absl::Time now = absl::Now();
  Table table({"KID", "STATE", "ALG", "STAGED", "ACTIVATED", "RETIRING",
               "LIVE SESSIONS", "ACTIVATABLE"});
  for (const v1::SigningKeyInfo& key : response.keys()) {
    table.AddRow({key.kid(), KeyState(key.state()), Algorithm(key.algorithm()),
                  FormatRelativeMs(key.staged_at_ms(), now),
                  FormatRelativeMs(key.activated_at_ms(), now),
                  FormatRelativeMs(key.retiring_at_ms(), now),
                  absl::StrCat(key.live_sessions()), Activatable(key, now)});
  }
  std::string text = table.Render();
  if (response.active_kid().empty()) {
    absl::StrAppend(&text,
                    "no active key yet: activate a staged one once it is "
                    "activatable (sessionctl keys activate -- KID)\n");
  } else {
    absl::StrAppend(&text, "active key: ", response.active_kid(), "\n");
  }
  absl::StrAppend(&text, "(answered by ", endpoint,
                  "; live sessions as that node counts them)\n");
  return Print(out, doc, text);
}

absl::Status StageSigningKey(Connection& cluster, const Output& out,
                             bool bootstrap) {
  v1::StageKeyRequest request;
  request.set_bootstrap(bootstrap);
  v1::StageKeyResponse response;
  std::string endpoint;
  const absl::Status s = cluster.AdminChange(
      [&](v1::AdminService::Stub& stub, grpc::ClientContext& context) {
        return stub.StageKey(&context, request, &response);
      },
      &endpoint);
  if (!s.ok()) {
    return Explained(
        s, bootstrap ? "keys stage --bootstrap" : "keys stage", cluster,
        /*write=*/true,
        absl::StrCat(
            "`sessionctl keys list` shows the ring. Staging needs every node "
            "started with the same --kek_file; --bootstrap only fits a "
            "ring that never had an active key (",
            kSeeDocs, ")."),
        "`sessionctl keys list` shows whether a key was staged; staging "
        "again stages another one.");
  }
  const v1::SigningKeyInfo& key = response.key();
  const absl::Time now = absl::Now();
  std::string text;
  if (key.state() == v1::SIGNING_KEY_ACTIVE) {
    text = absl::StrCat("bootstrapped key ", key.kid(), " (",
                        Algorithm(key.algorithm()),
                        "): it is the active key and signs new JWTs now\n");
  } else {
    text = absl::StrCat(
        "staged key ", key.kid(), " (", Algorithm(key.algorithm()),
        "): published in the JWKS now, signs nothing yet.\n",
        "It may be activated from ", FormatTimeMs(key.activatable_at_ms(), now),
        ", once every member has published it that long (a kid may start "
        "with '-': `--` ends the options):\n  sessionctl keys activate -- ",
        key.kid(), "\n");
  }
  return Print(out, WithEndpoint(response, endpoint), text);
}

absl::Status ActivateSigningKey(Connection& cluster, const Output& out,
                                const std::string& kid) {
  v1::ActivateKeyRequest request;
  request.set_kid(kid);
  v1::ActivateKeyResponse response;
  std::string endpoint;
  const absl::Status s = cluster.AdminChange(
      [&](v1::AdminService::Stub& stub, grpc::ClientContext& context) {
        return stub.ActivateKey(&context, request, &response);
      },
      &endpoint);
  if (!s.ok()) {
    return Explained(s, "keys activate", cluster, /*write=*/true,
                     "`sessionctl keys list` shows each staged key's "
                     "ACTIVATABLE time; retry then (and once every voter "
                     "has caught up: `sessionctl status`).",
                     "`sessionctl keys list` shows which key is active; "
                     "activating it again is refused, not repeated.");
  }
  std::string text = absl::StrCat("activated key ", response.activated().kid(),
                                  ": it signs new JWTs now\n");
  if (response.has_retiring() && !response.retiring().kid().empty()) {
    absl::StrAppend(
        &text, "key ", response.retiring().kid(),
        " is retiring: it signs nothing and verifies the tokens it signed ("
        "LIVE SESSIONS in `sessionctl keys list`); once those are gone:\n  "
        "sessionctl keys retire -- ",
        response.retiring().kid(), "\n");
  }
  return Print(out, WithEndpoint(response, endpoint), text);
}

absl::Status RetireSigningKey(Connection& cluster, const Output& out,
                              const std::string& kid, bool force,
                              const Confirmation& confirmation) {
  v1::RetireKeyRequest request;
  request.set_kid(kid);
  v1::RetireKeyResponse response;
  std::string endpoint;
  const auto send = [&] {
    return cluster.AdminChange(
        [&](v1::AdminService::Stub& stub, grpc::ClientContext& context) {
          return stub.RetireKey(&context, request, &response);
        },
        &endpoint);
  };
  constexpr absl::string_view kUnknown =
      "`sessionctl keys list` shows whether it was retired; retiring it "
      "again is refused, not repeated.";
  absl::Status s = send();
  uint64_t live = 0;
  if (absl::IsFailedPrecondition(s) &&
      absl::StrContains(s.message(), "live session")) {
    if (!CountInRefusal(s.message(), &live)) {
      absl::StatusOr<uint64_t> listed = LiveSessionsOf(cluster, kid);
      if (!listed.ok()) return listed.status();
      live = *listed;
    }
    if (!force) {
      return absl::FailedPreconditionError(absl::StrCat(
          "keys retire: kid ", kid, " signed ", Sessions(live),
          ": retiring it makes their tokens stop verifying. Nothing was "
          "changed.\nWait until they expire or are revoked (LIVE SESSIONS in "
          "`sessionctl keys list`), or retire it anyway with: sessionctl "
          "keys retire --force -- ",
          kid, " (asks to type ", live, " back)"));
    }
    std::fputs(
        absl::StrCat("keys retire: kid ", kid, " signed ", Sessions(live),
                     " now. Retiring it takes the key out of the "
                     "JWKS and their tokens stop verifying.\n")
            .c_str(),
        confirmation.prompt);
    SESSIOND_RETURN_IF_ERROR(AskForTheCount(confirmation, "keys retire", live));
    request.set_force(true);
    request.set_expected_live_sessions(live);
    s = send();
  }
  if (!s.ok()) {
    return Explained(
        s, "keys retire", cluster, /*write=*/true,
        "`sessionctl keys list` shows the keys, their states and LIVE "
        "SESSIONS now. The active key is never retired: stage and activate "
        "another first. A count that changed since it was typed: run it "
        "again.",
        kUnknown);
  }
  std::string text = absl::StrCat("retired key ", response.key().kid(),
                                  ": it left the JWKS and verifies nothing");
  if (response.live_sessions() > 0) {
    absl::StrAppend(&text, "; the ", Sessions(response.live_sessions()),
                    " it signed no longer verify");
  }
  text += "\n";
  return Print(out, WithEndpoint(response, endpoint), text);
}

absl::Status ShowJwks(Connection& cluster, const Output& out) {
  v1::GetJwksResponse response;
  std::string endpoint;
  const absl::Status s = cluster.AdminChange(
      [&](v1::AdminService::Stub& stub, grpc::ClientContext& context) {
        return stub.GetJwks(&context, v1::GetJwksRequest(), &response);
      },
      &endpoint);
  if (absl::IsUnavailable(s) &&
      absl::StrContains(s.message(), "no signing key yet")) {
    // UNAVAILABLE for the HTTP endpoint's 503, but a leader answered: the
    // "no leader, retry" advice would mislead.
    return absl::Status(
        s.code(),
        absl::StrCat("keys jwks: UNAVAILABLE: ", s.message(),
                     "\nThe cluster answered: it has no key to publish. Give "
                     "every node a key-encryption key (--kek_file), then run "
                     "`sessionctl keys stage --bootstrap`."));
  }
  if (!s.ok()) return Explained(s, "keys jwks", cluster, /*write=*/false, "");
  if (out.json) {
    json doc = WithEndpoint(response, endpoint);
    // The document itself too, as an object (jwks_json is it as served).
    doc["jwks"] = json::parse(response.jwks_json(), nullptr,
                              /*allow_exceptions=*/false);
    PrintJson(out.stream, doc, /*one_line=*/false);
    return absl::OkStatus();
  }
  // The document as served on stdout (`> jwks.json` keeps it intact); the
  // caching facts on stderr.
  std::string text = response.jwks_json();
  if (text.empty() || text.back() != '\n') text += "\n";
  std::fputs(text.c_str(), out.stream);
  std::fflush(out.stream);
  std::fprintf(stderr,
               "max-age %lld s (Cache-Control: max-age=%lld); key ring index "
               "%llu; answered by %s\n",
               static_cast<long long>(response.max_age_s()),
               static_cast<long long>(response.max_age_s()),
               static_cast<unsigned long long>(response.key_ring_index()),
               endpoint.c_str());
  return absl::OkStatus();
}

}  // namespace sessiond::sessionctl
