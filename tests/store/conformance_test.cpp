// One conformance suite for every store: the same cases, driven through the public Limiter
// (with a ManualClock) and through Store::apply directly, run against each store factory in
// kFactories. A store joins the suite with one line there; a factory that cannot make its store
// here (e.g. no Redis server) skips with the reason. The last cases replay random operation
// sequences against a MemoryStore and expect identical results.
#include <gtest/gtest.h>
#include <stdlib.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <future>
#include <memory>
#include <ostream>
#include <random>
#include <span>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "admit/core/clock.hpp"
#include "admit/core/error.hpp"
#include "admit/core/limit.hpp"
#include "admit/core/limit_codec.hpp"
#include "admit/limiter.hpp"
#include "admit/store/memory_store.hpp"
#include "admit/store/redis_store.hpp"
#include "admit/store/sqlite_store.hpp"
#include "support/redis_env.hpp"
#include "support/store_ops.hpp"
#include "support/temp_dir.hpp"
#include "support/test_support.hpp"

namespace admit {
namespace {

using namespace std::chrono_literals;
using test::available;
using test::cat;
using test::kStart;
using test::take;

constexpr Micros kSec = kMicrosPerSecond;
constexpr Micros kMs = 1000;
/// kStart's UTC day ends 6,400 s later.
constexpr Micros kUtcDayEnd = (kStart / kMicrosPerDay + 1) * kMicrosPerDay;

/// A fresh directory under $TMPDIR (or /tmp), removed with everything in it.
using test::TempDir;

/// What a case may ask of the store it makes; the rest is the store's default.
struct StoreTuning {
  std::size_t audit_retention = kDefaultAuditRetention;
};

/// Makes a fresh, empty store whose files (if any) live under `dir`; returns nullptr and
/// sets `why` when the store cannot be made here (the cases then skip).
using MakeStore = std::function<std::unique_ptr<Store>(
    const std::string& dir, const StoreTuning& tuning, std::string& why)>;

struct StoreFactory {
  std::string name;
  MakeStore make_tuned;
  /// A new store made over the same directory sees the state of the previous one.
  bool persistent = false;
  /// Several stores may be open over one directory at once (as several processes would be).
  bool shared = false;

  std::unique_ptr<Store> make(const std::string& dir, std::string& why,
                              const StoreTuning& tuning = {}) const {
    return make_tuned(dir, tuning, why);
  }
};

void PrintTo(const StoreFactory& f, std::ostream* os) { *os << f.name; }

std::unique_ptr<Store> make_sqlite(const std::string& dir, Durability durability,
                                   const StoreTuning& tuning) {
  SqliteStoreOptions o;
  o.path = dir + "/conformance.db";
  o.durability = durability;
  o.audit_retention = tuning.audit_retention;
  o.write_behind_interval = 5 * kMs;  // the flusher runs often, between the cases' operations
  return std::make_unique<SqliteStore>(o);
}

// A RedisStore deciding at the cases' (manual) time, its keys under a prefix of its own per
// directory: remade over the same directory, it sees the same keys. The deny cache is off here:
// a locally answered denial reports only the cached limit (RedisStoreTest covers it).
std::unique_ptr<Store> make_redis(const std::string& dir, bool cluster, const StoreTuning& tuning,
                                  std::string& why) {
  const auto client = test::redis_options(cluster, why);
  if (!client) return nullptr;
  RedisStoreOptions o;
  o.client = *client;
  o.audit_retention = tuning.audit_retention;
  o.prefix = "admit-conformance/" + std::filesystem::path(dir).filename().string();
  o.server_time = false;
  o.deny_cache = false;
  return std::make_unique<RedisStore>(o);
}

// Every store the suite runs on. A factory that cannot make its store returns nullptr with the
// reason (the cases skip, or fail with ADMIT_REQUIRE_REDIS=1).
const StoreFactory kFactories[] = {
    {"memory",
     [](const std::string&, const StoreTuning& t, std::string&) -> std::unique_ptr<Store> {
       return std::make_unique<MemoryStore>(
           MemoryStoreOptions{.audit_retention = t.audit_retention});
     }},
    {"sqlite",
     [](const std::string& dir, const StoreTuning& t, std::string&) {
       return make_sqlite(dir, Durability::per_op, t);
     },
     true, true},
    {"sqlite_write_behind",
     [](const std::string& dir, const StoreTuning& t, std::string&) {
       return make_sqlite(dir, Durability::write_behind, t);
     },
     true},
    {"redis",
     [](const std::string& dir, const StoreTuning& t, std::string& why) {
       return make_redis(dir, false, t, why);
     },
     true, true},
    {"redis_cluster",
     [](const std::string& dir, const StoreTuning& t, std::string& why) {
       return make_redis(dir, true, t, why);
     },
     true, true},
};

using test::Applied;
using test::make_op;

class StoreConformance : public ::testing::TestWithParam<StoreFactory> {
 protected:
  void SetUp() override {
    std::string why;
    store_ = GetParam().make(dir_.path(), why);
    if (store_ == nullptr) {
      if (test::redis_required()) FAIL() << GetParam().name << " store unavailable: " << why;
      GTEST_SKIP() << GetParam().name << " store unavailable: " << why;
    }
    ns_ = store_->open_namespace("conformance");
  }

  Store& store() { return *store_; }
  std::unique_ptr<Limiter> make_limiter(LimiterOptions options = {}) {
    return std::make_unique<Limiter>(*store_, clock_, std::move(options));
  }

  Applied apply(OpKind kind, Micros now, const std::vector<KeyParts>& keys,
                const std::vector<OpItem>& items, std::uint64_t lease = 0, Micros expiry = 0,
                const Namespace* in = nullptr) {
    return test::apply_op(*store_, in != nullptr ? *in : ns_, kind, now, keys, items, lease,
                          expiry);
  }
  Applied one(OpKind kind, Micros now, const KeyParts& key, const Limit& l, std::int64_t amount,
              std::uint64_t lease = 0, Micros expiry = 0, const Namespace* in = nullptr) {
    return apply(kind, now, {key}, {OpItem{0, &l, amount, 0}}, lease, expiry, in);
  }
  std::int64_t avail(Micros now, const KeyParts& key, const Limit& l,
                     const Namespace* in = nullptr) {
    return one(OpKind::read, now, key, l, 0, 0, 0, in).items.at(0).available;
  }

