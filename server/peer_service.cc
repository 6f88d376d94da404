// Copyright sessiond authors. Licensed under the Apache License 2.0.
#include "server/peer_service.h"

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <limits>
#include <memory>
#include <type_traits>
#include <utility>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/fault_point.h"
#include "common/log.h"
#include "common/status_macros.h"
#include "common/steady_clock.h"
#include "server/grpc_status.h"
#include "server/raft_wire.h"
#include "storage/durable_file.h"
#include "storage/session_state_machine.h"

namespace sessiond::server {

using replication::Message;
using sessiond::v1::internal::HelloRequest;
using sessiond::v1::internal::HelloResponse;
using sessiond::v1::internal::MessageBatch;
using sessiond::v1::internal::NodeStatusRequest;
using sessiond::v1::internal::ProposeRequest;
using sessiond::v1::internal::ProposeResponse;
using sessiond::v1::internal::RaftMessage;
using sessiond::v1::internal::SnapshotAck;
using sessiond::v1::internal::SnapshotChunk;
using sessiond::v1::internal::StreamSummary;

namespace {

// Disk needs in bytes, saturating: an announced size near 2^64 wrapped to a
// small need.
uint64_t SaturatingAdd(uint64_t a, uint64_t b) {
  return a > std::numeric_limits<uint64_t>::max() - b
             ? std::numeric_limits<uint64_t>::max()
             : a + b;
}

absl::Status Starting() {
  return absl::UnavailableError("this node is starting; retry");
}

// The term of `m` when it is a message only a leader sends (appends,
// heartbeats, snapshots); 0 otherwise.
uint64_t LeaderTerm(const RaftMessage& m) {
  // Compared whole: MessageType is 8 bits, and type 260 cast to it reads as
  // an append (a stranger claiming to lead with a message FromWire drops).
  if (m.type() > std::numeric_limits<
                     std::underlying_type_t<replication::MessageType>>::max()) {
    return 0;
  }
  switch (static_cast<replication::MessageType>(m.type())) {
    case replication::MessageType::kAppend:
    case replication::MessageType::kHeartbeat:
    case replication::MessageType::kSnapshot:
      return m.term();
    default:
      return 0;
  }
}

// InvalidArgument for a batch whose messages are not all its sender's to
// this node, or that carries a snapshot: a snapshot comes on SendSnapshot,
// where its image is received and checked first. On this stream it has no
// image, and installing it would drop the log for nothing the state
// machine can load.
absl::Status CheckBatchMessages(const MessageBatch& batch) {
  for (const RaftMessage& m : batch.messages()) {
    if (m.from() != batch.from() || m.to() != batch.to()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "a Raft message from node ", m.from(), " to node ", m.to(),
          " in a batch from node ", batch.from(), " to node ", batch.to()));
    }
    if (m.type() ==
        static_cast<uint32_t>(replication::MessageType::kSnapshot)) {
      return absl::InvalidArgumentError(
          "a snapshot on the message stream: snapshots come on SendSnapshot, "
          "with their image");
    }
  }
  return absl::OkStatus();
}

// The lowest LeaderTerm of `messages`; 0 if any is 0, or there are none.
uint64_t LeaderTerm(
    const google::protobuf::RepeatedPtrField<RaftMessage>& messages) {
  uint64_t lowest = 0;
  for (const RaftMessage& m : messages) {
    const uint64_t term = LeaderTerm(m);
    if (term == 0) return 0;
    lowest = lowest == 0 ? term : std::min(lowest, term);
  }
  return lowest;
}

bool InConf(const replication::ConfState& conf, NodeId id) {
  return std::find(conf.voters.begin(), conf.voters.end(), id) !=
             conf.voters.end() ||
         std::find(conf.learners.begin(), conf.learners.end(), id) !=
             conf.learners.end();
}

}  // namespace

