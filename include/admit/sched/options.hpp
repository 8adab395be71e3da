// Settings of a Scheduler (seed 002's RateLimiterConfig, plus fairness, retries, breaker).
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "admit/core/time.hpp"
#include "admit/sched/backoff.hpp"
#include "admit/sched/breaker.hpp"

namespace admit::sched {

/// How requests are queued and paced (seed 002's modes).
enum class Mode : std::uint8_t {
  /// Direct call with retry: a queue per bucket for the concurrency cap, retries and the
  /// breaker, but no pacing by the Limiter and no discovery.
  basic,
  /// A queue per provider bucket (models that share a bucket share it), paced by the
  /// Limiter's limits for (SchedulerOptions::entity, bucket), learned ones included: every
  /// response's headers feed Discovery and AIMD.
  intelligent,
  /// Like intelligent, but a queue per (account, bucket), paced by the account's limits:
  /// the Limiter entity is RequestMetadata::account.
  account,
};
std::string_view to_string(Mode m) noexcept;

/// What submit() does when max_queue_size requests are queued.
enum class OverflowPolicy : std::uint8_t {
  reject,       ///< the new request fails with QueueOverflow at once
  drop_oldest,  ///< the oldest queued request fails with QueueOverflow; the new one queues
};

struct SchedulerOptions {
  Mode mode = Mode::intelligent;
  std::size_t max_concurrent_executions = 100;  ///< requests in flight at once, >= 1
  std::size_t max_queue_size = 1000;            ///< queued (not yet running), >= 1
  OverflowPolicy overflow = OverflowPolicy::reject;
  /// From submit to the outcome, retries included; 0 = none. A request's own deadline, if
  /// earlier, wins.
  Micros request_timeout = 30 * kMicrosPerSecond;
  /// Share of a provider's reported (or announced) limit the scheduler lets itself use at
  /// once, in (0, 1] (DiscoveryOptions::buffer_ratio: the rest is a margin for requests in
  /// flight and other clients).
  double rate_limit_buffer_ratio = 0.9;

  /// The Limiter entity of Mode::basic and Mode::intelligent (Mode::account: the account).
  std::string entity = "default";
  /// Limits named here are charged 1 per request, those in token_limits the estimate; only
  /// the names that resolve for (entity, bucket) are sent (concurrency and adaptive limits
  /// take 1 by themselves).
  std::vector<std::string> request_limits = {"rpm", "rps", "rph", "rpd"};
  std::vector<std::string> token_limits = {"tpm", "tps", "tph", "tpd"};

  /// Fairness weights per tenant (default 1): under saturation a bucket's tokens go to the
  /// backlogged tenants in proportion to their weights.
  std::map<std::string, double, std::less<>> tenant_weights = {};

  /// Attempts per request (1 = no retry); 429s, 5xx and transport failures are retried.
  int max_attempts = 4;
  BackoffOptions backoff = {};
  std::uint64_t seed = 0x5eed;  ///< the backoff jitter's RNG
  BreakerOptions breaker = {};
};

}  // namespace admit::sched
