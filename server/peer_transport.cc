// Copyright sessiond authors. Licensed under the Apache License 2.0.
#include "server/peer_transport.h"

#include <grpcpp/client_context.h>
#include <grpcpp/create_channel.h>
#include <grpcpp/security/credentials.h>
#include <grpcpp/support/channel_arguments.h>
#include <pthread.h>

#include <cstdio>
#include <fstream>
#include <random>
#include <sstream>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "common/log.h"
#include "common/steady_clock.h"
#include "common/steady_cond_var.h"
#include "server/limits.h"
#include "server/raft_wire.h"

namespace sessiond::server {

using replication::Message;
using replication::MessageType;
using sessiond::v1::internal::MessageBatch;
using sessiond::v1::internal::RaftPeer;
using sessiond::v1::internal::SnapshotAck;
using sessiond::v1::internal::SnapshotChunk;
using sessiond::v1::internal::StreamSummary;

std::shared_ptr<grpc::Channel> NewPeerChannel(
    const std::string& address,
    const std::shared_ptr<grpc::ChannelCredentials>& credentials) {
  grpc::ChannelArguments args;
  // A peer that stops answering (paused, partitioned, its host gone) breaks
  // the stream within a few seconds instead of leaving a write stuck.
  args.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS, 2000);
  args.SetInt(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 2000);
  args.SetInt(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  args.SetInt(GRPC_ARG_HTTP2_MAX_PINGS_WITHOUT_DATA, 0);
  // Reconnect quickly after a peer restarts.
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 1000);
  args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, 100);
  args.SetMaxReceiveMessageSize(static_cast<int>(kMaxPeerMessageBytes));
  args.SetMaxSendMessageSize(static_cast<int>(kMaxPeerMessageBytes));
  // A connection per channel, shared with no other channel (the transport
  // keeps a peer's snapshots off its message stream's connection).
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  return grpc::CreateCustomChannel(
      address,
      credentials != nullptr ? credentials : grpc::InsecureChannelCredentials(),
      args);
}

namespace {

// A channel that failed to connect waits out gRPC's reconnect backoff before
// it tries again, and refuses every call meanwhile. gRPC's timer waits until
// a wall-clock instant (see SendLoop), so a wall clock stepped back during
// that wait stretched it by the step: every snapshot for the peer was
// refused at once for that long. Reconnect now instead; a call made while
// the channel connects waits for the outcome.
void ReconnectNowIfBackingOff(grpc::Channel& channel) {
  if (channel.GetState(/*try_to_connect=*/false) !=
      GRPC_CHANNEL_TRANSIENT_FAILURE) {
    return;
  }
  grpc::experimental::ChannelResetConnectionBackoff(&channel);
  channel.WaitForStateChange(
      GRPC_CHANNEL_TRANSIENT_FAILURE,
      std::chrono::system_clock::now() + std::chrono::seconds(1));
}

}  // namespace

struct PeerTransport::Peer {
  explicit Peer(NodeId peer_id) : id(peer_id) {}

  const NodeId id;
  absl::Mutex mu;
  // Separate, so a message for the stream never wakes the snapshot thread.
  // The sender: messages, address, stop; its reconnect backoff follows the
  // steady clock.
  SteadyCondVar cv;
  absl::CondVar snapshot_cv;  // the snapshot thread: a snapshot, stop
  std::string address ABSL_GUARDED_BY(mu);
  std::shared_ptr<grpc::Channel> channel ABSL_GUARDED_BY(mu);
  std::shared_ptr<RaftPeer::Stub> stub ABSL_GUARDED_BY(mu);
  // Snapshots on a channel, and so a connection, of their own: on the
  // message stream's, a big image filled the connection's HTTP/2 window and
  // its TCP buffers, and heartbeats waited behind it (etcd's rafthttp keeps
  // its snapshot "pipeline" on separate connections for the same reason).
  std::shared_ptr<grpc::Channel> snapshot_channel ABSL_GUARDED_BY(mu);
  std::shared_ptr<RaftPeer::Stub> snapshot_stub ABSL_GUARDED_BY(mu);
  bool address_changed ABSL_GUARDED_BY(mu) = false;
  std::deque<Message> queue ABSL_GUARDED_BY(mu);
  std::optional<Message> snapshot ABSL_GUARDED_BY(mu);
  bool snapshot_busy ABSL_GUARDED_BY(mu) = false;
  bool stop ABSL_GUARDED_BY(mu) = false;
  // Calls in progress, cancelled by Stop so no thread stays blocked.
  grpc::ClientContext* stream_context ABSL_GUARDED_BY(mu) = nullptr;
  grpc::ClientContext* snapshot_context ABSL_GUARDED_BY(mu) = nullptr;
  std::thread sender;
  std::thread snapshotter;

