// What a gateway request will spend before it is sent: the model it names, its prompt tokens
// counted offline (admit/tokens.hpp) and the most it may generate, from the body of an OpenAI
// chat completion, completion, embedding or response request. The reservation is this
// estimate; the upstream's reported usage reconciles it (docs/proxy.md, "Estimates").
#pragma once

#include <boost/json/object.hpp>
#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>

namespace admit::service {

/// The OpenAI routes the gateway forwards.
enum class GatewayRoute { chat_completions, completions, embeddings, responses };

/// The route's path on admitd: "/v1/chat/completions", "/v1/completions", "/v1/embeddings",
/// "/v1/responses".
std::string_view gateway_path(GatewayRoute route);
/// The route whose gateway_path() is `path`, if any.
std::optional<GatewayRoute> gateway_route(std::string_view path);
/// The path after an upstream's base URL: gateway_path() without "/v1".
std::string_view upstream_path(GatewayRoute route);

/// Limit names a gateway request is charged 1 of: rpm, rps, rph, rpd, requests.
bool request_limit(std::string_view name);
/// Limit names a gateway request is charged its tokens of: tpm, tps, tph, tpd, tokens.
bool token_limit(std::string_view name);

struct RequestEstimate {
  std::string model;
  std::int64_t prompt_tokens = 0;  ///< counted from the messages, prompt, input
  std::int64_t max_output = 0;     ///< max_tokens and the like, or the default (0: embeddings)
  bool stream = false;             ///< "stream": true
  bool exact_encoding = true;      ///< false: the model's tokenizer is unknown (o200k estimate)
  std::int64_t total() const { return prompt_tokens + max_output; }
};

/// A request the gateway cannot forward: an OpenAI-style invalid_request_error.
class GatewayRequestError : public std::runtime_error {
 public:
  GatewayRequestError(std::string message, std::string param)
      : std::runtime_error(std::move(message)), param_(std::move(param)) {}
  const std::string& param() const { return param_; }

 private:
  std::string param_;
};

/**
 * Reads `body` (the parsed request) for `route`. Lenient where OpenAI is (content as a string,
 * an array of parts or null; prompts and inputs as strings, arrays of strings or of token
 * ids), strict where forwarding depends on it: `model` must be a non-empty string, `stream` a
 * boolean, the output limit a positive integer.
 * @throws GatewayRequestError naming the offending field.
 */
RequestEstimate estimate_request(GatewayRoute route, const boost::json::object& body,
                                 std::int64_t default_max_tokens);

}  // namespace admit::service
