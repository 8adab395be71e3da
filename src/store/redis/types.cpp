// The value types of redis_client.hpp: replies, errors, endpoints and URLs, key slots, scripts.
#include <algorithm>
#include <array>
#include <boost/url/parse.hpp>
#include <boost/url/parse_query.hpp>
#include <boost/url/pct_string_view.hpp>
#include <boost/url/url_view.hpp>
#include <charconv>
#include <cstdio>
#include <utility>

#include "admit/core/error.hpp"
#include "admit/store/redis_client.hpp"
#include "core.hpp"

namespace admit::redis {

// ---- Reply ----

std::string_view Reply::error_code() const {
  if (type != Type::error) return {};
  const std::string_view s = str;
  return s.substr(0, s.find(' '));
}

Reply Reply::error(std::string message) {
  Reply r;
  r.type = Type::error;
  r.str = std::move(message);
  return r;
}

std::string_view to_string(Reply::Type type) {
  switch (type) {
    case Reply::Type::nil:
      return "nil";
    case Reply::Type::string:
      return "string";
    case Reply::Type::status:
      return "status";
    case Reply::Type::error:
      return "error";
    case Reply::Type::integer:
      return "integer";
    case Reply::Type::array:
      return "array";
  }
  return "unknown";
}

namespace {

void render(const Reply& r, std::string& out) {
  switch (r.type) {
    case Reply::Type::nil:
      out += "nil";
      return;
    case Reply::Type::string:
      out += '"';
      for (char c : r.str) {
        if (c == '"' || c == '\\') {
          out += '\\';
          out += c;
        } else if (static_cast<unsigned char>(c) < 0x20 || static_cast<unsigned char>(c) >= 0x7f) {
          char buf[8];
          std::snprintf(buf, sizeof buf, "\\x%02x",
                        static_cast<unsigned>(static_cast<unsigned char>(c)));
          out += buf;
        } else {
          out += c;
        }
      }
      out += '"';
      return;
    case Reply::Type::status:
      out += r.str;
      return;
    case Reply::Type::error:
      out += "(error) " + r.str;
      return;
    case Reply::Type::integer:
      out += "(integer) " + std::to_string(r.integer);
      return;
    case Reply::Type::array:
      out += '[';
      for (std::size_t i = 0; i < r.elements.size(); ++i) {
        if (i > 0) out += ", ";
        render(r.elements[i], out);
      }
      out += ']';
      return;
  }
}

}  // namespace

std::string to_string(const Reply& reply) {
  std::string out;
  render(reply, out);
  return out;
}

// ---- errors ----

namespace {

class Category final : public std::error_category {
 public:
  const char* name() const noexcept override { return "admit.redis"; }
  std::string message(int ev) const override {
    switch (static_cast<Errc>(ev)) {
      case Errc::timeout:
        return "redis request timed out";
      case Errc::connection_failed:
        return "could not connect to redis";
      case Errc::connection_lost:
        return "redis connection lost";
      case Errc::auth_failed:
        return "redis authentication failed";
      case Errc::protocol_error:
        return "redis protocol error";
      case Errc::too_many_redirects:
        return "too many redis cluster redirects";
      case Errc::cluster_unavailable:
        return "redis cluster slot map unavailable";
      case Errc::overloaded:
        return "too many redis requests pending";
      case Errc::shutdown:
        return "redis client shut down";
    }
    return "unknown redis client error";
  }
};

}  // namespace

const std::error_category& error_category() noexcept {
  static const Category category;
  return category;
}

std::error_code make_error_code(Errc e) noexcept { return {static_cast<int>(e), error_category()}; }

// ---- endpoints and URLs ----

std::string Endpoint::to_string() const {
  const bool v6 = host.find(':') != std::string::npos;
  return (v6 ? "[" + host + "]" : host) + ":" + std::to_string(port);
}

namespace {

bool parse_port(std::string_view s, std::uint16_t& port) {
  unsigned v = 0;
  const auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc{} || p != s.data() + s.size() || v == 0 || v > 65535) return false;
  port = static_cast<std::uint16_t>(v);
  return true;
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

}  // namespace

namespace {

constexpr std::string_view kTlsParameters = "ca, cert, key, verify, server_name";

// Applies the query of a rediss:// URL ("ca=...&verify=none") to o.tls.
void apply_tls_query(std::string_view query, const std::string& value, ClientOptions& o) {
  const auto params = boost::urls::parse_query(query);
  if (!params) throw ValidationError("url", value, "the query is not valid");
  std::vector<std::string> seen;
  for (const auto& p : *params) {
    const std::string key = p.key.decode();
    const std::string v = p.value.decode();
    if (key.empty() && !p.has_value) continue;  // "rediss://h?" or "?a=1&&b=2"
    if (std::find(seen.begin(), seen.end(), key) != seen.end()) {
      throw ValidationError("url", value, "the parameter '" + key + "' is given twice");
    }
    seen.push_back(key);
    const bool needs_value = key != "verify";
    if (needs_value && (!p.has_value || v.empty())) {
      throw ValidationError("url", value, "the parameter '" + key + "' needs a value");
    }
    if (key == "ca") {
      o.tls.ca_file = v;
    } else if (key == "cert") {
      o.tls.cert_file = v;
    } else if (key == "key") {
      o.tls.key_file = v;
    } else if (key == "server_name") {
      o.tls.server_name = v;
    } else if (key == "verify") {
      if (v == "full") {
        o.tls.verify = true;
      } else if (v == "none") {
        o.tls.verify = false;
      } else {
        throw ValidationError("url", value, "verify must be full or none");
      }
    } else {
      throw ValidationError(
          "url", value,
          "unknown parameter '" + key + "' (expected " + std::string(kTlsParameters) + ")");
    }
  }
}

std::string decoded(std::string_view part, const std::string& value) {
  const auto pct = boost::urls::make_pct_string_view(part);
  if (!pct) throw ValidationError("url", value, "bad percent-encoding in the credentials");
  return pct->decode();
}

// "user:password" (either part may be empty) into o.username, o.password.
void set_credentials(std::string user, std::string password, ClientOptions& o) {
  o.username = std::move(user);
  o.password = std::move(password);
  if (!o.username.empty() && o.password.empty()) {
    // "redis://secret@host" is how some tools write a password without a user.
    o.password = std::exchange(o.username, {});
  }
}

// "[rediss+]cluster://[userinfo@]host:port,host:port[?query]" after the scheme.
ClientOptions parse_cluster_url(std::string_view rest, bool tls, const std::string& value) {
  ClientOptions o;
  o.cluster = true;
  o.tls.enabled = tls;
  if (rest.find('#') != std::string_view::npos) {
    throw ValidationError("url", value, "a fragment is not supported");
  }
  const auto q = rest.find('?');
  const std::string_view query = q == std::string_view::npos ? "" : rest.substr(q + 1);
  std::string_view hosts = rest.substr(0, q);
  if (q != std::string_view::npos) {
    if (!tls) throw ValidationError("url", value, "parameters need rediss+cluster:// (TLS)");
    apply_tls_query(query, value, o);
  }
  const auto at = hosts.rfind('@');
  if (at != std::string_view::npos) {
    const std::string_view userinfo = hosts.substr(0, at);
    const auto colon = userinfo.find(':');
    set_credentials(decoded(userinfo.substr(0, colon), value),
                    colon == std::string_view::npos ? std::string()
                                                    : decoded(userinfo.substr(colon + 1), value),
                    o);
    hosts.remove_prefix(at + 1);
  }
  if (!hosts.empty() && hosts.back() == '/') hosts.remove_suffix(1);
  try {
    o.seeds = parse_endpoints(hosts);
  } catch (const ValidationError& e) {
    throw ValidationError("url", value, e.reason());
  }
  return o;
}

}  // namespace

ClientOptions parse_url(std::string_view url) {
  const std::string value(url);
  constexpr std::string_view kCluster = "redis+cluster://";
  constexpr std::string_view kTlsCluster = "rediss+cluster://";
  if (url.starts_with(kCluster)) {
    return parse_cluster_url(url.substr(kCluster.size()), false, value);
  }
  if (url.starts_with(kTlsCluster)) {
    return parse_cluster_url(url.substr(kTlsCluster.size()), true, value);
  }
  const auto parsed = boost::urls::parse_uri(url);
  if (!parsed) throw ValidationError("url", value, "not a URL (" + parsed.error().message() + ")");
  const boost::urls::url_view& u = *parsed;
  const bool tls = u.scheme() == "rediss";
  if (u.scheme() != "redis" && !tls) {
    throw ValidationError(
        "url", value,
        "the scheme must be redis://, rediss:// (TLS), redis+cluster:// or rediss+cluster://");
  }
  if (u.has_fragment()) throw ValidationError("url", value, "a fragment is not supported");
  ClientOptions o;
  o.tls.enabled = tls;
  if (u.has_query()) {
    if (!tls) {
      throw ValidationError("url", value,
                            "a query is not supported (TLS parameters need rediss://)");
    }
    apply_tls_query(u.encoded_query(), value, o);
  }
  Endpoint ep;
  ep.host = u.host_address();
  if (ep.host.empty()) throw ValidationError("url", value, "the host is missing");
  if (u.has_port() && !parse_port(u.port(), ep.port)) {
    throw ValidationError("url", value, "the port must be 1..65535");
  }
  o.seeds.push_back(std::move(ep));
  if (u.has_userinfo()) {
    set_credentials(u.user(), u.has_password() ? std::string(u.password()) : std::string(), o);
  }
  std::string_view path = u.encoded_path();
  if (!path.empty() && path != "/") {
    path.remove_prefix(1);
    int db = 0;
    const auto [p, ec] = std::from_chars(path.data(), path.data() + path.size(), db);
    if (ec != std::errc{} || p != path.data() + path.size() || db < 0) {
      throw ValidationError("url", value, "the path must be a database number (/0, /1, ...)");
    }
    o.db = db;
  }
  return o;
}

std::string display_url(const ClientOptions& options) {
  std::string out = options.tls.enabled ? "rediss" : "redis";
  if (options.cluster) {
    out += "+cluster://";
    for (std::size_t i = 0; i < options.seeds.size(); ++i) {
      if (i > 0) out += ',';
      out += options.seeds[i].to_string();
    }
    return out;
  }
  out += "://";
  if (!options.seeds.empty()) out += options.seeds.front().to_string();
  return out + "/" + std::to_string(options.db);
}

std::vector<Endpoint> parse_endpoints(std::string_view list) {
  const std::string value(list);
  std::vector<Endpoint> out;
  for (std::size_t pos = 0;;) {
    const auto comma = list.find(',', pos);
    const std::string_view item =
        trim(list.substr(pos, comma == std::string_view::npos ? comma : comma - pos));
    Endpoint ep;
    std::string_view host;
    std::string_view port;
    if (!item.empty() && item.front() == '[') {
      const auto close = item.find(']');
      if (close == std::string_view::npos || close + 1 >= item.size() || item[close + 1] != ':') {
        throw ValidationError("endpoints", value, "expected [ipv6]:port");
      }
      host = item.substr(1, close - 1);
      port = item.substr(close + 2);
    } else {
      const auto colon = item.rfind(':');
      if (colon == std::string_view::npos) {
        throw ValidationError("endpoints", value, "expected host:port[,host:port...]");
      }
      host = item.substr(0, colon);
      port = item.substr(colon + 1);
    }
    if (host.empty()) throw ValidationError("endpoints", value, "a host is empty");
    if (!parse_port(port, ep.port)) {
      throw ValidationError("endpoints", value, "a port is not in 1..65535");
    }
    ep.host = std::string(host);
    out.push_back(std::move(ep));
    if (comma == std::string_view::npos) break;
    pos = comma + 1;
  }
  return out;
}

// ---- key slots ----

namespace {

constexpr std::array<std::uint16_t, 256> kCrc16Table = [] {
  std::array<std::uint16_t, 256> t{};
  for (unsigned i = 0; i < 256; ++i) {
    unsigned crc = i << 8;
    for (int b = 0; b < 8; ++b) crc = (crc & 0x8000U) != 0 ? (crc << 1) ^ 0x1021U : crc << 1;
    t[i] = static_cast<std::uint16_t>(crc & 0xffffU);
  }
  return t;
}();

std::uint16_t crc16(std::string_view s) noexcept {
  unsigned crc = 0;
  for (char c : s) {
    crc =
        ((crc << 8) & 0xff00U) ^ kCrc16Table[((crc >> 8) ^ static_cast<unsigned char>(c)) & 0xffU];
  }
  return static_cast<std::uint16_t>(crc);
}

}  // namespace

std::uint16_t key_slot(std::string_view key) noexcept {
  const auto open = key.find('{');
  if (open != std::string_view::npos) {
    const auto close = key.find('}', open + 1);
    if (close != std::string_view::npos && close > open + 1) {
      key = key.substr(open + 1, close - open - 1);
    }
  }
  return static_cast<std::uint16_t>(crc16(key) & 16383U);
}

// ---- scripts ----

Script::Script(std::string source) : data_(std::make_shared<const Data>(std::move(source))) {}

const std::string& Script::source() const { return data_->source; }

const std::string& Script::sha1() const {
  static const std::string unknown;
  const std::string* sha1 = data_->known_sha1();
  return sha1 != nullptr ? *sha1 : unknown;
}

}  // namespace admit::redis
