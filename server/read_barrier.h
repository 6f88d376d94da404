// Copyright sessiond authors. Licensed under the Apache License 2.0.
//
// ReadBarrier: what a validation waits for before it reads this node's
// table, by consistency level (sessiond.v1.Consistency; the trade-off is in
// docs/API.md):
//
//   LINEARIZABLE  a ReadIndex through the leader (or its lease): the table
//                 then reflects every write acknowledged before the call.
//                 The leader within its lease answers from its own table
//                 once it has applied its commit index, with no round
//                 (NodeDriver::LocalReadIndex).
//                 While no leader is known (an election), a round fails,
//                 or this node's apply stage stays behind past the
//                 driver's read timeout, it asks again every 20 ms, as a
//                 write does; UNAVAILABLE
//                 when no leader confirmed it by the deadline, never a
//                 local guess.
//   LOCAL         nothing: the table as it is, with how far behind it may
//                 be (time since a leader was last heard from).
//   DEFAULT       LINEARIZABLE, but after linearizable_timeout (or at once
//                 when no leader is known) the local answer, marked stale:
//                 an election or a lost quorum never turns into a logout.
//                 A failed attempt is tried again within that time while a
//                 leader is known (this node's apply lagged past the
//                 driver's read timeout; leadership moved).
//
// A node that has never applied anything (a new member still receiving
// its first snapshot) refuses local answers: an empty table would call
// every session UNKNOWN.
//
// Thread-safe; callbacks run on the driver's completion stage, the
// DelayQueue thread or the calling thread, and must not block.
#ifndef SESSIOND_SERVER_READ_BARRIER_H_
#define SESSIOND_SERVER_READ_BARRIER_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "replication/node_driver.h"
#include "server/delay_queue.h"
#include "sessiond/v1/session.pb.h"

namespace sessiond::server {

struct ReadBarrierOptions {
  absl::Duration linearizable_timeout = absl::Milliseconds(300);
  // A follower that heard from its leader within this long and has applied
  // what the leader last said was committed is not "stale".
  absl::Duration fresh_contact = absl::Seconds(1);
};

// How a read was served.
struct ReadAnswer {
  absl::Status status;  // not OK: answer the call with it
  sessiond::v1::Consistency consistency = sessiond::v1::LINEARIZABLE;
  bool stale = false;
  int64_t staleness_ms = 0;
  // A DEFAULT read no leader confirmed, answered from this node's table:
  // what the table holds is true, but what it lacks may have been created
  // while this node was behind. Such a read never says "absent"
  // (UnconfirmedAbsence instead): that answer would log a user out.
  bool fell_back = false;
};

// The UNAVAILABLE of a fallen-back read that did not find something:
// `lacks` is "know this token", "hold this session_id". Ask another node.
absl::Status UnconfirmedAbsence(absl::string_view lacks);

class ReadBarrier {
 public:
  // `driver` and `timers` must outlive the barrier.
  ReadBarrier(const ReadBarrierOptions& options,
              replication::NodeDriver* driver, DelayQueue* timers);

  // Calls `done` once this node may answer a read of level `level`
  // (deadline: the server's deadline for the call).
  void Wait(sessiond::v1::Consistency level, absl::Time deadline,
            std::function<void(ReadAnswer)> done);

  // The local answer's terms right now.
  ReadAnswer Local() const;

  // For Shutdown, past its grace: answers every read still waiting for a
  // leader at once (UNAVAILABLE "shutting down", or the local answer for a
  // DEFAULT read, as at its deadline), and every later one that would wait.
  // Otherwise gRPC's shutdown cancelled a LINEARIZABLE read (no reason, no
  // retry hint) while the barrier still held its callback.
  void AbandonWaiting() ABSL_LOCKS_EXCLUDED(waiting_mu_);

  // Whether this node holds, near enough, what the cluster committed: it
  // leads and a quorum heard from it within fresh_contact, or it heard from
  // its leader within fresh_contact and has applied
  // to within kCurrentLagEntries of the leader's commit index. False for a
  // node cut off, one that has not heard from a leader since it started,
  // and one catching up (JwksDocumentNow).
  bool Current() const;
  static constexpr uint64_t kCurrentLagEntries = 1000;

 private:
  // One read waiting for its barrier: answered once, by a ReadIndex answer
  // or by its deadline's timer, whichever comes first.
  struct Pending {
    bool fallback = false;  // DEFAULT: answer locally instead of failing
    absl::Time give_up;
    absl::Mutex mu;
    std::function<void(ReadAnswer)> done ABSL_GUARDED_BY(mu);
    std::optional<DelayQueue::Handle> timer ABSL_GUARDED_BY(mu);
  };
  void Attempt(const std::shared_ptr<Pending>& pending);
  // After a round or an apply wait that did not confirm the read: another
  // round in kNoLeaderRetry when the read may wait, else Fail.
  void RetryOrFail(const std::shared_ptr<Pending>& pending, absl::Status why);
  void Finish(const std::shared_ptr<Pending>& pending, ReadAnswer answer);
  void Fail(const std::shared_ptr<Pending>& pending, absl::Status why);

  const ReadBarrierOptions options_;
  replication::NodeDriver* const driver_;  // outlives this
  DelayQueue* const timers_;               // outlives this
  // The reads waiting (Wait to Finish), for AbandonWaiting; after it, none
  // waits.
  absl::Mutex waiting_mu_;
  absl::flat_hash_map<Pending*, std::weak_ptr<Pending>> waiting_
      ABSL_GUARDED_BY(waiting_mu_);
  bool abandoned_ ABSL_GUARDED_BY(waiting_mu_) = false;
};

}  // namespace sessiond::server

#endif  // SESSIOND_SERVER_READ_BARRIER_H_
