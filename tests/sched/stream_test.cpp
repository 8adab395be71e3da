// Streaming accounting (admit/sched/stream.hpp) and SSE usage extraction
// (admit/sched/sse_usage.hpp): refunds, extra charges, the running count, orphans settled at
// their TTL by the tracker's timer on a ManualClock, abort and rollback, reports from many
// threads, hostile SSE input, and end to end against admit-provider-sim's routes served on a
// real socket.
#include "admit/sched/stream.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <cstdint>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "admit/core/clock.hpp"
#include "admit/core/error.hpp"
#include "admit/limiter.hpp"
#include "admit/sched/sse_usage.hpp"
#include "admit/sim/provider.hpp"
#include "admit/store/memory_store.hpp"
#include "common/http/server.hpp"
#include "src/app.hpp"
#include "src/http_handler.hpp"
#include "support/fault_store.hpp"

namespace admit::sched {
namespace {

namespace asio = boost::asio;

constexpr const char* kModel = "gpt-4o";
constexpr std::int64_t kTpm = 100'000;    // a rate limit: refills while the clock moves
constexpr std::int64_t kTpd = 1'000'000;  // a daily window: exact across clock advances

StreamOptions options_with(Micros ttl = 30 * kMicrosPerSecond) {
  StreamOptions o;
  o.token_limits = {"tpm", "tpd"};
  o.ttl = ttl;
  return o;
}

StreamRequest request(std::int64_t estimate, std::int64_t base = 0) {
  StreamRequest r;
  r.estimate = estimate;
  r.base = base;
  r.extra = {{"rpm", 1}};
  return r;
}

// The same without other amounts.
StreamRequest tokens_only(std::int64_t estimate, std::int64_t base = 0) {
  StreamRequest r = request(estimate, base);
  r.extra = {};
  return r;
}

class StreamTest : public ::testing::Test {
 protected:
  void SetUp() override {
    limiter_.set_limits(kModel, {Limit::per_minute("rpm", 1000), Limit::per_minute("tpm", kTpm),
                                 Limit::daily("tpd", kTpd)});
  }

  std::int64_t available(std::string_view limit, std::string_view entity = "user-1") {
    for (const LimitStatus& s : limiter_.stats(entity, kModel).limits) {
      if (s.limit == limit && s.entity == entity) return s.available;
    }
    ADD_FAILURE() << "no limit " << limit;
    return -1;
  }
  // Tokens used on the daily window (no refill: exact whatever the clock did).
  std::int64_t used_today(std::string_view entity = "user-1") {
    return kTpd - available("tpd", entity);
  }

  // Runs the handlers that are ready, such as the tracker's timer after the clock moved (an
  // io_context that ran out of work stops: restart it first).
  std::size_t poll() {
    io_.restart();
    return io_.poll();
  }

