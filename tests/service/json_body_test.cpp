// Tests of the strict request-body decoder (src/service/json_body.cpp): what Boost.JSON alone
// would accept and admitd must refuse, with stable codes and the field named.
#include "service/json_body.hpp"

#include <gtest/gtest.h>

#include <boost/json/serialize.hpp>
#include <cstdint>
#include <limits>
#include <string>
#include <string_view>
#include <utility>
#include <variant>

namespace admit::service {
namespace {

namespace json = boost::json;

JsonError error_of(std::string_view body, const JsonLimits& limits = {}) {
  auto r = parse_json_object(body, limits);
  if (const JsonError* e = std::get_if<JsonError>(&r)) return *e;
  ADD_FAILURE() << "accepted: " << body;
  return {};
}

json::object object_of(std::string_view body) {
  auto r = parse_json_object(body);
  if (const JsonError* e = std::get_if<JsonError>(&r)) {
    ADD_FAILURE() << "refused (" << to_string(e->code) << " " << e->field << "): " << e->message
                  << "\n  body: " << body;
    return {};
  }
  return std::get<json::object>(std::move(r));
}

std::string nested(std::size_t depth) {
  std::string s = "{";
  for (std::size_t i = 1; i < depth; ++i) s += R"("a":{)";
  s += std::string(depth, '}');
  return s;
}

TEST(JsonBodyTest, AcceptsAnObject) {
  const json::object o =
      object_of(" {\"entity\":\"u\",\"amounts\":{\"rpm\":1,\"tpm\":-2},\"x\":[1,{\"y\":null}]}\n");
  EXPECT_EQ(o.at("entity").as_string(), "u");
  EXPECT_EQ(o.at("amounts").as_object().at("tpm").as_int64(), -2);
  // The same key in sibling objects is not a duplicate.
  (void)object_of(R"({"a":{"k":1},"b":{"k":2},"c":[{"k":1},{"k":2}]})");
}

TEST(JsonBodyTest, RefusesDuplicateKeysAtAnyDepth) {
  const JsonError top = error_of(R"({"entity":"a","resource":"m","entity":"b"})");
  EXPECT_EQ(top.code, JsonErrc::duplicate_key);
  EXPECT_EQ(top.field, "entity");
  EXPECT_EQ(to_string(top.code), "duplicate_key");

  const JsonError inner = error_of(R"({"amounts":{"rpm":1,"rpm":2}})");
  EXPECT_EQ(inner.code, JsonErrc::duplicate_key);
  EXPECT_EQ(inner.field, "amounts.rpm");

  const JsonError in_array = error_of(R"({"items":[{"a":1},{"b":1,"b":2}]})");
  EXPECT_EQ(in_array.code, JsonErrc::duplicate_key);
  EXPECT_EQ(in_array.field, "items[1].b");

  // Escapes that spell the same key are the same key.
  EXPECT_EQ(error_of(R"({"entity":"a","\u0065ntity":"b"})").code, JsonErrc::duplicate_key);
  // A long key that the parser may deliver in parts.
  const std::string k(5000, 'k');
  EXPECT_EQ(error_of("{\"" + k + "\":1,\"" + k + "\":2}").code, JsonErrc::duplicate_key);
}

TEST(JsonBodyTest, RefusesDeepNesting) {
  (void)object_of(nested(32));
  const JsonError e = error_of(nested(33));
  EXPECT_EQ(e.code, JsonErrc::too_deep);
  EXPECT_EQ(e.field, "body");
  EXPECT_EQ(error_of(nested(5), JsonLimits{4}).code, JsonErrc::too_deep);
  // Far beyond the limit: refused without recursion trouble.
  EXPECT_EQ(error_of(std::string(100000, '[')).code, JsonErrc::too_deep);
}

TEST(JsonBodyTest, RefusesWhatIsNotOneJsonObject) {
  for (const std::string_view body :
       {"", "   ", "{", R"({"a":1} x)", R"({"a":1}{"b":2})", R"({"a":NaN})", R"({"a":Infinity})",
        R"({"a":-Infinity})", R"({"a":1,})", R"({"a":1 /* c */})", R"({'a':1})", R"({"a":01})",
        R"({"a":.5})", "{\"a\":\"\xff\"}", "{\"\xc3\x28\":1}", "{\"a\":\"\xed\xa0\x80\"}",
        R"({"a":"\ud800"})", R"({"a":"\udc00x"})"}) {
    const JsonError e = error_of(body);
    EXPECT_EQ(e.code, JsonErrc::invalid_json) << body;
    EXPECT_EQ(e.field, "body") << body;
  }
  for (const std::string_view body : {"[]", "1", "\"s\"", "null", "true"}) {
    EXPECT_EQ(error_of(body).code, JsonErrc::not_an_object) << body;
  }
  // Valid UTF-8 and a valid surrogate pair are fine.
  (void)object_of("{\"name\":\"caf\xc3\xa9 \\ud83d\\ude00\"}");
}

// A number beyond a double's range is refused where it stands: Boost.JSON 1.81 would read
// it (and 0e30337) as infinite, which no serializer writes back.
TEST(JsonBodyTest, RefusesNumbersBeyondADouble) {
  for (const auto& [body, field] :
       {std::pair<std::string_view, std::string_view>{R"({"a":1e999})", "a"},
        {R"({"a":{"b":[1,-1e400]}})", "a.b[1]"},
        {R"({"x":0e30337})", "x"}}) {
    const JsonError e = error_of(body);
    EXPECT_EQ(e.code, JsonErrc::out_of_range) << body;
    EXPECT_EQ(e.field, field) << body;
  }
  (void)object_of(R"({"a":1e308,"b":-0.0,"c":1e-400})");
}

TEST(JsonBodyTest, IntegersAreExact) {
  const json::object o =
      object_of(R"({"a":5,"neg":-3,"big":9223372036854775807,"huge":9223372036854775808,)"
                R"("vast":123456789012345678901234567890,"frac":1.5,"one":1.0,"exp":1e3,"s":"5",)"
                R"("b":true,"n":null,"minus_zero":-0})");
  auto value = [](const JsonResult<std::int64_t>& r) { return std::get<std::int64_t>(r); };
  auto error = [](const JsonResult<std::int64_t>& r) { return std::get<JsonError>(r); };
  constexpr std::int64_t kMax = std::numeric_limits<std::int64_t>::max();

  EXPECT_EQ(value(get_int(o, "a", 0, 10)), 5);
  EXPECT_EQ(value(get_int(o, "neg", -5, 0)), -3);
  EXPECT_EQ(value(get_int(o, "big", 0, kMax)), kMax);
  EXPECT_EQ(value(get_int(o, "minus_zero", 0, 1)), 0);

  const JsonError range = error(get_int(o, "a", 0, 4, "amounts"));
  EXPECT_EQ(range.code, JsonErrc::out_of_range);
  EXPECT_EQ(range.field, "amounts.a");
  EXPECT_EQ(range.message, "must be an integer from 0 to 4");
  EXPECT_EQ(error(get_int(o, "neg", 0, 10)).code, JsonErrc::out_of_range);
  EXPECT_EQ(error(get_int(o, "huge", 0, kMax)).code, JsonErrc::out_of_range);
  EXPECT_EQ(error(get_int(o, "vast", 0, kMax)).code, JsonErrc::out_of_range);

  for (const char* k : {"frac", "one", "exp", "s", "b", "n"}) {
    const JsonError e = error(get_int(o, k, 0, kMax));
    EXPECT_EQ(e.code, JsonErrc::invalid_type) << k;
    EXPECT_EQ(e.field, k);
  }
  EXPECT_EQ(error(get_int(o, "s", 0, 9)).message, "must be an integer, not a string");

  const JsonError missing = error(get_int(o, "nope", 0, 1, "x"));
  EXPECT_EQ(missing.code, JsonErrc::missing_field);
  EXPECT_EQ(missing.field, "x.nope");

  const auto absent = get_optional_int(o, "nope", 0, 1);
  EXPECT_FALSE(std::get<std::optional<std::int64_t>>(absent).has_value());
  EXPECT_EQ(*std::get<std::optional<std::int64_t>>(get_optional_int(o, "a", 0, 9)), 5);
  EXPECT_EQ(std::get<JsonError>(get_optional_int(o, "n", 0, 9)).code, JsonErrc::invalid_type);
}

TEST(JsonBodyTest, OtherGettersAndFieldChecks) {
  const json::object o =
      object_of(R"({"entity":"user-1","wait":true,"amounts":{"rpm":1},"long":"xxxxxxxx"})");
  EXPECT_EQ(std::get<std::string_view>(get_string(o, "entity")), "user-1");
  EXPECT_EQ(std::get<JsonError>(get_string(o, "long", 4)).code, JsonErrc::out_of_range);
  EXPECT_EQ(std::get<JsonError>(get_string(o, "wait")).code, JsonErrc::invalid_type);
  EXPECT_EQ(std::get<JsonError>(get_string(o, "resource")).code, JsonErrc::missing_field);
  EXPECT_TRUE(std::get<bool>(get_bool(o, "wait")));
  EXPECT_EQ(std::get<JsonError>(get_bool(o, "entity")).message, "must be a bool, not a string");
  const json::object* a = std::get<const json::object*>(get_object(o, "amounts"));
  EXPECT_EQ(std::get<std::int64_t>(get_int(*a, "rpm", 0, 9, "amounts")), 1);
  EXPECT_EQ(std::get<JsonError>(get_object(o, "entity")).code, JsonErrc::invalid_type);

  EXPECT_FALSE(check_fields(o, {"entity", "wait", "amounts", "long"}));
  const std::optional<JsonError> unknown = check_fields(*a, {"tpm"}, "amounts");
  ASSERT_TRUE(unknown);
  EXPECT_EQ(unknown->code, JsonErrc::unknown_field);
  EXPECT_EQ(unknown->field, "amounts.rpm");

  const json::object rendered = unknown->to_json();
  EXPECT_EQ(rendered.at("code").as_string(), "unknown_field");
  EXPECT_EQ(rendered.at("field").as_string(), "amounts.rpm");
  EXPECT_EQ(rendered.at("error").as_string(), "unknown field");
}

// Field names in errors quote client bytes printable: a NUL or invalid UTF-8 in a key never
// reaches a log line or a JSON answer raw.
TEST(JsonBodyTest, ErrorsQuoteKeysPrintable) {
  const JsonError e = error_of(R"({"a\u0000b":1,"a\u0000b":2})");
  EXPECT_EQ(e.field, "a\\x00b");
  const json::object o = object_of(R"({"x\u0001":1})");
  EXPECT_EQ(check_fields(o, {"x"})->field, "x\\x01");
}

// The one-pass parse finds a duplicate by the keys the built value lost; a duplicate whose
// first value was an object (dropped with its own keys), duplicates in an array's objects and
// a duplicate after a valid prefix all count.
TEST(JsonBodyTest, FindsDuplicatesWhateverTheValuesAre) {
  EXPECT_EQ(error_of(R"({"a":{"x":1,"y":2},"a":3})").field, "a");
  EXPECT_EQ(error_of(R"({"a":[{"x":1}],"b":{"c":[{"d":1,"d":1}]}})").field, "b.c[0].d");
  EXPECT_EQ(error_of(R"({"a":{"b":{}},"a":{"b":{}}})").field, "a");
  EXPECT_EQ(error_of(R"({"a":1,"b":2,"c":3,"b":4})").field, "b");
  // The first error in the body wins, as it always has: the duplicate before the bad number.
  EXPECT_EQ(error_of(R"({"a":1,"a":2,"n":1e999})").code, JsonErrc::duplicate_key);
  EXPECT_EQ(error_of(R"({"n":1e999,"a":1,"a":2})").code, JsonErrc::out_of_range);
  EXPECT_EQ(error_of(R"({"a":1,"a":2} x)").code, JsonErrc::duplicate_key);
  EXPECT_EQ(error_of(R"({"a":1} x)").code, JsonErrc::invalid_json);
  EXPECT_EQ(error_of(R"([{"a":1}])").code, JsonErrc::not_an_object);
  const json::object o =
      object_of(R"({"a":[1,2.5,"s",true,null,{"b":{}}],"c":18446744073709551615})");
  EXPECT_EQ(o.at("a").as_array().size(), 6u);
  EXPECT_TRUE(o.at("c").is_uint64());
}

// Responses written directly (append_json_string) read as Boost.JSON serialises them.
TEST(JsonBodyTest, AppendJsonStringMatchesBoostJson) {
  std::string all;
  for (int c = 0; c < 256; ++c) all.push_back(static_cast<char>(c));
  for (const std::string& s : {std::string(), std::string("plain"), std::string("a\"b\\c/d"),
                               std::string("\xc3\xa9t\xc3\xa9 \xe2\x82\xac"), all}) {
    std::string out = "x";
    append_json_string(out, s);
    EXPECT_EQ(out.substr(1), json::serialize(json::string(s))) << s;
  }
  for (const std::int64_t n :
       {std::int64_t{0}, std::int64_t{-1}, std::int64_t{1000000000000},
        std::numeric_limits<std::int64_t>::min(), std::numeric_limits<std::int64_t>::max()}) {
    std::string out;
    append_json_int(out, n);
    EXPECT_EQ(out, json::serialize(json::value(n)));
  }
}

}  // namespace
}  // namespace admit::service
