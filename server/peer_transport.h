// Copyright sessiond authors. Licensed under the Apache License 2.0.
//
// PeerTransport: Raft messages to the other members over gRPC (the outbound
// half; server/peer_service.h is the inbound half). Like etcd's rafthttp it
// keeps two kinds of traffic apart:
//
//   message stream   one long-lived client stream (RaftPeer.SendMessages)
//                    per peer, fed by a bounded queue; a sender thread per
//                    peer writes everything queued as one MessageBatch, so
//                    heartbeats and pipelined appends share writes.
//   snapshot stream  a kSnapshot message starts RaftPeer.SendSnapshot on
//                    the peer's snapshot thread, which streams the image
//                    file in 1 MiB chunks on a connection of its own;
//                    heartbeats keep flowing on the message stream's
//                    meanwhile.
//
// Send never blocks: it only queues. A full queue drops the newest
// messages (Raft retransmits); a broken stream is reopened with jittered
// exponential backoff (50 ms up to 1 s). Channels have HTTP/2 keepalive, so
// a peer that stopped answering (paused, partitioned) breaks its stream.
//
// The same channels carry the other peer RPCs (forwarded writes, status),
// through Stub().
//
// Thread-safe. Threads: "sd-peer-<id>" (messages) and "sd-snap-<id>"
// (snapshots) per peer, started when the peer's address is first set.
#ifndef SESSIOND_SERVER_PEER_TRANSPORT_H_
#define SESSIOND_SERVER_PEER_TRANSPORT_H_

#include <grpcpp/channel.h>
#include <grpcpp/security/credentials.h>

#include <atomic>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "replication/transport.h"
#include "server/peer_wall_clocks.h"
#include "sessiond/v1/peer.grpc.pb.h"
#include "storage/snapshot_files.h"

namespace sessiond::server {

struct PeerTransportOptions {
  uint64_t cluster_id = 0;
  NodeId self;
  // Messages waiting per peer; more are dropped.
  size_t max_queued_messages = 8192;
  // Entry bytes per MessageBatch write (a bigger backlog takes several).
  size_t max_batch_bytes = 4 << 20;
  absl::Duration min_backoff = absl::Milliseconds(50);
  absl::Duration max_backoff = absl::Seconds(1);
  size_t snapshot_chunk_bytes = 1 << 20;
  // A snapshot stream ends (failed) after this long plus one second per
  // `snapshot_min_bytes_per_second` of its image: a receiver alive but
  // stuck (its gRPC still answering pings) otherwise held the peer's one
  // snapshot slot, and every later snapshot to it was dropped as busy.
  absl::Duration snapshot_timeout_base = absl::Minutes(2);
  uint64_t snapshot_min_bytes_per_second = 1 << 20;
  // Where outgoing snapshot images are read from. Must outlive the
  // transport.
  const storage::SnapshotFiles* snapshots = nullptr;
  // Tests only (--unsafe_peer_drop_file): node ids listed in this file get
  // none of our traffic and we ignore theirs.
  std::string drop_file;
  // This node's advertised peer address, sent with its traffic so a peer
  // that does not know it yet can answer (PeerService).
  std::string self_address;
  // Its cluster epoch (Identity.cluster_epoch), sent with its traffic.
  uint64_t cluster_epoch = 0;
  // Called on a peer's sender thread when the peer ended our message
  // stream because this node was removed from the cluster
  // (IsRemovedRefusal). Must not block for long.
  std::function<void(NodeId peer)> on_removed_refusal;
  // Called on a peer's snapshot thread when this node's own image of the
  // snapshot at `index` fails its checks while being sent (it is not
  // sent): a new image must replace it (LogCompactor::ReplaceCorruptImage).
  // Must not block for long.
  std::function<void(LogIndex index)> on_corrupt_image;
  // The TLS of the channel to each peer, which checks that the server is
  // that peer (ListenerSecurity::peer_channels_to). Null, or returning
  // null: plaintext.
  std::function<std::shared_ptr<grpc::ChannelCredentials>(NodeId peer)>
      credentials;
  // Stamps each batch with this node's wall clock and its judgement of the
  // receiver's (server/peer_wall_clocks.h). Null: neither.
  const PeerWallClocks* wall_clocks = nullptr;
};

// Why an outgoing message was dropped (Raft retransmits what matters).
enum class PeerDrop {
  kQueueFull,     // max_queued_messages were waiting for the peer
  kStreamBroken,  // the write failed: the peer is down or unreachable
  kFaultSwitch,   // --unsafe_peer_drop_file lists the peer (tests)
  kSnapshotBusy,  // a snapshot to the peer is already on its way
  kUnknownPeer,   // no address known for it yet (a learner just added)
};
inline constexpr int kNumPeerDrops =
    static_cast<int>(PeerDrop::kUnknownPeer) + 1;
// "queue_full", "stream_broken", ...: the reason label in /metrics.
const char* PeerDropName(PeerDrop reason);

// What the traffic to one peer did since the transport started, for
// /metrics (docs/OPERATIONS.md, "Metrics").
struct PeerTraffic {
  uint64_t batches_sent = 0;             // MessageBatch writes
  uint64_t messages_sent = 0;            // the messages in them
  uint64_t dropped[kNumPeerDrops] = {};  // by PeerDrop
  uint64_t reconnects = 0;  // message streams reopened after a failure
  uint64_t snapshots_sent = 0;
  uint64_t snapshots_failed = 0;
  uint64_t queued = 0;  // messages waiting now
};

class PeerTransport : public replication::Transport {
 public:
  explicit PeerTransport(PeerTransportOptions options);
  ~PeerTransport() override;  // Stop()s.

