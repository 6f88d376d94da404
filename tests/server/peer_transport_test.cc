// Copyright sessiond authors. Licensed under the Apache License 2.0.
//
// PeerTransport's per-peer traffic counters (sessiond_peer_* in /metrics)
// against a real gRPC peer on loopback that counts what reaches it, a port
// nobody listens on, and the fault switch.
#include "server/peer_transport.h"

#include <arpa/inet.h>
#include <grpcpp/grpcpp.h>
#include <netinet/in.h>
#include <openssl/sha.h>
#include <sys/socket.h>
#include <unistd.h>

#include <any>
#include <atomic>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <limits>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "common/fault_point.h"
#include "common/metrics_exposition.h"
#include "gtest/gtest.h"
#include "replication/memory_log_store.h"
#include "replication/node_driver.h"
#include "server/node_metrics.h"
#include "server/peer_service.h"
#include "server/raft_wire.h"
#include "storage/snapshot_files.h"
#include "tests/server/test_util.h"

namespace sessiond::server {
namespace {

using replication::Message;
using replication::MessageType;
using sessiond::v1::internal::MessageBatch;
using sessiond::v1::internal::RaftPeer;
using sessiond::v1::internal::StreamSummary;
using testing::Eventually;
using testing::ScopedTempDir;

constexpr NodeId kSelf(1);
constexpr NodeId kPeer(2);

// The receiving end of RaftPeer.SendMessages, counting messages.
class CountingPeer final : public RaftPeer::Service {
 public:
  grpc::Status SendMessages(grpc::ServerContext* /*context*/,
                            grpc::ServerReader<MessageBatch>* reader,
                            StreamSummary* /*summary*/) override {
    MessageBatch batch;
    while (reader->Read(&batch)) {
      absl::MutexLock lock(&mu_);
      received_ += batch.messages_size();
    }
    return grpc::Status::OK;
  }
  int received() const {
    absl::MutexLock lock(&mu_);
    return received_;
  }

 private:
  mutable absl::Mutex mu_;
  int received_ ABSL_GUARDED_BY(mu_) = 0;
};

// `service` served on a free loopback port with the daemon's peer
// listener's keepalive settings (the transport pings every 2 s; a server
// with gRPC's defaults ends such a connection, and every stream on it).
struct LoopbackServer {
  std::unique_ptr<grpc::Server> server;
  int port = 0;
  std::string address() const { return absl::StrCat("127.0.0.1:", port); }
};
LoopbackServer Serve(grpc::Service* service,
                     const std::string& address = "127.0.0.1:0") {
  LoopbackServer served;
  grpc::ServerBuilder builder;
  builder.AddListeningPort(address, grpc::InsecureServerCredentials(),
                           &served.port);
  builder.AddChannelArgument(
      GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS, 1000);
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MAX_PING_STRIKES, 0);
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  builder.RegisterService(service);
  served.server = builder.BuildAndStart();
  return served;
}

// CountingPeer served on a free loopback port.
class PeerServer {
 public:
  PeerServer() : served_(Serve(&peer_)) {}
  ~PeerServer() { served_.server->Shutdown(); }
  std::string address() const { return served_.address(); }
  const CountingPeer& peer() const { return peer_; }

 private:
  CountingPeer peer_;
  LoopbackServer served_;
};

// A loopback port bound but not listening: connections to it are refused,
// and no other process can take it while this lives.
class ClosedPort {
 public:
  ClosedPort() {
    fd_ = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof(addr);
    if (bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0 &&
        getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &len) == 0) {
      port_ = ntohs(addr.sin_port);
    }
  }
  ~ClosedPort() { close(fd_); }
  std::string address() const { return absl::StrCat("127.0.0.1:", port_); }

 private:
  int fd_ = -1;
  int port_ = 0;
};

std::vector<Message> Heartbeats(NodeId to, int n) {
  std::vector<Message> messages(n);
  for (Message& m : messages) {
    m.type = MessageType::kHeartbeat;
    m.from = kSelf;
    m.to = to;
    m.term = Term(1);
  }
  return messages;
}

uint64_t Dropped(const PeerTraffic& t, PeerDrop reason) {
  return t.dropped[static_cast<int>(reason)];
}

uint64_t AllDropped(const PeerTraffic& t) {
  uint64_t n = 0;
  for (uint64_t d : t.dropped) n += d;
  return n;
}

PeerTransportOptions Options() {
  PeerTransportOptions options;
  options.cluster_id = 7;
  options.self = kSelf;
  return options;
}

// A snapshot message at `index`, term 1, from kSelf to kPeer, without
// its image.
Message SnapshotMessageAt(LogIndex index) {
  Message m;
  m.type = MessageType::kSnapshot;
  m.from = kSelf;
  m.to = kPeer;
  m.term = Term(1);
  m.snapshot.emplace();
  m.snapshot->meta.index = index;
  m.snapshot->meta.term = Term(1);
  return m;
}

// A snapshot at `ref`'s index 5, from kSelf to kPeer.
Message SnapshotMessage(const v1::internal::SnapshotRef& ref) {
  Message m = SnapshotMessageAt(LogIndex(5));
  m.snapshot->data = storage::EncodeSnapshotRef(ref);
  return m;
}

// An image of a snapshot at 5/1 with `records` sessions in `images`.
v1::internal::SnapshotRef MakeImage(storage::SnapshotFiles& images,
                                    int records) {
  v1::internal::SnapshotHeader header;
  header.set_index(5);
  header.set_term(1);
  auto file = images.NewFile(LogIndex(5), Term(1), "local");
  EXPECT_TRUE(file.ok()) << file.status();
  storage::SnapshotImageWriter writer(*std::move(file), header);
  for (int i = 0; i < records; ++i) {
    v1::internal::StoredSession session;
    session.set_token_hash(std::string(32, static_cast<char>(i)));
    session.mutable_session()->set_session_id(absl::StrCat("s", i));
    session.mutable_session()->set_user_id("u");
    EXPECT_TRUE(writer.AddRecord(session.SerializeAsString()).ok());
  }
  absl::StatusOr<v1::internal::SnapshotRef> ref = writer.Finish();
  EXPECT_TRUE(ref.ok()) << ref.status();
  return ref.ok() ? *ref : v1::internal::SnapshotRef();
}

