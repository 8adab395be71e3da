// Differential test: the Redis script (src/store/redis/admit.lua) against the C++ store kernel
// (MemoryStore). Identical random operation sequences — every op kind, rate limits with
// integer and fractional intervals, adaptive parameters, calendar windows, concurrency
// holds — must give identical results, to the microsecond. The script takes the time from
// ARGV (test mode) so both sides decide at the same instant.
// Needs a real redis-server: ADMIT_TEST_REDIS_URL (scripts/test starts one); skipped without
// it unless ADMIT_REQUIRE_REDIS=1.
#include <gtest/gtest.h>

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <optional>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "admit/core/limit.hpp"
#include "admit/store/memory_store.hpp"
#include "admit/store/redis_client.hpp"
#include "support/seed.hpp"

namespace admit {
namespace {

// Redis expires keys by its own clock (PXAT), so the test's time starts a day ahead of it.
Micros start_time() {
  const auto t = std::chrono::system_clock::now().time_since_epoch();
  return std::chrono::duration_cast<std::chrono::microseconds>(t).count() + kMicrosPerDay;
}

std::optional<std::string> env(const char* name) {
  const char* v = std::getenv(name);  // NOLINT(concurrency-mt-unsafe): read before threads
  if (v == nullptr || *v == '\0') return std::nullopt;
  return std::string(v);
}

std::string read_file(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string num(std::int64_t v) { return std::to_string(v); }

int kind_code(LimitKind k) {
  switch (k) {
    case LimitKind::rate: return 0;
    case LimitKind::window: return 1;
    case LimitKind::concurrency: return 2;
    case LimitKind::adaptive: return 3;
  }
  return 0;
}

class LuaDifferential : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto url = env("ADMIT_TEST_REDIS_URL");
    if (!url) {
      if (env("ADMIT_REQUIRE_REDIS").value_or("") == "1") {
        FAIL() << "ADMIT_TEST_REDIS_URL is not set and ADMIT_REQUIRE_REDIS=1";
      }
      GTEST_SKIP() << "ADMIT_TEST_REDIS_URL is not set (scripts/test starts a redis-server)";
    }
    client_.emplace(redis::parse_url(*url));
    script_.emplace(read_file(ADMIT_LUA_SCRIPT));
    ASSERT_FALSE(script_->source().empty()) << ADMIT_LUA_SCRIPT;
  }

  std::optional<redis::Client> client_;
  std::optional<redis::Script> script_;
};

// Verifies that random sequences of every op kind give the same per-item results through
// the C++ kernel and the Lua script, to the microsecond.
TEST_F(LuaDifferential, RandomOperationsAgree) {
  const std::uint64_t seed = test::test_seed();
  SCOPED_TRACE(test::seed_note(seed));
  std::mt19937_64 rng(seed);
  auto pick = [&](std::int64_t lo, std::int64_t hi) {
    return std::uniform_int_distribution<std::int64_t>(lo, hi)(rng);
  };

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
  const double adaptive_rates[] = {0.1, 1.0, 2.5, 7.0, 50.0};

  MemoryStore store(MemoryStoreOptions{.seed = seed});
  const Namespace ns = store.open_namespace("diff");
  const std::string run = "admit-diff:" + std::to_string(seed) + ":" +
                          std::to_string(std::random_device{}()) + ":";
  const std::vector<KeyParts> keys = {{"e0", "model"}, {"e1", "model"}};

  Micros now = start_time();
  std::vector<std::uint64_t> leases;
  std::uint64_t next_lease = 1;
  int compared = 0;
  for (int step = 0; step < 3000; ++step) {
    // Time: often the same instant or 1 µs later, sometimes seconds or minutes (windows roll).
    switch (pick(0, 5)) {
      case 0: break;
      case 1: now += 1; break;
      case 2: now += pick(1, 2'000'000); break;
      case 3: now += pick(1, 20'000'000); break;
      case 4: now += pick(1, 900'000'000); break;
      default: now += pick(1, 300'000); break;
    }
    // Every kind; reset rarely (it empties the state the others build).
    std::int64_t kind_no = pick(0, 7);
    if (kind_no == static_cast<int>(OpKind::reset) && pick(0, 5) != 0) kind_no = 0;
    const auto kind = static_cast<OpKind>(kind_no);
    // Items: distinct (key, limit) pairs.
    std::vector<OpItem> items;
    std::vector<RateParams> params;
    params.reserve(16);
    std::vector<std::string> redis_keys;
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
          params.push_back(l.rate_at(adaptive_rates[pick(0, 4)]));
          it.rate = &params.back();
        }
        items.push_back(it);
        redis_keys.push_back(run + num(k) + ":" + l.name());
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

    const Op op{.kind = kind, .ns = &ns, .now = now, .keys = keys, .items = items, .handles = {},
                .lease_id = lease, .lease_expiry = now + ttl, .report = report};
    std::vector<ItemResult> expect(items.size());
    const bool expect_ok = store.apply(op, expect);

    std::vector<std::string> argv = {num(static_cast<int>(kind)), num(now), std::to_string(lease),
                                     num(ttl), report ? "1" : "0"};
    for (const OpItem& it : items) {
      const Limit& l = *it.limit;
      const RateParams& p = it.rate != nullptr ? *it.rate : l.rate();
      const bool window = l.kind() == LimitKind::window;
      const WindowBounds w = window ? l.window_at(now) : WindowBounds{};
      const Micros next_end = window ? l.window_at(w.end).end : 0;
      for (const std::int64_t v :
           {static_cast<std::int64_t>(kind_code(l.kind())), it.amount, l.capacity(), p.a, p.b,
            p.r, p.tol_us, p.tol_rem, it.window_end, it.until, w.start, w.end, next_end}) {
        argv.push_back(num(v));
      }
    }
    const redis::Reply reply = client_->evalsha(*script_, redis_keys, argv);
    ASSERT_TRUE(reply.is_array()) << "step " << step << ": " << redis::to_string(reply);
    ASSERT_EQ(reply.elements.size(), 2 + 7 * items.size());
    EXPECT_EQ(reply.elements[0].integer, expect_ok ? 1 : 0) << "step " << step;
    EXPECT_EQ(reply.elements[1].integer, now);
    for (std::size_t i = 0; i < items.size(); ++i) {
      const ItemResult& e = expect[i];
      const auto* r = &reply.elements[2 + 7 * i];
      const std::string where = "step " + std::to_string(step) + " op " +
                                std::to_string(static_cast<int>(kind)) + " item " +
                                items[i].limit->name() + " key " + std::to_string(items[i].key) +
                                " amount " + std::to_string(items[i].amount);
      EXPECT_EQ(r[0].integer, e.ok ? 1 : 0) << where;
      EXPECT_EQ(r[1].integer, e.never ? 1 : 0) << where;
      EXPECT_EQ(r[2].integer, e.available) << where;
      EXPECT_EQ(r[3].integer, e.retry_after) << where;
      EXPECT_EQ(r[4].integer, e.reset_after) << where;
      EXPECT_EQ(r[5].integer, e.window_end) << where;
      EXPECT_EQ(r[6].integer, e.held) << where;
    }
    if (HasFailure()) return;  // the first divergence is the useful one
    ++compared;
  }
  EXPECT_GT(compared, 2000);
  // Leave nothing behind on the shared server.
  for (std::uint16_t k = 0; k < keys.size(); ++k) {
    for (const Limit& l : limits) (void)client_->command({"DEL", run + num(k) + ":" + l.name()});
  }
}

}  // namespace
}  // namespace admit
