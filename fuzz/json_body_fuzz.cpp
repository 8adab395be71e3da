// libFuzzer target for admitd's strict request-body decoder (src/service/json_body.cpp).
// The input is a request body. Nothing may crash or throw (but std::bad_alloc); an accepted
// body must be an object without duplicate keys, no deeper than the limit, that serializes to
// JSON that parses again; the getters must keep their contracts on every field.
#include <algorithm>
#include <boost/json.hpp>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <limits>
#include <string>
#include <string_view>
#include <variant>

#include "service/json_body.hpp"

namespace {

namespace json = boost::json;
using admit::service::JsonError;

void check(bool ok) {
  if (!ok) std::abort();
}

std::size_t depth(const json::value& v) {
  std::size_t d = 0;
  if (const json::object* o = v.if_object()) {
    for (const auto& kv : *o) d = std::max(d, depth(kv.value()));
    return d + 1;
  }
  if (const json::array* a = v.if_array()) {
    for (const json::value& x : *a) d = std::max(d, depth(x));
    return d + 1;
  }
  return 0;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view body(reinterpret_cast<const char*>(data), size);
  const admit::service::JsonLimits limits{8};
  auto parsed = admit::service::parse_json_object(body, limits);
  if (const JsonError* e = std::get_if<JsonError>(&parsed)) {
    check(!e->field.empty() && !e->message.empty());
    check(e->code == admit::service::JsonErrc::invalid_json ||
          e->code == admit::service::JsonErrc::duplicate_key ||
          e->code == admit::service::JsonErrc::too_deep ||
          e->code == admit::service::JsonErrc::not_an_object ||
          e->code == admit::service::JsonErrc::out_of_range);
    (void)json::serialize(e->to_json());  // its field and message are valid UTF-8
    return 0;
  }
  const json::object& o = std::get<json::object>(parsed);
  check(depth(o) <= limits.max_depth);
  // The plain parse agrees (no duplicate was dropped silently), and what admitd would write
  // back reads again (no infinity). Not compared: Boost.JSON 1.81 does not always read a double
  // to the nearest one (9.203320337203685E19), so a round trip may differ in the last bit.
  check(json::parse(body) == json::value(o));
  const json::value again = json::parse(json::serialize(o));
  check(again.as_object().size() == o.size());
  for (const auto& kv : o) {
    const auto n = admit::service::get_int(o, kv.key(), -1000, 1000);
    if (const auto* v = std::get_if<std::int64_t>(&n)) {
      check(*v >= -1000 && *v <= 1000 && kv.value().is_int64());
    } else {
      check(!std::get<JsonError>(n).message.empty());
    }
    const auto s = admit::service::get_string(o, kv.key(), 16);
    if (const auto* v = std::get_if<std::string_view>(&s)) check(v->size() <= 16);
  }
  (void)admit::service::check_fields(o, {"entity", "resource", "amounts"});
  return 0;
}
