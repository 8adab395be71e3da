#include "service/proxy/deployments.hpp"

#include <algorithm>
#include <tuple>

#include "service/proxy/estimate.hpp"

namespace admit::service {

namespace {

constexpr double kMicrosPerMinute = 60.0 * kMicrosPerSecond;

/// The smaller of two capacities where 0 means none known.
double smaller(double known, double candidate) {
  return known == 0 ? candidate : std::min(known, candidate);
}

}  // namespace

DeploymentCapacity deployment_capacity(std::span<const std::pair<Limit, ConfigSource>> limits) {
  DeploymentCapacity c;
  for (const auto& [limit, source] : limits) {
    if (limit.unlimited()) continue;
    if (limit.kind() == LimitKind::concurrency) {
      c.slots = c.slots == 0 ? limit.capacity() : std::min(c.slots, limit.capacity());
      continue;
    }
    const Micros period = limit.period();
    if (period <= 0) continue;  // adaptive: its rate moves; the scheduler paces it
    const double per_minute =
        static_cast<double>(limit.capacity()) * kMicrosPerMinute / static_cast<double>(period);
    if (request_limit(limit.name())) {
      c.requests_per_minute = smaller(c.requests_per_minute, per_minute);
    } else if (token_limit(limit.name())) {
      c.tokens_per_minute = smaller(c.tokens_per_minute, per_minute);
    }
  }
  return c;
}

void DeploymentLoad::add(std::int64_t tokens) noexcept {
  requests_.fetch_add(1, std::memory_order_relaxed);
  tokens_.fetch_add(tokens, std::memory_order_relaxed);
}

void DeploymentLoad::remove(std::int64_t tokens) noexcept {
  requests_.fetch_sub(1, std::memory_order_relaxed);
  tokens_.fetch_sub(tokens, std::memory_order_relaxed);
}

void DeploymentLoad::hold_until(Micros until) noexcept {
  Micros now = held_until_.load(std::memory_order_relaxed);
  while (now < until && !held_until_.compare_exchange_weak(now, until)) {
  }
}

double deployment_fill(const DeploymentLoad& load, const DeploymentCapacity& capacity,
                       std::size_t max_concurrent, std::int64_t tokens) {
  const double requests = static_cast<double>(std::max<std::int64_t>(0, load.requests()) + 1);
  const double all_tokens = static_cast<double>(std::max<std::int64_t>(0, load.tokens()) +
                                                std::max<std::int64_t>(0, tokens));
  double fill = requests / static_cast<double>(std::max<std::size_t>(1, max_concurrent));
  if (capacity.slots > 0) fill = std::max(fill, requests / static_cast<double>(capacity.slots));
  if (capacity.requests_per_minute > 0) {
    fill = std::max(fill, requests / capacity.requests_per_minute);
  }
  if (capacity.tokens_per_minute > 0) {
    fill = std::max(fill, all_tokens / capacity.tokens_per_minute);
  }
  return fill;
}

std::size_t pick_deployment(std::span<const DeploymentView> candidates) {
  const auto rank = [](const DeploymentView& v) { return std::tuple(v.broken, v.held, v.fill); };
  std::size_t best = 0;
  for (std::size_t i = 1; i < candidates.size(); ++i) {
    if (rank(candidates[i]) < rank(candidates[best])) best = i;
  }
  return best;
}

}  // namespace admit::service
