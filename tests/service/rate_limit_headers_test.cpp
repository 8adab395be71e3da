// The rate-limit header fields of a decision (service/rate_limit_headers.hpp): the IETF
// RateLimit-Policy / RateLimit lists and OpenAI's x-ratelimit-* headers.
#include "service/rate_limit_headers.hpp"

#include <gtest/gtest.h>

#include <string>

#include "common/http/server.hpp"

namespace admit::service {
namespace {

std::string find(const HeaderList& h, const std::string& name) {
  for (const auto& [k, v] : h) {
    if (k == name) return v;
  }
  return "<absent>";
}

Decision sample() {
  Decision d;
  d.allowed = true;
  // The requester's rpm and tpm, its rpd window, a concurrency limit, an ancestor's tpm.
  d.stats = {
      {"user-1", "rpm", LimitKind::rate, ConfigSource::resource, 500, 499, 120'000, 0,
       60 * kMicrosPerSecond},
      {"user-1", "tpm", LimitKind::rate, ConfigSource::resource, 30000, 28800, 2'400'000, 0,
       60 * kMicrosPerSecond},
      {"user-1", "rpd", LimitKind::window, ConfigSource::resource, 10000, 9999, 3'600'000'001, 0,
       kMicrosPerDay},
      {"user-1", "slots", LimitKind::concurrency, ConfigSource::resource, 50, 49, 0, 0, 0},
      {"team \"a\"", "tpm", LimitKind::rate, ConfigSource::entity, 100000, 98800, 720'000, 0,
       60 * kMicrosPerSecond},
  };
  return d;
}

// Verifies one list item per rate and window limit (none for concurrency), ancestors named
// "<entity>/<limit>" with sf-string escapes, w and t in whole seconds rounded up.
TEST(RateLimitHeaders, PolicyAndStateListEveryRateAndWindowLimit) {
  HeaderList h;
  add_rate_limit_headers(sample(), false, h);
  EXPECT_EQ(find(h, "RateLimit-Policy"),
            R"("rpm";q=500;w=60, "tpm";q=30000;w=60, "rpd";q=10000;w=86400, )"
            R"("team \"a\"/tpm";q=100000;w=60)");
  EXPECT_EQ(find(h, "RateLimit"), R"("rpm";r=499;t=1, "tpm";r=28800;t=3, "rpd";r=9999;t=3601, )"
                                  R"("team \"a\"/tpm";r=98800;t=1)");
  EXPECT_EQ(find(h, "x-ratelimit-limit-requests"), "<absent>");
  EXPECT_EQ(h.size(), 2u);
}

// Verifies the OpenAI names (requests, tokens, requests-day) for the requester's own limits
// only, and its duration format.
TEST(RateLimitHeaders, OpenAiHeadersForTheRequestersLimits) {
  HeaderList h;
  add_rate_limit_headers(sample(), true, h);
  EXPECT_EQ(find(h, "x-ratelimit-limit-requests"), "500");
  EXPECT_EQ(find(h, "x-ratelimit-remaining-requests"), "499");
  EXPECT_EQ(find(h, "x-ratelimit-reset-requests"), "120ms");
  EXPECT_EQ(find(h, "x-ratelimit-limit-tokens"), "30000");  // the requester's, not team a's
  EXPECT_EQ(find(h, "x-ratelimit-reset-tokens"), "3s");
  EXPECT_EQ(find(h, "x-ratelimit-limit-requests-day"), "10000");
  EXPECT_EQ(find(h, "x-ratelimit-reset-requests-day"), "1h0m1s");
  EXPECT_EQ(find(h, "x-ratelimit-limit-slots"), "<absent>");
  EXPECT_EQ(openai_duration(0), "0s");
  EXPECT_EQ(openai_duration(1), "1ms");
  EXPECT_EQ(openai_duration(59 * kMicrosPerSecond + 1), "1m0s");
  EXPECT_EQ(openai_duration(90 * kMicrosPerSecond), "1m30s");
}

// Verifies shadow limits are left out of every field: they are not enforced, and a client that
// paces itself by the fields would enforce them.
TEST(RateLimitHeaders, ShadowLimitsAreLeftOut) {
  Decision d = sample();
  LimitStatus shadow{"user-1",      "rph", LimitKind::rate, ConfigSource::resource, 1000, 0,
                     3'600'000'000, 0,     kMicrosPerHour};
  shadow.shadow = true;
  d.stats.insert(d.stats.begin(), shadow);
  LimitStatus requests = shadow;  // would take OpenAI's "requests" name first
  requests.limit = "requests";
  d.stats.insert(d.stats.begin(), requests);
  HeaderList with, without;
  add_rate_limit_headers(d, true, with);
  add_rate_limit_headers(sample(), true, without);
  EXPECT_EQ(with, without);
  EXPECT_EQ(find(with, "x-ratelimit-limit-requests"), "500");
}

// Verifies a decision without stats (an invalid request) gets no fields.
TEST(RateLimitHeaders, NothingWithoutStats) {
  HeaderList h;
  add_rate_limit_headers(Decision{}, true, h);
  EXPECT_TRUE(h.empty());
}

// The fields as append_rate_limit_fields writes them, read back as a list.
HeaderList read_fields(const Decision& d, bool openai) {
  std::string fields = "Before: kept\r\n";  // appended to, not replaced
  append_rate_limit_fields(d, openai, fields);
  HeaderList out;
  http::for_each_field(fields, [&out](std::string_view name, std::string_view value) {
    out.emplace_back(std::string(name), std::string(value));
  });
  EXPECT_TRUE(fields.empty() || fields.substr(fields.size() - 2) == "\r\n");
  EXPECT_FALSE(out.empty());
  if (!out.empty()) {
    EXPECT_EQ(out.front(), (std::pair<std::string, std::string>("Before", "kept")));
    out.erase(out.begin());
  }
  return out;
}

// The list add_rate_limit_headers gives, less what the server would not send (CR, LF, NUL).
HeaderList sent(const Decision& d, bool openai) {
  HeaderList h;
  add_rate_limit_headers(d, openai, h);
  std::erase_if(
      h, [](const auto& f) { return !http::safe_field(f.first) || !http::safe_field(f.second); });
  return h;
}

// Verifies the fields written directly (what admitd sends) are add_rate_limit_headers' list,
// in its order, for every decision above, with and without OpenAI's fields.
TEST(RateLimitHeaders, FieldsWrittenDirectlyAreTheList) {
  Decision shadowed = sample();
  LimitStatus shadow = shadowed.stats.front();
  shadow.limit = "requests";
  shadow.shadow = true;
  shadowed.stats.insert(shadowed.stats.begin(), shadow);
  Decision twice = sample();  // rpm and "requests": the first wins OpenAI's name
  twice.stats.push_back(twice.stats.front());
  twice.stats.back().limit = "requests";
  Decision unsafe = sample();  // a name the server would not send in a field
  unsafe.stats.back().entity = "team\r\nX-Injected: 1";
  Decision concurrency_only;
  concurrency_only.stats = {sample().stats[3]};
  for (const Decision& d : {sample(), shadowed, twice, unsafe}) {
    for (const bool openai : {false, true}) EXPECT_EQ(read_fields(d, openai), sent(d, openai));
  }
  EXPECT_EQ(read_fields(unsafe, false).size(), 0u);  // both lists name the unsafe entity
  for (const Decision& d : {Decision{}, concurrency_only}) {
    std::string fields;
    append_rate_limit_fields(d, true, fields);
    EXPECT_EQ(fields, "");
  }
}

}  // namespace
}  // namespace admit::service