  MemoryStore store_;
  ManualClock clock_;
  Limiter limiter_{store_, clock_};
  asio::io_context io_;
};

TEST_F(StreamTest, RefundsWhatTheStreamDidNotUse) {
  StreamTracker tracker(limiter_, io_.get_executor(), options_with());
  StreamHandle h = tracker.try_open("user-1", kModel, request(1000, 100));
  ASSERT_TRUE(h);
  EXPECT_EQ(h.id(), 1U);
  EXPECT_EQ(available("tpm"), kTpm - 1000);
  EXPECT_EQ(used_today(), 1000);

  h.report_running(50);
  EXPECT_EQ(h.info().reported, 150);
  EXPECT_EQ(h.info().reserved, 1000);  // still under the reservation: nothing charged
  EXPECT_EQ(tracker.stats().active, 1U);

  const StreamSettlement s = h.finish(Usage{100, 200, 300});
  EXPECT_TRUE(s.settled);
  EXPECT_EQ(s.end, StreamEnd::finished);
  EXPECT_EQ(s.estimate, 1000);
  EXPECT_EQ(s.used, 300);
  EXPECT_EQ(s.refunded, 700);
  EXPECT_EQ(s.charged_extra, 0);
  EXPECT_TRUE(s.decision.allowed);
  EXPECT_EQ(available("tpm"), kTpm - 300);
  EXPECT_EQ(used_today(), 300);

  const StreamStats st = tracker.stats();
  EXPECT_EQ(st.active, 0U);
  EXPECT_EQ(st.opened, 1U);
  EXPECT_EQ(st.completed, 1U);
  EXPECT_EQ(st.orphaned, 0U);
  EXPECT_EQ(st.tokens_refunded, 700);
  EXPECT_EQ(st.tokens_charged_extra, 0);
  EXPECT_TRUE(tracker.streams().empty());

  // Ended: later calls change nothing.
  h.report_running(5000);
  const StreamSettlement again = h.finish(300);
  EXPECT_FALSE(again.settled);
  EXPECT_EQ(again.end, StreamEnd::finished);
  EXPECT_EQ(again.charged_extra, 0);
  EXPECT_EQ(used_today(), 300);
  EXPECT_EQ(tracker.stats().late_reports, 2U);
}

TEST_F(StreamTest, ChargesTheDifferenceWhenTheStreamUsedMore) {
  StreamTracker tracker(limiter_, io_.get_executor(), options_with());
  StreamHandle h = tracker.try_open("user-1", kModel, request(100));
  ASSERT_TRUE(h);
  const StreamSettlement s = h.finish(250);
  EXPECT_TRUE(s.settled);
  EXPECT_EQ(s.used, 250);
  EXPECT_EQ(s.refunded, 0);
  EXPECT_EQ(s.charged_extra, 150);
  EXPECT_EQ(available("tpm"), kTpm - 250);
  EXPECT_EQ(used_today(), 250);
  EXPECT_EQ(tracker.stats().tokens_charged_extra, 150);
}

TEST_F(StreamTest, ARunningCountPastTheReservationIsChargedAtOnce) {
  StreamTracker tracker(limiter_, io_.get_executor(), options_with());
  StreamHandle h = tracker.try_open("user-1", kModel, request(100, 20));
  ASSERT_TRUE(h);
  h.report_running(50);  // 70 of 100
  EXPECT_EQ(h.info().reserved, 100);
  h.report_running(120);  // 140: 40 past the reservation, charged now
  EXPECT_EQ(h.info().reserved, 140);
  EXPECT_EQ(available("tpm"), kTpm - 140);
  h.report_running(110);  // a smaller count than before changes nothing
  EXPECT_EQ(h.info().reported, 140);
  h.add_tokens(5);  // 145
  EXPECT_EQ(h.info().reserved, 145);
  EXPECT_EQ(tracker.stats().tokens_charged_extra, 45);

  const StreamSettlement s = h.finish(150);
  EXPECT_EQ(s.used, 150);
  EXPECT_EQ(s.charged_extra, 50);
  EXPECT_EQ(s.refunded, 0);
  EXPECT_EQ(available("tpm"), kTpm - 150);
  EXPECT_EQ(used_today(), 150);
}

TEST_F(StreamTest, AChargeStepChargesAheadAndTheEndRefundsIt) {
  StreamOptions o = options_with();
  o.charge_step = 100;
  StreamTracker tracker(limiter_, io_.get_executor(), o);
  StreamHandle h = tracker.try_open("user-1", kModel, request(100));
  h.report_running(101);
  EXPECT_EQ(h.info().reserved, 200);  // one store call covers the next 99 tokens
  h.report_running(199);
  EXPECT_EQ(h.info().reserved, 200);
  const StreamSettlement s = h.finish(130);
  EXPECT_EQ(s.used, 130);
  EXPECT_EQ(s.charged_extra, 100);
  EXPECT_EQ(s.refunded, 70);
  EXPECT_EQ(used_today(), 130);
}

TEST_F(StreamTest, ARunawayStreamPutsTheBucketInDebtSoOthersWait) {
  limiter_.set_limits(kModel, {Limit::per_minute("rpm", 1000), Limit::per_minute("tpm", 1000),
                               Limit::daily("tpd", kTpd)});
  StreamTracker tracker(limiter_, io_.get_executor(), options_with());
  StreamHandle h = tracker.try_open("user-1", kModel, request(900));
  ASSERT_TRUE(h);
  h.report_running(1500);  // 600 past the reservation: the bucket owes 500
  EXPECT_EQ(h.info().reserved, 1500);
  Lease other = limiter_.try_acquire("user-1", kModel, {{"tpm", 100}});
  EXPECT_FALSE(other);
  EXPECT_EQ(other.decision().code, Code::rate_exceeded);
  // 1000 per minute: the debt of 500 and the 100 asked for take 36 s to refill.
  EXPECT_EQ(other.decision().retry_after, 36 * kMicrosPerSecond);
  (void)h.finish(1500);
}

TEST_F(StreamTest, AnOrphanIsSettledByTheTimerWhenItsTtlPasses) {
  StreamTracker tracker(limiter_, io_.get_executor(), options_with(30 * kMicrosPerSecond));
  {
    StreamHandle h = tracker.try_open("user-1", kModel, request(1000, 10));
    ASSERT_TRUE(h);
    h.report_running(90);  // 100 reported
    clock_.advance(10 * kMicrosPerSecond);
    h.add_tokens(20);  // 120 reported, and activity: the deadline moves
  }                    // the consumer vanished: nothing happens now
  EXPECT_EQ(poll(), 0U);
  ASSERT_EQ(tracker.streams().size(), 1U);
  const StreamInfo info = tracker.streams().front();
  EXPECT_TRUE(info.consumer_gone);
  EXPECT_EQ(info.entity, "user-1");
  EXPECT_EQ(info.resource, kModel);
  EXPECT_EQ(info.estimate, 1000);
  EXPECT_EQ(info.reserved, 1000);
  EXPECT_EQ(info.reported, 120);
  EXPECT_EQ(info.last_activity, clock_.now());
  EXPECT_EQ(info.deadline, clock_.now() + 30 * kMicrosPerSecond);
  EXPECT_EQ(used_today(), 1000);

  clock_.advance(30 * kMicrosPerSecond - 1);  // 1 µs before the deadline
  poll();
  EXPECT_EQ(tracker.stats().active, 1U);
  EXPECT_EQ(tracker.stats().orphaned, 0U);

  clock_.advance(1);
  EXPECT_GT(poll(), 0U);
  const StreamStats st = tracker.stats();
  EXPECT_EQ(st.active, 0U);
  EXPECT_EQ(st.orphaned, 1U);
  EXPECT_EQ(st.completed, 0U);
  EXPECT_EQ(st.tokens_refunded, 880);
  EXPECT_EQ(used_today(), 120);  // what was reported is kept, the rest refunded
  EXPECT_TRUE(tracker.streams().empty());
}

TEST_F(StreamTest, AnIdleStreamIsOrphanedAndALateFinishStillCountsItsUsage) {
  StreamTracker tracker(limiter_, io_.get_executor(), options_with(5 * kMicrosPerSecond));
  StreamHandle h = tracker.try_open("user-1", kModel, request(1000, 10));
  h.report_running(40);  // 50
  clock_.advance(5 * kMicrosPerSecond);
  poll();
  EXPECT_EQ(tracker.stats().orphaned, 1U);
  EXPECT_EQ(used_today(), 50);
  EXPECT_EQ(h.info().reserved, 50);
  EXPECT_EQ(h.info().deadline, 0);

  // The consumer comes back with the final usage: what passed the kept 50 is recorded.
  const StreamSettlement s = h.finish(400);
  EXPECT_FALSE(s.settled);
  EXPECT_EQ(s.end, StreamEnd::orphaned);
  EXPECT_EQ(s.used, 50);
  EXPECT_EQ(s.charged_extra, 350);
  EXPECT_TRUE(s.decision.allowed);
  EXPECT_EQ(used_today(), 400);
  // A smaller one refunds nothing: the lease has ended.
  EXPECT_EQ(h.finish(10).charged_extra, 0);
  EXPECT_EQ(used_today(), 400);
}

TEST_F(StreamTest, KeepReservationPolicyRefundsNothingForOrphans) {
  StreamOptions o = options_with(kMicrosPerSecond);
  o.orphan_policy = OrphanPolicy::keep_reservation;
  StreamTracker tracker(limiter_, io_.get_executor(), o);
  { StreamHandle h = tracker.try_open("user-1", kModel, request(1000, 10)); }
  clock_.advance(kMicrosPerSecond);
  EXPECT_EQ(tracker.sweep(), 1U);  // the explicit sweep, before the timer's turn
  EXPECT_EQ(poll(), 1U);           // the timer finds nothing left
  EXPECT_EQ(tracker.stats().orphaned, 1U);
  EXPECT_EQ(tracker.stats().tokens_refunded, 0);
  EXPECT_EQ(used_today(), 1000);
}

TEST_F(StreamTest, PerStreamTtlsAndTheTimerFollowTheEarliestDeadline) {
  StreamTracker tracker(limiter_, io_.get_executor(), options_with(60 * kMicrosPerSecond));
  StreamRequest slow = request(100);
  StreamRequest quick = request(200);
  quick.ttl = 2 * kMicrosPerSecond;
  StreamHandle a = tracker.try_open("user-1", kModel, slow);
  StreamHandle b = tracker.try_open("user-2", kModel, quick);  // earlier deadline: re-arms
  ASSERT_TRUE(a && b);
  a = StreamHandle();  // consumer gone (move-assigning over a handle lets it go)
  b = StreamHandle();
  clock_.advance(2 * kMicrosPerSecond);
  poll();
  ASSERT_EQ(tracker.streams().size(), 1U);
  EXPECT_EQ(tracker.streams().front().entity, "user-1");
  EXPECT_EQ(used_today("user-2"), 0);
  clock_.advance(58 * kMicrosPerSecond);
  poll();
  EXPECT_TRUE(tracker.streams().empty());
  EXPECT_EQ(tracker.stats().orphaned, 2U);
  EXPECT_EQ(used_today("user-1"), 0);
}

TEST_F(StreamTest, AbortKeepsWhatWasReportedAndRollbackRefundsEverything) {
  limiter_.set_limits(kModel, {Limit::per_minute("rpm", 1000), Limit::per_minute("tpm", kTpm),
                               Limit::daily("tpd", kTpd), Limit::concurrency("inflight", 1)});
  StreamTracker tracker(limiter_, io_.get_executor(), options_with());
  StreamHandle a = tracker.try_open("user-1", kModel, request(500, 30));
  ASSERT_TRUE(a);
  EXPECT_NE(tracker.streams().front().lease_id, 0U);  // holds a concurrency slot
  StreamHandle denied = tracker.try_open("user-1", kModel, request(500));
  EXPECT_FALSE(denied);
  EXPECT_EQ(denied.decision().code, Code::concurrency_exceeded);
  EXPECT_EQ(denied.id(), 0U);
  EXPECT_FALSE(denied.finish(10).settled);  // an empty handle does nothing

  a.report_running(70);  // 100
  const StreamSettlement s = a.abort();
  EXPECT_TRUE(s.settled);
  EXPECT_EQ(s.end, StreamEnd::aborted);
  EXPECT_EQ(s.used, 100);
  EXPECT_EQ(s.refunded, 400);
  EXPECT_EQ(used_today(), 100);

  // The slot is free again. This one runs past its reservation, then fails: all refunded.
  StreamHandle b = tracker.try_open("user-1", kModel, request(50));
  ASSERT_TRUE(b);
  b.report_running(80);
  EXPECT_EQ(used_today(), 180);
  const StreamSettlement r = b.rollback();
  EXPECT_EQ(r.end, StreamEnd::rolled_back);
  EXPECT_EQ(r.used, 0);
  EXPECT_EQ(r.refunded, 80);
  EXPECT_EQ(r.charged_extra, 30);
  EXPECT_EQ(used_today(), 100);
  EXPECT_EQ(available("tpm"), kTpm - 100);

  const StreamStats st = tracker.stats();
  EXPECT_EQ(st.opened, 2U);
  EXPECT_EQ(st.aborted, 2U);
  EXPECT_EQ(st.tokens_refunded, 480);
  EXPECT_EQ(st.tokens_charged_extra, 30);
}

TEST_F(StreamTest, OpensAnAllowedLeaseAndRejectsBadArguments) {
  StreamTracker tracker(limiter_, io_.get_executor(), options_with());
  Lease lease = limiter_.try_acquire("user-1", kModel, {{"tpm", 300}, {"tpd", 300}});
  ASSERT_TRUE(lease);
  StreamHandle h = tracker.open(std::move(lease), request(300));
  ASSERT_TRUE(h);
  EXPECT_EQ(h.finish(120).refunded, 180);
  EXPECT_EQ(used_today(), 120);

  EXPECT_THROW((void)tracker.try_open("user-1", kModel, request(-1)), ValidationError);
  StreamRequest bad_base = request(10);
  bad_base.base = -1;
  EXPECT_THROW((void)tracker.try_open("user-1", kModel, bad_base), ValidationError);
  EXPECT_EQ(used_today(), 120);  // the refused open took nothing
  StreamOptions no_limits;
  no_limits.token_limits.clear();
  EXPECT_THROW(StreamTracker(limiter_, io_.get_executor(), no_limits), ValidationError);
  StreamOptions zero_ttl;
  zero_ttl.ttl = 0;
  EXPECT_THROW(StreamTracker(limiter_, io_.get_executor(), zero_ttl), ValidationError);
}

TEST_F(StreamTest, ABaseAboveTheEstimateIsChargedAtOpen) {
  StreamTracker tracker(limiter_, io_.get_executor(), options_with());
  StreamHandle h = tracker.try_open("user-1", kModel, request(10, 25));
  EXPECT_EQ(h.info().reserved, 25);
  EXPECT_EQ(used_today(), 25);
  EXPECT_EQ(h.finish(25).charged_extra, 15);
}

TEST_F(StreamTest, DestroyingTheTrackerSettlesWhatIsLeft) {
  StreamHandle survivor;
  {
    StreamTracker tracker(limiter_, io_.get_executor(), options_with());
    survivor = tracker.try_open("user-1", kModel, request(1000, 10));
    survivor.report_running(30);
    { StreamHandle gone = tracker.try_open("user-2", kModel, request(500)); }
  }
  EXPECT_EQ(used_today("user-1"), 40);
  EXPECT_EQ(used_today("user-2"), 0);
  // The handle outlived its tracker: inert.
  survivor.report_running(1000);
  EXPECT_FALSE(survivor.finish(2000).settled);
  EXPECT_EQ(used_today("user-1"), 40);
  EXPECT_EQ(poll(), 0U);
}

// A store that cannot be reached: a charge that fails is retried with the next higher count,
// and an end that cannot adjust keeps the reservation as it stood.
TEST(StreamStore, FailuresKeepTheReservationAsItStood) {
  test::FaultStore store;
  ManualClock clock;
  Limiter limiter(store, clock);
  limiter.set_limits(kModel, {Limit::daily("tpd", kTpd)});
  asio::io_context io;
  StreamOptions o;
  o.token_limits = {"tpd"};
  StreamTracker tracker(limiter, io.get_executor(), o);
  const auto used = [&] {
    for (const LimitStatus& s : limiter.stats("user-1", kModel).limits) {
      if (s.limit == "tpd") return kTpd - s.available;
    }
    return std::int64_t{-1};
  };
  StreamHandle h = tracker.try_open("user-1", kModel, tokens_only(100));
  ASSERT_TRUE(h);
  store.down = true;
  h.report_running(150);
  EXPECT_EQ(h.info().reserved, 100);
  EXPECT_EQ(tracker.stats().store_errors, 1U);
  h.report_running(150);  // the same count: not retried
  EXPECT_EQ(tracker.stats().store_errors, 1U);
  store.down = false;
  h.report_running(151);
  EXPECT_EQ(h.info().reserved, 151);
  EXPECT_EQ(used(), 151);
  store.down = true;
  const StreamSettlement s = h.finish(120);
  EXPECT_TRUE(s.settled);
  EXPECT_EQ(s.decision.code, Code::store_unavailable);
  EXPECT_EQ(s.used, 151);
  EXPECT_EQ(s.refunded, 0);
  store.down = false;
  EXPECT_EQ(used(), 151);
  EXPECT_EQ(tracker.stats().store_errors, 2U);
  EXPECT_EQ(tracker.stats().tokens_refunded, 0);
}

// Many streams from many threads, with sweeps and listings alongside: every token is counted
// once, whichever thread reported it.
TEST_F(StreamTest, ManyThreadsReportWithoutLosingOrDoublingTokens) {
  limiter_.set_limits(kModel, {Limit::daily("tpd", 1'000'000'000)});
  StreamOptions o = options_with();
  o.token_limits = {"tpd"};
  StreamTracker tracker(limiter_, io_.get_executor(), o);
  constexpr int kThreads = 6;
  constexpr int kStreams = 150;
  std::atomic<bool> stop{false};
  std::atomic<std::int64_t> expected{0};
  std::thread observer([&] {
    while (!stop.load()) {
      (void)tracker.sweep();  // nothing is due: the clock does not move
      for (const StreamInfo& i : tracker.streams()) EXPECT_GE(i.reserved, i.estimate);
      (void)tracker.stats();
    }
  });
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      std::mt19937_64 rng(static_cast<std::uint64_t>(t) + 1);
      for (int i = 0; i < kStreams; ++i) {
        const auto estimate = static_cast<std::int64_t>(rng() % 200);
        const auto base = static_cast<std::int64_t>(rng() % 20);
        StreamHandle h =
            tracker.try_open("user-" + std::to_string(t % 3), kModel, tokens_only(estimate, base));
        ASSERT_TRUE(h);
        std::int64_t streamed = 0;
        const int chunks = static_cast<int>(rng() % 40);
        for (int c = 0; c < chunks; ++c) {
          const auto n = static_cast<std::int64_t>(1 + rng() % 10);
          streamed += n;
          if (c % 2 == 0) {
            h.add_tokens(n);
          } else {
            h.report_running(streamed);
          }
        }
        switch (i % 3) {
          case 0:
            expected += h.finish(base + streamed + static_cast<std::int64_t>(rng() % 5)).used;
            break;
          case 1:
            expected += h.abort().used;
            break;
          default: {
            StreamHandle moved = std::move(h);  // move to another owner, then vanish
            expected += base + streamed;        // settled by the destructor's sweep below
            break;
          }
        }
      }
    });
  }
  // One stream shared by several threads at once.
  StreamHandle shared = tracker.try_open("user-9", kModel, tokens_only(100, 10));
  std::vector<std::thread> reporters;
  for (int t = 0; t < 4; ++t) {
    reporters.emplace_back([&] {
      for (int i = 0; i < 500; ++i) shared.add_tokens(1);
    });
  }
  for (auto& th : reporters) th.join();
  EXPECT_EQ(shared.info().reported, 2010);
  EXPECT_EQ(shared.info().reserved, 2010);
  EXPECT_EQ(shared.finish(2010).used, 2010);
  EXPECT_EQ(1'000'000'000 - available("tpd", "user-9"), 2010);

  for (auto& th : threads) th.join();
  stop = true;
  observer.join();
  const StreamStats st = tracker.stats();
  EXPECT_EQ(st.opened, static_cast<std::uint64_t>(kThreads * kStreams + 1));
  EXPECT_EQ(st.active, static_cast<std::size_t>(kThreads * kStreams / 3));  // the vanished
  clock_.advance(30 * kMicrosPerSecond);
  poll();
  EXPECT_EQ(tracker.stats().active, 0U);
  EXPECT_EQ(tracker.stats().orphaned, static_cast<std::uint64_t>(kThreads * kStreams / 3));
  std::int64_t used = 0;
  for (int u = 0; u < 3; ++u) used += 1'000'000'000 - available("tpd", "user-" + std::to_string(u));
  EXPECT_EQ(used, expected.load());
}

// The timer may fire on an io thread while reports arrive: run the context on a thread.
TEST_F(StreamTest, TheTimerSettlesOnAnIoThreadWhileOthersReport) {
  StreamTracker tracker(limiter_, io_.get_executor(), options_with(kMicrosPerSecond));
  auto guard = asio::make_work_guard(io_);
  std::thread runner([&] { io_.run(); });
  StreamHandle live = tracker.try_open("user-1", kModel, request(100));
  for (int i = 0; i < 50; ++i) {
    { StreamHandle gone = tracker.try_open("user-2", kModel, request(10, 1)); }
    live.add_tokens(1);  // keeps `live` active
    clock_.advance(kMicrosPerSecond / 2);
  }
  live.add_tokens(1);
  clock_.advance(kMicrosPerSecond);  // `live` is idle for its TTL now
  guard.reset();
  while (tracker.stats().active != 0) std::this_thread::yield();  // settled on the io thread
  runner.join();
  EXPECT_EQ(tracker.stats().orphaned, 51U);
  EXPECT_EQ(used_today("user-2"), 50);
  EXPECT_EQ(used_today("user-1"), 51);
}

// ---- SSE usage extraction ----

std::string data_event(std::string_view json) { return "data: " + std::string(json) + "\n\n"; }

const std::string kChunk =
    R"({"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"lorem"},"finish_reason":null}],"usage":null})";
