#include "common/http/response_bytes.hpp"

#include <algorithm>
#include <boost/beast/http/status.hpp>
#include <charconv>
#include <cstdint>
#include <cstring>

namespace admit::http {

namespace {

bool safe_bytes(const char* p, std::size_t n) {
  for (; n > 0; ++p, --n) {
    if (*p == '\r' || *p == '\n' || *p == '\0') return false;
  }
  return true;
}

}  // namespace

// No CR, LF or NUL. Eight bytes at a time: all three are below 0x0E, so a word without a byte
// below 0x0E (the usual case: TAB is the only other one) needs no closer look.
bool safe_field(std::string_view s) noexcept {
  constexpr std::uint64_t kOnes = 0x0101010101010101ULL;
  constexpr std::uint64_t kHighs = 0x8080808080808080ULL;
  const char* p = s.data();
  std::size_t n = s.size();
  for (; n >= 8; p += 8, n -= 8) {
    std::uint64_t w;
    std::memcpy(&w, p, 8);
    if (((w - kOnes * 0x0E) & ~w & kHighs) != 0 && !safe_bytes(p, 8)) return false;
  }
  return safe_bytes(p, n);
}

void append_field(std::string& fields, std::string_view name, std::string_view value) {
  if (name.empty() || !safe_field(name) || !safe_field(value)) return;
  const std::size_t at = fields.size();
  fields.resize(at + name.size() + value.size() + 4);
  char* p = fields.data() + at;
  p = std::copy(name.begin(), name.end(), p);
  *p++ = ':';
  *p++ = ' ';
  p = std::copy(value.begin(), value.end(), p);
  *p++ = '\r';
  *p = '\n';
}

namespace {

void append_number(std::string& out, std::size_t n) {
  char buf[24];
  const auto end = std::to_chars(buf, buf + sizeof buf, n).ptr;
  out.append(buf, end);
}

void field(std::string& out, std::string_view name, std::string_view value) {
  append_field(out, name, value);
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
  if (!r.content_type.empty()) field(out, "Content-Type", r.content_type);
  for (const auto& [name, value] : r.headers) field(out, name, value);
  out.append(r.fields);
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
