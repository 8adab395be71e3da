// ProviderPlugin defaults and HeaderProvider (admit's built-in header parsers).
#include "admit/sched/provider.hpp"

#include <utility>

namespace admit::sched {

std::string ProviderPlugin::bucket_for(std::string_view model, std::string_view) const {
  return std::string(model);
}

std::vector<DiscoveredBucket> ProviderPlugin::discover_limits() { return {}; }

HeaderProvider::HeaderProvider(Provider dialect,
                               std::map<std::string, std::string, std::less<>> buckets,
                               std::vector<DiscoveredBucket> announced)
    : dialect_(dialect), buckets_(std::move(buckets)), announced_(std::move(announced)) {}

std::string HeaderProvider::name() const { return std::string(to_string(dialect_)); }

std::string HeaderProvider::bucket_for(std::string_view model, std::string_view) const {
  if (auto it = buckets_.find(model); it != buckets_.end()) return it->second;
  return std::string(model);
}

Observation HeaderProvider::parse_response(int status, const Headers& headers,
                                           std::string_view body, Micros now) const {
  return admit::parse_response(dialect_, headers, status, body, now);
}

std::vector<DiscoveredBucket> HeaderProvider::discover_limits() { return announced_; }

}  // namespace admit::sched