const std::string kRole =
    R"({"id":"c","choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}],"usage":null})";
const std::string kUsage =
    R"({"id":"c","choices":[],"usage":{"prompt_tokens":7,"completion_tokens":3,"total_tokens":10}})";

TEST(SseUsage, CountsContentChunksAndReadsTheFinalUsage) {
  const std::string body = data_event(kRole) + data_event(kChunk) + data_event(kChunk) +
                           data_event(kChunk) + data_event(kUsage) + "data: [DONE]\n\n";
  // Every split of the body into two parts reads the same.
  for (std::size_t cut = 0; cut <= body.size(); ++cut) {
    SseUsageParser p;
    const std::int64_t first = p.feed(std::string_view(body).substr(0, cut));
    const std::int64_t second = p.feed(std::string_view(body).substr(cut));
    EXPECT_EQ(first + second, 3);
    EXPECT_EQ(p.content_chunks(), 3);
    ASSERT_TRUE(p.usage().has_value());
    EXPECT_EQ(*p.usage(), (Usage{7, 3, 10}));
    EXPECT_TRUE(p.done());
    EXPECT_EQ(p.rejected(), 0U);
    EXPECT_EQ(p.events(), 6U);
  }
  // One byte at a time, with CRLF and CR line ends.
  for (const std::string eol : {"\r\n", "\r"}) {
    std::string crlf;
    for (const std::string& e : {kRole, kChunk, kUsage}) crlf += "data:" + e + eol + eol;
    crlf += "data: [DONE]" + eol + eol;
    SseUsageParser p;
    for (char c : crlf) (void)p.feed(std::string_view(&c, 1));
    EXPECT_EQ(p.content_chunks(), 1);
    EXPECT_EQ(p.usage()->total_tokens, 10);
    EXPECT_TRUE(p.done());
  }
}

