// Copyright sessiond authors. Licensed under the Apache License 2.0.
#include "server/apply_metrics.h"

#include <google/protobuf/io/coded_stream.h>
#include <google/protobuf/wire_format_lite.h>

#include <any>
#include <utility>

#include "sessiond/v1/admin.pb.h"
#include "sessiond/v1/command.pb.h"
#include "sessiond/v1/session.pb.h"

namespace sessiond::server {
namespace {

using google::protobuf::internal::WireFormatLite;
using sessiond::v1::internal::Command;

// The command's op (its oneof field number, Command::OpCase), read from the
// top-level tags without parsing the body; OP_NOT_SET when there is none or
// the bytes do not parse that far. The state machine parses the whole
// command anyway; this costs a few bytes' reading per entry.
Command::OpCase OpOf(const std::string& data) {
  google::protobuf::io::CodedInputStream in(
      reinterpret_cast<const uint8_t*>(data.data()),
      static_cast<int>(data.size()));
  for (;;) {
    const uint32_t tag = in.ReadTag();
    if (tag == 0) return Command::OP_NOT_SET;
    const int field = WireFormatLite::GetTagFieldNumber(tag);
    if (field != Command::kTimestampMsFieldNumber &&
        WireFormatLite::GetTagWireType(tag) ==
            WireFormatLite::WIRETYPE_LENGTH_DELIMITED) {
      return static_cast<Command::OpCase>(field);
    }
    if (!WireFormatLite::SkipField(&in, tag)) return Command::OP_NOT_SET;
  }
}

template <typename T>
const T* As(const replication::ApplyResult& result) {
  if (!result.ok()) return nullptr;
  return std::any_cast<T>(&*result);
}

}  // namespace

void ApplyMetrics::Count(const replication::Entry& entry,
                         const replication::ApplyResult& result) {
  // An entry already applied (a replay) or rejected yields no value.
  if (entry.type != replication::EntryType::kNormal || entry.data.empty() ||
      !result.ok() || !result->has_value()) {
    return;
  }
  auto revoked = [this](RevokeKind kind, uint64_t n) {
    if (n > 0) revoked_[static_cast<int>(kind)].Increment(n);
  };
  switch (OpOf(entry.data)) {
    case Command::kCreate:
      created_.Increment();
      break;
    case Command::kCreateBatch:
      if (const auto* created = As<std::vector<v1::Session>>(result)) {
        created_.Increment(created->size());
      }
      break;
    case Command::kTouch:
      touch_batches_.Increment();
      if (const auto* n = As<uint64_t>(result)) {
        touched_.Increment(*n);
      } else if (As<v1::Session>(result) != nullptr) {
        touched_.Increment();
      }
      break;
    case Command::kRevoke:
      // Revoking a revoked session is OK too: counted again.
      revoked(RevokeKind::kSession, 1);
      break;
    case Command::kRevokeUser:
      if (const auto* n = As<uint64_t>(result)) {
        revoked(RevokeKind::kUser, *n);
      } else if (const auto* r = As<v1::Revocation>(result)) {
        revoked(RevokeKind::kUser, r->sessions());
      }
      break;
    case Command::kBulkRevoke:
      // A confirmation answers its record; a preparation, the pending one.
      if (const auto* r = As<v1::Revocation>(result)) {
        revoked(r->selector().has_all()    ? RevokeKind::kFlush
                : r->selector().has_user() ? RevokeKind::kUser
                                           : RevokeKind::kBulk,
                r->sessions());
      }
      break;
    case Command::kRestoreRevocation:
      if (const auto* r = As<v1::Revocation>(result)) {
        restored_.Increment(r->restored());
      }
      break;
    case Command::kExpire:
      if (const auto* n = As<uint64_t>(result)) expired_.Increment(*n);
      break;
    case Command::kPurgeRevocations:
      if (const auto* n = As<uint64_t>(result)) purged_.Increment(*n);
      break;
    default:
      break;
  }
}

void ApplyMetrics::Collect(metrics::ExpositionWriter* w) const {
  using metrics::MetricType;
  w->Counter("sessiond_sessions_created_total",
             "Sessions created (applied on this node)", created());
  w->Counter("sessiond_sessions_expired_total",
             "Sessions removed by the expiry sweeper (applied on this node)",
             expired());
  if (w->BeginFamily("sessiond_sessions_revoked_total", MetricType::kCounter,
                     "Sessions revoked (applied on this node), by how: one "
                     "by one (session), a user's (user), a bulk revocation "
                     "(bulk), a flush (flush)")) {
    static constexpr const char* kKinds[kRevokeKinds] = {"session", "user",
                                                         "bulk", "flush"};
    for (int i = 0; i < kRevokeKinds; ++i) {
      w->SampleCount({{"kind", kKinds[i]}}, revoked_[i].value());
    }
  }
  w->Counter("sessiond_sessions_restored_total",
             "Sessions made valid again by RestoreFlush (applied on this node)",
             restored());
  w->Counter("sessiond_sessions_purged_total",
             "Sessions removed with revocations past their retention "
             "(applied on this node)",
             purged());
  w->Counter("sessiond_touch_batches_total",
             "Touch batches applied on this node", touch_batches());
  w->Counter("sessiond_sessions_touched_total",
             "Session touches applied on this node (validate-with-touch "
             "activity, once per session per batch)",
             touched());
}

absl::StatusOr<std::vector<replication::ApplyResult>>
CountingStateMachine::Apply(const std::vector<replication::Entry>& entries) {
  absl::StatusOr<std::vector<replication::ApplyResult>> results =
      inner_->Apply(entries);
  if (results.ok() && results->size() == entries.size()) {
    for (size_t i = 0; i < entries.size(); ++i) {
      metrics_->Count(entries[i], (*results)[i]);
    }
  }
  return results;
}

}  // namespace sessiond::server
