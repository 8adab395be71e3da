// Request costs (prompt + max_tokens) for the load generators (adapt_bench, proxy_bench): a
// bounded Pareto distribution, heavy-tailed as real prompt sizes are.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>

namespace admit::bench {

/// Pareto with shape `alpha` bounded to [lo, hi] (integers).
struct BoundedPareto {
  double alpha;
  double lo;
  double hi;

  double mean() const {
    return alpha / (alpha - 1) * std::pow(lo, alpha) / (1 - std::pow(lo / hi, alpha)) *
           (std::pow(lo, 1 - alpha) - std::pow(hi, 1 - alpha));
  }
  /// One draw by inverse transform, rounded to a whole token count in [lo, hi].
  std::int64_t draw(std::mt19937_64& rng) const {
    const double u = std::uniform_real_distribution<double>(0, 1)(rng);
    const double ha = std::pow(hi, alpha), la = std::pow(lo, alpha);
    const double x = std::pow(-(u * ha - u * la - ha) / (ha * la), -1.0 / alpha);
    return std::clamp<std::int64_t>(std::llround(x), static_cast<std::int64_t>(lo),
                                    static_cast<std::int64_t>(hi));
  }
};

}  // namespace admit::bench