TEST(SseUsage, ReadsAStreamedResponsesAnswer) {
  // The Responses API's events: typed, an `event:` line before each data line, no [DONE].
  const auto ev = [](std::string_view type, std::string_view data) {
    return "event: " + std::string(type) + "\ndata: " + std::string(data) + "\n\n";
  };
  const std::string body =
      ev("response.created", R"({"type":"response.created","response":{"id":"r","usage":null}})") +
      ev("response.output_text.delta",
         R"({"type":"response.output_text.delta","item_id":"m","delta":"Hel"})") +
      ev("response.output_text.delta",
         R"({"type":"response.output_text.delta","item_id":"m","delta":""})") +
      ev("response.output_text.delta",
         R"({"type":"response.output_text.delta","item_id":"m","delta":"lo"})") +
      ev("response.output_text.done", R"({"type":"response.output_text.done","text":"Hello"})") +
      ev("response.completed",
         R"({"type":"response.completed","response":{"id":"r","status":"completed",)"
         R"("usage":{"input_tokens":11,"input_tokens_details":{"cached_tokens":0},)"
         R"("output_tokens":2,"output_tokens_details":{"reasoning_tokens":0},"total_tokens":13}}})");
  SseUsageParser p;
  EXPECT_EQ(p.feed(body), 2);
  ASSERT_TRUE(p.usage().has_value());
  EXPECT_EQ(*p.usage(), (Usage{11, 2, 13}));
  EXPECT_EQ(p.rejected(), 0U);
  EXPECT_FALSE(p.done());
  // An incomplete answer reports its usage too; hostile usage is rejected as in chat.
  EXPECT_EQ(parse_sse_data(R"({"type":"response.incomplete","response":{"usage":)"
                           R"({"input_tokens":4,"output_tokens":1}}})")
                .usage,
            (Usage{4, 1, 5}));
  EXPECT_EQ(parse_sse_data(R"({"type":"response.completed","response":{"usage":)"
                           R"({"input_tokens":-4,"output_tokens":1}}})")
                .kind,
            SseEvent::Kind::invalid);
  EXPECT_EQ(parse_sse_data(R"({"type":"response.completed","response":7})").kind,
            SseEvent::Kind::invalid);
  EXPECT_EQ(parse_sse_data(R"({"type":"response.completed","response":{"usage":null}})").usage,
            std::nullopt);
}

