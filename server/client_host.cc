// Copyright sessiond authors. Licensed under the Apache License 2.0.
#include "server/client_host.h"

#include <arpa/inet.h>

#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"

namespace sessiond::server {

std::string Ipv6ClientHost(in6_addr address) {
  char text[INET6_ADDRSTRLEN] = {};
  if (IN6_IS_ADDR_V4MAPPED(&address)) {
    return inet_ntop(AF_INET, &address.s6_addr[12], text, sizeof(text)) ? text
                                                                        : "";
  }
  std::memset(&address.s6_addr[8], 0, 8);
  if (inet_ntop(AF_INET6, &address, text, sizeof(text)) == nullptr) return "";
  return absl::StrCat(text, "/64");
}

std::string ClientHostOf(absl::string_view grpc_peer) {
  absl::string_view rest = grpc_peer;
  if (absl::ConsumePrefix(&rest, "ipv4:")) {
    const size_t colon = rest.rfind(':');
    return absl::StrCat("ipv4:", rest.substr(0, colon));
  }
  if (absl::ConsumePrefix(&rest, "ipv6:[")) {
    const size_t close = rest.find(']');
    if (close == absl::string_view::npos) return std::string(grpc_peer);
    // inet_pton wants no zone ("%eth0").
    absl::string_view host = rest.substr(0, close);
    host = host.substr(0, host.find('%'));
    in6_addr address;
    if (inet_pton(AF_INET6, std::string(host).c_str(), &address) != 1) {
      return std::string(grpc_peer);
    }
    return absl::StrCat(IN6_IS_ADDR_V4MAPPED(&address) ? "ipv4:" : "ipv6:",
                        Ipv6ClientHost(address));
  }
  return std::string(grpc_peer);
}

}  // namespace sessiond::server
