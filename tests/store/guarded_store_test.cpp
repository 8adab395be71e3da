// GuardedStore: the unavailable-store policies (fail_closed, fail_open, local_fallback), the
// fallback's limits divided by the fleet size (compared result by result with a MemoryStore
// holding hand-divided limits), recovery, and the decorator's delegation; first with a test
// double that fails on demand, then against a real redis-server that this test starts itself
// (on a free port), kills mid-run and restarts on the same port. Without redis-server on PATH
// the Redis cases skip, or fail when ADMIT_REQUIRE_REDIS=1.
#include "admit/store/guarded_store.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <memory>
#include <optional>
#include <ostream>
#include <random>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "admit/core/clock.hpp"
#include "admit/core/error.hpp"
#include "admit/limiter.hpp"
#include "admit/store/memory_store.hpp"
#include "admit/store/redis_client.hpp"
#include "admit/store/redis_store.hpp"
#include "support/fault_store.hpp"
#include "support/redis_env.hpp"
#include "support/store_ops.hpp"
#include "support/temp_dir.hpp"
#include "support/test_support.hpp"

namespace admit {

// gtest prints parameters with it ("fail_open", not "1-byte object <01>").
void PrintTo(UnavailablePolicy p, std::ostream* os) { *os << to_string(p); }

namespace {

using namespace std::chrono_literals;
using test::cat;
using test::kStart;
using test::spin_until;
constexpr Micros kSec = kMicrosPerSecond;

// ------------------------------------------------------------------ test double and helpers

/// A MemoryStore whose ops throw StoreUnavailable while `down` is set.
test::FaultStoreOptions flaky_options() {
  return {.name = "flaky", .capabilities = {.durable = true}, .down_reason = "flaky: down"};
}

/// A MemoryStore whose apply_async() answers when the test says.
test::FaultStoreOptions deferred_options() { return {.name = "deferred", .defer_async = true}; }

/// The outcome of a Limiter call. The Limiter turns StoreUnavailable into a decision
/// (Code::store_unavailable); should it let one escape, the call reports `escaped` instead of
/// throwing, so the test says what happened and its RAII guards still run.
struct Outcome {
  Decision d;
  bool escaped = false;  ///< StoreUnavailable came out of the Limiter
};

Outcome escaped(const StoreUnavailable& e) {
  Outcome o;
  o.d.code = Code::store_unavailable;
  o.d.reason = e.what();
  o.escaped = true;
  return o;
}

/// try_acquire + commit.
Outcome take(Limiter& limiter, std::string_view entity, std::string_view resource,
             const Amounts& amounts, AcquireOptions options = {}) {
  try {
    Lease lease = limiter.try_acquire(entity, resource, amounts, options);
    Outcome o{lease.decision(), false};
    lease.commit();
    return o;
  } catch (const StoreUnavailable& e) {
    return escaped(e);
  }
}

Outcome decide(Limiter& limiter, std::string_view entity, std::string_view resource,
               const Amounts& amounts) {
  try {
    return Outcome{limiter.decide(entity, resource, amounts), false};
  } catch (const StoreUnavailable& e) {
    return escaped(e);
  }
}

/// available of `limit` in a decision's stats; -1 if absent.
std::int64_t available_of(const Decision& d, std::string_view limit) {
  for (const auto& st : d.stats) {
    if (st.limit == limit) return st.available;
  }
  return -1;
}

GuardedStoreOptions policy(UnavailablePolicy p, int fleet = 1) {
  GuardedStoreOptions o;
  o.policy = p;
  o.fleet_size = fleet;
  return o;
}

// ------------------------------------------------------------------ decorator logic

TEST(GuardedStore, OptionsAndDelegation) {
  test::FaultStore flaky(flaky_options());
  EXPECT_THROW((void)GuardedStore(flaky, policy(UnavailablePolicy::local_fallback, 0)),
               ValidationError);
  EXPECT_THROW((void)GuardedStore(std::unique_ptr<Store>{}), ValidationError);
  EXPECT_EQ(to_string(UnavailablePolicy::fail_closed), "fail_closed");
  EXPECT_EQ(to_string(UnavailablePolicy::fail_open), "fail_open");
  EXPECT_EQ(to_string(UnavailablePolicy::local_fallback), "local_fallback");

  GuardedStore g(flaky);
  EXPECT_EQ(g.name(), "guarded(flaky)");
  EXPECT_TRUE(g.capabilities().durable);
  EXPECT_EQ(&g.primary(), &flaky);
  EXPECT_EQ(g.options().policy, UnavailablePolicy::fail_closed);
  EXPECT_EQ(g.options().fleet_size, 1);

  GuardedStore owning(std::make_unique<MemoryStore>(), policy(UnavailablePolicy::fail_open));
  EXPECT_EQ(owning.name(), "guarded(memory)");

  // Healthy: everything goes to the primary, nothing is counted.
  ManualClock clock;
  Limiter limiter(g, clock);
  limiter.set_limits("m", {Limit::per_minute("rpm", 2)});
  EXPECT_TRUE(take(limiter, "u", "m", {{"rpm", 1}}).d.allowed);
  EXPECT_TRUE(take(limiter, "u", "m", {{"rpm", 1}}).d.allowed);
  EXPECT_EQ(take(limiter, "u", "m", {{"rpm", 1}}).d.code, Code::rate_exceeded);
  EXPECT_EQ(flaky.served.load(), 3u);
  EXPECT_EQ(g.size(), flaky.size());
  EXPECT_EQ(g.size(), 1u);
  EXPECT_FALSE(g.degraded());
  const GuardedStoreStats s = g.stats();
  EXPECT_EQ(s.primary_failures, 0u);
  EXPECT_EQ(s.fail_open_allowed, 0u);
  EXPECT_EQ(s.fallback_ops, 0u);
  EXPECT_EQ(s.recoveries, 0u);
  EXPECT_EQ(g.fallback().size(), 0u);
}

TEST(GuardedStore, FailClosedRethrowsAndRecovers) {
  test::FaultStore flaky(flaky_options());
  GuardedStore g(flaky, policy(UnavailablePolicy::fail_closed));
  const Namespace ns = g.open_namespace("t");
  const Limit rpm = Limit::per_minute("rpm", 10);
  const std::vector<KeyParts> keys = {{"u", "m"}};
  const std::vector<OpItem> items = {OpItem{0, &rpm, 1, 0}};

  EXPECT_TRUE(test::apply_op(g, ns, OpKind::acquire, kStart, keys, items).ok);
  for (int round = 1; round <= 2; ++round) {
    flaky.down = true;
    EXPECT_THROW(test::apply_op(g, ns, OpKind::acquire, kStart, keys, items), StoreUnavailable);
    EXPECT_THROW(test::apply_op(g, ns, OpKind::release, kStart, keys, items), StoreUnavailable);
    EXPECT_TRUE(g.degraded());
    EXPECT_EQ(g.stats().primary_failures, 2u * static_cast<std::uint64_t>(round));
    EXPECT_EQ(g.stats().recoveries, static_cast<std::uint64_t>(round) - 1);
    flaky.down = false;
    const auto a = test::apply_op(g, ns, OpKind::acquire, kStart, keys, items);
    EXPECT_TRUE(a.ok);
    EXPECT_EQ(a.items[0].available, 10 - 1 - round);  // only what the primary served counts
    EXPECT_FALSE(g.degraded());
    EXPECT_EQ(g.stats().recoveries, static_cast<std::uint64_t>(round));
  }
  EXPECT_EQ(g.stats().fallback_ops, 0u);
  EXPECT_EQ(g.stats().fail_open_allowed, 0u);
  EXPECT_EQ(g.fallback().size(), 0u);
}

// The Limiter's side of fail_closed: a StoreUnavailable from the store becomes a Decision with
// Code::store_unavailable (try_acquire, decide, record_usage) and a RateLimitExceeded carrying
// it (acquire, which must leave its wait queue), never an exception escaping.
TEST(GuardedStore, FailClosedLimiterDecision) {
  test::FaultStore flaky(flaky_options());
  GuardedStore g(flaky, policy(UnavailablePolicy::fail_closed));
  ManualClock clock;
  Limiter limiter(g, clock);
  limiter.set_limits("m", {Limit::per_minute("rpm", 10)});
  flaky.down = true;
  Lease lease;
  try {
    lease = limiter.try_acquire("u", "m", {{"rpm", 1}});
  } catch (const StoreUnavailable& e) {
    FAIL() << "Limiter::try_acquire let StoreUnavailable escape (" << e.what()
           << "); it must return a Decision with Code::store_unavailable";
  }
  EXPECT_FALSE(lease.allowed());
  EXPECT_FALSE(lease.active());
  EXPECT_EQ(lease.decision().code, Code::store_unavailable);
  EXPECT_EQ(limiter.decide("u", "m", {{"rpm", 1}}).code, Code::store_unavailable);
  EXPECT_EQ(limiter.record_usage("u", "m", {{"rpm", 1}}).code, Code::store_unavailable);
  try {
    (void)limiter.acquire("u", "m", {{"rpm", 1}}, 1s);
    ADD_FAILURE() << "acquire() was allowed with the store down";
  } catch (const RateLimitExceeded& e) {
    EXPECT_EQ(e.decision().code, Code::store_unavailable);
  }
  EXPECT_EQ(limiter.waiting("u", "m"), 0u);  // acquire() left its queue
  EXPECT_TRUE(g.degraded());
  flaky.down = false;
  EXPECT_TRUE(take(limiter, "u", "m", {{"rpm", 1}}).d.allowed);  // no queue_ahead left behind
  EXPECT_FALSE(g.degraded());
}

TEST(GuardedStore, FailOpenAllowsEverythingAndCountsIt) {
  test::FaultStore flaky(flaky_options());
  GuardedStore g(flaky, policy(UnavailablePolicy::fail_open));
  ManualClock clock;
  Limiter limiter(g, clock);
  limiter.set_limits(
      "m", {Limit::per_minute("rpm", 2), Limit::daily("tpd", 100), Limit::concurrency("conc", 1)});
  AcquireOptions with_stats;
  with_stats.with_stats = true;

  flaky.down = true;
  std::vector<Lease> held;  // each holds a concurrency slot: 5 > 1 slot, all allowed
  for (int i = 0; i < 5; ++i) {
    Lease l = limiter.try_acquire("u", "m", {{"rpm", 1}, {"tpd", 60}}, with_stats);
    ASSERT_TRUE(l.allowed()) << i << ": " << l.decision().reason;
    // Results report the limits full.
    EXPECT_EQ(available_of(l.decision(), "rpm"), 2);
    EXPECT_EQ(available_of(l.decision(), "tpd"), 100);
    EXPECT_EQ(available_of(l.decision(), "conc"), 1);
    held.push_back(std::move(l));
  }
  const Decision d = limiter.decide("u", "m", {{"rpm", 2}, {"tpd", 100}});
  EXPECT_TRUE(d.allowed);
  EXPECT_EQ(limiter.record_usage("u", "m", {{"rpm", 5}}).code, Code::ok);  // not counted
  // A lease taken while open can be adjusted (its window_end is the current window's).
  EXPECT_TRUE(held[0].adjust({{"tpd", 10}}).allowed);
  for (Lease& l : held) l.rollback();  // release ops, answered open
  held.clear();

  GuardedStoreStats s = g.stats();
  EXPECT_EQ(s.fail_open_allowed, 6u);  // 5 acquires + 1 decide
  EXPECT_EQ(s.fallback_ops, 0u);
  EXPECT_GE(s.primary_failures, 7u);
  EXPECT_TRUE(g.degraded());
  EXPECT_EQ(flaky.served.load(), 0u);
  EXPECT_EQ(flaky.inner.size(), 0u);  // nothing was counted anywhere
  EXPECT_EQ(g.fallback().size(), 0u);

  flaky.down = false;  // recovery: the primary's limits apply again, from its own state
  EXPECT_TRUE(take(limiter, "u", "m", {{"rpm", 1}}).d.allowed);
  EXPECT_FALSE(g.degraded());
  EXPECT_EQ(g.stats().recoveries, 1u);
  EXPECT_TRUE(take(limiter, "u", "m", {{"rpm", 1}}).d.allowed);
  EXPECT_EQ(take(limiter, "u", "m", {{"rpm", 1}}).d.code, Code::rate_exceeded);
  EXPECT_EQ(g.stats().fail_open_allowed, 6u);
}

// local_fallback with fleet_size 3: every limit divided, enforced exactly.
TEST(GuardedStore, LocalFallbackDividesLimitsByFleet) {
  test::FaultStore flaky(flaky_options());
  GuardedStore g(flaky, policy(UnavailablePolicy::local_fallback, 3));
  ManualClock clock;
  Limiter limiter(g, clock);
  limiter.set_limits("r", {Limit::per_minute("rpm", 12)});   // 4 burst, 1 per 15 s
  limiter.set_limits("w", {Limit::daily("tpd", 1000)});      // 333 per day
  limiter.set_limits("c", {Limit::concurrency("conc", 5)});  // 1 slot
  limiter.set_limits("t", {Limit::per_minute("tiny", 2)});   // at least 1 unit; 1 per 90 s
  limiter.set_limits("u", {Limit::per_minute("rpm", 12), Limit::per_minute("none", 0)});
  flaky.down = true;

  // rate: capacity 12 / 3 = 4, then exactly one unit per 3 * 5 s.
  for (int i = 0; i < 4; ++i) EXPECT_TRUE(take(limiter, "a", "r", {{"rpm", 1}}).d.allowed) << i;
  Decision d = take(limiter, "a", "r", {{"rpm", 1}}).d;
  EXPECT_EQ(d.code, Code::rate_exceeded);
  EXPECT_EQ(d.retry_after, 15 * kSec);
  clock.advance(15 * kSec - 1);
  EXPECT_EQ(take(limiter, "a", "r", {{"rpm", 1}}).d.code, Code::rate_exceeded);
  clock.advance(1);
  EXPECT_TRUE(take(limiter, "a", "r", {{"rpm", 1}}).d.allowed);
  EXPECT_EQ(take(limiter, "a", "r", {{"rpm", 5}}).d.code, Code::exceeds_capacity);  // 5 > 4

  // window: 1000 / 3 = 333 per day.
  EXPECT_TRUE(take(limiter, "a", "w", {{"tpd", 300}}).d.allowed);
  d = take(limiter, "a", "w", {{"tpd", 34}}).d;
  EXPECT_EQ(d.code, Code::window_exceeded);
  EXPECT_TRUE(take(limiter, "a", "w", {{"tpd", 33}}).d.allowed);
  EXPECT_EQ(take(limiter, "b", "w", {{"tpd", 334}}).d.code, Code::exceeds_capacity);

  // concurrency: 5 / 3 = 1 slot.
  {
    Lease first = limiter.try_acquire("a", "c", {});
    ASSERT_TRUE(first.allowed());
    EXPECT_EQ(take(limiter, "a", "c", {}).d.code, Code::concurrency_exceeded);
    first.rollback();
    EXPECT_TRUE(take(limiter, "a", "c", {}).d.allowed);
  }

  // 2 / 3 rounds down to 0: at least 1 unit, and the rate divided exactly (1 per 90 s).
  EXPECT_TRUE(take(limiter, "a", "t", {{"tiny", 1}}).d.allowed);
  d = take(limiter, "a", "t", {{"tiny", 1}}).d;
  EXPECT_EQ(d.code, Code::rate_exceeded);
  EXPECT_EQ(d.retry_after, 90 * kSec);

  // An unlimited limit stays unlimited (the Limiter never sends it; the store keeps it so).
  EXPECT_TRUE(take(limiter, "a", "u", {{"rpm", 1}, {"none", 1000}}).d.allowed);

  const GuardedStoreStats s = g.stats();
  EXPECT_GT(s.fallback_ops, 0u);
  EXPECT_EQ(s.fallback_ops, s.primary_failures);  // every failed op went to the fallback
  EXPECT_EQ(s.fail_open_allowed, 0u);
  EXPECT_TRUE(g.degraded());
  EXPECT_EQ(flaky.served.load(), 0u);
  EXPECT_EQ(flaky.inner.size(), 0u);
  EXPECT_GT(g.fallback().size(), 0u);
}

// Verifies shadow limits keep shadow through GuardedStore: on the primary, and in the local
// fallback, whose divided windows and slots stay shadow (reported past the fleet's share,
// never refusing), next to an enforced limit that still refuses.
TEST(GuardedStore, ShadowLimitsStayShadowInTheFallback) {
  test::FaultStore flaky(flaky_options());
  GuardedStore g(flaky, policy(UnavailablePolicy::local_fallback, 2));
  ManualClock clock;
  Limiter limiter(g, clock);
  limiter.set_limits(
      "m", {Limit::per_minute("rpm", 4).with_shadow(), Limit::daily("rpd", 4).with_shadow(),
            Limit::concurrency("conc", 2).with_shadow(), Limit::per_minute("tpm", 100)});
  // The primary: rpm 4 admits 4, the fifth is reported.
  for (int i = 0; i < 4; ++i) {
    EXPECT_TRUE(take(limiter, "a", "m", {{"rpm", 1}}).d.shadow_violations.empty()) << i;
  }
  Decision d = take(limiter, "a", "m", {{"rpm", 1}}).d;
  EXPECT_TRUE(d.allowed);
  ASSERT_EQ(d.shadow_violations.size(), 1u);
  EXPECT_EQ(d.shadow_violations[0].limit, "rpm");

  flaky.down = true;  // the fallback: each limit halved
  EXPECT_TRUE(take(limiter, "b", "m", {{"rpm", 2}, {"rpd", 2}}).d.shadow_violations.empty());
  d = take(limiter, "b", "m", {{"rpm", 1}, {"rpd", 1}, {"tpm", 10}}).d;
  EXPECT_TRUE(d.allowed) << d.reason;
  ASSERT_EQ(d.shadow_violations.size(), 2u);
  EXPECT_EQ(d.shadow_violations[0].limit, "rpm");
  EXPECT_EQ(d.shadow_violations[1].limit, "rpd");
  Lease first = limiter.try_acquire("b", "m", {});
  ASSERT_TRUE(first.allowed());
  EXPECT_TRUE(first.decision().shadow_violations.empty());
  Lease second = limiter.try_acquire("b", "m", {});  // 2 / 2 = 1 slot: reported, admitted
  ASSERT_TRUE(second.allowed());
  ASSERT_EQ(second.decision().shadow_violations.size(), 1u);
  EXPECT_EQ(second.decision().shadow_violations[0].limit, "conc");
  second.commit();
  first.commit();
  d = take(limiter, "b", "m", {{"tpm", 40}}).d;  // 100 / 2 = 50, 10 taken; then a refusal
  EXPECT_TRUE(d.allowed);
  d = take(limiter, "b", "m", {{"rpm", 1}, {"tpm", 1}}).d;
  EXPECT_EQ(d.code, Code::rate_exceeded);
  EXPECT_EQ(d.violations.size(), 1u);
  EXPECT_EQ(d.shadow_violations.size(), 1u);
  EXPECT_GT(g.stats().fallback_ops, 0u);
}

TEST(GuardedStore, LocalFallbackDividesAdaptiveLimits) {
  test::FaultStore flaky(flaky_options());
  GuardedStore g(flaky, policy(UnavailablePolicy::local_fallback, 2));
  ManualClock clock;
  Limiter limiter(g, clock);
  AimdOptions aimd;
  aimd.max_rate = 100;
  aimd.initial_rate = 10;  // 100 ms per unit; with fleet 2: 200 ms
  limiter.set_limits("m", {Limit::adaptive("ad", aimd, 4)});
  flaky.down = true;
  EXPECT_TRUE(take(limiter, "u", "m", {}).d.allowed);  // burst 4 / 2 = 2
  EXPECT_TRUE(take(limiter, "u", "m", {}).d.allowed);
  const Decision d = take(limiter, "u", "m", {}).d;
  EXPECT_EQ(d.code, Code::rate_exceeded);
  EXPECT_EQ(d.retry_after, 200'000);
}

/// The limits a MemoryStore would need to enforce what the fallback enforces with fleet 4.
struct Scaled {
  Limit odd = Limit::custom("odd", 10, 3, 7s);  // T = 7/3 s
  Limit tpd = Limit::daily("tpd", 1000, "06:30", "Europe/Berlin");
  Limit conc = Limit::concurrency("conc", 9);
  Limit odd4 = Limit::custom("odd", 2, 3, 28s);  // 10 / 4 = 2, T * 4
  Limit tpd4 = Limit::daily("tpd", 250, "06:30", "Europe/Berlin");
  Limit conc4 = Limit::concurrency("conc", 2);
};

void expect_same(const test::Applied& want, const test::Applied& got, const std::string& what) {
  ASSERT_EQ(want.items.size(), got.items.size()) << what;
  EXPECT_EQ(want.ok, got.ok) << what;
  for (std::size_t i = 0; i < want.items.size(); ++i) {
    const ItemResult& w = want.items[i];
    const ItemResult& r = got.items[i];
    EXPECT_EQ(w.ok, r.ok) << what << " item " << i;
    EXPECT_EQ(w.never, r.never) << what << " item " << i;
    EXPECT_EQ(w.available, r.available) << what << " item " << i;
    EXPECT_EQ(w.retry_after, r.retry_after) << what << " item " << i;
    EXPECT_EQ(w.reset_after, r.reset_after) << what << " item " << i;
    EXPECT_EQ(w.window_end, r.window_end) << what << " item " << i;
    EXPECT_EQ(w.held, r.held) << what << " item " << i;
  }
}

// Random operation sequences: the fallback with the configured limits and fleet 4 answers
// exactly like a MemoryStore given the divided limits by hand.
TEST(GuardedStore, LocalFallbackMatchesHandDividedLimits) {
  const std::uint64_t seed = test::test_seed();
  SCOPED_TRACE(test::seed_note(seed));
  std::mt19937_64 rng(seed);
  auto pick = [&rng](std::int64_t lo, std::int64_t hi) {
    return std::uniform_int_distribution<std::int64_t>(lo, hi)(rng);
  };
  test::FaultStore flaky(flaky_options());
  flaky.down = true;
  GuardedStore g(flaky, policy(UnavailablePolicy::local_fallback, 4));
  MemoryStore ref;
  const Namespace gns = g.open_namespace("t");
  const Namespace rns = ref.open_namespace("t");
  const Scaled L;
  const std::vector<KeyParts> keys = {{"u", "m"}, {"org", "m"}};
  constexpr OpKind kKinds[] = {OpKind::acquire, OpKind::acquire, OpKind::acquire, OpKind::decide,
                               OpKind::record,  OpKind::adjust,  OpKind::release, OpKind::read,
                               OpKind::clamp,   OpKind::reset};
  Micros now = kStart;
  for (int step = 0; step < 3000; ++step) {
    now += pick(0, 2 * kSec);
    const OpKind kind =
        kKinds[static_cast<std::size_t>(pick(0, static_cast<std::int64_t>(std::size(kKinds)) - 1))];
    if (kind == OpKind::reset && pick(0, 9) != 0) continue;  // rarely
    std::vector<OpItem> want_items;
    std::vector<OpItem> got_items;
    for (std::uint16_t key = 0; key < 2; ++key) {
      const std::pair<const Limit*, const Limit*> limits[] = {
          {&L.odd4, &L.odd}, {&L.tpd4, &L.tpd}, {&L.conc4, &L.conc}};
      for (const auto& [divided, configured] : limits) {
        const bool conc = divided->kind() == LimitKind::concurrency;
        if (conc && (kind == OpKind::adjust || kind == OpKind::clamp)) continue;
        std::int64_t amount = pick(0, divided->kind() == LimitKind::window ? 120 : 3);
        if (kind == OpKind::adjust) amount -= pick(0, 2);
        OpItem w{key, divided, amount, 0};
        if (kind == OpKind::clamp) w.until = pick(0, 1) != 0 ? now + pick(1, 5 * kSec) : 0;
        OpItem r = w;
        r.limit = configured;
        want_items.push_back(w);
        got_items.push_back(r);
      }
    }
    const std::uint64_t lease = static_cast<std::uint64_t>(pick(1, 3));
    const Micros expiry = now + pick(1, 20) * kSec;
    const auto want = test::apply_op(ref, rns, kind, now, keys, want_items, lease, expiry);
    const auto got = test::apply_op(g, gns, kind, now, keys, got_items, lease, expiry);
    expect_same(want, got, cat("step ", step, " kind ", static_cast<int>(kind)));
    if (::testing::Test::HasFailure()) return;
  }
  EXPECT_GT(g.stats().fallback_ops, 2000u);
  EXPECT_EQ(flaky.inner.size(), 0u);
}

// The scaled copies follow a reconfigured limit, even one that reuses a freed limit's address.
TEST(GuardedStore, ReconfiguredLimitIsDividedAgain) {
  test::FaultStore flaky(flaky_options());
  flaky.down = true;
  GuardedStore g(flaky, policy(UnavailablePolicy::local_fallback, 3));
  const Namespace ns = g.open_namespace("t");
  const std::vector<KeyParts> keys = {{"u", "m"}};
  std::optional<Limit> limit;  // same storage, so the same address, for both limits
  limit.emplace(Limit::daily("tpd", 30));
  const Limit* const at = &*limit;
  std::vector<OpItem> items = {OpItem{0, at, 10, 0}};
  EXPECT_TRUE(test::apply_op(g, ns, OpKind::acquire, kStart, keys, items).ok);  // 10 of 10
  items[0].amount = 1;
  EXPECT_FALSE(test::apply_op(g, ns, OpKind::acquire, kStart, keys, items).ok);
  limit.reset();
  limit.emplace(Limit::daily("tpd", 60));
  ASSERT_EQ(&*limit, at);
  items[0].amount = 10;
  const auto a = test::apply_op(g, ns, OpKind::acquire, kStart, keys, items);  // 20 of 20
  EXPECT_TRUE(a.ok);
  EXPECT_EQ(a.items[0].available, 0);
  items[0].amount = 1;
  EXPECT_FALSE(test::apply_op(g, ns, OpKind::acquire, kStart, keys, items).ok);

  // Through the Limiter: set_limits replaces the limits (new objects).
  ManualClock clock;
  Limiter limiter(g, clock);
  limiter.set_limits("m", {Limit::concurrency("conc", 6)});  // 2 slots
  std::vector<Lease> held;
  for (int i = 0; i < 2; ++i) held.push_back(limiter.try_acquire("v", "m", {}));
  EXPECT_TRUE(held[1].allowed());
  EXPECT_EQ(take(limiter, "v", "m", {}).d.code, Code::concurrency_exceeded);
  limiter.set_limits("m", {Limit::concurrency("conc", 9)});  // 3 slots
  EXPECT_TRUE(take(limiter, "v", "m", {}).d.allowed);
  held.push_back(limiter.try_acquire("v", "m", {}));
  EXPECT_TRUE(held.back().allowed());
  EXPECT_EQ(take(limiter, "v", "m", {}).d.code, Code::concurrency_exceeded);
}

TEST(GuardedStore, RecoveryGoesBackToThePrimaryWithoutMerging) {
  test::FaultStore flaky(flaky_options());
  GuardedStore g(flaky, policy(UnavailablePolicy::local_fallback, 2));
  ManualClock clock;
  Limiter limiter(g, clock);
  limiter.set_limits("m", {Limit::per_minute("rpm", 10)});
  EXPECT_TRUE(take(limiter, "u", "m", {{"rpm", 3}}).d.allowed);  // primary: 7 left

  flaky.down = true;
  EXPECT_TRUE(take(limiter, "u", "m", {{"rpm", 5}}).d.allowed);  // fallback: 5 of 5
  EXPECT_EQ(take(limiter, "u", "m", {{"rpm", 1}}).d.code, Code::rate_exceeded);
  EXPECT_TRUE(g.degraded());
  const GuardedStoreStats down = g.stats();
  EXPECT_EQ(down.fallback_ops, 2u);

  flaky.down = false;
  const std::uint64_t served = flaky.served.load();
  const Decision d = take(limiter, "u", "m", {{"rpm", 7}}).d;  // the primary's 7, not merged
  EXPECT_TRUE(d.allowed) << d.reason;
  EXPECT_EQ(flaky.served.load(), served + 1);
  EXPECT_FALSE(g.degraded());
  const GuardedStoreStats up = g.stats();
  EXPECT_EQ(up.recoveries, 1u);
  EXPECT_EQ(up.fallback_ops, down.fallback_ops);
  EXPECT_EQ(up.primary_failures, down.primary_failures);
  EXPECT_GT(g.fallback().size(), 0u);  // kept for the next outage

  // reset_namespace clears both; prune reaches both.
  limiter.reset_all();
  EXPECT_EQ(g.fallback().size(), 0u);
  EXPECT_EQ(flaky.inner.size(), 0u);
  flaky.down = true;
  EXPECT_TRUE(take(limiter, "u", "m", {{"rpm", 5}}).d.allowed);
  EXPECT_EQ(g.prune(clock.now() + kMicrosPerHour), 1u);
  EXPECT_EQ(g.fallback().size(), 0u);
  EXPECT_THROW(limiter.reset_all(), StoreUnavailable);  // the primary's failure is reported
}

// Threads acquiring while the primary flaps (for TSan): no exception escapes, the counters add
// up, and the store ends healthy.
TEST(GuardedStore, ConcurrentFlapping) {
  for (const UnavailablePolicy p :
       {UnavailablePolicy::fail_open, UnavailablePolicy::local_fallback}) {
    SCOPED_TRACE(to_string(p));
    test::FaultStore flaky(flaky_options());
    GuardedStore g(flaky, policy(p, 2));
    ManualClock clock;
    Limiter limiter(g, clock);
    limiter.set_limits("m", {Limit::per_second("rps", 50), Limit::concurrency("conc", 4),
                             Limit::daily("tpd", 100000)});
    std::atomic<bool> stop{false};
    std::atomic<std::uint64_t> ops{0}, unexpected{0};
    std::vector<std::thread> threads;
    for (int t = 0; t < 4; ++t) {
      threads.emplace_back([&, t] {
        const std::string entity = cat("e", t % 2);
        while (!stop.load()) {
          try {
            const Decision d = take(limiter, entity, "m", {{"rps", 1}, {"tpd", 3}}).d;
            switch (d.code) {
              case Code::ok:
              case Code::rate_exceeded:
              case Code::concurrency_exceeded:
                break;
              default:
                unexpected.fetch_add(1);
            }
          } catch (...) {
            unexpected.fetch_add(1);
          }
          ops.fetch_add(1);
        }
      });
    }
    for (int flip = 0; flip < 20; ++flip) {
      const std::uint64_t before = ops.load();
      ASSERT_TRUE(spin_until([&] { return ops.load() >= before + 20; }, "20 more operations"));
      flaky.down = !flaky.down;
      if (flip % 5 == 0) clock.advance(kSec);
    }
    flaky.down = false;
    stop = true;
    for (auto& th : threads) th.join();
    EXPECT_EQ(unexpected.load(), 0u);
    (void)take(limiter, "e0", "m", {});  // one operation the primary serves
    EXPECT_FALSE(g.degraded());
    const GuardedStoreStats s = g.stats();
    EXPECT_GT(s.primary_failures, 0u);
    EXPECT_GE(s.recoveries, 1u);
    if (p == UnavailablePolicy::local_fallback) {
      EXPECT_EQ(s.fallback_ops, s.primary_failures);
    } else {
      EXPECT_GT(s.fail_open_allowed, 0u);
      EXPECT_LE(s.fail_open_allowed, s.primary_failures);
    }
  }
}

// The example of docs/stores.md ("When the store is unavailable"), against a port where no
// Redis listens: every operation is served by the fallback.
TEST(GuardedStore, DocsExample) {
  ManualClock clock;
  // --- docs/stores.md ---
  admit::RedisStoreOptions redis_options;
  redis_options.client = admit::redis::parse_url("redis://127.0.0.1:1");  // nothing listens
  admit::RedisStore redis(redis_options);
  admit::GuardedStore store(redis, {.policy = admit::UnavailablePolicy::local_fallback,
                                    .fleet_size = 8});  // 8 processes share the limits
  admit::Limiter limiter(store, clock);
  limiter.set_limits("gpt-4o", {admit::Limit::per_minute("rpm", 800)});

  admit::Lease lease = limiter.try_acquire("team-a", "gpt-4o", {{"rpm", 1}});
  if (store.degraded()) {  // Redis is down: this process enforces rpm 100 by itself
    const admit::GuardedStoreStats s = store.stats();  // primary_failures, fallback_ops, ...
    std::printf("store degraded: %llu ops on the fallback\n",
                static_cast<unsigned long long>(s.fallback_ops));
  }
  // --- end ---
  EXPECT_TRUE(lease.allowed());
  lease.commit();
  EXPECT_TRUE(store.degraded());
  EXPECT_EQ(store.stats().fallback_ops, 1u);
  for (int i = 1; i < 100; ++i) (void)take(limiter, "team-a", "gpt-4o", {{"rpm", 1}});
  EXPECT_EQ(take(limiter, "team-a", "gpt-4o", {{"rpm", 1}}).d.code, Code::rate_exceeded);
  EXPECT_EQ(store.name(), "guarded(redis)");
}

// Verifies the audit log is the primary's under every policy: appends and reads go to it;
// while it is down (a FaultStore, then a RedisStore where nothing listens) both throw
// StoreUnavailable, nothing is kept in the fallback, and degraded() and the counters do not
// move; once it is back, ids go on where they were.
TEST(GuardedStore, AuditLogIsThePrimarysUnderEveryPolicy) {
  AuditEvent e;
  e.principal = "token:ops";
  e.action = "limits_set";
  e.resource = "m";
  e.after = R"([{"name":"rpm"}])";
  for (const UnavailablePolicy p : {UnavailablePolicy::fail_closed, UnavailablePolicy::fail_open,
                                    UnavailablePolicy::local_fallback}) {
    SCOPED_TRACE(to_string(p));
    test::FaultStore flaky({.name = "flaky", .down_reason = "flaky: down"});
    GuardedStore g(flaky, policy(p, 2));
    EXPECT_TRUE(g.capabilities().audit);
    ManualClock clock(kStart);
    Limiter limiter(g, clock);
    limiter.set_limits("m", {Limit::per_minute("rpm", 10)});
    EXPECT_EQ(limiter.audit(e), 1u);
    EXPECT_EQ(flaky.inner.read_audit(flaky.inner.open_namespace("default"), {}).size(), 1u);

    flaky.down = true;
    EXPECT_THROW((void)limiter.audit(e), StoreUnavailable);
    EXPECT_THROW((void)g.append_audit(g.open_namespace("default"), e), StoreUnavailable);
    EXPECT_THROW((void)limiter.audit_log(), StoreUnavailable);
    EXPECT_FALSE(g.degraded());
    EXPECT_EQ(g.stats().primary_failures, 0u);
    EXPECT_TRUE(g.fallback().read_audit(g.fallback().open_namespace("default"), {}).empty());
    // Admission meanwhile follows the policy, as without the audit calls.
    EXPECT_EQ(take(limiter, "u", "m", {{"rpm", 1}}).d.allowed, p != UnavailablePolicy::fail_closed);
    EXPECT_TRUE(g.degraded());

    flaky.down = false;
    EXPECT_EQ(limiter.audit(e), 2u);
    const std::vector<AuditEvent> log = limiter.audit_log();
    ASSERT_EQ(log.size(), 2u);
    EXPECT_EQ(log[1].id, 2u);
    EXPECT_EQ(log[1].time, kStart);
  }
  RedisStoreOptions o;
  o.client = redis::parse_url("redis://127.0.0.1:1");  // nothing listens
  RedisStore redis(o);
  GuardedStore g(redis, policy(UnavailablePolicy::local_fallback, 8));
  const Namespace ns = g.open_namespace("default");
  EXPECT_THROW((void)g.append_audit(ns, e), StoreUnavailable);
  EXPECT_THROW((void)g.read_audit(ns, {}), StoreUnavailable);
  EXPECT_FALSE(g.degraded());
  EXPECT_TRUE(g.fallback().read_audit(g.fallback().open_namespace("default"), {}).empty());
}

// ------------------------------------------------------------------ apply_async

/// What one apply_async() reported.
struct AsyncAnswer {
  int calls = 0;
  bool ok = false;
  std::exception_ptr error;
  std::vector<ItemResult> results = std::vector<ItemResult>(1);
};

std::string what_of(const std::exception_ptr& e) {
  try {
    std::rethrow_exception(e);
  } catch (const StoreUnavailable& x) {
    return std::string("StoreUnavailable: ") + x.what();
  } catch (const std::exception& x) {
    return x.what();
  }
}

/// Starts g.apply_async() of an acquire of `amount` units of per_minute("rpm", 10) on one key;
/// `a` receives the answer. The op and everything it points to (on the heap, so ASan sees a
/// late read) are freed when this returns: the store must have copied what it needs.
void start_acquire(GuardedStore& g, const Namespace& ns, std::int64_t amount, AsyncAnswer& a) {
  auto entity = std::make_unique<std::string>("a-user-whose-name-lives-on-the-heap");
  auto rpm = std::make_unique<Limit>(Limit::per_minute("rpm", 10));
  auto keys = std::make_unique<std::vector<KeyParts>>(1, KeyParts{*entity, "m"});
  auto items = std::make_unique<std::vector<OpItem>>(1, OpItem{0, rpm.get(), amount, 0});
  const Op op = test::make_op(OpKind::acquire, ns, kStart, *keys, *items);
  g.apply_async(op, a.results, [&a](bool ok, std::exception_ptr error) {
    ++a.calls;
    a.ok = ok;
    a.error = std::move(error);
  });
}

// Verifies apply_async() under each policy when the primary answers later, on another thread:
// healthy answers pass through; a StoreUnavailable gets apply()'s policy answer (fail_closed:
// the error; fail_open: allowed, limit full; local_fallback: the fallback's, limits divided),
// counted and marked degraded like apply(); another exception passes through uncounted; the
// next op served after the failure recovers.
TEST(GuardedStoreAsync, PoliciesWhenThePrimaryFailsLater) {
  for (const UnavailablePolicy p : {UnavailablePolicy::fail_closed, UnavailablePolicy::fail_open,
                                    UnavailablePolicy::local_fallback}) {
    SCOPED_TRACE(to_string(p));
    test::FaultStore primary(deferred_options());
    GuardedStore g(primary, policy(p, 2));
    const Namespace ns = g.open_namespace("t");

    AsyncAnswer healthy;
    start_acquire(g, ns, 3, healthy);
    EXPECT_EQ(healthy.calls, 0);  // the primary answers later
    EXPECT_EQ(primary.run_all_on_other_thread(), 1u);
    ASSERT_EQ(healthy.calls, 1);
    EXPECT_TRUE(healthy.ok);
    EXPECT_FALSE(healthy.error);
    EXPECT_EQ(healthy.results[0].available, 7);
    EXPECT_FALSE(g.degraded());

    AsyncAnswer down;
    start_acquire(g, ns, 3, down);
    primary.run_all_on_other_thread(std::make_exception_ptr(StoreUnavailable("deferred: down")));
    ASSERT_EQ(down.calls, 1);
    EXPECT_TRUE(g.degraded());
    GuardedStoreStats s = g.stats();
    EXPECT_EQ(s.primary_failures, 1u);
    switch (p) {
      case UnavailablePolicy::fail_closed:
        EXPECT_FALSE(down.ok);
        ASSERT_TRUE(down.error);
        EXPECT_EQ(what_of(down.error), "StoreUnavailable: deferred: down");
        EXPECT_EQ(s.fail_open_allowed, 0u);
        EXPECT_EQ(s.fallback_ops, 0u);
        break;
      case UnavailablePolicy::fail_open:
        EXPECT_TRUE(down.ok);
        EXPECT_FALSE(down.error);
        EXPECT_EQ(down.results[0].available, 10);  // reported full, nothing counted
        EXPECT_EQ(s.fail_open_allowed, 1u);
        EXPECT_EQ(s.fallback_ops, 0u);
        break;
      case UnavailablePolicy::local_fallback:
        EXPECT_TRUE(down.ok);
        EXPECT_FALSE(down.error);
        EXPECT_EQ(down.results[0].available, 5 - 3);  // this process's half of 10
        EXPECT_EQ(s.fail_open_allowed, 0u);
        EXPECT_EQ(s.fallback_ops, 1u);
        EXPECT_EQ(g.fallback().size(), 1u);
        break;
    }

    AsyncAnswer other;
    start_acquire(g, ns, 1, other);
    primary.run_all_on_other_thread(std::make_exception_ptr(std::runtime_error("boom")));
    ASSERT_EQ(other.calls, 1);
    EXPECT_FALSE(other.ok);
    ASSERT_TRUE(other.error);
    EXPECT_EQ(what_of(other.error), "boom");
    EXPECT_EQ(g.stats().primary_failures, 1u);
    EXPECT_TRUE(g.degraded());

    AsyncAnswer after;
    start_acquire(g, ns, 3, after);
    EXPECT_EQ(primary.run_all_on_other_thread(), 1u);
    ASSERT_EQ(after.calls, 1);
    EXPECT_TRUE(after.ok);
    EXPECT_EQ(after.results[0].available, 4);  // only what the primary served counts
    EXPECT_FALSE(g.degraded());
    EXPECT_EQ(g.stats().recoveries, 1u);
  }
}

// Verifies the failure epoch under apply_async(): an op that was in flight when another
// failed does not prove the primary healthy when it is served later; one started after does.
TEST(GuardedStoreAsync, OnlyOpsStartedAfterAFailureRecover) {
  test::FaultStore primary(deferred_options());
  GuardedStore g(primary, policy(UnavailablePolicy::fail_open));
  const Namespace ns = g.open_namespace("t");
  AsyncAnswer a, b, c;
  start_acquire(g, ns, 1, a);
  start_acquire(g, ns, 1, b);
  EXPECT_TRUE(primary.run_one(std::make_exception_ptr(StoreUnavailable("deferred: down"))));
  EXPECT_TRUE(g.degraded());
  EXPECT_TRUE(primary.run_one());  // b started before a failed
  EXPECT_TRUE(b.ok);
  EXPECT_TRUE(g.degraded());
  EXPECT_EQ(g.stats().recoveries, 0u);
  start_acquire(g, ns, 1, c);
  EXPECT_TRUE(primary.run_one());
  EXPECT_EQ(a.calls + b.calls + c.calls, 3);
  EXPECT_FALSE(g.degraded());
  EXPECT_EQ(g.stats().recoveries, 1u);
}

// Verifies Limiter::try_acquire_async through a GuardedStore whose primary fails later, on
// another thread: fail_closed gives code store_unavailable, fail_open and local_fallback
// admit.
TEST(GuardedStoreAsync, LimiterDecisionsUnderEachPolicy) {
  for (const UnavailablePolicy p : {UnavailablePolicy::fail_closed, UnavailablePolicy::fail_open,
                                    UnavailablePolicy::local_fallback}) {
    SCOPED_TRACE(to_string(p));
    test::FaultStore primary(deferred_options());
    GuardedStore g(primary, policy(p));
    ManualClock clock(kStart);
    Limiter limiter(g, clock);
    limiter.set_limits("m", {Limit::per_minute("rpm", 2), Limit::concurrency("conc", 1)});
    std::vector<Lease> got;
    limiter.try_acquire_async("u", "m", {{"rpm", 1}},
                              [&](Lease l) { got.push_back(std::move(l)); });
    EXPECT_TRUE(got.empty());
    primary.run_all_on_other_thread(std::make_exception_ptr(StoreUnavailable("deferred: down")));
    ASSERT_EQ(got.size(), 1u);
    const Decision& d = got[0].decision();
    if (p == UnavailablePolicy::fail_closed) {
      EXPECT_FALSE(d.allowed);
      EXPECT_EQ(d.code, Code::store_unavailable);
      EXPECT_EQ(d.reason, "deferred: down");
    } else {
      EXPECT_TRUE(d.allowed) << d.reason;
      EXPECT_TRUE(got[0].active());
    }
    EXPECT_TRUE(g.degraded());
    got.clear();  // ends the lease through apply(), which the primary serves
  }
}

// ------------------------------------------------------------------ a real redis-server

/// Absolute path of `name` on PATH; empty if not found.
std::string find_on_path(const std::string& name) {
  const auto path = test::env("PATH");
  if (!path) return {};
  std::size_t start = 0;
  while (start <= path->size()) {
    const std::size_t end = std::min(path->find(':', start), path->size());
    // Appended piecewise: GCC 12 -O3 warns falsely (-Wrestrict) about dir + "/" + name.
    std::string candidate = end > start ? path->substr(start, end - start) : std::string(".");
    candidate += '/';
    candidate += name;
    if (::access(candidate.c_str(), X_OK) == 0) return candidate;
    start = end + 1;
  }
  return {};
}

/**
 * A redis-server child process on 127.0.0.1:port, no persistence, its files in a temporary
 * directory. Killed (SIGKILL) and reaped by the destructor whatever happened in the test;
 * it also dies with this process (PR_SET_PDEATHSIG) should the test crash.
 */
class RedisServer {
 public:
  RedisServer(std::string binary, const std::string& dir_tag)
      : binary_(std::move(binary)), dir_(dir_tag) {}
  ~RedisServer() { kill(); }
  RedisServer(const RedisServer&) = delete;
  RedisServer& operator=(const RedisServer&) = delete;

  /// Starts on a free port (a few tries on a port collision). @return why it failed, or "".
  std::string start() {
    std::string why;
    for (int attempt = 0; attempt < 5; ++attempt) {
      port_ = test::free_port();
      why = launch();
      if (why.empty()) return why;
    }
    return why;
  }
  /// Starts again on the same port. @return why it failed, or "".
  std::string restart() { return launch(); }

  /// SIGKILL, then reap. Idempotent.
  void kill() {
    if (pid_ <= 0) return;
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, nullptr, 0);
    pid_ = -1;
  }

  std::uint16_t port() const { return port_; }
  bool running() const { return pid_ > 0; }
  redis::ClientOptions client_options() const {
    redis::ClientOptions o;
    o.seeds = {redis::Endpoint{"127.0.0.1", port_}};
    o.connect_timeout = 1000ms;
    o.command_timeout = 2000ms;
    o.reconnect_backoff = 10ms;
    o.reconnect_backoff_max = 50ms;
    return o;
  }

 private:
  // Spawns the server and waits (bounded) until it answers PING.
  std::string launch() {
    std::vector<std::string> args = {
        binary_,  "--port", std::to_string(port_), "--bind",    "127.0.0.1",
        "--save", "",       "--appendonly",        "no",        "--daemonize",
        "no",     "--dir",  dir_.path(),           "--logfile", dir_.file("redis.log")};
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    const pid_t parent = ::getpid();
    const pid_t pid = ::fork();
    if (pid < 0) return "fork failed";
    if (pid == 0) {  // the child: async-signal-safe calls only, then exec
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (::getppid() != parent) ::_exit(126);
      const int null = ::open("/dev/null", O_RDWR);
      if (null >= 0) {
        ::dup2(null, 0);
        ::dup2(null, 1);
        ::dup2(null, 2);
      }
      ::execv(argv[0], argv.data());
      ::_exit(127);
    }
    pid_ = pid;
    redis::ClientOptions o = client_options();
    o.reconnect_backoff = 0ms;
    o.reconnect_backoff_max = 0ms;
    redis::Client probe(o);
    const auto give_up = std::chrono::steady_clock::now() + test::kSpinLimit;
    while (std::chrono::steady_clock::now() < give_up) {
      int status = 0;
      if (::waitpid(pid_, &status, WNOHANG) == pid_) {  // exited: port taken, bad option, ...
        pid_ = -1;
        return cat("redis-server on port ", port_, " exited (status ", status, "); see ",
                   dir_.file("redis.log"));
      }
      try {
        const redis::Reply r = probe.command({"PING"});
        if (r.is_status() && r.str == "PONG") return "";
      } catch (const StoreUnavailable&) {
      }
      std::this_thread::sleep_for(5ms);  // poll interval
    }
    kill();
    return cat("redis-server on port ", port_, " did not answer PING");
  }

  std::string binary_;
  test::TempDir dir_;
  std::uint16_t port_ = 0;
  pid_t pid_ = -1;
};

/// redis-server's path, or "" after skipping / failing the test (ADMIT_REQUIRE_REDIS=1).
#define ADMIT_REDIS_SERVER_OR_SKIP(var)                                  \
  const std::string var = find_on_path("redis-server");                  \
  if (var.empty()) {                                                     \
    if (test::redis_required()) {                                        \
      FAIL() << "redis-server is not on PATH and ADMIT_REQUIRE_REDIS=1"; \
    }                                                                    \
    GTEST_SKIP() << "redis-server is not on PATH";                       \
  }

RedisStoreOptions store_options(const RedisServer& server, const std::string& prefix) {
  RedisStoreOptions o;
  o.client = server.client_options();
  o.prefix = prefix;
  o.server_time = false;  // decide at the ManualClock: exact, and the same clock as the fallback
  o.deny_cache = false;   // every acquire reaches the server (or fails to)
  return o;
}

class GuardedRedisFault : public ::testing::TestWithParam<UnavailablePolicy> {};

// Healthy on Redis -> redis-server killed -> the policy's behaviour -> redis-server restarted
// on the same port -> recovered: operations reach Redis again, with its (undivided) limits.
TEST_P(GuardedRedisFault, KillAndRestart) {
  ADMIT_REDIS_SERVER_OR_SKIP(binary);
  const UnavailablePolicy p = GetParam();
  RedisServer server(binary, "guarded-redis");
  {
    const std::string why = server.start();
    ASSERT_TRUE(why.empty()) << why;
  }
  RedisStore redis(store_options(server, cat("gtest-guarded-", to_string(p), "-", ::getpid())));
  GuardedStore guarded(redis, policy(p, 3));
  ManualClock clock;
  Limiter limiter(guarded, clock);
  limiter.set_limits("gpt", {Limit::per_minute("rpm", 12), Limit::daily("tpd", 1000),
                             Limit::concurrency("conc", 5)});
  AcquireOptions with_stats;
  with_stats.with_stats = true;

  // ---- healthy: served by Redis
  for (int i = 0; i < 3; ++i) {
    const Outcome o = take(limiter, "u0", "gpt", {{"rpm", 1}, {"tpd", 10}});
    ASSERT_TRUE(o.d.allowed) << o.d.reason;
  }
  EXPECT_GE(redis.stats().scripts, 3u);
  EXPECT_FALSE(guarded.degraded());
  EXPECT_EQ(guarded.stats().primary_failures, 0u);

  // ---- redis-server killed mid-run
  server.kill();
  const std::uint64_t scripts_down = redis.stats().scripts;
  switch (p) {
    case UnavailablePolicy::fail_closed: {
      const Outcome o = take(limiter, "u1", "gpt", {{"rpm", 1}});
      ASSERT_FALSE(o.escaped) << "StoreUnavailable escaped the Limiter: " << o.d.reason;
      EXPECT_FALSE(o.d.allowed);
      EXPECT_EQ(o.d.code, Code::store_unavailable) << o.d.reason;
      const Outcome od = decide(limiter, "u1", "gpt", {{"rpm", 1}});
      EXPECT_FALSE(od.escaped);
      EXPECT_EQ(od.d.code, Code::store_unavailable);
      try {
        (void)limiter.acquire("u1", "gpt", {{"rpm", 1}}, 1s);
        ADD_FAILURE() << "acquire() was allowed with Redis down";
      } catch (const RateLimitExceeded& e) {
        EXPECT_EQ(e.decision().code, Code::store_unavailable);
      }
      EXPECT_EQ(limiter.waiting("u1", "gpt"), 0u);
      EXPECT_EQ(guarded.stats().primary_failures, 3u);
      break;
    }
    case UnavailablePolicy::fail_open: {
      for (int i = 0; i < 30; ++i) {  // far beyond rpm 12 and tpd 1000
        const Outcome o = take(limiter, "u1", "gpt", {{"rpm", 1}, {"tpd", 100}}, with_stats);
        ASSERT_TRUE(o.d.allowed) << i << ": " << o.d.reason;
        EXPECT_EQ(available_of(o.d, "rpm"), 12);
        EXPECT_EQ(available_of(o.d, "tpd"), 1000);
        EXPECT_EQ(available_of(o.d, "conc"), 5);
      }
      EXPECT_EQ(guarded.stats().fail_open_allowed, 30u);
      EXPECT_GE(guarded.stats().primary_failures, 30u);  // + the leases' releases
      break;
    }
    case UnavailablePolicy::local_fallback: {
      // rpm 12 / 3 = 4, then 1 per 15 s
      for (int i = 0; i < 4; ++i) {
        EXPECT_TRUE(take(limiter, "u1", "gpt", {{"rpm", 1}}).d.allowed) << i;
      }
      const Decision d = take(limiter, "u1", "gpt", {{"rpm", 1}}).d;
      EXPECT_EQ(d.code, Code::rate_exceeded);
      EXPECT_EQ(d.retry_after, 15 * kSec);
      // tpd 1000 / 3 = 333
      EXPECT_TRUE(take(limiter, "u2", "gpt", {{"tpd", 300}}).d.allowed);
      EXPECT_EQ(take(limiter, "u2", "gpt", {{"tpd", 34}}).d.code, Code::window_exceeded);
      EXPECT_TRUE(take(limiter, "u2", "gpt", {{"tpd", 33}}).d.allowed);
      // conc 5 / 3 = 1
      Lease held = limiter.try_acquire("u3", "gpt", {});
      EXPECT_TRUE(held.allowed());
      EXPECT_EQ(take(limiter, "u3", "gpt", {}).d.code, Code::concurrency_exceeded);
      held.rollback();
      EXPECT_TRUE(take(limiter, "u3", "gpt", {}).d.allowed);
      const GuardedStoreStats s = guarded.stats();
      EXPECT_GT(s.fallback_ops, 0u);
      EXPECT_EQ(s.fallback_ops, s.primary_failures);
      break;
    }
  }
  EXPECT_TRUE(guarded.degraded());
  EXPECT_EQ(guarded.stats().recoveries, 0u);

  // ---- restarted on the same port; the client reconnects by itself
  {
    const std::string why = server.restart();
    ASSERT_TRUE(why.empty()) << why;
  }
  ASSERT_TRUE(spin_until(
      [&] {
        if (!guarded.degraded()) return true;
        (void)take(limiter, "probe", "gpt", {});
        std::this_thread::sleep_for(2ms);  // poll interval (the client backs off <= 50 ms)
        return !guarded.degraded();
      },
      "the GuardedStore to reach Redis again"));
  const GuardedStoreStats rec = guarded.stats();
  EXPECT_EQ(rec.recoveries, 1u);
  EXPECT_GT(redis.stats().scripts, scripts_down);

  // Redis's own limits again (undivided; the restarted server starts empty): 12 of rpm.
  for (int i = 0; i < 12; ++i) {
    const Outcome o = take(limiter, "u1", "gpt", {{"rpm", 1}});
    ASSERT_TRUE(o.d.allowed) << i << ": " << o.d.reason;
  }
  const Decision d = take(limiter, "u1", "gpt", {{"rpm", 1}}).d;
  EXPECT_EQ(d.code, Code::rate_exceeded);
  EXPECT_EQ(d.retry_after, 5 * kSec);
  // The state is in Redis.
  redis::Client probe(server.client_options());
  const std::string key = redis.key_of("default", "u1", KeyParts{"u1", "gpt"});
  EXPECT_EQ(probe.command({"EXISTS", key}).integer, 1) << key;
  // Nothing more went to the policy.
  const GuardedStoreStats after = guarded.stats();
  EXPECT_FALSE(guarded.degraded());
  EXPECT_EQ(after.primary_failures, rec.primary_failures);
  EXPECT_EQ(after.fallback_ops, rec.fallback_ops);
  EXPECT_EQ(after.fail_open_allowed, rec.fail_open_allowed);
  EXPECT_EQ(after.recoveries, 1u);
  if (p == UnavailablePolicy::local_fallback) {
    EXPECT_GT(guarded.fallback().size(), 0u);  // not merged back, kept for the next outage
  }
}

INSTANTIATE_TEST_SUITE_P(Policies, GuardedRedisFault,
                         ::testing::Values(UnavailablePolicy::fail_closed,
                                           UnavailablePolicy::fail_open,
                                           UnavailablePolicy::local_fallback),
                         [](const ::testing::TestParamInfo<UnavailablePolicy>& p) {
                           return std::string(to_string(p.param));
                         });

// Threads acquire through local_fallback while redis-server is killed and restarted: every
// decision is a valid one, nothing escapes, and the store ends on Redis again.
TEST(GuardedRedisFaultLoad, ThreadsAcrossKillAndRestart) {
  ADMIT_REDIS_SERVER_OR_SKIP(binary);
  RedisServer server(binary, "guarded-redis-load");
  {
    const std::string why = server.start();
    ASSERT_TRUE(why.empty()) << why;
  }
  RedisStore redis(store_options(server, cat("gtest-guarded-load-", ::getpid())));
  GuardedStore guarded(redis, policy(UnavailablePolicy::local_fallback, 2));
  ManualClock clock;
  Limiter limiter(guarded, clock);
  limiter.set_limits("gpt", {Limit::per_second("rps", 1000), Limit::concurrency("conc", 8)});

  std::atomic<bool> stop{false};
  std::atomic<std::uint64_t> ops{0}, unexpected{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      const std::string entity = cat("t", t % 2);
      while (!stop.load()) {
        try {
          const Decision d = take(limiter, entity, "gpt", {{"rps", 1}}).d;
          if (d.code != Code::ok && d.code != Code::rate_exceeded &&
              d.code != Code::concurrency_exceeded) {
            unexpected.fetch_add(1);
          }
        } catch (...) {
          unexpected.fetch_add(1);
        }
        ops.fetch_add(1);
      }
    });
  }
  struct Joiner {  // stops and joins the threads whatever happens below
    std::atomic<bool>& stop;
    std::vector<std::thread>& threads;
    ~Joiner() {
      stop = true;
      for (auto& th : threads) {
        if (th.joinable()) th.join();
      }
    }
  } joiner{stop, threads};

