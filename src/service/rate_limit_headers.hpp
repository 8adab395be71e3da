// The rate-limit header fields of a decision: the IETF `RateLimit-Policy` and `RateLimit`
// fields (draft-ietf-httpapi-ratelimit-headers: one list item per limit, named by the limit,
// ancestors' as "<entity>/<limit>") and, optionally, OpenAI's `x-ratelimit-*` so clients
// written for OpenAI's API read admitd's answers as they read the provider's.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "admit/core/decision.hpp"

namespace admit::service {

using HeaderList = std::vector<std::pair<std::string, std::string>>;

/**
 * Appends the fields for `d`'s stats (rate and window limits; concurrency limits have no
 * window and are left out, shadow limits are not enforced and are left out too, so that a
 * client pacing itself by these fields does not enforce them):
 *   RateLimit-Policy: "tpm";q=30000;w=60, "team-a/tpm";q=100000;w=60
 *   RateLimit: "tpm";r=28800;t=3, "team-a/tpm";r=98800;t=1
 * q: capacity, w: the refill period or window in seconds (rounded up), r: available now, t:
 * seconds until full again (rounded up). With `openai`, also for the requester's own limits:
 * x-ratelimit-limit-<n>, x-ratelimit-remaining-<n>, x-ratelimit-reset-<n> ("1m30s", as OpenAI
 * writes it), where <n> is "requests" for a limit named rpm or requests, "tokens" for tpm or
 * tokens, "requests-day" / "tokens-day" for rpd / tpd, else the limit's name (the first limit
 * of a name wins). Nothing without stats.
 */
void add_rate_limit_headers(const Decision& d, bool openai, HeaderList& out);

/// The same fields, in the same order, appended to `fields` in their wire form (`Name:
/// value\r\n` each: http::Response::fields), written directly (no string per field). A field
/// whose value holds CR, LF or NUL is left out, as the server leaves out such a header.
void append_rate_limit_fields(const Decision& d, bool openai, std::string& fields);

/// A duration as OpenAI's reset headers write it: "0s", "850ms", "6s", "1m30s", "2h0m0s".
std::string openai_duration(Micros us);

}  // namespace admit::service