  // New channels and stubs at `address` (new connections, so new TLS
  // handshakes); the sender reopens its stream on them.
  void ConnectAnew(const std::shared_ptr<grpc::ChannelCredentials>& credentials)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    channel = NewPeerChannel(address, credentials);
    stub = RaftPeer::NewStub(channel);
    snapshot_channel = NewPeerChannel(address, credentials);
    snapshot_stub = RaftPeer::NewStub(snapshot_channel);
    address_changed = true;
    cv.SignalAll();
  }

  // Counted by the threads that send; read by traffic().
  void Drop(PeerDrop reason, uint64_t n = 1) {
    dropped[static_cast<int>(reason)].fetch_add(n, std::memory_order_relaxed);
  }
  std::atomic<uint64_t> batches_sent{0};
  std::atomic<uint64_t> messages_sent{0};
  std::atomic<uint64_t> dropped[kNumPeerDrops] = {};
  std::atomic<uint64_t> reconnects{0};
  std::atomic<uint64_t> snapshots_sent{0};
  std::atomic<uint64_t> snapshots_failed{0};
};

const char* PeerDropName(PeerDrop reason) {
  switch (reason) {
    case PeerDrop::kQueueFull:
      return "queue_full";
    case PeerDrop::kStreamBroken:
      return "stream_broken";
    case PeerDrop::kFaultSwitch:
      return "fault_switch";
    case PeerDrop::kSnapshotBusy:
      return "snapshot_busy";
    case PeerDrop::kUnknownPeer:
      return "unknown_peer";
  }
  return "unknown";
}

PeerTransport::PeerTransport(PeerTransportOptions options)
    : options_(std::move(options)) {}

PeerTransport::~PeerTransport() { Stop(); }

std::shared_ptr<grpc::ChannelCredentials> PeerTransport::CredentialsFor(
    NodeId peer) const {
  return options_.credentials ? options_.credentials(peer) : nullptr;
}

void PeerTransport::RenewChannels() {
  absl::MutexLock lock(&mu_);
  if (stopped_) return;
  for (auto& [id, peer] : peers_) {
    absl::MutexLock peer_lock(&peer->mu);
    peer->ConnectAnew(CredentialsFor(id));
  }
}

void PeerTransport::SetAddress(NodeId id, const std::string& address) {
  if (id == options_.self || id == NodeId(0) || address.empty()) return;
  absl::MutexLock lock(&mu_);
  if (stopped_) return;
  auto it = peers_.find(id);
  if (it != peers_.end()) {
    Peer* peer = it->second.get();
    absl::MutexLock peer_lock(&peer->mu);
    if (peer->address == address) return;
    peer->address = address;
    peer->ConnectAnew(CredentialsFor(id));
    return;
  }
  auto peer = std::make_unique<Peer>(id);
  Peer* raw = peer.get();
  {
    absl::MutexLock peer_lock(&raw->mu);
    raw->address = address;
    raw->channel = NewPeerChannel(address, CredentialsFor(id));
    raw->stub = RaftPeer::NewStub(raw->channel);
    raw->snapshot_channel = NewPeerChannel(address, CredentialsFor(id));
    raw->snapshot_stub = RaftPeer::NewStub(raw->snapshot_channel);
  }
  raw->sender = std::thread([this, raw] {
    pthread_setname_np(pthread_self(),
                       absl::StrCat("sd-peer-", raw->id.value()).c_str());
    SendLoop(raw);
  });
  raw->snapshotter = std::thread([this, raw] {
    pthread_setname_np(pthread_self(),
                       absl::StrCat("sd-snap-", raw->id.value()).c_str());
    SnapshotLoop(raw);
  });
  peers_.emplace(id, std::move(peer));
}

