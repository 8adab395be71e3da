#include "common/http/response_bytes.hpp"

#include <algorithm>
#include <boost/beast/http/status.hpp>
#include <charconv>

namespace admit::http {

namespace {

bool safe(std::string_view s) {
  return std::none_of(s.begin(), s.end(),
                      [](char c) { return c == '\r' || c == '\n' || c == '\0'; });
}

void append_number(std::string& out, std::size_t n) {
  char buf[24];
  const auto end = std::to_chars(buf, buf + sizeof buf, n).ptr;
  out.append(buf, end);
}

void field(std::string& out, std::string_view name, std::string_view value) {
  if (name.empty() || !safe(name) || !safe(value)) return;
  out.append(name).append(": ").append(value).append("\r\n");
}

}  // namespace

void format_response(std::string& out, const Response& r, const ResponseFraming& framing) {
  const auto reason =
      boost::beast::http::obsolete_reason(static_cast<boost::beast::http::status>(r.status));
  const bool bodiless = r.status < 200 || r.status == 204 || r.status == 304;
  out.clear();
  out.append(framing.version == 10 ? "HTTP/1.0 " : "HTTP/1.1 ");
  append_number(out, r.status);
  out.push_back(' ');
  out.append(reason.data(), reason.size()).append("\r\n");
  if (!framing.server.empty()) field(out, "Server", framing.server);
  if (!framing.request_id.empty()) field(out, "X-Request-Id", framing.request_id);
  for (const auto& [name, value] : r.headers) field(out, name, value);
  if (framing.version == 10 && framing.keep_alive) out.append("Connection: keep-alive\r\n");
  if (framing.version != 10 && !framing.keep_alive) out.append("Connection: close\r\n");
  if (!bodiless) {
    out.append("Content-Length: ");
    append_number(out, r.body.size());
    out.append("\r\n");
  }
  out.append("\r\n");
  if (!bodiless && !framing.head) out.append(r.body);
}

}  // namespace admit::http