// Every field of a Raft message comes through the wire as it left. (The
// fuzzer's round trip starts from the wire, so a field written but not read
// back escapes it: both of its decodings lack the field alike.)
TEST(RaftWireTest, EveryFieldOfAMessageCrossesTheWire) {
  Message m;
  m.type = MessageType::kSnapshot;
  m.from = NodeId(3);
  m.to = NodeId(4);
  m.term = Term(5);
  m.index = LogIndex(6);
  m.log_term = Term(7);
  m.entries.push_back({Term(7), LogIndex(7), replication::EntryType::kNormal,
                       std::string("a\0b", 3)});
  m.entries.push_back(
      {Term(7), LogIndex(8), replication::EntryType::kConfChange, "cc"});
  m.commit = LogIndex(9);
  m.leader_commit = LogIndex(10);
  m.leader_quiet_us = 11;
  m.reject = true;
  m.reject_hint = LogIndex(12);
  m.hint_term = Term(13);
  m.snapshot.emplace();
  m.snapshot->meta.index = LogIndex(14);
  m.snapshot->meta.term = Term(15);
  m.snapshot->meta.conf_state.voters = {NodeId(1), NodeId(2)};
  m.snapshot->meta.conf_state.learners = {NodeId(16)};
  m.context = "17/18/19";

  v1::internal::RaftMessage wire;
  ToWire(m, &wire);
  v1::internal::RaftMessage read;
  ASSERT_TRUE(read.ParseFromString(wire.SerializeAsString()));
  absl::StatusOr<Message> back = FromWire(std::move(read));
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->leader_commit, m.leader_commit);
  EXPECT_EQ(back->leader_quiet_us, m.leader_quiet_us);
  EXPECT_TRUE(*back == m) << "a field was lost or changed on the wire";
}

TEST(PeerTransportTest, TrafficIsCountedPerPeerAndExported) {
  PeerServer server;
  PeerTransport transport(Options());
  transport.SetAddress(kPeer, server.address());
  transport.Send(Heartbeats(kPeer, 100));
  transport.Send(Heartbeats(NodeId(7), 3));  // no address known for 7
  ASSERT_TRUE(Eventually([&] { return server.peer().received() == 100; }))
      << server.peer().received() << " of 100 received";

  std::map<NodeId, PeerTraffic> traffic = transport.traffic();
  ASSERT_EQ(traffic.count(kPeer), 1u);
  const PeerTraffic& t = traffic[kPeer];
  EXPECT_EQ(t.messages_sent, 100u);
  EXPECT_GE(t.batches_sent, 1u);
  EXPECT_LE(t.batches_sent, 100u);
  EXPECT_EQ(AllDropped(t), 0u);
  EXPECT_EQ(t.reconnects, 0u);
  EXPECT_EQ(t.queued, 0u);
  EXPECT_EQ(Dropped(traffic[NodeId(7)], PeerDrop::kUnknownPeer), 3u);
  EXPECT_EQ(traffic[NodeId(7)].messages_sent, 0u);

  metrics::ExpositionWriter writer;
  NodeMetricsSources sources;
  sources.transport = &transport;
  CollectNodeMetrics(sources, &writer);
  const std::string& text = writer.text();
  for (const char* line :
       {"sessiond_peer_messages_sent_total{peer=\"2\"} 100",
        "sessiond_peer_messages_dropped_total{peer=\"2\",reason=\"queue_"
        "full\"} 0",
        "sessiond_peer_messages_dropped_total{peer=\"7\",reason=\"unknown_"
        "peer\"} 3",
        "sessiond_peer_reconnects_total{peer=\"2\"} 0",
        "sessiond_peer_queued_messages{peer=\"2\"} 0"}) {
    EXPECT_TRUE(absl::StrContains(text, line)) << line << "\nin\n" << text;
  }
}

// Nothing listens: every message ends dropped (the stream broke, or the
// queue was full meanwhile), none is counted as sent, and the stream is
// reopened again and again.
TEST(PeerTransportTest, MessagesToADeadPeerAreCountedAsDropped) {
  PeerTransportOptions options = Options();
  options.max_queued_messages = 4;
  PeerTransport transport(options);
  const ClosedPort closed;
  transport.SetAddress(kPeer, closed.address());
  transport.Send(Heartbeats(kPeer, 50));
  PeerTraffic t;
  ASSERT_TRUE(Eventually([&] {
    t = transport.traffic()[kPeer];
    return AllDropped(t) == 50 && t.reconnects >= 1;
  })) << AllDropped(t)
      << " of 50 dropped, " << t.reconnects << " reconnects";
  EXPECT_EQ(t.messages_sent, 0u);
  EXPECT_EQ(t.queued, 0u);
  EXPECT_EQ(
      Dropped(t, PeerDrop::kQueueFull) + Dropped(t, PeerDrop::kStreamBroken),
      50u);
  EXPECT_GE(Dropped(t, PeerDrop::kStreamBroken), 1u);
}

// A peer that ends every stream after reading its first batch, as one of
// another cluster, or one still starting, refuses them.
class RefusingPeer final : public RaftPeer::Service {
 public:
  grpc::Status SendMessages(grpc::ServerContext* /*context*/,
                            grpc::ServerReader<MessageBatch>* reader,
                            StreamSummary* /*summary*/) override {
    MessageBatch batch;
    reader->Read(&batch);
    return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION,
                        "message from another cluster");
  }
};

// The first write on a stream succeeds (it is only buffered) before the
// peer's refusal arrives. That success reset the backoff, so a refusing
// peer was reconnected to every 25-50 ms for as long as it refused. The
// backoff now grows (50 ms, 100 ms, ... 1 s): about 8 reconnects in the two
// seconds below. (A slower machine only lowers the count.)
TEST(PeerTransportTest, APeerRefusingEveryStreamIsRetriedWithGrowingBackoff) {
  RefusingPeer refusing;
  LoopbackServer served = Serve(&refusing);
  ASSERT_NE(served.server, nullptr);
  PeerTransport transport(Options());
  transport.SetAddress(kPeer, served.address());
  const absl::Time end = absl::Now() + absl::Seconds(2);
  for (int i = 0; i < 1000 && absl::Now() < end; ++i) {
    transport.Send(Heartbeats(kPeer, 1));
    absl::SleepFor(absl::Milliseconds(5));
  }
  const PeerTraffic t = transport.traffic()[kPeer];
  EXPECT_GE(t.reconnects, 1u);
  EXPECT_LE(t.reconnects, 20u);
  served.server->Shutdown();
}

// Takes a snapshot stream's first chunk, then answers nothing until
// released (a receiver alive but stuck: its gRPC still answers pings).
class StuckSnapshotPeer final : public RaftPeer::Service {
 public:
  grpc::Status SendSnapshot(
      grpc::ServerContext* /*context*/,
      grpc::ServerReader<v1::internal::SnapshotChunk>* reader,
      v1::internal::SnapshotAck* /*ack*/) override {
    v1::internal::SnapshotChunk chunk;
    reader->Read(&chunk);
    {
      absl::MutexLock lock(&mu_);
      ++streams_;
      if (streams_ > 1) return grpc::Status::OK;  // only the first is stuck
    }
    released_.WaitForNotificationWithTimeout(absl::Seconds(60));
    return grpc::Status::OK;
  }
  void Release() { released_.Notify(); }

 private:
  absl::Mutex mu_;
  int streams_ ABSL_GUARDED_BY(mu_) = 0;
  absl::Notification released_;
};

