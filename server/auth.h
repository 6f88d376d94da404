// Copyright sessiond authors. Licensed under the Apache License 2.0.
#ifndef SESSIOND_SERVER_AUTH_H_
#define SESSIOND_SERVER_AUTH_H_

// Who may call what (issue 9, "TLS and roles").
//
// Four roles: `app` (sessiond.v1.SessionService), `admin`
// (sessiond.v1.AdminService), `peer` (sessiond.v1.internal.RaftPeer) and
// `reader` (ValidateSession, BatchValidateSessions, StreamValidateSessions,
// ListUserSessions, GetSession), without touch=true on a validation (a
// touch slides the idle timeout: a write). GetSession, the lookup by
// session_id that needs no token, is also open to `admin` (issue 9, "A
// friendlier API"). A stream is judged when it opens and again at its next
// message after each reload of the role file.
//
// An identity is a name: the client certificate's subject CN or one of its
// subject alternative names, or the identity a bearer token is configured
// for. The role file maps identities to roles and token digests to
// identities.
//
// The role file. One entry a line; `#` starts a comment; blank lines are
// ignored; whitespace around tokens is ignored:
//
// clang-format off
//   # identity = role[,role...]
//   app-frontend = app
//   ops          = admin, reader
//   node-1       = peer
//   # token_sha256 = <64 hex digits: SHA-256 of the token> <identity>
//   token_sha256 = 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08 ops
//   # node_id = <Raft node id> <identity with role peer>
//   node_id = 1 node-1
// clang-format on
//
// Identities are 1..255 characters, none of them whitespace, `=`, `,` or
// `#`; `token_sha256` and `node_id` are reserved. Roles are app, admin,
// peer, reader. A token line names an identity that has a roles line
// (anywhere in the file). Only digests are configured, never tokens:
// `printf %s "$TOKEN" | sha256sum` makes one. Errors name the file and the
// line.
//
// `node_id` lines tie peers to their node ids. Without any, a caller with
// role peer may send Raft traffic as any node id (as it always could).
// With at least one, Raft traffic that names a sender (a message batch, a
// snapshot stream, a forwarded write) is taken only from an identity tied
// to that node id: one member's certificate can no longer vote, append or
// install a snapshot as another member. An identity has at most one node
// id; several identities may share one (a certificate being replaced).

#include <grpcpp/security/auth_metadata_processor.h>
#include <grpcpp/server_context.h>

#include <array>
#include <atomic>
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"

namespace google::protobuf {
class ServiceDescriptor;
}  // namespace google::protobuf

namespace sessiond::server {

enum class Role : uint8_t { kApp = 0, kAdmin = 1, kPeer = 2, kReader = 3 };

// "app", "admin", "peer", "reader".
absl::string_view RoleName(Role role);
std::optional<Role> ParseRole(absl::string_view name);

// A set of roles. A value type.
class RoleSet {
 public:
  constexpr RoleSet() = default;
  constexpr RoleSet(std::initializer_list<Role> roles) {
    for (Role r : roles) bits_ |= Bit(r);
  }
  static constexpr RoleSet All() {
    return {Role::kApp, Role::kAdmin, Role::kPeer, Role::kReader};
  }

  void Add(Role role) { bits_ |= Bit(role); }
  bool Has(Role role) const { return (bits_ & Bit(role)) != 0; }
  bool Intersects(RoleSet other) const { return (bits_ & other.bits_) != 0; }
  bool empty() const { return bits_ == 0; }
  // "app or reader"-style lists use this: the names in Role order, joined by
  // `separator`.
  std::string ToString(absl::string_view separator = ",") const;

  friend bool operator==(RoleSet a, RoleSet b) { return a.bits_ == b.bits_; }

 private:
  static constexpr uint8_t Bit(Role r) {
    return static_cast<uint8_t>(1u << static_cast<uint8_t>(r));
  }
  uint8_t bits_ = 0;
};

// SHA-256 of a bearer token.
using TokenDigest = std::array<uint8_t, 32>;
TokenDigest DigestToken(absl::string_view token);

// The role file, parsed.
struct AuthConfig {
  absl::flat_hash_map<std::string, RoleSet> roles;  // identity -> roles
  struct Token {
    TokenDigest digest;
    std::string identity;
  };
  std::vector<Token> tokens;
  // identity -> the node id it sends Raft traffic as (`node_id` lines);
  // empty: senders are not tied to identities.
  absl::flat_hash_map<std::string, uint64_t> node_ids;
};

// Parses the role file format above. `origin` names the text in errors
// ("<origin>:<line>: ..."). INVALID_ARGUMENT on any error.
absl::StatusOr<AuthConfig> ParseAuthConfig(absl::string_view text,
                                           absl::string_view origin);
// Reads and parses `path`; INVALID_ARGUMENT also when it cannot be read.
absl::StatusOr<AuthConfig> LoadAuthConfigFile(const std::string& path);

// Full gRPC method name ("/sessiond.v1.SessionService/CreateSession") ->
// the roles any one of which lets a caller call it. Built from the
// services' descriptors, so a method added to a .proto is covered the day
// it is added. A value type.
class MethodTable {
 public:
  // sessiond's table: SessionService, AdminService and RaftPeer as the file
  // comment says. Fails only if a method named there left the protos.
  static absl::StatusOr<MethodTable> Sessiond();

