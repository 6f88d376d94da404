// Copyright sessiond authors. Licensed under the Apache License 2.0.
#include "tests/integration/cluster_workload.h"

#include <grpcpp/client_context.h>

#include <memory>
#include <random>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"

namespace sessiond::testing {
namespace {

// The server gave no definite answer: the write may or may not have applied.
bool OutcomeUnknown(const grpc::Status& s) {
  switch (s.error_code()) {
    case grpc::StatusCode::UNAVAILABLE:
    case grpc::StatusCode::DEADLINE_EXCEEDED:
    case grpc::StatusCode::CANCELLED:
    case grpc::StatusCode::UNKNOWN:
    case grpc::StatusCode::INTERNAL:
      return true;
    default:
      return false;
  }
}

}  // namespace

ClusterWorkload::ClusterWorkload(ClusterHarness* cluster, Options options)
    : cluster_(cluster), options_(options) {}

ClusterWorkload::~ClusterWorkload() { Stop(); }

void ClusterWorkload::Start() {
  stop_.store(false);
  for (int t = 0; t < options_.threads; ++t) {
    threads_.emplace_back([this, t] { Run(t); });
  }
}

void ClusterWorkload::Stop() {
  stop_.store(true);
  for (std::thread& t : threads_) t.join();
  threads_.clear();
}

uint64_t ClusterWorkload::acked_creates() const {
  absl::MutexLock lock(&mu_);
  return ledger_.size();
}

void ClusterWorkload::Run(int thread) {
  // Stubs made here: the harness is driven by the test thread only.
  std::vector<std::unique_ptr<sessiond::v1::SessionService::Stub>> stubs;
  for (int id : cluster_->ids()) stubs.push_back(cluster_->Stub(id));
  std::mt19937_64 rng(1000 + thread);
  std::vector<std::string> mine;
  for (int op = 0; op < options_.max_ops_per_thread && !stop_.load(); ++op) {
    auto* stub = stubs[rng() % stubs.size()].get();
    grpc::ClientContext context;
    context.set_deadline(
        absl::ToChronoTime(absl::Now() + options_.call_timeout));
    const int kind = static_cast<int>(rng() % 10);
    if (kind < 5 || mine.empty()) {
      sessiond::v1::CreateSessionRequest request;
      request.set_user_id(absl::StrCat("w", thread, "-", op % 50));
      request.set_ttl_ms(3600 * 1000);
      (*request.mutable_attributes())["born"] = absl::StrCat(op);
      sessiond::v1::CreateSessionResponse response;
      const grpc::Status s = stub->CreateSession(&context, request, &response);
      if (s.ok()) {
        absl::MutexLock lock(&mu_);
        Entry& e = ledger_[response.token()];
        e.session_id = response.session().session_id();
        e.user_id = request.user_id();
        mine.push_back(response.token());
        acked_.fetch_add(1);
      } else {
        failed_.fetch_add(1);
      }
    } else if (kind < 8) {
      const std::string& token = mine[rng() % mine.size()];
      sessiond::v1::UpdateSessionRequest request;
      request.set_token(token);
      (*request.mutable_set_attributes())["n"] = absl::StrCat(op);
      sessiond::v1::UpdateSessionResponse response;
      const grpc::Status s = stub->UpdateSession(&context, request, &response);
      absl::MutexLock lock(&mu_);
      if (s.ok()) {
        ++ledger_[token].updates_acked;
        acked_.fetch_add(1);
      } else {
        if (OutcomeUnknown(s)) ++ledger_[token].updates_unknown;
        failed_.fetch_add(1);
      }
    } else {
      const std::string& token = mine[rng() % mine.size()];
      sessiond::v1::RevokeSessionRequest request;
      request.set_token(token);
      request.set_reason("workload");
      sessiond::v1::RevokeSessionResponse response;
      const grpc::Status s = stub->RevokeSession(&context, request, &response);
      absl::MutexLock lock(&mu_);
      if (s.ok()) {
        ledger_[token].revoked = true;
        acked_.fetch_add(1);
      } else {
        if (OutcomeUnknown(s)) ledger_[token].revoke_unknown = true;
        failed_.fetch_add(1);
      }
    }
    absl::SleepFor(options_.pause);
  }
}

std::vector<std::string> ClusterWorkload::Verify(int via) const {
  std::vector<std::string> broken;
  auto stub = cluster_->Stub(via);
  std::map<std::string, Entry> ledger;
  {
    absl::MutexLock lock(&mu_);
    ledger = ledger_;
  }
  for (const auto& [token, e] : ledger) {
    grpc::ClientContext context;
    context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(10)));
    sessiond::v1::ValidateSessionRequest request;
    request.set_token(token);
    request.set_consistency(sessiond::v1::LOCAL);
    sessiond::v1::ValidateSessionResponse response;
    const grpc::Status s = stub->ValidateSession(&context, request, &response);
    if (!s.ok()) {
      broken.push_back(absl::StrCat("validate of ", e.session_id,
                                    " failed: ", s.error_message()));
      continue;
    }
    using Outcome = sessiond::v1::ValidateSessionResponse;
    if (e.revoked) {
      if (response.outcome() != Outcome::REVOKED) {
        broken.push_back(
            absl::StrCat(e.session_id,
                         ": revoke acknowledged, "
                         "outcome ",
                         Outcome::Outcome_Name(response.outcome())));
      }
      continue;
    }
    if (response.outcome() == Outcome::REVOKED && e.revoke_unknown) continue;
    if (response.outcome() != Outcome::VALID) {
      broken.push_back(absl::StrCat(e.session_id,
                                    ": create acknowledged, outcome ",
                                    Outcome::Outcome_Name(response.outcome())));
      continue;
    }
    const uint64_t version = response.session().version();
    const uint64_t low = 1 + e.updates_acked;
    const uint64_t high = low + e.updates_unknown;
    if (version < low || version > high) {
      broken.push_back(absl::StrCat(e.session_id, ": version ", version,
                                    ", expected within [", low, ", ", high,
                                    "] (", e.updates_acked, " acknowledged, ",
                                    e.updates_unknown, " unknown updates)"));
    }
  }
  return broken;
}

}  // namespace sessiond::testing
