// Copyright sessiond authors. Licensed under the Apache License 2.0.
#include "server/node_metrics.h"

#include <map>

#include "absl/strings/str_cat.h"
#include "replication/node_driver.h"
#include "server/apply_metrics.h"
#include "server/audit_recorder.h"
#include "server/logout_detector.h"
#include "server/peer_transport.h"
#include "server/validation_metrics.h"
#include "server/verified_tls_files.h"
#include "server/write_admission.h"
#include "storage/session_table.h"

namespace sessiond::server {
namespace {

using metrics::ExpositionWriter;
using metrics::MetricType;

double AsDouble(uint64_t v) { return static_cast<double>(v); }

}  // namespace

void WriteMemberStatusMetrics(const sessiond::v1::MemberStatus& m,
                              ExpositionWriter* w) {
  w->Gauge("sessiond_raft_term", "Current Raft term", AsDouble(m.term()));
  w->Gauge("sessiond_raft_leader_id",
           "Node id of the leader this node knows (0: none)",
           AsDouble(m.leader()));
  w->Gauge("sessiond_raft_is_leader", "1 when this node is the Raft leader",
           m.role() == "leader" ? 1 : 0);
  w->Gauge("sessiond_raft_is_voter", "1 when this node is a voter, 0 a learner",
           m.voter() ? 1 : 0);
  w->Gauge("sessiond_raft_commit_index", "Highest log index known committed",
           AsDouble(m.commit_index()));
  w->Gauge("sessiond_raft_applied_index",
           "Highest log index applied to the session table",
           AsDouble(m.applied_index()));
  w->Gauge("sessiond_raft_first_index", "First index held in the Raft log",
           AsDouble(m.first_index()));
  w->Gauge("sessiond_raft_last_index", "Last index held in the Raft log",
           AsDouble(m.last_index()));
  w->Gauge("sessiond_raft_apply_lag_entries",
           "Committed entries not yet applied on this node (commit - applied)",
           m.commit_index() > m.applied_index()
               ? AsDouble(m.commit_index() - m.applied_index())
               : 0);
  w->Gauge("sessiond_raft_snapshot_index",
           "Log index of the latest snapshot (0: none)",
           AsDouble(m.snapshot_index()));
  w->Gauge("sessiond_sessions_live", "Sessions in the session table",
           AsDouble(m.live_sessions()));
  w->Gauge("sessiond_cluster_time_seconds",
           "This node's cluster time (the time expiry follows), Unix seconds",
           static_cast<double>(m.cluster_time_ms()) / 1000);
  w->Gauge("sessiond_clock_skew_seconds",
           "This node's wall clock minus its cluster time",
           static_cast<double>(m.clock_skew_ms()) / 1000);
  w->Gauge("sessiond_data_dir_bytes",
           "Bytes of the files in the data dir (the disk reserve left out)",
           AsDouble(m.data_dir_bytes()));
  w->Gauge("sessiond_disk_free_bytes",
           "Free space on the data dir's file system",
           AsDouble(m.disk_free_bytes()));
  w->Gauge("sessiond_disk_full",
           "1 while free space is under --disk_reserve_mb (writes refused)",
           m.disk_full() ? 1 : 0);
  w->Gauge("sessiond_expiry_breaker_open",
           "1 while the mass-expiry breaker is open (no session expires)",
           m.expiry_breaker().open() ? 1 : 0);
  w->Counter("sessiond_expiry_breaker_openings_total",
             "Times the mass-expiry breaker opened (replicated count)",
             m.expiry_breaker().times_opened());
  w->Gauge("sessiond_expiry_breaker_unexpected_expiries",
           "Expiries over and above what lifetimes predict that opened the "
           "breaker (its last opening)",
           AsDouble(m.expiry_breaker().unexpected_expiries()));

  const sessiond::v1::NodeMetrics& n = m.metrics();
  w->Counter("sessiond_raft_proposals_total", "Proposals accepted",
             n.proposals());
  w->Counter("sessiond_raft_proposals_refused_total",
             "Proposals refused by back-pressure or a full disk",
             n.proposals_refused());
  w->Counter("sessiond_raft_propose_batches_total",
             "Batches of proposals handed to the Raft core",
             n.propose_batches());
  w->Counter("sessiond_raft_log_synced_writes_total",
             "Synced (fsynced) Raft log writes", n.synced_log_writes());
  w->Counter("sessiond_raft_log_unsynced_writes_total",
             "Raft log writes that only moved the commit index (not synced)",
             n.unsynced_log_writes());
  w->Counter("sessiond_raft_entries_persisted_total",
             "Entries written to the Raft log", n.entries_persisted());
  w->Counter("sessiond_raft_entries_applied_total",
             "Entries applied to the state machine", n.entries_applied());
  w->Counter("sessiond_raft_apply_batches_total", "Batches of entries applied",
             n.apply_batches());
  w->Counter("sessiond_raft_reads_total",
             "Linearizable read barriers asked of the driver", n.reads());
  w->Counter("sessiond_raft_read_index_rounds_total",
             "ReadIndex rounds (several reads share one)",
             n.read_index_rounds());
  w->Counter("sessiond_raft_local_reads_total",
             "Linearizable reads the leader answered within its lease, "
             "without a ReadIndex round",
             n.local_reads());
  w->Counter("sessiond_raft_messages_dropped_total",
             "Peer messages dropped because the driver's inbox was full",
             n.messages_dropped());
  w->Counter("sessiond_raft_snapshots_installed_total",
             "Snapshots received from a leader and installed",
             n.snapshots_installed());
  w->Counter("sessiond_raft_log_write_failures_total",
             "Raft log writes that failed (each is retried)",
             n.log_write_failures());
  w->Counter("sessiond_forwarded_writes_total",
             "Writes this node forwarded to the leader", n.forwarded_writes());
  w->Counter("sessiond_touch_batches_dropped_total",
             "Touch batches that did not reach the log",
             n.touch_batches_dropped());
  w->Gauge("sessiond_expiry_sweep_due_sessions",
           "Expired sessions the leader's last sweep found to remove",
           AsDouble(n.expiry_sweep_due()));
  w->Counter("sessiond_expiry_sweeps_at_cap_total",
             "Sweeps that found as many expired sessions as one sweep may "
             "remove (the rest waited for the next)",
             n.expiry_sweeps_at_cap());
}

namespace {

// The per-peer families with one number each. Written with no sample on a
// node without peers, so every node exports the same families
// (deploy/prometheus/sessiond.rules.yml is checked against a single node).
struct PeerFamily {
  const char* name;
  MetricType type;
  const char* help;
  uint64_t PeerTraffic::*value;
};
constexpr PeerFamily kPeerFamilies[] = {
    {"sessiond_peer_messages_sent_total", MetricType::kCounter,
     "Raft messages written to the peer's message stream",
     &PeerTraffic::messages_sent},
    {"sessiond_peer_batches_sent_total", MetricType::kCounter,
     "Writes to the peer's message stream (each carries every message "
     "queued for it)",
     &PeerTraffic::batches_sent},
    {"sessiond_peer_reconnects_total", MetricType::kCounter,
     "Times the message stream to the peer broke and was reopened",
     &PeerTraffic::reconnects},
    {"sessiond_peer_snapshots_sent_total", MetricType::kCounter,
     "Snapshots streamed to the peer", &PeerTraffic::snapshots_sent},
    {"sessiond_peer_snapshots_failed_total", MetricType::kCounter,
     "Snapshots to the peer that failed (the leader sends again)",
     &PeerTraffic::snapshots_failed},
    {"sessiond_peer_queued_messages", MetricType::kGauge,
     "Raft messages waiting to be written to the peer", &PeerTraffic::queued},
};

void WritePeerTraffic(const PeerTransport& transport, ExpositionWriter* w) {
  const std::map<NodeId, PeerTraffic> traffic = transport.traffic();
  for (const PeerFamily& family : kPeerFamilies) {
    if (!w->BeginFamily(family.name, family.type, family.help)) continue;
    for (const auto& [peer, t] : traffic) {
      w->Sample({{"peer", absl::StrCat(peer.value())}},
                AsDouble(t.*family.value));
    }
  }
  if (w->BeginFamily("sessiond_peer_messages_dropped_total",
                     MetricType::kCounter,
                     "Raft messages for the peer that were not sent, by "
                     "reason (Raft sends again what matters)")) {
    for (const auto& [peer, t] : traffic) {
      for (int i = 0; i < kNumPeerDrops; ++i) {
        w->Sample({{"peer", absl::StrCat(peer.value())},
                   {"reason", PeerDropName(static_cast<PeerDrop>(i))}},
                  AsDouble(t.dropped[i]));
      }
    }
  }
}

}  // namespace

void CollectNodeMetrics(const NodeMetricsSources& sources,
                        ExpositionWriter* w) {
  if (w->BeginFamily("sessiond_build_info", MetricType::kGauge,
                     "Always 1; the version is in the label")) {
    w->Sample({{"version", sources.version}}, 1);
  }
  if (sources.status) WriteMemberStatusMetrics(sources.status(), w);
  if (sources.table != nullptr) {
    const storage::SessionTable::MemoryUsage usage =
        sources.table->memory_usage();
    if (w->BeginFamily("sessiond_session_table_memory_bytes",
                       MetricType::kGauge,
                       "Memory of the session table: records and attributes "
                       "(arena), hash index slots (hash_index)")) {
      w->Sample({{"part", "arena"}}, AsDouble(usage.arena_bytes));
      w->Sample({{"part", "hash_index"}}, AsDouble(usage.hash_index_bytes));
    }
    w->Gauge("sessiond_session_table_expiry_entries",
             "Entries in the session table's expiry index",
             AsDouble(usage.expiry_entries));
  }
  if (sources.driver != nullptr &&
      w->BeginFamily("sessiond_raft_log_fsync_duration_seconds",
                     MetricType::kHistogram,
                     "Duration of synced Raft log writes (one fsync per "
                     "group commit)")) {
    w->Histogram({}, sources.driver->log_sync_latency().Read());
  }
  if (sources.validations != nullptr) sources.validations->Collect(w);
  if (sources.applied != nullptr) sources.applied->Collect(w);
  if (sources.logout_detector != nullptr) sources.logout_detector->Collect(w);
  if (sources.audit_entries) {
    w->Gauge("sessiond_audit_entries",
             "Entries kept in the replicated audit log (this node's applied "
             "state)",
             AsDouble(sources.audit_entries()));
  }
  if (sources.audit != nullptr) {
    w->Counter("sessiond_audit_write_failures_total",
               "Audit entries this node could not commit before answering "
               "their call (each logged as audit.write_failed)",
               AsDouble(sources.audit->write_failures()));
  }
  if (sources.transport != nullptr) WritePeerTraffic(*sources.transport, w);
  if (sources.tls != nullptr) {
    const VerifiedTlsFiles::Status tls = sources.tls->status();
    w->Gauge("sessiond_tls_certificate_expiry_timestamp_seconds",
             "When the certificate the gRPC endpoints serve expires, Unix "
             "seconds",
             static_cast<double>(tls.not_after_s));
    w->Gauge("sessiond_tls_files_not_served",
             "1 while the TLS files on disk do not verify as a set and the "
             "last good certificate is served instead (tls.renewal_refused)",
             tls.refusal.empty() ? 0 : 1);
    w->Counter("sessiond_tls_renewals_refused_total",
               "Changes of the TLS files that did not verify as a set and "
               "were not served (each logged as tls.renewal_refused)",
               tls.refused);
  }
  if (sources.write_admission != nullptr &&
      sources.write_admission->enabled()) {
    const WriteAdmissionState admission = sources.write_admission->state();
    w->Counter("sessiond_creates_shed_total",
               "Creates refused at once (RESOURCE_EXHAUSTED, OVERLOADED) "
               "because this node's writes waited longer than "
               "--write_admission_target_ms",
               AsDouble(admission.refused));
    w->Gauge("sessiond_write_admission_limit",
             "Writes this node admits in flight before it sheds creates",
             AsDouble(admission.limit));
    w->Gauge("sessiond_write_admission_in_flight",
             "Writes in flight on this node's write path (answered by "
             "neither commit nor error yet)",
             AsDouble(admission.in_flight));
    w->Gauge("sessiond_write_queueing_delay_seconds",
             "The shortest time a write took to commit during the last "
             "100 ms interval (the admission signal)",
             absl::ToDoubleSeconds(admission.queueing_delay));
  }
}

}  // namespace sessiond::server