std::map<NodeId, std::string> PeerTransport::addresses() const {
  std::map<NodeId, std::string> out;
  absl::MutexLock lock(&mu_);
  for (const auto& [id, peer] : peers_) {
    absl::MutexLock peer_lock(&peer->mu);
    out[id] = peer->address;
  }
  return out;
}

bool PeerTransport::Knows(NodeId peer) const {
  absl::MutexLock lock(&mu_);
  return peers_.count(peer) > 0 && removed_.count(peer) == 0;
}

void PeerTransport::SetRemoved(std::set<NodeId> removed) {
  absl::MutexLock lock(&mu_);
  removed_ = std::move(removed);
}

bool PeerTransport::Removed(NodeId peer) const {
  absl::MutexLock lock(&mu_);
  return removed_.count(peer) > 0;
}

bool IsRemovedRefusal(const grpc::Status& status) {
  return status.error_code() == grpc::StatusCode::FAILED_PRECONDITION &&
         absl::StartsWith(status.error_message(), kRemovedRefusalPrefix);
}

std::shared_ptr<RaftPeer::Stub> PeerTransport::Stub(NodeId id) const {
  absl::MutexLock lock(&mu_);
  auto it = peers_.find(id);
  if (it == peers_.end()) return nullptr;
  absl::MutexLock peer_lock(&it->second->mu);
  return it->second->stub;
}

bool PeerTransport::Connected(NodeId id) const {
  if (Dropped(id)) return false;
  std::shared_ptr<grpc::Channel> channel;
  {
    absl::MutexLock lock(&mu_);
    auto it = peers_.find(id);
    if (it == peers_.end()) return false;
    absl::MutexLock peer_lock(&it->second->mu);
    channel = it->second->channel;
  }
  return channel->GetState(/*try_to_connect=*/true) == GRPC_CHANNEL_READY;
}

void PeerTransport::Send(std::vector<Message> messages) {
  absl::MutexLock lock(&mu_);
  for (Message& m : messages) {
    auto it = peers_.find(m.to);
    if (it == peers_.end()) {
      // A member whose address we do not know yet (a learner just added
      // whose MemberCommand has not applied here): Raft will retry.
      ++unknown_peer_drops_[m.to];
      continue;
    }
    Peer* peer = it->second.get();
    absl::MutexLock peer_lock(&peer->mu);
    if (m.type == MessageType::kSnapshot) {
      if (peer->snapshot_busy || peer->snapshot) {
        // One snapshot at a time; the leader asks again later.
        peer->Drop(PeerDrop::kSnapshotBusy);
        continue;
      }
      peer->snapshot = std::move(m);
      peer->snapshot_cv.Signal();
      continue;
    }
    if (peer->queue.size() >= options_.max_queued_messages) {
      peer->Drop(PeerDrop::kQueueFull);
      continue;
    }
    const bool was_empty = peer->queue.empty();
    peer->queue.push_back(std::move(m));
    if (was_empty) peer->cv.Signal();
  }
}

void PeerTransport::RefreshDropList() const {
  absl::MutexLock lock(&drop_mu_);
  const absl::Time now = absl::Now();
  if (now - drop_read_at_ < absl::Milliseconds(50)) return;
  drop_read_at_ = now;
  drop_.clear();
  std::ifstream in(options_.drop_file);
  if (!in) return;
  std::stringstream text;
  text << in.rdbuf();
  for (absl::string_view item : absl::StrSplit(
           text.str(), absl::ByAnyChar(", \n\t"), absl::SkipEmpty())) {
    uint64_t id = 0;
    if (absl::SimpleAtoi(item, &id)) drop_.insert(id);
  }
}

