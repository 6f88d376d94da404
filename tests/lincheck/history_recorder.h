// Copyright sessiond authors. Licensed under the Apache License 2.0.
#ifndef SESSIOND_TESTS_LINCHECK_HISTORY_RECORDER_H_
#define SESSIOND_TESTS_LINCHECK_HISTORY_RECORDER_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "tests/lincheck/operation.h"

namespace sessiond::lincheck {

// Records the operations of concurrent clients, stamped with the monotonic
// clock (std::chrono::steady_clock), as a history for CheckSessions.
//
// The stamps must bracket the moment the server acts: call Invoke just
// before sending a request and Return right after its answer arrives, never
// the other way round, or the checker may see an order that did not happen.
//
// Thread-safe: any number of client threads may record at once.
class HistoryRecorder {
 public:
  // Names an operation between Invoke and its return.
  class Handle {
   private:
    friend class HistoryRecorder;
    explicit Handle(size_t index) : index_(index) {}
    size_t index_;
  };

  HistoryRecorder() = default;
  HistoryRecorder(const HistoryRecorder&) = delete;
  HistoryRecorder& operator=(const HistoryRecorder&) = delete;

  // Stamps the call time. `key` is the session token; for a create it is
  // empty until ReturnCreated names the new token.
  Handle Invoke(int client, OpKind kind, std::string key);

  // Each operation is completed at most once, by one of the three below.
  // REQUIRES: `handle` came from Invoke since the last Take().
  //
  // The client got `output` (kUnknownOutcome is ReturnUnknown).
  void Return(Handle handle, Output output);
  // A create succeeded and its answer carried the new token.
  void ReturnCreated(Handle handle, std::string key);
  // The client got no answer (timeout, lost connection): the operation may
  // take effect at any time after its call, or never.
  void ReturnUnknown(Handle handle);

  // Hands over everything recorded so far, in call order, and starts an
  // empty history. Operations never completed count as unknown outcomes.
  // Operations with no key are dropped: a create whose answer was lost names
  // no token that any later operation could use.
  std::vector<Operation> Take();

 private:
  struct Record {
    Operation op;
    bool completed = false;
  };

  static int64_t NowNs();
  // Aborts on a second completion or a handle it never gave out: either
  // would silently corrupt the history under test.
  Record& Completing(Handle handle) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  absl::Mutex mu_;
  std::vector<Record> records_ ABSL_GUARDED_BY(mu_);
};

}  // namespace sessiond::lincheck

#endif  // SESSIOND_TESTS_LINCHECK_HISTORY_RECORDER_H_