TEST(SseUsage, FollowsTheEventStreamFormat) {
  SseUsageParser p;
  // Comments and other fields are ignored; data lines of one event are joined by '\n'
  // (JSON allows the newline); an event without a blank line after it is not dispatched yet.
  (void)p.feed(": keep-alive\n\nevent: message\nid: 4\nretry: 10\n");
  (void)p.feed(R"(data: {"choices":[{"delta":)"
               "\n"
               R"(data: {"content":"x"}}]})"
               "\n\n");
  EXPECT_EQ(p.content_chunks(), 1);
  (void)p.feed(data_event(kChunk).substr(0, data_event(kChunk).size() - 1));
  EXPECT_EQ(p.content_chunks(), 1);
  (void)p.feed("\n");
  EXPECT_EQ(p.content_chunks(), 2);
  // Two choices with content count twice; a null, empty or non-string content not at all.
  (void)p.feed(data_event(
      R"({"choices":[{"delta":{"content":"a"}},{"delta":{"content":"b"}},{"delta":{"content":null}},{"delta":{"content":""}},{"delta":{"content":5}},{"delta":"x"},{}]})"));
  EXPECT_EQ(p.content_chunks(), 4);
  (void)p.feed("data: [DONE]\n\n");
  (void)p.feed(data_event(kChunk) + data_event(kUsage));  // after [DONE]: ignored
  EXPECT_EQ(p.content_chunks(), 4);
  EXPECT_FALSE(p.usage().has_value());
  EXPECT_EQ(p.rejected(), 0U);
}