bool PeerTransport::Dropped(NodeId peer) const {
  if (options_.drop_file.empty()) return false;
  RefreshDropList();
  absl::MutexLock lock(&drop_mu_);
  return drop_.count(peer.value()) > 0;
}

bool PeerTransport::SleepUnlessStopping(Peer* peer, absl::Duration delay) {
  const SteadyCondVar::Clock::time_point deadline = SteadyAfter(delay);
  absl::MutexLock lock(&peer->mu);
  while (!peer->stop && !peer->address_changed) {
    if (peer->cv.WaitUntil(&peer->mu, deadline)) break;
  }
  return !peer->stop;
}

void PeerTransport::SendLoop(Peer* peer) {
  std::mt19937_64 rng(peer->id.value() ^ absl::ToUnixNanos(absl::Now()));
  absl::Duration backoff = options_.min_backoff;
  std::unique_ptr<grpc::ClientContext> context;
  std::unique_ptr<grpc::ClientWriter<MessageBatch>> writer;
  int64_t stream_opened_ns = 0;
  StreamSummary summary;
  // `failed`: a write failed, so the call is over and Finish returns the
  // peer's status at once (no cancel first, which would replace it).
  auto close_stream = [&](bool failed = false) {
    if (writer == nullptr) return;
    {
      absl::MutexLock lock(&peer->mu);
      peer->stream_context = nullptr;
    }
    if (!failed) context->TryCancel();
    const grpc::Status status = writer->Finish();
    writer.reset();
    context.reset();
    if (failed && IsRemovedRefusal(status) && options_.on_removed_refusal) {
      options_.on_removed_refusal(peer->id);
    }
  };
  for (;;) {
    std::vector<Message> batch;
    std::shared_ptr<grpc::Channel> channel;
    std::shared_ptr<RaftPeer::Stub> stub;
    bool reopen = false;
    {
      absl::MutexLock lock(&peer->mu);
      while (!peer->stop && peer->queue.empty() && !peer->address_changed) {
        peer->cv.Wait(&peer->mu);
      }
      if (peer->stop) break;
      reopen = peer->address_changed;
      peer->address_changed = false;
      size_t bytes = 0;
      while (!peer->queue.empty() && bytes < options_.max_batch_bytes) {
        for (const auto& e : peer->queue.front().entries) {
          bytes += e.data.size();
        }
        batch.push_back(std::move(peer->queue.front()));
        peer->queue.pop_front();
      }
      channel = peer->channel;
      stub = peer->stub;
    }
    if (reopen) close_stream();
    if (batch.empty()) continue;
    if (Dropped(peer->id)) {
      peer->Drop(PeerDrop::kFaultSwitch, batch.size());
      continue;
    }
    if (writer == nullptr) {
      context = std::make_unique<grpc::ClientContext>();
      {
        absl::MutexLock lock(&peer->mu);
        if (peer->stop) break;
        peer->stream_context = context.get();
      }
      writer = stub->SendMessages(context.get(), &summary);
      stream_opened_ns = SteadyNowNs();
    }
    MessageBatch wire;
    wire.set_cluster_id(options_.cluster_id);
    wire.set_from(options_.self.value());
    wire.set_to(peer->id.value());
    wire.set_from_address(options_.self_address);
    wire.set_cluster_epoch(options_.cluster_epoch);
    if (options_.wall_clocks != nullptr) {
      wire.set_sender_wall_ms(options_.wall_clocks->WallMs());
      if (std::optional<int64_t> off =
              options_.wall_clocks->OffMedianMs(peer->id)) {
        wire.set_receiver_off_median_ms(*off);
      }
    }
    wire.mutable_messages()->Reserve(static_cast<int>(batch.size()));
    for (const Message& m : batch) ToWire(m, wire.add_messages());
    if (!writer->Write(wire)) {
      peer->Drop(PeerDrop::kStreamBroken, batch.size());
      peer->reconnects.fetch_add(1, std::memory_order_relaxed);
      close_stream(/*failed=*/true);
      // The next connection attempt is paced by the backoff below, on the
      // steady clock, not by gRPC's own: its timer thread waits until a
      // wall-clock instant (Abseil's CondVar), so a wall clock stepped back
      // while a reconnect was pending delayed it by the step, and this
      // node sent nothing to the peer meanwhile while still hearing from it
      // (ClusterTest.AfterAnOutageANodeBehindTheOthersSignsNoJwt, whose
      // nodes restart under libfaketime's offsets, which act the same way).
      if (channel != nullptr) {
        grpc::experimental::ChannelResetConnectionBackoff(channel.get());
      }
      // A stream that lived a while (the peer restarted) is reopened soon;
      // one that broke at once keeps backing off. Not reset on a write
      // that succeeded: that only means buffered, and a peer refusing every
      // stream after reading its first batch (another cluster, starting)
      // was otherwise retried at min_backoff for as long as it refused.
      if (SteadyNowNs() - stream_opened_ns >=
          absl::ToInt64Nanoseconds(options_.max_backoff)) {
        backoff = options_.min_backoff;
      }
      // Equal jitter: peers that lost each other do not retry in step.
      const double fraction =
          0.5 + 0.5 * std::uniform_real_distribution<double>(0, 1)(rng);
      if (!SleepUnlessStopping(peer, backoff * fraction)) break;
      backoff = std::min(backoff * 2, options_.max_backoff);
      continue;
    }
    peer->batches_sent.fetch_add(1, std::memory_order_relaxed);
    peer->messages_sent.fetch_add(batch.size(), std::memory_order_relaxed);
  }
  close_stream();
}

