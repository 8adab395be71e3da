#include "admit/adapt/headers.hpp"

#include <array>
#include <boost/json.hpp>
#include <charconv>
#include <exception>
#include <system_error>

namespace admit {

// ---------------------------------------------------------------------------------------------
// Provider names
// ---------------------------------------------------------------------------------------------

namespace {

constexpr std::array<std::pair<Provider, std::string_view>, 10> kProviderNames{{
    {Provider::openai, "openai"},
    {Provider::azure_openai, "azure_openai"},
    {Provider::anthropic, "anthropic"},
    {Provider::gemini, "gemini"},
    {Provider::groq, "groq"},
    {Provider::mistral, "mistral"},
    {Provider::together, "together"},
    {Provider::openrouter, "openrouter"},
    {Provider::cerebras, "cerebras"},
    {Provider::generic, "generic"},
}};

constexpr char ascii_lower(char c) noexcept {
  return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c;
}

constexpr bool is_digit(char c) noexcept { return c >= '0' && c <= '9'; }

constexpr bool is_alpha(char c) noexcept {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

bool iequals(std::string_view a, std::string_view b) noexcept {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i) {
    if (ascii_lower(a[i]) != ascii_lower(b[i])) return false;
  }
  return true;
}

// Position of `needle` in `hay` ignoring ASCII case, or npos.
std::size_t ifind(std::string_view hay, std::string_view needle) noexcept {
  if (needle.size() > hay.size()) return std::string_view::npos;
  for (std::size_t i = 0; i + needle.size() <= hay.size(); ++i) {
    if (iequals(hay.substr(i, needle.size()), needle)) return i;
  }
  return std::string_view::npos;
}

bool ends_with(std::string_view s, std::string_view suffix) noexcept {
  return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}

// Strips HTTP optional whitespace (and stray CR/LF) from both ends.
std::string_view trim(std::string_view s) noexcept {
  auto ws = [](char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; };
  while (!s.empty() && ws(s.front())) s.remove_prefix(1);
  while (!s.empty() && ws(s.back())) s.remove_suffix(1);
  return s;
}

}  // namespace

std::string_view to_string(Provider p) noexcept {
  for (const auto& [provider, name] : kProviderNames) {
    if (provider == p) return name;
  }
  return "unknown";
}

std::optional<Provider> provider_from_string(std::string_view name) noexcept {
  for (const auto& [provider, canonical] : kProviderNames) {
    if (canonical.size() != name.size()) continue;
    bool same = true;
    for (std::size_t i = 0; i < name.size() && same; ++i) {
      const char c = name[i] == '-' ? '_' : ascii_lower(name[i]);
      same = c == canonical[i];
    }
    if (same) return provider;
  }
  return std::nullopt;
}

// ---------------------------------------------------------------------------------------------
// Headers
// ---------------------------------------------------------------------------------------------

Headers::Headers(std::initializer_list<std::pair<std::string_view, std::string_view>> entries) {
  entries_.reserve(entries.size());
  for (const auto& [name, value] : entries) add(name, value);
}

void Headers::add(std::string_view name, std::string_view value) {
  entries_.emplace_back(std::string(name), std::string(value));
}

std::optional<std::string_view> Headers::find(std::string_view name) const noexcept {
  for (const auto& [n, v] : entries_) {
    if (iequals(n, name)) return std::string_view(v);
  }
  return std::nullopt;
}

// ---------------------------------------------------------------------------------------------
// Dialects
// ---------------------------------------------------------------------------------------------

namespace dialect {
namespace {

__extension__ typedef __int128 Wide;  // exact intermediate arithmetic (ns and fractions)

constexpr Wide kNsPerMicro = 1'000;
constexpr Wide kNsPerMilli = 1'000'000;
constexpr Wide kNsPerSecond = 1'000'000'000;
constexpr Wide kIntCap = Wide{10'000'000'000'000'000'000ULL} * 10'000;  // 1e23: beyond any range
constexpr int kMaxFracDigits = 18;

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
bool is_unknown_marker(std::string_view s) noexcept { return s.empty() || s == "-1"; }

// The digits of a decimal number "int[.frac]" (either part may be empty, not both).
struct DecimalText {
  std::string_view int_digits;
  std::string_view frac_digits;
  bool has_dot = false;
};

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

// An exact amount of nanoseconds, plus whether a sub-nanosecond remainder was dropped.
struct Nanos {
  Wide ns = 0;
  bool remainder = false;
  bool overflow = false;
};

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

// Whole-string decimal in `unit_ns` units to µs.
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

// max(0, at - now), saturating; never overflows whatever `now` is.
Micros until(Micros at, Micros now) noexcept {
  const Wide d = Wide{at} - Wide{now};
  if (d <= 0) return 0;
  if (d > kMaxExact) return kMaxExact;
  return static_cast<Micros>(d);
}

// ---- calendar ----

std::int64_t days_from_civil(std::int64_t y, unsigned m, unsigned d) noexcept {
  y -= m <= 2 ? 1 : 0;
  const std::int64_t era = (y >= 0 ? y : y - 399) / 400;
  const auto yoe = static_cast<unsigned>(y - era * 400);
  const unsigned doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
  const unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + static_cast<std::int64_t>(doe) - 719468;
}

bool is_leap(std::int64_t y) noexcept { return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0; }

unsigned days_in_month(std::int64_t y, unsigned m) noexcept {
  constexpr std::array<unsigned, 12> kDays{31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  return m == 2 && is_leap(y) ? 29u : kDays[m - 1];
}

struct CivilTime {
  std::int64_t year = 0;
  unsigned month = 0, day = 0, hour = 0, minute = 0, second = 0;
};

bool valid(const CivilTime& t) noexcept {
  return t.month >= 1 && t.month <= 12 && t.day >= 1 && t.day <= days_in_month(t.year, t.month) &&
         t.hour <= 23 && t.minute <= 59 && t.second <= 60;  // 60: leap second
}

// Seconds since the epoch (UTC).
std::int64_t epoch_seconds(const CivilTime& t) noexcept {
  return days_from_civil(t.year, t.month, t.day) * 86'400 +
         static_cast<std::int64_t>(t.hour * 3600 + t.minute * 60 + t.second);
}

// Fixed-width digit reader over a string.
class Cursor {
 public:
  explicit Cursor(std::string_view s) noexcept : s_(s) {}
  bool done() const noexcept { return i_ == s_.size(); }
  char peek() const noexcept { return done() ? '\0' : s_[i_]; }
  std::size_t pos() const noexcept { return i_; }
  std::string_view rest() const noexcept { return s_.substr(i_); }
  void skip(std::size_t n) noexcept { i_ = n > s_.size() - i_ ? s_.size() : i_ + n; }

  // Exactly n digits.
  bool digits(std::size_t n, unsigned& out) noexcept {
    if (s_.size() - i_ < n) return false;
    unsigned v = 0;
    for (std::size_t k = 0; k < n; ++k) {
      const char c = s_[i_ + k];
      if (!is_digit(c)) return false;
      v = v * 10 + static_cast<unsigned>(c - '0');
    }
    out = v;
    i_ += n;
    return true;
  }

  bool lit(char c) noexcept {
    if (peek() != c || done()) return false;
    ++i_;
    return true;
  }

  bool ilit(std::string_view w) noexcept {
    if (s_.size() - i_ < w.size() || !iequals(s_.substr(i_, w.size()), w)) return false;
    i_ += w.size();
    return true;
  }

  // One of `names` (case-insensitive); its index, or -1.
  template <std::size_t N>
  int one_of(const std::array<std::string_view, N>& names) noexcept {
    for (std::size_t k = 0; k < N; ++k) {
      if (ilit(names[k])) return static_cast<int>(k);
    }
    return -1;
  }

 private:
  std::string_view s_;
  std::size_t i_ = 0;
};

constexpr std::array<std::string_view, 12> kMonths{"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                                   "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
// Long names first so "Monday" is not read as "Mon".
constexpr std::array<std::string_view, 7> kLongDays{"Monday", "Tuesday",  "Wednesday", "Thursday",
                                                    "Friday", "Saturday", "Sunday"};
constexpr std::array<std::string_view, 7> kShortDays{"Mon", "Tue", "Wed", "Thu",
                                                     "Fri", "Sat", "Sun"};

bool read_hms(Cursor& c, CivilTime& t) noexcept {
  return c.digits(2, t.hour) && c.lit(':') && c.digits(2, t.minute) && c.lit(':') &&
         c.digits(2, t.second);
}

Parsed<Micros> finish_date(const CivilTime& t) noexcept {
  if (!valid(t)) return fail<Micros>("date or time out of range");
  const Wide us = Wide{epoch_seconds(t)} * 1'000'000;
  if (us > kMaxExact || us < -kMaxExact) return fail<Micros>("out of range");
  return ok(static_cast<Micros>(us));
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

Parsed<Micros> parse_rfc3339(std::string_view s) noexcept {
  s = trim(s);
  if (is_unknown_marker(s)) return unknown<Micros>();
  Cursor c(s);
  CivilTime t;
  unsigned year = 0;
  const bool date_ok =
      c.digits(4, year) && c.lit('-') && c.digits(2, t.month) && c.lit('-') && c.digits(2, t.day);
  t.year = year;
  if (!date_ok) return fail<Micros>("not an RFC 3339 date-time");
  if (!(c.lit('T') || c.lit('t') || c.lit(' '))) return fail<Micros>("not an RFC 3339 date-time");
  if (!read_hms(c, t)) return fail<Micros>("not an RFC 3339 date-time");
  DecimalText frac;
  if (c.peek() == '.') {
    std::size_t pos = c.pos();
    scan_decimal(s, pos, frac);
    if (frac.frac_digits.empty()) return fail<Micros>("RFC 3339 fraction without digits");
    c.skip(pos - c.pos());
  }
  std::int64_t offset_s = 0;
  const bool zulu = c.lit('Z') || c.lit('z');
  if (zulu) {
    // UTC
  } else if (c.peek() == '+' || c.peek() == '-') {
    const std::int64_t sign = c.peek() == '-' ? -1 : 1;
    c.skip(1);
    unsigned oh = 0, om = 0;
    if (!(c.digits(2, oh) && c.lit(':') && c.digits(2, om)) || oh > 23 || om > 59) {
      return fail<Micros>("RFC 3339 offset malformed");
    }
    offset_s = sign * static_cast<std::int64_t>(oh * 3600 + om * 60);
  } else {
    return fail<Micros>("RFC 3339 date-time without zone");
  }
  if (!c.done()) return fail<Micros>("trailing characters after RFC 3339 date-time");
  if (!valid(t)) return fail<Micros>("date or time out of range");
  Micros frac_us = 0;
  if (!frac.frac_digits.empty()) {
    DecimalText only_frac{{}, frac.frac_digits, true};
    nanos_to_micros(to_nanos(only_frac, kNsPerSecond), frac_us);  // < 1 s, cannot fail
  }
  const Wide us = (Wide{epoch_seconds(t)} - offset_s) * 1'000'000 + frac_us;
  if (us > kMaxExact || us < -kMaxExact) return fail<Micros>("out of range");
  return ok(static_cast<Micros>(us));
}

Parsed<Micros> parse_http_date(std::string_view s) noexcept {
  s = trim(s);
  if (is_unknown_marker(s)) return unknown<Micros>();
  CivilTime t;
  unsigned num = 0;
  // IMF-fixdate: "Sun, 06 Nov 1994 08:49:37 GMT"
  {
    Cursor c(s);
    int mon = -1;
    const bool parsed = c.one_of(kShortDays) >= 0 && c.lit(',') && c.lit(' ') &&
                        c.digits(2, t.day) && c.lit(' ') && (mon = c.one_of(kMonths)) >= 0 &&
                        c.lit(' ') && c.digits(4, num) && c.lit(' ') && read_hms(c, t) &&
                        c.lit(' ') && c.ilit("GMT") && c.done();
    if (parsed) {
      t.month = static_cast<unsigned>(mon + 1);
      t.year = num;
      return finish_date(t);
    }
  }
  // RFC 850: "Sunday, 06-Nov-94 08:49:37 GMT"
  {
    Cursor c(s);
    int mon = -1;
    const bool parsed = c.one_of(kLongDays) >= 0 && c.lit(',') && c.lit(' ') &&
                        c.digits(2, t.day) && c.lit('-') && (mon = c.one_of(kMonths)) >= 0 &&
                        c.lit('-') && c.digits(2, num) && c.lit(' ') && read_hms(c, t) &&
                        c.lit(' ') && c.ilit("GMT") && c.done();
    if (parsed) {
      t.month = static_cast<unsigned>(mon + 1);
      t.year = num < 70 ? 2000 + num : 1900 + num;
      return finish_date(t);
    }
  }
  // asctime: "Sun Nov  6 08:49:37 1994"
  {
    Cursor c(s);
    int mon = -1;
    bool parsed =
        c.one_of(kShortDays) >= 0 && c.lit(' ') && (mon = c.one_of(kMonths)) >= 0 && c.lit(' ');
    if (parsed) {
      if (c.lit(' ')) {
        parsed = c.digits(1, t.day);
      } else {
        parsed = c.digits(2, t.day);
      }
    }
    parsed = parsed && c.lit(' ') && read_hms(c, t) && c.lit(' ') && c.digits(4, num) && c.done();
    if (parsed) {
      t.month = static_cast<unsigned>(mon + 1);
      t.year = num;
      return finish_date(t);
    }
  }
  return fail<Micros>("not an HTTP-date");
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

Parsed<Micros> parse_reset(std::string_view s, Micros now) noexcept {
  s = trim(s);
  if (is_unknown_marker(s)) return unknown<Micros>();
  if (is_alpha(s.front())) {
    const auto p = parse_http_date(s);
    return p.ok() ? ok(until(*p.value, now)) : p;
  }
  if (s.size() >= 10 && is_digit(s[0]) && is_digit(s[1]) && is_digit(s[2]) && is_digit(s[3]) &&
      s[4] == '-') {
    const auto p = parse_rfc3339(s);
    return p.ok() ? ok(until(*p.value, now)) : p;
  }
  bool plain_number = true;
  for (char c : s) plain_number = plain_number && (is_digit(c) || c == '.');
  if (plain_number) return parse_epoch_or_delta(s, now);
  return parse_go_duration(s);
}

Parsed<Micros> parse_retry_after(std::string_view s, Micros now) noexcept {
  s = trim(s);
  if (is_unknown_marker(s)) return unknown<Micros>();
  if (is_digit(s.front()) || s.front() == '.' || s.front() == '-') return parse_delta_seconds(s);
  const auto p = parse_http_date(s);
  if (!p.ok()) return fail<Micros>("neither delta seconds nor an HTTP-date");
  return ok(until(*p.value, now));
}

}  // namespace dialect

// ---------------------------------------------------------------------------------------------
// parse_response
// ---------------------------------------------------------------------------------------------

namespace {

using dialect::Parsed;

// Quotes a value for a warning: at most 80 bytes, non-printables as \xNN.
std::string quote(std::string_view v) {
  constexpr std::size_t kMax = 80;
  std::string out = "\"";
  for (std::size_t i = 0; i < v.size() && i < kMax; ++i) {
    const auto c = static_cast<unsigned char>(v[i]);
    if (c >= 0x20 && c < 0x7f && c != '"' && c != '\\') {
      out += static_cast<char>(c);
    } else {
      constexpr std::string_view kHex = "0123456789abcdef";
      out += "\\x";
      out += kHex[c >> 4];
      out += kHex[c & 0xf];
    }
  }
  out += '"';
  if (v.size() > kMax) out += "...";
  return out;
}

// Alternative header names for one field; the first present wins.
struct Names {
  std::string_view first;
  std::string_view second{};
};

// The headers of one limit.
struct Family {
  Names limit;
  Names remaining;
  Names reset;
};

constexpr Micros kSecond = kMicrosPerSecond;
constexpr Micros kMinute = kMicrosPerMinute;
constexpr Micros kHour = kMicrosPerHour;
constexpr Micros kDay = kMicrosPerDay;

constexpr Family kOpenAiRequests{{"x-ratelimit-limit-requests"},
                                 {"x-ratelimit-remaining-requests"},
                                 {"x-ratelimit-reset-requests"}};
constexpr Family kOpenAiTokens{
    {"x-ratelimit-limit-tokens"}, {"x-ratelimit-remaining-tokens"}, {"x-ratelimit-reset-tokens"}};
constexpr Family kPlainXRateLimit{
    {"x-ratelimit-limit"}, {"x-ratelimit-remaining"}, {"x-ratelimit-reset"}};
constexpr Family kIetf{{"ratelimit-limit"}, {"ratelimit-remaining"}, {"ratelimit-reset"}};

// Reads header values of one response into an Observation, recording warnings.
class Reader {
 public:
  Reader(const Headers& h, Micros now, Observation& obs, std::string_view label_prefix = {})
      : h_(h), now_(now), obs_(obs), prefix_(label_prefix) {}

  struct Found {
    std::string_view name;
    std::string_view value;
  };

  std::optional<Found> lookup(const Names& names) const {
    for (std::string_view n : {names.first, names.second}) {
      if (n.empty()) continue;
      if (auto v = h_.find(n)) return Found{n, *v};
    }
    return std::nullopt;
  }

  void warn(std::string_view name, std::string_view value, std::string_view why) {
    std::string w(prefix_);
    w += name;
    w += ": ignored ";
    w += quote(value);
    w += ": ";
    w += why;
    obs_.warnings.push_back(std::move(w));
  }

  template <class T>
  std::optional<T> take(const Found& f, const Parsed<T>& p) {
    if (p.malformed()) warn(f.name, f.value, p.error);
    return p.value;
  }

  // Count header; for a limit, 0 means unknown. True if the header is present.
  bool read_count(const Names& names, std::optional<std::int64_t>& out, bool is_limit,
                  std::string_view (*pre)(std::string_view) = nullptr) {
    const auto f = lookup(names);
    if (!f) return false;
    const std::string_view text = pre ? pre(f->value) : f->value;
    auto v = take(*f, dialect::parse_count(text));
    if (v && is_limit && *v == 0) v.reset();
    out = v;
    return true;
  }

  bool read_reset(const Names& names, std::optional<Micros>& out) {
    const auto f = lookup(names);
    if (!f) return false;
    out = take(*f, dialect::parse_reset(f->value, now_));
    return true;
  }

  // Reads one family into dst (overwriting); sets `window` when anything was read.
  // True if any of its headers is present, even malformed.
  bool read_family(const Family& fam, LimitObservation& dst, Micros window) {
    bool present = read_count(fam.limit, dst.limit, true);
    present = read_count(fam.remaining, dst.remaining, false) || present;
    present = read_reset(fam.reset, dst.reset_after) || present;
    if (dst.has_data()) dst.window = window;
    return present;
  }

  void read_extra(const Family& fam, std::string name, Micros window) {
    LimitObservation lo;
    read_family(fam, lo, window);
    if (lo.has_data()) obs_.extra.push_back(ExtraLimit{std::move(name), lo});
  }

  Micros now() const { return now_; }
  Observation& obs() { return obs_; }

 private:
  const Headers& h_;
  Micros now_;
  Observation& obs_;
  std::string_view prefix_;
};

// IETF ratelimit-limit may carry a policy list: "100, 100;w=60". The count is the first item.
std::string_view ietf_first_item(std::string_view v) {
  const std::size_t cut = v.find_first_of(",;");
  return cut == std::string_view::npos ? v : v.substr(0, cut);
}

// The "w=<seconds>" parameter of an IETF policy ("100;w=60"), if any.
std::optional<Micros> ietf_window(std::string_view v) {
  std::size_t at = 0;
  while ((at = v.find(';', at)) != std::string_view::npos) {
    ++at;
    std::string_view param = trim(v.substr(at));
    if (param.size() >= 2 && ascii_lower(param[0]) == 'w' && param[1] == '=') {
      param.remove_prefix(2);
      const std::size_t end = param.find_first_of(";, ");
      const auto secs = dialect::parse_count(param.substr(0, end));
      if (secs.ok() && *secs.value > 0 && *secs.value <= kMaxExact / kSecond) {
        return *secs.value * kSecond;
      }
      return std::nullopt;
    }
  }
  return std::nullopt;
}

void read_openai_like(Reader& r, Micros request_window, Micros token_window) {
  Observation& o = r.obs();
  r.read_family(kOpenAiRequests, o.requests, request_window);
  r.read_family(kOpenAiTokens, o.tokens, token_window);
  // "*_usage_based" variants (x-ratelimit-limit-tokens_usage_based ...) repeat the same
  // numbers on some OpenAI responses; they are deliberately ignored.
}

void read_anthropic(Reader& r) {
  Observation& o = r.obs();
  static constexpr Family kReq{{"anthropic-ratelimit-requests-limit"},
                               {"anthropic-ratelimit-requests-remaining"},
                               {"anthropic-ratelimit-requests-reset"}};
  static constexpr Family kTok{{"anthropic-ratelimit-tokens-limit"},
                               {"anthropic-ratelimit-tokens-remaining"},
                               {"anthropic-ratelimit-tokens-reset"}};
  static constexpr Family kIn{{"anthropic-ratelimit-input-tokens-limit"},
                              {"anthropic-ratelimit-input-tokens-remaining"},
                              {"anthropic-ratelimit-input-tokens-reset"}};
  static constexpr Family kOut{{"anthropic-ratelimit-output-tokens-limit"},
                               {"anthropic-ratelimit-output-tokens-remaining"},
                               {"anthropic-ratelimit-output-tokens-reset"}};
  r.read_family(kReq, o.requests, kMinute);
  r.read_family(kTok, o.tokens, kMinute);
  r.read_family(kIn, o.input_tokens, kMinute);
  r.read_family(kOut, o.output_tokens, kMinute);
}

void read_mistral(Reader& r) {
  Observation& o = r.obs();
  // Size (token) budget per minute; the explicit "-minute" names win over the bare ones.
  static constexpr Family kMinuteTokens{
      {"x-ratelimitbysize-limit-minute", "ratelimitbysize-limit"},
      {"x-ratelimitbysize-remaining-minute", "ratelimitbysize-remaining"},
      {"ratelimitbysize-reset"}};
  static constexpr Family kMonthTokens{
      {"x-ratelimitbysize-limit-month"}, {"x-ratelimitbysize-remaining-month"}, {}};
  r.read_family(kMinuteTokens, o.tokens, kMinute);
  r.read_extra(kMonthTokens, "tokens_month", 0);  // calendar month: no fixed length
}

void read_together(Reader& r) {
  Observation& o = r.obs();
  static constexpr Family kTokens{
      {"x-tokenlimit-limit"}, {"x-tokenlimit-remaining"}, {"x-tokenlimit-reset"}};
  r.read_family(kPlainXRateLimit, o.requests, kSecond);
  r.read_family(kTokens, o.tokens, kSecond);
}

void read_cerebras(Reader& r) {
  Observation& o = r.obs();
  struct Variant {
    Family family;
    std::string_view extra_name;
    Micros window;
  };
  // Preference order for the main slot: requests per day, tokens per minute (Cerebras'
  // documented pair); other windows go to `extra`.
  static constexpr std::array<Variant, 3> kRequests{{
      {{{"x-ratelimit-limit-requests-day"},
        {"x-ratelimit-remaining-requests-day"},
        {"x-ratelimit-reset-requests-day"}},
       "requests_day",
       kDay},
      {{{"x-ratelimit-limit-requests-minute"},
        {"x-ratelimit-remaining-requests-minute"},
        {"x-ratelimit-reset-requests-minute"}},
       "requests_minute",
       kMinute},
      {{{"x-ratelimit-limit-requests-hour"},
        {"x-ratelimit-remaining-requests-hour"},
        {"x-ratelimit-reset-requests-hour"}},
       "requests_hour",
       kHour},
  }};
  static constexpr std::array<Variant, 3> kTokens{{
      {{{"x-ratelimit-limit-tokens-minute"},
        {"x-ratelimit-remaining-tokens-minute"},
        {"x-ratelimit-reset-tokens-minute"}},
       "tokens_minute",
       kMinute},
      {{{"x-ratelimit-limit-tokens-hour"},
        {"x-ratelimit-remaining-tokens-hour"},
        {"x-ratelimit-reset-tokens-hour"}},
       "tokens_hour",
       kHour},
      {{{"x-ratelimit-limit-tokens-day"},
        {"x-ratelimit-remaining-tokens-day"},
        {"x-ratelimit-reset-tokens-day"}},
       "tokens_day",
       kDay},
  }};
  for (const auto* variants : {&kRequests, &kTokens}) {
    LimitObservation& main = variants == &kRequests ? o.requests : o.tokens;
    for (const Variant& v : *variants) {
      if (!main.has_data()) {
        r.read_family(v.family, main, v.window);
      } else {
        r.read_extra(v.family, std::string(v.extra_name), v.window);
      }
    }
  }
}

void read_generic(Reader& r) {
  Observation& o = r.obs();
  // Request limit: OpenAI names, else IETF RateLimit-*, else bare X-RateLimit-*; the first
  // family with any header present is used. Windows are unknown unless a policy says.
  if (!r.read_family(kOpenAiRequests, o.requests, 0)) {
    LimitObservation ietf;
    bool present = r.read_count(kIetf.limit, ietf.limit, true, &ietf_first_item);
    present = r.read_count(kIetf.remaining, ietf.remaining, false) || present;
    present = r.read_reset(kIetf.reset, ietf.reset_after) || present;
    if (present) {
      std::optional<Micros> window;
      if (auto policy = r.lookup({"ratelimit-policy"})) window = ietf_window(policy->value);
      if (!window) {
        if (auto lim = r.lookup(kIetf.limit)) window = ietf_window(lim->value);
      }
      if (ietf.has_data()) ietf.window = window.value_or(0);
      o.requests = ietf;
    } else {
      r.read_family(kPlainXRateLimit, o.requests, 0);
    }
  }
  r.read_family(kOpenAiTokens, o.tokens, 0);
}

// ---- error bodies ----

std::optional<std::string_view> str_field(const boost::json::object& o, std::string_view key) {
  const boost::json::value* v = o.if_contains(key);
  if (!v) return std::nullopt;
  const boost::json::string* s = v->if_string();
  if (!s) return std::nullopt;
  return std::string_view(s->data(), s->size());
}

const boost::json::object* obj_field(const boost::json::object& o, std::string_view key) {
  const boost::json::value* v = o.if_contains(key);
  return v ? v->if_object() : nullptr;
}

// "Please try again in 6s." / "Please retry in 10.689924287s." / "retry after 2 seconds".
std::optional<Micros> retry_hint_from_message(std::string_view msg) {
  for (std::string_view phrase : {"try again in ", "retry in ", "retry after "}) {
    const std::size_t at = ifind(msg, phrase);
    if (at == std::string_view::npos) continue;
    std::string_view rest = msg.substr(at + phrase.size());
    std::size_t n = 0;
    while (n < rest.size() && (is_digit(rest[n]) || rest[n] == '.' || is_alpha(rest[n]) ||
                               static_cast<unsigned char>(rest[n]) >= 0x80)) {
      ++n;
    }
    std::string_view token = rest.substr(0, n);
    while (!token.empty() && token.back() == '.') token.remove_suffix(1);
    if (token.empty()) continue;
    bool plain = true;
    for (char c : token) plain = plain && (is_digit(c) || c == '.');
    if (plain) {
      const std::string_view after = rest.substr(n);
      if (ifind(after, " second") == 0 || ifind(after, " sec") == 0) {
        if (auto p = dialect::parse_delta_seconds(token); p.ok()) return p.value;
      } else if (ifind(after, " millisecond") == 0 || ifind(after, " ms") == 0) {
        if (auto p = dialect::parse_delta_millis(token); p.ok()) return p.value;
      }
      continue;
    }
    if (auto p = dialect::parse_go_duration(token); p.ok()) return p.value;
  }
  return std::nullopt;
}

struct GeminiQuota {
  LimitObservation* slot = nullptr;
  Micros window = 0;
};

// Maps a Gemini quotaId ("GenerateRequestsPerDayPerProjectPerModel-FreeTier") to a slot.
GeminiQuota classify_quota(std::string_view id, Observation& o) {
  GeminiQuota q;
  if (id.find("InputTokens") != std::string_view::npos) {
    q.slot = &o.input_tokens;
  } else if (id.find("OutputTokens") != std::string_view::npos) {
    q.slot = &o.output_tokens;
  } else if (id.find("Tokens") != std::string_view::npos) {
    q.slot = &o.tokens;
  } else if (id.find("Requests") != std::string_view::npos) {
    q.slot = &o.requests;
  }
  if (id.find("PerDay") != std::string_view::npos) {
    q.window = kDay;
  } else if (id.find("PerHour") != std::string_view::npos) {
    q.window = kHour;
  } else if (id.find("PerMinute") != std::string_view::npos) {
    q.window = kMinute;
  } else if (id.find("PerSecond") != std::string_view::npos) {
    q.window = kSecond;
  }
  return q;
}

struct BodyFindings {
  std::optional<Micros> retry_delay;  // Gemini RetryInfo
  std::optional<Micros> message_hint;
};

void read_gemini_details(const boost::json::array& details, Observation& o, BodyFindings& f,
                         Reader& r) {
  for (const boost::json::value& d : details) {
    const boost::json::object* detail = d.if_object();
    if (!detail) continue;
    const auto type = str_field(*detail, "@type");
    if (!type) continue;
    if (ends_with(*type, "google.rpc.RetryInfo")) {
      if (const boost::json::value* delay = detail->if_contains("retryDelay")) {
        if (const boost::json::string* s = delay->if_string()) {
          const std::string_view text(s->data(), s->size());
          auto p = dialect::parse_go_duration(text);
          if (p.malformed()) r.warn("body error.details[].retryDelay", text, p.error);
          if (p.ok() && !f.retry_delay) f.retry_delay = p.value;
        } else {
          r.warn("body error.details[].retryDelay", "<non-string>", "not a duration string");
        }
      }
    } else if (ends_with(*type, "google.rpc.QuotaFailure")) {
      const boost::json::value* vs = detail->if_contains("violations");
      const boost::json::array* violations = vs ? vs->if_array() : nullptr;
      if (!violations) continue;
      for (const boost::json::value& vv : *violations) {
        const boost::json::object* v = vv.if_object();
        if (!v) continue;
        const auto id = str_field(*v, "quotaId");
        const boost::json::value* qv = v->if_contains("quotaValue");
        if (!id || !qv) continue;
        const GeminiQuota q = classify_quota(*id, o);
        std::optional<std::int64_t> limit;
        if (const boost::json::string* s = qv->if_string()) {
          const std::string_view text(s->data(), s->size());
          auto p = dialect::parse_count(text);
          if (p.malformed()) r.warn("body error.details[].quotaValue", text, p.error);
          limit = p.value;
        } else if (const std::int64_t* i = qv->if_int64()) {
          if (*i >= 0 && *i <= kMaxExact) {
            limit = *i;
          } else {
            r.warn("body error.details[].quotaValue", boost::json::serialize(*qv), "out of range");
          }
        } else if (const std::uint64_t* u = qv->if_uint64()) {
          if (*u <= static_cast<std::uint64_t>(kMaxExact)) {
            limit = static_cast<std::int64_t>(*u);
          } else {
            r.warn("body error.details[].quotaValue", boost::json::serialize(*qv), "out of range");
          }
        } else {
          r.warn("body error.details[].quotaValue", boost::json::serialize(*qv), "not an integer");
        }
        if (limit && *limit == 0) limit.reset();
        if (!limit || !q.slot || q.window == 0) continue;
        LimitObservation lo;
        lo.limit = limit;
        lo.window = q.window;
        if (!q.slot->has_data()) {
          *q.slot = lo;
        } else {
          o.extra.push_back(ExtraLimit{std::string(*id), lo});
        }
      }
    }
  }
}

void read_body(Provider p, std::string_view body, Reader& r, BodyFindings& f) {
  Observation& o = r.obs();
  std::error_code ec;
  boost::json::parse_options opts;
  opts.max_depth = 64;
  const boost::json::value root = boost::json::parse(body, ec, {}, opts);
  if (ec) {
    std::string w = "body: ignored malformed JSON (";
    w += ec.message();
    w += ")";
    o.warnings.push_back(std::move(w));
    return;
  }
  // Gemini's streaming endpoints wrap the error envelope in an array.
  const boost::json::object* top = root.if_object();
  if (!top) {
    if (const boost::json::array* a = root.if_array(); a && !a->empty()) top = (*a)[0].if_object();
  }
  if (!top) return;
  const boost::json::object* err = obj_field(*top, "error");
  if (!err) return;

  const auto code = str_field(*err, "code");
  const auto type = str_field(*err, "type");
  if ((code && *code == "insufficient_quota") || (type && *type == "insufficient_quota")) {
    o.quota_exhausted = true;
  }
  if (const auto status = str_field(*err, "status"); status && *status == "RESOURCE_EXHAUSTED") {
    o.rate_limited = true;
  }
  const auto message = str_field(*err, "message");
  if (message) f.message_hint = retry_hint_from_message(*message);

  if (const boost::json::value* d = err->if_contains("details")) {
    if (const boost::json::array* details = d->if_array()) {
      read_gemini_details(*details, o, f, r);
    }
  }

  if (p == Provider::openrouter) {
    // OpenRouter repeats the upstream limit headers in error.metadata.headers.
    if (!o.requests.has_data()) {
      if (const boost::json::object* meta = obj_field(*err, "metadata")) {
        if (const boost::json::object* hdrs = obj_field(*meta, "headers")) {
          Headers body_headers;
          for (const auto& kv : *hdrs) {
            const std::string_view key(kv.key().data(), kv.key().size());
            if (const boost::json::string* s = kv.value().if_string()) {
              body_headers.add(key, std::string_view(s->data(), s->size()));
            } else if (kv.value().is_number()) {
              body_headers.add(key, boost::json::serialize(kv.value()));
            }
          }
          Reader br(body_headers, r.now(), o, "body error.metadata.headers.");
          br.read_family(kPlainXRateLimit, o.requests, 0);
        }
      }
    }
    // "Rate limit exceeded: free-models-per-day" names the window.
    if (message && o.requests.has_data() && o.requests.window == 0) {
      if (message->find("per-day") != std::string_view::npos) {
        o.requests.window = kDay;
      } else if (message->find("per-min") != std::string_view::npos) {
        o.requests.window = kMinute;
      }
    }
  }
}

bool blank(std::string_view s) { return trim(s).empty(); }

}  // namespace

Observation parse_response(Provider p, const Headers& headers, int status, std::string_view body,
                           Micros now) {
  Observation o;
  try {
    Reader r(headers, now, o);
    switch (p) {
      case Provider::openai:
      case Provider::azure_openai:
        read_openai_like(r, kMinute, kMinute);
        break;
      case Provider::groq:
        read_openai_like(r, kDay, kMinute);
        break;
      case Provider::anthropic:
        read_anthropic(r);
        break;
      case Provider::mistral:
        read_mistral(r);
        break;
      case Provider::together:
        read_together(r);
        break;
      case Provider::openrouter:
        r.read_family(kPlainXRateLimit, o.requests, 0);
        break;
      case Provider::cerebras:
        read_cerebras(r);
        break;
      case Provider::generic:
        read_generic(r);
        break;
      case Provider::gemini:
        break;  // no rate-limit headers; everything is in the error body
    }

    // Both retry headers are validated; retry-after-ms wins when both are usable.
    std::optional<Micros> retry_ms;
    std::optional<Micros> retry_s;
    if (auto f = r.lookup({"retry-after-ms"})) {
      retry_ms = r.take(*f, dialect::parse_delta_millis(f->value));
    }
    if (auto f = r.lookup({"retry-after"})) {
      retry_s = r.take(*f, dialect::parse_retry_after(f->value, now));
    }

    if (status == 429) o.rate_limited = true;

    BodyFindings found;
    if (status >= 400 && !blank(body)) read_body(p, body, r, found);

    if (retry_ms) {
      o.retry_after = retry_ms;
    } else if (retry_s) {
      o.retry_after = retry_s;
    } else if (found.retry_delay) {
      o.retry_after = found.retry_delay;
    } else if (found.message_hint) {
      o.retry_after = found.message_hint;
    }
  } catch (const std::exception& e) {
    try {
      o.warnings.push_back(std::string("internal error while parsing: ") + e.what());
    } catch (...) {  // NOLINT(bugprone-empty-catch): out of memory; nothing left to report with
    }
  }
  return o;
}

}  // namespace admit
