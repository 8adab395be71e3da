#include "admit/core/error.hpp"

#include <algorithm>

namespace admit {

std::string printable(std::string_view s, std::size_t max) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  out.reserve(std::min(s.size(), max) + 8);
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (i == max) {
      out += "...";
      break;
    }
    const auto u = static_cast<unsigned char>(s[i]);
    if (u >= 0x20 && u < 0x7f) {
      out += s[i];
    } else {
      out += "\\x";
      out += kHex[u >> 4];
      out += kHex[u & 0xf];
    }
  }
  return out;
}

ValidationError::ValidationError(std::string field, std::string value, const std::string& why)
    : Error("invalid " + printable(field) + " '" + printable(value) + "': " + why),
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