// The outgoing snapshot stream has a deadline: a stuck receiver held this
// peer's one snapshot slot until the stream ended, and every later
// snapshot to it was dropped as busy.
TEST(PeerTransportTest, ASnapshotStreamToAStuckPeerEndsAtItsDeadline) {
  ScopedTempDir dir;
  storage::SnapshotFiles images(dir.Child("snap"));
  ASSERT_TRUE(images.Init().ok());
  const v1::internal::SnapshotRef ref = MakeImage(images, 0);

  StuckSnapshotPeer stuck;
  LoopbackServer served = Serve(&stuck);
  ASSERT_NE(served.server, nullptr);

  PeerTransportOptions options = Options();
  options.snapshots = &images;
  options.snapshot_timeout_base = absl::Seconds(1);
  PeerTransport transport(options);
  transport.SetAddress(kPeer, served.address());

  transport.Send({SnapshotMessage(ref)});
  ASSERT_TRUE(Eventually([&] {
    return transport.traffic()[kPeer].snapshots_failed == 1;
  })) << "the stream to a stuck peer never ended";
  // The slot is free again: the next snapshot goes out.
  transport.Send({SnapshotMessage(ref)});
  ASSERT_TRUE(Eventually(
      [&] { return transport.traffic()[kPeer].snapshots_sent == 1; }));
  stuck.Release();
  served.server->Shutdown();
}

// Records where each kind of stream comes from (the client's address and
// port: one per connection).
class ConnectionRecordingPeer final : public RaftPeer::Service {
 public:
  grpc::Status SendMessages(grpc::ServerContext* context,
                            grpc::ServerReader<MessageBatch>* reader,
                            StreamSummary* /*summary*/) override {
    Record(&message_peers_, context->peer());
    MessageBatch batch;
    while (reader->Read(&batch)) {
    }
    return grpc::Status::OK;
  }
  grpc::Status SendSnapshot(
      grpc::ServerContext* context,
      grpc::ServerReader<v1::internal::SnapshotChunk>* reader,
      v1::internal::SnapshotAck* /*ack*/) override {
    Record(&snapshot_peers_, context->peer());
    v1::internal::SnapshotChunk chunk;
    while (reader->Read(&chunk)) {
      absl::MutexLock lock(&mu_);
      snapshot_bytes_ += chunk.data().size();
    }
    return grpc::Status::OK;
  }
  uint64_t snapshot_bytes() const {
    absl::MutexLock lock(&mu_);
    return snapshot_bytes_;
  }
  std::set<std::string> message_peers() const {
    absl::MutexLock lock(&mu_);
    return message_peers_;
  }
  std::set<std::string> snapshot_peers() const {
    absl::MutexLock lock(&mu_);
    return snapshot_peers_;
  }

 private:
  void Record(std::set<std::string>* peers, const std::string& peer) {
    absl::MutexLock lock(&mu_);
    peers->insert(peer);
  }
  mutable absl::Mutex mu_;
  std::set<std::string> message_peers_ ABSL_GUARDED_BY(mu_);
  std::set<std::string> snapshot_peers_ ABSL_GUARDED_BY(mu_);
  uint64_t snapshot_bytes_ ABSL_GUARDED_BY(mu_) = 0;
};

// A snapshot goes on a connection of its own. On the message stream's, a
// big image filled the connection's flow-control window and socket
// buffers, and the heartbeats behind it were late enough for followers to
// start elections.
TEST(PeerTransportTest, SnapshotsTravelOnAConnectionOfTheirOwn) {
  ScopedTempDir dir;
  storage::SnapshotFiles images(dir.Child("snap"));
  ASSERT_TRUE(images.Init().ok());
  const v1::internal::SnapshotRef ref = MakeImage(images, 0);

  ConnectionRecordingPeer recording;
  LoopbackServer served = Serve(&recording);
  ASSERT_NE(served.server, nullptr);
  PeerTransportOptions options = Options();
  options.snapshots = &images;
  PeerTransport transport(options);
  transport.SetAddress(kPeer, served.address());
  transport.Send(Heartbeats(kPeer, 3));
  transport.Send({SnapshotMessage(ref)});
  ASSERT_TRUE(Eventually([&] {
    return transport.traffic()[kPeer].snapshots_sent == 1 &&
           !recording.message_peers().empty();
  }));
  const std::set<std::string> messages = recording.message_peers();
  const std::set<std::string> snapshots = recording.snapshot_peers();
  ASSERT_EQ(snapshots.size(), 1u);
  EXPECT_EQ(messages.count(*snapshots.begin()), 0u)
      << "the snapshot came on the message stream's connection, "
      << *snapshots.begin();
  transport.Stop();
  served.server->Shutdown();
}

// A snapshot for a peer that was down goes out once the peer is back,
// without waiting out gRPC's reconnect backoff from the failed attempts:
// that wait runs to a wall-clock instant, so after the node's clock was
// stepped back it lasted as long as the step, and every snapshot meanwhile
// was refused at once.
TEST(PeerTransportTest, ASnapshotForAPeerBackFromDownSkipsTheReconnectBackoff) {
  ScopedTempDir dir;
  storage::SnapshotFiles images(dir.Child("snap"));
  ASSERT_TRUE(images.Init().ok());
  const v1::internal::SnapshotRef ref = MakeImage(images, 0);

  auto down = std::make_unique<ClosedPort>();
  const std::string address = down->address();
  PeerTransportOptions options = Options();
  options.snapshots = &images;
  PeerTransport transport(options);
  transport.SetAddress(kPeer, address);
  transport.Send({SnapshotMessage(ref)});
  ASSERT_TRUE(Eventually(
      [&] { return transport.traffic()[kPeer].snapshots_failed == 1; }));
  // gRPC keeps reconnecting meanwhile, its backoff growing to its 1 s
  // ceiling, so the channel spends most of the time waiting.
  absl::SleepFor(absl::Milliseconds(2500));

  down.reset();
  ConnectionRecordingPeer back;
  LoopbackServer served = Serve(&back, address);
  ASSERT_NE(served.server, nullptr);
  transport.Send({SnapshotMessage(ref)});
  ASSERT_TRUE(Eventually([&] {
    const PeerTraffic t = transport.traffic()[kPeer];
    return t.snapshots_sent + t.snapshots_failed == 2;
  }));
  EXPECT_EQ(transport.traffic()[kPeer].snapshots_sent, 1u)
      << "the snapshot was refused while the channel backed off";
  transport.Stop();
  served.server->Shutdown();
}

// RenewChannels (a role file reloaded) opens new connections to every
// peer, and the message stream goes on over them: who serves at a peer's
// address is checked against the roles only at a handshake, so the
// connection opened under the old roles must end. It carried on.
TEST(PeerTransportTest, RenewedChannelsAreNewConnections) {
  ConnectionRecordingPeer recording;
  LoopbackServer served = Serve(&recording);
  ASSERT_NE(served.server, nullptr);
  PeerTransport transport(Options());
  transport.SetAddress(kPeer, served.address());
  transport.Send(Heartbeats(kPeer, 3));
  ASSERT_TRUE(Eventually([&] { return !recording.message_peers().empty(); }));
  const std::set<std::string> before = recording.message_peers();
  transport.RenewChannels();
  ASSERT_TRUE(Eventually([&] {
    transport.Send(Heartbeats(kPeer, 1));
    return recording.message_peers().size() > before.size();
  })) << "no new connection after RenewChannels";
  transport.Stop();
  served.server->Shutdown();
}

