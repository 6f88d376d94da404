// Copyright sessiond authors. Licensed under the Apache License 2.0.
#include "server/auth.h"

#include <google/protobuf/descriptor.h>
#include <grpc/grpc_security_constants.h>
#include <grpcpp/security/auth_context.h>
#include <openssl/crypto.h>
#include <openssl/sha.h>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "common/read_file.h"
#include "common/status_macros.h"
#include "server/grpc_status.h"
#include "sessiond/v1/admin.pb.h"
#include "sessiond/v1/peer.pb.h"
#include "sessiond/v1/session.pb.h"

namespace sessiond::server {
namespace {

constexpr Role kAllRoles[] = {Role::kApp, Role::kAdmin, Role::kPeer,
                              Role::kReader};
constexpr char kTokenKey[] = "token_sha256";
constexpr char kNodeIdKey[] = "node_id";
constexpr size_t kMaxIdentityBytes = 255;

bool ValidIdentity(absl::string_view id) {
  if (id.empty() || id.size() > kMaxIdentityBytes) return false;
  for (char c : id) {
    if (absl::ascii_isspace(static_cast<unsigned char>(c)) || c == '=' ||
        c == ',' || c == '#' || static_cast<unsigned char>(c) < 0x20) {
      return false;
    }
  }
  return true;
}

std::optional<TokenDigest> ParseHexDigest(absl::string_view hex) {
  if (hex.size() != 64) return std::nullopt;
  TokenDigest digest;
  for (size_t i = 0; i < digest.size(); ++i) {
    int v = 0;
    for (char c : hex.substr(2 * i, 2)) {
      v <<= 4;
      if (c >= '0' && c <= '9') {
        v |= c - '0';
      } else if (c >= 'a' && c <= 'f') {
        v |= c - 'a' + 10;
      } else if (c >= 'A' && c <= 'F') {
        v |= c - 'A' + 10;
      } else {
        return std::nullopt;
      }
    }
    digest[i] = static_cast<uint8_t>(v);
  }
  return digest;
}

}  // namespace

absl::string_view RoleName(Role role) {
  switch (role) {
    case Role::kApp:
      return "app";
    case Role::kAdmin:
      return "admin";
    case Role::kPeer:
      return "peer";
    case Role::kReader:
      return "reader";
  }
  return "?";
}

std::optional<Role> ParseRole(absl::string_view name) {
  for (Role r : kAllRoles) {
    if (RoleName(r) == name) return r;
  }
  return std::nullopt;
}

std::string RoleSet::ToString(absl::string_view separator) const {
  std::vector<absl::string_view> names;
  for (Role r : kAllRoles) {
    if (Has(r)) names.push_back(RoleName(r));
  }
  return absl::StrJoin(names, separator);
}

TokenDigest DigestToken(absl::string_view token) {
  TokenDigest digest;
  SHA256(reinterpret_cast<const unsigned char*>(token.data()), token.size(),
         digest.data());
  return digest;
}

absl::StatusOr<AuthConfig> ParseAuthConfig(absl::string_view text,
                                           absl::string_view origin) {
  AuthConfig config;
  // Token lines are checked against the roles lines once all are read.
  struct PendingToken {
    int line;
    AuthConfig::Token token;
  };
  std::vector<PendingToken> pending;
  // Node id lines, checked the same way (their identity needs role peer).
  struct PendingNode {
    int line;
    std::string identity;
    uint64_t node;
  };
  std::vector<PendingNode> pending_nodes;
  absl::flat_hash_map<std::string, int> identity_line;
  int line_no = 0;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    ++line_no;
    auto error = [&](absl::string_view what) {
      return absl::InvalidArgumentError(
          absl::StrCat(origin, ":", line_no, ": ", what));
    };
    if (size_t hash = line.find('#'); hash != absl::string_view::npos) {
      line = line.substr(0, hash);
    }
    line = absl::StripAsciiWhitespace(line);
    if (line.empty()) continue;
    size_t eq = line.find('=');
    if (eq == absl::string_view::npos) {
      // The line is not echoed: it may be a token pasted by mistake.
      return error(absl::StrCat("expected `identity = role[,role...]` or `",
                                kTokenKey,
                                " = <sha256 hex> identity`; the line has no "
                                "'='"));
    }
    absl::string_view key = absl::StripAsciiWhitespace(line.substr(0, eq));
    absl::string_view value = absl::StripAsciiWhitespace(line.substr(eq + 1));
    if (key == kTokenKey) {
      std::vector<absl::string_view> parts =
          absl::StrSplit(value, absl::ByAnyChar(" \t"), absl::SkipEmpty());
      if (parts.size() != 2) {
        return error(
            absl::StrCat("expected `", kTokenKey, " = <sha256 hex> identity`"));
      }
      std::optional<TokenDigest> digest = ParseHexDigest(parts[0]);
      if (!digest.has_value()) {
        return error(absl::StrCat(
            "token digest must be 64 hex digits (the SHA-256 of the token, "
            "not the token), got ",
            parts[0].size(), " characters"));
      }
      if (!ValidIdentity(parts[1])) {
        return error(absl::StrCat("invalid identity \"", parts[1], "\""));
      }
      for (const PendingToken& p : pending) {
        if (p.token.digest == *digest) {
          return error(absl::StrCat("the same token digest is already on line ",
                                    p.line));
        }
      }
      pending.push_back({line_no, {*digest, std::string(parts[1])}});
      continue;
    }
    if (key == kNodeIdKey) {
      std::vector<absl::string_view> parts =
          absl::StrSplit(value, absl::ByAnyChar(" \t"), absl::SkipEmpty());
      uint64_t node = 0;
      if (parts.size() != 2 || !absl::SimpleAtoi(parts[0], &node) ||
          node == 0) {
        return error(absl::StrCat("expected `", kNodeIdKey,
                                  " = <node id, 1 or more> identity`"));
      }
      if (!ValidIdentity(parts[1])) {
        return error(absl::StrCat("invalid identity \"", parts[1], "\""));
      }
      for (const PendingNode& p : pending_nodes) {
        if (p.identity == parts[1]) {
          return error(absl::StrCat("identity \"", parts[1],
                                    "\" already has a node id on line ",
                                    p.line));
        }
      }
      pending_nodes.push_back({line_no, std::string(parts[1]), node});
      continue;
    }
    if (!ValidIdentity(key)) {
      return error(
          absl::StrCat("invalid identity \"", key,
                       "\" (1..255 characters, no whitespace, '=', ',' or "
                       "'#')"));
    }
    if (auto it = identity_line.find(key); it != identity_line.end()) {
      return error(absl::StrCat("identity \"", key,
                                "\" already has roles on line ", it->second));
    }
    RoleSet roles;
    for (absl::string_view name : absl::StrSplit(value, ',')) {
      name = absl::StripAsciiWhitespace(name);
      std::optional<Role> role = ParseRole(name);
      if (!role.has_value()) {
        return error(absl::StrCat("unknown role \"", name, "\" for \"", key,
                                  "\" (roles: app, admin, peer, reader)"));
      }
      roles.Add(*role);
    }
    identity_line.emplace(std::string(key), line_no);
    config.roles.emplace(std::string(key), roles);
  }
  for (PendingToken& p : pending) {
    if (!config.roles.contains(p.token.identity)) {
      return absl::InvalidArgumentError(
          absl::StrCat(origin, ":", p.line, ": token for identity \"",
                       p.token.identity, "\", which has no roles line"));
    }
    config.tokens.push_back(std::move(p.token));
  }
  for (PendingNode& p : pending_nodes) {
    auto it = config.roles.find(p.identity);
    if (it == config.roles.end() || !it->second.Has(Role::kPeer)) {
      return absl::InvalidArgumentError(
          absl::StrCat(origin, ":", p.line, ": node id for identity \"",
                       p.identity, "\", which has no peer role"));
    }
    config.node_ids.emplace(std::move(p.identity), p.node);
  }
  return config;
}

