// Limiter::try_acquire_many: the same leases as try_acquire of each request in order, at one
// instant, over every kind of limit, parents, shadow limits and invalid requests; and a
// store's failures as decisions.
#include <gtest/gtest.h>

#include <cstdint>
#include <deque>
#include <random>
#include <string>
#include <vector>

#include "admit/core/clock.hpp"
#include "admit/limiter.hpp"
#include "admit/store/memory_store.hpp"
#include "support/fault_store.hpp"
#include "support/test_support.hpp"

namespace admit {
namespace {

using test::kStart;

void configure(Limiter& l) {
  l.set_limits("chat",
               {Limit::per_minute("rpm", 20, 5), Limit::per_minute("tpm", 4000),
                Limit::concurrency("inflight", 3), Limit::per_second("rps", 2).with_shadow()});
  l.set_limits("embed", {Limit::daily("rpd", 30, "00:00", "UTC"), Limit::per_hour("rph", 25)});
  l.set_entity_limits("team-a", "chat",
                      {Limit::per_minute("rpm", 40), Limit::per_minute("tpm", 6000)});
  for (int i = 0; i < 6; ++i) l.set_parent("user-" + std::to_string(i), "team-a");
}

struct Req {
  std::string entity;
  std::string resource;
  Amounts amounts;
};

Req random_request(std::mt19937_64& rng) {
  auto pick = [&](int n) { return static_cast<int>(rng() % static_cast<unsigned>(n)); };
  Req r;
  r.entity = "user-" + std::to_string(pick(10));
  switch (pick(10)) {
    case 0:
      r.resource = "embed";
      r.amounts = {{"rpd", 1 + pick(2)}, {"rph", 1}};
      break;
    case 1:
      r.resource = "chat";
      r.amounts = {{"rpm", 1}, {"nope", 1}};  // unknown limit: refused before the store
      break;
    case 2:
      r.resource = "chat";
      r.amounts = {{"rpm", 0}, {"tpm", 0}, {"inflight", 0}};  // nothing to count
      break;
    case 3:
      r.resource = "chat";
      r.amounts = {{"tpm", 9000}};  // more than any burst: exceeds_capacity
      break;
    default:
      r.resource = "chat";
      r.amounts = {{"rpm", 1}, {"tpm", 50 + pick(900)}};
      break;
  }
  return r;
}

void expect_same(const Lease& got, const Lease& want, const std::string& where) {
  const Decision& g = got.decision();
  const Decision& w = want.decision();
  EXPECT_EQ(got.allowed(), want.allowed()) << where;
  EXPECT_EQ(g.code, w.code) << where << ": " << g.reason << " / " << w.reason;
  EXPECT_EQ(g.reason, w.reason) << where;
  EXPECT_EQ(g.retry_after, w.retry_after) << where;
  EXPECT_EQ(g.now, w.now) << where;
  EXPECT_EQ(g.violations.size(), w.violations.size()) << where;
  EXPECT_EQ(g.shadow_violations.size(), w.shadow_violations.size()) << where;
  ASSERT_EQ(g.stats.size(), w.stats.size()) << where;
  for (std::size_t i = 0; i < g.stats.size(); ++i) {
    EXPECT_EQ(g.stats[i].entity, w.stats[i].entity) << where;
    EXPECT_EQ(g.stats[i].limit, w.stats[i].limit) << where;
    EXPECT_EQ(g.stats[i].available, w.stats[i].available) << where;
    EXPECT_EQ(g.stats[i].reset_after, w.stats[i].reset_after) << where;
  }
}

// Verifies over random batches (1-150 requests, so some span several store batches) that
// try_acquire_many gives each request the lease try_acquire would give it on a twin limiter
// taking the requests in order at the same instant (decision, stats, holdings: the leases
// are then ended alike, some kept open to hold concurrency slots, and later batches see the
// same state); with and without stats.
TEST(AcquireMany, SameLeasesAsTryAcquireInOrder) {
  const std::uint64_t seed = test::test_seed(0xba7c'0001ULL);
  SCOPED_TRACE(test::cat("seed ", seed, " (rerun with ADMIT_TEST_SEED=", seed, ")"));
  std::mt19937_64 rng(seed);
  ManualClock clock(kStart);
  MemoryStore store_a, store_b;
  Limiter batched(store_a, clock), single(store_b, clock);
  configure(batched);
  configure(single);
  std::deque<std::pair<Lease, Lease>> open;  // leases kept (concurrency slots held)
  int allowed = 0, denied = 0, batches_over_64 = 0;
  for (int round = 0; round < 300; ++round) {
    const std::size_t n = 1 + rng() % (round % 10 == 0 ? 150 : 20);
    batches_over_64 += n > 64;
    std::vector<Req> reqs;
    for (std::size_t i = 0; i < n; ++i) reqs.push_back(random_request(rng));
    std::vector<AcquireRequest> batch;
    for (const Req& r : reqs) batch.push_back({r.entity, r.resource, r.amounts});
    AcquireOptions options;
    options.with_stats = rng() % 2 == 0;
    std::vector<Lease> got = batched.try_acquire_many(batch, options);
    ASSERT_EQ(got.size(), n);
    std::vector<Lease> wanted;
    for (const Req& r : reqs)
      wanted.push_back(single.try_acquire(r.entity, r.resource, r.amounts, options));
    for (std::size_t i = 0; i < n; ++i) {
      Lease& want = wanted[i];
      expect_same(
          got[i], want,
          test::cat("round ", round, " request ", i, " ", reqs[i].entity, "/", reqs[i].resource));
      if (::testing::Test::HasFailure()) return;
      (got[i].allowed() ? allowed : denied) += 1;
      switch (rng() % 3) {
        case 0:
          got[i].commit();
          want.commit();
          break;
        case 1:
          got[i].rollback();
          want.rollback();
          break;
        default:
          if (got[i].allowed()) open.emplace_back(std::move(got[i]), std::move(want));
      }
    }
    while (open.size() > 4) {
      open.front().first.commit();
      open.front().second.commit();
      open.pop_front();
    }
    clock.advance(static_cast<Micros>(rng() % 3'000'000));
  }
  EXPECT_GT(allowed, 500);
  EXPECT_GT(denied, 500);
  EXPECT_GT(batches_over_64, 5);
}

// Verifies that an unreachable store makes every lease of the batch a store_unavailable
// decision with the store's reason (no exception), and that the batch decides again once it
// is back.
TEST(AcquireMany, StoreFailuresAreDecisions) {
  ManualClock clock(kStart);
  test::FaultStore store;
  Limiter limiter(store, clock);
  configure(limiter);
  const Amounts a{{"rpm", 1}};
  const std::vector<AcquireRequest> batch{{"user-1", "chat", a}, {"user-2", "chat", a}};
  store.down = true;
  std::vector<Lease> got = limiter.try_acquire_many(batch);
  ASSERT_EQ(got.size(), 2U);
  for (const Lease& l : got) {
    EXPECT_FALSE(l.allowed());
    EXPECT_EQ(l.decision().code, Code::store_unavailable);
    EXPECT_EQ(l.decision().reason, "fault: down");
  }
  store.down = false;
  got = limiter.try_acquire_many(batch);
  for (const Lease& l : got) EXPECT_TRUE(l.allowed());
}

// Verifies that a full MemoryStore (max_keys) refuses the requests that need a new key, as
// try_acquire would, while the others of the same batch are admitted and counted.
TEST(AcquireMany, AFullStoreRefusesOnlyTheNewKeys) {
  ManualClock clock(kStart);
  MemoryStore store(MemoryStoreOptions{.shards = 1, .max_keys = 2});
  Limiter limiter(store, clock);
  limiter.set_limits("r", {Limit::per_minute("rpm", 10)});
  const Amounts a{{"rpm", 1}};
  limiter.try_acquire("u1", "r", a).commit();
  limiter.try_acquire("u2", "r", a).commit();
  const std::vector<AcquireRequest> batch{{"u1", "r", a}, {"u3", "r", a}, {"u2", "r", a}};
  std::vector<Lease> got = limiter.try_acquire_many(batch);
  EXPECT_TRUE(got[0].allowed());
  EXPECT_EQ(got[1].decision().code, Code::store_unavailable);
  EXPECT_TRUE(got[2].allowed());
  for (Lease& l : got) l.commit();
  EXPECT_EQ(limiter.decide("u1", "r", {{"rpm", 8}}).code, Code::ok);
  EXPECT_EQ(limiter.decide("u1", "r", {{"rpm", 9}}).code, Code::rate_exceeded);
}

// Verifies that durable leases come back durable (taken one by one) and that an empty batch
// is an empty answer.
TEST(AcquireMany, DurableLeasesAndEmptyBatches) {
  ManualClock clock(kStart);
  MemoryStore store;
  Limiter limiter(store, clock);
  configure(limiter);
  EXPECT_TRUE(limiter.try_acquire_many({}).empty());
  const Amounts a{{"rpm", 1}};
  const std::vector<AcquireRequest> batch{{"user-1", "chat", a}, {"user-2", "chat", a}};
  AcquireOptions options;
  options.durable = true;
  std::vector<Lease> got = limiter.try_acquire_many(batch, options);
  for (Lease& l : got) {
    ASSERT_TRUE(l.allowed());
    EXPECT_TRUE(l.durable());
    EXPECT_FALSE(l.token().empty());
    l.commit();
  }
}

}  // namespace
}  // namespace admit
