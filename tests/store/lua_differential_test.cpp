// Differential test: the Redis script (src/store/redis/admit.lua, run by RedisStore) against
// the C++ store kernel (MemoryStore). Identical random operation sequences — every op kind,
// rate limits with integer and fractional intervals, adaptive parameters, calendar windows in
// zones with daylight saving, concurrency holds — must give identical results, to the
// microsecond. RedisStore passes the op's time to the script (server_time = false) so both
// sides decide at the same instant.
// Needs a real redis-server: ADMIT_TEST_REDIS_URL (scripts/test starts one); skipped without
// it unless ADMIT_REQUIRE_REDIS=1.
#include <gtest/gtest.h>

#include <chrono>
#include <functional>
#include <iterator>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include <unistd.h>

#include "admit/core/limit.hpp"
#include "admit/store/memory_store.hpp"
#include "admit/store/redis_store.hpp"
#include "support/redis_env.hpp"
#include "support/seed.hpp"

namespace admit {
namespace {

// A fixed, recent instant: the windows' zones have had the same rules since.
constexpr Micros kStart = 1'780'000'000'000'000;  // 2026-05-28

class LuaDifferential : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string why;
    auto client = test::redis_options(false, why);
    if (!client) {
      if (test::redis_required()) FAIL() << why << " and ADMIT_REQUIRE_REDIS=1";
      GTEST_SKIP() << why;
    }
    RedisStoreOptions o;
    o.client = *client;
    o.prefix = "admit-diff/" + std::to_string(::getpid());
    o.server_time = false;
    o.deny_cache = false;
    store_.emplace(o);
  }
  void TearDown() override {
    if (store_) store_->reset_namespace(store_->open_namespace("diff"));
  }

  std::optional<RedisStore> store_;
};

// Adaptive parameters the sequences pick from (as an AIMD controller would move them).
constexpr double kAdaptiveRates[] = {0.1, 1.0, 2.5, 7.0, 50.0};