absl::StatusOr<AuthConfig> LoadAuthConfigFile(const std::string& path) {
  // A file that cannot be read whole is an error, never an empty or cut
  // config: that would withdraw every role, or drop the node id lines.
  absl::StatusOr<std::string> text = ReadWholeFile(path);
  if (!text.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("role file ", text.status().message()));
  }
  // Nor one read while a tool rewrote it in place: it can end mid-line, and
  // a line cut short can still parse ("token_sha256 = <hex> ops" of the
  // "ops-ci" being written hands that token ops's roles). A whole file
  // ends with its last line's newline.
  if (!text->empty() && text->back() != '\n') {
    return absl::InvalidArgumentError(absl::StrCat(
        "role file ", path,
        " does not end with a newline: it may have been read while being "
        "written. End its last line with a newline, and replace the file by "
        "renaming a new one into place rather than rewriting it"));
  }
  SESSIOND_ASSIGN_OR_RETURN(AuthConfig config, ParseAuthConfig(*text, path));
  // Nor an empty one that reads whole (truncated by a tool that writes it
  // anew, or only comments): every caller and every peer refused. Sent to
  // every node, a reload of it stopped the cluster.
  if (config.roles.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "role file ", path,
        " gives no identity a role (is it empty, or being rewritten?): every "
        "call and every peer would be refused; list `identity = role` lines "
        "(docs/OPERATIONS.md, TLS and roles)"));
  }
  return config;
}

