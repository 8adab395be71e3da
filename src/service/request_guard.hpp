// The checks that keep a web page from using admitd through a user's browser, made before
// the Api sees a request (HttpHandler). See docs/admitd.md, "Security".
//
//   Host          an IP literal (any: DNS rebinding needs a name), `localhost`, or a name in
//                 allowed_hosts; else 421 (code "misdirected_host"). A request without Host
//                 (HTTP/1.0 only: the server refuses HTTP/1.1 without one) passes.
//   Origin        absent, or in allowed_origins (exact, case-insensitive; default: none);
//                 else 403 (code "forbidden_origin"). Browsers send Origin with every
//                 cross-site request and every POST, so a page elsewhere is refused whatever
//                 its method or body.
//   Content-Type  POST, PUT and PATCH, and a DELETE with a body, need application/json (with
//                 parameters or not: `application/json; charset=utf-8`); else 415 (code
//                 "unsupported_media_type"). A cross-site form or `no-cors` fetch can send
//                 text/plain or no type without a preflight, never application/json.
//
// A CORS preflight (OPTIONS with Origin and Access-Control-Request-Method) from an allowed
// origin is answered 204 with the Access-Control-Allow-* headers; responses to an allowed
// Origin carry Access-Control-Allow-Origin.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/http/server.hpp"

namespace admit::service {

struct GuardOptions {
  /// Origins a browser page may call admitd from: "https://app.example.com[:port]".
  std::vector<std::string> allowed_origins;
  /// Host names besides IP literals and `localhost`: "admit.internal" (any port) or
  /// "admit.internal:8787" (that port only); "*" allows any Host.
  std::vector<std::string> allowed_hosts;
};

/// A request the guard refuses: the status, a stable code and a message.
struct Refusal {
  unsigned status = 400;
  std::string code;
  std::string message;
};

class RequestGuard {
 public:
  RequestGuard() = default;
  explicit RequestGuard(GuardOptions options);

  /// Host, then Origin, then Content-Type, as above: the first refusal, or std::nullopt.
  std::optional<Refusal> check(const http::Request& r) const;

  bool host_allowed(std::string_view host) const;
  bool origin_allowed(std::string_view origin) const;
  /// Whether a Content-Type value is application/json (any case, parameters allowed).
  static bool is_json(std::string_view content_type) noexcept;
  /// Whether a request of `method` with `body` must be application/json.
  static bool needs_json(std::string_view method, std::string_view body) noexcept;

  /// The 204 answer to a CORS preflight from an allowed origin, or std::nullopt when `r` is
  /// not one (check() has already refused a preflight from any other origin).
  std::optional<http::Response> preflight(const http::Request& r) const;
  /// Adds Access-Control-Allow-Origin (and Vary: Origin) to a response to an allowed Origin.
  void add_cors_headers(const http::Request& r, http::Response& response) const;

 private:
  std::vector<std::string> origins_;  // lower case
  std::vector<std::string> hosts_;    // lower case
};

}  // namespace admit::service
