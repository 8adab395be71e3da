// The date dialects: RFC 3339 timestamps and HTTP-dates (IMF-fixdate, RFC 850, asctime), as
// providers send them in reset headers and Retry-After. Howard Hinnant's date library
// (date::from_stream) reads the fields and does the calendar: days per month, leap years,
// the offset, seconds since the epoch.
//
// What date::from_stream would read differently, each kept as it always was by the shape
// check in front of it (tests/adapt/headers_test.cpp: *EdgeCases):
//   - field widths: %Y, %m, %d, %H, %M, %S take 1 to 4 (or 2) digits; here they are exact;
//   - the weekday: %a must match the date; here its name is checked, not the date;
//   - literals are case-sensitive there ('T', 'Z', "GMT"); here 't', 'z', "gmt" are accepted;
//   - a leap second: :60 fails there; here it is the next second (23:59:60 = 00:00:00);
//   - fractions: %S rounds to nearest through a long double; here any number of digits is
//     exact and rounds up to the µs (numbers.hpp);
//   - the offset: %Ez also takes "+h", "+hh" and fields past 23:59; here only "+hh:mm";
//   - names: %b and %a read the stream's locale; here the stream is always "C".
#include <date/date.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <exception>
#include <istream>
#include <locale>
#include <streambuf>
#include <string_view>

#include "numbers.hpp"
#include "text.hpp"

namespace admit::dialect {

using headers_detail::DecimalText;
using headers_detail::fail;
using headers_detail::iequals;
using headers_detail::is_alpha;
using headers_detail::is_digit;
using headers_detail::is_unknown_marker;
using headers_detail::kNsPerSecond;
using headers_detail::nanos_to_micros;
using headers_detail::ok;
using headers_detail::scan_decimal;
using headers_detail::to_nanos;
using headers_detail::trim;
using headers_detail::unknown;
using headers_detail::Wide;

namespace {

// Long names first so "Monday" is not read as "Mon".
constexpr std::array<std::string_view, 7> kLongDays{"Monday", "Tuesday",  "Wednesday", "Thursday",
                                                    "Friday", "Saturday", "Sunday"};
constexpr std::array<std::string_view, 7> kShortDays{"Mon", "Tue", "Wed", "Thu",
                                                     "Fri", "Sat", "Sun"};

// A month's three-letter name, any case (checked before %b reads it, so that a wrong name is
// "not an HTTP-date", as it always was, rather than a date out of range).
constexpr std::array<std::string_view, 12> kMonths{"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                                   "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};

bool is_month(std::string_view s) noexcept {
  for (std::string_view m : kMonths) {
    if (iequals(s, m)) return true;
  }
  return false;
}

// True when `s` has the shape of `pattern`: '9' is a digit, 'a' an ASCII letter, anything
// else itself.
bool shaped(std::string_view s, std::string_view pattern) noexcept {
  if (s.size() != pattern.size()) return false;
  for (std::size_t i = 0; i < s.size(); ++i) {
    const char p = pattern[i];
    const bool match = p == '9' ? is_digit(s[i]) : p == 'a' ? is_alpha(s[i]) : s[i] == p;
    if (!match) return false;
  }
  return true;
}

unsigned two_digits(std::string_view s) noexcept {
  return static_cast<unsigned>((s[0] - '0') * 10 + (s[1] - '0'));
}

// The text handed to date::from_stream, built on the stack (nothing before the parse
// allocates, so nothing can throw).
class Fields {
 public:
  Fields& operator<<(std::string_view s) noexcept {
    const std::size_t n = std::min(s.size(), sizeof(text_) - size_);
    std::memcpy(text_ + size_, s.data(), n);
    size_ += n;
    return *this;
  }
  char* data() noexcept { return text_; }
  std::size_t size() const noexcept { return size_; }

