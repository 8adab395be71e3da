// admit-provider-sim's HTTP API without the network: routes, the chat completion, legacy
// completion and Responses API schemas (JSON and server-sent events), validation errors,
// /sim/* and the admin token.
#include "src/app.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <boost/json.hpp>
#include <cstring>
#include <set>
#include <string>
#include <utility>
#include <vector>

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

// The events of a stream, each "data: " payload (and for typed events the "event: " name).
struct Event {
  std::string type;  // "event:" line; empty when absent
  std::string data;
};

std::vector<Event> events_of(const Stream& s) {
  std::vector<Event> out;
  for (std::size_t i = 0; i < s.size(); ++i) {
    std::string e = s.event(i);
    EXPECT_TRUE(e.ends_with("\n\n")) << e;
    Event ev;
    if (e.starts_with("event: ")) {
      const std::size_t nl = e.find('\n');
      ev.type = e.substr(7, nl - 7);
      e = e.substr(nl + 1);
    }
    EXPECT_TRUE(e.starts_with("data: ")) << e;
    ev.data = e.substr(6, e.size() - 8);
    out.push_back(std::move(ev));
  }
  return out;
}

TEST(App, CompletionsHaveOpenAIsShapeUsageAndLimits) {
  // Verifies POST /v1/completions: text_completion whole and streamed, the prompt counted as
  // embeddings count their input, max_tokens 16 by default, and the chat path's charge.
  ProviderModel model({.rpm = 3, .tpm = 1000});
  App app(model, opts(0, 50));
  Reply r = call(app, "POST", "/v1/completions",
                 R"({"model":"gpt-3.5-turbo-instruct","prompt":"Say hello, simulator"})");
  ASSERT_EQ(r.status, 200U) << r.body;
  EXPECT_EQ(r.header("content-type"), "application/json");
  EXPECT_EQ(r.header("x-request-id"), "req_sim_1");
  EXPECT_EQ(r.header("x-ratelimit-remaining-requests"), "2");
  EXPECT_EQ(r.header("x-ratelimit-remaining-tokens"), std::to_string(1000 - 5 - 16));
  const std::int64_t n = completion_tokens(1, 0, 16);
  EXPECT_EQ(r.delay, 20'000 * n);
  json::object b = body_of(r);
  EXPECT_EQ(b.at("object"), "text_completion");
  EXPECT_EQ(b.at("id"), "cmpl-sim-1");
  EXPECT_EQ(b.at("model"), "gpt-3.5-turbo-instruct");
  EXPECT_EQ(b.at("created"), kT0 / kMicrosPerSecond);
  const json::object& choice = b.at("choices").at(0).as_object();
  EXPECT_EQ(choice.at("index"), 0);
  EXPECT_TRUE(choice.at("logprobs").is_null());
  EXPECT_EQ(choice.at("finish_reason"), n == 16 ? "length" : "stop");
  const std::string text(choice.at("text").as_string());
  EXPECT_EQ(static_cast<std::int64_t>(std::count(text.begin(), text.end(), ' ')) + 1, n);
  EXPECT_EQ(
      b.at("usage"),
      (json::object{{"prompt_tokens", 5}, {"completion_tokens", n}, {"total_tokens", 5 + n}}));

  // Streamed, with usage: one chunk per word, the finish chunk, the usage chunk, [DONE].
  r = call(app, "POST", "/v1/completions",
           R"({"model":"m","prompt":["abcd",[1,2,3]],"max_tokens":6,"stream":true,)"
           R"("stream_options":{"include_usage":true}})");
  ASSERT_EQ(r.status, 200U) << r.body;
  ASSERT_TRUE(r.stream);
  EXPECT_EQ(r.header("content-type"), "text/event-stream; charset=utf-8");
  EXPECT_EQ(r.header("x-ratelimit-remaining-tokens"), std::to_string(1000 - 21 - 4 - 6));
  const std::int64_t n2 = completion_tokens(1, 1, 6);
  const std::vector<Event> events = events_of(*r.stream);
  ASSERT_EQ(events.size(), static_cast<std::size_t>(n2) + 3);
  std::string streamed;
  for (std::size_t i = 0; i + 1 < events.size(); ++i) {
    EXPECT_TRUE(events[i].type.empty());
    EXPECT_EQ(r.stream->delay(i), i < static_cast<std::size_t>(n2) ? 20'000 : 0);
    const json::object c = json::parse(events[i].data).as_object();
    EXPECT_EQ(c.at("object"), "text_completion");
    EXPECT_EQ(c.at("id"), "cmpl-sim-2");
    if (i + 2 == events.size()) {
      EXPECT_TRUE(c.at("choices").as_array().empty());
      EXPECT_EQ(c.at("usage"),
                (json::object{
                    {"prompt_tokens", 4}, {"completion_tokens", n2}, {"total_tokens", 4 + n2}}));
      continue;
    }
    EXPECT_TRUE(c.at("usage").is_null());
    const json::object& ch = c.at("choices").at(0).as_object();
    streamed += std::string(ch.at("text").as_string());
    if (i == static_cast<std::size_t>(n2)) {
      EXPECT_EQ(ch.at("text"), "");
      EXPECT_EQ(ch.at("finish_reason"), n2 == 6 ? "length" : "stop");
    } else {
      EXPECT_TRUE(ch.at("finish_reason").is_null());
    }
  }
  EXPECT_EQ(events.back().data, "[DONE]");
  EXPECT_EQ(static_cast<std::int64_t>(std::count(streamed.begin(), streamed.end(), ' ')) + 1, n2);
  // Without include_usage: no usage chunk.
  r = call(app, "POST", "/v1/completions", R"({"model":"m","prompt":"x","stream":true})");
  ASSERT_EQ(r.status, 200U) << r.body;
  EXPECT_EQ(r.stream->size(), static_cast<std::size_t>(completion_tokens(1, 2, 16)) + 2);
  EXPECT_EQ(r.stream->event(0).find("usage"), std::string::npos);

  // The hidden limit (3 rpm) is spent: a 429 with the provider's body, nothing charged.
  r = call(app, "POST", "/v1/completions", R"({"model":"m","prompt":"x"})");
  EXPECT_EQ(r.status, 429U);
  EXPECT_FALSE(r.stream);
  EXPECT_EQ(r.header("retry-after"), "20");
  EXPECT_EQ(body_of(r).at("error").at("code"), "rate_limit_exceeded");
  EXPECT_EQ(
      model.stats(),
      (SimStats{
          .accepted = 3, .rejected = 1, .accepted_tokens = 21 + 10 + 17, .rejected_tokens = 17}));

  // Bad requests name their field; other methods: 405.
  EXPECT_EQ(error_param(call(app, "POST", "/v1/completions", R"({"prompt":"x"})")), "model");
  EXPECT_EQ(error_param(call(app, "POST", "/v1/completions", R"({"model":"m"})")), "prompt");
  EXPECT_EQ(error_param(call(app, "POST", "/v1/completions", R"({"model":"m","prompt":[]})")),
            "prompt");
  EXPECT_EQ(error_param(call(app, "POST", "/v1/completions", R"({"model":"m","prompt":[{}]})")),
            "prompt[0]");
  EXPECT_EQ(error_param(call(app, "POST", "/v1/completions",
                             R"({"model":"m","prompt":"x","max_tokens":0})")),
            "max_tokens");
  EXPECT_EQ(error_param(call(app, "POST", "/v1/completions",
                             R"({"model":"m","prompt":"x","stream_options":{}})")),
            "stream_options");
  EXPECT_EQ(call(app, "GET", "/v1/completions").status, 405U);
  EXPECT_EQ(model.stats().accepted + model.stats().rejected, 4);
}

TEST(App, ResponsesHaveOpenAIsShapeUsageAndLimits) {
  // Verifies POST /v1/responses: the response object whole and streamed as typed events, its
  // usage (input_tokens, output_tokens), and the chat path's charge.
  ProviderModel model({.rpm = 0, .tpm = 300});
  App app(model, opts(0, 50));
  // Charged as the same chat completion would be: 7 prompt tokens + 40.
  Reply r = call(app, "POST", "/v1/responses",
                 R"({"model":"gpt-4o","input":"Say hello.","max_output_tokens":40})", "Bearer r");
  ASSERT_EQ(r.status, 200U) << r.body;
  const Reply as_chat = chat(
      app,
      R"({"model":"gpt-4o","messages":[{"role":"user","content":"Say hello."}],"max_tokens":40})",
      "Bearer c");
  EXPECT_EQ(r.header("x-ratelimit-remaining-tokens"), "253");
  EXPECT_EQ(as_chat.header("x-ratelimit-remaining-tokens"), "253");
  EXPECT_EQ(r.header("content-type"), "application/json");
  const std::int64_t n = completion_tokens(1, 0, 40);
  EXPECT_EQ(r.delay, 20'000 * n);
  json::object b = body_of(r);
  EXPECT_EQ(b.at("object"), "response");
  EXPECT_EQ(b.at("id"), "resp_sim_1");
  EXPECT_EQ(b.at("created_at"), kT0 / kMicrosPerSecond);
  EXPECT_EQ(b.at("model"), "gpt-4o");
  EXPECT_EQ(b.at("max_output_tokens"), 40);
  EXPECT_EQ(b.at("status"), n == 40 ? "incomplete" : "completed");
  const json::object& item = b.at("output").at(0).as_object();
  EXPECT_EQ(item.at("type"), "message");
  EXPECT_EQ(item.at("id"), "msg_sim_1");
  EXPECT_EQ(item.at("role"), "assistant");
  const json::object& part = item.at("content").at(0).as_object();
  EXPECT_EQ(part.at("type"), "output_text");
  EXPECT_TRUE(part.at("annotations").as_array().empty());
  const std::string text(part.at("text").as_string());
  EXPECT_EQ(static_cast<std::int64_t>(std::count(text.begin(), text.end(), ' ')) + 1, n);
  const json::object& usage = b.at("usage").as_object();
  EXPECT_EQ(usage.at("input_tokens"), 7);
  EXPECT_EQ(usage.at("output_tokens"), n);
  EXPECT_EQ(usage.at("total_tokens"), 7 + n);

  // Streamed: message items, parts and instructions count as chat messages; max_output_tokens
  // 1 always cuts it short: response.incomplete.
  r = call(app, "POST", "/v1/responses",
           R"({"model":"m","instructions":"Be brief.","stream":true,"max_output_tokens":1,)"
           R"("input":[{"role":"user","content":[{"type":"input_text","text":"abcd"}]},)"
           R"({"type":"function_call_output","call_id":"c","output":"abcdefgh"}]})",
           "Bearer r");
  ASSERT_EQ(r.status, 200U) << r.body;
  ASSERT_TRUE(r.stream);
  EXPECT_EQ(r.header("content-type"), "text/event-stream; charset=utf-8");
  const std::int64_t prompt = message_tokens("Be brief.") + 5 + 6;
  EXPECT_EQ(r.header("x-ratelimit-remaining-tokens"), std::to_string(253 - prompt - 1));
  std::vector<Event> events = events_of(*r.stream);
  const std::vector<std::string> types{"response.created",           "response.in_progress",
                                       "response.output_item.added", "response.content_part.added",
                                       "response.output_text.delta", "response.output_text.done",
                                       "response.content_part.done", "response.output_item.done",
                                       "response.incomplete"};
  ASSERT_EQ(events.size(), types.size());
  for (std::size_t i = 0; i < events.size(); ++i) {
    EXPECT_EQ(events[i].type, types[i]);
    const json::object e = json::parse(events[i].data).as_object();
    EXPECT_EQ(e.at("type"), json::value(types[i]));
    EXPECT_EQ(e.at("sequence_number"), i);
  }
  json::object last = json::parse(events.back().data).as_object();
  EXPECT_EQ(last.at("response").at("status"), "incomplete");
  EXPECT_EQ(last.at("response").at("incomplete_details").at("reason"), "max_output_tokens");
  EXPECT_EQ(last.at("response").at("usage").at("input_tokens"), prompt);
  EXPECT_EQ(last.at("response").at("usage").at("output_tokens"), 1);

  // A longer one: paced deltas that add up to the text, then response.completed with usage.
  r = call(app, "POST", "/v1/responses", R"({"model":"m","input":"hi","stream":true})", "Bearer s");
  ASSERT_EQ(r.status, 200U) << r.body;
  const std::int64_t n3 = completion_tokens(1, 3, 256);
  ASSERT_LT(n3, 256);
  events = events_of(*r.stream);
  ASSERT_EQ(events.size(), static_cast<std::size_t>(n3) + 8);
  EXPECT_TRUE(json::parse(events[0].data).at("response").at("usage").is_null());
  EXPECT_TRUE(json::parse(events[0].data).at("response").at("max_output_tokens").is_null());
  std::string deltas;
  for (std::size_t i = 0; i < events.size(); ++i) {
    const bool delta = i >= 4 && i < 4 + static_cast<std::size_t>(n3);
    EXPECT_EQ(r.stream->delay(i), delta ? 20'000 : 0);
    if (delta) {
      EXPECT_EQ(events[i].type, "response.output_text.delta");
      deltas += std::string(json::parse(events[i].data).at("delta").as_string());
    }
  }
  const json::value done = json::parse(events[4 + static_cast<std::size_t>(n3)].data);
  EXPECT_EQ(done.at("text"), json::value(deltas));
  EXPECT_EQ(events.back().type, "response.completed");
  last = json::parse(events.back().data).as_object();
  EXPECT_EQ(last.at("response").at("status"), "completed");
  EXPECT_EQ(last.at("response").at("output").at(0).at("content").at(0).at("text"),
            json::value(deltas));
  EXPECT_EQ(last.at("response").at("usage"),
            (json::object{{"input_tokens", 5},
                          {"input_tokens_details", json::object{{"cached_tokens", 0}}},
                          {"output_tokens", n3},
                          {"output_tokens_details", json::object{{"reasoning_tokens", 0}}},
                          {"total_tokens", 5 + n3}}));

  // The hidden limit: key r has 253 - 19 = 234 tokens left; 7 + 230 do not fit.
  r = call(app, "POST", "/v1/responses",
           R"({"model":"gpt-4o","input":"Say hello.","max_output_tokens":230,"stream":true})",
           "Bearer r");
  EXPECT_EQ(r.status, 429U);
  EXPECT_FALSE(r.stream);
  EXPECT_EQ(r.header("x-ratelimit-remaining-tokens"), "234");
  EXPECT_FALSE(r.header("retry-after").empty());
  EXPECT_EQ(body_of(r).at("error").at("type"), "tokens");
  EXPECT_EQ(model.stats().rejected_tokens, 237);

  // Bad requests name their field; other methods: 405.
  for (const auto& [body, param] : std::vector<std::pair<std::string, std::string>>{
           {R"({"input":"x"})", "model"},
           {R"({"model":"m"})", "input"},
           {R"({"model":"m","input":5})", "input"},
           {R"({"model":"m","input":[]})", "input"},
           {R"({"model":"m","input":["x"]})", "input[0]"},
           {R"({"model":"m","input":[{"role":"user","content":7}]})", "input[0].content"},
           {R"({"model":"m","input":"x","instructions":1})", "instructions"},
           {R"({"model":"m","input":"x","max_output_tokens":0})", "max_output_tokens"},
           {R"({"model":"m","input":"x","stream":"yes"})", "stream"}}) {
    const Reply bad = call(app, "POST", "/v1/responses", body);
    EXPECT_EQ(bad.status, 400U) << body;
    EXPECT_EQ(error_param(bad), param) << body;
  }
  EXPECT_EQ(call(app, "GET", "/v1/responses").status, 405U);
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
