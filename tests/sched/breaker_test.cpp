// CircuitBreaker: every transition (closed -> open -> half-open -> closed / open again), the
// sliding window, probes.
#include "admit/sched/breaker.hpp"

#include <gtest/gtest.h>

#include "admit/core/error.hpp"

namespace admit::sched {
namespace {

constexpr Micros kSec = kMicrosPerSecond;
constexpr Micros kT0 = 1'700'000'000'000'000;

TEST(CircuitBreaker, DefaultsAreTwentyFailuresInThirtySeconds) {
  const CircuitBreaker b;
  EXPECT_EQ(b.options().threshold, 20);
  EXPECT_EQ(b.options().window, 30 * kSec);
}

TEST(CircuitBreaker, ClosedToOpenAtTheThresholdWithinTheWindow) {
  CircuitBreaker b({.threshold = 3, .window = 10 * kSec, .open_for = 5 * kSec});
  EXPECT_EQ(b.state(kT0), BreakerState::closed);
  EXPECT_FALSE(b.on_failure(kT0));
  EXPECT_FALSE(b.on_failure(kT0 + 1 * kSec));
  EXPECT_TRUE(b.try_pass(kT0 + 2 * kSec));
  EXPECT_TRUE(b.on_failure(kT0 + 2 * kSec));  // third within 10 s: opens
  EXPECT_EQ(b.state(kT0 + 2 * kSec), BreakerState::open);
  EXPECT_FALSE(b.try_pass(kT0 + 3 * kSec));
  EXPECT_EQ(b.open_until(), kT0 + 7 * kSec);
  EXPECT_EQ(b.trips(), 1U);
}

TEST(CircuitBreaker, OldFailuresLeaveTheWindow) {
  CircuitBreaker b({.threshold = 3, .window = 10 * kSec, .open_for = 5 * kSec});
  EXPECT_FALSE(b.on_failure(kT0));
  EXPECT_FALSE(b.on_failure(kT0 + 5 * kSec));
  // The first failure is 10 s old: it no longer counts.
  EXPECT_FALSE(b.on_failure(kT0 + 10 * kSec));
  EXPECT_EQ(b.failures(kT0 + 10 * kSec), 2);
  EXPECT_EQ(b.state(kT0 + 10 * kSec), BreakerState::closed);
  b.on_success(kT0 + 11 * kSec);  // successes do not wipe the window
  EXPECT_TRUE(b.on_failure(kT0 + 12 * kSec));
}

TEST(CircuitBreaker, OpenToHalfOpenToClosedOnAProbeSuccess) {
  CircuitBreaker b({.threshold = 1, .window = 10 * kSec, .open_for = 5 * kSec});
  EXPECT_TRUE(b.on_failure(kT0));
  EXPECT_EQ(b.state(kT0 + 5 * kSec - 1), BreakerState::open);
  EXPECT_FALSE(b.try_pass(kT0 + 5 * kSec - 1));
  EXPECT_EQ(b.state(kT0 + 5 * kSec), BreakerState::half_open);
  EXPECT_TRUE(b.try_pass(kT0 + 5 * kSec));   // the probe
  EXPECT_FALSE(b.try_pass(kT0 + 5 * kSec));  // one probe at a time
  b.on_success(kT0 + 6 * kSec);
  EXPECT_EQ(b.state(kT0 + 6 * kSec), BreakerState::closed);
  EXPECT_TRUE(b.try_pass(kT0 + 6 * kSec));
  EXPECT_EQ(b.open_until(), 0);
}

TEST(CircuitBreaker, HalfOpenToOpenOnAProbeFailure) {
  CircuitBreaker b({.threshold = 1, .window = 10 * kSec, .open_for = 5 * kSec});
  EXPECT_TRUE(b.on_failure(kT0));
  EXPECT_TRUE(b.try_pass(kT0 + 5 * kSec));
  EXPECT_TRUE(b.on_failure(kT0 + 6 * kSec));  // the probe failed: open for another 5 s
  EXPECT_EQ(b.state(kT0 + 6 * kSec), BreakerState::open);
  EXPECT_EQ(b.open_until(), kT0 + 11 * kSec);
  EXPECT_EQ(b.trips(), 2U);
}

TEST(CircuitBreaker, AReleasedProbeLetsAnotherOneThrough) {
  CircuitBreaker b({.threshold = 1, .window = 10 * kSec, .open_for = 5 * kSec});
  EXPECT_TRUE(b.on_failure(kT0));
  EXPECT_TRUE(b.try_pass(kT0 + 5 * kSec));
  EXPECT_FALSE(b.try_pass(kT0 + 5 * kSec));
  b.release(kT0 + 5 * kSec);  // it never went out
  EXPECT_TRUE(b.try_pass(kT0 + 5 * kSec));
}

TEST(CircuitBreaker, AFailureWhileOpenChangesNothing) {
  CircuitBreaker b({.threshold = 1, .window = 10 * kSec, .open_for = 5 * kSec});
  EXPECT_TRUE(b.on_failure(kT0));
  EXPECT_FALSE(b.on_failure(kT0 + 1 * kSec));  // sent before it opened
  EXPECT_EQ(b.open_until(), kT0 + 5 * kSec);
}

TEST(CircuitBreaker, RejectsBadOptions) {
  EXPECT_THROW(CircuitBreaker({.threshold = 0}), ValidationError);
  EXPECT_THROW(CircuitBreaker({.threshold = 1, .window = 0}), ValidationError);
  EXPECT_THROW(CircuitBreaker({.threshold = 1, .window = 1, .open_for = 0}), ValidationError);
  EXPECT_THROW(CircuitBreaker({.threshold = 1, .window = 1, .open_for = 1, .probes = 0}),
               ValidationError);
}

}  // namespace
}  // namespace admit::sched