absl::Status MethodTable::AddService(
    const google::protobuf::ServiceDescriptor& service, RoleSet roles) {
  if (roles.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("no roles for service ", service.full_name()));
  }
  for (int i = 0; i < service.method_count(); ++i) {
    RoleSet& entry = methods_[absl::StrCat("/", service.full_name(), "/",
                                           service.method(i)->name())];
    for (Role r : kAllRoles) {
      if (roles.Has(r)) entry.Add(r);
    }
  }
  return absl::OkStatus();
}

absl::Status MethodTable::AddRoleToMethods(
    const google::protobuf::ServiceDescriptor& service,
    std::initializer_list<absl::string_view> methods, Role role) {
  for (absl::string_view name : methods) {
    if (service.FindMethodByName(std::string(name)) == nullptr) {
      return absl::NotFoundError(
          absl::StrCat(service.full_name(), " has no method ", name));
    }
    methods_[absl::StrCat("/", service.full_name(), "/", name)].Add(role);
  }
  return absl::OkStatus();
}

absl::StatusOr<MethodTable> MethodTable::Sessiond() {
  // Reached through a message of each file, which also makes sure the
  // file's descriptor is linked in and registered.
  const google::protobuf::ServiceDescriptor* session =
      v1::CreateSessionRequest::descriptor()->file()->FindServiceByName(
          "SessionService");
  const google::protobuf::ServiceDescriptor* admin =
      v1::ClusterStatusRequest::descriptor()->file()->FindServiceByName(
          "AdminService");
  const google::protobuf::ServiceDescriptor* peer =
      v1::internal::HelloRequest::descriptor()->file()->FindServiceByName(
          "RaftPeer");
  if (session == nullptr || admin == nullptr || peer == nullptr) {
    return absl::InternalError("a sessiond service is missing from the protos");
  }
  MethodTable table;
  SESSIOND_RETURN_IF_ERROR(table.AddService(*session, {Role::kApp}));
  // Every AdminService method is admin-only; ListAudit stays so (no reader
  // role): the audit log names identities and their peers.
  SESSIOND_RETURN_IF_ERROR(table.AddService(*admin, {Role::kAdmin}));
  SESSIOND_RETURN_IF_ERROR(table.AddService(*peer, {Role::kPeer}));
  SESSIOND_RETURN_IF_ERROR(table.AddRoleToMethods(
      *session,
      {"ValidateSession", "BatchValidateSessions", "StreamValidateSessions",
       "ListUserSessions", "GetSession"},
      Role::kReader));
  SESSIOND_RETURN_IF_ERROR(
      table.AddRoleToMethods(*session, {"GetSession"}, Role::kAdmin));
  // gRPC's health service (balancers' probes) for everyone with an
  // identity; reflection (what the API is) for admins.
  SESSIOND_RETURN_IF_ERROR(
      table.AddMethod("/grpc.health.v1.Health/Check", RoleSet::All()));
  SESSIOND_RETURN_IF_ERROR(
      table.AddMethod("/grpc.health.v1.Health/Watch", RoleSet::All()));
  SESSIOND_RETURN_IF_ERROR(table.AddMethod(
      "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
      {Role::kAdmin}));
  return table;
}

absl::Status MethodTable::AddMethod(absl::string_view full_method,
                                    RoleSet roles) {
  std::vector<absl::string_view> parts = absl::StrSplit(full_method, '/');
  if (parts.size() != 3 || !parts[0].empty() || parts[1].empty() ||
      parts[2].empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "method \"", full_method, "\" is not /package.Service/Method"));
  }
  if (roles.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("no roles for method ", full_method));
  }
  RoleSet& entry = methods_[full_method];
  for (Role r : kAllRoles) {
    if (roles.Has(r)) entry.Add(r);
  }
  return absl::OkStatus();
}

std::optional<RoleSet> MethodTable::Find(absl::string_view full_method) const {
  auto it = methods_.find(full_method);
  if (it == methods_.end()) return std::nullopt;
  return it->second;
}

