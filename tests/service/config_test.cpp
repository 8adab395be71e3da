// Tests of admitd's YAML config loader (src/service/config.cpp).
#include "service/config.hpp"

#include <gtest/gtest.h>

#include <cstdlib>
#include <ostream>
#include <string>
#include <string_view>
#include <vector>

#include "admit/adapt/profiles.hpp"
#include "admit/core/clock.hpp"
#include "admit/core/error.hpp"
#include "admit/limiter.hpp"
#include "admit/store/audit.hpp"
#include "admit/store/memory_store.hpp"

namespace admit::service {
namespace {

const std::string kSample = std::string(ADMIT_SOURCE_DIR) + "/config/sample.yaml";

struct Fixture {
  explicit Fixture(const Config& c, int max_depth = 8)
      : limiter(store, clock, options(c.ns, max_depth)) {
    apply_config(c, limiter);
  }
  static LimiterOptions options(const std::string& ns, int max_depth) {
    LimiterOptions o;
    o.ns = ns;
    o.max_parent_depth = max_depth;
    return o;
  }
  MemoryStore store;
  ManualClock clock;
  Limiter limiter;
};

std::vector<Limit> limits_of(const Limiter& l, std::string_view entity, std::string_view resource,
                             ConfigSource expected_source) {
  std::vector<Limit> out;
  for (const auto& [limit, source] : l.resolve(entity, resource)) {
    EXPECT_EQ(source, expected_source) << limit.describe();
    out.push_back(limit);
  }
  return out;
}

TEST(ConfigTest, SampleLoadsAndResolves) {
  const Config c = load_config(kSample);
  EXPECT_EQ(c.ns, "default");
  Fixture f(c);
  const Limiter& l = f.limiter;

  EXPECT_EQ(l.resources(), (std::vector<std::string>{"claude-sonnet-4", "gpt-4o"}));
  EXPECT_EQ(
      limits_of(l, "", "gpt-4o", ConfigSource::resource),
      (std::vector<Limit>{Limit::per_minute("rpm", 500), Limit::per_minute("tpm", 30000, 30000),
                          Limit::daily("rpd", 10000, "00:00", "America/Los_Angeles"),
                          Limit::concurrency("concurrent", 50)}));
  EXPECT_EQ(limits_of(l, "", "claude-sonnet-4", ConfigSource::resource),
            (std::vector<Limit>{Limit::per_minute("rpm", 50), Limit::per_minute("tpm", 40000)}));
  EXPECT_EQ(limits_of(l, "", "some-other-model", ConfigSource::system),
            (std::vector<Limit>{Limit::per_minute("rpm", 60)}));
  EXPECT_EQ(limits_of(l, "team-a", "gpt-4o", ConfigSource::entity),
            (std::vector<Limit>{Limit::per_minute("rpm", 1000), Limit::per_minute("tpm", 100000)}));
  // user-1 has no limits of its own but consumes from its parent team-a too.
  const ResourceStats s = f.limiter.stats("user-1", "gpt-4o");
  ASSERT_EQ(s.limits.size(), 6u);
  EXPECT_EQ(s.limits[0].entity, "user-1");
  EXPECT_EQ(s.limits[5].entity, "team-a");
}

TEST(ConfigTest, AllLimitKinds) {
  const Config c = parse_config(R"(
namespace: ns-1
defaults: []
resources:
  m:
    - {name: a, per: second, limit: 10, burst: 20}
    - {name: b, per: hour, limit: 0}
    - {name: c, per: day, limit: 7}
    - {name: d, period_ms: 1500, capacity: 30, refill: 3}
    - {name: e, window: month, limit: 100, reset_at: "06:30", time_zone: Europe/Paris}
    - {name: f, window: minute, limit: 5}
    - {name: g, concurrency: 2}
entities:
  x:
    parent: y
    defaults: [{name: a, per: minute, limit: 1}]
    limits:
      m: [{name: a, per: minute, limit: 2}]
  y:
)",
                                "t.yaml");
  EXPECT_EQ(c.ns, "ns-1");
  ASSERT_EQ(c.resources.size(), 1u);
  EXPECT_EQ(c.resources[0].second,
            (std::vector<Limit>{
                Limit::per_second("a", 10, 20), Limit::per_hour("b", 0), Limit::per_day("c", 7),
                Limit::custom("d", 30, 3, std::chrono::milliseconds(1500)),
                Limit::window("e", 100, WindowSpec{WindowUnit::month, "06:30", "Europe/Paris"}),
                Limit::window("f", 5, WindowSpec{WindowUnit::minute, "00:00", "UTC"}),
                Limit::concurrency("g", 2)}));
  Fixture f(c);
  EXPECT_EQ(limits_of(f.limiter, "x", "m", ConfigSource::entity),
            (std::vector<Limit>{Limit::per_minute("a", 2)}));
  EXPECT_EQ(limits_of(f.limiter, "x", "other", ConfigSource::entity_default),
            (std::vector<Limit>{Limit::per_minute("a", 1)}));
  EXPECT_EQ(f.limiter.stats("x", "m").limits.back().entity, "y");
}

// Verifies `shadow: true` on every limit form (and `shadow: false`) reaches the Limiter as a
// shadow limit (reported, never denying), and that format_state_file writes it back.
TEST(ConfigTest, ShadowLimits) {
  const Config c = parse_config(R"(
resources:
  m:
    - {name: a, per: minute, limit: 1, shadow: true}
    - {name: b, period_ms: 1500, capacity: 30, refill: 3, shadow: true}
    - {name: c, window: day, limit: 5, shadow: true}
    - {name: d, concurrency: 2, shadow: true}
    - {name: e, per: minute, limit: 5, shadow: false}
entities:
  x:
    limits:
      m: [{name: a, per: hour, limit: 1, shadow: true}]
)",
                                "t.yaml");
  ASSERT_EQ(c.resources.size(), 1u);
  EXPECT_EQ(
      c.resources[0].second,
      (std::vector<Limit>{Limit::per_minute("a", 1).with_shadow(),
                          Limit::custom("b", 30, 3, std::chrono::milliseconds(1500)).with_shadow(),
                          Limit::daily("c", 5).with_shadow(),
                          Limit::concurrency("d", 2).with_shadow(), Limit::per_minute("e", 5)}));
  ASSERT_EQ(c.entities.size(), 1u);
  EXPECT_TRUE(c.entities[0].limits.at(0).second.at(0).shadow());
  Fixture f(c);
  ASSERT_TRUE(f.limiter.consume("u", "m", {{"a", 1}}).allowed);
  const Decision d = f.limiter.consume("u", "m", {{"a", 1}});
  EXPECT_TRUE(d.allowed);
  ASSERT_EQ(d.shadow_violations.size(), 1u);
  EXPECT_EQ(d.shadow_violations[0].limit, "a");

