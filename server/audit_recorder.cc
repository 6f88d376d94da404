// Copyright sessiond authors. Licensed under the Apache License 2.0.
#include "server/audit_recorder.h"

#include <google/protobuf/descriptor.h>
#include <google/protobuf/reflection.h>
#include <google/protobuf/util/json_util.h>

#include <algorithm>
#include <atomic>
#include <memory>
#include <optional>
#include <utility>
#include <vector>

#include "absl/random/random.h"
#include "absl/strings/cord.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "common/check.h"
#include "common/fault_point.h"
#include "common/log.h"
#include "server/grpc_status.h"
#include "server/unary_call.h"
#include "storage/audit_log.h"

namespace sessiond::server {

namespace {

using google::protobuf::FieldDescriptor;
using google::protobuf::Message;
using google::protobuf::Reflection;

bool IsSecretField(absl::string_view name) {
  for (absl::string_view secret : kAuditSecretFields) {
    if (name == secret) return true;
  }
  return false;
}

// Redacts the secret fields of `message` and of every message inside it.
void Redact(Message* message) {
  const Reflection* reflection = message->GetReflection();
  std::vector<const FieldDescriptor*> fields;
  reflection->ListFields(*message, &fields);  // the set ones only
  for (const FieldDescriptor* field : fields) {
    const bool text = field->cpp_type() == FieldDescriptor::CPPTYPE_STRING;
    if (IsSecretField(field->name())) {
      if (!text) {
        reflection->ClearField(message, field);
      } else if (field->is_repeated()) {
        for (int i = 0; i < reflection->FieldSize(*message, field); ++i) {
          reflection->SetRepeatedString(message, field, i, kRedacted);
        }
      } else {
        reflection->SetString(message, field, kRedacted);
      }
      continue;
    }
    if (field->cpp_type() != FieldDescriptor::CPPTYPE_MESSAGE) continue;
    if (field->is_repeated()) {  // maps too: their entries are messages
      for (int i = 0; i < reflection->FieldSize(*message, field); ++i) {
        Redact(reflection->MutableRepeatedMessage(message, field, i));
      }
    } else {
      Redact(reflection->MutableMessage(message, field));
    }
  }
}

std::string ToJson(const Message& message) {
  google::protobuf::util::JsonPrintOptions options;
  options.preserve_proto_field_names = true;
  std::string json;
  if (!google::protobuf::util::MessageToJsonString(message, &json, options)
           .ok()) {
    return "{}";
  }
  return json;
}

const char* AuthMethodName(AuthMethod method) {
  switch (method) {
    case AuthMethod::kCertificate:
      return "certificate";
    case AuthMethod::kBearerToken:
      return "bearer_token";
  }
  return "";
}

}  // namespace

std::string RedactedRequestJson(const Message& request) {
  std::unique_ptr<Message> copy(request.New());
  copy->CopyFrom(request);
  Redact(copy.get());
  return ToJson(*copy);
}

std::string AuditEntryJson(const sessiond::v1::AuditEntry& entry) {
  return ToJson(entry);
}

// The reactor gRPC gets for an audited call. Its requested entry goes
// first (Start); once it applied, the body runs and its own reactor
// (`inner_`) is bound to `relay_`, so the body's Finish arrives in Answered;
// the real call is finished once the answered entry is committed (or could
// not be). Owned by gRPC: deleted in OnDone, after the real call ended,
// which is after the body's Finish (it caused it), so the inner reactor is
// done too; its own OnDone runs from here.
class AuditRecorder::AuditedCall final : public grpc::ServerUnaryReactor {
 public:
  AuditedCall(AuditRecorder* recorder, grpc::CallbackServerContext* context,
              sessiond::v1::AuditEntry entry, absl::Time started,
              std::function<grpc::ServerUnaryReactor*()> body, BodyThread where)
      : recorder_(recorder),
        context_(context),
        entry_(std::move(entry)),
        started_(started),
        body_(std::move(body)),
        where_(where),
        relay_(this) {}

  // Proposes the requested entry; the body runs once it applied.
  void Start() {
    sessiond::v1::AuditEntry requested = entry_;
    requested.set_phase(sessiond::v1::AuditEntry::PHASE_REQUESTED);
    // Refused at the client's deadline, the call did nothing; its
    // requested entry may still commit (its write lasts commit_timeout).
    // Then the refusal is put on record after it, or the log would show a
    // call that was asked for and never answered.
    auto on_record_late = [recorder = recorder_, entry = entry_,
                           started = started_](absl::Status refusal) mutable {
      const absl::Status refused = RefusalOf(refusal);
      entry.set_phase(sessiond::v1::AuditEntry::PHASE_ANSWERED);
      entry.set_code(static_cast<int32_t>(refused.code()));
      entry.set_message(std::string(refused.message()));
      entry.set_duration_ms(absl::ToInt64Milliseconds(absl::Now() - started));
      recorder->Commit(std::move(entry),
                       absl::Now() + recorder->options_.commit_timeout,
                       [](absl::Status) {});
    };
    recorder_->Commit(
        std::move(requested),
        CallDeadline(context_, recorder_->options_.commit_timeout),
        [this](absl::Status written) { Requested(std::move(written)); },
        std::move(on_record_late));
  }