  ASSERT_TRUE(spin_until([&] { return ops.load() >= 40; }, "40 operations on Redis"));
  server.kill();
  ASSERT_TRUE(spin_until([&] { return guarded.stats().fallback_ops >= 100; },
                         "100 operations on the fallback"));
  {
    const std::string why = server.restart();
    ASSERT_TRUE(why.empty()) << why;
  }
  ASSERT_TRUE(spin_until(
      [&] {
        std::this_thread::sleep_for(1ms);  // poll interval
        return guarded.stats().recoveries >= 1 && !guarded.degraded();
      },
      "the GuardedStore to reach Redis again"));
  const std::uint64_t recovered_at = ops.load();
  ASSERT_TRUE(spin_until([&] { return ops.load() >= recovered_at + 100; },
                         "100 more operations after the recovery"));
  stop = true;
  for (auto& th : threads) th.join();
  EXPECT_EQ(unexpected.load(), 0u);

  const GuardedStoreStats before = guarded.stats();
  const Outcome o = take(limiter, "final", "gpt", {{"rps", 1}});
  EXPECT_TRUE(o.d.allowed) << o.d.reason;
  EXPECT_FALSE(guarded.degraded());
  EXPECT_EQ(guarded.stats().fallback_ops, before.fallback_ops);
  EXPECT_GE(guarded.stats().recoveries, 1u);
}

}  // namespace
}  // namespace admit
