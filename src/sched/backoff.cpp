// Backoff: exponential delays with jitter; see admit/sched/backoff.hpp.
#include "admit/sched/backoff.hpp"

#include <algorithm>
#include <cmath>
#include <string>

#include "admit/core/error.hpp"

namespace admit::sched {

Backoff::Backoff(BackoffOptions options, std::uint64_t seed) : options_(options), rng_(seed) {
  if (options_.base <= 0) {
    throw ValidationError("backoff.base", std::to_string(options_.base), "must be > 0");
  }
  if (options_.max < options_.base) {
    throw ValidationError("backoff.max", std::to_string(options_.max), "must be >= base");
  }
  if (!(options_.multiplier >= 1.0) || !std::isfinite(options_.multiplier)) {
    throw ValidationError("backoff.multiplier", std::to_string(options_.multiplier),
                          "must be >= 1");
  }
  if (!(options_.jitter >= 0.0 && options_.jitter <= 1.0)) {
    throw ValidationError("backoff.jitter", std::to_string(options_.jitter), "must be in [0, 1]");
  }
}

Micros Backoff::nominal(int retry) const {
  // Computed in double and clamped before converting, so a large retry count cannot overflow.
  const double d = static_cast<double>(options_.base) *
                   std::pow(options_.multiplier, static_cast<double>(std::max(0, retry - 1)));
  return d >= static_cast<double>(options_.max) ? options_.max : static_cast<Micros>(d);
}

double Backoff::uniform() {
  // 53 random bits: exactly representable, so the result is in [0, 1).
  return static_cast<double>(rng_() >> 11) * 0x1.0p-53;
}

Micros Backoff::delay(int retry, std::optional<Micros> retry_after) {
  if (retry_after) {
    // Never earlier than asked; the spread keeps a burst of identical retry-afters apart.
    const double spread = static_cast<double>(options_.base) * options_.jitter * uniform();
    return std::max<Micros>(0, *retry_after) + static_cast<Micros>(spread);
  }
  const Micros n = nominal(retry);
  const double cut = static_cast<double>(n) * options_.jitter * uniform();
  return std::max<Micros>(1, n - static_cast<Micros>(cut));
}

}  // namespace admit::sched