absl::StatusOr<Caller> Authorizer::Authenticate(
    const PresentedCredentials& creds) const {
  if (creds.authorization.has_value()) {
    absl::string_view value = *creds.authorization;
    constexpr absl::string_view kScheme = "bearer ";
    if (value.size() <= kScheme.size() ||
        !absl::EqualsIgnoreCase(value.substr(0, kScheme.size()), kScheme)) {
      return absl::UnauthenticatedError(
          "the authorization metadata is not `Bearer <token>`");
    }
    absl::string_view token =
        absl::StripLeadingAsciiWhitespace(value.substr(kScheme.size()));
    if (token.empty()) {
      return absl::UnauthenticatedError("empty bearer token");
    }
    const TokenDigest digest = DigestToken(token);
    // Every digest is compared, in constant time each, so the time taken
    // tells nothing about how close a guess came.
    const AuthConfig::Token* match = nullptr;
    for (const AuthConfig::Token& t : config_.tokens) {
      const bool equal =
          CRYPTO_memcmp(t.digest.data(), digest.data(), digest.size()) == 0;
      if (equal) match = &t;
    }
    if (match == nullptr) {
      return absl::UnauthenticatedError("bearer token not recognised");
    }
    return Caller{match->identity, AuthMethod::kBearerToken};
  }
  if (creds.certificate_names.empty()) {
    return absl::UnauthenticatedError(
        "no identity: present a client certificate or a bearer token");
  }
  for (const std::string& name : creds.certificate_names) {
    if (config_.roles.contains(name)) {
      return Caller{name, AuthMethod::kCertificate};
    }
  }
  return Caller{creds.certificate_names.front(), AuthMethod::kCertificate};
}

absl::StatusOr<Caller> Authorizer::Authorize(
    absl::string_view full_method, const PresentedCredentials& creds) const {
  SESSIOND_ASSIGN_OR_RETURN(Caller caller, Authenticate(creds));
  std::optional<RoleSet> needed = methods_.Find(full_method);
  if (!needed.has_value()) {
    return absl::PermissionDeniedError(
        absl::StrCat("identity \"", caller.identity, "\" may not call ",
                     full_method, ": no role may call it"));
  }
  const RoleSet has = RolesOf(caller.identity);
  if (!has.Intersects(*needed)) {
    return absl::PermissionDeniedError(absl::StrCat(
        "identity \"", caller.identity, "\" may not call ", full_method,
        ": it needs role ", needed->ToString(" or "), ", and \"",
        caller.identity, "\" has ",
        has.empty() ? "no roles" : absl::StrCat("role ", has.ToString(", "))));
  }
  return caller;
}

absl::Status Authorizer::AuthorizeTouch(
    const PresentedCredentials& creds) const {
  SESSIOND_ASSIGN_OR_RETURN(Caller caller, Authenticate(creds));
  const RoleSet has = RolesOf(caller.identity);
  if (has.Has(Role::kApp)) return absl::OkStatus();
  return absl::PermissionDeniedError(absl::StrCat(
      "identity \"", caller.identity,
      "\" may not touch sessions (touch=true slides a session's idle "
      "timeout, a write): it needs role app, and \"",
      caller.identity, "\" has ",
      has.empty() ? "no roles" : absl::StrCat("role ", has.ToString(", ")),
      "; validate with touch=false"));
}

absl::Status Authorizer::AuthorizeNode(const PresentedCredentials& creds,
                                       uint64_t from) const {
  if (config_.node_ids.empty()) return absl::OkStatus();
  SESSIOND_ASSIGN_OR_RETURN(Caller caller, Authenticate(creds));
  auto it = config_.node_ids.find(caller.identity);
  if (it == config_.node_ids.end()) {
    return absl::PermissionDeniedError(absl::StrCat(
        "identity \"", caller.identity, "\" may not send Raft traffic as node ",
        from, ": the role file ties no node id to it (add `node_id = ", from,
        " ", caller.identity, "` if it is that node's)"));
  }
  if (it->second != from) {
    return absl::PermissionDeniedError(
        absl::StrCat("identity \"", caller.identity, "\" is node ", it->second,
                     " and may not send Raft traffic as node ", from));
  }
  return absl::OkStatus();
}

absl::Status Authorizer::AuthorizePeerServer(
    const std::vector<std::string>& certificate_names, uint64_t node) const {
  PresentedCredentials creds;
  creds.certificate_names = certificate_names;
  SESSIOND_ASSIGN_OR_RETURN(Caller server, Authenticate(creds));
  const RoleSet has = RolesOf(server.identity);
  if (!has.Has(Role::kPeer)) {
    return absl::PermissionDeniedError(absl::StrCat(
        "the server at node ", node, "'s peer address is identity \"",
        server.identity, "\", which has ",
        has.empty() ? "no roles" : absl::StrCat("role ", has.ToString(", ")),
        ", not peer: not a member of this cluster"));
  }
  if (config_.node_ids.empty()) return absl::OkStatus();
  auto it = config_.node_ids.find(server.identity);
  if (it == config_.node_ids.end() || it->second != node) {
    return absl::PermissionDeniedError(absl::StrCat(
        "the server at node ", node, "'s peer address is identity \"",
        server.identity, "\", which the role file ties to ",
        it == config_.node_ids.end() ? std::string("no node id")
                                     : absl::StrCat("node ", it->second),
        ", not to node ", node,
        " (another member's certificate, or a wrong address for node ", node,
        ")"));
  }
  return absl::OkStatus();
}

