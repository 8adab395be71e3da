// Tests of admitd's Prometheus metrics (src/service/metrics.cpp): a scripted sequence of
// requests through the Api on a ManualClock, then the exact values /metrics reports, read back
// with a strict parser of the text exposition format 0.0.4.
#include "service/metrics.hpp"

#include <gtest/gtest-spi.h>
#include <gtest/gtest.h>

#include <cstddef>
#include <map>
#include <optional>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "admit/core/clock.hpp"
#include "admit/limiter.hpp"
#include "admit/store/guarded_store.hpp"
#include "admit/store/memory_store.hpp"
#include "admit/version.hpp"
#include "service/api.hpp"
#include "service/config.hpp"
#include "support/fault_store.hpp"

namespace admit::service {
namespace {

using Labels = std::map<std::string, std::string>;

struct Sample {
  std::string name;
  Labels labels;
  double value = 0;
};

/// Parses an exposition strictly: every line is `# HELP name text`, `# TYPE name type` or
/// `name{label="value",...} number`; label values may hold \\, \" and \n escapes. Adds a test
/// failure (and skips the line) for anything else.
std::vector<Sample> parse_exposition(const std::string& text) {
  std::vector<Sample> out;
  std::istringstream in(text);
  std::string line;
  std::size_t n = 0;
  const auto name_char = [](char c, bool first) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == ':' ||
           (!first && c >= '0' && c <= '9');
  };
  while (std::getline(in, line)) {
    ++n;
    if (line.rfind("# HELP ", 0) == 0 || line.rfind("# TYPE ", 0) == 0) continue;
    Sample s;
    std::size_t i = 0;
    while (i < line.size() && name_char(line[i], i == 0)) s.name += line[i++];
    bool ok = !s.name.empty();
    if (ok && i < line.size() && line[i] == '{') {
      ++i;
      while (ok && i < line.size() && line[i] != '}') {
        std::string key;
        while (i < line.size() && name_char(line[i], key.empty())) key += line[i++];
        ok = !key.empty() && line.compare(i, 2, "=\"") == 0;
        i += 2;
        std::string value;
        while (ok && i < line.size() && line[i] != '"') {
          if (line[i] == '\\' && i + 1 < line.size()) {
            const char e = line[i + 1];
            ok = e == '\\' || e == '"' || e == 'n';
            value += e == 'n' ? '\n' : e;
            i += 2;
          } else {
            value += line[i++];
          }
        }
        ok = ok && i < line.size() && s.labels.emplace(key, value).second;
        ++i;  // the closing quote
        if (ok && i < line.size() && line[i] == ',') ++i;
      }
      ok = ok && i < line.size() && line[i] == '}';
      ++i;
    }
    ok = ok && i < line.size() && line[i] == ' ';
    if (ok) {
      const std::string number = line.substr(i + 1);
      if (number == "+Inf" || number == "-Inf" || number == "NaN") {
        ok = false;  // admitd exports none of these as a value
      } else {
        std::size_t used = 0;
        try {
          s.value = std::stod(number, &used);
        } catch (const std::exception&) {
          used = 0;
        }
        ok = used == number.size() && used > 0;
      }
    }
    if (!ok) {
      ADD_FAILURE() << "line " << n << " is not in the exposition format: '" << line << "'";
      continue;
    }
    out.push_back(std::move(s));
  }
  return out;
}

class MetricsTest : public ::testing::Test {
 protected:
  MetricsTest() {
    apply_config(parse_config(R"(
resources:
  gpt-4o:
    - {name: rpm, per: minute, limit: 3}
    - {name: tpm, per: minute, limit: 1000}
entities:
  team-a:
    limits:
      gpt-4o: [{name: rpm, per: minute, limit: 3}]
  user-1:
    parent: team-a
)",
                              "metrics_test.yaml"),
                 limiter);
  }

  Response call(std::string_view method, std::string_view target, std::string_view body = {}) {
    return api.handle(method, target, body);
  }

  std::vector<Sample> scrape() {
    const Response r = call("GET", "/metrics");
    EXPECT_EQ(r.status, 200u) << r.body;
    EXPECT_EQ(r.content_type, "text/plain; version=0.0.4; charset=utf-8");
    return parse_exposition(r.body);
  }