  // Every method of `service` needs one of `roles` (added to what it had).
  // INVALID_ARGUMENT for an empty `roles`.
  absl::Status AddService(const google::protobuf::ServiceDescriptor& service,
                          RoleSet roles);
  // `role` may also call these methods of `service`. NOT_FOUND naming the
  // method when `service` has no method of that name.
  absl::Status AddRoleToMethods(
      const google::protobuf::ServiceDescriptor& service,
      std::initializer_list<absl::string_view> methods, Role role);

  // `roles` may call `full_method` ("/package.Service/Method"): for
  // services without a descriptor in this binary's pool, such as gRPC's
  // built-in health service. INVALID_ARGUMENT for a malformed name or
  // empty `roles`.
  absl::Status AddMethod(absl::string_view full_method, RoleSet roles);

  // The roles for `full_method`, or nullopt when the table does not cover
  // it (such a call is denied).
  std::optional<RoleSet> Find(absl::string_view full_method) const;
  const absl::flat_hash_map<std::string, RoleSet>& methods() const {
    return methods_;
  }

 private:
  absl::flat_hash_map<std::string, RoleSet> methods_;
};

// What a call presented, as the transport verified it.
struct PresentedCredentials {
  // The `authorization` metadata value, if any ("Bearer <token>").
  std::optional<std::string> authorization;
  // The verified client certificate's names: the subject CN first (when it
  // has one), then its subject alternative names in certificate order.
  // Empty without a client certificate.
  std::vector<std::string> certificate_names;
};

// How an identity was established.
enum class AuthMethod : uint8_t { kCertificate, kBearerToken };

struct Caller {
  std::string identity;
  AuthMethod method = AuthMethod::kCertificate;
};

// The decision for one call. Immutable after Create(), so thread-safe.
class Authorizer {
 public:
  Authorizer(AuthConfig config, MethodTable methods)
      : config_(std::move(config)), methods_(std::move(methods)) {}

  // Who the caller is:
  //   - with an `authorization` value: it must be `Bearer <token>` (scheme
  //     case-insensitive) with a configured token, compared by digest in
  //     constant time against every configured digest; a certificate, if
  //     any, is then not consulted (the token was asked for explicitly);
  //   - else the certificate: the first of its names that has a roles line,
  //     or, when none has, its first name (which then has no roles).
  // UNAUTHENTICATED with neither, or with a malformed header or an unknown
  // token (the message never contains the token).
  absl::StatusOr<Caller> Authenticate(const PresentedCredentials& creds) const;

  // Authenticate, then: PERMISSION_DENIED when the method is not in the
  // table or the identity has none of the roles it needs (the message names
  // the identity, the method and the roles needed). The caller on OK.
  absl::StatusOr<Caller> Authorize(absl::string_view full_method,
                                   const PresentedCredentials& creds) const;

  // Authenticate, then PERMISSION_DENIED unless the identity has role app:
  // a validation with touch=true slides the session's idle timeout, a write
  // the read-only `reader` role may not make (the message says so).
  absl::Status AuthorizeTouch(const PresentedCredentials& creds) const;

  // For Raft traffic naming node `from` as its sender: OK when no
  // `node_id` line is configured, or when one ties the caller's identity
  // to `from`; otherwise PERMISSION_DENIED naming both (UNAUTHENTICATED
  // as Authenticate).
  absl::Status AuthorizeNode(const PresentedCredentials& creds,
                             uint64_t from) const;

  // For a peer channel this node dials as node `node`'s: the server's
  // certificate names (verified by the handshake) must make an identity
  // with role peer, tied to `node` when `node_id` lines are configured, as
  // that node's own traffic to us must be. PERMISSION_DENIED naming the
  // identity otherwise (an app certificate, or another member's, serving
  // at that node's address would receive its appends and snapshots, answer
  // its Hello and acknowledge its forwarded writes).
  absl::Status AuthorizePeerServer(
      const std::vector<std::string>& certificate_names, uint64_t node) const;

  const AuthConfig& config() const { return config_; }
  const MethodTable& methods() const { return methods_; }

 private:
  RoleSet RolesOf(const std::string& identity) const;

