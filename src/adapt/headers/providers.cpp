// The per-provider header tables and readers: OpenAI / Azure / Groq, Anthropic, Mistral,
// Together, OpenRouter, Cerebras and the generic reader (OpenAI names, IETF RateLimit-*, bare
// X-RateLimit-*). The captured responses under tests/adapt/fixtures/ show each provider's
// headers.
#include "providers.hpp"

#include <array>
#include <optional>
#include <string>
#include <string_view>

#include "text.hpp"

namespace admit::headers_detail {

namespace {

// IETF ratelimit-limit may carry a policy list: "100, 100;w=60". The count is the first item.
std::string_view ietf_first_item(std::string_view v) {
  const std::size_t cut = v.find_first_of(",;");
  return cut == std::string_view::npos ? v : v.substr(0, cut);
}

// The "w=<seconds>" parameter of an IETF policy ("100;w=60"), if any.
std::optional<Micros> ietf_window(std::string_view v) {
  std::size_t at = 0;
  while ((at = v.find(';', at)) != std::string_view::npos) {
    ++at;
    std::string_view param = trim(v.substr(at));
    if (param.size() >= 2 && ascii_lower(param[0]) == 'w' && param[1] == '=') {
      param.remove_prefix(2);
      const std::size_t end = param.find_first_of(";, ");
      const auto secs = dialect::parse_count(param.substr(0, end));
      if (secs.ok() && *secs.value > 0 && *secs.value <= kMaxExact / kSecond) {
        return *secs.value * kSecond;
      }
      return std::nullopt;
    }
  }
  return std::nullopt;
}

void read_openai_like(Reader& r, Micros request_window, Micros token_window) {
  Observation& o = r.obs();
  r.read_family(kOpenAiRequests, o.requests, request_window);
  r.read_family(kOpenAiTokens, o.tokens, token_window);
  // "*_usage_based" variants (x-ratelimit-limit-tokens_usage_based ...) repeat the same
  // numbers on some OpenAI responses; they are deliberately ignored.
}

void read_anthropic(Reader& r) {
  Observation& o = r.obs();
  static constexpr Family kReq{{"anthropic-ratelimit-requests-limit"},
                               {"anthropic-ratelimit-requests-remaining"},
                               {"anthropic-ratelimit-requests-reset"}};
  static constexpr Family kTok{{"anthropic-ratelimit-tokens-limit"},
                               {"anthropic-ratelimit-tokens-remaining"},
                               {"anthropic-ratelimit-tokens-reset"}};
  static constexpr Family kIn{{"anthropic-ratelimit-input-tokens-limit"},
                              {"anthropic-ratelimit-input-tokens-remaining"},
                              {"anthropic-ratelimit-input-tokens-reset"}};
  static constexpr Family kOut{{"anthropic-ratelimit-output-tokens-limit"},
                               {"anthropic-ratelimit-output-tokens-remaining"},
                               {"anthropic-ratelimit-output-tokens-reset"}};
  r.read_family(kReq, o.requests, kMinute);
  r.read_family(kTok, o.tokens, kMinute);
  r.read_family(kIn, o.input_tokens, kMinute);
  r.read_family(kOut, o.output_tokens, kMinute);
}

void read_mistral(Reader& r) {
  Observation& o = r.obs();
  // Size (token) budget per minute; the explicit "-minute" names win over the bare ones.
  static constexpr Family kMinuteTokens{
      {"x-ratelimitbysize-limit-minute", "ratelimitbysize-limit"},
      {"x-ratelimitbysize-remaining-minute", "ratelimitbysize-remaining"},
      {"ratelimitbysize-reset"}};
  static constexpr Family kMonthTokens{
      {"x-ratelimitbysize-limit-month"}, {"x-ratelimitbysize-remaining-month"}, {}};
  r.read_family(kMinuteTokens, o.tokens, kMinute);
  r.read_extra(kMonthTokens, "tokens_month", 0);  // calendar month: no fixed length
}

void read_together(Reader& r) {
  Observation& o = r.obs();
  static constexpr Family kTokens{
      {"x-tokenlimit-limit"}, {"x-tokenlimit-remaining"}, {"x-tokenlimit-reset"}};
  r.read_family(kPlainXRateLimit, o.requests, kSecond);
  r.read_family(kTokens, o.tokens, kSecond);
}

void read_cerebras(Reader& r) {
  Observation& o = r.obs();
  struct Variant {
    Family family;
    std::string_view extra_name;
    Micros window;
  };
  // Preference order for the main slot: requests per day, tokens per minute (Cerebras'
  // documented pair); other windows go to `extra`.
  static constexpr std::array<Variant, 3> kRequests{{
      {{{"x-ratelimit-limit-requests-day"},
        {"x-ratelimit-remaining-requests-day"},
        {"x-ratelimit-reset-requests-day"}},
       "requests_day",
       kDay},
      {{{"x-ratelimit-limit-requests-minute"},
        {"x-ratelimit-remaining-requests-minute"},
        {"x-ratelimit-reset-requests-minute"}},
       "requests_minute",
       kMinute},
      {{{"x-ratelimit-limit-requests-hour"},
        {"x-ratelimit-remaining-requests-hour"},
        {"x-ratelimit-reset-requests-hour"}},
       "requests_hour",
       kHour},
  }};
  static constexpr std::array<Variant, 3> kTokens{{
      {{{"x-ratelimit-limit-tokens-minute"},
        {"x-ratelimit-remaining-tokens-minute"},
        {"x-ratelimit-reset-tokens-minute"}},
       "tokens_minute",
       kMinute},
      {{{"x-ratelimit-limit-tokens-hour"},
        {"x-ratelimit-remaining-tokens-hour"},
        {"x-ratelimit-reset-tokens-hour"}},
       "tokens_hour",
       kHour},
      {{{"x-ratelimit-limit-tokens-day"},
        {"x-ratelimit-remaining-tokens-day"},
        {"x-ratelimit-reset-tokens-day"}},
       "tokens_day",
       kDay},
  }};
  for (const auto* variants : {&kRequests, &kTokens}) {
    LimitObservation& main = variants == &kRequests ? o.requests : o.tokens;
    for (const Variant& v : *variants) {
      if (!main.has_data()) {
        r.read_family(v.family, main, v.window);
      } else {
        r.read_extra(v.family, std::string(v.extra_name), v.window);
      }
    }
  }
}

void read_generic(Reader& r) {
  Observation& o = r.obs();
  // Request limit: OpenAI names, else IETF RateLimit-*, else bare X-RateLimit-*; the first
  // family with any header present is used. Windows are unknown unless a policy says.
  if (!r.read_family(kOpenAiRequests, o.requests, 0)) {
    LimitObservation ietf;
    bool present = r.read_count(kIetf.limit, ietf.limit, true, &ietf_first_item);
    present = r.read_count(kIetf.remaining, ietf.remaining, false) || present;
    present = r.read_reset(kIetf.reset, ietf.reset_after) || present;
    if (present) {
      std::optional<Micros> window;
      if (auto policy = r.lookup({"ratelimit-policy"})) window = ietf_window(policy->value);
      if (!window) {
        if (auto lim = r.lookup(kIetf.limit)) window = ietf_window(lim->value);
      }
      if (ietf.has_data()) ietf.window = window.value_or(0);
      o.requests = ietf;
    } else {
      r.read_family(kPlainXRateLimit, o.requests, 0);
    }
  }
  r.read_family(kOpenAiTokens, o.tokens, 0);
}

}  // namespace

void read_provider_headers(Provider p, Reader& r) {
  Observation& o = r.obs();
  switch (p) {
    case Provider::openai:
    case Provider::azure_openai:
      read_openai_like(r, kMinute, kMinute);
      break;
    case Provider::groq:
      read_openai_like(r, kDay, kMinute);
      break;
    case Provider::anthropic:
      read_anthropic(r);
      break;
    case Provider::mistral:
      read_mistral(r);
      break;
    case Provider::together:
      read_together(r);
      break;
    case Provider::openrouter:
      r.read_family(kPlainXRateLimit, o.requests, 0);
      break;
    case Provider::cerebras:
      read_cerebras(r);
      break;
    case Provider::generic:
      read_generic(r);
      break;
    case Provider::gemini:
      break;  // no rate-limit headers; everything is in the error body
  }
}

}  // namespace admit::headers_detail