// One inbound message stream from a peer.
class PeerService::MessageStream
    : public grpc::ServerReadReactor<MessageBatch> {
 public:
  MessageStream(PeerService* service, grpc::CallbackServerContext* context,
                StreamSummary* summary)
      : service_(service), context_(context), summary_(summary) {
    StartRead(&batch_);
  }

  void OnReadDone(bool ok) override {
    if (!ok) {
      Finish(grpc::Status::OK);
      return;
    }
    absl::StatusOr<PeerServiceParts> parts = service_->Parts();
    if (!parts.ok()) {
      Finish(ToGrpcStatus(parts.status()));
      return;
    }
    absl::Status check =
        JudgeAgain(*parts, *context_, "SendMessages", &judged_);
    if (check.ok()) {
      check = JudgeSender(*parts, *context_, batch_.from(), &sender_);
    }
    // The batch's own shape first: admitting a sender may act (learn its
    // address, stop this node as a split identity), and a batch for
    // another node, or whose messages are not its sender's, must not.
    if (check.ok() && batch_.to() != service_->self_.value()) {
      check = absl::FailedPreconditionError(
          absl::StrCat("batch for node ", batch_.to(), " reached node ",
                       service_->self_.value()));
    }
    if (check.ok()) check = CheckBatchMessages(batch_);
    if (check.ok()) {
      check = service_->AdmitSender(
          *parts, {batch_.cluster_id(), batch_.from(), batch_.from_address(),
                   LeaderTerm(batch_.messages()), batch_.cluster_epoch()});
    }
    if (!check.ok()) {
      service_->LogRefusal(check);
      Finish(ToGrpcStatus(check));
      return;
    }
    summary_->set_batches(summary_->batches() + 1);
    if (parts->wall_clocks != nullptr) {
      parts->wall_clocks->Heard(NodeId(batch_.from()), batch_.sender_wall_ms());
      if (batch_.has_receiver_off_median_ms()) {
        parts->wall_clocks->Told(batch_.receiver_off_median_ms());
      }
    }
    if (batch_.messages_size() > 0 && batch_.from() != heard_from_) {
      if (absl::Status recorded = service_->RecordHeardFrom(batch_.from());
          !recorded.ok()) {
        Finish(ToGrpcStatus(recorded));
        return;
      }
      heard_from_ = batch_.from();  // once per stream, not per batch
    }
    if (!parts->transport->Dropped(NodeId(batch_.from()))) {
      std::vector<Message> messages;
      messages.reserve(batch_.messages_size());
      for (auto& wire : *batch_.mutable_messages()) {
        absl::StatusOr<Message> m = FromWire(std::move(wire));
        if (m.ok()) messages.push_back(*std::move(m));
      }
      parts->driver->Deliver(std::move(messages));
    }
    batch_.Clear();
    StartRead(&batch_);
  }

  void OnDone() override { delete this; }

 private:
  PeerService* const service_;
  grpc::CallbackServerContext* const context_;
  StreamSummary* const summary_;
  MessageBatch batch_;
  uint64_t heard_from_ = 0;         // the sender already recorded (HeardFrom)
  std::optional<uint64_t> judged_;  // the role policy judged by (JudgeAgain)
  std::optional<JudgedSender> sender_;  // JudgeSender's last finding
};