void PeerTransport::SnapshotLoop(Peer* peer) {
  for (;;) {
    Message m;
    {
      absl::MutexLock lock(&peer->mu);
      while (!peer->stop && !peer->snapshot) {
        peer->snapshot_cv.Wait(&peer->mu);
      }
      if (peer->stop) return;
      m = std::move(*peer->snapshot);
      peer->snapshot.reset();
      peer->snapshot_busy = true;
    }
    const absl::Status status = SendSnapshot(peer, m);
    if (status.ok()) {
      peer->snapshots_sent.fetch_add(1, std::memory_order_relaxed);
    } else {
      peer->snapshots_failed.fetch_add(1, std::memory_order_relaxed);
      logging::Warn("snapshot.send_failed",
                    logging::Fields()
                        .Add("index", m.snapshot->meta.index.value())
                        .Add("peer", peer->id.value())
                        .Error(status));
    }
    absl::MutexLock lock(&peer->mu);
    peer->snapshot_busy = false;
  }
}

absl::Status PeerTransport::SendSnapshot(Peer* peer, const Message& message) {
  if (Dropped(peer->id)) return absl::UnavailableError("fault switch");
  if (options_.snapshots == nullptr || !message.snapshot) {
    return absl::FailedPreconditionError("no snapshot image to send");
  }
  absl::StatusOr<sessiond::v1::internal::SnapshotRef> ref =
      storage::DecodeSnapshotRef(message.snapshot->data);
  if (!ref.ok()) return ref.status();
  // Opened before anything else: a newer snapshot may replace (unlink) this
  // file meanwhile, and an open file keeps its data.
  absl::StatusOr<std::unique_ptr<storage::SnapshotImageSource>> source =
      storage::SnapshotImageSource::Open(*options_.snapshots, *ref);
  if (!source.ok()) return source.status();
  std::shared_ptr<grpc::Channel> channel;
  std::shared_ptr<RaftPeer::Stub> stub;
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(
      absl::Now() + options_.snapshot_timeout_base +
      absl::Seconds(static_cast<int64_t>(
          ref->size() /
          std::max<uint64_t>(1, options_.snapshot_min_bytes_per_second)))));
  {
    absl::MutexLock lock(&peer->mu);
    if (peer->stop) return absl::CancelledError("stopping");
    channel = peer->snapshot_channel;
    stub = peer->snapshot_stub;
    peer->snapshot_context = &context;
  }
  ReconnectNowIfBackingOff(*channel);
  SnapshotAck ack;
  std::unique_ptr<grpc::ClientWriter<SnapshotChunk>> writer =
      stub->SendSnapshot(&context, &ack);
  SnapshotChunk chunk;
  chunk.set_cluster_id(options_.cluster_id);
  chunk.set_from(options_.self.value());
  chunk.set_to(peer->id.value());
  chunk.set_from_address(options_.self_address);
  chunk.set_cluster_epoch(options_.cluster_epoch);
  Message header = message;
  header.snapshot->data.clear();
  ToWire(header, chunk.mutable_message());
  chunk.set_total_bytes(ref->size());
  chunk.set_sha256(ref->sha256());
  absl::Status read = absl::OkStatus();
  bool written = true;
  while (!(*source)->done()) {
    read = (*source)->Next(options_.snapshot_chunk_bytes, chunk.mutable_data());
    if (!read.ok()) break;
    if (!writer->Write(chunk)) {
      written = false;
      break;
    }
    chunk.Clear();
  }
  if (!read.ok()) {
    // Not one more byte: the peer must not take a partial image for whole.
    context.TryCancel();
  } else if (written) {
    writer->WritesDone();
  }
  const grpc::Status status = writer->Finish();
  {
    absl::MutexLock lock(&peer->mu);
    peer->snapshot_context = nullptr;
  }
  if (absl::IsDataLoss(read)) {
    // This node's own image: every follower would be sent it and refuse it,
    // for as long as it is the log's snapshot.
    logging::Error(
        "snapshot.image_corrupt",
        logging::Fields()
            .Add("index", message.snapshot->meta.index.value())
            .Add("peer", peer->id.value())
            .Error(read)
            .Add("msg",
                 "this node's snapshot image is damaged (disk or file "
                 "system): not sent; a new one is made once the next entry "
                 "applies. Check the data disk"));
    if (options_.on_corrupt_image) {
      options_.on_corrupt_image(message.snapshot->meta.index);
    }
    return read;
  }
  if (!read.ok()) return read;
  if (!status.ok()) {
    return absl::UnavailableError(absl::StrCat(
        "peer answered ", status.error_code(), ": ", status.error_message()));
  }
  return absl::OkStatus();
}

