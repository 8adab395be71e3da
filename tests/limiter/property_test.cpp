// Randomized properties of the rate math through the Limiter, with exact integer checks.
// Seeds are fixed (override with ADMIT_TEST_SEED) and printed through SCOPED_TRACE.
#include <gtest/gtest.h>

#include <chrono>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "admit/core/clock.hpp"
#include "admit/core/rate.hpp"
#include "admit/limiter.hpp"
#include "admit/store/memory_store.hpp"
#include "support/test_support.hpp"

namespace admit {
namespace {

using test::kStart;
using Int128 = rate::Int128;

std::int64_t uniform(std::mt19937_64& rng, std::int64_t lo, std::int64_t hi) {
  return std::uniform_int_distribution<std::int64_t>(lo, hi)(rng);
}

/// A random rate limit named `name`; many have a non-integer emission interval.
Limit random_rate_limit(std::mt19937_64& rng, const std::string& name) {
  switch (uniform(rng, 0, 5)) {
    case 0:
      return Limit::per_second(name, uniform(rng, 1, 50), uniform(rng, 0, 20));
    case 1:
      return Limit::per_minute(name, uniform(rng, 1, 1000), uniform(rng, 0, 60));
    case 2:  // 7 per 60 s: T = 8571428 + 4/7 µs
      return Limit::custom(name, uniform(rng, 1, 30), 7, std::chrono::seconds(60));
    case 3:  // odd period, odd amount
      return Limit::custom(name, uniform(rng, 1, 40), uniform(rng, 1, 97),
                           std::chrono::microseconds(uniform(rng, 1, 10'000'019)));
    case 4:  // T below 1 µs: many units per µs
      return Limit::custom(name, uniform(rng, 1, 5000), 1'000'003, std::chrono::seconds(1));
    default:  // coprime amount and period: the largest remainders
      return Limit::custom(name, uniform(rng, 1, 25), 999'983,
                           std::chrono::microseconds(7'919'993));
  }
}

/// A random clock step: zero, a few µs, or up to 10^k µs for a random k.
Micros random_step(std::mt19937_64& rng) {
  switch (uniform(rng, 0, 3)) {
    case 0:
      return 0;
    case 1:
      return uniform(rng, 1, 3);
    default: {
      const int k = static_cast<int>(uniform(rng, 1, 9));
      Micros hi = 1;
      for (int i = 0; i < k; ++i) hi *= 10;
      return uniform(rng, 1, hi);
    }
  }
}

std::string seed_trace(std::uint64_t seed) {
  return test::cat("seed ", seed, " (rerun with ADMIT_TEST_SEED=", seed, ")");
}

// Verifies over random limits (odd emission intervals, random bursts, parents), amounts and
// clock steps that every rate_exceeded denial's retry_after is exact: with nothing else
// happening, the same request is still denied at now + retry_after - 1 and allowed at
// now + retry_after (checked with the dry-run decide(), then the sequence continues); also
// that decide() agrees with try_acquire and exceeds_capacity is reported for amount > burst.
TEST(LimiterProperty, RetryAfterIsExact) {
  const std::uint64_t seed = test::test_seed(0x5eed'a11c'e000'0001ULL);
  SCOPED_TRACE(seed_trace(seed));
  std::mt19937_64 rng(seed);
  int denials = 0;
  int multi_limit_denials = 0;
  for (int trial = 0; trial < 150; ++trial) {
    SCOPED_TRACE(test::cat("trial ", trial));
    ManualClock clock(kStart + uniform(rng, 0, kMicrosPerDay));
    MemoryStore store;
    Limiter limiter(store, clock);
    // 1-3 limits on the entity; sometimes a parent with 1-2 limits of the same names.
    std::vector<Limit> limits;
    const int n = static_cast<int>(uniform(rng, 1, 3));
    for (int i = 0; i < n; ++i) limits.push_back(random_rate_limit(rng, test::cat("l", i)));
    limiter.set_limits("res", limits);
    std::vector<Limit> all = limits;
    if (uniform(rng, 0, 2) == 0) {
      std::vector<Limit> parent;
      for (int i = 0; i < n; i += 2) {
        parent.push_back(random_rate_limit(rng, test::cat("l", i)));
        all.push_back(parent.back());
      }
      limiter.set_entity_limits("parent", "res", parent);
      limiter.set_parent("child", "parent");
    }
    auto random_amounts = [&] {
      Amounts a;
      for (const Limit& l : limits) {
        if (uniform(rng, 0, 3) == 0) continue;  // not named: consumes 0
        std::int64_t cap = l.capacity();
        for (const Limit& o : all) {
          if (o.name() == l.name()) cap = std::min(cap, o.capacity());
        }
        // Mostly fitting amounts, sometimes beyond the smallest capacity.
        a.add(l.name(), uniform(rng, 0, 40) == 0 ? cap + 1 : uniform(rng, 1, cap));
      }
      return a;
    };

    for (int step = 0; step < 200; ++step) {
      clock.advance(random_step(rng));
      const Amounts req = random_amounts();
      if (uniform(rng, 0, 30) == 0) {  // usage after the fact: debt
        (void)limiter.record_usage("child", "res", req);
        continue;
      }
      const Decision dry = limiter.decide("child", "res", req);
      Lease lease = limiter.try_acquire("child", "res", req);
      const Decision& d = lease.decision();
      ASSERT_EQ(dry.allowed, d.allowed);
      ASSERT_EQ(dry.code, d.code);
      ASSERT_EQ(dry.retry_after, d.retry_after);
      if (d.allowed) {
        if (uniform(rng, 0, 9) == 0) {
          lease.rollback();
        } else {
          lease.commit();
        }
        continue;
      }
      if (d.code == Code::exceeds_capacity) {
        EXPECT_EQ(d.retry_after, 0);
        bool beyond = false;
        for (const auto& a : req) {
          for (const Limit& l : all)
            beyond = beyond || (l.name() == a.name && a.value > l.capacity());
        }
        EXPECT_TRUE(beyond);
        continue;
      }
      ASSERT_EQ(d.code, Code::rate_exceeded) << d.reason;
      ASSERT_GT(d.retry_after, 0);
      ++denials;
      if (d.violations.size() > 1) ++multi_limit_denials;
      Micros max_violation = 0;
      for (const auto& v : d.violations) max_violation = std::max(max_violation, v.retry_after);
      ASSERT_EQ(d.retry_after, max_violation);

      const Micros retry = d.retry_after;
      clock.advance(retry - 1);
      const Decision early = limiter.decide("child", "res", req);
      ASSERT_FALSE(early.allowed) << "retry_after " << retry << " is 1 µs too long; " << d.reason;
      ASSERT_EQ(early.retry_after, 1);
      clock.advance(1);
      const Decision on_time = limiter.decide("child", "res", req);
      ASSERT_TRUE(on_time.allowed)
          << "retry_after " << retry << " is too short; " << on_time.reason;
    }
  }
  // The random walk must actually exercise denials.
  EXPECT_GT(denials, 2000);
  EXPECT_GT(multi_limit_denials, 100);
}

struct Event {
  Micros t;
  std::int64_t n;
};

/// admitted in every window [events[i].t, events[j].t] <= burst + refill * (t_j - t_i) / period,
/// compared exactly: admitted * period <= burst * period + refill * (t_j - t_i).
::testing::AssertionResult never_exceeds_bound(const std::vector<Event>& events, const Limit& l) {
  const Int128 period = l.refill_period();
  const Int128 refill = l.refill_amount();
  const Int128 burst = l.capacity();
  for (std::size_t i = 0; i < events.size(); ++i) {
    Int128 admitted = 0;
    for (std::size_t j = i; j < events.size(); ++j) {
      admitted += events[j].n;
      const Int128 span = events[j].t - events[i].t;
      if (admitted * period > burst * period + refill * span) {
        return ::testing::AssertionFailure()
               << l.describe() << ": admitted " << static_cast<std::int64_t>(admitted) << " in ["
               << events[i].t << ", " << events[j].t << "] (" << static_cast<std::int64_t>(span)
               << " µs), bound is burst + refill * span / period";
      }
    }
  }
  return ::testing::AssertionSuccess();
}

// Verifies safety over long random traffic on one rate limit: in every window between two
// admitted events, the admitted amount is at most burst + rate * (t1 - t0), exactly.
TEST(LimiterProperty, AdmittedNeverExceedsBurstPlusRate) {
  const std::uint64_t seed = test::test_seed(0x5eed'a11c'e000'0002ULL);
  SCOPED_TRACE(seed_trace(seed));
  std::mt19937_64 rng(seed);
  for (int trial = 0; trial < 40; ++trial) {
    SCOPED_TRACE(test::cat("trial ", trial));
    ManualClock clock(kStart);
    MemoryStore store;
    Limiter limiter(store, clock);
    const Limit l = random_rate_limit(rng, "q");
    limiter.set_limits("res", {l});
    std::vector<Event> events;
    // Bursty traffic: clusters of attempts with steps around the emission interval.
    const Micros t_unit = std::max<Micros>(1, l.refill_period() / l.refill_amount());
    for (int step = 0; step < 3000; ++step) {
      const int mode = static_cast<int>(uniform(rng, 0, 9));
      Micros dt = 0;
      if (mode < 5) {
        dt = uniform(rng, 0, t_unit);
      } else if (mode < 9) {
        dt = uniform(rng, 0, 3);
      } else {
        dt = uniform(rng, 0, t_unit * l.capacity());
      }
      clock.advance(dt);
      const std::int64_t n = uniform(rng, 1, l.capacity());
      Lease lease = limiter.try_acquire("e", "res", {{"q", n}});
      if (lease) {
        events.push_back({clock.now(), n});
        lease.commit();
      }
    }
    ASSERT_GT(events.size(), 100u);
    ASSERT_TRUE(never_exceeds_bound(events, l));
  }
}

// Verifies liveness: with demand always above the limit for 10 simulated minutes (a client
// that retries no later than retry_after), the admitted total reaches at least 99% of
// burst + rate * t, and never more than 100% (exact integer comparison).
TEST(LimiterProperty, SaturatingDemandGetsCloseToTheBound) {
  const std::uint64_t seed = test::test_seed(0x5eed'a11c'e000'0003ULL);
  SCOPED_TRACE(seed_trace(seed));
  std::mt19937_64 rng(seed);
  const Micros duration = 10 * kMicrosPerMinute;
  for (int trial = 0; trial < 12; ++trial) {
    SCOPED_TRACE(test::cat("trial ", trial));
    ManualClock clock(kStart);
    MemoryStore store;
    Limiter limiter(store, clock);
    // Rates from 1 to 100 per second so the simulation stays small.
    const std::int64_t rate = uniform(rng, 1, 100);
    const Limit l = (trial % 2 == 0) ? Limit::per_second("q", rate, uniform(rng, 0, 50))
                                     : Limit::custom("q", uniform(rng, 1, 50), rate * 7,
                                                     std::chrono::microseconds(7'000'001));
    limiter.set_limits("res", {l});
    SCOPED_TRACE(l.describe());
    const std::int64_t max_n = std::min<std::int64_t>(l.capacity(), 5);
    std::int64_t admitted = 0;
    for (;;) {
      Micros retry = 0;
      for (;;) {  // always-on demand: take until denied
        const std::int64_t n = uniform(rng, 1, max_n);
        Lease lease = limiter.try_acquire("e", "res", {{"q", n}});
        if (!lease) {
          ASSERT_EQ(lease.decision().code, Code::rate_exceeded);
          retry = lease.decision().retry_after;
          break;
        }
        admitted += n;
        lease.commit();
      }
      if (clock.now() - kStart >= duration) break;
      clock.advance(uniform(rng, 1, retry));
    }
    const Int128 t = clock.now() - kStart;
    const Int128 bound_x_period =
        Int128{l.capacity()} * l.refill_period() + Int128{l.refill_amount()} * t;
    const Int128 got_x_period = Int128{admitted} * l.refill_period();
    EXPECT_LE(got_x_period, bound_x_period) << "admitted " << admitted;
    EXPECT_GE(got_x_period * 100, bound_x_period * 99)
        << "admitted " << admitted << " of a bound of "
        << static_cast<double>(bound_x_period) / static_cast<double>(l.refill_period());
  }
}

}  // namespace
}  // namespace admit
