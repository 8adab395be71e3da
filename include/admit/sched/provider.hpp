// Providers as plug-ins (seed 002's ProviderInterface): how a provider's responses are read,
// which models share a rate-limit bucket, and what limits it announces up front.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "admit/adapt/headers.hpp"
#include "admit/core/time.hpp"

namespace admit::sched {

/// Limits a provider announces for one bucket (0 = not announced).
struct DiscoveredBucket {
  std::string bucket;
  std::int64_t rpm = 0;  ///< requests per minute
  std::int64_t tpm = 0;  ///< tokens per minute
};

/**
 * What the scheduler asks of a provider. Implement it for a provider whose headers admit
 * does not know, whose models share buckets, or that announces its limits. The scheduler
 * calls bucket_for and parse_response on its strand (they must be quick and thread-safe
 * against discover_limits, which runs on the thread that calls Scheduler::discover_limits).
 */
class ProviderPlugin {
 public:
  virtual ~ProviderPlugin() = default;

  /// A name for logs and errors.
  virtual std::string name() const = 0;

  /// The rate-limit bucket a model's requests count against: requests of models with the
  /// same bucket share one queue and one set of limits. Default: the model itself.
  virtual std::string bucket_for(std::string_view model, std::string_view resource_type) const;

  /// What a response says about rate limits (limits, remaining, reset, retry-after, 429).
  virtual Observation parse_response(int status, const Headers& headers, std::string_view body,
                                     Micros now) const = 0;

  /// Limits known before any response (a provider's /limits endpoint, a price sheet).
  /// Default: none.
  virtual std::vector<DiscoveredBucket> discover_limits();
};

/**
 * The default plug-in: admit's built-in header parsers for one provider dialect
 * (admit::parse_response), an optional model -> bucket table (models not in it are their
 * own bucket), and optionally announced limits.
 */
class HeaderProvider : public ProviderPlugin {
 public:
  explicit HeaderProvider(Provider dialect = Provider::openai,
                          std::map<std::string, std::string, std::less<>> buckets = {},
                          std::vector<DiscoveredBucket> announced = {});

  std::string name() const override;
  std::string bucket_for(std::string_view model, std::string_view resource_type) const override;
  Observation parse_response(int status, const Headers& headers, std::string_view body,
                             Micros now) const override;
  std::vector<DiscoveredBucket> discover_limits() override;

  Provider dialect() const { return dialect_; }

 private:
  Provider dialect_;
  std::map<std::string, std::string, std::less<>> buckets_;
  std::vector<DiscoveredBucket> announced_;
};

}  // namespace admit::sched
