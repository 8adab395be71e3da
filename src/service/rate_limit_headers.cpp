#include "service/rate_limit_headers.hpp"

#include <charconv>
#include <string_view>

namespace admit::service {

namespace {

std::int64_t ceil_seconds(Micros us) {
  return us <= 0 ? 0 : (us + kMicrosPerSecond - 1) / kMicrosPerSecond;
}

// Appends the list item's name: the limit's, an ancestor's prefixed with "<entity>/". Names
// are printable ASCII without spaces; '"' and '\' are escaped as sf-string requires.
void append_item_name(std::string& out, const LimitStatus& s, std::string_view requester) {
  auto escaped = [&out](std::string_view raw) {
    for (const char c : raw) {
      if (c == '"' || c == '\\') out += '\\';
      out += c;
    }
  };
  out += '"';
  if (s.entity != requester) {
    escaped(s.entity);
    out += '/';
  }
  escaped(s.limit);
  out += '"';
}

void append_int(std::string& out, std::int64_t n) {
  char buf[24];
  out.append(buf, std::to_chars(buf, buf + sizeof buf, n).ptr);
}

// OpenAI's names for per-minute limits; per-day ones as Cerebras writes them.
std::string_view openai_name(std::string_view limit) {
  if (limit == "rpm" || limit == "requests") return "requests";
  if (limit == "tpm" || limit == "tokens") return "tokens";
  if (limit == "rpd") return "requests-day";
  if (limit == "tpd") return "tokens-day";
  return limit;
}

}  // namespace

std::string openai_duration(Micros us) {
  if (us <= 0) return "0s";
  if (us < kMicrosPerSecond) return std::to_string((us + 999) / 1000) + "ms";
  const std::int64_t s = ceil_seconds(us);
  if (s < 60) return std::to_string(s) + "s";
  if (s < 3600) return std::to_string(s / 60) + "m" + std::to_string(s % 60) + "s";
  return std::to_string(s / 3600) + "h" + std::to_string(s / 60 % 60) + "m" +
         std::to_string(s % 60) + "s";
}

void add_rate_limit_headers(const Decision& d, bool openai, HeaderList& out) {
  if (d.stats.empty()) return;
  const std::string_view requester = d.stats.front().entity;
  std::string policy;
  std::string state;
  for (const LimitStatus& s : d.stats) {
    if (s.kind == LimitKind::concurrency || s.capacity <= 0 || s.shadow) continue;
    const Micros window = s.period;  // rate: refill of the capacity; window: its length
    if (!policy.empty()) policy += ", ";
    append_item_name(policy, s, requester);
    policy += ";q=";
    append_int(policy, s.capacity);
    if (window > 0) {
      policy += ";w=";
      append_int(policy, ceil_seconds(window));
    }
    if (!state.empty()) state += ", ";
    append_item_name(state, s, requester);
    state += ";r=";
    append_int(state, s.available);
    state += ";t=";
    append_int(state, ceil_seconds(s.reset_after));
    if (openai && s.entity == requester) {
      const std::string n(openai_name(s.limit));
      const std::string limit_header = "x-ratelimit-limit-" + n;
      bool seen = false;  // two limits with one name (rpm and "requests"): the first wins
      for (const auto& h : out) seen = seen || h.first == limit_header;
      if (seen) continue;
      out.emplace_back(limit_header, std::to_string(s.capacity));
      out.emplace_back("x-ratelimit-remaining-" + n, std::to_string(s.available));
      out.emplace_back("x-ratelimit-reset-" + n, openai_duration(s.reset_after));
    }
  }
  if (policy.empty()) return;
  out.emplace_back("RateLimit-Policy", std::move(policy));
  out.emplace_back("RateLimit", std::move(state));
}

}  // namespace admit::service
