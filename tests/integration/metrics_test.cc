// Copyright sessiond authors. Licensed under the Apache License 2.0.
//
// The /metrics endpoint of the real binary: started with
// --metrics_listen 127.0.0.1:0, it is found through its METRICS_LISTENING
// line, driven over gRPC, and scraped with cpp-httplib's client. Every
// scrape must parse as the text exposition format (a small parser below,
// and promtool when installed); the counts the test controls must move by
// exactly what it did.
#include <httplib.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "sessiond/v1/admin.grpc.pb.h"
#include "tests/integration/sessiond_process.h"

namespace sessiond::testing {
namespace {

using sessiond::v1::ValidateSessionResponse;

// One scrape: series ("name{a="x",b="y"}", labels sorted by name) -> value.
struct Scrape {
  std::map<std::string, double> series;
  std::map<std::string, std::string> types;  // family -> TYPE
  std::string text;
};

std::string SeriesKey(const std::string& name,
                      std::map<std::string, std::string> labels) {
  if (labels.empty()) return name;
  std::vector<std::string> parts;
  for (const auto& [label, value] : labels) {
    parts.push_back(absl::StrCat(label, "=\"", value, "\""));
  }
  return absl::StrCat(name, "{", absl::StrJoin(parts, ","), "}");
}

bool IsNameChar(char c, bool first) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' ||
         c == ':' || (!first && c >= '0' && c <= '9');
}

// Parses the text exposition format 0.0.4 strictly enough for our output:
// every line is a "# HELP name text", a "# TYPE name type" (once per
// family, before its samples) or "name{label="value",...} value". Label
// values are unescaped. Fails the test (and returns false) on anything
// else.
bool ParseExposition(const std::string& text, Scrape* out) {
  out->text = text;
  std::set<std::string> helped;
  std::string family;  // the family whose samples may follow
  EXPECT_TRUE(!text.empty() && text.back() == '\n') << "no final newline";
  for (absl::string_view line : absl::StrSplit(text, '\n', absl::SkipEmpty())) {
    if (absl::ConsumePrefix(&line, "# ")) {
      std::vector<std::string> words =
          absl::StrSplit(line, absl::MaxSplits(' ', 2));
      if (words.size() < 2 || (words[0] != "HELP" && words[0] != "TYPE")) {
        ADD_FAILURE() << "bad comment line: # " << line;
        return false;
      }
      if (words[0] == "HELP") {
        if (!helped.insert(words[1]).second) {
          ADD_FAILURE() << "HELP twice for " << words[1];
          return false;
        }
        continue;
      }
      static const std::set<std::string> kTypes = {
          "counter", "gauge", "histogram", "summary", "untyped"};
      if (words.size() != 3 || kTypes.count(words[2]) == 0 ||
          !out->types.emplace(words[1], words[2]).second) {
        ADD_FAILURE() << "bad or repeated TYPE line: # " << line;
        return false;
      }
      family = words[1];
      continue;
    }
    size_t i = 0;
    while (i < line.size() && IsNameChar(line[i], i == 0)) ++i;
    const std::string name(line.substr(0, i));
    if (name.empty()) {
      ADD_FAILURE() << "no metric name: " << line;
      return false;
    }
    std::map<std::string, std::string> labels;
    if (i < line.size() && line[i] == '{') {
      ++i;
      while (i < line.size() && line[i] != '}') {
        size_t start = i;
        while (i < line.size() && IsNameChar(line[i], i == start) &&
               line[i] != ':') {
          ++i;
        }
        const std::string label(line.substr(start, i - start));
        if (label.empty() || i + 1 >= line.size() || line[i] != '=' ||
            line[i + 1] != '"') {
          ADD_FAILURE() << "bad label in: " << line;
          return false;
        }
        i += 2;
        std::string value;
        while (i < line.size() && line[i] != '"') {
          if (line[i] == '\\' && i + 1 < line.size()) {
            const char next = line[++i];
            if (next == 'n') {
              value += '\n';
            } else if (next == '\\' || next == '"') {
              value += next;
            } else {
              ADD_FAILURE() << "bad escape in: " << line;
              return false;
            }
          } else {
            value += line[i];
          }
          ++i;
        }
        if (i >= line.size() || !labels.emplace(label, value).second) {
          ADD_FAILURE() << "unterminated or repeated label in: " << line;
          return false;
        }
        ++i;  // the closing quote
        if (i < line.size() && line[i] == ',') ++i;
      }
      if (i >= line.size()) {
        ADD_FAILURE() << "unterminated labels: " << line;
        return false;
      }
      ++i;  // '}'
    }
    if (i >= line.size() || line[i] != ' ') {
      ADD_FAILURE() << "no value: " << line;
      return false;
    }
    const absl::string_view value_text = line.substr(i + 1);
    double value = 0;
    if (value_text == "+Inf") {
      value = HUGE_VAL;
    } else if (value_text == "-Inf") {
      value = -HUGE_VAL;
    } else if (value_text != "NaN" && !absl::SimpleAtod(value_text, &value)) {
      ADD_FAILURE() << "bad value (or a timestamp) in: " << line;
      return false;
    }
    // A sample belongs to the family of the last TYPE line: its name, or
    // for a histogram the name plus _bucket, _sum or _count.
    const bool ours = name == family ||
                      (out->types[family] == "histogram" &&
                       (name == family + "_bucket" || name == family + "_sum" ||
                        name == family + "_count"));
    if (!ours) {
      ADD_FAILURE() << name << " outside its family (after TYPE " << family
                    << ")";
      return false;
    }
    if (!out->series.emplace(SeriesKey(name, labels), value).second) {
      ADD_FAILURE() << "series twice: " << line;
      return false;
    }
  }
  return true;
}

// 10 s from now: a hung call fails the test instead of hanging it.
void SetDeadline(grpc::ClientContext* context) {
  context->set_deadline(std::chrono::system_clock::now() +
                        std::chrono::seconds(10));
}

class MetricsEndpointTest : public ::testing::Test {
 protected:
  void SetUp() override {
    process_ = std::make_unique<SessiondProcess>(
        SESSIOND_BINARY, dir_.path() + "/data",
        std::vector<std::string>{"--metrics_listen", "127.0.0.1:0",
                                 "--min_ttl_ms", "50", "--sweep_interval_ms",
                                 "3600000"});
    ASSERT_TRUE(process_->Start().ok()) << process_->log_path();
    address_ = ListeningAddressIn(process_->log_path(), "METRICS_LISTENING ");
    ASSERT_FALSE(address_.empty())
        << "no METRICS_LISTENING line in " << process_->log_path();
    const HostPort hp = SplitHostPort(address_);
    http_ = std::make_unique<httplib::Client>(hp.host, hp.port);
    http_->set_connection_timeout(5, 0);
    http_->set_read_timeout(10, 0);
    stub_ = process_->NewStub();
  }

