// Copyright sessiond authors. Licensed under the Apache License 2.0.
//
// PeerService: the inbound half of the peer protocol (RaftPeer, on gRPC's
// callback API; server/peer_transport.h is the outbound half).
//
//   SendMessages  each MessageBatch is checked (cluster id, a known sender
//                 or a leader at our term or later, addressed to this
//                 node) and handed to the driver's inbox
//                 (NodeDriver::Deliver never blocks). A batch from another
//                 cluster or an unknown node ends the stream with
//                 FAILED_PRECONDITION and is logged.
//   SendSnapshot  the chunks are written to a new image file as they come;
//                 once the size and checksum match and the file is durable,
//                 the kSnapshot message goes to the driver with a reference
//                 to this node's copy.
//   Propose       a forwarded write: WritePath::HandleForwarded.
//   Hello         who this node is (bootstrap checks; answered before the
//                 node has started, from the hello function), and whether
//                 it has ever received Raft messages from the asking node
//                 id (kept in a file of the data dir).
//   NodeStatus    this node's MemberStatus, for ClusterStatus.
//
// The service runs from the start of the daemon; until Attach() it answers
// only Hello (everything else is UNAVAILABLE "starting").
//
// Thread-safe.
#ifndef SESSIOND_SERVER_PEER_SERVICE_H_
#define SESSIOND_SERVER_PEER_SERVICE_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "replication/node_driver.h"
#include "server/auth.h"
#include "server/peer_transport.h"
#include "server/peer_wall_clocks.h"
#include "server/write_path.h"
#include "sessiond/v1/peer.grpc.pb.h"
#include "storage/snapshot_files.h"

