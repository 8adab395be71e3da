// Discovery: the provider is the source of truth when it speaks. Each response's rate-limit
// headers (an Observation, see headers.hpp) correct a Limiter's state for (entity, resource):
// a reported limit becomes the local limit (with a safety margin), remaining/reset pull the
// local bucket down, and a 429 decreases the adaptive limits and holds every observed limit
// until retry-after has passed.
#pragma once

#include <cstdint>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "admit/adapt/headers.hpp"
#include "admit/limiter.hpp"

namespace admit {

/// Settings of a Discovery. The limit names default to the window the provider's convention
/// gives each slot: prefix r (requests), t (tokens), it (input tokens), ot (output tokens),
/// then "p" and s/m/h/d for a window of a second/minute/hour/day ("rpm", "tpm", "rpd",
/// "itpm", "rps"); a slot without a known window is taken as per minute.
struct DiscoveryOptions {
  /// Share of a reported limit admit lets itself use at once, in (0, 1]. The learned limit
  /// holds floor(limit * buffer_ratio) (at least 1) and refills at the provider's full rate,
  /// and the local bucket never shows more than remaining - (limit - that): a margin of
  /// (1 - buffer_ratio) * limit stays in the provider's bucket for requests in flight and
  /// other clients, while the sustained rate (goodput) is the provider's own.
  double buffer_ratio = 0.9;
  /// Turn reported limits into learned limits (Limiter::set_discovered_limits). Off: only
  /// remaining/reset/retry-after act on the configured limits.
  bool learn_limits = true;
  /// How long a 429 holds the key when the response gives no retry-after.
  Micros default_retry_after = kMicrosPerSecond;
  /// Limit names per slot; empty = derived from the window (see above).
  std::string requests_limit = {};
  std::string tokens_limit = {};
  std::string input_tokens_limit = {};
  std::string output_tokens_limit = {};
};

/// What Discovery last learned about one limit of one (entity, resource).
struct DiscoveredLimit {
  std::string limit;                      ///< local limit name, e.g. "tpm"
  std::int64_t provider_limit = 0;        ///< what the provider reported (0: never reported)
  std::int64_t capacity = 0;              ///< the learned limit's capacity (with the buffer)
  Micros window = 0;                      ///< the provider's window for it
  std::optional<std::int64_t> remaining;  ///< at the last response
  Micros reset_after = 0;                 ///< at the last response
  Micros observed_at = 0;                 ///< when the last response was applied
};

/// A learned limit whose remaining a response reported (ObserveResult::headroom).
struct Headroom {
  std::string limit;      ///< the learned limit's name (ConfigSource::discovered)
  std::int64_t room = 0;  ///< (remaining - margin) - the local bucket's available after the clamp
};

/// What one observe() call did.
struct ObserveResult {
  bool limits_changed = false;        ///< a learned limit was set or changed
  bool rate_limited = false;          ///< the response was a 429 (or RESOURCE_EXHAUSTED)
  Micros hold_until = 0;              ///< 429: nothing admitted on the observed limits before this
  std::vector<LimitStatus> clamped;   ///< the limits remaining/retry-after lowered, afterwards
  std::vector<std::string> warnings;  ///< the parser's warnings about malformed values
  /// Not a 429: every learned limit (one that mirrors the provider's) whose remaining the
  /// response reported, with how far its local bucket stays below that level (remaining -
  /// margin) after the clamp (>= 0). The clamp only lowers a bucket; a caller that holds
  /// the lease of the response may raise it by refunding up to that much (the Scheduler
  /// does, less what it has in flight: docs/proxy.md, "The upstream follows the provider").
  std::vector<Headroom> headroom;
};

/**
 * Applies provider responses to a Limiter. Thread-safe; the Limiter must outlive it.
 *
 *   Discovery discovery(limiter, Provider::openai);
 *   Lease lease = limiter.acquire("acct", "gpt-4o", {{"rpm", 1}, {"tpm", estimate}}, 10s);
 *   HttpResponse r = call_provider(...);
 *   discovery.observe(lease, r.headers, r.status, r.body);   // learns, clamps, marks AIMD
 *   (void)lease.adjust({{"tpm", actual - estimate}});
 *   // leaving the lease's scope commits
 */
class Discovery {
 public:
  /// @throws ValidationError for a buffer_ratio outside (0, 1] or a negative retry default.
  Discovery(Limiter& limiter, Provider provider, DiscoveryOptions options = {});

  /**
   * Applies `obs` to (entity, resource), in this order: reported limits become learned limits
   * (only when a value changes); each slot's remaining lowers its limit's bucket (never
   * raises it: ObserveResult::headroom says by how much it is below); a 429 holds every rate,
   * window and adaptive limit of the key until now + retry-after (default_retry_after without one).
   * Observations without data and without a 429 change nothing.
   */
  ObserveResult observe(std::string_view entity, std::string_view resource, const Observation& obs);
  /// observe(lease.entity(), lease.resource(), obs), then marks the lease's adaptive limits:
  /// failure on a 429, success otherwise. A denied lease only marks nothing.
  ObserveResult observe(Lease& lease, const Observation& obs);
  /// Parses the response with this Discovery's provider (parse_response) and observes it.
  ObserveResult observe(Lease& lease, const Headers& headers, int status,
                        std::string_view body = {});

  /// What was learned for (entity, resource), sorted by limit name.
  std::vector<DiscoveredLimit> discovered(std::string_view entity, std::string_view resource) const;

  Provider provider() const { return provider_; }
  const DiscoveryOptions& options() const { return options_; }

 private:
  Limiter& limiter_;
  Provider provider_;
  DiscoveryOptions options_;
  mutable std::mutex mu_;
  // (entity, resource) -> limit name -> what was learned
  std::map<std::pair<std::string, std::string>, std::map<std::string, DiscoveredLimit>> learned_;
};

}  // namespace admit
