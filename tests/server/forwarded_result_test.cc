// Copyright sessiond authors. Licensed under the Apache License 2.0.
//
// A forwarded write's answer crosses the peer channel as a ProposeResponse
// (server/write_path.h, ResultToResponse and ResultFromResponse). The
// follower answers its caller from it, so an error must arrive with what the
// caller and the follower act on: its code, its message, and its payloads.
#include <gtest/gtest.h>

#include "absl/status/status.h"
#include "absl/strings/cord.h"
#include "server/grpc_status.h"
#include "server/write_path.h"

namespace sessiond::server {
namespace {

using sessiond::v1::internal::ProposeResponse;

replication::ApplyResult RoundTrip(replication::ApplyResult result) {
  ProposeResponse response;
  ResultToResponse(std::move(result), &response);
  // Over the wire, as a follower receives it.
  ProposeResponse received;
  EXPECT_TRUE(received.ParseFromString(response.SerializeAsString()));
  return ResultFromResponse(received);
}

// A write the leader refused before proposing it (too many writes in
// flight, a log it cannot write) is marked never proposed: the follower
// gives the caller's creates back and tells the caller a retry is safe.
// The mark was lost on the way, so a create refused on the leader stayed
// charged to a caller that had sent it to a follower.
TEST(ForwardedResultTest, AnErrorKeepsItsPayloadsAcrossTheForward) {
  absl::Status refused = absl::ResourceExhaustedError(
      "too many writes in flight (8 waiting for the log); retry shortly");
  refused.SetPayload(kNotProposedPayload, absl::Cord("1"));
  refused = WithErrorMetadata(std::move(refused), "limit", "8");

  const replication::ApplyResult back = RoundTrip(refused);
  ASSERT_FALSE(back.ok());
  EXPECT_EQ(back.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(back.status().message(), refused.message());
  EXPECT_TRUE(back.status().GetPayload(kNotProposedPayload).has_value());
  EXPECT_EQ(back.status(), refused);  // every payload, byte for byte
}

// A refusal before anything was proposed is answered at once on the
// follower; everything else waits for the follower to apply as far as the
// leader had (read-your-writes). The refusal waited too, for seconds on a
// lagging follower.
TEST(ForwardedResultTest, OnlyARefusalBeforeProposingSkipsTheApplyWait) {
  absl::Status refused = absl::ResourceExhaustedError("disk full");
  refused.SetPayload(kNotProposedPayload, absl::Cord("1"));
  EXPECT_FALSE(AnswerWaitsForApply(RoundTrip(refused)));
  EXPECT_TRUE(AnswerWaitsForApply(
      RoundTrip(absl::AbortedError("version 3, the session is at 4"))));
  EXPECT_TRUE(AnswerWaitsForApply(
      RoundTrip(replication::ApplyResult(std::any(uint64_t{7})))));
}

TEST(ForwardedResultTest, AnAppliedResultStillCarriesItsValue) {
  replication::ApplyResult applied(std::any(uint64_t{42}));
  const replication::ApplyResult back = RoundTrip(std::move(applied));
  ASSERT_TRUE(back.ok()) << back.status();
  const uint64_t* count = std::any_cast<uint64_t>(&*back);
  ASSERT_NE(count, nullptr);
  EXPECT_EQ(*count, 42u);
}

}  // namespace
}  // namespace sessiond::server
