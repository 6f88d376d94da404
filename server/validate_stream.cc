// Copyright sessiond authors. Licensed under the Apache License 2.0.
#include "server/validate_stream.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "common/signing.h"
#include "server/grpc_status.h"
#include "server/session_service.h"
#include "server/unary_call.h"

namespace sessiond::server {

ValidateStream::ValidateStream(SessionServiceImpl* service,
                               grpc::CallbackServerContext* context)
    : service_(service), context_(context) {
  timer_.Start(service_->TimedMethod("StreamValidateSessions"));
  if (absl::Status s = service_->RegisterStream(this); !s.ok()) {
    {
      absl::MutexLock lock(&mu_);
      finished_ = true;
    }
    const grpc::Status refusal = ToGrpcStatus(s);
    timer_.Finish(refusal.error_code());
    Finish(refusal);
    return;
  }
  // A Drain that arrives from here on sees reading_ and finishes only once
  // this read is outstanding (gRPC allows Finish with a read outstanding:
  // the read then completes with ok=false).
  {
    absl::MutexLock lock(&mu_);
    reading_ = true;
  }
  StartRead(&incoming_);
}

void ValidateStream::Drain() {
  Actions actions;
  {
    absl::MutexLock lock(&mu_);
    draining_ = true;
    actions = NextActionsLocked();
  }
  Run(actions);
}

absl::Status ValidateStream::CheckRequestSize(size_t bytes) {
  if (bytes <= kMaxRequestBytes) return absl::OkStatus();
  return absl::InvalidArgumentError(
      absl::StrCat("request: ", bytes, " bytes, limit is ", kMaxRequestBytes,
                   " for a StreamValidateSessions message (a token is at most ",
                   signing::kMaxJwtBytes, " bytes)"));
}

void ValidateStream::OnReadDone(bool ok) {
  Slot* slot = nullptr;
  Actions actions;
  {
    absl::MutexLock lock(&mu_);
    reading_ = false;
    if (!ok || broken_ || finished_) {
      reads_done_ = true;
    } else {
      ++messages_read_;
      timer_.CountReceived();
      service_->stream_activity()->NoteRead(&activity_epoch_);
      queue_.emplace_back();
      slot = &queue_.back();
      absl::Status s = CheckRequestSize(incoming_.Length());
      if (s.ok()) s = ParseRequest(incoming_, &slot->request);
      incoming_.Clear();
      if (s.ok()) {
        s = service_->AuthorizeStreamRequest(*context_, slot->request,
                                             &authorization_);
      }
      if (!s.ok()) {
        // Answered in order: the requests before it first, then the end.
        slot->status =
            absl::Status(s.code(), absl::StrCat("message ", messages_read_,
                                                " of the stream: ", s.message(),
                                                "; the stream ends here"));
        slot->ready = true;
        slot = nullptr;
        reads_done_ = true;
      } else {
        ++barriers_pending_;
        if (draining_) {
          // The last request read: answered, then the stream ends.
        } else if (queue_.size() < kMaxOutstanding) {
          actions.read = true;
          reading_ = true;
        } else {
          read_paused_ = true;
        }
      }
    }
    Actions more = NextActionsLocked();
    actions.write = more.write;
    actions.finish = more.finish;
  }
  if (slot != nullptr) {
    service_->Validate(
        slot->request, service_->DeadlineOf(context_), &slot->response,
        [this, slot](absl::Status status) {
          Actions a;
          {
            absl::MutexLock lock(&mu_);
            if (status.ok()) {
              status = SerializeResponse(slot->response, &slot->wire);
            }
            // From here only the bytes are written: the messages go now,
            // not once a client that may never read takes the answer.
            sessiond::v1::ValidateSessionRequest().Swap(&slot->request);
            sessiond::v1::ValidateSessionResponse().Swap(&slot->response);
            slot->status = std::move(status);
            slot->ready = true;
            --barriers_pending_;
            a = NextActionsLocked();
          }
          Run(a);
        },
        &slot->touches);
  }
  Run(actions);
}

void ValidateStream::OnWriteDone(bool ok) {
  Actions actions;
  std::vector<PendingTouch> touches;
  {
    absl::MutexLock lock(&mu_);
    // Its answer reached the client: its touch counts now.
    if (ok) touches = std::move(queue_.front().touches);
    queue_.pop_front();
    writing_ = false;
    if (!ok) {
      status_ = absl::CancelledError("the client went away mid-write");
      broken_ = true;
    } else {
      timer_.CountSent();
    }
    if (!broken_ && !draining_ && read_paused_ &&
        queue_.size() < kMaxOutstanding) {
      read_paused_ = false;
      actions.read = true;
      reading_ = true;
    }
    Actions more = NextActionsLocked();
    actions.write = more.write;
    actions.finish = more.finish;
  }
  if (!touches.empty()) service_->RecordTouches(touches);
  Run(actions);
}

void ValidateStream::OnDone() {
  service_->UnregisterStream(this);
  delete this;
}

ValidateStream::Actions ValidateStream::NextActionsLocked() {
  Actions a;
  if (finished_) return a;
  if (!broken_ && !writing_ && !queue_.empty() && queue_.front().ready) {
    if (queue_.front().status.ok()) {
      writing_ = true;
      a.write = &queue_.front().wire;
      return a;
    }
    // This request could not be answered: end the stream with why.
    status_ = queue_.front().status;
    broken_ = true;
  }
  const bool answered_all = queue_.empty() && barriers_pending_ == 0;
  bool done = false;
  if (broken_) {
    // A read still outstanding is abandoned (it completes with ok=false).
    done = !writing_ && barriers_pending_ == 0;
  } else if (reads_done_) {
    done = answered_all && !writing_;
  } else if (draining_) {
    done = answered_all && !writing_;
    if (done) status_ = ShuttingDown();
  }
  if (done) {
    finished_ = true;
    a.finish = true;
  }
  return a;
}

void ValidateStream::Run(const Actions& actions) {
  if (actions.finish) {
    absl::Status status;
    {
      absl::MutexLock lock(&mu_);
      status = status_;
    }
    if (absl::IsUnavailable(status)) {
      AddLeaderHint(context_, service_->leader_hint());
    }
    const grpc::Status end = ToGrpcStatus(status);
    timer_.Finish(end.error_code());
    Finish(end);
    return;
  }
  if (actions.write != nullptr) StartWrite(actions.write);
  if (actions.read) StartRead(&incoming_);
}

}  // namespace sessiond::server