  const AuthConfig config_;
  const MethodTable methods_;
};

// ---- gRPC glue ----
//
// Authorization runs in a grpc::AuthMetadataProcessor, not in a server
// interceptor:
//   - a processor can fail the call with its own status (UNAUTHENTICATED,
//     PERMISSION_DENIED and a message) before the call reaches any handler;
//     a gRPC 1.51 server interceptor cannot short-circuit a call at all (it
//     could only TryCancel, which the client sees as CANCELLED, and which
//     races the handler that already started);
//   - it gets the transport's AuthContext (the verified peer certificate)
//     and the request's metadata, `:path` (the method) included;
//   - it is cheap: IsBlocking() is false, so gRPC runs it inline on the
//     thread that received the headers, where any interceptor on a call
//     costs an extra completion-queue hop per batch (server/rpc_metrics.h).
// Its limits in gRPC 1.51:
//   - gRPC calls it only on listeners with secure credentials
//     (server/tls_credentials.h); a plaintext listener (loopback only,
//     issue 9) has no identities;
//   - the AuthContext it is given is the CONNECTION's, shared by every call
//     on it (server_auth_filter passes the channel's context, not a per-call
//     one), so it must not record the caller there: a token's identity
//     would stick to the connection's later calls (tests/server/tls_test.cc
//     saw exactly that), and concurrent calls would race on the property
//     list. It records nothing; a handler that needs the caller (audit,
//     per-identity limits) asks CallerOf, which decides again from the same
//     inputs (one SHA-256 when a token is used);
//   - for the same reason it leaves the `authorization` header in the
//     metadata (consuming it would hide the token from CallerOf), so
//     handlers must never log client metadata wholesale.

// Thread-safe: gRPC calls Process from its threads while SetAuthorizer may
// swap the policy (a reload); each call uses the policy it started with.
class AuthProcessor final : public grpc::AuthMetadataProcessor {
 public:
  explicit AuthProcessor(std::shared_ptr<const Authorizer> authorizer)
      : authorizer_(std::move(authorizer)) {}

  // Later calls use `authorizer`.
  void SetAuthorizer(std::shared_ptr<const Authorizer> authorizer);
  std::shared_ptr<const Authorizer> authorizer() const;
  // Counts SetAuthorizer calls: a stream authorized when it opened is judged
  // again (Reauthorize) once this moved, so a role or token withdrawn by a
  // reload stops working on streams already open too.
  uint64_t generation() const {
    return generation_.load(std::memory_order_acquire);
  }

  // For handlers: who made a call this processor let through (the same
  // decision again, with the policy in force now).
  absl::StatusOr<Caller> CallerOf(const grpc::ServerContextBase& context) const;
  // Authorizer::Authorize with the policy in force now, for a call let
  // through earlier (a long-lived stream).
  absl::Status Reauthorize(const grpc::ServerContextBase& context,
                           absl::string_view full_method) const;
  // For a long-lived stream: Reauthorize only when the policy changed since
  // `*judged`, the generation it was last judged by (none yet: judged now,
  // as a reload may have come between Process and the stream's start),
  // which then records the generation judged by.
  absl::Status ReauthorizeIfReloaded(const grpc::ServerContextBase& context,
                                     absl::string_view full_method,
                                     std::optional<uint64_t>* judged) const;
  // Authorizer::AuthorizeTouch with the policy in force now.
  absl::Status AuthorizeTouch(const grpc::ServerContextBase& context) const;
  // Authorizer::AuthorizeNode with the policy in force now.
  absl::Status AuthorizeNode(const grpc::ServerContextBase& context,
                             uint64_t from) const;

  bool IsBlocking() const override { return false; }
  grpc::Status Process(const InputMetadata& auth_metadata,
                       grpc::AuthContext* context,
                       OutputMetadata* consumed_auth_metadata,
                       OutputMetadata* response_metadata) override;

 private:
  mutable absl::Mutex mu_;
  std::shared_ptr<const Authorizer> authorizer_ ABSL_GUARDED_BY(mu_);
  std::atomic<uint64_t> generation_{0};
};

// What a stream's caller was last found allowed to do: a stream is
// authorized when it opens, and judged again at its next message once the
// role policy changed (AuthProcessor::generation), so a withdrawn role or
// token stops working on it too.
struct StreamAuthorization {
  // The policy judged by; none yet at first.
  std::optional<uint64_t> generation;
  // AuthorizeTouch's answer under that policy, once a request touched.
  std::optional<absl::Status> touch;
};

// The certificate names the transport verified (PresentedCredentials::
// certificate_names), read from an AuthContext.
std::vector<std::string> CertificateNames(const grpc::AuthContext& context);

// What a call presented: its `authorization` metadata and its connection's
// certificate names.
PresentedCredentials PresentedBy(const grpc::ServerContextBase& context);

}  // namespace sessiond::server

#endif  // SESSIOND_SERVER_AUTH_H_