TEST(SseUsage, RejectsHostileEventsOneByOne) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {R"({"choices":[{"delta":{"content":"a"}}],"usage":{"prompt_tokens":7,"comp)", "malformed"},
      {R"({"usage":{"prompt_tokens":-1,"completion_tokens":3}})", "out of range"},
      {R"({"usage":{"prompt_tokens":1,"completion_tokens":1000000000001}})", "out of range"},
      {R"({"usage":{"prompt_tokens":99999999999999999999,"completion_tokens":3}})",
       "not an integer"},
      {R"({"usage":{"prompt_tokens":18446744073709551615,"completion_tokens":3}})", "out of range"},
      {R"({"usage":{"prompt_tokens":1e400,"completion_tokens":3}})", "not an integer"},
      {R"({"usage":{"prompt_tokens":5.0,"completion_tokens":3}})", "not an integer"},
      {R"({"usage":{"prompt_tokens":"7","completion_tokens":3}})", "not a number"},
      {R"({"usage":{"prompt_tokens":true,"completion_tokens":3}})", "not a number"},
      {R"({"usage":{"completion_tokens":3}})", "missing"},
      {R"({"usage":{"prompt_tokens":7,"completion_tokens":3,"total_tokens":5}})", "smaller"},
      {R"({"usage":[7,3,10]})", "usage is not an object"},
      {R"({"choices":{"delta":{"content":"a"}}})", "choices is not an array"},
      {R"({"choices":[7]})", "a choice is not an object"},
      {R"([1,2,3])", "not a JSON object"},
      {R"("[DONE]")", "not a JSON object"},
      {R"({"error":{"message":"overloaded","type":"server_error"}})", "overloaded"},
      {std::string(100, '[') + std::string(100, ']'), "malformed"},
      {"", "malformed"},
  };
  for (const auto& [json, why] : cases) {
    SCOPED_TRACE(json);
    const SseEvent e = parse_sse_data(json);
    EXPECT_EQ(e.kind, SseEvent::Kind::invalid);
    EXPECT_NE(e.error.find(why), std::string::npos) << e.error;
    SseUsageParser p;
    (void)p.feed(data_event(kChunk) + data_event(json) + data_event(kUsage));
    EXPECT_EQ(p.rejected(), 1U);
    EXPECT_EQ(p.content_chunks(), 1);  // the rejected event counted nothing
    EXPECT_EQ(p.usage()->total_tokens, 10);
  }
  // The largest accepted counts, a missing total, a total above the sum.
  EXPECT_EQ(parse_sse_data(R"({"usage":{"prompt_tokens":1000000000000,"completion_tokens":0}})")
                .usage->total_tokens,
            kMaxUsageTokens);
  EXPECT_EQ(parse_sse_data(R"({"usage":{"prompt_tokens":2,"completion_tokens":3}})").usage,
            (Usage{2, 3, 5}));
  EXPECT_EQ(
      parse_sse_data(R"({"usage":{"prompt_tokens":2,"completion_tokens":3,"total_tokens":9}})")
          .usage,
      (Usage{2, 3, 9}));
  EXPECT_EQ(parse_sse_data(" [DONE] ").kind, SseEvent::Kind::done);
}