  void OnDone() override {
    grpc::ServerUnaryReactor* inner = inner_.load(std::memory_order_acquire);
    if (inner != nullptr) inner->OnDone();
    delete this;
  }
  void OnCancel() override {
    grpc::ServerUnaryReactor* inner = inner_.load(std::memory_order_acquire);
    if (inner != nullptr) inner->OnCancel();
  }

 private:
  // A grpc::ServerCallbackUnary that is not a call: the body's reactor
  // talks to it as to one (gRPC provides the interface for this use, and
  // its own ServerContext test peer does the same).
  class Relay final : public grpc::ServerCallbackUnary {
   public:
    explicit Relay(AuditedCall* owner) : owner_(owner) {}
    // A Finish the body made before (gRPC replays it from inside
    // BindReactor, under the body reactor's lock) is answered only once
    // BindReactor returned: answering may end the whole call at once (its
    // answered entry refused on the spot), and OnDone then frees the body's
    // reactor, which BindReactor still writes to.
    void Bind(grpc::ServerUnaryReactor* reactor) {
      {
        absl::MutexLock lock(&mu_);
        binding_ = true;
      }
      reactor_ = reactor;
      BindReactor(reactor);
      std::optional<grpc::Status> held;
      {
        absl::MutexLock lock(&mu_);
        binding_ = false;
        held.swap(held_);
      }
      if (held) owner_->Answered(*std::move(held));
    }
    void Finish(grpc::Status s) override {
      {
        absl::MutexLock lock(&mu_);
        if (binding_) {
          held_ = std::move(s);
          return;
        }
      }
      owner_->Answered(std::move(s));
    }
    void SendInitialMetadata() override { owner_->StartSendInitialMetadata(); }

   private:
    // Never called: nothing here counts the relay's references down.
    void CallOnDone() override {}
    grpc::internal::ServerReactor* reactor() override { return reactor_; }

    AuditedCall* const owner_;
    grpc::ServerUnaryReactor* reactor_ = nullptr;
    absl::Mutex mu_;
    bool binding_ ABSL_GUARDED_BY(mu_) = false;
    std::optional<grpc::Status> held_ ABSL_GUARDED_BY(mu_);
  };

  // The refusal of a call whose requested entry could not be written.
  static absl::Status RefusalOf(const absl::Status& written) {
    absl::Status refused(
        written.code(),
        absl::StrCat("this call's audit entry could not be written, so it "
                     "did nothing (retry it): ",
                     written.message()));
    written.ForEachPayload(
        [&](absl::string_view type_url, const absl::Cord& payload) {
          refused.SetPayload(type_url, payload);
        });
    return refused;
  }

  // The requested entry applied (`written` OK), or did not in time.
  void Requested(absl::Status written) {
    if (!written.ok()) {
      // Nothing ran, and nothing will: the call is refused whole, marked
      // as never proposed (a retry is safe), with the write's own details.
      absl::Status refused = RefusalOf(written);
      refused.SetPayload(kNotProposedPayload, absl::Cord("1"));
      AddStatusHints(context_, refused, recorder_->writes_->leader_hint());
      AddRetryPushback(context_, refused);
      Finish(ToGrpcStatus(refused));
      return;
    }
    if (where_ == BodyThread::kInline) return RunBody();
    recorder_->bodies_->Submit([this] {
      RunBody();
      return true;
    });
  }

  void RunBody() {
    if (context_->IsCancelled()) {
      Answered(grpc::Status(grpc::StatusCode::CANCELLED,
                            "cancelled before it ran: nothing was done"));
      return;
    }
    grpc::ServerUnaryReactor* inner = body_();
    body_ = nullptr;  // what it captured goes now
    inner_.store(inner, std::memory_order_release);
    // The body may have finished already: binding replays that Finish into
    // Answered.
    relay_.Bind(inner);
  }

  // The body answered `status` (once).
  void Answered(grpc::Status status) {
    SESSIOND_FAULT_POINT("audit.before_answered_entry");
    sessiond::v1::AuditEntry answered = std::move(entry_);
    answered.set_phase(sessiond::v1::AuditEntry::PHASE_ANSWERED);
    answered.set_code(static_cast<int32_t>(status.error_code()));
    answered.set_message(status.error_message());
    answered.set_duration_ms(absl::ToInt64Milliseconds(absl::Now() - started_));
    recorder_->Commit(
        std::move(answered),
        CallDeadline(context_, recorder_->options_.commit_timeout),
        [this, status = std::move(status)](absl::Status) { Finish(status); });
  }