  Scrape MustScrape() {
    Scrape scrape;
    httplib::Result res = http_->Get("/metrics");
    EXPECT_TRUE(res) << "GET /metrics failed: "
                     << httplib::to_string(res.error());
    if (!res) return scrape;
    EXPECT_EQ(res->status, 200);
    EXPECT_EQ(res->get_header_value("Content-Type"),
              "text/plain; version=0.0.4; charset=utf-8");
    EXPECT_TRUE(ParseExposition(res->body, &scrape)) << res->body;
    return scrape;
  }

  static double Value(const Scrape& s, const std::string& key) {
    const auto it = s.series.find(key);
    return it == s.series.end() ? 0 : it->second;
  }

  static std::string Handled(const std::string& service,
                             const std::string& method,
                             const std::string& code) {
    return SeriesKey(
        "sessiond_grpc_server_handled_total",
        {{"service", service}, {"method", method}, {"code", code}});
  }

  static std::string Outcome(const std::string& outcome) {
    return SeriesKey("sessiond_validations_total", {{"outcome", outcome}});
  }

  ValidateSessionResponse::Outcome Validate(const std::string& token) {
    sessiond::v1::ValidateSessionRequest request;
    request.set_token(token);
    ValidateSessionResponse response;
    grpc::ClientContext context;
    SetDeadline(&context);
    const grpc::Status s = stub_->ValidateSession(&context, request, &response);
    EXPECT_TRUE(s.ok()) << s.error_message();
    return response.outcome();
  }

