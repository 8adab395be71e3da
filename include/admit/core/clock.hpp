// Clocks: the single source of time for limiters, injected everywhere (no global clock).
// A decision reads the clock at most once; waits go through the clock so that a ManualClock
// can drive deadlines and retries in tests without sleeping.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <vector>

#include "admit/core/time.hpp"

namespace admit {

/**
 * A time source. now() is microseconds since the Unix epoch and never decreases.
 * Thread-safe.
 */
class Clock {
 public:
  virtual ~Clock() = default;

  /// @return the current instant in µs since the Unix epoch; never less than an earlier call.
  virtual Micros now() const = 0;

  /**
   * Blocks on `cv` (whose mutex `lock` holds) until it is notified or until now() >= deadline.
   * May return early (spuriously); callers re-check their condition in a loop.
   * @note `lock`'s mutex must outlive the wait and any concurrent ManualClock::advance().
   */
  virtual void wait_until(std::unique_lock<std::mutex>& lock, std::condition_variable& cv,
                          Micros deadline) const = 0;

  /**
   * Timed callbacks for asynchronous waits, for clocks that do not follow real time. A clock
   * that follows real time (SystemClock, CoarseClock) returns 0 and leaves timing to the
   * caller's event loop (a steady timer for deadline - now()). A simulated clock (ManualClock)
   * runs `fn` once, when it reaches `deadline`, and returns a nonzero id for cancel_call().
   * `fn` must be quick and must not call back into the clock's advance().
   */
  virtual std::uint64_t call_at(Micros deadline, std::function<void()> fn) const;
  /// Forgets a call_at() that has not run. @return whether it was still pending.
  virtual bool cancel_call(std::uint64_t id) const;
};

/**
 * The default clock: std::chrono::steady_clock (monotonic, ~30 ns a read here) anchored to
 * system_clock at construction, so instants look like wall time but never jump. Over long
 * runs it drifts from the wall clock only by the NTP slew since construction.
 */
class SystemClock final : public Clock {
 public:
  SystemClock();
  Micros now() const override;
  void wait_until(std::unique_lock<std::mutex>& lock, std::condition_variable& cv,
                  Micros deadline) const override;

 private:
  Micros wall_anchor_;
  std::int64_t steady_anchor_ns_;
};

/**
 * A cheaper clock: CLOCK_MONOTONIC_COARSE (~6 ns a read here), anchored like SystemClock.
 * Staleness bound: a reading lags real time by at most resolution() (one kernel tick,
 * typically 1-4 ms). Decisions stay exact relative to the reading; they are merely taken
 * up to one tick late, which only ever admits less, never more.
 */
class CoarseClock final : public Clock {
 public:
  CoarseClock();
  Micros now() const override;
  void wait_until(std::unique_lock<std::mutex>& lock, std::condition_variable& cv,
                  Micros deadline) const override;
  /// @return the staleness bound in µs (clock_getres of CLOCK_MONOTONIC_COARSE).
  Micros resolution() const { return resolution_; }

 private:
  Micros wall_anchor_;
  Micros coarse_anchor_;
  Micros resolution_;
};

/**
 * A clock that moves only when told to. advance() and set() wake every waiter whose deadline
 * has come and run every call_at() callback that is due (on the thread that moves time, in
 * deadline order, after the clock's lock is released). For tests and simulations: timers of
 * asynchronous waits (admit/async.hpp) follow it, so async tests never sleep. Thread-safe.
 */
class ManualClock final : public Clock {
 public:
  explicit ManualClock(Micros start = 1'700'000'000'000'000);
  Micros now() const override;
  void wait_until(std::unique_lock<std::mutex>& lock, std::condition_variable& cv,
                  Micros deadline) const override;
  /// Runs `fn` when time reaches `deadline`: inside this call if it has already.
  std::uint64_t call_at(Micros deadline, std::function<void()> fn) const override;
  bool cancel_call(std::uint64_t id) const override;

  /// Moves time forward by `d` µs (negative values are ignored) and wakes due waiters.
  /// @return how many waiters were woken.
  std::size_t advance(Micros d);
  /// Moves time to `t` if it is later than now (time never goes back) and wakes due waiters.
  std::size_t set(Micros t);
  /// @return how many threads are blocked in wait_until right now.
  std::size_t sleepers() const;
  /// @return the earliest deadline among blocked threads and pending call_at()s, or -1 if
  /// none.
  Micros next_wakeup() const;
  /// @return how many call_at() callbacks are pending.
  std::size_t pending_calls() const;

 private:
  struct Sleeper {
    std::mutex* mu;
    std::condition_variable* cv;
    Micros deadline;
    bool active = true;  // guarded by *mu
  };
  struct Call {
    Micros deadline;
    std::uint64_t id;
    std::function<void()> fn;
  };
  std::size_t wake_due();

  mutable std::mutex mu_;
  Micros now_;
  mutable std::vector<std::shared_ptr<Sleeper>> sleepers_;
  mutable std::vector<Call> calls_;  // pending call_at()s
  mutable std::uint64_t next_call_id_ = 1;
};

}  // namespace admit
