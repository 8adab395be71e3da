// admitd's routes on the shared HTTP server (src/common/http): each request goes to the Api,
// whose Response becomes a JSON response (Content-Type, Retry-After, Allow). The transport
// (keep-alive, limits, timeouts, graceful stop) is admit::http::Server's.
#pragma once

#include <string_view>

#include "common/http/server.hpp"

namespace admit::service {

class Api;
struct Response;

/// The HTTP response for an Api response: JSON body and a final newline.
http::Response to_http(const Response& r);

class HttpHandler final : public http::Handler {
 public:
  /// `api` must outlive the handler.
  explicit HttpHandler(Api& api) : api_(api) {}

  void handle(const http::Request& request, http::Exchange exchange) override;
  http::Response reject(unsigned status, std::string_view message) override;

 private:
  Api& api_;
};

}  // namespace admit::service
