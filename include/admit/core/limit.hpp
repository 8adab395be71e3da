// Limits: what a key may consume. Four kinds: rate (token bucket / GCRA), window (fixed
// calendar window in a time zone), concurrency (slots held by leases) and adaptive (a GCRA
// whose rate an AIMD control law, AimdLaw, sets at run time). 0 means unlimited.
// Every factory validates its arguments and throws ValidationError naming the field and value.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "admit/core/aimd.hpp"
#include "admit/core/time.hpp"

namespace admit {

enum class LimitKind : std::uint8_t { rate, window, concurrency, adaptive };
std::string_view to_string(LimitKind k);

/// Calendar unit of a window limit.
enum class WindowUnit : std::uint8_t { minute, hour, day, week, month };
std::string_view to_string(WindowUnit u);
/// The unit to_string() names ("minute" ... "month"); nullopt for any other text.
std::optional<WindowUnit> window_unit_from(std::string_view name);

/**
 * A calendar window: [start, end) in a time zone. Days, weeks (starting Monday) and months
 * start at `reset_at` local time ("HH:MM"); hours and minutes start at the top of the local
 * hour / minute. DST is honoured: a day that loses an hour is 23 h long.
 */
struct WindowSpec {
  WindowUnit unit = WindowUnit::day;
  std::string reset_at = "00:00";  ///< local time of day the window starts ("HH:MM")
  std::string time_zone = "UTC";   ///< IANA name, e.g. "America/Los_Angeles"
};

/// One window's bounds, µs since the epoch.
struct WindowBounds {
  Micros start = 0;
  Micros end = 0;
};

/**
 * Exact integer parameters of a rate limit. The emission interval T (µs per unit) is the
 * rational refill_period / refill_amount = a + b / r, kept exactly (no floating point).
 * The tolerance capacity * T is (tol_us + tol_rem / r). Every product the math forms is
 * below 2^53, so a Lua script computes the very same numbers.
 */
struct RateParams {
  std::int64_t capacity = 0;    ///< burst
  std::int64_t a = 0;           ///< floor(T)
  std::int64_t b = 0;           ///< T - a = b / r, 0 <= b < r
  std::int64_t r = 1;           ///< denominator of T, >= 1
  std::int64_t tol_us = 0;      ///< floor(capacity * T)
  std::int64_t tol_rem = 0;     ///< (capacity * T - tol_us) * r
  std::int64_t max_amount = 0;  ///< largest single amount the math accepts exactly

  bool operator==(const RateParams&) const = default;
};

class WindowCalendar;

/**
 * A named limit. Immutable value type; cheap to copy. Thread-safe.
 */
class Limit {
 public:
  /// n per second with burst (0 = n). n == 0 means unlimited.
  static Limit per_second(std::string name, std::int64_t n, std::int64_t burst = 0);
  static Limit per_minute(std::string name, std::int64_t n, std::int64_t burst = 0);
  static Limit per_hour(std::string name, std::int64_t n, std::int64_t burst = 0);
  static Limit per_day(std::string name, std::int64_t n, std::int64_t burst = 0);
  /// A token bucket holding `capacity`, refilled by `refill_amount` every `refill_period`
  /// (continuously, pro rata). capacity == 0 means unlimited.
  static Limit custom(std::string name, std::int64_t capacity, std::int64_t refill_amount,
                      std::chrono::microseconds refill_period);
  /// At most `capacity` per calendar window. capacity == 0 means unlimited.
  static Limit window(std::string name, std::int64_t capacity, WindowSpec spec);
  /// At most `capacity` per day, resetting at `reset_at` local time in `time_zone`.
  static Limit daily(std::string name, std::int64_t capacity, std::string reset_at = "00:00",
                     std::string time_zone = "UTC");
  /// At most `slots` leases (or slot amounts) held at once. slots == 0 means unlimited.
  static Limit concurrency(std::string name, std::int64_t slots);
  /**
   * A rate limit whose rate (units per second) the AIMD control law (AimdLaw,
   * admit/core/aimd.hpp) sets at run time: it starts at options.initial_rate, grows while
   * requests succeed and drops on failures (Lease::mark_success / mark_failure, or a
   * provider's 429 seen by Discovery). `burst` units may go at once; burst 1 paces requests
   * evenly. Each (entity, resource) key has its own AimdLaw, in the process that acquires (a
   * fleet's processes adapt independently).
   * Acquires take 1 unit of it unless the amounts name it. The rate is applied with a
   * resolution of 1 ns per unit.
   * @throws ValidationError for bad options (see AimdOptions) or a burst outside 1..1000000.
   */
  static Limit adaptive(std::string name, AimdOptions options, std::int64_t burst = 1);