RoleSet Authorizer::RolesOf(const std::string& identity) const {
  auto it = config_.roles.find(identity);
  return it == config_.roles.end() ? RoleSet() : it->second;
}

void AuthProcessor::SetAuthorizer(
    std::shared_ptr<const Authorizer> authorizer) {
  absl::MutexLock lock(&mu_);
  authorizer_ = std::move(authorizer);
  generation_.fetch_add(1, std::memory_order_acq_rel);
}

std::shared_ptr<const Authorizer> AuthProcessor::authorizer() const {
  absl::MutexLock lock(&mu_);
  return authorizer_;
}

grpc::Status AuthProcessor::Process(const InputMetadata& auth_metadata,
                                    grpc::AuthContext* context,
                                    OutputMetadata* /*consumed_auth_metadata*/,
                                    OutputMetadata* /*response_metadata*/) {
  std::shared_ptr<const Authorizer> authorizer = this->authorizer();
  absl::string_view method;
  PresentedCredentials creds;
  for (const auto& [key, value] : auth_metadata) {
    absl::string_view k(key.data(), key.size());
    if (k == ":path") {
      method = absl::string_view(value.data(), value.size());
    } else if (k == "authorization") {
      if (creds.authorization.has_value()) {
        return ToGrpcStatus(absl::UnauthenticatedError(
            "more than one authorization metadata value"));
      }
      creds.authorization.emplace(value.data(), value.size());
    }
  }
  creds.certificate_names = CertificateNames(*context);
  // Nothing is consumed and nothing recorded in `context` (the
  // connection's): server/auth.h says why.
  absl::StatusOr<Caller> caller = authorizer->Authorize(method, creds);
  if (!caller.ok()) return ToGrpcStatus(caller.status());
  return grpc::Status::OK;
}

absl::StatusOr<Caller> AuthProcessor::CallerOf(
    const grpc::ServerContextBase& context) const {
  return authorizer()->Authenticate(PresentedBy(context));
}

absl::Status AuthProcessor::Reauthorize(const grpc::ServerContextBase& context,
                                        absl::string_view full_method) const {
  return authorizer()->Authorize(full_method, PresentedBy(context)).status();
}

absl::Status AuthProcessor::ReauthorizeIfReloaded(
    const grpc::ServerContextBase& context, absl::string_view full_method,
    std::optional<uint64_t>* judged) const {
  const uint64_t now = generation();
  if (*judged == now) return absl::OkStatus();
  SESSIOND_RETURN_IF_ERROR(Reauthorize(context, full_method));
  *judged = now;
  return absl::OkStatus();
}

absl::Status AuthProcessor::AuthorizeTouch(
    const grpc::ServerContextBase& context) const {
  return authorizer()->AuthorizeTouch(PresentedBy(context));
}

absl::Status AuthProcessor::AuthorizeNode(
    const grpc::ServerContextBase& context, uint64_t from) const {
  return authorizer()->AuthorizeNode(PresentedBy(context), from);
}

std::vector<std::string> CertificateNames(const grpc::AuthContext& context) {
  std::vector<std::string> names;
  for (const grpc::string_ref& cn :
       context.FindPropertyValues(GRPC_X509_CN_PROPERTY_NAME)) {
    names.emplace_back(cn.data(), cn.size());
  }
  for (const grpc::string_ref& san :
       context.FindPropertyValues(GRPC_X509_SAN_PROPERTY_NAME)) {
    names.emplace_back(san.data(), san.size());
  }
  return names;
}

PresentedCredentials PresentedBy(const grpc::ServerContextBase& context) {
  PresentedCredentials creds;
  const auto& metadata = context.client_metadata();
  if (auto it = metadata.find("authorization"); it != metadata.end()) {
    creds.authorization.emplace(it->second.data(), it->second.size());
  }
  if (std::shared_ptr<const grpc::AuthContext> auth = context.auth_context()) {
    creds.certificate_names = CertificateNames(*auth);
  }
  return creds;
}

}  // namespace sessiond::server