TEST(SseUsage, DropsEventsLongerThanTheLimitAndSurvivesRandomBytes) {
  SseUsageParser p(256);
  (void)p.feed("data: " + std::string(300, 'x'));  // a line that never fits
  (void)p.feed(std::string(10'000, 'y') + "\n\n");
  (void)p.feed("data: " + std::string(200, ' ') + "\ndata: " + std::string(200, ' ') + "\n\n");
  (void)p.feed(data_event(kChunk));
  EXPECT_EQ(p.rejected(), 2U);
  EXPECT_EQ(p.content_chunks(), 1);
  EXPECT_NE(p.last_error().find("longer than 256"), std::string::npos);

  std::mt19937_64 rng(7);
  const std::string alphabet = "data: {}[]\":,0123456789-e.usage_tokens\r\n\n\n";
  for (int round = 0; round < 200; ++round) {
    SseUsageParser q(512);
    std::string bytes;
    for (int i = 0; i < 2000; ++i) bytes += alphabet[rng() % alphabet.size()];
    for (std::size_t at = 0; at < bytes.size();) {
      const std::size_t n = std::min<std::size_t>(1 + rng() % 64, bytes.size() - at);
      (void)q.feed(std::string_view(bytes).substr(at, n));
      at += n;
    }
    EXPECT_GE(q.content_chunks(), 0);
    if (q.usage()) {
      EXPECT_GE(q.usage()->total_tokens, 0);
    }
  }
}

// ---- end to end: admit-provider-sim's routes on a real socket ----

namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
using tcp = boost::asio::ip::tcp;

// The simulator's App and HttpHandler on the shared HTTP server, on an ephemeral port.
class SimServer {
 public:
  SimServer(std::uint64_t seed, double tokens_per_second)
      : model_(sim::SimLimits{}),
        app_(model_, app_options(seed, tokens_per_second)),
        handler_(app_, wall_) {
    http::ServerOptions o = sim::server_options();
    o.port = 0;
    o.handle_signals = false;
    server_ = std::make_unique<http::Server>(handler_, o);
    runner_ = std::thread([this] { server_->run(); });
  }
  ~SimServer() {
    server_->stop();
    runner_.join();
  }
  std::uint16_t port() const { return server_->port(); }
  sim::ProviderModel& model() { return model_; }

 private:
  static sim::AppOptions app_options(std::uint64_t seed, double tokens_per_second) {
    sim::AppOptions o;
    o.seed = seed;
    o.tokens_per_second = tokens_per_second;
    return o;
  }
  SystemClock wall_;
  sim::ProviderModel model_;
  sim::App app_;
  sim::HttpHandler handler_;
  std::unique_ptr<http::Server> server_;
  std::thread runner_;
};

struct StreamRead {
  std::int64_t chunks = 0;
  std::optional<Usage> usage;
  bool done = false;
  unsigned status = 0;
};

// POSTs a streamed chat completion and feeds its body, as it arrives, to an SSE parser and
// to `handle`'s running count; stops after `stop_after` content chunks if > 0 (the consumer
// goes away: the socket is closed unread).
StreamRead stream_completion(std::uint16_t port, std::int64_t max_tokens, StreamHandle& handle,
                             std::int64_t stop_after = 0) {
  asio::io_context cio;
  tcp::socket sock(cio);
  sock.connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"), port));
  bhttp::request<bhttp::string_body> req{bhttp::verb::post, "/v1/chat/completions", 11};
  req.set(bhttp::field::host, "127.0.0.1");
  req.set(bhttp::field::content_type, "application/json");
  req.set(bhttp::field::authorization, "Bearer sk-stream-test");
  req.body() = R"({"model":"gpt-4o","messages":[{"role":"user","content":"Say hello."}],)"
               R"("max_tokens":)" +
               std::to_string(max_tokens) +
               R"(,"stream":true,"stream_options":{"include_usage":true}})";
  req.prepare_payload();
  bhttp::write(sock, req);

  StreamRead out;
  beast::flat_buffer buf;
  bhttp::response_parser<bhttp::buffer_body> parser;
  parser.body_limit(boost::none);
  bhttp::read_header(sock, buf, parser);
  out.status = parser.get().result_int();
  SseUsageParser sse;
  char chunk[512];
  while (!parser.is_done()) {
    parser.get().body().data = chunk;
    parser.get().body().size = sizeof chunk;
    beast::error_code ec;
    bhttp::read_some(sock, buf, parser, ec);
    if (ec == bhttp::error::need_buffer) ec = {};
    if (ec) {
      ADD_FAILURE() << "read: " << ec.message();
      break;
    }
    const std::size_t n = sizeof chunk - parser.get().body().size;
    (void)sse.feed(std::string_view(chunk, n));
    handle.report_running(sse.content_chunks());
    if (stop_after > 0 && sse.content_chunks() >= stop_after) break;
  }
  out.chunks = sse.content_chunks();
  out.usage = sse.usage();
  out.done = sse.done();
  EXPECT_EQ(sse.rejected(), 0U) << sse.last_error();
  return out;
}

TEST_F(StreamTest, EndToEndTheFinalUsageChunkRefundsTheUnusedEstimate) {
  SimServer sim(1, 0);
  StreamTracker tracker(limiter_, io_.get_executor(), options_with());
  constexpr std::int64_t kPrompt = 7;  // "Say hello.": ceil(10 / 4) + 4
  ASSERT_EQ(sim::message_tokens("Say hello."), kPrompt);
  std::int64_t total_used = 0;
  for (const std::int64_t max_tokens : {40, 300}) {
    SCOPED_TRACE(max_tokens);
    const std::int64_t estimate = kPrompt + max_tokens;
    StreamHandle h = tracker.try_open("user-1", kModel, request(estimate, kPrompt));
    ASSERT_TRUE(h);
    const StreamRead r = stream_completion(sim.port(), max_tokens, h);
    ASSERT_EQ(r.status, 200U);
    ASSERT_TRUE(r.done);
    ASSERT_TRUE(r.usage.has_value());
    EXPECT_EQ(r.usage->prompt_tokens, kPrompt);
    EXPECT_EQ(r.usage->completion_tokens, r.chunks);  // one chunk per token
    EXPECT_EQ(r.usage->total_tokens, kPrompt + r.chunks);
    EXPECT_EQ(h.info().reported, kPrompt + r.chunks);
    const StreamSettlement s = h.finish(*r.usage);
    EXPECT_TRUE(s.settled);
    EXPECT_EQ(s.refunded, estimate - r.usage->total_tokens);
    EXPECT_EQ(s.used, r.usage->total_tokens);
    EXPECT_EQ(s.charged_extra, 0);
    total_used += r.usage->total_tokens;
    EXPECT_EQ(used_today(), total_used);
    EXPECT_EQ(available("tpm"), kTpm - total_used);
  }
  EXPECT_EQ(tracker.stats().completed, 2U);
  // The simulator charged the estimates, as OpenAI does; admit kept the real usage.
  EXPECT_EQ(sim.model().stats().accepted_tokens, 2 * kPrompt + 40 + 300);
}

TEST_F(StreamTest, EndToEndAConsumerThatStopsReadingIsSettledAsAnOrphan) {
  // A seed whose first completion is long, paced at 100 tokens/s: it is still streaming when
  // the consumer leaves after a few chunks.
  constexpr std::int64_t kMax = 300;
  std::uint64_t seed = 1;
  while (sim::completion_tokens(seed, 0, kMax) < 150) ++seed;
  SimServer sim(seed, 100);
  StreamTracker tracker(limiter_, io_.get_executor(), options_with(20 * kMicrosPerSecond));
  constexpr std::int64_t kPrompt = 7;
  std::int64_t seen = 0;
  {
    StreamHandle h = tracker.try_open("user-1", kModel, request(kPrompt + kMax, kPrompt));
    ASSERT_TRUE(h);
    const StreamRead r = stream_completion(sim.port(), kMax, h, /*stop_after=*/3);
    EXPECT_FALSE(r.done);
    EXPECT_FALSE(r.usage.has_value());
    EXPECT_GE(r.chunks, 3);
    EXPECT_LT(r.chunks, sim::completion_tokens(seed, 0, kMax));
    seen = r.chunks;
  }  // the handle goes with the consumer: no final report
  ASSERT_EQ(tracker.streams().size(), 1U);
  EXPECT_TRUE(tracker.streams().front().consumer_gone);
  EXPECT_EQ(tracker.streams().front().reported, kPrompt + seen);
  EXPECT_EQ(used_today(), kPrompt + kMax);

  clock_.advance(20 * kMicrosPerSecond);
  poll();
  const StreamStats st = tracker.stats();
  EXPECT_EQ(st.orphaned, 1U);
  EXPECT_EQ(st.active, 0U);
  EXPECT_EQ(st.tokens_refunded, kMax - seen);
  EXPECT_EQ(used_today(), kPrompt + seen);
}

}  // namespace
}  // namespace admit::sched
