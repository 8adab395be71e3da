#include "service/http_handler.hpp"

#include <string>
#include <utility>

#include "service/api.hpp"

namespace admit::service {

http::Response to_http(const Response& r) {
  http::Response out;
  out.status = r.status;
  out.headers.emplace_back("Content-Type", "application/json");
  if (r.retry_after >= 0) out.headers.emplace_back("Retry-After", std::to_string(r.retry_after));
  if (!r.allow.empty()) out.headers.emplace_back("Allow", r.allow);
  out.body.reserve(r.body.size() + 1);
  out.body = r.body;
  out.body += '\n';
  return out;
}

void HttpHandler::handle(const http::Request& request, http::Exchange exchange) {
  exchange.respond(to_http(api_.handle(request.method, request.target, request.body)));
}

http::Response HttpHandler::reject(unsigned status, std::string_view message) {
  return to_http(Response{status, R"({"error":")" + std::string(message) + R"("})", -1, {}});
}

}  // namespace admit::service
