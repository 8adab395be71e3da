// admitd's HTTP API without the networking: routes a request (method, target, body) to the
// Limiter and renders the JSON response. Thread-safe (the Limiter is); never throws.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

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
};

/// Renders a Decision as the JSON object the API returns.
std::string decision_json(const Decision& d);

class Metrics;

class Api {
 public:
  /// `metrics` (optional; must outlive the Api) counts each decision and request and serves
  /// GET /metrics; without it, /metrics is a 404.
  explicit Api(Limiter& limiter, Metrics* metrics = nullptr)
      : limiter_(limiter), metrics_(metrics) {}

  /// Handles one request. `target` is the request target (a query string is ignored).
  Response handle(std::string_view method, std::string_view target, std::string_view body) noexcept;

 private:
  Response route(std::string_view method, std::string_view path, std::string_view body);
  Response decide(std::string_view body);
  Response acquire(std::string_view body);
  Response limits();
  Response metrics();

  Limiter& limiter_;
  Metrics* metrics_;
};

}  // namespace admit::service
