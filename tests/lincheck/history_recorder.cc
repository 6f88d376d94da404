// Copyright sessiond authors. Licensed under the Apache License 2.0.
#include "tests/lincheck/history_recorder.h"

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <utility>

namespace sessiond::lincheck {

int64_t HistoryRecorder::NowNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

HistoryRecorder::Handle HistoryRecorder::Invoke(int client, OpKind kind,
                                                std::string key) {
  Record record;
  record.op.client = client;
  record.op.kind = kind;
  record.op.key = std::move(key);
  absl::MutexLock lock(&mu_);
  // Stamped under the lock so that call order in records_ is time order.
  record.op.call_ns = NowNs();
  records_.push_back(std::move(record));
  return Handle(records_.size() - 1);
}

void HistoryRecorder::Return(Handle handle, Output output) {
  const int64_t now = NowNs();
  absl::MutexLock lock(&mu_);
  Record& record = Completing(handle);
  if (output == Output::kUnknownOutcome) return;
  record.op.output = output;
  record.op.return_ns = now;
}

void HistoryRecorder::ReturnCreated(Handle handle, std::string key) {
  const int64_t now = NowNs();
  absl::MutexLock lock(&mu_);
  Record& record = Completing(handle);
  record.op.key = std::move(key);
  record.op.output = Output::kOk;
  record.op.return_ns = now;
}

void HistoryRecorder::ReturnUnknown(Handle handle) {
  absl::MutexLock lock(&mu_);
  Completing(handle);
}

std::vector<Operation> HistoryRecorder::Take() {
  std::vector<Record> records;
  {
    absl::MutexLock lock(&mu_);
    records.swap(records_);
  }
  std::vector<Operation> history;
  history.reserve(records.size());
  for (Record& record : records) {
    if (record.op.key.empty()) continue;
    history.push_back(std::move(record.op));
  }
  return history;
}

HistoryRecorder::Record& HistoryRecorder::Completing(Handle handle) {
  if (handle.index_ >= records_.size() || records_[handle.index_].completed) {
    std::fprintf(stderr,
                 "HistoryRecorder: operation %zu completed twice or after "
                 "Take()\n",
                 handle.index_);
    std::abort();
  }
  Record& record = records_[handle.index_];
  record.completed = true;
  return record;
}

}  // namespace sessiond::lincheck