// This node's own image, damaged on disk, is not sent, and the node is
// told to make another. A follower refused it (its checksum fails), the
// leader sent it again a few heartbeats later, and so on for as long as
// it was the log's snapshot: the follower never caught up.
TEST(PeerTransportTest, ADamagedImageIsNotSentAndAskedToBeReplaced) {
  ScopedTempDir dir;
  storage::SnapshotFiles images(dir.Child("snap"));
  ASSERT_TRUE(images.Init().ok());
  const v1::internal::SnapshotRef ref = MakeImage(images, 70000);
  ASSERT_GT(ref.size(), 3u << 20);  // several chunks
  {
    std::fstream image(images.PathOf(ref.file()),
                       std::ios::binary | std::ios::in | std::ios::out);
    image.seekp(static_cast<std::streamoff>(ref.size() / 2));
    image.put('\x7f');
  }

  ConnectionRecordingPeer recording;
  LoopbackServer served = Serve(&recording);
  ASSERT_NE(served.server, nullptr);
  PeerTransportOptions options = Options();
  options.snapshots = &images;
  absl::Mutex mu;
  std::vector<LogIndex> corrupt;
  options.on_corrupt_image = [&](LogIndex index) {
    absl::MutexLock lock(&mu);
    corrupt.push_back(index);
  };
  PeerTransport transport(options);
  transport.SetAddress(kPeer, served.address());
  transport.Send({SnapshotMessage(ref)});
  ASSERT_TRUE(Eventually(
      [&] { return transport.traffic()[kPeer].snapshots_failed == 1; }));
  {
    absl::MutexLock lock(&mu);
    EXPECT_EQ(corrupt, std::vector<LogIndex>{LogIndex(5)});
  }
  EXPECT_EQ(transport.traffic()[kPeer].snapshots_sent, 0u);
  EXPECT_LT(recording.snapshot_bytes(), ref.size());
  transport.Stop();
  served.server->Shutdown();
}

TEST(PeerTransportTest, TheFaultSwitchDropsAndCountsAPeersTraffic) {
  PeerServer server;
  testing::ScopedTempDir dir;
  const std::string drop_file = dir.Child("drop");
  std::ofstream(drop_file) << "2\n";
  PeerTransportOptions options = Options();
  options.drop_file = drop_file;
  PeerTransport transport(options);
  transport.SetAddress(kPeer, server.address());
  transport.Send(Heartbeats(kPeer, 10));
  PeerTraffic t;
  ASSERT_TRUE(Eventually([&] {
    t = transport.traffic()[kPeer];
    return Dropped(t, PeerDrop::kFaultSwitch) == 10;
  })) << Dropped(t, PeerDrop::kFaultSwitch)
      << " of 10 dropped";
  EXPECT_EQ(t.messages_sent, 0u);
  EXPECT_EQ(server.peer().received(), 0);
}

// Peers heard from for the first time at once are all recorded: each
// writer creating the missing file truncated the other's line, so a node
// could forget a peer whose acknowledgements had counted (and then not
// recognize it, wiped, in Hello).
TEST(PeerServiceTest, PeersHeardFromAtOnceAreAllRecorded) {
  ScopedTempDir dir;
  for (int round = 0; round < 100; ++round) {
    const std::string path = dir.Child(absl::StrCat("heard-", round));
    PeerService service(
        NodeId(1), [] { return v1::internal::HelloResponse(); }, path);
    std::atomic<int> ready{0};
    auto hear = [&](uint64_t node) {
      ready.fetch_add(1);
      while (ready.load() < 2) {
      }
      EXPECT_TRUE(service.RecordHeardFrom(node).ok());
    };
    std::thread a(hear, 2);
    std::thread b(hear, 3);
    a.join();
    b.join();
    std::ifstream in(path);
    std::set<std::string> lines;
    for (std::string line; std::getline(in, line);) lines.insert(line);
    ASSERT_EQ(lines, (std::set<std::string>{"2", "3"})) << "round " << round;
  }
}

// A crash mid-append leaves a last line without its newline. It is not a
// peer heard from (the append never returned; "5" may be the start of
// "53"), and the next append ends it unreadably first: it used to extend
// the torn one ("5" then "3" read back as 53), forgetting a peer whose
// messages had reached Raft.
TEST(PeerServiceTest, AnAppendAfterATornLastLineStartsALineOfItsOwn) {
  ScopedTempDir dir;
  const std::string path = dir.Child("heard");
  std::ofstream(path) << "2\n5";
  auto hello = [] { return v1::internal::HelloResponse(); };
  {
    PeerService service(NodeId(1), hello, path);
    ASSERT_TRUE(service.RecordHeardFrom(3).ok());
  }
  std::ifstream in(path);
  std::vector<std::string> lines;
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  EXPECT_EQ(lines, (std::vector<std::string>{"2", "5!", "3"}));
}

// A peer whose record could not be written is not taken as recorded: the
// caller refuses its messages, and the next call writes it. It was marked
// heard in memory at the first failure and never written.
TEST(PeerServiceTest, APeerNotWrittenDownIsNotTakenAsRecorded) {
  ScopedTempDir dir;
  const std::string folder = dir.Child("not-yet");
  const std::string path = folder + "/heard";
  PeerService service(
      NodeId(1), [] { return v1::internal::HelloResponse(); }, path);
  const absl::Status failed = service.RecordHeardFrom(3);
  EXPECT_EQ(failed.code(), absl::StatusCode::kUnavailable) << failed;
  ASSERT_TRUE(std::filesystem::create_directory(folder));
  ASSERT_TRUE(service.RecordHeardFrom(3).ok());
  std::ifstream in(path);
  std::string line;
  ASSERT_TRUE(std::getline(in, line));
  EXPECT_EQ(line, "3");
}

