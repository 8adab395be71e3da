#include "admit/adapt/aimd.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <limits>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "admit/core/error.hpp"

namespace admit {
namespace {

using Permit = AimdController::Permit;

constexpr Micros kStart = 1'700'000'000'000'000;
constexpr double kNan = std::numeric_limits<double>::quiet_NaN();

void wait_for_sleepers(const ManualClock& clock, std::size_t n) {
  while (clock.sleepers() < n) std::this_thread::yield();
}

void wait_for_waiters(const AimdController& c, std::size_t n) {
  while (c.waiters() < n) std::this_thread::yield();
}

// Verifies the controller follows its control law (AimdLaw, tested in core_test): defaults,
// validation, outcomes recorded directly, and the interval derived from the rate.
TEST(AimdController, FollowsTheControlLaw) {
  ManualClock clock;
  EXPECT_THROW(AimdController(clock, {.max_rate = kNan}), ValidationError);
  AimdController c(clock, {.max_rate = 10});
  EXPECT_EQ(c.current_rate(), 1.0);
  EXPECT_EQ(c.max_rate(), 10.0);
  EXPECT_EQ(c.min_rate(), 0.1);
  EXPECT_EQ(c.slow_start_threshold(), 5.0);
  EXPECT_TRUE(c.in_slow_start());
  EXPECT_FALSE(c.in_fast_recovery());
  EXPECT_EQ(c.epoch(), 0u);
  EXPECT_EQ(c.interval(), 1'000'000);
  c.record_success();
  EXPECT_EQ(c.current_rate(), 2.0);
  EXPECT_EQ(c.interval(), 500'000);
  EXPECT_TRUE(c.record_failure(0));
  EXPECT_FALSE(c.record_failure(0));  // an older epoch
  const AimdState s = c.state();
  EXPECT_EQ(s.rate, 1.0);
  EXPECT_EQ(s.epoch, 1u);
  EXPECT_TRUE(s.in_fast_recovery);
  EXPECT_EQ(s.recovery_target, 2.0);
}

// Verifies a permit records its first mark only; moved-from and unmarked permits record
// nothing.
TEST(AimdController, PermitMarksOnce) {
  ManualClock clock;
  AimdController c(clock, {.max_rate = 100, .initial_rate = 10, .slow_start_threshold = 10});
  auto p = c.try_acquire();
  ASSERT_TRUE(p);
  EXPECT_FALSE(p->marked());
  EXPECT_TRUE(p->mark_success());
  EXPECT_TRUE(p->marked());
  EXPECT_FALSE(p->mark_failure());
  EXPECT_FALSE(p->mark_success());
  EXPECT_EQ(c.current_rate(), 11.0);
  EXPECT_EQ(c.epoch(), 0u);

  clock.advance(1'000'000);
  auto q = c.try_acquire();
  ASSERT_TRUE(q);
  Permit moved = std::move(*q);
  EXPECT_FALSE(q->mark_failure());  // NOLINT(bugprone-use-after-move): moved-from is inert
  EXPECT_EQ(c.epoch(), 0u);
  EXPECT_TRUE(moved.mark_failure());
  EXPECT_EQ(c.epoch(), 1u);
  EXPECT_EQ(c.current_rate(), 5.5);

  clock.advance(1'000'000);
  {
    auto unmarked = c.try_acquire();
    ASSERT_TRUE(unmarked);
  }
  EXPECT_EQ(c.current_rate(), 5.5);
  EXPECT_EQ(c.epoch(), 1u);
}

// Verifies the fix: failures of permits issued before a decrease cause no further
// decrease (one per congestion event, not 0.5^N), while a permit issued after it does.
TEST(AimdController, DecreasesOncePerCongestionEvent) {
  ManualClock clock;
  AimdController c(clock, {.max_rate = 1000, .initial_rate = 100, .slow_start_threshold = 100});
  std::vector<Permit> in_flight;
  for (int i = 0; i < 10; ++i) {
    auto p = c.try_acquire();
    ASSERT_TRUE(p);
    EXPECT_EQ(p->epoch(), 0u);
    in_flight.push_back(std::move(*p));
    clock.advance(c.interval());
  }
  for (Permit& p : in_flight) EXPECT_TRUE(p.mark_failure());  // each mark is recorded...
  EXPECT_EQ(c.epoch(), 1u);                                   // ...but only one decreases
  EXPECT_EQ(c.current_rate(), 50.0);                          // not 100 * 0.5^10
  EXPECT_FALSE(c.record_failure(0));                          // stale epoch: ignored

  auto fresh = c.try_acquire();
  ASSERT_TRUE(fresh);
  EXPECT_EQ(fresh->epoch(), 1u);
  EXPECT_EQ(fresh->rate_at_issue(), 50.0);
  EXPECT_TRUE(fresh->mark_failure());
  EXPECT_EQ(c.epoch(), 2u);
  EXPECT_EQ(c.current_rate(), 25.0);

  // A manual failure is always treated as current.
  EXPECT_TRUE(c.record_failure());
  EXPECT_EQ(c.epoch(), 3u);
  EXPECT_EQ(c.current_rate(), 12.5);
}

// Verifies pacing at 4/s: permits exactly 250'000 µs apart, no burst after idling.
TEST(AimdController, PacingSpacesPermitsExactly) {
  ManualClock clock(kStart);
  AimdController c(clock, {.max_rate = 8, .initial_rate = 4});
  EXPECT_EQ(c.interval(), 250'000);
  auto first = c.try_acquire();
  ASSERT_TRUE(first);
  EXPECT_EQ(first->issued_at(), kStart);
  EXPECT_EQ(first->rate_at_issue(), 4.0);
  EXPECT_FALSE(c.try_acquire());
  clock.advance(249'999);
  EXPECT_FALSE(c.try_acquire());
  clock.advance(1);
  auto second = c.try_acquire();
  ASSERT_TRUE(second);
  EXPECT_EQ(second->issued_at() - first->issued_at(), 250'000);
  clock.advance(250'000);
  auto third = c.try_acquire();
  ASSERT_TRUE(third);
  EXPECT_EQ(third->issued_at() - second->issued_at(), 250'000);

  // Idle for 10 s: still one permit, then the next is a full interval later.
  clock.advance(10'000'000);
  auto after_idle = c.try_acquire();
  ASSERT_TRUE(after_idle);
  EXPECT_FALSE(c.try_acquire());
  clock.advance(249'999);
  EXPECT_FALSE(c.try_acquire());
  clock.advance(1);
  EXPECT_TRUE(c.try_acquire());
}

// Verifies a permit's spacing uses the rate at its issue; a later change applies to the
// next interval only.
TEST(AimdController, IntervalFixedAtIssue) {
  ManualClock clock(kStart);
  AimdController c(clock, {.max_rate = 8, .initial_rate = 4, .slow_start_threshold = 4});
  auto a = c.try_acquire();  // next slot kStart + 250'000
  ASSERT_TRUE(a);
  c.record_success();  // 5/s
  clock.advance(249'999);
  EXPECT_FALSE(c.try_acquire());
  clock.advance(1);
  auto b = c.try_acquire();  // next slot + 200'000
  ASSERT_TRUE(b);
  EXPECT_EQ(b->rate_at_issue(), 5.0);
  clock.advance(199'999);
  EXPECT_FALSE(c.try_acquire());
  clock.advance(1);
  EXPECT_TRUE(c.try_acquire());
}

// Verifies the interval is rounded to whole µs and never 0.
TEST(AimdController, IntervalRounding) {
  ManualClock clock;
  EXPECT_EQ(AimdController(clock, {.max_rate = 3, .initial_rate = 3}).interval(), 333'333);
  EXPECT_EQ(AimdController(clock, {.max_rate = 1.5, .initial_rate = 1.5}).interval(), 666'667);
  EXPECT_EQ(AimdController(clock, {.max_rate = 1e9, .initial_rate = 1e9}).interval(), 1);
  EXPECT_EQ(
      AimdController(clock, {.max_rate = 1, .initial_rate = 1e-300, .min_rate = 1e-300}).interval(),
      AimdController::kMaxInterval);
}

// Verifies a blocking acquire wakes exactly when the clock reaches its slot.
TEST(AimdController, BlockingAcquireWakesAtSlot) {
  ManualClock clock(kStart);
  AimdController c(clock, {.max_rate = 8, .initial_rate = 4});
  ASSERT_TRUE(c.try_acquire());
  std::atomic<bool> got{false};
  Micros issued = 0;
  std::thread t([&] {
    Permit p = c.acquire();
    issued = p.issued_at();
    got = true;
  });
  wait_for_sleepers(clock, 1);
  EXPECT_EQ(clock.next_wakeup(), kStart + 250'000);
  EXPECT_EQ(clock.advance(249'999), 0u);
  EXPECT_FALSE(got.load());
  EXPECT_EQ(c.waiters(), 1u);
  clock.advance(1);
  t.join();
  EXPECT_TRUE(got.load());
  EXPECT_EQ(issued, kStart + 250'000);
  EXPECT_EQ(c.waiters(), 0u);
}

// Verifies blocked waiters are served in arrival order, one slot each, and a far deadline
// waits like none.
TEST(AimdController, WaitersAreFifo) {
  ManualClock clock(kStart);
  AimdController c(clock, {.max_rate = 8, .initial_rate = 4});
  ASSERT_TRUE(c.try_acquire());
  Micros first_at = 0;
  Micros second_at = 0;
  std::thread first([&] { first_at = c.acquire().issued_at(); });
  wait_for_sleepers(clock, 1);  // first is the head, waiting on the clock
  // A deadline centuries away behaves like no deadline.
  std::thread second([&] {
    auto p = c.acquire_until(std::numeric_limits<Micros>::max() - 1);
    second_at = p ? p->issued_at() : -1;
  });
  wait_for_waiters(c, 2);
  clock.advance(250'000);
  first.join();
  EXPECT_EQ(first_at, kStart + 250'000);
  wait_for_sleepers(clock, 1);  // second is now the head
  EXPECT_EQ(clock.next_wakeup(), kStart + 500'000);
  clock.advance(250'000);
  second.join();
  EXPECT_EQ(second_at, kStart + 500'000);
}

// Verifies try_acquire never takes a slot a blocked waiter is queued for.
TEST(AimdController, TryAcquireDoesNotOvertakeWaiters) {
  ManualClock clock(kStart);
  AimdController c(clock, {.max_rate = 8, .initial_rate = 4});
  ASSERT_TRUE(c.try_acquire());
  std::thread t([&] { (void)c.acquire(); });
  wait_for_sleepers(clock, 1);
  clock.advance(250'000);
  // Either the waiter already took the slot or it is still queued: both deny.
  EXPECT_FALSE(c.try_acquire());
  t.join();
  EXPECT_FALSE(c.try_acquire());
  clock.advance(250'000);
  EXPECT_TRUE(c.try_acquire());
}

// Verifies a stop request wakes a blocked acquire at once and frees its place in line.
TEST(AimdController, StopTokenCancelsWait) {
  ManualClock clock(kStart);
  AimdController c(clock, {.max_rate = 8, .initial_rate = 4});
  ASSERT_TRUE(c.try_acquire());
  std::stop_source source;
  std::atomic<int> result{-1};
  std::thread t([&] { result = c.acquire(source.get_token()).has_value() ? 1 : 0; });
  wait_for_sleepers(clock, 1);
  source.request_stop();
  t.join();
  EXPECT_EQ(result.load(), 0);
  EXPECT_EQ(c.waiters(), 0u);
  EXPECT_EQ(clock.now(), kStart);  // no time passed
  clock.advance(250'000);
  EXPECT_TRUE(c.try_acquire());  // the cancelled waiter consumed no slot

  std::stop_source already;
  already.request_stop();
  EXPECT_FALSE(c.acquire(already.get_token()));
}

// Verifies acquire_until: immediate nullopt when the slot is after the deadline, a permit
// when it is not, and a queued waiter that times out is skipped by the queue.
TEST(AimdController, AcquireUntilDeadline) {
  ManualClock clock(kStart);
  AimdController c(clock, {.max_rate = 8, .initial_rate = 4});
  ASSERT_TRUE(c.acquire_until(kStart));             // slot open now
  EXPECT_FALSE(c.acquire_until(kStart + 249'999));  // slot after deadline: at once
  EXPECT_EQ(clock.sleepers(), 0u);
  EXPECT_EQ(c.waiters(), 0u);

  Micros head_at = 0;
  std::thread head([&] { head_at = c.acquire().issued_at(); });  // slot kStart + 250'000
  wait_for_sleepers(clock, 1);
  std::atomic<int> early{-1};
  std::thread times_out([&] { early = c.acquire_until(kStart + 100'000).has_value() ? 1 : 0; });
  wait_for_sleepers(clock, 2);
  std::atomic<int> late{-1};
  // Queued third; its deadline is after the head's slot but before the following one.
  std::thread too_late([&] { late = c.acquire_until(kStart + 400'000).has_value() ? 1 : 0; });
  wait_for_sleepers(clock, 3);
  clock.advance(100'000);
  times_out.join();
  EXPECT_EQ(early.load(), 0);
  clock.advance(150'000);
  head.join();
  EXPECT_EQ(head_at, kStart + 250'000);
  too_late.join();  // became head with slot kStart + 500'000 > deadline: gave up at once
  EXPECT_EQ(late.load(), 0);
  EXPECT_EQ(c.waiters(), 0u);
  clock.advance(250'000);
  EXPECT_TRUE(c.try_acquire());

  // A deadline the slot meets: blocks, then gets the permit at the slot.
  std::atomic<Micros> ok_at{0};
  std::thread ok([&] {
    auto p = c.acquire_until(kStart + 900'000);
    ok_at = p ? p->issued_at() : -1;
  });
  wait_for_sleepers(clock, 1);
  clock.advance(250'000);
  ok.join();
  EXPECT_EQ(ok_at.load(), kStart + 750'000);
}

// Verifies run() marks success when f returns (passing its result) and failure when f
// throws (rethrowing).
TEST(AimdController, RunMarksOutcome) {
  ManualClock clock;
  AimdController c(clock, {.max_rate = 100, .initial_rate = 10, .slow_start_threshold = 10});
  EXPECT_EQ(c.run([] { return 42; }), 42);
  EXPECT_EQ(c.current_rate(), 11.0);

  clock.advance(1'000'000);
  int calls = 0;
  c.run([&] { ++calls; });
  EXPECT_EQ(calls, 1);
  EXPECT_EQ(c.current_rate(), 12.0);

  clock.advance(1'000'000);
  EXPECT_THROW(c.run([]() -> int { throw std::runtime_error("429"); }), std::runtime_error);
  EXPECT_EQ(c.current_rate(), 6.0);
  EXPECT_EQ(c.epoch(), 1u);

  clock.advance(1'000'000);
  int target = 0;
  int& ref = c.run([&]() -> int& { return target; });
  EXPECT_EQ(&ref, &target);
}

struct Issued {
  Micros at;
  double rate;
  std::uint64_t epoch;
};

void check_spacing(std::vector<Issued> all) {
  std::sort(all.begin(), all.end(), [](const Issued& a, const Issued& b) { return a.at < b.at; });
  for (std::size_t i = 1; i < all.size(); ++i) {
    const Micros gap = all[i].at - all[i - 1].at;
    const Micros interval = std::max<Micros>(1, std::llround(1e6 / all[i - 1].rate));
    ASSERT_GE(gap, interval) << "permits " << i - 1 << " and " << i;
    ASSERT_GE(all[i].epoch, all[i - 1].epoch);
  }
}

// Verifies 4 threads doing try_acquire + mark while a driver advances the clock keep the
// state consistent: rate within bounds, spacing respected, every permit issued once.
TEST(AimdController, ConcurrentTryAcquireAndMark) {
  ManualClock clock(kStart);
  const AimdOptions opts{.max_rate = 1000, .initial_rate = 10, .min_rate = 1};
  AimdController c(clock, opts);
  constexpr int kThreads = 4;
  constexpr int kPerThread = 150;
  std::vector<std::vector<Issued>> issued(kThreads);
  std::atomic<int> finished{0};
  std::atomic<int> bad_state{0};
  std::atomic<int> failures{0};
  std::vector<std::thread> workers;
  for (int t = 0; t < kThreads; ++t) {
    workers.emplace_back([&, t] {
      for (int i = 0; i < kPerThread; ++i) {
        std::optional<Permit> p;
        while (!(p = c.try_acquire())) std::this_thread::yield();
        issued[static_cast<std::size_t>(t)].push_back(
            {p->issued_at(), p->rate_at_issue(), p->epoch()});
        if ((i + t) % 5 == 0) {
          p->mark_failure();
          ++failures;
        } else {
          p->mark_success();
        }
        const AimdState s = c.state();
        if (s.rate < opts.min_rate || s.rate > opts.max_rate) ++bad_state;
        if (s.in_fast_recovery && s.recovery_target < s.rate) ++bad_state;
      }
      ++finished;
    });
  }
  while (finished.load() < kThreads) {
    clock.advance(5'000);
    std::this_thread::yield();
  }
  for (auto& w : workers) w.join();

  EXPECT_EQ(bad_state.load(), 0);
  std::vector<Issued> all;
  for (const auto& v : issued) all.insert(all.end(), v.begin(), v.end());
  ASSERT_EQ(all.size(), std::size_t{kThreads * kPerThread});
  check_spacing(all);
  EXPECT_GE(c.epoch(), 1u);
  EXPECT_LE(c.epoch(), static_cast<std::uint64_t>(failures.load()));
  EXPECT_EQ(c.waiters(), 0u);
}

// Verifies blocking acquire, acquire_until and try_acquire mixed across threads under a
// moving clock all finish, respect spacing and leave no waiter behind.
TEST(AimdController, ConcurrentBlockingAndTimedAcquire) {
  ManualClock clock(kStart);
  AimdController c(clock, {.max_rate = 200, .initial_rate = 20, .min_rate = 2});
  constexpr int kThreads = 6;
  constexpr int kPerThread = 30;
  std::vector<std::vector<Issued>> issued(kThreads);
  std::atomic<int> finished{0};
  std::vector<std::thread> workers;
  for (int t = 0; t < kThreads; ++t) {
    workers.emplace_back([&, t] {
      for (int i = 0; i < kPerThread; ++i) {
        std::optional<Permit> p;
        while (!p) {
          switch (t % 3) {
            case 0:
              p.emplace(c.acquire());
              break;
            case 1:
              p = c.acquire_until(clock.now() + 50'000);
              break;
            default:
              p = c.try_acquire();
              if (!p) std::this_thread::yield();
          }
        }
        issued[static_cast<std::size_t>(t)].push_back(
            {p->issued_at(), p->rate_at_issue(), p->epoch()});
        if (i % 7 == 3) {
          p->mark_failure();
        } else {
          p->mark_success();
        }
      }
      ++finished;
    });
  }
  while (finished.load() < kThreads) {
    clock.advance(10'000);
    std::this_thread::yield();
  }
  for (auto& w : workers) w.join();

  std::vector<Issued> all;
  for (const auto& v : issued) all.insert(all.end(), v.begin(), v.end());
  ASSERT_EQ(all.size(), std::size_t{kThreads * kPerThread});
  check_spacing(all);
  EXPECT_EQ(c.waiters(), 0u);
  EXPECT_EQ(clock.sleepers(), 0u);
}

}  // namespace
}  // namespace admit
