// Timer: a one-shot timer on the caller's event loop, the seam between admit's asynchronous
// waits (Limiter::acquire_async, the scheduler) and whatever loop runs them. The library owns
// no threads: admit/async/timer.hpp makes a Timer from an Asio executor, timed by the
// Limiter's Clock (a ManualClock's call_at in tests, a steady timer otherwise).
#pragma once

#include <functional>

#include "admit/core/time.hpp"

namespace admit {

/**
 * A re-armable one-shot timer bound to one event loop. Thread-safe: arm(), cancel() and
 * post() may be called from any thread, concurrently.
 */
class Timer {
 public:
  virtual ~Timer() = default;

  /// Runs `fn` on the loop once the clock reaches `deadline` (µs since the epoch, the clock's
  /// time), unless cancel() or another arm() comes first: an arm replaces the pending one,
  /// whose function then never runs.
  virtual void arm(Micros deadline, std::function<void()> fn) = 0;
  /// Forgets the pending arm, if any: its function will not run.
  virtual void cancel() = 0;
  /// Runs `fn` on the loop soon, never inside this call.
  virtual void post(std::function<void()> fn) = 0;
};

}  // namespace admit