  TempDir dir_;  // first: removed after the store is closed
  std::unique_ptr<Store> store_;
  Namespace ns_;
  ManualClock clock_{kStart};
  const Limit rpm_ = Limit::per_minute("rpm", 10);  // T = 6 s
  const Limit rpd_ = Limit::daily("rpd", 5);
  const Limit slots_ = Limit::concurrency("inflight", 2);
};

// ------------------------------------------------------------------------ rate limits

// Verifies a rate limit admits its burst, denies the next request with the exact retry_after
// (also for a rational interval, 60/7 s), and refills at its rate.
TEST_P(StoreConformance, RateBurstExactRetryAfterAndRefill) {
  auto lim = make_limiter();
  lim->set_limits("m", {Limit::per_minute("rpm", 10)});
  for (int i = 0; i < 10; ++i) ASSERT_TRUE(take(*lim, "u", "m", {{"rpm", 1}}).allowed) << i;
  Decision d = take(*lim, "u", "m", {{"rpm", 1}});
  EXPECT_FALSE(d.allowed);
  EXPECT_EQ(d.code, Code::rate_exceeded);
  EXPECT_EQ(d.retry_after, 6 * kSec);
  clock_.advance(6 * kSec - 1);
  d = take(*lim, "u", "m", {{"rpm", 1}});
  EXPECT_FALSE(d.allowed);
  EXPECT_EQ(d.retry_after, 1);
  clock_.advance(1);
  EXPECT_TRUE(take(*lim, "u", "m", {{"rpm", 1}}).allowed);

  // 7 per minute: T = 8,571,428.571... µs, so the wait is 8,571,429 µs.
  lim->set_limits("odd", {Limit::custom("odd", 7, 7, 60s)});
  for (int i = 0; i < 7; ++i) ASSERT_TRUE(take(*lim, "u", "odd", {{"odd", 1}}).allowed) << i;
  d = take(*lim, "u", "odd", {{"odd", 1}});
  EXPECT_EQ(d.retry_after, 8'571'429);
  clock_.advance(8'571'428);
  d = take(*lim, "u", "odd", {{"odd", 1}});
  EXPECT_FALSE(d.allowed);
  EXPECT_EQ(d.retry_after, 1);
  clock_.advance(1);
  EXPECT_TRUE(take(*lim, "u", "odd", {{"odd", 1}}).allowed);

  // Burst 20 at 10 per second: 20 at once, then one per 100 ms; full again after 2 s.
  lim->set_limits("b", {Limit::per_second("rps", 10, 20)});
  EXPECT_TRUE(take(*lim, "u", "b", {{"rps", 20}}).allowed);
  d = take(*lim, "u", "b", {{"rps", 1}});
  EXPECT_EQ(d.retry_after, 100 * kMs);
  EXPECT_EQ(take(*lim, "u", "b", {{"rps", 21}}).code, Code::exceeds_capacity);
  clock_.advance(kSec);
  EXPECT_EQ(available(*lim, "u", "b", "rps"), 10);
  clock_.advance(kSec);
  EXPECT_EQ(available(*lim, "u", "b", "rps"), 20);
}

// ------------------------------------------------------------------------ windows

// Verifies a daily window in a time zone ends at local midnight: kStart is 14:13:20 PST, so the
// window ends at 08:00 UTC, 35,200 s later, exactly.
TEST_P(StoreConformance, CalendarDayWindowEndsAtLocalMidnight) {
  auto lim = make_limiter();
  lim->set_limits("m", {Limit::daily("rpd", 5, "00:00", "America/Los_Angeles")});
  EXPECT_TRUE(take(*lim, "u", "m", {{"rpd", 5}}).allowed);
  Decision d = take(*lim, "u", "m", {{"rpd", 1}});
  EXPECT_FALSE(d.allowed);
  EXPECT_EQ(d.code, Code::window_exceeded);
  EXPECT_EQ(d.retry_after, 35'200 * kSec);
  clock_.advance(35'200 * kSec - 1);
  EXPECT_EQ(take(*lim, "u", "m", {{"rpd", 1}}).retry_after, 1);
  clock_.advance(1);
  EXPECT_TRUE(take(*lim, "u", "m", {{"rpd", 1}}).allowed);
  EXPECT_EQ(available(*lim, "u", "m", "rpd"), 4);
}

// Verifies lease adjustments of a window: refunds count within the lease's window only, and
// usage added after the window changed counts in the new window (and only it is refundable).
TEST_P(StoreConformance, WindowAdjustWithinAndAcrossWindows) {
  auto lim = make_limiter();
  lim->set_limits("m", {Limit::daily("rpd", 10)});
  AcquireOptions long_ttl;  // the lease outlives the window (an expired lease refunds nothing)
  long_ttl.lease_ttl = 3 * kMicrosPerHour;
  Lease l = lim->try_acquire("u", "m", {{"rpd", 3}}, long_ttl);
  ASSERT_TRUE(l.allowed());
  (void)l.adjust({{"rpd", -2}});
  EXPECT_EQ(available(*lim, "u", "m", "rpd"), 9);
  (void)l.adjust({{"rpd", 4}});
  EXPECT_EQ(available(*lim, "u", "m", "rpd"), 5);
  clock_.set(kUtcDayEnd);  // a new window
  EXPECT_EQ(available(*lim, "u", "m", "rpd"), 10);
  (void)l.adjust({{"rpd", -1}});  // the old window's usage is not refunded into the new one
  EXPECT_EQ(available(*lim, "u", "m", "rpd"), 10);
  (void)l.adjust({{"rpd", 2}});  // counts in the new window
  EXPECT_EQ(available(*lim, "u", "m", "rpd"), 8);
  l.rollback();  // refunds what it holds in this window: 2
  EXPECT_EQ(available(*lim, "u", "m", "rpd"), 10);
}

// ------------------------------------------------------------------------ concurrency, leases

// Verifies concurrency slots: held until the lease ends, the retry_after of a full limit is the
// earliest expiry, and an expired lease's slot is reclaimed without the lease ever ending.
TEST_P(StoreConformance, ConcurrencySlotsReleaseAndExpiry) {
  auto lim = make_limiter();
  lim->set_limits("m", {Limit::concurrency("inflight", 2)});
  AcquireOptions ttl;
  ttl.lease_ttl = 10 * kSec;
  Lease a = lim->try_acquire("u", "m", {}, ttl);
  ASSERT_TRUE(a.allowed());
  clock_.advance(kSec);
  Lease b = lim->try_acquire("u", "m", {}, ttl);
  ASSERT_TRUE(b.allowed());
  Lease c = lim->try_acquire("u", "m", {}, ttl);
  EXPECT_FALSE(c.allowed());
  EXPECT_EQ(c.decision().code, Code::concurrency_exceeded);
  EXPECT_EQ(c.decision().retry_after, 9 * kSec);  // a expires at +10 s
  a.commit();
  EXPECT_EQ(available(*lim, "u", "m", "inflight"), 1);
  Lease d = lim->try_acquire("u", "m", {}, ttl);  // expires at +11 s
  ASSERT_TRUE(d.allowed());
  EXPECT_EQ(lim->try_acquire("u", "m", {}, ttl).decision().retry_after, 10 * kSec);

  clock_.advance(10 * kSec - 1);
  EXPECT_EQ(available(*lim, "u", "m", "inflight"), 0);
  clock_.advance(1);  // b and d expired: both slots are back though neither lease ended
  EXPECT_EQ(available(*lim, "u", "m", "inflight"), 2);
  Lease e = lim->try_acquire("u", "m", {}, ttl);
  ASSERT_TRUE(e.allowed());
  b.rollback();  // after its TTL: frees only what it still holds (nothing)
  EXPECT_EQ(available(*lim, "u", "m", "inflight"), 1);
}

// Verifies lease adjust (refund capped at what was consumed; debt allowed with an exact
// retry_after), explicit rollback and commit (scope ends: the test after this one).
TEST_P(StoreConformance, LeaseAdjustCommitRollback) {
  auto lim = make_limiter();
  lim->set_limits("m", {Limit::per_minute("tpm", 1000)});  // T = 60 ms
  Lease l = lim->try_acquire("u", "m", {{"tpm", 600}});
  ASSERT_TRUE(l.allowed());
  EXPECT_EQ(available(*lim, "u", "m", "tpm"), 400);
  (void)l.adjust({{"tpm", -200}});
  EXPECT_EQ(available(*lim, "u", "m", "tpm"), 600);
  (void)l.adjust({{"tpm", 900}});  // 1,300 consumed: 78 s of debt
  EXPECT_EQ(available(*lim, "u", "m", "tpm"), 0);
  EXPECT_EQ(lim->decide("u", "m", {{"tpm", 1}}).retry_after, 18'060 * kMs);
  l.rollback();
  EXPECT_EQ(available(*lim, "u", "m", "tpm"), 1000);
  EXPECT_THROW((void)l.adjust({{"tpm", 1}}), LeaseError);
}

// Verifies commit keeps what a lease consumed, rollback gives it back, and a lease left to
// its scope commits when the scope ends normally and rolls back when an exception ends it.
TEST_P(StoreConformance, LeaseCommitKeepsRollbackRefundsScopeDecides) {
  auto lim = make_limiter();
  lim->set_limits("m", {Limit::per_minute("tpm", 1000)});
  {
    Lease k = lim->try_acquire("u", "m", {{"tpm", 100}});
    ASSERT_TRUE(k.allowed());
    k.commit();
  }
  EXPECT_EQ(available(*lim, "u", "m", "tpm"), 900);
  {
    Lease r = lim->try_acquire("u", "m", {{"tpm", 50}});
    ASSERT_TRUE(r.allowed());
    EXPECT_EQ(available(*lim, "u", "m", "tpm"), 850);
    r.rollback();
  }
  EXPECT_EQ(available(*lim, "u", "m", "tpm"), 900);
  {
    Lease s = lim->try_acquire("u", "m", {{"tpm", 10}});
    ASSERT_TRUE(s.allowed());
  }  // left normally: committed
  EXPECT_EQ(available(*lim, "u", "m", "tpm"), 890);
  try {
    Lease e = lim->try_acquire("u", "m", {{"tpm", 20}});
    ASSERT_TRUE(e.allowed());
    EXPECT_EQ(available(*lim, "u", "m", "tpm"), 870);
    throw std::runtime_error("the call failed");
  } catch (const std::runtime_error&) {
  }  // left by the exception: rolled back
  EXPECT_EQ(available(*lim, "u", "m", "tpm"), 890);
}

// ------------------------------------------------------------------------ parents

// Verifies an acquire consumes from the entity and its parent all or nothing: an exhausted
// parent denies the child and nothing is taken from the child.
TEST_P(StoreConformance, ParentsAreAllOrNothing) {
  auto lim = make_limiter();
  lim->set_limits("m", {Limit::per_minute("tpm", 80)});
  lim->set_entity_limits("team", "m", {Limit::per_minute("tpm", 100)});
  lim->set_parent("u1", "team");
  lim->set_parent("u2", "team");
  EXPECT_TRUE(take(*lim, "u1", "m", {{"tpm", 80}}).allowed);
  EXPECT_EQ(available(*lim, "u1", "m", "tpm", "team"), 20);
  const Decision d = take(*lim, "u2", "m", {{"tpm", 30}});
  EXPECT_FALSE(d.allowed);
  ASSERT_EQ(d.violations.size(), 1u);
  EXPECT_EQ(d.violations[0].entity, "team");
  EXPECT_EQ(available(*lim, "u2", "m", "tpm"), 80);  // nothing taken from the child
  EXPECT_EQ(available(*lim, "u2", "m", "tpm", "team"), 20);
  EXPECT_TRUE(take(*lim, "u2", "m", {{"tpm", 20}}).allowed);
  EXPECT_EQ(available(*lim, "u2", "m", "tpm"), 60);
  EXPECT_EQ(available(*lim, "u2", "m", "tpm", "team"), 0);
}

// ------------------------------------------------------------------------ adaptation

// Verifies an adaptive limit is applied at the controller's rate (OpItem::rate): it paces at
// 4/s, combines with a fixed limit all or nothing, follows a rate increase, and refunds on
// rollback.
TEST_P(StoreConformance, AdaptiveLimitPacesAtTheControllersRate) {
  auto lim = make_limiter();
  lim->set_limits(
      "m",
      {Limit::per_minute("rpm", 100),
       Limit::adaptive(
           "aimd", AimdOptions{.max_rate = 100, .initial_rate = 4, .slow_start_threshold = 4})});
  Lease a = lim->try_acquire("acct", "m", {{"rpm", 1}});
  ASSERT_TRUE(a.allowed());
  Lease b = lim->try_acquire("acct", "m", {{"rpm", 1}});
  ASSERT_FALSE(b.allowed());
  EXPECT_EQ(b.decision().retry_after, 250 * kMs);
  ASSERT_EQ(b.decision().violations.size(), 1u);
  EXPECT_EQ(b.decision().violations[0].kind, LimitKind::adaptive);
  EXPECT_EQ(available(*lim, "acct", "m", "rpm"), 99);
  EXPECT_TRUE(a.mark_success());  // 4 -> 5 per second
  clock_.advance(250 * kMs);
  Lease c = lim->try_acquire("acct", "m", {{"rpm", 1}});
  ASSERT_TRUE(c.allowed());
  clock_.advance(200 * kMs - 1);
  EXPECT_FALSE(lim->try_acquire("acct", "m", {{"rpm", 1}}).allowed());
  clock_.advance(1);
  {
    Lease d = lim->try_acquire("acct", "m", {{"rpm", 1}});
    ASSERT_TRUE(d.allowed());
    d.rollback();  // its slot is free again
  }
  EXPECT_TRUE(lim->try_acquire("acct", "m", {{"rpm", 1}}).allowed());
}

// Verifies Limiter::clamp lowers rate and window state to what a provider reports, never
// raises it, skips concurrency limits, and holds a bucket until the instant given.
TEST_P(StoreConformance, ClampLowersNeverRaisesAndHolds) {
  auto lim = make_limiter();
  lim->set_limits("m", {Limit::per_minute("rpm", 60), Limit::daily("rpd", 1000),
                        Limit::concurrency("slots", 2)});
  const std::vector<StateClamp> first{{"rpm", 10, 0}, {"rpd", 500, 0}, {"slots", 0, 0}};
  const auto out = lim->clamp("acct", "m", first);
  ASSERT_EQ(out.size(), 2u);
  EXPECT_EQ(available(*lim, "acct", "m", "rpm"), 10);
  EXPECT_EQ(available(*lim, "acct", "m", "rpd"), 500);
  EXPECT_EQ(available(*lim, "acct", "m", "slots"), 2);
  const std::vector<StateClamp> higher{{"rpm", 30, 0}, {"rpd", 800, 0}};
  (void)lim->clamp("acct", "m", higher);
  EXPECT_EQ(available(*lim, "acct", "m", "rpm"), 10);
  EXPECT_EQ(available(*lim, "acct", "m", "rpd"), 500);
  const std::vector<StateClamp> hold{{"rpm", -1, kStart + 3 * kSec}};
  (void)lim->clamp("acct", "m", hold);
  const Decision d = take(*lim, "acct", "m", {{"rpm", 1}});
  EXPECT_FALSE(d.allowed);
  EXPECT_EQ(d.retry_after, 3 * kSec);
  clock_.advance(3 * kSec);
  EXPECT_TRUE(take(*lim, "acct", "m", {{"rpm", 1}}).allowed);
}

// ------------------------------------------------------------------------ decide, record, reset

// Verifies decide consumes nothing, record_usage consumes unconditionally (into debt, covered
// exactly by retry_after), stats read the state, and reset forgets it.
TEST_P(StoreConformance, DecideRecordReadReset) {
  auto lim = make_limiter();
  lim->set_limits("m", {Limit::per_minute("rpm", 10)});
  EXPECT_TRUE(lim->decide("u", "m", {{"rpm", 10}}).allowed);
  EXPECT_EQ(lim->decide("u", "m", {{"rpm", 11}}).code, Code::exceeds_capacity);
  EXPECT_EQ(available(*lim, "u", "m", "rpm"), 10);
  EXPECT_TRUE(lim->record_usage("u", "m", {{"rpm", 15}}).allowed);
  const Decision d = lim->decide("u", "m", {{"rpm", 1}});
  EXPECT_FALSE(d.allowed);
  EXPECT_EQ(d.retry_after, 36 * kSec);  // 90 s of usage, 60 s of tolerance, +6 s for 1 unit
  const ResourceStats st = lim->stats("u", "m");
  ASSERT_EQ(st.limits.size(), 1u);
  EXPECT_EQ(st.limits[0].available, 0);
  EXPECT_EQ(st.limits[0].reset_after, 90 * kSec);
  lim->reset("u", "m");
  EXPECT_EQ(available(*lim, "u", "m", "rpm"), 10);
}

// Verifies decide and read create no state for fresh keys, and reset leaves none.
TEST_P(StoreConformance, DecideAndReadCreateNoState) {
  const KeyParts k{"e", "r"};
  const Applied d = one(OpKind::decide, kStart, k, rpm_, 10);
  EXPECT_TRUE(d.ok);
  EXPECT_EQ(d.items[0].available, 10);
  EXPECT_TRUE(one(OpKind::decide, kStart, k, rpm_, 11).items[0].never);
  EXPECT_EQ(avail(kStart, k, slots_), 2);
  EXPECT_EQ(store().size(), 0u);
  ASSERT_TRUE(one(OpKind::acquire, kStart, k, rpm_, 7).ok);
  const Applied no = one(OpKind::decide, kStart, k, rpm_, 4);
  EXPECT_FALSE(no.ok);
  EXPECT_EQ(no.items[0].retry_after, 6 * kSec);
  EXPECT_EQ(avail(kStart, k, rpm_), 3);
  EXPECT_EQ(store().size(), 1u);
  (void)one(OpKind::reset, kStart, k, rpm_, 0);
  EXPECT_EQ(avail(kStart, k, rpm_), 10);
  EXPECT_EQ(store().size(), 0u);
}

// ------------------------------------------------------------------------ atomicity

// Verifies a store-level acquire over several keys and kinds is all or nothing.
TEST_P(StoreConformance, AcquireIsAllOrNothingAcrossKeysAndKinds) {
  for (int i = 0; i < 4; ++i) {
    SCOPED_TRACE(i);
    const std::string a = cat("a", i);
    const std::string b = cat("b", i);
    const KeyParts ka{a, "r"};
    const KeyParts kb{b, "r"};
    ASSERT_TRUE(one(OpKind::acquire, kStart, ka, rpm_, 10).ok);
    const Applied denied =
        apply(OpKind::acquire, kStart, {ka, kb}, {OpItem{0, &rpm_, 1, 0}, OpItem{1, &rpm_, 5, 0}});
    EXPECT_FALSE(denied.ok);
    EXPECT_FALSE(denied.items[0].ok);
    EXPECT_EQ(denied.items[0].retry_after, 6 * kSec);
    EXPECT_TRUE(denied.items[1].ok);
    EXPECT_EQ(avail(kStart, kb, rpm_), 10);

    ASSERT_TRUE(one(OpKind::acquire, kStart, ka, slots_, 2, 100, kStart + kSec).ok);
    const Applied mixed =
        apply(OpKind::acquire, kStart, {ka, kb}, {OpItem{1, &rpm_, 4, 0}, OpItem{0, &slots_, 1, 0}},
              101, kStart + kSec);
    EXPECT_FALSE(mixed.ok);
    EXPECT_FALSE(mixed.items[1].ok);
    EXPECT_EQ(mixed.items[1].retry_after, kSec);
    EXPECT_EQ(mixed.items[1].held, 2);
    EXPECT_EQ(avail(kStart, kb, rpm_), 10);

    const std::string c = cat("c", i);
    const KeyParts kc{c, "r"};
    const Applied both =
        apply(OpKind::acquire, kStart, {kb, kc},
              {OpItem{0, &rpm_, 5, 0}, OpItem{1, &rpm_, 3, 0}, OpItem{1, &rpd_, 5, 0}});
    EXPECT_TRUE(both.ok);
    EXPECT_EQ(avail(kStart, kb, rpm_), 5);
    EXPECT_EQ(avail(kStart, kc, rpm_), 7);
    EXPECT_EQ(avail(kStart, kc, rpd_), 0);
  }
}

// Verifies concurrency holds at store level: a release frees only its own lease's slots, and
// expiry frees them at exactly the expiry instant.
TEST_P(StoreConformance, HoldsReleaseOwnLeaseAndExpireExactly) {
  const KeyParts k{"e", "r"};
  ASSERT_TRUE(one(OpKind::acquire, kStart, k, slots_, 1, 1, kStart + 10 * kSec).ok);
  ASSERT_TRUE(one(OpKind::acquire, kStart, k, slots_, 1, ~std::uint64_t{0}, kStart + 20 * kSec).ok);
  const Applied full = one(OpKind::acquire, kStart, k, slots_, 1, 3, kStart + kSec);
  EXPECT_FALSE(full.ok);
  EXPECT_EQ(full.items[0].retry_after, 10 * kSec);
  EXPECT_EQ(full.items[0].held, 2);
  (void)one(OpKind::release, kStart, k, slots_, 0, 99);  // not a holder
  EXPECT_EQ(avail(kStart, k, slots_), 0);
  const Applied rel = one(OpKind::release, kStart, k, slots_, 0, ~std::uint64_t{0});
  EXPECT_EQ(rel.items[0].held, 1);
  EXPECT_EQ(avail(kStart + 10 * kSec - 1, k, slots_), 1);
  EXPECT_EQ(avail(kStart + 10 * kSec, k, slots_), 2);
  (void)one(OpKind::release, kStart + 10 * kSec, k, slots_, 0, 1);
  EXPECT_EQ(store().size(), 0u);
}

// ------------------------------------------------------------------------ durable leases

// The lease-record fields of an op (Op::lease_record, lease_record_next, lease_guard).
struct RecordOp {
  std::string_view record;
  std::string_view next;
  bool guard = false;
};

// One op on key (e, r) in group "g" with the record fields `r`; reads in that group too (a
// distributed store keeps the group in the key: Op::group).
Applied leased_op(Store& store, const Namespace& ns, OpKind kind, Micros now,
                  std::vector<OpItem> items, std::uint64_t id, Micros expiry, RecordOp r) {
  static const std::vector<KeyParts> keys{{"e", "r"}};
  Applied a;
  a.items.resize(items.size());
  Op op = test::make_op(kind, ns, now, keys, items, id, expiry);
  op.group = "g";
  op.lease_record = r.record;
  op.lease_record_next = r.next;
  op.lease_guard = r.guard;
  a.ok = store.apply(op, a.items);
  return a;
}

// Verifies a durable lease's record is written only with an admitted acquire, read back by
// (namespace, group, id), replaced by a guarded adjust, deleted by a guarded release, and that
// a guard that does not match (absent, ended, changed) throws LeaseNotFound and changes nothing.
TEST_P(StoreConformance, LeaseRecordsFollowTheirLeaseExactlyOnce) {
  ASSERT_TRUE(store().capabilities().leases) << GetParam().name;
  const std::vector<KeyParts> keys{{"e", "r"}};
  const Micros expiry = kStart + 30 * kSec;
  auto run = [&](OpKind kind, Micros now, std::vector<OpItem> items, std::uint64_t id, RecordOp r) {
    return leased_op(store(), ns_, kind, now, items, id, expiry, r);
  };
  auto avail = [&](Micros now, const KeyParts&, const Limit& l) {
    return run(OpKind::read, now, {OpItem{0, &l, 0, 0}}, 0, {}).items.at(0).available;
  };
  // A denied acquire keeps no record; an admitted one does.
  EXPECT_FALSE(run(OpKind::acquire, kStart, {OpItem{0, &rpm_, 11, 0}}, 7, {"v1", "", false}).ok);
  EXPECT_FALSE(store().get_lease(ns_, "g", 7, kStart).has_value());
  ASSERT_TRUE(run(OpKind::acquire, kStart, {OpItem{0, &rpm_, 4, 0}, OpItem{0, &slots_, 1, 0}}, 7,
                  {"v1", "", false})
                  .ok);
  auto rec = store().get_lease(ns_, "g", 7, kStart);
  ASSERT_TRUE(rec.has_value());
  EXPECT_EQ(rec->data, "v1");
  EXPECT_EQ(rec->expiry, expiry);
  // Other groups, ids and namespaces do not see it.
  EXPECT_FALSE(store().get_lease(ns_, "h", 7, kStart).has_value());
  EXPECT_FALSE(store().get_lease(ns_, "g", 8, kStart).has_value());
  const Namespace other = store().open_namespace("conformance-other");
  EXPECT_FALSE(store().get_lease(other, "g", 7, kStart).has_value());

  // A guard that does not match changes nothing.
  EXPECT_THROW(run(OpKind::adjust, kStart, {OpItem{0, &rpm_, -4, 0}}, 7, {"v0", "v2", true}),
               LeaseNotFound);
  EXPECT_THROW(run(OpKind::release, kStart, {OpItem{0, &rpm_, 4, 0}}, 8, {"v1", "", true}),
               LeaseNotFound);
  EXPECT_EQ(avail(kStart, keys[0], rpm_), 6);
  // A matching adjust refunds and replaces the record; the old one no longer matches.
  EXPECT_TRUE(run(OpKind::adjust, kStart, {OpItem{0, &rpm_, -1, 0}}, 7, {"v1", "v2", true}).ok);
  EXPECT_EQ(avail(kStart, keys[0], rpm_), 7);
  rec = store().get_lease(ns_, "g", 7, kStart);
  ASSERT_TRUE(rec.has_value());
  EXPECT_EQ(rec->data, "v2");
  EXPECT_EQ(rec->expiry, expiry);  // adjust keeps the expiry
  EXPECT_THROW(run(OpKind::adjust, kStart, {OpItem{0, &rpm_, -1, 0}}, 7, {"v1", "v3", true}),
               LeaseNotFound);
  EXPECT_EQ(avail(kStart, keys[0], rpm_), 7);
  // Release refunds, frees the slot and deletes the record: a second release changes nothing.
  EXPECT_TRUE(run(OpKind::release, kStart, {OpItem{0, &rpm_, 3, 0}, OpItem{0, &slots_, 0, 0}}, 7,
                  {"v2", "", true})
                  .ok);
  EXPECT_EQ(avail(kStart, keys[0], rpm_), 10);
  EXPECT_EQ(avail(kStart, keys[0], slots_), 2);
  EXPECT_FALSE(store().get_lease(ns_, "g", 7, kStart).has_value());
  EXPECT_THROW(run(OpKind::release, kStart, {OpItem{0, &rpm_, 3, 0}}, 7, {"v2", "", true}),
               LeaseNotFound);
  EXPECT_EQ(avail(kStart, keys[0], rpm_), 10);
}

// Verifies a store that counts expired lease records (Store::expired_leases) counts exactly the
// records prune() removes because their TTL passed, not those of released leases or leases
// still live; a store that cannot count them says so (nullopt) every time.
TEST_P(StoreConformance, ExpiredLeaseRecordsAreCountedWhenPruned) {
  const std::optional<std::uint64_t> before = store().expired_leases();
  auto acquire = [&](std::uint64_t id, Micros expiry) {
    return leased_op(store(), ns_, OpKind::acquire, kStart, {OpItem{0, &rpm_, 1, 0}}, id, expiry,
                     {"v", "", false})
        .ok;
  };
  ASSERT_TRUE(acquire(7, kStart + 30 * kSec));   // left to expire: orphaned
  ASSERT_TRUE(acquire(8, kStart + 30 * kSec));   // released in time
  ASSERT_TRUE(acquire(9, kStart + 300 * kSec));  // still live at the prune
  ASSERT_TRUE(leased_op(store(), ns_, OpKind::release, kStart, {OpItem{0, &rpm_, 1, 0}}, 8,
                        kStart + 30 * kSec, {"v", "", true})
                  .ok);
  (void)store().prune(kStart + 31 * kSec);
  EXPECT_FALSE(store().get_lease(ns_, "g", 7, kStart + 31 * kSec).has_value());
  EXPECT_TRUE(store().get_lease(ns_, "g", 9, kStart + 31 * kSec).has_value());
  const std::optional<std::uint64_t> after = store().expired_leases();
  ASSERT_EQ(before.has_value(), after.has_value()) << GetParam().name;
  if (after) {
    EXPECT_EQ(*after - *before, 1u) << GetParam().name;
  }
}

// Verifies extend moves a lease's holds and record to a new expiry (later or earlier), that a
// record and its holds expire together, and that a guarded op on an expired lease throws.
TEST_P(StoreConformance, ExtendMovesHoldsAndRecordExpiry) {
  const std::vector<KeyParts> keys{{"e", "r"}};
  auto op_with = [&](OpKind kind, Micros now, std::vector<OpItem> items, std::uint64_t id,
                     Micros expiry, RecordOp r) {
    return leased_op(store(), ns_, kind, now, items, id, expiry, r);
  };
  auto avail = [&](Micros now, const KeyParts&, const Limit& l) {
    return op_with(OpKind::read, now, {OpItem{0, &l, 0, 0}}, 0, 0, {}).items.at(0).available;
  };
  ASSERT_TRUE(op_with(OpKind::acquire, kStart, {OpItem{0, &slots_, 1, 0}}, 5, kStart + 10 * kSec,
                      {"a", "", false})
                  .ok);
  ASSERT_TRUE(
      op_with(OpKind::acquire, kStart, {OpItem{0, &slots_, 1, 0}}, 6, kStart + 10 * kSec, {}).ok);
  // Lease 5 is extended to +40 s at +5 s; lease 6 (not extended) expires at +10 s.
  const Applied ext = op_with(OpKind::extend, kStart + 5 * kSec, {OpItem{0, &slots_, 0, 0}}, 5,
                              kStart + 40 * kSec, {"a", "b", true});
  EXPECT_TRUE(ext.ok);
  EXPECT_EQ(ext.items[0].held, 2);
  EXPECT_EQ(avail(kStart + 10 * kSec, keys[0], slots_), 1);
  auto rec = store().get_lease(ns_, "g", 5, kStart + 39 * kSec);
  ASSERT_TRUE(rec.has_value());
  EXPECT_EQ(rec->data, "b");
  EXPECT_EQ(rec->expiry, kStart + 40 * kSec);
  EXPECT_EQ(avail(kStart + 40 * kSec - 1, keys[0], slots_), 1);
  // Shortened: both go at +20 s.
  EXPECT_TRUE(op_with(OpKind::extend, kStart + 15 * kSec, {OpItem{0, &slots_, 0, 0}}, 5,
                      kStart + 20 * kSec, {"b", "c", true})
                  .ok);
  EXPECT_EQ(avail(kStart + 20 * kSec - 1, keys[0], slots_), 1);
  EXPECT_EQ(avail(kStart + 20 * kSec, keys[0], slots_), 2);
  EXPECT_TRUE(store().get_lease(ns_, "g", 5, kStart + 20 * kSec - 1).has_value());
  EXPECT_FALSE(store().get_lease(ns_, "g", 5, kStart + 20 * kSec).has_value());
  EXPECT_THROW(op_with(OpKind::release, kStart + 20 * kSec, {OpItem{0, &slots_, 0, 0}}, 5, 0,
                       {"c", "", true}),
               LeaseNotFound);
  // An extend without items moves only the record.
  ASSERT_TRUE(op_with(OpKind::acquire, kStart + 30 * kSec, {OpItem{0, &rpm_, 1, 0}}, 9,
                      kStart + 31 * kSec, {"x", "", false})
                  .ok);
  Applied none;
  Op op = test::make_op(OpKind::extend, ns_, kStart + 30 * kSec, {}, {}, 9, kStart + 90 * kSec);
  op.group = "g";
  op.lease_record = "x";
  op.lease_record_next = "y";
  op.lease_guard = true;
  EXPECT_TRUE(store().apply(op, none.items));
  rec = store().get_lease(ns_, "g", 9, kStart + 60 * kSec);
  ASSERT_TRUE(rec.has_value());
  EXPECT_EQ(rec->data, "y");
  // reset_namespace forgets records too.
  store().reset_namespace(ns_);
  EXPECT_FALSE(store().get_lease(ns_, "g", 9, kStart + 60 * kSec).has_value());
}

// Verifies a durable lease acquired through one Limiter is taken up by another on the same
// store (as another process would): adjusted there, detached, resumed again and ended exactly
// once; a second end, or an op on a copy that another end overtook, reports lease_not_found and
// changes nothing; extend moves its expiry; at its expiry the store commits it.
TEST_P(StoreConformance, DurableLeasesWorkFromAnyLimiterExactlyOnce) {
  auto a = make_limiter();
  auto b = make_limiter();
  for (auto* lim : {a.get(), b.get()}) {
    lim->set_limits("m", {Limit::per_minute("tpm", 1000), Limit::concurrency("slots", 1),
                          Limit::daily("rpd", 10)});
  }
  AcquireOptions durable;
  durable.durable = true;
  durable.lease_ttl = 60 * kSec;
  Lease l = a->try_acquire("u", "m", {{"tpm", 600}, {"rpd", 1}}, durable);
  ASSERT_TRUE(l.allowed()) << l.decision().reason;
  ASSERT_TRUE(l.durable());
  const std::string token = l.detach();
  EXPECT_FALSE(l.active());
  EXPECT_EQ(token, l.token());
  EXPECT_EQ(available(*a, "u", "m", "tpm"), 400);
  EXPECT_EQ(available(*a, "u", "m", "slots"), 0);  // the slot stays held after detach

  Lease on_b = b->resume(token);
  ASSERT_TRUE(on_b.active());
  EXPECT_EQ(on_b.entity(), "u");
  EXPECT_EQ(on_b.resource(), "m");
  EXPECT_EQ(on_b.expires_at(), kStart + 60 * kSec);
  const Decision adj = on_b.adjust({{"tpm", -200}, {"rpd", 2}});
  EXPECT_TRUE(adj.allowed) << adj.reason;
  EXPECT_EQ(available(*a, "u", "m", "tpm"), 600);
  EXPECT_EQ(available(*a, "u", "m", "rpd"), 7);
  EXPECT_EQ(on_b.detach(), token);

  // Two copies: the first end wins; the other finds nothing and changes nothing.
  Lease first = a->resume(token);
  Lease second = b->resume(token);
  first.rollback();  // refunds 400 tpm and 3 rpd, frees the slot
  EXPECT_EQ(available(*a, "u", "m", "tpm"), 1000);
  EXPECT_EQ(available(*a, "u", "m", "rpd"), 10);
  EXPECT_EQ(available(*a, "u", "m", "slots"), 1);
  const Decision late = second.adjust({{"tpm", -100}});
  EXPECT_FALSE(late.allowed);
  EXPECT_EQ(late.code, Code::lease_not_found);
  EXPECT_FALSE(second.active());
  EXPECT_EQ(available(*a, "u", "m", "tpm"), 1000);
  EXPECT_THROW((void)a->resume(token), LeaseNotFound);
  EXPECT_THROW((void)a->resume("not-a-token"), ValidationError);
  EXPECT_THROW((void)a->resume("00000000000000ff.75"), LeaseNotFound);

  // Extend moves the end; unextended, the store commits it at its expiry.
  Lease l2 = a->try_acquire("u", "m", {{"tpm", 100}}, durable);
  ASSERT_TRUE(l2.allowed());
  const std::string t2 = l2.detach();
  clock_.advance(50 * kSec);
  Lease r2 = b->resume(t2);
  const Decision ext = r2.extend(120 * kSec);
  EXPECT_TRUE(ext.allowed) << ext.reason;
  EXPECT_EQ(r2.expires_at(), kStart + 170 * kSec);
  (void)r2.detach();
  clock_.advance(100 * kSec);  // past the first expiry, before the new one
  EXPECT_EQ(available(*a, "u", "m", "slots"), 0);
  Lease r3 = a->resume(t2);
  EXPECT_EQ(r3.expires_at(), kStart + 170 * kSec);
  (void)r3.detach();
  clock_.advance(20 * kSec);  // expired: the slot is free, the usage kept, the lease gone
  EXPECT_EQ(available(*a, "u", "m", "slots"), 1);
  EXPECT_THROW((void)b->resume(t2), LeaseNotFound);
  // A non-durable lease has no token and cannot be detached.
  Lease plain = a->try_acquire("u", "m", {{"tpm", 1}});
  EXPECT_TRUE(plain.token().empty());
  EXPECT_THROW((void)plain.detach(), LeaseError);
}

// Verifies the tokens of one namespace resolve nothing in another, and that crafted tokens
// (another group, a flipped id) name no lease.
TEST_P(StoreConformance, DurableLeaseTokensStayInTheirNamespace) {
  LimiterOptions oa;
  oa.ns = "tenant-a";
  LimiterOptions ob;
  ob.ns = "tenant-b";
  auto a = make_limiter(oa);
  auto b = make_limiter(ob);
  for (auto* lim : {a.get(), b.get()}) lim->set_limits("m", {Limit::per_minute("tpm", 1000)});
  AcquireOptions durable;
  durable.durable = true;
  Lease l = a->try_acquire("u", "m", {{"tpm", 500}}, durable);
  ASSERT_TRUE(l.allowed());
  const std::string token = l.detach();
  EXPECT_THROW((void)b->resume(token), LeaseNotFound);
  std::string other_group = token.substr(0, 17) + "76";  // group "v"
  EXPECT_THROW((void)a->resume(other_group), LeaseNotFound);
  std::string flipped = token;
  flipped[15] = flipped[15] == '0' ? '1' : '0';
  EXPECT_THROW((void)a->resume(flipped), LeaseNotFound);
  EXPECT_EQ(available(*b, "u", "m", "tpm"), 1000);
  a->resume(token).rollback();
  EXPECT_EQ(available(*a, "u", "m", "tpm"), 1000);
}

// ------------------------------------------------------------------------ shadow limits

// Verifies shadow items at store level: checked and reported like any item but never refusing
// the op; an admitted acquire leaves a refusing shadow item unchanged (no charge: its state is
// the enforced limit's, which shares it) and charges the others; an enforced refusal refuses
// the op and still reports the shadow one; a shadow concurrency item takes a slot only when
// one is free, so a release of that lease frees nothing.
TEST_P(StoreConformance, ShadowItemsReportButNeverRefuse) {
  const KeyParts k{"e", "r"};
  const Limit rpm = rpm_.with_shadow();  // 10 per minute, T = 6 s; the state of rpm_
  const Limit slots = slots_.with_shadow();
  ASSERT_TRUE(one(OpKind::acquire, kStart, k, rpm, 10).ok);
  const Applied past =
      apply(OpKind::acquire, kStart, {k}, {OpItem{0, &rpm, 1, 0}, OpItem{0, &rpd_, 2, 0}});
  EXPECT_TRUE(past.ok);
  EXPECT_FALSE(past.items[0].ok);
  EXPECT_FALSE(past.items[0].never);
  EXPECT_EQ(past.items[0].retry_after, 6 * kSec);
  EXPECT_EQ(past.items[0].available, 0);
  EXPECT_TRUE(past.items[1].ok);
  EXPECT_EQ(avail(kStart, k, rpd_), 3);                       // charged
  EXPECT_EQ(avail(kStart + 6 * kSec, k, rpm), 1);             // not charged: one unit back after T
  EXPECT_FALSE(one(OpKind::acquire, kStart, k, rpm_, 1).ok);  // enforced, the same state
  const Applied dec = one(OpKind::decide, kStart, k, rpm, 1);
  EXPECT_TRUE(dec.ok);
  EXPECT_FALSE(dec.items[0].ok);
  EXPECT_EQ(dec.items[0].retry_after, 6 * kSec);
  const Applied never = one(OpKind::acquire, kStart, k, rpm, 11);
  EXPECT_TRUE(never.ok);
  EXPECT_TRUE(never.items[0].never);
  // An enforced refusal refuses the op; nothing is charged; the shadow refusal is reported.
  const Applied both =
      apply(OpKind::acquire, kStart, {k}, {OpItem{0, &rpm, 1, 0}, OpItem{0, &rpd_, 4, 0}});
  EXPECT_FALSE(both.ok);
  EXPECT_FALSE(both.items[0].ok);
  EXPECT_EQ(both.items[0].retry_after, 6 * kSec);
  EXPECT_FALSE(both.items[1].ok);
  EXPECT_EQ(avail(kStart, k, rpd_), 3);
  // A full shadow window: admitted, not counted past its cap.
  const Limit rpd = rpd_.with_shadow();
  const Applied cap = one(OpKind::acquire, kStart, k, rpd, 4);
  EXPECT_TRUE(cap.ok);
  EXPECT_FALSE(cap.items[0].ok);
  EXPECT_EQ(cap.items[0].retry_after, kUtcDayEnd - kStart);
  EXPECT_EQ(avail(kStart, k, rpd_), 3);

  // Concurrency: leases 1 and 2 take the two slots; lease 3 is admitted without one.
  ASSERT_TRUE(one(OpKind::acquire, kStart, k, slots, 1, 1, kStart + 10 * kSec).ok);
  ASSERT_TRUE(one(OpKind::acquire, kStart, k, slots, 1, 2, kStart + 20 * kSec).ok);
  const Applied full =
      apply(OpKind::acquire, kStart, {k}, {OpItem{0, &slots, 1, 0}, OpItem{0, &rpd_, 1, 0}}, 3,
            kStart + 30 * kSec);
  EXPECT_TRUE(full.ok);
  EXPECT_FALSE(full.items[0].ok);
  EXPECT_EQ(full.items[0].held, 2);
  EXPECT_EQ(full.items[0].retry_after, 10 * kSec);
  EXPECT_EQ(avail(kStart, k, rpd_), 2);
  EXPECT_EQ(one(OpKind::release, kStart, k, slots, 0, 3).items[0].held, 2);  // took none
  EXPECT_EQ(avail(kStart, k, slots), 0);
  EXPECT_EQ(one(OpKind::release, kStart, k, slots, 0, 1).items[0].held, 1);
  EXPECT_EQ(avail(kStart + 20 * kSec, k, slots), 2);  // lease 2 expired; lease 3 held nothing
}

// Verifies shadow limits through the Limiter: consume, try_acquire, decide past a shadow limit
// are allowed with shadow_violations (its own retry_after) and nothing in violations or
// retry_after; the shadow limit is not charged for them, the others are; a denial by an
// enforced limit keeps its own code and retry_after and still lists the shadow refusal;
// record_usage counts on a shadow limit like on any; a lease refunds nothing of a shadow limit
// it was not charged on.
TEST_P(StoreConformance, ShadowLimitsAreReportedNotEnforced) {
  auto lim = make_limiter();
  // rpm: T = 30 s, shadow; tpm: T = 60 ms.
  lim->set_limits("m", {Limit::per_minute("rpm", 2).with_shadow(), Limit::per_minute("tpm", 1000)});
  for (int i = 0; i < 2; ++i) {
    const Decision d = lim->consume("u", "m", {{"rpm", 1}, {"tpm", 100}});
    ASSERT_TRUE(d.allowed) << i;
    EXPECT_TRUE(d.shadow_violations.empty()) << i;
  }
  Decision d = lim->consume("u", "m", {{"rpm", 1}, {"tpm", 100}});
  EXPECT_TRUE(d.allowed);
  EXPECT_EQ(d.code, Code::ok);
  EXPECT_TRUE(d.violations.empty());
  EXPECT_EQ(d.retry_after, 0);
  EXPECT_EQ(d.retry_after_header(), 0);
  ASSERT_EQ(d.shadow_violations.size(), 1u);
  EXPECT_EQ(d.shadow_violations[0].entity, "u");
  EXPECT_EQ(d.shadow_violations[0].limit, "rpm");
  EXPECT_EQ(d.shadow_violations[0].kind, LimitKind::rate);
  EXPECT_EQ(d.shadow_violations[0].requested, 1);
  EXPECT_EQ(d.shadow_violations[0].available, 0);
  EXPECT_EQ(d.shadow_violations[0].retry_after, 30 * kSec);
  EXPECT_EQ(available(*lim, "u", "m", "tpm"), 700);

  Lease l = lim->try_acquire("u", "m", {{"rpm", 1}, {"tpm", 300}});
  ASSERT_TRUE(l.allowed());
  ASSERT_EQ(l.decision().shadow_violations.size(), 1u);
  EXPECT_EQ(available(*lim, "u", "m", "tpm"), 400);
  EXPECT_TRUE(l.adjust({{"rpm", -1}, {"tpm", -100}}).allowed);  // holds no rpm: refunds none
  EXPECT_EQ(available(*lim, "u", "m", "tpm"), 500);
  l.rollback();
  EXPECT_EQ(available(*lim, "u", "m", "tpm"), 700);
  EXPECT_EQ(available(*lim, "u", "m", "rpm"), 0);
  clock_.advance(30 * kSec);  // charged twice only: one unit back (three charges: none)
  EXPECT_EQ(available(*lim, "u", "m", "rpm"), 1);

  ASSERT_TRUE(lim->consume("u", "m", {{"tpm", 900}}).allowed);  // tpm: 100 left
  d = lim->consume("u", "m", {{"rpm", 2}, {"tpm", 200}});
  EXPECT_FALSE(d.allowed);
  EXPECT_EQ(d.code, Code::rate_exceeded);
  EXPECT_EQ(d.retry_after, 6 * kSec);  // tpm's, not the shadow rpm's 30 s
  ASSERT_EQ(d.violations.size(), 1u);
  EXPECT_EQ(d.violations[0].limit, "tpm");
  ASSERT_EQ(d.shadow_violations.size(), 1u);
  EXPECT_EQ(d.shadow_violations[0].limit, "rpm");
  EXPECT_EQ(d.shadow_violations[0].retry_after, 30 * kSec);
  EXPECT_EQ(available(*lim, "u", "m", "rpm"), 1);  // a denial charges nothing
  EXPECT_EQ(available(*lim, "u", "m", "tpm"), 100);

  d = lim->decide("u", "m", {{"rpm", 2}});
  EXPECT_TRUE(d.allowed);
  ASSERT_EQ(d.shadow_violations.size(), 1u);
  EXPECT_EQ(d.shadow_violations[0].retry_after, 30 * kSec);
  EXPECT_TRUE(lim->decide("u", "m", {{"rpm", 1}}).shadow_violations.empty());

  // record_usage never refuses: it counts on the shadow limit, into debt like any limit.
  d = lim->record_usage("u", "m", {{"rpm", 5}});
  EXPECT_TRUE(d.allowed);
  EXPECT_TRUE(d.shadow_violations.empty());
  d = lim->decide("u", "m", {{"rpm", 1}});
  ASSERT_EQ(d.shadow_violations.size(), 1u);
  EXPECT_EQ(d.shadow_violations[0].retry_after, 150 * kSec);
}

// Verifies a shadow concurrency limit: a lease takes a slot only when one is free; one admitted
// without a slot frees none when it ends (commit or rollback), so the count stays exact.
TEST_P(StoreConformance, ShadowConcurrencyHoldsOnlyFreeSlots) {
  auto lim = make_limiter();
  lim->set_limits("c",
                  {Limit::concurrency("inflight", 1).with_shadow(), Limit::per_minute("rpm", 100)});
  AcquireOptions ttl;
  ttl.lease_ttl = 10 * kSec;
  Lease a = lim->try_acquire("u", "c", {{"rpm", 1}}, ttl);
  ASSERT_TRUE(a.allowed());
  EXPECT_TRUE(a.decision().shadow_violations.empty());
  EXPECT_EQ(available(*lim, "u", "c", "inflight"), 0);
  clock_.advance(kSec);
  Lease b = lim->try_acquire("u", "c", {{"rpm", 1}}, ttl);
  ASSERT_TRUE(b.allowed());
  ASSERT_EQ(b.decision().shadow_violations.size(), 1u);
  EXPECT_EQ(b.decision().shadow_violations[0].limit, "inflight");
  EXPECT_EQ(b.decision().shadow_violations[0].kind, LimitKind::concurrency);
  EXPECT_EQ(b.decision().shadow_violations[0].retry_after, 9 * kSec);
  Lease c = lim->try_acquire("u", "c", {{"rpm", 1}}, ttl);
  ASSERT_TRUE(c.allowed());
  EXPECT_EQ(available(*lim, "u", "c", "rpm"), 98);  // a's unit came back in the second
  b.commit();
  c.rollback();
  EXPECT_EQ(available(*lim, "u", "c", "inflight"), 0);  // a still holds the only slot
  EXPECT_EQ(available(*lim, "u", "c", "rpm"), 99);      // c's request refunded
  a.commit();
  EXPECT_EQ(available(*lim, "u", "c", "inflight"), 1);
  // consume() checks and frees at once: a held slot makes it report, never refuse.
  Lease d = lim->try_acquire("u", "c", {{"rpm", 1}}, ttl);
  ASSERT_TRUE(d.allowed());
  const Decision once = lim->consume("u", "c", {{"rpm", 1}});
  EXPECT_TRUE(once.allowed);
  EXPECT_EQ(once.shadow_violations.size(), 1u);
  d.commit();
  EXPECT_EQ(available(*lim, "u", "c", "inflight"), 1);
}

// Verifies a shadow limit on a parent: the team's shadow budget reports the member who would
// pass it, with the team as the entity; the member's own limits are charged, the team's
// shadow one is not.
TEST_P(StoreConformance, ShadowLimitOfAParentReportsTheParent) {
  auto lim = make_limiter();
  lim->set_limits("m", {Limit::per_minute("rpm", 100)});
  lim->set_entity_limits("team", "m", {Limit::per_minute("tpm", 100).with_shadow()});
  lim->set_parent("u1", "team");
  lim->set_parent("u2", "team");
  ASSERT_TRUE(lim->consume("u1", "m", {{"rpm", 1}, {"tpm", 80}}).allowed);
  const Decision d = lim->consume("u2", "m", {{"rpm", 1}, {"tpm", 80}});
  EXPECT_TRUE(d.allowed);
  ASSERT_EQ(d.shadow_violations.size(), 1u);
  EXPECT_EQ(d.shadow_violations[0].entity, "team");
  EXPECT_EQ(d.shadow_violations[0].limit, "tpm");
  EXPECT_EQ(d.shadow_violations[0].available, 20);
  EXPECT_EQ(available(*lim, "u2", "m", "rpm"), 99);
  EXPECT_EQ(available(*lim, "u2", "m", "tpm", "team"), 20);
  // A lease of a member below the team's shadow budget, rolled back: all refunded.
  Lease l = lim->try_acquire("u2", "m", {{"rpm", 1}, {"tpm", 20}});
  ASSERT_TRUE(l.allowed());
  EXPECT_TRUE(l.decision().shadow_violations.empty());
  EXPECT_EQ(available(*lim, "u2", "m", "tpm", "team"), 0);
  l.rollback();
  EXPECT_EQ(available(*lim, "u2", "m", "tpm", "team"), 20);
}

// Verifies a durable lease admitted past a shadow limit: its record holds nothing of that
// limit (it was not charged), so another Limiter that resumes it and rolls it back refunds the
// enforced limits only; the same through try_acquire_async.
TEST_P(StoreConformance, DurableLeasePastAShadowLimitRefundsOnlyWhatItTook) {
  auto a = make_limiter();
  auto b = make_limiter();
  for (auto* lim : {a.get(), b.get()}) {
    lim->set_limits("d", {Limit::per_minute("tpm", 1000).with_shadow(),
                          Limit::per_minute("rpm", 10), Limit::concurrency("slots", 5)});
  }
  AcquireOptions durable;
  durable.durable = true;
  durable.lease_ttl = 60 * kSec;
  ASSERT_TRUE(a->consume("u", "d", {{"tpm", 800}, {"rpm", 1}}).allowed);
  Lease l = a->try_acquire("u", "d", {{"tpm", 500}, {"rpm", 1}}, durable);
  ASSERT_TRUE(l.allowed()) << l.decision().reason;
  ASSERT_EQ(l.decision().shadow_violations.size(), 1u);
  EXPECT_EQ(available(*a, "u", "d", "rpm"), 8);
  Lease on_b = b->resume(l.detach());
  on_b.rollback();
  EXPECT_EQ(available(*a, "u", "d", "rpm"), 9);
  EXPECT_EQ(available(*a, "u", "d", "tpm"), 200);  // not 700: the lease held no tpm
  EXPECT_EQ(available(*a, "u", "d", "slots"), 5);

  std::promise<Lease> answered;
  a->try_acquire_async(
      "u", "d", {{"tpm", 500}, {"rpm", 1}},
      [&answered](Lease x) { answered.set_value(std::move(x)); }, durable);
  Lease la = answered.get_future().get();
  ASSERT_TRUE(la.allowed()) << la.decision().reason;
  ASSERT_EQ(la.decision().shadow_violations.size(), 1u);
  EXPECT_EQ(available(*a, "u", "d", "rpm"), 8);
  EXPECT_EQ(available(*a, "u", "d", "slots"), 4);
  b->resume(la.detach()).rollback();
  EXPECT_EQ(available(*a, "u", "d", "rpm"), 9);
  EXPECT_EQ(available(*a, "u", "d", "tpm"), 200);
  EXPECT_EQ(available(*a, "u", "d", "slots"), 5);
}

// ------------------------------------------------------------------------ keys and namespaces

// Verifies two Limiters with different namespaces on one store never share state, and
// reset_all clears only its own namespace.
TEST_P(StoreConformance, NamespacesAreIsolated) {
  LimiterOptions oa;
  oa.ns = "tenant-a";
  LimiterOptions ob;
  ob.ns = "tenant-b";
  auto a = make_limiter(oa);
  auto b = make_limiter(ob);
  for (auto* l : {a.get(), b.get()}) {
    l->set_limits("m", {Limit::per_minute("rpm", 10), Limit::concurrency("inflight", 1)});
  }
  EXPECT_TRUE(take(*a, "u", "m", {{"rpm", 10}}).allowed);
  EXPECT_EQ(available(*b, "u", "m", "rpm"), 10);
  Lease held = b->try_acquire("u", "m", {{"rpm", 3}});
  ASSERT_TRUE(held.allowed());
  EXPECT_EQ(available(*a, "u", "m", "inflight"), 1);
  a->reset_all();
  EXPECT_EQ(available(*a, "u", "m", "rpm"), 10);
  EXPECT_EQ(available(*b, "u", "m", "rpm"), 7);
  EXPECT_EQ(available(*b, "u", "m", "inflight"), 0);
  held.commit();

  // Store level: reset_namespace clears one namespace (state and holders).
  const Namespace other = store().open_namespace("other");
  EXPECT_NE(other.id, ns_.id);
  EXPECT_EQ(store().open_namespace("conformance").id, ns_.id);
  EXPECT_THROW(store().open_namespace("has space"), ValidationError);
  const KeyParts k{"e", "r"};
  ASSERT_TRUE(one(OpKind::acquire, kStart, k, rpm_, 10).ok);
  ASSERT_TRUE(one(OpKind::acquire, kStart, k, rpm_, 4, 0, 0, &other).ok);
  ASSERT_TRUE(one(OpKind::acquire, kStart, k, slots_, 1, 7, kStart + kSec, &other).ok);
  store().reset_namespace(ns_);
  EXPECT_EQ(avail(kStart, k, rpm_), 10);
  EXPECT_EQ(avail(kStart, k, rpm_, &other), 6);
  EXPECT_EQ(avail(kStart, k, slots_, &other), 1);
}

// Verifies crafted ids never share state: entity "a:b" + resource "c" against entity "a" +
// resource "b:c", through the Limiter and, with NUL bytes, through the store.
TEST_P(StoreConformance, CraftedKeysDoNotCollide) {
  auto lim = make_limiter();
  lim->set_default_limits({Limit::per_minute("rpm", 10)});
  EXPECT_TRUE(take(*lim, "a:b", "c", {{"rpm", 10}}).allowed);
  EXPECT_EQ(available(*lim, "a", "b:c", "rpm"), 10);
  EXPECT_TRUE(take(*lim, "a", "b:c", {{"rpm", 4}}).allowed);
  EXPECT_EQ(available(*lim, "a:b", "c", "rpm"), 0);
  EXPECT_EQ(available(*lim, "a", "b:c", "rpm"), 6);

  using namespace std::string_literals;
  const std::vector<std::pair<std::string, std::string>> parts = {
      {"x", "b:c"}, {"x:b", "c"}, {"xb", "c"}, {"x", "bc"}, {"x\0y"s, "r"}, {"x", "y\0r"s}};
  const std::size_t before = store().size();
  for (const auto& [e, r] : parts) {
    ASSERT_TRUE(one(OpKind::acquire, kStart, KeyParts{e, r}, rpm_, 10).ok);
  }
  EXPECT_EQ(store().size(), before + parts.size());
  for (const auto& [e, r] : parts) EXPECT_EQ(avail(kStart, KeyParts{e, r}, rpm_), 0);
}

// ------------------------------------------------------------------------ configuration

// Verifies configuration entries: put, a batched get (absent ones nullopt), overwrite, erase,
// list sorted by (kind, entity, resource); crafted names and namespaces stay apart; usage
// resets and pruning keep them, and they are not usage state (size()).
TEST_P(StoreConformance, ConfigEntriesPutGetListErase) {
  using namespace std::string_literals;
  const Namespace other = store().open_namespace("other");
  const std::size_t before = store().size();
  store().put_config(ns_, {ConfigKind::system, {}, {}}, "[sys]");
  store().put_config(ns_, {ConfigKind::resource, {}, "gpt-4o"}, "[res]");
  store().put_config(ns_, {ConfigKind::entity, "a:b", "c"}, "one");
  store().put_config(ns_, {ConfigKind::entity, "a", "b:c"}, "two");
  store().put_config(ns_, {ConfigKind::entity_default, "a", {}}, "[def]");
  store().put_config(ns_, {ConfigKind::parent, "a", {}}, "team%{x}*");
  store().put_config(other, {ConfigKind::resource, {}, "gpt-4o"}, "[other]");

  const std::vector<ConfigKey> keys = {
      {ConfigKind::entity, "a", "b:c"},    {ConfigKind::entity, "a:b", "c"},
      {ConfigKind::entity, "a", "bc"},     {ConfigKind::parent, "a", {}},
      {ConfigKind::parent, "a:b", {}},     {ConfigKind::system, {}, {}},
      {ConfigKind::resource, {}, "gpt-4o"}};
  std::vector<std::optional<std::string>> got(keys.size());
  store().get_config(ns_, keys, got);
  const std::vector<std::optional<std::string>> want = {
      "two", "one", std::nullopt, "team%{x}*", std::nullopt, "[sys]", "[res]"};
  EXPECT_EQ(got, want);

  const std::vector<ConfigEntry> listed = store().list_config(ns_);
  const std::vector<ConfigEntry> expected = {
      {ConfigKind::system, "", "", "[sys]"},          {ConfigKind::resource, "", "gpt-4o", "[res]"},
      {ConfigKind::entity_default, "a", "", "[def]"}, {ConfigKind::entity, "a", "b:c", "two"},
      {ConfigKind::entity, "a:b", "c", "one"},        {ConfigKind::parent, "a", "", "team%{x}*"},
  };
  EXPECT_EQ(listed, expected);
  ASSERT_EQ(store().list_config(other).size(), 1u);
  EXPECT_EQ(store().list_config(other)[0].value, "[other]");

  // Overwrite and erase (an empty value); erasing what is absent is fine.
  store().put_config(ns_, {ConfigKind::entity, "a", "b:c"}, "three");
  store().put_config(ns_, {ConfigKind::entity, "a:b", "c"}, "");
  store().put_config(ns_, {ConfigKind::entity, "nobody", "c"}, "");
  store().get_config(ns_, std::span(keys).first(2), std::span(got).first(2));
  EXPECT_EQ(got[0], "three");
  EXPECT_EQ(got[1], std::nullopt);

  // Configuration is not usage state.
  EXPECT_EQ(store().size(), before);
  store().reset_namespace(ns_);
  EXPECT_EQ(store().prune(kStart + kMicrosPerDay), 0u);
  EXPECT_EQ(store().list_config(ns_).size(), 5u);

  // Keys must name exactly what their kind uses.
  EXPECT_THROW(store().put_config(ns_, {ConfigKind::entity, "a", {}}, "x"), ValidationError);
  EXPECT_THROW(store().put_config(ns_, {ConfigKind::system, "a", {}}, "x"), ValidationError);
  EXPECT_THROW(store().put_config(ns_, {ConfigKind::resource, {}, "has space"}, "x"),
               ValidationError);
  const ConfigKey bad{ConfigKind::parent, {}, {}};
  EXPECT_THROW(store().get_config(ns_, {&bad, 1}, std::span(got).first(1)), ValidationError);
  EXPECT_THROW(store().get_config(ns_, keys, std::span(got).first(2)), ValidationError);
}

// Verifies limits kept in the store (ConfigMode::store) resolve entity > entity default >
// resource > system along parents, with their sources, for a second Limiter on another store
// object over the same data (another process), and that a change made by one Limiter is seen
// by the other once its cached entries are config_ttl old, and by the writer at once.
TEST_P(StoreConformance, LimitsInTheStoreAreSharedWithinTheTtl) {
  LimiterOptions o;
  o.config = ConfigMode::store;
  o.config_ttl = 10 * kSec;
  auto writer = make_limiter(o);
  std::unique_ptr<Store> second;
  if (GetParam().shared) {
    std::string why;
    second = GetParam().make(dir_.path(), why);
    ASSERT_NE(second, nullptr) << why;
  }
  Limiter reader(second ? *second : store(), clock_, o);

  writer->set_default_limits({Limit::per_minute("rpm", 60)});
  writer->set_limits("m", {Limit::per_minute("rpm", 10), Limit::per_minute("tpm", 1000)});
  writer->set_entity_default_limits("vip", {Limit::per_minute("rpm", 100)});
  writer->set_entity_limits("team", "m", {Limit::per_minute("tpm", 500)});
  writer->set_parent("u", "team");

  using Resolved = std::vector<std::pair<Limit, ConfigSource>>;
  const Resolved res_m = {{Limit::per_minute("rpm", 10), ConfigSource::resource},
                          {Limit::per_minute("tpm", 1000), ConfigSource::resource}};
  EXPECT_EQ(reader.resolve("u", "m"), res_m);
  EXPECT_EQ(reader.resolve("team", "m"),
            (Resolved{{Limit::per_minute("tpm", 500), ConfigSource::entity}}));
  EXPECT_EQ(reader.resolve("vip", "m"),
            (Resolved{{Limit::per_minute("rpm", 100), ConfigSource::entity_default}}));
  EXPECT_EQ(reader.resolve("u", "other"),
            (Resolved{{Limit::per_minute("rpm", 60), ConfigSource::system}}));
  EXPECT_EQ(reader.resources(), (std::vector<std::string>{"m"}));

  // Admission through the reader: u's own tpm 1000 and team's tpm 500, all or nothing.
  EXPECT_TRUE(take(reader, "u", "m", {{"rpm", 1}, {"tpm", 400}}).allowed);
  const Decision d = take(reader, "u", "m", {{"rpm", 1}, {"tpm", 200}});
  EXPECT_FALSE(d.allowed);
  ASSERT_EQ(d.violations.size(), 1u);
  EXPECT_EQ(d.violations[0].entity, "team");
  EXPECT_EQ(available(reader, "u", "m", "tpm", "team"), 100);

  // A change by the writer: the writer sees it at once, the reader after its TTL.
  const CacheStats before = reader.cache_stats();
  EXPECT_EQ(before.ttl, 10 * kSec);
  EXPECT_GT(before.misses, 0u);
  EXPECT_GT(before.entries, 0u);
  writer->set_limits("m", {Limit::per_minute("rpm", 2)});
  writer->set_parent("u", "");
  EXPECT_EQ(writer->resolve("u", "m"),
            (Resolved{{Limit::per_minute("rpm", 2), ConfigSource::resource}}));
  clock_.advance(10 * kSec - 1);
  EXPECT_EQ(reader.resolve("u", "m"), res_m);
  EXPECT_EQ(reader.cache_stats().hits, before.hits + 1);
  EXPECT_EQ(reader.cache_stats().misses, before.misses);
  clock_.advance(1);
  EXPECT_EQ(reader.resolve("u", "m"),
            (Resolved{{Limit::per_minute("rpm", 2), ConfigSource::resource}}));
  EXPECT_EQ(reader.cache_stats().misses, before.misses + 1);
  // u's chain no longer has team, and its rpm is 2 (the state refilled meanwhile).
  EXPECT_TRUE(take(reader, "u", "m", {{"rpm", 2}}).allowed);
  EXPECT_EQ(take(reader, "u", "m", {{"rpm", 1}}).code, Code::rate_exceeded);
  EXPECT_EQ(take(reader, "u", "m", {{"tpm", 1}}).code, Code::unknown_limit);

  // Removal, and the stored text is what the codec wrote.
  writer->remove_limits("m");
  writer->remove_entity_limits("team", "m");
  clock_.advance(10 * kSec);
  EXPECT_EQ(reader.resolve("u", "m"),
            (Resolved{{Limit::per_minute("rpm", 60), ConfigSource::system}}));
  EXPECT_TRUE(reader.resources().empty());
  const std::vector<ConfigEntry> listed = store().list_config(store().open_namespace("default"));
  ASSERT_FALSE(listed.empty());
  EXPECT_EQ(listed[0].kind, ConfigKind::system);
  EXPECT_EQ(decode_limits(listed[0].value), (std::vector<Limit>{Limit::per_minute("rpm", 60)}));
}

// ------------------------------------------------------------------------ learned state

// Verifies learned entries: put and list (sorted by kind, entity, resource, limit; crafted
// names and values kept apart and exact); a write of greater precedence (version, then rank)
// replaces, one of lower precedence changes nothing and gets the stored value back, an equal
// one keeps the stored value with the later expiry; expired entries are gone from lists and
// replaced by any write; namespaces stay apart; another store object over the same data sees
// them; they are neither usage state nor configuration; bad keys and values are refused.
TEST_P(StoreConformance, LearnedEntriesMergeByPrecedenceAndExpire) {
  ASSERT_TRUE(store().capabilities().learned);
  const Namespace other = store().open_namespace("other");
  const std::size_t before = store().size();
  const Micros now = kStart;
  const Micros exp = kStart + 60 * kSec;
  const LearnedKey one{LearnedKind::limits, "a:b", "c", {}};
  const LearnedKey two{LearnedKind::limits, "a", "b:c", {}};
  const LearnedKey odd{LearnedKind::limits, "e{x}%3A y", "m", {}};
  const LearnedKey rate{LearnedKind::rate, "", "m", "aimd"};
  const auto put = [&](const LearnedKey& k, const LearnedValue& v, Micros at = kStart) {
    return store().put_learned(ns_, k, v, at);
  };
  const LearnedValue v1{10, 5, exp, "[one]"};
  EXPECT_EQ(put(one, v1), v1);
  EXPECT_EQ(put(two, {3, 0, exp + kSec, ""}), (LearnedValue{3, 0, exp + kSec, ""}));
  const LearnedValue odd_v{1, 2, exp, "  spaces 1 2 3 \n\n%{x}"};
  EXPECT_EQ(put(odd, odd_v), odd_v);
  EXPECT_EQ(put(rate, {2, 40'000'000, exp, "40"}), (LearnedValue{2, 40'000'000, exp, "40"}));
  EXPECT_EQ(store().put_learned(other, one, {1, 1, exp, "[other]"}, now).value, "[other]");

  // Lower precedence: nothing changes, the stored value is the answer.
  EXPECT_EQ(put(one, {9, 99, exp + kSec, "[older]"}), v1);
  EXPECT_EQ(put(one, {10, 4, exp + kSec, "[older]"}), v1);
  // Equal: the stored value, with the later of the two expiries.
  EXPECT_EQ(put(one, {10, 5, exp + 2 * kSec, "[same]"}),
            (LearnedValue{10, 5, exp + 2 * kSec, "[one]"}));
  EXPECT_EQ(put(one, {10, 5, exp, "[same]"}), (LearnedValue{10, 5, exp + 2 * kSec, "[one]"}));
  // Greater: by rank within a version, by version whatever the rank (a decrease of a rate).
  const LearnedValue v2{10, 6, exp, "[two]"};
  EXPECT_EQ(put(one, v2), v2);
  const LearnedValue cut{3, 20'000'000, exp, "20"};
  EXPECT_EQ(put(rate, cut), cut);
  EXPECT_EQ(put(rate, {2, 90'000'000, exp + kSec, "90"}), cut);

  const std::vector<LearnedEntry> want = {
      {LearnedKind::limits, "a", "b:c", "", {3, 0, exp + kSec, ""}},
      {LearnedKind::limits, "a:b", "c", "", v2},
      {LearnedKind::limits, "e{x}%3A y", "m", "", odd_v},
      {LearnedKind::rate, "", "m", "aimd", cut},
  };
  EXPECT_EQ(store().list_learned(ns_, now), want);
  const std::vector<LearnedEntry> in_other = store().list_learned(other, now);
  ASSERT_EQ(in_other.size(), 1u);
  EXPECT_EQ(in_other[0].value.value, "[other]");
  if (GetParam().shared) {
    std::string why;
    std::unique_ptr<Store> second = GetParam().make(dir_.path(), why);
    ASSERT_NE(second, nullptr) << why;
    EXPECT_EQ(second->list_learned(second->open_namespace("conformance"), now), want);
  }

  // Neither usage state nor configuration.
  EXPECT_EQ(store().size(), before);
  EXPECT_TRUE(store().list_config(ns_).empty());
  store().reset_namespace(ns_);
  EXPECT_EQ(store().prune(now), 0u);
  EXPECT_EQ(store().list_learned(ns_, now), want);

  // Expiry: at exp the entries expiring then are gone; any write replaces an expired entry.
  EXPECT_EQ(store().list_learned(ns_, exp - 1), want);
  const std::vector<LearnedEntry> later = store().list_learned(ns_, exp);
  ASSERT_EQ(later.size(), 1u);
  EXPECT_EQ(later[0].entity, "a");
  const LearnedValue low{0, 0, exp + 10 * kSec, "[low]"};
  EXPECT_EQ(put(one, low, exp), low);
  EXPECT_EQ(put(rate, low, exp + kSec), low);
  EXPECT_EQ(store().list_learned(ns_, exp + kSec).size(), 2u);  // one and rate; two expired
  EXPECT_EQ(store().prune(exp + kMicrosPerDay), 0u);            // expired entries are not counted
  EXPECT_TRUE(store().list_learned(ns_, exp + kMicrosPerDay).empty());

  // Keys and values out of bounds.
  const LearnedValue ok{1, 1, exp, "x"};
  EXPECT_THROW(put({LearnedKind::limits, "a", "", {}}, ok), ValidationError);
  EXPECT_THROW(put({LearnedKind::limits, std::string(257, 'e'), "m", {}}, ok), ValidationError);
  EXPECT_THROW(put({LearnedKind::limits, "a", "m", "rpm"}, ok), ValidationError);
  EXPECT_THROW(put({LearnedKind::rate, "a", "m", {}}, ok), ValidationError);
  EXPECT_THROW(put({LearnedKind::rate, "a", "m", "has space"}, ok), ValidationError);
  EXPECT_THROW(put({static_cast<LearnedKind>(7), "a", "m", {}}, ok), ValidationError);
  EXPECT_THROW(put(one, {-1, 0, exp, "x"}), ValidationError);
  EXPECT_THROW(put(one, {0, kLearnedMaxNumber + 1, exp, "x"}), ValidationError);
  EXPECT_THROW(put(one, {0, 0, now, "x"}), ValidationError);  // expired already
  EXPECT_THROW(put(one, {0, 0, exp, std::string(kLearnedMaxValueBytes + 1, 'x')}), ValidationError);
}

// Verifies shared adaptation (AdaptationMode::store) between two Limiters, on two store objects
// over the same data where the store allows it (two processes): limits one learns are used by
// the other once adaptation_refresh has passed since its last read; an adaptive limit's rate
// decreased by one is taken over by the other, and the other's increase made before it saw
// the decrease does not undo it; increases travel too.
TEST_P(StoreConformance, AdaptationIsSharedThroughTheStore) {
  LimiterOptions o;
  o.adaptation = AdaptationMode::store;
  o.adaptation_refresh = kSec;
  auto a = make_limiter(o);
  std::unique_ptr<Store> second;
  if (GetParam().shared) {
    std::string why;
    second = GetParam().make(dir_.path(), why);
    ASSERT_NE(second, nullptr) << why;
  }
  Limiter b(second ? *second : store(), clock_, o);
  ASSERT_TRUE(a->shares_adaptation());
  ASSERT_TRUE(b.shares_adaptation());
  const Limit aimd = Limit::adaptive(
      "aimd", {.max_rate = 100, .initial_rate = 40, .slow_start_threshold = 20}, 100);
  for (Limiter* l : {a.get(), &b}) {
    l->set_limits("m", {Limit::per_minute("rpm", 100), aimd});
  }
  const auto rate_of = [](const Limiter& l) {
    for (const auto& r : l.adaptation().aimd) {
      if (r.entity == "acct" && r.limit == "aimd") return r.rate;
    }
    return -1.0;
  };

  // Learned limits.
  EXPECT_EQ(b.resolve("acct", "m").at(0).second, ConfigSource::resource);  // b has read
  a->set_discovered_limits("acct", "m", {Limit::per_minute("rpm", 10)});
  EXPECT_EQ(a->resolve("acct", "m").at(0),
            std::pair(Limit::per_minute("rpm", 10), ConfigSource::discovered));
  clock_.advance(kSec - 1);
  EXPECT_EQ(b.resolve("acct", "m").at(0).second, ConfigSource::resource);
  clock_.advance(1);
  EXPECT_EQ(b.resolve("acct", "m").at(0),
            std::pair(Limit::per_minute("rpm", 10), ConfigSource::discovered));
  ASSERT_EQ(b.adaptation().discovered.size(), 1u);

  // AIMD: a law each at 40/s, written at their next refresh.
  Lease la = a->try_acquire("acct", "m", {{"rpm", 1}});
  Lease lb = b.try_acquire("acct", "m", {{"rpm", 1}});
  ASSERT_TRUE(la);
  ASSERT_TRUE(lb);
  clock_.advance(kSec);
  EXPECT_EQ(rate_of(*a), 40);
  EXPECT_EQ(rate_of(b), 40);
  ASSERT_TRUE(lb.mark_success());  // b: 41, not written yet
  ASSERT_TRUE(la.mark_failure());  // a: 20, written at a's next call
  EXPECT_EQ(rate_of(*a), 20);
  EXPECT_EQ(rate_of(b), 41);
  clock_.advance(kSec);
  EXPECT_EQ(rate_of(b), 20) << "the decrease wins over b's older increase";
  Lease lb2 = b.try_acquire("acct", "m", {{"rpm", 1}});
  ASSERT_TRUE(lb2.mark_success());  // b: 21
  clock_.advance(kSec);
  EXPECT_EQ(rate_of(b), 21);
  EXPECT_EQ(rate_of(*a), 21);
}

// ------------------------------------------------------------------------ the audit log

// Event n of the cases below: entity, resource, principal, action and states vary with n.
AuditEvent audit_event(int n, std::string entity, std::string resource) {
  AuditEvent e;
  e.time = kStart + n * kMs;
  e.principal = cat("token:ops-", n % 3);
  e.action = std::string(to_string(n % 2 == 0 ? AuditAction::limits_set : AuditAction::parent_set));
  e.entity = std::move(entity);
  e.resource = std::move(resource);
  if (n % 4 != 0) e.before = cat(R"([{"name":"rpm","rate":)", n, "}]");
  if (n % 5 != 0) e.after = cat(R"({"n":)", n, R"(,"text":"caf\u00e9 \"q\""})");
  return e;
}

// Appends events 1..n to `ns` of `s`: entities cycle through user-0, user-1 and team-a (every
// third), resources gpt-4o and (every fifth) none. @return them as read back (ids 1..n).
std::vector<AuditEvent> fill_audit(Store& s, const Namespace& ns, int n) {
  std::vector<AuditEvent> out;
  for (int i = 1; i <= n; ++i) {
    AuditEvent e =
        audit_event(i, i % 3 == 0 ? "team-a" : cat("user-", i % 2), i % 5 == 0 ? "" : "gpt-4o");
    e.id = 999;  // ignored: the store gives the id
    const std::uint64_t id = s.append_audit(ns, e);
    EXPECT_EQ(id, static_cast<std::uint64_t>(i));
    e.id = id;
    out.push_back(std::move(e));
  }
  return out;
}

// Every event `q` selects, page by page (each page `q.limit` events, the cursor its last id).
std::vector<AuditEvent> read_pages(Store& s, const Namespace& ns, AuditQuery q,
                                   std::size_t* pages = nullptr) {
  std::vector<AuditEvent> out;
  for (std::size_t n = 1;; ++n) {
    const std::vector<AuditEvent> page = s.read_audit(ns, q);
    EXPECT_LE(page.size(), q.limit);
    out.insert(out.end(), page.begin(), page.end());
    if (page.size() < q.limit) {
      if (pages != nullptr) *pages = n;
      return out;
    }
    (q.newest_first ? q.before_id : q.after_id) = page.back().id;
  }
}

std::vector<std::uint64_t> ids_of(const std::vector<AuditEvent>& events) {
  std::vector<std::uint64_t> ids;
  for (const AuditEvent& e : events) ids.push_back(e.id);
  return ids;
}

std::vector<std::uint64_t> id_range(std::uint64_t from, std::uint64_t to) {
  std::vector<std::uint64_t> ids;
  for (std::uint64_t i = from; i <= to; ++i) ids.push_back(i);
  return ids;
}

// Verifies appends get ids 1, 2, 3, ... in order, events read back exactly as appended (ids
// aside), oldest first by default and newest first on request; pages by after_id / before_id
// cover every event once; bounds are exclusive and the limit is checked.
TEST_P(StoreConformance, AuditLogAppendsInOrderAndPages) {
  EXPECT_TRUE(store().capabilities().audit);
  EXPECT_TRUE(store().read_audit(ns_, {}).empty());
  const std::vector<AuditEvent> all = fill_audit(store(), ns_, 25);
  EXPECT_EQ(store().read_audit(ns_, {}), all);

  std::size_t pages = 0;
  EXPECT_EQ(read_pages(store(), ns_, {.limit = 10}, &pages), all);
  EXPECT_EQ(pages, 3u);
  std::vector<AuditEvent> reversed(all.rbegin(), all.rend());
  EXPECT_EQ(read_pages(store(), ns_, {.limit = 7, .newest_first = true}, &pages), reversed);
  EXPECT_EQ(pages, 4u);
  EXPECT_EQ(read_pages(store(), ns_, {.limit = 5}, &pages), all);  // the last page is empty
  EXPECT_EQ(pages, 6u);

  EXPECT_EQ(ids_of(store().read_audit(ns_, {.after_id = 5, .before_id = 9})), id_range(6, 8));
  EXPECT_EQ(ids_of(store().read_audit(ns_, {.after_id = 5, .before_id = 9, .newest_first = true})),
            (std::vector<std::uint64_t>{8, 7, 6}));
  EXPECT_EQ(ids_of(store().read_audit(ns_, {.after_id = 20})), id_range(21, 25));
  EXPECT_EQ(ids_of(store().read_audit(ns_, {.before_id = 3})), id_range(1, 2));
  EXPECT_EQ(ids_of(store().read_audit(ns_, {.limit = 1})), id_range(1, 1));
  EXPECT_EQ(ids_of(store().read_audit(ns_, {.limit = 1, .newest_first = true})), id_range(25, 25));
  for (const AuditQuery& none :
       {AuditQuery{.after_id = 8, .before_id = 9}, AuditQuery{.after_id = 9, .before_id = 9},
        AuditQuery{.after_id = 12, .before_id = 3}, AuditQuery{.after_id = 25},
        AuditQuery{.before_id = 1}, AuditQuery{.after_id = ~std::uint64_t{0}},
        AuditQuery{.after_id = ~std::uint64_t{0}, .newest_first = true}}) {
    EXPECT_TRUE(store().read_audit(ns_, none).empty())
        << none.after_id << " < id < " << none.before_id;
  }
  EXPECT_EQ(store().read_audit(ns_, {.before_id = ~std::uint64_t{0}}), all);
  EXPECT_EQ(store().read_audit(ns_, {.limit = kAuditMaxReadLimit}), all);
  EXPECT_THROW(store().read_audit(ns_, {.limit = 0}), ValidationError);
  EXPECT_THROW(store().read_audit(ns_, {.limit = kAuditMaxReadLimit + 1}), ValidationError);
  EXPECT_EQ(store().append_audit(ns_, audit_event(26, "", "")), 26u);
}

// Verifies the entity and resource filters select exactly the events with that entity and/or
// resource (exact match), also page by page and newest first.
TEST_P(StoreConformance, AuditLogFiltersByEntityAndResource) {
  const std::vector<AuditEvent> all = fill_audit(store(), ns_, 40);
  auto only = [&](const std::string& entity, const std::string& resource) {
    std::vector<AuditEvent> out;
    for (const AuditEvent& e : all) {
      if ((entity.empty() || e.entity == entity) && (resource.empty() || e.resource == resource))
        out.push_back(e);
    }
    return out;
  };
  for (const auto& [entity, resource] :
       std::vector<std::pair<std::string, std::string>>{{"team-a", ""},
                                                        {"user-1", ""},
                                                        {"", "gpt-4o"},
                                                        {"user-0", "gpt-4o"},
                                                        {"team-a", "x"},
                                                        {"team", ""},
                                                        {"", "gpt"}}) {
    SCOPED_TRACE(cat("entity '", entity, "' resource '", resource, "'"));
    const std::vector<AuditEvent> want = only(entity, resource);
    EXPECT_EQ(store().read_audit(ns_, {.entity = entity, .resource = resource}), want);
    EXPECT_EQ(read_pages(store(), ns_, {.limit = 3, .entity = entity, .resource = resource}), want);
    EXPECT_EQ(
        read_pages(store(), ns_,
                   {.limit = 2, .entity = entity, .resource = resource, .newest_first = true}),
        std::vector<AuditEvent>(want.rbegin(), want.rend()));
  }
  // A filter with bounds: team-a's events (3, 6, 9, ...) after 10 and before 30.
  EXPECT_EQ(ids_of(store().read_audit(ns_, {.after_id = 10, .before_id = 30, .entity = "team-a"})),
            (std::vector<std::uint64_t>{12, 15, 18, 21, 24, 27}));
  EXPECT_THROW(store().read_audit(ns_, {.entity = "has space"}), ValidationError);
  EXPECT_THROW(store().read_audit(ns_, {.resource = std::string(kAuditMaxNameBytes + 1, 'r')}),
               ValidationError);
}

// Verifies the retention: a store keeps the newest audit_retention events of each namespace
// (dropping the oldest as it appends), per namespace, and ids go on where they were (also
// after reopening a persistent store).
TEST_P(StoreConformance, AuditLogKeepsTheNewestEventsPerNamespace) {
  TempDir other_dir;
  std::string why;
  std::unique_ptr<Store> small = GetParam().make(other_dir.path(), why, {.audit_retention = 5});
  ASSERT_NE(small, nullptr) << why;
  Namespace a = small->open_namespace("a");
  Namespace b = small->open_namespace("b");
  const std::vector<AuditEvent> in_a = fill_audit(*small, a, 12);
  const std::vector<AuditEvent> in_b = fill_audit(*small, b, 3);
  EXPECT_EQ(small->read_audit(a, {}), std::vector<AuditEvent>(in_a.begin() + 7, in_a.end()));
  EXPECT_EQ(small->read_audit(b, {}), in_b);
  EXPECT_EQ(ids_of(small->read_audit(a, {.after_id = 2})), id_range(8, 12));
  EXPECT_EQ(ids_of(small->read_audit(a, {.before_id = 10, .newest_first = true})),
            (std::vector<std::uint64_t>{9, 8}));
  EXPECT_EQ(small->append_audit(a, audit_event(13, "", "")), 13u);
  EXPECT_EQ(ids_of(small->read_audit(a, {})), id_range(9, 13));
  if (GetParam().persistent) {
    small.reset();
    small = GetParam().make(other_dir.path(), why, {.audit_retention = 5});
    ASSERT_NE(small, nullptr) << why;
    a = small->open_namespace("a");
    b = small->open_namespace("b");
    EXPECT_EQ(ids_of(small->read_audit(a, {})), id_range(9, 13));
    EXPECT_EQ(small->read_audit(b, {}), in_b);
    EXPECT_EQ(small->append_audit(a, audit_event(14, "", "")), 14u);
    EXPECT_EQ(ids_of(small->read_audit(a, {})), id_range(10, 14));
  }
  // The default keeps them all here.
  const std::vector<AuditEvent> kept = fill_audit(store(), ns_, 12);
  EXPECT_EQ(store().read_audit(ns_, {}), kept);
  EXPECT_THROW(GetParam().make(other_dir.path(), why, {.audit_retention = 0}), ValidationError);
}

// Verifies an event appended in one namespace is never read in another (crafted names
// included), each namespace has its own ids, and the log is not usage state: reset_namespace,
// prune and size() leave it alone.
TEST_P(StoreConformance, AuditLogNamespacesAreIsolated) {
  const Namespace other = store().open_namespace("other");
  const Namespace crafted = store().open_namespace("conformance}#audit");
  const Namespace prefixed = store().open_namespace("conformance:x");
  const std::size_t size = store().size();
  const std::vector<AuditEvent> mine = fill_audit(store(), ns_, 4);
  const std::vector<AuditEvent> theirs = fill_audit(store(), other, 2);
  EXPECT_EQ(store().read_audit(ns_, {}), mine);
  EXPECT_EQ(store().read_audit(other, {}), theirs);
  EXPECT_TRUE(store().read_audit(other, {.entity = "team-a"}).empty());  // only mine have it
  EXPECT_TRUE(store().read_audit(crafted, {}).empty());
  EXPECT_TRUE(store().read_audit(prefixed, {}).empty());
  EXPECT_EQ(store().append_audit(crafted, audit_event(1, "a", "")), 1u);
  EXPECT_EQ(store().append_audit(prefixed, audit_event(1, "b", "")), 1u);
  EXPECT_EQ(store().read_audit(ns_, {}), mine);

  EXPECT_EQ(store().size(), size);
  store().reset_namespace(ns_);
  store().reset_namespace(other);
  (void)store().prune(kStart + 365 * kMicrosPerDay);
  EXPECT_EQ(store().read_audit(ns_, {}), mine);
  EXPECT_EQ(store().read_audit(other, {}), theirs);
  EXPECT_EQ(store().size(), size);
}

// Verifies every bound of an event: each bad field is refused with a ValidationError naming
// it, nothing is appended (the next id is still 1); values at the bounds are kept exactly.
TEST_P(StoreConformance, AuditLogRefusesEventsOutOfBounds) {
  using namespace std::string_literals;
  const AuditEvent good = audit_event(1, "user-1", "gpt-4o");
  struct Bad {
    std::string field;
    std::function<void(AuditEvent&)> spoil;
  };
  const std::string big_json = cat('"', std::string(kAuditMaxStateBytes - 1, 'x'), '"');  // 1 over
  const std::vector<Bad> bad = {
      {"time", [](AuditEvent& e) { e.time = -1; }},
      {"principal", [](AuditEvent& e) { e.principal.clear(); }},
      {"principal", [](AuditEvent& e) { e.principal.assign(kAuditMaxPrincipalBytes + 1, 'p'); }},
      {"principal", [](AuditEvent& e) { e.principal = "ops\nroot"; }},
      {"principal", [](AuditEvent& e) { e.principal = "nul\0x"s; }},
      {"principal", [](AuditEvent& e) { e.principal = "bad \xff utf-8"; }},
      {"principal", [](AuditEvent& e) { e.principal = "overlong \xc0\xaf"; }},
      {"action", [](AuditEvent& e) { e.action.clear(); }},
      {"action", [](AuditEvent& e) { e.action = "Limits_set"; }},
      {"action", [](AuditEvent& e) { e.action = "limits set"; }},
      {"action", [](AuditEvent& e) { e.action = "1limits"; }},
      {"action", [](AuditEvent& e) { e.action.assign(kAuditMaxActionBytes + 1, 'a'); }},
      {"entity", [](AuditEvent& e) { e.entity = "has space"; }},
      {"entity", [](AuditEvent& e) { e.entity = "x\0y"s; }},
      {"entity", [](AuditEvent& e) { e.entity.assign(kAuditMaxNameBytes + 1, 'e'); }},
      {"resource", [](AuditEvent& e) { e.resource = "caf\xc3\xa9"; }},
      {"before", [](AuditEvent& e) { e.before = std::string(1, '{'); }},
      {"before", [](AuditEvent& e) { e.before = "not json"; }},
      {"before", [&](AuditEvent& e) { e.before = big_json; }},
      {"after", [](AuditEvent& e) { e.after = "[1] [2]"; }},
      {"after", [](AuditEvent& e) { e.after = "\"\xff\""; }},
  };
  for (const Bad& b : bad) {
    AuditEvent e = good;
    b.spoil(e);
    try {
      (void)store().append_audit(ns_, e);
      ADD_FAILURE() << "accepted a bad " << b.field << ": " << printable(e.principal);
    } catch (const ValidationError& err) {
      EXPECT_EQ(err.field(), b.field) << err.what();
    }
  }
  EXPECT_TRUE(store().read_audit(ns_, {}).empty());

  // At the bounds: kept byte for byte.
  AuditEvent edge = good;
  edge.time = 0;
  edge.principal = "config:/etc/admit/admit-\xc3\xa9t\xc3\xa9.yaml ";
  edge.principal.append(kAuditMaxPrincipalBytes - edge.principal.size(), 'p');
  edge.action.assign(kAuditMaxActionBytes, 'z');
  edge.entity.assign(kAuditMaxNameBytes, '*');
  edge.resource = "r:{x}#audit-0";
  edge.before = cat('"', std::string(kAuditMaxStateBytes - 2, 'x'), '"');
  edge.after = " [] ";
  EXPECT_EQ(store().append_audit(ns_, edge), 1u);
  edge.id = 1;
  EXPECT_EQ(store().read_audit(ns_, {}), std::vector<AuditEvent>{edge});
}

// Verifies appends through several store objects on the same data (several processes, where
// the store allows it) and several threads make one sequence: ids unique, increasing in the
// order each thread appended, and every event read back once, in id order.
TEST_P(StoreConformance, AuditLogIsOneSequenceAcrossStoreObjectsAndThreads) {
  std::unique_ptr<Store> second;
  if (GetParam().shared) {
    std::string why;
    second = GetParam().make(dir_.path(), why);
    ASSERT_NE(second, nullptr) << why;
  }
  Store& other = second ? *second : store();
  const Namespace other_ns = other.open_namespace("conformance");
  constexpr std::size_t kThreads = 4;
  constexpr std::size_t kEach = 15;
  std::vector<std::vector<std::uint64_t>> ids(kThreads);
  std::vector<std::thread> threads;
  for (std::size_t t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      Store& s = t % 2 == 0 ? store() : other;
      const Namespace& ns = t % 2 == 0 ? ns_ : other_ns;
      for (std::size_t i = 0; i < kEach; ++i) {
        ids[t].push_back(
            s.append_audit(ns, audit_event(static_cast<int>(t * 100 + i), cat("thread-", t), "")));
      }
    });
  }
  for (std::thread& th : threads) th.join();
  std::vector<std::uint64_t> every;
  for (std::size_t t = 0; t < kThreads; ++t) {
    EXPECT_TRUE(std::is_sorted(ids[t].begin(), ids[t].end())) << "thread " << t;
    every.insert(every.end(), ids[t].begin(), ids[t].end());
  }
  std::sort(every.begin(), every.end());
  EXPECT_EQ(every, id_range(1, kThreads * kEach));
  for (Store* s : {&store(), &other}) {
    const std::vector<AuditEvent> read = read_pages(*s, s == &store() ? ns_ : other_ns, {});
    EXPECT_EQ(ids_of(read), every);
    for (std::size_t t = 0; t < kThreads; ++t) {  // each thread's events, in its order
      AuditQuery q{.entity = cat("thread-", t)};
      q.limit = kEach + 1;
      EXPECT_EQ(ids_of(s->read_audit(s == &store() ? ns_ : other_ns, q)), ids[t]);
    }
  }
}

// ------------------------------------------------------------------------ prune and size

// Verifies prune evicts idle state — full buckets, finished windows, keys whose holders all
// expired — keeps busy state, and size() follows.
TEST_P(StoreConformance, PruneEvictsIdleKeysKeepsBusyOnes) {
  const KeyParts used{"used", "r"};
  const KeyParts debt{"debt", "r"};
  const KeyParts window{"window", "r"};
  const KeyParts holder{"holder", "r"};
  const KeyParts brief{"brief", "r"};
  ASSERT_TRUE(one(OpKind::acquire, kStart, used, rpm_, 1).ok);
  (void)one(OpKind::record, kStart, debt, rpm_, 30);
  ASSERT_TRUE(one(OpKind::acquire, kStart, window, rpd_, 1).ok);
  ASSERT_TRUE(one(OpKind::acquire, kStart, holder, slots_, 1, 7, kStart + 3600 * kSec).ok);
  ASSERT_TRUE(one(OpKind::acquire, kStart, brief, slots_, 1, 8, kStart + 10 * kSec).ok);
  EXPECT_EQ(store().size(), 5u);
  EXPECT_EQ(store().prune(kStart + kSec), 0u);
  EXPECT_EQ(store().prune(kStart + 6 * kSec + 1), 1u);
  EXPECT_EQ(store().size(), 4u);
  EXPECT_EQ(avail(kStart + 6 * kSec + 1, used, rpm_), 10);
  EXPECT_EQ(store().prune(kStart + 10 * kSec), 1u);
  EXPECT_EQ(store().prune(kStart + 61 * kSec), 0u);
  EXPECT_EQ(avail(kStart + 61 * kSec, debt, rpm_), 0);
  EXPECT_EQ(store().prune(kStart + 180 * kSec + 1), 1u);
  EXPECT_EQ(store().prune(kStart + 3600 * kSec), 1u);
  EXPECT_EQ(store().size(), 1u);
  EXPECT_EQ(avail(kUtcDayEnd - 1, window, rpd_), 4);
  EXPECT_EQ(store().prune(kUtcDayEnd - 1), 0u);
  EXPECT_EQ(store().prune(kUtcDayEnd + 1), 1u);
  EXPECT_EQ(store().size(), 0u);
  EXPECT_EQ(avail(kUtcDayEnd + 1, window, rpd_), 5);
}

// Verifies size() returns to zero once activity stops and prune runs.
TEST_P(StoreConformance, SizeReturnsToZeroAfterActivityStops) {
  constexpr int kKeys = 300;
  for (int i = 0; i < kKeys; ++i) {
    const std::string e = cat("user-", i);
    const Limit& l = (i % 3 == 0) ? rpm_ : (i % 3 == 1) ? rpd_ : slots_;
    ASSERT_TRUE(one(OpKind::acquire, kStart, KeyParts{e, "r"}, l, 1,
                    static_cast<std::uint64_t>(i + 1), kStart + 60 * kSec)
                    .ok);
  }
  EXPECT_EQ(store().size(), static_cast<std::size_t>(kKeys));
  EXPECT_EQ(store().prune(kUtcDayEnd + 1), static_cast<std::size_t>(kKeys));
  EXPECT_EQ(store().size(), 0u);
}

// ------------------------------------------------------------------------ threads

// Verifies threads acquiring on one limit through one Limiter are admitted exactly as often as
// the limit allows (no lost update, no double grant).
TEST_P(StoreConformance, ThreadsAreAdmittedExactlyTheCapacity) {
  auto lim = make_limiter();
  lim->set_limits("m", {Limit::per_day("rpd", 150)});  // no refill worth a unit at a fixed time
  constexpr int kThreads = 4;
  constexpr int kEach = 60;
  std::atomic<int> admitted{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < kEach; ++i) {
        if (take(*lim, "u", "m", {{"rpd", 1}}).allowed) admitted.fetch_add(1);
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(admitted.load(), 150);
  EXPECT_EQ(available(*lim, "u", "m", "rpd"), 0);
}

// ------------------------------------------------------------------------ against MemoryStore

// Verifies random operation sequences — every op kind, rate / window / concurrency / adaptive
// limits, several keys per op, time moving forward — give exactly the results of a MemoryStore,
// and that after prune both hold the same number of keys. A persistent store is closed and
// made anew every 25 operations: its state must survive that too.
TEST_P(StoreConformance, RandomOperationsMatchMemoryStore) {
  const std::uint64_t seed = test::test_seed();
  SCOPED_TRACE(test::seed_note(seed));
  std::mt19937_64 rng(seed);
  MemoryStore oracle;
  const Namespace ons = oracle.open_namespace("conformance");
  const Limit adaptive = Limit::adaptive("aimd", AimdOptions{.max_rate = 20, .initial_rate = 5});
  const std::vector<RateParams> adaptive_rates = {adaptive.rate_at(5), adaptive.rate_at(2.5),
                                                  adaptive.rate_at(11)};
  const std::vector<Limit> limits = {
      Limit::per_minute("rpm", 10),
      Limit::custom("odd", 7, 7, 60s),
      Limit::per_second("rps", 5, 8),
      Limit::daily("rpd", 20),
      Limit::window("rph", 6, WindowSpec{WindowUnit::hour, "00:00", "UTC"}),
      Limit::concurrency("inflight", 3),
      adaptive};
  const std::vector<std::string> entities = {"e0", "e1", "e2"};
  const std::vector<std::string> resources = {"r0", "r:1"};
  const OpKind kinds[] = {OpKind::acquire, OpKind::acquire, OpKind::acquire, OpKind::decide,
                          OpKind::record,  OpKind::adjust,  OpKind::release, OpKind::read,
                          OpKind::reset,   OpKind::clamp};
  std::vector<std::uint64_t> leases;  // acquired with concurrency items, not yet released
  std::vector<Micros> window_ends = {0};
  Micros now = kStart;
  const bool slow = GetParam().name == "sqlite";  // one fsync per op
  const int kOps = slow ? 600 : 2000;
  auto pick = [&](std::size_t n) { return static_cast<std::size_t>(rng() % n); };
  for (int step = 0; step < kOps; ++step) {
    SCOPED_TRACE(cat("step ", step));
    if (pick(4) == 0) now += static_cast<Micros>(rng() % (90 * kSec));
    const OpKind kind = kinds[pick(std::size(kinds))];
    std::vector<KeyParts> keys;
    const std::size_t nkeys = 1 + pick(2);
    for (std::size_t k = 0; k < nkeys; ++k) {
      keys.push_back(KeyParts{entities[pick(entities.size())], resources[pick(resources.size())]});
    }
    std::vector<OpItem> items;
    const std::size_t nitems = 1 + pick(3);
    for (std::size_t i = 0; i < nitems; ++i) {
      OpItem it;
      it.key = static_cast<std::uint16_t>(pick(nkeys));
      it.limit = &limits[pick(limits.size())];
      it.amount = static_cast<std::int64_t>(rng() % 6);
      if (kind == OpKind::adjust) it.amount -= 3;
      if (kind == OpKind::clamp)
        it.until = pick(3) == 0 ? now + static_cast<Micros>(rng() % (5 * kSec)) : 0;
      if (kind == OpKind::adjust || kind == OpKind::release) {
        it.window_end = window_ends[pick(window_ends.size())];
      }
      if (it.limit->kind() == LimitKind::adaptive)
        it.rate = &adaptive_rates[pick(adaptive_rates.size())];
      items.push_back(it);
    }
    std::uint64_t lease = 0;
    Micros expiry = 0;
    if (kind == OpKind::acquire) {
      lease = rng();
      // Short leases expire between operations, long ones outlive a reopen.
      expiry = now + static_cast<Micros>(rng() % ((pick(2) == 0 ? 120 : 1800) * kSec));
    } else if (kind == OpKind::release && !leases.empty()) {
      const std::size_t j = pick(leases.size());
      lease = leases[j];
      leases.erase(leases.begin() + static_cast<std::ptrdiff_t>(j));
    }
    Op op = make_op(kind, ns_, now, keys, items, lease, expiry);
    op.report = pick(4) != 0;
    std::vector<ItemResult> got(items.size());
    std::vector<ItemResult> want(items.size());
    const bool ok = store().apply(op, got);
    op.ns = &ons;
    const bool want_ok = oracle.apply(op, want);
    ASSERT_EQ(ok, want_ok);
    for (std::size_t i = 0; i < items.size(); ++i) {
      SCOPED_TRACE(cat("item ", i, " (", items[i].limit->name(), ")"));
      EXPECT_EQ(got[i].ok, want[i].ok);
      EXPECT_EQ(got[i].never, want[i].never);
      EXPECT_EQ(got[i].available, want[i].available);
      EXPECT_EQ(got[i].retry_after, want[i].retry_after);
      EXPECT_EQ(got[i].reset_after, want[i].reset_after);
      EXPECT_EQ(got[i].window_end, want[i].window_end);
      EXPECT_EQ(got[i].held, want[i].held);
      if (got[i].window_end != 0 && window_ends.size() < 16)
        window_ends.push_back(got[i].window_end);
    }
    if (::testing::Test::HasFailure()) return;
    if (kind == OpKind::acquire && ok) leases.push_back(lease);
    if (step % 150 == 149) {
      (void)store().prune(now);
      (void)oracle.prune(now);
      ASSERT_EQ(store().size(), oracle.size());
    }
    if (GetParam().persistent && step % 25 == 24) {
      store_.reset();
      std::string why;
      store_ = GetParam().make(dir_.path(), why);
      ASSERT_NE(store_, nullptr) << why;
      ASSERT_EQ(store_->open_namespace("conformance").id, ns_.id);
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Stores, StoreConformance, ::testing::ValuesIn(kFactories),
                         [](const ::testing::TestParamInfo<StoreFactory>& param) {
                           return param.param.name;
                         });

}  // namespace
}  // namespace admit