  const std::string text = format_state_file(c);
  EXPECT_NE(text.find("{name: a, per: minute, limit: 1, shadow: true}"), std::string::npos) << text;
  EXPECT_NE(text.find("{name: e, per: minute, limit: 5}"), std::string::npos) << text;
  const Config back = parse_state_file(text, "back.yaml");
  EXPECT_EQ(back.resources, c.resources);
  EXPECT_EQ(back.entities.at(0).limits, c.entities.at(0).limits);
}

struct Bad {
  const char* yaml;
  const char* field;  // the YAML path
  const char* value;
  const char* why;  // a fragment of the message
};

void PrintTo(const Bad& b, std::ostream* os) { *os << b.field << " = '" << b.value << "'"; }

class BadConfigTest : public ::testing::TestWithParam<Bad> {};

TEST_P(BadConfigTest, ThrowsNamingPathAndValue) {
  const Bad& b = GetParam();
  try {
    (void)parse_config(b.yaml, "t.yaml");
    FAIL() << "no error for:\n" << b.yaml;
  } catch (const ValidationError& e) {
    const std::string what = e.what();
    EXPECT_EQ(e.field(), b.field) << what;
    EXPECT_EQ(e.value(), b.value) << what;
    EXPECT_NE(what.find(b.field), std::string::npos) << what;
    EXPECT_NE(what.find(std::string("'") + b.value + "'"), std::string::npos) << what;
    EXPECT_NE(what.find(b.why), std::string::npos) << what;
    EXPECT_NE(what.find("(t.yaml"), std::string::npos) << what;
  }
}

// clang-format off
INSTANTIATE_TEST_SUITE_P(Cases, BadConfigTest, ::testing::Values(
  Bad{"resources:\n  m:\n    - {name: rpm, per: fortnight, limit: 5}\n",
      "resources.m[0].per", "fortnight", "expected second, minute, hour or day (t.yaml:3:"},
  Bad{"resources:\n  m:\n    - {name: rpm, per: minute, limit: -5}\n",
      "resources.m[0].limit", "-5", "non-negative integer"},
  Bad{"resources:\n  m:\n    - {name: rpm, per: minute, limit: 1.5}\n",
      "resources.m[0].limit", "1.5", "non-negative integer"},
  Bad{"resources:\n  m:\n    - {name: rpm, per: minute, limit: 99999999999999999999}\n",
      "resources.m[0].limit", "99999999999999999999", "out of range"},
  Bad{"resources:\n  m:\n    - {name: rpm, per: minute, limit: [1]}\n",
      "resources.m[0].limit", "[...]", "non-negative integer"},
  Bad{"resources:\n  m:\n    - {name: rpm, per: minute}\n",
      "resources.m[0].limit", "", "missing (required with 'per')"},
  Bad{"resources:\n  m:\n    - {per: minute, limit: 5}\n",
      "resources.m[0].name", "", "missing"},
  Bad{"resources:\n  m:\n    - {name: r pm, per: minute, limit: 5}\n",
      "resources.m[0].name", "r pm", "printable ASCII"},
  Bad{"resources:\n  m:\n    - {name: rpm, limit: 5}\n",
      "resources.m[0]", "{...}", "needs one of per, period_ms, window, concurrency or adaptive"},
  Bad{"resources:\n  m:\n    - {name: rpm, per: minute, limit: 5, concurrency: 3}\n",
      "resources.m[0].concurrency", "concurrency", "conflicts with 'per'"},
  Bad{"resources:\n  m:\n    - {name: rpm, per: minute, limit: 5, brust: 3}\n",
      "resources.m[0].brust", "brust", "unknown key"},
  Bad{"resources:\n  m:\n    - {name: c, concurrency: 5, burst: 3}\n",
      "resources.m[0].burst", "burst", "not allowed with 'concurrency'"},
  Bad{"resources:\n  m:\n    - {name: rpm, per: minute, limit: 5, shadow: yes}\n",
      "resources.m[0].shadow", "yes", "expected true or false (t.yaml:3:"},
  Bad{"resources:\n  m:\n    - {name: c, concurrency: 2, shadow: \"true\"}\n",
      "resources.m[0].shadow", "true", "expected true or false"},
  Bad{"resources:\n  m:\n    - {name: c, concurrency: 2, shadow: 1}\n",
      "resources.m[0].shadow", "1", "expected true or false"},
  Bad{"resources:\n  m:\n    - {name: c, concurrency: 2, shadow: [true]}\n",
      "resources.m[0].shadow", "[...]", "expected true or false"},
  Bad{"resources:\n  m:\n    - {name: w, window: year, limit: 5}\n",
      "resources.m[0].window", "year", "expected minute, hour, day, week or month"},
  Bad{"resources:\n  m:\n    - {name: w, window: day, limit: 5, time_zone: Mars/Olympus}\n",
      "resources.m[0].time_zone", "Mars/Olympus", "unknown IANA time zone"},
  Bad{"resources:\n  m:\n    - {name: w, window: day, limit: 5, reset_at: \"25:00\"}\n",
      "resources.m[0].reset_at", "25:00", "HH:MM"},
  Bad{"resources:\n  m:\n    - {name: x, period_ms: 1000, capacity: 10, refill: 0}\n",
      "resources.m[0].refill", "0", "must be > 0"},
  Bad{"resources:\n  m:\n    - {name: x, period_ms: 0, capacity: 10, refill: 1}\n",
      "resources.m[0].period_ms", "0", "must be > 0"},
  Bad{"resources:\n  m:\n    - {name: x, per: day, limit: 9007199254740991}\n",
      "resources.m[0].limit", "9007199254740991", "too large to be exact"},
  Bad{"resources:\n  m:\n    - {name: rpm, per: minute, limit: 5}\n    - {name: rpm, per: hour, limit: 9}\n",
      "resources.m[1].name", "rpm", "duplicate limit name (also at resources.m[0])"},
  Bad{"resources:\n  m: {name: rpm, per: minute, limit: 5}\n",
      "resources.m", "{...}", "expected a list of limits"},
  Bad{"resources:\n  bad model: []\n",
      "resources.bad model", "bad model", "printable ASCII"},
  Bad{"resources: [1, 2]\n",
      "resources", "[...]", "expected a mapping"},
  Bad{"limits: {}\n",
      "limits", "limits", "unknown key"},
  Bad{"namespace: a b\n",
      "namespace", "a b", "printable ASCII"},
  Bad{"defaults:\n  - {name: rpm, per: minute, limit: 5}\ndefaults: []\n",
      "defaults", "defaults", "duplicate key"},
  Bad{"entities:\n  a: {parent: b}\n  b: {parent: c}\n  c: {parent: a}\n",
      "entities.a.parent", "b", "cycle: a -> b -> c -> a"},
  Bad{"entities:\n  a: {parent: a}\n",
      "entities.a.parent", "a", "its own parent"},
  Bad{"entities:\n  a: {limit: {}}\n",
      "entities.a.limit", "limit", "unknown key (expected parent, defaults or limits)"},
  Bad{"entities:\n  a:\n    limits:\n      m:\n        - {name: rpm, per: weekly, limit: 1}\n",
      "entities.a.limits.m[0].per", "weekly", "(t.yaml:5:"},
  Bad{"resources: [\n",
      "config", "t.yaml", "YAML syntax error"},
  Bad{"- just\n- a list\n",
      "config", "t.yaml", "expected a mapping"},
  Bad{"",
      "config", "t.yaml", "expected a mapping"},
  // A second YAML document used to be ignored silently.
  Bad{"namespace: a\n---\nnamespace: b\n",
      "config", "t.yaml", "a second YAML document (a config file is one document; remove the '---' and merge it into the first) (t.yaml:2:1)"},
  Bad{"# leading comment\n---\nresources: {}\n---\nentities: {}\n",
      "config", "t.yaml", "a second YAML document (a config file is one document; remove the '---' and merge it into the first) (t.yaml:4:1)"},
  // A quoted number is a string, not a number.
  Bad{"resources:\n  m:\n    - {name: rpm, per: minute, limit: \"500\"}\n",
      "resources.m[0].limit", "500", "a quoted string where a number belongs (write it without quotes) (t.yaml:3:39)"},
  Bad{"resources:\n  m:\n    - {name: c, concurrency: '5'}\n",
      "resources.m[0].concurrency", "5", "where a number belongs (write it without quotes) (t.yaml:3:30)"},
  Bad{"resources:\n  m:\n    - {name: t, per: hour, limit: 5, burst: !!str 9}\n",
      "resources.m[0].burst", "9", "a quoted string where a number belongs"},
  // A parent must be declared.
  Bad{"entities:\n  user-1: {parent: team-x}\n",
      "entities.user-1.parent", "team-x", "parent is not declared under entities (add 'team-x: {}' there) (t.yaml:2:20)"},
  Bad{"entities:\n  a:\n    parent: b\n  b:\n    parent: c\n",
      "entities.b.parent", "c", "not declared under entities (add 'c: {}' there) (t.yaml:5:13)"},
  // auth and http.
  Bad{"auth:\n  tokens:\n    - {token: short}\n",
      "auth.tokens[0].token", "(hidden)", "shorter than 16 bytes"},
  Bad{"auth:\n  tokens:\n    - {token: 0123456789abcdef, scope: root}\n",
      "auth.tokens[0].scope", "root", "expected decide or admin (t.yaml:3:"},
  Bad{"auth:\n  tokens:\n    - {token: 0123456789abcdef}\n    - {token: 0123456789abcdef}\n",
      "auth.tokens[1].token", "(hidden)", "the same token as auth.tokens[0]"},
  Bad{"auth:\n  tokens:\n    - {scope: admin}\n",
      "auth.tokens[0].token", "", "missing"},
  Bad{"auth:\n  tokens:\n    - {token: 0123456789abcdef, namespaces: [a b]}\n",
      "auth.tokens[0].namespaces[0]", "a b", "printable ASCII"},
  Bad{"auth:\n  tokens:\n    - {token: 0123456789abcdef, role: x}\n",
      "auth.tokens[0].role", "role", "unknown key"},
  Bad{"auth:\n  users: []\n",
      "auth.users", "users", "unknown key (expected tokens)"},
  Bad{"auth:\n  tokens:\n    - {token: \"${ADMIT_TEST_UNSET_VARIABLE}\"}\n",
      "auth.tokens[0].token", "${ADMIT_TEST_UNSET_VARIABLE}", "environment variable ADMIT_TEST_UNSET_VARIABLE is not set (t.yaml:3:"},
  Bad{"namespace: \"${1X}\"\n",
      "namespace", "${1X}", "expected ${NAME}"},
  Bad{"namespace: \"${X\"\n",
      "namespace", "${X", "expected ${NAME}"},
  Bad{"http:\n  allowed_origins: [\"https://app.example/path\"]\n",
      "http.allowed_origins[0]", "https://app.example/path", "expected an origin"},
  Bad{"http:\n  allowed_origins: [\"app.example\"]\n",
      "http.allowed_origins[0]", "app.example", "expected an origin"},
  Bad{"http:\n  allowed_hosts: [\"a b\"]\n",
      "http.allowed_hosts[0]", "a b", "expected a host name"},
  Bad{"http:\n  cors: true\n",
      "http.cors", "cors", "unknown key (expected allowed_origins or allowed_hosts)"}));
