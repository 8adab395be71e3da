// What the value dialects share: exact decimal arithmetic in nanoseconds (fractions are integer
// arithmetic, sub-µs remainders round up) and the Parsed helpers. numbers.cpp parses counts,
// Go durations, delta seconds / milliseconds and epoch-or-delta numbers with them; dates.cpp
// the fraction of an RFC 3339 time. Internal header.
#pragma once

#include <cstddef>
#include <string_view>

#include "admit/adapt/headers.hpp"

namespace admit::headers_detail {

using dialect::Parsed;

__extension__ typedef __int128 Wide;  // exact intermediate arithmetic (ns and fractions)

inline constexpr Wide kNsPerMicro = 1'000;
inline constexpr Wide kNsPerMilli = 1'000'000;
inline constexpr Wide kNsPerSecond = 1'000'000'000;
// 1e23: beyond any range
inline constexpr Wide kIntCap = Wide{10'000'000'000'000'000'000ULL} * 10'000;
inline constexpr int kMaxFracDigits = 18;

template <class T>
Parsed<T> fail(std::string_view why) noexcept {
  return Parsed<T>{std::nullopt, why};
}

template <class T>
Parsed<T> unknown() noexcept {
  return Parsed<T>{};
}

template <class T>
Parsed<T> ok(T v) noexcept {
  return Parsed<T>{v, {}};
}

// Shared prelude: "" and "-1" mean unknown.
inline bool is_unknown_marker(std::string_view s) noexcept { return s.empty() || s == "-1"; }

// The digits of a decimal number "int[.frac]" (either part may be empty, not both).
struct DecimalText {
  std::string_view int_digits;
  std::string_view frac_digits;
  bool has_dot = false;
};

// Scans a decimal number at s[pos]; advances pos. False when no digit was found.
bool scan_decimal(std::string_view s, std::size_t& pos, DecimalText& out) noexcept;

// An exact amount of nanoseconds, plus whether a sub-nanosecond remainder was dropped.
struct Nanos {
  Wide ns = 0;
  bool remainder = false;
  bool overflow = false;
};

// value(text) * unit_ns, exactly (fraction digits past 18 only set `remainder`).
Nanos to_nanos(const DecimalText& t, Wide unit_ns) noexcept;

// Rounds nanoseconds up to whole microseconds; false if above kMaxExact.
bool nanos_to_micros(const Nanos& n, Micros& out) noexcept;

// max(0, at - now), saturating; never overflows whatever `now` is.
inline Micros until(Micros at, Micros now) noexcept {
  const Wide d = Wide{at} - Wide{now};
  if (d <= 0) return 0;
  if (d > kMaxExact) return kMaxExact;
  return static_cast<Micros>(d);
}

}  // namespace admit::headers_detail
