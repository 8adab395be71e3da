#include "service/auth.hpp"

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include <algorithm>
#include <boost/asio/ip/address.hpp>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <stdexcept>
#include <utility>

#include "admit/core/error.hpp"

namespace admit::service {

namespace {

using Digest = std::array<unsigned char, 32>;

Digest sha256(std::string_view s) {
  Digest d{};
  unsigned int n = 0;
  if (EVP_Digest(s.data(), s.size(), d.data(), &n, EVP_sha256(), nullptr) != 1 || n != d.size()) {
    throw std::runtime_error("SHA-256 failed (OpenSSL)");
  }
  return d;
}

/// Index + 1 of `d` in `all`, 0 if absent; every entry compared, whatever matched before.
std::size_t scan(const std::vector<Digest>& all, const Digest& d) noexcept {
  std::size_t found = 0;
  for (std::size_t i = 0; i < all.size(); ++i) {
    const std::size_t differs = CRYPTO_memcmp(all[i].data(), d.data(), d.size()) != 0 ? 1 : 0;
    found |= (i + 1) & (differs - 1);  // differs - 1: all ones on a match, 0 otherwise
  }
  return found;
}

/// Bytes a token may hold: printable ASCII without space (what an Authorization header
/// carries after "Bearer ").
bool token_chars_ok(std::string_view t) {
  for (const char c : t) {
    if (c <= ' ' || c > '~') return false;
  }
  return true;
}

bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i) {
    const auto lower = [](char c) { return c >= 'A' && c <= 'Z' ? char(c - 'A' + 'a') : c; };
    if (lower(a[i]) != lower(b[i])) return false;
  }
  return true;
}

bool starts_with_path(std::string_view path, std::string_view prefix) {
  return path == prefix || (path.starts_with(prefix) && path[prefix.size()] == '/');
}

}  // namespace

std::string_view bearer_token(std::string_view v) noexcept {
  constexpr std::string_view kScheme = "bearer";
  if (v.size() <= kScheme.size() || !iequals(v.substr(0, kScheme.size()), kScheme)) return {};
  v.remove_prefix(kScheme.size());
  if (v.front() != ' ') return {};
  while (!v.empty() && v.front() == ' ') v.remove_prefix(1);
  while (!v.empty() && (v.back() == ' ' || v.back() == '\t')) v.remove_suffix(1);
  return token_chars_ok(v) ? v : std::string_view{};
}

bool SecretDigests::add(std::string_view secret) {
  const Digest d = sha256(secret);
  if (scan(digests_, d) != 0) return false;
  digests_.push_back(d);
  return true;
}

std::optional<std::size_t> SecretDigests::find(std::string_view secret) const {
  const std::size_t found = scan(digests_, sha256(secret));
  if (found == 0) return std::nullopt;
  return found - 1;
}

std::string_view to_string(Scope s) noexcept { return s == Scope::admin ? "admin" : "decide"; }

std::optional<Scope> scope_from(std::string_view s) noexcept {
  if (s == "decide") return Scope::decide;
  if (s == "admin") return Scope::admin;
  return std::nullopt;
}

bool Principal::allows(Scope needed, std::string_view ns) const noexcept {
  if (static_cast<int>(scope) < static_cast<int>(needed)) return false;
  if (namespaces.empty()) return true;
  for (const std::string& n : namespaces) {
    if (n == ns) return true;
  }
  return false;
}

Auth::Auth(const std::vector<TokenConfig>& tokens) {
  for (std::size_t i = 0; i < tokens.size(); ++i) {
    const TokenConfig& t = tokens[i];
    const std::string at = t.where.empty() ? "token " + std::to_string(i + 1) : t.where;
    if (t.token.size() < kMinTokenLength) {
      throw std::invalid_argument("token at " + at + " is shorter than " +
                                  std::to_string(kMinTokenLength) + " bytes");
    }
    if (!token_chars_ok(t.token)) {
      throw std::invalid_argument("token at " + at +
                                  " holds a space, a control character or a non-ASCII byte");
    }
    if (!digests_.add(t.token)) {
      throw std::invalid_argument("token at " + at + " is configured twice");
    }
    entries_.push_back(Principal{t.name.empty() ? "token-" + std::to_string(i + 1) : t.name,
                                 t.scope, t.namespaces});
  }
}

const Principal* Auth::authenticate(std::string_view authorization) const {
  const std::string_view token = bearer_token(authorization);
  if (token.empty()) return nullptr;
  const std::optional<std::size_t> i = digests_.find(token);
  return i ? &entries_[*i] : nullptr;
}

