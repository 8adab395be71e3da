// A Lease ends with its scope: leaving the scope normally commits, leaving it by an exception
// rolls back (std::uncaught_exceptions() compared with the count recorded when the lease's
// life started); commit() and rollback() stay explicit. Also Limiter::consume(), the one-call
// form. ManualClock, no sleeps.
#include <gtest/gtest.h>

#include <exception>
#include <functional>
#include <optional>
#include <stdexcept>
#include <utility>

#include "admit/core/clock.hpp"
#include "admit/core/error.hpp"
#include "admit/limiter.hpp"
#include "admit/store/memory_store.hpp"
#include "support/fault_store.hpp"
#include "support/test_support.hpp"

namespace admit {
namespace {

using namespace std::chrono_literals;
using test::kStart;

constexpr Micros kSec = kMicrosPerSecond;

struct CallFailed : std::runtime_error {
  CallFailed() : std::runtime_error("the model call failed") {}
};

const Amounts kCall{{"rpm", 1}, {"tpm", 100}};

/// One request of kCall on a limiter with rpm 10, tpm 1000 and 2 concurrency slots.
class LeaseScopeTest : public ::testing::Test {
 protected:
  LeaseScopeTest() { configure(limiter); }
  static void configure(Limiter& l) {
    l.set_limits("m", {Limit::per_minute("rpm", 10), Limit::per_minute("tpm", 1000),
                       Limit::concurrency("inflight", 2)});
  }
  std::int64_t rpm() { return test::available(limiter, "u", "m", "rpm"); }
  std::int64_t tpm() { return test::available(limiter, "u", "m", "tpm"); }
  std::int64_t slots() { return test::available(limiter, "u", "m", "inflight"); }

  /// Holds `lease` in a scope that CallFailed leaves after `body(lease)` ran.
  static void throw_from_scope(Lease lease, const std::function<void(Lease&)>& body = {}) {
    try {
      Lease held = std::move(lease);
      ASSERT_TRUE(held.active());
      if (body) body(held);
      throw CallFailed();
    } catch (const CallFailed&) {
    }
  }

