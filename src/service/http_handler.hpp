// admitd's routes on the shared HTTP server (src/common/http): each request passes the
// RequestGuard (Host, Origin, Content-Type) and, when tokens are configured, Auth (the bearer
// token, its scope and namespaces), then goes to the Api, whose Response becomes a JSON
// response (Content-Type, Retry-After, Allow). The transport (keep-alive, limits, timeouts,
// graceful stop) is admit::http::Server's.
#pragma once

#include <string>
#include <string_view>
#include <utility>

#include "common/http/server.hpp"
#include "service/auth.hpp"
#include "service/request_guard.hpp"

namespace admit::service {

class Api;
struct Response;

/// The HTTP response for an Api response: its body with a final newline, as JSON (or, with a
/// Response::content_type, the body as it is with that type).
http::Response to_http(Response r);

/// The namespace a request names, as the Api reads it: the string field `namespace` of a JSON
/// object body, else the query's `namespace` parameter, else `fallback`.
std::string request_namespace(std::string_view target, std::string_view body,
                              std::string_view fallback);

class Gateway;

class HttpHandler final : public http::Handler {
 public:
  /// `api` must outlive the handler. `ns` is the namespace of a request that names none.
  /// Without `auth` tokens every request is allowed (the guard still checks).
  explicit HttpHandler(Api& api, Auth auth = {}, RequestGuard guard = {},
                       std::string ns = "default")
      : api_(api), auth_(std::move(auth)), guard_(std::move(guard)), ns_(std::move(ns)) {}

  /// Serves the gateway's routes (Gateway::serves) through `gateway` (null: none), which must
  /// outlive the handler. A gateway with callers authenticates its requests itself; without,
  /// they need a decide token as every decision route does (when tokens are configured).
  void set_gateway(Gateway* gateway) { gateway_ = gateway; }

  void handle(const http::Request& request, http::Exchange exchange) override;
  http::Response reject(unsigned status, std::string_view message) override;

 private:
  Gateway* gateway_ = nullptr;
  Api& api_;
  Auth auth_;
  RequestGuard guard_;
  std::string ns_;
};

}  // namespace admit::service
