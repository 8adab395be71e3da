#include "admit/core/error.hpp"

#include <algorithm>

namespace admit {

ValidationError::ValidationError(std::string field, std::string value, const std::string& why)
    : Error("invalid " + field + " '" + value + "': " + why),
      field_(std::move(field)),
      value_(std::move(value)),
      reason_(why) {}

namespace {
std::string describe(const Decision& d) {
  std::string s = "rate limit exceeded (" + std::string(to_string(d.code)) + ")";
  if (!d.reason.empty()) s += ": " + d.reason;
  return s;
}
}  // namespace

RateLimitExceeded::RateLimitExceeded(Decision d) : Error(describe(d)), decision_(std::move(d)) {}

const Violation* RateLimitExceeded::primary_violation() const {
  const auto& v = decision_.violations;
  auto it = std::max_element(v.begin(), v.end(), [](const Violation& a, const Violation& b) {
    return a.retry_after < b.retry_after;
  });
  return it == v.end() ? nullptr : &*it;
}

}  // namespace admit
