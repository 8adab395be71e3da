// AimdController: an AIMD pacer that issues permits spaced 1/rate apart, the rate set by the
// AIMD control law (AimdLaw, admit/core/aimd.hpp) from success/failure feedback.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <mutex>
#include <optional>
#include <set>
#include <stop_token>
#include <type_traits>
#include <utility>

#include "admit/core/aimd.hpp"
#include "admit/core/clock.hpp"
#include "admit/core/time.hpp"

namespace admit {

/**
 * An AIMD pacer: the control law of AimdLaw (slow start, congestion avoidance, fast recovery,
 * at most one decrease per congestion event; see admit/core/aimd.hpp) plus permits spaced by
 * its rate, after the Python `aimd-limiter` (AIMDAsyncLimiter), made thread-safe.
 *
 * Every permit remembers the epoch (decrease count) it was issued in, and its failure is
 * recorded with that epoch: a permit issued before the latest decrease does not decrease
 * again, so N concurrent 429s from one overload cost one decrease, not 0.5^N.
 *
 * Pacing: permits are issued no closer than interval = round(1e6 / rate) µs (at least 1),
 * using the rate at the moment of issue; after an issue at `now` the next slot is
 * max(next slot, now) + interval, so there is never a burst. Blocking waiters are served
 * in FIFO order, and try_acquire() never overtakes a waiter.
 *
 * Thread-safe: every member may be called concurrently (the law's mutex and one for pacing).
 * Waits go through Clock::wait_until, so a ManualClock drives them in tests. The controller
 * must outlive its permits and must not be destroyed while a thread is inside acquire.
 */
class AimdController {
 public:
  /**
   * The right to send one request, and the channel for reporting how it went. Move-only.
   * The first mark_success()/mark_failure() records the outcome; later marks are ignored.
   * A Permit destroyed unmarked records nothing (the request neither helps nor hurts the
   * rate; use AimdController::run() to get success-or-failure marking automatically).
   * Marks are thread-safe (atomic); the controller must still be alive when marking.
   */
  class Permit {
   public:
    /// Move-constructs; `other` becomes empty (its marks do nothing). Thread-safe w.r.t.
    /// other permits; do not move a permit another thread is marking.
    Permit(Permit&& other) noexcept;
    /// Move-assigns; the permit overwritten is dropped unmarked (records nothing). Same
    /// thread-safety as the move constructor.
    Permit& operator=(Permit&& other) noexcept;
    /// Not copyable: an outcome is recorded once.
    Permit(const Permit&) = delete;
    Permit& operator=(const Permit&) = delete;
    /// Records nothing (see the class comment); unlike the original's context manager, a
    /// destructor cannot tell success from failure, so it does not guess.
    ~Permit() = default;

    /**
     * Records a success (AimdController::record_success) unless already marked.
     * @return true if this call recorded the outcome. Thread-safe.
     */
    bool mark_success();
    /**
     * Records a failure with this permit's issue epoch (AimdController::record_failure(
     * epoch())) unless already marked; a permit issued before the latest decrease does not
     * decrease again. @return true if this call recorded the outcome. Thread-safe.
     */
    bool mark_failure();
    /// @return true once an outcome has been marked (or the permit was moved from).
    /// Thread-safe.
    bool marked() const noexcept;
    /// @return the controller's epoch (decrease count) when this permit was issued.
    /// Thread-safe (immutable).
    std::uint64_t epoch() const noexcept { return epoch_; }
    /// @return the controller's rate (permits/s) when this permit was issued; it set the
    /// spacing to the next slot. Thread-safe (immutable).
    double rate_at_issue() const noexcept { return rate_at_issue_; }
    /// @return the clock reading (µs since the Unix epoch) at which this permit was issued.
    /// Thread-safe (immutable).
    Micros issued_at() const noexcept { return issued_at_; }

   private:
    friend class AimdController;
    Permit(AimdController* owner, std::uint64_t epoch, double rate, Micros issued_at) noexcept;

    AimdController* owner_;
    std::uint64_t epoch_;
    double rate_at_issue_;
    Micros issued_at_;
    std::atomic<bool> marked_;
  };

  /// Longest spacing between permits (100 years), reached only with a tiny min_rate; keeps
  /// every slot and wait deadline far from integer overflow.
  static constexpr Micros kMaxInterval = 100 * 365 * kMicrosPerDay;

  /**
   * @param clock time source for pacing and waits; must outlive the controller.
   * @param options see AimdOptions.
   * @throws ValidationError naming the first invalid option.
   */
  AimdController(const Clock& clock, AimdOptions options);
  /// Neither copyable nor movable: permits and waiters refer to it.
  AimdController(const AimdController&) = delete;
  AimdController& operator=(const AimdController&) = delete;
  /// Must not run while a thread is inside acquire or a permit is being marked.
  ~AimdController() = default;

