// Unit tests for admit::WindowCalendar (calendar windows in IANA time zones).
//
// Expected instants are computed independently of the code under test: from civil UTC dates
// with date::sys_days (date/date.h only, no time zone database) minus the UTC offset that the
// published tz rules give for that moment, and cross-checked against hard-coded epoch seconds.
#include "admit/core/window.hpp"

#include <date/date.h>
#include <gtest/gtest.h>

#include <chrono>
#include <cstdint>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "admit/core/error.hpp"
#include "admit/core/time.hpp"

namespace admit {
namespace {

constexpr Micros kHour = kMicrosPerHour;
constexpr Micros kMinute = kMicrosPerMinute;
constexpr Micros kDay = kMicrosPerDay;

/// The UTC instant y-mo-d hh:mm:ss, in µs since the epoch.
Micros utc(int y, unsigned mo, unsigned d, int hh = 0, int mm = 0, int ss = 0) {
  const date::sys_days day = date::year{y} / date::month{mo} / date::day{d};
  return to_micros(day.time_since_epoch() + std::chrono::hours{hh} + std::chrono::minutes{mm} +
                   std::chrono::seconds{ss});
}

/// The instant whose wall-clock time is y-mo-d hh:mm under UTC offset `offset_minutes`.
Micros wall(int y, unsigned mo, unsigned d, int hh, int mm, int offset_minutes) {
  return utc(y, mo, d, hh, mm) - offset_minutes * kMinute;
}

constexpr int kPST = -8 * 60;
constexpr int kPDT = -7 * 60;
constexpr int kEST = -5 * 60;
constexpr int kEDT = -4 * 60;
constexpr int kCET = 60;
constexpr int kCEST = 2 * 60;

WindowSpec spec(WindowUnit unit, std::string reset_at, std::string zone) {
  WindowSpec s;
  s.unit = unit;
  s.reset_at = std::move(reset_at);
  s.time_zone = std::move(zone);
  return s;
}

void expect_window(const WindowCalendar& cal, Micros now, Micros start, Micros end) {
  const WindowBounds b = cal.at(now);
  EXPECT_EQ(b.start, start) << "now=" << now;
  EXPECT_EQ(b.end, end) << "now=" << now;
  EXPECT_LE(b.start, now);
  EXPECT_LT(now, b.end);
}

// Verifies that the test helpers agree with hard-coded Unix epoch seconds (checked with an
// independent tool), so the expectations below do not rest on an unchecked helper.
TEST(WindowCalendarTest, HelpersMatchKnownEpochSeconds) {
  EXPECT_EQ(utc(2025, 6, 15), std::int64_t{1749945600} * kMicrosPerSecond);
  EXPECT_EQ(utc(2024, 2, 1), std::int64_t{1706745600} * kMicrosPerSecond);
  EXPECT_EQ(utc(2024, 3, 1), std::int64_t{1709251200} * kMicrosPerSecond);
  // 2025-03-09 03:00 PDT (end of the LA spring-forward gap) and 2025-11-02 01:00 PST.
  EXPECT_EQ(wall(2025, 3, 9, 3, 0, kPDT), std::int64_t{1741514400} * kMicrosPerSecond);
  EXPECT_EQ(wall(2025, 11, 2, 1, 0, kPST), std::int64_t{1762074000} * kMicrosPerSecond);
}

// Verifies that the constructor keeps the spec and that the default spec is a UTC day.
TEST(WindowCalendarTest, KeepsSpec) {
  const WindowCalendar cal(spec(WindowUnit::week, "09:15", "Europe/Berlin"));
  EXPECT_EQ(cal.spec().unit, WindowUnit::week);
  EXPECT_EQ(cal.spec().reset_at, "09:15");
  EXPECT_EQ(cal.spec().time_zone, "Europe/Berlin");

  const WindowCalendar def{WindowSpec{}};
  expect_window(def, utc(2025, 6, 15, 12), utc(2025, 6, 15), utc(2025, 6, 16));
}

// Verifies a daily window at UTC midnight: [00:00, next 00:00) of the UTC day.
TEST(WindowCalendarTest, DailyUtcMidnight) {
  const WindowCalendar cal(spec(WindowUnit::day, "00:00", "UTC"));
  expect_window(cal, utc(2025, 6, 15, 12, 34, 56) + 789, utc(2025, 6, 15), utc(2025, 6, 16));
  expect_window(cal, utc(2025, 6, 15, 23, 59, 59), utc(2025, 6, 15), utc(2025, 6, 16));
  expect_window(cal, utc(2024, 12, 31, 18), utc(2024, 12, 31), utc(2025, 1, 1));
}

// Verifies a daily window at local midnight in America/Los_Angeles on an ordinary summer day
// (PDT all day): exactly 24 h.
TEST(WindowCalendarTest, DailyLosAngelesOrdinaryDay) {
  const WindowCalendar cal(spec(WindowUnit::day, "00:00", "America/Los_Angeles"));
  const Micros start = wall(2025, 6, 15, 0, 0, kPDT);
  const Micros end = wall(2025, 6, 16, 0, 0, kPDT);
  expect_window(cal, wall(2025, 6, 15, 10, 0, kPDT), start, end);
  EXPECT_EQ(end - start, 24 * kHour);
  EXPECT_EQ(start, utc(2025, 6, 15, 7));
}

// Verifies that the spring-forward day 2025-03-09 in America/Los_Angeles (02:00 PST jumps to
// 03:00 PDT) gives a 23-hour daily window from midnight PST to midnight PDT.
TEST(WindowCalendarTest, DailyLosAngelesSpringForwardIs23Hours) {
  const WindowCalendar cal(spec(WindowUnit::day, "00:00", "America/Los_Angeles"));
  const Micros start = wall(2025, 3, 9, 0, 0, kPST);
  const Micros end = wall(2025, 3, 10, 0, 0, kPDT);
  EXPECT_EQ(end - start, 23 * kHour);
  expect_window(cal, wall(2025, 3, 9, 1, 30, kPST), start, end);  // before the jump
  expect_window(cal, wall(2025, 3, 9, 12, 0, kPDT), start, end);  // after the jump
  expect_window(cal, wall(2025, 3, 9, 23, 59, kPDT), start, end);
}

// Verifies that the fall-back day 2025-11-02 in America/Los_Angeles (02:00 PDT falls back to
// 01:00 PST) gives a 25-hour daily window, and both occurrences of 01:30 fall in it.
TEST(WindowCalendarTest, DailyLosAngelesFallBackIs25Hours) {
  const WindowCalendar cal(spec(WindowUnit::day, "00:00", "America/Los_Angeles"));
  const Micros start = wall(2025, 11, 2, 0, 0, kPDT);
  const Micros end = wall(2025, 11, 3, 0, 0, kPST);
  EXPECT_EQ(end - start, 25 * kHour);
  expect_window(cal, wall(2025, 11, 2, 1, 30, kPDT), start, end);  // first 01:30
  expect_window(cal, wall(2025, 11, 2, 1, 30, kPST), start, end);  // repeated 01:30
  expect_window(cal, wall(2025, 11, 2, 12, 0, kPST), start, end);
}

// Verifies that a reset time inside the DST gap (02:30 in America/Los_Angeles on 2025-03-09,
// which does not exist) starts the window at the end of the gap, 03:00 PDT, and that the
// previous window ends there.
TEST(WindowCalendarTest, ResetInsideDstGapStartsWhenGapEnds) {
  const WindowCalendar cal(spec(WindowUnit::day, "02:30", "America/Los_Angeles"));
  const Micros gap_end = wall(2025, 3, 9, 3, 0, kPDT);
  EXPECT_EQ(gap_end, utc(2025, 3, 9, 10));
  expect_window(cal, wall(2025, 3, 9, 12, 0, kPDT), gap_end, wall(2025, 3, 10, 2, 30, kPDT));
  // 01:59:59 PST, just before the gap: still the window that began 2025-03-08 02:30 PST.
  expect_window(cal, gap_end - kMicrosPerSecond, wall(2025, 3, 8, 2, 30, kPST), gap_end);
  expect_window(cal, gap_end, gap_end, wall(2025, 3, 10, 2, 30, kPDT));
}

// Verifies an ambiguous reset time on the fall-back day (01:30 America/Los_Angeles on
// 2025-11-02 happens twice) starts the window at the earlier occurrence (PDT).
TEST(WindowCalendarTest, AmbiguousResetUsesEarliest) {
  const WindowCalendar cal(spec(WindowUnit::day, "01:30", "America/Los_Angeles"));
  const Micros first = wall(2025, 11, 2, 1, 30, kPDT);
  expect_window(cal, first, first, wall(2025, 11, 3, 1, 30, kPST));
  expect_window(cal, wall(2025, 11, 2, 1, 30, kPST), first, wall(2025, 11, 3, 1, 30, kPST));
  expect_window(cal, first - 1, wall(2025, 11, 1, 1, 30, kPDT), first);
}

// Verifies a 05:00 reset in Europe/Berlin in winter (CET) and summer (CEST): before 05:00
// local the window is the previous day's.
TEST(WindowCalendarTest, DailyResetFiveAmBerlin) {
  const WindowCalendar cal(spec(WindowUnit::day, "05:00", "Europe/Berlin"));
  // Winter: 05:00 CET == 04:00 UTC.
  expect_window(cal, wall(2025, 1, 15, 12, 0, kCET), utc(2025, 1, 15, 4), utc(2025, 1, 16, 4));
  expect_window(cal, wall(2025, 1, 15, 4, 59, kCET), utc(2025, 1, 14, 4), utc(2025, 1, 15, 4));
  // Summer: 05:00 CEST == 03:00 UTC.
  expect_window(cal, wall(2025, 7, 1, 6, 0, kCEST), utc(2025, 7, 1, 3), utc(2025, 7, 2, 3));
  expect_window(cal, wall(2025, 7, 1, 4, 0, kCEST), utc(2025, 6, 30, 3), utc(2025, 7, 1, 3));
  // Across the switch to CEST (2025-03-30): 05:00 CET on the 29th to 05:00 CEST on the 30th.
  expect_window(cal, wall(2025, 3, 30, 4, 0, kCEST), utc(2025, 3, 29, 4), utc(2025, 3, 30, 3));
}

// Verifies boundary handling: an instant just before a boundary belongs to the earlier window,
// the boundary itself and just after belong to the later one (start inclusive, end exclusive),
// both with fresh calendars and with one (cached) calendar.
TEST(WindowCalendarTest, BoundaryStartInclusiveEndExclusive) {
  const WindowSpec s = spec(WindowUnit::day, "05:00", "Europe/Berlin");
  const Micros b = utc(2025, 1, 15, 4);  // 05:00 CET
  const Micros prev = utc(2025, 1, 14, 4);
  const Micros next = utc(2025, 1, 16, 4);
  {
    const WindowCalendar cal(s);
    expect_window(cal, b - 1, prev, b);
  }
  {
    const WindowCalendar cal(s);
    expect_window(cal, b, b, next);
  }
  {
    const WindowCalendar cal(s);
    expect_window(cal, b + 1, b, next);
  }
  const WindowCalendar cal(s);
  expect_window(cal, b - 1, prev, b);
  expect_window(cal, b, b, next);
  expect_window(cal, b + 1, b, next);
  expect_window(cal, b - 1, prev, b);
  expect_window(cal, next - 1, b, next);
  expect_window(cal, next, next, next + kDay);
}

// Verifies weekly windows start on Monday at the reset time, including before Monday's reset
// time and across a DST change (one hour short).
TEST(WindowCalendarTest, WeeklyStartsMonday) {
  const WindowCalendar utc_week(spec(WindowUnit::week, "00:00", "UTC"));
  // 2025-06-15 is a Sunday; its week began Monday 2025-06-09.
  expect_window(utc_week, utc(2025, 6, 15, 12), utc(2025, 6, 9), utc(2025, 6, 16));
  expect_window(utc_week, utc(2025, 6, 16), utc(2025, 6, 16), utc(2025, 6, 23));
  expect_window(utc_week, utc(2025, 6, 11, 8), utc(2025, 6, 9), utc(2025, 6, 16));
  // Week spanning a new year: Monday 2024-12-30 .. Monday 2025-01-06.
  expect_window(utc_week, utc(2025, 1, 1), utc(2024, 12, 30), utc(2025, 1, 6));

  const WindowCalendar la_week(spec(WindowUnit::week, "09:00", "America/Los_Angeles"));
  // Monday 2025-06-16 08:00 PDT is before the reset: still the week from 2025-06-09 09:00.
  expect_window(la_week, wall(2025, 6, 16, 8, 0, kPDT), wall(2025, 6, 9, 9, 0, kPDT),
                wall(2025, 6, 16, 9, 0, kPDT));
  // The week containing 2025-03-09 (spring forward) is 7 days minus one hour.
  const Micros s = wall(2025, 3, 3, 9, 0, kPST);
  const Micros e = wall(2025, 3, 10, 9, 0, kPDT);
  EXPECT_EQ(e - s, 7 * kDay - kHour);
  expect_window(la_week, wall(2025, 3, 9, 12, 0, kPDT), s, e);
}

// Verifies monthly windows: February of the leap year 2024 is 29 days, February 2023 is 28,
// December rolls into January, and a reset time applies on day 1.
TEST(WindowCalendarTest, MonthlyWindows) {
  const WindowCalendar cal(spec(WindowUnit::month, "00:00", "UTC"));
  expect_window(cal, utc(2024, 2, 15, 12), utc(2024, 2, 1), utc(2024, 3, 1));
  EXPECT_EQ(utc(2024, 3, 1) - utc(2024, 2, 1), 29 * kDay);
  expect_window(cal, utc(2024, 2, 29, 23, 59, 59), utc(2024, 2, 1), utc(2024, 3, 1));
  expect_window(cal, utc(2024, 3, 1), utc(2024, 3, 1), utc(2024, 4, 1));
  expect_window(cal, utc(2023, 2, 10), utc(2023, 2, 1), utc(2023, 3, 1));
  EXPECT_EQ(utc(2023, 3, 1) - utc(2023, 2, 1), 28 * kDay);
  expect_window(cal, utc(2024, 12, 31, 12), utc(2024, 12, 1), utc(2025, 1, 1));

  const WindowCalendar reset(spec(WindowUnit::month, "01:00", "UTC"));
  expect_window(reset, utc(2024, 3, 1, 0, 30), utc(2024, 2, 1, 1), utc(2024, 3, 1, 1));
  expect_window(reset, utc(2025, 1, 1, 0, 30), utc(2024, 12, 1, 1), utc(2025, 1, 1, 1));

  // A month in Los Angeles containing the spring-forward day: one hour short of 31 days.
  const WindowCalendar la(spec(WindowUnit::month, "00:00", "America/Los_Angeles"));
  expect_window(la, wall(2025, 3, 20, 0, 0, kPDT), wall(2025, 3, 1, 0, 0, kPST),
                wall(2025, 4, 1, 0, 0, kPDT));
}

// Verifies hour windows in Asia/Kolkata (UTC+05:30): local hours begin at :30 UTC.
TEST(WindowCalendarTest, HourWindowsKolkata) {
  const WindowCalendar cal(spec(WindowUnit::hour, "00:00", "Asia/Kolkata"));
  expect_window(cal, utc(2025, 6, 15, 10, 10), utc(2025, 6, 15, 9, 30), utc(2025, 6, 15, 10, 30));
  expect_window(cal, utc(2025, 6, 15, 10, 30) - 1, utc(2025, 6, 15, 9, 30),
                utc(2025, 6, 15, 10, 30));
  expect_window(cal, utc(2025, 6, 15, 10, 30), utc(2025, 6, 15, 10, 30), utc(2025, 6, 15, 11, 30));
  // Across the UTC day boundary: 05:00-06:00 IST == 23:30-00:30 UTC.
  expect_window(cal, utc(2025, 6, 16), utc(2025, 6, 15, 23, 30), utc(2025, 6, 16, 0, 30));
}

// Verifies hour windows in Asia/Kathmandu (UTC+05:45): local hours begin at :15 UTC.
TEST(WindowCalendarTest, HourWindowsKathmandu) {
  const WindowCalendar cal(spec(WindowUnit::hour, "00:00", "Asia/Kathmandu"));
  expect_window(cal, utc(2025, 6, 15, 10, 10), utc(2025, 6, 15, 9, 15), utc(2025, 6, 15, 10, 15));
}

// Verifies minute windows: aligned to the minute in UTC and in a +05:30 zone (whole-minute
// offsets share the minute grid), start inclusive and end exclusive.
TEST(WindowCalendarTest, MinuteWindows) {
  const WindowCalendar cal(spec(WindowUnit::minute, "00:00", "UTC"));
  const Micros m = utc(2025, 6, 15, 12, 34);
  expect_window(cal, m + 56 * kMicrosPerSecond + 500'000, m, m + kMinute);
  expect_window(cal, m, m, m + kMinute);
  expect_window(cal, m - 1, m - kMinute, m);

  const WindowCalendar kolkata(spec(WindowUnit::minute, "00:00", "Asia/Kolkata"));
  expect_window(kolkata, m + 1, m, m + kMinute);
}

// Verifies that the fall-back repeated hour in America/New_York (01:00-02:00 happens twice on
// 2025-11-02) gives two distinct 1-hour windows, and the spring-forward hour windows adjoin.
TEST(WindowCalendarTest, HourWindowsNewYorkDstChanges) {
  const WindowCalendar cal(spec(WindowUnit::hour, "00:00", "America/New_York"));
  const Micros first = wall(2025, 11, 2, 1, 0, kEDT);   // 05:00 UTC
  const Micros second = wall(2025, 11, 2, 1, 0, kEST);  // 06:00 UTC
  EXPECT_EQ(second - first, kHour);
  const WindowBounds a = cal.at(first + 30 * kMinute);
  const WindowBounds b = cal.at(second + 30 * kMinute);
  EXPECT_EQ(a.start, first);
  EXPECT_EQ(a.end, second);
  EXPECT_EQ(b.start, second);
  EXPECT_EQ(b.end, second + kHour);
  EXPECT_NE(a.start, b.start);
  // The hour before (00:00-01:00 EDT) and after (02:00-03:00 EST).
  expect_window(cal, first - 1, first - kHour, first);
  expect_window(cal, second + kHour, second + kHour, second + 2 * kHour);

  // Spring forward 2025-03-09: 01:00-02:00 EST is followed directly by 03:00-04:00 EDT.
  const Micros est1 = wall(2025, 3, 9, 1, 0, kEST);
  const Micros edt3 = wall(2025, 3, 9, 3, 0, kEDT);
  EXPECT_EQ(edt3 - est1, kHour);
  expect_window(cal, est1 + 30 * kMinute, est1, edt3);
  expect_window(cal, edt3 + 30 * kMinute, edt3, edt3 + kHour);
}

// Verifies the documented handling of an offset change that is not a whole hour
// (Australia/Lord_Howe ends DST on 2025-04-06: 02:00 +11:00 -> 01:30 +10:30 at 15:00 UTC):
// hour windows are cut at the transition so they never overlap and always contain `now`.
TEST(WindowCalendarTest, HourWindowsCutAtHalfHourOffsetChange) {
  const WindowCalendar cal(spec(WindowUnit::hour, "00:00", "Australia/Lord_Howe"));
  const Micros transition = utc(2025, 4, 5, 15);
  expect_window(cal, transition - 15 * kMinute, transition - kHour, transition);
  expect_window(cal, transition + 10 * kMinute, transition, transition + 30 * kMinute);
  expect_window(cal, transition + 40 * kMinute, transition + 30 * kMinute,
                transition + 90 * kMinute);
}

// Verifies the same cut when the transition is not on the old hour grid: America/Goose_Bay
// sprang forward at 00:01 AST (-04:00) -> 01:01 ADT (-03:00) on 1987-04-05 (04:01 UTC, epoch
// 544593660), so the hour windows around it are [04:00, 04:01) and [04:01, 05:00) UTC.
TEST(WindowCalendarTest, HourWindowsCutAtOffGridTransition) {
  const WindowCalendar cal(spec(WindowUnit::hour, "00:00", "America/Goose_Bay"));
  const Micros transition = utc(1987, 4, 5, 4, 1);
  EXPECT_EQ(transition, std::int64_t{544593660} * kMicrosPerSecond);
  expect_window(cal, transition - 30 * kMicrosPerSecond, utc(1987, 4, 5, 4), transition);
  expect_window(cal, transition, transition, utc(1987, 4, 5, 5));
  expect_window(cal, transition + 30 * kMinute, transition, utc(1987, 4, 5, 5));
  expect_window(cal, utc(1987, 4, 5, 5), utc(1987, 4, 5, 5), utc(1987, 4, 5, 6));
}

// Verifies that an unknown time zone throws ValidationError naming time_zone and the value.
TEST(WindowCalendarTest, UnknownZoneThrows) {
  for (const std::string zone : {"Mars/Olympus_Mons", "", "america/los_angeles", "UTC+1"}) {
    try {
      const WindowCalendar cal(spec(WindowUnit::day, "00:00", zone));
      ADD_FAILURE() << "no exception for zone '" << zone << "'";
    } catch (const ValidationError& e) {
      EXPECT_EQ(e.field(), "time_zone");
      EXPECT_EQ(e.value(), zone);
    }
  }
}

// Verifies that a malformed reset_at throws ValidationError naming reset_at and the value.
TEST(WindowCalendarTest, InvalidResetAtThrows) {
  for (const std::string r : {"24:00", "12:60", "7:00", "07:0", "07:00:00", "ab:cd", "", "07-00",
                              " 7:00", "-1:00", "07:5x", "99:99"}) {
    try {
      const WindowCalendar cal(spec(WindowUnit::day, r, "UTC"));
      ADD_FAILURE() << "no exception for reset_at '" << r << "'";
    } catch (const ValidationError& e) {
      EXPECT_EQ(e.field(), "reset_at");
      EXPECT_EQ(e.value(), r);
    }
  }
  EXPECT_NO_THROW(WindowCalendar(spec(WindowUnit::day, "23:59", "UTC")));
  EXPECT_NO_THROW(WindowCalendar(spec(WindowUnit::month, "00:00", "UTC")));
}

// Verifies that hour and minute windows accept only reset_at "00:00" (ValidationError naming
// reset_at otherwise).
TEST(WindowCalendarTest, ResetAtOnHourOrMinuteUnitThrows) {
  for (const WindowUnit unit : {WindowUnit::hour, WindowUnit::minute}) {
    try {
      const WindowCalendar cal(spec(unit, "01:00", "UTC"));
      ADD_FAILURE() << "no exception";
    } catch (const ValidationError& e) {
      EXPECT_EQ(e.field(), "reset_at");
      EXPECT_EQ(e.value(), "01:00");
    }
    EXPECT_THROW(WindowCalendar(spec(unit, "00:30", "UTC")), ValidationError);
    EXPECT_NO_THROW(WindowCalendar(spec(unit, "00:00", "UTC")));
  }
}

// Verifies the cache: repeated calls return the same bounds, and after crossing into another
// window (forward, then backward) the bounds are recomputed correctly.
TEST(WindowCalendarTest, CacheReturnsSameBoundsAndRecomputesAfterCrossing) {
  const WindowCalendar cal(spec(WindowUnit::day, "00:00", "America/Los_Angeles"));
  const Micros s1 = wall(2025, 3, 8, 0, 0, kPST);
  const Micros s2 = wall(2025, 3, 9, 0, 0, kPST);
  const Micros s3 = wall(2025, 3, 10, 0, 0, kPDT);
  for (int i = 0; i < 3; ++i) {
    expect_window(cal, s1 + kHour, s1, s2);
    expect_window(cal, s1 + 2 * kHour, s1, s2);
  }
  expect_window(cal, s2 + kHour, s2, s3);  // crossed forward
  expect_window(cal, s2 + kHour, s2, s3);
  expect_window(cal, s1 + kHour, s1, s2);  // back again
  expect_window(cal, s3, s3, wall(2025, 3, 11, 0, 0, kPDT));
}

// Verifies that concurrent calls from several threads (each alternating between two windows,
// which churns the shared cache) always get the correct bounds.
TEST(WindowCalendarTest, ConcurrentCallsAreConsistent) {
  const WindowCalendar cal(spec(WindowUnit::hour, "00:00", "Asia/Kolkata"));
  const Micros a = utc(2025, 6, 15, 9, 30);
  const Micros b = utc(2025, 6, 15, 10, 30);
  std::vector<std::thread> threads;
  std::vector<int> bad(4, 0);
  for (std::size_t t = 0; t < bad.size(); ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 2000; ++i) {
        const bool first = (i + static_cast<int>(t)) % 2 == 0;
        const Micros now = (first ? a : b) + i;
        const WindowBounds w = cal.at(now);
        const Micros want = first ? a : b;
        if (w.start != want || w.end != want + kHour) ++bad[t];
      }
    });
  }
  for (auto& th : threads) th.join();
  for (const int n : bad) EXPECT_EQ(n, 0);
}

// Verifies instants at the edges of the supported range (1970 and 2199) are accepted.
TEST(WindowCalendarTest, AcceptsFullNormalRange) {
  const WindowCalendar cal(spec(WindowUnit::day, "00:00", "UTC"));
  expect_window(cal, 0, 0, kDay);
  expect_window(cal, utc(2199, 12, 31, 12), utc(2199, 12, 31), utc(2200, 1, 1));

  const WindowCalendar la(spec(WindowUnit::day, "00:00", "America/Los_Angeles"));
  for (const Micros now : {Micros{0}, utc(2199, 12, 31, 12)}) {
    const WindowBounds w = la.at(now);
    EXPECT_LE(w.start, now);
    EXPECT_LT(now, w.end);
    EXPECT_EQ(w.end - w.start, 24 * kHour);  // no DST change on Dec 31 / Jan 1
  }
  const WindowCalendar month(spec(WindowUnit::month, "00:00", "Europe/Berlin"));
  const WindowBounds m = month.at(utc(2150, 7, 15));
  EXPECT_LE(m.start, utc(2150, 7, 15));
  EXPECT_LT(utc(2150, 7, 15), m.end);
}

}  // namespace
}  // namespace admit