// clang-format on

// Verifies the auth and http sections, and ${ENV} substitution in string values.
TEST(ConfigTest, AuthHttpAndEnvironment) {
  ASSERT_EQ(setenv("ADMIT_TEST_TOKEN", "s3cret-from-the-environment", 1), 0);
  ASSERT_EQ(setenv("ADMIT_TEST_NS", "team-a", 1), 0);
  const Config c = parse_config(R"(
namespace: "${ADMIT_TEST_NS}"
auth:
  tokens:
    - {token: "${ADMIT_TEST_TOKEN}", scope: decide, namespaces: [team-a, team-b], name: app}
    - token: "admin-$${literal}-0123456789"
      scope: admin
http:
  allowed_origins: ["https://app.example", "http://localhost:3000"]
  allowed_hosts: [admit.internal, "admit.example:8443"]
)",
                                "t.yaml");
  EXPECT_EQ(c.ns, "team-a");
  ASSERT_EQ(c.tokens.size(), 2u);
  EXPECT_EQ(c.tokens[0].token, "s3cret-from-the-environment");
  EXPECT_EQ(c.tokens[0].scope, Scope::decide);
  EXPECT_EQ(c.tokens[0].namespaces, (std::vector<std::string>{"team-a", "team-b"}));
  EXPECT_EQ(c.tokens[0].name, "app");
  EXPECT_EQ(c.tokens[0].where, "t.yaml:5:7");
  EXPECT_EQ(c.tokens[1].token, "admin-${literal}-0123456789");
  EXPECT_EQ(c.tokens[1].scope, Scope::admin);
  EXPECT_TRUE(c.tokens[1].namespaces.empty());
  EXPECT_EQ(c.http.allowed_origins,
            (std::vector<std::string>{"https://app.example", "http://localhost:3000"}));
  EXPECT_EQ(c.http.allowed_hosts,
            (std::vector<std::string>{"admit.internal", "admit.example:8443"}));
  EXPECT_NO_THROW(Auth{c.tokens});

  // A token is never quoted in an error, even when it is what is wrong.
  try {
    (void)parse_config(
        "auth:\n  tokens:\n    - {token: \"${ADMIT_TEST_TOKEN}\", scope: x}\n"
        "    - {token: \"${ADMIT_TEST_TOKEN}\"}\n",
        "t.yaml");
    FAIL();
  } catch (const ValidationError& e) {
    EXPECT_EQ(std::string(e.what()).find("s3cret"), std::string::npos) << e.what();
  }
  unsetenv("ADMIT_TEST_TOKEN");
  unsetenv("ADMIT_TEST_NS");
}

