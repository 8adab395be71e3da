// Shared adaptation (LimiterOptions::adaptation): two Limiters on one store stand for two
// processes of a fleet. What one learns (discovered limits, an adaptive limit's AIMD rate) is
// used by the other within adaptation_refresh, read through its Clock (a ManualClock here);
// the newest observation of a key wins, a decrease is never undone by an increase made before
// it was seen, values expire when nobody writes them, and the hot path reads the store once per
// interval, never per decision. The same cases on every store: tests/store/conformance_test.cpp.
#include <gtest/gtest.h>

#include <atomic>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "admit/core/clock.hpp"
#include "admit/core/error.hpp"
#include "admit/core/limit.hpp"
#include "admit/limiter.hpp"
#include "admit/store/memory_store.hpp"
#include "support/fault_store.hpp"
#include "support/test_support.hpp"

namespace admit {
namespace {

using test::FaultStore;
using test::FaultStoreOptions;
using test::kStart;

constexpr Micros kSec = kMicrosPerSecond;

LimiterOptions shared_options() {
  LimiterOptions o;
  o.adaptation = AdaptationMode::store;
  o.adaptation_refresh = kSec;
  o.adaptation_ttl = 60 * kSec;
  return o;
}

FaultStoreOptions learned_caps(StoreCapabilities caps) {
  FaultStoreOptions o;
  o.capabilities = caps;
  return o;
}

/// The AIMD rate `limit` of (entity, resource) has in `l`'s adaptation(); nullopt if none.
std::optional<double> aimd_rate(const Limiter& l, std::string_view entity,
                                std::string_view resource, std::string_view limit) {
  for (const auto& r : l.adaptation().aimd) {
    if (r.entity == entity && r.resource == resource && r.limit == limit) return r.rate;
  }
  return std::nullopt;
}

const Limit kAimd = Limit::adaptive("aimd",
                                    {.max_rate = 100,
                                     .initial_rate = 40,
                                     .slow_start_threshold = 20,
                                     .additive_increase = 1,
                                     .multiplicative_decrease = 0.5,
                                     .min_rate = 1},
                                    100);

// Verifies the mode: automatic shares on a store shared by processes that keeps learned state
// (distributed or durable), not on a MemoryStore; store is refused on a store without learned
// state; the options are checked.
TEST(SharedAdaptation, AutomaticSharesOnSharedStoresOnly) {
  ManualClock clock(kStart);
  MemoryStore memory;
  EXPECT_FALSE(Limiter(memory, clock).shares_adaptation());
  EXPECT_FALSE(Limiter(memory, clock).adaptation().shared);
  EXPECT_TRUE(Limiter(memory, clock, shared_options()).shares_adaptation());

  FaultStore redis_like(learned_caps({.distributed = true, .learned = true}));
  FaultStore sqlite_like(learned_caps({.durable = true, .learned = true}));
  FaultStore no_learned(learned_caps({.distributed = true}));
  EXPECT_TRUE(Limiter(redis_like, clock).shares_adaptation());
  EXPECT_TRUE(Limiter(sqlite_like, clock).shares_adaptation());
  EXPECT_FALSE(Limiter(no_learned, clock).shares_adaptation());
  LimiterOptions local;
  local.adaptation = AdaptationMode::local;
  EXPECT_FALSE(Limiter(redis_like, clock, local).shares_adaptation());
  EXPECT_THROW(Limiter(no_learned, clock, shared_options()), ValidationError);

  LimiterOptions bad = shared_options();
  bad.adaptation_refresh = 0;
  EXPECT_THROW(Limiter(memory, clock, bad), ValidationError);
  bad = shared_options();
  bad.adaptation_ttl = 2 * bad.adaptation_refresh - 1;
  EXPECT_THROW(Limiter(memory, clock, bad), ValidationError);

  // Local mode writes nothing to the store.
  Limiter l(memory, clock);
  l.set_discovered_limits("acct", "m", {Limit::per_minute("rpm", 10)});
  EXPECT_TRUE(memory.list_learned(memory.open_namespace("default"), kStart).empty());
}

// Verifies learned limits written by one Limiter are used by the other exactly once
// adaptation_refresh has passed since its last read (its Clock), with source discovered and
// reported by adaptation(); a call that changes nothing writes nothing.
TEST(SharedAdaptation, LearnedLimitsReachTheOtherWithinTheRefresh) {
  FaultStore store(learned_caps({.learned = true}));
  ManualClock clock(kStart);
  Limiter a(store, clock, shared_options());
  Limiter b(store, clock, shared_options());
  for (Limiter* l : {&a, &b}) l->set_limits("m", {Limit::per_minute("rpm", 100)});
  using Resolved = std::vector<std::pair<Limit, ConfigSource>>;
  const Resolved configured{{Limit::per_minute("rpm", 100), ConfigSource::resource}};
  EXPECT_EQ(b.resolve("acct", "m"), configured);  // b reads the store now: nothing yet

  const std::uint64_t writes = store.learned_writes;
  a.set_discovered_limits("acct", "m", {Limit::per_minute("rpm", 10)});
  EXPECT_EQ(store.learned_writes, writes + 1) << "written at once";
  const Resolved learned{{Limit::per_minute("rpm", 10), ConfigSource::discovered}};
  EXPECT_EQ(a.resolve("acct", "m"), learned);
  a.set_discovered_limits("acct", "m", {Limit::per_minute("rpm", 10)});
  EXPECT_EQ(store.learned_writes, writes + 1) << "the same set again writes nothing";

  clock.advance(kSec - 1);
  EXPECT_EQ(b.resolve("acct", "m"), configured);
  EXPECT_TRUE(b.discovered_limits("acct", "m").empty());
  clock.advance(1);
  EXPECT_EQ(b.resolve("acct", "m"), learned);
  EXPECT_EQ(b.discovered_limits("acct", "m"), std::vector<Limit>{Limit::per_minute("rpm", 10)});
  const Limiter::Adaptation ad = b.adaptation();
  EXPECT_TRUE(ad.shared);
  EXPECT_EQ(ad.refreshed_at, kStart + kSec);
  ASSERT_EQ(ad.discovered.size(), 1u);
  EXPECT_EQ(ad.discovered[0].entity, "acct");
  EXPECT_EQ(ad.discovered[0].limits, std::vector<Limit>{Limit::per_minute("rpm", 10)});
  // And b's decisions use it: 10 requests, then a denial.
  for (int i = 0; i < 10; ++i) EXPECT_TRUE(b.consume("acct", "m", {{"rpm", 1}}).allowed) << i;
  EXPECT_EQ(b.consume("acct", "m", {{"rpm", 1}}).code, Code::rate_exceeded);
  // b learning the same set makes it its own without a write.
  b.set_discovered_limits("acct", "m", {Limit::per_minute("rpm", 10)});
  EXPECT_EQ(store.learned_writes, writes + 1);
}

// Verifies the newest observation of an (entity, resource) wins everywhere; a Limiter's own set
// is used again (and written again) when the newer one of a Limiter that is gone expires; an
// empty set forgets it across the fleet.
TEST(SharedAdaptation, NewestObservationWinsAndExpires) {
  MemoryStore store;
  ManualClock clock(kStart);
  Limiter a(store, clock, shared_options());
  const std::vector<Limit> old_set{Limit::per_minute("tpm", 1000)};
  const std::vector<Limit> new_set{Limit::per_minute("tpm", 500)};
  a.set_discovered_limits("acct", "m", old_set);
  {
    Limiter b(store, clock, shared_options());
    clock.advance(kSec);
    b.set_discovered_limits("acct", "m", new_set);  // newer: it wins at a's next read
    EXPECT_EQ(b.discovered_limits("acct", "m"), new_set);
    EXPECT_EQ(a.discovered_limits("acct", "m"), new_set);  // a's refresh is due: it reads
    // a writing its own again (a renewal) does not undo the newer set.
    clock.advance(31 * kSec);  // past adaptation_ttl / 2
    EXPECT_EQ(a.discovered_limits("acct", "m"), new_set);
  }                          // b is gone: nobody renews its set
  clock.advance(28 * kSec);  // b wrote at +1 s: its entry expires at +61 s
  EXPECT_EQ(a.discovered_limits("acct", "m"), new_set);
  clock.advance(kSec);
  EXPECT_EQ(a.discovered_limits("acct", "m"), old_set) << "a's own set again";
  Limiter c(store, clock, shared_options());
  EXPECT_EQ(c.discovered_limits("acct", "m"), old_set) << "and written again for the fleet";

  // Forgetting: c forgets, so does a at its next read, until someone learns again.
  c.set_discovered_limits("acct", "m", {});
  EXPECT_TRUE(c.discovered_limits("acct", "m").empty());
  clock.advance(kSec);
  EXPECT_TRUE(a.discovered_limits("acct", "m").empty());
  EXPECT_TRUE(a.adaptation().discovered.empty());
  a.set_discovered_limits("acct", "m", new_set);
  clock.advance(kSec);
  EXPECT_EQ(c.discovered_limits("acct", "m"), new_set);
}

// Verifies the hot path reads the store once per adaptation_refresh, whatever the number of
// decisions; and that keys without learned limits keep their plans (nothing is rebuilt when a
// refresh finds nothing new).
TEST(SharedAdaptation, DecisionsReadTheStoreOncePerRefresh) {
  FaultStore store(learned_caps({.learned = true}));
  ManualClock clock(kStart);
  Limiter l(store, clock, shared_options());
  l.set_limits("m", {Limit::per_second("rps", 1'000'000)});
  for (int i = 0; i < 1000; ++i) ASSERT_TRUE(l.consume("u", "m", {{"rps", 1}}).allowed);
  EXPECT_EQ(store.learned_reads, 1u);
  EXPECT_EQ(store.learned_writes, 0u);
  clock.advance(kSec);
  for (int i = 0; i < 1000; ++i) ASSERT_TRUE(l.consume("u", "m", {{"rps", 1}}).allowed);
  EXPECT_EQ(store.learned_reads, 2u);
  EXPECT_EQ(store.learned_writes, 0u);
}

// Verifies a store that cannot be reached: set_discovered_limits applies here and does not
// throw; refreshes keep what was read last; once the store is back the set is written at the
// next refresh and reaches the other Limiter.
TEST(SharedAdaptation, StoreDownKeepsWhatWasLearned) {
  FaultStore store(learned_caps({.learned = true}));
  ManualClock clock(kStart);
  Limiter a(store, clock, shared_options());
  Limiter b(store, clock, shared_options());
  a.set_discovered_limits("acct", "m", {Limit::per_minute("rpm", 10)});
  EXPECT_FALSE(b.discovered_limits("acct", "m").empty());
  store.down = true;
  a.set_discovered_limits("x", "m", {Limit::per_minute("rpm", 5)});
  EXPECT_EQ(a.discovered_limits("x", "m"), std::vector<Limit>{Limit::per_minute("rpm", 5)});
  clock.advance(kSec);
  EXPECT_FALSE(b.discovered_limits("acct", "m").empty()) << "kept while the store is down";
  EXPECT_TRUE(b.discovered_limits("x", "m").empty());
  EXPECT_EQ(b.adaptation().refreshed_at, kStart);
  store.down = false;
  clock.advance(kSec);
  (void)a.adaptation();  // a's refresh writes what it could not
  EXPECT_EQ(b.discovered_limits("x", "m"), std::vector<Limit>{Limit::per_minute("rpm", 5)});
}

// Verifies an adaptive limit's rate: a decrease on one Limiter is written at its next call and
// taken over by the other at its next refresh, and an increase the other made before it saw
// the decrease does not undo it; increases then travel too; the other reports the fleet's rate
// for a limit it has not used, and a law it makes later starts there.
TEST(SharedAdaptation, AimdDecreaseSlowsTheOtherAndIsNotUndone) {
  MemoryStore store;
  ManualClock clock(kStart);
  Limiter a(store, clock, shared_options());
  Limiter b(store, clock, shared_options());
  Limiter c(store, clock, shared_options());
  for (Limiter* l : {&a, &b, &c}) l->set_limits("m", {kAimd});

  Lease la = a.try_acquire("acct", "m", {});
  Lease lb = b.try_acquire("acct", "m", {});
  ASSERT_TRUE(la);
  ASSERT_TRUE(lb);
  clock.advance(kSec);  // both write 40 at their next refresh
  (void)a.adaptation();
  (void)b.adaptation();
  ASSERT_TRUE(lb.mark_success());  // b: 41, not written yet
  ASSERT_TRUE(la.mark_failure());  // a: 20
  EXPECT_EQ(aimd_rate(a, "acct", "m", "aimd"), 20) << "written at once (no interval to wait)";
  EXPECT_EQ(aimd_rate(b, "acct", "m", "aimd"), 41);
  EXPECT_EQ(aimd_rate(c, "acct", "m", "aimd"), 20) << "c has no law: it reports the fleet's";
  clock.advance(kSec);
  EXPECT_EQ(aimd_rate(b, "acct", "m", "aimd"), 20) << "the decrease wins over b's older increase";

  // b's next success (after it saw the decrease) reaches a at b's next write.
  Lease lb2 = b.try_acquire("acct", "m", {});
  ASSERT_TRUE(lb2.mark_success());
  EXPECT_EQ(aimd_rate(b, "acct", "m", "aimd"), 21);
  EXPECT_EQ(aimd_rate(a, "acct", "m", "aimd"), 20) << "b writes at its next refresh";
  clock.advance(kSec);
  EXPECT_EQ(aimd_rate(b, "acct", "m", "aimd"), 21);
  EXPECT_EQ(aimd_rate(a, "acct", "m", "aimd"), 21);
  // c's first use makes its law at the fleet's rate.
  Lease lc = c.try_acquire("acct", "m", {});
  ASSERT_TRUE(lc);
  EXPECT_EQ(aimd_rate(c, "acct", "m", "aimd"), 21);
  // A request b sent before it took the decrease over fails late: that congestion event was
  // acted on (b's epoch moved with the decrease it took over), nothing decreases.
  EXPECT_FALSE(lb.mark_failure()) << "lb was marked already";
  Lease lb3 = b.try_acquire("acct", "m", {});
  ASSERT_TRUE(lb3.mark_failure());  // a new congestion event: 10.5
  EXPECT_EQ(aimd_rate(b, "acct", "m", "aimd"), 10.5);
  clock.advance(kSec);
  EXPECT_EQ(aimd_rate(a, "acct", "m", "aimd"), 10.5);
  EXPECT_EQ(aimd_rate(c, "acct", "m", "aimd"), 10.5);
}

// Verifies concurrent decreases of one generation by two Limiters (one overload seen by both)
// count as one: both end at the higher of the two cut rates, not at a quarter.
TEST(SharedAdaptation, ConcurrentDecreasesCountOnce) {
  MemoryStore store;
  ManualClock clock(kStart);
  Limiter a(store, clock, shared_options());
  Limiter b(store, clock, shared_options());
  for (Limiter* l : {&a, &b}) l->set_limits("m", {kAimd});
  Lease la = a.try_acquire("acct", "m", {});
  Lease lb = b.try_acquire("acct", "m", {});
  Lease la2 = a.try_acquire("acct", "m", {});
  clock.advance(kSec);
  (void)a.adaptation();
  (void)b.adaptation();
  ASSERT_TRUE(la2.mark_success());  // a: 41
  ASSERT_TRUE(la.mark_failure());   // a: 20.5
  ASSERT_TRUE(lb.mark_failure());   // b: 20
  (void)a.adaptation();
  (void)b.adaptation();
  clock.advance(kSec);
  EXPECT_EQ(aimd_rate(a, "acct", "m", "aimd"), 20.5);
  EXPECT_EQ(aimd_rate(b, "acct", "m", "aimd"), 20.5);
}

// Verifies threads deciding, marking outcomes, learning limits and reading adaptation() on two
// Limiters of one store while the clock moves (refreshes racing decisions, writes racing
// reads; ThreadSanitizer checks the locking): every rate stays within the limit's bounds, and
// once the traffic stops both Limiters end with the same rate and the same learned limits.
TEST(SharedAdaptation, ConcurrentUseConverges) {
  MemoryStore store;
  ManualClock clock(kStart);
  Limiter a(store, clock, shared_options());
  Limiter b(store, clock, shared_options());
  for (Limiter* l : {&a, &b}) l->set_limits("m", {kAimd, Limit::per_second("rps", 1'000'000)});
  std::atomic<bool> stop{false};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      Limiter& l = t % 2 == 0 ? a : b;
      for (int i = 0; i < 400; ++i) {
        Lease lease = l.try_acquire("acct", "m", {{"rps", 1}});
        if (lease) {
          if ((i + t) % 11 == 0) {
            (void)lease.mark_failure();
          } else {
            (void)lease.mark_success();
          }
        }
        if (i % 50 == t) {
          l.set_discovered_limits("acct", "m", {Limit::per_second("rps", 1000 + (i + t) % 3)});
        }
        if (i % 7 == 0) {
          for (const auto& r : l.adaptation().aimd) {
            EXPECT_GE(r.rate, 1.0);
            EXPECT_LE(r.rate, 100.0);
          }
        }
      }
    });
  }
  std::thread ticker([&] {
    while (!stop.load()) {
      clock.advance(kSec / 4);
      std::this_thread::yield();
    }
  });
  for (auto& th : threads) th.join();
  stop = true;
  ticker.join();
  // Quiet: a's and b's next refreshes write what is left; then each reads the other's.
  for (int round = 0; round < 3; ++round) {
    clock.advance(kSec);
    (void)a.adaptation();
    (void)b.adaptation();
  }
  const auto ra = aimd_rate(a, "acct", "m", "aimd");
  const auto rb = aimd_rate(b, "acct", "m", "aimd");
  ASSERT_TRUE(ra);
  ASSERT_TRUE(rb);
  EXPECT_EQ(*ra, *rb);
  EXPECT_EQ(a.discovered_limits("acct", "m"), b.discovered_limits("acct", "m"));
  EXPECT_FALSE(a.discovered_limits("acct", "m").empty());
}

}  // namespace
}  // namespace admit
