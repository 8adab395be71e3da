#include "admit/core/aimd.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <cstdint>
#include <limits>
#include <string>
#include <thread>
#include <vector>

#include "admit/core/error.hpp"

namespace admit {
namespace {

constexpr double kNan = std::numeric_limits<double>::quiet_NaN();
constexpr double kInf = std::numeric_limits<double>::infinity();

void expect_invalid(const AimdOptions& o, const std::string& field, const std::string& value) {
  try {
    AimdLaw c(o);
    ADD_FAILURE() << "no ValidationError for " << field << " = " << value;
  } catch (const ValidationError& e) {
    EXPECT_EQ(e.field(), field) << e.what();
    EXPECT_EQ(e.value(), value) << e.what();
  }
  EXPECT_THROW(validate(o), ValidationError) << field;
}

// Verifies every option is validated and the error names the option and its value.
TEST(AimdOptions, RejectsInvalidValuesNamingTheField) {
  expect_invalid({.max_rate = 0}, "max_rate", "0");
  expect_invalid({.max_rate = -1}, "max_rate", "-1");
  expect_invalid({.max_rate = kNan}, "max_rate", "nan");
  expect_invalid({.max_rate = kInf}, "max_rate", "inf");
  expect_invalid(AimdOptions{}, "max_rate", "0");  // required

  expect_invalid({.max_rate = 10, .initial_rate = 0}, "initial_rate", "0");
  expect_invalid({.max_rate = 10, .initial_rate = -2.5}, "initial_rate", "-2.5");
  expect_invalid({.max_rate = 10, .initial_rate = kNan}, "initial_rate", "nan");
  expect_invalid({.max_rate = 10, .initial_rate = kInf}, "initial_rate", "inf");

  expect_invalid({.max_rate = 10, .slow_start_threshold = 0}, "slow_start_threshold", "0");
  expect_invalid({.max_rate = 10, .slow_start_threshold = 11}, "slow_start_threshold", "11");
  expect_invalid({.max_rate = 10, .slow_start_threshold = kNan}, "slow_start_threshold", "nan");

  expect_invalid({.max_rate = 10, .additive_increase = 0}, "additive_increase", "0");
  expect_invalid({.max_rate = 10, .additive_increase = -1}, "additive_increase", "-1");
  expect_invalid({.max_rate = 10, .additive_increase = kInf}, "additive_increase", "inf");

  expect_invalid({.max_rate = 10, .multiplicative_decrease = 0}, "multiplicative_decrease", "0");
  expect_invalid({.max_rate = 10, .multiplicative_decrease = 1}, "multiplicative_decrease", "1");
  expect_invalid({.max_rate = 10, .multiplicative_decrease = 1.5}, "multiplicative_decrease",
                 "1.5");
  expect_invalid({.max_rate = 10, .multiplicative_decrease = kNan}, "multiplicative_decrease",
                 "nan");

  expect_invalid({.max_rate = 10, .min_rate = 0}, "min_rate", "0");
  expect_invalid({.max_rate = 10, .min_rate = -0.1}, "min_rate", "-0.1");
  expect_invalid({.max_rate = 10, .min_rate = 10.5}, "min_rate", "10.5");
  expect_invalid({.max_rate = 10, .min_rate = kNan}, "min_rate", "nan");
}

// Verifies the defaults: initial 1, threshold max/2, slow start on, epoch 0.
TEST(AimdLaw, Defaults) {
  AimdLaw c({.max_rate = 10});
  EXPECT_EQ(c.current_rate(), 1.0);
  EXPECT_EQ(c.max_rate(), 10.0);
  EXPECT_EQ(c.min_rate(), 0.1);
  EXPECT_EQ(c.slow_start_threshold(), 5.0);
  EXPECT_TRUE(c.in_slow_start());
  EXPECT_FALSE(c.in_fast_recovery());
  EXPECT_EQ(c.epoch(), 0u);
}

// Verifies initial_rate is clamped into [min_rate, max_rate], and starting at or above the
// threshold skips slow start.
TEST(AimdLaw, InitialRateIsClamped) {
  AimdLaw high({.max_rate = 10, .initial_rate = 50});
  EXPECT_EQ(high.current_rate(), 10.0);
  EXPECT_FALSE(high.in_slow_start());

  AimdLaw low({.max_rate = 10, .initial_rate = 0.01, .min_rate = 0.5});
  EXPECT_EQ(low.current_rate(), 0.5);
  EXPECT_TRUE(low.in_slow_start());

  // max_rate 1 with the default initial 1.0 is above the default threshold 0.5: valid.
  AimdLaw tiny({.max_rate = 1});
  EXPECT_EQ(tiny.current_rate(), 1.0);
  EXPECT_FALSE(tiny.in_slow_start());
}

// Verifies slow start doubles per success up to the threshold, then grows additively.
TEST(AimdLaw, SlowStartDoublesToThresholdThenAdditive) {
  AimdLaw c({.max_rate = 16});  // threshold 8
  const double expected[] = {2, 4, 8};
  for (double e : expected) {
    EXPECT_TRUE(c.in_slow_start());
    c.record_success();
    EXPECT_EQ(c.current_rate(), e);
  }
  EXPECT_FALSE(c.in_slow_start());
  c.record_success();
  EXPECT_EQ(c.current_rate(), 9.0);
  c.record_success();
  EXPECT_EQ(c.current_rate(), 10.0);
  EXPECT_FALSE(c.in_fast_recovery());
}

// Verifies a doubling that would overshoot the threshold stops exactly at it.
TEST(AimdLaw, SlowStartIsCappedAtThreshold) {
  AimdLaw c({.max_rate = 20, .slow_start_threshold = 6, .additive_increase = 0.5});
  c.record_success();  // 2
  c.record_success();  // 4
  EXPECT_TRUE(c.in_slow_start());
  c.record_success();  // 8 capped to 6
  EXPECT_EQ(c.current_rate(), 6.0);
  EXPECT_FALSE(c.in_slow_start());
  c.record_success();
  EXPECT_EQ(c.current_rate(), 6.5);
}

// Verifies the rate never exceeds max_rate in congestion avoidance.
TEST(AimdLaw, CapsAtMaxRate) {
  AimdLaw c({.max_rate = 10, .initial_rate = 9, .additive_increase = 3});
  EXPECT_FALSE(c.in_slow_start());
  c.record_success();
  EXPECT_EQ(c.current_rate(), 10.0);
  c.record_success();
  EXPECT_EQ(c.current_rate(), 10.0);
}

// Verifies a failure multiplies the rate by md, sets the threshold to it, ends slow start
// and enters fast recovery targeting the old rate.
TEST(AimdLaw, FailureDecreasesAndEntersFastRecovery) {
  AimdLaw c({.max_rate = 32});  // threshold 16
  c.record_success();           // 2
  c.record_success();           // 4
  c.record_success();           // 8
  EXPECT_TRUE(c.in_slow_start());
  EXPECT_TRUE(c.record_failure());
  const AimdState s = c.state();
  EXPECT_EQ(s.rate, 4.0);
  EXPECT_EQ(s.slow_start_threshold, 4.0);
  EXPECT_FALSE(s.in_slow_start);
  EXPECT_TRUE(s.in_fast_recovery);
  EXPECT_EQ(s.recovery_target, 8.0);
  EXPECT_EQ(s.epoch, 1u);
  // Slow start does not come back: growth is additive from here.
  c.record_success();
  EXPECT_EQ(c.current_rate(), 5.0);
}

// Verifies fast recovery lasts until a success regains the pre-failure rate.
TEST(AimdLaw, FastRecoveryEndsWhenTargetRegained) {
  AimdLaw c({.max_rate = 20, .initial_rate = 8, .slow_start_threshold = 8});
  c.record_failure();  // 4, target 8
  for (double e : {5.0, 6.0, 7.0}) {
    c.record_success();
    EXPECT_EQ(c.current_rate(), e);
    EXPECT_TRUE(c.in_fast_recovery());
  }
  c.record_success();
  EXPECT_EQ(c.current_rate(), 8.0);
  EXPECT_FALSE(c.in_fast_recovery());
  EXPECT_EQ(c.state().recovery_target, 0.0);
}

// Verifies decreases stop at min_rate, and a failure at the floor still counts as an event.
TEST(AimdLaw, MinRateFloor) {
  AimdLaw c({.max_rate = 10, .initial_rate = 3, .min_rate = 1});
  c.record_failure();
  EXPECT_EQ(c.current_rate(), 1.5);
  c.record_failure();
  EXPECT_EQ(c.current_rate(), 1.0);
  c.record_failure();
  EXPECT_EQ(c.current_rate(), 1.0);
  EXPECT_EQ(c.slow_start_threshold(), 1.0);
  EXPECT_EQ(c.epoch(), 3u);
  c.record_success();  // target 1 already met
  EXPECT_EQ(c.current_rate(), 2.0);
  EXPECT_FALSE(c.in_fast_recovery());
}

// Verifies the fix: failures of requests sent before a decrease (an older epoch) cause no
// further decrease (one per congestion event, not 0.5^N), while one sent after it does.
TEST(AimdLaw, DecreasesOncePerCongestionEvent) {
  AimdLaw c({.max_rate = 1000, .initial_rate = 100, .slow_start_threshold = 100});
  const std::uint64_t sent = c.state().epoch;  // 10 requests sent in epoch 0
  EXPECT_TRUE(c.record_failure(sent));         // the first failure decreases...
  for (int i = 1; i < 10; ++i) EXPECT_FALSE(c.record_failure(sent));  // ...the others do not
  EXPECT_EQ(c.epoch(), 1u);
  EXPECT_EQ(c.current_rate(), 50.0);  // not 100 * 0.5^10

  EXPECT_TRUE(c.record_failure(c.state().epoch));  // sent after the decrease: new evidence
  EXPECT_EQ(c.epoch(), 2u);
  EXPECT_EQ(c.current_rate(), 25.0);

  // A failure without an epoch is always treated as current.
  EXPECT_TRUE(c.record_failure());
  EXPECT_EQ(c.epoch(), 3u);
  EXPECT_EQ(c.current_rate(), 12.5);
  EXPECT_FALSE(c.record_failure(2));
}

// Verifies 4 threads reporting successes and failures (with the epoch they read) keep the
// state within bounds, and that a failure decreases only when its epoch is current.
TEST(AimdLaw, ConcurrentOutcomes) {
  AimdLaw c({.max_rate = 100, .initial_rate = 10, .min_rate = 0.5});
  std::atomic<std::uint64_t> decreases{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 5000; ++i) {
        const AimdState s = c.state();
        EXPECT_GE(s.rate, 0.5);
        EXPECT_LE(s.rate, 100.0);
        if ((i + t) % 7 == 0) {
          if (c.record_failure(s.epoch)) decreases.fetch_add(1);
        } else {
          c.record_success();
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(c.epoch(), decreases.load());
  EXPECT_GE(c.current_rate(), 0.5);
  EXPECT_LE(c.current_rate(), 100.0);
}

// Verifies adopt(): a decrease seen elsewhere sets the rate, ends slow start, starts fast
// recovery and bumps the epoch (so failures of requests sent before it decrease nothing more);
// otherwise the rate only rises; rates are clamped; a decrease here since the caller read the
// epoch, or a rate that is not finite, makes it refuse.
TEST(AimdLaw, AdoptTakesOverAnotherHoldersRate) {
  AimdLaw c({.max_rate = 100, .initial_rate = 8, .slow_start_threshold = 32, .min_rate = 1});
  ASSERT_TRUE(c.in_slow_start());

  // A rise below the threshold stays in slow start; one to it leaves slow start.
  auto st = c.adopt(16, false, 0);
  ASSERT_TRUE(st);
  EXPECT_EQ(st->rate, 16);
  EXPECT_TRUE(st->in_slow_start);
  EXPECT_EQ(st->epoch, 0u);
  st = c.adopt(12, false, 0);  // never falls without a decrease
  ASSERT_TRUE(st);
  EXPECT_EQ(st->rate, 16);
  st = c.adopt(40, false, 0);
  ASSERT_TRUE(st);
  EXPECT_EQ(st->rate, 40);
  EXPECT_FALSE(st->in_slow_start);

  // A decrease elsewhere: the rate, fast recovery towards the rate before, one more epoch.
  st = c.adopt(20, true, 0);
  ASSERT_TRUE(st);
  EXPECT_EQ(st->rate, 20);
  EXPECT_EQ(st->slow_start_threshold, 20);
  EXPECT_TRUE(st->in_fast_recovery);
  EXPECT_EQ(st->recovery_target, 40);
  EXPECT_EQ(st->epoch, 1u);
  EXPECT_FALSE(c.record_failure(0)) << "a request sent before that decrease";
  EXPECT_EQ(c.current_rate(), 20);

  // The caller's epoch is stale (a decrease here since): nothing changes.
  EXPECT_TRUE(c.record_failure(1));  // 10, epoch 2
  EXPECT_FALSE(c.adopt(50, false, 1));
  EXPECT_FALSE(c.adopt(50, true, 1));
  EXPECT_EQ(c.current_rate(), 10);
  EXPECT_FALSE(c.adopt(kNan, false, 2));
  EXPECT_FALSE(c.adopt(kInf, true, 2));

  // Clamped to [min_rate, max_rate]; a rise to the recovery target ends fast recovery.
  st = c.adopt(0.01, true, 2);
  ASSERT_TRUE(st);
  EXPECT_EQ(st->rate, 1);
  EXPECT_EQ(st->epoch, 3u);
  st = c.adopt(1e9, false, 3);
  ASSERT_TRUE(st);
  EXPECT_EQ(st->rate, 100);
  EXPECT_FALSE(st->in_fast_recovery);
  // A "decrease" to a higher rate (a fresh law taking over a fleet past its decreases): the
  // rate, no fast recovery, slow start over.
  AimdLaw fresh({.max_rate = 100, .initial_rate = 1});
  st = fresh.adopt(30, true, 0);
  ASSERT_TRUE(st);
  EXPECT_EQ(st->rate, 30);
  EXPECT_FALSE(st->in_slow_start);
  EXPECT_FALSE(st->in_fast_recovery);
  EXPECT_EQ(st->epoch, 1u);
}

}  // namespace
}  // namespace admit
