#include "admit/sim/provider.hpp"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <iterator>
#include <limits>
#include <map>
#include <stdexcept>

namespace admit::sim {
namespace {

__extension__ typedef __int128 Wide;  // levels reach 2^53 tokens * 6e7 units: beyond 64 bits

/// Units per token. A bucket of `rate` tokens per minute holds rate * kUnit units when full
/// and gains exactly `rate` units per µs.
constexpr Wide kUnit = kMicrosPerMinute;
constexpr Micros kMs = 1'000;
constexpr Micros kS = kMicrosPerSecond;
constexpr std::size_t kMinPruneAt = 1024;
constexpr std::string_view kOrg = "org-sim";

/// ceil(a / b) for a >= 0, b > 0.
Micros ceil_div(Wide a, Wide b) { return static_cast<Micros>((a + b - 1) / b); }

/// The multiple of q at or above x (any sign), q > 0.
Micros ceil_to(Micros x, Micros q) {
  const Micros r = x % q;
  return r == 0 ? x : (r > 0 ? x - r + q : x - r);
}

/// a + b for counters, saturating instead of overflowing (b >= 0).
std::int64_t add_sat(std::int64_t a, std::int64_t b) {
  return a > std::numeric_limits<std::int64_t>::max() - b ? std::numeric_limits<std::int64_t>::max()
                                                          : a + b;
}

/// Levels of one key's buckets, exact, as of `updated`. A bucket whose limit is 0 is unused.
struct Account {
  Wide req = 0;
  Wide tok = 0;
  Micros updated = 0;
};

Wide capacity(std::int64_t rate) { return Wide{rate} * kUnit; }

/// Adds `dt` µs of refill at `rate` per minute, up to capacity.
Wide refilled(Wide level, std::int64_t rate, Micros dt) {
  return std::min(capacity(rate), level + Wide{rate} * dt);
}

/// Whole tokens in the bucket (what "remaining" reports).
std::int64_t whole(Wide level) { return static_cast<std::int64_t>(level / kUnit); }

/// µs until the bucket holds `n` tokens (0 if it already does).
Micros wait_for(Wide level, std::int64_t rate, std::int64_t n) {
  const Wide need = Wide{n} * kUnit - level;
  return need <= 0 ? 0 : ceil_div(need, rate);
}

/// µs until the bucket is full again.
Micros until_full(Wide level, std::int64_t rate) { return ceil_div(capacity(rate) - level, rate); }

void check_count(std::string_view what, std::int64_t v) {
  if (v < 0 || v > kMaxExact) {
    throw std::invalid_argument(std::string(what) + " must be between 0 and " +
                                std::to_string(kMaxExact) + ", got " + std::to_string(v));
  }
}

/// `s` as a JSON string literal, quotes included.
std::string json_quote(std::string_view s) {
  std::string out = "\"";
  for (const char c : s) {
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof buf, "\\u%04x", static_cast<unsigned>(c));
          out += buf;
        } else {
          out += c;
        }
    }
  }
  out += '"';
  return out;
}

/// Which bucket a 429 blames.
enum class Short { requests, tokens };

/// What handle() decided, for rendering.
struct Verdict {
  bool admitted = false;
  bool never = false;  ///< costs more than tpm
  Short blamed = Short::requests;
  Micros wait = 0;             ///< exact µs from `now` until the request fits (429, !never)
  std::int64_t requested = 0;  ///< of the blamed bucket
  std::int64_t used = 0;       ///< limit - remaining of the blamed bucket
  std::int64_t limit = 0;      ///< of the blamed bucket
};

