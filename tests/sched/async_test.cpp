// The Limiter's asynchronous API with completion tokens (admit/async.hpp): callbacks,
// use_future, C++20 coroutines; waits on timers that follow a ManualClock (tests advance
// it and run the io_context: nothing sleeps), FIFO order, deadlines, cancellation through
// Asio's cancellation slots and stop tokens, async lease adjust/commit/rollback, and a storm
// of cancellations from several threads after which every token is accounted for exactly.
#include "admit/async.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/bind_executor.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/use_future.hpp>
#include <chrono>
#include <cstdint>
#include <future>
#include <iostream>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <stop_token>
#include <string>
#include <thread>
#include <vector>

#include "admit/core/clock.hpp"
#include "admit/store/memory_store.hpp"
#include "support/test_support.hpp"

namespace admit {
namespace {

namespace asio = boost::asio;
using namespace std::chrono_literals;
using test::kStart;

constexpr Micros kSec = kMicrosPerSecond;

// One limit "tokens": `capacity` per minute (a token every 60/capacity s), full at start.
struct Fixture {
  explicit Fixture(std::int64_t capacity = 10) {
    limiter.set_limits("model", {Limit::per_minute("tokens", capacity)});
  }
  std::int64_t available(std::string_view entity = "u") {
    return limiter.stats(entity, "model").limits.at(0).available;
  }

