// libFuzzer target for admit::parse_response, admit::detect_provider and the header-value
// dialects.
// Input layout (text): first line = HTTP status, then "name: value" header lines until an empty
// line, then the body. Every provider parses the same response; nothing may throw or crash.
#include <charconv>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <limits>
#include <string_view>

#include "admit/adapt/headers.hpp"

namespace {

std::string_view next_line(std::string_view& in) {
  const std::size_t nl = in.find('\n');
  std::string_view line = in.substr(0, nl);
  in.remove_prefix(nl == std::string_view::npos ? in.size() : nl + 1);
  if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
  return line;
}

void check(bool ok) {
  if (!ok) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string_view in(reinterpret_cast<const char*>(data), size);

  const std::string_view status_line = next_line(in);
  int status = 429;
  std::from_chars(status_line.data(), status_line.data() + status_line.size(), status);

  admit::Headers headers;
  while (!in.empty()) {
    const std::string_view line = next_line(in);
    if (line.empty()) break;
    const std::size_t colon = line.find(':');
    if (colon == std::string_view::npos) {
      headers.add(line, "");
    } else {
      headers.add(line.substr(0, colon), line.substr(colon + 1));
    }
  }
  const std::string_view body = in;

  // A realistic clock, plus extremes chosen by the input to exercise saturating arithmetic.
  constexpr admit::Micros kNows[] = {1'700'000'000'000'000, 0,
                                     std::numeric_limits<admit::Micros>::min(),
                                     std::numeric_limits<admit::Micros>::max()};
  const admit::Micros now = kNows[size % 4];

  for (int p = 0; p <= static_cast<int>(admit::Provider::generic); ++p) {
    const admit::Observation o =
        admit::parse_response(static_cast<admit::Provider>(p), headers, status, body, now);
    for (const admit::LimitObservation* l :
         {&o.requests, &o.tokens, &o.input_tokens, &o.output_tokens}) {
      check(!l->limit || (*l->limit > 0 && *l->limit <= admit::kMaxExact));
      check(!l->remaining || (*l->remaining >= 0 && *l->remaining <= admit::kMaxExact));
      check(!l->reset_after || (*l->reset_after >= 0 && *l->reset_after <= admit::kMaxExact));
      check(l->window >= 0);
    }
    check(!o.retry_after || (*o.retry_after >= 0 && *o.retry_after <= admit::kMaxExact));
  }
  // noexcept: a throw would terminate. Detection is deterministic.
  check(admit::detect_provider(headers, body) == admit::detect_provider(headers, body));

  namespace d = admit::dialect;
  for (const auto& [name, value] : headers.entries()) {
    (void)name;
    const auto c = d::parse_count(value);
    check(!(c.ok() && c.malformed()));
    const auto g = d::parse_go_duration(value);
    check(!g.ok() || (*g.value >= 0 && *g.value <= admit::kMaxExact));
    d::parse_delta_seconds(value);
    d::parse_delta_millis(value);
    d::parse_rfc3339(value);
    d::parse_http_date(value);
    d::parse_epoch_or_delta(value, now);
    const auto r = d::parse_reset(value, now);
    check(!r.ok() || (*r.value >= 0 && *r.value <= admit::kMaxExact));
    d::parse_retry_after(value, now);
  }
  return 0;
}