// Verifies that plain numbers, quoted strings where strings belong, a lone document with its
// markers, and declared parents (in any order) still load.
TEST(ConfigTest, WhatTheRefusalsLeave) {
  const Config c = parse_config(R"(%YAML 1.2
---
resources:
  m:
    - {name: w, window: day, limit: 5, reset_at: "06:00", time_zone: "UTC"}
entities:
  u: {parent: t}
  t:
...
)",
                                "t.yaml");
  ASSERT_EQ(c.entities.size(), 2u);
  EXPECT_EQ(c.entities[0].parent, "t");
  EXPECT_EQ(c.resources[0].second[0].window_spec().reset_at, "06:00");
}

TEST(ConfigTest, StoreSection) {
  EXPECT_EQ(parse_config("namespace: a\n", "t.yaml").store.kind, StoreKind::memory);
  const Config sqlite =
      parse_config("store: {url: \"sqlite:/tmp/a.db\", durability: write_behind}\n", "t.yaml");
  EXPECT_EQ(sqlite.store.kind, StoreKind::sqlite);
  EXPECT_EQ(sqlite.store.sqlite.path, "/tmp/a.db");
  EXPECT_EQ(sqlite.store.sqlite.durability, Durability::write_behind);
  EXPECT_EQ(sqlite.store.guard.policy, UnavailablePolicy::fail_closed);
  const Config capped = parse_config("store: {url: memory, max_keys: 1000000}\n", "t.yaml");
  EXPECT_EQ(capped.store.memory.max_keys, 1'000'000u);
  EXPECT_THROW(parse_config("store: {url: \"sqlite:/tmp/a.db\", max_keys: 5}\n", "t.yaml"),
               ValidationError);
  EXPECT_THROW(parse_config("store: {url: memory, max_keys: 0}\n", "t.yaml"), ValidationError);

  ::setenv("ADMIT_TEST_REDIS_PASSWORD", "s3cret", 1);
  const Config redis = parse_config(R"(store:
  url: redis://:${ADMIT_TEST_REDIS_PASSWORD}@10.0.0.7:6380/2
  prefix: team
  unavailable: local_fallback
  fleet_size: 3
  limits: store
  limits_ttl_ms: 5000
)",
                                    "t.yaml");
  const StoreConfig& r = redis.store;
  EXPECT_EQ(r.kind, StoreKind::redis);
  EXPECT_EQ(r.redis.client.password, "s3cret");
  EXPECT_EQ(r.redis.client.db, 2);
  EXPECT_EQ(r.redis.client.seeds.at(0).to_string(), "10.0.0.7:6380");
  EXPECT_EQ(r.url, "redis://10.0.0.7:6380/2") << "no password in what is logged";
  EXPECT_EQ(r.redis.prefix, "team");
  EXPECT_EQ(r.guard.policy, UnavailablePolicy::local_fallback);
  EXPECT_EQ(r.guard.fleet_size, 3);
  EXPECT_EQ(r.config, ConfigMode::store);
  EXPECT_EQ(r.config_ttl, 5 * kMicrosPerSecond);
  // What is learned: shared on a shared store by default, every 1 s, for 10 minutes.
  EXPECT_EQ(r.adaptation, AdaptationMode::automatic);
  EXPECT_EQ(r.adaptation_refresh, kMicrosPerSecond);
  EXPECT_EQ(r.adaptation_ttl, 10 * kMicrosPerMinute);
  const Config adapt = parse_config(R"(store:
  url: redis://10.0.0.7:6380
  adaptation: store
  adaptation_refresh_ms: 250
  adaptation_ttl_ms: 60000
)",
                                    "t.yaml");
  EXPECT_EQ(adapt.store.adaptation, AdaptationMode::store);
  EXPECT_EQ(adapt.store.adaptation_refresh, 250 * 1000);
  EXPECT_EQ(adapt.store.adaptation_ttl, kMicrosPerMinute);
  EXPECT_EQ(adapt.store.redis.audit_retention, kDefaultAuditRetention);
  // audit_retention: every store kind, the newest N events of a namespace.
  for (const char* url : {"memory", "\"sqlite:/tmp/a.db\"", "redis://h"}) {
    const StoreConfig sc =
        parse_config(std::string("store: {url: ") + url + ", audit_retention: 500}\n", "t.yaml")
            .store;
    EXPECT_EQ(sc.memory.audit_retention, 500u) << url;
    EXPECT_EQ(sc.sqlite.audit_retention, 500u) << url;
    EXPECT_EQ(sc.redis.audit_retention, 500u) << url;
  }
  EXPECT_EQ(parse_config("store: {url: memory, adaptation: local}\n", "t.yaml").store.adaptation,
            AdaptationMode::local);
  EXPECT_EQ(parse_config("store: {url: \"sqlite:/tmp/a.db\", adaptation: auto}\n", "t.yaml")
                .store.adaptation,
            AdaptationMode::automatic);

  const Config cluster = parse_config("store: redis+cluster://a:7000, b:7001\n", "t.yaml");
  EXPECT_TRUE(cluster.store.redis.client.cluster);
  EXPECT_EQ(cluster.store.redis.client.seeds.size(), 2U);
  EXPECT_EQ(cluster.store.url, "redis+cluster://a:7000,b:7001");

  // TLS: the files and checks are URL parameters; the logged URL has neither them nor the
  // password.
  const Config tls = parse_config(R"(store:
  url: rediss://:pw@redis.internal:6380/1?ca=/etc/admit/ca.crt&cert=/etc/admit/c.crt&key=/etc/admit/c.key
  connect_timeout_ms: 500
)",
                                  "t.yaml");
  const redis::ClientOptions& t = tls.store.redis.client;
  EXPECT_EQ(tls.store.kind, StoreKind::redis);
  EXPECT_TRUE(t.tls.enabled);
  EXPECT_TRUE(t.tls.verify);
  EXPECT_EQ(t.tls.ca_file, "/etc/admit/ca.crt");
  EXPECT_EQ(t.tls.cert_file, "/etc/admit/c.crt");
  EXPECT_EQ(t.tls.key_file, "/etc/admit/c.key");
  EXPECT_EQ(t.password, "pw");
  EXPECT_EQ(t.connect_timeout.count(), 500);
  EXPECT_EQ(tls.store.url, "rediss://redis.internal:6380/1");
  const Config tls_cluster =
      parse_config("store: rediss+cluster://a:7000,b:7001?verify=none\n", "t.yaml");
  EXPECT_TRUE(tls_cluster.store.redis.client.cluster);
  EXPECT_TRUE(tls_cluster.store.redis.client.tls.enabled);
  EXPECT_FALSE(tls_cluster.store.redis.client.tls.verify);
  EXPECT_EQ(tls_cluster.store.url, "rediss+cluster://a:7000,b:7001");
}

