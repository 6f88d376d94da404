// Copyright sessiond authors. Licensed under the Apache License 2.0.
//
// sessionctl's `audit` verbs: the replicated audit log
// (AdminService.ListAudit; docs/OPERATIONS.md, "Audit").
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "nlohmann/json.hpp"
#include "sessiond/v1/admin.grpc.pb.h"
#include "tools/sessionctl_commands.h"
#include "tools/sessionctl_errors.h"
#include "tools/sessionctl_explain.h"
#include "tools/sessionctl_output.h"

namespace sessiond::sessionctl {
namespace {

using nlohmann::json;

// The most ListAudit returns at once (ListAuditRequest.limit's cap).
constexpr uint32_t kPage = 10'000;

// One ListAudit call through any node.
absl::StatusOr<v1::ListAuditResponse> Page(Connection& cluster, uint64_t after,
                                           uint32_t limit,
                                           std::string* endpoint) {
  v1::ListAuditRequest request;
  request.set_after_seq(after);
  request.set_limit(limit);
  v1::ListAuditResponse response;
  const absl::Status s = cluster.AdminChange(
      [&](v1::AdminService::Stub& stub, grpc::ClientContext& context) {
        return stub.ListAudit(&context, request, &response);
      },
      endpoint);
  if (!s.ok()) {
    return Explain(s, "audit", Kind::kRead, cluster.timeout(), "",
                   "the audit log needs the admin role");
  }
  return response;
}

// Entries with seq > after, at most `limit` (0: all), oldest first, paging
// as needed. `last` gets the last response (its counters). Each page moves
// `after` forward, so the loop ends.
absl::StatusOr<std::vector<v1::AuditEntry>> Collect(Connection& cluster,
                                                    uint64_t after,
                                                    uint32_t limit,
                                                    v1::ListAuditResponse* last,
                                                    std::string* endpoint) {
  std::vector<v1::AuditEntry> entries;
  while (limit == 0 || entries.size() < limit) {
    const uint32_t want =
        limit == 0 ? kPage
                   : std::min<uint32_t>(
                         kPage, limit - static_cast<uint32_t>(entries.size()));
    absl::StatusOr<v1::ListAuditResponse> page =
        Page(cluster, after, want, endpoint);
    if (!page.ok()) return page.status();
    for (const v1::AuditEntry& e : page->entries()) entries.push_back(e);
    *last = *page;
    const uint64_t next = page->next_after_seq();
    if (next == 0 || next <= after || page->entries().empty()) break;
    after = next;
  }
  last->clear_entries();
  return entries;
}

// "AdminService/Flush" for "/sessiond.v1.AdminService/Flush".
std::string ShortMethod(const std::string& method) {
  absl::string_view m = method;
  absl::ConsumePrefix(&m, "/");
  absl::ConsumePrefix(&m, "sessiond.v1.");
  return std::string(m);
}

// A call's two entries share the CALL column (the call_id's first 8 hex
// digits); RESULT is "requested" on the entry written before the call ran,
// its status code on the one written after.
std::vector<std::string> Row(const v1::AuditEntry& e, absl::Time now) {
  const bool requested = e.phase() == v1::AuditEntry::PHASE_REQUESTED;
  return {absl::StrCat(e.seq()),
          FormatTimeMs(e.time_ms(), now),
          e.call_id().empty() ? "-" : e.call_id().substr(0, 8),
          e.identity().empty() ? "-" : e.identity(),
          e.peer(),
          ShortMethod(e.method()),
          requested ? "requested"
                    : absl::StatusCodeToString(
                          static_cast<absl::StatusCode>(e.code())),
          requested ? "-" : FormatDurationMs(e.duration_ms())};
}

const std::vector<std::string> kHeader = {
    "SEQ", "TIME", "CALL", "IDENTITY", "PEER", "METHOD", "RESULT", "DURATION"};

}  // namespace

absl::Status ListAudit(Connection& cluster, const Output& out,
                       const AuditListOptions& options) {
  v1::ListAuditResponse last;
  std::string endpoint;
  absl::StatusOr<std::vector<v1::AuditEntry>> entries =
      Collect(cluster, options.after, options.limit, &last, &endpoint);
  if (!entries.ok()) return entries.status();
  uint64_t seen = options.after;
  if (!entries->empty()) seen = entries->back().seq();
  const absl::Time now = absl::Now();
  if (out.json && !options.follow) {
    json doc = MessageToJson(last);
    json list = json::array();
    for (const v1::AuditEntry& e : *entries) list.push_back(MessageToJson(e));
    doc["entries"] = std::move(list);
    doc["endpoint"] = endpoint;
    return Print(out, doc, "");
  }
  if (out.json) {
    for (const v1::AuditEntry& e : *entries) {
      PrintJson(out.stream, MessageToJson(e), /*one_line=*/true);
    }
  } else if (entries->empty() && !options.follow) {
    std::string text = "no audit entries";
    if (options.after != 0)
      absl::StrAppend(&text, " after seq ", options.after);
    std::fprintf(out.stream, "%s\n", text.c_str());
  } else {
    Table table(kHeader);
    for (const v1::AuditEntry& e : *entries) table.AddRow(Row(e, now));
    std::fprintf(out.stream, "%s", table.Render().c_str());
  }
  if (last.dropped_over_limit() > 0 && !out.json) {
    std::fprintf(stderr,
                 "sessionctl: %llu older entries were dropped over "
                 "--audit_max_entries\n",
                 static_cast<unsigned long long>(last.dropped_over_limit()));
  }
  std::fflush(out.stream);
  if (!options.follow) return absl::OkStatus();
  // Until interrupted (Ctrl-C): one page a second. Rows are printed without
  // a header, each as it comes.
  while (true) {
    absl::SleepFor(absl::Seconds(1));
    absl::StatusOr<std::vector<v1::AuditEntry>> more =
        Collect(cluster, seen, 0, &last, &endpoint);
    if (!more.ok()) {
      if (!out.json) return more.status();
      PrintErrorLine(out, more.status());
      return AlreadyPrinted(more.status());
    }
    for (const v1::AuditEntry& e : *more) {
      if (out.json) {
        PrintJson(out.stream, MessageToJson(e), /*one_line=*/true);
      } else {
        Table row(kHeader);
        row.AddRow(Row(e, absl::Now()));
        const std::string text = row.Render();
        // The row alone (the header is the first line).
        std::fprintf(out.stream, "%s",
                     text.substr(text.find('\n') + 1).c_str());
      }
      seen = e.seq();
    }
    std::fflush(out.stream);
  }
}

absl::Status ExportAudit(Connection& cluster, std::FILE* stream,
                         uint64_t after) {
  // Page by page, so a large log is not held whole.
  std::string endpoint;
  while (true) {
    absl::StatusOr<v1::ListAuditResponse> page =
        Page(cluster, after, kPage, &endpoint);
    if (!page.ok()) return page.status();
    // Kept entries are a contiguous run of seqs: a first one past after + 1
    // means the cluster dropped the ones between (retention) before they
    // were exported. The archive would have a hole, and the export said
    // nothing.
    if (after > 0 && !page->entries().empty() &&
        page->entries(0).seq() > after + 1) {
      const uint64_t first = page->entries(0).seq();
      return absl::DataLossError(absl::StrCat(
          "audit export: entries ", after + 1, "..", first - 1,
          " were dropped by the cluster's audit retention "
          "(--audit_retention_ms, --audit_max_entries) before they were "
          "exported, so an archive of them has a hole there. Nothing past "
          "seq ",
          after,
          " was written. To go on past the hole knowingly: "
          "sessionctl audit export --after ",
          first - 1));
    }
    for (const v1::AuditEntry& e : page->entries()) {
      PrintJson(stream, MessageToJson(e), /*one_line=*/true);
    }
    const uint64_t next = page->next_after_seq();
    if (next == 0 || next <= after || page->entries().empty()) break;
    after = next;
  }
  std::fflush(stream);
  return absl::OkStatus();
}

}  // namespace sessiond::sessionctl
