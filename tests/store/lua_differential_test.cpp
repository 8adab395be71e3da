// Differential test: the Redis script (src/store/redis/admit.lua, run by RedisStore) against
// the C++ store kernel (MemoryStore). Identical random operation sequences — every op kind,
// rate limits with integer and fractional intervals, adaptive parameters, calendar windows in
// zones with daylight saving, concurrency holds — must give identical results, to the
// microsecond. RedisStore passes the op's time to the script (server_time = false) so both
// sides decide at the same instant.
// Needs a real redis-server: ADMIT_TEST_REDIS_URL (scripts/test starts one); skipped without
// it unless ADMIT_REQUIRE_REDIS=1.
#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <functional>
#include <iterator>
#include <memory>
#include <optional>
#include <random>
#include <span>
#include <string>
#include <vector>

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

// One generated operation: what it names (kept alive until the script has run it) and what
// the kernel answered.
struct Step {
  int step = 0;
  std::vector<KeyParts> keys;
  std::vector<OpItem> items;
  std::vector<RateParams> params;  // adaptive items' rates (items point into it)
  Op op;
  std::vector<ItemResult> expect;
  bool expect_ok = false;
};

// Runs `steps` random operations, of a kind `next_kind` picks, on items of `limits` (each
// picked with probability 1/3 per key; one "frac" variant per key and op) through the C++
// kernel (MemoryStore, one op at a time) and the script (RedisStore), and requires identical
// results. max_batch 1: RedisStore::apply per op; more: RedisStore::apply_batch of 1 to
// max_batch ops at a time (random), whose fast-path ops share script runs (op 9).
// @return how many operations were compared.
int agree(RedisStore& redis, const std::vector<Limit>& limits, int steps,
          const std::function<OpKind(std::mt19937_64&)>& next_kind, int max_batch = 1) {
  const std::uint64_t seed = test::test_seed();
  SCOPED_TRACE(test::seed_note(seed));
  std::mt19937_64 rng(seed);
  auto pick = [&](std::int64_t lo, std::int64_t hi) {
    return std::uniform_int_distribution<std::int64_t>(lo, hi)(rng);
  };

  MemoryStore store(MemoryStoreOptions{.seed = seed});
  const Namespace ns = store.open_namespace("diff");
  const Namespace rns = redis.open_namespace("diff");
  // Each op names two of three keys, in either order (a batch's ops then name different
  // keys at the same index).
  const std::vector<KeyParts> pool = {{"e0", "model"}, {"e1", "model"}, {"e2", "model"}};

  Micros now = kStart;
  std::vector<std::uint64_t> leases;
  std::uint64_t next_lease = 1;
  int compared = 0;
  std::vector<std::unique_ptr<Step>> batch;  // generated, not yet run by RedisStore
  std::size_t batch_size = 1;
  // Runs the batch through RedisStore; false at the first divergence (the useful one).
  auto run_batch = [&]() -> bool {
    if (batch.empty()) return true;
    std::vector<Op> ops;
    std::vector<std::vector<ItemResult>> got;
    for (const auto& st : batch) {
      Op rop = st->op;
      rop.ns = &rns;
      ops.push_back(rop);
      got.emplace_back(st->items.size());
    }
    std::vector<std::span<ItemResult>> results(got.begin(), got.end());
    std::unique_ptr<bool[]> got_ok(new bool[ops.size()]);
    if (max_batch == 1) {
      got_ok[0] = redis.apply(ops[0], got[0]);
    } else {
      redis.apply_batch(ops, results, std::span<bool>(got_ok.get(), ops.size()));
    }
    for (std::size_t b = 0; b < batch.size(); ++b) {
      const Step& st = *batch[b];
      EXPECT_EQ(got_ok[b], st.expect_ok) << "step " << st.step;
      for (std::size_t i = 0; i < st.items.size(); ++i) {
        const ItemResult& e = st.expect[i];
        const ItemResult& r = got[b][i];
        const std::string where =
            "step " + std::to_string(st.step) + " (batch of " + std::to_string(batch.size()) +
            ") op " + std::to_string(static_cast<int>(st.op.kind)) + " item " +
            st.items[i].limit->name() + " key " + std::to_string(st.items[i].key) + " amount " +
            std::to_string(st.items[i].amount);
        EXPECT_EQ(r.ok, e.ok) << where;
        EXPECT_EQ(r.never, e.never) << where;
        EXPECT_EQ(r.available, e.available) << where;
        EXPECT_EQ(r.retry_after, e.retry_after) << where;
        EXPECT_EQ(r.reset_after, e.reset_after) << where;
        EXPECT_EQ(r.window_end, e.window_end) << where;
        EXPECT_EQ(r.held, e.held) << where;
      }
      if (::testing::Test::HasFailure()) return false;
      ++compared;
    }
    batch.clear();
    batch_size = static_cast<std::size_t>(pick(1, max_batch));
    return true;
  };
  for (int step = 0; step < steps; ++step) {
    // Time: often the same instant or 1 µs later, sometimes seconds or minutes (windows roll).
    switch (pick(0, 5)) {
      case 0:
        break;
      case 1:
        now += 1;
        break;
      case 2:
        now += pick(1, 2'000'000);
        break;
      case 3:
        now += pick(1, 20'000'000);
        break;
      case 4:
        now += pick(1, 900'000'000);
        break;
      default:
        now += pick(1, 300'000);
        break;
    }
    const OpKind kind = next_kind(rng);
    auto st = std::make_unique<Step>();
    st->step = step;
    const std::int64_t k0 = pick(0, 2);
    const std::vector<KeyParts>& keys = st->keys = {
        pool[static_cast<std::size_t>(k0)], pool[static_cast<std::size_t>((k0 + pick(1, 2)) % 3)]};
    // Items: distinct (key, limit) pairs.
    std::vector<OpItem>& items = st->items;
    std::vector<RateParams>& params = st->params;
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
          case OpKind::adjust:
            it.amount = pick(-cap, cap);
            break;
          case OpKind::clamp:
            it.amount = pick(-1, cap + 1);
            break;
          default:
            it.amount = pick(0, 3) == 0 ? pick(0, cap + 2) : pick(0, 2);
            break;
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
    const std::uint64_t lease = kind == OpKind::acquire || leases.empty()
                                    ? next_lease - 1
                                    : leases[static_cast<std::size_t>(
                                          pick(0, static_cast<std::int64_t>(leases.size()) - 1))];
    if (leases.size() > 8) leases.erase(leases.begin());
    const Micros ttl = pick(1, 30'000'000);
    const bool report = pick(0, 1) == 1;

    st->op = Op{.kind = kind,
                .ns = &ns,
                .group = {},
                .now = now,
                .keys = keys,
                .items = items,
                .handles = {},
                .lease_id = lease,
                .lease_expiry = now + ttl,
                .report = report};
    st->expect.resize(items.size());
    st->expect_ok = store.apply(st->op, st->expect);
    batch.push_back(std::move(st));
    if (batch.size() >= batch_size && !run_batch()) return compared;
  }
  run_batch();
  return compared;
}

// Verifies that random sequences of every op kind give the same per-item results through
// the C++ kernel and the Lua script, to the microsecond.
TEST_F(LuaDifferential, RandomOperationsAgree) {
  const std::vector<Limit> limits = {
      Limit::per_minute("rpm", 7),                           // T = 8571428 + 4/7 µs
      Limit::per_minute("tpm", 30000, 5000),                 // integer T, burst
      Limit::custom("frac", 5, 3, std::chrono::seconds(1)),  // T = 333333 + 1/3
      // The same limit reconfigured (same state, another denominator: rate::normalize).
      Limit::custom("frac", 5, 7, std::chrono::seconds(2)),  // T = 285714 + 2/7
      Limit::per_second("fast", 2'000'000),                  // T = 1/2 µs (a = 0)
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

// Verifies the batch op (11, RedisStore::apply_batch): the sequences of both tests above,
// applied in random-sized batches (1-12 ops; the fast-path ops of a batch share a script run,
// the others run alone in order), match the kernel applied one op at a time, to the µs.
TEST_F(LuaDifferential, BatchedOperationsAgree) {
  const std::vector<Limit> limits = {
      Limit::per_minute("rpm", 7),
      Limit::per_minute("tpm", 30000, 5000),
      Limit::custom("frac", 5, 3, std::chrono::seconds(1)),
      Limit::custom("frac", 5, 7, std::chrono::seconds(2)),
      Limit::per_second("fast", 2'000'000),
      Limit::daily("rpd", 20, "06:30", "America/Los_Angeles"),
      Limit::concurrency("slots", 3),
      Limit::adaptive("aimd", AimdOptions{.max_rate = 50, .initial_rate = 2}, 3),
  };
  const std::vector<Limit> rate_only(limits.begin(), limits.begin() + 5);
  // Mostly acquire and decide (batched); the other kinds break batches up.
  static constexpr OpKind kKinds[] = {
      OpKind::acquire, OpKind::acquire, OpKind::acquire, OpKind::acquire, OpKind::acquire,
      OpKind::acquire, OpKind::decide,  OpKind::decide,  OpKind::record,  OpKind::adjust,
      OpKind::release, OpKind::clamp,   OpKind::read,    OpKind::acquire, OpKind::decide};
  auto kinds = [](std::mt19937_64& rng) {
    return kKinds[std::uniform_int_distribution<std::size_t>(0, std::size(kKinds) - 1)(rng)];
  };
  EXPECT_GT(agree(*store_, rate_only, 3000, kinds, 12), 2000);
  store_->reset_namespace(store_->open_namespace("diff"));
  EXPECT_GT(agree(*store_, limits, 3000, kinds, 12), 2000);
}

}  // namespace
}  // namespace admit