  AuditRecorder* const recorder_;               // outlives this
  grpc::CallbackServerContext* const context_;  // gRPC's, until OnDone
  sessiond::v1::AuditEntry entry_;
  const absl::Time started_;
  std::function<grpc::ServerUnaryReactor*()> body_;
  const BodyThread where_;
  Relay relay_;
  // Set once, by RunBody (on sd-audit, or where the commit was learned); read
  // by gRPC's OnCancel and OnDone.
  std::atomic<grpc::ServerUnaryReactor*> inner_{nullptr};
};

namespace {

// What the timer answers when an entry's write outlasts the call's time.
absl::Status NotCommittedInTime() {
  return absl::DeadlineExceededError(
      "the audit entry was not committed in time (by the client's "
      "deadline, or within the recorder's commit timeout)");
}

}  // namespace

AuditRecorder::AuditRecorder(AuditRecorderOptions options, WritePath* writes)
    : options_(std::move(options)),
      writes_(writes),
      bodies_(options_.enabled ? std::make_unique<RoundRobinWorker>("sd-audit")
                               : nullptr) {
  SESSIOND_CHECK_MSG(options_.timers != nullptr,
                     "AuditRecorderOptions::timers is required");
}

sessiond::v1::AuditEntry AuditRecorder::Begin(
    grpc::CallbackServerContext* context, absl::string_view method,
    const Message& request) const {
  sessiond::v1::AuditEntry entry;
  if (options_.auth != nullptr) {
    // The processor let the call through, so this succeeds but when a
    // SIGHUP removed the identity meanwhile; then the entry has none.
    absl::StatusOr<Caller> caller = options_.auth->CallerOf(*context);
    if (caller.ok()) {
      entry.set_identity(caller->identity);
      entry.set_auth_method(AuthMethodName(caller->method));
    }
  }
  entry.set_call_id(
      absl::StrFormat("%016x", absl::Uniform<uint64_t>(absl::BitGen())));
  entry.set_peer(context->peer());
  entry.set_node_id(options_.self.value());
  entry.set_method(std::string(method));
  entry.set_request_json(RedactedRequestJson(request));
  if (options_.now_ms) entry.set_received_ms(options_.now_ms());
  return entry;
}

grpc::ServerUnaryReactor* AuditRecorder::Record(
    grpc::CallbackServerContext* context, absl::string_view method,
    const Message& request, std::function<grpc::ServerUnaryReactor*()> body,
    BodyThread where) {
  if (!options_.enabled) return body();
  auto* call = new AuditedCall(this, context, Begin(context, method, request),
                               absl::Now(), std::move(body), where);
  call->Start();
  return call;
}

void AuditRecorder::Commit(
    sessiond::v1::AuditEntry entry, absl::Time answer_by,
    std::function<void(absl::Status)> then,
    std::function<void(absl::Status)> applied_after_answer) {
  // `then` goes on with the call: run once, by the write or by the timer.
  struct Once {
    std::atomic<bool> ran{false};
    std::function<void(absl::Status)> fn;
    bool Run(absl::Status status) {
      if (ran.exchange(true)) return false;
      fn(std::move(status));
      return true;
    }
  };
  auto once = std::make_shared<Once>();
  once->fn = std::move(then);
  const absl::Time write_deadline =
      std::max(answer_by, absl::Now() + options_.commit_timeout);
  if (write_deadline > answer_by) {
    options_.timers->At(answer_by, [once] { once->Run(NotCommittedInTime()); });
  }
  // Cut here as application would (kMaxAuditEntryBytes), so an oversized
  // request does not make an oversized log entry.
  storage::TruncateAuditEntry(&entry);
  sessiond::v1::internal::Command command;
  auto* audit = command.mutable_audit();
  *audit->mutable_entry() = entry;
  audit->set_retention_ms(options_.retention_ms);
  audit->set_max_entries(options_.max_entries);
  recorded_.fetch_add(1, std::memory_order_relaxed);
  writes_->Submit(
      std::move(command), write_deadline,
      [this, entry = std::move(entry), once,
       applied_after_answer =
           std::move(applied_after_answer)](replication::ApplyResult result) {
        if (!result.ok()) {
          write_failures_.fetch_add(1, std::memory_order_relaxed);
          // The whole entry (secrets already redacted), so the
          // record is not lost with the write. The outcome is
          // unknown: it may still commit.
          logging::Error("audit.write_failed",
                         logging::Fields()
                             .Add("entry", AuditEntryJson(entry))
                             .Error(result.status()));
        }
        if (!once->Run(result.ok() ? absl::OkStatus() : result.status()) &&
            result.ok() && applied_after_answer) {
          applied_after_answer(NotCommittedInTime());
        }
      });
}

}  // namespace sessiond::server
