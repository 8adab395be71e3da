// Api::Impl: what the route files share: the Limiter, the metrics, the thread that runs
// waiting acquires, the providers' Discovery objects, and the request and response helpers.
// Routes: api.cpp (the table, health, limits listing, metrics), api_leases.cpp (acquire and
// the lease lifecycle), api_admin.cpp (limits and parents, stats), api_observe.cpp (provider
// responses). Internal header.
#pragma once

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/json.hpp>
#include <chrono>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "admit/adapt/discovery.hpp"
#include "admit/amounts.hpp"
#include "admit/core/decision.hpp"
#include "admit/limiter.hpp"
#include "admit/store/audit.hpp"
#include "service/api.hpp"
#include "service/json_body.hpp"

namespace admit::service {

namespace json = boost::json;

/// A request the API refuses (4xx): what is wrong, which field, and the stable code.
struct BadRequest {
  std::string error;
  std::string field;
  std::string code = "invalid_request";
  unsigned status = 400;
};

[[noreturn]] inline void refuse(const JsonError& e) {
  throw BadRequest{e.message, e.field, std::string(to_string(e.code))};
}

/// A request as the routes see it: the path's parameters ({lease_id}, ...), the query.
struct ApiRequest {
  std::string_view method;
  std::string_view path;
  std::string_view query;
  std::string_view body;
  std::vector<std::string> params;  ///< the path template's {...} parts, in order
  std::string_view principal;       ///< who asks: a token's name; empty without tokens
  /// The namespace's Limiter (Api::Impl::lim), once known.
  mutable Limiter* limiter = nullptr;
  /// Whether the response's access-log fields are wanted (Response::log; Api::handle).
  bool log_fields = true;
};

class Metrics;

/// How a route answers its request: counts the response in the metrics (the route's label,
/// the time since the request came), then passes it to the caller's Reply. A plain value that
/// an asynchronous route moves into its callback (not a second std::function around the
/// Reply). A route that moves it out must answer through it exactly once.
struct Answer {
  Api::Reply reply;
  Metrics* metrics = nullptr;
  std::string_view label;  ///< the route's path template (static), or "other"
  std::chrono::steady_clock::time_point start;
  bool log_fields = true;  ///< ApiRequest::log_fields

  void operator()(Response r) const;
  /// False once moved out (or for no Reply).
  explicit operator bool() const noexcept { return static_cast<bool>(reply); }
};

Response reply(unsigned status, const json::object& body);
Response error(unsigned status, std::string message, std::string field = {}, std::string code = {});
/// Appends the JSON object of a decision (decision_json's) to `out`, written directly (no
/// json::object), without its closing brace: a route may add members before closing it.
void open_decision(std::string& out, const Decision& d);
/// The decision's JSON object, with `lease` (when not null) as its last member "lease".
std::string decision_body(const Decision& d, const json::object* lease = nullptr);
/// The status of a denial: 429 (retry), 422 (never fits), 400 (bad request), 503 (store),
/// 404 (lease_not_found); 200 if allowed.
unsigned status_of(const Decision& d);
/// The response for a decision: its status, Retry-After when retrying helps, the
/// RateLimit fields.
Response decision_response(const Decision& d, std::string body, bool openai_headers);
/// Names the call in the request's access log line (Response::log), if `wanted`
/// (ApiRequest::log_fields, Answer::log_fields): without an access log nothing is built.
void log_call(Response& r, bool wanted, std::string_view entity, std::string_view resource,
              const Decision& d);

/// The body of decide, record (`acquire` false) and acquire (true) in the form clients send:
/// one JSON object of "entity", "resource", "amounts" and, for acquire, "timeout_ms",
/// "ttl_ms", "lease", each at most once, strings of printable ASCII without escapes, integers
/// as plain digits; read without building a JSON value.
struct CallBody {
  std::string_view entity;                 ///< a valid name (validate_name), pointing into the body
  std::string_view resource;               ///< likewise
  Amounts amounts;                         ///< valid names, each once, amounts in [0, kMaxExact]
  std::optional<std::int64_t> timeout_ms;  ///< acquire only; not range-checked
  std::optional<std::int64_t> ttl_ms;      ///< acquire only; not range-checked
  std::optional<bool> lease;               ///< acquire only
};
/// True (and `out` set) for a body in that form whose fields parse_body and the routes would
/// accept with these very values; false for any other body (the caller then reads it through
/// parse_body, which accepts it or refuses it with the exact error), never an error itself.
bool read_call_body(std::string_view body, bool acquire, CallBody& out);

/// The body as one strict JSON object (json_body.hpp); an empty body is {} when `empty_ok`.
json::object parse_body(std::string_view body, bool empty_ok = false, json::storage_ptr sp = {});
/// A valid name (entity, resource, limit, ...), else BadRequest naming `field`.
std::string name_field(const json::value& v, const std::string& field);
/// An integer in [min, max], else BadRequest.
std::int64_t int_field(const json::value& v, const std::string& field, std::int64_t min,
                       std::int64_t max);
/// {"limit": amount, ...}: at most 64 entries, amounts in [min, kMaxExact].
Amounts amounts_field(const json::value& v, const std::string& field, std::int64_t min);
/// Refuses the first key of `o` not in `allowed` (unknown_field).
void only_fields(const json::object& o, std::initializer_list<std::string_view> allowed);
/// A limit as GET /v1/limits and /v1/limits/resolve show it.
json::object limit_object(const Limit& l, ConfigSource source);
/// `s` as a JSON string ("" for an empty `s`: an audit event's "none").
std::string json_string(std::string_view s);
/// The value of `key` in a query string ("a=1&b=x%3Ay", percent-decoded), if present.
std::optional<std::string> query_param(std::string_view query, std::string_view key);

/// Memory for the JSON of one request or response, on the stack: a monotonic_resource over a
/// local buffer (spilling to the heap beyond it), so a small body or decision costs no
/// allocation. Objects made from `sp` must not outlive the Scratch.
struct JsonScratch {
  unsigned char buffer[4096];
  json::monotonic_resource resource{buffer, sizeof buffer};
  json::storage_ptr sp{&resource};
};

struct Api::Impl {
  Impl(std::vector<Limiter*> l, Metrics* m, ApiOptions o);
  ~Impl();

