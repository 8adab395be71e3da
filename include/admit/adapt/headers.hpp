// Reads what an LLM provider's response says about its rate limits (headers, and the error body
// for Gemini/OpenAI/OpenRouter) into one Observation. Never throws: bad values become warnings.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "admit/core/time.hpp"

namespace admit {

/// Upstream API whose header dialect parse_response() should read (detect_provider() tells it
/// from a response's headers).
enum class Provider {
  openai,
  azure_openai,
  anthropic,
  gemini,
  groq,
  mistral,
  together,
  openrouter,
  cerebras,
  generic,
};

/// Lower-case identifier of `p`: "openai", "azure_openai", ..., "generic".
std::string_view to_string(Provider p) noexcept;

/// Inverse of to_string(). Ignores ASCII case and accepts '-' for '_' ("Azure-OpenAI").
/// std::nullopt for an unknown name.
std::optional<Provider> provider_from_string(std::string_view name) noexcept;

/**
 * Response headers with case-insensitive lookup. Keeps insertion order and duplicates;
 * find() returns the first match. Build from an initializer list:
 *   Headers h{{"x-ratelimit-limit-requests", "60"}, {"Retry-After", "2"}};
 */
class Headers {
 public:
  using Entry = std::pair<std::string, std::string>;

  Headers() = default;
  /// Copies every (name, value) pair, in order.
  Headers(std::initializer_list<std::pair<std::string_view, std::string_view>> entries);

  /// Appends one header; the name keeps its spelling, lookups ignore ASCII case.
  void add(std::string_view name, std::string_view value);

  /// Value of the first header whose name equals `name` ignoring ASCII case, untrimmed.
  std::optional<std::string_view> find(std::string_view name) const noexcept;

  /// Every header in insertion order.
  const std::vector<Entry>& entries() const noexcept { return entries_; }
  std::size_t size() const noexcept { return entries_.size(); }
  bool empty() const noexcept { return entries_.empty(); }

 private:
  std::vector<Entry> entries_;
};

/// One limit as a single response reports it. Every field is optional: absent, empty, "-1"
/// and a limit of 0 all mean "unknown".
struct LimitObservation {
  /// Capacity of the window (requests or tokens).
  std::optional<std::int64_t> limit;
  /// Capacity left in the current window; 0 is a real value (exhausted).
  std::optional<std::int64_t> remaining;
  /// Time from the response until the window resets / is fully replenished, >= 0.
  std::optional<Micros> reset_after;
  /// Length of the window `limit` applies to (60 s for per-minute limits); 0 = unknown.
  /// Set only when the provider's convention says so and some field above is present.
  Micros window = 0;

  /// True when limit, remaining or reset_after is known.
  bool has_data() const noexcept { return limit || remaining || reset_after; }
};

/// A limit that has no slot of its own in Observation (e.g. Mistral's monthly tokens,
/// Cerebras' per-minute requests, a second Gemini quota violation of the same kind).
struct ExtraLimit {
  /// Stable name, e.g. "tokens_month", "requests_minute", or the Gemini quotaId.
  std::string name;
  LimitObservation limit;
};

/// Everything one provider response says about rate limits.
struct Observation {
  /// Request-count limit (per minute for OpenAI/Azure/Anthropic, per day for Groq/Cerebras,
  /// per second for Together).
  LimitObservation requests;
  /// Token limit (input + output where the provider combines them).
  LimitObservation tokens;
  /// Input-token limit (Anthropic ITPM; Gemini input-token quotas).
  LimitObservation input_tokens;
  /// Output-token limit (Anthropic OTPM; Gemini output-token quotas).
  LimitObservation output_tokens;
  /// Limits with no slot above; see ExtraLimit.
  std::vector<ExtraLimit> extra;
  /// How long the provider asks to wait before retrying. Precedence: retry-after-ms header,
  /// retry-after header (seconds or HTTP-date), Gemini RetryInfo.retryDelay, then a
  /// "try again in 6s"/"retry in 10.6s"/"retry after 2 seconds" hint in the error message.
  std::optional<Micros> retry_after;
  /// HTTP 429, or a RESOURCE_EXHAUSTED error status in the body (Gemini).
  bool rate_limited = false;
  /// Body error code/type "insufficient_quota" (OpenAI): billing, waiting will not help.
  bool quota_exhausted = false;
  /// One line per malformed value, naming the header (or body field) and the value.
  std::vector<std::string> warnings;
};

/**
 * Parses one response from provider `p`. `status` is the HTTP status (0 if unknown); `body`
 * is read only when status >= 400 (error envelopes), and may be empty. `now` is the response
 * time in µs since the Unix epoch; absolute resets (RFC 3339, epoch s/ms, HTTP-date) become
 * reset_after = max(0, reset - now). Never throws; malformed values are left unset and
 * reported in Observation::warnings.
 */
Observation parse_response(Provider p, const Headers& headers, int status, std::string_view body,
                           Micros now);

/**
 * Which provider's dialect a response is in, for parse_response(). Decided by header names
 * that only one provider's responses carry (the values are not read):
 *   - azure_openai: apim-request-id, azureml-model-session, azureml-model-group, x-ms-*
 *   - openai: openai-* (openai-organization, openai-processing-ms, openai-version, ...),
 *     x-ratelimit-*_usage_based
 *   - anthropic: anthropic-ratelimit-*, anthropic-organization-id
 *   - groq: x-groq-* (x-groq-region)
 *   - mistral: ratelimitbysize-*, x-ratelimitbysize-*
 *   - together: x-tokenlimit-*, x-together-*
 *   - openrouter: x-generation-id
 *   - cerebras: x-ratelimit-{limit,remaining,reset}-{requests,tokens}-{minute,hour,day}
 * Azure's markers win over OpenAI's (Azure may pass openai-* on); markers of two other
 * providers together (a proxy, a mix) give std::nullopt. With no marker, the JSON error
 * envelope of `body` (pass the body of an error response, or nothing) decides: gemini for a
 * google.rpc.Status (integer code and a status, e.g. RESOURCE_EXHAUSTED), anthropic for
 * {"type":"error","error":{...}}, openrouter for error.metadata, and the links in
 * error.message (azure_openai: "Azure OpenAI" or aka.ms/oai; groq: console.groq.com; openai:
 * platform.openai.com). Then IETF RateLimit / RateLimit-Policy / RateLimit-* fields give
 * generic. Otherwise std::nullopt: in particular for OpenAI's x-ratelimit-*-requests/tokens
 * names alone (OpenAI, Azure and Groq send them with different windows, and so do gateways)
 * and for bare x-ratelimit-limit/remaining/reset (Together, OpenRouter, many APIs). Header
 * names are compared ignoring ASCII case. Never throws.
 */
std::optional<Provider> detect_provider(const Headers& headers,
                                        std::string_view body = {}) noexcept;

/// The value dialects parse_response() understands, exposed for tests and reuse. Each function
/// trims surrounding spaces/tabs, never throws, and returns a Parsed.
namespace dialect {

/// Outcome of parsing one value: `value` when well formed; otherwise `error` names the
/// problem (a static string), or both are empty for "unknown" (empty, "-1").
template <class T>
struct Parsed {
  std::optional<T> value;
  std::string_view error;

