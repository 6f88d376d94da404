// Copyright sessiond authors. Licensed under the Apache License 2.0.
#include "server/jwks_http.h"

#include <httplib.h>
#include <openssl/sha.h>

#include <algorithm>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace sessiond::server {
namespace {

// The opaque part of an entity tag: `"x"` and `W/"x"` both give `x`.
absl::string_view OpaqueTag(absl::string_view tag) {
  tag = absl::StripAsciiWhitespace(tag);
  absl::ConsumePrefix(&tag, "W/");
  return tag;
}

void Answer(const JwksHttpOptions& options, const httplib::Request& req,
            httplib::Response& res) {
  absl::StatusOr<JwksDocument> doc = options.provider();
  if (!doc.ok()) {
    res.status = 503;
    res.set_header("Cache-Control", "no-store");
    // One line: a status message may carry newlines (a wrapped cause).
    std::string reason =
        absl::StrReplaceAll(doc.status().message(), {{"\r", " "}, {"\n", " "}});
    if (reason.empty()) reason = doc.status().ToString();
    res.set_content(absl::StrCat("jwks unavailable: ", reason, "\n"),
                    "text/plain; charset=utf-8");
    return;
  }
  const std::string etag = JwksEntityTag(*doc);
  res.set_header(
      "Cache-Control",
      absl::StrCat("public, max-age=", std::max<int64_t>(doc->max_age_s, 0)));
  res.set_header("ETag", etag);
  if (req.has_header("If-None-Match") &&
      IfNoneMatchMatches(req.get_header_value("If-None-Match"), etag)) {
    res.status = 304;
    return;
  }
  res.set_content(std::move(doc->json), "application/json");
}

}  // namespace

std::string JwksEntityTag(const JwksDocument& doc) {
  unsigned char digest[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const unsigned char*>(doc.json.data()),
         doc.json.size(), digest);
  return absl::StrCat("\"", doc.key_ring_index, "-",
                      absl::BytesToHexString(absl::string_view(
                          reinterpret_cast<const char*>(digest), 8)),
                      "\"");
}

bool IfNoneMatchMatches(absl::string_view header, absl::string_view etag) {
  if (absl::StripAsciiWhitespace(header) == "*") return true;
  const absl::string_view want = OpaqueTag(etag);
  for (absl::string_view tag : absl::StrSplit(header, ',')) {
    if (OpaqueTag(tag) == want) return true;
  }
  return false;
}

JwksHttpServer::JwksHttpServer(JwksHttpOptions options)
    : options_(std::move(options)) {}

absl::StatusOr<std::unique_ptr<JwksHttpServer>> JwksHttpServer::Start(
    JwksHttpOptions options) {
  if (!options.provider) {
    return absl::InvalidArgumentError("jwks endpoint without a provider");
  }
  if (options.tls.has_value() && options.tls->require_client_cert) {
    return absl::InvalidArgumentError(
        "jwks endpoint: the JWKS is public, it never requires a client "
        "certificate");
  }
  std::unique_ptr<JwksHttpServer> server(
      new JwksHttpServer(std::move(options)));
  JwksHttpServer* self = server.get();
  absl::StatusOr<std::unique_ptr<HttpEndpoint>> endpoint = HttpEndpoint::Start(
      self->options_.listen, "jwks", "sd-jwks", self->options_.tls,
      [self](httplib::Server& http) {
        // httplib dispatches HEAD to the GET handlers and drops the body.
        http.Get(kJwksPath,
                 [self](const httplib::Request& req, httplib::Response& res) {
                   Answer(self->options_, req, res);
                 });
      });
  if (!endpoint.ok()) return endpoint.status();
  server->endpoint_ = *std::move(endpoint);
  return server;
}

}  // namespace sessiond::server
