// read_call_body (service/api_impl.hpp): the direct reader of decide / record / acquire bodies
// must accept only what the strict path (parse_json_object, then the routes' field checks)
// accepts, with the same values, and decline everything else to it.
#include <gtest/gtest.h>

#include <boost/json.hpp>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "admit/core/limit.hpp"
#include "admit/core/time.hpp"
#include "service/api_impl.hpp"

namespace admit::service {
namespace {

namespace json = boost::json;

// What the strict path reads from `body` (acquire's fields when `acquire`), or nullopt where it
// refuses the body: the fields' types and ranges as read_call and acquire check them.
std::optional<CallBody> strict(const std::string& body, bool acquire, json::object& keep) {
  auto parsed = parse_json_object(body);
  if (std::holds_alternative<JsonError>(parsed)) return std::nullopt;
  keep = std::move(std::get<json::object>(parsed));
  CallBody out;
  bool e = false, r = false, a = false;
  auto valid_name = [](const json::value& v) -> const json::string* {
    const json::string* s = v.if_string();
    if (s == nullptr) return nullptr;
    try {
      validate_name("x", *s);
    } catch (const std::exception&) {
      return nullptr;
    }
    return s;
  };
  for (const auto& kv : keep) {
    const std::string_view k = kv.key();
    if (k == "entity" || k == "resource") {
      const json::string* s = valid_name(kv.value());
      if (s == nullptr) return std::nullopt;
      (k == "entity" ? out.entity : out.resource) = std::string_view(s->data(), s->size());
      (k == "entity" ? e : r) = true;
    } else if (k == "amounts") {
      const json::object* o = kv.value().if_object();
      if (o == nullptr || o->size() > 64) return std::nullopt;
      for (const auto& [name, amount] : *o) {
        if (valid_name(json::value(name)) == nullptr || !amount.is_int64() ||
            amount.get_int64() < 0 || amount.get_int64() > kMaxExact) {
          return std::nullopt;
        }
        out.amounts.add(name, amount.get_int64());
      }
      a = true;
    } else if (acquire && (k == "timeout_ms" || k == "ttl_ms")) {
      if (!kv.value().is_int64()) return std::nullopt;
      (k == "timeout_ms" ? out.timeout_ms : out.ttl_ms) = kv.value().get_int64();
    } else if (acquire && k == "lease") {
      if (!kv.value().is_bool()) return std::nullopt;
      out.lease = kv.value().get_bool();
    } else {
      return std::nullopt;  // "namespace" and unknown fields: not read_call_body's
    }
  }
  if (!e || !r || !a) return std::nullopt;
  return out;
}

void expect_same(const CallBody& fast, const CallBody& slow, const std::string& body) {
  EXPECT_EQ(fast.entity, slow.entity) << body;
  EXPECT_EQ(fast.resource, slow.resource) << body;
  ASSERT_EQ(fast.amounts.size(), slow.amounts.size()) << body;
  for (auto f = fast.amounts.begin(), s = slow.amounts.begin(); f != fast.amounts.end(); ++f, ++s) {
    EXPECT_EQ(f->name, s->name) << body;
    EXPECT_EQ(f->value, s->value) << body;
  }
  EXPECT_EQ(fast.timeout_ms, slow.timeout_ms) << body;
  EXPECT_EQ(fast.ttl_ms, slow.ttl_ms) << body;
  EXPECT_EQ(fast.lease, slow.lease) << body;
}

// Checks `body`: read_call_body accepts it only if the strict path does, with the same values.
// Returns whether it accepted it.
bool check(const std::string& body, bool acquire) {
  CallBody fast;
  const bool taken = read_call_body(body, acquire, fast);
  json::object keep;
  const std::optional<CallBody> slow = strict(body, acquire, keep);
  if (taken) {
    EXPECT_TRUE(slow.has_value()) << "read_call_body took a body the strict path refuses: " << body;
    if (slow) expect_same(fast, *slow, body);
  }
  return taken;
}

// Verifies the bodies clients send are read directly, with their values.
TEST(CallBody, ReadsTheUsualBodies) {
  for (
      const std::string body : {
          R"({"entity":"user-1","resource":"gpt-4o","amounts":{"rpm":1},"lease":false})",
          R"({"entity":"user-1","resource":"gpt-4o","amounts":{"rpm":1,"tpm":1200}})",
          R"( { "resource" : "r" , "amounts" : { } , "entity" : "e" } )",
          "{\n\t\"entity\": \"a/b:c@d\",\r\n \"resource\": \"x\", \"amounts\": {\"n\": 0}}\n",
          R"({"entity":"u","resource":"r","amounts":{"rpm":999999999999999}})",
          R"({"entity":"u","resource":"r","amounts":{"rpm":1},"timeout_ms":250,"ttl_ms":1000,"lease":true})",
      }) {
    const bool acquire_only =
        body.find("timeout_ms") != std::string::npos || body.find("lease") != std::string::npos;
    EXPECT_TRUE(check(body, true)) << body;
    if (!acquire_only) {
      EXPECT_TRUE(check(body, false)) << body;
    }
  }
  CallBody b;
  ASSERT_TRUE(read_call_body(
      R"({"entity":"user-1","resource":"gpt-4o","amounts":{"rpm":1,"tpm":1200},"ttl_ms":5})", true,
      b));
  EXPECT_EQ(b.entity, "user-1");
  EXPECT_EQ(b.resource, "gpt-4o");
  EXPECT_EQ(b.amounts.get("rpm"), 1);
  EXPECT_EQ(b.amounts.get("tpm"), 1200);
  EXPECT_EQ(b.ttl_ms, 5);
  EXPECT_FALSE(b.timeout_ms);
  EXPECT_FALSE(b.lease);
}

// Verifies everything outside the form goes to the strict path (which accepts or refuses it).
TEST(CallBody, DeclinesEverythingElse) {
  for (const std::string& body : std::vector<std::string>{
           std::string(),
           std::string("{}"),
           std::string(R"({"entity":"u","resource":"r"})"),                     // missing
           std::string(R"({"entity":"u\u0031","resource":"r","amounts":{}})"),  // escape
           std::string(R"({"entity":"u\"","resource":"r","amounts":{}})"),
           std::string(R"({"entity":"u u","resource":"r","amounts":{}})"),  // space
           std::string(R"({"entity":"","resource":"r","amounts":{}})"),     // empty
           std::string(R"({"entity":")") + std::string(129, 'x') +
               R"(","resource":"r","amounts":{}})",
           std::string("{\"entity\":\"\xc3\xa9\",\"resource\":\"r\",\"amounts\":{}}"),  // UTF-8
           std::string("{\"entity\":\"a\x01\",\"resource\":\"r\",\"amounts\":{}}"),     // control
           std::string(R"({"entity":"u","entity":"v","resource":"r","amounts":{}})"),   // duplicate
           std::string(R"({"entity":"u","resource":"r","amounts":{"a":1,"a":2}})"),
           std::string(R"({"entity":"u","resource":"r","amounts":{"a":01}})"),  // numbers
           std::string(R"({"entity":"u","resource":"r","amounts":{"a":-1}})"),
           std::string(R"({"entity":"u","resource":"r","amounts":{"a":-0}})"),
           std::string(R"({"entity":"u","resource":"r","amounts":{"a":1.0}})"),
           std::string(R"({"entity":"u","resource":"r","amounts":{"a":1e3}})"),
           std::string(R"({"entity":"u","resource":"r","amounts":{"a":1000000000000000}})"),
           std::string(R"({"entity":"u","resource":"r","amounts":{"a":)") + std::string(40, '9') +
               "}}",
           std::string(R"({"entity":"u","resource":"r","amounts":{"a":"1"}})"),
           std::string(R"({"entity":"u","resource":"r","amounts":{"a":true}})"),
           std::string(R"({"entity":"u","resource":"r","amounts":[1]})"),
           std::string(R"({"entity":1,"resource":"r","amounts":{}})"),
           std::string(R"({"entity":"u","resource":"r","amounts":{},"namespace":"n"})"),
           std::string(R"({"entity":"u","resource":"r","amounts":{},"extra":1})"),
           std::string(R"({"entity":"u","resource":"r","amounts":{},"lease":1})"),
           std::string(R"({"entity":"u","resource":"r","amounts":{},"lease":truex})"),
           std::string(R"({"entity":"u","resource":"r","amounts":{},"lease":null})"),
           std::string(R"({"entity":"u","resource":"r","amounts":{},"timeout_ms":-1})"),
           std::string(
               R"({"entity":"u","resource":"r","amounts":{},"timeout_ms":1,"timeout_ms":2})"),
           std::string(R"({"entity":"u","resource":"r","amounts":{},})"),   // trailing ,
           std::string(R"({"entity":"u","resource":"r","amounts":{}} x)"),  // trailing
           std::string(R"({"entity":"u","resource":"r","amounts":{}}{})"),
           std::string(R"({"entity":"u","resource":"r","amounts":{})"),  // unclosed
           std::string(R"({"entity":"u","resource":"r","amounts":{"a":1,}})"),
           std::string("\xef\xbb\xbf{\"entity\":\"u\",\"resource\":\"r\",\"amounts\":{}}"),  // BOM
       }) {
    CallBody b;
    EXPECT_FALSE(read_call_body(body, true, b)) << body;
  }
  // acquire's fields are not decide's or record's.
  CallBody b;
  EXPECT_FALSE(
      read_call_body(R"({"entity":"u","resource":"r","amounts":{},"lease":false})", false, b));
  std::string many = R"({"entity":"u","resource":"r","amounts":{)";
  for (int i = 0; i < 65; ++i) many += (i ? ",\"a" : "\"a") + std::to_string(i) + "\":1";
  many += "}}";
  EXPECT_FALSE(read_call_body(many, true, b));  // amounts_field takes at most 64
}

