// Who may use admitd: bearer tokens with a scope and namespaces, the scope each route needs,
// and the bind rule that requires tokens off loopback. See docs/admitd.md, "Security".
//
// Scopes are ordered: `decide` (decision routes: decide, acquire, leases, record, observe,
// stats, reading limits) < `admin` (also limit writes, reload, audit). A token limited to
// namespaces may only be used for requests in them; a token without `namespaces` may be used
// for every namespace.
//
// For the Api (once it resolves a request's namespace from the JSON field `namespace` or the
// route), after the HTTP handler has authenticated the caller:
//
//   const Principal* who = ...;  // HttpHandler: Auth::authenticate(Authorization header)
//   if (auth.enabled() && !who->allows(Scope::decide, ns)) -> 403 (code "forbidden")
//
// or in one call: `Auth::check(authorization_header, scope, ns)`, which gives the status
// (0: allowed, 401, 403) and the message.
#pragma once

#include <array>
#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace admit::service {

enum class Scope { decide = 0, admin = 1 };

/// "decide" / "admin".
std::string_view to_string(Scope s) noexcept;
/// The scope named `s`, or std::nullopt.
std::optional<Scope> scope_from(std::string_view s) noexcept;

/// A configured token (from the config file's auth.tokens or a --token-file).
struct TokenConfig {
  std::string token;  ///< the secret, after ${ENV} substitution
  Scope scope = Scope::decide;
  std::vector<std::string> namespaces;  ///< empty: every namespace
  std::string name;                     ///< for logs and audit ("who"); default "token-N"
  std::string where;                    ///< "file:line" it came from, for messages
};

/// An authenticated caller.
struct Principal {
  std::string name;
  Scope scope = Scope::decide;
  std::vector<std::string> namespaces;  ///< empty: every namespace

  /// Whether this caller may use a route needing `needed` on namespace `ns`.
  bool allows(Scope needed, std::string_view ns) const noexcept;
};

/// Tokens, minimal length: shorter ones are refused when loaded (guessable).
inline constexpr std::size_t kMinTokenLength = 16;

/// The token of an Authorization header value "Bearer TOKEN" (the scheme in any case; the
/// token printable ASCII without spaces), or "" when the value is not that.
std::string_view bearer_token(std::string_view authorization) noexcept;

/// Secrets (bearer tokens, API keys) kept as SHA-256 digests and looked up in constant time:
/// the time a lookup takes says nothing about how close a guess was, nor which one matched.
class SecretDigests {
 public:
  /// Adds `secret` as the next index. @return false (nothing added) if it is there already.
  bool add(std::string_view secret);
  /// The index of `secret`, comparing its digest with every one kept, without an early exit.
  std::optional<std::size_t> find(std::string_view secret) const;
  std::size_t size() const noexcept { return digests_.size(); }

 private:
  std::vector<std::array<unsigned char, 32>> digests_;
};

/// The configured tokens, kept as SHA-256 digests and compared in constant time. Immutable
/// once built: thread-safe.
class Auth {
 public:
  /// No tokens: enabled() is false and every request is allowed.
  Auth() = default;
  /// @throws std::invalid_argument on a token shorter than kMinTokenLength, with bytes that
  ///         cannot be in an Authorization header (space, control characters, non-ASCII), or
  ///         given twice; the message names TokenConfig::where.
  explicit Auth(const std::vector<TokenConfig>& tokens);

  /// Whether any token is configured (then every route but the public ones needs one).
  bool enabled() const noexcept { return !entries_.empty(); }
  std::size_t size() const noexcept { return entries_.size(); }

  /// The caller an Authorization header value ("Bearer TOKEN", the scheme in any case)
  /// names, or nullptr if the header is missing, malformed or names no configured token.
  /// Hashes the token and compares its digest with every configured one without an early
  /// exit, so that the time taken says nothing about how close a guess was.
  const Principal* authenticate(std::string_view authorization) const;

  /// The verdict on a request: status 0 (allowed; `who` is the caller, nullptr when auth is
  /// not enabled), 401 (no token, a malformed header or an unknown token) or 403 (the token's
  /// scope or namespaces do not allow it). `message` says which.
  struct Verdict {
    unsigned status = 0;
    std::string message;
    const Principal* who = nullptr;
  };
  Verdict check(std::string_view authorization, Scope needed, std::string_view ns) const;
  /// Same for a caller authenticate() already found (non-null) or, when auth is not enabled,
  /// nullptr.
  Verdict check(const Principal* who, Scope needed, std::string_view ns) const;

 private:
  SecretDigests digests_;
  std::vector<Principal> entries_;  // by the index of their token in digests_
};

/**
 * The scope a route needs, or std::nullopt for the public ones (`GET /healthz`,
 * `GET /readyz`, `GET /openapi.json`, and OPTIONS preflights, which the HTTP handler answers).
 * `admin`: anything under /v1/admin/, /v1/audit, and every method but GET on /v1/limits...;
 * `decide`: everything else (decide, acquire, leases, record, observe, stats, GET limits,
 * /metrics and unknown paths, so that a 404 says nothing to a caller without a token).
 * `path` is the target without its query string.
 */
std::optional<Scope> required_scope(std::string_view method, std::string_view path) noexcept;

/**
 * Reads a token file: one token a line as `TOKEN [SCOPE [NAMESPACE,...]]`; SCOPE is decide
 * (the default) or admin; no namespaces: every namespace. Blank lines and lines starting
 * with '#' are skipped.
 * @throws ValidationError("token-file", "PATH:LINE", why) on an unreadable file or a bad line
 *         (the token itself is never quoted).
 */
std::vector<TokenConfig> load_token_file(const std::string& path);

/**
 * Whether `host` (a --listen host: an IP address, IPv6 in brackets or not, or "localhost")
 * is a loopback address: 127.0.0.0/8, ::1, an IPv4-mapped ::ffff:127.x.y.z, "localhost".
 * Parsed as an address, never resolved; 0.0.0.0 and :: (every interface) are not loopback.
 */
bool is_loopback(std::string_view host) noexcept;

/// The bind rule: the reason admitd must not start on `host`, or std::nullopt. A non-loopback
/// address needs tokens unless `insecure`.
std::optional<std::string> bind_refusal(std::string_view host, bool has_tokens, bool insecure);

}  // namespace admit::service
