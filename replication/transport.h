// Copyright sessiond authors. Licensed under the Apache License 2.0.
#ifndef SESSIOND_REPLICATION_TRANSPORT_H_
#define SESSIOND_REPLICATION_TRANSPORT_H_

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "replication/core/types.h"

namespace sessiond::replication {

// Where a transport hands the Raft messages it receives from peers.
// Implemented by NodeDriver, whose Deliver only queues the messages for the
// driver thread, so a transport may call it from any of its threads.
class MessageSink {
 public:
  virtual ~MessageSink() = default;

  // Queues `messages` (addressed to this node) for the Raft core. Never
  // blocks on the core. Returns how many were queued; the rest were
  // dropped (a full inbox, a stopped node). Thread-safe.
  virtual size_t Deliver(std::vector<Message> messages) = 0;
};

// Carries Raft messages to peers. Declared here, implemented in server/
// (gRPC, when clustering lands) and by the simulator. Delivery is best
// effort: Raft tolerates loss, duplication and reordering, so Send never
// reports per-message failure and never blocks on the network.
//
// Inbound messages go to the MessageSink the transport was given by its
// owner (the composition root wires the NodeDriver in after starting it).
//
// Thread-safe: the driver stage calls Send for `send_now` messages, the
// log-writer stage for `send_after_persist` messages once their persist is
// durable; the two may call at the same time.
class Transport {
 public:
  virtual ~Transport() = default;

  virtual void Send(std::vector<Message> messages) = 0;
};

// The transport of a node with no peers (a one-voter group). A one-voter
// core addresses no messages to anyone; any that appear are counted and
// dropped, so a test can assert that none did.
class NoPeersTransport : public Transport {
 public:
  void Send(std::vector<Message> messages) override {
    dropped_.fetch_add(messages.size(), std::memory_order_relaxed);
  }

  uint64_t dropped() const { return dropped_.load(std::memory_order_relaxed); }

 private:
  std::atomic<uint64_t> dropped_{0};
};

}  // namespace sessiond::replication

#endif  // SESSIOND_REPLICATION_TRANSPORT_H_
