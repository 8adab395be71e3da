// POST /v1/observe: a provider's response to a call (status, headers, body) applied to the
// Limiter through Discovery: the limits the provider reports become learned limits, its
// remaining counts clamp the buckets, a 429 holds the key, and with a lease_id the lease's
// adaptive limits are marked. The dialect is the one the caller names, or the one the headers
// show (detect_provider).
#include <string>
#include <utility>

#include "admit/adapt/discovery.hpp"
#include "admit/adapt/headers.hpp"
#include "admit/core/error.hpp"
#include "admit/limiter.hpp"
#include "service/api_impl.hpp"

namespace admit::service {

namespace {

constexpr std::size_t kMaxHeaders = 200;
constexpr std::size_t kMaxHeaderValue = 8192;
constexpr std::size_t kMaxBody = 64 * 1024;

}  // namespace

Discovery& Api::Impl::discovery_for(Limiter& limiter, Provider p) {
  std::lock_guard g(discovery_mu);
  std::unique_ptr<Discovery>& d = discovery[{&limiter, p}];
  if (!d) d = std::make_unique<Discovery>(limiter, p);
  return *d;
}

Response Api::Impl::observe(const ApiRequest& r) {
  const json::object o = body_of(r);
  only_fields(o, {"entity", "resource", "lease_id", "status", "headers", "body", "provider"});
  const json::value* status_v = o.if_contains("status");
  if (status_v == nullptr) throw BadRequest{"missing field", "status", "missing_field"};
  const int status = static_cast<int>(int_field(*status_v, "status", 100, 599));
  Headers headers;
  if (const json::value* h = o.if_contains("headers")) {
    const json::object* ho = h->if_object();
    if (ho == nullptr) {
      throw BadRequest{"must be an object of header name -> string", "headers", "invalid_type"};
    }
    if (ho->size() > kMaxHeaders)
      throw BadRequest{"at most 200 headers", "headers", "out_of_range"};
    for (const auto& [name, value] : *ho) {
      const json::string* s = value.if_string();
      const std::string field = "headers." + std::string(name);
      if (s == nullptr) throw BadRequest{"must be a string", field, "invalid_type"};
      if (s->size() > kMaxHeaderValue)
        throw BadRequest{"at most 8192 bytes", field, "out_of_range"};
      headers.add(name, *s);
    }
  }
  std::string_view body;
  if (const json::value* b = o.if_contains("body")) {
    const json::string* s = b->if_string();
    if (s == nullptr) throw BadRequest{"must be a string", "body", "invalid_type"};
    if (s->size() > kMaxBody) throw BadRequest{"at most 65536 bytes", "body", "out_of_range"};
    body = *s;
  }
  std::optional<Provider> provider;
  bool detected = false;
  if (const json::value* p = o.if_contains("provider")) {
    const json::string* s = p->if_string();
    if (s == nullptr) throw BadRequest{"must be a string", "provider", "invalid_type"};
    provider = provider_from_string(*s);
    if (!provider) throw BadRequest{"unknown provider", "provider", "invalid_argument"};
  } else {
    provider = detect_provider(headers, body);
    detected = provider.has_value();
  }
  const Provider dialect = provider.value_or(Provider::generic);
  Discovery& learner = discovery_for(lim(r), dialect);

  ObserveResult result;
  std::string entity;
  std::string resource;
  if (const json::value* id = o.if_contains("lease_id")) {
    if (o.contains("entity") || o.contains("resource")) {
      throw BadRequest{"give either lease_id or entity and resource", "lease_id",
                       "invalid_request"};
    }
    const json::string* token = id->if_string();
    if (token == nullptr) throw BadRequest{"must be a string", "lease_id", "invalid_type"};
    Lease lease = lim(r).resume(*token);
    result = learner.observe(lease, headers, status, body);
    entity = std::string(lease.entity());
    resource = std::string(lease.resource());
    if (lease.active()) (void)lease.detach();  // observing does not end the lease
  } else {
    const json::value* e = o.if_contains("entity");
    const json::value* res = o.if_contains("resource");
    if (e == nullptr) throw BadRequest{"missing field", "entity", "missing_field"};
    if (res == nullptr) throw BadRequest{"missing field", "resource", "missing_field"};
    entity = name_field(*e, "entity");
    resource = name_field(*res, "resource");
    result = learner.observe(entity, resource,
                             parse_response(dialect, headers, status, body, lim(r).clock().now()));
  }

  json::array clamped;
  for (const LimitStatus& s : result.clamped) {
    clamped.push_back(json::object{{"entity", s.entity},
                                   {"limit", s.limit},
                                   {"available", s.available},
                                   {"reset_after_us", s.reset_after}});
  }
  json::array learned;
  for (const DiscoveredLimit& d : learner.discovered(entity, resource)) {
    json::object x{{"limit", d.limit},
                   {"provider_limit", d.provider_limit},
                   {"capacity", d.capacity},
                   {"window_us", d.window},
                   {"reset_after_us", d.reset_after}};
    if (d.remaining) x["remaining"] = *d.remaining;
    learned.push_back(std::move(x));
  }
  json::array warnings;
  for (const std::string& w : result.warnings) warnings.emplace_back(w);
  return reply(200, json::object{{"entity", entity},
                                 {"resource", resource},
                                 {"provider", std::string(to_string(dialect))},
                                 {"detected", detected},
                                 {"limits_changed", result.limits_changed},
                                 {"rate_limited", result.rate_limited},
                                 {"hold_until_us", result.hold_until},
                                 {"clamped", std::move(clamped)},
                                 {"discovered", std::move(learned)},
                                 {"warnings", std::move(warnings)}});
}

}  // namespace admit::service