// A snapshot's image is checked whole when received, before Raft sees it:
// installing a snapshot drops the log, and an image refused only when
// applied (the header at another index, a malformed record) stopped the
// node at every restart, with no log left to go back to. Refused here, the
// image is deleted and the sender is told why. (Nothing reaches the driver:
// these parts have none.)
TEST(PeerServiceTest, AReceivedSnapshotImageThatIsNotTheSnapshotIsRefused) {
  ScopedTempDir dir;
  storage::SnapshotFiles made(dir.Child("made"));
  storage::SnapshotFiles received(dir.Child("received"));
  ASSERT_TRUE(made.Init().ok());
  ASSERT_TRUE(received.Init().ok());
  // An image at 7/1 whose second record has no user id.
  std::string image;
  {
    v1::internal::SnapshotHeader header;
    header.set_index(7);
    header.set_term(1);
    auto file = made.NewFile(LogIndex(7), Term(1), "local");
    ASSERT_TRUE(file.ok());
    storage::SnapshotImageWriter writer(*std::move(file), header);
    v1::internal::StoredSession session;
    session.set_token_hash(std::string(32, 'a'));
    session.mutable_session()->set_session_id("s1");
    session.mutable_session()->set_user_id("u1");
    ASSERT_TRUE(writer.AddRecord(session.SerializeAsString()).ok());
    session.set_token_hash(std::string(32, 'b'));
    session.mutable_session()->set_session_id("s2");
    session.mutable_session()->clear_user_id();
    ASSERT_TRUE(writer.AddRecord(session.SerializeAsString()).ok());
    auto ref = writer.Finish();
    ASSERT_TRUE(ref.ok());
    std::ifstream in(made.PathOf(ref->file()), std::ios::binary);
    image.assign(std::istreambuf_iterator<char>(in), {});
  }

  PeerTransportOptions options = Options();
  options.self = kPeer;
  PeerTransport transport(options);
  transport.SetAddress(kSelf, "127.0.0.1:1");
  PeerService service(kPeer, [] { return v1::internal::HelloResponse(); });
  PeerServiceParts parts;
  parts.cluster_id = options.cluster_id;
  parts.transport = &transport;
  parts.snapshots = &received;
  service.Attach(parts);
  LoopbackServer served = Serve(&service);
  ASSERT_NE(served.server, nullptr);
  std::unique_ptr<RaftPeer::Stub> stub = RaftPeer::NewStub(grpc::CreateChannel(
      served.address(), grpc::InsecureChannelCredentials()));

  // Sends `bytes` as the image of a snapshot at `index`, announcing
  // `announced` as its SHA-256 (its trailer when empty).
  auto send_image =
      [&](LogIndex index, const std::string& bytes, std::string announced = "",
          std::function<void(v1::internal::SnapshotChunk&)> adjust = nullptr) {
        const Message message = SnapshotMessageAt(index);
        v1::internal::SnapshotChunk chunk;
        chunk.set_cluster_id(options.cluster_id);
        chunk.set_from(kSelf.value());
        chunk.set_to(kPeer.value());
        ToWire(message, chunk.mutable_message());
        chunk.set_total_bytes(bytes.size());
        chunk.set_sha256(announced.empty()
                             ? bytes.substr(bytes.size() - SHA256_DIGEST_LENGTH)
                             : announced);
        chunk.set_data(bytes);
        if (adjust) adjust(chunk);
        grpc::ClientContext context;
        context.set_deadline(std::chrono::system_clock::now() +
                             std::chrono::seconds(30));
        v1::internal::SnapshotAck ack;
        auto writer = stub->SendSnapshot(&context, &ack);
        writer->Write(chunk);
        writer->WritesDone();
        return writer->Finish();
      };
  auto send = [&](LogIndex index) { return send_image(index, image); };
  const grpc::Status at_another_index = send(LogIndex(8));
  EXPECT_EQ(at_another_index.error_code(), grpc::StatusCode::DATA_LOSS);
  EXPECT_TRUE(absl::StrContains(at_another_index.error_message(),
                                "snapshot image is at 7/1"))
      << at_another_index.error_message();
  const grpc::Status malformed_record = send(LogIndex(7));
  EXPECT_EQ(malformed_record.error_code(), grpc::StatusCode::DATA_LOSS);
  EXPECT_TRUE(
      absl::StrContains(malformed_record.error_message(), "malformed record"))
      << malformed_record.error_message();
  // Whole and self-consistent, but not what the sender announced.
  const grpc::Status not_announced =
      send_image(LogIndex(7), image, std::string(SHA256_DIGEST_LENGTH, 'x'));
  EXPECT_EQ(not_announced.error_code(), grpc::StatusCode::DATA_LOSS);
  EXPECT_TRUE(absl::StrContains(not_announced.error_message(),
                                "differs from the one its sender announced"))
      << not_announced.error_message();
  // A header length near 2^64 with a checksum to match: its bound check
  // wrapped and the reader threw (std::length_error) on a gRPC thread.
  std::string huge_header(storage::kSnapshotMagic);
  huge_header.append("\xf0\xff\xff\xff\xff\xff\xff\xff\xff\x01", 10);
  huge_header.append("filler");
  unsigned char digest[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const unsigned char*>(huge_header.data()),
         huge_header.size(), digest);
  huge_header.append(reinterpret_cast<const char*>(digest), sizeof(digest));
  const grpc::Status huge = send_image(LogIndex(7), huge_header);
  EXPECT_EQ(huge.error_code(), grpc::StatusCode::DATA_LOSS)
      << huge.error_message();
  // Meant for another node (the leader's stale address for node 9 now
  // reaches this one): refused before a byte is written, as a message
  // batch for another node is. It was received, synced and checked whole,
  // and only then dropped by Raft, its image left on disk.
  const grpc::Status stray =
      send_image(LogIndex(7), image, "", [](v1::internal::SnapshotChunk& c) {
        c.set_to(9);
        c.mutable_message()->set_to(9);
      });
  EXPECT_EQ(stray.error_code(), grpc::StatusCode::FAILED_PRECONDITION)
      << stray.error_message();
  EXPECT_TRUE(absl::StrContains(stray.error_message(),
                                "snapshot for node 9 reached node"))
      << stray.error_message();
  // Its Raft message from another node than the stream's (the checks ran
  // on the stream's sender, Raft acts on the message's).
  const grpc::Status mixed = send_image(
      LogIndex(7), image, "",
      [](v1::internal::SnapshotChunk& c) { c.mutable_message()->set_from(9); });
  EXPECT_EQ(mixed.error_code(), grpc::StatusCode::INVALID_ARGUMENT)
      << mixed.error_message();
  // A disk without room to install it (about three times the image): the
  // stream is refused at its first chunk, before a byte is written. Taken,
  // it failed in the apply stage after installing it had dropped the log.
  // The streams above let their places go once their reactors are done,
  // which may be just after their clients saw the answer; one still held
  // would be counted in the room asked for (bounded wait: 10 s).
  for (int i = 0; i < 1000 && service.snapshots_receiving() > 0; ++i) {
    absl::SleepFor(absl::Milliseconds(10));
  }
  ASSERT_EQ(service.snapshots_receiving(), 0u);
  uint64_t asked = 0;
  parts.room_on_disk = [&asked](uint64_t bytes, absl::string_view what) {
    asked = bytes;
    return absl::ResourceExhaustedError(absl::StrCat("no room for ", what));
  };
  service.Attach(parts);
  const grpc::Status no_room = send(LogIndex(7));
  EXPECT_EQ(no_room.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED)
      << no_room.error_message();
  EXPECT_EQ(asked, kSnapshotInstallSpaceFactor * image.size());
  // An announced size near 2^64: three times it wrapped to a small need,
  // and the disk check passed.
  const grpc::Status wrapped =
      send_image(LogIndex(7), image, "", [](v1::internal::SnapshotChunk& c) {
        c.set_total_bytes(std::numeric_limits<uint64_t>::max() / 2);
      });
  EXPECT_EQ(wrapped.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED)
      << wrapped.error_message();
  EXPECT_EQ(asked, std::numeric_limits<uint64_t>::max());
  // No image was kept.
  EXPECT_TRUE(std::filesystem::is_empty(received.dir()));
  served.server->Shutdown();
}