  bool ok() const noexcept { return value.has_value(); }
  bool malformed() const noexcept { return !error.empty(); }
  bool unknown() const noexcept { return !value && error.empty(); }
};

/// Non-negative decimal integer ("60", "007"). "" and "-1" are unknown; other negatives,
/// signs, decimals, trailing garbage and values above kMaxExact are malformed.
Parsed<std::int64_t> parse_count(std::string_view s) noexcept;

/// Go time.Duration string: "6m0s", "1s", "20ms", "4m12.172s", "1h2m3s", "500us", "500µs",
/// "0", "0s". Units h, m, s, ms, us/µs/μs, ns. Exact: fractions are integer arithmetic;
/// sub-µs remainders round up. Negative, unit-less (except "0") or > kMaxExact µs: malformed.
Parsed<Micros> parse_go_duration(std::string_view s) noexcept;

/// Non-negative decimal seconds, integer or fraction ("30", "7.66", "33011.382867"), to µs
/// (sub-µs rounds up). No sign, exponent, inf or nan. "" and "-1" are unknown.
Parsed<Micros> parse_delta_seconds(std::string_view s) noexcept;

/// Like parse_delta_seconds but in milliseconds ("1500", "12.5"), as retry-after-ms sends.
Parsed<Micros> parse_delta_millis(std::string_view s) noexcept;

/// RFC 3339 date-time, e.g. "2025-08-21T12:40:59Z", "2025-08-21T12:40:59.123456Z",
/// "2025-08-21T14:40:59+02:00" (also 't'/' ' separator, 'z'). Returns µs since the epoch.
Parsed<Micros> parse_rfc3339(std::string_view s) noexcept;

/// HTTP-date (RFC 9110 5.6.7): IMF-fixdate "Wed, 21 Oct 2015 07:28:00 GMT", plus the obsolete
/// RFC 850 ("Wednesday, 21-Oct-15 07:28:00 GMT") and asctime ("Wed Oct 21 07:28:00 2015")
/// forms. Returns µs since the epoch.
Parsed<Micros> parse_http_date(std::string_view s) noexcept;

/// A bare number whose meaning is guessed by size: > 1e11 is epoch milliseconds, > 1e9 is
/// epoch seconds, otherwise delta seconds (fractions allowed). Returns the time from `now`
/// until then, clamped at 0.
Parsed<Micros> parse_epoch_or_delta(std::string_view s, Micros now) noexcept;

/// Any reset dialect, detected from its shape: RFC 3339, HTTP-date, bare number
/// (parse_epoch_or_delta) or Go duration. Returns the time from `now` until the reset, >= 0.
Parsed<Micros> parse_reset(std::string_view s, Micros now) noexcept;

/// retry-after: delta seconds (int or fraction) or an HTTP-date; the wait from `now`, >= 0.
Parsed<Micros> parse_retry_after(std::string_view s, Micros now) noexcept;

}  // namespace dialect
}  // namespace admit
