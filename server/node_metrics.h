// Copyright sessiond authors. Licensed under the Apache License 2.0.
#ifndef SESSIOND_SERVER_NODE_METRICS_H_
#define SESSIOND_SERVER_NODE_METRICS_H_

#include <cstdint>
#include <functional>

#include "common/metrics_exposition.h"
#include "sessiond/v1/admin.pb.h"

namespace sessiond::storage {
class SessionTable;
}  // namespace sessiond::storage

namespace sessiond::replication {
class NodeDriver;
}  // namespace sessiond::replication

namespace sessiond::server {

class ApplyMetrics;
class AuditRecorder;
class LogoutDetectorTask;
class PeerTransport;
class ValidationMetrics;
class VerifiedTlsFiles;
class WriteAdmission;

// What a node exports about itself. Each pointer may be null (that part is
// left out) and must outlive every collection.
struct NodeMetricsSources {
  // This node's row of ClusterStatus (Daemon::SelfStatus without digest):
  // the same figures `sessionctl status` shows.
  std::function<sessiond::v1::MemberStatus()> status;
  const storage::SessionTable* table = nullptr;
  const replication::NodeDriver* driver = nullptr;
  const ValidationMetrics* validations = nullptr;
  // What this node applied, by kind (sessions created, expired, revoked...).
  const ApplyMetrics* applied = nullptr;
  // The logout detector's alerts, shares and baselines (null: off).
  const LogoutDetectorTask* logout_detector = nullptr;
  // The audit log: entries kept (this node's applied state) and the
  // recorder's write failures (null / empty: left out).
  const AuditRecorder* audit = nullptr;
  std::function<uint64_t()> audit_entries;
  // Admission control of creates (server/write_admission.h; null: left
  // out).
  const WriteAdmission* write_admission = nullptr;
  // Raft traffic to each peer (null: left out; a single node has none).
  const PeerTransport* transport = nullptr;
  // The certificate the gRPC endpoints serve (null without TLS: left out).
  const VerifiedTlsFiles* tls = nullptr;
  // kSessiondVersion, for sessiond_build_info.
  const char* version = "";
};

// Writes sessiond_build_info, the Raft and table state, disk state, the
// NodeMetrics counters, the log fsync histogram, the validation outcomes,
// the applied session events, the logout detector and the traffic to each
// peer (docs/OPERATIONS.md, "Metrics", lists them all).
void CollectNodeMetrics(const NodeMetricsSources& sources,
                        metrics::ExpositionWriter* writer);

// The part of it that comes from a MemberStatus (pure; for tests).
void WriteMemberStatusMetrics(const sessiond::v1::MemberStatus& status,
                              metrics::ExpositionWriter* writer);

}  // namespace sessiond::server

#endif  // SESSIOND_SERVER_NODE_METRICS_H_
