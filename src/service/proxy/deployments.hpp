// Several deployments of one model (keys, regions, providers: upstreams that list the same
// model) and which one a request goes to. Each deployment's Scheduler paces it to its own
// limits, configured and learned, so none is ever sent more than it allows; what is chosen
// here is where a request waits least: the deployment with the most room by what admit knows
// (the requests and tokens sent its way and not yet finished, against the per-minute
// capacity of its known limits and its max_concurrent), one that is held (its limits'
// retry_after, or a 429's) or whose breaker is open coming last (docs/proxy.md, "Several
// deployments of a model").
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <span>
#include <utility>

#include "admit/core/decision.hpp"  // ConfigSource
#include "admit/core/limit.hpp"
#include "admit/core/time.hpp"

namespace admit::service {

/// What a deployment's known limits let it take per minute (0: no such limit known).
struct DeploymentCapacity {
  double requests_per_minute = 0;
  double tokens_per_minute = 0;
  std::int64_t slots = 0;  ///< its concurrency limits' smallest capacity (0: none)
};

/// The capacity that the limits resolved for (deployment, bucket) give: the smallest
/// per-minute rate among its request limits (request_limit()) and among its token limits
/// (token_limit()), and its smallest concurrency limit. Unlimited, adaptive and other limits
/// are left out.
DeploymentCapacity deployment_capacity(std::span<const std::pair<Limit, ConfigSource>> limits);

/// The load of one deployment: requests (and their estimated tokens) routed to it and not
/// yet ended there, and the time a 429 told it to wait until. Thread-safe.
class DeploymentLoad {
 public:
  void add(std::int64_t tokens) noexcept;
  void remove(std::int64_t tokens) noexcept;
  /// Holds the deployment until `until` (the later of this and any earlier hold).
  void hold_until(Micros until) noexcept;

  std::int64_t requests() const noexcept { return requests_.load(std::memory_order_relaxed); }
  std::int64_t tokens() const noexcept { return tokens_.load(std::memory_order_relaxed); }
  Micros held_until() const noexcept { return held_until_.load(std::memory_order_relaxed); }

 private:
  std::atomic<std::int64_t> requests_{0};
  std::atomic<std::int64_t> tokens_{0};
  std::atomic<Micros> held_until_{0};
};

/// How full a deployment would be with one more request of `tokens`: the largest share of a
/// known capacity its outstanding requests and tokens (this one included) would take, over
/// requests per minute, tokens per minute, concurrency slots and `max_concurrent` (>= 1).
double deployment_fill(const DeploymentLoad& load, const DeploymentCapacity& capacity,
                       std::size_t max_concurrent, std::int64_t tokens);

/// One candidate of pick_deployment().
struct DeploymentView {
  double fill = 0;      ///< deployment_fill()
  bool held = false;    ///< its limits or a 429 hold it: it cannot take a request now
  bool broken = false;  ///< its breaker is open
};

/// The index of the best candidate: one whose breaker is closed before one whose is open,
/// then one not held before one held, then the lowest fill, then the first listed.
/// `candidates` must not be empty.
std::size_t pick_deployment(std::span<const DeploymentView> candidates);

}  // namespace admit::service