  std::string Create(int64_t ttl_ms) {
    sessiond::v1::CreateSessionRequest request;
    request.set_user_id("metrics-user");
    request.set_ttl_ms(ttl_ms);
    sessiond::v1::CreateSessionResponse response;
    grpc::ClientContext context;
    SetDeadline(&context);
    const grpc::Status s = stub_->CreateSession(&context, request, &response);
    EXPECT_TRUE(s.ok()) << s.error_message();
    return response.token();
  }

  TempDir dir_;
  std::unique_ptr<SessiondProcess> process_;
  std::string address_;
  std::unique_ptr<httplib::Client> http_;
  std::unique_ptr<sessiond::v1::SessionService::Stub> stub_;
};

TEST_F(MetricsEndpointTest, HealthzSaysOkWhileServing) {
  httplib::Result res = http_->Get("/healthz");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 200);
  EXPECT_EQ(res->body, "ok\n");
  res = http_->Get("/no-such-page");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 404);
}

TEST_F(MetricsEndpointTest, CountsMoveByExactlyWhatTheClientDid) {
  const std::string kSession = "sessiond.v1.SessionService";
  const Scrape before = MustScrape();
  ASSERT_FALSE(HasFailure());

  // Creates: 4 long-lived sessions, one that expires soon, one refused.
  std::vector<std::string> tokens;
  for (int i = 0; i < 4; ++i) tokens.push_back(Create(3600 * 1000));
  const std::string short_lived = Create(50);
  {
    sessiond::v1::CreateSessionRequest request;  // no user_id
    sessiond::v1::CreateSessionResponse response;
    grpc::ClientContext context;
    SetDeadline(&context);
    EXPECT_EQ(stub_->CreateSession(&context, request, &response).error_code(),
              grpc::StatusCode::INVALID_ARGUMENT);
  }
  // Revoke one.
  {
    sessiond::v1::RevokeSessionRequest request;
    request.set_token(tokens[3]);
    sessiond::v1::RevokeSessionResponse response;
    grpc::ClientContext context;
    SetDeadline(&context);
    ASSERT_TRUE(stub_->RevokeSession(&context, request, &response).ok());
  }

  // Validations, tallied by the outcome the client saw.
  std::map<ValidateSessionResponse::Outcome, int> seen;
  int unary_validations = 0;
  auto validate = [&](const std::string& token) {
    ++seen[Validate(token)];
    ++unary_validations;
  };
  for (int i = 0; i < 3; ++i) validate(tokens[i]);  // valid
  validate(tokens[3]);                              // revoked
  validate("not-a-token");                          // unknown (garbage)
  validate(std::string(43, 'A'));                   // unknown (no session)
  // Expired: bounded wait for the 50 ms session to lapse.
  for (int i = 0; i < 200; ++i) {
    validate(short_lived);
    if (seen[ValidateSessionResponse::EXPIRED] > 0) break;
    usleep(20 * 1000);
  }
  ASSERT_GT(seen[ValidateSessionResponse::EXPIRED], 0);

  // A stream of 4 validations.
  {
    grpc::ClientContext context;
    SetDeadline(&context);
    auto stream = stub_->StreamValidateSessions(&context);
    for (int i = 0; i < 4; ++i) {
      sessiond::v1::ValidateSessionRequest request;
      request.set_token(tokens[i % 3]);
      ASSERT_TRUE(stream->Write(request));
    }
    stream->WritesDone();
    ValidateSessionResponse response;
    int answers = 0;
    while (stream->Read(&response)) {
      ++seen[response.outcome()];
      ++answers;
    }
    EXPECT_EQ(answers, 4);
    EXPECT_TRUE(stream->Finish().ok());
  }
  // An AdminService call.
  {
    auto admin = sessiond::v1::AdminService::NewStub(grpc::CreateChannel(
        process_->address(), grpc::InsecureChannelCredentials()));
    sessiond::v1::ClusterStatusRequest request;
    sessiond::v1::ClusterStatusResponse response;
    grpc::ClientContext context;
    SetDeadline(&context);
    ASSERT_TRUE(admin->ClusterStatus(&context, request, &response).ok());
  }

  const Scrape after = MustScrape();
  ASSERT_FALSE(HasFailure());
  auto delta = [&](const std::string& key) {
    return Value(after, key) - Value(before, key);
  };

  // Validation outcomes: exactly what the client saw.
  EXPECT_EQ(delta(Outcome("valid")), seen[ValidateSessionResponse::VALID]);
  EXPECT_GE(seen[ValidateSessionResponse::VALID], 3 + 4);  // + the wait
  EXPECT_EQ(delta(Outcome("revoked")), 1);
  EXPECT_EQ(delta(Outcome("unknown")), 2);
  EXPECT_EQ(delta(Outcome("expired")), seen[ValidateSessionResponse::EXPIRED]);

  // gRPC calls, by method and code.
  EXPECT_EQ(delta(Handled(kSession, "CreateSession", "OK")), 5);
  EXPECT_EQ(delta(Handled(kSession, "CreateSession", "INVALID_ARGUMENT")), 1);
  EXPECT_EQ(delta(Handled(kSession, "RevokeSession", "OK")), 1);
  EXPECT_EQ(delta(Handled(kSession, "ValidateSession", "OK")),
            unary_validations);
  EXPECT_EQ(delta(Handled(kSession, "StreamValidateSessions", "OK")), 1);
  EXPECT_EQ(delta(Handled("sessiond.v1.AdminService", "ClusterStatus", "OK")),
            1);
  const std::map<std::string, std::string> stream_labels = {
      {"service", kSession}, {"method", "StreamValidateSessions"}};
  EXPECT_EQ(
      delta(SeriesKey("sessiond_grpc_server_stream_messages_received_total",
                      stream_labels)),
      4);
  EXPECT_EQ(delta(SeriesKey("sessiond_grpc_server_stream_messages_sent_total",
                            stream_labels)),
            4);

  // The latency histogram agrees with the counter and is cumulative.
  const std::map<std::string, std::string> validate_ok = {
      {"service", kSession}, {"method", "ValidateSession"}, {"code", "OK"}};
  const double count = Value(
      after,
      SeriesKey("sessiond_grpc_server_handling_seconds_count", validate_ok));
  EXPECT_EQ(count, Value(after, Handled(kSession, "ValidateSession", "OK")));
  // Cumulative, in bound order (the map orders keys as text: walk the
  // bounds).
  double previous = 0;
  for (const char* le : {"5e-05", "0.0001", "0.00025", "0.0005", "0.001",
                         "0.0025", "0.005", "0.01", "0.025", "0.05", "0.1",
                         "0.25", "0.5", "1", "2.5", "5", "10", "+Inf"}) {
    std::map<std::string, std::string> labels = validate_ok;
    labels["le"] = le;
    const std::string key =
        SeriesKey("sessiond_grpc_server_handling_seconds_bucket", labels);
    ASSERT_EQ(after.series.count(key), 1u) << key;
    EXPECT_GE(after.series.at(key), previous) << key;
    previous = after.series.at(key);
  }
  EXPECT_EQ(previous, count);
  EXPECT_EQ(after.types.at("sessiond_grpc_server_handling_seconds"),
            "histogram");

  // Node state.
  EXPECT_EQ(Value(after, "sessiond_raft_is_leader"), 1);
  EXPECT_EQ(Value(after, "sessiond_raft_leader_id"), 1);
  EXPECT_GE(Value(after, "sessiond_raft_term"), 1);
  EXPECT_EQ(Value(after, "sessiond_raft_apply_lag_entries"), 0);
  EXPECT_GE(Value(after, "sessiond_sessions_live"), 5);
  EXPECT_GE(delta("sessiond_raft_entries_applied_total"), 6);  // 5 + revoke
  EXPECT_GE(delta("sessiond_raft_log_fsync_duration_seconds_count"), 1);
  EXPECT_EQ(Value(after, "sessiond_raft_log_fsync_duration_seconds_count"),
            Value(after, "sessiond_raft_log_synced_writes_total"));
  EXPECT_GT(Value(after, "sessiond_session_table_memory_bytes{part=\"arena\"}"),
            0);
  EXPECT_GT(Value(after, "sessiond_disk_free_bytes"), 0);
  EXPECT_EQ(Value(after, "sessiond_disk_full"), 0);
  EXPECT_EQ(after.types.at("sessiond_raft_proposals_total"), "counter");
  // Write admission (on by default): this light load sheds nothing, every
  // write has been answered, and the limit sits at or above its floor.
  EXPECT_EQ(after.types.at("sessiond_creates_shed_total"), "counter");
  EXPECT_EQ(Value(after, "sessiond_creates_shed_total"), 0);
  EXPECT_GE(Value(after, "sessiond_write_admission_limit"), 64);
  EXPECT_EQ(Value(after, "sessiond_write_admission_in_flight"), 0);
  EXPECT_EQ(after.types.at("sessiond_write_queueing_delay_seconds"), "gauge");
  EXPECT_GE(Value(after, "sessiond_write_queueing_delay_seconds"), 0);
  // Process.
  EXPECT_GT(Value(after, "process_resident_memory_bytes"), 0);
  EXPECT_GT(Value(after, "process_open_fds"), 0);
  EXPECT_GT(Value(after, "process_max_fds"), 0);
  EXPECT_GT(Value(after, "process_start_time_seconds"), 1.6e9);
  EXPECT_EQ(after.types.at("process_cpu_seconds_total"), "counter");
  // Build info: one series, value 1, with a version.
  int build_series = 0;
  for (const auto& [key, value] : after.series) {
    if (key.rfind("sessiond_build_info{version=\"", 0) == 0) {
      ++build_series;
      EXPECT_EQ(value, 1);
      EXPECT_NE(key, "sessiond_build_info{version=\"\"}");
    }
  }
  EXPECT_EQ(build_series, 1);
}

