#include "service/api.hpp"

#include <boost/json.hpp>
#include <chrono>
#include <limits>
#include <utility>

#include "admit/core/error.hpp"
#include "admit/limiter.hpp"
#include "service/json_body.hpp"
#include "service/metrics.hpp"

namespace admit::service {

namespace json = boost::json;

namespace {

constexpr std::size_t kMaxAmounts = 64;  // the Limiter checks at most 64 names per call

/// A request the API refuses (400): what is wrong, which field, and the stable code
/// (json_body.hpp's codes).
struct BadRequest {
  std::string error;
  std::string field;
  std::string code = "invalid_request";
};

[[noreturn]] void refuse(const JsonError& e) {
  throw BadRequest{e.message, e.field, std::string(to_string(e.code))};
}

struct Call {
  std::string entity;
  std::string resource;
  Amounts amounts;
};

Response reply(unsigned status, const json::object& body) {
  return Response{status, json::serialize(body), -1, {}, {}};
}

Response error(unsigned status, std::string message, std::string field = {},
               std::string code = {}) {
  json::object o;
  o["error"] = std::move(message);
  if (!code.empty()) o["code"] = std::move(code);
  if (!field.empty()) o["field"] = std::move(field);
  return reply(status, o);
}

// A non-negative integer (json_body.hpp's strict reading: no fractions, no exponents).
std::int64_t to_int(const json::value& v, const std::string& field) {
  auto n = service::to_int(v, field, 0, kMaxExact);
  if (const JsonError* e = std::get_if<JsonError>(&n)) refuse(*e);
  return std::get<std::int64_t>(n);
}

std::string to_str(const json::value& v, const std::string& field) {
  const json::string* s = v.if_string();
  if (s == nullptr) throw BadRequest{"must be a string", field, "invalid_type"};
  validate_name(field, *s);  // ValidationError -> 400 naming the field
  return std::string(*s);
}

/// Parses {"entity", "resource", "amounts", ["timeout_ms"]} strictly (duplicate keys, deep
/// nesting, NaN, invalid UTF-8 refused: json_body.hpp); throws BadRequest.
Call parse_call(std::string_view body, bool acquire) {
  const auto parsed = parse_json_object(body);
  if (const JsonError* e = std::get_if<JsonError>(&parsed)) refuse(*e);
  const json::object* o = &std::get<json::object>(parsed);
  Call c;
  bool has_entity = false;
  bool has_resource = false;
  bool has_amounts = false;
  for (const auto& kv : *o) {
    const std::string_view key = kv.key();
    if (key == "entity") {
      c.entity = to_str(kv.value(), "entity");
      has_entity = true;
    } else if (key == "resource") {
      c.resource = to_str(kv.value(), "resource");
      has_resource = true;
    } else if (key == "amounts") {
      const json::object* a = kv.value().if_object();
      if (a == nullptr)
        throw BadRequest{"must be an object of limit name -> integer", "amounts", "invalid_type"};
      if (a->size() > kMaxAmounts)
        throw BadRequest{"at most 64 amounts", "amounts", "out_of_range"};
      for (const auto& [name, amount] : *a) {
        c.amounts.add(name, to_int(amount, "amounts." + std::string(name)));
      }
      has_amounts = true;
    } else if (acquire && key == "timeout_ms") {
      if (to_int(kv.value(), "timeout_ms") != 0) {
        throw BadRequest{"only 0 (non-blocking) is supported in this version", "timeout_ms",
                         "out_of_range"};
      }
    } else {
      throw BadRequest{"unknown field", std::string(key), "unknown_field"};
    }
  }
  if (!has_entity) throw BadRequest{"missing field", "entity", "missing_field"};
  if (!has_resource) throw BadRequest{"missing field", "resource", "missing_field"};
  if (!has_amounts) throw BadRequest{"missing field", "amounts", "missing_field"};
  return c;
}

std::string str(std::string_view s) { return std::string(s); }

json::object limit_json(const Limit& l, ConfigSource source) {
  json::object o;
  o["name"] = l.name();
  o["kind"] = str(to_string(l.kind()));
  o["source"] = str(to_string(source));
  o["capacity"] = l.capacity();
  o["unlimited"] = l.unlimited();
  if (l.kind() == LimitKind::rate && !l.unlimited()) {
    o["refill_amount"] = l.refill_amount();
    o["refill_period_us"] = l.refill_period();
  } else if (l.kind() == LimitKind::window) {
    o["window"] = str(to_string(l.window_spec().unit));
    o["reset_at"] = l.window_spec().reset_at;
    o["time_zone"] = l.window_spec().time_zone;
  }
  o["description"] = l.describe();
  return o;
}

}  // namespace

std::string decision_json(const Decision& d) {
  json::object o;
  o["allowed"] = d.allowed;
  o["code"] = str(to_string(d.code));
  o["reason"] = d.reason;
  o["retry_after_us"] = d.retry_after;
  o["retry_after_s"] = d.retry_after_header();
  json::array violations;
  for (const Violation& v : d.violations) {
    violations.push_back(json::object{{"entity", v.entity},
                                      {"limit", v.limit},
                                      {"kind", str(to_string(v.kind))},
                                      {"requested", v.requested},
                                      {"available", v.available},
                                      {"retry_after_us", v.retry_after}});
  }
  o["violations"] = std::move(violations);
  json::array stats;
  for (const LimitStatus& s : d.stats) {
    stats.push_back(json::object{{"entity", s.entity},
                                 {"limit", s.limit},
                                 {"kind", str(to_string(s.kind))},
                                 {"source", str(to_string(s.source))},
                                 {"capacity", s.capacity},
                                 {"available", s.available},
                                 {"reset_after_us", s.reset_after}});
  }
  o["stats"] = std::move(stats);
  return json::serialize(o);
}

namespace {

struct Route {
  std::string_view path;
  std::string_view method;
};
constexpr Route kRoutes[] = {{"/healthz", "GET"},
                             {"/v1/decide", "POST"},
                             {"/v1/acquire", "POST"},
                             {"/v1/limits", "GET"},
                             {"/metrics", "GET"}};

}  // namespace

Response Api::handle(std::string_view method, std::string_view target,
                     std::string_view body) noexcept {
  const auto start = std::chrono::steady_clock::now();
  const std::string_view path = target.substr(0, target.find('?'));
  Response res = route(method, path, body);
  if (metrics_ != nullptr) {
    std::string_view label = "other";  // unknown paths: one label value, whatever they are
    for (const Route& r : kRoutes) {
      if (r.path == path) label = r.path;
    }
    try {
      metrics_->request(label, res.status, std::chrono::steady_clock::now() - start);
    } catch (...) {  // out of memory: the answer matters more than its count
    }
  }
  return res;
}

Response Api::route(std::string_view method, std::string_view path, std::string_view body) {
  try {
    for (const Route& r : kRoutes) {
      if (r.path != path) continue;
      if (r.method != method) {
        Response res =
            error(405, "method " + printable(method) + " not allowed on " + printable(path));
        res.allow = r.method;
        return res;
      }
      if (path == "/healthz") return reply(200, json::object{{"status", "ok"}});
      if (path == "/v1/decide") return decide(body);
      if (path == "/v1/acquire") return acquire(body);
      if (path == "/metrics") return metrics();
      return limits();
    }
    return error(404, "no route " + printable(path));
  } catch (const BadRequest& e) {
    return error(400, e.error, e.field, e.code);
  } catch (const ValidationError& e) {
    return error(400, e.what(), e.field(), "invalid_argument");
  } catch (const std::exception& e) {
    return error(500, std::string("internal error: ") + e.what());
  } catch (...) {
    return error(500, "internal error");
  }
}

Response Api::decide(std::string_view body) {
  const Call c = parse_call(body, /*acquire=*/false);
  const Metrics::InFlight in_flight(metrics_);
  const Decision d = limiter_.decide(c.entity, c.resource, c.amounts);
  if (metrics_ != nullptr) metrics_->decision("/v1/decide", c.resource, d);
  return Response{200, decision_json(d), -1, {}, {}};
}

Response Api::acquire(std::string_view body) {
  const Call c = parse_call(body, /*acquire=*/true);
  AcquireOptions options;
  options.with_stats = true;
  // Keeps what was consumed. Concurrency limits are checked and their slot is freed at once:
  // at this stage a slot is held only for the duration of the request (explicit leases come
  // later).
  const Metrics::InFlight in_flight(metrics_);
  const Decision d = limiter_.consume(c.entity, c.resource, c.amounts, options);
  if (metrics_ != nullptr) metrics_->decision("/v1/acquire", c.resource, d);
  Response res{200, decision_json(d), -1, {}, {}};
  if (d.allowed) return res;
  switch (d.code) {
    case Code::unknown_limit:
    case Code::invalid_argument:
      res.status = 400;
      break;
    case Code::exceeds_capacity:
      res.status = 422;  // can never fit: retrying does not help
      break;
    case Code::store_unavailable:
      res.status = 503;
      res.retry_after = d.retry_after_header();
      break;
    default:
      res.status = 429;
      res.retry_after = d.retry_after_header();
      break;
  }
  return res;
}

Response Api::limits() {
  json::array resources;
  for (const std::string& r : limiter_.resources()) {
    json::array limits;
    for (const auto& [limit, source] : limiter_.resolve("", r)) {
      limits.push_back(limit_json(limit, source));
    }
    resources.push_back(json::object{{"resource", r}, {"limits", std::move(limits)}});
  }
  json::object o;
  o["namespace"] = limiter_.options().ns;
  o["resources"] = std::move(resources);
  return reply(200, o);
}

Response Api::metrics() {
  if (metrics_ == nullptr) return error(404, "no route /metrics (metrics are off)");
  return Response{200, metrics_->render(), -1, {}, std::string(Metrics::kContentType)};
}

}  // namespace admit::service