// clang-format off
INSTANTIATE_TEST_SUITE_P(Store, BadConfigTest, ::testing::Values(
  Bad{"store: rediss://h:6379?ca\n", "store", "rediss://h:6379?ca", "the parameter 'ca' needs a value"},
  Bad{"store: rediss://h:6379?tls=yes\n", "store", "rediss://h:6379?tls=yes", "unknown parameter 'tls'"},
  Bad{"store: postgres://h\n", "store", "postgres://h", "expected memory, sqlite:PATH"},
  Bad{"store: \"sqlite:\"\n", "store", "sqlite:", "needs a file path"},
  Bad{"store: redis://h:99999\n", "store", "redis://h:99999", "port"},
  Bad{"store: {durability: per_op}\n", "store.url", "{...}", "missing key"},
  Bad{"store: {url: memory, unavailable: fail_open}\n", "store.unavailable", "unavailable", "always available"},
  Bad{"store: {url: \"sqlite:a.db\", prefix: x}\n", "store.prefix", "prefix", "redis stores only"},
  Bad{"store: {url: redis://h, durability: per_op}\n", "store.durability", "durability", "sqlite: stores only"},
  Bad{"store: {url: redis://h, unavailable: maybe}\n", "store.unavailable", "maybe", "expected fail_closed"},
  Bad{"store: {url: redis://h, fleet_size: \"3\"}\n", "store.fleet_size", "3", "unquoted integer"},
  Bad{"store: {url: redis://h, fleet_size: 0}\n", "store.fleet_size", "0", "within 1..100000"},
  Bad{"store: {url: memory, limits: remote}\n", "store.limits", "remote", "expected local or store"},
  Bad{"store: {url: redis://h, adaptation: fleet}\n", "store.adaptation", "fleet", "expected auto, local or store"},
  Bad{"store: {url: memory, adaptation: store}\n", "store.adaptation", "store", "memory store is not shared"},
  Bad{"store: {url: redis://h, adaptation_refresh_ms: 0}\n", "store.adaptation_refresh_ms", "0", "within 1..86400000"},
  Bad{"store: {url: redis://h, adaptation_refresh_ms: 400000}\n", "store.adaptation_refresh_ms", "400000", "at least 2 * adaptation_refresh_ms"},
  Bad{"store: {url: memory, audit_retention: 0}\n", "store.audit_retention", "0", ""},
  Bad{"store: {url: memory, audit_retention: \"5\"}\n", "store.audit_retention", "5", "expected an unquoted integer"},
  Bad{"store: {url: redis://h, adaptation_refresh_ms: 1000, adaptation_ttl_ms: 1999}\n", "store.adaptation_ttl_ms", "1999", "at least 2 * adaptation_refresh_ms"},
  Bad{"store: {url: memory, colour: red}\n", "store.colour", "colour", "unknown key"}));
// clang-format on

TEST(ConfigTest, MissingFile) {
  try {
    (void)load_config("/nonexistent/admitd.yaml");
    FAIL();
  } catch (const ValidationError& e) {
    EXPECT_EQ(e.field(), "config");
    EXPECT_EQ(e.value(), "/nonexistent/admitd.yaml");
  }
}

TEST(ConfigTest, ApplyChecksNamespaceAndDepth) {
  const Config c = parse_config("namespace: other\n", "t.yaml");
  MemoryStore store;
  ManualClock clock;
  Limiter limiter(store, clock);  // namespace "default"
  EXPECT_THROW(apply_config(c, limiter), ValidationError);

  // e0 -> e1 -> ... -> e4: four ancestors above e0.
  std::string yaml = "entities:\n";
  for (int i = 0; i < 4; ++i) {
    yaml += "  e" + std::to_string(i) + ": {parent: e" + std::to_string(i + 1) + "}\n";
  }
  yaml += "  e4:\n";  // the root, declared
  const Config chain = parse_config(yaml, "t.yaml");
  EXPECT_NO_THROW(Fixture(chain, 4));
  try {
    Fixture f(chain, 3);
    FAIL();
  } catch (const ValidationError& e) {
    EXPECT_EQ(e.field(), "entities.e0.parent");
    EXPECT_NE(std::string(e.what()).find("deeper than max_parent_depth 3"), std::string::npos)
        << e.what();
  }
}

// Verifies the depth refusal names the entity whose chain is too deep whatever the order the
// file declares the chain in (here root-first: e3 -> e4 first, e0 last).
TEST(ConfigTest, ApplyDepthErrorNamesTheDeepestEntityInAnyOrder) {
  std::string yaml = "entities:\n  e4:\n";
  for (int i = 3; i >= 0; --i) {
    yaml += "  e" + std::to_string(i) + ": {parent: e" + std::to_string(i + 1) + "}\n";
  }
  const Config chain = parse_config(yaml, "t.yaml");
  EXPECT_NO_THROW(Fixture(chain, 4));
  try {
    Fixture f(chain, 3);
    FAIL();
  } catch (const ValidationError& e) {
    EXPECT_EQ(e.field(), "entities.e0.parent");
    EXPECT_EQ(e.value(), "e1");
    EXPECT_NE(std::string(e.what()).find("deeper than max_parent_depth 3"), std::string::npos)
        << e.what();
  }
}

// Verifies resolve_limits (state files, migrate) resolves every level like the Limiter the
// configuration is applied to: entity > entity default > resource > system, and an empty set
// when nothing applies.
TEST(ConfigTest, ResolveLimitsAgreesWithTheLimiter) {
  const Config c = parse_config(R"(
resources:
  gpt: [{name: rpm, per: minute, limit: 10}]
entities:
  own:
    limits:
      gpt: [{name: rpm, per: minute, limit: 1}]
    defaults: [{name: rpm, per: minute, limit: 2}]
  dflt:
    defaults: []
  bare: {}
)",
                                "t.yaml");
  Fixture f(c);
  for (const std::string_view entity : {"own", "dflt", "bare", "nobody"}) {
    for (const std::string_view resource : {"gpt", "other"}) {
      SCOPED_TRACE(std::string(entity) + "/" + std::string(resource));
      std::vector<Limit> expected;
      for (const auto& [limit, source] : f.limiter.resolve(entity, resource)) {
        expected.push_back(limit);
      }
      EXPECT_EQ(resolve_limits(c, entity, resource), expected);
    }
  }
  EXPECT_EQ(resolve_limits(c, "own", "gpt").at(0).capacity(), 1);
  EXPECT_EQ(resolve_limits(c, "own", "other").at(0).capacity(), 2);
  EXPECT_TRUE(resolve_limits(c, "dflt", "gpt").empty());
  EXPECT_EQ(resolve_limits(c, "bare", "gpt").at(0).capacity(), 10);
  EXPECT_TRUE(resolve_limits(c, "bare", "other").empty());
}

