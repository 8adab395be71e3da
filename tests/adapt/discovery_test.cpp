// Discovery and the adaptive limit kind through the public API, on a MemoryStore driven by a
// ManualClock. Numbers are worked out by hand from T = period / amount.
#include "admit/adapt/discovery.hpp"

#include <gtest/gtest.h>

#include <chrono>
#include <string>
#include <vector>

#include "admit/adapt/aimd.hpp"
#include "admit/core/clock.hpp"
#include "admit/core/error.hpp"
#include "admit/core/rate.hpp"
#include "admit/store/memory_store.hpp"
#include "support/test_support.hpp"

namespace admit {
namespace {

using namespace std::chrono_literals;
using test::available;
using test::kStart;
using test::take;

constexpr Micros kSec = kMicrosPerSecond;
constexpr Micros kMs = 1000;

const LimitStatus* find_status(const std::vector<LimitStatus>& v, std::string_view name) {
  for (const auto& s : v) {
    if (s.limit == name) return &s;
  }
  return nullptr;
}

Observation openai_obs(std::int64_t limit_req, std::int64_t rem_req, std::int64_t limit_tok,
                       std::int64_t rem_tok) {
  Observation o;
  o.requests = {limit_req, rem_req, std::nullopt, kMicrosPerMinute};
  o.tokens = {limit_tok, rem_tok, std::nullopt, kMicrosPerMinute};
  return o;
}

// ------------------------------------------------------------------- rate::clamp

// Verifies the GCRA clamp: after clamp(n) exactly n units are available, a clamp never raises
// the bucket, and clamp(until) makes the next unit arrive exactly at `until`.
TEST(RateClamp, LowersToExactlyNAndHoldsUntil) {
  const Limit l = Limit::per_minute("rpm", 60);  // T = 1 s
  const RateParams& p = l.rate();
  const Micros now = kStart;
  rate::Tat t{0, 0};  // full
  t = rate::clamp(p, t, 10, 0, now);
  EXPECT_EQ(rate::available(p, t, now), 10);
  const rate::Tat lower = rate::clamp(p, t, 20, 0, now);  // 20 > 10: no raise
  EXPECT_EQ(rate::available(p, lower, now), 10);
  t = rate::clamp(p, t, 10, now + 5 * kSec, now);
  EXPECT_EQ(rate::available(p, t, now), 0);
  EXPECT_FALSE(rate::check(p, t, 1, now + 5 * kSec - 1).ok);
  EXPECT_TRUE(rate::check(p, t, 1, now + 5 * kSec).ok);
  EXPECT_EQ(rate::check(p, t, 1, now).retry_after, 5 * kSec);
}

// Verifies a remainder written under another denominator is brought back into range.
TEST(RateClamp, NormalizeKeepsRemainderInRange) {
  const Limit l = Limit::per_minute("rpm", 7);  // r = 7
  const rate::Tat t = rate::normalize(l.rate(), {kStart, 999});
  EXPECT_EQ(t.rem, 6);
  EXPECT_EQ(t.us, kStart);
}

// ------------------------------------------------------------------- Limit::adaptive

// Verifies adaptive limits validate their options and burst, and their parameters follow the
// rate with a fixed denominator of 1000 (1 ns resolution), clamped to [min_rate, max_rate].
TEST(AdaptiveLimit, ValidatesAndDerivesParameters) {
  EXPECT_THROW(Limit::adaptive("aimd", AimdOptions{.max_rate = 0}), ValidationError);
  EXPECT_THROW(Limit::adaptive("aimd", AimdOptions{.max_rate = 10}, 0), ValidationError);
  EXPECT_THROW(Limit::adaptive("aimd", AimdOptions{.max_rate = 10, .min_rate = 1e-12}),
               ValidationError);
  const Limit l = Limit::adaptive("aimd", AimdOptions{.max_rate = 10, .initial_rate = 3}, 2);
  EXPECT_EQ(l.kind(), LimitKind::adaptive);
  EXPECT_EQ(l.capacity(), 2);
  EXPECT_EQ(l.max_amount(), 2);
  EXPECT_EQ(to_string(l.kind()), "adaptive");
  const RateParams p = l.rate_at(3);  // T = 333333.333 µs -> 333333333 ns
  EXPECT_EQ(p.r, 1000);
  EXPECT_EQ(p.a, 333333);
  EXPECT_EQ(p.b, 333);
  EXPECT_EQ(p.tol_us, 666666);
  EXPECT_EQ(p.tol_rem, 666);
  EXPECT_EQ(l.rate().a, p.a);                     // rate() is the initial rate
  EXPECT_EQ(l.rate_at(1000).a, l.rate_at(10).a);  // clamped to max_rate: 100 ms
  EXPECT_EQ(l.rate_at(10).a, 100000);
  EXPECT_EQ(l.rate_at(0.001).a, 10'000'000);  // clamped to min_rate 0.1: 10 s
  EXPECT_NE(l.describe().find("adaptive"), std::string::npos);
  EXPECT_FALSE(l == Limit::adaptive("aimd", AimdOptions{.max_rate = 11, .initial_rate = 3}, 2));
  EXPECT_TRUE(l == Limit::adaptive("aimd", AimdOptions{.max_rate = 10, .initial_rate = 3}, 2));
}

// ------------------------------------------------------------------- adaptive limits in a Limiter

class AdaptiveTest : public ::testing::Test {
 protected:
  ManualClock clock{kStart};
  MemoryStore store;
  Limiter limiter{store, clock};
};

// Verifies an adaptive limit paces at its current rate, combines with a fixed limit in one
// all-or-nothing acquire, grows on successes, and halves once for a burst of failures of
// requests sent before the decrease (one congestion event).
TEST_F(AdaptiveTest, PacesGrowsAndDecreasesOncePerCongestionEvent) {
  // Starts at 4/s in congestion avoidance (threshold 4): T = 250 ms, burst 1.
  limiter.set_limits(
      "m",
      {Limit::per_minute("rpm", 100),
       Limit::adaptive(
           "aimd", AimdOptions{.max_rate = 100, .initial_rate = 4, .slow_start_threshold = 4})});
  Lease a = limiter.try_acquire("acct", "m", {{"rpm", 1}});
  ASSERT_TRUE(a.allowed());
  Lease b = limiter.try_acquire("acct", "m", {{"rpm", 1}});  // paced: 250 ms apart
  ASSERT_FALSE(b.allowed());
  EXPECT_EQ(b.decision().code, Code::rate_exceeded);
  EXPECT_EQ(b.decision().retry_after, 250 * kMs);
  ASSERT_EQ(b.decision().violations.size(), 1u);
  EXPECT_EQ(b.decision().violations[0].limit, "aimd");
  EXPECT_EQ(b.decision().violations[0].kind, LimitKind::adaptive);
  EXPECT_EQ(available(limiter, "acct", "m", "rpm"), 99);  // all or nothing: rpm not taken

  // Success: 4 -> 5 per second. The state keeps the spacing already given out (the next
  // slot is at 250 ms); from there on requests are 200 ms apart.
  EXPECT_TRUE(a.mark_success());
  EXPECT_FALSE(a.mark_failure());  // the first mark counts
  clock.advance(250 * kMs);
  Lease c = limiter.try_acquire("acct", "m", {{"rpm", 1}});
  ASSERT_TRUE(c.allowed()) << c.decision().reason;
  clock.advance(200 * kMs);
  Lease d = limiter.try_acquire("acct", "m", {{"rpm", 1}});
  ASSERT_TRUE(d.allowed()) << d.decision().reason;

  // Both were sent in epoch 0: the first failure halves (5 -> 2.5), the second is the same
  // congestion event and changes nothing.
  EXPECT_TRUE(c.mark_failure());
  EXPECT_TRUE(d.mark_failure());
  const ResourceStats st = limiter.stats("acct", "m");
  const LimitStatus* s = find_status(st.limits, "aimd");
  ASSERT_NE(s, nullptr);
  EXPECT_DOUBLE_EQ(s->rate, 2.5);
  EXPECT_EQ(s->kind, LimitKind::adaptive);
  clock.advance(200 * kMs - 1);  // the next slot: 650 ms (d's slot + the new T of 400 ms)
  EXPECT_FALSE(limiter.try_acquire("acct", "m", {{"rpm", 1}}).allowed());
  clock.advance(1);
  Lease e = limiter.try_acquire("acct", "m", {{"rpm", 1}});
  ASSERT_TRUE(e.allowed());
  // A failure of a request sent after the decrease is new evidence: 2.5 -> 1.25.
  EXPECT_TRUE(e.mark_failure());
  EXPECT_DOUBLE_EQ(find_status(limiter.stats("acct", "m").limits, "aimd")->rate, 1.25);
}

// Verifies each entity has its own controller, and that an acquire that names the adaptive
// limit with 0 does not take from it.
TEST_F(AdaptiveTest, ControllersArePerKeyAndAmountsCanSkipThem) {
  limiter.set_limits(
      "m", {Limit::adaptive(
               "aimd", AimdOptions{.max_rate = 10, .initial_rate = 1, .slow_start_threshold = 1})});
  Lease a = limiter.try_acquire("x", "m", {});
  ASSERT_TRUE(a.allowed());
  ASSERT_TRUE(a.mark_failure());  // x: 1 -> 0.5
  EXPECT_TRUE(limiter.try_acquire("y", "m", {}).allowed());
  EXPECT_DOUBLE_EQ(find_status(limiter.stats("x", "m").limits, "aimd")->rate, 0.5);
  EXPECT_DOUBLE_EQ(find_status(limiter.stats("y", "m").limits, "aimd")->rate, 1.0);
  EXPECT_FALSE(limiter.try_acquire("x", "m", {}).allowed());
  EXPECT_TRUE(limiter.try_acquire("x", "m", {{"aimd", 0}}).allowed());
}

// Verifies leases refund adaptive usage on rollback and adjust like other rate limits.
TEST_F(AdaptiveTest, RollbackRefunds) {
  limiter.set_limits(
      "m", {Limit::adaptive(
               "aimd", AimdOptions{.max_rate = 10, .initial_rate = 2, .slow_start_threshold = 2})});
  {
    Lease a = limiter.try_acquire("x", "m", {});
    ASSERT_TRUE(a.allowed());
    EXPECT_FALSE(limiter.try_acquire("x", "m", {}).allowed());
    a.rollback();
  }
  EXPECT_TRUE(limiter.try_acquire("x", "m", {}).allowed());
}

// ------------------------------------------------------------------- Limiter::clamp

// Verifies clamp lowers rate and window limits to what is reported, never raises them, skips
// unknown names and concurrency limits, and holds until the instant given.
TEST_F(AdaptiveTest, ClampLowersNeverRaisesAndHolds) {
  limiter.set_limits("m", {Limit::per_minute("rpm", 60), Limit::daily("rpd", 1000),
                           Limit::concurrency("slots", 2)});
  const std::vector<StateClamp> first{
      {"rpm", 10, 0}, {"rpd", 500, 0}, {"slots", 0, 0}, {"nope", 0, 0}};
  const auto out = limiter.clamp("acct", "m", first);
  ASSERT_EQ(out.size(), 2u);
  EXPECT_EQ(find_status(out, "rpm")->available, 10);
  EXPECT_EQ(find_status(out, "rpd")->available, 500);
  EXPECT_EQ(available(limiter, "acct", "m", "slots"), 2);
  const std::vector<StateClamp> higher{{"rpm", 30, 0}, {"rpd", 800, 0}};
  limiter.clamp("acct", "m", higher);
  EXPECT_EQ(available(limiter, "acct", "m", "rpm"), 10);
  EXPECT_EQ(available(limiter, "acct", "m", "rpd"), 500);

  const std::vector<StateClamp> hold{{"rpm", -1, kStart + 3 * kSec}};
  limiter.clamp("acct", "m", hold);
  const Decision d = take(limiter, "acct", "m", {{"rpm", 1}});
  EXPECT_FALSE(d.allowed);
  EXPECT_EQ(d.retry_after, 3 * kSec);
  clock.advance(3 * kSec);
  EXPECT_TRUE(take(limiter, "acct", "m", {{"rpm", 1}}).allowed);

  const std::vector<StateClamp> hold_window{{"rpd", -1, kStart + 10 * kSec}};
  limiter.clamp("acct", "m", hold_window);
  EXPECT_EQ(available(limiter, "acct", "m", "rpd"), 0);  // a window holds to its end
}

// ------------------------------------------------------------------- discovered limits

// Verifies discovered limits replace configured ones of the same name, are added otherwise,
// report ConfigSource::discovered, and keep following later configuration changes.
TEST_F(AdaptiveTest, DiscoveredLimitsOverlayConfiguration) {
  limiter.set_limits("m", {Limit::per_minute("rpm", 100), Limit::per_minute("tpm", 1000)});
  limiter.set_discovered_limits("acct", "m",
                                {Limit::per_minute("rpm", 50), Limit::per_day("rpd", 500)});
  auto r = limiter.resolve("acct", "m");
  ASSERT_EQ(r.size(), 3u);
  EXPECT_EQ(r[0].first.capacity(), 50);
  EXPECT_EQ(r[0].second, ConfigSource::discovered);
  EXPECT_EQ(r[1].first.name(), "tpm");
  EXPECT_EQ(r[1].second, ConfigSource::resource);
  EXPECT_EQ(r[2].first.name(), "rpd");
  EXPECT_EQ(r[2].second, ConfigSource::discovered);
  EXPECT_EQ(limiter.resolve("other", "m")[0].first.capacity(), 100);  // per entity

  limiter.set_limits("m", {Limit::per_minute("rpm", 100), Limit::per_minute("tpm", 2000)});
  r = limiter.resolve("acct", "m");
  EXPECT_EQ(r[1].first.capacity(), 2000);  // the configured part follows the change
  EXPECT_EQ(r[0].first.capacity(), 50);
  EXPECT_EQ(limiter.discovered_limits("acct", "m").size(), 2u);

  limiter.set_discovered_limits("acct", "m", {});
  EXPECT_EQ(limiter.resolve("acct", "m")[0].first.capacity(), 100);
  EXPECT_TRUE(limiter.discovered_limits("acct", "m").empty());
}

// ------------------------------------------------------------------- Discovery

class DiscoveryTest : public AdaptiveTest {
 protected:
  void SetUp() override {
    // Names exist before anything is learned: unlimited placeholders.
    limiter.set_limits("gpt", {Limit::per_minute("rpm", 0), Limit::per_minute("tpm", 0)});
  }
  Discovery discovery{limiter, Provider::openai};
};

// Verifies a reported limit becomes a learned limit with the buffer on its capacity and the
// provider's full refill rate, visible in stats as discovered; and that an unchanged report
// does not reconfigure the limiter.
TEST_F(DiscoveryTest, LearnsLimitsWithBuffer) {
  const ObserveResult r = discovery.observe("acct", "gpt", openai_obs(500, 500, 30000, 30000));
  EXPECT_TRUE(r.limits_changed);
  const auto learned = limiter.discovered_limits("acct", "gpt");
  ASSERT_EQ(learned.size(), 2u);
  EXPECT_EQ(learned[0], Limit::custom("rpm", 450, 500, 60s));
  EXPECT_EQ(learned[1], Limit::custom("tpm", 27000, 30000, 60s));
  const ResourceStats st = limiter.stats("acct", "gpt");
  ASSERT_EQ(st.limits.size(), 2u);
  EXPECT_EQ(st.limits[0].source, ConfigSource::discovered);
  EXPECT_EQ(st.limits[0].capacity, 450);
  EXPECT_EQ(st.limits[1].capacity, 27000);

  EXPECT_FALSE(discovery.observe("acct", "gpt", openai_obs(500, 400, 30000, 20000)).limits_changed);
  const auto d = discovery.discovered("acct", "gpt");
  ASSERT_EQ(d.size(), 2u);
  EXPECT_EQ(d[0].limit, "rpm");
  EXPECT_EQ(d[0].provider_limit, 500);
  EXPECT_EQ(d[0].capacity, 450);
  EXPECT_EQ(d[0].remaining, 400);
  EXPECT_EQ(d[1].limit, "tpm");
  EXPECT_EQ(d[1].window, kMicrosPerMinute);
}

// Verifies remaining pulls the local bucket down to remaining minus the margin, and never up.
TEST_F(DiscoveryTest, RemainingPullsTheBucketDown) {
  discovery.observe("acct", "gpt", openai_obs(500, 500, 30000, 30000));
  EXPECT_EQ(available(limiter, "acct", "gpt", "tpm"), 27000);
  // Another client used the account: 10000 tokens left -> 10000 - 3000 margin.
  const ObserveResult r = discovery.observe("acct", "gpt", openai_obs(500, 480, 30000, 10000));
  EXPECT_EQ(find_status(r.clamped, "tpm")->available, 7000);
  EXPECT_EQ(find_status(r.clamped, "rpm")->available, 430);
  EXPECT_EQ(available(limiter, "acct", "gpt", "tpm"), 7000);
  discovery.observe("acct", "gpt", openai_obs(500, 500, 30000, 29000));
  EXPECT_EQ(available(limiter, "acct", "gpt", "tpm"), 7000);  // never raised
  // Below the margin: nothing left locally.
  discovery.observe("acct", "gpt", openai_obs(500, 500, 30000, 2000));
  EXPECT_EQ(available(limiter, "acct", "gpt", "tpm"), 0);
}

const Headroom* find_room(const ObserveResult& r, std::string_view name) {
  for (const auto& h : r.headroom) {
    if (h.limit == name) return &h;
  }
  return nullptr;
}

// Verifies headroom: for each learned limit whose remaining is reported, how far the local
// bucket stays below remaining - margin after the clamp (0 when the clamp set it); nothing
// for a 429, nor for configured limits the remaining only lowers.
TEST_F(DiscoveryTest, HeadroomSaysHowFarTheBucketIsBelowTheProvider) {
  ObserveResult r = discovery.observe("acct", "gpt", openai_obs(500, 500, 30000, 30000));
  ASSERT_EQ(r.headroom.size(), 2u);
  EXPECT_EQ(find_room(r, "rpm")->room, 0);
  EXPECT_EQ(find_room(r, "tpm")->room, 0);
  // Spent here, not (yet) at the provider: 27000 - 10000 locally, 29000 - 3000 reported.
  ASSERT_TRUE(take(limiter, "acct", "gpt", {{"rpm", 1}, {"tpm", 10000}}).allowed);
  r = discovery.observe("acct", "gpt", openai_obs(500, 500, 30000, 29000));
  EXPECT_EQ(find_room(r, "tpm")->room, 26000 - 17000);
  EXPECT_EQ(find_room(r, "rpm")->room, 1);
  EXPECT_EQ(available(limiter, "acct", "gpt", "tpm"), 17000) << "the clamp never raises";
  // Lower than the local bucket: the clamp sets it, no room.
  r = discovery.observe("acct", "gpt", openai_obs(500, 500, 30000, 13000));
  EXPECT_EQ(find_room(r, "tpm")->room, 0);
  EXPECT_EQ(available(limiter, "acct", "gpt", "tpm"), 10000);
  // A 429: held, no headroom.
  Observation limited = openai_obs(500, 500, 30000, 29000);
  limited.rate_limited = true;
  EXPECT_TRUE(discovery.observe("acct", "gpt", limited).headroom.empty());

  // Configured limits (nothing learned) follow the provider down only.
  Discovery plain(limiter, Provider::openai, DiscoveryOptions{.learn_limits = false});
  limiter.set_entity_limits("other", "gpt",
                            {Limit::per_minute("rpm", 500), Limit::per_minute("tpm", 30000)});
  ASSERT_TRUE(take(limiter, "other", "gpt", {{"rpm", 1}, {"tpm", 10000}}).allowed);
  r = plain.observe("other", "gpt", openai_obs(500, 500, 30000, 29000));
  EXPECT_TRUE(r.headroom.empty());
  EXPECT_EQ(find_status(r.clamped, "tpm")->available, 20000);
}

// Verifies a 429 holds every limit of the key until retry-after, decreases the lease's
// adaptive limit, and that a limit change reported by the provider is followed.
TEST_F(DiscoveryTest, RateLimitedHoldsAndDecreases) {
  limiter.set_limits(
      "gpt",
      {Limit::per_minute("rpm", 0), Limit::per_minute("tpm", 0),
       Limit::adaptive("aimd",
                       AimdOptions{.max_rate = 50, .initial_rate = 20, .slow_start_threshold = 20},
                       20)});
  Lease lease = limiter.try_acquire("acct", "gpt", {{"rpm", 1}, {"tpm", 100}});
  ASSERT_TRUE(lease.allowed());
  Observation o = openai_obs(500, 499, 30000, 0);
  o.rate_limited = true;
  o.retry_after = 2 * kSec;
  const ObserveResult r = discovery.observe(lease, o);
  EXPECT_TRUE(r.rate_limited);
  EXPECT_EQ(r.hold_until, kStart + 2 * kSec);
  EXPECT_EQ(r.clamped.size(), 3u);  // rpm, tpm and aimd all held
  EXPECT_DOUBLE_EQ(find_status(limiter.stats("acct", "gpt").limits, "aimd")->rate, 10.0);
  const Decision d = take(limiter, "acct", "gpt", {{"rpm", 1}, {"tpm", 1}});
  EXPECT_FALSE(d.allowed);
  EXPECT_GE(d.retry_after, 2 * kSec);

  // The provider halves the limits: learned capacity follows.
  const ObserveResult h = discovery.observe("acct", "gpt", openai_obs(250, 250, 15000, 15000));
  EXPECT_TRUE(h.limits_changed);
  EXPECT_EQ(limiter.discovered_limits("acct", "gpt")[1], Limit::custom("tpm", 13500, 15000, 60s));
}

// Verifies observe(lease, headers, status) parses with the Discovery's provider, and a
// successful response marks the lease's adaptive limits as a success.
TEST_F(DiscoveryTest, ParsesHeadersAndMarksSuccess) {
  limiter.set_limits(
      "gpt",
      {Limit::per_minute("rpm", 0), Limit::per_minute("tpm", 0),
       Limit::adaptive("aimd",
                       AimdOptions{.max_rate = 50, .initial_rate = 20, .slow_start_threshold = 20},
                       20)});
  Lease lease = limiter.try_acquire("acct", "gpt", {{"rpm", 1}, {"tpm", 10}});
  ASSERT_TRUE(lease.allowed());
  const Headers h{
      {"x-ratelimit-limit-requests", "60"},       {"x-ratelimit-remaining-requests", "59"},
      {"x-ratelimit-reset-requests", "1s"},       {"x-ratelimit-limit-tokens", "150000"},
      {"x-ratelimit-remaining-tokens", "149990"}, {"x-ratelimit-reset-tokens", "6m0s"}};
  const ObserveResult r = discovery.observe(lease, h, 200);
  EXPECT_TRUE(r.limits_changed);
  EXPECT_FALSE(r.rate_limited);
  EXPECT_DOUBLE_EQ(find_status(limiter.stats("acct", "gpt").limits, "aimd")->rate, 21.0);
  EXPECT_EQ(limiter.discovered_limits("acct", "gpt")[0], Limit::custom("rpm", 54, 60, 60s));
  EXPECT_FALSE(discovery.observe(lease, h, 200).limits_changed);  // marks once
  EXPECT_DOUBLE_EQ(find_status(limiter.stats("acct", "gpt").limits, "aimd")->rate, 21.0);
}

// Verifies a 429 without any header still holds the key for the default retry.
TEST_F(DiscoveryTest, BareRateLimitHoldsForTheDefault) {
  limiter.set_limits("gpt", {Limit::per_minute("rpm", 100)});
  Observation o;
  o.rate_limited = true;
  discovery.observe("acct", "gpt", o);
  const Decision d = take(limiter, "acct", "gpt", {{"rpm", 1}});
  EXPECT_FALSE(d.allowed);
  EXPECT_EQ(d.retry_after, 1 * kSec);
}

// Verifies a 429 holds a calendar window only when its retry-after reaches the window's end:
// a 3 s retry-after must not close a day's window for the rest of the day.
TEST_F(DiscoveryTest, RateLimitedHoldsAWindowOnlyToItsEnd) {
  limiter.set_limits("gpt", {Limit::per_minute("rpm", 100), Limit::daily("rpd", 1000)});
  Observation o;
  o.rate_limited = true;
  o.retry_after = 3 * kSec;
  const ObserveResult r = discovery.observe("acct", "gpt", o);
  ASSERT_EQ(r.clamped.size(), 1u);
  EXPECT_EQ(r.clamped[0].limit, "rpm");
  EXPECT_EQ(available(limiter, "acct", "gpt", "rpd"), 1000);
  EXPECT_EQ(take(limiter, "acct", "gpt", {{"rpm", 1}, {"rpd", 1}}).retry_after, 3 * kSec);
  // A retry-after past the window's end (a day's quota is gone) holds it too.
  o.retry_after = kMicrosPerDay;
  EXPECT_EQ(discovery.observe("acct", "gpt", o).clamped.size(), 2u);
  EXPECT_EQ(available(limiter, "acct", "gpt", "rpd"), 0);
}

// Verifies slot names follow each provider's window (Groq's requests are per day) and can be
// set explicitly, and that bad options are refused.
TEST_F(DiscoveryTest, NamesFollowWindowsAndOptionsAreValidated) {
  Discovery groq(limiter, Provider::groq);
  Observation o;
  o.requests = {14400, 14000, std::nullopt, kMicrosPerDay};
  groq.observe("acct", "llama", o);
  const auto d = groq.discovered("acct", "llama");
  ASSERT_EQ(d.size(), 1u);
  EXPECT_EQ(d[0].limit, "rpd");
  EXPECT_EQ(limiter.discovered_limits("acct", "llama")[0],
            Limit::custom("rpd", 12960, 14400, std::chrono::hours(24)));

  Discovery named(limiter, Provider::openai, DiscoveryOptions{.requests_limit = "req"});
  named.observe("acct", "x", openai_obs(10, 10, 0, 0));
  EXPECT_EQ(named.discovered("acct", "x")[0].limit, "req");

  EXPECT_THROW(Discovery(limiter, Provider::openai, DiscoveryOptions{.buffer_ratio = 0}),
               ValidationError);
  EXPECT_THROW(Discovery(limiter, Provider::openai, DiscoveryOptions{.buffer_ratio = 1.5}),
               ValidationError);
  EXPECT_THROW(Discovery(limiter, Provider::openai, DiscoveryOptions{.tokens_limit = "a b"}),
               ValidationError);
}

}  // namespace
}  // namespace admit
