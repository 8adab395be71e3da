// Time units shared by every layer: integer microseconds, exact below 2^53.
#pragma once

#include <chrono>
#include <cstdint>

namespace admit {

/// Microseconds. Instants are microseconds since the Unix epoch; durations are differences.
using Micros = std::int64_t;

inline constexpr Micros kMicrosPerSecond = 1'000'000;
inline constexpr Micros kMicrosPerMinute = 60 * kMicrosPerSecond;
inline constexpr Micros kMicrosPerHour = 60 * kMicrosPerMinute;
inline constexpr Micros kMicrosPerDay = 24 * kMicrosPerHour;

/// Largest integer every layer (C++, Lua doubles, JSON) represents exactly: 2^53 - 1.
inline constexpr std::int64_t kMaxExact = (std::int64_t{1} << 53) - 1;

/// Converts a std::chrono duration to Micros, truncating toward zero.
template <class Rep, class Period>
constexpr Micros to_micros(std::chrono::duration<Rep, Period> d) {
  return std::chrono::duration_cast<std::chrono::microseconds>(d).count();
}

}  // namespace admit