// The entities of `entity`'s chain on "gpt", itself first.
std::vector<std::string> chain_of(Limiter& l, std::string_view entity) {
  std::vector<std::string> out;
  for (const LimitStatus& s : l.stats(entity, "gpt").limits) out.push_back(s.entity);
  return out;
}

using Names = std::vector<std::string>;

constexpr const char* kParentRules = R"(
resources:
  gpt: [{name: rpm, per: minute, limit: 100}]
entities:
  team-a:
    limits:
      gpt: [{name: rpm, per: minute, limit: 10}]
  team-shared:
    limits:
      gpt: [{name: rpm, per: minute, limit: 5}]
  org: {}
  alice: {parent: org}
  user-vip: {}
parent_rules:
  - {match: "user-*", parent: team-a}
default_parent: team-shared
)";

// Verifies parent_rules and default_parent: parsed in order (default last), applied as rules
// for the entities the file does not declare (declared ones keep exactly their own parent),
// two such entities sharing the default parent's budget, and written back by
// format_state_file.
TEST(ConfigTest, ParentRulesAndDefaultParent) {
  const Config c = parse_config(kParentRules, "t.yaml");
  ASSERT_EQ(c.parent_rules.size(), 2U);
  EXPECT_EQ(c.parent_rules[0].match, "user-*");
  EXPECT_EQ(c.parent_rules[0].parent, "team-a");
  EXPECT_EQ(c.parent_rules[0].path, "parent_rules[0].parent");
  EXPECT_EQ(c.parent_rules[0].where, "t.yaml:15:31");
  EXPECT_EQ(c.parent_rules[1].match, "*");
  EXPECT_EQ(c.parent_rules[1].parent, "team-shared");
  EXPECT_EQ(c.parent_rules[1].path, "default_parent");
  EXPECT_EQ(c.parent_rules[1].where, "t.yaml:16:17");
  const std::vector<ParentRule> rules = limiter_parent_rules(c);
  EXPECT_EQ(rules, (std::vector<ParentRule>{{"team-a", ""},
                                            {"team-shared", ""},
                                            {"org", ""},
                                            {"alice", ""},
                                            {"user-vip", ""},
                                            {"user-*", "team-a"},
                                            {"*", "team-shared"}}));

  Fixture f(c);
  EXPECT_EQ(f.limiter.parent_rules(), rules);
  EXPECT_EQ(chain_of(f.limiter, "user-1"), (Names{"user-1", "team-a"}));
  EXPECT_EQ(chain_of(f.limiter, "bob"), (Names{"bob", "team-shared"}));
  EXPECT_EQ(chain_of(f.limiter, "alice"), (Names{"alice", "org"}));
  for (const char* declared : {"org", "user-vip", "team-a", "team-shared"}) {
    EXPECT_EQ(chain_of(f.limiter, declared), (Names{declared}));
  }
  ASSERT_TRUE(f.limiter.consume("bob", "gpt", {{"rpm", 3}}).allowed);
  ASSERT_TRUE(f.limiter.consume("carol", "gpt", {{"rpm", 2}}).allowed);
  const Decision d = f.limiter.consume("dave", "gpt", {{"rpm", 1}});
  EXPECT_EQ(d.code, Code::rate_exceeded);
  ASSERT_EQ(d.violations.size(), 1U);
  EXPECT_EQ(d.violations[0].entity, "team-shared");

  const Config back = parse_state_file(format_state_file(c), "back.yaml");
  ASSERT_EQ(back.parent_rules.size(), 2U);
  for (std::size_t i = 0; i < 2; ++i) {
    EXPECT_EQ(back.parent_rules[i].match, c.parent_rules[i].match);
    EXPECT_EQ(back.parent_rules[i].parent, c.parent_rules[i].parent);
    EXPECT_EQ(back.parent_rules[i].path, c.parent_rules[i].path);
  }
  // No rules, no exemptions.
  EXPECT_TRUE(limiter_parent_rules(parse_config("entities:\n  a: {}\n", "t.yaml")).empty());
}

// Verifies declared names with glob characters are exempt as themselves only.
TEST(ConfigTest, DeclaredNamesAreEscapedInTheRules) {
  const Config c = parse_config(R"(
resources:
  gpt: [{name: rpm, per: minute, limit: 100}]
entities:
  "a*": {}
  shared: {}
default_parent: shared
)",
                                "t.yaml");
  EXPECT_EQ(limiter_parent_rules(c).front(), (ParentRule{"a\\*", ""}));
  Fixture f(c);
  EXPECT_EQ(chain_of(f.limiter, "a*"), (Names{"a*"}));
  EXPECT_EQ(chain_of(f.limiter, "ab"), (Names{"ab", "shared"}));
}

// Verifies a chain that the rules make too deep is refused with file:line: at the parent link
// that deepens it on a first apply, at the rule when the links are there already.
TEST(ConfigTest, ParentRulesChainsAreCheckedOnApply) {
  const std::string links = "entities:\n  e0: {parent: e1}\n  e1: {parent: e2}\n  e2: {}\n";
  const Config with_rule =
      parse_config(links + "parent_rules:\n  - {match: \"user-*\", parent: e0}\n", "t.yaml");
  EXPECT_NO_THROW(Fixture(with_rule, 3));
  try {
    Fixture f(with_rule, 2);  // user-* would have e0, e1, e2
    FAIL();
  } catch (const ValidationError& e) {
    EXPECT_EQ(e.field(), "entities.e0.parent");
    EXPECT_NE(
        std::string(e.what()).find(
            "the chain of an entity matching 'user-*' would be deeper than max_parent_depth 2"),
        std::string::npos)
        << e.what();
  }
  Fixture f(parse_config(links, "t.yaml"), 2);
  try {
    apply_config(with_rule, f.limiter);
    FAIL();
  } catch (const ValidationError& e) {
    EXPECT_EQ(e.field(), "parent_rules[0].parent");
    EXPECT_EQ(e.value(), "e0");
    EXPECT_NE(std::string(e.what()).find("deeper than max_parent_depth 2 (t.yaml:6:31)"),
              std::string::npos)
        << e.what();
  }
  EXPECT_TRUE(f.limiter.parent_rules().empty());
}

