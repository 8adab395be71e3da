// The Scheduler through its public API: completion tokens, pacing by the Limiter, no
// head-of-line blocking, priorities, deadlines, overflow policies, retries against the
// provider simulator, the breaker, plug-ins, modes, stats and concurrent submits.
#include "admit/sched/scheduler.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <boost/asio/bind_executor.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/thread_pool.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <thread>

#include "sched_support.hpp"

namespace admit::sched {
namespace {

namespace asio = boost::asio;
using test::Done;
using test::kMs;
using test::kSec;

class Sched : public test::SchedFixture {};

/// What stats says is available of `limit` of `entity` on `resource`; -1 if absent.
std::int64_t available(Limiter& limiter, std::string_view entity, std::string_view resource,
                       std::string_view limit) {
  for (const auto& st : limiter.stats(entity, resource).limits) {
    if (st.entity == entity && st.limit == limit) return st.available;
  }
  return -1;
}

TEST_F(Sched, CoroutineAwaitsTheResultAndUsageIsReconciled) {
  limiter.set_limits("gpt", {Limit::per_minute("rpm", 100), Limit::per_minute("tpm", 10'000)});
  Scheduler s(io.get_executor(), limiter);
  std::optional<Result> got;
  asio::co_spawn(
      io,
      [&]() -> asio::awaitable<void> {
        got = co_await s.async_submit(meta("r1", "t1", "gpt", 1000),
                                      fixed(200, 0, Usage{300, 100, 0}), asio::use_awaitable);
      },
      asio::detached);
  settle();
  ASSERT_TRUE(got.has_value());
  EXPECT_EQ(got->outcome.status, 200);
  EXPECT_EQ(got->attempts, 1);
  EXPECT_EQ(got->bucket, "gpt");
  // 1000 estimated, 400 used: 600 refunded.
  for (const auto& st : limiter.stats("default", "gpt").limits) {
    if (st.limit == "tpm") {
      EXPECT_EQ(st.available, 10'000 - 400);
    }
    if (st.limit == "rpm") {
      EXPECT_EQ(st.available, 99);
    }
  }
  EXPECT_EQ(s.stats().live, 0U) << "a finished request's record is freed";
}

TEST_F(Sched, CoroutineSeesSchedulerErrorsAsExceptions) {
  Scheduler s(io.get_executor(), limiter, {.max_attempts = 1});
  bool caught = false;
  asio::co_spawn(
      io,
      [&]() -> asio::awaitable<void> {
        try {
          (void)co_await s.async_submit(meta("r1", "t1", "gpt"), fixed(503), asio::use_awaitable);
        } catch (const RetriesExhausted& e) {
          caught = e.status() == 503 && e.request_id() == "r1";
        }
      },
      asio::detached);
  settle();
  EXPECT_TRUE(caught);
}

TEST_F(Sched, FutureAndBoundCallbackTokens) {
  Scheduler s(io.get_executor(), limiter);
  std::future<Result> f = s.submit(meta("f", "t", "gpt"), fixed(200));
  auto strand = asio::make_strand(io);
  bool on_strand = false;
  s.async_submit(meta("c", "t", "gpt"), fixed(201),
                 asio::bind_executor(strand, [&](std::exception_ptr e, Result r) {
                   on_strand = !e && r.outcome.status == 201 && strand.running_in_this_thread();
                 }));
  settle();
  ASSERT_EQ(f.wait_for(std::chrono::seconds(0)), std::future_status::ready);
  EXPECT_EQ(f.get().outcome.status, 200);
  EXPECT_TRUE(on_strand);
}

TEST_F(Sched, BadMetadataFailsWithValidationError) {
  Scheduler s(io.get_executor(), limiter);
  Done a, b, c;
  submit(s, meta("neg", "t", "gpt", -5), fixed(200), a);
  submit(s, meta("nomodel", "t", ""), fixed(200), b);
  RequestMetadata m = meta("attempts", "t", "gpt");
  m.max_attempts = -1;
  submit(s, m, fixed(200), c);
  settle();
  EXPECT_TRUE(a.failed_with<ValidationError>());
  EXPECT_TRUE(b.failed_with<ValidationError>());
  EXPECT_TRUE(c.failed_with<ValidationError>());
  EXPECT_TRUE(calls.empty());
  EXPECT_THROW(Scheduler(io.get_executor(), limiter, {.max_concurrent_executions = 0}),
               ValidationError);
  EXPECT_THROW(Scheduler(io.get_executor(), limiter, {.rate_limit_buffer_ratio = 0}),
               ValidationError);
}

TEST_F(Sched, PacesByTheLimitersRetryAfterWithATimerNotPolling) {
  // One request per second; five queued: they go at +0, +1 s, ... exactly.
  limiter.set_limits("gpt", {Limit::custom("rpm", 1, 1, std::chrono::seconds(1))});
  Scheduler s(io.get_executor(), limiter);
  std::vector<Done> done(5);
  const Micros t0 = clock.now();
  for (int i = 0; i < 5; ++i)
    submit(s, meta(test::id("r", i), "t", "gpt"), fixed(200), done[static_cast<std::size_t>(i)]);
  EXPECT_EQ(s.held_until("gpt"), 0) << "nothing asked yet";
  settle();
  EXPECT_EQ(calls.size(), 1U);
  EXPECT_EQ(clock.pending_calls(), 1U) << "one timer for the held bucket";
  EXPECT_EQ(s.held_until("gpt"), t0 + kSec) << "the Limiter's retry_after, for a router";
  EXPECT_EQ(s.held_until("other"), 0);
  run_for(10 * kSec);
  ASSERT_EQ(calls.size(), 5U);
  EXPECT_EQ(s.held_until("gpt"), 0) << "the queue drained: not held";
  for (std::size_t i = 0; i < 5; ++i) {
    EXPECT_EQ(calls[i].at, t0 + static_cast<Micros>(i) * kSec) << i;
    EXPECT_TRUE(done[i].finished && !done[i].error);
  }
  EXPECT_EQ(s.stats().throttled, 4U);
}

TEST_F(Sched, NoHeadOfLineBlockingBetweenBuckets) {
  limiter.set_limits("slow", {Limit::custom("rpm", 1, 1, std::chrono::seconds(10))});
  Scheduler s(io.get_executor(), limiter);
  std::vector<Done> slow(20);
  for (std::size_t i = 0; i < slow.size(); ++i) {
    submit(s, meta(test::id("s", i), "t", "slow"), fixed(200), slow[i]);
  }
  Done fast;
  const Micros t0 = clock.now();
  submit(s, meta("fast", "t", "idle-model"), fixed(200), fast);
  settle();
  ASSERT_TRUE(fast.finished);
  EXPECT_FALSE(fast.error);
  EXPECT_EQ(fast.at, t0) << "the idle model's request went at once";
  EXPECT_EQ(s.stats().queued, 19U);
}

TEST_F(Sched, HigherPriorityGoesFirstWithinATenant) {
  limiter.set_limits("gpt", {Limit::custom("rpm", 1, 1, std::chrono::seconds(1))});
  Scheduler s(io.get_executor(), limiter);
  std::vector<Done> d(4);
  submit(s, meta("first", "t", "gpt", 100, 0), fixed(200), d[0]);  // goes at once
  submit(s, meta("low", "t", "gpt", 100, 0), fixed(200), d[1]);
  submit(s, meta("mid", "t", "gpt", 100, 5), fixed(200), d[2]);
  submit(s, meta("high", "t", "gpt", 100, 9), fixed(200), d[3]);
  run_for(5 * kSec);
  ASSERT_EQ(calls.size(), 4U);
  EXPECT_EQ(calls[1].id, "high");
  EXPECT_EQ(calls[2].id, "mid");
  EXPECT_EQ(calls[3].id, "low");
}

TEST_F(Sched, DeadlinePassesWhileQueued) {
  limiter.set_limits("gpt", {Limit::custom("rpm", 1, 1, std::chrono::seconds(10))});
  Scheduler s(io.get_executor(), limiter);
  Done a, b;
  submit(s, meta("a", "t", "gpt"), fixed(200), a);
  auto m = meta("b", "t", "gpt");
  m.deadline = clock.now() + 3 * kSec;
  const Micros deadline = m.deadline;
  submit(s, std::move(m), fixed(200), b);
  run_for(5 * kSec);
  ASSERT_TRUE(b.finished);
  EXPECT_TRUE(b.failed_with<RequestTimeout>());
  EXPECT_EQ(b.at, deadline);
  EXPECT_EQ(calls.size(), 1U);
  EXPECT_EQ(s.stats().timed_out, 1U);
  EXPECT_EQ(s.stats().queued, 0U);
}

TEST_F(Sched, RequestTimeoutWhileRunningAndTheLateReplyIsStillAccounted) {
  limiter.set_limits("gpt", {Limit::per_minute("tpm", 10'000)});
  Scheduler s(io.get_executor(), limiter, {.request_timeout = 2 * kSec});
  Done d;
  submit(s, meta("slow", "t", "gpt", 1000), fixed(200, 5 * kSec, Usage{100, 0, 0}), d);
  run_for(2 * kSec);
  EXPECT_TRUE(d.failed_with<RequestTimeout>());
  EXPECT_EQ(s.stats().in_flight, 1U) << "the call is still out";
  run_for(4 * kSec);
  EXPECT_EQ(s.stats().in_flight, 0U);
  // The late reply reconciled the reservation: 1000 estimated, 100 used.
  const auto st = limiter.stats("default", "gpt").limits.at(0);
  EXPECT_GE(st.available, 10'000 - 100);
  EXPECT_LT(st.available, 10'000 - 100 + 200);  // plus ~6 s of refill at 166/s
  EXPECT_EQ(s.stats().live, 0U) << "freed once the late reply is in";
}

TEST_F(Sched, OverflowRejectFailsTheNewRequestAtOnce) {
  limiter.set_limits("gpt", {Limit::custom("rpm", 1, 1, std::chrono::seconds(10))});
  Scheduler s(io.get_executor(), limiter, {.max_queue_size = 2});
  std::vector<Done> d(4);
  for (std::size_t i = 0; i < 4; ++i)
    submit(s, meta(test::id("r", i), "t", "gpt"), fixed(200), d[i]);
  settle();
  // r0 runs, r1 and r2 queue, r3 overflows.
  EXPECT_TRUE(d[3].failed_with<QueueOverflow>());
  EXPECT_FALSE(d[1].finished);
  EXPECT_FALSE(d[2].finished);
  EXPECT_EQ(s.stats().overflowed, 1U);
  run_for(30 * kSec);
  EXPECT_TRUE(d[1].finished && !d[1].error);
  EXPECT_TRUE(d[2].finished && !d[2].error);
}

TEST_F(Sched, OverflowDropOldestFailsTheOldestQueued) {
  limiter.set_limits("gpt", {Limit::custom("rpm", 1, 1, std::chrono::seconds(10))});
  Scheduler s(io.get_executor(), limiter,
              {.max_queue_size = 2, .overflow = OverflowPolicy::drop_oldest});
  std::vector<Done> d(4);
  for (std::size_t i = 0; i < 4; ++i)
    submit(s, meta(test::id("r", i), "t", "gpt"), fixed(200), d[i]);
  settle();
  EXPECT_TRUE(d[1].failed_with<QueueOverflow>()) << "r1 was the oldest queued";
  EXPECT_FALSE(d[3].finished);
  run_for(30 * kSec);
  EXPECT_TRUE(d[2].finished && !d[2].error);
  EXPECT_TRUE(d[3].finished && !d[3].error);
}

TEST_F(Sched, BasicModeRetriesA429NotBeforeTheSimulatorsRetryAfter) {
  // Basic mode does not pace: the provider (2 requests per minute) answers the third 429.
  sim::ProviderModel provider({.rpm = 2, .tpm = 0});
  Scheduler s(io.get_executor(), limiter,
              {.mode = Mode::basic, .request_timeout = 0, .max_attempts = 5});
  std::vector<Done> d(3);
  for (std::size_t i = 0; i < 3; ++i)
    submit(s, meta(test::id("r", i), "t", "gpt"), simulated(provider), d[i]);
  settle();
  ASSERT_EQ(calls.size(), 3U);
  ASSERT_EQ(calls[2].status, 429);
  const Micros rejected_at = calls[2].at;
  // What the simulator computed: the exact wait until a request fits again (~30 s).
  sim::ProviderModel twin({.rpm = 2, .tpm = 0});
  (void)twin.handle({}, rejected_at);
  (void)twin.handle({}, rejected_at);
  const Micros retry_after = twin.handle({}, rejected_at).retry_after.value();
  run_for(300 * kSec);
  for (const auto& x : d) EXPECT_TRUE(x.finished && !x.error);
  const auto r2 = calls_of("r2");
  ASSERT_GE(r2.size(), 2U);
  EXPECT_GE(r2[1]->at, rejected_at + retry_after) << "not before retry-after";
  EXPECT_EQ(r2.back()->status, 200);
  EXPECT_EQ(d[2].result.attempts, static_cast<int>(r2.size()));
  EXPECT_GE(s.stats().retried, 1U);
  EXPECT_EQ(s.stats().live, 0U) << "retried requests are freed too";
}

TEST_F(Sched, IntelligentModeRetriesA429AndHoldsTheBucketUntilRetryAfter) {
  // Another client of the account drained the provider's bucket (2 per minute): the first
  // attempt gets a real 429; Discovery learns the limit and holds the bucket.
  sim::ProviderModel provider({.rpm = 2, .tpm = 0});
  const Micros t0 = clock.now();
  (void)provider.handle({}, t0);
  (void)provider.handle({}, t0);
  const Micros retry_after = provider.handle({}, t0).retry_after.value();
  provider.reset_stats();
  Scheduler s(io.get_executor(), limiter, {.request_timeout = 0, .max_attempts = 5});
  Done d;
  submit(s, meta("r", "t", "gpt"), simulated(provider), d);
  settle();
  ASSERT_EQ(calls.size(), 1U);
  EXPECT_EQ(calls[0].status, 429);
  EXPECT_FALSE(limiter.discovered_limits("default", "gpt").empty()) << "rpm learned from a 429";
  run_for(300 * kSec);
  ASSERT_TRUE(d.finished);
  EXPECT_FALSE(d.error);
  ASSERT_GE(calls.size(), 2U);
  EXPECT_GE(calls[1].at, t0 + retry_after);
  EXPECT_EQ(calls.back().status, 200);
  EXPECT_EQ(d.result.attempts, static_cast<int>(calls.size()));
}

TEST_F(Sched, IntelligentModePacesByLearnedLimitsWithoutA429) {
  // The Limiter knows nothing; the first response's headers teach it the provider's 4 rpm
  // (90% usable at once): eight requests go through without a single 429.
  sim::ProviderModel provider({.rpm = 4, .tpm = 0});
  Scheduler s(io.get_executor(), limiter, {.request_timeout = 0});
  std::vector<Done> d(8);
  for (std::size_t i = 0; i < d.size(); ++i)
    submit(s, meta(test::id("r", i), "t", "gpt"), simulated(provider), d[i]);
  run_for(300 * kSec);
  for (const auto& x : d) EXPECT_TRUE(x.finished && !x.error);
  EXPECT_EQ(provider.stats().rejected, 0);
  EXPECT_EQ(provider.stats().accepted, 8);
  EXPECT_GE(s.stats().throttled, 1U);
}

TEST_F(Sched, TransportFailuresAreRetriedThenRethrown) {
  Scheduler s(io.get_executor(), limiter, {.max_attempts = 3});
  Done d;
  RequestFn boom = [this](const Attempt& a, Reply) {
    calls.push_back({a.metadata->request_id, "", "", a.number, clock.now(), 0});
    throw std::runtime_error("connection reset");
  };
  submit(s, meta("x", "t", "gpt"), boom, d);
  run_for(60 * kSec);
  ASSERT_TRUE(d.finished);
  EXPECT_TRUE(d.failed_with<std::runtime_error>());
  EXPECT_EQ(calls.size(), 3U);
  EXPECT_EQ(s.stats().retried, 2U);
  // Backoff between attempts: never at the same instant.
  EXPECT_GT(calls[1].at, calls[0].at);
  EXPECT_GT(calls[2].at, calls[1].at);
}

TEST_F(Sched, ARequestsOwnAttemptCapIsBelowTheSchedulers) {
  Scheduler s(io.get_executor(), limiter, {.request_timeout = 0, .max_attempts = 3});
  Done once, twice, capped;
  RequestMetadata m = meta("once", "t", "gpt");
  m.max_attempts = 1;
  submit(s, m, fixed(503), once);
  m = meta("twice", "t", "gpt");
  m.max_attempts = 2;
  submit(s, m, fixed(429), twice);
  m = meta("capped", "t", "gpt");
  m.max_attempts = 9;  // never more than the scheduler's 3
  submit(s, m, fixed(503), capped);
  run_for(120 * kSec);
  ASSERT_TRUE(once.finished && twice.finished && capped.finished);
  EXPECT_TRUE(once.failed_with<RetriesExhausted>());
  EXPECT_TRUE(twice.failed_with<RetriesExhausted>());
  EXPECT_TRUE(capped.failed_with<RetriesExhausted>());
  const auto attempts = [this](std::string_view id) {
    return std::count_if(calls.begin(), calls.end(), [id](const auto& c) { return c.id == id; });
  };
  EXPECT_EQ(attempts("once"), 1);
  EXPECT_EQ(attempts("twice"), 2);
  EXPECT_EQ(attempts("capped"), 3);
}

TEST_F(Sched, BreakerOpensFailsFastProbesHalfOpenAndCloses) {
  BreakerOptions b{.threshold = 3, .window = 10 * kSec, .open_for = 5 * kSec};
  Scheduler s(io.get_executor(), limiter, {.max_attempts = 1, .breaker = b});
  std::vector<Done> fails(3);
  for (std::size_t i = 0; i < 3; ++i)
    submit(s, meta(test::id("f", i), "t", "gpt"), fixed(503), fails[i]);
  settle();
  for (auto& f : fails)
    EXPECT_TRUE(f.failed_with<RetriesExhausted>() || f.failed_with<TooManyFailedRequests>());
  EXPECT_EQ(s.breaker_state("gpt"), BreakerState::open);
  EXPECT_EQ(s.stats().breaker_trips, 1U);
  // Open: fails fast without calling.
  Done fast;
  const std::size_t before = calls.size();
  submit(s, meta("fast", "t", "gpt"), fixed(200), fast);
  settle();
  EXPECT_TRUE(fast.failed_with<TooManyFailedRequests>());
  EXPECT_EQ(calls.size(), before);
  // Another bucket is unaffected.
  Done other;
  submit(s, meta("other", "t", "other-model"), fixed(200), other);
  settle();
  EXPECT_TRUE(other.finished && !other.error);
  // After open_for: half-open; one probe at a time (the second waits), its success closes.
  run_for(5 * kSec);
  EXPECT_EQ(s.breaker_state("gpt"), BreakerState::half_open);
  Done probe, second;
  submit(s, meta("probe", "t", "gpt"), fixed(200, 1 * kSec), probe);
  submit(s, meta("second", "t", "gpt"), fixed(200), second);
  settle();
  EXPECT_FALSE(probe.finished);
  EXPECT_FALSE(second.finished) << "waits for the probe";
  run_for(1 * kSec);
  EXPECT_TRUE(probe.finished && !probe.error);
  EXPECT_TRUE(second.finished && !second.error);
  EXPECT_EQ(s.breaker_state("gpt"), BreakerState::closed);
  EXPECT_EQ(s.stats().live, 0U) << "failed, fast-failed and probing requests are freed";
}

TEST_F(Sched, BreakerHalfOpenProbeFailureOpensAgain) {
  BreakerOptions b{.threshold = 1, .window = 10 * kSec, .open_for = 5 * kSec};
  Scheduler s(io.get_executor(), limiter, {.max_attempts = 1, .breaker = b});
  Done f1, probe, after;
  submit(s, meta("f1", "t", "gpt"), fixed(500), f1);
  settle();
  EXPECT_EQ(s.breaker_state("gpt"), BreakerState::open);
  run_for(5 * kSec);
  submit(s, meta("probe", "t", "gpt"), fixed(502), probe);
  settle();
  EXPECT_TRUE(probe.failed_with<RetriesExhausted>());
  EXPECT_EQ(s.breaker_state("gpt"), BreakerState::open);
  EXPECT_EQ(s.stats().breaker_trips, 2U);
  submit(s, meta("after", "t", "gpt"), fixed(200), after);
  settle();
  EXPECT_TRUE(after.failed_with<TooManyFailedRequests>());
}

TEST_F(Sched, BreakerFailsTheQueuedRequestsOfItsBucket) {
  BreakerOptions b{.threshold = 1, .window = 10 * kSec, .open_for = 5 * kSec};
  Scheduler s(io.get_executor(), limiter,
              {.max_concurrent_executions = 2, .max_attempts = 1, .breaker = b});
  std::vector<Done> d(5);
  for (std::size_t i = 0; i < 5; ++i)
    submit(s, meta(test::id("r", i), "t", "gpt"), fixed(503, kSec), d[i]);
  settle();
  EXPECT_EQ(calls.size(), 2U);
  run_for(1 * kSec);
  for (std::size_t i = 2; i < 5; ++i) EXPECT_TRUE(d[i].failed_with<TooManyFailedRequests>()) << i;
  EXPECT_EQ(calls.size(), 2U);
  EXPECT_TRUE(d[0].failed_with<RetriesExhausted>());  // its own 503, no attempt left
  EXPECT_TRUE(d[1].failed_with<RetriesExhausted>());
  EXPECT_EQ(s.stats().broken, 3U);
}

class BucketedProvider : public ProviderPlugin {
 public:
  std::string name() const override { return "bucketed"; }
  std::string bucket_for(std::string_view model, std::string_view) const override {
    return model.starts_with("family-") ? "family" : std::string(model);
  }
  Observation parse_response(int status, const Headers& headers, std::string_view body,
                             Micros now) const override {
    ++parsed;
    return admit::parse_response(Provider::openai, headers, status, body, now);
  }
  std::vector<DiscoveredBucket> discover_limits() override { return {{"family", 60, 0}}; }
  mutable std::atomic<int> parsed{0};
};

TEST_F(Sched, ProviderPluginSharesABucketAndAnnouncesItsLimits) {
  auto plugin = std::make_shared<BucketedProvider>();
  // The simulator's hidden limit is the announced one, so its headers confirm it.
  sim::ProviderModel provider({.rpm = 60, .tpm = 0});
  Scheduler s(io.get_executor(), limiter, {.rate_limit_buffer_ratio = 0.05}, plugin);
  EXPECT_EQ(s.discover_limits(), 1U);
  EXPECT_EQ(s.bucket_for("family-a", "text"), "family");
  // 60 rpm with a 5% buffer: capacity 3 at once, refilled at 1/s.
  std::vector<Done> d(6);
  const Micros t0 = clock.now();
  for (std::size_t i = 0; i < 6; ++i) {
    submit(s, meta(test::id("r", i), "t", i % 2 == 0 ? "family-a" : "family-b"),
           simulated(provider), d[i]);
  }
  run_for(10 * kSec);
  ASSERT_EQ(calls.size(), 6U);
  EXPECT_EQ(calls[2].at, t0);
  EXPECT_EQ(calls[3].at, t0 + kSec) << "both models paced by the shared bucket";
  EXPECT_EQ(calls[5].at, t0 + 3 * kSec);
  EXPECT_EQ(plugin->parsed.load(), 6);
  for (const auto& x : d) EXPECT_EQ(x.result.bucket, "family");
}

TEST_F(Sched, BasicModeCallsDirectlyWithoutPacing) {
  limiter.set_limits("gpt", {Limit::custom("rpm", 1, 1, std::chrono::seconds(10))});
  Scheduler s(io.get_executor(), limiter, {.mode = Mode::basic});
  std::vector<Done> d(5);
  for (std::size_t i = 0; i < 5; ++i)
    submit(s, meta(test::id("r", i), "t", "gpt"), fixed(200), d[i]);
  settle();
  EXPECT_EQ(calls.size(), 5U);
  for (const auto& x : d) EXPECT_TRUE(x.finished && !x.error);
}

TEST_F(Sched, ConcurrencyCapHoldsRequestsUntilOneFinishes) {
  Scheduler s(io.get_executor(), limiter, {.mode = Mode::basic, .max_concurrent_executions = 2});
  std::vector<Done> d(5);
  for (std::size_t i = 0; i < 5; ++i)
    submit(s, meta(test::id("r", i), "t", "gpt"), fixed(200, kSec), d[i]);
  settle();
  EXPECT_EQ(calls.size(), 2U);
  EXPECT_EQ(s.stats().in_flight, 2U);
  run_for(kSec);
  EXPECT_EQ(calls.size(), 4U);
  run_for(2 * kSec);
  EXPECT_EQ(calls.size(), 5U);
  EXPECT_EQ(s.stats().completed, 5U);
}

TEST_F(Sched, AccountModeQueuesAndPacesPerAccount) {
  limiter.set_entity_limits("acct-a", "gpt",
                            {Limit::custom("rpm", 1, 1, std::chrono::seconds(10))});
  limiter.set_entity_limits("acct-b", "gpt",
                            {Limit::custom("rpm", 5, 5, std::chrono::seconds(10))});
  Scheduler s(io.get_executor(), limiter, {.mode = Mode::account});
  std::vector<Done> a(3), b(3);
  for (std::size_t i = 0; i < 3; ++i) {
    auto ma = meta(test::id("a", i), "t", "gpt");
    ma.account = "acct-a";
    submit(s, ma, fixed(200), a[i]);
  }
  for (std::size_t i = 0; i < 3; ++i) {
    auto mb = meta(test::id("b", i), "t", "gpt");
    mb.account = "acct-b";
    submit(s, mb, fixed(200), b[i]);
  }
  settle();
  for (const auto& x : b) EXPECT_TRUE(x.finished && !x.error) << "acct-b is not behind acct-a";
  EXPECT_TRUE(a[0].finished);
  EXPECT_FALSE(a[1].finished);
  EXPECT_EQ(s.stats().queued, 2U);
}

TEST_F(Sched, LimiterRefusalThatWaitingCannotFixIsRejected) {
  limiter.set_limits("gpt", {Limit::per_minute("tpm", 1000)});
  Scheduler s(io.get_executor(), limiter);
  Done d;
  submit(s, meta("huge", "t", "gpt", 5000), fixed(200), d);
  settle();
  ASSERT_TRUE(d.failed_with<RequestRejected>());
  try {
    std::rethrow_exception(d.error);
  } catch (const RequestRejected& e) {
    EXPECT_EQ(e.decision().code, Code::exceeds_capacity);
  }
}

TEST_F(Sched, DestroyingTheSchedulerFailsWhatIsQueued) {
  limiter.set_limits("gpt", {Limit::custom("rpm", 1, 1, std::chrono::seconds(10))});
  Done a, b;
  {
    Scheduler s(io.get_executor(), limiter);
    submit(s, meta("a", "t", "gpt"), fixed(200), a);
    submit(s, meta("b", "t", "gpt"), fixed(200), b);
    settle();
  }
  settle();
  EXPECT_TRUE(a.finished && !a.error);
  EXPECT_TRUE(b.failed_with<SchedulerClosed>());
}

TEST_F(Sched, ALimitAnotherProcessLearnedIsChargedByTheNextRequest) {
  // Two Limiters sharing what they learn through one store stand for two processes. This
  // one's scheduler has cached the names of the limits it charges (rpm); the other learns
  // tpm. Without a response of its own, the scheduler's next request is charged on it.
  LimiterOptions o;
  o.adaptation = AdaptationMode::store;
  Limiter here(store, clock, o);
  Limiter other(store, clock, o);
  here.set_limits("gpt", {Limit::per_minute("rpm", 100)});
  other.set_limits("gpt", {Limit::per_minute("rpm", 100)});
  Scheduler s(io.get_executor(), here);
  Done a, b;
  submit(s, meta("a", "t", "gpt", 300), fixed(200), a);
  settle();
  ASSERT_TRUE(a.finished && !a.error);
  other.set_discovered_limits("default", "gpt", {Limit::per_minute("tpm", 1000)});
  run_for(o.adaptation_refresh);  // `here` reads the store again from now on
  submit(s, meta("b", "t", "gpt", 300), fixed(200), b);
  settle();
  ASSERT_TRUE(b.finished && !b.error);
  EXPECT_EQ(available(here, "default", "gpt", "tpm"), 700);
  EXPECT_EQ(s.stats().completed, 2U);
}

// The upstream's learned limits mirror the provider (here the simulator, which charges
// prompt + max_tokens when a request arrives and gives nothing back); configured ones count
// the usage reported. Replies are sent by the test: time stands still, nothing refills.
class SchedFollow : public test::SchedFixture {
 protected:
  sim::ProviderModel provider{{.rpm = 0, .tpm = 10'000}};  // learned: 9000, margin 1000
  std::vector<Reply> replies;
  std::vector<Outcome> outcomes;

  // Half the estimate is prompt, half max_tokens; the answer uses half of max_tokens.
  RequestFn upstream() {
    return [this](const Attempt& a, Reply reply) {
      const std::int64_t half = a.metadata->estimated_tokens / 2;
      const sim::SimResponse r = provider.handle({"default", "gpt", half, half}, clock.now());
      Outcome o;
      o.status = r.status;
      for (const auto& [k, v] : r.headers) o.headers.add(k, v);
      if (r.status == 200) o.usage = Usage{half, half / 2, 0};
      replies.push_back(std::move(reply));
      outcomes.push_back(std::move(o));
    };
  }
  void reply(std::size_t i) {
    replies[i](outcomes[i]);
    settle();
  }
  std::int64_t tpm() { return available(limiter, "default", "gpt", "tpm"); }
  std::int64_t tph() { return available(limiter, "default", "gpt", "tph"); }
  std::int64_t provider_level() {
    const auto v = outcomes.back().headers.find("x-ratelimit-remaining-tokens");
    return v ? std::stoll(std::string(*v)) : -1;
  }
};

TEST_F(SchedFollow, LearnedLimitsKeepWhatTheProviderChargedConfiguredOnesTheUsage) {
  limiter.set_limits("gpt", {Limit::per_hour("tph", 1'000'000)});
  Scheduler s(io.get_executor(), limiter);
  std::vector<Done> d(2);
  submit(s, meta("r0", "t", "gpt", 1000), upstream(), d[0]);
  settle();
  reply(0);
  // Learned from the answer: 9000 at most, and no more than the provider's 9000 - 1000.
  EXPECT_EQ(tpm(), 8000);
  EXPECT_EQ(tph(), 1'000'000 - 750);
  submit(s, meta("r1", "t", "gpt", 1000), upstream(), d[1]);
  settle();
  reply(1);
  EXPECT_EQ(provider_level(), 8000);
  EXPECT_EQ(tpm(), 8000 - 1000) << "the 250 max_tokens left unused are not given back";
  EXPECT_EQ(tph(), 1'000'000 - 1500) << "a configured limit counts the usage";
  for (const auto& x : d) EXPECT_TRUE(x.finished && !x.error);
}

TEST_F(SchedFollow, LearnedLimitsFollowTheProviderUpByTheChargeLessWhatIsInFlight) {
  limiter.set_limits("gpt", {Limit::per_hour("tph", 1'000'000)});
  Scheduler s(io.get_executor(), limiter);
  std::vector<Done> d(7);
  submit(s, meta("r0", "t", "gpt", 1000), upstream(), d[0]);
  settle();
  reply(0);
  ASSERT_EQ(tpm(), 8000);  // the provider: 9000 left
  // Spent here but not at the provider (say, estimates of calls that never went out).
  (void)limiter.record_usage("default", "gpt", {{"tpm", 500}});
  ASSERT_EQ(tpm(), 7500);
  // Two in flight: 5500 here; the provider charged both (7000 left), the first answer says
  // 8000 (written before the second arrived).
  submit(s, meta("r1", "t", "gpt", 1000), upstream(), d[1]);
  submit(s, meta("r2", "t", "gpt", 1000), upstream(), d[2]);
  settle();
  ASSERT_EQ(replies.size(), 3U);
  ASSERT_EQ(tpm(), 5500);
  reply(1);
  // 8000 - 1000 margin = 7000, 1500 above; less the 1000 still in flight: 500 given back
  // (all 1500 would be 1000 more than the provider has: it charged the second already).
  EXPECT_EQ(tpm(), 6000);
  reply(2);
  EXPECT_EQ(provider_level(), 7000);
  EXPECT_EQ(tpm(), 6000) << "level with the provider: 7000 - 1000";

  // 3000 more spent here only: each answer gives back at most its own charge.
  (void)limiter.record_usage("default", "gpt", {{"tpm", 3000}});
  ASSERT_EQ(tpm(), 3000);
  std::int64_t expected[] = {3000, 3000, 3000, 2000};  // until level with the provider
  for (std::size_t i = 3; i < 7; ++i) {
    submit(s, meta(test::id("r", i), "t", "gpt", 1000), upstream(), d[i]);
    settle();
    reply(i);
    EXPECT_EQ(tpm(), expected[i - 3]) << i;
  }
  EXPECT_EQ(tpm(), provider_level() - 1000);
  EXPECT_EQ(tph(), 1'000'000 - 7 * 750) << "the configured limit counts the usage throughout";
  for (const auto& x : d) EXPECT_TRUE(x.finished && !x.error);
}

TEST(SchedThreads, SubmitFromManyThreadsOnAThreadPool) {
  // Real threads (TSan): 4 submitters, a 2-thread pool runs the scheduler and replies.
  SystemClock clock;
  MemoryStore store;
  Limiter limiter(store, clock);
  limiter.set_limits("gpt", {Limit::per_second("rps", 1'000'000), Limit::concurrency("c", 8)});
  asio::thread_pool pool(2);
  std::atomic<int> ok{0};
  std::atomic<int> failed{0};
  {
    Scheduler s(pool.get_executor(), limiter,
                {.max_concurrent_executions = 8, .max_queue_size = 10'000});
    std::vector<std::thread> threads;
    for (int t = 0; t < 4; ++t) {
      threads.emplace_back([&, t] {
        for (int i = 0; i < 250; ++i) {
          RequestMetadata m;
          m.tenant = test::id("t", t);
          m.model = i % 2 == 0 ? "gpt" : "other";
          m.estimated_tokens = 10;
          s.async_submit(
              m,
              [&pool](const Attempt&, Reply reply) {
                asio::post(pool, [reply] {
                  Outcome o;
                  o.status = 200;
                  reply(o);
                });
              },
              [&](std::exception_ptr e, Result) { (e ? failed : ok).fetch_add(1); });
        }
      });
    }
    for (auto& th : threads) th.join();
    for (int spin = 0; spin < 60'000 && ok.load() + failed.load() < 1000; ++spin) {
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    EXPECT_EQ(s.stats().completed, 1000U);
  }
  pool.join();
  EXPECT_EQ(ok.load(), 1000);
  EXPECT_EQ(failed.load(), 0);
}

}  // namespace
}  // namespace admit::sched