  ManualClock clock{kStart};
  MemoryStore store;
  Limiter limiter{store, clock};
  asio::io_context io;
};

// Runs what is ready on `io`, also after it ran out of work once (poll() alone would not).
void run_ready(asio::io_context& io) {
  io.restart();
  io.poll();
}

// A callback that stores the lease it gets, bound to the fixture's io_context.
struct Capture {
  std::optional<Lease> lease;
  auto handler(asio::io_context& io) {
    return asio::bind_executor(io, [this](Lease l) { lease.emplace(std::move(l)); });
  }
};

TEST(AsyncTimer, ManualClockCallsRunWhenTimeReachesThem) {
  ManualClock clock{kStart};
  std::vector<int> order;
  const auto a = clock.call_at(kStart + 2 * kSec, [&] { order.push_back(2); });
  clock.call_at(kStart + 1 * kSec, [&] { order.push_back(1); });
  const auto c = clock.call_at(kStart + 3 * kSec, [&] { order.push_back(3); });
  EXPECT_NE(a, 0u);
  EXPECT_EQ(clock.pending_calls(), 3u);
  EXPECT_EQ(clock.next_wakeup(), kStart + 1 * kSec);
  EXPECT_TRUE(clock.cancel_call(c));
  EXPECT_FALSE(clock.cancel_call(c));
  clock.advance(5 * kSec);
  EXPECT_EQ(order, (std::vector<int>{1, 2}));  // in deadline order, the cancelled one not at all
  clock.call_at(kStart, [&] { order.push_back(0); });  // already due: runs inside call_at
  EXPECT_EQ(order.back(), 0);
  EXPECT_EQ(clock.pending_calls(), 0u);
  SystemClock real;
  EXPECT_EQ(real.call_at(real.now() + kSec, [] {}), 0u);  // real time: the caller's loop times it
}

TEST(AsyncTimer, AsioTimerFollowsTheManualClockAndRearms) {
  ManualClock clock{kStart};
  asio::io_context io;
  auto timer = AsioTimer::create(io.get_executor(), clock);
  int fired = 0;
  timer->arm(kStart + kSec, [&] { fired += 1; });
  timer->arm(kStart + 2 * kSec, [&] { fired += 10; });  // replaces the first
  run_ready(io);
  clock.advance(kSec);
  run_ready(io);
  EXPECT_EQ(fired, 0);
  clock.advance(kSec);
  EXPECT_EQ(fired, 0);  // posted, never run inside advance()
  run_ready(io);
  EXPECT_EQ(fired, 10);
  timer->arm(kStart + 3 * kSec, [&] { fired += 100; });
  timer->cancel();
  clock.advance(kSec);
  run_ready(io);
  EXPECT_EQ(fired, 10);
  EXPECT_EQ(clock.pending_calls(), 0u);
}

TEST(AsyncTimer, AsioTimerOnARealClockUsesASteadyTimer) {
  SystemClock clock;
  asio::io_context io;
  auto timer = AsioTimer::create(io.get_executor(), clock);
  bool fired = false;
  timer->arm(clock.now() - kSec, [&] { fired = true; });  // already due
  io.run();  // the steady timer is outstanding work until it fires
  EXPECT_TRUE(fired);
}

TEST(AsyncTryAcquire, CallbackOnTheBoundExecutorNeverInline) {
  Fixture f(2);
  Capture got;
  f.limiter.async_try_acquire("u", "model", {{"tokens", 2}}, got.handler(f.io));
  EXPECT_FALSE(got.lease);  // posted, even though the memory store answered at once
  f.io.run();
  ASSERT_TRUE(got.lease);
  EXPECT_TRUE(got.lease->allowed());
  got.lease->commit();

  Capture denied;
  f.limiter.async_try_acquire("u", "model", {{"tokens", 1}}, denied.handler(f.io));
  run_ready(f.io);
  ASSERT_TRUE(denied.lease);
  EXPECT_EQ(denied.lease->decision().code, Code::rate_exceeded);
  EXPECT_EQ(denied.lease->decision().retry_after, 30 * kSec);
}

TEST(AsyncTryAcquire, UseFuture) {
  Fixture f;
  auto work = asio::make_work_guard(f.io);
  std::thread loop([&] { f.io.run(); });
  std::future<Lease> fut = f.limiter.async_try_acquire("u", "model", {{"tokens", 3}},
                                                       asio::bind_executor(f.io, asio::use_future));
  Lease lease = fut.get();
  EXPECT_TRUE(lease.allowed());
  EXPECT_EQ(f.available(), 7);
  lease.rollback();
  EXPECT_EQ(f.available(), 10);
  work.reset();
  loop.join();
}

// The README's coroutine example has the same shape; this one checks every step.
asio::awaitable<void> wait_then_adjust(Limiter& limiter, std::vector<std::string>& log) {
  // Named amounts: GCC 12 miscompiles a braced list inside a co_await expression ("array
  // used as initializer").
  const Amounts want{{"tokens", 4}};
  Lease lease = co_await limiter.async_acquire("u", "model", want, 60s, asio::use_awaitable);
  log.push_back(lease ? "admitted" : std::string(to_string(lease.decision().code)));
  const Amounts refund{{"tokens", -3}};
  const Decision d = co_await lease.async_adjust(refund, asio::use_awaitable);
  log.push_back(d.allowed ? "adjusted" : "adjust failed");
  co_await lease.async_commit(asio::use_awaitable);
  log.push_back(lease.active() ? "still active" : "committed");
}

TEST(AsyncAcquire, CoroutineWaitsForTheExactRetryAfter) {
  Fixture f;
  ASSERT_TRUE(
      f.limiter.consume("u", "model", {{"tokens", 8}}).allowed);  // 2 left; 4 needs 2 more = 12 s
  std::vector<std::string> log;
  asio::co_spawn(f.io, wait_then_adjust(f.limiter, log), asio::detached);
  run_ready(f.io);
  EXPECT_TRUE(log.empty());
  EXPECT_EQ(f.limiter.waiting("u", "model"), 1u);
  EXPECT_EQ(f.clock.next_wakeup(), kStart + 12 * kSec);  // a timer at retry_after, no polling
  f.clock.advance(12 * kSec - 1);
  run_ready(f.io);
  EXPECT_TRUE(log.empty());
  f.clock.advance(1);
  run_ready(f.io);
  EXPECT_EQ(log, (std::vector<std::string>{"admitted", "adjusted", "committed"}));
  EXPECT_EQ(f.available(), 3);  // 0 after the acquire, 3 refunded
  EXPECT_EQ(f.limiter.waiting("u", "model"), 0u);
}

TEST(AsyncAcquire, FifoPerKeyALargeRequestIsNotStarved) {
  Fixture f;
  ASSERT_TRUE(f.limiter.consume("u", "model", {{"tokens", 10}}).allowed);
  std::vector<std::string> order;
  std::vector<Lease> leases;
  auto record = [&](std::string name) {
    return asio::bind_executor(f.io, [&, name](Lease l) {
      order.push_back(name + (l ? "" : ":" + std::string(to_string(l.decision().code))));
      leases.push_back(std::move(l));
    });
  };
  f.limiter.async_acquire("u", "model", {{"tokens", 5}}, 600s, record("big"));
  f.limiter.async_acquire("u", "model", {{"tokens", 1}}, 600s, record("small1"));
  f.limiter.async_acquire("u", "model", {{"tokens", 1}}, 600s, record("small2"));
  run_ready(f.io);
  EXPECT_EQ(f.limiter.waiting("u", "model"), 3u);
  // A non-waiting caller does not jump the queue.
  EXPECT_EQ(f.limiter.try_acquire("u", "model", {{"tokens", 1}}).decision().code,
            Code::queue_ahead);
  for (int i = 0; i < 5; ++i) {  // a token every 6 s: the small ones would fit long before
    f.clock.advance(6 * kSec);
    run_ready(f.io);
  }
  EXPECT_EQ(order, (std::vector<std::string>{"big"}));
  f.clock.advance(6 * kSec);
  run_ready(f.io);
  EXPECT_EQ(order, (std::vector<std::string>{"big", "small1"}));
  f.clock.advance(6 * kSec);
  run_ready(f.io);
  EXPECT_EQ(order, (std::vector<std::string>{"big", "small1", "small2"}));
}

TEST(AsyncAcquire, DeadlinePassesWithTimeoutAndTheLastReason) {
  Fixture f;
  ASSERT_TRUE(f.limiter.consume("u", "model", {{"tokens", 10}}).allowed);
  Capture got;
  f.limiter.async_acquire("u", "model", {{"tokens", 5}}, 10s, got.handler(f.io));
  run_ready(f.io);
  f.clock.advance(10 * kSec);
  run_ready(f.io);
  ASSERT_TRUE(got.lease);
  EXPECT_FALSE(got.lease->allowed());
  EXPECT_EQ(got.lease->decision().code, Code::timeout);
  EXPECT_NE(got.lease->decision().reason.find("deadline passed while waiting"), std::string::npos);
  EXPECT_EQ(f.limiter.waiting("u", "model"), 0u);
  EXPECT_EQ(f.clock.pending_calls(), 0u);  // no timer left behind
}

TEST(AsyncAcquire, ImpossibleRequestsEndAtOnce) {
  Fixture f;
  Capture big;
  Capture unknown;
  f.limiter.async_acquire("u", "model", {{"tokens", 11}}, 60s, big.handler(f.io));
  f.limiter.async_acquire("u", "model", {{"nope", 1}}, 60s, unknown.handler(f.io));
  run_ready(f.io);
  ASSERT_TRUE(big.lease && unknown.lease);
  EXPECT_EQ(big.lease->decision().code, Code::exceeds_capacity);
  EXPECT_EQ(unknown.lease->decision().code, Code::unknown_limit);
}

TEST(AsyncAcquire, CancellationSlotEndsTheWaitAndHandsOver) {
  Fixture f;
  ASSERT_TRUE(f.limiter.consume("u", "model", {{"tokens", 10}}).allowed);
  asio::cancellation_signal signal;
  Capture first;
  Capture second;
  f.limiter.async_acquire("u", "model", {{"tokens", 5}}, 600s,
                          asio::bind_cancellation_slot(signal.slot(), first.handler(f.io)));
  f.limiter.async_acquire("u", "model", {{"tokens", 1}}, 600s, second.handler(f.io));
  run_ready(f.io);
  signal.emit(asio::cancellation_type::terminal);
  run_ready(f.io);
  ASSERT_TRUE(first.lease);
  EXPECT_EQ(first.lease->decision().code, Code::cancelled);
  EXPECT_FALSE(second.lease);
  EXPECT_EQ(f.limiter.waiting("u", "model"), 1u);
  f.clock.advance(6 * kSec);  // the second, now the head, needs one token
  run_ready(f.io);
  ASSERT_TRUE(second.lease);
  EXPECT_TRUE(second.lease->allowed());
}

TEST(AsyncAcquire, StopTokenCancels) {
  Fixture f;
  ASSERT_TRUE(f.limiter.consume("u", "model", {{"tokens", 10}}).allowed);
  std::stop_source stop;
  AcquireOptions options;
  options.stop = stop.get_token();
  Capture got;
  f.limiter.async_acquire("u", "model", {{"tokens", 5}}, 600s, options, got.handler(f.io));
  run_ready(f.io);
  stop.request_stop();
  run_ready(f.io);
  ASSERT_TRUE(got.lease);
  EXPECT_EQ(got.lease->decision().code, Code::cancelled);
  EXPECT_EQ(f.limiter.waiting("u", "model"), 0u);
}

TEST(AsyncAcquire, AReleasedSlotWakesTheWaiterWithoutTimePassing) {
  ManualClock clock{kStart};
  MemoryStore store;
  Limiter limiter{store, clock};
  limiter.set_limits("model", {Limit::concurrency("slots", 1)});
  asio::io_context io;
  Lease holder = limiter.try_acquire("u", "model", {});
  ASSERT_TRUE(holder.allowed());
  Capture got;
  limiter.async_acquire("u", "model", {}, 600s, got.handler(io));
  run_ready(io);
  EXPECT_FALSE(got.lease);
  Capture committed;
  holder.async_commit(asio::bind_executor(io, [&](Decision d) { EXPECT_TRUE(d.allowed); }));
  EXPECT_FALSE(holder.active());  // ended at once
  run_ready(io);
  ASSERT_TRUE(got.lease);
  EXPECT_TRUE(got.lease->allowed());
}

TEST(AsyncAcquire, ThousandsOfWaitersOnOneThread) {
  Fixture f(1000);
  ASSERT_TRUE(f.limiter.consume("u", "model", {{"tokens", 1000}}).allowed);
  constexpr int kWaiters = 5000;
  std::vector<int> admitted;
  admitted.reserve(kWaiters);
  for (int i = 0; i < kWaiters; ++i) {
    f.limiter.async_acquire("u", "model", {{"tokens", 1}}, 3600s,
                            asio::bind_executor(f.io, [&admitted, i](Lease l) {
                              if (l.allowed()) admitted.push_back(i);
                            }));
  }
  run_ready(f.io);
  EXPECT_EQ(f.limiter.waiting("u", "model"), static_cast<std::size_t>(kWaiters));
  // 1000 tokens a minute: one every 60 ms; every step admits the head, which hands over.
  while (admitted.size() < kWaiters) {
    const Micros next = f.clock.next_wakeup();
    ASSERT_GT(next, 0);
    f.clock.set(next);
    run_ready(f.io);
  }
  for (int i = 0; i < kWaiters; ++i) ASSERT_EQ(admitted[static_cast<std::size_t>(i)], i);
  EXPECT_EQ(f.clock.now(), kStart + kWaiters * 60'000);  // exactly one emission interval each
}

TEST(AsyncLease, RollbackAndAdjustThroughTokens) {
  Fixture f;
  Capture got;
  f.limiter.async_try_acquire("u", "model", {{"tokens", 6}}, got.handler(f.io));
  f.io.run();
  ASSERT_TRUE(got.lease && got.lease->allowed());
  std::optional<Decision> adjusted;
  got.lease->async_adjust({{"tokens", 2}},
                          asio::bind_executor(f.io, [&](Decision d) { adjusted = d; }));
  run_ready(f.io);
  ASSERT_TRUE(adjusted && adjusted->allowed);
  EXPECT_EQ(f.available(), 2);
  got.lease->async_rollback(asio::bind_executor(f.io, [](Decision) {}));
  EXPECT_FALSE(got.lease->active());
  run_ready(f.io);
  EXPECT_EQ(f.available(), 10);  // all 8 refunded
  EXPECT_THROW(got.lease->async_adjust({{"tokens", 1}}, asio::bind_executor(f.io, [](Decision) {})),
               LeaseError);
}

// Several threads run the loop and start waits while time moves and waits are cancelled at
// random moments; afterwards every token taken is held by exactly one admitted lease (none
// lost to a cancelled wait that the store admitted meanwhile, none counted twice). Demand
// (~1200 tokens) exceeds what a minute refills (400), so the queue never empties and the
// bucket never saturates: what it has left is exactly refilled - admitted.
TEST(AsyncAcquire, StormOfCancellationsLosesNoToken) {
  const std::uint64_t seed = test::test_seed();
  std::cout << "seed " << seed << "\n";
  constexpr std::int64_t kCapacity = 400;
  Fixture f(kCapacity);
  ASSERT_TRUE(f.limiter.consume("u", "model", {{"tokens", kCapacity}}).allowed);
  auto work = asio::make_work_guard(f.io);
  std::vector<std::thread> loop;
  for (int i = 0; i < 3; ++i) loop.emplace_back([&] { f.io.run(); });

  constexpr int kWaiters = 600;
  struct Waiter {
    explicit Waiter(asio::io_context& io) : strand(asio::make_strand(io)) {}
    asio::strand<asio::io_context::executor_type> strand;  // its completion and its emits
    asio::cancellation_signal signal;
  };
  std::vector<std::unique_ptr<Waiter>> waiters;
  for (int i = 0; i < kWaiters; ++i) waiters.push_back(std::make_unique<Waiter>(f.io));
  std::atomic<int> done{0};
  std::atomic<int> cancelled{0};
  std::atomic<std::int64_t> admitted_tokens{0};
  std::mutex leases_mu;
  std::vector<Lease> leases;
  std::vector<std::thread> starters;
  for (int t = 0; t < 3; ++t) {
    starters.emplace_back([&, t] {
      for (int i = t; i < kWaiters; i += 3) {
        const std::int64_t n = 1 + i % 3;
        Waiter& w = *waiters[static_cast<std::size_t>(i)];
        asio::post(w.strand, [&, n] {
          f.limiter.async_acquire(
              "u", "model", {{"tokens", n}}, 3600s,
              asio::bind_cancellation_slot(w.signal.slot(),
                                           asio::bind_executor(w.strand, [&, n](Lease l) {
                                             if (l.allowed()) {
                                               admitted_tokens += n;
                                               std::lock_guard g(leases_mu);
                                               leases.push_back(std::move(l));
                                             } else if (l.decision().code == Code::cancelled) {
                                               ++cancelled;
                                             }
                                             ++done;
                                           })));
        });
      }
    });
  }
  for (auto& s : starters) s.join();
  auto cancel = [&](int i) {
    Waiter& w = *waiters[static_cast<std::size_t>(i)];
    asio::post(w.strand, [&w] { w.signal.emit(asio::cancellation_type::terminal); });
  };
  // Lets the loop catch up with what is queued so far, so time does not race ahead of it.
  auto settle = [&] {
    for (int i = 0; i < 3; ++i) {
      std::promise<void> reached;
      asio::post(f.io, [&] { reached.set_value(); });
      reached.get_future().wait();
    }
  };
  std::mt19937_64 rng(seed);
  const Micros end = kStart + 60 * kSec;
  while (f.clock.now() < end) {
    cancel(static_cast<int>(rng() % kWaiters));
    f.clock.set(std::min(end, f.clock.now() + static_cast<Micros>(rng() % 200'000)));
    settle();
  }
  for (int i = 0; i < kWaiters; ++i) cancel(i);  // the rest (a finished wait ignores it)
  ASSERT_TRUE(test::spin_until([&] { return done.load() == kWaiters; }, "every wait answered"));
  work.reset();
  for (auto& t : loop) t.join();
  const std::int64_t refilled = 60 * kSec / (60 * kSec / kCapacity);
  std::cout << admitted_tokens.load() << " tokens admitted, " << cancelled.load()
            << " waits cancelled, " << refilled << " tokens refilled\n";
  EXPECT_GT(cancelled.load(), 0);
  EXPECT_EQ(f.available(), refilled - admitted_tokens.load());
  EXPECT_EQ(f.limiter.waiting("u", "model"), 0u);
}

}  // namespace
}  // namespace admit