std::string openai_body(const SimRequest& r, const Verdict& v) {
  const std::string_view per =
      v.blamed == Short::requests ? "requests per min (RPM)" : "tokens per min (TPM)";
  std::string msg;
  if (v.never) {
    msg = "Request too large for " + r.model + " in organization " + std::string(kOrg) + " on " +
          std::string(per) + ": Limit " + std::to_string(v.limit) + ", Requested " +
          std::to_string(v.requested) +
          ". The input or output tokens must be reduced in order to run successfully.";
  } else {
    msg = "Rate limit reached for " + r.model + " in organization " + std::string(kOrg) + " on " +
          std::string(per) + ": Limit " + std::to_string(v.limit) + ", Used " +
          std::to_string(v.used) + ", Requested " + std::to_string(v.requested) +
          ". Please try again in " + format_go_duration(ceil_to(v.wait, kMs)) + ".";
  }
  msg += " Visit https://platform.openai.com/account/rate-limits to learn more.";
  return R"({"error":{"message":)" + json_quote(msg) + R"(,"type":")" +
         (v.blamed == Short::requests ? "requests" : "tokens") +
         R"(","param":null,"code":"rate_limit_exceeded"}})";
}

std::string anthropic_body(const SimRequest& r, const Verdict& v) {
  const std::string what = v.blamed == Short::requests ? "requests" : "tokens";
  std::string msg = "This request would exceed the rate limit for your organization (" +
                    std::string(kOrg) + ") of " + std::to_string(v.limit) + " " + what +
                    " per minute for " + r.model + ".";
  if (v.never) {
    msg += " It asks for " + std::to_string(v.requested) +
           " tokens; please reduce the prompt length or the maximum tokens requested.";
  } else {
    msg += " You can see the response headers for current usage. Please try again later.";
  }
  return R"({"type":"error","error":{"type":"rate_limit_error","message":)" + json_quote(msg) +
         "}}";
}

}  // namespace

// ---------------------------------------------------------------------------------------------

void validate(const SimLimits& limits) {
  check_count("SimLimits.rpm (requests per minute, 0 = unlimited)", limits.rpm);
  check_count("SimLimits.tpm (tokens per minute, 0 = unlimited)", limits.tpm);
}

std::string_view to_string(Dialect d) noexcept {
  return d == Dialect::anthropic ? "anthropic" : "openai";
}

std::optional<Dialect> dialect_from_string(std::string_view name) noexcept {
  if (name == "openai") return Dialect::openai;
  if (name == "anthropic") return Dialect::anthropic;
  return std::nullopt;
}

std::optional<std::string_view> SimResponse::header(std::string_view name) const noexcept {
  for (const auto& [n, v] : headers) {
    if (n == name) return std::string_view(v);
  }
  return std::nullopt;
}

struct ProviderModel::State {
  SimLimits limits;
  std::map<std::string, Account, std::less<>> accounts;
  std::size_t prune_at = kMinPruneAt;
  SimStats stats;

  /// Brings `a` up to `now` at the current limits; earlier instants change nothing.
  void refill(Account& a, Micros now) const {
    if (now <= a.updated) return;
    const Micros dt = now - a.updated;
    if (limits.rpm > 0) a.req = refilled(a.req, limits.rpm, dt);
    if (limits.tpm > 0) a.tok = refilled(a.tok, limits.tpm, dt);
    a.updated = now;
  }

  bool full(const Account& a) const {
    return (limits.rpm == 0 || a.req == capacity(limits.rpm)) &&
           (limits.tpm == 0 || a.tok == capacity(limits.tpm));
  }

  /// The account of `key`, refilled to `now`; a new key starts full.
  Account& account(std::string_view key, Micros now) {
    if (accounts.size() >= prune_at) prune(now);
    auto it = accounts.find(key);
    if (it == accounts.end()) {
      Account a;
      a.req = capacity(limits.rpm);
      a.tok = capacity(limits.tpm);
      a.updated = now;
      it = accounts.emplace(std::string(key), a).first;
    }
    refill(it->second, now);
    return it->second;
  }

  /// A full account is indistinguishable from a new one: drop those (amortised O(1)).
  void prune(Micros now) {
    for (auto it = accounts.begin(); it != accounts.end();) {
      refill(it->second, now);
      it = full(it->second) ? accounts.erase(it) : std::next(it);
    }
    prune_at = std::max(kMinPruneAt, 2 * accounts.size());
  }
};

