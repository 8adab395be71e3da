// Backoff: exponential growth, the cap, jitter bounds, retry-after honoured, determinism.
#include "admit/sched/backoff.hpp"

#include <gtest/gtest.h>

#include <cstdint>
#include <vector>

#include "admit/core/error.hpp"
#include "support/seed.hpp"

namespace admit::sched {
namespace {

constexpr Micros kMs = 1000;

TEST(Backoff, NominalGrowsExponentiallyUpToTheCap) {
  Backoff b({.base = 100 * kMs, .max = 1000 * kMs, .multiplier = 2.0, .jitter = 0});
  EXPECT_EQ(b.nominal(1), 100 * kMs);
  EXPECT_EQ(b.nominal(2), 200 * kMs);
  EXPECT_EQ(b.nominal(4), 800 * kMs);
  EXPECT_EQ(b.nominal(5), 1000 * kMs);
  EXPECT_EQ(b.nominal(500), 1000 * kMs);  // no overflow for absurd retry counts
  EXPECT_EQ(b.delay(3), 400 * kMs);       // jitter 0: the nominal delay exactly
}

TEST(Backoff, JitterStaysWithinItsShareOfTheNominalDelay) {
  const std::uint64_t seed = test::test_seed();
  SCOPED_TRACE(test::seed_note(seed));
  Backoff b({.base = 100 * kMs, .max = 10'000 * kMs, .multiplier = 2.0, .jitter = 0.5}, seed);
  bool spread = false;
  Micros first = -1;
  for (int i = 0; i < 1000; ++i) {
    const Micros d = b.delay(3);  // nominal 400 ms
    ASSERT_GE(d, 200 * kMs);
    ASSERT_LE(d, 400 * kMs);
    if (first < 0) first = d;
    spread = spread || d != first;
  }
  EXPECT_TRUE(spread) << "jitter must vary the delay";
}

TEST(Backoff, HonoursRetryAfterEvenAboveTheCap) {
  const std::uint64_t seed = test::test_seed();
  SCOPED_TRACE(test::seed_note(seed));
  Backoff b({.base = 100 * kMs, .max = 1000 * kMs, .multiplier = 2.0, .jitter = 0.5}, seed);
  for (int i = 0; i < 200; ++i) {
    const Micros d = b.delay(1, 5000 * kMs);
    ASSERT_GE(d, 5000 * kMs);             // never earlier than asked
    ASSERT_LE(d, 5000 * kMs + 50 * kMs);  // spread: at most base * jitter
  }
  EXPECT_GE(b.delay(4, 0), 0);
}

TEST(Backoff, SameSeedSameDelays) {
  const std::uint64_t seed = test::test_seed();
  SCOPED_TRACE(test::seed_note(seed));
  Backoff a({}, seed);
  Backoff b({}, seed);
  Backoff c({}, seed + 1);
  std::vector<Micros> da, db, dc;
  for (int i = 1; i <= 20; ++i) {
    da.push_back(a.delay(i % 6 + 1));
    db.push_back(b.delay(i % 6 + 1));
    dc.push_back(c.delay(i % 6 + 1));
  }
  EXPECT_EQ(da, db);
  EXPECT_NE(da, dc);
}

TEST(Backoff, RejectsBadOptions) {
  EXPECT_THROW(Backoff({.base = 0}), ValidationError);
  EXPECT_THROW(Backoff({.base = 10, .max = 5}), ValidationError);
  EXPECT_THROW(Backoff({.base = 10, .max = 50, .multiplier = 0.5}), ValidationError);
  EXPECT_THROW(Backoff({.base = 10, .max = 50, .multiplier = 2, .jitter = 1.5}), ValidationError);
}

}  // namespace
}  // namespace admit::sched
