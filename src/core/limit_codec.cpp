#include "admit/core/limit_codec.hpp"

#include <boost/json.hpp>
#include <charconv>
#include <cmath>

#include "admit/core/error.hpp"

namespace admit {

namespace json = boost::json;

namespace {

json::string exact(double v) {
  char buf[64];
  const auto r = std::to_chars(buf, buf + sizeof buf, v);
  return json::string(std::string_view(buf, static_cast<std::size_t>(r.ptr - buf)));
}

json::object encode_one(const Limit& l) {
  json::object o;
  o["name"] = l.name();
  o["kind"] = to_string(l.kind());
  switch (l.kind()) {
    case LimitKind::rate:
      o["capacity"] = l.capacity();
      o["refill_amount"] = l.refill_amount();
      o["refill_period_us"] = l.refill_period();
      break;
    case LimitKind::window: {
      const WindowSpec& w = l.window_spec();
      o["capacity"] = l.capacity();
      o["unit"] = to_string(w.unit);
      o["reset_at"] = w.reset_at;
      o["time_zone"] = w.time_zone;
      break;
    }
    case LimitKind::concurrency:
      o["capacity"] = l.capacity();
      break;
    case LimitKind::adaptive: {
      const AimdOptions& a = l.aimd_options();
      o["burst"] = l.capacity();
      o["max_rate"] = exact(a.max_rate);
      o["initial_rate"] = exact(a.initial_rate);
      if (a.slow_start_threshold) o["slow_start_threshold"] = exact(*a.slow_start_threshold);
      o["additive_increase"] = exact(a.additive_increase);
      o["multiplicative_decrease"] = exact(a.multiplicative_decrease);
      o["min_rate"] = exact(a.min_rate);
      break;
    }
  }
  // Only when set: a limit that is not shadow encodes as it did before the flag existed.
  if (l.shadow()) o["shadow"] = true;
  return o;
}

// Reads the fields of one limit object; `where` names it in errors ("limits[2]").
class Reader {
 public:
  Reader(const json::object& o, std::string where) : o_(o), where_(std::move(where)) {}

  const json::value& field(std::string_view k) const {
    const json::value* v = o_.if_contains(k);
    if (v == nullptr) throw ValidationError(path(k), "", "is missing");
    return *v;
  }
  bool has(std::string_view k) const { return o_.contains(k); }

  std::string text(std::string_view k) const {
    const json::value& v = field(k);
    if (!v.is_string()) throw ValidationError(path(k), json::serialize(v), "must be a string");
    return std::string(v.get_string());
  }

  std::int64_t integer(std::string_view k) const {
    const json::value& v = field(k);
    if (v.is_int64()) return v.get_int64();
    if (v.is_uint64() && v.get_uint64() <= static_cast<std::uint64_t>(INT64_MAX)) {
      return static_cast<std::int64_t>(v.get_uint64());
    }
    throw ValidationError(path(k), json::serialize(v), "must be an integer");
  }

  // A double written as an exact decimal string (or, by hand, a JSON number).
  double real(std::string_view k) const {
    const json::value& v = field(k);
    if (v.is_int64()) return static_cast<double>(v.get_int64());
    if (v.is_double()) return v.get_double();
    if (v.is_string()) {
      const json::string& s = v.get_string();
      double d = 0;
      const auto r = std::from_chars(s.data(), s.data() + s.size(), d);
      if (r.ec == std::errc() && r.ptr == s.data() + s.size() && std::isfinite(d)) return d;
    }
    throw ValidationError(path(k), json::serialize(v), "must be a finite number");
  }

  // An optional boolean: `absent` when the field is missing.
  bool flag(std::string_view k, bool absent) const {
    const json::value* v = o_.if_contains(k);
    if (v == nullptr) return absent;
    if (!v->is_bool()) throw ValidationError(path(k), json::serialize(*v), "must be true or false");
    return v->get_bool();
  }

  std::string path(std::string_view k) const { return where_ + "." + std::string(k); }

 private:
  const json::object& o_;
  std::string where_;
};

WindowUnit window_unit(const Reader& r) {
  const std::string u = r.text("unit");
  if (const auto w = window_unit_from(u)) return *w;
  throw ValidationError(r.path("unit"), u, "must be minute, hour, day, week or month");
}

Limit decode_kind(const Reader& r) {
  const std::string name = r.text("name");
  const std::string kind = r.text("kind");
  // Fields are read in a fixed order (not as function arguments), so the first bad one is
  // the one reported.
  if (kind == "rate") {
    const std::int64_t capacity = r.integer("capacity");
    const std::int64_t refill = r.integer("refill_amount");
    const std::int64_t period = r.integer("refill_period_us");
    return Limit::custom(name, capacity, refill, std::chrono::microseconds(period));
  }
  if (kind == "window") {
    const std::int64_t capacity = r.integer("capacity");
    WindowSpec spec;
    spec.unit = window_unit(r);
    spec.reset_at = r.text("reset_at");
    spec.time_zone = r.text("time_zone");
    return Limit::window(name, capacity, std::move(spec));
  }
  if (kind == "concurrency") return Limit::concurrency(name, r.integer("capacity"));
  if (kind == "adaptive") {
    AimdOptions a;
    a.max_rate = r.real("max_rate");
    a.initial_rate = r.real("initial_rate");
    if (r.has("slow_start_threshold")) a.slow_start_threshold = r.real("slow_start_threshold");
    a.additive_increase = r.real("additive_increase");
    a.multiplicative_decrease = r.real("multiplicative_decrease");
    a.min_rate = r.real("min_rate");
    return Limit::adaptive(name, a, r.integer("burst"));
  }
  throw ValidationError(r.path("kind"), kind, "must be rate, window, concurrency or adaptive");
}

Limit decode_one(const json::value& v, const std::string& where) {
  if (!v.is_object()) throw ValidationError(where, json::serialize(v), "must be an object");
  const Reader r(v.get_object(), where);
  Limit l = decode_kind(r);
  // Encodings written before shadow mode existed have no "shadow": not shadow.
  if (r.flag("shadow", false)) l = l.with_shadow();
  return l;
}

}  // namespace

std::string encode_limits(std::span<const Limit> limits) {
  json::array a;
  a.reserve(limits.size());
  for (const Limit& l : limits) a.push_back(encode_one(l));
  return json::serialize(a);
}

std::vector<Limit> decode_limits(std::string_view text) {
  json::error_code ec;
  const json::value v = json::parse(json::string_view(text.data(), text.size()), ec);
  if (ec)
    throw ValidationError("limits", std::string(text.substr(0, 80)), "not JSON: " + ec.message());
  if (!v.is_array())
    throw ValidationError("limits", std::string(text.substr(0, 80)), "must be a JSON array");
  std::vector<Limit> out;
  out.reserve(v.get_array().size());
  for (const json::value& e : v.get_array()) {
    const std::string where = "limits[" + std::to_string(out.size()) + "]";
    Limit l = decode_one(e, where);
    for (const Limit& prev : out) {
      if (prev.name() == l.name()) {
        throw ValidationError(where + ".name", l.name(), "appears twice in one limit set");
      }
    }
    out.push_back(std::move(l));
  }
  return out;
}

}  // namespace admit
