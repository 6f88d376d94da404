// Copyright sessiond authors. Licensed under the Apache License 2.0.
#ifndef SESSIOND_SERVER_PAGE_TOKEN_H_
#define SESSIOND_SERVER_PAGE_TOKEN_H_

#include <array>
#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace sessiond::server {

// The query a ListUserSessions page token belongs to. page_size is not part
// of it: a client may change the page size between pages.
struct PageQuery {
  absl::string_view user_id;
  bool include_revoked = false;
};

// ListUserSessions page tokens: where the next page starts (the last
// session_id of the previous page), bound to the query with an HMAC-SHA256
// tag under a key derived from the cluster id, base64url encoded. Every node
// of a cluster accepts every other node's tokens (app servers page through a
// round-robin balancer) and tokens survive restarts. A token that was
// altered, truncated, extended, or made for another user or another
// include_revoked is refused.
//
// The tag makes tokens tamper-evident, not secret: the cluster id is shown
// by ClusterStatus, and a token carries only a session_id that the listing
// itself returned. Access control is the API's (issue: security).
class PageTokenCodec {
 public:
  explicit PageTokenCodec(uint64_t cluster_id);

  std::string Encode(const PageQuery& query,
                     absl::string_view after_session_id) const;

  // The session_id the next page starts after, or InvalidArgument naming
  // the field and what to do.
  absl::StatusOr<std::string> Decode(const PageQuery& query,
                                     absl::string_view page_token) const;

 private:
  static constexpr size_t kTagBytes = 16;
  std::array<uint8_t, kTagBytes> Tag(const PageQuery& query,
                                     absl::string_view after_session_id) const;

  std::array<uint8_t, 32> key_;
};

}  // namespace sessiond::server

#endif  // SESSIOND_SERVER_PAGE_TOKEN_H_
