// Differential test: the Redis script (src/store/redis/admit.lua, run by RedisStore) against
// the C++ store kernel (MemoryStore). Identical random operation sequences — every op kind,
// rate limits with integer and fractional intervals, adaptive parameters, calendar windows in
// zones with daylight saving, concurrency holds, extends, durable lease records and their
// guards — must give identical results, to the microsecond. RedisStore passes the op's time
// to the script (server_time = false) so both sides decide at the same instant.
// Needs a real redis-server: ADMIT_TEST_REDIS_URL (scripts/test starts one); skipped without
// it unless ADMIT_REQUIRE_REDIS=1.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <exception>
#include <functional>
#include <iterator>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <span>
#include <string>
#include <vector>

#include "admit/core/error.hpp"
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
  std::string record, next;        // Op::lease_record / lease_record_next (op points into them)
  Op op;
  std::vector<ItemResult> expect;
  bool expect_ok = false;
  bool expect_not_found = false;  // the kernel threw LeaseNotFound
};

bool has_record(const Op& op) {
  return op.lease_guard || (op.kind == OpKind::acquire && !op.lease_record.empty());
}

// Runs `steps` random operations, of a kind `next_kind` picks, on items of `limits` (each
// picked with probability 1/3 per key; one limit of a name per key and op: later ones of the
// same name are variants of the first, e.g. "frac" reconfigured) through the C++
// kernel (MemoryStore, one op at a time) and the script (RedisStore), and requires identical
// results. max_batch 1: RedisStore::apply per op; more: RedisStore::apply_batch of 1 to
// max_batch ops at a time (random), whose fast-path ops share script runs (op 9).
// durable_pct > 0: that share of acquires writes a lease record, and of adjusts, releases and
// extends is guarded (mostly with the lease's current record, sometimes a stale one, or for
// a lease without one); such an op runs alone (RedisStore::apply), must throw LeaseNotFound
// exactly when the kernel does, and leave the same record (get_lease) behind.
// shadow_admitted: if set, receives how many acquires the kernel admitted although some item
// refused (a shadow limit's).
// @return how many operations were compared.
int agree(RedisStore& redis, const std::vector<Limit>& limits, int steps,
          const std::function<OpKind(std::mt19937_64&)>& next_kind, int max_batch = 1,
          int durable_pct = 0, int* shadow_admitted = nullptr) {
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
  std::map<std::uint64_t, std::string> records;  // the kernel's record of each lease, as last seen
  int record_serial = 0;
  int guarded_applied = 0, guarded_not_found = 0, records_written = 0;
  int compared = 0;
  std::vector<std::unique_ptr<Step>> batch;  // generated, not yet run by RedisStore
  std::size_t batch_size = 1;
  // Runs the batch through RedisStore; false at the first divergence (the useful one).
  // Runs a durable-record op alone through RedisStore.apply, as the kernel ran it.
  auto run_durable = [&](const Step& st) -> bool {
    Op rop = st.op;
    rop.ns = &rns;
    std::vector<ItemResult> got(st.items.size());
    bool got_ok = false;
    bool not_found = false;
    try {
      got_ok = redis.apply(rop, got);
    } catch (const LeaseNotFound&) {
      not_found = true;
    }
    const std::string where = "step " + std::to_string(st.step) + " (durable) op " +
                              std::to_string(static_cast<int>(st.op.kind)) + " lease " +
                              std::to_string(st.op.lease_id);
    EXPECT_EQ(not_found, st.expect_not_found) << where;
    if (!not_found && !st.expect_not_found) {
      EXPECT_EQ(got_ok, st.expect_ok) << where;
      for (std::size_t i = 0; i < st.items.size(); ++i) {
        const ItemResult& e = st.expect[i];
        const ItemResult& r = got[i];
        const std::string item = where + " item " + st.items[i].limit->name();
        EXPECT_EQ(r.ok, e.ok) << item;
        EXPECT_EQ(r.never, e.never) << item;
        EXPECT_EQ(r.available, e.available) << item;
        EXPECT_EQ(r.retry_after, e.retry_after) << item;
        EXPECT_EQ(r.reset_after, e.reset_after) << item;
        EXPECT_EQ(r.window_end, e.window_end) << item;
        EXPECT_EQ(r.held, e.held) << item;
      }
    }
    const auto want = store.get_lease(ns, st.op.group, st.op.lease_id, st.op.now);
    const auto have = redis.get_lease(rns, st.op.group, st.op.lease_id, st.op.now);
    EXPECT_EQ(have.has_value(), want.has_value()) << where;
    if (have && want) {
      EXPECT_EQ(have->data, want->data) << where;
      EXPECT_EQ(have->expiry, want->expiry) << where;
    }
    if (::testing::Test::HasFailure()) return false;
    ++compared;
    return true;
  };
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
      std::vector<std::exception_ptr> errors(ops.size());
      redis.apply_batch(ops, results, std::span<bool>(got_ok.get(), ops.size()), errors);
      for (const auto& e : errors) {
        if (e) std::rethrow_exception(e);
      }
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
      std::vector<std::string_view> names;  // one variant of a name per key and op
      for (std::size_t li = 0; li < limits.size(); ++li) {
        if (pick(0, 2) != 0) continue;
        const Limit& l = limits[li];
        if (std::find(names.begin(), names.end(), l.name()) != names.end()) continue;
        names.push_back(l.name());
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
    // Durable leases: an acquire that writes a record; a guarded adjust, release or extend.
    const bool durable = durable_pct > 0 && pick(1, 100) <= durable_pct &&
                         (kind == OpKind::acquire || kind == OpKind::adjust ||
                          kind == OpKind::release || kind == OpKind::extend);
    if (items.empty() && !durable) continue;
    // A lease acquires once (the Limiter's contract); other ops name a recent lease.
    if (kind == OpKind::acquire) leases.push_back(next_lease++);
    std::uint64_t lease = kind == OpKind::acquire || leases.empty()
                              ? next_lease - 1
                              : leases[static_cast<std::size_t>(
                                    pick(0, static_cast<std::int64_t>(leases.size()) - 1))];
    if (leases.size() > 8) leases.erase(leases.begin());
    if (durable && kind != OpKind::acquire && !records.empty() && pick(0, 3) != 0) {
      auto recent = records.rbegin();  // mostly one of the last leases with a record
      std::advance(recent, pick(0, std::min<std::int64_t>(
                                       4, static_cast<std::int64_t>(records.size()) - 1)));
      lease = recent->first;
    }
    // Durable leases live longer, mostly: time moves by up to 15 minutes a step.
    const Micros ttl = pick(1, durable && pick(0, 2) != 0 ? 3'600'000'000 : 30'000'000);
    const bool report = pick(0, 1) == 1;
    if (durable) {
      const std::string mine =
          "rec " + std::to_string(lease) + "/" + std::to_string(++record_serial);
      if (kind == OpKind::acquire) {
        st->record = mine;
      } else {
        const auto found = records.find(lease);
        // Mostly the record as it is (if any); sometimes one another process overtook.
        st->record = found != records.end() && pick(0, 5) != 0 ? found->second : "stale " + mine;
        st->next = mine;
      }
    }

    st->op = Op{.kind = kind,
                .ns = &ns,
                .group = "g",  // not empty: MemoryStore::Impl::lease_key memcpys from its data()
                .now = now,
                .keys = keys,
                .items = items,
                .handles = {},
                .lease_id = lease,
                .lease_expiry = now + ttl,
                .report = report,
                .lease_record = st->record,
                .lease_record_next = st->next,
                .lease_guard = durable && kind != OpKind::acquire};
    st->expect.resize(items.size());
    try {
      st->expect_ok = store.apply(st->op, st->expect);
    } catch (const LeaseNotFound&) {
      st->expect_not_found = true;
    }
    if (shadow_admitted != nullptr && kind == OpKind::acquire && st->expect_ok &&
        std::any_of(st->expect.begin(), st->expect.end(),
                    [](const ItemResult& r) { return !r.ok; })) {
      ++*shadow_admitted;
    }
    if (has_record(st->op)) {
      if (st->op.lease_guard) {
        ++(st->expect_not_found ? guarded_not_found : guarded_applied);
      } else if (st->expect_ok) {
        ++records_written;
      }
      const auto rec = store.get_lease(ns, st->op.group, lease, now);
      if (rec) {
        records[lease] = rec->data;
      } else {
        records.erase(lease);
      }
      // Alone, after the ops before it (as the single-op sequence applies it).
      if (!run_batch() || !run_durable(*st)) return compared;
      continue;
    }
    batch.push_back(std::move(st));
    if (batch.size() >= batch_size && !run_batch()) return compared;
  }
  run_batch();
  if (durable_pct > 0) {  // the sequence did exercise both outcomes of a guard
    EXPECT_GT(records_written, 100);
    EXPECT_GT(guarded_applied, 100);
    EXPECT_GT(guarded_not_found, 100);
  }
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
    std::int64_t kind_no = std::uniform_int_distribution<std::int64_t>(0, 8)(rng);
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

// Verifies the batch op (9, RedisStore::apply_batch): the sequences of both tests above,
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

// Verifies durable leases (Op::lease_record, lease_guard) and extend against the kernel: random
// sequences of every kind where half the acquires write a record and half the adjusts,
// releases and extends are guarded (by the current record, a stale one, or none): the same
// results, the same LeaseNotFound, the same records (data and expiry) afterwards; then the
// same applied in batches (the guarded ops run alone between them).
TEST_F(LuaDifferential, DurableLeaseOperationsAgree) {
  const std::vector<Limit> limits = {
      Limit::per_minute("rpm", 7),
      Limit::per_minute("tpm", 30000, 5000),
      Limit::custom("frac", 5, 3, std::chrono::seconds(1)),
      Limit::custom("frac", 5, 7, std::chrono::seconds(2)),
      Limit::daily("rpd", 20, "06:30", "America/Los_Angeles"),
      Limit::concurrency("slots", 3),
      Limit::adaptive("aimd", AimdOptions{.max_rate = 50, .initial_rate = 2}, 3),
  };
  static constexpr OpKind kKinds[] = {
      OpKind::acquire, OpKind::acquire, OpKind::acquire, OpKind::acquire, OpKind::decide,
      OpKind::adjust,  OpKind::adjust,  OpKind::release, OpKind::release, OpKind::extend,
      OpKind::extend,  OpKind::extend,  OpKind::record,  OpKind::read,    OpKind::clamp};
  auto kinds = [](std::mt19937_64& rng) {
    return kKinds[std::uniform_int_distribution<std::size_t>(0, std::size(kKinds) - 1)(rng)];
  };
  EXPECT_GT(agree(*store_, limits, 3000, kinds, 1, 50), 2000);
  store_->reset_namespace(store_->open_namespace("diff"));
  EXPECT_GT(agree(*store_, limits, 3000, kinds, 12, 50), 2000);
}

// Verifies shadow mode (Limit::shadow) against the kernel: a shadow limit's refusal is
// reported but does not refuse the op, and an admitted acquire leaves that item unchanged (no
// charge, no slot) while it charges the others. Shadow limits of every kind, some sharing
// their state with an enforced variant of the same limit (shadow mode switched on and off);
// every op kind through the general path, the rate-only ops through the fast path in batches,
// and with durable lease records.
TEST_F(LuaDifferential, ShadowLimitOperationsAgree) {
  const std::vector<Limit> limits = {
      Limit::per_minute("rpm", 7).with_shadow(),
      Limit::per_minute("rpm", 7),  // the same state, enforced
      Limit::per_minute("tpm", 30000, 5000),
      Limit::custom("frac", 5, 3, std::chrono::seconds(1)).with_shadow(),
      Limit::custom("frac", 5, 7, std::chrono::seconds(2)),
      Limit::per_second("fast", 2'000'000).with_shadow(),
      Limit::daily("rpd", 20, "06:30", "America/Los_Angeles").with_shadow(),
      Limit::window("rph", 50, WindowSpec{WindowUnit::hour, "00:00", "Asia/Kolkata"}),
      Limit::concurrency("slots", 3).with_shadow(),
      Limit::concurrency("seats", 2),
      Limit::adaptive("aimd", AimdOptions{.max_rate = 50, .initial_rate = 2}, 3).with_shadow(),
  };
  std::vector<Limit> rate_only;
  for (const Limit& l : limits) {
    if (l.kind() == LimitKind::rate || l.kind() == LimitKind::adaptive) rate_only.push_back(l);
  }
  static constexpr OpKind kKinds[] = {
      OpKind::acquire, OpKind::acquire, OpKind::acquire, OpKind::acquire, OpKind::acquire,
      OpKind::decide,  OpKind::decide,  OpKind::record,  OpKind::adjust,  OpKind::release,
      OpKind::release, OpKind::extend,  OpKind::clamp,   OpKind::read,    OpKind::acquire};
  auto kinds = [](std::mt19937_64& rng) {
    return kKinds[std::uniform_int_distribution<std::size_t>(0, std::size(kKinds) - 1)(rng)];
  };
  int general = 0, batched = 0, durable = 0;
  EXPECT_GT(agree(*store_, limits, 3000, kinds, 1, 0, &general), 2000);
  store_->reset_namespace(store_->open_namespace("diff"));
  EXPECT_GT(agree(*store_, rate_only, 3000, kinds, 12, 0, &batched), 2000);
  store_->reset_namespace(store_->open_namespace("diff"));
  EXPECT_GT(agree(*store_, limits, 3000, kinds, 1, 50, &durable), 2000);
  // The sequences did admit acquires past a shadow limit's refusal, on every path.
  EXPECT_GT(general, 100);
  EXPECT_GT(batched, 100);
  EXPECT_GT(durable, 100);
}

// Verifies the audit log's script (src/store/redis/audit.lua) against MemoryStore's log:
// random appends to two namespaces (entities, resources and states from small sets, so the
// filters match often) with a retention of 20, interleaved with random reads (bounds around
// the live ids, limits 1-12, filters, both orders); every id and every page must be equal.
TEST_F(LuaDifferential, AuditLogOperationsAgree) {
  const std::uint64_t seed = test::test_seed();
  SCOPED_TRACE(test::seed_note(seed));
  std::mt19937_64 rng(seed);
  auto pick = [&](std::size_t n) { return static_cast<std::size_t>(rng() % n); };
  RedisStoreOptions o = store_->options();
  o.prefix += "-audit";
  o.audit_retention = 20;
  RedisStore redis(o);
  MemoryStore memory(MemoryStoreOptions{.audit_retention = 20});
  const std::string names[] = {"diff-a", "diff-b"};
  const std::string entities[] = {"", "user-1", "user-2", "team-*"};
  const std::string resources[] = {"", "gpt-4o", "claude"};
  const std::string states[] = {"", "[]", R"([{"name":"rpm","rate":{"limit":10}}])", "\"x\""};
  std::uint64_t last[2] = {0, 0};
  int reads = 0;
  int nonempty = 0;
  for (int step = 0; step < 1500; ++step) {
    SCOPED_TRACE(step);
    const std::size_t n = pick(2);
    const Namespace rns = redis.open_namespace(names[n]);
    const Namespace mns = memory.open_namespace(names[n]);
    if (pick(3) == 0) {
      AuditEvent e;
      e.time = kStart + step;
      e.principal = pick(2) == 0 ? "library" : "token:ops";
      e.action = pick(2) == 0 ? "limits_set" : "parent_deleted";
      e.entity = entities[pick(std::size(entities))];
      e.resource = resources[pick(std::size(resources))];
      e.before = states[pick(std::size(states))];
      e.after = states[pick(std::size(states))];
      const std::uint64_t id = redis.append_audit(rns, e);
      ASSERT_EQ(id, memory.append_audit(mns, e));
      ASSERT_EQ(id, ++last[n]);
    } else {
      AuditQuery q;
      const std::uint64_t span = last[n] + 3;
      if (pick(2) == 0) q.after_id = rng() % span;
      if (pick(2) == 0) q.before_id = rng() % span;
      q.limit = 1 + pick(12);
      q.entity = entities[pick(std::size(entities))];
      q.resource = pick(2) == 0 ? "" : resources[pick(std::size(resources))];
      q.newest_first = pick(2) == 0;
      const std::vector<AuditEvent> got = redis.read_audit(rns, q);
      ASSERT_EQ(got, memory.read_audit(mns, q))
          << q.after_id << " < id < " << q.before_id << ", limit " << q.limit << ", entity '"
          << q.entity << "', resource '" << q.resource << "', newest first " << q.newest_first;
      ++reads;
      if (!got.empty()) ++nonempty;
    }
  }
  EXPECT_GT(last[0], 30u);  // the retention dropped events in both
  EXPECT_GT(last[1], 30u);
  EXPECT_GT(nonempty, reads / 3);
  for (const std::string& name : names) {
    const std::string k = redis.audit_key_of(name);
    (void)redis.client().command_for_key(k, {"DEL", k, k + ":seq"});
  }
}

}  // namespace
}  // namespace admit
