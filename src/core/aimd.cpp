#include "admit/core/aimd.hpp"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <string>

#include "admit/core/error.hpp"

namespace admit {

namespace {

// Shortest text that reads back as the same double ("0.1", "nan", "inf", "-1").
std::string text(double v) {
  char buf[64];
  const auto r = std::to_chars(buf, buf + sizeof buf, v);
  return std::string(buf, r.ptr);
}

void require(bool ok, const char* field, double value, const char* why) {
  if (!ok) throw ValidationError(field, text(value), why);
}

// Validates and returns `o` unchanged; the constructor derives defaults and clamps.
const AimdOptions& validated(const AimdOptions& o) {
  validate(o);
  return o;
}

}  // namespace

void validate(const AimdOptions& o) {
  require(std::isfinite(o.max_rate) && o.max_rate > 0, "max_rate", o.max_rate,
          "must be finite and > 0");
  require(std::isfinite(o.min_rate) && o.min_rate > 0, "min_rate", o.min_rate,
          "must be finite and > 0");
  require(o.min_rate <= o.max_rate, "min_rate", o.min_rate, "must be <= max_rate");
  require(std::isfinite(o.initial_rate) && o.initial_rate > 0, "initial_rate", o.initial_rate,
          "must be finite and > 0");
  if (o.slow_start_threshold) {
    const double t = *o.slow_start_threshold;
    require(std::isfinite(t) && t > 0 && t <= o.max_rate, "slow_start_threshold", t,
            "must be finite and in (0, max_rate]");
  }
  require(std::isfinite(o.additive_increase) && o.additive_increase > 0, "additive_increase",
          o.additive_increase, "must be finite and > 0");
  require(std::isfinite(o.multiplicative_decrease) && o.multiplicative_decrease > 0 &&
              o.multiplicative_decrease < 1,
          "multiplicative_decrease", o.multiplicative_decrease, "must be in (0, 1)");
}

AimdLaw::AimdLaw(const AimdOptions& options)
    : max_rate_(validated(options).max_rate),
      min_rate_(options.min_rate),
      additive_increase_(options.additive_increase),
      multiplicative_decrease_(options.multiplicative_decrease),
      rate_(std::clamp(options.initial_rate, options.min_rate, options.max_rate)),
      threshold_(options.slow_start_threshold.value_or(options.max_rate / 2)),
      slow_start_(rate_ < threshold_) {}

void AimdLaw::record_success() {
  std::lock_guard g(mu_);
  if (slow_start_) {
    rate_ = std::max(std::min({rate_ * 2, threshold_, max_rate_}), min_rate_);
    if (rate_ >= threshold_) {
      slow_start_ = false;
      fast_recovery_ = false;
      recovery_target_ = 0;
    }
    return;
  }
  rate_ = std::max(std::min(rate_ + additive_increase_, max_rate_), min_rate_);
  if (fast_recovery_ && rate_ >= recovery_target_) {
    fast_recovery_ = false;
    recovery_target_ = 0;
  }
}

bool AimdLaw::record_failure() {
  std::lock_guard g(mu_);
  return record_failure_locked(epoch_);
}

bool AimdLaw::record_failure(std::uint64_t issued_epoch) {
  std::lock_guard g(mu_);
  return record_failure_locked(issued_epoch);
}

bool AimdLaw::record_failure_locked(std::uint64_t issued_epoch) {
  // Once per congestion event: a request sent before the latest decrease was sent at the old
  // rate, which that decrease already answered. Halving again for it is what makes the
  // original collapse to min_rate when N in-flight requests fail together (0.5^N).
  if (issued_epoch < epoch_) return false;
  const double previous = rate_;
  const double reduced = std::max(rate_ * multiplicative_decrease_, min_rate_);
  rate_ = reduced;
  threshold_ = reduced;
  slow_start_ = false;
  fast_recovery_ = true;
  recovery_target_ = std::max(previous, reduced);
  ++epoch_;
  return true;
}

double AimdLaw::current_rate() const {
  std::lock_guard g(mu_);
  return rate_;
}

double AimdLaw::slow_start_threshold() const {
  std::lock_guard g(mu_);
  return threshold_;
}

bool AimdLaw::in_slow_start() const {
  std::lock_guard g(mu_);
  return slow_start_;
}

bool AimdLaw::in_fast_recovery() const {
  std::lock_guard g(mu_);
  return fast_recovery_;
}

std::uint64_t AimdLaw::epoch() const {
  std::lock_guard g(mu_);
  return epoch_;
}

AimdState AimdLaw::state() const {
  std::lock_guard g(mu_);
  return AimdState{rate_, threshold_, slow_start_, fast_recovery_, recovery_target_, epoch_};
}

std::optional<AimdState> AimdLaw::adopt(double rate, bool decreased, std::uint64_t expected_epoch) {
  std::lock_guard g(mu_);
  if (epoch_ != expected_epoch || !std::isfinite(rate)) return std::nullopt;
  const double r = std::clamp(rate, min_rate_, max_rate_);
  if (decreased) {
    // As record_failure(), with the rate the others reached instead of this law's own cut.
    const double previous = rate_;
    rate_ = r;
    threshold_ = r;
    slow_start_ = false;
    if (r < previous) {
      fast_recovery_ = true;
      recovery_target_ = previous;
    } else if (fast_recovery_ && r >= recovery_target_) {
      fast_recovery_ = false;
      recovery_target_ = 0;
    }
    ++epoch_;
  } else if (r > rate_) {
    rate_ = r;
    if (slow_start_ && rate_ >= threshold_) {
      slow_start_ = false;
      fast_recovery_ = false;
      recovery_target_ = 0;
    }
    if (fast_recovery_ && rate_ >= recovery_target_) {
      fast_recovery_ = false;
      recovery_target_ = 0;
    }
  }
  return AimdState{rate_, threshold_, slow_start_, fast_recovery_, recovery_target_, epoch_};
}

}  // namespace admit
