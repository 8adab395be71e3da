// The AIMD control law: AimdOptions (its settings), AimdState (a snapshot) and AimdLaw (the
// rate it learns from successes and failures, decreasing at most once per congestion event).
// No clock and no pacing: the adaptive limit kind (Limit::adaptive) hands the rate to a GCRA,
// one AimdLaw per key, and AimdController (admit/adapt/aimd.hpp) spaces permits by it.
#pragma once

#include <cstdint>
#include <mutex>
#include <optional>

namespace admit {

/**
 * Settings of an AIMD control law (AimdLaw, AimdController, Limit::adaptive). Rates are
 * permits (units) per second. Every value must be finite; the constructors throw
 * ValidationError (field = the option's name, value = the value as text) for anything out of
 * range.
 */
struct AimdOptions {
  /// Hard upper bound on the rate. Required, > 0.
  double max_rate = 0.0;
  /// Starting rate, > 0. Clamped to [min_rate, max_rate] (the rate never leaves that range).
  double initial_rate = 1.0;
  /// Switch-over from slow start (doubling) to congestion avoidance (additive). In
  /// (0, max_rate]; default max_rate / 2. Starting at or above it skips slow start.
  std::optional<double> slow_start_threshold = std::nullopt;
  /// Added to the rate per success in congestion avoidance. > 0.
  double additive_increase = 1.0;
  /// Factor applied to the rate on a failure. In (0, 1).
  double multiplicative_decrease = 0.5;
  /// Floor of the rate, so pacing never stalls. > 0 and <= max_rate.
  double min_rate = 0.1;
};

/// Checks every option (see AimdOptions). @throws ValidationError naming the first bad one.
void validate(const AimdOptions& options);

/// A consistent snapshot of an AIMD control state (AimdLaw::state()).
struct AimdState {
  double rate = 0.0;                  ///< current rate, permits per second
  double slow_start_threshold = 0.0;  ///< current slow-start threshold
  bool in_slow_start = false;         ///< growing by doubling
  bool in_fast_recovery = false;      ///< after a decrease, until recovery_target is regained
  double recovery_target = 0.0;       ///< rate before the last decrease (0 if not recovering)
  std::uint64_t epoch = 0;            ///< number of decreases so far
};

/**
 * The AIMD control law (TCP-style slow start, congestion avoidance, fast recovery), after the
 * Python `aimd-limiter` (AIMDAsyncLimiter), made thread-safe. It holds a rate and changes it
 * on the outcomes reported to it; what the rate paces is up to the caller.
 *
 *  - slow start: each success doubles the rate, capped at the threshold; reaching the
 *    threshold switches to congestion avoidance;
 *  - congestion avoidance: each success adds additive_increase, capped at max_rate;
 *  - failure (a congestion event): rate = max(rate * multiplicative_decrease, min_rate),
 *    threshold = the reduced rate, slow start ends for good, fast recovery starts with
 *    target = the rate before the failure; it ends when a success brings the rate back to
 *    that target.
 *
 * Once per congestion event (the fix over the original): the original halves on *every*
 * failure, so N requests in flight that all get a 429 from the same overload cut the rate
 * by 0.5^N, usually straight to min_rate. Here each decrease bumps an epoch counter, the
 * caller remembers the epoch each request was sent in (state().epoch, or
 * AimdController::Permit::epoch()), and a failure reported for a request sent before the
 * latest decrease is ignored: it was sent at the old, already-punished rate. So one burst of
 * concurrent failures costs one decrease, as in TCP (one cwnd reduction per window) and
 * Netflix concurrency-limits. A failure of a request sent after the decrease is new evidence
 * and decreases again. Successes always count.
 *
 * Thread-safe: every member may be called concurrently (one internal mutex).
 */
class AimdLaw {
 public:
  /**
   * @param options see AimdOptions.
   * @throws ValidationError naming the first invalid option.
   */
  explicit AimdLaw(const AimdOptions& options);
  /// Neither copyable nor movable (it owns a mutex; callers share it by pointer).
  AimdLaw(const AimdLaw&) = delete;
  AimdLaw& operator=(const AimdLaw&) = delete;
  ~AimdLaw() = default;

  /// Records a success: doubles the rate in slow start, else adds additive_increase (see the
  /// class comment). Thread-safe.
  void record_success();
  /**
   * Records a failure observed now: always decreases (it is treated as a request of the
   * current epoch). Use the epoch overload when you know when the request was sent.
   * @return true (the rate was decreased and the epoch bumped). Thread-safe.
   */
  bool record_failure();
  /**
   * Records a failure of a request sent in epoch `issued_epoch`. If a decrease happened since
   * (issued_epoch < epoch()), the failure belongs to a congestion event already acted on and
   * changes nothing; otherwise it decreases and bumps the epoch.
   * @return true if the rate was decreased. Thread-safe.
   */
  bool record_failure(std::uint64_t issued_epoch);

  /// @return the current rate in permits per second. Thread-safe.
  double current_rate() const;
  /// @return the configured hard cap (max_rate). Thread-safe.
  double max_rate() const noexcept { return max_rate_; }
  /// @return the configured floor (min_rate). Thread-safe.
  double min_rate() const noexcept { return min_rate_; }
  /// @return the current slow-start threshold. Thread-safe.
  double slow_start_threshold() const;
  /// @return true while the rate still grows by doubling. Thread-safe.
  bool in_slow_start() const;
  /// @return true after a decrease until the pre-decrease rate is regained. Thread-safe.
  bool in_fast_recovery() const;
  /// @return the number of decreases so far. Thread-safe.
  std::uint64_t epoch() const;
  /// @return all of the above read at one instant (e.g. the rate to send at and the epoch
  /// to report its failure with). Thread-safe.
  AimdState state() const;

  /**
   * Takes over the rate that other holders of the same limit reached (processes sharing one
   * adaptive limit through a store; see LimiterOptions::adaptation). `decreased`: they
   * decreased since this law last took their rate over (a congestion event seen elsewhere):
   * the rate becomes `rate`, slow start ends for good, fast recovery starts if that is a
   * decrease here, and the epoch is bumped, so failures of requests sent before count for
   * that event and decrease nothing more. Otherwise the rate only rises to `rate` (never
   * falls), leaving slow start or fast recovery if that reaches their end. Clamped to
   * [min_rate, max_rate]. Applies only if no decrease happened here since the caller read
   * `expected_epoch` (epoch() == expected_epoch) and `rate` is finite.
   * @return the state afterwards if it applied, else nullopt. Thread-safe.
   */
  std::optional<AimdState> adopt(double rate, bool decreased, std::uint64_t expected_epoch);

 private:
  bool record_failure_locked(std::uint64_t issued_epoch);

  const double max_rate_;
  const double min_rate_;
  const double additive_increase_;
  const double multiplicative_decrease_;

  mutable std::mutex mu_;
  // Guarded by mu_.
  double rate_;
  double threshold_;
  bool slow_start_;
  bool fast_recovery_ = false;
  double recovery_target_ = 0.0;
  std::uint64_t epoch_ = 0;
};

}  // namespace admit