ProviderModel::ProviderModel(SimLimits limits, Dialect dialect)
    : dialect_(dialect), state_(std::make_unique<State>()) {
  validate(limits);
  state_->limits = limits;
}

ProviderModel::~ProviderModel() = default;

SimResponse ProviderModel::handle(const SimRequest& r, Micros now) {
  check_count("SimRequest.prompt_tokens", r.prompt_tokens);
  check_count("SimRequest.max_tokens", r.max_tokens);
  const std::int64_t cost = r.prompt_tokens + r.max_tokens;

  std::lock_guard lock(mu_);
  State& s = *state_;
  const SimLimits lim = s.limits;
  Account& a = s.account(r.key, now);
  const Micros at = a.updated;  // >= now; later only if time went backwards for this key

  Verdict v;
  v.never = lim.tpm > 0 && cost > lim.tpm;
  const Micros wait_req = lim.rpm > 0 ? wait_for(a.req, lim.rpm, 1) : 0;
  const Micros wait_tok = lim.tpm > 0 && !v.never ? wait_for(a.tok, lim.tpm, cost) : 0;
  v.admitted = !v.never && wait_req == 0 && wait_tok == 0;

  SimResponse out;
  if (v.admitted) {
    if (lim.rpm > 0) a.req -= kUnit;
    if (lim.tpm > 0) a.tok -= Wide{cost} * kUnit;
    out.charged_tokens = cost;
    ++s.stats.accepted;
    s.stats.accepted_tokens = add_sat(s.stats.accepted_tokens, cost);
  } else {
    out.status = 429;
    ++s.stats.rejected;
    s.stats.rejected_tokens = add_sat(s.stats.rejected_tokens, cost);
    // Blame the bucket that keeps the request waiting longest (requests on a tie).
    v.blamed = (!v.never && wait_req >= wait_tok) ? Short::requests : Short::tokens;
    const bool req = v.blamed == Short::requests;
    v.limit = req ? lim.rpm : lim.tpm;
    v.requested = req ? 1 : cost;
    v.used = v.limit - whole(req ? a.req : a.tok);
    if (!v.never) {
      v.wait = std::max(wait_req, wait_tok) + (at - now);
      out.retry_after = v.wait;
    }
  }

  // Rate-limit headers: the buckets after the charge.
  struct Family {
    std::string_view name;
    std::int64_t rate;
    Wide level;
  };
  const Family families[] = {{"requests", lim.rpm, a.req}, {"tokens", lim.tpm, a.tok}};
  for (const Family& f : families) {
    if (f.rate == 0) continue;  // unlimited: no headers
    const std::string n(f.name);
    const Micros full_at = at + until_full(f.level, f.rate);
    if (dialect_ == Dialect::openai) {
      out.headers.emplace_back("x-ratelimit-limit-" + n, std::to_string(f.rate));
      out.headers.emplace_back("x-ratelimit-remaining-" + n, std::to_string(whole(f.level)));
      // Rounded up to ms (as OpenAI sends them), so the bucket is full by then.
      out.headers.emplace_back("x-ratelimit-reset-" + n,
                               format_go_duration(ceil_to(full_at - now, kMs)));
    } else {
      out.headers.emplace_back("anthropic-ratelimit-" + n + "-limit", std::to_string(f.rate));
      out.headers.emplace_back("anthropic-ratelimit-" + n + "-remaining",
                               std::to_string(whole(f.level)));
      // Whole seconds, rounded up, like Anthropic's.
      out.headers.emplace_back("anthropic-ratelimit-" + n + "-reset",
                               format_rfc3339(ceil_to(full_at, kS)));
    }
  }
  if (out.status == 429) {
    if (out.retry_after) {
      out.headers.emplace_back("retry-after", std::to_string(ceil_to(*out.retry_after, kS) / kS));
      if (dialect_ == Dialect::openai) {
        out.headers.emplace_back("retry-after-ms",
                                 std::to_string(ceil_to(*out.retry_after, kMs) / kMs));
      }
    }
    out.body = dialect_ == Dialect::openai ? openai_body(r, v) : anthropic_body(r, v);
  }
  return out;
}

