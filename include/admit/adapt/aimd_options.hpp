// AimdOptions: the settings of an AIMD controller, shared by AimdController (adapt/aimd.hpp)
// and the adaptive limit kind (Limit::adaptive), whose per-key controllers the Limiter owns.
#pragma once

#include <optional>

namespace admit {

/**
 * Settings of an AimdController. Rates are permits per second. Every value must be finite;
 * the constructor throws ValidationError (field = the option's name, value = the value as
 * text) for anything out of range.
 */
struct AimdOptions {
  /// Hard upper bound on the rate. Required, > 0.
  double max_rate = 0.0;
  /// Starting rate, > 0. Clamped to [min_rate, max_rate] (the rate never leaves that range).
  double initial_rate = 1.0;
  /// Switch-over from slow start (doubling) to congestion avoidance (additive). In
  /// (0, max_rate]; default max_rate / 2. Starting at or above it skips slow start.
  std::optional<double> slow_start_threshold = std::nullopt;
  /// Added to the rate per success in congestion avoidance. > 0.
  double additive_increase = 1.0;
  /// Factor applied to the rate on a failure. In (0, 1).
  double multiplicative_decrease = 0.5;
  /// Floor of the rate, so pacing never stalls. > 0 and <= max_rate.
  double min_rate = 0.1;
};

/// Checks every option (see AimdOptions). @throws ValidationError naming the first bad one.
void validate(const AimdOptions& options);

}  // namespace admit