  PeerTransport(const PeerTransport&) = delete;
  PeerTransport& operator=(const PeerTransport&) = delete;

  // Adds a peer or changes its address (a new channel). The own id is
  // ignored.
  void SetAddress(NodeId peer, const std::string& address);
  // New channels to every peer (new connections, so new TLS handshakes):
  // who serves at a peer's address is checked against the roles only at a
  // handshake (ListenerSecurity::peer_channels_to), and a connection opened
  // under the roles a reload just replaced would otherwise carry on for as
  // long as it stays up. The message streams reopen on them.
  void RenewChannels();
  std::map<NodeId, std::string> addresses() const;
  // Whether traffic from `peer` may come in: an address is known and it
  // was not removed.
  bool Knows(NodeId peer) const;
  // The members removed from the cluster (ClusterState.removed), replacing
  // the last set: not Known, whatever their address.
  void SetRemoved(std::set<NodeId> removed);
  bool Removed(NodeId peer) const;

  void Send(std::vector<replication::Message> messages) override;

  // A stub on the peer's channel for the other RaftPeer calls; nullptr for
  // an unknown peer.
  std::shared_ptr<sessiond::v1::internal::RaftPeer::Stub> Stub(
      NodeId peer) const;

  // Whether the channel to `peer` is connected (asks it to connect when
  // idle). A call on a channel that is not cannot have reached the peer.
  bool Connected(NodeId peer) const;

  // The fault switch: true when traffic with `peer` is to be dropped.
  bool Dropped(NodeId peer) const;

  // Every peer messages were addressed to, with its traffic.
  std::map<NodeId, PeerTraffic> traffic() const;

  // Stops every thread; queued messages are dropped. Idempotent.
  void Stop();

 private:
  std::shared_ptr<grpc::ChannelCredentials> CredentialsFor(NodeId peer) const;
  struct Peer;

  void SendLoop(Peer* peer);
  void SnapshotLoop(Peer* peer);
  // Streams one snapshot; returns why it failed.
  absl::Status SendSnapshot(Peer* peer, const replication::Message& message);
  // Sleeps `delay` unless the peer is stopping; returns false when it is.
  bool SleepUnlessStopping(Peer* peer, absl::Duration delay);
  void RefreshDropList() const;

  const PeerTransportOptions options_;

  mutable absl::Mutex mu_;
  std::map<NodeId, std::unique_ptr<Peer>> peers_ ABSL_GUARDED_BY(mu_);
  bool stopped_ ABSL_GUARDED_BY(mu_) = false;

  // The fault switch's list, re-read at most every 50 ms.
  mutable absl::Mutex drop_mu_;
  mutable std::set<uint64_t> drop_ ABSL_GUARDED_BY(drop_mu_);
  mutable absl::Time drop_read_at_ ABSL_GUARDED_BY(drop_mu_) =
      absl::InfinitePast();

  std::set<NodeId> removed_ ABSL_GUARDED_BY(mu_);
  // Messages for nodes with no address yet (no Peer to count them).
  std::map<NodeId, uint64_t> unknown_peer_drops_ ABSL_GUARDED_BY(mu_);
};

// How a peer's refusal of a removed member's traffic starts
// (PeerService): "peer traffic from removed node N refused: ...".
inline constexpr char kRemovedRefusalPrefix[] =
    "peer traffic from removed node ";
// What a removed node is told to do, in that refusal and in its own log.
inline constexpr char kRemovedMemberAdvice[] =
    "to bring it back, wipe its data dir, add it again (sessionctl members "
    "add) and start it with --initial_cluster_state=existing";
// Whether `status` is that refusal.
bool IsRemovedRefusal(const grpc::Status& status);

// A channel to a peer with the keepalive settings the transport uses.
// `credentials`: TLS for the peer channels (server/tls_credentials.h);
// null: plaintext.
std::shared_ptr<grpc::Channel> NewPeerChannel(
    const std::string& address,
    const std::shared_ptr<grpc::ChannelCredentials>& credentials);

}  // namespace sessiond::server

#endif  // SESSIOND_SERVER_PEER_TRANSPORT_H_