  const std::string& name() const { return name_; }
  LimitKind kind() const { return kind_; }
  bool unlimited() const { return capacity_ == 0; }
  /// Burst for rate, per-window quota for window, slots for concurrency.
  std::int64_t capacity() const { return capacity_; }
  /// Rate limits only: refill amount per refill period.
  std::int64_t refill_amount() const { return refill_amount_; }
  Micros refill_period() const { return refill_period_; }
  const RateParams& rate() const { return rate_; }
  /// Window limits only.
  const WindowSpec& window_spec() const;
  /// Window limits only: the window containing `now`. Thread-safe, cached.
  WindowBounds window_at(Micros now) const;
  /// Largest amount one operation may carry on this limit (exactness bound).
  std::int64_t max_amount() const;
  /// Adaptive limits only: the controller settings.
  const AimdOptions& aimd_options() const;
  /// Adaptive limits only: the GCRA parameters at `per_second` units per second (clamped to
  /// [min_rate, max_rate]); the interval is rounded to the nanosecond and kept as
  /// a + b / 1000 µs, the same denominator at every rate, so a stored state stays exact when
  /// the rate changes. rate() is rate_at(initial rate).
  RateParams rate_at(double per_second) const;

  /// The period a policy is stated over: rate limits, the time to refill the capacity from
  /// empty; window limits, the window's nominal length (a month counts 30 days); 0 for
  /// concurrency, adaptive and unlimited limits.
  Micros period() const;

  /**
   * Shadow mode (envoy ratelimit's `shadow_mode`): a shadow limit is resolved, checked,
   * counted and reported like any other, but never denies. Where it would refuse an acquire
   * (or a decide), the request goes on as if that limit were not part of it: the refusal is
   * reported in Decision::shadow_violations, and the shadow limit is not charged for that
   * request (its state stays what enforcing it alone would have left). Operations that never
   * refuse (record_usage, adjust, release, clamp, reset) treat it like any limit.
   * with_shadow() returns a copy with the flag set (or cleared); the state (name and kind)
   * is the same either way, so turning shadow mode on or off keeps the usage counted.
   */
  Limit with_shadow(bool shadow = true) const;
  bool shadow() const { return shadow_; }

  /// Human-readable description, e.g. "rpm: 100 per 1m (burst 100)"; a shadow limit's ends
  /// with ", shadow".
  std::string describe() const;

  /// A 64-bit hash of (name, kind), fixed at construction: stores use it to tell the limits
  /// of one key apart without hashing the name on every call.
  std::uint64_t name_hash() const { return name_hash_; }

  /// Same name, kind, numbers (time zone included) and shadow flag.
  bool operator==(const Limit& o) const;

 private:
  Limit() = default;
  static Limit make_rate(std::string name, std::int64_t capacity, std::int64_t refill_amount,
                         Micros refill_period);

  std::string name_;
  LimitKind kind_ = LimitKind::rate;
  std::int64_t capacity_ = 0;
  std::int64_t refill_amount_ = 0;
  Micros refill_period_ = 0;
  RateParams rate_;
  std::uint64_t name_hash_ = 0;
  bool shadow_ = false;
  std::shared_ptr<const WindowCalendar> calendar_;
  std::shared_ptr<const AimdOptions> aimd_;
};

/// Checks a limit, entity, resource or namespace name: 1-128 bytes, printable ASCII without
/// spaces. Throws ValidationError naming `field`.
void validate_name(std::string_view field, std::string_view value);

}  // namespace admit