  /// The value of the one sample `name{labels}` (exactly these labels); nullopt if none.
  static std::optional<double> value(const std::vector<Sample>& samples, const std::string& name,
                                     const Labels& labels = {}) {
    std::optional<double> found;
    for (const Sample& s : samples) {
      if (s.name != name || s.labels != labels) continue;
      EXPECT_FALSE(found.has_value()) << name << " appears twice with the same labels";
      found = s.value;
    }
    return found;
  }

  MemoryStore store;
  ManualClock clock;
  Limiter limiter{store, clock};
  Metrics metrics{limiter, {"gpt-4o"}};
  Api api{limiter, &metrics};
};

constexpr std::string_view kAcquire =
    R"({"entity":"svc","resource":"gpt-4o","amounts":{"rpm":1,"tpm":10}})";

TEST_F(MetricsTest, ScriptedDecisionsGiveExactCounts) {
  for (int i = 0; i < 5; ++i) (void)call("POST", "/v1/acquire", kAcquire);  // 3 ok, 2 denied
  EXPECT_EQ(call("POST", "/v1/decide", kAcquire).status, 200u);             // a dry-run denial
  EXPECT_EQ(call("POST", "/v1/acquire", R"({"entity":"svc","resource":"gpt-4o"})").status,
            400u);  // refused before any decision: no decision counted
  EXPECT_EQ(call("GET", "/nope").status, 404u);
  EXPECT_EQ(call("GET", "/healthz").status, 200u);

  const std::vector<Sample> m = scrape();
  const auto decisions = [&](const char* route, const char* code) {
    return value(m, "admit_decisions_total",
                 {{"route", route}, {"resource", "gpt-4o"}, {"code", code}});
  };
  EXPECT_EQ(decisions("/v1/acquire", "ok"), 3);
  EXPECT_EQ(decisions("/v1/acquire", "rate_exceeded"), 2);
  EXPECT_EQ(decisions("/v1/decide", "rate_exceeded"), 1);
  EXPECT_EQ(decisions("/v1/decide", "ok"), std::nullopt);
  EXPECT_EQ(value(m, "admit_denials_total",
                  {{"route", "/v1/acquire"},
                   {"resource", "gpt-4o"},
                   {"limit", "rpm"},
                   {"code", "rate_exceeded"}}),
            2);
  EXPECT_EQ(value(m, "admit_denials_total",
                  {{"route", "/v1/decide"},
                   {"resource", "gpt-4o"},
                   {"limit", "rpm"},
                   {"code", "rate_exceeded"}}),
            1);
  // Only the third acquire left rpm below 10% (0 of 3; the first two left 2 and 1).
  EXPECT_EQ(value(m, "admit_near_limit_total", {{"route", "/v1/acquire"}, {"resource", "gpt-4o"}}),
            1);
  EXPECT_EQ(value(m, "admit_store_errors_total"), 0);
  EXPECT_EQ(value(m, "admit_decisions_in_flight"), 0);

  const auto requests = [&](const char* route, const char* status) {
    return value(m, "admit_http_requests_total", {{"route", route}, {"status", status}});
  };
  EXPECT_EQ(requests("/v1/acquire", "200"), 3);
  EXPECT_EQ(requests("/v1/acquire", "429"), 2);
  EXPECT_EQ(requests("/v1/acquire", "400"), 1);
  EXPECT_EQ(requests("/v1/decide", "200"), 1);
  EXPECT_EQ(requests("other", "404"), 1);  // the unknown path is not a label value
  EXPECT_EQ(requests("/healthz", "200"), 1);

  // The histogram of /v1/acquire: 6 requests, every bucket cumulative, +Inf = the count.
  EXPECT_EQ(value(m, "admit_request_duration_seconds_count", {{"route", "/v1/acquire"}}), 6);
  EXPECT_EQ(
      value(m, "admit_request_duration_seconds_bucket", {{"route", "/v1/acquire"}, {"le", "+Inf"}}),
      6);
  double previous = 0;
  int buckets = 0;
  for (const Sample& s : m) {
    if (s.name != "admit_request_duration_seconds_bucket" || s.labels.at("route") != "/v1/acquire")
      continue;
    EXPECT_GE(s.value, previous) << s.labels.at("le");
    previous = s.value;
    ++buckets;
  }
  EXPECT_EQ(buckets, 15);  // 14 bounds and +Inf
  EXPECT_GT(*value(m, "admit_request_duration_seconds_sum", {{"route", "/v1/acquire"}}), 0);
  EXPECT_EQ(value(m, "admit_request_duration_seconds_count", {{"route", "/v1/decide"}}), 1);

  EXPECT_EQ(value(m, "admit_build_info", {{"version", std::string(version_string)}}), 1);
  EXPECT_EQ(value(m, "admit_config_cache_hits_total"), 0);  // limits: local
  EXPECT_EQ(value(m, "admit_config_cache_entries"), 0);
  // Memory store: no GuardedStore; no server here: no connection gauge.
  EXPECT_EQ(value(m, "admit_store_degraded"), std::nullopt);
  EXPECT_EQ(value(m, "admit_http_connections"), std::nullopt);

  // The scrape itself is counted from the next one on; a minute later rpm is full again.
  clock.advance(60 * kMicrosPerSecond);
  EXPECT_EQ(call("POST", "/v1/acquire", kAcquire).status, 200u);
  const std::vector<Sample> again = scrape();
  EXPECT_EQ(value(again, "admit_http_requests_total", {{"route", "/metrics"}, {"status", "200"}}),
            1);
  EXPECT_EQ(value(again, "admit_decisions_total",
                  {{"route", "/v1/acquire"}, {"resource", "gpt-4o"}, {"code", "ok"}}),
            4);
}

