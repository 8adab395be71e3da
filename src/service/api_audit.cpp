// The audit log over HTTP: every change made through the API (limits, parents) appended with
// its principal, before and after (Api::Impl::audit), and GET /v1/audit reading it back.
// The store keeps the log (admit/store/audit.hpp).
#include <boost/json.hpp>
#include <charconv>
#include <cstdint>
#include <string>

#include "admit/limiter.hpp"
#include "admit/store/audit.hpp"
#include "common/log.hpp"
#include "service/api_impl.hpp"

namespace admit::service {

namespace {

/// A query parameter's decimal integer in [min, max], else BadRequest naming it.
std::int64_t int_param(const std::string& text, const std::string& field, std::int64_t min,
                       std::int64_t max) {
  std::int64_t v = 0;
  const char* end = text.data() + text.size();
  const auto [p, ec] = std::from_chars(text.data(), end, v);
  if (text.empty() || ec != std::errc() || p != end || v < min || v > max) {
    throw BadRequest{
        "must be an integer from " + std::to_string(min) + " to " + std::to_string(max), field,
        "out_of_range"};
  }
  return v;
}

}  // namespace

std::string json_string(std::string_view s) {
  return s.empty() ? std::string() : json::serialize(json::string(s));
}

void Api::Impl::audit(const ApiRequest& r, AuditAction action, std::string_view entity,
                      std::string_view resource, std::string before, std::string after) {
  AuditEvent e;
  e.principal = r.principal.empty() ? "anonymous" : std::string(r.principal);
  e.action = std::string(to_string(action));
  e.entity = std::string(entity);
  e.resource = std::string(resource);
  e.before = std::move(before);
  e.after = std::move(after);
  try {
    (void)lim(r).audit(std::move(e));
  } catch (const std::exception& x) {
    // The change is made; a lost audit event is logged where an operator sees it.
    log::json_line(log::Level::error, json::object{{"msg", "audit event not written"},
                                                   {"action", to_string(action)},
                                                   {"entity", entity},
                                                   {"resource", resource},
                                                   {"error", x.what()}});
  }
}

Response Api::Impl::audit_log(const ApiRequest& r) {
  AuditQuery q;
  if (const auto v = query_param(r.query, "limit")) {
    q.limit = static_cast<std::size_t>(
        int_param(*v, "limit", 1, static_cast<std::int64_t>(kAuditMaxReadLimit)));
  }
  if (const auto v = query_param(r.query, "after_id")) {
    q.after_id = static_cast<std::uint64_t>(int_param(*v, "after_id", 0, kMaxExact));
  }
  if (const auto v = query_param(r.query, "before_id")) {
    q.before_id = static_cast<std::uint64_t>(int_param(*v, "before_id", 0, kMaxExact));
  }
  if (const auto v = query_param(r.query, "entity")) q.entity = *v;
  if (const auto v = query_param(r.query, "resource")) q.resource = *v;
  if (const auto v = query_param(r.query, "order")) {
    if (*v != "oldest" && *v != "newest") {
      throw BadRequest{"must be oldest or newest", "order", "invalid_argument"};
    }
    q.newest_first = *v == "newest";
  }
  const std::vector<AuditEvent> events = lim(r).audit_log(q);  // ValidationError -> 400
  std::string body =
      "{\"namespace\":" + json::serialize(json::string(lim(r).options().ns)) + ",\"events\":[";
  for (std::size_t i = 0; i < events.size(); ++i) {
    if (i != 0) body += ',';
    body += to_json(events[i]);
  }
  body += "]}";
  return Response{200, std::move(body), -1, {}, {}, {}, {}};
}

}  // namespace admit::service
