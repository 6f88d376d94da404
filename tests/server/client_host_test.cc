// Copyright sessiond authors. Licensed under the Apache License 2.0.
#include "server/client_host.h"

#include "gtest/gtest.h"

namespace sessiond::server {
namespace {

TEST(ClientHostTest, AnIpv4PeerIsItsAddress) {
  EXPECT_EQ(ClientHostOf("ipv4:10.0.0.1:5123"), "ipv4:10.0.0.1");
  EXPECT_EQ(ClientHostOf("ipv4:127.0.0.1:1"), ClientHostOf("ipv4:127.0.0.1:2"));
}

// A client rotating its source address within its /64 (it holds all of
// them) got a fresh create allowance for each: keyed by the whole address
// and port-less, "ipv6:[2001:db8::1]" and "ipv6:[2001:db8::2]" were two
// clients. Found in review.
TEST(ClientHostTest, AnIpv6PeerIsItsSlash64) {
  EXPECT_EQ(ClientHostOf("ipv6:[2001:db8::1]:5123"), "ipv6:2001:db8::/64");
  EXPECT_EQ(ClientHostOf("ipv6:[2001:db8::1]:1"),
            ClientHostOf("ipv6:[2001:db8::ffff:2]:2"));
  EXPECT_NE(ClientHostOf("ipv6:[2001:db8:0:1::1]:1"),
            ClientHostOf("ipv6:[2001:db8:0:2::1]:1"));
  EXPECT_EQ(ClientHostOf("ipv6:[::ffff:10.0.0.1]:5123"), "ipv4:10.0.0.1");
  EXPECT_EQ(ClientHostOf("ipv6:[fe80::1%25eth0]:5123"), "ipv6:fe80::/64");
}

TEST(ClientHostTest, AnythingElseIsKeptWhole) {
  EXPECT_EQ(ClientHostOf("unix:/run/sessiond.sock"), "unix:/run/sessiond.sock");
  EXPECT_EQ(ClientHostOf("ipv6:[not an address]:1"), "ipv6:[not an address]:1");
}

}  // namespace
}  // namespace sessiond::server
