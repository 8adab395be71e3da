// The entry points of provider header parsing: provider names, Headers, the reset dialects
// parse_reset / parse_retry_after (which pick a dialect by the value's shape) and
// parse_response. The parts are in headers/: text.hpp (ASCII helpers), numbers.{hpp,cpp}
// (counts, durations, delta and epoch numbers), dates.cpp (RFC 3339 and HTTP-dates, through
// the date library), reader.hpp (header values into an Observation, with warnings),
// providers.{hpp,cpp} (the per-provider header tables), error_body.{hpp,cpp} (JSON error
// envelopes).
#include "admit/adapt/headers.hpp"

#include <array>
#include <exception>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

#include "headers/error_body.hpp"
#include "headers/numbers.hpp"
#include "headers/providers.hpp"
#include "headers/reader.hpp"
#include "headers/text.hpp"

namespace admit {

using headers_detail::ascii_lower;
using headers_detail::iequals;

// ---------------------------------------------------------------------------------------------
// Provider names
// ---------------------------------------------------------------------------------------------

namespace {

constexpr std::array<std::pair<Provider, std::string_view>, 10> kProviderNames{{
    {Provider::openai, "openai"},
    {Provider::azure_openai, "azure_openai"},
    {Provider::anthropic, "anthropic"},
    {Provider::gemini, "gemini"},
    {Provider::groq, "groq"},
    {Provider::mistral, "mistral"},
    {Provider::together, "together"},
    {Provider::openrouter, "openrouter"},
    {Provider::cerebras, "cerebras"},
    {Provider::generic, "generic"},
}};

}  // namespace

std::string_view to_string(Provider p) noexcept {
  for (const auto& [provider, name] : kProviderNames) {
    if (provider == p) return name;
  }
  return "unknown";
}

std::optional<Provider> provider_from_string(std::string_view name) noexcept {
  for (const auto& [provider, canonical] : kProviderNames) {
    if (canonical.size() != name.size()) continue;
    bool same = true;
    for (std::size_t i = 0; i < name.size() && same; ++i) {
      const char c = name[i] == '-' ? '_' : ascii_lower(name[i]);
      same = c == canonical[i];
    }
    if (same) return provider;
  }
  return std::nullopt;
}

// ---------------------------------------------------------------------------------------------
// Headers
// ---------------------------------------------------------------------------------------------

Headers::Headers(std::initializer_list<std::pair<std::string_view, std::string_view>> entries) {
  entries_.reserve(entries.size());
  for (const auto& [name, value] : entries) add(name, value);
}

void Headers::add(std::string_view name, std::string_view value) {
  entries_.emplace_back(std::string(name), std::string(value));
}

std::optional<std::string_view> Headers::find(std::string_view name) const noexcept {
  for (const auto& [n, v] : entries_) {
    if (iequals(n, name)) return std::string_view(v);
  }
  return std::nullopt;
}

// ---------------------------------------------------------------------------------------------
// The reset dialects: one value, its dialect picked by its shape
// ---------------------------------------------------------------------------------------------

namespace dialect {

using headers_detail::fail;
using headers_detail::is_alpha;
using headers_detail::is_digit;
using headers_detail::is_unknown_marker;
using headers_detail::ok;
using headers_detail::trim;
using headers_detail::unknown;
using headers_detail::until;

Parsed<Micros> parse_reset(std::string_view s, Micros now) noexcept {
  s = trim(s);
  if (is_unknown_marker(s)) return unknown<Micros>();
  if (is_alpha(s.front())) {
    const auto p = parse_http_date(s);
    return p.ok() ? ok(until(*p.value, now)) : p;
  }
  if (s.size() >= 10 && is_digit(s[0]) && is_digit(s[1]) && is_digit(s[2]) && is_digit(s[3]) &&
      s[4] == '-') {
    const auto p = parse_rfc3339(s);
    return p.ok() ? ok(until(*p.value, now)) : p;
  }
  bool plain_number = true;
  for (char c : s) plain_number = plain_number && (is_digit(c) || c == '.');
  if (plain_number) return parse_epoch_or_delta(s, now);
  return parse_go_duration(s);
}

Parsed<Micros> parse_retry_after(std::string_view s, Micros now) noexcept {
  s = trim(s);
  if (is_unknown_marker(s)) return unknown<Micros>();
  if (is_digit(s.front()) || s.front() == '.' || s.front() == '-') return parse_delta_seconds(s);
  const auto p = parse_http_date(s);
  if (!p.ok()) return fail<Micros>("neither delta seconds nor an HTTP-date");
  return ok(until(*p.value, now));
}

}  // namespace dialect

// ---------------------------------------------------------------------------------------------
// parse_response
// ---------------------------------------------------------------------------------------------

namespace {

using headers_detail::BodyFindings;
using headers_detail::read_body;
using headers_detail::read_provider_headers;
using headers_detail::Reader;

bool blank(std::string_view s) { return headers_detail::trim(s).empty(); }

}  // namespace

Observation parse_response(Provider p, const Headers& headers, int status, std::string_view body,
                           Micros now) {
  Observation o;
  try {
    Reader r(headers, now, o);
    read_provider_headers(p, r);

    // Both retry headers are validated; retry-after-ms wins when both are usable.
    std::optional<Micros> retry_ms;
    std::optional<Micros> retry_s;
    if (auto f = r.lookup({"retry-after-ms"})) {
      retry_ms = r.take(*f, dialect::parse_delta_millis(f->value));
    }
    if (auto f = r.lookup({"retry-after"})) {
      retry_s = r.take(*f, dialect::parse_retry_after(f->value, now));
    }

    if (status == 429) o.rate_limited = true;

    BodyFindings found;
    if (status >= 400 && !blank(body)) read_body(p, body, r, found);

    if (retry_ms) {
      o.retry_after = retry_ms;
    } else if (retry_s) {
      o.retry_after = retry_s;
    } else if (found.retry_delay) {
      o.retry_after = found.retry_delay;
    } else if (found.message_hint) {
      o.retry_after = found.message_hint;
    }
  } catch (const std::exception& e) {
    try {
      o.warnings.push_back(std::string("internal error while parsing: ") + e.what());
    } catch (...) {  // NOLINT(bugprone-empty-catch): out of memory; nothing left to report with
    }
  }
  return o;
}

}  // namespace admit
