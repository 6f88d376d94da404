// Copyright sessiond authors. Licensed under the Apache License 2.0.
#ifndef SESSIOND_TOOLS_SESSIONCTL_CONNECTION_H_
#define SESSIOND_TOOLS_SESSIONCTL_CONNECTION_H_

#include <grpcpp/channel.h>
#include <grpcpp/client_context.h>
#include <grpcpp/security/credentials.h>

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "client/session_client.h"
#include "sessiond/v1/admin.grpc.pb.h"
#include "sessiond/v1/admin.pb.h"
#include "tools/sessionctl_config.h"

namespace sessiond::sessionctl {

// How sessionctl identifies itself to the cluster.
struct Security {
  // For every channel; null: plaintext.
  std::shared_ptr<grpc::ChannelCredentials> credentials;
  // What is presented, for messages (file names and where they were set,
  // never the token), e.g. "client certificate /etc/ops.pem (--tls-cert),
  // CA /etc/ca.pem (--tls-ca)". Empty for plaintext.
  std::string presented;
  bool tls() const { return credentials != nullptr; }
};

// The credentials `settings` asks for (client/tls.h): plaintext when no
// TLS file is set. A UsageError naming the file and where it was set when
// a file cannot be read or is not what it should be. The token is read
// from its file here and never printed.
absl::StatusOr<Security> SecurityFor(const Settings& settings);

// The cluster one sessionctl run talks to, through the endpoints it was
// given: one channel per address (each with its own connection) for the
// AdminService, and a client::SessionClient over all of them for the
// SessionService (which follows the leader and retries what is safe to
// retry; client/session_client.h).
//
// Not thread-safe: one command uses it at a time.
class Connection {
 public:
  // `source` says where the endpoints came from, for messages. `timeout`
  // bounds each step: connecting, and each call. `security`'s credentials
  // are used for every channel.
  Connection(std::vector<std::string> endpoints, std::string source,
             absl::Duration timeout, Security security = Security());
  ~Connection();

  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  // An endpoint whose channel is connected: the first in the order given
  // among those connected when one first is (all are dialled at once,
  // within the timeout). An UnreachableError (exit code 3) naming each
  // endpoint, what went wrong and what to check, when none connects.
  // Nothing is sent.
  absl::StatusOr<std::string> Reach();

  struct StatusAnswer {
    v1::ClusterStatusResponse response;
    std::string endpoint;  // the endpoint that answered
  };
  // AdminService.ClusterStatus: the answer of the first endpoint whose view
  // has a leader that reports itself as leader, else the first answer (a
  // node cut off from the leader may know none). UnreachableError when no
  // endpoint answers.
  absl::StatusOr<StatusAnswer> ClusterStatus(bool with_digests = false);

  using AdminCall = absl::FunctionRef<grpc::Status(v1::AdminService::Stub&,
                                                   grpc::ClientContext&)>;
  // An AdminService change (AddMember, ...): sent to an endpoint Reach()
  // found (any node forwards it to the leader). While a node answers an
  // error saying nothing was proposed ("sessiond-not-proposed"), it is
  // sent again, once per address: to the leader that node names
  // ("sessiond-leader"), else to the next endpoint connected now. Sets
  // `*endpoint` to where it was last sent.
  absl::Status AdminChange(AdminCall call, std::string* endpoint);

  // One AdminService call to `address` alone (with --timeout), for calls
  // that concern that very node (Backup).
  absl::Status AdminCallTo(const std::string& address, AdminCall call);

  // The SessionService client, made on first use.
  client::SessionClient& sessions();

  // After a SessionService call through sessions() failed: an
  // UnreachableError when the failure says no endpoint could be reached
  // (kUnavailable, nothing sent) and none connects now; else `status`.
  absl::Status Diagnose(const absl::Status& status, bool idempotent);

  // `status` (UNAUTHENTICATED or PERMISSION_DENIED from the cluster) as a
  // NotAllowedError (exit code 5) that says what sessionctl presented and
  // what to check. Any other status is returned as it is.
  absl::Status NotAllowed(const absl::Status& status) const;

  const std::vector<std::string>& endpoints() const { return endpoints_; }
  const std::string& source() const { return source_; }
  absl::Duration timeout() const { return timeout_; }

 private:
  std::shared_ptr<grpc::Channel> ChannelTo(const std::string& address);
  // A new channel to `address` with security_'s credentials.
  std::shared_ptr<grpc::Channel> NewChannel(const std::string& address) const;
  v1::AdminService::Stub& AdminStub(const std::string& address);
  // One AdminService call with a deadline of timeout_.
  grpc::Status CallAdmin(const std::string& address, AdminCall call,
                         grpc::ClientContext* context);
  // gRPC's reason why `address` cannot be reached (a ClusterStatus that
  // fails fast: a read, harmless should it reach a node after all).
  std::string Why(const std::string& address);

  const std::vector<std::string> endpoints_;
  const std::string source_;
  const absl::Duration timeout_;
  const Security security_;
  std::map<std::string, std::shared_ptr<grpc::Channel>> channels_;
  std::map<std::string, std::unique_ptr<v1::AdminService::Stub>> admin_;
  std::unique_ptr<client::SessionClient> sessions_;
};

// Whether `status`, from Connection::AdminChange or a write through
// Connection::sessions(), says the write was never proposed: nothing
// changed, and sending it again is safe.
bool NotProposed(const absl::Status& status);

}  // namespace sessiond::sessionctl

#endif  // SESSIOND_TOOLS_SESSIONCTL_CONNECTION_H_
