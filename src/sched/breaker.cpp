// CircuitBreaker: closed -> open -> half-open -> closed; see admit/sched/breaker.hpp.
#include "admit/sched/breaker.hpp"

#include <string>

#include "admit/core/error.hpp"

namespace admit::sched {

std::string_view to_string(BreakerState s) noexcept {
  switch (s) {
    case BreakerState::closed:
      return "closed";
    case BreakerState::open:
      return "open";
    case BreakerState::half_open:
      return "half_open";
  }
  return "closed";
}

CircuitBreaker::CircuitBreaker(BreakerOptions options) : options_(options) {
  if (options_.threshold < 1) {
    throw ValidationError("breaker.threshold", std::to_string(options_.threshold), "must be >= 1");
  }
  if (options_.window <= 0) {
    throw ValidationError("breaker.window", std::to_string(options_.window), "must be > 0");
  }
  if (options_.open_for <= 0) {
    throw ValidationError("breaker.open_for", std::to_string(options_.open_for), "must be > 0");
  }
  if (options_.probes < 1) {
    throw ValidationError("breaker.probes", std::to_string(options_.probes), "must be >= 1");
  }
}

BreakerState CircuitBreaker::state(Micros now) const {
  if (state_ == BreakerState::open && now >= open_until_) return BreakerState::half_open;
  return state_;
}

void CircuitBreaker::advance(Micros now) {
  if (state_ == BreakerState::open && now >= open_until_) {
    state_ = BreakerState::half_open;
    probes_out_ = 0;
  }
}

void CircuitBreaker::open(Micros now) {
  state_ = BreakerState::open;
  open_until_ = now + options_.open_for;
  probes_out_ = 0;
  failures_.clear();
  ++trips_;
}

bool CircuitBreaker::try_pass(Micros now) {
  advance(now);
  switch (state_) {
    case BreakerState::closed:
      return true;
    case BreakerState::open:
      return false;
    case BreakerState::half_open:
      if (probes_out_ >= options_.probes) return false;
      ++probes_out_;
      return true;
  }
  return false;
}

void CircuitBreaker::release(Micros now) {
  advance(now);
  if (state_ == BreakerState::half_open && probes_out_ > 0) --probes_out_;
}

void CircuitBreaker::on_success(Micros now) {
  advance(now);
  if (state_ == BreakerState::half_open) {
    state_ = BreakerState::closed;
    probes_out_ = 0;
    open_until_ = 0;
  }
  // Closed: successes do not erase failures; the window forgets them as they age, so a
  // bucket failing one request in two still trips.
}

bool CircuitBreaker::on_failure(Micros now) {
  advance(now);
  switch (state_) {
    case BreakerState::open:
      // A request sent before the breaker opened: it already counted as open.
      return false;
    case BreakerState::half_open:
      open(now);
      return true;
    case BreakerState::closed:
      failures_.push_back(now);
      while (!failures_.empty() && failures_.front() <= now - options_.window)
        failures_.pop_front();
      if (static_cast<int>(failures_.size()) >= options_.threshold) {
        open(now);
        return true;
      }
      return false;
  }
  return false;
}

int CircuitBreaker::failures(Micros now) {
  while (!failures_.empty() && failures_.front() <= now - options_.window) failures_.pop_front();
  return static_cast<int>(failures_.size());
}

}  // namespace admit::sched
