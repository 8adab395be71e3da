// Backoff: how long a failed attempt waits before the next one. Exponential with jitter, and
// never shorter than what the provider asked for (retry-after).
#pragma once

#include <cstdint>
#include <optional>
#include <random>

#include "admit/core/time.hpp"

namespace admit::sched {

struct BackoffOptions {
  Micros base = 500'000;               ///< the first retry's nominal delay, > 0
  Micros max = 30 * kMicrosPerSecond;  ///< nominal delays stop growing here, >= base
  double multiplier = 2.0;             ///< growth per retry, >= 1
  /// Share of the nominal delay that is random, in [0, 1]: the delay is drawn uniformly from
  /// [nominal * (1 - jitter), nominal], so retries of a burst spread out.
  double jitter = 0.5;
};

/**
 * Delays for retries: retry n (1-based) waits nominal(n) = min(max, base * multiplier^(n-1)),
 * less up to `jitter` of it at random. With a retry-after from the provider the delay is
 * retry_after plus a random share of base * jitter (never earlier than asked, and a burst of
 * 429s with the same retry-after does not come back at the same instant).
 * Deterministic for a seed. Not thread-safe (one owner, e.g. the scheduler's strand).
 */
class Backoff {
 public:
  /// @throws ValidationError naming the first invalid option.
  explicit Backoff(BackoffOptions options = {}, std::uint64_t seed = 0);

  /// The delay before retry number `retry` (>= 1); `retry_after`: what the provider asked.
  Micros delay(int retry, std::optional<Micros> retry_after = std::nullopt);

  /// The delay without jitter: min(max, base * multiplier^(retry-1)).
  Micros nominal(int retry) const;

  const BackoffOptions& options() const { return options_; }

 private:
  double uniform();  // [0, 1)

  BackoffOptions options_;
  std::mt19937_64 rng_;
};

}  // namespace admit::sched
