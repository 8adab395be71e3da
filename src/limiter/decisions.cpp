#include "decisions.hpp"

#include <algorithm>
#include <cstdio>
#include <string>

namespace admit::detail {

namespace {

std::string format_micros(Micros us) {
  char buf[64];
  if (us % kMicrosPerSecond == 0) {
    std::snprintf(buf, sizeof buf, "%llds", static_cast<long long>(us / kMicrosPerSecond));
  } else {
    std::snprintf(buf, sizeof buf, "%.6gs", static_cast<double>(us) / 1e6);
  }
  return buf;
}

Code code_for(LimitKind k) {
  switch (k) {
    case LimitKind::rate:
      return Code::rate_exceeded;
    case LimitKind::window:
      return Code::window_exceeded;
    case LimitKind::concurrency:
      return Code::concurrency_exceeded;
    case LimitKind::adaptive:
      return Code::rate_exceeded;
  }
  return Code::rate_exceeded;
}

}  // namespace

void fill_details(Decision& d, const LeaseKey& key, std::span<const OpItem> ops,
                  std::span<const std::size_t> entries, std::span<const ItemResult> results,
                  bool allowed, bool with_stats) {
  if (with_stats || !allowed) {
    d.stats.reserve(ops.size());
    for (std::size_t j = 0; j < ops.size(); ++j) {
      const auto& it = key.items[entries[j]];
      const ItemResult& r = results[j];
      d.stats.push_back(LimitStatus{key.entities[it.key], it.limit.name(), it.limit.kind(),
                                    it.source, it.limit.capacity(), r.available, r.reset_after, 0,
                                    it.limit.period(), it.limit.shadow()});
    }
  }
  // Every refusal: a shadow limit's is reported apart and decides nothing (not even the code
  // exceeds_capacity: a shadow limit that can never fit the amount only reports it).
  bool never = false;
  for (std::size_t j = 0; j < ops.size(); ++j) {
    const ItemResult& r = results[j];
    if (r.ok) continue;
    const auto& it = key.items[entries[j]];
    const bool shadow = it.limit.shadow();
    if (allowed && !shadow) continue;  // an allowed decision has no violations
    (shadow ? d.shadow_violations : d.violations)
        .push_back(Violation{key.entities[it.key], it.limit.name(), it.limit.kind(), ops[j].amount,
                             r.available, r.retry_after});
    never = never || (r.never && !shadow);
  }
  if (allowed) return;
  const Violation* worst = nullptr;
  for (const auto& v : d.violations) {
    if (worst == nullptr || v.retry_after > worst->retry_after) worst = &v;
  }
  if (never) {
    d.code = Code::exceeds_capacity;
    for (std::size_t j = 0, v = 0; j < ops.size(); ++j) {
      if (results[j].ok || key.items[entries[j]].limit.shadow()) continue;
      if (results[j].never) {
        const Violation& x = d.violations[v];
        d.reason = "'" + x.limit + "' of " + x.entity + " on " + key.resource + " can never fit " +
                   std::to_string(x.requested) + " (capacity " +
                   std::to_string(key.items[entries[j]].limit.capacity()) + ")";
        break;
      }
      ++v;
    }
    return;
  }
  d.code = code_for(worst->kind);
  d.retry_after = worst->retry_after;
  d.reason = "'" + worst->limit + "' of " + worst->entity + " on " + key.resource + ": requested " +
             std::to_string(worst->requested) + ", available " + std::to_string(worst->available) +
             ", retry in " + format_micros(d.retry_after);
}

LimitStatus status_of(const KeyParts& k, const Limit& l, ConfigSource src, const ItemResult& r,
                      double rate) {
  return LimitStatus{std::string(k.entity), l.name(),      l.kind(), src,        l.capacity(),
                     r.available,           r.reset_after, rate,     l.period(), l.shadow()};
}

RateParams adaptive_params(const Limit& l, const AimdLaw* ctl, double* rate_out) {
  const double rate = ctl != nullptr
                          ? ctl->current_rate()
                          : std::clamp(l.aimd_options().initial_rate, l.aimd_options().min_rate,
                                       l.aimd_options().max_rate);
  if (rate_out != nullptr) *rate_out = rate;
  return l.rate_at(rate);
}

}  // namespace admit::detail
