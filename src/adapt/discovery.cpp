#include "admit/adapt/discovery.hpp"

#include <algorithm>
#include <cmath>

#include "admit/core/error.hpp"

namespace admit {

namespace {

// "rpm", "tpd", "itpm", ...: prefix + "p" + the window's unit (per minute when unknown).
std::string default_name(std::string_view prefix, Micros window) {
  std::string name(prefix);
  name += 'p';
  if (window == kMicrosPerSecond) {
    name += 's';
  } else if (window == kMicrosPerHour) {
    name += 'h';
  } else if (window == kMicrosPerDay) {
    name += 'd';
  } else {
    name += 'm';
  }
  return name;
}

}  // namespace

Discovery::Discovery(Limiter& limiter, Provider provider, DiscoveryOptions options)
    : limiter_(limiter), provider_(provider), options_(std::move(options)) {
  if (!(options_.buffer_ratio > 0 && options_.buffer_ratio <= 1)) {
    throw ValidationError("buffer_ratio", std::to_string(options_.buffer_ratio),
                          "must be in (0, 1]");
  }
  if (options_.default_retry_after < 0) {
    throw ValidationError("default_retry_after", std::to_string(options_.default_retry_after),
                          "must be >= 0");
  }
  for (const std::string* n : {&options_.requests_limit, &options_.tokens_limit,
                               &options_.input_tokens_limit, &options_.output_tokens_limit}) {
    if (!n->empty()) validate_name("limit name", *n);
  }
}

ObserveResult Discovery::observe(std::string_view entity, std::string_view resource,
                                 const Observation& obs) {
  ObserveResult res;
  res.rate_limited = obs.rate_limited;
  res.warnings = obs.warnings;
  const Micros now = limiter_.clock().now();
  if (obs.rate_limited) {
    res.hold_until = now + obs.retry_after.value_or(options_.default_retry_after);
  }
  struct Slot {
    const LimitObservation& o;
    std::string_view prefix;
    const std::string& name;
  };
  const Slot slots[] = {{obs.requests, "r", options_.requests_limit},
                        {obs.tokens, "t", options_.tokens_limit},
                        {obs.input_tokens, "it", options_.input_tokens_limit},
                        {obs.output_tokens, "ot", options_.output_tokens_limit}};

  std::vector<StateClamp> clamps;
  {
    std::lock_guard g(mu_);
    auto& known = learned_[{std::string(entity), std::string(resource)}];
    for (const Slot& s : slots) {
      const LimitObservation& o = s.o;
      if (!o.has_data()) continue;
      const Micros window = o.window > 0 ? o.window : kMicrosPerMinute;
      std::string name = s.name.empty() ? default_name(s.prefix, window) : s.name;
      DiscoveredLimit& dl = known[name];
      dl.limit = name;
      dl.observed_at = now;
      dl.remaining = o.remaining;
      dl.reset_after = o.reset_after.value_or(0);
      if (options_.learn_limits && o.limit && *o.limit > 0 &&
          (dl.provider_limit != *o.limit || dl.window != window)) {
        const auto scaled = static_cast<std::int64_t>(
            std::floor(static_cast<double>(*o.limit) * options_.buffer_ratio));
        dl.provider_limit = *o.limit;
        dl.capacity = std::clamp<std::int64_t>(scaled, 1, *o.limit);
        dl.window = window;
        res.limits_changed = true;
      }
      if (dl.window == 0) dl.window = window;
      StateClamp c{std::move(name), -1, 0};
      if (o.remaining) {
        const std::int64_t margin = dl.provider_limit > 0 ? dl.provider_limit - dl.capacity : 0;
        c.available = std::max<std::int64_t>(0, *o.remaining - margin);
      }
      c.until = res.hold_until;  // 0 unless rate limited
      clamps.push_back(std::move(c));
    }
    if (res.limits_changed) {
      std::vector<Limit> limits;
      for (const auto& [name, dl] : known) {
        if (dl.provider_limit == 0) continue;
        limits.push_back(Limit::custom(name, dl.capacity, dl.provider_limit,
                                       std::chrono::microseconds(dl.window)));
      }
      limiter_.set_discovered_limits(std::string(entity), std::string(resource), std::move(limits));
    }
  }
  // A 429 holds every limit of the key: a request carries all of them, so holding only the
  // exhausted one would hold it anyway, and a 429 without headers names none. A calendar
  // window can only be held by using it up until it ends: it is held only when the
  // retry-after reaches its end (else a 3 s retry-after would close a day's window).
  if (obs.rate_limited) {
    for (const auto& [limit, source] : limiter_.resolve(entity, resource)) {
      if (limit.kind() == LimitKind::concurrency || limit.unlimited()) continue;
      if (limit.kind() == LimitKind::window && res.hold_until < limit.window_at(now).end) continue;
      auto c = std::find_if(clamps.begin(), clamps.end(),
                            [&](const StateClamp& x) { return x.limit == limit.name(); });
      if (c == clamps.end()) clamps.push_back(StateClamp{limit.name(), -1, res.hold_until});
    }
  }
  if (!clamps.empty()) res.clamped = limiter_.clamp(entity, resource, clamps);
  if (!obs.rate_limited) {
    // How far below the provider's level (less the margin) each learned bucket stayed. A
    // learned capacity is limit - margin, so that level never exceeds it.
    for (const StateClamp& c : clamps) {
      if (c.available < 0) continue;
      for (const LimitStatus& st : res.clamped) {
        if (st.limit != c.limit || st.source != ConfigSource::discovered) continue;
        const std::int64_t level = std::min(c.available, st.capacity);
        res.headroom.push_back(Headroom{c.limit, std::max<std::int64_t>(0, level - st.available)});
        break;
      }
    }
  }
  return res;
}

ObserveResult Discovery::observe(Lease& lease, const Observation& obs) {
  if (!lease.allowed()) return {};
  ObserveResult res = observe(lease.entity(), lease.resource(), obs);
  if (obs.rate_limited) {
    lease.mark_failure();
  } else {
    lease.mark_success();
  }
  return res;
}

ObserveResult Discovery::observe(Lease& lease, const Headers& headers, int status,
                                 std::string_view body) {
  return observe(lease, parse_response(provider_, headers, status, body, limiter_.clock().now()));
}

std::vector<DiscoveredLimit> Discovery::discovered(std::string_view entity,
                                                   std::string_view resource) const {
  std::lock_guard g(mu_);
  std::vector<DiscoveredLimit> out;
  auto it = learned_.find(std::pair{std::string(entity), std::string(resource)});
  if (it == learned_.end()) return out;
  for (const auto& [name, dl] : it->second) out.push_back(dl);
  return out;
}

}  // namespace admit
