// The gateway's estimates (service/proxy/estimate.hpp): prompt tokens counted as the token
// counter counts them, the output limit the request names (or the default), and the fields a
// request must get right named in the error.
#include <gtest/gtest.h>

#include <boost/json.hpp>
#include <string>
#include <vector>

#include "admit/tokens.hpp"
#include "service/proxy/estimate.hpp"

namespace admit::service {
namespace {

namespace json = boost::json;

RequestEstimate estimate(GatewayRoute route, std::string_view body, std::int64_t dflt = 100) {
  return estimate_request(route, json::parse(body).as_object(), dflt);
}

std::string param_of(GatewayRoute route, std::string_view body) {
  try {
    (void)estimate(route, body);
  } catch (const GatewayRequestError& e) {
    return e.param();
  }
  return "(accepted)";
}

TEST(GatewayEstimate, ChatCountsMessagesAsTheTokenCounterDoes) {
  const std::vector<ChatMessage> msgs{{"system", "You are terse.", {}},
                                      {"user", "What is 2 + 2?", std::string_view("ann")}};
  const std::size_t want = count_chat_tokens(msgs, Encoding::o200k_base);
  const RequestEstimate e = estimate(GatewayRoute::chat_completions, R"({
    "model": "gpt-4o",
    "messages": [{"role": "system", "content": "You are terse."},
                 {"role": "user", "content": "What is 2 + 2?", "name": "ann"}],
    "max_tokens": 50})");
  EXPECT_EQ(e.model, "gpt-4o");
  EXPECT_EQ(e.prompt_tokens, static_cast<std::int64_t>(want));
  EXPECT_EQ(e.max_output, 50);
  EXPECT_EQ(e.total(), static_cast<std::int64_t>(want) + 50);
  EXPECT_FALSE(e.stream);
  EXPECT_TRUE(e.exact_encoding);
}

TEST(GatewayEstimate, ContentPartsNullContentAndImages) {
  const std::vector<ChatMessage> text_only{{"user", "Describe this picture", {}},
                                           {"assistant", "", {}}};
  const std::int64_t base =
      static_cast<std::int64_t>(count_chat_tokens(text_only, Encoding::o200k_base));
  const RequestEstimate e = estimate(GatewayRoute::chat_completions, R"({
    "model": "gpt-4o-mini",
    "messages": [
      {"role": "user", "content": [{"type": "text", "text": "Describe "},
                                   {"type": "text", "text": "this picture"},
                                   {"type": "image_url", "image_url": {"url": "https://x/y.png"}}]},
      {"role": "assistant", "content": null}]})");
  EXPECT_EQ(e.prompt_tokens, base + 85);  // an image part: a fixed 85
  EXPECT_EQ(e.max_output, 100);           // the default
}

TEST(GatewayEstimate, OutputLimitsStreamsAndChoices) {
  RequestEstimate e = estimate(GatewayRoute::chat_completions,
                               R"({"model":"gpt-4o","messages":[],"max_completion_tokens":7,
                                   "max_tokens":99,"n":3,"stream":true})");
  EXPECT_EQ(e.max_output, 21);  // max_completion_tokens wins; n choices each up to it
  EXPECT_TRUE(e.stream);
  e = estimate(
      GatewayRoute::responses,
      R"({"model":"gpt-4o","input":"Hello","instructions":"Be brief","max_output_tokens":9})");
  EXPECT_EQ(e.prompt_tokens,
            static_cast<std::int64_t>(count_tokens("Hello", Encoding::o200k_base) +
                                      count_tokens("Be brief", Encoding::o200k_base)) +
                6);
  EXPECT_EQ(e.max_output, 9);
}

TEST(GatewayEstimate, PromptsAndInputsOfEveryShape) {
  const auto tokens = [](std::string_view t) {
    return static_cast<std::int64_t>(count_tokens(t, Encoding::cl100k_base));
  };
  RequestEstimate e =
      estimate(GatewayRoute::embeddings,
               R"({"model":"text-embedding-3-small","input":["alpha beta","gamma"]})");
  EXPECT_EQ(e.prompt_tokens, tokens("alpha beta") + tokens("gamma"));
  EXPECT_EQ(e.max_output, 0);
  e = estimate(GatewayRoute::embeddings,
               R"({"model":"text-embedding-3-small","input":[[1,2,3],[4,5]]})");
  EXPECT_EQ(e.prompt_tokens, 5);  // token ids count one each
  e = estimate(GatewayRoute::completions,
               R"({"model":"gpt-3.5-turbo-instruct","prompt":"Once upon"})");
  EXPECT_EQ(e.max_output, 100);
  e = estimate(GatewayRoute::chat_completions,
               R"({"model":"claude-sonnet-4","messages":[{"role":"user","content":"hi"}]})");
  EXPECT_FALSE(e.exact_encoding);  // another family: an o200k_base estimate
}

TEST(GatewayEstimate, BadRequestsNameTheirField) {
  EXPECT_EQ(param_of(GatewayRoute::chat_completions, R"({"messages":[]})"), "model");
  EXPECT_EQ(param_of(GatewayRoute::chat_completions, R"({"model":7,"messages":[]})"), "model");
  EXPECT_EQ(param_of(GatewayRoute::chat_completions, R"({"model":""})"), "model");
  EXPECT_EQ(param_of(GatewayRoute::chat_completions, R"({"model":"m"})"), "messages");
  EXPECT_EQ(param_of(GatewayRoute::chat_completions, R"({"model":"m","messages":[3]})"),
            "messages[0]");
  EXPECT_EQ(param_of(GatewayRoute::chat_completions,
                     R"({"model":"m","messages":[{"role":"user","content":5}]})"),
            "messages[0].content");
  EXPECT_EQ(
      param_of(GatewayRoute::chat_completions, R"({"model":"m","messages":[],"max_tokens":0})"),
      "max_tokens");
  EXPECT_EQ(
      param_of(GatewayRoute::chat_completions, R"({"model":"m","messages":[],"max_tokens":1.5})"),
      "max_tokens");
  EXPECT_EQ(
      param_of(GatewayRoute::chat_completions, R"({"model":"m","messages":[],"stream":"yes"})"),
      "stream");
  EXPECT_EQ(param_of(GatewayRoute::embeddings, R"({"model":"m"})"), "input");
  EXPECT_EQ(param_of(GatewayRoute::embeddings, R"({"model":"m","input":{"a":1}})"), "input");
  EXPECT_EQ(param_of(GatewayRoute::embeddings, R"({"model":"m","input":"x","stream":true})"),
            "stream");
  EXPECT_EQ(param_of(GatewayRoute::completions, R"({"model":"m"})"), "prompt");
  EXPECT_EQ(param_of(GatewayRoute::responses, R"({"model":"m","input":5})"), "input");
  EXPECT_EQ(
      param_of(GatewayRoute::chat_completions, R"({"model":"m","messages":[],"max_tokens":null})"),
      "(accepted)");  // null: as absent
}

}  // namespace
}  // namespace admit::service
