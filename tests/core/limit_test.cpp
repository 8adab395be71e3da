#include "admit/core/limit.hpp"

#include <gtest/gtest.h>

#include "admit/core/decision.hpp"
#include "admit/core/error.hpp"

namespace admit {
namespace {

template <class F>
void expect_invalid(F&& f, const std::string& field, const std::string& value) {
  try {
    f();
    FAIL() << "expected ValidationError on " << field;
  } catch (const ValidationError& e) {
    EXPECT_EQ(e.field(), field);
    EXPECT_EQ(e.value(), value);
    EXPECT_NE(std::string(e.what()).find(field), std::string::npos) << e.what();
  }
}

// A name with a NUL, invalid UTF-8 or control bytes is quoted whole in what() (a C string,
// which a raw NUL would cut short), every such byte as \xNN; value() keeps the bytes as given.
TEST(ValidationErrorText, QuotesEveryByteOfTheValue) {
  const std::string name("a\0b\xff\n", 5);
  try {
    validate_name("entity", name);
    FAIL() << "expected ValidationError";
  } catch (const ValidationError& e) {
    EXPECT_STREQ(e.what(),
                 "invalid entity 'a\\x00b\\xff\\x0a': must be printable ASCII without spaces");
    EXPECT_EQ(e.value(), name);
  }
  EXPECT_EQ(printable("ok, fine"), "ok, fine");
  EXPECT_EQ(printable(std::string(300, 'x')), std::string(200, 'x') + "...");
  EXPECT_EQ(printable("abcdef", 3), "abc...");
}

// Verifies the factories set capacity, refill and period as documented (burst defaults to n).
TEST(Limit, Factories) {
  const Limit a = Limit::per_minute("rpm", 100);
  EXPECT_EQ(a.kind(), LimitKind::rate);
  EXPECT_EQ(a.capacity(), 100);
  EXPECT_EQ(a.refill_amount(), 100);
  EXPECT_EQ(a.refill_period(), kMicrosPerMinute);
  EXPECT_EQ(a.describe(), "rpm: 100 per 1m (burst 100)");

  const Limit b = Limit::per_minute("tpm", 10'000, 15'000);
  EXPECT_EQ(b.capacity(), 15'000);
  EXPECT_EQ(b.refill_amount(), 10'000);

  const Limit c = Limit::custom("requests", 50, 50, std::chrono::seconds(30));
  EXPECT_EQ(c.describe(), "requests: 50 per 30s (burst 50)");
  EXPECT_EQ(Limit::per_second("rps", 10).refill_period(), kMicrosPerSecond);
  EXPECT_EQ(Limit::per_hour("rph", 10).refill_period(), kMicrosPerHour);
  EXPECT_EQ(Limit::per_day("rpd", 10).refill_period(), kMicrosPerDay);

  const Limit w = Limit::daily("rpd", 1000, "00:00", "America/Los_Angeles");
  EXPECT_EQ(w.kind(), LimitKind::window);
  EXPECT_EQ(w.window_spec().time_zone, "America/Los_Angeles");
  EXPECT_EQ(w.describe(), "rpd: 1000 per day (resets 00:00 America/Los_Angeles)");

  const Limit k = Limit::concurrency("inflight", 4);
  EXPECT_EQ(k.kind(), LimitKind::concurrency);
  EXPECT_EQ(k.describe(), "inflight: 4 concurrent");
}

// Verifies 0 means unlimited for every kind.
TEST(Limit, ZeroIsUnlimited) {
  EXPECT_TRUE(Limit::per_minute("rpm", 0).unlimited());
  EXPECT_TRUE(Limit::per_minute("rpm", 0, 5).unlimited());
  EXPECT_TRUE(Limit::concurrency("c", 0).unlimited());
  EXPECT_TRUE(Limit::daily("d", 0).unlimited());
  EXPECT_EQ(Limit::per_minute("rpm", 0).describe(), "rpm: unlimited");
  EXPECT_FALSE(Limit::per_minute("rpm", 1).unlimited());
}

// Verifies validation errors name the field and the value.
TEST(Limit, ValidationNamesFieldAndValue) {
  expect_invalid([] { (void)Limit::per_minute("rpm", -1); }, "rate", "-1");
  expect_invalid([] { (void)Limit::per_minute("rpm", 10, -5); }, "burst", "-5");
  expect_invalid([] { (void)Limit::per_minute("", 10); }, "limit name", "");
  expect_invalid([] { (void)Limit::per_minute("has space", 10); }, "limit name", "has space");
  expect_invalid([] { (void)Limit::custom("x", 10, 0, std::chrono::seconds(1)); }, "refill_amount",
                 "0");
  expect_invalid([] { (void)Limit::custom("x", 10, 5, std::chrono::seconds(0)); }, "refill_period",
                 "0us");
  expect_invalid([] { (void)Limit::concurrency("c", -2); }, "slots", "-2");
  expect_invalid([] { (void)Limit::daily("d", 10, "25:00"); }, "reset_at", "25:00");
  expect_invalid([] { (void)Limit::daily("d", 10, "00:00", "Mars/Olympus"); }, "time_zone",
                 "Mars/Olympus");
}

// Verifies equality compares name, kind, numbers and the window's zone.
TEST(Limit, Equality) {
  EXPECT_EQ(Limit::per_minute("rpm", 10), Limit::per_minute("rpm", 10));
  EXPECT_FALSE(Limit::per_minute("rpm", 10) == Limit::per_minute("rpm", 11));
  EXPECT_FALSE(Limit::per_minute("rpm", 10) == Limit::per_minute("rpx", 10));
  EXPECT_FALSE(Limit::daily("d", 1, "00:00", "UTC") ==
               Limit::daily("d", 1, "00:00", "Europe/Berlin"));
  EXPECT_NE(Limit::per_minute("rpm", 10).name_hash(), Limit::concurrency("rpm", 10).name_hash());
}

// Verifies the shadow flag: off by default, set and cleared by with_shadow() on a copy, part of
// equality and of describe(), not of the state's identity (name_hash).
TEST(Limit, ShadowFlag) {
  const Limit rpm = Limit::per_minute("rpm", 10);
  EXPECT_FALSE(rpm.shadow());
  const Limit shadow = rpm.with_shadow();
  EXPECT_TRUE(shadow.shadow());
  EXPECT_FALSE(rpm.shadow());  // a copy: the original is unchanged
  EXPECT_FALSE(shadow == rpm);
  EXPECT_EQ(shadow.with_shadow(false), rpm);
  EXPECT_EQ(shadow.name_hash(), rpm.name_hash());
  EXPECT_EQ(shadow.capacity(), 10);
  EXPECT_EQ(shadow.rate(), rpm.rate());
  EXPECT_EQ(rpm.describe(), "rpm: 10 per 1m (burst 10)");
  EXPECT_EQ(shadow.describe(), "rpm: 10 per 1m (burst 10), shadow");
  EXPECT_EQ(Limit::concurrency("slots", 2).with_shadow().describe(), "slots: 2 concurrent, shadow");
  const Limit day = Limit::daily("rpd", 5, "06:00", "Europe/Berlin").with_shadow();
  EXPECT_TRUE(day.shadow());
  EXPECT_EQ(day.window_spec().time_zone, "Europe/Berlin");
  EXPECT_EQ(day.window_at(0).end,
            Limit::daily("rpd", 5, "06:00", "Europe/Berlin").window_at(0).end);
}

// Verifies decision codes print as their stable wire strings.
TEST(Decision, CodesAreWireStrings) {
  EXPECT_EQ(to_string(Code::ok), "ok");
  EXPECT_EQ(to_string(Code::rate_exceeded), "rate_exceeded");
  EXPECT_EQ(to_string(Code::exceeds_capacity), "exceeds_capacity");
  EXPECT_EQ(to_string(Code::store_unavailable), "store_unavailable");
  Decision d;
  d.allowed = false;
  d.code = Code::rate_exceeded;
  d.retry_after = 1'000'001;
  EXPECT_EQ(d.retry_after_header(), 2);
  d.retry_after = 0;
  EXPECT_EQ(d.retry_after_header(), 1);
  d.code = Code::exceeds_capacity;
  EXPECT_EQ(d.retry_after_header(), 0);
}

}  // namespace
}  // namespace admit
