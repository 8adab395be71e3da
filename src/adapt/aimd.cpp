#include "admit/adapt/aimd.hpp"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <limits>
#include <string>

#include "admit/core/error.hpp"

namespace admit {

namespace {

constexpr Micros kNoDeadline = std::numeric_limits<Micros>::max();

// Shortest text that reads back as the same double ("0.1", "nan", "inf", "-1").
std::string text(double v) {
  char buf[64];
  const auto r = std::to_chars(buf, buf + sizeof buf, v);
  return std::string(buf, r.ptr);
}

void require(bool ok, const char* field, double value, const char* why) {
  if (!ok) throw ValidationError(field, text(value), why);
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

namespace {
// Validates and returns `o` unchanged; the constructor derives defaults and clamps.
const AimdOptions& validated(const AimdOptions& o) {
  validate(o);
  return o;
}
}  // namespace

// ---- Permit ----

AimdController::Permit::Permit(AimdController* owner, std::uint64_t epoch, double rate,
                               Micros issued_at) noexcept
    : owner_(owner), epoch_(epoch), rate_at_issue_(rate), issued_at_(issued_at), marked_(false) {}

AimdController::Permit::Permit(Permit&& other) noexcept
    : owner_(std::exchange(other.owner_, nullptr)),
      epoch_(other.epoch_),
      rate_at_issue_(other.rate_at_issue_),
      issued_at_(other.issued_at_),
      marked_(other.marked_.exchange(true)) {}

AimdController::Permit& AimdController::Permit::operator=(Permit&& other) noexcept {
  if (this != &other) {
    owner_ = std::exchange(other.owner_, nullptr);
    epoch_ = other.epoch_;
    rate_at_issue_ = other.rate_at_issue_;
    issued_at_ = other.issued_at_;
    marked_.store(other.marked_.exchange(true));
  }
  return *this;
}

bool AimdController::Permit::mark_success() {
  if (owner_ == nullptr || marked_.exchange(true)) return false;
  owner_->record_success();
  return true;
}

bool AimdController::Permit::mark_failure() {
  if (owner_ == nullptr || marked_.exchange(true)) return false;
  owner_->record_failure(epoch_);
  return true;
}

bool AimdController::Permit::marked() const noexcept { return marked_.load(); }

// ---- AimdController ----

AimdController::AimdController(const Clock& clock, AimdOptions options)
    : clock_(clock),
      max_rate_(validated(options).max_rate),
      min_rate_(options.min_rate),
      additive_increase_(options.additive_increase),
      multiplicative_decrease_(options.multiplicative_decrease),
      rate_(std::clamp(options.initial_rate, options.min_rate, options.max_rate)),
      threshold_(options.slow_start_threshold.value_or(options.max_rate / 2)),
      slow_start_(rate_ < threshold_),
      next_ready_(std::numeric_limits<Micros>::min()) {}

void AimdController::record_success() {
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

bool AimdController::record_failure() {
  std::lock_guard g(mu_);
  return record_failure_locked(epoch_);
}

bool AimdController::record_failure(std::uint64_t issued_epoch) {
  std::lock_guard g(mu_);
  return record_failure_locked(issued_epoch);
}

bool AimdController::record_failure_locked(std::uint64_t issued_epoch) {
  // Once per congestion event: a request issued before the latest decrease was sent at the
  // old rate, which that decrease already answered. Halving again for it is what makes the
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

AimdController::Permit AimdController::acquire() { return *acquire_impl(kNoDeadline, nullptr); }

std::optional<AimdController::Permit> AimdController::acquire(std::stop_token stop) {
  return acquire_impl(kNoDeadline, &stop);
}

std::optional<AimdController::Permit> AimdController::acquire_until(Micros deadline,
                                                                    std::stop_token stop) {
  return acquire_impl(deadline, &stop);
}

std::optional<AimdController::Permit> AimdController::try_acquire() {
  std::lock_guard g(mu_);
  if (serving_ != next_ticket_) return std::nullopt;  // never overtake a blocked waiter
  const Micros now = clock_.now();
  if (now < next_ready_) return std::nullopt;
  return issue_locked(now);
}

std::optional<AimdController::Permit> AimdController::acquire_impl(Micros deadline,
                                                                   const std::stop_token* stop) {
  // Declared before the lock so it is destroyed after the lock is released: its destructor
  // waits for a running callback, which itself takes mu_.
  auto wake = [this] {
    std::lock_guard g(mu_);
    cv_.notify_all();
  };
  std::optional<std::stop_callback<decltype(wake)>> on_stop;
  if (stop != nullptr && stop->stop_possible()) on_stop.emplace(*stop, wake);

  std::unique_lock lk(mu_);
  const std::uint64_t ticket = next_ticket_++;
  ++waiters_;
  for (;;) {
    if (stop != nullptr && stop->stop_requested()) {
      abandon_locked(ticket);
      return std::nullopt;
    }
    const Micros now = clock_.now();
    if (ticket == serving_) {
      if (now >= next_ready_) {
        --waiters_;
        std::optional<Permit> permit = issue_locked(now);
        advance_queue_locked();
        cv_.notify_all();  // the next waiter is now the head
        return permit;
      }
      // The head's slot is fixed (rate changes affect only later slots), so a slot after
      // the deadline means no permit in time: say so now rather than at the deadline.
      if (next_ready_ > deadline) {
        abandon_locked(ticket);
        return std::nullopt;
      }
      clock_.wait_until(lk, cv_, next_ready_);
    } else {
      if (now >= deadline) {
        abandon_locked(ticket);
        return std::nullopt;
      }
      if (deadline == kNoDeadline || deadline - now > kMaxInterval) {
        cv_.wait(lk);  // woken when the queue moves or on stop
      } else {
        clock_.wait_until(lk, cv_, deadline);
      }
    }
  }
}

AimdController::Permit AimdController::issue_locked(Micros now) {
  Permit permit(this, epoch_, rate_, now);
  next_ready_ = std::max(next_ready_, now) + interval_locked();
  return permit;
}

void AimdController::abandon_locked(std::uint64_t ticket) {
  --waiters_;
  if (ticket == serving_) {
    advance_queue_locked();
    cv_.notify_all();
  } else {
    abandoned_.insert(ticket);
  }
}

void AimdController::advance_queue_locked() {
  ++serving_;
  while (!abandoned_.empty() && *abandoned_.begin() == serving_) {
    abandoned_.erase(abandoned_.begin());
    ++serving_;
  }
}

Micros AimdController::interval_locked() const {
  // Capped so that now + interval, and a Clock converting it to ns, cannot overflow.
  const double us = 1e6 / rate_;
  if (!(us < static_cast<double>(kMaxInterval))) return kMaxInterval;
  return std::max<Micros>(1, static_cast<Micros>(std::llround(us)));
}

double AimdController::current_rate() const {
  std::lock_guard g(mu_);
  return rate_;
}

double AimdController::slow_start_threshold() const {
  std::lock_guard g(mu_);
  return threshold_;
}

bool AimdController::in_slow_start() const {
  std::lock_guard g(mu_);
  return slow_start_;
}

bool AimdController::in_fast_recovery() const {
  std::lock_guard g(mu_);
  return fast_recovery_;
}

std::uint64_t AimdController::epoch() const {
  std::lock_guard g(mu_);
  return epoch_;
}

AimdState AimdController::state() const {
  std::lock_guard g(mu_);
  return AimdState{rate_, threshold_, slow_start_, fast_recovery_, recovery_target_, epoch_};
}

Micros AimdController::interval() const {
  std::lock_guard g(mu_);
  return interval_locked();
}

std::size_t AimdController::waiters() const {
  std::lock_guard g(mu_);
  return waiters_;
}

}  // namespace admit
