#include "admit/core/limit_codec.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <random>

#include "admit/core/error.hpp"
#include "support/seed.hpp"

namespace admit {
namespace {

using namespace std::chrono_literals;

void expect_same(const std::vector<Limit>& a, const std::vector<Limit>& b) {
  ASSERT_EQ(a.size(), b.size());
  for (std::size_t i = 0; i < a.size(); ++i) {
    EXPECT_TRUE(a[i] == b[i]) << a[i].describe() << " vs " << b[i].describe();
    EXPECT_EQ(a[i].describe(), b[i].describe());
    EXPECT_EQ(a[i].name_hash(), b[i].name_hash());
  }
}

// Verifies every kind, unlimited limits and odd periods survive encode/decode exactly, and
// the text is the documented JSON shape.
TEST(LimitCodec, RoundTripsEveryKind) {
  AimdOptions aimd;
  aimd.max_rate = 50;
  aimd.initial_rate = 1.0 / 3.0;
  aimd.slow_start_threshold = 12.345678901234567;
  aimd.additive_increase = 0.1;
  aimd.multiplicative_decrease = 0.7;
  aimd.min_rate = 0.1;
  const std::vector<Limit> limits = {
      Limit::per_minute("rpm", 500),
      Limit::per_second("tps", 10, 25),
      Limit::custom("odd", 7, 3, 60'000'001us),
      Limit::per_minute("free", 0),  // unlimited
      Limit::daily("rpd", 10'000, "07:30", "America/Los_Angeles"),
      Limit::window("rpmo", 3, WindowSpec{WindowUnit::month, "00:00", "Europe/Berlin"}),
      Limit::concurrency("slots", 8),
      Limit::adaptive("aimd", aimd, 4),
      Limit::adaptive("plain", AimdOptions{.max_rate = 10}),
  };
  const std::string text = encode_limits(limits);
  expect_same(decode_limits(text), limits);
  EXPECT_NE(text.find(R"({"name":"rpm","kind":"rate","capacity":500,"refill_amount":500,)"
                      R"("refill_period_us":60000000})"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find(R"("initial_rate":"0.3333333333333333")"), std::string::npos) << text;
  EXPECT_EQ(encode_limits({}), "[]");
  EXPECT_TRUE(decode_limits("[]").empty());
}

// Verifies the shadow flag round-trips for every kind, is written only when set (a limit that is
// not shadow encodes exactly as before the flag existed), and that an encoding without it (any
// earlier one) decodes as not shadow.
TEST(LimitCodec, ShadowFlagRoundTripsAndOldTextIsNotShadow) {
  const std::vector<Limit> limits = {
      Limit::per_minute("rpm", 500).with_shadow(),
      Limit::per_minute("tpm", 30'000),
      Limit::daily("rpd", 10'000, "07:30", "America/Los_Angeles").with_shadow(),
      Limit::concurrency("slots", 8).with_shadow(),
      Limit::adaptive("aimd", AimdOptions{.max_rate = 10}).with_shadow(),
  };
  const std::string text = encode_limits(limits);
  const std::vector<Limit> back = decode_limits(text);
  expect_same(back, limits);
  ASSERT_EQ(back.size(), limits.size());
  for (std::size_t i = 0; i < back.size(); ++i) EXPECT_EQ(back[i].shadow(), limits[i].shadow());
  EXPECT_NE(text.find(R"("refill_period_us":60000000,"shadow":true})"), std::string::npos) << text;
  EXPECT_NE(text.find(R"({"name":"tpm","kind":"rate","capacity":30000,"refill_amount":30000,)"
                      R"("refill_period_us":60000000})"),
            std::string::npos)
      << text;
  const std::vector<Limit> old = decode_limits(
      R"([{"name":"rpm","kind":"rate","capacity":500,"refill_amount":500,)"
      R"("refill_period_us":60000000},{"name":"slots","kind":"concurrency","capacity":8}])");
  ASSERT_EQ(old.size(), 2u);
  EXPECT_FALSE(old[0].shadow());
  EXPECT_FALSE(old[1].shadow());
  EXPECT_EQ(old[0], Limit::per_minute("rpm", 500));
  EXPECT_FALSE(decode_limits(R"([{"name":"c","kind":"concurrency","capacity":1,"shadow":false}])")
                   .at(0)
                   .shadow());
}

// Verifies random AIMD settings (doubles of every magnitude) round-trip bit for bit.
TEST(LimitCodec, DoublesRoundTripExactly) {
  const std::uint64_t seed = test::test_seed();
  std::mt19937_64 rng(seed);
  std::printf("%s\n", test::seed_note(seed).c_str());
  SCOPED_TRACE(test::seed_note(seed));
  std::uniform_real_distribution<double> unit(0.0, 1.0);
  for (int i = 0; i < 500; ++i) {
    AimdOptions a;
    a.max_rate = std::ldexp(1.0 + unit(rng), static_cast<int>(rng() % 20));  // 1 .. 2^21
    a.min_rate = std::max(1e-3, a.max_rate * unit(rng) * 1e-3);
    a.initial_rate = a.min_rate + (a.max_rate - a.min_rate) * unit(rng);
    a.additive_increase = unit(rng) * 100 + 1e-9;
    a.multiplicative_decrease = std::clamp(unit(rng), 0.01, 0.99);
    const Limit l = Limit::adaptive("a", a, 1 + static_cast<std::int64_t>(rng() % 1000));
    const std::vector<Limit> back = decode_limits(encode_limits({&l, 1}));
    ASSERT_EQ(back.size(), 1u);
    const AimdOptions& b = back[0].aimd_options();
    ASSERT_EQ(b.max_rate, a.max_rate);
    ASSERT_EQ(b.min_rate, a.min_rate);
    ASSERT_EQ(b.initial_rate, a.initial_rate);
    ASSERT_EQ(b.additive_increase, a.additive_increase);
    ASSERT_EQ(b.multiplicative_decrease, a.multiplicative_decrease);
    ASSERT_TRUE(back[0] == l);
  }
}

void expect_refused(std::string_view text, const std::string& field) {
  try {
    (void)decode_limits(text);
    ADD_FAILURE() << "decoded " << text;
  } catch (const ValidationError& e) {
    EXPECT_EQ(e.field(), field) << e.what();
  }
}

// Verifies bad text is refused with a ValidationError naming the place, never a crash.
TEST(LimitCodec, RefusesBadText) {
  expect_refused("", "limits");
  expect_refused("{", "limits");
  expect_refused(R"({"name":"x"})", "limits");
  expect_refused("[1]", "limits[0]");
  expect_refused(R"([{"kind":"rate"}])", "limits[0].name");
  expect_refused(R"([{"name":"r","kind":"bucket"}])", "limits[0].kind");
  expect_refused(R"([{"name":"r","kind":"rate","capacity":"5"}])", "limits[0].capacity");
  expect_refused(R"([{"name":"r","kind":"rate","capacity":5,"refill_amount":5}])",
                 "limits[0].refill_period_us");
  expect_refused(R"([{"name":"r","kind":"rate","capacity":-5,"refill_amount":5,)"
                 R"("refill_period_us":1000}])",
                 "capacity");  // the factory's own check
  expect_refused(R"([{"name":"w","kind":"window","capacity":5,"unit":"year",)"
                 R"("reset_at":"00:00","time_zone":"UTC"}])",
                 "limits[0].unit");
  expect_refused(R"([{"name":"a","kind":"adaptive","burst":1,"max_rate":"nan",)"
                 R"("initial_rate":"1","additive_increase":"1",)"
                 R"("multiplicative_decrease":"0.5","min_rate":"0.1"}])",
                 "limits[0].max_rate");
  expect_refused(R"([{"name":"c","kind":"concurrency","capacity":1},)"
                 R"({"name":"c","kind":"concurrency","capacity":2}])",
                 "limits[1].name");
  expect_refused(R"([{"name":"bad name","kind":"concurrency","capacity":1}])", "limit name");
  expect_refused(R"([{"name":"c","kind":"concurrency","capacity":1,"shadow":"yes"}])",
                 "limits[0].shadow");
  expect_refused(R"([{"name":"c","kind":"concurrency","capacity":1,"shadow":1}])",
                 "limits[0].shadow");
}

}  // namespace
}  // namespace admit
