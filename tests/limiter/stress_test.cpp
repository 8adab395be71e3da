// Multi-threaded tests with exact expected counts: threads race on the store while the clock
// moves only between std::barrier phases, so the totals are deterministic. Must be clean under
// ThreadSanitizer.
#include <gtest/gtest.h>

#include <atomic>
#include <barrier>
#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "admit/core/clock.hpp"
#include "admit/limiter.hpp"
#include "admit/store/memory_store.hpp"
#include "support/fault_store.hpp"
#include "support/test_support.hpp"

namespace admit {
namespace {

using namespace std::chrono_literals;
using test::available;
using test::cat;
using test::kStart;

constexpr int kThreads = 8;

struct SingleKeyCase {
  const char* label;
  Limit limit;
  Micros step;
  int steps;
};

/// Runs kThreads workers that drain (entity, resource) at every clock step until each has seen
/// `denials_per_phase` denials, the driver advancing the clock between two barriers.
/// @return the admitted total; every denial must be rate_exceeded.
std::int64_t hammer_one_key(Limiter& limiter, ManualClock& clock, const std::string& limit_name,
                            Micros step, int steps, std::atomic<int>& bad_codes) {
  std::barrier sync(kThreads + 1);
  std::vector<std::int64_t> admitted(kThreads, 0);
  std::vector<std::thread> workers;
  for (int w = 0; w < kThreads; ++w) {
    workers.emplace_back([&, w] {
      for (int phase = 0; phase <= steps; ++phase) {
        int denials = 0;
        while (denials < 3) {  // keep hammering after the first denial
          Lease l = limiter.try_acquire("hot", "gpt", {{limit_name, 1}});
          if (l) {
            ++admitted[static_cast<std::size_t>(w)];
            l.commit();
          } else {
            if (l.decision().code != Code::rate_exceeded) bad_codes.fetch_add(1);
            ++denials;
          }
        }
        sync.arrive_and_wait();  // every worker saw the bucket empty
        sync.arrive_and_wait();  // the driver moved the clock
      }
    });
  }
  for (int phase = 0; phase <= steps; ++phase) {
    sync.arrive_and_wait();
    if (phase < steps) clock.advance(step);
    sync.arrive_and_wait();
  }
  for (auto& t : workers) t.join();
  std::int64_t total = 0;
  for (auto a : admitted) total += a;
  return total;
}

// Verifies 8 threads hammering try_acquire on ONE key while the clock advances in fixed steps
// admit exactly burst + floor(refill * elapsed / period) — no over- or under-admission under
// contention — for an integer and a non-integer emission interval.
TEST(Stress, OneKeyAdmitsExactlyBurstPlusRateTimesElapsed) {
  const SingleKeyCase cases[] = {
      // T = 1 ms, 10 per step.
      {"per_second(1000, burst 100), 10 ms steps", Limit::per_second("rps", 1000, 100), 10'000,
       200},
      // T = 142857 + 1/7 µs, 2.33... per step: the fractions must carry over exactly.
      {"per_second(7, burst 20), 333333 us steps", Limit::per_second("rps", 7, 20), 333'333, 150},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.label);
    ManualClock clock(kStart);
    MemoryStore store;
    Limiter limiter(store, clock);
    limiter.set_limits("gpt", {c.limit});
    std::atomic<int> bad_codes{0};
    const std::int64_t total =
        hammer_one_key(limiter, clock, c.limit.name(), c.step, c.steps, bad_codes);
    // The step never lets the bucket fill up (step <= (burst - 1) * T), so every unit that
    // refills is admitted: N = burst + floor(elapsed * refill / period).
    const Micros elapsed = c.step * c.steps;
    ASSERT_LE(c.step * c.limit.refill_amount(), (c.limit.capacity() - 1) * c.limit.refill_period());
    const std::int64_t expected =
        c.limit.capacity() + elapsed * c.limit.refill_amount() / c.limit.refill_period();
    EXPECT_EQ(total, expected);
    EXPECT_EQ(bad_codes.load(), 0);
    EXPECT_EQ(available(limiter, "hot", "gpt", "rps"), 0);
    EXPECT_EQ(clock.now(), kStart + elapsed);
  }
}

// Verifies 8 threads on distinct keys with shared parents (user -> team -> org) lose no
// update: every level's usage equals the sum of what its descendants committed (rollbacks
// and adjusts included), and every concurrency slot comes back.
TEST(Stress, DistinctKeysWithParentChainsLoseNoUpdates) {
  ManualClock clock(kStart);
  MemoryStore store(MemoryStoreOptions{.shards = 8});
  Limiter limiter(store, clock);
  const std::int64_t cap = 1'000'000;
  limiter.set_default_limits({Limit::per_day("rpd", cap), Limit::concurrency("inflight", 64)});
  limiter.set_parent("team-0", "org");
  limiter.set_parent("team-1", "org");
  for (int w = 0; w < kThreads; ++w) limiter.set_parent(cat("user-", w), cat("team-", w % 2));

  constexpr int kIters = 3000;
  std::vector<std::int64_t> used(kThreads, 0);
  std::atomic<int> failures{0};
  std::vector<std::thread> workers;
  for (int w = 0; w < kThreads; ++w) {
    workers.emplace_back([&, w] {
      const std::string user = cat("user-", w);
      std::int64_t mine = 0;
      for (int i = 0; i < kIters; ++i) {
        const std::int64_t n = 1 + (i % 3);
        Lease l = limiter.try_acquire(user, "gpt", {{"rpd", n}});
        if (!l) {
          failures.fetch_add(1);
          continue;
        }
        switch (i % 5) {
          case 0:  // rollback: nothing used
            l.rollback();
            break;
          case 1:  // adjust up, then commit
            (void)l.adjust({{"rpd", 2}});
            mine += n + 2;
            l.commit();
            break;
          case 2:  // refund part, then commit
            (void)l.adjust({{"rpd", -1}});
            mine += n - 1;
            l.commit();
            break;
          default:
            mine += n;
            l.commit();
        }
        if (i % 7 == 0) {  // usage after the fact on the same chain
          (void)limiter.record_usage(user, "gpt", {{"rpd", 1}});
          mine += 1;
        }
      }
      used[static_cast<std::size_t>(w)] = mine;
    });
  }
  for (auto& t : workers) t.join();
  EXPECT_EQ(failures.load(), 0);

  std::int64_t team_used[2] = {0, 0};
  for (int w = 0; w < kThreads; ++w) {
    const std::string user = cat("user-", w);
    EXPECT_EQ(available(limiter, user, "gpt", "rpd"), cap - used[static_cast<std::size_t>(w)])
        << user;
    EXPECT_EQ(available(limiter, user, "gpt", "inflight"), 64) << user;
    team_used[w % 2] += used[static_cast<std::size_t>(w)];
  }
  EXPECT_EQ(available(limiter, "team-0", "gpt", "rpd"), cap - team_used[0]);
  EXPECT_EQ(available(limiter, "team-1", "gpt", "rpd"), cap - team_used[1]);
  EXPECT_EQ(available(limiter, "org", "gpt", "rpd"), cap - team_used[0] - team_used[1]);
  EXPECT_EQ(available(limiter, "org", "gpt", "inflight"), 64);
}

// Verifies all-or-nothing across keys under contention: 8 users (own shards) share a parent
// whose capacity is below the total demand; exactly the parent's capacity is admitted, and
// each user's own bucket is charged exactly its admitted amount (denials charge nobody).
TEST(Stress, SharedParentAdmitsExactlyItsCapacity) {
  ManualClock clock(kStart);
  MemoryStore store;
  Limiter limiter(store, clock);
  const std::int64_t parent_cap = 5000;
  limiter.set_limits("gpt", {Limit::per_day("rpd", 100'000)});
  limiter.set_entity_limits("org", "gpt", {Limit::per_day("rpd", parent_cap)});
  for (int w = 0; w < kThreads; ++w) limiter.set_parent(cat("user-", w), "org");

  std::vector<std::int64_t> admitted(kThreads, 0);
  std::atomic<int> bad_codes{0};
  std::barrier start(kThreads);
  std::vector<std::thread> workers;
  for (int w = 0; w < kThreads; ++w) {
    workers.emplace_back([&, w] {
      const std::string user = cat("user-", w);
      start.arrive_and_wait();
      for (int i = 0; i < 1500; ++i) {  // 8 * 1500 * 1 = 12000 > 5000
        Lease l = limiter.try_acquire(user, "gpt", {{"rpd", 1}});
        if (l) {
          ++admitted[static_cast<std::size_t>(w)];
          l.commit();
        } else {
          const Decision& d = l.decision();
          if (d.code != Code::rate_exceeded || d.violations.size() != 1 ||
              d.violations[0].entity != "org") {
            bad_codes.fetch_add(1);
          }
        }
      }
    });
  }
  for (auto& t : workers) t.join();
  std::int64_t total = 0;
  for (int w = 0; w < kThreads; ++w) {
    const std::int64_t a = admitted[static_cast<std::size_t>(w)];
    total += a;
    EXPECT_EQ(available(limiter, cat("user-", w), "gpt", "rpd"), 100'000 - a);
  }
  EXPECT_EQ(total, parent_cap);
  EXPECT_EQ(bad_codes.load(), 0);
  EXPECT_EQ(available(limiter, "org", "gpt", "rpd"), 0);
}

// Verifies no wake-up is lost among 8 threads blocked in acquire() on one concurrency slot:
// with the clock never moving, every acquire is admitted solely by others' commits and
// rollbacks, and the slot is free at the end.
TEST(Stress, AcquireWaitersOnOneSlotAllGetThrough) {
  ManualClock clock(kStart);
  MemoryStore store;
  Limiter limiter(store, clock);
  limiter.set_limits("gpt", {Limit::concurrency("inflight", 1)});
  constexpr int kRounds = 200;
  std::stop_source stop;  // unblocks everyone if the test is failing
  std::atomic<int> admitted{0};
  std::atomic<int> errors{0};
  std::atomic<int> done{0};
  std::vector<std::thread> workers;
  for (int w = 0; w < kThreads; ++w) {
    workers.emplace_back([&, w] {
      AcquireOptions o;
      o.stop = stop.get_token();
      for (int i = 0; i < kRounds; ++i) {
        try {
          Lease l = limiter.acquire("u", "gpt", {}, 1h, o);
          admitted.fetch_add(1);
          if ((i + w) % 2 == 0) {
            l.commit();
          } else {
            l.rollback();
          }
        } catch (const std::exception&) {
          errors.fetch_add(1);
          break;
        }
      }
      done.fetch_add(1);
    });
  }
  const bool finished =
      test::spin_until([&] { return done.load() == kThreads; }, "all acquire() loops to finish");
  if (!finished) stop.request_stop();
  for (auto& t : workers) t.join();
  ASSERT_TRUE(finished) << "admitted " << admitted.load() << " of " << kThreads * kRounds;
  EXPECT_EQ(errors.load(), 0);
  EXPECT_EQ(admitted.load(), kThreads * kRounds);
  EXPECT_EQ(clock.now(), kStart);
  EXPECT_EQ(limiter.waiting("u", "gpt"), 0u);
  EXPECT_EQ(available(limiter, "u", "gpt", "inflight"), 1);
}

// Verifies configuration updates racing with admission are safe: one thread admits on limiter A
// (re-using its cached plan) while reading stats of four other limiters (which cycles its
// per-thread snapshot cache), another thread keeps replacing A's limits. Every request fits
// either configuration, so all are admitted; a plan that outlived its snapshot shows up as
// a use-after-free under ASan / a race under TSan.
TEST(Stress, ConfigUpdatesRacingWithCachedPlansAreSafe) {
  ManualClock clock(kStart);
  MemoryStore store;
  Limiter a(store, clock, LimiterOptions{.ns = "a"});
  std::vector<std::unique_ptr<Limiter>> others;
  for (int i = 0; i < 4; ++i) {
    others.push_back(std::make_unique<Limiter>(store, clock, LimiterOptions{.ns = cat("o", i)}));
    others.back()->set_limits("gpt", {Limit::per_minute("rpm", 10)});
  }
  const std::vector<Limit> v1 = {Limit::per_day("rpd", 1'000'000)};
  const std::vector<Limit> v2 = {Limit::per_day("rpd", 1'000'000), Limit::per_day("tpd", 5)};
  a.set_limits("gpt", v1);
  a.set_parent("e", "org");
  std::atomic<bool> stop{false};
  std::atomic<int> updates{0};
  std::thread updater([&] {
    while (!stop.load()) {
      a.set_limits("gpt", updates.fetch_add(1) % 2 == 0 ? v2 : v1);
    }
  });
  // Run at least kIters rounds and until the updater has swapped the config many times (it
  // may start late on a loaded machine); the cap keeps a starved updater from hanging us.
  constexpr int kIters = 5000;
  constexpr int kMaxIters = 150'000;
  constexpr int kMinUpdates = 200;
  int iters = 0;
  int admitted = 0;
  for (; iters < kMaxIters && (iters < kIters || updates.load() < kMinUpdates); ++iters) {
    for (int j = 0; j < 3; ++j) {
      Lease l = a.try_acquire("e", "gpt", {{"rpd", 1}});
      if (l) ++admitted;
      l.commit();
    }
    for (auto& o : others) (void)o->stats("x", "gpt");
  }
  stop.store(true);
  updater.join();
  ASSERT_GE(updates.load(), kMinUpdates) << "the updater thread never got to run";
  EXPECT_EQ(admitted, 3 * iters);
  EXPECT_EQ(available(a, "e", "gpt", "rpd"), 1'000'000 - 3 * iters);
  EXPECT_EQ(available(a, "e", "gpt", "rpd", "org"), 1'000'000 - 3 * iters);
}

// Verifies limits kept in the store (ConfigMode::store) stay safe and exact under races: four
// threads admit on limiter A while limiter B rewrites the shared limits in the store, the
// clock moves past A's config_ttl (A reads the store again) and A's cache is invalidated. Every
// request fits either configuration, so all are admitted and counted exactly once.
TEST(Stress, StoreConfigRefreshesRacingWithAdmission) {
  ManualClock clock(kStart);
  MemoryStore store;
  LimiterOptions o;
  o.config = ConfigMode::store;
  o.config_ttl = 10;
  Limiter a(store, clock, o);
  Limiter b(store, clock, o);
  // Calendar windows: the clock's steps refill nothing (the UTC day ends 6,400 s later).
  const std::vector<Limit> v1 = {Limit::daily("rpd", 1'000'000)};
  const std::vector<Limit> v2 = {Limit::daily("rpd", 1'000'000), Limit::daily("tpd", 5)};
  b.set_limits("gpt", v1);
  b.set_parent("e0", "org");
  b.set_parent("e1", "org");
  std::atomic<bool> stop{false};
  std::atomic<int> updates{0};
  std::thread updater([&] {
    while (!stop.load()) {
      const int n = updates.fetch_add(1);
      b.set_limits("gpt", n % 2 == 0 ? v2 : v1);
      clock.advance(7);
      if (n % 16 == 0) a.invalidate_config();
    }
  });
  constexpr int kWorkers = 4;
  constexpr int kIters = 2000;
  std::atomic<int> admitted{0};
  std::vector<std::thread> workers;
  for (int w = 0; w < kWorkers; ++w) {
    workers.emplace_back([&, w] {
      const std::string entity = cat("e", w % 2);
      for (int i = 0; i < kIters; ++i) {
        Lease l = a.try_acquire(entity, "gpt", {{"rpd", 1}});
        if (l) admitted.fetch_add(1);
        l.commit();
      }
    });
  }
  for (auto& t : workers) t.join();
  stop.store(true);
  updater.join();
  EXPECT_EQ(admitted.load(), kWorkers * kIters);
  EXPECT_EQ(available(a, "e0", "gpt", "rpd", "org"), 1'000'000 - kWorkers * kIters);
  const CacheStats st = a.cache_stats();
  EXPECT_GT(st.misses, 0u);
  EXPECT_EQ(st.stale, 0u);
}

// Verifies try_acquire_async from 8 threads on a store that answers on an I/O thread of its
// own, while another thread keeps replacing the configuration (so plans and snapshots the
// requests were planned from are dropped before the answers come): a shared parent admits
// exactly its capacity of units and of concurrency slots, each user's bucket is charged
// exactly what it was admitted, no callback runs on the calling thread, and the leases the
// callbacks handed over end correctly on the test thread.
TEST(Stress, AsyncAcquiresAnsweredOnAnIoThreadAreExact) {
  ManualClock clock(kStart);
  test::FaultStore store({.name = "deferred", .defer_async = true});
  store.start_io_thread();
  Limiter limiter(store, clock);
  constexpr std::int64_t kUserCap = 400;  // 8 * 400 > kOrgCap: the parent runs out first
  constexpr std::int64_t kOrgCap = 2000;
  constexpr std::int64_t kOrgSlots = 16;
  constexpr int kUnits = 600;  // per thread
  constexpr int kSlotTries = 40;
  const std::vector<Limit> v1 = {Limit::per_day("rpd", kUserCap)};
  const std::vector<Limit> v2 = {Limit::per_day("rpd", kUserCap), Limit::per_day("tpd", 5)};
  limiter.set_limits("gpt", v1);
  limiter.set_entity_limits("org", "gpt", {Limit::per_day("rpd", kOrgCap)});
  limiter.set_limits("slots", {Limit::concurrency("inflight", 100)});
  limiter.set_entity_limits("org", "slots", {Limit::concurrency("inflight", kOrgSlots)});
  for (int w = 0; w < kThreads; ++w) limiter.set_parent(cat("user-", w), "org");

  struct Got {
    std::mutex mu;
    std::vector<Lease> units;
    std::vector<Lease> slots;
  };
  std::vector<Got> got(kThreads);
  std::atomic<int> answered{0};
  std::atomic<int> on_caller{0};  // callbacks run on the thread that called
  std::atomic<bool> stop{false};
  std::atomic<int> updates{0};
  std::thread updater([&] {
    while (!stop.load()) limiter.set_limits("gpt", updates.fetch_add(1) % 2 == 0 ? v2 : v1);
  });
  std::barrier start(kThreads);
  std::vector<std::thread> workers;
  for (int w = 0; w < kThreads; ++w) {
    workers.emplace_back([&, w] {
      const std::string user = cat("user-", w);
      const std::thread::id self = std::this_thread::get_id();
      Got& mine = got[static_cast<std::size_t>(w)];
      start.arrive_and_wait();
      for (int i = 0; i < kUnits + kSlotTries; ++i) {
        const bool slot = i % 16 == 0 && i / 16 < kSlotTries;
        limiter.try_acquire_async(user, slot ? "slots" : "gpt",
                                  slot ? Amounts{} : Amounts{{"rpd", 1}}, [&, self, slot](Lease l) {
                                    if (std::this_thread::get_id() == self) on_caller.fetch_add(1);
                                    {
                                      std::lock_guard g(mine.mu);
                                      (slot ? mine.slots : mine.units).push_back(std::move(l));
                                    }
                                    answered.fetch_add(1);
                                  });
      }
    });
  }
  for (auto& t : workers) t.join();
  const int total = kThreads * (kUnits + kSlotTries);
  const bool all = test::spin_until([&] { return answered.load() == total; }, "every answer");
  stop.store(true);
  updater.join();
  store.stop_io_thread();
  ASSERT_TRUE(all) << answered.load() << " of " << total;
  EXPECT_EQ(on_caller.load(), 0);
  EXPECT_EQ(store.queued(), static_cast<std::size_t>(total));

  std::int64_t units = 0;
  std::int64_t slots = 0;
  int bad_codes = 0;
  for (int w = 0; w < kThreads; ++w) {
    Got& g = got[static_cast<std::size_t>(w)];
    std::int64_t mine = 0;
    for (Lease& l : g.units) {
      if (l) {
        ++mine;
        EXPECT_EQ(l.entity(), cat("user-", w));
      } else if (l.decision().code != Code::rate_exceeded) {
        ++bad_codes;
      }
    }
    for (Lease& l : g.slots) {
      if (l) {
        ++slots;
        EXPECT_TRUE(l.active());
      } else if (l.decision().code != Code::concurrency_exceeded) {
        ++bad_codes;
      }
    }
    EXPECT_LE(mine, kUserCap);
    units += mine;
    for (Lease& l : g.units) l.commit();
    EXPECT_EQ(available(limiter, cat("user-", w), "gpt", "rpd"), kUserCap - mine);
  }
  EXPECT_EQ(units, kOrgCap);
  EXPECT_EQ(slots, kOrgSlots);
  EXPECT_EQ(bad_codes, 0);
  EXPECT_EQ(available(limiter, "org", "gpt", "rpd"), 0);
  EXPECT_EQ(available(limiter, "org", "slots", "inflight"), 0);
  for (Got& g : got) {
    for (Lease& l : g.slots) l.rollback();  // every slot comes back
  }
  EXPECT_EQ(available(limiter, "org", "slots", "inflight"), kOrgSlots);
}

}  // namespace
}  // namespace admit
