#include "admit/adapt/headers.hpp"

#include <gtest/gtest.h>

#include <cctype>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <initializer_list>
#include <optional>
#include <random>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

#ifndef ADMIT_FIXTURES_DIR
#error "ADMIT_FIXTURES_DIR must name tests/adapt/fixtures"
#endif

namespace admit {
namespace {

using dialect::Parsed;

constexpr Micros kS = kMicrosPerSecond;
constexpr Micros kMs = 1'000;
constexpr Micros kT0 = 1'700'000'000 * kS;  // 2023-11-14T22:13:20Z

// ---- fixture loading ----

// One captured response: "# comment" lines, status line, headers, blank line, body.
struct Fixture {
  int status = 0;
  Headers headers;
  std::string body;
  Micros now = kT0;  // from the Date header when present
};

std::string fixture_path(const std::string& rel) {
  return std::string(ADMIT_FIXTURES_DIR) + "/" + rel;
}

std::string_view strip(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r'))
    s.remove_suffix(1);
  return s;
}

Fixture parse_fixture(const std::string& text) {
  Fixture f;
  std::istringstream in(text);
  std::string line;
  bool have_status = false;
  while (std::getline(in, line)) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (!have_status) {
      if (line.empty() || line[0] == '#') continue;
      std::istringstream sl(line);
      std::string version;
      sl >> version >> f.status;
      have_status = true;
      continue;
    }
    if (line.empty()) break;
    const std::size_t colon = line.find(':');
    if (colon == std::string::npos) continue;
    const std::string_view l(line);
    f.headers.add(strip(l.substr(0, colon)), strip(l.substr(colon + 1)));
  }
  std::ostringstream body;
  body << in.rdbuf();
  f.body = body.str();
  if (auto date = f.headers.find("date")) {
    if (auto p = dialect::parse_http_date(*date); p.ok()) f.now = *p.value;
  }
  return f;
}

Fixture load(const std::string& rel) {
  std::ifstream file(fixture_path(rel), std::ios::binary);
  EXPECT_TRUE(file.good()) << "missing fixture " << fixture_path(rel);
  std::ostringstream ss;
  ss << file.rdbuf();
  return parse_fixture(ss.str());
}

Observation parse_fixture_as(Provider p, const std::string& rel) {
  const Fixture f = load(rel);
  return parse_response(p, f.headers, f.status, f.body, f.now);
}

std::string joined(const std::vector<std::string>& w) {
  std::string out;
  for (const auto& s : w) out += s + "\n";
  return out;
}

// ---- Provider / Headers ----

// Verifies every provider name round-trips and lookups ignore case and '-' vs '_'.
TEST(AdaptProvider, NamesRoundTrip) {
  const std::vector<Provider> all{Provider::openai,   Provider::azure_openai, Provider::anthropic,
                                  Provider::gemini,   Provider::groq,         Provider::mistral,
                                  Provider::together, Provider::openrouter,   Provider::cerebras,
                                  Provider::generic};
  for (Provider p : all) {
    EXPECT_EQ(provider_from_string(to_string(p)), p) << to_string(p);
  }
  EXPECT_EQ(to_string(Provider::azure_openai), "azure_openai");
  EXPECT_EQ(provider_from_string("Azure-OpenAI"), Provider::azure_openai);
  EXPECT_EQ(provider_from_string("GROQ"), Provider::groq);
  EXPECT_EQ(provider_from_string("bedrock"), std::nullopt);
  EXPECT_EQ(provider_from_string(""), std::nullopt);
}

// Verifies Headers lookups ignore ASCII case, return the first duplicate, and miss cleanly.
TEST(AdaptHeaders, CaseInsensitiveFind) {
  Headers h{{"X-RateLimit-Limit-Requests", "60"}, {"retry-after", "2"}, {"RETRY-AFTER", "9"}};
  h.add("Content-Type", "application/json");
  EXPECT_EQ(h.size(), 4u);
  EXPECT_EQ(h.find("x-ratelimit-limit-requests"), "60");
  EXPECT_EQ(h.find("X-RATELIMIT-LIMIT-REQUESTS"), "60");
  EXPECT_EQ(h.find("Retry-After"), "2");
  EXPECT_EQ(h.find("content-type"), "application/json");
  EXPECT_EQ(h.find("x-ratelimit-limit"), std::nullopt);
  EXPECT_EQ(h.find(""), std::nullopt);
  EXPECT_TRUE(Headers{}.empty());
}

// ---- dialects ----

struct CountCase {
  const char* in;
  std::optional<std::int64_t> value;
  bool malformed;
};

// Verifies integers parse exactly: unknown markers, negatives, garbage and overflow.
TEST(AdaptDialect, CountParsesExactly) {
  const std::vector<CountCase> cases{
      {"60", 60, false},
      {" 42\t", 42, false},
      {"007", 7, false},
      {"0", 0, false},
      {"9007199254740991", (std::int64_t{1} << 53) - 1, false},
      {"", std::nullopt, false},
      {"   ", std::nullopt, false},
      {"-1", std::nullopt, false},
      {"-2", std::nullopt, true},
      {"-0", 0, false},
      {"+5", std::nullopt, true},
      {"1.5", std::nullopt, true},
      {"1e3", std::nullopt, true},
      {"12abc", std::nullopt, true},
      {"abc", std::nullopt, true},
      {"1 2", std::nullopt, true},
      {"9007199254740992", std::nullopt, true},     // 2^53: not exact everywhere
      {"9223372036854775808", std::nullopt, true},  // int64 overflow
      {"99999999999999999999999", std::nullopt, true},
  };
  for (const auto& c : cases) {
    const Parsed<std::int64_t> p = dialect::parse_count(c.in);
    EXPECT_EQ(p.value, c.value) << '"' << c.in << '"';
    EXPECT_EQ(p.malformed(), c.malformed) << '"' << c.in << '"';
  }
  EXPECT_EQ(dialect::parse_count("9223372036854775808").error, "integer overflow");
}

struct DurationCase {
  const char* in;
  std::optional<Micros> us;
  bool malformed;
};

// Verifies every Go duration form converts to µs exactly, and bad forms are malformed.
TEST(AdaptDialect, GoDurations) {
  const std::vector<DurationCase> cases{
      {"6m0s", 360 * kS, false},
      {"1s", kS, false},
      {"20ms", 20 * kMs, false},
      {"12ms", 12 * kMs, false},
      {"9ms", 9 * kMs, false},
      {"4m12.172s", 252'172'000, false},
      {"2m59.56s", 179'560'000, false},
      {"7.66s", 7'660'000, false},
      {"1h2m3s", 3723 * kS, false},
      {"1.5h", 5400 * kS, false},
      {"500us", 500, false},
      {"500\xC2\xB5s", 500, false},  // U+00B5 micro sign
      {"500\xCE\xBCs", 500, false},  // U+03BC Greek mu
      {"0s", 0, false},
      {"0", 0, false},
      {"+1s", kS, false},
      {".5s", 500'000, false},
      {"5.s", 5 * kS, false},
      {"0.000001s", 1, false},
      {"59.999999s", 59'999'999, false},
      {"1h0m0.000001s", 3600 * kS + 1, false},
      {"22s", 22 * kS, false},
      {"1ns", 1, false},                             // sub-µs rounds up
      {"1500ns", 2, false},                          // 1.5 µs rounds up
      {"10.689924287s", 10'689'925, false},          // ns precision rounds up
      {"1.0000000000000000000001s", kS + 1, false},  // beyond 18 fraction digits
      {"", std::nullopt, false},
      {"-1", std::nullopt, false},
      {"5", std::nullopt, true},  // missing unit
      {"-1s", std::nullopt, true},
      {"1x", std::nullopt, true},
      {"1d", std::nullopt, true},
      {"s", std::nullopt, true},
      {".s", std::nullopt, true},
      {"1s2", std::nullopt, true},
      {"1.2.3s", std::nullopt, true},
      {"1 s", std::nullopt, true},
      {"abc", std::nullopt, true},
      {"+", std::nullopt, true},
      {"9999999999h", std::nullopt, true},  // > 2^53 µs
      {"99999999999999999999999999h", std::nullopt, true},
  };
  for (const auto& c : cases) {
    const Parsed<Micros> p = dialect::parse_go_duration(c.in);
    EXPECT_EQ(p.value, c.us) << '"' << c.in << '"';
    EXPECT_EQ(p.malformed(), c.malformed) << '"' << c.in << '"';
  }
}

// Verifies decimal fractions never pick up floating-point error (every ms of 100 s).
TEST(AdaptDialect, DurationsAreExactForEveryMillisecond) {
  for (int ms = 0; ms < 100'000; ++ms) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%d.%03ds", ms / 1000, ms % 1000);
    ASSERT_EQ(dialect::parse_go_duration(buf).value, Micros{ms} * kMs) << buf;
    std::snprintf(buf, sizeof buf, "%d.%03d", ms / 1000, ms % 1000);
    ASSERT_EQ(dialect::parse_delta_seconds(buf).value, Micros{ms} * kMs) << buf;
  }
}

// Verifies delta seconds and milliseconds: ints, fractions, unknown markers and bad forms.
TEST(AdaptDialect, DeltaSecondsAndMillis) {
  EXPECT_EQ(dialect::parse_delta_seconds("30").value, 30 * kS);
  EXPECT_EQ(dialect::parse_delta_seconds("7.66").value, 7'660'000);
  EXPECT_EQ(dialect::parse_delta_seconds("33011.382867").value, 33'011'382'867);
  EXPECT_EQ(dialect::parse_delta_seconds("0").value, 0);
  EXPECT_EQ(dialect::parse_delta_seconds("0.0000001").value, 1);  // rounds up
  EXPECT_TRUE(dialect::parse_delta_seconds("").unknown());
  EXPECT_TRUE(dialect::parse_delta_seconds("-1").unknown());
  for (const char* bad : {"-3", "1e3", "inf", "nan", "3s", "1,5", ".", "+2", "0x10"}) {
    EXPECT_TRUE(dialect::parse_delta_seconds(bad).malformed()) << bad;
  }
  EXPECT_EQ(dialect::parse_delta_millis("5312").value, 5'312 * kMs);
  EXPECT_EQ(dialect::parse_delta_millis("12.5").value, 12'500);
  EXPECT_TRUE(dialect::parse_delta_millis("fast").malformed());
  EXPECT_TRUE(dialect::parse_delta_seconds("99999999999999").malformed());  // > 2^53 µs
}

struct TimeCase {
  const char* in;
  std::optional<Micros> us;
};

// Verifies RFC 3339 timestamps with fractions, offsets and validation of every field.
TEST(AdaptDialect, Rfc3339) {
  const Micros base = 1'755'780'059 * kS;  // 2025-08-21T12:40:59Z
  const std::vector<TimeCase> cases{
      {"2025-08-21T12:40:59Z", base},
      {"2025-08-21t12:40:59z", base},
      {"2025-08-21 12:40:59Z", base},
      {"2025-08-21T12:40:59.5Z", base + 500'000},
      {"2025-08-21T12:40:59.123456Z", base + 123'456},
      {"2025-08-21T12:40:59.1234561Z", base + 123'457},  // rounds up
      {"2025-08-21T14:40:59+02:00", base},
      {"2025-08-21T07:10:59-05:30", base},
      {"2025-08-21T12:40:59+00:00", base},
      {"2024-02-29T00:00:00Z", 1'709'164'800 * kS},
      {"1969-12-31T23:59:59Z", -kS},
      {"2025-13-01T00:00:00Z", std::nullopt},
      {"2025-02-29T00:00:00Z", std::nullopt},
      {"2025-04-31T00:00:00Z", std::nullopt},
      {"2025-08-21T24:00:00Z", std::nullopt},
      {"2025-08-21T12:60:00Z", std::nullopt},
      {"2025-08-21T12:40:59", std::nullopt},
      {"2025-08-21", std::nullopt},
      {"2025-08-21T12:40:59.Z", std::nullopt},
      {"2025-08-21T12:40:59Zjunk", std::nullopt},
      {"2025-08-21T12:40:59+2:00", std::nullopt},
      {"2025-08-21T12:40:59+24:00", std::nullopt},
      {"25-08-21T12:40:59Z", std::nullopt},
      {"9999-12-31T23:59:59Z", std::nullopt},  // beyond 2^53 µs
  };
  for (const auto& c : cases) {
    const auto p = dialect::parse_rfc3339(c.in);
    EXPECT_EQ(p.value, c.us) << c.in;
    EXPECT_EQ(p.malformed(), !c.us.has_value()) << c.in;
  }
}

// Verifies HTTP-dates: IMF-fixdate plus the obsolete RFC 850 and asctime forms.
TEST(AdaptDialect, HttpDate) {
  const Micros t = 1'445'412'480 * kS;  // 2015-10-21T07:28:00Z
  const std::vector<TimeCase> cases{
      {"Wed, 21 Oct 2015 07:28:00 GMT", t},
      {"  Wed, 21 Oct 2015 07:28:00 GMT ", t},
      {"wed, 21 oct 2015 07:28:00 gmt", t},
      {"Wednesday, 21-Oct-15 07:28:00 GMT", t},
      {"Wed Oct 21 07:28:00 2015", t},
      {"Sun Nov  6 08:49:37 1994", 784'111'777 * kS},
      {"Sun, 06 Nov 1994 08:49:37 GMT", 784'111'777 * kS},
      {"Wed, 21 Oct 2015 07:28:00 UTC", std::nullopt},
      {"Wed, 32 Oct 2015 07:28:00 GMT", std::nullopt},
      {"Wed, 21 Foo 2015 07:28:00 GMT", std::nullopt},
      {"Xyz, 21 Oct 2015 07:28:00 GMT", std::nullopt},
      {"Wed, 21 Oct 2015 07:28 GMT", std::nullopt},
      {"21 Oct 2015 07:28:00 GMT", std::nullopt},
      {"Wed, 21 Oct 2015 07:28:00 GMTx", std::nullopt},
  };
  for (const auto& c : cases) {
    const auto p = dialect::parse_http_date(c.in);
    EXPECT_EQ(p.value, c.us) << c.in;
    EXPECT_EQ(p.malformed(), !c.us.has_value()) << c.in;
  }
}

// Verifies the RFC 3339 edge cases exactly as the parser has always read them: a leap second
// (:60) is the next second, 'z' and +00:00 / -00:00 are UTC, any number of fraction digits
// rounds up to the µs, fixed field widths, calendar-checked days, nothing else accepted.
TEST(AdaptDialect, Rfc3339EdgeCases) {
  const Micros base = 1'755'780'059 * kS;  // 2025-08-21T12:40:59Z
  const Micros new_year_2017 = 1'483'228'800 * kS;
  const std::vector<TimeCase> cases{
      {"2016-12-31T23:59:60Z", new_year_2017},  // leap second: the next second
      {"2025-08-21T12:40:60Z", base + kS},      // :60 is read alike in any minute
      {"2016-12-31T23:59:60.5Z", new_year_2017 + 500'000},
      {"2025-08-21T12:40:61Z", std::nullopt},
      {"2025-08-21T12:40:59z", base},
      {"2025-08-21T12:40:59-00:00", base},
      {"2025-08-21T12:40:59+00:00", base},
      {"2025-08-22T12:39:59+23:59", base},
      {"2025-08-21T12:40:59+00:60", std::nullopt},
      {"2025-08-21T12:40:59+0200", std::nullopt},
      {"2025-08-21T12:40:59+02", std::nullopt},
      {"2025-08-21T12:40:59 +02:00", std::nullopt},
      {"2025-08-21T14:40:59.5+02:00", base + 500'000},
      {"2025-08-21T12:40:59.000000Z", base},
      {"2025-08-21T12:40:59.999999Z", base + 999'999},
      {"2025-08-21T12:40:59.9999991Z", base + kS},  // rounds up into the next second
      {"2025-08-21T12:40:59.0000001Z", base + 1},
      {"2025-08-21T12:40:59.00000000000000000001Z", base + 1},  // past 18 digits: still up
      {"2025-08-21T12:40:59.000000000000000000000Z", base},
      {"2025-08-21T12:40:59,5Z", std::nullopt},
      {"  2025-08-21T12:40:59Z\t", base},
      {"2000-02-29T00:00:00Z", 951'782'400 * kS},
      {"2024-02-30T00:00:00Z", std::nullopt},
      {"2100-02-29T00:00:00Z", std::nullopt},
      {"2025-00-10T00:00:00Z", std::nullopt},
      {"2025-08-00T00:00:00Z", std::nullopt},
      {"2025-08-21T23:59:59Z", base + (11 * 3600 + 19 * 60) * kS},
      {"2025-8-21T12:40:59Z", std::nullopt},
      {"2025-08-1T12:40:59Z", std::nullopt},
      {"2025-08-21T1:40:59Z", std::nullopt},
      {"2025-08-21T12:4:59Z", std::nullopt},
      {"2025-08-21T12:40:5Z", std::nullopt},
      {"2025-08-21T12:40Z", std::nullopt},
      {"02025-08-21T12:40:59Z", std::nullopt},
      {"+2025-08-21T12:40:59Z", std::nullopt},
      {"2025-08-21X12:40:59Z", std::nullopt},
      {"2025-08-21T12:40:59ZZ", std::nullopt},
      {"2025-08-21T12:40:59 Z", std::nullopt},
      {"2025-08-21T12:40:59UTC", std::nullopt},
      {"2255-01-01T00:00:00Z", 8'993'721'600 * kS},
      {"1700-01-01T00:00:00Z", -8'520'336'000 * kS},
      {"1600-01-01T00:00:00Z", std::nullopt},  // before -2^53 µs
      {"0000-01-01T00:00:00Z", std::nullopt},
      {"garbage", std::nullopt},
      {"2025-08-21T12:40:59\xffZ", std::nullopt},
  };
  for (const auto& c : cases) {
    const auto p = dialect::parse_rfc3339(c.in);
    EXPECT_EQ(p.value, c.us) << c.in;
    EXPECT_EQ(p.malformed(), !c.us.has_value()) << c.in;
  }
}

// Verifies the HTTP-date edge cases exactly as the parser has always read them: names in any
// case, the weekday not checked against the date, fixed widths per form, RFC 850's two-digit
// year (< 70: 20xx), a leap second, calendar-checked days, nothing else accepted.
TEST(AdaptDialect, HttpDateEdgeCases) {
  const Micros t = 1'445'412'480 * kS;  // 2015-10-21T07:28:00Z
  const std::vector<TimeCase> cases{
      {"Thu, 21 Oct 2015 07:28:00 GMT", t},  // wrong weekday: not checked
      {"WED, 21 OCT 2015 07:28:00 GmT", t},
      {"Sat, 31 Dec 2016 23:59:60 GMT", 1'483'228'800 * kS},  // leap second: the next second
      {"Sat, 31 Dec 2016 23:59:61 GMT", std::nullopt},
      {"Mon, 29 Feb 2016 00:00:00 GMT", 1'456'704'000 * kS},
      {"Sun, 29 Feb 2015 00:00:00 GMT", std::nullopt},
      {"Tue, 30 Feb 2016 00:00:00 GMT", std::nullopt},
      {"Wed, 00 Oct 2015 07:28:00 GMT", std::nullopt},
      {"Wed, 21 Oct 2015 24:00:00 GMT", std::nullopt},
      {"Wed, 21 Oct 2015 07:60:00 GMT", std::nullopt},
      {"Wed, 1 Oct 2015 07:28:00 GMT", std::nullopt},
      {"Wed, 21 October 2015 07:28:00 GMT", std::nullopt},
      {"Wednesday, 21 Oct 2015 07:28:00 GMT", std::nullopt},
      {"Wed, 21 Oct 15 07:28:00 GMT", std::nullopt},
      {"Wed, 21 Oct 2015 7:28:00 GMT", std::nullopt},
      {"Wed,21 Oct 2015 07:28:00 GMT", std::nullopt},
      {"Wed,  21 Oct 2015 07:28:00 GMT", std::nullopt},
      {"Wed, 21 Oct 2015 07:28:00  GMT", std::nullopt},
      {"Wed, 21 Oct 2015 07:28:00 +0000", std::nullopt},
      {"Wed, 21 Oct 2015 07:28:00", std::nullopt},
      {"Wed, 21 Oct 0000 07:28:00 GMT", std::nullopt},           // out of range
      {"Thursday, 06-Nov-69 08:49:37 GMT", 3'150'953'377 * kS},  // < 70: 2069
      {"Friday, 06-Nov-70 08:49:37 GMT", 26'729'377 * kS},       // >= 70: 1970
      {"wednesday, 21-oct-15 07:28:00 gmt", t},
      {"Wed, 21-Oct-15 07:28:00 GMT", std::nullopt},
      {"Wednesday, 21-Oct-2015 07:28:00 GMT", std::nullopt},
      {"Wednesday, 21 Oct 15 07:28:00 GMT", std::nullopt},
      {"Wednesday, 31-Feb-15 07:28:00 GMT", std::nullopt},
      {"Sun Nov 06 08:49:37 1994", 784'111'777 * kS},
      {"sun nov  6 08:49:37 1994", 784'111'777 * kS},
      {"Sun Nov 6 08:49:37 1994", std::nullopt},
      {"Sun Nov   6 08:49:37 1994", std::nullopt},
      {"Sun Nov  6 08:49:37 94", std::nullopt},
      {"Sun Nov  6 08:49:37 1994 GMT", std::nullopt},
      {"Sunday Nov  6 08:49:37 1994", std::nullopt},
      {"Sun Feb 30 08:49:37 1994", std::nullopt},
      {"Wed", std::nullopt},
      {"Wed, ", std::nullopt},
      {"garbage", std::nullopt},
  };
  for (const auto& c : cases) {
    const auto p = dialect::parse_http_date(c.in);
    EXPECT_EQ(p.value, c.us) << c.in;
    EXPECT_EQ(p.malformed(), !c.us.has_value()) << c.in;
  }
}

// Verifies the epoch heuristic: > 1e11 is ms, > 1e9 is s, else delta seconds; past is 0.
TEST(AdaptDialect, EpochSecondsVersusMillis) {
  const std::vector<TimeCase> cases{
      {"1700000030", 30 * kS},        // epoch seconds
      {"1700000030000", 30 * kS},     // epoch milliseconds
      {"1700000000500", 500 * kMs},   // epoch milliseconds, sub-second
      {"1700000030.25", 30'250'000},  // fractional epoch seconds
      {"30", 30 * kS},                // delta seconds
      {"30.5", 30'500'000},
      {"0", 0},
      {"1000000000", 1'000'000'000 * kS},  // exactly 1e9: still a delta
      {"1000000001", 0},                   // epoch seconds in the past
      {"1699999999", 0},
      {"100000000001", 0},  // > 1e11: epoch ms (1973), in the past
  };
  for (const auto& c : cases) {
    const auto p = dialect::parse_epoch_or_delta(c.in, kT0);
    EXPECT_EQ(p.value, c.us) << c.in;
    EXPECT_FALSE(p.malformed()) << c.in;
  }
  EXPECT_TRUE(dialect::parse_epoch_or_delta("100000000000", kT0).malformed());  // 1e11 s epoch
  EXPECT_TRUE(dialect::parse_epoch_or_delta("-5", kT0).malformed());
  EXPECT_TRUE(dialect::parse_epoch_or_delta("12s", kT0).malformed());
  EXPECT_TRUE(dialect::parse_epoch_or_delta("-1", kT0).unknown());
}

// Verifies parse_reset picks the dialect from the value's shape.
TEST(AdaptDialect, ResetDetectsDialect) {
  const Micros now = 1'755'780'059 * kS;  // 2025-08-21T12:40:59Z
  const std::vector<TimeCase> cases{
      {"6m0s", 360 * kS},
      {"2025-08-21T12:41:17Z", 18 * kS},
      {"2025-08-21T12:40:00Z", 0},  // past
      {"Thu, 21 Aug 2025 12:41:09 GMT", 10 * kS},
      {"1755780119", 60 * kS},
      {"1755780119000", 60 * kS},
      {"3", 3 * kS},
      {"45.5", 45'500'000},
      {"0", 0},
  };
  for (const auto& c : cases) {
    EXPECT_EQ(dialect::parse_reset(c.in, now).value, c.us) << c.in;
  }
  EXPECT_TRUE(dialect::parse_reset("", now).unknown());
  EXPECT_TRUE(dialect::parse_reset("-1", now).unknown());
  for (const char* bad : {"soon", "6x", "-3s", "2025-13-01T00:00:00Z", "12:00", "1.2.3"}) {
    EXPECT_TRUE(dialect::parse_reset(bad, now).malformed()) << bad;
  }
}

// Verifies retry-after accepts int/float seconds and HTTP-dates, relative to now.
TEST(AdaptDialect, RetryAfter) {
  const Micros now = 1'445'412'480 * kS;  // Wed, 21 Oct 2015 07:28:00 GMT
  EXPECT_EQ(dialect::parse_retry_after("2", now).value, 2 * kS);
  EXPECT_EQ(dialect::parse_retry_after("1.5", now).value, 1'500'000);
  EXPECT_EQ(dialect::parse_retry_after("0", now).value, 0);
  EXPECT_EQ(dialect::parse_retry_after("Wed, 21 Oct 2015 07:28:30 GMT", now).value, 30 * kS);
  EXPECT_EQ(dialect::parse_retry_after("Wed, 21 Oct 2015 07:00:00 GMT", now).value, 0);
  EXPECT_TRUE(dialect::parse_retry_after("", now).unknown());
  for (const char* bad : {"-5", "soon", "2s", "Wed, 21 Oct 2015", "1e2"}) {
    EXPECT_TRUE(dialect::parse_retry_after(bad, now).malformed()) << bad;
  }
}

// ---- parse_response: headers ----

// Verifies retry-after-ms takes precedence over retry-after when both are valid.
TEST(AdaptResponse, RetryAfterMsWinsOverRetryAfter) {
  const Headers h{{"retry-after", "6"}, {"retry-after-ms", "5312"}};
  const Observation o = parse_response(Provider::openai, h, 429, "", kT0);
  EXPECT_EQ(o.retry_after, 5'312 * kMs);
  EXPECT_TRUE(o.rate_limited);
  EXPECT_TRUE(o.warnings.empty()) << joined(o.warnings);

  // A malformed retry-after-ms is reported and retry-after is used instead.
  const Headers bad{{"retry-after", "6"}, {"retry-after-ms", "soon"}};
  const Observation b = parse_response(Provider::azure_openai, bad, 429, "", kT0);
  EXPECT_EQ(b.retry_after, 6 * kS);
  ASSERT_EQ(b.warnings.size(), 1u);
  EXPECT_NE(b.warnings[0].find("retry-after-ms"), std::string::npos);
  EXPECT_NE(b.warnings[0].find("\"soon\""), std::string::npos);

  // retry-after as an HTTP-date.
  const Headers date{{"Retry-After", "Tue, 14 Nov 2023 22:13:50 GMT"}};
  EXPECT_EQ(parse_response(Provider::anthropic, date, 429, "", kT0).retry_after, 30 * kS);
}

// Verifies header names match whatever their case.
TEST(AdaptResponse, HeaderNamesAreCaseInsensitive) {
  const Headers h{{"X-RateLimit-Limit-Requests", "60"},
                  {"X-RATELIMIT-REMAINING-REQUESTS", "59"},
                  {"x-RateLimit-reset-REQUESTS", "1s"},
                  {"RETRY-AFTER", "3"}};
  const Observation o = parse_response(Provider::openai, h, 200, "", kT0);
  EXPECT_EQ(o.requests.limit, 60);
  EXPECT_EQ(o.requests.remaining, 59);
  EXPECT_EQ(o.requests.reset_after, kS);
  EXPECT_EQ(o.retry_after, 3 * kS);
  EXPECT_FALSE(o.rate_limited);
}

struct WindowCase {
  Provider provider;
  Micros requests_window;
  Micros tokens_window;
};

// Verifies the same OpenAI-style header names get each provider's window convention.
TEST(AdaptResponse, WindowsFollowProviderConventions) {
  const Headers h{{"x-ratelimit-limit-requests", "14400"},
                  {"x-ratelimit-remaining-requests", "14370"},
                  {"x-ratelimit-limit-tokens", "18000"},
                  {"x-ratelimit-remaining-tokens", "17997"}};
  const std::vector<WindowCase> cases{
      {Provider::openai, kMicrosPerMinute, kMicrosPerMinute},
      {Provider::azure_openai, kMicrosPerMinute, kMicrosPerMinute},
      {Provider::groq, kMicrosPerDay, kMicrosPerMinute},  // Groq: requests per DAY
      {Provider::generic, 0, 0},                          // unknown
  };
  for (const auto& c : cases) {
    const Observation o = parse_response(c.provider, h, 200, "", kT0);
    EXPECT_EQ(o.requests.limit, 14400) << to_string(c.provider);
    EXPECT_EQ(o.requests.window, c.requests_window) << to_string(c.provider);
    EXPECT_EQ(o.tokens.window, c.tokens_window) << to_string(c.provider);
  }
  // Together: both budgets per second.
  const Headers t{{"x-ratelimit-limit", "10"}, {"x-tokenlimit-limit", "3000"}};
  const Observation o = parse_response(Provider::together, t, 200, "", kT0);
  EXPECT_EQ(o.requests.window, kMicrosPerSecond);
  EXPECT_EQ(o.tokens.window, kMicrosPerSecond);
  // Gemini sends no rate-limit headers: OpenAI names are not read.
  EXPECT_FALSE(parse_response(Provider::gemini, h, 200, "", kT0).requests.has_data());
}

// Verifies -1, a 0 limit, blank and missing values are unknown without warnings, while a
// remaining of 0 is a real value.
TEST(AdaptResponse, UnknownMarkers) {
  const Headers h{{"x-ratelimit-limit-requests", "0"},  {"x-ratelimit-remaining-requests", "0"},
                  {"x-ratelimit-reset-requests", "-1"}, {"x-ratelimit-limit-tokens", "-1"},
                  {"x-ratelimit-remaining-tokens", ""}, {"x-ratelimit-reset-tokens", "  "}};
  const Observation o = parse_response(Provider::openai, h, 200, "", kT0);
  EXPECT_EQ(o.requests.limit, std::nullopt);
  EXPECT_EQ(o.requests.remaining, 0);
  EXPECT_EQ(o.requests.reset_after, std::nullopt);
  EXPECT_EQ(o.requests.window, kMicrosPerMinute);
  EXPECT_FALSE(o.tokens.has_data());
  EXPECT_EQ(o.tokens.window, 0);  // nothing known, no window claimed
  EXPECT_TRUE(o.warnings.empty()) << joined(o.warnings);

  const Observation none = parse_response(Provider::anthropic, Headers{}, 200, "", kT0);
  EXPECT_FALSE(none.requests.has_data());
  EXPECT_FALSE(none.input_tokens.has_data());
  EXPECT_EQ(none.retry_after, std::nullopt);
  EXPECT_TRUE(none.warnings.empty());
  EXPECT_TRUE(none.extra.empty());
}

struct MalformedCase {
  Provider provider;
  const char* header;
  const char* value;
};

// Verifies each kind of malformed value yields exactly one warning (naming header and value)
// and no value.
TEST(AdaptResponse, MalformedValuesWarnAndAreDropped) {
  const std::vector<MalformedCase> cases{
      {Provider::openai, "x-ratelimit-limit-requests", "abc"},
      {Provider::openai, "x-ratelimit-limit-requests", "12abc"},
      {Provider::openai, "x-ratelimit-limit-requests", "-5"},
      {Provider::openai, "x-ratelimit-limit-requests", "1.5"},
      {Provider::openai, "x-ratelimit-limit-requests", "99999999999999999999"},
      {Provider::openai, "x-ratelimit-remaining-tokens", "+3"},
      {Provider::openai, "x-ratelimit-reset-requests", "6x"},
      {Provider::openai, "x-ratelimit-reset-requests", "-3s"},
      {Provider::openai, "x-ratelimit-reset-tokens", "5"},  // bare number: 5 s delta (valid)
      {Provider::anthropic, "anthropic-ratelimit-tokens-reset", "2025-13-01T00:00:00Z"},
      {Provider::anthropic, "anthropic-ratelimit-requests-reset", "Wed, 32 Oct 2015 07:28:00 GMT"},
      {Provider::anthropic, "retry-after", "soon"},
      {Provider::azure_openai, "retry-after-ms", "fast"},
      {Provider::groq, "retry-after", "-2"},
      {Provider::mistral, "ratelimitbysize-limit", "5e5"},
      {Provider::cerebras, "x-ratelimit-reset-tokens-minute", "30.2.1"},
      {Provider::openrouter, "x-ratelimit-reset", "tomorrow"},
      {Provider::together, "x-tokenlimit-remaining", "lots"},
      {Provider::generic, "ratelimit-remaining", "1,000"},
  };
  for (const auto& c : cases) {
    const Headers h{{c.header, c.value}};
    const Observation o = parse_response(c.provider, h, 429, "", kT0);
    const std::string what = std::string(to_string(c.provider)) + " " + c.header + "=" + c.value;
    if (std::string_view(c.value) == "5") {  // control: a valid bare number
      EXPECT_TRUE(o.warnings.empty()) << what;
      EXPECT_EQ(o.tokens.reset_after, 5 * kS) << what;
      continue;
    }
    ASSERT_EQ(o.warnings.size(), 1u) << what << "\n" << joined(o.warnings);
    EXPECT_NE(o.warnings[0].find(c.header), std::string::npos) << o.warnings[0];
    EXPECT_NE(o.warnings[0].find(std::string("\"") + c.value + "\""), std::string::npos)
        << o.warnings[0];
    for (const LimitObservation* l : {&o.requests, &o.tokens, &o.input_tokens, &o.output_tokens}) {
      EXPECT_FALSE(l->has_data()) << what;
    }
    EXPECT_TRUE(o.extra.empty()) << what;
    EXPECT_EQ(o.retry_after, std::nullopt) << what;
  }
}

// Verifies warnings escape control bytes and truncate long values.
TEST(AdaptResponse, WarningsAreSanitized) {
  const std::string long_value(200, 'x');
  const Headers h{{"x-ratelimit-limit-requests", std::string_view("1\n\x01\"2", 5)},
                  {"x-ratelimit-limit-tokens", long_value}};
  const Observation o = parse_response(Provider::openai, h, 200, "", kT0);
  ASSERT_EQ(o.warnings.size(), 2u) << joined(o.warnings);
  EXPECT_NE(o.warnings[0].find(R"("1\x0a\x01\x222")"), std::string::npos) << o.warnings[0];
  EXPECT_EQ(o.warnings[0].find('\n'), std::string::npos);
  EXPECT_NE(o.warnings[1].find("\"..."), std::string::npos);  // truncation mark
  EXPECT_LT(o.warnings[1].size(), 150u);
}

// Verifies the generic provider: OpenAI names first, then IETF RateLimit-* (window from the
// policy), then bare X-RateLimit-*.
TEST(AdaptResponse, GenericFamilies) {
  const Headers openai{{"x-ratelimit-limit-requests", "100"}, {"ratelimit-limit", "5"}};
  EXPECT_EQ(parse_response(Provider::generic, openai, 200, "", kT0).requests.limit, 100);

  const Headers policy{{"RateLimit-Limit", "100"},
                       {"RateLimit-Remaining", "7"},
                       {"RateLimit-Reset", "12"},
                       {"RateLimit-Policy", "100;w=3600"}};
  const Observation p = parse_response(Provider::generic, policy, 200, "", kT0);
  EXPECT_EQ(p.requests.limit, 100);
  EXPECT_EQ(p.requests.remaining, 7);
  EXPECT_EQ(p.requests.reset_after, 12 * kS);
  EXPECT_EQ(p.requests.window, kMicrosPerHour);

  const Headers plain{{"X-RateLimit-Limit", "5000"},
                      {"X-RateLimit-Remaining", "4990"},
                      {"X-RateLimit-Reset", "1700000060"}};
  const Observation g = parse_response(Provider::generic, plain, 200, "", kT0);
  EXPECT_EQ(g.requests.limit, 5000);
  EXPECT_EQ(g.requests.reset_after, 60 * kS);
  EXPECT_EQ(g.requests.window, 0);
  EXPECT_TRUE(g.warnings.empty()) << joined(g.warnings);
}

// ---- parse_response: bodies ----

// Verifies Gemini QuotaFailure violations fill limit + window by quotaId, extras keep the rest,
// and RetryInfo sets retry_after.
TEST(AdaptResponse, GeminiQuotaViolations) {
  const std::string body = R"({"error":{"code":429,"status":"RESOURCE_EXHAUSTED","details":[
    {"@type":"type.googleapis.com/google.rpc.QuotaFailure","violations":[
      {"quotaId":"GenerateRequestsPerMinutePerProjectPerModel-FreeTier","quotaValue":"10"},
      {"quotaId":"GenerateRequestsPerDayPerProjectPerModel-FreeTier","quotaValue":"250"},
      {"quotaId":"GenerateContentInputTokensPerModelPerMinute-FreeTier","quotaValue":250000},
      {"quotaId":"GenerateContentOutputTokensPerModelPerDay","quotaValue":"0"},
      {"quotaId":"SomethingElse","quotaValue":"5"}]},
    {"@type":"type.googleapis.com/google.rpc.RetryInfo","retryDelay":"1.5s"}]}})";
  const Observation o = parse_response(Provider::gemini, Headers{}, 429, body, kT0);
  EXPECT_TRUE(o.rate_limited);
  EXPECT_EQ(o.retry_after, 1'500'000);
  EXPECT_EQ(o.requests.limit, 10);
  EXPECT_EQ(o.requests.window, kMicrosPerMinute);
  EXPECT_EQ(o.requests.remaining, std::nullopt);
  ASSERT_EQ(o.extra.size(), 1u);
  EXPECT_EQ(o.extra[0].name, "GenerateRequestsPerDayPerProjectPerModel-FreeTier");
  EXPECT_EQ(o.extra[0].limit.limit, 250);
  EXPECT_EQ(o.extra[0].limit.window, kMicrosPerDay);
  EXPECT_EQ(o.input_tokens.limit, 250000);
  EXPECT_EQ(o.input_tokens.window, kMicrosPerMinute);
  EXPECT_FALSE(o.output_tokens.has_data());  // quotaValue "0": unknown
  EXPECT_TRUE(o.warnings.empty()) << joined(o.warnings);
}

// Verifies malformed Gemini values and JSON produce warnings, never throws.
TEST(AdaptResponse, GeminiMalformedBodies) {
  const std::string bad_values = R"({"error":{"status":"RESOURCE_EXHAUSTED","details":[
    {"@type":"type.googleapis.com/google.rpc.RetryInfo","retryDelay":"soon"},
    {"@type":"type.googleapis.com/google.rpc.QuotaFailure","violations":[
      {"quotaId":"GenerateRequestsPerDayPerProjectPerModel-FreeTier","quotaValue":"2.5e2"},
      {"quotaId":"GenerateRequestsPerMinutePerProjectPerModel","quotaValue":-4}]}]}})";
  const Observation o = parse_response(Provider::gemini, Headers{}, 429, bad_values, kT0);
  EXPECT_TRUE(o.rate_limited);
  EXPECT_EQ(o.retry_after, std::nullopt);
  EXPECT_FALSE(o.requests.has_data());
  ASSERT_EQ(o.warnings.size(), 3u) << joined(o.warnings);
  EXPECT_NE(o.warnings[0].find("retryDelay"), std::string::npos);
  EXPECT_NE(o.warnings[1].find("\"2.5e2\""), std::string::npos);

  for (const char* body :
       {"{\"error\":", "<html>429 Too Many Requests</html>", "[1,2", "\xff\xfe"}) {
    const Observation m = parse_response(Provider::gemini, Headers{}, 429, body, kT0);
    EXPECT_TRUE(m.rate_limited) << body;
    ASSERT_EQ(m.warnings.size(), 1u) << body;
    EXPECT_NE(m.warnings[0].find("malformed JSON"), std::string::npos);
  }
  // Deeply nested JSON is rejected by the depth limit, not by the stack.
  const std::string deep = std::string(100'000, '[') + std::string(100'000, ']');
  EXPECT_EQ(parse_response(Provider::gemini, Headers{}, 429, deep, kT0).warnings.size(), 1u);
  // Valid JSON that is not an error envelope is not a warning.
  EXPECT_TRUE(parse_response(Provider::gemini, Headers{}, 429, "[]", kT0).warnings.empty());
  EXPECT_TRUE(
      parse_response(Provider::gemini, Headers{}, 429, "{\"error\":\"x\"}", kT0).warnings.empty());
}

// Verifies Gemini's array-wrapped error envelope (streaming endpoints) is understood, and a
// RESOURCE_EXHAUSTED status marks rate_limited even without a 429.
TEST(AdaptResponse, GeminiArrayEnvelope) {
  const std::string body = R"([{"error":{"code":429,"status":"RESOURCE_EXHAUSTED","details":[
    {"@type":"type.googleapis.com/google.rpc.RetryInfo","retryDelay":"22s"}]}}])";
  const Observation o = parse_response(Provider::gemini, Headers{}, 400, body, kT0);
  EXPECT_TRUE(o.rate_limited);
  EXPECT_EQ(o.retry_after, 22 * kS);
}

// Verifies bodies are read only for error statuses.
TEST(AdaptResponse, BodyReadOnlyOnErrors) {
  const Observation ok = parse_response(Provider::openai, Headers{}, 200, "data: {not json", kT0);
  EXPECT_TRUE(ok.warnings.empty());
  EXPECT_FALSE(ok.rate_limited);
  const Observation err = parse_response(Provider::openai, Headers{}, 500, "<html/>", kT0);
  EXPECT_EQ(err.warnings.size(), 1u);
  EXPECT_FALSE(err.rate_limited);
  EXPECT_TRUE(parse_response(Provider::openai, Headers{}, 503, " \n ", kT0).warnings.empty());
}

// Verifies the error-message retry hint is a last resort and understands the usual phrasings.
TEST(AdaptResponse, RetryHintFromMessage) {
  const auto hint = [](const std::string& msg) {
    const std::string body = R"({"error":{"message":")" + msg + R"("}})";
    return parse_response(Provider::openai, Headers{}, 429, body, kT0).retry_after;
  };
  EXPECT_EQ(hint("Rate limit reached. Please try again in 6s. Visit x."), 6 * kS);
  EXPECT_EQ(hint("Please try again in 2m59.56s."), 179'560'000);
  EXPECT_EQ(hint("Please try again in 20ms."), 20 * kMs);
  EXPECT_EQ(hint("Please retry in 10.689924287s."), 10'689'925);
  EXPECT_EQ(hint("Please retry after 6 seconds. Please go here"), 6 * kS);
  EXPECT_EQ(hint("Please retry after 1 second."), kS);
  EXPECT_EQ(hint("Please retry after 250 milliseconds."), 250 * kMs);
  EXPECT_EQ(hint("Please try again later."), std::nullopt);
  EXPECT_EQ(hint("retry after 6 apples"), std::nullopt);

  // A header always wins over the message.
  const Headers h{{"retry-after", "1"}};
  const std::string body = R"({"error":{"message":"Please try again in 6s."}})";
  EXPECT_EQ(parse_response(Provider::groq, h, 429, body, kT0).retry_after, kS);
}

// ---- fixtures (real captured/documented responses) ----

// Verifies OpenAI's documented example: per-minute windows, Go-duration resets.
TEST(AdaptFixtures, OpenAiDocsExample) {
  const Observation o = parse_fixture_as(Provider::openai, "openai/docs_example_200.http");
  EXPECT_EQ(o.requests.limit, 60);
  EXPECT_EQ(o.requests.remaining, 59);
  EXPECT_EQ(o.requests.reset_after, kS);
  EXPECT_EQ(o.requests.window, kMicrosPerMinute);
  EXPECT_EQ(o.tokens.limit, 150000);
  EXPECT_EQ(o.tokens.remaining, 149984);
  EXPECT_EQ(o.tokens.reset_after, 6 * kMicrosPerMinute);
  EXPECT_EQ(o.tokens.window, kMicrosPerMinute);
  EXPECT_FALSE(o.rate_limited);
  EXPECT_FALSE(o.quota_exhausted);
  EXPECT_EQ(o.retry_after, std::nullopt);
  EXPECT_TRUE(o.warnings.empty()) << joined(o.warnings);
}

// Verifies the *_usage_based variants are ignored and ms resets parse.
TEST(AdaptFixtures, OpenAiUsageBasedVariantsIgnored) {
  const Observation o = parse_fixture_as(Provider::openai, "openai/usage_based_200.http");
  EXPECT_EQ(o.requests.limit, 5000);
  EXPECT_EQ(o.requests.remaining, 4999);
  EXPECT_EQ(o.requests.reset_after, 12 * kMs);
  EXPECT_EQ(o.tokens.limit, 160000);
  EXPECT_EQ(o.tokens.remaining, 159976);
  EXPECT_EQ(o.tokens.reset_after, 9 * kMs);
  EXPECT_TRUE(o.extra.empty());
  EXPECT_TRUE(o.warnings.empty()) << joined(o.warnings);
}

// Verifies insufficient_quota is flagged as billing exhaustion, not a timed wait.
TEST(AdaptFixtures, OpenAiInsufficientQuota) {
  const Observation o = parse_fixture_as(Provider::openai, "openai/insufficient_quota_429.http");
  EXPECT_TRUE(o.rate_limited);
  EXPECT_TRUE(o.quota_exhausted);
  EXPECT_EQ(o.retry_after, std::nullopt);
  EXPECT_TRUE(o.warnings.empty()) << joined(o.warnings);
}

// Verifies Azure's -1 placeholders are unknown and remaining-only 429s with retry-after-ms.
TEST(AdaptFixtures, AzureOpenAi) {
  const Observation u =
      parse_fixture_as(Provider::azure_openai, "azure_openai/responses_api_unknown_200.http");
  EXPECT_EQ(u.tokens.limit, std::nullopt);
  EXPECT_EQ(u.tokens.remaining, std::nullopt);
  EXPECT_EQ(u.tokens.reset_after, 0);
  EXPECT_TRUE(u.warnings.empty()) << joined(u.warnings);

  const Observation o =
      parse_fixture_as(Provider::azure_openai, "azure_openai/token_limit_429.http");
  EXPECT_TRUE(o.rate_limited);
  EXPECT_EQ(o.requests.limit, std::nullopt);
  EXPECT_EQ(o.requests.remaining, 119);
  EXPECT_EQ(o.tokens.remaining, 0);
  EXPECT_EQ(o.tokens.window, kMicrosPerMinute);
  EXPECT_EQ(o.retry_after, 5'312 * kMs);  // retry-after-ms beats retry-after and the message
  EXPECT_TRUE(o.warnings.empty()) << joined(o.warnings);
}

// Verifies Anthropic's four limits including input/output tokens, RFC 3339 resets.
TEST(AdaptFixtures, AnthropicInputOutputTokens) {
  const Observation o = parse_fixture_as(Provider::anthropic, "anthropic/messages_200.http");
  EXPECT_EQ(o.requests.limit, 1000);
  EXPECT_EQ(o.requests.remaining, 999);
  EXPECT_EQ(o.tokens.limit, 96000);
  EXPECT_EQ(o.input_tokens.limit, 80000);
  EXPECT_EQ(o.input_tokens.remaining, 80000);
  EXPECT_EQ(o.output_tokens.limit, 16000);
  EXPECT_EQ(o.output_tokens.remaining, 16000);
  for (const LimitObservation* l : {&o.requests, &o.tokens, &o.input_tokens, &o.output_tokens}) {
    EXPECT_EQ(l->reset_after, 0);  // resets at or before the response's Date
    EXPECT_EQ(l->window, kMicrosPerMinute);
  }
  EXPECT_TRUE(o.warnings.empty()) << joined(o.warnings);

  const Observation r = parse_fixture_as(Provider::anthropic, "anthropic/rate_limit_429.http");
  EXPECT_TRUE(r.rate_limited);
  EXPECT_EQ(r.requests.remaining, 0);
  EXPECT_EQ(r.requests.reset_after, 17 * kS);
  EXPECT_EQ(r.input_tokens.limit, 30000);
  EXPECT_EQ(r.input_tokens.reset_after, 500 * kMs);
  EXPECT_EQ(r.retry_after, 17 * kS);
  EXPECT_TRUE(r.warnings.empty()) << joined(r.warnings);
}

// Verifies the Gemini free-tier body: RESOURCE_EXHAUSTED, retryDelay, per-day request quota.
TEST(AdaptFixtures, GeminiBody) {
  const Observation o = parse_fixture_as(Provider::gemini, "gemini/free_tier_per_day_429.http");
  EXPECT_TRUE(o.rate_limited);
  EXPECT_FALSE(o.quota_exhausted);
  EXPECT_EQ(o.retry_after, 22 * kS);
  EXPECT_EQ(o.requests.limit, 250);
  EXPECT_EQ(o.requests.window, kMicrosPerDay);
  EXPECT_TRUE(o.warnings.empty()) << joined(o.warnings);

  const Observation m = parse_fixture_as(Provider::gemini, "gemini/free_tier_multi_429.http");
  EXPECT_TRUE(m.rate_limited);
  EXPECT_EQ(m.retry_after, 10 * kS);    // RetryInfo beats "Please retry in 10.689924287s"
  EXPECT_FALSE(m.requests.has_data());  // no quotaValue: nothing to fill
  EXPECT_TRUE(m.warnings.empty()) << joined(m.warnings);
}

// Verifies Groq: requests per day, tokens per minute, Go-duration resets, retry-after.
TEST(AdaptFixtures, GroqRequestsPerDay) {
  const Observation o = parse_fixture_as(Provider::groq, "groq/docs_example_429.http");
  EXPECT_EQ(o.requests.limit, 14400);
  EXPECT_EQ(o.requests.remaining, 14370);
  EXPECT_EQ(o.requests.reset_after, 179'560'000);
  EXPECT_EQ(o.requests.window, kMicrosPerDay);
  EXPECT_EQ(o.tokens.limit, 18000);
  EXPECT_EQ(o.tokens.remaining, 17997);
  EXPECT_EQ(o.tokens.reset_after, 7'660'000);
  EXPECT_EQ(o.tokens.window, kMicrosPerMinute);
  EXPECT_EQ(o.retry_after, 2 * kS);
  EXPECT_TRUE(o.rate_limited);
  EXPECT_TRUE(o.warnings.empty()) << joined(o.warnings);
}

// Verifies Mistral's size-based headers map to tokens per minute plus a monthly extra.
TEST(AdaptFixtures, MistralBySize) {
  const Observation o = parse_fixture_as(Provider::mistral, "mistral/chat_200.http");
  EXPECT_FALSE(o.requests.has_data());
  EXPECT_EQ(o.tokens.limit, 500000);
  EXPECT_EQ(o.tokens.remaining, 468000);
  EXPECT_EQ(o.tokens.reset_after, 3 * kS);
  EXPECT_EQ(o.tokens.window, kMicrosPerMinute);
  ASSERT_EQ(o.extra.size(), 1u);
  EXPECT_EQ(o.extra[0].name, "tokens_month");
  EXPECT_EQ(o.extra[0].limit.limit, 1'000'000'000);
  EXPECT_EQ(o.extra[0].limit.remaining, 997'912'692);
  EXPECT_EQ(o.extra[0].limit.window, 0);
  EXPECT_TRUE(o.warnings.empty()) << joined(o.warnings);
}

// Verifies Together's per-second request and token budgets.
TEST(AdaptFixtures, TogetherPerSecond) {
  const Observation o = parse_fixture_as(Provider::together, "together/chat_200.http");
  EXPECT_EQ(o.requests.limit, 10);
  EXPECT_EQ(o.requests.remaining, 9);
  EXPECT_EQ(o.requests.reset_after, kS);
  EXPECT_EQ(o.requests.window, kMicrosPerSecond);
  EXPECT_EQ(o.tokens.limit, 3000);
  EXPECT_EQ(o.tokens.remaining, 2859);
  EXPECT_EQ(o.tokens.window, kMicrosPerSecond);
  EXPECT_TRUE(o.warnings.empty()) << joined(o.warnings);
}

// Verifies OpenRouter epoch-ms resets, and the 429 body's metadata headers and per-day window.
TEST(AdaptFixtures, OpenRouter) {
  const Observation h = parse_fixture_as(Provider::openrouter, "openrouter/headers_200.http");
  EXPECT_EQ(h.requests.limit, 20);
  EXPECT_EQ(h.requests.remaining, 19);
  EXPECT_EQ(h.requests.reset_after, 60 * kS);
  EXPECT_EQ(h.requests.window, 0);
  EXPECT_TRUE(h.warnings.empty()) << joined(h.warnings);

  const Observation o =
      parse_fixture_as(Provider::openrouter, "openrouter/free_models_per_day_429.http");
  EXPECT_TRUE(o.rate_limited);
  EXPECT_EQ(o.requests.limit, 50);
  EXPECT_EQ(o.requests.remaining, 0);
  EXPECT_EQ(o.requests.reset_after, 6 * kMicrosPerHour);
  EXPECT_EQ(o.requests.window, kMicrosPerDay);
  EXPECT_TRUE(o.warnings.empty()) << joined(o.warnings);
}

// Verifies Cerebras: requests per day and tokens per minute; per-minute requests go to extra.
TEST(AdaptFixtures, CerebrasDayAndMinute) {
  const Observation o = parse_fixture_as(Provider::cerebras, "cerebras/chat_200.http");
  EXPECT_EQ(o.requests.limit, 10000);
  EXPECT_EQ(o.requests.remaining, 9500);
  EXPECT_EQ(o.requests.reset_after, 33'011'382'867);
  EXPECT_EQ(o.requests.window, kMicrosPerDay);
  EXPECT_EQ(o.tokens.limit, 200000);
  EXPECT_EQ(o.tokens.remaining, 195000);
  EXPECT_EQ(o.tokens.reset_after, 30'200'000);
  EXPECT_EQ(o.tokens.window, kMicrosPerMinute);
  ASSERT_EQ(o.extra.size(), 1u);
  EXPECT_EQ(o.extra[0].name, "requests_minute");
  EXPECT_EQ(o.extra[0].limit.limit, 120);
  EXPECT_EQ(o.extra[0].limit.remaining, 115);
  EXPECT_EQ(o.extra[0].limit.reset_after, 45'500'000);
  EXPECT_EQ(o.extra[0].limit.window, kMicrosPerMinute);
  EXPECT_TRUE(o.warnings.empty()) << joined(o.warnings);

  // Only per-minute request headers: they take the main slot.
  const Headers m{{"x-ratelimit-limit-requests-minute", "100"}};
  const Observation mm = parse_response(Provider::cerebras, m, 200, "", kT0);
  EXPECT_EQ(mm.requests.limit, 100);
  EXPECT_EQ(mm.requests.window, kMicrosPerMinute);
  EXPECT_TRUE(mm.extra.empty());
}

// Verifies the IETF draft form "100, 100;w=60" gives the limit and a 60 s window.
TEST(AdaptFixtures, GenericIetfDraft) {
  const Observation o = parse_fixture_as(Provider::generic, "generic/ietf_draft_200.http");
  EXPECT_EQ(o.requests.limit, 100);
  EXPECT_EQ(o.requests.remaining, 42);
  EXPECT_EQ(o.requests.reset_after, 30 * kS);
  EXPECT_EQ(o.requests.window, kMicrosPerMinute);
  EXPECT_TRUE(o.warnings.empty()) << joined(o.warnings);
}

// Verifies every fixture parses without warnings as the provider named by its directory,
// and with no throw as every other provider.
TEST(AdaptFixtures, AllFixturesParseCleanly) {
  namespace fs = std::filesystem;
  int count = 0;
  for (const auto& entry : fs::recursive_directory_iterator(ADMIT_FIXTURES_DIR)) {
    if (!entry.is_regular_file()) continue;
    const std::string dir = entry.path().parent_path().filename().string();
    const auto provider = provider_from_string(dir);
    ASSERT_TRUE(provider.has_value()) << "fixture directory is not a provider: " << dir;
    const std::string rel = dir + "/" + entry.path().filename().string();
    const Fixture f = load(rel);
    EXPECT_GT(f.status, 0) << rel;
    const Observation o = parse_response(*provider, f.headers, f.status, f.body, f.now);
    EXPECT_TRUE(o.warnings.empty()) << rel << "\n" << joined(o.warnings);
    if (f.status == 429) {
      EXPECT_TRUE(o.rate_limited) << rel;
    }
    ++count;
  }
  EXPECT_GE(count, 15);
}

// ---- detect_provider ----

// Verifies every fixture is detected as the provider of its directory (its body passed for an
// error status, as a caller would), and parses as that provider without warnings.
TEST(AdaptDetect, EveryFixtureIsItsProvider) {
  namespace fs = std::filesystem;
  int count = 0;
  for (const auto& entry : fs::recursive_directory_iterator(ADMIT_FIXTURES_DIR)) {
    if (!entry.is_regular_file()) continue;
    const std::string dir = entry.path().parent_path().filename().string();
    const std::string rel = dir + "/" + entry.path().filename().string();
    const Fixture f = load(rel);
    const std::string_view body = f.status >= 400 ? std::string_view(f.body) : "";
    const std::optional<Provider> p = detect_provider(f.headers, body);
    ASSERT_TRUE(p.has_value()) << rel;
    EXPECT_EQ(to_string(*p), dir) << rel;
    const Observation o = parse_response(*p, f.headers, f.status, f.body, f.now);
    EXPECT_TRUE(o.warnings.empty()) << rel << "\n" << joined(o.warnings);
    ++count;
  }
  EXPECT_GE(count, 16);
}

// Verifies which fixtures the headers identify and which only their error body does.
TEST(AdaptDetect, HeadersFirstThenTheErrorBody) {
  struct Case {
    const char* rel;
    std::optional<Provider> headers_alone;
    Provider with_body;
  };
  const Case cases[] = {
      {"openai/docs_example_200.http", Provider::openai, Provider::openai},
      {"openai/usage_based_200.http", Provider::openai, Provider::openai},
      {"openai/insufficient_quota_429.http", std::nullopt, Provider::openai},
      {"azure_openai/responses_api_unknown_200.http", Provider::azure_openai,
       Provider::azure_openai},
      {"azure_openai/token_limit_429.http", std::nullopt, Provider::azure_openai},
      {"anthropic/rate_limit_429.http", Provider::anthropic, Provider::anthropic},
      {"gemini/free_tier_per_day_429.http", std::nullopt, Provider::gemini},
      {"gemini/free_tier_multi_429.http", std::nullopt, Provider::gemini},
      {"groq/docs_example_429.http", Provider::groq, Provider::groq},
      {"openrouter/free_models_per_day_429.http", std::nullopt, Provider::openrouter},
      {"openrouter/headers_200.http", Provider::openrouter, Provider::openrouter},
      {"generic/ietf_draft_200.http", Provider::generic, Provider::generic},
  };
  for (const Case& c : cases) {
    const Fixture f = load(c.rel);
    EXPECT_EQ(detect_provider(f.headers), c.headers_alone) << c.rel;
    EXPECT_EQ(detect_provider(f.headers, f.body), c.with_body) << c.rel;
  }
}

// Headers minus every one whose name starts with one of `prefixes` (ignoring case).
Headers without(const Headers& h, std::initializer_list<std::string_view> prefixes) {
  Headers out;
  for (const auto& [name, value] : h.entries()) {
    bool drop = false;
    for (std::string_view p : prefixes) {
      std::string lower;
      for (char c : name.substr(0, p.size())) lower += static_cast<char>(std::tolower(c));
      drop = drop || lower == p;
    }
    if (!drop) out.add(name, value);
  }
  return out;
}

// Verifies names several providers share identify nobody: OpenAI's x-ratelimit-* names
// (OpenAI, Azure and Groq with different windows, gateways too), bare x-ratelimit-*
// (Together, OpenRouter, many APIs), other providers' and gateways' names; and nothing at all.
TEST(AdaptDetect, SharedNamesIdentifyNobody) {
  EXPECT_EQ(detect_provider(Headers{}), std::nullopt);
  EXPECT_EQ(detect_provider(Headers{}, ""), std::nullopt);
  EXPECT_EQ(detect_provider(Headers{{"date", "Mon, 26 May 2025 05:00:04 GMT"},
                                    {"content-type", "application/json"},
                                    {"x-request-id", "req_x"},
                                    {"retry-after", "2"}}),
            std::nullopt);
  // The fixtures without their identifying headers: OpenAI's names alone.
  const Headers openai =
      without(load("openai/docs_example_200.http").headers, {"openai-", "x-request-id"});
  ASSERT_TRUE(openai.find("x-ratelimit-limit-requests").has_value());
  EXPECT_EQ(detect_provider(openai), std::nullopt);
  const Headers groq = without(load("groq/docs_example_429.http").headers, {"x-groq-"});
  ASSERT_TRUE(groq.find("x-ratelimit-reset-requests").has_value());
  EXPECT_EQ(detect_provider(groq), std::nullopt);
  const Headers azure =
      without(load("azure_openai/responses_api_unknown_200.http").headers, {"apim-", "x-ms-"});
  ASSERT_TRUE(azure.find("x-ratelimit-limit-tokens").has_value());
  EXPECT_EQ(detect_provider(azure), std::nullopt);
  // Bare X-RateLimit-* (OpenRouter's, Together's requests, GitHub's, ...).
  const Headers bare = without(load("openrouter/headers_200.http").headers, {"x-generation-id"});
  ASSERT_TRUE(bare.find("x-ratelimit-reset").has_value());
  EXPECT_EQ(detect_provider(bare), std::nullopt);
  // Fireworks (not a Provider): OpenAI's names plus its own.
  EXPECT_EQ(detect_provider(Headers{{"x-ratelimit-limit-requests", "600"},
                                    {"x-ratelimit-remaining-requests", "599"},
                                    {"x-ratelimit-over-limit", "no"},
                                    {"x-ratelimit-limit-tokens-cache-adjusted-prompt", "6000"}}),
            std::nullopt);
  // A gateway that prefixes the upstream's names (LiteLLM) hides them.
  EXPECT_EQ(detect_provider(Headers{{"llm_provider-openai-organization", "org-x"},
                                    {"llm_provider-x-groq-region", "dls"},
                                    {"x-litellm-model-id", "m"}}),
            std::nullopt);
  // Near misses of Cerebras' windowed names.
  EXPECT_EQ(detect_provider(Headers{{"x-ratelimit-limit-requests-week", "1"}}), std::nullopt);
  EXPECT_EQ(detect_provider(Headers{{"x-ratelimit-used-requests-day", "1"}}), std::nullopt);
}

// Verifies markers of two providers give nullopt (a proxy, a mix), except Azure with OpenAI's
// (Azure may pass openai-* on); names ignore case; every Cerebras window counts; the IETF
// fields give generic only when no provider is named.
TEST(AdaptDetect, MarkersConflictsAndPrecedence) {
  EXPECT_EQ(detect_provider(Headers{{"openai-organization", "org-x"}, {"x-groq-region", "dls"}}),
            std::nullopt);
  EXPECT_EQ(detect_provider(Headers{{"anthropic-ratelimit-requests-limit", "50"},
                                    {"openai-version", "2020-10-01"}}),
            std::nullopt);
  EXPECT_EQ(detect_provider(Headers{{"x-tokenlimit-limit", "3000"},
                                    {"x-ratelimitbysize-limit-minute", "500000"}}),
            std::nullopt);
  EXPECT_EQ(detect_provider(Headers{{"openai-processing-ms", "412"},
                                    {"apim-request-id", "x"},
                                    {"x-ratelimit-remaining-tokens", "0"}}),
            Provider::azure_openai);
  EXPECT_EQ(detect_provider(Headers{{"azureml-model-session", "d-1"}}), Provider::azure_openai);
  EXPECT_EQ(detect_provider(Headers{{"X-MS-Region", "East US"}}), Provider::azure_openai);
  EXPECT_EQ(detect_provider(Headers{{"OpenAI-Organization", "org-x"}}), Provider::openai);
  EXPECT_EQ(detect_provider(Headers{{"X-RateLimit-Remaining-Tokens_Usage_Based", "1"}}),
            Provider::openai);
  EXPECT_EQ(detect_provider(Headers{{"Anthropic-Organization-Id", "o"}}), Provider::anthropic);
  EXPECT_EQ(detect_provider(Headers{{"X-Groq-Region", "dls"}}), Provider::groq);
  EXPECT_EQ(detect_provider(Headers{{"RateLimitBySize-Remaining", "1"}}), Provider::mistral);
  EXPECT_EQ(detect_provider(Headers{{"x-together-traceid", "t"}}), Provider::together);
  EXPECT_EQ(detect_provider(Headers{{"X-Generation-Id", "gen-1"}}), Provider::openrouter);
  for (const char* field : {"limit", "remaining", "reset"}) {
    for (const char* kind : {"requests", "tokens"}) {
      for (const char* window : {"minute", "hour", "day"}) {
        const std::string name = std::string("x-ratelimit-") + field + "-" + kind + "-" + window;
        EXPECT_EQ(detect_provider(Headers{{name, "1"}}), Provider::cerebras) << name;
      }
    }
  }
  // Cerebras' names next to OpenAI's plain ones are still Cerebras.
  EXPECT_EQ(detect_provider(Headers{{"x-ratelimit-limit-requests", "1"},
                                    {"x-ratelimit-limit-tokens-minute", "1"}}),
            Provider::cerebras);

  const Headers ietf{{"RateLimit", "\"default\";r=42;t=30"},
                     {"RateLimit-Policy", "\"default\";q=100;w=60"}};
  EXPECT_EQ(detect_provider(ietf), Provider::generic);
  EXPECT_EQ(detect_provider(Headers{{"ratelimit-remaining", "1"}}), Provider::generic);
  Headers ietf_groq = ietf;
  ietf_groq.add("x-groq-region", "dls");
  EXPECT_EQ(detect_provider(ietf_groq), Provider::groq);
}

// Verifies the error-body rules: each provider's envelope, headers winning over the body, the
// body before the IETF fields, and bodies that say nothing.
TEST(AdaptDetect, ErrorBodies) {
  const Headers none;
  const std::string gemini = load("gemini/free_tier_per_day_429.http").body;
  EXPECT_EQ(detect_provider(none, gemini), Provider::gemini);
  EXPECT_EQ(detect_provider(none, "[" + gemini + "]"), Provider::gemini);  // streaming
  EXPECT_EQ(detect_provider(Headers{{"x-groq-region", "dls"}}, gemini), Provider::groq);
  EXPECT_EQ(detect_provider(Headers{{"ratelimit-limit", "1"}}, gemini), Provider::gemini);
  EXPECT_EQ(detect_provider(
                none, R"({"type":"error","error":{"type":"overloaded_error","message":"x"}})"),
            Provider::anthropic);
  EXPECT_EQ(detect_provider(none, R"({"error":{"message":"Provider returned error","code":429,
                          "metadata":{"raw":"{}","provider_name":"Together"}}})"),
            Provider::openrouter);
  EXPECT_EQ(detect_provider(none, R"({"error":{"type":"tokens","code":"rate_limit_exceeded",
                          "message":"Upgrade at https://console.groq.com/settings/billing"}})"),
            Provider::groq);
  EXPECT_EQ(
      detect_provider(
          none, R"({"error":{"code":"429","message":"See https://aka.ms/oai/quotaincrease"}})"),
      Provider::azure_openai);
  EXPECT_EQ(detect_provider(none, R"({"error":{"code":"rate_limit_exceeded",
                          "message":"Visit https://platform.openai.com/account/rate-limits"}})"),
            Provider::openai);
  // OpenAI-style envelopes with no link, a string code with a status, and non-envelopes.
  for (
      const char* body :
      {R"({"error":{"message":"Rate limit reached","type":"tokens","code":"rate_limit_exceeded"}})",
       R"({"error":{"code":"429","status":"RESOURCE_EXHAUSTED"}})",
       R"({"error":"Too Many Requests"})", R"({"type":"error"})",
       R"({"id":"chatcmpl-x","object":"chat.completion"})", R"(["error"])",
       "{\"error\":", "Too Many Requests", ""}) {
    EXPECT_EQ(detect_provider(none, body), std::nullopt) << body;
  }
}

// ---- robustness ----

// Verifies random and adversarial inputs never throw for any provider (deterministic seed).
TEST(AdaptRobustness, RandomInputsNeverThrow) {
  std::mt19937_64 rng(0xad417);
  const std::vector<std::string> names{"x-ratelimit-limit-requests",
                                       "x-ratelimit-reset-tokens",
                                       "anthropic-ratelimit-tokens-reset",
                                       "retry-after",
                                       "retry-after-ms",
                                       "ratelimitbysize-reset",
                                       "x-ratelimit-reset",
                                       "x-tokenlimit-limit",
                                       "ratelimit-limit",
                                       "x-ratelimit-reset-requests-day"};
  const std::string alphabet = "0123456789.:-+ ,;=TZhmsuµGMTWedOct\x01\xff\"{}[]";
  std::uniform_int_distribution<std::size_t> len(0, 40);
  for (int i = 0; i < 20'000; ++i) {
    Headers h;
    for (const auto& n : names) {
      std::string v;
      const std::size_t l = len(rng);
      for (std::size_t k = 0; k < l; ++k) v += alphabet[rng() % alphabet.size()];
      h.add(n, v);
    }
    std::string body;
    const std::size_t bl = len(rng) * 4;
    for (std::size_t k = 0; k < bl; ++k) body += alphabet[rng() % alphabet.size()];
    const auto now = static_cast<Micros>(rng());
    for (int p = 0; p <= static_cast<int>(Provider::generic); ++p) {
      EXPECT_NO_THROW(parse_response(static_cast<Provider>(p), h, 429, body, now));
    }
  }
}

}  // namespace
}  // namespace admit
