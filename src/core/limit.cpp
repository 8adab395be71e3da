#include "admit/core/limit.hpp"

#include <numeric>

#include "admit/core/error.hpp"
#include "admit/core/window.hpp"

namespace admit {

std::string_view to_string(LimitKind k) {
  switch (k) {
    case LimitKind::rate: return "rate";
    case LimitKind::window: return "window";
    case LimitKind::concurrency: return "concurrency";
  }
  return "unknown";
}

std::string_view to_string(WindowUnit u) {
  switch (u) {
    case WindowUnit::minute: return "minute";
    case WindowUnit::hour: return "hour";
    case WindowUnit::day: return "day";
    case WindowUnit::week: return "week";
    case WindowUnit::month: return "month";
  }
  return "unknown";
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

const WindowSpec& Limit::window_spec() const {
  static const WindowSpec kNone{};
  return calendar_ ? calendar_->spec() : kNone;
}

WindowBounds Limit::window_at(Micros now) const {
  return calendar_ ? calendar_->at(now) : WindowBounds{};
}

std::int64_t Limit::max_amount() const {
  return kind_ == LimitKind::rate && capacity_ > 0 ? rate_.max_amount : kMaxExact;
}

namespace {
std::string format_period(Micros us) {
  struct Unit {
    Micros size;
    const char* suffix;
  };
  static constexpr Unit kUnits[] = {{kMicrosPerDay, "d"},   {kMicrosPerHour, "h"},
                                    {kMicrosPerMinute, "m"}, {kMicrosPerSecond, "s"},
                                    {1000, "ms"},            {1, "us"}};
  for (const auto& u : kUnits) {
    if (us % u.size == 0) return std::to_string(us / u.size) + u.suffix;
  }
  return std::to_string(us) + "us";
}
}  // namespace

std::string Limit::describe() const {
  std::string s = name_ + ": ";
  if (unlimited()) return s + "unlimited";
  switch (kind_) {
    case LimitKind::rate:
      return s + std::to_string(refill_amount_) + " per " + format_period(refill_period_) +
             " (burst " + std::to_string(capacity_) + ")";
    case LimitKind::window: {
      const auto& w = window_spec();
      return s + std::to_string(capacity_) + " per " + std::string(to_string(w.unit)) +
             " (resets " + w.reset_at + " " + w.time_zone + ")";
    }
    case LimitKind::concurrency:
      return s + std::to_string(capacity_) + " concurrent";
  }
  return s;
}

bool Limit::operator==(const Limit& o) const {
  if (name_ != o.name_ || kind_ != o.kind_ || capacity_ != o.capacity_ ||
      refill_amount_ != o.refill_amount_ || refill_period_ != o.refill_period_) {
    return false;
  }
  if (kind_ != LimitKind::window) return true;
  const auto& a = window_spec();
  const auto& b = o.window_spec();
  return a.unit == b.unit && a.reset_at == b.reset_at && a.time_zone == b.time_zone;
}

}  // namespace admit
