// admit-provider-sim's HTTP API without the network: routes, the chat completion schema
// (JSON and server-sent events), validation errors, /sim/* and the admin token.
#include "src/app.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <boost/json.hpp>
#include <cstring>
#include <set>
#include <string>

namespace admit::sim {
namespace {

namespace json = boost::json;

constexpr Micros kT0 = 1'700'000'000 * kMicrosPerSecond;

Reply call(App& app, std::string_view method, std::string_view target, std::string_view body = "",
           std::string_view authorization = "", std::string_view x_api_key = "") {
  return app.handle(HttpRequest{method, target, body, authorization, x_api_key}, kT0);
}

Reply chat(App& app, std::string_view body, std::string_view auth = "") {
  return call(app, "POST", "/v1/chat/completions", body, auth);
}

// AppOptions without designated initializers (GCC 12 warns about the members left out).
AppOptions opts(Micros latency, double tokens_per_second = 0, std::uint64_t seed = 1,
                std::string admin_token = "") {
  AppOptions o;
  o.latency = latency;
  o.tokens_per_second = tokens_per_second;
  o.seed = seed;
  o.admin_token = std::move(admin_token);
  return o;
}

json::object body_of(const Reply& r) {
  std::error_code ec;
  json::value v = json::parse(r.body, ec);
  EXPECT_FALSE(ec) << r.body;
  return v.is_object() ? v.as_object() : json::object{};
}

std::string error_param(const Reply& r) {
  const json::object b = body_of(r);
  const json::value& p = b.at("error").at("param");
  return p.is_null() ? "null" : std::string(p.as_string());
}

const std::string kHello =
    R"({"model":"gpt-sim","messages":[{"role":"system","content":"Be brief."},)"
    R"({"role":"user","content":"Hello there, simulator!"}],"max_tokens":50})";

TEST(App, MessageTokensAreCeilCodePointsOverFourPlusFour) {
  EXPECT_EQ(message_tokens(""), 4);
  EXPECT_EQ(message_tokens("abcd"), 5);
  EXPECT_EQ(message_tokens("abcde"), 6);
  EXPECT_EQ(message_tokens("h\u00e9llo"), 6);  // 5 code points, 6 bytes
  EXPECT_EQ(message_tokens("\u00e9\u00e9\u00e9\u00e9"), 5);
}

TEST(App, CompletionLengthsAreDeterministicAndInRange) {
  std::set<std::int64_t> seen;
  for (std::uint64_t n = 0; n < 2000; ++n) {
    const std::int64_t c = completion_tokens(1, n, 10);
    ASSERT_GE(c, 1);
    ASSERT_LE(c, 10);
    EXPECT_EQ(c, completion_tokens(1, n, 10));
    seen.insert(c);
  }
  EXPECT_EQ(seen.size(), 10U);
  EXPECT_EQ(completion_tokens(5, 3, 1), 1);
  int differ = 0;
  for (std::uint64_t n = 0; n < 100; ++n)
    differ += completion_tokens(1, n, 1000) != completion_tokens(2, n, 1000);
  EXPECT_GT(differ, 90);
}

TEST(App, ChatCompletionHasOpenAIsShapeUsageAndRateLimitHeaders) {
  // Verifies a 200: chat.completion JSON, usage from the documented estimate, headers.
  ProviderModel model({.rpm = 10, .tpm = 10'000});
  App app(model, {});
  const Reply r = chat(app, kHello);
  ASSERT_EQ(r.status, 200U) << r.body;
  EXPECT_EQ(r.header("content-type"), "application/json");
  EXPECT_EQ(r.header("x-ratelimit-remaining-requests"), "9");
  EXPECT_EQ(r.header("x-request-id"), "req_sim_1");
  const std::int64_t prompt =
      message_tokens("Be brief.") + message_tokens("Hello there, simulator!");
  EXPECT_EQ(prompt, 3 + 4 + 6 + 4);
  EXPECT_EQ(r.header("x-ratelimit-remaining-tokens"), std::to_string(10'000 - prompt - 50));
  EXPECT_EQ(r.delay, 0);
  EXPECT_FALSE(r.stream);

  const json::object b = body_of(r);
  EXPECT_EQ(b.at("object"), "chat.completion");
  EXPECT_EQ(b.at("id"), "chatcmpl-sim-1");
  EXPECT_EQ(b.at("model"), "gpt-sim");
  EXPECT_EQ(b.at("created"), kT0 / kMicrosPerSecond);
  const json::object& choice = b.at("choices").at(0).as_object();
  EXPECT_EQ(choice.at("message").at("role"), "assistant");
  const std::string content(choice.at("message").at("content").as_string());
  const json::object& usage = b.at("usage").as_object();
  EXPECT_EQ(usage.at("prompt_tokens"), prompt);
  const std::int64_t completion = usage.at("completion_tokens").as_int64();
  EXPECT_EQ(completion, completion_tokens(1, 0, 50));
  EXPECT_EQ(usage.at("total_tokens"), prompt + completion);
  EXPECT_EQ(static_cast<std::int64_t>(std::count(content.begin(), content.end(), ' ')) + 1,
            completion);  // one word per token
  EXPECT_EQ(choice.at("finish_reason"), completion == 50 ? "length" : "stop");

  // Same seed, same answers; another seed, other lengths.
  ProviderModel model2({});
  App same(model2, {});
  EXPECT_EQ(body_of(chat(same, kHello)).at("choices"), b.at("choices"));
  App other(model2, opts(0, 0, 99));
  int differ = 0;
  for (int i = 0; i < 20; ++i) {
    differ += body_of(chat(other, kHello)).at("usage") != body_of(chat(same, kHello)).at("usage");
  }
  EXPECT_GT(differ, 10);
}

TEST(App, ApiKeysSelectBuckets) {
  // Verifies Bearer keys, x-api-key and the "default" key each get their own buckets.
  ProviderModel model({.rpm = 1, .tpm = 0});
  App app(model, {});
  EXPECT_EQ(chat(app, kHello, "Bearer sk-a").status, 200U);
  EXPECT_EQ(chat(app, kHello, "Bearer sk-a").status, 429U);
  EXPECT_EQ(chat(app, kHello, "Bearer sk-b").status, 200U);
  EXPECT_EQ(chat(app, kHello).status, 200U);                        // "default"
  EXPECT_EQ(chat(app, kHello, "Basic Zm9vOmJhcg==").status, 429U);  // not Bearer: "default"
  EXPECT_EQ(call(app, "POST", "/v1/chat/completions", kHello, "", "sk-a").status, 429U);
  EXPECT_EQ(call(app, "POST", "/v1/chat/completions", kHello, "", "sk-c").status, 200U);
}

TEST(App, RateLimitedReplyCarriesTheProvidersBodyAndHeaders) {
  ProviderModel model({.rpm = 1, .tpm = 0});
  App app(model, opts(250'000));
  ASSERT_EQ(chat(app, kHello).status, 200U);
  const Reply r = chat(app, kHello);
  EXPECT_EQ(r.status, 429U);
  EXPECT_EQ(r.delay, 0);  // refusals are immediate; latency is for completions
  EXPECT_EQ(r.header("retry-after"), "60");
  EXPECT_EQ(r.header("retry-after-ms"), "60000");
  EXPECT_EQ(r.header("content-type"), "application/json");
  const json::object b = body_of(r);
  EXPECT_EQ(b.at("error").at("code"), "rate_limit_exceeded");
  EXPECT_EQ(b.at("error").at("type"), "requests");
  EXPECT_EQ(model.stats(),
            (SimStats{.accepted = 1, .rejected = 1, .accepted_tokens = 67, .rejected_tokens = 67}));
}

// Decodes RFC 4648 base64 (the test's own, to check the simulator's).
std::string unbase64(std::string_view b) {
  const std::string alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  std::uint32_t acc = 0;
  int bits = 0;
  for (const char c : b) {
    if (c == '=') break;
    acc = (acc << 6) | static_cast<std::uint32_t>(alphabet.find(c));
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out.push_back(static_cast<char>((acc >> bits) & 0xFF));
    }
  }
  return out;
}

TEST(App, EmbeddingsHaveOpenAIsShapeUsageAndLimits) {
  ProviderModel model({.rpm = 0, .tpm = 100});
  App app(model, {});
  Reply r = call(app, "POST", "/v1/embeddings",
                 R"({"model":"text-embedding-3-small","input":["abcdefgh","xyz"],"dimensions":4})");
  ASSERT_EQ(r.status, 200U) << r.body;
  EXPECT_EQ(r.header("x-ratelimit-limit-tokens"), "100");
  json::object b = body_of(r);
  EXPECT_EQ(b.at("object"), "list");
  ASSERT_EQ(b.at("data").as_array().size(), 2U);
  const json::array floats = b.at("data").as_array()[1].at("embedding").as_array();
  EXPECT_EQ(floats.size(), 4U);
  EXPECT_EQ(b.at("data").as_array()[1].at("index"), 1);
  EXPECT_EQ(b.at("usage").at("prompt_tokens"), 3);  // ceil(8/4) + ceil(3/4): no overhead
  EXPECT_EQ(b.at("usage").at("total_tokens"), 3);

  // base64: the same kind of vector as little-endian float32 values.
  r = call(app, "POST", "/v1/embeddings",
           R"({"model":"m","input":[1,2,3,4,5],"dimensions":3,"encoding_format":"base64"})");
  ASSERT_EQ(r.status, 200U) << r.body;
  b = body_of(r);
  EXPECT_EQ(b.at("usage").at("prompt_tokens"), 5);  // token ids: one each
  const std::string bytes = unbase64(b.at("data").as_array()[0].at("embedding").as_string());
  ASSERT_EQ(bytes.size(), 3 * sizeof(float));
  for (std::size_t i = 0; i < 3; ++i) {
    float f = 0;
    std::memcpy(&f, bytes.data() + i * sizeof(float), sizeof f);
    EXPECT_GE(f, -1.0F);
    EXPECT_LT(f, 1.0F);
  }

  // One value: 4 bytes, padded.
  r = call(app, "POST", "/v1/embeddings",
           R"({"model":"m","input":"a","dimensions":1,"encoding_format":"base64"})");
  const std::string one(body_of(r).at("data").as_array()[0].at("embedding").as_string());
  EXPECT_EQ(one.size(), 8U);
  EXPECT_TRUE(one.ends_with("=="));
  EXPECT_EQ(unbase64(one).size(), sizeof(float));

  // The tokens bucket: 100 - 3 - 5 - 1 = 91 left; an input of 92 tokens is refused, uncharged.
  r = call(app, "POST", "/v1/embeddings",
           R"({"model":"m","input":")" + std::string(368, 'a') + R"("})");
  EXPECT_EQ(r.status, 429U);
  EXPECT_EQ(body_of(r).at("error").at("code"), "rate_limit_exceeded");
  EXPECT_EQ(model.stats().accepted_tokens, 9);

  // Bad requests name their field.
  EXPECT_EQ(error_param(call(app, "POST", "/v1/embeddings", R"({"input":"x"})")), "model");
  EXPECT_EQ(error_param(call(app, "POST", "/v1/embeddings", R"({"model":"m"})")), "input");
  EXPECT_EQ(error_param(call(app, "POST", "/v1/embeddings", R"({"model":"m","input":[]})")),
            "input");
  EXPECT_EQ(error_param(call(app, "POST", "/v1/embeddings", R"({"model":"m","input":[{}]})")),
            "input[0]");
  EXPECT_EQ(error_param(
                call(app, "POST", "/v1/embeddings", R"({"model":"m","input":"x","dimensions":0})")),
            "dimensions");
  EXPECT_EQ(error_param(call(app, "POST", "/v1/embeddings",
                             R"({"model":"m","input":"x","encoding_format":"hex"})")),
            "encoding_format");
  EXPECT_EQ(call(app, "GET", "/v1/embeddings").status, 405U);
}

TEST(App, StreamIsChunksThenUsageThenDone) {
  // Verifies the server-sent events: role chunk, one content chunk per token (paced by
  // tokens_per_second), finish chunk, usage chunk (include_usage), [DONE].
  ProviderModel model({});
  App app(model, opts(100'000, 50));
  const Reply r =
      chat(app, R"({"model":"m","messages":[{"role":"user","content":"hi"}],)"
                R"("max_tokens":8,"stream":true,"stream_options":{"include_usage":true}})");
  ASSERT_EQ(r.status, 200U) << r.body;
  ASSERT_TRUE(r.stream);
  EXPECT_EQ(r.header("content-type"), "text/event-stream; charset=utf-8");
  EXPECT_EQ(r.delay, 100'000);
  const std::int64_t n = completion_tokens(1, 0, 8);
  const Stream& s = *r.stream;
  ASSERT_EQ(s.size(), static_cast<std::size_t>(n) + 4);
  std::string text;
  for (std::size_t i = 0; i < s.size(); ++i) {
    const std::string e = s.event(i);
    ASSERT_TRUE(e.starts_with("data: ") && e.ends_with("\n\n")) << e;
    const std::string payload = e.substr(6, e.size() - 8);
    const bool content = i >= 1 && i <= static_cast<std::size_t>(n);
    EXPECT_EQ(s.delay(i), content ? 20'000 : 0);
    if (i + 1 == s.size()) {
      EXPECT_EQ(payload, "[DONE]");
      continue;
    }
    const json::object c = json::parse(payload).as_object();
    EXPECT_EQ(c.at("object"), "chat.completion.chunk");
    EXPECT_EQ(c.at("id"), "chatcmpl-sim-1");
    if (i + 2 == s.size()) {  // usage
      EXPECT_TRUE(c.at("choices").as_array().empty());
      EXPECT_EQ(c.at("usage").at("completion_tokens"), n);
      EXPECT_EQ(c.at("usage").at("prompt_tokens"), 5);
      EXPECT_EQ(c.at("usage").at("total_tokens"), n + 5);
      continue;
    }
    EXPECT_TRUE(c.at("usage").is_null());
    const json::object& choice = c.at("choices").at(0).as_object();
    if (i == 0) {
      EXPECT_EQ(choice.at("delta").at("role"), "assistant");
    }
    if (content) text += std::string(choice.at("delta").at("content").as_string());
    if (i == static_cast<std::size_t>(n) + 1) {
      EXPECT_EQ(choice.at("finish_reason"), n == 8 ? "length" : "stop");
    } else {
      EXPECT_TRUE(choice.at("finish_reason").is_null());
    }
  }
  EXPECT_EQ(static_cast<std::int64_t>(std::count(text.begin(), text.end(), ' ')) + 1, n);

  // Without include_usage: no usage chunk, no "usage" field. Non-streaming: the whole
  // generation time is in the delay.
  const Reply plain = chat(app, R"({"model":"m","messages":[{"role":"user","content":"hi"}],)"
                                R"("max_tokens":8,"stream":true})");
  const std::int64_t n2 = completion_tokens(1, 1, 8);
  ASSERT_EQ(plain.stream->size(), static_cast<std::size_t>(n2) + 3);
  EXPECT_EQ(plain.stream->event(0).find("usage"), std::string::npos);
  const Reply whole =
      chat(app, R"({"model":"m","messages":[{"role":"user","content":"hi"}],"max_tokens":8})");
  EXPECT_EQ(whole.delay, 100'000 + 20'000 * completion_tokens(1, 2, 8));
}

TEST(App, BadRequestsAre400WithOpenAIErrorBodies) {
  // Verifies malformed input never crashes and names the offending parameter.
  ProviderModel model({.rpm = 100, .tpm = 0});
  App app(model, {});
  struct Case {
    std::string body;
    std::string param;
  };
  const Case cases[] = {
      {"{\"model\":", "null"},
      {"[1,2]", "body"},
      {R"({"messages":[{"role":"user","content":"x"}]})", "model"},
      {R"({"model":7,"messages":[{"role":"user","content":"x"}]})", "model"},
      {R"({"model":"","messages":[{"role":"user","content":"x"}]})", "model"},
      {R"({"model":"m"})", "messages"},
      {R"({"model":"m","messages":{}})", "messages"},
      {R"({"model":"m","messages":[]})", "messages"},
      {R"({"model":"m","messages":["hi"]})", "messages[0]"},
      {R"({"model":"m","messages":[{"content":"x"}]})", "messages[0].role"},
      {R"({"model":"m","messages":[{"role":"user","content":5}]})", "messages[0].content"},
      {R"({"model":"m","messages":[{"role":"user","content":[{"type":"text","text":1}]}]})",
       "messages[0].content[0].text"},
      {R"({"model":"m","messages":[{"role":"user","content":"x"}],"max_tokens":0})", "max_tokens"},
      {R"({"model":"m","messages":[{"role":"user","content":"x"}],"max_tokens":-4})", "max_tokens"},
      {R"({"model":"m","messages":[{"role":"user","content":"x"}],"max_tokens":"9"})",
       "max_tokens"},
      {R"({"model":"m","messages":[{"role":"user","content":"x"}],"max_tokens":1.5})",
       "max_tokens"},
      {R"({"model":"m","messages":[{"role":"user","content":"x"}],"max_tokens":18446744073709551615})",
       "max_tokens"},
      {R"({"model":"m","messages":[{"role":"user","content":"x"}],"max_completion_tokens":2000000})",
       "max_completion_tokens"},
      {R"({"model":"m","messages":[{"role":"user","content":"x"}],"stream":"yes"})", "stream"},
      {R"({"model":"m","messages":[{"role":"user","content":"x"}],"stream_options":{"include_usage":true}})",
       "stream_options"},
  };
  for (const Case& c : cases) {
    const Reply r = chat(app, c.body);
    EXPECT_EQ(r.status, 400U) << c.body;
    EXPECT_EQ(r.header("content-type"), "application/json");
    const json::object b = body_of(r);
    ASSERT_TRUE(b.contains("error")) << r.body;
    EXPECT_EQ(b.at("error").at("type"), "invalid_request_error") << r.body;
    EXPECT_FALSE(b.at("error").at("message").as_string().empty());
    EXPECT_EQ(error_param(r), c.param) << r.body;
  }
  EXPECT_EQ(model.stats(), SimStats{});  // nothing reached the buckets

  // Content parts count their text; other parts and null content are free.
  const Reply parts =
      chat(app, R"({"model":"m","messages":[{"role":"user","content":[)"
                R"({"type":"text","text":"abcd"},{"type":"image_url","image_url":{}},)"
                R"({"type":"text","text":"efgh"}]},{"role":"assistant","content":null}],)"
                R"("max_completion_tokens":3,"max_tokens":100})");
  ASSERT_EQ(parts.status, 200U) << parts.body;
  EXPECT_EQ(body_of(parts).at("usage").at("prompt_tokens"), 2 + 4 + 4);
  EXPECT_LE(body_of(parts).at("usage").at("completion_tokens").as_int64(), 3);  // newer name wins
}

TEST(App, SimLimitsChangeWhatHeadersReport) {
  ProviderModel model({.rpm = 5, .tpm = 1000});
  App app(model, {});
  EXPECT_EQ(body_of(call(app, "GET", "/sim/limits")), (json::object{{"rpm", 5}, {"tpm", 1000}}));
  const Reply set = call(app, "POST", "/sim/limits", R"({"tpm":400})");
  EXPECT_EQ(set.status, 200U);
  EXPECT_EQ(body_of(set), (json::object{{"rpm", 5}, {"tpm", 400}}));
  EXPECT_EQ(model.limits(), (SimLimits{.rpm = 5, .tpm = 400}));
  EXPECT_EQ(chat(app, kHello).header("x-ratelimit-limit-tokens"), "400");

  for (const char* bad : {"", "{", "[]", R"({})", R"({"rpm":-1})", R"({"rpm":"5"})",
                          R"({"rpm":1.5})", R"({"rps":5})", R"({"tpm":9007199254740992})"}) {
    const Reply r = call(app, "POST", "/sim/limits", bad);
    EXPECT_EQ(r.status, 400U) << bad;
    EXPECT_TRUE(body_of(r).contains("error")) << bad;
  }
  EXPECT_EQ(model.limits(), (SimLimits{.rpm = 5, .tpm = 400}));

  const Reply stats = call(app, "GET", "/sim/stats");
  EXPECT_EQ(
      body_of(stats),
      (json::object{
          {"accepted", 1}, {"rejected", 0}, {"accepted_tokens", 67}, {"rejected_tokens", 0}}));
  EXPECT_EQ(call(app, "POST", "/sim/stats/reset").status, 200U);
  EXPECT_EQ(model.stats(), SimStats{});
}

TEST(App, SimBucketsReportAKeysLevels) {
  ProviderModel model({.rpm = 5, .tpm = 1000});
  App app(model, {});
  const json::object full{{"key", "default"}, {"requests", 5}, {"tokens", 1000}};
  EXPECT_EQ(body_of(call(app, "GET", "/sim/buckets")), full);
  ASSERT_EQ(chat(app, kHello, "Bearer sk-a/b").status, 200U);  // 17 prompt + 50 max_tokens
  EXPECT_EQ(body_of(call(app, "GET", "/sim/buckets?key=sk-a%2Fb")),
            (json::object{{"key", "sk-a/b"}, {"requests", 4}, {"tokens", 933}}));
  EXPECT_EQ(body_of(call(app, "GET", "/sim/buckets?x=1&key=sk-a%2fb&key=other")).at("tokens"), 933);
  EXPECT_EQ(body_of(call(app, "GET", "/sim/buckets")), full);  // the default key is untouched
  EXPECT_EQ(body_of(call(app, "GET", "/sim/buckets?key=a+b%zz")).at("key"), "a b%zz");
  ASSERT_EQ(call(app, "POST", "/sim/limits", R"({"rpm":0})").status, 200U);
  EXPECT_EQ(body_of(call(app, "GET", "/sim/buckets?key=sk-a%2Fb")),
            (json::object{{"key", "sk-a/b"}, {"requests", nullptr}, {"tokens", 933}}));
  const Reply post = call(app, "POST", "/sim/buckets");
  EXPECT_EQ(post.status, 405U);
  EXPECT_EQ(post.header("allow"), "GET");
  EXPECT_EQ(model.stats().accepted, 1);
}

TEST(App, AdminTokenGuardsOnlySimEndpoints) {
  ProviderModel model({.rpm = 5, .tpm = 0});
  App app(model, opts(0, 0, 1, "s3cret"));
  for (const char* auth : {"", "Bearer s3cre", "Bearer s3cret!", "Basic s3cret", "Bearer "}) {
    const Reply r = call(app, "GET", "/sim/limits", "", auth);
    EXPECT_EQ(r.status, 401U) << auth;
    EXPECT_EQ(r.header("www-authenticate"), "Bearer");
  }
  EXPECT_EQ(call(app, "POST", "/sim/limits", R"({"rpm":1})").status, 401U);
  EXPECT_EQ(model.limits().rpm, 5);
  EXPECT_EQ(call(app, "GET", "/sim/stats", "", "Bearer s3cret").status, 200U);
  EXPECT_EQ(call(app, "GET", "/sim/buckets").status, 401U);
  EXPECT_EQ(call(app, "GET", "/sim/buckets", "", "Bearer s3cret").status, 200U);
  EXPECT_EQ(call(app, "GET", "/healthz").status, 200U);
  EXPECT_EQ(chat(app, kHello).status, 200U);
}

TEST(App, UnknownRoutesAndMethods) {
  ProviderModel model({});
  App app(model, {});
  const Reply health = call(app, "GET", "/healthz?x=1");
  EXPECT_EQ(health.status, 200U);
  EXPECT_EQ(body_of(health), (json::object{{"status", "ok"}}));
  EXPECT_EQ(call(app, "GET", "/v1/models").status, 404U);
  EXPECT_EQ(call(app, "GET", "/sim/nope").status, 404U);
  const Reply wrong = call(app, "GET", "/v1/chat/completions");
  EXPECT_EQ(wrong.status, 405U);
  EXPECT_EQ(wrong.header("allow"), "POST");
  EXPECT_EQ(call(app, "DELETE", "/sim/limits").header("allow"), "GET, POST");
}

TEST(App, RejectsBadOptions) {
  ProviderModel model({});
  EXPECT_THROW(App(model, opts(0, -1)), std::invalid_argument);
  EXPECT_THROW(App(model, opts(0, 0.001)), std::invalid_argument);
  EXPECT_THROW(App(model, opts(-1)), std::invalid_argument);
  EXPECT_THROW(App(model, opts(kMicrosPerHour + 1)), std::invalid_argument);
  EXPECT_NO_THROW(App(model, opts(kMicrosPerHour, 0.01)));
}

}  // namespace
}  // namespace admit::sim
