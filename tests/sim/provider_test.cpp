// The provider simulator's core: bucket math at explicit instants, and what its headers say
// read back through admit::parse_response (the parser admit uses against real providers).
#include "admit/sim/provider.hpp"

#include <gtest/gtest.h>

#include <cstdint>
#include <memory>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "admit/adapt/headers.hpp"

namespace admit::sim {
namespace {

constexpr Micros kMs = 1'000;
constexpr Micros kS = kMicrosPerSecond;
constexpr Micros kMin = kMicrosPerMinute;
constexpr Micros kT0 = 1'700'000'000 * kS;  // 2023-11-14T22:13:20Z

SimRequest req(std::int64_t tokens, std::string key = "default") {
  SimRequest r;
  r.key = std::move(key);
  r.model = "gpt-sim";
  r.prompt_tokens = tokens / 2;
  r.max_tokens = tokens - tokens / 2;
  return r;
}

std::int64_t num(const SimResponse& r, std::string_view header) {
  const auto v = r.header(header);
  if (!v) {
    ADD_FAILURE() << "missing header " << header;
    return -1;
  }
  return std::stoll(std::string(*v));
}

Observation parse(Provider p, const SimResponse& r, Micros now, bool with_retry_headers = true) {
  Headers h;
  for (const auto& [name, value] : r.headers) {
    if (!with_retry_headers && name.starts_with("retry-after")) continue;
    h.add(name, value);
  }
  return parse_response(p, h, r.status, r.body, now);
}

// "k<i>" (appended, not operator+: GCC 12 -O3 reports a false -Wrestrict on the latter).
std::string key(std::int64_t i) { return std::string("k").append(std::to_string(i)); }

Micros ceil_to(Micros x, Micros q) { return (x + q - 1) / q * q; }

// ---- bucket math ----------------------------------------------------------------------------

TEST(ProviderModel, NewKeyStartsFullAndChargesPromptPlusMaxTokens) {
  // Verifies the first request of a key sees full buckets and is charged its whole estimate.
  ProviderModel m({.rpm = 60, .tpm = 1000});
  SimRequest r = req(0);
  r.prompt_tokens = 150;
  r.max_tokens = 50;
  const SimResponse res = m.handle(r, kT0);
  EXPECT_EQ(res.status, 200);
  EXPECT_EQ(res.charged_tokens, 200);
  EXPECT_TRUE(res.body.empty());
  EXPECT_FALSE(res.retry_after);
  EXPECT_EQ(num(res, "x-ratelimit-limit-requests"), 60);
  EXPECT_EQ(num(res, "x-ratelimit-remaining-requests"), 59);
  EXPECT_EQ(res.header("x-ratelimit-reset-requests"), "1s");  // 1 request at 1/s
  EXPECT_EQ(num(res, "x-ratelimit-limit-tokens"), 1000);
  EXPECT_EQ(num(res, "x-ratelimit-remaining-tokens"), 800);
  EXPECT_EQ(res.header("x-ratelimit-reset-tokens"), "12s");  // 200 tokens at 1000/min
  EXPECT_FALSE(res.header("retry-after"));
}

TEST(ProviderModel, RefillIsContinuousAndRetryAfterIsExact) {
  // Verifies an odd rate (7 per minute: 8,571,428.57 µs per request) is exact to the µs: the
  // request fits at now + retry_after and not 1 µs earlier.
  auto run = [](Micros probe_at) {
    ProviderModel m({.rpm = 7, .tpm = 0});
    for (int i = 0; i < 7; ++i) EXPECT_EQ(m.handle(req(1), kT0).status, 200);
    const SimResponse denied = m.handle(req(1), kT0);
    EXPECT_EQ(denied.status, 429);
    EXPECT_EQ(denied.retry_after, 8'571'429);  // ceil(60 s / 7)
    return m.handle(req(1), probe_at).status;
  };
  EXPECT_EQ(run(kT0 + 8'571'428), 429);
  EXPECT_EQ(run(kT0 + 8'571'429), 200);
}

TEST(ProviderModel, RemainingIsTheExactFloorOfTheLevel) {
  // Verifies remaining = floor(level) while the bucket refills 1000 per minute.
  ProviderModel m({.rpm = 0, .tpm = 1000});
  ASSERT_EQ(m.handle(req(999), kT0).status, 200);  // level 1
  EXPECT_EQ(num(m.handle(req(0), kT0 + 30 * kS - 1), "x-ratelimit-remaining-tokens"), 500);
  EXPECT_EQ(num(m.handle(req(0), kT0 + 30 * kS), "x-ratelimit-remaining-tokens"), 501);
  const SimResponse full = m.handle(req(0), kT0 + kMin);
  EXPECT_EQ(num(full, "x-ratelimit-remaining-tokens"), 1000);
  EXPECT_EQ(full.header("x-ratelimit-reset-tokens"), "0s");
  EXPECT_EQ(num(m.handle(req(0), kT0 + 10 * kMin), "x-ratelimit-remaining-tokens"), 1000);
  EXPECT_FALSE(full.header("x-ratelimit-limit-requests"));  // rpm unlimited: no headers
}

TEST(ProviderModel, BothBucketsMustFitAndA429ChargesNothing) {
  // Verifies a request needs both buckets, a refusal takes nothing from either, and the 429
  // blames the bucket that is short.
  ProviderModel m({.rpm = 2, .tpm = 1000});
  ASSERT_EQ(m.handle(req(600), kT0).status, 200);
  const SimResponse tokens_short = m.handle(req(600), kT0);
  EXPECT_EQ(tokens_short.status, 429);
  EXPECT_EQ(tokens_short.charged_tokens, 0);
  EXPECT_EQ(num(tokens_short, "x-ratelimit-remaining-requests"), 1);  // not charged
  EXPECT_EQ(num(tokens_short, "x-ratelimit-remaining-tokens"), 400);
  EXPECT_EQ(tokens_short.retry_after, 12 * kS);  // 200 tokens at 1000/min
  EXPECT_NE(tokens_short.body.find(R"("type":"tokens")"), std::string::npos);
  EXPECT_NE(tokens_short.body.find("Limit 1000, Used 600, Requested 600"), std::string::npos);

  ASSERT_EQ(m.handle(req(400), kT0).status, 200);  // the last request, the last tokens
  const SimResponse requests_short = m.handle(req(0), kT0);
  EXPECT_EQ(requests_short.status, 429);
  EXPECT_EQ(requests_short.retry_after, 30 * kS);  // 1 request at 2/min
  EXPECT_NE(requests_short.body.find(R"("type":"requests")"), std::string::npos);
  EXPECT_NE(requests_short.body.find("on requests per min (RPM): Limit 2, Used 2, Requested 1"),
            std::string::npos);
  // Both short: the longer wait (tokens: 1000 at 1000/min = 60 s) is the one reported.
  const SimResponse both = m.handle(req(1000), kT0);
  EXPECT_EQ(both.retry_after, kMin);
  EXPECT_NE(both.body.find(R"("type":"tokens")"), std::string::npos);
}

TEST(ProviderModel, ARequestLargerThanTpmNeverFits) {
  // Verifies a request above tpm gets a 429 without retry-after, however long one waits, while
  // one of exactly tpm tokens fits a full bucket.
  ProviderModel m({.rpm = 0, .tpm = 1000});
  for (Micros t : {kT0, kT0 + kMicrosPerHour}) {
    const SimResponse r = m.handle(req(1001), t);
    EXPECT_EQ(r.status, 429);
    EXPECT_FALSE(r.retry_after);
    EXPECT_FALSE(r.header("retry-after"));
    EXPECT_FALSE(r.header("retry-after-ms"));
    EXPECT_NE(r.body.find("Request too large for gpt-sim"), std::string::npos);
    EXPECT_NE(r.body.find("Limit 1000, Requested 1001"), std::string::npos);
  }
  EXPECT_EQ(m.handle(req(1000), kT0 + kMicrosPerHour).status, 200);
  EXPECT_EQ(
      m.stats(),
      (SimStats{.accepted = 1, .rejected = 2, .accepted_tokens = 1000, .rejected_tokens = 2002}));
}

TEST(ProviderModel, SetLimitsClampsLevelsAndRefillsAtTheOldRateFirst) {
  // Verifies halving tpm clamps a full bucket to the new capacity and keeps a lower level,
  // refill up to the change uses the old rate, and after it the new one.
  ProviderModel full({.rpm = 0, .tpm = 1000});
  ASSERT_EQ(full.handle(req(0), kT0).status, 200);
  full.set_limits({.rpm = 0, .tpm = 500}, kT0);
  EXPECT_EQ(full.limits(), (SimLimits{.rpm = 0, .tpm = 500}));
  EXPECT_EQ(num(full.handle(req(0), kT0), "x-ratelimit-remaining-tokens"), 500);
  EXPECT_EQ(full.handle(req(501), kT0 + kMicrosPerHour).status, 429);  // never fits now

  ProviderModel low({.rpm = 0, .tpm = 1000});
  ASSERT_EQ(low.handle(req(700), kT0).status, 200);  // level 300
  low.set_limits({.rpm = 0, .tpm = 500}, kT0);
  EXPECT_EQ(num(low.handle(req(0), kT0), "x-ratelimit-remaining-tokens"), 300);
  EXPECT_EQ(num(low.handle(req(0), kT0 + 12 * kS), "x-ratelimit-remaining-tokens"), 400);

  ProviderModel mid({.rpm = 0, .tpm = 1000});
  ASSERT_EQ(mid.handle(req(1000), kT0).status, 200);       // empty
  mid.set_limits({.rpm = 0, .tpm = 2000}, kT0 + 30 * kS);  // 30 s at 1000/min: 500
  EXPECT_EQ(num(mid.handle(req(0), kT0 + 30 * kS), "x-ratelimit-remaining-tokens"), 500);
  EXPECT_EQ(num(mid.handle(req(0), kT0 + 60 * kS), "x-ratelimit-remaining-tokens"), 1500);
}

TEST(ProviderModel, SetLimitsToAndFromUnlimited) {
  // Verifies an unlimited bucket sends no headers and, once limited, starts full.
  ProviderModel m({.rpm = 1, .tpm = 0});
  ASSERT_EQ(m.handle(req(5000), kT0).status, 200);
  EXPECT_EQ(m.handle(req(0), kT0).status, 429);
  m.set_limits({.rpm = 0, .tpm = 100}, kT0);
  const SimResponse r = m.handle(req(100), kT0);
  EXPECT_EQ(r.status, 200);
  EXPECT_FALSE(r.header("x-ratelimit-limit-requests"));
  EXPECT_EQ(num(r, "x-ratelimit-remaining-tokens"), 0);
  m.set_limits({.rpm = 1, .tpm = 0}, kT0);
  const SimResponse again = m.handle(req(0), kT0);  // the request bucket restarts full
  EXPECT_EQ(again.status, 200);
  EXPECT_FALSE(again.header("x-ratelimit-limit-tokens"));
  m.set_limits({}, kT0);
  for (int i = 0; i < 100; ++i) EXPECT_EQ(m.handle(req(1'000'000), kT0).status, 200);
  EXPECT_TRUE(m.handle(req(0), kT0).headers.empty());
}

TEST(ProviderModel, KeysHaveTheirOwnBuckets) {
  // Verifies exhausting one API key leaves another untouched.
  ProviderModel m({.rpm = 1, .tpm = 100});
  EXPECT_EQ(m.handle(req(100, "sk-a"), kT0).status, 200);
  EXPECT_EQ(m.handle(req(1, "sk-a"), kT0).status, 429);
  const SimResponse b = m.handle(req(100, "sk-b"), kT0);
  EXPECT_EQ(b.status, 200);
  EXPECT_EQ(num(b, "x-ratelimit-remaining-requests"), 0);
  EXPECT_EQ(m.handle(req(1, "sk-c"), kT0).status, 200);
}

TEST(ProviderModel, ManyKeysArePrunedWithoutLosingState) {
  // Verifies pruning (past 1024 keys) drops only full buckets: an exhausted key stays so.
  ProviderModel m({.rpm = 1, .tpm = 0});
  ASSERT_EQ(m.handle(req(0, "busy"), kT0).status, 200);
  for (int i = 0; i < 3000; ++i) {
    ASSERT_EQ(m.handle(req(0, key(i)), kT0 + i).status, 200);  // each key is left empty
  }
  EXPECT_EQ(m.handle(req(0, "busy"), kT0 + 59 * kS).status, 429);
  EXPECT_EQ(m.handle(req(0, key(2999)), kT0 + 59 * kS).status, 429);
  for (int i = 0; i < 3000; ++i) {  // full again: pruned as the map grows, none of them lost
    ASSERT_EQ(m.handle(req(0, key(i + 3000)), kT0 + 2 * kMin + i).status, 200);
  }
  EXPECT_EQ(m.handle(req(0, key(0)), kT0 + 2 * kMin).status, 200);
}

TEST(ProviderModel, TimeGoingBackwardsRefillsNothing) {
  // Verifies an earlier `now` neither refills nor un-refills, and waits count from `now`.
  ProviderModel m({.rpm = 0, .tpm = 600});
  ASSERT_EQ(m.handle(req(600), kT0).status, 200);
  const SimResponse r = m.handle(req(10), kT0 - 5 * kS);
  EXPECT_EQ(r.status, 429);
  EXPECT_EQ(r.retry_after, 6 * kS);  // 5 s back to kT0, then 1 s for 10 tokens
  EXPECT_EQ(num(r, "x-ratelimit-remaining-tokens"), 0);
  EXPECT_EQ(m.handle(req(10), kT0 + kS).status, 200);
}

TEST(ProviderModel, StatsCountAndReset) {
  // Verifies the counters and that reset_stats() leaves the buckets alone.
  ProviderModel m({.rpm = 2, .tpm = 0});
  (void)m.handle(req(10), kT0);
  (void)m.handle(req(20), kT0);
  (void)m.handle(req(30), kT0);
  EXPECT_EQ(m.stats(),
            (SimStats{.accepted = 2, .rejected = 1, .accepted_tokens = 30, .rejected_tokens = 30}));
  m.reset_stats();
  EXPECT_EQ(m.stats(), SimStats{});
  EXPECT_EQ(m.handle(req(0), kT0).status, 429);
}

TEST(ProviderModel, LevelsReportWhatTheBucketsHoldWithoutChangingThem) {
  // Verifies levels(): full for an unseen key, what remaining-* reports after a charge,
  // refilled to `now` on a copy (an earlier `now` after that still sees the charge), nullopt
  // for an unlimited bucket, and the clamp of set_limits.
  ProviderModel m({.rpm = 60, .tpm = 6000});
  EXPECT_EQ(m.levels("k", kT0), (SimLevels{.requests = 60, .tokens = 6000}));
  const SimResponse r = m.handle(req(1200, "k"), kT0);
  ASSERT_EQ(r.status, 200);
  EXPECT_EQ(m.levels("k", kT0), (SimLevels{.requests = num(r, "x-ratelimit-remaining-requests"),
                                           .tokens = num(r, "x-ratelimit-remaining-tokens")}));
  EXPECT_EQ(m.levels("k", kT0), (SimLevels{.requests = 59, .tokens = 4800}));
  EXPECT_EQ(m.levels("k", kT0 + kS / 2), (SimLevels{.requests = 59, .tokens = 4850}));
  EXPECT_EQ(m.levels("k", kT0 + 10 * kS), (SimLevels{.requests = 60, .tokens = 5800}));
  EXPECT_EQ(m.levels("k", kT0 + 10 * kS - 1), (SimLevels{.requests = 60, .tokens = 5799}));
  EXPECT_EQ(m.levels("k", kT0), (SimLevels{.requests = 59, .tokens = 4800}));  // unchanged
  EXPECT_EQ(m.levels("other", kT0), (SimLevels{.requests = 60, .tokens = 6000}));
  m.set_limits({.rpm = 0, .tpm = 3000}, kT0);
  EXPECT_EQ(m.levels("k", kT0), (SimLevels{.requests = std::nullopt, .tokens = 3000}));
  (void)m.handle(req(1000, "k"), kT0);
  EXPECT_EQ(m.levels("k", kT0), (SimLevels{.requests = std::nullopt, .tokens = 2000}));
  EXPECT_EQ(m.stats().accepted, 2);  // levels() counted nothing
}

// ---- validation -----------------------------------------------------------------------------

TEST(ProviderModel, RejectsNegativeAndHugeValuesWithClearMessages) {
  // Verifies bad limits and request sizes throw std::invalid_argument naming field and value,
  // and a refused set_limits changes nothing.
  auto message = [](auto&& f) {
    try {
      f();
    } catch (const std::invalid_argument& e) {
      return std::string(e.what());
    }
    return std::string("no exception");
  };
  EXPECT_EQ(message([] { ProviderModel m({.rpm = -1, .tpm = 0}); }),
            "SimLimits.rpm (requests per minute, 0 = unlimited) must be between 0 and "
            "9007199254740991, got -1");
  EXPECT_NE(message([] { ProviderModel m({.rpm = 0, .tpm = -5}); }).find("SimLimits.tpm"),
            std::string::npos);
  EXPECT_NE(
      message([] { validate({.rpm = kMaxExact + 1, .tpm = 0}); }).find("got 9007199254740992"),
      std::string::npos);
  ProviderModel m({.rpm = 5, .tpm = 50});
  EXPECT_NE(message([&] { m.set_limits({.rpm = 5, .tpm = -50}, kT0); }).find("got -50"),
            std::string::npos);
  EXPECT_EQ(m.limits(), (SimLimits{.rpm = 5, .tpm = 50}));
  SimRequest r = req(0);
  r.prompt_tokens = -3;
  EXPECT_EQ(message([&] { (void)m.handle(r, kT0); }),
            "SimRequest.prompt_tokens must be between 0 and 9007199254740991, got -3");
  r.prompt_tokens = 0;
  r.max_tokens = -1;
  EXPECT_NE(message([&] { (void)m.handle(r, kT0); }).find("SimRequest.max_tokens"),
            std::string::npos);
  EXPECT_EQ(m.stats(), SimStats{});
  EXPECT_NO_THROW(validate({.rpm = kMaxExact, .tpm = kMaxExact}));
}

TEST(Dialect, NamesRoundTrip) {
  for (Dialect d : {Dialect::openai, Dialect::anthropic}) {
    EXPECT_EQ(dialect_from_string(to_string(d)), d);
  }
  EXPECT_FALSE(dialect_from_string("OpenAI"));
}

// ---- formats --------------------------------------------------------------------------------

TEST(Format, GoDurationsLookLikeOpenAIsAndParseBack) {
  // Verifies Go's Duration.String() shapes and that admit's Go-duration parser reads them
  // back exactly.
  EXPECT_EQ(format_go_duration(0), "0s");
  EXPECT_EQ(format_go_duration(-5), "0s");
  EXPECT_EQ(format_go_duration(999), "999\u00b5s");
  EXPECT_EQ(format_go_duration(20 * kMs), "20ms");
  EXPECT_EQ(format_go_duration(1'500), "1.5ms");
  EXPECT_EQ(format_go_duration(kS), "1s");
  EXPECT_EQ(format_go_duration(8'640'000), "8.64s");
  EXPECT_EQ(format_go_duration(4 * kMin + 12'172 * kMs), "4m12.172s");
  EXPECT_EQ(format_go_duration(6 * kMin), "6m0s");
  EXPECT_EQ(format_go_duration(kMicrosPerHour), "1h0m0s");
  EXPECT_EQ(format_go_duration(kMicrosPerHour + 2 * kMin + 3 * kS + 1), "1h2m3.000001s");
  std::mt19937_64 rng(7);
  for (int i = 0; i < 2000; ++i) {
    const Micros d = static_cast<Micros>(rng() % (static_cast<std::uint64_t>(3) << (i % 40)));
    const auto back = dialect::parse_go_duration(format_go_duration(d));
    ASSERT_TRUE(back.ok()) << format_go_duration(d);
    EXPECT_EQ(*back.value, d) << format_go_duration(d);
  }
}

TEST(Format, Rfc3339IsUtcAndParsesBack) {
  EXPECT_EQ(format_rfc3339(kT0), "2023-11-14T22:13:20Z");
  EXPECT_EQ(format_rfc3339(kT0 + 1'500), "2023-11-14T22:13:20.001500Z");
  EXPECT_EQ(format_rfc3339(0), "1970-01-01T00:00:00Z");
  EXPECT_EQ(format_rfc3339(-kS / 2), "1969-12-31T23:59:59.500000Z");
  EXPECT_EQ(format_rfc3339(951'782'400 * kS), "2000-02-29T00:00:00Z");
  std::mt19937_64 rng(11);
  for (int i = 0; i < 2000; ++i) {
    const Micros t = static_cast<Micros>(rng() % (4'000'000'000ULL * kS));
    const auto back = dialect::parse_rfc3339(format_rfc3339(t));
    ASSERT_TRUE(back.ok()) << format_rfc3339(t);
    EXPECT_EQ(*back.value, t) << format_rfc3339(t);
  }
}

// ---- round trip through admit::parse_response -----------------------------------------------

TEST(RoundTrip, OpenAIHeadersAndBodyParseIntoTheSimulatorsState) {
  // Verifies, with numbers worked out by hand (1 request/s, 100 tokens/s), that what the
  // simulator sends parses into its real state, on a 200 and a 429.
  ProviderModel m({.rpm = 60, .tpm = 6000});
  const SimResponse ok = m.handle(req(1000), kT0);
  const Observation o = parse(Provider::openai, ok, kT0);
  EXPECT_TRUE(o.warnings.empty());
  EXPECT_FALSE(o.rate_limited);
  EXPECT_FALSE(o.retry_after);
  EXPECT_EQ(o.requests.limit, 60);
  EXPECT_EQ(o.requests.remaining, 59);
  EXPECT_EQ(o.requests.reset_after, kS);
  EXPECT_EQ(o.requests.window, kMin);
  EXPECT_EQ(o.tokens.limit, 6000);
  EXPECT_EQ(o.tokens.remaining, 5000);
  EXPECT_EQ(o.tokens.reset_after, 10 * kS);
  EXPECT_EQ(o.tokens.window, kMin);

  // 2.5 s later: 5250 tokens, 5500 asked: 250 short at 100/s.
  const Micros t1 = kT0 + 2'500 * kMs;
  const SimResponse denied = m.handle(req(5500), t1);
  ASSERT_EQ(denied.status, 429);
  EXPECT_EQ(denied.retry_after, 2'500 * kMs);
  EXPECT_EQ(denied.header("retry-after"), "3");
  EXPECT_EQ(denied.header("retry-after-ms"), "2500");
  const Observation d = parse(Provider::openai, denied, t1);
  EXPECT_TRUE(d.warnings.empty());
  EXPECT_TRUE(d.rate_limited);
  EXPECT_FALSE(d.quota_exhausted);
  EXPECT_EQ(d.retry_after, 2'500 * kMs);  // retry-after-ms wins over retry-after
  EXPECT_EQ(d.requests.remaining, 60);
  EXPECT_EQ(d.requests.reset_after, 0);
  EXPECT_EQ(d.tokens.remaining, 5250);
  EXPECT_EQ(d.tokens.reset_after, 7'500 * kMs);
  // Without the retry headers, the "Please try again in 2.5s." hint of the body says the same.
  EXPECT_NE(denied.body.find("Please try again in 2.5s."), std::string::npos);
  EXPECT_EQ(parse(Provider::openai, denied, t1, false).retry_after, 2'500 * kMs);
}

TEST(RoundTrip, AnthropicHeadersAndBodyParseIntoTheSimulatorsState) {
  // Verifies the Anthropic dialect: RFC 3339 resets (whole seconds, rounded up), retry-after
  // in whole seconds, the rate_limit_error body.
  ProviderModel m({.rpm = 60, .tpm = 6000}, Dialect::anthropic);
  EXPECT_EQ(m.dialect(), Dialect::anthropic);
  const SimResponse ok = m.handle(req(1000), kT0);
  EXPECT_EQ(ok.header("anthropic-ratelimit-tokens-reset"), "2023-11-14T22:13:30Z");
  EXPECT_FALSE(ok.header("x-ratelimit-limit-tokens"));
  const Observation o = parse(Provider::anthropic, ok, kT0);
  EXPECT_TRUE(o.warnings.empty());
  EXPECT_EQ(o.requests.limit, 60);
  EXPECT_EQ(o.requests.remaining, 59);
  EXPECT_EQ(o.requests.reset_after, kS);
  EXPECT_EQ(o.tokens.limit, 6000);
  EXPECT_EQ(o.tokens.remaining, 5000);
  EXPECT_EQ(o.tokens.reset_after, 10 * kS);
  EXPECT_EQ(o.tokens.window, kMin);

  const Micros t1 = kT0 + 2'500 * kMs;
  const SimResponse denied = m.handle(req(5500), t1);
  ASSERT_EQ(denied.status, 429);
  EXPECT_EQ(denied.header("retry-after"), "3");
  EXPECT_FALSE(denied.header("retry-after-ms"));
  EXPECT_NE(denied.body.find(R"("type":"error","error":{"type":"rate_limit_error")"),
            std::string::npos);
  const Observation d = parse(Provider::anthropic, denied, t1);
  EXPECT_TRUE(d.warnings.empty());
  EXPECT_TRUE(d.rate_limited);
  EXPECT_EQ(d.retry_after, 3 * kS);
  EXPECT_EQ(d.requests.remaining, 60);
  EXPECT_EQ(d.requests.reset_after, 500 * kMs);  // full at t1, reported as the next second
  EXPECT_EQ(d.tokens.remaining, 5250);
  EXPECT_EQ(d.tokens.reset_after, 7'500 * kMs);  // full at kT0 + 10 s exactly
}

// One request of a random history.
struct Step {
  SimRequest r;
  Micros at;
};

// A fresh model that has seen `history`.
std::unique_ptr<ProviderModel> replay(SimLimits l, Dialect d, const std::vector<Step>& history) {
  auto m = std::make_unique<ProviderModel>(l, d);
  for (const Step& s : history) (void)m->handle(s.r, s.at);
  return m;
}

TEST(RoundTrip, RandomHistoriesParseConsistentlyAndRetryAfterIsExact) {
  // Verifies over random limits, keys, sizes and time steps (fixed seed), in both dialects:
  // the parsed limit is the configured one; remaining and reset_after agree (the bucket
  // refills limit-remaining tokens, less than one more, at limit per minute); the parsed
  // retry_after is the exact wait rounded up as the dialect sends it; and the same request
  // fits at now + retry_after and not 1 µs earlier.
  std::mt19937_64 rng(20240601);
  auto pick = [&](std::int64_t lo, std::int64_t hi) {
    return lo + static_cast<std::int64_t>(rng() % static_cast<std::uint64_t>(hi - lo + 1));
  };
  for (Dialect dialect : {Dialect::openai, Dialect::anthropic}) {
    const Provider p = dialect == Dialect::openai ? Provider::openai : Provider::anthropic;
    const Micros round = dialect == Dialect::openai ? kMs : kS;  // reset / retry granularity
    for (int run = 0; run < 6; ++run) {
      const SimLimits lim{.rpm = pick(1, 50), .tpm = pick(0, 3) == 0 ? 0 : pick(100, 100'000)};
      SCOPED_TRACE("dialect " + std::string(to_string(dialect)) + " rpm " +
                   std::to_string(lim.rpm) + " tpm " + std::to_string(lim.tpm));
      ProviderModel m(lim, dialect);
      std::vector<Step> history;
      Micros now = kT0 + pick(0, kS);
      for (int i = 0; i < 120; ++i) {
        now += pick(0, 3) == 0 ? 0 : pick(1, 3 * kS);
        SimRequest r;
        r.key = key(pick(0, 1));
        r.prompt_tokens = lim.tpm ? pick(0, lim.tpm / 3) : pick(0, 1000);
        r.max_tokens = pick(0, 2000);
        const SimResponse res = m.handle(r, now);
        const Observation o = parse(p, res, now);
        ASSERT_TRUE(o.warnings.empty()) << o.warnings.front();
        EXPECT_EQ(o.rate_limited, res.status == 429);
        for (auto [obs, limit] : {std::pair{&o.requests, lim.rpm}, std::pair{&o.tokens, lim.tpm}}) {
          if (limit == 0) {
            EXPECT_FALSE(obs->has_data());
            continue;
          }
          ASSERT_TRUE(obs->limit && obs->remaining && obs->reset_after);
          EXPECT_EQ(*obs->limit, limit);
          EXPECT_EQ(obs->window, kMin);
          const std::int64_t missing = limit - *obs->remaining;  // whole tokens, level is more
          const Micros lo = (missing - 1) * kMin / limit;
          const Micros hi = missing * kMin / limit + 1 + round;
          EXPECT_GE(*obs->reset_after, std::max<Micros>(0, lo));
          EXPECT_LE(*obs->reset_after, hi);
        }
        if (res.status == 429 && res.retry_after) {
          EXPECT_EQ(o.retry_after, ceil_to(*res.retry_after, round));
          if (i % 3 == 0) {  // replaying is quadratic: probe a third of the refusals
            EXPECT_EQ(replay(lim, dialect, history)->handle(r, now + *res.retry_after - 1).status,
                      429);
            EXPECT_EQ(replay(lim, dialect, history)->handle(r, now + *res.retry_after).status, 200);
          }
        } else {
          EXPECT_EQ(o.retry_after.has_value(), false);
        }
        history.push_back({r, now});
      }
    }
  }
}

}  // namespace
}  // namespace admit::sim
