// Tests of admitd's HTTP API without the network (src/service/api.cpp), on a ManualClock so
// that rate limits are exact.
#include "service/api.hpp"

#include <gtest/gtest.h>

#include <boost/json.hpp>
#include <limits>
#include <random>
#include <string>

#include "admit/core/clock.hpp"
#include "admit/limiter.hpp"
#include "admit/store/memory_store.hpp"
#include "admit/tokens.hpp"
#include "service/config.hpp"

namespace admit::service {
namespace {

namespace json = boost::json;

class ApiTest : public ::testing::Test {
 protected:
  ApiTest() {
    apply_config(load_config(std::string(ADMIT_SOURCE_DIR) + "/config/sample.yaml"), limiter);
  }

  json::object call(std::string_view method, std::string_view target, std::string_view body,
                    unsigned expected_status) {
    last = api.handle(method, target, body);
    EXPECT_EQ(last.status, expected_status) << method << " " << target << " " << body << "\n"
                                            << last.body;
    boost::system::error_code ec;
    json::value v = json::parse(last.body, ec);
    EXPECT_FALSE(ec) << last.body;
    return v.is_object() ? v.as_object() : json::object{};
  }

  MemoryStore store;
  ManualClock clock;
  Limiter limiter{store, clock};
  Api api{limiter};
  Response last;
};

constexpr std::string_view kOne = R"({"entity":"load","resource":"gpt-4o","amounts":{"rpm":1}})";

// decision_json writes the JSON directly; it reads byte for byte as the json::object it
// replaced, serialised by Boost.JSON (same members, order and escaping).
TEST(DecisionJsonTest, SameBytesAsBoostJson) {
  auto violations = [](const std::vector<Violation>& list) {
    json::array a;
    for (const Violation& v : list) {
      a.push_back(json::object{{"entity", v.entity},
                               {"limit", v.limit},
                               {"kind", to_string(v.kind)},
                               {"requested", v.requested},
                               {"available", v.available},
                               {"retry_after_us", v.retry_after}});
    }
    return a;
  };
  auto reference = [&](const Decision& d) {
    json::object o;
    o["allowed"] = d.allowed;
    o["code"] = to_string(d.code);
    o["reason"] = d.reason;
    o["retry_after_us"] = d.retry_after;
    o["retry_after_s"] = d.retry_after_header();
    o["violations"] = violations(d.violations);
    if (!d.shadow_violations.empty()) o["shadow_violations"] = violations(d.shadow_violations);
    json::array stats;
    for (const LimitStatus& s : d.stats) {
      json::object st{{"entity", s.entity},
                      {"limit", s.limit},
                      {"kind", to_string(s.kind)},
                      {"source", to_string(s.source)},
                      {"capacity", s.capacity},
                      {"available", s.available},
                      {"reset_after_us", s.reset_after}};
      if (s.shadow) st["shadow"] = true;
      stats.push_back(std::move(st));
    }
    o["stats"] = std::move(stats);
    return json::serialize(o);
  };
  Decision allowed;
  allowed.allowed = true;
  allowed.code = Code::ok;
  EXPECT_EQ(decision_json(allowed), reference(allowed));
  allowed.stats.push_back(LimitStatus{"user-1", "rpm", LimitKind::rate, ConfigSource::resource, 100,
                                      99, 600000, 0, 60000000, false});
  EXPECT_EQ(decision_json(allowed), reference(allowed));

  Decision denied;
  denied.allowed = false;
  denied.code = Code::rate_exceeded;
  denied.reason = "a \"quoted\" reason\nwith \\ and \x01 and caf\xc3\xa9";
  denied.retry_after = 1500000;
  denied.violations.push_back(Violation{"team\"x", "tpm", LimitKind::rate, 5000, 12, 1500000});
  denied.violations.push_back(Violation{"user-1", "slots", LimitKind::concurrency, 1, 0, 0});
  denied.shadow_violations.push_back(Violation{"user-1", "rpd", LimitKind::window, 1, 0, -7});
  denied.stats.push_back(LimitStatus{"user-1", "rpm", LimitKind::rate, ConfigSource::entity, 10, 0,
                                     6000000, 0, 60000000, false});
  denied.stats.push_back(LimitStatus{"team\tx", "rpd", LimitKind::window, ConfigSource::system, -1,
                                     std::numeric_limits<std::int64_t>::max(), 0, 0, 0, true});
  EXPECT_EQ(decision_json(denied), reference(denied));
  // Still one valid JSON object.
  EXPECT_EQ(json::parse(decision_json(denied)).at("stats").as_array().size(), 2u);
}

TEST_F(ApiTest, Healthz) {
  EXPECT_EQ(call("GET", "/healthz", "", 200), (json::object{{"status", "ok"}}));
  EXPECT_EQ(call("GET", "/healthz?probe=1", "", 200), (json::object{{"status", "ok"}}));
}

TEST_F(ApiTest, RoutesAndMethods) {
  call("GET", "/", "", 404);
  call("GET", "/v1/decide/", "", 404);
  // The path is quoted as valid UTF-8 whatever its bytes (serialized as they are otherwise).
  const json::object o = call("GET", std::string("/\xff\0x", 4), "", 404);
  EXPECT_EQ(o.at("error").as_string(), "no route /\\xff\\x00x");
  call("GET", "/v1/acquire", "", 405);
  EXPECT_EQ(last.allow, "POST");
  call("POST", "/v1/limits", "{}", 405);
  EXPECT_EQ(last.allow, "GET");
}

TEST_F(ApiTest, DecideReturnsTheDecision) {
  const json::object o =
      call("POST", "/v1/decide",
           R"({"entity":"user-1","resource":"gpt-4o","amounts":{"rpm":1,"tpm":1200}})", 200);
  EXPECT_EQ(o.at("allowed"), true);
  EXPECT_EQ(o.at("code"), "ok");
  EXPECT_EQ(o.at("retry_after_us"), 0);
  EXPECT_EQ(o.at("retry_after_s"), 0);
  EXPECT_TRUE(o.at("violations").as_array().empty());
  // Every limit the request names, of user-1 (resource level) and of its parent team-a.
  const json::array& stats = o.at("stats").as_array();
  auto find = [&](std::string_view entity, std::string_view limit) -> json::object {
    for (const json::value& v : stats) {
      const json::object& s = v.as_object();
      if (s.at("entity").as_string() == entity && s.at("limit").as_string() == limit) return s;
    }
    ADD_FAILURE() << "no stats for " << entity << "/" << limit << " in " << o;
    return {};
  };
  EXPECT_EQ(find("user-1", "rpm").at("available"), 500);
  EXPECT_EQ(find("user-1", "tpm").at("capacity"), 30000);
  EXPECT_EQ(find("user-1", "tpm").at("source"), "resource");
  EXPECT_EQ(find("team-a", "rpm").at("capacity"), 1000);
  EXPECT_EQ(find("team-a", "tpm").at("source"), "entity");
  // A dry run consumes nothing.
  call("POST", "/v1/decide", kOne, 200);
  EXPECT_EQ(limiter.stats("user-1", "gpt-4o").limits[0].available, 500);
}

// The sample's gpt-4o allows 500 rpm: 500 acquires pass, the 501st gets 429 + Retry-After.
TEST_F(ApiTest, AcquireExhaustsRpm500) {
  // Without a lease (each would hold one of the 50 concurrent slots until it ends).
  const std::string one =
      R"({"entity":"load","resource":"gpt-4o","amounts":{"rpm":1},"lease":false})";
  for (int i = 0; i < 500; ++i) {
    const json::object o = call("POST", "/v1/acquire", one, 200);
    ASSERT_EQ(o.at("allowed"), true) << i;
    ASSERT_EQ(last.retry_after, -1);
  }
  const json::object o = call("POST", "/v1/acquire", kOne, 429);
  EXPECT_EQ(o.at("allowed"), false);
  EXPECT_EQ(o.at("code"), "rate_exceeded");
  EXPECT_EQ(o.at("retry_after_us"), 120'000);  // one request per 60 s / 500
  EXPECT_EQ(o.at("retry_after_s"), 1);
  EXPECT_EQ(last.retry_after, 1);
  const json::object& v = o.at("violations").as_array().at(0).as_object();
  EXPECT_EQ(v.at("limit"), "rpm");
  EXPECT_EQ(v.at("kind"), "rate");
  EXPECT_EQ(v.at("requested"), 1);
  EXPECT_EQ(v.at("available"), 0);

  clock.advance(119'999);
  call("POST", "/v1/acquire", kOne, 429);
  clock.advance(1);
  call("POST", "/v1/acquire", kOne, 200);
}

TEST_F(ApiTest, AcquireStatuses) {
  // Can never fit: 422, no Retry-After.
  json::object o = call("POST", "/v1/acquire",
                        R"({"entity":"u","resource":"gpt-4o","amounts":{"tpm":30001}})", 422);
  EXPECT_EQ(o.at("code"), "exceeds_capacity");
  EXPECT_EQ(o.at("retry_after_s"), 0);
  EXPECT_EQ(last.retry_after, -1);
  // Unknown limit: 400 with the decision; decide answers 200.
  o = call("POST", "/v1/acquire", R"({"entity":"u","resource":"gpt-4o","amounts":{"tokens":1}})",
           400);
  EXPECT_EQ(o.at("code"), "unknown_limit");
  o = call("POST", "/v1/decide", R"({"entity":"u","resource":"gpt-4o","amounts":{"tokens":1}})",
           200);
  EXPECT_EQ(o.at("code"), "unknown_limit");
  EXPECT_EQ(o.at("retry_after_s"), 0);
  // timeout_ms 0 is try_acquire.
  call("POST", "/v1/acquire",
       R"({"entity":"u","resource":"gpt-4o","amounts":{"rpm":1},"timeout_ms":0})", 200);
}

TEST_F(ApiTest, BadRequestsName400Field) {
  struct Case {
    std::string_view body;
    std::string_view field;
  };
  const Case cases[] = {
      {"", "body"},
      {"{", "body"},
      {"[]", "body"},
      {"null", "body"},
      {R"({"resource":"m","amounts":{}})", "entity"},
      {R"({"entity":"u","amounts":{}})", "resource"},
      {R"({"entity":"u","resource":"m"})", "amounts"},
      {R"({"entity":1,"resource":"m","amounts":{}})", "entity"},
      {R"({"entity":"","resource":"m","amounts":{}})", "entity"},
      {R"({"entity":"u","resource":"a b","amounts":{}})", "resource"},
      {R"({"entity":"u","resource":"m","amounts":[]})", "amounts"},
      {R"({"entity":"u","resource":"m","amounts":{"rpm":1.5}})", "amounts.rpm"},
      {R"({"entity":"u","resource":"m","amounts":{"rpm":-1}})", "amounts.rpm"},
      {R"({"entity":"u","resource":"m","amounts":{"rpm":18446744073709551615}})", "amounts.rpm"},
      {R"({"entity":"u","resource":"m","amounts":{"rpm":true}})", "amounts.rpm"},
      {R"({"entity":"u","resource":"m","amounts":{},"extra":1})", "extra"},
      {R"({"entity":"u","resource":"m","amounts":{},"timeout_ms":0})", "timeout_ms"},
      {R"({"entity":"u","resource":"m","amounts":{},"namespace":7})", "namespace"},
  };
  for (const Case& c : cases) {
    const json::object o = call("POST", "/v1/decide", c.body, 400);
    EXPECT_EQ(o.at("field").as_string(), c.field) << c.body;
    EXPECT_TRUE(o.at("error").is_string());
  }
  for (const char* body : {R"({"entity":"u","resource":"m","amounts":{},"timeout_ms":-1})",
                           R"({"entity":"u","resource":"m","amounts":{},"timeout_ms":300001})",
                           R"({"entity":"u","resource":"m","amounts":{},"ttl_ms":0})",
                           R"({"entity":"u","resource":"m","amounts":{},"lease":1})"}) {
    const json::object o = call("POST", "/v1/acquire", body, 400);
    EXPECT_TRUE(o.at("field") == "timeout_ms" || o.at("field") == "ttl_ms" ||
                o.at("field") == "lease")
        << body;
  }
  // The namespace a body names must be the one served (auth.hpp checks tokens against it).
  const json::object o =
      call("POST", "/v1/decide",
           R"({"entity":"u","resource":"m","amounts":{},"namespace":"other"})", 404);
  EXPECT_EQ(o.at("code"), "unknown_namespace");
  (void)call("POST", "/v1/decide",
             R"({"entity":"u","resource":"m","amounts":{},"namespace":"default"})", 200);
}

// One Api serving two namespaces on one store: a request names its namespace (body or
// query), and nothing of one namespace is reachable from the other, crafted lease ids included.
TEST(ApiNamespacesTest, NamespacesAreApart) {
  MemoryStore store;
  ManualClock clock;
  LimiterOptions oa;
  oa.ns = "team-a";
  LimiterOptions ob;
  ob.ns = "team-b";
  Limiter a(store, clock, oa);
  Limiter b(store, clock, ob);
  a.set_limits("m", {Limit::concurrency("slots", 1)});
  b.set_limits("m", {Limit::concurrency("slots", 1)});
  Api api(std::vector<Limiter*>{&a, &b});
  auto call = [&](std::string_view method, std::string_view target, std::string_view body,
                  unsigned status) {
    const Response r = api.handle(method, target, body);
    EXPECT_EQ(r.status, status) << method << " " << target << " " << body << "\n" << r.body;
    return json::parse(r.body).as_object();
  };
  constexpr std::string_view kA = R"({"entity":"u","resource":"m","amounts":{"slots":1}})";
  constexpr std::string_view kB =
      R"({"entity":"u","resource":"m","amounts":{"slots":1},"namespace":"team-b"})";
  // The first namespace serves requests that name none; each namespace has its own slot.
  const std::string in_a(call("POST", "/v1/acquire", kA, 200).at("lease").at("id").as_string());
  (void)call("POST", "/v1/acquire", kA, 429);
  const std::string in_b(call("POST", "/v1/acquire", kB, 200).at("lease").at("id").as_string());
  (void)call("POST", "/v1/acquire", kB, 429);
  (void)call("POST", "/v1/acquire?namespace=team-b", kA, 429);

  // A lease id of one namespace is unknown in the other, whatever way the namespace is named.
  EXPECT_EQ(call("GET", "/v1/leases/" + in_a + "?namespace=team-b", "", 404).at("code"),
            "lease_not_found");
  EXPECT_EQ(
      call("POST", "/v1/leases/" + in_a + "/commit", R"({"namespace":"team-b"})", 404).at("code"),
      "lease_not_found");
  EXPECT_EQ(call("POST", "/v1/leases/" + in_b + "/rollback", "", 404).at("code"),
            "lease_not_found");
  EXPECT_EQ(
      call("POST", "/v1/leases/" + in_b + "/adjust", R"({"amounts":{"slots":-1}})", 404).at("code"),
      "lease_not_found");
  // Crafted ids: the same group with other ids, in either namespace.
  const std::string group = in_a.substr(in_a.find('.'));
  EXPECT_EQ(group, in_b.substr(in_b.find('.')));  // same entity and resource: same group
  for (const std::string id : {"0000000000000001", "ffffffffffffffff", "0123456789abcdef"}) {
    for (const std::string_view ns : {"", "?namespace=team-b"}) {
      EXPECT_EQ(call("POST", "/v1/leases/" + id + group + "/commit" + std::string(ns), "", 404)
                    .at("code"),
                "lease_not_found");
    }
  }
  (void)call("GET", "/v1/leases/" + in_a, "", 200);
  (void)call("GET", "/v1/leases/" + in_b + "?namespace=team-b", "", 200);

  // Limits, stats and the unknown namespace.
  EXPECT_EQ(call("GET", "/v1/limits?namespace=team-b", "", 200).at("namespace"), "team-b");
  EXPECT_EQ(call("GET", "/v1/limits", "", 200).at("namespace"), "team-a");
  EXPECT_EQ(
      call(
          "PUT", "/v1/limits/resources/n",
          R"({"namespace":"team-b","limits":[{"name":"rpm","kind":"rate","capacity":1,"refill_amount":1,"refill_period_us":60000000}]})",
          200)
          .at("resource"),
      "n");
  EXPECT_EQ(b.resources(), (std::vector<std::string>{"m", "n"}));
  EXPECT_EQ(a.resources(), (std::vector<std::string>{"m"}));
  EXPECT_EQ(call("GET", "/v1/limits?namespace=nope", "", 404).at("code"), "unknown_namespace");
  EXPECT_EQ(call("POST", "/v1/decide?namespace=team-a", kB, 400).at("code"), "invalid_request");

  // The ends: once each, in the lease's own namespace.
  (void)call("POST", "/v1/leases/" + in_b + "/commit?namespace=team-b", "", 200);
  (void)call("POST", "/v1/leases/" + in_a + "/commit", "", 200);
  (void)call("POST", "/v1/acquire", kA, 200);
  (void)call("POST", "/v1/acquire", kB, 200);
}

// Every change through the API lands in the store's audit log with its principal, before and
// after; GET /v1/audit reads it back, filtered and paged.
TEST_F(ApiTest, ChangesAreAudited) {
  (void)call(
      "PUT", "/v1/limits/resources/gpt-4o",
      R"({"limits":[{"name":"rpm","kind":"rate","capacity":600,"refill_amount":600,"refill_period_us":60000000}]})",
      200);
  (void)call("DELETE", "/v1/limits/resources/claude-sonnet-4", "", 200);
  (void)call("PUT", "/v1/limits/parents/dyn-1", R"({"parent":"team-a"})", 200);
  (void)call("DELETE", "/v1/limits/parents/dyn-1", "", 200);
  (void)call("PUT", "/v1/limits/entities/dyn-2", R"({"limits":[]})", 200);
  const Response r = api.handle("GET", "/v1/audit", "");
  ASSERT_EQ(r.status, 200u) << r.body;
  const json::object o = json::parse(r.body).as_object();
  EXPECT_EQ(o.at("namespace"), "default");
  const json::array& ev = o.at("events").as_array();
  ASSERT_EQ(ev.size(), 5u) << r.body;
  const json::object& set = ev[0].as_object();
  EXPECT_EQ(set.at("id"), 1);
  EXPECT_EQ(set.at("principal"), "anonymous");
  EXPECT_EQ(set.at("action"), "limits_set");
  EXPECT_EQ(set.at("resource"), "gpt-4o");
  EXPECT_EQ(set.at("before").as_array().size(), 4u);  // the sample's four gpt-4o limits
  EXPECT_EQ(set.at("after").as_array().at(0).as_object().at("capacity"), 600);
  const json::object& del = ev[1].as_object();
  EXPECT_EQ(del.at("action"), "limits_deleted");
  EXPECT_EQ(del.at("before").as_array().size(), 2u);
  EXPECT_TRUE(del.at("after").is_null());
  EXPECT_EQ(ev[2].as_object().at("action"), "parent_set");
  EXPECT_TRUE(ev[2].as_object().at("before").is_null());
  EXPECT_EQ(ev[2].as_object().at("after"), "team-a");
  EXPECT_EQ(ev[3].as_object().at("action"), "parent_deleted");
  EXPECT_EQ(ev[3].as_object().at("before"), "team-a");
  EXPECT_EQ(ev[4].as_object().at("entity"), "dyn-2");
  EXPECT_TRUE(ev[4].as_object().at("before").is_array());  // none of its own: []

  // Filters and paging.
  const auto events = [&](std::string_view target) {
    const Response res = api.handle("GET", target, "");
    EXPECT_EQ(res.status, 200u) << target << " " << res.body;
    return json::parse(res.body).as_object().at("events").as_array();
  };
  EXPECT_EQ(events("/v1/audit?entity=dyn-1").size(), 2u);
  EXPECT_EQ(events("/v1/audit?resource=gpt-4o").size(), 1u);
  const json::array newest = events("/v1/audit?order=newest&limit=2");
  ASSERT_EQ(newest.size(), 2u);
  EXPECT_EQ(newest[0].as_object().at("id"), 5);
  EXPECT_EQ(events("/v1/audit?after_id=3").size(), 2u);
  EXPECT_EQ(events("/v1/audit?order=newest&before_id=2").size(), 1u);
  for (const std::string_view bad :
       {"/v1/audit?limit=0", "/v1/audit?limit=1001", "/v1/audit?after_id=-1",
        "/v1/audit?after_id=x", "/v1/audit?order=sideways", "/v1/audit?entity=a%20b"}) {
    EXPECT_EQ(api.handle("GET", bad, "").status, 400u) << bad;
  }
  // A principal passed by the HTTP layer (a token's name) is who.
  unsigned status = 0;
  api.handle(
      "DELETE", "/v1/limits/entities/dyn-2", "", [&](Response res) { status = res.status; },
      "ops-team");
  EXPECT_EQ(status, 200u);  // a synchronous route answers inside handle()
  const json::array after = events("/v1/audit?order=newest&limit=1");
  EXPECT_EQ(after[0].as_object().at("principal"), "ops-team");
}

// POST /v1/tokens counts as the library does (whose counts are checked against js-tiktoken).
TEST_F(ApiTest, TokensCountsTextAndMessages) {
  json::object o = call("POST", "/v1/tokens", R"({"model":"gpt-4o","text":"hello world"})", 200);
  EXPECT_EQ(o.at("tokens"),
            static_cast<std::int64_t>(count_tokens("hello world", Encoding::o200k_base)));
  EXPECT_EQ(o.at("encoding"), "o200k_base");
  EXPECT_EQ(o.at("estimate"), false);
  o = call(
      "POST", "/v1/tokens",
      R"({"encoding":"cl100k_base","messages":[{"role":"system","content":"You are terse."},{"role":"user","content":"Hi","name":"bob"}]})",
      200);
  const ChatMessage chat[] = {{"system", "You are terse.", std::nullopt}, {"user", "Hi", "bob"}};
  EXPECT_EQ(o.at("tokens"),
            static_cast<std::int64_t>(count_chat_tokens(chat, Encoding::cl100k_base)));
  EXPECT_EQ(
      call("POST", "/v1/tokens", R"({"model":"no-such-model","text":"abc"})", 200).at("estimate"),
      true);
  for (const std::string_view bad :
       {R"({"text":"x"})", R"({"model":"gpt-4o"})",
        R"({"model":"gpt-4o","encoding":"o200k_base","text":"x"})",
        R"({"encoding":"p50k","text":"x"})", R"({"model":"gpt-4o","text":"x","messages":[]})",
        R"({"model":"gpt-4o","messages":[{"content":"x"}]})",
        R"({"model":"gpt-4o","messages":[{"role":"user","extra":1}]})",
        R"({"model":"gpt-4o","messages":"x"})", R"({"model":"","text":"x"})",
        R"({"model":7,"text":"x"})"}) {
    (void)call("POST", "/v1/tokens", bad, 400);
  }
}

TEST_F(ApiTest, LimitsListsResources) {
  const json::object o = call("GET", "/v1/limits", "", 200);
  EXPECT_EQ(o.at("namespace"), "default");
  const json::array& rs = o.at("resources").as_array();
  ASSERT_EQ(rs.size(), 2u);
  EXPECT_EQ(rs[1].as_object().at("resource"), "gpt-4o");
  const json::array& ls = rs[1].as_object().at("limits").as_array();
  ASSERT_EQ(ls.size(), 4u);
  EXPECT_EQ(ls[2].as_object().at("description"),
            "rpd: 10000 per day (resets 00:00 America/Los_Angeles)");
  EXPECT_EQ(ls[3].as_object().at("kind"), "concurrency");
}

// Verifies "shadow" over the HTTP API: PUT /v1/limits takes it and echoes it, the limit lists
// show it (only on shadow limits, as the stored form has it), and a request past a shadow limit
// is a 200 with shadow_violations (absent when there are none).
TEST_F(ApiTest, ShadowLimitsOverHttp) {
  const json::object put =
      call("PUT", "/v1/limits/resources/shadow-model",
           R"({"limits":[{"name":"rpm","kind":"rate","capacity":1,"refill_amount":1,)"
           R"("refill_period_us":60000000,"shadow":true},{"name":"tpm","kind":"rate",)"
           R"("capacity":100,"refill_amount":100,"refill_period_us":60000000}]})",
           200);
  const json::array& echo = put.at("limits").as_array();
  ASSERT_EQ(echo.size(), 2u);
  EXPECT_EQ(echo[0].as_object().at("shadow"), true);
  EXPECT_FALSE(echo[1].as_object().contains("shadow"));
  call("PUT", "/v1/limits/resources/bad",
       R"({"limits":[{"name":"c","kind":"concurrency",)"
       R"("capacity":1,"shadow":"yes"}]})",
       400);

  const json::object resolved =
      call("GET", "/v1/limits/resolve?entity=u&resource=shadow-model", "", 200);
  const json::array& ls = resolved.at("limits").as_array();
  ASSERT_EQ(ls.size(), 2u);
  EXPECT_EQ(ls[0].as_object().at("shadow"), true);
  EXPECT_EQ(ls[0].as_object().at("description"), "rpm: 1 per 1m (burst 1), shadow");
  EXPECT_FALSE(ls[1].as_object().contains("shadow"));

  const std::string body =
      R"({"entity":"u","resource":"shadow-model","amounts":{"rpm":1,"tpm":1},"lease":false})";
  EXPECT_FALSE(call("POST", "/v1/acquire", body, 200).contains("shadow_violations"));
  const json::object past = call("POST", "/v1/acquire", body, 200);
  EXPECT_EQ(past.at("allowed"), true);
  EXPECT_EQ(past.at("code"), "ok");
  EXPECT_TRUE(past.at("violations").as_array().empty());
  const json::array& sv = past.at("shadow_violations").as_array();
  ASSERT_EQ(sv.size(), 1u);
  EXPECT_EQ(sv[0].as_object().at("limit"), "rpm");
  EXPECT_EQ(sv[0].as_object().at("kind"), "rate");
  EXPECT_EQ(sv[0].as_object().at("available"), 0);
  EXPECT_EQ(sv[0].as_object().at("retry_after_us"), 60'000'000);
  EXPECT_EQ(last.retry_after, -1);  // no Retry-After on a 200
}

// Mutations of a valid body: every answer is 200 or 400 with a JSON body, never a crash.
TEST_F(ApiTest, SurvivesGarbage) {
  const std::string base =
      R"({"entity":"user-1","resource":"gpt-4o","amounts":{"rpm":1,"tpm":1200},"timeout_ms":0})";
  std::mt19937 rng(12345);
  for (int i = 0; i < 20000; ++i) {
    std::string b = base;
    const int edits = 1 + static_cast<int>(rng() % 4);
    for (int e = 0; e < edits; ++e) {
      const std::size_t pos = rng() % (b.size() + 1);
      const char c = static_cast<char>(rng() % 256);
      switch (rng() % 3) {
        case 0:
          b.insert(pos, 1, c);
          break;
        case 1:
          if (pos < b.size()) b.erase(pos, 1);
          break;
        default:
          if (pos < b.size()) b[pos] = c;
          break;
      }
    }
    const Response r = api.handle("POST", i % 2 == 0 ? "/v1/decide" : "/v1/acquire", b);
    ASSERT_TRUE(r.status == 200 || r.status == 400 || r.status == 429 || r.status == 422)
        << r.status << " " << b;
    boost::system::error_code ec;
    (void)json::parse(r.body, ec);
    ASSERT_FALSE(ec) << r.body;
    clock.advance(kMicrosPerSecond);
  }
}

}  // namespace
}  // namespace admit::service
