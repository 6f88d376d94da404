// Copyright sessiond authors. Licensed under the Apache License 2.0.
#ifndef SESSIOND_SERVER_CLIENT_HOST_H_
#define SESSIOND_SERVER_CLIENT_HOST_H_

#include <netinet/in.h>

#include <string>

#include "absl/strings/string_view.h"

namespace sessiond::server {

// The client an IPv6 peer address stands for: the /64 it is in
// ("2001:db8:1:2::/64"; whoever has one address of a /64 usually has all
// of them, so limits keyed finer than that let one client rotate its source
// address for a fresh allowance), or a v4-mapped one's IPv4 address
// ("10.0.0.1"). "" when it cannot be written.
std::string Ipv6ClientHost(in6_addr address);

// The client host of a gRPC peer string, for per-client limits: an IPv4
// address without its port ("ipv4:10.0.0.1:5123" -> "ipv4:10.0.0.1"), an
// IPv6 one as its /64 ("ipv6:[2001:db8::1]:5123" -> "ipv6:2001:db8::/64";
// a v4-mapped one as IPv4), anything else whole.
std::string ClientHostOf(absl::string_view grpc_peer);

}  // namespace sessiond::server

#endif  // SESSIOND_SERVER_CLIENT_HOST_H_