TEST_F(MetricsEndpointTest, PromtoolAcceptsTheExposition) {
  if (std::system("command -v promtool >/dev/null 2>&1") != 0) {
    GTEST_SKIP() << "promtool not installed (Debian package prometheus); "
                    "the format is checked by this file's parser only";
  }
  Create(3600 * 1000);
  const Scrape scrape = MustScrape();
  const std::string path = dir_.path() + "/metrics.txt";
  {
    std::ofstream out(path);
    out << scrape.text;
  }
  const int status =
      std::system(absl::StrCat("promtool check metrics < ", path).c_str());
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0)
      << "promtool check metrics failed on:\n"
      << scrape.text;
}

TEST_F(MetricsEndpointTest, StopsWithTheDaemon) {
  EXPECT_EQ(process_->Terminate(), 0);
  httplib::Client http(SplitHostPort(address_).host,
                       SplitHostPort(address_).port);
  http.set_connection_timeout(2, 0);
  EXPECT_FALSE(http.Get("/healthz")) << "still listening after exit";
}

TEST(MetricsFlagTest, OffByDefault) {
  TempDir dir;
  SessiondProcess process(SESSIOND_BINARY, dir.path() + "/data");
  ASSERT_TRUE(process.Start().ok()) << process.log_path();
  EXPECT_EQ(process.Terminate(), 0);
  std::ifstream log(process.log_path());
  std::stringstream text;
  text << log.rdbuf();
  EXPECT_EQ(text.str().find("METRICS_LISTENING"), std::string::npos)
      << text.str();
}