  /**
   * Blocks until this caller's slot (FIFO behind earlier waiters) and issues a permit.
   * @return the permit. Thread-safe.
   */
  [[nodiscard]] Permit acquire();
  /**
   * Like acquire(), but gives up when `stop` is requested (promptly: the request wakes the
   * waiter). A waiter that gives up leaves the queue without consuming a slot.
   * @return the permit, or nullopt if stopped first. Thread-safe.
   */
  [[nodiscard]] std::optional<Permit> acquire(std::stop_token stop);
  /**
   * Like acquire(), but only for a slot at or before `deadline` (clock µs), and stoppable.
   * A deadline more than kMaxInterval away waits like acquire(stop).
   * Returns nullopt as soon as it is known no slot comes in time (at once if the next slot
   * is already later than the deadline), or at the deadline, or on stop.
   * @return the permit, or nullopt on timeout or stop. Thread-safe.
   */
  [[nodiscard]] std::optional<Permit> acquire_until(Micros deadline, std::stop_token stop = {});
  /**
   * Issues a permit only if the slot is open now and nobody is waiting. Never blocks.
   * @return the permit, or nullopt. Thread-safe.
   */
  [[nodiscard]] std::optional<Permit> try_acquire();

  /**
   * Acquires a permit (blocking), calls `f()`, marks success if it returns and failure if it
   * throws, then returns its result or rethrows. Like the original's `async with acquire()`.
   * @return whatever `f()` returns. Thread-safe.
   */
  template <class F>
  std::invoke_result_t<F&&> run(F&& f);

  /// Records a success (AimdLaw::record_success). Thread-safe.
  void record_success() { law_.record_success(); }
  /// Records a failure observed now: always decreases (AimdLaw::record_failure()).
  /// @return true. Thread-safe.
  bool record_failure() { return law_.record_failure(); }
  /**
   * Records a failure of a request issued in epoch `issued_epoch` (Permit::epoch()); ignored
   * if a decrease happened since (AimdLaw::record_failure(issued_epoch)).
   * @return true if the rate was decreased. Thread-safe.
   */
  bool record_failure(std::uint64_t issued_epoch) { return law_.record_failure(issued_epoch); }

  /// @return the current rate in permits per second. Thread-safe.
  double current_rate() const { return law_.current_rate(); }
  /// @return the configured hard cap (max_rate). Thread-safe.
  double max_rate() const noexcept { return law_.max_rate(); }
  /// @return the configured floor (min_rate). Thread-safe.
  double min_rate() const noexcept { return law_.min_rate(); }
  /// @return the current slow-start threshold. Thread-safe.
  double slow_start_threshold() const { return law_.slow_start_threshold(); }
  /// @return true while the rate still grows by doubling. Thread-safe.
  bool in_slow_start() const { return law_.in_slow_start(); }
  /// @return true after a decrease until the pre-decrease rate is regained. Thread-safe.
  bool in_fast_recovery() const { return law_.in_fast_recovery(); }
  /// @return the number of decreases so far (the epoch new permits carry). Thread-safe.
  std::uint64_t epoch() const { return law_.epoch(); }
  /// @return the control state read at one instant (AimdLaw::state()). Thread-safe.
  AimdState state() const { return law_.state(); }
  /// @return the spacing in µs a permit issued now would impose:
  /// clamp(round(1e6 / rate), 1, kMaxInterval). Thread-safe.
  Micros interval() const;
  /// @return how many threads are blocked in acquire/acquire_until now. Thread-safe.
  std::size_t waiters() const;

 private:
  std::optional<Permit> acquire_impl(Micros deadline, const std::stop_token* stop);
  Permit issue_locked(Micros now);
  void abandon_locked(std::uint64_t ticket);
  void advance_queue_locked();

  const Clock& clock_;
  AimdLaw law_;  // the rate and epoch (its own mutex, taken after mu_ when both are)

  mutable std::mutex mu_;
  std::condition_variable cv_;
  // Pacing and FIFO queue, guarded by mu_. Tickets in [serving_, next_ticket_) belong to
  // waiters; serving_ is always a live waiter's ticket or next_ticket_ (queue empty).
  Micros next_ready_;
  std::uint64_t next_ticket_ = 0;
  std::uint64_t serving_ = 0;
  std::set<std::uint64_t> abandoned_;  // tickets of waiters that gave up behind the head
  std::size_t waiters_ = 0;
};

template <class F>
std::invoke_result_t<F&&> AimdController::run(F&& f) {
  using R = std::invoke_result_t<F&&>;
  Permit permit = acquire();
  try {
    if constexpr (std::is_void_v<R>) {
      std::invoke(std::forward<F>(f));
      permit.mark_success();
    } else {
      R result = std::invoke(std::forward<F>(f));
      permit.mark_success();
      return std::forward<R>(result);
    }
  } catch (...) {
    permit.mark_failure();
    throw;
  }
}

}  // namespace admit