// One inbound snapshot: chunks into a file, then the message to the driver.
class PeerService::SnapshotStream
    : public grpc::ServerReadReactor<SnapshotChunk> {
 public:
  SnapshotStream(PeerService* service, grpc::CallbackServerContext* context,
                 SnapshotAck* ack)
      : service_(service), context_(context), ack_(ack) {
    StartRead(&chunk_);
  }

  void OnReadDone(bool ok) override {
    if (!ok) {
      Complete();
      return;
    }
    absl::Status status = absl::OkStatus();
    if (first_) {
      absl::StatusOr<PeerServiceParts> parts = service_->Parts();
      if (parts.ok()) {
        parts_ = *std::move(parts);
      } else {
        status = parts.status();
      }
    }
    // Judged before anything of the chunk is acted on, as a message
    // stream's batch is: the first chunk's checks may learn an address or
    // stop this node (AdmitSender), and a reload may have come between the
    // stream's opening and its first chunk.
    if (status.ok()) {
      status = JudgeAgain(parts_, *context_, "SendSnapshot", &judged_);
      if (status.ok() && first_) {
        status = JudgeSender(parts_, *context_, chunk_.from(), &sender_);
      }
      if (!status.ok()) service_->LogRefusal(status);
    }
    if (status.ok() && first_) status = Begin();
    first_ = false;
    if (status.ok()) status = receiver_->Append(chunk_.data());
    if (status.ok()) service_->ChunkReceived(this);
    if (!status.ok()) {
      Finish(ToGrpcStatus(status));
      return;
    }
    chunk_.Clear();
    StartRead(&chunk_);
  }

  void OnDone() override {
    service_->EndReceiving(this);
    delete this;
  }

 private:
  // The first chunk, once parts_ is set and the caller judged.
  absl::Status Begin() {
    // Addressed as the message streams are: an image meant for another
    // node (a stale address now reached this one) is refused before a
    // byte of it is written, and before its sender is admitted (which may
    // learn its address or stop this node), as a batch's shape is.
    if (chunk_.to() != service_->self_.value()) {
      absl::Status stray = absl::FailedPreconditionError(
          absl::StrCat("snapshot for node ", chunk_.to(), " reached node ",
                       service_->self_.value()));
      service_->LogRefusal(stray);
      return stray;
    }
    if (chunk_.message().from() != chunk_.from() ||
        chunk_.message().to() != chunk_.to()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "a snapshot message from node ", chunk_.message().from(), " to node ",
          chunk_.message().to(), " in a stream from node ", chunk_.from(),
          " to node ", chunk_.to()));
    }
    absl::Status check = service_->AdmitSender(
        parts_, {chunk_.cluster_id(), chunk_.from(), chunk_.from_address(),
                 LeaderTerm(chunk_.message()), chunk_.cluster_epoch()});
    if (!check.ok()) {
      service_->LogRefusal(check);
      return check;
    }
    if (parts_.transport->Dropped(NodeId(chunk_.from()))) {
      return absl::UnavailableError("fault switch");
    }
    absl::StatusOr<Message> message =
        FromWire(std::move(*chunk_.mutable_message()));
    if (!message.ok()) return message.status();
    if (message->type != replication::MessageType::kSnapshot ||
        !message->snapshot) {
      return absl::InvalidArgumentError(
          "a snapshot stream must start with a snapshot message");
    }
    if (chunk_.sha256().size() != storage::kSnapshotDigestBytes) {
      return absl::InvalidArgumentError(
          "a snapshot stream must announce its image's SHA-256");
    }
    // Refused before a byte is written, while the log is still whole: a
    // snapshot the disk cannot hold once applied failed in the apply stage
    // (out of space) after installing it had dropped the log, and at every
    // restart again. Refused, the leader sends it again later.
    // Saturating, as SaturatingAdd.
    const uint64_t need =
        chunk_.total_bytes() > std::numeric_limits<uint64_t>::max() /
                                   kSnapshotInstallSpaceFactor
            ? std::numeric_limits<uint64_t>::max()
            : kSnapshotInstallSpaceFactor * chunk_.total_bytes();
    uint64_t reserved_by_others = 0;
    SESSIOND_RETURN_IF_ERROR(service_->BeginReceiving(
        this, context_, need, parts_.snapshot_idle_limit, &reserved_by_others));
    if (parts_.room_on_disk) {
      if (absl::Status room = parts_.room_on_disk(
              SaturatingAdd(need, reserved_by_others),
              absl::StrCat("installing a snapshot of ", chunk_.total_bytes(),
                           " bytes (about ", kSnapshotInstallSpaceFactor,
                           " times that)",
                           reserved_by_others > 0
                               ? absl::StrCat(" besides ", reserved_by_others,
                                              " bytes kept for another "
                                              "snapshot being received")
                               : ""));
          !room.ok()) {
        logging::Warn("peer.snapshot_refused",
                      logging::Fields()
                          .Add("from", chunk_.from())
                          .Add("index", message->snapshot->meta.index.value())
                          .Error(room));
        return room;
      }
    }
    announced_sha256_ = chunk_.sha256();
    message_ = *std::move(message);
    absl::StatusOr<std::unique_ptr<storage::DurableFileWriter>> file =
        parts_.snapshots->NewFile(message_.snapshot->meta.index,
                                  message_.snapshot->meta.term,
                                  absl::StrCat("from-", chunk_.from()));
    if (!file.ok()) return file.status();
    receiver_ = std::make_unique<storage::SnapshotReceiver>(
        *std::move(file), chunk_.total_bytes());
    return absl::OkStatus();
  }

  void Complete() {
    service_->Finishing(this);
    // Tests: a check that takes a while (a big image).
    SESSIOND_FAULT_POINT("peer.snapshot_check");
    if (receiver_ == nullptr) {
      Finish(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                          "empty snapshot stream"));
      return;
    }
    absl::StatusOr<sessiond::v1::internal::SnapshotRef> ref =
        receiver_->Finish();
    if (!ref.ok()) {
      Finish(ToGrpcStatus(ref.status()));
      return;
    }
    // A received image that does not reach Raft is removed: each resend
    // would otherwise leave one more on disk.
    auto refuse = [&](const absl::Status& why) {
      std::remove(parts_.snapshots->PathOf(ref->file()).c_str());
      Finish(ToGrpcStatus(why));
    };
    if (ref->sha256() != announced_sha256_) {
      // Whole and self-consistent, but not the image the leader made.
      return refuse(absl::DataLossError(
          "the snapshot image's SHA-256 differs from the one its sender "
          "announced"));
    }
    absl::Status judged =
        JudgeAgain(parts_, *context_, "SendSnapshot", &judged_);
    if (judged.ok()) {
      judged = JudgeSender(parts_, *context_, message_.from.value(), &sender_);
    }
    if (!judged.ok()) {
      service_->LogRefusal(judged);
      return refuse(judged);
    }
    ack_->set_received_bytes(ref->size());
    message_.snapshot->data = storage::EncodeSnapshotRef(*ref);
    // Checked whole here, before Raft sees it: installing it drops the log.
    if (absl::Status check = storage::SessionStateMachine::VerifySnapshotImage(
            *parts_.snapshots, *message_.snapshot);
        !check.ok()) {
      logging::Warn("peer.snapshot_refused",
                    logging::Fields()
                        .Add("from", message_.from.value())
                        .Add("index", message_.snapshot->meta.index.value())
                        .Error(check));
      return refuse(check);
    }
    const uint64_t index = message_.snapshot->meta.index.value();
    std::vector<Message> messages;
    messages.push_back(std::move(message_));
    if (parts_.driver->Deliver(std::move(messages)) == 0) {
      // Dropped by a full inbox: it was answered OK, counted sent by the
      // leader, and never installed.
      return refuse(absl::UnavailableError(
          absl::StrCat("node ", service_->self_.value(),
                       " is too busy to take the snapshot at ", index,
                       " (its Raft inbox is full); retry")));
    }
    Finish(grpc::Status::OK);
  }

  PeerService* const service_;
  grpc::CallbackServerContext* const context_;
  SnapshotAck* const ack_;
  SnapshotChunk chunk_;
  bool first_ = true;
  std::optional<uint64_t> judged_;  // the role policy judged by (JudgeAgain)
  std::optional<JudgedSender> sender_;  // JudgeSender's last finding
  PeerServiceParts parts_;
  Message message_;
  std::string announced_sha256_;  // the first chunk's
  std::unique_ptr<storage::SnapshotReceiver> receiver_;
};

