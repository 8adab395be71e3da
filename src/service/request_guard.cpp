#include "service/request_guard.hpp"

#include <boost/asio/ip/address.hpp>
#include <utility>

#include "admit/core/error.hpp"

namespace admit::service {

namespace {

std::string lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  }
  return out;
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

bool is_ip(std::string_view s) {
  boost::system::error_code ec;
  (void)boost::asio::ip::make_address(std::string(s), ec);
  return !ec;
}

/// A dotted-quad IPv4 address in canonical form (four parts of 0-255, no leading zero): a
/// subset of what is_ip() accepts, read without building a string (the usual Host of a
/// loopback admitd: "127.0.0.1:8787").
bool is_plain_ipv4(std::string_view s) noexcept {
  int parts = 0;
  while (true) {
    std::size_t n = 0;
    unsigned v = 0;
    while (n < s.size() && n < 4 && s[n] >= '0' && s[n] <= '9') {
      v = v * 10 + static_cast<unsigned>(s[n] - '0');
      ++n;
    }
    if (n == 0 || n > 3 || v > 255 || (n > 1 && s[0] == '0')) return false;
    s.remove_prefix(n);
    if (++parts == 4) return s.empty();
    if (s.empty() || s.front() != '.') return false;
    s.remove_prefix(1);
  }
}

bool all_digits(std::string_view s) {
  if (s.empty() || s.size() > 5) return false;
  for (const char c : s) {
    if (c < '0' || c > '9') return false;
  }
  return true;
}

}  // namespace

RequestGuard::RequestGuard(GuardOptions options) {
  for (const std::string& o : options.allowed_origins) origins_.push_back(lower(o));
  for (const std::string& h : options.allowed_hosts) hosts_.push_back(lower(h));
}

bool RequestGuard::host_allowed(std::string_view host) const {
  if (host.empty()) return true;  // HTTP/1.0 without Host: no browser sends that
  if (const std::size_t colon = host.rfind(':'); colon != std::string_view::npos &&
                                                 is_plain_ipv4(host.substr(0, colon)) &&
                                                 all_digits(host.substr(colon + 1))) {
    return true;  // the usual case, decided without a copy
  }
  const std::string h = lower(host);
  std::string_view name = h;
  std::string_view port;
  if (name.front() == '[') {  // [v6]:port
    const std::size_t close = name.find(']');
    if (close == std::string_view::npos) return false;
    port = name.substr(close + 1);
    name = name.substr(1, close - 1);
    if (!port.empty() && (port.front() != ':' || !all_digits(port.substr(1)))) return false;
    if (name.find(':') == std::string_view::npos || !is_ip(name)) return false;
    return true;
  }
  const std::size_t colon = name.rfind(':');
  if (colon != std::string_view::npos) {
    port = name.substr(colon + 1);
    name = name.substr(0, colon);
    if (!all_digits(port)) return false;
  }
  if (name.empty() || name.find(':') != std::string_view::npos) return false;
  if (name == "localhost" || is_ip(name)) return true;
  for (const std::string& allowed : hosts_) {
    if (allowed == "*" || allowed == name || allowed == h) return true;
  }
  return false;
}

bool RequestGuard::origin_allowed(std::string_view origin) const {
  const std::string o = lower(trim(origin));
  for (const std::string& allowed : origins_) {
    if (allowed == o) return true;
  }
  return false;
}

bool RequestGuard::is_json(std::string_view content_type) noexcept {
  const std::string_view media = trim(content_type.substr(0, content_type.find(';')));
  constexpr std::string_view kJson = "application/json";
  if (media.size() != kJson.size()) return false;
  for (std::size_t i = 0; i < media.size(); ++i) {
    const char c = media[i] >= 'A' && media[i] <= 'Z' ? char(media[i] - 'A' + 'a') : media[i];
    if (c != kJson[i]) return false;
  }
  return true;
}

bool RequestGuard::needs_json(std::string_view method, std::string_view body) noexcept {
  if (method == "POST" || method == "PUT" || method == "PATCH") return true;
  return method == "DELETE" && !body.empty();
}

std::optional<Refusal> RequestGuard::check(const http::Request& r) const {
  const std::string_view host = r.header("Host");
  if (!host_allowed(host)) {
    return Refusal{421, "misdirected_host",
                   "Host '" + printable(host) +
                       "' is not an IP address, localhost or a configured name "
                       "(http.allowed_hosts)"};
  }
  const std::string_view origin = r.header("Origin");
  if (!origin.empty() && !origin_allowed(origin)) {
    return Refusal{403, "forbidden_origin",
                   "Origin '" + printable(origin) +
                       "' is not allowed (http.allowed_origins); admitd is not for browsers "
                       "of other sites"};
  }
  if (needs_json(r.method, r.body) && !is_json(r.header("Content-Type"))) {
    return Refusal{
        415, "unsupported_media_type",
        "Content-Type must be application/json, not '" + printable(r.header("Content-Type")) + "'"};
  }
  return std::nullopt;
}

std::optional<http::Response> RequestGuard::preflight(const http::Request& r) const {
  if (r.method != "OPTIONS") return std::nullopt;
  const std::string_view origin = r.header("Origin");
  if (origin.empty() || r.header("Access-Control-Request-Method").empty() ||
      !origin_allowed(origin)) {
    return std::nullopt;
  }
  http::Response res;
  res.status = 204;
  res.headers.emplace_back("Access-Control-Allow-Origin", std::string(trim(origin)));
  res.headers.emplace_back("Access-Control-Allow-Methods", "GET, POST, PUT, PATCH, DELETE");
  res.headers.emplace_back("Access-Control-Allow-Headers", "Authorization, Content-Type");
  res.headers.emplace_back("Access-Control-Max-Age", "600");
  res.headers.emplace_back("Vary", "Origin");
  return res;
}

void RequestGuard::add_cors_headers(const http::Request& r, http::Response& response) const {
  const std::string_view origin = r.header("Origin");
  if (origin.empty() || !origin_allowed(origin)) return;
  response.headers.emplace_back("Access-Control-Allow-Origin", std::string(trim(origin)));
  response.headers.emplace_back("Access-Control-Expose-Headers", "Retry-After");
  response.headers.emplace_back("Vary", "Origin");
}

}  // namespace admit::service
