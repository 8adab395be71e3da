// The error bodies of 4xx/5xx responses: OpenAI's insufficient_quota, Gemini's
// RESOURCE_EXHAUSTED with RetryInfo and QuotaFailure details, OpenRouter's repeated upstream
// headers, and "try again in 6s" hints in error messages. Internal header.
#pragma once

#include <optional>
#include <string_view>

#include "admit/adapt/headers.hpp"
#include "reader.hpp"

namespace admit::headers_detail {

// What a body says about retrying (parse_response ranks it after the retry headers).
struct BodyFindings {
  std::optional<Micros> retry_delay;  // Gemini RetryInfo
  std::optional<Micros> message_hint;
};

// Reads the JSON error envelope `body` of provider `p` into r.obs() and `f`; malformed JSON
// is one warning.
void read_body(Provider p, std::string_view body, Reader& r, BodyFindings& f);

}  // namespace admit::headers_detail