PeerService::PeerService(NodeId self, std::function<HelloResponse()> hello,
                         std::string heard_from_file)
    : self_(self),
      hello_(std::move(hello)),
      heard_from_file_(std::move(heard_from_file)) {
  if (heard_from_file_.empty()) return;
  std::ifstream in(heard_from_file_);
  std::string line;
  absl::MutexLock write(&heard_write_mu_);
  absl::MutexLock lock(&heard_mu_);
  while (std::getline(in, line)) {
    // The line ended at the end of the file, not at a newline: a crash
    // mid-append tore it (its fsync never returned, so that peer's
    // messages never reached Raft). It is skipped ("5" may be the start of
    // "53"), and the next append first ends it with a mark that keeps it
    // unreadable: extended, it read back as another id ("5" then "3\n" as
    // 53, forgetting 3); ended with a bare newline, as a peer never heard.
    heard_from_torn_tail_ = in.eof();
    uint64_t node = 0;
    if (!heard_from_torn_tail_ && absl::SimpleAtoi(line, &node) && node != 0) {
      heard_from_.insert(node);
    }
  }
}

void PeerService::Attach(PeerServiceParts parts) {
  absl::MutexLock lock(&mu_);
  parts_ = std::move(parts);
  attached_ = true;
}

void PeerService::Detach() {
  absl::MutexLock lock(&mu_);
  attached_ = false;
}

absl::StatusOr<PeerServiceParts> PeerService::Parts() const {
  absl::MutexLock lock(&mu_);
  if (!attached_) return Starting();
  return parts_;
}

