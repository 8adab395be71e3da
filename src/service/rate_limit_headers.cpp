#include "service/rate_limit_headers.hpp"

#include <algorithm>
#include <string_view>

#include "common/http/server.hpp"
#include "service/json_body.hpp"

namespace admit::service {

namespace {

std::int64_t ceil_seconds(Micros us) {
  return us <= 0 ? 0 : (us + kMicrosPerSecond - 1) / kMicrosPerSecond;
}

// Appends the list item's name: the limit's, an ancestor's prefixed with "<entity>/". Names
// are printable ASCII without spaces; '"' and '\' are escaped as sf-string requires.
void append_item_name(std::string& out, const LimitStatus& s, std::string_view requester) {
  auto escaped = [&out](std::string_view raw) {
    // In runs between the bytes to escape (usually one run: the whole name).
    while (!raw.empty()) {
      const std::size_t at = raw.find_first_of("\"\\");
      out.append(raw.substr(0, at));
      if (at == std::string_view::npos) return;
      out += '\\';
      out += raw[at];
      raw.remove_prefix(at + 1);
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
  char buf[kMaxJsonInt];
  out.append(buf, write_json_int(buf, n));
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

namespace {

bool enforced_window(const LimitStatus& s) {
  return s.kind != LimitKind::concurrency && s.capacity > 0 && !s.shadow;
}

/// Ends the field line begun at `at` (its name and value written since): CRLF, or, when it
/// holds CR, LF or NUL, nothing at all (the line is taken back).
void end_line(std::string& fields, std::size_t at) {
  if (!http::safe_field(std::string_view(fields).substr(at))) {
    fields.resize(at);
    return;
  }
  fields.append("\r\n", 2);
}

}  // namespace

void append_rate_limit_fields(const Decision& d, bool openai, std::string& fields) {
  if (d.stats.empty()) return;
  const std::string_view requester = d.stats.front().entity;
  if (openai) {
    // Two limits with one name (rpm and "requests"): the first wins.
    std::vector<std::string_view> seen;
    for (const LimitStatus& s : d.stats) {
      if (!enforced_window(s) || s.entity != requester) continue;
      const std::string_view n = openai_name(s.limit);
      if (std::find(seen.begin(), seen.end(), n) != seen.end()) continue;
      seen.push_back(n);
      std::size_t at = fields.size();
      fields.append("x-ratelimit-limit-").append(n).append(": ");
      append_int(fields, s.capacity);
      end_line(fields, at);
      at = fields.size();
      fields.append("x-ratelimit-remaining-").append(n).append(": ");
      append_int(fields, s.available);
      end_line(fields, at);
      at = fields.size();
      fields.append("x-ratelimit-reset-")
          .append(n)
          .append(": ")
          .append(openai_duration(s.reset_after));
      end_line(fields, at);
    }
  }
  // The two lists, written through a pointer into room made once (an item: its quoted name,
  // each byte of which may be escaped, and two numbers).
  std::size_t bound = 0;
  for (const LimitStatus& s : d.stats) {
    if (enforced_window(s)) {
      bound += 40 + 2 * kMaxJsonInt + 2 * (s.entity.size() + 1 + s.limit.size());
    }
  }
  if (bound == 0) return;  // no limit to tell of
  constexpr std::string_view kPolicy = "RateLimit-Policy: ";
  constexpr std::string_view kState = "RateLimit: ";
  const std::size_t at = fields.size();
  fields.resize(at + kPolicy.size() + kState.size() + 4 + 2 * bound);
  char* const begin = fields.data();
  char* p = begin + at;
  auto text = [&p](std::string_view t) {
    for (const char c : t) *p++ = c;
  };
  auto name = [&p](std::string_view raw) {
    for (const char c : raw) {
      if (c == '"' || c == '\\') *p++ = '\\';
      *p++ = c;
    }
  };
  auto item = [&](const LimitStatus& s, bool first) {
    if (!first) text(", ");
    *p++ = '"';
    if (s.entity != requester) {
      name(s.entity);
      *p++ = '/';
    }
    name(s.limit);
    *p++ = '"';
  };
  // Ends the line begun at `line` (CRLF), or takes it back if it holds CR, LF or NUL.
  auto end_line_at = [&p, begin](std::size_t line) {
    if (!http::safe_field(
            std::string_view(begin + line, static_cast<std::size_t>(p - begin) - line))) {
      p = begin + line;
      return;
    }
    *p++ = '\r';
    *p++ = '\n';
  };
  text(kPolicy);
  bool first = true;
  for (const LimitStatus& s : d.stats) {
    if (!enforced_window(s)) continue;
    item(s, first);
    first = false;
    text(";q=");
    p = write_json_int(p, s.capacity);
    if (s.period > 0) {  // rate: refill of the capacity; window: its length
      text(";w=");
      p = write_json_int(p, ceil_seconds(s.period));
    }
  }
  end_line_at(at);
  const auto state_at = static_cast<std::size_t>(p - begin);
  text(kState);
  first = true;
  for (const LimitStatus& s : d.stats) {
    if (!enforced_window(s)) continue;
    item(s, first);
    first = false;
    text(";r=");
    p = write_json_int(p, s.available);
    text(";t=");
    p = write_json_int(p, ceil_seconds(s.reset_after));
  }
  end_line_at(state_at);
  fields.resize(static_cast<std::size_t>(p - begin));
}

}  // namespace admit::service
