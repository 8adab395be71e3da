// Calendar window bounds in an IANA time zone, over the system tzdata (/usr/share/zoneinfo)
// through Howard Hinnant's date/tz.h.
//
// The installed libdate-tz is built with USE_OS_TZDB=1 (the date::date-tz CMake target
// exports that definition). time_zone's layout depends on it, so make sure this translation
// unit agrees with the library even when compiled without the CMake target.
#ifndef USE_OS_TZDB
#define USE_OS_TZDB 1
#endif

#include "admit/core/window.hpp"

#include <date/tz.h>

#include <chrono>
#include <cstdint>
#include <limits>
#include <stdexcept>
#include <string>
#include <utility>

#include "admit/core/error.hpp"

namespace admit {

namespace {

using std::chrono::microseconds;
using std::chrono::minutes;
using std::chrono::seconds;

using SysMicros = date::sys_time<microseconds>;
using LocalMicros = date::local_time<microseconds>;

const date::time_zone* tz_of(const void* p) { return static_cast<const date::time_zone*>(p); }

/// Seconds since the epoch -> Micros, saturating (tzdb uses huge sentinels for "no transition").
Micros seconds_to_micros(date::sys_seconds s) {
  constexpr std::int64_t kMax = std::numeric_limits<Micros>::max() / kMicrosPerSecond;
  const std::int64_t c = s.time_since_epoch().count();
  if (c >= kMax) return std::numeric_limits<Micros>::max();
  if (c <= -kMax) return std::numeric_limits<Micros>::min();
  return c * kMicrosPerSecond;
}

/// floor(a / b) remainder in [0, b) for b > 0.
Micros floor_mod(Micros a, Micros b) {
  const Micros r = a % b;
  return r < 0 ? r + b : r;
}

bool is_digit(char c) { return c >= '0' && c <= '9'; }

/// Parses "HH:MM" (00-23, 00-59) into minutes after midnight; -1 if malformed.
int parse_hh_mm(const std::string& s) {
  if (s.size() != 5 || s[2] != ':' || !is_digit(s[0]) || !is_digit(s[1]) || !is_digit(s[3]) ||
      !is_digit(s[4])) {
    return -1;
  }
  const int h = (s[0] - '0') * 10 + (s[1] - '0');
  const int m = (s[3] - '0') * 10 + (s[4] - '0');
  if (h > 23 || m > 59) return -1;
  return h * 60 + m;
}

/// The instant a local wall-clock time maps to. A time inside a DST gap maps to the instant
/// the gap ends (the first instant after it); an ambiguous time (fall back) to the earliest.
Micros resolve_local(const date::time_zone* tz, date::local_seconds lt) {
  const date::local_info info = tz->get_info(lt);
  if (info.result == date::local_info::nonexistent) return seconds_to_micros(info.first.end);
  // unique or ambiguous: the first (earlier) interpretation.
  return seconds_to_micros(date::sys_seconds{lt.time_since_epoch() - info.first.offset});
}

/// Local calendar day of period start for day / week / month windows, stepped by whole periods.
date::local_days period_start_day(WindowUnit unit, date::local_days d) {
  switch (unit) {
    case WindowUnit::week:
      return d - (date::weekday{d} - date::Monday);  // weekday difference is in [0, 6]
    case WindowUnit::month: {
      const date::year_month_day ymd{d};
      return date::local_days{ymd.year() / ymd.month() / 1};
    }
    default:
      return d;
  }
}

date::local_days step_period(WindowUnit unit, date::local_days p, int n) {
  switch (unit) {
    case WindowUnit::week:
      return p + date::days{7 * n};
    case WindowUnit::month: {
      const date::year_month_day ymd{p};
      const date::year_month ym = date::year_month{ymd.year(), ymd.month()} + date::months{n};
      return date::local_days{ym / 1};
    }
    default:
      return p + date::days{n};
  }
}

}  // namespace

WindowCalendar::WindowCalendar(WindowSpec spec) : spec_(std::move(spec)) {
  reset_minutes_ = parse_hh_mm(spec_.reset_at);
  if (reset_minutes_ < 0) {
    throw ValidationError("reset_at", spec_.reset_at, "expected HH:MM");
  }
  if ((spec_.unit == WindowUnit::minute || spec_.unit == WindowUnit::hour) && reset_minutes_ != 0) {
    const std::string unit = spec_.unit == WindowUnit::minute ? "minute" : "hour";
    throw ValidationError("reset_at", spec_.reset_at,
                          "must be 00:00 for " + unit + " windows (they start at the top of " +
                              "the local " + unit + ")");
  }
  // Load the database outside the try: a missing/broken tzdata install is not a bad name.
  date::get_tzdb();
  try {
    zone_ = date::locate_zone(spec_.time_zone);
  } catch (const std::runtime_error&) {
    throw ValidationError("time_zone", spec_.time_zone, "unknown IANA time zone");
  }
}

WindowBounds WindowCalendar::at(Micros now) const {
  std::lock_guard<std::mutex> lock(mu_);
  if (cached_.start <= now && now < cached_.end) return cached_;
  cached_ = compute(now);
  return cached_;
}

WindowBounds WindowCalendar::compute(Micros now) const {
  const date::time_zone* tz = tz_of(zone_);
  const SysMicros sys_now{microseconds{now}};
  const date::sys_info info = tz->get_info(sys_now);
  const Micros offset = to_micros(info.offset);

  if (spec_.unit == WindowUnit::minute || spec_.unit == WindowUnit::hour) {
    // Aligned to the local clock under the offset in force at `now`:
    //   start = now - ((now + offset) mod unit), end = start + unit.
    // Simplification: an offset change that is a multiple of the unit (every whole-hour DST
    // change for hour windows, every whole-minute one for minute windows) lands on a boundary
    // of both grids, so this is exact there; during fall back the repeated local hour gives
    // two distinct windows. For an offset change that is not (Lord Howe's 30-minute DST,
    // historic LMT offsets), the window is cut at the transition instant, so windows never
    // overlap and always contain `now`; such a window is shorter than the unit.
    const Micros unit = spec_.unit == WindowUnit::minute ? kMicrosPerMinute : kMicrosPerHour;
    Micros start = now - floor_mod(now + offset, unit);
    Micros end = start + unit;
    const Micros regime_begin = seconds_to_micros(info.begin);
    const Micros regime_end = seconds_to_micros(info.end);
    if (start < regime_begin) start = regime_begin;
    if (end > regime_end) end = regime_end;
    return {start, end};
  }

  // day / week / month: periods start at reset_at local time on their first local day.
  const LocalMicros local_now{microseconds{now + offset}};
  const date::local_days today = date::floor<date::days>(local_now);
  const minutes reset{reset_minutes_};
  auto start_of = [&](date::local_days p) {
    return resolve_local(tz, date::local_seconds{p} + reset);
  };

  date::local_days p = period_start_day(spec_.unit, today);
  Micros start = start_of(p);
  // Before today's (this week's, this month's) reset time: the previous period. The loops
  // also absorb DST corner cases (gaps near midnight, skipped days such as Pacific/Apia
  // 2011-12-30); resolve_local is monotonic, so each runs at most a couple of times.
  while (start > now) {
    p = step_period(spec_.unit, p, -1);
    start = start_of(p);
  }
  Micros end = start_of(step_period(spec_.unit, p, 1));
  while (end <= now) {
    p = step_period(spec_.unit, p, 1);
    start = end;
    end = start_of(step_period(spec_.unit, p, 1));
  }
  return {start, end};
}

}  // namespace admit
