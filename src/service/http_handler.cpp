#include "service/http_handler.hpp"

#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <boost/json/value.hpp>
#include <optional>
#include <string>
#include <utility>

#include "service/api.hpp"
#include "service/proxy/gateway.hpp"

namespace admit::service {

namespace json = boost::json;

namespace {

http::Response refuse(unsigned status, std::string_view code, const std::string& message) {
  return to_http(Response{status,
                          json::serialize(json::object{{"error", message}, {"code", code}}),
                          -1,
                          {},
                          {},
                          {},
                          {}});
}

}  // namespace

http::Response to_http(Response r) {
  http::Response out;
  out.status = r.status;
  const bool json = r.content_type.empty();
  if (json) {
    out.content_type = "application/json";  // a literal: no string per response
  } else {
    out.headers.emplace_back("Content-Type", std::move(r.content_type));
  }
  if (r.retry_after < 0 && r.allow.empty() && out.headers.empty()) {
    out.headers = std::move(r.headers);  // the usual case: the Api's headers as they are
  } else {
    out.headers.reserve(out.headers.size() + r.headers.size() + 2);
    if (r.retry_after >= 0) out.headers.emplace_back("Retry-After", std::to_string(r.retry_after));
    if (!r.allow.empty()) out.headers.emplace_back("Allow", std::move(r.allow));
    for (auto& h : r.headers) out.headers.push_back(std::move(h));
  }
  out.fields = std::move(r.fields);
  out.log_fields = std::move(r.log);
  out.body = std::move(r.body);
  if (json) out.body += '\n';  // JSON; other types are sent as they are
  return out;
}

std::string request_namespace(std::string_view target, std::string_view body,
                              std::string_view fallback) {
  boost::system::error_code ec;
  const json::value v = json::parse(json::string_view(body.data(), body.size()), ec);
  if (!ec && v.is_object()) {
    if (const json::value* ns = v.get_object().if_contains("namespace")) {
      if (const json::string* s = ns->if_string()) return std::string(*s);
    }
  }
  const std::size_t q = target.find('?');
  std::optional<std::string> ns;
  if (q != std::string_view::npos && find_query_param(target.substr(q + 1), "namespace", ns) &&
      ns) {
    return *ns;
  }
  return std::string(fallback);
}

void HttpHandler::handle(const http::Request& request, http::Exchange exchange) {
  if (const std::optional<Refusal> r = guard_.check(request)) {
    return exchange.respond(refuse(r->status, r->code, r->message));
  }
  if (std::optional<http::Response> pre = guard_.preflight(request)) {
    return exchange.respond(std::move(*pre));
  }
  const std::string_view path = request.target.substr(0, request.target.find('?'));
  const bool gateway = gateway_ != nullptr && Gateway::serves(request.method, path);
  const Principal* who = nullptr;
  if (const std::optional<Scope> scope = required_scope(request.method, path);
      scope && auth_.enabled() && !(gateway && gateway_->authenticates())) {
    const std::string_view authorization = request.header("Authorization");
    who = auth_.authenticate(authorization);
    // The body's namespace is read only for a token limited to some namespaces.
    const Auth::Verdict v = auth_.check(who, *scope,
                                        who != nullptr && !who->namespaces.empty()
                                            ? request_namespace(request.target, request.body, ns_)
                                            : ns_);
    if (v.status != 0) {
      const bool missing = authorization.empty();
      http::Response res =
          refuse(v.status, v.status == 401 ? "unauthorized" : "forbidden",
                 missing ? std::string("a bearer token is required (Authorization: Bearer ...)")
                 : who == nullptr ? std::string("invalid bearer token")
                                  : v.message);
      // RFC 6750 section 3.
      res.headers.emplace_back("WWW-Authenticate",
                               v.status == 403
                                   ? R"(Bearer realm="admitd", error="insufficient_scope")"
                               : missing ? R"(Bearer realm="admitd")"
                                         : R"(Bearer realm="admitd", error="invalid_token")");
      guard_.add_cors_headers(request, res);
      return exchange.respond(std::move(res));
    }
  }
  if (gateway) return gateway_->handle(request, std::move(exchange));
  // The CORS headers depend on the request's Origin, read now: the answer may come later, on
  // another thread, when the request's views are gone.
  // They go last, after the Api's fields.
  http::Response cors;
  guard_.add_cors_headers(request, cors);
  std::string cors_fields;
  for (const auto& [name, value] : cors.headers) http::append_field(cors_fields, name, value);
  api_.handle(
      request.method, request.target, request.body,
      [exchange, cors = std::move(cors_fields)](Response r) {
        http::Response res = to_http(std::move(r));
        res.fields.append(cors);
        exchange.respond(std::move(res));
      },
      who != nullptr ? std::string_view(who->name) : std::string_view(), request.access_log);
}

http::Response HttpHandler::reject(unsigned status, std::string_view message) {
  return to_http(
      Response{status, R"({"error":")" + std::string(message) + R"("})", -1, {}, {}, {}, {}});
}

}  // namespace admit::service