TEST_F(MetricsTest, UnconfiguredResourcesShareOneLabel) {
  for (const char* r : {"model-a", "model-b", "model-c"}) {
    const std::string body =
        std::string(R"({"entity":"svc","resource":")") + r + R"(","amounts":{}})";
    EXPECT_EQ(call("POST", "/v1/acquire", body).status, 200u);  // no limits: allowed
  }
  const std::vector<Sample> m = scrape();
  EXPECT_EQ(value(m, "admit_decisions_total",
                  {{"route", "/v1/acquire"}, {"resource", "_other"}, {"code", "ok"}}),
            3);
  for (const Sample& s : m) {
    const auto it = s.labels.find("resource");
    if (it != s.labels.end()) {
      EXPECT_TRUE(it->second == "_other" || it->second == "gpt-4o") << it->second;
    }
    EXPECT_EQ(s.labels.count("entity"), 0u) << s.name;
  }
}

TEST_F(MetricsTest, SetResourcesRelabelsLaterDecisions) {
  const std::string body = R"({"entity":"svc","resource":"new-model","amounts":{}})";
  EXPECT_EQ(call("POST", "/v1/acquire", body).status, 200u);
  metrics.set_resources({"gpt-4o", "new-model"});  // as after a reload that added it
  EXPECT_EQ(call("POST", "/v1/acquire", body).status, 200u);
  const std::vector<Sample> m = scrape();
  EXPECT_EQ(value(m, "admit_decisions_total",
                  {{"route", "/v1/acquire"}, {"resource", "_other"}, {"code", "ok"}}),
            1);
  EXPECT_EQ(value(m, "admit_decisions_total",
                  {{"route", "/v1/acquire"}, {"resource", "new-model"}, {"code", "ok"}}),
            1);
}

TEST_F(MetricsTest, ALimitRefusingAtEntityAndParentCountsOnce) {
  const std::string body = R"({"entity":"user-1","resource":"gpt-4o","amounts":{"rpm":3}})";
  EXPECT_EQ(call("POST", "/v1/acquire", body).status, 200u);
  const Response denied = call("POST", "/v1/acquire", body);
  EXPECT_EQ(denied.status, 429u);
  ASSERT_NE(denied.body.find(R"("entity":"team-a","limit":"rpm")"), std::string::npos)
      << denied.body;  // both user-1's and team-a's rpm refused
  ASSERT_NE(denied.body.find(R"("entity":"user-1","limit":"rpm")"), std::string::npos);
  const std::vector<Sample> m = scrape();
  EXPECT_EQ(value(m, "admit_denials_total",
                  {{"route", "/v1/acquire"},
                   {"resource", "gpt-4o"},
                   {"limit", "rpm"},
                   {"code", "rate_exceeded"}}),
            1);
}

// A shadow limit's would-be denials: counted in admit_shadow_denials_total once per limit name
// (user-1's and team-a's shadow rpm count once), on allowed decisions (200, with
// shadow_violations in the body) and denied ones alike; never in admit_denials_total.
TEST_F(MetricsTest, ShadowLimitsCountWouldBeDenials) {
  limiter.set_limits("gpt-4o",
                     {Limit::per_minute("rpm", 2).with_shadow(), Limit::per_minute("tpm", 100)});
  limiter.set_entity_limits("team-a", "gpt-4o", {Limit::per_minute("rpm", 2).with_shadow()});
  const std::string body =
      R"({"entity":"user-1","resource":"gpt-4o","amounts":{"rpm":1,"tpm":10},"lease":false})";
  for (int i = 0; i < 2; ++i) {
    const Response r = call("POST", "/v1/acquire", body);
    EXPECT_EQ(r.status, 200u) << r.body;
    EXPECT_EQ(r.body.find("shadow_violations"), std::string::npos) << r.body;
  }
  const Response past = call("POST", "/v1/acquire", body);
  EXPECT_EQ(past.status, 200u);
  EXPECT_NE(past.body.find(R"("shadow_violations":[{"entity":"user-1","limit":"rpm")"),
            std::string::npos)
      << past.body;
  EXPECT_NE(past.body.find(R"({"entity":"team-a","limit":"rpm")"), std::string::npos) << past.body;
  EXPECT_EQ(call("POST", "/v1/decide",
                 R"({"entity":"user-1","resource":"gpt-4o","amounts":{"rpm":1,"tpm":10}})")
                .status,
            200u);
  const Response denied =
      call("POST", "/v1/acquire",
           R"({"entity":"user-1","resource":"gpt-4o","amounts":{"rpm":1,"tpm":90},"lease":false})");
  EXPECT_EQ(denied.status, 429u);  // tpm refuses (30 of 100 used); rpm only reports
  EXPECT_NE(denied.body.find("shadow_violations"), std::string::npos) << denied.body;

  const std::vector<Sample> m = scrape();
  const auto shadow = [&](const char* route) {
    return value(m, "admit_shadow_denials_total",
                 {{"route", route}, {"resource", "gpt-4o"}, {"limit", "rpm"}});
  };
  EXPECT_EQ(shadow("/v1/acquire"), 2);
  EXPECT_EQ(shadow("/v1/decide"), 1);
  EXPECT_EQ(value(m, "admit_decisions_total",
                  {{"route", "/v1/acquire"}, {"resource", "gpt-4o"}, {"code", "ok"}}),
            3);
  EXPECT_EQ(value(m, "admit_denials_total",
                  {{"route", "/v1/acquire"},
                   {"resource", "gpt-4o"},
                   {"limit", "tpm"},
                   {"code", "rate_exceeded"}}),
            1);
  EXPECT_EQ(value(m, "admit_denials_total",
                  {{"route", "/v1/acquire"},
                   {"resource", "gpt-4o"},
                   {"limit", "rpm"},
                   {"code", "rate_exceeded"}}),
            std::nullopt);
}

// Discovered limits and AIMD rates are summed over entities per resource and limit.
TEST_F(MetricsTest, DiscoveredLimitsAndAimdRates) {
  limiter.set_discovered_limits("acct-1", "gpt-4o", {Limit::per_minute("tpm", 30000)});
  limiter.set_discovered_limits("acct-2", "gpt-4o", {Limit::per_minute("tpm", 10000)});
  limiter.set_discovered_limits("acct-3", "other-model", {Limit::per_minute("rpm", 7)});
  limiter.set_limits("paced", {Limit::adaptive("aimd", {.max_rate = 50, .initial_rate = 4})});
  for (const char* e : {"a", "b"}) {
    const std::string body =
        std::string(R"({"entity":")") + e + R"(","resource":"paced","amounts":{},"lease":false})";
    EXPECT_EQ(call("POST", "/v1/acquire", body).status, 200u);
  }
  const std::vector<Sample> m = scrape();
  EXPECT_EQ(value(m, "admit_discovered_limit", {{"limit", "tpm"}, {"resource", "gpt-4o"}}),
            40000.0);
  EXPECT_EQ(value(m, "admit_discovered_limit", {{"limit", "rpm"}, {"resource", "_other"}}), 7.0);
  EXPECT_EQ(value(m, "admit_aimd_rate", {{"limit", "aimd"}, {"resource", "_other"}}), 8.0);
}

TEST_F(MetricsTest, NoMetricsNoRoute) {
  Api plain(limiter);
  EXPECT_EQ(plain.handle("GET", "/metrics", "").status, 404u);
  EXPECT_EQ(call("POST", "/metrics", "{}").status, 405u);
}

// A store that cannot be reached: the decisions say store_unavailable, the GuardedStore's
// counters come at scrape time.
TEST(MetricsStoreTest, StoreErrorsAndGuardedStoreCounters) {
  test::FaultStore primary;
  GuardedStore guard(primary);  // fail_closed
  ManualClock clock;
  Limiter limiter(guard, clock);
  limiter.set_limits("gpt-4o", {Limit::per_minute("rpm", 10)});
  Metrics metrics(limiter, {"gpt-4o"});
  metrics.watch_store(&guard);
  std::size_t open = 7;
  metrics.watch_connections([&open] { return open; }, 100);
  Api api(limiter, &metrics);

  EXPECT_EQ(api.handle("POST", "/v1/acquire", kAcquire).status, 400u);  // tpm is unknown here
  const std::string body = R"({"entity":"svc","resource":"gpt-4o","amounts":{"rpm":1}})";
  EXPECT_EQ(api.handle("POST", "/v1/acquire", body).status, 200u);
  primary.down = true;
  EXPECT_EQ(api.handle("POST", "/v1/acquire", body).status, 503u);
  EXPECT_EQ(api.handle("POST", "/v1/acquire", body).status, 503u);

  const Response r = api.handle("GET", "/metrics", "");
  const std::vector<Sample> m = parse_exposition(r.body);
  const auto one = [&](const std::string& name, const Labels& labels = {}) {
    std::optional<double> v;
    for (const Sample& s : m) {
      if (s.name == name && s.labels == labels) v = s.value;
    }
    return v;
  };
  EXPECT_EQ(one("admit_decisions_total",
                {{"route", "/v1/acquire"}, {"resource", "gpt-4o"}, {"code", "store_unavailable"}}),
            2);
  EXPECT_EQ(one("admit_decisions_total",
                {{"route", "/v1/acquire"}, {"resource", "gpt-4o"}, {"code", "unknown_limit"}}),
            1);
  EXPECT_EQ(one("admit_store_errors_total"), 2);
  EXPECT_EQ(one("admit_store_primary_failures_total"), 2);
  EXPECT_EQ(one("admit_store_degraded"), 1);
  EXPECT_EQ(one("admit_store_recoveries_total"), 0);
  EXPECT_EQ(one("admit_http_connections"), 7);
  EXPECT_EQ(one("admit_http_max_connections"), 100);

  primary.down = false;
  EXPECT_EQ(api.handle("POST", "/v1/acquire", body).status, 200u);
  const std::vector<Sample> after = parse_exposition(api.handle("GET", "/metrics", "").body);
  std::optional<double> degraded;
  std::optional<double> recoveries;
  for (const Sample& s : after) {
    if (s.name == "admit_store_degraded") degraded = s.value;
    if (s.name == "admit_store_recoveries_total") recoveries = s.value;
  }
  EXPECT_EQ(degraded, 0);
  EXPECT_EQ(recoveries, 1);
}

TEST(MetricsParserTest, RefusesWhatIsNotTheFormat) {
  // The parser must be strict for the tests above to mean anything.
  EXPECT_EQ(parse_exposition("a_total{x=\"1\"} 2\n# HELP a h\n# TYPE a counter\nb 0.5\n").size(),
            2u);
  EXPECT_NONFATAL_FAILURE(parse_exposition("a_total{x=1} 2\n"), "not in the exposition format");
  EXPECT_NONFATAL_FAILURE(parse_exposition("a_total 2x\n"), "not in the exposition format");
  EXPECT_NONFATAL_FAILURE(parse_exposition("a{x=\"1\",x=\"2\"} 2\n"), "not in the exposition");
  EXPECT_NONFATAL_FAILURE(parse_exposition("\n"), "not in the exposition format");
}

}  // namespace
}  // namespace admit::service
