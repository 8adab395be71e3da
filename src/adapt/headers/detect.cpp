// detect_provider: which provider's dialect a response is in, from the names of its headers
// (identity markers: names only one provider's responses carry) and, when the headers name
// none, from its JSON error envelope. Shared rate-limit names (x-ratelimit-*-requests/tokens:
// OpenAI, Azure, Groq and many gateways; bare x-ratelimit-*: Together, OpenRouter and many
// more) identify nobody: with nothing else the answer is nullopt. The captured responses under
// tests/adapt/fixtures/ are each detected as the provider of their directory.
#include <boost/json.hpp>
#include <cstddef>
#include <optional>
#include <string_view>
#include <system_error>

#include "admit/adapt/headers.hpp"
#include "text.hpp"

namespace admit {

namespace {

using headers_detail::iequals;

bool istarts_with(std::string_view s, std::string_view prefix) noexcept {
  return s.size() >= prefix.size() && iequals(s.substr(0, prefix.size()), prefix);
}

bool iends_with(std::string_view s, std::string_view suffix) noexcept {
  return s.size() >= suffix.size() && iequals(s.substr(s.size() - suffix.size()), suffix);
}

// A header name (or name prefix) only one provider's responses carry.
struct Marker {
  std::string_view name;
  bool prefix;
  Provider provider;
};

constexpr Marker kMarkers[] = {
    // Azure OpenAI: Azure API Management and Azure ML front every response.
    {"apim-request-id", false, Provider::azure_openai},
    {"azureml-model-session", false, Provider::azure_openai},
    {"azureml-model-group", false, Provider::azure_openai},
    {"x-ms-", true, Provider::azure_openai},  // x-ms-region, x-ms-rai-invoked, ...
    // OpenAI: the API meta headers (openai-organization, -processing-ms, -version, -project).
    {"openai-", true, Provider::openai},
    {"anthropic-ratelimit-", true, Provider::anthropic},
    {"anthropic-organization-id", false, Provider::anthropic},
    {"x-groq-", true, Provider::groq},  // x-groq-region
    {"ratelimitbysize-", true, Provider::mistral},
    {"x-ratelimitbysize-", true, Provider::mistral},
    {"x-tokenlimit-", true, Provider::together},
    {"x-together-", true, Provider::together},
    {"x-generation-id", false, Provider::openrouter},
};

// Cerebras' windowed names:
// x-ratelimit-{limit,remaining,reset}-{requests,tokens}-{minute,hour,day}.
bool cerebras_name(std::string_view n) noexcept {
  constexpr std::string_view kStem = "x-ratelimit-";
  if (!istarts_with(n, kStem)) return false;
  n.remove_prefix(kStem.size());
  bool field = false;
  for (std::string_view f : {"limit-", "remaining-", "reset-"}) {
    if (istarts_with(n, f)) {
      n.remove_prefix(f.size());
      field = true;
      break;
    }
  }
  if (!field) return false;
  bool kind = false;
  for (std::string_view k : {"requests-", "tokens-"}) {
    if (istarts_with(n, k)) {
      n.remove_prefix(k.size());
      kind = true;
      break;
    }
  }
  return kind && (iequals(n, "minute") || iequals(n, "hour") || iequals(n, "day"));
}

// The IETF RateLimit fields (draft-ietf-httpapi-ratelimit-headers, every revision).
bool ietf_name(std::string_view n) noexcept {
  for (std::string_view f : {"ratelimit", "ratelimit-policy", "ratelimit-limit",
                             "ratelimit-remaining", "ratelimit-reset"}) {
    if (iequals(n, f)) return true;
  }
  return false;
}

constexpr unsigned bit(Provider p) noexcept { return 1U << static_cast<unsigned>(p); }

std::optional<std::string_view> str_field(const boost::json::object& o, std::string_view key) {
  const boost::json::value* v = o.if_contains(key);
  const boost::json::string* s = v != nullptr ? v->if_string() : nullptr;
  if (s == nullptr) return std::nullopt;
  return std::string_view(s->data(), s->size());
}

// The provider whose JSON error envelope `body` is, if its shape or text is one provider's.
std::optional<Provider> detect_body(std::string_view body) {
  if (body.find("\"error\"") == std::string_view::npos) return std::nullopt;  // not an envelope
  std::error_code ec;
  boost::json::parse_options opts;
  opts.max_depth = 64;
  const boost::json::value root = boost::json::parse(body, ec, {}, opts);
  if (ec) return std::nullopt;
  const boost::json::object* top = root.if_object();
  if (top == nullptr) {  // Gemini's streaming endpoints wrap the envelope in an array
    if (const boost::json::array* a = root.if_array(); a != nullptr && !a->empty()) {
      top = (*a)[0].if_object();
    }
  }
  if (top == nullptr) return std::nullopt;
  const boost::json::value* e = top->if_contains("error");
  const boost::json::object* err = e != nullptr ? e->if_object() : nullptr;
  if (err == nullptr) return std::nullopt;
  // Anthropic: {"type":"error","error":{"type":"rate_limit_error",...}}.
  if (str_field(*top, "type") == "error" && str_field(*err, "type")) return Provider::anthropic;
  // Gemini: a google.rpc.Status, {"code":429,"status":"RESOURCE_EXHAUSTED","details":[...]}
  // (OpenAI-style envelopes have a string or null code and no status).
  const boost::json::value* code = err->if_contains("code");
  if (str_field(*err, "status") && code != nullptr && code->is_number()) return Provider::gemini;
  // OpenRouter: error.metadata (provider_name, raw, the upstream's headers).
  if (const boost::json::value* m = err->if_contains("metadata"); m != nullptr && m->is_object()) {
    return Provider::openrouter;
  }
  // The links each provider's messages carry.
  if (const auto msg = str_field(*err, "message")) {
    if (msg->find("Azure OpenAI") != std::string_view::npos ||
        msg->find("aka.ms/oai") != std::string_view::npos) {
      return Provider::azure_openai;
    }
    if (msg->find("console.groq.com") != std::string_view::npos) return Provider::groq;
    if (msg->find("platform.openai.com") != std::string_view::npos) return Provider::openai;
  }
  return std::nullopt;
}

}  // namespace

std::optional<Provider> detect_provider(const Headers& headers, std::string_view body) noexcept {
  try {
    unsigned found = 0;
    bool ietf = false;
    for (const auto& [name, value] : headers.entries()) {
      for (const Marker& m : kMarkers) {
        if (m.prefix ? istarts_with(name, m.name) : iequals(name, m.name)) found |= bit(m.provider);
      }
      // x-ratelimit-limit-tokens_usage_based and its siblings: OpenAI only.
      if (istarts_with(name, "x-ratelimit-") && iends_with(name, "_usage_based")) {
        found |= bit(Provider::openai);
      }
      if (cerebras_name(name)) found |= bit(Provider::cerebras);
      ietf = ietf || ietf_name(name);
    }
    // Azure OpenAI serves OpenAI's models and may pass openai-* headers on; OpenAI never sends
    // Azure's.
    if ((found & bit(Provider::azure_openai)) != 0) found &= ~bit(Provider::openai);
    if (found != 0) {
      if ((found & (found - 1)) != 0) return std::nullopt;  // two providers: a proxy, a mix
      for (unsigned p = 0; p <= static_cast<unsigned>(Provider::generic); ++p) {
        if (found == (1U << p)) return static_cast<Provider>(p);
      }
    }
    if (!body.empty()) {
      if (auto p = detect_body(body)) return p;
    }
    if (ietf) return Provider::generic;
  } catch (...) {  // NOLINT(bugprone-empty-catch): out of memory while parsing: unknown
  }
  return std::nullopt;
}

}  // namespace admit
