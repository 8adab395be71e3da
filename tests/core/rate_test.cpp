#include "admit/core/rate.hpp"

#include <gtest/gtest.h>

#include <random>

#include "admit/core/error.hpp"
#include "admit/core/limit.hpp"
#include "support/seed.hpp"

namespace admit {
namespace {

constexpr Micros kT0 = 1'700'000'000'000'000;

// Verifies a fresh bucket admits exactly its burst at once, then refills at the rate.
TEST(Rate, BurstThenRefill) {
  const Limit l = Limit::per_second("rps", 10, 20);  // T = 100'000 µs, burst 20
  const auto& p = l.rate();
  rate::Tat tat{};
  for (int i = 0; i < 20; ++i) {
    ASSERT_TRUE(rate::check(p, tat, 1, kT0).ok) << i;
    tat = rate::consume(p, tat, 1, kT0);
  }
  const auto c = rate::check(p, tat, 1, kT0);
  EXPECT_FALSE(c.ok);
  EXPECT_FALSE(c.never);
  EXPECT_EQ(c.retry_after, 100'000);
  EXPECT_EQ(rate::available(p, tat, kT0), 0);
  EXPECT_EQ(rate::available(p, tat, kT0 + 250'000), 2);
  EXPECT_EQ(rate::reset_after(tat, kT0), 2'000'000);
}

// Verifies a request larger than the burst is "never", not a long wait.
TEST(Rate, NeverFits) {
  const Limit l = Limit::per_minute("tpm", 1000);
  const auto c = rate::check(l.rate(), rate::Tat{}, 1001, kT0);
  EXPECT_FALSE(c.ok);
  EXPECT_TRUE(c.never);
  EXPECT_EQ(c.retry_after, 0);
  EXPECT_TRUE(rate::check(l.rate(), rate::Tat{}, 1000, kT0).ok);
}

// Verifies a non-integer emission interval (7 per minute) is kept exactly: 7 admitted per
// 60 s over a long run, never 8.
TEST(Rate, NonIntegerIntervalIsExact) {
  const Limit l = Limit::per_minute("rpm", 7, 1);
  const auto& p = l.rate();
  EXPECT_EQ(p.r, 7);
  EXPECT_EQ(p.a * p.r + p.b, 60'000'000);
  rate::Tat tat{};
  std::int64_t admitted = 0;
  for (Micros t = kT0; t < kT0 + 70 * kMicrosPerMinute; t += 1000) {
    if (rate::check(p, tat, 1, t).ok) {
      tat = rate::consume(p, tat, 1, t);
      ++admitted;
    }
  }
  // burst 1 + 7 per minute for 70 minutes, minus the sub-ms polling granularity.
  EXPECT_EQ(admitted, 1 + 7 * 70 - 1);
}

// Verifies debt: consuming past the burst pushes the next admission out by the debt.
TEST(Rate, DebtDelaysLaterCallers) {
  const Limit l = Limit::per_second("tps", 100);  // T = 10'000 µs
  const auto& p = l.rate();
  rate::Tat tat = rate::consume(p, {}, 300, kT0);  // 200 in debt
  EXPECT_EQ(rate::available(p, tat, kT0), 0);
  const auto c = rate::check(p, tat, 1, kT0);
  EXPECT_EQ(c.retry_after, 201 * 10'000);
}

// Verifies a refund never fills the bucket past its capacity.
TEST(Rate, RefundIsCapped) {
  const Limit l = Limit::per_second("rps", 10);
  const auto& p = l.rate();
  rate::Tat tat = rate::consume(p, {}, 5, kT0);
  tat = rate::refund(p, tat, 50, kT0);
  EXPECT_EQ(rate::available(p, tat, kT0), 10);
  EXPECT_EQ(rate::reset_after(tat, kT0), 0);
}

// Verifies time going backwards neither refills nor underflows (folly's ReverseTime).
TEST(Rate, BackwardsTimeIsHarmless) {
  const Limit l = Limit::per_second("rps", 10, 10);
  const auto& p = l.rate();
  rate::Tat tat{};
  for (int i = 0; i < 10; ++i) tat = rate::consume(p, tat, 1, kT0 + 5'000'000);
  EXPECT_FALSE(rate::check(p, tat, 1, kT0).ok);
  EXPECT_EQ(rate::available(p, tat, kT0), 0);
  EXPECT_FALSE(rate::check(p, tat, 1, kT0 + 5'000'000).ok);
}

// Verifies limits whose exact products would pass 2^53 are refused at construction, naming
// the field, and that a huge but exact limit works.
TEST(Rate, ExactnessBoundIsValidated) {
  try {
    (void)Limit::custom("x", kMaxExact / 3, 7, std::chrono::microseconds(kMicrosPerDay));
    FAIL() << "expected ValidationError";
  } catch (const ValidationError& e) {
    EXPECT_EQ(e.field(), "capacity");
  }
  const Limit big = Limit::per_minute("tpm", 150'000'000);  // OpenAI tier-5 scale
  EXPECT_TRUE(rate::check(big.rate(), {}, 150'000'000, kT0).ok);
}

// Verifies retry_after is exact as a property over random limits and request sequences:
// at now + retry_after the request fits, 1 µs earlier it does not.
TEST(Rate, RetryAfterExactProperty) {
  const std::uint64_t seed = test::test_seed();
  SCOPED_TRACE(test::seed_note(seed));
  std::mt19937_64 rng(seed);
  const Micros periods[] = {1, 999, kMicrosPerSecond, 60'000'000, 86'400'000'000, 3'333'333};
  for (int round = 0; round < 200; ++round) {
    const std::int64_t refill = std::uniform_int_distribution<std::int64_t>(1, 100'000)(rng);
    const Micros period = periods[rng() % std::size(periods)];
    const std::int64_t burst = std::uniform_int_distribution<std::int64_t>(1, 50'000)(rng);
    Limit l = Limit::per_second("x", 1);
    try {
      l = Limit::custom("x", burst, refill, std::chrono::microseconds(period));
    } catch (const ValidationError&) {
      continue;  // beyond the exact range: refused, as tested above
    }
    const auto& p = l.rate();
    rate::Tat tat{};
    Micros now = kT0;
    for (int step = 0; step < 200; ++step) {
      now += std::uniform_int_distribution<Micros>(0, period)(rng) / 4;
      const std::int64_t n = std::uniform_int_distribution<std::int64_t>(1, burst)(rng);
      const auto c = rate::check(p, tat, n, now);
      if (c.ok) {
        tat = rate::consume(p, tat, n, now);
        continue;
      }
      ASSERT_FALSE(c.never);
      ASSERT_GT(c.retry_after, 0);
      EXPECT_FALSE(rate::check(p, tat, n, now + c.retry_after - 1).ok)
          << "burst " << burst << " refill " << refill << " period " << period << " n " << n;
      EXPECT_TRUE(rate::check(p, tat, n, now + c.retry_after).ok)
          << "burst " << burst << " refill " << refill << " period " << period << " n " << n;
    }
  }
}

// Verifies the safety property on random traffic: over any interval [t0, t1] between two
// admissions, admitted <= burst + rate * (t1 - t0), checked exactly in integers.
TEST(Rate, SafetyPropertyOnRandomTraffic) {
  const std::uint64_t seed = test::test_seed() + 1;
  SCOPED_TRACE(test::seed_note(seed));
  std::mt19937_64 rng(seed);
  for (int round = 0; round < 20; ++round) {
    const std::int64_t refill = std::uniform_int_distribution<std::int64_t>(1, 50)(rng);
    const Micros period = std::uniform_int_distribution<Micros>(1'000, 5'000'000)(rng);
    const std::int64_t burst = std::uniform_int_distribution<std::int64_t>(1, 40)(rng);
    const Limit l = Limit::custom("x", burst, refill, std::chrono::microseconds(period));
    const auto& p = l.rate();
    rate::Tat tat{};
    Micros now = kT0;
    std::vector<std::pair<Micros, std::int64_t>> admitted;
    for (int step = 0; step < 600; ++step) {
      now +=
          std::uniform_int_distribution<Micros>(0, period / std::max<std::int64_t>(refill, 1))(rng);
      const std::int64_t n = std::uniform_int_distribution<std::int64_t>(1, burst)(rng);
      if (rate::check(p, tat, n, now).ok) {
        tat = rate::consume(p, tat, n, now);
        admitted.emplace_back(now, n);
      }
    }
    for (std::size_t i = 0; i < admitted.size(); ++i) {
      std::int64_t sum = 0;
      for (std::size_t j = i; j < admitted.size(); ++j) {
        sum += admitted[j].second;
        const Micros dt = admitted[j].first - admitted[i].first;
        // sum <= burst + refill * dt / period  <=>  sum*period <= burst*period + refill*dt
        ASSERT_LE(
            static_cast<rate::Int128>(sum) * period,
            static_cast<rate::Int128>(burst) * period + static_cast<rate::Int128>(refill) * dt)
            << "interval " << i << ".." << j;
      }
    }
  }
}

}  // namespace
}  // namespace admit