TEST(MetricsFlagTest, PortInUseRefusesToStart) {
  // A listening socket on a port the daemon is then asked to use (no
  // SO_REUSEPORT on either side: the daemon must not share it).
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_GE(fd, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  ASSERT_EQ(listen(fd, 1), 0);
  socklen_t len = sizeof(addr);
  getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  TempDir dir;
  SessiondProcess process(
      SESSIOND_BINARY, dir.path() + "/data",
      {"--metrics_listen", absl::StrCat("127.0.0.1:", ntohs(addr.sin_port))});
  ASSERT_TRUE(process.Launch().ok());
  const int status = process.WaitForExit(absl::Seconds(60));
  close(fd);
  ASSERT_TRUE(WIFEXITED(status)) << "status " << status;
  EXPECT_EQ(WEXITSTATUS(status), 1);
}

TEST(MetricsFlagTest, BadAddressIsAUsageError) {
  TempDir dir;
  SessiondProcess process(SESSIOND_BINARY, dir.path() + "/data",
                          {"--metrics_listen", "no-port"});
  ASSERT_TRUE(process.Launch().ok());
  const int status = process.WaitForExit(absl::Seconds(30));
  ASSERT_TRUE(WIFEXITED(status)) << "status " << status;
  EXPECT_EQ(WEXITSTATUS(status), 2);
}

}  // namespace
}  // namespace sessiond::testing
