#include "admit/core/clock.hpp"

#include <gtest/gtest.h>

#include <thread>

namespace admit {
namespace {

// Verifies ManualClock moves only when told, never backwards.
TEST(ManualClock, AdvanceAndSet) {
  ManualClock c(1000);
  EXPECT_EQ(c.now(), 1000);
  c.advance(500);
  EXPECT_EQ(c.now(), 1500);
  c.advance(-100);
  EXPECT_EQ(c.now(), 1500);
  c.set(1200);
  EXPECT_EQ(c.now(), 1500);
  c.set(2000);
  EXPECT_EQ(c.now(), 2000);
}

// Verifies a waiter blocks until manual time reaches its deadline, and advance() reports it.
TEST(ManualClock, WakesWaiterAtDeadline) {
  ManualClock c(0);
  std::mutex mu;
  std::condition_variable cv;
  bool done = false;
  std::thread t([&] {
    std::unique_lock lk(mu);
    while (c.now() < 100) c.wait_until(lk, cv, 100);
    done = true;
  });
  while (c.sleepers() == 0) std::this_thread::yield();
  EXPECT_EQ(c.next_wakeup(), 100);
  EXPECT_EQ(c.advance(50), 0u);  // not due yet
  {
    std::lock_guard g(mu);
    EXPECT_FALSE(done);
  }
  while (c.sleepers() == 0) std::this_thread::yield();
  c.advance(50);
  t.join();
  EXPECT_TRUE(done);
  EXPECT_EQ(c.sleepers(), 0u);
}

// Verifies a deadline already passed returns at once.
TEST(ManualClock, PastDeadlineReturnsImmediately) {
  ManualClock c(500);
  std::mutex mu;
  std::condition_variable cv;
  std::unique_lock lk(mu);
  c.wait_until(lk, cv, 100);
  EXPECT_EQ(c.sleepers(), 0u);
}

// Verifies the real clocks never go backwards and look like wall time.
TEST(SystemClock, MonotonicWallTime) {
  SystemClock s;
  CoarseClock k;
  const Micros a = s.now();
  const Micros b = s.now();
  EXPECT_LE(a, b);
  EXPECT_GT(a, 1'600'000'000'000'000);  // after 2020
  EXPECT_GT(k.now(), 1'600'000'000'000'000);
  EXPECT_GE(k.resolution(), 1);
  EXPECT_LE(k.resolution(), 100'000);
}

}  // namespace
}  // namespace admit