// Applies nothing: a driver for the service's checks to consult.
class NoopStateMachine final : public replication::StateMachine {
 public:
  absl::StatusOr<std::vector<replication::ApplyResult>> Apply(
      const std::vector<replication::Entry>& entries) override {
    applied_ = entries.back().index;
    return std::vector<replication::ApplyResult>(
        entries.size(), replication::ApplyResult(std::any()));
  }
  void StopRetryingWrites() override {}
  LogIndex applied_index() const override { return applied_; }
  absl::StatusOr<replication::Snapshot> CreateSnapshot() override {
    return absl::UnimplementedError("not needed by this test");
  }
  absl::Status ApplySnapshot(const replication::Snapshot&) override {
    return absl::UnimplementedError("not needed by this test");
  }

 private:
  std::atomic<LogIndex> applied_{LogIndex(0)};
};

// Sends `batch` on one SendMessages stream; the stream's status.
grpc::Status SendOneBatch(RaftPeer::Stub& stub, const MessageBatch& batch) {
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() +
                       std::chrono::seconds(30));
  StreamSummary summary;
  auto writer = stub.SendMessages(&context, &summary);
  writer->Write(batch);
  writer->WritesDone();
  return writer->Finish();
}

// Node 2 is the lone voter of its log; node 5, a leader it does not know,
// sends it traffic. Admitting such a sender acts: it learns the sender's
// address, or, here, takes this node for a wiped member that started a
// cluster of its own and stops it. A batch or snapshot meant for another
// node (a stale address now reaching this one), or whose messages are not
// its sender's, is refused before that: it was admitted first, and a
// misaddressed heartbeat stopped a healthy node.
// The lone voter of its log, `self`, applying nothing; `max_inbox` peer
// messages wait for its driver at most.
struct LoneVoter {
  // `others`: more voters (then it is not alone).
  LoneVoter(NodeId self, size_t max_inbox, std::vector<NodeId> others = {})
      : log(Conf(self, others)) {
    replication::NodeDriverOptions options;
    options.raft.id = self;
    options.tick_interval = std::chrono::milliseconds(10);
    options.seed = 3;
    options.max_inbox_messages = max_inbox;
    absl::StatusOr<std::unique_ptr<replication::NodeDriver>> started =
        replication::NodeDriver::Start(options, &log, &state_machine,
                                       &no_peers);
    EXPECT_TRUE(started.ok()) << started.status();
    if (started.ok()) driver = *std::move(started);
  }
  ~LoneVoter() {
    if (driver) driver->Stop();
  }
  static replication::ConfState Conf(NodeId self,
                                     const std::vector<NodeId>& others) {
    replication::ConfState conf;
    conf.voters.push_back(self);
    conf.voters.insert(conf.voters.end(), others.begin(), others.end());
    std::sort(conf.voters.begin(), conf.voters.end());
    return conf;
  }

  replication::MemoryLogStore log;
  NoopStateMachine state_machine;
  replication::NoPeersTransport no_peers;
  std::unique_ptr<replication::NodeDriver> driver;
};

TEST(PeerServiceTest, TrafficForAnotherNodeIsRefusedBeforeItsSenderIsAdmitted) {
  LoneVoter node(kPeer, 100000);
  ASSERT_NE(node.driver, nullptr);

  PeerTransportOptions options = Options();
  options.self = kPeer;
  PeerTransport transport(options);
  PeerService service(kPeer, [] { return v1::internal::HelloResponse(); });
  std::atomic<int> split{0};
  PeerServiceParts parts;
  parts.cluster_id = options.cluster_id;
  parts.driver = node.driver.get();
  parts.transport = &transport;
  parts.on_split_identity = [&split](NodeId, const std::string&,
                                     const std::string&) { ++split; };
  service.Attach(parts);
  LoopbackServer served = Serve(&service);
  ASSERT_NE(served.server, nullptr);
  std::unique_ptr<RaftPeer::Stub> stub = RaftPeer::NewStub(grpc::CreateChannel(
      served.address(), grpc::InsecureChannelCredentials()));

  const NodeId stranger(5);
  // One heartbeat at term 1000 from node 5 to `to`, its message from
  // `message_from`.
  auto send_batch = [&](NodeId to, NodeId message_from) {
    MessageBatch batch;
    batch.set_cluster_id(options.cluster_id);
    batch.set_from(stranger.value());
    batch.set_to(to.value());
    batch.set_from_address("127.0.0.1:1");
    Message heartbeat;
    heartbeat.type = MessageType::kHeartbeat;
    heartbeat.from = message_from;
    heartbeat.to = to;
    heartbeat.term = Term(1000);
    ToWire(heartbeat, batch.add_messages());
    return SendOneBatch(*stub, batch);
  };
  const grpc::Status for_node_9 = send_batch(NodeId(9), stranger);
  EXPECT_EQ(for_node_9.error_code(), grpc::StatusCode::FAILED_PRECONDITION)
      << for_node_9.error_message();
  EXPECT_TRUE(absl::StrContains(for_node_9.error_message(), "batch for node 9"))
      << for_node_9.error_message();
  const grpc::Status not_its_sender = send_batch(kPeer, NodeId(9));
  EXPECT_EQ(not_its_sender.error_code(), grpc::StatusCode::INVALID_ARGUMENT)
      << not_its_sender.error_message();

  v1::internal::SnapshotChunk chunk;
  chunk.set_cluster_id(options.cluster_id);
  chunk.set_from(stranger.value());
  chunk.set_to(9);
  chunk.set_from_address("127.0.0.1:1");
  Message snapshot;
  snapshot.type = MessageType::kSnapshot;
  snapshot.from = stranger;
  snapshot.to = NodeId(9);
  snapshot.term = Term(1000);
  snapshot.snapshot.emplace();
  snapshot.snapshot->meta.index = LogIndex(7);
  snapshot.snapshot->meta.term = Term(1000);
  ToWire(snapshot, chunk.mutable_message());
  chunk.set_total_bytes(64);
  chunk.set_sha256(std::string(SHA256_DIGEST_LENGTH, 'x'));
  {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() +
                         std::chrono::seconds(30));
    v1::internal::SnapshotAck ack;
    auto writer = stub->SendSnapshot(&context, &ack);
    writer->Write(chunk);
    writer->WritesDone();
    const grpc::Status image_for_node_9 = writer->Finish();
    EXPECT_EQ(image_for_node_9.error_code(),
              grpc::StatusCode::FAILED_PRECONDITION)
        << image_for_node_9.error_message();
  }
  EXPECT_EQ(split.load(), 0) << "misaddressed traffic stopped the node";
  EXPECT_FALSE(transport.Knows(stranger));

  // Addressed to it, the same leader is judged: this node's log makes it
  // the only voter, so it is a split identity.
  const grpc::Status for_this_node = send_batch(kPeer, stranger);
  EXPECT_EQ(for_this_node.error_code(), grpc::StatusCode::FAILED_PRECONDITION)
      << for_this_node.error_message();
  EXPECT_EQ(split.load(), 1);
  served.server->Shutdown();
}