absl::Status PeerService::AdmitSender(const PeerServiceParts& parts,
                                      const Sender& sender) {
  if (sender.cluster_id != parts.cluster_id) {
    return absl::FailedPreconditionError(absl::StrCat(
        "peer traffic from cluster ", "0x", absl::Hex(sender.cluster_id),
        " (node ", sender.id, ") refused: this node belongs to cluster ", "0x",
        absl::Hex(parts.cluster_id)));
  }
  if (sender.cluster_epoch != parts.cluster_epoch) {
    // One side was forced into a cluster of its own (--force_new_cluster,
    // a restore from a backup) after the other last ran with it: their
    // logs may hold other writes at the same indexes and terms, which
    // Raft, comparing terms, would take as matching. Refused both ways,
    // before anything else (the unknown-leader path below included).
    return absl::FailedPreconditionError(absl::StrCat(
        "peer traffic from node ", sender.id,
        " refused: its data dir is of "
        "another life of cluster 0x",
        absl::Hex(parts.cluster_id), " (cluster epoch 0x",
        absl::Hex(sender.cluster_epoch), ", this node's 0x",
        absl::Hex(parts.cluster_epoch),
        "): one of the two was rebuilt with --force_new_cluster since the "
        "other last ran with it, and their logs must not meet. Stop the "
        "member that is not in the rebuilt cluster, wipe its data dir and "
        "rejoin it (AddMember, then --initial_cluster_state=existing)"));
  }
  const NodeId id(sender.id);
  if (id == NodeId(0) || id == self_) {
    return absl::FailedPreconditionError(
        absl::StrCat("peer traffic from node ", sender.id, " refused"));
  }
  if (parts.transport->Removed(id)) {
    // Said in words the removed node acts on (IsRemovedRefusal): one that
    // missed its own removal learns it here.
    return absl::FailedPreconditionError(absl::StrCat(
        kRemovedRefusalPrefix, sender.id, " refused: it was removed from ",
        "cluster 0x", absl::Hex(parts.cluster_id), "; ", kRemovedMemberAdvice));
  }
  if (parts.transport->Knows(id)) return absl::OkStatus();
  const replication::NodeStatus status = parts.driver->status();
  if (InConf(status.conf_state, id)) return absl::OkStatus();
  // A leader of this cluster this node has not heard of: a member added
  // while this node was down or behind. It learns of the member by applying
  // the log that leader sends, so the leader's traffic must come in, and
  // the answers must reach it. A stale term would be ignored by Raft anyway;
  // refusing it keeps strangers out.
  if (sender.leader_term != 0 && sender.leader_term >= status.term.value() &&
      !sender.address.empty()) {
    if (status.conf_state.learners.empty() &&
        status.conf_state.voters == std::vector<NodeId>{self_}) {
      // A member added while this node was away is never the lone voter's
      // news: the lone voter added it. This node started a cluster of its
      // own under this cluster's id.
      const std::string why = absl::StrCat(
          "node ", sender.id, " (", sender.address,
          ") leads this node's cluster 0x", absl::Hex(parts.cluster_id),
          " at term ", sender.leader_term,
          ", but this node's log makes it the cluster's only voter: its data "
          "dir was started afresh as a new one-node cluster (wiped, or "
          "restarted with the flags it had before the cluster grew) while "
          "the cluster still counts it as a member");
      if (parts.on_split_identity) {
        parts.on_split_identity(id, sender.address, why);
      }
      return absl::FailedPreconditionError(absl::StrCat(
          "peer traffic from node ", sender.id, " refused: ", why));
    }
    {
      absl::MutexLock lock(&strangers_mu_);
      if (admitted_strangers_.size() >= kMaxAdmittedStrangers &&
          !admitted_strangers_.contains(id.value())) {
        return absl::ResourceExhaustedError(absl::StrCat(
            "peer traffic from unknown node ", sender.id,
            " refused: ", kMaxAdmittedStrangers,
            " unknown leaders were admitted already (a member added while "
            "this node was away is one; so many are not): restart this node "
            "once its cluster's membership lists its leader"));
      }
      admitted_strangers_.insert(id.value());
    }
    parts.transport->SetAddress(id, sender.address);
    logging::Info("peer.unknown_leader_admitted",
                  logging::Fields()
                      .Add("node_id", sender.id)
                      .Add("peer_address", sender.address)
                      .Add("term", sender.leader_term)
                      .Add("msg",
                           "a leader this node does not know yet (added while "
                           "it was away): taking its traffic"));
    return absl::OkStatus();
  }
  return absl::FailedPreconditionError(
      absl::StrCat("peer traffic from unknown node ", sender.id,
                   " refused: it is not a member of this cluster"));
}

