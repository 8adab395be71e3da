// admitd's HTTP API without the networking: routes a request (method, target, body) to the
// Limiter and renders the JSON response. The routes and their bodies are docs/api.md's (and
// GET /openapi.json's, which a test checks against the route table here). Thread-safe (the
// Limiter is); never throws.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "admit/core/time.hpp"

namespace admit {
class Limiter;
struct Decision;
}  // namespace admit

namespace admit::service {

struct Response {
  unsigned status = 200;
  std::string body;               ///< JSON
  std::int64_t retry_after = -1;  ///< seconds for a Retry-After header; -1: none
  std::string allow;              ///< methods for an Allow header (405); empty: none
  std::string content_type;       ///< empty: application/json
  std::vector<std::pair<std::string, std::string>> headers;  ///< more (RateLimit, ...)
  /// Not sent: fields for the access log line (entity, resource, code).
  std::vector<std::pair<std::string, std::string>> log;
  /// More header fields after `headers`, in their wire form (http::Response::fields).
  std::string fields = {};
};

/// Renders a Decision as the JSON object the API returns.
std::string decision_json(const Decision& d);

/// The value of `key` in a query string ("a=1&b=x%3Ay", percent-decoded): nullopt if absent,
/// "" for a key without a value. @return false for a malformed query string (out untouched).
bool find_query_param(std::string_view query, std::string_view key,
                      std::optional<std::string>& out);

/// One route: what GET /openapi.json and docs/api.md describe. `path` is a template
/// ("/v1/leases/{lease_id}/commit"); `scope` is "none", "decide" or "admin" (auth.hpp).
struct RouteInfo {
  std::string_view method;
  std::string_view path;
  std::string_view scope;
  std::string_view summary;
};
/// Every route the Api serves, in the order docs/api.md lists them.
std::span<const RouteInfo> routes();

class Metrics;

struct ApiOptions {
  /// The longest wait an acquire's timeout_ms may ask for.
  Micros max_wait = 5 * kMicrosPerMinute;
  /// Also answer OpenAI-style x-ratelimit-* headers (rate_limit_headers.hpp).
  bool openai_headers = false;
  /// POST /v1/admin/reload: reads the config file again (Reloader::reload) on behalf of the
  /// principal given; applied, and a message (what changed, or why the file was refused).
  /// Empty: the route answers 404.
  std::function<std::pair<bool, std::string>(std::string_view principal)> reload;
};

class Api {
 public:
  /// `metrics` (optional; must outlive the Api) counts each decision and request and serves
  /// GET /metrics; without it, /metrics is a 404. Starts one thread for waiting acquires
  /// (timeout_ms > 0): a waiter costs a timer on it, not a thread.
  explicit Api(Limiter& limiter, Metrics* metrics = nullptr, ApiOptions options = {});
  /// Several namespaces, a Limiter each (of distinct namespaces, sharing one store or not):
  /// a request names its namespace in its body's "namespace" field or the query's
  /// `namespace`; one that names none goes to limiters[0]. @throws std::invalid_argument for
  /// an empty list.
  Api(std::vector<Limiter*> limiters, Metrics* metrics = nullptr, ApiOptions options = {});
  ~Api();
  Api(const Api&) = delete;
  Api& operator=(const Api&) = delete;

  using Reply = std::function<void(Response)>;

  /// Handles one request; `done` receives the response exactly once: inside this call, or
  /// later on another thread (a waiting acquire, a store's I/O thread). `target` is the
  /// request target (a query string is read by the routes that take one).
  /// `principal` names the caller in the audit log (a token's name; empty: "anonymous").
  /// Without `log_fields` the response's Response::log stays empty (no access log to fill).
  void handle(std::string_view method, std::string_view target, std::string_view body, Reply done,
              std::string_view principal = {}, bool log_fields = true) noexcept;
  /// The same, waiting for the response (tests, tools).
  Response handle(std::string_view method, std::string_view target, std::string_view body) noexcept;

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace admit::service
