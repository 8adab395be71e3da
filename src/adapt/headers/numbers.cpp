// The numeric value dialects: counts, Go durations, delta seconds / milliseconds and the
// epoch-or-delta guess, all exact (integer arithmetic in nanoseconds, sub-µs rounds up).
#include "numbers.hpp"

#include <charconv>
#include <system_error>

#include "text.hpp"

namespace admit {

namespace headers_detail {

// Scans a decimal number at s[pos]; advances pos. False when no digit was found.
bool scan_decimal(std::string_view s, std::size_t& pos, DecimalText& out) noexcept {
  const std::size_t start = pos;
  while (pos < s.size() && is_digit(s[pos])) ++pos;
  out.int_digits = s.substr(start, pos - start);
  out.has_dot = false;
  out.frac_digits = {};
  if (pos < s.size() && s[pos] == '.') {
    out.has_dot = true;
    const std::size_t fstart = ++pos;
    while (pos < s.size() && is_digit(s[pos])) ++pos;
    out.frac_digits = s.substr(fstart, pos - fstart);
  }
  return !out.int_digits.empty() || !out.frac_digits.empty();
}

// value(text) * unit_ns, exactly (fraction digits past 18 only set `remainder`).
Nanos to_nanos(const DecimalText& t, Wide unit_ns) noexcept {
  Nanos r;
  Wide whole = 0;
  for (char c : t.int_digits) {
    whole = whole * 10 + (c - '0');
    if (whole > kIntCap) {
      r.overflow = true;
      return r;
    }
  }
  r.ns = whole * unit_ns;
  Wide frac = 0;
  Wide scale = 1;
  int kept = 0;
  for (char c : t.frac_digits) {
    if (kept < kMaxFracDigits) {
      frac = frac * 10 + (c - '0');
      scale *= 10;
      ++kept;
    } else if (c != '0') {
      r.remainder = true;
    }
  }
  const Wide scaled = frac * unit_ns;
  r.ns += scaled / scale;
  if (scaled % scale != 0) r.remainder = true;
  return r;
}

// Rounds nanoseconds up to whole microseconds; false if above kMaxExact.
bool nanos_to_micros(const Nanos& n, Micros& out) noexcept {
  if (n.overflow || n.ns < 0) return false;
  Wide us = n.ns / kNsPerMicro;
  if (n.ns % kNsPerMicro != 0 || n.remainder) ++us;
  if (us > kMaxExact) return false;
  out = static_cast<Micros>(us);
  return true;
}

}  // namespace headers_detail

namespace dialect {

using headers_detail::DecimalText;
using headers_detail::fail;
using headers_detail::is_digit;
using headers_detail::is_unknown_marker;
using headers_detail::kIntCap;
using headers_detail::kNsPerMicro;
using headers_detail::kNsPerMilli;
using headers_detail::kNsPerSecond;
using headers_detail::Nanos;
using headers_detail::nanos_to_micros;
using headers_detail::ok;
using headers_detail::scan_decimal;
using headers_detail::to_nanos;
using headers_detail::trim;
using headers_detail::unknown;
using headers_detail::until;
using headers_detail::Wide;

namespace {

// The whole of `s` as one plain non-negative decimal in `unit_ns` units, in ns. Empty or
// "-1" is unknown; a sign, other text or a second number is malformed.
Parsed<Nanos> plain_decimal_nanos(std::string_view s, Wide unit_ns) noexcept {
  s = trim(s);
  if (is_unknown_marker(s)) return unknown<Nanos>();
  if (s.front() == '-') return fail<Nanos>("negative");
  std::size_t pos = 0;
  DecimalText t;
  if (!scan_decimal(s, pos, t)) return fail<Nanos>("not a number");
  if (pos != s.size()) return fail<Nanos>("not a plain decimal number");
  return ok(to_nanos(t, unit_ns));
}

Parsed<Micros> decimal_to_micros(std::string_view s, Wide unit_ns) noexcept {
  const Parsed<Nanos> n = plain_decimal_nanos(s, unit_ns);
  if (!n.ok()) return {std::nullopt, n.error};  // unknown stays unknown
  Micros us = 0;
  if (!nanos_to_micros(*n.value, us)) return fail<Micros>("out of range");
  return ok(us);
}

}  // namespace

Parsed<std::int64_t> parse_count(std::string_view s) noexcept {
  s = trim(s);
  if (is_unknown_marker(s)) return unknown<std::int64_t>();
  if (s.front() == '+') return fail<std::int64_t>("not an integer");
  std::int64_t v = 0;
  const auto [ptr, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec == std::errc::result_out_of_range) return fail<std::int64_t>("integer overflow");
  if (ec != std::errc{} || ptr == s.data()) return fail<std::int64_t>("not an integer");
  if (ptr != s.data() + s.size()) return fail<std::int64_t>("trailing characters after integer");
  if (v < 0) return fail<std::int64_t>("negative");
  if (v > kMaxExact) return fail<std::int64_t>("integer overflow (above 2^53-1)");
  return ok(v);
}

Parsed<Micros> parse_go_duration(std::string_view s) noexcept {
  s = trim(s);
  if (is_unknown_marker(s)) return unknown<Micros>();
  std::size_t pos = 0;
  if (s[0] == '-') return fail<Micros>("negative duration");
  if (s[0] == '+') ++pos;
  if (s.substr(pos) == "0") return ok(Micros{0});
  if (pos == s.size()) return fail<Micros>("not a Go duration");
  Nanos total;
  while (pos < s.size()) {
    DecimalText t;
    if (!scan_decimal(s, pos, t)) return fail<Micros>("not a Go duration (expected a number)");
    const std::size_t ustart = pos;
    while (pos < s.size() && !is_digit(s[pos]) && s[pos] != '.') ++pos;
    const std::string_view unit = s.substr(ustart, pos - ustart);
    Wide unit_ns = 0;
    if (unit == "ns") {
      unit_ns = 1;
    } else if (unit == "us" || unit == "\xC2\xB5s" || unit == "\xCE\xBCs") {  // us, µs, μs
      unit_ns = kNsPerMicro;
    } else if (unit == "ms") {
      unit_ns = kNsPerMilli;
    } else if (unit == "s") {
      unit_ns = kNsPerSecond;
    } else if (unit == "m") {
      unit_ns = 60 * kNsPerSecond;
    } else if (unit == "h") {
      unit_ns = 3600 * kNsPerSecond;
    } else if (unit.empty()) {
      return fail<Micros>("Go duration missing unit");
    } else {
      return fail<Micros>("Go duration with unknown unit");
    }
    const Nanos part = to_nanos(t, unit_ns);
    if (part.overflow) return fail<Micros>("duration out of range");
    total.ns += part.ns;
    total.remainder = total.remainder || part.remainder;
    if (total.ns > kIntCap) return fail<Micros>("duration out of range");
  }
  Micros us = 0;
  if (!nanos_to_micros(total, us)) return fail<Micros>("duration out of range");
  return ok(us);
}

Parsed<Micros> parse_delta_seconds(std::string_view s) noexcept {
  return decimal_to_micros(s, kNsPerSecond);
}

Parsed<Micros> parse_delta_millis(std::string_view s) noexcept {
  return decimal_to_micros(s, kNsPerMilli);
}

Parsed<Micros> parse_epoch_or_delta(std::string_view s, Micros now) noexcept {
  // The number read as seconds, in ns: n = v * 1e9.
  const Parsed<Nanos> parsed = plain_decimal_nanos(s, kNsPerSecond);
  if (!parsed.ok()) return {std::nullopt, parsed.error};  // unknown stays unknown
  const Nanos n = *parsed.value;
  if (n.overflow) return fail<Micros>("out of range");
  constexpr Wide kMillisThreshold = Wide{100'000'000'000} * kNsPerSecond;  // v > 1e11
  constexpr Wide kSecondsThreshold = Wide{1'000'000'000} * kNsPerSecond;   // v > 1e9
  const bool above_ms = n.ns > kMillisThreshold || (n.ns == kMillisThreshold && n.remainder);
  const bool above_s = n.ns > kSecondsThreshold || (n.ns == kSecondsThreshold && n.remainder);
  Micros us = 0;
  if (above_ms) {
    // Epoch milliseconds: v ms = v * 1e3 µs = n / 1e6.
    const Nanos as_ms{n.ns / 1'000, n.remainder || n.ns % 1'000 != 0, false};
    if (!nanos_to_micros(as_ms, us)) return fail<Micros>("epoch milliseconds out of range");
    return ok(until(us, now));
  }
  if (!nanos_to_micros(n, us)) return fail<Micros>("out of range");
  return ok(above_s ? until(us, now) : us);
}

}  // namespace dialect
}  // namespace admit