void ProviderModel::set_limits(SimLimits limits, Micros now) {
  validate(limits);
  std::lock_guard lock(mu_);
  State& s = *state_;
  const SimLimits old = s.limits;
  for (auto& [key, a] : s.accounts) {
    s.refill(a, now);  // at the old rates
    // A bucket that was unlimited has no level: it starts full.
    a.req = old.rpm == 0 ? capacity(limits.rpm) : std::min(a.req, capacity(limits.rpm));
    a.tok = old.tpm == 0 ? capacity(limits.tpm) : std::min(a.tok, capacity(limits.tpm));
  }
  s.limits = limits;
}

SimLimits ProviderModel::limits() const {
  std::lock_guard lock(mu_);
  return state_->limits;
}

SimStats ProviderModel::stats() const {
  std::lock_guard lock(mu_);
  return state_->stats;
}

SimLevels ProviderModel::levels(std::string_view key, Micros now) const {
  std::lock_guard lock(mu_);
  const State& s = *state_;
  Account a;
  a.req = capacity(s.limits.rpm);
  a.tok = capacity(s.limits.tpm);
  if (const auto it = s.accounts.find(key); it != s.accounts.end()) {
    a = it->second;
    s.refill(a, now);  // a copy: the account itself is left as it is
  }
  SimLevels out;
  if (s.limits.rpm > 0) out.requests = whole(a.req);
  if (s.limits.tpm > 0) out.tokens = whole(a.tok);
  return out;
}

void ProviderModel::reset_stats() {
  std::lock_guard lock(mu_);
  state_->stats = SimStats{};
}

// ---------------------------------------------------------------------------------------------

std::string format_go_duration(Micros d) {
  if (d <= 0) return "0s";
  // "<int>[.<frac>]" with the fraction's trailing zeros dropped.
  auto decimal = [](Micros whole_part, Micros frac, int digits) {
    std::string s = std::to_string(whole_part);
    if (frac == 0) return s;
    std::string f = std::to_string(frac);
    f.insert(0, static_cast<std::size_t>(digits) - f.size(), '0');
    while (f.back() == '0') f.pop_back();
    return s + "." + f;
  };
  if (d < kMs) return std::to_string(d) + "\u00b5s";  // Go's "µs"
  if (d < kS) return decimal(d / kMs, d % kMs, 3) + "ms";
  std::string out;
  const Micros h = d / kMicrosPerHour;
  const Micros m = d % kMicrosPerHour / kMicrosPerMinute;
  const Micros us = d % kMicrosPerMinute;
  if (h > 0) out += std::to_string(h) + "h";
  if (h > 0 || m > 0) out += std::to_string(m) + "m";
  return out + decimal(us / kS, us % kS, 6) + "s";
}

std::string format_rfc3339(Micros t) {
  using namespace std::chrono;
  const Micros secs = ceil_to(t - (kS - 1), kS) / kS;  // floor(t / 1 s) for any sign
  const Micros frac = t - secs * kS;
  const Micros day_count = ceil_to(secs - (86'400 - 1), 86'400) / 86'400;  // floor division
  const Micros sod = secs - day_count * 86'400;
  const year_month_day ymd{sys_days{days{day_count}}};
  char buf[48];
  const int n =
      std::snprintf(buf, sizeof buf, "%04d-%02u-%02uT%02lld:%02lld:%02lld",
                    static_cast<int>(ymd.year()), static_cast<unsigned>(ymd.month()),
                    static_cast<unsigned>(ymd.day()), static_cast<long long>(sod / 3600),
                    static_cast<long long>(sod / 60 % 60), static_cast<long long>(sod % 60));
  std::string out(buf, static_cast<std::size_t>(n));
  if (frac != 0) {
    std::snprintf(buf, sizeof buf, ".%06lld", static_cast<long long>(frac));
    out += buf;
  }
  return out + "Z";
}

}  // namespace admit::sim