// An unknown leader's traffic is taken (a member added while this node
// was away), and each one taken becomes a peer with its threads and
// connections: a claim to lead was all it took, from any number of ids.
// Only a few are taken now; and a message type past 255 no longer reads
// as an append (MessageType is 8 bits) to count as a leader's.
TEST(PeerServiceTest, OnlyAFewUnknownLeadersAreAdmitted) {
  LoneVoter node(kPeer, 100000, {kSelf});
  ASSERT_NE(node.driver, nullptr);
  PeerTransportOptions options = Options();
  options.self = kPeer;
  PeerTransport transport(options);
  PeerService service(kPeer, [] { return v1::internal::HelloResponse(); });
  PeerServiceParts parts;
  parts.cluster_id = options.cluster_id;
  parts.driver = node.driver.get();
  parts.transport = &transport;
  service.Attach(parts);
  LoopbackServer served = Serve(&service);
  ASSERT_NE(served.server, nullptr);
  std::unique_ptr<RaftPeer::Stub> stub = RaftPeer::NewStub(grpc::CreateChannel(
      served.address(), grpc::InsecureChannelCredentials()));
  // One message of type `type` at term 1000 from `from`, claiming to lead.
  auto claim = [&](uint64_t from, uint32_t type) {
    MessageBatch batch;
    batch.set_cluster_id(options.cluster_id);
    batch.set_from(from);
    batch.set_to(kPeer.value());
    batch.set_from_address("127.0.0.1:1");
    v1::internal::RaftMessage* m = batch.add_messages();
    m->set_type(type);
    m->set_from(from);
    m->set_to(kPeer.value());
    m->set_term(1000);
    return SendOneBatch(*stub, batch);
  };
  const uint32_t heartbeat = static_cast<uint32_t>(MessageType::kHeartbeat);
  const uint32_t wrapped = 256 + static_cast<uint32_t>(MessageType::kAppend);
  const grpc::Status not_a_leader = claim(99, wrapped);
  EXPECT_EQ(not_a_leader.error_code(), grpc::StatusCode::FAILED_PRECONDITION)
      << not_a_leader.error_message();
  EXPECT_FALSE(transport.Knows(NodeId(99)));
  int admitted = 0;
  for (uint64_t id = 100; id < 120; ++id) {
    const grpc::Status s = claim(id, heartbeat);
    if (transport.Knows(NodeId(id))) {
      ++admitted;
    } else {
      EXPECT_EQ(s.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED)
          << s.error_message();
    }
  }
  EXPECT_EQ(admitted, 8);
  // One taken before is still taken.
  claim(100, heartbeat);
  EXPECT_TRUE(transport.Knows(NodeId(100)));
  served.server->Shutdown();
}

// A snapshot stream left open after its first chunk (the test's own).
struct OpenSnapshotStream {
  grpc::ClientContext context;
  v1::internal::SnapshotAck ack;
  std::unique_ptr<grpc::ClientWriter<v1::internal::SnapshotChunk>> writer;

  // Ends the stream: what the receiver answered.
  grpc::Status Finish() {
    writer->WritesDone();
    return writer->Finish();
  }
};

// Opens a stream of an image of `total_bytes` at `index` from kSelf to
// kPeer and sends its first 100 bytes.
std::unique_ptr<OpenSnapshotStream> OpenSnapshot(RaftPeer::Stub& stub,
                                                 uint64_t cluster_id,
                                                 LogIndex index,
                                                 uint64_t total_bytes) {
  auto open = std::make_unique<OpenSnapshotStream>();
  open->context.set_deadline(std::chrono::system_clock::now() +
                             std::chrono::seconds(60));
  const Message message = SnapshotMessageAt(index);
  v1::internal::SnapshotChunk chunk;
  chunk.set_cluster_id(cluster_id);
  chunk.set_from(kSelf.value());
  chunk.set_to(kPeer.value());
  ToWire(message, chunk.mutable_message());
  chunk.set_total_bytes(total_bytes);
  chunk.set_sha256(std::string(storage::kSnapshotDigestBytes, 'a'));
  chunk.set_data(std::string(100, 'x'));
  open->writer = stub.SendSnapshot(&open->context, &open->ack);
  open->writer->Write(chunk);
  return open;
}

// A node (kPeer) that receives snapshots from kSelf: its snapshot folder,
// transport and PeerService, with the parts a test adds to and Attaches.
struct SnapshotReceivingNode {
  SnapshotReceivingNode()
      : received(dir.Child("received")),
        options(WithSelf(Options(), kPeer)),
        transport(options),
        service(kPeer, [] { return v1::internal::HelloResponse(); }) {
    EXPECT_TRUE(received.Init().ok());
    transport.SetAddress(kSelf, "127.0.0.1:1");
    parts.cluster_id = options.cluster_id;
    parts.transport = &transport;
    parts.snapshots = &received;
  }
  static PeerTransportOptions WithSelf(PeerTransportOptions options,
                                       NodeId self) {
    options.self = self;
    return options;
  }

  ScopedTempDir dir;
  storage::SnapshotFiles received;
  PeerTransportOptions options;
  PeerTransport transport;
  PeerService service;
  PeerServiceParts parts;
};

// Snapshots are received two at a time, each checked for room on disk
// together with what the others being received reserved: checked alone,
// each found room for itself that they then shared. A stream that went
// idle gives its place to a new one.
TEST(PeerServiceTest, SnapshotsAreReceivedTwoAtATimeWithTheirRoomReserved) {
  SnapshotReceivingNode node;
  PeerTransportOptions& options = node.options;
  PeerService& service = node.service;
  PeerServiceParts& parts = node.parts;
  absl::Mutex mu;
  std::vector<uint64_t> asked;
  parts.room_on_disk = [&](uint64_t bytes, absl::string_view) {
    absl::MutexLock lock(&mu);
    asked.push_back(bytes);
    return absl::OkStatus();
  };
  parts.snapshot_idle_limit = absl::Hours(1);
  service.Attach(parts);
  LoopbackServer served = Serve(&service);
  ASSERT_NE(served.server, nullptr);
  std::unique_ptr<RaftPeer::Stub> stub = RaftPeer::NewStub(grpc::CreateChannel(
      served.address(), grpc::InsecureChannelCredentials()));
  auto receiving = [&](size_t n) {
    return Eventually([&] { return service.snapshots_receiving() == n; });
  };
  const uint64_t factor = kSnapshotInstallSpaceFactor;

  std::unique_ptr<OpenSnapshotStream> first =
      OpenSnapshot(*stub, options.cluster_id, LogIndex(5), 1000);
  ASSERT_TRUE(receiving(1));
  std::unique_ptr<OpenSnapshotStream> second =
      OpenSnapshot(*stub, options.cluster_id, LogIndex(6), 2000);
  ASSERT_TRUE(receiving(2));
  {
    absl::MutexLock lock(&mu);
    EXPECT_EQ(asked, (std::vector<uint64_t>{factor * 1000,
                                            factor * 1000 + factor * 2000}));
  }
  const grpc::Status third =
      OpenSnapshot(*stub, options.cluster_id, LogIndex(7), 500)->Finish();
  EXPECT_EQ(third.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED)
      << third.error_message();
  EXPECT_EQ(service.snapshots_receiving(), 2u);

  // Idle past the limit: the oldest stream is cancelled for a new one.
  parts.snapshot_idle_limit = absl::ZeroDuration();
  service.Attach(parts);
  std::unique_ptr<OpenSnapshotStream> fourth =
      OpenSnapshot(*stub, options.cluster_id, LogIndex(8), 500);
  ASSERT_TRUE(Eventually([&] {
    absl::MutexLock lock(&mu);
    return asked.size() == 3;
  }));
  EXPECT_EQ(service.snapshots_receiving(), 2u);
  // The idlest of the two went: the one whose chunk was taken first, which
  // under load is not always the one opened first. The new stream's room
  // counted the other's reservation. Ended (cut short: not the whole
  // image), the others give their places back.
  const grpc::Status first_end = first->Finish();
  const grpc::Status second_end = second->Finish();
  const bool first_went = first_end.error_code() == grpc::StatusCode::CANCELLED;
  EXPECT_NE(first_went, second_end.error_code() == grpc::StatusCode::CANCELLED)
      << first_end.error_message() << " / " << second_end.error_message();
  EXPECT_FALSE(first_end.ok());
  EXPECT_FALSE(second_end.ok());
  {
    absl::MutexLock lock(&mu);
    EXPECT_EQ(asked.back(), factor * 500 + factor * (first_went ? 2000 : 1000));
  }
  EXPECT_FALSE(fourth->Finish().ok());
  EXPECT_TRUE(receiving(0));
  served.server->Shutdown();
}

