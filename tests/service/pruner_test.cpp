// admitd's pruner (service/pruner.hpp): on a ManualClock, a lease nobody ends leaves the store
// once the clock passes its TTL and the next prune runs, and is counted as expired.
#include "service/pruner.hpp"

#include <gtest/gtest.h>

#include <chrono>
#include <thread>

#include "admit/core/clock.hpp"
#include "admit/limiter.hpp"
#include "admit/store/memory_store.hpp"

namespace admit::service {
namespace {

// Waits for the pruner thread to finish `n` runs. The loop only yields: the test asserts the
// prune's effects, never how long it took.
void await_runs(const Pruner& p, std::uint64_t n) {
  while (p.runs() < n) std::this_thread::yield();
}

TEST(Pruner, RemovesOrphanedLeasesOnTheClockAndCountsThem) {
  MemoryStore store;
  ManualClock clock;
  Limiter limiter(store, clock);
  limiter.set_limits("gpt-4o", {Limit::per_minute("rpm", 100)});
  AcquireOptions durable;
  durable.durable = true;
  durable.lease_ttl = 30 * kMicrosPerSecond;
  Lease orphan = limiter.try_acquire("alice", "gpt-4o", {{"rpm", 1}}, durable);
  ASSERT_TRUE(orphan);
  (void)orphan.detach();  // as admitd does: the client holds the token, and never comes back
  Lease ended = limiter.try_acquire("bob", "gpt-4o", {{"rpm", 1}}, durable);
  ASSERT_TRUE(ended);
  ended.commit();

  const Pruner pruner(store, clock, std::chrono::seconds(10));
  EXPECT_EQ(pruner.runs(), 0u);
  clock.advance(10 * kMicrosPerSecond);  // the first prune: the lease is still live
  await_runs(pruner, 1);
  EXPECT_EQ(store.expired_leases(), 0u);
  clock.advance(21 * kMicrosPerSecond);  // past the TTL, and past the next prune
  await_runs(pruner, 2);
  EXPECT_EQ(store.expired_leases(), 1u);
  EXPECT_EQ(store.size(), 0u);  // the record and the idle rate state are gone
}

TEST(Pruner, ZeroIntervalRunsNothing) {
  MemoryStore store;
  ManualClock clock;
  const Pruner pruner(store, clock, std::chrono::milliseconds(0));
  clock.advance(3600 * kMicrosPerSecond);
  EXPECT_EQ(pruner.runs(), 0u);
}

}  // namespace
}  // namespace admit::service