  ManualClock clock{kStart};
  MemoryStore store;
  Limiter limiter{store, clock};
};

// ------------------------------------------------------------------- scope exits

// Verifies a lease whose scope ends normally commits: its usage (adjustments included) stays
// and its slot is freed.
TEST_F(LeaseScopeTest, NormalScopeExitCommits) {
  {
    Lease lease = limiter.try_acquire("u", "m", kCall);
    ASSERT_TRUE(lease.active());
    EXPECT_EQ(slots(), 1);
    EXPECT_TRUE(lease.adjust({{"tpm", 50}}).allowed);  // the call used 150
  }
  EXPECT_EQ(rpm(), 9);
  EXPECT_EQ(tpm(), 850);
  EXPECT_EQ(slots(), 2);
}

// Verifies a lease whose scope an exception leaves rolls back: its usage (adjustments
// included) is refunded and its slot freed.
TEST_F(LeaseScopeTest, ExceptionExitRollsBack) {
  try {
    Lease lease = limiter.try_acquire("u", "m", kCall);
    ASSERT_TRUE(lease.active());
    EXPECT_EQ(slots(), 1);
    EXPECT_TRUE(lease.adjust({{"tpm", 50}}).allowed);
    EXPECT_EQ(tpm(), 850);
    throw CallFailed();
  } catch (const CallFailed&) {
  }
  EXPECT_EQ(rpm(), 10);
  EXPECT_EQ(tpm(), 1000);
  EXPECT_EQ(slots(), 2);
}

// Verifies an explicit end wins over the scope: commit then an exception keeps the usage,
// rollback then a normal exit refunds it; both are idempotent and each makes the other a
// no-op.
TEST_F(LeaseScopeTest, ExplicitCommitAndRollbackAreIdempotentAndFinal) {
  throw_from_scope(limiter.try_acquire("u", "m", kCall), [](Lease& lease) {
    lease.commit();
    lease.commit();
    lease.rollback();  // no-op after commit
    EXPECT_FALSE(lease.active());
  });
  EXPECT_EQ(rpm(), 9);
  EXPECT_EQ(tpm(), 900);
  EXPECT_EQ(slots(), 2);
  {
    Lease lease = limiter.try_acquire("u", "m", kCall);
    ASSERT_TRUE(lease.active());
    lease.rollback();
    lease.rollback();
    lease.commit();  // no-op after rollback
    EXPECT_FALSE(lease.active());
    EXPECT_EQ(slots(), 2);
  }
  EXPECT_EQ(rpm(), 9);
  EXPECT_EQ(tpm(), 900);
  EXPECT_EQ(slots(), 2);
}

// Runs `body` in its destructor, i.e. while the exception that destroys it unwinds, and
// records how many exceptions were in flight there.
struct RunsWhileUnwinding {
  std::function<void()> body;
  int& in_flight;
  ~RunsWhileUnwinding() {
    in_flight = std::uncaught_exceptions();
    body();
  }
};

/// Runs `body` while an unrelated exception unwinds; @return the exceptions in flight then.
int run_while_unwinding(std::function<void()> body) {
  int in_flight = -1;
  try {
    RunsWhileUnwinding r{std::move(body), in_flight};
    throw std::runtime_error("unrelated failure");
  } catch (const std::runtime_error&) {
  }
  return in_flight;
}

// Verifies a lease taken while another exception unwinds (inside a destructor) follows its
// own scope: it commits when that scope ends normally and rolls back when an exception of
// its own leaves it.
TEST_F(LeaseScopeTest, LeaseTakenDuringUnwindingFollowsItsOwnScope) {
  bool allowed = false;
  EXPECT_EQ(run_while_unwinding([&] {
              Lease lease = limiter.try_acquire("u", "m", kCall);
              allowed = lease.active();
            }),
            1);
  EXPECT_TRUE(allowed);
  EXPECT_EQ(rpm(), 9);  // committed
  EXPECT_EQ(slots(), 2);

  allowed = false;
  EXPECT_EQ(run_while_unwinding([&] {
              try {
                Lease lease = limiter.try_acquire("u", "m", kCall);
                allowed = lease.active();
                throw CallFailed();
              } catch (const CallFailed&) {
              }
            }),
            1);
  EXPECT_TRUE(allowed);
  EXPECT_EQ(rpm(), 9);  // rolled back
  EXPECT_EQ(tpm(), 900);
  EXPECT_EQ(slots(), 2);
}

// ------------------------------------------------------------------- moves

// Verifies a move-constructed lease starts a scope of its own: a lease taken before an
// exception and moved into a scope inside a destructor that runs during the unwinding
// commits when that scope ends normally; the moved-from lease is inactive and ends nothing.
TEST_F(LeaseScopeTest, MoveConstructionStartsANewScope) {
  Lease outer = limiter.try_acquire("u", "m", kCall);
  ASSERT_TRUE(outer.active());
  (void)run_while_unwinding([&] {
    Lease inner(std::move(outer));
    EXPECT_TRUE(inner.active());
  });
  EXPECT_FALSE(outer.active());  // NOLINT(bugprone-use-after-move): moved-from is inactive
  EXPECT_EQ(rpm(), 9);           // committed by `inner`
  EXPECT_EQ(tpm(), 900);
  EXPECT_EQ(slots(), 2);

  // And the other way: taken normally, moved into a scope that an exception leaves.
  throw_from_scope(limiter.try_acquire("u", "m", kCall));
  EXPECT_EQ(rpm(), 9);  // rolled back
  EXPECT_EQ(slots(), 2);
}

// Verifies move assignment onto an active lease commits the lease it replaces (as leaving its
// scope normally would), and the target keeps its own scope: a lease taken during unwinding
// and assigned to a target declared before is rolled back when the target's scope is left
// by an exception.
TEST_F(LeaseScopeTest, MoveAssignmentCommitsTheOldLeaseAndKeepsTheTargetsScope) {
  {
    Lease target = limiter.try_acquire("u", "m", {{"rpm", 1}});
    ASSERT_TRUE(target.active());
    EXPECT_EQ(slots(), 1);
    target = limiter.try_acquire("u", "m", {{"tpm", 100}});
    EXPECT_TRUE(target.active());
    EXPECT_EQ(rpm(), 9);    // the old lease was committed: its request counts...
    EXPECT_EQ(slots(), 1);  // ...and its slot is free; the new lease holds one
    EXPECT_EQ(tpm(), 900);
    target.rollback();
  }
  EXPECT_EQ(rpm(), 9);
  EXPECT_EQ(tpm(), 1000);
  EXPECT_EQ(slots(), 2);

  try {
    Lease target;  // its scope: this try block
    (void)run_while_unwinding([&] { target = limiter.try_acquire("u", "m", kCall); });
    ASSERT_TRUE(target.active());
    EXPECT_EQ(rpm(), 8);
    throw CallFailed();
  } catch (const CallFailed&) {
  }
  EXPECT_EQ(rpm(), 9);  // rolled back with the target's scope
  EXPECT_EQ(tpm(), 1000);
  EXPECT_EQ(slots(), 2);
}

// ------------------------------------------------------------------- the one-liner

// Verifies `if (limiter.try_acquire(...)) call();` enforces the limit: the temporary commits
// at the end of the condition, so the second call is denied. It holds no slot during call();
// a named lease does.
TEST_F(LeaseScopeTest, OneLinerEnforcesTheLimit) {
  limiter.set_limits("one", {Limit::per_minute("rpm", 1)});
  int calls = 0;
  for (int i = 0; i < 3; ++i) {
    if (limiter.try_acquire("u", "one", {{"rpm", 1}})) ++calls;
  }
  EXPECT_EQ(calls, 1);
  EXPECT_EQ(limiter.decide("u", "one", {{"rpm", 1}}).retry_after, 60 * kSec);

  if (limiter.try_acquire("u", "m", kCall)) {
    EXPECT_EQ(slots(), 2);  // already committed: the slot was freed before the call
  }
  if (Lease lease = limiter.try_acquire("u", "m", kCall)) {
    EXPECT_EQ(slots(), 1);  // held for the call
  }
  EXPECT_EQ(rpm(), 8);
  EXPECT_EQ(tpm(), 800);
  EXPECT_EQ(slots(), 2);
}

// ------------------------------------------------------------------- consume

// Verifies consume() keeps what an allowed request consumed and returns its decision (stats
// on request), and a denial consumes nothing and carries the exact retry_after.
TEST_F(LeaseScopeTest, ConsumeAllowedKeepsDeniedConsumesNothing) {
  AcquireOptions stats;
  stats.with_stats = true;
  const Decision d = limiter.consume("u", "m", kCall, stats);
  EXPECT_TRUE(d.allowed);
  EXPECT_EQ(d.code, Code::ok);
  EXPECT_EQ(d.stats.size(), 3u);
  EXPECT_EQ(rpm(), 9);
  EXPECT_EQ(tpm(), 900);
  EXPECT_EQ(slots(), 2);
  for (int i = 0; i < 9; ++i) ASSERT_TRUE(limiter.consume("u", "m", {{"rpm", 1}}).allowed) << i;
  const Decision denied = limiter.consume("u", "m", kCall);
  EXPECT_FALSE(denied.allowed);
  EXPECT_EQ(denied.code, Code::rate_exceeded);
  EXPECT_EQ(denied.retry_after, 6 * kSec);  // T = 60 s / 10
  ASSERT_EQ(denied.violations.size(), 1u);
  EXPECT_EQ(denied.violations[0].limit, "rpm");
  EXPECT_EQ(tpm(), 900);  // nothing taken
  EXPECT_EQ(limiter.consume("u", "m", {{"tpm", 5000}}).code, Code::exceeds_capacity);
  EXPECT_EQ(limiter.consume("u", "m", {{"nope", 1}}).code, Code::unknown_limit);
  clock.advance(6 * kSec);
  EXPECT_TRUE(limiter.consume("u", "m", kCall).allowed);
}

// Verifies consume() checks concurrency limits without holding a slot: denied while leases
// hold every slot, allowed (its slot released at once) when one is free, and a concurrency
// limit named with amount 0 is not checked.
TEST_F(LeaseScopeTest, ConsumeChecksConcurrencyWithoutHoldingASlot) {
  EXPECT_TRUE(limiter.consume("u", "m", kCall).allowed);
  EXPECT_EQ(slots(), 2);
  Lease a = limiter.try_acquire("u", "m", {});
  Lease b = limiter.try_acquire("u", "m", {});
  ASSERT_TRUE(a.active() && b.active());
  const Decision full = limiter.consume("u", "m", kCall);
  EXPECT_EQ(full.code, Code::concurrency_exceeded);
  EXPECT_EQ(rpm(), 9);  // nothing taken
  EXPECT_EQ(tpm(), 900);
  const Decision unchecked = limiter.consume("u", "m", {{"rpm", 1}, {"inflight", 0}});
  EXPECT_TRUE(unchecked.allowed);
  EXPECT_EQ(rpm(), 8);
  a.commit();
  EXPECT_TRUE(limiter.consume("u", "m", kCall).allowed);
  EXPECT_EQ(slots(), 1);  // b's; consume's was released
  b.rollback();
  EXPECT_EQ(slots(), 2);
  EXPECT_EQ(rpm(), 7);
}

// ------------------------------------------------------------------- acquire, async

// Verifies the lease of the blocking acquire() ends with its scope like try_acquire's.
TEST_F(LeaseScopeTest, BlockingAcquireLeaseFollowsItsScope) {
  {
    Lease lease = limiter.acquire("u", "m", kCall, 1s);
    ASSERT_TRUE(lease.active());
    EXPECT_EQ(slots(), 1);
  }
  EXPECT_EQ(rpm(), 9);  // committed
  EXPECT_EQ(slots(), 2);
  throw_from_scope(limiter.acquire("u", "m", kCall, 1s));
  EXPECT_EQ(rpm(), 9);  // rolled back
  EXPECT_EQ(tpm(), 900);
  EXPECT_EQ(slots(), 2);
}

// Verifies the lease of try_acquire_async follows the scope of wherever `done` moves it (a
// store answering at once, and one answering on another thread), and a lease `done` lets
// go of commits.
TEST_F(LeaseScopeTest, AsyncLeaseFollowsTheScopeItIsMovedTo) {
  std::optional<Lease> got;
  auto keep = [&](Lease lease) { got.emplace(std::move(lease)); };
  limiter.try_acquire_async("u", "m", kCall, keep);  // MemoryStore: answered before returning
  ASSERT_TRUE(got && got->active());
  {
    Lease lease = std::move(*got);
    EXPECT_EQ(slots(), 1);
  }
  EXPECT_EQ(rpm(), 9);  // committed
  EXPECT_EQ(slots(), 2);
  got.reset();
  limiter.try_acquire_async("u", "m", kCall, keep);
  ASSERT_TRUE(got && got->active());
  throw_from_scope(std::move(*got));
  EXPECT_EQ(rpm(), 9);  // rolled back
  EXPECT_EQ(slots(), 2);

  bool called = false;
  limiter.try_acquire_async("u", "m", kCall, [&](Lease lease) { called = lease.active(); });
  EXPECT_TRUE(called);
  EXPECT_EQ(rpm(), 8);  // let go in `done`: committed
  EXPECT_EQ(slots(), 2);

  // Answered on another thread (as by RedisStore's I/O thread), ended on this one.
  test::FaultStore deferred({.name = "deferred", .defer_async = true});
  Limiter remote{deferred, clock};
  configure(remote);
  got.reset();
  remote.try_acquire_async("u", "m", kCall, keep);
  ASSERT_EQ(deferred.run_all_on_other_thread(), 1u);
  ASSERT_TRUE(got && got->active());
  throw_from_scope(std::move(*got));
  got.reset();
  remote.try_acquire_async("u", "m", kCall, keep);
  ASSERT_EQ(deferred.run_all_on_other_thread(), 1u);
  ASSERT_TRUE(got && got->active());
  { Lease lease = std::move(*got); }
  EXPECT_EQ(test::available(remote, "u", "m", "rpm"), 9);  // one rolled back, one committed
  EXPECT_EQ(test::available(remote, "u", "m", "tpm"), 900);
  EXPECT_EQ(test::available(remote, "u", "m", "inflight"), 2);
}

}  // namespace
}  // namespace admit