// A stream received whole and being checked is never the one cancelled to
// make room for a new stream: its data is all here, and the leader would
// send the whole image again. The idlest stream still receiving is.
TEST(PeerServiceTest, ASnapshotBeingCheckedKeepsItsPlace) {
  SnapshotReceivingNode node;
  PeerTransportOptions& options = node.options;
  PeerService& service = node.service;
  PeerServiceParts& parts = node.parts;
  parts.snapshot_idle_limit = absl::ZeroDuration();  // any may be the idlest
  std::atomic<int> admitted{0};                      // streams given a place
  parts.room_on_disk = [&](uint64_t, absl::string_view) {
    ++admitted;
    return absl::OkStatus();
  };
  service.Attach(parts);
  LoopbackServer served = Serve(&service);
  ASSERT_NE(served.server, nullptr);
  std::unique_ptr<RaftPeer::Stub> stub = RaftPeer::NewStub(grpc::CreateChannel(
      served.address(), grpc::InsecureChannelCredentials()));

  // The first stream sends its 100 bytes and ends: its check is held until
  // the test lets it go.
  ASSERT_TRUE(ArmFaultPoint("peer.snapshot_check?"));
  absl::Cleanup release = [] { ArmFaultPoint(""); };
  std::unique_ptr<OpenSnapshotStream> checked =
      OpenSnapshot(*stub, options.cluster_id, LogIndex(5), 100);
  ASSERT_TRUE(Eventually([&] { return service.snapshots_receiving() == 1; }));
  checked->writer->WritesDone();
  ASSERT_TRUE(
      Eventually([&] { return service.snapshots_being_checked() == 1; }));
  std::unique_ptr<OpenSnapshotStream> idle =
      OpenSnapshot(*stub, options.cluster_id, LogIndex(6), 1000);
  ASSERT_TRUE(Eventually([&] { return service.snapshots_receiving() == 2; }));
  // A third: the idle one gives its place, not the one being checked.
  std::unique_ptr<OpenSnapshotStream> third =
      OpenSnapshot(*stub, options.cluster_id, LogIndex(7), 1000);
  ASSERT_TRUE(Eventually([&] { return admitted.load() == 3; }));
  const grpc::Status cancelled = idle->Finish();
  EXPECT_EQ(cancelled.error_code(), grpc::StatusCode::CANCELLED)
      << cancelled.error_message();
  std::move(release).Invoke();
  const grpc::Status check = checked->writer->Finish();
  // Its (made-up) image fails its check; it was not cancelled.
  EXPECT_NE(check.error_code(), grpc::StatusCode::CANCELLED)
      << check.error_message();
  EXPECT_NE(check.error_code(), grpc::StatusCode::OK);
  EXPECT_FALSE(third->Finish().ok());
  served.server->Shutdown();
}

// A received snapshot the driver cannot take (its inbox is full) is
// refused, so the leader sends it again, and its image is removed. It was
// answered OK, counted sent by the leader, and the image stayed on disk,
// one more at every resend.
TEST(PeerServiceTest, ASnapshotTheDriverDropsIsRefusedAndItsImageRemoved) {
  LoneVoter node(kPeer, /*max_inbox=*/0);
  ASSERT_NE(node.driver, nullptr);
  ScopedTempDir dir;
  storage::SnapshotFiles made(dir.Child("made"));
  storage::SnapshotFiles received(dir.Child("received"));
  ASSERT_TRUE(made.Init().ok());
  ASSERT_TRUE(received.Init().ok());
  const v1::internal::SnapshotRef ref = MakeImage(made, 3);
  std::ifstream in(made.PathOf(ref.file()), std::ios::binary);
  const std::string image(std::istreambuf_iterator<char>(in), {});

  PeerTransportOptions options = Options();
  options.self = kPeer;
  PeerTransport transport(options);
  transport.SetAddress(kSelf, "127.0.0.1:1");
  PeerService service(kPeer, [] { return v1::internal::HelloResponse(); });
  PeerServiceParts parts;
  parts.cluster_id = options.cluster_id;
  parts.driver = node.driver.get();
  parts.transport = &transport;
  parts.snapshots = &received;
  service.Attach(parts);
  LoopbackServer served = Serve(&service);
  ASSERT_NE(served.server, nullptr);
  std::unique_ptr<RaftPeer::Stub> stub = RaftPeer::NewStub(grpc::CreateChannel(
      served.address(), grpc::InsecureChannelCredentials()));

  v1::internal::SnapshotChunk chunk;
  chunk.set_cluster_id(options.cluster_id);
  chunk.set_from(kSelf.value());
  chunk.set_to(kPeer.value());
  ToWire(SnapshotMessage(ref), chunk.mutable_message());
  chunk.set_total_bytes(ref.size());
  chunk.set_sha256(ref.sha256());
  chunk.set_data(image);
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() +
                       std::chrono::seconds(30));
  v1::internal::SnapshotAck ack;
  auto writer = stub->SendSnapshot(&context, &ack);
  writer->Write(chunk);
  writer->WritesDone();
  const grpc::Status status = writer->Finish();
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAVAILABLE)
      << status.error_message();
  EXPECT_TRUE(std::filesystem::is_empty(received.dir()));
  EXPECT_EQ(node.driver->metrics().messages_dropped, 1u);
  served.server->Shutdown();
}

}  // namespace
}  // namespace sessiond::server