Auth::Verdict Auth::check(std::string_view authorization, Scope needed, std::string_view ns) const {
  if (!enabled()) return Verdict{};
  if (authorization.empty()) return Verdict{401, "a bearer token is required", nullptr};
  const Principal* who = authenticate(authorization);
  if (who == nullptr) return Verdict{401, "invalid bearer token", nullptr};
  return check(who, needed, ns);
}

Auth::Verdict Auth::check(const Principal* who, Scope needed, std::string_view ns) const {
  if (!enabled()) return Verdict{};
  if (who == nullptr) return Verdict{401, "a bearer token is required", nullptr};
  if (static_cast<int>(who->scope) < static_cast<int>(needed)) {
    return Verdict{403,
                   "token '" + who->name + "' has scope " + std::string(to_string(who->scope)) +
                       "; this route needs " + std::string(to_string(needed)),
                   who};
  }
  if (!who->allows(needed, ns)) {
    return Verdict{
        403, "token '" + who->name + "' is not allowed in namespace '" + printable(ns) + "'", who};
  }
  return Verdict{0, {}, who};
}

std::optional<Scope> required_scope(std::string_view method, std::string_view path) noexcept {
  if (method == "OPTIONS") return std::nullopt;
  if (method == "GET" && (path == "/healthz" || path == "/readyz" || path == "/openapi.json")) {
    return std::nullopt;
  }
  if (starts_with_path(path, "/v1/admin") || starts_with_path(path, "/v1/audit")) {
    return Scope::admin;
  }
  if (starts_with_path(path, "/v1/limits") && method != "GET" && method != "HEAD") {
    return Scope::admin;
  }
  return Scope::decide;
}

std::vector<TokenConfig> load_token_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    throw ValidationError("token-file", path, std::string("cannot read: ") + std::strerror(errno));
  }
  std::vector<TokenConfig> out;
  std::string line;
  for (std::size_t n = 1; std::getline(in, line); ++n) {
    const std::string where = path + ":" + std::to_string(n);
    if (!line.empty() && line.back() == '\r') line.pop_back();
    std::vector<std::string> words;
    for (std::size_t i = 0; i < line.size();) {
      while (i < line.size() && (line[i] == ' ' || line[i] == '\t')) ++i;
      const std::size_t start = i;
      while (i < line.size() && line[i] != ' ' && line[i] != '\t') ++i;
      if (i > start) words.push_back(line.substr(start, i - start));
    }
    if (words.empty() || words[0].front() == '#') continue;
    if (words.size() > 3) {
      throw ValidationError("token-file", where,
                            "expected TOKEN [decide|admin [NAMESPACE,...]], got " +
                                std::to_string(words.size()) + " words");
    }
    TokenConfig t;
    t.token = words[0];
    t.where = where;
    t.name = "token-file:" + std::to_string(n);
    if (words.size() >= 2) {
      const std::optional<Scope> s = scope_from(words[1]);
      if (!s) {
        throw ValidationError("token-file", where,
                              "scope '" + printable(words[1]) + "': expected decide or admin");
      }
      t.scope = *s;
    }
    if (words.size() == 3) {
      const std::string& list = words[2];
      for (std::size_t i = 0; i <= list.size();) {
        const std::size_t comma = std::min(list.find(',', i), list.size());
        std::string ns = list.substr(i, comma - i);
        try {
          validate_name("namespace", ns);
        } catch (const ValidationError& e) {
          throw ValidationError("token-file", where,
                                "namespace '" + printable(ns) + "': " + e.reason());
        }
        t.namespaces.push_back(std::move(ns));
        i = comma + 1;
      }
    }
    out.push_back(std::move(t));
  }
  if (in.bad()) {
    throw ValidationError("token-file", path, std::string("cannot read: ") + std::strerror(errno));
  }
  return out;
}

bool is_loopback(std::string_view host) noexcept {
  if (host == "localhost") return true;
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  boost::system::error_code ec;
  const boost::asio::ip::address a = boost::asio::ip::make_address(std::string(host), ec);
  if (ec) return false;
  if (a.is_v4()) return a.to_v4().is_loopback();
  const boost::asio::ip::address_v6 v6 = a.to_v6();
  if (v6.is_v4_mapped()) {
    return boost::asio::ip::make_address_v4(boost::asio::ip::v4_mapped, v6).is_loopback();
  }
  return v6.is_loopback();
}

std::optional<std::string> bind_refusal(std::string_view host, bool has_tokens, bool insecure) {
  if (has_tokens || insecure || is_loopback(host)) return std::nullopt;
  return "refusing to listen on non-loopback address " + printable(host) +
         " without bearer tokens: configure auth.tokens or --token-file, or pass --insecure to "
         "serve anyone who can reach it without authentication";
}

}  // namespace admit::service