 private:
  char text_[32];
  std::size_t size_ = 0;
};

// A read-only stream buffer over characters that stay where they are.
class ArrayBuf : public std::streambuf {
 public:
  ArrayBuf(char* begin, std::size_t n) { setg(begin, begin, begin + n); }
};

// Reads `f` (its shape already checked) with date::from_stream as `format` into seconds since
// the epoch, in the "C" locale. A second of 60 (a leap second) is read as 59 plus one: the next
// second. False when a field is out of range: a month or day that does not exist, an hour past
// 23, a minute or second past 59.
bool read_fields(Fields& f, std::size_t second_at, const char* format,
                 std::int64_t& seconds) noexcept {
  try {
    char* second = f.data() + second_at;
    int leap = 0;
    if (second[0] == '6' && second[1] == '0') {
      second[0] = '5';
      second[1] = '9';
      leap = 1;
    }
    ArrayBuf buf(f.data(), f.size());
    std::istream in(&buf);
    in.imbue(std::locale::classic());
    date::sys_seconds t{};
    date::from_stream(in, format, t);
    if (in.fail() || in.peek() != std::istream::traits_type::eof()) return false;
    seconds = t.time_since_epoch().count() + leap;
    return true;
  } catch (const std::exception&) {  // from_stream reports through the stream's state; a
    return false;                    // throw would be the locale's: read as unreadable
  }
}

Parsed<Micros> to_micros(std::int64_t seconds, Micros frac_us = 0) noexcept {
  const Wide us = Wide{seconds} * 1'000'000 + frac_us;
  if (us > kMaxExact || us < -kMaxExact) return fail<Micros>("out of range");
  return ok(static_cast<Micros>(us));
}

// The weekday name that starts `s` (one of `names`, any case) and the rest after it; or false.
template <std::size_t N>
bool skip_day(std::string_view& s, const std::array<std::string_view, N>& names) noexcept {
  for (std::string_view name : names) {
    if (s.size() >= name.size() && iequals(s.substr(0, name.size()), name)) {
      s.remove_prefix(name.size());
      return true;
    }
  }
  return false;
}

// An HTTP-date's fields, as "dd Mon yyyy hh:mm:ss", to µs since the epoch.
Parsed<Micros> http_fields(Fields& f) noexcept {
  std::int64_t seconds = 0;
  if (!read_fields(f, 18, "%d %b %Y %H:%M:%S", seconds)) {
    return fail<Micros>("date or time out of range");
  }
  return to_micros(seconds);
}

}  // namespace

Parsed<Micros> parse_rfc3339(std::string_view s) noexcept {
  s = trim(s);
  if (is_unknown_marker(s)) return unknown<Micros>();
  // "yyyy-mm-ddThh:mm:ss": exact widths ('t' and ' ' are separators too).
  constexpr std::string_view kDateTime = "9999-99-99T99:99:99";
  const std::string_view head = s.substr(0, kDateTime.size());
  const bool sep = head.size() > 10 && (head[10] == 'T' || head[10] == 't' || head[10] == ' ');
  if (!sep || !shaped(head.substr(0, 10), kDateTime.substr(0, 10)) ||
      !shaped(head.substr(11), kDateTime.substr(11))) {
    return fail<Micros>("not an RFC 3339 date-time");
  }
  std::size_t pos = head.size();
  DecimalText frac;
  if (pos < s.size() && s[pos] == '.') {
    scan_decimal(s, pos, frac);
    if (frac.frac_digits.empty()) return fail<Micros>("RFC 3339 fraction without digits");
  }
  // The zone: 'Z' / 'z', or "+hh:mm" / "-hh:mm" up to 23:59.
  std::string_view offset = "+00:00";
  const std::string_view zone = s.substr(pos);
  if (!zone.empty() && (zone[0] == 'Z' || zone[0] == 'z')) {
    pos += 1;
  } else if (!zone.empty() && (zone[0] == '+' || zone[0] == '-')) {
    const std::string_view hhmm = zone.substr(0, 6);
    if (!shaped(hhmm.substr(1), "99:99") || two_digits(hhmm.substr(1)) > 23 ||
        two_digits(hhmm.substr(4)) > 59) {
      return fail<Micros>("RFC 3339 offset malformed");
    }
    offset = hhmm;
    pos += hhmm.size();
  } else {
    return fail<Micros>("RFC 3339 date-time without zone");
  }
  if (pos != s.size()) return fail<Micros>("trailing characters after RFC 3339 date-time");

  Fields f;
  f << head.substr(0, 10) << "T" << head.substr(11) << offset;
  std::int64_t seconds = 0;
  if (!read_fields(f, 17, "%Y-%m-%dT%H:%M:%S%Ez", seconds)) {
    return fail<Micros>("date or time out of range");
  }
  Micros frac_us = 0;
  if (!frac.frac_digits.empty()) {
    DecimalText only_frac{{}, frac.frac_digits, true};
    nanos_to_micros(to_nanos(only_frac, kNsPerSecond), frac_us);  // < 1 s, cannot fail
  }
  return to_micros(seconds, frac_us);
}

Parsed<Micros> parse_http_date(std::string_view s) noexcept {
  s = trim(s);
  if (is_unknown_marker(s)) return unknown<Micros>();
  // IMF-fixdate: "Sun, 06 Nov 1994 08:49:37 GMT"
  if (std::string_view r = s; skip_day(r, kShortDays) && r.size() == 26 &&
                              shaped(r.substr(0, 22), ", 99 aaa 9999 99:99:99") &&
                              is_month(r.substr(5, 3)) && iequals(r.substr(22), " GMT")) {
    Fields f;
    f << r.substr(2, 20);
    return http_fields(f);
  }
  // RFC 850: "Sunday, 06-Nov-94 08:49:37 GMT" (a two-digit year below 70 is 20xx, else 19xx)
  if (std::string_view r = s; skip_day(r, kLongDays) && r.size() == 24 &&
                              shaped(r.substr(0, 20), ", 99-aaa-99 99:99:99") &&
                              is_month(r.substr(5, 3)) && iequals(r.substr(20), " GMT")) {
    const unsigned yy = two_digits(r.substr(9, 2));
    Fields f;
    f << r.substr(2, 2) << " " << r.substr(5, 3) << (yy < 70 ? " 20" : " 19") << r.substr(9, 11);
    return http_fields(f);
  }
  // asctime: "Sun Nov  6 08:49:37 1994" (the day: two digits, or a space and one)
  if (std::string_view r = s;
      skip_day(r, kShortDays) &&
      (shaped(r, " aaa 99 99:99:99 9999") || shaped(r, " aaa  9 99:99:99 9999")) &&
      is_month(r.substr(1, 3))) {
    Fields f;
    f << (r[5] == ' ' ? "0" : r.substr(5, 1)) << r.substr(6, 1) << " " << r.substr(1, 3) << " "
      << r.substr(17, 4) << " " << r.substr(8, 8);
    return http_fields(f);
  }
  return fail<Micros>("not an HTTP-date");
}

}  // namespace admit::dialect