// Verifies, on many bodies mutated from valid ones (bytes replaced, inserted, removed), that
// whatever read_call_body accepts the strict path accepts with the same values.
TEST(CallBody, MutationsAgreeWithTheStrictPath) {
  const std::vector<std::string> seeds = {
      R"({"entity":"user-1","resource":"gpt-4o","amounts":{"rpm":1},"lease":false})",
      R"({ "entity": "a", "resource": "b", "amounts": {"x": 12, "y": 0}, "ttl_ms": 30, "timeout_ms": 0 })",
  };
  const std::string alphabet = R"({}[]":,. -+0123456789eEtrufalsn\ abxy)"
                               "\t\n\x01\x7f\xc3";
  std::mt19937 rng(7);
  int accepted = 0;
  for (int i = 0; i < 20000; ++i) {
    std::string body = seeds[rng() % seeds.size()];
    const int edits = 1 + static_cast<int>(rng() % 3);
    for (int e = 0; e < edits; ++e) {
      const std::size_t at = rng() % (body.size() + 1);
      const char c = alphabet[rng() % alphabet.size()];
      switch (rng() % 3) {
        case 0:
          if (at < body.size()) body[at] = c;
          break;
        case 1:
          body.insert(body.begin() + static_cast<std::ptrdiff_t>(at), c);
          break;
        default:
          if (at < body.size()) body.erase(at, 1);
      }
    }
    accepted += check(body, rng() % 2 == 0) ? 1 : 0;
  }
  EXPECT_GT(accepted, 100);  // the mutations keep some bodies in the form
}

// Verifies the integer writer of the decision JSON and the RateLimit fields: what
// std::to_string writes, at the edges of each digit count and of int64.
TEST(CallBody, IntegersAreWrittenAsToString) {
  std::vector<std::int64_t> values = {0, std::numeric_limits<std::int64_t>::min(),
                                      std::numeric_limits<std::int64_t>::max(), kMaxExact};
  std::int64_t p = 1;  // 10^0 .. 10^18
  for (int e = 0; e <= 18; ++e, p = e <= 18 ? p * 10 : p) {
    for (const std::int64_t v : {p - 1, p, p + 1}) {
      values.push_back(v);
      values.push_back(-v);
    }
  }
  for (const std::int64_t v : values) {
    std::string out;
    append_json_int(out, v);
    EXPECT_EQ(out, std::to_string(v));
    append_json_int(out, 7);  // appended
    EXPECT_EQ(out, std::to_string(v) + "7");
  }
}

}  // namespace
}  // namespace admit::service