void PeerService::LogRefusal(const absl::Status& why) {
  refused_.fetch_add(1, std::memory_order_relaxed);
  // At most one line per second: a misconfigured peer retries constantly.
  const int64_t now = absl::GetCurrentTimeNanos();
  int64_t last = last_refusal_log_ns_.load(std::memory_order_relaxed);
  if (now - last < 1000000000 ||
      !last_refusal_log_ns_.compare_exchange_strong(last, now)) {
    return;
  }
  logging::Warn("peer.refused", logging::Fields().Error(why));
}

absl::Status PeerService::BeginReceiving(const void* stream,
                                         grpc::CallbackServerContext* context,
                                         uint64_t bytes,
                                         absl::Duration idle_limit,
                                         uint64_t* reserved_by_others) {
  const int64_t now = SteadyNowNs();
  absl::MutexLock lock(&receiving_mu_);
  if (receiving_.size() >= kMaxSnapshotsReceiving) {
    // The idlest of those still receiving (one being checked is not idle).
    auto idlest = receiving_.end();
    for (auto it = receiving_.begin(); it != receiving_.end(); ++it) {
      if (!it->second.finishing &&
          (idlest == receiving_.end() ||
           it->second.last_chunk_ns < idlest->second.last_chunk_ns)) {
        idlest = it;
      }
    }
    const absl::Duration idle =
        idlest == receiving_.end()
            ? absl::ZeroDuration()
            : absl::Nanoseconds(now - idlest->second.last_chunk_ns);
    if (idlest == receiving_.end() || idle < idle_limit) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "node ", self_.value(), " is already receiving ", receiving_.size(),
          " snapshots; the leader sends this one again once one is done"));
    }
    logging::Warn(
        "peer.snapshot_stream_idle",
        logging::Fields().Add("idle_ms", absl::ToInt64Milliseconds(idle)));
    idlest->second.context->TryCancel();
    receiving_.erase(idlest);
  }
  uint64_t others = 0;
  for (const auto& [unused, receiving] : receiving_) {
    others = SaturatingAdd(others, receiving.reserved_bytes);
  }
  *reserved_by_others = others;
  receiving_[stream] = Receiving{context, now, bytes};
  return absl::OkStatus();
}

void PeerService::ChunkReceived(const void* stream) {
  const int64_t now = SteadyNowNs();
  absl::MutexLock lock(&receiving_mu_);
  auto it = receiving_.find(stream);
  if (it != receiving_.end()) it->second.last_chunk_ns = now;
}

void PeerService::Finishing(const void* stream) {
  absl::MutexLock lock(&receiving_mu_);
  auto it = receiving_.find(stream);
  if (it != receiving_.end()) it->second.finishing = true;
}

void PeerService::EndReceiving(const void* stream) {
  absl::MutexLock lock(&receiving_mu_);
  receiving_.erase(stream);
}

size_t PeerService::snapshots_being_checked() const {
  absl::MutexLock lock(&receiving_mu_);
  size_t checked = 0;
  for (const auto& [unused, receiving] : receiving_) {
    if (receiving.finishing) ++checked;
  }
  return checked;
}

size_t PeerService::snapshots_receiving() const {
  absl::MutexLock lock(&receiving_mu_);
  return receiving_.size();
}

grpc::ServerReadReactor<MessageBatch>* PeerService::SendMessages(
    grpc::CallbackServerContext* context, StreamSummary* summary) {
  return new MessageStream(this, context, summary);
}

grpc::ServerReadReactor<SnapshotChunk>* PeerService::SendSnapshot(
    grpc::CallbackServerContext* context, SnapshotAck* ack) {
  return new SnapshotStream(this, context, ack);
}

absl::Status PeerService::JudgeAgain(const PeerServiceParts& parts,
                                     const grpc::ServerContextBase& context,
                                     absl::string_view method,
                                     std::optional<uint64_t>* judged) {
  if (parts.auth == nullptr) return absl::OkStatus();
  return parts.auth->ReauthorizeIfReloaded(
      context,
      absl::StrCat("/", sessiond::v1::internal::RaftPeer::service_full_name(),
                   "/", method),
      judged);
}