// Runs `steps` random operations, of a kind `next_kind` picks, on items of `limits` (each
// picked with probability 1/3 per key; one "frac" variant per key and op) through the C++
// kernel (MemoryStore) and the script (RedisStore), and requires identical results.
// @return how many operations were compared.
int agree(RedisStore& redis, const std::vector<Limit>& limits, int steps,
          const std::function<OpKind(std::mt19937_64&)>& next_kind) {
  const std::uint64_t seed = test::test_seed();
  SCOPED_TRACE(test::seed_note(seed));
  std::mt19937_64 rng(seed);
  auto pick = [&](std::int64_t lo, std::int64_t hi) {
    return std::uniform_int_distribution<std::int64_t>(lo, hi)(rng);
  };

  MemoryStore store(MemoryStoreOptions{.seed = seed});
  const Namespace ns = store.open_namespace("diff");
  const Namespace rns = redis.open_namespace("diff");
  const std::vector<KeyParts> keys = {{"e0", "model"}, {"e1", "model"}};

  Micros now = kStart;
  std::vector<std::uint64_t> leases;
  std::uint64_t next_lease = 1;
  int compared = 0;
  for (int step = 0; step < steps; ++step) {
    // Time: often the same instant or 1 µs later, sometimes seconds or minutes (windows roll).
    switch (pick(0, 5)) {
      case 0: break;
      case 1: now += 1; break;
      case 2: now += pick(1, 2'000'000); break;
      case 3: now += pick(1, 20'000'000); break;
      case 4: now += pick(1, 900'000'000); break;
      default: now += pick(1, 300'000); break;
    }
    const OpKind kind = next_kind(rng);
    // Items: distinct (key, limit) pairs.
    std::vector<OpItem> items;
    std::vector<RateParams> params;
    params.reserve(16);
    for (std::uint16_t k = 0; k < keys.size(); ++k) {
      bool frac = false;  // one of the two "frac" variants per key and op
      for (std::size_t li = 0; li < limits.size(); ++li) {
        if (pick(0, 2) != 0) continue;
        const Limit& l = limits[li];
        if (l.name() == "frac") {
          if (frac) continue;
          frac = true;
        }
        OpItem it{k, &l, 0, 0};
        const std::int64_t cap = l.capacity();
        switch (kind) {
          case OpKind::adjust: it.amount = pick(-cap, cap); break;
          case OpKind::clamp: it.amount = pick(-1, cap + 1); break;
          default: it.amount = pick(0, 3) == 0 ? pick(0, cap + 2) : pick(0, 2); break;
        }
        if (l.kind() == LimitKind::window && pick(0, 3) == 0) it.window_end = l.window_at(now).end;
        if (kind == OpKind::clamp && pick(0, 1) == 0) it.until = now + pick(0, 5'000'000);
        if (l.kind() == LimitKind::adaptive) {
          params.push_back(l.rate_at(kAdaptiveRates[pick(0, 4)]));
          it.rate = &params.back();
        }
        items.push_back(it);
      }
    }
    if (items.empty()) continue;
    // A lease acquires once (the Limiter's contract); other ops name a recent lease.
    if (kind == OpKind::acquire) leases.push_back(next_lease++);
    const std::uint64_t lease =
        kind == OpKind::acquire || leases.empty()
            ? next_lease - 1
            : leases[static_cast<std::size_t>(pick(0, static_cast<std::int64_t>(leases.size()) - 1))];
    if (leases.size() > 8) leases.erase(leases.begin());
    const Micros ttl = pick(1, 30'000'000);
    const bool report = pick(0, 1) == 1;

    const Op op{.kind = kind, .ns = &ns, .group = {}, .now = now, .keys = keys, .items = items,
                .handles = {},
                .lease_id = lease, .lease_expiry = now + ttl, .report = report};
    std::vector<ItemResult> expect(items.size());
    const bool expect_ok = store.apply(op, expect);

    Op rop = op;
    rop.ns = &rns;
    std::vector<ItemResult> got(items.size());
    const bool got_ok = redis.apply(rop, got);
    EXPECT_EQ(got_ok, expect_ok) << "step " << step;
    for (std::size_t i = 0; i < items.size(); ++i) {
      const ItemResult& e = expect[i];
      const ItemResult& r = got[i];
      const std::string where = "step " + std::to_string(step) + " op " +
                                std::to_string(static_cast<int>(kind)) + " item " +
                                items[i].limit->name() + " key " + std::to_string(items[i].key) +
                                " amount " + std::to_string(items[i].amount);
      EXPECT_EQ(r.ok, e.ok) << where;
      EXPECT_EQ(r.never, e.never) << where;
      EXPECT_EQ(r.available, e.available) << where;
      EXPECT_EQ(r.retry_after, e.retry_after) << where;
      EXPECT_EQ(r.reset_after, e.reset_after) << where;
      EXPECT_EQ(r.window_end, e.window_end) << where;
      EXPECT_EQ(r.held, e.held) << where;
    }
    if (::testing::Test::HasFailure()) return compared;  // the first divergence is the useful one
    ++compared;
  }
  return compared;
}

// Verifies that random sequences of every op kind give the same per-item results through
// the C++ kernel and the Lua script, to the microsecond.
TEST_F(LuaDifferential, RandomOperationsAgree) {
  const std::vector<Limit> limits = {
      Limit::per_minute("rpm", 7),                                  // T = 8571428 + 4/7 µs
      Limit::per_minute("tpm", 30000, 5000),                        // integer T, burst
      Limit::custom("frac", 5, 3, std::chrono::seconds(1)),         // T = 333333 + 1/3
      // The same limit reconfigured (same state, another denominator: rate::normalize).
      Limit::custom("frac", 5, 7, std::chrono::seconds(2)),         // T = 285714 + 2/7
      Limit::per_second("fast", 2'000'000),                         // T = 1/2 µs (a = 0)
      Limit::daily("rpd", 20, "06:30", "America/Los_Angeles"),
      Limit::window("rph", 50, WindowSpec{WindowUnit::hour, "00:00", "Asia/Kolkata"}),
      Limit::concurrency("slots", 3),
      Limit::adaptive("aimd", AimdOptions{.max_rate = 50, .initial_rate = 2}, 3),
  };
  // Every kind; reset rarely (it empties the state the others build).
  const int compared = agree(*store_, limits, 3000, [](std::mt19937_64& rng) {
    std::int64_t kind_no = std::uniform_int_distribution<std::int64_t>(0, 7)(rng);
    if (kind_no == static_cast<int>(OpKind::reset) &&
        std::uniform_int_distribution<int>(0, 5)(rng) != 0) {
      kind_no = 0;
    }
    return static_cast<OpKind>(kind_no);
  });
  EXPECT_GT(compared, 2000);
}

// Verifies the script's fast path (acquire and decide of rate and adaptive items only: its
// own reads and writes, the short all-ok reply) against the kernel, interleaved with the
// other op kinds on the same state, which take the general path.
TEST_F(LuaDifferential, RateOnlyOperationsAgree) {
  const std::vector<Limit> limits = {
      Limit::per_minute("rpm", 7),
      Limit::per_minute("tpm", 30000, 5000),
      Limit::custom("frac", 5, 3, std::chrono::seconds(1)),
      Limit::custom("frac", 5, 7, std::chrono::seconds(2)),
      Limit::per_second("fast", 2'000'000),
      Limit::adaptive("aimd", AimdOptions{.max_rate = 50, .initial_rate = 2}, 3),
  };
  // Mostly acquire and decide; every other kind now and then, reset rarely.
  static constexpr OpKind kKinds[] = {
      OpKind::acquire, OpKind::acquire, OpKind::acquire, OpKind::acquire, OpKind::acquire,
      OpKind::acquire, OpKind::acquire, OpKind::decide,  OpKind::decide,  OpKind::decide,
      OpKind::record,  OpKind::adjust,  OpKind::adjust,  OpKind::release, OpKind::clamp,
      OpKind::read,    OpKind::acquire, OpKind::decide,  OpKind::record,  OpKind::reset};
  const int compared = agree(*store_, limits, 3000, [](std::mt19937_64& rng) {
    return kKinds[std::uniform_int_distribution<std::size_t>(0, std::size(kKinds) - 1)(rng)];
  });
  EXPECT_GT(compared, 2000);
}

}  // namespace
}  // namespace admit
