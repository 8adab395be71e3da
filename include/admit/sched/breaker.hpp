// CircuitBreaker: stops sending to a bucket that keeps failing. Closed until `threshold`
// failures fall within `window`; then open (everything fails fast) for `open_for`; then
// half-open: a probe goes through, its success closes the breaker, its failure opens it again.
#pragma once

#include <cstdint>
#include <deque>
#include <string_view>

#include "admit/core/time.hpp"

namespace admit::sched {

enum class BreakerState : std::uint8_t { closed, open, half_open };
std::string_view to_string(BreakerState s) noexcept;

struct BreakerOptions {
  int threshold = 20;                       ///< failures within `window` that open it, >= 1
  Micros window = 30 * kMicrosPerSecond;    ///< sliding window of failures, > 0
  Micros open_for = 30 * kMicrosPerSecond;  ///< how long it stays open before a probe, > 0
  int probes = 1;                           ///< requests let through at once while half-open
};

/**
 * One breaker (the scheduler keeps one per bucket). Time is passed in, so it is exact and
 * testable. Not thread-safe (one owner, e.g. the scheduler's strand).
 */
class CircuitBreaker {
 public:
  /// @throws ValidationError naming the first invalid option.
  explicit CircuitBreaker(BreakerOptions options = {});

  /// The state at `now`: an open breaker whose open_for has passed reads half_open.
  BreakerState state(Micros now) const;

  /// May a request go out at `now`? Closed: yes. Open: no. Half-open: yes while fewer than
  /// `probes` probes are out (this call takes one; its outcome or release() gives it back).
  bool try_pass(Micros now);
  /// A request let through did not go out after all (its probe is given back).
  void release(Micros now);

  /// The outcome of a request that went out. Closed: a failure counts in the window and
  /// opens the breaker at `threshold`. Half-open: a success closes it, a failure opens it.
  void on_success(Micros now);
  /// @return true if this call opened the breaker.
  bool on_failure(Micros now);

  /// While open: when it goes half-open. 0 otherwise.
  Micros open_until() const { return state_ == BreakerState::closed ? 0 : open_until_; }
  /// Failures in the window at `now` (closed state).
  int failures(Micros now);
  /// How many times it opened.
  std::uint64_t trips() const { return trips_; }
  const BreakerOptions& options() const { return options_; }

 private:
  void advance(Micros now);  // open -> half_open once open_for has passed
  void open(Micros now);

  BreakerOptions options_;
  BreakerState state_ = BreakerState::closed;
  std::deque<Micros> failures_;  // closed: failure instants within the window, oldest first
  Micros open_until_ = 0;
  int probes_out_ = 0;
  std::uint64_t trips_ = 0;
};

}  // namespace admit::sched
