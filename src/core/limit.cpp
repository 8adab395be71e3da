#include "admit/core/limit.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <numeric>

#include "admit/core/error.hpp"
#include "admit/core/rate.hpp"
#include "admit/core/window.hpp"

namespace admit {

std::string_view to_string(LimitKind k) {
  switch (k) {
    case LimitKind::rate:
      return "rate";
    case LimitKind::window:
      return "window";
    case LimitKind::concurrency:
      return "concurrency";
    case LimitKind::adaptive:
      return "adaptive";
  }
  return "unknown";
}

std::string_view to_string(WindowUnit u) {
  switch (u) {
    case WindowUnit::minute:
      return "minute";
    case WindowUnit::hour:
      return "hour";
    case WindowUnit::day:
      return "day";
    case WindowUnit::week:
      return "week";
    case WindowUnit::month:
      return "month";
  }
  return "unknown";
}

std::optional<WindowUnit> window_unit_from(std::string_view name) {
  for (const WindowUnit u : {WindowUnit::minute, WindowUnit::hour, WindowUnit::day,
                             WindowUnit::week, WindowUnit::month}) {
    if (to_string(u) == name) return u;
  }
  return std::nullopt;
}

void validate_name(std::string_view field, std::string_view value) {
  if (value.empty() || value.size() > 128) {
    throw ValidationError(std::string(field), std::string(value), "must be 1 to 128 bytes");
  }
  for (const char c : value) {
    const auto u = static_cast<unsigned char>(c);
    if (u <= 0x20 || u >= 0x7f) {
      throw ValidationError(std::string(field), std::string(value),
                            "must be printable ASCII without spaces");
    }
  }
}

namespace {

// FNV-1a over the kind and the name: stable across processes and builds.
std::uint64_t hash_name(LimitKind kind, std::string_view name) {
  std::uint64_t h = 0xcbf29ce484222325ULL;
  auto mix = [&h](unsigned char c) {
    h ^= c;
    h *= 0x100000001b3ULL;
  };
  mix(static_cast<unsigned char>(kind));
  for (const char c : name) mix(static_cast<unsigned char>(c));
  return h;
}

void require_non_negative(std::string_view field, std::int64_t v) {
  if (v < 0) throw ValidationError(std::string(field), std::to_string(v), "must be >= 0");
}

void require_exact(std::string_view field, std::int64_t v) {
  if (v > kMaxExact) {
    throw ValidationError(std::string(field), std::to_string(v), "must be below 2^53");
  }
}

}  // namespace

Limit Limit::make_rate(std::string name, std::int64_t capacity, std::int64_t refill_amount,
                       Micros refill_period) {
  validate_name("limit name", name);
  require_non_negative("capacity", capacity);
  require_exact("capacity", capacity);
  Limit l;
  l.name_ = std::move(name);
  l.kind_ = LimitKind::rate;
  l.capacity_ = capacity;
  l.name_hash_ = hash_name(l.kind_, l.name_);
  if (capacity == 0) return l;  // unlimited
  if (refill_amount <= 0) {
    throw ValidationError("refill_amount", std::to_string(refill_amount), "must be > 0");
  }
  require_exact("refill_amount", refill_amount);
  if (refill_period <= 0) {
    throw ValidationError("refill_period", std::to_string(refill_period) + "us", "must be > 0");
  }
  require_exact("refill_period", refill_period);
  l.refill_amount_ = refill_amount;
  l.refill_period_ = refill_period;

  // T = refill_period / refill_amount = a + b / r, reduced.
  const std::int64_t g = std::gcd(refill_amount, refill_period);
  RateParams& p = l.rate_;
  p.capacity = capacity;
  p.r = refill_amount / g;
  const std::int64_t period = refill_period / g;
  p.a = period / p.r;
  p.b = period % p.r;
  // Every product the math forms (n*b, n*a, tat + n*T) stays below 2^53.
  p.max_amount = std::min(kMaxExact / std::max<std::int64_t>(p.b, 1),
                          (kMaxExact / 4) / std::max<std::int64_t>(p.a, 1));
  if (capacity > p.max_amount) {
    throw ValidationError("capacity", std::to_string(capacity),
                          "capacity * refill_period / refill_amount is too large to be exact "
                          "(reduce the capacity or use a coarser period); at most " +
                              std::to_string(p.max_amount));
  }
  const std::int64_t cb = capacity * p.b;
  p.tol_us = capacity * p.a + cb / p.r;
  p.tol_rem = cb % p.r;
  return l;
}

namespace {
std::int64_t burst_or(std::int64_t n, std::int64_t burst) {
  require_non_negative("rate", n);
  require_non_negative("burst", burst);
  return n == 0 ? 0 : (burst == 0 ? n : burst);
}
}  // namespace

Limit Limit::per_second(std::string name, std::int64_t n, std::int64_t burst) {
  return make_rate(std::move(name), burst_or(n, burst), n, kMicrosPerSecond);
}
Limit Limit::per_minute(std::string name, std::int64_t n, std::int64_t burst) {
  return make_rate(std::move(name), burst_or(n, burst), n, kMicrosPerMinute);
}
Limit Limit::per_hour(std::string name, std::int64_t n, std::int64_t burst) {
  return make_rate(std::move(name), burst_or(n, burst), n, kMicrosPerHour);
}
Limit Limit::per_day(std::string name, std::int64_t n, std::int64_t burst) {
  return make_rate(std::move(name), burst_or(n, burst), n, kMicrosPerDay);
}

Limit Limit::custom(std::string name, std::int64_t capacity, std::int64_t refill_amount,
                    std::chrono::microseconds refill_period) {
  return make_rate(std::move(name), capacity, refill_amount, refill_period.count());
}

Limit Limit::window(std::string name, std::int64_t capacity, WindowSpec spec) {
  validate_name("limit name", name);
  require_non_negative("capacity", capacity);
  require_exact("capacity", capacity);
  Limit l;
  l.name_ = std::move(name);
  l.kind_ = LimitKind::window;
  l.capacity_ = capacity;
  l.name_hash_ = hash_name(l.kind_, l.name_);
  l.calendar_ = std::make_shared<const WindowCalendar>(std::move(spec));  // validates
  return l;
}

Limit Limit::daily(std::string name, std::int64_t capacity, std::string reset_at,
                   std::string time_zone) {
  return window(std::move(name), capacity,
                WindowSpec{WindowUnit::day, std::move(reset_at), std::move(time_zone)});
}

Limit Limit::concurrency(std::string name, std::int64_t slots) {
  validate_name("limit name", name);
  require_non_negative("slots", slots);
  require_exact("slots", slots);
  Limit l;
  l.name_ = std::move(name);
  l.kind_ = LimitKind::concurrency;
  l.capacity_ = slots;
  l.name_hash_ = hash_name(l.kind_, l.name_);
  return l;
}

namespace {
// Largest interval (ns per unit) whose tolerance burst * interval stays exact (see rate.hpp).
std::int64_t max_interval_ns(std::int64_t burst) { return (kMaxExact / 4) / burst; }
}  // namespace

Limit Limit::adaptive(std::string name, AimdOptions options, std::int64_t burst) {
  validate_name("limit name", name);
  validate(options);
  if (burst < 1 || burst > 1'000'000) {
    throw ValidationError("burst", std::to_string(burst), "must be within 1..1000000");
  }
  if (1e9 / options.min_rate > static_cast<double>(max_interval_ns(burst))) {
    throw ValidationError(
        "min_rate", std::to_string(options.min_rate),
        "is too slow to be exact with burst " + std::to_string(burst) + " (at least " +
            std::to_string(1e9 / static_cast<double>(max_interval_ns(burst))) + " per second)");
  }
  Limit l;
  l.name_ = std::move(name);
  l.kind_ = LimitKind::adaptive;
  l.capacity_ = burst;
  l.name_hash_ = hash_name(l.kind_, l.name_);
  l.aimd_ = std::make_shared<const AimdOptions>(options);
  l.rate_ = l.rate_at(options.initial_rate);
  return l;
}

const AimdOptions& Limit::aimd_options() const {
  static const AimdOptions kNone{};
  return aimd_ ? *aimd_ : kNone;
}

RateParams Limit::rate_at(double per_second) const {
  RateParams p;
  if (!aimd_) return rate_;
  const double r = std::clamp(per_second, aimd_->min_rate, aimd_->max_rate);
  // adaptive() checked that the slowest interval keeps burst * interval exact.
  const std::int64_t interval_ns =
      std::clamp<std::int64_t>(std::llround(1e9 / r), 1, max_interval_ns(capacity_));
  p.capacity = capacity_;
  p.r = 1000;
  p.a = interval_ns / 1000;
  p.b = interval_ns % 1000;
  const std::int64_t tol = capacity_ * interval_ns;
  p.tol_us = tol / 1000;
  p.tol_rem = tol % 1000;
  p.max_amount = capacity_;
  return p;
}

const WindowSpec& Limit::window_spec() const {
  static const WindowSpec kNone{};
  return calendar_ ? calendar_->spec() : kNone;
}

WindowBounds Limit::window_at(Micros now) const {
  return calendar_ ? calendar_->at(now) : WindowBounds{};
}

std::int64_t Limit::max_amount() const {
  if (kind_ == LimitKind::adaptive) return capacity_;
  return kind_ == LimitKind::rate && capacity_ > 0 ? rate_.max_amount : kMaxExact;
}

namespace {
std::string format_period(Micros us) {
  struct Unit {
    Micros size;
    const char* suffix;
  };
  static constexpr Unit kUnits[] = {
      {kMicrosPerDay, "d"},    {kMicrosPerHour, "h"}, {kMicrosPerMinute, "m"},
      {kMicrosPerSecond, "s"}, {1000, "ms"},          {1, "us"}};
  for (const auto& u : kUnits) {
    if (us % u.size == 0) return std::to_string(us / u.size) + u.suffix;
  }
  return std::to_string(us) + "us";
}

// describe() without the shadow flag.
std::string describe_value(const Limit& l) {
  std::string s = l.name() + ": ";
  if (l.unlimited()) return s + "unlimited";
  switch (l.kind()) {
    case LimitKind::rate:
      return s + std::to_string(l.refill_amount()) + " per " + format_period(l.refill_period()) +
             " (burst " + std::to_string(l.capacity()) + ")";
    case LimitKind::window: {
      const auto& w = l.window_spec();
      return s + std::to_string(l.capacity()) + " per " + std::string(to_string(w.unit)) +
             " (resets " + w.reset_at + " " + w.time_zone + ")";
    }
    case LimitKind::concurrency:
      return s + std::to_string(l.capacity()) + " concurrent";
    case LimitKind::adaptive: {
      char buf[128];
      std::snprintf(buf, sizeof buf, "adaptive %g..%g per 1s (AIMD, burst %lld)",
                    l.aimd_options().min_rate, l.aimd_options().max_rate,
                    static_cast<long long>(l.capacity()));
      return s + buf;
    }
  }
  return s;
}
}  // namespace

Micros Limit::period() const {
  if (unlimited()) return 0;
  if (kind_ == LimitKind::rate) {
    const rate::Int128 p = static_cast<rate::Int128>(capacity_) * refill_period_ / refill_amount_;
    return static_cast<Micros>(p);
  }
  if (kind_ != LimitKind::window) return 0;
  switch (window_spec().unit) {
    case WindowUnit::minute:
      return kMicrosPerMinute;
    case WindowUnit::hour:
      return 60 * kMicrosPerMinute;
    case WindowUnit::day:
      return kMicrosPerDay;
    case WindowUnit::week:
      return 7 * kMicrosPerDay;
    case WindowUnit::month:
      return 30 * kMicrosPerDay;
  }
  return 0;
}

Limit Limit::with_shadow(bool shadow) const {
  Limit l = *this;
  l.shadow_ = shadow;
  return l;
}

std::string Limit::describe() const {
  std::string s = describe_value(*this);
  if (shadow_) s += ", shadow";
  return s;
}

bool Limit::operator==(const Limit& o) const {
  if (name_ != o.name_ || kind_ != o.kind_ || shadow_ != o.shadow_ || capacity_ != o.capacity_ ||
      refill_amount_ != o.refill_amount_ || refill_period_ != o.refill_period_) {
    return false;
  }
  if (kind_ == LimitKind::adaptive) {
    const AimdOptions& a = aimd_options();
    const AimdOptions& b = o.aimd_options();
    return a.max_rate == b.max_rate && a.initial_rate == b.initial_rate &&
           a.slow_start_threshold == b.slow_start_threshold &&
           a.additive_increase == b.additive_increase &&
           a.multiplicative_decrease == b.multiplicative_decrease && a.min_rate == b.min_rate;
  }
  if (kind_ != LimitKind::window) return true;
  const auto& a = window_spec();
  const auto& b = o.window_spec();
  return a.unit == b.unit && a.reset_at == b.reset_at && a.time_zone == b.time_zone;
}

}  // namespace admit