absl::Status PeerService::JudgeSender(const PeerServiceParts& parts,
                                      const grpc::ServerContextBase& context,
                                      uint64_t from,
                                      std::optional<JudgedSender>* judged) {
  if (parts.auth == nullptr) return absl::OkStatus();
  const uint64_t generation = parts.auth->generation();
  if (judged->has_value() && (*judged)->generation == generation &&
      (*judged)->from == from) {
    return absl::OkStatus();
  }
  SESSIOND_RETURN_IF_ERROR(parts.auth->AuthorizeNode(context, from));
  *judged = JudgedSender{generation, from};
  return absl::OkStatus();
}

absl::Status PeerService::RecordHeardFrom(uint64_t node) {
  auto heard = [&] {
    absl::MutexLock lock(&heard_mu_);
    return heard_from_.contains(node);
  };
  if (heard()) return absl::OkStatus();  // the common case: no write lock
  absl::MutexLock write(&heard_write_mu_);
  if (heard()) return absl::OkStatus();
  // Once per peer per data dir, and durable before the caller hands the
  // peer's messages to Raft: a power cut must not forget a peer whose
  // acknowledgements may already count. Not written, not recorded: the
  // next batch from that peer tries again.
  if (!heard_from_file_.empty()) {
    const absl::Status written = storage::AppendDurably(
        heard_from_file_,
        absl::StrCat(heard_from_torn_tail_ ? "!\n" : "", node, "\n"));
    if (!written.ok()) {
      logging::Warn("peer.heard_from_not_written",
                    logging::Fields()
                        .Error(written)
                        .Add("path", heard_from_file_)
                        .Add("node_id", node)
                        .Add("msg",
                             "cannot record that this node heard from a "
                             "peer: its messages are refused until it can"));
      return absl::UnavailableError(absl::StrCat(
          "node ", self_.value(), " cannot record that it heard from node ",
          node, " (", written.message(), "); retry"));
    }
    heard_from_torn_tail_ = false;
  }
  absl::MutexLock lock(&heard_mu_);
  heard_from_.insert(node);
  return absl::OkStatus();
}

grpc::ServerUnaryReactor* PeerService::Hello(
    grpc::CallbackServerContext* context, const HelloRequest* request,
    HelloResponse* response) {
  *response = hello_();
  {
    absl::MutexLock lock(&heard_mu_);
    response->set_heard_from_caller(heard_from_.contains(request->from()));
  }
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

grpc::ServerUnaryReactor* PeerService::Propose(
    grpc::CallbackServerContext* context, const ProposeRequest* request,
    ProposeResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  absl::StatusOr<PeerServiceParts> parts = Parts();
  if (!parts.ok()) {
    reactor->Finish(ToGrpcStatus(parts.status()));
    return reactor;
  }
  std::optional<JudgedSender> sender;
  absl::Status check = JudgeSender(*parts, *context, request->from(), &sender);
  if (check.ok()) {
    check = AdmitSender(*parts, {request->cluster_id(), request->from(), "", 0,
                                 request->cluster_epoch()});
  }
  if (!check.ok()) {
    LogRefusal(check);
    reactor->Finish(ToGrpcStatus(check));
    return reactor;
  }
  parts->write_path->HandleForwarded(
      *request, [reactor, response](ProposeResponse answer) {
        *response = std::move(answer);
        reactor->Finish(grpc::Status::OK);
      });
  return reactor;
}

grpc::ServerUnaryReactor* PeerService::NodeStatus(
    grpc::CallbackServerContext* context, const NodeStatusRequest* request,
    sessiond::v1::MemberStatus* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  absl::StatusOr<PeerServiceParts> parts = Parts();
  if (!parts.ok()) {
    reactor->Finish(ToGrpcStatus(parts.status()));
    return reactor;
  }
  if (request->cluster_id() != parts->cluster_id) {
    reactor->Finish(ToGrpcStatus(absl::FailedPreconditionError(absl::StrCat(
        "this node belongs to cluster ", "0x", absl::Hex(parts->cluster_id)))));
    return reactor;
  }
  if (request->cluster_epoch() != parts->cluster_epoch) {
    reactor->Finish(ToGrpcStatus(absl::FailedPreconditionError(absl::StrCat(
        "this node's data dir is of another life of cluster 0x",
        absl::Hex(parts->cluster_id), " (cluster epoch 0x",
        absl::Hex(parts->cluster_epoch), ", the caller's 0x",
        absl::Hex(request->cluster_epoch()),
        "): one of the two was rebuilt with --force_new_cluster since the "
        "other last ran with it"))));
    return reactor;
  }
  *response = parts->status(request->with_digest());
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

}  // namespace sessiond::server