// clang-format off
INSTANTIATE_TEST_SUITE_P(ParentRules, BadConfigTest, ::testing::Values(
  Bad{"parent_rules:\n  - {match: \"user-*\", parent: team-x}\n",
      "parent_rules[0].parent", "team-x", "parent is not declared under entities (add 'team-x: {}' there) (t.yaml:2:31)"},
  Bad{"default_parent: team-x\n",
      "default_parent", "team-x", "parent is not declared under entities (add 'team-x: {}' there) (t.yaml:1:17)"},
  Bad{"default_parent: a b\n",
      "default_parent", "a b", "printable ASCII"},
  Bad{"parent_rules: {match: x}\n",
      "parent_rules", "{...}", "expected a list of {match, parent}"},
  Bad{"parent_rules:\n  - {match: \"a b\", parent: p}\nentities:\n  p: {}\n",
      "parent_rules[0].match", "a b", "printable ASCII"},
  Bad{"parent_rules:\n  - {match: 'a\\', parent: p}\nentities:\n  p: {}\n",
      "parent_rules[0].match", "a\\", "incomplete escape"},
  Bad{"parent_rules:\n  - {parent: p}\nentities:\n  p: {}\n",
      "parent_rules[0].match", "", "missing"},
  Bad{"parent_rules:\n  - {match: x}\n",
      "parent_rules[0].parent", "", "missing"},
  Bad{"parent_rules:\n  - {match: x, parent: p, to: y}\nentities:\n  p: {}\n",
      "parent_rules[0].to", "to", "unknown key (expected match and parent)"},
  Bad{"parent_rules:\n  - {match: p, parent: p}\nentities:\n  p: {}\n",
      "parent_rules[0].match", "p", "would make p its own parent (t.yaml:2:13)"},
  Bad{"parent_rules:\n  - {match: x, parent: \"a b\"}\n",
      "parent_rules[0].parent", "a b", "printable ASCII"}));
// clang-format on

TEST(ConfigTest, SeveralNamespaces) {
  const Config c = parse_config(R"(store: memory
namespaces:
  team-a:
    resources:
      m: [{name: rpm, per: minute, limit: 5}]
    entities:
      u: {parent: p}
      p: {}
  team-b:
    defaults: [{name: rpm, per: minute, limit: 7}]
    default_parent: q
    entities:
      q: {}
)",
                                "t.yaml");
  ASSERT_EQ(c.namespaces().size(), 2u);
  EXPECT_EQ(c.ns, "team-a");  // the first is the Config itself
  EXPECT_EQ(c.resources.size(), 1u);
  EXPECT_EQ(c.entities.size(), 2u);
  ASSERT_EQ(c.more.size(), 1u);
  EXPECT_EQ(c.more[0].ns, "team-b");
  EXPECT_EQ(c.more[0].defaults, (LimitList{Limit::per_minute("rpm", 7)}));
  ASSERT_EQ(c.more[0].parent_rules.size(), 1u);
  EXPECT_EQ(c.more[0].parent_rules[0].path, "namespaces.team-b.default_parent");

  // Each namespace applies to a Limiter of its own; one store holds both, apart.
  MemoryStore store;
  ManualClock clock;
  Limiter a(store, clock, Fixture::options("team-a", 8));
  Limiter b(store, clock, Fixture::options("team-b", 8));
  apply_config(*c.namespaces()[0], a);
  apply_config(*c.namespaces()[1], b);
  EXPECT_EQ(a.resources(), std::vector<std::string>{"m"});
  EXPECT_TRUE(b.resources().empty());
  EXPECT_EQ(resolve_limits(c.more[0], "x", "m"), (LimitList{Limit::per_minute("rpm", 7)}));
  EXPECT_THROW(apply_config(*c.namespaces()[1], a), ValidationError);  // namespace mismatch
}

// Verifies the adaptive form: its AIMD options, its burst, and that format_state_file writes
// it back in a form that reads back the same.
TEST(ConfigTest, AdaptiveLimits) {
  const Config c = parse_config(R"(resources:
  m:
    - {name: pace, adaptive: {max_rate: 50, initial_rate: 5, min_rate: 0.5, additive_increase: 2, multiplicative_decrease: 0.7, slow_start_threshold: 20}, burst: 3}
    - {name: slow, adaptive: {max_rate: 10}}
)",
                                "t.yaml");
  AimdOptions o;
  o.max_rate = 50;
  o.initial_rate = 5;
  o.min_rate = 0.5;
  o.additive_increase = 2;
  o.multiplicative_decrease = 0.7;
  o.slow_start_threshold = 20;
  AimdOptions slow;
  slow.max_rate = 10;
  const LimitList want{Limit::adaptive("pace", o, 3), Limit::adaptive("slow", slow)};
  ASSERT_EQ(c.resources.size(), 1u);
  EXPECT_EQ(c.resources[0].second, want);
  EXPECT_EQ(parse_state_file(format_state_file(c), "again.yaml").resources[0].second, want);
  Fixture f(c);
  EXPECT_EQ(limits_of(f.limiter, "", "m", ConfigSource::resource), want);
}

// clang-format off
INSTANTIATE_TEST_SUITE_P(Adaptive, BadConfigTest, ::testing::Values(
  Bad{"resources:\n  m:\n    - {name: p, adaptive: {initial_rate: 1}}\n",
      "resources.m[0].adaptive.max_rate", "", "missing (the rate's upper bound)"},
  Bad{"resources:\n  m:\n    - {name: p, adaptive: {max_rate: \"5\"}}\n",
      "resources.m[0].adaptive.max_rate", "5", "a quoted string where a number belongs"},
  Bad{"resources:\n  m:\n    - {name: p, adaptive: {max_rate: -5}}\n",
      "resources.m[0].adaptive.max_rate", "-5", "expected a non-negative number"},
  Bad{"resources:\n  m:\n    - {name: p, adaptive: {max_rate: 5, min_rate: 9}}\n",
      "resources.m[0].adaptive.min_rate", "9", "must be <= max_rate"},
  Bad{"resources:\n  m:\n    - {name: p, adaptive: {max_rate: 5, multiplicative_decrease: 1.5}}\n",
      "resources.m[0].adaptive.multiplicative_decrease", "1.5", "(0, 1)"},
  Bad{"resources:\n  m:\n    - {name: p, adaptive: {max_rate: 5, speed: 2}}\n",
      "resources.m[0].adaptive.speed", "speed", "unknown key (expected max_rate"},
  Bad{"resources:\n  m:\n    - {name: p, adaptive: {max_rate: 5}, burst: 0}\n",
      "resources.m[0].burst", "0", "must be within 1..1000000"},
  Bad{"resources:\n  m:\n    - {name: p, adaptive: {max_rate: 5}, limit: 3}\n",
      "resources.m[0].limit", "limit", "not allowed with 'adaptive'"},
  Bad{"resources:\n  m:\n    - {name: p, adaptive: 5}\n",
      "resources.m[0].adaptive", "5", "expected a mapping"}));
// clang-format on

