// The per-provider header tables: which headers name each limit, and the window each
// provider's convention gives it. Internal header.
#pragma once

#include "admit/adapt/headers.hpp"
#include "reader.hpp"

namespace admit::headers_detail {

// The families of the common conventions: OpenAI's names, bare X-RateLimit-*, IETF
// RateLimit-* (several readers use them; OpenRouter's error body too).
inline constexpr Family kOpenAiRequests{{"x-ratelimit-limit-requests"},
                                        {"x-ratelimit-remaining-requests"},
                                        {"x-ratelimit-reset-requests"}};
inline constexpr Family kOpenAiTokens{
    {"x-ratelimit-limit-tokens"}, {"x-ratelimit-remaining-tokens"}, {"x-ratelimit-reset-tokens"}};
inline constexpr Family kPlainXRateLimit{
    {"x-ratelimit-limit"}, {"x-ratelimit-remaining"}, {"x-ratelimit-reset"}};
inline constexpr Family kIetf{{"ratelimit-limit"}, {"ratelimit-remaining"}, {"ratelimit-reset"}};

// Reads provider `p`'s rate-limit headers into r.obs() (Gemini has none: its limits are in the
// error body, error_body.cpp).
void read_provider_headers(Provider p, Reader& r);

}  // namespace admit::headers_detail