  /// One per namespace served; the first serves requests that name none.
  const std::vector<Limiter*> limiters;
  Metrics* metrics;
  ApiOptions options;

  // Waiting acquires run their timers here (one thread, no request holds it).
  boost::asio::io_context waits;
  boost::asio::executor_work_guard<boost::asio::io_context::executor_type> work;
  std::thread waiter;

  // One Discovery per namespace and provider, made on first use (observe).
  std::mutex discovery_mu;
  std::map<std::pair<Limiter*, Provider>, std::unique_ptr<Discovery>> discovery;
  Discovery& discovery_for(Limiter& limiter, Provider p);

  /// Answers `r` through its route (counting it in the metrics), or 404 / 405.
  void route(const ApiRequest& r, Reply reply, std::chrono::steady_clock::time_point start);
  /// The request's body (parse_body), without its optional "namespace" field, which names the
  /// request's namespace (HttpHandler reads it too, to check a token's namespaces). Call it
  /// before lim(r).
  json::object body_of(const ApiRequest& r, bool empty_ok = false, json::storage_ptr sp = {}) const;
  /// The Limiter of the request's namespace: the body's "namespace" (body_of), else the query's
  /// `namespace`, else the first namespace. 404 unknown_namespace for one not served.
  Limiter& lim(const ApiRequest& r) const;
  /// The Limiter serving namespace `ns`, or null.
  Limiter* find_namespace(std::string_view ns) const;

  // api.cpp
  Response health();
  Response ready();
  Response list_limits(const ApiRequest& r);
  Response render_metrics();
  Response reload(const ApiRequest& r);
  // api_leases.cpp
  // Asynchronous routes move `done` out only once nothing can throw any more: a failure
  // before that is answered by route().
  void acquire(const ApiRequest& r, Answer& done);
  void lease_get(const ApiRequest& r, Answer& done);
  void lease_adjust(const ApiRequest& r, Answer& done);
  void lease_extend(const ApiRequest& r, Answer& done);
  void lease_end(const ApiRequest& r, Answer& done, bool refund);
  Response decide(const ApiRequest& r);
  Response record(const ApiRequest& r);
  // api_admin.cpp
  Response resolve(const ApiRequest& r);
  Response stats(const ApiRequest& r);
  Response put_limits(const ApiRequest& r);
  Response delete_limits(const ApiRequest& r);
  Response put_parent(const ApiRequest& r);
  Response delete_parent(const ApiRequest& r);
  // api_observe.cpp
  Response observe(const ApiRequest& r);
  // api_tokens.cpp
  Response tokens(const ApiRequest& r);
  // api_audit.cpp
  /// Appends a change to the namespace's audit log (a failure is logged, not answered: the
  /// change is made).
  void audit(const ApiRequest& r, AuditAction action, std::string_view entity,
             std::string_view resource, std::string before, std::string after);
  Response audit_log(const ApiRequest& r);
};

}  // namespace admit::service