namespace sessiond::server {

// What the running node lends the service. Every pointer must stay valid
// until Detach() returns.
struct PeerServiceParts {
  uint64_t cluster_id = 0;
  // Identity.cluster_epoch: traffic of another epoch is refused.
  uint64_t cluster_epoch = 0;
  replication::NodeDriver* driver = nullptr;
  PeerTransport* transport = nullptr;
  WritePath* write_path = nullptr;
  storage::SnapshotFiles* snapshots = nullptr;
  std::function<sessiond::v1::MemberStatus(bool with_digest)> status;
  // Learns each sender's wall clock, and its judgement of this node's,
  // from the batches it admits. Null: not learned.
  PeerWallClocks* wall_clocks = nullptr;
  // The listeners' role policy; none without TLS (no identities to judge).
  const AuthProcessor* auth = nullptr;
  // Called (any thread, maybe more than once) when a node this one does
  // not know, `leader` at `address`, says it leads this cluster while this
  // node is the lone voter of its own configuration. If so, this node's
  // data dir was started afresh as a new one-node cluster (wiped, or the
  // flags of the node it was before the cluster grew) while the cluster
  // still counts it as a member, and it must stop: its vote and its empty
  // log would count. Only a claim: anyone who can reach the peer port can
  // send it, so the callee confirms it with that leader before acting
  // (Daemon::ConfirmSplitIdentity). `why` says what it means if true.
  std::function<void(NodeId leader, const std::string& address,
                     const std::string& why)>
      on_split_identity;
  // OK when the data disk has room for `bytes` more (storage::DiskGuard::
  // RoomFor); null: not checked.
  std::function<absl::Status(uint64_t bytes, absl::string_view what)>
      room_on_disk;
  // A snapshot stream that has sent nothing for this long gives up its
  // place to a new one when every place is taken (kMaxSnapshotsReceiving).
  absl::Duration snapshot_idle_limit = absl::Minutes(1);
};

// Installing a snapshot takes about this many times its image's size on
// disk: the image, then the state written whole in one write-ahead log
// batch, then flushed to SST files (while the old state's still exist).
inline constexpr uint64_t kSnapshotInstallSpaceFactor = 3;

// The file of the data dir that keeps the node ids a node has received
// Raft messages from (PeerService's heard_from_file).
inline constexpr char kPeersHeardFromFile[] = "peers_heard_from";

class PeerService final
    : public sessiond::v1::internal::RaftPeer::CallbackService {
 public:
  // `heard_from_file` (empty: none): where the node ids this node has
  // received Raft messages from are kept across restarts, one decimal id
  // per line, appended durably (storage::AppendDurably) when a new one is
  // heard, before its messages reach Raft. Read here.
  PeerService(NodeId self,
              std::function<sessiond::v1::internal::HelloResponse()> hello,
              std::string heard_from_file = "");

  void Attach(PeerServiceParts parts) ABSL_LOCKS_EXCLUDED(mu_);
  // From now on every call but Hello is UNAVAILABLE again. Calls in
  // progress keep the parts they took.
  void Detach() ABSL_LOCKS_EXCLUDED(mu_);

  grpc::ServerReadReactor<sessiond::v1::internal::MessageBatch>* SendMessages(
      grpc::CallbackServerContext* context,
      sessiond::v1::internal::StreamSummary* summary) override;
  grpc::ServerReadReactor<sessiond::v1::internal::SnapshotChunk>* SendSnapshot(
      grpc::CallbackServerContext* context,
      sessiond::v1::internal::SnapshotAck* ack) override;
  grpc::ServerUnaryReactor* Hello(
      grpc::CallbackServerContext* context,
      const sessiond::v1::internal::HelloRequest* request,
      sessiond::v1::internal::HelloResponse* response) override;
  grpc::ServerUnaryReactor* Propose(
      grpc::CallbackServerContext* context,
      const sessiond::v1::internal::ProposeRequest* request,
      sessiond::v1::internal::ProposeResponse* response) override;
  grpc::ServerUnaryReactor* NodeStatus(
      grpc::CallbackServerContext* context,
      const sessiond::v1::internal::NodeStatusRequest* request,
      sessiond::v1::MemberStatus* response) override;

  // Refused batches and snapshots (another cluster, unknown sender).
  uint64_t refused() const { return refused_.load(std::memory_order_relaxed); }

  // Snapshot streams being received now (each holds a place).
  size_t snapshots_receiving() const ABSL_LOCKS_EXCLUDED(receiving_mu_);
  // Those of them received whole and being checked (never cancelled to
  // make room: their data is all here).
  size_t snapshots_being_checked() const ABSL_LOCKS_EXCLUDED(receiving_mu_);

  // Records that this node accepted Raft messages from `node`: durably in
  // the heard_from_file (once per peer), before it returns, so the caller
  // may then hand them to Raft; Hello answers heard_from_caller for it only
  // from then on. Thread-safe: concurrent callers never lose a line.
  // Unavailable when the file cannot be written: the caller must not hand
  // the messages to Raft (nothing is recorded, so the next call tries again).
  absl::Status RecordHeardFrom(uint64_t node)
      ABSL_LOCKS_EXCLUDED(heard_write_mu_, heard_mu_);

 private:
  class MessageStream;
  class SnapshotStream;

  // The parts, when attached; with an error status otherwise.
  absl::StatusOr<PeerServiceParts> Parts() const ABSL_LOCKS_EXCLUDED(mu_);
  // Who sent a request, as it says.
  struct Sender {
    uint64_t cluster_id = 0;
    uint64_t id = 0;
    std::string address;         // its advertised peer address, when sent
    uint64_t leader_term = 0;    // LeaderTerm of its Raft messages
    uint64_t cluster_epoch = 0;  // as it says (Identity.cluster_epoch)
  };
  // OK when `sender` may talk to this node: of this cluster and epoch, and
  // known (in
  // the transport or the configuration), or a leader at this node's term or
  // later, whose address is then learned (a member added while this node
  // was away).
  absl::Status AdmitSender(const PeerServiceParts& parts, const Sender& sender);
  // A stream is authorized when it opens; once a reload changed the role
  // policy (AuthProcessor::generation) it is judged again before its next
  // message, so a peer whose role or token was withdrawn is cut off on the
  // streams it already had open too. `judged`: the policy last judged by.
  static absl::Status JudgeAgain(const PeerServiceParts& parts,
                                 const grpc::ServerContextBase& context,
                                 absl::string_view method,
                                 std::optional<uint64_t>* judged);
  // The node id a stream's caller was last found allowed to send as, and
  // the role policy (AuthProcessor::generation) that found it.
  struct JudgedSender {
    uint64_t generation = 0;
    uint64_t from = 0;
  };
  // Raft traffic naming node `from` as its sender is taken only from the
  // identity the role file ties to that node, when it ties any
  // (AuthProcessor::AuthorizeNode: `node_id` lines); judged again only
  // when `from` or the policy changed since `*judged`. OK without TLS.
  static absl::Status JudgeSender(const PeerServiceParts& parts,
                                  const grpc::ServerContextBase& context,
                                  uint64_t from,
                                  std::optional<JudgedSender>* judged);
  void LogRefusal(const absl::Status& why);

  const NodeId self_;
  const std::function<sessiond::v1::internal::HelloResponse()> hello_;
  mutable absl::Mutex mu_;
  bool attached_ ABSL_GUARDED_BY(mu_) = false;
  PeerServiceParts parts_ ABSL_GUARDED_BY(mu_);
  std::atomic<uint64_t> refused_{0};
  // Senders of accepted Raft message batches, since this process started
  // and, with a heard_from_file, before (Hello's heard_from_caller).
  const std::string heard_from_file_;
  // Held across an append (and its fsync): one writer at a time, so two
  // first appends never both create the file, the second truncating the
  // first's line, and a second caller for the same peer waits until the
  // first one's line is durable.
  absl::Mutex heard_write_mu_ ABSL_ACQUIRED_BEFORE(heard_mu_);
  // The file ends in a line a crash tore (no newline after it).
  bool heard_from_torn_tail_ ABSL_GUARDED_BY(heard_write_mu_) = false;
  mutable absl::Mutex heard_mu_;
  absl::flat_hash_set<uint64_t> heard_from_ ABSL_GUARDED_BY(heard_mu_);
  std::atomic<int64_t> last_refusal_log_ns_{0};
  // Unknown leaders whose traffic AdmitSender took (a member added while
  // this node was away): each is a peer with its own threads and
  // connections, so only kMaxAdmittedStrangers of them, ever: a claim to
  // lead is all it takes (anyone who reaches the peer port without TLS,
  // or with any peer certificate when no node_id lines tie them).
  static constexpr size_t kMaxAdmittedStrangers = 8;

  // Inbound snapshots. Only a leader sends one, so more than one at a time
  // is a leader change (the deposed leader's stream not yet ended) or
  // traffic that is not a leader's; each writes a whole image to disk, and
  // checked alone, each would find room for itself that they then share.
  // So a stream takes a place before it writes a byte, and its disk check
  // counts the room the others reserved. A stream that stopped sending
  // (its sender stuck, or never meaning to finish) gives its place to a
  // new one once it was idle past the parts' snapshot_idle_limit.
  static constexpr size_t kMaxSnapshotsReceiving = 2;
  struct Receiving {
    grpc::CallbackServerContext* context = nullptr;
    int64_t last_chunk_ns = 0;  // steady clock
    uint64_t reserved_bytes = 0;
    // Its last chunk came, and it is being checked and handed over (which
    // may take longer than the idle limit): never cancelled for another.
    bool finishing = false;
  };
  // Takes a place for `stream`, reserving `bytes` of disk; sets
  // `*reserved_by_others` to what the streams already receiving reserved.
  // ResourceExhausted when every place is taken by a stream that is not
  // idle (an idle one is cancelled and its place taken).
  absl::Status BeginReceiving(const void* stream,
                              grpc::CallbackServerContext* context,
                              uint64_t bytes, absl::Duration idle_limit,
                              uint64_t* reserved_by_others)
      ABSL_LOCKS_EXCLUDED(receiving_mu_);
  void ChunkReceived(const void* stream) ABSL_LOCKS_EXCLUDED(receiving_mu_);
  // Its last chunk came: it keeps its place and reservation until
  // EndReceiving, however long the check takes.
  void Finishing(const void* stream) ABSL_LOCKS_EXCLUDED(receiving_mu_);
  // Gives the place back (nothing when it was taken from an idle stream).
  // Called before the stream is deleted: its context is cancelled under
  // receiving_mu_ only while it is listed.
  void EndReceiving(const void* stream) ABSL_LOCKS_EXCLUDED(receiving_mu_);
  mutable absl::Mutex receiving_mu_;
  absl::flat_hash_map<const void*, Receiving> receiving_
      ABSL_GUARDED_BY(receiving_mu_);
  absl::Mutex strangers_mu_;
  absl::flat_hash_set<uint64_t> admitted_strangers_
      ABSL_GUARDED_BY(strangers_mu_);
};

}  // namespace sessiond::server

#endif  // SESSIOND_SERVER_PEER_SERVICE_H_