std::map<NodeId, PeerTraffic> PeerTransport::traffic() const {
  std::map<NodeId, PeerTraffic> traffic;
  absl::MutexLock lock(&mu_);
  for (const auto& [id, peer] : peers_) {
    PeerTraffic& t = traffic[id];
    t.batches_sent = peer->batches_sent.load(std::memory_order_relaxed);
    t.messages_sent = peer->messages_sent.load(std::memory_order_relaxed);
    for (int i = 0; i < kNumPeerDrops; ++i) {
      t.dropped[i] = peer->dropped[i].load(std::memory_order_relaxed);
    }
    t.reconnects = peer->reconnects.load(std::memory_order_relaxed);
    t.snapshots_sent = peer->snapshots_sent.load(std::memory_order_relaxed);
    t.snapshots_failed = peer->snapshots_failed.load(std::memory_order_relaxed);
    absl::MutexLock peer_lock(&peer->mu);
    t.queued = peer->queue.size();
  }
  for (const auto& [id, n] : unknown_peer_drops_) {
    traffic[id].dropped[static_cast<int>(PeerDrop::kUnknownPeer)] = n;
  }
  return traffic;
}

void PeerTransport::Stop() {
  std::map<NodeId, std::unique_ptr<Peer>> peers;
  {
    absl::MutexLock lock(&mu_);
    if (stopped_) return;
    stopped_ = true;
    peers.swap(peers_);
  }
  for (auto& [id, peer] : peers) {
    absl::MutexLock lock(&peer->mu);
    peer->stop = true;
    if (peer->stream_context != nullptr) peer->stream_context->TryCancel();
    if (peer->snapshot_context != nullptr) {
      peer->snapshot_context->TryCancel();
    }
    peer->cv.SignalAll();
    peer->snapshot_cv.SignalAll();
  }
  for (auto& [id, peer] : peers) {
    if (peer->sender.joinable()) peer->sender.join();
    if (peer->snapshotter.joinable()) peer->snapshotter.join();
  }
}

}  // namespace sessiond::server