TEST(ConfigTest, ProfilesBecomeResources) {
  const Config c = parse_config(R"(profiles:
  - {provider: openai, tier: tier-1}
resources:
  gpt-4o: [{name: rpm, per: minute, limit: 3}]
  mine: [{name: rpm, per: minute, limit: 1}]
)",
                                "t.yaml");
  const ProviderProfile p = load_profile_by_name("openai", "tier-1");
  ASSERT_FALSE(p.models.empty());
  ASSERT_EQ(c.profiles.size(), 1u);
  // Every model of the profile, then the file's own resources; gpt-4o is the file's.
  EXPECT_EQ(c.resources.size(), p.models.size() + 1);
  EXPECT_EQ(resolve_limits(c, "", "gpt-4o"), (LimitList{Limit::per_minute("rpm", 3)}));
  EXPECT_EQ(resolve_limits(c, "", "mine"), (LimitList{Limit::per_minute("rpm", 1)}));
  const auto& mini = p.models.at("gpt-4o-mini");
  EXPECT_EQ(resolve_limits(c, "", "gpt-4o-mini"),
            to_limits(mini, p.day_time_zone, ZeroQuota::unlimited));
  EXPECT_EQ(resolve_limits(c, "", "gpt-4o-mini").front(),
            Limit::per_minute("rpm", mini.rpm, mini.rpm));
  Fixture f(c);
  EXPECT_EQ(f.limiter.resources().size(), p.models.size() + 1);

  // A model in two profiles must be chosen under resources.
  EXPECT_THROW((void)parse_config("profiles:\n  - {provider: openai, tier: tier-1}\n"
                                  "  - {provider: openai, tier: tier-2}\n",
                                  "t.yaml"),
               ValidationError);
}

// clang-format off
INSTANTIATE_TEST_SUITE_P(Namespaces, BadConfigTest, ::testing::Values(
  Bad{"namespace: a\nnamespaces:\n  b: {}\n",
      "namespace", "namespace", "a namespace's key at the top level of a file with 'namespaces' (move it under namespaces.<name>) (t.yaml:1:1)"},
  Bad{"namespaces:\n  b:\n    store: memory\n",
      "namespaces.b.store", "store", "unknown key (expected defaults, resources, profiles, entities, parent_rules or default_parent) (t.yaml:3:5)"},
  Bad{"namespaces:\n  b:\n    entities:\n      u: {parent: p}\n",
      "namespaces.b.entities.u.parent", "p", "parent is not declared under entities"},
  Bad{"namespaces:\n  b:\n    resources:\n      m: [{name: rpm, per: minute, limit: \"5\"}]\n",
      "namespaces.b.resources.m[0].limit", "5", "a quoted string where a number belongs"},
  Bad{"namespaces:\n  \"a b\": {}\n",
      "namespaces.a b", "a b", "printable ASCII"},
  Bad{"namespaces: {}\n",
      "namespaces", "{...}", "expected at least one namespace"},
  Bad{"profiles:\n  - {provider: openai, tier: tier-9}\n",
      "profiles[0].tier", "tier-9", "tier-1"},
  Bad{"profiles:\n  - {provider: nobody, tier: tier-1}\n",
      "profiles[0].provider", "nobody", "openai"},
  Bad{"profiles:\n  - {provider: openai}\n",
      "profiles[0].tier", "", "missing"},
  Bad{"profiles:\n  - {provider: openai, tier: tier-1, region: eu}\n",
      "profiles[0].region", "region", "unknown key (expected provider and tier)"},
  Bad{"profiles: {provider: openai}\n",
      "profiles", "{...}", "expected a list of {provider, tier}"}));
// clang-format on

}  // namespace
}  // namespace admit::service

namespace admit::service {
namespace {

// The message of the ValidationError parse_config throws for `yaml` ("" if it parses).
std::string refusal(const std::string& yaml) {
  try {
    (void)parse_config(yaml, "g.yaml");
  } catch (const ValidationError& e) {
    return e.what();
  }
  return "";
}

TEST(ConfigTest, GatewaySection) {
  EXPECT_FALSE(parse_config("namespace: a\n", "t.yaml").gateway.enabled);
  ::setenv("ADMIT_TEST_UPSTREAM_KEY", "sk-upstream", 1);
  const Config c = parse_config(R"(gateway:
  deadline_ms: 5000
  default_max_tokens: 256
  callers:
    - {key: alice-key-0123456789, entity: alice}
  upstreams:
    - name: openai
      base_url: https://api.openai.com/v1
      api_key: ${ADMIT_TEST_UPSTREAM_KEY}
      dialect: openai
      models: [gpt-4o, gpt-4o-mini]
      max_concurrent: 8
    - {name: local, base_url: "http://127.0.0.1:9000"}
)",
                                "t.yaml");
  const GatewayConfig& g = c.gateway;
  EXPECT_TRUE(g.enabled);
  EXPECT_EQ(g.deadline, std::chrono::milliseconds(5000));
  EXPECT_EQ(g.default_max_tokens, 256);
  ASSERT_EQ(g.callers.size(), 1u);
  EXPECT_EQ(g.callers[0].entity, "alice");
  ASSERT_EQ(g.upstreams.size(), 2u);
  EXPECT_EQ(g.upstreams[0].api_key, "sk-upstream");
  EXPECT_EQ(g.upstreams[0].models, (std::vector<std::string>{"gpt-4o", "gpt-4o-mini"}));
  EXPECT_EQ(g.upstreams[0].max_concurrent, 8u);
  EXPECT_TRUE(g.upstreams[1].models.empty());

  const std::string up = "  upstreams: [{name: u, base_url: \"http://127.0.0.1:9000/v1\"}]\n";
  EXPECT_NE(refusal("gateway: {}\n").find("gateway.upstreams"), std::string::npos);
  EXPECT_NE(refusal("gateway:\n  upstreams: [{name: u, base_url: \"ftp://x\"}]\n")
                .find("gateway.upstreams[0].base_url"),
            std::string::npos);
  EXPECT_NE(refusal("gateway:\n  upstreams: [{base_url: \"http://x\"}]\n").find(".name"),
            std::string::npos);
  EXPECT_NE(refusal("gateway:\n  upstreams: [{name: u, base_url: \"http://x\", dialect: nope}]\n")
                .find("dialect"),
            std::string::npos);
  EXPECT_NE(refusal("gateway:\n  callers: [{key: short, entity: a}]\n" + up).find("16"),
            std::string::npos);
  EXPECT_NE(refusal("gateway:\n  callers: [{key: k-0123456789abcdef, entity: a},\n"
                    "            {key: k-0123456789abcdef, entity: b}]\n" +
                    up)
                .find("the same key twice"),
            std::string::npos);
  EXPECT_NE(refusal("gateway:\n  deadline_ms: \"100\"\n" + up).find("unquoted"), std::string::npos);
  EXPECT_NE(refusal("gateway:\n  bogus: 1\n" + up).find("unknown key"), std::string::npos);
  EXPECT_NE(refusal("gateway:\n  upstreams:\n    - {name: u, base_url: \"http://x\"}\n"
                    "    - {name: u, base_url: \"http://y\"}\n")
                .find("two upstreams"),
            std::string::npos);
  EXPECT_NE(refusal("gateway:\n  bogus: 1\n" + up).find("g.yaml:2"), std::string::npos);
}

}  // namespace
}  // namespace admit::service
